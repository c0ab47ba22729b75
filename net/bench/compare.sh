#!/usr/bin/env bash
# Runs the same `keel bench` loads against a 3-member etcd cluster and a 3-member keel
# cluster on loopback, one after the other with the same settings, and prints one table:
# throughput, p99 latency, their ratios, each server's resident memory, and the CPU time the
# three servers spent per request (user + system, from /proc): on a machine that runs the load
# generator beside the servers, throughput is bounded by CPU, and the CPU per request shows the
# servers' own cost apart from the generator's.
#
#   net/bench/compare.sh            # needs `etcd` (Debian: etcd-server) and a release build
#   TOTAL=50000 net/bench/compare.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

TOTAL="${TOTAL:-20000}"
KEEL="${KEEL:-target/release/keel}"
ETCD="${ETCD:-$(command -v etcd || true)}"
[ -x "$KEEL" ] || cargo build --release -p keel-net --bin keel
[ -n "$ETCD" ] || { echo "compare.sh: etcd not found (apt-get install etcd-server)" >&2; exit 2; }

WORK="$(mktemp -d)"
PIDS=()
cleanup() { for pid in "${PIDS[@]:-}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

ENDPOINTS=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379
CLUSTER=n1=http://127.0.0.1:12380,n2=http://127.0.0.1:22380,n3=http://127.0.0.1:32380

start_cluster() { # $1 = keel|etcd
  PIDS=()
  for i in 1 2 3; do
    local args=(--name "n$i" --data-dir "$WORK/$1-n$i"
      --listen-client-urls "http://127.0.0.1:${i}2379" --advertise-client-urls "http://127.0.0.1:${i}2379"
      --listen-peer-urls "http://127.0.0.1:${i}2380" --initial-advertise-peer-urls "http://127.0.0.1:${i}2380"
      --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token "bench-$1")
    if [ "$1" = keel ]; then "$KEEL" "${args[@]}" >"$WORK/$1-n$i.log" 2>&1 &
    else "$ETCD" "${args[@]}" >"$WORK/$1-n$i.log" 2>&1 &
    fi
    PIDS+=($!)
  done
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINTS" put bench-ready 1 >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "compare.sh: the $1 cluster did not come up" >&2; exit 1
}

stop_cluster() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }

rss_mib() { # largest resident set of the cluster's processes
  local max=0
  for pid in "${PIDS[@]}"; do
    local kb; kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "$kb" -gt "$max" ] && max=$kb
  done
  echo $((max / 1024))
}

CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { # user + system CPU of the cluster's processes so far, in clock ticks
  local sum=0
  for pid in "${PIDS[@]}"; do
    local ticks; ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    sum=$((sum + ticks))
  done
  echo "$sum"
}

LOADS=(
  "put 8 64 --key-size 8 --val-size 256 --key-space-size 100000"
  "put 16 256 --key-size 8 --val-size 256 --key-space-size 100000"
  "range 8 64 --key-size 8 --key-space-size 100000 --consistency l"
  "range 8 64 --key-size 8 --key-space-size 100000 --consistency s"
  "txn-mixed 8 64 --key-size 8 --val-size 256 --key-space-size 100000 --rw-ratio 0"
  "put 1 1 --key-size 8 --val-size 256 --key-space-size 100000"
)

run_loads() { # $1 = keel|etcd; writes "$WORK/$1.results" as "load|throughput|p99|rss|cpu µs per request"
  start_cluster "$1"
  : >"$WORK/$1.results"
  for load in "${LOADS[@]}"; do
    read -r workload conns clients rest <<<"$load"
    before=$(cpu_ticks)
    # shellcheck disable=SC2086
    json=$("$KEEL" bench "$workload" --endpoints "$ENDPOINTS" --conns "$conns" --clients "$clients" \
      --total "$TOTAL" $rest --json)
    tput=$(echo "$json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["throughput_per_sec"]))')
    p99=$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["latency_ms"]["p99"])')
    requests=$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
    cpu_us=$(python3 -c "print(round(($(cpu_ticks) - $before) / $CLK_TCK * 1e6 / max($requests, 1)))")
    echo "$workload $conns/$clients ${rest// --/ }|$tput|$p99|$(rss_mib)|$cpu_us" >>"$WORK/$1.results"
  done
  stop_cluster
}

run_loads etcd
run_loads keel

printf '%-58s %10s %10s %7s %9s %9s %7s %8s %8s %9s %9s %7s\n' load etcd/s keel/s ratio "etcd p99" "keel p99" ratio \
  "etcd MiB" "keel MiB" "etcd µs/op" "keel µs/op" ratio
paste -d'|' "$WORK/etcd.results" "$WORK/keel.results" | while IFS='|' read -r load et ep er ec _ kt kp kr kc; do
  printf '%-58s %10s %10s %7.2f %9.2f %9.2f %7.2f %8s %8s %9s %9s %7.2f\n' "${load:0:58}" "$et" "$kt" \
    "$(python3 -c "print($kt/max($et,1))")" "$ep" "$kp" "$(python3 -c "print($kp/max($ep,1e-9))")" "$er" "$kr" \
    "$ec" "$kc" "$(python3 -c "print($kc/max($ec,1))")"
done

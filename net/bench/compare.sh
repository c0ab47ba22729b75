#!/usr/bin/env bash
# Runs the same `keel bench` loads against a 3-member etcd cluster and a 3-member keel
# cluster on loopback, one after the other with the same settings, and prints one table:
# throughput, p99 latency, their ratios, each server's resident memory, and the CPU time the
# three servers spent per request (user + system, from /proc): on a machine that runs the load
# generator beside the servers, throughput is bounded by CPU, and the CPU per request shows the
# servers' own cost apart from the generator's. Then the single-client put against the
# machine's floor (issue 21's target: p50 ≤ 1.3× two fdatasyncs and a loopback round trip,
# each measured here), with one keel member alone beside it: what keel's own stack costs
# once no peer is waited for.
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

run_loads() { # $1 = keel|etcd; writes "$WORK/$1.results" as "load|throughput|p99|rss|cpu µs per request|p50"
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
    p50=$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["latency_ms"]["p50"])')
    requests=$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
    cpu_us=$(python3 -c "print(round(($(cpu_ticks) - $before) / $CLK_TCK * 1e6 / max($requests, 1)))")
    # The label: the workload and what sets it apart (every load has the same key space).
    label="$workload $conns/$clients ${rest//--key-size 8 /}"
    label="${label//--val-size 256 /}"
    label="${label//--key-space-size 100000/}"
    read -r -a words <<<"${label//--/}"
    echo "${words[*]}|$tput|$p99|$(rss_mib)|$cpu_us|$p50" >>"$WORK/$1.results"
  done
  stop_cluster
}

run_loads etcd
run_loads keel

echo "3 members of each on loopback; 8-byte keys, 256-byte values, 100k keys; $TOTAL requests per load"
printf '%-58s %10s %10s %7s %9s %9s %7s %8s %8s %9s %9s %7s\n' load etcd/s keel/s ratio "etcd p99" "keel p99" ratio \
  "etcd MiB" "keel MiB" "etcd µs/op" "keel µs/op" ratio
paste -d'|' "$WORK/etcd.results" "$WORK/keel.results" | while IFS='|' read -r load et ep er ec _ _ kt kp kr kc _; do
  printf '%-58s %10s %10s %7.2f %9.2f %9.2f %7.2f %8s %8s %9s %9s %7.2f\n' "${load:0:58}" "$et" "$kt" \
    "$(python3 -c "print($kt/max($et,1))")" "$ep" "$kp" "$(python3 -c "print($kp/max($ep,1e-9))")" "$er" "$kr" \
    "$ec" "$kc" "$(python3 -c "print($kc/max($ec,1))")"
done

# The floor of one put: the leader's and a follower's fdatasync (a WAL record's size, on the
# file system the members write to) and one loopback round trip. keel overlaps the two
# syncs, so it can go below it; etcd, and keel on a busy machine, do not.
fdatasync_p50_ms() { # $1 = how many writers sync at once (each on its own file), as three members on one disk do
  python3 - "$WORK/fsync.probe" "$1" <<'PY'
import os, sys, time
from multiprocessing import Pool
def probe(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    os.write(fd, b"\0" * (1 << 20)); os.fdatasync(fd)
    took = []
    for i in range(2000):
        os.pwrite(fd, b"x" * 300, (i * 300) % (1 << 20))
        t = time.perf_counter(); os.fdatasync(fd); took.append(time.perf_counter() - t)
    os.close(fd); os.unlink(path)
    return sorted(took)[len(took) // 2]
writers = int(sys.argv[2])
with Pool(writers) as pool:
    p50s = pool.map(probe, [f"{sys.argv[1]}.{i}" for i in range(writers)])
print(f"{sorted(p50s)[len(p50s) // 2] * 1e3:.3f}")
PY
}
loopback_rtt_p50_ms() {
  python3 - <<'PY'
import socket, threading, time
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
def echo():
    conn, _ = server.accept(); conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (data := conn.recv(512)):
        conn.sendall(data)
threading.Thread(target=echo, daemon=True).start()
client = socket.create_connection(server.getsockname())
client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
took = []
for _ in range(2000):
    t = time.perf_counter(); client.sendall(b"x" * 300); client.recv(512); took.append(time.perf_counter() - t)
print(f"{sorted(took)[len(took) // 2] * 1e3:.3f}")
PY
}
one_member_put_p50_ms() {
  "$KEEL" --name solo --data-dir "$WORK/keel-solo" --listen-client-urls http://127.0.0.1:42379 \
    --advertise-client-urls http://127.0.0.1:42379 --listen-peer-urls http://127.0.0.1:42380 \
    --initial-advertise-peer-urls http://127.0.0.1:42380 \
    --initial-cluster solo=http://127.0.0.1:42380 >"$WORK/keel-solo.log" 2>&1 &
  PIDS=($!)
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:42379 put bench-ready 1 >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$KEEL" bench put --endpoints 127.0.0.1:42379 --total 3000 --key-size 8 --val-size 256 \
    --key-space-size 100000 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["latency_ms"]["p50"])'
  stop_cluster
}
fsync_ms=$(fdatasync_p50_ms 1)
fsync3_ms=$(fdatasync_p50_ms 3)
rtt_ms=$(loopback_rtt_p50_ms)
solo_ms=$(one_member_put_p50_ms)
etcd_p50=$(tail -1 "$WORK/etcd.results" | cut -d'|' -f6)
keel_p50=$(tail -1 "$WORK/keel.results" | cut -d'|' -f6)
python3 - "$fsync_ms" "$rtt_ms" "$etcd_p50" "$keel_p50" "$solo_ms" "$fsync3_ms" <<'PY'
import sys
fsync, rtt, etcd, keel, solo, fsync3 = map(float, sys.argv[1:])
floor = 2 * fsync + rtt
print()
print(f"put 1/1 p50 against the floor: fdatasync p50 {fsync:.3f} ms, loopback round trip p50 {rtt:.3f} ms,"
      f" floor {floor:.3f} ms")
print(f"  etcd {etcd:.3f} ms ({etcd / floor:.2f}x the floor), keel {keel:.3f} ms ({keel / floor:.2f}x;"
      f" target <= 1.3x), one keel member alone {solo:.3f} ms ({solo / floor:.2f}x)")
print(f"  three writers syncing at once on this disk, as the three members do: fdatasync p50 {fsync3:.3f} ms each")
PY

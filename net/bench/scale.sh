#!/usr/bin/env bash
# keel and etcd at production data sizes, side by side (the targets of issue 15). For each
# system, a 3-member cluster on loopback:
#   1. load: KEYS keys of VALUE bytes written once (sequential keys, 8 connections, 64 clients);
#   2. run: random puts over those keys for DURATION seconds (8/64), with the default
#      --snapshot-count; sampled every 5 s: each member's resident memory;
#   3. (keel) 8 RangeStreams of every key at once: the member's RSS growth per stream, once
#      one stream has filled the engine's page cache;
#   4. defragment: a compaction at the current revision, then a defragment of the leader while
#      60 s of random puts go on: how long it took, the file before and after, the puts' worst
#      latency and errors meanwhile (etcd's defragment blocks the member's reads and writes);
#   5. restart: kill -9 of a follower and a restart; time until it serves a linearizable read;
#   6. join: a fourth member added (member add, then started empty) while puts go on; time
#      until it applied what the leader had, and the client errors meanwhile.
# It prints one table. Nothing here asserts: the figures go into the notes.
#
#   net/bench/scale.sh                          # 1M keys of 1 KiB (about 1 GB), 180 s
#   KEYS=100000 DURATION=30 net/bench/scale.sh  # a quick look
#   SYSTEMS=keel net/bench/scale.sh             # one system only
# Needs a release build, `etcd` (Debian: etcd-server) and `etcdctl` (etcd-client).
set -euo pipefail
cd "$(dirname "$0")/../.."

KEYS="${KEYS:-1000000}"
VALUE="${VALUE:-1024}"
DURATION="${DURATION:-180}"
SYSTEMS="${SYSTEMS:-keel etcd}"
KEEL="${KEEL:-target/release/keel}"
ETCD="${ETCD:-$(command -v etcd || true)}"
[ -x "$KEEL" ] || cargo build --release -p keel-net --bin keel
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
PIDS=()
SAMPLER=""
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  for pid in "${PIDS[@]:-}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

export ETCDCTL_API=3
CLUSTER=n1=http://127.0.0.1:12380,n2=http://127.0.0.1:22380,n3=http://127.0.0.1:32380
ENDPOINTS=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379

server() { # $1 system, $2 member number, $3 state, $4 initial cluster
  local i=$2 args
  args=(--name "n$i" --data-dir "$WORK/$1-n$i"
    --listen-client-urls "http://127.0.0.1:${i}2379" --advertise-client-urls "http://127.0.0.1:${i}2379"
    --listen-peer-urls "http://127.0.0.1:${i}2380" --initial-advertise-peer-urls "http://127.0.0.1:${i}2380"
    --initial-cluster "$4" --initial-cluster-state "$3" --initial-cluster-token "scale-$1")
  # etcd's largest recommended quota: 1M keys of 1 KiB with their history pass the default.
  args+=(--quota-backend-bytes $((8 * 1024 * 1024 * 1024)))
  if [ "$1" = keel ]; then "$KEEL" "${args[@]}" >>"$WORK/$1-n$i.log" 2>&1 &
  else "$ETCD" "${args[@]}" >>"$WORK/$1-n$i.log" 2>&1 &
  fi
  PIDS[$i]=$!
}

wait_serving() { # $1 endpoint; prints the milliseconds until it answers a linearizable read
  local started; started=$(date +%s%N)
  for _ in $(seq 1200); do
    if etcdctl --endpoints="$1" --command-timeout=1s get scale-probe >/dev/null 2>&1; then
      echo $(( ($(date +%s%N) - started) / 1000000 )); return 0
    fi
    sleep 0.05
  done
  echo "never"
}

rss_mib() { awk '/VmRSS/ {printf "%d\n", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

sample_rss() { # every 5 s, the largest member's RSS, to $WORK/$1.rss
  while true; do
    local max=0
    for pid in "${PIDS[@]}"; do local r; r=$(rss_mib "$pid"); [ "$r" -gt "$max" ] && max=$r; done
    echo "$(date +%s) $max" >>"$WORK/$1.rss"
    sleep 5
  done
}

bench() { # $1 output file, then keel bench arguments
  local out=$1; shift
  "$KEEL" bench put --endpoints "$ENDPOINTS" --conns 8 --clients 64 --val-size "$VALUE" --json "$@" >"$out"
}

field() { # $1 file, $2 jq-like path of a number in keel bench's JSON
  python3 -c "import json,sys; d=json.load(open('$1')); print(eval('d' + ''.join('[%r]' % k for k in '$2'.split('.'))))"
}

leader_changes() {
  local sum=0
  for i in 1 2 3; do
    local n
    n=$(curl -s "127.0.0.1:${i}2379/metrics" | awk '/^etcd_server_leader_changes_seen(_total)? / {print $2}' | head -1)
    sum=$((sum + ${n%.*}))
  done
  echo "$sum"
}

db_size_mb() { # $1 endpoint
  etcdctl --endpoints="$1" --command-timeout=60s endpoint status -w json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"] // 1000000)'
}

leader_port() {
  { etcdctl --endpoints="$ENDPOINTS" --command-timeout=60s endpoint status 2>/dev/null || true; } |
    awk -F', ' '$5 == "true" {print $1}' | head -1
}

run_system() {
  local sys=$1
  : >"$WORK/$sys.rss"
  PIDS=()
  for i in 1 2 3; do server "$sys" "$i" new "$CLUSTER"; done
  for i in 1 2 3; do wait_serving "127.0.0.1:${i}2379" >/dev/null; done
  echo "== $sys: loading $KEYS keys of $VALUE bytes" >&2
  bench "$WORK/$sys.load.json" --total "$KEYS" --sequential-keys --key-space-size "$KEYS"
  sample_rss "$sys" & SAMPLER=$!
  local rss_loaded; rss_loaded=$(for pid in "${PIDS[@]}"; do rss_mib "$pid"; done | sort -n | tail -1)
  local changes_before; changes_before=$(leader_changes)
  echo "== $sys: random puts for ${DURATION}s" >&2
  bench "$WORK/$sys.run.json" --duration "${DURATION}s" --key-space-size "$KEYS"
  local changes; changes=$(( $(leader_changes) - changes_before ))
  kill "$SAMPLER"; SAMPLER=""
  local rss_max; rss_max=$(awk '{print $2}' "$WORK/$sys.rss" | sort -n | tail -1)
  local rss_end; rss_end=$(for pid in "${PIDS[@]}"; do rss_mib "$pid"; done | sort -n | tail -1)
  local data; data=$(du -sm "$WORK/$sys-n1" | cut -f1)

  local stream_growth="-"
  if [ "$sys" = keel ]; then # etcd 3.4 has no RangeStream
    echo "== $sys: 8 RangeStreams of every key at once" >&2
    # One stream first, so that the engine's page cache (a flag, not a stream's cost) is
    # as full as reading everything makes it before the eight are measured.
    "$KEEL" bench range-stream --endpoints 127.0.0.1:12379 --total 1 --consistency s >/dev/null
    local before peak=0; before=$(rss_mib "${PIDS[1]}")
    "$KEEL" bench range-stream --endpoints 127.0.0.1:12379 --conns 8 --clients 8 --total 8 \
      --consistency s --json >"$WORK/$sys.stream.json" &
    local streams=$!
    while kill -0 "$streams" 2>/dev/null; do
      local r; r=$(rss_mib "${PIDS[1]}"); [ "$r" -gt "$peak" ] && peak=$r
      sleep 0.2
    done
    wait "$streams" || true
    stream_growth="$(( (peak - before) / 8 )) MiB/stream, $(field "$WORK/$sys.stream.json" latency_ms.max) ms"
  fi

  echo "== $sys: compaction, then a defragment of the leader under put load" >&2
  local revision; revision=$(etcdctl --endpoints="$(leader_port)" --command-timeout=60s endpoint status -w json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])')
  etcdctl --endpoints="$ENDPOINTS" --command-timeout=600s compact "$revision" --physical >/dev/null
  local defrag_at; defrag_at=$(leader_port)
  bench "$WORK/$sys.defrag.json" --duration 60s --key-space-size "$KEYS" &
  local defrag_load=$!
  sleep 10 # physical compaction goes on under the load
  local size_before; size_before=$(db_size_mb "$defrag_at")
  local defrag_from; defrag_from=$(date +%s%N)
  # DEFRAG=0: the same compaction and load without the defragment, to tell their costs apart.
  [ "${DEFRAG:-1}" = 0 ] || etcdctl --endpoints="$defrag_at" --command-timeout=600s defrag >/dev/null 2>&1 || true
  local defrag_ms=$(( ($(date +%s%N) - defrag_from) / 1000000 ))
  local size_after; size_after=$(db_size_mb "$defrag_at")
  wait "$defrag_load" || true
  local defrag="$defrag_ms ms, $size_before -> $size_after MB; puts meanwhile: max $(field "$WORK/$sys.defrag.json" latency_ms.max) ms, $(field "$WORK/$sys.defrag.json" errors) errors"

  echo "== $sys: kill -9 of a follower and restart" >&2
  local leader; leader=$(leader_port)
  local victim=3; [ "$leader" = "127.0.0.1:32379" ] && victim=2
  kill -9 "${PIDS[$victim]}"; wait "${PIDS[$victim]}" 2>/dev/null || true
  server "$sys" "$victim" existing "$CLUSTER"
  local restart_ms; restart_ms=$(wait_serving "127.0.0.1:${victim}2379")

  echo "== $sys: a fourth member joins under load" >&2
  # etcd refuses a member change until every member has been connected for 5 s.
  for _ in $(seq 60); do
    etcdctl --endpoints="$ENDPOINTS" member add n4 --peer-urls=http://127.0.0.1:42380 >/dev/null 2>&1 && break
    sleep 0.5
  done
  bench "$WORK/$sys.join.json" --duration 30s --key-space-size "$KEYS" &
  local load=$!
  sleep 2
  local joined_from; joined_from=$(date +%s%N)
  server "$sys" 4 existing "$CLUSTER,n4=http://127.0.0.1:42380"
  local target; target=$(etcdctl --endpoints="$(leader_port)" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["raftIndex"])')
  local join_ms="never" received=0
  # Polled cheaply (etcdctl and awk, 5 times a second): the poll shares the two cores with
  # the join, and a python3 per poll 20 times a second took a sixth of the machine.
  for _ in $(seq 600); do
    local applied
    applied=$(etcdctl --endpoints=127.0.0.1:42379 --command-timeout=1s endpoint status -w fields 2>/dev/null |
      awk '/"RaftAppliedIndex"/ {print $3}' || true)
    if [ "${applied:-0}" -ge "$target" ] 2>/dev/null; then
      join_ms=$(( ($(date +%s%N) - joined_from) / 1000000 ))
      received=$(du -sm "$WORK/$sys-n4" | cut -f1)
      break
    fi
    sleep 0.2
  done
  wait "$load" || true
  local join_rate="-"
  [ "$join_ms" != never ] && join_rate=$(( received * 1000 / (join_ms + 1) ))
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
  rm -rf "$WORK/$sys"-n? # the next system needs the disk space

  printf '%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s\n' "$sys" \
    "$(field "$WORK/$sys.load.json" throughput_per_sec | cut -d. -f1)" \
    "$(field "$WORK/$sys.run.json" requests)" "$(field "$WORK/$sys.run.json" errors)" \
    "$(field "$WORK/$sys.run.json" throughput_per_sec | cut -d. -f1)" \
    "$(field "$WORK/$sys.run.json" latency_ms.p99)" "$(field "$WORK/$sys.run.json" latency_ms.max)" \
    "$changes" "$rss_loaded" "$rss_max" "$rss_end" "$data" "$restart_ms" "$join_ms" \
    "$join_rate MB/s, $(field "$WORK/$sys.join.json" errors) errors" "$stream_growth" "$defrag" >>"$WORK/results"
}

: >"$WORK/results"
for sys in $SYSTEMS; do
  if [ "$sys" = etcd ] && [ -z "$ETCD" ]; then echo "scale.sh: etcd not found, skipped" >&2; continue; fi
  run_system "$sys"
done
echo
echo "$KEYS keys of $VALUE B, then ${DURATION}s of random puts (8 connections, 64 clients)"
{
  echo "system|load puts/s|puts|errors|puts/s|p99 ms|max ms|leader changes|RSS MiB loaded|RSS MiB max|RSS MiB end|data MB|restart ms|join ms|join|RangeStream x8 RSS growth|defragment of the leader"
  cat "$WORK/results"
} | column -t -s '|'

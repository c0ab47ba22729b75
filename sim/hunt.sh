#!/usr/bin/env bash
# A long bug hunt: the simulator's random sweep over many seeds, in release mode, split over
# the machine's cores (one test process per core, each on its own range of seeds). Stops at
# the first failing seed and prints its report, which ends with the replay command.
#
#   sim/hunt.sh                        # 10,000 seeds from 0
#   SEEDS=2000 FIRST=50000 sim/hunt.sh
#   JOBS=4 sim/hunt.sh                 # processes (default: the number of cores)
#   TEST=random_faults_with_operators_keep_keel_safe_and_live sim/hunt.sh   # operators' faults too
#
# Prints seeds per minute and simulated seconds per wall second when it ends.
set -uo pipefail
ROOT="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
cd "$ROOT"
SEEDS="${SEEDS:-10000}"
FIRST="${FIRST:-0}"
JOBS="${JOBS:-$(nproc)}"
TEST="${TEST:-random_faults_keep_keel_safe_and_live}"
OUT="${OUT:-target/hunt}"
mkdir -p "$OUT"
export RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim
cargo test -p keel-sim --release --test simulation --no-run >"$OUT/build.log" 2>&1 ||
  { cat "$OUT/build.log"; exit 1; }

# A job runs its range in chunks, a test process each (a process's memory stays flat, about
# 70 MB, since each run stops its machines at the end: World::shut_down).
CHUNK="${CHUNK:-2500}"
run_job() { # $1 first seed, $2 count
  local first=$1 end=$(($1 + $2))
  while [ "$first" -lt "$end" ]; do
    local count=$(( end - first < CHUNK ? end - first : CHUNK ))
    KEEL_SIM_FIRST_SEED=$first KEEL_SIM_SEEDS=$count KEEL_SIM_PROGRESS=1 \
      cargo test -q -p keel-sim --release --test simulation "$TEST" \
      -- --nocapture || return 1
    first=$((first + count))
  done
}

per_job=$(( (SEEDS + JOBS - 1) / JOBS ))
started=$(date +%s)
pids=()
for job in $(seq 0 $((JOBS - 1))); do
  first=$((FIRST + job * per_job))
  count=$per_job
  if [ $((job * per_job + count)) -gt "$SEEDS" ]; then count=$((SEEDS - job * per_job)); fi
  [ "$count" -gt 0 ] || continue
  run_job "$first" "$count" >"$OUT/job$job.log" 2>&1 &
  pids+=($!)
done

failed=""
while [ ${#pids[@]} -gt 0 ]; do
  remaining=()
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      remaining+=("$pid")
    elif ! wait "$pid"; then
      failed=1
    fi
  done
  pids=("${remaining[@]+"${remaining[@]}"}")
  if [ -n "$failed" ]; then
    for pid in "${pids[@]+"${pids[@]}"}"; do kill -- "$pid" 2>/dev/null; done
    pkill -f "simulation-.*random_faults_keep_keel_safe_and_live" 2>/dev/null
    break
  fi
  sleep 2
done

seconds=$(( $(date +%s) - started ))
done_seeds=$(cat "$OUT"/job*.log | grep -c "^seed .* passed")
simulated=$(cat "$OUT"/job*.log | awk '/^seed .* passed/ { s += $5 } END { print s + 0 }')
echo "$done_seeds seeds passed in ${seconds}s ($(( done_seeds * 60 / (seconds > 0 ? seconds : 1) )) seeds/min," \
  "$(( simulated / (seconds > 0 ? seconds : 1) )) simulated s per wall s over $JOBS processes)"
if [ -n "$failed" ]; then
  grep -h -A200 "simulation failed" "$OUT"/job*.log | head -120
  echo "FAILED: the report above ends with the replay command (logs in $OUT)"
  exit 1
fi

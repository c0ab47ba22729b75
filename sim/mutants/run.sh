#!/usr/bin/env bash
# The simulator's mutation self-test: each planted bug in sim/mutants/*.patch is applied to
# a scratch worktree of HEAD, the simulation suite runs on it (CI's command: the sweep and
# the named scenarios, madsim mode), and a table says per bug whether the suite caught it,
# which test failed first and at which seed. A green suite means something only if it
# catches these (see sim/mutants/README.md for what each patch breaks).
#
#   sim/mutants/run.sh                      # every patch, CI's seed counts
#   sim/mutants/run.sh sim/mutants/03-*.patch
#   KEEL_SIM_SEEDS=200 sim/mutants/run.sh   # a bigger budget per test
#   WORK=/tmp/mutants sim/mutants/run.sh    # scratch worktree and target dir (default target/mutants)
#   TIMEOUT=1200                            # seconds per patch (a hang counts as caught: liveness)
#   SKIP_BASELINE=1                         # the unmutated suite just passed on HEAD: skip it
#
# The unmutated tree runs first and must pass. Results also go to $WORK/results.tsv.
set -uo pipefail
ROOT="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
cd "$ROOT"
WORK="${WORK:-$ROOT/target/mutants}"
TIMEOUT="${TIMEOUT:-1200}"
TREE="$WORK/tree"
mkdir -p "$WORK"
if [ $# -gt 0 ]; then PATCHES=("$@"); else PATCHES=(sim/mutants/*.patch); fi
for p in "${PATCHES[@]}"; do PATCHES_ABS+=("$(realpath "$p")"); done

if [ -d "$TREE" ]; then
  git -C "$TREE" checkout -q --detach -f "$(git rev-parse HEAD)"
else
  git worktree add -q --detach "$TREE" HEAD
fi

suite() { # $1 log file; returns the suite's exit status
  ( cd "$TREE" && RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR="$WORK/target-sim" \
      timeout "$TIMEOUT" cargo test -p keel-sim -p keel-scenarios ) >"$1" 2>&1
}

echo "baseline (no bug) ..."
if [ "${SKIP_BASELINE:-0}" = 1 ]; then
  echo "skipped (SKIP_BASELINE=1)"
elif ! suite "$WORK/baseline.log"; then
  echo "the unmutated suite fails: see $WORK/baseline.log" >&2
  exit 1
fi

printf "patch\tresult\tfirst failing test\tseed\tminutes\n" | tee "$WORK/results.tsv"
caught=0
total=0
for patch in "${PATCHES_ABS[@]}"; do
  name="$(basename "$patch" .patch)"
  log="$WORK/$name.log"
  git -C "$TREE" checkout -q -f HEAD -- .
  if ! git -C "$TREE" apply "$patch"; then
    printf "%s\tdoes not apply\t-\t-\t-\n" "$name" | tee -a "$WORK/results.tsv"
    continue
  fi
  total=$((total + 1))
  started=$(date +%s)
  suite "$log"
  status=$?
  minutes=$(( ($(date +%s) - started + 30) / 60 ))
  if grep -q "^error\(\[E[0-9]*\]\)\?:" "$log" && ! grep -q "^test " "$log"; then
    result="does not build"
  elif [ "$status" = 124 ]; then
    result="caught (timeout)"; caught=$((caught + 1))
  elif [ "$status" != 0 ]; then
    result="caught"; caught=$((caught + 1))
  else
    result="MISSED"
  fi
  test_name="$(grep -m1 -oE "^test [^ ]+ \.\.\. FAILED" "$log" | awk '{print $2}')"
  seed="$(grep -m1 -oE "simulation failed, seed [0-9]+|MADSIM_TEST_SEED=[0-9]+|seed [0-9]+:" "$log" | grep -oE "[0-9]+" | head -1)"
  printf "%s\t%s\t%s\t%s\t%s\n" "$name" "$result" "${test_name:--}" "${seed:--}" "$minutes" | tee -a "$WORK/results.tsv"
done
git -C "$TREE" checkout -q -f HEAD -- .
echo "caught $caught of $total planted bugs (logs in $WORK)"

#!/usr/bin/env bash
# The whole test suite: installs what is needed, builds twice (plain and ASan+UBSan), runs the
# cmocka unit tests and the integration tests against both builds, and ends with one line
# "N passed, N failed" counting every unit test case and integration test.
#
# usage: scripts/test.sh [--repeat N] [--only plain|asan]
#   --repeat N   run the whole suite N times in a row (built once) to look for flaky tests;
#                prints each round's result and "rounds passed: K/N", and the final line
#                counts every test of every round. A flaky test is a bug: fix it, never retry.
#   --only V     run one variant only (plain or asan); CI runs both.
set -uo pipefail
cd "$(dirname "$0")/.."

repeat=1
variants=(plain asan)
while (($#)); do
  case $1 in
  --repeat)
    [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "test.sh: --repeat needs a positive count" >&2; exit 2; }
    repeat=$2
    shift 2
    ;;
  --only)
    [[ ${2:-} == plain || ${2:-} == asan ]] || { echo "test.sh: --only takes plain or asan" >&2; exit 2; }
    variants=("$2")
    shift 2
    ;;
  -h | --help)
    sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "test.sh: unknown argument $1 (see --help)" >&2
    exit 2
    ;;
  esac
done

./scripts/install-deps.sh || exit 1

passed=0
failed=0
add_counts() { # reads "N passed, N failed" from the last such line of a log
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
  if [ -z "$line" ]; then
    failed=$((failed + 1))
    echo "no result line in $1" >&2
    return
  fi
  passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
  failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
}

run_unit() { # $1 build dir: runs the cmocka programs, as many at once as CPUs, counts cases
  local dir=$1 log=$1/unit-results.txt out=$1/unit-out
  : > "$log"
  rm -rf "$out" && mkdir -p "$out"
  local p=0 f=0 progs=() t jobs=0 max
  max=$(nproc 2>/dev/null || echo 1)
  # the longest first (test_repo, test_state: 40 and 15 s plain, 100 and 35 s with ASan)
  for t in "$dir"/tests/unit/test_repo "$dir"/tests/unit/test_state "$dir"/tests/unit/test_*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    [[ " ${progs[*]} " == *" $t "* ]] || progs+=("$t")
  done
  # each program alone in the background (its output and exit status in $out), max at once:
  # test_repo takes most of a minute plain, and one program uses one CPU
  for t in "${progs[@]}"; do
    (("$t" > "$out/$(basename "$t").log" 2>&1); echo $? > "$out/$(basename "$t").rc") &
    jobs=$((jobs + 1))
    if ((jobs >= max)); then
      wait -n
      jobs=$((jobs - 1))
    fi
  done
  wait
  for t in "${progs[@]}"; do
    local name o rc np nf
    name=$(basename "$t")
    o=$(cat "$out/$name.log")
    rc=$(cat "$out/$name.rc" 2>/dev/null || echo 1)
    echo "$o" >> "$log"
    np=$(echo "$o" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
    nf=$(echo "$o" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
    np=${np:-0}
    nf=${nf:-0}
    if [ "$rc" -ne 0 ] && [ "$nf" -eq 0 ]; then nf=1; fi # crashed or sanitizer report
    [ "$nf" -ne 0 ] && { echo "$o" | tail -n 40; echo "FAILED: $t"; }
    p=$((p + np))
    f=$((f + nf))
  done
  echo "unit tests ($dir): $p passed, $f failed"
  echo "$p passed, $f failed" >> "$log"
  add_counts "$log"
}

run_integration() { # $1 build dir
  local log=$1/integration-results.txt
  bash tests/integration/run.sh --bin "$1/src/cli/caris-backup" 2>&1 | tee "$log" | grep -vE '^(ok|PASS)' || true
  add_counts "$log"
}

built=()
for variant in "${variants[@]}"; do
  if [ $variant = asan ]; then
    ./scripts/build.sh --asan && built+=(asan) || failed=$((failed + 1))
  else
    ./scripts/build.sh && built+=(plain) || failed=$((failed + 1))
  fi
done

rounds_ok=0
for ((round = 1; round <= repeat; round++)); do
  before_failed=$failed
  ((repeat > 1)) && echo "== round $round of $repeat"
  for variant in "${built[@]}"; do
    if [ $variant = asan ]; then
      dir=build-asan
      export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
      export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    else
      dir=build
      unset ASAN_OPTIONS UBSAN_OPTIONS
    fi
    echo "== $variant build: unit tests"
    run_unit $dir
    echo "== $variant build: integration tests"
    run_integration $dir
  done
  if [ "$failed" -eq "$before_failed" ]; then
    rounds_ok=$((rounds_ok + 1))
    ((repeat > 1)) && echo "== round $round: passed"
  else
    ((repeat > 1)) && echo "== round $round: FAILED ($((failed - before_failed)) failures)"
  fi
done
((repeat > 1)) && echo "rounds passed: $rounds_ok/$repeat"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

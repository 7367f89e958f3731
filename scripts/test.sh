#!/usr/bin/env bash
# The whole test suite: installs what is needed, builds twice (plain and ASan+UBSan), runs the
# cmocka unit tests and the integration tests against both builds, and ends with one line
# "N passed, N failed" counting every unit test case and integration test.
#
# usage: scripts/test.sh [--repeat N] [--only plain|asan|tsan]
#   --repeat N   run the whole suite N times in a row (built once) to look for flaky tests;
#                prints each round's result and "rounds passed: K/N", and the final line
#                counts every test of every round. A flaky test is a bug: fix it, never retry.
#   --only V     run one variant only (plain, asan, or tsan: ThreadSanitizer, build-tsan/);
#                CI runs plain and asan. tsan is not in CI: the whole suite under it takes
#                about 5 more minutes on a fast 2-core machine, and CI's machines have taken
#                up to 25 minutes for the two variants alone.
#
# Order: the plain build; its integration tests, with in the background (nice 10) its unit
# tests and the ASan build; once that is built, the ASan integration tests beside the plain
# ones (the two runs share their -j slots: tests/integration/run.sh CARIS_TEST_SLOTS), with
# the ASan unit tests and the replay of the fuzz harnesses' saved inputs (tests/fuzz/run.sh,
# FUZZ_REPLAY=1) in the background. The plain build's results are printed as they come, the
# other variant's after them; each variant's unit tests are reported after its integration
# tests.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

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
    [[ ${2:-} == plain || ${2:-} == asan || ${2:-} == tsan ]] ||
      { echo "test.sh: --only takes plain, asan or tsan" >&2; exit 2; }
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
echo "(installed: at ${SECONDS} s)"

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

# run_unit DIR: the cmocka programs of build DIR, as many at once as CPUs; each program's
# output and exit status go to DIR/unit-out. Prints nothing (it may run in the background).
run_unit() {
  local dir=$1 out=$1/unit-out
  rm -rf "$out" && mkdir -p "$out"
  local progs=() t jobs=0 max
  max=$(nproc 2>/dev/null || echo 1)
  # the longest first (test_repo, test_state: 40 and 15 s plain, 100 and 35 s with ASan)
  for t in "$dir"/tests/unit/test_repo "$dir"/tests/unit/test_state "$dir"/tests/unit/test_*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    [[ " ${progs[*]} " == *" $t "* ]] || progs+=("$t")
  done
  : >"$out/programs"
  ((${#progs[@]})) && printf '%s\n' "${progs[@]}" >"$out/programs"
  # each program alone in the background (its output and exit status in $out), max at once:
  # test_repo takes most of a minute plain, and one program uses one CPU
  for t in "${progs[@]}"; do
    ( ("$t" >"$out/$(basename "$t").log" 2>&1); echo $? >"$out/$(basename "$t").rc") &
    jobs=$((jobs + 1))
    if ((jobs >= max)); then
      wait -n
      jobs=$((jobs - 1))
    fi
  done
  wait
}

# report_unit DIR: counts the cases of run_unit DIR's programs (a crash or a sanitizer report
# without a failed case counts one failure), prints the failures and a summary line, and
# writes every output and the counts to DIR/unit-results.txt.
report_unit() {
  local dir=$1 log=$1/unit-results.txt out=$1/unit-out
  : > "$log"
  local p=0 f=0 t
  if [ ! -s "$out/programs" ]; then
    echo "unit tests ($dir): did not run"
    failed=$((failed + 1))
    return
  fi
  while read -r t; do
    local name o rc np nf
    name=$(basename "$t")
    o=$(cat "$out/$name.log" 2>/dev/null)
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
  done <"$out/programs"
  echo "unit tests ($dir): $p passed, $f failed (ended at $(cat "$out/ended" 2>/dev/null || echo '?') s)"
  echo "$p passed, $f failed" >> "$log"
  add_counts "$log"
}

sanitizer_env() { # $1 variant: the environment its programs run in
  unset ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS
  if [ "$1" = asan ]; then
    # a quarantine of 64 MiB, not 256: freed memory is still held back from reuse (a use after
    # free is still caught while it is there), and the suite's ASan phase takes a tenth less
    # (fewer fresh pages; each page fault is dear on this guest: 106 s -> 95 s for test_prune,
    # test_s3_open and test_concurrent). The stacks of allocations and frees are kept 10 frames
    # deep, not 30: a report still has its full stack where the error is, and the 10 innermost
    # frames of where the memory was allocated and freed; storing every allocation's stack is
    # a tenth of the CPU of the ASan tests (test_prune 50 -> 45 CPU-s, test_cli 22 -> 19)
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=64:malloc_context_size=10
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  elif [ "$1" = tsan ]; then
    # a race is reported and the program goes on (it then exits 66); lib.sh fails the test
    # on the report either way
    export TSAN_OPTIONS=halt_on_error=0:second_deadlock_stack=1
  fi
}
variant_dir() { case $1 in asan) echo build-asan ;; tsan) echo build-tsan ;; *) echo build ;; esac; }

# The fuzz harnesses of tests/fuzz (clang, ASan + UBSan), each run once on its seeds and on
# the inputs that once failed: no fuzzing, deterministic. One result per harness.
run_fuzz_replay() { # the log in $side_dir/fuzz-replay.log
  FUZZ_REPLAY=1 FUZZ_BUILD="$side_dir/fuzz" sh tests/fuzz/run.sh >"$side_dir/fuzz-replay.log" 2>&1
}
report_fuzz_replay() {
  grep -E '^run\.sh: |SUMMARY|runtime error|^Running: ' "$side_dir/fuzz-replay.log" | grep -v 'ran clean' || true
  echo "fuzz replay: $(grep -E '^[0-9]+ passed, [0-9]+ failed' "$side_dir/fuzz-replay.log" | tail -n 1) (ended at $(cat "$side_dir/fuzz-replay.ended" 2>/dev/null || echo '?') s)"
  add_counts "$side_dir/fuzz-replay.log"
}

run_integration() { # $1 build dir, $2 the directory its tests' temporary directories go in
  # (prints the failures and the summary; count_integration counts them)
  local log=$1/integration-results.txt asan=()
  # The ASan build's commands hold 16 MiB of freed memory back from reuse, not 64: most free
  # less than that in their whole run (each of their frees stays caught), and those that churn
  # more (a backup of a few MiB frees its buffers over and over) fault in fresh pages for every
  # freed MiB held back, which is what a longer quarantine costs on this guest: 13 % of the CPU
  # of test_phys_empty, test_prune, test_cli and test_concurrent (141 -> 123 CPU-s). What runs
  # in the background (lib.sh's bg_start: the daemons, jobs held at a hook) runs long and keeps
  # 64 MiB, like the unit tests.
  [ -n "${ASAN_OPTIONS:-}" ] &&
    asan=(ASAN_OPTIONS="$ASAN_OPTIONS:quarantine_size_mb=16" CARIS_TEST_BG_ASAN_OPTIONS=quarantine_size_mb=64)
  # (when each phase began and ended, in seconds since test.sh started: where the wall time goes)
  echo "(integration tests of $1: from ${SECONDS} s)"
  env "${asan[@]}" CARIS_TEST_TMPDIR="$2" bash tests/integration/run.sh --bin "$1/src/cli/caris-backup" 2>&1 |
    tee "$log" | grep -vE '^(ok|PASS)' || true
  echo "(integration tests of $1: to ${SECONDS} s)"
}
count_integration() { add_counts "$1/integration-results.txt"; }

# Ports that tests reserve (tests/integration/lib.sh free_port, test_s3's free_port): one
# directory for everything that runs at once.
CARIS_TEST_PORTS=$(mktemp -d "${TMPDIR:-/tmp}/caris-test-ports.XXXXXX")
export CARIS_TEST_PORTS
# The integration runs share their slots (run.sh CARIS_TEST_SLOTS): as many tests at once as
# one run would have, whichever run they belong to.
CARIS_TEST_SLOTS=$(mktemp -d "${TMPDIR:-/tmp}/caris-test-slots.XXXXXX")
export CARIS_TEST_SLOTS
side_dir=$(mktemp -d "${TMPDIR:-/tmp}/caris-test-side.XXXXXX")
sides=()
stop_side() { # the background jobs (each its own process group) and everything they started
  local p
  for p in "${sides[@]}"; do kill -TERM -- -"$p" 2>/dev/null; done
  return 0
}

# Scratch space. The plain build's tests write their temporary directories (repositories,
# restore targets, PostgreSQL clusters) to the disk's file system, the one users back up from
# and to (ext4 here, mounted with discard). The sanitizer builds' tests, which look for memory
# errors and not for a file system's behaviour, write theirs to /dev/shm, the RAM file system
# (tmpfs) every Debian system mounts: the kernel's side of their file work (page cache,
# journal, discard) is the dearest part of the suite on a virtual machine, and tmpfs takes
# 8-17 % off the ASan tests' CPU (stop 48's note). When /dev/shm is not a tmpfs with 8 GiB
# free (a container's is often 64 MiB), they use the disk too; CARIS_TEST_RAM=0: always.
# (A short path: PostgreSQL's socket paths stop at 107 bytes, and a mail body folds long
# lines; both are tested with paths under /tmp.)
ram_dir=""
ram_start() {
  [ "${CARIS_TEST_RAM:-1}" = 1 ] || return 0
  local avail
  if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] && [ -w /dev/shm ] &&
    avail=$(df -k --output=avail /dev/shm 2>/dev/null | tail -n 1) &&
    [ "${avail// /}" -ge $((8 * 1024 * 1024)) ] 2>/dev/null; then
    ram_dir=/dev/shm
  else
    echo "test.sh: /dev/shm is not a tmpfs with 8 GiB free: the sanitizer builds' tests use the disk"
  fi
}
# the disk's temporary directory, for the tests that need a block file system wherever their
# own directory is (test_direct_io, test_phys_parent, test_mount)
CARIS_TEST_DISK_TMPDIR=${TMPDIR:-/tmp}
export CARIS_TEST_DISK_TMPDIR
variant_tmp() { # $1 variant: where its tests' temporary files go
  if [ "$1" != plain ] && [ -n "$ram_dir" ]; then echo "$ram_dir"; else echo "${TMPDIR:-/tmp}"; fi
}
# in this shell only: bash runs a script's traps in a child it has forked for a command when a
# signal reaches the child before it becomes the command (tests/integration/lib.sh, at_exit)
trap '[[ $BASHPID == "$$" ]] || exit; stop_side; rm -rf "$CARIS_TEST_PORTS" "$CARIS_TEST_SLOTS" "$side_dir"' EXIT
trap 'exit 130' INT TERM
[[ " ${variants[*]} " == *" asan "* || " ${variants[*]} " == *" tsan "* ]] && ram_start

build_variant() { # $1 variant [nice]; the build's output in $side_dir/build-$1.log
  local flag=() nice=()
  [ "$1" = asan ] && flag=(--asan)
  [ "$1" = tsan ] && flag=(--tsan)
  [ "${2:-}" = nice ] && nice=(nice -n 10)
  local rc=0
  "${nice[@]}" ./scripts/build.sh "${flag[@]}" >"$side_dir/build-$1.log" 2>&1 || rc=$?
  echo "(build of $1: done at ${SECONDS} s)" >>"$side_dir/build-$1.log"
  cat "$side_dir/build-$1.log"
  ((rc == 0)) && return 0
  # (the compiler's messages are in that log: build.sh's ninja --quiet shows them)
  echo "BUILD FAILED: $1"
  return 1
}

# The first variant is built here; the others are built in the background (nice 10) while its
# integration tests run, and their integration tests then run beside its own, sharing the
# slots: the integration tests leave the CPUs idle a quarter of the time (servers starting,
# child processes and polls they wait for), and a run alone leaves them idle at its end, while
# its last tests finish. Each variant's unit tests run in the background at a lower priority
# (nice 10) beside its integration tests and are reported after them; their programs do not
# depend on timing.
first=${variants[0]}
others=("${variants[@]:1}")
built=()
first_failed=0
if build_variant "$first"; then
  built+=("$first")
else
  first_failed=1 # counted in round 1
fi

# unit_side V: V's unit tests (and, for asan, the fuzz replay) in the background, nice 10, in a
# process group of their own (stop_side); its pid in $!
unit_side() {
  set -m
  (
    renice -n 10 -p $BASHPID >/dev/null 2>&1
    sanitizer_env "$1"
    TMPDIR=$(variant_tmp "$1")
    export TMPDIR
    run_unit "$(variant_dir "$1")"
    echo "$SECONDS" >"$(variant_dir "$1")/unit-out/ended"
    if [ "$1" = asan ]; then
      run_fuzz_replay
      echo "$SECONDS" >"$side_dir/fuzz-replay.ended"
    fi
  ) </dev/null &
  set +m
}
report_side() { # V: its unit tests' (and fuzz replay's) results
  echo "== $1 build: unit tests"
  report_unit "$(variant_dir "$1")"
  if [ "$1" = asan ]; then
    echo "== fuzz harnesses: replay of their saved inputs"
    report_fuzz_replay
  fi
}

rounds_ok=0
for ((round = 1; round <= repeat; round++)); do
  before_failed=$failed
  ((repeat > 1)) && echo "== round $round of $repeat"
  ((round == 1 && first_failed)) && failed=$((failed + 1))
  sides=()
  for v in "${variants[@]}"; do rm -rf "$(variant_dir "$v")/unit-out" "$side_dir/lane-$v"*; done
  # the other variants' lanes: built (round 1), then their unit tests in the background and
  # their integration tests (output in $side_dir/lane-V.out); "built" in $side_dir/lane-V.built
  for o in "${others[@]}"; do
    set -m
    (
      if ((round == 1)) && ! build_variant "$o" nice >"$side_dir/lane-$o.build" 2>&1; then exit 1; fi
      [[ $round == 1 || " ${built[*]} " == *" $o "* ]] || exit 1
      touch "$side_dir/lane-$o.built"
      unit_side "$o"
      side=$!
      sanitizer_env "$o"
      run_integration "$(variant_dir "$o")" "$(variant_tmp "$o")" >"$side_dir/lane-$o.out" 2>&1
      wait "$side"
    ) </dev/null &
    sides+=($!)
    set +m
  done
  if [[ " ${built[*]} " == *" $first "* ]]; then
    unit_side "$first"
    first_side=$!
    sides+=("$first_side")
    sanitizer_env "$first"
    echo "== $first build: integration tests"
    run_integration "$(variant_dir "$first")" "$(variant_tmp "$first")"
    count_integration "$(variant_dir "$first")"
    wait "$first_side"
    report_side "$first"
  fi
  for k in "${!others[@]}"; do
    o=${others[k]}
    wait "${sides[k]}"
    ((round == 1)) && cat "$side_dir/lane-$o.build" 2>/dev/null
    if [ ! -e "$side_dir/lane-$o.built" ]; then
      failed=$((failed + 1))
      continue
    fi
    ((round == 1)) && built+=("$o")
    echo "== $o build: integration tests"
    cat "$side_dir/lane-$o.out"
    count_integration "$(variant_dir "$o")"
    report_side "$o"
  done
  sides=()
  rm -rf "${CARIS_TEST_PORTS:?}"/* # nothing runs now: the reservations can go
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

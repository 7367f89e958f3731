#!/usr/bin/env bash
# Integration tests: the real binary on real files, in real processes.
#
# usage: tests/integration/run.sh [--bin PATH] [TEST...]
#
# Runs every tests/integration/test_*.sh (or the TESTs named, e.g. `roundtrip` or
# `test_roundtrip`), each in a fresh temporary directory (its cwd) with its own
# BACKUP_DIR and BACKUP_ENCRYPTION_KEY. The binary is --bin PATH, else $CARIS_BIN, else
# build/src/cli/caris-backup under the repository root.
#
# What is counted is assertions: each assert_* in lib.sh is one pass or one failure. A test
# that does not reach its end (crash of the script, timeout) adds one failure. Failures
# are printed with their context at the end; the last line is `N passed, N failed`, and
# the exit status is 1 when anything failed.
#
# Environment: CARIS_TEST_TIMEOUT (seconds per test, default 300), CARIS_TEST_TMPDIR
# (where the temporary directories go, default $TMPDIR or /tmp), CARIS_TEST_KEEP=1 (keep
# every temporary directory; by default only those of failed tests are kept).
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

bin=${CARIS_BIN:-$root/build/src/cli/caris-backup}
selected=()
while (($#)); do
    case $1 in
    --bin)
        [[ $# -ge 2 ]] || { echo "run.sh: --bin needs a path" >&2; exit 2; }
        bin=$2
        shift 2
        ;;
    --bin=*)
        bin=${1#--bin=}
        shift
        ;;
    -h | --help)
        awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
        exit 0
        ;;
    -*)
        echo "run.sh: unknown option $1" >&2
        exit 2
        ;;
    *)
        selected+=("$1")
        shift
        ;;
    esac
done

[[ $bin == /* ]] || bin=$PWD/$bin
if [[ ! -x $bin ]]; then
    echo "run.sh: binary $bin not found or not executable (build it: ninja -C build)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

tests=()
if ((${#selected[@]})); then
    for t in "${selected[@]}"; do
        t=$(basename "$t" .sh)
        t=test_${t#test_}
        [[ -f $here/$t.sh ]] || { echo "run.sh: no test $t" >&2; exit 2; }
        tests+=("$here/$t.sh")
    done
else
    tests=("$here"/test_*.sh)
fi

timeout_s=${CARIS_TEST_TIMEOUT:-300}
tmpbase=${CARIS_TEST_TMPDIR:-${TMPDIR:-/tmp}}
all_failures=$(mktemp "$tmpbase/caris-it-failures.XXXXXX")
trap 'rm -f "$all_failures"' EXIT

echo "binary: $bin"
passed=0 failed=0 skipped=0
suite_start=$SECONDS
for t in "${tests[@]}"; do
    name=$(basename "$t" .sh)
    dir=$(mktemp -d "$tmpbase/caris-it-$name.XXXXXX")
    chmod 755 "$dir" # tests run the binary as another user too
    mkdir "$dir/work"
    results=$dir/results failures=$dir/failures
    : >"$results"
    : >"$failures"
    key="it-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    start=$SECONDS
    (
        cd "$dir/work" || exit 1
        # a clean environment: nothing from the caller's configuration leaks in
        unset BACKUP_FILES_PATHS CARIS_NEW_ENCRYPTION_KEY
        export CARIS_BIN=$bin TEST_TMP=$dir TEST_RESULTS=$results TEST_FAILURES=$failures
        export BACKUP_DIR=$dir/backup BACKUP_ENCRYPTION_KEY=$key
        # for sanitizer builds: stack traces with UBSan reports (lib.sh fails on any report)
        export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
        exec timeout --kill-after=10 "$timeout_s" bash "$t"
    ) >"$dir/log" 2>&1
    rc=$?
    elapsed=$((SECONDS - start))

    p=$(grep -c '^PASS ' "$results")
    f=$(grep -c '^FAIL ' "$results")
    s=$(grep -c '^SKIP ' "$results")
    if ! grep -q '^DONE ' "$results"; then
        f=$((f + 1))
        why="did not finish (exit status $rc)"
        ((rc == 124 || rc == 137)) && why="timed out after ${timeout_s}s"
        {
            echo "--- $name: $why"
            echo "    last lines of its output:"
            tail -n 20 "$dir/log" | cut -c1-300 | sed 's/^/    | /'
        } >>"$failures"
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))

    status=ok
    ((f)) && status=FAIL
    printf '%-4s %-22s %3d passed, %d failed%s  (%ds)\n' "$status" "$name" "$p" "$f" \
        "$( ((s)) && echo ", $s skipped")" "$elapsed"
    grep '^SKIP ' "$results" | sed 's/^SKIP /     SKIP /'
    if ((f)); then
        cat "$failures" >>"$all_failures"
        echo "    (log and files kept in $dir)" >>"$all_failures"
    fi
    if ((f == 0)) && [[ ${CARIS_TEST_KEEP:-0} != 1 ]]; then
        rm -rf "$dir"
    fi
done

if [[ -s $all_failures ]]; then
    echo
    echo "Failures:"
    cat "$all_failures"
    echo
fi
echo "suite time: $((SECONDS - suite_start))s"
echo "$passed passed, $failed failed"
((failed == 0))

#!/usr/bin/env bash
# Integration tests: the real binary on real files, in real processes.
#
# usage: tests/integration/run.sh [--bin PATH] [-j N] [TEST...]
#
# Runs every tests/integration/test_*.sh (or the TESTs named, e.g. `roundtrip` or
# `test_roundtrip`), each in a fresh temporary directory (its cwd) with its own
# BACKUP_DIR and BACKUP_ENCRYPTION_KEY. The binary is --bin PATH, else $CARIS_BIN, else
# build/src/cli/caris-backup under the repository root.
#
# -j N (--jobs N; default $CARIS_TEST_JOBS, else the number of CPUs + 1) runs N tests at once.
# Tests are isolated (own directory, own servers on ports reserved for the run: lib.sh's
# free_port), so the order does not matter: the longest ones (tests/integration/durations.txt,
# seconds of an ASan run on a 2-CPU machine; unknown tests count as long) start first.
# Each test's output is kept in its directory and the results are printed in name order.
#
# What is counted is assertions: each assert_* in lib.sh is one pass or one failure. A test
# that does not reach its end (crash of the script, timeout) adds one failure. Failures
# are printed with their context at the end; the last line is `N passed, N failed`, and
# the exit status is 1 when anything failed.
#
# Environment: CARIS_TEST_TIMEOUT (seconds per test, default 900), CARIS_TEST_TMPDIR
# (where the temporary directories go, default $TMPDIR or /tmp), CARIS_TEST_KEEP=1 (keep
# every temporary directory; by default only those of failed tests are kept),
# CARIS_TEST_DISK_TMPDIR (a directory on a block file system, for test_direct_io, test_phys_parent
# and test_mount when their directory is on a tmpfs: test.sh runs the sanitizer builds' tests on one),
# CARIS_TEST_BG_ASAN_OPTIONS (AddressSanitizer options appended to ASAN_OPTIONS for what lib.sh's
# bg_start runs: scripts/test.sh gives those long-running processes a longer quarantine),
# CARIS_TEST_PORTS (a directory where ports are reserved, shared with other suites running
# at the same time; default a new one for this run), CARIS_TEST_SLOTS (a directory of -j N lock
# files shared with another run.sh started with the same -j: together the runs have N tests
# running at once, and one run's free slot goes to the other; scripts/test.sh runs the ASan
# build's tests beside the plain build's this way), CARIS_TEST_CPU=1 (as root: each test in
# a cgroup of its own, cpuacct, and its CPU seconds printed beside its wall seconds, the
# servers it started included: what to trim when the suite nears its time budget, for the
# CPUs are busy all through it; and each result's CPU milliseconds since its test began in the
# test's directory, .steps-cpu: with CARIS_TEST_KEEP=1, where a test spends its CPU).
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

bin=${CARIS_BIN:-$root/build/src/cli/caris-backup}
# default: one more than the CPUs (measured: eight of the longest tests took 145 s at -j 2 on
# 2 CPUs and 115 s at -j 4; they wait on servers, recoveries and polls much of the time)
jobs_n=${CARIS_TEST_JOBS:-$(($(nproc 2>/dev/null || echo 1) + 1))}
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
    -j | --jobs)
        [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: $1 needs a positive count" >&2; exit 2; }
        jobs_n=$2
        shift 2
        ;;
    -j[1-9]* | --jobs=*)
        jobs_n=${1#-j}
        jobs_n=${jobs_n#--jobs=}
        [[ $jobs_n =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: $1: not a positive count" >&2; exit 2; }
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

timeout_s=${CARIS_TEST_TIMEOUT:-900}
tmpbase=${CARIS_TEST_TMPDIR:-${TMPDIR:-/tmp}}
all_failures=$(mktemp "$tmpbase/caris-it-failures.XXXXXX")
# ports handed out to this run's tests (lib.sh free_port), one directory each; a directory
# given by the caller is shared with whatever else it runs meanwhile (scripts/test.sh runs
# the unit tests, whose test_s3 reserves its port there too) and is left to the caller
# (own_ports is read by the EXIT trap below)
# shellcheck disable=SC2034
own_ports=0
if [[ -z ${CARIS_TEST_PORTS:-} || ! -d ${CARIS_TEST_PORTS:-} ]]; then
    CARIS_TEST_PORTS=$(mktemp -d "$tmpbase/caris-it-ports.XXXXXX")
    # shellcheck disable=SC2034
    own_ports=1
fi
export CARIS_TEST_PORTS
# Debian's python3 for the tests and their helpers, not a version manager's shim that comes
# first in PATH: pyenv's shim runs a dozen bash processes per call (1.4 s a call on the 2-core
# test machine under load, against 0.15 s), and the suite calls python3 over a thousand times.
# The tests need only the standard library and the Debian packages install-deps.sh installs.
CARIS_TEST_BIN=$(mktemp -d "$tmpbase/caris-it-bin.XXXXXX")
if [[ -x /usr/bin/python3 ]]; then
    ln -s /usr/bin/python3 "$CARIS_TEST_BIN/python3"
    PATH=$CARIS_TEST_BIN:$PATH
    export PATH
fi
pids=()
stop_all() {
    local p
    for p in "${pids[@]}"; do
        [[ -n $p ]] && kill -TERM "$p" 2>/dev/null
    done
    wait
}
# One initdb per run: the database tests' servers copy this cluster (scripts/pg-test-server.sh,
# CARIS_PG_TEMPLATE), made by the first of them to start.
CARIS_PG_TEMPLATE=$(mktemp -d "$tmpbase/caris-it-pgtemplate.XXXXXX")
export CARIS_PG_TEMPLATE
# The traps act in this shell only ($BASHPID == $$): bash runs them in a child it has forked for
# a command (a test, `flock ... &`) when a signal reaches the child before it becomes the
# command, and would delete the cluster template under the tests still running (lib.sh at_exit).
trap '[[ $BASHPID == "$$" ]] || exit; rm -f "$all_failures"; rm -rf "$CARIS_TEST_BIN" "$CARIS_PG_TEMPLATE"; ((own_ports)) && rm -rf "$CARIS_TEST_PORTS"' EXIT
trap '[[ $BASHPID == "$$" ]] || exit 143; stop_all; exit 130' INT TERM

echo "binary: $bin"
# CARIS_TEST_CPU=1: the cgroup v1 cpuacct hierarchy, or the v2 one (cpu.stat)
cg_root=""
if [[ ${CARIS_TEST_CPU:-0} == 1 ]]; then
    for d in /sys/fs/cgroup/cpuacct /sys/fs/cgroup; do
        if [[ -w $d && ( -e $d/cpuacct.usage || -e $d/cgroup.procs ) ]]; then
            cg_root=$d
            break
        fi
    done
    [[ -n $cg_root ]] || echo "run.sh: CARIS_TEST_CPU=1: no writable cpuacct cgroup (not root?): CPU not shown" >&2
fi
# cg_cpu DIR: the CPU seconds used in cgroup DIR
# shellcheck source=tests/integration/cgcpu.sh
source "$here/cgcpu.sh"
cg_cpu() {
    cg_cpu_ns "$1"
    echo $((${CG_NS:-0} / 1000000000))
}
passed=0 failed=0 skipped=0
suite_start=$SECONDS

# CARIS_TEST_SLOTS: slot K is the lock (flock) on DIR/slot.K, held through one open file of
# this run (slot_fd[K]) while a test of this run uses it. A lock belongs to the open file, not
# to a process: a child of this run that locks the same file descriptor (a "grabber": flock
# FD, in the background, waiting for the slot) takes it for this run, and wait -n wakes when
# it has. The tests' processes do not inherit these files (run_one closes them).
slots=0 slot_fd=() slot_mine=() grabbers=()
if [[ -n ${CARIS_TEST_SLOTS:-} ]]; then
    [[ -d $CARIS_TEST_SLOTS ]] || { echo "run.sh: CARIS_TEST_SLOTS=$CARIS_TEST_SLOTS is not a directory" >&2; exit 2; }
    slots=1
    for ((k = 0; k < jobs_n; k++)); do
        exec {fd}>>"$CARIS_TEST_SLOTS/slot.$k"
        slot_fd[k]=$fd
    done
fi
# slot_take: a slot for a new test in $slot (one taken by a grabber first): fails when all are
# busy. slot_mine[K]: "free" (held, no test on it), "busy" (a test runs on it), empty: not held.
slot_take() {
    local k
    for k in "${!slot_fd[@]}"; do
        [[ ${slot_mine[k]:-} == free ]] && { slot=$k; slot_mine[k]=busy; return 0; }
    done
    for k in "${!slot_fd[@]}"; do
        [[ -z ${slot_mine[k]:-} ]] || continue
        if flock -n "${slot_fd[k]}"; then
            slot=$k
            slot_mine[k]=busy
            return 0
        fi
    done
    return 1
}
# grabbers_start: one grabber for each slot this run does not hold; grabbers_stop: they are
# stopped and reaped, and a slot one of them may have taken is kept (free) or given back.
grabbers_start() {
    local k
    for k in "${!slot_fd[@]}"; do
        [[ -z ${slot_mine[k]:-} ]] || continue
        flock "${slot_fd[k]}" </dev/null &
        grabbers[k]=$!
    done
}
grabbers_stop() {
    local k
    for k in "${!grabbers[@]}"; do kill "${grabbers[k]}" 2>/dev/null; done
    for k in "${!grabbers[@]}"; do
        wait "${grabbers[k]}" 2>/dev/null
        # taken just before it was stopped, or not: a lock this run already holds is taken
        # again at once, so holding it now means the grabber took it
        if flock -n "${slot_fd[k]}"; then
            if ((next_start < ntests)); then slot_mine[k]=free; else flock -u "${slot_fd[k]}"; fi
        fi
    done
    grabbers=()
}

# The order of starting: longest first (a long test started last would decide the wall time).
declare -A known=()
if [[ -f $here/durations.txt ]]; then
    while read -r name secs; do
        [[ $name == \#* || -z $name ]] || known[$name]=$secs
    done <"$here/durations.txt"
fi
order=()
while read -r _ i; do order+=("$i"); done < <(
    for i in "${!tests[@]}"; do
        name=$(basename "${tests[$i]}" .sh)
        echo "${known[$name]:-100000} $i"
    done | sort -k1,1nr -k2,2n
)

# run_one I: start test I in the background (the pid is its `timeout`).
dirs=() starts=() done_=() cgs=()
run_one() {
    local i=$1 t=${tests[$1]} name dir key
    name=$(basename "$t" .sh)
    dir=$(mktemp -d "$tmpbase/caris-it-$name.XXXXXX")
    chmod 755 "$dir" # tests run the binary as another user too
    mkdir "$dir/work"
    : >"$dir/results"
    : >"$dir/failures"
    key="it-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    dirs[i]=$dir
    starts[i]=$SECONDS
    if [[ -n $cg_root ]]; then
        cgs[i]=$cg_root/caris-it-$name-$$
        mkdir -p "${cgs[i]}" 2>/dev/null || cgs[i]=""
    fi
    (
        [[ -n ${cgs[i]:-} ]] && echo "$BASHPID" >"${cgs[i]}/cgroup.procs"
        for fd in "${slot_fd[@]}"; do exec {fd}>&-; done # the slots are this run's alone
        cd "$dir/work" || exit 1
        # a clean environment: nothing from the caller's configuration leaks in
        unset BACKUP_FILES_PATHS CARIS_NEW_ENCRYPTION_KEY
        export CARIS_BIN=$bin TEST_TMP=$dir TEST_RESULTS=$dir/results TEST_FAILURES=$dir/failures
        # (CARIS_TEST_CPU=1: lib.sh writes each result's CPU time to $dir/.steps-cpu)
        export CARIS_TEST_CG=${cgs[i]:-}
        export BACKUP_DIR=$dir/backup BACKUP_ENCRYPTION_KEY=$key
        # cheap key derivation for the repositories the tests make (init's defaults, 64 MiB and
        # 3 passes, cost 0.3 s of CPU at every open, a third of the suite's CPU; 8 MiB still
        # 25 ms of the 60 of a plain `list`; test_key_slots checks the defaults)
        export BACKUP_KDF_MEMORY=1 BACKUP_KDF_OPS=1
        # for sanitizer builds: stack traces with UBSan reports (lib.sh fails on any report)
        export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
        exec timeout --kill-after=10 "$timeout_s" bash "$t"
    ) >"$dir/log" 2>&1 </dev/null &
    pids[i]=$!
}

# report I RC: count and print test I's results (in name order, by the caller).
report() {
    local i=$1 rc=$2 name dir results failures elapsed p f s why
    name=$(basename "${tests[$i]}" .sh)
    dir=${dirs[$i]} results=${dirs[$i]}/results failures=${dirs[$i]}/failures
    elapsed=${elapsed_of[$i]}
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
    local cpu=""
    if [[ -n ${cgs[i]:-} ]]; then
        cpu=", CPU $(cg_cpu "${cgs[i]}")s"
        rmdir "${cgs[i]}" 2>/dev/null # (left when a process of the test outlived it)
    fi
    printf '%-4s %-22s %3d passed, %d failed%s  (%ds%s)\n' "$status" "$name" "$p" "$f" \
        "$( ((s)) && echo ", $s skipped")" "$elapsed" "$cpu"
    grep '^SKIP ' "$results" | sed 's/^SKIP /     SKIP /'
    # the longest wait for a result (lib.sh _step), when a minute or more: where a test stalled,
    # even when it passed (its directory is gone then)
    [[ -s $dir/.steps ]] && awk -v n="$name" '{ d = $1 - t; t = $1; $1 = ""
        if (d > g) { g = d; m = $0 } } END { if (g >= 60) printf "     SLOW %s: %d s without a result before:%s\n", n, g, m }' "$dir/.steps"
    if ((f)); then
        cat "$failures" >>"$all_failures"
        echo "    (log and files kept in $dir)" >>"$all_failures"
    fi
    if ((f == 0)) && [[ ${CARIS_TEST_KEEP:-0} != 1 ]]; then
        rm -rf "$dir"
    fi
}

declare -A idx_of_pid=()
rcs=() elapsed_of=() slot_of=()
next_start=0 next_print=0 running=0 ntests=${#tests[@]}
while ((next_print < ntests)); do
    while ((running < jobs_n && next_start < ntests)); do
        slot=""
        ((slots)) && { slot_take || break; }
        i=${order[next_start]}
        slot_of[i]=$slot
        run_one "$i"
        idx_of_pid[${pids[i]}]=$i
        next_start=$((next_start + 1))
        running=$((running + 1))
    done
    # tests wait for a slot the other run holds: a grabber for each wakes the wait below
    ((slots && next_start < ntests && running < jobs_n)) && grabbers_start
    finished=""
    wait -n -p finished
    rc=$?
    if [[ -z $finished ]] && ((rc == 127)); then
        # no child left while tests are counted as running: a bookkeeping bug, which would loop
        # here for ever (CI's limit would end it, with nothing said)
        left=""
        for i in "${!pids[@]}"; do [[ -n ${pids[i]} ]] && left+=" ${tests[i]##*/}"; done
        echo "run.sh: $running test(s) counted as running, but no child is left to wait for:${left:- (none known)}" >&2
        exit 2
    fi
    # (a grabber's pid may be one an earlier test had: pids wrap at 32768 within a suite, and a
    # grabber taken for that test once made the run release a slot it did not hold, until both
    # runs waited for slots that no test held)
    grabber=0
    for g in "${grabbers[@]}"; do [[ $g == "$finished" ]] && grabber=1; done
    ((${#grabbers[@]})) && grabbers_stop
    ((grabber == 0)) && [[ -n $finished && -n ${idx_of_pid[$finished]:-} ]] || continue
    i=${idx_of_pid[$finished]}
    unset "idx_of_pid[$finished]" # (its pid may be another process's later)
    if [[ -n ${slot_of[i]} ]]; then
        flock -u "${slot_fd[slot_of[i]]}"
        slot_mine[slot_of[i]]=""
    fi
    rcs[i]=$rc
    elapsed_of[i]=$((SECONDS - starts[i]))
    done_[i]=1
    pids[i]=""
    running=$((running - 1))
    while ((next_print < ntests)) && [[ -n ${done_[next_print]:-} ]]; do
        report "$next_print" "${rcs[next_print]}"
        next_print=$((next_print + 1))
    done
done

if [[ -s $all_failures ]]; then
    echo
    echo "Failures:"
    cat "$all_failures"
    echo
fi
echo "suite time: $((SECONDS - suite_start))s (-j $jobs_n)"
echo "$passed passed, $failed failed"
((failed == 0))

# shellcheck shell=bash disable=SC2034,SC2153
# (SC2034: OUT, ERR, BACKUP_ID... are set here for the tests to read; SC2153: BACKUP_DIR
# comes from run.sh.)
# Helpers for the integration tests. Each test_*.sh sources this file; run.sh runs each
# test in a fresh temporary directory and exports:
#   CARIS_BIN              the binary under test (absolute path)
#   TEST_TMP               the test's private directory (the cwd when the test starts)
#   TEST_RESULTS           file receiving one line per assertion ("PASS ..." / "FAIL ...")
#   TEST_FAILURES          file receiving the context of every failed assertion
#   BACKUP_DIR             $TEST_TMP/backup
#   BACKUP_ENCRYPTION_KEY  a fresh random key (>= 32 characters)
#
# The unit counted by run.sh is the assertion: every assert_* records one PASS or FAIL.
# Assertions never abort the test; a test that dies early (crash, timeout) is reported
# by run.sh as one extra failure because its DONE marker (see test_done) is missing.
#
# Nothing here waits with a bare `sleep`: wait_until polls a condition with a deadline.

set -u
set -o pipefail

: "${CARIS_BIN:?run the tests through tests/integration/run.sh}"
: "${TEST_TMP:?run the tests through tests/integration/run.sh}"
: "${TEST_RESULTS:?}" "${TEST_FAILURES:?}"
# The daemon serves its HTTP API on 127.0.0.1:8787 unless told otherwise: off in tests (a
# fixed port would clash between tests); test_api.sh turns it on, on a free port.
export BACKUP_API_LISTEN=none
# A file changed less than 2 s before the previous backup started is read again, not taken as
# unchanged (its timestamps may not show a change made right after that backup read it). The
# tests make their files just before their backups: they take files as "old" unless they say
# otherwise (test_incremental checks the rule itself with the real window).
export CARIS_TEST_RACY_WINDOW_S=-86400

LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/integration/cgcpu.sh
source "$LIB_DIR/cgcpu.sh"
TEST_NAME=$(basename "$0" .sh)

# Output of the last `run`: $OUT (stdout), $ERR (stderr), $RC (exit status), and the same
# in files $OUT_FILE / $ERR_FILE (for python/jq, which must see the exact bytes).
OUT="" ERR="" RC=0
OUT_FILE=$TEST_TMP/.last.out
ERR_FILE=$TEST_TMP/.last.err
LAST_CMD=""

# --- bookkeeping -----------------------------------------------------------------------

_BG_PIDS=()

_lib_on_exit() {
    local pid
    for pid in "${_BG_PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null
    done
    _sanitizer_scan
    _jsrv_stop
}

# test_done: the last line of every test. run.sh counts a test without it (one that died
# of an unbound variable, a syntax error, a timeout) as a failure.
test_done() {
    echo "DONE $TEST_NAME" >>"$TEST_RESULTS"
    exit 0
}
# at_exit 'COMMANDS': the test's EXIT trap runs COMMANDS, in the test's own shell only. Bash
# runs the traps a script has set in a child it has forked for a command (`cmd &`, `( ... ) &`)
# when a signal reaches that child before the child has reset them, in the moment before it
# becomes the command: a test that kills a background command it has just started would run
# its cleanup in that child while the test goes on (kill its daemons, stop its PostgreSQL,
# delete its files). Every EXIT trap of a test is set by at_exit, never by `trap ... EXIT`
# (test_lib_exit checks both).
at_exit() {
    # shellcheck disable=SC2064 # $$ now, BASHPID when the trap runs: a child's differs
    trap "[[ \$BASHPID == $$ ]] || exit; $1" EXIT
}
at_exit _lib_on_exit
# Turn signals into an exit, so that the EXIT trap stops our background processes.
trap 'exit 143' TERM INT

# Under an ASan/UBSan build a report on stderr is a failure even when the exit status
# happened to be the expected one (UBSan reports and goes on). One assertion per test.
_sanitizer_scan() {
    local files=("$ALL_OUTPUT") f
    for f in "$TEST_TMP"/.bg*.err; do [[ -e $f ]] && files+=("$f"); done
    local hits
    hits=$(grep -h -E 'runtime error:|ERROR: (Address|Leak|Undefined)Sanitizer|SUMMARY: [A-Za-z]+Sanitizer' \
        "${files[@]}" 2>/dev/null | head -n 10)
    if [[ -n $hits ]]; then
        fail "sanitizer report in the output of the binary" "$hits"
    else
        pass "no sanitizer report"
    fi
}

# A short, printable rendering of a command line: _cmdline_set puts it in $_CMDLINE without a
# subshell (run and assert_exit use it for every command: forks are slow on the test machine),
# _cmdline prints it.
_cmdline_set() {
    local a q
    _CMDLINE=""
    for a in "$@"; do
        printf -v q '%q' "$a"
        _CMDLINE+="$q "
    done
    _CMDLINE=${_CMDLINE% }
}
_cmdline() {
    _cmdline_set "$@"
    printf '%s' "$_CMDLINE"
}

# _slurp VAR FILE: VAR=$(cat FILE) without a fork (NUL bytes dropped and trailing newlines
# removed, as a command substitution does)
_slurp() {
    local -a _parts
    mapfile -d '' -t _parts <"$2"
    local _s
    printf -v _s '%s' "${_parts[@]}"
    printf -v "$1" '%s' "${_s%"${_s##*[!$'\n']}"}"
}

_tail() { # FILE [LINES]: last lines of a file, indented, for failure context
    [[ -s $1 ]] || { echo "    (empty)"; return; }
    tail -n "${2:-15}" "$1" | cut -c1-300 | sed 's/^/    | /'
}

# Each result's second since the test began, in TEST_TMP/.steps: run.sh names the longest
# wait between two results when it is a minute or more (a stall a passing test hides).
# With CARIS_TEST_CPU=1 (run.sh: the test's cgroup in CARIS_TEST_CG), each result's CPU
# milliseconds since the test began (its servers included) in TEST_TMP/.steps-cpu.
_step() {
    echo "$SECONDS $1" >>"$TEST_TMP/.steps"
    [[ -n ${CARIS_TEST_CG:-} ]] || return 0
    cg_cpu_ns "$CARIS_TEST_CG"
    [[ -n $CG_NS ]] && echo "$((CG_NS / 1000000)) $1" >>"$TEST_TMP/.steps-cpu"
    return 0
}

pass() {
    echo "PASS $TEST_NAME: $1" >>"$TEST_RESULTS"
    _step "$1"
    echo "ok    $1"
}

# fail MESSAGE [CONTEXT...]: record a failure; CONTEXT lines are printed below it.
fail() {
    local msg=$1
    shift
    local caller="${BASH_SOURCE[2]:-${BASH_SOURCE[1]}}:${BASH_LINENO[1]:-${BASH_LINENO[0]}}"
    echo "FAIL $TEST_NAME: $msg" >>"$TEST_RESULTS"
    _step "$msg"
    {
        echo "--- $TEST_NAME: $msg"
        echo "    at $(basename "$caller")"
        local line
        for line in "$@"; do printf '%s\n' "$line" | sed 's/^/    /'; done
    } >>"$TEST_FAILURES"
    echo "FAIL  $msg"
}

# Context of the last `run`, for failure messages.
_last_ctx() {
    printf 'command: %s\nexit status: %s\nstdout:\n%s\nstderr:\n%s' "$LAST_CMD" "$RC" \
        "$(_tail "$OUT_FILE")" "$(_tail "$ERR_FILE")"
}

skip() {
    echo "SKIP $TEST_NAME: $1" >>"$TEST_RESULTS"
    _step "$1"
    echo "SKIP  $1"
}

note() { echo "      $*"; }

# --- running commands ------------------------------------------------------------------

# Everything any `run` printed, for tests that check what never appears in output.
ALL_OUTPUT=$TEST_TMP/.all-output

_run_done() {
    _slurp OUT "$OUT_FILE"
    _slurp ERR "$ERR_FILE"
    # (from the variables, not by a cat: a process less per command, and the suite's CPUs are
    # its limit; NUL bytes are left out, which finds a text more often, never less)
    printf '%s\n%s\n' "$OUT" "$ERR" >>"$ALL_OUTPUT"
    return 0
}

# run CMD...: run with stdin from /dev/null; sets OUT, ERR, RC.
run() {
    _cmdline_set "$@"
    LAST_CMD=$_CMDLINE
    "$@" >"$OUT_FILE" 2>"$ERR_FILE" </dev/null
    RC=$?
    _run_done
}

# run_stdin TEXT CMD...: like run, with TEXT (plus a newline) on stdin.
run_stdin() {
    local text=$1
    shift
    _cmdline_set "$@"
    LAST_CMD="$_CMDLINE <<< (stdin)"
    "$@" >"$OUT_FILE" 2>"$ERR_FILE" <<<"$text"
    RC=$?
    _run_done
}

# cb ARGS...: the binary under test.
cb() { "$CARIS_BIN" "$@"; }

# --- assertions (each records exactly one PASS or FAIL) --------------------------------

# assert_exit CODE CMD...: run CMD (through `run`) and check its exit status.
assert_exit() {
    local want=$1
    shift
    run "$@"
    if [[ $RC == "$want" ]]; then
        pass "exit $want: ${LAST_CMD:0:160}"
        return 0
    fi
    fail "expected exit $want, got $RC: ${LAST_CMD:0:160}" "$(_last_ctx)"
    return 1
}

# assert_rc CODE MESSAGE: check the status of the last `run` without running anything.
assert_rc() {
    if [[ $RC == "$1" ]]; then
        pass "$2 (exit $1)"
        return 0
    fi
    fail "$2: expected exit $1, got $RC" "$(_last_ctx)"
    return 1
}

assert_eq() { # EXPECTED ACTUAL MESSAGE
    if [[ $1 == "$2" ]]; then
        pass "$3"
        return 0
    fi
    fail "$3" "expected: $(printf '%q' "$1")" "actual:   $(printf '%q' "$2")"
    return 1
}

assert_ne() { # UNEXPECTED ACTUAL MESSAGE
    if [[ $1 != "$2" ]]; then
        pass "$3"
        return 0
    fi
    fail "$3" "both are: $(printf '%q' "$1")"
    return 1
}

assert_contains() { # HAYSTACK NEEDLE MESSAGE
    if [[ $1 == *"$2"* ]]; then
        pass "$3"
        return 0
    fi
    fail "$3" "expected to contain: $(printf '%q' "$2")" "in:" "$(printf '%s' "$1" | tail -n 20 | cut -c1-300 | sed 's/^/  | /')"
    return 1
}

assert_not_contains() { # HAYSTACK NEEDLE MESSAGE
    if [[ $1 != *"$2"* ]]; then
        pass "$3"
        return 0
    fi
    fail "$3" "expected NOT to contain: $(printf '%q' "$2")" "in:" "$(printf '%s' "$1" | grep -F -- "$2" | head -n 5 | cut -c1-300 | sed 's/^/  | /')"
    return 1
}

assert_match() { # REGEX STRING MESSAGE (bash ERE)
    if [[ $2 =~ $1 ]]; then
        pass "$3"
        return 0
    fi
    fail "$3" "expected to match: $1" "actual: $(printf '%q' "$2")"
    return 1
}

# assert_true MESSAGE CMD...: CMD must exit 0 (its output is shown on failure). Unlike
# assert_exit it leaves OUT, ERR and RC of the last `run` alone, so it can check a side
# effect between a `run` and the assertions on its status.
assert_true() {
    local msg=$1
    shift
    if _check "$@"; then
        pass "$msg"
        return 0
    fi
    fail "$msg" "$(_check_ctx "$@")"
    return 1
}

assert_false() { # MESSAGE CMD...: CMD must exit non-zero (same rules as assert_true)
    local msg=$1
    shift
    if ! _check "$@"; then
        pass "$msg"
        return 0
    fi
    fail "$msg" "$(_check_ctx "$@")"
    return 1
}

_check() {
    "$@" >"$TEST_TMP/.check.out" 2>"$TEST_TMP/.check.err" </dev/null
    _CHECK_RC=$?
    [[ -s $TEST_TMP/.check.err ]] && cat "$TEST_TMP/.check.err" >>"$ALL_OUTPUT"
    return $_CHECK_RC
}

_check_ctx() {
    printf 'command: %s\nexit status: %s\nstdout:\n%s\nstderr:\n%s' "$(_cmdline "$@")" "$_CHECK_RC" \
        "$(_tail "$TEST_TMP/.check.out")" "$(_tail "$TEST_TMP/.check.err")"
}

# assert_fails MESSAGE: the last `run` exited non-zero.
assert_fails() {
    if [[ $RC != 0 ]]; then
        pass "$1 (exit $RC)"
        return 0
    fi
    fail "$1: expected a non-zero exit, got 0" "$(_last_ctx)"
    return 1
}

# start_daemon [PREFIX...]: a daemon that reads $TEST_TMP/env, run through PREFIX when given
# (e.g. `env -u BACKUP_ENCRYPTION_KEY`), waited for until its socket is there and its log says
# it started; sets DAEMON and DAEMON_ERR. stop_daemon: SIGTERM, and it must exit 0. (A test
# that starts its daemon otherwise defines its own.)
start_daemon() {
    bg_start "$@" "$CARIS_BIN" --env-file "$TEST_TMP/env" daemon
    DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
    # shellcheck disable=SC2317
    _daemon_up() { [[ -S $BACKUP_DIR/metadata/daemon.sock ]] && grep -q 'started' "$DAEMON_ERR"; }
    wait_until 60 _daemon_up || fail "the daemon did not start" "$(_tail "$DAEMON_ERR")"
}
stop_daemon() {
    kill -TERM "$DAEMON"
    wait "$DAEMON"
    assert_eq 0 "$?" "the daemon stops on SIGTERM"
}

# assert_cmp A OP B MESSAGE: integer comparison (OP: -lt -le -gt -ge -eq -ne).
assert_cmp() {
    if [[ $1 =~ ^-?[0-9]+$ && $3 =~ ^-?[0-9]+$ ]] && test "$1" "$2" "$3"; then
        pass "$4 ($1 $2 $3)"
        return 0
    fi
    fail "$4" "expected: $(printf '%q' "$1") $2 $(printf '%q' "$3")"
    return 1
}

# --- the JSON helpers' server ----------------------------------------------------------
# json_get, json_eval, assert_json, free_port and flip_byte ask jsonsrv.py, one python
# process per test, started here in the background (not a child of the test's shell: a
# `wait` does not wait for it; it exits with the test). A python start per call cost
# 40-90 ms of CPU, a quarter of the CPU of some tests. Until the server is ready, or if it
# is gone, a helper runs `jsonsrv.py --once`: the same code in a python of its own.
_JSRV_DIR=$TEST_TMP/.jsonsrv
_JSRV_PID=""
if mkdir -m 700 "$_JSRV_DIR" 2>/dev/null; then
    (exec python3 -S "$LIB_DIR/jsonsrv.py" "$_JSRV_DIR" "$$" </dev/null >/dev/null 2>"$_JSRV_DIR/log" &)
fi

# _jsrv_pid: _JSRV_PID set from the server's ready file (fails while it is not ready).
_jsrv_pid() {
    [[ -n $_JSRV_PID ]] || { [[ -s $_JSRV_DIR/ready ]] && read -r _JSRV_PID <"$_JSRV_DIR/ready"; }
}

_jsrv_stop() {
    _jsrv_pid && kill "$_JSRV_PID" 2>/dev/null
    return 0
}

# _jsrv_request K MODE ARGS...: the fields of a request (jsonsrv.py); for MODE py, then every
# exported variable as NAME=VALUE (their names listed by bash's compgen into e.K: no process)
_jsrv_request() {
    printf '%s\0' "$@"
    [[ $2 == py ]] || return 0
    local names=() n
    compgen -e >|"$_JSRV_DIR/e.$1" && mapfile -t names <"$_JSRV_DIR/e.$1"
    for n in "${names[@]}"; do printf '%s=%s\0' "$n" "${!n}"; done
}

# _jsrv MODE FILE ARG: the server's answer (stdout, stderr, status as jsonsrv.py says);
# status 255 without output: the server cannot take the request, run jsonsrv.py --once.
# _jsrv py PID CWD FDS N ARGS...: a python program run by a fork of the server (python3 below),
# which writes to this shell's own output; its status, or 255 with _JSRV_CANT=1 when the
# server cannot run it.
_JSRV_CANT=0
_jsrv() {
    _JSRV_CANT=1
    _jsrv_pid && [[ -p $_JSRV_DIR/req ]] && kill -0 "$_JSRV_PID" 2>/dev/null || return 255
    local - f=$2 k fd st="" part="" out="" err=""
    # a regular file by its absolute path: not a /dev/fd/N of ours (process substitution),
    # which the server cannot open, nor a missing file (--once says what it says)
    if [[ $1 != port && $1 != py ]]; then
        [[ -f $f ]] || return 255
        [[ $f == /* ]] || f=$PWD/$f
    fi
    # claim an answer FIFO: create c.K exclusively (noclobber; `local -` restores it), with
    # the request in it
    set -C
    for ((k = 0; k < 64; k++)); do
        { _jsrv_request "$k" "$1" "$f" "${@:3}" >"$_JSRV_DIR/c.$k"; } 2>/dev/null && break
    done
    set +C
    ((k < 64)) || return 255
    # a.K opened before the request (read and write: no wait for the other end); req opened
    # read and write too (never blocks, even with the server gone); the answer is delimited
    exec {fd}<>"$_JSRV_DIR/a.$k"
    printf '%s\0' "$k" 1<>"$_JSRV_DIR/req"
    # the status line, waiting as long as the server lives (a big document takes a while)
    until IFS= read -r -t 1 -u "$fd" part; do
        st+=$part
        part=""
        kill -0 "$_JSRV_PID" 2>/dev/null || break
    done
    st+=$part
    if [[ $st =~ ^([0-9]+|F)$ ]]; then # the rest follows in the same write
        IFS= read -r -d '' -t 60 -u "$fd" out && IFS= read -r -d '' -t 60 -u "$fd" err || st=""
    fi
    exec {fd}<&-
    printf '%s release\0' "$k" 1<>"$_JSRV_DIR/req"
    [[ $st =~ ^([0-9]+|F)$ ]] || {
        # the request was sent and not answered (the server died with it): no second try
        # with --once, flip_byte would flip the byte back (nor a python program run twice)
        _JSRV_CANT=0
        echo "jsonsrv: no answer to $1 $f" >&2
        return 1
    }
    [[ $st == F ]] && return 255
    # (a python program's own status 255 is its status)
    ((st == 255)) && [[ $1 != py ]] && return 255
    _JSRV_CANT=0
    printf '%s' "$out"
    [[ -z $err ]] || printf '%s' "$err" >&2
    return "$st"
}

# python3 ARGS...: `python3 -c CODE ...`, `python3 - ...` (the program on stdin) and
# `python3 SCRIPT ...` run by a fork of the test's jsonsrv.py (its MODE py), with this shell's
# standard input, output and error, working directory, umask and exported variables, and its
# exit status: by process accounting over the suite, a python started costs 85 ms of CPU and a
# fork 42, and the tests run several hundred python programs a run. Other options, a server not (yet) running or a fork that cannot take
# this shell's files: /usr/bin/python3 itself. Only in the foreground: what runs in the
# background (bg_start, `... &`), and is waited for or killed by its pid, is `command python3`
# or exec'd (bg_start execs: functions are not exec'd). Standard library only; an argument
# naming a file descriptor of this shell (/dev/fd/N, as <(...) gives) goes to python3 itself.
# Differences no test relies on: no site (no exit() or quit()), the server's resource limits
# and hash seed, no exported bash functions in the environment, and an exported variable named
# like a local of these helpers (a, f, k, n, ...) is sent with the local's value.
python3() {
    case ${1-} in
    -c) (($# >= 2)) || { command python3 "$@"; return; } ;;
    -) ;;
    -* | "") { command python3 "$@"; return; } ;;
    *) [[ -f $1 && -r $1 ]] || { command python3 "$@"; return; } ;; # python3's own message
    esac
    local a
    for a in "$@"; do # a file descriptor of this shell's own (<(...)): the fork has only 0-2
        [[ $a == /dev/fd/* || $a == /proc/self/fd/* ]] && { command python3 "$@"; return; }
    done
    # copies of this shell's standard files for the server to take: its own 0-2 change for a
    # moment while _jsrv writes to req (a redirection of a builtin), and the server may be
    # taking them then
    local s0 s1 s2 st
    [[ -e /dev/fd/0 && -e /dev/fd/1 && -e /dev/fd/2 ]] || { command python3 "$@"; return; }
    exec {s0}<&0 {s1}>&1 {s2}>&2
    # (a status that is not 0 must not end a caller under set -e before the fallback)
    if _jsrv py "$BASHPID" "$PWD" "$s0 $s1 $s2" "$#" "$@"; then st=0; else st=$?; fi
    exec {s0}<&- {s1}>&- {s2}>&-
    ((_JSRV_CANT)) && { command python3 "$@"; return; }
    return $st
}

# _json MODE FILE ARG: jsonsrv.py's answer, from the server, else from a python of its own
# (the same code: jsonsrv.py --once).
_json() {
    _jsrv "$@"
    local st=$?
    ((st == 255)) || return $st
    command python3 -S "$LIB_DIR/jsonsrv.py" --once "$@"
}

# assert_json FILE MESSAGE: FILE holds one valid JSON document.
# assert_json FILE EXPR MESSAGE: and the python expression EXPR (the document is d, as in
# json_eval) is true. (The three-argument form was once taken as the first: the expression
# became the message, and 11 assertions checked nothing but that the document was JSON.)
assert_json() {
    if (($# >= 3)); then
        local got
        got=$(json_eval "$1" "$2" 2>"$TEST_TMP/.json.err")
        if [[ $got == true ]]; then
            pass "$3"
            return 0
        fi
        fail "$3" "expected true: $2" "got: $got $(cat "$TEST_TMP/.json.err")" "document:" "$(_tail "$1")"
        return 1
    fi
    if _json valid "$1" "" >/dev/null 2>"$TEST_TMP/.json.err"; then
        pass "$2"
        return 0
    fi
    fail "$2" "$(cat "$TEST_TMP/.json.err")" "document:" "$(_tail "$1")"
    return 1
}

# --- JSON ------------------------------------------------------------------------------

# json_get FILE PATH: print the value at PATH, a python subscript chain such as
# '["stats"]["files"]' or '[0]["id"]' (strings bare, others as JSON); prints nothing and
# fails when the file is not JSON or the path is absent.
json_get() { _json get "$1" "$2"; }

# json_eval FILE EXPR: print the value of a python expression over `d` (the document).
json_eval() { _json eval "$1" "$2"; }

# --- test data -------------------------------------------------------------------------

# seeded_bytes SIZE LABEL: SIZE bytes (as head -c takes it: 300000, 3M) that look random and
# do not compress, and are the same in every run: the AES-256-CTR keystream under a key
# derived from LABEL. Different labels give different bytes. Tests use it instead of
# /dev/urandom, so that a failing run can be replayed with the same files.
seeded_bytes() {
    local key
    key=$(printf 'caris-test-data:%s' "$2" | sha256sum | cut -c1-64)
    head -c "$1" /dev/zero |
        openssl enc -aes-256-ctr -nosalt -K "$key" -iv 00000000000000000000000000000000
}

# --- ports -----------------------------------------------------------------------------

# free_port: a free loopback port for a server this test starts, outside the kernel's range
# for outgoing connections (jsonsrv.py free_port: a port in it may go to any client's
# connection before the server binds it). Tests run in parallel (run.sh -j): a port is also
# reserved in run.sh's CARIS_TEST_PORTS directory (mkdir is atomic), so no two tests of one
# run are ever given the same port, even when one test closes its probe socket before its
# server binds the port.
free_port() {
    local p k
    for ((k = 0; k < 100; k++)); do
        p=$(_json port "" "")
        [[ $p =~ ^[0-9]+$ ]] || return 1
        if [[ -z ${CARIS_TEST_PORTS:-} ]] || mkdir "$CARIS_TEST_PORTS/$p" 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# --- waiting ---------------------------------------------------------------------------

# wait_until SECONDS CMD...: poll CMD until it succeeds; fails at the deadline. Polling, not
# sleeping: returns soon after the condition holds. The pause between polls starts at 20 ms
# and grows by half at each one up to 200 ms (POLL_MAX_MS, at least 20: a condition that holds
# for a moment only, as a process past a point of its work before its end, is polled at 20 ms
# with POLL_MAX_MS=20): a short wait still ends within tens of ms, and a long one does not run
# its CMD 50 times a second (a CMD that runs the ASan binary costs 50-100 ms of CPU, and the
# suite is CPU-bound).
wait_until() {
    local secs=$1
    shift
    local deadline=$((SECONDS + secs)) pause=20 max=${POLL_MAX_MS:-200}
    ((max >= 20 && max < 1000)) || max=200
    while ! "$@"; do
        ((SECONDS < deadline)) || return 1
        _poll_interval "$pause"
        pause=$((pause * 3 / 2 > max ? max : pause * 3 / 2))
    done
    return 0
}

# The pause between two polls (MS milliseconds, under 1000; default 20): a read that times out
# on a pipe nobody writes to, so the poll loop neither spins a CPU the binary under test needs
# nor forks a process per turn.
_POLL_FD=""
_poll_interval() {
    [[ -n $_POLL_FD ]] || exec {_POLL_FD}<> <(:)
    local t
    printf -v t '0.%03d' "${1:-20}"
    read -r -t "$t" -u "$_POLL_FD" _ || true
}

# hold_start FILE...: packhold.py takes a lease on every FILE (HOLD_PID, its output in
# HOLD_OUT): a process that then opens one waits until hold_release (caris-backup retries its
# non-blocking open; the kernel breaks a lease by itself lease-break-time, 45 s, after an open
# asked for it). "opened" in HOLD_OUT: a reader reached one.
HOLD_OUT="" HOLD_FD="" HOLD_PID=""
_HOLD_N=0
hold_start() {
    _HOLD_N=$((_HOLD_N + 1))
    local fifo=$TEST_TMP/.hold$_HOLD_N.fifo
    mkfifo "$fifo"
    exec {HOLD_FD}<>"$fifo"
    HOLD_OUT=$fifo.out
    command python3 "$LIB_DIR/packhold.py" "$@" <"$fifo" >"$HOLD_OUT" 2>&1 &
    HOLD_PID=$!
    _BG_PIDS+=("$HOLD_PID")
    wait_until 30 grep -q '^held' "$HOLD_OUT" || fail "packhold did not take its leases" "$(_tail "$HOLD_OUT")"
}
hold_release() {
    echo release >&"$HOLD_FD"
    wait "$HOLD_PID"
    exec {HOLD_FD}>&-
}

# bg_start CMD...: start CMD in the background (stdout/stderr to $BG_OUT/$BG_ERR, fresh
# per call) and set BG_PID; the process is killed if the test exits before it ends.
BG_PID="" BG_OUT="" BG_ERR=""
_BG_N=0
bg_start() {
    _BG_N=$((_BG_N + 1))
    BG_OUT=$TEST_TMP/.bg$_BG_N.out
    BG_ERR=$TEST_TMP/.bg$_BG_N.err
    # BG_PID must be the process itself, not a subshell around it (kill -9 of a subshell
    # leaves its child running): exec the command, with `cb` spelled out.
    [[ $1 == cb ]] && set -- "$CARIS_BIN" "${@:2}"
    (
        # a sanitizer run's background processes (daemons, jobs held at a hook) run long:
        # their own AddressSanitizer options (scripts/test.sh: a longer quarantine)
        [[ -n ${ASAN_OPTIONS:-} && -n ${CARIS_TEST_BG_ASAN_OPTIONS:-} ]] &&
            export ASAN_OPTIONS=$ASAN_OPTIONS:$CARIS_TEST_BG_ASAN_OPTIONS
        exec "$@" >"$BG_OUT" 2>"$BG_ERR" </dev/null
    ) &
    BG_PID=$!
    _BG_PIDS+=("$BG_PID")
}

# hook_hold_start VAR WHAT CMD...: CMD in the background (bg_start), held at its test hold
# point VAR (test_hold_point in src/core/core.c: it makes FILE.held, then waits while FILE,
# which VAR names, exists); returns once it is held, a pass or a failure saying WHAT the hold
# is. HOOK_HOLD is FILE: `rm -f "$HOOK_HOLD"` releases it.
HOOK_HOLD=""
hook_hold_start() {
    local var=$1 what=$2
    shift 2
    HOOK_HOLD=$TEST_TMP/.hook-hold$((_BG_N + 1))
    touch "$HOOK_HOLD"
    bg_start env "$var=$HOOK_HOLD" "$@"
    # shellcheck disable=SC2317 # called through wait_until
    _hook_held() { [[ -e $HOOK_HOLD.held ]]; }
    if wait_until 60 _hook_held; then
        pass "$what"
    else
        fail "not reached: $what" "$(_tail "$BG_ERR")"
    fi
}

# as_nobody_ok WHAT: whether the test can run commands as uid 65534 (it runs as root, and
# setpriv switches); if not, notes WHAT as not checked, and why.
as_nobody_ok() {
    if ((EUID != 0)); then
        note "$1: not checked (needs root, to run as nobody)"
        return 1
    fi
    if ! command -v setpriv >/dev/null || ! setpriv --reuid=65534 --regid=65534 --clear-groups true 2>/dev/null; then
        note "$1: not checked (setpriv cannot switch to uid 65534 here)"
        return 1
    fi
}

# smtp_start: a real SMTP server (notify_servers.py) on loopback, its messages in
# $TEST_TMP/smtp/msg-N.eml; exports BACKUP_SMTP_URL and a sender and a recipient.
smtp_start() {
    mkdir -p "$TEST_TMP/smtp"
    bg_start /usr/bin/python3 "$LIB_DIR/notify_servers.py" smtp "$TEST_TMP/smtp"
    # shellcheck disable=SC2317
    _smtp_up() { [[ -s $TEST_TMP/smtp/port ]]; }
    wait_until 30 _smtp_up || fail "the SMTP server did not start" "$(_tail "$BG_ERR")"
    BACKUP_SMTP_URL="smtp://127.0.0.1:$(cat "$TEST_TMP/smtp/port")"
    export BACKUP_SMTP_URL BACKUP_EMAIL_FROM=caris@example.org BACKUP_EMAIL_RECIPIENTS=ops@example.org
}
# mail_texts [WORDS]: the subject (decoded) and body of each message smtp_start's server
# received, in order; with WORDS, only those whose subject contains them.
mail_texts() {
    python3 -c 'import email, email.header, glob, re, sys
for f in sorted(glob.glob(sys.argv[1] + "/msg-*.eml"), key=lambda f: int(re.sub(r"\D", "", f.rsplit("/", 1)[1]))):
    m = email.message_from_binary_file(open(f, "rb"))
    subject = str(email.header.make_header(email.header.decode_header(m["Subject"])))
    if sys.argv[2] in subject:
        print(subject)
        print(m.get_payload(decode=True).decode())' "$TEST_TMP/smtp" "${1:-}"
}

# api_daemon_start [CB ARGS...]: `cb [CB ARGS...] daemon` in the background, its HTTP API on the
# address BACKUP_API_LISTEN gives (export BACKUP_API_LISTEN=127.0.0.1:0 for a free port);
# waits until it listens, then sets DAEMON, DAEMON_ERR and BASE (http://127.0.0.1:PORT).
api_daemon_start() {
    bg_start cb "$@" daemon
    DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
    # shellcheck disable=SC2317
    _api_listening() { grep -q 'HTTP API listening on' "$DAEMON_ERR"; }
    wait_until 60 _api_listening || fail "the API did not start" "$(_tail "$DAEMON_ERR")"
    BASE=$(grep -o 'http://127.0.0.1:[0-9]*' "$DAEMON_ERR" | head -n 1)
}

# clock_ahead DAYS CMD...: CMD with the wall clock DAYS days ahead (the binary's test knob
# CARIS_TEST_CLOCK_OFFSET: libfaketime hung the ASan build on CI); the monotonic clock is left
# alone, as when a clock is set by hand. `cb` is spelled out.
clock_ahead() {
    local days=$1
    shift
    [[ $1 == cb ]] && set -- "$CARIS_BIN" "${@:2}"
    CARIS_TEST_CLOCK_OFFSET="+${days}d" "$@"
}

# run_in_tmpfs SIZE DIR SCRIPT [ARGS...]: `run`s SCRIPT with bash, as `bash -c SCRIPT caris DIR
# ARGS...` ($0 is the binary under test, $1 DIR), in a private mount namespace in which DIR
# (made if missing) is a fresh tmpfs of SIZE (e.g. 3m): a small file system that fills up, and
# is gone with the namespace. Returns 1 with a note, RC/OUT/ERR unset, where mount namespaces
# or tmpfs are not available.
run_in_tmpfs() {
    local size=$1 dir=$2 script=$3
    shift 3
    mkdir -p "$dir"
    if ! unshare -m true 2>/dev/null; then
        note "no mount namespaces here: a case on a small file system is skipped"
        return 1
    fi
    run unshare -m bash -c "mount -t tmpfs -o size=$size tmpfs \"\$1\" || exit 99
$script" "$CARIS_BIN" "$dir" "$@"
    if [[ $RC == 99 ]]; then
        note "tmpfs cannot be mounted here: a case on a small file system is skipped"
        return 1
    fi
    return 0
}

# --- trees -----------------------------------------------------------------------------

# make_tree DIR [--no-special]: build the case tree (see the list below) under DIR,
# which must not exist. Without --no-special it also holds a unix socket and a character
# device, which a backup must skip with a warning.
make_tree() {
    local d=$1 special=1
    [[ ${2:-} == --no-special ]] && special=0
    mkdir -p "$d" || return 1
    (
        set -e
        cd "$d"
        # regular files, small and multi-chunk
        printf 'hello, world\n' >hello.txt
        mkdir -p docs/reports
        seq 1 20000 >docs/numbers.txt
        seeded_bytes 1500000 make_tree/random.bin >docs/reports/random.bin
        printf 'patient record %s\n' {1..500} >docs/reports/records.csv
        : >empty-file
        mkdir empty-dir
        # symlinks
        ln -s hello.txt link-to-hello
        ln -s docs/reports link-to-dir
        ln -s does/not/exist dangling-link
        # hard links (a pair, one in another directory)
        printf 'shared content\n' >hardlink-a
        ln hardlink-a docs/hardlink-b
        # ownership (before chmod: chown clears setuid/setgid)
        printf 'owned\n' >owned-by-1234
        chown 1234:5678 owned-by-1234
        ln -s hello.txt owned-symlink
        chown -h 1234:5678 owned-symlink
        mkdir owned-dir
        chown 1234:5678 owned-dir
        # special mode bits
        printf '#!/bin/sh\n' >setuid-file
        chmod 4755 setuid-file
        printf 'x\n' >setgid-file
        chmod 2750 setgid-file
        mkdir setgid-dir sticky-dir
        chmod 2775 setgid-dir
        chmod 1777 sticky-dir
        printf 'ro\n' >read-only
        chmod 0400 read-only
        printf 'odd\n' >odd-mode
        chmod 0641 odd-mode
        # xattrs
        printf 'with xattrs\n' >xattr-file
        setfattr -n user.x -v hello xattr-file
        setfattr -n user.binary -v 0x00ff10 xattr-file
        mkdir xattr-dir
        setfattr -n user.dir -v 'on a directory' xattr-dir
        # sparse: 64 MiB with 8 KiB of data in the middle
        truncate -s 64M sparse.img
        seeded_bytes 8192 make_tree/sparse | dd of=sparse.img bs=4096 seek=8192 conv=notrunc status=none
        # FIFO
        mkfifo fifo
        # awkward names
        printf 'space\n' >'name with space'
        printf 'newline\n' >$'name\nwith newline'
        printf 'bytes\n' >$'non-utf8-\xff\xfe'
        mkdir $'dir-\xc3\x28-bad'
        printf 'in bad dir\n' >$'dir-\xc3\x28-bad/file'
        printf 'long name\n' >"$(printf 'L%.0s' {1..255})"
        # a path longer than PATH_MAX (4096): 21 nested 200-byte names
        python3 - <<'EOF'
import os
name = "d" * 200
fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
for _ in range(21):
    os.mkdir(name, dir_fd=fd)
    nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = nfd
f = os.open("deep-file", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
os.write(f, b"at the bottom of a path longer than PATH_MAX\n")
os.close(f)
os.close(fd)
EOF
        # nanosecond mtimes (last: creating entries changes the directories' mtimes)
        touch -d '2020-01-02 03:04:05.123456789' hello.txt docs/numbers.txt sparse.img
        touch -h -d '2019-05-06 07:08:09.987654321' link-to-hello
        touch -d '2001-02-03 04:05:06.000000001' empty-dir docs/reports
        touch -d '1970-01-01 00:00:01.5' odd-mode
        if ((special)); then
            python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind("unix.sock")'
            mknod null-like c 1 3
        fi
    )
}

# tree_snapshot DIR FILE: record DIR's metadata and content hashes in FILE, to compare a
# restore against a tree that has changed since (tree_compare @FILE DST).
tree_snapshot() {
    python3 "$LIB_DIR/treecmp.py" --snapshot "$2" "$1"
}

# tree_compare SRC DST [--skip-special] [--no-root-mtime]: assert that DST is a faithful
# copy of SRC (a directory, or @FILE from tree_snapshot): entries, type, mode (with
# setuid/setgid/sticky), uid/gid, mtime to the nanosecond, content, symlink targets,
# hard links, xattrs, and sparseness. --skip-special: sockets and devices in SRC must be
# absent from DST.
tree_compare() {
    local src=$1 dst=$2
    shift 2
    if python3 "$LIB_DIR/treecmp.py" "$@" "$src" "$dst" >"$TEST_TMP/.treecmp" 2>&1; then
        pass "tree $dst matches $src ($(tail -n 1 "$TEST_TMP/.treecmp"))"
        return 0
    fi
    fail "tree $dst differs from $src" "$(head -n 40 "$TEST_TMP/.treecmp")"
    return 1
}

# --- repository shortcuts --------------------------------------------------------------

REPO=$BACKUP_DIR/repository

# init_repo [GLOBAL OPTIONS...] [-- INIT OPTIONS...]: `cb --quiet GLOBAL OPTIONS init INIT
# OPTIONS`, asserted to succeed. Only `init` creates a repository (issue 11): every test
# makes its repositories with it before the first backup.
init_repo() {
    local globals=() rest=()
    while (($#)); do
        if [[ $1 == -- ]]; then
            shift
            rest=("$@")
            break
        fi
        globals+=("$1")
        shift
    done
    run cb --quiet "${globals[@]}" init "${rest[@]}"
    assert_rc 0 "init ${globals[*]} ${rest[*]}"
}

# backup_json OUTFILE ARGS...: `--json backup files ARGS...`, JSON to OUTFILE; sets RC and
# BACKUP_ID (empty when no id was printed).
backup_json() {
    local f=$1
    shift
    run cb --json backup files "$@"
    cp "$OUT_FILE" "$f"
    BACKUP_ID=$(json_get "$f" '["id"]' 2>/dev/null || true)
}

# backup_json_pack OUTFILE ARGS...: backup_json, and NEW_PACK: the largest pack the backup
# wrote (its data; the other holds the manifest's entry list), empty when it wrote none.
backup_json_pack() {
    local before
    before=$(list_packs)
    backup_json "$@"
    NEW_PACK=$(comm -13 <(printf '%s\n' "$before") <(list_packs) | xargs -r ls -S | head -n 1)
}

# list_ids: ids of `list --json`, space-separated, in its order.
list_ids() {
    cb --json list 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    sys.exit(1)
print(" ".join(b.get("id", "?") for b in d))'
}

# Pack files of the repository (finished ones; temporaries are dot files).
list_packs() { find "$REPO/data" -mindepth 2 -maxdepth 2 -type f ! -name '.*' 2>/dev/null | sort; }
list_index_files() { find "$REPO/index" -mindepth 1 -maxdepth 1 -type f ! -name '.*' 2>/dev/null | sort; }

# flip_byte FILE [OFFSET]: xor one byte (default: the middle one) with 0x01.
flip_byte() { _json flip "$1" "${2:-}"; }

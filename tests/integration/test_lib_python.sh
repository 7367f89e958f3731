#!/usr/bin/env bash
# lib.sh's python3: the tests' python programs (`python3 -c`, `python3 -`, `python3 SCRIPT`) run
# in a fork of the test's jsonsrv.py, not in a python of their own, and must behave as if they
# were: arguments, standard input, output and error (the shell's own files, offsets included),
# exit status, exceptions, environment, working directory, umask, ignored signals, a fresh
# random state. What the fork cannot do goes to /usr/bin/python3 (an argument naming a file
# descriptor of the shell's own).
source "$(dirname "$0")/lib.sh"

wait_until 30 _jsrv_pid || fail "the JSON helpers' server did not start"

# the fork does the work: the program's parent is the server, not this shell
assert_eq "$_JSRV_PID" "$(python3 -c 'import os; print(os.getppid())')" "the program runs in a fork of jsonsrv.py"

assert_eq "hello a b" "$(python3 -c 'import sys; print("hello", *sys.argv[1:])' a b)" "-c CODE ARGS: sys.argv"
assert_eq "- x y" "$(python3 - x y <<'PY'
import sys
print(*sys.argv)
PY
)" "- ARGS: the program from standard input (a here-document)"
cat >"$TEST_TMP/s.py" <<'PY'
import os, sys
print(__name__, os.path.basename(sys.argv[0]), sys.argv[1], os.path.basename(sys.path[0]))
PY
assert_eq "__main__ s.py z $(basename "$TEST_TMP")" "$(python3 "$TEST_TMP/s.py" z)" \
    "SCRIPT ARGS: __main__, sys.argv, sys.path[0] the script's directory"

python3 "$TEST_TMP/no-such-script.py" 2>"$TEST_TMP/err"
assert_eq 2 "$?" "a script that is not there: status 2, as python3 gives"
assert_contains "$(cat "$TEST_TMP/err")" "can't open file" "and python3's own message"
python3 -c 'import sys; sys.exit(3)'
assert_eq 3 "$?" "sys.exit(3): status 3"
python3 -c 'import sys; sys.exit(255)'
assert_eq 255 "$?" "sys.exit(255): status 255 (not taken for the server's 'cannot')"
python3 -c 'import sys; sys.exit("a message")' 2>"$TEST_TMP/err"
assert_eq 1 "$?" "sys.exit(a string): status 1"
assert_eq "a message" "$(cat "$TEST_TMP/err")" "and the string on standard error"
python3 -c 'raise ValueError("boom")' 2>"$TEST_TMP/err"
assert_eq 1 "$?" "an exception: status 1"
assert_contains "$(cat "$TEST_TMP/err")" "ValueError: boom" "and its traceback"
python3 -c 'import atexit; atexit.register(print, "at exit")' >"$TEST_TMP/out"
assert_eq "at exit" "$(cat "$TEST_TMP/out")" "atexit functions run"
python3 -c 'import sys; f = open(sys.argv[1], "w"); f.write("unclosed")' "$TEST_TMP/unclosed"
assert_eq unclosed "$(cat "$TEST_TMP/unclosed")" "a file written and not closed is flushed at the end"
# (the thread prints once the main thread has ended)
python3 -c 'import threading; threading.Thread(target=lambda: (threading.main_thread().join(), print("thread"))).start()' >"$TEST_TMP/out"
assert_eq thread "$(cat "$TEST_TMP/out")" "a thread still running when the program ends is waited for"
python3 -c 'import os; os._exit(5)'
assert_eq 5 "$?" "os._exit(5): status 5"
python3 -c 'import os; os._exit(0)'
assert_eq 0 "$?" "os._exit(0): status 0"
python3 -c 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'
assert_eq 137 "$?" "a program killed by SIGKILL: 128 + 9"

assert_eq bar "$(FOO=bar python3 -c 'import os; print(os.environ["FOO"])')" "a variable given for the call"
export LIB_PY_TEST=q
assert_eq q "$(python3 -c 'import os; print(os.environ["LIB_PY_TEST"])')" "an exported variable"
mkdir "$TEST_TMP/d"
assert_eq "$TEST_TMP/d" "$(cd "$TEST_TMP/d" && python3 -c 'import os; print(os.getcwd())')" "the working directory"
assert_eq 0077 "$( (umask 077 && python3 -c 'import os; print("%04o" % os.umask(0))'))" "the umask"
assert_eq "SIG_IGN" "$( (trap '' USR1 && python3 -c 'import signal; print(signal.getsignal(signal.SIGUSR1).name)'))" \
    "a signal the shell ignores is ignored"
assert_eq "SIG_DFL" "$( (trap - USR1 && python3 -c 'import signal; print(signal.getsignal(signal.SIGUSR1).name)'))" \
    "one it does not ignore has its default"

assert_eq 2 "$(printf 'one\ntwo\n' | python3 -c 'import sys; print(len(sys.stdin.read().split()))')" "standard input from a pipe"
python3 -c 'import sys; print("to stderr", file=sys.stderr)' 2>"$TEST_TMP/err" >"$TEST_TMP/out"
assert_eq "to stderr" "$(cat "$TEST_TMP/err")" "standard error"
assert_eq 0 "$(wc -c <"$TEST_TMP/out")" "nothing on standard output"
{
    echo first
    python3 -c 'print("second")'
    echo third
} >"$TEST_TMP/seq"
assert_eq "first second third" "$(paste -sd ' ' "$TEST_TMP/seq")" "output in order in a file the shell writes too (the same offset)"
echo pre >"$TEST_TMP/app"
python3 -c 'print("post")' >>"$TEST_TMP/app"
assert_eq "pre post" "$(paste -sd ' ' "$TEST_TMP/app")" "output appended (>>)"
assert_eq "é" "$(python3 -c 'print("\u00e9")')" "UTF-8 output"

a=$(python3 -c 'import random; print(random.random())')
b=$(python3 -c 'import random; print(random.random())')
assert_ne "$a" "$b" "each program has its own random state"

# a file descriptor of the shell's own (process substitution): python3 itself, which has it
assert_eq "from a substitution" "$(python3 -c 'import sys; print(open(sys.argv[1]).read().strip())' <(echo from a substitution))" \
    "an argument /dev/fd/N: run by python3 itself"

n=0
for ((i = 0; i < 20; i++)); do python3 -c 'pass' && n=$((n + 1)); done
assert_eq 20 "$n" "20 programs in a row"
# (a caller releases its slot and goes on; the server removes the request's files after)
# shellcheck disable=SC2317
no_requests() { ! compgen -G "$_JSRV_DIR/[ce].*" >/dev/null; }
assert_true "no request left behind" wait_until 30 no_requests

test_done

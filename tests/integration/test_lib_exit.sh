#!/usr/bin/env bash
# A test's cleanup runs in the test's own shell only (lib.sh at_exit). Bash runs the traps a
# script has set in a child it has forked for a command (`cmd &`) when a signal reaches the
# child before the child has reset them, in the moment before it becomes the command: a test
# that killed a background command just after starting it ran its EXIT trap there, killing
# its daemons, stopping its PostgreSQL or deleting its files while it went on (run.sh's trap
# deleted the PostgreSQL template of a whole run this way: stop 60's nine failures).
source "$(dirname "$0")/lib.sh"

# --- the hazard, shown (a figure, not an assertion: how often the signal comes first is up to
# the scheduler): a script with an unguarded EXIT trap and children killed as soon as started
cat >"$TEST_TMP/unguarded.sh" <<'EOS'
trap 'echo "$BASHPID" >>"$LOG"' EXIT # its own bash
for ((n = 0; n < 200; n++)); do
    cat </dev/null >/dev/null &
    kill -TERM "$!" 2>/dev/null
    wait "$!" 2>/dev/null
done
EOS
: >"$TEST_TMP/unguarded.log"
LOG=$TEST_TMP/unguarded.log bash "$TEST_TMP/unguarded.sh" 2>/dev/null
# one line is the script's own exit
note "an unguarded EXIT trap ran in $(($(wc -l <"$TEST_TMP/unguarded.log") - 1)) of 200 children killed as soon as started"

# --- at_exit: the same children leave this test's processes and files alone
sentinel=$TEST_TMP/sentinel
: >"$sentinel"
bg_start tail -f /dev/null
keeper=$BG_PID
at_exit 'rm -f "$sentinel"; _lib_on_exit'
killed=0
for ((n = 0; n < 300; n++)); do
    cat </dev/null >/dev/null &
    kill -TERM "$!" 2>/dev/null
    wait "$!" 2>/dev/null && continue
    killed=$((killed + 1))
done
note "$killed of 300 children ended by the signal"
assert_true "a file the test's EXIT trap deletes is still there" test -e "$sentinel"
assert_true "the background process the test's EXIT trap kills still runs" kill -0 "$keeper"
# the trap itself still works in the test's shell: a child script sourcing lib.sh the same way
cat >"$TEST_TMP/child-test.sh" <<'EOS'
source "$LIB"
at_exit 'echo "cleanup ran in $BASHPID" >"$MARK"'
echo "$BASHPID" >"$MARK.pid"
exit 3
EOS
child=$TEST_TMP/child mark=$TEST_TMP/mark script=$TEST_TMP/child-test.sh
mkdir -p "$child"
MARK=$mark LIB=$LIB_DIR/lib.sh TEST_TMP=$child TEST_RESULTS=$child/results TEST_FAILURES=$child/failures \
    run bash "$script"
assert_rc 3 "a script using at_exit exits with its own status"
assert_eq "cleanup ran in $(cat "$TEST_TMP/mark.pid" 2>/dev/null)" "$(cat "$TEST_TMP/mark" 2>/dev/null)" \
    "at_exit's commands run in the script's own shell at its exit"

# --- every EXIT trap of the tests is set by at_exit (a line of a script that runs in a bash of
# its own says so: "its own bash")
bare=$(grep -nE '(^|[;&|[:space:]])trap [^#]*[[:space:]]EXIT([[:space:]]|;|$)' "$LIB_DIR"/*.sh |
    grep -v -e 'BASHPID' -e 'its own bash')
assert_eq "" "$bare" "no test sets an EXIT trap but through at_exit"

test_done

#!/usr/bin/env bash
# SIGTERM stops a physical base backup while the server keeps it waiting: at the end of
# BASE_BACKUP (WAIT true) PostgreSQL waits until it has archived the backup's WAL, forever
# while its archive_command fails (here `false`; in the field, a wal push that cannot read the
# repository). Before the fix the backup sat in libpq's blocking read and ignored SIGTERM and
# Ctrl-C (README: a backup stops at its next safe point, a database backup within a quarter
# of a second); only kill -9 ended it.
# shellcheck disable=SC2154 # envf is set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
pitr_setup
pitr_archive_on "false"

bg_start "$CARIS_BIN" backup database --physical
# shellcheck disable=SC2317 # called through wait_until
_waiting() { grep -q "waiting for required WAL segments to be archived" "$BG_ERR"; }
wait_until 60 _waiting || fail "the server did not start waiting for its archiver" "$(_tail "$BG_ERR")"
# the backup is then in its wait for the server's next message (a poll of a quarter second)
# shellcheck disable=SC2317 # called through wait_until
_in_poll() { grep -q poll "/proc/$BG_PID/wchan" 2>/dev/null; }
wait_until 30 _in_poll || fail "the backup is not waiting in poll" "$(cat "/proc/$BG_PID/wchan" 2>&1)"
kill -TERM "$BG_PID"
# shellcheck disable=SC2317 # called through wait_until
_gone() { ! kill -0 "$BG_PID" 2>/dev/null; }
if wait_until 30 _gone; then
    wait "$BG_PID"
    assert_eq 1 "$?" "SIGTERM stops the waiting base backup (exit 1)"
    assert_contains "$(cat "$BG_ERR")" "cancelled" "it says cancelled"
    assert_contains "$(cat "$BG_ERR")" "nothing was committed" "and that nothing was committed"
else
    fail "the base backup ignored SIGTERM for 30 s" "$(_tail "$BG_ERR")"
    kill -9 "$BG_PID"
fi
run "$CARIS_BIN" --json list
assert_rc 0 "list"
assert_eq "0" "$(json_eval "$OUT_FILE" 'len(d)')" "no backup listed"

test_done

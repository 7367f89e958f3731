#!/usr/bin/env bash
# The daemon while time passes with runs held up, on a test clock that runs 60 times as fast
# as the real one (CARIS_TEST_CLOCK_RATE=60: a minute a second, no jumps):
#  1. Runs that outlast the interval (`* * * * *`; each run's success notification waits on a
#     webhook server that never answers, 4 s = 4 minutes): a schedule has at most one run
#     waiting, which takes the newest slot (logged as a catch-up), instead of one run queued
#     per slot (10 slots, all run back to back, before the fix).
#  2. A reload (SIGHUP) held up by a notification in flight (the stale alert, on an SMTP server
#     that never answers, 12 s = 12 minutes) while the 03:00 slot comes due: that slot still
#     runs (it was dropped, silently, before the fix: the next runs were computed from the
#     time the reload ended). The reload no longer waits for the notification (it held the
#     daemon's lock until the notification gave up: no status was answered meanwhile).
source "$(dirname "$0")/lib.sh"

export BACKUP_FILES_PATHS=$TEST_TMP/src BACKUP_TZ=UTC BACKUP_API_LISTEN=none
export BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
unset POSTGRES_URL
mkdir -p "$TEST_TMP/src"
printf 'note\n' >"$TEST_TMP/src/note.txt"
assert_exit 0 cb --quiet init

# start_blackhole NAME: a server that accepts connections and never answers; sets PORT
start_blackhole() {
    mkdir -p "$TEST_TMP/$1"
    bg_start /usr/bin/python3 "$LIB_DIR/notify_servers.py" blackhole "$TEST_TMP/$1"
    # shellcheck disable=SC2317
    _up() { [[ -s $TEST_TMP/$1/port ]]; }
    wait_until 30 _up "$1" || fail "the $1 server did not start" "$(_tail "$BG_ERR")"
    PORT=$(cat "$TEST_TMP/$1/port")
}

# --- 1. runs that outlast the interval --------------------------------------------------
# a recent backup: no stale alert
assert_exit 0 cb --quiet backup files --time 2026-03-01T02:00:00Z
start_blackhole hook
run env CARIS_TEST_CLOCK=2026-03-01T02:59:30Z,2026-03-01T03:09:00Z CARIS_TEST_CLOCK_RATE=60 \
    BACKUP_SCHEDULE_DAILY='* * * * *' BACKUP_NOTIFY_SUCCESS=true CARIS_NOTIFY_TIMEOUT_SECONDS=4 \
    BACKUP_SLACK_WEBHOOK_URL="http://127.0.0.1:$PORT/hook" timeout -k 5 120 "$CARIS_BIN" daemon
assert_rc 0 "the daemon ran to the test clock's end"
started=$(grep -c 'job: daily incremental run (scheduled for' "$ERR_FILE")
note "runs started: $started"
assert_cmp "$started" -ge 2 "runs were made"
# 10 slots (03:00 .. 03:09); each run takes at least 4 minutes of the test clock
assert_cmp "$started" -le 4 "not one run per slot: a waiting run takes the newest slot"
assert_contains "$ERR" "is still waiting in the queue: it runs once, for" "the catch-up is logged"
slots=$(grep -o 'job: daily incremental run (scheduled for [^)]*' "$ERR_FILE" | sed 's/.*for //')
assert_eq "$(printf '%s\n' "$slots" | LC_ALL=C sort -u)" "$slots" "each run is for a later slot than the one before"

# --- 2. a reload held up while the 03:00 slot comes due -----------------------------------
# a repository of its own (no schedule history: nothing to catch up at start) with no backup
# since 2026-03-01: the stale alert goes out at start, to a server that never answers
export BACKUP_DIR=$TEST_TMP/second
assert_exit 0 cb --quiet init
assert_exit 0 cb --quiet backup files --time 2026-03-01T02:00:00Z
start_blackhole smtp
export BACKUP_SMTP_URL="smtp://127.0.0.1:$PORT" BACKUP_EMAIL_FROM=caris@example.org \
    BACKUP_EMAIL_RECIPIENTS=ops@example.org
export BACKUP_ALERT_AFTER=1h
bg_start env CARIS_TEST_CLOCK=2026-03-05T02:56:00Z,2026-03-05T03:12:00Z CARIS_TEST_CLOCK_RATE=60 \
    BACKUP_SCHEDULE_DAILY='0 3 * * *' CARIS_NOTIFY_TIMEOUT_SECONDS=12 "$CARIS_BIN" daemon
daemon=$BG_PID
# shellcheck disable=SC2317 # called through wait_until
alert_in_flight() { [[ -s $TEST_TMP/smtp/connections ]]; }
if wait_until 30 alert_in_flight; then
    pass "the stale alert is in flight"
else
    fail "the stale alert never reached the SMTP server" "$(_tail "$BG_ERR")"
fi
kill -HUP "$daemon"
# the reload does not wait for the notification in flight, and the daemon answers meanwhile
# (the reload waited, holding the daemon's lock, until the notification gave up: the status
# came only then)
answered=0
for _ in 1 2 3 4 5; do
    run cb --json schedule status
    [[ $RC == 0 && $(json_get "$OUT_FILE" '["running"]') == true ]] && answered=$((answered + 1))
done
assert_eq 5 "$answered" "the daemon answered five status requests"
assert_not_contains "$(cat "$BG_ERR")" "stale notification not delivered" \
    "... while the notification was still in flight"
# shellcheck disable=SC2317 # called through wait_until
gone() { ! kill -0 "$daemon" 2>/dev/null; }
wait_until 120 gone || fail "the daemon did not stop at the test clock's end" "$(_tail "$BG_ERR")"
wait "$daemon"
assert_eq 0 "$?" "the daemon ran to the test clock's end"
log=$(cat "$BG_ERR")
assert_contains "$log" "reload: configuration reloaded" "the reload went through"
reloaded_at=$(grep -m 1 -n 'reload: configuration reloaded' "$BG_ERR" | cut -d: -f1)
gave_up_at=$(grep -m 1 -n 'stale notification not delivered' "$BG_ERR" | cut -d: -f1)
assert_cmp "${reloaded_at:-999999}" -lt "${gave_up_at:-0}" "the reload ended before the notification in flight gave up"
before=$(grep -m 1 -n 'reload: configuration reloaded' "$BG_ERR" | cut -d: -f1)
assert_cmp "$(grep -c 'run (scheduled for 2026-03-05T03:00:00' "$BG_ERR")" -eq 1 \
    "the 03:00 run that came due during the reload ran, once"
run_line=$(grep -m 1 -n 'run (scheduled for 2026-03-05T03:00:00' "$BG_ERR" | cut -d: -f1)
assert_cmp "${run_line:-0}" -gt "${before:-0}" "after the reload that held it up"

test_done

#!/usr/bin/env bash
# The daemon watches PostgreSQL's WAL archiver (pg_stat_archiver): while archive_command fails
# (here it is `false`) for BACKUP_WAL_ALERT_MINUTES, a wal-archiving-failing alert is mailed to
# a real SMTP server, once, and `schedule status` says "failing"; once archiving works again,
# the daemon logs it and the status says "ok". A bad BACKUP_WAL_ALERT_MINUTES stops the daemon
# at start (exit 6). WAL streaming (BACKUP_WAL_STREAMING) that keeps failing is alerted once
# (wal-streaming-failing). archive_mode on with an empty archive_command (nothing archived,
# no failure counted) is failing too.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
init_repo
export POSTGRES_URL BACKUP_TZ=UTC
POSTGRES_URL=$(pg_url)
export BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
export BACKUP_API_LISTEN=none BACKUP_DRILL_INTERVAL_DAYS=0
psql_db postgres -c "ALTER SYSTEM SET archive_mode = on" -c "ALTER SYSTEM SET archive_command = 'false'" ||
    fail "ALTER SYSTEM archive settings"
pg_pause && pg_resume || fail "restart with archive_mode = on"
assert_eq on "$(psql_db postgres -c 'SHOW archive_mode')" "archive_mode is on"

# a segment to archive: archive_command (false) fails on it
psql_db "$CARIS_PG_DB" -c "CREATE TABLE t (i int)" -c "INSERT INTO t SELECT generate_series(1, 1000)" >/dev/null
failing_seg=$(psql_db postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
# shellcheck disable=SC2317
_failed() { (($(psql_db postgres -c 'SELECT failed_count FROM pg_stat_archiver') >= 1)); }
wait_until 60 _failed || fail "archive_command did not fail" "$(psql_db postgres -c 'SELECT * FROM pg_stat_archiver')"

smtp_start

run env BACKUP_WAL_ALERT_MINUTES=soon "$CARIS_BIN" daemon
assert_rc 6 "a bad BACKUP_WAL_ALERT_MINUTES stops the daemon at start"
assert_contains "$ERR" "invalid BACKUP_WAL_ALERT_MINUTES 'soon'" "the error names the variable"

# wal_mails: the mails about WAL archiving (there is also the stale alert: no database
# backup was ever made here)
wal_mails() { mail_texts "WAL archiving"; }
# shellcheck disable=SC2317
_checked() {
    cb --json schedule status >"$TEST_TMP/st.json" 2>/dev/null &&
        [[ $(json_get "$TEST_TMP/st.json" '["walArchiving"]["checkedAt"]') > "$1" ]]
}

# The failures are counted on the monotonic clock: the clock set 2 hours forward
# (CARIS_TEST_CLOCK_OFFSET, read from a file at each reading) is no time failing, and no alert
# comes before the minute of BACKUP_WAL_ALERT_MINUTES=1 has passed (the jump used to count as
# 2 hours of failures: an alert at the next check).
offset=$TEST_TMP/clock-offset
printf '+0d\n' >"$offset"
started=$SECONDS # the daemon sees the failures after this
bg_start env BACKUP_WAL_ALERT_MINUTES=1 CARIS_TEST_WALMON_INTERVAL_MS=200 \
    CARIS_TEST_CLOCK_OFFSET="$offset" "$CARIS_BIN" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
# shellcheck disable=SC2317
_failing() { cb --json schedule status >"$TEST_TMP/st.json" 2>/dev/null && [[ $(json_get "$TEST_TMP/st.json" '["walArchiving"]["state"]') == failing ]]; }
wait_until 60 _failing || fail "the daemon did not see archiving fail" "$(_tail "$DAEMON_ERR")"
printf '+2h\n' >"$offset.new" && mv "$offset.new" "$offset"
at=$(json_get "$TEST_TMP/st.json" '["walArchiving"]["checkedAt"]')
for _ in 1 2 3; do # three checks after the jump
    wait_until 30 _checked "$at" || fail "the archiver was not asked again" "$(_tail "$DAEMON_ERR")"
    at=$(json_get "$TEST_TMP/st.json" '["walArchiving"]["checkedAt"]')
done
if ((SECONDS - started < 59)); then
    assert_eq "" "$(wal_mails)" "no alert: the clock jumped 2 hours, but the failures have not lasted a minute"
else
    note "the checks took a minute: the no-alert case is not judged (the alert may be due)"
fi
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"
rm -f "$TEST_TMP"/smtp/msg-*.eml

# alert at once (0 minutes), the server asked every 200 ms
bg_start env BACKUP_WAL_ALERT_MINUTES=0 CARIS_TEST_WALMON_INTERVAL_MS=200 "$CARIS_BIN" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
# shellcheck disable=SC2317
_mail() { [[ -n $(wal_mails) ]]; }
wait_until 60 _mail || fail "no WAL archiving alert" "$(_tail "$DAEMON_ERR")"
mail=$(wal_mails)
assert_contains "$mail" "CÁRIS Backup: WAL archiving FAILING on" "the subject"
assert_contains "$mail" "point-in-time recovery stops at the last segment archived" "what it means"
assert_contains "$mail" "segment $failing_seg" "the failing segment"
assert_contains "$mail" "wal-archiving-failing" "the event"
assert_not_contains "$mail" "$CARIS_PG_PASSWORD" "no database password in the mail"
run cb --json schedule status
assert_eq failing "$(json_get "$OUT_FILE" '["walArchiving"]["state"]')" "status: failing"
assert_eq "$failing_seg" "$(json_get "$OUT_FILE" '["walArchiving"]["lastFailedWal"]')" "status: the failing segment"
assert_contains "$(cat "$DAEMON_ERR")" "archive_command fails: segment $failing_seg" "the daemon logs it"
# once per episode: more checks, no second mail
first=$(json_get "$OUT_FILE" '["walArchiving"]["checkedAt"]')
wait_until 30 _checked "$first" || fail "the archiver was not asked again"
assert_eq 1 "$(wal_mails | grep -c '^CÁRIS Backup: WAL archiving FAILING')" "one alert per episode"

# archiving works again: logged, status ok (the reload wakes the archiver, which retries)
psql_db postgres -c "ALTER SYSTEM SET archive_command = 'true'" -c "SELECT pg_reload_conf()" >/dev/null
# shellcheck disable=SC2317
_ok() {
    cb --json schedule status >"$TEST_TMP/st.json" 2>/dev/null &&
        [[ $(json_get "$TEST_TMP/st.json" '["walArchiving"]["state"]') == ok ]]
}
wait_until 90 _ok || fail "the status did not become ok" "$(psql_db postgres -c 'SELECT * FROM pg_stat_archiver')"
assert_eq ok "$(json_get "$TEST_TMP/st.json" '["walArchiving"]["state"]')" "status: ok once archiving works"
assert_contains "$(cat "$DAEMON_ERR")" "WAL archiving works again" "the daemon logs the end"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"

# --- an alert that no channel took (the mail server down when it was due) is tried again
# (CARIS_TEST_ALERT_RETRY_MS; an hour by default): it was marked sent before it was sent, and
# lost for good while archiving went on failing
failed_before=$(psql_db postgres -c 'SELECT failed_count FROM pg_stat_archiver')
psql_db postgres -c "ALTER SYSTEM SET archive_command = 'false'" -c "SELECT pg_reload_conf()" >/dev/null
psql_db "$CARIS_PG_DB" -c "INSERT INTO t SELECT generate_series(1, 1000)" -c "SELECT pg_switch_wal()" >/dev/null
# shellcheck disable=SC2317
_failed_again() { (($(psql_db postgres -c 'SELECT failed_count FROM pg_stat_archiver') > failed_before)); }
wait_until 60 _failed_again || fail "archive_command did not fail again" "$(psql_db postgres -c 'SELECT * FROM pg_stat_archiver')"
late_port=$(free_port)
rm -f "$TEST_TMP"/smtp/msg-*.eml
bg_start env BACKUP_WAL_ALERT_MINUTES=0 CARIS_TEST_WALMON_INTERVAL_MS=200 CARIS_TEST_ALERT_RETRY_MS=500 \
    BACKUP_SMTP_URL="smtp://127.0.0.1:$late_port" CARIS_NOTIFY_TIMEOUT_SECONDS=2 "$CARIS_BIN" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
# shellcheck disable=SC2317
_undelivered() { grep -q "the alert that archiving fails was not delivered" "$DAEMON_ERR"; }
wait_until 60 _undelivered || fail "the alert was not tried while the mail server was down" "$(_tail "$DAEMON_ERR")"
mkdir -p "$TEST_TMP/late"
bg_start /usr/bin/python3 "$LIB_DIR/notify_servers.py" smtp "$TEST_TMP/late" --port "$late_port"
# shellcheck disable=SC2317
_late_mail() { [[ -n $(find "$TEST_TMP/late" -name 'msg-*.eml' -exec grep -l 'wal-archiving-failing' {} +) ]]; }
if wait_until 60 _late_mail; then
    pass "once the mail server is up, the alert is delivered"
else
    fail "the alert no channel took was never sent again" "$(_tail "$DAEMON_ERR")"
fi
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"

# --- archive_mode on but archive_command empty: PostgreSQL archives nothing and counts no
# failure (pg_stat_archiver stays clean); the daemon says so, it used to say "ok"
psql_db postgres -c "ALTER SYSTEM SET archive_command = ''" -c "SELECT pg_reload_conf()" >/dev/null
assert_eq "" "$(psql_db postgres -c 'SHOW archive_command')" "archive_command is empty"
rm -f "$TEST_TMP"/smtp/msg-*.eml
bg_start env BACKUP_WAL_ALERT_MINUTES=0 CARIS_TEST_WALMON_INTERVAL_MS=200 "$CARIS_BIN" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
wait_until 60 _failing || fail "the daemon did not see that nothing is archived" "$(_tail "$DAEMON_ERR")"
assert_eq failing "$(json_get "$TEST_TMP/st.json" '["walArchiving"]["state"]')" \
    "status: failing while archive_command is empty"
assert_contains "$(cat "$DAEMON_ERR")" "archive_mode is on but archive_command is not set" "the daemon logs why"
wait_until 60 _mail || fail "no WAL archiving alert for an empty archive_command" "$(_tail "$DAEMON_ERR")"
assert_contains "$(wal_mails)" "archive_command is not set" "the alert says why"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"

# --- WAL streaming that keeps failing ---------------------------------------------------------
# nothing listens on port 1: every `wal receive` fails at once; alert at the first failure
bg_start env BACKUP_WAL_ALERT_MINUTES=0 BACKUP_WAL_STREAMING=true \
    BACKUP_PG_REPLICATION_URL="postgresql://caris@127.0.0.1:1/postgres" "$CARIS_BIN" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
# shellcheck disable=SC2317
_stream_mail() { [[ -n $(mail_texts "WAL streaming") ]]; }
wait_until 60 _stream_mail || fail "no WAL streaming alert" "$(_tail "$DAEMON_ERR")"
mail=$(mail_texts "WAL streaming")
assert_contains "$mail" "CÁRIS Backup: WAL streaming FAILING on" "the subject"
assert_contains "$mail" "wal-streaming-failing" "the event"
assert_contains "$mail" "over replication slot caris_backup has failed since" "the error says since when"
assert_contains "$mail" "127.0.0.1" "and why (the server it cannot reach)"
# shellcheck disable=SC2317
_restarted() { (($(grep -c "wal receive failed" "$DAEMON_ERR") >= 3)); }
wait_until 60 _restarted || fail "wal receive was not retried" "$(_tail "$DAEMON_ERR")"
assert_eq 1 "$(mail_texts "WAL streaming" | grep -c '^CÁRIS Backup: WAL streaming FAILING')" \
    "one alert for the episode, however many restarts"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"

test_done

#!/usr/bin/env bash
# What a reload (SIGHUP) does with the settings of the daemon's HTTP API and WAL threads.
# CRON_SECRET is taken at once: a rotated secret (one that leaked) is refused from the reload
# on; the old one was still let in until a restart, after "configuration reloaded" and nothing
# else. The API's address and TLS files stay those it started with, and a reload that changes
# them says so in the log. A value the next start would refuse is refused by the reload too.
source "$(dirname "$0")/lib.sh"

export BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
# (from the env file alone: the environment would win over it)
unset BACKUP_API_LISTEN CRON_SECRET BACKUP_SCHEDULE_DAILY
assert_exit 0 cb init
# env LINE...: the env file, mode 0600, the daily schedule off
env_file() { (umask 077 && printf '%s\n' 'BACKUP_SCHEDULE_DAILY=off' "$@" >"$TEST_TMP/env"); }
env_file BACKUP_API_LISTEN=127.0.0.1:0 CRON_SECRET=cron-old-4711-secret
api_daemon_start --env-file "$TEST_TMP/env"

# code SECRET: the status of a cron request with SECRET (400 once authorized: the type is bad)
code() {
    curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$BASE/api/cron/backup?type=sideways"
}
# reload: SIGHUP, and waits for the daemon's answer; its log lines since in $RELOAD_LOG
reload() {
    local lines
    lines=$(wc -l <"$DAEMON_ERR")
    kill -HUP "$DAEMON"
    # shellcheck disable=SC2317 # called through wait_until
    _said() { RELOAD_LOG=$(tail -n +"$((lines + 1))" "$DAEMON_ERR") && grep -q 'reload: configuration' <<<"$RELOAD_LOG"; }
    wait_until 30 _said || fail "no answer to the reload" "$(_tail "$DAEMON_ERR")"
}
assert_eq 400 "$(code cron-old-4711-secret)" "the CRON_SECRET the daemon started with is let in"

env_file BACKUP_API_LISTEN=127.0.0.1:1 CRON_SECRET=cron-new-4712-secret
reload
assert_contains "$RELOAD_LOG" "configuration reloaded" "the reload is applied"
assert_eq 401 "$(code cron-old-4711-secret)" "after the reload the old CRON_SECRET is refused"
assert_eq 400 "$(code cron-new-4712-secret)" "... and the new one let in"
assert_contains "$RELOAD_LOG" \
    "BACKUP_API_LISTEN changed: the HTTP API goes on with the values the daemon started with; restart the daemon for them to apply" \
    "a new API address is named in the log, with what to do"
assert_not_contains "$(cat "$DAEMON_ERR")" "cron-new-4712" "no secret in the log"

# CRON_SECRET taken out: no secret is let in any more
env_file BACKUP_API_LISTEN=127.0.0.1:0
reload
assert_eq 401 "$(code cron-new-4712-secret)" "a CRON_SECRET taken out of the file is refused"

# A value the next start refuses (exit 6) is refused by the reload too: the old settings stay,
# and the log says why. A reload took them ("configuration reloaded", and a restart asked for
# to apply the API's and WAL settings), and the daemon then did not start again.
assert_exit 0 env "BACKUP_DIR=$TEST_TMP/probe" "$CARIS_BIN" --quiet init
for bad in BACKUP_API_LISTEN=nowhere:port "BACKUP_API_TLS_CERT=$TEST_TMP/cert.pem" \
    BACKUP_WAL_STREAMING=maybe BACKUP_WAL_FLUSH_SECONDS=0 BACKUP_WAL_ALERT_MINUTES=soon \
    BACKUP_WAL_SLOT=Bad-Slot BACKUP_COMPRESS_DUMPS=ture "BACKUP_FILES_PATHS=$TEST_TMP:$TEST_TMP/x/" \
    BACKUP_FILES_PATHS=relative/dir; do
    name=${bad%%=*}
    env_file 'BACKUP_SCHEDULE_WEEKLY=0 4 * * 0' "$bad" BACKUP_WAL_STREAMING=true
    [[ $name == BACKUP_WAL_STREAMING ]] && env_file "$bad"
    run env -u BACKUP_SCHEDULE_WEEKLY "BACKUP_DIR=$TEST_TMP/probe" "$CARIS_BIN" --env-file "$TEST_TMP/env" daemon
    assert_rc 6 "a daemon does not start with $name bad"
    reload
    assert_contains "$RELOAD_LOG" "configuration not reloaded: " "a reload with $name bad is refused"
    assert_contains "$RELOAD_LOG" "$name" "... naming it"
done
env_file BACKUP_API_LISTEN=127.0.0.1:0
run cb --env-file "$TEST_TMP/env" --json schedule status
assert_eq off "$(json_get "$OUT_FILE" '["schedules"]["weekly"]["cron"]')" \
    "the schedules stay those of the last good reload"
stop_daemon

test_done

#!/usr/bin/env bash
# What a reload (SIGHUP) does to the daemon's HTTP API. CRON_SECRET is taken at once: a
# rotated secret (one that leaked) is refused from the reload on; the old one was still let in
# until a restart, after "configuration reloaded" and nothing else. The API's address and TLS
# files stay those it started with, and a reload that changes them says so in the log.
source "$(dirname "$0")/lib.sh"

export BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
# (from the env file alone: the environment would win over it)
unset BACKUP_API_LISTEN CRON_SECRET
assert_exit 0 cb init
(umask 077 && printf 'BACKUP_API_LISTEN=127.0.0.1:0\nCRON_SECRET=cron-old-4711-secret\n' >"$TEST_TMP/env")
api_daemon_start --env-file "$TEST_TMP/env"

# code SECRET: the status of a cron request with SECRET (400 once authorized: the type is bad)
code() {
    curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$BASE/api/cron/backup?type=sideways"
}
assert_eq 400 "$(code cron-old-4711-secret)" "the CRON_SECRET the daemon started with is let in"

(umask 077 && printf 'BACKUP_API_LISTEN=127.0.0.1:1\nCRON_SECRET=cron-new-4712-secret\n' >"$TEST_TMP/env")
kill -HUP "$DAEMON"
# shellcheck disable=SC2317 # called through wait_until
_reloaded() { grep -q 'configuration reloaded' "$DAEMON_ERR"; }
wait_until 30 _reloaded || fail "no reload" "$(_tail "$DAEMON_ERR")"
assert_eq 401 "$(code cron-old-4711-secret)" "after the reload the old CRON_SECRET is refused"
assert_eq 400 "$(code cron-new-4712-secret)" "... and the new one let in"
assert_contains "$(cat "$DAEMON_ERR")" \
    "BACKUP_API_LISTEN changed: the HTTP API goes on with the values the daemon started with; restart the daemon for them to apply" \
    "a new API address is named in the log, with what to do"
assert_not_contains "$(cat "$DAEMON_ERR")" "cron-new-4712" "no secret in the log"

# CRON_SECRET taken out: no secret is let in any more
(umask 077 && printf 'BACKUP_API_LISTEN=127.0.0.1:0\n' >"$TEST_TMP/env")
kill -HUP "$DAEMON"
# shellcheck disable=SC2317 # called through wait_until
_reloaded2() { (($(grep -c 'configuration reloaded' "$DAEMON_ERR") >= 2)); }
wait_until 30 _reloaded2 || fail "no second reload" "$(_tail "$DAEMON_ERR")"
assert_eq 401 "$(code cron-new-4712-secret)" "a CRON_SECRET taken out of the file is refused"
stop_daemon

test_done

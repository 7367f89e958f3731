#!/usr/bin/env bash
# A scheduled run the daemon's stop cancels (SIGTERM: a shutdown, a reboot or a restart during
# the night's backup) made no backup: the next daemon runs it once at its start, as a run
# missed while the machine was off. It used to count as the schedule's last run, so the slot
# was never run again and nothing was told (the failure's notification gives up at the stop):
# only the stale alert, a day later. The run is held at the database backup by a table lock
# (not by timing), on a test clock. And a SIGHUP while a job runs is applied once it ends.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
db=$CARIS_PG_DB
pg_small_table "$db"
export BACKUP_TZ=UTC BACKUP_SCHEDULE_DAILY='0 3 * * *' BACKUP_SCHEDULE_WEEKLY=off \
    BACKUP_SCHEDULE_MONTHLY=off
unset BACKUP_FILES_PATHS
STATE=$BACKUP_DIR/metadata/scheduler.json
assert_exit 0 cb --quiet init

# the 03:00 run waits for the table; the daemon is stopped meanwhile
pg_table_lock_take "$db" small
bg_start env CARIS_TEST_CLOCK=2026-03-01T02:50:00Z,2026-03-01T04:00:00Z "$CARIS_BIN" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
# shellcheck disable=SC2317 # called through wait_until
_waiting() { (($(pg_lock_waiters "$db" small) >= 1)); }
wait_until 60 _waiting || fail "the scheduled run does not wait for the table" "$(_tail "$DAEMON_ERR")"
# a run asked for meanwhile waits in the queue; the stop drops it, and says so by its id in the
# log and the audit log (a count in the log was all: audit K4)
assert_exit 0 cb run-now incremental
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "SIGTERM during the scheduled run: the daemon exits 0"
queued=$(grep -o 'manual incremental run job-[0-9-]*: dropped: the daemon stopped before it ran' "$DAEMON_ERR")
assert_ne "" "$queued" "the queued run the stop dropped is logged by its id"
queued=${queued#manual incremental run }
queued=${queued%%:*}
assert_eq 1 "$(grep -c "\"job\":\"$queued\".*dropped: the daemon stopped before it ran" "$BACKUP_DIR/metadata/audit.log")" \
    "... and audited as failed"
pg_table_lock_release
assert_eq "daily 2026-03-01T03:00:00.000Z False True" \
    "$(json_eval "$STATE" '" ".join(str(d["history"][0].get(k)) for k in ("schedule", "scheduledFor", "ok", "stopped"))')" \
    "the cancelled run is in the history: failed, cancelled by the stop"
assert_contains "$(json_eval "$STATE" 'd["history"][0]["error"]["message"]')" \
    "cancelled: the daemon stopped during the run" "its error says the daemon's stop cancelled it"
assert_eq "" "$(list_ids)" "it committed no backup"

# the next start, at 12:00: the 03:00 run is made, once
run env CARIS_TEST_CLOCK=2026-03-01T12:00:00Z,2026-03-01T12:30:00Z "$CARIS_BIN" daemon
assert_rc 0 "the next daemon ran"
assert_contains "$ERR" "daily run of 2026-03-01T03:00:00.000Z was missed: running it once now" \
    "it runs the slot the stop cancelled"
assert_eq "daily 2026-03-01T03:00:00.000Z True True" \
    "$(json_eval "$STATE" '" ".join(str(d["history"][0].get(k)) for k in ("schedule", "scheduledFor", "catchUp", "ok"))')" \
    "the run for 03:00 is caught up and succeeds"
assert_eq 2 "$(json_eval "$STATE" 'len(d["history"])')" "one run more, not one per start"
assert_match '^caris_(full|incremental)_2026-03-01T12-00-00$' "$(list_ids)" "its database backup is made"

# a later start does not run it again
run env CARIS_TEST_CLOCK=2026-03-01T13:00:00Z,2026-03-01T13:30:00Z "$CARIS_BIN" daemon
assert_rc 0 "a later daemon ran"
assert_not_contains "$ERR" "was missed" "it catches nothing up: the slot was run"
assert_eq 2 "$(json_eval "$STATE" 'len(d["history"])')" "no run more"

# --- SIGHUP while a job runs ---------------------------------------------------------------
# The reload waits for the job to end and comes before the next job (it was refused, 'send
# SIGHUP again once it ended': a reload during a backup of hours was lost unless someone read
# the log and asked again).
# The API's CRON_SECRET is the exception: it applies at once (a secret rotated because it
# leaked stayed good, and the new one was refused, for as long as the job ran; audit K3).
# (the schedules and the API from the env file alone: the environment would win over it)
unset BACKUP_SCHEDULE_DAILY BACKUP_SCHEDULE_WEEKLY BACKUP_SCHEDULE_MONTHLY BACKUP_API_LISTEN
{
    printf 'BACKUP_SCHEDULE_%s=off\n' DAILY WEEKLY MONTHLY
    printf 'BACKUP_API_LISTEN=127.0.0.1:0\nCRON_SECRET=old-cron-secret-4411\n'
} >"$TEST_TMP/env"
pg_table_lock_take "$db" small
bg_start cb --env-file "$TEST_TMP/env" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
# shellcheck disable=SC2317 # called through wait_until
_up() { [[ -S $BACKUP_DIR/metadata/daemon.sock ]] && grep -q 'started' "$DAEMON_ERR"; }
wait_until 60 _up || fail "the daemon did not start" "$(_tail "$DAEMON_ERR")"
assert_exit 0 cb run-now full
assert_exit 0 cb run-now incremental
wait_until 60 _waiting || fail "the run does not wait for the table" "$(_tail "$DAEMON_ERR")"
{
    printf 'BACKUP_SCHEDULE_%s\n' 'DAILY=off' 'WEEKLY=0 2 * * 0' 'MONTHLY=off'
    printf 'BACKUP_API_LISTEN=127.0.0.1:0\nCRON_SECRET=new-cron-secret-4412\n'
} >"$TEST_TMP/env"
kill -HUP "$DAEMON"
# shellcheck disable=SC2317 # called through wait_until
_deferred() { grep -q 'reload: a job is running: the configuration is reloaded once it ends' "$DAEMON_ERR"; }
wait_until 30 _deferred || fail "the reload is not deferred" "$(_tail "$DAEMON_ERR")"
BASE=$(grep -o 'http://127.0.0.1:[0-9]*' "$DAEMON_ERR" | head -n 1)
cron_status() { # SECRET: the status of a cron request with it (an unknown type: 400 once let in)
    curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$BASE/api/cron/backup?type=sideways"
}
assert_eq 401 "$(cron_status old-cron-secret-4411)" "while the job runs, the old CRON_SECRET is refused already"
assert_eq 400 "$(cron_status new-cron-secret-4412)" "... and the new one let in"
# rotated once more, the job still running: the second SIGHUP applies it too (review)
sed -i 's/^CRON_SECRET=.*/CRON_SECRET=third-cron-secret-4413/' "$TEST_TMP/env"
kill -HUP "$DAEMON"
# shellcheck disable=SC2317 # called through wait_until
_third() { (($(grep -c "the API's CRON_SECRET is reloaded" "$DAEMON_ERR") >= 2)); }
wait_until 30 _third || fail "the second SIGHUP during the job is not applied" "$(_tail "$DAEMON_ERR")"
assert_eq 400 "$(cron_status third-cron-secret-4413)" "the third CRON_SECRET is let in while the job runs"
assert_eq 401 "$(cron_status new-cron-secret-4412)" "... and the second one is refused from then on"
# a file the reload refuses (a bad schedule) does not put its CRON_SECRET in force either (only
# the API's settings were checked: the new secret applied, the old one was refused for good)
cp "$TEST_TMP/env" "$TEST_TMP/env.good"
sed -i 's/^CRON_SECRET=.*/CRON_SECRET=fourth-cron-secret-4414/; s/^BACKUP_SCHEDULE_DAILY=.*/BACKUP_SCHEDULE_DAILY=61 * * * */' "$TEST_TMP/env"
kill -HUP "$DAEMON"
# shellcheck disable=SC2317 # called through wait_until
_refused() { grep -q 'configuration not reloaded' "$DAEMON_ERR"; }
wait_until 30 _refused || fail "the bad file was not refused" "$(_tail "$DAEMON_ERR")"
assert_eq 401 "$(cron_status fourth-cron-secret-4414)" "a refused file's CRON_SECRET is not let in"
assert_eq 400 "$(cron_status third-cron-secret-4413)" "... and the one in force stays"
cp "$TEST_TMP/env.good" "$TEST_TMP/env"
pg_table_lock_release
# shellcheck disable=SC2317 # called through wait_until
_reloaded() { grep -q 'configuration reloaded' "$DAEMON_ERR"; }
wait_until 60 _reloaded || fail "the reload asked for during the run never came" "$(_tail "$DAEMON_ERR")"
# shellcheck disable=SC2317 # called through wait_until
_idle() {
    cb --json schedule status >"$TEST_TMP/status.json" 2>/dev/null &&
        [[ $(json_eval "$TEST_TMP/status.json" 'd["job"] is None and d["queue"] == 0') == true ]]
}
wait_until 120 _idle || fail "the runs did not end" "$(_tail "$DAEMON_ERR")"
assert_eq "0 2 * * 0" "$(json_get "$TEST_TMP/status.json" '["schedules"]["weekly"]["cron"]')" \
    "the weekly schedule is on: the reload was applied once the run ended"
first_end=$(grep -n 'job: manual full run: ' "$DAEMON_ERR" | head -n 1 | cut -d: -f1)
reloaded=$(grep -n 'configuration reloaded' "$DAEMON_ERR" | head -n 1 | cut -d: -f1)
second=$(grep -n 'job: manual incremental run (at ' "$DAEMON_ERR" | head -n 1 | cut -d: -f1)
assert_cmp "${reloaded:-0}" -gt "${first_end:-999999}" "the reload came after the run it waited for"
assert_cmp "${reloaded:-999999}" -lt "${second:-0}" "... and before the next queued run started"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"

test_done

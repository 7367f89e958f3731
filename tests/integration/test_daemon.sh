#!/usr/bin/env bash
# The daemon end to end, on a test clock (CARIS_TEST_CLOCK: a week of schedules runs in
# seconds): the right runs in the right order with retention applied, catch-up of missed
# runs, run-now through the control socket, a second daemon refused, SIGTERM in the middle
# of a backup (held by a table lock, not by timing), SIGHUP reload, and notifications: a
# failed run is mailed to a real SMTP server; with the SMTP server down the backup still
# succeeds and the failure is logged; a drill that cannot run and a prune that refuses are
# mailed as what they are.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
db=$CARIS_PG_DB
psql_db "$db" -c "CREATE TABLE small (id integer PRIMARY KEY, v text);
    INSERT INTO small SELECT i, 'v' || i FROM generate_series(1, 1000) AS i" >/dev/null
export POSTGRES_URL BACKUP_FILES_PATHS BACKUP_TZ=UTC
POSTGRES_URL=$(pg_url)
mkdir -p "$TEST_TMP/src/docs"
seeded_bytes 200000 daemon/scan >"$TEST_TMP/src/docs/scan.bin"
printf 'note\n' >"$TEST_TMP/src/docs/note.txt"
BACKUP_FILES_PATHS=$TEST_TMP/src
REPO=$BACKUP_DIR/repository
STATE=$BACKUP_DIR/metadata/scheduler.json
assert_exit 0 cb init

assert_exit 0 cb daemon --help
assert_contains "$OUT" "BACKUP_SCHEDULE_DAILY" "daemon --help names the schedules"
assert_exit 2 cb daemon --bogus
assert_exit 2 cb run-now sideways
# the extras' settings are checked at start (a bad one was found only when a run used it,
# then replaced by the default)
for bad in BACKUP_PRUNE_INTERVAL_DAYS=weekly BACKUP_DRILL_INTERVAL_DAYS=-1 BACKUP_DRILL_SCRATCH=remote; do
    run env "$bad" timeout -k 5 60 "$CARIS_BIN" daemon
    assert_rc 6 "the daemon refuses to start with $bad (exit 6)"
    assert_contains "$ERR" "${bad%%=*} must be" "... naming the variable"
done
# so is the retention every run ends with: its counts, a policy that keeps something, its zone
# (they were found bad only by the first run's retention step, at night)
run env BACKUP_RETENTION_WEEKLY=four timeout -k 5 60 "$CARIS_BIN" daemon
assert_rc 6 "the daemon refuses to start with BACKUP_RETENTION_WEEKLY=four (exit 6)"
assert_contains "$ERR" "BACKUP_RETENTION_WEEKLY" "... naming the variable"
run env BACKUP_RETENTION_DAILY=0 BACKUP_RETENTION_WEEKLY=0 BACKUP_RETENTION_MONTHLY=0 \
    timeout -k 5 60 "$CARIS_BIN" daemon
assert_rc 6 "the daemon refuses to start with a retention policy that keeps nothing (exit 6)"
assert_contains "$ERR" "keeps nothing" "... saying so"
run env BACKUP_TZ=Mars/Olympus_Mons timeout -k 5 60 "$CARIS_BIN" daemon
assert_rc 6 "the daemon refuses to start with a BACKUP_TZ that does not load (exit 6)"
assert_contains "$ERR" "BACKUP_TZ" "... naming it"
run env BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off \
    CARIS_TEST_CLOCK=2026-03-01T00:00:00Z,2026-03-01T00:01:00Z "$CARIS_BIN" daemon
assert_rc 0 "a daemon with every schedule off runs"
assert_contains "$ERR" "0 of 3 schedules on" "its start says no schedule is on"
assert_contains "$ERR" "warning schedule: every schedule is off" "... and warns"

# --- a week on the test clock ----------------------------------------------------------
# 2026-03-01 is a Sunday: the monthly full run (01:00), the weekly full run (02:00) and the
# daily incremental run (03:00) all fall on it; then a daily run each day, and the weekly
# one again on Sunday 2026-03-08 at 02:00, before that day's daily run.
run env CARIS_TEST_CLOCK=2026-03-01T00:00:00Z,2026-03-08T12:00:00Z "$CARIS_BIN" daemon
assert_rc 0 "the daemon ran the week and stopped at the end of the test clock"
cp "$ERR_FILE" "$TEST_TMP/week.log"
assert_contains "$ERR" "the test clock reached its end" "its log says why it stopped"
expected="monthly full 2026-03-01T01:00:00.000Z
weekly full 2026-03-01T02:00:00.000Z
daily incremental 2026-03-01T03:00:00.000Z
daily incremental 2026-03-02T03:00:00.000Z
daily incremental 2026-03-03T03:00:00.000Z
daily incremental 2026-03-04T03:00:00.000Z
daily incremental 2026-03-05T03:00:00.000Z
daily incremental 2026-03-06T03:00:00.000Z
daily incremental 2026-03-07T03:00:00.000Z
weekly full 2026-03-08T02:00:00.000Z
daily incremental 2026-03-08T03:00:00.000Z"
assert_eq "$expected" "$(json_eval "$STATE" '"\n".join("%s %s %s" % (r["schedule"], r["type"], r["scheduledFor"]) for r in reversed(d["history"]))')" \
    "the runs, in order: monthly, weekly, daily on the Sunday, then daily, then weekly before daily"
assert_eq true "$(json_eval "$STATE" 'all(r["ok"] for r in d["history"])')" "every run succeeded"
assert_eq true "$(json_eval "$STATE" 'all([s["step"] for s in r["steps"]][:4] == ["backup", "backup", "verify", "verify"] for r in d["history"])')" \
    "every run backed up the database and the files, then verified both"
assert_eq "caris_full_2026-03-01T01-00-00 caris_full_2026-03-08T02-00-00" \
    "$(json_eval "$STATE" '" ".join(s["backupId"] for r in reversed(d["history"]) for s in r["steps"] if s["step"] == "drill" and s["ok"])')" \
    "a restore drill of the database backup on the first run and a week later (weekly cadence), both ok"
assert_eq true "$(json_eval "$STATE" 'all(any(s["step"] == "retention" for s in r["steps"]) for r in d["history"])')" \
    "every run applied the retention policy"
assert_eq 2 "$(json_eval "$STATE" 'sum(1 for r in d["history"] for s in r["steps"] if s["step"] == "prune")')" \
    "prune ran at its weekly cadence: on the first run and a week later"
# Retention (daily 7, weekly 4, monthly 12) over these backups, worked out by hand: the
# newest backup of each of the last 7 days that have one (03:00 of March 2..8), of each of
# the last 4 ISO weeks (March 8 03:00; the week of Feb 23 - Mar 1: March 1 03:00), of each
# month (March 8 03:00). The 01:00 and 02:00 backups of March 1 and 02:00 of March 8 go.
want_files="file_incremental_2026-03-01T03-00-00"
want_db="caris_incremental_2026-03-01T03-00-00"
for day in 02 03 04 05 06 07 08; do
    want_files="$want_files file_incremental_2026-03-${day}T03-00-00"
    want_db="$want_db caris_incremental_2026-03-${day}T03-00-00"
done
run cb --json list --type files
assert_eq "$want_files" "$(json_eval "$OUT_FILE" '" ".join(sorted(b["id"] for b in d))')" \
    "the file backups kept are exactly those the policy keeps"
run cb --json list --type database
assert_eq "$want_db" "$(json_eval "$OUT_FILE" '" ".join(sorted(b["id"] for b in d))')" \
    "the database backups kept are exactly those the policy keeps"
assert_eq true "$(json_eval "$OUT_FILE" 'all(b.get("lastVerification", {}).get("ok") for b in d)')" \
    "list shows each kept backup's verification (ok)"
run cb check --read-data
assert_rc 0 "check --read-data after a week of runs, forgets and prunes"

# --- schedule status without a daemon ----------------------------------------------------
run cb --json schedule status
assert_rc 0 "schedule status without a daemon"
assert_eq false "$(json_get "$OUT_FILE" '["running"]')" "status: not running"
assert_eq "2026-03-08T03:00:00.000Z" "$(json_get "$OUT_FILE" '["schedules"]["daily"]["lastRun"]["scheduledFor"]')" \
    "status: the daily schedule's last run"
assert_eq 3 "$(json_eval "$OUT_FILE" 'len(d["nextRuns"])')" "status: three next runs"
run cb schedule status
assert_contains "$OUT" "daemon: not running" "human status says the daemon is not running"
# times as all human output shows them (BACKUP_TZ, offset, seconds), not the JSON's UTC ms
assert_match 'daily \(incremental, [^)]*\): next run [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}' \
    "$OUT" "human status: the next run in the human time format"
assert_match 'last run +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}: ok' \
    "$OUT" "human status: the last run's time in the human time format"
assert_not_contains "$OUT" ".000Z" "human status: no JSON times"

# --- missed runs: the machine was off from March 8 12:00 to March 12 12:00 ------------------
run env CARIS_TEST_CLOCK=2026-03-12T12:00:00Z,2026-03-12T12:30:00Z "$CARIS_BIN" daemon
assert_rc 0 "a daemon started after four missed daily runs"
assert_eq "daily 2026-03-12T03:00:00.000Z True" \
    "$(json_eval "$STATE" '"\n".join("%s %s %s" % (r["schedule"], r["scheduledFor"], r.get("catchUp", False)) for r in d["history"] if r["scheduledFor"] > "2026-03-08T12")')" \
    "the missed daily schedule ran once, for its latest slot; the weekly and monthly missed nothing"

# --- a live daemon: control socket, run-now, a second daemon, SIGHUP, SIGTERM ----------------
cat >"$TEST_TMP/env" <<EOF
BACKUP_SCHEDULE_DAILY=0 3 * * *
EOF
start_daemon() {
    bg_start cb --env-file "$TEST_TMP/env" daemon
    DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
    # shellcheck disable=SC2317
    _daemon_up() { [[ -S $BACKUP_DIR/metadata/daemon.sock ]] && grep -q 'started' "$DAEMON_ERR"; }
    wait_until 60 _daemon_up || fail "the daemon did not start" "$(_tail "$DAEMON_ERR")"
}
# the database's password in PGPASSWORD (a secret the daemon takes out of its environment)
POSTGRES_URL=$(pg_url_nopw) PGPASSWORD=$CARIS_PG_PASSWORD start_daemon
assert_eq 600 "$(stat -c %a "$BACKUP_DIR/metadata/daemon.sock")" "the control socket is mode 0600"
assert_exit 9 cb daemon
assert_contains "$ERR" "a daemon already runs" "a second daemon is refused, clearly"
run cb --json schedule status
assert_eq true "$(json_get "$OUT_FILE" '["running"]')" "status through the socket: running"
assert_eq "$DAEMON" "$(json_get "$OUT_FILE" '["pid"]')" "status: the daemon's pid"
run cb --json run-now incremental --wait
assert_rc 0 "run-now --wait through the daemon"
assert_eq true "$(json_get "$OUT_FILE" '["ok"]')" "run-now: the run succeeded"
assert_eq manual "$(json_get "$OUT_FILE" '["schedule"]')" "run-now: a manual run"
assert_eq 2 "$(json_eval "$OUT_FILE" 'len(d["backupIds"])')" "run-now made a database and a file backup"
ids_now=$(list_ids)
for id in $(json_eval "$OUT_FILE" '" ".join(d["backupIds"])'); do
    assert_contains "$ids_now" "$id" "run-now's backup $id is listed"
done
# SIGHUP: the daily schedule is turned off
printf 'BACKUP_SCHEDULE_DAILY=off\n' >"$TEST_TMP/env"
kill -HUP "$DAEMON"
# shellcheck disable=SC2317
_reloaded() { grep -q 'configuration reloaded' "$DAEMON_ERR"; }
wait_until 30 _reloaded || fail "no reload" "$(_tail "$DAEMON_ERR")"
run cb --json schedule status
assert_eq "off" "$(json_get "$OUT_FILE" '["schedules"]["daily"]["cron"]')" "after SIGHUP the daily schedule is off"
# the reload kept the secrets of the daemon's environment (it lost them: the first load had
# taken them out of the environment, and database backups failed from then on; found by a review)
run cb --json run-now incremental --wait
assert_rc 0 "run-now after the reload"
assert_eq 2 "$(json_eval "$OUT_FILE" 'len(d["backupIds"])')" "after the reload: a database backup (PGPASSWORD kept) and a file backup"
# a broken configuration is refused and the old one kept
printf 'BACKUP_SCHEDULE_WEEKLY=0 25 * * *\n' >"$TEST_TMP/env"
kill -HUP "$DAEMON"
# shellcheck disable=SC2317
_refused() { grep -q 'configuration not reloaded' "$DAEMON_ERR"; }
wait_until 30 _refused || fail "a bad configuration was not refused" "$(_tail "$DAEMON_ERR")"
assert_contains "$(cat "$DAEMON_ERR")" "hour" "the refusal names the bad field"
run cb --json schedule status
assert_eq "0 2 * * 0" "$(json_get "$OUT_FILE" '["schedules"]["weekly"]["cron"]')" "the old weekly schedule stays"

# SIGTERM while the daemon's backup waits for a table lock: the backup is cancelled, nothing
# is committed, no lock is left, the daemon exits 0.
ids_before=$(list_ids)
pg_table_lock_take "$db" small
run cb --json run-now full
assert_rc 0 "run-now without --wait queues the run"
assert_eq true "$(json_get "$OUT_FILE" '["queued"]')" "run-now: queued"
# shellcheck disable=SC2317
_waiting() { (($(pg_lock_waiters "$db" small) >= 1)); }
wait_until 60 _waiting || fail "the daemon's backup did not reach the table lock" "$(_tail "$DAEMON_ERR")"
run cb --json schedule status
assert_eq full "$(json_get "$OUT_FILE" '["job"]["type"]')" "status shows the running job"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "SIGTERM: the daemon exits 0"
pg_table_lock_release
assert_contains "$(cat "$DAEMON_ERR")" "cancelled" "its log says the running backup was cancelled"
assert_eq "$ids_before" "$(list_ids)" "no backup was committed by the cancelled run"
assert_false "the socket is removed" test -e "$BACKUP_DIR/metadata/daemon.sock"
run cb --json check
assert_rc 0 "check after the cancelled run"
assert_eq 0 "$(json_eval "$OUT_FILE" 'len([w for w in d["warnings"] if "lock" in w["error"] or "temporary" in w["error"]])')" \
    "check: no stale lock, claim or temporary file"
run cb --json run-now incremental
assert_rc 0 "run-now without a daemon runs the job itself"
assert_eq true "$(json_get "$OUT_FILE" '["ok"]')" "run-now without a daemon: ok"

# kill -9 while the daemon's backup waits for a table lock: its pg_dump ends with it, and the
# next daemon records the run as interrupted (history, audit log) instead of losing it
printf 'BACKUP_SCHEDULE_DAILY=off\n' >"$TEST_TMP/env"
pg_table_lock_take "$db" small
start_daemon
assert_exit 0 cb run-now full
wait_until 60 _waiting || fail "the daemon's backup did not reach the table lock" "$(_tail "$DAEMON_ERR")"
# its pg_dump, polled for: the lock's waiter may be seen before the process list has it, and
# an empty pid made the check below wait out its deadline and fail (seen once under load)
# shellcheck disable=SC2317 # called through wait_until
_dump_child() { [[ -n $(find_child "$DAEMON" pg_dump) ]]; }
wait_until 30 _dump_child || fail "no pg_dump under the daemon" "$(ps -eo pid,ppid,stat,args | head -50)"
dump_pid=$(find_child "$DAEMON" pg_dump)
kill -9 "$DAEMON"
wait "$DAEMON"
# shellcheck disable=SC2317 # called through wait_until
dump_gone() { [[ ! -e /proc/$dump_pid ]] || [[ $(awk '{print $3}' "/proc/$dump_pid/stat" 2>/dev/null) == Z ]]; }
wait_until 60 dump_gone || fail "the killed daemon's pg_dump runs on" \
    "pid '$dump_pid': $(cat "/proc/$dump_pid/stat" 2>&1), wchan $(cat "/proc/$dump_pid/wchan" 2>&1)"
pg_table_lock_release
start_daemon
run cb --json schedule status
assert_eq true "$(json_eval "$OUT_FILE" 'd["history"][0].get("interrupted", False) and not d["history"][0]["ok"]')" \
    "the killed run is in the history, failed and interrupted"
assert_eq manual "$(json_get "$OUT_FILE" '["history"][0]["schedule"]')" "... as the manual run it was"
# (told on a thread of its own: its notification must not hold the start back)
# shellcheck disable=SC2317 # called through wait_until
_told() { grep -q "interrupted" "$DAEMON_ERR" && grep -q "interrupted" "$BACKUP_DIR/metadata/audit.log"; }
if wait_until 30 _told; then
    pass "the new daemon logs it and the audit log has it"
else
    fail "the interrupted run is not in the daemon's log and the audit log" "$(_tail "$DAEMON_ERR")"
fi
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_exit 0 cb unlock

# --- notifications ------------------------------------------------------------------------
NOTIFY=$LIB_DIR/notify_servers.py
mkdir -p "$TEST_TMP/smtp"
bg_start /usr/bin/python3 "$NOTIFY" smtp "$TEST_TMP/smtp"
# shellcheck disable=SC2317
_smtp_up() { [[ -s $TEST_TMP/smtp/port ]]; }
wait_until 30 _smtp_up || fail "the SMTP server did not start" "$(_tail "$BG_ERR")"
smtp_port=$(cat "$TEST_TMP/smtp/port")
# A run whose file backup fails (its directory is gone): the failure is mailed. Its name is
# not UTF-8 (a Latin-1 name in the configuration): the error is kept in the run's record (it
# was lost from the status, the history and run-now's answer: JSON refused the message).
run env BACKUP_SMTP_URL="smtp://127.0.0.1:$smtp_port" BACKUP_EMAIL_FROM=caris@example.org \
    BACKUP_EMAIL_RECIPIENTS=ops@example.org BACKUP_FILES_PATHS="$TEST_TMP/gone-caf"$'\xe9' \
    CARIS_TEST_CLOCK=2026-03-20T02:30:00Z,2026-03-20T04:00:00Z "$CARIS_BIN" daemon --json-log
assert_rc 0 "the daemon ran a failing run"
# (its JSON log lines with that name were "(null)")
assert_eq 0 "$(grep -cv '^{' "$ERR_FILE")" "--json-log: every line is a JSON object"
assert_contains "$ERR" 'daily incremental run: failed: cannot back up' "... the run's failure among them"
assert_contains "$ERR" "notification sent" "the daemon logged the notification"
# shellcheck disable=SC2317
_mail() { compgen -G "$TEST_TMP/smtp/msg-*.eml" >/dev/null; }
wait_until 30 _mail || fail "no mail received" "$(ls "$TEST_TMP/smtp")"
mail=$(cat "$TEST_TMP"/smtp/msg-*.eml)
assert_contains "$mail" "ops@example.org" "the mail went to the recipient"
assert_contains "$mail" "$TEST_TMP/gone" "the mail names what failed"
assert_not_contains "$mail" "$CARIS_PG_PASSWORD" "no database password in the mail"
assert_not_contains "$mail" "$BACKUP_ENCRYPTION_KEY" "no key in the mail"
assert_eq false "$(json_eval "$STATE" 'd["history"][0]["ok"]')" "the run is recorded as failed"
assert_contains "$(json_eval "$STATE" 'd["history"][0]["error"]["message"]')" 'gone-caf\xe9' \
    "its error is recorded, the byte that is not UTF-8 escaped"
assert_contains "$(json_eval "$STATE" '[s["error"]["message"] for s in d["history"][0]["steps"] if not s["ok"]][0]')" \
    'gone-caf\xe9' "... and so is its failed step's"
assert_eq true "$(json_eval "$STATE" 'any(s["step"] == "backup" and s["what"] == "database" and s["ok"] for s in d["history"][0]["steps"])')" \
    "the database backup of that run still succeeded"

# The SMTP server is down (nothing listens): the backups succeed, the failure is logged.
mkdir -p "$TEST_TMP/refuse"
bg_start /usr/bin/python3 "$NOTIFY" refuse "$TEST_TMP/refuse"
# shellcheck disable=SC2317
_refuse_up() { [[ -s $TEST_TMP/refuse/port ]]; }
wait_until 30 _refuse_up || fail "no refusing port" "$(_tail "$BG_ERR")"
run env BACKUP_SMTP_URL="smtp://127.0.0.1:$(cat "$TEST_TMP/refuse/port")" \
    BACKUP_EMAIL_FROM=caris@example.org BACKUP_EMAIL_RECIPIENTS=ops@example.org \
    BACKUP_NOTIFY_SUCCESS=true CARIS_NOTIFY_TIMEOUT_SECONDS=3 \
    CARIS_TEST_CLOCK=2026-03-21T02:30:00Z,2026-03-21T04:00:00Z "$CARIS_BIN" daemon
assert_rc 0 "the daemon ran with the SMTP server down"
assert_contains "$ERR" "notification not delivered" "the undelivered notification is logged"
assert_eq true "$(json_eval "$STATE" 'd["history"][0]["ok"]')" "the run itself succeeded"
assert_contains "$(list_ids)" "file_incremental_2026-03-21T03-00-00" "its backup is listed"

# A restore drill that cannot run is a failure, mailed as such: a local scratch cluster cannot
# start as root (initdb refuses), so as root the drill fails after good backups.
if [[ $(id -u) == 0 ]]; then
    rm -f "$TEST_TMP"/smtp/msg-*.eml
    run env BACKUP_SMTP_URL="smtp://127.0.0.1:$smtp_port" BACKUP_EMAIL_FROM=caris@example.org \
        BACKUP_EMAIL_RECIPIENTS=ops@example.org BACKUP_DRILL_SCRATCH=local BACKUP_DRILL_INTERVAL_DAYS=1 \
        CARIS_TEST_CLOCK=2026-03-22T02:30:00Z,2026-03-22T04:00:00Z "$CARIS_BIN" daemon
    assert_rc 0 "the daemon ran a run whose drill fails"
    assert_eq "false" "$(json_eval "$STATE" 'd["history"][0]["ok"]')" "the run is recorded as failed"
    assert_eq "drill:false" "$(json_eval "$STATE" '" ".join("%s:%s" % (s["step"], str(s["ok"]).lower()) for s in d["history"][0]["steps"] if not s["ok"])')" \
        "the drill is the step that failed"
    wait_until 30 _mail || fail "no mail received for the failed drill" "$(ls "$TEST_TMP/smtp")"
    mail=$(cat "$TEST_TMP"/smtp/msg-*.eml)
    assert_contains "$mail" "A restore drill (test restore) failed" "the mail says the restore drill failed"
    assert_contains "$mail" "as root" "the mail gives the reason"
    assert_contains "$(list_ids)" "caris_incremental_2026-03-22T03-00-00" "the run's database backup is listed all the same"
fi

# A later step that fails is mailed as that step's failure, not as a failed backup: a snapshot
# deleted by hand makes the run's prune refuse (what only that backup needed would go). Which
# backup's snapshot goes depends on the names (hashes): when it is the newest of a kind, a stale
# alert comes too (the newest left is 2 days old), so the prune's mail is picked by its subject.
rm -f "$TEST_TMP"/smtp/msg-*.eml
gone=$(find "$REPO/snapshots" -type f ! -name '.*' | sort | head -n 1)
rm -f "$gone"
run env BACKUP_SMTP_URL="smtp://127.0.0.1:$smtp_port" BACKUP_EMAIL_FROM=caris@example.org \
    BACKUP_EMAIL_RECIPIENTS=ops@example.org BACKUP_PRUNE_INTERVAL_DAYS=1 \
    CARIS_TEST_CLOCK=2026-03-23T02:30:00Z,2026-03-23T04:00:00Z "$CARIS_BIN" daemon
assert_rc 0 "the daemon ran a run whose prune refuses"
assert_eq "prune:false" "$(json_eval "$STATE" '" ".join("%s:%s" % (s["step"], str(s["ok"]).lower()) for s in d["history"][0]["steps"] if not s["ok"])')" \
    "the prune is the step that failed"
# shellcheck disable=SC2317
_prune_mail() { [[ -n $(mail_texts "prune FAILED") ]]; }
wait_until 30 _prune_mail || fail "no mail received for the failed prune" "$(ls "$TEST_TMP/smtp")"
mail=$(mail_texts "prune FAILED")
assert_contains "$mail" "CÁRIS Backup: prune FAILED on" "the subject names the failed step"
assert_contains "$mail" "The prune step of a backup run failed" "the mail says a step failed, not a backup"
assert_contains "$mail" "step-failed" "its event is step-failed"
assert_contains "$mail" "refusing to prune" "the mail gives prune's error"
assert_not_contains "$mail" "backup FAILED" "it does not call it a failed backup"
assert_contains "$(list_ids)" "caris_incremental_2026-03-23T03-00-00" "the run's backup is listed"

test_done

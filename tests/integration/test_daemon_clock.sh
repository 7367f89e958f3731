#!/usr/bin/env bash
# The daemon and a clock that was wrong (the test knob CARIS_TEST_CLOCK_OFFSET).
# - The stale alert, mailed to a real SMTP server: no successful backup within
#   BACKUP_ALERT_AFTER is mailed once per newest backup; a backup dated in the future (made
#   while the clock was ahead) is no recent success (taken for the newest, it kept the alert
#   silent until its date). The daemon runs on a test clock (CARIS_TEST_CLOCK).
# - A daemon running while its clock is set back by 400 days computes its next runs again
#   (they used to wait for the old time: no scheduled backup for 400 days); set forward by 5
#   days (as a machine suspended that long), it runs once, not once per slot passed over.
# - A run that hangs (a database backup waiting for a table lock) does not silence the stale
#   alert; BACKUP_RUN_TIMEOUT cancels it, and so does `schedule cancel`; a backup during which
#   the clock goes back has a duration that is not negative.
source "$(dirname "$0")/lib.sh"

export BACKUP_FILES_PATHS=$TEST_TMP/src BACKUP_TZ=UTC BACKUP_ALERT_AFTER=1d
export BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
unset POSTGRES_URL
mkdir -p "$TEST_TMP/src"
printf 'note\n' >"$TEST_TMP/src/note.txt"
assert_exit 0 cb --quiet init
assert_exit 0 cb --quiet backup files --time 2026-03-01T03:00:00Z
old=file_full_2026-03-01T03-00-00

smtp_start
smtp_url=$BACKUP_SMTP_URL
# shellcheck disable=SC2317
_mail() { compgen -G "$TEST_TMP/smtp/msg-*.eml" >/dev/null; }

# A backup made with the clock 400 days ahead: dated about a year after now, and after the
# daemon's test clock below.
run clock_ahead 400 cb --json backup files
assert_rc 0 "a backup with the clock 400 days ahead"
future=$(json_get "$OUT_FILE" '["id"]')

# Four days after the real backup: the alert is due, whatever the future-dated one says.
run env CARIS_TEST_CLOCK=2026-03-05T03:00:00Z,2026-03-05T04:00:00Z "$CARIS_BIN" daemon
assert_rc 0 "the daemon ran"
assert_contains "$ERR" "no successful files backup since $old" "the daemon logs the stale alert, naming the newest real backup"
wait_until 30 _mail || fail "no stale alert mailed" "$(ls "$TEST_TMP/smtp")"
mail=$(mail_texts)
assert_contains "$mail" "CÁRIS Backup: no files backup for 4 d 0 h on" "the subject says how long"
assert_contains "$mail" "is 4 d 0 h old, more than BACKUP_ALERT_AFTER (24 h 0 min)" "the mail says why"
assert_contains "$mail" "Last success: 2026-03-01T03:00:00.000Z" "the last success is the real backup"
assert_not_contains "$mail" "$future" "the future-dated backup is not called the newest"

# Once per newest backup: the next day's check sends nothing new.
rm -f "$TEST_TMP"/smtp/msg-*.eml
run env CARIS_TEST_CLOCK=2026-03-06T03:00:00Z,2026-03-06T04:00:00Z "$CARIS_BIN" daemon
assert_rc 0 "the daemon ran again"
assert_not_contains "$ERR" "no successful files backup since" "no second alert for the same newest backup"
assert_false "no second mail" _mail

# An alert that cannot be delivered (nothing listens on the SMTP port) is not recorded as sent:
# the next check sends it (it used to be marked sent first, and lost for good).
assert_exit 0 cb --quiet backup files --time 2026-03-07T03:00:00Z
newer=file_incremental_2026-03-07T03-00-00
run env BACKUP_SMTP_URL="smtp://127.0.0.1:$(free_port)" CARIS_NOTIFY_TIMEOUT_SECONDS=2 \
    CARIS_TEST_CLOCK=2026-03-09T03:00:00Z,2026-03-09T04:00:00Z "$CARIS_BIN" daemon
assert_rc 0 "the daemon ran with the SMTP server down"
assert_contains "$ERR" "stale alert was not delivered" "the undelivered alert is logged"
assert_ne "$newer" "$(json_eval "$BACKUP_DIR/metadata/scheduler.json" 'd.get("staleAlerted", {}).get("files", "")')" \
    "the undelivered alert is not recorded as sent"
run env CARIS_TEST_CLOCK=2026-03-09T05:00:00Z,2026-03-09T06:00:00Z "$CARIS_BIN" daemon
assert_rc 0 "the daemon ran again, the SMTP server up"
wait_until 30 _mail || fail "the alert was not sent once the server was up" "$(_tail "$ERR_FILE")"
assert_contains "$(mail_texts)" "Last success: 2026-03-07T03:00:00.000Z" "the alert sent then names the newer backup"
rm -f "$TEST_TMP"/smtp/msg-*.eml

# BACKUP_FILES_PATHS gone (a typo, an edit): no files backup runs any more, and the repository
# holds files backups: the stale alert still watches them (it stopped watching a kind whose
# variable was unset, so nothing ever said that backups had stopped)
assert_exit 0 cb --quiet backup files --time 2026-03-10T03:00:00Z
run env -u BACKUP_FILES_PATHS CARIS_TEST_CLOCK=2026-03-12T03:00:00Z,2026-03-12T04:00:00Z "$CARIS_BIN" daemon
assert_rc 0 "the daemon ran without BACKUP_FILES_PATHS"
assert_contains "$ERR" "no successful files backup since file_incremental_2026-03-10T03-00-00" \
    "the stale alert watches the files backups the repository holds"
wait_until 30 _mail || fail "no stale alert mailed" "$(_tail "$ERR_FILE")"
assert_not_contains "$ERR" "no successful database backup" "the database, never backed up here, is not watched"
rm -f "$TEST_TMP"/smtp/msg-*.eml

# A run whose prune is due, just over a day after the newest backup: no stale alert for the
# backup before the one it has just made (the prune spent the repository's handle, and the check
# after the run judged by the backups found before it)
assert_exit 0 cb --quiet backup files --time 2026-03-14T02:45:00Z
run env BACKUP_SCHEDULE_DAILY="0 3 * * *" CARIS_TEST_CLOCK=2026-03-15T02:30:00Z,2026-03-15T03:30:00Z \
    "$CARIS_BIN" daemon
assert_rc 0 "the daemon ran the daily run"
assert_contains "$ERR" "daily incremental run: succeeded" "the run succeeded"
assert_contains "$ERR" "step: prune: done" "... and pruned (which spent the repository's handle)"
assert_not_contains "$ERR" "no successful files backup since" "no stale alert after it"
assert_false "no alert mailed" _mail

# A stale alert that one channel took (the mail server down, Slack up) is sent: recorded as sent,
# and not sent again (it was tried again every hour, on every channel, the one that took it too)
mkdir -p "$TEST_TMP/hook"
bg_start /usr/bin/python3 "$LIB_DIR/notify_servers.py" http "$TEST_TMP/hook"
wait_until 30 test -s "$TEST_TMP/hook/port" || fail "the webhook server did not start" "$(_tail "$BG_ERR")"
run env BACKUP_SMTP_URL="smtp://127.0.0.1:$(free_port)" CARIS_NOTIFY_TIMEOUT_SECONDS=2 \
    BACKUP_SLACK_WEBHOOK_URL="http://127.0.0.1:$(cat "$TEST_TMP/hook/port")/services/T0/B0/hook" \
    CARIS_TEST_CLOCK=2026-03-17T03:00:00Z,2026-03-17T04:00:00Z "$CARIS_BIN" daemon
assert_rc 0 "the daemon ran, its mail server down and Slack up"
assert_contains "$ERR" "stale notification not delivered on every channel" "the failed channel is logged"
assert_eq 1 "$(find "$TEST_TMP/hook" -name 'msg-*.json' | wc -l)" "Slack took the alert"
assert_eq file_incremental_2026-03-15T03-00-00 \
    "$(json_eval "$BACKUP_DIR/metadata/scheduler.json" 'd.get("staleAlerted", {}).get("files", "")')" \
    "an alert a channel took is recorded as sent"
assert_not_contains "$ERR" "stale alert was not delivered" "... and not tried again"
rm "$BACKUP_DIR/metadata/scheduler.json" # (the runs below count the daemon's runs)

# --- the clock set back while the daemon runs ---------------------------------------------------
# The clock's offset is read from a file at every call (CARIS_TEST_CLOCK_OFFSET=PATH); the
# monotonic clock is left alone, as when an administrator sets the clock.
unset BACKUP_SMTP_URL BACKUP_EMAIL_FROM BACKUP_EMAIL_RECIPIENTS
export BACKUP_SCHEDULE_DAILY="0 3 * * *"
fake=$TEST_TMP/clock-offset
# set_clock OFFSET: the clock's offset from now ("+400d", "-1d"), for every process started as
# "${FAKED[@]}" CMD... (read at every call of the clock; an array, not a function, so that
# bg_start can exec it)
set_clock() { printf '%s\n' "$1" >"$fake.new" && mv "$fake.new" "$fake"; }
FAKED=(env CARIS_TEST_CLOCK_OFFSET="$fake")
# _runs_ended: the daemon ran at least one run and has none going or queued (its status in
# $TEST_TMP/status.json)
# shellcheck disable=SC2317
_runs_ended() {
    cb --json schedule status >"$TEST_TMP/status.json" 2>/dev/null &&
        [[ $(json_eval "$TEST_TMP/status.json" 'len(d["history"]) >= 1 and d["job"] is None and d["queue"] == 0') == true ]]
}
set_clock +400d
bg_start "${FAKED[@]}" "$CARIS_BIN" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
# next_daily: whole days from now to the daemon's next daily run (from `schedule status`, which
# asks the daemon over its control socket): 400 with the clock 400 days ahead (the run is at
# most a day after the fake now), 0 or 1 once it is set right
next_daily() {
    cb --json schedule status >"$TEST_TMP/status.json" 2>/dev/null || return 1
    json_eval "$TEST_TMP/status.json" 'd["running"] and d["schedules"]["daily"]["nextRun"] and "%d" % ((__import__("datetime").datetime.fromisoformat(d["schedules"]["daily"]["nextRun"].replace("Z", "+00:00")) - __import__("datetime").datetime.now(__import__("datetime").timezone.utc)).total_seconds() // 86400)'
}
# shellcheck disable=SC2317
_ahead() { [[ $(next_daily) == 40[01] ]]; }
wait_until 60 _ahead || fail "the daemon's next run is not 400 days ahead" "$(cat "$TEST_TMP/status.json" 2>/dev/null; _tail "$DAEMON_ERR")"
set_clock +0d
# shellcheck disable=SC2317
_today() { [[ $(next_daily) == [01] ]]; }
wait_until 30 _today || fail "the next run did not follow the clock back" "$(cat "$TEST_TMP/status.json" 2>/dev/null)"
assert_match '^[01]$' "$(next_daily)" "after the clock went back 400 days, the next daily run is within a day"
assert_contains "$(cat "$DAEMON_ERR")" "the clock went back from" "the daemon logs the clock change"

# Set forward by 5 days (as a machine suspended that long): the 5 daily slots passed over make
# one run, for the newest of them, not 5 runs one after the other.
before=$(cb --json list | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
set_clock +5d
wait_until 60 _runs_ended || fail "no run after the clock was set forward" "$(cat "$TEST_TMP/status.json" 2>/dev/null)"
assert_eq "1 True True" "$(json_eval "$TEST_TMP/status.json" '"%d %s %s" % (len(d["history"]), d["history"][0]["ok"], d["history"][0].get("catchUp"))')" \
    "one run, ok, marked as a catch-up"
assert_contains "$(cat "$DAEMON_ERR")" "5 daily runs," "the daemon logs how many slots were passed over"
assert_contains "$(cat "$DAEMON_ERR")" "running once, for" "and that it runs once"
assert_exit 0 cb --json list
assert_eq $((before + 1)) "$(json_eval "$OUT_FILE" 'len(d)')" "one new backup"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"

# --- a run that hangs does not silence the stale alert -------------------------------------------
# A database backup waits for a table lock that is not released; meanwhile the clock goes 2
# days forward: the stale alert is mailed while the run still waits (it used to wait for the
# daemon to be idle, that is for the run to end).
source "$LIB_DIR/pglib.sh"
pg_start
db=$CARIS_PG_DB
psql_db "$db" -c "CREATE TABLE small (id integer PRIMARY KEY, v text);
    INSERT INTO small SELECT i, 'v' || i FROM generate_series(1, 100) AS i" >/dev/null
POSTGRES_URL=$(pg_url)
export POSTGRES_URL BACKUP_SMTP_URL=$smtp_url
export BACKUP_EMAIL_FROM=caris@example.org BACKUP_EMAIL_RECIPIENTS=ops@example.org
unset BACKUP_FILES_PATHS
assert_exit 0 cb --quiet backup database --time "$(date -u -d '2 hours ago' +%Y-%m-%dT%H:%M:%SZ)"
rm -f "$TEST_TMP"/smtp/msg-*.eml
set_clock +0d
pg_table_lock_take "$db" small
# the stale check waits 5 s (CARIS_TEST_STALE_RUN_WAIT_MS; an hour by default), on the
# monotonic clock, for a run in progress before it counts the run as stuck
bg_start "${FAKED[@]}" CARIS_TEST_STALE_RUN_WAIT_MS=5000 "$CARIS_BIN" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
# shellcheck disable=SC2317
_up() { cb --json schedule status >"$TEST_TMP/status.json" 2>/dev/null && [[ $(json_get "$TEST_TMP/status.json" '["running"]') == true ]]; }
wait_until 60 _up || fail "the daemon did not start" "$(_tail "$DAEMON_ERR")"
asked=$SECONDS # the run starts after this
assert_exit 0 cb run-now incremental
# shellcheck disable=SC2317
_waiting() { (($(pg_lock_waiters "$db" small) >= 1)); }
wait_until 60 _waiting || fail "the backup does not wait for the table" "$(_tail "$DAEMON_ERR")"
assert_false "no mail while the newest backup is 2 hours old" _mail
set_clock +2d
jumped=$SECONDS
# shellcheck disable=SC2317
_alerted() { cb schedule status >/dev/null 2>&1; _mail; } # the request wakes the daemon's loop
wait_until 60 _alerted || fail "no stale alert while the run hangs" "$(_tail "$DAEMON_ERR")"
# the clock jumped 2 days, but the alert waited until the run, counted on the monotonic clock,
# had gone on for 5 s (it was taken as going for 2 days, and a clock set back as not going at
# all): at least 4 whole seconds of $SECONDS after it was asked for. Judged only when the clock
# jumped sooner than that (else an alert right after the jump would pass too).
if ((jumped - asked < 4)); then
    assert_cmp $((SECONDS - asked)) -ge 4 "the alert waited 5 s for the run, though the clock jumped 2 days"
else
    note "the clock jumped $((jumped - asked)) s after the run was asked for: the wait is not judged"
fi
mail=$(mail_texts)
assert_contains "$mail" "CÁRIS Backup: no database backup for 2 d 2 h on" "the stale alert names the database backup's age"
run cb --json schedule status
assert_eq incremental "$(json_get "$OUT_FILE" '["job"]["type"]')" "the run still waits"
pg_table_lock_release
wait_until 120 _runs_ended || fail "the runs did not end" "$(_tail "$DAEMON_ERR")"
assert_eq true "$(json_eval "$TEST_TMP/status.json" 'all(h["ok"] for h in d["history"])')" "the runs succeeded once the lock was released"
# the audit log's duration of the run counts on the monotonic clock: seconds, not 2 days
run cb --json audit
runs=$(json_eval "$OUT_FILE" '" ".join(str(l["durationMs"]) for l in d if l["operation"] == "backup run")')
note "the runs' durations in the audit log (ms): $runs"
assert_match '^[0-9]' "$runs" "the runs are in the audit log"
assert_eq "true" "$(json_eval "$OUT_FILE" 'str(all(0 <= l["durationMs"] < 600000 for l in d if l["operation"] == "backup run")).lower()')" \
    "they last seconds, not the 2 days the clock jumped"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"

# --- a run that goes on longer than BACKUP_RUN_TIMEOUT is cancelled -------------------------------
run env BACKUP_RUN_TIMEOUT=soon "$CARIS_BIN" daemon
assert_rc 6 "a bad BACKUP_RUN_TIMEOUT stops the daemon at start"
assert_contains "$ERR" "invalid BACKUP_RUN_TIMEOUT 'soon'" "the error names the variable"
# A run held by a table lock is cancelled once it has gone on for 3 s (CARIS_TEST_RUN_TIMEOUT_MS;
# BACKUP_RUN_TIMEOUT counts in hours) and says why in its failure mail; the next run then runs
# and succeeds (a hung run used to hold every later one back until the daemon was restarted).
rm -f "$TEST_TMP"/smtp/msg-*.eml
set_clock +0d
pg_table_lock_take "$db" small
bg_start "${FAKED[@]}" CARIS_TEST_RUN_TIMEOUT_MS=3000 "$CARIS_BIN" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
wait_until 60 _up || fail "the daemon did not start" "$(_tail "$DAEMON_ERR")"
h0=$(json_eval "$TEST_TMP/status.json" 'len(d["history"])') # the earlier daemons' runs
# (the run cannot end by itself while the lock is held: it is cancelled wherever it is at 3 s,
# waiting for the table or, on a slow machine, before). `run-now --wait` and then its failure
# mail are awaited without asking the daemon anything: a request wakes its loop, and the loop
# must wake by itself to cancel the run.
run cb run-now incremental --wait # returns when the run ended: here, when it was cancelled
assert_cmp "$RC" -ne 0 "run-now --wait: the run failed"
assert_contains "$OUT" "cancelled: the run went on longer than BACKUP_RUN_TIMEOUT (3 s)" "it prints why"
assert_contains "$OUT" "incremental run: FAILED" "and the run's result (it said the daemon refused the request)"
# shellcheck disable=SC2317
_failure_mail() { mail_texts FAILED | grep -q "BACKUP_RUN_TIMEOUT"; }
wait_until 30 _failure_mail || fail "no failure mail names the timeout" "$(ls "$TEST_TMP/smtp"; _tail "$DAEMON_ERR")"
# _history N: the daemon's history has N runs and none going or queued
# shellcheck disable=SC2317
_history() {
    cb --json schedule status >"$TEST_TMP/status.json" 2>/dev/null &&
        [[ $(json_eval "$TEST_TMP/status.json" 'len(d["history"]) >= '"$1"' and d["job"] is None and d["queue"] == 0') == true ]]
}
# cancelled_then_next WHY: the run (the h0+1-th) failed saying WHY; with the lock released,
# the next one asked for succeeds (the cancel was for that run only); the daemon then stops.
cancelled_then_next() {
    wait_until 60 _history $((h0 + 1)) || fail "the run was not cancelled" "$(_tail "$DAEMON_ERR")"
    assert_eq false "$(json_eval "$TEST_TMP/status.json" 'd["history"][0]["ok"]')" "the run failed"
    assert_contains "$(json_eval "$TEST_TMP/status.json" 'd["history"][0]["error"]["message"]')" \
        "$1" "it says why"
    pg_table_lock_release
    assert_exit 0 cb run-now incremental
    wait_until 120 _history $((h0 + 2)) || fail "the next run did not end" "$(_tail "$DAEMON_ERR")"
    assert_eq true "$(json_eval "$TEST_TMP/status.json" 'd["history"][0]["ok"]')" "the next run succeeded"
    kill -TERM "$DAEMON"
    wait "$DAEMON"
    assert_eq 0 "$?" "the daemon exits 0"
}
assert_contains "$(cat "$DAEMON_ERR")" "longer than BACKUP_RUN_TIMEOUT (3 s): cancelling it" "the daemon logs it"
cancelled_then_next "cancelled: the run went on longer than BACKUP_RUN_TIMEOUT (3 s)"

# --- schedule cancel: the running job, when asked ------------------------------------------------
run cb schedule cancel
assert_rc 7 "schedule cancel without a daemon: exit 7"
assert_contains "$ERR" "no daemon runs for" "it says so"
pg_table_lock_take "$db" small
bg_start "${FAKED[@]}" "$CARIS_BIN" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
wait_until 60 _up || fail "the daemon did not start" "$(_tail "$DAEMON_ERR")"
h0=$(json_eval "$TEST_TMP/status.json" 'len(d["history"])')
run cb schedule cancel
assert_rc 7 "schedule cancel while no job runs: exit 7"
assert_contains "$ERR" "the daemon runs no job now: nothing cancelled" "it says so"
assert_exit 0 cb run-now incremental
wait_until 60 _waiting || fail "the backup does not wait for the table" "$(_tail "$DAEMON_ERR")"
run cb --json schedule cancel
assert_rc 0 "schedule cancel of the run held by the lock"
assert_eq true "$(json_get "$OUT_FILE" '["cancelled"]')" "a job was asked to stop"
cancelled_then_next "cancelled by \`caris-backup schedule cancel\`"

# a cancel once the backup is made (held at its verify step by a test knob): the hint said the
# next run makes the backup this one did not, while it was made and only its verification is
# undone
bg_start env CARIS_TEST_HOLD_VERIFY=1 "${FAKED[@]}" "$CARIS_BIN" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
wait_until 60 _up || fail "the daemon did not start" "$(_tail "$DAEMON_ERR")"
h0=$(json_eval "$TEST_TMP/status.json" 'len(d["history"])')
rm -f "$TEST_TMP"/smtp/msg-*.eml
assert_exit 0 cb run-now incremental
# shellcheck disable=SC2317
_holding() { grep -q "holding the run before its verify step" "$DAEMON_ERR"; }
wait_until 60 _holding || fail "the run did not reach its verify step" "$(_tail "$DAEMON_ERR")"
assert_exit 0 cb schedule cancel
wait_until 60 _history $((h0 + 1)) || fail "the run was not cancelled" "$(_tail "$DAEMON_ERR")"
made=$(json_eval "$TEST_TMP/status.json" '[s["backupId"] for s in d["history"][0]["steps"] if s["step"] == "backup"][0]')
assert_contains "$(json_eval "$TEST_TMP/status.json" 'd["history"][0]["error"]["hint"]')" \
    "backup $made was made, but its verify did not finish" "the hint says the backup is there, unverified"
assert_contains "$(list_ids)" "$made" "and it is listed"
# its mail: the verify step failed, not "backup FAILED ... nothing of it was committed"
# shellcheck disable=SC2317
_verify_mail() { mail_texts "verify FAILED" | grep -q "was made, but its verify did not finish"; }
wait_until 30 _verify_mail
assert_eq 0 "$?" "the mail says the verify step failed, the backup being made" || mail_texts
assert_not_contains "$(mail_texts)" "Nothing of it was committed" "... and not that nothing was committed"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"

# --- the clock set back during a backup ----------------------------------------------------------
# A database backup held by the table lock while the clock goes back a day: its duration and its
# end time count on the monotonic clock (they came out a day negative, the end before the start).
set_clock +0d
pg_table_lock_take "$db" small
bg_start "${FAKED[@]}" "$CARIS_BIN" --json backup database
BACKUP=$BG_PID BACKUP_OUT=$BG_OUT
wait_until 60 _waiting || fail "the backup does not wait for the table"
set_clock -1d
pg_table_lock_release
wait "$BACKUP"
assert_eq 0 "$?" "the backup succeeded"
assert_eq "true true" "$(json_eval "$BACKUP_OUT" '"%s %s" % (str(0 <= d["durationMs"] < 600000).lower(), str(d["finished"] >= d["started"]).lower())')" \
    "its duration is not negative, and it ends after it starts"

test_done

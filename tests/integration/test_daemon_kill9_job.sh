#!/usr/bin/env bash
# A verify or restore job of the API that a daemon killed meanwhile (kill -9, a crash, the
# machine going down) never finished: the next daemon logs it and audits it as failed. It was
# dropped without a word (no log line, no audit line, the job's id unknown to the new daemon),
# while a restore cut short may have left its target half-written. (A backup run is told so
# already: test_daemon.sh.) The job is held at its first pack read (a lease, not timing). A job
# queued behind it (a run-now, an API job), which the killed daemon never ran, is logged and
# audited as failed by the next one: it vanished without a word before.
source "$(dirname "$0")/lib.sh"

export BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
export BACKUP_FILES_PATHS=$TEST_TMP/src BACKUP_API_LISTEN=127.0.0.1:0
mkdir -p "$TEST_TMP/src"
seeded_bytes 300000 kill9job >"$TEST_TMP/src/data.bin"
assert_exit 0 cb init
assert_exit 0 cb --json backup files
id=$(json_get "$OUT_FILE" '["id"]')
assert_exit 0 cb token add --label admin
ADMIN=$OUT
api_daemon_start

for kind in verify restore; do
    # shellcheck disable=SC2046 # one argument per pack
    hold_start $(list_packs)
    body="{\"backupId\": \"$id\", \"type\": \"files\"}"
    [[ $kind == restore ]] && body="{\"backupId\": \"$id\", \"type\": \"files\", \"target\": \"$TEST_TMP/target\", \"confirm\": \"$id\", \"dryRun\": false}"
    code=$(curl -s -o "$TEST_TMP/job.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $ADMIN" \
        -H 'Content-Type: application/json' --data "$body" "$BASE/api/admin/backup/$kind")
    assert_eq 202 "$code" "$kind job accepted" "$(cat "$TEST_TMP/job.json")"
    job=$(json_get "$TEST_TMP/job.json" '["jobId"]')
    wait_until 60 grep -q '^opened' "$HOLD_OUT" || fail "the $kind job did not reach a pack" "$(_tail "$DAEMON_ERR")"
    # a job queued behind it: scheduler.json lists it as soon as it is queued
    if [[ $kind == verify ]]; then
        assert_exit 0 cb run-now incremental
        queued_what="manual incremental run"
    else
        code=$(curl -s -o "$TEST_TMP/job2.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $ADMIN" \
            -H 'Content-Type: application/json' --data "{\"backupId\": \"$id\", \"type\": \"files\"}" \
            "$BASE/api/admin/backup/verify")
        assert_eq 202 "$code" "a verify job queued behind the restore" "$(cat "$TEST_TMP/job2.json")"
        queued_what="verify of $id"
    fi
    queued=$(json_eval "$BACKUP_DIR/metadata/scheduler.json" "' '.join(q['id'] for q in d.get('queued', []))")
    assert_match '^job-[0-9]+-[0-9]+$' "$queued" "scheduler.json lists the one queued job" \
        "$(cat "$BACKUP_DIR/metadata/scheduler.json")"
    [[ $kind == restore ]] && assert_eq "$(json_get "$TEST_TMP/job2.json" '["jobId"]')" "$queued" "... by the id the API gave"
    kill -9 "$DAEMON"
    wait "$DAEMON" 2>/dev/null
    hold_release
    api_daemon_start
    # shellcheck disable=SC2317 # called through wait_until
    _told() { # logged, then audited (by the same thread, just after)
        grep -q "job: $kind $job of $id started at .*: interrupted" "$DAEMON_ERR" &&
            grep -q "\"job\":\"$job\".*interrupted" "$BACKUP_DIR/metadata/audit.log"
    }
    assert_true "the next daemon logs the interrupted $kind job" wait_until 30 _told
    run cb --json audit
    assert_eq "failed interrupted" \
        "$(json_eval "$OUT_FILE" "' '.join([(e['result'], e['error'].split(':')[0]) for e in (d if isinstance(d, list) else d['entries']) if e.get('operation') == '$kind' and e.get('args', {}).get('job') == '$job'][-1])")" \
        "the audit log has the interrupted $kind job, failed"
    # the job queued behind it vanished without a word before: told by its id (before the API
    # listens: api_daemon_start waited for that), audited as failed, once
    assert_contains "$(cat "$DAEMON_ERR")" \
        "$queued_what $queued: dropped: the daemon that queued it stopped (killed, crashed or the machine went down) before it ran; ask for it again" \
        "the next daemon logs the queued job the killed one never ran"
    assert_eq "failed dropped" \
        "$(json_eval "$OUT_FILE" "' '.join(e['result'] + ' ' + e['error'].split(':')[0] for e in (d if isinstance(d, list) else d['entries']) if e.get('args', {}).get('job') == '$queued')")" \
        "the audit log has it, failed, once"
    assert_eq "" "$(json_eval "$BACKUP_DIR/metadata/scheduler.json" "' '.join(q['id'] for q in d.get('queued', []))")" \
        "it is told once: no longer listed as queued"
done
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon stops on SIGTERM"

test_done

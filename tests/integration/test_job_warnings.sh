#!/usr/bin/env bash
# A run whose backup could not read a file, or whose prune found backups needing data that is
# gone, completed "with warnings", and that counted as success: the daemon said "succeeded",
# sent nothing (successes are mailed only with BACKUP_NOTIFY_SUCCESS), and its retention forgot
# the older backup that held the file (prune then deleted its content: the last good copy);
# run-now exited 0. Now such a step is mailed (event step-warnings), no retention runs after a
# backup with warnings, and run-now exits 3 as `backup files` does.
source "$(dirname "$0")/lib.sh"
export BACKUP_TZ=UTC BACKUP_ALERT_AFTER=10w
export BACKUP_SCHEDULE_DAILY='0 */6 * * *' BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
unset POSTGRES_URL BACKUP_NOTIFY_SUCCESS
STATE=$BACKUP_DIR/metadata/scheduler.json
mkdir -p "$TEST_TMP/src"
printf 'note\n' >"$TEST_TMP/src/note.txt"
head -c 200000 /dev/urandom >"$TEST_TMP/src/patient.pdf"
export BACKUP_FILES_PATHS=$TEST_TMP/src
assert_exit 0 cb --quiet init
shim=$TEST_TMP/read_faults.so
cc -shared -fPIC -O2 -o "$shim" "$(dirname "$0")/read_faults.c" -ldl
smtp_start
# shellcheck disable=SC2317
_mail() { compgen -G "$TEST_TMP/smtp/msg-*.eml" >/dev/null; }

run env CARIS_TEST_CLOCK=2026-03-02T05:30:00Z,2026-03-02T06:30:00Z "$CARIS_BIN" daemon
assert_rc 0 "run 1: the daemon ran"
first=$(json_eval "$STATE" 'd["history"][0]["backupIds"][0]')
assert_eq "true false" "$(json_eval "$STATE" 'str(d["history"][0]["ok"]).lower() + " " + str(d["history"][0]["warnings"]).lower()')" \
    "run 1: ok, no warnings"

# run 2, the same day: patient.pdf changed and cannot be read (EIO)
touch "$TEST_TMP/src/patient.pdf"
rm -f "$TEST_TMP"/smtp/msg-*.eml
# (success notifications on: the run was mailed as a success before)
run env LD_PRELOAD="$shim" READ_FAULT=eio READ_FAULT_FILE=patient.pdf BACKUP_NOTIFY_SUCCESS=true \
    CARIS_TEST_CLOCK=2026-03-02T11:30:00Z,2026-03-02T12:30:00Z "$CARIS_BIN" daemon
assert_rc 0 "run 2: the daemon ran"
assert_eq "true true" "$(json_eval "$STATE" 'str(d["history"][0]["ok"]).lower() + " " + str(d["history"][0]["warnings"]).lower()')" \
    "run 2: ok, with warnings"
assert_eq "backup:warnings" "$(json_eval "$STATE" '" ".join("%s:%s" % (s["step"], "warnings" if s["warnings"] else "ok") for s in d["history"][0]["steps"] if s["step"] in ("backup", "retention"))')" \
    "run 2: the backup has warnings, and no retention ran after it"
assert_contains "$ERR" "retention: skipped: a backup of this run could not read every file" "the daemon's log says why"
assert_contains "$(json_eval <(cb --json list) '" ".join(b["id"] for b in d)')" "$first" "run 1's backup is still there"
wait_until 30 _mail || fail "no mail for the backup with warnings" "$(ls "$TEST_TMP/smtp")"
mail=$(mail_texts "WARNINGS")
assert_contains "$mail" "CÁRIS Backup: files incremental completed with WARNINGS on" "the subject says the backup has warnings"
assert_contains "$mail" "step-warnings" "its event is step-warnings"
assert_contains "$mail" "completed with 1 warning: 1 file or directory could not be read" "the mail says what"
assert_not_contains "$mail" "patient.pdf" "the mail does not name the file (a name can say whose record it is)"
assert_not_contains "$(mail_texts)" "backup succeeded" "it is not called a success"
# the older backup still restores the file
assert_exit 0 cb --quiet restore files "$first" --target "$TEST_TMP/r1"
assert_true "run 1's backup restores patient.pdf" cmp -s "$TEST_TMP/src/patient.pdf" "$TEST_TMP/r1$TEST_TMP/src/patient.pdf"

# run-now: exit 3, "ok, with WARNINGS", and --json says warnings
touch "$TEST_TMP/src/patient.pdf"
run env LD_PRELOAD="$shim" READ_FAULT=eio READ_FAULT_FILE=patient.pdf "$CARIS_BIN" run-now incremental
assert_rc 3 "run-now with an unreadable file exits 3"
assert_contains "$OUT" "ok, with warnings: backup" "the backup step says it has warnings"
assert_contains "$OUT" "incremental run: ok, with WARNINGS" "the run says so"
touch "$TEST_TMP/src/patient.pdf"
run env LD_PRELOAD="$shim" READ_FAULT=eio READ_FAULT_FILE=patient.pdf "$CARIS_BIN" --json run-now incremental
assert_rc 3 "run-now --json with an unreadable file exits 3"
assert_eq "true true" "$(json_eval "$OUT_FILE" 'str(d["ok"]).lower() + " " + str(d["warnings"]).lower()')" "--json: ok, warnings"
assert_exit 0 cb --quiet run-now incremental
assert_exit 0 cb --quiet restore files latest --target "$TEST_TMP/r2"
assert_true "a backup without the fault holds patient.pdf" cmp -s "$TEST_TMP/src/patient.pdf" "$TEST_TMP/r2$TEST_TMP/src/patient.pdf"

# a socket skipped (a warning that loses no file's content): exit 3, and retention runs; what
# the step says (the notification's text) names no file
(cd "$TEST_TMP/src" && python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("patient-jane-doe.sock")')
run cb --json run-now incremental
assert_rc 3 "run-now over a tree with a socket: warnings"
assert_contains "$(json_eval "$OUT_FILE" '" ".join(s["step"] for s in d["steps"])')" "retention" \
    "a skipped socket does not hold retention back"
assert_contains "$(json_eval "$OUT_FILE" 'd["steps"][0]["warning"]["message"]')" "no file's content lost" \
    "the step's warning says nothing was lost"
assert_not_contains "$(cat "$OUT_FILE")" "jane-doe" "the job's result names no file"
rm -f "$TEST_TMP/src/patient-jane-doe.sock"
# a directory the backup may not open (the walker warns, with EACCES): its files are left out,
# which holds retention back as an unreadable file does
mkdir "$TEST_TMP/src/records"
echo "intake" >"$TEST_TMP/src/records/intake.txt"
assert_exit 0 cb --quiet run-now incremental
run env LD_PRELOAD="$shim" READ_FAULT=eacces READ_FAULT_FILE=records "$CARIS_BIN" --json run-now incremental
assert_rc 3 "run-now with a directory it cannot open: warnings"
assert_not_contains "$(json_eval "$OUT_FILE" '" ".join(s["step"] for s in d["steps"])')" "retention" \
    "a directory left out holds retention back"
assert_contains "$(json_eval "$OUT_FILE" 'd["steps"][0]["warning"]["message"]')" "1 file or directory could not be read" \
    "the step says one was not read"

# a prune that finds backups needing blobs that are gone: mailed as warnings, saying what. A
# repository of its own: a backup of big.bin, one without it, big.bin's pack deleted (a backup
# of the first one's day that retention keeps still needs it)
export BACKUP_DIR=$TEST_TMP/b3
STATE=$BACKUP_DIR/metadata/scheduler.json
head -c 3000000 /dev/urandom >"$TEST_TMP/src/big.bin"
assert_exit 0 cb --quiet init
before=$(find "$BACKUP_DIR/repository/data" -mindepth 2 -type f | sort)
assert_exit 0 cb --quiet backup files --time 2026-03-02T03:00:00Z
after=$(find "$BACKUP_DIR/repository/data" -mindepth 2 -type f | sort)
rm -f "$TEST_TMP/src/big.bin"
assert_exit 0 cb --quiet backup files --time 2026-03-03T03:00:00Z
comm -13 <(echo "$before") <(echo "$after") | xargs -r ls -S | head -n 1 | xargs rm -f
rm -f "$TEST_TMP"/smtp/msg-*.eml
run env BACKUP_PRUNE_INTERVAL_DAYS=1 CARIS_TEST_CLOCK=2026-03-04T05:30:00Z,2026-03-04T06:30:00Z "$CARIS_BIN" daemon
assert_rc 0 "run 3: the daemon ran"
assert_contains "$(json_eval "$STATE" '" ".join("%s:%s" % (s["step"], "warnings" if s["warnings"] else "ok") for s in d["history"][0]["steps"])')" \
    "prune:warnings" "run 3: the prune has warnings"
# shellcheck disable=SC2317
_prune_mail() { [[ -n $(mail_texts "prune completed with WARNINGS") ]]; }
wait_until 30 _prune_mail || fail "no mail for the prune with warnings" "$(mail_texts | grep Backup:)"
mail=$(mail_texts "prune completed with WARNINGS")
assert_contains "$mail" "the repository no longer has" "the mail says backups need data that is gone"
assert_contains "$mail" "caris-backup check" "and what to run"
test_done

#!/usr/bin/env bash
# A dry run of part of a backup (restore database --dry-run --table/--schema) proves that part
# only. Its pass used to be recorded as a test restore of the whole backup: the newest record
# decides whether a backup is known damaged, so it cleared the damage a full test restore had
# found, `list` showed the backup ok, and retention kept it and forgot the intact one. Now a
# part's pass is not recorded (and says so); what a part finds wrong is.
#
# The damage is a row count that differs after the restore (CARIS_TEST_ROWS_SKEW, as a restore
# that lost rows would give; `verify` cannot see it, only a test restore): a byte flipped in a
# pack lands in a chunk the chunker's secret seed chose, which may hold any table's rows.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
export BACKUP_TZ=UTC
pg_start
db=$CARIS_PG_DB
psql_db "$db" -c "CREATE TABLE notes (id int PRIMARY KEY, body text);
  INSERT INTO notes SELECT i, md5(i::text) FROM generate_series(1,2000) i;
  CREATE TABLE small (id int PRIMARY KEY); INSERT INTO small VALUES (1),(2),(3);" >/dev/null
init_repo
db_backup_json "$TEST_TMP/a.json" --full --time 2026-11-01T10:00:00Z
A=$BACKUP_ID
assert_exit 0 cb --quiet test-restore "$A"
psql_db "$db" -c "INSERT INTO notes SELECT i, md5(i::text) FROM generate_series(2001,3000) i" >/dev/null
db_backup_json "$TEST_TMP/b.json" --full --time 2026-11-02T10:00:00Z
B=$BACKUP_ID
CARIS_TEST_ROWS_SKEW=public.notes assert_exit 4 cb --quiet test-restore "$B"
assert_exit 0 cb forget --keep-last 1 --dry-run
assert_contains "$OUT" "keep   $A" "B known damaged: the intact A is kept"
records=$(find "$REPO/records" -type f ! -path '*/audit-head/*' | sort)

# a part that restores cleanly: exit 0, says it is not recorded, records nothing
export CARIS_RESTORE_TARGET_URL
CARIS_RESTORE_TARGET_URL=$(pg_url)
assert_exit 0 cb restore database "$B" --dry-run --table public.small
assert_contains "$OUT" "the selected tables of backup $B restore cleanly" "the pass says it was a part"
assert_contains "$OUT" "not recorded as a test restore of the backup" "and that it is not recorded"
assert_exit 0 cb --json restore database "$B" --dry-run --schema public
assert_eq "True True False" "$(json_eval "$OUT_FILE" 'str(d["testRestore"]["ok"]) + " " + str(d["testRestore"]["partial"]) + " " + str(d["testRestore"]["recorded"])')" \
    "--json: testRestore ok, partial, not recorded (--schema)"
assert_eq "$records" "$(find "$REPO/records" -type f ! -path '*/audit-head/*' | sort)" \
    "the parts' passes added no test-restore record"
assert_eq false "$(json_eval <(cb --json list) "[b for b in d if b['id'] == '$B'][0]['lastTestRestore']['ok']")" \
    "list: B's last test restore is still the failed full one"
assert_exit 0 cb forget --keep-last 1 --dry-run
assert_contains "$OUT" "keep   $A" "after the parts' passes, A (intact) is still kept"
assert_not_contains "$OUT" "forget $A" "and not forgotten"

# a part that finds damage: recorded (it found that the backup does not restore as taken)
CARIS_TEST_ROWS_SKEW=public.small assert_exit 4 cb --json restore database "$B" --dry-run --table public.small
assert_eq "False True True" "$(json_eval "$OUT_FILE" 'str(d["testRestore"]["ok"]) + " " + str(d["testRestore"]["partial"]) + " " + str(d["testRestore"]["recorded"])')" \
    "a part that fails is recorded"
assert_eq "damage 4" "$(json_eval "$OUT_FILE" 'd["error"]["code"] + " " + str(d["error"]["exitCode"])')" \
    "its error is the object every failing command gives (code, exitCode), not a bare text"
# the whole backup, dry run: recorded as before
assert_exit 0 cb --json restore database "$A" --dry-run
assert_eq "True False True" "$(json_eval "$OUT_FILE" 'str(d["testRestore"]["ok"]) + " " + str(d["testRestore"]["partial"]) + " " + str(d["testRestore"]["recorded"])')" \
    "a dry run of the whole backup is recorded, as before"
test_done

#!/usr/bin/env bash
# A test restore that finds a database backup damaged (a chunk that does not read back) makes
# it "damaged" as a failed verification does: `list` says so, and retention keeps it without
# counting it, so that it takes no intact backup's place (it took the newest slot, and the
# intact backup before it was forgotten). A verification that passes after it clears it.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
init_repo
psql_db "$CARIS_PG_DB" -c "CREATE TABLE notes (id integer PRIMARY KEY, body text);
    INSERT INTO notes SELECT i, md5(i::text) FROM generate_series(1, 3000) AS i" >/dev/null ||
    fail "loading the table failed"
db_backup_json "$TEST_TMP/a.json" --full
assert_rc 0 "backup A"
A=$BACKUP_ID
assert_exit 0 cb --quiet test-restore "$A"
psql_db "$CARIS_PG_DB" -c "INSERT INTO notes SELECT i, md5((i * 7)::text) FROM generate_series(3001, 9000) AS i" >/dev/null
before=$(list_packs)
db_backup_json "$TEST_TMP/b.json" --full
assert_rc 0 "backup B"
B=$BACKUP_ID
# the larger of its new packs holds B's new chunks (the other, its metadata)
pack=$(comm -13 <(printf '%s\n' "$before") <(list_packs) | xargs -r ls -S | head -n 1)
assert_ne "" "$pack" "backup B wrote a pack"
flip_byte "$pack" 1000

run cb --json test-restore "$B"
assert_rc 4 "the test restore of B finds the damage (exit 4)"
run cb --json list
status_of() { json_eval "$OUT_FILE" '[b["status"] for b in d if b["id"] == "'"$1"'"][0]'; }
assert_eq damaged "$(status_of "$B")" "list: B is damaged, by its test restore"
assert_eq ok "$(status_of "$A")" "list: A is ok"

run cb --json forget --keep-last 1 --dry-run
assert_rc 0 "forget --keep-last 1 --dry-run"
keep_of() { json_eval "$OUT_FILE" '[",".join(x["reasons"]) if x["keep"] else "forget" for g in d["groups"] for x in g["backups"] if x["id"] == "'"$1"'"][0]'; }
assert_eq damaged "$(keep_of "$B")" "the backup whose test restore found damage is kept, counted by no rule"
assert_eq "last,newest" "$(keep_of "$A")" "the intact backup before it is kept by --keep-last 1 (it was forgotten)"
assert_json "$OUT_FILE" 'any("'"$B"'" in w and "test restore" in w for w in d["warnings"])' \
    "a warning names it and the test restore"

# the chunk stored again (a backup that meets a recorded bad blob stores it again), then a
# verification that passes: B is whole again
flip_byte "$pack" 1000
assert_exit 0 cb --quiet verify "$B"
run cb --json list
assert_eq ok "$(status_of "$B")" "list: a verification passing after the test restore clears it"
run cb --json forget --keep-last 1 --dry-run
assert_eq "last,newest" "$(keep_of "$B")" "... and retention counts it again"
test_done

#!/usr/bin/env bash
# Inspect commands on a database backup: ls lists its streams and tables with row counts,
# dump writes its pg_dump archive byte-exact (pg_restore reads it), show carries the
# test-restore history; ids: latest:database, and `latest` is ambiguous when the repository
# has both kinds; restore database and test-restore take prefixes and latest.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
src=$CARIS_PG_DB
psql_db "$src" -f "$PG_FIXTURES/rich.sql" >/dev/null || fail "loading fixtures/rich.sql failed"
assert_exit 0 cb init

db_backup_json "$TEST_TMP/db.json" --full
assert_rc 0 "database backup"
id=$BACKUP_ID
mkdir "$TEST_TMP/files" && printf 'x\n' >"$TEST_TMP/files/x"
backup_json "$TEST_TMP/f.json" --full "$TEST_TMP/files"
assert_rc 0 "file backup"
fid=$BACKUP_ID

# ---- ids ---------------------------------------------------------------------------------
assert_exit 2 cb show latest
assert_contains "$ERR" "'latest' is ambiguous" "latest with both kinds is ambiguous"
assert_contains "$ERR" "latest:database" "the hint names latest:database"
assert_exit 0 cb --json show latest:database
assert_eq "$id" "$(json_get "$OUT_FILE" '["id"]')" "latest:database"
assert_exit 0 cb --json show latest:files
assert_eq "$fid" "$(json_get "$OUT_FILE" '["id"]')" "latest:files"

# test-restore and restore database resolve `latest` to the database backup (the newest
# backup of all is the file backup)
run cb --json test-restore latest
assert_rc 0 "test-restore latest"
assert_eq "$id" "$(json_get "$OUT_FILE" '["backupId"]')" "test-restore latest: the database backup"
pg_createdb target
CARIS_RESTORE_TARGET_URL=$(pg_url target) run cb restore database "${id:0:16}" --table appointments --verify
assert_rc 0 "restore database by a prefix of the id"

# ---- show ---------------------------------------------------------------------------------
run cb --json show "$id"
assert_rc 0 "show --json of a database backup"
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d["testRestores"])')" "show: the test restore is in the history"
assert_eq true "$(json_get "$OUT_FILE" '["testRestores"][0]["ok"]')" "show: its result"
assert_exit 0 cb show "$id"
assert_match "PASSED" "$OUT" "show: human output has the test restore"
assert_contains "$OUT" "database  $src" "show: the database name"

# ---- ls: tables with row counts -------------------------------------------------------------
run cb --json ls "$id"
assert_rc 0 "ls --json of a database backup"
assert_eq '["database.dump", "globals.sql"]' "$(json_eval "$OUT_FILE" 'sorted(s["name"] for s in d["streams"])')" \
    "ls: the streams"
want=$(psql_db "$src" -c "SELECT count(*) FROM public.appointments")
assert_eq "$want" "$(json_eval "$OUT_FILE" '[t["rows"] for t in d["tables"] if t["name"] == "appointments"][0]')" \
    "ls: a table's row count"
assert_eq "$(json_get "$TEST_TMP/db.json" '["tables"]')" "$(json_get "$OUT_FILE" '["tables"]')" \
    "ls: every table of the backup's summary"
assert_exit 0 cb ls "$id"
assert_match "public\.appointments +$want" "$OUT" "ls: human output, table and rows"
assert_exit 2 cb ls "$id" some/path

# ---- dump: the archive, byte-exact ----------------------------------------------------------
run bash -c '"$0" dump "$1" database.dump >"$2"' "$CARIS_BIN" "$id" "$TEST_TMP/db.dump"
assert_rc 0 "dump database.dump"
assert_eq "$(json_get "$TEST_TMP/db.json" '["dumpSha256"]')" "$(sha256sum <"$TEST_TMP/db.dump" | cut -c1-64)" \
    "the dumped archive has the backup's SHA-256"
assert_true "pg_restore reads the dumped archive" "$CARIS_PG_BIN/pg_restore" -l "$TEST_TMP/db.dump"
assert_exit 0 cb dump "$id" globals.sql
assert_contains "$OUT" "CREATE ROLE" "dump globals.sql"
assert_exit 7 cb dump "$id" nope.sql

test_done

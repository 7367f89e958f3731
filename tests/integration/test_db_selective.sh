#!/usr/bin/env bash
# Selective restore: --table restores one table (and nothing else) into an empty database,
# row for row; --schema restores one schema's objects; a table that is not in the backup is
# an error, not a silent empty restore.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
src=$CARIS_PG_DB
psql_db "$src" -f "$PG_FIXTURES/rich.sql" >/dev/null || fail "loading fixtures/rich.sql failed"
pg_sum "$src" "$TEST_TMP/src.sum"

init_repo
db_backup_json "$TEST_TMP/full.json" --full
assert_rc 0 "full backup"
id=$BACKUP_ID

# --- one table ------------------------------------------------------------------------------
pg_createdb one_table
CARIS_RESTORE_TARGET_URL=$(pg_url one_table) run cb restore database "$id" --table appointments --verify
assert_rc 0 "restore --table appointments --verify into an empty database"
assert_eq public.appointments "$(pg_user_tables one_table)" "only that table exists"
pg_sum one_table "$TEST_TMP/one_table.sum"
grep '^table public\.appointments ' "$TEST_TMP/src.sum" >"$TEST_TMP/want.tbl"
grep '^table ' "$TEST_TMP/one_table.sum" >"$TEST_TMP/got.tbl"
assert_sum_equal "$TEST_TMP/want.tbl" "$TEST_TMP/got.tbl" "the restored table has the same rows"
assert_eq 0 "$(psql_db one_table -c 'SELECT count(*) FROM pg_largeobject_metadata')" \
    "no large objects came with the table"

# --- one schema ------------------------------------------------------------------------------
# (pg_restore -n does not create the schema itself: the restore must, into an empty database)
pg_createdb one_schema
CARIS_RESTORE_TARGET_URL=$(pg_url one_schema) run cb restore database "$id" --schema audit
assert_rc 0 "restore --schema audit into an empty database"
assert_eq "$(printf '%s\n' audit.events audit.events_2025 audit.events_2026)" "$(pg_user_tables one_schema)" \
    "only the schema's tables exist"
pg_sum one_schema "$TEST_TMP/one_schema.sum"
grep -E '^(table|sequence|function|trigger|partition|partitioned|index|constraint) .*audit\.' "$TEST_TMP/src.sum" |
    grep -v 'clinical\.' >"$TEST_TMP/want.audit"
grep -E '^(table|sequence|function|trigger|partition|partitioned|index|constraint) .*audit\.' "$TEST_TMP/one_schema.sum" |
    grep -v 'clinical\.' >"$TEST_TMP/got.audit"
assert_sum_equal "$TEST_TMP/want.audit" "$TEST_TMP/got.audit" \
    "the schema's tables, sequence, function and partitions match"

# --- a table that is not in the backup -------------------------------------------------------
pg_createdb no_table
CARIS_RESTORE_TARGET_URL=$(pg_url no_table) run cb restore database "$id" --table no_such_table
assert_fails "restore --table of a table the backup does not have"
assert_contains "$OUT$ERR" "no_such_table" "the error names the table"
assert_eq "" "$(pg_user_tables no_table)" "nothing was restored"

# --- pg_restore fails after the restore made a schema for it: in one transaction (no --jobs)
# nothing stays, the schema made for it included, and the error says so. An event trigger in
# the target refuses every CREATE TABLE; CREATE SCHEMA goes through.
pg_createdb blocked
psql_db blocked -c "CREATE FUNCTION no_tables() RETURNS event_trigger LANGUAGE plpgsql AS
    \$\$ BEGIN RAISE EXCEPTION 'no new tables here'; END \$\$" >/dev/null
psql_db blocked -c "CREATE EVENT TRIGGER no_tables ON ddl_command_start WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION no_tables()" >/dev/null
CARIS_RESTORE_TARGET_URL=$(pg_url blocked) run cb restore database "$id" --schema audit
assert_fails "a restore that pg_restore cannot apply fails"
assert_contains "$ERR" "was not changed" "it says the database was not changed"
assert_not_contains "$ERR" "partially restored" "it does not say partially restored"
assert_eq 0 "$(psql_db blocked -c "SELECT count(*) FROM pg_namespace WHERE nspname = 'audit'")" \
    "the schema made for the restore is dropped again"
assert_eq "" "$(pg_user_tables blocked)" "no table was restored"

test_done

#!/usr/bin/env bash
# A restore is safe by default: into a database that already has tables it is refused
# without --clean (the target is left exactly as it was); --dry-run changes nothing; --clean
# replaces the objects; a --target-url holding a password is refused (exit 2) without
# echoing it; a missing target database (without --create) is a database error (exit 10);
# --create of a database that exists is refused; an unknown backup id is exit 7.
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

# The target: the same schema with other data (rows deleted and changed, a sequence moved,
# a view dropped).
pg_load_rich tgt || fail "loading the target failed"
psql_db tgt -c "DELETE FROM clinical.sessions WHERE id % 10 = 0;
    UPDATE clinical.\"Pacientes\" SET tags = '{alterado}' WHERE id < 100;
    SELECT setval('public.not_called_seq', 7);
    DROP VIEW public.upcoming;" >/dev/null || fail "changing the target failed"
pg_sum tgt "$TEST_TMP/tgt-before.sum"
assert_false "the target differs from the backup" cmp -s "$TEST_TMP/src.sum" "$TEST_TMP/tgt-before.sum"
tgt_url=$(pg_url tgt)

# --- refused without --clean -------------------------------------------------------------------
CARIS_RESTORE_TARGET_URL=$tgt_url run cb restore database "$id"
assert_fails "restore into a database with tables, without --clean, is refused"
assert_contains "$OUT$ERR" "--clean" "the refusal points to --clean"
pg_sum tgt "$TEST_TMP/tgt-refused.sum"
assert_sum_equal "$TEST_TMP/tgt-before.sum" "$TEST_TMP/tgt-refused.sum" "the refused restore left the target unchanged"

# --- a target name PostgreSQL would cut (over 63 bytes): refused before anything --------------
long=$(printf 'c%.0s' {1..70})
CARIS_RESTORE_TARGET_URL=$(pg_url "$long") run cb restore database "$id" --create
assert_rc 2 "restore --create into a 70-byte database name: a usage error"
assert_contains "$ERR" "PostgreSQL would cut it to 63" "... saying why"
assert_eq 0 "$(psql_db postgres -Atc "SELECT count(*) FROM pg_database WHERE datname LIKE 'ccc%'")" \
    "no database was made (under the cut name either)"

# --- --dry-run ---------------------------------------------------------------------------------
CARIS_RESTORE_TARGET_URL=$tgt_url run cb restore database "$id" --clean --dry-run
assert_rc 0 "restore --clean --dry-run"
assert_contains "$OUT$ERR" "tgt" "the dry run prints the plan, naming the target"
pg_sum tgt "$TEST_TMP/tgt-dry.sum"
assert_sum_equal "$TEST_TMP/tgt-before.sum" "$TEST_TMP/tgt-dry.sum" "--dry-run left the target unchanged"
CARIS_RESTORE_TARGET_URL=$tgt_url run cb --json restore database "$id" --clean --dry-run
assert_rc 0 "restore --json --clean --dry-run"
assert_eq true "$(json_get "$OUT_FILE" '["dryRun"]')" "restore --json --dry-run: dryRun true"
assert_eq true "$(json_eval "$OUT_FILE" 'len(d["plan"]) > 0')" "restore --json --dry-run: a plan"
assert_eq true "$(json_get "$OUT_FILE" '["ok"]')" "restore --json --dry-run: ok (the backup would restore)"
pg_sum tgt "$TEST_TMP/tgt-dry2.sum"
assert_sum_equal "$TEST_TMP/tgt-before.sum" "$TEST_TMP/tgt-dry2.sum" "--json --dry-run left the target unchanged"
assert_eq "" "$(psql_db postgres -c "SELECT string_agg(datname, ' ') FROM pg_database WHERE datname LIKE 'caris_test_%'")" \
    "the dry run dropped its scratch database"
# a dry run into a database that does not exist creates nothing
CARIS_RESTORE_TARGET_URL=$(pg_url dry_new) run cb restore database "$id" --create --dry-run
assert_rc 0 "restore --create --dry-run"
# pg_restore applies the database's own settings, ACL and comment only with its --create (a
# REVOKE CONNECT FROM PUBLIC lost in silence opens the new database to every role): applied
# after it (test_db_restore_settings)
assert_contains "$ERR" "then apply the settings of database $src itself" "the plan says --create applies the database's own settings"
assert_contains "$ERR" "REVOKE CONNECT FROM PUBLIC" "... naming REVOKE CONNECT"
assert_false "--create --dry-run created no database" pg_db_exists dry_new

# --- --clean -------------------------------------------------------------------------------------
CARIS_RESTORE_TARGET_URL=$tgt_url run cb restore database "$id" --clean --verify
assert_rc 0 "restore --clean --verify into the non-empty target"
pg_sum tgt "$TEST_TMP/tgt-clean.sum"
assert_sum_equal "$TEST_TMP/src.sum" "$TEST_TMP/tgt-clean.sum" "after --clean the target equals the backup"

# --- --target-url with a password --------------------------------------------------------------
run cb restore database "$id" --create --target-url "$(pg_url with_pw)"
assert_rc 2 "--target-url with a password is refused"
assert_contains "$ERR" "CARIS_RESTORE_TARGET_URL" "the hint names CARIS_RESTORE_TARGET_URL"
assert_not_contains "$OUT$ERR" "$CARIS_PG_PASSWORD" "the refusal does not echo the password"
assert_false "nothing was created" pg_db_exists with_pw

# --- missing target database, existing database with --create, unknown id ----------------------
CARIS_RESTORE_TARGET_URL=$(pg_url no_such_db) run cb restore database "$id"
assert_rc 10 "restore into a database that does not exist (no --create)"
assert_contains "$OUT$ERR" "no_such_db" "the error names the database"
assert_contains "$ERR" "add --create to create it" "the hint says --create"
# a role that does not exist "does not exist" too, in a message naming the database: not a
# missing database (the hint said to add --create)
CARIS_RESTORE_TARGET_URL="postgresql://ghost_role:pw@127.0.0.1:$CARIS_PG_PORT/$CARIS_PG_DB" \
    run cb restore database "$id"
assert_rc 10 "restore as a role that does not exist"
assert_not_contains "$ERR" "add --create" "the hint does not say --create"
pg_sum tgt "$TEST_TMP/tgt-before-create.sum"
CARIS_RESTORE_TARGET_URL=$tgt_url run cb restore database "$id" --create
assert_fails "--create of a database that exists is refused"
pg_sum tgt "$TEST_TMP/tgt-create.sum"
assert_sum_equal "$TEST_TMP/tgt-before-create.sum" "$TEST_TMP/tgt-create.sum" "the refused --create left the database unchanged"
CARIS_RESTORE_TARGET_URL=$(pg_url x) run cb restore database caris_full_2000-01-01T00-00-00 --create
assert_rc 7 "restore of an unknown backup id"

assert_not_contains "$(cat "$ALL_OUTPUT")" "$CARIS_PG_PASSWORD" "the password appears in no output"

test_done

#!/usr/bin/env bash
# A database backup into an S3 repository (s3rver on loopback) and back: full and
# incremental backups of the rich fixture, restore --create --verify equal object by object
# and row by row, verify, test-restore and its record in the repository.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
source "$(dirname "$0")/s3lib.sh"
trap '_lib_on_exit; _pg_on_exit; _s3_on_exit' EXIT

s3_start bkt
export BACKUP_REPOSITORY=s3:$S3_ENDPOINT/bkt/db
pg_start
src=$CARIS_PG_DB
psql_db "$src" -f "$PG_FIXTURES/rich.sql" >/dev/null || fail "loading fixtures/rich.sql failed"
pg_sum "$src" "$TEST_TMP/src.sum" || fail "dbsum of the source failed"
init_repo

db_backup_json "$TEST_TMP/full.json" --full
assert_rc 0 "backup database --full into S3"
full=$BACKUP_ID
assert_match '^caris_full_' "$full" "full backup id"
psql_db "$src" -c "INSERT INTO clinical.sessions SELECT * FROM clinical.sessions LIMIT 10" >/dev/null 2>&1 || true
pg_sum "$src" "$TEST_TMP/src2.sum" || fail "dbsum of the changed source failed"
db_backup_json "$TEST_TMP/incr.json" --incremental
assert_rc 0 "backup database --incremental into S3"
incr=$BACKUP_ID
assert_match '^caris_incremental_' "$incr" "incremental backup id"

CARIS_RESTORE_TARGET_URL=$(pg_url rt_full) run cb restore database "$full" --create --verify
assert_rc 0 "restore --create --verify of the full backup from S3"
pg_sum rt_full "$TEST_TMP/rt_full.sum"
assert_sum_equal "$TEST_TMP/src.sum" "$TEST_TMP/rt_full.sum" "restored full backup equals the source"
CARIS_RESTORE_TARGET_URL=$(pg_url rt_incr) run cb restore database "$incr" --create --verify
assert_rc 0 "restore --create --verify of the incremental backup from S3"
pg_sum rt_incr "$TEST_TMP/rt_incr.sum"
assert_sum_equal "$TEST_TMP/src2.sum" "$TEST_TMP/rt_incr.sum" "restored incremental backup equals the changed source"

assert_exit 0 cb verify --all
assert_exit 0 cb check --read-data
run cb --json test-restore "$full"
assert_rc 0 "test-restore from S3"
run cb --json list
assert_rc 0 "list"
assert_eq true "$(json_eval "$OUT_FILE" "any(b['id'] == '$full' and b.get('lastTestRestore') for b in d)")" \
    "list shows the test-restore result recorded in the S3 repository"
assert_no_password_in "$ALL_OUTPUT" "the database password is in no output"

test_done

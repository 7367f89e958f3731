#!/usr/bin/env bash
# A physical base backup of a cluster holding empty files: an empty table in a tablespace of
# its own (that tablespace's archive then holds one relation file, of 0 bytes) and an empty
# file in the data directory (a standby's standby.signal is one). Each used to hang the
# backup for good (an empty buffer stored as if it were a descriptor, polled forever); the
# backup must finish, and its restore must bring the empty files back and recover.
# shellcheck disable=SC2154 # envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
pg_start
pitr_setup
pitr_stop_started_at_exit
pitr_archive_on "$CARIS_BIN --quiet --env-file $envf wal push %p"
ts=$TEST_TMP/ts_empty
mkdir -p "$ts"
[[ $(id -u) == 0 ]] && chown "$CARIS_PG_OS_USER:" "$ts"
psql_db "$CARIS_PG_DB" -c "CREATE TABLESPACE ts_empty LOCATION '$ts'" \
    -c "CREATE TABLE e (i int) TABLESPACE ts_empty" \
    -c "CREATE TABLE k (i int)" -c "INSERT INTO k SELECT generate_series(1, 1000)" ||
    fail "create the tablespace and tables"
as_pg touch "$CARIS_PG_SOCKET/caris_test_empty_file"

# a hang is a failure here, not the suite's 15-minute timeout
backup() { as_pg timeout -k 10 120 "$CARIS_BIN" "$@"; }
run backup --json backup database --physical
assert_rc 0 "a full physical backup with an empty relation file and an empty file finishes"
id1=$(json_get "$OUT_FILE" '["id"]')
run backup --json backup database --physical --incremental
assert_rc 0 "an incremental one too"
id2=$(json_get "$OUT_FILE" '["id"]')

q() { psql_db "${2:-$CARIS_PG_DB}" -c "$1"; }
pitr_archive_all q
for id in "$id1" "$id2"; do
    [[ -n $id ]] || continue
    pitr_restore_start "r-$id" "$id"
    assert_rc 0 "restore --physical --start of $id"
    assert_true "the empty file is restored, empty" test -f "$R/r-$id/caris_test_empty_file" -a ! -s "$R/r-$id/caris_test_empty_file"
    rq() { as_pg env PGPASSWORD="$CARIS_PG_PASSWORD" "$CARIS_PG_BIN/psql" -h "$R/r-$id" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" -Atc "$1"; }
    assert_eq "0 1000" "$(rq "SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM k)" | tr '|' ' ')" \
        "the restored cluster has the empty table and the rows of $id"
done
test_done

#!/usr/bin/env bash
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
pg_start
pitr_setup
pitr_stop_started_at_exit
pitr_archive_on "$CARIS_BIN --quiet --env-file $envf wal push %p"
psql_db "$CARIS_PG_DB" -c "CREATE TABLE k (i int)" -c "INSERT INTO k SELECT generate_series(1, 1000)"
run cb --json backup database --physical
id1=$(json_get "$OUT_FILE" '["id"]')
q() { psql_db "${2:-$CARIS_PG_DB}" -c "$1"; }
psql_db "$CARIS_PG_DB" -c "INSERT INTO k SELECT generate_series(1, 10)"
pitr_archive_all q
probe() { echo "=== $*"; run cb --env-file "$envf" restore database --physical --pgdata "$R/p$RANDOM" "$@"; echo "rc=$RC"; echo "$OUT$ERR" | tail -4; }
probe --timeline 7
probe --timeline 7 "$id1"
probe --to-time "2099-01-01T00:00:00Z"
probe --to-time "2026-12-04 21:00:00+05:30"
probe --to-time "now"
probe --to-time "2026-13-01T00:00:00Z"
probe --to-lsn 0/1
probe --to-lsn FFFFFFFF/FFFFFFFF
pitr_restore_start fut --to-time "2099-01-01T00:00:00Z"
echo "fut rc=$RC"; echo "$OUT$ERR" | tail -6
pitr_restore_start lsnfut --to-lsn FFFFFFFF/0 "$id1"
echo "lsnfut rc=$RC"; echo "$OUT$ERR" | tail -6
pitr_restore_start xidfut --to-xid 99999999 "$id1"
echo "xidfut rc=$RC"; echo "$OUT$ERR" | tail -6
pitr_restore_start namefut --to-name nosuchpoint "$id1"
echo "namefut rc=$RC"; echo "$OUT$ERR" | tail -6
test_done

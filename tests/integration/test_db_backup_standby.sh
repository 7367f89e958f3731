#!/usr/bin/env bash
# A logical backup of a hot standby: pg_dump leaves out the data of unlogged tables there
# (they are empty on a standby, and reading them is an error), so the backup records 0 rows
# for them instead of counting them on the server, which failed every backup of a standby
# holding one ("cannot access temporary or unlogged relations during recovery").
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
db=$CARIS_PG_DB
psql_db "$db" -c "CREATE TABLE kept (id integer PRIMARY KEY);
    INSERT INTO kept SELECT generate_series(1, 1000);
    CREATE UNLOGGED TABLE scratch (id integer);
    INSERT INTO scratch SELECT generate_series(1, 500)" >/dev/null || fail "creating the tables failed"
pg_allow_replication
psql_db postgres -c "SELECT pg_reload_conf()" >/dev/null

# the standby: a base backup of the server, started in standby mode on its own port
chmod 0755 "$TEST_TMP"
sb=$TEST_TMP/standby
mkdir -m 0700 "$sb"
[[ $(id -u) != 0 ]] || chown "$CARIS_PG_OS_USER:" "$sb"
as_pg env PGPASSWORD="$CARIS_PG_PASSWORD" "$CARIS_PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$CARIS_PG_PORT" \
    -U "$CARIS_PG_USER" -D "$sb" -R -X stream -c fast >"$TEST_TMP/basebackup.out" 2>&1 ||
    fail "pg_basebackup failed" "$(_tail "$TEST_TMP/basebackup.out")"
sb_port=$(free_port)
_sb_stop() { as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$sb" -m immediate -w -s >/dev/null 2>&1; }
at_exit '_sb_stop; _lib_on_exit; _pg_on_exit'
as_pg "$CARIS_PG_BIN/pg_ctl" start -D "$sb" -w -t 60 -l "$sb/server.log" \
    -o "-p $sb_port -k $sb -c listen_addresses=127.0.0.1" >/dev/null ||
    fail "the standby did not start" "$(_tail "$sb/server.log")"
sb_url="postgresql://$CARIS_PG_USER:$CARIS_PG_PASSWORD@127.0.0.1:$sb_port/$db"
# shellcheck disable=SC2317
replayed() { [[ $("$CARIS_PG_BIN/psql" -X -At "$sb_url" -c "SELECT pg_is_in_recovery() AND
    (SELECT count(*) FROM kept) = 1000" 2>/dev/null) == t ]]; }
wait_until 60 replayed || fail "the standby did not replay the tables" "$(_tail "$sb/server.log")"

init_repo
POSTGRES_URL=$sb_url db_backup_json "$TEST_TMP/b.json" --full
assert_rc 0 "a backup of a hot standby with an unlogged table"
tables=$(python3 -c 'import json, sys
for t in json.load(open(sys.argv[1])).get("tables", []):
    print(t["name"], t.get("rows"))' "$TEST_TMP/b.json")
assert_contains "$tables" "kept 1000" "the logged table's rows are recorded"
assert_contains "$tables" "scratch 0" "the unlogged table is recorded with the rows the dump holds: none"
run cb test-restore "$BACKUP_ID"
assert_rc 0 "test-restore of the standby's backup (row counts as recorded)"
test_done

#!/usr/bin/env bash
# A database backup made as an application's own role, as hardened servers set one up:
# - the role may connect to its database only (CONNECT on postgres and template1 revoked
#   from PUBLIC): the cluster's globals (roles, tablespaces) are still saved, through the
#   backup's database, with no warning;
# - the role carries session limits for the application (lock_timeout, statement_timeout,
#   idle_in_transaction_session_timeout): the backup's own session lifts them as pg_dump
#   does for its, so a backup that pg_dump would complete does not fail on them;
# - the database's owner set its search_path to a schema of theirs before pg_catalog, with a
#   count(*) of their own: the backup's session, connected as a superuser, runs none of it
#   (its search_path is empty, as pg_dump's is).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
app_pw=App-Secret-5150-9
for sql in "CREATE ROLE app_owner LOGIN PASSWORD '$app_pw'" "CREATE DATABASE appdb OWNER app_owner" \
    "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC" "REVOKE CONNECT ON DATABASE template1 FROM PUBLIC"; do
    psql_db postgres -c "$sql" >/dev/null || fail "setting up the role failed: $sql"
done
psql_db appdb -c "SET ROLE app_owner; CREATE TABLE small (id integer PRIMARY KEY, v text);
    INSERT INTO small SELECT i, 'v' || i FROM generate_series(1, 1000) AS i" >/dev/null ||
    fail "creating the application's table failed"
export POSTGRES_URL="postgresql://app_owner:$app_pw@127.0.0.1:$CARIS_PG_PORT/appdb"
init_repo

# --- globals through the backup's own database --------------------------------------------------
db_backup_json "$TEST_TMP/b1.json" --full
assert_rc 0 "a backup as a role that may connect to its own database only (no warning)"
assert_not_contains "$OUT$ERR" "globals" "no warning about the cluster's globals"
assert_not_contains "$OUT$ERR" "$app_pw" "the password is not printed"
run cb dump "$BACKUP_ID" globals.sql
assert_rc 0 "the backup holds the globals"
assert_contains "$OUT" "CREATE ROLE app_owner" "the globals hold the backup's role"
# a database whose name reads as a connection string (pg_dumpall expands the name it is given)
hostile="app db=x 'q'"
psql_db postgres -c "CREATE DATABASE \"$hostile\" OWNER app_owner" >/dev/null || fail "creating the database failed"
POSTGRES_URL="host=127.0.0.1 port=$CARIS_PG_PORT user=app_owner password=$app_pw dbname='app db=x \\'q\\''" \
    db_backup_json "$TEST_TMP/b2.json" --full
assert_rc 0 "a database named \"$hostile\": no warning"
assert_contains "$(cat "$TEST_TMP/b2.json")" "\"database\": \"app db=x 'q'\"" "the backup names the database"
assert_not_contains "$OUT$ERR" "globals" "no warning about the cluster's globals ($hostile)"
run cb dump "$BACKUP_ID" globals.sql
assert_contains "$OUT" "CREATE ROLE app_owner" "the globals hold the backup's role ($hostile)"

# --- the role's lock_timeout: the backup waits for a locked table as pg_dump does ---------------
# (the backup's own session, which locks every table before pg_dump does, gave up after the
# role's 1 ms, and the backup failed once pg_dump had dumped everything)
psql_db postgres -c "ALTER ROLE app_owner SET lock_timeout = '1ms'" >/dev/null
pg_table_lock_take appdb small
bg_start cb --json backup database --full
backup_pid=$BG_PID
# shellcheck disable=SC2317
both_wait() { (($(pg_lock_waiters appdb small) >= 2)); }
wait_until 30 both_wait
assert_eq 2 "$(pg_lock_waiters appdb small)" "the backup's session and pg_dump both wait for the locked table"
pg_table_lock_release
wait "$backup_pid"
rc=$?
assert_eq 0 "$rc" "the backup completes once the table is released"
((rc == 0)) || note "$(_tail "$BG_ERR")"
assert_contains "$(cat "$BG_OUT")" '"rows": 1000' "the locked table's rows are counted"
psql_db postgres -c "ALTER ROLE app_owner RESET lock_timeout" >/dev/null

# --- a search_path the database's owner set: nothing of theirs runs in the backup's session -----
# (the count(*) of a parent table's rows, which the backup's session counts itself, was the
# owner's aggregate, run as the superuser the backup connects as: with the superuser's rights)
psql_db appdb -c "SET ROLE app_owner; CREATE SCHEMA evil;
    CREATE TABLE parent (id integer); CREATE TABLE child () INHERITS (parent);
    INSERT INTO child SELECT generate_series(1, 7);
    CREATE FUNCTION evil.trap(bigint) RETURNS bigint LANGUAGE plpgsql AS
      \$\$BEGIN RAISE EXCEPTION 'hijacked: ran as %', current_user; END\$\$;
    CREATE AGGREGATE evil.count(*) (SFUNC = evil.trap, STYPE = bigint, INITCOND = '0');
    ALTER DATABASE appdb SET search_path = evil, pg_catalog" >/dev/null ||
    fail "setting up the owner's schema failed"
# (the trap is armed: a session of the database with the owner's search_path runs it)
assert_contains "$(psql_db appdb -c "SELECT count(*) FROM public.small" 2>&1)" "hijacked" \
    "a plain session of the database runs the owner's count(*)"
POSTGRES_URL=$(pg_url appdb) \
    db_backup_json "$TEST_TMP/b3.json" --full
assert_rc 0 "a backup as a superuser of a database whose owner set its search_path"
assert_not_contains "$OUT$ERR" "hijacked" "the owner's count(*) did not run in the backup's session"
assert_true "the parent's rows are counted by pg_catalog's count(*)" json_eval "$TEST_TMP/b3.json" \
    'any(t["name"] == "parent" and t["rows"] == 7 for t in d["tables"])'
test_done

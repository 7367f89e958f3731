#!/usr/bin/env bash
# restore database --physical --start asks the restored server, as POSTGRES_URL's user over the
# socket in DIR, how far recovery got. When that login is refused for good (here: a role the
# restored cluster does not have; in the field: the source's pg_hba.conf, a peer line, or a
# wrong password), the restore fails at once and says why. It used to drop the error and ask
# again until --wait ran out (600 s by default), then fail "recovery did not reach the target",
# with the server long promoted.
# shellcheck disable=SC2154 # data, envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
pitr_setup # repository, $data, $envf, $R; cb as the server's user
pitr_stop_started_at_exit
pitr_archive_on "$CARIS_BIN --quiet --env-file $envf wal push %p"
q() { psql_db "${2:-$CARIS_PG_DB}" -c "$1"; }
q "CREATE TABLE t (i int PRIMARY KEY)" || fail "create t"
run cb --env-file "$envf" backup database --physical
assert_rc 0 "backup database --physical"
q "INSERT INTO t SELECT generate_series(1, 10)" || fail "insert"
pitr_archive_all q

# POSTGRES_URL (the environment wins over the env file) with a role the cluster does not have
export POSTGRES_URL=postgresql://no_such_role@127.0.0.1:$CARIS_PG_PORT/$CARIS_PG_DB
PORT=$(free_port)
STARTED+=("$R/r1")
run cb --env-file "$envf" restore database --physical --pgdata "$R/r1" --start --port "$PORT" --wait 120
assert_rc 10 "a restore whose server refuses POSTGRES_URL's login fails"
assert_contains "$ERR" "no_such_role" "the error names the login that was refused"
assert_not_contains "$ERR" "did not reach the target within" "it is not reported as a recovery that did not get there"
assert_contains "$ERR" "pg_ctl stop" "the hint says the server keeps running"
assert_true "the restored server runs (recovery was not the problem)" \
    as_pg "$CARIS_PG_BIN/pg_ctl" status -D "$R/r1"
assert_eq 10 "$(psql_db "$CARIS_PG_DB" -h "$R/r1" -p "$PORT" -c 'SELECT count(*) FROM t')" \
    "the restored server has every archived row"
test_done

#!/usr/bin/env bash
# restore database --physical --start asks the restored server, as POSTGRES_URL's user over the
# socket in DIR, how far recovery got. When that login is refused for good (here: a role the
# restored cluster does not have; in the field: the source's pg_hba.conf, a peer line, or a
# wrong password), the restore fails at once and says why. It used to drop the error and ask
# again until --wait ran out (600 s by default), then fail "recovery did not reach the target",
# with the server long promoted.
# Also: a base backup of a source that keeps postgresql.conf outside its data directory (as
# Debian's clusters do) restores without one; --start then fails at once, saying so, with the
# directory kept. The server stopped at once (in words the wait did not know), and the restore
# waited out --wait, then said "recovery did not reach the target", "the server keeps running".
# shellcheck disable=SC2154 # data, envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
pitr_setup # repository, $data, $envf, $R; cb as the server's user
pitr_stop_started_at_exit
pitr_archive_on "$CARIS_BIN --quiet --env-file $envf wal push %p"
q() { psql_db "${2:-$CARIS_PG_DB}" -c "$1"; }
q "CREATE TABLE t (i int PRIMARY KEY)" || fail "create t"
run cb --env-file "$envf" --json backup database --physical
assert_rc 0 "backup database --physical"
id1=$(json_get "$OUT_FILE" '["id"]')
q "INSERT INTO t SELECT generate_series(1, 10)" || fail "insert"
# a second base backup while postgresql.conf is away (the running server does not read it)
as_pg mv "$data/postgresql.conf" "$R/postgresql.conf.away" || fail "moving postgresql.conf away"
run cb --env-file "$envf" --json backup database --physical
assert_rc 0 "backup database --physical of a data directory without postgresql.conf"
noconf_id=$(json_get "$OUT_FILE" '["id"]')
as_pg mv "$R/postgresql.conf.away" "$data/postgresql.conf" || fail "putting postgresql.conf back"
pitr_archive_all q

PORT=$(free_port)
STARTED+=("$R/noconf")
run cb --env-file "$envf" restore database --physical --pgdata "$R/noconf" --start --port "$PORT" --wait 120 "$noconf_id"
assert_rc 10 "--start of a restored directory without postgresql.conf fails"
assert_contains "$ERR" "has no postgresql.conf" "the error says what is missing"
assert_contains "$ERR" "Debian" "and why it can be missing"
assert_not_contains "$ERR" "did not reach the target within" "it is not reported as a recovery that did not get there"
assert_true "the restored data directory is kept" test -s "$R/noconf/PG_VERSION"
assert_false "no server was started on it" test -e "$R/noconf/postmaster.pid"

# POSTGRES_URL (the environment wins over the env file) with a role the cluster does not have
export POSTGRES_URL=postgresql://no_such_role@127.0.0.1:$CARIS_PG_PORT/$CARIS_PG_DB
PORT=$(free_port)
STARTED+=("$R/r1")
run cb --env-file "$envf" restore database --physical --pgdata "$R/r1" --start --port "$PORT" --wait 120 "$id1"
assert_rc 10 "a restore whose server refuses POSTGRES_URL's login fails"
assert_contains "$ERR" "no_such_role" "the error names the login that was refused"
assert_not_contains "$ERR" "did not reach the target within" "it is not reported as a recovery that did not get there"
assert_contains "$ERR" "pg_ctl stop" "the hint says the server keeps running"
assert_true "the restored server runs (recovery was not the problem)" \
    as_pg "$CARIS_PG_BIN/pg_ctl" status -D "$R/r1"
assert_eq 10 "$(psql_db "$CARIS_PG_DB" -h "$R/r1" -p "$PORT" -c 'SELECT count(*) FROM t')" \
    "the restored server has every archived row"
test_done

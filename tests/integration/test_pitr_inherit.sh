#!/usr/bin/env bash
# Recovery settings of the source that a physical restore inherits through postgresql.auto.conf:
# recovery_target_inclusive = off (left by a manual PITR "to just before the bad transaction")
# made --to-xid X stop before X's commit (exit 0, "promoted", a batch missing); a delayed
# standby's recovery_min_apply_delay held every commit back for its delay (the restore waited
# out --wait and failed). Both are now written by the restore. And --to-name longer than a
# restore point's 63 bytes (or empty) is refused before anything is written.
# shellcheck disable=SC2154 # envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
pg_start
pitr_setup
pitr_stop_started_at_exit
pitr_archive_on "$CARIS_BIN --quiet --env-file $envf wal push %p"
q() { "$CARIS_PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CARIS_PG_SOCKET" -p "$CARIS_PG_PORT" -U "$CARIS_PG_USER" -d "${2:-$CARIS_PG_DB}" -c "$1" </dev/null; }
q_at() { "$CARIS_PG_BIN/psql" -X -q -At -h "$R/$1" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" -c "$2" </dev/null; }
stop_at() { as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/$1" -m fast -w -s >/dev/null 2>&1; }
q "CREATE TABLE t (i int PRIMARY KEY, batch int)" || fail "create t"

q "ALTER SYSTEM SET recovery_target_inclusive = off" postgres
q "ALTER SYSTEM SET recovery_min_apply_delay = '1h'" postgres
q "SELECT pg_reload_conf()" postgres >/dev/null
run cb --json backup database --physical
assert_rc 0 "a base backup of a server with recovery_target_inclusive = off and a 1 h apply delay"
B1=$(json_get "$OUT_FILE" '["id"]')
q "INSERT INTO t SELECT g, 1 FROM generate_series(1, 100) g"
X2=$(q "INSERT INTO t SELECT g, 2 FROM generate_series(1001, 1100) g; SELECT pg_current_xact_id()")
q "INSERT INTO t SELECT g, 3 FROM generate_series(2001, 2100) g"
pitr_archive_all q

# --to-name: refused before anything is written
long=$(printf 'n%.0s' {1..64})
run cb --env-file "$envf" restore database --physical --pgdata "$R/longname" --to-name "$long" "$B1"
assert_rc 2 "--to-name of 64 bytes is refused"
assert_contains "$ERR" "--to-name takes a restore point's name of 1 to 63 bytes" "the error says why"
run cb --env-file "$envf" restore database --physical --pgdata "$R/longname" --to-name "" "$B1"
assert_rc 2 "an empty --to-name is refused"
assert_false "nothing was written" test -e "$R/longname"
run cb --env-file "$envf" restore database --physical --pgdata "$R/longname" --to-xid 99999999999999999999999 "$B1"
assert_rc 2 "a --to-xid past 2^64 - 1 is refused, before the data directory is written"
assert_contains "$ERR" "--to-xid takes a transaction id" "the error says why"
assert_false "nothing was written" test -e "$R/longname"

# (one restore shows both: with the source's hour of delay, replay to X2 would wait an hour,
# and --wait gives up after 90 s; and a leading zero: PostgreSQL reads the setting as C does,
# so '0<X2>' was X2 in octal, and recovery stopped at another transaction)
pitr_restore_start xid --to-xid "0$X2" "$B1"
assert_rc 0 "restore --to-xid 0X2 --start: reached at once, not after the source's hour of delay"
assert_contains "$(cat "$R/xid/postgresql.auto.conf")" "recovery_target_xid = '$X2'" \
    "the xid is written in decimal, without the leading zero"
assert_eq "200" "$(q_at xid 'SELECT count(*) FROM t')" "recovered to the commit of X2, inclusive: batches 1 and 2"
assert_contains "$(cat "$R/xid/postgresql.auto.conf")" "recovery_target_inclusive = on" "the restore writes recovery_target_inclusive"
assert_contains "$(cat "$R/xid/postgresql.auto.conf")" "recovery_min_apply_delay = 0" "and recovery_min_apply_delay"
stop_at xid
test_done

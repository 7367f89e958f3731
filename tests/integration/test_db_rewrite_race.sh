#!/usr/bin/env bash
# A TRUNCATE (and reload) begun by another session before a database backup, committed while
# the backup waited for its table locks: the backup's snapshot, taken before the locks, saw the
# table's new, empty file, so the backup held none of its rows; it said ok, and its test
# restore and --verify passed (the counts came from the same snapshot). Now the backup fails
# (exit 10) naming the table, and commits nothing. Sequenced by locks, not by time: the backup
# is known to wait for the lock the truncating session holds before that session commits.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
pg_start
db=$CARIS_PG_DB
psql_db "$db" -c "CREATE TABLE patients (id int PRIMARY KEY, name text);
  INSERT INTO patients SELECT g, 'p' || g FROM generate_series(1, 1000) g;
  CREATE TABLE notes (pid int, note text); INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 800) g" >/dev/null
init_repo

# session_begin SQL: another session runs BEGIN and SQL, and holds its transaction (and its
# locks) open until session_commit; sets SESSION_PID
session_begin() {
    local fifo
    fifo=$TEST_TMP/session.$RANDOM.fifo
    mkfifo "$fifo"
    exec {SESSION_FD}<>"$fifo"
    bg_start "$CARIS_PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CARIS_PG_SOCKET" -p "$CARIS_PG_PORT" \
        -U "$CARIS_PG_USER" -d "$db" -f "$fifo"
    SESSION_PID=$BG_PID
    local out=$BG_OUT
    printf "BEGIN;\n%s\nSELECT 'session-ready';\n" "$1" >&"$SESSION_FD"
    # shellcheck disable=SC2317
    _session_ready() { grep -q session-ready "$1"; }
    wait_until 60 _session_ready "$out" || fail "the other session did not run: $1"
}
session_commit() {
    printf 'COMMIT;\n\\q\n' >&"$SESSION_FD"
    wait "$SESSION_PID"
}

# the other session: TRUNCATE and reload, not committed yet
session_begin "TRUNCATE patients; INSERT INTO patients SELECT g, 'new' || g FROM generate_series(1, 1000) g;"

bg_start cb --json backup database --full
backup_pid=$BG_PID backup_err=$BG_ERR
# shellcheck disable=SC2317
_backup_waits() { (($(pg_lock_waiters "$db" patients) >= 1)); }
wait_until 60 _backup_waits || fail "the backup never waited for the table lock" "$(_tail "$backup_err")"
session_commit
wait "$backup_pid"
rc=$?
assert_eq 10 "$rc" "the backup that raced the TRUNCATE fails (exit 10)"
assert_contains "$(cat "$backup_err")" "truncated or rewritten" "it says a table was truncated or rewritten"
assert_contains "$(cat "$backup_err")" "public.patients" "and names it"
assert_contains "$(cat "$backup_err")" "nothing was committed" "and that nothing was committed"
assert_eq 0 "$(json_eval <(cb --json list) 'len(d)')" "no backup is listed"

# run again: the table's 1000 new rows
db_backup_json "$TEST_TMP/b.json" --full
assert_rc 0 "the backup run again succeeds"
assert_eq 1000 "$(json_eval "$TEST_TMP/b.json" "[t['rows'] for t in d['tables'] if t['name'] == 'patients'][0]")" \
    "it holds the table's rows"

# A rewrite that keeps the rows' visibility (CLUSTER; VACUUM FULL alike) committed while the
# backup waited: the snapshot still sees every row: the backup succeeds (the check flagged it:
# a false "the dump would lack its rows"). And a materialized view refreshed meanwhile (never
# locked, and dumped as a REFRESH): no failure either.
psql_db "$db" -c "CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM notes" >/dev/null
session_begin "CLUSTER patients USING patients_pkey;"
bg_start cb --json backup database --full
backup_pid=$BG_PID backup_err=$BG_ERR
wait_until 60 _backup_waits || fail "the backup never waited for the table lock" "$(_tail "$backup_err")"
psql_db "$db" -c "REFRESH MATERIALIZED VIEW mv" >/dev/null
session_commit
wait "$backup_pid"
assert_eq 0 "$?" "a backup that waited for a CLUSTER, a view refreshed meanwhile: succeeds"
assert_eq 2 "$(json_eval <(cb --json list) 'len(d)')" "and is listed"
test_done

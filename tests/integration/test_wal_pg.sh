#!/usr/bin/env bash
# PostgreSQL 15 archiving into the repository through archive_command = 'caris-backup
# --env-file F wal push %p' (the key reaches the command through F, mode 0600, never argv):
# switched segments are archived (pg_stat_archiver: archived, no failure), `wal get` gives
# back the server's own segment byte for byte, and the key is in no archived object; then the
# same archive_command with a daemon running (as the server's user): the segments go through
# the daemon (its log), none fails, and `wal get` gives them back byte for byte.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
init_repo
data=$CARIS_PG_SOCKET # the data directory (the socket lives in it)
envf=$TEST_TMP/archive.env
(umask 077 && printf 'BACKUP_DIR=%s\nBACKUP_ENCRYPTION_KEY=%s\n' "$BACKUP_DIR" "$BACKUP_ENCRYPTION_KEY" >"$envf")
# the server runs as another user when we are root: it must read the env file and write the
# repository (give it both; root still reads everything)
give_server() {
    [[ $(id -u) == 0 ]] && chown -R "$CARIS_PG_OS_USER:" "$BACKUP_DIR" "$envf"
    return 0
}
give_server
psql_db postgres -c "ALTER SYSTEM SET archive_mode = on" \
    -c "ALTER SYSTEM SET archive_command = '$CARIS_BIN --quiet --env-file $envf wal push %p'" ||
    fail "ALTER SYSTEM archive settings"
pg_pause && pg_resume || fail "restart with archive_mode = on"
assert_eq on "$(psql_db postgres -c 'SHOW archive_mode')" "archive_mode is on"

archived() { [[ $(psql_db postgres -c "SELECT last_archived_wal FROM pg_stat_archiver") == "$1" ]]; }
segs=()
for i in 1 2 3; do
    psql_db "$CARIS_PG_DB" -c "CREATE TABLE IF NOT EXISTS t (i int, pad text)" \
        -c "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g" >/dev/null ||
        fail "insert batch $i"
    s=$(psql_db postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
    segs+=("$s")
    if wait_until 60 archived "$s"; then
        pass "segment $s archived by archive_command"
    else
        fail "segment $s not archived within 60 s" \
            "$(psql_db postgres -c 'SELECT * FROM pg_stat_archiver')
$(tail -n 20 "$data/../server.log" 2>/dev/null)"
    fi
    # the server's own copy, before a checkpoint recycles it
    cp "$data/pg_wal/$s" "$TEST_TMP/server-$s" 2>/dev/null
done
assert_eq 0 "$(psql_db postgres -c 'SELECT failed_count FROM pg_stat_archiver')" "pg_stat_archiver: no failed archive_command"

for s in "${segs[@]}"; do
    assert_exit 0 cb wal get "$s" "$TEST_TMP/got-$s"
    assert_true "wal get $s: the server's segment byte for byte" cmp "$TEST_TMP/server-$s" "$TEST_TMP/got-$s"
done
assert_exit 0 cb --json wal list
assert_cmp "$(json_eval "$OUT_FILE" 'len(d["files"])')" -ge 3 "wal list: at least the three switched segments"
assert_eq 1 "$(json_eval "$OUT_FILE" "len([f for f in d['files'] if f['name'] == '${segs[0]}'])")" "wal list: one record per segment"
give_server

# --- through the daemon: the same archive_command hands the segments to a running daemon ----
# (run as the server's user, like archive_command: the control socket takes only its own user)
give_server
as_server=()
[[ $(id -u) == 0 ]] && as_server=(setpriv --reuid="$CARIS_PG_OS_USER" --regid="$CARIS_PG_OS_USER" --init-groups)
bg_start "${as_server[@]}" "$CARIS_BIN" --env-file "$envf" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
_daemon_up() { [[ -S $BACKUP_DIR/metadata/daemon.sock ]] && grep -q 'started' "$DAEMON_ERR"; }
wait_until 60 _daemon_up || fail "the daemon did not start" "$(_tail "$DAEMON_ERR")"
for i in 4 5; do
    psql_db "$CARIS_PG_DB" -c "INSERT INTO t SELECT g, repeat('y', 100) FROM generate_series(1, 20000) g" >/dev/null ||
        fail "insert batch $i"
    s=$(psql_db postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
    segs+=("$s")
    if wait_until 60 archived "$s"; then
        pass "segment $s archived through the daemon"
    else
        fail "segment $s not archived within 60 s" "$(psql_db postgres -c 'SELECT * FROM pg_stat_archiver')"
    fi
    cp "$data/pg_wal/$s" "$TEST_TMP/server-$s" 2>/dev/null
    _pushed() { grep -q "archived WAL file $s" "$DAEMON_ERR"; }
    wait_until 30 _pushed
    assert_eq 0 "$?" "the daemon's log: it archived $s"
done
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon stops on SIGTERM"
assert_eq 0 "$(psql_db postgres -c 'SELECT failed_count FROM pg_stat_archiver')" "pg_stat_archiver: no failed push through the daemon"
for s in "${segs[@]:3}"; do
    assert_exit 0 cb wal get "$s" "$TEST_TMP/got-$s"
    assert_true "wal get $s (pushed through the daemon): the server's segment byte for byte" cmp "$TEST_TMP/server-$s" "$TEST_TMP/got-$s"
done
give_server

# the key in no object of the repository, nor in the server's settings
assert_false "the key is in no repository file" grep -rqF "$BACKUP_ENCRYPTION_KEY" "$REPO"
assert_false "the key is not in postgresql.auto.conf" grep -qF "$BACKUP_ENCRYPTION_KEY" "$data/postgresql.auto.conf"

test_done

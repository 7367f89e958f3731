# shellcheck shell=bash disable=SC2034,SC2153
# (SC2034: PG_* and BACKUP_ID are set here for the tests to read; SC2153: CARIS_PG_* come
# from the server's env file.)
# Helpers for the database tests (test_db_*.sh), sourced after lib.sh:
#
#   source "$(dirname "$0")/lib.sh"
#   source "$(dirname "$0")/pglib.sh"
#   pg_start                       # a private PostgreSQL 15 server for this test
#
# pg_start runs scripts/pg-test-server.sh with a free loopback port and the directory
# $TEST_TMP/pg, exports what its env file sets (POSTGRES_URL, CARIS_PG_*), and stops the
# server when the test exits (its log is kept in $TEST_TMP/pg-server.log). Each test has
# its own server: tests can stop it. A server costs about half a second: it is a copy of
# the cluster run.sh's CARIS_PG_TEMPLATE holds (one initdb per run), with fsync off.
#
# Helpers talk to the server over its unix socket (trusted, no password): their command
# lines never hold the password, so the tests that look for it in `ps` see only ours.

PG_ROOT=$(cd "$LIB_DIR/../.." && pwd)
PG_SERVER_SCRIPT=$PG_ROOT/scripts/pg-test-server.sh
PG_FIXTURES=$LIB_DIR/fixtures
PG_STARTED=0

_pg_on_exit() {
    ((PG_STARTED)) || return 0
    cp "$CARIS_PG_DIR/server.log" "$TEST_TMP/pg-server.log" 2>/dev/null
    "$PG_SERVER_SCRIPT" stop >/dev/null 2>&1
}
# lib.sh's EXIT trap first (it kills background processes, e.g. a running backup), then ours.
at_exit '_lib_on_exit; _pg_on_exit'

_pg_free_port() { free_port; } # lib.sh: reserved for this run

# pg_start: start this test's server; on failure the test cannot go on (one failure).
pg_start() {
    CARIS_PG_PORT=$(_pg_free_port)
    export CARIS_PG_PORT CARIS_PG_DIR=$TEST_TMP/pg
    local t0=$SECONDS
    if ! "$PG_SERVER_SCRIPT" start >"$TEST_TMP/pg-env" 2>"$TEST_TMP/pg-start.err"; then
        fail "cannot start the PostgreSQL test server" "$(_tail "$TEST_TMP/pg-start.err" 30)"
        test_done
    fi
    PG_STARTED=1
    # shellcheck disable=SC1091
    source "$TEST_TMP/pg-env"
    ((EUID == 0)) && _AS_PG_GID=$(id -g "$CARIS_PG_OS_USER")
    note "PostgreSQL on 127.0.0.1:$CARIS_PG_PORT ($((SECONDS - t0))s to start)"
}

# pg_pause / pg_resume: stop the server (keeping its data) and start it again.
pg_pause() { "$PG_SERVER_SCRIPT" pause; }
pg_resume() { "$PG_SERVER_SCRIPT" resume; }

# pg_url [DB]: the URL with the password (what POSTGRES_URL and CARIS_RESTORE_TARGET_URL
# hold); pg_url_nopw [DB]: the same without it (for --target-url).
# shellcheck disable=SC2120 # the argument is optional
pg_url() { printf 'postgresql://%s:%s@127.0.0.1:%s/%s' "$CARIS_PG_USER" "$CARIS_PG_PASSWORD" "$CARIS_PG_PORT" "${1:-$CARIS_PG_DB}"; }
# shellcheck disable=SC2120 # the argument is optional
pg_url_nopw() { printf 'postgresql://%s@127.0.0.1:%s/%s' "$CARIS_PG_USER" "$CARIS_PG_PORT" "${1:-$CARIS_PG_DB}"; }

# psql_db DB ARGS...: psql over the socket, unaligned, quiet, stopping at the first error.
psql_db() {
    local db=$1
    shift
    "$CARIS_PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CARIS_PG_SOCKET" -p "$CARIS_PG_PORT" \
        -U "$CARIS_PG_USER" -d "$db" "$@" </dev/null
}

pg_createdb() { psql_db postgres -c "CREATE DATABASE \"$1\""; }
pg_dropdb() { psql_db postgres -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)"; }
pg_db_exists() { [[ $(psql_db postgres -c "SELECT 1 FROM pg_database WHERE datname = '$1'") == 1 ]]; }

# pg_load_rich DB: create DB and load fixtures/rich.sql into it.
pg_load_rich() {
    pg_createdb "$1" &&
        "$CARIS_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$CARIS_PG_SOCKET" -p "$CARIS_PG_PORT" \
            -U "$CARIS_PG_USER" -d "$1" -f "$PG_FIXTURES/rich.sql" >/dev/null </dev/null
}

# pg_sum DB FILE: the database's summary (fixtures/dbsum.sh) into FILE.
pg_sum() {
    "$PG_FIXTURES/dbsum.sh" -h "$CARIS_PG_SOCKET" -p "$CARIS_PG_PORT" -U "$CARIS_PG_USER" -d "$1" >"$2"
}

# assert_sum_equal EXPECTED ACTUAL MESSAGE: two summaries are the same (context: the diff).
assert_sum_equal() {
    if [[ -s $1 ]] && cmp -s "$1" "$2"; then
        pass "$3 ($(grep -c '^table ' "$1") tables, $(wc -l <"$1") summary lines)"
        return 0
    fi
    fail "$3" "diff $1 $2:" "$(diff "$1" "$2" | head -n 30 | cut -c1-250)"
    return 1
}

# pg_user_tables DB: "schema.table" of every user table, sorted, one a line.
pg_user_tables() {
    psql_db "$1" -c "SELECT n.nspname || '.' || c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'm', 'v', 'f')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
        ORDER BY 1" | LC_ALL=C sort
}

# pg_relation_count DB: number of user relations (tables, views, sequences, indexes...).
pg_relation_count() {
    psql_db "$1" -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'"
}

# db_backup_json OUTFILE ARGS...: `--json backup database ARGS...`, JSON to OUTFILE; sets RC
# and BACKUP_ID (empty when no id was printed).
db_backup_json() {
    local f=$1
    shift
    run cb --json backup database "$@"
    cp "$OUT_FILE" "$f"
    BACKUP_ID=$(json_get "$f" '["id"]' 2>/dev/null || true)
}

# pg_big_table DB NAME MIB: a table whose dump is about MIB MiB but which takes almost no
# time or disk to create (rows of one 32-byte pattern repeated to 128 KiB: lz4 shrinks it
# to nothing in the table, pg_dump expands it again).
pg_big_table() {
    local rows=$(($3 * 8))
    psql_db "$1" -c "CREATE TABLE $2 (id integer PRIMARY KEY, v text COMPRESSION lz4);
        INSERT INTO $2 SELECT i, repeat(md5(i::text), 4096) FROM generate_series(1, $rows) AS i"
}

# proc_children PID: the pids of PID's children (one a line).
proc_children() { pgrep -P "$1" 2>/dev/null; }

# proc_comm PID: the program name of a process (empty when it is gone).
proc_comm() { cat "/proc/$1/comm" 2>/dev/null; }

# proc_wchar PID: bytes the process has written so far (0 when gone).
proc_wchar() { awk '/^wchar:/ { print $2; f = 1 } END { if (!f) print 0 }' "/proc/$1/io" 2>/dev/null || echo 0; }

# find_child PARENT NAME: print the pid of PARENT's child (or grandchild) named NAME.
find_child() {
    local c g
    for c in $(proc_children "$1"); do
        [[ $(proc_comm "$c") == "$2" ]] && { echo "$c"; return 0; }
        for g in $(proc_children "$c"); do
            [[ $(proc_comm "$g") == "$2" ]] && { echo "$g"; return 0; }
        done
    done
    return 1
}

# ps_watch_start FILE: record `ps -eo pid,ppid,args` into FILE, as fast as it goes, until
# ps_watch_stop (in a background process, so that a command run meanwhile is watched while
# it runs). The password is not in the watcher's own arguments.
PS_WATCH_PID="" PS_WATCH_STOP=""
ps_watch_start() {
    PS_WATCH_STOP=$TEST_TMP/.ps-watch-stop
    rm -f "$PS_WATCH_STOP"
    : >"$1"
    # shellcheck disable=SC2016 # $1 and $2 belong to the inner bash
    bg_start bash -c 'while [[ ! -e $1 ]]; do ps -eo pid=,ppid=,args= >>"$2"; echo ---- >>"$2"; done' \
        ps-watch "$PS_WATCH_STOP" "$1"
    PS_WATCH_PID=$BG_PID
    # the first snapshot is in the file before the watched command starts
    wait_until 30 test -s "$1"
}
ps_watch_stop() {
    : >"$PS_WATCH_STOP"
    wait "$PS_WATCH_PID" 2>/dev/null
}

# assert_no_password_in FILE MESSAGE: FILE does not hold $CARIS_PG_PASSWORD (searched with
# the password in a pipe, not in grep's arguments).
assert_no_password_in() {
    local hits
    hits=$(grep -c -F -f <(printf '%s\n' "$CARIS_PG_PASSWORD") "$1")
    assert_eq 0 "${hits:-0}" "$2"
}

# pg_small_table DB: a table "small" (1000 rows) in DB, and POSTGRES_URL exported for DB: the
# table a session locks (pg_table_lock_take) to hold a backup or a restore mid-way.
pg_small_table() {
    psql_db "$1" -c "CREATE TABLE small (id integer PRIMARY KEY, v text);
        INSERT INTO small SELECT i, 'v' || i FROM generate_series(1, 1000) AS i" >/dev/null
    export POSTGRES_URL
    POSTGRES_URL=$(pg_url "$1")
}

# A backup held mid-way, without timing: pg_table_lock_take DB TABLE starts a session that
# holds an ACCESS EXCLUSIVE lock on TABLE until pg_table_lock_release. A database backup then
# takes its repository lock and claim and waits for the table (it counts its rows first);
# pg_lock_waiters DB TABLE says how many sessions wait for a lock on a query naming TABLE.
_PG_TL_FD=""
_PG_TL_PID=""
pg_table_lock_take() {
    local fifo=$TEST_TMP/.tablelock.fifo
    [[ -p $fifo ]] || mkfifo "$fifo"
    [[ -n $_PG_TL_FD ]] || exec {_PG_TL_FD}<>"$fifo"
    bg_start "$CARIS_PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$CARIS_PG_SOCKET" \
        -p "$CARIS_PG_PORT" -U "$CARIS_PG_USER" -d "$1" -f "$fifo"
    _PG_TL_PID=$BG_PID
    local out=$BG_OUT err=$BG_ERR
    printf "BEGIN;\nLOCK TABLE %s IN ACCESS EXCLUSIVE MODE;\nSELECT 'table-locked';\n" "$2" >&"$_PG_TL_FD"
    # shellcheck disable=SC2317
    _pg_tl_ready() { grep -q table-locked "$1"; }
    wait_until 60 _pg_tl_ready "$out" || fail "psql did not take the table lock" "$(_tail "$err")"
}
pg_table_lock_release() {
    printf 'COMMIT;\n\\q\n' >&"$_PG_TL_FD"
    wait "$_PG_TL_PID"
}
pg_lock_waiters() {
    psql_db "$1" -c "SELECT count(*) FROM pg_stat_activity
        WHERE wait_event_type = 'Lock' AND query ILIKE '%$2%'"
}

# pitr_setup: what the point-in-time tests share, after pg_start: the repository, data (the
# source's data directory), envf (the env file the server's commands read), R (a directory
# for restores), all the server's user's (PostgreSQL refuses root), and cb as that user.
pitr_setup() {
    init_repo
    data=$CARIS_PG_SOCKET
    envf=$TEST_TMP/backup.env
    pg_env_file "$envf"
    R=$TEST_TMP/restores
    mkdir -p "$R"
    chmod 0755 "$TEST_TMP"
    if ((EUID == 0)); then
        chown -R "$CARIS_PG_OS_USER:" "$BACKUP_DIR" "$envf" "$R"
    fi
    cb() { as_pg "$CARIS_BIN" "$@"; }
}

# pitr_stop_started_at_exit: every server a test starts on a restored directory (it adds the
# directory to STARTED) is stopped when the test ends.
pitr_stop_started_at_exit() {
    STARTED=()
    at_exit '_pitr_stop_started; _lib_on_exit; _pg_on_exit'
}
_pitr_stop_started() {
    local d
    for d in "${STARTED[@]}"; do
        as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$d" -m immediate -w -s >/dev/null 2>&1
    done
    return 0
}

# pitr_archive_on CMD: the server archives its WAL with archive_command CMD (wal_level
# replica, replication allowed), restarted for it
pitr_archive_on() {
    psql_db postgres -c "ALTER SYSTEM SET archive_mode = on" \
        -c "ALTER SYSTEM SET archive_command = '$1'" \
        -c "ALTER SYSTEM SET wal_level = replica" || fail "ALTER SYSTEM archive settings"
    pg_allow_replication
    pg_pause && pg_resume || fail "restart with archive_mode = on"
}

# pitr_archive_all Q: switch to a new WAL segment and wait until the archiver is done with the
# old one (archived, and no failure after it). Q is the test's function that runs SQL (SQL
# [DB]) on the current primary.
pitr_archive_all() {
    local qf=$1 last
    last=$("$qf" "SELECT pg_walfile_name(pg_switch_wal())" postgres)
    # shellcheck disable=SC2317
    _pitr_archived() { [[ $("$qf" "SELECT last_archived_wal >= '$last' AND coalesce(last_failed_wal, '') <= coalesce(last_archived_wal, '') FROM pg_stat_archiver" postgres) == t ]]; }
    wait_until 60 _pitr_archived || fail "WAL up to $last not archived within 60 s" "$("$qf" 'SELECT * FROM pg_stat_archiver' postgres)"
}

# pitr_restore_start NAME ARGS...: restore --physical into $R/NAME with --start (PORT: its
# port; the server is stopped at exit, pitr_stop_started_at_exit)
pitr_restore_start() {
    local name=$1
    shift
    PORT=$(free_port)
    STARTED+=("$R/$name")
    run cb --env-file "$envf" --json restore database --physical --pgdata "$R/$name" --start --port "$PORT" --wait 90 "$@"
}

# pg_allow_replication: a pg_hba.conf line for replication connections from loopback (base
# backups, wal receive); the server reads it at its next reload or restart.
pg_allow_replication() {
    local line="host replication all 127.0.0.1/32 scram-sha-256"
    if ((EUID == 0)); then
        echo "$line" | as_pg tee -a "$CARIS_PG_SOCKET/pg_hba.conf" >/dev/null
    else
        echo "$line" >>"$CARIS_PG_SOCKET/pg_hba.conf"
    fi
}

# pg_env_file PATH: the env file of the commands the server runs (archive_command,
# restore_command) and of restores run as its user: BACKUP_DIR, the key, POSTGRES_URL; mode 0600.
pg_env_file() {
    (umask 077 && printf 'BACKUP_DIR=%s\nBACKUP_ENCRYPTION_KEY=%s\nPOSTGRES_URL=%s\n' \
        "$BACKUP_DIR" "$BACKUP_ENCRYPTION_KEY" "$POSTGRES_URL" >"$1")
}

# as_pg CMD...: CMD as the server's system user when the tests run as root (PostgreSQL refuses
# to run as root), else as is. setpriv (util-linux) gives it that user's ids and group, no
# other groups, and the environment as it is but HOME, USER and LOGNAME: runuser's PAM session
# cost 20 ms of CPU a call, setpriv 8 (the point-in-time tests run every command this way).
_AS_PG_GID=""
as_pg() {
    if ((EUID == 0)); then
        [[ -n $_AS_PG_GID ]] || _AS_PG_GID=$(id -g "$CARIS_PG_OS_USER") || return 1
        HOME=/nonexistent USER=$CARIS_PG_OS_USER LOGNAME=$CARIS_PG_OS_USER \
            setpriv --reuid="$CARIS_PG_OS_USER" --regid="$_AS_PG_GID" --clear-groups -- "$@"
    else
        "$@"
    fi
}

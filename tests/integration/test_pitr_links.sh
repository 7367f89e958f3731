#!/usr/bin/env bash
# Links in a data directory, against a real PostgreSQL 15 archiving with `caris-backup wal
# push`: a cluster made with `initdb -X` (pg_wal a link to a directory outside the data
# directory, as packagers do) and a tablespace at an absolute location. A physical backup
# restored and started: pg_wal and the tablespace come back as directories inside the
# restored data directory, never as links to the source's locations (which the running
# source still uses); the restored server has the rows of both, and the source's WAL
# directory is untouched by it. A restore from `--repo R` with an env file naming another
# BACKUP_DIR: restore_command reads R.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

export CARIS_PG_WALDIR=$TEST_TMP/pg/wal
pg_start
init_repo
data=$CARIS_PG_SOCKET
assert_true "the source's pg_wal is a link (initdb -X)" test -L "$data/pg_wal"
envf=$TEST_TMP/backup.env
pg_env_file "$envf"
R=$TEST_TMP/restores
TS=$TEST_TMP/pg/ts
mkdir -p "$R" "$TS"
chmod 0755 "$TEST_TMP"
[[ $(id -u) == 0 ]] && chown -R "$CARIS_PG_OS_USER:" "$BACKUP_DIR" "$envf" "$R" "$TS"
cb() { as_pg "$CARIS_BIN" "$@"; }
at_exit 'as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/x" -m immediate -w -s >/dev/null 2>&1; _lib_on_exit; _pg_on_exit'

psql_db postgres -c "ALTER SYSTEM SET archive_mode = on" \
    -c "ALTER SYSTEM SET archive_command = '$CARIS_BIN --quiet --env-file $envf wal push %p'" || fail "archive settings"
as_pg sh -c "echo 'host replication all 127.0.0.1/32 scram-sha-256' >>'$data/pg_hba.conf'"
pg_pause && pg_resume || fail "restart with archive_mode = on"
psql_db postgres -c "CREATE TABLESPACE ts LOCATION '$TS'" || fail "create tablespace"
psql_db "$CARIS_PG_DB" -c "CREATE TABLE a (i int); INSERT INTO a SELECT generate_series(1, 100)" \
    -c "CREATE TABLE b (i int) TABLESPACE ts; INSERT INTO b SELECT generate_series(1, 50)" || fail "tables"

run cb --json backup database --physical
assert_rc 0 "base backup of a cluster with pg_wal and a tablespace outside the data directory"
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d["physical"]["tablespaces"])')" "the tablespace is in the backup"
psql_db "$CARIS_PG_DB" -c "INSERT INTO a SELECT generate_series(101, 150)" || fail "rows after the backup"
last=$(psql_db postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
# shellcheck disable=SC2317
_archived() { [[ $(psql_db postgres -c "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver") == t ]]; }
wait_until 60 _archived || fail "WAL up to $last not archived"

PORT=$(free_port)
if [[ $(id -u) == 0 ]]; then
    # README's example runs it through `cb` (sudo): --start as root is refused before anything
    # is written (it used to restore first, leaving a root-owned data directory behind)
    run "$CARIS_BIN" --env-file "$envf" restore database --physical --pgdata "$R/as-root" --start --port "$PORT"
    assert_rc 2 "restore --start as root: refused"
    assert_contains "$ERR" "does not run as root" "it says why"
    assert_false "nothing was written: no data directory" test -e "$R/as-root"
    assert_eq "" "$(find "$R" -maxdepth 1 -name '.as-root.caris-restore-*')" "no temporary directory"
    # a lock file of root's (a command run as root on the repository the server's user
    # archives into): the server's user cannot read it, and `unlock` as that user keeps it,
    # so the error must not send them there
    rootlock=$BACKUP_DIR/repository/locks/0123456789abcdef0123456789abcdef
    (umask 077 && echo '{}' >"$rootlock")
    run cb --env-file "$envf" check
    assert_rc 9 "another user's lock file: locked"
    assert_contains "$ERR" "another user's" "the error says whose it is"
    assert_contains "$ERR" "run \`caris-backup unlock\` as that user" "the hint says who can remove it"
    rm -f "$rootlock"
fi
run cb --env-file "$envf" --json restore database --physical --pgdata "$R/x" --start --port "$PORT" --wait 90
assert_rc 0 "restore --start of that backup"
assert_true "pg_wal is a directory in the restored data directory" test -d "$R/x/pg_wal"
assert_false "pg_wal is not a link" test -L "$R/x/pg_wal"
oid=$(psql_db postgres -c "SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
assert_true "the tablespace is a directory under pg_tblspc" test -d "$R/x/pg_tblspc/$oid"
assert_false "the tablespace is not a link" test -L "$R/x/pg_tblspc/$oid"
assert_eq "" "$(find "$R/x" -type l)" "no link at all in the restored data directory"
qx() { "$CARIS_PG_BIN/psql" -X -q -At -h "$R/x" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" -c "$1" </dev/null; }
assert_eq "150 50" "$(qx "SELECT (SELECT count(*) FROM a) || ' ' || (SELECT count(*) FROM b)")" \
    "the restored server has the rows of both tables (replayed into its own pg_wal)"
assert_true "the restored server writes WAL into its own pg_wal" \
    sh -c "ls '$R/x/pg_wal' | grep -Eq '^[0-9A-F]{24}$'"
assert_eq "" "$(find "$CARIS_PG_WALDIR" -name '00000002*')" \
    "the restored server (timeline 2) wrote nothing into the source's WAL directory (timeline 1)"
as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/x" -m fast -w -s >/dev/null 2>&1

# restored from a repository named with --repo, with an env file whose BACKUP_DIR holds another
# (here none): the restored server's restore_command reads the repository restored from (the
# archive this restore checked for gaps), not the env file's. The env file's name holds a %f:
# PostgreSQL replaces %f, %p, %r and %% anywhere in restore_command, so the path must be
# written with the % doubled (it used to be written as is: every wal get read another file,
# failed, and the recovery stopped)
other=$TEST_TMP/other-backup-dir
envf2=$TEST_TMP/other%f.env
mkdir -p "$other"
(umask 077 && sed "s|^BACKUP_DIR=.*|BACKUP_DIR=$other|" "$envf" >"$envf2")
[[ $(id -u) == 0 ]] && chown -R "$CARIS_PG_OS_USER:" "$other" "$envf2"
PORT=$(free_port)
at_exit 'as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/x" -m immediate -w -s >/dev/null 2>&1; as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/y" -m immediate -w -s >/dev/null 2>&1; _lib_on_exit; _pg_on_exit'
run cb --env-file "$envf2" --repo "$REPO" --json restore database --physical --pgdata "$R/y" --start --port "$PORT" --wait 90
assert_rc 0 "restore --start from --repo R with an env file naming another BACKUP_DIR"
assert_contains "$(cat "$R/y/postgresql.auto.conf")" "--repo ''$(realpath "$REPO")'' wal get --strict %f %p" \
    "restore_command names the repository restored from (quotes doubled in the setting)"
assert_contains "$(cat "$R/y/postgresql.auto.conf")" "--env-file ''$TEST_TMP/other%%f.env''" \
    "restore_command doubles the % of a path (PostgreSQL would replace %f)"
qy() { "$CARIS_PG_BIN/psql" -X -q -At -h "$R/y" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" -c "$1" </dev/null; }
assert_eq "150" "$(qy "SELECT count(*) FROM a")" "its WAL was replayed from that repository"
as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/y" -m fast -w -s >/dev/null 2>&1

test_done

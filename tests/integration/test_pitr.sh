#!/usr/bin/env bash
# Physical base backups and point-in-time recovery against a real PostgreSQL 15: the server
# archives its WAL with `caris-backup wal push` (the key in a 0600 env file, never argv);
# `backup database --physical` streams a base backup over the replication protocol;
# `restore database --physical --start` writes a data directory, starts PostgreSQL on it and
# waits for the recovery target. Checked: the refusals (no pg_hba replication line, a
# non-empty target), the restored cluster's fingerprint equals the source's, PITR to recorded
# times between committed batches (exactly the rows before each target), to a named restore
# point and to an LSN, and a flipped byte in a relation file reported as a bad page (a page
# whose LSN is after the backup's start is not: WAL replay rewrites it).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
init_repo
data=$CARIS_PG_SOCKET # the source's data directory
envf=$TEST_TMP/backup.env
pg_env_file "$envf"
# the restores and the restored servers run as the server's user (PostgreSQL refuses root):
# it reads the env file, the repository and writes its own directory
give_server() {
    [[ $(id -u) == 0 ]] && chown -R "$CARIS_PG_OS_USER:" "$BACKUP_DIR" "$envf" "$TEST_TMP/restores"
    return 0
}
mkdir -p "$TEST_TMP/restores"
chmod 0755 "$TEST_TMP"
give_server
# every command of this test runs as that user, so that what it writes into BACKUP_DIR stays
# readable by archive_command
cb() { as_pg "$CARIS_BIN" "$@"; }
psql_db postgres -c "ALTER SYSTEM SET archive_mode = on" \
    -c "ALTER SYSTEM SET archive_command = '$CARIS_BIN --quiet --env-file $envf wal push %p'" \
    -c "ALTER SYSTEM SET wal_level = replica" || fail "ALTER SYSTEM archive settings"
pg_pause && pg_resume || fail "restart with archive_mode = on"

# 1. no pg_hba.conf line for replication connections: the error says so, with the fix
run cb backup database --physical
assert_rc 10 "backup --physical without a replication line in pg_hba.conf fails"
assert_contains "$ERR" "pg_hba.conf" "the error names pg_hba.conf"
assert_contains "$ERR" "host replication" "the hint gives the line to add"
run cb --env-file "$envf" restore database --physical --pgdata "$TEST_TMP/no-base"
assert_rc 7 "a physical restore with no base backup in the repository"
assert_contains "$ERR" "has no physical base backup" "the error says there is none (not a timeline 0)"
assert_false "nothing was made at --pgdata" test -e "$TEST_TMP/no-base"
as_server_append() { as_pg tee -a "$data/pg_hba.conf" >/dev/null; }
if [[ $(id -u) == 0 ]]; then
    echo "host replication all 127.0.0.1/32 scram-sha-256" | as_server_append
else
    echo "host replication all 127.0.0.1/32 scram-sha-256" >>"$data/pg_hba.conf"
fi
psql_db postgres -c "SELECT pg_reload_conf()" >/dev/null

# 2. a base backup of a database with tricky content
pg_load_rich rich || fail "load rich.sql"
psql_db "$CARIS_PG_DB" -c "CREATE TABLE t (i int PRIMARY KEY, batch int, pad text)" || fail "create t"
run cb --json backup database --physical
assert_rc 0 "backup database --physical"
id1=$(json_get "$OUT_FILE" '["id"]')
assert_match '^caris_full_' "$id1" "a physical backup has a caris_full_ id"
assert_eq physical "$(json_get "$OUT_FILE" '["method"]')" "the summary says method physical"
assert_match '^[0-9A-F]+/[0-9A-F]+-[0-9A-F]+/[0-9A-F]+$' "$(json_get "$OUT_FILE" '["lsnRange"]')" "the summary has the LSN range"
assert_true "the backup holds backup_label" json_eval "$OUT_FILE" '"START WAL LOCATION" in d["physical"]["backupLabel"]'
assert_eq ok "$(json_get "$OUT_FILE" '["physical"]["archiveCheck"]["status"]')" "the backup's WAL was seen in the archive"
S1=$(json_get "$OUT_FILE" '["physical"]["startLsn"]')
assert_true "backup database --physical --json: the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "backup database --physical" "$OUT_FILE"
run cb list
assert_contains "$OUT" "physical" "list shows the method"
run cb show "$id1"
assert_rc 0 "show of a physical backup"
assert_match "WAL +${S1}-" "$OUT" "show gives its WAL range"
assert_contains "$OUT" "timeline 1" "show gives its timeline"
assert_not_contains "$OUT" "0 tables" "show does not describe a physical backup as an empty dump"
pg_sum rich "$TEST_TMP/src-rich.sum"
run cb verify "$id1"
assert_rc 0 "verify of the physical backup reads every file"
run cb restore database "$id1"
assert_rc 2 "a logical restore of a physical backup is refused"
assert_contains "$ERR" "is a physical backup" "the error says it is a physical backup"

# 3. refusals of restore: no env file for restore_command, a non-empty data directory
R=$TEST_TMP/restores
run cb restore database --physical --pgdata "$R/x" "$id1"
assert_rc 2 "restore --physical without --env-file is refused"
assert_contains "$ERR" "--env-file" "the error says restore_command needs --env-file"
as_pg mkdir "$R/busy" && as_pg touch "$R/busy/keep"
run cb --env-file "$envf" restore database --physical --pgdata "$R/busy" "$id1"
assert_rc 2 "a non-empty data directory is refused without --overwrite"
assert_contains "$ERR" "not empty" "the error says the directory is not empty"
assert_eq "keep" "$(ls "$R/busy")" "the non-empty directory is untouched"
# a backup that cannot serve the target is refused before anything is written: a file backup,
# a base backup ending after the target, a target before the first base backup
mkdir -p "$TEST_TMP/few" && echo one >"$TEST_TMP/few/a"
run cb --json backup files "$TEST_TMP/few"
assert_rc 0 "a file backup beside the physical one"
fid=$(json_get "$OUT_FILE" '["id"]')
run cb --env-file "$envf" restore database --physical --pgdata "$R/x" "$fid"
assert_rc 2 "restore --physical of a file backup is refused"
assert_contains "$ERR" "is not a physical backup" "the error says it is not a physical backup"
run cb --env-file "$envf" restore database --physical --pgdata "$R/x" --to-time 2001-01-01T00:00:00Z "$id1"
assert_rc 2 "restore --physical of a backup ending after the target is refused"
assert_contains "$ERR" "ends after the recovery target" "the error says the backup ends after the target"
assert_contains "$ERR" "choose an earlier backup" "the hint says what to do"
run cb --env-file "$envf" restore database --physical --pgdata "$R/x" --to-time 2001-01-01T00:00:00Z
assert_rc 7 "a target before the first base backup is refused"
assert_contains "$ERR" "no physical backup ends before the recovery target" "the error says no base backup can reach it"
assert_true "the refused restores wrote nothing" test ! -e "$R/x"
assert_eq "" "$(find "$R" -maxdepth 1 -name '.x.caris-*')" "no temporary directory beside the target"

# batches of committed rows, each followed by the time, the LSN or a restore point
now_utc() { psql_db postgres -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"; }
batch() { psql_db "$CARIS_PG_DB" -c "INSERT INTO t SELECT g, $1, 'row' FROM generate_series($1 * 1000 + 1, $1 * 1000 + 100) g"; }
batch 1 || fail "batch 1"
T1=$(now_utc)
L1=$(psql_db postgres -c "SELECT pg_current_wal_insert_lsn()")
# batch 2 and its transaction id, in one transaction
X2=$(psql_db "$CARIS_PG_DB" -c "INSERT INTO t SELECT g, 2, 'row' FROM generate_series(2001, 2100) g; SELECT pg_current_xact_id()")
[[ $X2 =~ ^[0-9]+$ ]] || fail "batch 2 (xid '$X2')"
T2=$(now_utc)
psql_db postgres -c "SELECT pg_create_restore_point('after_batch_2')" >/dev/null
batch 3 || fail "batch 3"
psql_db "$CARIS_PG_DB" -c "SELECT 1" >/dev/null
last=$(psql_db postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
archived() { [[ $(psql_db postgres -c "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver") == t ]]; }
wait_until 60 archived || fail "WAL up to $last not archived within 60 s" "$(psql_db postgres -c 'SELECT * FROM pg_stat_archiver')"
note "T1=$T1 L1=$L1 T2=$T2 last segment $last"

# restore_start NAME ARGS...: restore (as the server's user) into $R/NAME with --start
restore_start() {
    local name=$1
    shift
    PORT=$(free_port)
    run cb --env-file "$envf" --json restore database --physical --pgdata "$R/$name" --start --port "$PORT" --wait 60 "$@"
}
q_at() { # NAME SQL: query the restored server NAME
    "$CARIS_PG_BIN/psql" -X -q -At -h "$R/$1" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" -c "$2" </dev/null
}
stop_at() { as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/$1" -m fast -w -s >/dev/null 2>&1; }

# 4. the latest state (no target): the whole cluster back, fingerprint equal
restore_start full "$id1"
assert_rc 0 "restore --physical --start (replay all archived WAL)"
assert_eq promoted "$(json_get "$OUT_FILE" '["state"]')" "the restored server was promoted"
assert_true "restore database --physical --json: the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "restore database --physical" "$OUT_FILE"
assert_true "recovery.signal is gone once promoted" test ! -e "$R/full/recovery.signal"
assert_false "the key is not in the restored settings" grep -qF "$BACKUP_ENCRYPTION_KEY" "$R/full/postgresql.auto.conf"
assert_true "restore_command calls wal get --strict" grep -q "wal get --strict %f %p" "$R/full/postgresql.auto.conf"
"$PG_FIXTURES/dbsum.sh" -h "$R/full" -p "$PORT" -U "$CARIS_PG_USER" -d rich >"$TEST_TMP/dst-rich.sum"
assert_sum_equal "$TEST_TMP/src-rich.sum" "$TEST_TMP/dst-rich.sum" "the restored database's fingerprint equals the source's"
assert_eq 300 "$(q_at full 'SELECT count(*) FROM t')" "all three batches replayed"
stop_at full

# 5. PITR to the recorded times, a restore point, an LSN: exactly the rows before each
restore_start t1 --to-time "$T1"
assert_rc 0 "restore --to-time T1"
assert_eq "100 1" "$(q_at t1 "SELECT count(*) || ' ' || max(batch) FROM t")" "to T1: exactly batch 1"
assert_match '^[0-9]{4}-' "$(json_get "$OUT_FILE" '["reachedTime"]')" "the time reached is reported"
stop_at t1

# 5a. the same recovery with the daemon running: PostgreSQL's `wal get` goes through it (the
# daemon writes each segment into the temporary file wal get passes it), same rows
dcmd=(env BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off "$CARIS_BIN" --env-file "$envf" daemon)
[[ $(id -u) == 0 ]] && dcmd=(runuser -u "$CARIS_PG_OS_USER" -- "${dcmd[@]}")
bg_start "${dcmd[@]}"
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
# shellcheck disable=SC2317
_daemon_up() { [[ -S $BACKUP_DIR/metadata/daemon.sock ]] && grep -q 'started' "$DAEMON_ERR"; }
wait_until 60 _daemon_up
assert_eq 0 "$?" "the daemon started"
restore_start t1d --to-time "$T1"
assert_rc 0 "restore --to-time T1 with the daemon running"
assert_eq "100 1" "$(q_at t1d "SELECT count(*) || ' ' || max(batch) FROM t")" "to T1 through the daemon: exactly batch 1"
stop_at t1d
assert_exit 0 cb --env-file "$envf" --json schedule status
assert_true "the recovery's wal get went through the daemon" \
    test "$(json_eval "$OUT_FILE" 'd["walArchiver"]["gets"]["served"]')" -gt 0
# the daemon itself, not runuser around it (which would end its session by signal)
dpid=$DAEMON
[[ $(id -u) == 0 ]] && dpid=$(pgrep -P "$DAEMON")
kill -TERM "$dpid"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon stops on SIGTERM"
restore_start t2 --to-time "$T2"
assert_rc 0 "restore --to-time T2 (no id: the latest backup before T2)"
assert_eq "200 2" "$(q_at t2 "SELECT count(*) || ' ' || max(batch) FROM t")" "to T2: exactly batches 1 and 2"
stop_at t2
restore_start rp --to-name after_batch_2 "$id1"
assert_rc 0 "restore --to-name after_batch_2"
assert_eq "200" "$(q_at rp "SELECT count(*) FROM t")" "to the restore point: batches 1 and 2"
stop_at rp
restore_start xid --to-xid "$X2" "$id1"
assert_rc 0 "restore --to-xid X2"
assert_eq "200 2" "$(q_at xid "SELECT count(*) || ' ' || max(batch) FROM t")" "to the commit of X2: batches 1 and 2"
stop_at xid
restore_start lsn --to-lsn "$L1" --target-action pause "$id1"
assert_rc 0 "restore --to-lsn L1 --target-action pause"
assert_eq paused "$(json_get "$OUT_FILE" '["state"]')" "recovery paused at the target"
assert_eq "100" "$(q_at lsn "SELECT count(*) FROM t")" "to L1: batch 1 only"
assert_eq t "$(q_at lsn "SELECT pg_is_in_recovery()")" "paused: still in recovery"
stop_at lsn

restore_start imm --to-immediate --target-action shutdown "$id1"
assert_rc 0 "restore --to-immediate --target-action shutdown"
assert_eq "shut down" "$(json_get "$OUT_FILE" '["state"]')" "the server shut down at the target"
assert_contains "$(as_pg "$CARIS_PG_BIN/pg_controldata" "$R/imm")" "shut down in recovery" "pg_controldata: shut down in recovery"

# 5b. the WAL archive beside the base backup: a recovery window from it, no gap; prune keeps
# the WAL from the base backup's start on (what a restore needs), the older segments go
run cb --json wal list
assert_rc 0 "wal list --json"
assert_eq 1 "$(json_get "$OUT_FILE" '["recoveryWindow"]["baseBackups"]')" "the window counts the physical base backup"
assert_true "the recovery window has an earliest time" json_eval "$OUT_FILE" 'd["recoveryWindow"]["earliest"] is not None'
assert_eq 0 "$(json_eval "$OUT_FILE" 'len(d["gaps"])')" "no gap in the archive"
earliest=$(json_get "$OUT_FILE" '["recoveryWindow"]["earliest"]')
# the window's earliest time is one a restore takes (it was the backup's end rounded down to the
# second, before it: "no physical backup ends before the recovery target")
run cb --env-file "$envf" --json restore database --physical --pgdata "$R/earliest" --to-time "$earliest"
assert_rc 0 "a restore to the window's earliest time ($earliest) is taken (no --start: files and settings)"
as_pg rm -rf "$R/earliest"
# a WAL record that cannot be read: the restore says so (it was passed over without a word)
rec=$(find "$REPO/records/wal" -type f ! -name '.*' -printf '%T@ %p\n' | sort -n | tail -n 1 | cut -d' ' -f2-)
cp -p "$rec" "$TEST_TMP/rec.kept"
flip_byte "$rec" 100
run cb --env-file "$envf" restore database --physical --pgdata "$R/damagedrec" --to-name after_batch_2
assert_contains "$ERR" "1 WAL record of the archive cannot be read" "a restore says a WAL record cannot be read"
as_pg rm -rf "$R/damagedrec"
cp -p "$TEST_TMP/rec.kept" "$rec"
run cb --json prune
assert_rc 0 "prune with a physical base backup"
assert_eq "$S1" "$(json_get "$OUT_FILE" '["wal"]["keepFromLsn"]')" "prune keeps WAL from the base backup's start LSN"
# the estimate of forget --dry-run --prune leaves out the base backup it would forget: no base
# left, all the WAL is kept (it counted the base as kept)
run cb --json forget --dry-run --prune "$id1"
assert_rc 0 "forget --dry-run --prune of the base backup"
assert_eq "0 None" "$(json_eval "$OUT_FILE" '"%d %s" % (d["prune"]["wal"]["baseBackups"], d["prune"]["wal"]["keepFromLsn"])')" \
    "the WAL estimate counts no base backup, and keeps all"
run cb --env-file "$envf" --json restore database --physical --pgdata "$R/afterprune" --to-name after_batch_2
assert_rc 0 "after prune the base backup and its WAL still restore (no --start: files and settings)"
as_pg rm -rf "$R/afterprune"

# 6. data checksums on: no page of a clean cluster is reported; a flipped byte is (file, block)
pg_pause || fail "stop for pg_checksums"
as_pg "$CARIS_PG_BIN/pg_checksums" --enable -D "$data" >/dev/null || fail "pg_checksums --enable"
pg_resume || fail "restart with checksums"
run cb --json backup database --physical
assert_rc 0 "backup of a cluster with checksums: no bad page"
assert_cmp "$(json_get "$OUT_FILE" '["physical"]["pagesChecked"]')" -gt 100 "pages were checked"
assert_eq 0 "$(json_get "$OUT_FILE" '["physical"]["badPages"]')" "no page of the clean cluster is reported bad"
assert_true "the summary counts the pages written during the backup" \
    json_eval "$OUT_FILE" 'isinstance(d["physical"]["pagesSkippedRecent"], int)'
rel=$(psql_db "$CARIS_PG_DB" -c "SELECT pg_relation_filepath('t')")
# a page whose header was overwritten with garbage: a bad checksum and an LSN after the
# backup's start (here the highest there is), as a page torn in the copy by a concurrent write
# has; but such a page's LSN is at most the backup's end, and this one lies after it: it was
# not being written, it is damaged, and reported bad (before the fix it was counted among the
# pages written during the backup, and the backup said ok)
psql_db "$CARIS_PG_DB" -c "CREATE TABLE torn (i int); INSERT INTO torn VALUES (1)" || fail "create torn"
torn_rel=$(psql_db "$CARIS_PG_DB" -c "SELECT pg_relation_filepath('torn')")
pg_pause || fail "stop to flip a byte"
flip_byte "$data/$rel" 5000
printf '\377\377\377\377\377\377\377\377' | dd of="$data/$torn_rel" bs=1 seek=0 count=8 conv=notrunc status=none
pg_resume || fail "restart after the flip"
run cb --json backup database --physical
assert_rc 3 "a bad page: the backup completes with warnings (exit 3)"
assert_eq 2 "$(json_get "$OUT_FILE" '["physical"]["badPages"]')" "two bad pages (the flipped byte and the page with an LSN from the future)"
assert_eq 0 "$(json_get "$OUT_FILE" '["physical"]["pagesSkippedRecent"]')" "the page with an LSN after the backup's end is not counted as written during it"
assert_contains "$ERR" "invalid page checksum in $torn_rel block 0" "the page with a garbage header is named"
assert_contains "$ERR" "its LSN FFFFFFFF/FFFFFFFF lies after the backup's end" "and why it is not a page written during the backup"
assert_eq "$torn_rel" "$(json_get "$OUT_FILE" '["warnings"][1]["file"]')" "its warning names the file"
assert_eq "$rel" "$(json_get "$OUT_FILE" '["warnings"][0]["file"]')" "the warning names the file"
assert_true "a physical backup with a bad page: the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "backup database --physical" "$OUT_FILE"
assert_eq 0 "$(json_get "$OUT_FILE" '["warnings"][0]["block"]')" "the warning names the block"
assert_contains "$ERR" "invalid page checksum in $rel block 0" "the warning is printed"

# 7. check reads physical backups like any other; a damaged backup is never put in place
run cb check --read-data
assert_rc 0 "check --read-data of a repository with physical backups and WAL"
python3 - "$REPO" <<'PY'
import os, sys
for d, _, files in os.walk(os.path.join(sys.argv[1], "data")):
    for f in files:
        if f.startswith("."):
            continue
        p = os.path.join(d, f)
        n = os.path.getsize(p)
        with open(p, "r+b") as h:
            h.seek(n // 2)
            b = h.read(1)
            h.seek(n // 2)
            h.write(bytes([b[0] ^ 1]))
PY
run cb --env-file "$envf" restore database --physical --pgdata "$R/damaged"
assert_rc 4 "restore of a damaged backup fails as damage (exit 4)"
assert_false "nothing is put in place" test -e "$R/damaged"
assert_eq "" "$(find "$R" -maxdepth 1 -name '.damaged.caris-restore-*')" "no temporary directory is left"

give_server
test_done

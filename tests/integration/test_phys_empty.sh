#!/usr/bin/env bash
# A physical base backup of a cluster holding empty files: an empty table in a tablespace of
# its own (that tablespace's archive then holds one relation file, of 0 bytes) and an empty
# file in the data directory (a standby's standby.signal is one). Each used to hang the
# backup for good (an empty buffer stored as if it were a descriptor, polled forever); the
# backup must finish, and its restore must bring the empty files back and recover. A restore
# killed while it writes: the next restore of that directory removes what it left. Restore
# --overwrite: refused while a server may run on DIR; names the previous cluster a killed one
# left.
# shellcheck disable=SC2154 # envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
pg_start
pitr_setup
pitr_stop_started_at_exit
pitr_archive_on "$CARIS_BIN --quiet --env-file $envf wal push %p"
ts=$TEST_TMP/ts_empty
mkdir -p "$ts"
[[ $(id -u) == 0 ]] && chown "$CARIS_PG_OS_USER:" "$ts"
psql_db "$CARIS_PG_DB" -c "CREATE TABLESPACE ts_empty LOCATION '$ts'" \
    -c "CREATE TABLE e (i int) TABLESPACE ts_empty" \
    -c "CREATE TABLE k (i int)" -c "INSERT INTO k SELECT generate_series(1, 1000)" ||
    fail "create the tablespace and tables"
as_pg touch "$CARIS_PG_SOCKET/caris_test_empty_file"

# a hang is a failure here, not the suite's 15-minute timeout
backup() { as_pg timeout -k 10 120 "$CARIS_BIN" "$@"; }
run backup --json backup database --physical
assert_rc 0 "a full physical backup with an empty relation file and an empty file finishes"
id1=$(json_get "$OUT_FILE" '["id"]')
run backup --json backup database --physical --incremental
assert_rc 0 "an incremental one too"
id2=$(json_get "$OUT_FILE" '["id"]')

q() { psql_db "${2:-$CARIS_PG_DB}" -c "$1"; }
pitr_archive_all q
for id in "$id1" "$id2"; do
    [[ -n $id ]] || continue
    pitr_restore_start "r-$id" "$id"
    assert_rc 0 "restore --physical --start of $id"
    assert_true "the empty file is restored, empty" test -f "$R/r-$id/caris_test_empty_file" -a ! -s "$R/r-$id/caris_test_empty_file"
    rq() { as_pg env PGPASSWORD="$CARIS_PG_PASSWORD" "$CARIS_PG_BIN/psql" -h "$R/r-$id" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" -Atc "$1"; }
    assert_eq "0 1000" "$(rq "SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM k)" | tr '|' ' ')" \
        "the restored cluster has the empty table and the rows of $id"
    # its logical replication subscriptions (the source's) must not run: their workers would
    # consume the source's replication slots at the publishers
    assert_eq 0 "$(rq "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'logical replication launcher'")" \
        "no logical replication launcher runs in the restored server of $id"
done

# --pgdata relative to the current directory, with --start: the server is told an absolute
# socket directory (a relative one it resolved from the data directory, and stopped at once:
# "could not create lock file"), and the restore reaches it there
PORT=$(free_port)
STARTED+=("$R/rel")
run as_pg sh -c 'cd "$1" && shift && exec "$@"' sh "$R" "$CARIS_BIN" --env-file "$envf" --json restore database --physical \
    --pgdata rel --start --port "$PORT" --wait 90 "$id1"
assert_rc 0 "restore --physical --pgdata rel (relative) --start"
assert_eq promoted "$(json_get "$OUT_FILE" '["state"]')" "the server started on the relative directory was promoted"
assert_eq "$R/rel.log" "$(json_get "$OUT_FILE" '["serverLog"]')" "its log is named by its absolute path"
assert_true "its socket is in the data directory" test -S "$R/rel/.s.PGSQL.$PORT"

# a restored server that gives up at once (a library of the source's shared_preload_libraries
# not installed where it is restored): --start says it stopped, with its log's words, instead of
# waiting out --wait for a server it never saw and saying that it keeps running. The setting
# goes into the source's postgresql.auto.conf for one backup (the source is not restarted).
psql_db postgres -c "ALTER SYSTEM SET shared_preload_libraries = 'caris_no_such_library'" || fail "ALTER SYSTEM"
run backup --json backup database --physical
assert_rc 0 "a physical backup whose settings load a library that is not installed"
idlib=$(json_get "$OUT_FILE" '["id"]')
psql_db postgres -c "ALTER SYSTEM RESET shared_preload_libraries" || fail "ALTER SYSTEM RESET"
pitr_restore_start nolib "$idlib"
assert_rc 10 "restore --start of it fails"
assert_contains "$ERR" "stopped before reaching the recovery target" "it says the server stopped"
assert_contains "$ERR" "caris_no_such_library" "it quotes the server's log"
assert_not_contains "$ERR" "keeps running" "it does not say the server keeps running"

# --target-action pause with the source's hot_standby = off: PostgreSQL shuts down at the
# target instead (it cannot pause without hot standby); the restore reports that, not a server
# that "stopped before reaching the recovery target"
psql_db postgres -c "ALTER SYSTEM SET hot_standby = off" || fail "ALTER SYSTEM"
run backup --json backup database --physical
assert_rc 0 "a physical backup whose settings have hot_standby = off"
idhs=$(json_get "$OUT_FILE" '["id"]')
psql_db postgres -c "ALTER SYSTEM RESET hot_standby" || fail "ALTER SYSTEM RESET"
pitr_restore_start nohs --to-immediate --target-action pause "$idhs"
assert_rc 0 "restore --to-immediate --target-action pause --start of it"
assert_eq "shut down" "$(json_get "$OUT_FILE" '["state"]')" "it reports the server shut down at the target"

# a base backup of a standby (standby.signal in its data directory, primary_conninfo in its
# settings): restored, the server recovers from the archive and is promoted; it restored
# standby.signal, which put the server in standby mode, following the source's primary instead
# (here it cannot log in) and never promoting. The file is there for one backup only (the
# source is not restarted).
# Its commands for its own archive are not run by the restored server either (a standby's
# archive_cleanup_command removes WAL from that archive): recovery_end_command, run when
# recovery ends, shows it.
as_pg touch "$data/standby.signal"
psql_db postgres -c "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=$CARIS_PG_PORT user=$CARIS_PG_USER'" \
    -c "ALTER SYSTEM SET recovery_end_command = 'touch $R/recovery_end_ran'" ||
    fail "ALTER SYSTEM SET primary_conninfo, recovery_end_command"
run backup --json backup database --physical
assert_rc 0 "a physical backup holding standby.signal"
idsb=$(json_get "$OUT_FILE" '["id"]')
as_pg rm -f "$data/standby.signal"
psql_db postgres -c "ALTER SYSTEM RESET primary_conninfo" -c "ALTER SYSTEM RESET recovery_end_command" ||
    fail "ALTER SYSTEM RESET"
pitr_restore_start sb "$idsb"
assert_rc 0 "restore --start of a standby's base backup"
assert_eq promoted "$(json_get "$OUT_FILE" '["state"]')" "the restored server was promoted"
assert_contains "$ERR" "its standby.signal is not restored" "the restore says it left out standby.signal"
assert_false "no standby.signal in the restored directory" test -e "$R/sb/standby.signal"
assert_false "the source's recovery_end_command did not run" test -e "$R/recovery_end_ran"

# an LSN after the last archived WAL: PostgreSQL refuses to finish recovery; the hint says the
# archive ends before the target and what to do (it said only: see the server's log)
pitr_restore_start lsnfar --to-lsn FFFFFFFF/0 "$id1"
assert_rc 10 "restore --to-lsn after the archive's end --start fails"
assert_contains "$ERR" "recovery ended before configured recovery target was reached" "it quotes the server's log"
assert_contains "$ERR" "the archived WAL ends before the target FFFFFFFF/0" "the hint says the archive ends before the target"

# --timeline N of a timeline the archive does not have: refused, saying so (it said that no
# base backup ends before the recovery target, of a restore without a target)
run cb --env-file "$envf" restore database --physical --pgdata "$R/tl7" --timeline 7
assert_rc 2 "restore --timeline 7 (not in the archive) is refused"
assert_contains "$ERR" "timeline 7 is not in the WAL archive (its timelines: 1)" "it says the archive has no timeline 7"
assert_false "nothing was written" test -e "$R/tl7"
# a timeline number PostgreSQL would read otherwise (recovery_target_timeline is parsed with
# base 0: 010 is timeline 8 there) or the hex of a WAL file name: refused, not misread (it was
# checked here as decimal and written as given)
for tl in 01 00000010 +1 " 1"; do
    run cb --env-file "$envf" restore database --physical --pgdata "$R/tl-odd" --timeline "$tl"
    assert_rc 2 "restore --timeline '$tl' is refused"
    assert_contains "$ERR" "decimal" "the error says how to write it ('$tl')"
    assert_false "nothing was written ('$tl')" test -e "$R/tl-odd"
done

# a target time still to come (a year mistyped): refused before anything is written (it was
# restored, and PostgreSQL refused to finish recovery once started)
run cb --env-file "$envf" restore database --physical --pgdata "$R/future" --to-time 2099-01-01T00:00:00Z
assert_rc 2 "restore --to-time in the future is refused"
assert_contains "$ERR" "recovery target 2099-01-01T00:00:00" "it names the target"
assert_contains "$ERR" "is in the future" "it says it is in the future"
assert_false "nothing was written" test -e "$R/future"
# a time that does not parse is quoted as given, its fraction too (it was quoted without it)
run cb --env-file "$envf" restore database --physical --pgdata "$R/future" --to-time 2026-13-30T14:05:00.25Z
assert_rc 2 "restore --to-time with month 13 is refused"
assert_contains "$ERR" "invalid time '2026-13-30T14:05:00.25Z'" "the time is quoted as given"

# a restore killed (SIGKILL) while it writes leaves its half-written directory beside DIR (a
# copy of the cluster's files); the next restore of DIR removes it, and says so. The kill comes
# from the test hook CARIS_TEST_PHYS_RESTORE_CRASH (the process ends as kill -9 would once the
# files are written beside DIR): stopping the restore by a signal raced with its end
run as_pg env CARIS_TEST_PHYS_RESTORE_CRASH=1 "$CARIS_BIN" --env-file "$envf" restore database --physical --pgdata "$R/killed" "$id1"
assert_rc 137 "a restore killed while it writes"
assert_true "a restore writing its directory beside DIR" compgen -G "$R/.killed.caris-restore-*"
assert_false "DIR itself was never made" test -e "$R/killed"
assert_true "the killed restore left its half-written directory" compgen -G "$R/.killed.caris-restore-*"
run cb --env-file "$envf" restore database --physical --pgdata "$R/killed" "$id1"
assert_rc 0 "a restore of DIR again after the killed one"
assert_contains "$ERR" "that a restore killed earlier left beside" "it says it removed the leftover"
assert_false "no half-written directory is left beside DIR" compgen -G "$R/.killed.caris-restore-*"
assert_true "DIR is restored" test -f "$R/killed/PG_VERSION"
# not started, no target: where the archived WAL ends is said, to check the server's log by
assert_match 'its log.s "redo done at" must be at or past [0-9A-F]+/[0-9A-F]+ \(the start of [0-9A-F]{24}, the last WAL segment archived\)' \
    "$OUT" "not started: the LSN the started server's recovery must reach is said"

# --overwrite over a data directory a server may be running on is refused, and DIR is left as
# it was: the source cluster's postmaster (the same user), and a process of another user (pid
# 1; the restore cannot signal it, which once counted as "not running")
as_pg touch "$R/killed/caris_test_mark"
pm=$(head -n 1 "$data/postmaster.pid")
for who in "$pm" 1; do
    printf '%s\n' "$who" | as_pg tee "$R/killed/postmaster.pid" >/dev/null
    run cb --env-file "$envf" restore database --physical --overwrite --pgdata "$R/killed" "$id1"
    assert_rc 2 "restore --overwrite with postmaster.pid naming process $who is refused"
    assert_contains "$ERR" "running on data directory $R/killed" "the error says a server may be running (process $who)"
    assert_true "DIR is left as it was (process $who)" test -f "$R/killed/caris_test_mark" -a -f "$R/killed/postmaster.pid"
done
assert_contains "$ERR" "belongs to another user" "the error says the process is another user's"
assert_contains "$ERR" "remove DIR/postmaster.pid" "the hint says what to do when it is no server"
# what a restore judged at its start is judged again before its files go in place (audit L2,
# L3): files put into the empty DIR meanwhile (another restore) were removed by the swap, and
# a server started on DIR during an --overwrite restore lost its data directory (exit 0). The
# restore holds before the swap (the test hook CARIS_TEST_PHYS_RESTORE_HOLD) while the test
# changes DIR; it then refuses, DIR as it was, and nothing is left beside DIR.
hold=$R/hold
held_restore() { # ARGS...: a restore held before its swap; its status once released in HELD_RC
    rm -f "$hold.held"
    as_pg touch "$hold"
    if ((EUID == 0)); then
        bg_start runuser -u "$CARIS_PG_OS_USER" -- env CARIS_TEST_PHYS_RESTORE_HOLD="$hold" \
            "$CARIS_BIN" --env-file "$envf" restore database --physical "$@"
    else
        CARIS_TEST_PHYS_RESTORE_HOLD=$hold bg_start "$CARIS_BIN" --env-file "$envf" restore database --physical "$@"
    fi
    # shellcheck disable=SC2317 # called through wait_until
    _held() { [[ -e $hold.held ]] || ! kill -0 "$BG_PID" 2>/dev/null; }
    wait_until 120 _held && [[ -e $hold.held ]] ||
        fail "the restore did not reach its hold" "$(_tail "$BG_ERR")"
}
held_done() { # releases the held restore; HELD_RC, and its stderr in HELD_ERR
    as_pg rm -f "$hold"
    wait "$BG_PID"
    HELD_RC=$?
    HELD_ERR=$(cat "$BG_ERR")
}
as_pg mkdir "$R/race"
held_restore --pgdata "$R/race" "$id1"
as_pg touch "$R/race/important.txt"
held_done
assert_eq 2 "$HELD_RC" "a file put into the empty DIR during the restore: refused (exit 2)"
assert_contains "$HELD_ERR" "not empty any more: something wrote into it during the restore" "... saying why"
assert_true "the file is kept" test -f "$R/race/important.txt"
assert_eq "important.txt" "$(ls -A "$R/race")" "DIR holds only it"
assert_false "nothing is left beside DIR" compgen -G "$R/.race.caris-*"
as_pg touch "$R/killed/caris_test_mark"
as_pg rm -f "$R/killed/postmaster.pid"
held_restore --overwrite --pgdata "$R/killed" "$id1"
printf '%s\n' "$pm" | as_pg tee "$R/killed/postmaster.pid" >/dev/null
held_done
assert_eq 2 "$HELD_RC" "a server started on DIR during an --overwrite restore: refused (exit 2)"
assert_contains "$HELD_ERR" "a server was started on data directory $R/killed during the restore (process $pm)" "... saying so"
assert_true "DIR is left as it was" test -f "$R/killed/caris_test_mark" -a -f "$R/killed/postmaster.pid"
assert_false "nothing is left beside DIR" compgen -G "$R/.killed.caris-*"
as_pg rm -f "$R/killed/caris_test_mark"

# a restore --overwrite killed between its two renames leaves the previous cluster at
# .DIR.caris-old-PID: the next restore names it (it may be the only copy) and keeps it; a
# stale postmaster.pid (no such process: above pid_max) does not stop --overwrite
nopid=$(($(cat /proc/sys/kernel/pid_max) + 1))
as_pg mkdir "$R/.killed.caris-old-$nopid" && as_pg touch "$R/.killed.caris-old-$nopid/PG_VERSION"
printf '%s\n' "$nopid" | as_pg tee "$R/killed/postmaster.pid" >/dev/null
run cb --env-file "$envf" restore database --physical --overwrite --pgdata "$R/killed" "$id1"
assert_rc 0 "restore --overwrite over DIR with a stale postmaster.pid"
assert_contains "$ERR" "$R/.killed.caris-old-$nopid holds the data directory that was at $R/killed" "it names the previous cluster a killed restore left"
assert_contains "$ERR" "may be the only copy" "it says why it keeps it"
assert_true "the previous cluster is kept" test -f "$R/.killed.caris-old-$nopid/PG_VERSION"
assert_false "DIR was replaced" test -e "$R/killed/caris_test_mark"
assert_true "DIR holds the restored cluster" test -f "$R/killed/PG_VERSION" -a -f "$R/killed/recovery.signal"
assert_eq ".killed.caris-old-$nopid" "$(cd "$R" && compgen -G '.killed.caris-*')" "this restore left nothing beside DIR"
as_pg mv "$R/killed" "$R/gone"
run cb --env-file "$envf" restore database --physical --pgdata "$R/killed" "$id1"
assert_rc 0 "a restore into the missing DIR"
assert_contains "$ERR" "that is why $R/killed was missing" "it says why DIR was missing"

# a base backup recorded with --time dated back really ended now: a recovery to a time before
# its real end does not take it (it was taken by its summary's time, and the recovery went
# past its target with exit 0: audit L4)
run cb --json backup database --physical --time 2020-01-01T00:00:00Z
assert_rc 0 "a base backup dated back with --time"
dated=$(json_get "$OUT_FILE" '["id"]')
run cb --env-file "$envf" restore database --physical --pgdata "$R/dated" --to-time 2021-01-01T00:00:00Z "$dated"
assert_rc 2 "a recovery to a time before its real end, from the backup dated back, is refused"
assert_contains "$ERR" "ends after the recovery target" "... saying why"
run cb --env-file "$envf" restore database --physical --pgdata "$R/dated" --to-time 2021-01-01T00:00:00Z
assert_cmp "$RC" -ne 0 "without an id, no backup is taken for that time"
assert_contains "$ERR" "no physical backup ends before the recovery target" "... saying so"
assert_false "nothing was written" test -e "$R/dated"
run cb --json wal list
assert_not_contains "$(json_eval "$OUT_FILE" 'd["recoveryWindow"]["earliest"]')" "2020-" \
    "the recovery window does not begin at the dated-back time either"
test_done

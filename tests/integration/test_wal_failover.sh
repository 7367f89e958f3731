#!/usr/bin/env bash
# A failover while `wal receive` streams from the primary, against a real PostgreSQL 15. The
# primary P archives into the repository (wal push) and is streamed (wal receive); a standby S
# is promoted (timeline 2, its 00000002.history archived) while P goes on for a moment: the
# rows P commits after the switch point are the ones the failover discarded, and the streamed
# partial of P's last segment holds them. A recovery that follows timeline 2 must not replay
# them: `wal get` serves the old timeline's partial only up to the point where timeline 2
# branched off it. Checked: `wal get` alone cuts the partial at the switch point recorded in
# 00000002.history (zeros after it), serves it whole with --timeline 1, refuses --timeline 0;
# the daemon, running since before the failover (its repository handle has not seen the
# history S archived with --no-daemon), does the same; a restore of a base backup taken before
# the failover to the end of the archive (timeline latest, through the daemon) has the rows
# committed before the switch and not those P committed after it; with --timeline current
# (timeline 1, the one the backup was taken on) it has both.
# shellcheck disable=SC2154 # data, envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
pitr_setup
pitr_stop_started_at_exit
pitr_archive_on "$CARIS_BIN --quiet --env-file $envf wal push %p"
echo "local replication all trust" | as_pg tee -a "$data/pg_hba.conf" >/dev/null
psql_db postgres -c "SELECT pg_reload_conf()" >/dev/null
psql_db "$CARIS_PG_DB" -c "CREATE TABLE t (i int PRIMARY KEY, batch int)" || fail "create t"
batch() { "$@" "INSERT INTO t SELECT g, $B FROM generate_series($B * 1000 + 1, $B * 1000 + 100) g"; }
qp() { psql_db "$CARIS_PG_DB" -c "$1"; }

run cb --json backup database --physical
assert_rc 0 "base backup B1 on timeline 1" || test_done
B1=$(json_get "$OUT_FILE" '["id"]')

# what runs in the background as the server's user (the repository is that user's): setpriv
# execs the command itself, so that its pid is the command's
pgu=()
((EUID == 0)) && pgu=(setpriv --reuid="$(id -u "$CARIS_PG_OS_USER")" --regid="$(id -g "$CARIS_PG_OS_USER")" --clear-groups)
# the daemon of the repository, from now on: P's archive_command and the restores' wal get go
# through it
bg_start "${pgu[@]}" env BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off \
    "$CARIS_BIN" --env-file "$envf" daemon
DAEMON=$BG_PID DLOG=$BG_ERR
# shellcheck disable=SC2317
daemon_up() { cb --json schedule status >"$TEST_TMP/st.json" 2>/dev/null; }
wait_until 60 daemon_up || { fail "the daemon starts" "$(_tail "$DLOG")"; test_done; }

# the standby S, streaming from P; it inherits P's archive settings and archives once promoted
sb=$R/standby
SPORT=$(free_port)
mkdir -p "$sb" && chmod 0700 "$sb"
((EUID == 0)) && chown "$CARIS_PG_OS_USER:" "$sb"
as_pg "$CARIS_PG_BIN/pg_basebackup" -h "$data" -p "$CARIS_PG_PORT" -U "$CARIS_PG_USER" -D "$sb" -X stream -R -c fast \
    >/dev/null 2>"$TEST_TMP/basebackup.err" || { fail "pg_basebackup for the standby" "$(_tail "$TEST_TMP/basebackup.err")"; test_done; }
# S archives without the daemon (as a promoted server on another host would): what it stores
# the daemon's open repository has not seen
printf "port = %s\nunix_socket_directories = '%s'\narchive_command = '%s'\n" "$SPORT" "$sb" \
    "$CARIS_BIN --quiet --env-file $envf wal push --no-daemon %p" | as_pg tee -a "$sb/postgresql.auto.conf" >/dev/null
STARTED+=("$sb")
as_pg "$CARIS_PG_BIN/pg_ctl" start -D "$sb" -l "$sb/server.log" -w -s >/dev/null || { fail "start the standby" "$(_tail "$sb/server.log")"; test_done; }
qs() { "$CARIS_PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$sb" -p "$SPORT" -U "$CARIS_PG_USER" -d "${2:-$CARIS_PG_DB}" -c "$1" </dev/null; }

# wal receive from P, flushing every second
bg_start "${pgu[@]}" "$CARIS_BIN" --env-file "$envf" wal receive --create-slot --flush-seconds 1
RECV=$BG_PID RLOG=$BG_ERR
# shellcheck disable=SC2317
streaming() { grep -q "streaming WAL from" "$RLOG"; }
wait_until 60 streaming || { fail "wal receive streams from P" "$(_tail "$RLOG")"; test_done; }

# batch 1 on P, replayed by S
B=1 batch qp || fail "batch 1"
lsn1=$(psql_db postgres -c "SELECT pg_current_wal_insert_lsn()")
# shellcheck disable=SC2317
replayed() { [[ $(qs "SELECT pg_last_wal_replay_lsn() >= '$lsn1'::pg_lsn" postgres) == t ]]; }
wait_until 60 replayed || fail "S replays batch 1"

# S is promoted: timeline 2 branches off at the switch point; its history is archived
as_pg "$CARIS_PG_BIN/pg_ctl" promote -D "$sb" -w -s || fail "promote S"
# shellcheck disable=SC2317
history_archived() {
    cb --json wal list >"$TEST_TMP/list.json" 2>"$TEST_TMP/list.err" &&
        [[ $(json_eval "$TEST_TMP/list.json" "any(f['name'] == '00000002.history' for f in d['files'])") == true ]]
}
wait_until 60 history_archived || fail "S archives 00000002.history" "$(_tail "$TEST_TMP/list.err")"
run cb wal get --no-daemon 00000002.history "$R/h"
assert_rc 0 "wal get 00000002.history"
swlsn=$(awk '$1 == 1 { print $2 }' "$R/h")
off=$((16#${swlsn#*/} % (16 * 1024 * 1024)))

# batch 2 on P after the switch (the WAL the failover discards), flushed by wal receive
B=2 batch qp || fail "batch 2"
lsn2=$(psql_db postgres -c "SELECT pg_current_wal_insert_lsn()")
seg2=$(psql_db postgres -c "SELECT pg_walfile_name('$lsn2')")
# shellcheck disable=SC2317
slot_past() { [[ $(psql_db postgres -c "SELECT restart_lsn >= '$lsn2'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'caris_backup'") == t ]]; }
wait_until 60 slot_past || fail "wal receive flushes batch 2 ($lsn2)" "$(_tail "$RLOG")"
note "timeline 1 ends at $swlsn ($off bytes into its segment); batch 2 of timeline 1 ends at $lsn2 in $seg2"
assert_eq "$(psql_db postgres -c "SELECT pg_walfile_name('$swlsn')")" "$seg2" "batch 2 lies in the segment where timeline 2 branched off"
assert_eq t "$(psql_db postgres -c "SELECT '$lsn2'::pg_lsn > '$swlsn'::pg_lsn")" "and after the switch point"
# batch 3 on S (timeline 2): its segment is not complete, so not archived
B=3 batch qs || fail "batch 3"
# P dies, and S goes too before its segment is complete: a clean shutdown would archive both
# servers' last segments whole (PostgreSQL switches segments at a shutdown when it archives)
kill -TERM "$RECV"
wait "$RECV"
assert_eq 0 "$?" "wal receive stops on SIGTERM"
as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$data" -m immediate -w -s >/dev/null || fail "stop P"
as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$sb" -m immediate -w -s >/dev/null || fail "stop S"
run cb --json wal list
assert_eq "False False" "$(json_eval "$OUT_FILE" "str(any(f['name'] == '$seg2' for f in d['files'])) + ' ' + str(any(f['name'] == '00000002${seg2:8}' for f in d['files']))")" \
    "neither timeline's $seg2 is archived whole (only P's streamed partials, and S's .partial of timeline 1)"

# wal get itself: the partial is served up to the switch point that 00000002.history records
# (the newest timeline's, as for 'latest', or --timeline 2), and whole with --timeline 1;
# alone and through the daemon (which is told the timeline)
run cb --json wal list
plen=$(json_eval "$OUT_FILE" "max(f['size'] for f in d['files'] if f['kind'] == 'stream' and f['name'].startswith('$seg2.'))")
note "its longest streamed partial has $plen bytes"
nonzero() { tail -c +$(($2 + 1)) "$1" | head -c $(($3 - $2)) | tr -d '\0' | wc -c; }
check_served() { # WHAT LATEST FULL
    assert_eq $((16 * 1024 * 1024)) "$(stat -c %s "$2")" "$1: a whole segment"
    assert_true "$1: the same bytes up to the switch point, with and without --timeline 1" cmp -n "$off" "$2" "$3"
    assert_eq 0 "$(nonzero "$2" "$off" $((16 * 1024 * 1024)))" "$1: past the switch point, zeros only (timeline latest)"
    assert_ne 0 "$(nonzero "$3" "$off" "$plen")" "$1: with --timeline 1, the partial's bytes past the switch point"
}
run cb wal get --no-daemon "$seg2" "$R/latest.seg"
assert_rc 0 "wal get $seg2"
assert_contains "$ERR" "only up to $swlsn, where timeline 1 ends (00000002.history)" "it says it serves the partial up to the switch point, and why"
run cb wal get --no-daemon --timeline 1 "$seg2" "$R/full.seg"
assert_rc 0 "wal get --timeline 1 $seg2"
assert_not_contains "$ERR" "only up to" "with --timeline 1 the partial is served whole"
check_served "alone" "$R/latest.seg" "$R/full.seg"
run cb wal get --no-daemon --timeline 2 "$seg2" "$R/two.seg"
assert_rc 0 "wal get --timeline 2 $seg2"
assert_true "--timeline 2 cuts it at the same point (timeline 2's history)" cmp -s "$R/latest.seg" "$R/two.seg"
run cb wal get --timeline 0 "$seg2" "$R/x.seg"
assert_rc 255 "--timeline 0 is refused (255, as every failure of wal get: PostgreSQL stops the recovery, never ends it)"
assert_false "and writes nothing" test -e "$R/x.seg"
run cb wal get "$seg2" "$R/d-latest.seg"
assert_rc 0 "wal get $seg2 through the daemon"
run cb wal get --timeline 1 "$seg2" "$R/d-full.seg"
assert_rc 0 "wal get --timeline 1 $seg2 through the daemon"
check_served "through the daemon" "$R/d-latest.seg" "$R/d-full.seg"
daemon_up
assert_eq true "$(json_eval "$TEST_TMP/st.json" 'd["walArchiver"]["gets"]["served"] >= 2')" "the daemon served both (walArchiver.gets.served)"
assert_contains "$(cat "$DLOG")" "only up to $swlsn, where timeline 1 ends (00000002.history)" "the daemon logs the cut"

q_at() { "$CARIS_PG_BIN/psql" -X -q -At -h "$R/$1" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" -c "$2" </dev/null; }
batches_at() { q_at "$1" "SELECT string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) FROM t"; }

# timeline latest (2): timeline 1 up to the switch point, then the end of the archive
pitr_restore_start x "$B1"
assert_rc 0 "restore B1 to the end of the archive, timeline latest" || _tail "$ERR_FILE"
assert_eq 1 "$(batches_at x)" "timeline 2's history: batch 1, not batch 2 (committed on timeline 1 after the switch)"
as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/x" -m fast -w -s >/dev/null

# timeline current (1): the streamed partial is timeline 1's own WAL, batch 2 included
pitr_restore_start y --timeline current "$B1"
assert_rc 0 "restore B1 to the end of the archive, timeline current" || _tail "$ERR_FILE"
assert_eq 1,2 "$(batches_at y)" "timeline 1's history: batches 1 and 2"
daemon_up
assert_eq true "$(json_eval "$TEST_TMP/st.json" 'd["walArchiver"]["gets"]["served"] >= 6')" "the restores' wal get went through the daemon"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon stops on SIGTERM"

test_done

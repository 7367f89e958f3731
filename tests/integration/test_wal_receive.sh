#!/usr/bin/env bash
# wal receive against a real PostgreSQL 15: streams WAL over a physical replication slot,
# stores each segment when it is complete and the unfinished one every flush interval (a
# streamed partial). Checked: the refusals (bad slot name, a bad flush interval, a slot that
# does not exist), a partial is stored and reported flushed inside the segment, `wal get`
# serves it zero-padded with the server's bytes, the streamed segment is byte-identical to the
# server's, the slot's restart LSN moves past it only once it is archived (the standby status
# update reports what is durable), prune drops the partials the segment supersedes, SIGTERM
# ends it with exit 0, a second run goes on from where the archive ends, the daemon runs it
# (BACKUP_WAL_STREAMING) and restarts it, a timeline switch (a promoted standby) is followed,
# and when the server is killed the receiver stores what it had received before exiting with
# the error.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
init_repo
data=$CARIS_PG_SOCKET # the source's data directory
if [[ $(id -u) == 0 ]]; then
    echo "host replication all 127.0.0.1/32 scram-sha-256" | as_pg tee -a "$data/pg_hba.conf" >/dev/null
else
    echo "host replication all 127.0.0.1/32 scram-sha-256" >>"$data/pg_hba.conf"
fi
psql_db postgres -c "SELECT pg_reload_conf()" >/dev/null

run cb wal receive --slot Bad-Name
assert_rc 2 "a slot name with upper case and - is refused"
run cb wal receive --flush-seconds 0
assert_rc 2 "--flush-seconds 0 is refused"
assert_contains "$ERR" "seconds" "the error says what a flush interval is"
run env BACKUP_WAL_FLUSH_SECONDS=x "$CARIS_BIN" wal receive
assert_rc 2 "BACKUP_WAL_FLUSH_SECONDS=x is refused"
run cb wal receive --slot nosuchslot
assert_rc 10 "a slot that does not exist fails (database error)"
assert_contains "$ERR" "--create-slot" "the hint names --create-slot"

# each run's log is a new .bg*.err file: lib.sh scans those for sanitizer reports
nlog=0
new_log() { nlog=$((nlog + 1)); log=$TEST_TMP/.bg-receive-$nlog.err; }
wait_log() { # PATTERN MESSAGE: poll the receiver's log, 60 s deadline
    local deadline=$((SECONDS + 60))
    until grep -q -- "$1" "$log" 2>/dev/null; do
        ((SECONDS < deadline)) || { _tail "$log"; fail "$2"; return 1; }
        read -r -t 0.1 <> <(:) || true
    done
    pass "$2"
}
new_log
"$CARIS_BIN" wal receive --create-slot --flush-seconds 1 2>"$log" &
rpid=$!
wait_log "streaming WAL from" "receive connects and starts streaming"
psql_db "$CARIS_PG_DB" -c "CREATE TABLE t (i int, pad text)" \
    -c "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g" >/dev/null || fail "insert"
seg=$(psql_db postgres -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
ins=$(psql_db postgres -c "SELECT pg_current_wal_insert_lsn()")
# partials: within the flush interval the unfinished segment is stored, and the slot's
# restart LSN (what receive reported flushed) moves past the insert before the segment ends
slot_past() { [[ $(psql_db postgres -c "SELECT restart_lsn >= '$1'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'caris_backup'") == t ]]; }
wait_until 60 slot_past "$ins"
assert_eq 0 "$?" "a partial is flushed: the slot's restart LSN reaches the insert's LSN $ins inside segment $seg"
assert_contains "$(cat "$log")" "stored WAL partial $seg." "receive logs the stored partial of $seg"
run cb wal get "$seg" "$TEST_TMP/partial-seg"
assert_rc 0 "wal get $seg serves the streamed partial (the segment is not archived whole)"
assert_eq $((16 * 1024 * 1024)) "$(stat -c %s "$TEST_TMP/partial-seg")" "the partial is padded to a whole segment"
plen=$(grep -o "stored WAL partial $seg\.[0-9A-F]*" "$log" | tail -1 | sed 's/.*\.//')
plen=$((16#$plen))
assert_true "the served partial's bytes are the server's" cmp -n "$plen" "$data/pg_wal/$seg" "$TEST_TMP/partial-seg"
assert_eq 0 "$(tail -c +$((plen + 1)) "$TEST_TMP/partial-seg" | tr -d '\0' | wc -c)" "after them: zeros"
run cb --json wal list
assert_eq true "$(json_eval "$OUT_FILE" "any(f['kind'] == 'stream' and f['name'].startswith('$seg.') for f in d['files'])")" \
    "wal list shows the partials as kind stream"
t0=$EPOCHREALTIME
sw=$(psql_db postgres -c "SELECT pg_switch_wal()")
# the slot holds the segment until receive reports it flushed: the server's copy is still there
cp "$data/pg_wal/$seg" "$TEST_TMP/server-seg" || fail "copy the server's segment $seg"
wait_log "stored WAL segment $seg" "receive stores segment $seg when it is complete"
note "segment stored $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }') ms after pg_switch_wal (poll granularity 0.1 s)"
deadline=$((SECONDS + 60))
until [[ $(psql_db postgres -c "SELECT restart_lsn > '$sw'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'caris_backup'") == t ]]; do
    ((SECONDS < deadline)) || { fail "the slot's restart LSN moves past the archived segment"; break; }
    read -r -t 0.1 <> <(:) || true
done
pass "the slot's restart LSN moved past the archived segment (status update = durable LSN)"
run cb wal get "$seg" "$TEST_TMP/got-seg"
assert_rc 0 "wal get of the streamed segment"
assert_true "the streamed segment is byte-identical to the server's" cmp -s "$TEST_TMP/server-seg" "$TEST_TMP/got-seg"
# the whole segment supersedes its partials: prune removes them, wal get serves the segment
run cb --json prune
assert_rc 0 "prune"
run cb --json wal list
assert_eq 0 "$(json_eval "$OUT_FILE" "len([f for f in d['files'] if f['kind'] == 'stream' and f['name'].startswith('$seg.')])")" \
    "prune removed the partials of $seg (superseded by the whole segment)"
run cb wal get "$seg" "$TEST_TMP/got-seg2"
assert_rc 0 "wal get $seg after prune"
assert_true "it is the whole segment" cmp -s "$TEST_TMP/server-seg" "$TEST_TMP/got-seg2"
kill -TERM "$rpid"
wait "$rpid"
assert_eq 0 "$?" "SIGTERM: receive exits 0"
assert_contains "$(cat "$log")" "stopping: flushed up to" "it says how far it flushed"

# a second run goes on from the end of the archive (the next segment's start)
new_log
"$CARIS_BIN" wal receive 2>"$log" &
rpid=$!
wait_log "streaming WAL from" "a second receive starts streaming"
psql_db "$CARIS_PG_DB" -c "INSERT INTO t SELECT g, 'y' FROM generate_series(1, 1000) g" >/dev/null || fail "insert 2"
next=$(psql_db postgres -c "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
psql_db postgres -c "SELECT pg_switch_wal()" >/dev/null
wait_log "stored WAL segment $next" "the second run stores the next segment $next"
assert_not_contains "$(cat "$log")" "stored WAL segment $seg" "it does not stream $seg again"
kill -TERM "$rpid"
wait "$rpid"
assert_eq 0 "$?" "SIGTERM: the second receive exits 0"

# SIGTERM stores what arrived since the last flush (none within the test: --flush-seconds
# 3600) before exit 0
sent_past() { [[ $(psql_db postgres -c "SELECT bool_or(sent_lsn >= '$1'::pg_lsn) FROM pg_stat_replication") == t ]]; }
new_log
"$CARIS_BIN" wal receive --flush-seconds 3600 2>"$log" &
rpid=$!
wait_log "streaming WAL from" "a receive with a long flush interval starts streaming"
psql_db "$CARIS_PG_DB" -c "INSERT INTO t SELECT g, 'w' FROM generate_series(1, 1000) g" >/dev/null || fail "insert 2b"
ins=$(psql_db postgres -c "SELECT pg_current_wal_insert_lsn()")
wait_until 60 sent_past "$ins"
assert_eq 0 "$?" "the server sent the insert's WAL ($ins)"
kill -TERM "$rpid"
wait "$rpid"
assert_eq 0 "$?" "SIGTERM: exit 0"
assert_contains "$(cat "$log")" "stored WAL partial" "SIGTERM stored the partial first"
wait_until 60 slot_past "$ins"
assert_eq 0 "$?" "and reported it flushed (the slot's restart LSN reaches the insert)"
pa=$(grep -o "stored WAL partial [0-9A-F.]*stream" "$log" | tail -1 | cut -d' ' -f4)
# a second run re-streams that segment from its start and, stopped after one more row, stores
# a longer partial of it, which supersedes the first
new_log
"$CARIS_BIN" wal receive --flush-seconds 3600 2>"$log" &
rpid=$!
wait_log "streaming WAL from" "a receive streams the same segment again"
psql_db "$CARIS_PG_DB" -c "INSERT INTO t VALUES (1, 'v')" >/dev/null || fail "insert 2c"
ins=$(psql_db postgres -c "SELECT pg_current_wal_insert_lsn()")
wait_until 60 sent_past "$ins"
kill -TERM "$rpid"
wait "$rpid"
assert_eq 0 "$?" "SIGTERM: exit 0"
pb=$(grep -o "stored WAL partial [0-9A-F.]*stream" "$log" | tail -1 | cut -d' ' -f4)
assert_eq "${pa%%.*}" "${pb%%.*}" "the second partial ($pb) is of the same segment as the first ($pa)"
assert_true "and longer" test "$((16#$(cut -d. -f2 <<<"$pb")))" -gt "$((16#$(cut -d. -f2 <<<"$pa")))"

# the daemon with BACKUP_WAL_STREAMING=true: it creates its slot, streams and flushes every
# BACKUP_WAL_FLUSH_SECONDS; schedule status shows it; the server going away makes it wait and
# start again (backoff); SIGTERM stops it cleanly
run env BACKUP_WAL_STREAMING=true BACKUP_WAL_FLUSH_SECONDS=0 "$CARIS_BIN" daemon
assert_rc 6 "the daemon refuses BACKUP_WAL_FLUSH_SECONDS=0 (configuration error)"
bg_start env BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off \
    BACKUP_WAL_STREAMING=true BACKUP_WAL_FLUSH_SECONDS=1 BACKUP_WAL_SLOT=caris_daemon "$CARIS_BIN" daemon
DAEMON=$BG_PID DLOG=$BG_ERR
# shellcheck disable=SC2317
st_json() { "$CARIS_BIN" --json schedule status >"$TEST_TMP/st.json" 2>/dev/null; }
# shellcheck disable=SC2317
st_state() { st_json && [[ $(json_get "$TEST_TMP/st.json" '["walStreaming"]["state"]') == "$1" ]]; }
wait_until 60 st_state streaming
assert_eq 0 "$?" "schedule status: walStreaming.state is streaming"
assert_true "schedule status --json: the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "schedule status" "$TEST_TMP/st.json"
assert_eq t "$(psql_db postgres -c "SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'caris_daemon'")" "the daemon created its slot caris_daemon"
psql_db "$CARIS_PG_DB" -c "INSERT INTO t SELECT g, 'd' FROM generate_series(1, 1000) g" >/dev/null || fail "insert d"
ins=$(psql_db postgres -c "SELECT pg_current_wal_insert_lsn()")
# shellcheck disable=SC2317
st_flushed() {
    st_json || return 1
    local f
    f=$(json_get "$TEST_TMP/st.json" '["walStreaming"]["flushedLsn"]') || return 1
    [[ $f =~ / ]] && [[ $(psql_db postgres -c "SELECT '$f'::pg_lsn >= '$ins'::pg_lsn") == t ]]
}
wait_until 60 st_flushed
assert_eq 0 "$?" "schedule status: flushedLsn reaches the insert ($ins) within the flush interval"
# wal get through the daemon (its cached records) serves the partial too
segd=$(psql_db postgres -c "SELECT pg_walfile_name('$ins')")
offd=$(psql_db postgres -c "SELECT file_offset FROM pg_walfile_name_offset('$ins')")
run cb wal get "$segd" "$TEST_TMP/daemon-partial"
assert_rc 0 "wal get $segd through the daemon"
assert_eq $((16 * 1024 * 1024)) "$(stat -c %s "$TEST_TMP/daemon-partial")" "a whole (padded) segment"
assert_true "its first $offd bytes are the server's" cmp -n "$offd" "$data/pg_wal/$segd" "$TEST_TMP/daemon-partial"
st_json
assert_eq true "$(json_eval "$TEST_TMP/st.json" 'd["walArchiver"]["gets"]["served"] >= 1')" "the daemon served it (walArchiver.gets.served)"
pg_pause || fail "stop the server"
wait_until 60 st_state waiting
assert_eq 0 "$?" "the server stopped: walStreaming.state is waiting"
assert_eq true "$(json_eval "$TEST_TMP/st.json" 'd["walStreaming"]["lastError"] is not None and d["walStreaming"]["retryAt"] is not None')" \
    "it says why (lastError) and when it tries again (retryAt)"
pg_resume || fail "start the server again"
# shellcheck disable=SC2317
st_back() { st_state streaming && [[ $(json_get "$TEST_TMP/st.json" '["walStreaming"]["restarts"]') -ge 1 ]]; }
wait_until 120 st_back
assert_eq 0 "$?" "it starts again once the server is back (restarts >= 1, streaming)"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon stops on SIGTERM"
assert_contains "$(cat "$DLOG")" "stopping: flushed up to" "its wal receive stopped cleanly, saying how far it flushed"

# a timeline switch while receiving: streaming from a standby that is then promoted, wal
# receive follows the switch (TIMELINE_HISTORY stored, streaming goes on on timeline 2)
echo "local replication all trust" | as_pg tee -a "$data/pg_hba.conf" >/dev/null
psql_db postgres -c "SELECT pg_reload_conf()" >/dev/null
sb=$TEST_TMP/standby
SPORT=$(free_port)
mkdir -p "$sb" && chmod 0700 "$sb"
[[ $(id -u) == 0 ]] && chown "$CARIS_PG_OS_USER:" "$sb"
as_pg "$CARIS_PG_BIN/pg_basebackup" -h "$data" -p "$CARIS_PG_PORT" -U "$CARIS_PG_USER" -D "$sb" -X stream -R -c fast >/dev/null 2>"$TEST_TMP/basebackup.err" ||
    fail "pg_basebackup for the standby" "$(_tail "$TEST_TMP/basebackup.err")"
printf "port = %s\nunix_socket_directories = '%s'\narchive_mode = off\n" "$SPORT" "$sb" | as_pg tee -a "$sb/postgresql.auto.conf" >/dev/null
as_pg "$CARIS_PG_BIN/pg_ctl" start -D "$sb" -l "$sb/server.log" -w -s >/dev/null || { fail "start the standby" "$(_tail "$sb/server.log")"; test_done; }
_standby_stop() { as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$sb" -m immediate -w -s >/dev/null 2>&1; }
new_log
env "BACKUP_PG_REPLICATION_URL=postgresql://$CARIS_PG_USER@/$CARIS_PG_DB?host=$sb&port=$SPORT" \
    "$CARIS_BIN" wal receive --create-slot --slot sb --flush-seconds 1 2>"$log" &
rpid=$!
wait_log "streaming WAL from .* on timeline 1" "receive streams from the standby (timeline 1)"
psql_db "$CARIS_PG_DB" -c "INSERT INTO t SELECT g, 's' FROM generate_series(1, 1000) g" >/dev/null || fail "insert s"
as_pg "$CARIS_PG_BIN/pg_ctl" promote -D "$sb" -w -s || fail "promote the standby"
wait_log "timeline switch: timeline 1 ends at" "receive sees the timeline switch"
wait_log "stored timeline history 00000002.history" "it stores 00000002.history"
wait_log "streaming WAL from .* on timeline 2" "and streams on on timeline 2"
"$CARIS_PG_BIN/psql" -X -q -At -h "$sb" -p "$SPORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" \
    -c "INSERT INTO t SELECT g, 'p' FROM generate_series(1, 1000) g" </dev/null || fail "insert on the promoted standby"
wait_log "stored WAL partial 00000002" "a partial of timeline 2 is stored"
kill -TERM "$rpid"
wait "$rpid"
assert_eq 0 "$?" "SIGTERM after the switch: exit 0"
_standby_stop

# the server dies (kill -9): what the receiver got since its last flush (here: no periodic
# flush within the test, --flush-seconds 3600) is stored before it exits with the error
new_log
"$CARIS_BIN" wal receive --flush-seconds 3600 2>"$log" &
rpid=$!
wait_log "streaming WAL from" "a third receive starts streaming"
psql_db "$CARIS_PG_DB" -c "INSERT INTO t SELECT g, 'z' FROM generate_series(1, 1000) g" >/dev/null || fail "insert 3"
cur=$(psql_db postgres -c "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
ins=$(psql_db postgres -c "SELECT pg_current_wal_insert_lsn()")
wait_until 60 sent_past "$ins"
assert_eq 0 "$?" "the server sent the insert's WAL ($ins)"
pm=$(head -1 "$data/postmaster.pid")
# shellcheck disable=SC2046
kill -KILL "$pm" $(pgrep -P "$pm")
wait "$rpid"
assert_eq 10 "$?" "the server killed: receive exits with a database error"
assert_contains "$(cat "$log")" "stored WAL partial $cur." "it stored what it had received of $cur first"
run cb wal get "$cur" "$TEST_TMP/last-seg"
assert_rc 0 "wal get $cur serves that partial"
plen=$(grep -o "stored WAL partial $cur\.[0-9A-F]*" "$log" | tail -1 | sed 's/.*\.//')
off=$(( $(printf '%d' "0x${ins#*/}") % (16 * 1024 * 1024) ))
assert_true "the partial reaches the insert's LSN ($((16#$plen)) >= $off bytes into $cur)" test "$((16#$plen))" -ge "$off"
# prune removes exactly the superseded partials: those with a longer partial or the whole
# segment archived (worked out here from the listing before); the longest of each stays
run cb --json wal list
cp "$OUT_FILE" "$TEST_TMP/before.json"
run cb --json prune
assert_rc 0 "prune"
run cb --json wal list
sup=$(python3 - "$TEST_TMP/before.json" "$OUT_FILE" "$pa" <<'EOF2'
import json, sys
before = json.load(open(sys.argv[1]))["files"]
after = {f["name"] for f in json.load(open(sys.argv[2]))["files"]}
key = lambda f: (f["timeline"], f.get("log"), f.get("seg"))
whole = {key(f) for f in before if f["kind"] == "segment"}
longest = {}
for f in before:
    if f["kind"] == "stream" and f["size"] > longest.get(key(f), 0):
        longest[key(f)] = f["size"]
superseded = {f["name"] for f in before if f["kind"] == "stream" and
              (key(f) in whole or f["size"] < longest[key(f)])}
expected = {f["name"] for f in before} - superseded
print("ok" if after == expected and sys.argv[3] in superseded else
      "superseded %s; kept %s; expected %s" % (sorted(superseded), sorted(after), sorted(expected)))
EOF2
)
assert_eq ok "$sup" "prune removed exactly the superseded partials (the first SIGTERM partial among them) and kept the rest"
test_done

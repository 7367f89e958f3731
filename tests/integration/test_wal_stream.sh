#!/usr/bin/env bash
# Streaming WAL with bounded loss, against a real PostgreSQL 15: `wal receive --flush-seconds 1`
# streams over a physical replication slot (archive_command pushes whole segments too) while
# pgbench runs and
# a second client commits marker rows (sequence number, clock_timestamp()); the primary and
# wal receive are killed with SIGKILL at once (postmaster, every backend, the receiver: a host
# crash, so only what the receiver had flushed counts); `restore database --physical`
# with no target replays the archive to its end (the last segment is served from its newest
# streamed partial, zero-padded) and the restored server is promoted.
#
# What is asserted holds whatever the timing: once the slot's restart LSN (what wal receive
# reported flushed = durably in the repository) has passed the flush LSN L observed together
# with marker row K (visible, so its commit record is at or before L; synchronous_commit = on),
# every marker row 1..K is in the restored cluster, with no hole. The lost window in seconds
# (the last commit on the old server, read after its crash recovery, minus the last recovered
# commit) is measured and printed, not asserted.
# shellcheck disable=SC2154 # data, envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

# commits are acknowledged only once flushed (what the walsender may send): the test measures
# caris-backup's loss, not an asynchronous commit's
export CARIS_PG_FSYNC=on
FLUSH=${CARIS_TEST_STREAM_FLUSH_SECONDS:-1} # the flush interval (measurements: 5, the default)
LATER=${CARIS_TEST_STREAM_LATER:-400}       # marker commits between the poll and the crash
pg_start
pitr_setup # repository, $data, $envf, $R; cb as the server's user
pg_allow_replication
# archive_command too (base backups require archive_mode = on): whole segments then reach
# the archive twice, from both (the identical-content rule); the unfinished one only from
# wal receive's partials
psql_db postgres -c "ALTER SYSTEM SET archive_mode = on" \
    -c "ALTER SYSTEM SET archive_command = '$CARIS_BIN --quiet --env-file $envf wal push %p'" \
    -c "ALTER SYSTEM SET wal_level = replica" >/dev/null || fail "ALTER SYSTEM archive settings"
pg_pause && pg_resume || fail "restart with archive_mode = on"

# 1. wal receive first (it creates the slot, so the base backup's WAL is all streamed), then
# the base backup
rcmd=("$CARIS_BIN" --env-file "$envf" wal receive --create-slot --flush-seconds "$FLUSH")
[[ $(id -u) == 0 ]] && rcmd=(runuser -u "$CARIS_PG_OS_USER" -- "${rcmd[@]}")
bg_start "${rcmd[@]}"
RECV=$BG_PID
log=$BG_ERR
# shellcheck disable=SC2317
_streaming() { grep -q "streaming WAL from" "$log"; }
wait_until 60 _streaming
assert_eq 0 "$?" "wal receive starts streaming"
psql_db "$CARIS_PG_DB" -c "CREATE TABLE marks (i bigint PRIMARY KEY, at timestamptz NOT NULL)" >/dev/null || fail "create marks"
"$CARIS_PG_BIN/pgbench" -i -q -s 2 -h "$data" -p "$CARIS_PG_PORT" -U "$CARIS_PG_USER" "$CARIS_PG_DB" >"$TEST_TMP/pgbench-init.log" 2>&1 || fail "pgbench -i" "$(_tail "$TEST_TMP/pgbench-init.log")"
run cb --env-file "$envf" --json backup database --physical
assert_rc 0 "backup database --physical"

# 2. the load: pgbench (TPC-B-like, 2 clients) and one client committing marker rows, each its
# own transaction, in order (one client: row i commits before row i + 1 starts)
cat >"$TEST_TMP/marks.sql" <<'EOF'
INSERT INTO marks SELECT coalesce(max(i), 0) + 1, clock_timestamp() FROM marks;
EOF
pgb() { "$CARIS_PG_BIN/pgbench" -n -h "$data" -p "$CARIS_PG_PORT" -U "$CARIS_PG_USER" "$@" "$CARIS_PG_DB"; }
pgb -c 2 -T 600 >"$TEST_TMP/pgbench.log" 2>&1 &
PGB=$!
# -l: a line per acknowledged transaction, with the time the client got the commit's answer
pgb -c 1 -T 600 -l --log-prefix="$TEST_TMP/marks" -f "$TEST_TMP/marks.sql" >"$TEST_TMP/pgbench-marks.log" 2>&1 &
PGM=$!
# shellcheck disable=SC2317
_marks() { [[ $(psql_db "$CARIS_PG_DB" -c "SELECT count(*) >= 200 FROM marks") == t ]]; }
wait_until 120 _marks
assert_eq 0 "$?" "marker rows are being committed"

# 3. a known commit: marker K is visible, so its commit record is at or before the flush LSN
# read after it; then wait until wal receive has reported that LSN flushed (the slot's
# restart LSN: what is durably in the repository)
read -r K L < <(psql_db "$CARIS_PG_DB" -F ' ' -c "SELECT max(i) FROM marks" -c "SELECT pg_current_wal_flush_lsn()" | paste -sd ' ')
[[ $K =~ ^[0-9]+$ && $L =~ / ]] || fail "marker K='$K' flush LSN L='$L'"
# shellcheck disable=SC2317
_flushed() { [[ $(psql_db postgres -c "SELECT restart_lsn >= '$L'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'caris_backup'") == t ]]; }
wait_until 60 _flushed
assert_eq 0 "$?" "wal receive reported flushed past L=$L (marker $K committed before it)"
F=$(psql_db postgres -c "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'caris_backup'")
# the crash comes a number of commits later, not right after the flush just polled for, so
# that the measured window is not biased towards the start of a flush interval
# shellcheck disable=SC2317
_later() { [[ $(psql_db "$CARIS_PG_DB" -c "SELECT max(i) >= $K + $LATER FROM marks") == t ]]; }
wait_until 120 _later
assert_eq 0 "$?" "$LATER more markers committed"

# 4. crash: SIGKILL at the same instant to the postmaster, every backend and wal receive
# itself (the worst case, a host going down: the receiver cannot store what it received
# since its last flush)
pm=$(head -1 "$data/postmaster.pid")
rpid=$RECV
[[ $(id -u) == 0 ]] && rpid=$(pgrep -P "$RECV")
# shellcheck disable=SC2046
kill -KILL "$rpid" "$pm" $(pgrep -P "$pm")
wait "$PGB" "$PGM" 2>/dev/null
wait "$RECV" 2>/dev/null
assert_contains "$(cat "$log")" "stored WAL partial" "wal receive stored streamed partials"
npart=$(grep -c "stored WAL partial" "$log")
nseg=$(grep -c "stored WAL segment" "$log")
note "wal receive stored $nseg whole segments and $npart partials; its last lines: $(tail -2 "$log" | tr '\n' '|')"

# 5. restore to the latest point (no target), start, promote
PORT=$(free_port)
run cb --env-file "$envf" --json restore database --physical --pgdata "$R/latest" --start --port "$PORT" --wait 120
assert_rc 0 "restore --physical --start with no target (replays to the end of the streamed WAL)"
assert_eq promoted "$(json_get "$OUT_FILE" '["state"]')" "the restored server was promoted: recovery ended at the end of valid WAL"
q_at() { "$CARIS_PG_BIN/psql" -X -q -At -h "$R/latest" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" -c "$1" </dev/null; }
got=$(q_at "SELECT count(*) FILTER (WHERE i <= $K) || ' ' || max(i) || ' ' || count(*) FROM marks")
read -r have_k M n <<<"$got"
assert_eq "$K" "$have_k" "every marker committed before the flushed LSN (1..$K) is recovered"
assert_eq "$M" "$n" "the recovered markers have no hole (1..$M)"
rlog=$(json_get "$OUT_FILE" '["serverLog"]')
assert_contains "$(cat "$rlog")" "redo done" "recovery ended cleanly at the end of the valid WAL (the zero padding)"
assert_not_contains "$(cat "$rlog")" "PANIC" "no PANIC in the restored server's log"
note "restored server: $(grep -E 'invalid record|redo done|last completed transaction|selected new timeline' "$rlog" | cut -c 25- | tr '\n' '|')"

# 5b. the restored server runs on timeline 2: wal receive from it stores 00000002.history
# first (a recovery from streamed WAL alone can then follow the switch)
echo "local replication all trust" | as_pg tee -a "$R/latest/pg_hba.conf" >/dev/null
q_at "SELECT pg_reload_conf()" >/dev/null
# recv_tl2 [ARGS...]: wal receive from the restored server (slot tl2) in the background, as
# the server's user; BG_PID its process (the runuser wrapper as root), BG_ERR its log
recv_tl2() {
    local c=(env "BACKUP_PG_REPLICATION_URL=postgresql://$CARIS_PG_USER@/$CARIS_PG_DB?host=$R/latest&port=$PORT"
        "$CARIS_BIN" --env-file "$envf" wal receive "$@" --slot tl2 --flush-seconds "$FLUSH")
    [[ $(id -u) == 0 ]] && c=(runuser -u "$CARIS_PG_OS_USER" -- "${c[@]}")
    bg_start "${c[@]}"
}
# recv_stop PID: SIGTERM to recv_tl2's wal receive (the child of runuser as root)
recv_stop() {
    local p=$1
    [[ $(id -u) == 0 ]] && p=$(pgrep -P "$1")
    kill -TERM "$p"
}
recv_tl2 --create-slot
RECV2=$BG_PID
log2=$BG_ERR
# shellcheck disable=SC2317
_history() { grep -q "stored timeline history 00000002.history" "$log2"; }
wait_until 60 _history
assert_eq 0 "$?" "wal receive on timeline 2 stores 00000002.history" || _tail "$log2"
recv_stop "$RECV2"
wait "$RECV2"
assert_eq 0 "$?" "SIGTERM: it exits 0"
run cb --env-file "$envf" --json wal list
assert_eq true "$(json_eval "$OUT_FILE" "any(f['name'] == '00000002.history' for f in d['files'])")" "wal list has 00000002.history"

# 5c. the repository moved away and another made at its path while wal receive streams: it
# stops storing (it went on into the moved directory, where no recovery looks) and fails,
# saying why; the slot keeps the WAL for the next run on the repository at the path
recv_tl2
RECV3=$BG_PID
log3=$BG_ERR
# shellcheck disable=SC2317
_streaming3() { grep -q "streaming WAL from" "$log3"; }
wait_until 60 _streaming3
assert_eq 0 "$?" "wal receive streams from timeline 2 again" || _tail "$log3"
mv "$BACKUP_DIR/repository" "$BACKUP_DIR/repository.moved"
assert_exit 0 cb --env-file "$envf" --quiet init
q_at "CREATE TABLE moved AS SELECT g FROM generate_series(1, 20000) g" >/dev/null || fail "WAL after the move"
# shellcheck disable=SC2317
_gone3() { ! kill -0 "$RECV3" 2>/dev/null; }
wait_until 60 _gone3
if ! assert_eq 0 "$?" "wal receive ends once the repository is not the one it opened"; then
    _tail "$log3"
    recv_stop "$RECV3" # still storing into the moved directory: stopped, so that the test goes on
fi
wait "$RECV3"
assert_eq 8 "$?" "... with an I/O error (exit 8)"
assert_contains "$(cat "$log3")" "is not the directory wal receive opened (moved, replaced or removed since)" \
    "... saying the repository was moved or replaced"
as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/latest" -m fast -w -s >/dev/null 2>&1

# 6. the loss, from the marker client's log (a line per acknowledged commit, in order, with
# the time its answer arrived): commits acknowledged by the old server, N; recovered, M
mlogs=("$TEST_TMP"/marks.[0-9]*) # pgbench's log: marks.<its pid>
mlog=${mlogs[0]}
N=$(wc -l <"$mlog")
assert_true "the old server acknowledged at least the recovered markers ($N >= $M)" test "$N" -ge "$M"
ack() { awk -v n="$1" 'NR == n { printf "%d.%06d", $5, $6 }' "$mlog"; }
lost=$(awk -v a="$(ack "$N")" -v b="$(ack "$M")" 'BEGIN { printf "%.3f", a - b }')
note "RPO: $((N - M)) of $N acknowledged marker commits lost; lost window $lost s (the last acknowledged commit minus the last recovered one; flush interval $FLUSH s); flushed LSN polled: $F"
echo "RPO_LOST_SECONDS=$lost RPO_LOST_COMMITS=$((N - M)) FLUSH_SECONDS=$FLUSH" >"$TEST_TMP/rpo.txt"
test_done

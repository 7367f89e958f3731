#!/usr/bin/env bash
# Physical backups and PITR side by side with pgBackRest (Debian 12: 2.45) on one PostgreSQL 15
# cluster: pgbench at SCALE (default 50, ~1 GB data directory), archive_command feeding both
# (caris-backup wal push, then pgbackrest archive-push). pgBackRest runs with compress-type=zst,
# process-max=2, repo1-cipher-type=aes-256-cbc. Measured for each: full backup (wall, CPU,
# repository bytes), then `pgbench -t TX` (default 20000), a second backup (pgBackRest: incr;
# caris: --incremental, changed pages as page deltas: wall, bytes added, the backup's own
# bytes without the WAL archived meanwhile), a restore of that incremental's files (wall),
# and restore of the latest backup + WAL replay to a time recorded after pgbench (wall, until
# the server is promoted). A program, not a test: prints figures and always exits 0.
#
#   bench/bench-pitr.sh [SCALE] [TX]   (as root: the server and both tools run as the
#                                        test server's system user)
#   CARIS_BIN (default build/src/cli/caris-backup), BENCH_DIR (default /tmp/caris-bench-pitr)
set -u
SCALE=${1:-50}
TX=${2:-20000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${CARIS_BIN:-$ROOT/build/src/cli/caris-backup}")
DIR=${BENCH_DIR:-/tmp/caris-bench-pitr}
say() { printf '%s\n' "$*"; }
command -v pgbackrest >/dev/null || { say "pgbackrest missing: scripts/install-deps.sh --bench"; exit 0; }
if [[ -e $DIR ]]; then
    [[ -f $DIR/.caris-bench-pitr ]] || { say "$DIR exists and was not made by this script"; exit 0; }
    CARIS_PG_DIR=$DIR/pg "$ROOT/scripts/pg-test-server.sh" stop >/dev/null 2>&1
    for d in "$DIR"/r/*; do [[ -f $d/postmaster.pid ]] && runuser -u caris-pgtest -- /usr/lib/postgresql/15/bin/pg_ctl stop -D "$d" -m immediate >/dev/null 2>&1; done
    rm -rf "$DIR"
fi
mkdir -p "$DIR" && : >"$DIR/.caris-bench-pitr" && chmod 0755 "$DIR"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export CARIS_PG_PORT=$PORT CARIS_PG_DIR=$DIR/pg
eval "$("$ROOT/scripts/pg-test-server.sh" start)" || { say "cannot start PostgreSQL"; exit 0; }
U=$CARIS_PG_OS_USER
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u "$U" -- "$@"; else "$@"; fi; }
DATA=$CARIS_PG_SOCKET
PSQL() { "$CARIS_PG_BIN/psql" -X -q -At -h "$DATA" -p "$PORT" -U caris -d "${DB:-caris_test}" "$@" </dev/null; }

# caris: repository and env file; pgBackRest: its own repository and configuration
export BACKUP_DIR=$DIR/caris BACKUP_ENCRYPTION_KEY=bench-pitr-key-0123456789abcdefghijklmn
envf=$DIR/caris.env
(umask 077 && printf 'BACKUP_DIR=%s\nBACKUP_ENCRYPTION_KEY=%s\nPOSTGRES_URL=%s\n' "$BACKUP_DIR" "$BACKUP_ENCRYPTION_KEY" "$POSTGRES_URL" >"$envf")
"$BIN" --quiet init >/dev/null || { say "init failed"; exit 0; }
cfg=$DIR/pgbackrest.conf
mkdir -p "$DIR/pgbr-repo" "$DIR/pgbr-log" "$DIR/pgbr-lock" "$DIR/pgbr-spool"
cat >"$cfg" <<CONF
[global]
repo1-path=$DIR/pgbr-repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-pitr-pgbackrest-cipher-pass-0123456789
compress-type=zst
process-max=2
log-path=$DIR/pgbr-log
lock-path=$DIR/pgbr-lock
spool-path=$DIR/pgbr-spool
log-level-console=error
repo1-retention-full=9999
start-fast=y

[bench]
pg1-path=$DATA
pg1-port=$PORT
pg1-socket-path=$DATA
pg1-user=caris
CONF
[[ $(id -u) == 0 ]] && chown -R "$U:" "$DIR/caris" "$envf" "$cfg" "$DIR"/pgbr-*
BR() { as_pg pgbackrest --config="$cfg" --stanza=bench "$@"; }
CB() { as_pg env BACKUP_DIR="$BACKUP_DIR" BACKUP_ENCRYPTION_KEY="$BACKUP_ENCRYPTION_KEY" POSTGRES_URL="$POSTGRES_URL" "$BIN" "$@"; }
DB=postgres PSQL -c "ALTER SYSTEM SET archive_mode = on" \
    -c "ALTER SYSTEM SET archive_command = '$BIN --quiet --env-file $envf wal push %p && pgbackrest --config=$cfg --stanza=bench archive-push %p'" >/dev/null
echo "host replication all 127.0.0.1/32 scram-sha-256" | as_pg tee -a "$DATA/pg_hba.conf" >/dev/null
"$ROOT/scripts/pg-test-server.sh" pause && "$ROOT/scripts/pg-test-server.sh" resume || { say "restart failed"; exit 0; }
BR stanza-create >/dev/null || { say "pgbackrest stanza-create failed"; exit 0; }
"$CARIS_PG_BIN/pgbench" -i -q -s "$SCALE" -h "$DATA" -p "$PORT" -U caris caris_test >/dev/null 2>&1
say "pgbench scale $SCALE: data directory $(du -sh "$DATA" | cut -f1)"

# timed LABEL CMD...: wall seconds and CPU seconds (user+sys of the command and its children;
# not the server's)
timed() {
    local label=$1 out w u s
    shift
    out=$( { TIMEFORMAT='%R %U %S'; time "$@" >"$DIR/last.out" 2>"$DIR/last.err"; } 2>&1 | tail -n 1)
    [[ -s $DIR/last.err ]] && tail -n 3 "$DIR/last.err"
    read -r w u s <<<"$out"
    printf '%-34s wall %6.1f s   cpu %6.1f s\n' "$label" "$w" "$(echo "$u + $s" | bc)"
}
bytes() { du -sb "$1" | cut -f1; }
mb() { echo "scale=1; $1 / 1048576" | bc; }
# each backup waits (in BASE_BACKUP / pgBackRest's archive check) for the WAL archive to
# catch up: let it catch up first, so that the timings are the backups' own
caught_up() {
    local seg
    seg=$(DB=postgres PSQL -c "SELECT pg_walfile_name(pg_switch_wal())")
    local deadline=$((SECONDS + 900))
    until [[ $(DB=postgres PSQL -c "SELECT coalesce(last_archived_wal >= '$seg', false) FROM pg_stat_archiver") == t ]]; do
        ((SECONDS < deadline)) || { say "archive did not catch up"; return 1; }
        read -r -t 0.2 _ <> <(:) || true
    done
}
caught_up
c0=$(bytes "$BACKUP_DIR/repository")
timed "caris full (physical)" CB --quiet backup database --physical
c1=$(bytes "$BACKUP_DIR/repository")
caught_up
p0=$(bytes "$DIR/pgbr-repo")
timed "pgbackrest full" BR --type=full backup
p1=$(bytes "$DIR/pgbr-repo")
say "  repository bytes (backup + WAL so far): caris $(mb $((c1 - c0))) MiB, pgbackrest $(mb $((p1 - p0))) MiB"
"$CARIS_PG_BIN/pgbench" -n -t "$TX" -h "$DATA" -p "$PORT" -U caris caris_test >"$DIR/pgbench.out" 2>&1
say "pgbench -t $TX: $(grep -E '^tps' "$DIR/pgbench.out" | head -1)"
T=$(DB=postgres PSQL -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
# a commit after T: recovery must see one to know it reached T (else "recovery ended before
# configured recovery target was reached")
PSQL -c "CREATE TABLE bench_after_t (i int)" >/dev/null
DB=postgres PSQL -c "SELECT pg_switch_wal()" >/dev/null
last=$(DB=postgres PSQL -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
caught_up
c2=$(bytes "$BACKUP_DIR/repository")
p2=$(bytes "$DIR/pgbr-repo")
timed "caris incremental (page deltas)" CB --quiet --json backup database --physical --incremental
c3=$(bytes "$BACKUP_DIR/repository")
python3 - "$DIR/last.out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, p = d["stats"], d["physical"]
print("  caris incremental alone: %.1f MiB stored in packs (%.1f MiB of new data before compression); "
      "%d blocks as page deltas carrying %d pages" % (s["bytesStored"] / 1048576, s["bytesAdded"] / 1048576,
                                                      p.get("deltaBlocks", 0), p.get("deltaPages", 0)))
PY
caught_up
p2b=$(bytes "$DIR/pgbr-repo")
timed "pgbackrest incr" BR --type=incr backup
p3=$(bytes "$DIR/pgbr-repo")
say "  bytes added by the second backup: caris $(mb $((c3 - c2))) MiB, pgbackrest $(mb $((p3 - p2b))) MiB (WAL archived meanwhile included in both)"
BR info --output=json | python3 -c '
import json, sys
b = json.load(sys.stdin)[0]["backup"][-1]
print("  pgbackrest incr alone: %.1f MiB in its repository (%.1f MiB of changed files before compression)"
      % (b["info"]["repository"]["delta"] / 1048576, b["info"]["delta"] / 1048576))'
# the incremental's files written back (page deltas applied, every file's SHA-256 checked);
# pgBackRest's incr the same way (its files, no recovery started)
mkdir -p "$DIR/r" && chmod 0755 "$DIR/r" && { [[ $(id -u) != 0 ]] || chown "$U:" "$DIR/r"; }
inc=$("$BIN" --json list | python3 -c 'import json,sys; print([b["id"] for b in json.load(sys.stdin) if b.get("mode") == "incremental"][-1])')
timed "caris restore of the incremental" CB --quiet --env-file "$envf" restore database --physical \
    --pgdata "$DIR/r/caris-inc" --to-immediate "$inc"
rm -rf "$DIR/r/caris-inc"
mkdir -p "$DIR/r/pgbr-inc" && chmod 0700 "$DIR/r/pgbr-inc" && { [[ $(id -u) != 0 ]] || chown "$U:" "$DIR/r/pgbr-inc"; }
timed "pgbackrest restore of the incr" BR --pg1-path="$DIR/r/pgbr-inc" --type=immediate restore
rm -rf "$DIR/r/pgbr-inc"

# restore of the backup before T + replay to T, until promoted. pgBackRest's archive-get runs
# with its defaults (archive-async=n: one segment per call, no queue), as caris without the
# daemon; its segments come from its own full backup, taken after caris's: it replays fewer
# (the servers' logs in $DIR/r/*.log say how many: "restored log file")
RP=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# (no id: the latest physical backup that ends before T, the first one; pgBackRest: the same)
mkdir -p "$DIR/r" && chmod 0755 "$DIR/r" && { [[ $(id -u) != 0 ]] || chown "$U:" "$DIR/r"; }
# first alone (each `wal get` opens the repository), then with the daemon running (it serves
# `wal get` with the repository open and the WAL records read)
timed "caris restore + replay to T (alone)" CB --quiet --env-file "$envf" restore database --physical \
    --pgdata "$DIR/r/caris" --to-time "$T" --start --port "$RP" --wait 1800
as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$DIR/r/caris" -m fast >/dev/null 2>&1
rm -rf "$DIR/r/caris"
as_pg env BACKUP_API_LISTEN=none BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off \
    BACKUP_SCHEDULE_MONTHLY=off "$BIN" --env-file "$envf" daemon 2>"$DIR/daemon.err" &
DAEMON=$!
deadline=$((SECONDS + 120))
until [[ -S $BACKUP_DIR/metadata/daemon.sock ]] && grep -q started "$DIR/daemon.err"; do
    ((SECONDS < deadline)) || { say "the daemon did not start"; break; }
    read -r -t 0.1 _ <> <(:) || true
done
timed "caris restore + replay to T (daemon)" CB --quiet --env-file "$envf" restore database --physical \
    --pgdata "$DIR/r/caris" --to-time "$T" --start --port "$RP" --wait 1800
as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$DIR/r/caris" -m fast >/dev/null 2>&1
# the daemon reads the next segments ahead while PostgreSQL replays (walArchiver.gets)
CB --quiet --env-file "$envf" --json schedule status 2>/dev/null | python3 -c '
import json, sys
try:
    g = json.load(sys.stdin)["walArchiver"]["gets"]
    print("  daemon: %d gets served, %d of them read ahead (%d segments read ahead)"
          % (g["served"], g.get("servedReadAhead", 0), g.get("readAhead", 0)))
except Exception:
    pass'
# per-segment `wal get` of the archived segments, alone and through the daemon
segs=$("$BIN" --json wal list | python3 -c 'import json,sys; print(" ".join(f["name"] for f in json.load(sys.stdin)["files"] if f["kind"] == "segment"))')
nseg=$(wc -w <<<"$segs")
mkdir -p "$DIR/get" && { [[ $(id -u) != 0 ]] || chown "$U:" "$DIR/get"; }
get_all() { for f in $segs; do CB --quiet --env-file "$envf" wal get "$@" "$f" "$DIR/get/$f" || return 1; done; }
timed "wal get x$nseg (daemon)" get_all
timed "wal get x$nseg (alone)" get_all --no-daemon
say "  per segment: divide by $nseg"
# the daemon itself (as root, runuser's child: runuser does not pass SIGTERM on to it)
dpid=$DAEMON
[[ $(id -u) == 0 ]] && dpid=$(pgrep -P "$DAEMON")
kill -TERM "$dpid"
wait "$DAEMON"
mkdir -p "$DIR/r/pgbr" && chmod 0700 "$DIR/r/pgbr" && [[ $(id -u) == 0 ]] && chown "$U:" "$DIR/r/pgbr"
promoted() { [[ $("$CARIS_PG_BIN/psql" -X -At -h "$DIR/r/pgbr" -p "$RP" -U caris -d postgres -c "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]]; }
pgbr_restore() {
    BR --pg1-path="$DIR/r/pgbr" --type=time "--target=$T" --target-action=promote --set="$(BR info --output=json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["backup"][0]["label"])')" restore >/dev/null || return 1
    as_pg "$CARIS_PG_BIN/pg_ctl" start -D "$DIR/r/pgbr" -l "$DIR/r/pgbr.log" -W -s \
        -o "-p $RP -c listen_addresses='' -c unix_socket_directories='$DIR/r/pgbr' -c archive_mode=off" >/dev/null || return 1
    local deadline=$((SECONDS + 1800))
    until promoted; do
        ((SECONDS < deadline)) || return 1
        as_pg "$CARIS_PG_BIN/pg_ctl" status -D "$DIR/r/pgbr" >/dev/null 2>&1 || { tail -n 3 "$DIR/r/pgbr.log" >&2; return 1; }
        read -r -t 0.1 _ <> <(:) || true
    done
}
timed "pgbackrest restore + replay to T" pgbr_restore
as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$DIR/r/pgbr" -m fast >/dev/null 2>&1
say "archive: caris $("$BIN" --json wal list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["files"]))') files; per-segment push rate: bench/bench-wal.sh"
CARIS_PG_DIR=$DIR/pg "$ROOT/scripts/pg-test-server.sh" stop >/dev/null 2>&1
exit 0

#!/usr/bin/env bash
# shellcheck disable=SC2317,SC2153 # cleanup runs from the EXIT trap; CARIS_PG_* come from the server's env file
# WAL archiving under pgbench, both ways: archive_command = `caris-backup wal push --no-daemon
# %p` (each push opens the repository) and `caris-backup wal push %p` with the daemon running
# (the segment handed to it). The load writes WAL as fast as it can: `pgbench -i -s SCALE`
# (a bulk load: ~16 segments per scale unit... about 1 per 0.07 scale) followed by DURATION
# seconds of `pgbench -c 2` (TPC-B writes little WAL: a few MB a minute here). Every second
# pg_stat_archiver is compared with the segment the server writes: "behind" = segments written
# but not yet archived. Reports segments archived per second and the largest lag, per mode. A
# private PostgreSQL 15 server (scripts/pg-test-server.sh, fsync off) on a free port. A
# program, not a test: always exits 0.
#
#   bench/bench-wal-pgbench.sh [DURATION] [SCALE]   defaults 20 s, pgbench scale 10
#   BENCH_DIR (default /tmp/caris-bench-wal-pgbench, wiped first when made by this script)
#   CARIS_BIN=build/src/cli/caris-backup by default (copied into BENCH_DIR, the copy runs)
set -u
DURATION=${1:-20}
SCALE=${2:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(readlink -f "${CARIS_BIN:-$ROOT/build/src/cli/caris-backup}")
DIR=${BENCH_DIR:-/tmp/caris-bench-wal-pgbench}
if [[ -e $DIR ]]; then
    [[ -f $DIR/.caris-bench-wal-pgbench ]] || { echo "$DIR exists and was not made by this script" >&2; exit 0; }
    [[ -f $DIR/pg/env ]] && CARIS_PG_DIR=$DIR/pg "$ROOT/scripts/pg-test-server.sh" stop >/dev/null 2>&1
    rm -rf "$DIR"
fi
mkdir -p "$DIR/bin" && : >"$DIR/.caris-bench-wal-pgbench"
chmod 755 "$DIR"
cp "$BIN" "$DIR/bin/caris-backup"
BIN=$DIR/bin/caris-backup
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export CARIS_PG_PORT=$PORT CARIS_PG_DIR=$DIR/pg
"$ROOT/scripts/pg-test-server.sh" start >"$DIR/pg-env" 2>"$DIR/pg-start.err" || { cat "$DIR/pg-start.err" >&2; exit 0; }
# shellcheck disable=SC1091
source "$DIR/pg-env"
DPID=""
cleanup() {
    # the daemon itself, not runuser around it (runuser does not pass SIGTERM on)
    [[ -n $DPID ]] && for p in $(pgrep -P "$DPID") "$DPID"; do kill -TERM "$p" 2>/dev/null; done
    "$ROOT/scripts/pg-test-server.sh" stop >/dev/null 2>&1
}
trap '[[ $BASHPID == "$$" ]] || exit; cleanup' EXIT
OSU=${CARIS_PG_OS_USER:-caris-pgtest}
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u "$OSU" -- "$@"; else "$@"; fi; }
psqlc() { PGPASSWORD=$CARIS_PG_PASSWORD "$CARIS_PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" -c "$1"; }
pause() { read -r -t "$1" _ <> <(:) || true; }

# one repository per mode, owned by the server's user (archive_command runs as it)
setup_repo() { # NAME
    local d=$DIR/$1
    mkdir -p "$d"
    printf 'BACKUP_DIR=%s\nBACKUP_ENCRYPTION_KEY=bench-wal-key-0123456789abcdefghijklmnop\nBACKUP_API_LISTEN=none\n' "$d/backup" >"$d/env"
    chmod 600 "$d/env"
    [[ $(id -u) == 0 ]] && chown -R "$OSU" "$d"
    as_pg "$BIN" --quiet --env-file "$d/env" init || echo "init $1 failed" >&2
}
setup_repo alone
setup_repo daemon

psqlc "ALTER SYSTEM SET archive_mode = on" >/dev/null
psqlc "ALTER SYSTEM SET archive_command = 'true'" >/dev/null
psqlc "ALTER SYSTEM SET max_wal_size = '4GB'" >/dev/null
"$ROOT/scripts/pg-test-server.sh" pause >/dev/null && "$ROOT/scripts/pg-test-server.sh" resume >/dev/null
psqlc "SELECT pg_switch_wal()" >/dev/null

segno() { python3 -c "import sys; n = sys.argv[1]; print(int(n[8:16], 16) * 256 + int(n[16:24], 16))" "$1"; }

run_mode() { # NAME ARCHIVE_COMMAND
    local name=$1 cmd=$2
    psqlc "ALTER SYSTEM SET archive_command = '$cmd'" >/dev/null
    psqlc "SELECT pg_reload_conf()" >/dev/null
    # let the archiver catch up on what init wrote before measuring
    local deadline=$((SECONDS + 600))
    while [[ $(psqlc "SELECT pg_walfile_name(pg_current_wal_lsn()) > coalesce(last_archived_wal, '') AND pg_walfile_name(pg_current_wal_lsn()) <= last_archived_wal FROM pg_stat_archiver") == t ]] && ((SECONDS < deadline)); do pause 0.2; done
    psqlc "SELECT pg_stat_reset_shared('archiver')" >/dev/null
    local a0 f0 t0 maxlag=0 lag cur last
    a0=$(psqlc "SELECT archived_count FROM pg_stat_archiver")
    f0=$(psqlc "SELECT failed_count FROM pg_stat_archiver")
    w0=$(psqlc "SELECT pg_current_wal_lsn()")
    (PGPASSWORD=$CARIS_PG_PASSWORD "$CARIS_PG_BIN/pgbench" -q -i -s "$SCALE" -h 127.0.0.1 -p "$PORT" -U "$CARIS_PG_USER" "$CARIS_PG_DB" &&
        PGPASSWORD=$CARIS_PG_PASSWORD "$CARIS_PG_BIN/pgbench" -n -c 2 -j 1 -T "$DURATION" -h 127.0.0.1 -p "$PORT" -U "$CARIS_PG_USER" "$CARIS_PG_DB") >"$DIR/pgbench-$name.log" 2>&1 &
    local pb=$!
    t0=$SECONDS
    while kill -0 "$pb" 2>/dev/null; do
        cur=$(psqlc "SELECT pg_walfile_name(pg_current_wal_lsn())")
        last=$(psqlc "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        if [[ -n $last && -n $cur ]]; then
            lag=$(($(segno "$cur") - $(segno "$last") - 1))
            ((lag > maxlag)) && maxlag=$lag
        fi
        pause 1
    done
    wait "$pb"
    local tps archived failed
    tps=$(grep -o 'tps = [0-9.]*' "$DIR/pgbench-$name.log" | head -1 | cut -d' ' -f3)
    # drain: how long until everything written is archived
    local d0=$SECONDS
    psqlc "SELECT pg_switch_wal()" >/dev/null
    cur=$(psqlc "SELECT pg_walfile_name(pg_current_wal_lsn())")
    deadline=$((SECONDS + 900))
    while (( $(segno "$(psqlc "SELECT coalesce(last_archived_wal, '000000000000000000000000') FROM pg_stat_archiver")") < $(segno "$cur") - 1 )) && ((SECONDS < deadline)); do pause 0.5; done
    archived=$(($(psqlc "SELECT archived_count FROM pg_stat_archiver") - a0))
    failed=$(($(psqlc "SELECT failed_count FROM pg_stat_archiver") - f0))
    local el=$((SECONDS - t0))
    local walmb
    walmb=$(psqlc "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$w0') / 1048576)")
    echo "$name: pgbench -i -s $SCALE + $DURATION s at $tps tps wrote $walmb MB of WAL; $archived segments archived in $el s ($(python3 -c "print(round($archived / max($el, 1), 2))") segments/s), $failed failed; largest lag $maxlag segments; drained $((SECONDS - d0)) s after pgbench ended"
}

run_mode alone "$BIN --quiet --env-file $DIR/alone/env wal push --no-daemon %p"
as_pg "$BIN" --env-file "$DIR/daemon/env" daemon 2>"$DIR/daemon.log" &
DPID=$!
for _ in $(seq 1 1500); do [[ -S $DIR/daemon/backup/metadata/daemon.sock ]] && grep -q started "$DIR/daemon.log" && break; pause 0.02; done
run_mode daemon "$BIN --quiet --env-file $DIR/daemon/env wal push %p"
echo "pushes the daemon took: $(grep -c 'archived WAL file' "$DIR/daemon.log")"
exit 0

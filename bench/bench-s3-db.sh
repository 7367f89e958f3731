#!/usr/bin/env bash
# Database restores from an S3 repository (s3rver on loopback) and from a local one, with
# one or more caris-backup builds side by side (e.g. before and after a change), on the same
# pgbench database and the same two repositories.
#
#   bench/bench-s3-db.sh [SCALE]      # pgbench scale, default 20 (~300 MB database)
#
# Environment:
#   CARIS_BINS    "label=path ..." builds to compare (default: "caris=build/src/cli/caris-backup"
#                 of this checkout); the first one makes the backups
#   BENCH_DIR     work dir, wiped first (default /tmp/caris-bench-s3-db)
#   BENCH_REPEAT  restores per build and repository, alternating builds (default 2)
#   BENCH_PG_PORT port of the private PostgreSQL server (default 55471)
#
# Each restore is `restore database FULL --create` into a new database, under /usr/bin/time:
# wall, CPU (user + sys of caris-backup and its pg_restore; not the server's backend), peak
# RSS; for S3 the requests it made (--json s3.requests) and the GETs of pack objects in
# s3rver's log; the 1-minute load average when it started (the machine may be shared). Each
# restored database is checked (pgbench_accounts' row count and sum of abalance). Then the
# stream alone, `dump FULL database.dump > /dev/null` (rows "s3-dump", "local-dump"; requests
# from s3rver's log, as dump has no --json). A program,
# not a test: it always exits 0. Output: one line per restore, raw in $BENCH_DIR/results.tsv.
set -u -o pipefail

SCALE=${1:-20}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/caris-bench-s3-db}
REPEAT=${BENCH_REPEAT:-2}
BINS=${CARIS_BINS:-caris=$ROOT/build/src/cli/caris-backup}

say() { printf '%s\n' "$*"; }
loud() { printf '\n!!!!! %s\n' "$*" >&2; }

case $BENCH_DIR in
"" | / | /tmp | /root | /home | /work | "$HOME") loud "refusing BENCH_DIR=$BENCH_DIR"; exit 0 ;;
esac
BENCH_DIR=$(realpath -m "$BENCH_DIR")
if [[ -d $BENCH_DIR && -n $(ls -A "$BENCH_DIR" 2>/dev/null) && ! -e $BENCH_DIR/.caris-bench-s3-db ]]; then
    loud "$BENCH_DIR is not empty and was not made by this script; refusing to wipe it"
    exit 0
fi
for need in /usr/bin/time s3rver python3; do
    command -v "$need" >/dev/null || { loud "$need is required"; exit 0; }
done
if [[ -f $BENCH_DIR/pg/env ]]; then
    CARIS_PG_DIR=$BENCH_DIR/pg "$ROOT/scripts/pg-test-server.sh" stop >/dev/null 2>&1
fi
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"/{logs,s3,local,home}
touch "$BENCH_DIR/.caris-bench-s3-db"
LOGS=$BENCH_DIR/logs
RESULTS=$BENCH_DIR/results.tsv
printf 'build\trepo\trun\twall_s\tcpu_s\trss_kb\trequests\tpack_gets\tload\tcheck\n' >"$RESULTS"
cd "$BENCH_DIR" || exit 0

S3_PID=""
cleanup() {
    [[ -n $S3_PID ]] && kill "$S3_PID" 2>/dev/null
    CARIS_PG_DIR=$BENCH_DIR/pg "$ROOT/scripts/pg-test-server.sh" stop >/dev/null 2>&1
    rm -rf "${BENCH_DIR:?}/s3" "${BENCH_DIR:?}/local"
}
trap '[[ $BASHPID == "$$" ]] || exit; cleanup' EXIT
trap 'exit 130' INT TERM

# ---- PostgreSQL and pgbench ----
if ! (umask 077 && CARIS_PG_PORT=${BENCH_PG_PORT:-55471} CARIS_PG_DIR=$BENCH_DIR/pg \
    "$ROOT/scripts/pg-test-server.sh" start >"$BENCH_DIR/pg.env" 2>"$LOGS/pg-start.log"); then
    loud "cannot start a PostgreSQL server (see $LOGS/pg-start.log)"
    exit 0
fi
# shellcheck disable=SC1091
source "$BENCH_DIR/pg.env"
export PGPASSWORD=$CARIS_PG_PASSWORD
PSQL=("$CARIS_PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$CARIS_PG_PORT" -U "$CARIS_PG_USER")
url_of() { printf 'postgresql://%s:%s@127.0.0.1:%s/%s' "$CARIS_PG_USER" "$CARIS_PG_PASSWORD" "$CARIS_PG_PORT" "$1"; }
say "pgbench -i -s $SCALE ..."
if ! "$CARIS_PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$CARIS_PG_PORT" -U "$CARIS_PG_USER" \
    "$CARIS_PG_DB" >"$LOGS/pgbench.log" 2>&1; then
    loud "pgbench -i failed (see $LOGS/pgbench.log)"
    exit 0
fi
db_check() { "${PSQL[@]}" -d "$1" -c "SELECT count(*) || '/' || sum(abalance) FROM pgbench_accounts" 2>/dev/null; }
want=$(db_check "$CARIS_PG_DB")

# ---- s3rver ----
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NODE_OPTIONS=--openssl-legacy-provider s3rver -d "$BENCH_DIR/s3" -a 127.0.0.1 -p "$port" \
    --service-endpoint localhost --configure-bucket bench >"$LOGS/s3rver.log" 2>&1 </dev/null &
S3_PID=$!
deadline=$((SECONDS + 30))
exec {poll_fd}<> <(:)
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    ((SECONDS < deadline)) || { loud "s3rver did not start"; exit 0; }
    read -r -t 0.1 -u "$poll_fd" _ || true
done
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER BACKUP_API_LISTEN=none
export BACKUP_ENCRYPTION_KEY=caris-bench-s3-db-key-0123456789abcdef
export BACKUP_DIR=$BENCH_DIR/home
S3_REPO=s3:http://127.0.0.1:$port/bench/repo
LOCAL_REPO=$BENCH_DIR/local/repo
pack_gets() { grep -cE 'data/[0-9a-f]{2}/[0-9a-f]{64} [0-9]{3} [0-9.,]+ms' "$LOGS/s3rver.log"; }
all_requests() { grep -cE ' [0-9]{3} [0-9.,]+ms' "$LOGS/s3rver.log"; }

# ---- backups (with the first build) ----
read -r first_label <<<"${BINS%%=*}"
first_bin=${BINS#*=}
first_bin=${first_bin%% *}
declare -A FULL
for repo in s3 local; do
    loc=$S3_REPO
    [[ $repo == local ]] && loc=$LOCAL_REPO
    "$first_bin" --quiet --repo "$loc" init >"$LOGS/init-$repo.log" 2>&1 || { loud "init $repo failed"; exit 0; }
    if ! POSTGRES_URL=$(url_of "$CARIS_PG_DB") "$first_bin" --json --repo "$loc" backup database --full \
        >"$LOGS/backup-$repo.json" 2>"$LOGS/backup-$repo.err"; then
        loud "backup into $repo failed (see $LOGS/backup-$repo.err)"
        exit 0
    fi
    FULL[$repo]=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$LOGS/backup-$repo.json")
done
read -r dump chunks < <(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["dumpSize"], d["stats"]["chunksNew"] + d["stats"]["chunksKnown"])' "$LOGS/backup-s3.json")
say "pgbench scale $SCALE: dump $dump bytes in $chunks chunks ($first_label made the backups)"

# ---- restores ----
printf '%-10s %-6s %-4s %8s %8s %9s %9s %9s %6s %s\n' build repo run wall_s cpu_s rss_kb requests pack_gets load check
n=0
for ((run = 1; run <= REPEAT; run++)); do
    for repo in s3 local; do
        for spec in $BINS; do
            label=${spec%%=*}
            bin=${spec#*=}
            loc=$S3_REPO
            [[ $repo == local ]] && loc=$LOCAL_REPO
            n=$((n + 1))
            db=bench_r_$n
            load=$(cut -d' ' -f1 /proc/loadavg)
            g0=$(pack_gets)
            CARIS_RESTORE_TARGET_URL=$(url_of "$db") /usr/bin/time -f '%e %U %S %M' -o "$LOGS/time-$n" \
                "$bin" --json --repo "$loc" restore database "${FULL[$repo]}" --create \
                >"$LOGS/restore-$n.json" 2>"$LOGS/restore-$n.err"
            rc=$?
            g=$(($(pack_gets) - g0))
            read -r wall user sys rss <"$LOGS/time-$n"
            cpu=$(python3 -c "print(round($user + $sys, 2))")
            req=$(python3 -c 'import json, sys
try: print(json.load(open(sys.argv[1])).get("s3", {}).get("requests", 0))
except Exception: print("-")' "$LOGS/restore-$n.json")
            [[ $repo == local ]] && g=0
            check=fail
            ((rc == 0)) && [[ $(db_check "$db") == "$want" ]] && check=ok
            printf '%-10s %-6s %-4s %8s %8s %9s %9s %9s %6s %s\n' "$label" "$repo" "$run" "$wall" "$cpu" "$rss" "$req" "$g" "$load" "$check"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$repo" "$run" "$wall" "$cpu" "$rss" "$req" "$g" "$load" "$check" >>"$RESULTS"
            "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
            # the stream alone: `dump ID database.dump` into /dev/null (no pg_restore)
            load=$(cut -d' ' -f1 /proc/loadavg)
            g0=$(pack_gets)
            r0=$(all_requests)
            /usr/bin/time -f '%e %U %S %M' -o "$LOGS/time-$n-dump" \
                "$bin" --repo "$loc" dump "${FULL[$repo]}" database.dump >/dev/null 2>"$LOGS/dump-$n.err"
            rc=$?
            g=$(($(pack_gets) - g0))
            req=$(($(all_requests) - r0))
            read -r wall user sys rss <"$LOGS/time-$n-dump"
            cpu=$(python3 -c "print(round($user + $sys, 2))")
            [[ $repo == local ]] && g=0 req=0
            check=fail
            ((rc == 0)) && check=ok
            printf '%-10s %-6s %-4s %8s %8s %9s %9s %9s %6s %s\n' "$label" "$repo-dump" "$run" "$wall" "$cpu" "$rss" "$req" "$g" "$load" "$check"
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$repo-dump" "$run" "$wall" "$cpu" "$rss" "$req" "$g" "$load" "$check" >>"$RESULTS"
        done
    done
done
exit 0

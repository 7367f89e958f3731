#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions called indirectly: PREP hooks of step, the EXIT trap
# Database-backup benchmark: caris-backup's logical backup of a pgbench database (plus an
# application schema holding incompressible attachments) against plain pg_dump, the naive
# "pg_dump | gzip | openssl" script and the "pg_dump | zstd | openssl" one-liner.
#
#   bench/bench-db.sh [SCALE]        # pgbench scale, default 50 (~750 MB) + 70 MB of bytea
#
# Steps (each under /usr/bin/time: wall, CPU = user + sys of the whole pipeline, peak RSS
# of its largest process; output = file or repository growth):
#   floor        pg_dump -Fc -Z0 > /dev/null            (the dump alone)
#   pg_dump -Fc  pg_dump -Fc > file                     (default gzip compression)
#   naive        pg_dump | gzip | openssl enc -aes-256-cbc -pbkdf2 > file
#   one-liner    pg_dump -Fc -Z0 | zstd -3 -T2 | openssl enc -aes-256-cbc -pbkdf2 > file
#   caris full   caris-backup backup database --full [--compress]
#   pgbench      pgbench -t 1000 (changes, not a backup)
#   caris incr   caris-backup backup database --incremental
#   pg_restore   pg_restore -d NEW file                 (the -Fc file into a new database,
#                                                       made before the step)
#   createdb + pg_restore  CREATE DATABASE NEW; pg_restore -d NEW file  (the same work as
#                caris's --create, whose step includes making the database: ~0.16 s here)
#   caris restore  caris-backup restore database FULL --create (into a new database)
# Both restores are checked (row count and an order-independent hash of every pgbench
# table against the source at the time of the full backup).
#
# Environment:
#   POSTGRES_URL        use this server and database (pgbench -i REPLACES its pgbench_*
#                       tables; restores create databases caris_bench_r_* on the server).
#                       Unset: a private server is started with scripts/pg-test-server.sh.
#   BENCH_DIR           work dir, wiped first (default /tmp/caris-bench-db)
#   BENCH_PG_PORT       port of the private server (default 55434)
#   BENCH_PG_FSYNC      on|off for the private server (default on: restores sync as usual)
#   BENCH_APP_MB        MB of incompressible bytea in app.attachments (default 70; 0: none)
#   BENCH_CARIS_COMPRESS 1 (default): caris backs up with --compress (BACKUP_COMPRESS_DUMPS
#                       is false by default: the sizes compare with the compressing peers
#                       only with it); 0: caris's default, dumps stored uncompressed
#   BENCH_REPEAT        runs of each backup and restore step; the median is reported
#                       (default 3; caris full backups go into a new repository each time)
#   BENCH_STEP_TIMEOUT  seconds per measured step (default 3600)
#   BENCH_SKIP_CARIS    1: measure only the peers (e.g. while our engine is being built)
#   BENCH_KEEP          1: keep the server, dumps and repository afterwards
#   CARIS_BIN           our CLI (default: build/src/cli/caris-backup of this repository);
#                       copied to $BENCH_DIR/bin first, the copy is measured
#
# A program, not a test: it always exits 0. Output: a table on stdout, raw figures in
# $BENCH_DIR/results.json, each step's output in $BENCH_DIR/logs/.
set -u -o pipefail

SCALE=${1:-50}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/caris-bench-db}
STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-3600}
CARIS_BIN=${CARIS_BIN:-$ROOT/build/src/cli/caris-backup}
KEY='caris-bench-db-key-0123456789abcdef0123'
export BENCH_NAIVE_KEY='naive-script-passphrase-0123456789'

say() { printf '%s\n' "$*"; }
loud() { printf '\n!!!!! %s\n' "$*" >&2; }

if ! [[ $SCALE =~ ^[1-9][0-9]*$ ]]; then
    loud "SCALE must be a positive integer, not $SCALE"
    exit 0
fi
case $BENCH_DIR in
"" | / | /tmp | /root | /home | /work | /work/main | "$HOME") loud "refusing BENCH_DIR=$BENCH_DIR"; exit 0 ;;
esac
BENCH_DIR=$(realpath -m "$BENCH_DIR")
if [[ -d $BENCH_DIR && -n $(ls -A "$BENCH_DIR" 2>/dev/null) && ! -e $BENCH_DIR/.caris-bench-db ]]; then
    loud "$BENCH_DIR is not empty and was not made by this script; refusing to wipe it"
    exit 0
fi
if [[ -f $BENCH_DIR/pg/env ]]; then # a server left by an interrupted run
    CARIS_PG_DIR=$BENCH_DIR/pg "$ROOT/scripts/pg-test-server.sh" stop >/dev/null 2>&1
fi
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"/{logs,out,bin}
touch "$BENCH_DIR/.caris-bench-db"
LOGS=$BENCH_DIR/logs
OUT=$BENCH_DIR/out
STEPS=$BENCH_DIR/steps.tsv
: >"$STEPS"
cd "$BENCH_DIR" || exit 0 # no .env.local from the caller's directory

if [[ ! -x /usr/bin/time ]]; then
    say "GNU time missing; trying apt-get install -y time"
    { apt-get install -y -qq time || { apt-get update -qq && apt-get install -y -qq time; }; } </dev/null >/dev/null 2>&1
fi
[[ -x /usr/bin/time ]] || { loud "/usr/bin/time (GNU time) is required"; exit 0; }

DROP_OK=0
drop_caches() {
    sync
    if echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then DROP_OK=1; else DROP_OK=0; fi
}
drop_caches
if ((DROP_OK)); then say "page cache: dropped before every measured step"; else say "page cache: cannot drop it (warm-cache figures)"; fi

# ------------------------------------------------------------------------------ server --
PG_BIN=/usr/lib/postgresql/15/bin
SERVER_STARTED=0
PM_PID=""
# server_cpu: CPU seconds (x100) of the private server's finished backends (the postmaster's
# reaped children: the backend that served a pg_dump or a pg_restore is one); 0 without one
server_cpu() {
    [[ -n $PM_PID && -r /proc/$PM_PID/stat ]] || { echo 0; return; }
    awk '{ print $16 + $17 }' "/proc/$PM_PID/stat"
}
# server_settle N: wait (up to 5 s) until the postmaster has at most N children again: a
# backend's CPU counts only once the postmaster has reaped it
_poll_fd=""
server_settle() {
    [[ -n $PM_PID ]] || return 0
    [[ -n $_poll_fd ]] || exec {_poll_fd}<> <(:)
    local deadline=$((SECONDS + 5))
    while (($(pgrep -c -P "$PM_PID") > $1)) && ((SECONDS < deadline)); do
        read -r -t 0.02 -u "$_poll_fd" _ || true
    done
}
cleanup() {
    if ((SERVER_STARTED)) && [[ ${BENCH_KEEP:-0} != 1 ]]; then
        CARIS_PG_DIR=$BENCH_DIR/pg "$ROOT/scripts/pg-test-server.sh" stop >/dev/null 2>&1
    fi
    if [[ ${BENCH_KEEP:-0} != 1 ]]; then
        rm -rf "${OUT:?}" "${BENCH_DIR:?}/repo" "${BENCH_DIR:?}/bin" "${BENCH_DIR:?}/pg.env"
    fi
}
trap '[[ $BASHPID == "$$" ]] || exit; cleanup' EXIT
trap 'exit 130' INT TERM

if [[ -n ${POSTGRES_URL:-} ]]; then
    say "server: POSTGRES_URL (given)"
    SRC_URL=$POSTGRES_URL
else
    if ! (umask 077 && CARIS_PG_PORT=${BENCH_PG_PORT:-55434} CARIS_PG_DIR=$BENCH_DIR/pg \
        CARIS_PG_FSYNC=${BENCH_PG_FSYNC:-on} "$ROOT/scripts/pg-test-server.sh" start \
        >"$BENCH_DIR/pg.env" 2>"$LOGS/pg-start.log"); then
        loud "cannot start a PostgreSQL server (see $LOGS/pg-start.log)"
        tail -n 5 "$LOGS/pg-start.log" >&2
        exit 0
    fi
    SERVER_STARTED=1
    # shellcheck disable=SC1091
    source "$BENCH_DIR/pg.env"
    SRC_URL=$POSTGRES_URL
    PM_PID=$(head -n 1 "$CARIS_PG_SOCKET/postmaster.pid" 2>/dev/null)
    say "server: private PostgreSQL on 127.0.0.1:$CARIS_PG_PORT (fsync ${BENCH_PG_FSYNC:-on})"
fi
export POSTGRES_URL=$SRC_URL

# url_split URL: prints the URL without its password, then the password (for PGPASSWORD:
# the peers' command lines must not hold it either); url_db URL DB: URL for database DB.
url_tool() {
    python3 - "$@" <<'PY'
import sys, urllib.parse as up
op, url = sys.argv[1], sys.argv[2]
if url.startswith(("postgresql://", "postgres://")):
    u = up.urlsplit(url)
    pw = up.unquote(u.password) if u.password is not None else ""
    netloc = u.netloc.rsplit("@", 1)
    creds = netloc[0] if len(netloc) == 2 else ""
    user = creds.split(":", 1)[0] if creds else ""
    host = netloc[-1]
    if op == "nopw":
        print(up.urlunsplit((u.scheme, (user + "@" if user else "") + host, u.path, u.query, "")))
    elif op == "pw":
        print(pw)
    elif op == "db":
        print(up.urlunsplit((u.scheme, u.netloc, "/" + up.quote(sys.argv[3]), u.query, "")))
else:  # key=value: a later key overrides an earlier one
    import shlex
    kv = dict(p.split("=", 1) for p in shlex.split(url) if "=" in p)
    if op == "nopw":
        print(" ".join("%s='%s'" % (k, v.replace("\\", "\\\\").replace("'", "\\'"))
                       for k, v in kv.items() if k != "password"))
    elif op == "pw":
        print(kv.get("password", ""))
    elif op == "db":
        print(url + " dbname='%s'" % sys.argv[3])
PY
}
SRC_NOPW=$(url_tool nopw "$SRC_URL")
PGPASSWORD=$(url_tool pw "$SRC_URL")
export PGPASSWORD
[[ -n $PGPASSWORD ]] || unset PGPASSWORD
psql_src() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$SRC_NOPW" "$@" </dev/null; }
psql_db() { # DB ARGS...
    local db=$1
    shift
    "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$(url_tool db "$SRC_NOPW" "$db")" "$@" </dev/null
}
if ! psql_src -c 'SELECT 1' >/dev/null 2>"$LOGS/connect.log"; then
    loud "cannot connect to the server: $(head -n 2 "$LOGS/connect.log")"
    exit 0
fi
SERVER_VERSION=$(psql_src -c 'SHOW server_version')
SRC_DB=$(psql_src -c 'SELECT current_database()')

# ------------------------------------------------------------------------------ caris --
CARIS_OK=0
if [[ ${BENCH_SKIP_CARIS:-0} == 1 ]]; then
    CARIS_VERSION="skipped (BENCH_SKIP_CARIS=1)"
elif [[ -x $CARIS_BIN ]]; then
    cp "$CARIS_BIN" "$BENCH_DIR/bin/caris-backup"
    CARIS_VERSION="$("$BENCH_DIR/bin/caris-backup" version 2>&1 | head -n 1) ($CARIS_BIN, sha256 $(sha256sum "$CARIS_BIN" | cut -c1-16)...)"
    CARIS=("env" "BACKUP_DIR=$BENCH_DIR/repo" "BACKUP_ENCRYPTION_KEY=$KEY" "$BENCH_DIR/bin/caris-backup")
    if "${CARIS[@]}" init >"$LOGS/caris.init.log" 2>&1; then
        CARIS_OK=1
    else
        loud "caris-backup init failed: $(tail -n 2 "$LOGS/caris.init.log")"
    fi
else
    CARIS_VERSION="n/a ($CARIS_BIN not found)"
fi
say "caris: $CARIS_VERSION"
say "pg_dump: $("$PG_BIN/pg_dump" --version), server $SERVER_VERSION, database $SRC_DB"

# ------------------------------------------------------------------------------ steps --
dir_bytes() { if [[ -e $1 ]]; then du -sb "$1" 2>/dev/null | cut -f1; else echo 0; fi; }

# run_once NAME OUTPUT-PATH CMD...: one measured run: the function named by $PREP (if any)
# resets the state first, untimed; then the page cache is dropped and CMD runs under
# /usr/bin/time. Appends "wall user sys rss output-growth server-cpu rc" to $LOGS/NAME.runs;
# CMD's output goes to $LOGS/NAME.log (last run). Returns CMD's status.
run_once() {
    local name=$1 outp=$2
    shift 2
    local tf=$LOGS/$name.time lf=$LOGS/$name.log rc before after srv0 srv1 kids=0
    local wall=0 user=0 sys=0 rss=0
    [[ -n ${PREP:-} ]] && "$PREP" >>"$LOGS/$name.prep.log" 2>&1
    before=$(dir_bytes "$outp")
    drop_caches
    [[ -n $PM_PID ]] && kids=$(pgrep -c -P "$PM_PID")
    srv0=$(server_cpu)
    /usr/bin/time -f '%e %U %S %M' -o "$tf" timeout "$STEP_TIMEOUT" "$@" >"$lf" 2>"$lf.err"
    rc=$?
    server_settle "$kids"
    srv1=$(server_cpu)
    after=$(dir_bytes "$outp")
    read -r wall user sys rss < <(tail -n 1 "$tf" 2>/dev/null) || true
    printf '%s %s %s %s %s %s %s\n' "$wall" "$user" "$sys" "$rss" "$((after - before))" \
        "$(awk -v t="$((srv1 - srv0))" 'BEGIN { printf "%.2f", t / 100 }')" "$rc" >>"$LOGS/$name.runs"
    return "$rc"
}

# finish NAME: record the step: the run with the median wall time, or the first failed run.
finish() {
    local name=$1
    local runs=$LOGS/$name.runs line status=ok n
    local wall user sys rss out srv rc
    n=$(wc -l <"$runs")
    line=$(awk '$7 != 0' "$runs" | head -n 1)
    if [[ -n $line ]]; then
        read -r wall user sys rss out srv rc <<<"$line"
        status="failed (exit $rc)"
        ((rc == 124)) && status=timeout
    else
        line=$(sort -n "$runs" | sed -n "$(((n + 1) / 2))p")
        read -r wall user sys rss out srv rc <<<"$line"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$wall" "$user" "$sys" "$rss" "$out" "$srv" >>"$STEPS"
    printf '  %-15s %s  %ss wall, %ss cpu (server %ss), %s MiB rss, output %s MiB%s\n' "$name" "$status" "$wall" \
        "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')" "$srv" "$((rss / 1024))" \
        "$(awk -v b="$out" 'BEGIN { printf "%.1f", b / 1048576 }')" \
        "$( ((n > 1)) && printf ' (median of %s runs: %s s)' "$n" "$(cut -d' ' -f1 "$runs" | paste -sd' ')")"
    if [[ $status != ok ]]; then
        loud "$name: $status; last lines of $LOGS/$name.log.err:"
        tail -n 6 "$LOGS/$name.log.err" >&2
    fi
    [[ $status == ok ]]
}

# step NAME OUTPUT-PATH CMD...: $REPS (default 1) runs in a row, then finish.
step() {
    local i
    : >"$LOGS/$1.runs"
    for ((i = 1; i <= ${REPS:-1}; i++)); do
        run_once "$@" || break
    done
    finish "$1"
}
skip() { printf '%s\tn/a\t\t\t\t\t\t\t%s\n' "$1" "$2" >>"$STEPS"; printf '  %-15s n/a (%s)\n' "$1" "$2"; }

# fingerprint DB: row count and an order-independent hash of every pgbench table
fingerprint() {
    psql_db "$1" -c "SELECT string_agg(t, ' ' ORDER BY t) FROM (
        SELECT 'accounts:' || count(*) || ':' || coalesce(sum(hashtext(a::text)::bigint), 0) AS t FROM pgbench_accounts a
        UNION ALL SELECT 'branches:' || count(*) || ':' || coalesce(sum(hashtext(b::text)::bigint), 0) FROM pgbench_branches b
        UNION ALL SELECT 'tellers:' || count(*) || ':' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM pgbench_tellers t
        UNION ALL SELECT 'history:' || count(*) || ':' || coalesce(sum(hashtext(h::text)::bigint), 0) FROM pgbench_history h
        $( ((APP_MB > 0)) && printf '%s' "UNION ALL SELECT 'attachments:' || count(*) || ':' || coalesce(sum(hashtext(id || md5(body))::bigint), 0) FROM app.attachments")) x" 2>>"$LOGS/fingerprint.err"
}

say ""
say "== pgbench -i -s $SCALE"
if ! /usr/bin/time -f '%e' -o "$LOGS/pgbench-init.time" "$PG_BIN/pgbench" -i -s "$SCALE" -q "$SRC_NOPW" \
    >"$LOGS/pgbench-init.log" 2>&1 </dev/null; then
    loud "pgbench -i failed: $(tail -n 3 "$LOGS/pgbench-init.log")"
    exit 0
fi
APP_MB=${BENCH_APP_MB:-70}
[[ $APP_MB =~ ^[0-9]+$ ]] || APP_MB=70
if ((APP_MB > 0)); then
    # an application's attachments (scans, PDFs): 64 KiB values of pseudo-random bytes (MD5
    # chains, the same every run), stored uncompressed (STORAGE EXTERNAL); pg_dump writes them
    # as hex text, which compresses to half and no further
    say "== app.attachments: $APP_MB MB of incompressible bytea"
    if ! psql_src -c "DROP SCHEMA IF EXISTS app CASCADE" -c "CREATE SCHEMA app" \
        -c "CREATE TABLE app.attachments (id int PRIMARY KEY, patient_id int NOT NULL, name text NOT NULL, body bytea NOT NULL)" \
        -c "ALTER TABLE app.attachments ALTER COLUMN body SET STORAGE EXTERNAL" \
        -c "INSERT INTO app.attachments SELECT i, i % 997, 'scan-' || i || '.pdf',
              decode((SELECT string_agg(md5(i || ':' || j), '' ORDER BY j) FROM generate_series(1, 4096) j), 'hex')
            FROM generate_series(1, $((APP_MB * 1000000 / 65536))) i" >"$LOGS/app-init.log" 2>&1; then
        loud "cannot create app.attachments: $(tail -n 3 "$LOGS/app-init.log")"
        exit 0
    fi
fi
DB_SIZE=$(psql_src -c 'SELECT pg_database_size(current_database())')
ROWS=$(psql_src -c 'SELECT count(*) FROM pgbench_accounts')
say "  $ROWS accounts, database $((DB_SIZE / 1048576)) MiB, initialised in $(cat "$LOGS/pgbench-init.time")s"
FP_FULL=$(fingerprint "$SRC_DB")
# the load left ~all of the database dirty in memory: write it out now, not during the
# first measured step
psql_src -c 'CHECKPOINT' >/dev/null 2>&1

say ""
say "== backups"
DUMP=$OUT/pgdump.Fc
NAIVE=$OUT/naive.sql.gz.enc
ONELINER=$OUT/oneliner.Fc.zst.enc
REPEAT=${BENCH_REPEAT:-3}
rm_dump() { rm -f "$DUMP"; }
rm_naive() { rm -f "$NAIVE"; }
rm_oneliner() { rm -f "$ONELINER"; }
CARIS_COMPRESS=()
[[ ${BENCH_CARIS_COMPRESS:-1} == 1 ]] && CARIS_COMPRESS=(--compress)
# every caris run into a new repository: a full backup into a repository that already has
# the data would only measure deduplication
new_repo() { rm -rf "${BENCH_DIR:?}/repo" && "${CARIS[@]}" init; }
# The backups take turns (floor, pg_dump -Fc, naive, one-liner, caris; then again), so that
# a slow phase of the machine does not land on one tool's runs only.
say "  ($REPEAT rounds of the five backups, interleaved)"
names=(floor pg_dump_Fc naive)
HAVE_ZSTD=0
command -v zstd >/dev/null 2>&1 && HAVE_ZSTD=1 && names+=(oneliner)
((CARIS_OK)) && names+=(caris_full)
for n in "${names[@]}"; do : >"$LOGS/$n.runs"; done
for ((round = 1; round <= REPEAT; round++)); do
    # (the single-quoted scripts get their paths as $0, $1, $2: nothing is expanded twice)
    # shellcheck disable=SC2016
    run_once floor /dev/null sh -c '"$0" -Fc -Z0 -d "$1" >/dev/null' "$PG_BIN/pg_dump" "$SRC_NOPW"
    # shellcheck disable=SC2016
    PREP=rm_dump run_once pg_dump_Fc "$DUMP" sh -c '"$0" -Fc -d "$1" >"$2"' "$PG_BIN/pg_dump" "$SRC_NOPW" "$DUMP"
    # shellcheck disable=SC2016
    PREP=rm_naive run_once naive "$NAIVE" \
        sh -c '"$0" -d "$1" | gzip | openssl enc -aes-256-cbc -pbkdf2 -pass env:BENCH_NAIVE_KEY >"$2"' \
        "$PG_BIN/pg_dump" "$SRC_NOPW" "$NAIVE"
    # shellcheck disable=SC2016
    ((HAVE_ZSTD)) && PREP=rm_oneliner run_once oneliner "$ONELINER" \
        sh -c '"$0" -Fc -Z0 -d "$1" | zstd -3 -T2 -q | openssl enc -aes-256-cbc -pbkdf2 -pass env:BENCH_NAIVE_KEY >"$2"' \
        "$PG_BIN/pg_dump" "$SRC_NOPW" "$ONELINER"
    if ((CARIS_OK)); then
        PREP=new_repo run_once caris_full "$BENCH_DIR/repo/repository" \
            "${CARIS[@]}" --json --quiet backup database --full "${CARIS_COMPRESS[@]}"
        cp "$LOGS/caris_full.log" "$LOGS/caris_full.$round.json"
    fi
done
for n in floor pg_dump_Fc naive; do finish "$n"; done
if ((HAVE_ZSTD)); then finish oneliner; else skip oneliner "zstd (the command) not installed"; fi
FULL_ID="" FULL_ADDED=0 INC_ADDED=0 FULL_READ=0
json_field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=eval("d"+sys.argv[2]); print(v)' "$@" 2>/dev/null; }
if ((CARIS_OK)); then
    # the last run's repository stays: the incremental and the restore use it
    if finish caris_full && [[ $(tail -n 1 "$LOGS/caris_full.runs" | cut -d' ' -f7) == 0 ]]; then
        FULL_ID=$(json_field "$LOGS/caris_full.log" '["id"]')
        FULL_ADDED=$(json_field "$LOGS/caris_full.log" '["stats"]["bytesAdded"]')
        FULL_READ=$(json_field "$LOGS/caris_full.log" '["stats"]["bytesRead"]')
    fi
else
    skip caris_full "caris not available"
fi

say ""
say "== changes: pgbench -t 1000"
step pgbench_t1000 /dev/null "$PG_BIN/pgbench" -n -t 1000 "$SRC_NOPW"
psql_src -c 'CHECKPOINT' >/dev/null 2>&1
if ((CARIS_OK)) && [[ -n $FULL_ID ]]; then
    if step caris_incr "$BENCH_DIR/repo/repository" "${CARIS[@]}" --json --quiet backup database --incremental "${CARIS_COMPRESS[@]}"; then
        INC_ADDED=$(json_field "$LOGS/caris_incr.log" '["stats"]["bytesAdded"]')
    fi
else
    skip caris_incr "no full backup"
fi

say ""
say "== restores (of the state before pgbench -t, into new databases)"
RESTORE_CHECK=""
fresh_pgrestore_db() {
    psql_src -c "DROP DATABASE IF EXISTS caris_bench_r_pgrestore" -c "CREATE DATABASE caris_bench_r_pgrestore"
}
no_caris_db() { psql_src -c "DROP DATABASE IF EXISTS caris_bench_r_caris"; }
no_pgrestore_db() { psql_src -c "DROP DATABASE IF EXISTS caris_bench_r_pgrestore"; }
# createdb + pg_restore as one step (bash -c: the database is made inside the measured time)
createdb_pgrestore() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$SRC_NOPW" \
        -c "CREATE DATABASE caris_bench_r_pgrestore TEMPLATE template0" </dev/null &&
        "$PG_BIN/pg_restore" -d "$PGRESTORE_URL" "$DUMP"
}
PGRESTORE_URL=$(url_tool db "$SRC_NOPW" caris_bench_r_pgrestore) # not inside the timed step
export -f createdb_pgrestore
export PG_BIN SRC_NOPW DUMP PGRESTORE_URL
have_dump=0 have_full=0
[[ -s $DUMP ]] && have_dump=1
((CARIS_OK)) && [[ -n $FULL_ID ]] && have_full=1
: >"$LOGS/pg_restore.runs"
: >"$LOGS/pg_restore_c.runs"
: >"$LOGS/caris_restore.runs"
say "  ($REPEAT rounds, interleaved)"
for ((round = 1; round <= REPEAT; round++)); do
    if ((have_dump)); then
        PREP=fresh_pgrestore_db run_once pg_restore /dev/null \
            "$PG_BIN/pg_restore" -d "$(url_tool db "$SRC_NOPW" caris_bench_r_pgrestore)" "$DUMP"
        PREP=no_pgrestore_db run_once pg_restore_c /dev/null bash -c createdb_pgrestore
    fi
    if ((have_full)); then
        CARIS_RESTORE_TARGET_URL=$(url_tool db "$SRC_URL" caris_bench_r_caris) PREP=no_caris_db \
            run_once caris_restore /dev/null "${CARIS[@]}" --quiet restore database "$FULL_ID" --create
    fi
done
if ((have_dump)); then
    finish pg_restore
    finish pg_restore_c
    fp=$(fingerprint caris_bench_r_pgrestore)
    if [[ $fp == "$FP_FULL" ]]; then RESTORE_CHECK+="pg_restore: identical; "; else RESTORE_CHECK+="pg_restore: DIFFERS; "; fi
else
    skip pg_restore "no dump file"
fi
if ((have_full)); then
    if finish caris_restore; then
        fp=$(fingerprint caris_bench_r_caris)
        if [[ $fp == "$FP_FULL" ]]; then RESTORE_CHECK+="caris: identical"; else RESTORE_CHECK+="caris: DIFFERS"; fi
    else
        RESTORE_CHECK+="caris: failed"
    fi
else
    skip caris_restore "no full backup"
fi
[[ $RESTORE_CHECK == *DIFFERS* ]] && loud "a restored database differs from the source: $RESTORE_CHECK"
if [[ ${BENCH_KEEP:-0} != 1 ]]; then
    psql_src -c "DROP DATABASE IF EXISTS caris_bench_r_pgrestore" -c "DROP DATABASE IF EXISTS caris_bench_r_caris" >/dev/null 2>&1
fi

# ------------------------------------------------------------------------------ report --
say ""
export APP_MB PM_PID BENCH_DIR SCALE DB_SIZE ROWS SERVER_VERSION CARIS_VERSION FULL_ADDED INC_ADDED FULL_READ RESTORE_CHECK DROP_OK
PG_DUMP_VERSION=$("$PG_BIN/pg_dump" --version)
export PG_DUMP_VERSION
python3 - <<'PY' || loud "report generation failed"
import json, os
env = os.environ
rows = {}
order = []
for line in open(os.path.join(env["BENCH_DIR"], "steps.tsv")):
    f = line.rstrip("\n").split("\t")
    name, status = f[0], f[1]
    order.append(name)
    r = {"status": status}
    if status != "n/a":
        r.update(wall=float(f[2] or 0), cpu=float(f[3] or 0) + float(f[4] or 0),
                 rss_mib=int(f[5] or 0) / 1024, output=int(f[6] or 0),
                 server_cpu=float(f[7] or 0) if len(f) > 7 and f[7] else None)
    else:
        r["note"] = f[8] if len(f) > 8 else ""
    rows[name] = r

labels = {
    "floor": "pg_dump -Fc -Z0 > /dev/null (floor)",
    "pg_dump_Fc": "pg_dump -Fc > file",
    "naive": "pg_dump | gzip | openssl enc",
    "oneliner": "pg_dump -Z0 | zstd -3 -T2 | openssl",
    "caris_full": "caris backup database --full",
    "pgbench_t1000": "pgbench -t 1000 (changes)",
    "caris_incr": "caris backup database --incremental",
    "pg_restore": "pg_restore -d NEW (-Fc file)",
    "pg_restore_c": "createdb NEW + pg_restore -d NEW",
    "caris_restore": "caris restore database --create",
}
mib = lambda b: "%.1f" % (b / 1048576)
print("database: pgbench scale %s, %s accounts, app.attachments %s MB, %s MiB, PostgreSQL %s; %s" % (
    env["SCALE"], env["ROWS"], env["APP_MB"], mib(int(env["DB_SIZE"])), env["SERVER_VERSION"],
    "cold page cache" if env["DROP_OK"] == "1" else "warm page cache"))
print()
print("%-38s %8s %7s %8s %8s %11s  %s" % ("step", "wall s", "CPU s", "srv CPU", "RSS MiB", "output MiB", "status"))
for n in order:
    r = rows[n]
    if r["status"] == "n/a":
        print("%-38s %8s %7s %8s %8s %11s  n/a: %s" % (labels.get(n, n), "-", "-", "-", "-", "-", r.get("note", "")))
        continue
    out = mib(r["output"]) if n not in ("floor", "pgbench_t1000", "pg_restore", "pg_restore_c", "caris_restore") else "-"
    srv = "%.2f" % r["server_cpu"] if r.get("server_cpu") is not None and env["PM_PID"] else "-"
    print("%-38s %8.2f %7.2f %8s %8.0f %11s  %s" % (labels.get(n, n), r["wall"], r["cpu"], srv, r["rss_mib"], out, r["status"]))

def ok(n):
    return n in rows and rows[n]["status"] == "ok"
ratios = []
def ratio(label, num, den, fmt="%.2f", target=""):
    if num is None or den in (None, 0):
        ratios.append((label, "n/a", target))
    else:
        ratios.append((label, fmt % (num / den), target))
w = lambda n: rows[n]["wall"] if ok(n) else None
o = lambda n: rows[n]["output"] if ok(n) else None
ratio("caris full / floor (wall)", w("caris_full"), w("floor"), target="<= 1.05")
ratio("caris full / one-liner (wall)", w("caris_full"), w("oneliner"))
ratio("pg_dump -Fc / floor (wall)", w("pg_dump_Fc"), w("floor"))
ratio("naive / caris full (wall)", w("naive"), w("caris_full"), target="> 1")
ratio("caris full CPU / floor CPU", rows["caris_full"]["cpu"] if ok("caris_full") else None,
      rows["floor"]["cpu"] if ok("floor") else None)
ratio("caris repository / one-liner file (size)", o("caris_full"), o("oneliner"), target="<= 1")
ratio("caris repository / naive file (size)", o("caris_full"), o("naive"), target="< 1")
ratio("caris repository / pg_dump -Fc file (size)", o("caris_full"), o("pg_dump_Fc"))
full_added, inc_added = int(env["FULL_ADDED"] or 0), int(env["INC_ADDED"] or 0)
ratio("incremental bytesAdded / full bytesAdded", inc_added if ok("caris_incr") else None,
      full_added or None, fmt="%.3f", target="< 0.10")
# the same question in stored bytes: what the incremental adds to the repository (new chunks
# compressed, their metadata, the changed part of the chunk list), against the full's growth
ratio("incremental / full (repository growth)", o("caris_incr"), o("caris_full"), fmt="%.3f")
ratio("caris restore / pg_restore (wall)", w("caris_restore"), w("pg_restore"))
ratio("caris restore / createdb + pg_restore (wall)", w("caris_restore"), w("pg_restore_c"))
print()
for label, v, target in ratios:
    print("%-46s %8s   %s" % (label, v, ("target " + target) if target else ""))
print()
# where caris's time went, per run (stats.stageMs: ms summed over the threads doing a stage)
stages = []
for k in range(1, 100):
    f = os.path.join(env["BENCH_DIR"], "logs", "caris_full.%d.json" % k)
    if not os.path.exists(f):
        break
    try:
        d = json.load(open(f))
        st = d["stats"].get("stageMs") or {}
        stages.append(st)
        print("caris full run %d: %d ms, stored %s MiB; stageMs %s" % (
            k, d["durationMs"], mib(d["stats"]["bytesStored"]),
            ", ".join("%s %.0f" % (n, v) for n, v in st.items())))
    except (ValueError, KeyError):
        pass
print()
print("restore check: %s" % (env["RESTORE_CHECK"] or "n/a"))
res = {"meta": {"scale": int(env["SCALE"]), "rows": int(env["ROWS"]), "database_size": int(env["DB_SIZE"]),
                "server_version": env["SERVER_VERSION"], "pg_dump": env["PG_DUMP_VERSION"],
                "caris": env["CARIS_VERSION"], "cold_cache": env["DROP_OK"] == "1",
                "app_mb": int(env["APP_MB"]), "loadavg": open("/proc/loadavg").read().split()[:3]},
       "steps": rows, "caris_stats": {"full_bytes_read": int(env["FULL_READ"] or 0),
                                      "full_bytes_added": full_added, "incremental_bytes_added": inc_added},
       "ratios": {l: v for l, v, _ in ratios}, "restore_check": env["RESTORE_CHECK"],
       "caris_stage_ms": stages}
json.dump(res, open(os.path.join(env["BENCH_DIR"], "results.json"), "w"), indent=2)
print("raw figures: %s" % os.path.join(env["BENCH_DIR"], "results.json"))
PY
exit 0

#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server for the database tests and the database benchmark.
#
# usage: scripts/pg-test-server.sh start|stop|env|status|pause|resume
#
#   start   install what is missing (Debian 12, as root: postgresql-15, which includes
#           contrib; postgresql-client-15; procps, for the tests' ps and pgrep), initdb a
#           fresh cluster as a non-root user, start it, wait until it accepts connections,
#           create the database caris_test, and print the `export ...` lines of its env
#           file (see `env`). Idempotent: a server of ours already running in the
#           directory is reused.
#   env     print the env file again: `eval "$(scripts/pg-test-server.sh env)"`
#   stop    stop the server (pg_ctl stop -m fast) and remove its directory
#   status  exit 0 when the server is running, 1 otherwise
#   pause   stop the server but keep its directory (tests of "server down")
#   resume  start a paused server again and wait until it accepts connections
#
# The server listens on 127.0.0.1 only, TCP clients authenticate with scram-sha-256 as the
# superuser `caris` (random password); the unix socket is in the data directory and
# trusts its clients (only root and the server's user can reach it: the directory is
# 0700). fsync is off by default: this server holds nothing worth keeping.
#
# Environment:
#   CARIS_PG_PORT     TCP port (default 55433); refused when something already listens there
#   CARIS_PG_DIR      the server's directory (default /tmp/caris-pgtest-$CARIS_PG_PORT);
#                     holds data/ (PGDATA and the socket), server.log and env (0600)
#   CARIS_PG_OS_USER  the system user the server runs as when started by root
#                     (default caris-pgtest, created with useradd when missing)
#   CARIS_PG_FSYNC    on|off (default off)
#   CARIS_PG_TIMEOUT  seconds to wait for the server to accept connections (default 60)
#   CARIS_PG_WALDIR   when set: initdb -X there (pg_wal a symlink to it, as packagers do;
#                     created for the server's user)
#   CARIS_PG_TEMPLATE a directory shared by the servers of one test run: the first start
#                     runs initdb there once (under a lock) and creates the database
#                     caris_test in it, every start copies that cluster instead of running
#                     initdb (2 s of initdb against 0.2 s of cp under load) and gives the
#                     superuser a new random password. Its clusters share one system
#                     identifier. Ignored with CARIS_PG_WALDIR.
#                     The caller removes the directory (run.sh does).
#
# The env file exports CARIS_PG_PORT, CARIS_PG_DIR, CARIS_PG_HOST, CARIS_PG_USER,
# CARIS_PG_PASSWORD, CARIS_PG_SOCKET, CARIS_PG_BIN, CARIS_PG_DB, CARIS_PG_OS_USER (who runs
# the server) and POSTGRES_URL=postgresql://caris:PASSWORD@127.0.0.1:PORT/caris_test.
set -euo pipefail

PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PORT=${CARIS_PG_PORT:-55433}
DIR=${CARIS_PG_DIR:-/tmp/caris-pgtest-$PORT}
OS_USER=${CARIS_PG_OS_USER:-caris-pgtest}
FSYNC=${CARIS_PG_FSYNC:-off}
TIMEOUT=${CARIS_PG_TIMEOUT:-60}
DB=caris_test
SUPERUSER=caris
MARKER=.caris-pgtest # present in every directory this script made (stop removes only those)

die() {
    echo "pg-test-server: $1" >&2
    [[ -n ${2:-} ]] && echo "HINT: $2" >&2
    exit 1
}

if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
    die "CARIS_PG_PORT=$PORT is not a TCP port"
fi
[[ $DIR == /* ]] || DIR=$PWD/$DIR
DATA=$DIR/data
ENV_FILE=$DIR/env
LOG=$DIR/server.log

# install_missing: the server, contrib and client packages, quietly, only when missing.
install_missing() {
    # what the packages bring is there: nothing to ask dpkg (three dpkg-query runs cost 0.1 s
    # of CPU, and the test suite starts a server about 240 times)
    [[ -x $PG_BIN/postgres && -x $PG_BIN/initdb && -x $PG_BIN/psql && -x $PG_BIN/pg_dump ]] &&
        command -v ps >/dev/null && command -v pgrep >/dev/null && return 0
    # procps: ps and pgrep, which the database tests use to watch pg_dump (not in Debian's
    # minimal images)
    local pkgs=("postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR" procps) missing=() p
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if ((EUID != 0)); then
        die "missing packages: ${missing[*]}" "run as root, or: sudo apt-get install ${missing[*]}"
    fi
    echo "pg-test-server: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
    [[ -x $PG_BIN/initdb ]] || die "$PG_BIN/initdb missing after installing ${missing[*]}"
}

# as_server CMD...: run CMD as the server's user (root cannot run initdb or postgres), with
# setpriv (util-linux): the user's ids and no supplementary groups, the environment as it is
# but HOME, USER and LOGNAME (runuser's PAM session cost 20 ms of CPU a call, setpriv 8).
_server_gid=""
as_server() {
    if ((EUID == 0)); then
        [[ -n $_server_gid ]] || _server_gid=$(id -g "$OS_USER") || die "no user $OS_USER"
        HOME=/nonexistent USER=$OS_USER LOGNAME=$OS_USER \
            setpriv --reuid="$OS_USER" --regid="$_server_gid" --clear-groups -- "$@"
    else
        "$@"
    fi
}

ensure_os_user() {
    ((EUID == 0)) || return 0
    id -u "$OS_USER" >/dev/null 2>&1 && return 0
    # Tests run in parallel (tests/integration/run.sh -j): two servers starting at once must
    # not both try to create the user (the second useradd would fail).
    {
        flock -w 120 9 || die "cannot lock /tmp/caris-pgtest-useradd.lock" "remove it if no test is running"
        id -u "$OS_USER" >/dev/null 2>&1 ||
            useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
                --user-group "$OS_USER" ||
            die "cannot create the system user $OS_USER" "create it, or set CARIS_PG_OS_USER to an existing non-root user"
    } 9>>/tmp/caris-pgtest-useradd.lock
}

running() {
    [[ -f $DATA/postmaster.pid ]] && as_server "$PG_BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

port_busy() { # something accepts TCP connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

# A pause between two polls without a `sleep` process: a read that times out.
_poll_fd=""
poll_pause() {
    [[ -n $_poll_fd ]] || exec {_poll_fd}<> <(:)
    read -r -t 0.05 -u "$_poll_fd" _ || true
}

# pm_ready DATA: the postmaster of DATA accepts connections: line 8 of its postmaster.pid says
# "ready" (what pg_ctl -w waits for; it is written once the sockets listen and recovery is
# over), read by bash: a pg_isready a poll cost 40 ms of CPU.
pm_ready() {
    local lines=()
    [[ -r $1/postmaster.pid ]] && mapfile -t -n 8 lines 2>/dev/null <"$1/postmaster.pid"
    [[ ${lines[7]:-} == ready* ]]
}

# start_server: start the server of DATA and wait until it accepts connections (-W: we poll
# readiness ourselves, pm_ready, with our own deadline)
start_server() {
    as_server "$PG_BIN/pg_ctl" start -W -D "$DATA" -l "$LOG" -s </dev/null >/dev/null
    local i
    for ((i = 0; i < 200; i++)); do
        [[ -f $DATA/postmaster.pid ]] && break
        poll_pause
    done
    POSTMASTER_PID=""
    { [[ -f $DATA/postmaster.pid ]] && read -r POSTMASTER_PID <"$DATA/postmaster.pid"; } || true
    wait_ready
}

# stop_immediate DATA: stop the server of DATA at once, if one runs (errors ignored)
stop_immediate() {
    as_server "$PG_BIN/pg_ctl" stop -D "$1" -m immediate -w -s </dev/null >/dev/null 2>&1 || true
}

wait_ready() {
    local deadline=$((SECONDS + TIMEOUT))
    while ! pm_ready "$DATA"; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$LOG" >&2 2>/dev/null || true
            die "the server on 127.0.0.1:$PORT is not ready after ${TIMEOUT}s" "see $LOG"
        fi
        if [[ -n ${POSTMASTER_PID:-} ]] && ! kill -0 "$POSTMASTER_PID" 2>/dev/null; then
            tail -n 20 "$LOG" >&2 2>/dev/null || true
            die "the server died while starting" "see $LOG"
        fi
        poll_pause
    done
}

new_password() { head -c 24 /dev/urandom | base64 | tr -d '+/=\n'; }

# run_initdb DATA PASSWORD LOG [-X WALDIR]: a new cluster in DATA (owned by the server's user)
# whose superuser has PASSWORD (handed to initdb in a 0600 file next to DATA, not in argv).
# C.UTF-8: byte-order collation (ordered checksums are reproducible), UTF-8 identifiers.
run_initdb() {
    local data=$1 pwfile=$1.pw log=$3
    (umask 077 && printf '%s\n' "$2" >"$pwfile")
    ((EUID == 0)) && chown "$OS_USER:" "$pwfile"
    shift 3
    if ! as_server "$PG_BIN/initdb" -D "$data" -U "$SUPERUSER" --pwfile="$pwfile" -E UTF8 \
        --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 --no-sync "$@" \
        >"$log" 2>&1 </dev/null; then
        rm -f "$pwfile"
        cat "$log" >&2
        die "initdb failed in $data"
    fi
    rm -f "$pwfile"
}

# template_database DATA LOG: the database $DB created in the new cluster DATA, which is then
# shut down cleanly (its copies start without recovery). Once per run, not once per server:
# CREATE DATABASE is 0.15 s of CPU. The cluster listens on a socket in DATA only, not on TCP.
template_database() {
    local data=$1 log=$2
    : >"$log"
    ((EUID == 0)) && chown "$OS_USER:" "$log"
    if ! as_server "$PG_BIN/pg_ctl" start -w -t "$TIMEOUT" -D "$data" -l "$log" -s \
        -o "-c listen_addresses='' -c unix_socket_directories='$data' -c port=$PORT -c fsync=off" \
        </dev/null >/dev/null; then
        # (a start that timed out may still come up: not left running under the next attempt)
        stop_immediate "$data"
        tail -n 20 "$log" >&2
        die "cannot start the template cluster in $data" "see $log"
    fi
    local rc=0
    printf 'CREATE DATABASE %s;\n' "$DB" |
        "$PG_BIN/psql" -X -q -h "$data" -p "$PORT" -U "$SUPERUSER" -d postgres -v ON_ERROR_STOP=1 \
            >/dev/null || rc=1
    as_server "$PG_BIN/pg_ctl" stop -D "$data" -m fast -w -s </dev/null >/dev/null || {
        stop_immediate "$data"
        rc=1
    }
    ((rc == 0)) || die "cannot create the database $DB in the template cluster $data" "see $log"
}

# make_template: CARIS_PG_TEMPLATE/data, made once by whichever start comes first (the
# others wait on the lock); a failed attempt leaves no data/ and the next start retries.
# Its password is never used: every copy gets its own.
make_template() {
    local t=$CARIS_PG_TEMPLATE
    [[ -d $t ]] || die "CARIS_PG_TEMPLATE=$t is not a directory"
    {
        flock -w 300 8 || die "cannot lock $t/.lock" "remove it if no test is running"
        if [[ ! -d $t/data ]]; then
            rm -rf "$t/data.new"
            mkdir -m 0700 "$t/data.new"
            chmod 0711 "$t" # the server's user must traverse it
            ((EUID == 0)) && chown "$OS_USER:" "$t/data.new"
            run_initdb "$t/data.new" "$(new_password)" "$t/initdb.log"
            template_database "$t/data.new" "$t/template.log"
            mv "$t/data.new" "$t/data"
        fi
    } 8>>"$t/.lock"
}

cmd_start() {
    if [[ -f $DIR/$MARKER && -f $ENV_FILE ]] && running; then
        cat "$ENV_FILE"
        return 0
    fi
    install_missing
    ensure_os_user
    if [[ -e $DIR ]]; then
        [[ -f $DIR/$MARKER ]] || die "$DIR exists and was not made by this script" \
            "remove it or set CARIS_PG_DIR to another directory"
        cmd_stop_quiet
    fi
    port_busy && die "something already listens on 127.0.0.1:$PORT" "set CARIS_PG_PORT to a free port"
    # the socket path must fit in sun_path (108 bytes)
    local sock="$DATA/.s.PGSQL.$PORT"
    ((${#sock} < 100)) || die "socket path $sock is too long" "set CARIS_PG_DIR to a shorter path"

    (umask 077 && mkdir -p "$DIR")
    chmod 0711 "$DIR" # the server's user must traverse it; only we read env
    : >"$DIR/$MARKER"
    mkdir "$DATA"
    chmod 0700 "$DATA"
    : >"$LOG"
    if ((EUID == 0)); then
        chown "$OS_USER:" "$DATA" "$LOG"
    fi

    local password
    password=$(new_password)
    local waldir=()
    if [[ -n ${CARIS_PG_WALDIR:-} ]]; then
        (umask 077 && mkdir -p "$CARIS_PG_WALDIR")
        ((EUID == 0)) && chown "$OS_USER:" "$CARIS_PG_WALDIR"
        waldir=(-X "$CARIS_PG_WALDIR")
    fi
    local templated=0
    if [[ -n ${CARIS_PG_TEMPLATE:-} && ${#waldir[@]} == 0 ]]; then
        make_template
        # the template's files as they are (owner, modes); its password is replaced below
        cp -a "$CARIS_PG_TEMPLATE/data/." "$DATA/" || die "cannot copy the cluster template $CARIS_PG_TEMPLATE/data"
        templated=1
    else
        run_initdb "$DATA" "$password" "$DIR/initdb.log" "${waldir[@]}"
    fi
    as_server tee "$DATA/pg_hba.conf" >/dev/null <<EOF
# caris-backup test server: unix socket (directory 0700) trusted, TCP with a password
local all all                trust
host  all all 127.0.0.1/32   scram-sha-256
EOF
    as_server tee -a "$DATA/postgresql.conf" >/dev/null <<EOF

# --- caris-backup test server ---
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DATA'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
fsync = $FSYNC
synchronous_commit = $FSYNC
full_page_writes = $FSYNC
max_wal_size = '1GB'
# dynamic shared memory in the data directory (pg_dynshmem), gone with it: posix segments in
# /dev/shm outlived the servers the tests stop with -m immediate (about 9 per CI run)
dynamic_shared_memory_type = mmap
log_min_messages = warning
log_connections = off
EOF
    start_server
    # a copied cluster gets this server's own password (on stdin: not in ps)
    # (a copy has the database already)
    if ((templated)); then
        printf "ALTER ROLE %s PASSWORD '%s';\n" "$SUPERUSER" "$password"
    else
        printf 'CREATE DATABASE %s;\n' "$DB"
    fi | "$PG_BIN/psql" -X -q -h "$DATA" -p "$PORT" -U "$SUPERUSER" -d postgres -v ON_ERROR_STOP=1 \
        >/dev/null || die "cannot set up the server (password, database $DB)" "see $LOG"

    local server_user=$OS_USER
    ((EUID == 0)) || server_user=$(id -un)
    (
        umask 077
        cat >"$ENV_FILE" <<EOF
export CARIS_PG_PORT=$PORT
export CARIS_PG_DIR=$DIR
export CARIS_PG_HOST=127.0.0.1
export CARIS_PG_USER=$SUPERUSER
export CARIS_PG_PASSWORD=$password
export CARIS_PG_SOCKET=$DATA
export CARIS_PG_BIN=$PG_BIN
export CARIS_PG_DB=$DB
export CARIS_PG_OS_USER=$server_user
export POSTGRES_URL=postgresql://$SUPERUSER:$password@127.0.0.1:$PORT/$DB
EOF
    )
    cat "$ENV_FILE"
}

cmd_stop_quiet() {
    if [[ -f $DATA/postmaster.pid ]]; then
        as_server "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -w -s </dev/null >/dev/null 2>&1 ||
            stop_immediate "$DATA"
    fi
    if [[ -e $DIR ]]; then
        [[ -f $DIR/$MARKER ]] || die "$DIR was not made by this script; not removing it"
        rm -rf "$DIR"
    fi
}

cmd_pause() {
    [[ -f $DIR/$MARKER && -f $ENV_FILE ]] || die "no server in $DIR" "start one: $0 start"
    running || return 0
    as_server "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -w -s </dev/null >/dev/null
}

cmd_resume() {
    [[ -f $DIR/$MARKER && -f $ENV_FILE ]] || die "no server in $DIR" "start one: $0 start"
    running && return 0
    # a postmaster killed left its postmaster.pid saying "ready": not read as the new one's
    local old=""
    { [[ -f $DATA/postmaster.pid ]] && read -r old <"$DATA/postmaster.pid"; } || true
    [[ $old =~ ^[0-9]+$ ]] && ! kill -0 "$old" 2>/dev/null && rm -f "$DATA/postmaster.pid"
    start_server
}

case ${1:-} in
start) cmd_start ;;
pause) cmd_pause ;;
resume) cmd_resume ;;
stop) cmd_stop_quiet ;;
env)
    [[ -f $ENV_FILE ]] || die "no server in $DIR" "start one: $0 start"
    cat "$ENV_FILE"
    ;;
status) running ;;
-h | --help)
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
    ;;
*)
    echo "usage: $0 start|stop|env|status|pause|resume" >&2
    exit 2
    ;;
esac

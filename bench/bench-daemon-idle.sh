#!/usr/bin/env bash
# Idle daemon: CPU time and memory of `caris-backup daemon` over a period in which no
# schedule is due (issue aim: under 1 s of CPU and 20 MB RSS over 10 minutes).
#
#   bench/bench-daemon-idle.sh [SECONDS]     # default 600
#
# Environment: BENCH_DIR (default /tmp/caris-bench-daemon, wiped first), CARIS_BIN (default
# build/src/cli/caris-backup of this checkout). A repository with one small file backup is
# opened by the daemon (as in production: it keeps it open); the schedules are set to a
# minute that is not due during the measurement. Reports utime+stime from /proc/PID/stat,
# VmRSS and VmHWM from /proc/PID/status at the end. A program, not a test: it always exits 0.
set -u -o pipefail
SECS=${1:-600}
HERE=$(cd "$(dirname "$0")/.." && pwd)
CARIS_BIN=${CARIS_BIN:-$HERE/build/src/cli/caris-backup}
BENCH_DIR=${BENCH_DIR:-/tmp/caris-bench-daemon}
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/src"
head -c 1M /dev/urandom >"$BENCH_DIR/src/file"
export BACKUP_DIR=$BENCH_DIR/backup BACKUP_FILES_PATHS=$BENCH_DIR/src BACKUP_TZ=UTC
export BACKUP_ENCRYPTION_KEY=bench-daemon-key-0123456789abcdef0123456789
# not due while we measure: a minute two hours from now, yearly
h=$(( ($(date -u +%H) + 2) % 24 ))
export BACKUP_SCHEDULE_DAILY="7 $h 29 2 *" BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
"$CARIS_BIN" -q init >/dev/null || { echo "init failed"; exit 0; }
"$CARIS_BIN" -q backup files >/dev/null || { echo "backup failed"; exit 0; }
"$CARIS_BIN" daemon 2>"$BENCH_DIR/daemon.log" &
pid=$!
for _ in $(seq 1 500); do [ -S "$BACKUP_DIR/metadata/daemon.sock" ] && break; sleep 0.02; done
tick=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
c0=$(cpu)
sleep "$SECS"
c1=$(cpu)
rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid"
echo "idle daemon over ${SECS} s: CPU $(echo "scale=3; ($c1 - $c0) / $tick" | bc) s," \
     "RSS $((rss / 1024)) MiB (peak $((hwm / 1024)) MiB)"
exit 0

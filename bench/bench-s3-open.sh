#!/usr/bin/env bash
# Opening an S3 repository of many packs: what `list` and a no-change backup cost, for two
# builds side by side (before/after the open cache, docs/REPOSITORY-FORMAT.md, "Opening without
# listing data/"), against one local s3rver.
#
#   bench/bench-s3-open.sh BEFORE_BIN AFTER_BIN [NPACKS]     # NPACKS default 10000
#
# The repository is made by AFTER_BIN: NPACKS small files, backed up with the test-only pack
# target CARIS_TEST_PACK_TARGET=1 (one pack per file: NPACKS packs of 64 KiB, the smallest a
# pack is padded to). Each build then gets its own BACKUP_DIR (its own local copies and
# caches), is warmed with one `list` and one backup, and runs `list` and a no-change backup
# BENCH_RUNS times (default 3). Printed per run: S3 requests (lines of s3rver's log), LIST
# pages of data/, wall and CPU (user + sys) seconds, and the 1-minute load average (the machine
# is shared). BENCH_DIR (default /tmp/caris-bench-s3-open) is wiped first. A program, not a
# test: it always exits 0.

set -u -o pipefail

BEFORE=${1:?usage: bench-s3-open.sh BEFORE_BIN AFTER_BIN [NPACKS]}
AFTER=${2:?usage: bench-s3-open.sh BEFORE_BIN AFTER_BIN [NPACKS]}
NPACKS=${3:-10000}
RUNS=${BENCH_RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/caris-bench-s3-open}
case "$BENCH_DIR" in
  ""|/|/tmp|/root|/home|/work|"$HOME") echo "refusing BENCH_DIR=$BENCH_DIR" >&2; exit 0 ;;
esac
if [ -d "$BENCH_DIR" ] && [ -n "$(ls -A "$BENCH_DIR" 2>/dev/null)" ] && [ ! -e "$BENCH_DIR/.caris-bench-s3-open" ]; then
  echo "$BENCH_DIR is not empty and was not made by this script; refusing to wipe it" >&2
  exit 0
fi
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"/{s3,src,before,after}
touch "$BENCH_DIR/.caris-bench-s3-open"
LOG=$BENCH_DIR/s3rver.log

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
NODE_OPTIONS=--openssl-legacy-provider s3rver -d "$BENCH_DIR/s3" -a 127.0.0.1 -p "$port" \
  --service-endpoint localhost --configure-bucket bkt >"$LOG" 2>&1 </dev/null &
S3_PID=$!
trap '[[ $BASHPID == "$$" ]] || exit; kill $S3_PID 2>/dev/null' EXIT
for _ in $(seq 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  python3 -c 'import time; time.sleep(0.1)'
done
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
export BACKUP_REPOSITORY=s3:http://127.0.0.1:$port/bkt/repo
BACKUP_ENCRYPTION_KEY=$(head -c 33 /dev/urandom | base64)
export BACKUP_ENCRYPTION_KEY BACKUP_API_LISTEN=none

python3 - "$BENCH_DIR/src" "$NPACKS" <<'EOF'
import os, random, sys
d, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1)
for i in range(n):
    sub = os.path.join(d, "d%03d" % (i % 100))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%06d" % i), "wb") as f:
        f.write(rnd.randbytes(200 + rnd.randrange(300)))
EOF
BACKUP_DIR=$BENCH_DIR/after "$AFTER" --quiet init
t0=$(date +%s)
BACKUP_DIR=$BENCH_DIR/after CARIS_TEST_PACK_TARGET=1 "$AFTER" --quiet backup files "$BENCH_DIR/src" >/dev/null
packs=$(find "$BENCH_DIR/s3/bkt/repo/data" -name '*._S3rver_object' | wc -l)
echo "repository: $packs packs (made in $(($(date +%s) - t0)) s)"

reqs() { grep -cE ' [0-9]{3} [0-9.,]+ms' "$LOG"; }
lists() { grep -c '"prefix":"repo/data/' "$LOG"; }
# measure LABEL BACKUP_DIR BIN ARGS...: one line of figures
measure() {
  local label=$1 dir=$2 bin=$3
  shift 3
  local r0 l0 load
  r0=$(reqs)
  l0=$(lists)
  load=$(cut -d' ' -f1 /proc/loadavg)
  python3 - "$dir" "$bin" "$@" <<'EOF' | {
import os, subprocess, sys, time
env = dict(os.environ, BACKUP_DIR=sys.argv[1])
t = time.monotonic()
p = subprocess.Popen(sys.argv[2:], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, ru = os.wait4(p.pid, 0)
print("%.3f %.3f %d" % (time.monotonic() - t, ru.ru_utime + ru.ru_stime, os.waitstatus_to_exitcode(status)))
EOF
    read -r wall cpu rc
    printf '%-8s %-20s requests %5d  data/ LIST pages %3d  wall %7.3f s  cpu %6.3f s  exit %d  load %s\n' \
      "$label" "$*" $(($(reqs) - r0)) $(($(lists) - l0)) "$wall" "$cpu" "$rc" "$load"
  }
}
for who in before after; do
  bin=$BEFORE
  [ $who = after ] && bin=$AFTER
  measure "$who" "$BENCH_DIR/$who" "$bin" list >/dev/null
  measure "$who" "$BENCH_DIR/$who" "$bin" backup files "$BENCH_DIR/src" >/dev/null
done
echo "uptime: $(uptime)"
for _ in $(seq "$RUNS"); do
  for who in before after; do
    bin=$BEFORE
    [ $who = after ] && bin=$AFTER
    measure "$who" "$BENCH_DIR/$who" "$bin" list
    measure "$who" "$BENCH_DIR/$who" "$bin" backup files "$BENCH_DIR/src"
  done
done
echo "uptime: $(uptime)"
exit 0

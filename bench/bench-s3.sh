#!/usr/bin/env bash
# S3 benchmark: caris-backup vs restic against the same local s3rver, on a generated tree.
#
#   bench/bench-s3.sh [SIZE]        # SIZE like 300M, 2G (default 300M)
#
# Environment:
#   BENCH_DIR     work dir, wiped first (default /tmp/caris-bench-s3)
#   BENCH_SEED    tree seed (default 42)
#   BENCH_TOOLS   tools to run (default "caris restic")
#   BENCH_S3_CONNECTIONS  caris --s3-connections (default: caris's default, 8)
#   CARIS_BIN     our CLI (default: build/src/cli/caris-backup of this checkout)
#
# Steps, each timed with GNU time (wall, CPU = user + sys, peak RSS), with the S3 requests it
# made (lines of s3rver's log), the bytes it added to the bucket and the 1-minute load average
# when it started (the machine is shared):
#   caris:  init, backup (first), backup (no change, twice); restic: the same
#   restores (each verified with diff -r): caris, restic, then restic, caris again (restore2)
#   caris:  copy of a local backup of the same tree into a second S3 repository
# s3rver runs with TLS (a throw-away self-signed certificate): over plain http restic 0.14
# (minio-go) signs uploads as STREAMING-AWS4-HMAC-SHA256-PAYLOAD (aws-chunked bodies), which
# s3rver 3.7 stores undecoded, chunk headers included; restic then reads its own key file back
# as "9b;chunk-signature=..." and stops with "Fatal: Unmarshal: invalid character 'b' after
# top-level value". Over https minio-go sends plain signed bodies, which s3rver stores right.
# Both tools use the same https endpoint. A program, not a test: it always exits 0.

set -u -o pipefail

SIZE=${1:-300M}
BENCH_DIR=${BENCH_DIR:-/tmp/caris-bench-s3}
SEED=${BENCH_SEED:-42}
TOOLS=${BENCH_TOOLS:-"caris restic"}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CARIS_BIN=${CARIS_BIN:-$HERE/../build/src/cli/caris-backup}
PASS='caris-bench-s3-passphrase-0123456789abcdef'

say() { printf '%s\n' "$*"; }
loud() { printf '\n!!!!! %s\n' "$*" >&2; }

case "$BENCH_DIR" in
  ""|/|/tmp|/root|/home|/work|"$HOME") loud "refusing BENCH_DIR=$BENCH_DIR"; exit 0 ;;
esac
BENCH_DIR=$(realpath -m "$BENCH_DIR")
if [ -d "$BENCH_DIR" ] && [ -n "$(ls -A "$BENCH_DIR" 2>/dev/null)" ] && [ ! -e "$BENCH_DIR/.caris-bench-s3" ]; then
  loud "$BENCH_DIR is not empty and was not made by this script; refusing to wipe it"
  exit 0
fi
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"/{src,s3,restore,logs,home}
touch "$BENCH_DIR/.caris-bench-s3"
SRC=$BENCH_DIR/src/tree
LOGS=$BENCH_DIR/logs
RESULTS=$BENCH_DIR/results.tsv
printf 'tool\tstep\twall_s\tcpu_s\trss_kb\trequests\tbucket_bytes\tload\tnote\n' >"$RESULTS"

for need in /usr/bin/time s3rver openssl python3; do
  command -v "$need" >/dev/null || { loud "$need is required"; exit 0; }
done
[ -x "$CARIS_BIN" ] || { loud "no caris-backup at $CARIS_BIN (build it: scripts/build.sh)"; TOOLS=${TOOLS//caris/}; }
command -v restic >/dev/null || { loud "restic not installed: caris only"; TOOLS=${TOOLS//restic/}; }

say "== generating a $SIZE tree (seed $SEED)"
python3 "$HERE/gen-tree.py" gen "$SRC" "$SIZE" --seed "$SEED" >"$LOGS/gen.log" 2>&1 || { loud "gen-tree failed"; exit 0; }
say "   $(du -sb "$SRC" | cut -f1) bytes, $(find "$SRC" -type f | wc -l) files"

# ---- s3rver with TLS ---------------------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$BENCH_DIR/key.pem" -out "$BENCH_DIR/cert.pem" \
  -days 2 -subj /CN=127.0.0.1 -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" >/dev/null 2>&1
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
S3LOG=$BENCH_DIR/s3rver.log
NODE_OPTIONS=--openssl-legacy-provider s3rver -d "$BENCH_DIR/s3" -a 127.0.0.1 -p "$PORT" \
  --key "$BENCH_DIR/key.pem" --cert "$BENCH_DIR/cert.pem" --service-endpoint localhost \
  --configure-bucket caris --configure-bucket caris-copy --configure-bucket restic >"$S3LOG" 2>&1 &
S3PID=$!
trap '[[ $BASHPID == "$$" ]] || exit; kill $S3PID 2>/dev/null' EXIT
deadline=$((SECONDS + 30))
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
  if ((SECONDS > deadline)) || ! kill -0 $S3PID 2>/dev/null; then loud "s3rver did not start"; tail "$S3LOG" >&2; exit 0; fi
  python3 -c 'import time; time.sleep(0.1)'
done
EP=https://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
unset AWS_SESSION_TOKEN AWS_REGION AWS_DEFAULT_REGION
say "== s3rver on $EP (TLS)"

requests() { grep -cE ' [0-9]{3} [0-9.,]+ms' "$S3LOG"; }
bucket_bytes() { du -sb "$BENCH_DIR/s3/$1" 2>/dev/null | cut -f1; }

# step TOOL STEP BUCKET CMD...: runs CMD timed; records wall, RSS, requests, bucket growth.
step() {
  local tool=$1 name=$2 bucket=$3
  shift 3
  local r0 b0 r1 b1 rc load cpu usr sys
  load=$(cut -d' ' -f1 /proc/loadavg)
  r0=$(requests)
  b0=$(bucket_bytes "$bucket")
  /usr/bin/time -f '%e %M %U %S' -o "$LOGS/$tool.$name.time" "$@" >"$LOGS/$tool.$name.out" 2>"$LOGS/$tool.$name.err"
  rc=$?
  r1=$(requests)
  b1=$(bucket_bytes "$bucket")
  # GNU time writes "Command exited with non-zero status N" first on failure
  read -r wall rss usr sys < <(tail -1 "$LOGS/$tool.$name.time" 2>/dev/null) || { wall=?; rss=?; usr=0; sys=0; }
  cpu=$(python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) + float(sys.argv[2])))' "${usr:-0}" "${sys:-0}" 2>/dev/null || echo '?')
  local note=""
  # exit 3 is caris's "completed with warnings"
  if [ "$rc" -ne 0 ] && ! { [ "$tool" = caris ] && [ "$rc" -eq 3 ]; }; then
    note="FAILED (exit $rc, see $LOGS/$tool.$name.err)"
    loud "$tool $name: $note"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$name" "$wall" "$cpu" "$rss" "$((r1 - r0))" "$((b1 - b0))" "$load" "$note" >>"$RESULTS"
  say "   $tool $name: ${wall}s wall, ${cpu}s CPU, ${rss} KB, $((r1 - r0)) requests, +$((b1 - b0)) bytes, load ${load} ${note}"
}

verify_restore() {
  if diff -r "$SRC" "$1" >/dev/null 2>&1; then say "   $2 restore: identical to the source"
  else loud "$2 restore differs from the source"; printf 'verify\t%s\tDIFFERS\n' "$2" >>"$RESULTS"; fi
}

# ---- backups: caris, then restic ------------------------------------------------------------
has() { [[ " $TOOLS " == *" $1 "* ]]; }
if has caris; then
  say "== caris ($("$CARIS_BIN" version 2>/dev/null))"
  export BACKUP_DIR=$BENCH_DIR/home/caris BACKUP_ENCRYPTION_KEY=$PASS BACKUP_API_LISTEN=none
  export BACKUP_S3_CA_FILE=$BENCH_DIR/cert.pem
  [ -n "${BENCH_S3_CONNECTIONS:-}" ] && export BACKUP_S3_CONNECTIONS=$BENCH_S3_CONNECTIONS
  R=s3:$EP/caris/repo
  step caris init caris "$CARIS_BIN" --repo "$R" init
  step caris backup1 caris "$CARIS_BIN" --repo "$R" --json backup files --full "$SRC"
  step caris backup2 caris "$CARIS_BIN" --repo "$R" --json backup files "$SRC"
  step caris backup2b caris "$CARIS_BIN" --repo "$R" --json backup files "$SRC"
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$LOGS/caris.backup1.out" 2>/dev/null)
fi
if has restic; then
  say "== restic ($(restic version 2>/dev/null | cut -d' ' -f2))"
  export RESTIC_PASSWORD=$PASS RESTIC_CACHE_DIR=$BENCH_DIR/home/restic-cache
  RR=(restic --cacert "$BENCH_DIR/cert.pem" -r "s3:$EP/restic/repo")
  step restic init restic "${RR[@]}" init --repository-version 2
  step restic backup1 restic "${RR[@]}" backup --compression auto "$SRC"
  step restic backup2 restic "${RR[@]}" backup --compression auto "$SRC"
  step restic backup2b restic "${RR[@]}" backup --compression auto "$SRC"
fi

# ---- restores: two rounds, the second in reversed order, nothing deleted in between ----------
# (ext4 searches longer for a free inode soon after many were freed, which slows whichever
# tool restores first after a deletion: here no restored tree is deleted before the last
# restore; every restore must match the source)
restore_one() { # TOOL STEP
  local dir=$BENCH_DIR/restore/$1.$2
  mkdir -p "$dir"
  if [ "$1" = caris ]; then
    step caris "$2" caris "$CARIS_BIN" --repo "$R" --json restore files "$id" --target "$dir"
  else
    step restic "$2" restic "${RR[@]}" restore latest --target "$dir"
  fi
  verify_restore "$dir$SRC" "$1 $2"
}
order=()
has caris && order+=(caris)
has restic && order+=(restic)
for t in "${order[@]}"; do restore_one "$t" restore; done
for ((i = ${#order[@]} - 1; i >= 0; i--)); do restore_one "${order[$i]}" restore2; done
rm -rf "${BENCH_DIR:?}/restore"/*

# ---- caris copy: a local repository's backup of the same tree into a second S3 repository ----
if has caris; then
  L=$BENCH_DIR/home/caris-local
  "$CARIS_BIN" --quiet --repo "$L" init >/dev/null 2>&1
  "$CARIS_BIN" --quiet --repo "$L" backup files --full "$SRC" >/dev/null 2>&1
  export CARIS_COPY_TO_KEY=$PASS
  "$CARIS_BIN" --quiet --repo "s3:$EP/caris-copy/repo" init --copy-chunker-from "$L" >/dev/null 2>&1
  step caris copy caris-copy "$CARIS_BIN" --repo "$L" --json copy --latest --to "s3:$EP/caris-copy/repo"
  for s in backup1 backup2 backup2b restore restore2 copy; do
    python3 - "$LOGS/caris.$s.out" "$s" <<'EOF' 2>/dev/null
import json, sys
d = json.load(open(sys.argv[1]))
c = d.get("s3")
if c:
    print("   caris %s (its own counters): %d requests, %d bytes sent, %d received"
          % (sys.argv[2], c["requests"], c["bytesSent"], c["bytesReceived"]))
EOF
  done
fi

say ""
say "== results ($SIZE tree; wall and CPU seconds, peak RSS KB, S3 requests, bytes added to the bucket, load average at the start)"
column -t -s $'\t' "$RESULTS" 2>/dev/null || cat "$RESULTS"
exit 0

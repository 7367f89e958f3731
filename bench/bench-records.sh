#!/usr/bin/env bash
# `list` time with many verification records, before and after prune compacts them
# (docs/REPOSITORY-FORMAT.md, "Records"): a repository of B backups (default 20) gets N verify
# records (default 5000, bench/records_gen.c: round-robin over the backups, one in 97 a
# failure), then `list` is timed (best of 3), `prune` folds the records, and `list` is timed
# again; the statuses `list --json` gives must be the same. A program, not a test: exits 0.
#
#   bench/bench-records.sh [N] [B]      (BENCH_DIR, default /tmp/caris-bench-records)
#
# 2026-11-30, 2-vCPU machine shared with five other engineers' builds, N=5000, B=20, plain
# build: before 5000 record files, list 229 ms; prune (folding 5000 files: one fsynced delete
# each) 15.8 s; after 1 record file, list 44 ms; statuses the same.
set -u -o pipefail
N=${1:-5000}
B=${2:-20}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DIR=${BENCH_DIR:-/tmp/caris-bench-records}
BIN=${CARIS_BIN:-$ROOT/build/src/cli/caris-backup}
case "$DIR" in "" | / | /tmp | /root | /home | /work) echo "refusing BENCH_DIR=$DIR" >&2; exit 0 ;; esac
rm -rf "$DIR"
mkdir -p "$DIR/src"
export BACKUP_ENCRYPTION_KEY=caris-bench-passphrase-0123456789abcdef BACKUP_DIR=$DIR/backup
export BACKUP_API_LISTEN=none
gcc -std=c11 -O2 -D_GNU_SOURCE -I"$ROOT/include" "$HERE/records_gen.c" "$ROOT/build/libcaris.a" \
    -lcrypto -lsodium -lzstd -ljansson -lpq -lcurl -lxml2 -lsqlite3 -lpthread -lm -o "$DIR/records_gen" || exit 0
"$BIN" --quiet init --kdf-memory 8 --kdf-ops 1 || exit 0
for ((i = 0; i < B; i++)); do
    echo "$i" >"$DIR/src/n.txt"
    "$BIN" --quiet backup files "$DIR/src" >/dev/null || exit 0
done
"$DIR/records_gen" "$BACKUP_DIR/repository" "$N" || exit 0
files() { find "$BACKUP_DIR/repository/records/verify" -type f ! -name '.*' | wc -l; }
best_list() { # best of 3, in ms
    local best=999999999 t0 t1 k
    for k in 1 2 3; do
        t0=$(date +%s%N)
        "$BIN" --quiet list >/dev/null
        t1=$(date +%s%N)
        (((t1 - t0) / 1000000 < best)) && best=$(((t1 - t0) / 1000000))
    done
    echo "$best"
}
statuses() { "$BIN" --json list | python3 -c 'import json,sys; print(" ".join(b["status"] for b in json.load(sys.stdin)))'; }
before_status=$(statuses)
echo "before: $(files) record files, list $(best_list) ms"
t0=$(date +%s%N)
"$BIN" --quiet prune >/dev/null
t1=$(date +%s%N)
echo "prune (with compaction): $(((t1 - t0) / 1000000)) ms"
echo "after:  $(files) record files, list $(best_list) ms"
[[ $(statuses) == "$before_status" ]] && echo "statuses: the same" || echo "statuses: DIFFER"
exit 0

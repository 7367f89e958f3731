#!/usr/bin/env bash
# Prune's memory at N blobs (default 1,000,000): builds a repository with bench/prune_mem.c
# (N tiny blobs, one kept snapshot referencing three quarters of them), then measures peak
# RSS (GNU time) of `caris-backup list` (opening the repository: the index), `prune` and
# `check --read-data`. A program, not a test: it always exits 0.
#
#   bench/bench-prune-mem.sh [N]        (BENCH_DIR, default /tmp/caris-bench-prune-mem)
set -u -o pipefail
N=${1:-1000000}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DIR=${BENCH_DIR:-/tmp/caris-bench-prune-mem}
BIN=${CARIS_BIN:-$ROOT/build/src/cli/caris-backup}
case "$DIR" in ""|/|/tmp|/root|/home|/work) echo "refusing BENCH_DIR=$DIR" >&2; exit 0 ;; esac
rm -rf "$DIR"
mkdir -p "$DIR"
export BACKUP_ENCRYPTION_KEY=caris-bench-passphrase-0123456789abcdef
gcc -std=c11 -O2 -D_GNU_SOURCE -I"$ROOT/include" "$HERE/prune_mem.c" "$ROOT/build/libcaris.a" \
    -lcrypto -lsodium -lzstd -ljansson -lpq -lpthread -o "$DIR/prune_mem" || exit 0
/usr/bin/time -f 'build: %e s' "$DIR/prune_mem" "$DIR/repo" "$N" || exit 0
for step in "list" "prune" "check --read-data"; do
    # shellcheck disable=SC2086 # step is two words for check
    /usr/bin/time -f "$step: %e s, peak RSS %M KiB" "$BIN" --quiet --repo "$DIR/repo" $step >/dev/null
done
exit 0

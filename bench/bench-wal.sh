#!/usr/bin/env bash
# WAL archive throughput of `caris-backup wal push` working alone (one process per segment,
# as archive_command runs it): segments per second, and how much of each push is opening the
# repository (the Argon2id derivation of the key slot plus loading the index), measured as
# `wal list` on the same repository. A program, not a test: always exits 0.
#
#   bench/bench-wal.sh [N]     N segments of 16 MiB (default 20); BENCH_DIR (default
#                              /tmp/caris-bench-wal, wiped first when made by this script)
#   CARIS_BIN=build/src/cli/caris-backup by default
set -u
N=${1:-20}
BIN=${CARIS_BIN:-$(dirname "$0")/../build/src/cli/caris-backup}
DIR=${BENCH_DIR:-/tmp/caris-bench-wal}
if [[ -e $DIR ]]; then
    [[ -f $DIR/.caris-bench-wal ]] || { echo "$DIR exists and was not made by this script" >&2; exit 0; }
    rm -rf "$DIR"
fi
mkdir -p "$DIR/wal" && : >"$DIR/.caris-bench-wal"
export BACKUP_DIR=$DIR/backup BACKUP_ENCRYPTION_KEY=bench-wal-key-0123456789abcdefghijklmnop
"$BIN" --quiet init || { echo "init failed" >&2; exit 0; }
# distinct segments: random content (WAL of a busy server dedups little between segments)
python3 - "$DIR/wal" "$N" <<'PY'
import random, sys
r = random.Random(7)
for i in range(1, int(sys.argv[2]) + 1):
    with open("%s/%08X%08X%08X" % (sys.argv[1], 1, 0, i), "wb") as f:
        f.write(r.randbytes(16 << 20))
PY
ms() { date +%s%N | cut -c1-13; }
t0=$(ms)
for f in "$DIR"/wal/*; do
    "$BIN" --quiet wal push "$f" || echo "push $f failed" >&2
done
t1=$(ms)
o0=$(ms)
for _ in 1 2 3 4 5; do "$BIN" --quiet wal list >/dev/null; done
o1=$(ms)
g0=$(ms)
for f in "$DIR"/wal/*; do
    "$BIN" --quiet wal get "$(basename "$f")" "$DIR/got" || echo "get failed" >&2
done
g1=$(ms)
push=$((t1 - t0)) open=$(((o1 - o0) / 5)) get=$((g1 - g0))
echo "wal push alone: $N segments of 16 MiB in $push ms: $(python3 -c "print(round($N*1000/$push, 2))") segments/s ($((push / N)) ms per segment)"
echo "open + list (Argon2id + index + records), per invocation: $open ms (after $N segments)"
echo "wal get: $N segments in $get ms: $(python3 -c "print(round($N*1000/$get, 2))") segments/s"
echo "repository: $(du -sb "$BACKUP_DIR/repository" | cut -f1) bytes for $((N * 16 * 1048576)) bytes of WAL"
exit 0

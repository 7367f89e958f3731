#!/usr/bin/env bash
# `wal push` throughput both ways: alone (each push opens the repository: Argon2id + index
# load) and handed to a running daemon (repository open once). Same N generated 16 MiB
# segments (random: WAL of a busy server dedups little), each way into a fresh repository.
# A program, not a test: always exits 0.
#
#   bench/bench-wal-push.sh [N]   N segments (default 30); BENCH_DIR (default
#                                 /tmp/caris-bench-wal-push, wiped first when made by this script)
#   CARIS_BIN=build/src/cli/caris-backup by default
set -u
N=${1:-30}
BIN=${CARIS_BIN:-$(dirname "$0")/../build/src/cli/caris-backup}
BIN=$(readlink -f "$BIN")
DIR=${BENCH_DIR:-/tmp/caris-bench-wal-push}
if [[ -e $DIR ]]; then
    [[ -f $DIR/.caris-bench-wal-push ]] || { echo "$DIR exists and was not made by this script" >&2; exit 0; }
    rm -rf "$DIR"
fi
mkdir -p "$DIR/wal" && : >"$DIR/.caris-bench-wal-push"
export BACKUP_ENCRYPTION_KEY=bench-wal-key-0123456789abcdefghijklmnop BACKUP_API_LISTEN=none
python3 - "$DIR/wal" "$N" <<'PY'
import random, sys
r = random.Random(7)
for i in range(1, int(sys.argv[2]) + 1):
    with open("%s/%08X%08X%08X" % (sys.argv[1], 1, 0, i), "wb") as f:
        f.write(r.randbytes(16 << 20))
PY
ms() { date +%s%N | cut -c1-13; }
rate() { python3 -c "print(round($1 * 1000 / max($2, 1), 2))"; }

# alone
export BACKUP_DIR=$DIR/alone
"$BIN" --quiet init || { echo "init failed" >&2; exit 0; }
t0=$(ms)
for f in "$DIR"/wal/*; do "$BIN" --quiet wal push --no-daemon "$f" || echo "push $f failed" >&2; done
alone=$(($(ms) - t0))

# through a daemon
export BACKUP_DIR=$DIR/daemon
"$BIN" --quiet init || { echo "init failed" >&2; exit 0; }
: >"$DIR/env"
"$BIN" --env-file "$DIR/env" daemon 2>"$DIR/daemon.log" &
dpid=$!
for _ in $(seq 1 3000); do
    [[ -S $BACKUP_DIR/metadata/daemon.sock ]] && grep -q started "$DIR/daemon.log" && break
    read -r -t 0.02 _ <> <(:) || true
done
# the daemon opens its WAL handle at the first push: count it, as a cold start would
t0=$(ms)
via=0
for f in "$DIR"/wal/*; do
    out=$("$BIN" --env-file "$DIR/env" --json wal push "$f") || echo "push $f failed" >&2
    [[ $out == *'"viaDaemon": true'* ]] && via=$((via + 1))
done
daemon=$(($(ms) - t0))
kill -TERM "$dpid"
wait "$dpid"

echo "wal push alone:        $N segments of 16 MiB in $alone ms: $(rate "$N" "$alone") segments/s ($((alone / N)) ms each)"
echo "wal push via daemon:   $N segments of 16 MiB in $daemon ms: $(rate "$N" "$daemon") segments/s ($((daemon / N)) ms each; $via of $N went through the daemon)"
echo "speed-up: $(python3 -c "print(round($alone / max($daemon, 1), 2))")x"
exit 0

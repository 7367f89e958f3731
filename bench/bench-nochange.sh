#!/usr/bin/env bash
# No-change file backup: caris-backup (and optionally an earlier build of it) vs restic, the
# same unchanged tree backed up again and again, the tools interleaved round by round so
# that all see the same machine load. Warm page cache (the tree was just walked), or cold
# with BENCH_COLD=1 (as root: the page cache is dropped before every step, as bench-files.sh
# does; one bench-files.sh run gives one cold no-change round per tool, this gives ROUNDS).
#
#   bench/bench-nochange.sh [SIZE]        # SIZE like 300M, 2G (default 2G)
#
# Environment:
#   BENCH_DIR         work dir (default /tmp/caris-bench-nochange); the tree and the
#                     repositories are made once and kept for the next run (delete it to
#                     start again); refused when it exists and was not made by this script
#   BENCH_SEED        tree seed (default 42)
#   BENCH_ROUNDS      measured rounds (default 7)
#   CARIS_BIN         our CLI (default /work/main/build/src/cli/caris-backup)
#   CARIS_BIN_BEFORE  optional: another build, measured side by side ("before")
#   BENCH_TOOLS       default "before caris restic" (before only with CARIS_BIN_BEFORE)
#   BENCH_COLD        1: drop the page cache before every measured step (needs root)
#
# Each step runs under /usr/bin/time: wall, user, sys. Printed: per tool the median and
# the best of wall and of CPU (user + sys), and the load average before and after.
# This is a program, not a test: it always exits 0.
set -u -o pipefail

SIZE=${1:-2G}
BENCH_DIR=${BENCH_DIR:-/tmp/caris-bench-nochange}
SEED=${BENCH_SEED:-42}
ROUNDS=${BENCH_ROUNDS:-7}
CARIS_BIN=${CARIS_BIN:-/work/main/build/src/cli/caris-backup}
BEFORE=${CARIS_BIN_BEFORE:-}
TOOLS=${BENCH_TOOLS:-"before caris restic"}
COLD=${BENCH_COLD:-0}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PASS='caris-bench-passphrase-0123456789abcdef'

say() { printf '%s\n' "$*"; }
case "$BENCH_DIR" in
  ""|/|/tmp|/root|/home|/work|/work/main|"$HOME") say "refusing BENCH_DIR=$BENCH_DIR"; exit 0 ;;
esac
if [ -d "$BENCH_DIR" ] && [ -n "$(ls -A "$BENCH_DIR")" ] && [ ! -e "$BENCH_DIR/.caris-bench-nochange" ]; then
  say "$BENCH_DIR is not empty and was not made by this script; refusing to use it"
  exit 0
fi
[ -x /usr/bin/time ] || { say "/usr/bin/time (GNU time) is required"; exit 0; }
if [ "$COLD" = 1 ] && ! { sync && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; }; then
  say "BENCH_COLD=1: cannot drop the page cache (not root?): warm figures"
  COLD=0
fi
mkdir -p "$BENCH_DIR" && touch "$BENCH_DIR/.caris-bench-nochange"
SRC=$BENCH_DIR/tree
export BACKUP_ENCRYPTION_KEY=$PASS RESTIC_PASSWORD=$PASS
export RESTIC_CACHE_DIR=$BENCH_DIR/restic-cache

active=()
for t in $TOOLS; do
  case $t in
    before) [ -n "$BEFORE" ] && [ -x "$BEFORE" ] && active+=(before) ;;
    caris) [ -x "$CARIS_BIN" ] && active+=(caris) ;;
    restic) command -v restic >/dev/null && active+=(restic) ;;
  esac
done
# Binaries copied once: a rebuild during the run does not change what is measured.
mkdir -p "$BENCH_DIR/bin"
[ -x "$CARIS_BIN" ] && cp "$CARIS_BIN" "$BENCH_DIR/bin/caris"
[ -n "$BEFORE" ] && [ -x "$BEFORE" ] && cp "$BEFORE" "$BENCH_DIR/bin/before"

# step TOOL: one no-change backup; prints "wall user sys"
step() {
  local t=$1 out=$BENCH_DIR/time.$1
  if [ "$COLD" = 1 ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi
  case $t in
    before|caris)
      BACKUP_DIR=$BENCH_DIR/bd-$t /usr/bin/time -o "$out" -f '%e %U %S' \
        "$BENCH_DIR/bin/$t" --quiet backup files --incremental "$SRC" >/dev/null 2>"$BENCH_DIR/err.$t" ;;
    restic)
      /usr/bin/time -o "$out" -f '%e %U %S' \
        restic -r "$BENCH_DIR/restic-repo" backup --compression auto -q "$SRC" >/dev/null 2>"$BENCH_DIR/err.$t" ;;
  esac
  local rc=$?
  [ $rc -eq 0 ] || { say "$t failed (exit $rc): $(tail -n 2 "$BENCH_DIR/err.$t")" >&2; }
  tail -n 1 "$out"
}

if [ ! -d "$SRC" ]; then
  say "making the $SIZE tree (seed $SEED)"
  python3 "$HERE/gen-tree.py" gen --seed "$SEED" "$SRC" "$SIZE" >/dev/null || { say "gen-tree failed"; exit 0; }
fi
for t in "${active[@]}"; do
  [ -e "$BENCH_DIR/ready.$t" ] && continue
  say "setting up $t (init, full backup, one incremental)"
  case $t in
    before|caris)
      rm -rf "$BENCH_DIR/bd-$t"
      BACKUP_DIR=$BENCH_DIR/bd-$t "$BENCH_DIR/bin/$t" --quiet init >/dev/null &&
        BACKUP_DIR=$BENCH_DIR/bd-$t "$BENCH_DIR/bin/$t" --quiet backup files --full "$SRC" >/dev/null ;;
    restic)
      rm -rf "$BENCH_DIR/restic-repo"
      restic init --repository-version 2 -r "$BENCH_DIR/restic-repo" >/dev/null &&
        restic -r "$BENCH_DIR/restic-repo" backup --compression auto -q "$SRC" >/dev/null ;;
  esac || { say "setup of $t failed"; continue; }
  step "$t" >/dev/null && touch "$BENCH_DIR/ready.$t"
done

load0=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$BENCH_DIR/rounds.tsv"
for ((i = 1; i <= ROUNDS; i++)); do
  for t in "${active[@]}"; do
    printf '%s\t%s\n' "$t" "$(step "$t")" >>"$BENCH_DIR/rounds.tsv"
  done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)
say "no-change backup, $ROUNDS rounds, tree $SRC ($(find "$SRC" -type f | wc -l) files), $(nproc) cores"
say "load average before: $load0   after: $load1"
if [ "$COLD" = 1 ]; then say "page cache: dropped before every step (cold)"; else say "page cache: warm"; fi
python3 - "$BENCH_DIR/rounds.tsv" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    t, v = line.rstrip("\n").split("\t")
    try:
        w, u, s = map(float, v.split())
    except ValueError:
        continue
    rows.setdefault(t, []).append((w, u + s))
print("%-8s %8s %8s %8s %8s" % ("tool", "wall med", "wall min", "cpu med", "cpu min"))
for t, v in rows.items():
    ws = [x[0] for x in v]; cs = [x[1] for x in v]
    print("%-8s %8.2f %8.2f %8.2f %8.2f" % (t, statistics.median(ws), min(ws), statistics.median(cs), min(cs)))
PY
exit 0

#!/usr/bin/env bash
# Prune benchmark: caris-backup vs restic vs borg, forgetting half of 30 backups.
#
#   bench/bench-prune.sh [SIZE] [BACKUPS]      # SIZE like 256M, 2G (default 256M); BACKUPS 30
#   bench/bench-prune.sh --again               # only the measured step again, on the saved
#                                              # repositories of the last run (new binaries)
#
# Environment:
#   BENCH_DIR     work dir, wiped first (default /tmp/caris-bench-prune)
#   BENCH_SEED    tree seed (default 42)
#   BENCH_TOOLS   tools to run (default "caris restic borg")
#   CARIS_BIN     our CLI (default: build/src/cli/caris-backup of this checkout)
#
# The tree (bench/gen-tree.py gen) is backed up BACKUPS times by every tool, with
# `gen-tree.py mutate` (~1 % of the files changed) between two backups, phase by phase so
# that every tool sees the same data. Then each tool forgets the older half and reclaims
# the space: caris `forget --keep-last N/2 --prune`, restic `forget --keep-last N/2 --prune`
# (its default --max-unused 5 %, as ours), borg `prune --keep-last N/2` then `compact`.
# Measured for that step: wall time, peak RSS (GNU time), repository size after (du -sb).
# Page cache dropped before the measured step when running as root. A program, not a test:
# it always exits 0.

set -u -o pipefail

AGAIN=0
if [ "${1:-}" = "--again" ]; then AGAIN=1; shift; fi
SIZE=${1:-256M}
NB=${2:-30}
KEEP=$((NB / 2))
BENCH_DIR=${BENCH_DIR:-/tmp/caris-bench-prune}
SEED=${BENCH_SEED:-42}
TOOLS=${BENCH_TOOLS:-"caris restic borg"}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CARIS_BIN=${CARIS_BIN:-$HERE/../build/src/cli/caris-backup}
PASS='caris-bench-passphrase-0123456789abcdef'

say() { printf '%s\n' "$*"; }
loud() { printf '\n!!!!! %s\n' "$*" >&2; }

case "$BENCH_DIR" in
  ""|/|/tmp|/root|/home|/work|"$HOME") loud "refusing BENCH_DIR=$BENCH_DIR"; exit 0 ;;
esac
BENCH_DIR=$(realpath -m "$BENCH_DIR")
if [ "$AGAIN" = 1 ] && [ -f "$BENCH_DIR/saved/params" ]; then
  # shellcheck disable=SC1091
  source "$BENCH_DIR/saved/params"
  KEEP=$((NB / 2))
  rm -rf "$BENCH_DIR/repos" "$BENCH_DIR/cache"
  cp -a "$BENCH_DIR/saved/repos" "$BENCH_DIR/repos"
  cp -a "$BENCH_DIR/saved/cache" "$BENCH_DIR/cache"
  mkdir -p "$BENCH_DIR/logs"
elif [ "$AGAIN" = 1 ]; then
  loud "no saved run in $BENCH_DIR (run without --again first)"; exit 0
elif [ -d "$BENCH_DIR" ] && [ -n "$(ls -A "$BENCH_DIR" 2>/dev/null)" ] && [ ! -e "$BENCH_DIR/.caris-bench" ]; then
  loud "$BENCH_DIR is not empty and was not made by this script; refusing to wipe it"
  exit 0
fi
if [ "$AGAIN" = 0 ]; then
  rm -rf "$BENCH_DIR"
  mkdir -p "$BENCH_DIR"/{src,repos,cache,logs,bin}
  touch "$BENCH_DIR/.caris-bench"
fi
SRC=$BENCH_DIR/src/tree
REPOS=$BENCH_DIR/repos
CACHE=$BENCH_DIR/cache
LOGS=$BENCH_DIR/logs
cd "$BENCH_DIR" || exit 0
[ -x /usr/bin/time ] || { loud "/usr/bin/time (GNU time) is required"; exit 0; }

drop_caches() { sync; echo 3 2>/dev/null >/proc/sys/vm/drop_caches; }
if drop_caches; then say "page cache: dropped before each measured step"; else say "page cache: warm (not root)"; fi

declare -A AVAIL
for t in $TOOLS; do
  case $t in
    caris) if [ -x "$CARIS_BIN" ]; then cp "$CARIS_BIN" "$BENCH_DIR/bin/caris-backup"; AVAIL[$t]=1
           say "tool caris: $("$CARIS_BIN" version) ($(realpath "$CARIS_BIN"))"; else AVAIL[$t]=0; fi ;;
    restic) command -v restic >/dev/null && AVAIL[$t]=1 && say "tool restic: $(restic version)" || AVAIL[$t]=0 ;;
    borg) command -v borg >/dev/null && AVAIL[$t]=1 && say "tool borg: $(borg --version)" || AVAIL[$t]=0 ;;
  esac
  [ "${AVAIL[$t]}" = 1 ] || say "tool $t: not available (./scripts/install-deps.sh --bench)"
done

tool_cmd() {
  case $1 in
    caris)  echo env BACKUP_DIR="$REPOS/caris" BACKUP_ENCRYPTION_KEY="$PASS" "$BENCH_DIR/bin/caris-backup" ;;
    restic) echo env RESTIC_PASSWORD="$PASS" RESTIC_CACHE_DIR="$CACHE/restic" restic -r "$REPOS/restic" ;;
    borg)   echo env BORG_PASSPHRASE="$PASS" BORG_BASE_DIR="$CACHE/borg" borg ;;
  esac
}
repo_dir() { if [ "$1" = caris ]; then echo "$REPOS/caris/repository"; else echo "$REPOS/$1"; fi; }
bytes() { du -sb "$1" 2>/dev/null | cut -f1; }

if [ "$AGAIN" = 0 ]; then
say "== gen $SIZE tree (seed $SEED)"
python3 "$HERE/gen-tree.py" gen "$SRC" "$SIZE" --seed "$SEED" >"$LOGS/gen.log" 2>&1 || { loud "gen-tree failed"; exit 0; }
say "   $(du -sh "$SRC" | cut -f1), $(find "$SRC" -type f | wc -l) files"

for t in $TOOLS; do
  [ "${AVAIL[$t]}" = 1 ] || continue
  read -r -a c <<<"$(tool_cmd "$t")"
  case $t in
    caris)  mkdir -p "$REPOS/caris"; "${c[@]}" --quiet init >"$LOGS/$t.init.log" 2>&1 ;;
    restic) "${c[@]}" init --repository-version 2 >"$LOGS/$t.init.log" 2>&1 ;;
    borg)   "${c[@]}" init --encryption repokey-blake2 "$REPOS/borg" >"$LOGS/$t.init.log" 2>&1 ;;
  esac || { loud "$t init failed"; AVAIL[$t]=0; }
done

say "== $NB backups per tool, ~1 % of the files changed between two"
declare -A BTIME
for i in $(seq 1 "$NB"); do
  if [ "$i" -gt 1 ]; then
    python3 "$HERE/gen-tree.py" mutate "$SRC" --seed "$SEED" --round "$i" >>"$LOGS/mutate.log" 2>&1
  fi
  for t in $TOOLS; do
    [ "${AVAIL[$t]}" = 1 ] || continue
    read -r -a c <<<"$(tool_cmd "$t")"
    s=$(date +%s.%N)
    case $t in
      caris)  "${c[@]}" --quiet backup files "$SRC" ;;
      restic) "${c[@]}" backup --compression auto "$SRC" ;;
      borg)   "${c[@]}" create --compression zstd,3 "$REPOS/borg::b$i" "$SRC" ;;
    esac >>"$LOGS/$t.backup.log" 2>&1 || { loud "$t backup $i failed"; tail -n 5 "$LOGS/$t.backup.log" >&2; }
    BTIME[$t]=$(awk -v a="${BTIME[$t]:-0}" -v s="$s" -v e="$(date +%s.%N)" 'BEGIN{print a + e - s}')
  done
  printf '   backup %d of %d done\r' "$i" "$NB"
done
echo
# kept so that `--again` can measure the step below again (e.g. with a new build)
mkdir -p "$BENCH_DIR/saved"
cp -a "$REPOS" "$BENCH_DIR/saved/repos"
cp -a "$CACHE" "$BENCH_DIR/saved/cache"
printf 'SIZE=%s\nNB=%s\nBTIME_caris=%s\nBTIME_restic=%s\nBTIME_borg=%s\n' "$SIZE" "$NB" \
  "${BTIME[caris]:-0}" "${BTIME[restic]:-0}" "${BTIME[borg]:-0}" >"$BENCH_DIR/saved/params"
else
  declare -A BTIME=([caris]=$BTIME_caris [restic]=$BTIME_restic [borg]=$BTIME_borg)
  say "== again: the measured step on the repositories saved after $NB backups of $SIZE"
fi

say "== forget the $((NB - KEEP)) oldest, reclaim space (measured)"
declare -A WALL RSS BEFORE AFTER
for t in $TOOLS; do
  [ "${AVAIL[$t]}" = 1 ] || continue
  read -r -a c <<<"$(tool_cmd "$t")"
  BEFORE[$t]=$(bytes "$(repo_dir "$t")")
  drop_caches
  case $t in
    caris)
      /usr/bin/time -f '%e %M' -o "$LOGS/$t.prune.time" "${c[@]}" forget --keep-last "$KEEP" --prune >"$LOGS/$t.prune.log" 2>&1
      read -r "WALL[$t]" "RSS[$t]" <"$LOGS/$t.prune.time" ;;
    restic)
      /usr/bin/time -f '%e %M' -o "$LOGS/$t.prune.time" "${c[@]}" forget --keep-last "$KEEP" --prune >"$LOGS/$t.prune.log" 2>&1
      read -r "WALL[$t]" "RSS[$t]" <"$LOGS/$t.prune.time" ;;
    borg)
      /usr/bin/time -f '%e %M' -o "$LOGS/$t.prune.time" "${c[@]}" prune --keep-last "$KEEP" "$REPOS/borg" >"$LOGS/$t.prune.log" 2>&1
      /usr/bin/time -f '%e %M' -o "$LOGS/$t.compact.time" "${c[@]}" compact "$REPOS/borg" >"$LOGS/$t.compact.log" 2>&1
      read -r w1 r1 <"$LOGS/$t.prune.time"
      read -r w2 r2 <"$LOGS/$t.compact.time"
      WALL[$t]=$(awk -v a="$w1" -v b="$w2" 'BEGIN{printf "%.2f", a + b}')
      RSS[$t]=$((r1 > r2 ? r1 : r2)) ;;
  esac
  AFTER[$t]=$(bytes "$(repo_dir "$t")")
  say "   $t: ${WALL[$t]} s, $((RSS[$t] / 1024)) MiB peak RSS, repository $((BEFORE[$t] / 1048576)) -> $((AFTER[$t] / 1048576)) MiB"
done

# a kept backup is still whole (each tool's own check of all data)
say "== check after prune (all data read)"
for t in $TOOLS; do
  [ "${AVAIL[$t]}" = 1 ] || continue
  read -r -a c <<<"$(tool_cmd "$t")"
  case $t in
    caris)  "${c[@]}" --quiet check --read-data ;;
    restic) "${c[@]}" check --read-data ;;
    borg)   "${c[@]}" check --verify-data "$REPOS/borg" ;;
  esac >"$LOGS/$t.check.log" 2>&1 && say "   $t: ok" || loud "$t check after prune FAILED (see $LOGS/$t.check.log)"
done

say ""
say "| $SIZE tree, $NB backups (~1 % changed between two), forget $((NB - KEEP)) + reclaim | $(for t in $TOOLS; do printf '%s | ' "$t"; done)"
say "| --- | $(for t in $TOOLS; do printf -- '--- | '; done)"
row() { local label=$1 fn=$2; printf '| %s | ' "$label"; for t in $TOOLS; do [ "${AVAIL[$t]}" = 1 ] && printf '%s | ' "$($fn "$t")" || printf 'n/a | '; done; echo; }
# shellcheck disable=SC2317 # called through row
f_backups() { awk -v s="${BTIME[$1]}" 'BEGIN{printf "%.1f s", s}'; }
f_wall() { echo "${WALL[$1]} s"; }
f_rss() { echo "$((RSS[$1] / 1024)) MB"; }
f_before() { awk -v b="${BEFORE[$1]}" 'BEGIN{printf "%.1f MB", b / 1048576}'; }
f_after() { awk -v b="${AFTER[$1]}" 'BEGIN{printf "%.1f MB", b / 1048576}'; }
row "all $NB backups (total)" f_backups
row "forget + prune (wall)" f_wall
row "peak RSS of forget + prune" f_rss
row "repository before" f_before
row "repository after" f_after
exit 0

#!/usr/bin/env bash
# Mount benchmark: reading a backup through `caris-backup mount` vs `restic mount`.
#
#   bench/bench-mount.sh [TREE]     # TREE: a directory to back up (default /usr/share)
#
# Environment:
#   BENCH_DIR   work dir, wiped first (default /tmp/caris-bench-mount)
#   BENCH_TOOLS tools to run (default "caris restic")
#   CARIS_BIN   our CLI (default: build/src/cli/caris-backup of this checkout)
#
# Each tool backs up TREE and a 256 MiB random file, mounts its repository, and we time:
# the first listing of the tree's directory (caris loads the backup's entries then), `tar`
# of the whole tree through the mount (many small files), `cat` of the big file (one large
# file read in order). Page cache dropped before each step when running as root. Peak RSS of
# the mount process (VmHWM). A program, not a test: it always exits 0. Needs /dev/fuse.

set -u -o pipefail

TREE=${1:-/usr/share}
BENCH_DIR=${BENCH_DIR:-/tmp/caris-bench-mount}
TOOLS=${BENCH_TOOLS:-"caris restic"}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CARIS_BIN=${CARIS_BIN:-$HERE/../build/src/cli/caris-backup}
PASS='caris-bench-passphrase-0123456789abcdef'

case "$BENCH_DIR" in
/tmp/?*) ;;
*) echo "BENCH_DIR must be below /tmp (it is wiped)" >&2; exit 0 ;;
esac
[[ -c /dev/fuse ]] || { echo "no /dev/fuse: nothing to measure"; exit 0; }
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/big" "$BENCH_DIR/mnt"
head -c 256M /dev/urandom >"$BENCH_DIR/big/big.bin"

drop() { [[ $(id -u) == 0 ]] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; true; }
secs() { local t0=$EPOCHREALTIME; "$@" >/dev/null 2>&1; awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {print b - a}'; }
mounted() { mountpoint -q "$BENCH_DIR/mnt"; }
wait_for() { # CMD: poll up to 120 s
    local deadline=$((SECONDS + 120))
    until "$@"; do ((SECONDS < deadline)) || return 1; read -r -t 0.05 _ < <(:) || true; done
}

declare -A LS TAR CAT RSS
for tool in $TOOLS; do
    case $tool in
    caris)
        export BACKUP_DIR=$BENCH_DIR/caris BACKUP_ENCRYPTION_KEY=$PASS
        "$CARIS_BIN" -q init >/dev/null 2>&1
        "$CARIS_BIN" -q backup files "$TREE" "$BENCH_DIR/big" >/dev/null 2>&1
        "$CARIS_BIN" -q mount "$BENCH_DIR/mnt" 2>/dev/null &
        pid=$!
        root=$BENCH_DIR/mnt/latest
        ;;
    restic)
        export RESTIC_PASSWORD=$PASS RESTIC_REPOSITORY=$BENCH_DIR/restic
        restic init -q >/dev/null 2>&1
        restic backup -q "$TREE" "$BENCH_DIR/big" >/dev/null 2>&1
        restic mount "$BENCH_DIR/mnt" >/dev/null 2>&1 &
        pid=$!
        root=$BENCH_DIR/mnt/snapshots/latest
        ;;
    esac
    wait_for mounted || { echo "$tool: no mount"; kill "$pid"; continue; }
    wait_for test -d "$root" # the newest backup's directory (its entries not loaded yet)
    drop
    LS[$tool]=$(secs ls -R "$root$TREE")
    drop
    TAR[$tool]=$(secs bash -c 'tar cf - -C "$1" . | wc -c' _ "$root$TREE")
    drop
    CAT[$tool]=$(secs cat "$root$BENCH_DIR/big/big.bin")
    RSS[$tool]=$(awk '/VmHWM/ {printf "%d MB", $2 / 1024}' /proc/$pid/status)
    kill -INT "$pid"
    wait "$pid"
    wait_for bash -c '! mountpoint -q "$1"' _ "$BENCH_DIR/mnt"
done

printf '\n| %s (%s files) + 256 MiB file | %s |\n' "$TREE" "$(find "$TREE" | wc -l)" "$(echo $TOOLS | sed 's/ / | /g')"
printf '| --- |%s\n' "$(for t in $TOOLS; do printf ' --- |'; done)"
printf '| ls -R of the tree (first look: loads the entries) |'; for t in $TOOLS; do printf ' %.2f s |' "${LS[$t]}"; done; echo
printf '| tar of the tree |'; for t in $TOOLS; do printf ' %.2f s |' "${TAR[$t]}"; done; echo
printf '| cat of the 256 MiB file |'; for t in $TOOLS; do printf ' %.2f s |' "${CAT[$t]}"; done; echo
printf '| peak RSS of the mount |'; for t in $TOOLS; do printf ' %s |' "${RSS[$t]}"; done; echo
exit 0

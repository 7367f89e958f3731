#!/usr/bin/env bash
# Usage: backup-database.sh [full|incremental]
# Creates a database backup (caris-backup backup database). Exit codes: see caris-backup --help.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
mode=${1:-full}
case "$mode" in
  full | incremental) ;;
  -h | --help) sed -n '2,3s/^# //p' "$0"; exit 0 ;;
  *) echo "error: unknown backup type '$mode' (full or incremental)" >&2; exit 2 ;;
esac
bin=$(caris_bin)
exec "$bin" backup database "--$mode"

#!/usr/bin/env bash
# Usage: backup-database.sh [full|incremental]
# Creates a database backup (caris-backup backup database; the repository first if there is none). Exit codes: see caris-backup --help.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [ $# -gt 1 ]; then
  echo "error: one argument at most, full or incremental (got $#)" >&2
  exit 2
fi
mode=${1:-full}
case "$mode" in
  full | incremental) ;;
  -h | --help) sed -n '2,3s/^# //p' "$0"; exit 0 ;;
  *) echo "error: unknown backup type '$mode' (full or incremental)" >&2; exit 2 ;;
esac
bin=$(caris_bin)
# The seed's quick start runs this script first on a new BACKUP_DIR: create the repository
# there when it has none (only `init` creates one; the backup itself refuses a missing one).
"$bin" --quiet init --if-missing
exec "$bin" backup database "--$mode"

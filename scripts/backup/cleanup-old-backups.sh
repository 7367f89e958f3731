#!/usr/bin/env bash
# Usage: [DRY_RUN=true] [CARIS_ENV_FILE=F] cleanup-old-backups.sh
# Applies the retention policy (BACKUP_RETENTION_DAILY/WEEKLY/MONTHLY, default 7/4/12), then prunes what no backup needs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,3s/^# //p' "$0"; exit 0; fi
if [ $# -ne 0 ]; then sed -n '2,3s/^# //p' "$0" >&2; exit 2; fi
bin=$(caris_bin)
args=(forget --prune)
if dry_run; then args+=(--dry-run); fi

# The file system that holds the repository, as df shows it, before and after.
backup_dir=${BACKUP_DIR:-}
if [ -z "$backup_dir" ]; then
  backup_dir=$(env_file_get BACKUP_DIR)
fi
backup_dir=${backup_dir:-/var/backups/caris}
show_df() {
  echo "$1:"
  if [ -d "$backup_dir" ]; then
    df -h "$backup_dir" | sed 's/^/  /'
    echo "  repository: $(du -sh "$backup_dir/repository" 2>/dev/null | cut -f1)"
  else
    echo "  ($backup_dir does not exist)"
  fi
}

show_df "before"
rc=0
"$bin" "${CARIS_ENV_ARGS[@]}" "${args[@]}" || rc=$?
show_df "after"
exit "$rc"

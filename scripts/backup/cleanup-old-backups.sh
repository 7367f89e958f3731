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

# The file system that holds the repository (BACKUP_REPOSITORY, else BACKUP_DIR/repository:
# the one forget and prune work on), as df shows it, before and after.
repo=$(repo_location)
show_df() {
  echo "$1:"
  case $repo in
    s3:*) echo "  repository $repo: on S3 (no disk usage to show)" ;;
    *)
      if [ -d "$repo" ]; then
        df -h "$repo" | sed 's/^/  /'
        echo "  repository $repo: $(du -sh "$repo" 2>/dev/null | cut -f1)"
      else
        echo "  ($repo does not exist)"
      fi
      ;;
  esac
}

show_df "before"
rc=0
"$bin" "${CARIS_ENV_ARGS[@]}" "${args[@]}" || rc=$?
show_df "after"
exit "$rc"

#!/usr/bin/env bash
# Usage: [DRY_RUN=true] [CARIS_ENV_FILE=F] verify-backup.sh BACKUP_ID | --all
# Reads every blob the backup needs and checks every file's SHA-256 (exit 4 on damage).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,3s/^# //p' "$0"; exit 0; fi
if [ $# -ne 1 ]; then sed -n '2,3s/^# //p' "$0" >&2; exit 2; fi
bin=$(caris_bin)
# DRY_RUN=true: the backups are found (the repository opened with the key) and named, nothing
# is verified or recorded (a verification writes its result into the repository)
if dry_run; then
  if [ "$1" = --all ]; then
    "$bin" "${CARIS_ENV_ARGS[@]}" --quiet list >/dev/null
    echo "dry run: would verify every backup that \`caris-backup list\` shows; no backup data was read, no verification recorded"
  else
    "$bin" "${CARIS_ENV_ARGS[@]}" --quiet show "$1" >/dev/null
    echo "dry run: would verify backup $1 (every blob it needs, every file's SHA-256); no backup data was read, no verification recorded"
  fi
  exit 0
fi
exec "$bin" "${CARIS_ENV_ARGS[@]}" verify "$1"

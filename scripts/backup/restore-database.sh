#!/usr/bin/env bash
# Usage: [DRY_RUN=true] [CARIS_ENV_FILE=F] restore-database.sh BACKUP_ID [caris-backup restore options...]
# Restores a database backup. With DRY_RUN=true nothing is changed: the restore is proven in
# a scratch database and the plan printed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [ $# -lt 1 ]; then sed -n '2,4s/^# //p' "$0" >&2; exit 2; fi
if [ "$1" = "-h" ] || [ "$1" = "--help" ]; then sed -n '2,4s/^# //p' "$0"; exit 0; fi
id=$1
shift
bin=$(caris_bin)
args=(restore database "$id")
if dry_run; then args+=(--dry-run); fi
exec "$bin" "${CARIS_ENV_ARGS[@]}" "${args[@]}" "$@"

#!/usr/bin/env bash
# Usage: [CARIS_ENV_FILE=F] verify-backup.sh BACKUP_ID | --all
# Reads every blob the backup needs and checks every file's SHA-256 (exit 4 on damage).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,3s/^# //p' "$0"; exit 0; fi
if [ $# -ne 1 ]; then sed -n '2,3s/^# //p' "$0" >&2; exit 2; fi
bin=$(caris_bin)
exec "$bin" "${CARIS_ENV_ARGS[@]}" verify "$1"

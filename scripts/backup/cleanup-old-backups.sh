#!/usr/bin/env bash
# Usage: [DRY_RUN=true] cleanup-old-backups.sh
# Applies the retention policy (daily 7, weekly 4, monthly 12) and prunes what no backup needs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,3s/^# //p' "$0"; exit 0; fi
bin=$(caris_bin)
args=(retention)
if is_true "${DRY_RUN:-}"; then args+=(--dry-run); fi
exec "$bin" "${args[@]}"

# shellcheck shell=bash
# Shared by the scripts in scripts/backup/: finds the caris-backup binary.
# CARIS_BIN overrides; otherwise the build in this checkout, then the one on PATH.
caris_bin() {
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  if [ -n "${CARIS_BIN:-}" ]; then
    echo "$CARIS_BIN"
  elif [ -x "$here/build/src/cli/caris-backup" ]; then
    echo "$here/build/src/cli/caris-backup"
  elif command -v caris-backup >/dev/null; then
    command -v caris-backup
  else
    echo "error: caris-backup is not built" >&2
    echo "HINT: run ./scripts/build.sh in $here" >&2
    return 1
  fi
}

is_true() {
  case "${1:-}" in true | TRUE | True | 1 | yes | on) return 0 ;; *) return 1 ;; esac
}

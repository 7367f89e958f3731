#!/usr/bin/env bash
# Usage: [DRY_RUN=true] [CARIS_ENV_FILE=F] backup-database.sh [full|incremental]
# Creates a database backup (caris-backup backup database; the repository first if there is none, said on stderr).
# With DRY_RUN=true nothing is created or backed up: the plan is printed. Exit codes: see caris-backup --help.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
usage() { sed -n '2,4s/^# //p' "$0"; }
if [ $# -gt 1 ]; then
  echo "error: one argument at most, full or incremental (got $#)" >&2
  usage >&2
  exit 2
fi
mode=${1:-full}
case "$mode" in
  full | incremental) ;;
  -h | --help) usage; exit 0 ;;
  *) echo "error: unknown backup type '$mode' (full or incremental)" >&2; usage >&2; exit 2 ;;
esac
bin=$(caris_bin)
repo=$(repo_location)

# Without a database there is nothing to back up: say so before anything is created (a real
# run used to create the repository first, then fail).
if [ -z "$(env_get POSTGRES_URL)" ]; then
  if dry_run; then
    echo "error: POSTGRES_URL is not set: a real run would fail" >&2
  else
    echo "error: POSTGRES_URL is not set: nothing was done" >&2
  fi
  echo "HINT: set POSTGRES_URL (postgresql://USER@HOST:5432/DB) in the environment or in $(env_file)" >&2
  exit 6
fi

if dry_run; then
  # What a real run would do. `backup database --dry-run` logs in to the database, finds
  # pg_dump, checks that every table can be read, and opens the repository (so a wrong key
  # shows here too); it backs up and creates nothing. Its exit is a real run's: 7 when only
  # the repository is missing, which a real run of this script creates. POSTGRES_URL is not
  # shown: it may hold a password.
  rc=0
  errf=$(mktemp)
  trap 'rm -f "$errf"' EXIT
  plan=$("$bin" "${CARIS_ENV_ARGS[@]}" --quiet backup database --dry-run "--$mode" 2>"$errf") || rc=$?
  err=$(cat "$errf")
  case $rc in
    0)
      printf '%s\n' "$plan" | grep -v '^dry run: nothing was backed up' || true
      echo "dry run: a real run would use the repository at $repo (it exists)"
      ;;
    7)
      if [[ $err != *"no repository at "* ]]; then # not found, but not the repository
        printf '%s\n' "$err" >&2
        echo "error: a real run would fail (above): nothing was done" >&2
        exit 7
      fi
      echo "dry run: the database can be backed up (login, pg_dump, every table readable)"
      echo "dry run: a real run would create a new repository at $repo (there is none: is BACKUP_DIR right?)"
      ;;
    *)
      printf '%s\n' "$err" >&2
      echo "error: a real run would fail (above): nothing was done" >&2
      exit "$rc"
      ;;
  esac
  if [ -n "${POSTGRES_URL:-}" ]; then src="the environment"; else src=$(env_file); fi
  article=a
  if [ "$mode" = incremental ]; then article=an; fi
  echo "dry run: a real run would make $article $mode backup of the database at POSTGRES_URL (from $src)"
  echo "dry run: nothing was created or backed up"
  exit 0
fi

# The seed's quick start runs this script first on a new BACKUP_DIR: create the repository
# there when it has none (only `init` creates one; the backup itself refuses a missing one),
# and say so: on a mistyped BACKUP_DIR that new, empty repository is not the one expected.
created=$("$bin" "${CARIS_ENV_ARGS[@]}" --json init --if-missing)
if [[ $created =~ \"created\":[[:space:]]*true ]]; then
  echo "backup-database.sh: created a new repository at $repo (there was none; if you expected one, check BACKUP_DIR)" >&2
  echo "keep BACKUP_ENCRYPTION_KEY somewhere safe outside this machine: without it no backup can be restored" >&2
fi
exec "$bin" "${CARIS_ENV_ARGS[@]}" backup database "--$mode"

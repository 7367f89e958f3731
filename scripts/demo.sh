#!/usr/bin/env bash
# The main job on local defaults: build, create the repository under BACKUP_DIR (default
# /var/backups/caris, with metadata/ and temp/, mode 0700), back up a demo file tree (or
# BACKUP_FILES_PATHS when set), list the backups and verify the new one.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
BIN=build/src/cli/caris-backup

# A key is required. For a first local run, make one and keep it in .env.local (mode 0600,
# ignored by git). In production set BACKUP_ENCRYPTION_KEY yourself and keep a copy offline.
if [ -z "${BACKUP_ENCRYPTION_KEY:-}" ] && ! grep -qs '^BACKUP_ENCRYPTION_KEY=' .env.local; then
  umask 077
  echo "BACKUP_ENCRYPTION_KEY=$(head -c 33 /dev/urandom | base64)" >> .env.local
  echo "generated a new BACKUP_ENCRYPTION_KEY in $(pwd)/.env.local: keep a copy somewhere safe"
fi

if [ -z "${BACKUP_FILES_PATHS:-}" ] && ! grep -qs '^BACKUP_FILES_PATHS=' .env.local; then
  demo=${TMPDIR:-/tmp}/caris-demo-files
  if [ ! -d "$demo" ]; then
    mkdir -p "$demo/patients/2024" "$demo/uploads"
    for i in $(seq 1 50); do
      printf 'patient %d\nsession notes: demo record %d\n' "$i" "$i" > "$demo/patients/2024/record-$i.txt"
    done
    head -c 2000000 /dev/urandom > "$demo/uploads/scan.bin"
    ln -sf ../uploads/scan.bin "$demo/patients/latest-scan"
  fi
  export BACKUP_FILES_PATHS=$demo
  echo "backing up the demo tree $demo (set BACKUP_FILES_PATHS to back up your own)"
fi

# Only `init` creates a repository (a mistyped BACKUP_DIR or --repo is an error, never a new
# empty repository); --if-missing leaves an existing one as it is.
"$BIN" init --if-missing
"$BIN" backup files
"$BIN" list
id=$("$BIN" --json list --type files | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
"$BIN" verify "$id"

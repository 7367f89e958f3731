#!/usr/bin/env bash
# The main job on local defaults: build, create the repository under BACKUP_DIR (default
# /var/backups/caris, with metadata/ and temp/, mode 0700), back up a demo file tree (or
# BACKUP_FILES_PATHS when set) and a database: the one at POSTGRES_URL when set, else a
# throwaway local PostgreSQL 15 cluster with a small demo schema (initdb as a non-root user,
# loopback only, stopped and removed at the end). Then list the backups, verify both new
# ones and test-restore the database backup.
#
# usage: scripts/demo.sh [--bin PATH] [--env-file FILE]
#   --bin PATH       use this binary (no install-deps.sh, no build)
#   --env-file FILE  the variables file (default .env.local in the source tree)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="" ENV_FILE=.env.local
while (($#)); do
  case $1 in
  --bin) BIN=${2:?--bin needs a path}; shift ;;
  --env-file) ENV_FILE=${2:?--env-file needs a file}; shift ;;
  -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
  *) echo "demo.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$BIN" ]; then
  ./scripts/install-deps.sh
  ./scripts/build.sh
  BIN=build/src/cli/caris-backup
fi
cb() { "$BIN" --env-file "$ENV_FILE" "$@"; }
# shellcheck source=scripts/backup/lib.sh
. scripts/backup/lib.sh
# is_set NAME: whether the binary sees NAME: set and not empty in the environment or in the env
# file, read as the binary reads it (export, indented, quoted, ...; env_file_get in lib.sh).
is_set() { [ -n "${!1:-}" ] || [ -n "$(env_file_get "$1" "$ENV_FILE")" ]; }

# A key is required. For a first local run, make one and keep it in .env.local (mode 0600,
# ignored by git). In production set BACKUP_ENCRYPTION_KEY yourself and keep a copy offline.
# env_val NAME: NAME as the binary sees it (the environment, else the env file).
env_val() { if [ -n "${!1:-}" ]; then printf '%s' "${!1}"; else env_file_get "$1" "$ENV_FILE"; fi; }
if ! is_set BACKUP_ENCRYPTION_KEY; then
  # A new key cannot open a repository that is already there: say so instead of keeping a
  # useless key in the env file (a fresh checkout beside the repository of an earlier demo).
  repo=$(env_val BACKUP_REPOSITORY)
  if [ -z "$repo" ]; then
    dir=$(env_val BACKUP_DIR)
    repo=${dir:-/var/backups/caris}/repository
  fi
  if [ -e "$repo/config" ] || [ -e "$repo/caris-repository" ]; then
    echo "error: BACKUP_ENCRYPTION_KEY is not set, and there is a repository at $repo: a new key cannot open it" >&2
    echo "HINT: set BACKUP_ENCRYPTION_KEY to the key it was made with (in the environment or $ENV_FILE), or point BACKUP_DIR elsewhere" >&2
    exit 6
  fi
  if [ -e "$ENV_FILE" ] && [ ! -f "$ENV_FILE" ]; then
    echo "error: $ENV_FILE is not a regular file: cannot keep a generated key in it" >&2
    echo "HINT: set BACKUP_ENCRYPTION_KEY in the environment, or give --env-file a file" >&2
    exit 2
  fi
  [ -e "$ENV_FILE" ] || (umask 077 && : >"$ENV_FILE")
  # 0600 before the key goes in: an existing file keeps its mode otherwise
  chmod 600 "$ENV_FILE"
  # a last line without its newline would take the key into its value
  if [ -n "$(tail -c 1 "$ENV_FILE")" ]; then echo >>"$ENV_FILE"; fi
  echo "BACKUP_ENCRYPTION_KEY=$(head -c 33 /dev/urandom | base64)" >>"$ENV_FILE"
  echo "generated a new BACKUP_ENCRYPTION_KEY in $(realpath "$ENV_FILE"): keep a copy somewhere safe"
fi
[ -e "$ENV_FILE" ] || (umask 077 && : >"$ENV_FILE")

if ! is_set BACKUP_FILES_PATHS; then
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

# The database: POSTGRES_URL when set, else a throwaway cluster (scripts/pg-test-server.sh, as
# the tests start one) on a free loopback port, with a small demo schema.
own_db=1
if ! is_set POSTGRES_URL; then
  own_db=0
  CARIS_PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # in /tmp, not TMPDIR: as root, the server's own user must reach its directory
  export CARIS_PG_PORT CARIS_PG_DIR=/tmp/caris-demo-pg-$CARIS_PG_PORT
  pg_env=$(mktemp)
  trap '[[ $BASHPID == "$$" ]] || exit; ./scripts/pg-test-server.sh stop >/dev/null 2>&1 || true; rm -f "$pg_env"' EXIT
  echo "starting a throwaway PostgreSQL on 127.0.0.1:$CARIS_PG_PORT ($CARIS_PG_DIR; set POSTGRES_URL to back up your own database)"
  ./scripts/pg-test-server.sh start > "$pg_env"
  # shellcheck disable=SC1090
  . "$pg_env"
  # over the server's unix socket (trusted): no password on any command line
  # shellcheck disable=SC2153 # CARIS_PG_* come from the server's env file
  "$CARIS_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$CARIS_PG_SOCKET" -p "$CARIS_PG_PORT" \
    -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" >/dev/null <<'SQL'
CREATE TABLE patients (id integer PRIMARY KEY, name text NOT NULL, born date NOT NULL);
CREATE TABLE sessions (id serial PRIMARY KEY, patient_id integer NOT NULL REFERENCES patients,
                       held_at timestamptz NOT NULL, notes text NOT NULL);
CREATE INDEX ON sessions (patient_id, held_at);
INSERT INTO patients SELECT i, 'demo patient ' || i, date '1960-01-01' + i * 97 FROM generate_series(1, 200) AS i;
INSERT INTO sessions (patient_id, held_at, notes)
  SELECT 1 + i % 200, timestamptz '2024-01-01 09:00+00' + i * interval '3 hours',
         'session ' || i || ': demo notes, no real data'
  FROM generate_series(1, 2000) AS i;
CREATE VIEW sessions_per_patient AS SELECT patient_id, count(*) AS sessions FROM sessions GROUP BY 1;
SQL
  echo "loaded a demo schema into $CARIS_PG_DB: patients (200 rows), sessions (2000 rows), a view"
fi

# Only `init` creates a repository (a mistyped BACKUP_DIR or --repo is an error, never a new
# empty repository); --if-missing leaves an existing one as it is.
cb init --if-missing
cb backup files
cb backup database
cb list
cb verify latest:files
cb verify latest:database
# a scratch database on the same server (the user needs CREATEDB), dropped afterwards
# its exit code is kept (4: the backup is damaged; see README.md, "Exit codes")
rc=0
cb test-restore latest:database || rc=$?
if ((rc != 0)); then
  ((own_db)) && echo "HINT: test-restore needs CREATEDB on the POSTGRES_URL server (or: caris-backup test-restore latest:database --scratch local)" >&2
  exit "$rc"
fi

cat <<TXT

Done: a file backup and a database backup, listed, verified, and the database backup restored
into a scratch database with every table's row count checked.
To back up your own data, install the tool (scripts/install.sh) and set in /etc/caris-backup/env
(or here in $ENV_FILE): BACKUP_FILES_PATHS=/your/dir:/another/dir and
POSTGRES_URL=postgresql://USER:PASSWORD@HOST:5432/DB, then run this demo again or follow
README.md, "Operator quick start".
TXT
((own_db)) || echo "The throwaway PostgreSQL server is stopped and removed as this script ends; its backup stays in the repository."

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

# CARIS_ENV_FILE: the env file to read instead of ./.env.local (an installed system's
# /etc/caris-backup/env): the scripts read it, and give it to caris-backup as --env-file.
# shellcheck disable=SC2034 # used by the scripts that source this file
CARIS_ENV_ARGS=()
if [ -n "${CARIS_ENV_FILE:-}" ]; then
  if [ ! -r "$CARIS_ENV_FILE" ]; then
    echo "error: CARIS_ENV_FILE=$CARIS_ENV_FILE cannot be read: nothing was done" >&2
    echo "HINT: name an env file this user may read (e.g. run with sudo for /etc/caris-backup/env)" >&2
    exit 6
  fi
  # shellcheck disable=SC2034
  CARIS_ENV_ARGS=(--env-file "$CARIS_ENV_FILE")
fi
env_file() { printf '%s' "${CARIS_ENV_FILE:-.env.local}"; }
# ./.env.local there but unreadable: said now (the scripts read it for POSTGRES_URL and the
# repository, and said "POSTGRES_URL is not set" of a file that sets it)
if [ -z "${CARIS_ENV_FILE:-}" ] && [ -e .env.local ] && [ ! -r .env.local ]; then
  echo "error: .env.local (in $PWD) cannot be read: nothing was done" >&2
  echo "HINT: run as a user who may read it (its owner; it should be mode 600), or name another with CARIS_ENV_FILE" >&2
  exit 6
fi

# dry_run: whether DRY_RUN asks for a dry run (true, 1, yes, on in any case) or not (unset,
# empty, false, 0, no, off). Any other value ends the script with exit 2 before anything is
# done: a misspelt DRY_RUN must never run the real, destructive operation.
dry_run() {
  local v=${DRY_RUN:-}
  case "${v,,}" in
    true | 1 | yes | on) return 0 ;;
    "" | false | 0 | no | off) return 1 ;;
  esac
  printf "error: DRY_RUN must be true or false, not '%s': nothing was done\n" "$v" >&2
  echo "HINT: DRY_RUN=true shows what would happen and changes nothing; unset it to run" >&2
  exit 2
}

# env_file_get NAME [FILE]: NAME's value in the env file (default: env_file), read as the
# binary reads it (export, blanks around '=', quotes with the \n \" \\ \$ \` escapes of
# "..." (the binary refuses a backslash before anything else), a comment at the start of the
# value or after a blank, CRLF; the last assignment wins); nothing when it is not set there.
env_file_get() {
  local name=$1 file=${2:-$(env_file)} line v out="" q w c i blank first=1
  [ -r "$file" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    ((first)) && line=${line#$'\xef\xbb\xbf'} # a UTF-8 byte order mark, as the binary
    first=0
    while [[ $line == *$'\r' ]]; do line=${line%$'\r'}; done
    line=${line#"${line%%[![:blank:]]*}"}
    [[ $line == export[[:blank:]]* ]] && line=${line#export} && line=${line#"${line%%[![:blank:]]*}"}
    [[ $line =~ ^${name}[[:blank:]]*=(.*)$ ]] || continue
    v=${BASH_REMATCH[1]}
    blank=0
    [[ $v == [[:blank:]]* ]] && blank=1
    v=${v#"${v%%[![:blank:]]*}"}
    q=${v:0:1}
    if [ "$q" = "'" ]; then
      v=${v:1}
      v=${v%%"'"*}
    elif [ "$q" = '"' ]; then
      w=""
      for ((i = 1; i < ${#v}; i++)); do
        c=${v:i:1}
        [ "$c" = '"' ] && break
        if [ "$c" = '\' ] && ((i + 1 < ${#v})); then
          i=$((i + 1))
          c=${v:i:1}
          [ "$c" = n ] && c=$'\n'
        fi
        w+=$c
      done
      v=$w
    elif ((blank)) && [[ $v == '#'* ]]; then
      v="" # KEY=   # note
    else
      v=${v%%[[:blank:]]#*}
      v=${v%"${v##*[![:blank:]]}"}
    fi
    out=$v
  done <"$file"
  printf '%s' "$out"
}

# env_get NAME: NAME as the binary sees it when run here without --env-file: the environment
# when it is set and not empty, else the env file (CARIS_ENV_FILE, else .env.local).
env_get() {
  local v=${!1:-}
  [ -n "$v" ] || v=$(env_file_get "$1")
  printf '%s' "$v"
}

# repo_location: where the binary looks for the repository (BACKUP_REPOSITORY, else
# BACKUP_DIR/repository, BACKUP_DIR by default /var/backups/caris), with the user info of a URL
# (user:secret@) replaced by xxxxx, as the binary shows it.
repo_location() {
  local r d
  r=$(env_get BACKUP_REPOSITORY)
  if [ -z "$r" ]; then
    d=$(env_get BACKUP_DIR)
    r=${d:-/var/backups/caris}/repository
  fi
  case $r in
    *://*@*) r=${r%%://*}://xxxxx@${r##*@} ;;
  esac
  printf '%s' "$r"
}

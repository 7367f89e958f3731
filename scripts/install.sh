#!/usr/bin/env bash
# Builds caris-backup and installs it with `meson install` (as root on Debian 12):
#   /usr/local/bin/caris-backup, the man page caris-backup(1), bash and zsh completion,
#   the systemd units in /usr/local/lib/systemd/system (caris-backup.service: the daemon;
#   caris-backup-run@.service + caris-backup-{daily,weekly,monthly}.timer: the timer
#   alternative), /etc/caris-backup/env.example, the docs in /usr/local/share/doc/caris-backup.
# Then, only when /etc/caris-backup/env does not exist, creates it from the example (mode
# 0600) with a new random BACKUP_ENCRYPTION_KEY; an existing env is never touched. Nothing
# is enabled or started: see README.md, "Operator quick start".
#
# usage: scripts/install.sh [--no-deps] [--destdir DIR]
#   --no-deps      do not run scripts/install-deps.sh
#   --destdir DIR  stage the installation under DIR (packaging); no env is created
set -euo pipefail
cd "$(dirname "$0")/.."
deps=1 destdir=""
while (($#)); do
    case $1 in
    --no-deps) deps=0 ;;
    --destdir) destdir=${2:?--destdir needs a directory}; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
((deps)) && ./scripts/install-deps.sh
./scripts/build.sh
if [[ $(meson introspect build --buildoptions | python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))') != /usr/local ]]; then
    meson configure build -Dprefix=/usr/local >/dev/null
    ninja -C build --quiet
fi
if [[ -n $destdir ]]; then
    meson install -C build --no-rebuild --quiet --destdir "$destdir"
    echo "staged the installation in $destdir"
    exit 0
fi
meson install -C build --no-rebuild --quiet
echo "installed /usr/local/bin/caris-backup ($(/usr/local/bin/caris-backup version))"

env=/etc/caris-backup/env
if [[ ! -e $env ]]; then
    (
        umask 077
        key=$(head -c 33 /dev/urandom | base64)
        # builtins only: the key is never in a process's arguments
        while IFS= read -r line; do
            if [[ $line == BACKUP_ENCRYPTION_KEY=* ]]; then
                printf 'BACKUP_ENCRYPTION_KEY=%s\n' "$key"
            else
                printf '%s\n' "$line"
            fi
        done </etc/caris-backup/env.example >"$env.tmp"
        mv "$env.tmp" "$env"
    )
    echo "created $env (mode 0600) with a new random BACKUP_ENCRYPTION_KEY:"
    echo "  keep a copy of that key off this machine (without it nothing can be restored),"
    echo "  then set BACKUP_FILES_PATHS and POSTGRES_URL there"
else
    echo "kept the existing $env"
fi
command -v systemctl >/dev/null && [[ -d /run/systemd/system ]] && systemctl daemon-reload
echo "next: README.md, \"Operator quick start\" (man caris-backup)"

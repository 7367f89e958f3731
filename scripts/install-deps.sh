#!/usr/bin/env bash
# Installs what caris-backup needs to build and test on Debian 12 (run as root).
# Idempotent: packages already present are not fetched again.
set -euo pipefail

PKGS=(
  # build
  gcc meson ninja-build pkg-config
  # libraries (see ../shared/ARCHITECTURE.md, "Dependencies")
  libssl-dev libsodium-dev libzstd-dev libjansson-dev libpq-dev libcurl4-openssl-dev
  # `mount`: libfuse 3 and fusermount3 (mounts by users other than root)
  libfuse3-dev fuse3
  # database backups: pg_dump, pg_dumpall, pg_restore matching the server
  postgresql-client-15
  # time zones of the schedules and of retention (/usr/share/zoneinfo)
  tzdata
  # tests (a real PostgreSQL 15 server, started per test as a non-root user)
  libcmocka-dev attr python3 util-linux procps postgresql-15
  # notification tests: a real SMTP server (aiosmtpd, run with /usr/bin/python3), and
  # openssl to make its test CA and certificate
  python3-aiosmtpd openssl
)
if [ "${1:-}" = "--bench" ]; then
  PKGS+=(restic borgbackup time openssl)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing packages: ${missing[*]}" >&2
  echo "HINT: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Installs what caris-backup needs to build and test on Debian 12 (run as root).
# Idempotent: packages already present are not fetched again.
set -euo pipefail

PKGS=(
  # build
  gcc meson ninja-build pkg-config
  # libraries (see ../shared/ARCHITECTURE.md, "Dependencies")
  libssl-dev libsodium-dev libzstd-dev libjansson-dev libpq-dev
  # HTTP client: S3 repositories, notifications (SMTP, Slack)
  libcurl4-openssl-dev
  # the daemon's HTTP API
  libmicrohttpd-dev
  # `mount`: libfuse 3 and fusermount3 (mounts by users other than root)
  libfuse3-dev fuse3
  # database backups: pg_dump, pg_dumpall, pg_restore matching the server
  postgresql-client-15
  # time zones of the schedules and of retention (/usr/share/zoneinfo)
  tzdata
  # tests (a real PostgreSQL 15 server, started per test as a non-root user)
  libcmocka-dev attr python3 util-linux procps postgresql-15
  # test_direct_io: fincore (pages of a file in the page cache)
  util-linux-extra
  # notification tests: a real SMTP server (aiosmtpd, run with /usr/bin/python3), and
  # openssl to make its test CA and certificate
  python3-aiosmtpd openssl
  # the dashboard's browser test (headless, driven through the DevTools protocol); curl for
  # the API tests
  chromium curl
  # the install test: man renders the generated page; zsh loads the zsh completion
  man-db zsh
  # tests/fuzz: the parsers' fuzz harnesses (libFuzzer), replayed on their saved inputs
  clang libclang-rt-14-dev
)
if [ "${1:-}" = "--bench" ]; then
  PKGS+=(restic borgbackup time openssl pgbackrest)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# s3rver, the S3-compatible server the tests start on loopback (tests/integration/s3lib.sh),
# from npm. Debian's nodejs and npm unless a node with npm is there already (a nodejs from
# elsewhere ships its own npm, which Debian's npm package would conflict with).
install_s3rver() {
  command -v s3rver >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: s3rver is missing" >&2
    echo "HINT: run as root (or: sudo npm install -g s3rver@3.7.1)" >&2
    exit 1
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing: nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  echo "installing: s3rver (npm)"
  npm install -g --no-audit --no-fund s3rver@3.7.1 >/dev/null
}
if [ ${#missing[@]} -eq 0 ]; then
  install_s3rver
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
install_s3rver

#!/usr/bin/env bash
# Builds caris-backup into build/ (release-ish: -O2 -g). With --asan, into build-asan/ with
# AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--asan" ]; then
  dir=build-asan
  opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug)
else
  dir=build
  opts=()
fi
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" "${opts[@]}" >/dev/null
fi
ninja -C "$dir" >/dev/null
echo "built $dir/src/cli/caris-backup"

#!/usr/bin/env bash
# Builds caris-backup into build/ (release-ish: -O2 -g). With --asan, into build-asan/ with
# AddressSanitizer + UndefinedBehaviorSanitizer; with --tsan, into build-tsan/ with
# ThreadSanitizer (not run by CI: `scripts/test.sh --only tsan`).
#
# The ASan build links the sanitizer runtimes statically and its executables are not
# position-independent (libcaris.a keeps meson's -fPIC; the link resolves it): the
# test suite runs the binary thousands of times, and on this 2-core guest every page fault costs
# ~20 us. A PIE build relocates UBSan's 4.4 MiB of check descriptors at every start (a private
# copy of each page), and LeakSanitizer scans the dynamic libubsan's 6 MiB .bss at every exit;
# together that was 130 ms per run against 73 ms now. The checks themselves are the same.
# It is optimized at -O1 (AddressSanitizer's own advice for usable speed), with frame pointers
# kept for its stack traces: the tests' CPU is the suite's limit (the CPUs are busy all through
# it), and at -O0 our own loops (chunking, hashing, packing) took 9-10 % more of the CPU of
# the data-heavy tests (test_prune 46 -> 42 CPU-s, test_phys_incr 57 -> 52, test_db_kill
# 40 -> 36; run.sh's CARIS_TEST_CPU=1).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--asan" ]; then
  dir=build-asan
  # shellcheck disable=SC2054 # the commas are in one meson option's value
  opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug -Doptimization=1
    "-Dc_args=-fno-pie -fno-omit-frame-pointer" "-Dc_link_args=-static-libasan -static-libubsan -no-pie")
elif [ "${1:-}" = "--tsan" ]; then
  dir=build-tsan
  opts=(-Db_sanitize=thread -Db_lundef=false -Dbuildtype=debugoptimized)
else
  dir=build
  opts=()
fi
stamp=$dir/.caris-build-options # the options this tree was last configured with
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" "${opts[@]}" >/dev/null
  echo "${opts[*]}" >"$stamp"
elif [ "$(cat "$stamp" 2>/dev/null)" != "${opts[*]}" ]; then
  # an older tree gets today's options (only then: meson configure regenerates every time)
  meson configure "$dir" "${opts[@]}" >/dev/null
  echo "${opts[*]}" >"$stamp"
fi
# --quiet: no progress lines, but a failing compiler's messages are shown (>/dev/null hid them)
ninja -C "$dir" --quiet
echo "built $dir/src/cli/caris-backup"

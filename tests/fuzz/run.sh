#!/bin/sh
# Builds the libFuzzer harnesses of tests/fuzz/ (clang, ASan + UBSan) and runs each one.
#
#   tests/fuzz/run.sh [target...]     (default: every target below)
#
# FUZZ_BUILD    where binaries, corpora and artifacts go (default /tmp/caris-fuzz)
# FUZZ_SECONDS  seconds per fuzzer (default 60; 0 builds only)
# FUZZ_REPLAY   1: no fuzzing; each harness runs once on every file of seeds/<t>/ and on
#               crashes/<t>-* (the inputs that once failed): deterministic, a regression test
# CC            the compiler (default clang)
# FUZZ_CFLAGS   more compiler flags, e.g. -fno-sanitize=nonnull-attribute to look past a known
#               finding
#
# One fuzzer at a time, one process each, -seed=1. A corpus lives in $FUZZ_BUILD/corpus/<t>
# (seeded from tests/fuzz/seeds/<t>/); crashes go to $FUZZ_BUILD/artifacts/. Exits non-zero
# when a harness does not build or a fuzzer finds a crash, a leak, undefined behaviour or a
# timeout.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD:-/tmp/caris-fuzz}
seconds=${FUZZ_SECONDS:-60}
cc=${CC:-clang}

cflags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
cflags="$cflags -std=c11 -D_GNU_SOURCE -I$root/include -I$root/src ${FUZZ_CFLAGS:-}"

core="src/core/core.c src/core/err.c"

# <target>: "<project sources>|<pkg-config packages>|<extra libFuzzer options>"
spec() {
    case $1 in
    cron) echo "src/sched/cron.c src/sched/tz.c $core|libcrypto|" ;;
    tz_posix) echo "src/sched/tz.c $core|libcrypto|" ;;
    tzif) echo "src/sched/tz.c src/sched/cron.c $core|libcrypto|-max_len=8192" ;;
    s3_xml)
        echo "src/core/config.c src/crypto/secmem.c src/crypto/crypto.c src/crypto/argon2.c src/storage/sigv4.c" \
            "$core tests/fuzz/stubs.c|libcrypto libsodium libcurl jansson|-max_len=8192"
        ;;
    s3)
        echo "src/core/config.c src/crypto/secmem.c src/crypto/crypto.c src/crypto/argon2.c src/storage/sigv4.c" \
            "$core tests/fuzz/stubs.c|libcrypto libsodium jansson|-max_len=8192"
        ;;
    dumpcount) echo "src/pg/dumpcount.c $core|libcrypto|-max_len=8192" ;;
    pagedelta) echo "src/repo/pagedelta.c $core|libcrypto|-max_len=20000" ;;
    pgpage) echo "src/pg/pgpage.c||-max_len=8300" ;;
    walhistory)
        echo "src/services/wal_window.c src/crypto/crypto.c src/crypto/argon2.c $core tests/fuzz/stubs.c" \
            "|jansson libcrypto libsodium|"
        ;;
    config) echo "src/core/config.c src/crypto/secmem.c $core|libcrypto|" ;;
    manifest) echo "src/services/manifest.c src/files/fswalk.c $core|jansson libcrypto|" ;;
    misc)
        echo "src/services/retention.c src/sched/tz.c src/core/config.c src/crypto/secmem.c" \
            "$core tests/fuzz/stubs.c|jansson libcrypto|"
        ;;
    *) return 1 ;;
    esac
}

all="cron tz_posix tzif s3_xml s3 dumpcount pagedelta pgpage walhistory config manifest misc"
if [ $# -gt 0 ]; then
    targets=$*
else
    targets=$all
fi

mkdir -p "$build/bin" "$build/corpus" "$build/artifacts" "$build/logs"
# Each project source is compiled once per run (several harnesses share core.c, config.c,
# secmem.c...: about half the compiles), into a directory made afresh, so that no object of
# older sources is ever linked. An object is named by its source and the packages' flags.
objs="$build/obj"
rm -rf "$objs"
mkdir -p "$objs"
failed=""
replayed=0

for t in $targets; do
    if ! s=$(spec "$t"); then
        echo "run.sh: unknown target '$t' (known: $all)" >&2
        exit 2
    fi
    srcs=$(echo "$s" | cut -d'|' -f1)
    pkgs=$(echo "$s" | cut -d'|' -f2)
    opts=$(echo "$s" | cut -d'|' -f3)
    pc_cflags=""
    pc_libs=""
    if [ -n "$pkgs" ]; then
        # shellcheck disable=SC2086 # a list of package names
        pc_cflags=$(pkg-config --cflags $pkgs)
        # shellcheck disable=SC2086
        pc_libs=$(pkg-config --libs $pkgs)
    fi
    echo "== build $t"
    files="$here/fuzz_$t.c"
    built=1
    for f in $srcs; do
        o="$objs/$(echo "$f" | tr '/.' '__')-$(echo "$pc_cflags" | cksum | cut -d' ' -f1).o"
        # shellcheck disable=SC2086 # a flag list
        if [ ! -f "$o" ] && ! $cc $cflags $pc_cflags -c -o "$o" "$root/$f"; then
            built=0
            break
        fi
        files="$files $o"
    done
    # shellcheck disable=SC2086 # flag and file lists
    if [ "$built" = 0 ] || ! $cc $cflags $pc_cflags -o "$build/bin/fuzz_$t" $files $pc_libs -lpthread; then
        failed="$failed $t(build)"
        continue
    fi
    if [ "${FUZZ_REPLAY:-0}" = 1 ]; then
        inputs=""
        for f in "$here/seeds/$t"/* "$here/crashes/$t"-*; do
            [ -f "$f" ] && inputs="$inputs $f"
        done
        [ -n "$inputs" ] || continue
        # shellcheck disable=SC2086 # a list of files, without spaces (ours)
        if ! UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            "$build/bin/fuzz_$t" -timeout=10 $inputs >"$build/logs/$t.replay.log" 2>&1; then
            echo "run.sh: fuzz_$t fails on a saved input: see $build/logs/$t.replay.log" >&2
            grep -E "^SUMMARY|ERROR:|runtime error|Running: " "$build/logs/$t.replay.log" | tail -n 5 >&2 || true
            failed="$failed $t"
        else
            echo "   replayed $(echo "$inputs" | wc -w) inputs"
            replayed=$((replayed + 1))
        fi
        continue
    fi
    [ "$seconds" -gt 0 ] || continue

    corpus="$build/corpus/$t"
    mkdir -p "$corpus"
    if [ -d "$here/seeds/$t" ]; then
        cp -n "$here/seeds/$t"/* "$corpus/" 2>/dev/null || true
    fi
    echo "== run $t for $seconds s"
    # shellcheck disable=SC2086 # extra options
    if ! UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$build/bin/fuzz_$t" -seed=1 -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$t-" $opts "$corpus" \
        >"$build/logs/$t.log" 2>&1; then
        echo "run.sh: fuzz_$t found a problem: see $build/logs/$t.log" >&2
        grep -E "^SUMMARY|ERROR:|runtime error|Test unit written" "$build/logs/$t.log" >&2 || true
        failed="$failed $t"
    else
        grep -E "^stat::number_of_executed_units|^#[0-9]+.*DONE" "$build/logs/$t.log" || true
    fi
done

if [ "${FUZZ_REPLAY:-0}" = 1 ]; then # counted per harness, as scripts/test.sh sums them
    echo "$replayed passed, $(echo "$failed" | wc -w) failed"
fi
if [ -n "$failed" ]; then
    echo "run.sh: failed:$failed" >&2
    exit 1
fi
echo "run.sh: all fuzzers ran clean"

#!/usr/bin/env bash
# libpq, libcurl, libmicrohttpd and libfuse3 are loaded when first used (caris/lazylib.h), not
# at every start: the binary does not list them as needed; with a broken copy of each first in
# LD_LIBRARY_PATH, commands that do not use them work, and each command that needs one fails
# with a clear configuration error (exit 6) naming the library and its package, having
# written nothing.
source "$(dirname "$0")/lib.sh"

needed=$(objdump -p "$CARIS_BIN" | awk '$1 == "NEEDED" {print $2}' | tr '\n' ' ')
note "NEEDED: $needed"
for l in libpq libcurl libmicrohttpd libfuse3; do
    assert_not_contains "$needed" "$l.so" "$l is not loaded at start (not NEEDED)"
done
# the file names it loads, as built in (e.g. libpq.so.5)
sonames=()
for l in libpq libcurl libmicrohttpd libfuse3; do
    s=$(strings -a "$CARIS_BIN" | grep -m 1 -E "^$l\.so\.[0-9]+$")
    assert_match "^$l\\.so\\.[0-9]+\$" "$s" "the binary names the file of $l ($s)"
    sonames+=("$s")
done

# each loads where it is used: a database backup against a server that is not there gets as
# far as the connection (exit 10), not a load error
bad=$TEST_TMP/badlibs
mkdir -p "$bad"
for s in "${sonames[@]}"; do printf 'not a shared library\n' >"$bad/$s"; done
init_repo
mkdir -p "$TEST_TMP/src"
printf 'a record\n' >"$TEST_TMP/src/a.txt"
port=$(free_port)
POSTGRES_URL="postgresql://nobody@127.0.0.1:$port/none" run cb backup database
assert_rc 10 "with the real libpq, a backup of a database that is not there fails to connect"

# with the broken copies: what needs none of them works
B=(env LD_LIBRARY_PATH="$bad" "$CARIS_BIN")
run "${B[@]}" --json backup files "$TEST_TMP/src"
assert_rc 0 "backup files loads none of them"
id=$(json_get "$OUT_FILE" '["id"]')
run "${B[@]}" verify "$id"
assert_rc 0 "verify loads none of them"
run "${B[@]}" --json list
assert_rc 0 "list loads none of them"
fp() { (cd "$REPO" && find . -type f ! -path './locks/*' -printf '%P %s\n' | sort | md5sum); }
before=$(fp)
run "${B[@]}" --json list
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d)')" "list: the backup"

# what needs one: exit 6, the library and its package named, nothing written
expect_load_error() { # SONAME PACKAGE WHAT
    assert_rc 6 "$3: a configuration error (exit 6)"
    assert_contains "$ERR" "cannot load $1 (Debian package $2)" "$3: the library and its package are named"
    assert_contains "$ERR" "install-deps.sh" "$3: the hint says how to install it"
}
POSTGRES_URL="postgresql://nobody@127.0.0.1:$port/none" run "${B[@]}" backup database
expect_load_error "${sonames[0]}" libpq5 "backup database"
run env CARIS_RESTORE_TARGET_URL="postgresql://nobody@127.0.0.1:$port/none" "${B[@]}" restore database "$id"
expect_load_error "${sonames[0]}" libpq5 "restore database"
run "${B[@]}" restore database "$id" --target-url "postgresql://nobody@127.0.0.1:$port/none"
expect_load_error "${sonames[0]}" libpq5 "restore database --target-url"
BACKUP_SLACK_WEBHOOK_URL=https://hooks.example.org/services/T0/B0/x run "${B[@]}" notify test
expect_load_error "${sonames[1]}" libcurl4 "notify test with a Slack webhook configured"
run "${B[@]}" --repo "s3:http://127.0.0.1:$port/bucket/repo" list
expect_load_error "${sonames[1]}" libcurl4 "an S3 repository"
BACKUP_API_LISTEN=127.0.0.1:0 run timeout 60 "${B[@]}" daemon
expect_load_error "${sonames[2]}" libmicrohttpd12 "the daemon with its HTTP API"
mkdir -p "$TEST_TMP/mnt"
run timeout 60 "${B[@]}" mount "$TEST_TMP/mnt"
if [[ $RC == 6 ]]; then
    expect_load_error "${sonames[3]}" libfuse3-3 "mount"
else
    assert_not_contains "$ERR" "fatal" "mount without libfuse3 fails without aborting ($RC)"
fi
assert_false "mount left nothing mounted" mountpoint -q "$TEST_TMP/mnt"
assert_eq "$before" "$(fp)" "the failed commands wrote nothing in the repository"

test_done

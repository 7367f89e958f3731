#!/usr/bin/env bash
# A lock whose state cannot be read (its HEAD failing on S3, after the retries) is not taken
# for gone: a backup that met a held prune's lock so passed over it, ran beside the prune and
# deduplicated against data the prune's marking had found unused; the prune then deleted it,
# exit 0, and the new backup could not be restored (found by a review). Now the backup fails,
# naming the lock, and the prune leaves a sound repository. The prune is held after its
# marking (CARIS_TEST_PRUNE_HOLD); a fault proxy answers 500 to every HEAD of its lock.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"

s3_start bkt
direct=s3:$S3_ENDPOINT/bkt/repo
assert_exit 0 cb --quiet --repo "$direct" init

mkdir -p "$TEST_TMP/one" "$TEST_TMP/two"
seeded_bytes 2000000 lock-unknown-one >"$TEST_TMP/one/a.bin"
seeded_bytes 2000000 lock-unknown-two >"$TEST_TMP/two/b.bin"
run cb --repo "$direct" --json backup files --full "$TEST_TMP/one"
assert_rc 0 "backup of one"
id1=$(json_get "$OUT_FILE" '["id"]')
assert_exit 0 cb --quiet --repo "$direct" backup files --full "$TEST_TMP/two"
assert_exit 0 cb --quiet --repo "$direct" forget "$id1"

hook_hold_start CARIS_TEST_PRUNE_HOLD "prune is held after its marking" "$CARIS_BIN" --repo "$direct" prune
prune=$BG_PID
lock=$(find "$S3_DIR/bkt/repo/locks" -name '*._S3rver_object' ! -name 'claim-*' -printf '%f\n' | sed 's/\._S3rver_object$//')
assert_match '^[0-9a-f]{32}$' "$lock" "the held prune has one lock"

port=$(_s3_free_port)
stats=$TEST_TMP/proxy.json
bg_start python3 "$LIB_DIR/faultproxy.py" --port "$port" --upstream "${S3_ENDPOINT#http://}" \
    --stats "$stats" --always 500 --match "locks/$lock" --method HEAD
wait_until 20 _s3_ready "$port" || fail "the fault proxy did not start" "$(_tail "$BG_ERR")"
proxy=s3:http://127.0.0.1:$port/bkt/repo

# one again, beside the held prune: its data is in the packs the marking found unused
run env BACKUP_S3_RETRY_SECONDS=1 "$CARIS_BIN" --repo "$proxy" backup files --full "$TEST_TMP/one"
assert_ne 0 "$RC" "a backup that cannot tell whether the prune's lock is held does not run"
assert_contains "$ERR" "cannot tell whether the lock locks/$lock is held" "the error names the lock"
assert_contains "$ERR" "HTTP 500" "... and what the server answered"
assert_cmp "$(json_get "$stats" '["500"]')" -ge 1 "the proxy failed the HEADs of the lock"

rm -f "$HOOK_HOLD"
wait "$prune"
assert_eq 0 "$?" "the prune completes"
assert_exit 0 cb --repo "$direct" check --read-data
assert_exit 0 cb --quiet --repo "$direct" verify --all

test_done

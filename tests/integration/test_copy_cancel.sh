#!/usr/bin/env bash
# A copy cancelled (SIGTERM) while it verifies the backup in the destination says that the
# verification was cancelled, not that the backup "does not verify in the destination" (which
# a cancelled verification never judged: found by a review, the error of a copy stopped by a
# service manager read as damage in the off-site copy). The next copy verifies it. The copy is
# held in place by a lease on the destination's packs (packhold.py): it is stopped while it
# waits to read them, every time.
source "$(dirname "$0")/lib.sh"

DST=$TEST_TMP/dst
CARIS_COPY_TO_KEY=$(head -c 33 /dev/urandom | base64)
export CARIS_COPY_TO_KEY

init_repo
src=$TEST_TMP/src
mkdir -p "$src"
seeded_bytes 2000000 copy-cancel >"$src/a.bin"
backup_json "$TEST_TMP/b1.json" --full "$src"
assert_rc 0 "backup"
id=$BACKUP_ID
assert_exit 0 cb --quiet --repo "$DST" init --copy-chunker-from "$REPO"
assert_exit 0 cb copy "$id" --to "$DST"
# as after a copy that died before its verification: the backup is there, never verified
rm -rf "$DST/records/verify"

mapfile -t packs < <(find "$DST/data" -type f ! -name '.*')
hold_start "${packs[@]}"
# shellcheck disable=SC2317 # called through wait_until
held() { grep -q '^held' "$HOLD_OUT"; }
# shellcheck disable=SC2317
opened() { grep -q '^opened' "$HOLD_OUT"; }
wait_until 30 held || fail "packhold did not take its leases" "$(cat "$HOLD_OUT")"
bg_start cb --json copy "$id" --to "$DST"
if wait_until 60 opened; then
    pass "the copy's verification waits to read the destination's pack"
else
    fail "the copy did not read the destination's pack" "$(_tail "$BG_ERR")"
fi
kill -TERM "$BG_PID"
hold_release
wait "$BG_PID"
rc=$?
assert_ne 0 "$rc" "the cancelled copy fails"
msg=$(json_eval "$BG_OUT" 'd["error"]["message"]')
assert_contains "$msg" "its verification there was cancelled" "the error says the verification was cancelled"
assert_not_contains "$msg" "does not verify" "... not that the backup does not verify"

run cb --json copy "$id" --to "$DST"
assert_rc 0 "the next copy"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["verified"]')" "... verifies the backup"

test_done

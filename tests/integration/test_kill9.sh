#!/usr/bin/env bash
# A backup killed with SIGKILL in the middle leaves the repository consistent: no
# snapshot of it, `check` passes, and the next backup reuses the packs it had finished
# instead of storing their data again.
source "$(dirname "$0")/lib.sh"

# An earlier, small backup: the repository exists and the list has one entry.
mkdir -p "$TEST_TMP/small"
printf 'small\n' >"$TEST_TMP/small/file"
init_repo
backup_json "$TEST_TMP/small.json" "$TEST_TMP/small"
assert_rc 0 "first (small) backup"
first=$BACKUP_ID

# 90 MiB of incompressible data in 9 files; the backup is held in its first read of the last
# one (tests/integration/read_faults.c) until it is killed: never done before the kill.
src=$TEST_TMP/big
mkdir -p "$src" "$TEST_TMP/hold"
for i in 1 2 3 4 5 6 7 8 9; do
    seeded_bytes 10M "kill9/part$i" >"$src/part$i.bin"
done
size=$((90 * 1024 * 1024))
shim=$TEST_TMP/read_faults.so
cc -shared -fPIC -O2 -o "$shim" "$LIB_DIR/read_faults.c" -ldl || fail "cannot build the fault injector"

list_packs >"$TEST_TMP/packs-before"
packs_before=$(wc -l <"$TEST_TMP/packs-before")
# Three complete packs (of 16 MiB: of the 80 MiB read before the held file, two packs being
# filled at once hold at most 32) before
# the kill: the assertions below are then the same in every run.
# shellcheck disable=SC2317 # called through wait_until / assert_true
have_three_new_packs() { (($(list_packs | wc -l) >= packs_before + 3)); }

bg_start env LD_PRELOAD="$shim" READ_FAULT=hold READ_FAULT_FILE=part9.bin READ_FAULT_DIR="$TEST_TMP/hold" \
    "$CARIS_BIN" --json backup files --full "$src"
pid=$BG_PID
if wait_until 120 have_three_new_packs; then
    pass "three packs of the running backup appeared"
else
    fail "three packs did not appear within 120 s" "stderr of the backup:" "$(_tail "$BG_ERR")"
fi
alive=0
kill -0 "$pid" 2>/dev/null && alive=1
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
status=$?
if ((alive)); then
    assert_eq 137 "$status" "the backup died of SIGKILL"
else
    fail "the backup ended before it was killed (exit $status)" "$(_tail "$BG_ERR")"
fi

# What the killed backup had completed.
complete_bytes=0 complete_packs=0
while read -r p; do
    [[ -n $p ]] || continue
    complete_bytes=$((complete_bytes + $(stat -c %s "$p")))
    complete_packs=$((complete_packs + 1))
done < <(comm -13 "$TEST_TMP/packs-before" <(list_packs))
note "killed with $complete_packs complete pack(s), $complete_bytes bytes"
assert_cmp "$complete_packs" -ge 3 "at least three complete packs were left behind"

run cb --json list
assert_rc 0 "list after the kill"
assert_eq "$first" "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" \
    "the killed backup is not listed"

run cb --json check
assert_rc 0 "check after the kill (warnings allowed)"
assert_eq true "$(json_get "$OUT_FILE" '["ok"]')" "check --json says ok"

# The next backup reuses the completed packs.
backup_json "$TEST_TMP/again.json" --full "$src"
assert_rc 0 "backup after the kill"
stored=$(json_get "$TEST_TMP/again.json" '["stats"]["bytesStored"]')
note "data $size bytes, stored again $stored bytes"
# Without reuse `stored` would be about `size` (plus a little overhead); each completed pack
# must save its bytes. Allow 10% of the completed packs and 1% of the data as slack, plus the
# size padding of the packs written again (at most 1/32 at these sizes: REPOSITORY-FORMAT.md).
limit=$((size - complete_bytes + complete_bytes / 10 + size / 100 + size / 32))
assert_cmp "$stored" -lt "$limit" "bytes_stored shows the completed packs were reused"
# With three packs or more reused (over a fifth of the data), well under 90% even with the
# padding.
assert_cmp "$stored" -lt $((size * 9 / 10)) "bytes_stored < 90% of the data"

assert_exit 0 cb verify "$BACKUP_ID"
assert_exit 0 cb check
# One file back, byte for byte.
mkdir "$TEST_TMP/r"
assert_exit 0 cb restore files "$BACKUP_ID" --target "$TEST_TMP/r" --include "$src/part7.bin"
assert_true "restored part7.bin equals the source" cmp "$src/part7.bin" "$TEST_TMP/r$src/part7.bin"
assert_false "--include restored nothing else" test -e "$TEST_TMP/r$src/part8.bin"

rm -rf "$src" # 90 MiB: not worth keeping even when the test failed

test_done

#!/usr/bin/env bash
# A pack missing when prune opened the repository, and put back while it marks (from a copy,
# as the recovery guide says: the copy that mends the backups needing it), is left as it is.
# Prune had loaded none of its blobs, so it counted none used, found the pack on disk when it
# sized the repository, and deleted it: the only copy of data a live backup needs (found by a
# review). The prune is held before its marking (CARIS_TEST_PRUNE_HOLD_MARK), not timed.
source "$(dirname "$0")/lib.sh"

init_repo
mkdir -p "$TEST_TMP/src"
seeded_bytes 3000000 pack-back >"$TEST_TMP/src/a.bin"
backup_json "$TEST_TMP/b1.json" --full "$TEST_TMP/src"
assert_rc 0 "a backup"
id=$BACKUP_ID
# the largest pack: the file's data (the other holds the backup's metadata)
# shellcheck disable=SC2046 # one argument per pack
pack=$(ls -S $(list_packs) | head -n 1)
assert_cmp "$(stat -c %s "$pack")" -gt 1000000 "the file's data is in one pack"
mv "$pack" "$TEST_TMP/pack.saved"

hook_hold_start CARIS_TEST_PRUNE_HOLD_MARK "prune is held before its marking, the pack missing" "$CARIS_BIN" prune
prune=$BG_PID
mv "$TEST_TMP/pack.saved" "$pack"
rm -f "$HOOK_HOLD"
wait "$prune"
rc=$?
assert_true "the pack put back is still there after the prune" test -f "$pack"
assert_contains "$(cat "$BG_ERR")" "missing when prune started, is there now: left as it is" \
    "prune says it left the pack alone"
assert_ne 0 "$rc" "prune warned (a backup needed data that was missing when it started): not 0"
run cb check --read-data
assert_rc 0 "check --read-data: the repository is whole again" "$(_last_ctx)"
run cb --quiet restore files "$id" --target "$TEST_TMP/r"
assert_rc 0 "the backup restores"
assert_true "identical to the source" cmp "$TEST_TMP/src/a.bin" "$TEST_TMP/r$TEST_TMP/src/a.bin"

test_done

#!/usr/bin/env bash
# A pack missing when prune opened the repository, and put back while it marks (from a copy,
# as the recovery guide says: the copy that mends the backups needing it), stops the prune
# before it deletes anything; the next prune reads it with the others.
# Prune had loaded none of its blobs, so it counted none used, found the pack on disk when it
# sized the repository, and deleted it: the only copy of data a live backup needs (found by a
# review). The prune is held before its marking (CARIS_TEST_PRUNE_HOLD_MARK), not timed.
source "$(dirname "$0")/lib.sh"

init_repo
mkdir -p "$TEST_TMP/src" "$TEST_TMP/other"
# a backup forgotten: the prune has packs to delete, so it writes new index files (and deletes
# the old ones, which listed the pack's blobs)
seeded_bytes 2000000 pack-back-other >"$TEST_TMP/other/b.bin"
backup_json "$TEST_TMP/b0.json" --full "$TEST_TMP/other"
assert_rc 0 "a backup to forget"
assert_exit 0 cb --quiet forget "$BACKUP_ID"
seeded_bytes 3000000 pack-back >"$TEST_TMP/src/a.bin"
backup_json "$TEST_TMP/b1.json" --full "$TEST_TMP/src"
assert_rc 0 "a backup"
id=$BACKUP_ID
# the newest large pack: the file's data (the others hold metadata, or the forgotten data)
pack=$(find "$REPO/data" -mindepth 2 -type f -size +1000k -newer "$TEST_TMP/b0.json" | head -n 1)
assert_ne "" "$pack" "the file's data is in one pack"
mv "$pack" "$TEST_TMP/pack.saved"

hook_hold_start CARIS_TEST_PRUNE_HOLD_MARK "prune is held before its marking, the pack missing" "$CARIS_BIN" prune
prune=$BG_PID
mv "$TEST_TMP/pack.saved" "$pack"
rm -f "$HOOK_HOLD"
wait "$prune"
assert_eq 1 "$?" "prune stops (exit 1) when a pack missing at its start is back"
assert_true "the pack put back is still there" test -f "$pack"
assert_contains "$(cat "$BG_ERR")" "prune stopped (no pack was deleted): pack $(basename "$pack"), missing when it started, is there now" \
    "prune says why it stopped"
assert_contains "$(cat "$BG_ERR")" "run prune again" "... and what to do"
run cb prune
assert_rc 0 "the next prune runs through"
assert_true "the pack is still there after it" test -f "$pack"
run cb --json prune --dry-run
assert_eq 0 "$(json_get "$OUT_FILE" '["packs"]["deleted"]')" "the forgotten backup's data went: nothing left to delete"
run cb check --read-data
assert_rc 0 "check --read-data: the repository is whole again" "$(_last_ctx)"
run cb --quiet restore files "$id" --target "$TEST_TMP/r"
assert_rc 0 "the backup restores"
assert_true "identical to the source" cmp "$TEST_TMP/src/a.bin" "$TEST_TMP/r$TEST_TMP/src/a.bin"

test_done

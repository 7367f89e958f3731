#!/usr/bin/env bash
# A prune whose exclusive lock is removed while it runs (`unlock --force`) stops before it
# acts on its marking: a backup made meanwhile deduplicated against data the marking found
# unused, in packs about to be deleted (found by a review: prune went on, deleted them, exit
# 0, and the new backup could not be restored). The prune is held after its marking
# (CARIS_TEST_PRUNE_HOLD) while the lock is removed and the backup runs.
source "$(dirname "$0")/lib.sh"

init_repo
mkdir -p "$TEST_TMP/one" "$TEST_TMP/two"
seeded_bytes 2000000 prune-lock-one >"$TEST_TMP/one/a.bin"
seeded_bytes 2000000 prune-lock-two >"$TEST_TMP/two/b.bin"
backup_json "$TEST_TMP/b1.json" --full "$TEST_TMP/one"
assert_rc 0 "backup of one"
id1=$BACKUP_ID
backup_json "$TEST_TMP/b2.json" --full "$TEST_TMP/two"
assert_rc 0 "backup of two"
assert_exit 0 cb --quiet forget "$id1"

hook_hold_start CARIS_TEST_PRUNE_HOLD "prune is held after its marking" "$CARIS_BIN" prune
prune=$BG_PID
run cb unlock --force
assert_rc 0 "unlock --force removes the prune's lock"
assert_contains "$OUT$ERR" "prune" "and names it"
# one again: its data is in the packs the marking found unused
backup_json "$TEST_TMP/b3.json" --full "$TEST_TMP/one"
assert_rc 0 "a backup of one while the prune is held"
id3=$BACKUP_ID
assert_cmp "$(json_get "$TEST_TMP/b3.json" '["stats"]["bytesAdded"]')" -lt 1000000 \
    "it stored nothing new (its data was there)"
rm -f "$HOOK_HOLD"
wait "$prune"
assert_eq 9 "$?" "the prune stops with exit 9: its lock was removed"
assert_contains "$(cat "$BG_ERR")" "prune stopped (nothing was deleted)" "it says nothing was deleted"
assert_exit 0 cb check --read-data
rm -rf "$TEST_TMP/restored"
mkdir "$TEST_TMP/restored"
assert_exit 0 cb restore files "$id3" --target "$TEST_TMP/restored"
tree_compare "$TEST_TMP/one" "$TEST_TMP/restored$TEST_TMP/one"
# the next prune, with its lock, goes through and keeps the new backup whole
assert_exit 0 cb prune
assert_exit 0 cb check --read-data
assert_exit 0 cb verify "$id3"

test_done

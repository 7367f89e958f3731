#!/usr/bin/env bash
# A pack found truncated at open (an index places blobs past its listed size): those copies are
# not deduplicated against (a warning says so), so the first backup after the damage stores
# them again, before any `check` ran. A truncated pack found by a plain `check` (index entries past the pack's end, known from its
# size alone) is recorded as damaged blobs (records/bad-blob), as `check --read-data` records
# it: backups then stop deduplicating against the lost copies and store them again, which
# makes the older backups that need them whole again. Before, every later backup of the same
# content reported success while referencing the truncated pack (found by a review).
source "$(dirname "$0")/lib.sh"

init_repo
mkdir -p "$TEST_TMP/a" "$TEST_TMP/b"
seeded_bytes 600000 truncated/scan >"$TEST_TMP/a/scan.bin"
backup_json "$TEST_TMP/a.json" "$TEST_TMP/a"
assert_rc 0 "backup of a"
id_a=$BACKUP_ID

pack=$(list_packs | xargs -d '\n' ls -S | head -n 1)
truncate -s "$(($(stat -c %s "$pack") / 2))" "$pack"

assert_exit 4 cb check
assert_contains "$OUT$ERR" "points past the end of the pack" "check names the truncated pack"
assert_true "check recorded the damaged blobs" test -d "$REPO/records/bad-blob"

# the same content under another name: not deduplicated against the lost copy
cp "$TEST_TMP/a/scan.bin" "$TEST_TMP/b/scan-copy.bin"
backup_json "$TEST_TMP/b.json" "$TEST_TMP/b"
assert_rc 0 "backup of b"
id_b=$BACKUP_ID
assert_exit 0 cb verify "$id_b"
assert_exit 0 cb verify "$id_a"
assert_contains "$OUT" "valid" "the older backup reads the copy stored again"
mkdir "$TEST_TMP/r"
assert_exit 0 cb restore files "$id_b" --target "$TEST_TMP/r"
assert_eq "$(sha256sum <"$TEST_TMP/a/scan.bin")" \
    "$(sha256sum <"$TEST_TMP/r/$TEST_TMP/b/scan-copy.bin" 2>/dev/null)" "restored copy is intact"

# --- the same damage, and a backup before any check ------------------------------------
export BACKUP_DIR=$TEST_TMP/second
REPO=$BACKUP_DIR/repository
init_repo
backup_json "$TEST_TMP/c.json" "$TEST_TMP/a"
assert_rc 0 "backup of a (second repository)"
id_c=$BACKUP_ID
pack=$(list_packs | xargs -d '\n' ls -S | head -n 1)
truncate -s "$(($(stat -c %s "$pack") / 2))" "$pack"
backup_json "$TEST_TMP/d.json" "$TEST_TMP/b"
assert_rc 0 "backup of b, no check in between"
id_d=$BACKUP_ID
assert_contains "$ERR" "shorter than index/" "the backup warns that the pack is truncated"
assert_exit 0 cb verify "$id_d"
assert_exit 0 cb verify "$id_c"
# every blob has a sound copy again (the backups are whole), but the truncated pack is damage
assert_exit 4 cb check
assert_contains "$OUT$ERR" "${pack#"$REPO"/}: pack is shorter than the index says" \
    "check names the truncated pack"
assert_exit 0 cb prune
assert_false "prune removed the truncated pack" test -e "$pack"
assert_exit 0 cb check --read-data
assert_exit 0 cb verify --all

test_done

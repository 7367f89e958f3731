#!/usr/bin/env bash
# A repository replaced by another one made with the same BACKUP_ENCRYPTION_KEY (a second
# server's, a test repository) opens with that key: its id differs, so this host's local copy
# of the state record (named by id) was never compared, and list and check reported a sound
# repository while every backup of this host was gone (found by a review). Now the local copy
# of the repository that was at the same path is found, and its loss reported.
source "$(dirname "$0")/lib.sh"

init_repo
mkdir -p "$TEST_TMP/src"
printf 'patient record\n' >"$TEST_TMP/src/f"
backup_json "$TEST_TMP/a.json" "$TEST_TMP/src"
assert_rc 0 "backup into our repository"
assert_exit 0 cb check

# another repository, same key, elsewhere
other=$TEST_TMP/other-dir
mkdir -p "$other"
BACKUP_DIR=$other run cb --quiet init
assert_rc 0 "init of another repository with the same key"
BACKUP_DIR=$other run cb backup files "$TEST_TMP/src"
assert_rc 0 "backup into the other repository"

mv "$REPO" "$TEST_TMP/ours"
cp -a "$other/repository" "$REPO"
run cb list
assert_rc 0 "list of the substituted repository"
assert_contains "$ERR" "this host used another repository at" "list warns"
assert_exit 4 cb check
assert_contains "$OUT$ERR" "not the repository this host used at this path before" \
    "check reports the substitution"

# ours back: nothing reported
rm -rf "$REPO"
mv "$TEST_TMP/ours" "$REPO"
assert_exit 0 cb check
run cb list
assert_not_contains "$ERR" "another repository" "no warning for our own repository"

# substituted again, accepted by removing the old local copy, as the message says
mv "$REPO" "$TEST_TMP/ours"
cp -a "$other/repository" "$REPO"
assert_exit 4 cb check
rm -f "$BACKUP_DIR"/metadata/state-*.json
assert_exit 0 cb check
rm -rf "$REPO"
mv "$TEST_TMP/ours" "$REPO"
run cb backup files "$TEST_TMP/src"
assert_rc 0 "a backup into ours again"

# created anew on purpose with `init`: the record of the one before is set aside
rm -rf "$REPO"
init_repo
assert_exit 0 cb check
assert_true "the old local copy is kept aside" \
    compgen -G "$BACKUP_DIR/metadata/state-*.json.replaced"

test_done

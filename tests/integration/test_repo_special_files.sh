#!/usr/bin/env bash
# The repository's directory is not trusted: a FIFO (or a device, or a link to one) put under
# an object's name must be refused as damage, never opened for reading. Opening a FIFO for
# reading blocks until a writer comes: verify and restore used to hang for ever there, and
# SIGTERM did not end them (found by a review).
source "$(dirname "$0")/lib.sh"

init_repo
mkdir -p "$TEST_TMP/src"
seeded_bytes 300000 special/scan >"$TEST_TMP/src/scan.bin"
printf 'note\n' >"$TEST_TMP/src/note.txt"
backup_json "$TEST_TMP/b.json" "$TEST_TMP/src"
assert_rc 0 "backup"
id=$BACKUP_ID

# Every command below runs under a hard deadline: a hang is a failure, not a stuck test.
tcb() { timeout -s KILL 60 "$CARIS_BIN" "$@"; }

packs=$(list_packs)
for pack in $packs; do
    mv "$pack" "$pack.saved"
    mkfifo "$pack"
done

assert_exit 4 tcb verify "$id"
assert_contains "$OUT$ERR" "is not a regular file" "verify: a FIFO in a pack's place is damage"
assert_exit 4 tcb restore files "$id" --target "$TEST_TMP/restored"
assert_contains "$OUT$ERR" "is not a regular file" "restore: a FIFO in a pack's place is damage"
assert_false "restore wrote nothing of the file" test -e "$TEST_TMP/restored/scan.bin"
assert_exit 4 tcb check --read-data

for pack in $packs; do
    rm "$pack"
    mv "$pack.saved" "$pack"
done
assert_exit 0 tcb verify "$id"

# the config: every command reads it when it opens the repository
mv "$REPO/config" "$REPO/config.saved"
mkfifo "$REPO/config"
run tcb list
assert_false "list with a FIFO for config fails (not exit 0, not killed)" \
    test "$RC" = 0 -o "$RC" = 137
assert_contains "$OUT$ERR" "is not a regular file" "list: says the config is not a file"
rm "$REPO/config"
mv "$REPO/config.saved" "$REPO/config"
assert_exit 0 tcb list

test_done

#!/usr/bin/env bash
# The destination's copy of a backup damaged (its snapshot file altered there): copying that
# backup again fails, and says it is the destination's copy that is damaged and how to copy it
# again. The error named a snapshot file and the backup alone, with the hint of a damaged source
# ("restore from another backup"): an operator read that the local backup was damaged (found by
# a review). Forgetting the damaged snapshot in the destination, as the hint says, and copying
# again restores a whole copy.
source "$(dirname "$0")/lib.sh"

DST=$TEST_TMP/dst
CARIS_COPY_TO_KEY=$(head -c 33 /dev/urandom | base64)
export CARIS_COPY_TO_KEY
dcb() { BACKUP_ENCRYPTION_KEY=$CARIS_COPY_TO_KEY cb --repo "$DST" "$@"; }

init_repo
src=$TEST_TMP/src
mkdir -p "$src"
seq 1 20000 >"$src/numbers.txt"
backup_json "$TEST_TMP/b1.json" --full "$src"
assert_rc 0 "backup"
id=$BACKUP_ID
assert_exit 0 cb --quiet --repo "$DST" init --copy-chunker-from "$REPO"
assert_exit 0 cb copy "$id" --to "$DST"

snap=$(find "$DST/snapshots" -type f ! -name '.*')
assert_eq 1 "$(printf '%s\n' "$snap" | grep -c .)" "one snapshot in the destination"
flip_byte "$snap"
run cb --json copy "$id" --to "$DST"
assert_rc 4 "copy of a backup whose copy in the destination is damaged: exit 4"
msg=$(json_eval "$OUT_FILE" 'd["error"]["message"]')
hint=$(json_eval "$OUT_FILE" 'd["error"]["hint"]')
assert_contains "$msg" "destination $DST: " "the error says it is the destination's"
assert_contains "$msg" "snapshots/$(basename "$snap")" "... and names the damaged snapshot file"
assert_contains "$hint" "the destination's copy of backup $id is damaged" "the hint says whose copy is damaged"
assert_contains "$hint" "forget snapshots/NAME" "... and how to copy it again"
assert_not_contains "$hint" "restore from another backup" "... not the hint of a damaged source"
assert_exit 0 cb verify "$id"

# as the hint says: forget it there, copy again
assert_exit 0 dcb forget "snapshots/$(basename "$snap")"
run cb --json copy "$id" --to "$DST"
assert_rc 0 "copy again after the damaged snapshot was forgotten"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["verified"]')" "the new copy verifies"
target=$TEST_TMP/restore
mkdir "$target"
assert_exit 0 dcb restore files "$id" --target "$target"
assert_true "restored from the destination: the same bytes" cmp "$src/numbers.txt" "$target$src/numbers.txt"

test_done

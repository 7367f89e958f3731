#!/usr/bin/env bash
# Full backup of the case tree, restore into an empty directory, compare everything.
# The socket and the character device are skipped with a warning: exit 3, and the
# warnings are in the --json summary.
source "$(dirname "$0")/lib.sh"

src=$TEST_TMP/src
make_tree "$src" || fail "make_tree failed"

init_repo
backup_json "$TEST_TMP/full.json" --full "$src"
assert_rc 3 "backup of a tree with a socket and a device completes with warnings"
assert_match '^file_full_' "$BACKUP_ID" "full backup id"
assert_eq "warnings" "$(json_get "$TEST_TMP/full.json" '["status"]')" "status is warnings"
assert_eq 2 "$(json_get "$TEST_TMP/full.json" '["warningsCount"]')" "two warnings"
assert_eq true "$(json_eval "$TEST_TMP/full.json" 'any(w["path"] == "unix.sock" for w in d["warnings"])')" \
    "--json warnings name the socket"
assert_eq true "$(json_eval "$TEST_TMP/full.json" 'any(w["path"] == "null-like" for w in d["warnings"])')" \
    "--json warnings name the character device"
assert_contains "$ERR" "unix.sock" "stderr warns about the socket"
assert_contains "$ERR" "null-like" "stderr warns about the character device"
# 20 names of regular files, 2 of which are one hard-linked inode
nfiles=$(json_get "$TEST_TMP/full.json" '["stats"]["files"]')
assert_true "stats.files counts the regular files ($nfiles)" test "$nfiles" -ge 19 -a "$nfiles" -le 20

id=$BACKUP_ID
target=$TEST_TMP/restore
mkdir "$target"
assert_exit 0 cb restore files "$id" --target "$target"
tree_compare "$src" "$target$src" --skip-special

# The restored files are the backed-up bytes: verify re-reads them all from the repository.
assert_exit 0 cb verify "$id"
assert_contains "$OUT" "valid" "verify reports the backup valid"

# The same through the JSON interface.
run cb --json verify "$id"
assert_rc 0 "verify --json"
assert_eq true "$(json_get "$OUT_FILE" '[0]["valid"]')" "verify --json says valid"

# A second restore into another empty directory gives the same tree (nothing depends on
# state left by the first one).
target2=$TEST_TMP/restore2
mkdir "$target2"
assert_exit 0 cb restore files "$id" --target "$target2"
tree_compare "$src" "$target2$src" --skip-special

test_done

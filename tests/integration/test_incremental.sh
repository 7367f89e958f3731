#!/usr/bin/env bash
# Full backup, change the tree, incremental backup: the incremental reads only what
# changed, names the full as its parent, and restores to exactly the new tree, while the
# full still restores to exactly the old one. A file changed less than 2 s before the
# previous backup started is read again.
source "$(dirname "$0")/lib.sh"

id_re='^file_(full|incremental)_[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}-[0-9]{2}-[0-9]{2}(-[0-9]+)?$'

src=$TEST_TMP/src
make_tree "$src" --no-special || fail "make_tree failed"

init_repo
backup_json "$TEST_TMP/full.json" --full "$src"
assert_rc 0 "full backup"
full=$BACKUP_ID
assert_match "$id_re" "$full" "full id has the documented form"
assert_match '^file_full_' "$full" "full id starts with file_full_"
assert_eq full "$(json_get "$TEST_TMP/full.json" '["mode"]')" "full backup's mode"
tree_snapshot "$src" "$TEST_TMP/old-tree.json"

# The changes.
printf 'hello again\n' >>"$src/hello.txt"                 # modified (size changes)
printf 'a new file\n' >"$src/docs/new-file.txt"           # added
rm "$src/docs/reports/records.csv"                        # deleted
touch "$src/owned-by-1234"                                # touched, content unchanged
# modified without changing size, its mtime put back: only ctime tells
python3 - "$src/name with space" <<'EOF'
import os, sys
p = sys.argv[1]
st = os.stat(p)
with open(p, "r+b") as f:
    f.write(b"SPACE\n")
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
EOF

backup_json "$TEST_TMP/incr.json" --incremental "$src"
assert_rc 0 "incremental backup"
incr=$BACKUP_ID
assert_match "$id_re" "$incr" "incremental id has the documented form"
assert_match '^file_incremental_' "$incr" "incremental id starts with file_incremental_"
assert_ne "$full" "$incr" "the two backups have distinct ids"
assert_eq "$full" "$(json_get "$TEST_TMP/incr.json" '["parent"]')" "incremental's parent is the full backup"
unchanged=$(json_get "$TEST_TMP/incr.json" '["stats"]["filesUnchanged"]')
nfiles=$(json_get "$TEST_TMP/incr.json" '["stats"]["files"]')
read_bytes=$(json_get "$TEST_TMP/incr.json" '["stats"]["bytesRead"]')
total=$(json_get "$TEST_TMP/incr.json" '["stats"]["bytesTotal"]')
assert_cmp "$unchanged" -gt 0 "files_unchanged > 0"
# hello.txt, owned-by-1234, 'name with space' changed; new-file.txt is new
assert_cmp "$unchanged" -le $((nfiles - 4)) "the four changed or new files are not counted unchanged"
assert_cmp "$read_bytes" -lt 65536 "bytes_read is small (only the changed files are read)"
assert_cmp "$read_bytes" -ge $((6 + 11 + 6 + 25)) "bytes_read covers the changed files"
assert_cmp "$total" -gt 1000000 "bytes_total still counts the whole tree"

# Restoring each backup gives its own tree.
mkdir "$TEST_TMP/r-incr" "$TEST_TMP/r-full"
assert_exit 0 cb restore files "$incr" --target "$TEST_TMP/r-incr"
tree_compare "$src" "$TEST_TMP/r-incr$src"
assert_exit 0 cb restore files "$full" --target "$TEST_TMP/r-full"
tree_compare "@$TEST_TMP/old-tree.json" "$TEST_TMP/r-full$src"

# Nothing changed since: a second incremental reads nothing and has the first as parent.
backup_json "$TEST_TMP/incr2.json" "$src"
assert_rc 0 "second incremental backup (the default mode)"
assert_eq "$incr" "$(json_get "$TEST_TMP/incr2.json" '["parent"]')" "second incremental's parent is the first"
assert_eq 0 "$(json_get "$TEST_TMP/incr2.json" '["stats"]["bytesRead"]')" "unchanged tree: nothing read"
assert_eq "$(json_get "$TEST_TMP/incr2.json" '["stats"]["files"]')" \
    "$(json_get "$TEST_TMP/incr2.json" '["stats"]["filesUnchanged"]')" "unchanged tree: every file unchanged"
assert_eq 0 "$(json_get "$TEST_TMP/incr2.json" '["stats"]["bytesAdded"]')" "unchanged tree: nothing added"

run cb --json list
assert_rc 0 "list --json"
assert_eq "$full $incr $BACKUP_ID" "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" \
    "list shows the three backups, oldest first"
for id in "$full" "$incr" "$BACKUP_ID"; do
    assert_exit 0 cb verify "$id"
done

# An incremental backup with nothing to build on (new paths) reads everything: it is a full
# backup and is labelled so.
mkdir -p "$TEST_TMP/other"
echo "a new tree" > "$TEST_TMP/other/f"
run cb --json backup files --incremental "$TEST_TMP/other"
assert_rc 0 "first incremental backup of new paths"
assert_eq full "$(json_eval "$OUT_FILE" 'd["mode"]')" "with no earlier backup, the mode is full"
assert_match '^file_full_' "$(json_eval "$OUT_FILE" 'd["id"]')" "and so is the id"
assert_eq null "$(json_eval "$OUT_FILE" 'd.get("parent")')" "and it has no parent"

# Files changed less than 2 s before the previous backup started (the real window: lib.sh's
# knob unset) are read again by the next backup, not taken as unchanged: a change right
# after that backup read them may have left the same size and timestamps (timestamps advance
# in clock ticks, or whole seconds). These were made just now, so both backups below start
# within 2 s of their changes, or later; either way none can be reused by the second.
fresh=$TEST_TMP/fresh
mkdir -p "$fresh"
for n in 1 2 3; do seeded_bytes "$((5000 + n))" "racy$n" >"$fresh/f$n"; done
run env -u CARIS_TEST_RACY_WINDOW_S "$CARIS_BIN" --json backup files --full "$fresh"
assert_rc 0 "full backup of files changed just now"
run env -u CARIS_TEST_RACY_WINDOW_S "$CARIS_BIN" --json backup files "$fresh"
assert_rc 0 "an incremental right after it"
racy_unchanged=$(json_eval "$OUT_FILE" 'd["stats"]["filesUnchanged"]')
racy_read=$(json_eval "$OUT_FILE" 'd["stats"]["bytesRead"]')
assert_eq 0 "$racy_unchanged" "files changed within 2 s before the previous backup: none taken as unchanged"
assert_eq 15006 "$racy_read" "they are read again (3 files, 15,006 bytes)"
assert_contains "$ERR" "changed less than 2 s before the previous backup started" "the backup says why it read them"
# with the tests' window (files counted old), the same backup reuses them all
run "$CARIS_BIN" --json backup files "$fresh"
assert_eq 3 "$(json_eval "$OUT_FILE" 'd["stats"]["filesUnchanged"]')" "the window moved back: all 3 taken as unchanged"

# Entries that wait behind a file being read are kept as compact JSON text and read back when
# complete (CARIS_TEST_COMPACT_AFTER=0: every read file's entry, not only when 256 wait): the
# manifest comes out byte for byte as without it. A full backup without compaction, then an
# incremental that reads every file again (every file in the racy window, no file table) with
# it: the same entries text, so the parent's manifest is reused, and the restore is exact.
compact=$TEST_TMP/compact
make_tree "$compact" --no-special || fail "make_tree failed"
for n in $(seq 1 300); do printf 'small file %s\n' "$n" >"$compact/docs/s$n"; done
run env CARIS_TEST_COMPACT_AFTER=1000000000 "$CARIS_BIN" --json backup files --full "$compact"
assert_rc 0 "full backup, entries never compacted"
rm -rf "$BACKUP_DIR/metadata/cache"
run env CARIS_TEST_COMPACT_AFTER=0 CARIS_TEST_RACY_WINDOW_S=2000000000 "$CARIS_BIN" --json backup files "$compact"
assert_rc 0 "incremental reading every file, every entry compacted while its file is read"
compact_id=$(json_eval "$OUT_FILE" 'd["id"]')
assert_eq 0 "$(json_eval "$OUT_FILE" 'd["stats"]["filesUnchanged"]')" "every file was read again"
assert_eq true "$(json_eval "$OUT_FILE" 'd["stats"]["reused"]["manifest"]')" \
    "the entries text is the full backup's byte for byte (its manifest reused)"
mkdir "$TEST_TMP/r-compact"
assert_exit 0 cb restore files "$compact_id" --target "$TEST_TMP/r-compact"
tree_compare "$compact" "$TEST_TMP/r-compact$compact"

test_done

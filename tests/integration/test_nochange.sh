#!/usr/bin/env bash
# A backup in which nothing changed stores the parent's manifest reference again (the entries
# text would be byte for byte the same) and keeps the file table cache file as it is; any
# change, even of one file's metadata only, is noticed and stored; a backup made that way is
# complete on its own: it restores byte-exact after its parent is forgotten and pruned.
source "$(dirname "$0")/lib.sh"

src=$TEST_TMP/src
make_tree "$src" --no-special || fail "make_tree failed"
init_repo

table() { find "$BACKUP_DIR/metadata/cache" -name 'files-*.tbl' -type f 2>/dev/null; }
# the table file's identity and last write: changes when it is rewritten (rename of a new file)
table_stamp() { python3 -c 'import os,sys; s=os.stat(sys.argv[1]); print(s.st_ino, s.st_mtime_ns)' "$(table)"; }
reused() { json_eval "$1" '"%s %s" % (d["stats"]["reused"]["manifest"], d["stats"]["reused"]["fileTable"])'; }

backup_json "$TEST_TMP/full.json" --full "$src"
assert_rc 0 "full backup"
full=$BACKUP_ID
assert_eq "False False" "$(reused "$TEST_TMP/full.json")" "full: nothing reused"

# Nothing changed: the manifest reference is the parent's, the table file is not rewritten.
stamp=$(table_stamp)
backup_json "$TEST_TMP/same1.json" --incremental "$src"
assert_rc 0 "no-change backup"
same1=$BACKUP_ID
assert_eq "True True" "$(reused "$TEST_TMP/same1.json")" "no change: manifest and file table reused"
assert_eq 0 "$(json_get "$TEST_TMP/same1.json" '["stats"]["bytesRead"]')" "no change: nothing read"
assert_eq 0 "$(json_get "$TEST_TMP/same1.json" '["stats"]["chunksNew"]')" "no change: nothing stored"
assert_eq "$stamp" "$(table_stamp)" "no change: the file table cache file is kept as it is"
assert_not_contains "$ERR" "cache not used" "no change: the table was used"
# the two snapshots list the same entries (both readable on their own)
run cb --json ls "$full" --recursive --long
json_eval "$OUT_FILE" 'd["entries"]' >"$TEST_TMP/full.ls"
run cb --json ls "$same1" --recursive --long
json_eval "$OUT_FILE" 'd["entries"]' >"$TEST_TMP/same1.ls"
assert_true "no change: the same entries" cmp -s "$TEST_TMP/full.ls" "$TEST_TMP/same1.ls"
# and the kept table serves the next one as well
backup_json "$TEST_TMP/same2.json" --incremental "$src"
assert_eq "True True" "$(reused "$TEST_TMP/same2.json")" "no change again: reused again"
assert_not_contains "$ERR" "cache not used" "no change again: the kept table was used"

# One file's metadata only, one change at a time: each is noticed, stored and restored.
# change NAME COMMAND...: apply, back up, check, then a no-change backup reuses again.
change() {
    local name=$1
    shift
    "$@" || fail "$name: cannot apply the change"
    backup_json "$TEST_TMP/$name.json" --incremental "$src"
    assert_rc 0 "$name: backup"
    local id=$BACKUP_ID
    assert_eq "False False" "$(reused "$TEST_TMP/$name.json")" "$name: noticed (manifest and table written anew)"
    assert_not_contains "$ERR" "cache not used" "$name: the table was used"
    rm -rf "$TEST_TMP/r-$name"
    mkdir "$TEST_TMP/r-$name"
    assert_exit 0 cb restore files "$id" --target "$TEST_TMP/r-$name"
    tree_compare "$src" "$TEST_TMP/r-$name$src"
    rm -rf "$TEST_TMP/r-$name"
    backup_json "$TEST_TMP/$name-again.json" --incremental "$src"
    assert_eq "True True" "$(reused "$TEST_TMP/$name-again.json")" "$name: the next no-change backup reuses again"
}
change mtime touch -m -d '2021-06-07 08:09:10.111222333' "$src/docs/numbers.txt"
change mode chmod 0604 "$src/hello.txt"
change xattr setfattr -n user.x -v changed "$src/xattr-file"
change dir-mtime touch -m -d '2022-01-01 00:00:00.5' "$src/empty-dir"
# content rewritten with size and mtime put back: only the ctime tells
change content python3 - "$src/docs/reports/records.csv" <<'PY'
import os, sys
p = sys.argv[1]
st = os.stat(p)
with open(p, "r+b") as f:
    f.write(b"P")
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
PY

# A reused manifest needs nothing of its parent: the parent forgotten and everything only it
# used pruned, the no-change backup restores byte-exact and checks clean.
printf 'the last change\n' >>"$src/hello.txt"
backup_json "$TEST_TMP/parent.json" --incremental "$src"
assert_rc 0 "parent backup"
parent=$BACKUP_ID
backup_json "$TEST_TMP/child.json" --incremental "$src"
assert_rc 0 "no-change backup of the parent"
child=$BACKUP_ID
assert_eq "True True" "$(reused "$TEST_TMP/child.json")" "child: manifest reused"
assert_eq "$parent" "$(json_get "$TEST_TMP/child.json" '["parent"]')" "child: built on the parent"
assert_exit 0 cb forget --keep-last 1 --prune --max-unused 0
run cb --json list
assert_eq "[\"$child\"]" "$(json_eval "$OUT_FILE" '[b["id"] for b in d]')" "only the child is left"
assert_exit 0 cb check --read-data
assert_exit 0 cb verify "$child"
mkdir "$TEST_TMP/r-child"
assert_exit 0 cb restore files "$child" --target "$TEST_TMP/r-child"
tree_compare "$src" "$TEST_TMP/r-child$src"
# the cache gone, the next backup reads the child's manifest from the repository and, nothing
# having changed, reuses it
rm -rf "$BACKUP_DIR/metadata/cache"
backup_json "$TEST_TMP/nocache.json" --incremental "$src"
assert_rc 0 "no-change backup without the cache"
assert_eq "True False" "$(reused "$TEST_TMP/nocache.json")" "without the cache: manifest reused, table written"
assert_eq 1 "$(table | wc -l)" "the table is written again"

# The parent lookup reads only the snapshots it has not seen before (their summaries are kept
# in an authenticated local cache); a tampered cache is ignored; a parent whose snapshot file
# was damaged after its summary was cached is passed over as without the cache.
lookup() { json_eval "$1" '"%d %d" % (d["stats"]["reused"]["snapshotsRead"], d["stats"]["reused"]["snapshotsCached"])'; }
sumcache=$(find "$BACKUP_DIR/metadata/cache" -name summaries -type f)
assert_ne "" "$sumcache" "the summaries cache is there"
backup_json "$TEST_TMP/l1.json" --incremental "$src"
assert_rc 0 "lookup: backup"

assert_eq "1 1" "$(lookup "$TEST_TMP/l1.json")" "lookup: only the snapshot new since the last backup is read"
backup_json "$TEST_TMP/l2.json" --incremental "$src"
assert_eq "1 2" "$(lookup "$TEST_TMP/l2.json")" "lookup: again only the new one"
flip_byte "$sumcache"
backup_json "$TEST_TMP/l3.json" --incremental "$src"
assert_rc 0 "lookup: backup with a tampered cache"
assert_eq "4 0" "$(lookup "$TEST_TMP/l3.json")" "lookup: a tampered cache is ignored (every snapshot read)"
l3=$BACKUP_ID
# l4: the parent to be damaged; then a backup of other paths caches its summary
ls "$REPO/snapshots" | sort >"$TEST_TMP/snaps-before"
backup_json "$TEST_TMP/l4.json" --incremental "$src"
l4_file=$(ls "$REPO/snapshots" | sort | comm -13 "$TEST_TMP/snaps-before" -)
mkdir "$TEST_TMP/other"
printf 'other\n' >"$TEST_TMP/other/f"
backup_json "$TEST_TMP/other.json" --full "$TEST_TMP/other"
assert_rc 0 "lookup: backup of other paths"
flip_byte "$REPO/snapshots/$l4_file"
backup_json "$TEST_TMP/l5.json" --incremental "$src"
assert_rc 0 "lookup: backup after its cached parent's file was damaged"
assert_eq "$l3" "$(json_get "$TEST_TMP/l5.json" '["parent"]')" "lookup: the damaged snapshot is passed over"
assert_eq 0 "$(json_get "$TEST_TMP/l5.json" '["stats"]["reused"]["snapshotsCached"]')" "lookup: chosen among the snapshots read again"

# --- the last entry removed, nothing else changed: the new entries text is the parent's cut
# short (the parent directory's mtime set back, so its entry is the same), which is neither
# reused nor taken from the table whole, and must be stored as the shorter text --------------
short=$TEST_TMP/short
mkdir -p "$short/a" "$short/z"
for i in 1 2 3; do
    printf 'a%s\n' "$i" >"$short/a/f$i"
    printf 'z%s\n' "$i" >"$short/z/f$i"
done
backup_json "$TEST_TMP/short1.json" "$short"
assert_rc 0 "short: a first backup"
zmtime=$(stat -c %y "$short/z")
rm "$short/z/f3"
touch -m -d "$zmtime" "$short/z"
backup_json "$TEST_TMP/short2.json" --incremental "$short"
assert_rc 0 "short: the backup without the last file"
assert_eq "False False" "$(reused "$TEST_TMP/short2.json")" "short: neither the manifest nor the table is reused"
assert_exit 0 cb verify "$BACKUP_ID"
mkdir "$TEST_TMP/short-restore"
assert_exit 0 cb restore files "$BACKUP_ID" --target "$TEST_TMP/short-restore"
tree_compare "$short" "$TEST_TMP/short-restore$short"

test_done

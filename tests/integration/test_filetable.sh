#!/usr/bin/env bash
# The file table cache (BACKUP_DIR/metadata/cache/<repo id>/files-*.tbl): a backup that
# uses it records exactly what a backup without it records, and a missing, stale or tampered
# table is ignored (the previous manifest is read instead), never trusted.
#
# Two repositories back up the same tree step by step: A keeps its cache, B has its cache
# removed before every backup. After every step both must agree (stats, listing), A's
# backups must verify, and a restore of A must equal the tree.
source "$(dirname "$0")/lib.sh"

src=$TEST_TMP/src
make_tree "$src" --no-special || fail "make_tree failed"
A=$BACKUP_DIR
B=$TEST_TMP/nocache

init_repo
BACKUP_DIR=$B init_repo

table() { find "$A/metadata/cache" -name 'files-*.tbl' -type f 2>/dev/null; }

# both MODE STEP: back up with A (cache kept) and B (cache removed), compare.
both() {
    local mode=$1 step=$2
    backup_json "$TEST_TMP/a-$step.json" "--$mode" "$src"
    assert_rc 0 "$step: backup with the cache"
    A_ID=$BACKUP_ID
    A_ERR=$ERR
    rm -rf "$B/metadata/cache"
    BACKUP_DIR=$B backup_json "$TEST_TMP/b-$step.json" "--$mode" "$src"
    assert_rc 0 "$step: backup without the cache"
    B_ID=$BACKUP_ID
    local k
    for k in files filesUnchanged bytesRead bytesTotal dirs symlinks; do
        assert_eq "$(json_get "$TEST_TMP/b-$step.json" "[\"stats\"][\"$k\"]")" \
            "$(json_get "$TEST_TMP/a-$step.json" "[\"stats\"][\"$k\"]")" "$step: same $k with and without the cache"
    done
    run cb --json ls "$A_ID" --recursive --long
    json_eval "$OUT_FILE" 'd["entries"]' >"$TEST_TMP/a-$step.ls"
    BACKUP_DIR=$B run cb --json ls "$B_ID" --recursive --long
    json_eval "$OUT_FILE" 'd["entries"]' >"$TEST_TMP/b-$step.ls"
    assert_true "$step: same listing (paths, types, modes, owners, mtimes, sizes)" \
        cmp -s "$TEST_TMP/a-$step.ls" "$TEST_TMP/b-$step.ls"
    assert_exit 0 cb verify "$A_ID"
}

both full full
assert_eq 1 "$(table | wc -l)" "a full backup leaves a file table in the cache"

both incremental nochange
assert_eq 0 "$(json_get "$TEST_TMP/a-nochange.json" '["stats"]["bytesRead"]')" "no change: nothing read"
assert_eq "$(json_get "$TEST_TMP/a-nochange.json" '["stats"]["files"]')" \
    "$(json_get "$TEST_TMP/a-nochange.json" '["stats"]["filesUnchanged"]')" "no change: every file unchanged"
assert_not_contains "$A_ERR" "cache not used" "no change: the table was used"
assert_eq true "$(json_eval "$TEST_TMP/a-nochange.json" 'd["stats"]["stageMs"]["read"] == 0 and d["stats"]["stageMs"]["walk"] > 0')" \
    "no change: stageMs reports a walk and no reading"
assert_eq true "$(json_eval "$TEST_TMP/a-full.json" 'all(d["stats"]["stageMs"][k] > 0 for k in ("read", "sha256", "chunk", "chunkId", "compress", "encrypt", "write", "manifest"))')" \
    "full: stageMs reports time in every stage of the data path"

# Changes the table must not hide: content, size, mode, owner, xattrs, a rewrite with the
# mtime put back, new and deleted files, a new hard link.
printf 'more\n' >>"$src/hello.txt"
chmod 0600 "$src/odd-mode"
chown 4321:8765 "$src/read-only"
setfattr -n user.x -v changed "$src/xattr-file"
setfattr -n user.added -v new "$src/docs/numbers.txt"
printf 'new file\n' >"$src/docs/new.txt"
rm "$src/docs/reports/records.csv"
ln "$src/name with space" "$src/docs/space-link"
python3 - "$src/setgid-file" <<'EOF'
import os, sys
p = sys.argv[1]
st = os.stat(p)
with open(p, "r+b") as f:
    f.write(b"y")
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
EOF
both incremental changed
assert_not_contains "$A_ERR" "cache not used" "changed: the table was used"
mkdir "$TEST_TMP/r"
assert_exit 0 cb restore files "$A_ID" --target "$TEST_TMP/r"
tree_compare "$src" "$TEST_TMP/r$src"

# Tampered: one byte flipped. Ignored (its MAC fails), and the backup is still right.
flip_byte "$(table)"
both incremental tampered
assert_contains "$A_ERR" "fails its authentication" "a tampered table is refused"
assert_eq 0 "$(json_get "$TEST_TMP/a-tampered.json" '["stats"]["bytesRead"]')" "tampered: the previous manifest was used instead (nothing read)"

# Stale: the table of an earlier backup put back. Ignored.
cp "$(table)" "$TEST_TMP/old.tbl"
printf 'again\n' >>"$src/hello.txt"
both incremental before-stale
cp "$TEST_TMP/old.tbl" "$(table)"
both incremental stale
assert_contains "$A_ERR" "made for another backup" "a stale table is refused"

# A FIFO in the table's place hung the backup (an open without O_NONBLOCK, SIGTERM unheard);
# a sparse terabyte was hashed whole before its header was looked at. Both are "not a table".
tab=$(table)
cp "$tab" "$TEST_TMP/kept.tbl"
rm -f "$tab" && mkfifo "$tab"
run timeout -k 5 60 "$CARIS_BIN" backup files --incremental "$src"
assert_rc 0 "a FIFO in the table's place: the backup goes on (no hang)"
assert_contains "$ERR" "file table cache not used (not a table" "... saying why"
rm -f "$tab" && truncate -s 1T "$tab"
run timeout -k 5 60 "$CARIS_BIN" backup files --incremental "$src"
assert_rc 0 "a sparse terabyte in the table's place: the backup goes on at once"
assert_contains "$ERR" "its header does not match its size" "... saying why"
rm -f "$tab"

# Temporary files a killed backup left in the cache directory were never removed (each as
# large as a table): the next table's writer removes those an hour old, not a live one's.
cdir=$(find "$A/metadata/cache" -mindepth 1 -maxdepth 1 -type d)
assert_true "the cache directory of repository A" test -d "$cdir"
head -c 100000 /dev/zero >"$cdir/files-old.tbl.tmp.0123456789abcdef"
head -c 1000 /dev/zero >"$cdir/summaries.tmp-99999-1f"
touch -d '2 hours ago' "$cdir/files-old.tbl.tmp.0123456789abcdef" "$cdir/summaries.tmp-99999-1f"
head -c 1000 /dev/zero >"$cdir/files-live.tbl.tmp.fedcba9876543210"
printf 'tmp\n' >>"$src/hello.txt"
run cb --quiet backup files --incremental "$src"
assert_rc 0 "a backup with leftovers in the cache directory"
assert_false "the hour-old temporary table is removed" test -e "$cdir/files-old.tbl.tmp.0123456789abcdef"
assert_false "the hour-old temporary summaries file is removed" test -e "$cdir/summaries.tmp-99999-1f"
assert_true "a fresh one (a live writer's) is kept" test -e "$cdir/files-live.tbl.tmp.fedcba9876543210"
rm -f "$cdir/files-live.tbl.tmp.fedcba9876543210"

# A table whose MAC is right but made with another repository's key: copied from B.
backup_json "$TEST_TMP/a-x.json" --incremental "$src"
BACKUP_DIR=$B run cb --quiet backup files --incremental "$src"
btab=$(find "$B/metadata/cache" -name 'files-*.tbl' -type f)
cp "$btab" "$(table)"
both incremental foreign
assert_contains "$A_ERR" "fails its authentication" "another repository's table is refused"

# Missing: rebuilt from the repository.
rm -rf "$A/metadata/cache"
both incremental missing
assert_eq 1 "$(table | wc -l)" "the table is written again"
both incremental after
assert_not_contains "$A_ERR" "cache not used" "the rewritten table is used"


# While a backup runs, the manifest's entries text goes to an unnamed file beside the table,
# not into memory. When that file cannot be written (a file size limit here, as a full disk
# would), the text is read back into memory and the backup records exactly the same entries;
# the table, which cannot be written either, is left out with a warning.
many=$TEST_TMP/many
mkdir "$many"
python3 - "$many" <<'EOF'
import os, sys
for i in range(2000):  # empty files: about 400 KB of entries text, next to no data
    d = os.path.join(sys.argv[1], "dir-%02d" % (i % 20))
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "a-rather-long-file-name-for-a-long-entry-%05d.txt" % i), "w").close()
EOF
run bash -c 'trap "" XFSZ; ulimit -f 256; exec "$0" --json backup files --full "$1"' "$CARIS_BIN" "$many"
assert_rc 0 "entries text not writable to its file (256 KiB file size limit): the backup completes"
limited=$(json_get "$OUT_FILE" '["id"]')
assert_contains "$ERR" "entries are kept in memory" "... saying the text was kept in memory"
assert_contains "$ERR" "file table cache not written" "... and that the table was not written"
backup_json "$TEST_TMP/a-many.json" --full "$many"
assert_rc 0 "the same tree backed up without the limit"
run cb --json debug backup "$limited"
sha_limited=$(json_get "$OUT_FILE" '["sha256"]')
run cb --json debug backup "$BACKUP_ID"
assert_eq "$sha_limited" "$(json_get "$OUT_FILE" '["sha256"]')" \
    "the entries recorded with the text in memory and through its file are the same bytes"
assert_eq 2000 "$(json_get "$TEST_TMP/a-many.json" '["stats"]["files"]')" "... of all 2000 files"
assert_exit 0 cb verify "$limited"

# A file whose extended attributes could not be read once (EIO: the file system failed for a
# moment) is not in the table: the next backup reads them again. (It matched the table on stat
# alone, copied the entry without them, and said nothing, until the file's ctime changed.)
shim=$TEST_TMP/read_faults.so
cc -shared -fPIC -O2 -o "$shim" "$(dirname "$0")/read_faults.c" -ldl || fail "cannot build the fault injector"
xa=$TEST_TMP/xa
mkdir "$xa"
printf 'record\n' >"$xa/acl-file"
setfattr -n user.important -v yes "$xa/acl-file"
run env LD_PRELOAD="$shim" READ_FAULT=xattr-eio READ_FAULT_FILE=acl-file "$CARIS_BIN" --json backup files "$xa"
assert_rc 3 "extended attributes that cannot be read: a warning"
assert_contains "$ERR" "cannot read extended attributes of" "... saying so"
backup_json "$TEST_TMP/a-xa.json" "$xa"
assert_rc 0 "the next backup, the file unchanged"
mkdir "$TEST_TMP/rxa"
assert_exit 0 cb restore files "$BACKUP_ID" --target "$TEST_TMP/rxa"
assert_eq yes "$(getfattr --only-values -n user.important "$TEST_TMP/rxa$xa/acl-file" 2>/dev/null)" \
    "... holds the extended attributes: it read them again"

test_done

#!/usr/bin/env bash
# A restore (and verify) out of S3 of chunks that appear many times: the same content in
# several files, the same chunk at several positions of one file, a sparse file, and hard
# links. The restored tree is byte-exact (content, hard links, sparseness), and a restore
# into a subset (--include) of such a tree too. Guards the S3 read path of restore, whatever
# order it fetches blobs in.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"

s3_start bkt
export BACKUP_S3_RETRY_SECONDS=10
S3=s3:$S3_ENDPOINT/bkt/repo
scb() { cb --repo "$S3" "$@"; }

src=$TEST_TMP/src
mkdir -p "$src/a" "$src/b"
# a 3 MiB block of seeded pseudo-random bytes (several chunks, each its own id)
python3 - "$src" <<'PY'
import os, random, sys
src = sys.argv[1]
rnd = random.Random(11)
block = bytes(rnd.getrandbits(8) for _ in range(3 << 20))
small = bytes(rnd.getrandbits(8) for _ in range(5000))
def w(p, data):
    with open(os.path.join(src, p), "wb") as f:
        f.write(data)
w("a/one.bin", block)                       # the block
w("b/two.bin", block)                       # the same chunks in another file
w("a/thrice.bin", block + block + block)    # the same chunks at three positions of one file
w("b/mixed.bin", small + block + small)     # shifted: other chunk boundaries, partly shared
for i in range(20):                         # many small files with the same content
    w("b/small%02d.txt" % i, small)
with open(os.path.join(src, "a/sparse.bin"), "wb") as f:   # data, a hole, the same data
    f.write(block[:1 << 20])
    f.seek(8 << 20)
    f.write(block[:1 << 20])
PY
ln "$src/a/one.bin" "$src/b/one-link.bin"
ln "$src/a/one.bin" "$src/b/one-link2.bin"
ln "$src/b/small00.txt" "$src/a/small-link.txt"

assert_exit 0 scb init
run scb --threads 2 --json backup files "$src"
assert_rc 0 "backup into S3"
cp "$OUT_FILE" "$TEST_TMP/b.json"
id=$(json_get "$TEST_TMP/b.json" '["id"]')
known=$(json_get "$TEST_TMP/b.json" '["stats"]["chunksKnown"]')
assert_cmp "$known" -ge 3 "the backup found duplicate chunks ($known)"

target=$TEST_TMP/restore
mkdir "$target"
run scb --threads 2 --json restore files "$id" --target "$target"
assert_rc 0 "restore from S3"
tree_compare "$src" "$target$src"
for f in a/one.bin b/two.bin a/thrice.bin b/mixed.bin a/sparse.bin b/small19.txt; do
    assert_true "$f is byte-exact" cmp "$src/$f" "$target$src/$f"
done
assert_eq "$(stat -c %i "$target$src/a/one.bin")" "$(stat -c %i "$target$src/b/one-link.bin")" \
    "a hard link is restored as a hard link"
stored=$(json_get "$TEST_TMP/b.json" '["stats"]["bytesStored"]')
got=$(json_get "$OUT_FILE" '["s3"]["bytesReceived"]')
note "restore received $got bytes of $stored stored"
assert_cmp "$got" -le $((stored + stored / 20 + 1048576)) "duplicates are not read twice ($got received, $stored stored)"

# a subset (b/) holding hard links whose first name (in a/, met first in the walk) is outside
# it: the first selected name takes the content, the others link to it
target2=$TEST_TMP/restore2
mkdir "$target2"
run scb --threads 2 restore files "$id" --target "$target2" --include "$src/b"
assert_rc 0 "restore of a subset from S3"
for f in b/two.bin b/mixed.bin b/one-link.bin b/small00.txt; do
    assert_true "$f is byte-exact in the subset" cmp "$src/$f" "$target2$src/$f"
done
assert_eq "$(stat -c %i "$target2$src/b/one-link.bin")" "$(stat -c %i "$target2$src/b/one-link2.bin")" \
    "the selected names of a hard-linked file are one inode"
assert_false "a/ is not restored" test -e "$target2$src/a"

run scb --json verify "$id"
assert_rc 0 "verify from S3"
assert_eq true "$(json_get "$OUT_FILE" '[0]["valid"]')" "the backup verifies"

test_done

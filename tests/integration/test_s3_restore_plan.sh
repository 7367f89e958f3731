#!/usr/bin/env bash
# A restore from S3 is planned by pack (src/repo/readplan.c): the blobs every file needs are
# grouped by pack, near ranges merged into one ranged GET, each blob decoded once and
# written wherever it appears. Proven by the server's own log: the GETs of packs stay within
# a few per pack (not one per blob, not one per 2 MiB), the bytes received stay the bytes
# stored, a tree with much duplicated content restores byte-exact, and a damaged pack fails
# the restore cleanly: exit 4, the damaged files absent, no temporary file left, every file
# that is there byte-exact.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"

s3_start bkt
export BACKUP_S3_RETRY_SECONDS=10
S3=s3:$S3_ENDPOINT/bkt/repo
scb() { cb --repo "$S3" "$@"; }
# Requests for pack objects the server answered so far (one log line per request: path,
# status, time); a restore writes no pack, so during one they are its GETs.
data_gets() { grep -cE 'data/[0-9a-f]{2}/[0-9a-f]{64} [0-9]{3} [0-9.,]+ms' "$S3_LOG" 2>/dev/null; }

src=$TEST_TMP/src
python3 "$LIB_DIR/../../bench/gen-tree.py" gen "$src/tree" 24M --seed 5 >/dev/null || fail "gen-tree failed"
# duplicated content: one 2 MiB block in eight files, twice in one more
python3 - "$src" <<'PY'
import os, random, sys
src = sys.argv[1]
rnd = random.Random(23)
block = bytes(rnd.getrandbits(8) for _ in range(2 << 20))
os.makedirs(os.path.join(src, "dup"))
for i in range(8):
    with open(os.path.join(src, "dup", "copy%d.bin" % i), "wb") as f:
        f.write(block)
with open(os.path.join(src, "dup", "twice.bin"), "wb") as f:
    f.write(block + block)
PY

init_repo --repo "$S3"
run scb --threads 2 --json backup files "$src"
assert_rc 0 "backup into S3"
cp "$OUT_FILE" "$TEST_TMP/b.json"
id=$(json_get "$TEST_TMP/b.json" '["id"]')
blobs=$(json_get "$TEST_TMP/b.json" '["stats"]["chunksNew"]')
known=$(json_get "$TEST_TMP/b.json" '["stats"]["chunksKnown"]')
stored=$(json_get "$TEST_TMP/b.json" '["stats"]["bytesStored"]')
# each of the 7 copies after the first is made of known chunks (at least one: how many depends
# on the repository's secret chunker seed; with a single chunk, none of twice.bin's need be
# known, so 8 failed about once in 60 seeds)
assert_cmp "$known" -ge 7 "the backup found the duplicated chunks ($known)"
packs=$(find "$S3_DIR/bkt/repo/data" -type f -name '*._S3rver_object' | wc -l)
pack_bytes=$(find "$S3_DIR/bkt/repo/data" -type f -name '*._S3rver_object' -printf '%s\n' | awk '{s += $1} END {print s}')

target=$TEST_TMP/restore
mkdir "$target"
g0=$(data_gets)
run scb --threads 2 --json restore files "$id" --target "$target"
assert_rc 0 "restore from S3"
tree_compare "$src" "$target$src"
for i in 0 7; do
    assert_true "dup/copy$i.bin is byte-exact" cmp "$src/dup/copy$i.bin" "$target$src/dup/copy$i.bin"
done
assert_true "dup/twice.bin is byte-exact" cmp "$src/dup/twice.bin" "$target$src/dup/twice.bin"
gets=$(($(data_gets) - g0))
req=$(json_get "$OUT_FILE" '["s3"]["requests"]')
got=$(json_get "$OUT_FILE" '["s3"]["bytesReceived"]')
note "restore: $gets GETs of packs, $req requests in all, for $blobs blobs in $packs packs ($pack_bytes bytes); received $got of $stored stored"
assert_cmp "$gets" -ge 1 "the server's log counts the GETs of packs ($gets)"
# A plan reads a pack in ranges of at most 8 MiB (READPLAN_RANGE_MAX), plus at most one
# 40-byte header read: at most size/8 MiB + 2 GETs per pack.
assert_cmp "$gets" -le $((pack_bytes / 8388608 + 2 * packs)) "at most a few GETs per pack ($gets GETs, $packs packs)"
assert_cmp "$((gets * 20))" -lt "$blobs" "far fewer GETs than blobs ($gets GETs, $blobs blobs)"
assert_cmp "$req" -le $((pack_bytes / 8388608 + 2 * packs + 30)) "few requests in all ($req)"
assert_cmp "$got" -le $((stored + stored / 20 + 1048576)) "each stored byte is received once at most ($got received, $stored stored)"

# verify reads through the plan too (each file hashed in order as its chunks come)
g0=$(data_gets)
run scb --threads 2 --json verify "$id"
assert_rc 0 "verify from S3"
assert_eq true "$(json_get "$OUT_FILE" '[0]["valid"]')" "the backup verifies"
assert_eq "$(json_get "$OUT_FILE" '[0]["files"]')" "$(find "$src" -type f | wc -l)" "verify checked every file"
vgets=$(($(data_gets) - g0))
note "verify: $vgets GETs of packs"
assert_cmp "$vgets" -le $((pack_bytes / 8388608 + 2 * packs)) "verify: at most a few GETs per pack ($vgets GETs, $packs packs)"

# --- a damaged pack: a clean failure --------------------------------------------------------
# One byte flipped in the middle of the largest pack (s3rver serves the altered bytes).
pack=$(find "$S3_DIR/bkt/repo/data" -type f -name '*._S3rver_object' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
flip_byte "$pack"
bad=$TEST_TMP/restore-bad
mkdir "$bad"
run scb --threads 2 --json restore files "$id" --target "$bad"
assert_rc 4 "a restore from a damaged pack exits 4 (damage)"
assert_contains "$(cat "$ERR_FILE" "$OUT_FILE")" "checksum mismatch" "the damage is reported as such"
nerr=$(json_get "$OUT_FILE" '["errors"].__len__()')
assert_cmp "$nerr" -ge 1 "the damaged file(s) are listed ($nerr)"
assert_eq "" "$(find "$bad" -name '.caris-tmp-*')" "no temporary file is left in the target"
total=$(find "$src" -type f | wc -l)
there=$(find "$bad$src" -type f 2>/dev/null | wc -l)
assert_cmp "$there" -lt "$total" "the damaged files are not restored ($there of $total there)"
wrong=0
while IFS= read -r -d '' f; do
    cmp -s "$f" "$src/${f#"$bad$src"/}" || wrong=$((wrong + 1))
done < <(find "$bad$src" -type f -print0)
assert_eq 0 "$wrong" "every file that was restored is byte-exact"
run scb --threads 2 --json verify "$id"
assert_rc 4 "verify finds the damage (exit 4)"
assert_eq false "$(json_get "$OUT_FILE" '[0]["valid"]')" "the backup is not valid"
assert_eq "$nerr" "$(json_get "$OUT_FILE" '[0]["errors"].__len__()')" "verify names the files restore could not restore"
test_done

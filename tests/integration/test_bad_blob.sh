#!/usr/bin/env bash
# A blob found damaged (by verify, check --read-data or prune) is recorded, so the next backup
# stores it again instead of deduplicating against the damaged copy: the backups made before
# it are whole again, and prune then rewrites the damaged pack, which takes the damage (and
# its records) out of the repository. Before, every later backup reused the damaged copy.
source "$(dirname "$0")/lib.sh"

bad_records() { find "$REPO/records/bad-blob" -type f ! -name '.*' 2>/dev/null | wc -l; }
stat_of() { json_get "$1" "[\"stats\"][\"$2\"]"; }

init_repo
mkdir -p "$TEST_TMP/src"
# incompressible, and smaller than the smallest file chunk: one raw blob each, so the data pack
# holds blob 0 at offset 40 and blob 1 at 40 + 300000 + 16 (its tag)
seeded_bytes 300000 bad-a >"$TEST_TMP/src/a"
seeded_bytes 300000 bad-b >"$TEST_TMP/src/b"
backup_json "$TEST_TMP/a.json" "$TEST_TMP/src"
A=$BACKUP_ID
pack=$(list_packs | xargs -r ls -S | head -n 1)
assert_eq 2 "$(stat_of "$TEST_TMP/a.json" files)" "backup A has both files"

# --- verify finds a damaged blob and records it ----------------------------------------------
flip_byte "$pack" 1000 # blob 0
run cb verify "$A"
assert_rc 4 "verify A: damaged"
assert_contains "$ERR" "recorded 1 damaged blob" "verify says it recorded the damaged blob"
assert_eq 1 "$(bad_records)" "one record of damaged blobs"

# A prune before any backup stored the blob again keeps the pack (its referenced blob cannot be
# copied) and succeeds.
run cb --json prune
assert_rc 0 "prune with a referenced blob known damaged"
assert_true "the damaged pack is kept while a backup needs its blob" test -f "$pack"

# --- the next backup stores it again ---------------------------------------------------------
flip_byte "$pack" 301056 # blob 1 too, found by nothing yet: B reuses it
backup_json "$TEST_TMP/b.json" "$TEST_TMP/src"
assert_rc 0 "backup B"
B=$BACKUP_ID
assert_eq 1 "$(stat_of "$TEST_TMP/b.json" chunksNew)" \
    "backup B stored again the blob known damaged (the file was read, not reused)"
assert_eq 1 "$(stat_of "$TEST_TMP/b.json" filesUnchanged)" "the other file was reused"

# --- prune: the damaged pack holds a blob that does not open: kept, and recorded ------------
run cb --json prune
assert_rc 0 "prune: a damaged pack whose referenced blob does not open is kept"
assert_true "the pack is still there" test -f "$pack"
assert_contains "$ERR" "recorded 1 damaged blob" "prune recorded the blob it could not copy"
assert_eq 2 "$(bad_records)" "two records of damaged blobs"

backup_json "$TEST_TMP/c.json" "$TEST_TMP/src"
assert_rc 0 "backup C"
C=$BACKUP_ID
assert_eq 1 "$(stat_of "$TEST_TMP/c.json" chunksNew)" "backup C stored the second blob again"
assert_eq 0 "$(stat_of "$TEST_TMP/c.json" chunksKnown)" "and deduplicated against nothing damaged"
for id in "$A" "$B" "$C"; do
    assert_exit 0 cb --quiet verify "$id"
done
mkdir -p "$TEST_TMP/restore"
assert_exit 0 cb --quiet restore files "$A" --target "$TEST_TMP/restore"
assert_exit 0 cmp "$TEST_TMP/src/a" "$TEST_TMP/restore/${TEST_TMP#/}/src/a"
assert_exit 0 cmp "$TEST_TMP/src/b" "$TEST_TMP/restore/${TEST_TMP#/}/src/b"

# check still sees the damaged pack, but no backup needs it
run cb --json check --read-data
assert_rc 4 "check --read-data: the damaged pack is still there"
assert_json "$OUT_FILE" 'any("checksum mismatch" in x["error"] for x in d["errors"])' \
    "check reports the pack's checksum"
assert_json "$OUT_FILE" 'not any(x.get("backups") for x in d["errors"])' \
    "and no backup as needing it"

# --- prune rewrites the damaged pack: the damage and its records leave ----------------------
run cb --json prune
assert_rc 0 "prune"
assert_false "the damaged pack is gone" test -f "$pack"
assert_eq 2 "$(json_get "$OUT_FILE" '["badBlobRecordsRemoved"]')" "its two records went with it"
assert_eq 0 "$(bad_records)" "no record of damage left"
run cb --json check --read-data
assert_rc 0 "check --read-data after the prune"
assert_exit 0 cb --quiet verify --all

# --- check --read-data records what it finds too --------------------------------------------
seeded_bytes 300000 bad-c >"$TEST_TMP/src/c"
backup_json_pack "$TEST_TMP/d.json" "$TEST_TMP/src"
D=$BACKUP_ID
pack=$NEW_PACK
flip_byte "$pack" 1000
run cb --json check --read-data
assert_rc 4 "check --read-data finds the damage"
assert_json "$OUT_FILE" 'any("'"$D"'" in x.get("backups", []) for x in d["errors"])' \
    "and names the backup that needs the blob"
assert_eq 1 "$(bad_records)" "check recorded the damaged blob"
backup_json "$TEST_TMP/e.json" "$TEST_TMP/src"
assert_eq 1 "$(stat_of "$TEST_TMP/e.json" chunksNew)" "the next backup stored it again"
assert_exit 0 cb --quiet verify "$D"
assert_exit 0 cb --quiet prune
assert_false "prune removed the damaged pack" test -f "$pack"
assert_exit 0 cb --quiet check --read-data

# --- a truncated pack: check --read-data records the blobs cut off ---------------------------
seeded_bytes 300000 bad-d >"$TEST_TMP/src/d"
seeded_bytes 300000 bad-e >"$TEST_TMP/src/e"
backup_json_pack "$TEST_TMP/f.json" "$TEST_TMP/src"
F=$BACKUP_ID
pack=$NEW_PACK
truncate -s 400000 "$pack" # blob 1 (from 300056 on) and the trailer are cut off
run cb --json check --read-data
assert_rc 4 "check --read-data finds the truncated pack"
assert_json "$OUT_FILE" 'any("past the end" in x["error"] for x in d["errors"])' \
    "it names the blob past the end"
assert_eq 1 "$(bad_records)" "and records it"
backup_json "$TEST_TMP/g.json" "$TEST_TMP/src"
assert_eq 1 "$(stat_of "$TEST_TMP/g.json" chunksNew)" "the next backup stored the blob cut off"
assert_exit 0 cb --quiet verify "$F"
run cb --json prune
assert_rc 0 "prune"
assert_false "prune removed the truncated pack, its intact blob copied" test -f "$pack"
assert_eq 0 "$(bad_records)" "and the record"
assert_exit 0 cb --quiet check --read-data
assert_exit 0 cb --quiet verify --all

# --- a restore that meets a damaged blob records it too ------------------------------------
seeded_bytes 300000 bad-r >"$TEST_TMP/src/r"
backup_json_pack "$TEST_TMP/h.json" "$TEST_TMP/src"
H=$BACKUP_ID
pack=$NEW_PACK
flip_byte "$pack" 1000
run cb restore files "$H" --target "$TEST_TMP/restore-h"
assert_rc 4 "restore files of the damaged backup"
assert_contains "$ERR" "recorded 1 damaged blob" "the restore recorded the blob it could not read"
assert_eq 1 "$(bad_records)" "in one record"
backup_json "$TEST_TMP/i.json" "$TEST_TMP/src"
assert_eq 1 "$(stat_of "$TEST_TMP/i.json" chunksNew)" "the next backup stored it again"
assert_exit 0 cb --quiet verify "$H"
assert_exit 0 cb --quiet prune
assert_eq 0 "$(bad_records)" "prune removed the damaged pack and its record"

# --- a pack prune would rewrite for its waste, with a referenced blob known damaged ----------
# It cannot be copied: prune keeps the pack and does the rest (it used to stop, exit 4, and so
# did every prune after it until a backup stored the blob again).
mkdir -p "$TEST_TMP/s1" "$TEST_TMP/s2"
seeded_bytes 300000 waste-a >"$TEST_TMP/s1/a"
seeded_bytes 300000 waste-b >"$TEST_TMP/s1/b"
cp "$TEST_TMP/s1/a" "$TEST_TMP/s2/a"
backup_json_pack "$TEST_TMP/w1.json" "$TEST_TMP/s1"
W1=$BACKUP_ID
pack=$NEW_PACK
backup_json "$TEST_TMP/w2.json" "$TEST_TMP/s2"
W2=$BACKUP_ID
flip_byte "$pack" 1000
flip_byte "$pack" 301056 # a and b both: whichever is a, W2 needs a damaged blob
run cb verify "$W2"
assert_rc 4 "verify W2: damaged"
assert_exit 0 cb --quiet forget "$W1"
run cb --json prune --max-unused 0
assert_rc 0 "prune: the pack with a known-damaged referenced blob is kept, the rest done"
assert_true "the pack is kept" test -f "$pack"
backup_json "$TEST_TMP/w3.json" "$TEST_TMP/s2"
assert_eq 1 "$(stat_of "$TEST_TMP/w3.json" chunksNew)" "the next backup of s2 stored a again"
assert_exit 0 cb --quiet verify "$W2"
assert_exit 0 cb --quiet prune --max-unused 0
assert_false "then prune rewrote it" test -f "$pack"
assert_exit 0 cb --quiet check --read-data

# --- the same, with the pack's header damaged (its magic): no blob of it opens ---------------
# The first prune meets it, fails and records the referenced blob; the next one keeps the pack
# and does the rest (every prune failed on it, exit 4 "bad header", check --read-data or not,
# until the backups that need the blob were forgotten; so did a pack cut short before its
# blobs, known damaged at open).
mkdir -p "$TEST_TMP/s3" "$TEST_TMP/s4"
seeded_bytes 300000 header-a >"$TEST_TMP/s3/a"
seeded_bytes 300000 header-b >"$TEST_TMP/s3/b"
cp "$TEST_TMP/s3/a" "$TEST_TMP/s4/a"
backup_json_pack "$TEST_TMP/h1.json" "$TEST_TMP/s3"
H1=$BACKUP_ID
pack=$NEW_PACK
backup_json "$TEST_TMP/h2.json" "$TEST_TMP/s4"
H2=$BACKUP_ID
assert_exit 0 cb --quiet forget "$H1"
flip_byte "$pack" 2
run cb prune --max-unused 0
assert_rc 4 "the first prune that meets the pack without a header fails"
assert_contains "$ERR" "bad header" "it says why"
assert_contains "$ERR" "recorded 1 damaged blob" "and records the referenced blob it cannot copy"
run cb --json prune --max-unused 0
assert_rc 0 "the next prune keeps the pack and does the rest"
assert_true "the pack is kept" test -f "$pack"
backup_json "$TEST_TMP/h3.json" "$TEST_TMP/s4"
assert_eq 1 "$(stat_of "$TEST_TMP/h3.json" chunksNew)" "the next backup of s4 stored a again"
assert_exit 0 cb --quiet verify "$H2"
assert_exit 0 cb --quiet prune --max-unused 0
assert_false "then prune deleted it" test -f "$pack"
assert_exit 0 cb --quiet check --read-data
# cut short before its first blob: known damaged at open, kept by the first prune
mkdir -p "$TEST_TMP/s5" "$TEST_TMP/s6"
seeded_bytes 300000 cut-a >"$TEST_TMP/s5/a"
seeded_bytes 300000 cut-b >"$TEST_TMP/s5/b"
cp "$TEST_TMP/s5/a" "$TEST_TMP/s6/a"
backup_json_pack "$TEST_TMP/c1.json" "$TEST_TMP/s5"
C1=$BACKUP_ID
pack=$NEW_PACK
backup_json "$TEST_TMP/c2.json" "$TEST_TMP/s6"
assert_exit 0 cb --quiet forget "$C1"
truncate -s 20 "$pack"
run cb --json prune --max-unused 0
assert_rc 0 "prune keeps a pack cut short before its first blob and does the rest"
assert_true "the cut pack is kept" test -f "$pack"
backup_json "$TEST_TMP/c3.json" "$TEST_TMP/s6"
assert_exit 0 cb --quiet prune --max-unused 0
assert_false "once a is stored again, prune deletes the cut pack" test -f "$pack"
assert_exit 0 cb --quiet check --read-data

# --- a pack's header damaged, met by verify and check --read-data: no blob of it opens -------
# Every blob the index places in it is recorded, and check names the backups that need them.
# Before, nothing was recorded: every later backup deduplicated against the pack and reported
# success, and none of them could be restored.
mkdir -p "$TEST_TMP/s7"
seeded_bytes 300000 magic-a >"$TEST_TMP/s7/a"
seeded_bytes 300000 magic-b >"$TEST_TMP/s7/b"
backup_json_pack "$TEST_TMP/m1.json" "$TEST_TMP/s7"
M1=$BACKUP_ID
pack=$NEW_PACK
flip_byte "$pack" 3
run cb verify "$M1"
assert_rc 4 "verify: the pack's magic is damaged"
assert_contains "$OUT$ERR" "bad magic" "verify says why"
assert_contains "$ERR" "recorded 2 damaged blobs" "verify records both blobs of the pack"
run cb --json check --read-data
assert_rc 4 "check --read-data: the pack's header is damaged"
assert_json "$OUT_FILE" 'any(x["error"] == "bad pack header" for x in d["errors"])' \
    "check reports the header"
assert_json "$OUT_FILE" 'any("'"$M1"'" in x["backups"] for x in d["errors"])' \
    "check names the backup that needs the pack"
backup_json "$TEST_TMP/m2.json" "$TEST_TMP/s7"
assert_rc 0 "the next backup"
assert_eq 2 "$(stat_of "$TEST_TMP/m2.json" chunksNew)" "the next backup stored both blobs again"
assert_exit 0 cb --quiet verify "$BACKUP_ID"
assert_exit 0 cb --quiet verify "$M1"
# check --read-data alone records them too (no verify before it)
seeded_bytes 300000 magic-c >"$TEST_TMP/s7/c"
backup_json_pack "$TEST_TMP/m3.json" "$TEST_TMP/s7"
M3=$BACKUP_ID
flip_byte "$NEW_PACK" 3
run cb --json check --read-data
assert_rc 4 "check --read-data meets a second pack whose magic is damaged"
assert_contains "$ERR" "recorded 1 damaged blob" "check records the blob of that pack"
assert_json "$OUT_FILE" 'any("'"$M3"'" in x["backups"] for x in d["errors"])' \
    "and names the backup that needs it"
backup_json "$TEST_TMP/m4.json" "$TEST_TMP/s7"
assert_eq 1 "$(stat_of "$TEST_TMP/m4.json" chunksNew)" "the next backup stored c again"
assert_exit 0 cb --quiet verify "$M3"

# --- a record of damage that cannot be read: prune refuses, check and every command say so ---
rec=$(find "$REPO/records/bad-blob" -type f | head -n 1)
if [[ -z $rec ]]; then
    seeded_bytes 300000 rec-a >"$TEST_TMP/src/r"
    backup_json_pack "$TEST_TMP/r.json" "$TEST_TMP/src"
    pack=$NEW_PACK
    flip_byte "$pack" 1000
    assert_exit 4 cb --quiet verify "$BACKUP_ID"
    rec=$(find "$REPO/records/bad-blob" -type f | head -n 1)
fi
assert_ne "" "$rec" "a record of damage exists"
flip_byte "$rec"
run cb --json prune
assert_rc 4 "prune refuses while a record of damage cannot be read"
assert_contains "$ERR" "record of damaged blobs cannot be read" "and says why"
run cb --json check
assert_rc 4 "check reports it"
assert_json "$OUT_FILE" 'any("record of damaged blobs" in x["error"] for x in d["errors"])' \
    "as an error naming the record"
run cb list
assert_contains "$ERR" "record of damaged blobs cannot be read" "list warns"
test_done

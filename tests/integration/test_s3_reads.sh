#!/usr/bin/env bash
# Reads from an S3 repository are grouped by pack: a restore and a copy out of S3 make far
# fewer requests than there are blobs (ranged GETs that cover many blobs, counted by the
# "s3" object of --json), and both are byte-exact. A copy local -> S3 uploads each new blob
# once, and a second copy sends no pack. --s3-connections and BACKUP_S3_CONNECTIONS are
# checked (1..64).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"

s3_start bkt
export BACKUP_S3_RETRY_SECONDS=10
S3=s3:$S3_ENDPOINT/bkt/repo
CARIS_COPY_TO_KEY=$(head -c 33 /dev/urandom | base64)
export CARIS_COPY_TO_KEY
scb() { cb --repo "$S3" "$@"; }

# A tree of many small and some larger files (deterministic generator of the benchmark).
src=$TEST_TMP/src
python3 "$LIB_DIR/../../bench/gen-tree.py" gen "$src" 24M --seed 7 >/dev/null || fail "gen-tree failed"

# --- restore from S3 -------------------------------------------------------------------------
assert_exit 0 scb init
# --s3-connections / BACKUP_S3_CONNECTIONS: 1..64
assert_exit 2 scb --s3-connections 0 list
assert_contains "$ERR" "between 1 and 64" "--s3-connections 0 is refused"
assert_exit 2 scb --s3-connections=65 list
assert_exit 6 env BACKUP_S3_CONNECTIONS=many "$CARIS_BIN" --repo "$S3" list
assert_contains "$ERR" "BACKUP_S3_CONNECTIONS" "an invalid BACKUP_S3_CONNECTIONS is named"
assert_exit 0 scb --s3-connections 64 list
run scb --threads 2 --json backup files "$src"
assert_rc 0 "backup into S3"
assert_true "backup files --json against S3, with its s3 counters: the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "backup files" "$OUT_FILE"
cp "$OUT_FILE" "$TEST_TMP/b.json"
id=$(json_get "$TEST_TMP/b.json" '["id"]')
blobs=$(json_get "$TEST_TMP/b.json" '["stats"]["chunksNew"]')
assert_cmp "$blobs" -ge 400 "the backup has many blobs ($blobs)"
target=$TEST_TMP/restore
mkdir "$target"
run scb --threads 2 --json restore files "$id" --target "$target"
assert_rc 0 "restore from S3"
assert_true "restore files --json against S3, with its s3 counters: the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "restore files" "$OUT_FILE"
tree_compare "$src" "$target$src"
req=$(json_get "$OUT_FILE" '["s3"]["requests"]')
note "restore of $blobs blobs: $req S3 requests"
assert_cmp "$req" -lt $((blobs / 4)) "restore reads blobs grouped by pack ($req requests < $blobs blobs / 4)"
# The repository (~20 MB) is smaller than the reader's windows kept (64 x 2 MiB): no window is
# read twice, so the restore receives what the backup stored, once.
stored=$(json_get "$TEST_TMP/b.json" '["stats"]["bytesStored"]')
got=$(json_get "$OUT_FILE" '["s3"]["bytesReceived"]')
note "restore received $got bytes of $stored stored"
assert_cmp "$got" -le $((stored + stored / 20 + 1048576)) "restore reads each stored byte once ($got received, $stored stored)"
# Requests: the packs are read in 2 MiB windows, so at most one GET per window of stored
# bytes and one more per pack (a window cut short at its end), plus the fixed cost of
# opening the repository (config, keys, lock, index, snapshot: 30 is well above it).
packs=$(find "$S3_DIR/bkt/repo/data" -type f -name '*._S3rver_object' | wc -l)
assert_cmp "$packs" -ge 1 "the backup wrote packs ($packs)"
note "restore: $req requests for $packs packs, $stored bytes stored"
assert_cmp "$req" -le $((stored / 2097152 + packs + 30)) "restore makes one GET per 2 MiB window of stored bytes ($req requests, $packs packs)"

# --- copy S3 -> local: the source is read by pack ------------------------------------------
LOCAL=$TEST_TMP/local
# (--copy-chunker-from reads the source with BACKUP_ENCRYPTION_KEY; the destination's key
# comes from CARIS_COPY_TO_KEY)
run cb --quiet --repo "$LOCAL" init --copy-chunker-from "$S3"
assert_rc 0 "a local destination that deduplicates with the S3 repository"
run scb --threads 2 --json copy "$id" --to "$LOCAL"
assert_rc 0 "copy out of S3"
assert_true "copy --json against S3, with its s3 counters: the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "copy" "$OUT_FILE"
req=$(json_get "$OUT_FILE" '["s3"]["requests"]')
copied=$(json_get "$OUT_FILE" '["backups"][0]["blobsCopied"]')
assert_eq "$blobs" "$copied" "every blob was copied"
note "copy of $copied blobs out of S3: $req S3 requests"
assert_cmp "$req" -lt $((copied / 4)) "copy reads its source grouped by pack ($req requests < $copied blobs / 4)"
target2=$TEST_TMP/restore2
mkdir "$target2"
assert_exit 0 env BACKUP_ENCRYPTION_KEY="$CARIS_COPY_TO_KEY" "$CARIS_BIN" --repo "$LOCAL" \
    restore files "$id" --target "$target2"
tree_compare "$src" "$target2$src"

# --- copy local -> S3, twice: the second sends no pack -------------------------------------
S3B=s3:$S3_ENDPOINT/bkt/copy
# (the local repository's key opens the source and is the destination's key too)
run env BACKUP_ENCRYPTION_KEY="$CARIS_COPY_TO_KEY" "$CARIS_BIN" --quiet --repo "$S3B" \
    init --copy-chunker-from "$LOCAL"
assert_rc 0 "an S3 destination that deduplicates with the local repository"
run env BACKUP_ENCRYPTION_KEY="$CARIS_COPY_TO_KEY" CARIS_COPY_TO_KEY="$CARIS_COPY_TO_KEY" \
    "$CARIS_BIN" --repo "$LOCAL" --threads 2 --json copy "$id" --to "$S3B"
assert_rc 0 "copy into S3"
stored=$(json_get "$OUT_FILE" '["bytesStored"]')
sent=$(json_get "$OUT_FILE" '["s3"]["bytesSent"]')
note "copy into S3: $stored bytes stored, $sent bytes sent"
assert_cmp "$sent" -ge "$stored" "what was stored was sent"
assert_cmp "$sent" -lt $((stored + stored / 10 + 100000)) "... once (no pack sent twice)"
run env BACKUP_ENCRYPTION_KEY="$CARIS_COPY_TO_KEY" CARIS_COPY_TO_KEY="$CARIS_COPY_TO_KEY" \
    "$CARIS_BIN" --repo "$LOCAL" --json copy "$id" --to "$S3B"
assert_rc 0 "copy again"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["alreadyThere"]')" "the second copy finds the backup there"
assert_cmp "$(json_get "$OUT_FILE" '["s3"]["bytesSent"]')" -lt 100000 "... and sends (almost) nothing"

test_done

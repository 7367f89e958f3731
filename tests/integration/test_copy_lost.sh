#!/usr/bin/env bash
# A copy on S3 whose packs were deleted there (a bucket lifecycle rule, a hand) after a verified
# copy: `copy --all` said "already there, verified" and exited 0 (its old verification record;
# the destination's index came from the open cache, which lists no data/), and a later backup's
# copy deduplicated against the lost blobs. Now copy lists the destination's packs, sends the
# blobs a backup already there needs again, and verifies it by reading it back.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"
s3_start bkt
export BACKUP_S3_RETRY_SECONDS=2
DST=s3:$S3_ENDPOINT/bkt/copy
CARIS_COPY_TO_KEY=$(head -c 33 /dev/urandom | base64)
export CARIS_COPY_TO_KEY
dcb() { BACKUP_ENCRYPTION_KEY=$CARIS_COPY_TO_KEY cb --repo "$DST" "$@"; }
init_repo
src=$TEST_TMP/src
mkdir -p "$src"
head -c 3000000 /dev/urandom >"$src/a.bin"
seq 1 200000 >"$src/n.txt"
backup_json "$TEST_TMP/b1.json" --full "$src"
id1=$BACKUP_ID
assert_exit 0 cb --quiet --repo "$DST" init --copy-chunker-from "$REPO"
assert_exit 0 cb --quiet copy "$id1" --to "$DST"
assert_exit 0 dcb --quiet list # (the open cache written: the next opens list no data/)
find "$S3_DIR/bkt/copy/data" -type f -delete

run cb --json copy --all --to "$DST"
assert_rc 0 "copy --all after the destination lost its packs"
assert_contains "$ERR" "are missing or damaged there: sent again" "copy says the backup's blobs were missing there"
assert_eq "True True True" "$(json_eval "$OUT_FILE" 'str(d["backups"][0]["alreadyThere"]) + " " + str(d["backups"][0]["blobsCopied"] == d["backups"][0]["blobs"]) + " " + str(d["backups"][0]["verified"])')" \
    "already there, every blob sent again, verified"
# the old index files still name the lost packs (check reports them) until a prune rewrites them
assert_exit 0 dcb --quiet prune
assert_exit 0 dcb --quiet check --read-data
# the next backup's copy finds its blobs where they are
echo more >>"$src/n.txt"
backup_json "$TEST_TMP/b2.json" "$src"
assert_exit 0 cb --quiet copy "$BACKUP_ID" --to "$DST"
assert_exit 0 dcb --quiet check --read-data
mkdir "$TEST_TMP/r"
assert_exit 0 dcb --quiet restore files "$BACKUP_ID" --target "$TEST_TMP/r"
assert_true "the copy restores the source" cmp -s "$src/n.txt" "$TEST_TMP/r$src/n.txt"
test_done

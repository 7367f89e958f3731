#!/usr/bin/env bash
# A repository written before pack format 2 (fixtures/repo-v1: version 1 packs and index
# files) still opens, lists, restores and checks; new backups into it write version 2 packs
# next to the version 1 ones, and everything still restores and checks, also when the index
# files are lost and every pack is found again through its trailer.
source "$(dirname "$0")/lib.sh"

export BACKUP_ENCRYPTION_KEY='fixture key for the version 1 repository 0123'
mkdir -p "$BACKUP_DIR"
cp -r "$LIB_DIR/fixtures/repo-v1" "$REPO"
chmod -R u+w "$REPO"
v1_packs=$(list_packs | tr '\n' ' ')
for p in $v1_packs; do
    assert_eq CARISPK1 "$(head -c 8 "$p")" "fixture pack $(basename "$p" | cut -c1-12) is version 1"
done

run cb --json list
assert_rc 0 "list a version 1 repository"
old_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$OUT_FILE" 2>/dev/null)
assert_match '^file_full_' "$old_id" "the version 1 backup is listed"

assert_exit 0 cb check --read-data
mkdir "$TEST_TMP/r1"
assert_exit 0 cb restore files "$old_id" --target "$TEST_TMP/r1"
want="6fab7bd3dbad67f8952088b61cb7736e4c98a532c3f3dc4fac677750fdad98a7  hello.txt
7874c7d1ef41a45d89a7501e5c2fa4056c209f83d262bfa507c7b0ce5fb4adaf  sub/random.bin
c4cac634283ccaa6c4f4eff074ae15bd5ea7af31226dcb04feca772e097674f0  sub/text.txt"
got=$(cd "$TEST_TMP/r1/tmp/v1fix/src" 2>/dev/null && sha256sum hello.txt sub/random.bin sub/text.txt)
assert_eq "$want" "$got" "restored files from version 1 packs are byte-identical"

# A new backup into it: the unchanged content is known, the new file goes to a version 2 pack.
src=$TEST_TMP/src
mkdir -p "$src/sub"
cp -a "$TEST_TMP/r1/tmp/v1fix/src/." "$src/"
printf 'written by pack format 2\n' >"$src/new.txt"
backup_json "$TEST_TMP/b2.json" --full "$src"
assert_rc 0 "backup into a version 1 repository"
new_id=$BACKUP_ID
for p in $(list_packs); do
    case " $v1_packs " in
    *" $p "*) ;;
    *) assert_eq CARISPK2 "$(head -c 8 "$p")" "new pack $(basename "$p" | cut -c1-12) is version 2" ;;
    esac
done
assert_eq 3 "$(json_get "$TEST_TMP/b2.json" '["stats"]["chunksKnown"]')" "the version 1 blobs are known, not stored again"
assert_exit 0 cb check --read-data

# Without index files, every pack (both versions) is found through its trailer.
rm -f "$REPO"/index/*
for id in "$old_id" "$new_id"; do
    rm -rf "$TEST_TMP/r2"
    mkdir "$TEST_TMP/r2"
    assert_exit 0 cb restore files "$id" --target "$TEST_TMP/r2"
done
tree_compare "$src" "$TEST_TMP/r2$src"
run cb check --read-data
assert_contains "$OUT$ERR" "not listed in any index" "check warns about the unindexed packs"
test_done

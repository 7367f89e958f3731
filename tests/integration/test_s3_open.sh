#!/usr/bin/env bash
# Opening an S3 repository of several pages of packs (250 packs, LIST pages of 100 keys:
# BACKUP_S3_LIST_PAGE; S3's own page is 1,000, and 1,100 packs made this one of the suite's
# costliest tests) does not list data/: the open cache
# (BACKUP_DIR/metadata/cache/<repository id>/open.cache) vouches for the packs of the index
# files it saw (docs/REPOSITORY-FORMAT.md, "Opening without listing data/"). `list` and a
# no-change backup make no LIST request on data/ and few requests in all. A prune run from
# another host invalidates the cache (no deduplication against pruned blobs: the next backup
# stores them again, restores byte-exact, check passes); a tampered cache is ignored (data/
# is listed, the cache rewritten); a pack deleted from the bucket behind the program's back is
# reported by check (and verify), and the next backup stores its blobs again.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"

s3_start bkt
export BACKUP_S3_RETRY_SECONDS=10 BACKUP_S3_LIST_PAGE=100
S3=s3:$S3_ENDPOINT/bkt/repo
export BACKUP_REPOSITORY=$S3
HOST1=$BACKUP_DIR
HOST2=$TEST_TMP/host2
mkdir -p "$HOST2"

# The server's log from line N on: requests (one line each), LIST pages of data/ (s3rver logs
# the options of each listing), requests naming a pack.
log_mark() { wc -l <"$S3_LOG"; }
since() { tail -n +$(($1 + 1)) "$S3_LOG"; }
nreq() { since "$1" | grep -cE ' [0-9]{3} [0-9.,]+ms'; }
data_lists() { since "$1" | grep -c '"prefix":"repo/data/'; }
data_reqs() { since "$1" | grep -E ' [0-9]{3} [0-9.,]+ms' | grep -cE 'data/[0-9a-f]{2}/[0-9a-f]{64}'; }
pack_names() { find "$S3_DIR/bkt/repo/data" -type f -name '*._S3rver_object' | sed "s|$S3_DIR/bkt/repo/||; s|._S3rver_object$||" | sort; }
packs_in_bucket() { find "$S3_DIR/bkt/repo/data" -type f -name '*._S3rver_object' | wc -l; }
# make_files DIR N SEED: N small files of distinct content (deterministic)
make_files() {
    python3 - "$1" "$2" "$3" <<'EOF'
import os, random, sys
d, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
for i in range(n):
    sub = os.path.join(d, "d%02d" % (i % 16))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%05d" % i), "wb") as f:
        f.write(rnd.randbytes(200 + rnd.randrange(300)))
EOF
}

init_repo

# --- a repository of several pages of packs -----------------------------------------------
# One small file per blob, and a test-only pack target of 1 byte: each blob is a pack.
src=$TEST_TMP/src
make_files "$src" 250 1 || fail "make_files failed"
run env CARIS_TEST_PACK_TARGET=1 "$CARIS_BIN" --json backup files "$src"
assert_rc 0 "backup of 250 files, one pack each"
cp "$OUT_FILE" "$TEST_TMP/b1.json"
id1=$(json_get "$TEST_TMP/b1.json" '["id"]')
npacks=$(packs_in_bucket)
note "packs in the bucket: $npacks"
assert_cmp "$npacks" -gt 200 "more than 200 packs (several pages of LIST)"
rid=$(find "$HOST1/metadata/cache" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | grep -E '^[0-9a-f]{32}$' | head -1)
cache=$HOST1/metadata/cache/$rid/open.cache
assert_true "the open cache exists ($cache)" test -s "$cache"

# --- opening lists index/ only --------------------------------------------------------------
n0=$(log_mark)
run cb --json list
assert_rc 0 "list"
assert_eq "$id1" "$(json_get "$OUT_FILE" '[0]["id"]')" "list shows the backup"
n=$(nreq "$n0")
assert_eq 0 "$(data_lists "$n0")" "list makes no LIST request on data/"
assert_eq 0 "$(data_reqs "$n0")" "list makes no request on a pack"
note "list: $n requests"
# (one of them lists records/bad-blob: docs/REPOSITORY-FORMAT.md, "Damaged blobs")
assert_cmp "$n" -le 13 "list makes few requests ($n)"

n0=$(log_mark)
run cb --json backup files "$src"
assert_rc 0 "no-change backup"
cp "$OUT_FILE" "$TEST_TMP/b2.json"
n=$(nreq "$n0")
assert_eq 0 "$(data_lists "$n0")" "a no-change backup makes no LIST request on data/"
assert_eq 0 "$(json_get "$TEST_TMP/b2.json" '["stats"]["chunksNew"]')" "the no-change backup stores nothing"
note "no-change backup: $n requests"
assert_cmp "$n" -le 30 "a no-change backup makes few requests ($n)"
# its own index file (if any) is covered by the cache: the next open makes no HEAD either
n0=$(log_mark)
run cb list
assert_rc 0 "list after the no-change backup"
assert_eq 0 "$(data_reqs "$n0")" "no request on a pack after this host's own backup"

# A host without the cache lists data/ (pages of 100), then has a cache too.
n0=$(log_mark)
assert_exit 0 env BACKUP_DIR="$HOST2" "$CARIS_BIN" list
assert_cmp "$(data_lists "$n0")" -ge 2 "a host without a cache lists data/ in pages"
n0=$(log_mark)
assert_exit 0 env BACKUP_DIR="$HOST2" "$CARIS_BIN" list
assert_eq 0 "$(data_lists "$n0")" "... and not the next time"

# --- a backup from another host: its packs are looked up (HEAD), not listed -----------------
src2=$TEST_TMP/src2
make_files "$src2" 3 2 || fail "make_files failed"
assert_exit 0 env BACKUP_DIR="$HOST2" "$CARIS_BIN" backup files "$src2"
n0=$(log_mark)
run cb list
assert_rc 0 "list after another host's backup"
assert_eq 0 "$(data_lists "$n0")" "another host's new index file costs no listing"
assert_cmp "$(data_reqs "$n0")" -ge 1 "its packs are looked up one by one"

# --- a tampered cache is ignored --------------------------------------------------------------
cp "$cache" "$TEST_TMP/cache.orig"
flip_byte "$cache"
n0=$(log_mark)
run cb --json list
assert_rc 0 "list with a tampered cache"
assert_cmp "$(data_lists "$n0")" -ge 1 "a tampered cache is ignored: data/ is listed"
assert_false "the cache was rewritten" cmp -s "$cache" "$TEST_TMP/cache.orig"
n0=$(log_mark)
run cb list
assert_eq 0 "$(data_lists "$n0")" "the rewritten cache is used again"

# --- packs no index file lists ------------------------------------------------------------------
# A backup that fails after storing packs (here: every PUT of an index file fails, behind
# tests/integration/faultproxy.py) leaves packs no index lists. This host's cache adopts them
# (the next backup reuses them without listing data/). Another host's cache does not know
# them: a stale lock (a killed process) makes the next locker list data/ and adopt them, once;
# `unlock`, which removes such a lock, lists data/ itself (or drops the cache).
proxy_start() {
    local port
    port=$(_s3_free_port)
    bg_start python3 "$LIB_DIR/faultproxy.py" --port "$port" --upstream "${S3_ENDPOINT#http://}" \
        --stats "$TEST_TMP/proxy.json" --always 500 --match /index/ --method PUT
    wait_until 20 _s3_ready "$port" || fail "the fault proxy did not start" "$(_tail "$BG_ERR")"
    PROXY=s3:http://127.0.0.1:$port/bkt/repo
}
proxy_start
# failed_backup DIR SEED [BACKUP_DIR]: 60 new files, backed up through the proxy: fails (exit 8)
failed_backup() {
    rm -rf "$1"
    make_files "$1" 60 "$2" || fail "make_files failed"
    assert_exit 8 env BACKUP_DIR="${3:-$HOST1}" BACKUP_S3_RETRY_SECONDS=1 "$CARIS_BIN" \
        --repo "$PROXY" backup files "$1"
}
# stale_lock: a process killed while it holds a lock (a dump blocked on a pipe nobody reads)
dsrc=$TEST_TMP/dsrc
mkdir -p "$dsrc"
seeded_bytes 4M s3_open/big >"$dsrc/big.bin"
assert_exit 0 cb backup files "$dsrc"
did=$(cb --json list | python3 -c 'import json,sys; print([b["id"] for b in json.load(sys.stdin) if "dsrc" in json.dumps(b)][-1])')
mkfifo "$TEST_TMP/fifo"
exec 7<>"$TEST_TMP/fifo"
locks_in_bucket() { find "$S3_DIR/bkt/repo/locks" -name '*._S3rver_metadata.json' 2>/dev/null | wc -l; }
stale_lock() {
    local before pid
    before=$(locks_in_bucket)
    have_lock() { (($(locks_in_bucket) > before)); }
    "$CARIS_BIN" dump "$did" "$dsrc/big.bin" >"$TEST_TMP/fifo" 2>"$TEST_TMP/dump.err" </dev/null &
    pid=$!
    _BG_PIDS+=("$pid")
    wait_until 60 have_lock || fail "the dump took no lock within 60 s" "$(_tail "$TEST_TMP/dump.err")"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    assert_eq 137 "$?" "a process holding a lock was killed"
}
fsrc=$TEST_TMP/fsrc
# this host's failed backup: adopted through the cache
failed_backup "$fsrc" 11
n0=$(log_mark)
run cb --json backup files "$fsrc"
assert_rc 0 "backup after a failed one"
assert_eq 0 "$(data_lists "$n0")" "this host's failed backup's packs come from the cache: no listing"
assert_cmp "$(json_get "$OUT_FILE" '["stats"]["chunksKnown"]')" -ge 60 "... and are reused, not stored again"
# another host's failed backup, then a stale lock
failed_backup "$fsrc" 12 "$HOST2"
stale_lock
n0=$(log_mark)
run cb --json backup files "$fsrc"
assert_rc 0 "backup after another host's failed one and a stale lock"
assert_cmp "$(data_lists "$n0")" -ge 1 "a stale lock the cache had not seen: data/ is listed"
assert_cmp "$(json_get "$OUT_FILE" '["stats"]["chunksKnown"]')" -ge 60 "the orphan packs are adopted, not stored again"
n0=$(log_mark)
run cb backup files "$fsrc"
assert_rc 0 "another backup"
assert_eq 0 "$(data_lists "$n0")" "the stale lock, once accounted for, costs no listing"
# the same with `unlock` in between
failed_backup "$fsrc" 13 "$HOST2"
stale_lock
n0=$(log_mark)
run cb unlock
assert_rc 0 "unlock"
assert_contains "$OUT" "removed" "unlock removed the stale lock"
# (unlock then takes the exclusive lock, which lists data/ and rewrites the cache; had a live
# lock prevented that, it would have dropped the cache)
assert_cmp "$(data_lists "$n0")" -ge 1 "unlock lists data/"
n0=$(log_mark)
run cb --json backup files "$fsrc"
assert_rc 0 "backup after unlock"
assert_eq 0 "$(data_lists "$n0")" "... so the backup after it does not"
assert_cmp "$(json_get "$OUT_FILE" '["stats"]["chunksKnown"]')" -ge 60 "the orphan packs are adopted after unlock too"
exec 7>&-
# packs the cache adopted that are gone by the time a lock is held: not deduplicated against
pack_names >"$TEST_TMP/packs.0"
failed_backup "$fsrc" 14
pack_names | comm -13 "$TEST_TMP/packs.0" - >"$TEST_TMP/packs.orphan"
assert_cmp "$(wc -l <"$TEST_TMP/packs.orphan")" -ge 1 "the failed backup left packs"
while read -r p; do rm -f "$S3_DIR/bkt/repo/$p"._S3rver_*; done <"$TEST_TMP/packs.orphan"
run cb --json backup files "$fsrc"
assert_rc 0 "backup after the adopted packs were lost"
assert_cmp "$(json_get "$OUT_FILE" '["stats"]["chunksNew"]')" -ge 60 "lost adopted packs: their blobs are stored again"
fid=$(json_get "$OUT_FILE" '["id"]')
mkdir "$TEST_TMP/frestore"
assert_exit 0 cb restore files "$fid" --target "$TEST_TMP/frestore"
tree_compare "$fsrc" "$TEST_TMP/frestore$fsrc"

# --- a prune from another host ------------------------------------------------------------------
# Host 1's cache saw the index files the prune replaces: it must not vouch for their packs.
# New contents under the same path (the same group), then forget all but the newest and prune:
# the 250 first files' blobs are deleted.
rm -rf "$src"
make_files "$src" 5 3 || fail "make_files failed"
assert_exit 0 cb backup files "$src"
assert_exit 0 env BACKUP_DIR="$HOST2" "$CARIS_BIN" forget --keep-last 1 --prune
after_prune=$(packs_in_bucket)
assert_cmp "$after_prune" -lt 50 "prune deleted the forgotten backups' packs ($after_prune left)"
rm -rf "$src"
make_files "$src" 250 1 || fail "make_files failed"
pack_names >"$TEST_TMP/packs.before"
n0=$(log_mark)
run cb --json backup files "$src"
assert_rc 0 "backup again after the prune"
cp "$OUT_FILE" "$TEST_TMP/b3.json"
id3=$(json_get "$TEST_TMP/b3.json" '["id"]')
assert_cmp "$(data_lists "$n0")" -ge 1 "after a prune the cache is invalid: data/ is listed"
assert_cmp "$(json_get "$TEST_TMP/b3.json" '["stats"]["chunksNew"]')" -ge 250 \
    "no deduplication against pruned blobs: they are stored again"
target=$TEST_TMP/restore3
mkdir "$target"
assert_exit 0 cb restore files "$id3" --target "$target"
tree_compare "$src" "$target$src"
assert_exit 0 cb check
assert_contains "$OUT" "no errors found" "check passes after prune and backup"

# --- a pack deleted behind the program's back --------------------------------------------------
n0=$(log_mark)
run cb list
assert_eq 0 "$(data_lists "$n0")" "(the cache is valid again)"
# the packs the backup after the prune wrote (all its blobs: nothing was deduplicated)
pack_names >"$TEST_TMP/packs.after"
comm -13 "$TEST_TMP/packs.before" "$TEST_TMP/packs.after" >"$TEST_TMP/packs.lost"
assert_cmp "$(wc -l <"$TEST_TMP/packs.lost")" -ge 1 "the backup wrote packs"
while read -r p; do rm -f "$S3_DIR/bkt/repo/$p"._S3rver_*; done <"$TEST_TMP/packs.lost"
vname=$(head -1 "$TEST_TMP/packs.lost")
run cb list
assert_rc 0 "list (an open does not notice the lost pack: the documented trade-off)"
run cb --json check
assert_rc 4 "check reports the lost pack (damage)"
assert_contains "$OUT" "$vname" "check names a lost pack"
assert_exit 4 cb verify "$id3"

# check listed data/ and refreshed the cache: the next backup stores the lost blobs again
run cb --json backup files "$src"
assert_rc 0 "backup after the loss"
cp "$OUT_FILE" "$TEST_TMP/b4.json"
id4=$(json_get "$TEST_TMP/b4.json" '["id"]')
assert_cmp "$(json_get "$TEST_TMP/b4.json" '["stats"]["chunksNew"]')" -ge 250 "the lost packs' blobs are stored again"
target=$TEST_TMP/restore4
mkdir "$target"
assert_exit 0 cb restore files "$id4" --target "$target"
tree_compare "$src" "$target$src"

test_done

#!/usr/bin/env bash
# Backups whose files did not change share their parent's entries stream, and the walk of
# check and prune reads and parses such a stream once, replaying its references for the
# others: check counts every backup's references all the same, names every backup that
# needs damaged data or shares a stream that cannot be read (each with its own error), says
# the same with one thread as with several, in list order; prune keeps what sharing backups
# need.
source "$(dirname "$0")/lib.sh"

# Two trees that share one file (seeded: the same bytes on every run).
mkdir -p "$TEST_TMP/a/sub" "$TEST_TMP/b"
python3 - "$TEST_TMP" <<'EOF'
import random, sys
random.seed(20261201)
d = sys.argv[1]
common = random.randbytes(3 << 20)
open(d + "/a/common.bin", "wb").write(common)
open(d + "/b/common.bin", "wb").write(common)
open(d + "/a/sub/small.txt", "w").write("small\n")
open(d + "/b/other.bin", "wb").write(random.randbytes(300000))
EOF
init_repo

# refs WHEN: check, which must pass; sets REFS to the references it counted
refs() {
    run cb --json check
    assert_rc 0 "check $1"
    REFS=$(json_get "$OUT_FILE" '["stats"]["blobReferences"]')
}
reused() { json_get "$1" '["stats"]["reused"]["manifest"]'; }
# ids ID...: sorted, on one line
ids() { printf '%s\n' "$@" | sort | paste -sd ' '; }
# named REPORT: the backups the report's errors name, sorted, on one line
named() { json_eval "$1" '" ".join(sorted({b for i in d["errors"] for b in i["backups"]}))'; }
# listed: the backups in list order, on one line
listed() {
    run cb --json list
    json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)'
}

backup_json "$TEST_TMP/a1.json" "$TEST_TMP/a"
assert_rc 0 "backup a1"
packs_a=$(list_packs)
refs "after a1"
ra=$REFS
assert_match '^[1-9][0-9]*$' "$ra" "a1 references blobs"
backup_json "$TEST_TMP/a2.json" --incremental "$TEST_TMP/a"
assert_rc 0 "backup a2"
a2=$BACKUP_ID
assert_eq true "$(reused "$TEST_TMP/a2.json")" "a2 shares a1's entries stream"
refs "after a2"
assert_eq $((2 * ra)) "$REFS" "a2's references are counted as a1's"
backup_json "$TEST_TMP/b1.json" "$TEST_TMP/b"
assert_rc 0 "backup b1"
b1=$BACKUP_ID
refs "after b1"
rb=$((REFS - 2 * ra))
assert_match '^[1-9][0-9]*$' "$rb" "b1 references blobs"
backup_json "$TEST_TMP/b2.json" --incremental "$TEST_TMP/b"
assert_rc 0 "backup b2"
b2=$BACKUP_ID
assert_eq true "$(reused "$TEST_TMP/b2.json")" "b2 shares b1's entries stream"
# a third backup of a, after b's, so that the sharing ones are not neighbours in the list
backup_json "$TEST_TMP/a3.json" --incremental "$TEST_TMP/a"
a3=$BACKUP_ID
assert_eq true "$(reused "$TEST_TMP/a3.json")" "a3 shares the stream too"
refs "after a3"
assert_eq $((3 * ra + 2 * rb)) "$REFS" "every backup's references counted once each"
assert_exit 0 cb check --read-data

# --- prune keeps what backups that still share a stream need --------------------------
# --keep-last 2 per group of paths: a1 goes, a2 and a3 (sharing a1's stream) stay
assert_exit 0 cb forget --keep-last 2 --prune --max-unused 0
assert_eq "$a2 $b1 $b2 $a3" "$(listed)" "a1 is forgotten, the others kept"
refs "after the prune"
assert_eq $((2 * ra + 2 * rb)) "$REFS" "the sharing backups' references after the prune"
assert_exit 0 cb check --read-data
for id in "$a2" "$a3"; do
    rm -rf "$TEST_TMP/r"
    mkdir "$TEST_TMP/r"
    assert_exit 0 cb restore files "$id" --target "$TEST_TMP/r"
    tree_compare "$TEST_TMP/a" "$TEST_TMP/r$TEST_TMP/a"
done

# --- damage in data that every backup needs (the shared file: the largest pack) -------
largest=$(list_packs | xargs -d '\n' ls -S | head -n 1)
cp "$largest" "$TEST_TMP/pack.orig"
flip_byte "$largest"
order=$(listed)
for t in 1 2; do
    run cb --json --threads $t check --read-data
    assert_rc 4 "check --read-data --threads $t: damage"
    cp "$OUT_FILE" "$TEST_TMP/report-$t.json"
    assert_eq "$(ids "$a2" "$a3" "$b1" "$b2")" "$(named "$TEST_TMP/report-$t.json")" \
        "threads $t: every backup is named"
    assert_eq "$order" "$(json_eval "$TEST_TMP/report-$t.json" \
        '" ".join(i["backups"][0] for i in d["errors"] if i["backups"] and "needs blobs" in i["error"])')" \
        "threads $t: one finding per backup, in list order"
done
assert_true "one thread and two give the same report, in the same order" python3 -c \
    'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' \
    "$TEST_TMP/report-1.json" "$TEST_TMP/report-2.json"
cp "$TEST_TMP/pack.orig" "$largest"
assert_exit 0 cb check --read-data

# --- a shared entries stream that cannot be read: each sharer gets its own error ---------
# Every pack a1 wrote (its data and its entries stream) truncated: a2 and a3 cannot read
# their entries (each says so itself: a replay would not say it), b1 and b2 can, and need
# the shared file's damaged blobs.
kept_a=$(comm -12 <(printf '%s\n' "$packs_a" | sort) <(list_packs))
assert_ne "" "$kept_a" "a1's packs are still there"
for p in $kept_a; do
    cp "$p" "$p.keep"
    truncate -s 100 "$p"
done
run cb --json check
assert_rc 4 "check: a1's packs truncated"
# the backups with an error of their own saying that their entries cannot be read
unreadable() {
    json_eval "$OUT_FILE" '" ".join(sorted(i["backups"][0] for i in d["errors"]
        if i["backups"] and i["error"].startswith("backup %s: snapshot " % i["backups"][0])))'
}
assert_eq "$(ids "$a2" "$a3")" "$(unreadable)" "a2 and a3 each cannot read their entries, b1 and b2 can"
assert_eq "$(ids "$a2" "$a3" "$b1" "$b2")" "$(named "$OUT_FILE")" "every backup is named"
for p in $kept_a; do mv "$p.keep" "$p"; done
assert_exit 0 cb check --read-data

test_done

#!/usr/bin/env bash
# Backups whose files did not change share their parent's entries stream, and the walk of
# check and prune reads and parses such a stream once, replaying its references for the
# others: check counts every backup's references all the same, names every backup that
# shares a damaged stream or needs damaged data, blames nothing on the others, and says the
# same with one thread as with several.
source "$(dirname "$0")/lib.sh"

# Two trees that share no data (seeded: the same bytes on every run).
mkdir -p "$TEST_TMP/a/sub" "$TEST_TMP/b"
python3 - "$TEST_TMP" <<'EOF'
import random, sys
random.seed(20261201)
d = sys.argv[1]
open(d + "/a/scan.bin", "wb").write(random.randbytes(3 << 20))
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

backup_json "$TEST_TMP/a1.json" "$TEST_TMP/a"
assert_rc 0 "backup a1"
a1=$BACKUP_ID
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
# a third backup of a, in between in time, so that the sharing ones are not neighbours
backup_json "$TEST_TMP/a3.json" --incremental "$TEST_TMP/a"
a3=$BACKUP_ID
assert_eq true "$(reused "$TEST_TMP/a3.json")" "a3 shares the stream too"
refs "after a3"
assert_eq $((3 * ra + 2 * rb)) "$REFS" "every backup's references counted once each"
assert_exit 0 cb check --read-data

# ids ID...: sorted, on one line
ids() { printf '%s\n' "$@" | sort | paste -sd ' '; }
# named REPORT: the backups the report's errors name, sorted, on one line
named() { json_eval "$1" '" ".join(sorted({b for i in d["errors"] for b in i["backups"]}))'; }

# --- damage in a pack that only tree a's backups need ----------------------------------
largest=$(printf '%s\n' "$packs_a" | xargs -d '\n' ls -S | head -n 1)
cp "$largest" "$TEST_TMP/pack.orig"
flip_byte "$largest"
for t in 1 2; do
    run cb --json --threads $t check --read-data
    assert_rc 4 "check --read-data --threads $t: damage"
    cp "$OUT_FILE" "$TEST_TMP/report-$t.json"
    assert_eq "$(ids "$a1" "$a2" "$a3")" \
        "$(named "$TEST_TMP/report-$t.json")" "threads $t: every backup of a is named, none of b"
done
assert_true "one thread and two give the same report, in the same order" python3 -c \
    'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' \
    "$TEST_TMP/report-1.json" "$TEST_TMP/report-2.json"
cp "$TEST_TMP/pack.orig" "$largest"
assert_exit 0 cb check --read-data

# --- a shared entries stream that cannot be read: every backup sharing it is named -------
# The stream's chunks sit in the last pack a1 wrote (its metadata comes last); a truncated
# copy of every pack of a loses them whichever it is.
for p in $packs_a; do cp "$p" "$p.keep"; truncate -s 100 "$p"; done
run cb --json check
assert_rc 4 "check: a's packs truncated"
assert_eq "$(ids "$a1" "$a2" "$a3")" \
    "$(named "$OUT_FILE")" "every backup sharing the unreadable stream is named, none of b"
for p in $packs_a; do mv "$p.keep" "$p"; done
assert_exit 0 cb check --read-data

# --- prune keeps what a shared stream needs after the first sharer is forgotten ----------
assert_exit 0 cb forget --keep-last 1 --prune --max-unused 0
run cb --json list
assert_eq "$(ids "$a3" "$b2")" "$(json_eval "$OUT_FILE" '" ".join(sorted(b["id"] for b in d))')" "a3 and b2 are kept"
assert_exit 0 cb check --read-data
mkdir "$TEST_TMP/r"
assert_exit 0 cb restore files "$a3" --target "$TEST_TMP/r"
tree_compare "$TEST_TMP/a" "$TEST_TMP/r$TEST_TMP/a"

test_done

#!/usr/bin/env bash
# A blob stored in two packs (a backup that stored it again while the pack of its first copy
# was missing, then put back; backups running side by side; packs put back from a copy) keeps
# both copies listed across a prune. Prune listed one copy only: once that one was found
# damaged, the other was invisible (the restore that needed it failed), and when the backup
# that had stored the second copy was forgotten, the next prune deleted its pack as unused,
# taking the only sound copy of a blob a kept backup needs (found by a review). Checked: after
# a prune each copy alone restores the first backup (the pack of the other moved away), and
# after the damage of one copy, forget and prune, the first backup restores from the other. (A
# pack that holds nothing used but such copies still goes: that is space reclaimed.)
source "$(dirname "$0")/lib.sh"

init_repo
mkdir -p "$TEST_TMP/s1" "$TEST_TMP/s2"
seeded_bytes 300000 prune-dups/F >"$TEST_TMP/s1/F"
seeded_bytes 100000 prune-dups/G >"$TEST_TMP/s1/G" # backup 1's alone: its pack stays
cp "$TEST_TMP/s1/F" "$TEST_TMP/s2/F"
seeded_bytes 200000 prune-dups/H >"$TEST_TMP/s2/H" # smaller than F: F is each pack's largest blob

backup_json "$TEST_TMP/b1.json" --threads 1 "$TEST_TMP/s1"
assert_rc 0 "backup 1 (F, G)"
id1=$BACKUP_ID
A=$(list_packs | xargs -d '\n' ls -S | head -n 1) # F's and G's data
mv "$A" "$TEST_TMP/A.aside"
backup_json "$TEST_TMP/b2.json" --threads 1 --full "$TEST_TMP/s2"
assert_rc 0 "backup 2 (F again, its first copy's pack missing; H)"
id2=$BACKUP_ID
mv "$TEST_TMP/A.aside" "$A"
N=$(list_packs | grep -v -x -F "$A" | xargs -d '\n' ls -S | head -n 1) # F's second copy, H
assert_ne "" "$N" "backup 2 wrote a pack of its own"
# (--max-unused 100: no pack rewritten, so that both copies stay; a copy in a pack that is
# rewritten or deleted goes, as any unused data)
run cb prune --max-unused 100
assert_rc 0 "prune with F stored in two packs"
assert_true "both packs are kept" test -e "$A" -a -e "$N"

# each copy alone restores F: the index lists it in both packs
restore_without() {
    mv "$1" "$TEST_TMP/aside"
    rm -rf "$TEST_TMP/r"
    mkdir "$TEST_TMP/r"
    run cb restore files "$id1" --target "$TEST_TMP/r" --include "$TEST_TMP/s1/F"
    mv "$TEST_TMP/aside" "$1"
}
restore_without "$A"
assert_rc 0 "backup 1 restores with the pack of F's first copy gone" "$(_last_ctx)"
assert_true "... F as it was" cmp "$TEST_TMP/s1/F" "$TEST_TMP/r$TEST_TMP/s1/F"
restore_without "$N"
assert_rc 0 "backup 1 restores with the pack of F's second copy gone" "$(_last_ctx)"
assert_true "... F as it was" cmp "$TEST_TMP/s1/F" "$TEST_TMP/r$TEST_TMP/s1/F"

# the copy readers take damaged (and found so by check: it names backup 1), backup 2
# forgotten, prune: the other copy stays. Which copy readers take depends on the order the
# index lists the packs in: the one in A is damaged first; when check does not name backup 1
# (readers take F from N), A is mended and the copy in N damaged instead.
flip_largest() { # PACK: a byte in the middle of its largest blob (F's copy)
    run cb --json debug pack "$1"
    flip_byte "$1" "$(json_eval "$OUT_FILE" '(lambda b: b["offset"] + b["length"] // 2)(max(d["blobs"], key=lambda b: b["length"]))')"
}
names_id1() { json_eval "$OUT_FILE" "any('$id1' in e['backups'] for e in d['errors'])"; }
flip_largest "$A"
run cb --json check --read-data
assert_rc 4 "check --read-data finds the damaged pack"
if [[ $(names_id1) != true ]]; then
    flip_largest "$A" # the same byte again: A whole
    flip_largest "$N"
    run cb --json check --read-data
fi
# (asserted after the branch, whichever order the packs came in: the count of assertions is
# the same in every run)
assert_rc 4 "check --read-data finds the damaged copy that readers take"
assert_eq true "$(names_id1)" "check names backup 1: the copy it reads is damaged"
assert_exit 0 cb --quiet forget "$id2"
run cb prune
assert_rc 0 "prune after forgetting backup 2" "$(_last_ctx)"
rm -rf "$TEST_TMP/r"
mkdir "$TEST_TMP/r"
run cb restore files "$id1" --target "$TEST_TMP/r"
assert_rc 0 "backup 1 restores from the second copy" "$(_last_ctx)"
assert_true "... F as it was" cmp "$TEST_TMP/s1/F" "$TEST_TMP/r$TEST_TMP/s1/F"
test_done

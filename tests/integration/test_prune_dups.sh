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
seeded_bytes 300000 prune-dups/H >"$TEST_TMP/s2/H"

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

# the first copy damaged (found so when the index reads F there), backup 2 forgotten,
# prune: the second copy stays
run cb --json debug pack "$A"
assert_rc 0 "debug pack A"
flip_byte "$A" "$(json_eval "$OUT_FILE" '(lambda b: b["offset"] + b["length"] // 2)(max(d["blobs"], key=lambda b: b["length"]))')"
run cb check --read-data
assert_match '^(0|4)$' "$RC" "check --read-data ran (exit 4 when it reads F's first copy)"
assert_exit 0 cb --quiet forget "$id2"
run cb prune
assert_rc 0 "prune after forgetting backup 2" "$(_last_ctx)"
rm -rf "$TEST_TMP/r"
mkdir "$TEST_TMP/r"
run cb restore files "$id1" --target "$TEST_TMP/r"
assert_rc 0 "backup 1 restores from the second copy" "$(_last_ctx)"
assert_true "... F as it was" cmp "$TEST_TMP/s1/F" "$TEST_TMP/r$TEST_TMP/s1/F"
test_done

#!/usr/bin/env bash
# Compaction of verification records (docs/REPOSITORY-FORMAT.md, "Records"): prune folds the
# verify records into one compacted record, keeping per backup its newest 20 and its newest
# failure, dropping those of forgotten backups; `list` and `show` say the same before and
# after; a prune killed between writing the compacted record and deleting the folded files
# (CARIS_TEST_RECORD_COMPACT_CRASH_AT) leaves a repository that reads the same, without
# duplicates; a backup whose last verification failed is still shown damaged afterwards; a
# verification dated ahead by a wrong clock does not hide a later failure.
source "$(dirname "$0")/lib.sh"

REPO=$BACKUP_DIR/repository
init_repo
record_files() { find "$REPO/records/verify" -type f ! -name '.*' | wc -l; }

# three backups of one directory whose only file changes (random, so packs are not shared)
mkdir -p "$TEST_TMP/src"
ids=()
for n in 1 2 3; do
    seeded_bytes $((30000 + n)) "records/data$n" >"$TEST_TMP/src/data.bin"
    before_packs=$(list_packs)
    backup_json "$TEST_TMP/b$n.json" "$TEST_TMP/src"
    assert_rc 0 "backup $n"
    ids+=("$BACKUP_ID")
    if ((n == 1)); then
        # the pack and place of backup 1's file data (the blob of 30001 bytes)
        for pk in $(comm -13 <(echo "$before_packs") <(list_packs)); do
            blob=$(cd "$REPO" && "$CARIS_BIN" debug pack "${pk#"$REPO"/}" | awk '$3 == 30001 {print $1, $2}')
            [[ -n $blob ]] && pack1=$pk blob1=$blob
        done
    fi
done
assert_ne "" "${pack1:-}" "found the pack of backup 1's data"
read -r off len <<<"${blob1:-0 0}"

# 22 verifications of each backup
for ((i = 0; i < 22; i++)); do
    run cb verify --all
    [[ $RC == 0 ]] || break
done
assert_rc 0 "22 runs of verify --all"
# backup 1 found damaged once (a byte of its data flipped, then flipped back: the record
# stays, the repository is whole again, so prune can run)
flip_byte "$pack1" $((off + len / 2))
run cb verify "${ids[0]}"
assert_rc 4 "verify of backup 1 with a flipped byte: exit 4"
flip_byte "$pack1" $((off + len / 2))
run cb verify "${ids[1]}"
assert_rc 0 "one more verification of backup 2"
assert_eq 68 "$(record_files)" "68 verify record files (22 x 3 + 2)"

statuses() { # the list's status and last verification (time, ok) of each backup
    run cb --json list
    json_eval "$OUT_FILE" '" ".join("%s:%s:%s:%s" % (b["id"], b["status"], b["lastVerification"]["time"], b["lastVerification"]["ok"]) for b in d)'
}
history() { # number of verifications `show` lists for a backup, and how many are distinct
    run cb --json show "$1"
    python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))["verifications"]
print(len(v), len(set(json.dumps(x, sort_keys=True) for x in v)))' "$OUT_FILE"
}
want=$(statuses)
assert_match "^${ids[0]}:damaged:.*:False ${ids[1]}:ok:.*:True ${ids[2]}:ok:.*:True$" "$want" \
    "before compaction: backup 1 damaged (its last verification failed), 2 and 3 ok"
assert_eq "23 23" "$(history "${ids[1]}")" "before compaction: show lists backup 2's 23 verifications"

# --- a prune killed right after writing the compacted record --------------------------------
run env CARIS_TEST_RECORD_COMPACT_CRASH_AT=1 "$CARIS_BIN" prune
assert_rc 137 "prune killed after writing the compacted record"
assert_eq 69 "$(record_files)" "the compacted record written, nothing deleted yet"
assert_eq "$want" "$(statuses)" "list after the kill: the same statuses and last verifications"
assert_eq "23 23" "$(history "${ids[1]}")" "show after the kill: backup 2's verifications once each"
# ... and killed again halfway through the deletions
run env CARIS_TEST_RECORD_COMPACT_CRASH_AT=30 "$CARIS_BIN" prune
assert_rc 137 "prune killed after 29 deletions"
assert_eq 41 "$(record_files)" "69 - 29 deleted + 1 written"
assert_eq "$want" "$(statuses)" "list after the second kill: the same"
# (the deleted files' records beyond the newest 20 are gone: 20 to 23 are left, once each)
assert_match "^(20 20|21 21|22 22|23 23)$" "$(history "${ids[1]}")" "show after the second kill: no duplicates"
run cb check
assert_rc 0 "check after the kills: the repository is whole"

# --- a whole compaction ---------------------------------------------------------------------
run cb --json prune
assert_rc 0 "prune"
cp "$OUT_FILE" "$TEST_TMP/prune.json"
assert_eq 1 "$(record_files)" "prune folded every verify record into one file"
assert_eq "60" "$(json_eval "$TEST_TMP/prune.json" 'd["records"]["after"]')" \
    "prune's report: 60 records kept (20 per backup)"
assert_eq "$want" "$(statuses)" "list after compaction: the same statuses and last verifications"
assert_eq "20 20" "$(history "${ids[1]}")" "show after compaction: backup 2's newest 20 verifications"
run cb list
assert_match "${ids[0]} .* damaged" "$(grep -F "${ids[0]}" <<<"$OUT")" "list (human) still shows backup 1 damaged"
run cb --json prune
assert_eq 1 "$(record_files)" "a second prune leaves the compacted record alone"
assert_eq "0 0" "$(json_eval "$OUT_FILE" '"%d %d" % (d["records"]["filesBefore"] - d["records"]["filesAfter"], d["records"]["before"] - d["records"]["after"])')" \
    "a second prune: nothing folded or dropped"

# --- an old failure is kept beyond the bound --------------------------------------------------
for ((i = 0; i < 21; i++)); do
    run cb verify "${ids[0]}"
    [[ $RC == 0 ]] || break
done
assert_rc 0 "21 more verifications of backup 1"
run cb --json prune
assert_rc 0 "prune"
run cb --json show "${ids[0]}"
assert_eq "21 1" "$(json_eval "$OUT_FILE" '"%d %d" % (len(d["verifications"]), sum(1 for v in d["verifications"] if not v["ok"]))')" \
    "backup 1 keeps its newest 20 verifications and its failure, older than them"
assert_eq "False" "$(json_eval "$OUT_FILE" 'str(d["verifications"][0]["ok"])')" "the failure is the oldest one shown"

# --- records of forgotten backups go ----------------------------------------------------------
run cb forget --keep-last 2 --prune
assert_rc 0 "forget the oldest backup (1) and prune"
run cb --json list
assert_eq "${ids[1]} ${ids[2]}" "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" "backups 2 and 3 are left"
run cb --json prune
assert_eq "40 40" "$(json_eval "$OUT_FILE" '"%d %d" % (d["records"]["before"], d["records"]["after"])')" \
    "only the records of backups 2 and 3 are left"

# --- a verification dated ahead (a host whose clock was wrong) does not hide a later failure:
# records are ordered by the order they were written in ("seq"), not by their clocks
seeded_bytes 30004 "records/data4" >"$TEST_TMP/src/data.bin"
before_packs=$(list_packs)
backup_json "$TEST_TMP/b4.json" "$TEST_TMP/src"
assert_rc 0 "backup 4"
id4=$BACKUP_ID
pack4="" blob4=""
for pk in $(comm -13 <(echo "$before_packs") <(list_packs)); do
    blob=$(cd "$REPO" && "$CARIS_BIN" debug pack "${pk#"$REPO"/}" | awk '$3 == 30004 {print $1, $2}')
    [[ -n $blob ]] && pack4=$pk blob4=$blob
done
assert_ne "" "$pack4" "found the pack of backup 4's data"
read -r off len <<<"${blob4:-0 0}"
run clock_ahead 1 cb verify "$id4"
assert_rc 0 "verify of backup 4 on a clock a day ahead"
flip_byte "$pack4" $((off + len / 2))
run cb verify "$id4"
assert_rc 4 "verify of backup 4 with a flipped byte, on the right clock: exit 4"
status4() { # backup 4's status in list, and whether its last verification was ok
    run cb --json list
    json_eval "$OUT_FILE" '" ".join("%s %s" % (b["status"], b["lastVerification"]["ok"]) for b in d if b["id"] == "'"$id4"'")'
}
assert_eq "damaged False" "$(status4)" \
    "list: backup 4 is damaged, its last verification the failure (not the ok dated a day later)"
run cb --json show "$id4"
assert_eq "True False" "$(json_eval "$OUT_FILE" '" ".join(str(v["ok"]) for v in d["verifications"])')" \
    "show: the failure comes after the ok dated ahead"
run cb --json forget --keep-last 1 --dry-run
assert_rc 0 "forget --keep-last 1 --dry-run"
kept_by() { json_eval "$OUT_FILE" '" ".join(",".join(b["reasons"]) for g in d["groups"] for b in g["backups"] if b["id"] == "'"$1"'")'; }
assert_match "(^|,)last(,|$)" "$(kept_by "${ids[2]}")" "retention keeps backup 3 (intact) as the last one"
assert_match "damaged" "$(kept_by "$id4")" "retention keeps the damaged backup 4 as damaged, not as the last one"
flip_byte "$pack4" $((off + len / 2))
run cb verify "$id4"
assert_rc 0 "with the byte put back, backup 4 verifies again"
assert_eq "ok True" "$(status4)" "list: backup 4 ok again (the newest record wins, whatever its date)"

test_done

#!/usr/bin/env bash
# Retention never costs the intact backups a damaged one would need: a run whose new backup
# fails its verification applies no retention (it forgot the verified backups before it, and
# the next prune deleted their data), and a backup whose last verification failed fills no
# rule's slot (it was kept as the newest of its day, and the intact one went).
source "$(dirname "$0")/lib.sh"

init_repo
mkdir -p "$TEST_TMP/src"
seeded_bytes 200000 a1 >"$TEST_TMP/src/a"
backup_json "$TEST_TMP/a.json" "$TEST_TMP/src"
A=$BACKUP_ID
assert_exit 0 cb --quiet verify "$A"
seeded_bytes 200000 a2 >"$TEST_TMP/src/a"
before=$(list_packs)
backup_json "$TEST_TMP/b.json" "$TEST_TMP/src"
B=$BACKUP_ID
# the larger of its two new packs holds the data (the other, the manifest's entry list)
pack=$(comm -13 <(printf '%s\n' "$before") <(list_packs) | xargs -r ls -S | head -n 1)
assert_ne "" "$pack" "backup B wrote a pack"
flip_byte "$pack" 1000 # inside B's new chunk, which the next backup reuses

# --- a run whose backup fails its verification: no retention -------------------------------
BACKUP_FILES_PATHS=$TEST_TMP/src run cb --json run-now incremental
assert_rc 4 "run-now: the new backup fails its verification"
assert_json "$OUT_FILE" 'not any(s["step"] == "retention" for s in d["steps"])' \
    "no retention step after a failed verification"
ids=$(list_ids)
assert_contains "$ids" "$A" "the verified backup before it is still there"
assert_contains "$ids" "$B" "and so is the one before the run"
C=$(cb --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
assert_ne "$B" "$C" "the run made a backup"
run cb --json list
assert_eq damaged "$(json_eval "$OUT_FILE" '[b["status"] for b in d if b["id"] == "'"$C"'"][0]')" \
    "the run's backup is recorded damaged"

# --- forget by policy: the damaged backup takes no slot --------------------------------------
run cb --json forget --keep-last 1 --dry-run
assert_rc 0 "forget --keep-last 1 --dry-run"
keep_of() { json_eval "$OUT_FILE" '[",".join(x["reasons"]) if x["keep"] else "forget" for g in d["groups"] for x in g["backups"] if x["id"] == "'"$1"'"][0]'; }
assert_eq damaged "$(keep_of "$C")" "the damaged backup is kept, counted by no rule"
assert_eq "last,newest" "$(keep_of "$B")" "the newest intact backup is the one kept by --keep-last 1"
assert_eq forget "$(keep_of "$A")" "the older one goes"
assert_json "$OUT_FILE" 'any("'"$C"'" in w and "failed its last verification" in w for w in d["warnings"])' \
    "a warning names the damaged backup"
run cb forget --keep-last 1
assert_rc 0 "forget --keep-last 1"
assert_contains "$OUT" "damaged" "the text output gives the reason"
ids=$(list_ids)
assert_contains "$ids" "$B" "the intact backup stays"
assert_not_contains "$ids" "$A" "the older one was forgotten"
test_done

#!/usr/bin/env bash
# The state record and the local copy of it (issue 14, "deletion, replay and rollback"): a
# snapshot deleted from the repository, and a rollback of the whole repository to an older
# copy, are reported by `list` (stderr, and `list --json`) and are errors for `check`,
# naming the backups; a forgotten snapshot put back is reported as replayed, one whose forget
# was killed as "removing" (prune finishes it). Then (issue 14, "deduplication trusts the index"): a lost pack
# does not break the next backup, which stores its blobs again.
source "$(dirname "$0")/lib.sh"

src=$TEST_TMP/src
mkdir -p "$src/sub"
python3 - "$src" <<'EOF'
import os, random, sys
rng = random.Random(14)
for i in range(6):
    with open(os.path.join(sys.argv[1], "sub" if i % 2 else "", "f%d" % i), "wb") as f:
        f.write(rng.randbytes(300_000 + 7919 * i))
EOF

init_repo
backup_json "$TEST_TMP/b1.json" --full "$src"
assert_rc 0 "first backup"
id1=$BACKUP_ID
backup_json "$TEST_TMP/b2.json" --full "$src"
assert_rc 0 "second backup"
id2=$BACKUP_ID
assert_eq "" "$ERR" "no warning on a healthy repository"

local_copy=$(find "$BACKUP_DIR/metadata" -name 'state-*.json')
assert_true "local copy of the state record under BACKUP_DIR/metadata" test -f "$local_copy"
assert_eq 600 "$(stat -c %a "$local_copy")" "local copy is mode 0600"
assert_eq 1 "$(find "$REPO/state" -type f ! -name '.*' | wc -l)" "one state object"

run cb --json list
assert_rc 0 "list --json"
assert_eq "recorded recorded" "$(json_eval "$OUT_FILE" '" ".join(b["record"] for b in d)')" "both backups recorded"

# a local copy that is not JSON: said so (it was called "not a state record of repository X")
cp "$local_copy" "$TEST_TMP/local.kept"
printf '{garbage' >"$local_copy"
run cb list
assert_contains "$ERR" "cannot be read (not JSON): until it is moved away" "a garbled local copy is named as such"
# check said "no errors found" and nothing more, while list's hint sent the user to it
run cb --json check
assert_rc 0 "check with a garbled local copy (the repository is sound)"
assert_eq "$local_copy" "$(json_eval "$OUT_FILE" 'd["warnings"][0]["object"]')" "check warns about the local copy"
assert_contains "$(json_eval "$OUT_FILE" 'd["warnings"][0]["error"]')" "until it is moved away" "... saying what to do"
assert_eq "$local_copy" "$(json_eval "$OUT_FILE" 'd["state"]["localError"]["file"]')" "its state report names the file"
cp "$TEST_TMP/local.kept" "$local_copy"
run cb --json check
assert_eq "[]" "$(json_eval "$OUT_FILE" 'd["warnings"]')" "with the copy put back, no warning"

# --- a snapshot deleted from the repository -----------------------------------------------
# Find id1's snapshot: remove each file in turn and see which backup disappears.
victim=""
for f in "$REPO"/snapshots/*; do
    mv "$f" "$TEST_TMP/held"
    ids=$("$CARIS_BIN" --json list 2>/dev/null | python3 -c 'import json,sys; print(" ".join(b["id"] for b in json.load(sys.stdin) if b.get("record") != "missing"))')
    mv "$TEST_TMP/held" "$f"
    if [[ $ids == "$id2" ]]; then victim=$f; fi
done
assert_ne "" "$victim" "found the first backup's snapshot file"

mv "$victim" "$TEST_TMP/held"
run cb list
assert_rc 0 "list with a deleted snapshot still lists"
assert_contains "$ERR" "warning:" "list warns on stderr"
assert_contains "$ERR" "$id1" "the warning names the deleted backup"
assert_contains "$OUT" "MISSING" "the table shows the backup as missing"
run cb --json list
assert_eq "missing" "$(json_eval "$OUT_FILE" '[b["record"] for b in d if b["id"] == "'"$id1"'"][0]')" \
    "list --json: the deleted backup has record \"missing\""
run cb check
assert_rc 4 "check: a deleted snapshot is damage"
assert_contains "$OUT" "$id1" "check names the deleted backup"
assert_contains "$OUT" "snapshot is gone" "check says what happened"
# the daemon opens the repository once for many runs: its log says what the opening found
# (it dropped it, so an unattended machine never told of the deleted backup)
run env BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off \
    CARIS_TEST_CLOCK=2026-03-01T12:00:00Z,2026-03-01T12:01:00Z "$CARIS_BIN" daemon
assert_rc 0 "a daemon on the test clock, for a minute"
assert_match "warning repository: snapshots/[0-9a-f]+: backup $id1 is in the state record but its snapshot is gone" \
    "$ERR" "the daemon's log names the deleted backup"
assert_contains "$ERR" "run \`caris-backup check\`" "... and says what to run"
mv "$TEST_TMP/held" "$victim"
assert_exit 0 cb check

# --- a rollback of the whole repository -----------------------------------------------------
cp -a "$REPO" "$TEST_TMP/old-repo"
backup_json "$TEST_TMP/b3.json" --full "$src"
assert_rc 0 "third backup"
id3=$BACKUP_ID
rm -rf "$REPO"
mv "$TEST_TMP/old-repo" "$REPO"
run cb list
assert_rc 0 "list after a rollback"
assert_contains "$ERR" "went back in time" "list warns that the repository went back"
assert_contains "$ERR" "$id3" "and names the backup it lost"
run cb --json list
assert_eq "true" "$(json_eval "$OUT_FILE" 'all(b.get("repositoryRolledBack") for b in d)')" "list --json: repositoryRolledBack"
assert_eq "missing" "$(json_eval "$OUT_FILE" '[b["record"] for b in d if b["id"] == "'"$id3"'"][0]')" \
    "list --json: the lost backup is listed as missing"
run cb check
assert_rc 4 "check after a rollback"
assert_contains "$OUT" "went back in time" "check: counter went backwards"
assert_contains "$OUT" "$id3" "check names the lost backup"
run cb --json check
assert_eq "true" "$(json_eval "$OUT_FILE" 'd["state"]["rolledBack"]')" "check --json: state.rolled_back"
# Removing the local copy accepts the older repository (an intended restore of it).
rm "$local_copy"
assert_exit 0 cb check

# --- backups at the same time: every one recorded, nothing reported --------------------------
rm -rf "$REPO" "$BACKUP_DIR/metadata"
assert_exit 0 cb --quiet init
gate=$TEST_TMP/gate
mkfifo "$gate"
exec {gate_fd}<>"$gate"
pids=()
for n in 1 2 3 4; do
    mkdir -p "$TEST_TMP/c$n"
    printf 'tree %s\n' "$n" >"$TEST_TMP/c$n/f"
    # shellcheck disable=SC2016 # $1 and $@ are the inner shell's
    bg_start bash -c 'read -r _ <"$1"; shift; exec "$@"' _ "$gate" "$CARIS_BIN" --quiet backup files "$TEST_TMP/c$n"
    pids+=("$BG_PID")
done
printf 'go\ngo\ngo\ngo\n' >&"$gate_fd"
for p in "${pids[@]}"; do
    wait "$p"
    assert_eq 0 "$?" "concurrent backup exits 0"
done
exec {gate_fd}>&-
run cb --json list
assert_eq "recorded recorded recorded recorded" "$(json_eval "$OUT_FILE" '" ".join(b["record"] for b in d)')" \
    "four concurrent backups: all four recorded"
assert_eq "" "$ERR" "no warning after concurrent backups"
assert_exit 0 cb check

# --- a forgotten backup put back (replayed) ------------------------------------------------
rm -rf "$REPO" "$BACKUP_DIR/metadata"
init_repo
backup_json "$TEST_TMP/f1.json" --full "$src"
assert_rc 0 "backup to be forgotten"
fid1=$BACKUP_ID
backup_json "$TEST_TMP/f2.json" --full "$src"
assert_rc 0 "backup to keep"
fid2=$BACKUP_ID
cp -a "$REPO/snapshots" "$TEST_TMP/snapshots-before-forget"
assert_exit 0 cb forget --keep-last 1
run cb --json list
assert_eq "$fid2" "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" "forget removed the older backup"
cp -n "$TEST_TMP/snapshots-before-forget"/* "$REPO/snapshots/" # an old copy put back
run cb --json list
assert_eq "replayed" "$(json_eval "$OUT_FILE" '[b["record"] for b in d if b["id"] == "'"$fid1"'"][0]')" \
    "list --json: the forgotten backup put back has record \"replayed\""
run cb list
assert_contains "$OUT" "REPLAYED" "the table marks it"
run cb check
assert_rc 4 "check: a forgotten backup put back is an error"
assert_contains "$OUT" "$fid1" "check names it"
assert_exit 0 cb forget --keep-last 1
run cb check
assert_rc 0 "forget removes it again; check is clean"

# --- an older copy of the whole repository put back on purpose, then accepted ----------------
# (docs/BACKUP_RECOVERY.md, "Checking backups": remove the local copy of the state record to
# accept it.) check, run before (as every warning's hint says), must not record the backups
# the older copy still has as damaged: they would stay damaged once accepted, and count for no
# retention rule.
rm -rf "$REPO" "$BACKUP_DIR/metadata"
init_repo
backup_json "$TEST_TMP/o1.json" --full "$src"
assert_rc 0 "backup that the older copy keeps"
oid1=$BACKUP_ID
backup_json "$TEST_TMP/o2.json" --full "$src"
assert_rc 0 "newer backup"
cp -a "$REPO" "$TEST_TMP/older-copy"
assert_exit 0 cb forget --keep-last 1
rm -rf "$REPO"
mv "$TEST_TMP/older-copy" "$REPO"
run cb check
assert_rc 4 "check: the older copy (a backup forgotten since is back) is an error"
assert_contains "$OUT" "$oid1" "check names the replayed backup"
rm "$(find "$BACKUP_DIR/metadata" -name 'state-*.json')"
run cb --json list
assert_eq "ok recorded" "$(json_eval "$OUT_FILE" '[b["status"] + " " + b["record"] for b in d if b["id"] == "'"$oid1"'"][0]')" \
    "accepted: the backup check called replayed is an ordinary backup, not damaged"
assert_exit 0 cb check

# --- a forget killed between its state object and the deletion of the snapshot ---------------
# Not a finding: the record says "removing" until the file is gone; prune finishes the removal
# (before, check said DAMAGED until the same forget was run again by hand).
rm -rf "$REPO" "$BACKUP_DIR/metadata"
init_repo
seeded_bytes 400000 only-in-k1 >"$src/only-in-k1" # data only the forgotten backup needs
backup_json "$TEST_TMP/k1.json" --full "$src"
assert_rc 0 "backup whose forget is killed"
kid1=$BACKUP_ID
rm "$src/only-in-k1"
backup_json "$TEST_TMP/k2.json" --full "$src"
assert_rc 0 "backup to keep"
kid2=$BACKUP_ID
hold=$TEST_TMP/forget-hold
touch "$hold"
CARIS_TEST_FORGET_HOLD=$hold bg_start cb forget --keep-last 1
# shellcheck disable=SC2317 # called through wait_until
_forget_held() { [[ -e $hold.held ]]; }
wait_until 60 _forget_held || fail "the forget did not reach its hold" "$(_tail "$BG_ERR")"
kill -9 "$BG_PID"
wait "$BG_PID" 2>/dev/null
rm -f "$hold"
assert_eq 2 "$(find "$REPO/snapshots" -type f ! -name '.*' | wc -l)" "the killed forget left the snapshot"
run cb --json list
assert_rc 0 "list after the killed forget"
assert_eq "removing recorded" "$(json_eval "$OUT_FILE" '" ".join(b["record"] for b in d)')" \
    "list --json: the backup being forgotten has record \"removing\""
assert_contains "$ERR" "$kid1 was being removed when its forget stopped" "list warns, naming it"
assert_contains "$ERR" "caris-backup prune" "and says what finishes it"
run cb list
assert_contains "$OUT" "FORGOTTEN (its forget was interrupted" "the table marks it"
run cb --json check
assert_rc 0 "check: an interrupted forget is no damage"
assert_eq "true" "$(json_eval "$OUT_FILE" 'd["state"]["ok"]')" "check --json: the state record is ok"
assert_eq "$kid1" "$(json_eval "$OUT_FILE" '" ".join(x["id"] for x in d["state"]["removing"])')" \
    "check --json: state.removing names it"
assert_contains "$(json_eval "$OUT_FILE" '" ".join(w["error"] for w in d["warnings"])')" \
    "was being removed when its forget stopped" "check warns"
run cb --json prune --dry-run
assert_rc 0 "prune --dry-run"
assert_eq "$kid1" "$(json_eval "$OUT_FILE" '" ".join(d["removalsFinished"])')" \
    "prune --dry-run names the removal it would finish"
assert_eq 2 "$(find "$REPO/snapshots" -type f ! -name '.*' | wc -l)" "the dry run deleted nothing"
run cb --json prune
assert_rc 0 "prune"
assert_eq "$kid1" "$(json_eval "$OUT_FILE" '" ".join(d["removalsFinished"])')" \
    "prune finished the interrupted removal"
assert_cmp "$(json_eval "$OUT_FILE" 'd["packs"]["deleted"] + d["packs"]["repacked"]')" -gt 0 \
    "and freed what only that backup needed"
run cb --json list
assert_eq "$kid2" "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" "only the kept backup is left"
assert_eq "" "$ERR" "no warning any more"
run cb check
assert_rc 0 "check is clean"
assert_exit 0 cb verify "$kid2"
mkdir "$TEST_TMP/rk"
assert_exit 0 cb restore files "$kid2" --target "$TEST_TMP/rk"
tree_compare "$src" "$TEST_TMP/rk$src"

# --- retention does not count a backup whose forget was interrupted ---------------------------
# Counted, it took its day's place: the day's real backup was forgotten, and the prune that
# followed deleted both, leaving 2026-11-01 with no backup.
rm -rf "$REPO" "$BACKUP_DIR/metadata"
init_repo
ids=()
for t in 2026-11-01T08:00:00Z 2026-11-01T20:00:00Z 2026-11-02T08:00:00Z; do
    backup_json "$TEST_TMP/r.json" --time "$t" "$src"
    assert_rc 0 "backup at $t"
    ids+=("$BACKUP_ID")
done
rm -f "$hold.held"
touch "$hold"
CARIS_TEST_FORGET_HOLD=$hold bg_start cb forget "${ids[1]}"
wait_until 60 _forget_held || fail "the forget did not reach its hold" "$(_tail "$BG_ERR")"
kill -9 "$BG_PID"
wait "$BG_PID" 2>/dev/null
rm -f "$hold"
run env BACKUP_TZ=UTC "$CARIS_BIN" --json forget --keep-daily 2 --dry-run
assert_rc 0 "forget --keep-daily 2 --dry-run after the killed forget"
assert_eq "${ids[0]} ${ids[2]}" "$(json_eval "$OUT_FILE" '" ".join(sorted(b["id"] for g in d["groups"] for b in g["backups"] if b["keep"]))')" \
    "the policy keeps each day's newest backup that was not being forgotten"
assert_contains "$(json_eval "$OUT_FILE" '" ".join(d["warnings"])')" "${ids[1]} was being forgotten when its forget stopped: no rule counts it" \
    "... and counts by no rule the one being forgotten, which it names in a warning"
run env BACKUP_TZ=UTC "$CARIS_BIN" --json forget --keep-daily 2 --prune
assert_rc 0 "forget --keep-daily 2 --prune"
run cb --json list
assert_eq "${ids[0]} ${ids[2]}" "$(json_eval "$OUT_FILE" '" ".join(sorted(b["id"] for b in d))')" \
    "both days keep their backup"

# --- the state record deleted, or damaged, with no copy on this host (another host, or the
# metadata lost): a backup whose snapshot went with it was not missed, and prune deleted its data
# (exit 0). Refused now, unless accepted; accepted, the record is written again.
rm -rf "$REPO" "$BACKUP_DIR/metadata"
init_repo
seeded_bytes 300000 only-in-d1 >"$src/only-in-d1"
backup_json "$TEST_TMP/d1.json" --full "$src"
assert_rc 0 "backup whose snapshot goes with the state record"
d1_snap=$(find "$REPO/snapshots" -type f ! -name '.*') # its only snapshot file
rm "$src/only-in-d1"
backup_json "$TEST_TMP/d2.json" --full "$src"
assert_rc 0 "backup that stays"
mv "$d1_snap" "$TEST_TMP/d1.snap"
rm -rf "$REPO"/state/* "$BACKUP_DIR/metadata"/state-*
run cb --json prune --dry-run
assert_rc 4 "prune --dry-run with the state record deleted: refused (exit 4)"
assert_contains "$ERR" "the repository's state record is deleted" "it says why"
packs_before=$(find "$REPO/data" -type f ! -name '.*' | wc -l)
run cb prune
assert_rc 4 "prune: refused"
assert_eq "$packs_before" "$(find "$REPO/data" -type f ! -name '.*' | wc -l)" "nothing was deleted"
mv "$TEST_TMP/d1.snap" "$d1_snap"
mkdir "$TEST_TMP/rd1"
assert_exit 0 cb restore files "$(json_get "$TEST_TMP/d1.json" '["id"]')" --target "$TEST_TMP/rd1"
assert_eq "$(seeded_bytes 300000 only-in-d1 | sha256sum)" "$(sha256sum <"$TEST_TMP/rd1$src/only-in-d1")" \
    "put back, the backup restores whole: its data was kept"
# a damaged state object: refused; accepted, it goes and the record is whole again
obj=$(find "$REPO/state" -type f ! -name '.*' | head -n 1)
if [[ -z $obj ]]; then
    assert_exit 0 cb --quiet backup files "$src" # writes the record again
    obj=$(find "$REPO/state" -type f ! -name '.*' | head -n 1)
fi
flip_byte "$obj" 60
rm -f "$BACKUP_DIR/metadata"/state-*
run cb prune
assert_rc 4 "prune with the only state object damaged: refused (exit 4)"
assert_contains "$ERR" "the repository's state record cannot be read" "it says why"
run cb prune --accept-missing
assert_rc 0 "prune --accept-missing: accepted"
assert_contains "$ERR" "written again from the snapshots there are" "it says what it did"
assert_false "the damaged object is gone" test -e "$obj"
run cb check
assert_rc 0 "check: the record is whole again"
# the same on the host that made the backups (its local copy kept): the record written again
# was at counter 1, below the copy's, and every later open said the repository went back in time
assert_exit 0 cb --quiet backup files "$src"
obj=$(find "$REPO/state" -type f ! -name '.*' | head -n 1)
flip_byte "$obj" 60
run cb prune --accept-missing
assert_rc 0 "prune --accept-missing with this host's copy kept"
run cb check
assert_rc 0 "check: the record is whole again, and not older than this host's copy"
assert_not_contains "$OUT$ERR" "went back in time" "no rollback is seen"

# --- a lost pack is stored again by the next backup -------------------------------------------
rm -rf "$REPO" "$BACKUP_DIR/metadata"
init_repo
backup_json "$TEST_TMP/p1.json" --full "$src"
assert_rc 0 "backup before losing a pack"
pid1=$BACKUP_ID
# the largest pack holds file data (manifests go to small packs of their own)
big=$(find "$REPO/data" -type f ! -name '.*' -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2)
rm "$big"
run cb check
assert_rc 4 "check: a pack is missing"
assert_contains "$OUT" "$pid1" "check names the backup that needs it"
backup_json "$TEST_TMP/p2.json" "$src"
assert_rc 0 "backup after losing a pack"
pid2=$BACKUP_ID
assert_contains "$ERR" "is missing" "the backup warns about the missing pack"
assert_cmp "$(json_get "$TEST_TMP/p2.json" '["stats"]["bytesAdded"]')" -gt 0 "the lost data is stored again"
mkdir "$TEST_TMP/r2" "$TEST_TMP/r1"
assert_exit 0 cb restore files "$pid2" --target "$TEST_TMP/r2"
tree_compare "$src" "$TEST_TMP/r2$src"
assert_exit 0 cb verify "$pid2"
# The blobs stored again are the same blobs (same ids): the earlier backup is whole again.
assert_exit 0 cb restore files "$pid1" --target "$TEST_TMP/r1"
tree_compare "$src" "$TEST_TMP/r1$src"
run cb check
assert_rc 4 "check still reports the pack that the old index lists"
assert_contains "$OUT" "pack listed in the index is missing" "check: the lost pack"
assert_eq "" "$(grep -F "needs blobs" <<<"$OUT")" "no backup needs missing blobs any more"
test_done

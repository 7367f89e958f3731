#!/usr/bin/env bash
# A copy that died holding its claim on a backup id in the destination does not stop the next
# copy of that backup: the next copy takes the stale claim over (locks/claim-<id>.take-<its
# lock>), and while the taker lives, nobody else copies the backup, `check` does not call the
# claim stale and `unlock` keeps it. A taker that dies is taken over in turn. The copy held in
# place: a lease on the source's data pack (packhold.py, a fresh one for each copy), so a copy
# waits to read it after it claimed the id, every time; kill -9 then lands with the claim held.
source "$(dirname "$0")/lib.sh"

DST=$TEST_TMP/dst
CARIS_COPY_TO_KEY=$(head -c 33 /dev/urandom | base64)
export CARIS_COPY_TO_KEY
dcb() { BACKUP_ENCRYPTION_KEY=$CARIS_COPY_TO_KEY cb --repo "$DST" "$@"; }
host=$(hostname)
claims() { find "$DST/locks" -maxdepth 1 -type f -name 'claim-*' -printf '%f\n' 2>/dev/null | LC_ALL=C sort; }

init_repo
src=$TEST_TMP/src
mkdir -p "$src"
seeded_bytes 3000000 copy-takeover >"$src/a.bin"
seq 1 50000 >"$src/numbers.txt"
backup_json_pack "$TEST_TMP/b1.json" --full "$src"
assert_rc 0 "backup"
id=$BACKUP_ID
pack=$NEW_PACK
assert_ne "" "$pack" "the backup wrote a data pack"
assert_exit 0 cb --quiet --repo "$DST" init --copy-chunker-from "$REPO"

# a lease on the data pack: a copy claims the id, then waits to read it
hold_start "$pack"
# shellcheck disable=SC2317 # called through wait_until
claim_count_is() { [[ $(claims | wc -l) -eq $1 ]]; }
# copy_to_claims N PASS FAIL: a copy in the background (BG_PID), until N claims stand
copy_to_claims() {
    bg_start cb copy --latest --to "$DST"
    if wait_until 60 claim_count_is "$1"; then
        pass "$2"
    else
        fail "$3" "$(_tail "$BG_ERR")" "$(ls -la "$DST/locks" 2>&1)"
    fi
}
# check_warnings: the warnings of the `check --json` just run, "object: error" a line
check_warnings() { json_eval "$OUT_FILE" '"\n".join(w["object"] + ": " + w["error"] for w in d["warnings"])'; }

# --- 1. a copy killed while it holds its claim ---------------------------------------------
copy_to_claims 1 "the first copy claims the backup id and blocks on the source" \
    "the first copy did not claim the id"
c1=$BG_PID
assert_eq "claim-$id" "$(claims)" "its claim names the backup id"
assert_eq "" "$(cat "$BG_ERR")" "it has said nothing yet (it waits on the source's pack)"
kill -9 "$c1"
wait "$c1"
assert_eq 137 "$?" "the first copy died of SIGKILL"
hold_release # a fresh lease for the next copy: the kernel breaks one 45 s after a reader asked
hold_start "$pack"
run dcb --json check
warn=$(check_warnings)
assert_contains "$warn" "locks/claim-$id: stale claim of copy on $host pid $c1" "check calls the dead copy's claim stale"

# --- 2. the next copy takes it over; while it lives, the claim stands ---------------------
copy_to_claims 2 "the second copy takes the stale claim over and blocks on the source" \
    "the second copy did not take the claim over"
c2=$BG_PID
take=$(claims | grep -v "^claim-$id\$")
assert_match "^claim-$id\\.take-[0-9a-f]{32}\$" "$take" "the taker's claim is the stale one's name, .take- and the dead copy's lock"
assert_true "the dead copy's claim is left in place" test -f "$DST/locks/claim-$id"
run dcb --json check
assert_rc 0 "check while the taker runs"
warn=$(check_warnings)
assert_contains "$warn" "stale lock of copy on $host pid $c1" "check still reports the dead copy's lock"
assert_not_contains "$warn" "claim" "no claim is called stale: the dead copy's is taken over, the taker's is live"
# (bounded: were it not refused, it would wait on the lease)
run timeout -k 5 120 "$CARIS_BIN" copy --latest --to "$DST"
assert_rc 9 "a third copy of the same backup is refused while the taker runs (exit 9)"
assert_contains "$ERR" "backup $id is being written into the destination by another process (copy on $host pid $c2" \
    "the refusal names the live taker"
# --all (or several ids) leaves that backup to the live taker and copies the others, then fails
# with exit 9 naming it: one claimed backup stopped the rest of the run at it
mkdir -p "$TEST_TMP/src2"
seeded_bytes 200000 copy-takeover-2 >"$TEST_TMP/src2/b.bin"
backup_json "$TEST_TMP/b2.json" --full "$TEST_TMP/src2"
assert_rc 0 "a second backup in the source"
id2=$BACKUP_ID
run timeout -k 5 120 "$CARIS_BIN" --json copy --all --to "$DST"
assert_rc 9 "copy --all while the taker writes the first backup: exit 9"
assert_contains "$ERR" "not copied by this run (the others were): $id" "... naming the backup left to the taker"
assert_eq "[false, true]" \
    "$(json_eval "$OUT_FILE" '[b["copied"] for b in sorted(d["backups"], key=lambda b: b["backupId"] != "'"$id"'")]')" \
    "the first backup was not copied by it, the second was"
assert_eq "$id2" "$(dcb --json list | python3 -c 'import json,sys; print(" ".join(b["id"] for b in json.load(sys.stdin)))')" \
    "the destination lists the second backup (the first is the taker's to write)"
run dcb --json unlock
assert_rc 0 "unlock while the taker runs"
assert_eq "locks/claim-$id locks/$take" \
    "$(json_eval "$OUT_FILE" '" ".join(sorted(k["object"] for k in d["kept"] if k["kind"] == "claim"))')" \
    "unlock keeps the taken-over claim and the taker's"
assert_eq "lock $c1" "$(json_eval "$OUT_FILE" '" ".join(k["kind"] + " " + str(k["pid"]) for k in d["removed"])')" \
    "unlock removes the dead copy's lock, and nothing else"
assert_eq "$(printf 'claim-%s\n%s' "$id" "$take")" "$(claims)" "both claims are still there"

# --- 3. the taker dies too: the next copy takes over one step further, and succeeds -------
kill -9 "$c2"
wait "$c2"
assert_eq 137 "$?" "the taker died of SIGKILL"
hold_release
run cb --json copy "$id" --to "$DST"
assert_rc 0 "a copy after two dead copies succeeds"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["copied"]')" "it copied the backup"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["verified"]')" "and verified it in the destination"
assert_eq "" "$(claims)" "no claim is left: the copy removed the ones it took over with its own"
run dcb --json check
assert_rc 0 "check of the destination"
assert_not_contains "$(json_eval "$OUT_FILE" '"\n".join(w["error"] for w in d["warnings"])')" "claim" \
    "check reports no claim"
run dcb --json unlock
assert_rc 0 "unlock removes the taker's lock"
assert_eq "lock $c2" "$(json_eval "$OUT_FILE" '" ".join(k["kind"] + " " + str(k["pid"]) for k in d["removed"])')" \
    "unlock removes the dead taker's lock, and nothing else"
mkdir "$TEST_TMP/restored"
assert_exit 0 dcb restore files "$id" --target "$TEST_TMP/restored"
tree_compare "$src" "$TEST_TMP/restored$src"
run cb copy --latest --to "$DST"
assert_rc 0 "copying again"
assert_contains "$ERR$OUT" "already there" "copying again: already there"

test_done

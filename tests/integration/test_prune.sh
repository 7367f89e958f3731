#!/usr/bin/env bash
# forget + prune on real backups: what only forgotten backups used is deleted (the
# repository shrinks by about that), every kept backup verifies and restores byte-exact,
# check --read-data is clean. prune stopped after each of its durable steps in turn (a
# test-only hook that ends the process as kill -9 would), and by real kill -9s, leaves a
# repository that check --read-data passes, whose kept backups restore, and which the next
# prune finishes. Locks: prune refuses while a backup runs, a backup refuses while prune
# holds the exclusive lock. Bad input changes nothing.
source "$(dirname "$0")/lib.sh"

assert_exit 0 cb --quiet init

# What prune counts as the repository: everything but locks (records included).
repo_bytes() { find "$REPO" -type f ! -name '.*' ! -path '*/locks/*' -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
# Everything in the repository except locks: names and sizes.
fingerprint() { (cd "$REPO" && find . -type f ! -path './locks/*' -printf '%P %s\n' | sort | md5sum); }

# Six backups: a file all share, and one 300 kB random file each that only it holds.
src=$TEST_TMP/src
mkdir -p "$src" "$TEST_TMP/states"
seeded_bytes 400000 prune/shared >"$src/shared.bin"
ids=()
for k in 1 2 3 4 5 6; do
    rm -f "$src"/only-*.bin
    seeded_bytes 300000 "prune/only-$k" >"$src/only-$k.bin"
    printf 'version %s\n' "$k" >"$src/small.txt"
    # one thread: the first backup's shared and own data share a pack (repacked below)
    run cb --threads 1 --json backup files --time "2025-01-0${k}T03:00:00Z" "$src"
    cp "$OUT_FILE" "$TEST_TMP/b$k.json"
    BACKUP_ID=$(json_get "$TEST_TMP/b$k.json" '["id"]')
    assert_rc 0 "backup $k"
    ids+=("$BACKUP_ID")
    cp -a "$src" "$TEST_TMP/states/$k"
done
assert_eq file_full_2025-01-01T03-00-00 "${ids[0]}" "--time gives the id its timestamp"
assert_eq 2025-01-06T03:00:00.000Z "$(json_get "$TEST_TMP/b6.json" '["started"]')" \
    "--time is the recorded start"

# verify_restores K...: each kept backup K verifies and restores byte-exact.
nrestores=0
verify_restores() {
    local k t
    for k in "$@"; do
        assert_exit 0 cb --quiet verify "${ids[k - 1]}"
        nrestores=$((nrestores + 1))
        t=$TEST_TMP/restore-$k-$nrestores
        assert_exit 0 cb --quiet restore files "${ids[k - 1]}" --target "$t"
        if diff -r "$TEST_TMP/states/$k" "$t$src" >/dev/null; then
            pass "backup $k restores byte-exact"
        else
            fail "backup $k restores different content" "$(diff -r "$TEST_TMP/states/$k" "$t$src" | head)"
        fi
        rm -rf "$t"
    done
}

# --- bad input changes nothing ------------------------------------------------------------
fp=$(fingerprint)
assert_exit 2 cb forget --keep-daily -1
assert_contains "$ERR" "--keep-daily" "a negative count is named"
assert_exit 2 cb forget --keep-weekly abc
assert_exit 2 cb forget --keep-within 3x
assert_contains "$ERR" "unknown unit" "an unknown duration unit is explained"
assert_exit 2 cb forget --keep-within 5
assert_contains "$ERR" "a number without its unit" "a missing unit is said to be missing (it read: unknown unit ' ')"
assert_exit 2 cb forget --keep-within ""
assert_exit 2 cb forget --type tapes
assert_exit 2 cb prune --max-unused 150
# strtod's other numbers: "nan" passed the range check and meant the default
for v in nan inf 0x10 " 5" .; do
    assert_exit 2 cb prune --dry-run --max-unused "$v"
done
assert_exit 2 cb forget --keep-last 1 extra-argument
assert_exit 2 cb backup files --time "$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)" "$src"
assert_contains "$ERR" "in the future" "a future --time is refused"
assert_exit 2 cb backup files --time yesterday "$src"
assert_contains "$ERR" "invalid time" "an unparsable --time is refused"
assert_exit 2 cb backup files --time 2025-01-03T03:00:00Z "$src"
assert_contains "$ERR" "already exists" "a --time whose id exists is refused"
BACKUP_RETENTION_DAILY=seven run cb forget --dry-run
assert_rc 6 "a malformed BACKUP_RETENTION_DAILY is a configuration error"
assert_eq "$fp" "$(fingerprint)" "bad input changed nothing in the repository"

# --- forget, dry run, then for real -------------------------------------------------------
run cb --json forget --keep-last 2 --dry-run
assert_rc 0 "forget --dry-run"
cp "$OUT_FILE" "$TEST_TMP/dry.json"
assert_eq '[true, true, false, false, false, false]' \
    "$(json_eval "$TEST_TMP/dry.json" '[b["keep"] for b in d["groups"][0]["backups"]]')" \
    "dry run: the two newest kept, newest first"
assert_eq '["last", "newest"]' \
    "$(json_eval "$TEST_TMP/dry.json" 'd["groups"][0]["backups"][0]["reasons"]')" \
    "dry run: why the newest is kept"
assert_eq "$fp" "$(fingerprint)" "forget --dry-run changed nothing"

before=$(repo_bytes)
assert_exit 0 cb --json forget --keep-last 2
assert_eq 4 "$(json_get "$OUT_FILE" '["removed"]')" "forget removed four backups"
assert_eq "${ids[4]} ${ids[5]}" "$(cb --json list | python3 -c 'import json,sys; print(" ".join(b["id"] for b in json.load(sys.stdin)))')" \
    "list shows the two kept backups"
assert_exit 7 cb verify "${ids[0]}"
# forget removed snapshots only: the data stays until prune
assert_cmp "$(repo_bytes)" -gt $((before - 20000)) "forget alone frees (almost) nothing"
cp -a "$REPO" "$TEST_TMP/forgotten"

# --- prune --------------------------------------------------------------------------------
fp=$(fingerprint)
assert_exit 0 cb --json prune --dry-run
assert_cmp "$(json_get "$OUT_FILE" '["packs"]["deleted"]')" -ge 3 "prune --dry-run finds unused packs"
assert_eq "$fp" "$(fingerprint)" "prune --dry-run changed nothing"
before=$(repo_bytes)
assert_exit 0 cb --json prune
cp "$OUT_FILE" "$TEST_TMP/prune.json"
after=$(repo_bytes)
freed=$((before - after))
note "prune: $before -> $after bytes (freed $freed)"
# what only forgotten backups held: four 300 kB random files (stored raw), plus their
# snapshots' metadata, each in a pack padded to at least 64 KiB (pack format 2: a data pack
# padded by at most 1/16, a metadata pack of 64 KiB)
assert_cmp "$freed" -ge 1200000 "the repository shrank by at least the forgotten-only data"
assert_cmp "$freed" -le 1600000 "the repository shrank by about that, no more"
assert_eq "$after" "$(json_get "$TEST_TMP/prune.json" '["repositoryBytes"]["after"]')" \
    "prune reports the size after"
assert_cmp "$(json_get "$TEST_TMP/prune.json" '["packs"]["repacked"]')" -ge 1 \
    "the first backup's pack (shared + forgotten data) was repacked"
assert_exit 0 cb --quiet check --read-data
assert_eq "" "$(cb --json check | python3 -c 'import json,sys; print(" ".join(w["error"] for w in json.load(sys.stdin)["warnings"]))')" \
    "check: no warnings after prune"
verify_restores 5 6
ref_after=$after
assert_exit 0 cb --json prune
assert_eq 0 "$(json_get "$OUT_FILE" '["packs"]["deleted"]')" "a second prune finds nothing to delete"
assert_eq 0 "$(json_get "$OUT_FILE" '["packs"]["repacked"]')" "... nor to repack"

# --- prune stopped after every durable step ------------------------------------------------
k=0
stopped=0
while :; do
    k=$((k + 1))
    rm -rf "$REPO"
    cp -a "$TEST_TMP/forgotten" "$REPO"
    # shellcheck disable=SC2097,SC2098
    CARIS_TEST_PRUNE_CRASH_AT=$k run cb --quiet prune
    if [[ $RC == 0 ]]; then
        note "prune has $((k - 1)) durable steps"
        break
    fi
    assert_rc 137 "prune stopped after step $k"
    stopped=$((stopped + 1))
    assert_exit 0 cb --quiet check --read-data
    # both kept backups verify (every blob read, SHA-256 checked); the newest also restores
    # byte-exact (restoring both at each of the 17 steps was a quarter of the test's time)
    assert_exit 0 cb --quiet verify "${ids[4]}"
    verify_restores 6
    assert_exit 0 cb --quiet prune
    assert_exit 0 cb --quiet check --read-data
    assert_cmp "$(repo_bytes)" -le $((ref_after + 8192)) "after step $k, the next prune finished the job"
    ((k < 200)) || { fail "prune never completed"; break; }
done
assert_cmp "$stopped" -ge 8 "prune was stopped at many points"

# --- real kill -9s, on a repository with many packs ----------------------------------------
rm -rf "$REPO"
assert_exit 0 cb --quiet init
many=$TEST_TMP/many
mkdir -p "$many"
for k in $(seq -w 1 40); do
    rm -f "$many"/f*
    seeded_bytes 20000 "prune/many-$k" >"$many/f$k"
    run cb --quiet backup files --time "2025-02-01T00:00:${k}Z" "$many"
    [[ $RC == 0 ]] || fail "backup $k of many" "$(_last_ctx)"
done
cp -a "$many" "$TEST_TMP/many-state"
last_id=$(cb --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
assert_exit 0 cb --quiet forget --keep-last 1
cp -a "$REPO" "$TEST_TMP/many-forgotten"
first_index=$(list_index_files | head -n 1)
first_pack=$(list_packs | head -n 1)
# shellcheck disable=SC2317 # called through wait_until
index_gone() { [[ ! -e $first_index ]] || ! kill -0 "$BG_PID" 2>/dev/null; }
# shellcheck disable=SC2317
pack_gone() { [[ ! -e $first_pack ]] || ! kill -0 "$BG_PID" 2>/dev/null; }
# an index file that was not there before (a count would miss it: prune removes an old one
# right after it writes the new one)
# shellcheck disable=SC2317
new_index() {
    [[ -n $(comm -13 "$TEST_TMP/index-before" <(list_index_files)) ]] || ! kill -0 "$BG_PID" 2>/dev/null
}
for point in new_index index_gone pack_gone; do
    rm -rf "$REPO"
    cp -a "$TEST_TMP/many-forgotten" "$REPO"
    list_index_files >"$TEST_TMP/index-before"
    bg_start cb --quiet prune
    # (polled every 20 ms: the point is a moment in a running prune)
    POLL_MAX_MS=20 wait_until 60 "$point" || fail "prune did not reach $point"
    kill -9 "$BG_PID" 2>/dev/null
    wait "$BG_PID" 2>/dev/null
    status=$?
    # the kill may come after prune's last step: either way one assertion, so that the
    # suite's count does not depend on the timing
    [[ $status == 137 ]] || note "prune finished (exit $status) before the kill at $point"
    assert_true "prune at $point: killed, or finished before the kill" \
        test "$status" = 137 -o "$status" = 0
    assert_exit 0 cb --quiet check --read-data
    assert_exit 0 cb --quiet verify "$last_id"
    assert_exit 0 cb --quiet prune
    assert_exit 0 cb --quiet check --read-data
    t=$TEST_TMP/restore-many
    assert_exit 0 cb --quiet restore files "$last_id" --target "$t"
    assert_true "killed at $point: the kept backup restores byte-exact" diff -r "$TEST_TMP/many-state" "$t$many"
    rm -rf "$t"
    assert_eq 2 "$(list_packs | wc -l)" "killed at $point: one data pack and one metadata pack remain"
done

# --- locks --------------------------------------------------------------------------------
# prune while a backup runs: refused (the backup holds a shared lock), the backup completes.
# The backup is held in its first read of a file (tests/integration/read_faults.c) while it
# holds its lock, whatever the machine's speed (it was 80 MB and a poll: a fast backup could
# end before the poll saw its lock).
shim=$TEST_TMP/read_faults.so
cc -shared -fPIC -O2 -o "$shim" "$LIB_DIR/read_faults.c" -ldl || fail "cannot build the fault injector"
big=$TEST_TMP/big
mkdir -p "$big" "$TEST_TMP/hold"
for i in 1 2; do seeded_bytes 2M "prune/part$i" >"$big/part$i.bin"; done
bg_start env LD_PRELOAD="$shim" READ_FAULT=hold READ_FAULT_FILE=part2.bin READ_FAULT_DIR="$TEST_TMP/hold" \
    "$CARIS_BIN" --json backup files --full "$big"
backup_pid=$BG_PID
backup_out=$BG_OUT
# shellcheck disable=SC2317
locked() { [[ -n $(find "$REPO/locks" -maxdepth 1 -type f ! -name '.*' ! -name 'claim-*' 2>/dev/null) ]]; }
# shellcheck disable=SC2317
held() { [[ -e $TEST_TMP/hold/reached-part2.bin ]]; }
if wait_until 60 held; then
    assert_true "the held backup holds its lock" locked
    run cb prune
    assert_rc 9 "prune while a backup runs is refused as locked"
    assert_contains "$ERR" "locked" "the refusal says the repository is locked"
else
    fail "the backup did not reach its held read within 60 s" "$(_tail "$BG_ERR")"
fi
touch "$TEST_TMP/hold/release"
wait "$backup_pid"
assert_eq 0 "$?" "the backup that prune met completed"
big_id=$(json_get "$backup_out" '["id"]')
assert_exit 0 cb --quiet prune
assert_exit 0 cb --quiet verify "$big_id"
assert_exit 0 cb --quiet verify "$last_id"

# a backup (and forget) while prune holds the exclusive lock: refused, nothing written
lockname=$REPO/locks/5eed5eed5eed5eed5eed5eed5eed0001
printf '{"exclusive":true,"pid":%d,"host":"%s","created":"%s","operation":"prune"}' \
    "$$" "$(hostname)" "$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" >"$lockname"
fp=$(fingerprint)
assert_exit 9 cb backup files "$src"
assert_exit 9 cb forget --keep-last 1
assert_exit 9 cb prune
assert_eq "$fp" "$(fingerprint)" "refused operations wrote nothing"
rm -f "$lockname"
assert_exit 0 cb --quiet backup files "$src"

# --- scripts/backup/cleanup-old-backups.sh: forget --prune with the configured policy ------
script=$LIB_DIR/../../scripts/backup/cleanup-old-backups.sh
assert_exit 0 cb --quiet backup files --time 2025-03-01T00:00:00Z "$src"
assert_exit 0 cb --quiet backup files --time 2025-03-02T00:00:00Z "$src"
export BACKUP_RETENTION_DAILY=1 BACKUP_RETENTION_WEEKLY=0 BACKUP_RETENTION_MONTHLY=0
fp=$(fingerprint)
nlist=$(cb --json list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
DRY_RUN=true run bash "$script"
assert_rc 0 "cleanup-old-backups.sh with DRY_RUN=true"
assert_contains "$OUT" "2 would be forgotten" "the dry run says what would go"
assert_contains "$OUT" "Avail" "df figures are shown"
assert_match 'before:.*after:' "$(tr '\n' ' ' <<<"$OUT")" "before and after"
assert_eq "$fp" "$(fingerprint)" "DRY_RUN=true changed nothing"
# any case of the words; anything else is refused before anything is done (a misspelt DRY_RUN
# once ran the real operation)
DRY_RUN=YES run "$script"
assert_rc 0 "DRY_RUN=YES, the script run directly (it is executable)"
assert_contains "$OUT" "2 would be forgotten" "DRY_RUN=YES is a dry run"
for v in maybe y dry-run; do
    DRY_RUN=$v run "$script"
    assert_rc 2 "DRY_RUN=$v is refused"
    assert_contains "$ERR" "DRY_RUN must be true or false" "DRY_RUN=$v: the error says why"
done
DRY_RUN=Off run "$script" extra
assert_rc 2 "an argument is refused"
assert_eq "$fp" "$(fingerprint)" "the refused runs changed nothing"
# BACKUP_DIR from .env.local as the binary reads it (CRLF, blanks, quotes, a comment): the
# disk usage shown is the repository's
(
    cd "$TEST_TMP" && printf 'export  BACKUP_DIR = "%s"   # the backups\r\n' "$BACKUP_DIR" >.env.local &&
        env -u BACKUP_DIR DRY_RUN=true "$script" >"$TEST_TMP/envlocal.out" 2>&1
)
assert_contains "$(cat "$TEST_TMP/envlocal.out")" "2 would be forgotten" "the script uses BACKUP_DIR from .env.local"
assert_not_contains "$(cat "$TEST_TMP/envlocal.out")" "does not exist" "its disk usage is found"
rm -f "$TEST_TMP/.env.local"
run bash "$script"
assert_rc 0 "cleanup-old-backups.sh"
assert_contains "$OUT" "2 forgotten" "the script forgot the two older backups of src"
assert_eq $((nlist - 2)) "$(cb --json list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" \
    "two backups fewer"
assert_exit 0 cb --quiet check --read-data

# a prune with nothing to do leaves the index as it is, and says so (it said "1 -> 0")
assert_exit 0 cb --quiet prune
run cb --json prune
assert_rc 0 "a prune with nothing to do"
assert_eq "$(json_get "$OUT_FILE" '["stats"]["indexFiles"]["before"]')" "$(json_get "$OUT_FILE" '["stats"]["indexFiles"]["written"]')" \
    "a prune with nothing to do: index files before = after"
run cb --json prune --dry-run
assert_eq "$(json_get "$OUT_FILE" '["stats"]["indexFiles"]["before"]')" "$(json_get "$OUT_FILE" '["stats"]["indexFiles"]["written"]')" \
    "its dry run says the same"

# --- a repack: the dry run says what the prune then does (it said "0 blobs kept", and counted
# the packs after without the one the repack writes) ---------------------------------------------
DRY=$TEST_TMP/dry-repo
mkdir -p "$TEST_TMP/dry"
python3 - "$TEST_TMP/dry" <<'PY'
import random, sys
r = random.Random(5)
for i in range(200):
    open("%s/s%d" % (sys.argv[1], i), "wb").write(r.randbytes(20000))
PY
assert_exit 0 cb --quiet --repo "$DRY" init
assert_exit 0 cb --quiet --repo "$DRY" backup files --time 2026-12-01T01:00:00Z "$TEST_TMP/dry"
rm -f "$TEST_TMP"/dry/s1[0-9]*
assert_exit 0 cb --quiet --repo "$DRY" backup files --time 2026-12-02T01:00:00Z "$TEST_TMP/dry"
assert_exit 0 cb --quiet --repo "$DRY" forget --keep-last 1
counts() { json_eval "$OUT_FILE" '"%d %d %d %d" % (d["packs"]["repacked"], d["blobs"]["repacked"], d["packs"]["written"], d["packs"]["after"])'; }
run cb --json --repo "$DRY" prune --dry-run
assert_rc 0 "prune --dry-run of a repository with a pack to repack"
dry_counts=$(counts)
assert_match '^1 9[0-9] 1 ' "$dry_counts" "the dry run: one pack repacked, its ~90 blobs kept, one pack written"
run cb --json --repo "$DRY" prune
assert_rc 0 "the prune"
assert_eq "$dry_counts" "$(counts)" "the prune did what its dry run said (packs repacked, blobs kept, packs written, packs after)"
assert_exit 0 cb --quiet --repo "$DRY" check --read-data

# --- erasure: every backup forgotten, then prune removes their data --------------------------
# (prune refused it as damage, exit 4, 'no backup is listed': the state record says each
# snapshot was removed by forget, which tells this apart from snapshots/ gone)
ERA=$TEST_TMP/erasure-repo
mkdir -p "$TEST_TMP/erasure"
printf 'patient 4711: record to erase\n' >"$TEST_TMP/erasure/a"
assert_exit 0 cb --quiet --repo "$ERA" init
assert_exit 0 cb --quiet --repo "$ERA" backup files "$TEST_TMP/erasure"
assert_exit 0 cb --quiet --repo "$ERA" backup files "$TEST_TMP/erasure"
mapfile -t era_ids < <(cb --json --repo "$ERA" list | python3 -c 'import json,sys; print("\n".join(b["id"] for b in json.load(sys.stdin)))')
assert_eq 2 "${#era_ids[@]}" "two backups to forget"
assert_exit 0 cb --repo "$ERA" forget "${era_ids[@]}" --prune
assert_eq 0 "$(find "$ERA/data" -type f ! -name '.*' | wc -l)" "forget of every backup with --prune leaves no pack"
assert_exit 0 cb --quiet --repo "$ERA" check --read-data
assert_exit 0 cb --quiet --repo "$ERA" prune
assert_exit 0 cb --quiet --repo "$ERA" backup files "$TEST_TMP/erasure"
assert_exit 0 cb --quiet --repo "$ERA" check --read-data

test_done

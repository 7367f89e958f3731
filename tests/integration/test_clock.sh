#!/usr/bin/env bash
# Backups dated in the future (made while the clock was ahead; here the test knob
# CARIS_TEST_CLOCK_OFFSET): retention keeps them without counting them (they used to take the
# daily slots of real backups, so that real backups were forgotten); `latest` is refused
# instead of naming the wrong backup (it named the future-dated one, whose data is older than
# the newest backup's); a backup made afterwards warns; `copy --latest` is refused too, and
# `mount` shows no `latest` link; `forget ID...` removes exactly the named backups, and nothing
# when an id does not exist.
source "$(dirname "$0")/lib.sh"

assert_exit 0 cb --quiet init
src=$TEST_TMP/src
mkdir -p "$src"
ids=()
for d in 1 2 3 4 5; do
    printf 'day %s\n' "$d" >"$src/note.txt"
    run cb --json backup files --time "2026-01-0${d}T03:00:00Z" "$src"
    assert_rc 0 "backup of 2026-01-0$d"
    ids+=("$(json_get "$OUT_FILE" '["id"]')")
done
# two backups while the clock is 400 and 401 days ahead (clock_ahead); the source
# as of day 5
future=()
for d in 400 401; do
    run clock_ahead "$d" cb --json backup files "$src"
    assert_rc 0 "backup with the clock $d days ahead"
    future+=("$(json_get "$OUT_FILE" '["id"]')")
done
# the newest data, backed up with the clock right
printf 'day 6\n' >"$src/note.txt"
run cb --json backup files --time "2026-01-06T03:00:00Z" "$src"
assert_rc 0 "backup of 2026-01-06 after the clock was set right"
ids+=("$(json_get "$OUT_FILE" '["id"]')")
assert_contains "$ERR" "warning: backup ${future[1]} is dated" "a backup made afterwards names the future-dated one"
assert_contains "$ERR" "the clock is behind, or was ahead when it was made" "and says what it means"

# --- retention ------------------------------------------------------------------------------
run cb --json forget --dry-run --keep-daily 3
assert_rc 0 "forget --dry-run"
decision() { json_eval "$OUT_FILE" '" ".join("%s=%s:%s" % (b["id"][-8:], "keep" if b["keep"] else "forget", "+".join(b["reasons"])) for g in d["groups"] for b in g["backups"])'; }
assert_eq "${future[1]: -8}=keep:future ${future[0]: -8}=keep:future 03-00-00=keep:daily+newest 03-00-00=keep:daily 03-00-00=keep:daily 03-00-00=forget: 03-00-00=forget: 03-00-00=forget:" \
    "$(decision)" "the future-dated backups are kept and take no daily slot: the 3 newest real days are kept"
assert_eq 2 "$(json_eval "$OUT_FILE" 'len(d["warnings"])')" "one warning per future-dated backup"
assert_contains "$ERR" "warning: backup ${future[0]} is dated" "the warning is shown"
assert_contains "$ERR" "forgotten by id (\`forget ID\`)" "it names the remedy"

run cb list
assert_rc 0 "list"
assert_contains "$ERR" "warning: backup ${future[0]} is dated" "list warns about each future-dated backup"
assert_contains "$ERR" "warning: backup ${future[1]} is dated" "(both)"

# --- latest ---------------------------------------------------------------------------------
run cb restore files latest --target "$TEST_TMP/r1"
assert_rc 2 "restore of latest is refused while a backup is dated in the future"
assert_contains "$ERR" "'latest' is ambiguous: backup ${future[1]} is dated" "the error names the backup"
assert_false "nothing was restored" test -e "$TEST_TMP/r1"
export CARIS_COPY_TO_KEY=$BACKUP_ENCRYPTION_KEY
assert_exit 0 cb --quiet init --repo "$TEST_TMP/offsite" --copy-chunker-from "$REPO"
run cb copy --latest --to "$TEST_TMP/offsite"
assert_rc 2 "copy --latest is refused likewise"
assert_contains "$ERR" "--latest is ambiguous: backup ${future[1]} is dated" "the error names the backup"
assert_false "nothing was copied" test -d "$TEST_TMP/offsite/snapshots"
run cb restore files "${ids[5]}" --target "$TEST_TMP/r2"
assert_rc 0 "a restore by id works"
assert_eq "day 6" "$(cat "$TEST_TMP/r2/$src/note.txt")" "and restores the newest data"

# mount: no `latest` link while the newest by time is dated in the future
if [[ -c /dev/fuse ]]; then
    mnt=$TEST_TMP/mnt
    mkdir -p "$mnt"
    # shellcheck disable=SC2317
    mounted() { mountpoint -q "$mnt"; }
    bg_start cb mount "$mnt"
    MOUNT_PID=$BG_PID MOUNT_ERR=$BG_ERR
    assert_true "the mount appears" wait_until 30 mounted
    assert_true "every backup is there" test -d "$mnt/${ids[5]}"
    assert_false "no latest link" test -L "$mnt/latest"
    assert_contains "$(cat "$MOUNT_ERR")" "${future[1]} is dated" "the mount says why"
    kill -TERM "$MOUNT_PID"
    wait "$MOUNT_PID"
    assert_eq 0 "$?" "the mount exits 0"
else
    note "/dev/fuse is missing: the mount case is skipped"
fi

# --- forget by id ---------------------------------------------------------------------------
count() { cb --json list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
assert_eq 8 "$(count)" "8 backups"
run cb forget "${future[0]}" no_such_backup
assert_rc 7 "forget with an id that does not exist"
assert_contains "$ERR" "no backup no_such_backup: nothing forgotten" "the error names the id"
assert_eq 8 "$(count)" "nothing was forgotten"
assert_exit 2 cb forget --keep-daily 3 "${future[0]}"
assert_contains "$ERR" "backup ids or --keep-* options, not both" "ids and a policy together are refused"
run cb --json forget --dry-run "${future[@]}"
assert_rc 0 "forget --dry-run ID ID"
assert_eq "2 0 6" "$(json_eval "$OUT_FILE" '"%d %d %d" % (d["removed"], sum(b["keep"] for g in d["groups"] for b in g["backups"]), d["kept"])')" \
    "the dry run reports only the two named, and counts the 6 others as kept"
assert_eq 8 "$(count)" "the dry run forgot nothing"
run cb forget "${future[@]}" --prune
assert_rc 0 "forget ID ID --prune"
assert_contains "$OUT" "forgot ${future[0]}" "the output names each backup"
assert_contains "$OUT" "named on the command line" "and why"
assert_eq 6 "$(count)" "exactly the two named are gone"
run cb restore files latest --target "$TEST_TMP/r3"
assert_rc 0 "latest is the newest backup again"
assert_eq "day 6" "$(cat "$TEST_TMP/r3/$src/note.txt")" "and restores the newest data"
assert_exit 0 cb --quiet copy --latest --to "$TEST_TMP/offsite"
assert_eq 1 "$(find "$TEST_TMP/offsite/snapshots" -type f ! -name '.*' | wc -l)" "copy --latest copies one backup"
run cb --json forget --dry-run --keep-daily 3
assert_eq 0 "$(json_eval "$OUT_FILE" 'len(d["warnings"])')" "no warning once they are gone"
assert_exit 0 cb check --read-data

test_done

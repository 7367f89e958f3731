#!/usr/bin/env bash
# SIGTERM (or Ctrl-C, or SIGHUP: the terminal closed) during a backup: the backup stops within a moment, even while pg_dump
# gives nothing, stops pg_dump, commits nothing, releases its lock and claim, and says
# "cancelled" (exit 1). The backup is held mid-way by a table lock, not by timing.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
db=$CARIS_PG_DB
pg_small_table "$db"
init_repo
db_backup_json "$TEST_TMP/first.json" --full
assert_rc 0 "a first backup"
first=$BACKUP_ID

lock_files() { find "$REPO/locks" -maxdepth 1 -type f ! -name '.*' -printf '%f\n' 2>/dev/null | LC_ALL=C sort; }
# shellcheck disable=SC2317 # called through wait_until
held() { [[ -n $(lock_files | grep '^claim-caris_') ]] && (($(pg_lock_waiters "$db" small) >= 1)); }

# a prune --dry-run while the backup runs (it takes a shared lock): says that what the backup
# writes counts as unused in its estimate (it reported the backup's packs as garbage)
pg_table_lock_take "$db" small
bg_start cb --json backup database --full
wait_until 60 held || fail "the backup did not reach its lock, claim and table wait" "$(_tail "$BG_ERR")"
run cb prune --dry-run
assert_rc 0 "prune --dry-run beside a running backup"
assert_contains "$ERR" "other operation holds a lock now" "it says a backup is writing meanwhile"
kill -TERM "$BG_PID"
wait "$BG_PID"
pg_table_lock_release
assert_exit 0 cb prune --dry-run
assert_not_contains "$ERR" "holds a lock now" "alone, it says nothing of the kind"

for sig in TERM INT HUP; do
    pg_table_lock_take "$db" small
    bg_start cb --json backup database --full
    backup=$BG_PID backup_err=$BG_ERR
    wait_until 60 held || fail "the backup did not reach its lock, claim and table wait" "$(_tail "$backup_err")"
    kill -"$sig" "$backup"
    wait "$backup"
    assert_eq 1 "$?" "SIG$sig: the backup stopped with exit 1"
    assert_contains "$(cat "$backup_err")" "cancelled" "SIG$sig: it says cancelled"
    assert_eq "" "$(lock_files)" "SIG$sig: its lock and claim are released"
    pg_table_lock_release
    assert_eq "$first" "$(list_ids | paste -sd ' ')" "SIG$sig: no backup was committed"
    assert_eq 0 "$(pg_lock_waiters "$db" small)" "SIG$sig: pg_dump is gone (nobody waits for the table)"
done
run cb --json check
assert_rc 0 "check after the cancelled backups"
assert_eq 0 "$(json_eval "$OUT_FILE" 'len([w for w in d["warnings"] if "lock" in w["error"] or "temporary" in w["error"]])')" \
    "check: no stale lock, claim or temporary file"
db_backup_json "$TEST_TMP/after.json" --full
assert_rc 0 "a backup after the cancelled ones"
assert_exit 0 cb verify "$BACKUP_ID"

test_done

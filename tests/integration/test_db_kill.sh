#!/usr/bin/env bash
# While a database backup runs, no process's arguments hold the password (ps is polled for
# the whole backup). pg_dump killed with SIGKILL in the middle of its stream: the backup
# fails (exit 10), no snapshot is listed, `check` passes, no temporary file (passfile) is
# left, and the next backup works. The backup killed with SIGKILL while its pg_dump waits for a
# table lock: pg_dump ends too.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
db=$CARIS_PG_DB
psql_db "$db" -c "CREATE TABLE small (id integer PRIMARY KEY, v text);
    INSERT INTO small SELECT i, 'v' || i FROM generate_series(1, 1000) AS i" >/dev/null

init_repo
db_backup_json "$TEST_TMP/first.json" --full
assert_rc 0 "a first (small) backup"
first=$BACKUP_ID

# A table whose dump is 384 MiB (but is created in a second): the backups below run long
# enough to be watched and interrupted (pg_dump is killed once it has written 64 MiB: 320 MiB
# before its end: a third of a second of streaming even at 1 GB/s, against 20 ms between two
# polls). It was 1 GiB: the suite's CPU is its limit, and the ps loop below takes a whole CPU
# while the backup runs.
pg_big_table "$db" big 384 >/dev/null || fail "creating the big table failed"

# alive PID: the process exists and is not a zombie
alive() {
    local st
    [[ -r /proc/$1/stat ]] || return 1
    read -r _ _ st _ <"/proc/$1/stat" 2>/dev/null || return 1
    [[ $st != Z ]]
}

# --- the password is in no process's arguments while a backup runs ---------------------------
ps_log=$TEST_TMP/ps.log
: >"$ps_log"
bg_start cb --json backup database --full
pid=$BG_PID
polls=0 t0=$SECONDS
# ps as fast as it goes (no pause: pg_dumpall lives only a few milliseconds); the output is
# kept in a file, and searched afterwards, so the password is in no command line of ours
while alive "$pid"; do
    ps -eo pid=,ppid=,args= >>"$ps_log"
    echo "----" >>"$ps_log"
    polls=$((polls + 1))
done
wait "$pid"
rc=$?
assert_eq 0 "$rc" "the watched backup succeeded"
watched=$(json_get "$BG_OUT" '["id"]' 2>/dev/null || true)
note "ps polled $polls times during the $((SECONDS - t0)) s backup of the 384 MiB dump"
children=$(awk -v p="$pid" '$2 == p { $1 = ""; $2 = ""; print substr($0, 3) }' "$ps_log" | LC_ALL=C sort -u)
note "children seen: $(printf '%s' "$children" | awk '{ print $1 }' | sort -u | xargs -n1 basename 2>/dev/null | paste -sd ' ')"
assert_contains "$children" "pg_dump" "ps saw the backup's pg_dump"
assert_no_password_in "$ps_log" "no ps line holds the password"
assert_not_contains "$children" "password=" "no child has a password= argument"
assert_not_contains "$(cat "$BG_OUT" "$BG_ERR")" "$CARIS_PG_PASSWORD" "the backup printed no password"

# --- pg_dump killed mid-stream ------------------------------------------------------------------
list_ids >"$TEST_TMP/ids-before"
bg_start cb --json backup database --full
pid=$BG_PID
dump_pid=""
# shellcheck disable=SC2317 # called through wait_until
dump_midway() { # pg_dump runs and has written at least 64 MiB into the backup
    dump_pid=$(find_child "$pid" pg_dump) || return 1
    (($(proc_wchar "$dump_pid") >= 64 * 1024 * 1024))
}
# (polled every 20 ms: the point holds for a third of a second at the least)
if POLL_MAX_MS=20 wait_until 120 dump_midway; then
    pass "pg_dump is streaming ($(proc_wchar "$dump_pid") bytes written)"
    kill -9 "$dump_pid"
else
    fail "no pg_dump streaming within 120 s" "stderr of the backup:" "$(_tail "$BG_ERR")"
fi
wait "$pid"
rc=$?
note "the backup exited with $rc: $(tr '\n' ' ' <"$BG_ERR" | cut -c1-300)"
assert_ne 0 "$rc" "the backup whose pg_dump was killed fails"
assert_eq 10 "$rc" "... with exit 10 (database error)"
assert_contains "$(cat "$BG_OUT" "$BG_ERR")" "pg_dump" "the error names pg_dump"
assert_eq "$(cat "$TEST_TMP/ids-before")" "$(list_ids)" "the failed backup is not listed"
run cb --json check
assert_rc 0 "check after the failed backup"
assert_eq true "$(json_get "$OUT_FILE" '["ok"]')" "check --json says ok"
assert_eq "" "$(find "$BACKUP_DIR/temp" -type f 2>/dev/null)" "no temporary file is left in BACKUP_DIR/temp"

# --- the backup killed (-9) while its pg_dump waits for a table lock: pg_dump goes with it -------
# (it stayed, orphaned, waiting on the server until the lock was released)
pg_table_lock_take "$db" small
bg_start cb backup database --full
pid=$BG_PID
# shellcheck disable=SC2317 # called through wait_until
dump_waits() { dump_pid=$(find_child "$pid" pg_dump) && (($(pg_lock_waiters "$db" small) >= 1)); }
if wait_until 60 dump_waits; then
    kill -9 "$pid"
    wait "$pid"
    # shellcheck disable=SC2317 # called through wait_until
    dump_gone() { [[ ! -e /proc/$dump_pid ]] || [[ $(awk '{print $3}' "/proc/$dump_pid/stat" 2>/dev/null) == Z ]]; }
    if wait_until 30 dump_gone; then
        pass "pg_dump ended with the backup killed under it"
    else
        fail "pg_dump runs on, orphaned, after the backup was killed"
    fi
else
    fail "the backup's pg_dump did not wait for the table lock" "$(_tail "$BG_ERR")"
fi
pg_table_lock_release
assert_exit 0 cb unlock

# --- the next backup works ------------------------------------------------------------------------
psql_db "$db" -c "DROP TABLE big" >/dev/null
db_backup_json "$TEST_TMP/after.json" --full
assert_rc 0 "a backup after the failed one"
assert_exit 0 cb verify "$BACKUP_ID"
assert_eq "$(printf '%s\n' "$first" "$watched" "$BACKUP_ID" | LC_ALL=C sort | paste -sd ' ')" \
    "$(list_ids | tr ' ' '\n' | LC_ALL=C sort | paste -sd ' ')" "three backups listed"

assert_not_contains "$(cat "$ALL_OUTPUT")" "$CARIS_PG_PASSWORD" "the password appears in no output"
assert_false "the password appears in no file under BACKUP_DIR" grep -r -a -l -F -e "$CARIS_PG_PASSWORD" "$BACKUP_DIR"

test_done

#!/usr/bin/env bash
# Key hygiene (issue 14): while a database backup runs, its pg_dump's environment holds none
# of our secrets (BACKUP_ENCRYPTION_KEY, CARIS_NEW_ENCRYPTION_KEY, cloud credentials, the
# restore target URL) but does hold what it needs (PATH, PGPASSWORD); our own process's
# environment (/proc/<pid>/environ) no longer shows the key; core dumps are off. pg_dump is
# held still, deterministically, by a lock on a table it must dump.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
db=$CARIS_PG_DB
psql_db "$db" -c "CREATE TABLE held (id integer PRIMARY KEY, v text);
    INSERT INTO held SELECT i, 'v' || i FROM generate_series(1, 1000) AS i" >/dev/null

key=$BACKUP_ENCRYPTION_KEY
# Secrets of other parts that a dump program has no use for.
export CARIS_NEW_ENCRYPTION_KEY="new-key-of-the-hygiene-test-0123456789"
export AWS_SECRET_ACCESS_KEY="aws-secret-of-the-hygiene-test"
export AWS_ACCESS_KEY_ID="AKIAHYGIENETEST"
export BACKUP_S3_SECRET_KEY="s3-secret-of-the-hygiene-test"
export CARIS_RESTORE_TARGET_URL="postgresql://someone:target-secret-of-the-test@127.0.0.1:1/none"

init_repo
db_backup_json "$TEST_TMP/first.json" --full
assert_rc 0 "a first backup (creates the repository)"

# --- hold pg_dump on a lock --------------------------------------------------------------------
fifo=$TEST_TMP/lock.fifo
mkfifo "$fifo"
exec {lockfd}<>"$fifo" # read-write: opening never blocks, and psql's stdin stays open
"$CARIS_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$CARIS_PG_SOCKET" -p "$CARIS_PG_PORT" \
    -U "$CARIS_PG_USER" -d "$db" <"$fifo" >"$TEST_TMP/lock.out" 2>&1 {lockfd}>&- &
lock_psql=$!
_BG_PIDS+=("$lock_psql")
echo "BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE;" >&"$lockfd"
# shellcheck disable=SC2317 # called through wait_until
locked() {
    [[ $(psql_db "$db" -c "SELECT count(*) FROM pg_locks WHERE relation = 'held'::regclass
        AND mode = 'AccessExclusiveLock' AND granted") == 1 ]]
}
wait_until 30 locked || fail "the test could not take its lock" "$(cat "$TEST_TMP/lock.out")"

# (the backup must not hold the fifo open either: psql ends when the last writer closes it)
bg_start cb --json backup database --full {lockfd}>&-
pid=$BG_PID
dump_pid=""
# shellcheck disable=SC2317 # called through wait_until
dump_waiting() { # pg_dump runs (exec'd: its name is pg_dump) and waits for the lock
    # pg_dump's own session waits (the backup's session waits for the same lock, and a short
    # `pg_dump --version` runs before the dump): only then is the pg_dump found the dumping one
    [[ $(psql_db "$db" -c "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.relation = 'held'::regclass AND NOT l.granted
        AND a.application_name = 'pg_dump'") -ge 1 ]] || return 1
    dump_pid=$(find_child "$pid" pg_dump)
}
if wait_until 60 dump_waiting; then
    pass "pg_dump ($dump_pid) runs and waits for the table held by the test"
    tr '\0' '\n' <"/proc/$dump_pid/environ" >"$TEST_TMP/dump.env"
    tr '\0' '\n' <"/proc/$pid/environ" >"$TEST_TMP/caris.env"
    cp "/proc/$pid/limits" "$TEST_TMP/caris.limits"
    assert_true "pg_dump is still the process whose environment was read" \
        test "$(proc_comm "$dump_pid")" = pg_dump
else
    fail "no pg_dump waiting for the lock within 60 s" "stderr of the backup:" "$(_tail "$BG_ERR")"
fi
echo "COMMIT;" >&"$lockfd"
exec {lockfd}>&-
wait "$pid"
rc=$?
assert_eq 0 "$rc" "the held backup completes once the lock is released"
wait "$lock_psql" 2>/dev/null

note "pg_dump's environment: $(cut -d= -f1 "$TEST_TMP/dump.env" | sort | paste -sd ' ')"
envnames=$(cut -d= -f1 "$TEST_TMP/dump.env")
assert_true "pg_dump's environment was read" test -s "$TEST_TMP/dump.env"
assert_false "BACKUP_ENCRYPTION_KEY's value is not in pg_dump's environment" \
    grep -qF -e "$key" "$TEST_TMP/dump.env"
assert_not_contains "$envnames" "BACKUP_ENCRYPTION_KEY" "nor its name"
for v in "$CARIS_NEW_ENCRYPTION_KEY" "$AWS_SECRET_ACCESS_KEY" "$AWS_ACCESS_KEY_ID" \
    "$BACKUP_S3_SECRET_KEY" "target-secret-of-the-test"; do
    assert_false "pg_dump's environment lacks ${v:0:12}..." grep -qF -e "$v" "$TEST_TMP/dump.env"
done
assert_not_contains "$envnames" "CARIS_RESTORE_TARGET_URL" "nor CARIS_RESTORE_TARGET_URL"
assert_contains "$envnames" "PGPASSWORD" "pg_dump gets the password it needs (PGPASSWORD)"
assert_contains "$envnames" "PATH" "... and PATH"

assert_true "our environment was read" test -s "$TEST_TMP/caris.env"
assert_false "the key's value is gone from /proc/<caris-backup>/environ" \
    grep -qF -e "$key" "$TEST_TMP/caris.env"
assert_false "... and so is CARIS_NEW_ENCRYPTION_KEY's" \
    grep -qF -e "$CARIS_NEW_ENCRYPTION_KEY" "$TEST_TMP/caris.env"
assert_match "Max core file size +0 +0 " "$(grep 'Max core file size' "$TEST_TMP/caris.limits")" \
    "core dumps are off (RLIMIT_CORE 0, soft and hard) in the running backup"

assert_exit 0 cb verify "$(json_get "$BG_OUT" '["id"]')"
test_done

#!/usr/bin/env bash
# A restore killed with SIGKILL cannot remove what it holds in BACKUP_DIR/temp: the decrypted
# dump it staged for --jobs, and the throwaway cluster of a test restore (--scratch local).
# The cluster's server stops by itself (it is told to when the restore dies), and the next
# restore removes both, and says so. A restore that runs meanwhile keeps its own: a sweep
# never removes what a live restore holds. The same for the scratch database a killed test
# restore leaves on the server.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
db=$CARIS_PG_DB
psql_db "$db" -c "CREATE TABLE notes (id int PRIMARY KEY, body text);
    INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 2000) AS i" >/dev/null ||
    fail "creating the table failed"
# as the server's user (a scratch cluster refuses root), with a directory of its own
pitr_setup
T=$BACKUP_DIR/temp
hold=$R/hold
run cb --json backup database --full
assert_rc 0 "a full backup"
id=$(json_get "$OUT_FILE" '["id"]')

# held CMD...: start CMD (a restore, as the server's user) with CARIS_TEST_RESTORE_HOLD and
# wait until it holds just before pg_restore; sets PID (the restore itself, not runuser)
held() {
    rm -f "$hold.held"
    as_pg touch "$hold"
    if [[ $(id -u) == 0 ]]; then
        CARIS_TEST_RESTORE_HOLD=$hold bg_start runuser -u "$CARIS_PG_OS_USER" -- "$CARIS_BIN" "$@"
    else
        CARIS_TEST_RESTORE_HOLD=$hold bg_start "$CARIS_BIN" "$@"
    fi
    HELD_BG=$BG_PID HELD_ERR=$BG_ERR
    # shellcheck disable=SC2317 # called through wait_until
    _held() { [[ -e $hold.held ]]; }
    if ! wait_until 120 _held; then
        fail "the restore did not reach its hold" "$(_tail "$BG_ERR")"
        return 1
    fi
    if [[ $(id -u) == 0 ]]; then
        PID=$(find_child "$BG_PID" caris-backup) || { fail "no caris-backup under runuser"; return 1; }
    else
        PID=$BG_PID
    fi
}
items() { find "$T" -mindepth 1 -maxdepth 1 -name "$1" 2>/dev/null | LC_ALL=C sort; }

# --- a staged dump (--jobs 2) left by a restore killed with SIGKILL ---------------------------
export CARIS_RESTORE_TARGET_URL
CARIS_RESTORE_TARGET_URL=$(pg_url killed)
held restore database "$id" --create --jobs 2
staged=$(items 'caris-restore-*')
assert_ne "" "$staged" "the held restore staged its dump in BACKUP_DIR/temp"
kill -9 "$PID"
wait "$HELD_BG"
assert_eq "$staged" "$(items 'caris-restore-*')" "killed with SIGKILL, it left the staged dump behind"

# the next restore removes it, and says so
CARIS_RESTORE_TARGET_URL=$(pg_url after_kill) run cb restore database "$id" --create --jobs 2 --verify
assert_rc 0 "the next restore (--jobs 2) succeeds"
assert_not_contains "$ERR" "single transaction" "... and its plan does not say it is one transaction"
assert_contains "$ERR" "removed 1 item(s) that a restore killed earlier left" "it says it removed the leftover"
assert_contains "$ERR" "$(basename "$staged")" "... and names it"
assert_eq "" "$(items '*')" "BACKUP_DIR/temp is empty afterwards"

# --- the database a killed --create restore made: the next --create says what it is ---------
CARIS_RESTORE_TARGET_URL=$(pg_url killed_create)
psql_db postgres -c "CREATE ROLE create_outsider LOGIN" >/dev/null || fail "creating role create_outsider failed"
held restore database "$id" --create
# (a new database lets PUBLIC connect: while it was verified, the restored records were open to
# every role, whatever the backup's database allowed)
assert_eq f "$(psql_db postgres -c "SELECT has_database_privilege('create_outsider', 'killed_create', 'CONNECT')")" \
    "while the restore runs, the database it made is closed to other roles"
kill -9 "$PID"
wait "$HELD_BG"
assert_true "the killed --create restore left its database" pg_db_exists killed_create
run cb restore database "$id" --create
assert_rc 2 "a --create restore into it is refused"
assert_contains "$ERR" "carries the mark of a restore of $id" "the refusal says which restore made it"
assert_contains "$ERR" "did not finish" "... and that it did not finish"
psql_db postgres -c "DROP DATABASE killed_create" >/dev/null
run cb restore database "$id" --create --verify
assert_rc 0 "once dropped, the restore goes through"
assert_eq "" "$(psql_db postgres -c "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'killed_create'")" \
    "the restored database carries no mark"
assert_eq t "$(psql_db postgres -c "SELECT has_database_privilege('create_outsider', 'killed_create', 'CONNECT')")" \
    "... and lets PUBLIC connect again, as the backup's database did"

# --- a parallel restore into an existing database, killed: the database says so --------------
# (--jobs is not one transaction: killed, it leaves the database partly restored; a backup of it
# then stored it as a good one, with nothing to tell it from one)
comment_of() { psql_db postgres -c "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '$1'"; }
mark="caris-backup: restore in progress, or killed: backup $id"
pg_createdb killed_clean >/dev/null || fail "creating database killed_clean failed"
psql_db postgres -c "COMMENT ON DATABASE killed_clean IS 'the records'" >/dev/null
export CARIS_RESTORE_TARGET_URL
CARIS_RESTORE_TARGET_URL=$(pg_url killed_clean)
run cb restore database "$id" --clean --jobs 2
assert_rc 0 "a --clean --jobs 2 restore into an existing database succeeds"
assert_contains "$ERR" "while it runs, database killed_clean carries a mark" "... its plan says it marks the database"
assert_eq "the records" "$(comment_of killed_clean)" "... and puts the database's comment back"
held restore database "$id" --clean --jobs 2
assert_contains "$(comment_of killed_clean)" "$mark" "while it runs, the database carries the restore's mark"
kill -9 "$PID"
wait "$HELD_BG"
assert_contains "$(comment_of killed_clean)" "$mark" "killed with SIGKILL, it left the mark"
run cb --json backup database --dry-run
assert_rc 0 "a dry run of a backup of an unmarked database"
assert_eq "[]" "$(json_get "$OUT_FILE" '["warnings"]')" "... warns of nothing"
POSTGRES_URL=$(pg_url killed_clean) run cb backup database --dry-run
assert_rc 0 "a dry run of a backup of the marked database"
assert_contains "$OUT" "warning: database killed_clean carries the mark of a restore of $id" \
    "... warns that it may be partly restored"
POSTGRES_URL=$(pg_url killed_clean) run cb --json backup database --full
assert_rc 3 "a backup of the marked database ends with warnings"
assert_eq warnings "$(json_get "$OUT_FILE" '["status"]')" "... its status says so"
assert_contains "$(json_get "$OUT_FILE" '["warnings"][0]["message"]')" "carries the mark of a restore of $id" \
    "... and its warning names the restore"
POSTGRES_URL=$(pg_url killed_clean) run cb run-now incremental
assert_rc 3 "a run whose database backup warns of the mark ends with warnings"
assert_contains "$ERR" "retention: skipped" "... and applies no retention (the older backups stay)"
run cb restore database "$id" --create
assert_rc 2 "a --create restore into the marked database is refused"
assert_contains "$ERR" "carries the mark of a restore of $id" "... naming the restore that did not finish"
run cb restore database "$id" --clean --jobs 2 --table public.notes
assert_rc 0 "a --table restore into it succeeds"
assert_contains "$(comment_of killed_clean)" "$mark" "... and leaves the mark (it mended one table)"
run cb restore database "$id" --clean
assert_rc 0 "a whole restore into it (one transaction) succeeds"
assert_contains "$ERR" "carries the mark of a restore of $id" "... and its plan said the database was marked"
assert_eq "" "$(comment_of killed_clean)" "... and removes the mark"

# --- a live restore's staged dump is not swept by another restore ----------------------------
CARIS_RESTORE_TARGET_URL=$(pg_url live_a)
held restore database "$id" --create --jobs 2 --verify
live=$(items 'caris-restore-*')
assert_ne "" "$live" "the held (live) restore staged its dump"
CARIS_RESTORE_TARGET_URL=$(pg_url live_b) run cb restore database "$id" --create --jobs 2 --verify
assert_rc 0 "another restore meanwhile succeeds"
assert_not_contains "$ERR" "killed earlier" "it removed nothing"
assert_eq "$live" "$(items 'caris-restore-*')" "the live restore's staged dump is still there"
rm -f "$hold"
wait "$HELD_BG"
assert_eq 0 "$?" "the held restore, let go, succeeds (row counts verified)"
assert_not_contains "$(cat "$HELD_ERR")" "killed earlier" "... and removed nothing either"
assert_eq "" "$(items '*')" "BACKUP_DIR/temp is empty afterwards"

# --- a scratch database left on the server by a test restore killed with SIGKILL --------------
# (a copy of the records on the production server; the next test restore drops it, never the
# scratch database of one that still runs: each holds an advisory lock on it while it lives)
scratch_dbs() { psql_db postgres -c "SELECT datname FROM pg_database WHERE datname LIKE 'caris\_test\_%' ORDER BY 1"; }
held test-restore "$id"
orphan=$(scratch_dbs)
assert_match '^caris_test_[0-9a-f]{8}$' "$orphan" "the held test restore made its scratch database"
psql_db postgres -c "CREATE ROLE scratch_outsider LOGIN" >/dev/null || fail "creating role scratch_outsider failed"
assert_eq f "$(psql_db postgres -c "SELECT has_database_privilege('scratch_outsider', '$orphan', 'CONNECT')")" \
    "... which no other role may connect to (a new database lets PUBLIC connect)"
kill -9 "$PID"
wait "$HELD_BG"
assert_eq "$orphan" "$(scratch_dbs)" "killed with SIGKILL, it left its scratch database behind"
held test-restore "$id"
live=$(scratch_dbs)
assert_not_contains "$live" "$orphan" "the next test restore dropped the one left behind"
assert_match '^caris_test_[0-9a-f]{8}$' "$live" "... and made its own"
assert_contains "$(cat "$HELD_ERR")" "dropped 1 scratch database(s) that a killed test restore left: $orphan" \
    "... and said so"
run cb --json test-restore "$id"
assert_rc 0 "another test restore meanwhile succeeds"
assert_not_contains "$ERR" "dropped" "it dropped nothing"
assert_eq "$live" "$(scratch_dbs)" "the live test restore's scratch database is still there"
rm -f "$hold"
wait "$HELD_BG"
assert_eq 0 "$?" "the held test restore, let go, succeeds"
assert_eq "" "$(scratch_dbs)" "no scratch database is left"

# --- a test restore cancelled (Ctrl-C) is not recorded: it says nothing of the backup -----------
records() { find "$REPO/records/test-restore" -type f ! -name '.*' 2>/dev/null | wc -l; }
records_before=$(records)
held test-restore "$id"
kill -INT "$PID"
rm -f "$hold"
wait "$HELD_BG"
assert_eq 1 "$?" "a test restore cancelled with SIGINT: exit 1"
assert_contains "$(cat "$HELD_ERR")" "cancelled" "... and says it was cancelled"
assert_eq "$records_before" "$(records)" "no test-restore record was written for it"
run cb --json list --type database
assert_eq true "$(json_eval "$OUT_FILE" "[b for b in d if b['id'] == '$id'][0]['lastTestRestore']['ok']")" \
    "the backup's last test restore is still the one that passed (it read TEST RESTORE FAILED)"
assert_eq "" "$(scratch_dbs)" "the cancelled one dropped its scratch database"

# --- a scratch cluster left by a test restore killed with SIGKILL -----------------------------
held test-restore "$id" --scratch local
cluster=$(items 'caris-scratch-*')
assert_ne "" "$cluster" "the held test restore made its cluster in BACKUP_DIR/temp"
pm=$(head -n 1 "$cluster/data/postmaster.pid" 2>/dev/null)
assert_match '^[0-9]+$' "$pm" "its server runs (postmaster.pid)"
kill -9 "$PID"
wait "$HELD_BG"
# shellcheck disable=SC2317 # called through wait_until
pm_gone() { [[ ! -e /proc/$pm ]] || [[ $(awk '{print $3}' "/proc/$pm/stat" 2>/dev/null) == Z ]]; }
if wait_until 60 pm_gone; then
    pass "the cluster's server stopped by itself once the test restore was killed"
else
    fail "the cluster's server runs on, orphaned, after the test restore was killed"
    kill -9 "$pm" 2>/dev/null
fi
assert_eq "$cluster" "$(items 'caris-scratch-*')" "the cluster's directory was left behind"
run cb --json test-restore "$id" --scratch local
assert_rc 0 "the next test restore succeeds"
assert_eq true "$(json_get "$OUT_FILE" '["ok"]')" "... ok"
assert_contains "$ERR" "$(basename "$cluster")" "it says it removed the leftover cluster"
assert_eq "" "$(items '*')" "BACKUP_DIR/temp is empty afterwards"

test_done

#!/usr/bin/env bash
# Locks that survive crashes (issue 6, section 2).
#  1. A live lock of another process (a lock file in the documented format, held by a process
#     of ours): shared operations fail with exit 9 and the holder's description, and with
#     --lock-wait wait for it and then succeed; nothing is written while they are refused.
#     `unlock` keeps a live lock; `unlock --force` removes it and says so.
#  2. A database backup killed with SIGKILL while it holds its lock and claim (held in place
#     by a table lock taken from psql, so the kill lands mid-backup every time): `check`
#     reports the stale lock and claim (and the temporary files a killed writer leaves),
#     `unlock` removes them, `check` is clean, and new backups work. While the backup runs,
#     `unlock` keeps its lock, and the backup then completes: nothing is lost.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

repo=$BACKUP_DIR/repository
host=$(hostname)
boot_id=$(cat /proc/sys/kernel/random/boot_id)

mkdir -p "$TEST_TMP/src"
seq 1 20000 >"$TEST_TMP/src/numbers.txt"
init_repo
assert_exit 0 cb --quiet backup files "$TEST_TMP/src"

# --- --lock-wait takes a duration ----------------------------------------------------------
for bad in 5x -1s abc 1s2 '' 0x10 1e1 $'\t5' 5.5.5 .; do
    assert_exit 2 cb --lock-wait "$bad" check
    assert_contains "$ERR" "--lock-wait takes a duration" "--lock-wait '$bad' is refused"
done
assert_exit 0 cb --lock-wait 1.5s check
assert_exit 0 cb --lock-wait 0 check
assert_exit 0 cb unlock --help
assert_contains "$OUT" "usage: caris-backup unlock [--force] [--json]" "unlock --help"
assert_exit 2 cb unlock --bogus
assert_exit 0 cb --json unlock
assert_eq "0 0 0 0" "$(json_eval "$OUT_FILE" '" ".join(str(len(d[k])) for k in ("removed", "kept", "leftoversRemoved", "leftoversKept"))')" "unlock --json on a clean repository: nothing to do"

# lock files (not claims, not temporary files)
lock_files() { find "$repo/locks" -maxdepth 1 -type f ! -name '.*' -printf '%f\n' | LC_ALL=C sort; }
# start time of a process (field 22 of /proc/PID/stat)
proc_start() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $20 }'; }

# plant_lock NAME PID EXCLUSIVE OPERATION: a lock file of format 2 held by PID
plant_lock() {
    local now
    now=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
    printf '{"version":2,"exclusive":%s,"operation":"%s","host":"%s","boot_id":"%s","pid":%s,"pid_start":%s,"created":"%s","refreshed":"%s"}' \
        "$3" "$4" "$host" "$boot_id" "$2" "$(proc_start "$2")" "$now" "$now" >"$repo/locks/$1"
}

# A process we control: it lives until we write a line into its FIFO.
holder_fifo=$TEST_TMP/holder.fifo
mkfifo "$holder_fifo"
exec {holder_fd}<>"$holder_fifo"
# shellcheck disable=SC2016 # $1 is the inner shell's
bg_start bash -c 'read -r _ <"$1"' _ "$holder_fifo"
holder=$BG_PID
lock=0123456789abcdef0123456789abcdef
plant_lock $lock "$holder" true prune

# --- 1. a live exclusive lock refuses shared operations (exit 9) -------------------------
list_before=$(cb --json list)
assert_exit 9 cb check
assert_contains "$ERR" "repository locked by prune on $host pid $holder since " "check names the holder"
assert_contains "$ERR" "caris-backup unlock" "the hint names unlock"
assert_exit 9 cb verify --all
assert_exit 9 cb backup files "$TEST_TMP/src"
assert_contains "$ERR" "repository locked by prune on $host pid $holder" "backup names the holder"
mkdir "$TEST_TMP/r1"
first=$(json_eval <(printf '%s' "$list_before") 'd[0]["id"]')
assert_exit 9 cb restore files "$first" --target "$TEST_TMP/r1"
assert_eq "$list_before" "$(cb --json list)" "the refused backup added nothing"
assert_eq "$lock" "$(lock_files)" "the refused operations left no lock and no claim"

# --- --lock-wait: waits while the holder runs, proceeds once it has let go ------------------
bg_start cb --lock-wait 2m check
waiter=$BG_PID waiter_err=$BG_ERR
# shellcheck disable=SC2317 # called through wait_until
waiting() { grep -q "waiting up to 120 s for the repository lock: repository locked by prune" "$waiter_err"; }
if wait_until 60 waiting; then
    pass "check --lock-wait says what it waits for"
else
    fail "check --lock-wait never said it was waiting" "$(_tail "$waiter_err")"
fi
assert_true "the waiting check is still running" kill -0 "$waiter"
# the holder finishes: removes its lock, then exits
rm "$repo/locks/$lock"
wait "$waiter"
assert_eq 0 "$?" "check --lock-wait succeeded once the lock was gone"
assert_contains "$(cat "$BG_OUT")" "no errors found" "and checked the repository"

# --- a wal get killed (SIGKILL) while it waits leaves nothing in pg_wal ---------------------------
# (its file beside DEST is anonymous until complete: a named DEST.caris-tmp.* stayed behind)
seg=000000010000000000000007
mkdir -p "$TEST_TMP/pg_wal" "$TEST_TMP/walout"
head -c 1048576 /dev/urandom >"$TEST_TMP/pg_wal/$seg"
assert_exit 0 cb --quiet wal push --no-daemon "$TEST_TMP/pg_wal/$seg"
plant_lock $lock "$holder" true prune
bg_start cb --lock-wait 2m wal get --no-daemon "$seg" "$TEST_TMP/walout/RECOVERYXLOG"
getter=$BG_PID getter_err=$BG_ERR
# shellcheck disable=SC2317 # called through wait_until
get_waiting() { grep -q "waiting up to 120 s for the repository lock" "$getter_err"; }
wait_until 60 get_waiting || fail "wal get --lock-wait never said it was waiting" "$(_tail "$getter_err")"
assert_true "the file beside DEST is open" \
    bash -c 'ls -l "/proc/$1/fd" | grep -qF -- "$2"' _ "$getter" "$TEST_TMP/walout/"
assert_eq "" "$(ls -A "$TEST_TMP/walout")" "while wal get runs, nothing named is in DEST's directory"
kill -KILL "$getter"
wait "$getter" 2>/dev/null
assert_eq "" "$(ls -A "$TEST_TMP/walout")" "wal get killed: nothing left in DEST's directory"
rm "$repo/locks/$lock"
assert_exit 0 cb wal get --no-daemon "$seg" "$TEST_TMP/walout/RECOVERYXLOG"
assert_true "then wal get writes the segment" cmp "$TEST_TMP/pg_wal/$seg" "$TEST_TMP/walout/RECOVERYXLOG"
assert_eq "RECOVERYXLOG" "$(ls -A "$TEST_TMP/walout")" "... and nothing else"

# --- a wait that runs out fails with exit 9 (not before its deadline) ----------------------
plant_lock $lock "$holder" true prune
t0=$(date +%s%N)
assert_exit 9 cb --lock-wait 1s check
elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
assert_cmp "$elapsed_ms" -ge 1000 "exit 9 after waiting the full second"

# --- unlock keeps a live lock; --force removes it and says so ----------------------------------
assert_exit 0 cb unlock
assert_contains "$OUT" "kept live lock locks/$lock (prune on $host pid $holder since" "unlock lists the live lock"
assert_eq "$lock" "$(lock_files)" "unlock kept the live lock"
assert_exit 0 cb --json unlock --force
assert_eq "true" "$(json_get "$OUT_FILE" '["removed"][0]["forced"]')" "unlock --force marks the live lock it removed"
assert_exit 0 cb unlock --force
plant_lock $lock "$holder" true prune
assert_exit 0 cb unlock --force
assert_contains "$OUT" "removed lock locks/$lock" "unlock --force names the lock"
assert_contains "$OUT" "--force: removed 1 lock(s) and claim(s), live ones included" "unlock --force says it removed a live lock"
assert_eq "" "$(lock_files)" "unlock --force removed it"

# --- forget --prune while a backup holds its shared lock: the forget is done, the prune is not,
# exit 9 and one JSON document (the forget's, with the prune's error; there were two) ----------
echo one-more >>"$TEST_TMP/src/numbers.txt"
assert_exit 0 cb --quiet backup files "$TEST_TMP/src"
plant_lock $lock "$holder" false "backup files"
assert_exit 9 cb --json forget --keep-last 1 --prune
assert_eq "1 locked 9" "$(json_eval "$OUT_FILE" 'str(d["removed"]) + " " + d["error"]["code"] + " " + str(d["error"]["exitCode"])')" \
    "forget --prune --json, prune locked out: one document, the forget's, with the prune's error"
assert_contains "$ERR" "1 backup forgotten, but the prune failed: repository locked by backup files" \
    "forget --prune: stderr says the forget was done and the prune failed"
assert_eq 1 "$(json_eval <(cb --json list) 'len(d)')" "the forget was done"
assert_exit 0 cb unlock --force

# --- the holder dies: its lock is stale, ignored, reported, removed --------------------------
plant_lock $lock "$holder" false "backup files"
kill -9 "$holder"
wait "$holder" 2>/dev/null
assert_exit 0 cb check
assert_contains "$OUT" "warning: locks/$lock: stale lock of backup files on $host pid $holder" "check reports the dead holder's lock"
assert_contains "$OUT" "process $holder is gone" "check says why it is stale"
assert_exit 0 cb unlock
assert_contains "$OUT" "removed lock locks/$lock" "unlock removes the stale lock"
assert_eq "" "$(lock_files)" "no lock left"
exec {holder_fd}>&-

# --- 2. a database backup killed with SIGKILL while it holds its lock and claim -------------
pg_start
db=$CARIS_PG_DB
pg_small_table "$db"

# A session holds an ACCESS EXCLUSIVE lock on the table until released (pglib.sh): a backup
# takes its repository lock and claim, then waits for the table (counting its rows).
table_lock_take() { pg_table_lock_take "$db" small; }
table_lock_release() { pg_table_lock_release; }
# shellcheck disable=SC2317 # called through wait_until
backup_blocked() {
    [[ -n $(find "$repo/locks" -maxdepth 1 -name 'claim-caris_*' -print -quit) ]] &&
        [[ $(lock_files | grep -vc '^claim-') -ge 1 ]] &&
        [[ $(pg_lock_waiters "$db" small) -ge 1 ]]
}

table_lock_take
bg_start cb --json backup database --full
backup=$BG_PID
if wait_until 60 backup_blocked; then
    pass "the backup holds its lock and claim and waits for the table"
else
    fail "the backup did not reach its lock, claim and table wait" "$(_tail "$BG_ERR")" "$(ls -la "$repo/locks")"
fi
held=$(lock_files)
note "held: $(printf '%s' "$held" | paste -sd ' ')"

# while it runs: its lock and claim are live; unlock keeps them (and leftovers)
printf 'partial pack' >"$repo/data/.tmp-0123456789abcdef"
assert_exit 0 cb --json unlock
assert_eq 0 "$(json_eval "$OUT_FILE" 'len(d["removed"])')" "unlock removed nothing while the backup runs"
assert_eq 2 "$(json_eval "$OUT_FILE" 'len(d["kept"])')" "unlock kept the backup's lock and claim"
assert_eq "$held" "$(lock_files)" "the backup's lock and claim are still there"
assert_true "unlock kept the temporary files (the backup may be writing them)" test -e "$repo/data/.tmp-0123456789abcdef"
assert_exit 0 cb --json check
assert_eq 0 "$(json_eval "$OUT_FILE" 'len(d["warnings"])')" "check warns of nothing while the backup runs"

kill -9 "$backup"
wait "$backup"
assert_eq 137 "$?" "the backup died of SIGKILL"
table_lock_release

# the killed backup left its lock and claim; check reports them, and the temporary file
assert_eq "$held" "$(lock_files)" "the killed backup left its lock and claim"
run cb --json check
assert_rc 0 "check after the kill (warnings only)"
assert_eq true "$(json_get "$OUT_FILE" '["ok"]')" "check says ok"
warn=$(json_eval "$OUT_FILE" '"\n".join(w["object"] + ": " + w["error"] for w in d["warnings"])')
assert_contains "$warn" "stale lock of backup database on $host pid $backup" "check reports the stale lock"
assert_contains "$warn" "stale claim of backup database on $host pid $backup" "check reports the stale claim"
assert_contains "$warn" "process $backup is gone" "check says why"
assert_contains "$warn" "data/.tmp-0123456789abcdef: temporary file of an interrupted write" "check reports the temporary file"
assert_eq 2 "$(json_get "$OUT_FILE" '["stats"]["staleLocks"]')" "stats count the stale lock and claim"

# the stale lock does not block shared operations
assert_exit 0 cb verify --all
# unlock removes them all
assert_exit 0 cb unlock
assert_contains "$OUT" "removed lock locks/" "unlock removed the lock"
assert_contains "$OUT" "removed claim locks/claim-caris_full_" "unlock removed the claim"
assert_contains "$OUT" "removed leftover data/.tmp-0123456789abcdef" "unlock removed the temporary file"
assert_eq "" "$(lock_files)" "no lock or claim left"
assert_false "no temporary file left" test -e "$repo/data/.tmp-0123456789abcdef"
run cb --json check
assert_rc 0 "check after unlock"
assert_eq 0 "$(json_eval "$OUT_FILE" 'len(d["warnings"])')" "check is clean after unlock"
# new backups work
db_backup_json "$TEST_TMP/after.json" --full
assert_rc 0 "a database backup after the kill"
assert_exit 0 cb verify "$BACKUP_ID"
assert_exit 0 cb --quiet backup files "$TEST_TMP/src"

# --- the same wait, but the backup is let finish: nothing lost --------------------------------
table_lock_take
bg_start cb --json backup database --full
backup=$BG_PID backup_out=$BG_OUT
wait_until 60 backup_blocked || fail "the second backup did not block on the table" "$(_tail "$BG_ERR")"
assert_exit 0 cb unlock
assert_contains "$OUT" "kept live lock" "unlock keeps the running backup's lock"
# prune (the exclusive lock) meets the running backup: refused at once with exit 9, or
# waits with --lock-wait and runs once the backup is done
fp_prune=$(find "$repo" -type f ! -path '*/locks/*' -printf '%P %s\n' | sort | md5sum)
run cb prune
assert_rc 9 "prune while a backup runs: exit 9"
assert_contains "$ERR" "repository locked by backup database on $host pid $backup" "prune says who holds the lock"
assert_eq "$fp_prune" "$(find "$repo" -type f ! -path '*/locks/*' -printf '%P %s\n' | sort | md5sum)" \
    "the refused prune changed nothing"
bg_start cb --lock-wait 2m --json prune
pruner=$BG_PID pruner_out=$BG_OUT pruner_err=$BG_ERR
# shellcheck disable=SC2317 # called through wait_until
pruner_waiting() { grep -q "waiting up to 120 s for the repository lock" "$pruner_err"; }
wait_until 60 pruner_waiting || fail "prune --lock-wait did not wait" "$(_tail "$pruner_err")"
table_lock_release
wait "$backup"
assert_eq 0 "$?" "the backup completed after unlock and prune ran beside it"
wait "$pruner"
assert_eq 0 "$?" "prune --lock-wait ran once the backup was done"
assert_contains "$(cat "$pruner_out")" '"repositoryBytes"' "prune reported its work"
id=$(json_get "$backup_out" '["id"]')
assert_contains " $(list_ids) " " $id " "its backup is listed"
assert_exit 0 cb verify "$id"
assert_exit 0 cb check --read-data
assert_eq "" "$(lock_files)" "it released its lock and claim"

# --- kill -9 during a backup, then prune: the stale lock and claim do not stop it, and it
# removes them -----------------------------------------------------------------------------
table_lock_take
bg_start cb --json backup database --full
backup=$BG_PID
wait_until 60 backup_blocked || fail "the third backup did not block on the table" "$(_tail "$BG_ERR")"
kill -9 "$backup"
wait "$backup"
assert_eq 137 "$?" "the third backup died of SIGKILL"
table_lock_release
assert_eq 2 "$(lock_files | wc -l)" "it left its lock and claim"
# the dry run counts what prune removes (it counted temporary files only, not the stale lock
# and claim)
run cb --json prune --dry-run
assert_rc 0 "prune --dry-run after the kill"
dry_leftovers=$(json_get "$OUT_FILE" '["leftoversRemoved"]')
assert_eq 2 "$(lock_files | wc -l)" "the dry run removed nothing"
run cb --json prune
assert_rc 0 "prune after the kill: the stale lock and claim are recognised"
assert_cmp "$(json_get "$OUT_FILE" '["leftoversRemoved"]')" -ge 2 "prune removed the stale lock and claim"
assert_eq "$dry_leftovers" "$(json_get "$OUT_FILE" '["leftoversRemoved"]')" \
    "prune removed as many leftovers as its dry run counted"
assert_eq "" "$(lock_files)" "no lock or claim left after prune"
assert_exit 0 cb check --read-data
assert_exit 0 cb verify --all

# --- a live lock taken on another machine: `unlock` cannot judge it, so the hint says when it
# becomes stale and names `unlock --force` (it used to say `unlock` removes it, which keeps it)
now=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
printf '{"version":2,"exclusive":true,"operation":"prune","host":"other-host.example","boot_id":"x","pid":4242,"pid_start":1,"created":"%s","refreshed":"%s"}' \
    "$now" "$now" >"$repo/locks/feedfacefeedfacefeedfacefeedface"
assert_exit 9 cb check
assert_contains "$ERR" "taken on another machine" "the hint says the lock was taken elsewhere"
assert_contains "$ERR" "counts as stale 30 minutes after it was last written" "it says when it becomes stale"
assert_contains "$ERR" "unlock --force" "it names unlock --force"
assert_exit 0 cb unlock
assert_eq "feedfacefeedfacefeedfacefeedface" "$(lock_files)" "unlock keeps it as live"
assert_exit 0 cb unlock --force
assert_eq "" "$(lock_files)" "unlock --force removes it"

# --- an unreadable lock file (damaged): no holder can be looked up, so `unlock` keeps it until
# it is 30 minutes old; the hint says so and names `unlock --force` (it named `unlock`)
printf 'garbage{' >"$repo/locks/abcdefabcdefabcdefabcdefabcdef12"
assert_exit 9 cb check
assert_contains "$ERR" "it cannot be read" "the hint says the lock cannot be read"
assert_contains "$ERR" "counts as stale 30 minutes after it was last written" "it says when it becomes stale"
assert_contains "$ERR" "unlock --force" "it names unlock --force"
assert_exit 0 cb unlock
assert_eq "abcdefabcdefabcdefabcdefabcdef12" "$(lock_files)" "unlock keeps it as live"
assert_exit 0 cb unlock --force
assert_eq "" "$(lock_files)" "unlock --force removes it"

test_done

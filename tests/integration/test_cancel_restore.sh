#!/usr/bin/env bash
# SIGTERM (or Ctrl-C) during a restore, a verify or a check: it stops, says "cancelled" (exit 1),
# releases its lock, and leaves no half-written target: every file in it is complete and
# verified, no temporary file stays; a verify says nothing of damage. A database restore
# is stopped before pg_restore commits: the database is as it was.
#
# Held mid-way without timing: packhold.py takes a lease on every pack, so that the
# reader's first open(2) of a pack blocks until we release it, and the kernel tells us when
# that happened. We signal then, wait until the signal has been taken (no longer pending in
# any thread: its handler, which only sets the cancel flag, runs as it is taken), and only
# then let the reads go on.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

lock_files() { find "$REPO/locks" -maxdepth 1 -type f ! -name '.*' -printf '%f\n' 2>/dev/null | LC_ALL=C sort; }

# A tree of 400 small files and 3 of several chunks, from a seeded generator.
src=$TEST_TMP/src
python3 - "$src" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(20261130)
for d in range(8):
    os.makedirs(f"{root}/d{d}")
    for i in range(50):
        with open(f"{root}/d{d}/f{i}.txt", "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(100, 30000)))
for i in range(3):
    with open(f"{root}/big{i}.bin", "wb") as f:
        f.write(rnd.randbytes(6 << 20))
PY
init_repo
backup_json "$TEST_TMP/b.json" --full "$src"
assert_rc 0 "a backup of the tree"
id=$BACKUP_ID

# shellcheck disable=SC2317 # called through wait_until
sig_taken() { # PID SIGNUM: no thread of PID has SIGNUM pending
    local bit=$((1 << ($2 - 1))) f m
    for f in /proc/"$1"/status /proc/"$1"/task/*/status; do
        [[ -r $f ]] || continue
        for m in $(awk '/^(SigPnd|ShdPnd):/ { print $2 }' "$f"); do
            (((16#$m & bit) == 0)) || return 1
        done
    done
}

# cancel_during SIGNAL NAME CMD...: runs CMD in the background, held at its first pack read,
# signals it, releases; sets RC, BG_ERR, BG_OUT.
cancel_during() {
    local sig=$1 name=$2
    shift 2
    # shellcheck disable=SC2046 # one argument per pack
    hold_start $(list_packs)
    bg_start "$@"
    local pid=$BG_PID
    wait_until 60 grep -q '^opened' "$HOLD_OUT" || fail "$name: the reader did not reach a pack" "$(_tail "$BG_ERR")"
    assert_ne "" "$(lock_files)" "$name: it holds its lock while held"
    kill -"$sig" "$pid"
    local signum
    signum=$(kill -l "$sig")
    wait_until 30 sig_taken "$pid" "$signum" || fail "$name: the signal was not taken"
    hold_release
    assert_eq released "$(tail -n 1 "$HOLD_OUT")" "$name: the hold lasted until released"
    wait "$pid"
    RC=$?
}

# --- restore files ---------------------------------------------------------------------
for sig in TERM INT; do
    target=$TEST_TMP/target-$sig
    cancel_during "$sig" "restore SIG$sig" cb restore files "$id" --target "$target"
    assert_eq 1 "$RC" "restore SIG$sig: exit 1"
    assert_contains "$(cat "$BG_ERR")" "cancelled" "restore SIG$sig: it says cancelled"
    assert_eq "" "$(lock_files)" "restore SIG$sig: its lock is released"
    assert_eq "" "$(find "$target" -name '.caris-tmp-*' | head -n 3)" "restore SIG$sig: no temporary file left"
    # every file there is whole: the same bytes as in the source
    bad=0 n=0
    while IFS= read -r -d '' f; do
        n=$((n + 1))
        cmp -s "$f" "$src${f#"$target$src"}" || bad=$((bad + 1))
    done < <(find "$target" -type f -print0)
    assert_eq 0 "$bad" "restore SIG$sig: the $n file(s) it left are complete"
    total=$(find "$src" -type f | wc -l)
    ((n < total)) && pass "restore SIG$sig: it stopped before the end ($n of $total files)" ||
        fail "restore SIG$sig: all $total files restored: the cancel was not seen"
done
# the restore then finishes over what the cancelled one left
run cb restore files "$id" --target "$TEST_TMP/target-TERM" --overwrite
assert_rc 0 "a restore over the cancelled one"
assert_true "the tree is whole after it" diff -r "$src" "$TEST_TMP/target-TERM$src"
# SIGKILL during a restore --overwrite over that tree, held (tests/integration/read_faults.c)
# at its first read 4 MiB or more into a pack, when files are being written: they have no name
# until they are complete (they had temporary names, .caris-tmp-*, which a kill left behind)
shim=$TEST_TMP/read_faults.so
cc -shared -fPIC -O2 -o "$shim" "$LIB_DIR/read_faults.c" -ldl || fail "cannot build the fault injector"
mkdir "$TEST_TMP/hold"
bg_start env LD_PRELOAD="$shim" READ_FAULT=hold 'READ_FAULT_FILE=*' READ_FAULT_AT=4194304 \
    READ_FAULT_DIR="$TEST_TMP/hold" "$CARIS_BIN" restore files "$id" --target "$TEST_TMP/target-TERM" --overwrite
# shellcheck disable=SC2317 # called through wait_until
held() { compgen -G "$TEST_TMP/hold/reached-*" >/dev/null; }
wait_until 60 held || fail "restore SIGKILL: the reader did not reach the held read" "$(_tail "$BG_ERR")"
kill -KILL "$BG_PID"
wait "$BG_PID"
assert_eq 137 "$?" "restore --overwrite SIGKILL: killed"
# (a file gets a temporary name for the instant between its link and its rename, when it is
# complete: a kill right then may leave one, whole; never one being written)
partial=0
while IFS= read -r -d '' f; do
    sum=$(sha256sum <"$f")
    find "$src" -type f -exec sha256sum {} + | cut -c1-64 | grep -qx "${sum:0:64}" || partial=$((partial + 1))
done < <(find "$TEST_TMP/target-TERM" -name '.caris-tmp-*' -print0)
assert_eq 0 "$partial" "restore --overwrite SIGKILL: no half-written temporary file left"
note "temporaries left: $(find "$TEST_TMP/target-TERM" -name '.caris-tmp-*' | wc -l)"
assert_true "the tree is still whole" diff -r --exclude='.caris-tmp-*' "$src" "$TEST_TMP/target-TERM$src"
assert_exit 0 cb unlock

# A cancel drops the files still waiting for their batch's sync (named after it): the count
# restore --json reports is of the files in the target, not of those written before the stop.
# 600 small files; one read, past the first 3 MiB of the pack, is held: everything else is
# restored meanwhile, the last (600 - 1) % 256 files waiting for their batch.
smalls=$TEST_TMP/smalls
python3 - "$smalls" <<'PY'
import os, random, sys
rnd = random.Random(20261205)
os.makedirs(sys.argv[1])
for i in range(600):
    with open(f"{sys.argv[1]}/s{i:03d}", "wb") as f:
        f.write(rnd.randbytes(10000))
PY
backup_json "$TEST_TMP/smalls.json" --full "$smalls"
assert_rc 0 "a backup of 600 small files"
rm -rf "$TEST_TMP/hold"
mkdir "$TEST_TMP/hold"
bg_start env LD_PRELOAD="$shim" READ_FAULT=hold 'READ_FAULT_FILE=*' READ_FAULT_AT=3145728 \
    READ_FAULT_DIR="$TEST_TMP/hold" "$CARIS_BIN" --json restore files "$BACKUP_ID" --target "$TEST_TMP/target-smalls"
wait_until 60 held || fail "restore --json SIGINT: the reader did not reach the held read" "$(_tail "$BG_ERR")"
kill -INT "$BG_PID"
wait_until 30 sig_taken "$BG_PID" "$(kill -l INT)" || fail "restore --json SIGINT: the signal was not taken"
touch "$TEST_TMP/hold/release"
wait "$BG_PID"
assert_eq 1 "$?" "restore --json SIGINT: exit 1"
n=$(find "$TEST_TMP/target-smalls" -type f | wc -l)
assert_eq "$n" "$(json_get "$BG_OUT" '["files"]')" \
    "restore --json SIGINT: files counts the $n files in the target, not those dropped with their batch"
assert_eq false "$(json_get "$BG_OUT" '["ok"]')" "restore --json SIGINT: ok is false"

# --- verify ----------------------------------------------------------------------------
cancel_during TERM "verify" cb verify "$id"
assert_eq 1 "$RC" "verify: exit 1"
assert_contains "$(cat "$BG_ERR")" "cancelled" "verify: it says cancelled"
assert_not_contains "$(cat "$BG_OUT" "$BG_ERR")" "DAMAGED" "verify: no damage claimed"
assert_eq "" "$(lock_files)" "verify: its lock is released"
cancel_during INT "verify --all" cb --json verify --all
assert_eq 1 "$RC" "verify --all: exit 1"
assert_contains "$(cat "$BG_ERR")" "cancelled" "verify --all: it says cancelled"
assert_not_contains "$(cat "$BG_OUT")" '"valid": false' "verify --all: no backup reported invalid"
assert_eq "" "$(lock_files)" "verify --all: its lock is released"
assert_exit 0 cb verify "$id"

# --- check --read-data -----------------------------------------------------------------
cancel_during TERM "check" cb check --read-data
assert_eq 1 "$RC" "check: exit 1"
assert_contains "$(cat "$BG_ERR")" "cancelled" "check: it says cancelled"
assert_not_contains "$(cat "$BG_OUT")" "DAMAGED" "check: no damage claimed"
assert_eq "" "$(lock_files)" "check: its lock is released"

# --- restore database ------------------------------------------------------------------
# pg_restore --clean waits for a table another session has locked; the cancel stops it
# there, in its one transaction.
pg_start
db=$CARIS_PG_DB
pg_small_table "$db"
db_backup_json "$TEST_TMP/db.json" --full
assert_rc 0 "a database backup"
dbid=$BACKUP_ID
psql_db "$db" -c "INSERT INTO small VALUES (1001, 'after the backup')" >/dev/null
pg_sum "$db" "$TEST_TMP/before.sum"
for sig in TERM INT; do
    pg_table_lock_take "$db" small
    bg_start cb restore database "$dbid" --clean
    pid=$BG_PID
    # shellcheck disable=SC2317
    waiting() { (($(pg_lock_waiters "$db" small) >= 1)); }
    wait_until 60 waiting || fail "SIG$sig: pg_restore did not reach the locked table" "$(_tail "$BG_ERR")"
    pgr=$(find_child "$pid" pg_restore)
    assert_ne "" "$pgr" "restore database SIG$sig: pg_restore runs"
    kill -"$sig" "$pid"
    wait "$pid"
    assert_eq 1 "$?" "restore database SIG$sig: exit 1"
    assert_contains "$(cat "$BG_ERR")" "cancelled" "restore database SIG$sig: it says cancelled"
    assert_contains "$(cat "$BG_ERR")" "was not changed" "restore database SIG$sig: it says the database was not changed"
    assert_eq "" "$(lock_files)" "restore database SIG$sig: its lock is released"
    assert_eq "" "$(proc_comm "$pgr")" "restore database SIG$sig: pg_restore is gone"
    pg_table_lock_release
    # its session, once it gets the lock, finds its client gone and rolls back
    pg_sum "$db" "$TEST_TMP/after-$sig.sum"
    assert_sum_equal "$TEST_TMP/before.sum" "$TEST_TMP/after-$sig.sum" "restore database SIG$sig: the database is as it was"
done
run cb restore database "$dbid" --clean
assert_rc 0 "a restore after the cancelled ones"
assert_eq 1000 "$(psql_db "$db" -c 'SELECT count(*) FROM small')" "it restored the backup's rows"

test_done

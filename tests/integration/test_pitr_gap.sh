#!/usr/bin/env bash
# Point-in-time recovery across a gap in the WAL archive, against a real PostgreSQL 15: base
# backup B1, batch 1 (with its LSN LA), then one segment that never reaches the archive
# (archive_command drops the segment named in a file: a segment lost as with
# archive_command = 'true'), batch 3 archived after it. PostgreSQL takes a segment
# restore_command cannot find for the end of the archive: without a target it would promote
# there, silently without batch 3. Checked: `restore database --physical --start` without a
# target is refused (exit 4) before anything is written, naming the missing segment, how far
# recovery reaches and what to do; so is --to-lsn at the gap; --to-lsn LA (before the gap)
# restores batch 1; a --to-xid after the gap fails (PostgreSQL stops before the target) with a
# hint naming the gap; a base backup B2 after the gap restores everything; and --to-xid of a
# commit before B2 without an id (B2 is chosen) fails with a hint to name an older backup and
# the server's log named. A --to-lsn past the archive's end without --start is written with a
# warning (exit 3). A segment archived with its first page right and the rest damaged (the
# push check reads the first page) ends recovery there: a restore without a target then fails
# (exit 4) after the server promoted, naming the segment, and stops the server.
# shellcheck disable=SC2154 # data, envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
pitr_setup # repository, $data, $envf, $R; cb as the server's user
pitr_stop_started_at_exit

# archive_command: wal push, but the segment named in $drop is "archived" nowhere, and the one
# named in $damage is archived with its first page only (the rest zeros: the push check reads
# the first page; a recycled file partly overwritten looks the same to it)
drop=$TEST_TMP/drop
damage=$TEST_TMP/damage
cat >"$TEST_TMP/archive.sh" <<EOF
#!/bin/sh
[ "\$2" = "\$(cat '$drop' 2>/dev/null)" ] && exit 0
if [ "\$2" = "\$(cat '$damage' 2>/dev/null)" ]; then
    mkdir -p '$R/dmg' && head -c 8192 "\$1" >'$R/dmg/'"\$2" &&
        head -c \$((\$(stat -c %s "\$1") - 8192)) /dev/zero >>'$R/dmg/'"\$2" || exit 1
    exec '$CARIS_BIN' --quiet --env-file '$envf' wal push '$R/dmg/'"\$2"
fi
exec '$CARIS_BIN' --quiet --env-file '$envf' wal push "\$1"
EOF
chmod 0755 "$TEST_TMP/archive.sh"
pitr_archive_on "$TEST_TMP/archive.sh %p %f"
psql_db "$CARIS_PG_DB" -c "CREATE TABLE t (i int PRIMARY KEY, batch int)" || fail "create t"

q() { psql_db "${2:-$CARIS_PG_DB}" -c "$1"; }
batch() { q "INSERT INTO t SELECT g, $1 FROM generate_series($1 * 1000 + 1, $1 * 1000 + 100) g; SELECT pg_current_xact_id()"; }
archive_all() { pitr_archive_all q; }
restore_start() { pitr_restore_start "$@"; }
rows_at() {
    "$CARIS_PG_BIN/psql" -X -q -At -h "$R/$1" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" \
        -c "SELECT count(*) || ' ' || string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) FROM t" </dev/null
}
stop_at() { as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/$1" -m fast -w -s >/dev/null 2>&1; }
# nothing_written NAME: neither $R/NAME nor a temporary directory beside it
nothing_written() { [[ ! -e $R/$1 && -z $(find "$R" -maxdepth 1 -name ".$1.caris-*") ]]; }

# 1. B1, batch 1 and LA (archived); batch 2 in a segment that is lost; batch 3 archived
run cb --json backup database --physical
assert_rc 0 "base backup B1"
B1=$(json_get "$OUT_FILE" '["id"]')
X1=$(batch 1) || fail "batch 1"
LA=$(q "SELECT pg_current_wal_insert_lsn()" postgres)
archive_all
batch 2 >/dev/null || fail "batch 2"
# the segment batch 2 is in: not complete yet, so not archived before $drop names it
lost=$(q "SELECT pg_walfile_name(pg_current_wal_insert_lsn())" postgres)
echo "$lost" >"$drop"
archive_all
X3=$(batch 3) || fail "batch 3"
archive_all
note "B1=$B1 LA=$LA lost=$lost X1=$X1 X3=$X3"
run cb --json wal list
assert_rc 0 "wal list"
assert_eq "1 $lost $lost" "$(json_eval "$OUT_FILE" '"%d %s %s" % (len(d["gaps"]), d["gaps"][0]["from"], d["gaps"][0]["to"])')" \
    "wal list: the lost segment is the one gap"
GS=$(json_eval "$OUT_FILE" 'd["gaps"][0]["startLsn"]')
run cb check
assert_rc 4 "check: the gap cuts short B1's recovery"

# 2. no target: refused before anything is written, the segment and the way out named
restore_start none
assert_rc 4 "restore without a target across the gap is refused (exit 4)"
assert_contains "$ERR" "WAL segment $lost is missing from the WAL archive" "the error names the missing segment"
assert_contains "$ERR" "backup $B1 can replay the WAL only up to $GS" "the error says how far recovery reaches"
assert_contains "$ERR" "restore with --to-lsn before $GS" "the hint says how to accept the loss"
assert_contains "$ERR" "wal push" "the hint says how to put the segment back"
assert_true "the refused restore wrote nothing" nothing_written none
run cb --env-file "$envf" restore database --physical --pgdata "$R/none" --timeline current "$B1"
assert_rc 4 "with B1's id and --timeline current: refused as well"
assert_contains "$ERR" "WAL segment $lost" "--timeline current: the error names the segment"

# 3. --to-lsn at the gap's start: refused; before it (LA): batch 1, promoted
restore_start atgap --to-lsn "$GS"
assert_rc 4 "--to-lsn at the gap's start is refused"
assert_contains "$ERR" "cannot reach the target $GS" "the error says the target cannot be reached"
assert_true "the refused --to-lsn wrote nothing" nothing_written atgap
restore_start la --to-lsn "$LA"
assert_rc 0 "--to-lsn LA (before the gap) restores"
assert_eq promoted "$(json_get "$OUT_FILE" '["state"]')" "to LA: promoted"
assert_eq "100 1" "$(rows_at la)" "to LA: exactly batch 1"
stop_at la

# 4. --to-xid of batch 3 (after the gap) from B1: PostgreSQL stops before the target; the hint
# names the gap
restore_start x3 --to-xid "$X3" "$B1"
assert_rc 10 "--to-xid after the gap fails: the server stops before the target"
assert_contains "$ERR" "stopped before reaching the recovery target" "the error says the target was not reached"
assert_contains "$ERR" "HINT: WAL segment $lost is missing" "the hint names the missing segment"

# 5. B2 after the gap: without a target it restores everything (no gap after its start)
run cb --json backup database --physical
assert_rc 0 "base backup B2 after the gap"
B2=$(json_get "$OUT_FILE" '["id"]')
restore_start all
assert_rc 0 "without a target and an id: B2, after the gap, restores"
assert_eq "$B2" "$(json_get "$OUT_FILE" '["backupId"]')" "B2 is chosen"
assert_eq "300 1,2,3" "$(rows_at all)" "from B2: batches 1, 2 and 3"
stop_at all

# 5b. --to-lsn past the archive's end, not started: written, but said (exit 3 and a warning):
# recovery reaches it only if the rest is archived first (it exited 0 without a word, and the
# server refused to start later)
run cb --env-file "$envf" --json restore database --physical --pgdata "$R/past" --to-lsn FF/0
assert_rc 3 "--to-lsn past the archive's end without --start: exit 3"
assert_contains "$(json_eval "$OUT_FILE" '" ".join(d.get("warnings", []))')" "the WAL archive ends at" \
    "... its warning says where the archive ends"
assert_contains "$ERR" "before the target FF/0" "... on stderr too, naming the target"
assert_true "... and the data directory is written" test -f "$R/past/PG_VERSION"
run cb --env-file "$envf" restore database --physical --pgdata "$R/past-current" --timeline current --to-lsn FF/0
assert_rc 3 "the same with --timeline current (the backup's own): exit 3"
assert_contains "$ERR" "before the target FF/0" "... with the warning"

# 6. --to-xid of batch 1 without an id: B2 (the newest) is chosen, whose recovery never sees
# that commit: the hint says to name an older backup, the error names the server's log and
# quotes it from a line's start
restore_start x1 --to-xid "$X1"
assert_rc 10 "--to-xid before B2 without an id fails"
assert_contains "$ERR" "name an older base backup's id (\`caris-backup list --type database\`)" \
    "the hint says to name an older base backup"
assert_contains "$ERR" "(its log: $R/x1.log):" "the error names the server's log"
assert_match '^20[0-9][0-9]-' "$(sed -n '/(its log: /{n;p;q}' "$ERR_FILE")" "the log excerpt starts at a line's start"

# 7. a segment archived but damaged after its first page (batch 4's), batch 5 archived after
# it: recovery from B2 without a target ends in it and PostgreSQL promotes there, without
# batch 5 (it exited 0, "promoted"): the restore fails (exit 4), names the segment, and the
# server is stopped; the data directory is kept
q "SELECT pg_walfile_name(pg_current_wal_insert_lsn())" postgres >"$damage" || fail "damaged segment's name"
dmg=$(cat "$damage")
# 2,000 rows: WAL well past the segment's first page (the switch record must not fit in it)
q "INSERT INTO t SELECT g, 4 FROM generate_series(10001, 12000) g" >/dev/null || fail "batch 4"
archive_all
batch 5 >/dev/null || fail "batch 5"
archive_all
run cb --env-file "$envf" wal get "$dmg" "$R/dmg/got"
assert_rc 0 "wal get of the damaged segment"
assert_true "the archive holds the damaged copy (wal push accepted it)" cmp -s "$R/dmg/$dmg" "$R/dmg/got"
restore_start short
assert_rc 4 "a recovery that ends before the archive's end fails (exit 4)"
assert_contains "$ERR" "(in WAL segment $dmg) and the server promoted there" "the error names the segment where recovery ended"
assert_contains "$ERR" "the transactions archived after" "the error says what is missing"
assert_contains "$ERR" "the restored server was stopped" "the error says the server was stopped"
assert_contains "$ERR" "to accept the loss, start it as it is" "the hint gives the way to accept the loss"
assert_contains "$ERR" "says how to replay a good copy; DIR is kept" "the hint is whole (it was cut at 512 bytes)"
assert_contains "$ERR" "its log, $R/short.log, says why" "the error names the server's log"
assert_eq stopped "$(json_get "$OUT_FILE" '["state"]')" "--json: state stopped"
assert_false "the restored server is stopped" test -e "$R/short/postmaster.pid"
assert_true "the restored data directory is kept" test -f "$R/short/PG_VERSION"

test_done

#!/usr/bin/env bash
# WAL that never reached the archive at the edges of what was archived, against a real
# PostgreSQL 15 (both found by a review; before the fix, check passed the first and the
# restore of the second promoted early and reported success):
#  1. A base backup B2 made with --no-archive-check while archive_command loses every segment
#     of timeline 1 from one on: its own WAL (start to stop) lies after the last archived
#     segment. `check` names B2 (exit 4); its restore is refused before anything is written.
#  2. The source then promotes to timeline 2 (a failover whose old primary's archiver was
#     behind): timeline 1's last segments are missing before the switch. Recovery of B1 to
#     timeline 2 would stop at the hole and promote without batches 2 and 3; it is refused
#     (exit 4), naming the first missing segment of timeline 1.
# Also (0.): a base backup in a repository whose WAL archive is empty is named by check and its
# restore refused (the archive's unknown segment size made both say nothing was missing).
# shellcheck disable=SC2154 # data, envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
pitr_setup # repository, $data, $envf, $R; cb as the server's user
pitr_stop_started_at_exit

# archive_command: wal push, but timeline 1's segments from the one named in $drop on are
# "archived" nowhere
drop=$TEST_TMP/drop
cat >"$TEST_TMP/archive.sh" <<EOF
#!/bin/sh
case "\$2" in
00000001????????????????)
    d=\$(cat '$drop' 2>/dev/null)
    [ -n "\$d" ] && [ "\$2" = "\$(printf '%s\n%s\n' "\$2" "\$d" | LC_ALL=C sort | tail -n 1)" ] && exit 0 ;;
esac
exec '$CARIS_BIN' --quiet --env-file '$envf' wal push "\$1"
EOF
chmod 0755 "$TEST_TMP/archive.sh"
pitr_archive_on "$TEST_TMP/archive.sh %p %f"
psql_db "$CARIS_PG_DB" -c "CREATE TABLE t (i int PRIMARY KEY, batch int)" || fail "create t"

q() { psql_db "${2:-$CARIS_PG_DB}" -c "$1"; }
batch() { q "INSERT INTO t SELECT g, $1 FROM generate_series($1 * 1000 + 1, $1 * 1000 + 100) g"; }
archive_all() { pitr_archive_all q; }
nothing_written() { [[ ! -e $R/$1 && -z $(find "$R" -maxdepth 1 -name ".$1.caris-*") ]]; }
check_errors() { json_eval "$OUT_FILE" '"\n".join(x["object"] + ": " + x["error"] for x in d["errors"])'; }

# --- 0. a repository whose WAL archive is empty: a base backup made there with
# --no-archive-check has none of its WAL (the archive's segment size was then unknown, 0, and
# both check and restore took "nothing missing": the restore wrote a data directory no server
# could start)
mkdir -p "$TEST_TMP/r0"
[[ $(id -u) == 0 ]] && chown "$CARIS_PG_OS_USER:" "$TEST_TMP/r0"
r0=$TEST_TMP/r0/repo
assert_exit 0 cb --quiet --repo "$r0" init
run cb --repo "$r0" --json backup database --physical --no-archive-check
assert_rc 3 "a base backup B0 into a repository with no WAL archive (exit 3: a warning)"
B0=$(json_get "$OUT_FILE" '["id"]')
run cb --repo "$r0" --json check
assert_rc 4 "check: B0's own WAL is not in the (empty) archive"
assert_contains "$(check_errors)" "of base backup $B0 (the WAL it needs to become consistent)" "check names B0"
run cb --env-file "$envf" --repo "$r0" restore database --physical --pgdata "$R/b0" "$B0"
assert_rc 4 "restoring B0 is refused (exit 4)"
assert_contains "$ERR" "backup $B0 cannot be restored" "the refusal names the backup"
assert_contains "$ERR" "not in the WAL archive" "and says its WAL is not archived"
assert_true "the refused restore wrote nothing" nothing_written b0

# B1 and batch 1, archived
run cb --json backup database --physical
assert_rc 0 "base backup B1"
B1=$(json_get "$OUT_FILE" '["id"]')
batch 1 || fail "batch 1"
archive_all

# --- 1. from here on timeline 1's WAL is lost; B2 does not wait for its WAL ---------------
lost=$(q "SELECT pg_walfile_name(pg_current_wal_insert_lsn())" postgres)
echo "$lost" >"$drop"
run cb --json backup database --physical --no-archive-check
assert_rc 3 "base backup B2 with --no-archive-check (exit 3: a warning)"
B2=$(json_get "$OUT_FILE" '["id"]')
batch 2 || fail "batch 2"
archive_all
note "B1=$B1 B2=$B2 lost from $lost on"
run cb --json check
assert_rc 4 "check: B2's own WAL is not in the archive"
assert_contains "$(check_errors)" "of base backup $B2 (the WAL it needs to become consistent)" "check names B2"
assert_contains "$(check_errors)" "not in the archive: the backup cannot be restored" "and says what it means"
assert_eq "$B2" "$(json_eval "$OUT_FILE" '" ".join(b for x in d["errors"] for b in x["backups"])')" \
    "only B2 is named (B1's recovery reaches the end of the archive)"
run cb --env-file "$envf" restore database --physical --pgdata "$R/b2" "$B2"
assert_rc 4 "restoring B2 is refused (exit 4)"
assert_contains "$ERR" "backup $B2 cannot be restored" "the refusal names the backup"
assert_contains "$ERR" "not in the WAL archive" "and says its WAL is not archived"
assert_contains "$ERR" "wal push" "the hint says how to put it there"
assert_true "the refused restore wrote nothing" nothing_written b2

# --- 2. the source promotes to timeline 2: timeline 1's lost segments precede the switch ---
pg_pause || fail "stop the source"
as_pg sh -c "echo \"restore_command = 'false'\" >>'$data/postgresql.auto.conf' && touch '$data/recovery.signal'" ||
    fail "recovery.signal"
pg_resume || fail "start the source in recovery"
# shellcheck disable=SC2317 # called through wait_until
promoted() { [[ $(q "SELECT NOT pg_is_in_recovery()" postgres 2>/dev/null) == t ]]; }
wait_until 60 promoted || fail "the source did not promote"
assert_eq 00000002 "$(q 'SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)' postgres)" "the source writes timeline 2"
batch 3 || fail "batch 3"
archive_all
run cb --json wal list
assert_rc 0 "wal list"
assert_contains "$(json_eval "$OUT_FILE" '"\n".join(g["from"] + " " + g["reason"] for g in d["gaps"])')" \
    "$lost missing before the switch to timeline 2" "wal list shows timeline 1's lost segments before the switch"
run cb --env-file "$envf" restore database --physical --pgdata "$R/b1" "$B1"
assert_rc 4 "restoring B1 to timeline 2 across the hole is refused (exit 4)"
assert_contains "$ERR" "$lost" "the refusal names the first lost segment of timeline 1"
assert_contains "$ERR" "is missing from the WAL archive" "and says it is missing"
assert_true "the refused restore wrote nothing" nothing_written b1

test_done

#!/usr/bin/env bash
# Point-in-time recovery across a timeline switch, against a real PostgreSQL 15 archiving with
# `caris-backup wal push`. A base backup B1 on timeline 1, batches of committed rows; an
# earlier PITR of B1 to T1 is promoted (timeline 2) and becomes the primary, archiving into
# the same repository (its 00000002.history with it); more batches on timeline 2 with their
# times. Checked: the SAME base backup B1 restored to a time on timeline 2 has exactly the rows
# committed before it on timeline 2's history (the batch of timeline 1 after the branch point
# is not there), with and without the backup's id; a base backup B2 taken on timeline 2
# restores; `wal list` and `check` follow the switch (no gap, window on timeline 2); after
# forget + prune the history is kept and B2 still restores; --timeline current restores the
# abandoned timeline 1. And a base backup waits for its WAL in this repository: with
# archive_command archiving nowhere it fails (nothing listed); --no-archive-check warns.
# shellcheck disable=SC2154 # data, envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
pitr_setup # repository, $data, $envf, $R; cb as the server's user
pitr_stop_started_at_exit

pitr_archive_on "$CARIS_BIN --quiet --env-file $envf wal push %p"
psql_db "$CARIS_PG_DB" -c "CREATE TABLE t (i int PRIMARY KEY, batch int)" || fail "create t"

# SQL on the current primary: the source first, then the promoted restore (host, port)
PHOST=$CARIS_PG_SOCKET PPORT=$CARIS_PG_PORT
q() { "$CARIS_PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$PHOST" -p "$PPORT" -U "$CARIS_PG_USER" -d "${2:-$CARIS_PG_DB}" -c "$1" </dev/null; }
now_utc() { q "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')" postgres; }
batch() { q "INSERT INTO t SELECT g, $1 FROM generate_series($1 * 1000 + 1, $1 * 1000 + 100) g"; }
archive_all() { pitr_archive_all q; }

restore_start() { pitr_restore_start "$@"; }
q_at() { "$CARIS_PG_BIN/psql" -X -q -At -h "$R/$1" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" -c "$2" </dev/null; }
rows_at() { q_at "$1" "SELECT count(*) || ' ' || string_agg(DISTINCT batch::text, ',' ORDER BY batch::text) FROM t"; }
stop_at() { as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/$1" -m fast -w -s >/dev/null 2>&1; }

# 1. timeline 1: base backup B1, batch 1, T1, batch 2 (after the branch point to come), T2,
# batch 6
run cb --json backup database --physical
assert_rc 0 "base backup B1 on timeline 1"
B1=$(json_get "$OUT_FILE" '["id"]')
assert_eq 1 "$(json_get "$OUT_FILE" '["physical"]["startTimeline"]')" "B1 starts on timeline 1"
assert_eq ok "$(json_get "$OUT_FILE" '["physical"]["archiveCheck"]["status"]')" "B1's WAL was seen in the archive"
note "archive check: $(json_get "$OUT_FILE" '["physical"]["archiveCheck"]["segments"]') segment(s), waited $(json_get "$OUT_FILE" '["physical"]["archiveCheck"]["waitedMs"]') ms"
batch 1 || fail "batch 1"
T1=$(now_utc)
batch 2 || fail "batch 2"
T2=$(now_utc)
batch 6 || fail "batch 6" # a commit after T2 on timeline 1: recovery to T2 stops there
archive_all
note "B1=$B1 T1=$T1 T2=$T2"

# 2. an earlier PITR: B1 to T1, made the new primary (timeline 2) archiving into the same
# repository; the old primary is retired. The restore writes archive_mode = 'off'; the new
# primary turns it on before its first start, so the switch's .history file is archived.
run cb --env-file "$envf" restore database --physical --pgdata "$R/p2" --to-time "$T1" "$B1"
assert_rc 0 "restore B1 to T1 (without --start)" || test_done
pg_pause || fail "stop the old primary"
P2PORT=$(free_port)
as_pg sh -c "echo \"archive_mode = 'on'\" >>'$R/p2/postgresql.auto.conf'"
STARTED+=("$R/p2")
as_pg "$CARIS_PG_BIN/pg_ctl" start -D "$R/p2" -l "$R/p2.log" -W -s \
    -o "-p $P2PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='$R/p2'" >/dev/null ||
    { fail "start the restored server p2" "$(_tail "$R/p2.log")"; test_done; }
PHOST=$R/p2 PPORT=$P2PORT
# shellcheck disable=SC2317
_promoted() { [[ $(q "SELECT NOT pg_is_in_recovery()" postgres 2>/dev/null) == t ]]; }
wait_until 90 _promoted || { fail "p2 did not reach T1 and promote" "$(_tail "$R/p2.log")"; test_done; }
assert_eq 2 "$(q "SELECT timeline_id FROM pg_control_checkpoint()" postgres)" "p2 is on timeline 2"
assert_eq "100 1" "$(q "SELECT count(*) || ' ' || string_agg(DISTINCT batch::text, ',') FROM t")" "p2 has batch 1 only"

# 3. timeline 2: batch 3, T3, batch 4, archived (with 00000002.history)
batch 3 || fail "batch 3 on timeline 2"
T3=$(now_utc)
batch 4 || fail "batch 4 on timeline 2"
archive_all
note "T3=$T3"
run cb --json wal list
assert_rc 0 "wal list --json"
assert_true "the archive holds 00000002.history" json_eval "$OUT_FILE" \
    'any(r["name"] == "00000002.history" for r in d["files"])'
assert_eq "1" "$(json_eval "$OUT_FILE" '[t["parent"] for t in d["timelines"] if t["timeline"] == 2][0]')" \
    "wal list: timeline 2's parent is timeline 1"
assert_eq 2 "$(json_get "$OUT_FILE" '["recoveryWindow"]["timeline"]')" "the recovery window ends on timeline 2"
assert_eq 0 "$(json_eval "$OUT_FILE" 'len(d["gaps"])')" "no gap across the switch"
run cb check
assert_rc 0 "check: the archive across the switch has no gap"

# 4. the SAME base backup B1 to T3 on timeline 2: batches 1 and 3, never batch 2
restore_start a "$B1" --to-time "$T3"
assert_rc 0 "restore B1 to T3 (on timeline 2)"
assert_eq "200 1,3" "$(rows_at a)" "B1 to T3: batches 1 and 3 (batch 2 of timeline 1 is not there)"
stop_at a
restore_start b --to-time "$T3"
assert_rc 0 "restore to T3 without an id"
assert_eq "$B1" "$(json_get "$OUT_FILE" '["backupId"]')" "without an id B1 is chosen"
assert_eq "200 1,3" "$(rows_at b)" "to T3 without an id: batches 1 and 3"
stop_at b
# the abandoned timeline 1 on request: to T2 with --timeline current
restore_start c "$B1" --to-time "$T2" --timeline current
assert_rc 0 "restore B1 to T2 --timeline current"
assert_eq "200 1,2" "$(rows_at c)" "--timeline current: batches 1 and 2 of timeline 1"
stop_at c
restore_start c1 "$B1" --to-time "$T2" --timeline 1
assert_rc 0 "restore B1 to T2 --timeline 1"
assert_eq "200 1,2" "$(rows_at c1)" "--timeline 1: batches 1 and 2"
stop_at c1
run cb --env-file "$envf" restore database --physical --pgdata "$R/bad" --timeline 0 "$B1"
assert_rc 2 "--timeline 0 is refused"

# 5. a base backup B2 taken on timeline 2, batch 5, T5, batch 7
# (POSTGRES_URL from the environment wins over the env file's)
P2URL="postgresql://$CARIS_PG_USER:$CARIS_PG_PASSWORD@127.0.0.1:$P2PORT/$CARIS_PG_DB"
POSTGRES_URL=$P2URL run cb --json backup database --physical
assert_rc 0 "base backup B2 on timeline 2"
B2=$(json_get "$OUT_FILE" '["id"]')
assert_eq 2 "$(json_get "$OUT_FILE" '["physical"]["startTimeline"]')" "B2 starts on timeline 2"
batch 5 || fail "batch 5"
T5=$(now_utc)
batch 7 || fail "batch 7"
archive_all
restore_start d "$B2" --to-time "$T5"
assert_rc 0 "restore B2 (timeline 2) to T5"
assert_eq "400 1,3,4,5" "$(rows_at d)" "B2 to T5: batches 1, 3, 4 and 5"
stop_at d
restore_start e --to-time "$T3"
assert_rc 0 "restore to T3 without an id, B2 existing"
assert_eq "$B1" "$(json_get "$OUT_FILE" '["backupId"]')" "to T3 (before B2) B1 is chosen"
stop_at e
restore_start f --to-time "$T5"
assert_rc 0 "restore to T5 without an id"
assert_eq "$B2" "$(json_get "$OUT_FILE" '["backupId"]')" "to T5 the latest base backup, B2, is chosen"
assert_eq "400 1,3,4,5" "$(rows_at f)" "to T5 without an id: batches 1, 3, 4 and 5"
stop_at f

# 6. retention: B1 forgotten and pruned; the .history files stay, B2 still restores to T5
run cb --json forget --keep-last 1
assert_rc 0 "forget --keep-last 1"
run cb --json prune
assert_rc 0 "prune"
run cb --json wal list
assert_true "prune keeps 00000002.history" json_eval "$OUT_FILE" \
    'any(r["name"] == "00000002.history" for r in d["files"])'
restore_start g --to-time "$T5"
assert_rc 0 "after prune: restore to T5"
assert_eq "$B2" "$(json_get "$OUT_FILE" '["backupId"]')" "after prune: B2"
assert_eq "400 1,3,4,5" "$(rows_at g)" "after prune, to T5: batches 1, 3, 4 and 5"
stop_at g

# 7. a base backup waits for its WAL in this repository: with archive_command archiving
# nowhere it fails after --archive-timeout, naming the missing segment, and lists nothing;
# --no-archive-check takes it with a warning
q "ALTER SYSTEM SET archive_command = 'true'" postgres && q "SELECT pg_reload_conf()" postgres >/dev/null ||
    fail "archive_command = 'true'"
n_before=$(list_ids | wc -w)
POSTGRES_URL=$P2URL run cb --json backup database --physical --archive-timeout 3
assert_rc 10 "a base backup whose WAL does not reach the repository fails"
assert_contains "$(json_get "$OUT_FILE" '["error"]["message"]')" "did not reach this repository's WAL archive" \
    "the error says the WAL did not reach the archive"
assert_match 'WAL segment 00000002[0-9A-F]{16} ' "$(json_get "$OUT_FILE" '["error"]["message"]')" "the error names the missing segment"
assert_contains "$(json_get "$OUT_FILE" '["error"]["hint"]')" "archive_command" "the hint asks about archive_command"
assert_eq "$n_before" "$(list_ids | wc -w)" "no backup is listed after the failed check"
POSTGRES_URL=$P2URL run cb --json backup database --physical --no-archive-check
assert_rc 3 "--no-archive-check: the backup completes with a warning (exit 3)"
assert_eq archive-check-skipped "$(json_get "$OUT_FILE" '["warnings"][0]["kind"]')" "the warning says the check was skipped"
assert_eq skipped "$(json_get "$OUT_FILE" '["physical"]["archiveCheck"]["status"]')" "archiveCheck: skipped"
assert_true "a backup with a skipped check: the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "backup database --physical" "$OUT_FILE"
run cb backup database --physical --archive-timeout 0
assert_rc 2 "--archive-timeout 0 is refused"

test_done

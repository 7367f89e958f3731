#!/usr/bin/env bash
# An incremental database backup after changes to about 1% of the rows records the full
# backup as its parent and adds a small fraction of the full backup's bytes; each backup
# restores to the database as it was when it was taken.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
db=$CARIS_PG_DB
psql_db "$db" -f "$PG_FIXTURES/rich.sql" >/dev/null || fail "loading fixtures/rich.sql failed"
# A larger table, so that the dump (~25 MB) has enough chunks for the ratio to mean
# something: 100,000 notes of ~230 bytes of incompressible text.
psql_db "$db" -c "CREATE TABLE clinical.notes (id integer PRIMARY KEY, patient integer NOT NULL,
        written timestamptz NOT NULL, body text NOT NULL);
    INSERT INTO clinical.notes
    SELECT i, 1 + i % 1200, timestamptz '2024-01-01 00:00:00+00' + i * interval '5 minutes',
           'nota ' || i || ': ' || md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text)
           || md5((i * 17)::text) || md5((i * 19)::text) || md5((i * 23)::text) || md5((i * 29)::text)
    FROM generate_series(1, 100000) AS i" >/dev/null || fail "creating clinical.notes failed"
pg_sum "$db" "$TEST_TMP/v1.sum"

init_repo
db_backup_json "$TEST_TMP/full.json" --full
assert_rc 0 "full backup"
full=$BACKUP_ID
full_added=$(json_get "$TEST_TMP/full.json" '["stats"]["bytesAdded"]')
full_read=$(json_get "$TEST_TMP/full.json" '["stats"]["bytesRead"]')
note "full: dump $full_read bytes, added $full_added bytes"
assert_cmp "$full_read" -gt 20000000 "the dump is over 20 MB"

# ~1% of the rows change the way an application changes them: recent notes edited, new
# notes and sessions appended, a few rows deleted, a sequence advanced. (The new notes are
# as long as the old ones on purpose: shorter rows would fit into the ~100 bytes every
# page of the table has left, and PostgreSQL would scatter them over the whole table, so
# over the whole dump; measured: 1000 rows of 90 bytes make 28% of the dump's chunks new.)
psql_db "$db" -c "UPDATE clinical.notes SET body = body || ' (revisto)' WHERE id > 99000;
    INSERT INTO clinical.notes
    SELECT i, 1 + i % 1200, timestamptz '2024-01-01 00:00:00+00' + i * interval '5 minutes',
           'nova ' || i || ': ' || md5(i::text) || md5((i * 3)::text) || md5((i * 5)::text)
           || md5((i * 11)::text) || md5((i * 31)::text) || md5((i * 37)::text) || md5((i * 41)::text)
    FROM generate_series(100001, 101000) AS i;
    DELETE FROM clinical.notes WHERE id IN (500, 50000, 75000);
    UPDATE clinical.sessions SET notes = 'corrigido' WHERE id BETWEEN 2990 AND 3000;
    INSERT INTO public.appointments (id, patient, at, room, fee, confirmed)
    SELECT i, 'Novo ' || i, timestamptz '2026-03-01 10:00:00+00' + i * interval '1 hour', 'Sala 9', 80, true
    FROM generate_series(1501, 1520) AS i;
    SELECT nextval('audit.event_ids') FROM generate_series(1, 5);" >/dev/null ||
    fail "changing the database failed"
pg_sum "$db" "$TEST_TMP/v2.sum"

db_backup_json "$TEST_TMP/inc.json" --incremental
assert_rc 0 "incremental backup after changes"
inc=$BACKUP_ID
assert_match '^caris_incremental_' "$inc" "incremental backup id"
assert_eq incremental "$(json_get "$TEST_TMP/inc.json" '["mode"]')" "summary: mode incremental"
assert_eq "$full" "$(json_get "$TEST_TMP/inc.json" '["parent"]')" "summary: parent is the full backup"
inc_added=$(json_get "$TEST_TMP/inc.json" '["stats"]["bytesAdded"]')
note "incremental: added $inc_added bytes = $((inc_added * 1000 / (full_added > 0 ? full_added : 1)))‰ of the full's $full_added"
assert_cmp "$inc_added" -gt 0 "the incremental added something"
assert_cmp "$((inc_added * 100))" -lt "$((full_added * 10))" "the incremental adds under 10% of the full's bytes"
assert_cmp "$(json_get "$TEST_TMP/inc.json" '["stats"]["chunksKnown"]')" -gt 0 "the incremental reused chunks"
assert_eq '[100997]' "$(json_eval "$TEST_TMP/inc.json" "[t['rows'] for t in d['tables'] if t['name'] == 'notes']")" \
    "summary: the new row count of clinical.notes"

# nothing changed: an incremental adds almost nothing
db_backup_json "$TEST_TMP/inc2.json" --incremental
assert_rc 0 "incremental backup without changes"
inc2=$BACKUP_ID
assert_eq "$inc" "$(json_get "$TEST_TMP/inc2.json" '["parent"]')" "summary: parent is the previous incremental"
inc2_added=$(json_get "$TEST_TMP/inc2.json" '["stats"]["bytesAdded"]')
note "incremental without changes: added $inc2_added bytes"
assert_cmp "$((inc2_added * 100))" -lt "$((full_added * 2))" "an unchanged database adds under 2% of the full's bytes"

# each backup restores its own state
CARIS_RESTORE_TARGET_URL=$(pg_url from_inc) run cb restore database "$inc" --create --verify
assert_rc 0 "restore of the incremental"
pg_sum from_inc "$TEST_TMP/from_inc.sum"
assert_sum_equal "$TEST_TMP/v2.sum" "$TEST_TMP/from_inc.sum" "the incremental restores the changed database"
CARIS_RESTORE_TARGET_URL=$(pg_url from_full) run cb restore database "$full" --create --verify
assert_rc 0 "restore of the full backup"
pg_sum from_full "$TEST_TMP/from_full.sum"
assert_sum_equal "$TEST_TMP/v1.sum" "$TEST_TMP/from_full.sum" "the full backup still restores the original database"

run cb --json list --type database
assert_eq "$(printf '%s\n' "$full" "$inc" "$inc2" | LC_ALL=C sort | paste -sd ' ')" \
    "$(json_eval "$OUT_FILE" '" ".join(sorted(b["id"] for b in d))')" "list shows the three backups"
assert_exit 0 cb verify "$inc"
assert_exit 0 cb check

test_done

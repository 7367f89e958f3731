#!/usr/bin/env bash
# A database backup into an S3 repository (s3rver on loopback) and back: full and
# incremental backups of the rich fixture, restores (into an empty database, and with
# --create) equal object by object and row by row, verify, test-restore and its record in the
# repository. A restore reads the dump in ranged GETs covering many chunks (counted in the
# server's log, with a bound from the dump's size and the packs); a damaged pack fails a
# restore --clean with exit 4, naming the chunk, and the target database stays as it was.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
source "$(dirname "$0")/s3lib.sh"
at_exit '_lib_on_exit; _pg_on_exit; _s3_on_exit'

s3_start bkt
export BACKUP_REPOSITORY=s3:$S3_ENDPOINT/bkt/db
pg_start
src=$CARIS_PG_DB
psql_db "$src" -f "$PG_FIXTURES/rich.sql" >/dev/null || fail "loading fixtures/rich.sql failed"
# some bulk (~26 MB of dump, ~1,500 chunks, packs of several MiB): a restore's reads can be
# counted against its chunks and packs
psql_db "$src" -c "CREATE TABLE public.bulk AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS t
    FROM generate_series(1, 300000) g" >/dev/null || fail "loading the bulk table failed"
pg_sum "$src" "$TEST_TMP/src.sum" || fail "dbsum of the source failed"
init_repo

db_backup_json "$TEST_TMP/full.json" --full
assert_rc 0 "backup database --full into S3"
full=$BACKUP_ID
assert_match '^caris_full_' "$full" "full backup id"
psql_db "$src" -c "INSERT INTO clinical.sessions SELECT * FROM clinical.sessions LIMIT 10" >/dev/null 2>&1 || true
pg_sum "$src" "$TEST_TMP/src2.sum" || fail "dbsum of the changed source failed"
db_backup_json "$TEST_TMP/incr.json" --incremental
assert_rc 0 "backup database --incremental into S3"
incr=$BACKUP_ID
assert_match '^caris_incremental_' "$incr" "incremental backup id"

# Requests for pack objects the server answered so far (one log line per request: path,
# status, time); a restore writes no pack, so during one they are its GETs.
# The pack objects in the server's directory: "size path" per line.
pack_list() { find "$S3_DIR/bkt/db/data" -type f -name '*._S3rver_object' -printf '%s %p\n'; }
data_gets() { grep -cE 'data/[0-9a-f]{2}/[0-9a-f]{64} [0-9]{3} [0-9.,]+ms' "$S3_LOG" 2>/dev/null; }
# The dump is read through windowed read plans (src/repo/streamplan.c): one plan per window
# of at most 32 MiB of chunks (STREAMPLAN_WINDOW), each reading a pack in ranges of at most
# 8 MiB (READPLAN_RANGE_MAX), cut at blob boundaries. A pack's first range starts at 0 when
# its first blob is near the start and brings the pack's header; the pack's other ranges wait
# for its key (src/repo/readplan.c) instead of reading the header alone. pg_restore reads the
# dump once (the fixture has no partitioned index, which would add a pass for the table of
# contents). Before it, the backup's entry list is loaded from the snapshot's metadata pack(s)
# (each under 2 MiB: one read window, header included; at most 2 here). Into an existing
# empty database (no --create) nothing else is read:
#   GETs <= windows * packs + stored / 8 MiB + 2
# windows * packs counts every pack, also those without a chunk of the dump: the slack for
# ranges cut short at blob boundaries (a pack of just under 16 MiB can take 3). Which pack
# holds which chunk is up to the backup's workers; during the restore, timing can only lower
# the count (the pack keys are shared). (Read blob by blob through the storage's 2 MiB read
# windows, as before read plans, it was about stored / 2 MiB.)
chunks=$(json_get "$TEST_TMP/full.json" '["stats"]["chunksNew"]')
dump=$(json_get "$TEST_TMP/full.json" '["dumpSize"]')
read -r packs pack_bytes < <(pack_list | awk '{n++; s += $1} END {print n, s}')
windows=$((dump / (32 * 1048576 - 65536) + 1))
bound=$((windows * packs + pack_bytes / 8388608 + 2))
pg_createdb rt_full >/dev/null || fail "creating database rt_full failed"
g0=$(data_gets)
CARIS_RESTORE_TARGET_URL=$(pg_url rt_full) run cb --json restore database "$full" --verify
assert_rc 0 "restore --verify of the full backup from S3 into an empty database"
gets=$(($(data_gets) - g0))
req=$(json_get "$OUT_FILE" '["s3"]["requests"]')
note "restore from S3: $gets GETs of packs, $req requests in all, for a dump of $dump bytes in $chunks chunks, $packs packs ($pack_bytes bytes); bound $bound"
assert_cmp "$gets" -ge 1 "the server's log counts the GETs of packs ($gets)"
assert_cmp "$gets" -le "$bound" "the dump is read in ranged GETs covering many chunks ($gets GETs, bound $bound)"
assert_cmp "$((gets * 50))" -lt "$chunks" "far fewer GETs than chunks ($gets GETs, $chunks chunks)"
assert_cmp "$req" -le $((bound + 30)) "few requests in all ($req)"
pg_sum rt_full "$TEST_TMP/rt_full.sum"
assert_sum_equal "$TEST_TMP/src.sum" "$TEST_TMP/rt_full.sum" "restored full backup equals the source"
# --create also reads the database's own settings (beside the restore): pg_restore runs twice
# more on the dump's beginning and stops after its table of contents. Those reads go chunk by
# chunk through the read windows, nothing fetched ahead, the second from the windows the
# first kept: the header window of the pack(s) holding the dump's first chunks and the
# window(s) with the table of contents and the pipe's 64 KiB beyond it. The fixture's table
# of contents is a few KiB and the chunks holding it small: at most 4 GETs more (the old read
# plan fetched 8 MiB ranges of every pack of the first window for each, as many as the
# threads reached before pg_restore stopped).
g0=$(data_gets)
CARIS_RESTORE_TARGET_URL=$(pg_url rt_incr) run cb restore database "$incr" --create --verify
assert_rc 0 "restore --create --verify of the incremental backup from S3"
igets=$(($(data_gets) - g0))
read -r ipacks ipack_bytes < <(pack_list | awk '{n++; s += $1} END {print n, s}')
idump=$(json_get "$TEST_TMP/incr.json" '["dumpSize"]')
iwindows=$((idump / (32 * 1048576 - 65536) + 1))
ibound=$((iwindows * ipacks + ipack_bytes / 8388608 + 2 + 4))
note "restore --create from S3: $igets GETs of packs; bound $ibound"
assert_cmp "$igets" -le "$ibound" "restore --create reads the dump's beginning for its settings without fetching ahead ($igets GETs, bound $ibound)"
pg_sum rt_incr "$TEST_TMP/rt_incr.sum"
assert_sum_equal "$TEST_TMP/src2.sum" "$TEST_TMP/rt_incr.sum" "restored incremental backup equals the changed source"

assert_exit 0 cb verify --all
# check --read-data hashes every pack whole: one GET for a pack of 8 MiB or more, the 2 MiB
# read windows for a smaller one (kept: the manifests' entry lists it reads next come from them)
g0=$(data_gets)
assert_exit 0 cb check --read-data
cgets=$(($(data_gets) - g0))
cbound=$(pack_list |
    awk '{ n += ($1 >= 8388608) ? 1 : int(($1 + 2097151) / 2097152) } END { print n }')
note "check --read-data: $cgets GETs of packs (bound $cbound)"
assert_cmp "$cgets" -le "$cbound" "check --read-data reads each pack whole, in one GET or its 2 MiB windows ($cgets GETs)"
run cb --json test-restore "$full"
assert_rc 0 "test-restore from S3"
run cb --json list
assert_rc 0 "list"
assert_eq true "$(json_eval "$OUT_FILE" "any(b['id'] == '$full' and b.get('lastTestRestore') for b in d)")" \
    "list shows the test-restore result recorded in the S3 repository"
assert_no_password_in "$ALL_OUTPUT" "the database password is in no output"

# --- a damaged pack: the restore fails clearly and leaves the target as it was ---------------
psql_db rt_full -c "DELETE FROM public.bulk WHERE id % 3 = 0" >/dev/null || fail "changing rt_full failed"
pg_sum rt_full "$TEST_TMP/rt_before.sum"
# One byte flipped in the middle of the largest pack (s3rver serves the altered bytes): the
# bulk table's chunks are there.
pack=$(pack_list | sort -n | tail -1 | cut -d' ' -f2)
flip_byte "$pack"
export BACKUP_S3_RETRY_SECONDS=10
CARIS_RESTORE_TARGET_URL=$(pg_url rt_full) run cb restore database "$full" --clean
assert_rc 4 "a restore from a damaged pack exits 4 (damage)"
assert_contains "$ERR" "checksum mismatch" "the damage is reported as such"
assert_match "chunk [0-9]+ of [0-9]+" "$ERR" "the error names the chunk of the dump"
pg_sum rt_full "$TEST_TMP/rt_after.sum"
assert_sum_equal "$TEST_TMP/rt_before.sum" "$TEST_TMP/rt_after.sum" "the failed restore left the target database untouched"

test_done

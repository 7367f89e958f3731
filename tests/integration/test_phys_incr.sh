#!/usr/bin/env bash
# Page-level incremental physical backups against a real PostgreSQL 15: a full base backup,
# changes (scattered updates, a new table, a truncated and a dropped table, VACUUM FULL), an
# incremental, more changes, a second incremental. Checked: ids, parents and the page deltas
# in the summaries; an incremental adds a small fraction of a full's bytes; the last
# incremental restores (WAL replayed, server started) to the source's fingerprint; verify and
# check --read-data; mount shows each physical backup as one note, not as damage; forget + prune of the full keeps the incrementals restorable (their base
# blocks are kept); copy to a second repository, and to an S3 one (s3rver) whose restore
# equals the directory's; damaged base blocks make the restore fail with nothing left behind.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
source "$(dirname "$0")/s3lib.sh"
at_exit '_lib_on_exit; _pg_on_exit; _s3_on_exit'

pg_start
init_repo
envf=$TEST_TMP/backup.env
pg_env_file "$envf"
R=$TEST_TMP/restores
DST=$TEST_TMP/copy-repo
mkdir -p "$R" "$DST"
chmod 0755 "$TEST_TMP"
give_server() {
    [[ $(id -u) == 0 ]] && chown -R "$CARIS_PG_OS_USER:" "$BACKUP_DIR" "$envf" "$R" "$DST"
    return 0
}
give_server
cb() { as_pg "$CARIS_BIN" "$@"; }
psql_db postgres -c "ALTER SYSTEM SET archive_mode = on" \
    -c "ALTER SYSTEM SET archive_command = '$CARIS_BIN --quiet --env-file $envf wal push %p'" \
    -c "ALTER SYSTEM SET wal_level = replica" \
    -c "ALTER SYSTEM SET autovacuum = off" || fail "ALTER SYSTEM archive settings"
pg_allow_replication
pg_pause && pg_resume || fail "restart with archive_mode = on"

# a database of tricky content, a table of ~23 MiB (92 blocks of 256 KiB) and tables to
# truncate, drop and rewrite; all frozen, as pgbench -i leaves its tables (the first read
# after a bulk load would otherwise set hint bits on every page: every page changed), and no
# autovacuum, so that what changes between the backups is what the test changes
pg_load_rich rich || fail "load rich.sql"
psql_db "$CARIS_PG_DB" -c "CREATE TABLE big (id int PRIMARY KEY, n int, pad text) WITH (fillfactor = 90);
    INSERT INTO big SELECT g, 0, repeat(md5(g::text), 2) FROM generate_series(1, 200000) g;
    CREATE TABLE trunc_me AS SELECT g AS i, md5(g::text) AS m FROM generate_series(1, 20000) g;
    CREATE TABLE drop_me AS SELECT g AS i, md5(g::text) AS m FROM generate_series(1, 20000) g;
    CREATE TABLE rewrite_me AS SELECT g AS i, md5(g::text) AS m FROM generate_series(1, 20000) g" \
    -c "VACUUM (FREEZE, ANALYZE)" || fail "create the tables"
psql_db rich -c "VACUUM (FREEZE, ANALYZE)" || fail "freeze rich"

run cb --json backup database --physical --full
assert_rc 0 "full physical backup"
id1=$(json_get "$OUT_FILE" '["id"]')
assert_match '^caris_full_' "$id1" "--full: a caris_full_ id"
full_added=$(json_get "$OUT_FILE" '["stats"]["bytesAdded"]')
full_stored=$(json_get "$OUT_FILE" '["stats"]["bytesStored"]')
note "full: $full_added bytes added"

# 1. changes: one row in 400 updated (every few pages of big), a new table, TRUNCATE, DROP,
# VACUUM FULL (a new relation file)
psql_db "$CARIS_PG_DB" -c "UPDATE big SET n = n + 1 WHERE id % 400 = 0;
    CREATE TABLE added AS SELECT g AS i FROM generate_series(1, 5000) g;
    TRUNCATE trunc_me; DROP TABLE drop_me;
    DELETE FROM rewrite_me WHERE i % 2 = 0" -c "VACUUM FULL rewrite_me" || fail "changes 1"
run cb --json backup database --physical --incremental
assert_rc 0 "incremental physical backup"
cp "$OUT_FILE" "$TEST_TMP/i2.json"
id2=$(json_get "$TEST_TMP/i2.json" '["id"]')
assert_match '^caris_incremental_' "$id2" "--incremental: a caris_incremental_ id"
assert_eq incremental "$(json_get "$TEST_TMP/i2.json" '["mode"]')" "the summary says mode incremental"
assert_eq "$id1" "$(json_get "$TEST_TMP/i2.json" '["parent"]')" "its parent is the full backup"
assert_true "backup --physical --incremental --json: the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "backup database --physical" "$TEST_TMP/i2.json"
d2=$(json_get "$TEST_TMP/i2.json" '["physical"]["deltaBlocks"]')
p2=$(json_get "$TEST_TMP/i2.json" '["physical"]["deltaPages"]')
assert_cmp "$d2" -ge 80 "most blocks of the updated table are page deltas ($d2 blocks, $p2 pages)"
assert_cmp "$p2" -le $((d2 * 16)) "a delta carries at most half its block's pages"
inc_added=$(json_get "$TEST_TMP/i2.json" '["stats"]["bytesAdded"]')
note "incremental: $inc_added bytes added ($d2 delta blocks, $p2 pages), full: $full_added"
assert_cmp $((inc_added * 4)) -lt "$full_added" "the incremental adds less than a quarter of the full's bytes"

# 2. more changes; an incremental on the incremental (deltas stay relative to full blocks)
psql_db "$CARIS_PG_DB" -c "UPDATE big SET n = n + 1 WHERE id % 400 = 7;
    INSERT INTO added SELECT g FROM generate_series(5001, 9000) g;
    INSERT INTO trunc_me SELECT g, md5(g::text) FROM generate_series(1, 100) g" || fail "changes 2"
run cb --json backup database --physical --incremental
assert_rc 0 "second incremental"
cp "$OUT_FILE" "$TEST_TMP/i3.json"
id3=$(json_get "$TEST_TMP/i3.json" '["id"]')
assert_eq "$id2" "$(json_get "$TEST_TMP/i3.json" '["parent"]')" "the second incremental's parent is the first"
d3=$(json_get "$TEST_TMP/i3.json" '["physical"]["deltaBlocks"]')
p3=$(json_get "$TEST_TMP/i3.json" '["physical"]["deltaPages"]')
# each block of big now differs from its base in the pages of both rounds of updates
assert_cmp "$p3" -gt "$p2" "the second incremental's deltas carry the pages of both rounds ($p3 > $p2)"
inc3_added=$(json_get "$TEST_TMP/i3.json" '["stats"]["bytesAdded"]')
assert_cmp $((inc3_added * 4)) -lt "$full_added" "the second incremental adds less than a quarter of the full's bytes"
note "second incremental: $inc3_added bytes added ($d3 delta blocks, $p3 pages)"
run cb list
assert_contains "$OUT" "$id3" "list shows the incremental"

# the source's final state, every segment archived
psql_db "$CARIS_PG_DB" -c "CHECKPOINT" >/dev/null
last=$(psql_db postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
archived() { [[ $(psql_db postgres -c "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver") == t ]]; }
wait_until 60 archived || fail "WAL up to $last not archived within 60 s"
pg_sum rich "$TEST_TMP/src-rich.sum"
pg_sum "$CARIS_PG_DB" "$TEST_TMP/src-main.sum"

# 3. restore the last incremental, start it: the fingerprints equal the source's
PORT=$(free_port)
run cb --env-file "$envf" --json restore database --physical --pgdata "$R/i3" --start --port "$PORT" --wait 60 "$id3"
assert_rc 0 "restore --physical --start of the second incremental"
"$PG_FIXTURES/dbsum.sh" -h "$R/i3" -p "$PORT" -U "$CARIS_PG_USER" -d rich >"$TEST_TMP/dst-rich.sum"
assert_sum_equal "$TEST_TMP/src-rich.sum" "$TEST_TMP/dst-rich.sum" "restored from the incremental: rich's fingerprint equals the source's"
"$PG_FIXTURES/dbsum.sh" -h "$R/i3" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" >"$TEST_TMP/dst-main.sum"
assert_sum_equal "$TEST_TMP/src-main.sum" "$TEST_TMP/dst-main.sum" "restored from the incremental: the changed database's fingerprint equals the source's"
as_pg "$CARIS_PG_BIN/pg_ctl" stop -D "$R/i3" -m fast -w -s >/dev/null 2>&1
# the base backup itself (no WAL replayed) already has the changes of before the backup
run cb --env-file "$envf" restore database --physical --pgdata "$R/i3files" --to-immediate "$id3"
assert_rc 0 "restore of the incremental's files (every file checked against its SHA-256)"
rel=$(psql_db "$CARIS_PG_DB" -c "SELECT pg_relation_filepath('big')")
assert_cmp "$(stat -c %s "$R/i3files/$rel")" -gt $((20 << 20)) "big's file is there, rebuilt from page deltas"
as_pg rm -rf "$R/i3files"

run cb verify "$id2"
assert_rc 0 "verify reads the first incremental (deltas rebuilt, SHA-256 checked)"
run cb verify "$id3"
assert_rc 0 "verify reads the second incremental"
run cb check --read-data
assert_rc 0 "check --read-data with incrementals"

# mount does not show a physical backup's files; its directory holds one file saying so and
# what to use instead (every physical backup was an Input/output error, logged as a
# "malformed stream entry": a healthy backup shown as damaged). As root: /dev/fuse is root's
# here; give_server hands back anything the mount wrote.
note_name=NOT-SHOWN-physical-backup.txt
if [[ -c /dev/fuse && $(id -u) == 0 ]]; then
    mnt=$TEST_TMP/mnt
    mkdir "$mnt"
    mounted() { mountpoint -q "$mnt"; }
    unmounted() { ! mountpoint -q "$mnt"; }
    bg_start "$CARIS_BIN" mount "$mnt"
    assert_true "mount of a repository of physical backups" wait_until 30 mounted
    for id in "$id1" "$id3"; do
        assert_eq "$note_name" "$(ls "$mnt/$id")" "mount: $id holds the one note"
        run cat "$mnt/$id/$note_name"
        assert_rc 0 "mount: $id's note reads (no Input/output error)"
        assert_contains "$OUT" "$id is a physical backup" "mount: the note names the backup"
        assert_contains "$OUT" "caris-backup restore database --physical --pgdata DIR $id" \
            "mount: the note says how to restore it"
    done
    kill -TERM "$BG_PID"
    assert_true "mount: SIGTERM unmounts" wait_until 30 unmounted
    wait "$BG_PID"
    assert_eq 0 "$?" "mount: exits 0"
    assert_not_contains "$(cat "$BG_ERR")" "malformed" "mount: no backup called malformed"
    assert_not_contains "$(cat "$BG_ERR")" "cannot show backup" "mount: no backup failed"
    assert_contains "$(cat "$BG_ERR")" "backup $id3 is a physical backup: its files are not shown" \
        "mount: the log says why the files are not shown"
    give_server
else
    skip "mount of physical backups: needs /dev/fuse and root"
fi

# 4. copy the incremental to a second repository: its base blocks go with it
export CARIS_COPY_TO_KEY=$BACKUP_ENCRYPTION_KEY
run cb --repo "$DST" init --copy-chunker-from "$REPO"
assert_rc 0 "init of a copy destination"
run cb --json copy "$id3" --to "$DST"
assert_rc 0 "copy of the second incremental"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["verified"]')" "verified in the destination"
run cb --repo "$DST" --env-file "$envf" restore database --physical --pgdata "$R/copied" "$id3"
assert_rc 0 "the copy restores alone (bases copied with the deltas)"
# the same from an S3 repository: large files (big's, rebuilt from page deltas) are read
# through windowed read plans (src/repo/streamplan.c), every file checked against its SHA-256
s3_start bkt
S3R=s3:$S3_ENDPOINT/bkt/phys
run cb --repo "$S3R" init --copy-chunker-from "$REPO"
assert_rc 0 "init of an S3 copy destination"
run cb --json copy "$id3" --to "$S3R"
assert_rc 0 "copy of the second incremental to S3"
run cb --repo "$S3R" --env-file "$envf" restore database --physical --pgdata "$R/s3" "$id3"
assert_rc 0 "the incremental restores from S3"
assert_true "big's file restored from S3 equals the one restored from the directory" \
    cmp "$R/copied/$rel" "$R/s3/$rel"
assert_eq "" "$(diff -rq -x postgresql.auto.conf "$R/copied" "$R/s3" 2>&1)" \
    "the data directory restored from S3 equals the one restored from the directory"
as_pg rm -rf "$R/copied" "$R/s3"

# 5. forget the full backup and prune: the incrementals' base blocks and page hashes stay
run cb --json forget --keep-last 2 --prune
assert_rc 0 "forget --keep-last 2 --prune"
run cb --json list
assert_eq "$id2 $id3" "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" "the full backup is forgotten, the incrementals kept"
run cb check --read-data
assert_rc 0 "check --read-data after prune: nothing the incrementals need is missing"
run cb --env-file "$envf" restore database --physical --pgdata "$R/afterprune" "$id3"
assert_rc 0 "after prune, the second incremental restores"
as_pg rm -rf "$R/afterprune"
# and an incremental on it still finds its parent's page hashes
psql_db "$CARIS_PG_DB" -c "UPDATE big SET n = n + 1 WHERE id % 400 = 11" || fail "changes 3"
run cb --json backup database --physical --incremental
assert_rc 0 "an incremental after prune"
assert_eq "$id3" "$(json_get "$OUT_FILE" '["parent"]')" "its parent is the latest"
assert_not_contains "$ERR" "page hashes cannot be read" "the parent's page hashes were kept by prune"
assert_cmp "$(json_get "$OUT_FILE" '["physical"]["deltaBlocks"]')" -gt 0 "it stores page deltas"
assert_cmp "$(json_get "$OUT_FILE" '["stats"]["bytesStored"]')" -lt $((full_stored / 4)) "little stored"
id4=$(json_get "$OUT_FILE" '["id"]')
run cb backup database --physical --incremental
assert_rc 0 "an incremental, human output"
assert_contains "$OUT" "incremental on $id4:" "the output names the parent and the page deltas"

# 6. damaged base blocks: every blob of 256 KiB (the full blocks, bases of the deltas) gets a
# flipped byte; restore fails as damage and leaves nothing behind
python3 - "$REPO" "$CARIS_BIN" <<'PY'
import glob, json, os, subprocess, sys
repo, binary = sys.argv[1], sys.argv[2]
for p in glob.glob(os.path.join(repo, "data", "*", "*")):
    out = subprocess.run([binary, "--repo", repo, "--json", "debug", "pack",
                          os.path.relpath(p, repo)], capture_output=True, text=True)
    if out.returncode != 0:
        continue
    blobs = [b for b in json.loads(out.stdout)["blobs"] if b["size"] == 262144]
    with open(p, "r+b") as h:
        for b in blobs:
            h.seek(b["offset"] + b["length"] // 2)
            c = h.read(1)
            h.seek(b["offset"] + b["length"] // 2)
            h.write(bytes([c[0] ^ 1]))
PY
run cb --env-file "$envf" restore database --physical --pgdata "$R/damaged" "$id3"
assert_rc 4 "restore with damaged base blocks fails as damage (exit 4)"
assert_false "nothing is put in place" test -e "$R/damaged"
assert_eq "" "$(find "$R" -maxdepth 1 -name '.damaged.caris-restore-*')" "no temporary directory is left"
# (not recorded, the next backup deduplicated against them, and said ok of a backup that did not
# restore)
assert_cmp "$(find "$REPO/records/bad-blob" -type f 2>/dev/null | wc -l)" -gt 0 \
    "the restore recorded the damaged blobs it found"
run cb --json verify "$id3"
assert_rc 4 "verify reports the damage"
assert_true "a file rebuilt from page deltas fails on its damaged base block" \
    json_eval "$OUT_FILE" 'any("base block of a page delta" in x["error"] for x in d[0]["errors"])'

give_server
test_done

#!/usr/bin/env bash
# BACKUP_COMPRESS_DUMPS (issue 14, "size side channels"): compressing a dump before
# encrypting it lets someone who can insert rows and watch the repository's size probe other
# rows. Default false: the dump's chunks are stored uncompressed (the repository grows by at
# least the dump's size even for a very compressible dump); true, or --compress, compresses
# them; --no-compress wins over true; a value that is not a boolean is a configuration error.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
# ~4 MB of very compressible rows (one sentence repeated)
psql_db "$CARIS_PG_DB" -c "CREATE TABLE notes (id integer PRIMARY KEY, body text);
    INSERT INTO notes SELECT i, repeat('the same clinical note, again and again. ', 100)
    FROM generate_series(1, 1000) AS i" >/dev/null || fail "creating the table failed"

repo_size() { du -sb --exclude=state "$1" | cut -f1; }
stored() { json_get "$1" '["stats"]["bytesStored"]'; }

# --- the default: uncompressed ---------------------------------------------------------
init_repo
db_backup_json "$TEST_TMP/default.json" --full
assert_rc 0 "backup database with BACKUP_COMPRESS_DUMPS unset"
dump=$(json_get "$TEST_TMP/default.json" '["dumpSize"]')
assert_cmp "$dump" -gt 4000000 "the dump is over 4 MB"
assert_eq false "$(json_get "$TEST_TMP/default.json" '["compress"]')" "summary: compress false by default"
assert_cmp "$(stored "$TEST_TMP/default.json")" -ge "$dump" "default: bytes stored >= the dump's size"
assert_cmp "$(repo_size "$REPO")" -ge "$dump" "default: the repository holds at least the dump's bytes"

# --- BACKUP_COMPRESS_DUMPS=true ---------------------------------------------------------
init_repo --repo "$TEST_TMP/repo-on"
run env BACKUP_COMPRESS_DUMPS=true "$CARIS_BIN" --json --repo "$TEST_TMP/repo-on" backup database --full
assert_rc 0 "backup database with BACKUP_COMPRESS_DUMPS=true"
cp "$OUT_FILE" "$TEST_TMP/on.json"
assert_eq true "$(json_get "$TEST_TMP/on.json" '["compress"]')" "summary: compress true"
assert_cmp "$(stored "$TEST_TMP/on.json")" -lt $((dump / 4)) "true: the dump is stored compressed"
assert_cmp "$(repo_size "$TEST_TMP/repo-on")" -lt $((dump / 4)) "true: the repository is much smaller than the dump"

# --- the per-stage profile (issue 12): reported by --json, never stored ---------------------
stage() { json_eval "$1" "d['stats']['stageMs']['$2']"; }
for k in read sha256 chunk queue chunkId compress encrypt write manifest; do
    assert_eq true "$(json_eval "$TEST_TMP/on.json" "isinstance(d['stats']['stageMs']['$k'], (int, float)) and d['stats']['stageMs']['$k'] >= 0")" "stageMs.$k reported"
done
assert_eq true "$(json_eval "$TEST_TMP/on.json" "d['stats']['stageMs']['compress'] > 0")" "compressed: time spent compressing"
assert_eq true "$(json_eval "$TEST_TMP/default.json" "d['stats']['stageMs']['compress'] == 0")" "uncompressed: no time compressing"
assert_eq true "$(json_eval "$TEST_TMP/on.json" "d['stats']['stageMs']['read'] > 0 and d['stats']['stageMs']['sha256'] > 0")" "reading and hashing the dump timed"
assert_eq "" "$(json_eval "$TEST_TMP/on.json" "' '.join(sorted(set(d['stats']['stageMs']) - {'read', 'sha256', 'chunk', 'queue', 'chunkId', 'compress', 'encrypt', 'write', 'manifest'}))")" "stageMs: no other keys"
run "$CARIS_BIN" --json --repo "$TEST_TMP/repo-on" show "$(json_get "$TEST_TMP/on.json" '["id"]')"
assert_rc 0 "show the compressed backup"
assert_contains "$(cat "$OUT_FILE")" "bytesStored" "show prints the stored stats"
assert_not_contains "$(cat "$OUT_FILE")" "stageMs" "the profile is not stored with the backup"

# --- flags win over the variable ----------------------------------------------------------
init_repo --repo "$TEST_TMP/repo-off"
run env BACKUP_COMPRESS_DUMPS=true "$CARIS_BIN" --json --repo "$TEST_TMP/repo-off" backup database --full --no-compress
assert_rc 0 "--no-compress with BACKUP_COMPRESS_DUMPS=true"
assert_eq false "$(json_eval "$OUT_FILE" 'd["compress"]')" "--no-compress wins"
assert_cmp "$(json_eval "$OUT_FILE" 'd["stats"]["bytesStored"]')" -ge "$dump" "--no-compress: stored uncompressed"
init_repo --repo "$TEST_TMP/repo-c"
run env BACKUP_COMPRESS_DUMPS=false "$CARIS_BIN" --json --repo "$TEST_TMP/repo-c" backup database --full --compress
assert_rc 0 "--compress with BACKUP_COMPRESS_DUMPS=false"
assert_eq true "$(json_eval "$OUT_FILE" 'd["compress"]')" "--compress wins"

# --- not a boolean ----------------------------------------------------------------------
run env BACKUP_COMPRESS_DUMPS=flase "$CARIS_BIN" backup database --full
assert_rc 6 "BACKUP_COMPRESS_DUMPS=flase is a configuration error"
assert_contains "$ERR" "BACKUP_COMPRESS_DUMPS" "the error names the variable"

# both restore to the same database content
CARIS_RESTORE_TARGET_URL=$(pg_url rt_default) run cb restore database "$(json_get "$TEST_TMP/default.json" '["id"]')" --create
assert_rc 0 "restore of the uncompressed backup"
assert_eq 1000 "$(psql_db rt_default -c 'SELECT count(*) FROM notes')" "restored rows"
test_done

#!/usr/bin/env bash
# The daemon keeps its repository open from job to job, and with it the pack files it read
# (an fd cache). A pack replaced under its name (a copy with a flipped byte, renamed over it:
# as rsync or a restore from a bad off-site copy does) was read from the old file, so the
# daemon's verification called the backup valid while `verify` from the CLI found it damaged,
# and its record superseded the CLI's failure; packs another process pruned stayed open, their
# space not freed (audit K2, K5). The packs are now closed with the repository's lock, at the
# end of each operation.
source "$(dirname "$0")/lib.sh"

export BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
export BACKUP_FILES_PATHS=$TEST_TMP/src BACKUP_API_LISTEN=127.0.0.1:0 BACKUP_DRILL_INTERVAL_DAYS=0
unset POSTGRES_URL
mkdir -p "$TEST_TMP/src"
seeded_bytes 3000000 daemon_packs/a >"$TEST_TMP/src/a.bin"
assert_exit 0 cb init
assert_exit 0 cb --json backup files
ID1=$(json_get "$OUT_FILE" '["id"]')
rm "$TEST_TMP/src/a.bin"
seeded_bytes 1000000 daemon_packs/b >"$TEST_TMP/src/b.bin"
assert_exit 0 cb --quiet backup files
assert_exit 0 cb token add --label admin
ADMIN=$OUT
api_daemon_start
# shellcheck disable=SC2034 # list_packs (lib.sh) reads it
REPO=$BACKUP_DIR/repository

# verify_api ID: the daemon's verification of ID; "ok valid" of its job
verify_api() {
    local body job
    body=$(curl -s -X POST -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
        -d "{\"backupId\": \"$1\"}" "$BASE/api/admin/backup/verify")
    job=$(json_eval <(printf '%s' "$body") 'd["jobId"]')
    python3 "$LIB_DIR/api_client.py" wait "$BASE" "$ADMIN" "$job" 120 >"$TEST_TMP/job.json"
    json_eval "$TEST_TMP/job.json" '"%s %s" % (d["ok"], (d.get("result") or {}).get("valid"))'
}
data_fds() { find "/proc/$DAEMON/fd" -mindepth 1 -maxdepth 1 -lname "*/data/*" 2>/dev/null | wc -l; }

assert_eq "True True" "$(verify_api "$ID1")" "the daemon verifies the first backup"
assert_eq 0 "$(data_fds)" "once its job is done, the daemon keeps no pack open"
# every pack replaced by a copy with one byte flipped
for p in $(list_packs); do
    cp "$p" "$TEST_TMP/x" && flip_byte "$TEST_TMP/x" && mv "$TEST_TMP/x" "$p"
done
assert_exit 4 cb verify "$ID1"
assert_eq False "$(verify_api "$ID1" | cut -d' ' -f1)" \
    "the daemon's verification of the replaced packs fails too (it read the old files)"
run cb --json list
assert_eq false "$(json_eval "$OUT_FILE" '[b for b in d if b["id"] == "'"$ID1"'"][0]["lastVerification"]["ok"]')" \
    "the last verification recorded is a failure"

test_done

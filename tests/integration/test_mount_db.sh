#!/usr/bin/env bash
# mount with a database backup: DIR/<id>/database.dump and globals.sql are the backup's
# streams byte for byte (as `dump` writes them), read-only, and pg_restore reads the archive
# through the mount; `latest` points to the newest file backup, not to the database backup.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

if [[ ! -c /dev/fuse ]]; then
    skip "/dev/fuse is missing on this machine: mount cannot be tested here"
    test_done
fi

pg_start
psql_db "$CARIS_PG_DB" -f "$PG_FIXTURES/rich.sql" >/dev/null || fail "loading fixtures/rich.sql failed"
assert_exit 0 cb init
mkdir "$TEST_TMP/files" && printf 'x\n' >"$TEST_TMP/files/x"
backup_json "$TEST_TMP/f.json" --full "$TEST_TMP/files"
assert_rc 0 "file backup"
fid=$BACKUP_ID
db_backup_json "$TEST_TMP/db.json" --full
assert_rc 0 "database backup (the newest backup)"
id=$BACKUP_ID

run bash -c '"$0" dump "$1" database.dump >"$2"' "$CARIS_BIN" "$id" "$TEST_TMP/dump.ref"
assert_rc 0 "dump database.dump (the reference)"
run bash -c '"$0" dump "$1" globals.sql >"$2"' "$CARIS_BIN" "$id" "$TEST_TMP/globals.ref"
assert_rc 0 "dump globals.sql (the reference)"

mnt=$TEST_TMP/mnt
mkdir "$mnt"
mounted() { mountpoint -q "$mnt"; }
unmounted() { ! mountpoint -q "$mnt"; }
bg_start cb mount "$mnt"
assert_true "mounted" wait_until 30 mounted

assert_eq "database.dump globals.sql " "$(ls "$mnt/$id" | tr '\n' ' ')" "a database backup shows its two streams"
assert_true "database.dump through the mount is the backup's archive" cmp "$TEST_TMP/dump.ref" "$mnt/$id/database.dump"
assert_true "globals.sql too" cmp "$TEST_TMP/globals.ref" "$mnt/$id/globals.sql"
assert_eq "$(stat -c %s "$TEST_TMP/dump.ref") 400" "$(stat -c '%s %a' "$mnt/$id/database.dump")" "size, and mode 0400"
run "$CARIS_PG_BIN/pg_restore" --list "$mnt/$id/database.dump"
assert_rc 0 "pg_restore reads the archive through the mount"
assert_contains "$OUT" "TABLE DATA" "its table of contents"
assert_eq "$fid" "$(readlink "$mnt/latest")" "latest: the newest file backup"
assert_false "read-only" touch "$mnt/$id/database.dump"

kill -TERM "$BG_PID"
assert_true "SIGTERM unmounts" wait_until 30 unmounted
wait "$BG_PID"
assert_eq 0 "$?" "exit 0"

test_done

#!/usr/bin/env bash
# The daemon on an S3 repository named by BACKUP_REPOSITORY (as every command takes it): it
# used to open BACKUP_DIR/repository instead (it failed to start, or ran against another
# repository), so `wal push` and `wal get` could not go through it.
# `wal get` on an S3 repository whose bucket is gone (deleted, or a wrong endpoint answering
# 404) under a running daemon: S3's "no bucket" is a "not found" without an errno, which was
# passed on as the archive's "not there" (exit 1): PostgreSQL then ends the recovery at that
# segment and promotes without the rest of the WAL. It must be a failure (255), DEST untouched,
# with or without the daemon; a segment that is really not archived still exits 1.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"

s3_start bkt
export BACKUP_REPOSITORY=s3:$S3_ENDPOINT/bkt/caris/repo
export BACKUP_S3_RETRY_SECONDS=5
S1=000000010000000000000001
S2=000000010000000000000002
MISSING=000000010000000000000003
mkdir -p "$TEST_TMP/pg_wal" "$TEST_TMP/out"
head -c 1048576 /dev/urandom >"$TEST_TMP/pg_wal/$S1"
head -c 1048576 /dev/urandom >"$TEST_TMP/pg_wal/$S2"
printf "BACKUP_REPOSITORY=%s\n" "$BACKUP_REPOSITORY" >"$TEST_TMP/env"

assert_exit 0 cb init
assert_exit 0 cb --env-file "$TEST_TMP/env" --quiet wal push --no-daemon "$TEST_TMP/pg_wal/$S1"

bg_start cb --env-file "$TEST_TMP/env" daemon
DAEMON=$BG_PID DAEMON_ERR=$BG_ERR
# shellcheck disable=SC2317
_daemon_up() { [[ -S $BACKUP_DIR/metadata/daemon.sock ]] && grep -q 'started' "$DAEMON_ERR"; }
wait_until 60 _daemon_up || fail "the daemon did not start" "$(_tail "$DAEMON_ERR")"

assert_exit 0 cb --env-file "$TEST_TMP/env" wal get "$S1" "$TEST_TMP/out/first"
assert_true "wal get through the daemon: the same bytes" cmp "$TEST_TMP/pg_wal/$S1" "$TEST_TMP/out/first"
assert_exit 0 cb --env-file "$TEST_TMP/env" --json wal push "$TEST_TMP/pg_wal/$S2"
assert_eq true "$(json_get "$OUT_FILE" '["viaDaemon"]')" "the push went through the daemon"
assert_exit 1 cb --env-file "$TEST_TMP/env" wal get "$MISSING" "$TEST_TMP/out/missing"
assert_eq "" "$ERR" "a segment not archived: exit 1 without a word"

# the bucket goes away under the daemon's open repository
rm -rf "${S3_DIR:?}/bkt"
assert_exit 255 cb --env-file "$TEST_TMP/env" wal get "$S1" "$TEST_TMP/out/gone"
assert_contains "$ERR" "no bucket bkt" "the error says the bucket is gone"
assert_false "nothing written at DEST" test -e "$TEST_TMP/out/gone"
assert_eq "" "$(find "$TEST_TMP/out" -name '*.caris-tmp*')" "no temporary file left"
assert_exit 255 cb --env-file "$TEST_TMP/env" wal get "$MISSING" "$TEST_TMP/out/gone2"
assert_contains "$(cat "$DAEMON_ERR")" "wal get $MISSING failed" "the daemon logs the failure"

kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon stops on SIGTERM"
# alone: opening the repository fails first (255 as well)
assert_exit 255 cb --env-file "$TEST_TMP/env" wal get --no-daemon "$S1" "$TEST_TMP/out/gone3"
assert_false "nothing written at DEST (alone)" test -e "$TEST_TMP/out/gone3"

test_done

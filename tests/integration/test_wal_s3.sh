#!/usr/bin/env bash
# The daemon on an S3 repository named by BACKUP_REPOSITORY (as every command takes it): it
# used to open BACKUP_DIR/repository instead (it failed to start, or ran against another
# repository), so `wal push` and `wal get` could not go through it.
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

kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon stops on SIGTERM"
test_done

#!/usr/bin/env bash
# A key rotation while the daemon runs: `key add` of the new key, the new key into the env file,
# SIGHUP, `key remove` of the old key's slot. The daemon goes on with the key it started with
# (the repository stays open): its reload says so, instead of "configuration reloaded" alone
# (its next opening of the repository, after a prune, failed "wrong encryption key" with the
# right key in the env file). The old key stops working at once for the CLI and `wal get`;
# the daemon restarted with the env file uses the new key. No key in any log or output.
source "$(dirname "$0")/lib.sh"

seg() {
    python3 -c 'import random, sys; open(sys.argv[1], "wb").write(random.Random(int(sys.argv[2])).randbytes(1048576))' "$1" "$2"
}

old=$BACKUP_ENCRYPTION_KEY
new="the new key of the rotation test, long enough 0123456789"
init_repo
mkdir -p "$TEST_TMP/pg_wal" "$TEST_TMP/out"
for i in 1 2; do seg "$TEST_TMP/pg_wal/00000001000000000000000$i" "$i"; done
printf 'BACKUP_ENCRYPTION_KEY=%s\n' "$old" >"$TEST_TMP/env"
chmod 600 "$TEST_TMP/env"
ecb() { env -u BACKUP_ENCRYPTION_KEY "$CARIS_BIN" --env-file "$TEST_TMP/env" "$@"; }


start_daemon env -u BACKUP_ENCRYPTION_KEY
assert_exit 0 ecb --json wal push "$TEST_TMP/pg_wal/000000010000000000000001"
assert_eq true "$(json_get "$OUT_FILE" '["viaDaemon"]')" "a push through the daemon (old key)"
run ecb --json key list
old_id=$(json_eval "$OUT_FILE" '[k["id"] for k in d if k["current"]][0]')
run_stdin "$new" ecb key add --label rotated
assert_rc 0 "key add of the new key while the daemon runs"

# the new key into the env file, SIGHUP
printf 'BACKUP_ENCRYPTION_KEY=%s\n' "$new" >"$TEST_TMP/env"
kill -HUP "$DAEMON"
# shellcheck disable=SC2317
_reloaded() { grep -q 'configuration reloaded' "$DAEMON_ERR"; }
wait_until 30 _reloaded || fail "no reload" "$(_tail "$DAEMON_ERR")"
assert_contains "$(cat "$DAEMON_ERR")" "BACKUP_ENCRYPTION_KEY changed: the daemon goes on with the key it started with; restart it" \
    "the reload says that the daemon goes on with the old key until restarted"

assert_exit 0 ecb key remove "$old_id"
run ecb --json key list
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d)')" "one slot left: the new key's"
# the old key stops working at once
assert_exit 5 env BACKUP_ENCRYPTION_KEY="$old" "$CARIS_BIN" list
assert_exit 255 env BACKUP_ENCRYPTION_KEY="$old" "$CARIS_BIN" wal get --no-daemon \
    000000010000000000000001 "$TEST_TMP/out/old"
assert_contains "$ERR" "wrong encryption key" "wal get alone with the removed key: wrong key, fatal"
assert_false "nothing at DEST" test -e "$TEST_TMP/out/old"

# restarted, the daemon opens with the new key from the env file
stop_daemon
start_daemon env -u BACKUP_ENCRYPTION_KEY
assert_exit 0 ecb --json wal push "$TEST_TMP/pg_wal/000000010000000000000002"
assert_eq true "$(json_get "$OUT_FILE" '["viaDaemon"]')" "the restarted daemon pushes with the new key"
assert_exit 0 ecb wal get 000000010000000000000002 "$TEST_TMP/out/2"
assert_true "and gets the same bytes" cmp "$TEST_TMP/pg_wal/000000010000000000000002" "$TEST_TMP/out/2"
stop_daemon

for k in "$old" "$new"; do
    assert_false "no key in the daemon's logs or any output" grep -rqF -- "$k" "$ALL_OUTPUT" "$TEST_TMP"/.bg*
done
test_done

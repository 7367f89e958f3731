#!/usr/bin/env bash
# `wal get` through the daemon reads the next segments ahead (a recovery asks for them one by
# one): a segment read ahead is served with the same bytes and counted in the status
# (servedReadAhead); a damaged later segment is never read ahead nor served (its get fails,
# exit 255, nothing at DEST); the read-ahead memory is bounded to what is ahead and emptied once
# gets stop coming (readAheadBytes back to 0).
source "$(dirname "$0")/lib.sh"

seg() {
    python3 - "$1" "$2" <<'PY'
import random, sys
r = random.Random(int(sys.argv[2]))
with open(sys.argv[1], "wb") as f:
    f.write(r.randbytes(1048576))
PY
}

init_repo
mkdir -p "$TEST_TMP/pg_wal" "$TEST_TMP/out"
: >"$TEST_TMP/env"
# segments 1..6 (1 MiB, random: each push writes a pack of its own); the pack of segment 4
# is damaged after the pushes
for i in 1 2 3 4 5 6; do
    seg "$TEST_TMP/pg_wal/00000001000000000000000$i" "$i"
    list_packs >"$TEST_TMP/packs.before"
    assert_exit 0 cb --env-file "$TEST_TMP/env" wal push --no-daemon "$TEST_TMP/pg_wal/00000001000000000000000$i"
    if [[ $i == 4 ]]; then
        pack4=$(list_packs | comm -13 "$TEST_TMP/packs.before" -)
    fi
done
assert_eq 1 "$(wc -w <<<"$pack4")" "segment 4 is in a pack of its own"
flip_byte "$pack4"

# (the read-ahead is kept 60 s after the last get: far more than this part takes)
start_daemon env

# gets: "served missing failed readAhead servedReadAhead readAheadBytes"
gets() {
    "$CARIS_BIN" --env-file "$TEST_TMP/env" --json schedule status >"$OUT_FILE" 2>/dev/null &&
        json_eval "$OUT_FILE" '"%d %d %d %d %d %d" % (d["walArchiver"]["gets"]["served"], d["walArchiver"]["gets"]["missing"], d["walArchiver"]["gets"]["failed"], d["walArchiver"]["gets"]["readAhead"], d["walArchiver"]["gets"]["servedReadAhead"], d["walArchiver"]["gets"]["readAheadBytes"])'
}
get_ok() {
    local f=00000001000000000000000$1
    assert_exit 0 cb --env-file "$TEST_TMP/env" wal get "$f" "$TEST_TMP/out/$f"
    assert_true "wal get $f through the daemon: the same bytes" cmp "$TEST_TMP/pg_wal/$f" "$TEST_TMP/out/$f"
}

get_ok 1
# segments 2 and 3 are read ahead; 4 fails to load, which ends the reading ahead
_ahead() { [[ $(gets) == "1 0 0 2 0 2097152" ]]; }
wait_until 60 _ahead
assert_eq "1 0 0 2 0 2097152" "$(gets)" "after segment 1, segments 2 and 3 (not the damaged 4) are read ahead"
get_ok 2
get_ok 3
_served() { [[ $(gets) == "3 0 0 2 2 0" ]]; }
wait_until 60 _served
assert_eq "3 0 0 2 2 0" "$(gets)" "segments 2 and 3 were served from the read-ahead, which holds nothing now"
# the damaged segment: never handed over
assert_exit 255 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000004 "$TEST_TMP/out/s4"
assert_false "the damaged segment is not written to DEST" test -e "$TEST_TMP/out/s4"
assert_false "nor left in a temporary file" compgen -G "$TEST_TMP/out/s4.caris-tmp*"
assert_contains "$(cat "$DAEMON_ERR")" "wal get 000000010000000000000004 failed" "the daemon logs the failed get"
# segment 5 read from the repository, 6 ahead
get_ok 5
_six() { [[ $(gets) == "4 0 1 3 2 1048576" ]]; }
wait_until 60 _six
assert_eq "4 0 1 3 2 1048576" "$(gets)" "after segment 5, segment 6 is read ahead"
get_ok 6
# the end of the archive: nothing to read ahead after 6, a get of 7 is "not there"
assert_exit 1 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000007 "$TEST_TMP/out/s7"
assert_eq "5 1 1 3 3 0" "$(gets)" "segment 6 served from the read-ahead, 7 missing"
stop_daemon

# with no get for a while (60 s; 0.3 s here) the read-ahead is emptied: segment 3 is read
# ahead after 2, and dropped
start_daemon env CARIS_TEST_WAL_SPOOL_IDLE_MS=300
get_ok 2
_dropped() { [[ $(gets) == "1 0 0 1 0 0" ]]; }
wait_until 60 _dropped
assert_eq "1 0 0 1 0 0" "$(gets)" "segment 3 was read ahead, then dropped once gets stopped coming"
stop_daemon
test_done

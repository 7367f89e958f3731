#!/usr/bin/env bash
# `wal push` handed to a running daemon (its open descriptor over the control socket): the
# push goes through the daemon (via_daemon, the daemon's log and status count it), `wal get`
# returns identical bytes, a relative path works (PostgreSQL's %p), an identical re-push
# succeeds, a different one is refused (exit 4) through the daemon too and the archive is
# unchanged; a daemon that dies in the middle of a push makes `wal push` fail (non-zero, so
# PostgreSQL retries) and nothing is archived; with no daemon running, `wal push` works alone;
# --no-daemon pushes alone while a daemon runs. `wal get` through the daemon: the same bytes, a
# missing segment exits 1 quietly, a damaged one is never handed over (exit 4), a daemon killed
# mid-get leaves nothing at DEST (nor its temporary file), a repository whose files vanished
# under the running daemon is a failure (255), never "not archived" (1).
source "$(dirname "$0")/lib.sh"

seg() {
    python3 - "$1" "$2" "${3:-16777216}" <<'PY'
import random, sys
r = random.Random(int(sys.argv[2]))
with open(sys.argv[1], "wb") as f:
    f.write(r.randbytes(int(sys.argv[3])))
PY
}

init_repo
mkdir -p "$TEST_TMP/pg_wal" "$TEST_TMP/out" "$TEST_TMP/other"
: >"$TEST_TMP/env"
for i in 1 2 3 4 5; do seg "$TEST_TMP/pg_wal/00000001000000000000000$i" "$i" 1048576; done


# --- through the daemon ----------------------------------------------------------------------
start_daemon env
assert_exit 0 cb --env-file "$TEST_TMP/env" --json wal push "$TEST_TMP/pg_wal/000000010000000000000001"
assert_eq true "$(json_get "$OUT_FILE" '["viaDaemon"]')" "the push went through the daemon"
assert_eq false "$(json_get "$OUT_FILE" '["alreadyArchived"]')" "a first push is not already archived"
# relative to the caller's working directory, as PostgreSQL passes %p (pg_wal/...)
(cd "$TEST_TMP" && "$CARIS_BIN" --env-file "$TEST_TMP/env" --quiet wal push pg_wal/000000010000000000000002)
assert_eq 0 "$?" "a relative path through the daemon"
assert_contains "$(cat "$DAEMON_ERR")" "archived WAL file 000000010000000000000002" \
    "the daemon's log says it archived the segment"
for i in 1 2; do
    f=00000001000000000000000$i
    assert_exit 0 cb --env-file "$TEST_TMP/env" wal get "$f" "$TEST_TMP/out/$f"
    assert_true "wal get $f after a push through the daemon: the same bytes" \
        cmp "$TEST_TMP/pg_wal/$f" "$TEST_TMP/out/$f"
done
assert_exit 0 cb --env-file "$TEST_TMP/env" --json wal push "$TEST_TMP/pg_wal/000000010000000000000001"
assert_eq true "$(json_get "$OUT_FILE" '["alreadyArchived"]')" "identical re-push through the daemon"
seg "$TEST_TMP/other/000000010000000000000001" 99 1048576
assert_exit 4 cb --env-file "$TEST_TMP/env" wal push "$TEST_TMP/other/000000010000000000000001"
assert_contains "$ERR" "already archived with different content" "different content refused through the daemon"
assert_exit 0 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000001 "$TEST_TMP/out/again"
assert_true "the archived file is unchanged" cmp "$TEST_TMP/pg_wal/000000010000000000000001" "$TEST_TMP/out/again"
assert_exit 2 cb --env-file "$TEST_TMP/env" wal push "$TEST_TMP/pg_wal/notwal"
assert_exit 7 cb --env-file "$TEST_TMP/env" wal push "$TEST_TMP/pg_wal/000000010000000000000009"
head -c 500000 "$TEST_TMP/pg_wal/000000010000000000000001" >"$TEST_TMP/other/000000010000000000000008"
assert_exit 2 cb --env-file "$TEST_TMP/env" wal push "$TEST_TMP/other/000000010000000000000008"
assert_contains "$ERR" "not a segment size" "a torn segment is refused with a daemon running too"
assert_exit 0 cb --env-file "$TEST_TMP/env" --json schedule status
assert_eq 3 "$(json_eval "$OUT_FILE" 'd["walArchiver"]["pushed"]')" \
    "schedule status counts the daemon's pushes (two new, one identical)"
# the archive's range per timeline, worked out by the daemon once its queue is empty
_status_has_range() {
    "$CARIS_BIN" --env-file "$TEST_TMP/env" --json schedule status >"$OUT_FILE" 2>/dev/null &&
        [[ $(json_eval "$OUT_FILE" 'd["walArchiver"]["archive"] is not None') == true ]]
}
wait_until 60 _status_has_range
assert_eq 0 "$?" "schedule status shows the archive's range once the daemon worked it out"
assert_eq "000000010000000000000001" \
    "$(json_eval "$OUT_FILE" 'd["walArchiver"]["archive"]["timelines"][0]["first"]')" \
    "schedule status: the archived WAL range of timeline 1"
assert_eq null "$(json_eval "$OUT_FILE" 'd["walArchiver"]["archive"]["recoveryWindow"]["earliest"]')" \
    "schedule status: no recovery window without a base backup"
assert_true "schedule status with a running daemon and its walArchiver: the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "schedule status" "$OUT_FILE"
assert_exit 0 cb --env-file "$TEST_TMP/env" --json wal push --no-daemon "$TEST_TMP/pg_wal/000000010000000000000003"
assert_eq false "$(json_get "$OUT_FILE" '["viaDaemon"]')" "--no-daemon pushes alone"
# the daemon reads again only the records written since its last push: one pushed alone
# meanwhile is seen, and a different file under its name is refused through the daemon
seg "$TEST_TMP/other/000000010000000000000003" 98 1048576
assert_exit 4 cb --env-file "$TEST_TMP/env" wal push "$TEST_TMP/other/000000010000000000000003"
assert_contains "$ERR" "already archived with different content" \
    "a different re-push of a file pushed alone meanwhile is refused through the daemon"
assert_exit 0 cb --env-file "$TEST_TMP/env" --json wal push "$TEST_TMP/pg_wal/000000010000000000000003"
assert_eq "true true" "$(json_eval "$OUT_FILE" '"%s %s" % (str(d["viaDaemon"]).lower(), str(d["alreadyArchived"]).lower())')" \
    "the identical one is already archived, through the daemon"
# --- `wal get` through the daemon: the same bytes, missing → 1 quietly ------------------------
# segment 3 was pushed alone (--no-daemon) since the daemon read the index: it reads it again
for i in 1 2 3; do
    f=00000001000000000000000$i
    rm -f "$TEST_TMP/out/$f"
    (cd "$TEST_TMP" && "$CARIS_BIN" --env-file "$TEST_TMP/env" wal get "$f" "out/$f")
    assert_eq 0 "$?" "wal get $f through the daemon (relative DEST, as PostgreSQL's %p)"
    assert_true "wal get $f through the daemon: the same bytes" cmp "$TEST_TMP/pg_wal/$f" "$TEST_TMP/out/$f"
done
assert_exit 1 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000009 "$TEST_TMP/out/s9"
assert_eq "" "$ERR" "a segment not archived: exit 1 without a word, through the daemon"
assert_false "nothing written for a missing segment" test -e "$TEST_TMP/out/s9"
assert_false "no temporary file left for a missing segment" compgen -G "$TEST_TMP/out/s9.caris-tmp*"
assert_exit 255 cb --env-file "$TEST_TMP/env" wal get notwal "$TEST_TMP/out/x"
assert_exit 0 cb --env-file "$TEST_TMP/env" --json schedule status
assert_eq "6 1" "$(json_eval "$OUT_FILE" '"%d %d" % (d["walArchiver"]["gets"]["served"], d["walArchiver"]["gets"]["missing"])')" \
    "schedule status counts the gets the daemon served (three above, three here) and the missing one"
assert_exit 0 cb --env-file "$TEST_TMP/env" wal get --no-daemon 000000010000000000000002 "$TEST_TMP/out/alone2"
assert_true "wal get --no-daemon: the same bytes" cmp "$TEST_TMP/pg_wal/000000010000000000000002" "$TEST_TMP/out/alone2"
assert_exit 0 cb --env-file "$TEST_TMP/env" --json schedule status
assert_eq 6 "$(json_eval "$OUT_FILE" 'd["walArchiver"]["gets"]["served"]')" "--no-daemon did not go through the daemon"
stop_daemon

# --- the daemon dies in the middle of a get (test hook: file written, before the answer) ----
start_daemon env CARIS_TEST_WAL_GET_CRASH=1
assert_exit 255 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000001 "$TEST_TMP/out/crashed"
assert_contains "$ERR" "daemon" "the failed get names the daemon"
wait "$DAEMON"
assert_eq 137 "$?" "the daemon died in the get (test hook)"
assert_false "a get whose daemon died writes nothing at DEST" test -e "$TEST_TMP/out/crashed"
assert_false "and leaves no temporary file" compgen -G "$TEST_TMP/out/crashed.caris-tmp*"

# --- the daemon dies in the middle of a push (test hook: after the data, before the record) --
start_daemon env CARIS_TEST_WAL_PUSH_CRASH=1
assert_exit 1 cb --env-file "$TEST_TMP/env" wal push "$TEST_TMP/pg_wal/000000010000000000000004"
assert_contains "$ERR" "daemon" "the failed push names the daemon"
wait "$DAEMON"
assert_eq 137 "$?" "the daemon died in the push (test hook)"
assert_exit 1 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000004 "$TEST_TMP/out/s4"
assert_false "the interrupted push archived nothing" test -e "$TEST_TMP/out/s4"

# --- no daemon: the push works alone (the daemon's socket file may be left behind) ----------
assert_exit 0 cb --env-file "$TEST_TMP/env" --json wal push "$TEST_TMP/pg_wal/000000010000000000000004"
assert_eq false "$(json_get "$OUT_FILE" '["viaDaemon"]')" "without a daemon the push works alone"
assert_exit 0 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000004 "$TEST_TMP/out/s4"
assert_true "the retried push archived the segment" cmp "$TEST_TMP/pg_wal/000000010000000000000004" "$TEST_TMP/out/s4"

# --- a new daemon takes pushes again; the archive checks clean ------------------------------
start_daemon env
assert_exit 0 cb --env-file "$TEST_TMP/env" --json wal push "$TEST_TMP/pg_wal/000000010000000000000005"
assert_eq true "$(json_get "$OUT_FILE" '["viaDaemon"]')" "a restarted daemon takes pushes"
stop_daemon
assert_exit 0 cb --env-file "$TEST_TMP/env" --quiet check --read-data
assert_exit 0 cb --env-file "$TEST_TMP/env" --json wal list
assert_eq 5 "$(json_eval "$OUT_FILE" 'len(d["files"])')" "five segments archived, each once"

# --- the repository's files gone under a running daemon (a volume unmounted, leaving the empty
# mount point): its open handle lists no WAL record, which must not become "not in the
# archive" (exit 1: PostgreSQL would end the recovery there and promote) ----------------------
start_daemon env
assert_exit 0 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000005 "$TEST_TMP/out/present"
mkdir "$TEST_TMP/away"
mv "$REPO"/* "$TEST_TMP/away/"
assert_exit 255 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000005 "$TEST_TMP/out/gone"
assert_contains "$ERR" "is not there any more" "an archived segment of a vanished repository is a failure, not \"not archived\""
assert_false "nothing written at DEST" test -e "$TEST_TMP/out/gone"
mv "$TEST_TMP/away"/* "$REPO/"
assert_exit 0 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000005 "$TEST_TMP/out/back"
assert_true "served again once the repository is back" cmp "$TEST_TMP/pg_wal/000000010000000000000005" "$TEST_TMP/out/back"
stop_daemon

# --- damage: the daemon never hands over a bad segment --------------------------------------
start_daemon env
assert_exit 0 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000005 "$TEST_TMP/out/before"
for p in $(list_packs); do flip_byte "$p"; done
assert_exit 255 cb --env-file "$TEST_TMP/env" wal get 000000010000000000000005 "$TEST_TMP/out/damaged"
assert_false "a damaged segment is not written to DEST through the daemon" test -e "$TEST_TMP/out/damaged"
assert_false "nor left in a temporary file" compgen -G "$TEST_TMP/out/damaged.caris-tmp*"
stop_daemon

# --- SIGHUP: WAL settings the running WAL threads do not take are named in the log -----------
# (backups took a new PGPASSWORD at once while WAL streaming and the archiver watch went on with
# the old one, after "configuration reloaded" and nothing else)
cp "$TEST_TMP/env" "$TEST_TMP/env.before"
start_daemon env
(umask 077 && printf 'PGPASSWORD=secretpw\nBACKUP_WAL_FLUSH_SECONDS=7\n' >"$TEST_TMP/env")
kill -HUP "$DAEMON"
# shellcheck disable=SC2317
_reloaded() { grep -q 'configuration reloaded' "$DAEMON_ERR"; }
wait_until 30 _reloaded || fail "no reload" "$(_tail "$DAEMON_ERR")"
assert_contains "$(cat "$DAEMON_ERR")" "PGPASSWORD, BACKUP_WAL_FLUSH_SECONDS changed: WAL streaming" \
    "the reload names the WAL settings that need a restart"
assert_contains "$(cat "$DAEMON_ERR")" "restart the daemon for them to apply" "and says what to do"
assert_not_contains "$(cat "$DAEMON_ERR")" "secretpw" "names only: no value in the log"
stop_daemon
cp "$TEST_TMP/env.before" "$TEST_TMP/env"

test_done

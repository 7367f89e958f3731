#!/usr/bin/env bash
# Hostile and malformed input on the daemon's control socket (BACKUP_DIR/metadata/daemon.sock):
# each request is answered, the daemon goes on serving, and nothing is kept per request: each
# refusal leaked its answer's JSON for as long as the daemon ran (a `wal push` refused as
# "busy" or "other-repository", a request not understood, a connection over the limit), which
# the ASan build's leak report at the daemon's exit shows.
source "$(dirname "$0")/lib.sh"

export BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
assert_exit 0 cb init
: >"$TEST_TMP/env"
start_daemon
SOCK=$BACKUP_DIR/metadata/daemon.sock

# ask LINE...: each LINE sent on a connection of its own (with a descriptor when it asks for
# one: wal-push, wal-get), the first line of each answer printed ("TIMEOUT" when none in 30 s)
ask() {
    python3 - "$SOCK" "$@" <<'PY'
import array, os, socket, sys
sock = sys.argv[1]
for line in sys.argv[2:]:
    data = line.encode("utf-8", "surrogateescape").replace(b"\\0", b"\0") + b"\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sock)
    if b'"wal-' in data:
        fd = os.open("/dev/null", os.O_RDONLY)
        s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        os.close(fd)
    else:
        s.sendall(data)
    out = b""
    try:
        while b"\n" not in out:
            c = s.recv(4096)
            if not c:
                break
            out += c
    except socket.timeout:
        out = b"TIMEOUT\n"
    s.close()
    print(out.split(b"\n")[0].decode("utf-8", "replace"))
PY
}

run ask '[]' '{"cmd": 1}' '{"cmd": "bogus"}' '{"cmd": "run-now", "type": "sideways"}' \
    '{"cmd": "wal-push"}' \
    '{"cmd": "wal-push", "name": "000000010000000000000001", "repo": "/nonexistent/other"}' \
    "$(printf 'x%.0s' {1..5000})"
assert_rc 0 "the malformed requests were sent"
assert_eq 7 "$(grep -c '"error":{"code":"' "$OUT_FILE")" "each malformed request is answered with an error"
assert_contains "$OUT" '"code":"other-repository"' "a push for another repository is refused as such"
assert_contains "$OUT" '"message":"request too long"' "an overlong request is refused"

# a NUL byte in a request: refused at once (it hid the line's end: no answer, the client waited
# until it sent 4 KiB more)
run ask '\0' '{"cmd": "status"}\0garbage'
assert_eq 2 "$(grep -c 'without a NUL byte' "$OUT_FILE")" "a request with a NUL byte is refused at once"

# more connections than the daemon takes at once: the one over the limit is told so
python3 - "$SOCK" >"$TEST_TMP/busy.out" <<'PY'
import socket, sys
held = []
for _ in range(16):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    held.append(s)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sys.argv[1])
print(s.recv(4096).decode().strip())
PY
assert_contains "$(cat "$TEST_TMP/busy.out")" '"code":"busy"' "a connection over the limit is refused busy"

run cb --json schedule status
assert_rc 0 "the daemon still answers"
assert_eq true "$(json_get "$OUT_FILE" '["running"]')" "status: the daemon runs"

# a run that fails before any step (nothing to back up: a configuration error) exits as the same
# run without a daemon does (6), not 1
run env -u POSTGRES_URL -u BACKUP_FILES_PATHS "$CARIS_BIN" run-now full --wait
assert_rc 6 "run-now --wait of a run the daemon could not start: the run's exit code"
assert_contains "$OUT$ERR" "nothing to back up" "... and why"
stop_daemon

# --- the repository moved away and another made at its path under a running daemon: the next
# run goes into the one at the path (it went on into the moved one, "succeeded", and no list,
# show or API request found its backup)
mkdir -p "$TEST_TMP/src" "$TEST_TMP/wal" && printf 'a\n' >"$TEST_TMP/src/a"
python3 - "$TEST_TMP/wal" <<'PY'
import random, sys
r = random.Random(7)
for n in ("000000010000000000000001", "000000010000000000000002"):
    open("%s/%s" % (sys.argv[1], n), "wb").write(r.randbytes(1 << 20))
PY
export BACKUP_FILES_PATHS=$TEST_TMP/src
start_daemon
assert_exit 0 cb run-now full --wait
run cb --json wal push "$TEST_TMP/wal/000000010000000000000001"
assert_eq true "$(json_get "$OUT_FILE" '["viaDaemon"]')" "a WAL push through the daemon"
mv "$BACKUP_DIR/repository" "$BACKUP_DIR/repository.moved"
assert_exit 0 cb --quiet init
assert_exit 0 cb run-now incremental --wait
assert_contains "$(cat "$DAEMON_ERR")" "is not the directory the daemon opened" "the daemon says the repository changed"
run cb --json list
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d)')" "the run's backup is in the repository at the path"
run cb --json --repo "$BACKUP_DIR/repository.moved" list
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d)')" "... and nothing more went into the moved one"
# so does a WAL push through the daemon (it went on into the moved one: WAL lost for recovery)
run cb --json wal push "$TEST_TMP/wal/000000010000000000000002"
assert_eq true "$(json_get "$OUT_FILE" '["viaDaemon"]')" "a WAL push through the daemon after the move"
run cb --json wal list
assert_eq "000000010000000000000002" "$(json_eval "$OUT_FILE" '" ".join(f["name"] for f in d["files"])')" \
    "the pushed segment is in the archive at the path"

stop_daemon

test_done

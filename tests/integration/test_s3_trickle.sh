#!/usr/bin/env bash
# An S3 server that answers a byte now and then: a request waited for ever (libcurl's low-speed
# limit was 1 byte a second), and `copy` ignored SIGTERM and SIGINT (the handler set a flag no
# request looked at): only SIGKILL ended it. Now a signal stops the request in flight, and the
# command fails "cancelled" at once; so does a signal while a request waits to be tried again
# (a 503 with Retry-After: the next try began as if after the cancel, and could not be stopped).
source "$(dirname "$0")/lib.sh"
port=$(free_port)
cat >"$TEST_TMP/trickle.py" <<'PY'
import socket, sys, threading, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(8)
open(sys.argv[2] + ".up", "w").close()
first_503 = [len(sys.argv) > 3]
def serve(c):
    try:
        c.recv(65536)
        if first_503[0]:
            first_503[0] = False
            c.sendall(b"HTTP/1.1 503 Slow Down\r\nRetry-After: 6\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            c.close()
            open(sys.argv[2], "a").write("503\n")
            return
        open(sys.argv[2], "a").write("request\n")
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            c.sendall(b"2\r\n<!\r\n")
            time.sleep(1)
    except OSError:
        pass
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
bg_start python3 "$TEST_TMP/trickle.py" "$port" "$TEST_TMP/seen"
# shellcheck disable=SC2317
_up() { [[ -e $TEST_TMP/seen.up ]]; }
wait_until 30 _up || fail "the trickling server did not start"
init_repo
mkdir -p "$TEST_TMP/src"
echo data >"$TEST_TMP/src/f"
assert_exit 0 cb --quiet backup files "$TEST_TMP/src"
export CARIS_COPY_TO_KEY=copy-destination-key-of-at-least-32-chars AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test-secret-key
for sig in TERM INT; do
    rm -f "$TEST_TMP/seen"
    bg_start cb copy --all --to "s3:http://127.0.0.1:$port/bkt/x"
    pid=$BG_PID err=$BG_ERR
    # shellcheck disable=SC2317
    _asked() { [[ -s $TEST_TMP/seen ]]; }
    wait_until 60 _asked || fail "copy never reached the server"
    kill -"$sig" "$pid"
    # shellcheck disable=SC2317
    _gone() { ! kill -0 "$pid" 2>/dev/null; }
    if wait_until 20 _gone; then
        pass "copy stops within 20 s of SIG$sig while a request trickles"
    else
        fail "copy still runs 20 s after SIG$sig" "$(_tail "$err")"
        kill -9 "$pid"
    fi
    wait "$pid"
    rc=$?
    assert_ne 0 "$rc" "copy stopped by SIG$sig fails"
done
assert_contains "$(cat "$err")" "cancelled" "the error says it was cancelled"

# a server that first answers 503 (Retry-After: 6 s), then trickles: SIGTERM while copy waits
port2=$(free_port)
bg_start python3 "$TEST_TMP/trickle.py" "$port2" "$TEST_TMP/seen2" 503
# shellcheck disable=SC2317
_up2() { [[ -e $TEST_TMP/seen2.up ]]; }
wait_until 30 _up2 || fail "the second server did not start"
bg_start env BACKUP_S3_RETRY_SECONDS=120 "$CARIS_BIN" copy --all --to "s3:http://127.0.0.1:$port2/bkt/x"
pid=$BG_PID err=$BG_ERR
# shellcheck disable=SC2317
_got503() { grep -q 503 "$TEST_TMP/seen2" 2>/dev/null; }
wait_until 60 _got503 || fail "copy never reached the second server"
kill -TERM "$pid"
# shellcheck disable=SC2317
_gone() { ! kill -0 "$pid" 2>/dev/null; }
if wait_until 20 _gone; then
    pass "copy stops within 20 s of SIGTERM while it waits to try a request again"
else
    fail "copy still runs 20 s after SIGTERM (it waited to retry)" "$(_tail "$err")"
    kill -9 "$pid"
fi
wait "$pid"
assert_ne 0 "$?" "copy stopped while waiting to retry fails"
assert_false "no request after the cancel" grep -q request "$TEST_TMP/seen2"
test_done

#!/usr/bin/env bash
# The daemon's HTTP API under seeded mutations of valid requests (api_client.py fuzz): bodies
# with fields dropped, retyped (nested, huge, NUL, lone surrogates) or added, bytes flipped,
# cut or repeated; query strings and paths bent; wrong methods and content types. The same
# seeds give the same requests every run. Whatever comes: never a 5xx, every 4xx a JSON error,
# the server answers after the last request, and the daemon then exits 0 (under ASan: nothing
# leaked). test_api.sh has the hand-written cases; this one is the breadth.
source "$(dirname "$0")/lib.sh"

CLIENT="python3 $LIB_DIR/api_client.py"
export BACKUP_TZ=UTC CRON_SECRET=cron-fuzz-secret-for-tests
export BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
export BACKUP_DRILL_INTERVAL_DAYS=0
unset POSTGRES_URL
mkdir -p "$TEST_TMP/src"
printf 'note\n' >"$TEST_TMP/src/note.txt"
export BACKUP_FILES_PATHS=$TEST_TMP/src
assert_exit 0 cb --quiet init
assert_exit 0 cb --quiet backup files
assert_exit 0 cb token add --label admin
ADMIN=$OUT
assert_exit 0 cb token add --label viewer --role viewer
VIEWER=$OUT

export BACKUP_API_LISTEN=127.0.0.1:0
api_daemon_start
note "API at $BASE"

for seed in 1 2 3; do
    $CLIENT fuzz "$BASE" "$ADMIN" "$VIEWER" "$CRON_SECRET" "$seed" 600 >"$TEST_TMP/fuzz-$seed.out" 2>&1
    assert_rc_of=$?
    assert_eq 0 "$assert_rc_of" "seed $seed: the client ran to its end"
    counts=$(grep '^STATUS-COUNTS' "$TEST_TMP/fuzz-$seed.out")
    note "seed $seed: ${counts#STATUS-COUNTS }"
    assert_match '^STATUS-COUNTS ' "$counts" "seed $seed: 600 requests sent"
    assert_eq "" "$(grep '^FAIL' "$TEST_TMP/fuzz-$seed.out" | head -n 5)" \
        "seed $seed: no 5xx, every 4xx a JSON error, no answer missing"
    assert_match ' 400:[0-9]' "$counts" "seed $seed: bad requests were refused (400)"
done
# a parameter without its value is not the parameter left out: "?type" ran an incremental
# backup, "?limit" read 50 lines; a number is digits ("+5" and " 5" passed)
for q in "cron/backup?type" "admin/backup/audit?limit" "admin/backup/audit?limit=+5" \
    "admin/backup/audit?limit=%205" "admin/backup/audit?limit=5%20"; do
    tok=$ADMIN
    [[ $q == cron/* ]] && tok=$CRON_SECRET
    run python3 "$LIB_DIR/api_client.py" req "$BASE" GET "/api/$q" "$tok"
    assert_eq 400 "$(head -n 1 <<<"$OUT")" "GET /api/$q: 400"
done
# headers libmicrohttpd's memory does not hold: the gate's 431 and JSON error (libmicrohttpd
# answered its own 431, an HTML page, to 300 one-byte headers with a POST's body)
for case in "POST 300 1" "GET 500 1" "GET 1 32400" "GET 101 1" "GET 1 16500"; do
    read -r method n size <<<"$case"
    run python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import api_client as a
m, n, size = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
h = {"X-%d" % i: "a" * size for i in range(n)}
st, data, _ = a.request(sys.argv[2], m, "/api/admin/backup/verify" if m == "POST" else "/api/admin/backup/status",
                        sys.argv[3], "{\"backupId\": \"nope\"" + " " * 60000 + "}" if m == "POST" else None, h)
print(st, data.decode(errors="replace")[:200])' "$LIB_DIR" "$BASE" "$ADMIN" "$method" "$n" "$size"
    assert_match '^431 \{"error":\{"code":"headers_too_large"' "$OUT" "$case: 431 with the JSON error"
done
# query arguments and cookies are records in libmicrohttpd's memory too: 500 empty arguments
# (within the 4 KiB request line) closed the connection without an answer, 800 cookies in one
# header got its HTML 431
for req in 'GET /healthz?'"$(printf '&%.0s' $(seq 500))"' HTTP/1.1' \
    'GET /api/admin/backup/status?'"$(printf '&%.0s' $(seq 1000))"' HTTP/1.1' \
    "GET /healthz HTTP/1.1\r\nCookie: $(printf 'a=b; %.0s' $(seq 800))" \
    "GET /healthz HTTP/1.1\r\nCookie: $(printf 'a=1,%.0s' $(seq 800))"; do
    run python3 -c 'import socket, sys
host, port = sys.argv[1].split("//")[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=20)
s.sendall(sys.argv[2].encode().replace(b"\\r\\n", b"\r\n") + b"\r\nHost: x\r\nAuthorization: Bearer " + sys.argv[3].encode() + b"\r\n\r\n")
buf = b""
while True:
    c = s.recv(65536)
    if not c:
        break
    buf += c
print(buf.split(b"\r\n")[0].decode(), buf.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")[:100])' "$BASE" "$req" "$ADMIN"
    assert_match '^HTTP/1.1 431 .*\{"error":\{"code":"headers_too_large"' "$OUT" "${req:0:40}...: 431 with the JSON error"
done
# 16 requests from an address with libmicrohttpd, their bodies never sent: a 17th from it
# was reset without an answer (libmicrohttpd's per-address limit); it waits in the gate for
# room (one of them times out) or is answered 503 busy there
run python3 "$LIB_DIR/api_client.py" handed "$BASE" "$ADMIN" 16
assert_match '^HTTP/1.1 (200 OK|503 Service Unavailable) \{' "$OUT" "a 17th request from the address is answered"
run python3 "$LIB_DIR/api_client.py" req "$BASE" GET /api/admin/backup/status "$VIEWER"
assert_eq 200 "$(head -n 1 <<<"$OUT")" "the API answers after the fuzzing"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"

test_done

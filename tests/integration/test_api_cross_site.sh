#!/usr/bin/env bash
# The API and requests a web page on another site makes a browser send (a form, an image, a
# fetch without credentials, the preflight of one with them): refused 403 before any
# credential is looked at, and never counted as failed authentications, so that a page the
# operator happens to visit cannot lock the dashboard and the API's clients out (429) of an
# address it shares. The dashboard's own requests (same-origin) and clients that are not
# browsers (no Sec-Fetch-Site, no Origin) are served as before.
source "$(dirname "$0")/lib.sh"

export BACKUP_SCHEDULE_DAILY=off BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
export BACKUP_FILES_PATHS=$TEST_TMP/src BACKUP_API_LISTEN=127.0.0.1:0 CRON_SECRET=cron-secret-cross-site
mkdir -p "$TEST_TMP/src"
printf 'note\n' >"$TEST_TMP/src/note.txt"
assert_exit 0 cb init
assert_exit 0 cb token add --label admin
ADMIN=$OUT
api_daemon_start

# code METHOD PATH [CURL ARGS...]: the status of the answer
code() {
    local m=$1 p=$2
    shift 2
    curl -s -o "$TEST_TMP/body" -w '%{http_code}' -X "$m" "$@" "$BASE$p"
}

# what a page on another site makes a browser send, each many times over the failures allowed
for i in 1 2 3 4 5 6 7; do
    assert_eq 403 "$(code POST /api/admin/backup/create -H 'Sec-Fetch-Site: cross-site' \
        -H 'Origin: https://evil.example' -H 'Content-Type: text/plain' --data '{"type":"full"}')" \
        "a cross-site form POST to create is refused (try $i)"
    assert_eq 403 "$(code GET /api/admin/backup/list -H 'Sec-Fetch-Site: cross-site')" \
        "a cross-site image of list is refused (try $i)"
    assert_eq 403 "$(code OPTIONS /api/admin/backup/restore -H 'Sec-Fetch-Site: same-site' \
        -H 'Origin: http://127.0.0.1:1' -H 'Access-Control-Request-Method: POST')" \
        "a CORS preflight from another port is refused (try $i)"
    assert_eq 403 "$(code GET /api/cron/backup -H 'Origin: https://evil.example')" \
        "a cross-origin request of an older browser (Origin only) is refused (try $i)"
done
assert_contains "$(cat "$TEST_TMP/body")" '"code":"forbidden"' "with the JSON error"
assert_contains "$(cat "$TEST_TMP/body")" "cross-site" "which says why"

# none of that counted as a failed authentication: the token and the cron secret still work
assert_eq 200 "$(code GET /api/admin/backup/list -H "Authorization: Bearer $ADMIN")" \
    "a client with a token is not made to wait (no 429)"
assert_eq 202 "$(code GET '/api/cron/backup?type=incremental' -H "Authorization: Bearer $CRON_SECRET")" \
    "nor the cron secret"
# the dashboard's own requests: same-origin (Origin of the daemon's own address), a page the
# operator opened (none)
assert_eq 200 "$(code GET /api/admin/backup/status -H "Authorization: Bearer $ADMIN" \
    -H 'Sec-Fetch-Site: same-origin')" "the dashboard's poll (same-origin) is served"
assert_eq 200 "$(code GET /api/admin/backup/status -H "Authorization: Bearer $ADMIN" \
    -H 'Sec-Fetch-Site: none')" "a request the user typed (none) is served"
assert_eq 200 "$(code GET /api/admin/backup/status -H "Authorization: Bearer $ADMIN" \
    -H "Origin: $BASE")" "an Origin that is the daemon's own address is served"
assert_eq 404 "$(code POST /api/admin/backup/verify -H "Authorization: Bearer $ADMIN" \
    -H 'Sec-Fetch-Site: same-origin' -H "Origin: $BASE" -H 'Content-Type: application/json' \
    --data '{"backupId":"nosuch"}')" "a same-origin POST reaches the endpoint (404: no such backup)"
# an Origin that is not the Host, with a token: the dashboard behind a proxy that rewrites Host
# (over plain HTTP, where browsers send no Sec-Fetch-Site); a page of another site cannot send
# an Authorization header
assert_eq 404 "$(code POST /api/admin/backup/verify -H "Authorization: Bearer $ADMIN" \
    -H 'Origin: http://backup.example.lan' -H 'Content-Type: application/json' \
    --data '{"backupId":"nosuch"}')" "the dashboard's POST through a proxy that rewrites Host is served"
# a cross-site request with a valid token is refused too (a page cannot send one, but the
# answer must not depend on it)
assert_eq 403 "$(code GET /api/admin/backup/list -H "Authorization: Bearer $ADMIN" \
    -H 'Sec-Fetch-Site: cross-site')" "cross-site with a token: refused"
# the same from a real browser: a page on another site (http://localhost:PORT, another site
# than 127.0.0.1) posts forms and fetches to the API, more times than the failures allowed
CHROMIUM=$(command -v chromium || true)
if [[ -z $CHROMIUM ]]; then
    fail "chromium is not installed (scripts/install-deps.sh installs it)"
else
    mkdir -p "$TEST_TMP/evil" "$TEST_TMP/browser"
    cat >"$TEST_TMP/evil/index.html" <<HTML
<!doctype html><title>another site</title><script>
(async () => {
  const r = [];
  for (let i = 0; i < 8; i++)
    for (const [m, p] of [["POST", "/api/admin/backup/create"], ["GET", "/api/admin/backup/list"],
                          ["GET", "/api/cron/backup"]])
      r.push(await fetch("$BASE" + p, m === "POST" ? {method: m, mode: "no-cors", body: '{"type":"full"}'}
                                                   : {mode: "no-cors"}).then(() => "sent", () => "error"));
  window.done = r.join(",");
})();
</script>
HTML
    bg_start python3 -c 'import http.server, functools, sys
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
    http.server.SimpleHTTPRequestHandler, directory=sys.argv[1]))
open(sys.argv[2] + ".tmp", "w").write(str(s.server_address[1]))
__import__("os").rename(sys.argv[2] + ".tmp", sys.argv[2])
s.serve_forever()' "$TEST_TMP/evil" "$TEST_TMP/evil.port"
    EVIL=$BG_PID
    # shellcheck disable=SC2317
    _evil_up() { [[ -s $TEST_TMP/evil.port ]]; }
    wait_until 30 _evil_up || fail "the other site's server did not start"
    run python3 "$LIB_DIR/dashboard_browser.py" "$CHROMIUM" "http://localhost:$(cat "$TEST_TMP/evil.port")/" - \
        "$TEST_TMP/browser" visit
    assert_rc 0 "the browser visited the other site"
    printf '%s\n' "$OUT" >"$TEST_TMP/browser/visit.json"
    assert_eq 24 "$(json_eval "$TEST_TMP/browser/visit.json" 'd["done"].count("sent")')" \
        "the page's 24 requests were all sent"
    kill "$EVIL"
    assert_eq 200 "$(code GET /api/admin/backup/list -H "Authorization: Bearer $ADMIN")" \
        "after the visit, a client with a token is not made to wait"
    assert_eq 400 "$(code GET '/api/cron/backup?type=bogus' -H "Authorization: Bearer $CRON_SECRET")" \
        "nor the cron secret (400: past its authentication, to the type)"
fi
# the dashboard's pages themselves may be opened from a link on another site
assert_eq 200 "$(code GET /admin/backup -H 'Sec-Fetch-Site: cross-site')" "the dashboard page is served to a link"
# no credential is still a failure of its own: five make the address wait
for i in 1 2 3 4 5; do
    code GET /api/admin/backup/list >/dev/null
done
assert_eq 429 "$(code GET /api/admin/backup/list -H "Authorization: Bearer $ADMIN")" \
    "requests without a credential (not cross-site) still count"

kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"
test_done

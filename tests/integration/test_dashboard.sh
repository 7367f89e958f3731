#!/usr/bin/env bash
# The dashboard at /admin/backup in a real browser (Debian's chromium, headless, driven through
# the DevTools protocol by dashboard_browser.py): sign in with a token, see the list and the
# charts, start a backup with the button, watch it complete, see the list and the chart grow;
# labels on every control, a phone-width layout, no console error. Screenshots are kept in
# the test's directory (dashboard/*.png).
source "$(dirname "$0")/lib.sh"

CHROMIUM=$(command -v chromium || true)
if [[ -z $CHROMIUM ]]; then
    fail "chromium is not installed (scripts/install-deps.sh installs it)"
    test_done
fi
export BACKUP_TZ=UTC BACKUP_SCHEDULE_DAILY="0 3 * * *" BACKUP_SCHEDULE_WEEKLY=off BACKUP_SCHEDULE_MONTHLY=off
export BACKUP_FILES_PATHS=$TEST_TMP/src BACKUP_API_LISTEN=127.0.0.1:0
# the newest backup below is a day old: older than this, so the stale banner shows until the
# backup made from the dashboard
export BACKUP_ALERT_AFTER=12h
make_tree "$TEST_TMP/src" --no-special
assert_exit 0 cb init
# three backups on three past days (retention keeps one a day: the new one adds a row)
for d in 3 2 1; do
    assert_exit 0 cb backup files --time "$(date -u -d "$d days ago" +%Y-%m-%dT%H:%M:%SZ)"
done
assert_exit 0 cb token add --label dashboard
TOKEN=$OUT

# the daemon cannot read files named unreadable.txt (EIO): none exists until the run with
# warnings below
shim=$TEST_TMP/read_faults.so
cc -shared -fPIC -O2 -o "$shim" "$(dirname "$0")/read_faults.c" -ldl || fail "building the read fault shim failed"
LD_PRELOAD=$shim READ_FAULT=eio READ_FAULT_FILE=unreadable.txt api_daemon_start

# the pages themselves: no credential needed, a strict content security policy, no CDN
run curl -s -D "$TEST_TMP/page.head" -o "$TEST_TMP/page.html" -w '%{http_code}' "$BASE/admin/backup"
assert_eq 200 "$OUT" "the dashboard is served"
assert_contains "$(cat "$TEST_TMP/page.head")" "Content-Security-Policy: default-src 'none'" "with a strict CSP"
assert_false "nothing is loaded from elsewhere" grep -q -E '(src|href)="(https?:)?//' "$TEST_TMP/page.html"
assert_eq 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/admin/backup/app.js")" "app.js"
assert_eq 404 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/admin/backup/../../etc/passwd")" "nothing else"
assert_eq 405 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$BASE/admin/backup")" "GET only"

mkdir -p "$TEST_TMP/dashboard"
# one browser for the five sessions below (a start is ~2 s of CPU); each session is a browser
# context of its own in it, sharing no storage, cookie or cache with the others
mkdir -p "$TEST_TMP/chromium"
bg_start python3 "$LIB_DIR/dashboard_browser.py" "$CHROMIUM" --launch "$TEST_TMP/chromium"
# shellcheck disable=SC2317
_browser_up() { [[ $(wc -l <"$TEST_TMP/chromium/DevToolsActivePort" 2>/dev/null) -ge 1 ]]; }
if ! wait_until 60 _browser_up; then
    fail "chromium did not start" "$(_tail "$BG_ERR")"
    test_done
fi
DASHBOARD_BROWSER_PORT=$(head -n 1 "$TEST_TMP/chromium/DevToolsActivePort")
export DASHBOARD_BROWSER_PORT
# chromium's temporary directory is in its profile, removed with this test's directory (killed,
# it leaves its singleton socket's directory behind: there, not in /tmp)
if ((${#TEST_TMP} + 55 < 108)); then
    assert_true "chromium's singleton socket directory is in the profile, not in the shared TMPDIR" \
        compgen -G "$TEST_TMP/chromium/org.chromium.Chromium.*"
fi
run python3 "$LIB_DIR/dashboard_browser.py" "$CHROMIUM" "$BASE" "$TOKEN" "$TEST_TMP/dashboard"
assert_rc 0 "the browser session ran"
S=$TEST_TMP/dashboard/summary.json
printf '%s\n' "$OUT" >"$S"
assert_eq true "$(json_eval "$S" 'd["loaded"]')" "the page loaded"
assert_eq "[]" "$(json_eval "$S" 'd["unlabeled"]')" "every control has an accessible name"
assert_eq true "$(json_eval "$S" 'd["signedIn"]')" "signed in: the list shows"
assert_eq true "$(json_eval "$S" 'd["tokenInSessionStorage"]')" "the token is in sessionStorage"
assert_eq "" "$(json_eval "$S" 'd["cookies"]')" "and in no cookie"
assert_eq 3 "$(json_eval "$S" 'd["rowsBefore"]')" "three backups listed"
assert_eq "3 3" "$(json_eval "$S" '"%d %d" % (d["pointsBefore"], d["barsBefore"])')" "the charts have a point and a bar per backup"
assert_contains "$(json_eval "$S" 'd["nextRuns"]')" "daily (incremental)" "the next run is shown"
assert_contains "$(json_eval "$S" 'd["alerts"]')" "No successful files backup for more than 12 hours" \
    "the stale banner (the newest backup is a day old, BACKUP_ALERT_AFTER=12h)"
assert_eq none "$(json_eval "$S" 'd["alertsAfter"]')" "the banner goes once a backup is made"
assert_eq true "$(json_eval "$S" 'd["sawRunning"]')" "the job was shown queued or running"
assert_match '^job-' "$(json_eval "$S" 'd["jobDone"]')" "the backup job completed"
assert_contains "$(json_eval "$S" 'd["jobMessage"]')" "done, ok" "and says it succeeded"
assert_eq 4 "$(json_eval "$S" 'd["rowsAfter"]')" "the new backup is in the list"
assert_eq 4 "$(json_eval "$S" 'd["pointsAfter"]')" "and in the chart"
assert_contains "$(json_eval "$S" 'd["auditText"]')" "backup run" "the audit log's tail shows the run"
assert_contains "$(json_eval "$S" 'd["auditText"]')" "api:dashboard" "by the token's label"
assert_contains "$(json_eval "$S" 'd["notifications"]')" "None" "no notification configured: none sent"
assert_eq false "$(json_eval "$S" 'd["phoneOverflow"]')" "nothing wider than a phone's screen"
assert_eq "[]" "$(json_eval "$S" 'd["consoleErrors"]')" "no console error"
assert_eq 3 "$(ls "$TEST_TMP"/dashboard/[123]-*.png | wc -l)" "three screenshots saved"
note "screenshots: $TEST_TMP/dashboard/*.png"

# A run with warnings (a file it could not read) completed, but the history said "ok", as for a
# clean run: it says "ok, with WARNINGS" and the step's warning (checked in the next session).
# Its backup is forgotten, so that the newest backup is a day old again below.
printf 'x\n' >"$TEST_TMP/src/unreadable.txt"
run python3 "$LIB_DIR/api_client.py" req "$BASE" POST /api/admin/backup/create "$TOKEN" '{"type": "incremental", "includeFiles": true}'
assert_eq 202 "$(head -n 1 <<<"$OUT")" "a run is started through the API"
job=$(tail -n +2 <<<"$OUT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobId"])')
run python3 "$LIB_DIR/api_client.py" wait "$BASE" "$TOKEN" "$job" 120
assert_rc 0 "... and ends"
printf '%s\n' "$OUT" >"$TEST_TMP/warned.json"
assert_eq "true true" "$(json_eval "$TEST_TMP/warned.json" 'str(d["ok"]).lower() + " " + str(d["result"]["warnings"]).lower()')" \
    "... ok, with warnings"
rm -f "$TEST_TMP/src/unreadable.txt"
assert_exit 0 cb forget "$(json_eval "$TEST_TMP/warned.json" 'd["result"]["backupIds"][0]')"

# A backup dated in the future (made with the clock 400 days ahead, clock_ahead) is no recent
# success: with the backup just made forgotten, the newest real one is a day old again, and the
# stale banner shows beside one that names the future-dated backup.
assert_exit 0 cb --json list
made=$(json_eval "$OUT_FILE" 'd[-1]["id"]')
assert_exit 0 cb forget "$made"
run clock_ahead 400 cb --json backup files
assert_rc 0 "a backup with the clock 400 days ahead"
future=$(json_get "$OUT_FILE" '["id"]')
run python3 "$LIB_DIR/dashboard_browser.py" "$CHROMIUM" "$BASE" "$TOKEN" "$TEST_TMP/dashboard" alerts
assert_rc 0 "the second browser session ran"
S=$TEST_TMP/dashboard/alerts.json
printf '%s\n' "$OUT" >"$S"
assert_contains "$(json_eval "$S" 'd["alerts"]')" "Backup $future is dated" \
    "a banner names the future-dated backup"
assert_contains "$(json_eval "$S" 'd["alerts"]')" "No successful files backup for more than 12 hours" \
    "and the stale banner shows: the future-dated backup does not count"
assert_contains "$(json_eval "$S" 'd["history"]')" "ok, with WARNINGS (backup: " "the history says the run had warnings"
assert_match '^warn ' "$(json_eval "$S" 'd["historyClasses"]')" "... and marks it (the newest run first)"
assert_eq "[]" "$(json_eval "$S" 'd["consoleErrors"]')" "no console error"

kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"

# A kind the daemon watches (POSTGRES_URL set) with no backup at all in the repository (every
# database backup failed since the start): a banner says so, as the daemon's stale alert does
# (the page showed no banner for a kind it had no backup of)
POSTGRES_URL=postgresql://nobody@127.0.0.1:1/none BACKUP_WAL_ALERT_MINUTES=off api_daemon_start
run curl -s -H "Authorization: Bearer $TOKEN" "$BASE/api/admin/backup/status"
assert_eq '["database", "files"]' "$(printf '%s' "$OUT" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["alertKinds"]))')" \
    "the status names the kinds the stale alert watches"
run python3 "$LIB_DIR/dashboard_browser.py" "$CHROMIUM" "$BASE" "$TOKEN" "$TEST_TMP/dashboard" alerts
assert_rc 0 "the third browser session ran"
S=$TEST_TMP/dashboard/nodb.json
printf '%s\n' "$OUT" >"$S"
assert_contains "$(json_eval "$S" 'd["alerts"]')" "No successful database backup: the repository holds none." \
    "a banner for the database backups that never succeeded"
assert_contains "$(json_eval "$S" 'd["alerts"]')" "No successful files backup for more than 12 hours" \
    "beside the files one"
assert_eq "[]" "$(json_eval "$S" 'd["consoleErrors"]')" "no console error"

# A tab signed in with a token since revoked: one failed authentication, then the sign-in form;
# a request begun before the sign-out sends nothing (it sent "Bearer null", a failure each: two
# reloads, and the address had to wait)
assert_exit 0 cb token add --label gone
GONE=$OUT
assert_exit 0 cb token revoke gone
n401() { python3 -c 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if json.loads(l).get("result") == "401"))' \
    "$BACKUP_DIR/metadata/audit.log"; }
before=$(n401)
run python3 "$LIB_DIR/dashboard_browser.py" "$CHROMIUM" "$BASE" "$GONE" "$TEST_TMP/dashboard" revoked
assert_rc 0 "the fourth browser session ran"
S=$TEST_TMP/dashboard/revoked.json
printf '%s\n' "$OUT" >"$S"
assert_eq "invalid credentials" "$(json_eval "$S" 'd["signinError"]')" "signed out, with the server's message"
assert_eq 401 "$(json_eval "$S" 'd["noToken"]')" "a request without a token fails in the page"
assert_eq 1 "$(($(n401) - before))" "and is not sent: the one failed authentication is the reload's"
assert_eq "[]" "$(json_eval "$S" '[e for e in d["consoleErrors"] if "401" not in e or "/backup/list?" not in e]')" \
    "no console error but the list's 401 (the browser's own line)"

# Failed authentications from the tab's address by another client (behind a reverse proxy,
# every user shares one): the address must wait, and the tab's requests get 429 whatever
# their token. The tab stays signed in, says why it waits, and resumes by itself (a 429
# signed it out: one mistyped token signed out every user behind the proxy)
run python3 "$LIB_DIR/dashboard_browser.py" "$CHROMIUM" "$BASE" "$TOKEN" "$TEST_TMP/dashboard" throttled
assert_rc 0 "the fifth browser session ran"
S=$TEST_TMP/dashboard/throttled.json
printf '%s\n' "$OUT" >"$S"
assert_eq "401 429" "$(json_eval "$S" '"%d %d" % (d["codes"][0], d["codes"][-1])')" \
    "the other client's wrong tokens fail, then its address must wait"
assert_contains "$(json_eval "$S" 'd["waitShown"]')" "tries again in" "the tab says it waits, and for how long"
assert_eq true "$(json_eval "$S" 'd["signedInDuring"]')" "the tab stays signed in while it waits"
assert_eq true "$(json_eval "$S" 'd["resumed"]')" "it resumes by itself after the wait"
assert_eq true "$(json_eval "$S" 'd["signedInAfter"]')" "still signed in, with its token"
assert_eq "" "$(json_eval "$S" 'd["msgAfter"]')" "the waiting message is gone"
assert_eq "[]" "$(json_eval "$S" '[e for e in d["consoleErrors"] if "status of 429" not in e]')" \
    "no console error but the browser's own lines for the 429s"
kill -TERM "$DAEMON"
wait "$DAEMON"
assert_eq 0 "$?" "the daemon exits 0"
test_done

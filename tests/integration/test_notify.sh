#!/usr/bin/env bash
# Notifications against real servers on loopback (tests/integration/notify_servers.py): an
# SMTP server (aiosmtpd) with AUTH, a webhook receiver (http.server), a port that refuses
# connections and one that accepts and never answers. `notify test` must deliver a proper
# message (headers, UTF-8 subject, body) to each channel, retry what may pass, give up on
# what will not, within a bound, and never show a secret anywhere.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3 # Debian's python3-aiosmtpd is installed for the system python
SERVERS=$LIB_DIR/notify_servers.py

# Nothing of the caller's notification settings leaks in.
unset BACKUP_SMTP_URL BACKUP_SMTP_USER BACKUP_SMTP_PASSWORD BACKUP_SMTP_TLS BACKUP_EMAIL_FROM \
    BACKUP_EMAIL_RECIPIENTS BACKUP_EMAIL_NOTIFICATIONS BACKUP_SLACK_WEBHOOK_URL \
    BACKUP_SLACK_NOTIFICATIONS BACKUP_NOTIFY_SUCCESS BACKUP_ALERT_AFTER \
    CARIS_NOTIFY_TIMEOUT_SECONDS

SMTP_USER=backup-robot
SMTP_PW='Smtp-Secret-pw-7781'
HOOK_PATH=/services/T0TEST/B0TEST/HookSecret1234
PG_PW='Pg-Secret-pw-5523'
export POSTGRES_URL="postgresql://app:$PG_PW@127.0.0.1:1/caris"

assert_true "python3-aiosmtpd is installed (scripts/install-deps.sh)" "$PY" -c 'import aiosmtpd'

# start_server NAME MODE [ARGS...]: a server in $TEST_TMP/NAME; sets PORT.
start_server() {
    local dir=$TEST_TMP/$1
    mkdir -p "$dir"
    bg_start "$PY" "$SERVERS" "$2" "$dir" "${@:3}"
    if wait_until 30 test -s "$dir/port"; then
        PORT=$(cat "$dir/port")
    else
        fail "server $1 ($2) did not start" "$(_tail "$BG_ERR")"
        PORT=1
    fi
}

count_msgs() { find "$TEST_TMP/$1" -name 'msg-*.json' | wc -l; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# mail_get FILE WHAT: the received message parsed by python's email package (an independent
# decoder): a header (decoded), "body" (the decoded text), or "check" (structure).
mail_get() {
    "$PY" - "$1" "$2" <<'EOF'
import email, email.policy, email.utils, sys
raw = open(sys.argv[1], "rb").read()
m = email.message_from_bytes(raw, policy=email.policy.default)
w = sys.argv[2]
if w == "body":
    print(m.get_content(), end="")
elif w == "check":
    assert m.get_content_type() == "text/plain", m.get_content_type()
    assert m.get_content_charset() == "utf-8", m.get_content_charset()
    assert m["MIME-Version"] == "1.0"
    assert m["Content-Transfer-Encoding"] in ("quoted-printable", "8bit")
    assert email.utils.parsedate_to_datetime(m["Date"]) is not None
    mid = m["Message-ID"]
    assert mid.startswith("<") and mid.endswith(">") and "@" in mid, mid
    for line in raw.split(b"\r\n"):
        assert len(line) <= 998, len(line)
    assert all(b < 128 for b in raw), "raw message is not 7-bit"
    print("ok")
else:
    v = m[w]
    print("" if v is None else str(v), end="")
EOF
}

# --- usage and configuration errors (no server needed) ---------------------------------

assert_exit 0 cb notify --help
assert_contains "$OUT" "BACKUP_SLACK_WEBHOOK_URL" "notify --help names the variables"
assert_exit 0 cb notify test --help
assert_exit 2 cb notify
assert_exit 2 cb notify bogus
assert_exit 2 cb notify test extra
assert_exit 6 cb notify test
assert_contains "$ERR" "no notification channel configured" "no channel: says so"
assert_contains "$ERR" "HINT: set BACKUP_SMTP_URL" "no channel: the hint names the variables"
assert_exit 6 env BACKUP_EMAIL_RECIPIENTS=a@example.org "$CARIS_BIN" notify test
assert_contains "$ERR" "BACKUP_SMTP_URL is not set" "recipients without a server: the missing variable"

# --- both channels up: delivered, and what was delivered -------------------------------

start_server smtp smtp --auth "$SMTP_USER:$SMTP_PW"
SMTP_PORT=$PORT
start_server hook http
HOOK_PORT=$PORT
EMAIL_ENV=(BACKUP_SMTP_URL="smtp://127.0.0.1:$SMTP_PORT" BACKUP_SMTP_USER="$SMTP_USER"
    BACKUP_SMTP_PASSWORD="$SMTP_PW" BACKUP_EMAIL_FROM="CÁRIS Backup <backup@example.org>"
    BACKUP_EMAIL_RECIPIENTS="ops@example.org, dba@example.org")
SLACK_ENV=(BACKUP_SLACK_WEBHOOK_URL="http://127.0.0.1:$HOOK_PORT$HOOK_PATH")

# without the repository key: notify test does not need the repository
assert_exit 0 env -u BACKUP_ENCRYPTION_KEY "${EMAIL_ENV[@]}" "${SLACK_ENV[@]}" \
    "$CARIS_BIN" --json notify test
assert_json "$OUT_FILE" "notify test --json is JSON"
assert_eq true "$(json_get "$OUT_FILE" '["ok"]')" "both channels ok"
assert_eq '["email", "slack"]' "$(json_eval "$OUT_FILE" '[c["channel"] for c in d["channels"]]')" \
    "one result per channel"
assert_eq "smtp://127.0.0.1:$SMTP_PORT" "$(json_get "$OUT_FILE" '["channels"][0]["target"]')" \
    "email target: the server"
assert_eq "http://127.0.0.1:$HOOK_PORT" "$(json_get "$OUT_FILE" '["channels"][1]["target"]')" \
    "slack target: scheme and host only (the path is the secret)"
assert_eq 1 "$(json_get "$OUT_FILE" '["channels"][0]["tries"]')" "email: one try"

assert_true "the mail arrived" test -s "$TEST_TMP/smtp/msg-1.eml"
MAIL=$TEST_TMP/smtp/msg-1.eml
META=$TEST_TMP/smtp/msg-1.json
assert_eq true "$(json_get "$META" '["authenticated"]')" "SMTP AUTH was used"
assert_eq "$SMTP_USER" "$(json_get "$META" '["login"]')" "SMTP AUTH as BACKUP_SMTP_USER"
assert_eq "backup@example.org" "$(json_get "$META" '["mail_from"]')" "envelope sender"
assert_eq '["ops@example.org", "dba@example.org"]' "$(json_get "$META" '["rcpt_tos"]')" \
    "envelope recipients: every one of BACKUP_EMAIL_RECIPIENTS"
assert_eq ok "$(mail_get "$MAIL" check 2>&1)" "a proper MIME text/plain UTF-8 message"
HOST=$(hostname)
assert_eq "CÁRIS Backup: test notification from $HOST" "$(mail_get "$MAIL" Subject)" \
    "UTF-8 subject, decoded"
assert_contains "$(grep -a '^Subject:' "$MAIL")" "=?UTF-8?B?" "the subject is RFC 2047 encoded"
assert_eq "CÁRIS Backup <backup@example.org>" "$(mail_get "$MAIL" From)" "From with its UTF-8 name"
assert_eq "ops@example.org, dba@example.org" "$(mail_get "$MAIL" To)" "To"
BODY=$(mail_get "$MAIL" body)
assert_contains "$BODY" "test notification from caris-backup on $HOST" "body: what it is"
assert_contains "$BODY" "Event:        test" "body: the event"

# a server that requires a login, and no BACKUP_SMTP_USER: its 530 names the login (the hint
# blamed the sender and the recipients)
run env -u BACKUP_ENCRYPTION_KEY BACKUP_SMTP_URL="smtp://127.0.0.1:$SMTP_PORT" \
    BACKUP_EMAIL_FROM=backup@example.org BACKUP_EMAIL_RECIPIENTS=ops@example.org "$CARIS_BIN" notify test
assert_rc 1 "notify test without the login a server requires: exit 1"
assert_contains "$ERR" "the server requires a login: set BACKUP_SMTP_USER and BACKUP_SMTP_PASSWORD" \
    "... and the hint names the login"

HOOK=$TEST_TMP/hook/msg-1.json
assert_eq "$HOOK_PATH" "$(json_get "$HOOK" '["path"]')" "webhook: POSTed to the configured URL"
assert_match '^application/json' "$(json_get "$HOOK" '["headers"]["content-type"]')" \
    "webhook: JSON content type"
json_get "$HOOK" '["body"]' >"$TEST_TMP/slack.json"
assert_json "$TEST_TMP/slack.json" "webhook body is JSON"
assert_eq header "$(json_get "$TEST_TMP/slack.json" '["blocks"][0]["type"]')" "Slack: header block"
assert_eq "CÁRIS Backup: test notification from $HOST" \
    "$(json_get "$TEST_TMP/slack.json" '["blocks"][0]["text"]["text"]')" "Slack: the title"
assert_contains "$(json_get "$TEST_TMP/slack.json" '["text"]')" "test notification" \
    "Slack: fallback text"

# the same from .env.local (where the seed puts its settings)
printf 'BACKUP_SLACK_WEBHOOK_URL="http://127.0.0.1:%s%s"\nBACKUP_SLACK_NOTIFICATIONS=true\n' \
    "$HOOK_PORT" "$HOOK_PATH" >.env.local
chmod 600 .env.local
run cb notify test --json
assert_rc 0 "channels configured in .env.local"
assert_json "$OUT_FILE" "notify test --json (after the command) is JSON"
assert_eq 2 "$(count_msgs hook)" "the webhook got the second message"
rm -f .env.local

# --- SMTP: wrong password (permanent: one try), TLS required but not offered -----------

T0=$(now_ms)
run env "${EMAIL_ENV[@]}" BACKUP_SMTP_PASSWORD=Wrong-pw-9999 "$CARIS_BIN" --json notify test
assert_rc 1 "wrong SMTP password fails"
assert_eq 1 "$(json_get "$OUT_FILE" '["channels"][0]["tries"]')" "login denied is not retried"
assert_contains "$(json_get "$OUT_FILE" '["channels"][0]["hint"]')" "BACKUP_SMTP_PASSWORD" \
    "the hint names the credentials' variables"
assert_not_contains "$OUT$ERR" "Wrong-pw-9999" "the wrong password is not shown"
assert_eq 1 "$(cat "$TEST_TMP/smtp/auth-failures" 2>/dev/null)" "the server saw one failed login"
assert_eq 1 "$(count_msgs smtp)" "nothing delivered with the wrong password"

run env "${EMAIL_ENV[@]}" BACKUP_SMTP_TLS=require "$CARIS_BIN" notify test
assert_rc 1 "BACKUP_SMTP_TLS=require and no STARTTLS offered: fails"
assert_contains "$ERR" "STARTTLS" "says the server offers no STARTTLS"
assert_eq 1 "$(count_msgs smtp)" "nothing sent without TLS when TLS is required"

# --- STARTTLS: used when offered, the certificate verified ------------------------------

CA=$TEST_TMP/ca
mkdir -p "$CA"
(
    cd "$CA" || exit 1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
        -out ca.pem -days 2 -subj /CN=caris-test-ca &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key \
            -out srv.csr -subj /CN=127.0.0.1 &&
        printf 'subjectAltName=IP:127.0.0.1\n' >san.ext &&
        openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem \
            -days 2 -extfile san.ext
) >"$TEST_TMP/openssl.log" 2>&1
assert_true "a test CA and server certificate" test -s "$CA/srv.pem"
start_server tls smtp --auth "$SMTP_USER:$SMTP_PW" --tls "$CA/srv.pem:$CA/srv.key"
TLS_PORT=$PORT
run env "${EMAIL_ENV[@]}" BACKUP_SMTP_URL="smtp://127.0.0.1:$TLS_PORT" \
    BACKUP_SMTP_CA_FILE="$CA/ca.pem" "$CARIS_BIN" --json notify test
assert_rc 0 "STARTTLS offered (BACKUP_SMTP_TLS=try): delivered"
assert_eq true "$(json_get "$TEST_TMP/tls/msg-1.json" '["tls"]')" "the session was encrypted (STARTTLS)"
assert_eq true "$(json_get "$TEST_TMP/tls/msg-1.json" '["authenticated"]')" \
    "AUTH over TLS (the server allows it only after STARTTLS)"
run env "${EMAIL_ENV[@]}" BACKUP_SMTP_URL="smtp://127.0.0.1:$TLS_PORT" BACKUP_SMTP_TLS=require \
    "$CARIS_BIN" --json notify test
assert_rc 1 "a certificate of an unknown CA is refused"
assert_eq 1 "$(json_get "$OUT_FILE" '["channels"][0]["tries"]')" "a certificate error is not retried"
assert_contains "$(json_get "$OUT_FILE" '["channels"][0]["hint"]')" "BACKUP_SMTP_CA_FILE" \
    "the hint says how to trust a private CA"
assert_eq 1 "$(count_msgs tls)" "nothing sent to an unverified server"
start_server smtps smtp --auth "$SMTP_USER:$SMTP_PW" --smtps "$CA/srv.pem:$CA/srv.key"
run env "${EMAIL_ENV[@]}" BACKUP_SMTP_URL="smtps://127.0.0.1:$PORT" BACKUP_SMTP_TLS=require \
    BACKUP_SMTP_CA_FILE="$CA/ca.pem" "$CARIS_BIN" notify test
assert_rc 0 "smtps:// (TLS from the start): delivered"
assert_eq true "$(json_get "$TEST_TMP/smtps/msg-1.json" '["authenticated"]')" "smtps: AUTH"
run env "${EMAIL_ENV[@]}" BACKUP_SMTP_CA_FILE="$CA/nonexistent.pem" "$CARIS_BIN" notify test
assert_rc 6 "a missing BACKUP_SMTP_CA_FILE is a configuration error"

# --- header injection through the configuration --------------------------------------

run env "${EMAIL_ENV[@]}" BACKUP_EMAIL_RECIPIENTS=$'ops@example.org\r\nBcc: victim@example.org' \
    "$CARIS_BIN" notify test
assert_rc 6 "a recipient with CR LF is refused"
run env "${EMAIL_ENV[@]}" BACKUP_EMAIL_FROM=$'CÁRIS <backup@example.org>\nBcc: victim@example.org' \
    "$CARIS_BIN" notify test
assert_rc 6 "a sender with LF is refused"
assert_eq 1 "$(count_msgs smtp)" "nothing sent with an injected header"

# --- a recipient the server refuses: the others get the message, the error names it ----

start_server rcpt smtp --refuse-rcpt gone@example.org
RCPT_URL=smtp://127.0.0.1:$PORT
run env BACKUP_SMTP_URL="$RCPT_URL" BACKUP_EMAIL_FROM=backup@example.org \
    BACKUP_EMAIL_RECIPIENTS="ops@example.org, gone@example.org, dba@example.org" \
    "$CARIS_BIN" --json notify test
assert_rc 1 "a refused recipient: notify test fails"
assert_eq 1 "$(count_msgs rcpt)" "the message was sent once"
assert_eq '["ops@example.org", "dba@example.org"]' "$(json_get "$TEST_TMP/rcpt/msg-1.json" '["rcpt_tos"]')" \
    "to every recipient but the refused one"
assert_eq 1 "$(json_get "$OUT_FILE" '["channels"][0]["tries"]')" "not tried again (no second copy)"
assert_contains "$(json_get "$OUT_FILE" '["channels"][0]["error"]')" \
    "refused recipient gone@example.org (550 5.1.1 no such user here)" "the error names the refused address"
assert_contains "$(json_get "$OUT_FILE" '["channels"][0]["hint"]')" "BACKUP_EMAIL_RECIPIENTS" \
    "the hint names the variable"
run env BACKUP_SMTP_URL="$RCPT_URL" BACKUP_EMAIL_FROM=backup@example.org \
    BACKUP_EMAIL_RECIPIENTS=gone@example.org "$CARIS_BIN" --json notify test
assert_rc 1 "the only recipient refused: fails"
assert_contains "$(json_get "$OUT_FILE" '["channels"][0]["error"]')" \
    "refused every recipient: gone@example.org" "says no one got it, and who was refused"
assert_eq 1 "$(count_msgs rcpt)" "nothing more sent"
# one recipient refused (550), the others taken, then the message itself refused for now (451):
# tried again, and delivered (it was called "refused every recipient" and never retried)
start_server rcptdata smtp --refuse-rcpt gone@example.org --fail-data 1
run env BACKUP_SMTP_URL="smtp://127.0.0.1:$PORT" BACKUP_EMAIL_FROM=backup@example.org \
    BACKUP_EMAIL_RECIPIENTS="ops@example.org, gone@example.org" "$CARIS_BIN" --json notify test
assert_eq 1 "$(cat "$TEST_TMP/rcptdata/data-failures" 2>/dev/null)" "the first message got 451"
assert_eq 2 "$(json_get "$OUT_FILE" '["channels"][0]["tries"]')" "the 451 after a refused recipient is tried again"
assert_eq '["ops@example.org"]' "$(json_get "$TEST_TMP/rcptdata/msg-1.json" '["rcpt_tos"]')" \
    "... and the second try delivers to the recipient the server takes"
assert_contains "$(json_get "$OUT_FILE" '["channels"][0]["error"]')" "refused recipient gone@example.org" \
    "... naming the refused one"

# --- server down: retried with backoff, bounded, names the channel --------------------

start_server closed refuse
CLOSED_PORT=$PORT
T0=$(now_ms)
run env "${EMAIL_ENV[@]}" BACKUP_SMTP_URL="smtp://127.0.0.1:$CLOSED_PORT" "${SLACK_ENV[@]}" \
    "$CARIS_BIN" --json notify test
T1=$(now_ms)
assert_rc 1 "SMTP server down: notify test fails"
assert_eq false "$(json_get "$OUT_FILE" '["channels"][0]["ok"]')" "email: failed"
assert_eq 3 "$(json_get "$OUT_FILE" '["channels"][0]["tries"]')" "email: tried 3 times"
assert_eq true "$(json_get "$OUT_FILE" '["channels"][1]["ok"]')" "slack still delivered"
assert_eq "failure 1" "$(json_eval "$OUT_FILE" 'd["error"]["code"] + " " + str(d["error"]["exitCode"])')" \
    "the failure's error object (docs/JSON.md, Errors) on the document"
assert_cmp "$(json_get "$OUT_FILE" '["channels"][0]["durationMs"]')" -ge 3000 \
    "backoff: 1 s then 2 s between the tries"
assert_cmp $((T1 - T0)) -lt 15000 "gave up within the bound"
assert_contains "$(json_get "$OUT_FILE" '["channels"][0]["error"]')" \
    "email notification via smtp://127.0.0.1:$CLOSED_PORT failed after 3 tries" \
    "the error names the channel and the server"
assert_contains "$ERR" "retrying in" "each failed try is logged"
# the same without --json: the error on stderr with its hint, exit 1
run env "${EMAIL_ENV[@]}" BACKUP_SMTP_URL="smtp://127.0.0.1:$CLOSED_PORT" \
    CARIS_NOTIFY_TIMEOUT_SECONDS=1 "$CARIS_BIN" notify test
assert_rc 1 "text output: exit 1"
assert_contains "$OUT" "email  smtp://127.0.0.1:$CLOSED_PORT: error" "text output: per channel"
assert_contains "$ERR" "HINT: " "text output: the hint"

# a webhook host that is down, too
run env "${SLACK_ENV[@]/$HOOK_PORT/$CLOSED_PORT}" CARIS_NOTIFY_TIMEOUT_SECONDS=1 \
    "$CARIS_BIN" --json notify test
assert_rc 1 "webhook down: fails"
assert_contains "$(json_get "$OUT_FILE" '["channels"][0]["error"]')" \
    "slack notification via http://127.0.0.1:$CLOSED_PORT failed" "names the slack channel"

# --- a server that accepts and never answers: the deadline holds ----------------------

start_server hang blackhole
T0=$(now_ms)
# 4 s: the first try gets 1.33 s, the pause 1 s, the second try a share of the 1.67 s left
# (a margin of more than a second for a loaded machine), the third what remains if any.
run env "${EMAIL_ENV[@]}" BACKUP_SMTP_URL="smtp://127.0.0.1:$PORT" CARIS_NOTIFY_TIMEOUT_SECONDS=4 \
    "$CARIS_BIN" --json notify test
T1=$(now_ms)
assert_rc 1 "a hanging SMTP server: fails"
assert_cmp $((T1 - T0)) -lt 8000 "within CARIS_NOTIFY_TIMEOUT_SECONDS (4 s) and some slack"
assert_cmp "$(json_get "$OUT_FILE" '["channels"][0]["tries"]')" -ge 2 \
    "each try gets a share of the deadline, so there is more than one"
assert_cmp "$(cat "$TEST_TMP/hang/connections")" -ge 2 "the server saw the tries"
HANG_PORT=$PORT

# A server that takes the message and never answers its end: the deadline holds too (libcurl
# waited its own 120 s for that reply, whatever the transfer's timeout: one try took 2 minutes)
start_server mute smtp-mute-eom
T0=$(now_ms)
run env "${EMAIL_ENV[@]}" BACKUP_SMTP_URL="smtp://127.0.0.1:$PORT" CARIS_NOTIFY_TIMEOUT_SECONDS=6 \
    "$CARIS_BIN" --json notify test
T1=$(now_ms)
assert_rc 1 "an SMTP server mute after the message: fails"
assert_cmp $((T1 - T0)) -lt 10000 "within CARIS_NOTIFY_TIMEOUT_SECONDS (6 s) and some slack"
assert_cmp "$(json_get "$OUT_FILE" '["channels"][0]["tries"]')" -ge 2 "... with more than one try"
assert_contains "$(json_get "$OUT_FILE" '["channels"][0]["error"]')" "timeout" "it says the server did not answer in time"

# While a notify test waits on the server that never answers: the password and the webhook URL are out of
# the process environment (as the repository key), and SIGTERM stops it at once (the
# daemon's shutdown relies on the cancel flag reaching the transfer).
CONNS_BEFORE=$(cat "$TEST_TMP/hang/connections")
more_connections() { (($(cat "$TEST_TMP/hang/connections") > CONNS_BEFORE)); }
bg_start env "${EMAIL_ENV[@]}" BACKUP_SMTP_URL="smtp://127.0.0.1:$HANG_PORT" "${SLACK_ENV[@]}" \
    CARIS_NOTIFY_TIMEOUT_SECONDS=60 "$CARIS_BIN" notify test
if wait_until 20 more_connections; then
    ENVIRON=$(tr '\0' '\n' <"/proc/$BG_PID/environ")
    assert_contains "$ENVIRON" "BACKUP_SMTP_USER=$SMTP_USER" "environ read (the user is no secret)"
    assert_not_contains "$ENVIRON" "$SMTP_PW" "the SMTP password is not in /proc/PID/environ"
    assert_not_contains "$ENVIRON" "HookSecret1234" "the webhook URL is not in /proc/PID/environ"
    T0=$(now_ms)
    kill -TERM "$BG_PID"
    wait "$BG_PID"
    BG_RC=$?
    T1=$(now_ms)
    assert_eq 1 "$BG_RC" "SIGTERM during a transfer: exit 1"
    assert_cmp $((T1 - T0)) -lt 3000 "stopped within 3 s of SIGTERM (the try had 20 s left)"
    assert_contains "$(cat "$BG_ERR")" "cancelled" "says it was cancelled"
else
    fail "notify test never connected to the hanging server" "$(_tail "$BG_ERR")"
fi

# Both channels on servers that never answer: they are tried at the same time (a notification
# takes one channel's bound, not the sum). The webhook's server sees its connection while the
# SMTP server's first try still waits; one after the other, it came only once the three SMTP
# tries had given up (each ends at its connect timeout, 10 s, as no greeting comes).
start_server hang2 blackhole
# shellcheck disable=SC2317 # called through wait_until
webhook_tried() { [[ -s $TEST_TMP/hang2/connections ]]; }
bg_start env "${EMAIL_ENV[@]}" BACKUP_SMTP_URL="smtp://127.0.0.1:$HANG_PORT" \
    BACKUP_SLACK_WEBHOOK_URL="http://127.0.0.1:$PORT$HOOK_PATH" CARIS_NOTIFY_TIMEOUT_SECONDS=300 \
    "$CARIS_BIN" notify test
if wait_until 20 webhook_tried; then
    pass "both channels were tried at once"
else
    fail "the webhook was not tried while the SMTP server kept the email waiting"
fi
kill -TERM "$BG_PID"
wait "$BG_PID"

# --- webhook: transient errors retried, permanent ones not ----------------------------

start_server flaky http --fail 2 --status 503
run env BACKUP_SLACK_WEBHOOK_URL="http://127.0.0.1:$PORT$HOOK_PATH" "$CARIS_BIN" --json notify test
assert_rc 0 "503 twice, then 200: delivered"
assert_eq 3 "$(json_get "$OUT_FILE" '["channels"][0]["tries"]')" "on the third try"
assert_eq 3 "$(count_msgs flaky)" "the server saw three POSTs"

start_server gone http --fail 99 --status 404
run env BACKUP_SLACK_WEBHOOK_URL="http://127.0.0.1:$PORT$HOOK_PATH" "$CARIS_BIN" --json notify test
assert_rc 1 "404 (webhook revoked): fails"
assert_eq 1 "$(json_get "$OUT_FILE" '["channels"][0]["tries"]')" "a 404 is not retried"
assert_contains "$(json_get "$OUT_FILE" '["channels"][0]["error"]')" "HTTP 404: no_service" \
    "the reply is in the error"
assert_eq 1 "$(count_msgs gone)" "the server saw one POST"

# --- channel switches and webhook rules -----------------------------------------------

run env "${EMAIL_ENV[@]}" BACKUP_EMAIL_NOTIFICATIONS=false "${SLACK_ENV[@]}" \
    "$CARIS_BIN" --json notify test
assert_rc 0 "email switched off: slack only"
assert_eq '["slack"]' "$(json_eval "$OUT_FILE" '[c["channel"] for c in d["channels"]]')" \
    "BACKUP_EMAIL_NOTIFICATIONS=false leaves email out"
run env BACKUP_SLACK_WEBHOOK_URL="http://hooks.example.org$HOOK_PATH" "$CARIS_BIN" notify test
assert_rc 6 "a webhook over plain http to another host is refused"
assert_contains "$ERR" "must be https" "says why"
# (a slash missing after the scheme, which libcurl mends: it crashed notify test and the daemon)
run env BACKUP_SLACK_WEBHOOK_URL="https:/hooks.example.org$HOOK_PATH" "$CARIS_BIN" notify test
assert_rc 6 "a webhook URL with one slash after https: is refused"
assert_contains "$ERR" "BACKUP_SLACK_WEBHOOK_URL is not a valid URL" "... as not a valid URL"
assert_not_contains "$ERR" "$HOOK_PATH" "... without repeating its path"

# --- secrets: nowhere -----------------------------------------------------------------

ALL=$(cat "$ALL_OUTPUT" "$TEST_TMP"/smtp/msg-*.eml "$TEST_TMP"/*/msg-*.json 2>/dev/null)
assert_not_contains "$ALL" "$SMTP_PW" "the SMTP password is in no output, message or request body"
assert_not_contains "$(cat "$ALL_OUTPUT" "$TEST_TMP"/smtp/msg-*.eml)" "HookSecret1234" \
    "the webhook's path is in no output and no mail"
assert_not_contains "$ALL" "$PG_PW" "the database password is nowhere"
assert_not_contains "$ALL" "$BACKUP_ENCRYPTION_KEY" "the repository key is nowhere"

test_done

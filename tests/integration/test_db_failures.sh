#!/usr/bin/env bash
# Database backups that cannot happen fail clearly and leave nothing behind: POSTGRES_URL
# unset (exit 6), an unparsable URL (exit 6), a wrong password (exit 10, "authentication",
# the password never printed), a missing database and a server that is down (exit 10,
# naming host, port and database). None of them lists a backup; `check` stays clean.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
psql_db "$CARIS_PG_DB" -c "CREATE TABLE t (id integer PRIMARY KEY, v text);
    INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 1000) AS i" >/dev/null

# --- POSTGRES_URL unset ----------------------------------------------------------------------
# (the test's cwd has no .env.local)
init_repo
run env -u POSTGRES_URL "$CARIS_BIN" backup database
assert_rc 6 "POSTGRES_URL unset"
assert_contains "$OUT$ERR" "POSTGRES_URL not set" \
    'POSTGRES_URL unset: "POSTGRES_URL not set"'

# --- an unparsable URL that holds a password -----------------------------------------------------
POSTGRES_URL="host=127.0.0.1 password=Parse-Secret-4711 dbname" run cb backup database
assert_rc 6 "an unparsable POSTGRES_URL"
assert_not_contains "$OUT$ERR" "Parse-Secret-4711" "the unparsable URL's password is not printed"
# URIs libpq reads as key=value text (another scheme, a typo, a blank before it): the text is
# never quoted, in the error, in --json, in the audit log or by the restore's target URL
for url in 'postgresql+psycopg2://app:Parse-Secret-4711@db/caris' 'jdbc:postgresql://db/caris?password=Parse-Secret-4711' \
    'postgresql:/app:Parse-Secret-4711@db/caris?sslmode=require' 'postgresql//app:Parse-Secret-4711@db/caris' \
    ' postgresql://app:Parse-Secret-4711@db/caris' 'postgresql://app:Parse-Secret-4711' \
    'postgresql://app:Parse-Secret-4711/caris'; do
    POSTGRES_URL=$url run cb --json backup database
    assert_rc 6 "POSTGRES_URL '${url%%:*}...' is refused"
    assert_contains "$ERR" "POSTGRES_URL is invalid" "POSTGRES_URL '${url%%:*}...': the error says which setting"
    assert_not_contains "$OUT$ERR" "Parse-Secret-4711" "POSTGRES_URL '${url%%:*}...': its password is not printed"
done
CARIS_RESTORE_TARGET_URL='pgsql://app:Parse-Secret-4711@db/caris' run cb restore database latest:database
assert_not_contains "$OUT$ERR" "Parse-Secret-4711" "a target URL of another scheme: its password is not printed"
# user:password without '@host' (libpq reads the password as the port): not quoted either, and
# refused as a password on the command line
CARIS_RESTORE_TARGET_URL='postgres://app:Parse-Secret-4711' run cb --json restore database latest:database
assert_not_contains "$OUT$ERR" "Parse-Secret-4711" "a target URL without its @host: its password is not printed"
run cb restore database latest:database --target-url 'postgres://app:Parse-Secret-4711'
assert_rc 2 "--target-url with a password but no @host is refused"
assert_contains "$ERR" "must not contain a password" "as a password on the command line"
assert_not_contains "$OUT$ERR" "Parse-Secret-4711" "and not printed"
assert_false "no such password in the audit log" grep -q -F Parse-Secret-4711 "$BACKUP_DIR/metadata/audit.log"

# --- wrong password ------------------------------------------------------------------------------
wrong=Wrong-Secret-4712-0815
POSTGRES_URL="postgresql://$CARIS_PG_USER:$wrong@127.0.0.1:$CARIS_PG_PORT/$CARIS_PG_DB" run cb backup database
assert_rc 10 "wrong password"
assert_match '[Aa]uthentication' "$OUT$ERR" "the message says authentication failed"
assert_contains "$OUT$ERR" "$CARIS_PG_PORT" "the message names the port"
assert_contains "$OUT$ERR" "$CARIS_PG_DB" "the message names the database"
assert_not_contains "$OUT$ERR" "$wrong" "the wrong password is not printed"
assert_not_contains "$OUT$ERR" "$CARIS_PG_PASSWORD" "the right password is not printed"
# the separator percent-encoded by mistake (user%3Apassword): libpq takes it all for the user
# name, which the server's refusal quotes; what follows the ':' is not shown, nor audited
POSTGRES_URL="postgresql://$CARIS_PG_USER%3A$wrong@127.0.0.1:$CARIS_PG_PORT/$CARIS_PG_DB" run cb --json backup database
assert_rc 10 "a password after an encoded ':' in the user name: refused"
assert_contains "$OUT$ERR" "$CARIS_PG_USER:(redacted)" "the user name is shown up to its ':'"
assert_not_contains "$OUT$ERR" "$wrong" "the password after the encoded ':' is not printed"
assert_false "nor kept in the audit log" grep -qF -- "$wrong" "$BACKUP_DIR/metadata/audit.log"
# ... and with no database in the URL, whose name is then the user's
POSTGRES_URL="postgresql://$CARIS_PG_USER%3A$wrong@127.0.0.1:$CARIS_PG_PORT" run cb --json backup database
assert_rc 10 "the same without a database in the URL: refused"
assert_not_contains "$OUT$ERR" "$wrong" "the password is not printed as the database's name either"
assert_false "nor kept in the audit log" grep -qF -- "$wrong" "$BACKUP_DIR/metadata/audit.log"
# the same through PGPASSWORD with a URL without password
PGPASSWORD=$wrong POSTGRES_URL=$(pg_url_nopw) run cb backup database
assert_rc 10 "wrong password from PGPASSWORD"
assert_not_contains "$OUT$ERR" "$wrong" "the wrong PGPASSWORD is not printed"

# --- missing database --------------------------------------------------------------------------
POSTGRES_URL=$(pg_url no_such_database) run cb backup database
assert_rc 10 "missing database"
assert_contains "$OUT$ERR" "no_such_database" "the message names the missing database"

# --- server down ---------------------------------------------------------------------------------
pg_pause || fail "cannot stop the server"
run cb backup database
assert_rc 10 "server down"
assert_contains "$OUT$ERR" "127.0.0.1" "the message names the host"
assert_contains "$OUT$ERR" "$CARIS_PG_PORT" "the message names the port"
assert_not_contains "$OUT$ERR" "$CARIS_PG_PASSWORD" "the password is not printed"
run cb --json backup database
assert_rc 10 "server down (--json)"
pg_resume || fail "cannot start the server again"

# --- nothing was listed; the repository (if any) is clean; a good backup still works ------------
if [[ -d $REPO ]]; then
    assert_eq "" "$(list_ids)" "no failed backup is listed"
    assert_exit 0 cb check
fi
db_backup_json "$TEST_TMP/ok.json"
assert_rc 0 "a backup after the server is back"
assert_eq "$BACKUP_ID" "$(list_ids)" "only the good backup is listed"
assert_exit 0 cb check
assert_exit 0 cb verify "$BACKUP_ID"

assert_not_contains "$(cat "$ALL_OUTPUT")" "$CARIS_PG_PASSWORD" "the password appears in no output"
assert_false "the password appears in no file under BACKUP_DIR" grep -r -a -l -F -e "$CARIS_PG_PASSWORD" "$BACKUP_DIR"

test_done

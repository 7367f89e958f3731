#!/usr/bin/env bash
# restore database --create brings back the settings of the backup's database itself, which
# pg_restore applies only with its own --create: ALTER DATABASE ... SET, CONNECTION LIMIT,
# ALTER ROLE ... IN DATABASE ... SET, GRANT/REVOKE ... ON DATABASE (REVOKE CONNECT FROM
# PUBLIC) and its comment, all renamed to the new database (the source database is never
# touched). One that cannot be applied (its role is gone) is a warning: exit 3, the rest
# applied, "warnings" in --json.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
src=$CARIS_PG_DB
psql_db "$src" -c "CREATE SCHEMA clinical;
    CREATE TABLE clinical.notes (id integer PRIMARY KEY, body text);
    INSERT INTO clinical.notes SELECT i, 'note ' || i FROM generate_series(1, 50) AS i;
    CREATE ROLE app_reader;
    CREATE ROLE gone_role;
    CREATE ROLE outsider;
    CREATE ROLE database;
    CREATE ROLE notes_owner;
    CREATE TABLE clinical.extra (id integer);
    ALTER TABLE clinical.extra OWNER TO notes_owner;
    CREATE FUNCTION clinical.definer() RETURNS integer LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';
    REVOKE ALL ON FUNCTION clinical.definer() FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION clinical.definer() TO app_reader;
    GRANT SELECT ON clinical.notes TO app_reader, notes_owner;
    REVOKE USAGE ON SCHEMA public FROM PUBLIC;
    ALTER DATABASE \"$src\" SET search_path TO clinical, public;
    ALTER DATABASE \"$src\" SET work_mem TO '8MB';
    ALTER DATABASE \"$src\" CONNECTION LIMIT 42;
    ALTER ROLE app_reader IN DATABASE \"$src\" SET statement_timeout TO '5s';
    ALTER ROLE gone_role IN DATABASE \"$src\" SET \"app.jwt_secret\" TO 'Zq8-gone-role-secret';
    ALTER ROLE database IN DATABASE \"$src\" SET work_mem TO '2MB';
    REVOKE CONNECT, TEMPORARY ON DATABASE \"$src\" FROM PUBLIC;
    GRANT CONNECT ON DATABASE \"$src\" TO app_reader;
    GRANT CREATE ON DATABASE \"$src\" TO database;
    COMMENT ON DATABASE \"$src\" IS 'Prontuários; clínica ''A'' -- teste';" >/dev/null ||
    fail "setting up the source database failed"

# What a database's own settings are, in one comparable text.
db_settings() {
    psql_db postgres -c "SELECT coalesce(r.rolname, '*') || ': ' || array_to_string(s.setconfig, ',')
        FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
        LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = '$1' ORDER BY 1"
    psql_db postgres -c "SELECT datconnlimit, shobj_description(oid, 'pg_database'),
        has_database_privilege('outsider', oid, 'CONNECT'),
        has_database_privilege('app_reader', oid, 'CONNECT'),
        has_database_privilege('database', oid, 'CREATE') FROM pg_database WHERE datname = '$1'"
}
db_settings "$src" >"$TEST_TMP/src.before"
assert_contains "$(cat "$TEST_TMP/src.before")" "42|Prontuários; clínica 'A' -- teste|f|t|t" "the source database's settings are in place"

init_repo
db_backup_json "$TEST_TMP/full.json" --full
assert_rc 0 "full backup"
id=$BACKUP_ID

# --- the plan says what --create applies ------------------------------------------------------
CARIS_RESTORE_TARGET_URL=$(pg_url dry_new) run cb restore database "$id" --create --dry-run
assert_rc 0 "restore --create --dry-run"
assert_contains "$ERR" "then apply the settings of database $src itself" "the plan names the settings step"
assert_false "--create --dry-run created no database" pg_db_exists dry_new

# --- every setting, under the new name --------------------------------------------------------
CARIS_RESTORE_TARGET_URL=$(pg_url restored) run cb --json restore database "$id" --create --verify
assert_rc 0 "restore --create into a new database"
assert_eq 0 "$(json_eval "$OUT_FILE" 'len(d["warnings"])')" "no warnings"
db_settings restored >"$TEST_TMP/restored"
assert_eq "$(cat "$TEST_TMP/src.before")" "$(sed "s/restored/$src/" "$TEST_TMP/restored")" \
    "the new database has the source's settings: search_path, work_mem, role settings, connection limit, CONNECT revoked from PUBLIC and granted to app_reader, comment"
assert_contains "$(cat "$TEST_TMP/restored")" "*: search_path=clinical, public,work_mem=8MB" "... the database's SET settings"
assert_contains "$(cat "$TEST_TMP/restored")" "app_reader: statement_timeout=5s" "... the role's setting in the database"
# (a role named database, which pg_dump leaves unquoted, was taken for a database's name: its
# setting and grant were refused as naming another database)
assert_contains "$(cat "$TEST_TMP/restored")" "database: work_mem=2MB" "... the setting of the role named database"
assert_contains "$(cat "$TEST_TMP/restored")" "|f|t|t" "... and its grant"
db_settings "$src" >"$TEST_TMP/src.after"
assert_eq "$(cat "$TEST_TMP/src.before")" "$(cat "$TEST_TMP/src.after")" "the source database's settings were not touched"
assert_eq "50" "$(psql_db restored -c 'SELECT count(*) FROM clinical.notes')" "the rows are restored"

# --- a setting whose role is gone: a warning, the others applied ------------------------------
psql_db postgres -c "DROP ROLE gone_role" >/dev/null || fail "dropping gone_role failed"
CARIS_RESTORE_TARGET_URL=$(pg_url restored2) run cb restore database "$id" --create
assert_rc 3 "restore --create with a setting that cannot be applied: exit 3 (done with warnings)"
assert_contains "$ERR" "not applied" "the warning says a setting was not applied"
assert_contains "$ERR" "gone_role" "... naming the statement's role"
# (the warning quoted the statement's first 100 bytes: the value of a setting, a secret as
# PostgREST's app.jwt_secret is, went to the log, the JSON report and the daemon's API)
assert_not_contains "$ERR" "Zq8-gone-role-secret" "... not the setting's value"
assert_contains "$(db_settings restored2)" "*: search_path=clinical, public,work_mem=8MB" "the other settings are applied"
assert_contains "$(db_settings restored2)" "42|Prontuários; clínica 'A' -- teste|f|t|t" "... the connection limit, privileges and comment too"
CARIS_RESTORE_TARGET_URL=$(pg_url restored3) run cb --json restore database "$id" --create
assert_rc 3 "the same with --json"
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d["warnings"])')" "one warning in --json"
assert_not_contains "$(cat "$OUT_FILE")" "Zq8-gone-role-secret" "... without the setting's value"
assert_eq true "$(json_get "$OUT_FILE" '["ok"]')" "ok: the database is restored"

# --- a role missing on the target: the tables' privileges are left out, not the database's ---
# (pg_restore --no-privileges left out the database's ACL too: its REVOKE CONNECT FROM PUBLIC
# was lost, and every role could connect to the new database)
for db in restored restored2 restored3; do
    psql_db "$db" -c "DROP OWNED BY notes_owner" >/dev/null || fail "dropping notes_owner's table in $db failed"
done
psql_db "$src" -c "DROP OWNED BY notes_owner; DROP ROLE notes_owner" >/dev/null || fail "dropping notes_owner failed"
CARIS_RESTORE_TARGET_URL=$(pg_url restored4) run cb restore database "$id" --create
assert_rc 3 "restore --create with a role missing (and gone_role's setting): exit 3"
assert_contains "$ERR" "roles missing on the target: notes_owner" "the plan says privileges are left out for the missing role"
assert_contains "$(db_settings restored4)" "42|Prontuários; clínica 'A' -- teste|f|t|t" \
    "the database's REVOKE CONNECT FROM PUBLIC and its grants are applied: outsider may not connect"
# (pg_restore --no-privileges left out the backup's REVOKEs from PUBLIC: every role could run
# the SECURITY DEFINER function, as the restoring superuser, and use schema public)
privileges() {
    psql_db "$1" -c "SELECT has_function_privilege('outsider', 'clinical.definer()', 'EXECUTE'),
        has_function_privilege('app_reader', 'clinical.definer()', 'EXECUTE'),
        has_schema_privilege('outsider', 'public', 'USAGE'),
        has_table_privilege('app_reader', 'clinical.notes', 'SELECT'),
        has_table_privilege('outsider', 'clinical.notes', 'SELECT')"
}
assert_eq "f|t|f|t|f" "$(privileges restored4)" \
    "the backup's other privileges are applied: only app_reader may run the SECURITY DEFINER function, nobody else may use schema public"
assert_contains "$ERR" "1 of the backup's 5 privilege statements were not applied" "the grant to the missing role is a warning"
assert_contains "$ERR" "TO notes_owner" "... naming it"
psql_db postgres -c "CREATE DATABASE restored5" >/dev/null || fail "creating restored5 failed"
CARIS_RESTORE_TARGET_URL=$(pg_url restored5) run cb restore database "$id"
assert_rc 3 "restore into an existing database with a role missing: exit 3"
assert_eq "f|t|f|t|f" "$(privileges restored5)" "... the backup's privileges applied there too"
# its privileges go in a second transaction after pg_restore's: killed between the two, the
# database held the backup's data with the default privileges (the REVOKEs not applied) and no
# mark. It is marked while the restore runs, as a --jobs restore is, and the mark goes after
# the privileges (held before pg_restore here: the mark is there from the start)
psql_db postgres -c "CREATE DATABASE restored6" -c "COMMENT ON DATABASE restored6 IS 'before'" >/dev/null ||
    fail "creating restored6 failed"
db_comment() { psql_db postgres -Atc "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '$1'"; }
hold=$TEST_TMP/hold6
touch "$hold"
CARIS_RESTORE_TARGET_URL=$(pg_url restored6) CARIS_TEST_RESTORE_HOLD=$hold bg_start cb restore database "$id"
# shellcheck disable=SC2317 # called through wait_until
_held() { [[ -e $hold.held ]]; }
if wait_until 120 _held; then
    assert_contains "$(db_comment restored6)" "caris-backup: restore in progress, or killed: backup $id" \
        "a single-transaction restore with its privileges applied after it: the database is marked while it runs"
else
    fail "the restore did not reach its hold" "$(_tail "$BG_ERR")"
fi
rm -f "$hold"
wait "$BG_PID"
assert_eq 3 "$?" "... and restores (exit 3: the missing role's grant)"
assert_eq before "$(db_comment restored6)" "the mark went after the privileges, the comment put back"
assert_eq "f|t|f|t|f" "$(privileges restored6)" "... whose REVOKEs are applied"

# --- a LATIN1 backup, into a database named with an accent ------------------------------------
# (the statements ran on the maintenance database, a UTF-8 one, in the dump's client_encoding:
# the comment and the settings came back garbled, and the new database's name, read as LATIN1,
# named another database: restoring into "é" altered "Ã©", which this restore did not make)
psql_db postgres -c "CREATE DATABASE clínica TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'" >/dev/null ||
    fail "creating the LATIN1 database failed"
PGCLIENTENCODING=UTF8 psql_db postgres -c "ALTER DATABASE clínica SET application_name TO 'ação';
    COMMENT ON DATABASE clínica IS 'Prontuários'" >/dev/null &&
    PGCLIENTENCODING=UTF8 psql_db postgres -c 'CREATE DATABASE "Ã©"' >/dev/null ||
    fail "setting up the LATIN1 database failed"
POSTGRES_URL=$(pg_url clínica) db_backup_json "$TEST_TMP/latin.json" --full
assert_rc 0 "backup of the LATIN1 database clínica"
CARIS_RESTORE_TARGET_URL=$(pg_url é) run cb restore database "$BACKUP_ID" --create
assert_rc 0 "restore --create of the LATIN1 backup into database é"
assert_eq "$(PGCLIENTENCODING=UTF8 db_settings clínica)" "$(PGCLIENTENCODING=UTF8 db_settings é)" \
    "database é has clínica's setting and comment, accents intact (and no restore mark)"
assert_contains "$(PGCLIENTENCODING=UTF8 db_settings é)" "*: application_name=ação" "... application_name=ação"
assert_eq "-1||t|t|f" "$(PGCLIENTENCODING=UTF8 db_settings 'Ã©')" "database Ã© (another one) was not touched"

# --- a newer pg_restore: a session setting the server does not know -----------------------------
# (pg_restore 17 and later print SET transaction_timeout = 0 in a script whatever the server;
# a PostgreSQL 16 or older refuses it, and every --create restore with settings was "done with
# warnings", exit 3. Here pg_restore is replaced, in a mount namespace, by one that prints it.)
pg_major=$(psql_db postgres -c "SELECT current_setting('server_version_num')::int / 10000")
pg_restore_bin=/usr/lib/postgresql/$pg_major/bin/pg_restore
if ((pg_major < 17)) && [[ -x $pg_restore_bin ]] && unshare -m true 2>/dev/null; then
    cp "$pg_restore_bin" "$TEST_TMP/pg_restore.real"
    cat >"$TEST_TMP/pg_restore.newer" <<EOF
#!/usr/bin/env bash
case " \$* " in
*" --file=- "*)
    "$TEST_TMP/pg_restore.real" "\$@" | sed 's/^SET lock_timeout = 0;\$/&\nSET transaction_timeout = 0;/'
    exit "\${PIPESTATUS[0]}" ;;
esac
exec "$TEST_TMP/pg_restore.real" "\$@"
EOF
    chmod 755 "$TEST_TMP/pg_restore.newer"
    # shellcheck disable=SC2016 # expanded by the inner shell
    CARIS_RESTORE_TARGET_URL=$(pg_url restored_newer) run unshare -m bash -c 'mount --bind "$1" "$2" && shift 2 && exec "$@"' \
        - "$TEST_TMP/pg_restore.newer" "$pg_restore_bin" "$CARIS_BIN" --json restore database "$id" --create
    assert_rc 3 "restore --create with a pg_restore that prints SET transaction_timeout: exit 3 (gone_role's setting, as before)"
    assert_eq 2 "$(json_eval "$OUT_FILE" 'len(d["warnings"])')" "two warnings: gone_role's setting and notes_owner's grant"
    assert_not_contains "$(json_get "$OUT_FILE" '["warnings"]')" "transaction_timeout" "... none for SET transaction_timeout (settings or privileges)"
    assert_eq "f|t|f|t|f" "$(privileges restored_newer)" "... the backup's privileges applied"
    assert_contains "$(db_settings restored_newer)" "42|Prontuários; clínica 'A' -- teste|f|t|t" "... the settings applied"
else
    note "PostgreSQL $pg_major, or no mount namespaces: the newer pg_restore case is skipped"
fi

# --- no settings at all: the restore's mark is removed, the owner set ---------------------------
# (with no setting, comment or grant the owner was left out: pg_restore was not asked at all)
psql_db postgres -c "CREATE ROLE plain_owner" >/dev/null
psql_db postgres -c "CREATE DATABASE plain OWNER plain_owner" >/dev/null
psql_db plain -c "CREATE TABLE t (id integer); INSERT INTO t VALUES (1)" >/dev/null
POSTGRES_URL=$(pg_url plain) db_backup_json "$TEST_TMP/plain.json" --full
assert_rc 0 "backup of a database without settings"
CARIS_RESTORE_TARGET_URL=$(pg_url plain_r) run cb restore database "$BACKUP_ID" --create
assert_rc 0 "restore --create of a database without settings"
assert_eq "|-1" "$(psql_db postgres -c "SELECT coalesce(shobj_description(oid, 'pg_database'), '') || '|' || datconnlimit FROM pg_database WHERE datname = 'plain_r'")" \
    "no comment left (the restore's mark removed), no connection limit"
assert_eq plain_owner "$(psql_db postgres -c "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'plain_r'")" \
    "the new database's owner is the backup's"
assert_eq "t|t" "$(psql_db postgres -c "SELECT has_database_privilege('outsider', 'plain_r', 'CONNECT'),
    has_database_privilege('outsider', 'plain_r', 'TEMPORARY')")" \
    "PUBLIC may connect, as to the backup's database (closed while the restore ran)"

test_done

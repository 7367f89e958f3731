#!/usr/bin/env bash
# Selective restore: --table restores one table (and nothing else) into an empty database,
# row for row, and its plan says it leaves out indexes, keys and defaults; --schema restores
# one schema's objects; a table that is not in the backup is an error, not a silent empty
# restore; tables of several schemas that pg_restore cannot select exactly are refused; a bare
# --table name does not bring a view of that name in another schema.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
src=$CARIS_PG_DB
psql_db "$src" -f "$PG_FIXTURES/rich.sql" >/dev/null || fail "loading fixtures/rich.sql failed"
# two schemas with tables of the same two names, for the selections pg_restore cannot express
psql_db "$src" -c "CREATE SCHEMA s1; CREATE SCHEMA s2;
    CREATE TABLE s1.a (id int); CREATE TABLE s1.b (id int); CREATE TABLE s2.a (id int); CREATE TABLE s2.b (id int);
    INSERT INTO s1.a VALUES (1); INSERT INTO s1.b VALUES (2); INSERT INTO s2.a VALUES (3); INSERT INTO s2.b VALUES (4)" \
    >/dev/null || fail "creating s1 and s2 failed"
# a view with a table's name in another schema: pg_restore -t appointments alone would bring it
psql_db "$src" -c "CREATE SCHEMA s3; CREATE VIEW s3.appointments AS SELECT 1 AS x" >/dev/null ||
    fail "creating the view s3.appointments failed"
pg_sum "$src" "$TEST_TMP/src.sum"

init_repo
db_backup_json "$TEST_TMP/full.json" --full
assert_rc 0 "full backup"
id=$BACKUP_ID

# --- one table ------------------------------------------------------------------------------
pg_createdb one_table
CARIS_RESTORE_TARGET_URL=$(pg_url one_table) run cb restore database "$id" --table appointments --verify
assert_rc 0 "restore --table appointments --verify into an empty database"
assert_contains "$ERR" "definition and rows only" "the plan says --table leaves out indexes, keys and defaults"
assert_eq public.appointments "$(pg_user_tables one_table)" "only that table exists"
assert_eq 0 "$(psql_db one_table -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 's3'")" \
    "the view of that name in another schema did not come with it"
pg_sum one_table "$TEST_TMP/one_table.sum"
grep '^table public\.appointments ' "$TEST_TMP/src.sum" >"$TEST_TMP/want.tbl"
grep '^table ' "$TEST_TMP/one_table.sum" >"$TEST_TMP/got.tbl"
assert_sum_equal "$TEST_TMP/want.tbl" "$TEST_TMP/got.tbl" "the restored table has the same rows"
assert_eq 0 "$(psql_db one_table -c 'SELECT count(*) FROM pg_largeobject_metadata')" \
    "no large objects came with the table"

# --- one schema ------------------------------------------------------------------------------
# (pg_restore -n does not create the schema itself: the restore must, into an empty database)
pg_createdb one_schema
CARIS_RESTORE_TARGET_URL=$(pg_url one_schema) run cb restore database "$id" --schema audit
assert_rc 0 "restore --schema audit into an empty database"
assert_eq "$(printf '%s\n' audit.events audit.events_2025 audit.events_2026)" "$(pg_user_tables one_schema)" \
    "only the schema's tables exist"
pg_sum one_schema "$TEST_TMP/one_schema.sum"
grep -E '^(table|sequence|function|trigger|partition|partitioned|index|constraint) .*audit\.' "$TEST_TMP/src.sum" |
    grep -v 'clinical\.' >"$TEST_TMP/want.audit"
grep -E '^(table|sequence|function|trigger|partition|partitioned|index|constraint) .*audit\.' "$TEST_TMP/one_schema.sum" |
    grep -v 'clinical\.' >"$TEST_TMP/got.audit"
assert_sum_equal "$TEST_TMP/want.audit" "$TEST_TMP/got.audit" \
    "the schema's tables, sequence, function and partitions match"

# --- a table that is not in the backup -------------------------------------------------------
pg_createdb no_table
CARIS_RESTORE_TARGET_URL=$(pg_url no_table) run cb restore database "$id" --table no_such_table
assert_fails "restore --table of a table the backup does not have"
assert_contains "$OUT$ERR" "no_such_table" "the error names the table"
assert_eq "" "$(pg_user_tables no_table)" "nothing was restored"

# --- several tables: exactly those, or refused ------------------------------------------------
# pg_restore selects schemas (-n) and names (-t) separately: s1.a with s2.b would also bring
# s1.b and s2.a, which --clean would overwrite with the backup's rows (newer rows lost)
pg_createdb live
psql_db live -c "CREATE SCHEMA s1; CREATE SCHEMA s2; CREATE TABLE s1.a (id int); CREATE TABLE s1.b (id int);
    CREATE TABLE s2.a (id int); CREATE TABLE s2.b (id int); INSERT INTO s1.b VALUES (20), (21); INSERT INTO s2.a VALUES (30), (31)" >/dev/null
live_rows() { psql_db live -c "SELECT (SELECT count(*) FROM s1.a) || ' ' || (SELECT count(*) FROM s1.b) || ' ' ||
    (SELECT count(*) FROM s2.a) || ' ' || (SELECT count(*) FROM s2.b)"; }
CARIS_RESTORE_TARGET_URL=$(pg_url live) run cb restore database "$id" --clean --table s1.a --table s2.b
assert_rc 2 "restore --table s1.a --table s2.b is refused"
assert_contains "$ERR" "also restore s1.b, s2.a" "the error names the tables pg_restore would add"
assert_eq "0 2 2 0" "$(live_rows)" "the refused restore changed nothing"
CARIS_RESTORE_TARGET_URL=$(pg_url live) run cb restore database "$id" --clean --schema s1 --table s2.b
assert_rc 2 "restore --schema s1 --table s2.b is refused"
assert_contains "$ERR" "leave out s1.a" "the error names the table pg_restore would leave out"
assert_eq "0 2 2 0" "$(live_rows)" "the refused restore changed nothing"
pg_createdb two_tables
CARIS_RESTORE_TARGET_URL=$(pg_url two_tables) run cb restore database "$id" --table s1.a --table s1.b --verify
assert_rc 0 "restore --table s1.a --table s1.b (one schema)"
assert_eq "$(printf '%s\n' s1.a s1.b)" "$(pg_user_tables two_tables)" "exactly those two tables"
pg_createdb same_name
CARIS_RESTORE_TARGET_URL=$(pg_url same_name) run cb restore database "$id" --table s1.a --table s2.a
assert_rc 0 "restore --table s1.a --table s2.a (one name)"
assert_eq "$(printf '%s\n' s1.a s2.a)" "$(pg_user_tables same_name)" "exactly those two tables"

# --- pg_restore fails after the restore made a schema for it: in one transaction (no --jobs)
# nothing stays, the schema made for it included, and the error says so. An event trigger in
# the target refuses every CREATE TABLE; CREATE SCHEMA goes through.
pg_createdb blocked
psql_db blocked -c "CREATE FUNCTION no_tables() RETURNS event_trigger LANGUAGE plpgsql AS
    \$\$ BEGIN RAISE EXCEPTION 'no new tables here'; END \$\$" >/dev/null
psql_db blocked -c "CREATE EVENT TRIGGER no_tables ON ddl_command_start WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION no_tables()" >/dev/null
CARIS_RESTORE_TARGET_URL=$(pg_url blocked) run cb restore database "$id" --schema audit
assert_fails "a restore that pg_restore cannot apply fails"
assert_contains "$ERR" "was not changed" "it says the database was not changed"
assert_not_contains "$ERR" "partially restored" "it does not say partially restored"
assert_eq 0 "$(psql_db blocked -c "SELECT count(*) FROM pg_namespace WHERE nspname = 'audit'")" \
    "the schema made for the restore is dropped again"
assert_eq "" "$(pg_user_tables blocked)" "no table was restored"
# the same with --jobs (not one transaction): what it did stays, and the error says what to do
CARIS_RESTORE_TARGET_URL=$(pg_url blocked) run cb restore database "$id" --schema audit --jobs 2
assert_fails "a --jobs restore that pg_restore cannot apply fails"
assert_contains "$ERR" "database blocked may be partially restored" "it says the database may be partially restored"
assert_contains "$ERR" "HINT: do not use database blocked as it is" "the hint says not to use it, and how to restore again"

# --- --table of an inheritance parent: its own rows (count(*) FROM ONLY) are compared -------
# (the backup recorded its count with its child's, the server's count(*): the restore of it
# alone failed verification; found by a review)
psql_db "$src" -c "CREATE TABLE par (id int); CREATE TABLE kid () INHERITS (par);
    INSERT INTO par VALUES (1), (2); INSERT INTO kid VALUES (3)" >/dev/null || fail "creating par and kid failed"
db_backup_json "$TEST_TMP/inh.json" --full
assert_rc 0 "a backup with an inheritance parent"
CARIS_RESTORE_TARGET_URL=$(pg_url inh_par) run cb --json restore database "$BACKUP_ID" --create --table public.par --verify
assert_rc 0 "restore --table of the parent alone verifies"
assert_eq "2 2 True" "$(json_eval "$OUT_FILE" '" ".join(str(x) for t in d["tables"] if t["name"] == "par" for x in (t["expected"], t["actual"], t["only"]))')" \
    "its own 2 rows expected and found (only)"
CARIS_RESTORE_TARGET_URL=$(pg_url inh_all) run cb --json restore database "$BACKUP_ID" --create --verify
assert_rc 0 "the whole backup restores and verifies"
assert_eq "3" "$(psql_db inh_all -c 'SELECT count(*) FROM par')" "par with its child's rows, as in the source"

# --- a --create restore whose row counts do not match: the database made for it goes --------
# (the mismatch is the test knob's: one row more counted in public.par than there is)
CARIS_TEST_ROWS_SKEW=public.par CARIS_RESTORE_TARGET_URL=$(pg_url inh) \
    run cb restore database "$BACKUP_ID" --create --table public.par --verify
assert_rc 4 "the restore's verification fails (exit 4)"
assert_contains "$ERR" "row counts differ" "it says the row counts differ"
assert_contains "$ERR" "database inh (created for this restore) dropped again" "and that the database made for it was dropped"
assert_false "the database made for the restore is gone" pg_db_exists inh

# --- a backup of a LATIN1 database, names with accents: --table and --schema find them -------
# (the archive holds names in the database's encoding, the selection in UTF-8: pg_restore
# matched nothing, restored nothing and exited 0, and the restore said it had restored them;
# found by a review helper)
# (named with an accent: pg_dump was given the name as current_database() returns it, converted
# from LATIN1 as if datname were in it, "clÃ­nica", and found no such database)
psql_db postgres -c "CREATE DATABASE clínica TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'" >/dev/null ||
    fail "creating the LATIN1 database failed"
PGCLIENTENCODING=UTF8 psql_db clínica -c 'CREATE SCHEMA "sessões"; CREATE TABLE "sessões"."anotação" (id int, nota text);
    INSERT INTO "sessões"."anotação" VALUES (1, '"'"'ação'"'"'), (2, '"'"'não'"'"');
    CREATE TABLE "público" (id int); INSERT INTO "público" VALUES (7)' >/dev/null ||
    fail "creating the accented tables failed"
POSTGRES_URL=$(pg_url clínica) db_backup_json "$TEST_TMP/latin.json" --full
assert_rc 0 "a backup of the LATIN1 database clínica"
assert_eq clínica "$(json_get "$TEST_TMP/latin.json" '["database"]')" "its summary names the database as it is named"
latin_id=$BACKUP_ID
# without --verify: the restore alone must not claim tables it did not restore
CARIS_RESTORE_TARGET_URL=$(pg_url latin_t) run cb restore database "$latin_id" --create --table 'sessões.anotação'
assert_rc 0 "restore --table sessões.anotação of the LATIN1 backup"
assert_eq "2 ação,não" "$(PGCLIENTENCODING=UTF8 psql_db latin_t -c 'SELECT count(*) || '"' '"' || string_agg(nota, '"','"' ORDER BY id) FROM "sessões"."anotação"' 2>&1)" \
    "the table and its 2 rows were restored, accents intact"
CARIS_RESTORE_TARGET_URL=$(pg_url latin_s) run cb restore database "$latin_id" --create --schema 'sessões'
assert_rc 0 "restore --schema sessões of the LATIN1 backup"
assert_eq "sessões.anotação" "$(PGCLIENTENCODING=UTF8 pg_user_tables latin_s)" "the schema's table was restored"
CARIS_RESTORE_TARGET_URL=$(pg_url latin_b) run cb restore database "$latin_id" --create --table 'público' --verify
assert_rc 0 "restore --table público (a bare name) --verify"
assert_eq "1" "$(PGCLIENTENCODING=UTF8 psql_db latin_b -c 'SELECT count(*) FROM "público"' 2>&1)" "its row was restored"

# --table a.b where the backup has both a table called "a.b" and table b of schema a: the first
# was taken silently (with --clean, the one not meant was overwritten); refused now. So is
# --table x.y.z naming both x."y.z" and "x.y".z (the first split that matched was taken, the
# other could not be named); '"x.y".z' names one (SQL's identifier quoting).
# The same backup is made with client_encoding=LATIN1 for a UTF8 database: the dump holds the
# names in LATIN1, and --table café was converted to the database's encoding (UTF-8), matched
# nothing, restored nothing and exited 0.
psql_db postgres -c "CREATE DATABASE dotted TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'" >/dev/null ||
    fail "creating the UTF8 database dotted failed"
PGCLIENTENCODING=UTF8 psql_db dotted -c 'CREATE TABLE public."a.b" (x int); INSERT INTO public."a.b" SELECT generate_series(1, 7);
  CREATE SCHEMA a; CREATE TABLE a.b (x int); INSERT INTO a.b SELECT generate_series(1, 3);
  CREATE SCHEMA x; CREATE TABLE x."y.z" (x int); INSERT INTO x."y.z" SELECT generate_series(1, 4);
  CREATE SCHEMA "x.y"; CREATE TABLE "x.y".z (x int); INSERT INTO "x.y".z SELECT generate_series(1, 5);
  CREATE TABLE "café" (a int); INSERT INTO "café" SELECT generate_series(1, 9);
  CREATE SCHEMA "ação"; CREATE TABLE "ação".t (a int); INSERT INTO "ação".t VALUES (1), (2)' >/dev/null ||
    fail "creating the tables of dotted failed"
POSTGRES_URL="$(pg_url dotted)?client_encoding=LATIN1" db_backup_json "$TEST_TMP/dotted.json" --full
assert_rc 0 "a backup of the UTF8 database dotted with client_encoding=LATIN1"
dotted_id=$BACKUP_ID
CARIS_RESTORE_TARGET_URL=$(pg_url dotted_r) run cb restore database "$dotted_id" --create --verify --table a.b
assert_rc 2 "--table a.b naming two tables is refused"
assert_contains "$ERR" 'names 2 tables of backup' "it says why"
assert_contains "$ERR" '"a.b", a.b' "it names both, told apart"
assert_contains "$ERR" "--table '\"a\".\"b\"'" "the hint names a.b of schema a so that it is not ambiguous again"
assert_false "nothing was created" pg_db_exists dotted_r
CARIS_RESTORE_TARGET_URL=$(pg_url dotted_r) run cb restore database "$dotted_id" --create --verify --table x.y.z
assert_rc 2 "--table x.y.z naming x.\"y.z\" and \"x.y\".z is refused"
assert_contains "$ERR" 'x."y.z", "x.y".z' "it names both, told apart"
assert_contains "$ERR" "--table '\"x.y\".\"z\"'" "the hint says how to name each"
assert_false "nothing was created" pg_db_exists dotted_r
CARIS_RESTORE_TARGET_URL=$(pg_url dotted_r) run cb restore database "$dotted_id" --create --verify --table '"x.y".z'
assert_rc 0 "--table '\"x.y\".z' restores that one"
assert_eq "x.y.z 5" "$(psql_db dotted_r -c 'SELECT n.nspname || '"'.'"' || c.relname || '"' '"' || (SELECT count(*) FROM "x.y".z)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = '"'r'"' AND n.nspname NOT IN ('"'pg_catalog'"', '"'information_schema'"')' 2>&1)" \
    "only \"x.y\".z, its 5 rows"
CARIS_RESTORE_TARGET_URL=$(pg_url dotted_q) run cb restore database "$dotted_id" --create --table 'x."y.z"'
assert_rc 0 "--table 'x.\"y.z\"' restores the other"
assert_eq 4 "$(psql_db dotted_q -c 'SELECT count(*) FROM x."y.z"' 2>&1)" "x.\"y.z\", its 4 rows"
assert_false "and not \"x.y\".z" psql_db dotted_q -c 'SELECT 1 FROM "x.y".z'
# without --verify: the restore alone must restore them, or fail
CARIS_RESTORE_TARGET_URL=$(pg_url dotted_c) run cb restore database "$dotted_id" --create --table café
assert_rc 0 "--table café of the backup made with client_encoding=LATIN1"
assert_eq 9 "$(PGCLIENTENCODING=UTF8 psql_db dotted_c -c 'SELECT count(*) FROM "café"' 2>&1)" "café and its 9 rows were restored"
CARIS_RESTORE_TARGET_URL=$(pg_url dotted_s) run cb restore database "$dotted_id" --create --schema ação
assert_rc 0 "--schema ação of the backup made with client_encoding=LATIN1"
assert_eq 2 "$(PGCLIENTENCODING=UTF8 psql_db dotted_s -c 'SELECT count(*) FROM "ação".t' 2>&1)" "ação.t and its 2 rows were restored"
# a selection pg_restore matches nothing of (here names converted to a wrong encoding, as they
# were) fails loudly before anything is made, naming the tables
CARIS_TEST_DUMP_ENCODING=UTF8 CARIS_RESTORE_TARGET_URL=$(pg_url dotted_w) run cb restore database "$dotted_id" --create --table café
assert_rc 1 "a selection that matches no entry of the dump fails (exit 1: not damage of the backup)"
assert_contains "$ERR" "matches no entry of the dump of backup $dotted_id for 1 table(s) it lists: public.café" "it names the table"
assert_false "nothing was created" pg_db_exists dotted_w
CARIS_RESTORE_TARGET_URL=$(pg_url dotted_a) run cb restore database "$dotted_id" --create --verify --schema a
assert_rc 0 "--schema a restores a.b"

# --clean of a selection over a database with a partitioned table whose partitions lie in two
# schemas: --schema audit dropped audit.events and with it archive.events_2025 (305 rows gone,
# exit 0, "row counts match"); --table of a partition alone detached it from its parent for good.
# Refused now, naming the pair; a dry run says so.
pg_createdb parts >/dev/null
psql_db parts -c "CREATE SCHEMA audit; CREATE SCHEMA archive;
  CREATE TABLE audit.events (id int, at date, what text) PARTITION BY RANGE (at);
  CREATE TABLE archive.events_2025 PARTITION OF audit.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
  CREATE TABLE audit.events_2026 PARTITION OF audit.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
  INSERT INTO audit.events SELECT g, '2025-03-01'::date + g, 'e' || g FROM generate_series(1, 500) g" >/dev/null
POSTGRES_URL=$(pg_url parts) db_backup_json "$TEST_TMP/parts.json" --full
parts_id=$BACKUP_ID
CARIS_RESTORE_TARGET_URL=$(pg_url parts_live) run cb restore database "$parts_id" --create
assert_rc 0 "a copy of the partitioned database"
CARIS_RESTORE_TARGET_URL=$(pg_url parts_live) run cb restore database "$parts_id" --clean --verify --schema audit
assert_rc 2 "--clean --schema audit, which would drop archive.events_2025 with its parent: refused"
assert_contains "$ERR" "and with it its partition archive.events_2025" "it names the partition"
CARIS_RESTORE_TARGET_URL=$(pg_url parts_live) run cb restore database "$parts_id" --clean --verify --table audit.events_2026
assert_rc 2 "--clean --table of a partition alone: refused"
assert_contains "$ERR" "detached from audit.events" "it says why"
assert_eq 305 "$(psql_db parts_live -c 'SELECT count(*) FROM archive.events_2025')" "archive.events_2025 keeps its rows"
assert_eq "500 true" "$(psql_db parts_live -c "SELECT (SELECT count(*) FROM audit.events) || ' ' || relispartition FROM pg_class WHERE oid = 'audit.events_2026'::regclass")" \
    "audit.events keeps its 500 rows, audit.events_2026 is still its partition"
CARIS_RESTORE_TARGET_URL=$(pg_url parts_live) run cb restore database "$parts_id" --clean --dry-run --schema audit
assert_contains "$OUT$ERR" "would be refused" "a dry run says the restore would be refused"
CARIS_RESTORE_TARGET_URL=$(pg_url parts_live) run cb restore database "$parts_id" --clean --verify --schema audit --schema archive
assert_rc 0 "--clean of both schemas: the whole partitioned table"
assert_eq 500 "$(psql_db parts_live -c 'SELECT count(*) FROM audit.events')" "its 500 rows"
# --create of a selection that takes the partitioned table but not a partition in another
# schema: restored with 305 of its 500 rows missing, and --verify saw nothing (it compares the
# partitions it restored). Refused now, from the dump's ATTACH entries; a dry run says so.
CARIS_RESTORE_TARGET_URL=$(pg_url parts_new) run cb restore database "$parts_id" --create --verify --schema audit
assert_rc 2 "--create --schema audit, without archive.events_2025: refused"
assert_contains "$ERR" "takes partitioned table audit.events but not its partition archive.events_2025" "it names the pair"
assert_contains "$ERR" "add --schema archive" "... and says what to add"
assert_false "nothing was created" pg_db_exists parts_new
CARIS_RESTORE_TARGET_URL=$(pg_url parts_new) run cb restore database "$parts_id" --create --dry-run --schema audit
assert_contains "$OUT$ERR" "NOTE: the restore itself would be refused" "a dry run says the restore would be refused"
CARIS_RESTORE_TARGET_URL=$(pg_url parts_new) run cb restore database "$parts_id" --create --verify --schema audit --schema archive
assert_rc 0 "--create of both schemas"
assert_eq 500 "$(psql_db parts_new -c 'SELECT count(*) FROM audit.events')" "... all 500 rows"
CARIS_RESTORE_TARGET_URL=$(pg_url parts_arch) run cb restore database "$parts_id" --create --schema archive
assert_rc 10 "--create --schema archive alone: pg_restore cannot attach the partition to a parent it does not restore (loud, not silent)"
assert_false "... and the database it made is dropped again" pg_db_exists parts_arch
# --table of the partitioned table itself: the backup lists its partitions, not it
CARIS_RESTORE_TARGET_URL=$(pg_url parts_none) run cb restore database "$parts_id" --create --table audit.events
assert_rc 7 "--table of a partitioned table: not a table of the backup (exit 7)"
assert_contains "$ERR" "a partitioned table is not listed, its partitions are" "the hint says why, and what to name"
assert_contains "$ERR" "archive.events_2025" "... listing the partitions"

# --- a selection of long names: the plan's list is cut to what fits ------------------------------
# (a name of more than 80 bytes took the list past its 600-byte buffer, and the next table was
# written past its end, on the stack, on every restore of such a backup)
long=s_$(printf 'l%.0s' {1..61})
psql_db "$src" -c "CREATE SCHEMA $long" >/dev/null || fail "creating schema $long failed"
for k in 1 2 3 4 5 6 7 8; do
    psql_db "$src" -c "CREATE TABLE $long.t${k}_$(printf 'x%.0s' {1..58}) (id int)" >/dev/null ||
        fail "creating table $k of $long failed"
done
db_backup_json "$TEST_TMP/long.json" --full
assert_rc 0 "a backup with eight tables of 125-byte qualified names"
pg_createdb long_names
CARIS_RESTORE_TARGET_URL=$(pg_url long_names) run cb restore database "$BACKUP_ID" --schema "$long" --dry-run
assert_rc 0 "restore --schema of the long names --dry-run"
assert_match "only 8 table\(s\): $long\.t1_x+, .*, \.\.\. \(their schemas" "$ERR" \
    "the plan names the first tables and cuts the rest with ..."

test_done

#!/usr/bin/env bash
# Row counts of a database in another encoding than UTF-8 (LATIN1) with non-ASCII table names.
# pg_dump writes the names in the database's encoding and the backup lists them in UTF-8: the
# UTF-8 bytes of one name can be the LATIN1 bytes of another ("é" in UTF-8 is C3 A9, which in
# LATIN1 reads "Ã©"), and the table "é" was recorded with the rows of the table "Ã©". The
# same in a UTF8 database that pg_dump wrote in LATIN1 (PGCLIENTENCODING).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
db=latin1db
psql_db postgres -c "CREATE DATABASE $db ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" \
    >/dev/null || fail "creating the LATIN1 database failed"
PGCLIENTENCODING=UTF8 psql_db "$db" -c "CREATE TABLE \"é\" (id integer);
    INSERT INTO \"é\" VALUES (1);
    CREATE TABLE \"Ã©\" (id integer);
    INSERT INTO \"Ã©\" SELECT generate_series(1, 3);
    CREATE TABLE plain (id integer);
    INSERT INTO plain SELECT generate_series(1, 5)" >/dev/null || fail "creating the tables failed"
export POSTGRES_URL
POSTGRES_URL=$(pg_url "$db")
init_repo
db_backup_json "$TEST_TMP/b.json" --full
assert_rc 0 "backup of a LATIN1 database"
tables=$(python3 -c 'import json, sys
for t in json.load(open(sys.argv[1])).get("tables", []):
    print(t["name"], t.get("rows"))' "$TEST_TMP/b.json")
assert_contains "$tables" "é 1" "the table é: its own 1 row"
assert_contains "$tables" "Ã© 3" "the table Ã©: its 3 rows"
assert_contains "$tables" "plain 5" "an ASCII name: its 5 rows"

# a UTF8 database dumped in LATIN1: PGCLIENTENCODING, which pg_dump inherits, chooses the
# encoding it writes names in
utf=utf8db
psql_db postgres -c "CREATE DATABASE $utf ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" \
    >/dev/null || fail "creating the UTF8 database failed"
psql_db "$utf" -c "CREATE TABLE \"é\" (id integer);
    INSERT INTO \"é\" VALUES (1);
    CREATE TABLE \"Ã©\" (id integer);
    INSERT INTO \"Ã©\" SELECT generate_series(1, 3)" >/dev/null || fail "creating the UTF8 tables failed"
PGCLIENTENCODING=LATIN1 POSTGRES_URL=$(pg_url "$utf") db_backup_json "$TEST_TMP/u.json" --full
assert_rc 0 "backup of a UTF8 database with PGCLIENTENCODING=LATIN1"
tables=$(python3 -c 'import json, sys
for t in json.load(open(sys.argv[1])).get("tables", []):
    print(t["name"], t.get("rows"))' "$TEST_TMP/u.json")
assert_contains "$tables" "é 1" "PGCLIENTENCODING=LATIN1: the table é, its own 1 row"
assert_contains "$tables" "Ã© 3" "PGCLIENTENCODING=LATIN1: the table Ã©, its 3 rows"
test_done

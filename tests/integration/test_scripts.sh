#!/usr/bin/env bash
# The seed's scripts under scripts/backup/ with a real PostgreSQL: backup-database.sh makes the
# repository when there is none and backs up; verify-backup.sh verifies; restore-database.sh
# with DRY_RUN=true (any case of true/yes/on/1) changes nothing, without it restores; a DRY_RUN
# that is neither true nor false is refused before anything is done (exit 2); usage errors go
# to stderr with exit 2, --help to stdout with exit 0.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

S=$LIB_DIR/../../scripts/backup
export CARIS_BIN
pg_start
db=$CARIS_PG_DB
export POSTGRES_URL
POSTGRES_URL=$(pg_url)
psql_db "$db" -c "CREATE TABLE t (id int PRIMARY KEY, v text);
    INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g" >/dev/null ||
    fail "creating the table failed"
rows() { psql_db "$db" -c "SELECT count(*) FROM t"; }

# --- usage ---------------------------------------------------------------------------------
for s in backup-database.sh restore-database.sh verify-backup.sh cleanup-old-backups.sh; do
    assert_true "$s is executable" test -x "$S/$s"
    run "$S/$s" --help
    assert_rc 0 "$s --help"
    assert_contains "$OUT" "Usage:" "$s --help prints its usage on stdout"
done
for args in "restore-database.sh" "verify-backup.sh" "verify-backup.sh a b" "backup-database.sh full extra" \
    "backup-database.sh differential"; do
    read -r -a a <<<"$args"
    run "$S/${a[0]}" "${a[@]:1}"
    assert_rc 2 "$args: a usage error"
    assert_eq "" "$OUT" "$args: nothing on stdout"
    assert_match '.' "$ERR" "$args: the error on stderr"
done
assert_false "no repository was made by the refused runs" test -e "$BACKUP_DIR/repository"

# --- backup-database.sh makes the repository, then backs up -----------------------------------
run "$S/backup-database.sh"
assert_rc 0 "backup-database.sh (full by default) on a new BACKUP_DIR"
run "$S/backup-database.sh" incremental
assert_rc 0 "backup-database.sh incremental"
assert_eq "full incremental" "$(cb --json list --type database |
    python3 -c 'import json,sys; print(" ".join(b["mode"] for b in sorted(json.load(sys.stdin), key=lambda b: b["started"])))')" \
    "one full and one incremental database backup"
id=$(cb --json list --type database | python3 -c 'import json,sys; print(max(json.load(sys.stdin), key=lambda b: b["started"])["id"])')

# --- verify-backup.sh -------------------------------------------------------------------------
run "$S/verify-backup.sh" "$id"
assert_rc 0 "verify-backup.sh ID"
run "$S/verify-backup.sh" caris_full_1999-01-01T00-00-00
assert_rc 7 "verify-backup.sh of an unknown id"

# --- restore-database.sh and DRY_RUN ------------------------------------------------------------
psql_db "$db" -c "INSERT INTO t VALUES (1000, 'after the backup')" >/dev/null
assert_eq 101 "$(rows)" "a row added after the backup"
for v in true YES On 1; do
    DRY_RUN=$v run "$S/restore-database.sh" "$id" --clean
    assert_rc 0 "restore-database.sh with DRY_RUN=$v"
    assert_eq 101 "$(rows)" "DRY_RUN=$v changed nothing"
done
for v in maybe y dry; do
    DRY_RUN=$v run "$S/restore-database.sh" "$id" --clean
    assert_rc 2 "DRY_RUN=$v is refused"
    assert_contains "$ERR" "DRY_RUN must be true or false" "DRY_RUN=$v: the error says why"
    assert_eq 101 "$(rows)" "DRY_RUN=$v: the database is unchanged"
done
DRY_RUN=off run "$S/restore-database.sh" "$id" --clean
assert_rc 0 "restore-database.sh ID --clean with DRY_RUN=off"
assert_eq 100 "$(rows)" "the restore brought the backup's rows back"

test_done

#!/usr/bin/env bash
# The seed's scripts under scripts/backup/ with a real PostgreSQL: backup-database.sh makes the
# repository when there is none and backs up; verify-backup.sh verifies; restore-database.sh
# with DRY_RUN=true (any case of true/yes/on/1) changes nothing, without it restores; a DRY_RUN
# that is neither true nor false is refused before anything is done (exit 2); usage errors go
# to stderr with exit 2, --help to stdout with exit 0. backup-database.sh with DRY_RUN prints its
# plan and creates nothing, and says on stderr when it creates a repository. scripts/demo.sh
# reads its env file as the binary does (export, indent, quotes), appends a generated key on a
# line of its own and makes the file 0600. cleanup-old-backups.sh shows the size of the repository
# BACKUP_REPOSITORY names.
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
    assert_contains "$ERR" "Usage:" "$args: the usage on stderr"
done
assert_false "no repository was made by the refused runs" test -e "$BACKUP_DIR/repository"

# --- backup-database.sh with DRY_RUN on a new BACKUP_DIR: the plan, nothing created ------------
for v in true On; do
    DRY_RUN=$v run "$S/backup-database.sh" incremental
    assert_rc 0 "backup-database.sh incremental with DRY_RUN=$v on a new BACKUP_DIR"
    assert_contains "$OUT" "would create a new repository at $BACKUP_DIR/repository" \
        "DRY_RUN=$v: the plan says there is no repository and a real run would create one"
    assert_contains "$OUT" "an incremental backup of the database at POSTGRES_URL" \
        "DRY_RUN=$v: the plan names the type and the database variable"
    assert_not_contains "$OUT$ERR" "$CARIS_PG_PASSWORD" "DRY_RUN=$v: the plan shows no password"
    assert_false "DRY_RUN=$v created no BACKUP_DIR" test -e "$BACKUP_DIR"
done
run cb list --type database
assert_rc 7 "after the dry runs there is still no repository (so no backup)"
for v in maybe dry; do
    DRY_RUN=$v run "$S/backup-database.sh"
    assert_rc 2 "backup-database.sh with DRY_RUN=$v is refused"
    assert_contains "$ERR" "DRY_RUN must be true or false, not '$v': nothing was done" \
        "DRY_RUN=$v: the error says why"
    assert_false "DRY_RUN=$v created no BACKUP_DIR" test -e "$BACKUP_DIR"
done
DRY_RUN=true run env -u POSTGRES_URL "$S/backup-database.sh"
assert_rc 6 "DRY_RUN=true without POSTGRES_URL: a real run would fail, so does the dry run"
assert_contains "$ERR" "POSTGRES_URL is not set" "DRY_RUN=true without POSTGRES_URL: says so"
# a dry run checks the database as a real run would meet it: unreachable, or a wrong password,
# fails the dry run with the real run's exit (10) and the reason; nothing is created
DRY_RUN=true run env POSTGRES_URL="postgresql://$CARIS_PG_USER@127.0.0.1:$(free_port)/$CARIS_PG_DB" \
    "$S/backup-database.sh"
assert_rc 10 "DRY_RUN=true with an unreachable database: a real run would fail, so does the dry run"
assert_contains "$ERR" "a real run would fail" "... saying so"
assert_false "... and no BACKUP_DIR was created" test -e "$BACKUP_DIR"
DRY_RUN=true run env POSTGRES_URL="postgresql://$CARIS_PG_USER:not-the-password@127.0.0.1:$CARIS_PG_PORT/$CARIS_PG_DB" \
    "$S/backup-database.sh"
assert_rc 10 "DRY_RUN=true with a wrong password: exit 10"
assert_not_contains "$OUT$ERR" "not-the-password" "... the password is not shown"
assert_false "... and no BACKUP_DIR was created" test -e "$BACKUP_DIR"
run env -u POSTGRES_URL "$S/backup-database.sh"
assert_rc 6 "without POSTGRES_URL: exit 6"
assert_contains "$ERR" "POSTGRES_URL is not set: nothing was done" "without POSTGRES_URL: says so"
assert_false "without POSTGRES_URL: no repository created (no BACKUP_DIR)" test -e "$BACKUP_DIR"

# --- backup-database.sh makes the repository (and says so), then backs up -----------------------
run "$S/backup-database.sh"
assert_rc 0 "backup-database.sh (full by default) on a new BACKUP_DIR"
assert_contains "$ERR" "created a new repository at $BACKUP_DIR/repository" \
    "backup-database.sh says on stderr that it created a repository"
run "$S/backup-database.sh" incremental
assert_rc 0 "backup-database.sh incremental"
assert_not_contains "$ERR" "created a new repository" "the second run creates none and says nothing of it"
heads() { find "$BACKUP_DIR/repository/records/audit-head" -type f ! -name '.*' | wc -l; }
heads_before=$(heads)
DRY_RUN=yes run "$S/backup-database.sh"
assert_rc 0 "backup-database.sh with DRY_RUN=yes on an existing repository"
assert_contains "$OUT" "use the repository at $BACKUP_DIR/repository (it exists" \
    "DRY_RUN=yes: the plan says the repository exists"
assert_contains "$OUT" "a full backup of the database at POSTGRES_URL" "DRY_RUN=yes: a full backup by default"
assert_contains "$OUT" "dry run: a full backup of database $db (PostgreSQL" "DRY_RUN=yes: the plan names the database the server reports"
assert_contains "$OUT" "every table can be read" "DRY_RUN=yes: the tables were checked"
run cb --json backup database --dry-run --incremental
assert_rc 0 "backup database --dry-run --incremental --json"
assert_true "its document has the shape docs/JSON.md gives" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "backup database --dry-run" "$OUT_FILE"
assert_eq "incremental $db" "$(json_eval "$OUT_FILE" 'd["mode"] + " " + d["database"]')" \
    "... an incremental of the database the server reports"
assert_eq "$(cb --json list --type database | python3 -c 'import json,sys; print(max(json.load(sys.stdin), key=lambda b: b["started"])["id"])')" \
    "$(json_get "$OUT_FILE" '["parent"]')" "... based on the latest backup"
assert_eq "full incremental" "$(cb --json list --type database |
    python3 -c 'import json,sys; print(" ".join(b["mode"] for b in sorted(json.load(sys.stdin), key=lambda b: b["started"])))')" \
    "one full and one incremental database backup (the dry run added none)"
assert_eq "$heads_before" "$(heads)" "the dry runs added no audit head record to the repository either"
run cb --json show latest:database
assert_true "a logical database backup's document has the shape docs/JSON.md gives (no stats.files)" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" show "$OUT_FILE"
run cb --json forget --keep-last 1 --dry-run
assert_true "forget --dry-run with database groups: its shape (the groups' source)" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" forget "$OUT_FILE"
id=$(cb --json list --type database | python3 -c 'import json,sys; print(max(json.load(sys.stdin), key=lambda b: b["started"])["id"])')

# --- verify-backup.sh -------------------------------------------------------------------------
run "$S/verify-backup.sh" "$id"
assert_rc 0 "verify-backup.sh ID"
run "$S/verify-backup.sh" caris_full_1999-01-01T00-00-00
assert_rc 7 "verify-backup.sh of an unknown id"
# DRY_RUN: the backup found and named, nothing recorded (a verification writes a record)
verifies() { find "$BACKUP_DIR/repository/records/verify" -type f ! -name '.*' | wc -l; }
verifies_before=$(verifies)
DRY_RUN=true run "$S/verify-backup.sh" "$id"
assert_rc 0 "verify-backup.sh with DRY_RUN=true"
assert_contains "$OUT" "dry run: would verify backup $id" "DRY_RUN=true: the plan names the backup"
DRY_RUN=1 run "$S/verify-backup.sh" --all
assert_rc 0 "verify-backup.sh --all with DRY_RUN=1"
assert_eq "$verifies_before" "$(verifies)" "the dry runs recorded no verification"
DRY_RUN=true run "$S/verify-backup.sh" caris_full_1999-01-01T00-00-00
assert_rc 7 "verify-backup.sh DRY_RUN=true of an unknown id: exit 7, as a real run"
DRY_RUN=maybe run "$S/verify-backup.sh" "$id"
assert_rc 2 "verify-backup.sh with DRY_RUN=maybe: refused"
assert_eq "$verifies_before" "$(verifies)" "... before anything was done"

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
# a physical restore has no dry run: refused as such (it said "unknown option '--dry-run'")
DRY_RUN=true run "$S/restore-database.sh" latest --physical --pgdata "$TEST_TMP/pgdata-dry"
assert_rc 2 "DRY_RUN=true with --physical: a usage error"
assert_contains "$ERR" "restore database --physical has no --dry-run" "it says a physical restore has no dry run"
assert_false "no data directory was made" test -e "$TEST_TMP/pgdata-dry"
DRY_RUN=off run "$S/restore-database.sh" "$id" --clean
assert_rc 0 "restore-database.sh ID --clean with DRY_RUN=off"
assert_eq 100 "$(rows)" "the restore brought the backup's rows back"

# --- CARIS_ENV_FILE: an installed system's env file (no .env.local where the script runs) --------
ef=$TEST_TMP/installed.env
(umask 077 && printf 'BACKUP_DIR=%s\nBACKUP_ENCRYPTION_KEY=%s\nPOSTGRES_URL=%s\n' \
    "$BACKUP_DIR" "$BACKUP_ENCRYPTION_KEY" "$POSTGRES_URL" >"$ef")
mkdir -p "$TEST_TMP/elsewhere"
in_elsewhere() {
    cd "$TEST_TMP/elsewhere" || return
    run env -u BACKUP_DIR -u BACKUP_ENCRYPTION_KEY -u POSTGRES_URL "$@"
    cd - >/dev/null || return
}
in_elsewhere DRY_RUN=true CARIS_ENV_FILE="$ef" "$S/backup-database.sh"
assert_rc 0 "backup-database.sh DRY_RUN with CARIS_ENV_FILE"
assert_contains "$OUT" "use the repository at $BACKUP_DIR/repository (it exists" "it reads BACKUP_DIR from that file"
assert_contains "$OUT" "POSTGRES_URL (from $ef)" "and POSTGRES_URL"
in_elsewhere CARIS_ENV_FILE="$ef" "$S/backup-database.sh" incremental
assert_rc 0 "backup-database.sh with CARIS_ENV_FILE: the binary gets --env-file"
in_elsewhere CARIS_ENV_FILE="$ef" "$S/verify-backup.sh" latest:database
assert_rc 0 "verify-backup.sh with CARIS_ENV_FILE"
in_elsewhere DRY_RUN=1 CARIS_ENV_FILE="$ef" "$S/cleanup-old-backups.sh"
assert_rc 0 "cleanup-old-backups.sh DRY_RUN with CARIS_ENV_FILE"
assert_contains "$OUT" "dry run: nothing changed" "it ran forget --prune --dry-run on that repository"
# an env file that begins with a UTF-8 byte order mark (POSTGRES_URL first) and ends its lines
# with CR CR LF: the script and the binary read it alike (the script said "POSTGRES_URL is not
# set", the binary "invalid variable name")
bom=$TEST_TMP/bom.env
(umask 077 && printf '\xef\xbb\xbfPOSTGRES_URL=%s\r\r\nBACKUP_DIR=%s\r\r\nBACKUP_ENCRYPTION_KEY=%s\r\r\n' \
    "$POSTGRES_URL" "$BACKUP_DIR" "$BACKUP_ENCRYPTION_KEY" >"$bom")
in_elsewhere DRY_RUN=true CARIS_ENV_FILE="$bom" "$S/backup-database.sh"
assert_rc 0 "backup-database.sh DRY_RUN with an env file that begins with a byte order mark"
assert_contains "$OUT" "POSTGRES_URL (from $bom)" "the script read POSTGRES_URL on the mark's line"
in_elsewhere CARIS_ENV_FILE="$TEST_TMP/no-such.env" "$S/verify-backup.sh" --all
assert_rc 6 "an unreadable CARIS_ENV_FILE: exit 6"
assert_contains "$ERR" "cannot be read: nothing was done" "it says so"

# ./.env.local there but unreadable to the user: said so (it said "POSTGRES_URL is not set"
# of a file that sets it)
if ((EUID == 0)); then
    mkdir -p "$TEST_TMP/locked" && chmod 0755 "$TEST_TMP" "$TEST_TMP/locked"
    (umask 077 && printf 'POSTGRES_URL=%s\n' "$POSTGRES_URL" >"$TEST_TMP/locked/.env.local")
    # shellcheck disable=SC2016 # expanded by the inner shell
    run bash -c 'cd "$1" && exec runuser -u "$2" -- env -u POSTGRES_URL DRY_RUN=true "$3/backup-database.sh"' \
        _ "$TEST_TMP/locked" "$CARIS_PG_OS_USER" "$S"
    assert_rc 6 "an unreadable ./.env.local: exit 6"
    assert_contains "$ERR" ".env.local (in $TEST_TMP/locked) cannot be read" "it says the file cannot be read"
    assert_not_contains "$ERR" "POSTGRES_URL is not set" "not that POSTGRES_URL is missing"
else
    note "not root: the unreadable .env.local case is skipped"
fi

# --- cleanup-old-backups.sh shows the disk usage of the repository it works on ------------------
# BACKUP_REPOSITORY names it, not BACKUP_DIR/repository (it showed the latter's size and disk)
other=$TEST_TMP/other-disk/repo
BACKUP_REPOSITORY=$other run cb init
assert_rc 0 "a second, empty repository named by BACKUP_REPOSITORY"
BACKUP_REPOSITORY=$other DRY_RUN=true run "$S/cleanup-old-backups.sh"
assert_rc 0 "cleanup-old-backups.sh DRY_RUN with BACKUP_REPOSITORY"
assert_contains "$OUT" "0 kept, 0 would be forgotten" "forget ran on the BACKUP_REPOSITORY repository"
assert_eq 2 "$(grep -c "^  repository $other: [0-9.]*[KMG]\$" <<<"$OUT")" \
    "before and after: the size of the BACKUP_REPOSITORY repository, named"
assert_not_contains "$OUT" "$BACKUP_DIR/repository" "nothing about BACKUP_DIR/repository"
BACKUP_REPOSITORY=s3:https://127.0.0.1:9/bucket DRY_RUN=true run "$S/cleanup-old-backups.sh"
assert_contains "$OUT" "repository s3:https://127.0.0.1:9/bucket: on S3" "an S3 repository: no df of a local disk"

# --- scripts/demo.sh reads its env file as the binary does ------------------------------------
# On this test's server (POSTGRES_URL in the env file: no throwaway cluster) and a small tree;
# every variable only from the env file.
mkdir -p "$TEST_TMP/demo-tree" && echo "demo file" >"$TEST_TMP/demo-tree/a.txt"
demo() {
    run env -u BACKUP_ENCRYPTION_KEY -u BACKUP_DIR -u POSTGRES_URL -u BACKUP_FILES_PATHS \
        TMPDIR="$TEST_TMP" bash "$LIB_DIR/../../scripts/demo.sh" --bin "$CARIS_BIN" --env-file "$1"
}
demo_count() { # ENV_FILE TYPE: how many backups of TYPE the env file's repository holds
    env -u BACKUP_ENCRYPTION_KEY -u BACKUP_DIR "$CARIS_BIN" --env-file "$1" --json list --type "$2" |
        python3 -c 'import json, sys; d = json.load(sys.stdin); print(len(d) if isinstance(d, list) else "error")'
}

# (a) a key set with `export`, variables set with `export`, indented, quoted; a repository made
# with that key: the demo uses them all and adds no key
ea=$TEST_TMP/demo-a.env
key_a=$(head -c 33 /dev/urandom | base64)
(umask 077 && printf "BACKUP_DIR=%s\nexport BACKUP_ENCRYPTION_KEY=%s\nexport BACKUP_FILES_PATHS=%s\n  POSTGRES_URL='%s'\n" \
    "$TEST_TMP/demo-a" "$key_a" "$TEST_TMP/demo-tree" "$POSTGRES_URL" >"$ea")
run env -u BACKUP_ENCRYPTION_KEY -u BACKUP_DIR "$CARIS_BIN" --env-file "$ea" init
assert_rc 0 "a repository made with the env file's export-ed key"
demo "$ea"
assert_rc 0 "demo.sh on that repository with the export-ed key (the right key)"
assert_eq 1 "$(grep -c BACKUP_ENCRYPTION_KEY "$ea")" "demo.sh added no second key to the env file"
assert_not_contains "$OUT" "generated a new BACKUP_ENCRYPTION_KEY" "demo.sh generated no key"
assert_not_contains "$OUT" "backing up the demo tree" "demo.sh kept the export-ed BACKUP_FILES_PATHS"
assert_not_contains "$OUT" "starting a throwaway PostgreSQL" "demo.sh kept the indented, quoted POSTGRES_URL"
assert_eq "1 1" "$(demo_count "$ea" files) $(demo_count "$ea" database)" \
    "the demo's file and database backups are in the existing repository"

# (b), (c) no key; the last line without a newline; mode 0644: the key goes on a line of its
# own, the file becomes 0600
eb=$TEST_TMP/demo-b.env
printf "export BACKUP_FILES_PATHS=%s\nPOSTGRES_URL=%s\nBACKUP_DIR=%s" \
    "$TEST_TMP/demo-tree" "$POSTGRES_URL" "$TEST_TMP/demo-b" >"$eb"
chmod 644 "$eb"
demo "$eb"
assert_rc 0 "demo.sh on a 0644 env file without a key and without a final newline"
assert_contains "$OUT" "generated a new BACKUP_ENCRYPTION_KEY" "demo.sh says it generated a key"
assert_eq "BACKUP_DIR=$TEST_TMP/demo-b" "$(sed -n 3p "$eb")" "the last line before the key is intact"
assert_match '^BACKUP_ENCRYPTION_KEY=[A-Za-z0-9+/]{44}$' "$(sed -n 4p "$eb")" "the key is on a line of its own"
assert_eq 4 "$(wc -l <"$eb")" "four lines, each ending with a newline"
assert_eq 600 "$(stat -c %a "$eb")" "the env file is mode 0600 once it holds the key"
assert_true "the repository is under the env file's BACKUP_DIR" test -d "$TEST_TMP/demo-b/repository"
key_b=$(grep -o 'BACKUP_ENCRYPTION_KEY=.*' "$eb" | head -n 1)
key_b=${key_b#BACKUP_ENCRYPTION_KEY=}
assert_match '^.{44}$' "$key_b" "the generated key is 44 characters"
assert_not_contains "$OUT$ERR" "$key_b" "demo.sh printed no part of the key"
assert_eq "1 1" "$(demo_count "$eb" files) $(demo_count "$eb" database)" \
    "the demo's backups open with the generated key"

# (d) no key, but BACKUP_DIR holds a repository already (an earlier demo's): a new key could not
# open it, so none is generated and the env file stays as it was (it got a useless key, exit 5)
ed=$TEST_TMP/demo-d.env
(umask 077 && printf "BACKUP_FILES_PATHS=%s\nPOSTGRES_URL=%s\nBACKUP_DIR=%s\n" \
    "$TEST_TMP/demo-tree" "$POSTGRES_URL" "$TEST_TMP/demo-a" >"$ed")
before=$(sha256sum <"$ed")
demo "$ed"
assert_rc 6 "demo.sh without a key beside an existing repository: exit 6"
assert_contains "$ERR" "there is a repository at $TEST_TMP/demo-a/repository: a new key cannot open it" \
    "demo.sh says why it generates no key"
assert_eq "$before" "$(sha256sum <"$ed")" "the env file is unchanged: no key appended"

# --- backup database --dry-run --time -------------------------------------------------------------
# the id a time gives, taken by a backup already: refused as the backup refuses it (the dry run
# said the plan was fine, and the backup then failed)
assert_exit 0 cb --quiet backup database --full --time 2024-05-01T10:00:00Z
for mode in --full --incremental; do
    run cb backup database --dry-run $mode --time 2024-05-01T10:00:00Z
    if [[ $mode == --full ]]; then
        assert_rc 2 "backup database --dry-run --full --time of an id a backup has: exit 2"
        assert_contains "$ERR" "backup caris_full_2024-05-01T10-00-00 already exists" "... naming the id"
    else
        assert_rc 0 "... an incremental at that time has another id"
    fi
done
run cb backup database --dry-run --full --time 2024-05-01T10:00:01Z
assert_rc 0 "... a second later, the id is free"
run cb backup database --dry-run --full --time 2999-01-01T00:00:00Z
assert_rc 2 "a --time in the future is refused by the dry run too"

test_done

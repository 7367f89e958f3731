#!/usr/bin/env bash
# The key: wrong (exit 5), too short or missing (exit 6), never printed nor stored in the
# clear; configuration from ./.env.local and --env-file, the environment winning.
source "$(dirname "$0")/lib.sh"

key=$BACKUP_ENCRYPTION_KEY
mkdir -p "$TEST_TMP/src"
printf 'record\n' >"$TEST_TMP/src/record.txt"
init_repo
backup_json "$TEST_TMP/b.json" "$TEST_TMP/src"
assert_rc 0 "backup with the right key"
id=$BACKUP_ID

# --- wrong, short, missing -------------------------------------------------------------
wrong="${key}-but-not-quite"
assert_exit 5 env BACKUP_ENCRYPTION_KEY="$wrong" "$CARIS_BIN" list
assert_contains "$ERR" "wrong encryption key" "wrong key: the message says so"
assert_exit 5 env BACKUP_ENCRYPTION_KEY="$wrong" "$CARIS_BIN" verify "$id"
assert_exit 5 env BACKUP_ENCRYPTION_KEY="$wrong" "$CARIS_BIN" backup files "$TEST_TMP/src"
assert_exit 5 env BACKUP_ENCRYPTION_KEY="$wrong" "$CARIS_BIN" --json check
mkdir "$TEST_TMP/r-wrong"
assert_exit 5 env BACKUP_ENCRYPTION_KEY="$wrong" "$CARIS_BIN" restore files "$id" --target "$TEST_TMP/r-wrong"
assert_eq "" "$(ls -A "$TEST_TMP/r-wrong")" "wrong key: the restore wrote nothing"

short31=$(printf 'k%.0s' {1..31})
assert_exit 6 env BACKUP_ENCRYPTION_KEY="$short31" "$CARIS_BIN" list
assert_contains "$ERR" "too short (31 bytes, at least 32 needed)" "31-character key: the message says it is too short, in bytes"
# the length is counted in bytes, and said so: 15 two-byte characters are 30 bytes
short_u=$(printf '\xc3\xa9%.0s' {1..15})
assert_exit 6 env BACKUP_ENCRYPTION_KEY="$short_u" "$CARIS_BIN" list
assert_contains "$ERR" "too short (30 bytes, at least 32 needed)" "15 two-byte characters: 30 bytes, said in bytes"
assert_exit 6 env BACKUP_ENCRYPTION_KEY="short" "$CARIS_BIN" backup files "$TEST_TMP/src"
assert_exit 6 env BACKUP_ENCRYPTION_KEY= "$CARIS_BIN" list

assert_exit 6 env -u BACKUP_ENCRYPTION_KEY "$CARIS_BIN" list
assert_contains "$ERR" "BACKUP_ENCRYPTION_KEY not set" "unset key: the message says so"
assert_exit 6 env -u BACKUP_ENCRYPTION_KEY "$CARIS_BIN" backup files "$TEST_TMP/src"

# exactly 32 characters is enough (a repository of its own)
key32=$(printf 'K%.0s' {1..32})
assert_exit 0 env BACKUP_ENCRYPTION_KEY="$key32" BACKUP_DIR="$TEST_TMP/backup32" "$CARIS_BIN" --quiet init
assert_exit 0 env BACKUP_ENCRYPTION_KEY="$key32" BACKUP_DIR="$TEST_TMP/backup32" \
    "$CARIS_BIN" --quiet backup files "$TEST_TMP/src"
assert_exit 0 env BACKUP_ENCRYPTION_KEY="$key32" BACKUP_DIR="$TEST_TMP/backup32" "$CARIS_BIN" list

# --- .env.local and --env-file ---------------------------------------------------------
conf=$TEST_TMP/conf
mkdir "$conf"
printf '# written by the test\nBACKUP_DIR=%s\nBACKUP_ENCRYPTION_KEY=%s\n' "$BACKUP_DIR" "$key" >"$conf/.env.local"
clean_env=(env -u BACKUP_DIR -u BACKUP_ENCRYPTION_KEY)

chmod 600 "$conf/.env.local"
run bash -c 'cd "$1" && shift && exec "$@"' _ "$conf" "${clean_env[@]}" "$CARIS_BIN" --json list
assert_rc 0 "./.env.local supplies BACKUP_DIR and the key"
assert_eq "$id" "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" "./.env.local: the right repository"
assert_not_contains "$ERR" "other users may read it" "a 0600 .env.local draws no warning"
# readable by others while it holds the key: a warning (the command still runs), no key shown
chmod 644 "$conf/.env.local"
run bash -c 'cd "$1" && shift && exec "$@"' _ "$conf" "${clean_env[@]}" "$CARIS_BIN" --json list
assert_rc 0 "a 0644 .env.local still works"
assert_contains "$ERR" "warning: .env.local sets BACKUP_ENCRYPTION_KEY but other users may read it (mode 0644)" \
    "a 0644 .env.local holding the key draws a warning"
assert_contains "$ERR" "chmod 600 .env.local" "the hint says how to fix it"
assert_not_contains "$ERR" "$key" "the warning does not show the key"
# writable by others: a warning (whoever can write it can turn backups off)
chmod 622 "$conf/.env.local"
run bash -c 'cd "$1" && shift && exec "$@"' _ "$conf" "${clean_env[@]}" "$CARIS_BIN" --json list
assert_rc 0 "a 0622 .env.local still works"
assert_contains "$ERR" "warning: other users may change .env.local (mode 0622" "a .env.local others may write draws a warning"
chmod 600 "$conf/.env.local"
run bash -c 'cd "$1" && shift && exec "$@"' _ "$conf" "${clean_env[@]}" "$CARIS_BIN" --json list
assert_not_contains "$ERR" "other users may change" "a 0600 one does not"

# misspelt variables (the file's, and BACKUP_* ones of the environment) draw a warning that
# names them; they were ignored without a word: POSTGRESS_URL meant no database backup at all
cp "$conf/.env.local" "$TEST_TMP/typo.env"
printf 'POSTGRESS_URL=postgresql://app:SecretInUrl@db/caris\nBACKUP_RETENTION_DAYS=30\nCARIS_TEST_WHATEVER=1\n' >>"$TEST_TMP/typo.env"
BACKUP_SCHEDUEL_DAILY='0 3 * * *' run "${clean_env[@]}" "$CARIS_BIN" --env-file "$TEST_TMP/typo.env" --json list
assert_rc 0 "unknown variables: the command still runs"
assert_contains "$ERR" "does not know the variables POSTGRESS_URL, BACKUP_RETENTION_DAYS, BACKUP_SCHEDUEL_DAILY (misspelt?)" \
    "the warning names the unknown variables"
assert_not_contains "$ERR" "SecretInUrl" "the warning shows names, not values"
assert_not_contains "$ERR" "CARIS_TEST_WHATEVER" "the tests' knobs are not warned about"
# every variable the program reads is known (the list in config.c is complete): an env file
# setting each one, empty, draws no warning
grep -rhoE '"(BACKUP|CARIS|POSTGRES)_[A-Z0-9_]+"' "$LIB_DIR/../../src" | tr -d '"' | grep -v '^CARIS_TEST_' |
    LC_ALL=C sort -u | sed 's/$/=/' >"$TEST_TMP/all.env"
assert_cmp "$(grep -c . "$TEST_TMP/all.env")" -ge 50 "the sources read 50+ variables ($(grep -c . "$TEST_TMP/all.env"))"
run "${clean_env[@]}" BACKUP_ENCRYPTION_KEY="$key" BACKUP_DIR="$BACKUP_DIR" "$CARIS_BIN" --env-file "$TEST_TMP/all.env" --json list
assert_not_contains "$ERR" "does not know" "no variable the sources read is unknown to the check"

# a relative BACKUP_DIR (or ~, $HOME: an env file is no shell) is refused: each working
# directory would get a new, empty repository
# shellcheck disable=SC2088,SC2016 # literally: no shell expands them in an env file
for d in rel/bk '~/bk' '$HOME/bk'; do
    run env BACKUP_DIR="$d" BACKUP_ENCRYPTION_KEY="$key" "$CARIS_BIN" init
    assert_rc 6 "BACKUP_DIR=$d is refused (exit 6)"
    assert_contains "$ERR" "BACKUP_DIR is not an absolute path" "... saying why"
done
assert_false "no directory was made for the relative BACKUP_DIR" test -e rel
# so is a relative BACKUP_REPOSITORY or BACKUP_CLOUD_REPOSITORY: the daemon (working directory
# /) and a shell elsewhere would use two repositories; init made a directory named "~" here
# shellcheck disable=SC2088 # literally: no shell expands it in an env file
for v in 'BACKUP_REPOSITORY=~/repo' BACKUP_REPOSITORY=rel/repo BACKUP_CLOUD_REPOSITORY=rel/cloud; do
    run env "$v" BACKUP_ENCRYPTION_KEY="$key" "$CARIS_BIN" init
    assert_rc 6 "$v is refused (exit 6)"
    assert_contains "$ERR" "${v%%=*} is neither an absolute path nor an s3: URL" "... saying why"
done
assert_false "no directory was made for them" test -e '~' -o -e rel

# the environment wins over .env.local: a wrong key in the environment is used ...
run bash -c 'cd "$1" && shift && exec "$@"' _ "$conf" env -u BACKUP_DIR BACKUP_ENCRYPTION_KEY="$wrong" \
    "$CARIS_BIN" list
assert_rc 5 "environment key wins over .env.local (wrong one in the environment)"
# ... and a right one in the environment beats a wrong one in the file
printf 'BACKUP_DIR=%s\nBACKUP_ENCRYPTION_KEY=%s\n' "$TEST_TMP/nowhere" "$wrong" >"$TEST_TMP/wrong.env"
cp "$TEST_TMP/wrong.env" "$conf/.env.local"
run bash -c 'cd "$1" && shift && exec "$@"' _ "$conf" "$CARIS_BIN" --json list
assert_rc 0 "environment (BACKUP_DIR and key) wins over a wrong .env.local"
assert_eq "$id" "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" "environment's BACKUP_DIR was used"

# --env-file, in a directory without .env.local; quotes, export and comments accepted
printf '# comment\n\nexport BACKUP_DIR="%s"\nBACKUP_ENCRYPTION_KEY='"'"'%s'"'"'\n' "$BACKUP_DIR" "$key" >"$TEST_TMP/alt.env"
assert_exit 0 "${clean_env[@]}" "$CARIS_BIN" --env-file "$TEST_TMP/alt.env" verify "$id"
# --env-file replaces ./.env.local (which is wrong here)
run bash -c 'cd "$1" && shift && exec "$@"' _ "$conf" "${clean_env[@]}" "$CARIS_BIN" --env-file "$TEST_TMP/alt.env" list
assert_rc 0 "--env-file is read instead of ./.env.local"
# a variable the environment lacks comes from --env-file (BACKUP_DIR still from the environment)
assert_exit 5 env -u BACKUP_ENCRYPTION_KEY "$CARIS_BIN" --env-file "$TEST_TMP/wrong.env" list
assert_contains "$ERR" "wrong encryption key" "--env-file supplies the key missing from the environment"
assert_contains "$ERR" "$BACKUP_DIR" "... while BACKUP_DIR from the environment wins over the file's"

# malformed env files: exit 6, naming the line
printf 'BACKUP_DIR=%s\n# fine\nthis line has no equals sign\n' "$BACKUP_DIR" >"$TEST_TMP/bad.env"
assert_exit 6 "${clean_env[@]}" "$CARIS_BIN" --env-file "$TEST_TMP/bad.env" list
assert_contains "$ERR" "line 3" "malformed --env-file: the message names line 3"
printf 'BACKUP_ENCRYPTION_KEY=%s\n=novalue\n' "$key" >"$conf/.env.local"
run bash -c 'cd "$1" && shift && exec "$@"' _ "$conf" "${clean_env[@]}" "$CARIS_BIN" list
assert_rc 6 "malformed ./.env.local"
assert_contains "$ERR" "line 2" "malformed ./.env.local: the message names line 2"

# --- the key is never shown nor stored -------------------------------------------------
# (a few more commands whose output could plausibly echo it)
run cb --json backup files "$TEST_TMP/src"
run cb key list
run cb --json key list
run cb --json check --read-data
assert_true "the outputs of every command above exist" test -s "$ALL_OUTPUT"
for k in "$key" "$wrong" "$short31" "$key32"; do
    assert_false "no output contains the key ${k:0:6}..." grep -qF -- "$k" "$ALL_OUTPUT"
done
assert_false "the key is in no repository file" grep -rqF -- "$key" "$BACKUP_DIR" "$TEST_TMP/backup32"
assert_false "the 32-character key is in no repository file" grep -rqF -- "$key32" "$TEST_TMP/backup32" "$BACKUP_DIR"
# the env file written above holds it, so search the repository alone
assert_false "the key's first half is in no repository file" grep -rqF -- "${key:0:16}" "$BACKUP_DIR"

test_done

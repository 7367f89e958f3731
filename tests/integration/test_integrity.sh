#!/usr/bin/env bash
# Integrity reporting never goes quiet (issue 11): only `init` creates a repository (a
# mistyped --repo or BACKUP_DIR creates nothing), a repository this user may not read is
# "permission denied" (exit 8), not "no repository" (exit 7), and the marker's text is
# validated.
source "$(dirname "$0")/lib.sh"

mkdir -p "$TEST_TMP/src/sub"
printf 'one\n' >"$TEST_TMP/src/one.txt"
printf 'two\n' >"$TEST_TMP/src/sub/two.txt"

# --- no accidental repositories ----------------------------------------------------------
typo=$TEST_TMP/backup/repositroy
for q in "" --quiet; do
    # shellcheck disable=SC2086 # $q is empty or one word
    run cb $q --repo "$typo" backup files "$TEST_TMP/src"
    assert_rc 7 "backup files to a mistyped --repo ${q:-(not quiet)}: exit 7"
    assert_contains "$ERR" "no repository at $typo" "the error names the path ${q:-(not quiet)}"
    assert_contains "$ERR" "caris-backup init" "the hint names init ${q:-(not quiet)}"
done
assert_false "a mistyped --repo created nothing" test -e "$typo"
assert_false "a mistyped --repo created no BACKUP_DIR" test -e "$BACKUP_DIR"
run env BACKUP_DIR="$TEST_TMP/bakcup" "$CARIS_BIN" backup files "$TEST_TMP/src"
assert_rc 7 "backup files to a mistyped BACKUP_DIR: exit 7"
assert_false "a mistyped BACKUP_DIR created nothing" test -e "$TEST_TMP/bakcup"
run env POSTGRES_URL="postgresql://nobody@127.0.0.1:1/none" "$CARIS_BIN" --repo "$typo" backup database
assert_rc 7 "backup database to a mistyped --repo: exit 7"
assert_false "backup database created nothing" test -e "$typo"
for args in "list" "verify --all" "check" "key list" "forget --keep-last 1" "prune" "unlock"; do
    # shellcheck disable=SC2086 # word splitting of $args is the point
    run cb --repo "$typo" $args
    assert_rc 7 "$args on a missing repository: exit 7"
    assert_contains "$ERR" "caris-backup init" "$args on a missing repository: the hint names init"
done
assert_false "no command created the mistyped repository" test -e "$typo"

# init creates it; --if-missing then leaves it as it is (scripts)
init_repo
assert_true "init made the repository" test -e "$REPO/caris-repository"
run cb init
assert_rc 1 "a second init refuses"
run cb init --if-missing
assert_rc 0 "init --if-missing on an existing repository: exit 0"
assert_contains "$OUT" "exists" "init --if-missing says it exists"
run cb --json init --if-missing
assert_eq false "$(json_get "$OUT_FILE" '["created"]')" "init --if-missing --json: created false"
assert_exit 0 cb --quiet backup files "$TEST_TMP/src"

# --- the marker's text is validated --------------------------------------------------------
cp "$REPO/caris-repository" "$TEST_TMP/marker"
for bad in 'caris-backup repository\nformat 1x\n' 'caris-backup repository\nformat \n' \
    'caris-backup repositorY\nformat 1\n' 'caris-backup repository\nformat 01\n' \
    'caris-backup repository\nformat 1\nextra\n' 'caris-backup repository\nformat 1'; do
    printf "$bad" >"$REPO/caris-repository"
    run cb list
    assert_rc 4 "marker $(printf '%q' "$bad"): exit 4"
    assert_contains "$ERR" "caris-repository is damaged" "marker $(printf '%q' "$bad"): damaged, named"
done
printf 'caris-backup repository\nformat 9\n' >"$REPO/caris-repository"
run cb list
assert_rc 1 "a newer format: exit 1"
assert_contains "$ERR$OUT" "upgrade" "a newer format: upgrade"
cp "$TEST_TMP/marker" "$REPO/caris-repository"
assert_exit 0 cb list

# --- permission denied is not "no repository" ---------------------------------------------
if ! command -v setpriv >/dev/null; then
    skip "permission-denied case: setpriv not installed (package util-linux)"
elif (($(id -u) != 0)); then
    skip "permission-denied case: needs root to make a repository another user cannot read"
else
    # BACKUP_DIR is 0700, owned by root (init made it so)
    assert_eq 700 "$(stat -c %a "$BACKUP_DIR")" "BACKUP_DIR is mode 0700"
    as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    chmod 755 "$TEST_TMP"
    for args in "list" "verify --all" "backup files $TEST_TMP/src"; do
        # shellcheck disable=SC2086
        run "${as_nobody[@]}" "$CARIS_BIN" $args
        assert_rc 8 "$args as another user on a root-owned 0700 repository: exit 8"
        assert_contains "$ERR" "ermission denied" "$args as another user: permission denied"
        assert_not_contains "$ERR" "no repository" "$args as another user: not 'no repository'"
    done
fi

test_done

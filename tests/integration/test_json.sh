#!/usr/bin/env bash
# JSON as an interface (docs/JSON.md): every command's --json document, produced on a real
# repository, matches its shape in the doc's machine-readable block (jsonshape.py), and no
# key anywhere is snake_case. The checker itself is shown to catch an undocumented key, a
# snake_case key and a wrong type.
source "$(dirname "$0")/lib.sh"

DOC=$LIB_DIR/../../docs/JSON.md
# shape COMMAND MESSAGE: the last run's stdout has COMMAND's shape
shape() {
    if python3 "$LIB_DIR/jsonshape.py" "$DOC" "$1" "$OUT_FILE" >"$TEST_TMP/.shape" 2>&1; then
        pass "$2"
    else
        fail "$2" "$(cat "$TEST_TMP/.shape")" "document:" "$(_tail "$OUT_FILE")"
    fi
}

src=$TEST_TMP/src
mkdir -p "$src/sub"
printf 'a\n' >"$src/a.txt"
printf 'b\n' >"$src/sub/b.txt"
init_repo

run cb --json backup files --full --time 2024-01-01T00:00:00Z "$src"
assert_rc 0 "backup files --json"
shape "backup files" "backup files: its shape"
id1=$(json_get "$OUT_FILE" '["id"]')
printf 'c\n' >"$src/c.txt"
run cb --json backup files --time 2024-01-02T00:00:00Z "$src"
shape "backup files" "incremental backup files: its shape (with parent)"
assert_eq "$id1" "$(json_get "$OUT_FILE" '["parent"]')" "an incremental names its parent"
id2=$(json_get "$OUT_FILE" '["id"]')

run cb --json list
assert_rc 0 "list --json"
shape list "list: its shape"
assert_eq "[\"$id1\", \"$id2\"]" "$(json_eval "$OUT_FILE" '[b["id"] for b in d]')" "list: the ids, oldest first"
assert_eq '["files", "files"]' "$(json_eval "$OUT_FILE" '[b["kind"] for b in d]')" "list: the kind is kind"
assert_eq false "$(json_eval "$OUT_FILE" 'any("type" in b for b in d)')" "list: no second name for the kind"
assert_eq 4 "$(json_get "$OUT_FILE" '[0]["stats"]["bytesRead"]')" "list: stats in camelCase (bytesRead)"

run cb --json show latest
shape show "show: its shape"
run cb --json ls latest
shape ls "ls: its shape"
run cb --json ls latest sub --long --recursive
shape ls "ls PATH --long --recursive: its shape"
run cb --json find '*.txt'
shape find "find: its shape"
run cb --json diff "$id1" "$id2"
shape diff "diff: its shape"
assert_eq '["c.txt"]' "$(json_eval "$OUT_FILE" '[a["path"].rsplit("/", 1)[-1] for a in d["added"]]')" "diff: the added file"

run cb --json verify "$id1"
assert_rc 0 "verify ID --json"
shape verify "verify ID: its shape (a list)"
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d)')" "verify ID: a list of one"
run cb --json verify --all
shape verify "verify --all: its shape"
assert_eq 2 "$(json_eval "$OUT_FILE" 'len(d)')" "verify --all: one result per backup"

run cb --json check
assert_rc 0 "check --json"
shape check "check: its shape"
run cb --json check --read-data
shape check "check --read-data: its shape"

run cb --json restore files latest --target "$TEST_TMP/t" --include sub
assert_rc 0 "restore files --json (a relative --include)"
shape "restore files" "restore files: its shape"
assert_eq b "$(cat "$TEST_TMP/t$src/sub/b.txt")" "restore files: the file under TARGET/<absolute path>"
# bytes that are not UTF-8 in what a result quotes (a pattern, a target): jansson refused the
# text, and the command printed nothing and exited 0
run cb --json find $'*\xff*'
assert_rc 0 "find --json with a pattern that is not UTF-8"
assert_eq '*\xff*' "$(json_get "$OUT_FILE" '["pattern"]')" "find: the pattern's byte escaped"
run cb --json restore files latest --target "$TEST_TMP/t"$'\xff' --include sub
assert_rc 0 "restore files --json into a target whose name is not UTF-8"
assert_eq "$TEST_TMP/t\\xff" "$(json_get "$OUT_FILE" '["target"]')" "restore files: the target's byte escaped"
# a failed restore's document says why (it had "errors": [] and no word of it)
run cb --json restore files latest --target "$TEST_TMP/t2" --include /no/such/path
assert_rc 7 "restore files --json, an --include that matches nothing"
shape "restore files" "restore files that failed: its shape"
assert_eq not_found "$(json_get "$OUT_FILE" '["error"]["code"]')" "restore files that failed: its error"

run cb --json forget --keep-last 1 --dry-run
shape forget "forget --dry-run: its shape"
run cb --json prune --dry-run
shape prune "prune --dry-run: its shape"
run cb --json key list
shape "key list" "key list: its shape"
run_stdin "a second key for the shape of key remove 0123456789" cb --json key add --label second
assert_rc 0 "key add --json"
slot=$(json_get "$OUT_FILE" '["id"]')
run cb --json key remove "$slot"
assert_rc 0 "key remove --json"
shape "key remove" "key remove: its shape (a JSON document, not the human line)"
assert_eq "$slot" "$(json_get "$OUT_FILE" '["id"]')" "key remove: the slot removed"
assert_exit 0 cb token add --label shape-check --role viewer
run cb --json token revoke shape-check
assert_rc 0 "token revoke --json"
shape "token revoke" "token revoke: its shape (stdout was empty)"
assert_eq viewer "$(json_get "$OUT_FILE" '["role"]')" "token revoke: the revoked token's role"
run cb --json unlock
shape unlock "unlock: its shape"
run cb --json schedule next --cron '0 3 * * *' --tz UTC --from 2024-01-01T00:00:00Z --count 2
shape "schedule next" "schedule next: its shape"
run cb --json schedule next
assert_rc 0 "schedule next --json (the configured schedules)"
shape "schedule next" "schedule next without --cron: its shape (it was undocumented)"
run cb --json schedule status
shape "schedule status" "schedule status: its shape"
dst=$TEST_TMP/dst
assert_exit 0 env CARIS_COPY_TO_KEY=0123456789abcdef0123456789abcdef-dst "$CARIS_BIN" --quiet \
    --repo "$dst" init --copy-chunker-from "$REPO"
run env CARIS_COPY_TO_KEY=0123456789abcdef0123456789abcdef-dst "$CARIS_BIN" --json copy --all --to "$dst"
assert_rc 0 "copy --json"
shape copy "copy: its shape"
assert_eq "[\"$id1\", \"$id2\"]" "$(json_eval "$OUT_FILE" '[b["backupId"] for b in d["backups"]]')" "copy: both backups"
run cb --json audit verify
shape "audit verify" "audit verify: its shape"
run cb --json wal list
shape "wal list" "wal list: its shape"
# a WAL archive without PostgreSQL: three generated 1 MiB segments with segment 3 missing (a
# gap), a .history for timeline 2; a base backup from the test hook gives a recovery window
mkdir -p "$TEST_TMP/pg_wal"
for i in 1 2 4; do
    head -c 1048576 /dev/zero | tr '\0' "$i" >"$TEST_TMP/pg_wal/00000001000000000000000$i"
done
printf '1\t0/400010\tno recovery target specified\n' >"$TEST_TMP/pg_wal/00000002.history"
for f in "$TEST_TMP"/pg_wal/*; do
    run cb --json wal push --no-daemon "$f"
    assert_rc 0 "wal push $(basename "$f")"
done
shape "wal push" "wal push: its shape"
run cb --json wal push --no-daemon "$TEST_TMP/pg_wal/000000010000000000000001"
shape "wal push" "wal push of an archived file: its shape"
assert_eq "true false" "$(json_eval "$OUT_FILE" '"%s %s" % (str(d["alreadyArchived"]).lower(), str(d["viaDaemon"]).lower())')" \
    "wal push: alreadyArchived, viaDaemon"
export CARIS_TEST_WAL_BASES=1:0/100028
run cb --json wal list
shape "wal list" "wal list with segments, a gap, a timeline and a base backup: its shape"
assert_eq "2 1 1 0/300000" \
    "$(json_eval "$OUT_FILE" '"%d %d %d %s" % (len(d["timelines"]), len(d["gaps"]), d["recoveryWindow"]["baseBackups"], d["gaps"][0]["startLsn"])')" \
    "wal list: two timelines, the gap at 0/300000, one base backup"
run cb --json list --wal
shape "list --wal" "list --wal: its shape"
assert_eq "2 1" "$(json_eval "$OUT_FILE" '"%d %d" % (len(d["backups"]), len(d["wal"]["gaps"]))')" \
    "list --wal: the backups and the archive's gap"
run cb --json prune --dry-run
shape prune "prune --dry-run with WAL and a base backup: its shape"
assert_eq "0/100028 4" "$(json_eval "$OUT_FILE" '"%s %d" % (d["wal"]["keepFromLsn"], d["wal"]["kept"])')" \
    "prune: the WAL kept from the base backup's start"
unset CARIS_TEST_WAL_BASES
run cb --json prune
assert_rc 0 "prune --json"
shape prune "prune: its shape"
assert_cmp "$(json_get "$OUT_FILE" '["records"]["before"]')" -ge 3 "prune: the verification records counted"
run cb --json version
shape version "version: its shape"

run cb --json show no-such-backup
assert_rc 7 "an unknown id: exit 7"
shape error "an error with --json: its shape"
assert_eq 7 "$(json_get "$OUT_FILE" '["error"]["exitCode"]')" "the error's exitCode is the exit status"
run cb --json list --no-such-option
assert_rc 2 "an unknown option: exit 2"
shape error "a usage error with --json: its shape"

# the checker catches what it must
printf '{"version": "1", "repositoryFormat": 1, "extra": true}' >"$TEST_TMP/bad1.json"
assert_false "jsonshape: an undocumented key is caught" \
    python3 "$LIB_DIR/jsonshape.py" "$DOC" version "$TEST_TMP/bad1.json"
printf '{"version": "1", "repository_format": 1}' >"$TEST_TMP/bad2.json"
assert_false "jsonshape: a snake_case key is caught" \
    python3 "$LIB_DIR/jsonshape.py" "$DOC" version "$TEST_TMP/bad2.json"
printf '{"version": 1, "repositoryFormat": 1}' >"$TEST_TMP/bad3.json"
assert_false "jsonshape: a wrong type is caught" \
    python3 "$LIB_DIR/jsonshape.py" "$DOC" version "$TEST_TMP/bad3.json"
printf '{"forced": true, "removed": [], "kept": [], "leftoversRemoved": [], "leftoversKept": [{"boot_id": "x"}]}' >"$TEST_TMP/bad4.json"
assert_false "jsonshape: a snake_case key deep inside an 'any' value is caught" \
    python3 "$LIB_DIR/jsonshape.py" "$DOC" unlock "$TEST_TMP/bad4.json"
printf '{"now": "x", "running": true, "queue": 0, "job": null, "history": [], "nextRuns": [], "schedules": {}, "walArchiver": {"queued": 0}}' >"$TEST_TMP/bad5.json"
assert_false "jsonshape: a shape given as \$def|null is checked against the def" \
    python3 "$LIB_DIR/jsonshape.py" "$DOC" "schedule status" "$TEST_TMP/bad5.json"
sed 's/"walArchiver": {"queued": 0}/"walArchiver": null/' "$TEST_TMP/bad5.json" >"$TEST_TMP/good5.json"
assert_true "jsonshape: ... and null is taken" \
    python3 "$LIB_DIR/jsonshape.py" "$DOC" "schedule status" "$TEST_TMP/good5.json"

# An error whose message holds bytes that are not UTF-8 (a path given on the command line) is
# still one JSON error object on stdout, the bytes escaped as on stderr; jansson refused the
# text and nothing was printed on stdout.
run "$CARIS_BIN" --json backup files "$TEST_TMP/"$'no-such-caf\xe9'
assert_rc 7 "a missing path with a Latin-1 byte: not found"
assert_json "$OUT_FILE" "--json: the error is a JSON document"
assert_contains "$(json_get "$OUT_FILE" '["error"]["message"]')" 'no-such-caf\xe9' \
    "--json: its message names the path, the byte escaped"
assert_contains "$ERR" 'no-such-caf\xe9' "stderr: the byte escaped too, not written raw"

test_done

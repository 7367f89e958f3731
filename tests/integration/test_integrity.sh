#!/usr/bin/env bash
# Integrity reporting never goes quiet (issue 11): only `init` creates a repository (a
# mistyped --repo or BACKUP_DIR creates nothing), a repository this user may not read is
# "permission denied" (exit 8), not "no repository" (exit 7), the marker's text is
# validated, a damaged key slot is damage (exit 4), never "wrong encryption key"; a backup
# never vanishes quietly: a flipped, truncated or deleted snapshot file
# shows in `list` and fails `verify --all` (exit 4), and `find` names it as not searched
# (exit 3), named by its id when it can be recovered; a damaged entry list in the first of three backups does not stop `verify --all`;
# results of verify and check are recorded and `list` shows a damaged backup as damaged; a
# backup's warnings (full path, reason) are in `list --json`.
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
# a deleted marker is damage, never "no repository" (whose hint, init, then said to remove the
# leftovers of an interrupted init: every backup)
rm "$REPO/caris-repository"
for args in list check "init" "init --if-missing"; do
    # shellcheck disable=SC2086 # the words of args
    run cb $args
    assert_rc 4 "$args without the marker: exit 4"
    assert_contains "$ERR" "marker file caris-repository is missing" "$args without the marker: said so"
    assert_contains "$ERR" "do not run init and remove nothing" "$args without the marker: the hint keeps the backups"
done
assert_false "nothing was written in its place" test -e "$REPO/caris-repository"
cp "$TEST_TMP/marker" "$REPO/caris-repository"
assert_exit 0 cb list
# a deleted config (the marker there) is damage too: it was "cannot stat .../config" (exit 7,
# the code of "no repository", no hint), and init --if-missing said the repository exists
mv "$REPO/config" "$TEST_TMP/config"
for args in list check "init --if-missing"; do
    # shellcheck disable=SC2086 # the words of args
    run cb $args
    assert_rc 4 "$args without the config: exit 4"
    assert_contains "$ERR" "its config is missing" "$args without the config: said so"
    assert_contains "$ERR" "do not run init and remove nothing" "$args without the config: the hint keeps the backups"
done
assert_false "nothing was written in its place" test -e "$REPO/config"
mv "$TEST_TMP/config" "$REPO/config"
assert_exit 0 cb list

# --- a damaged key slot is never "wrong encryption key" -------------------------------------
slot=$(find "$REPO/keys" -type f | head -n 1)
cp "$slot" "$TEST_TMP/slot"
python3 - "$slot" <<'EOF'
import json, sys
p = sys.argv[1]
j = json.load(open(p))
w = j["wrapped"]
j["wrapped"] = w[:20] + ("0" if w[20] != "0" else "1") + w[21:]  # one hex digit changed
open(p, "w").write(json.dumps(j, indent=2, sort_keys=True))
EOF
run cb list
assert_rc 4 "a damaged key slot: exit 4"
assert_contains "$ERR" "damaged" "a damaged key slot: says damaged"
assert_not_contains "$ERR" "wrong encryption key" "a damaged key slot: not 'wrong encryption key'"
cp "$TEST_TMP/slot" "$slot"
run env BACKUP_ENCRYPTION_KEY="${BACKUP_ENCRYPTION_KEY}-wrong" "$CARIS_BIN" list
assert_rc 5 "an intact slot and a wrong key: exit 5"
assert_contains "$ERR" "wrong encryption key" "an intact slot and a wrong key: wrong encryption key"
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

# --- a backup never vanishes quietly -------------------------------------------------------
# A repository of its own: three backups of trees that share nothing (random contents, so
# that only the entry lists compress).
export BACKUP_DIR=$TEST_TMP/three
REPO=$BACKUP_DIR/repository
init_repo
snapshots() { find "$REPO/snapshots" -type f ! -name '.*' -printf '%f\n' | sort; }
ids=() snaps=()
for n in 1 2 3; do
    mkdir -p "$TEST_TMP/t$n/dir$n"
    seeded_bytes $((20000 + n)) "integrity/data$n" >"$TEST_TMP/t$n/dir$n/data$n.bin"
    before_packs=$(list_packs)
    before=$(snapshots)
    backup_json "$TEST_TMP/t$n.json" "$TEST_TMP/t$n"
    assert_rc 0 "backup $n"
    ids+=("$BACKUP_ID")
    snaps+=("$(comm -13 <(echo "$before") <(snapshots))")
    if ((n == 1)); then
        # the pack of backup 1's entry list: its one compressed blob (file data is random)
        for pk in $(comm -13 <(echo "$before_packs") <(list_packs)); do
            rel=${pk#"$REPO"/}
            blob=$(cd "$REPO" && "$CARIS_BIN" debug pack "$rel" | awk '$4 == "yes" {print $1, $2}')
            [[ -n $blob ]] && entries_pack=$pk entries_blob=$blob
        done
    fi
done
assert_eq 3 "$(printf '%s\n' "${snaps[@]}" | grep -c .)" "each backup wrote one snapshot file"
assert_ne "" "${entries_pack:-}" "found the pack of backup 1's entry list"
# debug backup says the same, from the snapshot and the index
run cb --json debug backup "${ids[0]}"
assert_rc 0 "debug backup ${ids[0]}"
assert_eq "${entries_pack#"$REPO"/} $entries_blob" \
    "$(json_eval "$OUT_FILE" '" ".join(str(d["blobs"][0][k]) for k in ("pack", "offset", "length"))')" \
    "debug backup places backup 1's entry list where its pack's trailer has it"
assert_eq "snapshots/${snaps[0]}" "$(json_get "$OUT_FILE" '["snapshot"]')" "and names its snapshot file"
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d["blobs"])')" "one blob"
run cb debug backup latest
assert_rc 0 "debug backup latest (an id, a prefix or latest, as everywhere)"
assert_contains "$OUT" "snapshots/${snaps[2]}, manifest" "... the newest backup"
run cb debug backup "${ids[0]}"
assert_rc 0 "debug backup, as text"
assert_contains "$OUT" "snapshots/${snaps[0]}, manifest" "the text names the snapshot file"
assert_contains "$OUT" "${entries_pack#"$REPO"/}" "and the pack"
run cb debug backup file_full_2001-01-01T00-00-00
assert_rc 7 "debug backup of an unknown id: not found (7)"
assert_contains "$ERR" "no backup file_full_2001-01-01T00-00-00" "says there is no such backup"
run cb debug backup
assert_rc 2 "debug backup without an id"
assert_contains "$ERR" "debug backup needs a backup id" "says what is missing"

# a damaged entry list in the first of three backups: the other two still verified
read -r off len <<<"$entries_blob"
flip_byte "$entries_pack" $((off + len / 2))
run cb --json verify --all
assert_rc 4 "verify --all with backup 1's entry list damaged: exit 4"
cp "$OUT_FILE" "$TEST_TMP/va.json"
assert_eq "${ids[0]} ${ids[1]} ${ids[2]}" "$(json_eval "$TEST_TMP/va.json" '" ".join(r["backupId"] for r in d)')" \
    "verify --all reports each of the three backups by id"
assert_eq "False True True" "$(json_eval "$TEST_TMP/va.json" '" ".join(str(r["valid"]) for r in d)')" \
    "backup 1 damaged, backups 2 and 3 valid"
run cb verify --all
assert_rc 4 "verify --all (human): exit 4"
assert_contains "$OUT" "${ids[0]}: DAMAGED" "verify --all names backup 1 as damaged"
assert_contains "$OUT" "${ids[2]}: valid" "... and goes on to backup 3"
# the result is remembered: list shows backup 1 as damaged
run cb --json list
assert_eq "damaged ok ok" "$(json_eval "$OUT_FILE" '" ".join(b["status"] for b in d)')" \
    "list shows the backup whose verification failed as damaged"
assert_eq "False" "$(json_eval "$OUT_FILE" 'str(d[0]["lastVerification"]["ok"])')" "its lastVerification is the failure"
run cb list
assert_match "${ids[0]} .* damaged" "$(grep -F "${ids[0]}" <<<"$OUT")" "list (human) shows damaged"
flip_byte "$entries_pack" $((off + len / 2)) # repaired: a new verification finds it whole
assert_exit 0 cb verify "${ids[0]}"
run cb --json list
assert_eq "ok ok ok" "$(json_eval "$OUT_FILE" '" ".join(b["status"] for b in d)')" \
    "a later verification that finds it whole makes it ok again"

# a flipped byte in backup 2's snapshot file, backup 3's truncated
flip_byte "$REPO/snapshots/${snaps[1]}"
size=$(stat -c %s "$REPO/snapshots/${snaps[2]}")
truncate -s $((size / 2)) "$REPO/snapshots/${snaps[2]}"
run cb --json list
assert_rc 0 "list with two damaged snapshot files"
cp "$OUT_FILE" "$TEST_TMP/l2.json"
assert_eq 3 "$(json_eval "$TEST_TMP/l2.json" 'len(d)')" "list still shows three backups"
for k in 1 2; do
    assert_eq damaged "$(json_eval "$TEST_TMP/l2.json" "[b for b in d if b['id'] == '${ids[$k]}'][0]['status']")" \
        "list names backup $((k + 1)) (damaged snapshot file) by its id, as damaged"
    assert_eq "snapshots/${snaps[$k]}" "$(json_eval "$TEST_TMP/l2.json" "[b for b in d if b['id'] == '${ids[$k]}'][0]['file']")" \
        "list names backup $((k + 1))'s file"
done
run cb list
assert_contains "$OUT" "${ids[1]}" "list (human) names the flipped one"
assert_contains "$OUT" "${ids[2]}" "list (human) names the truncated one"
assert_contains "$OUT" "DAMAGED (snapshots/${snaps[2]}" "list (human) says DAMAGED with the file"
run cb --json verify --all
assert_rc 4 "verify --all with damaged snapshot files: exit 4"
assert_eq "${ids[0]}:True ${ids[1]}:False ${ids[2]}:False" \
    "$(json_eval "$OUT_FILE" '" ".join("%s:%s" % (r["backupId"], r["valid"]) for r in sorted(d, key=lambda r: r["backupId"]))')" \
    "verify --all reports all three by id: two damaged"
run cb verify --all
assert_contains "$OUT" "${ids[1]}: DAMAGED" "verify --all (human) names the flipped one"
assert_contains "$OUT" "${ids[2]}: DAMAGED" "verify --all (human) names the truncated one"
# find cannot search them: it says so (exit 3), never a quiet "no match" there
run cb find '*.bin'
assert_rc 3 "find with two damaged snapshot files: exit 3 (warnings)"
assert_contains "$OUT" "data1.bin" "find shows the match in the backup it could read"
assert_contains "$OUT" "1 match in 1 file backup" "find counts the one backup it searched"
for k in 1 2; do
    assert_contains "$ERR" "warning: backup ${ids[$k]} was not searched: its snapshot file snapshots/${snaps[$k]} is damaged" \
        "find names backup $((k + 1)) (damaged snapshot file) as not searched"
done
assert_contains "$ERR" "2 backups could not be searched" "find counts the backups it could not search"
run cb --json find '*.bin'
assert_rc 3 "find --json with two damaged snapshot files: exit 3"
assert_eq "[[\"${ids[1]}\", \"snapshots/${snaps[1]}\"], [\"${ids[2]}\", \"snapshots/${snaps[2]}\"]]" \
    "$(json_eval "$OUT_FILE" 'sorted([u["backupId"], u["file"]] for u in d["notSearched"])')" \
    "find --json: notSearched names both, by id and file"
assert_eq 1 "$(json_get "$OUT_FILE" '["backupsSearched"]')" "find --json: one backup searched"
run cb verify "${ids[2]}"
assert_rc 4 "verify of the backup whose snapshot file is truncated: exit 4 (damaged, not 'not found')"
assert_contains "$ERR" "snapshots/${snaps[2]} is damaged" "verify ID names its damaged snapshot file"
run cb ls "${ids[1]}"
assert_rc 4 "ls of the backup whose snapshot file is flipped: exit 4"
# 'latest' passed over the newer backups it could not read and gave the oldest without a word:
# a restore of it succeeded with older data
run cb ls latest
assert_rc 4 "ls latest, the newest backups damaged: exit 4"
assert_contains "$ERR" "'latest' would be ${ids[0]}, but backup" "it says latest would be an older one"
assert_contains "$ERR" "cannot be read (its snapshot file snapshots/" "... and which one cannot be read"
assert_contains "$ERR" "${ids[0]} is the newest that can be read" "the hint names the one to give"
run cb restore files latest --target "$TEST_TMP/latest-restore"
assert_rc 4 "restore files latest: refused the same way (exit 4)"
assert_false "nothing was restored" test -e "$TEST_TMP/latest-restore"
# a unique prefix of a damaged backup's id: damaged (exit 4), not "no backup" (exit 7)
for ((l = 6; l < ${#ids[2]}; l++)); do
    [[ ${ids[0]} != "${ids[2]:0:l}"* && ${ids[1]} != "${ids[2]:0:l}"* ]] && break
done
run cb ls "${ids[2]:0:l}"
assert_rc 4 "ls of a prefix of the truncated backup's id: exit 4"
assert_contains "$ERR" "backup ${ids[2]} cannot be read" "... naming the backup"
# a prefix shared by the readable backup and a damaged one: ambiguous (exit 2), never the
# readable one without a word
common=${ids[0]:0:5}
run cb ls "$common"
assert_rc 2 "ls of a prefix shared by a readable and damaged backups: ambiguous (exit 2)"
assert_contains "$ERR" "(damaged)" "the candidates name the damaged ones as such"
run cb debug backup latest
assert_rc 4 "debug backup latest: the same refusal as every command (exit 4)"
# an id as typed is quoted with its control bytes escaped (it goes to a terminal)
run cb ls "$(printf 'no-such\033[31m')"
assert_rc 7 "ls of an unknown id: exit 7"
assert_contains "$ERR" 'no backup no-such\x1b[31m' "the id's escape byte is shown escaped"
run cb --json check
assert_rc 4 "check: exit 4"
assert_contains "$(json_eval "$OUT_FILE" '" ".join(b for x in d["errors"] for b in x["backups"])')" "${ids[2]}" \
    "check names the truncated backup by id"

# without the state record and this host's copy of it the id is lost: named by the file
mv "$REPO/state" "$TEST_TMP/state.saved"
mv "$BACKUP_DIR/metadata" "$TEST_TMP/metadata.saved"
run cb --json list
assert_eq "None" "$(json_eval "$OUT_FILE" "str([b for b in d if b.get('file') == 'snapshots/${snaps[2]}'][0]['id'])")" \
    "unknown id: the damaged snapshot is listed with id null ..."
assert_eq damaged "$(json_eval "$OUT_FILE" "[b for b in d if b.get('file') == 'snapshots/${snaps[2]}'][0]['status']")" \
    "... as damaged, named by its file"
run cb verify --all
assert_rc 4 "verify --all, ids unknown: exit 4"
assert_contains "$OUT" "snapshots/${snaps[2]}: DAMAGED" "verify --all names it by its file"
run cb --json find '*.bin'
assert_rc 3 "find, ids unknown: exit 3"
assert_eq "[null, null]" "$(json_eval "$OUT_FILE" '[u["backupId"] for u in d["notSearched"]]')" \
    "find --json, ids unknown: backupId null"
run cb find '*.bin'
assert_contains "$ERR" "warning: a backup was not searched: its snapshot file snapshots/${snaps[2]} is damaged" \
    "find, ids unknown: the backup named by its file"
rm -rf "$REPO/state" "$BACKUP_DIR/metadata"
mv "$TEST_TMP/state.saved" "$REPO/state"
mv "$TEST_TMP/metadata.saved" "$BACKUP_DIR/metadata"

# a deleted snapshot file (no forget): list, verify --all and check report it by id
rm "$REPO/snapshots/${snaps[0]}"
run cb --json list
assert_eq missing "$(json_eval "$OUT_FILE" "[b for b in d if b['id'] == '${ids[0]}'][0]['status']")" \
    "list shows the deleted backup as missing, by id"
run cb --json verify --all
assert_rc 4 "verify --all with a deleted snapshot file: exit 4"
assert_eq False "$(json_eval "$OUT_FILE" "str([r for r in d if r['backupId'] == '${ids[0]}'][0]['valid'])")" \
    "verify --all reports the deleted backup by id, not valid"
run cb verify --all
assert_contains "$OUT" "${ids[0]}: DAMAGED" "verify --all (human) names the deleted backup"
assert_contains "$ERR" "snapshot file is gone" "verify --all says its snapshot file is gone"
run cb check
assert_rc 4 "check with a deleted snapshot file: exit 4"
assert_contains "$OUT" "${ids[0]}" "check names the deleted backup"

# --- check --read-data results are recorded; warnings in list --json -------------------------
export BACKUP_DIR=$TEST_TMP/checked
REPO=$BACKUP_DIR/repository
init_repo
mkdir -p "$TEST_TMP/w"
seeded_bytes 300000 integrity/scan >"$TEST_TMP/w/scan.bin"
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$TEST_TMP/w/unix.sock"
backup_json "$TEST_TMP/w.json" "$TEST_TMP/w"
assert_rc 3 "a backup with a socket: completed with warnings"
wid=$BACKUP_ID
run cb --json list
assert_eq "$TEST_TMP/w/unix.sock" "$(json_eval "$OUT_FILE" 'd[0]["warnings"][0]["fullPath"]')" \
    "list --json: the warning's full path"
assert_ne "" "$(json_eval "$OUT_FILE" 'd[0]["warnings"][0]["message"]')" "list --json: the warning's reason"
assert_eq warnings "$(json_eval "$OUT_FILE" 'd[0]["status"]')" "status warnings before any damage"
# damage the file's data: the largest pack holds scan.bin
pk=$(list_packs | xargs -d '\n' ls -S | head -n 1)
blob=$(cd "$REPO" && "$CARIS_BIN" debug pack "${pk#"$REPO"/}" | awk '$3 == 300000 {print $1, $2}')
read -r off len <<<"$blob"
flip_byte "$pk" $((off + len / 2))
assert_exit 0 cb --quiet check # without --read-data the data is not read
run cb check --read-data
assert_rc 4 "check --read-data finds the damage"
run cb --json list
assert_eq damaged "$(json_eval "$OUT_FILE" 'd[0]["status"]')" "after check --read-data, list shows the backup as damaged"
assert_contains "$(json_eval "$OUT_FILE" 'd[0]["lastVerification"]["error"]')" "check --read-data" \
    "its lastVerification says check --read-data found it"
assert_eq "$wid" "$(json_eval "$OUT_FILE" 'd[0]["lastVerification"]["backupId"]')" "recorded for that backup"
run cb --json show "$wid"
assert_eq damaged "$(json_get "$OUT_FILE" '["status"]')" "show says damaged too, as list (it said ok)"
assert_contains "$(json_get "$OUT_FILE" '["damage"]')" "check --read-data" "... with the damage list gives"
assert_true "show's document has the shape docs/JSON.md gives" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" show "$OUT_FILE"

# --- the only backup of its kind damaged: 'latest' says so (exit 4), not "no backup, make one"
export BACKUP_DIR=$TEST_TMP/only
REPO=$BACKUP_DIR/repository
init_repo
assert_exit 0 cb backup files "$TEST_TMP/src"
only_snap=$(ls "$REPO/snapshots")
flip_byte "$REPO/snapshots/$only_snap"
run cb verify latest:files
assert_rc 4 "verify latest:files, the only file backup damaged: exit 4 (was 7, 'no file backup')"
assert_contains "$ERR" "no file backup can be read" "it says none can be read"
assert_contains "$ERR" "snapshots/$only_snap is damaged" "... and names the damaged snapshot file"
assert_not_contains "$ERR" "make one with" "... not that there is none to be made"
run cb restore files latest --target "$TEST_TMP/only-restore"
assert_rc 4 "restore files latest: the same (exit 4)"
assert_false "nothing was restored" test -e "$TEST_TMP/only-restore"
run cb verify latest:database
assert_rc 7 "latest:database with no database backup at all: still 'no backup' (exit 7)"

test_done

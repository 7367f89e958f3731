#!/usr/bin/env bash
# Damage in the repository is found and attributed: a flipped byte in a pack (verify and
# check --read-data exit 4 and name the file and the backup; a restore does not write the
# damaged file), a flipped byte in an index file (check exits 4 and names it), an index file
# deleted (check exits 4 and names the packs no index lists), a truncated
# pack (check and verify exit 4), data/ that cannot be listed (the open fails and says so).
# A hard link of a damaged file is not restored either, and is named; the restore goes on.
source "$(dirname "$0")/lib.sh"

# use_repo NAME: switch to a fresh repository under $TEST_TMP/NAME.
use_repo() {
    export BACKUP_DIR=$TEST_TMP/$1
    REPO=$BACKUP_DIR/repository
    init_repo
}

# Two trees that share no data: damage to one must not be blamed on the other.
mkdir -p "$TEST_TMP/a/sub" "$TEST_TMP/b"
seeded_bytes 2M corruption/patient-scan >"$TEST_TMP/a/patient-scan.bin"
# a second name of the damaged file, walked after it (names sort bytewise) and before sub/
ln "$TEST_TMP/a/patient-scan.bin" "$TEST_TMP/a/patient-scan.lnk"
printf 'small\n' >"$TEST_TMP/a/sub/small.txt"
seeded_bytes 300000 corruption/other >"$TEST_TMP/b/other.bin"

largest_pack() { list_packs | xargs -d '\n' ls -S | head -n 1; }

# --- a flipped byte in the middle of a pack --------------------------------------------
use_repo flip-pack
backup_json "$TEST_TMP/a.json" "$TEST_TMP/a"
assert_rc 0 "backup of tree a"
id_a=$BACKUP_ID
packs_a=$(list_packs)
backup_json "$TEST_TMP/b.json" "$TEST_TMP/b"
assert_rc 0 "backup of tree b"
id_b=$BACKUP_ID
# The largest pack of backup a is nearly all patient-scan.bin, but it also holds the blobs
# of small.txt and of the entry list. Its largest blob is a chunk of patient-scan.bin (the
# only content larger than a few bytes; file chunks are at least 512 KiB): flip a byte in
# the middle of that blob, found with `debug pack`, so the damage never lands elsewhere.
pack=$(xargs -d '\n' ls -S <<<"$packs_a" | head -n 1)
run cb --json debug pack "$pack"
assert_rc 0 "debug pack lists the pack's blobs"
assert_eq true "$(json_eval "$OUT_FILE" 'len(d["blobs"]) >= 2 and d["bytes"] > 0')" \
    "debug pack: the pack holds several blobs"
assert_eq true "$(json_eval "$OUT_FILE" 'all(b["offset"] >= 40 and b["offset"] + b["length"] <= d["bytes"] for b in d["blobs"])')" \
    "debug pack: every blob lies inside the pack"
off=$(json_eval "$OUT_FILE" 'max(d["blobs"], key=lambda b: b["length"])["offset"] + max(d["blobs"], key=lambda b: b["length"])["length"] // 2')
assert_eq true "$(json_eval "$OUT_FILE" 'max(b["size"] for b in d["blobs"]) >= 512 * 1024')" \
    "debug pack: the largest blob is a file chunk (>= 512 KiB)"
note "flipping byte $off of $pack ($(stat -c %s "$pack") bytes), in its largest blob"
flip_byte "$pack" "$off"
assert_exit 2 cb debug pack index/0000
assert_contains "$ERR" "is not a pack name" "debug pack refuses a name outside data/"

assert_exit 4 cb verify "$id_a"
assert_contains "$OUT$ERR" "patient-scan.bin" "verify names the damaged file"
assert_contains "$OUT$ERR" "$id_a" "verify names the backup"
run cb --json verify "$id_a"
assert_rc 4 "verify --json of the damaged backup"
assert_eq false "$(json_get "$OUT_FILE" '[0]["valid"]')" "verify --json: valid is false"
assert_eq true "$(json_eval "$OUT_FILE" 'any("patient-scan.bin" in e["path"] for e in d[0]["errors"])')" \
    "verify --json: an error names patient-scan.bin"
assert_eq true "$(json_eval "$OUT_FILE" 'all("small.txt" not in e["path"] for e in d[0]["errors"])')" \
    "verify --json: the intact file is not blamed"
assert_exit 0 cb verify "$id_b"
# dump --json of the damaged file: exit 4, and stdout holds the bytes only (the error document
# was appended to them)
cb --json dump "$id_a" "$TEST_TMP/a/patient-scan.bin" >"$TEST_TMP/dumped.bin" 2>"$TEST_TMP/dumped.err"
assert_eq 4 "$?" "dump --json of the damaged file: exit 4"
assert_false "no error document among the dumped bytes" grep -q -a '"exitCode"' "$TEST_TMP/dumped.bin"
assert_contains "$(cat "$TEST_TMP/dumped.err")" "patient-scan.bin" "the error is on stderr"
# output that cannot be written fails the command (exit 8), instead of exit 0 with half a
# document (found by a review)
cb --json ls "$id_b" >/dev/full 2>"$TEST_TMP/full.err"
assert_eq 8 "$?" "ls --json > /dev/full: exit 8"
assert_contains "$(cat "$TEST_TMP/full.err")" "cannot write the output (stdout)" "... saying why"
cb list >/dev/full 2>/dev/null
assert_eq 8 "$?" "list > /dev/full: exit 8"

assert_exit 4 cb check --read-data
assert_contains "$OUT$ERR" "$id_a" "check --read-data names the affected backup"
run cb --json check --read-data
assert_rc 4 "check --json --read-data"
assert_json "$OUT_FILE" "check --json output is JSON"
assert_eq false "$(json_get "$OUT_FILE" '["ok"]')" "check --json: ok is false"
assert_eq true "$(json_eval "$OUT_FILE" "any('$id_a' in e.get('backups', []) for e in d['errors'])")" \
    "check --json: an error lists the damaged backup in \"backups\""
assert_eq true "$(json_eval "$OUT_FILE" "all('$id_b' not in e.get('backups', []) for e in d['errors'])")" \
    "check --json: the intact backup is not listed"
rel=${pack#"$REPO"/}
assert_eq true "$(json_eval "$OUT_FILE" "any(e.get('object') == '$rel' for e in d['errors'])")" \
    "check --json: an error names the damaged pack"

# Restoring the damaged backup writes the intact files and never the damaged one, nor its
# hard link, which is named as damaged; the files after the link are restored (the link once
# stopped the restore: exit 7, "cannot restore hard link", small.txt not restored).
mkdir "$TEST_TMP/r"
assert_exit 4 cb restore files "$id_a" --target "$TEST_TMP/r"
assert_contains "$ERR" "patient-scan.bin" "the text output names the file that failed (it said only how many)"
assert_contains "$ERR" '"patient-scan.lnk": not restored: a hard link of patient-scan.bin, whose content is damaged in the backup' \
    "the restore names the hard link of the damaged file as damaged"
assert_contains "$ERR" "2 file(s) failed verification" "the damaged file and its hard link are counted"
assert_not_contains "$ERR" "cannot restore hard link" "no hard-link error"
assert_false "the damaged file was not restored" test -e "$TEST_TMP/r$TEST_TMP/a/patient-scan.bin"
assert_false "its hard link was not restored" test -e "$TEST_TMP/r$TEST_TMP/a/patient-scan.lnk"
assert_true "the intact file was restored" cmp "$TEST_TMP/a/sub/small.txt" "$TEST_TMP/r$TEST_TMP/a/sub/small.txt"
assert_eq "$TEST_TMP/r$TEST_TMP/a/sub/small.txt" "$(find "$TEST_TMP/r" ! -type d)" \
    "nothing else is left in the target (no temporary file)"

# --- two damaged packs, each needed by other backups: each pack's error names the backups
# that need it, and only those (the first damaged backup was named on every error that named
# no backup yet: on the damage of a pack it does not need, and the next backups were not
# named on the damage of packs they do need) ---------------------------------------------
use_repo two-packs
backup_json "$TEST_TMP/2a.json" "$TEST_TMP/a"
id_2a=$BACKUP_ID
pack_2a=$(largest_pack)
backup_json "$TEST_TMP/2b.json" "$TEST_TMP/b"
id_2b=$BACKUP_ID
pack_2b=$(list_packs | xargs -d '\n' ls -S | grep -v -x -F "$pack_2a" | head -n 1)
echo more >"$TEST_TMP/a/sub/more.txt"
backup_json "$TEST_TMP/2c.json" "$TEST_TMP/a" # needs patient-scan.bin's blobs, in pack_2a
id_2c=$BACKUP_ID
rm "$TEST_TMP/a/sub/more.txt"
assert_eq 3 "$(printf '%s\n' "$id_2a" "$id_2b" "$id_2c" | sort -u | grep -c .)" "three backups"
for p in "$pack_2a" "$pack_2b"; do
    run cb --json debug pack "$p"
    flip_byte "$p" "$(json_eval "$OUT_FILE" '(lambda b: b["offset"] + b["length"] // 2)(max(d["blobs"], key=lambda b: b["length"]))')"
done
run cb --json check --read-data
assert_rc 4 "check --read-data with two damaged packs"
named_on() { json_eval "$OUT_FILE" "' '.join(sorted({b for e in d['errors'] if e['object'] == '${1#"$REPO"/}' for b in e['backups']}))"; }
assert_eq "$(printf '%s\n' "$id_2a" "$id_2c" | sort | xargs)" "$(named_on "$pack_2a")" \
    "the first pack's error names the two backups of tree a"
assert_eq "$id_2b" "$(named_on "$pack_2b")" "the second pack's error names the backup of tree b alone"

# --- a pack deleted that two of three backups need: its error names those two ------------
# (a pack missing at open has none of its blobs loaded: check named the backups on their own
# errors only, and the pack's error named none)
use_repo gone-pack
backup_json "$TEST_TMP/ga.json" --threads 1 "$TEST_TMP/a"
id_ga=$BACKUP_ID
pack_ga=$(largest_pack)
backup_json "$TEST_TMP/gb.json" --threads 1 "$TEST_TMP/b"
id_gb=$BACKUP_ID
echo more >"$TEST_TMP/a/sub/more.txt"
backup_json "$TEST_TMP/gc.json" --threads 1 "$TEST_TMP/a"
id_gc=$BACKUP_ID
rm "$TEST_TMP/a/sub/more.txt" "$pack_ga"
run cb --json check
assert_rc 4 "check with a pack deleted"
assert_eq "$(printf '%s\n' "$id_ga" "$id_gc" | sort | xargs)" \
    "$(json_eval "$OUT_FILE" "' '.join(sorted({b for e in d['errors'] if e['object'] == '${pack_ga#"$REPO"/}' for b in e['backups']}))")" \
    "the missing pack's error names the two backups that need it"
assert_eq false "$(json_eval "$OUT_FILE" "any('$id_gb' in e['backups'] for e in d['errors'])")" \
    "the third backup is named nowhere"

# --- a flipped byte in an index file ---------------------------------------------------
use_repo flip-index
backup_json "$TEST_TMP/i.json" "$TEST_TMP/a"
assert_rc 0 "backup into a fresh repository"
index=$(list_index_files | head -n 1)
assert_ne "" "$index" "the repository has an index file"
flip_byte "$index"
assert_exit 4 cb check
assert_contains "$OUT$ERR" "$(basename "$index")" "check names the damaged index file"
run cb --json check
assert_rc 4 "check --json with a damaged index"
assert_eq true "$(json_eval "$OUT_FILE" "any('$(basename "$index")' in e['object'] for e in d['errors'])")" \
    "check --json: an error's object is the index file"
# the backup is whole (its blobs are found through the packs' authenticated trailers): it is
# not named as affected, and list does not call it damaged (it did, while verify found it valid)
assert_eq "[]" "$(json_eval "$OUT_FILE" "[b for e in d['errors'] for b in e.get('backups', [])]")" \
    "check --json: no backup is named for a damaged index file"
run cb --json list
assert_eq ok "$(json_get "$OUT_FILE" '[0]["status"]')" "list: the backup stays ok"
assert_exit 0 cb verify "$(json_get "$TEST_TMP/i.json" '["id"]')"

# --- an index file deleted ---------------------------------------------------------------
# check said "no errors found" (a warning per pack: "left by an interrupted backup"), exit 0
use_repo missing-index
backup_json "$TEST_TMP/x.json" "$TEST_TMP/a"
assert_rc 0 "backup into a fresh repository"
id_x=$BACKUP_ID
assert_exit 0 cb check
index=$(list_index_files | head -n 1)
rm -f "$index"
run cb --json check
assert_rc 4 "check with an index file deleted"
packs_x=$(list_packs | wc -l)
assert_eq "$packs_x" "$(json_eval "$OUT_FILE" "len([e for e in d['errors'] if e['object'].startswith('data/') and 'no index file lists it' in e['error']])")" \
    "check --json: every pack the backup needs is named, as listed in no index file"
assert_eq "[]" "$(json_eval "$OUT_FILE" "[b for e in d['errors'] for b in e.get('backups', [])]")" \
    "check --json: no backup is named (its blobs are found through the packs' trailers)"
assert_exit 0 cb verify "$id_x"
# the next backup lists the packs in its own index file: whole again
backup_json "$TEST_TMP/x2.json" "$TEST_TMP/a"
assert_rc 0 "the next backup"
assert_exit 0 cb check

# --- a truncated pack ------------------------------------------------------------------
use_repo truncated-pack
backup_json "$TEST_TMP/t.json" "$TEST_TMP/a"
assert_rc 0 "backup into a fresh repository"
id_t=$BACKUP_ID
pack=$(largest_pack)
truncate -s $(($(stat -c %s "$pack") / 2)) "$pack"
assert_exit 4 cb check
assert_contains "$OUT$ERR" "$(basename "$pack")" "check names the truncated pack"
assert_contains "$OUT$ERR" "$id_t" "check names the affected backup"
assert_exit 4 cb verify "$id_t"
assert_contains "$OUT$ERR" "patient-scan.bin" "verify names the file in the truncated pack"
assert_exit 4 cb check --read-data

# --- a pack moved to another directory of data/ (a repository copied back by hand) --------
# reads look for it at data/<its first two hex digits>/: check said 'no errors found', and a
# new backup deduplicated against it and could not be restored
use_repo moved-pack
backup_json "$TEST_TMP/m.json" "$TEST_TMP/a"
id_m=$BACKUP_ID
pack=$(largest_pack)
mkdir -p "$REPO/data/zz"
mv "$pack" "$REPO/data/zz/"
assert_exit 4 cb check
assert_contains "$OUT$ERR" "pack in the wrong directory" "check finds the pack out of place"
assert_contains "$OUT$ERR" "$id_m" "and names the backup that needs it"
run cb --json backup files "$TEST_TMP/a" --full
assert_exit 0 cb verify "$(json_get "$OUT_FILE" '["id"]')"
assert_contains "$ERR" "is missing" "the open warns of the pack it cannot find"
mv "$REPO/data/zz/$(basename "$pack")" "$pack"
rmdir "$REPO/data/zz"
assert_exit 0 cb --quiet check --read-data

# --- a damaged verification record: check reports it (it ignored records/, so a backup a
# verification had found damaged was shown ok again, and check said 'no errors found') -----
use_repo bad-record
backup_json "$TEST_TMP/r.json" "$TEST_TMP/b"
assert_exit 0 cb --quiet verify "$BACKUP_ID"
rec=$(find "$REPO/records/verify" -type f ! -name '.*' | head -n 1)
assert_ne "" "$rec" "verify left a record"
cp "$rec" "$TEST_TMP/rec.saved"
flip_byte "$rec"
assert_exit 4 cb check
assert_contains "$OUT$ERR" "verify record cannot be read" "check reports the damaged record"
assert_contains "$OUT$ERR" "$(basename "$rec")" "and names it"
cp "$TEST_TMP/rec.saved" "$rec"
assert_exit 0 cb --quiet check

# --- data/ unreadable ------------------------------------------------------------------
# An open lists data/ while the key slot's KDF runs (src/repo/repo.c, data_listing): a listing
# that fails still fails the open, with its own message, and a wrong key still says so.
use_repo no-data
backup_json "$TEST_TMP/n.json" "$TEST_TMP/b"
assert_rc 0 "backup into a fresh repository"
mv "$REPO/data" "$TEST_TMP/data.saved"
printf 'not a directory\n' >"$REPO/data"
assert_exit 7 cb list
assert_contains "$ERR" "cannot list $REPO/data" "an open names data/ when it cannot list it"
BACKUP_ENCRYPTION_KEY=wrong-key-wrong-key-wrong-key-wrong-key assert_exit 5 cb list
assert_contains "$ERR" "wrong encryption key" "a wrong key is reported as such, data/ or not"
rm "$REPO/data"
mv "$TEST_TMP/data.saved" "$REPO/data"
assert_exit 0 cb check --read-data

# --- a damaged file whose name is not UTF-8 ---------------------------------------------
# Its error carries the name as pathB64 (JSON) and as `ls` shows it (\xNN, for a human), never
# base64 text under "path", which reads as a file of that name.
use_repo odd-name
mkdir -p "$TEST_TMP/odd"
odd_name=$'scan\xff.bin'
seeded_bytes 2M corruption/odd >"$TEST_TMP/odd/$odd_name"
backup_json "$TEST_TMP/odd.json" "$TEST_TMP/odd"
assert_rc 0 "backup of a file whose name is not UTF-8"
id_odd=$BACKUP_ID
pack=$(largest_pack)
run cb --json debug pack "$pack"
off=$(json_eval "$OUT_FILE" 'max(d["blobs"], key=lambda b: b["length"])["offset"] + max(d["blobs"], key=lambda b: b["length"])["length"] // 2')
flip_byte "$pack" "$off"
odd_b64=$(printf '%s' "$odd_name" | base64)
odd_errors() { # FILE EXPR-FOR-THE-ERRORS-LIST: each error's keys but "error", and pathB64
    json_eval "$1" "[(sorted(k for k in e if k != 'error'), e.get('pathB64')) for e in $2]"
}
run cb --json verify "$id_odd"
assert_rc 4 "verify --json of the damaged file with an odd name"
assert_eq "[[[\"pathB64\"], \"$odd_b64\"]]" "$(odd_errors "$OUT_FILE" 'd[0]["errors"]')" \
    "verify --json: the error's name is pathB64 (no base64 text as path)"
run cb verify "$id_odd"
assert_rc 4 "verify of the damaged file with an odd name"
assert_contains "$OUT" '"scan\xff.bin": ' "verify names the file as ls shows it"
run cb --json restore files "$id_odd" --target "$TEST_TMP/odd-r1"
assert_rc 4 "restore --json of the damaged file with an odd name"
assert_eq "[[[\"pathB64\"], \"$odd_b64\"]]" "$(odd_errors "$OUT_FILE" 'd["errors"]')" \
    "restore --json: the error's name is pathB64"
run cb restore files "$id_odd" --target "$TEST_TMP/odd-r2"
assert_rc 4 "restore of the damaged file with an odd name"
assert_contains "$ERR" 'error: "scan\xff.bin": ' "restore names the file as ls shows it"
assert_false "the damaged file is not restored" test -e "$TEST_TMP/odd-r2$TEST_TMP/odd/$odd_name"

test_done

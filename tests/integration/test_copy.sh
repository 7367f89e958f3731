#!/usr/bin/env bash
# caris-backup copy: backups of a local repository copied into an S3 repository (s3rver on
# loopback) made with init --copy-chunker-from; restored from S3 byte-exact; copying again
# sends nothing ("already there"); --latest and --all; a destination that does not share the
# chunking, a wrong or missing destination key, the same repository twice are clear errors;
# a database backup copied and restored from the copy; `upload ID` through
# BACKUP_CLOUD_REPOSITORY. What opening the destination found (a backup deleted from it) is said.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
source "$(dirname "$0")/s3lib.sh"
at_exit '_lib_on_exit; _pg_on_exit; _s3_on_exit'

s3_start bkt
export BACKUP_S3_RETRY_SECONDS=5
DST=s3:$S3_ENDPOINT/bkt/copy
CARIS_COPY_TO_KEY=$(head -c 33 /dev/urandom | base64)
export CARIS_COPY_TO_KEY
# commands on the destination: its own key
dcb() { BACKUP_ENCRYPTION_KEY=$CARIS_COPY_TO_KEY cb --repo "$DST" "$@"; }

init_repo
src=$TEST_TMP/src
make_tree "$src" || fail "make_tree failed"
backup_json "$TEST_TMP/b1.json" --full "$src"
assert_rc 3 "first backup (warnings for the socket and the device)"
id1=$BACKUP_ID

# --- refusals before anything is copied -------------------------------------------------
assert_exit 7 cb copy "$id1" --to "$DST"
assert_contains "$ERR" "init --copy-chunker-from $REPO" "a missing destination: the error says to create it sharing the chunking"
assert_exit 2 cb copy "$id1"
assert_contains "$ERR" "--to" "copy without --to is a usage error"
# credentials in the location are refused, and never shown
for loc in "s3:http://AKIDX:Loc-Secret-4711@${S3_ENDPOINT#*://}/bkt/x" "s3:http://AKIDX:Loc-Secret-4711@${S3_ENDPOINT#*://}" \
    "s3:http://AKIDX:ab/Loc-Secret-4711@${S3_ENDPOINT#*://}/bkt/x"; do
    run cb --json copy "$id1" --to "$loc"
    assert_rc 2 "a location with credentials is refused"
    assert_not_contains "$OUT$ERR" "Loc-Secret-4711" "the refusal does not show the credentials"
    BACKUP_CLOUD_REPOSITORY=$loc run cb upload "$id1"
    assert_not_contains "$OUT$ERR" "Loc-Secret-4711" "upload's refusal does not show them either"
done
# a destination with a chunking of its own: copy refuses, and says how to make one that works
PLAIN=s3:$S3_ENDPOINT/bkt/plain
run env BACKUP_ENCRYPTION_KEY="$CARIS_COPY_TO_KEY" "$CARIS_BIN" --quiet --repo "$PLAIN" init
assert_rc 0 "init of a destination with its own chunking"
assert_exit 2 cb copy "$id1" --to "$PLAIN"
assert_contains "$ERR" "does not deduplicate with the source" "copy refuses a destination that does not share the chunking"
assert_contains "$ERR" "--copy-chunker-from" "and names init --copy-chunker-from"
run dcb --json list
assert_eq 0 "$(BACKUP_ENCRYPTION_KEY=$CARIS_COPY_TO_KEY "$CARIS_BIN" --json --repo "$PLAIN" list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" \
    "the refused destination holds no backup"

# --- init --copy-chunker-from ------------------------------------------------------------
assert_exit 6 env -u CARIS_COPY_TO_KEY "$CARIS_BIN" --repo "$DST" init --copy-chunker-from "$REPO"
assert_contains "$ERR" "CARIS_COPY_TO_KEY" "init --copy-chunker-from without the destination's key names the variable"
assert_exit 0 cb --repo "$DST" init --copy-chunker-from "$REPO"
assert_contains "$OUT" "keep CARIS_COPY_TO_KEY somewhere safe" "init names the new repository's key, not the source's"
assert_false "the source's key does not open the new repository" \
    cb --repo "$DST" list
assert_exit 0 dcb list
# --if-missing: a repository that is there must share the source's chunking
assert_exit 0 cb --repo "$DST" init --if-missing --copy-chunker-from "$REPO"
assert_contains "$OUT" "exists" "init --if-missing of the copy destination that is there succeeds"
assert_exit 2 cb --repo "$PLAIN" init --if-missing --copy-chunker-from "$REPO"
assert_contains "$ERR" "does not share the chunking of $REPO" "init --if-missing --copy-chunker-from refuses a repository with a chunking of its own"
assert_exit 0 env BACKUP_ENCRYPTION_KEY="$CARIS_COPY_TO_KEY" "$CARIS_BIN" --repo "$PLAIN" init --if-missing

# --- copy, restore from S3 byte-exact ------------------------------------------------------
reqs0=$(s3_requests)
run cb --json copy "$id1" --to "$DST"
assert_rc 0 "copy local -> S3"
cp "$OUT_FILE" "$TEST_TMP/c1.json"
assert_eq "$id1" "$(json_get "$TEST_TMP/c1.json" '["backups"][0]["backupId"]')" "the backup copied"
assert_eq true "$(json_get "$TEST_TMP/c1.json" '["backups"][0]["copied"]')" "committed in the destination"
assert_eq true "$(json_get "$TEST_TMP/c1.json" '["backups"][0]["verified"]')" "verified in the destination"
blobs1=$(json_get "$TEST_TMP/c1.json" '["backups"][0]["blobs"]')
assert_eq "$blobs1" "$(json_get "$TEST_TMP/c1.json" '["blobsCopied"]')" "every blob sent to an empty destination"
assert_true "bytes were sent" test "$(json_get "$TEST_TMP/c1.json" '["bytesStored"]')" -gt 0
note "first copy: $blobs1 blobs, $(json_get "$TEST_TMP/c1.json" '["bytesStored"]') bytes stored, $(($(s3_requests) - reqs0)) requests"

run dcb --json list
assert_rc 0 "list the destination"
assert_eq "$id1" "$(json_get "$OUT_FILE" '[0]["id"]')" "the destination lists the backup under the same id"
run cb --json show "$id1"
cp "$OUT_FILE" "$TEST_TMP/show_src.json"
run dcb --json show "$id1"
cp "$OUT_FILE" "$TEST_TMP/show_dst.json"
same=$(python3 - "$TEST_TMP/show_src.json" "$TEST_TMP/show_dst.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for d in (a, b):
    for k in ("testRestores", "verifications"):
        d.pop(k, None)
print(a == b)
EOF
)
assert_eq True "$same" "the same summary in both repositories"

target=$TEST_TMP/restore
mkdir "$target"
assert_exit 0 dcb restore files "$id1" --target "$target"
tree_compare "$src" "$target$src" --skip-special
assert_exit 0 dcb check --read-data

# --- again: nothing sent -------------------------------------------------------------------
run cb --json copy "$id1" --to "$DST"
assert_rc 0 "copy of the same backup again"
cp "$OUT_FILE" "$TEST_TMP/c2.json"
assert_eq true "$(json_get "$TEST_TMP/c2.json" '["backups"][0]["alreadyThere"]')" "already there"
assert_eq 0 "$(json_get "$TEST_TMP/c2.json" '["blobsCopied"]')" "no blob sent again"
assert_eq 0 "$(json_get "$TEST_TMP/c2.json" '["bytesStored"]')" "no byte stored again"
run cb copy "$id1" --to "$DST"
assert_contains "$OUT" "already there" "the text output says already there"

# --- --latest: only the new blobs --------------------------------------------------------
printf 'a change\n' >>"$src/hello.txt"
backup_json "$TEST_TMP/b2.json" "$src"
id2=$BACKUP_ID
run cb --json copy --latest --to "$DST"
assert_rc 0 "copy --latest"
cp "$OUT_FILE" "$TEST_TMP/c3.json"
assert_eq "$id2" "$(json_get "$TEST_TMP/c3.json" '["backups"][0]["backupId"]')" "--latest copies the newest backup"
sent=$(json_get "$TEST_TMP/c3.json" '["blobsCopied"]')
assert_true "an incremental backup sends few blobs ($sent of $blobs1)" test "$sent" -gt 0 -a "$sent" -lt $((blobs1 / 4 + 3))

# --- --all: the ones there are skipped --------------------------------------------------
printf 'another\n' >"$src/new.txt"
backup_json "$TEST_TMP/b3.json" "$src"
id3=$BACKUP_ID
run cb --json copy --all --to "$DST"
assert_rc 0 "copy --all"
cp "$OUT_FILE" "$TEST_TMP/c4.json"
assert_eq "$id1 True,$id2 True,$id3 False" \
    "$(json_eval "$TEST_TMP/c4.json" '",".join(b["backupId"] + " " + str(b["alreadyThere"]) for b in d["backups"])')" \
    "--all: oldest first, the first two already there"
run dcb --json list
assert_eq 3 "$(json_eval "$OUT_FILE" 'len(d)')" "three backups in the destination"

# --- wrong keys, same repository ---------------------------------------------------------
CARIS_COPY_TO_KEY=$(head -c 33 /dev/urandom | base64) run cb copy "$id1" --to "$DST"
assert_rc 5 "a wrong destination key: exit 5"
assert_contains "$ERR" "CARIS_COPY_TO_KEY" "the hint names the variable"
assert_exit 6 cb copy "$id1" --to "$DST" --to-key-env NO_SUCH_VARIABLE_X
assert_contains "$ERR" "NO_SUCH_VARIABLE_X" "an unset --to-key-env variable is named"
# the key itself typed in the variable's place: refused, never echoed, never in the audit log
b64key=$(head -c 33 /dev/urandom | base64)
hexkey=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
assert_exit 2 cb copy "$id1" --to "$DST" --to-key-env "$b64key"
assert_contains "$ERR" "takes a variable's name" "a key in --to-key-env's place: refused, saying why"
assert_false "the key is not printed" grep -qF -- "$b64key" "$ERR_FILE"
assert_exit 2 cb copy "$id1" --to "$DST" "--to-key-env=$hexkey"
assert_false "a hex key (a valid shell name when it starts with a letter) is not printed" \
    grep -qF -- "$hexkey" "$ERR_FILE"
# a base32 key (upper case and digits: a shell name when it starts with a letter), unset as a
# variable: not repeated either (a long name that is set is shown, below)
b32key=K$(head -c 20 /dev/urandom | base32 | tr -d '=')
assert_exit 6 cb copy "$id1" --to "$DST" --to-key-env "$b32key"
assert_contains "$ERR" "--to-key-env names is not set" "an unset long upper-case name: not set, says so"
assert_false "a base32 key in --to-key-env's place is not printed" grep -qF -- "$b32key" "$ERR_FILE"
assert_exit 6 cb --json copy "$id1" --to "$DST" --to-key-env "$b32key"
assert_false "... nor in the JSON error" grep -qF -- "$b32key" "$OUT_FILE"
LONG_DESTINATION_KEY_VARIABLE_NAME_X=short run cb copy "$id1" --to "$DST" \
    --to-key-env LONG_DESTINATION_KEY_VARIABLE_NAME_X
assert_rc 6 "a long variable's name that is set: its value checked (too short)"
assert_contains "$ERR" "LONG_DESTINATION_KEY_VARIABLE_NAME_X is too short" "... and the name shown"
assert_false "no key is kept in the audit log" \
    grep -qE -- "$(printf '%s|%s|%s' "$b64key" "$hexkey" "$b32key" | sed 's/[+/=]/./g')" "$BACKUP_DIR/metadata/audit.log"
run cb audit
assert_contains "$OUT" '"--to-key-env","(redacted)"' "the audit log shows the operand redacted"
assert_contains "$OUT" '"--to-key-env=(redacted)"' "... in both spellings"
CARIS_COPY_TO_KEY=$BACKUP_ENCRYPTION_KEY run cb copy "$id1" --to "$REPO"
assert_rc 2 "the same repository as source and destination"
assert_contains "$ERR" "same repository" "and says so"
assert_not_contains "$(cat "$TEST_TMP"/.last.err)" "$CARIS_COPY_TO_KEY" "no key in the errors"

# --- upload ID = copy to BACKUP_CLOUD_REPOSITORY -----------------------------------------
backup_json "$TEST_TMP/b4.json" "$src"
id4=$BACKUP_ID
assert_exit 6 env -u BACKUP_CLOUD_REPOSITORY "$CARIS_BIN" upload "$id4"
assert_contains "$ERR" "BACKUP_CLOUD_REPOSITORY" "upload without a cloud repository says what to set"
# a location that cannot be one, read from the variable: the configuration's fault (6), not
# the command line's (2)
assert_exit 6 env BACKUP_CLOUD_REPOSITORY=s3:https://host.invalid/ "$CARIS_BIN" upload "$id4"
assert_contains "$ERR" "BACKUP_CLOUD_REPOSITORY: destination" "a bad cloud location names its variable"
BACKUP_CLOUD_REPOSITORY=$DST run cb --json upload "$id4"
assert_rc 0 "upload ID"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["verified"]')" "upload copies and verifies"

# --- the scheduled job copies each new backup once verified -------------------------------
# (src holds a socket and a device, skipped with a warning: the run completes with warnings,
# exit 3 as `backup files` of that tree; they lose no file's content, so retention still runs)
BACKUP_FILES_PATHS=$src BACKUP_CLOUD_REPOSITORY=$DST run cb --json run-now incremental
assert_rc 3 "run-now with BACKUP_CLOUD_REPOSITORY (warnings: a socket and a device skipped)"
assert_not_contains "$ERR" "retention: skipped" "skipped special files do not hold retention back"
assert_contains "$ERR" "warning: database: not backed up (POSTGRES_URL is not set)" \
    "the run says the database is left out (a POSTGRES_URL gone missing must not look like a quiet night)"
cp "$OUT_FILE" "$TEST_TMP/job.json"
assert_eq "backup verify copy" "$(json_eval "$TEST_TMP/job.json" '" ".join(s["step"] for s in d["steps"][:3])')" \
    "the job's steps: backup, verify, then copy"
assert_eq true "$(json_get "$TEST_TMP/job.json" '["steps"][2]["ok"]')" "the copy step succeeded"
jid=$(json_get "$TEST_TMP/job.json" '["steps"][0]["backupId"]')
run dcb --json list
assert_contains "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" "$jid" "the job's backup is in the cloud repository"
BACKUP_FILES_PATHS=$src BACKUP_CLOUD_REPOSITORY=s3:$S3_ENDPOINT/no-such-bucket/x run cb --json run-now incremental
assert_false "a copy step that fails fails the job" test "$RC" -eq 0
assert_eq false "$(json_eval "$OUT_FILE" 'str([s for s in d["steps"] if s["step"] == "copy"][0]["ok"]).lower()')" \
    "the copy step is reported failed"
# a wrong CARIS_COPY_TO_KEY: the copy step's error (and so its failure notice) names that
# variable; its hint said BACKUP_ENCRYPTION_KEY must be the repository's key
CARIS_COPY_TO_KEY=$(head -c 33 /dev/urandom | base64) BACKUP_FILES_PATHS=$src \
    BACKUP_CLOUD_REPOSITORY=$DST run cb --json run-now incremental
assert_false "a copy step with a wrong CARIS_COPY_TO_KEY fails the job" test "$RC" -eq 0
hint=$(json_eval "$OUT_FILE" '[s for s in d["steps"] if s["step"] == "copy"][0]["error"]["hint"]')
assert_contains "$hint" "CARIS_COPY_TO_KEY must hold the key of the destination repository" \
    "the copy step's hint names CARIS_COPY_TO_KEY"
assert_not_contains "$hint" "BACKUP_ENCRYPTION_KEY must be" "... and does not send the operator to change the local key"
# credentials in BACKUP_CLOUD_REPOSITORY: the job's copy step fails, and shows them nowhere
# (its error and JSON held the location whole; found by a review)
BACKUP_FILES_PATHS=$src BACKUP_CLOUD_REPOSITORY="s3:http://AKIDX:Job-Secret-4711@${S3_ENDPOINT#*://}/bkt/copy" \
    run cb --json run-now incremental
assert_false "a copy step to a location with credentials fails the job" test "$RC" -eq 0
assert_eq false "$(json_eval "$OUT_FILE" 'str([s for s in d["steps"] if s["step"] == "copy"][0]["ok"]).lower()')" \
    "the copy step is reported failed"
assert_not_contains "$OUT$ERR" "Job-Secret-4711" "neither its JSON nor its errors show the credentials"

# --- a copy that fails half-way leaves no backup listed in the destination ----------------
# The source's data pack is damaged: the copy stops at the damaged blob, after some blobs were
# sent, before the commit.
SRC2=$TEST_TMP/src2
DST2=$TEST_TMP/dst2
assert_exit 0 cb --quiet --repo "$SRC2" init
run cb --json --repo "$SRC2" backup files "$src"
id5=$(json_get "$OUT_FILE" '["id"]')
assert_exit 0 cb --quiet --repo "$DST2" init --copy-chunker-from "$SRC2"
data_pack=$(find "$SRC2/data" -type f ! -name '.*' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
flip_byte "$data_pack"
run cb --repo "$SRC2" copy "$id5" --to "$DST2"
assert_rc 4 "a copy from a damaged source fails (exit 4)"
assert_contains "$ERR" "$id5" "the error names the backup"
run env BACKUP_ENCRYPTION_KEY="$CARIS_COPY_TO_KEY" "$CARIS_BIN" --json --repo "$DST2" list
assert_eq 0 "$(json_eval "$OUT_FILE" 'len(d)')" "no backup listed in the destination after the failed copy"
assert_exit 0 env BACKUP_ENCRYPTION_KEY="$CARIS_COPY_TO_KEY" "$CARIS_BIN" --repo "$DST2" check

# --- --latest and --all with the newest backup damaged in the source: copied what can be, and
# the exit says what could not (exit 0 with an older backup as "latest"; found by a review) --
SRC3=$TEST_TMP/src3
DST3=$TEST_TMP/dst3
assert_exit 0 cb --quiet --repo "$SRC3" init
run cb --json --repo "$SRC3" backup files "$src"
id6=$(json_get "$OUT_FILE" '["id"]')
find "$SRC3/snapshots" -type f | LC_ALL=C sort >"$TEST_TMP/snaps-before"
echo newer >"$src/newer.txt"
run cb --json --repo "$SRC3" backup files "$src"
id7=$(json_get "$OUT_FILE" '["id"]')
rm -f "$src/newer.txt"
snap7=$(find "$SRC3/snapshots" -type f | LC_ALL=C sort | comm -13 "$TEST_TMP/snaps-before" -)
assert_eq 1 "$(printf '%s\n' "$snap7" | grep -c .)" "the newest backup's snapshot file is found"
flip_byte "$snap7"
assert_exit 0 cb --quiet --repo "$DST3" init --copy-chunker-from "$SRC3"
run cb --repo "$SRC3" copy --latest --to "$DST3"
assert_rc 4 "copy --latest with the newest backup damaged fails (exit 4)"
assert_contains "$ERR" "not copied: $id7" "the error names the damaged newest backup"
run env BACKUP_ENCRYPTION_KEY="$CARIS_COPY_TO_KEY" "$CARIS_BIN" --json --repo "$DST3" list
assert_eq "$id6" "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" "the older backup was copied all the same"
run cb --repo "$SRC3" copy --all --to "$DST3"
assert_rc 4 "copy --all with a damaged backup fails (exit 4)"
assert_contains "$ERR" "not copied: $id7" "and names it"

# --- a backup already there whose verification never passed is verified again ------------------
# (a copy whose verification failed, or that was killed between its commit and its verification,
# left it listed: a later copy said "already there" and exit 0). A local destination, its
# verification records removed and one of its packs damaged.
LDST=$TEST_TMP/local-dst
assert_exit 0 cb --quiet --repo "$LDST" init --copy-chunker-from "$REPO"
assert_exit 0 cb copy --latest --to "$LDST"
run cb copy --latest --to "$LDST"
assert_rc 0 "again: already there, verified before"
rm -rf "$LDST/records/verify"
pack=$(find "$LDST/data" -type f -size +1k | LC_ALL=C sort | head -n 1)
python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(600); b = f.read(1); f.seek(600); f.write(bytes([b[0] ^ 0xff]))' "$pack"
run cb --json copy --latest --to "$LDST"
assert_fails "a backup there but never verified is verified, and the damage found"
assert_contains "$ERR" "does not verify in the destination" "the copy says the backup there does not verify"
assert_contains "$(json_eval "$OUT_FILE" 'd["error"]["message"]')" "does not verify" \
    "--json: the copy's document carries the error"
assert_true "--json: the failed copy's document has the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" copy "$OUT_FILE"
# the destination's key slot damaged: the hint is about the destination's key, not ours
dslot=$(find "$LDST/keys" -type f | head -n 1)
cp "$dslot" "$TEST_TMP/dslot.orig"
python3 -c 'import json, sys; p = sys.argv[1]; d = json.load(open(p)); d["label"] += "x"; json.dump(d, open(p, "w"))' "$dslot"
run cb copy --latest --to "$LDST"
assert_rc 4 "the destination's key slot damaged: exit 4"
assert_contains "$ERR" "the destination's key comes from CARIS_COPY_TO_KEY" "the hint names the destination's key variable"
cp "$TEST_TMP/dslot.orig" "$dslot"

# --- a database backup --------------------------------------------------------------------
pg_start
psql_db "$CARIS_PG_DB" -f "$PG_FIXTURES/rich.sql" >/dev/null || fail "loading fixtures/rich.sql failed"
pg_sum "$CARIS_PG_DB" "$TEST_TMP/src.sum" || fail "dbsum of the source failed"
db_backup_json "$TEST_TMP/db.json" --full
assert_rc 0 "database backup"
dbid=$BACKUP_ID
run cb --json copy "$dbid" --to "$DST"
assert_rc 0 "copy of a database backup"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["verified"]')" "database backup verified in the destination"
BACKUP_ENCRYPTION_KEY=$CARIS_COPY_TO_KEY CARIS_RESTORE_TARGET_URL=$(pg_url rt_copy) \
    run cb --repo "$DST" restore database "$dbid" --create --verify
assert_rc 0 "restore of the database backup from the copy"
pg_sum rt_copy "$TEST_TMP/rt.sum"
assert_sum_equal "$TEST_TMP/src.sum" "$TEST_TMP/rt.sum" "the database restored from the copy equals the source"
assert_exit 0 dcb verify --all

# --- what opening the destination found is said: a backup deleted from it behind our back --------
# (copy and upload opened the destination and told nobody what its opening found: the copy off the
# machine losing a backup went unsaid, exit 0 and no word). One snapshot object removed from the
# bucket; copying another backup warns, naming the destination and the backup lost there.
gone=$(find "$S3_DIR/bkt/copy/snapshots" -name '*._S3rver_object' | sort | head -n 1)
rm -f "$gone" "$gone.md5" "${gone%._S3rver_object}._S3rver_metadata.json"
run cb copy "$dbid" --to "$DST"
assert_rc 0 "a copy into a destination that lost a backup"
gone_name=$(basename "${gone%._S3rver_object}")
assert_contains "$ERR" "warning: destination $DST: snapshots/$gone_name: backup " \
    "the destination's opening warning is shown, naming it and the snapshot"
assert_match "backup [a-z]+_[a-z]+_[0-9T:-]+ is in the state record but its snapshot is gone" "$ERR" \
    "... and the backup lost there"

# --- two copies of one backup at once: the one that finds it committed by the other ----------
# Copy B looks at the destination (the backup is not there) and holds; copy A copies the backup
# and holds before its verification; B, released, claims the backup, finds it there and
# verifies it: with the index it read when it started, it found A's blobs missing ("does not
# verify in the destination", exit 4, of a sound backup: audit M2). Two test hooks hold them.
echo "two copies" >"$src/two-copies.txt"
backup_json "$TEST_TMP/b-two.json" "$src"
two=$BACKUP_ID
hb=$TEST_TMP/hold-b ha=$TEST_TMP/hold-a
touch "$hb" "$ha"
CARIS_TEST_COPY_HOLD=$hb bg_start cb --json copy "$two" --to "$DST"
B_PID=$BG_PID B_OUT=$BG_OUT B_ERR=$BG_ERR
# shellcheck disable=SC2317 # called through wait_until
_held() { [[ -e $1.held ]]; }
wait_until 60 _held "$hb" || fail "copy B did not reach its hold" "$(_tail "$B_ERR")"
CARIS_TEST_COPY_VERIFY_HOLD=$ha bg_start cb --json copy "$two" --to "$DST"
A_PID=$BG_PID
wait_until 60 _held "$ha" || fail "copy A did not reach its hold" "$(_tail "$BG_ERR")"
rm -f "$hb"
wait "$B_PID"
assert_eq 0 "$?" "copy B, which found the backup committed by A, succeeds"
assert_eq "true true" "$(json_eval "$B_OUT" '"%s %s" % (str(d["backups"][0]["alreadyThere"]).lower(), str(d["backups"][0]["verified"]).lower())')" \
    "... already there, verified"
rm -f "$ha"
wait "$A_PID"
assert_eq 0 "$?" "copy A succeeds"

test_done

#!/usr/bin/env bash
# A physical base backup copied into another repository takes the WAL it needs with it: its
# WAL is not in its snapshot but in the source's WAL archive (records/wal), and copy moved the
# snapshot alone. The copy said "copied, verified", `check` on the destination passed, and the
# destination's restore laid the data directory out with a restore_command that found none of
# the WAL the server needs to become consistent: the off-site copy of the cluster could not be
# started (found by a review). Now the destination restores and starts alone, with the rows;
# copying again a backup copied before without its WAL brings the WAL along.
# shellcheck disable=SC2154 # data, envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"

pg_start
pitr_setup # repository, $data, $envf, $R; cb as the server's user
pitr_stop_started_at_exit
pitr_archive_on "$CARIS_BIN --quiet --env-file $envf wal push %p"
q() { psql_db "${2:-$CARIS_PG_DB}" -c "$1"; }
q "CREATE TABLE t (i int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 500)" || fail "table t"

run cb --json backup database --physical
assert_rc 0 "base backup"
B1=$(json_get "$OUT_FILE" '["id"]')
pitr_archive_all q

# verify reads the WAL the backup needs to become consistent, not its files alone (before
# 2026-12-07 it called valid a backup whose WAL was damaged or gone, and so did a copy's
# read-back in the destination)
run cb --json verify "$B1"
assert_rc 0 "verify of the base backup"
assert_cmp "$(json_get "$OUT_FILE" '[0]["walFiles"]')" -gt 0 "verify read the backup's WAL back too"
assert_cmp "$(json_get "$OUT_FILE" '[0]["walBytes"]')" -ge 1048576 "... whole segments"
assert_true "verify --json of a physical backup: the shape in docs/JSON.md" \
    python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" "verify" "$OUT_FILE"
# verify --all lists the WAL archive once, for every physical backup
run cb --json backup database --physical
assert_rc 0 "a second base backup"
run cb --json verify --all
assert_rc 0 "verify --all"
assert_eq "2 2" "$(json_eval "$OUT_FILE" '"%d %d" % (len(d), len([v for v in d if v.get("walFiles", 0) > 0 and v["valid"]]))')" \
    "verify --all read both base backups' WAL"

DST=$R/dst-repo
dkey=$(head -c 33 /dev/urandom | base64)
denv=$TEST_TMP/dst.env
(umask 077 && printf 'BACKUP_DIR=%s\nBACKUP_ENCRYPTION_KEY=%s\nBACKUP_REPOSITORY=%s\n' \
    "$BACKUP_DIR" "$dkey" "$DST" >"$denv")
[[ $(id -u) == 0 ]] && chown "$CARIS_PG_OS_USER:" "$denv"
export CARIS_COPY_TO_KEY=$dkey
dcb() { BACKUP_ENCRYPTION_KEY=$dkey cb --env-file "$denv" "$@"; }
assert_exit 0 cb --quiet --repo "$DST" init --copy-chunker-from "$REPO"
run cb --json copy "$B1" --to "$DST"
assert_rc 0 "copy of the base backup"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["verified"]')" "verified in the destination"

run dcb --json wal list
assert_cmp "$(json_eval "$OUT_FILE" 'len(d["files"])')" -gt 0 "the destination's archive has WAL"
assert_eq "$(json_eval "$OUT_FILE" 'd["recoveryWindow"]["baseBackups"]')" 1 \
    "... the WAL of its base backup (a recovery window)"
assert_eq "$(json_eval "$OUT_FILE" 'len(d["gaps"])')" 0 "and no gap"
run dcb check
assert_rc 0 "check of the destination"

# the destination lost its packs: copying again sends the WAL's data too (a WAL record there
# was taken for its data: found by its name, its chunks were never sent again, and the copy
# said "already there, verified" while the destination could not replay it)
rm -rf "$DST"/data/*
run cb --json copy "$B1" --to "$DST"
assert_rc 0 "copy again after the destination lost its packs"
assert_eq "True True" "$(json_eval "$OUT_FILE" '"%s %s" % (d["backups"][0]["alreadyThere"], d["backups"][0]["verified"])')" \
    "already there, verified again"
# (the index still lists the packs that went: prune forgets them)
assert_exit 0 dcb --quiet prune
run dcb check --read-data
assert_rc 0 "check --read-data of the destination: every blob its WAL records name is there" "$(_last_ctx)"

# a backup copied before without its WAL: copying it again brings the WAL, not "already there"
# alone
rm -rf "$DST/records/wal"
run cb --json copy "$B1" --to "$DST"
assert_rc 0 "copy of the base backup again"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["alreadyThere"]')" "the backup is already there"
run dcb --json wal list
assert_cmp "$(json_eval "$OUT_FILE" 'len(d["files"])')" -gt 0 \
    "the WAL it lacked is in the destination's archive again"
PORT=$(free_port)
STARTED+=("$R/dst")
run dcb --json restore database --physical --pgdata "$R/dst" "$B1" --start \
    --port "$PORT" --wait 60
assert_rc 0 "the copy restores and starts from the destination alone"
n=$("$CARIS_PG_BIN/psql" -X -q -At -h "$R/dst" -p "$PORT" -U "$CARIS_PG_USER" -d "$CARIS_PG_DB" \
    -c "SELECT count(*) FROM t" </dev/null 2>&1)
assert_eq 500 "$n" "the server started on the copy has the rows"

# verify, and so a copy's read-back in the destination, reads the WAL a backup needs: a WAL
# blob damaged in the destination fails it, and the next copy sends that blob again. The
# backup goes first without its WAL (the source's archive moved aside), so that the WAL's
# blobs then sit in packs of their own.
DST3=$R/dst3-repo
d3() { BACKUP_ENCRYPTION_KEY=$dkey cb --repo "$DST3" "$@"; }
assert_exit 0 cb --quiet --repo "$DST3" init --copy-chunker-from "$REPO"
mv "$REPO/records/wal" "$REPO/records/wal.aside"
run cb --json copy "$B1" --to "$DST3"
assert_rc 4 "copy without the WAL: exit 4"
assert_eq "True False" "$(json_eval "$OUT_FILE" '"%s %s" % (d["backups"][0]["walMissing"], d["backups"][0]["verified"])')" \
    "... walMissing, not verified"
assert_contains "$(json_get "$OUT_FILE" '["error"]["message"]')" "lacks WAL they need" \
    "... and the error says why (not \"does not verify in the destination\")"
mv "$REPO/records/wal.aside" "$REPO/records/wal"
find "$DST3/data" -mindepth 2 -type f ! -name '.*' | sort >"$TEST_TMP/base-packs"
run cb --json copy "$B1" --to "$DST3"
assert_rc 0 "copy again: its WAL goes along" "$(_last_ctx)"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["verified"]')" "... verified"
wal_pack=$(find "$DST3/data" -mindepth 2 -type f ! -name '.*' | sort | comm -13 "$TEST_TMP/base-packs" - | head -n 1)
assert_ne "" "$wal_pack" "a pack of WAL blobs in the destination"
run d3 --json debug pack "$wal_pack"
assert_rc 0 "debug pack of the WAL pack"
# its largest blob: a chunk of the segment (the backup label and .history files are small)
flip_byte "$wal_pack" "$(json_eval "$OUT_FILE" '(lambda b: b["offset"] + b["length"] // 2)(max(d["blobs"], key=lambda b: b["size"]))')"
run d3 --json verify "$B1"
assert_rc 4 "verify in the destination: a WAL blob the backup needs is damaged (exit 4)"
assert_contains "$(json_eval "$OUT_FILE" '[e["path"] for e in d[0]["errors"]]')" "WAL 0000" \
    "the errors name the WAL file"
assert_contains "$(json_eval "$OUT_FILE" 'd[0]["errors"]')" "authentication failed" "... and the damage"
# check names the backup too: the damaged WAL file's error lists the base backups that need it
# (before 2026-12-07 it named the WAL file alone, and `list` kept the backup "ok")
run d3 --json check --read-data
assert_rc 4 "check --read-data of the destination: the damaged WAL file"
assert_eq "[[\"$B1\"]]" "$(json_eval "$OUT_FILE" '[e["backups"] for e in d["errors"] if e["object"].startswith("records/wal")]')" \
    "... its error names the base backup that needs it"
run cb --json copy "$B1" --to "$DST3"
assert_rc 0 "the next copy sends the damaged WAL blob again" "$(_last_ctx)"
assert_eq true "$(json_get "$OUT_FILE" '["backups"][0]["verified"]')" "... and verifies the backup"

# a WAL record that cannot be read makes `wal get` serve nothing (it might be the file asked
# for): verify says the backup cannot be restored while it is there, though every file it
# needs reads back
rec=$(find "$REPO/records/wal" -type f | sort | head -n 1)
flip_byte "$rec"
run cb --json verify "$B1"
assert_rc 4 "verify while a WAL record cannot be read: exit 4"
assert_contains "$(json_eval "$OUT_FILE" 'd[0]["errors"]')" "record(s) of the WAL archive cannot be read" \
    "... and says why"
flip_byte "$rec"
run cb verify "$B1"
assert_rc 0 "verify once the record reads again"

# a source whose archive lacks the backup's WAL: the copy is made as it is, and fails (exit 4,
# not verified): it said "copied, verified", exit 0, with a warning on stderr alone (audit M1)
DST2=$R/dst2-repo
assert_exit 0 cb --quiet --repo "$DST2" init --copy-chunker-from "$REPO"
rm -rf "$REPO/records/wal"
run cb --json copy "$B1" --to "$DST2"
assert_rc 4 "copy of a base backup whose WAL the source lacks: exit 4"
assert_eq "True False True" "$(json_eval "$OUT_FILE" '"%s %s %s" % (d["backups"][0]["copied"], d["backups"][0]["verified"], d["backups"][0]["walMissing"])')" \
    "copied, not verified, walMissing"
assert_contains "$(json_get "$OUT_FILE" '["error"]["message"]')" "lacks WAL they need, so neither copy can be restored: $B1" \
    "the error names the backup and says why"
run cb --json verify "$B1"
assert_rc 4 "verify of a backup whose WAL is gone: exit 4"
assert_contains "$(json_eval "$OUT_FILE" 'd[0]["errors"]')" "not in the WAL archive" \
    "the errors say which WAL is not in the archive"
run cb verify "$B1"
assert_rc 4 "verify (text) of a backup whose WAL is gone: exit 4"
assert_match '"WAL 00000001[0-9A-F]{16}": not in the WAL archive' "$OUT" \
    "the text names the WAL file and says why"

test_done

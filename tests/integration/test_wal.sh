#!/usr/bin/env bash
# The WAL archive without a server: `wal push` / `wal get` round trip of segments, .partial,
# .history and .backup files (byte for byte), an identical re-push succeeds and writes
# nothing, a different re-push fails (exit 4) and keeps the archived file, `wal get` of a
# missing file exits 1 without a word and creates nothing, names that are not WAL names are
# refused (exit 2), a push killed before its record archived nothing and its retry does,
# identical content is stored once (dedup), prune keeps archived WAL, and a
# damaged pack makes `wal get` fail (exit 4) without writing DEST, and `check` name the WAL
# files it cannot serve.
source "$(dirname "$0")/lib.sh"

# seg FILE SEED [SIZE]: SIZE (default 16 MiB) bytes, the same for the same SEED
seg() {
    python3 - "$1" "$2" "${3:-16777216}" <<'PY'
import random, sys
r = random.Random(int(sys.argv[2]))
with open(sys.argv[1], "wb") as f:
    f.write(r.randbytes(int(sys.argv[3])))
PY
}
repo_bytes() { du -sb "$REPO" | cut -f1; }

init_repo
mkdir -p "$TEST_TMP/wal" "$TEST_TMP/out"
S1=000000010000000000000001
S2=000000010000000000000002
seg "$TEST_TMP/wal/$S1" 1
seg "$TEST_TMP/wal/$S2" 2
printf '1\t0/3000000\tno recovery target specified\n' >"$TEST_TMP/wal/00000002.history"
seg "$TEST_TMP/wal/$S2.partial" 3
printf 'START WAL LOCATION: 0/2000028 (file %s)\n' "$S2" >"$TEST_TMP/wal/$S2.00000028.backup"

# --- push and get ------------------------------------------------------------------------
for f in "$S1" "$S2" 00000002.history "$S2.partial" "$S2.00000028.backup"; do
    assert_exit 0 cb --quiet wal push "$TEST_TMP/wal/$f"
    assert_eq "" "$ERR" "wal push $f: nothing on stderr with --quiet"
done
for f in "$S1" "$S2" 00000002.history "$S2.partial" "$S2.00000028.backup"; do
    assert_exit 0 cb wal get "$f" "$TEST_TMP/out/$f"
    assert_true "wal get $f: the same bytes" cmp "$TEST_TMP/wal/$f" "$TEST_TMP/out/$f"
done
assert_eq "" "$(find "$TEST_TMP/out" -name '*.caris-tmp*')" "wal get leaves no temporary file"
# relative paths, as PostgreSQL passes them (%p is relative to the data directory)
(cd "$TEST_TMP/out" && "$CARIS_BIN" wal get "$S1" RECOVERYXLOG)
assert_true "wal get to a relative DEST" cmp "$TEST_TMP/wal/$S1" "$TEST_TMP/out/RECOVERYXLOG"

# --- a push killed after its data, before its record: not archived; the retry archives it ---
S4=000000010000000000000004
seg "$TEST_TMP/wal/$S4" 4
CARIS_TEST_WAL_PUSH_CRASH=1 "$CARIS_BIN" --quiet wal push "$TEST_TMP/wal/$S4" 2>/dev/null
assert_eq 137 "$?" "wal push killed before its record (test hook)"
assert_exit 1 cb wal get "$S4" "$TEST_TMP/out/$S4"
assert_false "a killed push archived nothing" test -e "$TEST_TMP/out/$S4"
assert_exit 0 cb --quiet wal push "$TEST_TMP/wal/$S4"
assert_exit 0 cb wal get "$S4" "$TEST_TMP/out/$S4"
assert_true "the retried push archived the segment" cmp "$TEST_TMP/wal/$S4" "$TEST_TMP/out/$S4"
assert_exit 0 cb --quiet check
rm -f "$TEST_TMP/wal/$S4"

# --- list --------------------------------------------------------------------------------
assert_exit 0 cb --json wal list
assert_eq 6 "$(json_eval "$OUT_FILE" 'len(d["files"])')" "wal list: six files"
assert_eq "$S1 $S2 $S2.00000028.backup $S2.partial $S4 00000002.history" \
    "$(json_eval "$OUT_FILE" '" ".join(sorted(f["name"] for f in d["files"]))')" "wal list: the names"
assert_eq "0/1000000" "$(json_eval "$OUT_FILE" "[f['startLsn'] for f in d['files'] if f['name'] == '$S1'][0]")" \
    "wal list: start LSN of segment 1 (16 MiB segments)"
assert_eq "history" "$(json_eval "$OUT_FILE" "[f['kind'] for f in d['files'] if f['name'] == '00000002.history'][0]")" \
    "wal list: kind of a .history file"
assert_eq "$(sha256sum <"$TEST_TMP/wal/$S2" | cut -d' ' -f1)" \
    "$(json_eval "$OUT_FILE" "[f['sha256'] for f in d['files'] if f['name'] == '$S2'][0]")" \
    "wal list: SHA-256 of segment 2"

# --- re-push: identical succeeds and writes nothing; different fails, archive unchanged ---
before=$(repo_bytes)
assert_exit 0 cb --json wal push "$TEST_TMP/wal/$S1"
assert_eq true "$(json_eval "$OUT_FILE" 'd["alreadyArchived"]')" "identical re-push: already_archived"
assert_eq "$before" "$(repo_bytes)" "identical re-push writes nothing"
mkdir -p "$TEST_TMP/other"
seg "$TEST_TMP/other/$S1" 99
assert_exit 4 cb wal push "$TEST_TMP/other/$S1"
assert_contains "$ERR" "already archived with different content" "different re-push: said so"
assert_exit 0 cb wal get "$S1" "$TEST_TMP/out/again"
assert_true "after a refused re-push the archived file is unchanged" cmp "$TEST_TMP/wal/$S1" "$TEST_TMP/out/again"

# --- two pushes of different content under one name at once: never both succeed ----------
# (both used to exit 0, and the archive held two versions that wal get refused). In a
# repository of their own: whether a race leaves both versions is chance, and check and wal
# list name such a name (below), which the checks of $REPO further down must not see.
RACE=$TEST_TMP/race-repo
assert_exit 0 cb --quiet --repo "$RACE" init
for n in 5 6 7; do
    name=00000001000000000000000$n
    mkdir -p "$TEST_TMP/race-a" "$TEST_TMP/race-b"
    seg "$TEST_TMP/race-a/$name" $((n * 10))
    seg "$TEST_TMP/race-b/$name" $((n * 10 + 1))
    "$CARIS_BIN" --quiet --repo "$RACE" wal push --no-daemon "$TEST_TMP/race-a/$name" 2>/dev/null &
    a=$!
    "$CARIS_BIN" --quiet --repo "$RACE" wal push --no-daemon "$TEST_TMP/race-b/$name" 2>/dev/null &
    b=$!
    wait "$a"
    ra=$?
    wait "$b"
    rb=$?
    if ((ra == 0 && rb == 0)); then
        fail "two different versions of $name both archived without an error"
    else
        pass "two different versions of $name at once: at least one push failed ($ra, $rb)"
    fi
done
# the race made certain (the later push looked before the earlier one's record existed): the
# later push fails, both versions stay, and wal get, wal list and check all say so (check and
# wal list said nothing: the first sign was a recovery that stopped there)
CONF=$TEST_TMP/conflict-repo
CN=000000010000000000000008
seg "$TEST_TMP/race-a/$CN" 80
seg "$TEST_TMP/race-b/$CN" 81
assert_exit 0 cb --quiet --repo "$CONF" init
assert_exit 0 cb --quiet --repo "$CONF" wal push --no-daemon "$TEST_TMP/race-a/$CN"
assert_exit 4 env CARIS_TEST_WAL_PUSH_RACE=1 "$CARIS_BIN" --quiet --repo "$CONF" wal push --no-daemon "$TEST_TMP/race-b/$CN"
assert_contains "$ERR" "archived at the same time by another push" "the later of two racing pushes fails"
assert_exit 255 cb --repo "$CONF" wal get --no-daemon "$CN" "$TEST_TMP/out/conflict"
assert_contains "$ERR" "two different versions of $CN" "wal get refuses a name with two versions"
assert_contains "$ERR" "wal list" "and says where to see them"
assert_false "nothing written for it" test -e "$TEST_TMP/out/conflict"
assert_exit 4 cb --repo "$CONF" wal list
assert_contains "$ERR" "WAL file $CN is archived 2 times with different content" "wal list names it"
run cb --json --repo "$CONF" wal list
assert_rc 4 "wal list --json with two versions of a name"
assert_eq "$CN 2" "$(json_eval "$OUT_FILE" '"%s %d" % (d["conflicts"][0]["name"], len(d["conflicts"][0]["sha256"]))')" \
    "wal list --json: conflicts"
assert_exit 4 cb --repo "$CONF" check
assert_contains "$OUT$ERR" "WAL $CN" "check names it"
assert_contains "$OUT$ERR" "archived 2 times with different content" "and says what is wrong"

# --- missing files and bad names ---------------------------------------------------------
assert_exit 1 cb wal get 000000010000000000000009 "$TEST_TMP/out/missing"
assert_eq "" "$ERR" "wal get of a missing file: nothing on stderr"
assert_false "wal get of a missing file creates nothing" test -e "$TEST_TMP/out/missing"
assert_exit 1 cb wal get 00000003.history "$TEST_TMP/out/missing"
assert_exit 255 cb wal get ../etc/passwd "$TEST_TMP/out/x"
# --json: the error's exitCode is the status the process exits with (it said 2: usage)
assert_exit 255 cb --json wal get ../etc/passwd "$TEST_TMP/out/x"
assert_eq "usage 255" "$(json_eval "$OUT_FILE" 'd["error"]["code"] + " " + str(d["error"]["exitCode"])')" \
    "wal get --json: the error's exitCode is the 255 it exits with"
assert_exit 255 cb --json wal get
assert_eq 255 "$(json_eval "$OUT_FILE" 'd["error"]["exitCode"]')" "wal get --json, a usage error: exitCode 255"
# every failure but "not in the archive" is fatal to the recovery (255): a wrong key, a missing
# repository or env file, a usage error, DEST's directory missing (they exited 5, 7, 6, 2 and
# a silent 1, which PostgreSQL takes for the end of the archive, and promotes)
printf 'BACKUP_DIR=%s\nBACKUP_ENCRYPTION_KEY=wrong-key-for-this-repository-0123456789\n' "$BACKUP_DIR" >"$TEST_TMP/wrong.env"
printf 'BACKUP_DIR=%s\nBACKUP_ENCRYPTION_KEY=%s\n' "$TEST_TMP/no-such-dir" "$BACKUP_ENCRYPTION_KEY" >"$TEST_TMP/nodir.env"
chmod 600 "$TEST_TMP/wrong.env" "$TEST_TMP/nodir.env"
for args in "--env-file $TEST_TMP/wrong.env wal get $S1 $TEST_TMP/out/k" "--env-file $TEST_TMP/nodir.env wal get $S1 $TEST_TMP/out/k" \
    "--env-file $TEST_TMP/no-such.env wal get $S1 $TEST_TMP/out/k" "wal get $S1" "wal get --bogus $S1 $TEST_TMP/out/k" \
    "wal get $S1 $TEST_TMP/no-such-dir/RECOVERYXLOG" "wal get --no-daemon $S1 $TEST_TMP/no-such-dir/RECOVERYXLOG"; do
    # shellcheck disable=SC2086 # word splitting of $args is the point
    run env -u BACKUP_ENCRYPTION_KEY -u BACKUP_DIR "$CARIS_BIN" $args
    [[ $args == --env-file* ]] || run "$CARIS_BIN" $args
    assert_rc 255 "wal get fails fatally: ${args//$TEST_TMP\//}"
done
assert_false "no DEST was written by the failed gets" test -e "$TEST_TMP/out/k"
cp "$TEST_TMP/wal/$S1" "$TEST_TMP/wal/notawalfile"
assert_exit 2 cb wal push "$TEST_TMP/wal/notawalfile"
assert_contains "$ERR" "not a WAL file name" "a file that is not WAL is refused"
assert_exit 2 cb wal push "$TEST_TMP/wal/000000010000000000000001x"
assert_exit 7 cb wal push "$TEST_TMP/wal/000000010000000000000007"
head -c 5000000 "$TEST_TMP/wal/$S1" >"$TEST_TMP/other/000000010000000000000008"
assert_exit 2 cb wal push "$TEST_TMP/other/000000010000000000000008"
assert_contains "$ERR" "not a segment size" "a torn segment is refused"
# a segment number past the last of a log file (0xFF for 16 MiB segments): not a name
# PostgreSQL writes, and taken for segment 0 of the next log file (gaps, retention)
seg "$TEST_TMP/other/000000010000000000000100" 100
assert_exit 2 cb wal push "$TEST_TMP/other/000000010000000000000100"
assert_contains "$ERR" "segment number 00000100 is past the last of a log file of 16777216-byte segments (000000FF)" \
    "a segment number past a log file's last is refused"
assert_exit 1 cb wal get 000000010000000000000008 "$TEST_TMP/out/torn"
# content that is not the segment its name says: refused (archived, it ended a recovery there
# and the restore promoted with exit 0, everything archived after it lost)
# hdr FILE PAGEADDR TLI SEGSIZE: a segment of SEGSIZE bytes whose first page has PostgreSQL
# 15's long header (magic 0xD110, XLP_LONG_HEADER) with that page address and timeline
hdr() {
    python3 - "$@" <<'PY'
import struct, sys
path, addr, tli, size = sys.argv[1], int(sys.argv[2], 16), int(sys.argv[3]), int(sys.argv[4])
h = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, tli, addr, 0, 7, size, 8192)
with open(path, "wb") as f:
    f.write(h + b"\x01" * (size - len(h)))
PY
}
head -c 16777216 /dev/zero >"$TEST_TMP/other/000000010000000000000009"
assert_exit 2 cb wal push "$TEST_TMP/other/000000010000000000000009"
assert_contains "$ERR" "begins with zeros: it was never written" "a segment that was never written is refused"
hdr "$TEST_TMP/other/00000001000000000000000A" 0x5000000 1 16777216 # segment 5's, renamed
assert_exit 2 cb wal push "$TEST_TMP/other/00000001000000000000000A"
assert_contains "$ERR" "holds the WAL of 0/5000000, not of 0/A000000 that its name says" \
    "a recycled segment (another segment's WAL under the name) is refused"
hdr "$TEST_TMP/other/00000001000000000000000B" 0xB000000 2 16777216
assert_exit 2 cb wal push "$TEST_TMP/other/00000001000000000000000B"
assert_contains "$ERR" "timeline 2, segment size 16777216; its name: timeline 1" "a later timeline's segment under an earlier one's name is refused"
hdr "$TEST_TMP/other/00000002000000000000000C" 0xC000000 1 16777216 # copied at a switch
assert_exit 0 cb --quiet wal push "$TEST_TMP/other/00000002000000000000000C"
for n in 000000010000000000000009 00000001000000000000000A 00000001000000000000000B; do
    assert_exit 1 cb wal get "$n" "$TEST_TMP/out/refused"
done
printf 'garbage\n' >"$TEST_TMP/other/00000005.history"
assert_exit 2 cb wal push "$TEST_TMP/other/00000005.history"
assert_contains "$ERR" "is not a timeline history file" "a .history file that is not one is refused"
assert_exit 0 cb --quiet wal list # the archive is not marked damaged by it
assert_exit 6 cb wal receive
assert_contains "$ERR" "POSTGRES_URL not set" "wal receive without a server to stream from says so (streaming: test_wal_receive.sh)"
# (physical backups and PITR: test_pitr.sh)
assert_exit 6 cb backup database --physical --incremental
assert_contains "$ERR" "POSTGRES_URL not set" "backup database --physical --incremental without a server says so (incrementals: test_phys_incr.sh)"
assert_exit 2 cb restore database --physical --pgdata "$TEST_TMP/pgdata"
assert_contains "$ERR" "--env-file" "restore database --physical without --env-file: restore_command needs it"
assert_false "restore database --physical wrote nothing" test -e "$TEST_TMP/pgdata"

# --- wal get --strict: a segment from before the first archived one of its timeline is no end --
# (the archive pruned past a running recovery, a backup forgotten: exit 1 ended the recovery
# there, and the server was promoted without the WAL after it, without a word; audit L1). The
# restore_command restore --physical writes uses --strict; a standby's must not (on exit 1 it
# reads pg_wal or streams), so without it the answer stays exit 1.
seg "$TEST_TMP/wal/000000030000000000000006" 7
assert_exit 0 cb --quiet wal push "$TEST_TMP/wal/000000030000000000000006"
for via in "" --no-daemon; do
    assert_exit 255 cb wal get --strict $via 000000030000000000000005 "$TEST_TMP/out/pruned"
    assert_contains "$ERR" "000000030000000000000005 is not in the archive, whose first segment of timeline 3 is 000000030000000000000006" \
        "wal get --strict $via of a segment before the archive's first fails loudly (PostgreSQL stops the recovery)"
    assert_false "... and writes nothing" test -e "$TEST_TMP/out/pruned"
done
assert_exit 1 cb wal get 000000030000000000000005 "$TEST_TMP/out/pruned"
assert_eq "" "$ERR" "without --strict (a standby's restore_command): exit 1, in silence"
# a segment of a newer timeline from before it began: PostgreSQL before 15 asks the newest
# timeline first, and then the older one, which has it
assert_exit 1 cb wal get --strict 000000030000000000000002 "$TEST_TMP/out/tl3"
assert_eq "" "$ERR" "a segment from before its timeline began (archived on timeline 1): exit 1, in silence"
# a gap between archived segments (PostgreSQL reads past a recovery target before it; a
# restore that needs it is refused: test_pitr_gap.sh), and the end of a timeline: exit 1
assert_exit 1 cb wal get --strict 000000010000000000000003 "$TEST_TMP/out/gap"
assert_exit 1 cb wal get --strict 000000030000000000000007 "$TEST_TMP/out/tl3"
assert_eq "" "$ERR" "past the last segment of a timeline: exit 1, the end of the archive"

# --- dedup: a segment mostly like another stores the difference ---------------------------
python3 - "$TEST_TMP/wal/$S1" "$TEST_TMP/wal/000000010000000000000003" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[8 << 20] ^= 1  # one byte changed in the middle
open(sys.argv[2], "wb").write(b)
PY
before=$(repo_bytes)
assert_exit 0 cb --quiet wal push "$TEST_TMP/wal/000000010000000000000003"
added=$(($(repo_bytes) - before))
note "a segment differing from an archived one by one byte added $added bytes"
assert_cmp "$added" -lt 4194304 "a nearly identical segment adds far less than 16 MiB"

# --- prune keeps archived WAL --------------------------------------------------------------
assert_exit 0 cb --quiet prune
assert_exit 0 cb wal get "$S2" "$TEST_TMP/out/after-prune"
assert_true "prune keeps archived WAL" cmp "$TEST_TMP/wal/$S2" "$TEST_TMP/out/after-prune"
assert_exit 0 cb --quiet check --read-data

# --- a damaged WAL record: what the archive holds is unknown, so get and prune refuse -------
rec=$(find "$REPO/records/wal" -type f ! -name '.*' | sort | head -n 1)
cp "$rec" "$TEST_TMP/rec.bak"
flip_byte "$rec"
assert_exit 255 cb wal get "$S2" "$TEST_TMP/out/rec-damaged"
assert_contains "$ERR" "cannot be read" "wal get names the unreadable record"
assert_false "no file written when a record is unreadable" test -e "$TEST_TMP/out/rec-damaged"
assert_exit 4 cb --quiet prune
assert_contains "$ERR" "refusing to prune" "prune refuses while a WAL record cannot be read"
cp "$TEST_TMP/rec.bak" "$rec"
assert_exit 0 cb wal get "$S2" "$TEST_TMP/out/rec-repaired"

# --- damage: wal get never hands over a bad file --------------------------------------------
for p in $(list_packs); do flip_byte "$p"; done
assert_exit 255 cb wal get "$S2" "$TEST_TMP/out/damaged"
assert_false "a damaged segment is not written to DEST" test -e "$TEST_TMP/out/damaged"
assert_eq "" "$(find "$TEST_TMP/out" -name '*.caris-tmp*')" "a failed wal get leaves no temporary file"
# check names the WAL files it cannot serve (it walked only the backups' references, and
# passed an archive whose segments were gone along with their index entries)
run cb check --read-data
assert_rc 4 "check --read-data with every pack damaged: exit 4"
assert_contains "$OUT$ERR" "WAL file $S2 needs" "check names a WAL file that wal get cannot serve"

# --- wal receive names the variable its URL came from --------------------------------------
# BACKUP_PG_REPLICATION_URL takes precedence over POSTGRES_URL: an error in it must name it
# (it used to say POSTGRES_URL, sending the operator to a setting that was right)
run env BACKUP_PG_REPLICATION_URL='postgresql://u:secretpw@127.0.0.1:1/db?nosuchoption=1' \
    POSTGRES_URL='postgresql://u@127.0.0.1:1/db' "$CARIS_BIN" wal receive
assert_rc 6 "wal receive with a malformed BACKUP_PG_REPLICATION_URL: a configuration error"
assert_contains "$ERR" "BACKUP_PG_REPLICATION_URL" "the error names BACKUP_PG_REPLICATION_URL"
assert_not_contains "$ERR" "POSTGRES_URL" "and not POSTGRES_URL, which is right"
assert_not_contains "$ERR" "secretpw" "nor shows the password"
run env -u BACKUP_PG_REPLICATION_URL POSTGRES_URL='postgresql://u:secretpw@127.0.0.1:1/db?nosuchoption=1' \
    "$CARIS_BIN" wal receive
assert_contains "$ERR" "POSTGRES_URL" "without BACKUP_PG_REPLICATION_URL the error names POSTGRES_URL"

test_done

#!/usr/bin/env bash
# The WAL archive's range per timeline, gaps and WAL retention, on generated 1 MiB segments:
# `wal list --json` shows each timeline's first and last segment and a deliberately missing
# segment as a gap; `check` reports it (a warning while no base backup depends on it, an
# error naming the base backup whose recovery it cuts short); `list --json` carries the same
# under "wal"; prune keeps all WAL without a physical base backup, and with one (the test hook
# CARIS_TEST_WAL_BASES, until physical base backups exist) removes exactly the segments that
# end before its start, its data with them, and keeps the .history files.
source "$(dirname "$0")/lib.sh"

seg() {
    python3 - "$1" "$2" "${3:-1048576}" <<'PY'
import random, sys
r = random.Random(int(sys.argv[2]))
with open(sys.argv[1], "wb") as f:
    f.write(r.randbytes(int(sys.argv[3])))
PY
}
names() { json_eval "$OUT_FILE" '" ".join(sorted(f["name"] for f in d["files"]))'; }

init_repo
mkdir -p "$TEST_TMP/pg_wal" "$TEST_TMP/out"
for i in 1 2 3 5; do seg "$TEST_TMP/pg_wal/00000001000000000000000$i" "$i"; done
for i in 6 7; do seg "$TEST_TMP/pg_wal/00000002000000000000000$i" "$((i + 20))"; done
printf '1\t0/600010\tno recovery target specified\n' >"$TEST_TMP/pg_wal/00000002.history"
for f in "$TEST_TMP"/pg_wal/*; do
    assert_exit 0 cb --quiet wal push --no-daemon "$f"
done

# --- ranges and the gap ------------------------------------------------------------------------
assert_exit 0 cb --json wal list
assert_eq 1048576 "$(json_get "$OUT_FILE" '["segmentSize"]')" "wal list: the segment size"
assert_eq "1 000000010000000000000001 000000010000000000000005 4" \
    "$(json_eval "$OUT_FILE" '"%s %s %s %s" % tuple(d["timelines"][0][k] for k in ("timeline", "first", "last", "segments"))')" \
    "wal list: timeline 1 from segment 1 to 5, four segments"
assert_eq "2 1 0/600010 000000020000000000000006 000000020000000000000007" \
    "$(json_eval "$OUT_FILE" '"%s %s %s %s %s" % tuple(d["timelines"][1][k] for k in ("timeline", "parent", "switchLsn", "first", "last"))')" \
    "wal list: timeline 2 branched off 1 at its .history's switch point"
assert_eq "1 000000010000000000000004 000000010000000000000004 0/400000" \
    "$(json_eval "$OUT_FILE" '"%d %s %s %s" % (len(d["gaps"]), d["gaps"][0]["from"], d["gaps"][0]["to"], d["gaps"][0]["startLsn"])')" \
    "wal list: the missing segment 4 is the one gap"
assert_eq "null" "$(json_eval "$OUT_FILE" 'd["recoveryWindow"]["earliest"]')" \
    "no physical base backup: no recovery window"
assert_contains "$(json_eval "$OUT_FILE" 'd["retention"]["rule"]')" "all archived WAL is kept" \
    "retention says all WAL is kept without a base backup"
assert_exit 0 cb wal list
assert_contains "$OUT" "GAP 000000010000000000000004 .. 000000010000000000000004" "human wal list shows the gap"

# --- check: a warning while nothing depends on it, an error once a base backup does -----------
assert_exit 0 cb --json check
assert_contains "$(json_eval "$OUT_FILE" '" ".join(w["object"] for w in d["warnings"])')" \
    "WAL 000000010000000000000004..000000010000000000000004" "check warns of the WAL gap"
CARIS_TEST_WAL_BASES=1:0/100028 "$CARIS_BIN" --json check >"$OUT_FILE" 2>"$ERR_FILE"
assert_eq 4 "$?" "check fails when the gap cuts short a base backup's recovery"
assert_eq "test-base-1" "$(json_eval "$OUT_FILE" '[e for e in d["errors"] if e["object"].startswith("WAL ")][0]["backups"][0]')" \
    "check names the base backup the gap breaks"
assert_contains "$(json_eval "$OUT_FILE" '[e for e in d["errors"] if e["object"].startswith("WAL ")][0]["error"]')" \
    "cannot replay past 0/400000" "check says where recovery stops"
CARIS_TEST_WAL_BASES=1:0/500028 "$CARIS_BIN" --json check >"$OUT_FILE" 2>"$ERR_FILE"
assert_eq 0 "$?" "a base backup after the gap is not affected"

# --- list --wal carries the archive's range; plain list keeps its shape -----------------------
assert_exit 0 cb --json list --wal
assert_eq "2 1" "$(json_eval "$OUT_FILE" '"%d %d" % (len(d["wal"]["timelines"]), len(d["wal"]["gaps"]))')" \
    "list --json --wal: the WAL timelines and the gap"
assert_exit 0 cb --json list
assert_eq "list" "$(json_eval "$OUT_FILE" 'type(d).__name__')" "list --json without --wal: the array, as before"
assert_exit 0 cb list --wal
assert_contains "$OUT" "WAL timeline 1: 000000010000000000000001 .. 000000010000000000000005, 4 segments, 1 gap" \
    "human list --wal: the timeline and its gap"

# --- retention ------------------------------------------------------------------------------
assert_exit 0 cb --json prune
assert_eq "0 None" "$(json_eval "$OUT_FILE" '"%s %s" % (d["wal"]["removed"], d["wal"]["keepFromLsn"])')" \
    "prune without a base backup keeps all WAL"
assert_exit 0 cb --json wal list
assert_eq 7 "$(json_eval "$OUT_FILE" 'len(d["files"])')" "all seven files still archived"
before=$(du -sb "$REPO" | cut -f1)
CARIS_TEST_WAL_BASES=1:0/300028 "$CARIS_BIN" --json prune --dry-run >"$OUT_FILE" 2>"$ERR_FILE"
assert_eq 0 "$?" "prune --dry-run with a base backup"
assert_eq 2 "$(json_get "$OUT_FILE" '["wal"]["removed"]')" "the dry run counts the two segments before the base's start"
assert_exit 0 cb --json wal list
assert_eq 7 "$(json_eval "$OUT_FILE" 'len(d["files"])')" "the dry run removed nothing"
CARIS_TEST_WAL_BASES=1:0/300028 "$CARIS_BIN" --json prune >"$OUT_FILE" 2>"$ERR_FILE"
assert_eq 0 "$?" "prune with a base backup starting at 0/300028"
assert_eq "2 0/300028" "$(json_eval "$OUT_FILE" '"%s %s" % (d["wal"]["removed"], d["wal"]["keepFromLsn"])')" \
    "prune removed the two segments that end before the base's start"
assert_exit 0 cb --json wal list
assert_eq "000000010000000000000003 000000010000000000000005 00000002.history 000000020000000000000006 000000020000000000000007" \
    "$(names)" "segments 1 and 2 gone; 3 (holding the start), the rest and the .history kept"
assert_exit 1 cb wal get 000000010000000000000001 "$TEST_TMP/out/s1"
assert_exit 0 cb wal get 000000010000000000000003 "$TEST_TMP/out/s3"
assert_true "a kept segment is intact" cmp "$TEST_TMP/pg_wal/000000010000000000000003" "$TEST_TMP/out/s3"
after=$(du -sb "$REPO" | cut -f1)
note "repository $before -> $after bytes"
assert_cmp $((before - after)) -gt 1500000 "the removed segments' data went with them (2 MiB of random data)"
assert_exit 0 cb --quiet check --read-data

test_done

#!/usr/bin/env bash
# An incremental physical backup whose parent (the latest physical backup) cannot be read: its
# manifest damaged. Before the fix every incremental failed on it ("parent backup ...")
# until someone took a full one by hand; now the incremental takes a full backup instead, says
# why in a warning (exit 3), and that backup restores.
# shellcheck disable=SC2154 # envf and R are set by pitr_setup (pglib.sh)
#
# The manifest's pack is found as the newest by modification time. On a tmpfs two packs written
# in one clock tick have the same time (1 run in 6 there picked the other one); the disk's
# fsyncs between them keep them apart. So when the run's temporary directories are on a tmpfs
# (scripts/test.sh: the sanitizer builds' tests), the repository goes to a directory under
# CARIS_TEST_DISK_TMPDIR, removed at the end. (A pick that does not depend on times is to do.)
W=""
if [[ $(stat -f -c %T "$TEST_TMP") == tmpfs && -d ${CARIS_TEST_DISK_TMPDIR:-} ]]; then
    W=$(mktemp -d "$CARIS_TEST_DISK_TMPDIR/caris-it-phys-parent.XXXXXX") || exit 1
    chmod 755 "$W"
    export BACKUP_DIR=$W/backup
fi
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
[[ -z $W ]] || trap '_lib_on_exit; _pg_on_exit; rm -rf "$W"' EXIT
pg_start
pitr_setup
pitr_archive_on "$CARIS_BIN --quiet --env-file $envf wal push %p"

run cb --json backup database --physical
assert_rc 0 "a full physical backup"
id1=$(json_get "$OUT_FILE" '["id"]')
# its manifest is stored last, in the pack of metadata flushed at the end: one blob of the
# newest pack gets a flipped byte
newest=$(find "$REPO/data" -type f -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)
python3 - "$REPO" "$CARIS_BIN" "$newest" <<'PY'
import json, os, subprocess, sys
repo, binary, p = sys.argv[1], sys.argv[2], sys.argv[3]
out = subprocess.run([binary, "--repo", repo, "--json", "debug", "pack", os.path.relpath(p, repo)],
                     capture_output=True, text=True, check=True)
with open(p, "r+b") as h:
    for b in json.loads(out.stdout)["blobs"][:1]:
        h.seek(b["offset"] + b["length"] // 2)
        c = h.read(1)
        h.seek(b["offset"] + b["length"] // 2)
        h.write(bytes([c[0] ^ 1]))
PY
run cb --json backup database --physical --incremental
assert_rc 3 "the incremental completes, with a warning (exit 3)"
assert_contains "$ERR" "the latest physical backup cannot be read (parent backup $id1" "the warning names the damaged parent"
assert_contains "$ERR" "taking a full backup" "and says what it does instead"
assert_eq full "$(json_get "$OUT_FILE" '["mode"]')" "it is a full backup"
assert_eq "" "$(json_get "$OUT_FILE" '["parent"]')" "without a parent"
assert_eq parent-damaged "$(json_get "$OUT_FILE" '["warnings"][0]["kind"]')" "its summary holds the warning"
id2=$(json_get "$OUT_FILE" '["id"]')
run cb verify "$id2"
assert_rc 0 "it verifies: it stored the damaged blob's content again"
run cb --env-file "$envf" restore database --physical --pgdata "$R/r2" "$id2"
assert_rc 0 "it restores"
assert_true "the cluster is there" test -f "$R/r2/PG_VERSION"
run cb --json backup database --physical --incremental
assert_rc 0 "the next incremental builds on it"
assert_eq "$id2" "$(json_get "$OUT_FILE" '["parent"]')" "its parent is the full one taken instead"

test_done

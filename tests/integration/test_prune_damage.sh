#!/usr/bin/env bash
# prune on a damaged repository deletes nothing: a snapshot it cannot read (what that backup
# needs is unknown, so nothing may be called unused), no snapshot at all while the index
# lists blobs (snapshots/ gone: every pack would go), a backup the state record lists whose
# snapshot was deleted by hand (until --accept-missing), and a blob a kept backup needs that is
# damaged in a pack prune would rewrite (a damaged blob is never copied as if it were sound).
# Each exits 4 naming what is wrong; the repository is as it was; once the damage is
# repaired, prune runs. An unreadable snapshot is forgotten by naming it (`forget ID`).
source "$(dirname "$0")/lib.sh"

assert_exit 0 cb --quiet init
# Everything in the repository except locks: names and sizes.
# (records/bad-blob: what a refused prune found damaged is recorded, see test_bad_blob)
fingerprint() { (cd "$REPO" && find . -type f ! -path './locks/*' ! -path './records/bad-blob/*' -printf '%P %s\n' | sort | md5sum); }

# Three backups: a file all share, one 300 kB random file each that only it holds. One
# thread: the first backup's shared and own data share one data pack.
src=$TEST_TMP/src
mkdir -p "$src"
seeded_bytes 400000 prune-damage/shared >"$src/shared.bin"
ids=()
for k in 1 2 3; do
    rm -f "$src"/only-*.bin
    seeded_bytes 300000 "prune-damage/only-$k" >"$src/only-$k.bin"
    list_packs >"$TEST_TMP/packs-before-$k"
    find "$REPO/snapshots" -type f ! -name '.*' | sort >"$TEST_TMP/snaps-before-$k"
    run cb --threads 1 --json backup files --time "2025-02-0${k}T03:00:00Z" "$src"
    assert_rc 0 "backup $k"
    ids+=("$(json_get "$OUT_FILE" '["id"]')")
    list_packs | comm -13 "$TEST_TMP/packs-before-$k" - >"$TEST_TMP/packs-new-$k"
    find "$REPO/snapshots" -type f ! -name '.*' | sort | comm -13 "$TEST_TMP/snaps-before-$k" - >"$TEST_TMP/snap-$k"
done

# --- a snapshot that cannot be read --------------------------------------------------------
assert_exit 0 cb --quiet forget --keep-last 2
snap=$(cat "$TEST_TMP/snap-3")
cp "$snap" "$TEST_TMP/snap.saved"
flip_byte "$snap"
fp=$(fingerprint)
run cb prune
assert_rc 4 "prune with an unreadable snapshot is refused as damage"
assert_contains "$ERR" "refusing to prune: snapshot" "the error says why"
assert_contains "$ERR" "$(basename "$snap")" "the error names the snapshot"
assert_eq "$fp" "$(fingerprint)" "prune deleted and wrote nothing"
cp "$TEST_TMP/snap.saved" "$snap"

# --- no snapshot at all, while the index lists blobs (snapshots/ gone) ----------------------
mv "$REPO/snapshots" "$TEST_TMP/snapshots.away"
fp=$(fingerprint)
run cb prune
assert_rc 4 "prune with snapshots/ gone is refused as damage"
assert_contains "$ERR" "refusing to prune: 2 backup(s) in the state record have no snapshot" "the error says why"
assert_contains "$ERR" "--accept-missing" "the hint names the way out"
run cb prune --dry-run --accept-missing
assert_rc 4 "accepted as missing, no backup at all while the index lists blobs: still refused"
assert_contains "$ERR" "refusing to prune: no backup is listed" "the error says why"
assert_contains "$ERR" "snapshots/ are missing" "the hint names the likely cause"
assert_eq "$fp" "$(fingerprint)" "prune deleted and wrote nothing"
mv "$TEST_TMP/snapshots.away" "$REPO/snapshots"

# --- a damaged blob in a pack prune would rewrite ----------------------------------------
# The first backup is forgotten (above): its pack holds its own file (unused now) and the
# shared file (used), so prune rewrites it with the used blobs only. Every data blob of that
# pack is damaged: the shared file's among them.
pack=$(xargs -d '\n' ls -S <"$TEST_TMP/packs-new-1" | head -n 1)
cp "$pack" "$TEST_TMP/pack.saved"
run cb --json debug pack "$pack"
assert_rc 0 "debug pack lists the first backup's data pack"
offsets=$(json_eval "$OUT_FILE" '" ".join(str(b["offset"] + b["length"] // 2) for b in d["blobs"])')
note "flipping the middle byte of each blob of $pack: $offsets"
for off in $offsets; do flip_byte "$pack" "$off"; done
run cb --json prune --dry-run
assert_rc 0 "prune --dry-run"
assert_cmp "$(json_get "$OUT_FILE" '["packs"]["repacked"]')" -ge 1 "the dry run would rewrite the damaged pack"
fp=$(fingerprint)
run cb prune
assert_rc 4 "prune stops at the damaged blob it would copy"
assert_contains "$ERR" "cannot repack" "the error says the rewrite stopped"
assert_contains "$ERR" "$(basename "$pack")" "the error names the pack"
assert_eq "$fp" "$(fingerprint)" "nothing was deleted or written"
assert_contains "$ERR" "recorded 1 damaged blob" "but the blob that stopped it is recorded damaged"
assert_eq 1 "$(find "$REPO/records/bad-blob" -type f | wc -l)" "in one record"
assert_exit 4 cb --quiet verify "${ids[2]}"

# the refused prune left the repository as it was: with the pack repaired (from a copy),
# prune runs, and the kept backups verify
cp "$TEST_TMP/pack.saved" "$pack"
run cb --json prune
assert_rc 0 "prune once the pack is sound again"
assert_cmp "$(json_get "$OUT_FILE" '["packs"]["repacked"]')" -ge 1 "it rewrote the pack"
assert_eq 0 "$(find "$REPO/records/bad-blob" -type f | wc -l)" "and removed the records of its damage"
assert_exit 0 cb --quiet check --read-data
assert_exit 0 cb --quiet verify "${ids[1]}"
assert_exit 0 cb --quiet verify "${ids[2]}"

# --- a backup whose snapshot was deleted by hand -----------------------------------------
# The state record still lists it: prune refuses until that is accepted, then records it
# as removed (as forget does) and deletes what only it needed.
snap2=$(cat "$TEST_TMP/snap-2")
assert_true "the second backup's snapshot object is there" test -f "$snap2"
rm -f "$snap2"
fp=$(fingerprint)
run cb prune
assert_rc 4 "prune with a backup missing from snapshots/ is refused"
assert_contains "$ERR" "1 backup(s) in the state record have no snapshot (${ids[1]})" "the error names the backup"
run cb prune --dry-run
assert_rc 4 "the dry run refuses as well"
assert_eq "$fp" "$(fingerprint)" "nothing changed"
run cb --json prune --accept-missing
assert_rc 0 "prune --accept-missing"
assert_contains "$ERR" "1 missing backup(s) accepted as gone (${ids[1]})" "it says what it accepted"
run cb --json list
assert_rc 0 "list after the accepted prune"
assert_eq "${ids[2]}" "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" "only the third backup is listed, none missing"
assert_not_contains "$ERR" "state record" "no warning about the state record any more"
assert_exit 0 cb --quiet check --read-data
assert_exit 0 cb --quiet verify "${ids[2]}"

# --- the way out of an unreadable snapshot: forget it by name ------------------------------
# Prune refuses while a snapshot cannot be read, and says to forget that backup: `forget ID`
# does, by the id `list` shows (it said "no backup ...: nothing forgotten", exit 7, so that
# prune refused for ever), or by the file `list` shows when no id is known. Two more backups;
# the third's snapshot and the fourth's are damaged, the fifth is kept.
for k in 4 5; do
    rm -f "$src"/only-*.bin
    seeded_bytes 300000 "prune-damage/only-$k" >"$src/only-$k.bin"
    find "$REPO/snapshots" -type f ! -name '.*' | sort >"$TEST_TMP/snaps-before-$k"
    run cb --threads 1 --json backup files --time "2025-02-0${k}T03:00:00Z" "$src"
    assert_rc 0 "backup $k"
    ids+=("$(json_get "$OUT_FILE" '["id"]')")
    find "$REPO/snapshots" -type f ! -name '.*' | sort | comm -13 "$TEST_TMP/snaps-before-$k" - >"$TEST_TMP/snap-$k"
done
flip_byte "$(cat "$TEST_TMP/snap-3")"
snap4=$(cat "$TEST_TMP/snap-4")
flip_byte "$snap4"
run cb --json list
assert_rc 0 "list"
assert_eq "${ids[2]}=damaged ${ids[3]}=damaged ${ids[4]}=ok" \
    "$(json_eval "$OUT_FILE" '" ".join("%s=%s" % (b["id"], b["status"]) for b in sorted(d, key=lambda b: b["id"]))')" \
    "list shows both damaged backups by id"
fp=$(fingerprint)
run cb --json forget --dry-run --prune "${ids[2]}" "snapshots/$(basename "$snap4")"
assert_rc 0 "forget --dry-run --prune names the unreadable snapshots, by id and by file"
assert_eq "${ids[2]}:None:True ${ids[3]}:None:True" \
    "$(json_eval "$OUT_FILE" '" ".join("%s:%s:%s" % (b["id"], b["time"], b["damaged"]) for g in d["groups"] if g["kind"] == "damaged" for b in g["backups"])')" \
    "both are reported, in a group of their own, time unknown"
assert_eq "2 1" "$(json_eval "$OUT_FILE" '"%d %d" % (d["removed"], d["kept"])')" "2 would be forgotten, 1 kept"
assert_true "its shape is docs/JSON.md's" python3 "$LIB_DIR/jsonshape.py" "$LIB_DIR/../../docs/JSON.md" forget "$OUT_FILE"
assert_cmp "$(json_get "$OUT_FILE" '["prune"]["packs"]["deleted"]')" -ge 1 "the dry run's prune estimates what they alone used"
assert_contains "$ERR" "backup ${ids[2]} cannot be read" "a warning names each"
assert_eq "$fp" "$(fingerprint)" "the dry run changed nothing"
run cb forget --prune "${ids[2]}" "$(basename "$snap4")"
assert_rc 0 "forget --prune of the unreadable snapshots"
assert_contains "$OUT" "forgot ${ids[2]}" "the table says what was forgotten"
assert_contains "$OUT" "it cannot be read" "and why it is special"
run cb --json list
assert_eq "${ids[4]}" "$(json_eval "$OUT_FILE" '" ".join(b["id"] for b in d)')" "only the fifth backup is left"
assert_exit 0 cb --quiet check --read-data
assert_exit 0 cb --quiet verify "${ids[4]}"
run cb forget "${ids[2]}"
assert_rc 7 "a forgotten backup cannot be named again"
# A snapshot file no record knows (put there by hand, or its record lost), and unreadable:
# `list` names it by its file only, and so does forget.
stray=$REPO/snapshots/$(printf 'stray' | sha256sum | cut -c1-64)
seeded_bytes 500 prune-damage/stray >"$stray"
run cb --json list
assert_rc 0 "list with a stray snapshot file"
assert_eq "None snapshots/$(basename "$stray")" \
    "$(json_eval "$OUT_FILE" '" ".join("%s %s" % (b["id"], b.get("file")) for b in d if b["status"] == "damaged")')" \
    "it is listed as damaged, by its file, no id"
run cb --json forget "snapshots/$(basename "$stray")"
assert_rc 0 "forget snapshots/NAME"
assert_eq "snapshots/$(basename "$stray")" \
    "$(json_eval "$OUT_FILE" '" ".join(b["id"] for g in d["groups"] if g["kind"] == "damaged" for b in g["backups"])')" \
    "reported by its file"
assert_false "the file is gone" test -e "$stray"
assert_exit 0 cb --quiet prune

# --- a pack a kept backup needs is missing: prune deletes only what nothing references, and
# says the repository is damaged (exit 3; it exited 0 with a line the daemon never saw) ------
LP=$TEST_TMP/lost-pack
mkdir -p "$TEST_TMP/lp"
seeded_bytes 300000 prune-damage/lp >"$TEST_TMP/lp/keep"
assert_exit 0 cb --quiet --repo "$LP" init
assert_exit 0 cb --quiet --repo "$LP" backup files "$TEST_TMP/lp"
lost=$(find "$LP/data" -type f ! -name '.*' -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2-)
rm "$lost"
assert_exit 3 cb --quiet --repo "$LP" prune
assert_contains "$ERR" "blobs the index does not have" "prune says backups need blobs that are gone"
assert_contains "$ERR" "caris-backup check" "and what to run"

test_done

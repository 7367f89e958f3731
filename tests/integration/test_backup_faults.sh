#!/usr/bin/env bash
# What happens to files while a backup reads them, made to happen at a known moment by
# tests/integration/read_faults.c (LD_PRELOAD, on real files): a file truncated while read
# (logrotate's copytruncate), grown, rewritten, a read error, deleted or replaced by a
# directory between the walk's listing and its open, SIGTERM while a file is read,
# and the main thread handing a reader's open batch of chunks to the workers while every
# reader waits. Each backup that ends holds what was read, verifies, and restores exactly
# that; one that is cancelled commits nothing.
source "$(dirname "$0")/lib.sh"

shim=$TEST_TMP/read_faults.so
if ! cc -shared -fPIC -O2 -o "$shim" "$(dirname "$0")/read_faults.c" -ldl 2>"$TEST_TMP/cc.err"; then
    fail "cannot build the fault injector: $(head -c 300 "$TEST_TMP/cc.err")"
    test_done
fi
REPO=$BACKUP_DIR/repository
src=$TEST_TMP/src
mkdir -p "$src"
init_repo

# A large file, read in several reads (12 MB: the backup reads files in buffers of a few
# MiB), and a small one.
reset_tree() {
    seeded_bytes 12000000 "big-$1" >"$src/big.log"
    seq 1 20000 >"$src/small.txt"
    cp "$src/big.log" "$TEST_TMP/big.before"
}

# faulty MODE FILE AT [VAR=VALUE...]: a full backup of $src with the shim acting on FILE at
# its first read at offset AT or later; JSON to $TEST_TMP/MODE.json, BACKUP_ID set; FAULTS:
# how many times the shim acted.
faulty() {
    local mode=$1 file=$2 at=$3
    shift 3
    : >"$TEST_TMP/faults"
    run env LD_PRELOAD="$shim" READ_FAULT="$mode" READ_FAULT_FILE="$file" READ_FAULT_AT="$at" \
        READ_FAULT_LOG="$TEST_TMP/faults" "$@" "$CARIS_BIN" --json backup files --full "$src"
    cp "$OUT_FILE" "$TEST_TMP/$mode.json"
    BACKUP_ID=$(json_get "$TEST_TMP/$mode.json" '["id"]' 2>/dev/null || true)
    FAULTS=$(awk '{s += $2} END {print s + 0}' "$TEST_TMP/faults")
}

# restored ID NAME: restores backup ID into a fresh directory; RESTORED: NAME's path there.
restored() {
    local t=$TEST_TMP/restore-$RANDOM$RANDOM
    mkdir "$t"
    run cb restore files "$1" --target "$t"
    RESTORED=$t$src/$2
}

warning_of() { # FILE JSON: the backup's warning message for FILE, or nothing
    json_eval "$2" "' '.join(w['message'] for w in d['warnings'] if w['path'] == '$1')"
}

# --- truncated while read: what was read, as long as it was -------------------------------
reset_tree 1
faulty truncate big.log 1 READ_FAULT_SIZE=6000000
assert_rc 3 "truncated while read: the backup ends with a warning"
assert_eq 1 "$FAULTS" "truncated while read: the shim truncated the file once"
assert_contains "$(warning_of big.log "$TEST_TMP/truncate.json")" "changed while being read" \
    "truncated while read: the warning names the file"
assert_exit 0 cb verify "$BACKUP_ID"
restored "$BACKUP_ID" big.log
assert_rc 0 "truncated while read: the restore succeeds"
assert_eq 6000000 "$(stat -c %s "$RESTORED" 2>/dev/null)" "truncated while read: restored at the length read"
assert_true "truncated while read: the restored bytes are the file's first 6,000,000" \
    cmp -s "$RESTORED" <(head -c 6000000 "$TEST_TMP/big.before")
assert_true "truncated while read: the other file is whole" cmp -s "${RESTORED%/*}/small.txt" "$src/small.txt"
run cb --json backup files --incremental "$src"
assert_rc 0 "the next incremental backup"
assert_eq 1 "$(json_get "$OUT_FILE" '["stats"]["filesUnchanged"]')" \
    "a file that changed while read is read again by the next backup"
inc=$(json_get "$OUT_FILE" '["id"]')
restored "$inc" big.log
assert_true "the incremental restores the file as it is now" cmp -s "$RESTORED" "$src/big.log"

# truncated to nothing before its first read, a small file (one read)
reset_tree 2
cp "$src/small.txt" "$TEST_TMP/small.before"
faulty truncate small.txt 0 READ_FAULT_SIZE=0
assert_rc 3 "truncated to 0 before its only read: a warning"
assert_exit 0 cb verify "$BACKUP_ID"
restored "$BACKUP_ID" small.txt
assert_rc 0 "truncated to 0: the restore succeeds"
assert_eq 0 "$(stat -c %s "$RESTORED" 2>/dev/null)" "truncated to 0: restored empty"
assert_true "truncated to 0: the other file is whole" cmp -s "${RESTORED%/*}/big.log" "$src/big.log"

# --- grown while read: the length it had when the backup found it --------------------------
reset_tree 3
faulty grow big.log 1
assert_rc 3 "grown while read: a warning"
assert_contains "$(warning_of big.log "$TEST_TMP/grow.json")" "changed while being read" \
    "grown while read: the warning names the file"
assert_eq 12100000 "$(stat -c %s "$src/big.log")" "grown while read: the shim appended to the file"
restored "$BACKUP_ID" big.log
assert_rc 0 "grown while read: the restore succeeds"
assert_true "grown while read: restored as it was found, 12,000,000 bytes" cmp -s "$RESTORED" "$TEST_TMP/big.before"

# --- rewritten behind the reader: the bytes read, not the new ones -------------------------
reset_tree 4
faulty rewrite big.log 1
assert_rc 3 "rewritten while read: a warning"
restored "$BACKUP_ID" big.log
assert_rc 0 "rewritten while read: the restore succeeds"
assert_true "rewritten while read: the restore holds what was read before the rewrite" \
    cmp -s "$RESTORED" "$TEST_TMP/big.before"
assert_false "rewritten while read: the file itself did change" cmp -s "$src/big.log" "$TEST_TMP/big.before"

# --- a read error: the file is named, nothing of it is kept, the rest is ------------------
reset_tree 5
faulty eio big.log 1
assert_rc 3 "a read error: the backup ends with a warning"
assert_contains "$(warning_of big.log "$TEST_TMP/eio.json")" "read error: Input/output error" \
    "a read error: the warning says which and what"
assert_exit 0 cb verify "$BACKUP_ID"
restored "$BACKUP_ID" small.txt
assert_rc 3 "a read error: the restore says a file is missing (exit 3)"
assert_contains "$ERR" "could not be read at backup time" "a read error: the restore says why"
assert_true "a read error: the other file is restored" cmp -s "$RESTORED" "$src/small.txt"
assert_false "a read error: the unreadable file is not restored" test -e "${RESTORED%/*}/big.log"
assert_exit 0 cb check --read-data

# --- a read error in a hard-linked file: the walk had listed its first name for the inode, so
# the second name is in the backup as a hard link of a file without content. The restore says
# both are not restored and why (exit 3), and restores everything after them (it stopped at the
# link, exit 7: "cannot restore hard link", nothing after it restored) -----------------------
reset_tree 12
printf 'linked\n' >"$src/a.x"
ln "$src/a.x" "$src/b.lnk"
printf 'after the link\n' >"$src/c.txt" # walked after b.lnk (names sort bytewise)
faulty eio '*.x' 0
assert_rc 3 "a read error in a hard-linked file: the backup ends with a warning"
assert_eq 1 "$FAULTS" "a read error in a hard-linked file: the shim failed the reads of a.x"
run cb --json ls "$BACKUP_ID" --recursive
assert_eq "hardlink $src/a.x" "$(json_eval "$OUT_FILE" "' '.join(e['type'] + ' ' + e.get('link', '') for e in d['entries'] if e['path'] == '$src/b.lnk')")" \
    "a read error in a hard-linked file: the backup holds b.lnk as a hard link of a.x"
restored "$BACKUP_ID" c.txt
assert_rc 3 "a hard link of an unread file: the restore ends with a warning (exit 3), not an error"
assert_contains "$ERR" '"a.x": not restored: the file could not be read at backup time' \
    "a hard link of an unread file: the restore names the unread file"
assert_contains "$ERR" '"b.lnk": not restored: a hard link of a.x, whose content could not be read at backup time (read error: Input/output error)' \
    "a hard link of an unread file: the restore names the link and says why"
assert_not_contains "$ERR" "cannot restore hard link" "a hard link of an unread file: no hard-link error"
assert_false "a hard link of an unread file: the link is not restored" test -e "${RESTORED%/*}/b.lnk"
assert_true "a hard link of an unread file: the file after it is restored" cmp -s "$RESTORED" "$src/c.txt"
assert_true "a hard link of an unread file: the large file after it is whole" cmp -s "${RESTORED%/*}/big.log" "$src/big.log"
assert_true "a hard link of an unread file: the last file is whole" cmp -s "${RESTORED%/*}/small.txt" "$src/small.txt"
# only the link selected: it would take the content (its first name is outside --include)
t=$TEST_TMP/restore-link-only
mkdir "$t"
run cb restore files "$BACKUP_ID" --target "$t" --include "$src/b.lnk"
assert_rc 3 "--include of the link alone: a warning (exit 3)"
assert_contains "$ERR" '"b.lnk": not restored: a hard link of a.x, whose content could not be read' \
    "--include of the link alone: the restore names the link and says why"
assert_eq "" "$(find "$t" ! -type d)" "--include of the link alone: nothing is restored"
# dump of the directory as tar: the link is left out with a warning, as the file is (a member
# "b.lnk link to a.x" without a.x made `tar -x` fail: "Cannot hard link")
run bash -c '"$0" dump "$1" "$2" >"$3"' "$CARIS_BIN" "$BACKUP_ID" "$src" "$TEST_TMP/link-unread.tar"
assert_rc 3 "a hard link of an unread file: dump as tar ends with a warning (exit 3)"
assert_contains "$ERR" "warning: $src/a.x: left out: the file could not be read at backup time" \
    "a hard link of an unread file: dump names the unread file"
assert_contains "$ERR" "warning: $src/b.lnk: left out: a hard link of $src/a.x, whose content could not be read at backup time (read error: Input/output error)" \
    "a hard link of an unread file: dump names the link and says why"
t=$TEST_TMP/untar-link-unread
mkdir "$t"
assert_true "a hard link of an unread file: GNU tar extracts the dump without an error" \
    tar -xpf "$TEST_TMP/link-unread.tar" -C "$t"
assert_false "a hard link of an unread file: no member for the link" \
    bash -c 'tar -tvf "$0" | grep -F b.lnk' "$TEST_TMP/link-unread.tar"
assert_true "a hard link of an unread file: the file after it is in the dump" cmp -s "$t/${src##*/}/c.txt" "$src/c.txt"
rm -f "$src/a.x" "$src/b.lnk" "$src/c.txt"

# --- a file and a directory the backup may not open (EACCES: root's 0600 file and 0700
# directory, the backup running as nobody): both are in the backup, each named in a warning and
# marked as not read, and the restore says so (exit 3) and restores the rest; a file made
# unreadable between two backups is not taken as unchanged by the second ------------------------
if as_nobody_ok "files the backup may not open"; then
    np=$TEST_TMP/as-nobody
    nsrc=$np/src
    mkdir -p "$np/backup" "$nsrc/locked"
    chmod 777 "$np/backup"
    printf 'readable\n' >"$nsrc/readable.txt"
    printf 'notes\n' >"$nsrc/notes.txt"
    printf 'secret\n' >"$nsrc/secret.txt"
    printf 'inside\n' >"$nsrc/locked/inside.txt"
    chmod 0600 "$nsrc/secret.txt"
    chmod 0700 "$nsrc/locked"
    nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups env BACKUP_DIR="$np/backup" "$@"; }
    # entry_error ID NAME: the "error" ls gives for $nsrc/NAME in backup ID, "-" when ls does not list it
    entry_error() {
        run env BACKUP_DIR="$np/backup" "$CARIS_BIN" --json ls "$1"
        json_eval "$OUT_FILE" "([e.get('error', '') for e in d['entries'] if e['path'] == '$nsrc/$2'] + ['-'])[0]"
    }
    # restore_into ID NAME: restores backup ID of that repository into a new $TEST_TMP/NAME ($t)
    restore_into() {
        t=$TEST_TMP/$2
        mkdir "$t"
        run env BACKUP_DIR="$np/backup" "$CARIS_BIN" restore files "$1" --target "$t"
    }
    assert_exit 0 nobody "$CARIS_BIN" --quiet init
    run nobody "$CARIS_BIN" --json backup files --full "$nsrc"
    assert_rc 3 "not openable: the backup ends with a warning"
    cp "$OUT_FILE" "$TEST_TMP/eacces.json"
    nid=$(json_get "$TEST_TMP/eacces.json" '["id"]')
    assert_contains "$(warning_of secret.txt "$TEST_TMP/eacces.json")" "cannot open file secret.txt: Permission denied" \
        "not openable: the warning names the file and says why"
    assert_contains "$(warning_of locked "$TEST_TMP/eacces.json")" "cannot open directory locked" \
        "not openable: the warning names the directory"
    assert_eq "cannot open file: Permission denied" "$(entry_error "$nid" secret.txt)" \
        "not openable: ls lists the file, marked as not read"
    assert_eq "cannot open directory: Permission denied" "$(entry_error "$nid" locked)" \
        "not openable: ls lists the directory, marked as not read"
    assert_eq "" "$(entry_error "$nid" readable.txt)" "not openable: the readable file is listed, not marked"
    run env BACKUP_DIR="$np/backup" "$CARIS_BIN" dump "$nid" "$nsrc/secret.txt"
    assert_rc 7 "not openable: dump of the file has nothing to give"
    assert_contains "$ERR" "could not be read at backup time" "not openable: dump says why"
    restore_into "$nid" restore-eacces
    assert_rc 3 "not openable: the restore says something is missing"
    assert_contains "$ERR" '"secret.txt": not restored: the file could not be read at backup time' \
        "not openable: the restore names the file"
    assert_contains "$ERR" '"locked": contents not restored: the directory could not be read at backup time' \
        "not openable: the restore names the directory whose contents are missing"
    assert_true "not openable: the other files are restored intact" \
        cmp -s "$t$nsrc/readable.txt" "$nsrc/readable.txt"
    assert_true "not openable: (notes.txt too)" cmp -s "$t$nsrc/notes.txt" "$nsrc/notes.txt"
    assert_false "not openable: the file is not restored" test -e "$t$nsrc/secret.txt"
    # a root the backup may not open fails it (nothing of it would be backed up), with a hint
    # about the paths backed up, not the backup directory
    run nobody "$CARIS_BIN" backup files "$nsrc/locked"
    assert_rc 8 "not openable root: the backup fails"
    assert_contains "$ERR" "must be able to read what it backs up" "not openable root: the hint is about the source"
    # notes.txt becomes unreadable: the file table of the first backup must not stand for it
    chmod 0600 "$nsrc/notes.txt"
    run nobody "$CARIS_BIN" --json backup files --incremental "$nsrc"
    assert_rc 3 "made unreadable: the incremental backup ends with a warning"
    cp "$OUT_FILE" "$TEST_TMP/eacces-incr.json"
    iid=$(json_get "$TEST_TMP/eacces-incr.json" '["id"]')
    assert_eq 1 "$(json_get "$TEST_TMP/eacces-incr.json" '["stats"]["filesUnchanged"]')" \
        "made unreadable: only readable.txt is unchanged"
    assert_contains "$(warning_of notes.txt "$TEST_TMP/eacces-incr.json")" "Permission denied" \
        "made unreadable: the warning names the file"
    assert_eq "cannot open file: Permission denied" "$(entry_error "$iid" notes.txt)" \
        "made unreadable: the incremental marks the file as not read"
    restore_into "$iid" restore-eacces-incr
    assert_rc 3 "made unreadable: the restore of the incremental says something is missing"
    assert_contains "$ERR" '"notes.txt": not restored' "made unreadable: the restore names the file"
    assert_true "made unreadable: the other file is restored intact" \
        cmp -s "$t$nsrc/readable.txt" "$nsrc/readable.txt"
    # a directory this user may list but not enter (r-- without x): its entries cannot be
    # read. Its entry says so, and a restore warns (it said nothing, and ls showed it whole).
    mkdir "$nsrc/noexec"
    printf 'inside\n' >"$nsrc/noexec/f1"
    chmod 0444 "$nsrc/noexec"
    run nobody "$CARIS_BIN" --json backup files --full "$nsrc"
    assert_rc 3 "listable, not enterable: the backup ends with a warning"
    xid=$(json_get "$OUT_FILE" '["id"]')
    assert_eq "not all of its entries could be read: Permission denied" "$(entry_error "$xid" noexec)" \
        "listable, not enterable: ls marks the directory as not read whole"
    restore_into "$xid" restore-noexec
    assert_rc 3 "listable, not enterable: the restore says something is missing"
    assert_contains "$ERR" '"noexec": contents restored in part: at backup time, not all of its entries could be read' \
        "listable, not enterable: the restore names the directory"
    chmod 0755 "$nsrc/noexec"
fi

# --- a file deleted, or replaced by a directory, between the walk's listing and its open ---
for mode in vanish to-dir; do
    reset_tree 7
    seq 1 10 >"$src/tmp.txt"
    faulty "$mode" tmp.txt 0
    assert_rc 3 "$mode: the backup ends with a warning"
    assert_eq 1 "$FAULTS" "$mode: the shim acted once"
    want="it vanished while being read"
    [[ $mode == to-dir ]] && want="it changed type while being read"
    assert_contains "$(warning_of tmp.txt "$TEST_TMP/$mode.json")" "$want" "$mode: the warning says what happened"
    assert_exit 0 cb verify "$BACKUP_ID"
    restored "$BACKUP_ID" big.log
    assert_rc 0 "$mode: the restore succeeds"
    assert_true "$mode: the other files are whole" cmp -s "$RESTORED" "$src/big.log"
    assert_false "$mode: nothing is restored under that name" test -e "${RESTORED%/*}/tmp.txt"
    rm -rf "$src/tmp.txt"
done

# --- the repository's file system fills up while chunks are stored: exit 8, nothing
# committed, no temporary pack or lock left, check clean (a 3 MiB tmpfs in a private mount
# namespace holds a fresh BACKUP_DIR) ----------------------------------------------------------
reset_tree 8
# shellcheck disable=SC2016 # expanded by the inner shell
if run_in_tmpfs 3m "$TEST_TMP/fullrepo" 'export BACKUP_DIR=$1
        "$0" --quiet init || exit 98
        "$0" --json backup files --full "$2"
        rc=$?
        echo "backups: $("$0" --json list | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")"
        echo "temporaries: $(find "$1" -name ".tmp-*" | wc -l)"
        echo "locks: $(find "$1/repository/locks" -type f | wc -l)"
        "$0" --quiet check >/dev/null && echo "check: ok"
        exit $rc' "$src"; then
    assert_rc 8 "the repository's disk full during a backup: exit 8"
    assert_contains "$ERR" "No space left on device" "the error says the disk is full"
    assert_contains "$ERR" "retention" "the hint says how to free space in the repository"
    assert_contains "$ERR" "caris-backup forget --prune" "with a command an installed system has (no scripts/ there)"
    assert_contains "$OUT" "backups: 0" "nothing was committed"
    assert_contains "$OUT" "temporaries: 0" "no temporary pack is left"
    assert_contains "$OUT" "locks: 0" "the lock is released"
    assert_contains "$OUT" "check: ok" "check finds the repository clean"
fi

# --- init on a file system that fills up after its config (12 KiB left: slot and config fit,
# the state object does not): exit 8, and nothing is left of the half-made repository; it
# was left with its config and no marker, which every command, init included, reported as a
# damaged repository (exit 4, "put the marker back") ------------------------------------------
# shellcheck disable=SC2016 # expanded by the inner shell
if run_in_tmpfs 1m "$TEST_TMP/fullinit" 'export BACKUP_DIR=$1/bd
        mkdir -p "$BACKUP_DIR" || exit 98
        fallocate -l "$(( ($(df -k --output=avail "$1" | tail -n 1) - 12) * 1024 ))" "$1/filler" || exit 98
        "$0" --quiet init
        rc=$?
        echo "left: $(find "$BACKUP_DIR/repository" -type f 2>/dev/null | wc -l)"
        rm -f "$1/filler"
        "$0" --quiet list >/dev/null 2>&1
        echo "list: $?"
        "$0" --quiet init >/dev/null 2>&1 && echo "init again: ok"
        exit $rc'; then
    assert_rc 8 "init on a full disk: exit 8"
    assert_contains "$ERR" "No space left on device" "the error says the disk is full"
    assert_contains "$OUT" "left: 0" "no file of the half-made repository is left"
    assert_contains "$OUT" "list: 7" "no repository there (not a damaged one)"
    assert_contains "$OUT" "init again: ok" "init works once there is room"
fi

# --- SIGTERM while a file is read: nothing committed ---------------------------------------
reset_tree 6
before=$(list_ids | wc -w)
hold=$TEST_TMP/hold
mkdir "$hold"
bg_start env LD_PRELOAD="$shim" READ_FAULT=hold READ_FAULT_FILE=big.log READ_FAULT_AT=1 \
    READ_FAULT_DIR="$hold" "$CARIS_BIN" --json backup files --full "$src"
backup=$BG_PID backup_err=$BG_ERR
wait_until 60 test -e "$hold/reached-big.log" || fail "the backup did not reach the held read" "$(_tail "$backup_err")"
# (the reader goes on only once the signal is no longer pending in any thread of the backup:
# its handler, which only sets the cancel flag, has been entered)
# shellcheck disable=SC2317 # called through wait_until
term_delivered() {
    local f k v
    for f in "/proc/$backup/status" "/proc/$backup"/task/*/status; do
        while read -r k v; do
            [[ $k == ShdPnd: || $k == SigPnd: ]] || continue
            ((0x$v & 0x4000)) && return 1 # bit 14: SIGTERM (15)
        done <"$f" 2>/dev/null
    done
    return 0
}
kill -TERM "$backup"
wait_until 60 term_delivered || fail "SIGTERM stayed pending"
touch "$hold/release"
wait "$backup"
assert_eq 1 "$?" "SIGTERM while a file is read: exit 1"
assert_contains "$(cat "$backup_err")" "cancelled" "SIGTERM while a file is read: it says cancelled"
assert_eq "$before" "$(list_ids | wc -w)" \
    "SIGTERM while a file is read: no backup was committed"
assert_eq "" "$(find "$REPO/locks" -maxdepth 1 -type f ! -name '.*')" "SIGTERM: its lock and claim are released"
assert_eq "" "$(find "$REPO" -name '.tmp-*')" "SIGTERM: no temporary file is left"
assert_exit 0 cb check --read-data

# --- the lock removed while a backup runs (`unlock --force` from another shell): the backup
# fails before it commits, says why (exit 9), and nothing is committed. The backup is held in
# a read; its lock is refreshed every 50 ms meanwhile, so the refresh thread finds it gone too.
reset_tree 9
hold=$TEST_TMP/hold-unlock
mkdir "$hold"
before=$(list_ids | wc -w)
bg_start env LD_PRELOAD="$shim" READ_FAULT=hold READ_FAULT_FILE=big.log READ_FAULT_AT=1 \
    READ_FAULT_DIR="$hold" CARIS_LOCK_REFRESH_SECONDS=0.05 "$CARIS_BIN" --json backup files --full "$src"
backup=$BG_PID backup_err=$BG_ERR
wait_until 60 test -e "$hold/reached-big.log" || fail "the backup did not reach the held read" "$(_tail "$backup_err")"
run cb --json unlock --force
assert_rc 0 "unlock --force while the backup runs"
assert_eq "" "$(find "$REPO/locks" -maxdepth 1 -type f ! -name '.*')" "unlock --force removed its lock and claim"
touch "$hold/release"
wait "$backup"
assert_eq 9 "$?" "the backup whose lock was removed fails with exit 9 (locked)"
assert_contains "$(cat "$backup_err")" "was removed while it ran: nothing was committed" "it says why, and that nothing was committed"
assert_eq "$before" "$(list_ids | wc -w)" \
    "no backup was committed"
assert_eq "" "$(find "$REPO/locks" -maxdepth 1 -type f ! -name '.*')" "it left no lock behind"
assert_exit 0 cb check --read-data

# --- a pack that cannot be read (EIO) while verifying: the backup could not be checked, which
# is not damage: exit 8, the error, no "DAMAGED", nothing recorded (list does not say damaged),
# and a verify that can read it finds the backup valid ----------------------------------------
# backup_new_pack N LABEL: a new tree (reset_tree N), its full backup (BACKUP_ID), and PACK:
# the path of the largest pack that backup wrote (it holds chunks of big.log)
backup_new_pack() {
    reset_tree "$1"
    touch "$TEST_TMP/before-$2"
    backup_json "$TEST_TMP/$2.json" --full "$src"
    assert_rc 0 "$2: the backup"
    PACK=$(find "$REPO/data" -mindepth 2 -type f ! -name '.*' -newer "$TEST_TMP/before-$2" -printf '%s %p\n' |
        sort -n | tail -1 | cut -d' ' -f2)
}
backup_new_pack 10 eio-pack
vid=$BACKUP_ID
pack=$(basename "$PACK")
run env LD_PRELOAD="$shim" READ_FAULT=eio READ_FAULT_FILE="$pack" "$CARIS_BIN" verify "$vid"
assert_rc 8 "verify with a pack that cannot be read: exit 8 (I/O error)"
assert_contains "$ERR" "Input/output error" "it says what failed"
assert_not_contains "$OUT$ERR" "DAMAGED" "it does not call the backup damaged"
run env LD_PRELOAD="$shim" READ_FAULT=eio READ_FAULT_FILE="$pack" "$CARIS_BIN" --json verify --all
assert_rc 8 "verify --all with that pack: exit 8"
assert_eq "None io" "$(json_eval "$OUT_FILE" "' '.join(str(x.get('valid')) + ' ' + x.get('error', {}).get('code', '') for x in d if x['backupId'] == '$vid')")" \
    "--json: that backup's valid is null, with the I/O error"
run cb --json list
assert_eq "" "$(json_eval "$OUT_FILE" "' '.join(x['id'] for x in d if x.get('status') == 'damaged')")" \
    "list: no backup is shown as damaged"
assert_exit 0 cb verify "$vid"

# --- every reader waits, one of them with an open batch: the main thread hands it over ----
# A reader keeps its batch of small chunks open at the end of a file when other files wait
# to be read; the walk's thread hands such batches to the workers when 1,024 entries wait
# behind one whose chunks are not stored. Here: a0.hold is read by reader A while the three
# others wait in h01-h03.hold and the readers' queue (16) is full; A ends a0 with files
# waiting, keeps a0's chunk in its open batch and waits in h04.hold. Nothing else can store a
# chunk then: a pack appears only if the 3,000 symlinks walked after them make the main
# thread hand A's batch over.
st=$TEST_TMP/stall
mkdir -p "$st/zz"
seeded_bytes 4096 a0 >"$st/a0.hold"
for i in $(seq -w 1 20); do seeded_bytes 4096 "h$i" >"$st/h$i.hold"; done
# (made by one process: 3,000 runs of ln took 15 s of the suite)
python3 -c 'import os, sys
for i in range(1, 3001): os.symlink("target-%d" % i, "%s/zz/l%d" % (sys.argv[1], i))' "$st" || fail "make the symlinks"
hold=$TEST_TMP/hold2
mkdir "$hold"
bg_start env LD_PRELOAD="$shim" READ_FAULT=hold 'READ_FAULT_FILE=*.hold' READ_FAULT_DIR="$hold" \
    "$CARIS_BIN" --json backup files --full "$st"
backup=$BG_PID backup_err=$BG_ERR backup_out=$BG_OUT
reached() { [[ $(find "$hold" -name 'reached-*' | wc -l) -ge $1 ]]; }
# shellcheck disable=SC2317 # called through wait_until
queue_full() { [[ $(find "/proc/$backup/fd" -lname '*.hold' 2>/dev/null | wc -l) -ge 20 ]]; }
# shellcheck disable=SC2317
pack_started() { [[ -n $(find "$REPO/data" -name '.tmp-*' 2>/dev/null) ]]; }
wait_until 60 reached 4 || fail "four readers did not reach the held reads" "$(_tail "$backup_err")"
wait_until 60 queue_full || fail "the readers' queue did not fill" "$(_tail "$backup_err")"
assert_false "while every reader waits before its first read, no chunk is stored" pack_started
touch "$hold/release-a0.hold"
wait_until 60 reached 5 || fail "reader A did not go on to the next held file" "$(_tail "$backup_err")"
if wait_until 60 pack_started; then
    pass "every reader waiting, the main thread handed the open batch to the workers"
else
    fail "no chunk was stored while every reader waited: the open batch was not handed over"
fi
touch "$hold/release"
wait "$backup"
assert_eq 0 "$?" "the backup with the hand-over ends well"
id=$(json_get "$backup_out" '["id"]')
assert_exit 0 cb verify "$id"
t=$TEST_TMP/restore-stall
mkdir "$t"
assert_exit 0 cb restore files "$id" --target "$t"
tree_compare "$st" "$t$st"

# --- a pack of a backup deleted: verify says DAMAGED (exit 4), names the missing chunk, and
# its hint does not call it a checksum mismatch ------------------------------------------------
backup_new_pack 11 lost-pack
lid=$BACKUP_ID
rm -f "$PACK"
run cb verify "$lid"
assert_rc 4 "verify of a backup with a pack deleted: exit 4"
assert_contains "$OUT" "DAMAGED" "it says damaged"
assert_contains "$OUT" "is not in the repository index" "it names the missing chunk"
assert_not_contains "$ERR" "HINT: checksum mismatch" "the hint does not claim a checksum mismatch"

# --- a backup made before the fix: the truncated file's entry kept its old size -----------
# (fixtures/repo-truncated.README): it verifies and restores as the bytes that were read.
old_dir=$TEST_TMP/old
mkdir -p "$old_dir"
cp -r "$LIB_DIR/fixtures/repo-truncated" "$old_dir/repository"
chmod -R u+w "$old_dir/repository"
old() { env BACKUP_DIR="$old_dir" BACKUP_ENCRYPTION_KEY='fixture key for the truncated-file repository 0123' "$@"; }
run old "$CARIS_BIN" --json list
old_id=$(json_eval "$OUT_FILE" 'd[0]["id"]' 2>/dev/null)
assert_match '^file_full_' "$old_id" "the older repository's backup is listed"
assert_exit 0 old "$CARIS_BIN" verify "$old_id"
mkdir "$TEST_TMP/old-restore"
assert_exit 0 old "$CARIS_BIN" restore files "$old_id" --target "$TEST_TMP/old-restore"
got=$(cd "$TEST_TMP/old-restore/tmp/trfix/src" 2>/dev/null && sha256sum zeros.log hello.txt)
assert_eq "a973958be9796e1828804c04894509fdf6b70d2c77b62b49bd2cef25674c032b  zeros.log
23de10b5548856825482d55122a5d56058934773cdc20013f3ca6d6b478afc66  hello.txt" "$got" \
    "the older backup restores the 6,000,000 bytes read, and the other file"
assert_eq 6000000 "$(old "$CARIS_BIN" dump "$old_id" /tmp/trfix/src/zeros.log | wc -c)" "dump gives the bytes read"
assert_exit 0 old "$CARIS_BIN" check --read-data

# A repository on a read-only file system (an off-site disk or a snapshot mounted read-only
# for a disaster recovery) is read without a lock: restore, verify, ls, check and the dry runs
# of forget and prune work (prune --dry-run failed, exit 9, "needs the exclusive lock"); a
# backup into it still fails at once (exit 8), saying the file system is read-only. Every
# command used to fail on its lock file (exit 8), restores included.
ro_src=$TEST_TMP/ro-src
mkdir -p "$ro_src" && seeded_bytes 70001 ro >"$ro_src/f"
ro() { env BACKUP_DIR="$TEST_TMP/ro-bd" "$@"; }
assert_exit 0 ro "$CARIS_BIN" --quiet init --kdf-memory 8 --kdf-ops 1
assert_exit 0 ro "$CARIS_BIN" --quiet backup files "$ro_src"
if unshare -m true 2>/dev/null; then
    rorepo=$TEST_TMP/ro-bd/repository
    run unshare -m bash -c 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 99
        export BACKUP_DIR=$2
        "$3" restore files latest --target "$4" || exit 11
        "$3" verify latest || exit 12
        "$3" ls latest >/dev/null || exit 13
        "$3" check || exit 14
        "$3" forget --dry-run >/dev/null || exit 15
        "$3" prune --dry-run >/dev/null || exit 16
        "$3" backup files "$5"; echo "backup exit $?"' \
        ro "$rorepo" "$TEST_TMP/ro-bd" "$CARIS_BIN" "$TEST_TMP/ro-out" "$ro_src"
    if [[ $RC == 99 ]]; then
        note "no read-only bind mount here: the read-only repository case is skipped"
    else
        assert_rc 0 "restore, verify, ls, check, forget and prune --dry-run of a repository on a read-only file system"
        assert_eq "$(sha256sum <"$ro_src/f")" "$(sha256sum <"$TEST_TMP/ro-out$ro_src/f")" "the restore is exact"
        assert_contains "$ERR" "read-only file system: restore files reads it without a lock" \
            "the restore says it reads without a lock (a warning met after the opening)"
        assert_contains "$OUT" "backup exit 8" "a backup into it fails (exit 8)"
        assert_contains "$ERR" "Read-only file system" "and says why"
        assert_eq "" "$(find "$rorepo/locks" -type f)" "no lock file was left"
    fi
else
    note "no mount namespaces here: the read-only repository case is skipped"
fi

test_done

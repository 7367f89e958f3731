#!/usr/bin/env bash
# Direct I/O (O_DIRECT) in a file backup: files of 64 KiB or more are read, and packs written,
# past the page cache where the file system allows it. The bytes are the same: files of sizes
# at the edges of the aligned reads (the 64 KiB threshold, the 1 MiB read, a chunk of up to
# 4 MiB carried over into the next read, a tail shorter than a block, a sparse file) restore
# exactly and check --read-data reads every pack. And the cache is left alone: the files read
# and the packs written are not resident after the backup (fincore). Direct I/O is used on
# local block file systems only (ext4, XFS, btrfs, F2FS): elsewhere (tmpfs, NFS) the cache
# checks and the injected faults below are skipped.
# Last, with tests/integration/dio_faults.c preloaded, direct reads and writes are refused
# (EINVAL, EOPNOTSUPP) or cut short, as some file systems do: the backup goes on through the
# cache and restores the same bytes.
#
# Direct I/O needs a local block file system: when the run's temporary directories are on a
# tmpfs (scripts/test.sh: /dev/shm for the sanitizer builds' tests), this test's files go to
# a directory of its own under CARIS_TEST_DISK_TMPDIR (test.sh: the disk's temporary
# directory), removed at its end.
W=$TEST_TMP
if [[ $(stat -f -c %T "$TEST_TMP") == tmpfs && -d ${CARIS_TEST_DISK_TMPDIR:-} ]]; then
    W=$(mktemp -d "$CARIS_TEST_DISK_TMPDIR/caris-it-direct-io.XXXXXX") || exit 1
    chmod 755 "$W"
    export BACKUP_DIR=$W/backup
fi
source "$(dirname "$0")/lib.sh"
[[ $W == "$TEST_TMP" ]] || at_exit '_lib_on_exit; rm -rf "$W"'

src=$W/src
mkdir -p "$src"
sizes=(65535 65536 65537 1048575 1048576 1048577 4198399 5246977 9437185)
# Deterministic bytes: a seeded generator; every other file compressible text, so that
# blobs of both kinds (stored compressed and raw) go through the direct writes.
python3 - "$src" "${sizes[@]}" <<'EOF'
import os, random, sys
d = sys.argv[1]
for i, n in enumerate(int(a) for a in sys.argv[2:]):
    r = random.Random(1000 + i)
    if i % 2:
        words = [b"record", b"patient", b"session", b"note", b"2024-01-15", b"\n"]
        data = b" ".join(r.choice(words) for _ in range(n // 4 + 1))[:n]
    else:
        data = r.randbytes(n)
    with open(os.path.join(d, "f%d" % n), "wb") as f:
        f.write(data)
# sparse: 3 MiB long, 200,001 bytes of data from 1 MiB + 5
with open(os.path.join(d, "sparse"), "wb") as f:
    f.truncate(3 << 20)
    f.seek((1 << 20) + 5)
    f.write(random.Random(7).randbytes(200001))
EOF
for n in "${sizes[@]}"; do
    assert_eq "$n" "$(stat -c %s "$src/f$n")" "f$n has $n bytes"
done

# The files out of the page cache: written back, then dropped (GNU dd's nocache with count=0
# drops a whole file's clean pages).
sync
for f in "$src"/*; do dd if="$f" iflag=nocache count=0 status=none; done
resident() { fincore --bytes --noheadings "$@" | awk '{s += $1} END {print s + 0}'; }
fs=$(stat -f -c %T "$W")
# direct I/O is used on local block file systems only (fs_direct_on): ext2/3/4, XFS,
# btrfs, F2FS
local_fs=false
case $(stat -f -c %t "$W") in ef53 | 58465342 | 9123683e | f2f52010) local_fs=true ;; esac
cache_checks=true
if ! $local_fs; then
    cache_checks=false
    skip "the page cache checks and the injected faults: $fs on $W gets no direct I/O"
elif ! command -v fincore >/dev/null; then
    cache_checks=false
    skip "the page cache checks: no fincore (Debian: util-linux-extra)"
elif [[ $(resident "$src"/f*) != 0 ]]; then
    cache_checks=false
    skip "the page cache checks: $fs on $W keeps the files resident"
fi

init_repo
backup_json "$TEST_TMP/full.json" --full "$src"
assert_rc 0 "full backup"
id=$BACKUP_ID
# every byte of data read (the sparse file's hole is not: its data is 200,001 bytes in whole
# blocks)
read=$(json_get "$TEST_TMP/full.json" '["stats"]["bytesRead"]')
sum=$(du -cb "$src"/f* | tail -n1 | cut -f1)
assert_cmp "$read" -ge $((sum + 200001)) "bytesRead covers every file's data"
assert_cmp "$read" -lt $((sum + (1 << 20))) "bytesRead leaves out the hole"

# A file under 64 KiB is read through the cache: if it is not there after the backup, this
# file system (or something that dropped the cache meanwhile) does not keep what is read, and
# the checks below would prove nothing.
if $cache_checks && [[ $(resident "$src/f65535") == 0 ]]; then
    cache_checks=false
    skip "the page cache checks: $fs on $W did not keep a file read through the cache"
fi
if $cache_checks; then
    # every file of 64 KiB or more was read directly: none of it is cached
    big=()
    for n in "${sizes[@]}"; do ((n >= 65536)) && big+=("$src/f$n"); done
    assert_eq 0 "$(resident "${big[@]}")" "the files read are not in the page cache after the backup"
    mapfile -t packs < <(list_packs)
    assert_cmp "${#packs[@]}" -ge 1 "the backup wrote packs"
    total=$(du -cb "${packs[@]}" | tail -n1 | cut -f1)
    # written directly; a few pieces may be read back (blobs of a partly filled pack moved
    # into another at the end of the backup), so not necessarily 0, but far from all of it
    res=$(resident "${packs[@]}")
    assert_cmp $((res * 4)) -lt "$total" "the packs written are not in the page cache ($res of $total bytes)"
fi

# The same bytes: a restore (each file checked against its SHA-256 as it is written) compared
# byte for byte, holes included, and every pack read and authenticated.
target=$W/restore
mkdir "$target"
assert_exit 0 cb restore files "$id" --target "$target"
tree_compare "$src" "$target$src"
for n in "${sizes[@]}"; do
    assert_true "f$n restored byte for byte" cmp "$src/f$n" "$target$src/f$n"
done
assert_exit 0 cb check --read-data

# An incremental after appending to one file and rewriting another reads them again (directly):
# restored, they are the new bytes.
python3 - "$src" <<'EOF'
import os, random, sys
d = sys.argv[1]
with open(os.path.join(d, "f1048577"), "ab") as f:
    f.write(random.Random(11).randbytes(12345))
with open(os.path.join(d, "f65536"), "r+b") as f:
    f.seek(4097)
    f.write(b"changed in the middle")
EOF
backup_json "$TEST_TMP/incr.json" --incremental "$src"
assert_rc 0 "incremental backup"
assert_eq $((1048577 + 12345 + 65536)) "$(json_get "$TEST_TMP/incr.json" '["stats"]["bytesRead"]')" \
    "the incremental read the two changed files"
target2=$W/restore2
mkdir "$target2"
assert_exit 0 cb restore files "$BACKUP_ID" --target "$target2"
tree_compare "$src" "$target2$src"
assert_exit 0 cb check --read-data

# A file system that refuses direct I/O, or cuts a direct read or write short: the backup
# goes on buffered, with the same bytes. tests/integration/dio_faults.c makes the calls fail
# (LD_PRELOAD): this machine's file systems take O_DIRECT.
if ! $local_fs; then
    test_done
fi
shim=$TEST_TMP/dio_faults.so
if ! cc -shared -fPIC -O2 -o "$shim" "$(dirname "$0")/dio_faults.c" -ldl 2>"$TEST_TMP/cc.err"; then
    fail "cannot build the fault injector: $(head -c 300 "$TEST_TMP/cc.err")"
    test_done
fi
for mode in read-refuse read-notsup read-short write-refuse write-short; do
    repo=$W/repo-$mode
    mkdir "$repo"
    : >"$TEST_TMP/faults-$mode"
    assert_exit 0 env BACKUP_DIR="$repo" "$CARIS_BIN" --quiet init
    assert_exit 0 env BACKUP_DIR="$repo" LD_PRELOAD="$shim" DIO_FAULT="$mode" \
        DIO_FAULT_LOG="$TEST_TMP/faults-$mode" "$CARIS_BIN" --json backup files --full "$src"
    got=$(json_get "$OUT_FILE" '["id"]')
    faults=$(awk '{s += $2} END {print s + 0}' "$TEST_TMP/faults-$mode")
    assert_cmp "$faults" -gt 0 "$mode: the injector changed direct calls"
    out=$W/restore-$mode
    mkdir "$out"
    assert_exit 0 env BACKUP_DIR="$repo" "$CARIS_BIN" restore files "$got" --target "$out"
    tree_compare "$src" "$out$src"
    assert_exit 0 env BACKUP_DIR="$repo" "$CARIS_BIN" check --read-data
done

test_done

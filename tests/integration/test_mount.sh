#!/usr/bin/env bash
# mount: the case tree (odd names, hard links, a sparse file, a path longer than PATH_MAX,
# xattrs, owners, special modes) read back through the FUSE file system and compared entry by
# entry with the source (treecmp.py: content, size, mode, owner, mtime to the nanosecond,
# symlinks, hard links, xattrs, sparseness); `latest`; read-only; the shared lock; a damaged
# pack fails the damaged file only (EIO); SIGTERM unmounts and exits 0; the errors.
source "$(dirname "$0")/lib.sh"

if [[ ! -c /dev/fuse ]]; then
    skip "/dev/fuse is missing on this machine: mount cannot be tested here"
    test_done
fi

src=$TEST_TMP/src
mnt=$TEST_TMP/mnt
mkdir "$mnt"
make_tree "$src" || fail "make_tree failed"
seeded_bytes 12M mount/large >"$src/docs/large.bin" # several chunks: readahead, jumps
# a file with a POSIX ACL whose mask is narrower than the owning group's entry:
# -rw-r-----+ root:users; user::rw-, user:nobody:r--, group::---, mask::r--, other::---
# (written as the xattr: setfacl is not installed everywhere)
acl_file=$src/acl-notes.txt
printf 'session notes\n' >"$acl_file"
chown 0:100 "$acl_file" && chmod 0600 "$acl_file"
have_acl=false
if [[ $(id -u) == 0 ]] && python3 - "$acl_file" <<'EOF_ACL'; then
import os, struct, sys
none = 0xFFFFFFFF
entries = [(0x01, 6, none), (0x02, 4, 65534), (0x04, 0, none), (0x10, 4, none), (0x20, 0, none)]
os.setxattr(sys.argv[1], "system.posix_acl_access",
            struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *x) for x in entries))
EOF_ACL
    have_acl=true
    assert_eq "-rw-r-----+" "$(ls -l "$acl_file" | cut -c1-11)" "the ACL file as ls shows it"
    assert_false "on the source, uid 4242 of group 100 (group::---) cannot read the ACL file" \
        setpriv --reuid=4242 --regid=100 --clear-groups cat "$acl_file"
fi
assert_exit 0 cb init
# the directories above the root are recorded, and the mount shows them so: another user may pass
# through this test's directory (0700 as made) to reach the tree, as --allow-other tests below
chmod 0711 "$TEST_TMP"

backup_json "$TEST_TMP/b1.json" --full --time 2024-01-15T03:00:00Z "$src"
assert_rc 3 "first backup (the socket and the device are skipped with warnings)"
id1=$BACKUP_ID
tree_snapshot "$src" "$TEST_TMP/snap1.json"
# known changes for the second backup
printf 'added later\n' >"$src/added.txt"
rm "$src/docs/numbers.txt"
backup_json "$TEST_TMP/b2.json" --time 2024-01-16T03:00:00Z "$src"
assert_rc 3 "second backup"
id2=$BACKUP_ID
assert_ne "$id1" "$id2" "two backups"

# mounted: the process lives, the mount point answers (polled with a deadline)
mounted() { mountpoint -q "$mnt"; }
unmounted() { ! mountpoint -q "$mnt"; }
bg_start cb mount "$mnt"
MOUNT_PID=$BG_PID
MOUNT_ERR=$BG_ERR
assert_true "the mount appears" wait_until 30 mounted

# ---- the top level -------------------------------------------------------------------------
top=$(ls -A "$mnt" | sort | tr '\n' ' ')
assert_eq "$(printf '%s\n' "$id1" "$id2" latest | sort | tr '\n' ' ')" "$top" "DIR holds one directory per backup and latest"
assert_eq "$id2" "$(readlink "$mnt/latest")" "latest is a symbolic link to the newest backup"
assert_true "a backup's directory is a directory" test -d "$mnt/$id1"
assert_eq 4 "$(stat -c %i "$mnt" "$mnt/$id1" "$mnt/$id2" "$mnt/latest" | sort -u | wc -l)" \
    "inode numbers: DIR, each backup and latest have their own"
run find "$mnt" -maxdepth 2
assert_rc 0 "find walks DIR without a loop warning"
opts=$(awk -v m="$mnt" '$2 == m {print $4}' /proc/mounts)
assert_match '(^|,)ro(,|$)' "$opts" "mounted read-only"
assert_match '(^|,)nosuid(,|$)' "$opts" "mounted nosuid: a backed-up setuid file gives no power"
assert_match '(^|,)nodev(,|$)' "$opts" "mounted nodev"
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
if [[ $(id -u) == 0 ]]; then
    assert_false "without --allow-other, another user cannot even look" as_nobody ls "$mnt/latest/"
    assert_contains "$(cat "$TEST_TMP/.check.err")" "Permission denied" "permission denied"
fi

# ---- the whole tree, entry by entry ----------------------------------------------------------
tree_compare "@$TEST_TMP/snap1.json" "$mnt/$id1$src" --skip-special
tree_compare "$src" "$mnt/latest$src" --skip-special

# a few cases spelled out (treecmp covers every entry; these say what matters)
b=$mnt/$id1$src
assert_true "sparse file: same bytes" cmp "$src/sparse.img" "$b/sparse.img"
assert_eq "$(stat -c '%s %a %Y %u:%g' "$src/sparse.img")" "$(stat -c '%s %a %Y %u:%g' "$b/sparse.img")" "sparse file: size, mode, mtime, owner"
assert_cmp "$(stat -c %b "$b/sparse.img")" -le 64 "sparse file: its holes take no blocks"
assert_true "a name with a newline" cmp "$src/"$'name\nwith newline' "$b/"$'name\nwith newline'
assert_true "a name that is not UTF-8" cmp "$src/"$'non-utf8-\xff\xfe' "$b/"$'non-utf8-\xff\xfe'
assert_true "a file in a directory whose name is not UTF-8" cmp "$src/"$'dir-\xc3\x28-bad/file' "$b/"$'dir-\xc3\x28-bad/file'
assert_true "a multi-chunk file" cmp "$src/docs/reports/random.bin" "$b/docs/reports/random.bin"
# reads at random places, backwards and forwards, with the kernel's page cache dropped each
# time, so that every read reaches the file system (readahead dropped and started again)
cat >"$TEST_TMP/randread.py" <<'EOF'
import os, random, sys
random.seed(20261130)
src = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_RDONLY)
pos = len(src)
for i in range(int(sys.argv[3]) if len(sys.argv) > 3 else 400):
    if i % 4 == 0:
        pos = random.randrange(0, len(src))  # a jump
    n = random.randrange(1, 400000)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    got = os.pread(fd, n, pos)
    if got != src[pos:pos + n]:
        sys.exit("read of %d bytes at %d differs" % (n, pos))
    pos = min(pos + len(got), len(src) - 1) if i % 3 else max(pos - n, 0)
EOF
assert_true "random reads of a multi-chunk file" python3 "$TEST_TMP/randread.py" "$src/docs/large.bin" "$b/docs/large.bin"
assert_eq "$(stat -c '%a %u:%g' "$src/setuid-file")" "$(stat -c '%a %u:%g' "$b/setuid-file")" "setuid mode"
assert_eq "1234:5678" "$(stat -c '%u:%g' "$b/owned-by-1234")" "owner"
assert_eq "hello.txt" "$(readlink "$b/link-to-hello")" "readlink"
assert_eq "does/not/exist" "$(readlink "$b/dangling-link")" "a dangling symlink"
assert_eq "$(stat -c %y "$src/hello.txt")" "$(stat -c %y "$b/hello.txt")" "mtime to the nanosecond"
assert_eq "$(stat -c %i "$b/hardlink-a")" "$(stat -c %i "$b/docs/hardlink-b")" "hard links: one inode"
assert_eq 2 "$(stat -c %h "$b/hardlink-a")" "hard links: two names"
assert_eq hello "$(getfattr --only-values -n user.x "$b/xattr-file" 2>/dev/null)" "getxattr"
assert_eq "$(getfattr -d -e hex "$src/xattr-file" 2>/dev/null | tail -n +2)" \
    "$(getfattr -d -e hex "$b/xattr-file" 2>/dev/null | tail -n +2)" "listxattr and binary values"
assert_true "a FIFO" test -p "$b/fifo"
assert_false "the socket is not there (it was skipped)" test -e "$b/unix.sock"
assert_true "the second backup has the file added" cmp "$src/added.txt" "$mnt/$id2$src/added.txt"
assert_false "the second backup lacks the file removed" test -e "$mnt/$id2$src/docs/numbers.txt"
assert_true "the first backup still has it" test -f "$b/docs/numbers.txt"
assert_false "no such backup" test -e "$mnt/file_full_1999"

# ---- read-only, locked ---------------------------------------------------------------------
assert_false "cannot create a file" touch "$b/new-file"
assert_false "cannot write a file" bash -c 'echo x >>"$1"' _ "$b/hello.txt"
assert_false "cannot remove a file" rm -f "$b/hello.txt"
assert_false "cannot set an xattr" setfattr -n user.y -v 1 "$b/xattr-file"
assert_true "the file is intact" cmp "$src/hello.txt" "$b/hello.txt"
assert_exit 9 cb prune
assert_contains "$ERR" "mount" "prune waits for the mount: the lock names it"

# ---- SIGTERM: unmount, exit 0, no lock left ----------------------------------------------------
kill -TERM "$MOUNT_PID"
assert_true "SIGTERM unmounts" wait_until 30 unmounted
wait "$MOUNT_PID"
assert_eq 0 "$?" "the mount process exits 0 after SIGTERM"
assert_eq "" "$(ls -A "$mnt")" "the mount point is empty again"
assert_eq "" "$(find "$REPO/locks" -type f ! -name '.*')" "no lock left"
assert_contains "$(cat "$MOUNT_ERR")" "unmounted $mnt" "it says it unmounted"

# a tree kept private by a directory above its root (0700 private/, 0755 private/data, a 0644
# file): dated before the others, so that latest stays
priv=$TEST_TMP/private
mkdir -p "$priv/data"
chmod 0700 "$priv"
printf 'private record\n' >"$priv/data/open.txt"
chmod 0644 "$priv/data/open.txt"
backup_json "$TEST_TMP/bp.json" --full --time 2020-01-01T03:00:00Z "$priv/data"
assert_rc 0 "a backup of a tree below a private directory"
idp=$BACKUP_ID

# --json: what was served; SIGINT works as SIGTERM does; --allow-other
bg_start cb --json mount "$mnt" --allow-other --cache-mib 1
assert_true "mounted again" wait_until 30 mounted
assert_true "read through the second mount" cmp "$src/hello.txt" "$mnt/latest$src/hello.txt"
# a cache of 1 MiB (one chunk): every read in the random walk loads its chunks, readahead
# is dropped at each jump with loads in flight (120 reads, 30 jumps: the 400 of the walk above
# took 13 CPU-s with ASan, over half of the test's)
assert_true "random reads with a one-chunk cache" python3 "$TEST_TMP/randread.py" "$src/docs/large.bin" "$mnt/latest$src/docs/large.bin" 120
# the kernel enforces the backed-up modes (default_permissions): another user reads what the
# modes let them read, and nothing else
if [[ $(id -u) == 0 ]]; then
    l=$mnt/latest$src
    assert_true "--allow-other: another user reads a 0644 file" as_nobody cat "$l/hello.txt"
    # (the directories above a root were 0555 in the mount, whatever they were on the source)
    assert_false "on the source, another user cannot read a 0644 file below a 0700 directory" \
        as_nobody cat "$priv/data/open.txt"
    assert_false "--allow-other: nor through the mount (the 0700 directory above the root)" \
        as_nobody cat "$mnt/$idp$priv/data/open.txt"
    assert_eq 700 "$(stat -c %a "$mnt/$idp$priv")" "... which the mount shows as it was"
    assert_eq "private record" "$(cat "$mnt/$idp$priv/data/open.txt")" "root reads it"
    assert_false "--allow-other: another user cannot read root's 0400 file" as_nobody cat "$l/read-only"
    assert_contains "$(cat "$TEST_TMP/.check.err")" "Permission denied" "permission denied"
    assert_true "root reads it" cmp "$src/read-only" "$l/read-only"
    # POSIX ACLs are the kernel's to check too (FUSE_CAP_POSIX_ACL): the mode's group bits
    # (r) are the ACL's mask, and the owning group's entry is ---
    if $have_acl; then
        assert_false "--allow-other: the ACL's owning group (group::---) cannot read the file" \
            setpriv --reuid=4242 --regid=100 --clear-groups cat "$l/acl-notes.txt"
        assert_contains "$(cat "$TEST_TMP/.check.err")" "Permission denied" "permission denied by the ACL"
        assert_eq "session notes" "$(as_nobody cat "$l/acl-notes.txt")" \
            "--allow-other: the user the ACL names (user:nobody:r--) reads the file"
    else
        skip "the file system of $TEST_TMP takes no POSIX ACL: the ACL checks are not tested"
    fi
else
    skip "not root: the --allow-other permission checks need another user"
fi
# a file still open (with chunks asked for ahead) when the mount ends
exec {held}<"$mnt/latest$src/docs/large.bin"
assert_eq 4096 "$(head -c 4096 <&"$held" | wc -c)" "a file held open, partly read"
kill -INT "$BG_PID"
assert_true "SIGINT unmounts" wait_until 30 unmounted
wait "$BG_PID"
assert_eq 0 "$?" "the mount process exits 0 after SIGINT (a file still open)"
exec {held}<&-
assert_json "$BG_OUT" "--json: a JSON document at the end"
# (as root, the private backup was looked into too)
assert_eq "$(($(id -u) == 0 ? 2 : 1))" "$(json_get "$BG_OUT" '["backupsLoaded"]')" \
    "--json: only the backups looked into were loaded (entries are loaded lazily)"
assert_eq 0 "$(json_get "$BG_OUT" '["readErrors"]')" "--json: no failed read"
assert_cmp "$(json_get "$BG_OUT" '["chunksLoaded"]')" -gt 100 "--json: with a one-chunk cache, chunks are loaded again and again"

# ---- errors ---------------------------------------------------------------------------------
printf 'x\n' >"$TEST_TMP/not-empty-file"
mkdir "$TEST_TMP/not-empty" && printf 'x\n' >"$TEST_TMP/not-empty/f"
assert_exit 2 cb mount "$TEST_TMP/not-empty"
assert_contains "$ERR" "is not empty" "a mount point that is not empty is refused"
assert_exit 2 cb mount "$TEST_TMP/not-empty-file"
assert_contains "$ERR" "not a directory" "a file as mount point is refused"
assert_exit 7 cb mount "$TEST_TMP/missing"
assert_contains "$ERR" "mount point $TEST_TMP/missing" "a missing mount point: named"
assert_exit 2 cb mount
assert_exit 2 cb mount "$mnt" --bogus
assert_exit 2 cb mount "$mnt" --cache-mib 0
assert_exit 0 cb mount --help
assert_contains "$OUT" "usage: caris-backup" "mount --help"
# /dev/fuse missing: in a mount namespace of our own, an empty /dev, with /dev/shm put back
# (scripts/test.sh has the sanitizer builds' tests keep their files there)
if unshare -m true 2>/dev/null; then
    keep=$(mktemp -d "${CARIS_TEST_DISK_TMPDIR:-/tmp}/caris-it-shm.XXXXXX")
    run unshare -m bash -c 'mount --bind /dev/shm "$2" && mount -t tmpfs tmpfs /dev &&
        mkdir /dev/shm && mount --move "$2" /dev/shm && exec "$0" mount "$1"' \
        "$CARIS_BIN" "$mnt" "$keep"
    rmdir "$keep"
    assert_rc 6 "no /dev/fuse: a configuration error"
    assert_contains "$ERR" "/dev/fuse is missing" "no /dev/fuse: said so"
else
    skip "unshare -m is not permitted here: the missing /dev/fuse case is not tested"
fi
assert_eq "" "$(find "$REPO/locks" -type f ! -name '.*')" "the refused mounts left no lock"

# an empty repository mounts as an empty directory; unmounted from outside, mount exits 0
export BACKUP_DIR=$TEST_TMP/empty
assert_exit 0 cb init
bg_start cb mount "$mnt"
assert_true "an empty repository mounts" wait_until 30 mounted
assert_eq "" "$(ls -A "$mnt")" "no backups, no latest"
kill -TERM "$BG_PID"
assert_true "unmounted" wait_until 30 unmounted
wait "$BG_PID"
# SIGHUP (the terminal closed) unmounts too
bg_start cb mount "$mnt"
assert_true "mounted" wait_until 30 mounted
kill -HUP "$BG_PID"
assert_true "SIGHUP unmounts" wait_until 30 unmounted
wait "$BG_PID"
assert_eq 0 "$?" "the mount process exits 0 after SIGHUP"
bg_start cb mount "$mnt"
assert_true "mounted" wait_until 30 mounted
# A mount namespace made while it is mounted (unshare -m, a service's PrivateTmp=; here another
# test's, running at the same time, once held this test up for ten minutes) has a copy of the
# mount, which keeps the FUSE connection alive after an unmount here: the mount process still
# ends, and the copy is left "not connected".
holder=""
if unshare -m true 2>/dev/null; then
    mkfifo "$TEST_TMP/ns.fifo"
    unshare -m bash -c ': >"$3"; read -r _ <"$1"; ls "$2"; echo "rc $?"' _ "$TEST_TMP/ns.fifo" \
        "$mnt" "$TEST_TMP/ns.ready" >"$TEST_TMP/ns.out" 2>&1 &
    holder=$!
    assert_true "a mount namespace with a copy of the mount" wait_until 30 test -e "$TEST_TMP/ns.ready"
fi
if [[ $(id -u) == 0 ]]; then
    assert_true "umount from outside" umount "$mnt"
else
    assert_true "fusermount3 -u from outside" fusermount3 -u "$mnt"
fi
mount_gone() { ! kill -0 "$BG_PID" 2>/dev/null; }
assert_true "unmounted from outside: the mount process ends (a copy elsewhere or not)" \
    wait_until 30 mount_gone
if [[ -n $holder ]]; then # (before the wait: a mount process that serves the copy ends with it)
    echo go 1<>"$TEST_TMP/ns.fifo" # (read-write: never blocks, though the holder be gone)
    wait "$holder"
    assert_contains "$(cat "$TEST_TMP/ns.out")" "not connected" \
        "the copy in the other namespace is no longer served"
fi
wait "$BG_PID"
assert_eq 0 "$?" "unmounted from outside: mount exits 0"
assert_eq "" "$(find "$BACKUP_DIR/repository/locks" -type f ! -name '.*')" "and leaves no lock"
# kill -9: the mount stays behind ("Transport endpoint is not connected"); mounting again says
# to unmount it first, and the dead process's lock is stale
bg_start cb mount "$mnt"
assert_true "mounted" wait_until 30 mounted
mount_pid=$BG_PID
kill -9 "$mount_pid"
wait "$mount_pid"
run cb --json unlock
assert_rc 0 "unlock after the mount was killed"
assert_eq 1 "$(json_eval "$OUT_FILE" 'len(d["removed"])')" "its lock is removed as stale"
run cb mount "$mnt"
assert_rc 8 "mounting over the mount left behind fails (exit 8)"
assert_contains "$ERR" "fusermount3 -u" "... and says to unmount it first"
if [[ $(id -u) == 0 ]]; then
    assert_true "umount of the mount left behind" umount "$mnt"
else
    assert_true "fusermount3 -u of the mount left behind" fusermount3 -u "$mnt"
fi

# ---- damage: EIO on the damaged file only, never its bytes ----------------------------------------
export BACKUP_DIR=$TEST_TMP/damaged
REPO=$BACKUP_DIR/repository
mkdir -p "$TEST_TMP/d/sub"
seeded_bytes 3M mount/patient-scan >"$TEST_TMP/d/patient-scan.bin"
printf 'small\n' >"$TEST_TMP/d/sub/small.txt"
assert_exit 0 cb init
backup_json "$TEST_TMP/d.json" "$TEST_TMP/d"
assert_rc 0 "backup of the tree to damage"
pack=$(list_packs | xargs -d '\n' ls -S | head -n 1)
flip_byte "$pack"
# a backup of an empty directory: its only new pack holds its file list; damage that
list_packs >"$TEST_TMP/packs.before"
mkdir "$TEST_TMP/e"
backup_json "$TEST_TMP/e.json" "$TEST_TMP/e"
assert_rc 0 "backup whose file list is then damaged"
eid=$BACKUP_ID
meta=$(list_packs | comm -13 "$TEST_TMP/packs.before" -)
assert_eq 1 "$(printf '%s\n' "$meta" | grep -c .)" "one new pack: the file list's"
flip_byte "$meta" 41 # its first blob (packs are padded: the middle is the trailer)
bg_start cb mount "$mnt"
assert_true "mounted the damaged repository" wait_until 30 mounted
did=$(json_get "$TEST_TMP/d.json" '["id"]')
d=$mnt/$did$TEST_TMP/d
run bash -c 'cat "$1" >"$2"' _ "$d/patient-scan.bin" "$TEST_TMP/scan.out"
assert_fails "reading the damaged file fails"
assert_contains "$ERR" "Input/output error" "with EIO"
n=$(stat -c %s "$TEST_TMP/scan.out")
assert_cmp "$n" -lt $((3 << 20)) "the read stopped before the end of the file"
assert_true "what was read is the file's own first bytes" cmp -n "$n" "$TEST_TMP/scan.out" "$TEST_TMP/d/patient-scan.bin"
assert_true "an intact file of the damaged backup reads" cmp "$TEST_TMP/d/sub/small.txt" "$d/sub/small.txt"
assert_eq 3145728 "$(stat -c %s "$d/patient-scan.bin")" "the damaged file's metadata is there"
run ls "$mnt/$eid/"
assert_fails "a backup whose file list is damaged cannot be listed"
assert_contains "$ERR" "Input/output error" "with EIO"
assert_true "the other backup still reads" cmp "$TEST_TMP/d/sub/small.txt" "$d/sub/small.txt"
kill -TERM "$BG_PID"
assert_true "unmounted" wait_until 30 unmounted
wait "$BG_PID"
assert_eq 0 "$?" "exit 0 after SIGTERM, damage or not"
assert_contains "$(cat "$BG_ERR")" "patient-scan.bin" "the damaged chunk is logged with the file's path"
assert_eq 1 "$(grep -c 'patient-scan.bin' "$BG_ERR")" "once, though the kernel asked for it more than once"
assert_contains "$(cat "$BG_ERR")" "cannot show backup $eid" "the damaged file list is logged with the backup's id"
assert_contains "$(cat "$BG_ERR")" "failed reads" "the summary counts failed reads"

# ---- a damaged newest snapshot: no `latest`, never the older backup's files as latest ----------
list_snaps() { find "$REPO/snapshots" -type f ! -name '.*' | LC_ALL=C sort; }
list_snaps >"$TEST_TMP/snaps.before"
backup_json "$TEST_TMP/n.json" "$TEST_TMP/d/sub"
assert_rc 0 "a newest backup, whose snapshot file is then damaged"
nid=$BACKUP_ID
snap=$(list_snaps | comm -13 "$TEST_TMP/snaps.before" -)
assert_eq 1 "$(printf '%s\n' "$snap" | grep -c .)" "one new snapshot file"
bg_start cb mount "$mnt"
assert_true "mounted" wait_until 30 mounted
assert_eq "$nid" "$(readlink "$mnt/latest")" "snapshot whole: latest is the newest backup"
kill -TERM "$BG_PID"
assert_true "unmounted" wait_until 30 unmounted
wait "$BG_PID"
flip_byte "$snap"
assert_exit 4 cb ls latest
bg_start cb mount "$mnt"
assert_true "mounted with the newest snapshot damaged" wait_until 30 mounted
assert_false "no latest link (it would be an older backup's)" test -L "$mnt/latest"
assert_true "the backups that can be read are there" test -d "$mnt/$did$TEST_TMP/d"
kill -TERM "$BG_PID"
assert_true "unmounted" wait_until 30 unmounted
wait "$BG_PID"
assert_contains "$(cat "$BG_ERR")" "no \`latest\` link: backup $nid cannot be read" "the warning says why there is no latest"
assert_contains "$(cat "$BG_ERR")" "$(basename "$snap")" "... and names the damaged snapshot file"

test_done

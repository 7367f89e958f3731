#!/usr/bin/env bash
# A restore never clobbers what it was not asked to, and never writes outside its target:
# a non-empty target needs --overwrite; symlinks planted in the target are not followed;
# --include restores exactly the chosen subtrees.
source "$(dirname "$0")/lib.sh"

src=$TEST_TMP/src
mkdir -p "$src/sub/deeper" "$src/other"
printf 'top\n' >"$src/top.txt"
printf 'b\n' >"$src/sub/b.txt"
printf 'c\n' >"$src/sub/deeper/c.txt"
printf 'o\n' >"$src/other/o.txt"
init_repo
backup_json "$TEST_TMP/b.json" "$src"
assert_rc 0 "backup"

# --- a target inside the repository is refused before anything is written --------------------
# (restored files used to land among the repository's objects, and check still said "no
# errors found")
snaps_before=$(find "$REPO" | sort)
for t in "$REPO/snapshots/zz" "$REPO" "$REPO/" "$REPO/data/new" "$REPO/../repository/x"; do
    run cb restore files latest --target "$t" --overwrite
    assert_rc 2 "a restore target inside the repository ($t) is refused"
    assert_contains "$ERR" "inside the repository" "the error says why ($t)"
done
assert_eq "$snaps_before" "$(find "$REPO" | sort)" "nothing was written into the repository"
id=$BACKUP_ID

outside=$TEST_TMP/outside
mkdir "$outside"
# shellcheck disable=SC2317 # called through wait_until / assert_true
outside_is_empty() { [[ -z $(ls -A "$outside") ]]; }

# --- a non-empty target without --overwrite --------------------------------------------
t=$TEST_TMP/t-nonempty
mkdir -p "$t$src"
printf 'precious\n' >"$t/precious.txt"
printf 'old top\n' >"$t$src/top.txt"
tree_snapshot "$t" "$TEST_TMP/nonempty-before.json"
run cb restore files "$id" --target "$t"
assert_fails "restore into a non-empty target without --overwrite fails"
assert_contains "$ERR" "not empty" "the error says the target is not empty"
tree_compare "@$TEST_TMP/nonempty-before.json" "$t"

# a target that cannot be a directory: a usage error saying why (it was exit 7, "Not a
# directory" without a hint), the file untouched
printf 'a file\n' >"$TEST_TMP/afile"
for tgt in "$TEST_TMP/afile" "$TEST_TMP/afile/sub" ""; do
    run cb restore files "$id" --target "$tgt"
    assert_rc 2 "restore files --target '${tgt#"$TEST_TMP"/}': a usage error (exit 2)"
    assert_match 'not a directory|empty restore target' "$ERR" "... saying why"
    assert_contains "$ERR" "give a new directory" "... with a hint"
done
assert_eq "a file" "$(cat "$TEST_TMP/afile")" "the file given as the target is untouched"

# with --overwrite it proceeds, replacing the backed-up paths and keeping the others
assert_exit 0 cb restore files "$id" --target "$t" --overwrite
assert_eq "top" "$(cat "$t$src/top.txt")" "--overwrite replaced top.txt"
assert_eq "precious" "$(cat "$t/precious.txt")" "--overwrite left an unrelated file alone"

# --- --overwrite over other kinds: a file where the backup has a directory, a symlink or a
# fifo is replaced by it; a directory where the backup has a file is refused, saying what to do
kinds=$TEST_TMP/kinds
mkdir -p "$kinds/dir"
printf 'x\n' >"$kinds/dir/x"
ln -s dir/x "$kinds/link"
mkfifo "$kinds/fifo"
printf 'f\n' >"$kinds/file"
backup_json "$TEST_TMP/kinds.json" "$kinds"
assert_rc 0 "backup of a directory, a symlink, a fifo and a file"
kid=$BACKUP_ID
t=$TEST_TMP/t-kinds
mkdir -p "$t$kinds"
for n in dir link fifo; do printf 'in the way\n' >"$t$kinds/$n"; done
assert_exit 0 cb restore files "$kid" --target "$t" --overwrite
tree_compare "$kinds" "$t$kinds"
t=$TEST_TMP/t-dirinway
mkdir -p "$t$kinds/file/sub"
run cb restore files "$kid" --target "$t" --overwrite
assert_fails "--overwrite: a directory where the backup has a file is refused"
assert_contains "$ERR" "a directory of that name exists" "the error says a directory is in the way"
assert_contains "$ERR" "remove the directory" "and what to do"
assert_true "the directory in the way is left as it was" test -d "$t$kinds/file/sub"

# --- a symlink where a directory of the backup goes ------------------------------------
t=$TEST_TMP/t-dirlink
mkdir -p "$t$src"
ln -s "$outside" "$t$src/sub"
run cb restore files "$id" --target "$t" --overwrite
assert_true "symlink in place of a backed-up directory: nothing written outside the target" outside_is_empty
assert_fails "symlink in place of a backed-up directory: the restore exits non-zero"

# ... and where one of the directories above the backed-up path goes
t=$TEST_TMP/t-ancestorlink
mkdir -p "$t"
top_component=${src#/}
top_component=${top_component%%/*}
ln -s "$outside" "$t/$top_component"
run cb restore files "$id" --target "$t" --overwrite
assert_true "symlink in place of a parent of the backed-up path: nothing written outside" outside_is_empty
assert_fails "symlink in place of a parent of the backed-up path: the restore exits non-zero"
assert_contains "$ERR" "symlink" "the error mentions the symlink"

# ... and with --include of a path below the planted symlink
t=$TEST_TMP/t-includelink
mkdir -p "$t$src"
ln -s "$outside" "$t$src/sub"
run cb restore files "$id" --target "$t" --overwrite --include "$src/sub/deeper"
assert_true "symlink above an --include path: nothing written outside" outside_is_empty

# --- a symlink where a file of the backup goes -----------------------------------------
printf 'victim\n' >"$TEST_TMP/victim"
t=$TEST_TMP/t-filelink
mkdir -p "$t$src"
ln -s "$TEST_TMP/victim" "$t$src/top.txt"
run cb restore files "$id" --target "$t" --overwrite
assert_eq "victim" "$(cat "$TEST_TMP/victim")" "symlink in place of a file: its target is not written"
if [[ $RC == 0 ]]; then
    assert_true "symlink in place of a file: replaced by the regular file" \
        test -f "$t$src/top.txt" -a ! -L "$t$src/top.txt"
fi

# --- --include -------------------------------------------------------------------------
t=$TEST_TMP/t-include
mkdir "$t"
assert_exit 0 cb restore files "$id" --target "$t" --include "$src/sub"
assert_eq "$(printf '%s\n' "$t$src/sub/b.txt" "$t$src/sub/deeper/c.txt")" \
    "$(find "$t" ! -type d | sort)" "--include DIR restores exactly that subtree"
assert_eq "c" "$(cat "$t$src/sub/deeper/c.txt")" "--include: content restored"

t=$TEST_TMP/t-include2
mkdir "$t"
assert_exit 0 cb restore files "$id" --target "$t" --include "$src/top.txt" --include "$src/other"
assert_eq "$(printf '%s\n' "$t$src/other/o.txt" "$t$src/top.txt")" \
    "$(find "$t" ! -type d | sort)" "two --include: a file and a directory, nothing else"

t=$TEST_TMP/t-include-prefix
mkdir "$t"
run cb restore files "$id" --target "$t" --include "$src/su"
assert_eq "" "$(find "$t" ! -type d)" "--include matches whole path components (src/su is not src/sub)"

t=$TEST_TMP/t-include-missing
mkdir "$t"
run cb restore files "$id" --target "$t" --include "$src/no-such-path"
assert_fails "--include of a path the backup does not hold is reported (not exit 0)"

# --- --include relative to a root, as `ls` shows paths ----------------------------------
t=$TEST_TMP/t-include-rel
mkdir "$t"
assert_exit 0 cb restore files "$id" --target "$t" --include sub/deeper --include top.txt
assert_eq "$(printf '%s\n' "$t$src/sub/deeper/c.txt" "$t$src/top.txt")" \
    "$(find "$t" ! -type d | sort)" "relative --include: resolved against the root, laid out by full path"
t=$TEST_TMP/t-include-rel-missing
mkdir "$t"
run cb restore files "$id" --target "$t" --include sub/nothing-here
assert_rc 7 "a relative --include the backup does not hold: not found"
assert_contains "$ERR" "sub/nothing-here" "the error names the path"
assert_eq "" "$(find "$t" ! -type d)" "nothing restored"

# two roots that both hold common.txt: a relative path naming both is refused, listing them
src2=$TEST_TMP/src2
mkdir -p "$src2/sub" "$TEST_TMP/src3/sub"
printf 'two\n' >"$src2/sub/common.txt"
printf 'three\n' >"$TEST_TMP/src3/sub/common.txt"
printf 'only\n' >"$TEST_TMP/src3/only3.txt"
backup_json "$TEST_TMP/b2.json" "$src2" "$TEST_TMP/src3"
assert_rc 0 "backup of two roots"
id2=$BACKUP_ID
t=$TEST_TMP/t-include-ambiguous
mkdir "$t"
run cb restore files "$id2" --target "$t" --include sub/common.txt
assert_rc 2 "a relative --include found under two roots: a usage error"
assert_contains "$ERR" "$src2/sub/common.txt" "the candidates are listed (first root)"
assert_contains "$ERR" "$TEST_TMP/src3/sub/common.txt" "the candidates are listed (second root)"
assert_eq "" "$(find "$t" ! -type d)" "nothing restored when ambiguous"
assert_exit 0 cb restore files "$id2" --target "$t" --include only3.txt
assert_eq "$t$TEST_TMP/src3/only3.txt" "$(find "$t" ! -type d)" "a relative path only one root holds"
assert_exit 0 cb restore files "$id2" --target "$t" --overwrite --include "$src2/sub/common.txt"
assert_eq "two" "$(cat "$t$src2/sub/common.txt")" "the full path picks one of the candidates"

# --- a restore target whose file system fills up: a clear error about the target, exit 8,
# and no file of the restore left behind (in a private mount namespace: a 3 MiB tmpfs) -----
full_src=$TEST_TMP/full-src
mkdir "$full_src"
seeded_bytes 2000000 full-a >"$full_src/a.bin"
seeded_bytes 2000000 full-b >"$full_src/b.bin"
seq 1 1000 >"$full_src/c.txt"
backup_json "$TEST_TMP/full.json" "$full_src"
assert_rc 0 "backup of 4 MB for the full target"
# shellcheck disable=SC2016 # expanded by the inner shell
if run_in_tmpfs 3m "$TEST_TMP/full-mnt" '"$0" restore files "$2" --target "$1/t"
        rc=$?
        echo "files: $(find "$1" -type f | wc -l)"
        exit $rc' "$BACKUP_ID"; then
    assert_rc 8 "a full restore target: exit 8 (I/O error)"
    assert_contains "$ERR" "No space left on device" "the error says the disk is full"
    assert_contains "$ERR" "restore target's file system is full" "the hint is about the target, not the repository"
    assert_not_contains "$ERR" "cleanup-old-backups" "no advice to prune the repository"
    assert_contains "$OUT" "files: 0" "no file of the failed restore is left in the target"
fi

# --- --overwrite on a full target: a symlink (target over 128 bytes: a page of tmpfs) that
# cannot be made in place of an existing empty file leaves that file as it was (it was
# unlinked first, and lost with the failed restore) -------------------------------------------
sl_src=$TEST_TMP/symlink-src
mkdir "$sl_src"
ln -s "/srv/caris/uploads/$(printf 'x%.0s' {1..200})/record.pdf" "$sl_src/current"
backup_json "$TEST_TMP/symlink.json" "$sl_src"
assert_rc 0 "backup of a long symlink"
# shellcheck disable=SC2016 # expanded by the inner shell
if run_in_tmpfs 1m "$TEST_TMP/sl-mnt" 'd=$1/t$3
        mkdir -p "$d" && : >"$d/current" || exit 98 # empty: its removal would free no page
        fallocate -l "$(( $(df -k --output=avail "$1" | tail -n 1) * 1024 ))" "$1/filler" 2>/dev/null
        "$0" restore files "$2" --target "$1/t" --overwrite
        rc=$?
        echo "current: $(stat -c %F "$d/current" 2>&1)"
        echo "temporaries: $(find "$1/t" -name ".caris-tmp-*" | wc -l)"
        exit $rc' "$BACKUP_ID" "$sl_src"; then
    assert_rc 8 "--overwrite, no room for the symlink: exit 8"
    assert_contains "$ERR" "No space left on device" "the error says the disk is full"
    assert_contains "$OUT" "current: regular empty file" "the file the symlink would replace is still there"
    assert_contains "$OUT" "temporaries: 0" "no temporary name is left"
fi

# --- a restore target that refuses a file's metadata (user xattrs on ramfs, in a private
# mount namespace), the file being hard-linked: the error is the metadata's (exit 8), not the
# hard link's that follows from it ("cannot restore hard link ...: No such file", exit 7) ---
xa_src=$TEST_TMP/xattr-src
mkdir "$xa_src"
printf 'with an xattr\n' >"$xa_src/a"
ln "$xa_src/a" "$xa_src/b"
if setfattr -n user.note -v kept "$xa_src/a" 2>/dev/null; then
    backup_json "$TEST_TMP/xattr.json" "$xa_src"
    assert_rc 0 "backup of a hard-linked file with an xattr"
    mkdir -p "$TEST_TMP/ramfs"
    if unshare -m true 2>/dev/null; then
        # shellcheck disable=SC2016 # expanded by the inner shell
        run unshare -m bash -c 'mount -t ramfs ramfs "$1" || exit 99
            "$0" restore files "$2" --target "$1/t"' "$CARIS_BIN" "$TEST_TMP/ramfs" "$BACKUP_ID"
        if [[ $RC == 99 ]]; then
            note "ramfs cannot be mounted here: a target without xattrs is not checked"
        else
            assert_rc 8 "a target without user xattrs: exit 8"
            assert_contains "$ERR" "cannot set extended attribute user.note" "the error is the xattr's"
            assert_not_contains "$ERR" "hard link" "no later hard-link error replaces it"
            # --no-xattrs (and --no-owner): the restore onto such a target goes through, the
            # content checked as always
            # shellcheck disable=SC2016 # expanded by the inner shell
            run unshare -m bash -c 'mount -t ramfs ramfs "$1" || exit 99
                "$0" restore files "$2" --target "$1/t" --no-xattrs --no-owner || exit
                cmp "$3/a" "$1/t$3/a" && test "$(stat -c %i "$1/t$3/a")" = "$(stat -c %i "$1/t$3/b")" &&
                test "$(stat -c %u "$1/t$3/a")" = "$(id -u)"' \
                "$CARIS_BIN" "$TEST_TMP/ramfs" "$BACKUP_ID" "$xa_src"
            assert_rc 0 "--no-xattrs --no-owner: the restore onto it succeeds, content, hard link and owner as asked"
        fi
    else
        note "no mount namespaces here: a target without xattrs is not checked"
    fi
else
    note "no user xattrs on $TEST_TMP: a target without xattrs is not checked"
fi

# --- a backup whose root is "/" (in a chroot: the backup really walks "/", the chroot's system
# directories excluded): the root's own entry is the target itself. It once restored nothing
# ("manifest entry 0 has an invalid path", exit 4) and verify called it damaged --------------
if ((EUID != 0)) || ! command -v chroot >/dev/null || ! command -v ldd >/dev/null; then
    note "a backup of /: not checked (needs root, chroot and ldd)"
else
    cr=$TEST_TMP/chroot
    mkdir -p "$cr/bin"
    cp "$CARIS_BIN" "$cr/bin/caris-backup"
    for lib in $(ldd "$CARIS_BIN" | grep -o '/[^ ]*'); do
        mkdir -p "$cr${lib%/*}" && cp -L "$lib" "$cr$lib"
    done
    make_tree "$cr/data" --no-special || fail "make_tree failed"
    # chrooted ARGS...: the binary in the chroot, its repository in /bk, with /proc where mount
    # namespaces allow it (an ASan build needs it); excl: the chroot's directories but data/
    mkdir -p "$cr/proc"
    if unshare -m true 2>/dev/null; then
        # shellcheck disable=SC2016 # expanded by the inner shell
        chrooted() {
            BACKUP_DIR=/bk unshare -m sh -c 'mount --bind /proc "$0/proc" && exec chroot "$0" /bin/caris-backup "$@"' \
                "$cr" "$@"
        }
    else
        chrooted() { BACKUP_DIR=/bk chroot "$cr" /bin/caris-backup "$@"; }
    fi
    excl=()
    for d in "$cr"/*; do [[ $d == "$cr/data" ]] || excl+=(--exclude "/${d##*/}"); done
    excl+=(--exclude /bk)
    if ! chrooted --version >/dev/null 2>&1; then
        note "the binary does not run in a chroot here: a backup of / is not checked"
    else
        run chrooted --quiet init
        assert_rc 0 "chroot: init"
        run chrooted --json backup files "${excl[@]}" /
        assert_rc 0 "a backup of / (system directories excluded)"
        cp "$OUT_FILE" "$TEST_TMP/slash.json"
        sid=$(json_get "$TEST_TMP/slash.json" '["id"]')
        root_meta=$(stat -c '%a %u %g %y' "$cr") # before the restores add to it
        run chrooted restore files "$sid" --target /r
        assert_rc 0 "the backup of / restores"
        tree_compare "$cr/data" "$cr/r/data"
        assert_eq "data" "$(ls -A "$cr/r")" "the restore of / holds what was backed up, nothing else"
        assert_eq "$root_meta" "$(stat -c '%a %u %g %y' "$cr/r")" \
            "the root's own entry (/) gave its metadata to the target"
        run chrooted restore files "$sid" --target /r-include --include /data/docs
        assert_rc 0 "--include /data/docs of the backup of /"
        tree_compare "$cr/data/docs" "$cr/r-include/data/docs"
        assert_eq "docs" "$(ls -A "$cr/r-include/data")" "--include /data/docs: nothing else"
        run chrooted restore files "$sid" --target /r-rel --include data/hello.txt
        assert_rc 0 "a relative --include of the backup of /"
        assert_true "a relative --include: the file restored" cmp -s "$cr/data/hello.txt" "$cr/r-rel/data/hello.txt"
        run chrooted verify "$sid"
        assert_rc 0 "verify of the backup of /"
        assert_contains "$OUT" "valid" "verify says valid"
        assert_not_contains "$OUT$ERR" "DAMAGED" "verify does not say damaged"
        run chrooted --json list
        assert_eq "ok" "$(json_eval "$OUT_FILE" "[b.get('status') for b in d if b['id'] == '$sid'][0]")" \
            "list shows the backup of / as ok, not damaged"
    fi
fi

# --- --no-owner: set-user-id and set-group-id go with the owner they were set for ------------
# restored by root with --no-owner, a user's own setuid program became setuid root
if ((EUID == 0)); then
    su=$TEST_TMP/suid-src
    mkdir -p "$su/shared"
    printf '#!/bin/sh\n' >"$su/tool"
    printf '#!/bin/sh\n' >"$su/roottool"
    chown 4321:4321 "$su/tool" "$su/shared"
    chmod 6755 "$su/tool" "$su/roottool"
    chmod 2775 "$su/shared"
    backup_json "$TEST_TMP/suid.json" --full "$su"
    assert_exit 0 cb --quiet restore files "$BACKUP_ID" --target "$TEST_TMP/suid-r" --no-owner
    r=$TEST_TMP/suid-r$su
    assert_eq "755 0:0" "$(stat -c '%a %u:%g' "$r/tool")" "another user's setuid file: no setuid/setgid once root owns it"
    assert_eq "775 0:0" "$(stat -c '%a %u:%g' "$r/shared")" "another user's setgid directory: no setgid once root owns it"
    assert_eq "6755 0:0" "$(stat -c '%a %u:%g' "$r/roottool")" "root's own setuid file keeps its bits"
    assert_exit 0 cb --quiet restore files "$BACKUP_ID" --target "$TEST_TMP/suid-o"
    assert_eq "6755 4321:4321" "$(stat -c '%a %u:%g' "$TEST_TMP/suid-o$su/tool")" "with the owner restored, the bits stay"
fi

# --- restored by a user who cannot give files their owner: the same rule -------------------
# another user's setuid program, restored by uid 65534 (no --no-owner), stayed setuid, owned by
# 65534: a program of the backup's content running as whoever restored it
if as_nobody_ok "setuid restored without privileges"; then
    np=$TEST_TMP/suid-nobody
    mkdir -p "$np/backup" "$np/src/shared" "$np/t"
    chmod 777 "$np/backup" "$np/t"
    printf '#!/bin/sh\n' >"$np/src/tool"
    chown 4321:4321 "$np/src/tool" "$np/src/shared"
    chmod 6755 "$np/src/tool"
    chmod 2775 "$np/src/shared"
    nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups env BACKUP_DIR="$np/backup" "$@"; }
    assert_exit 0 nobody "$CARIS_BIN" --quiet init
    run nobody "$CARIS_BIN" --json backup files --full "$np/src"
    assert_rc 0 "nobody backs up another user's setuid program"
    nid=$(json_get "$OUT_FILE" '["id"]')
    run nobody "$CARIS_BIN" --quiet restore files "$nid" --target "$np/t/r"
    assert_rc 0 "nobody restores it (owners it cannot give are not errors)"
    assert_eq "755 65534:65534" "$(stat -c '%a %u:%g' "$np/t/r$np/src/tool")" \
        "restored by nobody: owned by nobody, without setuid and setgid"
    assert_eq "775 65534:65534" "$(stat -c '%a %u:%g' "$np/t/r$np/src/shared")" \
        "... and the setgid directory without setgid"
fi

# --- a default ACL on the target is not inherited -----------------------------------------------
# what the restore creates inherited the target's default ACL (POSIX): a file backed up 0640
# without an ACL came back readable by the ACL's user, its directory listable
if ((EUID == 0)); then
    as=$TEST_TMP/acl-src at=$TEST_TMP/acl-target
    mkdir -p "$as/private" "$at"
    printf 'notes\n' >"$as/private/notes.txt"
    chmod 0640 "$as/private/notes.txt"
    chmod 0750 "$as/private"
    backup_json "$TEST_TMP/acl.json" --full "$as"
    # user::rwx, user:4321:rwx, group::r-x, mask::rwx, other::--- (written as the xattr: setfacl
    # is not installed everywhere)
    if python3 - "$at" <<'EOF_ACL'; then
import os, struct, sys
none = 0xFFFFFFFF
entries = [(0x01, 7, none), (0x02, 7, 4321), (0x04, 5, none), (0x10, 7, none), (0x20, 0, none)]
os.setxattr(sys.argv[1], "system.posix_acl_default",
            struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *x) for x in entries))
EOF_ACL
        assert_exit 0 cb --quiet restore files "$BACKUP_ID" --target "$at"
        r=$at$as
        for f in "$r/private/notes.txt" "$r/private" "$r"; do
            assert_eq "" "$(python3 -c 'import os, sys; print(" ".join(x for x in os.listxattr(sys.argv[1]) if x.startswith("system.posix_acl")))' "$f")" \
                "no ACL inherited from the target's default ACL on the backup's ${f#"$r"}/ (its root: /)"
        done
        assert_eq "640 750" "$(stat -c %a "$r/private/notes.txt") $(stat -c %a "$r/private")" \
            "the modes as backed up"
    else
        note "default ACL on the target: not checked (the file system refuses POSIX ACLs)"
    fi
fi

# --- a restore that would write over the live repository or BACKUP_DIR is refused --------------
# A backup of a tree that holds the repository (a backup of /, or of /var with BACKUP_DIR in
# it), restored in place (--target /), wrote the repository's old copy over the live one: a
# removed key opened it again, the backups made since were gone and the audit log rolled back.
h=$TEST_TMP/h
mkdir -p "$h/docs" "$h/bd"
printf 'd\n' >"$h/docs/a"
backup_json "$TEST_TMP/h.json" "$h"
assert_rc 0 "backup of a tree"
hid=$BACKUP_ID
mv "$REPO" "$h/repo" # the repository now lies inside the tree backed up
run cb --repo "$h/repo" restore files "$hid" --target / --overwrite
assert_rc 2 "a restore in place of a tree that holds the repository is refused"
assert_contains "$ERR" "would write $h, which holds the repository $h/repo" "the error says what it would write over"
assert_true "the repository is still there" test -f "$h/repo/config"
run cb --repo "$h/repo" restore files "$hid" --target / --overwrite --include "$h"
assert_rc 2 "... and with --include of the tree that holds it"
run cb --repo "$h/repo" restore files "$hid" --target / --overwrite --include "$h/docs"
assert_rc 0 "--include of a path outside the repository: restored in place"
mv "$h/repo" "$REPO"
run env BACKUP_DIR="$h/bd" "$CARIS_BIN" --repo "$REPO" restore files "$hid" --target / --overwrite
assert_rc 2 "a restore in place of a tree that holds BACKUP_DIR is refused"
assert_contains "$ERR" "which holds BACKUP_DIR $h/bd" "the error names BACKUP_DIR"

test_done

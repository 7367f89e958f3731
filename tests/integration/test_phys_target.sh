#!/usr/bin/env bash
# restore --physical into a --pgdata that cannot be replaced by a directory renamed into place:
# a mount point (rmdir and rename fail with EBUSY) and a symbolic link. Before the fix the whole
# cluster was first written beside it, on the parent's file system (which it could fill), and
# the restore failed only at the rename ("cannot replace DIR: Device or resource busy");
# --overwrite on a link replaced the link. Now both are refused before anything is written, and
# a directory inside the mount point restores.
# shellcheck disable=SC2154 # envf and R are set by pitr_setup (pglib.sh)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pglib.sh"
pg_start
pitr_setup
pitr_archive_on "$CARIS_BIN --quiet --env-file $envf wal push %p"
mnt=$R/mnt
_umount_mnt() { mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"; return 0; }
at_exit '_umount_mnt; _lib_on_exit; _pg_on_exit'

run cb --json backup database --physical
assert_rc 0 "a full physical backup"
id=$(json_get "$OUT_FILE" '["id"]')

# nothing beside DIR: no half-written copy left, none being written
no_copies() { ! compgen -G "$R/.$1.caris-*" >/dev/null; }

if [[ $(id -u) == 0 ]] && mkdir -p "$mnt" && mount -t tmpfs -o size=512m tmpfs "$mnt"; then
    chown "$CARIS_PG_OS_USER:" "$mnt"
    chmod 0700 "$mnt"
    run cb --env-file "$envf" restore database --physical --pgdata "$mnt" "$id"
    assert_rc 2 "restore into an empty mount point is refused"
    assert_contains "$ERR" "is a mount point" "the error says why"
    assert_contains "$ERR" "--pgdata $mnt/data" "the hint names a directory inside it"
    assert_true "nothing was written beside the mount point" no_copies mnt
    assert_true "the mount point is still mounted" mountpoint -q "$mnt"

    as_pg touch "$mnt/keep"
    run cb --env-file "$envf" restore database --physical --overwrite --pgdata "$mnt" "$id"
    assert_rc 2 "restore --overwrite of a mount point is refused"
    assert_contains "$ERR" "is a mount point" "the error says why"
    assert_true "what the mount point held is untouched" test -f "$mnt/keep"
    assert_true "nothing was written beside it" no_copies mnt

    run cb --env-file "$envf" restore database --physical --pgdata "$mnt/data" "$id"
    assert_rc 0 "restore into a new directory inside the mount point"
    assert_true "the cluster is there" test -f "$mnt/data/PG_VERSION" -a -f "$mnt/data/recovery.signal"
    umount "$mnt" || fail "umount $mnt"
else
    note "not root or no tmpfs: the mount point cases are skipped"
fi

# a symbolic link to an empty directory
as_pg mkdir "$R/real"
as_pg ln -s "$R/real" "$R/link"
run cb --env-file "$envf" restore database --physical --pgdata "$R/link" "$id"
assert_rc 2 "restore into a symbolic link is refused"
assert_contains "$ERR" "is a symbolic link" "the error says why"
assert_true "nothing was written beside the link" no_copies link
as_pg touch "$R/real/keep"
run cb --env-file "$envf" restore database --physical --overwrite --pgdata "$R/link" "$id"
assert_rc 2 "restore --overwrite of a symbolic link is refused"
assert_true "the link is still a link" test -L "$R/link"
assert_true "what it points to is untouched" test -f "$R/real/keep"

# a data directory inside the repository: refused before anything is written
before=$(find "$BACKUP_DIR/repository" | sort)
run cb --env-file "$envf" restore database --physical --pgdata "$BACKUP_DIR/repository/pgdata" "$id"
assert_rc 2 "restore into a directory inside the repository is refused"
assert_contains "$ERR" "inside the repository" "the error says why"
assert_eq "$before" "$(find "$BACKUP_DIR/repository" | sort)" "nothing was written into the repository"

# --overwrite of a directory that holds BACKUP_DIR (its repository, its metadata): it removed
# the old directory whole, the repository with it (every backup, the WAL archive), and said
# "restored", exit 0. Refused now, as a --pgdata inside BACKUP_DIR (its metadata, its temp) and
# one that holds the env file restore_command reads. On a copy of BACKUP_DIR.
mkdir -p "$R/victim" "$R/envdir"
cp -a "$BACKUP_DIR" "$R/victim/backup"
sed "s|^BACKUP_DIR=.*|BACKUP_DIR=$R/victim/backup|" "$envf" >"$R/victim.env"
cp "$envf" "$R/envdir/backup.env"
if ((EUID == 0)); then chown -R "$CARIS_PG_OS_USER:" "$R"; fi
chmod 0600 "$R/victim.env" "$R/envdir/backup.env"
# (metadata/: each command adds its line to the audit log there, and an open caches its key slot)
tree_sum() { find "$1" ! -path '*/metadata/*' -printf '%P %s\n' | sort | sha256sum; }
victim_before=$(tree_sum "$R/victim")
# BACKUP_DIR from the env file alone (the test's environment sets its own)
cbv() { as_pg env -u BACKUP_DIR -u BACKUP_REPOSITORY "$CARIS_BIN" "$@"; }
run cbv --env-file "$R/victim.env" restore database --physical --overwrite --pgdata "$R/victim" "$id"
assert_rc 2 "--overwrite of a directory holding BACKUP_DIR is refused"
assert_contains "$ERR" "data directory $R/victim holds BACKUP_DIR $R/victim/backup" "the error says why"
assert_eq "$victim_before" "$(tree_sum "$R/victim")" "nothing was removed or written"
assert_exit 0 cbv --env-file "$R/victim.env" --quiet list
run cbv --env-file "$R/victim.env" restore database --physical --overwrite --pgdata "$R/victim/backup/metadata" "$id"
assert_rc 2 "--overwrite of BACKUP_DIR/metadata is refused"
assert_contains "$ERR" "lies inside BACKUP_DIR" "the error says why"
assert_eq "$victim_before" "$(tree_sum "$R/victim")" "nothing was removed or written"
run cbv --env-file "$R/envdir/backup.env" restore database --physical --overwrite --pgdata "$R/envdir" "$id"
assert_rc 2 "--overwrite of a directory holding the env file is refused"
assert_contains "$ERR" "holds the env file restore_command reads" "the error says why"
assert_true "the env file is still there" test -f "$R/envdir/backup.env"

test_done

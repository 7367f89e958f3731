#!/usr/bin/env bash
# mount of a repository on an S3 server (s3rver on loopback): the case tree read back through
# the mount is the source, entry by entry; SIGTERM unmounts and exits 0, leaving no lock object.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"

if [[ ! -c /dev/fuse ]]; then
    skip "/dev/fuse is missing on this machine: mount cannot be tested here"
    test_done
fi

s3_start bkt
export BACKUP_REPOSITORY=s3:$S3_ENDPOINT/bkt/caris/repo
export BACKUP_S3_RETRY_SECONDS=5
assert_exit 0 cb init
src=$TEST_TMP/src
make_tree "$src" || fail "make_tree failed"
backup_json "$TEST_TMP/b.json" --full "$src"
assert_rc 3 "backup to S3 (the socket and the device are skipped with warnings)"
id=$BACKUP_ID

mnt=$TEST_TMP/mnt
mkdir "$mnt"
mounted() { mountpoint -q "$mnt"; }
unmounted() { ! mountpoint -q "$mnt"; }
bg_start cb mount "$mnt"
assert_true "the S3 repository mounts" wait_until 30 mounted
assert_eq "$id" "$(readlink "$mnt/latest")" "latest"
tree_compare "$src" "$mnt/$id$src" --skip-special
assert_ne "" "$(find "$S3_DIR/bkt/caris/repo" -path '*locks/*' -name '*._S3rver_object')" "while mounted, a lock object"
run cb prune
assert_rc 9 "prune waits for the mount (the lock is an object on S3)"
kill -TERM "$BG_PID"
assert_true "SIGTERM unmounts" wait_until 30 unmounted
wait "$BG_PID"
assert_eq 0 "$?" "exit 0"
assert_eq "" "$(find "$S3_DIR/bkt/caris/repo" -path '*locks/*' -name '*._S3rver_object')" "no lock object left"

test_done

/* Browsing backups as a read-only file system (FUSE 3): `caris-backup mount DIR`.
 *
 * DIR/<backup id>/<path as `ls` shows it> for every file backup (the roots' parent directories
 * are made up: mode 0555, the backup's time), DIR/<backup id>/<stream name> for every database
 * backup (database.dump, globals.sql), DIR/latest a symbolic link to the newest file backup.
 * A backup's entries are loaded when its directory is first looked into, and kept until the
 * unmount. File contents are read on demand: the chunks covering the range read, each loaded
 * through repo_blob_load (authenticated, its id recomputed), kept in a bounded LRU cache of
 * plaintext; a file read in order has its next chunks loaded ahead on worker threads (at most
 * 8 chunks or 16 MiB per file, 32 MiB in all). A damaged chunk makes that read fail with EIO and is
 * logged; nothing unverified is ever returned. Permissions are enforced by the kernel from the
 * backed-up modes (default_permissions), as restic does.
 *
 * The repository stays locked shared (operation "mount") while it is mounted: prune waits.
 * The backups listed are those there were at the mount. */
#ifndef CARIS_MOUNT_H
#define CARIS_MOUNT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/err.h"
#include "caris/op.h"
#include "caris/repo.h"

#define CARIS_MOUNT_CACHE_DEFAULT (64u << 20)

struct caris_mount_opts {
    const char *dir;      /* an existing, empty directory */
    bool allow_other;     /* let other users in (root, or user_allow_other in /etc/fuse.conf) */
    uint64_t cache_bytes; /* plaintext chunks kept; 0: CARIS_MOUNT_CACHE_DEFAULT */
    int threads;          /* chunks loaded ahead of a file read in order; 0: CPUs */
    /* cancel: unmount and return 0 (checked at least every 250 ms); log: damaged chunks,
     * backups that cannot be loaded */
    const struct caris_op *op;
    /* Called once the file system is mounted, with the number of backups it shows. */
    void (*mounted)(void *ctx, size_t nbackups);
    void *ctx;
};

struct caris_mount_stats {
    uint64_t backups_loaded; /* backups whose entries were loaded */
    uint64_t reads, bytes_read;
    uint64_t chunks_loaded, chunks_cached; /* chunks loaded from the repository / served from
                                               the cache */
    uint64_t read_errors;                  /* reads that failed with EIO */
};

/* Mounts and serves requests until op's cancel flag is set (then unmounts) or the file system
 * is unmounted from outside (umount, fusermount3 -u). Returns 0, or -1 with e: the directory
 * is missing (ERR_NOT_FOUND), not a directory or not empty (ERR_USAGE), /dev/fuse is missing
 * (ERR_CONFIG), the mount is refused (ERR_IO), the lock is held exclusively (ERR_LOCKED).
 * st (may be NULL) receives what was served. */
int caris_mount(struct repo *r, const struct caris_mount_opts *o, struct caris_mount_stats *st,
                struct err *e);
/* {"mountPoint", "backupsLoaded", "reads", "bytesRead", "chunksLoaded", "chunksCached",
 * "readErrors"} */
json_t *caris_mount_stats_to_json(const struct caris_mount_stats *st, const char *dir);

#endif

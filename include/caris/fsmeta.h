/* File-system entries as the file backup sees them: what is walked at backup time, what is
 * stored in a manifest, and what is recreated at restore time.
 *
 * Paths are byte strings relative to a backup root, components separated by '/', never
 * starting with '/', never containing "." or ".." components, never empty (the root itself
 * has path "."). They need not be UTF-8 and may exceed PATH_MAX: all I/O goes through
 * openat() relative to directory descriptors, never through whole-path syscalls. */
#ifndef CARIS_FSMETA_H
#define CARIS_FSMETA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "caris/err.h"

enum fs_type {
    FS_REG = 1,
    FS_DIR,
    FS_SYMLINK,
    FS_HARDLINK, /* a further name of a regular file seen earlier in the same backup */
    FS_FIFO,
};

struct fs_xattr {
    char *name;     /* NUL-terminated, e.g. "user.comment" */
    uint8_t *value; /* may contain any bytes */
    size_t len;
};

struct fs_meta {
    enum fs_type type;
    uint32_t mode; /* permission bits incl. setuid/setgid/sticky: st_mode & 07777 */
    uint32_t uid, gid;
    char *user, *group; /* names at backup time, NULL when unknown */
    int64_t mtime_sec;
    int64_t mtime_nsec;
    uint64_t size; /* regular files: apparent size (st_size) */
    char *link;    /* symlink target (any bytes, NUL-terminated) or, for FS_HARDLINK,
                      the path of the first name in this backup */
    struct fs_xattr *xattrs;
    size_t nxattrs;
    /* reading the extended attributes failed (warned): xattrs is empty, not known empty */
    bool xattrs_unread;
    /* a directory at backup time: the errno of its listing, or of the first of its entries
     * that could not be read (warned: not in the backup), 0 when it was read whole */
    int entries_err;
};

void fs_meta_free(struct fs_meta *m); /* frees the members, not m itself */

/* ---- walking a tree at backup time ---------------------------------------------------- */

struct fswalk_entry {
    const char *path; /* relative path as described above ("." for the root) */
    size_t path_len;
    int dirfd;           /* open directory that contains the entry (for the root: the
                            parent of the root) */
    const char *name;    /* name within dirfd (for the root: its last component) */
    struct stat st;      /* lstat() result */
    struct fs_meta meta; /* filled; owned by the walker, valid during the callback only */
    /* the opts' known() said the caller knows this file: it was not opened and meta.xattrs
     * was not read (empty) */
    bool known;
    /* regular files that were opened: the file, read-only (st is its fstat), valid during the
     * callback only (dup it to keep it); else -1 */
    int fd;
    /* A regular file or directory below the root that exists but could not be opened (EACCES,
     * EPERM, EIO...): the errno, already reported through warn. The entry is still given, with
     * its lstat() and meta (no xattrs), so that the backup records it as unreadable instead of
     * leaving it out: a file then has no descriptor (fd -1), a directory no children. 0 for
     * every other entry. */
    int error;
};

/* Called for every entry, parents before children, siblings in byte order of their names,
 * always on the thread that called fswalk_run. Return 0 to continue, 1 to skip a directory's
 * contents, -1 (with e set) to abort. */
typedef int (*fswalk_cb)(void *ctx, const struct fswalk_entry *ent, struct err *e);

/* Called for every entry that could not be read (permission denied, vanished, socket or
 * device skipped, ...): msg says what and why (it names the path). The walk continues. A file
 * or directory that could not be opened then comes to the entry callback too, with
 * fswalk_entry.error set. lost: something that exists could not be read (an errno: the
 * entry, a directory's listing), as opposed to what is kept all the same (an entry whose
 * extended attributes could not be read, a FIFO), skipped by design or gone (a socket, a
 * device, a file that vanished or changed type). */
typedef void (*fswalk_warn_cb)(void *ctx, const char *path, const char *msg, bool lost);

struct fswalk_opts {
    const char *const *excludes; /* fnmatch(3) patterns, NULL-terminated array or NULL.
                                    A pattern containing '/' is matched against the relative
                                    path (one starting with '/': the rest of it), otherwise
                                    against the entry's name. */
    bool one_file_system;        /* do not descend into other mounts */
    fswalk_warn_cb warn;
    void *ctx; /* passed to all callbacks */
    /* Optional. Asked for every regular file with one link (not the root itself) before it is
     * opened, with its lstat() and meta (owner names filled, no xattrs): true says the caller
     * already knows this file as it is, so the walker neither opens it nor reads its xattrs
     * (one fstatat per unchanged file) and the entry comes with `known` set. */
    bool (*known)(void *ctx, const char *path, size_t path_len, const struct stat *st,
                  const struct fs_meta *meta);
    /* Threads that read directories ahead of the walk (open, xattrs, names, one fstatat per
     * name), in the order the walk reaches them, a bounded number ahead; 0: the walk reads
     * each directory itself when it gets there. The callbacks run on the calling thread
     * either way, in the same order, with the same entries and warnings. */
    int threads;
};

/* Walks root (an absolute or relative path to a directory or a single file). Hard links:
 * the first name of a regular file with st_nlink > 1 is FS_REG, later names FS_HARDLINK
 * with meta.link = first path. Xattrs are read with llistxattr/lgetxattr (none for
 * symlinks is fine). Sockets, block and character devices are reported through warn and
 * skipped. Returns 0, or -1 when the root itself cannot be opened or cb aborted. */
int fswalk_run(const char *root, const struct fswalk_opts *o, fswalk_cb cb, struct err *e);

/* fswalk_run in two steps, so that the directories are read ahead while the caller does
 * something else (a backup opens its repository: the key derivation keeps one core busy).
 * fswalk_start opens the root and, with o->threads > 0, sets the scanners to read the first
 * directories (at most as far ahead as during a walk); NULL with e set when the root cannot be
 * opened. What the scanners use of o (excludes, one_file_system, threads) is fixed here: the
 * excludes must stay valid until the walk is finished or cancelled. fswalk_finish walks as
 * fswalk_run does, with o's callbacks and ctx (its excludes and one_file_system must be
 * those given to fswalk_start), and frees h. fswalk_cancel stops and frees h (NULL: nothing). */
struct fswalk;
struct fswalk *fswalk_start(const char *root, const struct fswalk_opts *o, struct err *e);
int fswalk_finish(struct fswalk *h, const struct fswalk_opts *o, fswalk_cb cb, struct err *e);
void fswalk_cancel(struct fswalk *h);
/* Until fswalk_finish, the scanners read half as far ahead as during a walk (what they hold
 * adds to the caller's peak memory meanwhile); this lets them go as far before it. */
void fswalk_ahead_full(struct fswalk *h);

/* Why exclude pattern p can match nothing, or NULL: the paths it is matched against are
 * normalised (no ".", ".." or empty component), so such a pattern (trailing slashes aside)
 * would leave out nothing while the operator thought a directory excluded. */
const char *fswalk_pattern_flaw(const char *p);

/* Reads exclude patterns from a file: one per line, blank lines and lines starting with '#'
 * ignored. Appends to *list (NULL-terminated, malloc'd; *n counts entries). A pattern that can
 * match nothing (fswalk_pattern_flaw) is refused (ERR_USAGE, naming the file and line). */
int fswalk_read_exclude_file(const char *path, char ***list, size_t *n, struct err *e);

/* The data extents of an open regular file (SEEK_DATA / SEEK_HOLE), so that holes stay holes.
 * A file without holes yields one extent [0, size). */
struct fs_extent {
    uint64_t off, len;
};
int fs_data_extents(int fd, uint64_t size, struct fs_extent **out, size_t *n, struct err *e);

/* ---- recreating entries at restore time ----------------------------------------------- */

struct fsrestore;

/* Opens target (created, mode 0700, when missing). Refuses a non-empty target unless
 * overwrite is set. */
struct fsrestore *fsrestore_open(const char *target, bool overwrite, struct err *e);

/* Rejects a path that is absolute, empty, has "." / ".." / empty components or a NUL. */
int fsrestore_check_path(const char *path, size_t len, struct err *e);

/* All functions below take a relative path (checked as above). Missing parent directories
 * are created (mode 0700 until their own metadata is applied). A symlink, or anything
 * that is not a directory, in the way of a parent is refused with an error, never followed.
 * Nothing is ever written outside the target. */

int fsrestore_mkdir(struct fsrestore *r, const char *path, struct err *e);

/* Batch mode (n > 0): a committed file stays under its temporary name until n files are
 * pending (or a hard link, or fsrestore_finish, needs them); then one syncfs() makes the
 * whole batch durable and the files are renamed into place. So no real name ever points at
 * data that is not on disk, at the cost of one sync per batch instead of one fsync per
 * file. Metadata applied to a pending file goes to its temporary name. n = 0 (default):
 * every commit fsyncs and renames at once. */
void fsrestore_set_batch(struct fsrestore *r, size_t n);

/* Regular files are written to a temporary name in their final directory and renamed into
 * place by commit, so an interrupted restore never leaves a half-written file under its real
 * name. With overwrite, an existing file is replaced atomically. */
struct fsrestore_file;
struct fsrestore_file *fsrestore_file_begin(struct fsrestore *r, const char *path, struct err *e);
int fsrestore_file_fd(const struct fsrestore_file *f); /* write with pwrite to keep holes */
/* pwrite through the restore, which then knows the file's size (saving a truncate when it
 * is already right). Prefer it to writing to fsrestore_file_fd. */
int fsrestore_file_write(struct fsrestore_file *f, const void *data, size_t len, uint64_t off,
                         struct err *e);
/* Reads back what was written (pread: fewer bytes at the end of what was written so far;
 * -1 with e on error), e.g. to hash a file written out of order before it is committed. */
ssize_t fsrestore_file_read(struct fsrestore_file *f, void *buf, size_t len, uint64_t off,
                            struct err *e);
/* Sets the final size (ftruncate, which leaves trailing holes), fsyncs and renames. */
int fsrestore_file_commit(struct fsrestore_file *f, uint64_t size, struct err *e);
void fsrestore_file_abort(struct fsrestore_file *f); /* unlinks the temporary file */
/* Commit of a regular file with its metadata (FS_REG), applied through the open file before
 * it gets its name: one lookup fewer per file than commit + fsrestore_apply_meta. Frees f
 * whatever happens (as fsrestore_file_commit does). */
int fsrestore_file_commit_meta(struct fsrestore_file *f, uint64_t size, const struct fs_meta *m,
                               struct err *e);

/* Concurrency: one struct fsrestore may be used from several threads at once, as long as a
 * directory is created (fsrestore_mkdir) before entries below it are restored and hard links
 * come after the file they name. */

int fsrestore_symlink(struct fsrestore *r, const char *path, const char *target, struct err *e);
int fsrestore_fifo(struct fsrestore *r, const char *path, struct err *e);
/* link_path: an already restored file's path, relative to the target as well. */
int fsrestore_hardlink(struct fsrestore *r, const char *path, const char *link_path, struct err *e);

/* Owner (numeric ids; names are informational), permission bits, xattrs and mtime (to the
 * nanosecond; atime set to the same). For directories this is deferred: it is recorded and
 * applied by fsrestore_finish, deepest first, so that writing the contents does not change
 * the directory's mtime afterwards. Failing to chown when not root is not an error. */
int fsrestore_apply_meta(struct fsrestore *r, const char *path, const struct fs_meta *m,
                         struct err *e);

/* Applies deferred directory metadata, fsyncs, and closes. Returns -1 on the first failure
 * but always frees r. */
int fsrestore_finish(struct fsrestore *r, struct err *e);
/* Frees without applying deferred metadata (error paths). */
void fsrestore_free(struct fsrestore *r);
/* The files committed in batch mode that are still under their temporary names: what
 * fsrestore_free removes, so a caller that counted them as restored can take them back. */
size_t fsrestore_uncommitted(struct fsrestore *r);

#endif

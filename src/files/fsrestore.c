/* Recreating entries at restore time, safely: a path from a manifest is checked, then its
 * parents are opened one component at a time from the target with O_NOFOLLOW, so that no
 * "..", absolute path or symlink (planted by the backup itself or already in the target)
 * can lead a write outside the target. Every change is made relative to a directory
 * descriptor, so paths may exceed PATH_MAX. */
#include "caris/fsmeta.h"
#include "caris/core.h"

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* ---- printing names in messages: str_escape (core) ---------------------------------------- */

enum { ESC_MAX = 480 };

static const char *esc_n(const char *s, size_t n, char *buf, size_t size)
{
    return str_escape(s, n, buf, size);
}

static const char *esc(const char *s, char *buf)
{
    return esc_n(s, strlen(s), buf, ESC_MAX);
}

/* ---- the restore -------------------------------------------------------------------------- */

static const char ACL_ACCESS[] = "system.posix_acl_access";
static const char ACL_DEFAULT[] = "system.posix_acl_default";
static const char HINT_EMPTY[] =
    "restore into an empty or new directory (or, with the command line, give --overwrite)";
static const char HINT_UNSAFE[] =
    "the backup holds a path that would lead outside the restore target; it is damaged or "
    "was crafted: nothing outside the target was written";
static const char HINT_SYMLINK[] =
    "symlinks in the restore target are never followed: restore into an empty directory; if "
    "it was empty, the backup holds a path below one of its own symlinks and was crafted";

/* A system error of the restore target: as err_sys, with a hint about the target's file
 * system where the default one (err.c) would be about the repository's. */
static const char *target_hint(int errnum)
{
    if (errnum == ENOSPC || errnum == EDQUOT)
        return "the restore target's file system is full: free space there (df -h) or restore "
               "into a larger one; the restore removed the files it had not committed yet";
    if (errnum == EPERM || errnum == EACCES || errnum == EROFS)
        return "the restore target refuses this change (paths are relative to the target): "
               "check its permissions, mount options and attributes (lsattr: immutable or "
               "append-only files), or restore into a new directory";
    return NULL;
}
#define target_sys(e, errnum, ...) err_sys(e, errnum, target_hint(errnum), __VA_ARGS__)

/* Directory metadata waiting for fsrestore_finish. */
struct deferred {
    char *path;
    size_t depth; /* components in path; "." (the target itself) is 0, so it comes last */
    size_t seq;   /* arrival order, to keep the sort stable */
    struct fs_meta meta;
};

/* A committed file waiting, under its temporary name, for the batch's syncfs. */
struct pending {
    int dirfd;
    int fd;       /* an anonymous (O_TMPFILE) file, linked at the flush; -1 when named */
    char tmp[32]; /* its temporary name; "" when anonymous */
    char *path;
    const char *name; /* inside path */
};

struct fsrestore {
    /* Several threads may restore files at once: mu guards the parent cache, the pending
     * batch and the deferred directories; everything else is system calls on fds. */
    pthread_mutex_t mu;
    int rootfd;
    /* O_TMPFILE: a file is written as an inode without a name and linked under its final
     * name once complete: one directory operation instead of create + rename. Used when
     * nothing may be replaced (no overwrite) and the file system and /proc allow it. */
    int anon_ok;
    bool overwrite;
    /* What the restore creates may inherit a default ACL (POSIX ACLs): the target has one,
     * or directories that were there (overwrite) may. apply_fd then removes the inherited
     * ACLs an entry does not have of its own. */
    bool acl_inherit;
    size_t batch; /* 0: commit at once */
    struct pending *pend;
    size_t npend;
    char *target; /* for messages */
    struct deferred *dirs;
    size_t ndirs, cap_dirs;
    /* The parent directory resolved last: restores go through a directory's entries one
     * after another, so most lookups are for the same parent as the previous one. */
    char *cache_path;
    size_t cache_len;
    int cache_fd;
};

struct fsrestore_file {
    struct fsrestore *r;
    uint64_t end; /* bytes written through fsrestore_file_write (the file starts empty) */
    bool raw;     /* the fd was handed out: end is unknown */
    bool sized;   /* size and metadata already applied (commit_meta): no ftruncate, which
                     would touch the mtime again */
    int dirfd;    /* final directory */
    int fd;       /* the temporary file */
    bool overwrite;
    char *path;       /* as given, for messages */
    const char *name; /* last component, inside path */
    char tmp[32];     /* ".caris-tmp-" and 16 hex digits */
};

static bool is_dot(const char *path)
{
    return path[0] == '.' && path[1] == '\0';
}

int fsrestore_check_path(const char *path, size_t len, struct err *e)
{
    const char *why = NULL;
    if (!path || len == 0) {
        why = "it is empty";
    } else if (memchr(path, '\0', len)) {
        why = "it contains a NUL byte";
    } else if (path[0] == '/') {
        why = "it is absolute";
    } else {
        for (size_t i = 0; i <= len;) {
            const char *c = path + i;
            const char *slash = memchr(c, '/', len - i);
            size_t cl = slash ? (size_t)(slash - c) : len - i;
            if (cl == 0)
                why = "it has an empty component";
            else if (cl == 1 && c[0] == '.')
                why = "it has a \".\" component";
            else if (cl == 2 && c[0] == '.' && c[1] == '.')
                why = "it has a \"..\" component";
            if (why || !slash)
                break;
            i += cl + 1;
        }
    }
    if (!why)
        return 0;
    char ep[ESC_MAX];
    return err_set(e, ERR_DAMAGE, HINT_UNSAFE, "refusing to restore %s: %s",
                   path ? esc_n(path, len, ep, sizeof(ep)) : "(null)", why);
}

static int check(const char *path, struct err *e)
{
    return fsrestore_check_path(path, path ? strlen(path) : 0, e);
}

static int oom(struct err *e)
{
    return err_set(e, ERR_FAILURE, NULL, "out of memory during restore");
}

/* A name in the way of a directory we need: say whether it is a symlink (never followed)
 * or something else. */
static int refuse_nondir(const struct fsrestore *r, int dfd, const char *name, const char *path,
                         struct err *e)
{
    char ep[ESC_MAX], et[ESC_MAX];
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
        return err_set(e, ERR_FAILURE, HINT_SYMLINK,
                       "refusing to follow symlink %s in restore target %s", esc(path, ep),
                       esc(r->target, et));
    return err_set(e, ERR_FAILURE, HINT_EMPTY, "cannot restore below %s: it is not a directory",
                   esc(path, ep));
}

/* Opens directory name of dfd, creating it (0700) when create is set; path names it for
 * messages. */
static int open_subdir(const struct fsrestore *r, int dfd, const char *name, const char *path,
                       bool create, struct err *e)
{
    char ep[ESC_MAX];
    for (int attempt = 0;; attempt++) {
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0)
            return fd;
        int err = errno;
        if (err == ENOENT && create && attempt == 0) {
            if (mkdirat(dfd, name, 0700) < 0 && errno != EEXIST)
                return target_sys(e, errno, "cannot create directory %s", esc(path, ep));
            continue;
        }
        if (err == ELOOP || err == ENOTDIR)
            return refuse_nondir(r, dfd, name, path, e);
        return target_sys(e, err, "cannot open directory %s", esc(path, ep));
    }
}

/* Opens the directory that holds path's last component (path checked before), walking from
 * the target one component at a time, never following a symlink. Returns a new descriptor
 * and points *name at the last component inside path, or -1. */
static int resolve_parent(struct fsrestore *r, const char *path, bool create, const char **name,
                          struct err *e)
{
    char ep[ESC_MAX];
    const char *slash = strrchr(path, '/');
    *name = slash ? slash + 1 : path;
    size_t plen = slash ? (size_t)(slash - path) : 0;
    pthread_mutex_lock(&r->mu);
    int base = plen == 0 ? r->rootfd : -1;
    if (r->cache_fd >= 0 && r->cache_len == plen && memcmp(r->cache_path, path, plen) == 0)
        base = r->cache_fd;
    int fd = base >= 0 ? fcntl(base, F_DUPFD_CLOEXEC, 0) : -2;
    pthread_mutex_unlock(&r->mu);
    if (fd == -1)
        return target_sys(e, errno, "cannot restore %s", esc(path, ep));
    if (fd >= 0)
        return fd;
    char *buf = strndup(path, plen);
    if (!buf)
        return oom(e);
    fd = fcntl(r->rootfd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        free(buf);
        return target_sys(e, errno, "cannot open restore target");
    }
    for (char *c = buf;;) {
        char *s = strchr(c, '/');
        if (s)
            *s = '\0'; /* buf is now the path up to and including c */
        int next = open_subdir(r, fd, c, buf, create, e);
        close(fd);
        if (next < 0) {
            free(buf);
            return -1;
        }
        fd = next;
        if (!s)
            break;
        *s = '/';
        c = s + 1;
    }
    int keep = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (keep >= 0) {
        pthread_mutex_lock(&r->mu);
        if (r->cache_fd >= 0)
            close(r->cache_fd);
        free(r->cache_path);
        r->cache_path = buf;
        r->cache_len = plen;
        r->cache_fd = keep;
        pthread_mutex_unlock(&r->mu);
    } else {
        free(buf);
    }
    return fd;
}

struct fsrestore *fsrestore_open(const char *target, bool overwrite, struct err *e)
{
    char ep[ESC_MAX];
    static const char DIR_HINT[] = "give a new directory, or an empty one (with --overwrite, one "
                                   "whose files the backup's replace)";
    if (!*target) {
        err_set(e, ERR_USAGE, DIR_HINT, "empty restore target");
        return NULL;
    }
    int mrc = mkdir(target, 0700);
    if (mrc < 0 && errno == ENOTDIR) { /* a file on the way to it */
        err_set(e, ERR_USAGE, DIR_HINT,
                "restore target %s: a part of its path is a file, not a directory",
                esc(target, ep));
        return NULL;
    }
    if (mrc < 0 && errno != EEXIST) {
        err_sys(e, errno,
                errno == ENOENT ? "create the parent directories first" : target_hint(errno),
                "cannot create restore target %s", esc(target, ep));
        return NULL;
    }
    int fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == ENOTDIR) { /* a file (or a link to one): never replaced */
        err_set(e, ERR_USAGE, DIR_HINT, "restore target %s is not a directory", esc(target, ep));
        return NULL;
    }
    if (fd < 0) {
        target_sys(e, errno, "cannot open restore target %s", esc(target, ep));
        return NULL;
    }
    if (!overwrite) {
        /* a descriptor of its own: readdir moves the file offset */
        int lfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
        if (!d) {
            target_sys(e, errno, "cannot list restore target %s", esc(target, ep));
            if (lfd >= 0)
                close(lfd);
            close(fd);
            return NULL;
        }
        struct dirent *de;
        bool empty = true;
        errno = 0;
        while (empty && (de = readdir(d)))
            empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
        int err = errno;
        closedir(d);
        if (!empty || err) {
            if (err)
                target_sys(e, err, "cannot list restore target %s", esc(target, ep));
            else
                err_set(e, ERR_USAGE, HINT_EMPTY, "restore target %s is not empty",
                        esc(target, ep));
            close(fd);
            return NULL;
        }
    }
    struct fsrestore *r = calloc(1, sizeof(*r));
    if (!r || !(r->target = strdup(target))) {
        free(r);
        close(fd);
        oom(e);
        return NULL;
    }
    r->rootfd = fd;
    r->overwrite = overwrite;
    r->acl_inherit = overwrite || fgetxattr(fd, ACL_DEFAULT, NULL, 0) >= 0;
    r->cache_fd = -1;
    pthread_mutex_init(&r->mu, NULL);
    r->anon_ok = access("/proc/self/fd", X_OK) == 0;
    return r;
}

/* name exists where a new entry is to be created. With overwrite, anything but a directory
 * is removed (a symlink itself, never what it points to); returns 0 to try again. */
static int make_room(const struct fsrestore *r, int dfd, const char *name, const char *path,
                     struct err *e)
{
    char ep[ESC_MAX];
    struct stat st;
    if (!r->overwrite)
        return err_set(e, ERR_FAILURE, HINT_EMPTY, "cannot restore %s: it already exists",
                       esc(path, ep));
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return target_sys(e, errno, "cannot restore %s", esc(path, ep));
    if (S_ISDIR(st.st_mode))
        return err_set(e, ERR_FAILURE, "remove the directory, or restore into an empty one",
                       "cannot restore %s: a directory of that name exists", esc(path, ep));
    if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
        return target_sys(e, errno, "cannot replace %s", esc(path, ep));
    return 0;
}

int fsrestore_mkdir(struct fsrestore *r, const char *path, struct err *e)
{
    char ep[ESC_MAX];
    if (is_dot(path))
        return 0; /* the target itself */
    const char *name;
    int dfd = check(path, e) < 0 ? -1 : resolve_parent(r, path, true, &name, e);
    if (dfd < 0)
        return -1;
    int rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (mkdirat(dfd, name, 0700) == 0)
            break;
        struct stat st;
        if (errno != EEXIST) {
            rc = target_sys(e, errno, "cannot create directory %s", esc(path, ep));
            break;
        }
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = target_sys(e, errno, "cannot create directory %s", esc(path, ep));
            break;
        }
        if (S_ISDIR(st.st_mode))
            break; /* created before as a parent, or kept with overwrite */
        /* A symlink where a directory goes is refused even with overwrite: whatever
         * follows would be written below it. */
        if (attempt > 0 || S_ISLNK(st.st_mode)) {
            rc = refuse_nondir(r, dfd, name, path, e);
            break;
        }
        if ((rc = make_room(r, dfd, name, path, e)) < 0)
            break;
    }
    close(dfd);
    return rc;
}

static void tmp_name(char out[32]);

/* With overwrite, name exists: the new entry is made under a temporary name beside it and
 * renamed over it, so that the old entry stays as it was when it cannot be made (a full file
 * system, a quota, EMLINK, EIO). It was unlinked first, and lost with the restore's failure. */
static int replace_entry(struct fsrestore *r, int dfd, const char *name, const char *path,
                         const char *what,
                         int (*create)(int dfd, const char *name, const void *arg), const void *arg,
                         struct err *e)
{
    char ep[ESC_MAX], tmp[32];
    struct stat st;
    if (!r->overwrite || fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode)) {
        /* its refusals and messages; 0 only when the name came back meanwhile and is gone
         * again: made once more */
        if (make_room(r, dfd, name, path, e) < 0)
            return -1;
        return create(dfd, name, arg) == 0
                   ? 0
                   : target_sys(e, errno, "cannot create %s %s", what, esc(path, ep));
    }
    for (int attempt = 0;; attempt++) {
        tmp_name(tmp);
        if (create(dfd, tmp, arg) == 0)
            break;
        if (errno != EEXIST || attempt == 10)
            return target_sys(e, errno, "cannot create %s %s", what, esc(path, ep));
    }
    if (renameat(dfd, tmp, dfd, name) != 0) {
        int err = errno;
        unlinkat(dfd, tmp, 0);
        return target_sys(e, err, "cannot create %s %s", what, esc(path, ep));
    }
    /* a hard link renamed over a name of the same file: rename does nothing, tmp stays */
    unlinkat(dfd, tmp, 0);
    return 0;
}

/* Creates an entry with create(); on EEXIST replaces what is there (replace_entry). */
static int create_entry(struct fsrestore *r, const char *path, const char *what,
                        int (*create)(int dfd, const char *name, const void *arg), const void *arg,
                        struct err *e)
{
    char ep[ESC_MAX];
    const char *name;
    int dfd = check(path, e) < 0 ? -1 : resolve_parent(r, path, true, &name, e);
    if (dfd < 0)
        return -1;
    int rc = 0;
    if (create(dfd, name, arg) != 0) {
        if (errno != EEXIST)
            rc = target_sys(e, errno, "cannot create %s %s", what, esc(path, ep));
        else
            rc = replace_entry(r, dfd, name, path, what, create, arg, e);
    }
    close(dfd);
    return rc;
}

static int create_symlink(int dfd, const char *name, const void *target)
{
    return symlinkat(target, dfd, name);
}

static int create_fifo(int dfd, const char *name, const void *unused)
{
    (void)unused;
    return mkfifoat(dfd, name, 0600);
}

int fsrestore_symlink(struct fsrestore *r, const char *path, const char *target, struct err *e)
{
    /* the target is stored as is, whatever it points to: it is never followed here */
    return create_entry(r, path, "symlink", create_symlink, target, e);
}

int fsrestore_fifo(struct fsrestore *r, const char *path, struct err *e)
{
    return create_entry(r, path, "fifo", create_fifo, NULL, e);
}

struct link_src {
    int dfd;
    const char *name;
};

static int flush_pending(struct fsrestore *r, struct err *e);

static int create_link(int dfd, const char *name, const void *arg)
{
    const struct link_src *src = arg;
    return linkat(src->dfd, src->name, dfd, name, 0); /* 0: a symlink is linked, not followed */
}

int fsrestore_hardlink(struct fsrestore *r, const char *path, const char *link_path, struct err *e)
{
    char ep[ESC_MAX], el[ESC_MAX];
    struct link_src src;
    if (check(path, e) < 0)
        return -1;
    pthread_mutex_lock(&r->mu);
    int frc = flush_pending(r, e); /* the first name must be in place */
    pthread_mutex_unlock(&r->mu);
    if (frc < 0)
        return -1;
    if (check(link_path, e) < 0 ||
        (src.dfd = resolve_parent(r, link_path, false, &src.name, e)) < 0)
        return err_wrap(e, "cannot restore hard link %s", esc(path, ep));
    struct stat st;
    int rc = 0;
    if (fstatat(src.dfd, src.name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        rc = err_sys(e, errno, "restore the first name of a file before its hard links",
                     "cannot restore hard link %s to %s", esc(path, ep), esc(link_path, el));
    else if (!S_ISREG(st.st_mode))
        rc = err_set(e, ERR_DAMAGE, NULL, "cannot restore hard link %s to %s: not a regular file",
                     esc(path, ep), esc(link_path, el));
    else
        rc = create_entry(r, path, "hard link", create_link, &src, e);
    close(src.dfd);
    return rc;
}

/* ---- regular files ------------------------------------------------------------------------ */

static uint64_t tmp_base;
static pthread_once_t tmp_once = PTHREAD_ONCE_INIT;

static void tmp_init(void)
{
    if (getrandom(&tmp_base, sizeof(tmp_base), GRND_NONBLOCK) != (ssize_t)sizeof(tmp_base)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        tmp_base = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 16);
    }
}

/* A random base per process and a counter: unlikely to be taken, and O_EXCL makes it safe
 * when it is. (One getrandom per process, not per file.) */
static void tmp_name(char out[32])
{
    static uint64_t counter;
    pthread_once(&tmp_once, tmp_init);
    uint64_t x = tmp_base + __atomic_add_fetch(&counter, 0x9e3779b97f4a7c15ull, __ATOMIC_RELAXED);
    snprintf(out, 32, ".caris-tmp-%016llx", (unsigned long long)x);
}

static void file_free(struct fsrestore_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    close(f->dirfd);
    free(f->path);
    free(f);
}

struct fsrestore_file *fsrestore_file_begin(struct fsrestore *r, const char *path, struct err *e)
{
    char ep[ESC_MAX];
    const char *name;
    int dfd = check(path, e) < 0 ? -1 : resolve_parent(r, path, true, &name, e);
    if (dfd < 0)
        return NULL;
    struct fsrestore_file *f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        free(f);
        close(dfd);
        oom(e);
        return NULL;
    }
    f->r = r;
    f->dirfd = dfd;
    f->fd = -1;
    f->overwrite = r->overwrite;
    f->name = f->path + (name - path);
    /* Anonymous (O_TMPFILE) where the file system has them: a restore killed while it writes
     * leaves nothing behind that looks like a file (with overwrite too: the file gets a
     * temporary name only for the instant before its rename, see file_rename) */
    if (__atomic_load_n(&r->anon_ok, __ATOMIC_RELAXED)) {
        f->fd = openat(dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (f->fd >= 0) {
            f->tmp[0] = '\0';
            return f;
        }
        if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
            target_sys(e, errno, "cannot create a file for %s", esc(path, ep));
            file_free(f);
            return NULL;
        }
        __atomic_store_n(&r->anon_ok, 0, __ATOMIC_RELAXED); /* not here: named temporaries */
    }
    for (int attempt = 0; f->fd < 0; attempt++) {
        tmp_name(f->tmp);
        f->fd = openat(dfd, f->tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (f->fd < 0 && (errno != EEXIST || attempt == 10)) {
            target_sys(e, errno, "cannot create a temporary file for %s", esc(path, ep));
            file_free(f);
            return NULL;
        }
    }
    return f;
}

int fsrestore_file_fd(const struct fsrestore_file *f)
{
    ((struct fsrestore_file *)f)->raw = true; /* writes we do not see: size unknown */
    return f->fd;
}

int fsrestore_file_write(struct fsrestore_file *f, const void *data, size_t len, uint64_t off,
                         struct err *e)
{
    char ep[ESC_MAX];
    if (fs_pwrite_full(f->fd, data, len, off) != 0)
        return target_sys(e, errno, "cannot write %s", esc(f->path, ep));
    if (off + len > f->end)
        f->end = off + len;
    return 0;
}

ssize_t fsrestore_file_read(struct fsrestore_file *f, void *buf, size_t len, uint64_t off,
                            struct err *e)
{
    char ep[ESC_MAX];
    ssize_t n;
    do
        n = pread(f->fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        target_sys(e, errno, "cannot read back %s", esc(f->path, ep));
    return n;
}

/* Moves the finished temporary file to its name. Without overwrite an existing name is an
 * error, not replaced: the target was empty, so it means the backup holds the path twice. */
static int file_rename(struct fsrestore_file *f, struct err *e)
{
    char ep[ESC_MAX];
    if (!f->tmp[0]) {
        /* anonymous: give the open inode its name (linkat never replaces) */
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", f->fd);
        if (f->overwrite) {
            /* a temporary name for an instant, then renamed over the old file: only a crash
             * between the two leaves it (complete) under that name */
            char tmp[32];
            for (int attempt = 0;; attempt++) {
                tmp_name(tmp);
                if (linkat(AT_FDCWD, proc, f->dirfd, tmp, AT_SYMLINK_FOLLOW) == 0)
                    break;
                if (errno != EEXIST || attempt == 10)
                    return target_sys(e, errno, "cannot move %s into place", esc(f->path, ep));
            }
            if (renameat(f->dirfd, tmp, f->dirfd, f->name) == 0)
                return 0;
            int err = errno;
            unlinkat(f->dirfd, tmp, 0);
            return target_sys(e, err, "cannot move %s into place", esc(f->path, ep));
        }
        if (linkat(AT_FDCWD, proc, f->dirfd, f->name, AT_SYMLINK_FOLLOW) == 0)
            return 0;
        if (errno == EEXIST)
            return err_set(e, ERR_FAILURE, HINT_EMPTY, "cannot restore %s: it already exists",
                           esc(f->path, ep));
        return target_sys(e, errno, "cannot move %s into place", esc(f->path, ep));
    }
    if (f->overwrite) {
        if (renameat(f->dirfd, f->tmp, f->dirfd, f->name) < 0)
            return target_sys(e, errno, "cannot move %s into place", esc(f->path, ep));
        return 0;
    }
    if (renameat2(f->dirfd, f->tmp, f->dirfd, f->name, RENAME_NOREPLACE) == 0)
        return 0;
    int err = errno;
    if (err == EINVAL || err == ENOSYS) {
        /* no RENAME_NOREPLACE on this file system: link() never replaces either */
        if (linkat(f->dirfd, f->tmp, f->dirfd, f->name, 0) == 0) {
            unlinkat(f->dirfd, f->tmp, 0);
            return 0;
        }
        err = errno;
    }
    if (err == EEXIST)
        return err_set(e, ERR_FAILURE, HINT_EMPTY, "cannot restore %s: it already exists",
                       esc(f->path, ep));
    return target_sys(e, err, "cannot move %s into place", esc(f->path, ep));
}

void fsrestore_set_batch(struct fsrestore *r, size_t n)
{
    if (r->npend)
        return; /* only before the first batched commit */
    struct pending *np = n ? realloc(r->pend, n * sizeof(*np)) : NULL;
    if (n && !np)
        return; /* out of memory: stay in commit-at-once mode */
    if (!n)
        free(r->pend);
    r->pend = np;
    r->batch = n;
}

/* Syncs the file system once, then moves every pending file to its name. Returns the first
 * failure; the temporary files of failed renames are removed. */
static int flush_list(struct fsrestore *r, struct pending *list, size_t n, struct err *e)
{
    char et[ESC_MAX];
    int rc = 0;
    if (!n)
        return 0;
    if (syncfs(r->rootfd) < 0)
        rc = target_sys(e, errno, "cannot flush restore target %s to disk", esc(r->target, et));
    for (size_t i = 0; i < n; i++) {
        struct pending *p = &list[i];
        struct fsrestore_file f = {.r = r,
                                   .dirfd = p->dirfd,
                                   .fd = p->fd,
                                   .overwrite = r->overwrite,
                                   .path = p->path,
                                   .name = p->name};
        memcpy(f.tmp, p->tmp, sizeof(f.tmp));
        struct err ie = ERR_INIT;
        if (rc != 0 || file_rename(&f, &ie) < 0) {
            if (rc == 0) {
                *e = ie;
                rc = -1;
            }
            if (p->tmp[0])
                unlinkat(p->dirfd, p->tmp, 0);
        }
        if (p->fd >= 0)
            close(p->fd);
        close(p->dirfd);
        free(p->path);
    }
    return rc;
}

/* Caller holds r->mu. */
static int flush_pending(struct fsrestore *r, struct err *e)
{
    int rc = flush_list(r, r->pend, r->npend, e);
    r->npend = 0;
    return rc;
}

static void drop_pending(struct fsrestore *r)
{
    for (size_t i = 0; i < r->npend; i++) {
        if (r->pend[i].tmp[0])
            unlinkat(r->pend[i].dirfd, r->pend[i].tmp, 0);
        if (r->pend[i].fd >= 0)
            close(r->pend[i].fd); /* an anonymous file vanishes with it */
        close(r->pend[i].dirfd);
        free(r->pend[i].path);
    }
    r->npend = 0;
}

static struct pending *find_pending(struct fsrestore *r, const char *path)
{
    /* the caller applies metadata right after the commit: search from the newest */
    for (size_t i = r->npend; i-- > 0;)
        if (strcmp(r->pend[i].path, path) == 0)
            return &r->pend[i];
    return NULL;
}

static int commit_batched(struct fsrestore_file *f, uint64_t size, struct err *e)
{
    char ep[ESC_MAX];
    struct fsrestore *r = f->r;
    int rc = 0;
    struct stat st;
    if (size > (uint64_t)INT64_MAX)
        rc = err_set(e, ERR_DAMAGE, NULL, "cannot restore %s: size %llu is out of range",
                     esc(f->path, ep), (unsigned long long)size);
    else if (!f->sized && ftruncate(f->fd, (off_t)size) < 0)
        rc = target_sys(e, errno, "cannot set the size of %s", esc(f->path, ep));
    /* with overwrite, a directory in the way is found now; without, the flush's
     * RENAME_NOREPLACE refuses any existing name (reported then) */
    else if (f->overwrite && fstatat(f->dirfd, f->name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
             S_ISDIR(st.st_mode))
        /* decided now, not at the rename, so the caller hears of it with this file */
        rc = err_set(e, ERR_FAILURE, "remove the directory, or restore into an empty one",
                     "cannot restore %s: a directory of that name exists", esc(f->path, ep));
    else if (find_pending(r, f->path))
        rc = err_set(e, ERR_FAILURE, HINT_EMPTY, "cannot restore %s: it already exists",
                     esc(f->path, ep));
    /* an anonymous file stays open until it is linked; a named one can be closed */
    if (f->tmp[0]) {
        if (close(f->fd) < 0 && rc == 0)
            rc = target_sys(e, errno, "cannot write %s", esc(f->path, ep));
        f->fd = -1;
    }
    if (rc < 0) {
        fsrestore_file_abort(f);
        return -1;
    }
    struct pending *p = &r->pend[r->npend++]; /* npend < batch: the caller flushed */
    p->fd = f->fd;
    p->dirfd = f->dirfd;
    memcpy(p->tmp, f->tmp, sizeof(p->tmp));
    p->path = f->path;
    p->name = f->name;
    free(f); /* dirfd and path now belong to the pending entry */
    return 0;
}

static int apply_fd(int fd, const char *path, const struct fs_meta *m, const struct timespec ts[2],
                    bool acls, struct err *e);

int fsrestore_file_commit_meta(struct fsrestore_file *f, uint64_t size, const struct fs_meta *m,
                               struct err *e)
{
    char ep[ESC_MAX];
    if (m->mtime_nsec < 0 || m->mtime_nsec >= 1000000000 || m->type != FS_REG) {
        err_set(e, ERR_DAMAGE, NULL, "cannot restore %s: invalid metadata", esc(f->path, ep));
        fsrestore_file_abort(f);
        return -1;
    }
    const struct timespec ts[2] = {{.tv_sec = m->mtime_sec, .tv_nsec = m->mtime_nsec},
                                   {.tv_sec = m->mtime_sec, .tv_nsec = m->mtime_nsec}};
    /* The size first (it changes mtime), then owner, xattrs, mode and times on the open
     * file: no second lookup by name. */
    bool sized = !f->raw && f->end == size; /* a new file is exactly what was written */
    if (size > (uint64_t)INT64_MAX || (!sized && ftruncate(f->fd, (off_t)size) < 0)) {
        target_sys(e, size > (uint64_t)INT64_MAX ? EFBIG : errno, "cannot set the size of %s",
                   esc(f->path, ep));
        fsrestore_file_abort(f);
        return -1;
    }
    if (apply_fd(f->fd, f->path, m, ts, f->r->acl_inherit, e) < 0) {
        fsrestore_file_abort(f);
        return -1;
    }
    f->sized = true;
    return fsrestore_file_commit(f, size, e);
}

int fsrestore_file_commit(struct fsrestore_file *f, uint64_t size, struct err *e)
{
    if (f->r->batch) {
        struct fsrestore *r = f->r;
        struct pending *full = NULL, *fresh = NULL;
        size_t nfull = 0;
        pthread_mutex_lock(&r->mu);
        if (r->npend >= r->batch && (fresh = malloc(r->batch * sizeof(*fresh)))) {
            /* take the full batch and flush it outside the lock: the other threads go on
             * filling the next one meanwhile */
            full = r->pend;
            nfull = r->npend;
            r->pend = fresh;
            r->npend = 0;
        }
        int rc = r->npend >= r->batch ? flush_pending(r, e) : 0;
        if (rc < 0)
            fsrestore_file_abort(f);
        else
            rc = commit_batched(f, size, e);
        pthread_mutex_unlock(&r->mu);
        if (full) {
            struct err fe = ERR_INIT;
            if (flush_list(r, full, nfull, &fe) < 0 && rc == 0) {
                *e = fe;
                rc = -1;
            }
            free(full);
        }
        return rc;
    }
    char ep[ESC_MAX];
    int rc = 0;
    if (size > (uint64_t)INT64_MAX)
        rc = err_set(e, ERR_DAMAGE, NULL, "cannot restore %s: size %llu is out of range",
                     esc(f->path, ep), (unsigned long long)size);
    else if (!f->sized && ftruncate(f->fd, (off_t)size) < 0)
        rc = target_sys(e, errno, "cannot set the size of %s", esc(f->path, ep));
    else if (fsync(f->fd) < 0) /* data on disk before the name points at it */
        rc = target_sys(e, errno, "cannot write %s", esc(f->path, ep));
    if (f->tmp[0]) { /* a named temporary is closed before the rename; anonymous after */
        if (close(f->fd) < 0 && rc == 0)
            rc = target_sys(e, errno, "cannot write %s", esc(f->path, ep));
        f->fd = -1;
    }
    if (rc == 0)
        rc = file_rename(f, e);
    if (rc < 0 && f->tmp[0])
        unlinkat(f->dirfd, f->tmp, 0);
    file_free(f);
    return rc;
}

void fsrestore_file_abort(struct fsrestore_file *f)
{
    if (!f)
        return;
    if (f->tmp[0])
        unlinkat(f->dirfd, f->tmp, 0); /* an anonymous file vanishes with its fd */
    file_free(f);
}

/* ---- metadata ----------------------------------------------------------------------------- */

static mode_t type_bits(enum fs_type t)
{
    switch (t) {
    case FS_REG:
    case FS_HARDLINK:
        return S_IFREG;
    case FS_DIR:
        return S_IFDIR;
    case FS_SYMLINK:
        return S_IFLNK;
    case FS_FIFO:
        return S_IFIFO;
    }
    return 0;
}

static const char *type_name(mode_t bits)
{
    switch (bits & S_IFMT) {
    case S_IFREG:
        return "regular file";
    case S_IFDIR:
        return "directory";
    case S_IFLNK:
        return "symlink";
    case S_IFIFO:
        return "fifo";
    default:
        return "special file";
    }
}

/* Keeps the first error in e; later ones only make the result -1. */
static int note(struct err *e, int *rc, int errnum, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int note(struct err *e, int *rc, int errnum, const char *hint, const char *fmt, ...)
{
    if (*rc == 0) {
        char msg[sizeof(e->msg)];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        err_sys(e, errnum, hint ? hint : target_hint(errnum), "%s", msg);
    }
    *rc = -1;
    return -1;
}

/* Without privileges some ownership and some xattr namespaces cannot be restored; that is
 * expected and not an error (the restore is still the user's files). */
static bool unprivileged(int err)
{
    return (err == EPERM || err == EINVAL) && geteuid() != 0;
}

static bool has_xattr(const struct fs_meta *m, const char *name)
{
    for (size_t i = 0; i < m->nxattrs; i++)
        if (strcmp(m->xattrs[i].name, name) == 0)
            return true;
    return false;
}

/* Applies m to the entry open as fd. Order matters: chown clears setuid/setgid bits and
 * security.capability, so xattrs and mode come after it; setting xattrs may need write
 * permission, so they come before chmod; times come last as nothing after changes them.
 * acls: the entry may have inherited a default ACL of the target (acl_inherit). */
static int apply_fd(int fd, const char *path, const struct fs_meta *m, const struct timespec ts[2],
                    bool acls, struct err *e)
{
    char ep[ESC_MAX];
    int rc = 0;
    mode_t mode = m->mode & 07777;
    if (fchown(fd, m->uid, m->gid) < 0) {
        if (!unprivileged(errno))
            note(e, &rc, errno, NULL, "cannot change owner of %s", esc(path, ep));
        else /* the group alone, when the restoring user is in it */
            (void)fchown(fd, (uid_t)-1, m->gid);
    }
    if (mode & (S_ISUID | S_ISGID)) {
        /* Set-user-id and set-group-id go with the owner they were set for: restored without
         * the privilege to give the entry its owner (not root), another user's setuid
         * program kept its bits, owned by whoever restored it: a program of the backup's
         * content running as that user (as --no-owner does for root) */
        struct stat st;
        bool known = fstat(fd, &st) == 0;
        if (!known || st.st_uid != m->uid)
            mode &= ~(mode_t)S_ISUID;
        if (!known || st.st_gid != m->gid)
            mode &= ~(mode_t)S_ISGID;
    }
    if (acls) {
        /* a default ACL of the target is inherited by what the restore creates: one the entry
         * does not have of its own gave access its backed-up mode does not (the mode's group
         * bits become the ACL's mask), and a directory passed it on */
        for (int k = 0; k < (m->type == FS_DIR ? 2 : 1); k++) {
            const char *name = k ? ACL_DEFAULT : ACL_ACCESS;
            if (!has_xattr(m, name) && fremovexattr(fd, name) < 0 && errno != ENODATA &&
                errno != ENOTSUP && !unprivileged(errno))
                note(e, &rc, errno, NULL, "cannot remove the ACL %s inherited on %s", name,
                     esc(path, ep));
        }
    }
    for (size_t i = 0; i < m->nxattrs; i++) {
        const struct fs_xattr *x = &m->xattrs[i];
        if (fsetxattr(fd, x->name, x->value, x->len, 0) == 0)
            continue;
        int err = errno;
        if (unprivileged(err) && strncmp(x->name, "user.", 5) != 0)
            continue; /* trusted.*, security.*: need privileges we do not have */
        note(e, &rc, err,
             err == ENOTSUP ? "the file system of the restore target does not support these "
                              "extended attributes"
                            : NULL,
             "cannot set extended attribute %s on %s", x->name, esc(path, ep));
    }
    if (fchmod(fd, mode) < 0)
        note(e, &rc, errno, NULL, "cannot change mode of %s", esc(path, ep));
    if (futimens(fd, ts) < 0)
        note(e, &rc, errno, NULL, "cannot set modification time of %s", esc(path, ep));
    return rc;
}

/* Applies m to name in dfd, which must be of the type m says: metadata is never applied
 * through a symlink. */
static int apply_at(int dfd, const char *name, const char *path, const struct fs_meta *m, bool acls,
                    struct err *e)
{
    char ep[ESC_MAX];
    if (m->mtime_nsec < 0 || m->mtime_nsec >= 1000000000)
        return err_set(e, ERR_DAMAGE, NULL, "cannot restore %s: invalid modification time",
                       esc(path, ep));
    const struct timespec ts[2] = {{.tv_sec = m->mtime_sec, .tv_nsec = m->mtime_nsec},
                                   {.tv_sec = m->mtime_sec, .tv_nsec = m->mtime_nsec}};
    mode_t want = type_bits(m->type);
    if (want == 0)
        return err_set(e, ERR_DAMAGE, NULL, "cannot restore %s: unknown entry type %d",
                       esc(path, ep), (int)m->type);
    if (want == S_IFLNK) {
        struct stat st;
        int rc = 0;
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return target_sys(e, errno, "cannot apply metadata to %s", esc(path, ep));
        if (!S_ISLNK(st.st_mode))
            return err_set(e, ERR_FAILURE, NULL,
                           "cannot apply metadata to %s: it is a %s, not "
                           "a symlink",
                           esc(path, ep), type_name(st.st_mode));
        /* no xattrs and no mode on symlinks: Linux ignores or refuses them */
        if (fchownat(dfd, name, m->uid, m->gid, AT_SYMLINK_NOFOLLOW) < 0 && !unprivileged(errno))
            note(e, &rc, errno, NULL, "cannot change owner of %s", esc(path, ep));
        if (utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
            note(e, &rc, errno, NULL, "cannot set modification time of %s", esc(path, ep));
        return rc;
    }
    /* O_NONBLOCK: opening a FIFO must not wait for a writer */
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    int fd = openat(dfd, name, flags | (want == S_IFDIR ? O_DIRECTORY : 0));
    if (fd < 0) {
        int err = errno;
        struct stat st;
        /* ELOOP: a symlink; ENOTDIR: anything but the directory we want */
        if ((err == ELOOP || err == ENOTDIR) && fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            return err_set(e, ERR_FAILURE, NULL,
                           "cannot apply metadata to %s: it is a %s, not a %s", esc(path, ep),
                           type_name(st.st_mode), type_name(want));
        return target_sys(e, err, "cannot apply metadata to %s", esc(path, ep));
    }
    struct stat st;
    int rc;
    if (fstat(fd, &st) < 0)
        rc = target_sys(e, errno, "cannot apply metadata to %s", esc(path, ep));
    else if ((st.st_mode & S_IFMT) != want)
        rc = err_set(e, ERR_FAILURE, NULL, "cannot apply metadata to %s: it is a %s, not a %s",
                     esc(path, ep), type_name(st.st_mode), type_name(want));
    else
        rc = apply_fd(fd, path, m, ts, acls, e);
    close(fd);
    return rc;
}

static int meta_copy(struct fs_meta *dst, const struct fs_meta *src)
{
    *dst = (struct fs_meta){
        .type = src->type,
        .mode = src->mode,
        .uid = src->uid,
        .gid = src->gid,
        .mtime_sec = src->mtime_sec,
        .mtime_nsec = src->mtime_nsec,
        .size = src->size,
    };
    if (src->nxattrs == 0)
        return 0;
    if (!(dst->xattrs = calloc(src->nxattrs, sizeof(*dst->xattrs))))
        return -1;
    for (size_t i = 0; i < src->nxattrs; i++) {
        struct fs_xattr *x = &dst->xattrs[i];
        dst->nxattrs = i + 1;
        if (!(x->name = strdup(src->xattrs[i].name)) ||
            !(x->value = malloc(src->xattrs[i].len ? src->xattrs[i].len : 1)))
            return -1;
        memcpy(x->value, src->xattrs[i].value, src->xattrs[i].len);
        x->len = src->xattrs[i].len;
    }
    return 0;
}

static int defer_dir(struct fsrestore *r, const char *path, const struct fs_meta *m, struct err *e)
{
    if (r->ndirs == r->cap_dirs) {
        size_t cap = r->cap_dirs ? r->cap_dirs * 2 : 64;
        struct deferred *d =
            cap < SIZE_MAX / sizeof(*d) ? realloc(r->dirs, cap * sizeof(*d)) : NULL;
        if (!d)
            return oom(e);
        r->dirs = d;
        r->cap_dirs = cap;
    }
    struct deferred *d = &r->dirs[r->ndirs];
    *d = (struct deferred){.seq = r->ndirs};
    if (!(d->path = strdup(path)) || meta_copy(&d->meta, m) < 0) {
        free(d->path);
        fs_meta_free(&d->meta);
        return oom(e);
    }
    d->depth = is_dot(path) ? 0 : 1;
    for (const char *p = path; *p; p++)
        d->depth += *p == '/';
    r->ndirs++;
    return 0;
}

int fsrestore_apply_meta(struct fsrestore *r, const char *path, const struct fs_meta *m,
                         struct err *e)
{
    char ep[ESC_MAX];
    if (is_dot(path)) {
        /* the walker's name for the root: the target itself */
        if (m->type != FS_DIR)
            return err_set(e, ERR_DAMAGE, NULL, "cannot restore a %s as the restore target",
                           type_name(type_bits(m->type)));
    } else if (check(path, e) < 0) {
        return -1;
    }
    if (m->type == FS_DIR) {
        pthread_mutex_lock(&r->mu);
        int drc = defer_dir(r, path, m, e);
        pthread_mutex_unlock(&r->mu);
        return drc;
    }
    if (m->type == FS_REG) {
        pthread_mutex_lock(&r->mu);
        struct pending *p = find_pending(r, path);
        int prc = 0;
        if (p && p->tmp[0]) {
            prc = apply_at(p->dirfd, p->tmp, path, m, r->acl_inherit, e);
        } else if (p) {
            const struct timespec ts[2] = {{.tv_sec = m->mtime_sec, .tv_nsec = m->mtime_nsec},
                                           {.tv_sec = m->mtime_sec, .tv_nsec = m->mtime_nsec}};
            prc = apply_fd(p->fd, path, m, ts, r->acl_inherit, e);
        }
        pthread_mutex_unlock(&r->mu);
        if (p)
            return prc;
    }
    const char *name;
    int dfd = resolve_parent(r, path, false, &name, e);
    if (dfd < 0)
        return err_wrap(e, "cannot apply metadata to %s", esc(path, ep));
    int rc = 0;
    struct stat st;
    if (m->type != FS_HARDLINK)
        rc = apply_at(dfd, name, path, m, r->acl_inherit, e);
    /* A further name: the inode's metadata came with its first name. Applying it again
     * would only fail where a mode without read permission stops the unprivileged open. */
    else if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        rc = target_sys(e, errno, "cannot apply metadata to %s", esc(path, ep));
    else if (!S_ISREG(st.st_mode))
        rc = err_set(e, ERR_FAILURE, NULL, "cannot apply metadata to %s: it is a %s, not a %s",
                     esc(path, ep), type_name(st.st_mode), type_name(S_IFREG));
    close(dfd);
    return rc;
}

static int deferred_cmp(const void *a, const void *b)
{
    const struct deferred *x = a, *y = b;
    if (x->depth != y->depth)
        return x->depth > y->depth ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int fsrestore_finish(struct fsrestore *r, struct err *e)
{
    char et[ESC_MAX];
    pthread_mutex_lock(&r->mu);
    int rc = flush_pending(r, e);
    pthread_mutex_unlock(&r->mu);
    struct err later = ERR_INIT; /* errors after the first: counted, not reported */
    /* deepest first: a parent's mode may take away the access its children need */
    if (r->ndirs)
        qsort(r->dirs, r->ndirs, sizeof(*r->dirs), deferred_cmp);
    for (size_t i = 0; i < r->ndirs; i++) {
        struct deferred *d = &r->dirs[i];
        struct err *ei = rc == 0 ? e : &later;
        const char *name = ".";
        int dfd = is_dot(d->path) ? fcntl(r->rootfd, F_DUPFD_CLOEXEC, 0)
                                  : resolve_parent(r, d->path, false, &name, ei);
        if (dfd < 0 || apply_at(dfd, name, d->path, &d->meta, r->acl_inherit, ei) < 0) {
            if (dfd < 0 && is_dot(d->path))
                target_sys(ei, errno, "cannot open restore target %s", esc(r->target, et));
            rc = -1;
        }
        if (dfd >= 0)
            close(dfd);
    }
    /* one syncfs for the whole restore: the directory entries, and the files' metadata */
    if (syncfs(r->rootfd) < 0 && rc == 0)
        rc = target_sys(e, errno, "cannot flush restore target %s to disk", esc(r->target, et));
    fsrestore_free(r);
    return rc;
}

size_t fsrestore_uncommitted(struct fsrestore *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->npend;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void fsrestore_free(struct fsrestore *r)
{
    if (!r)
        return;
    drop_pending(r);
    free(r->pend);
    pthread_mutex_destroy(&r->mu);
    for (size_t i = 0; i < r->ndirs; i++) {
        free(r->dirs[i].path);
        fs_meta_free(&r->dirs[i].meta);
    }
    free(r->dirs);
    if (r->cache_fd >= 0)
        close(r->cache_fd);
    free(r->cache_path);
    close(r->rootfd);
    free(r->target);
    free(r);
}

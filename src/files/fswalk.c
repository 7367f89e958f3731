/* Walking a tree at backup time: every entry is reached through a descriptor of the
 * directory that holds it (openat/fstatat/readlinkat), so names may be any bytes and paths
 * may be longer than PATH_MAX. One directory descriptor is open per level of depth, never
 * one per sibling, plus those of the directories read ahead (see "reading directories
 * ahead" below). */
#include "caris/fsmeta.h"
#include "caris/core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

/* ---- printing names in messages --------------------------------------------------------- */

enum { ESC_MAX = 480 };

/* Names are data, not text: see str_escape. */
static const char *esc(const char *s, char *buf, size_t size)
{
    return str_escape(s, strlen(s), buf, size);
}

/* ---- fs_meta ------------------------------------------------------------------------------ */

static void xattrs_free(struct fs_xattr *xs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(xs[i].name);
        free(xs[i].value);
    }
    free(xs);
}

void fs_meta_free(struct fs_meta *m)
{
    if (!m)
        return;
    free(m->user);
    free(m->group);
    free(m->link);
    xattrs_free(m->xattrs, m->nxattrs);
    memset(m, 0, sizeof(*m));
}

static int xattr_cmp(const void *a, const void *b)
{
    return strcmp(((const struct fs_xattr *)a)->name, ((const struct fs_xattr *)b)->name);
}

/* Reads one attribute's value; the loop covers a value that grows between the two calls.
 * Returns its length, or -1 with errno (ENODATA: removed meanwhile). */
static ssize_t xattr_get(int fd, const char *name, uint8_t **value)
{
    for (;;) {
        ssize_t len = fgetxattr(fd, name, NULL, 0);
        if (len < 0)
            return -1;
        uint8_t *v = malloc(len ? (size_t)len : 1);
        if (!v)
            return -1;
        ssize_t got = fgetxattr(fd, name, v, (size_t)len);
        if (got >= 0) {
            *value = v;
            return got;
        }
        int err = errno;
        free(v);
        if (err != ERANGE) {
            errno = err;
            return -1;
        }
    }
}

/* Reads all extended attributes of fd, in every namespace the kernel shows us, sorted by
 * name so that manifests are reproducible. A file system without xattrs yields none.
 * Returns 0, or -1 with errno set. */
static int xattrs_read(int fd, struct fs_xattr **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    char *list = NULL;
    ssize_t len;
    for (;;) {
        len = flistxattr(fd, NULL, 0);
        if (len <= 0) {
            free(list);
            if (len < 0 && (errno == ENOTSUP || errno == ENOSYS))
                return 0;
            return len < 0 ? -1 : 0;
        }
        char *l = realloc(list, (size_t)len);
        if (!l) {
            free(list);
            return -1;
        }
        list = l;
        ssize_t got = flistxattr(fd, list, (size_t)len);
        if (got >= 0) {
            len = got;
            break;
        }
        if (errno != ERANGE) {
            int err = errno;
            free(list);
            errno = err;
            return -1;
        }
    }
    size_t count = 0;
    for (ssize_t i = 0; i < len; i += (ssize_t)strnlen(list + i, (size_t)(len - i)) + 1)
        count++;
    struct fs_xattr *xs = calloc(count ? count : 1, sizeof(*xs));
    if (!xs) {
        free(list);
        return -1;
    }
    size_t n = 0;
    for (ssize_t i = 0; i < len;) {
        size_t nl = strnlen(list + i, (size_t)(len - i));
        const char *name = list + i;
        i += (ssize_t)nl + 1;
        if (nl == 0 || (ssize_t)nl + (name - list) >= len)
            continue; /* empty or unterminated: the kernel never returns that */
        uint8_t *value = NULL;
        ssize_t vlen = xattr_get(fd, name, &value);
        if (vlen < 0) {
            if (errno == ENODATA)
                continue;
            goto fail;
        }
        xs[n].name = strdup(name);
        xs[n].value = value;
        xs[n].len = (size_t)vlen;
        n++;
        if (!xs[n - 1].name)
            goto fail;
    }
    free(list);
    qsort(xs, n, sizeof(*xs), xattr_cmp);
    *out = xs;
    *nout = n;
    return 0;
fail : {
    int err = errno;
    xattrs_free(xs, n);
    free(list);
    errno = err;
    return -1;
}
}

/* ---- the walker --------------------------------------------------------------------------- */

struct hl_slot {
    dev_t dev;
    ino_t ino;
    char *path; /* NULL: free slot */
};

struct id_name {
    uint32_t id;
    char *name; /* NULL: no such user/group */
};

struct walker {
    const struct fswalk_opts *o;
    /* what the scanners use of the options, fixed when the walk starts (fswalk_start) */
    const char *const *excludes;
    bool one_file_system;
    fswalk_cb cb;
    struct err *e;
    const char *root; /* as given, for messages about the root */
    dev_t root_dev;

    char *path; /* relative path of the current entry; "" while listing the root */
    size_t len, cap;

    /* first path of every regular file with st_nlink > 1 seen so far, open addressing */
    struct hl_slot *hl;
    size_t hl_cap, hl_used;

    struct id_name *users, *groups;
    size_t nusers, ngroups;
    char *pwbuf;
    size_t pwbuf_size;

    /* reading ahead (below): scanner threads, and the directories waiting for one */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct dnode **heap; /* queued directories, earliest in the walk's order first */
    size_t nheap, capheap;
    size_t ahead_dirs, ahead_ents; /* scanned or being scanned by a scanner, not yet taken */
    size_t max_ahead, max_ents;
    pthread_t *threads;
    size_t nthreads;
    bool stop;
};

static const char *shown(const struct walker *w, char *buf)
{
    bool root = w->len == 0 || (w->len == 1 && w->path[0] == '.');
    return esc(root ? w->root : w->path, buf, ESC_MAX);
}

static int oom(struct walker *w)
{
    char ep[ESC_MAX];
    return err_set(w->e, ERR_FAILURE, NULL, "out of memory while walking %s",
                   esc(w->root, ep, sizeof(ep)));
}

static bool is_resource_errno(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOMEM;
}

/* Something about the current entry could not be read. For the root that fails the walk
 * (nothing would be backed up); below it, it is a warning and the walk goes on. Running out
 * of descriptors or memory fails the walk too: it would otherwise skip whole subtrees. */
static int vproblem(struct walker *w, bool fatal, int errnum, bool lost, const char *fmt,
                    va_list ap) __attribute__((format(printf, 5, 0)));
static int vproblem(struct walker *w, bool fatal, int errnum, bool lost, const char *fmt,
                    va_list ap)
{
    char msg[sizeof(w->e->msg)];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (fatal || is_resource_errno(errnum)) {
        const char *hint = errnum == EMFILE || errnum == ENFILE
                               ? "raise the open-file limit (ulimit -n); one descriptor is "
                                 "used per level of directory depth, plus up to 512 read "
                                 "ahead (at most a quarter of the limit)"
                           : errnum == EACCES || errnum == EPERM
                               /* a path to back up (a root): not about the backup directory */
                               ? "the user running caris-backup must be able to read what it "
                                 "backs up: run it as root or as the files' owner, or give "
                                 "other paths"
                               : NULL;
        if (errnum)
            return err_sys(w->e, errnum, hint, "%s", msg);
        return err_set(w->e, ERR_FAILURE, hint, "%s", msg);
    }
    if (w->o->warn) {
        if (errnum) {
            size_t l = strlen(msg);
            snprintf(msg + l, sizeof(msg) - l, ": %s", strerror(errnum));
        }
        w->o->warn(w->o->ctx, w->path, msg, lost);
    }
    return 0;
}

/* lost: errnum != 0 (something that exists could not be read). */
static int problem(struct walker *w, bool fatal, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int problem(struct walker *w, bool fatal, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vproblem(w, fatal, errnum, errnum != 0, fmt, ap);
    va_end(ap);
    return rc;
}

/* The entry is kept whole all the same (its extended attributes could not be read; a FIFO,
 * which has no content): not lost. */
static int problem_kept(struct walker *w, bool fatal, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int problem_kept(struct walker *w, bool fatal, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vproblem(w, fatal, errnum, false, fmt, ap);
    va_end(ap);
    return rc;
}

static int path_append(struct walker *w, const char *name)
{
    size_t nl = strlen(name);
    size_t need = w->len + 1 + nl + 1;
    if (need > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < need) {
            if (cap > SIZE_MAX / 2)
                return oom(w);
            cap *= 2;
        }
        char *p = realloc(w->path, cap);
        if (!p)
            return oom(w);
        w->path = p;
        w->cap = cap;
    }
    if (w->len)
        w->path[w->len++] = '/';
    memcpy(w->path + w->len, name, nl + 1);
    w->len += nl;
    return 0;
}

static void path_truncate(struct walker *w, size_t len)
{
    w->len = len;
    w->path[len] = '\0';
}

static size_t hl_index(const struct walker *w, dev_t dev, ino_t ino)
{
    uint64_t x = (uint64_t)ino ^ ((uint64_t)dev * 0x9e3779b97f4a7c15ULL);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 29;
    return (size_t)x & (w->hl_cap - 1);
}

static const char *hl_find(const struct walker *w, dev_t dev, ino_t ino)
{
    if (!w->hl_cap)
        return NULL;
    for (size_t i = hl_index(w, dev, ino);; i = (i + 1) & (w->hl_cap - 1)) {
        const struct hl_slot *s = &w->hl[i];
        if (!s->path)
            return NULL;
        if (s->dev == dev && s->ino == ino)
            return s->path;
    }
}

static int hl_add(struct walker *w, dev_t dev, ino_t ino)
{
    /* the table is kept at most half full so that probing stays short and always ends */
    if ((w->hl_used + 1) * 2 > w->hl_cap) {
        size_t cap = w->hl_cap ? w->hl_cap * 2 : 64;
        struct hl_slot *old = w->hl;
        size_t old_cap = w->hl_cap;
        if (cap > SIZE_MAX / sizeof(*old) || !(w->hl = calloc(cap, sizeof(*old)))) {
            w->hl = old;
            return oom(w);
        }
        w->hl_cap = cap;
        for (size_t i = 0; i < old_cap; i++) {
            if (!old[i].path)
                continue;
            size_t j = hl_index(w, old[i].dev, old[i].ino);
            while (w->hl[j].path)
                j = (j + 1) & (cap - 1);
            w->hl[j] = old[i];
        }
        free(old);
    }
    char *p = strdup(w->path);
    if (!p)
        return oom(w);
    size_t j = hl_index(w, dev, ino);
    while (w->hl[j].path)
        j = (j + 1) & (w->hl_cap - 1);
    w->hl[j] = (struct hl_slot){.dev = dev, .ino = ino, .path = p};
    w->hl_used++;
    return 0;
}

/* Resolves a uid or gid to its name once per walk. An unknown id, or a failing name
 * service, yields NULL: names are informational, the numeric id is what is restored. */
static int id_lookup(struct walker *w, bool user, uint32_t id, char **out)
{
    struct id_name **tab = user ? &w->users : &w->groups;
    size_t *n = user ? &w->nusers : &w->ngroups;
    size_t i = 0;
    while (i < *n && (*tab)[i].id != id)
        i++;
    if (i == *n) {
        char *name = NULL;
        for (;;) {
            if (!w->pwbuf) {
                long sz = sysconf(_SC_GETPW_R_SIZE_MAX);
                w->pwbuf_size = sz > 0 && sz < 65536 ? (size_t)sz : 1024;
                if (!(w->pwbuf = malloc(w->pwbuf_size)))
                    return oom(w);
            }
            int rc;
            const char *found = NULL;
            if (user) {
                struct passwd pw, *res = NULL;
                rc = getpwuid_r(id, &pw, w->pwbuf, w->pwbuf_size, &res);
                found = rc == 0 && res ? res->pw_name : NULL;
            } else {
                struct group gr, *res = NULL;
                rc = getgrgid_r(id, &gr, w->pwbuf, w->pwbuf_size, &res);
                found = rc == 0 && res ? res->gr_name : NULL;
            }
            if (rc == ERANGE && w->pwbuf_size < (1u << 20)) {
                char *b = realloc(w->pwbuf, w->pwbuf_size * 2);
                if (!b)
                    return oom(w);
                w->pwbuf = b;
                w->pwbuf_size *= 2;
                continue;
            }
            if (found && !(name = strdup(found)))
                return oom(w);
            break;
        }
        struct id_name *t = realloc(*tab, (*n + 1) * sizeof(**tab));
        if (!t) {
            free(name);
            return oom(w);
        }
        *tab = t;
        t[*n] = (struct id_name){.id = id, .name = name};
        (*n)++;
    }
    *out = NULL;
    if ((*tab)[i].name && !(*out = strdup((*tab)[i].name)))
        return oom(w);
    return 0;
}

static int meta_fill(struct walker *w, const struct stat *st, enum fs_type type, struct fs_meta *m)
{
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->mode = st->st_mode & 07777;
    m->uid = st->st_uid;
    m->gid = st->st_gid;
    m->mtime_sec = st->st_mtim.tv_sec;
    m->mtime_nsec = st->st_mtim.tv_nsec;
    if (type == FS_REG || type == FS_HARDLINK)
        m->size = (uint64_t)st->st_size;
    if (id_lookup(w, true, st->st_uid, &m->user) < 0 ||
        id_lookup(w, false, st->st_gid, &m->group) < 0) {
        fs_meta_free(m);
        return -1;
    }
    return 0;
}

/* Reads fd's xattrs into m. Failing to read them is a warning, not a reason to skip. */
static int meta_read_xattrs(struct walker *w, int fd, struct fs_meta *m)
{
    if (xattrs_read(fd, &m->xattrs, &m->nxattrs) == 0)
        return 0;
    m->xattrs_unread = true;
    char ep[ESC_MAX];
    return problem_kept(w, false, errno, "cannot read extended attributes of %s", shown(w, ep));
}

static int emit_entry(struct walker *w, int dfd, const char *name, const struct stat *st,
                      struct fs_meta *m, bool known, int fd, int error)
{
    struct fswalk_entry ent = {
        .path = w->path,
        .path_len = w->len,
        .dirfd = dfd,
        .name = name,
        .st = *st,
        .meta = *m,
        .known = known,
        .fd = fd,
        .error = error,
    };
    int rc = w->cb(w->o->ctx, &ent, w->e);
    fs_meta_free(m);
    if (rc < 0 && !err_is_set(w->e)) {
        char ep[ESC_MAX];
        err_set(w->e, ERR_FAILURE, NULL, "walk aborted at %s", shown(w, ep));
    }
    return rc < 0 ? -1 : rc;
}

static int emit(struct walker *w, int dfd, const char *name, const struct stat *st,
                struct fs_meta *m)
{
    return emit_entry(w, dfd, name, st, m, false, -1, 0);
}

/* Opens an entry of dfd without following a symlink and, where we may ask for it, without
 * touching its access time. */
static int open_entry(int dfd, const char *name, int flags)
{
    flags |= O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;
    int fd = openat(dfd, name, flags | O_NOATIME);
    if (fd < 0 && errno == EPERM) /* O_NOATIME needs ownership or CAP_FOWNER */
        fd = openat(dfd, name, flags);
    return fd;
}

/* An entry could not be opened: say why in the walker's terms. */
static int open_failed(struct walker *w, bool root, int err, const char *what)
{
    char ep[ESC_MAX];
    if (err == ENOENT)
        return problem(w, root, 0, "skipped %s: it vanished while being read", shown(w, ep));
    if (err == ELOOP || err == ENOTDIR || err == ENXIO)
        return problem(w, root, 0, "skipped %s: it changed type while being read", shown(w, ep));
    return problem(w, root, err, "cannot open %s %s", what, shown(w, ep));
}

/* The open of an entry below the root failed for a reason other than the entry being gone
 * (vanished, changed type: open_failed says so) or the walk running out of descriptors or
 * memory: EACCES for a root-owned 0600 file when the backup runs as another user, or for a
 * write-only file of /sys as root, EIO... The entry exists and its lstat() is known: it is
 * warned about and still given to the callback, with the errno, so that the backup records it
 * as unreadable and a restore says so, rather than leaving it out of the backup silently. */
static bool open_err_unreadable(bool root, int err)
{
    return !root && !is_resource_errno(err) && err != ENOENT && err != ELOOP && err != ENOTDIR &&
           err != ENXIO;
}

static int emit_unreadable(struct walker *w, int dfd, const char *name, const struct stat *st,
                           enum fs_type type, int err)
{
    char ep[ESC_MAX];
    struct fs_meta m;
    if (problem(w, false, err,
                type == FS_DIR ? "cannot open directory %s, its contents are skipped"
                               : "cannot open file %s",
                shown(w, ep)) < 0 ||
        meta_fill(w, st, type, &m) < 0)
        return -1;
    return emit_entry(w, dfd, name, st, &m, false, -1, err) < 0 ? -1 : 0;
}

/* The descriptor opened for the entry stat'ed before: use its attributes from now on, and
 * skip the entry if something else took its name in between. */
static int check_same(struct walker *w, bool root, int fd, struct stat *st)
{
    struct stat now;
    char ep[ESC_MAX];
    if (fstat(fd, &now) < 0)
        return problem(w, root, errno, "cannot read %s", shown(w, ep));
    if ((now.st_mode & S_IFMT) != (st->st_mode & S_IFMT))
        return problem(w, root, 0, "skipped %s: it changed type while being read", shown(w, ep));
    *st = now;
    return 1;
}

static int visit_reg(struct walker *w, int dfd, const char *name, struct stat *st, bool root)
{
    struct fs_meta m;
    if (!root && st->st_nlink > 1) {
        const char *first = hl_find(w, st->st_dev, st->st_ino);
        if (first) {
            /* same inode: its data, mode and xattrs are those of the first name */
            if (meta_fill(w, st, FS_HARDLINK, &m) < 0)
                return -1;
            if (!(m.link = strdup(first))) {
                fs_meta_free(&m);
                return oom(w);
            }
            return emit(w, dfd, name, st, &m) < 0 ? -1 : 0;
        }
    }
    if (!root && st->st_nlink == 1 && w->o->known) {
        /* a file the caller knows as it is (same stat, same owners; a change of xattrs
         * changes the ctime): no open, no xattrs */
        if (meta_fill(w, st, FS_REG, &m) < 0)
            return -1;
        if (w->o->known(w->o->ctx, w->path, w->len, st, &m))
            return emit_entry(w, dfd, name, st, &m, true, -1, 0) < 0 ? -1 : 0;
        fs_meta_free(&m);
    }
    int fd = open_entry(dfd, name, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        int err = errno;
        if (open_err_unreadable(root, err))
            return emit_unreadable(w, dfd, name, st, FS_REG, err);
        return open_failed(w, root, err, "file");
    }
    int rc = check_same(w, root, fd, st);
    if (rc <= 0) {
        close(fd);
        return rc;
    }
    if (meta_fill(w, st, FS_REG, &m) < 0) {
        close(fd);
        return -1;
    }
    rc = meta_read_xattrs(w, fd, &m);
    if (rc == 0 && !root && st->st_nlink > 1)
        rc = hl_add(w, st->st_dev, st->st_ino);
    if (rc < 0) {
        close(fd);
        fs_meta_free(&m);
        return -1;
    }
    /* the descriptor goes with the entry: a caller reading the file need not open it again */
    rc = emit_entry(w, dfd, name, st, &m, false, fd, 0);
    close(fd);
    return rc < 0 ? -1 : 0;
}

static int visit_symlink(struct walker *w, int dfd, const char *name, const struct stat *st,
                         bool root)
{
    char ep[ESC_MAX];
    /* st_size is the target's length on most file systems, 0 on some (procfs) */
    size_t size = st->st_size > 0 ? (size_t)st->st_size + 1 : 256;
    char *buf = NULL;
    for (;;) {
        char *b = realloc(buf, size);
        if (!b) {
            free(buf);
            return oom(w);
        }
        buf = b;
        ssize_t n = readlinkat(dfd, name, buf, size);
        if (n < 0) {
            int err = errno;
            free(buf);
            if (err == ENOENT || err == EINVAL)
                return open_failed(w, root, err == EINVAL ? ENXIO : err, "symlink");
            return problem(w, root, err, "cannot read symlink %s", shown(w, ep));
        }
        if ((size_t)n < size) {
            buf[n] = '\0';
            break;
        }
        if (size > SIZE_MAX / 2) {
            free(buf);
            return oom(w);
        }
        size *= 2;
    }
    struct fs_meta m;
    if (meta_fill(w, st, FS_SYMLINK, &m) < 0) {
        free(buf);
        return -1;
    }
    m.link = buf;
    return emit(w, dfd, name, st, &m) < 0 ? -1 : 0;
}

static int visit_fifo(struct walker *w, int dfd, const char *name, struct stat *st, bool root)
{
    char ep[ESC_MAX];
    struct fs_meta m;
    /* O_NONBLOCK: opening a FIFO for reading must not wait for a writer */
    int fd = open_entry(dfd, name, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT || err == ELOOP || is_resource_errno(err))
            return open_failed(w, root, err, "fifo");
        if (problem_kept(w, root, err, "cannot read extended attributes of %s", shown(w, ep)) < 0)
            return -1;
        if (meta_fill(w, st, FS_FIFO, &m) < 0)
            return -1;
        return emit(w, dfd, name, st, &m) < 0 ? -1 : 0;
    }
    int rc = check_same(w, root, fd, st);
    if (rc <= 0) {
        close(fd);
        return rc;
    }
    if (meta_fill(w, st, FS_FIFO, &m) < 0) {
        close(fd);
        return -1;
    }
    rc = meta_read_xattrs(w, fd, &m);
    close(fd);
    if (rc < 0) {
        fs_meta_free(&m);
        return -1;
    }
    return emit(w, dfd, name, st, &m) < 0 ? -1 : 0;
}

struct dnode;
static int visit_dir(struct walker *w, int dfd, const char *name, struct stat *st, bool root,
                     struct dnode *n);

/* Visits the entry whose path is w->path; st is its lstat(). node: a directory's scan, or
 * NULL (made here); always freed. */
static int visit(struct walker *w, int dfd, const char *name, struct stat *st, bool root,
                 struct dnode *node)
{
    char ep[ESC_MAX];
    const char *kind;
    switch (st->st_mode & S_IFMT) {
    case S_IFREG:
        return visit_reg(w, dfd, name, st, root);
    case S_IFDIR:
        return visit_dir(w, dfd, name, st, root, node);
    case S_IFLNK:
        return visit_symlink(w, dfd, name, st, root);
    case S_IFIFO:
        return visit_fifo(w, dfd, name, st, root);
    case S_IFSOCK:
        kind = "socket";
        break;
    case S_IFBLK:
        kind = "block device";
        break;
    case S_IFCHR:
        kind = "character device";
        break;
    default:
        kind = "file of unknown type";
        break;
    }
    if (root)
        return problem(w, true, 0, "cannot back up %s: it is a %s", shown(w, ep), kind);
    return problem(w, false, 0, "skipped %s %s", kind, shown(w, ep));
}

/* ---- reading directories ahead -------------------------------------------------------------
 *
 * A directory is read in one go, a "scan": opened (never through a symlink), checked to be
 * the directory its parent listed, its xattrs read, its names read and sorted, and every name
 * that is not excluded fstatat'ed. A scan only records what it found, errors included; the
 * walk (one thread, the caller's) then replays it entry by entry, so the callbacks and the
 * warnings come in exactly the order, and with exactly the content, of a walk that reads
 * each directory when it reaches it, whichever thread scanned what and when.
 *
 * With opts.threads > 0, scanner threads scan the directories the walk will reach next, in
 * the order it will reach them (preorder), at most max_ahead directories and AHEAD_ENTRIES
 * entries ahead of it (memory and descriptors stay bounded); the walk scans a directory
 * itself when it reaches one no scanner has started. A directory read ahead may thus be
 * listed before the callback has seen the directory itself: a callback that changes the
 * tree below the entry it is given may not see the change (a backup does not). A directory's
 * descriptor is open from its scan until the walk leaves it (or skips it): the levels of
 * depth plus at most max_ahead + threads. */

/* 512 directories (was 64): a backup starts its walk before it opens the repository
 * (fswalk_start), and with 64 the scanners had read this far ahead in 40 ms of the ~100 ms the
 * key derivation takes, then waited (a no-change backup of a 2 GB tree of 42,279 files in
 * 1,208 directories, cold: 0.48-0.62 s with 512, median 0.49-0.51, against 0.54-0.61 with
 * 64). Until the walk itself begins, at most 8,192 entries: the key derivation's 64 MiB are
 * in memory then, and 16,384 entries read ahead put the backup's peak RSS at 77.6 MB, against
 * 75.1 MB with 8,192 (72.5 MB before; borg: 78.3-78.5). */
enum { AHEAD_DIRS = 512, AHEAD_ENTRIES = 16384, AHEAD_ENTRIES_STARTED = 8192 };

enum dstate {
    D_QUEUED,   /* in the heap, for a scanner or the walk */
    D_DEFERRED, /* not in the heap: the walk scans it when it gets there */
    D_RUNNING,
    D_DONE,
};

struct dent {
    const char *name; /* in the directory's names buffer */
    struct stat st;
    int err; /* fstatat's errno; 0: st is valid */
    bool excluded;
    struct dnode *kid; /* a directory: its node, until the walk takes it */
};

struct dnode {
    /* set when made */
    int pfd;          /* the parent directory, open as long as this node exists */
    const char *name; /* in the parent's names buffer (the root: fswalk_run's copy) */
    char *path;       /* relative path ("." for the root) */
    struct stat st;   /* the parent's fstatat; after the scan, the directory's fstat */
    bool root;
    uint32_t *key; /* entry indices from the root: the walk's order is key order */
    size_t depth;
    /* scheduling, under the walker's mutex */
    enum dstate state;
    size_t heap_pos;
    bool counted; /* scanned by a scanner, not taken yet: counts against the read-ahead */
    /* what the scan found */
    int fd;       /* the directory, or -1 */
    int open_err; /* openat's errno: nothing else was done */
    int stat_err; /* fstat's errno */
    bool changed_type;
    int xattr_err;
    struct fs_xattr *xattrs;
    size_t nxattrs;
    bool listed;     /* names read (not: another file system with one_file_system) */
    int readdir_err; /* reading the names failed after some (or none) were read */
    bool nomem;
    char *names;
    struct dent *ents;
    size_t n;
};

static bool excluded(const char *const *p, const char *path, const char *name)
{
    for (; p && *p; p++) {
        if (**p == '/'        ? fnmatch(*p + 1, path, FNM_PATHNAME) == 0 /* anchored: the path */
            : strchr(*p, '/') ? fnmatch(*p, path, FNM_PATHNAME) == 0
                              : fnmatch(*p, name, 0) == 0)
            return true;
    }
    return false;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static struct dnode *node_new(int pfd, const char *name, const char *path, size_t path_len,
                              const struct stat *st, const struct dnode *parent, uint32_t index)
{
    struct dnode *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->pfd = pfd;
    n->name = name;
    n->st = *st;
    n->fd = -1;
    n->state = D_DEFERRED; /* until published */
    n->root = parent == NULL;
    n->depth = parent ? parent->depth + 1 : 0;
    n->path = malloc(path_len + 1);
    n->key = malloc((n->depth ? n->depth : 1) * sizeof(*n->key));
    if (!n->path || !n->key) {
        free(n->path);
        free(n->key);
        free(n);
        return NULL;
    }
    memcpy(n->path, path, path_len);
    n->path[path_len] = '\0';
    if (parent) {
        memcpy(n->key, parent->key, parent->depth * sizeof(*n->key));
        n->key[parent->depth] = index;
    }
    return n;
}

/* Reads the names of n's directory, sorted bytewise (no "." and ".."). */
static void scan_names(struct dnode *n, char ***sorted)
{
    _Alignas(struct dirent64) char dbuf[32768];
    size_t used = 0, cap = 0, count = 0;
    for (;;) {
        ssize_t got = getdents64(n->fd, dbuf, sizeof(dbuf));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            n->readdir_err = errno;
            break;
        }
        if (got == 0)
            break;
        for (ssize_t off = 0; off < got;) {
            const struct dirent64 *de = (const struct dirent64 *)(dbuf + off);
            off += de->d_reclen;
            const char *nm = de->d_name;
            if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
                continue;
            size_t l = strlen(nm) + 1;
            if (used + l > cap) {
                size_t c = cap ? cap * 2 : 4096;
                while (c < used + l)
                    c *= 2;
                char *b = realloc(n->names, c);
                if (!b) {
                    n->nomem = true;
                    return;
                }
                n->names = b;
                cap = c;
            }
            memcpy(n->names + used, nm, l);
            used += l;
            count++;
        }
    }
    char **v = malloc((count ? count : 1) * sizeof(*v));
    if (!v) {
        n->nomem = true;
        return;
    }
    for (size_t i = 0, off = 0; i < count; i++) {
        v[i] = n->names + off;
        off += strlen(n->names + off) + 1;
    }
    qsort(v, count, sizeof(*v), name_cmp);
    *sorted = v;
    n->n = count;
}

/* The scan of one directory (any thread): touches only n and the walk's options. */
static void scan_dir(const struct walker *w, struct dnode *n)
{
    n->fd = open_entry(n->pfd, n->name, O_RDONLY | O_DIRECTORY);
    if (n->fd < 0) {
        n->open_err = errno;
        return;
    }
    struct stat now;
    if (fstat(n->fd, &now) < 0) {
        n->stat_err = errno;
        return;
    }
    if ((now.st_mode & S_IFMT) != (n->st.st_mode & S_IFMT)) {
        n->changed_type = true; /* something else took its name */
        return;
    }
    n->st = now;
    if (xattrs_read(n->fd, &n->xattrs, &n->nxattrs) < 0)
        n->xattr_err = errno;
    if (w->one_file_system && now.st_dev != w->root_dev)
        return;
    n->listed = true;
    char **sorted = NULL;
    scan_names(n, &sorted);
    if (n->nomem || !(n->ents = calloc(n->n ? n->n : 1, sizeof(*n->ents)))) {
        n->nomem = true;
        n->n = 0;
        free(sorted);
        return;
    }
    /* the children's paths, for the excludes: "name" below the root, else "path/name" */
    size_t base = n->root ? 0 : strlen(n->path) + 1;
    char *cpath = NULL;
    size_t ccap = 0;
    for (size_t i = 0; i < n->n; i++) {
        struct dent *d = &n->ents[i];
        d->name = sorted[i];
        size_t nl = strlen(d->name);
        if (base + nl + 1 > ccap) {
            size_t c = (base + nl + 1) * 2;
            char *p = realloc(cpath, c);
            if (!p) {
                n->nomem = true;
                break;
            }
            cpath = p;
            ccap = c;
            if (base) {
                memcpy(cpath, n->path, base - 1);
                cpath[base - 1] = '/';
            }
        }
        memcpy(cpath + base, d->name, nl + 1);
        if ((d->excluded = excluded(w->excludes, cpath, d->name)))
            continue;
        if (fstatat(n->fd, d->name, &d->st, AT_SYMLINK_NOFOLLOW) < 0) {
            d->err = errno;
            continue;
        }
        if (S_ISDIR(d->st.st_mode) &&
            !(d->kid = node_new(n->fd, d->name, cpath, base + nl, &d->st, n, (uint32_t)i))) {
            n->nomem = true;
            break;
        }
    }
    free(cpath);
    free(sorted);
}

/* ---- the queue of directories to scan: a binary heap in the walk's order ---- */

static bool node_before(const struct dnode *a, const struct dnode *b)
{
    size_t d = a->depth < b->depth ? a->depth : b->depth;
    for (size_t i = 0; i < d; i++)
        if (a->key[i] != b->key[i])
            return a->key[i] < b->key[i];
    return a->depth < b->depth;
}

static void heap_set(struct walker *w, size_t i, struct dnode *n)
{
    w->heap[i] = n;
    n->heap_pos = i;
}

static void heap_fix(struct walker *w, size_t i)
{
    struct dnode *n = w->heap[i];
    while (i > 0 && node_before(n, w->heap[(i - 1) / 2])) {
        heap_set(w, i, w->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->nheap)
            break;
        if (c + 1 < w->nheap && node_before(w->heap[c + 1], w->heap[c]))
            c++;
        if (!node_before(w->heap[c], n))
            break;
        heap_set(w, i, w->heap[c]);
        i = c;
    }
    heap_set(w, i, n);
}

static int heap_push(struct walker *w, struct dnode *n)
{
    if (w->nheap == w->capheap) {
        size_t c = w->capheap ? w->capheap * 2 : 64;
        struct dnode **h = c < SIZE_MAX / sizeof(*h) ? realloc(w->heap, c * sizeof(*h)) : NULL;
        if (!h)
            return -1;
        w->heap = h;
        w->capheap = c;
    }
    heap_set(w, w->nheap++, n);
    heap_fix(w, w->nheap - 1);
    return 0;
}

static void heap_remove(struct walker *w, struct dnode *n)
{
    size_t i = n->heap_pos;
    struct dnode *last = w->heap[--w->nheap];
    if (i < w->nheap) {
        heap_set(w, i, last);
        heap_fix(w, i);
    }
}

/* Under the mutex: n's scan is done; its subdirectories become work for the scanners. */
static void publish(struct walker *w, struct dnode *n)
{
    for (size_t i = 0; i < n->n; i++) {
        struct dnode *k = n->ents[i].kid;
        if (k)
            k->state = w->nthreads && heap_push(w, k) == 0 ? D_QUEUED : D_DEFERRED;
    }
    n->state = D_DONE;
    pthread_cond_broadcast(&w->cv);
}

static void uncount(struct walker *w, struct dnode *n)
{
    if (n->counted) {
        n->counted = false;
        w->ahead_dirs--;
        w->ahead_ents -= n->n;
        pthread_cond_broadcast(&w->cv);
    }
}

static void *scanner_main(void *arg)
{
    struct walker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop &&
               !(w->nheap && w->ahead_dirs < w->max_ahead && w->ahead_ents < w->max_ents))
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        struct dnode *n = w->heap[0];
        heap_remove(w, n);
        n->state = D_RUNNING;
        w->ahead_dirs++;
        pthread_mutex_unlock(&w->mu);
        scan_dir(w, n);
        pthread_mutex_lock(&w->mu);
        if (n->open_err == EMFILE || n->open_err == ENFILE) {
            /* out of descriptors because of the read-ahead: the walk tries again when it
             * gets there, with the descriptors of what it left closed by then */
            n->open_err = 0;
            n->state = D_DEFERRED;
            w->ahead_dirs--;
            pthread_cond_broadcast(&w->cv);
            continue;
        }
        n->counted = true;
        w->ahead_ents += n->n;
        publish(w, n);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* The walk reaches n: its scan, waited for, or done here. */
static void node_take(struct walker *w, struct dnode *n)
{
    pthread_mutex_lock(&w->mu);
    while (n->state == D_RUNNING)
        pthread_cond_wait(&w->cv, &w->mu);
    if (n->state == D_DONE) {
        uncount(w, n);
        pthread_mutex_unlock(&w->mu);
        return;
    }
    if (n->state == D_QUEUED)
        heap_remove(w, n);
    n->state = D_RUNNING;
    pthread_mutex_unlock(&w->mu);
    scan_dir(w, n);
    pthread_mutex_lock(&w->mu);
    publish(w, n);
    pthread_mutex_unlock(&w->mu);
}

static void node_free(struct walker *w, struct dnode *n);

/* A directory the walk will not visit (skipped, or the walk stops): waits for a scan in
 * progress, then frees it and everything found below it. */
static void node_discard(struct walker *w, struct dnode *n)
{
    pthread_mutex_lock(&w->mu);
    while (n->state == D_RUNNING)
        pthread_cond_wait(&w->cv, &w->mu);
    if (n->state == D_QUEUED)
        heap_remove(w, n);
    uncount(w, n);
    pthread_mutex_unlock(&w->mu);
    node_free(w, n);
}

/* Frees n (scanned or not, taken or not) and discards the subdirectories the walk did not
 * take; their descriptors are below n's, so n's is closed last. */
static void node_free(struct walker *w, struct dnode *n)
{
    for (size_t i = 0; i < n->n; i++)
        if (n->ents[i].kid)
            node_discard(w, n->ents[i].kid);
    if (n->fd >= 0)
        close(n->fd);
    xattrs_free(n->xattrs, n->nxattrs);
    free(n->ents);
    free(n->names);
    free(n->path);
    free(n->key);
    free(n);
}

static void scanners_start(struct walker *w)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    /* the read-ahead's descriptors stay well inside the open-file limit */
    struct rlimit rl;
    w->max_ahead = AHEAD_DIRS;
    w->max_ents = AHEAD_ENTRIES_STARTED; /* until the walk itself begins (fswalk_finish) */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < 4 * AHEAD_DIRS + 64)
        w->max_ahead = rl.rlim_cur > 64 ? (size_t)(rl.rlim_cur - 64) / 4 : 0;
    size_t want = w->o->threads > 0 && w->max_ahead ? (size_t)w->o->threads : 0;
    if (want > 16)
        want = 16;
    if (want && !(w->threads = calloc(want, sizeof(*w->threads))))
        want = 0;
    for (size_t i = 0; i < want; i++) {
        if (pthread_create(&w->threads[w->nthreads], NULL, scanner_main, w) != 0)
            break; /* fewer scanners: slower, not wrong */
        w->nthreads++;
    }
}

static void scanners_stop(struct walker *w)
{
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    free(w->threads);
    free(w->heap);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

/* ---- the walk ------------------------------------------------------------------------------ */

/* Visits the entries of n, scanned and open, whose path is w->path. */
static int walk_node(struct walker *w, struct dnode *n)
{
    char ep[ESC_MAX];
    if (n->readdir_err)
        problem(w, false, n->readdir_err, "cannot list all of directory %s", shown(w, ep));
    size_t base = w->len;
    int rc = 0;
    for (size_t i = 0; i < n->n && rc == 0; i++) {
        struct dent *d = &n->ents[i];
        if (path_append(w, d->name) < 0) {
            rc = -1;
            break;
        }
        if (d->excluded) {
            /* not visited */
        } else if (d->err) {
            rc = d->err == ENOENT ? open_failed(w, false, d->err, "")
                                  : problem(w, false, d->err, "cannot read %s", shown(w, ep));
        } else {
            struct dnode *kid = d->kid;
            d->kid = NULL; /* visit frees it */
            rc = visit(w, n->fd, d->name, &d->st, false, kid);
        }
        path_truncate(w, base);
    }
    return rc;
}

/* A directory: node is its scan (made here when the caller has none); freed here. */
static int visit_dir(struct walker *w, int dfd, const char *name, struct stat *st, bool root,
                     struct dnode *n)
{
    char ep[ESC_MAX];
    struct fs_meta m;
    if (!n) { /* the root (a subdirectory always comes with the node its parent's scan made) */
        if (!(n = node_new(dfd, name, w->path, w->len, st, NULL, 0)))
            return oom(w);
        n->root = root;
    }
    node_take(w, n);
    int rc;
    if (n->nomem) {
        rc = oom(w);
    } else if (n->open_err) {
        /* the directory exists and has metadata: it is kept, marked as not read */
        int err = n->open_err;
        rc = open_err_unreadable(root, err) ? emit_unreadable(w, dfd, name, st, FS_DIR, err)
                                            : open_failed(w, root, err, "directory");
    } else if (n->stat_err) {
        rc = problem(w, root, n->stat_err, "cannot read %s", shown(w, ep));
    } else if (n->changed_type) {
        rc = problem(w, root, 0, "skipped %s: it changed type while being read", shown(w, ep));
    } else if (*st = n->st, meta_fill(w, st, FS_DIR, &m) < 0) {
        rc = -1;
    } else {
        m.xattrs = n->xattrs; /* the entry's now */
        m.nxattrs = n->nxattrs;
        n->xattrs = NULL;
        n->nxattrs = 0;
        m.xattrs_unread = n->xattr_err != 0;
        /* entries the scan could not read (walk_node warns of each, and leaves it out): the
         * directory's entry says so, or a restore called it whole */
        m.entries_err = n->readdir_err;
        for (size_t i = 0; i < n->n && !m.entries_err; i++)
            if (!n->ents[i].excluded && n->ents[i].err && n->ents[i].err != ENOENT)
                m.entries_err = n->ents[i].err;
        if (n->xattr_err &&
            problem_kept(w, false, n->xattr_err, "cannot read extended attributes of %s",
                         shown(w, ep)) < 0) {
            fs_meta_free(&m);
            rc = -1;
        } else if ((rc = emit(w, dfd, name, st, &m)) != 0 || !n->listed) {
            rc = rc < 0 ? -1 : 0;
        } else {
            if (root)
                path_truncate(w, 0); /* children of the root are "name", not "./name" */
            rc = walk_node(w, n);
        }
    }
    node_free(w, n);
    return rc;
}

static void walker_free(struct walker *w)
{
    free(w->path);
    for (size_t i = 0; i < w->hl_cap; i++)
        free(w->hl[i].path);
    free(w->hl);
    for (size_t i = 0; i < w->nusers; i++)
        free(w->users[i].name);
    for (size_t i = 0; i < w->ngroups; i++)
        free(w->groups[i].name);
    free(w->users);
    free(w->groups);
    free(w->pwbuf);
}

/* Opens the directory holding root and finds root's name in it. A root named "/", "." or
 * ".." is opened itself and named "." in it. A root that is a symlink is followed: the user
 * named it to back up what it points to. */
static int open_root(struct walker *w, const char *root, int *dfd, char **name)
{
    char ep[ESC_MAX];
    size_t len = strlen(root);
    while (len > 1 && root[len - 1] == '/')
        len--;
    const char *base = root + len;
    while (base > root && base[-1] != '/')
        base--;
    size_t blen = (size_t)(root + len - base);
    bool self = blen == 0 || (blen == 1 && base[0] == '.') ||
                (blen == 2 && base[0] == '.' && base[1] == '.') || (len == 1 && root[0] == '/');
    char *parent;
    if (self)
        parent = strdup(root);
    else if (base == root)
        parent = strdup(".");
    else /* without the slash before base, except for "/name" */
        parent = strndup(root, base - root == 1 ? 1 : (size_t)(base - root - 1));
    *name = self ? strdup(".") : strndup(base, blen);
    if (!parent || !*name) {
        free(parent);
        free(*name);
        return oom(w);
    }
    *dfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int err = errno;
    free(parent);
    if (*dfd < 0) {
        free(*name);
        return err_sys(w->e, err, NULL, "cannot open %s", esc(root, ep, sizeof(ep)));
    }
    return 0;
}

struct fswalk {
    struct walker w;
    /* what w->o and w->e point at between fswalk_start and fswalk_finish: a copy of the start's
     * options and an error of its own (the caller's may be gone; nothing reports meanwhile) */
    struct fswalk_opts start_opts;
    struct err start_err;
    char *root; /* as given */
    int dfd;    /* the directory holding the root */
    char *name; /* the root's name in it */
    struct stat st;
    bool dir;
    struct dnode *rootn; /* the root directory's scan, queued for the scanners until visited */
};

static const struct fswalk_opts no_opts = {0};

static void fswalk_free(struct fswalk *h)
{
    if (h->dfd >= 0)
        close(h->dfd);
    free(h->name);
    free(h->root);
    walker_free(&h->w);
    free(h);
}

struct fswalk *fswalk_start(const char *root, const struct fswalk_opts *o, struct err *e)
{
    char ep[ESC_MAX];
    struct fswalk *h = calloc(1, sizeof(*h));
    if (!h || !(h->root = strdup(root))) {
        free(h);
        err_set(e, ERR_FAILURE, NULL, "out of memory while walking %s", esc(root, ep, sizeof(ep)));
        return NULL;
    }
    struct walker *w = &h->w;
    w->o = o ? o : &no_opts;
    w->e = e;
    w->root = h->root;
    w->excludes = w->o->excludes;
    w->one_file_system = w->o->one_file_system;
    h->dfd = -1;
    struct stat st;
    if (lstat(root, &st) < 0) {
        err_sys(e, errno, NULL, "cannot open %s", esc(root, ep, sizeof(ep)));
        fswalk_free(h);
        return NULL;
    }
    char *resolved = NULL;
    if (S_ISLNK(st.st_mode) && !(resolved = realpath(root, NULL))) {
        err_sys(e, errno, NULL, "cannot follow symlink %s", esc(root, ep, sizeof(ep)));
        fswalk_free(h);
        return NULL;
    }
    int rc = open_root(w, resolved ? resolved : root, &h->dfd, &h->name);
    free(resolved);
    if (rc < 0) {
        h->dfd = -1;
        h->name = NULL;
        fswalk_free(h);
        return NULL;
    }
    if (fstatat(h->dfd, h->name, &h->st, AT_SYMLINK_NOFOLLOW) < 0) {
        err_sys(e, errno, NULL, "cannot open %s", esc(root, ep, sizeof(ep)));
        fswalk_free(h);
        return NULL;
    }
    if (path_append(w, ".") < 0) {
        fswalk_free(h);
        return NULL;
    }
    w->root_dev = h->st.st_dev;
    h->start_opts = *w->o;
    h->start_err = (struct err)ERR_INIT;
    w->o = &h->start_opts;
    w->e = &h->start_err;
    h->dir = S_ISDIR(h->st.st_mode);
    if (h->dir) {
        scanners_start(w);
        /* the root's scan, for the scanners to begin with (without them, or out of memory
         * here, the walk scans it when it gets there, as any directory) */
        h->rootn = node_new(h->dfd, h->name, w->path, w->len, &h->st, NULL, 0);
        if (h->rootn && w->nthreads) {
            pthread_mutex_lock(&w->mu);
            if (heap_push(w, h->rootn) == 0)
                h->rootn->state = D_QUEUED;
            pthread_cond_broadcast(&w->cv);
            pthread_mutex_unlock(&w->mu);
        }
    }
    return h;
}

void fswalk_ahead_full(struct fswalk *h)
{
    struct walker *w = &h->w;
    if (!h->dir)
        return;
    pthread_mutex_lock(&w->mu);
    w->max_ents = AHEAD_ENTRIES;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int fswalk_finish(struct fswalk *h, const struct fswalk_opts *o, fswalk_cb cb, struct err *e)
{
    struct walker *w = &h->w;
    w->o = o ? o : &no_opts;
    w->cb = cb;
    w->e = e;
    fswalk_ahead_full(h);
    int rc = visit(w, h->dfd, h->name, &h->st, true, h->rootn); /* frees every scan */
    h->rootn = NULL;
    if (h->dir)
        scanners_stop(w);
    fswalk_free(h);
    return rc < 0 ? -1 : 0;
}

void fswalk_cancel(struct fswalk *h)
{
    if (!h)
        return;
    if (h->rootn)
        node_discard(&h->w, h->rootn); /* waits for the scans in progress below it */
    if (h->dir)
        scanners_stop(&h->w);
    fswalk_free(h);
}

int fswalk_run(const char *root, const struct fswalk_opts *o, fswalk_cb cb, struct err *e)
{
    struct fswalk *h = fswalk_start(root, o, e);
    return h ? fswalk_finish(h, o, cb, e) : -1;
}

/* ---- exclude files ------------------------------------------------------------------------ */

const char *fswalk_pattern_flaw(const char *p)
{
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/')
        len--;
    if (!len)
        return "it is empty";
    for (size_t i = 0; i < len;) {
        size_t l = strcspn(p + i, "/");
        l = l < len - i ? l : len - i;
        const char *c = p + i;
        if ((l == 0 && i != 0) || (l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.'))
            return "a path it is matched against has no empty, \".\" or \"..\" component";
        i += l;
        if (i < len && p[i] == '/')
            i++;
    }
    return NULL;
}

int fswalk_read_exclude_file(const char *path, char ***list, size_t *n, struct err *e)
{
    char ep[ESC_MAX];
    FILE *f = fopen(path, "re");
    if (!f)
        return err_sys(e, errno, NULL, "cannot open exclude file %s", esc(path, ep, sizeof(ep)));
    if (!*list)
        *n = 0;
    char *line = NULL;
    size_t lcap = 0, lineno = 0;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        size_t l = (size_t)len;
        if (memchr(line, '\0', l)) {
            rc = err_set(e, ERR_CONFIG, "an exclude file holds one fnmatch(3) pattern per line",
                         "exclude file %s, line %zu: contains a NUL byte",
                         esc(path, ep, sizeof(ep)), lineno);
            break;
        }
        if (l && line[l - 1] == '\n')
            line[--l] = '\0';
        if (l && line[l - 1] == '\r') /* written on Windows */
            line[--l] = '\0';
        if (line[0] == '#' || strspn(line, " \t") == l)
            continue;
        const char *flaw = fswalk_pattern_flaw(line);
        if (flaw) {
            char pp[ESC_MAX];
            rc = err_set(e, ERR_USAGE,
                         "write the path as `ls` shows it, e.g. /srv/caris/uploads/tmp",
                         "exclude file %s, line %zu: '%s' would match nothing: %s",
                         esc(path, ep, sizeof(ep)), lineno, esc(line, pp, sizeof(pp)), flaw);
            break;
        }
        char **grown =
            *n < SIZE_MAX / sizeof(char *) - 2 ? realloc(*list, (*n + 2) * sizeof(char *)) : NULL;
        if (!grown) {
            rc = err_set(e, ERR_FAILURE, NULL, "out of memory reading exclude file %s",
                         esc(path, ep, sizeof(ep)));
            break;
        }
        *list = grown;
        if (!(grown[*n] = strdup(line))) {
            grown[*n] = NULL;
            rc = err_set(e, ERR_FAILURE, NULL, "out of memory reading exclude file %s",
                         esc(path, ep, sizeof(ep)));
            break;
        }
        grown[++*n] = NULL;
    }
    if (rc == 0 && ferror(f))
        rc = err_sys(e, errno, NULL, "cannot read exclude file %s", esc(path, ep, sizeof(ep)));
    free(line);
    fclose(f);
    return rc;
}

/* ---- sparse files ------------------------------------------------------------------------- */

int fs_data_extents(int fd, uint64_t size, struct fs_extent **out, size_t *n, struct err *e)
{
    *out = NULL;
    *n = 0;
    if (size > (uint64_t)INT64_MAX)
        return err_set(e, ERR_FAILURE, NULL, "file size %llu is out of range",
                       (unsigned long long)size);
    off_t saved = lseek(fd, 0, SEEK_CUR);
    struct fs_extent *v = NULL;
    size_t nv = 0, cap = 0;
    uint64_t off = 0;
    int rc = 0;
    while (off < size) {
        uint64_t data, hole;
        off_t d = lseek(fd, (off_t)off, SEEK_DATA);
        if (d < 0 && errno == ENXIO)
            break; /* only a hole up to the end of the file, or the file shrank */
        if (d < 0 && (errno == EINVAL || errno == ENOTSUP)) {
            data = off; /* no SEEK_DATA here: everything is data */
            hole = size;
        } else if (d < 0) {
            rc = err_sys(e, errno, NULL, "cannot find the data extents of a file");
            break;
        } else {
            data = (uint64_t)d;
            if (data >= size)
                break;
            off_t h = lseek(fd, d, SEEK_HOLE);
            if (h < 0 && errno != ENXIO) {
                rc = err_sys(e, errno, NULL, "cannot find the holes of a file");
                break;
            }
            hole = h < 0 || (uint64_t)h > size || (uint64_t)h <= data ? size : (uint64_t)h;
        }
        if (nv == cap) {
            size_t c = cap ? cap * 2 : 8;
            struct fs_extent *g = c < SIZE_MAX / sizeof(*g) ? realloc(v, c * sizeof(*g)) : NULL;
            if (!g) {
                rc = err_set(e, ERR_FAILURE, NULL, "out of memory listing data extents");
                break;
            }
            v = g;
            cap = c;
        }
        v[nv++] = (struct fs_extent){.off = data, .len = hole - data};
        off = hole;
    }
    if (saved >= 0)
        lseek(fd, saved, SEEK_SET);
    if (rc < 0) {
        free(v);
        return -1;
    }
    *out = v;
    *n = nv;
    return 0;
}

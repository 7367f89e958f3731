/* Walking a tree at backup time: every entry is reached through a descriptor of the
 * directory that holds it (openat/fstatat/readlinkat), so names may be any bytes and paths
 * may be longer than PATH_MAX. One directory descriptor is open per level of depth, never
 * one per sibling. */
#include "caris/fsmeta.h"
#include "caris/core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
static int problem(struct walker *w, bool fatal, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int problem(struct walker *w, bool fatal, int errnum, const char *fmt, ...)
{
    char msg[sizeof(w->e->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (fatal || is_resource_errno(errnum)) {
        const char *hint = errnum == EMFILE || errnum == ENFILE
                               ? "raise the open-file limit (ulimit -n); one descriptor is "
                                 "used per level of directory depth"
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
        w->o->warn(w->o->ctx, w->path, msg);
    }
    return 0;
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
    char ep[ESC_MAX];
    return problem(w, false, errno, "cannot read extended attributes of %s", shown(w, ep));
}

static int emit_entry(struct walker *w, int dfd, const char *name, const struct stat *st,
                      struct fs_meta *m, bool known, int fd)
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
    return emit_entry(w, dfd, name, st, m, false, -1);
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

static int walk_dir(struct walker *w, int fd);

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
            return emit_entry(w, dfd, name, st, &m, true, -1) < 0 ? -1 : 0;
        fs_meta_free(&m);
    }
    int fd = open_entry(dfd, name, O_RDONLY | O_NONBLOCK);
    if (fd < 0)
        return open_failed(w, root, errno, "file");
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
    rc = emit_entry(w, dfd, name, st, &m, false, fd);
    close(fd);
    return rc < 0 ? -1 : 0;
}

static int visit_dir(struct walker *w, int dfd, const char *name, struct stat *st, bool root)
{
    char ep[ESC_MAX];
    struct fs_meta m;
    int fd = open_entry(dfd, name, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        int err = errno;
        if (root || is_resource_errno(err) || err == ENOENT || err == ELOOP || err == ENOTDIR)
            return open_failed(w, root, err, "directory");
        /* the directory exists and has metadata: keep it, without its contents */
        problem(w, false, err, "cannot open directory %s, its contents are skipped", shown(w, ep));
        if (meta_fill(w, st, FS_DIR, &m) < 0)
            return -1;
        return emit(w, dfd, name, st, &m) < 0 ? -1 : 0;
    }
    int rc = check_same(w, root, fd, st);
    if (rc <= 0) {
        close(fd);
        return rc;
    }
    if (meta_fill(w, st, FS_DIR, &m) < 0) {
        close(fd);
        return -1;
    }
    if (meta_read_xattrs(w, fd, &m) < 0) {
        fs_meta_free(&m);
        close(fd);
        return -1;
    }
    rc = emit(w, dfd, name, st, &m);
    if (rc != 0 || (w->o->one_file_system && st->st_dev != w->root_dev)) {
        close(fd);
        return rc < 0 ? -1 : 0;
    }
    if (root)
        path_truncate(w, 0); /* children of the root are "name", not "./name" */
    return walk_dir(w, fd);
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
        if (problem(w, root, err, "cannot read extended attributes of %s", shown(w, ep)) < 0)
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

/* Visits the entry whose path is w->path; st is its lstat(). */
static int visit(struct walker *w, int dfd, const char *name, struct stat *st, bool root)
{
    char ep[ESC_MAX];
    const char *kind;
    switch (st->st_mode & S_IFMT) {
    case S_IFREG:
        return visit_reg(w, dfd, name, st, root);
    case S_IFDIR:
        return visit_dir(w, dfd, name, st, root);
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

static bool excluded(const struct walker *w, const char *name)
{
    const char *const *p = w->o->excludes;
    for (; p && *p; p++) {
        if (strchr(*p, '/') ? fnmatch(*p, w->path, FNM_PATHNAME) == 0 : fnmatch(*p, name, 0) == 0)
            return true;
    }
    return false;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads all names of the directory w->path first, so that they can be visited in byte
 * order and no readdir stream is interleaved with the visits below it. */
static int read_names(struct walker *w, DIR *d, char **buf_out, char ***names_out, size_t *n_out)
{
    char ep[ESC_MAX];
    char *buf = NULL;
    size_t used = 0, cap = 0, n = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                problem(w, false, errno, "cannot list all of directory %s", shown(w, ep));
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        size_t l = strlen(de->d_name) + 1;
        if (used + l > cap) {
            size_t c = cap ? cap * 2 : 4096;
            while (c < used + l)
                c *= 2;
            char *b = realloc(buf, c);
            if (!b)
                goto nomem;
            buf = b;
            cap = c;
        }
        memcpy(buf + used, de->d_name, l);
        used += l;
        n++;
    }
    char **names = malloc((n ? n : 1) * sizeof(*names));
    if (!names)
        goto nomem;
    for (size_t i = 0, off = 0; i < n; i++) {
        names[i] = buf + off;
        off += strlen(buf + off) + 1;
    }
    qsort(names, n, sizeof(*names), name_cmp);
    *buf_out = buf;
    *names_out = names;
    *n_out = n;
    return 0;
nomem:
    free(buf);
    return oom(w);
}

/* Visits the entries of the directory open as fd (consumed), whose path is w->path. */
static int walk_dir(struct walker *w, int fd)
{
    char ep[ESC_MAX];
    DIR *d = fdopendir(fd);
    if (!d) {
        int err = errno;
        close(fd);
        return problem(w, false, err, "cannot list directory %s", shown(w, ep));
    }
    char *buf = NULL;
    char **names = NULL;
    size_t n = 0;
    if (read_names(w, d, &buf, &names, &n) < 0) {
        closedir(d);
        return -1;
    }
    size_t base = w->len;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (path_append(w, names[i]) < 0) {
            rc = -1;
            break;
        }
        if (!excluded(w, names[i])) {
            struct stat st;
            if (fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
                int err = errno;
                rc = err == ENOENT ? open_failed(w, false, err, "")
                                   : problem(w, false, err, "cannot read %s", shown(w, ep));
            } else {
                rc = visit(w, dirfd(d), names[i], &st, false);
            }
        }
        path_truncate(w, base);
    }
    free(names);
    free(buf);
    closedir(d);
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

int fswalk_run(const char *root, const struct fswalk_opts *o, fswalk_cb cb, struct err *e)
{
    static const struct fswalk_opts defaults = {0};
    char ep[ESC_MAX];
    struct walker w = {.o = o ? o : &defaults, .cb = cb, .e = e, .root = root};
    struct stat st;
    if (lstat(root, &st) < 0)
        return err_sys(e, errno, NULL, "cannot open %s", esc(root, ep, sizeof(ep)));
    char *resolved = NULL;
    if (S_ISLNK(st.st_mode)) {
        if (!(resolved = realpath(root, NULL)))
            return err_sys(e, errno, NULL, "cannot follow symlink %s", esc(root, ep, sizeof(ep)));
    }
    int dfd = -1;
    char *name = NULL;
    if (open_root(&w, resolved ? resolved : root, &dfd, &name) < 0) {
        free(resolved);
        return -1;
    }
    int rc;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        rc = err_sys(e, errno, NULL, "cannot open %s", esc(root, ep, sizeof(ep)));
    } else if ((rc = path_append(&w, ".")) == 0) {
        w.root_dev = st.st_dev;
        rc = visit(&w, dfd, name, &st, true);
    }
    close(dfd);
    free(name);
    free(resolved);
    walker_free(&w);
    return rc < 0 ? -1 : 0;
}

/* ---- exclude files ------------------------------------------------------------------------ */

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

/* The storage front: thin wrappers over a backend's ops, plus the POSIX backend. */
#include "caris/storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "caris/crypto.h"

int storage_put(struct storage *s, const char *name, const void *data, size_t len, struct err *e)
{
    return s->ops->put(s, name, data, len, e);
}

int storage_read_at(struct storage *s, const char *name, uint64_t off, void *out, size_t len,
                    struct err *e)
{
    return s->ops->read_at(s, name, off, out, len, e);
}

int storage_read_direct(struct storage *s, const char *name, uint64_t off, void *out, size_t len,
                        struct err *e)
{
    if (s->ops->read_direct)
        return s->ops->read_direct(s, name, off, out, len, e);
    return s->ops->read_at(s, name, off, out, len, e);
}

void storage_local_copies(struct storage *s, bool use)
{
    if (s->ops->local_copies)
        s->ops->local_copies(s, use);
}

static __thread bool thread_copies_off;

bool storage_local_copies_this_thread(bool use)
{
    bool was = !thread_copies_off;
    thread_copies_off = !use;
    return was;
}

bool storage_thread_copies_allowed(void)
{
    return !thread_copies_off;
}

void storage_prefetch(struct storage *s, const char *name, uint64_t off, uint64_t len)
{
    if (s->ops->prefetch)
        s->ops->prefetch(s, name, off, len);
}

void storage_drop_open(struct storage *s)
{
    if (s->ops->drop_open)
        s->ops->drop_open(s);
}

int storage_size(struct storage *s, const char *name, uint64_t *size, struct err *e)
{
    return s->ops->size(s, name, size, e);
}

int storage_get(struct storage *s, const char *name, size_t max, struct buf *out, struct err *e)
{
    if (s->ops->get)
        return s->ops->get(s, name, max, out, e);
    uint64_t size;
    if (storage_size(s, name, &size, e) != 0)
        return -1;
    if (size > max)
        return err_set(e, ERR_DAMAGE,
                       "the file may be corrupted or not ours: run `caris-backup check`",
                       "%s/%s is too large (%llu bytes, at most %zu expected)", s->location, name,
                       (unsigned long long)size, max);
    out->len = 0;
    buf_reserve(out, (size_t)size);
    if (storage_read_at(s, name, 0, out->data, (size_t)size, e) != 0)
        return -1;
    out->len = (size_t)size;
    return 0;
}

int storage_list(struct storage *s, const char *dir, storage_list_cb cb, void *ctx, struct err *e)
{
    return s->ops->list(s, dir, cb, ctx, e);
}

int storage_remove(struct storage *s, const char *name, struct err *e)
{
    return s->ops->remove(s, name, e);
}

int storage_put_new(struct storage *s, const char *name, const void *data, size_t len,
                    struct err *e)
{
    return s->ops->put_new(s, name, data, len, e);
}

int storage_put_existing(struct storage *s, const char *name, const void *data, size_t len,
                         struct err *e)
{
    if (s->ops->put_existing)
        return s->ops->put_existing(s, name, data, len, e);
    int ex = storage_exists(s, name, e);
    if (ex <= 0)
        return ex < 0 ? -1 : 1;
    return storage_put(s, name, data, len, e);
}

int storage_mtime(struct storage *s, const char *name, int64_t *ns, struct err *e)
{
    return s->ops->mtime(s, name, ns, e);
}

int storage_list_temp(struct storage *s, storage_list_cb cb, void *ctx, struct err *e)
{
    return s->ops->list_temp(s, cb, ctx, e);
}

int storage_exists(struct storage *s, const char *name, struct err *e)
{
    uint64_t size;
    struct err tmp = ERR_INIT;
    if (storage_size(s, name, &size, &tmp) == 0)
        return 1;
    if (tmp.code == ERR_NOT_FOUND)
        return 0;
    *e = tmp;
    return -1;
}

/* ---- objects written piece by piece ------------------------------------------------- */

struct storage_obj {
    struct storage *s;
    void *h;        /* the backend's temporary file, or NULL: the bytes are in mem */
    struct buf mem; /* without a temporary file */
    uint64_t size;
};

struct storage_obj *storage_obj_new(struct storage *s, const char *dir, struct err *e)
{
    struct storage_obj *o = xcalloc(1, sizeof(*o));
    o->s = s;
    if (s->ops->tmp_open && s->ops->tmp_open(s, dir, &o->h, e) != 0) {
        free(o);
        return NULL;
    }
    return o;
}

int storage_obj_append(struct storage_obj *o, const void *p, size_t n, struct err *e)
{
    if (o->h) {
        if (o->s->ops->tmp_write(o->s, o->h, p, n, e) != 0)
            return -1;
    } else {
        buf_append(&o->mem, p, n);
    }
    o->size += n;
    return 0;
}

int storage_obj_read(struct storage_obj *o, uint64_t off, void *out, size_t n, struct err *e)
{
    if (off > o->size || n > o->size - off)
        return err_set(e, ERR_FAILURE, "report this as a bug",
                       "internal error: read of %zu bytes at %llu past an object being written "
                       "(%llu bytes)",
                       n, (unsigned long long)off, (unsigned long long)o->size);
    if (o->h)
        return o->s->ops->tmp_read(o->s, o->h, off, out, n, e);
    memcpy(out, o->mem.data + off, n);
    return 0;
}

uint64_t storage_obj_size(const struct storage_obj *o)
{
    return o->size;
}

int storage_obj_commit(struct storage_obj *o, const char *name, struct err *e)
{
    int rc = o->h ? o->s->ops->tmp_commit(o->s, o->h, name, e)
                  : storage_put(o->s, name, o->mem.data, o->mem.len, e);
    o->h = NULL;
    storage_obj_discard(o);
    return rc;
}

void storage_obj_discard(struct storage_obj *o)
{
    if (!o)
        return;
    if (o->h)
        o->s->ops->tmp_discard(o->s, o->h);
    buf_free(&o->mem);
    free(o);
}

int storage_batch_put_obj(struct storage_batch *b, const char *name, struct storage_obj *o,
                          storage_put_done done, void *ctx, struct err *e)
{
    if (o->h) {
        int rc = storage_obj_commit(o, name, e);
        if (done)
            done(ctx, rc == 0);
        return rc;
    }
    struct buf data = o->mem;
    memset(&o->mem, 0, sizeof(o->mem));
    storage_obj_discard(o);
    int rc = storage_batch_put(b, name, &data, done, ctx, e);
    buf_free(&data);
    return rc;
}

struct storage *storage_open(const char *location, bool create, struct err *e)
{
    if (storage_location_is_s3(location))
        return storage_s3_open(location, e);
    return storage_posix_open(location, create, e);
}

void storage_close(struct storage *s)
{
    if (!s)
        return;
    storage_queue_stop(s);
    s->ops->close(s);
}

/* ---- POSIX backend ------------------------------------------------------------------- */

/* Reads of a restore or check come blob after blob from the same packs: keep a few pack
 * files open instead of an open/close per blob. Objects are immutable, and an fd is closed
 * only when no reader holds it (refs), so a number is never recycled under a reader. */
#define FD_CACHE 32
struct fd_slot {
    char *name;
    int fd;
    int refs;
    uint64_t used; /* LRU clock */
};

struct posix_storage {
    struct storage base;
    char *root;
    int rootfd;
    pthread_mutex_t mu;
    struct fd_slot cache[FD_CACHE];
    uint64_t clock;
};

/* The repository's directory is not trusted: an object's name may hold a FIFO or a device
 * (or a link to one), whose open(O_RDONLY) blocks until a writer comes, for ever and whatever
 * signal arrives (the open is restarted). Opened without blocking, and anything but a regular
 * file is refused: -2 (errno kept for other failures, -1). */
#define NOT_REGULAR (-2)
/* A regular file another process holds a lease on (F_SETLEASE: a file server's, or a test
 * holding a read mid-way) answers a non-blocking open with EWOULDBLOCK and is told to let go;
 * a blocking open would wait for that. Tried again every 10 ms, for at most the kernel's
 * lease-break time (45 s by default, after which it breaks the lease itself) and a margin. */
#define LEASE_WAIT_NS (120 * 1000000000LL)
static int open_regular(int rootfd, const char *name)
{
    int fd;
    int64_t deadline = 0;
    while ((fd = openat(rootfd, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0 &&
           errno == EWOULDBLOCK) {
        int64_t now = time_mono_ns();
        if (!deadline)
            deadline = now + LEASE_WAIT_NS;
        else if (now > deadline)
            break;
        nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
    }
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int en = errno;
        close(fd);
        errno = en;
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return NOT_REGULAR;
    }
    return fd;
}

/* An fd for reading name and its slot (NULL: not cached, the caller closes the fd); -1 with
 * errno, or NOT_REGULAR. Lock files (locks/) are the one kind of object rewritten under the
 * same name (their holder refreshes them), so they are never cached: a cached fd would keep
 * showing the old file. */
static int fd_acquire(struct posix_storage *ps, const char *name, struct fd_slot **slot)
{
    if (strncmp(name, "locks/", 6) == 0) {
        *slot = NULL;
        return open_regular(ps->rootfd, name);
    }
    pthread_mutex_lock(&ps->mu);
    struct fd_slot *victim = NULL;
    for (int i = 0; i < FD_CACHE; i++) {
        struct fd_slot *s = &ps->cache[i];
        if (s->name && strcmp(s->name, name) == 0) {
            s->used = ++ps->clock;
            s->refs++;
            *slot = s;
            pthread_mutex_unlock(&ps->mu);
            return s->fd;
        }
        if (s->refs == 0 && (!victim || s->used < victim->used))
            victim = s;
    }
    int fd = open_regular(ps->rootfd, name);
    *slot = NULL;
    if (fd >= 0 && victim) {
        if (victim->name) {
            close(victim->fd);
            free(victim->name);
        }
        victim->name = xstrdup(name);
        victim->fd = fd;
        victim->refs = 1;
        victim->used = ++ps->clock;
        *slot = victim;
    }
    pthread_mutex_unlock(&ps->mu);
    return fd;
}

static void fd_release(struct posix_storage *ps, int fd, struct fd_slot *slot)
{
    if (!slot) {
        close(fd);
        return;
    }
    pthread_mutex_lock(&ps->mu);
    slot->refs--;
    pthread_mutex_unlock(&ps->mu);
}

/* A removed object must not be served from the cache; name NULL: no object held open
 * (drop_open). Slots a reader holds stay. */
static void fd_forget(struct posix_storage *ps, const char *name)
{
    pthread_mutex_lock(&ps->mu);
    for (int i = 0; i < FD_CACHE; i++) {
        struct fd_slot *s = &ps->cache[i];
        if (s->name && s->refs == 0 && (!name || strcmp(s->name, name) == 0)) {
            close(s->fd);
            free(s->name);
            s->name = NULL;
            s->used = 0;
        }
    }
    pthread_mutex_unlock(&ps->mu);
}

static void posix_drop_open(struct storage *s)
{
    fd_forget((struct posix_storage *)s, NULL);
}

#define TMP_PREFIX ".tmp-"

static struct posix_storage *P(struct storage *s)
{
    return (struct posix_storage *)s;
}

static int fsync_parent(struct posix_storage *ps, const char *name, struct err *e);

/* Creates the directories leading to name (relative to root). A directory made here is
 * synced into its parent: the file's own sync (fsync_parent) makes its entry in the new
 * directory durable, not the directory's entry in data/ (a pack of a new prefix, say, listed
 * by an index file that is durable, gone after a crash on a file system without a journal). */
static int make_parents(struct posix_storage *ps, const char *name, struct err *e)
{
    char *p = xstrdup(name);
    for (char *slash = strchr(p, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdirat(ps->rootfd, p, 0700) == 0) {
            if (fsync_parent(ps, p, e) != 0) {
                free(p);
                return -1;
            }
        } else if (errno != EEXIST) {
            int en = errno;
            err_sys(e, en, NULL, "cannot create directory %s/%s", ps->root, p);
            free(p);
            return -1;
        }
        *slash = '/';
    }
    free(p);
    return 0;
}

static int fsync_parent(struct posix_storage *ps, const char *name, struct err *e)
{
    char *dir = xstrdup(name);
    char *slash = strrchr(dir, '/');
    int fd;
    if (slash) {
        *slash = '\0';
        fd = openat(ps->rootfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } else {
        fd = dup(ps->rootfd);
    }
    int r = 0;
    if (fd < 0 || fsync(fd) != 0)
        r = err_sys(e, errno, NULL, "cannot sync directory of %s/%s", ps->root, name);
    if (fd >= 0)
        close(fd);
    free(dir);
    return r;
}

static int posix_put(struct storage *s, const char *name, const void *data, size_t len,
                     struct err *e)
{
    struct posix_storage *ps = P(s);
    if (make_parents(ps, name, e) != 0)
        return -1;
    uint8_t rnd[8];
    char hex[17];
    cx_random(rnd, sizeof(rnd));
    cx_hex(rnd, sizeof(rnd), hex);
    char *dir = xstrdup(name);
    char *slash = strrchr(dir, '/');
    char *tmp = slash ? (slash[1] = '\0', xasprintf("%s" TMP_PREFIX "%s", dir, hex))
                      : xasprintf(TMP_PREFIX "%s", hex);
    free(dir);
    int fd = openat(ps->rootfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        err_sys(e, errno, NULL, "cannot create %s/%s", ps->root, tmp);
        free(tmp);
        return -1;
    }
    if (fs_write_full(fd, data, len) != 0 || fsync(fd) != 0) {
        int en = errno;
        close(fd);
        unlinkat(ps->rootfd, tmp, 0);
        err_sys(e, en, NULL, "cannot write %s/%s", ps->root, name);
        free(tmp);
        return -1;
    }
    if (close(fd) != 0 || renameat(ps->rootfd, tmp, ps->rootfd, name) != 0) {
        int en = errno;
        unlinkat(ps->rootfd, tmp, 0);
        err_sys(e, en, NULL, "cannot write %s/%s", ps->root, name);
        free(tmp);
        return -1;
    }
    free(tmp);
    return fsync_parent(ps, name, e);
}

/* An object written piece by piece (storage_obj_*, a pack): a temporary file, named as put's,
 * written with O_DIRECT on a local file system that allows it (fs_direct_on): through an
 * aligned buffer of TMP_DIRECT_BUF bytes, in whole blocks, the last one padded and the file then
 * cut to its length before the fsync. The bytes skip the kernel's copy into its page cache and the
 * later writeback, and a backup does not fill the cache with packs it will not read again. A file
 * system that refuses O_DIRECT, or a direct write it refuses, gets buffered writes from there on.
 * Pieces are read back (tmp_read) through a second, buffered descriptor: the kernel keeps it
 * coherent with direct writes. First backup of a 2 GiB tree, cold, three pairs: system CPU 4.9-5.5
 * -> 3.0-3.4 s, wall 8.6-9.1 -> 7.6-8.1 s. */
#define TMP_ALIGN FS_DIRECT_ALIGN
#define TMP_DIRECT_BUF (1u << 20)

struct posix_tmp {
    int fd;
    char *tmp;
    uint64_t size;    /* bytes written (appended) so far */
    uint8_t *dbuf;    /* direct writes: the bytes past flushed (NULL: buffered writes) */
    size_t dlen;      /* bytes in dbuf */
    uint64_t flushed; /* bytes in the file: a multiple of TMP_ALIGN while dbuf is in use */
    int rfd;          /* buffered descriptor for reads of flushed bytes (-1: none yet) */
};

static int posix_tmp_open(struct storage *s, const char *dir, void **h, struct err *e)
{
    struct posix_storage *ps = P(s);
    uint8_t rnd[8];
    char hex[17];
    cx_random(rnd, sizeof(rnd));
    cx_hex(rnd, sizeof(rnd), hex);
    char *tmp = *dir ? xasprintf("%s/" TMP_PREFIX "%s", dir, hex) : xasprintf(TMP_PREFIX "%s", hex);
    if (make_parents(ps, tmp, e) != 0) {
        free(tmp);
        return -1;
    }
    int fd = openat(ps->rootfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        err_sys(e, errno, NULL, "cannot create %s/%s", ps->root, tmp);
        free(tmp);
        return -1;
    }
    struct posix_tmp *t = xcalloc(1, sizeof(*t));
    t->fd = fd;
    t->tmp = tmp;
    t->rfd = -1;
    /* set after the open: an open that refused O_DIRECT would have created the file first */
    if (fs_direct_on(fd)) {
        void *m = NULL;
        if (posix_memalign(&m, TMP_ALIGN, TMP_DIRECT_BUF) != 0)
            xoom(TMP_DIRECT_BUF);
        t->dbuf = m;
    }
    *h = t;
    return 0;
}

/* Direct writes end here: what dbuf holds is written buffered, and so is the rest. */
static int tmp_direct_off(struct posix_tmp *t)
{
    if (fs_direct_off(t->fd) != 0)
        return -1;
    int rc = fs_pwrite_full(t->fd, t->dbuf, t->dlen, t->flushed);
    if (rc == 0 && lseek(t->fd, (off_t)(t->flushed + t->dlen), SEEK_SET) < 0)
        rc = -1;
    int en = errno;
    cx_wipe(t->dbuf, TMP_DIRECT_BUF);
    free(t->dbuf);
    t->dbuf = NULL;
    t->flushed += t->dlen;
    t->dlen = 0;
    errno = en;
    return rc;
}

/* Writes dbuf's first n bytes (a multiple of TMP_ALIGN) at flushed, directly. */
static int tmp_direct_write(struct posix_tmp *t, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(t->fd, t->dbuf + done, n - done, (off_t)(t->flushed + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && fs_direct_refused(errno) && done == 0)
            return tmp_direct_off(t); /* refused: buffered from here */
        if (w < 0)
            return -1;
        if (w == 0 || (size_t)w % TMP_ALIGN) { /* cut short unaligned: the rest buffered */
            done += (size_t)w;
            memmove(t->dbuf, t->dbuf + done, t->dlen - done);
            t->dlen -= done;
            t->flushed += done;
            return tmp_direct_off(t);
        }
        done += (size_t)w;
    }
    memmove(t->dbuf, t->dbuf + n, t->dlen - n);
    t->dlen -= n;
    t->flushed += n;
    return 0;
}

static int posix_tmp_write(struct storage *s, void *h, const void *p, size_t n, struct err *e)
{
    struct posix_tmp *t = h;
    const uint8_t *q = p;
    t->size += n;
    while (t->dbuf && n) {
        size_t k = TMP_DIRECT_BUF - t->dlen < n ? TMP_DIRECT_BUF - t->dlen : n;
        memcpy(t->dbuf + t->dlen, q, k);
        t->dlen += k;
        q += k;
        n -= k;
        if (t->dlen == TMP_DIRECT_BUF && tmp_direct_write(t, TMP_DIRECT_BUF) != 0)
            return err_sys(e, errno, NULL, "cannot write %s/%s", P(s)->root, t->tmp);
    }
    if (n && fs_write_full(t->fd, q, n) != 0)
        return err_sys(e, errno, NULL, "cannot write %s/%s", P(s)->root, t->tmp);
    return 0;
}

static int posix_tmp_read(struct storage *s, void *h, uint64_t off, void *out, size_t n,
                          struct err *e)
{
    struct posix_tmp *t = h;
    uint8_t *p = out;
    if (t->dbuf && off + n > t->flushed) { /* the part still in dbuf */
        uint64_t from = off > t->flushed ? off : t->flushed;
        memcpy(p + (from - off), t->dbuf + (from - t->flushed), (size_t)(off + n - from));
        n = (size_t)(from - off);
    }
    int fd = t->fd;
    if (t->dbuf && n) {
        if (t->rfd < 0)
            t->rfd = openat(P(s)->rootfd, t->tmp, O_RDONLY | O_CLOEXEC);
        if (t->rfd < 0)
            return err_sys(e, errno, NULL, "cannot read %s/%s", P(s)->root, t->tmp);
        fd = t->rfd;
    }
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return err_sys(e, r < 0 ? errno : EIO, NULL, "cannot read %s/%s", P(s)->root, t->tmp);
        done += (size_t)r;
    }
    return 0;
}

static void tmp_free_direct(struct posix_tmp *t)
{
    if (t->rfd >= 0)
        close(t->rfd);
    t->rfd = -1;
    if (t->dbuf) {
        cx_wipe(t->dbuf, TMP_DIRECT_BUF);
        free(t->dbuf);
    }
    t->dbuf = NULL;
}

/* The direct writes' last block, padded, then the file cut to its length. */
static int tmp_direct_finish(struct posix_tmp *t)
{
    if (!t->dbuf) { /* buffered from the start, or since a refusal */
        tmp_free_direct(t);
        return 0;
    }
    size_t len = t->dlen;
    size_t padded = (len + TMP_ALIGN - 1) & ~(size_t)(TMP_ALIGN - 1);
    memset(t->dbuf + len, 0, padded - len);
    t->dlen = padded;
    int rc = tmp_direct_write(t, padded); /* direct, or buffered if refused on the way */
    if (rc == 0)
        rc = ftruncate(t->fd, (off_t)t->size); /* the padding goes */
    int en = errno;
    tmp_free_direct(t);
    errno = en;
    return rc;
}

static void posix_tmp_discard(struct storage *s, void *h)
{
    struct posix_tmp *t = h;
    if (t->fd >= 0)
        close(t->fd);
    tmp_free_direct(t);
    unlinkat(P(s)->rootfd, t->tmp, 0);
    free(t->tmp);
    free(t);
}

/* As posix_put's end: the bytes durable, then the name, then the name durable. */
static int posix_tmp_commit(struct storage *s, void *h, const char *name, struct err *e)
{
    struct posix_storage *ps = P(s);
    struct posix_tmp *t = h;
    int rc = -1;
    if (tmp_direct_finish(t) != 0 || fsync(t->fd) != 0) {
        err_sys(e, errno, NULL, "cannot write %s/%s", ps->root, name);
        goto out;
    }
    int fd = t->fd;
    t->fd = -1;
    if (close(fd) != 0) {
        err_sys(e, errno, NULL, "cannot write %s/%s", ps->root, name);
        goto out;
    }
    if (make_parents(ps, name, e) != 0)
        goto out;
    if (renameat(ps->rootfd, t->tmp, ps->rootfd, name) != 0) {
        err_sys(e, errno, NULL, "cannot write %s/%s", ps->root, name);
        goto out;
    }
    free(t->tmp);
    free(t);
    return fsync_parent(ps, name, e);
out:
    posix_tmp_discard(s, t);
    return rc;
}

static int posix_read_at(struct storage *s, const char *name, uint64_t off, void *out, size_t len,
                         struct err *e)
{
    struct posix_storage *ps = P(s);
    struct fd_slot *slot;
    int fd = fd_acquire(ps, name, &slot);
    if (fd == NOT_REGULAR)
        return err_set(e, ERR_DAMAGE,
                       "someone put something else in its place: run `caris-backup check`",
                       "%s/%s is not a regular file", ps->root, name);
    if (fd < 0)
        return err_sys(e, errno, NULL, "cannot open %s/%s", ps->root, name);
    uint8_t *p = out;
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, p + done, len - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int en = errno;
            fd_release(ps, fd, slot);
            return err_sys(e, en, NULL, "cannot read %s/%s", ps->root, name);
        }
        if (r == 0) {
            fd_release(ps, fd, slot);
            return err_set(e, ERR_DAMAGE,
                           "the file was truncated: run `caris-backup check` to see which backups "
                           "are affected",
                           "%s/%s is shorter than expected (wanted %zu bytes at offset %llu)",
                           ps->root, name, len, (unsigned long long)off);
        }
        done += (size_t)r;
    }
    fd_release(ps, fd, slot);
    return 0;
}

/* The kernel reads the range into the page cache in the background (POSIX_FADV_WILLNEED
 * starts the reads and returns), so a reader busy with the previous object finds this one
 * in memory. A hint: an error is ignored, the read that follows reports it. */
static void posix_prefetch(struct storage *s, const char *name, uint64_t off, uint64_t len)
{
    struct posix_storage *ps = P(s);
    struct fd_slot *slot;
    int fd = fd_acquire(ps, name, &slot);
    if (fd < 0)
        return;
    (void)posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
    fd_release(ps, fd, slot);
}

static int posix_size(struct storage *s, const char *name, uint64_t *size, struct err *e)
{
    struct posix_storage *ps = P(s);
    struct stat st;
    if (fstatat(ps->rootfd, name, &st, 0) != 0)
        return err_sys(e, errno, NULL, "cannot stat %s/%s", ps->root, name);
    *size = (uint64_t)st.st_size;
    return 0;
}

static int posix_mtime(struct storage *s, const char *name, int64_t *ns, struct err *e)
{
    struct posix_storage *ps = P(s);
    struct stat st;
    if (fstatat(ps->rootfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return err_sys(e, errno, NULL, "cannot stat %s/%s", ps->root, name);
    *ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    return 0;
}

/* The names in dir ("" = the root), as paths from the root, collected before anything is
 * done with them (a caller may write into the directory). Names that start with '.' (".",
 * "..", temporary files of interrupted writes) only when dotfiles is set, "." and ".." never.
 * A missing directory has no names. */
static int dir_names(struct posix_storage *ps, const char *dir, bool dotfiles, char ***out,
                     size_t *nout, struct err *e)
{
    *out = NULL;
    *nout = 0;
    int fd = openat(ps->rootfd, *dir ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return err_sys(e, errno, NULL, "cannot list %s/%s", ps->root, dir);
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return err_sys(e, errno, NULL, "cannot list %s/%s", ps->root, dir);
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((errno = 0, de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            (!dotfiles && de->d_name[0] == '.'))
            continue;
        names = xrealloc(names, xsize(n + 1, sizeof(*names), 0));
        names[n++] = *dir ? xasprintf("%s/%s", dir, de->d_name) : xstrdup(de->d_name);
    }
    int r = 0;
    if (errno != 0)
        r = err_sys(e, errno, NULL, "cannot list %s/%s", ps->root, dir);
    closedir(d);
    *out = names;
    *nout = n;
    return r;
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Walks dir ("" = the root) and its subdirectories for temporary files. The repository is
 * at most two levels deep (data/xx/, records/<kind>/); depth bounds the walk anyway. */
static int list_temp_dir(struct posix_storage *ps, const char *dir, int depth, storage_list_cb cb,
                         void *ctx, struct err *e)
{
    char **names;
    size_t n;
    int r = dir_names(ps, dir, true, &names, &n, e);
    for (size_t i = 0; i < n && r == 0; i++) {
        const char *base = strrchr(names[i], '/') ? strrchr(names[i], '/') + 1 : names[i];
        struct stat st;
        if (fstatat(ps->rootfd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT)
                r = err_sys(e, errno, NULL, "cannot stat %s/%s", ps->root, names[i]);
        } else if (S_ISDIR(st.st_mode) && base[0] != '.') {
            if (depth > 0)
                r = list_temp_dir(ps, names[i], depth - 1, cb, ctx, e);
        } else if (S_ISREG(st.st_mode) && strncmp(base, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
            r = cb(ctx, names[i], (uint64_t)st.st_size, e);
        }
    }
    names_free(names, n);
    return r;
}

static int posix_list_temp(struct storage *s, storage_list_cb cb, void *ctx, struct err *e)
{
    return list_temp_dir(P(s), "", 2, cb, ctx, e);
}

static int list_dir(struct posix_storage *ps, const char *dir, bool recurse, storage_list_cb cb,
                    void *ctx, struct err *e)
{
    char **names;
    size_t n;
    int r = dir_names(ps, dir, false, &names, &n, e);
    for (size_t i = 0; i < n && r == 0; i++) {
        struct stat st;
        if (fstatat(ps->rootfd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT)
                continue; /* removed meanwhile */
            r = err_sys(e, errno, NULL, "cannot stat %s/%s", ps->root, names[i]);
        } else if (S_ISDIR(st.st_mode)) {
            if (recurse)
                r = list_dir(ps, names[i], false, cb, ctx, e);
        } else if (S_ISREG(st.st_mode)) {
            r = cb(ctx, names[i], (uint64_t)st.st_size, e);
        }
    }
    names_free(names, n);
    return r;
}

static int posix_list(struct storage *s, const char *dir, storage_list_cb cb, void *ctx,
                      struct err *e)
{
    return list_dir(P(s), dir, strcmp(dir, "data") == 0 || strcmp(dir, "records") == 0, cb, ctx, e);
}

static int posix_remove(struct storage *s, const char *name, struct err *e)
{
    struct posix_storage *ps = P(s);
    fd_forget(ps, name);
    if (unlinkat(ps->rootfd, name, 0) != 0 && errno != ENOENT)
        return err_sys(e, errno, NULL, "cannot remove %s/%s", ps->root, name);
    return fsync_parent(ps, name, e);
}

/* put_new with its bytes in place before its name exists: written as an anonymous file
 * (O_TMPFILE) and linked under name, which fails if name exists. A process killed meanwhile
 * leaves nothing (a claim or lock created empty, then killed before its bytes, was taken for
 * live by everyone after). 1: name exists; -2: no anonymous files here (the caller falls
 * back); 0 / -1 with e. */
static int put_new_anon(struct posix_storage *ps, const char *name, const void *data, size_t len,
                        struct err *e)
{
    char *dir = xstrdup(name);
    char *slash = strrchr(dir, '/');
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    if (slash)
        *slash = '\0';
    int dfd = slash ? openat(ps->rootfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : dup(ps->rootfd);
    free(dir);
    if (dfd < 0)
        return err_sys(e, errno, NULL, "cannot open the directory of %s/%s", ps->root, name);
    int fd = access("/proc/self/fd", X_OK) == 0
                 ? openat(dfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600)
                 : (errno = EOPNOTSUPP, -1);
    if (fd < 0) {
        int en = errno;
        close(dfd);
        if (en == EOPNOTSUPP || en == EISDIR || en == EINVAL || en == ENOENT)
            return -2;
        return err_sys(e, en, NULL, "cannot create %s/%s", ps->root, name);
    }
    int rc = 0;
    if (fs_write_full(fd, data, len) != 0 || fsync(fd) != 0) {
        rc = err_sys(e, errno, NULL, "cannot write %s/%s", ps->root, name);
    } else {
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc, dfd, base, AT_SYMLINK_FOLLOW) != 0)
            rc = errno == EEXIST ? 1
                                 : err_sys(e, errno, NULL, "cannot create %s/%s", ps->root, name);
    }
    close(fd);
    close(dfd);
    return rc;
}

static int posix_put_new(struct storage *s, const char *name, const void *data, size_t len,
                         struct err *e)
{
    struct posix_storage *ps = P(s);
    if (make_parents(ps, name, e) != 0)
        return -1;
    int arc = put_new_anon(ps, name, data, len, e);
    if (arc == 1)
        return 1;
    if (arc == 0)
        return fsync_parent(ps, name, e);
    if (arc == -1)
        return -1;
    int fd = openat(ps->rootfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return 1;
        return err_sys(e, errno, NULL, "cannot create %s/%s", ps->root, name);
    }
    if (fs_write_full(fd, data, len) != 0 || fsync(fd) != 0) {
        int en = errno;
        close(fd);
        unlinkat(ps->rootfd, name, 0);
        return err_sys(e, en, NULL, "cannot write %s/%s", ps->root, name);
    }
    close(fd);
    return fsync_parent(ps, name, e);
}

/* In place: a rename would bring back a name removed since it was looked up; writing through
 * a descriptor opened without O_CREAT does not (removed after the open, the bytes go to the
 * unlinked file). A reader in between may see the old bytes or a mix: the callers' objects
 * (locks) are read as "unreadable, recently modified", i.e. held. */
static int posix_put_existing(struct storage *s, const char *name, const void *data, size_t len,
                              struct err *e)
{
    struct posix_storage *ps = P(s);
    /* O_NONBLOCK: a FIFO put in its place must not block the open (ENXIO without a reader) */
    int fd = openat(ps->rootfd, name, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        return err_sys(e, errno, NULL, "cannot open %s/%s", ps->root, name);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(e, ERR_DAMAGE, NULL, "%s/%s is not a regular file", ps->root, name);
    }
    if (fs_write_full(fd, data, len) != 0 || ftruncate(fd, (off_t)len) != 0 || fsync(fd) != 0) {
        int en = errno;
        close(fd);
        return err_sys(e, en, NULL, "cannot write %s/%s", ps->root, name);
    }
    close(fd);
    return 0;
}

static void posix_close(struct storage *s)
{
    struct posix_storage *ps = P(s);
    for (int i = 0; i < FD_CACHE; i++)
        if (ps->cache[i].name) {
            close(ps->cache[i].fd);
            free(ps->cache[i].name);
        }
    pthread_mutex_destroy(&ps->mu);
    close(ps->rootfd);
    free(ps->root);
    free(ps->base.location);
    free(ps);
}

static const struct storage_ops posix_ops = {
    .put = posix_put,
    .read_at = posix_read_at,
    .size = posix_size,
    .list = posix_list,
    .remove = posix_remove,
    .put_new = posix_put_new,
    .put_existing = posix_put_existing,
    .mtime = posix_mtime,
    .list_temp = posix_list_temp,
    .close = posix_close,
    .tmp_open = posix_tmp_open,
    .tmp_write = posix_tmp_write,
    .tmp_read = posix_tmp_read,
    .tmp_commit = posix_tmp_commit,
    .tmp_discard = posix_tmp_discard,
    .prefetch = posix_prefetch,
    .drop_open = posix_drop_open,
};

bool storage_moved(struct storage *s)
{
    if (s->ops != &posix_ops)
        return false; /* an S3 location names its bucket and prefix: nothing to move */
    struct posix_storage *ps = P(s);
    struct stat open_st, path_st;
    if (fstat(ps->rootfd, &open_st) != 0)
        return false;
    if (stat(ps->root, &path_st) != 0)
        return true;
    return open_st.st_dev != path_st.st_dev || open_st.st_ino != path_st.st_ino;
}

struct storage *storage_posix_open(const char *root, bool create, struct err *e)
{
    if (create && fs_mkdir_p(root, 0700, e) != 0)
        return NULL;
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        err_sys(e, errno, NULL, "cannot open repository directory %s", root);
        return NULL;
    }
    struct posix_storage *ps = xcalloc(1, sizeof(*ps));
    ps->base.ops = &posix_ops;
    ps->base.location = xstrdup(root);
    ps->root = xstrdup(root);
    ps->rootfd = fd;
    pthread_mutex_init(&ps->mu, NULL);
    return &ps->base;
}

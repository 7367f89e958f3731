/* File backup: walk → read → chunk (main thread, with the whole-file SHA-256) → chunk id,
 * dedup, compress, encrypt, pack (worker threads) → index → manifest (the commit point). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caris/backup.h"
#include "caris/chunker.h"
#include "caris/crypto.h"
#include "caris/fsmeta.h"
#include "caris/pool.h"
#include "common.h"
#include "manifest.h"

#define READ_SIZE (1u << 20)
#define MAX_WARNINGS_KEPT 1000

struct chunkref {
    uint8_t id[32];
    uint32_t len;
};

/* One regular file being read. Its chunk array is sized for the most chunks the file can
 * produce before reading starts, so worker threads can fill ids through pointers into it
 * while the reader keeps appending. Only the main thread touches obj. */
struct bctx;
struct filerec {
    struct bctx *b;
    json_t *obj;
    char *path; /* for warnings */
    size_t path_len;
    int fd;
    struct stat st;
    struct chunkref *refs;
    size_t nrefs, caprefs;
    struct fs_extent *ext;
    size_t next;
    uint8_t sha[32];
    char *error;  /* could not be read: no content kept */
    bool changed; /* changed while read */
};

/* A reader's buffer, one per reader thread. */
struct rbuf {
    uint8_t *p;
    size_t cap;
};

#define READERS 4

struct bctx {
    struct repo *r;
    struct repo_writer *w;
    struct pool *pool;
    struct chunker ch;
    const struct files_backup_opts *o;
    json_t *entries;
    json_t *warnings;
    size_t nwarnings;
    struct filerec **recs;
    size_t nrecs, caprecs;
    json_t *prev; /* incremental: "<root>/<path>" → previous entry */
    int root;
    struct pool *readers; /* whole files, I/O-bound: several at once hide read latency */
    struct rbuf *rbufs;   /* one per reader */
    pthread_mutex_t warn_mu;
    /* statistics (bytes_* are updated by readers: atomics) */
    uint64_t files, dirs, symlinks, others, unchanged;
    uint64_t bytes_total, bytes_read;
    uint64_t total_estimate;
    int64_t start_mono, last_progress;
    /* the first error raised in a worker stops the backup */
    pthread_mutex_t err_mu;
    bool failed;
    struct err werr;
};

struct cjob {
    struct bctx *b;
    uint8_t *data;
    size_t len;
    struct chunkref *ref;
};

static void chunk_job(void *arg, int worker)
{
    struct cjob *j = arg;
    struct bctx *b = j->b;
    repo_chunk_id(b->r, j->data, j->len, j->ref->id);
    pthread_mutex_lock(&b->err_mu);
    bool failed = b->failed;
    pthread_mutex_unlock(&b->err_mu);
    if (!failed) {
        struct err e = ERR_INIT;
        if (repo_writer_add(b->w, worker, j->ref->id, j->data, j->len, &e) < 0) {
            pthread_mutex_lock(&b->err_mu);
            if (!b->failed) {
                b->failed = true;
                b->werr = e;
            }
            pthread_mutex_unlock(&b->err_mu);
        }
    }
    free(j->data);
    free(j);
}

static bool worker_failed(struct bctx *b, struct err *e)
{
    pthread_mutex_lock(&b->err_mu);
    bool f = b->failed;
    if (f && e)
        *e = b->werr;
    pthread_mutex_unlock(&b->err_mu);
    return f;
}

static void warn_path(struct bctx *b, const char *path, size_t plen, const char *msg)
{
    pthread_mutex_lock(&b->warn_mu);
    b->nwarnings++;
    char esc[600];
    str_escape(path, plen, esc, sizeof(esc));
    log_warn("%s: %s", esc, msg);
    if (json_array_size(b->warnings) < MAX_WARNINGS_KEPT) {
        json_t *w = json_object();
        json_object_set_new(w, "root", json_integer(b->root));
        manifest_set_bytes(w, "path", path, plen);
        json_object_set_new(w, "message", json_string(msg));
        json_array_append_new(b->warnings, w);
    }
    pthread_mutex_unlock(&b->warn_mu);
}

static void walk_warn(void *ctx, const char *path, const char *msg)
{
    warn_path(ctx, path, strlen(path), msg);
}

static void maybe_progress(struct bctx *b, bool force)
{
    if (!b->o->progress)
        return;
    int64_t now = time_mono_ns();
    if (!force && now - b->last_progress < 200000000)
        return;
    b->last_progress = now;
    progress_report(b->o->progress, b->o->ctx, "backup", b->files,
                    __atomic_load_n(&b->bytes_total, __ATOMIC_RELAXED), b->total_estimate,
                    b->start_mono);
}

static void emit_chunk(struct bctx *b, struct filerec *f, const uint8_t *p, size_t len)
{
    if (f->nrefs == f->caprefs) {
        /* cannot happen: caprefs bounds the chunk count (see chunk_bound) */
        fprintf(stderr, "fatal: chunk bound exceeded\n");
        abort();
    }
    struct cjob *j = xmalloc(sizeof(*j));
    j->b = b;
    j->data = xmemdup(p, len);
    j->len = len;
    j->ref = &f->refs[f->nrefs++];
    j->ref->len = (uint32_t)len;
    pool_submit(b->pool, chunk_job, j);
}

/* Every chunk but the last of an extent is at least min_size long. */
static size_t chunk_bound(const struct bctx *b, const struct fs_extent *ext, size_t next)
{
    size_t n = 0;
    for (size_t i = 0; i < next; i++)
        n = xsize(1, n, (size_t)(ext[i].len / b->ch.p.min_size) + 1);
    return n;
}

/* Reads [off, off+len) of fd, chunks it, hashes it. Returns 0, or errno on a read error. */
static int backup_extent(struct bctx *b, struct filerec *f, struct rbuf *rb, uint64_t off,
                         uint64_t len, struct cx_sha256 *h)
{
    size_t max = b->ch.p.max_size;
    int fd = f->fd;
    size_t have = 0;
    uint64_t pos = off, end = off + len;
    for (;;) {
        /* fill */
        while (pos < end && have < rb->cap) {
            size_t want = rb->cap - have;
            if (want > end - pos)
                want = (size_t)(end - pos);
            ssize_t n = pread(fd, rb->p + have, want, (off_t)pos);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return errno;
            }
            if (n == 0) {
                end = pos; /* the file shrank: what we read is what there was */
                break;
            }
            cx_sha256_update(h, rb->p + have, (size_t)n);
            have += (size_t)n;
            pos += (uint64_t)n;
            __atomic_fetch_add(&b->bytes_read, (uint64_t)n, __ATOMIC_RELAXED);
            __atomic_fetch_add(&b->bytes_total, (uint64_t)n, __ATOMIC_RELAXED);
        }
        bool eof = pos >= end;
        size_t used = 0;
        while (have - used > 0) {
            size_t avail = have - used;
            if (!eof && avail < max)
                break;
            size_t cut = chunker_cut(&b->ch, rb->p + used, avail);
            emit_chunk(b, f, rb->p + used, cut);
            used += cut;
        }
        if (used && used < have)
            memmove(rb->p, rb->p + used, have - used);
        have -= used;
        if (eof && have == 0)
            return 0;
    }
}

static bool same_stat(const struct stat *a, const struct stat *c)
{
    return a->st_size == c->st_size && a->st_mtim.tv_sec == c->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == c->st_mtim.tv_nsec && a->st_ctim.tv_sec == c->st_ctim.tv_sec &&
           a->st_ctim.tv_nsec == c->st_ctim.tv_nsec && a->st_ino == c->st_ino;
}

/* Incremental: reuse the previous entry's chunks when the file looks unchanged and all its
 * chunks are still in the repository. */
static bool try_reuse(struct bctx *b, const struct fswalk_entry *ent, json_t *obj)
{
    if (!b->prev)
        return false;
    char *key = xasprintf("%d/", b->root);
    size_t kl = strlen(key);
    key = xrealloc(key, kl + ent->path_len + 1);
    memcpy(key + kl, ent->path, ent->path_len + 1);
    json_t *p = json_object_get(b->prev, key);
    free(key);
    if (!p || json_object_get(p, "error"))
        return false;
    const struct stat *st = &ent->st;
    if (json_integer_value(json_object_get(p, "size")) != (json_int_t)st->st_size ||
        json_integer_value(json_object_get(p, "mtime_s")) != (json_int_t)st->st_mtim.tv_sec ||
        json_integer_value(json_object_get(p, "mtime_ns")) != (json_int_t)st->st_mtim.tv_nsec ||
        json_integer_value(json_object_get(p, "ctime_s")) != (json_int_t)st->st_ctim.tv_sec ||
        json_integer_value(json_object_get(p, "ctime_ns")) != (json_int_t)st->st_ctim.tv_nsec ||
        json_integer_value(json_object_get(p, "ino")) != (json_int_t)st->st_ino)
        return false;
    json_t *chunks = json_object_get(p, "chunks");
    const char *sha = json_string_value(json_object_get(p, "sha256"));
    uint8_t(*ids)[32];
    uint32_t *lens;
    size_t n;
    if (!sha || chunks_decode(chunks, &ids, &lens, &n) != 0)
        return false;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++)
        ok = repo_has_blob(b->r, ids[i]);
    free(ids);
    free(lens);
    if (!ok)
        return false;
    json_object_set(obj, "chunks", chunks);
    json_object_set_new(obj, "sha256", json_string(sha));
    json_t *ext = json_object_get(p, "extents");
    if (ext)
        json_object_set(obj, "extents", ext);
    b->unchanged++;
    b->bytes_total += (uint64_t)st->st_size;
    return true;
}

static void rec_fail(struct filerec *f, const char *what, int errnum)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errnum));
    f->error = xstrdup(msg);
}

/* Reader thread: the whole file, start to end. */
static void read_file_job(void *arg, int reader)
{
    struct filerec *f = arg;
    struct bctx *b = f->b;
    struct rbuf *rb = &b->rbufs[reader];
    if (!rb->p) {
        rb->cap = READ_SIZE + b->ch.p.max_size;
        rb->p = xmalloc(rb->cap);
    }
    posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint64_t size = (uint64_t)f->st.st_size;
    struct err e = ERR_INIT;
    if (fs_data_extents(f->fd, size, &f->ext, &f->next, &e) != 0) {
        f->ext = xmalloc(sizeof(*f->ext));
        f->ext[0] = (struct fs_extent){0, size};
        f->next = 1;
    }
    f->caprefs = chunk_bound(b, f->ext, f->next);
    f->refs = xcalloc(f->caprefs ? f->caprefs : 1, sizeof(*f->refs));
    struct cx_sha256 *h = cx_sha256_new();
    uint64_t pos = 0;
    int rerr = 0;
    for (size_t i = 0; i < f->next && !rerr && !worker_failed(b, NULL); i++) {
        if (f->ext[i].off > pos)
            sha256_zeros(h, f->ext[i].off - pos);
        rerr = backup_extent(b, f, rb, f->ext[i].off, f->ext[i].len, h);
        pos = f->ext[i].off + f->ext[i].len;
    }
    if (!rerr && size > pos)
        sha256_zeros(h, size - pos);
    cx_sha256_final(h, f->sha);
    cx_sha256_free(h);
    struct stat after;
    f->changed = fstat(f->fd, &after) != 0 || !same_stat(&f->st, &after);
    close(f->fd);
    f->fd = -1;
    if (rerr) {
        rec_fail(f, "read error", rerr);
        warn_path(b, f->path, f->path_len, f->error);
    } else if (f->changed) {
        warn_path(b, f->path, f->path_len,
                  "file changed while being read; the backup holds what was read");
    }
}

/* Main thread, in the walk callback: open the file (its directory fd is valid only now)
 * and hand it to a reader. */
static void backup_file(struct bctx *b, const struct fswalk_entry *ent, json_t *obj)
{
    int fd = openat(ent->dirfd, ent->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
    if (fd < 0 && errno == EPERM)
        fd = openat(ent->dirfd, ent->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "cannot read file: %s", strerror(errno));
        warn_path(b, ent->path, ent->path_len, msg);
        json_object_set_new(obj, "error", json_string(msg));
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_ino != ent->st.st_ino || !S_ISREG(st.st_mode)) {
        warn_path(b, ent->path, ent->path_len, "file was replaced while being backed up");
        json_object_set_new(obj, "error", json_string("replaced while being backed up"));
        close(fd);
        return;
    }
    struct filerec *f = xcalloc(1, sizeof(*f));
    f->b = b;
    f->obj = obj;
    f->path = xmemdup(ent->path, ent->path_len + 1);
    f->path_len = ent->path_len;
    f->fd = fd;
    f->st = st;
    if (b->nrecs == b->caprecs) {
        b->caprecs = b->caprecs ? b->caprecs * 2 : 1024;
        b->recs = xrealloc(b->recs, xsize(b->caprecs, sizeof(*b->recs), 0));
    }
    b->recs[b->nrecs++] = f;
    pool_submit(b->readers, read_file_job, f);
}

/* After all readers and workers finished: the manifest entries of read files. */
static void rec_finish(struct filerec *f)
{
    json_t *obj = f->obj;
    if (f->error) {
        json_object_set_new(obj, "error", json_string(f->error));
        return;
    }
    char hex[65];
    cx_hex(f->sha, 32, hex);
    json_object_set_new(obj, "sha256", json_string(hex));
    if (f->changed)
        json_object_set_new(obj, "changed_during_backup", json_true());
    uint64_t size = (uint64_t)f->st.st_size;
    /* Holes are recorded only when the file has them. */
    if (!(f->next == 1 && f->ext[0].off == 0 && f->ext[0].len == size) &&
        !(f->next == 0 && size == 0)) {
        json_t *ja = json_array();
        for (size_t i = 0; i < f->next; i++)
            json_array_append_new(
                ja, json_pack("[I, I]", (json_int_t)f->ext[i].off, (json_int_t)f->ext[i].len));
        json_object_set_new(obj, "extents", ja);
    }
    json_t *ch = json_array();
    for (size_t k = 0; k < f->nrefs; k++) {
        cx_hex(f->refs[k].id, 32, hex);
        json_array_append_new(ch, json_pack("[s, I]", hex, (json_int_t)f->refs[k].len));
    }
    json_object_set_new(obj, "chunks", ch);
}

static void rec_free(struct filerec *f)
{
    if (f->fd >= 0)
        close(f->fd);
    free(f->path);
    free(f->refs);
    free(f->ext);
    free(f->error);
    free(f);
}

static int on_entry(void *ctx, const struct fswalk_entry *ent, struct err *e)
{
    struct bctx *b = ctx;
    if (worker_failed(b, e))
        return -1;
    json_t *obj = manifest_entry_new(b->root, ent->path, ent->path_len, &ent->meta);
    json_array_append_new(b->entries, obj);
    switch (ent->meta.type) {
    case FS_REG:
        b->files++;
        json_object_set_new(obj, "ctime_s", json_integer(ent->st.st_ctim.tv_sec));
        json_object_set_new(obj, "ctime_ns", json_integer(ent->st.st_ctim.tv_nsec));
        json_object_set_new(obj, "ino", json_integer((json_int_t)ent->st.st_ino));
        if (!try_reuse(b, ent, obj))
            backup_file(b, ent, obj);
        break;
    case FS_DIR:
        b->dirs++;
        break;
    case FS_SYMLINK:
        b->symlinks++;
        break;
    default:
        b->others++;
        break;
    }
    maybe_progress(b, false);
    return 0;
}

static int count_size(void *ctx, const struct fswalk_entry *ent, struct err *e)
{
    (void)e;
    if (ent->meta.type == FS_REG)
        *(uint64_t *)ctx += (uint64_t)ent->st.st_size;
    return 0;
}

static void quiet_warn(void *ctx, const char *path, const char *msg)
{
    (void)ctx;
    (void)path;
    (void)msg;
}

/* Absolute, normalised roots without duplicates, sorted. */
static json_t *resolve_roots(const struct files_backup_opts *o, struct err *e)
{
    if (o->npaths == 0) {
        err_set(e, ERR_CONFIG,
                "name the paths on the command line or set BACKUP_FILES_PATHS "
                "(colon-separated) in the environment or .env.local",
                "nothing to back up: no paths given");
        return NULL;
    }
    json_t *roots = json_array();
    for (size_t i = 0; i < o->npaths; i++) {
        char *abs = realpath(o->paths[i], NULL);
        if (!abs) {
            err_sys(e, errno, "check the path; BACKUP_FILES_PATHS lists the directories to back up",
                    "cannot back up %s", o->paths[i]);
            json_decref(roots);
            return NULL;
        }
        bool dup = false;
        size_t k;
        json_t *v;
        json_array_foreach(roots, k, v) dup |= strcmp(json_string_value(v), abs) == 0;
        if (!dup) {
            if (!str_is_utf8(abs, strlen(abs))) {
                err_set(e, ERR_USAGE, "rename the directory or back up its parent",
                        "backup root paths must be UTF-8");
                free(abs);
                json_decref(roots);
                return NULL;
            }
            json_array_append_new(roots, json_string(abs));
        }
        free(abs);
    }
    return roots;
}

/* The most recent file backup with exactly these roots. */
static json_t *find_parent(struct repo *r, json_t *roots, struct err *e)
{
    json_t *list = repo_snapshot_list(r, NULL, e);
    if (!list)
        return NULL;
    json_t *best = NULL;
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        const char *kind = json_string_value(json_object_get(s, "kind"));
        if (kind && strcmp(kind, "files") == 0 && json_equal(json_object_get(s, "roots"), roots))
            best = s;
    }
    if (best)
        json_incref(best);
    json_decref(list);
    return best ? best : json_null();
}

static json_t *prev_map(struct repo *r, json_t *parent, struct err *e)
{
    json_t *summary, *entries;
    if (repo_snapshot_load(r, json_string_value(json_object_get(parent, "_file")), &summary,
                           &entries, e) != 0)
        return NULL;
    json_decref(summary);
    json_t *map = json_object();
    size_t i;
    json_t *ent;
    json_array_foreach(entries, i, ent)
    {
        if (strcmp(json_string_value(json_object_get(ent, "type")) ?: "", "file") != 0)
            continue;
        char *path;
        size_t plen;
        if (manifest_get_bytes(ent, "path", &path, &plen) != 0)
            continue;
        char *key =
            xasprintf("%lld/%s", (long long)json_integer_value(json_object_get(ent, "root")), path);
        json_object_set_nocheck(map, key, ent);
        free(key);
        free(path);
    }
    json_decref(entries);
    return map;
}

static int files_backup(struct repo *r, const struct files_backup_opts *o, bool incremental,
                        json_t **summary_out, struct err *e)
{
    int64_t start_ns = time_now_ns();
    json_t *roots = resolve_roots(o, e);
    if (!roots)
        return -1;
    struct bctx b = {.r = r, .o = o, .start_mono = time_mono_ns()};
    pthread_mutex_init(&b.err_mu, NULL);
    pthread_mutex_init(&b.warn_mu, NULL);
    b.entries = json_array();
    b.warnings = json_array();
    json_t *parent = NULL, *summary = NULL, *entries_ref = NULL;
    char id[160] = "";
    bool claimed = false;
    int rc = -1;
    if (chunker_init(&b.ch, repo_chunker_params(r, false), repo_chunker_seed(r)) != 0) {
        err_set(e, ERR_DAMAGE, NULL, "repository has invalid chunker parameters");
        goto out;
    }
    if (repo_lock(r, false, "backup files", e) != 0)
        goto out;
    if (incremental) {
        parent = find_parent(r, roots, e);
        if (!parent)
            goto out;
        if (json_is_null(parent)) {
            log_info("no earlier backup of these paths: this incremental backup reads every file");
        } else if (!(b.prev = prev_map(r, parent, e))) {
            goto out;
        }
    }
    if (backup_id_claim(r, "file", incremental ? "incremental" : "full", start_ns, id, sizeof(id),
                        e) != 0)
        goto out;
    claimed = true;
    int nthreads = o->threads > 0 ? o->threads : sys_ncpu();
    b.pool = pool_new(nthreads, (size_t)nthreads * 4);
    b.readers = pool_new(READERS, READERS * 4);
    b.rbufs = xcalloc(READERS, sizeof(*b.rbufs));
    b.w = repo_writer_new(r, nthreads);

    if (o->estimate_total) {
        for (size_t i = 0; i < json_array_size(roots); i++) {
            struct fswalk_opts wo = {
                .excludes = o->excludes, .warn = quiet_warn, .ctx = &b.total_estimate};
            struct err ie = ERR_INIT;
            fswalk_run(json_string_value(json_array_get(roots, i)), &wo, count_size, &ie);
        }
    }
    for (size_t i = 0; i < json_array_size(roots); i++) {
        b.root = (int)i;
        struct fswalk_opts wo = {.excludes = o->excludes, .warn = walk_warn, .ctx = &b};
        if (fswalk_run(json_string_value(json_array_get(roots, i)), &wo, on_entry, e) != 0)
            goto out;
    }
    pool_wait(b.readers);
    pool_wait(b.pool);
    if (worker_failed(&b, e))
        goto out;
    /* The entries are complete once every chunk id is known (below); then they are stored,
     * the writer flushed (packs, index), and only then the snapshot committed. */
    maybe_progress(&b, true);

    /* Every chunk id is known now: complete the entries of the files that were read. */
    for (size_t i = 0; i < b.nrecs; i++)
        rec_finish(b.recs[i]);
    if (repo_snapshot_put_entries(r, b.w, b.entries, &entries_ref, e) != 0 ||
        repo_writer_flush(b.w, e) != 0)
        goto out;
    struct repo_writer_stats ws;
    repo_writer_get_stats(b.w, &ws);
    int64_t end_ns = time_now_ns();
    char started[40], finished[40], host[256] = "";
    time_format_iso(start_ns, started, sizeof(started));
    time_format_iso(end_ns, finished, sizeof(finished));
    gethostname(host, sizeof(host) - 1);
    summary = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:O, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:I, s:I, s:I, s:I}, s:s, s:I, s:O, s:s}",
        "id", id, "kind", "files", "type", "files", "mode", incremental ? "incremental" : "full",
        "started", started, "finished", finished, "duration_ms",
        (json_int_t)((end_ns - start_ns) / 1000000), "host", host, "roots", roots, "stats", "files",
        (json_int_t)b.files, "dirs", (json_int_t)b.dirs, "symlinks", (json_int_t)b.symlinks,
        "other", (json_int_t)b.others, "files_unchanged", (json_int_t)b.unchanged, "bytes_total",
        (json_int_t)b.bytes_total, "bytes_read", (json_int_t)b.bytes_read, "bytes_added",
        (json_int_t)ws.bytes_new, "bytes_stored", (json_int_t)ws.bytes_stored, "chunks_new",
        (json_int_t)ws.blobs_new, "chunks_known", (json_int_t)ws.blobs_known, "status",
        b.nwarnings ? "warnings" : "ok", "warnings_count", (json_int_t)b.nwarnings, "warnings",
        b.warnings, "version", "1");
    if (parent && !json_is_null(parent))
        json_object_set(summary, "parent", json_object_get(parent, "id"));
    char name[65];
    if (repo_snapshot_commit(r, summary, entries_ref, name, e) != 0)
        goto out;
    json_object_set_new(summary, "_file", json_string(name));
    *summary_out = summary;
    summary = NULL;
    rc = b.nwarnings ? CARIS_DONE_WARNINGS : CARIS_DONE;
out:
    /* readers first: they feed the workers */
    if (b.readers)
        pool_free(b.readers);
    if (b.pool)
        pool_free(b.pool);
    for (size_t i = 0; b.rbufs && i < READERS; i++)
        free(b.rbufs[i].p);
    free(b.rbufs);
    for (size_t i = 0; i < b.nrecs; i++)
        rec_free(b.recs[i]);
    if (claimed)
        backup_id_release(r, id);
    repo_unlock(r);
    repo_writer_free(b.w);
    free(b.recs);
    json_decref(b.prev);
    json_decref(parent);
    json_decref(summary);
    json_decref(entries_ref);
    json_decref(b.entries);
    json_decref(b.warnings);
    json_decref(roots);
    pthread_mutex_destroy(&b.err_mu);
    pthread_mutex_destroy(&b.warn_mu);
    return rc;
}

int caris_files_backup_full(struct repo *r, const struct files_backup_opts *o, json_t **summary,
                            struct err *e)
{
    return files_backup(r, o, false, summary, e);
}

int caris_files_backup_incremental(struct repo *r, const struct files_backup_opts *o,
                                   json_t **summary, struct err *e)
{
    return files_backup(r, o, true, summary, e);
}

json_t *caris_backup_list(struct repo *r, const char *kind, struct err *e)
{
    json_t *list = repo_snapshot_list(r, NULL, e);
    if (!list || !kind)
        return list;
    json_t *out = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        const char *k = json_string_value(json_object_get(s, "kind"));
        if (k && strcmp(k, kind) == 0)
            json_array_append(out, s);
    }
    json_decref(list);
    return out;
}

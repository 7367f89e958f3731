/* File restore and verify: one pipeline. Blob loads (read, authenticate, decompress, check
 * the chunk id) run on worker threads; the main thread consumes them in manifest order,
 * writes them (restore) and feeds each file's SHA-256, which must match the manifest before
 * the file is renamed into place. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caris/backup.h"
#include "caris/crypto.h"
#include "caris/jsonx.h"
#include "caris/fsmeta.h"
#include "caris/pipeline.h"
#include "caris/pool.h"
#include "caris/readplan.h"
#include "caris/stream.h"
#include "caris/walwindow.h"
#include "common.h"
#include "inspect_internal.h"
#include "manifest.h"

#define CANCEL_RESTORE_HINT                                                                        \
    "the files restored so far are complete and verified, the others missing: run the restore "    \
    "again (with --overwrite) to finish it"
#define CANCEL_VERIFY_HINT "nothing was changed: run verify again"

/* Chunks of multi-chunk files fetched ahead of the main thread. 16 MiB keeps both cores busy
 * (four chunks of the largest size); 64 MiB took 80 MiB more peak RSS (the chunks and the
 * fragments of the workers' malloc arenas) and was no faster (2 GB tree, restore to tmpfs:
 * 4.4-5.0 s either way). */
#define MAX_INFLIGHT_BYTES (16u << 20)
#define MAX_INFLIGHT_JOBS 4096
/* A restore read through a plan (readplan.h) runs the manifest in batches: at most this many
 * files, or blob uses, per plan (the plan holds ~64 bytes per use, a file ~300 bytes). Files
 * of several chunks stay open from their first chunk to their last: at most plan_max_open
 * of them per batch (below the limit on open descriptors). */
#define PLAN_MAX_FILES 65536
#define PLAN_MAX_USES (1u << 20)
#define PLAN_SYNC_BATCH 2048      /* files committed per syncfs, when descriptors allow */
#define PLAN_HOLD_MAX (64u << 20) /* early chunks a verification holds, all files together */

/* Test knob: CARIS_TEST_PLAN_HOLD_MAX=N holds at most N bytes of early chunks, so that tests
 * reach the verification's second, in-order pass (recheck) without files of 64 MiB. */
static uint64_t plan_hold_max(void)
{
    const char *v = getenv("CARIS_TEST_PLAN_HOLD_MAX");
    return v && *v ? strtoull(v, NULL, 10) : PLAN_HOLD_MAX;
}

/* Hard links of a partial restore (--include) whose first name (the entry holding the
 * content) is outside the selection: the first selected name of each such file takes its
 * content, the other selected names link to it. Sorted by first name. */
struct relink {
    char *first; /* the first name, outside the selection */
    char *name;  /* the selected name that takes the content */
    size_t seq;  /* order in the manifest */
};
struct relinks {
    struct relink *v;
    size_t n;
};

/* A file whose content is not restored: damaged (reported as an error), or not read at backup
 * time (why: the recorded error, a warning). By the name it was to be restored as: its hard
 * links are not made either, and say why (hardlink_make). */
struct lost {
    char *path;
    char *why; /* not read at backup time: the recorded error; damaged: NULL */
};

struct rctx;
struct rfile {
    struct rctx *ctx;
    char *relpath; /* path relative to the target */
    struct fs_meta meta;
    uint8_t (*ids)[32];
    uint32_t *lens;
    size_t nchunks, done_chunks;
    uint64_t *offs; /* logical offset of every chunk */
    uint8_t sha[32];
    struct cx_sha256 *h;
    uint64_t pos;
    struct fsrestore_file *out;
    bool failed;
    json_t *path_json; /* for reports: {"path"} or {"path_b64"} (add_error) */
    /* restores read through a plan: chunks arrive in any order, on any thread */
    bool planned, finished;
    pthread_mutex_t mu; /* guards out, failed, remaining and the hashing below */
    size_t remaining;   /* chunks not arrived yet */
    /* Hashing in order as chunks arrive: chunks 0 .. next_k - 1 are hashed (up to pos). A
     * chunk that comes early: a restore hashes the rest from the written file at the end
     * (readback); a verification holds it (held, within PLAN_HOLD_MAX for all files) or,
     * beyond that, verifies the file again in order after the plan (recheck). */
    size_t next_k;
    bool readback, recheck;
    struct held *held;
};

/* A chunk of a file being verified that arrived before the ones ahead of it. */
struct held {
    size_t k;
    struct buf data;
    struct held *next;
};

/* A hard link met while a plan batch was open: made once its batch ran. */
struct deferred_link {
    char *rel, *link;
    const char *rootp;
    json_t *path_json;
};

struct rctx {
    struct repo *r;
    const struct files_read_opts *o;
    struct pool *pool;       /* files of one chunk, start to finish (small_file_job) */
    struct pool *fetch_pool; /* the chunks of larger files (q) */
    unsigned load_flags;     /* REPO_LOAD_NO_ID_CHECK when restoring (not verifying) */
    struct fsrestore *fr;
    pthread_mutex_t mu;
    struct fetchq *q; /* chunks of files larger than one chunk, in manifest order */
    struct buf data;  /* the chunk being consumed */
    json_t *errors, *warnings;
    uint64_t files, dirs, bytes, bytes_total;
    int64_t start_mono, last_progress;
    struct err fatal; /* a failure that stops everything (not damage) */
    bool stop;
    struct relinks relinks; /* hard links whose first name is outside --include */
    /* a restore read through a plan: the batch's files and deferred hard links */
    struct readplan *plan;
    struct rfile **batch;
    size_t nbatch, cap_batch, batch_open, plan_max_open;
    struct deferred_link *links;
    size_t nlinks, cap_links;
    int plan_threads;
    uint64_t held_bytes; /* atomic: bytes of struct held in all files */
    uint64_t hold_max;   /* PLAN_HOLD_MAX, or the test knob's value */
    /* files not restored (under mu): sorted by path when lost_sorted */
    struct lost *lost;
    size_t nlost, cap_lost;
    bool lost_sorted;
};

/* Workers restore small files themselves: everything they report goes through c->mu. */
static void add_error(json_t *arr, json_t *path, const char *msg);

static void note(struct rctx *c, json_t *arr, json_t *path, const char *msg)
{
    pthread_mutex_lock(&c->mu);
    add_error(arr, path, msg);
    pthread_mutex_unlock(&c->mu);
}

/* A warning for an entry recorded as unreadable at backup time: what ("not restored: the
 * file", "contents not restored: the directory") and the recorded error. */
static void note_unread(struct rctx *c, json_t *path, const char *what, const char *err_msg)
{
    char w[400];
    snprintf(w, sizeof(w), "%s could not be read at backup time (%s)", what, err_msg);
    note(c, c->warnings, path, w);
}

static void lost_add(struct rctx *c, const char *path, const char *why)
{
    pthread_mutex_lock(&c->mu);
    if (c->nlost == c->cap_lost) {
        c->cap_lost = c->cap_lost ? c->cap_lost * 2 : 16;
        c->lost = xrealloc(c->lost, xsize(c->cap_lost, sizeof(*c->lost), 0));
    }
    c->lost[c->nlost++] = (struct lost){.path = xstrdup(path), .why = why ? xstrdup(why) : NULL};
    c->lost_sorted = false;
    pthread_mutex_unlock(&c->mu);
}

static int lost_cmp(const void *a, const void *b)
{
    return strcmp(((const struct lost *)a)->path, ((const struct lost *)b)->path);
}

/* True when the file to be restored as path was not: *why is then the recorded error when it
 * was not read at backup time, NULL when it is damaged. Asked once the file's outcome is
 * known (its jobs drained). */
static bool lost_find(struct rctx *c, const char *path, const char **why)
{
    pthread_mutex_lock(&c->mu);
    if (!c->lost_sorted && c->nlost)
        qsort(c->lost, c->nlost, sizeof(*c->lost), lost_cmp);
    c->lost_sorted = true;
    struct lost key = {.path = (char *)path};
    struct lost *hit = c->nlost ? bsearch(&key, c->lost, c->nlost, sizeof(key), lost_cmp) : NULL;
    if (hit)
        *why = hit->why; /* the string stays (freed with the list) */
    pthread_mutex_unlock(&c->mu);
    return hit != NULL;
}

static void lost_free(struct rctx *c)
{
    for (size_t i = 0; i < c->nlost; i++) {
        free(c->lost[i].path);
        free(c->lost[i].why);
    }
    free(c->lost);
    c->lost = NULL;
    c->nlost = c->cap_lost = 0;
}

/* A file found damaged: reported, and its hard links are not made. */
static void note_damaged(struct rctx *c, struct rfile *f, const char *msg)
{
    note(c, c->errors, f->path_json, msg);
    lost_add(c, f->relpath, NULL);
}

static void note_fatal(struct rctx *c, const struct err *e)
{
    pthread_mutex_lock(&c->mu);
    if (!err_is_set(&c->fatal))
        c->fatal = *e;
    pthread_mutex_unlock(&c->mu);
}

static bool has_fatal(struct rctx *c)
{
    pthread_mutex_lock(&c->mu);
    bool f = err_is_set(&c->fatal);
    pthread_mutex_unlock(&c->mu);
    return f;
}

/* A failure of one file: damage is reported and the restore goes on; anything else stops
 * it. */
static void note_failure(struct rctx *c, struct rfile *f, const struct err *e)
{
    if (e->code == ERR_DAMAGE)
        note_damaged(c, f, e->msg);
    else
        note_fatal(c, e);
}

static void count_done(struct rctx *c, uint64_t bytes)
{
    __atomic_fetch_add(&c->files, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->bytes, bytes, __ATOMIC_RELAXED);
}

/* path: an object holding "path" or "path_b64" (a file's name, manifest_set_bytes), or the
 * value of "path" (a stream's name, null for the backup as a whole). */
static void add_error(json_t *arr, json_t *path, const char *msg)
{
    json_t *o = json_object();
    if (json_is_object(path))
        json_object_update(o, path);
    else
        json_object_set(o, "path", path);
    json_object_set_new(o, "error", json_string(msg));
    json_array_append_new(arr, o);
}

/* add_error with a path given as text */
static void add_error_at(json_t *arr, const char *path, const char *msg)
{
    json_t *p = json_string(path);
    add_error(arr, p, msg);
    json_decref(p);
}

static void held_free(struct rfile *f)
{
    while (f->held) {
        struct held *h = f->held;
        f->held = h->next;
        __atomic_fetch_sub(&f->ctx->held_bytes, (uint64_t)h->data.len, __ATOMIC_RELAXED);
        buf_free(&h->data);
        free(h);
    }
}

static void rfile_free(struct rfile *f)
{
    if (f->out)
        fsrestore_file_abort(f->out);
    if (f->planned)
        pthread_mutex_destroy(&f->mu);
    held_free(f);
    cx_sha256_free(f->h);
    free(f->relpath);
    fs_meta_free(&f->meta);
    free(f->ids);
    free(f->lens);
    free(f->offs);
    json_decref(f->path_json);
    free(f);
}

/* The end of a file's hash (the zeros of a sparse tail) compared with the SHA-256 recorded at
 * backup time; a mismatch fails the file (an error of the read). */
static void file_check_sum(struct rctx *c, struct rfile *f)
{
    if (f->failed)
        return;
    if (f->meta.size > f->pos)
        sha256_zeros(f->h, f->meta.size - f->pos);
    uint8_t sum[32];
    cx_sha256_final(f->h, sum);
    if (memcmp(sum, f->sha, 32) != 0) {
        f->failed = true;
        note_damaged(c, f,
                     "checksum mismatch: restored content does not match the SHA-256 recorded "
                     "at backup time");
    }
}

/* Finishes a file whose last chunk was consumed (or that has none). */
static void file_finish(struct rctx *c, struct rfile *f)
{
    file_check_sum(c, f);
    if (!f->failed && f->out) {
        struct err e = ERR_INIT;
        struct fsrestore_file *out = f->out;
        f->out = NULL; /* commit frees it, whatever happens */
        if (fsrestore_file_commit_meta(out, f->meta.size, &f->meta, &e) != 0) {
            f->failed = true;
            note_failure(c, f, &e);
        }
    }
    if (!f->failed)
        __atomic_fetch_add(&c->files, 1, __ATOMIC_RELAXED);
    rfile_free(f);
}

static void report_progress(struct rctx *c)
{
    const char *phase = c->o->target ? "restore" : "verify";
    /* the workers add to these as they finish files */
    uint64_t files = __atomic_load_n(&c->files, __ATOMIC_RELAXED),
             bytes = __atomic_load_n(&c->bytes, __ATOMIC_RELAXED);
    progress_report(c->o->progress, c->o->ctx, phase, files, bytes, c->bytes_total, c->start_mono);
    caris_op_progress(c->o->op, phase, bytes, c->bytes_total);
}

/* Consumes the oldest chunk in the queue: writes it, hashes it. The chunks of a file are
 * asked for and consumed in order, so the file's count of consumed chunks is this one's
 * number. */
static void consume_one(struct rctx *c)
{
    void *tag;
    struct err le = ERR_INIT;
    int lrc = fetchq_next(c->q, &tag, &c->data, &le);
    struct rfile *f = tag;
    size_t k = f->done_chunks;
    if (!f->failed && lrc != 0) {
        f->failed = true;
        note_failure(c, f, &le);
    }
    if (!f->failed) {
        uint64_t off = f->offs[k];
        if (off > f->pos)
            sha256_zeros(f->h, off - f->pos);
        cx_sha256_update(f->h, c->data.data, c->data.len);
        f->pos = off + c->data.len;
        __atomic_fetch_add(&c->bytes, (uint64_t)c->data.len, __ATOMIC_RELAXED);
        if (c->o->target && !f->out) {
            struct err e = ERR_INIT;
            f->out = fsrestore_file_begin(c->fr, f->relpath, &e);
            if (!f->out) {
                f->failed = true;
                note_fatal(c, &e);
            }
        }
        struct err we = ERR_INIT;
        if (f->out && fsrestore_file_write(f->out, c->data.data, c->data.len, off, &we) != 0) {
            f->failed = true;
            note_fatal(c, &we);
        }
    }
    f->done_chunks++;
    if (f->done_chunks == f->nchunks)
        file_finish(c, f);
    if (c->o->progress || c->o->op) {
        int64_t now = time_mono_ns();
        if (now - c->last_progress > 200000000) {
            c->last_progress = now;
            report_progress(c);
        }
    }
}

static void drain(struct rctx *c)
{
    while (c->q && !fetchq_empty(c->q))
        consume_one(c);
}

/* A file of at most one chunk, start to finish on a worker: fetch, check, create, write,
 * metadata. Most files are this small, so the file-system work of a restore (which is most
 * of it) runs on every core. */
static void small_file_job(void *arg, int worker)
{
    (void)worker;
    struct rfile *f = arg;
    struct rctx *c = f->ctx;
    struct buf data = {0};
    struct err e = ERR_INIT;
    int rc = 0;
    if (caris_op_cancelled(c->o->op)) { /* the main thread reports it */
        rfile_free(f);
        return;
    }
    if (f->nchunks == 1) {
        rc = repo_blob_load_flags(c->r, f->ids[0], &data, c->load_flags, &e);
        if (rc == 0 && data.len != f->lens[0])
            rc = err_set(&e, ERR_DAMAGE, NULL, "chunk has %zu bytes, the manifest says %u",
                         data.len, f->lens[0]);
    }
    if (rc == 0) {
        uint64_t off = f->nchunks ? f->offs[0] : 0;
        sha256_zeros(f->h, off);
        cx_sha256_update(f->h, data.data, data.len);
        if (f->meta.size > off + data.len)
            sha256_zeros(f->h, f->meta.size - off - data.len);
        uint8_t sum[32];
        cx_sha256_final(f->h, sum);
        if (memcmp(sum, f->sha, 32) != 0)
            rc = err_set(&e, ERR_DAMAGE, NULL,
                         "checksum mismatch: restored content does not match the SHA-256 "
                         "recorded at backup time");
        if (rc == 0 && c->o->target) {
            struct fsrestore_file *out = fsrestore_file_begin(c->fr, f->relpath, &e);
            if (!out)
                rc = -1;
            else if (data.len && fsrestore_file_write(out, data.data, data.len, off, &e) != 0) {
                rc = -1;
                fsrestore_file_abort(out);
            } else {
                rc = fsrestore_file_commit_meta(out, f->meta.size, &f->meta, &e);
            }
        }
    }
    if (rc == 0)
        count_done(c, data.len);
    else
        note_failure(c, f, &e);
    buf_free(&data);
    rfile_free(f);
}

/* Waits for everything in flight: the ordered queue and the small files. */
static void drain_all(struct rctx *c)
{
    drain(c);
    pool_wait(c->pool);
}

static void submit(struct rctx *c, struct rfile *f, size_t k)
{
    while (!fetchq_room(c->q, f->lens[k]))
        consume_one(c);
    fetchq_submit(c->q, f->ids[k], f->lens[k], f);
}

/* Logical offsets of the chunks (manifest_chunk_offsets). */
static int chunk_offsets(json_t *ent, struct rfile *f)
{
    f->offs = xcalloc(f->nchunks ? f->nchunks : 1, sizeof(uint64_t));
    return manifest_chunk_offsets(ent, f->lens, f->nchunks, f->meta.size, f->offs);
}

/* Path inside the target for an entry: the root's absolute path without its leading '/',
 * then the entry's path. The root's own entry (".") of a root "/" is the target itself:
 * "." (see is_target_itself). */
static char *target_path(const char *root, const char *path, size_t plen)
{
    while (*root == '/')
        root++;
    bool dot = plen == 1 && path[0] == '.';
    if (!*root)
        return xstrndup(path, plen);
    if (dot)
        return xstrdup(root);
    size_t rlen = strlen(root);
    char *p = xmalloc(rlen + plen + 2);
    memcpy(p, root, rlen);
    p[rlen] = '/';
    memcpy(p + rlen + 1, path, plen);
    p[rlen + 1 + plen] = '\0';
    return p;
}

/* The entry that stands for the restore target itself: the directory "." (the root of a
 * backup of "/"), which fsrestore_mkdir and fsrestore_apply_meta take as the target. Any
 * other entry named "." is refused by fsrestore_check_path. */
static bool is_target_itself(const char *rel, enum fs_type type)
{
    return type == FS_DIR && rel[0] == '.' && rel[1] == '\0';
}

/* Selected: the entry is an include, lies under one, or (directories) above one. */
static bool selected(const struct files_read_opts *o, const char *rel, bool is_dir)
{
    if (!o->nincludes)
        return true;
    size_t rl = strlen(rel);
    for (size_t i = 0; i < o->nincludes; i++) {
        const char *inc = o->includes[i];
        while (*inc == '/')
            inc++;
        size_t il = strlen(inc);
        while (il && inc[il - 1] == '/')
            il--;
        if (rl >= il && strncmp(rel, inc, il) == 0 && (rl == il || rel[il] == '/'))
            return true;
        if (is_dir && il > rl && strncmp(inc, rel, rl) == 0 && inc[rl] == '/')
            return true;
    }
    return false;
}

/* Every --include must name something in the backup: a typo is an error before anything
 * is written, not an empty restore that looks like success. */
static int check_includes(const struct files_read_opts *o, json_t *roots, const struct buf *entries,
                          struct err *e)
{
    if (!o->nincludes)
        return 0;
    bool *hit = xcalloc(o->nincludes, sizeof(bool));
    struct entry_iter it;
    entry_iter_init(&it, entries);
    json_t *ent;
    int more;
    while ((more = entry_iter_next(&it, &ent, e)) == 1) {
        char *path;
        size_t plen;
        const char *rootp = json_string_value(
            json_array_get(roots, (size_t)json_integer_value(json_object_get(ent, "root"))));
        if (!rootp || manifest_get_bytes(ent, "path", &path, &plen) != 0) {
            json_decref(ent);
            continue;
        }
        json_decref(ent);
        char *rel = target_path(rootp, path, plen);
        free(path);
        if (!rel)
            continue;
        struct files_read_opts one = *o;
        for (size_t k = 0; k < o->nincludes; k++) {
            one.includes = &o->includes[k];
            one.nincludes = 1;
            if (!hit[k] && selected(&one, rel, false))
                hit[k] = true;
        }
        free(rel);
    }
    int rc = more < 0 ? -1 : 0;
    for (size_t k = 0; k < o->nincludes && rc == 0; k++)
        if (!hit[k]) {
            char esc[600];
            str_escape(o->includes[k], strlen(o->includes[k]), esc, sizeof(esc));
            rc = err_set(e, ERR_NOT_FOUND,
                         "give the path as `caris-backup ls ID` shows it (relative to a root) or "
                         "the absolute path as it was backed up (a byte ls shows as \\xNN is "
                         "that byte: in bash, $'\\xNN')",
                         "--include %s: no such path in the backup", esc);
        }
    free(hit);
    return rc;
}

static int relink_cmp(const void *a, const void *b)
{
    const struct relink *x = a, *y = b;
    int c = strcmp(x->first, y->first);
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

static int relink_first_cmp(const void *a, const void *b)
{
    return strcmp(((const struct relink *)a)->first, ((const struct relink *)b)->first);
}

static const char *relink_find(const struct relinks *rl, const char *first)
{
    struct relink key = {.first = (char *)first};
    struct relink *hit = rl->n ? bsearch(&key, rl->v, rl->n, sizeof(key), relink_first_cmp) : NULL;
    return hit ? hit->name : NULL;
}

static void relinks_free(struct relinks *rl)
{
    for (size_t i = 0; i < rl->n; i++) {
        free(rl->v[i].first);
        free(rl->v[i].name);
    }
    free(rl->v);
    memset(rl, 0, sizeof(*rl));
}

static int relinks_build(const struct files_read_opts *o, json_t *roots, const struct buf *entries,
                         struct relinks *rl, struct err *e)
{
    if (!o->nincludes || !o->target)
        return 0;
    int nroots = (int)json_array_size(roots);
    size_t cap = 0;
    struct entry_iter it;
    entry_iter_init(&it, entries);
    json_t *ent;
    int more;
    while ((more = entry_iter_next(&it, &ent, e)) == 1) {
        int root;
        char *path;
        size_t plen;
        struct fs_meta m;
        struct err de = ERR_INIT; /* the restore loop reports a bad entry */
        if (manifest_entry_decode(ent, nroots, &root, &path, &plen, &m, &de) != 0) {
            json_decref(ent);
            continue;
        }
        json_decref(ent);
        const char *rootp = json_string_value(json_array_get(roots, (size_t)root));
        char *rel = NULL, *to = NULL;
        if (m.type == FS_HARDLINK && rootp && m.link) {
            rel = target_path(rootp, path, plen);
            to = target_path(rootp, m.link, strlen(m.link));
        }
        free(path);
        fs_meta_free(&m);
        if (rel && to && selected(o, rel, false) && !selected(o, to, false)) {
            if (rl->n == cap) {
                cap = cap ? cap * 2 : 16;
                rl->v = xrealloc(rl->v, cap * sizeof(*rl->v));
            }
            rl->v[rl->n] = (struct relink){.first = to, .name = rel, .seq = rl->n};
            rl->n++;
        } else {
            free(rel);
            free(to);
        }
    }
    if (rl->n) {
        /* one per first name: the one met first in the manifest */
        qsort(rl->v, rl->n, sizeof(*rl->v), relink_cmp);
        size_t k = 0;
        for (size_t i = 0; i < rl->n; i++) {
            if (k && strcmp(rl->v[k - 1].first, rl->v[i].first) == 0) {
                free(rl->v[i].first);
                free(rl->v[i].name);
            } else {
                rl->v[k++] = rl->v[i];
            }
        }
        rl->n = k;
    }
    return more < 0 ? -1 : 0;
}

/* A hard link whose file was not restored (lost_find: why) is not made either: a warning
 * when its content was not read at backup time, damage when it is damaged. link: the first
 * name, as the manifest gives it. */
static int hardlink_lost(struct rctx *c, json_t *pathj, const char *link, const char *why,
                         struct err *fe)
{
    char el[600];
    str_escape(link, strlen(link), el, sizeof(el));
    if (!why)
        return err_set(fe, ERR_DAMAGE, NULL,
                       "not restored: a hard link of %s, whose content is damaged in the backup",
                       el);
    char w[1200];
    snprintf(w, sizeof(w),
             "not restored: a hard link of %s, whose content could not be read at backup time "
             "(%s)",
             el, why);
    note(c, c->warnings, pathj, w);
    return 0;
}

/* Makes the hard link rel -> link (paths as the manifest gives them, below rootp) once the
 * file it names is in place (or its outcome known: a file not restored gets no links). */
static int hardlink_make(struct rctx *c, const char *rootp, const char *rel, const char *link,
                         json_t *pathj, struct err *fe)
{
    int frc;
    const char *why;
    char *to = target_path(rootp, link, strlen(link));
    if (!to || fsrestore_check_path(to, strlen(to), fe) != 0)
        frc = err_set(fe, ERR_DAMAGE, NULL, "invalid hard link target");
    else if (!selected(c->o, to, false)) {
        /* its first name is not being restored: the first selected name holds the content
         * (relinks_build), the others link to it */
        const char *holder = relink_find(&c->relinks, to);
        if (holder && lost_find(c, holder, &why))
            frc = hardlink_lost(c, pathj, link, why, fe);
        else
            frc =
                holder && strcmp(holder, rel) != 0 ? fsrestore_hardlink(c->fr, rel, holder, fe) : 0;
    } else if (lost_find(c, to, &why))
        frc = hardlink_lost(c, pathj, link, why, fe);
    else
        frc = fsrestore_hardlink(c->fr, rel, to, fe);
    free(to);
    return frc;
}

/* ---- restores read through a plan (remote repositories) ------------------------------
 * The manifest is read in batches. A batch's regular files are created when their first
 * chunk arrives, written at each chunk's offset as chunks arrive (in pack order, from
 * several threads), and, once the last one arrived, read back and hashed: only a file whose
 * SHA-256 is the manifest's is committed (named); the others are removed. Hard links of the
 * batch are made after its files. */

static void plan_start(struct rctx *c)
{
    c->plan = readplan_new(c->r);
    c->plan_threads = readplan_threads(c->r, c->o->threads);
    /* two descriptors per open file (the file and its directory), and the batch of files
     * fsrestore keeps open until it syncs them */
    struct rlimit rl;
    rlim_t lim = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < 65536) {
            rlim_t want = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
            struct rlimit nl = {want, rl.rlim_max};
            if (setrlimit(RLIMIT_NOFILE, &nl) == 0)
                rl.rlim_cur = want;
        }
        lim = rl.rlim_cur;
    }
    /* Files being written and files committed but waiting for their batch's syncfs each
     * hold two descriptors: with room for it, larger syncfs batches (each syncfs flushes
     * the whole file system, which costs most when others write to it too). */
    if (lim >= 16384) {
        c->plan_max_open = 2048;
        if (c->fr)
            fsrestore_set_batch(c->fr, PLAN_SYNC_BATCH);
    } else {
        c->plan_max_open = lim >= 4096 ? 512 : 64;
    }
}

/* Hashes chunk next_k (at off) into the file's hash. Under f->mu. */
static void plan_hash_chunk(struct rfile *f, uint64_t off, const uint8_t *data, size_t len)
{
    if (off > f->pos)
        sha256_zeros(f->h, off - f->pos);
    cx_sha256_update(f->h, data, len);
    f->pos = off + len;
    f->next_k++;
}

/* Number of the chunk at logical offset off (offsets increase with the number). */
static size_t plan_chunk_index(const struct rfile *f, uint64_t off)
{
    size_t lo = 0, hi = f->nchunks;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (f->offs[mid] <= off)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* The chunk at off arrived: hashed now if it is the next one (then the held ones that
 * follow it), else kept aside as an early chunk. Under f->mu. */
static void plan_hash(struct rctx *c, struct rfile *f, uint64_t off, const uint8_t *data,
                      size_t len)
{
    if (f->failed || f->readback || f->recheck)
        return;
    size_t k = plan_chunk_index(f, off);
    if (k == f->next_k) {
        plan_hash_chunk(f, off, data, len);
        for (struct held **hp = &f->held; *hp;) {
            struct held *h = *hp;
            if (h->k != f->next_k) {
                hp = &h->next;
                continue;
            }
            plan_hash_chunk(f, f->offs[h->k], h->data.data, h->data.len);
            *hp = h->next;
            __atomic_fetch_sub(&c->held_bytes, (uint64_t)h->data.len, __ATOMIC_RELAXED);
            buf_free(&h->data);
            free(h);
            hp = &f->held; /* the one after it may be anywhere in the list */
        }
        return;
    }
    if (c->o->target) { /* written: hashed from the file at the end */
        f->readback = true;
        return;
    }
    if (__atomic_add_fetch(&c->held_bytes, (uint64_t)len, __ATOMIC_RELAXED) > c->hold_max) {
        __atomic_fetch_sub(&c->held_bytes, (uint64_t)len, __ATOMIC_RELAXED);
        f->recheck = true;
        held_free(f);
        return;
    }
    struct held *h = xcalloc(1, sizeof(*h));
    h->k = k;
    buf_append(&h->data, data, len);
    h->next = f->held;
    f->held = h;
}

static void plan_file_finish(struct rctx *c, struct rfile *f)
{
    struct err e = ERR_INIT;
    if (f->recheck && !f->failed) { /* verified again, in order, after the plan */
        f->finished = true;
        return;
    }
    if (!f->failed && f->readback) {
        /* the rest of the file as written, from where the hash stopped; holes (never
         * written) read as zeros */
        uint8_t *b = xmalloc(1u << 20);
        uint64_t pos = f->pos;
        while (pos < f->meta.size) {
            size_t want = f->meta.size - pos < (1u << 20) ? (size_t)(f->meta.size - pos) : 1u << 20;
            ssize_t n = fsrestore_file_read(f->out, b, want, pos, &e);
            if (n < 0) {
                f->failed = true;
                note_failure(c, f, &e);
                break;
            }
            if (n == 0)
                break;
            cx_sha256_update(f->h, b, (size_t)n);
            pos += (uint64_t)n;
        }
        free(b);
        f->pos = pos;
    }
    file_check_sum(c, f);
    if (!f->failed && f->out) {
        struct fsrestore_file *out = f->out;
        f->out = NULL; /* commit frees it, whatever happens */
        if (fsrestore_file_commit_meta(out, f->meta.size, &f->meta, &e) != 0) {
            f->failed = true;
            note_failure(c, f, &e);
        }
    }
    if (f->out) { /* failed: its temporary file goes now */
        fsrestore_file_abort(f->out);
        f->out = NULL;
    }
    if (!f->failed)
        __atomic_fetch_add(&c->files, 1, __ATOMIC_RELAXED);
    f->finished = true;
}

static int plan_use(void *ctx, void *tag, uint64_t off, const uint8_t *data, size_t len,
                    struct err *e)
{
    struct rctx *c = ctx;
    struct rfile *f = tag;
    int rc = 0;
    pthread_mutex_lock(&f->mu);
    if (c->fr && !f->failed && !f->out) {
        f->out = fsrestore_file_begin(c->fr, f->relpath, e);
        if (!f->out) {
            f->failed = true;
            rc = -1;
        }
    }
    if (f->out && !f->failed && fsrestore_file_write(f->out, data, len, off, e) != 0) {
        f->failed = true;
        rc = -1;
    }
    if (rc != 0 && e->code == ERR_DAMAGE) { /* an invalid path: this file only */
        note_damaged(c, f, e->msg);
        rc = 0;
    }
    plan_hash(c, f, off, data, len);
    bool last = --f->remaining == 0;
    pthread_mutex_unlock(&f->mu);
    __atomic_fetch_add(&c->bytes, (uint64_t)len, __ATOMIC_RELAXED);
    if (last)
        plan_file_finish(c, f);
    return rc;
}

static void plan_damaged(void *ctx, void *tag, uint64_t off, const struct err *e)
{
    (void)off;
    struct rctx *c = ctx;
    struct rfile *f = tag;
    pthread_mutex_lock(&f->mu);
    if (!f->failed) {
        f->failed = true;
        note_damaged(c, f, e->msg);
    }
    bool last = --f->remaining == 0;
    pthread_mutex_unlock(&f->mu);
    if (last)
        plan_file_finish(c, f);
}

static void plan_tick(void *ctx)
{
    struct rctx *c = ctx;
    if (c->o->progress || c->o->op) {
        int64_t now = time_mono_ns();
        if (now - c->last_progress > 200000000) {
            c->last_progress = now;
            report_progress(c);
        }
    }
}

/* Drops the batch without running it: files not finished lose their temporary files. */
static void plan_discard(struct rctx *c)
{
    for (size_t i = 0; i < c->nbatch; i++)
        rfile_free(c->batch[i]);
    free(c->batch);
    c->batch = NULL;
    c->nbatch = c->cap_batch = c->batch_open = 0;
    for (size_t i = 0; i < c->nlinks; i++) {
        free(c->links[i].rel);
        free(c->links[i].link);
        json_decref(c->links[i].path_json);
    }
    free(c->links);
    c->links = NULL;
    c->nlinks = c->cap_links = 0;
}

/* Runs the batch: its files, then its hard links. */
static int plan_flush(struct rctx *c, struct err *e)
{
    static const struct readplan_ops ops = {
        .use = plan_use, .damaged = plan_damaged, .tick = plan_tick};
    int rc = 0;
    if (readplan_uses(c->plan))
        rc = readplan_run(c->plan, c->plan_threads, c->load_flags, &ops, c, c->o->op, e);
    if (rc != 0 && caris_op_cancelled(c->o->op))
        caris_op_check(c->o->op, c->o->target ? CANCEL_RESTORE_HINT : CANCEL_VERIFY_HINT, e);
    /* Files a verification could not hash as their chunks came (too many came early) are
     * verified again, in order; files the plan did not finish (it stopped) are removed with
     * the batch. */
    for (size_t i = 0; i < c->nbatch; i++) {
        struct rfile *f = c->batch[i];
        if (rc == 0 && f->finished && f->recheck && !f->failed && f->ids) {
            uint64_t counted = 0;
            for (size_t k = 0; k < f->nchunks; k++)
                counted += f->lens[k];
            __atomic_fetch_sub(&c->bytes, counted, __ATOMIC_RELAXED);
            cx_sha256_free(f->h);
            f->h = cx_sha256_new();
            f->pos = 0;
            f->done_chunks = 0;
            for (size_t k = 0; k < f->nchunks; k++)
                submit(c, f, k); /* consume_one finishes and frees it */
            continue;
        }
        rfile_free(f);
    }
    /* the batch's files, and empty ones (small_file_job): done before their links */
    drain_all(c);
    c->nbatch = c->batch_open = 0;
    for (size_t i = 0; i < c->nlinks && rc == 0 && !has_fatal(c); i++) {
        struct deferred_link *l = &c->links[i];
        struct err fe = ERR_INIT;
        if (hardlink_make(c, l->rootp, l->rel, l->link, l->path_json, &fe) != 0) {
            if (fe.code == ERR_DAMAGE)
                note(c, c->errors, l->path_json, fe.msg);
            else
                note_fatal(c, &fe);
        }
    }
    for (size_t i = 0; i < c->nlinks; i++) {
        free(c->links[i].rel);
        free(c->links[i].link);
        json_decref(c->links[i].path_json);
    }
    c->nlinks = 0;
    return rc;
}

static void plan_defer_link(struct rctx *c, const char *rootp, char *rel, const char *link,
                            json_t *pathj)
{
    if (c->nlinks == c->cap_links) {
        c->cap_links = c->cap_links ? c->cap_links * 2 : 16;
        c->links = xrealloc(c->links, xsize(c->cap_links, sizeof(*c->links), 0));
    }
    c->links[c->nlinks++] = (struct deferred_link){
        .rel = rel, .link = xstrdup(link), .rootp = rootp, .path_json = json_incref(pathj)};
}

/* A regular file with chunks into the batch (which runs first when it is full). */
static int plan_add_file(struct rctx *c, struct rfile *f, struct err *e)
{
    bool open_long = c->fr && f->nchunks > 1;
    if (c->nbatch >= PLAN_MAX_FILES ||
        (readplan_uses(c->plan) && readplan_uses(c->plan) + f->nchunks > PLAN_MAX_USES) ||
        (open_long && c->batch_open >= c->plan_max_open)) {
        if (plan_flush(c, e) != 0) {
            rfile_free(f);
            return -1;
        }
    }
    f->planned = true;
    pthread_mutex_init(&f->mu, NULL);
    f->remaining = f->nchunks;
    if (c->nbatch == c->cap_batch) {
        c->cap_batch = c->cap_batch ? c->cap_batch * 2 : 256;
        c->batch = xrealloc(c->batch, xsize(c->cap_batch, sizeof(*c->batch), 0));
    }
    c->batch[c->nbatch++] = f;
    c->batch_open += open_long;
    for (size_t k = 0; k < f->nchunks; k++)
        readplan_add(c->plan, f->ids[k], f->lens[k], f, f->offs[k]);
    if (c->o->target) { /* the plan has them (a verification may need them again) */
        free(f->ids);
        f->ids = NULL;
    }
    return 0;
}

int files_read_backup(struct repo *r, json_t *summary, const struct buf *entries,
                      const struct files_read_opts *o, struct caris_read_report *out, struct err *e)
{
    json_t *ent = NULL;
    struct rctx c = {.r = r,
                     .o = o,
                     .start_mono = time_mono_ns(),
                     .load_flags = o->target ? REPO_LOAD_NO_ID_CHECK : 0,
                     .hold_max = plan_hold_max()};
    c.errors = json_array();
    c.warnings = json_array();
    pthread_mutex_init(&c.mu, NULL);
    int rc = -1;
    json_t *roots = json_object_get(summary, "roots");
    int nroots = (int)json_array_size(roots);
    if (nroots == 0) {
        err_set(e, ERR_DAMAGE, NULL, "backup manifest has no roots");
        goto out;
    }
    if (check_includes(o, roots, entries, e) != 0)
        goto out;
    if (relinks_build(o, roots, entries, &c.relinks, e) != 0)
        goto out;
    json_t *bt = json_object_get(summary, "stats");
    c.bytes_total = (uint64_t)json_integer_value(json_object_get(bt, "bytes_total"));
    if (o->target) {
        c.fr = fsrestore_open(o->target, o->overwrite, e);
        if (!c.fr)
            goto out;
        fsrestore_set_batch(c.fr, 256);
    }
    int nthreads = o->threads > 0 ? o->threads : sys_ncpu();
    c.pool = pool_new(nthreads, MAX_INFLIGHT_JOBS);
    /* The chunks of larger files load on workers of their own (as many again). Queued
     * behind the small files' jobs, each would wait for the whole backlog of small files
     * before it; the main thread, which takes them in order, would wait with it, and then
     * the workers for the main thread (the 2 GB bench tree: 3.4-3.9 s instead of 4.0-4.5 s). */
    c.fetch_pool = pool_new(nthreads, MAX_INFLIGHT_JOBS);
    c.q = fetchq_new(r, c.fetch_pool, c.load_flags, MAX_INFLIGHT_JOBS, MAX_INFLIGHT_BYTES);
    if (readplan_preferred(r))
        plan_start(&c);
    struct entry_iter it;
    entry_iter_init(&it, entries);
    int more;
    while ((more = entry_iter_next(&it, &ent, e)) == 1) {
        size_t i = it.index - 1;
        if (caris_op_check(o->op, o->target ? CANCEL_RESTORE_HINT : CANCEL_VERIFY_HINT, e) != 0)
            goto out;
        if (has_fatal(&c)) {
            json_decref(ent);
            ent = NULL;
            break;
        }
        int root;
        char *path;
        size_t plen;
        struct fs_meta m;
        if (manifest_entry_decode(ent, nroots, &root, &path, &plen, &m, e) != 0) {
            err_wrap(e, "entry %zu", i);
            goto out;
        }
        const char *rootp = json_string_value(json_array_get(roots, (size_t)root));
        char *rel = rootp ? target_path(rootp, path, plen) : NULL;
        /* {"path": ...} or, for a name that is not UTF-8, {"path_b64": ...}: the key says
         * which, so a report never shows base64 as if it were the name */
        json_t *pathj = json_object();
        manifest_set_bytes(pathj, "path", path, plen);
        free(path);
        if (!rel || (o->target && !is_target_itself(rel, m.type) &&
                     fsrestore_check_path(rel, strlen(rel), e) != 0)) {
            if (!rel)
                err_set(e, ERR_DAMAGE, NULL, "manifest entry %zu has an invalid path", i);
            err_wrap(e, "refusing to restore");
            free(rel);
            fs_meta_free(&m);
            json_decref(pathj);
            goto out;
        }
        const char *as = m.type == FS_REG ? relink_find(&c.relinks, rel) : NULL;
        if (as && !selected(o, rel, false)) { /* restored under a selected name of its own */
            free(rel);
            rel = xstrdup(as);
        } else if (!selected(o, rel, m.type == FS_DIR)) {
            free(rel);
            fs_meta_free(&m);
            json_decref(pathj);
            json_decref(ent);
            ent = NULL;
            continue;
        }
        if (o->no_xattrs) {
            for (size_t x = 0; x < m.nxattrs; x++) {
                free(m.xattrs[x].name);
                free(m.xattrs[x].value);
            }
            free(m.xattrs);
            m.xattrs = NULL;
            m.nxattrs = 0;
        }
        if (o->no_owner) {
            /* Set-user-id and set-group-id go with the owner they were set for: kept on a file
             * now owned by whoever restores (root), a user's own setuid program became a
             * setuid-root one (GNU tar keeps them: not a rule to copy). */
            if (m.uid != (uint32_t)geteuid())
                m.mode &= ~(uint32_t)S_ISUID;
            if (m.gid != (uint32_t)getegid())
                m.mode &= ~(uint32_t)S_ISGID;
            m.uid = (uint32_t)geteuid();
            m.gid = (uint32_t)getegid();
        }
        struct err fe = ERR_INIT;
        int frc = 0;
        const char *err_msg = json_string_value(json_object_get(ent, "error"));
        switch (m.type) {
        case FS_DIR:
            c.dirs++;
            if (c.fr)
                frc = fsrestore_mkdir(c.fr, rel, &fe) || fsrestore_apply_meta(c.fr, rel, &m, &fe);
            if (err_msg && json_is_true(json_object_get(ent, "partial"))) {
                /* listed at backup time, but entries of it not read: those are not here */
                char w[400];
                snprintf(w, sizeof(w), "contents restored in part: at backup time, %s", err_msg);
                note(&c, c.warnings, pathj, w);
            } else if (err_msg) { /* the directory is there, what was in it is not */
                note_unread(&c, pathj, "contents not restored: the directory", err_msg);
            }
            break;
        case FS_SYMLINK:
            if (c.fr) {
                frc = fsrestore_symlink(c.fr, rel, m.link, &fe) ||
                      fsrestore_apply_meta(c.fr, rel, &m, &fe);
            }
            break;
        case FS_FIFO:
            if (c.fr) {
                frc = fsrestore_fifo(c.fr, rel, &fe) || fsrestore_apply_meta(c.fr, rel, &m, &fe);
            }
            break;
        case FS_HARDLINK:
            if (c.plan && c.fr) { /* after the files of its batch */
                plan_defer_link(&c, rootp, rel, m.link, pathj);
                rel = NULL;
            } else if (c.fr) {
                drain_all(&c);      /* the file it names must be in place, or known lost */
                if (!has_fatal(&c)) /* else that failure is the one reported */
                    frc = hardlink_make(&c, rootp, rel, m.link, pathj, &fe);
            }
            break;
        case FS_REG: {
            if (err_msg) {
                note_unread(&c, pathj, "not restored: the file", err_msg);
                lost_add(&c, rel, err_msg); /* its hard links are not made either */
                break;
            }
            struct rfile *f = xcalloc(1, sizeof(*f));
            f->ctx = &c;
            f->relpath = rel;
            rel = NULL;
            f->meta = m;
            memset(&m, 0, sizeof(m));
            /* a copy of its own: a worker frees the file, and jansson's json_decref reads the
             * count without an atomic before it decrements it atomically */
            f->path_json = json_deep_copy(pathj);
            if (!f->path_json)
                xoom(sizeof(json_t));
            f->h = cx_sha256_new();
            const char *sha = json_string_value(json_object_get(ent, "sha256"));
            if (!sha || cx_unhex(sha, f->sha, 32) != 0 ||
                chunklist_decode(json_object_get(ent, "chunks"), &f->ids, &f->lens, &f->nchunks) ||
                chunk_offsets(ent, f) != 0) {
                note_damaged(&c, f, "malformed manifest entry (chunks, extents or sha256)");
                rfile_free(f);
                break;
            }
            if (c.plan && f->nchunks) {
                if (plan_add_file(&c, f, e) != 0)
                    goto out;
                break;
            }
            if (f->nchunks <= 1) {
                pool_submit(c.pool, small_file_job, f);
                break;
            }
            for (size_t k = 0; k < f->nchunks; k++) {
                if (caris_op_cancelled(o->op)) {
                    /* The chunks asked for are consumed as usual; the file then ends there,
                     * failed: its temporary file is removed. */
                    f->failed = true;
                    f->nchunks = k;
                    if (k == 0)
                        rfile_free(f);
                    break;
                }
                submit(&c, f, k);
            }
            break;
        }
        }
        if (frc != 0) {
            if (fe.code == ERR_DAMAGE) {
                note(&c, c.errors, pathj, fe.msg);
            } else {
                /* a failure before it (a worker's) stays the one reported */
                note_fatal(&c, &fe);
                pthread_mutex_lock(&c.mu);
                *e = c.fatal;
                pthread_mutex_unlock(&c.mu);
                free(rel);
                fs_meta_free(&m);
                json_decref(pathj);
                goto out;
            }
        }
        free(rel);
        fs_meta_free(&m);
        json_decref(pathj);
        json_decref(ent);
        ent = NULL;
    }
    if (more < 0)
        goto out;
    if (c.plan && plan_flush(&c, e) != 0)
        goto out;
    drain_all(&c);
    /* small files skipped by their jobs after a cancel: not an error of theirs */
    if (caris_op_check(o->op, o->target ? CANCEL_RESTORE_HINT : CANCEL_VERIFY_HINT, e) != 0)
        goto out;
    if (err_is_set(&c.fatal)) {
        *e = c.fatal;
        goto out;
    }
    if (c.fr) {
        struct fsrestore *fr = c.fr;
        c.fr = NULL;
        if (fsrestore_finish(fr, e) != 0)
            goto out;
    }
    report_progress(&c);
    rc = 0;
    if (json_array_size(c.errors))
        rc = err_set(e, ERR_DAMAGE,
                     "the backup is damaged (each file's error says how: a checksum mismatch, "
                     "a missing or altered chunk): DO NOT trust the affected files; restore "
                     "them from a different backup and run `caris-backup check --read-data`",
                     "%zu file(s) failed verification", json_array_size(c.errors));
out:
    json_decref(ent);
    if (c.pool)
        drain_all(&c);
    plan_discard(&c);
    readplan_free(c.plan);
    fetchq_free(c.q);
    if (c.fetch_pool)
        pool_free(c.fetch_pool);
    if (c.pool)
        pool_free(c.pool);
    buf_free(&c.data);
    if (c.fr) {
        /* a stop (a cancel, a failure) drops the files still waiting for their batch's sync:
         * they are not in the target, so they are not counted as restored */
        size_t dropped = fsrestore_uncommitted(c.fr);
        c.files -= dropped < c.files ? dropped : c.files;
        fsrestore_free(c.fr);
    }
    out->files = c.files;
    out->dirs = c.dirs;
    out->bytes = c.bytes;
    out->errors = c.errors;
    out->warnings = c.warnings;
    pthread_mutex_destroy(&c.mu);
    relinks_free(&c.relinks);
    lost_free(&c);
    return rc;
}

/* The summary and the entries' text of a file backup. */
static int load_files_backup(struct repo *r, const char *id, json_t **summary, struct buf *entries,
                             struct err *e)
{
    char name[65];
    if (repo_snapshot_find(r, id, name, summary, e) != 0)
        return -1;
    const char *kind = json_string_value(json_object_get(*summary, "kind"));
    if (!kind || strcmp(kind, "files") != 0) {
        json_decref(*summary);
        return err_set(e, ERR_USAGE, "use `caris-backup restore database` for database backups",
                       "backup %s is not a file backup", id);
    }
    if (repo_snapshot_load_entries_text(r, name, entries, e) != 0) {
        json_decref(*summary);
        return -1;
    }
    return 0;
}

static int files_restore_locked(struct repo *r, const struct files_restore_opts *o,
                                struct caris_files_restore_result *res, struct err *e)
{
    json_t *summary;
    struct buf entries = {0};
    if (!o->target)
        return err_set(e, ERR_USAGE, "give --target DIR", "no restore target given");
    if (restore_target_outside_repo(r, o->target, "restore target", e) != 0)
        return -1;
    if (load_files_backup(r, o->backup_id, &summary, &entries, e) != 0) {
        buf_free(&entries);
        return -1;
    }
    /* --include as `ls` shows paths (relative to a root) or as they were backed up: a view
     * of the loaded backup for the inspect services' resolver (borrows summary and entries). */
    struct loaded view = {.summary = summary, .files = true, .text = entries};
    snprintf(view.id, sizeof(view.id), "%s", o->backup_id);
    char **inc = NULL;
    int rc = inspect_loaded_roots(&view, e);
    if (rc == 0 && o->nincludes)
        rc = inspect_resolve_paths(&view, o->includes, o->nincludes, &inc, e);
    free(view.roots);
    if (rc == 0) {
        /* where the restore writes: the selected paths, else each root, below the target */
        json_t *roots = json_object_get(summary, "roots");
        size_t nd = inc ? o->nincludes : json_array_size(roots);
        const char **dests = xcalloc(nd ? nd : 1, sizeof(*dests));
        for (size_t i = 0; i < nd; i++)
            dests[i] = inc ? inc[i] : json_string_value(json_array_get(roots, i));
        struct keep_path keep[] = {{"BACKUP_DIR", o->backup_dir, true},
                                   {"the env file", o->env_file, true}};
        rc = restore_dests_keep(r, o->target, dests, nd, keep, 2, e);
        free(dests);
    }
    if (rc != 0) {
        json_decref(summary);
        buf_free(&entries);
        for (size_t i = 0; inc && i < o->nincludes; i++)
            free(inc[i]);
        free(inc);
        return -1;
    }
    struct files_read_opts ro = {.target = o->target,
                                 .overwrite = o->overwrite,
                                 .no_xattrs = o->no_xattrs,
                                 .no_owner = o->no_owner,
                                 .includes = (const char *const *)inc,
                                 .nincludes = o->nincludes,
                                 .threads = o->threads,
                                 .progress = o->progress,
                                 .ctx = o->ctx,
                                 .op = o->op};
    res->ran = true;
    rc = files_read_backup(r, summary, &entries, &ro, &res->read, e);
    json_decref(summary);
    buf_free(&entries);
    for (size_t i = 0; inc && i < o->nincludes; i++)
        free(inc[i]);
    free(inc);
    if (rc == 0 && json_array_size(res->read.warnings))
        return CARIS_DONE_WARNINGS;
    return rc;
}

int caris_restore_files(struct repo *r, const struct files_restore_opts *o,
                        struct caris_files_restore_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    res->backup_id = xstrdup(o->backup_id ? o->backup_id : "");
    res->target = xstrdup(o->target ? o->target : "");
    if (repo_lock(r, false, "restore files", e) != 0)
        return -1;
    int rc = files_restore_locked(r, o, res, e);
    res->ok = rc >= 0;
    /* a chunk that failed to open is recorded (under the lock): the next backup stores it
     * again */
    caris_bad_blobs_record(r, "restore", o->op);
    repo_unlock(r);
    return rc;
}

static void read_report_free(struct caris_read_report *rr)
{
    json_decref(rr->errors);
    json_decref(rr->warnings);
    memset(rr, 0, sizeof(*rr));
}

/* The counts and findings into o; warnings and dirs only for file backups. */
static void read_report_json(const struct caris_read_report *rr, bool files_backup, json_t *o)
{
    json_object_set_new(o, "files", json_integer((json_int_t)rr->files));
    json_object_set_new(o, "bytes", json_integer((json_int_t)rr->bytes));
    json_object_set_new(o, "errors", rr->errors ? json_incref(rr->errors) : json_array());
    if (rr->wal) {
        json_object_set_new(o, "walFiles", json_integer((json_int_t)rr->wal_files));
        json_object_set_new(o, "walBytes", json_integer((json_int_t)rr->wal_bytes));
    }
    if (files_backup) {
        json_object_set_new(o, "dirs", json_integer((json_int_t)rr->dirs));
        json_object_set_new(o, "warnings", rr->warnings ? json_incref(rr->warnings) : json_array());
    }
}

void caris_files_restore_result_free(struct caris_files_restore_result *res)
{
    free(res->backup_id);
    free(res->target);
    read_report_free(&res->read);
    memset(res, 0, sizeof(*res));
}

json_t *caris_files_restore_result_to_json(const struct caris_files_restore_result *res)
{
    if (!res->ran)
        return NULL;
    json_t *o = json_pack("{s:s, s:o, s:b}", "backupId", res->backup_id, "target",
                          jsonx_text(res->target), "ok", res->ok);
    read_report_json(&res->read, true, o);
    return o;
}

/* The stream obj describes ("chunks", "sha256": a stream entry, a WAL record) read into fd,
 * every chunk authenticated, its SHA-256 compared; what: obj's kind, for a malformed one. */
static void read_back(struct repo *r, json_t *obj, const char *what, int fd,
                      const struct verify_opts *o, struct err *se)
{
    const char *sha_hex = json_string_value(json_object_get(obj, "sha256"));
    uint8_t sha[32];
    if (!sha_hex || cx_unhex(sha_hex, sha, 32) != 0)
        err_set(se, ERR_DAMAGE, NULL, "malformed %s (sha256)", what);
    else
        stream_restore_fd(r, json_object_get(obj, "chunks"), sha, fd, o ? o->threads : 0, NULL,
                          NULL, o ? o->op : NULL, se);
}

/* Backups whose entries are byte streams (database dumps, ...): every stream is read back,
 * every chunk authenticated, every stream's SHA-256 compared. */
static int verify_streams(struct repo *r, json_t *entries, const struct verify_opts *o,
                          struct caris_read_report *out, struct err *e)
{
    json_t *errors = json_array();
    uint64_t bytes = 0, files = 0;
    size_t i;
    json_t *ent;
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        json_decref(errors);
        return err_sys(e, errno, NULL, "cannot open /dev/null");
    }
    json_array_foreach(entries, i, ent)
    {
        json_t *name = json_object_get(ent, "name");
        struct err se = ERR_INIT;
        read_back(r, ent, "entry", fd, o, &se);
        if (err_is_set(&se) && se.code != ERR_DAMAGE) {
            close(fd);
            json_decref(errors);
            *e = se;
            return -1;
        }
        if (err_is_set(&se))
            add_error(errors, name ? name : json_null(), se.msg);
        else
            files++;
        bytes += (uint64_t)json_integer_value(json_object_get(ent, "size"));
    }
    close(fd);
    out->files = files;
    out->bytes = bytes;
    out->errors = errors;
    if (json_array_size(errors))
        return err_set(e, ERR_DAMAGE,
                       "checksum mismatch: the backup is corrupted, DO NOT restore from it; use a "
                       "different backup and run `caris-backup check --read-data`",
                       "%zu stream(s) failed verification", json_array_size(errors));
    return 0;
}

/* A physical backup's WAL, what recovery reads to make it consistent (caris_wal_base_records,
 * served_only): every record read back, every chunk authenticated, its SHA-256 compared; a
 * segment of its range that the archive does not hold is an error too. Before 2026-12-07
 * verify read the base backup's files alone, and called valid a backup that could not be
 * restored (its WAL damaged or gone); so did copy's read-back in the destination. Errors go to
 * out->errors; 0 when none, -1 with e (ERR_DAMAGE when some were found; another code when the
 * archive could not be read: nothing judged). */
static int verify_base_wal(struct repo *r, json_t *summary, const struct verify_opts *o,
                           struct caris_read_report *out, struct err *e)
{
    if (!json_is_object(json_object_get(summary, "physical")))
        return 0;
    out->wal = true;
    if (!out->errors)
        out->errors = json_array();
    size_t before = json_array_size(out->errors);
    struct caris_wal_listing own = {0}, *l = o && o->wal_listing ? o->wal_listing : &own;
    struct err we = ERR_INIT;
    /* records committed since this handle read the index (WAL archived while the base backup
     * was read) name chunks it does not know yet: the index is read again before they are */
    if (!l->read && repo_refresh(r, e) != 0)
        return err_wrap(e, "cannot read the repository's index");
    if (!l->read && caris_wal_listing_read(r, l, &we) != 0) {
        *e = we;
        return err_wrap(e, "cannot read the WAL archive");
    }
    struct caris_base_wal w;
    int src = caris_wal_base_records_listed(l, summary, true, &w, &we);
    caris_wal_listing_free(&own);
    if (src != 0) {
        if (we.code != ERR_DAMAGE) {
            *e = we;
            return err_wrap(e, "cannot read the WAL archive");
        }
        add_error_at(out->errors, "WAL", we.msg);
        return err_set(e, ERR_DAMAGE, we.hint, "%s", we.msg);
    }
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        caris_base_wal_free(&w);
        return err_sys(e, errno, NULL, "cannot open /dev/null");
    }
    int rc = 0;
    size_t i;
    json_t *x;
    /* what makes `wal get` refuse what recovery asks for, whatever the records it reads hold:
     * a "wal" record that cannot be read (it might be the one asked for), a "walstream" one
     * when a segment is served from a partial, a name archived twice with different content */
    if (w.damaged_wal) {
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "%zu record(s) of the WAL archive cannot be read: `wal get` serves no WAL file "
                 "while they are there (`caris-backup check` names them)",
                 w.damaged_wal);
        add_error_at(out->errors, "WAL", msg);
    }
    if (w.streamed && w.damaged > w.damaged_wal) {
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "%zu record(s) of streamed WAL cannot be read: `wal get` serves no segment from "
                 "a streamed partial while they are there (`caris-backup check` names them)",
                 w.damaged - w.damaged_wal);
        add_error_at(out->errors, "WAL", msg);
    }
    json_t *seen = json_object(); /* name -> sha256 */
    json_array_foreach(w.records, i, x)
    {
        json_t *rec = json_array_get(x, 1);
        const char *name = json_string_value(json_object_get(rec, "name")) ?: "?";
        const char *sha = json_string_value(json_object_get(rec, "sha256")) ?: "";
        const char *other = json_string_value(json_object_get(seen, name));
        if (other && strcmp(other, sha) != 0) {
            char path[96];
            snprintf(path, sizeof(path), "WAL %s", name);
            add_error_at(out->errors, path,
                         "archived twice with different content: `wal get` serves neither "
                         "(`caris-backup check` says more)");
        } else if (!other) {
            json_object_set_new(seen, name, json_string(sha));
        }
    }
    json_decref(seen);
    json_array_foreach(w.records, i, x)
    {
        json_t *rec = json_array_get(x, 1);
        const char *name = json_string_value(json_object_get(rec, "name")) ?: "?";
        char path[96];
        snprintf(path, sizeof(path), "WAL %s", name);
        struct err se = ERR_INIT;
        read_back(r, rec, "WAL record", fd, o, &se);
        if (err_is_set(&se) && se.code != ERR_DAMAGE) {
            *e = se;
            rc = -1;
            break;
        }
        if (err_is_set(&se)) {
            add_error_at(out->errors, path, se.msg);
            continue;
        }
        out->wal_files++;
        out->wal_bytes += (uint64_t)json_integer_value(json_object_get(rec, "size"));
    }
    close(fd);
    if (rc == 0) {
        char why[160] = "";
        if (w.damaged)
            snprintf(why, sizeof(why),
                     " (%zu record(s) of the WAL archive cannot be read: "
                     "`caris-backup check` names them)",
                     w.damaged);
        json_array_foreach(w.missing, i, x)
        {
            char path[96], msg[400];
            snprintf(path, sizeof(path), "WAL %s", json_string_value(x));
            snprintf(msg, sizeof(msg),
                     "not in the WAL archive%s: the backup cannot become consistent without it",
                     why);
            add_error_at(out->errors, path, msg);
            out->wal_missing++;
        }
        size_t bad = json_array_size(out->errors) - before;
        if (bad)
            rc = err_set(e, ERR_DAMAGE,
                         "DO NOT restore from it: it cannot be made consistent. Use another "
                         "physical backup, `caris-backup check` says what is wrong with the WAL "
                         "archive, and take a new physical backup now",
                         "%zu WAL file(s) the physical backup needs are missing or damaged", bad);
    }
    caris_base_wal_free(&w);
    return rc;
}

/* A backup whose entry list (or snapshot file) cannot be read: it was verified, and is
 * damaged (verify --all goes on with the next backup). The error's path is null. */
static void entries_damaged(struct caris_verify_result *res, const struct err *e)
{
    res->ran = true;
    res->valid = false;
    if (!res->read.errors)
        res->read.errors = json_array();
    json_array_append_new(res->read.errors, json_pack("{s:n, s:s}", "path", "error", e->msg));
}

static int verify_locked(struct repo *r, const char *backup_id, const struct verify_opts *o,
                         struct caris_verify_result *res, struct err *e)
{
    json_t *summary, *entries;
    char name[65];
    json_t *s;
    if (repo_snapshot_find(r, backup_id, name, &s, e) != 0) {
        if (e->code == ERR_DAMAGE) /* its snapshot file cannot be read */
            entries_damaged(res, e);
        return -1;
    }
    const char *kind = json_string_value(json_object_get(s, "kind"));
    if (kind && strcmp(kind, "files") != 0) {
        res->kind = xstrdup(kind);
        json_decref(s);
        if (repo_snapshot_load(r, name, &summary, &entries, e) != 0) {
            if (e->code == ERR_DAMAGE)
                entries_damaged(res, e);
            return -1;
        }
        res->ran = true;
        int rc = verify_streams(r, entries, o, &res->read, e);
        if (rc == 0 || e->code == ERR_DAMAGE) {
            /* the WAL too, also when a file is damaged: both are said */
            struct err we = ERR_INIT;
            if (verify_base_wal(r, summary, o, &res->read, &we) != 0) {
                if (rc == 0)
                    *e = we;
                else if (we.code == ERR_DAMAGE) { /* both said */
                    struct err se = *e;
                    err_set(e, ERR_DAMAGE, se.hint[0] ? se.hint : NULL, "%s; and %s", se.msg,
                            we.msg);
                }
                rc = -1;
            }
        }
        res->valid = rc == 0;
        json_decref(summary);
        json_decref(entries);
        return rc;
    }
    json_decref(s);
    struct buf text = {0};
    if (load_files_backup(r, backup_id, &summary, &text, e) != 0) {
        buf_free(&text);
        if (e->code == ERR_DAMAGE)
            entries_damaged(res, e);
        return -1;
    }
    struct files_read_opts ro = {.threads = o ? o->threads : 0,
                                 .progress = o ? o->progress : NULL,
                                 .ctx = o ? o->ctx : NULL,
                                 .op = o ? o->op : NULL};
    res->ran = true;
    int rc = files_read_backup(r, summary, &text, &ro, &res->read, e);
    res->valid = rc == 0;
    json_decref(summary);
    buf_free(&text);
    return rc;
}

int caris_verify(struct repo *r, const char *backup_id, const struct verify_opts *o,
                 struct caris_verify_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    res->backup_id = xstrdup(backup_id);
    if (repo_lock(r, false, "verify", e) != 0)
        return -1;
    /* On S3 the backup's snapshot is read from the bucket, not from this host's local copy:
     * the copy stays good while the object in the bucket is damaged or gone, and a restore
     * on another host reads the bucket. (The blobs' packs have no local copies.) */
    bool copies = storage_local_copies_this_thread(false);
    int rc = verify_locked(r, backup_id, o, res, e);
    storage_local_copies_this_thread(copies);
    if (rc != 0 && e->code != ERR_DAMAGE)
        /* stopped before the end (cancelled, or a read failed: an I/O error, the storage
         * unreachable), not judged: nothing that could read as damage, and nothing recorded
         * (a verification that ran to its end reports what it found, cancel or not) */
        res->ran = false;
    /* What a verification that ran found is remembered (records/verify), so that `list`
     * shows a damaged backup as damaged, not ok, until a later verification finds it whole. */
    if (res->ran)
        caris_verification_record(r, backup_id, rc == 0, res->read.bytes, rc == 0 ? NULL : e,
                                  o ? o->op : NULL);
    repo_unlock(r); /* after the records: a prune must not run while they are written */
    return rc;
}

void caris_verify_result_free(struct caris_verify_result *res)
{
    free(res->backup_id);
    free(res->kind);
    read_report_free(&res->read);
    memset(res, 0, sizeof(*res));
}

json_t *caris_verify_result_to_json(const struct caris_verify_result *res)
{
    if (!res->ran)
        return NULL;
    json_t *o = json_pack("{s:s, s:b}", "backupId", res->backup_id, "valid", res->valid);
    if (res->kind)
        json_object_set_new(o, "kind", json_string(res->kind));
    read_report_json(&res->read, !res->kind, o);
    return o;
}

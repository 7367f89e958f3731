/* File backup: walk → read → chunk (main thread, with the whole-file SHA-256) → chunk id,
 * dedup, compress, encrypt, pack (worker threads) → index → manifest (the commit point). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caris/backup.h"
#include "caris/chunker.h"
#include "caris/crypto.h"
#include "caris/fsmeta.h"
#include "caris/pipeline.h"
#include "caris/pool.h"
#include "common.h"
#include "filetable.h"
#include "manifest.h"

#define READ_SIZE (1u << 20)
/* Files of DIRECT_MIN bytes or more on a local file system (fs_direct_on) are read with
 * O_DIRECT where it allows it: straight from the disk into the reader's buffer, without the
 * kernel's copy out of its page cache and without filling that cache with data read once (the
 * application's own cached files stay cached). The kernel still writes a file's dirty cached
 * pages before a direct read of them, so what is read is what a buffered read gives. 2 GiB tree,
 * cold, first backup: system CPU 7.5-10.3 -> 3.8-4.5 s, wall 10.6-12.4 -> 8.1-8.9 s; warm, no
 * slower (7.8-8.3 -> 7.0-7.2 s). Smaller files gain little: with a threshold of 4 KiB, cold first
 * backups took 8.30-9.00 s against 8.55-9.17 (5 pairs, medians 8.66 and 8.89), warm ones 7.4-9.1
 * s against 7.0-7.4 (a small file read from the disk while it was cached). Reads are aligned to
 * DIRECT_ALIGN (a page, a multiple of any logical block size met in practice); a file system that
 * refuses O_DIRECT, or an extent or a short read that leaves a read unaligned, goes back to
 * buffered reads. */
#define DIRECT_ALIGN FS_DIRECT_ALIGN
#define DIRECT_MIN (64u << 10)
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
    /* The file ended before its size said (it was truncated while read, e.g. by logrotate's
     * copytruncate): its content as kept ends at eof_at, which is then the entry's size. */
    bool shrunk;
    uint64_t eof_at;
    bool direct;    /* read with O_DIRECT */
    char *obj_text; /* obj serialised (obj NULL then), while the entry waits (see entry_compact) */
    /* 1 for the reader + 1 per chunk job in flight: the entry is complete (its chunk ids
     * known) when this reaches 0 (release by the workers, acquire by the main thread) */
    int pending;
};

/* The previous backup's regular files, for incremental backups: only what deciding
 * "unchanged" and reusing the content needs, not the whole manifest as JSON objects. */
struct prev_file {
    char *key; /* "<root>/<path>" */
    int64_t size, mtime_s, mtime_ns, ctime_s, ctime_ns, ino;
    char *chunks;  /* compact JSON */
    char *extents; /* compact JSON or NULL */
    char sha[65];
};

struct prev_map {
    struct prev_file *v;
    size_t n, cap;
    uint32_t *slots; /* open addressing: index + 1 */
    size_t nslots;
};

/* Chunks go from a reader to the workers in batches: copied back to back into one buffer (a
 * spare, see spare_get), up to CBATCH_BYTES or CBATCH_MAX chunks, or one larger chunk alone.
 * One queue hand-off and one wake-up per batch instead of per chunk (most files are one small
 * chunk: 44,000 chunks for the 2 GB bench tree), and no malloc per chunk. */
#define CBATCH_BYTES (256u << 10)
#define CBATCH_MAX 64

struct bctx;
struct filerec;
struct chunkref;
struct cbatch {
    struct bctx *b;
    uint8_t *data;
    size_t used, room, cap; /* room: bytes it takes; cap: the spare's size, for spare_put */
    struct spares *sp;      /* where its buffer came from and goes back to */
    size_t n;
    struct filerec *rec[CBATCH_MAX];
    struct chunkref *ref[CBATCH_MAX];
};

/* A reader's buffer and its batch being filled, one per reader thread. A reader hands its
 * batch over when it is full, or when it ends a file and no other file waits to be read; one
 * left open by a reader that then had nothing more to read is handed over by the main thread
 * (on_entry, when STALL_ENTRIES entries wait), under mu. */
struct rbuf {
    uint8_t *p;
    size_t cap;
    pthread_mutex_t mu;
    struct cbatch *open;
};

/* Entries waiting to be serialised, behind one whose chunks are not all stored, after which
 * the main thread hands over the readers' open batches (see struct rbuf). */
#define STALL_ENTRIES 1024
/* Entries freed at once after which flush_entries gives their memory back (malloc_trim), and
 * entries waiting from which a waiting one is kept as text (entry_compact). */
#define TRIM_ENTRIES 512
#define COMPACT_AFTER 256

#define READERS 4
#define WALK_SCANNERS_MIN 8

/* What the next file table (filetable.h) needs of a regular file's entry, kept from the walk
 * until the entry is serialised. */
struct tpend {
    char *key;
    size_t kl;
    struct stat st;
    char *user, *group;
    uint8_t (*ids)[32];           /* owned; or NULL with tab_ids set */
    const uint8_t (*tab_ids)[32]; /* borrowed from the previous table */
    size_t nids;
    /* not for the table: its extended attributes could not be read (the next backup, matching
     * it on stat alone, copied the entry without them, and said nothing, until its ctime
     * changed) */
    bool uncached;
};

/* An entry copied as it was from the previous table: its text, not a JSON object. */
struct etext {
    const char *p;
    size_t len;
};

/* Batches of chunks (see struct cbatch: 256 KiB to 4 MiB) go from the readers to the workers
 * in buffers that are used again, not a malloc and a free each: mapped afresh every time (see
 * main.c, M_MMAP_THRESHOLD), each page of every chunk would be faulted in again (2.5 s more
 * system time for 2 GB), and each unmapping interrupts the other cores to flush their TLBs.
 * A new buffer is made only when every one made so far is in use (queued, or with a worker
 * or a reader), so their number is bounded by the pool's queue; SPARES only caps it. */
#define SPARES 32
#define SPARE_ROUND (256u << 10)
struct spares {
    pthread_mutex_t mu;
    uint8_t *p[SPARES];
    size_t cap[SPARES];
    int n;
};

/* The bytes of the batches handed to the workers and not stored yet. A reader that needs a
 * new batch waits while these and its own would pass INFLIGHT_MAX (unless none are in flight):
 * the batches' buffers are then at most this, one open batch per reader and one chunk, whatever
 * the sizes of the chunks. 4 MiB keeps both workers of a 2-core machine busy with chunks of
 * the 1 MiB average size; the pool's queue alone let them reach 23 MB (2 GB bench tree, full
 * backup: peak RSS 99-102 MB, 91-92 MB with this). The workers never wait for a reader, so
 * the wait always ends. */
#define INFLIGHT_MAX (4u << 20)
struct inflight {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t bytes;
};

struct bctx {
    struct repo *r;
    struct repo_writer *w;
    struct pool *pool;
    struct chunker ch;
    const struct files_backup_opts *o;
    /* Entries are serialised in manifest order as soon as they are complete, and their JSON
     * objects freed: memory holds the entries in flight, not the whole manifest. */
    json_t *entries;             /* slot i: entry i, or null once serialised */
    struct filerec **entry_recs; /* slot i: the file being read for entry i, or NULL */
    size_t nentries, cap_entries, nflushed;
    /* The entries serialised so far, "[e0,e1,...", text_len bytes long. While they are the
     * previous table's text byte for byte (text_same: the usual case when little changed),
     * they are not copied: the table's text is the text, and text stays empty until the
     * first byte that differs. */
    struct buf text;
    size_t text_len;
    bool text_same;
    /* When the next file table is built, the text is not kept in memory (about 500 bytes a
     * file: 20 MB of a 2 GB tree's 42,279 files, most of a full backup's peak RSS, and it grows
     * with the tree): it goes to an unnamed file beside the table (text_fd, in the cache's
     * directory, 0600: the table holds the same text), text_spilled bytes of it, with `text` as
     * the buffer of what follows (TEXT_SPILL bytes at most). It is read back a piece at a time
     * to be stored and to write the table. -1: the text is in `text`, whole (no table, or no
     * file could be made or written there: then it is read back into memory). */
    int text_fd;
    uint64_t text_spilled;
    json_t *warnings;
    size_t nwarnings;
    /* entries recorded without their content or left out (could not be opened, read or
     * listed, replaced while backed up; the walker's warnings that carry an errno): under
     * warn_mu. A backup with any is not one to let retention forget the older backups by
     * (services/job.c) */
    size_t nunread;
    struct prev_map *prev; /* incremental, without a usable file table */
    /* A previous entry whose ctime is at or after this (seconds, nanoseconds) is not reused:
     * its file was changed within RACY_WINDOW_S before the previous backup started, so a
     * change right after that backup read it may have left the same timestamps (a file
     * system's clock advances in ticks, or whole seconds). */
    int64_t racy_s, racy_ns;
    uint64_t racy;        /* files not reused for that reason (counted by on_entry's thread) */
    size_t compact_after; /* see entry_compact */
    /* the file table cache: the previous one when usable (incremental), the next one */
    struct ftable *tab;
    const struct ftable_rec *known_rec; /* the table's record for the entry the walker emits */
    struct ftable_builder *nb;
    struct tpend **entry_tp;  /* slot i: entry i's table data, or NULL */
    struct etext *entry_text; /* slot i: entry i's text when copied from the table */
    struct buf keybuf;
    int root;
    char root_head[24]; /* "<root>/", the keys' prefix (formatted once per root) */
    size_t root_head_len;
    struct pool *readers; /* whole files, I/O-bound: several at once hide read latency */
    struct rbuf *rbufs;   /* one per reader */
    size_t stall_next;    /* entries waiting at which on_entry hands over the open batches */
    pthread_mutex_t warn_mu;
    /* statistics; bytes_* are added to by the readers and, bytes_total, by the walk's thread
     * as well: only with atomics (count_total) */
    uint64_t files, dirs, symlinks, others, unchanged;
    uint64_t bytes_total, bytes_read;
    uint64_t total_estimate;
    int64_t start_mono, last_progress;
    /* stage times in ns, summed over the threads (read, sha256 and chunk: atomics, added by
     * the readers; the others: main thread) */
    uint64_t read_ns, sha_ns, chunk_ns, walk_ns, reuse_ns, manifest_ns;
    uint64_t cb_ns; /* in on_entry after its first timestamp: the walk's time is the rest */
    /* chunk -> id -> writer; the first error raised in a worker stops the backup */
    struct pstore ps;
    /* buffers of batches of small chunks (all of one size), and of larger chunks: apart, so
     * that a batch never holds a buffer sized for a 4 MiB chunk while such a chunk waits */
    struct spares spares, bigspares;
    struct inflight inflight;
};

/* A buffer for a batch of len bytes: a spare that is large enough (the smallest such), or a
 * new one whose size (*cap) is rounded up to SPARE_ROUND; when no spare fits, the largest
 * spare is freed first, so that the spares and the buffers in use are never more than the
 * most batches ever in flight at once (bounded by the pool's queue). */
static uint8_t *spare_get(struct spares *sp, size_t len, size_t *cap)
{
    pthread_mutex_lock(&sp->mu);
    int best = -1, largest = -1;
    for (int i = 0; i < sp->n; i++) {
        if (sp->cap[i] >= len && (best < 0 || sp->cap[i] < sp->cap[best]))
            best = i;
        if (largest < 0 || sp->cap[i] > sp->cap[largest])
            largest = i;
    }
    int take = best >= 0 ? best : largest;
    uint8_t *p = NULL, *drop = NULL;
    if (take >= 0) {
        p = sp->p[take];
        *cap = sp->cap[take];
        sp->n--;
        sp->p[take] = sp->p[sp->n];
        sp->cap[take] = sp->cap[sp->n];
        if (best < 0) { /* too small: replaced */
            drop = p;
            p = NULL;
        }
    }
    pthread_mutex_unlock(&sp->mu);
    free(drop);
    if (!p) {
        *cap = xsize(1, len / SPARE_ROUND + 1, 0) * SPARE_ROUND;
        p = xmalloc(*cap);
    }
    return p;
}

/* Keeps the buffer for the next batch, or frees it when SPARES are kept already. */
static void spare_put(struct spares *sp, uint8_t *p, size_t cap)
{
    pthread_mutex_lock(&sp->mu);
    if (sp->n < SPARES) {
        sp->p[sp->n] = p;
        sp->cap[sp->n++] = cap;
        p = NULL;
    }
    pthread_mutex_unlock(&sp->mu);
    free(p);
}

static void batch_job(void *arg, int worker)
{
    struct cbatch *cb = arg;
    const uint8_t *p = cb->data;
    for (size_t i = 0; i < cb->n; i++) {
        pstore_chunk(&cb->b->ps, worker, p, cb->ref[i]->len, cb->ref[i]->id);
        p += cb->ref[i]->len;
        __atomic_sub_fetch(&cb->rec[i]->pending, 1, __ATOMIC_RELEASE);
    }
    spare_put(cb->sp, cb->data, cb->cap);
    struct inflight *fl = &cb->b->inflight;
    pthread_mutex_lock(&fl->mu);
    fl->bytes -= cb->room;
    pthread_cond_broadcast(&fl->cv);
    pthread_mutex_unlock(&fl->mu);
    free(cb);
}

/* Hands the reader's open batch to the workers (none open: nothing to do). Under rb->mu
 * while the readers run. */
static void batch_submit(struct bctx *b, struct rbuf *rb)
{
    if (rb->open) {
        pthread_mutex_lock(&b->inflight.mu);
        b->inflight.bytes += rb->open->room;
        pthread_mutex_unlock(&b->inflight.mu);
        pool_submit(b->pool, batch_job, rb->open);
        rb->open = NULL;
    }
}

/* A new batch for a chunk of len bytes, once the batches in flight leave room for it (see
 * INFLIGHT_MAX). */
static struct cbatch *batch_new(struct bctx *b, size_t len)
{
    struct cbatch *nb = xmalloc(sizeof(*nb));
    nb->b = b;
    nb->room = len > CBATCH_BYTES ? len : CBATCH_BYTES;
    struct inflight *fl = &b->inflight;
    pthread_mutex_lock(&fl->mu);
    while (fl->bytes && fl->bytes + nb->room > INFLIGHT_MAX)
        pthread_cond_wait(&fl->cv, &fl->mu);
    pthread_mutex_unlock(&fl->mu);
    nb->sp = len > CBATCH_BYTES ? &b->bigspares : &b->spares;
    nb->data = spare_get(nb->sp, nb->room, &nb->cap);
    nb->used = nb->n = 0;
    return nb;
}

/* Hands every reader's open batch to the workers, each under its reader's lock. */
static void batches_submit_all(struct bctx *b)
{
    for (size_t i = 0; i < READERS; i++) {
        pthread_mutex_lock(&b->rbufs[i].mu);
        batch_submit(b, &b->rbufs[i]);
        pthread_mutex_unlock(&b->rbufs[i].mu);
    }
}

/* True once anything failed, or the operation was cancelled (which then counts as the
 * failure): every loop of the backup asks, so a cancel stops it at the next file or buffer. */
static bool worker_failed(struct bctx *b, struct err *e)
{
    if (caris_op_cancelled(b->o->op) && !pstore_failed(&b->ps, NULL)) {
        struct err ce = ERR_INIT;
        err_set(&ce, ERR_FAILURE, "nothing was committed: run it again", "cancelled");
        pstore_fail(&b->ps, &ce);
    }
    return pstore_failed(&b->ps, e);
}

static void warn_path(struct bctx *b, const char *path, size_t plen, const char *msg)
{
    pthread_mutex_lock(&b->warn_mu);
    b->nwarnings++;
    char esc[600];
    str_escape(path, plen, esc, sizeof(esc));
    caris_op_log(b->o->op, LOG_WARN, "%s: %s", esc, msg);
    if (json_array_size(b->warnings) < MAX_WARNINGS_KEPT) {
        json_t *w = json_object();
        json_object_set_new(w, "root", json_integer(b->root));
        manifest_set_bytes(w, "path", path, plen);
        json_object_set_new(w, "message", json_string(msg));
        json_array_append_new(b->warnings, w);
    }
    pthread_mutex_unlock(&b->warn_mu);
}

/* A file recorded without its content. */
static void count_unread(struct bctx *b)
{
    pthread_mutex_lock(&b->warn_mu);
    b->nunread++;
    pthread_mutex_unlock(&b->warn_mu);
}

static void walk_warn(void *ctx, const char *path, const char *msg, bool lost)
{
    warn_path(ctx, path, strlen(path), msg);
    if (lost) /* (a file or a directory left out or without its content, xattrs not read) */
        count_unread(ctx);
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

static void emit_chunk(struct bctx *b, struct filerec *f, struct rbuf *rb, const uint8_t *p,
                       size_t len)
{
    if (f->nrefs == f->caprefs) {
        /* cannot happen: caprefs bounds the chunk count (see chunk_bound); if it did, the
         * backup fails instead of recording a file without all its chunks */
        struct err ie = ERR_INIT;
        err_set(&ie, ERR_FAILURE, "report this as a bug",
                "internal error: more chunks than the bound for a file");
        pstore_fail(&b->ps, &ie);
        return;
    }
    struct chunkref *ref = &f->refs[f->nrefs++];
    ref->len = (uint32_t)len;
    __atomic_add_fetch(&f->pending, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&rb->mu);
    if (rb->open && (rb->open->n == CBATCH_MAX || len > rb->open->room - rb->open->used))
        batch_submit(b, rb);
    if (!rb->open) {
        /* only this reader opens its batch: it is still none when the lock is taken again */
        pthread_mutex_unlock(&rb->mu);
        struct cbatch *nb = batch_new(b, len);
        pthread_mutex_lock(&rb->mu);
        rb->open = nb;
    }
    struct cbatch *cb = rb->open;
    memcpy(cb->data + cb->used, p, len);
    cb->used += len;
    cb->rec[cb->n] = f;
    cb->ref[cb->n++] = ref;
    if (cb->used == cb->room) /* full (or one chunk of CBATCH_BYTES or more) */
        batch_submit(b, rb);
    pthread_mutex_unlock(&rb->mu);
}

/* Every chunk but the last of an extent is at least min_size long. */
static size_t chunk_bound(const struct bctx *b, const struct fs_extent *ext, size_t next)
{
    size_t n = 0;
    for (size_t i = 0; i < next; i++)
        n = xsize(1, n, (size_t)(ext[i].len / b->ch.p.min_size) + 1);
    return n;
}

/* bytes_total is added to by the walk's thread (unchanged files) and by the readers (what
 * they read) at the same time: every add is atomic. A plain += on the walk's thread lost a
 * reader's concurrent add now and then (test_filetable saw bytesTotal 2 bytes short). */
static void count_total(struct bctx *b, uint64_t n)
{
    __atomic_fetch_add(&b->bytes_total, n, __ATOMIC_RELAXED);
}

/* Buffered reads from here on. 0, or errno when the flag cannot be cleared (then the read
 * fails: an unaligned read of a descriptor still direct would be refused anyway). */
static int direct_off(struct filerec *f)
{
    if (fs_direct_off(f->fd) != 0)
        return errno;
    f->direct = false;
    return 0;
}

/* Reads [off, off+len) of fd, chunks it, hashes it. Returns 0, or errno on a read error. */
static int backup_extent(struct bctx *b, struct filerec *f, struct rbuf *rb, uint64_t off,
                         uint64_t len, struct cx_sha256 *h)
{
    size_t max = b->ch.p.max_size;
    int fd = f->fd;
    size_t have = 0, start = 0;
    uint64_t pos = off, end = off + len;
    for (;;) {
        if (worker_failed(b, NULL))
            return 0; /* the backup fails as a whole: this file's entry is never committed */
        /* fill */
        while (pos < end && start + have < rb->cap) {
            uint8_t *dst = rb->p + start + have;
            size_t want = rb->cap - start - have;
            if (want > end - pos)
                want = (size_t)(end - pos);
            /* A direct read asks for whole blocks: past a tail, the kernel stops at the end of
             * the file. The buffer and its length are multiples of DIRECT_ALIGN, so a
             * rounded-up ask fits whenever dst is aligned. */
            size_t ask = want;
            if (f->direct && (pos % DIRECT_ALIGN || (uintptr_t)dst % DIRECT_ALIGN)) {
                int en = direct_off(f);
                if (en)
                    return en;
            }
            if (f->direct)
                ask = (want + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN;
            int64_t t0 = time_mono_ns();
            ssize_t n = pread(fd, dst, ask, (off_t)pos);
            int64_t t1 = time_mono_ns();
            __atomic_fetch_add(&b->read_ns, (uint64_t)(t1 - t0), __ATOMIC_RELAXED);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (f->direct && fs_direct_refused(errno)) {
                    int en = direct_off(f); /* refused: buffered from here */
                    if (en)
                        return en;
                    continue;
                }
                return errno;
            }
            if (n == 0) {
                end = pos; /* the file shrank: what we read is what there was */
                f->shrunk = true;
                f->eof_at = pos;
                break;
            }
            if ((size_t)n > want)
                n = (ssize_t)want; /* rounded up past the extent: the file grew */
            cx_sha256_update(h, dst, (size_t)n);
            __atomic_fetch_add(&b->sha_ns, (uint64_t)(time_mono_ns() - t1), __ATOMIC_RELAXED);
            have += (size_t)n;
            pos += (uint64_t)n;
            __atomic_fetch_add(&b->bytes_read, (uint64_t)n, __ATOMIC_RELAXED);
            count_total(b, (uint64_t)n);
        }
        bool eof = pos >= end;
        size_t used = 0;
        uint8_t *data = rb->p + start;
        while (have - used > 0) {
            size_t avail = have - used;
            if (!eof && avail < max)
                break;
            int64_t tc = time_mono_ns();
            size_t cut = chunker_cut(&b->ch, data + used, avail);
            __atomic_fetch_add(&b->chunk_ns, (uint64_t)(time_mono_ns() - tc), __ATOMIC_RELAXED);
            emit_chunk(b, f, rb, data + used, cut);
            used += cut;
        }
        have -= used;
        /* What is left moves to the front, placed so that the next read lands aligned. */
        size_t nstart = f->direct ? (DIRECT_ALIGN - have % DIRECT_ALIGN) % DIRECT_ALIGN : 0;
        if (have && (used || nstart != start))
            memmove(rb->p + nstart, data + used, have);
        start = nstart;
        if (eof && have == 0)
            return 0;
    }
}

/* The window before the previous backup's start in which a change makes a file "racy" (read
 * again rather than reused): a file system's timestamps advance in ticks of the kernel's
 * coarse clock (before Linux 6.13), in whole seconds on ext4 with 128-byte inodes, in two on
 * FAT. The test knob CARIS_TEST_RACY_WINDOW_S replaces it (whole seconds, may be negative). */
#define RACY_WINDOW_S 2

static void racy_set(struct bctx *b, json_t *parent)
{
    int64_t started;
    const char *v = getenv("CARIS_TEST_RACY_WINDOW_S");
    int64_t w = v && *v ? strtoll(v, NULL, 10) : RACY_WINDOW_S;
    if (time_parse_iso(json_string_value(json_object_get(parent, "started")) ?: "", &started) !=
        0) {
        b->racy_s = INT64_MIN; /* unknown: nothing is reused */
        return;
    }
    int64_t t = started - w * 1000000000;
    b->racy_s = t / 1000000000 - (t % 1000000000 < 0);
    b->racy_ns = t - b->racy_s * 1000000000;
}

static bool racy(const struct bctx *b, int64_t ctime_s, int64_t ctime_ns)
{
    return ctime_s > b->racy_s || (ctime_s == b->racy_s && ctime_ns >= b->racy_ns);
}

static bool same_stat(const struct stat *a, const struct stat *c)
{
    return a->st_size == c->st_size && a->st_mtim.tv_sec == c->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == c->st_mtim.tv_nsec && a->st_ctim.tv_sec == c->st_ctim.tv_sec &&
           a->st_ctim.tv_nsec == c->st_ctim.tv_nsec && a->st_ino == c->st_ino;
}

/* ---- the previous backup, for incremental backups --------------------------------------- */

static uint64_t key_hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)k[i]) * 1099511628211ull;
    return h;
}

static const struct prev_file *prev_find(const struct prev_map *m, const char *key, size_t kl)
{
    if (!m || !m->nslots)
        return NULL;
    size_t mask = m->nslots - 1;
    for (size_t h = key_hash(key, kl) & mask;; h = (h + 1) & mask) {
        uint32_t v = m->slots[h];
        if (!v)
            return NULL;
        const struct prev_file *p = &m->v[v - 1];
        if (strlen(p->key) == kl && memcmp(p->key, key, kl) == 0)
            return p;
    }
}

static void prev_index(struct prev_map *m)
{
    m->nslots = 16;
    while (m->nslots < m->n * 2)
        m->nslots *= 2;
    m->slots = xcalloc(m->nslots, sizeof(uint32_t));
    for (size_t i = 0; i < m->n; i++) {
        size_t mask = m->nslots - 1;
        size_t h = key_hash(m->v[i].key, strlen(m->v[i].key)) & mask;
        while (m->slots[h])
            h = (h + 1) & mask;
        m->slots[h] = (uint32_t)i + 1;
    }
}

static void prev_free(struct prev_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].key);
        free(m->v[i].chunks);
        free(m->v[i].extents);
    }
    free(m->v);
    free(m->slots);
    free(m);
}

/* One entry of the previous manifest: files that were read completely are kept. */
static void prev_add(struct prev_map *m, json_t *ent)
{
    const char *type = json_string_value(json_object_get(ent, "type"));
    const char *sha = json_string_value(json_object_get(ent, "sha256"));
    json_t *chunks = json_object_get(ent, "chunks");
    char *path;
    size_t plen;
    if (!type || strcmp(type, "file") != 0 || json_object_get(ent, "error") || !sha ||
        strlen(sha) != 64 || !json_is_array(chunks) ||
        manifest_get_bytes(ent, "path", &path, &plen) != 0)
        return;
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 1024;
        m->v = xrealloc(m->v, xsize(m->cap, sizeof(*m->v), 0));
    }
    struct prev_file *p = &m->v[m->n++];
    p->key =
        xasprintf("%lld/%s", (long long)json_integer_value(json_object_get(ent, "root")), path);
    free(path);
    p->size = json_integer_value(json_object_get(ent, "size"));
    p->mtime_s = json_integer_value(json_object_get(ent, "mtime_s"));
    p->mtime_ns = json_integer_value(json_object_get(ent, "mtime_ns"));
    p->ctime_s = json_integer_value(json_object_get(ent, "ctime_s"));
    p->ctime_ns = json_integer_value(json_object_get(ent, "ctime_ns"));
    p->ino = json_integer_value(json_object_get(ent, "ino"));
    p->chunks = json_dumps(chunks, JSON_COMPACT);
    json_t *ext = json_object_get(ent, "extents");
    p->extents = ext ? json_dumps(ext, JSON_COMPACT) : NULL;
    memcpy(p->sha, sha, 65);
}

/* Reads the previous manifest one entry at a time, so only the compact table is kept,
 * never the whole manifest as objects. */
static struct prev_map *prev_load(struct repo *r, json_t *parent, struct err *e)
{
    struct buf text = {0};
    if (repo_snapshot_load_entries_text(r, json_string_value(json_object_get(parent, "_file")),
                                        &text, e) != 0) {
        buf_free(&text);
        return NULL;
    }
    struct prev_map *m = xcalloc(1, sizeof(*m));
    struct entry_iter it;
    entry_iter_init(&it, &text);
    json_t *ent;
    int more;
    while ((more = entry_iter_next(&it, &ent, e)) == 1) {
        prev_add(m, ent);
        json_decref(ent);
    }
    if (more < 0) {
        err_wrap(e, "the previous backup's manifest");
        buf_free(&text);
        prev_free(m);
        return NULL;
    }
    buf_free(&text);
    prev_index(m);
    return m;
}

/* "<root index>/<path>": how the previous backup's files are looked up. Valid until the next
 * call. */
static const char *entry_key(struct bctx *b, const char *path, size_t plen, size_t *kl)
{
    b->keybuf.len = 0;
    buf_append(&b->keybuf, b->root_head, b->root_head_len);
    buf_append(&b->keybuf, path, plen);
    buf_append_u8(&b->keybuf, 0);
    *kl = b->keybuf.len - 1;
    return (const char *)b->keybuf.data;
}

static bool blobs_present(struct bctx *b, const uint8_t (*ids)[32], size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!repo_has_blob(b->r, ids[i]))
            return false;
    return true;
}

static struct tpend *tpend_new(struct bctx *b, const struct fswalk_entry *ent)
{
    if (!b->nb)
        return NULL;
    struct tpend *t = xcalloc(1, sizeof(*t));
    const char *k = entry_key(b, ent->path, ent->path_len, &t->kl);
    t->key = xmemdup(k, t->kl + 1);
    t->st = ent->st;
    t->user = ent->meta.user ? xstrdup(ent->meta.user) : NULL;
    t->group = ent->meta.group ? xstrdup(ent->meta.group) : NULL;
    return t;
}

static void tpend_free(struct tpend *t)
{
    if (!t)
        return;
    free(t->key);
    free(t->user);
    free(t->group);
    free(t->ids);
    free(t);
}

/* The walker's question (fswalk_opts.known): is this file in the previous table, as it is
 * (stat, owners, one link), with all its chunks still in the repository? Then its entry is
 * the previous entry's text, copied. */
static bool known_file(void *ctx, const char *path, size_t plen, const struct stat *st,
                       const struct fs_meta *m)
{
    struct bctx *b = ctx;
    if (!b->tab)
        return false;
    int64_t t0 = time_mono_ns();
    size_t kl;
    const char *key = entry_key(b, path, plen, &kl);
    const struct ftable_rec *rec = ftable_find(b->tab, key, kl);
    bool ok = rec && ftable_matches(b->tab, rec, st, m->user, m->group) &&
              !racy(b, rec->ctime_s, rec->ctime_ns) &&
              blobs_present(b, ftable_ids(b->tab, rec), rec->nids);
    b->known_rec = ok ? rec : NULL;
    uint64_t dt = (uint64_t)(time_mono_ns() - t0);
    b->reuse_ns += dt;
    b->cb_ns += dt; /* not the walk's */
    return ok;
}

/* A file the table has but the walker did not skip (several links, or owners or mode
 * changed): its content is reused as try_reuse does, from the table's text of its entry. */
static bool try_reuse_table(struct bctx *b, const struct fswalk_entry *ent, json_t *obj,
                            struct tpend *tp)
{
    size_t kl;
    const char *key = entry_key(b, ent->path, ent->path_len, &kl);
    const struct ftable_rec *rec = ftable_find(b->tab, key, kl);
    const struct stat *st = &ent->st;
    if (!rec || rec->size != (int64_t)st->st_size || rec->mtime_s != (int64_t)st->st_mtim.tv_sec ||
        rec->mtime_ns != (uint32_t)st->st_mtim.tv_nsec ||
        rec->ctime_s != (int64_t)st->st_ctim.tv_sec ||
        rec->ctime_ns != (uint32_t)st->st_ctim.tv_nsec || rec->ino != (uint64_t)st->st_ino)
        return false;
    if (racy(b, rec->ctime_s, rec->ctime_ns)) {
        b->racy++;
        return false;
    }
    if (!blobs_present(b, ftable_ids(b->tab, rec), rec->nids))
        return false;
    json_t *old = json_loadb(ftable_text(b->tab, rec), rec->text_len, 0, NULL);
    json_t *chunks = json_object_get(old, "chunks"), *sha = json_object_get(old, "sha256");
    if (!json_is_array(chunks) || !json_is_string(sha)) {
        json_decref(old);
        return false;
    }
    json_object_set(obj, "chunks", chunks);
    json_object_set(obj, "sha256", sha);
    json_t *ext = json_object_get(old, "extents");
    if (ext)
        json_object_set(obj, "extents", ext);
    json_decref(old);
    if (tp) {
        tp->tab_ids = ftable_ids(b->tab, rec);
        tp->nids = rec->nids;
    }
    b->unchanged++;
    count_total(b, (uint64_t)st->st_size);
    return true;
}

/* Incremental: reuse the previous entry's chunks when the file looks unchanged and all its
 * chunks are still in the repository. */
static bool try_reuse(struct bctx *b, const struct fswalk_entry *ent, json_t *obj, struct tpend *tp)
{
    if (b->tab)
        return try_reuse_table(b, ent, obj, tp);
    if (!b->prev)
        return false;
    size_t kl;
    const char *key = entry_key(b, ent->path, ent->path_len, &kl);
    const struct prev_file *p = prev_find(b->prev, key, kl);
    const struct stat *st = &ent->st;
    if (!p || p->size != (int64_t)st->st_size || p->mtime_s != (int64_t)st->st_mtim.tv_sec ||
        p->mtime_ns != (int64_t)st->st_mtim.tv_nsec || p->ctime_s != (int64_t)st->st_ctim.tv_sec ||
        p->ctime_ns != (int64_t)st->st_ctim.tv_nsec || p->ino != (int64_t)st->st_ino)
        return false;
    if (racy(b, p->ctime_s, p->ctime_ns)) {
        b->racy++;
        return false;
    }
    json_t *chunks = json_loads(p->chunks, 0, NULL);
    uint8_t(*ids)[32];
    uint32_t *lens;
    size_t n;
    if (!chunks || chunklist_decode(chunks, &ids, &lens, &n) != 0) {
        json_decref(chunks);
        return false;
    }
    bool ok = blobs_present(b, (const uint8_t(*)[32])ids, n);
    free(lens);
    if (!ok) {
        free(ids);
        json_decref(chunks);
        return false;
    }
    if (tp) {
        tp->ids = ids;
        tp->nids = n;
    } else {
        free(ids);
    }
    json_object_set_new(obj, "chunks", chunks);
    json_object_set_new(obj, "sha256", json_string(p->sha));
    if (p->extents)
        json_object_set_new(obj, "extents", json_loads(p->extents, 0, NULL));
    b->unchanged++;
    count_total(b, (uint64_t)st->st_size);
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
        /* aligned, a whole number of DIRECT_ALIGN blocks, and room for READ_SIZE plus a
         * largest chunk whatever offset below DIRECT_ALIGN the data starts at */
        size_t cap = xsize(1, READ_SIZE, b->ch.p.max_size);
        cap = xsize(1, cap, 2 * DIRECT_ALIGN - 1) & ~(size_t)(DIRECT_ALIGN - 1);
        if (posix_memalign((void **)&rb->p, DIRECT_ALIGN, cap) != 0)
            xoom(cap);
        rb->cap = cap;
    }
    uint64_t size = (uint64_t)f->st.st_size;
    /* The descriptor is a dup of the walker's, which is closed once the walk's callback returns:
     * the flags changed here are this reader's alone from then on. */
    f->direct = size >= DIRECT_MIN && fs_direct_on(f->fd);
    /* A larger readahead pays only for files read in several buffers. */
    if (size > READ_SIZE && !f->direct)
        posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    struct err e = ERR_INIT;
    /* A file with as many bytes allocated as it is long has no holes worth keeping (four
     * lseeks saved per file); one with fewer is asked where its data is. A file with holes and
     * blocks preallocated past its end is then stored without its holes: the same bytes, only
     * not sparse when restored. */
    if ((uint64_t)f->st.st_blocks * 512 >= size) {
        f->ext = xmalloc(sizeof(*f->ext));
        f->ext[0] = (struct fs_extent){0, size};
        f->next = size ? 1 : 0;
    } else if (fs_data_extents(f->fd, size, &f->ext, &f->next, &e) != 0) {
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
        if (f->shrunk) {
            /* the file ends at eof_at now: the extents past it hold nothing that was read, and
             * the entry (size, extents, SHA-256) describes the bytes kept, so that a restore
             * gives back exactly those and checks them */
            f->ext[i].len = f->eof_at - f->ext[i].off;
            f->next = f->ext[i].len ? i + 1 : i;
            pos = f->eof_at;
            break;
        }
        pos = f->ext[i].off + f->ext[i].len;
    }
    if (!rerr && size > pos && !f->shrunk)
        sha256_zeros(h, size - pos);
    cx_sha256_final(h, f->sha);
    cx_sha256_free(h);
    struct stat after;
    f->changed = f->shrunk || fstat(f->fd, &after) != 0 || !same_stat(&f->st, &after);
    close(f->fd);
    f->fd = -1;
    if (rerr) {
        rec_fail(f, "read error", rerr);
        warn_path(b, f->path, f->path_len, f->error);
        count_unread(b);
    } else if (f->changed) {
        warn_path(b, f->path, f->path_len,
                  "file changed while being read; the backup holds what was read");
    }
    /* no file waiting for a reader: the batch goes now rather than wait for the next file
     * (the walk may be long among unchanged files, and the entries wait for their chunks) */
    if (pool_queued(b->readers) == 0) {
        pthread_mutex_lock(&rb->mu);
        batch_submit(b, rb);
        pthread_mutex_unlock(&rb->mu);
    }
    __atomic_sub_fetch(&f->pending, 1, __ATOMIC_RELEASE); /* last: f is the main thread's now */
}

/* Main thread, in the walk callback: open the file (its directory fd is valid only now)
 * and hand it to a reader. */
static struct filerec *backup_file(struct bctx *b, const struct fswalk_entry *ent, json_t *obj)
{
    /* The walker's descriptor, duplicated: ent->st is its fstat, taken after it was opened. */
    int fd = ent->fd >= 0 ? fcntl(ent->fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (fd < 0 && ent->fd < 0) {
        fd = openat(ent->dirfd, ent->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
        if (fd < 0 && errno == EPERM)
            fd = openat(ent->dirfd, ent->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "cannot read file: %s", strerror(errno));
        warn_path(b, ent->path, ent->path_len, msg);
        json_object_set_new(obj, "error", json_string(msg));
        count_unread(b);
        return NULL;
    }
    struct stat st = ent->st;
    if ((ent->fd < 0 && fstat(fd, &st) != 0) || st.st_ino != ent->st.st_ino ||
        !S_ISREG(st.st_mode)) {
        warn_path(b, ent->path, ent->path_len, "file was replaced while being backed up");
        json_object_set_new(obj, "error", json_string("replaced while being backed up"));
        count_unread(b);
        close(fd);
        return NULL;
    }
    struct filerec *f = xcalloc(1, sizeof(*f));
    f->b = b;
    f->obj = obj;
    f->path = xmemdup(ent->path, ent->path_len + 1);
    f->path_len = ent->path_len;
    f->fd = fd;
    f->st = st;
    f->pending = 1; /* the reader's */
    pool_submit(b->readers, read_file_job, f);
    return f;
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
    if (f->shrunk) { /* eof_at < size: the read ended early */
        size = f->eof_at;
        json_object_set_new(obj, "size", json_integer((json_int_t)size));
    }
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
    free(f->obj_text);
    free(f->path);
    free(f->refs);
    free(f->ext);
    free(f->error);
    free(f);
}

#define TEXT_SPILL (256u << 10)

/* The unnamed file for the entries text, in the directory of the table at tab_path (made if
 * need be); -1 when none can be made (the text then stays in memory). */
static int text_spill_open(const char *tab_path)
{
    char *dir = xstrdup(tab_path);
    char *slash = strrchr(dir, '/');
    int fd = -1;
    struct err e = ERR_INIT;
    if (slash && slash != dir) {
        *slash = '\0';
        if (fs_mkdir_p(dir, 0700, &e) == 0)
            fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    }
    err_clear(&e);
    free(dir);
    return fd;
}

/* The text back in memory, whole, and no more file: a write to it failed (a full disk). Fails
 * the backup if what the file holds cannot be read back. */
static void text_unspill(struct bctx *b)
{
    caris_op_log(b->o->op, LOG_WARN,
                 "the manifest's entries are kept in memory: their temporary file could not be "
                 "written (%s)",
                 strerror(errno));
    struct buf t = {0};
    buf_reserve(&t, (size_t)b->text_spilled + b->text.len + TEXT_SPILL);
    t.len = (size_t)b->text_spilled;
    if (fs_pread_full(b->text_fd, t.data, (size_t)b->text_spilled, 0) != 0) {
        struct err ie = ERR_INIT;
        err_sys(&ie, errno, "nothing was committed: run the backup again",
                "cannot read the manifest's entries back from their temporary file");
        pstore_fail(&b->ps, &ie); /* (the backup stops before the text is stored) */
        t.len = 0;
    }
    buf_append(&t, b->text.data, b->text.len);
    buf_free(&b->text);
    b->text = t;
    close(b->text_fd);
    b->text_fd = -1;
    b->text_spilled = 0;
}

/* The buffered part of the text to its file (nothing when the text is in memory). */
static void text_flush(struct bctx *b)
{
    if (b->text_fd < 0 || !b->text.len)
        return;
    if (fs_pwrite_full(b->text_fd, b->text.data, b->text.len, b->text_spilled) != 0) {
        text_unspill(b);
        return;
    }
    b->text_spilled += b->text.len;
    b->text.len = 0;
}

/* Appends n bytes to the text being built. */
static void text_put(struct bctx *b, const void *p, size_t n)
{
    if (b->text_fd >= 0 && b->text.len + n > TEXT_SPILL) {
        text_flush(b);
        if (b->text_fd >= 0 && n >= TEXT_SPILL) { /* written where it is */
            if (fs_pwrite_full(b->text_fd, p, n, b->text_spilled) == 0) {
                b->text_spilled += n;
                b->text_len = (size_t)b->text_spilled;
                return;
            }
            text_unspill(b);
        }
    }
    buf_append(&b->text, p, n);
    b->text_len = (size_t)b->text_spilled + b->text.len;
}

/* The built text becomes the table's first `upto` bytes, which it was until now (see
 * bctx.text_same): copied a piece at a time, each piece's pages let go once copied. */
static void text_diverge(struct bctx *b, size_t upto)
{
    const char *old = ftable_entries_text(b->tab);
    b->text_same = false;
    b->text_len = 0;
    if (b->text_fd < 0)
        buf_reserve(&b->text, ftable_text_len(b->tab) + ftable_text_len(b->tab) / 16 + 4096);
    for (size_t pos = 0; pos < upto;) {
        size_t n = upto - pos < (1u << 20) ? upto - pos : (1u << 20);
        text_put(b, old + pos, n);
        pos += n;
        ftable_text_used(b->tab, pos);
    }
}

/* Appends n bytes to the entries text (see bctx.text_same). */
static void text_append(struct bctx *b, const void *p, size_t n)
{
    if (b->text_same) {
        const char *old = ftable_entries_text(b->tab);
        size_t pos = b->text_len;
        if (n <= ftable_text_len(b->tab) - pos &&
            (p == old + pos || memcmp(old + pos, p, n) == 0)) {
            b->text_len += n;
            return;
        }
        /* from here on the text is built: the same part first */
        text_diverge(b, pos);
    }
    text_put(b, p, n);
    /* an unchanged entry's text, copied from the table's: the table's copy is not needed
     * again (entries come in the table's order) */
    if (b->tab) {
        uintptr_t old = (uintptr_t)ftable_entries_text(b->tab), at = (uintptr_t)p;
        if (at >= old && at - old < ftable_text_len(b->tab))
            ftable_text_used(b->tab, (size_t)(at - old) + n);
    }
}

/* The entries text built so far (text_len bytes), when it is in memory (not in text_fd). */
static const char *text_data(const struct bctx *b)
{
    return b->text_same ? ftable_entries_text(b->tab) : (const char *)b->text.data;
}

/* The SHA-256 of the entries text, wherever it is. */
static int text_sha256(struct bctx *b, uint8_t sha[32])
{
    if (b->text_fd < 0) {
        cx_sha256(text_data(b), b->text_len, sha);
        return 0;
    }
    text_flush(b);
    if (b->text_fd < 0)
        return text_sha256(b, sha);
    struct cx_sha256 *h = cx_sha256_new();
    uint8_t *p = xmalloc(TEXT_SPILL);
    int rc = 0;
    for (uint64_t off = 0; rc == 0 && off < b->text_spilled;) {
        size_t n =
            (size_t)(b->text_spilled - off < TEXT_SPILL ? b->text_spilled - off : TEXT_SPILL);
        rc = fs_pread_full(b->text_fd, p, n, off);
        if (rc == 0)
            cx_sha256_update(h, p, n);
        off += n;
    }
    cx_sha256_final(h, sha);
    cx_sha256_free(h);
    free(p);
    return rc;
}

/* Serialises the complete entries at the head of the manifest, in order, and frees their
 * JSON. Stops at the first file whose chunk ids are still being computed; once the pools are
 * drained, every entry is complete. */
static void flush_entries(struct bctx *b)
{
    size_t from = b->nflushed;
    while (b->nflushed < b->nentries) {
        size_t i = b->nflushed;
        struct filerec *f = b->entry_recs[i];
        if (f && __atomic_load_n(&f->pending, __ATOMIC_ACQUIRE) != 0)
            break;
        struct tpend *tp = b->entry_tp[i];
        if (f && f->obj_text) {
            json_t *obj = json_loads(f->obj_text, 0, NULL);
            if (!obj) { /* out of memory: the backup fails, nothing is committed */
                struct err ie = ERR_INIT;
                err_set(&ie, ERR_FAILURE, NULL, "cannot read back manifest entry %zu", i);
                pstore_fail(&b->ps, &ie);
                return;
            }
            json_array_set_new(b->entries, i, obj);
            f->obj = obj;
            free(f->obj_text);
            f->obj_text = NULL;
        }
        if (f) {
            rec_finish(f);
            if (tp && !f->error && !f->changed) {
                tp->ids = xcalloc(f->nrefs ? f->nrefs : 1, 32);
                for (size_t k = 0; k < f->nrefs; k++)
                    memcpy(tp->ids[k], f->refs[k].id, 32);
                tp->nids = f->nrefs;
            }
            rec_free(f);
            b->entry_recs[i] = NULL;
        }
        const struct etext *et = &b->entry_text[i];
        size_t off, len;
        bool cacheable = tp != NULL && !tp->uncached;
        text_append(b, i == 0 ? "[" : ",", 1);
        off = b->text_len;
        if (et->p) {
            text_append(b, et->p, et->len);
            len = et->len;
        } else {
            json_t *obj = json_array_get(b->entries, i);
            cacheable = cacheable && !json_object_get(obj, "error") &&
                        !json_object_get(obj, "changed_during_backup");
            char *s = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
            if (!s) { /* out of memory: the backup fails, nothing is committed */
                struct err ie = ERR_INIT;
                err_set(&ie, ERR_FAILURE, NULL, "cannot serialise manifest entry %zu", i);
                pstore_fail(&b->ps, &ie);
                return;
            }
            len = strlen(s);
            text_append(b, s, len);
            free(s);
        }
        if (tp) {
            if (cacheable && (tp->ids || tp->tab_ids || tp->nids == 0))
                ftable_builder_add(b->nb, tp->key, tp->kl, &tp->st, tp->user, tp->group, off, len,
                                   tp->ids ? (const uint8_t(*)[32])tp->ids : tp->tab_ids, tp->nids);
            tpend_free(tp);
            b->entry_tp[i] = NULL;
        }
        json_array_set_new(b->entries, i, json_null());
        b->nflushed++;
    }
    /* Entries that waited behind a large file were freed at once: their memory goes back to
     * the system (glibc keeps freed heap pages otherwise; about 8 MB of a 2 GB backup's peak
     * RSS). */
    if (b->nflushed - from >= TRIM_ENTRIES)
        malloc_trim(0);
}

/* Entry idx, whose file is being read, as compact JSON text until it is complete (flush_entries
 * reads it back): behind a large file, thousands of entries wait, and a JSON object costs
 * about 2.5 KB against some 300 bytes of text. Only when COMPACT_AFTER entries wait, so that
 * the usual entry is not serialised twice (the test knob CARIS_TEST_COMPACT_AFTER replaces
 * it: 0 compacts every file's entry). On failure (out of memory) the object stays. */
static void entry_compact(struct bctx *b, size_t idx)
{
    struct filerec *f = b->entry_recs[idx];
    if (!f || idx < b->nflushed || b->nentries - b->nflushed < b->compact_after)
        return;
    char *s = json_dumps(f->obj, JSON_COMPACT);
    if (!s)
        return;
    f->obj_text = s;
    f->obj = NULL;
    json_array_set_new(b->entries, idx, json_null());
}

static size_t entry_add(struct bctx *b, json_t *obj)
{
    if (b->nentries == b->cap_entries) {
        b->cap_entries = b->cap_entries ? b->cap_entries * 2 : 1024;
        b->entry_recs = xrealloc(b->entry_recs, xsize(b->cap_entries, sizeof(*b->entry_recs), 0));
        b->entry_tp = xrealloc(b->entry_tp, xsize(b->cap_entries, sizeof(*b->entry_tp), 0));
        b->entry_text = xrealloc(b->entry_text, xsize(b->cap_entries, sizeof(*b->entry_text), 0));
    }
    b->entry_recs[b->nentries] = NULL;
    b->entry_tp[b->nentries] = NULL;
    b->entry_text[b->nentries] = (struct etext){0};
    json_array_append_new(b->entries, obj);
    return b->nentries++;
}

/* An unchanged file the walker did not open (known_file said so): its entry is the previous
 * one's text. */
static int add_known(struct bctx *b, const struct fswalk_entry *ent, struct err *e)
{
    const struct ftable_rec *rec = b->known_rec;
    b->known_rec = NULL;
    if (!rec || !b->tab)
        return err_set(e, ERR_FAILURE, "report this as a bug",
                       "internal error: a file reported known without its record");
    size_t idx = entry_add(b, json_null());
    b->entry_text[idx] = (struct etext){ftable_text(b->tab, rec), rec->text_len};
    struct tpend *tp = tpend_new(b, ent);
    if (tp) {
        tp->tab_ids = ftable_ids(b->tab, rec);
        tp->nids = rec->nids;
    }
    b->entry_tp[idx] = tp;
    b->files++;
    b->unchanged++;
    count_total(b, (uint64_t)ent->st.st_size);
    return 0;
}

/* A file or directory the walker could not open: recorded the way a read error is ("error": no
 * content for a file, no contents for a directory), so that ls marks it, dump leaves it out,
 * and a restore says it is not restored (exit 3) instead of losing it silently. The entry is
 * not cacheable (flush_entries): the next backup tries it again. */
static void record_unopened(const struct fswalk_entry *ent, json_t *obj)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "cannot open %s: %s",
             ent->meta.type == FS_DIR ? "directory" : "file", strerror(ent->error));
    json_object_set_new(obj, "error", json_string(msg));
}

static int on_entry(void *ctx, const struct fswalk_entry *ent, struct err *e)
{
    struct bctx *b = ctx;
    int64_t start = time_mono_ns(), t0 = start;
    if (worker_failed(b, e))
        return -1;
    if (ent->known) {
        if (add_known(b, ent, e) != 0)
            return -1;
    } else {
        json_t *obj = manifest_entry_new(b->root, ent->path, ent->path_len, &ent->meta);
        size_t idx = entry_add(b, obj);
        if (ent->error) /* the walker warned (and counted it unread) */
            record_unopened(ent, obj);
        switch (ent->meta.type) {
        case FS_REG: {
            b->files++;
            json_object_set_new(obj, "ctime_s", json_integer(ent->st.st_ctim.tv_sec));
            json_object_set_new(obj, "ctime_ns", json_integer(ent->st.st_ctim.tv_nsec));
            json_object_set_new(obj, "ino", json_integer((json_int_t)ent->st.st_ino));
            if (ent->error)
                break; /* no content, and never reused from an earlier backup */
            struct tpend *tp = tpend_new(b, ent);
            if (tp)
                tp->uncached = ent->meta.xattrs_unread;
            b->entry_tp[idx] = tp;
            int64_t t1 = time_mono_ns();
            b->manifest_ns += (uint64_t)(t1 - t0);
            bool reused = try_reuse(b, ent, obj, tp);
            t0 = time_mono_ns();
            b->reuse_ns += (uint64_t)(t0 - t1);
            if (!reused)
                b->entry_recs[idx] = backup_file(b, ent, obj);
            break;
        }
        case FS_DIR:
            b->dirs++;
            if (ent->meta.entries_err && !ent->error) {
                /* listed, but entries of it not read (its mode r-- without x for this user, a
                 * listing that failed part-way): its entry says so, as a directory that could
                 * not be opened does, and a restore warns */
                char msg[300];
                snprintf(msg, sizeof(msg), "not all of its entries could be read: %s",
                         strerror(ent->meta.entries_err));
                json_object_set_new(obj, "error", json_string(msg));
                json_object_set_new(obj, "partial", json_true());
            }
            break;
        case FS_SYMLINK:
            b->symlinks++;
            break;
        default:
            b->others++;
            break;
        }
    }
    maybe_progress(b, false);
    int64_t t2 = time_mono_ns();
    if (b->nentries)
        entry_compact(b, b->nentries - 1);
    flush_entries(b);
    size_t waiting = b->nentries - b->nflushed;
    if (waiting >= b->stall_next) {
        batches_submit_all(b); /* a reader may sit on the chunk the entries wait for */
        b->stall_next = waiting + STALL_ENTRIES;
    } else if (b->stall_next > waiting + STALL_ENTRIES) {
        b->stall_next = waiting + STALL_ENTRIES; /* follows the queue down, not only up */
    }
    int64_t t3 = time_mono_ns();
    b->manifest_ns += (uint64_t)(t3 - t2);
    b->cb_ns += (uint64_t)(t3 - start);
    return 0;
}

static json_t *ms(uint64_t ns)
{
    return json_real((double)(ns / 1000) / 1000.0);
}

/* Where the time went, per stage, in ms summed over the threads that did the stage (read,
 * sha256, chunk: reader threads; chunkId, compress, encrypt: workers; write: workers closing
 * packs plus the final flush; walk, reuse, manifest: main thread). Stages overlap in time, so
 * the sum may exceed the wall time. docs/JSON.md ("stageMs") says what each one covers. */
static json_t *stage_ms_json(const struct bctx *b, const struct repo_writer_stats *ws)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "walk", ms(b->walk_ns),
                     "reuse", ms(b->reuse_ns), "read", ms(b->read_ns), "sha256", ms(b->sha_ns),
                     "chunk", ms(b->chunk_ns), "chunk_id", ms(b->ps.id_ns), "compress",
                     ms(ws->compress_ns), "encrypt", ms(ws->encrypt_ns), "write", ms(ws->write_ns),
                     "manifest", ms(b->manifest_ns));
}

/* The previous backup's table, when it is there, made for that backup's entries (their
 * SHA-256, parent_sha; NULL: unknown), and intact; else NULL (the backup then reads the
 * previous manifest from the repository, and says why). */
static struct ftable *table_open(struct bctx *b, const char *path, const uint8_t key[32],
                                 const uint8_t *parent_sha)
{
    const char *why = "the previous backup's entries reference cannot be read";
    struct ftable *t = parent_sha ? ftable_open(path, key, parent_sha, &why) : NULL;
    if (t)
        caris_op_log(b->o->op, LOG_DEBUG, "file table cache: %zu files", ftable_count(t));
    else
        caris_op_log(b->o->op, LOG_INFO,
                     "file table cache not used (%s): reading the previous backup's manifest", why);
    return t;
}

/* The parent's entries reference ({"chunks", "sha256", "bytes"}) and, in sha, the SHA-256 of
 * the entries text it names; NULL when it cannot be read (*damaged: its file is damaged) (then
 * neither the file table nor the parent's manifest is reused: slower, not wrong; reading the
 * previous manifest says what is damaged). */
static json_t *parent_ref_load(struct bctx *b, json_t *parent, uint8_t sha[32], bool *damaged)
{
    const char *name = json_string_value(json_object_get(parent, "_file"));
    json_t *summary = NULL, *ref = NULL;
    struct err le = ERR_INIT;
    *damaged = false;
    if (!name || repo_snapshot_load_ref(b->r, name, &summary, &ref, &le) != 0) {
        *damaged = le.code == ERR_DAMAGE;
        caris_op_log(b->o->op, LOG_INFO, "the previous backup's entries reference: %s",
                     le.msg[0] ? le.msg : "no snapshot name");
        return NULL;
    }
    json_decref(summary);
    const char *hex = json_string_value(json_object_get(ref, "sha256"));
    if (!hex || strlen(hex) != 64 || cx_unhex(hex, sha, 32) != 0) {
        json_decref(ref);
        return NULL;
    }
    return ref;
}

/* The parent's entries reference when this backup's entries text is byte for byte the
 * parent's (the text is all of the file table's, whose SHA-256 the table's MAC covers and was
 * checked to be the parent's when the table was opened; or it has the same length and SHA-256
 * as the text the reference names), every chunk the reference lists is still in the
 * repository, and their lengths add up to the text's length. Storing the
 * text again would only produce these chunks again (the same deterministic chunker, ids keyed
 * hashes of the content), so the text is neither chunked nor hashed per chunk nor looked up;
 * a restore checks the text it reassembles against the SHA-256 as for any manifest. The new
 * snapshot lists the chunks itself: forgetting the parent leaves them referenced. NULL when
 * anything differs. */
static json_t *manifest_reuse(struct bctx *b, json_t *pref, const uint8_t parent_sha[32])
{
    json_t *bytes = json_object_get(pref, "bytes");
    if (!json_is_integer(bytes) || json_integer_value(bytes) < 0 ||
        (uint64_t)json_integer_value(bytes) != (uint64_t)b->text_len)
        return NULL;
    if (!b->text_same) {
        uint8_t sha[32];
        if (text_sha256(b, sha) != 0 || memcmp(sha, parent_sha, 32) != 0)
            return NULL;
    }
    uint8_t(*ids)[32] = NULL;
    uint32_t *lens = NULL;
    size_t n = 0;
    if (chunklist_decode(json_object_get(pref, "chunks"), &ids, &lens, &n) != 0)
        return NULL;
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += lens[i];
    bool ok = sum == (uint64_t)b->text_len && blobs_present(b, (const uint8_t(*)[32])ids, n);
    free(ids);
    free(lens);
    return ok ? json_incref(pref) : NULL;
}

static int count_size(void *ctx, const struct fswalk_entry *ent, struct err *e)
{
    (void)e;
    if (ent->meta.type == FS_REG)
        *(uint64_t *)ctx += (uint64_t)ent->st.st_size;
    return 0;
}

static void quiet_warn(void *ctx, const char *path, const char *msg, bool lost)
{
    (void)ctx, (void)path, (void)msg, (void)lost;
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
            int errnum = errno;
            char ep[256]; /* as given, its bytes escaped when not UTF-8 (printed, logged) */
            err_sys(
                e, errnum, "check the path; BACKUP_FILES_PATHS lists the directories to back up",
                "cannot back up %s", str_escape(o->paths[i], strlen(o->paths[i]), ep, sizeof(ep)));
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

/* The part of an absolute path below root ("" for the root itself), or NULL when the path is
 * not root or below it. */
static const char *below_root(const char *path, const char *root)
{
    size_t n = strlen(root);
    if (strcmp(root, "/") == 0)
        return path[0] == '/' ? path + 1 : NULL;
    if (strncmp(path, root, n) != 0 || (path[n] != '/' && path[n] != '\0'))
        return NULL;
    return path[n] == '/' ? path + n + 1 : path + n;
}

/* The directories above each root, from "/" down to the root's parent, as they are when the
 * backup ends: for each root, [[mode (permission bits), uid, gid], ...] (null for one that
 * cannot be stat'ed). mount shows them so: the directories it made up above a root were 0555,
 * and a file that a 0700 directory above its root kept private was readable by every user of a
 * `mount --allow-other`. */
static json_t *root_ancestors(json_t *roots)
{
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(roots, i, r)
    {
        const char *p = json_string_value(r) ?: "";
        json_t *chain = json_array();
        size_t len = strlen(p);
        for (size_t k = 0; k < len && len > 1; k++) {
            if (p[k] != '/')
                continue;
            char *dir = xstrndup(p, k ? k : 1);
            struct stat st;
            json_array_append_new(chain,
                                  lstat(dir, &st) == 0 && S_ISDIR(st.st_mode)
                                      ? json_pack("[i, I, I]", (int)(st.st_mode & 07777),
                                                  (json_int_t)st.st_uid, (json_int_t)st.st_gid)
                                      : json_null());
            free(dir);
        }
        json_array_append_new(out, chain);
    }
    return out;
}

/* A root inside another would be backed up twice (its files under both), and a restore of the
 * backup would meet each of them twice: refused. */
static int check_nested_roots(json_t *roots, struct err *e)
{
    size_t i, k;
    json_t *a, *b;
    json_array_foreach(roots, i, a) json_array_foreach(roots, k, b)
    {
        const char *inner = json_string_value(a), *outer = json_string_value(b);
        if (i != k && below_root(inner, outer))
            return err_set(e, ERR_USAGE,
                           "give only the outer one; --exclude leaves out what is below it",
                           "backup root %s is inside backup root %s: its files would be backed up "
                           "twice",
                           inner, outer);
    }
    return 0;
}

char **caris_files_paths_split(const char *list, size_t *n)
{
    char **out = xcalloc(1, sizeof(char *));
    *n = 0;
    for (const char *c = list ? list : ""; *c;) {
        size_t l = strcspn(c, ":");
        if (l) {
            out = xrealloc(out, xsize(*n + 2, sizeof(char *), 0));
            out[(*n)++] = xstrndup(c, l);
            out[*n] = NULL;
        }
        c += l;
        if (*c == ':')
            c++;
    }
    return out;
}

void caris_files_paths_free(char **paths)
{
    for (size_t i = 0; paths && paths[i]; i++)
        free(paths[i]);
    free(paths);
}

int caris_files_roots_check(const char *const *paths, size_t n, struct err *e)
{
    json_t *roots = json_array();
    for (size_t i = 0; i < n; i++) {
        char *abs = realpath(paths[i], NULL);
        if (!abs) {
            size_t l = strlen(paths[i]);
            while (l > 1 && paths[i][l - 1] == '/')
                l--;
            abs = xstrndup(paths[i], l);
        }
        bool dup = false;
        size_t k;
        json_t *v;
        json_array_foreach(roots, k, v) dup |= strcmp(json_string_value(v), abs) == 0;
        if (!dup) /* not checked for UTF-8 here: the backup refuses such a root itself */
            json_array_append_new(roots, json_string_nocheck(abs));
        free(abs);
    }
    int rc = check_nested_roots(roots, e);
    json_decref(roots);
    return rc;
}

/* The exclude patterns as the walk of root takes them, NULL-terminated (free with
 * free_patterns): trailing slashes dropped ("cache/" is "cache"), an absolute pattern made
 * "/" and the path below the root it lies under (matched against that path only, see
 * fswalk_opts) and left out for the others. With roots (and e), checks
 * instead that every absolute pattern lies under some root and is not one. */
/* A pattern of '*'s and at most one '?' matches every name ('*' matches '/' too): below a
 * root, everything. */
static bool matches_every_name(const char *p)
{
    if (!strchr(p, '*') || p[strspn(p, "*?")] != '\0')
        return false;
    const char *q = strchr(p, '?');
    return !q || !strchr(q + 1, '?');
}

/* root_excludes' failure: frees what it made (out's first k, and p). */
static char **patterns_fail(char **out, size_t k, char *p)
{
    free(p);
    for (size_t j = 0; j < k; j++)
        free(out[j]);
    free(out);
    return NULL;
}

static char **root_excludes(const char *const *ex, const char *root, json_t *roots, struct err *e)
{
    size_t n = 0;
    while (ex && ex[n])
        n++;
    char **out = xcalloc(n + 1, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char *p = xstrdup(ex[i]);
        size_t len = strlen(p);
        while (len > 1 && p[len - 1] == '/')
            p[--len] = '\0';
        const char *flaw = roots ? fswalk_pattern_flaw(p) : NULL;
        if (flaw) {
            char esc[300];
            err_set(e, ERR_USAGE, "write the path as `ls` shows it, e.g. /srv/caris/uploads/tmp",
                    "--exclude '%s' would match nothing: %s",
                    str_escape(ex[i], strlen(ex[i]), esc, sizeof(esc)), flaw);
            return patterns_fail(out, k, p);
        }
        if (roots && p[0] != '/' && matches_every_name(p)) {
            char esc[300];
            err_set(e, ERR_USAGE, "name what to leave out below the root",
                    "--exclude '%s' would exclude everything below the backup root",
                    str_escape(ex[i], strlen(ex[i]), esc, sizeof(esc)));
            return patterns_fail(out, k, p);
        }
        if (p[0] != '/') {
            out[k++] = p;
            continue;
        }
        if (roots) {
            const char *rest = NULL;
            size_t ri;
            json_t *rv;
            json_array_foreach(roots, ri, rv)
            {
                const char *b = below_root(p, json_string_value(rv));
                char esc[300];
                if (b && !*b) {
                    err_set(e, ERR_USAGE, "name what to leave out below the root",
                            "--exclude '%s' would exclude the backup root itself",
                            str_escape(ex[i], strlen(ex[i]), esc, sizeof(esc)));
                    return patterns_fail(out, k, p);
                }
                if (b && matches_every_name(b)) {
                    err_set(e, ERR_USAGE, "name what to leave out below the root",
                            "--exclude '%s' would exclude everything below the backup root %s",
                            str_escape(ex[i], strlen(ex[i]), esc, sizeof(esc)),
                            json_string_value(rv));
                    return patterns_fail(out, k, p);
                }
                rest = rest ? rest : b;
            }
            if (!rest) {
                char esc[300];
                err_set(e, ERR_USAGE,
                        "an absolute pattern starts with a backup root's path (a pattern with "
                        "'/' is also matched below each root, e.g. uploads/tmp)",
                        "--exclude '%s' is outside every backup root: it would match nothing",
                        str_escape(ex[i], strlen(ex[i]), esc, sizeof(esc)));
                return patterns_fail(out, k, p);
            }
            free(p);
            continue;
        }
        /* anchored at the root: "/cache" is the root's cache, never a cache deeper down (a
         * bare "cache" would match every one, at any depth) */
        const char *b = below_root(p, root);
        if (b && *b)
            out[k++] = xasprintf("/%s", b);
        free(p);
    }
    return out;
}

static void free_patterns(char **p)
{
    for (size_t i = 0; p && p[i]; i++)
        free(p[i]);
    free(p);
}

static int walk_scanners(const struct files_backup_opts *o)
{
    int nthreads = o->threads > 0 ? o->threads : sys_ncpu();
    return nthreads < WALK_SCANNERS_MIN ? WALK_SCANNERS_MIN : nthreads;
}

struct caris_files_prewalk {
    char *root;      /* the first path, resolved */
    char **excludes; /* its patterns, which the scanners use until the walk ends */
    int scanners;
    int64_t started_ns;   /* when it began to read */
    int64_t started_mono; /* the same instant on the monotonic clock (the duration) */
    struct fswalk *walk;
};

struct caris_files_prewalk *caris_files_prewalk_start(const struct files_backup_opts *o)
{
    if (o->npaths == 0 || o->estimate_total)
        return NULL;
    char *root = realpath(o->paths[0], NULL);
    if (!root)
        return NULL;
    struct caris_files_prewalk *p = xcalloc(1, sizeof(*p));
    p->root = root;
    p->excludes = root_excludes(o->excludes, root, NULL, NULL);
    p->scanners = walk_scanners(o);
    p->started_ns = time_now_ns();
    p->started_mono = time_mono_ns();
    struct fswalk_opts wo = {.excludes = (const char *const *)p->excludes, .threads = p->scanners};
    struct err e = ERR_INIT; /* the backup's own walk says what is wrong */
    p->walk = fswalk_start(root, &wo, &e);
    if (!p->walk) {
        caris_files_prewalk_free(p);
        return NULL;
    }
    return p;
}

void caris_files_prewalk_free(struct caris_files_prewalk *p)
{
    if (!p)
        return;
    fswalk_cancel(p->walk);
    free_patterns(p->excludes);
    free(p->root);
    free(p);
}

static bool same_patterns(char **a, char **b)
{
    size_t i = 0;
    for (; a[i] && b[i]; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return !a[i] && !b[i];
}

/* The walk of root read ahead for it, taken over from o->prewalk; NULL when there is none. */
static struct fswalk *prewalk_take(const struct files_backup_opts *o, const char *root, char **ex,
                                   int scanners)
{
    struct caris_files_prewalk *p = o->prewalk;
    if (!p || !p->walk || strcmp(p->root, root) != 0 || !same_patterns(p->excludes, ex) ||
        p->scanners != scanners)
        return NULL;
    struct fswalk *w = p->walk;
    p->walk = NULL;
    return w;
}

static int files_backup(struct repo *r, const struct files_backup_opts *o, bool incremental,
                        json_t **summary_out, struct err *e)
{
    int64_t start_ns, clock0 = time_mono_ns(); /* the duration: immune to clock changes */
    if (backup_time(o->time_ns, &start_ns, e) != 0)
        return -1;
    /* reading ahead began earlier: files were looked at from then (a file changed between then
     * and now must count as changed after this backup started, as it does against then) */
    if (!o->time_ns && o->prewalk && o->prewalk->walk && o->prewalk->started_ns < start_ns) {
        /* and the duration from then too: "finished" (start + duration) is when it finished,
         * not that minus the time the repository took to open (the key derivation) */
        start_ns = o->prewalk->started_ns;
        clock0 = o->prewalk->started_mono;
    }
    /* the repository is open (its key derivation's memory freed): the scanners may read as far
     * ahead as during the walk while the lock is taken and the file table checked */
    if (o->prewalk && o->prewalk->walk)
        fswalk_ahead_full(o->prewalk->walk);
    json_t *roots = resolve_roots(o, e);
    if (!roots)
        return -1;
    char **checked = NULL;
    if (check_nested_roots(roots, e) != 0 ||
        !(checked = root_excludes(o->excludes, NULL, roots, e))) {
        json_decref(roots);
        return -1;
    }
    free_patterns(checked); /* the relative ones: each root's walk takes its own */
    struct bctx b = {.r = r,
                     .o = o,
                     .start_mono = time_mono_ns(),
                     .compact_after = COMPACT_AFTER,
                     .text_fd = -1};
    const char *ca = getenv("CARIS_TEST_COMPACT_AFTER");
    if (ca && *ca)
        b.compact_after = (size_t)strtoull(ca, NULL, 10);
    pstore_init(&b.ps, r, NULL, 0); /* its writer comes once the lock is held */
    pthread_mutex_init(&b.warn_mu, NULL);
    pthread_mutex_init(&b.spares.mu, NULL);
    pthread_mutex_init(&b.inflight.mu, NULL);
    pthread_cond_init(&b.inflight.cv, NULL);
    pthread_mutex_init(&b.bigspares.mu, NULL);
    b.entries = json_array();
    b.warnings = json_array();
    json_t *parent = NULL, *summary = NULL, *entries_ref = NULL, *pref = NULL, *snaps = NULL;
    uint8_t parent_sha[32], entries_sha[32];
    bool manifest_reused = false, table_kept = false;
    size_t snaps_read = 0; /* snapshot files read to find the parent and a free id */
    char id[160] = "";
    char *tab_path = NULL;
    uint8_t tab_key[32];
    bool claimed = false;
    int rc = -1;
    if (chunker_init(&b.ch, repo_chunker_params(r, false), repo_chunker_seed(r)) != 0) {
        err_set(e, ERR_DAMAGE, NULL, "repository has invalid chunker parameters");
        goto out;
    }
    if (repo_lock(r, false, "backup files", e) != 0)
        goto out;
    if (o->cache_dir && ftable_key(r, tab_key, e) == 0) {
        char *rj = json_dumps(roots, JSON_COMPACT);
        tab_path = ftable_path(o->cache_dir, r, rj ? rj : "");
        free(rj);
        b.nb = ftable_builder_new();
        b.text_fd = text_spill_open(tab_path);
    } else if (o->cache_dir) { /* no cache then: slower, not wrong */
        caris_op_log(o->op, LOG_WARN, "file table cache not used: %s", e->msg);
        err_clear(e);
    }
    /* The snapshots' summaries, read once for the parent and the id, and from the local cache
     * for the snapshots read before: a backup does not read every snapshot ever kept. */
    if (o->cache_dir) {
        char *sc = xasprintf("%s/%s/summaries", o->cache_dir, repo_id(r));
        snaps = repo_snapshot_list_cached(r, sc, &snaps_read, e);
        free(sc);
    } else {
        snaps = repo_snapshot_list(r, NULL, e);
        snaps_read = json_array_size(snaps);
    }
    if (!snaps)
        goto out;
    if (incremental) {
        parent = backup_latest_in(snaps, "files", "roots", roots);
        bool damaged = false;
        if (!json_is_null(parent))
            pref = parent_ref_load(&b, parent, parent_sha, &damaged);
        if (damaged && o->cache_dir) {
            /* its file damaged since its summary was cached: the parent is chosen again among
             * the snapshots that can be read, as without the cache */
            json_decref(parent);
            json_decref(snaps);
            if (!(snaps = repo_snapshot_list(r, NULL, e)))
                goto out;
            snaps_read += json_array_size(snaps);
            parent = backup_latest_in(snaps, "files", "roots", roots);
            if (!json_is_null(parent))
                pref = parent_ref_load(&b, parent, parent_sha, &damaged);
        }
        if (json_is_null(parent)) {
            /* nothing to build on: it reads every file, so it is a full backup, and says so */
            caris_op_log(o->op, LOG_INFO, "no earlier backup of these paths: making a full backup");
            incremental = false;
        } else {
            int64_t t0 = time_mono_ns();
            racy_set(&b, parent);
            if (tab_path)
                b.tab = table_open(&b, tab_path, tab_key, pref ? parent_sha : NULL);
            if (b.tab && b.nb)
                ftable_builder_base(b.nb, b.tab); /* freed before the table is closed */
            b.text_same = b.tab != NULL;
            if (!b.tab && !(b.prev = prev_load(r, parent, e)))
                goto out;
            b.manifest_ns += (uint64_t)(time_mono_ns() - t0);
        }
    }
    if (backup_id_claim_in(r, snaps, "file", incremental ? "incremental" : "full", start_ns,
                           o->time_ns != 0, o->op, id, sizeof(id), e) != 0)
        goto out;
    claimed = true;
    int nthreads = o->threads > 0 ? o->threads : sys_ncpu();
    b.pool = pool_new(nthreads, (size_t)nthreads * 2);
    b.readers = pool_new(READERS, READERS * 4);
    b.rbufs = xcalloc(READERS, sizeof(*b.rbufs));
    for (size_t i = 0; i < READERS; i++)
        pthread_mutex_init(&b.rbufs[i].mu, NULL);
    b.stall_next = STALL_ENTRIES;
    b.w = repo_writer_new(r, nthreads);
    b.ps.w = b.w;

    if (o->estimate_total) {
        for (size_t i = 0; i < json_array_size(roots); i++) {
            const char *root = json_string_value(json_array_get(roots, i));
            char **ex = root_excludes(o->excludes, root, NULL, NULL);
            struct fswalk_opts wo = {.excludes = (const char *const *)ex,
                                     .warn = quiet_warn,
                                     .ctx = &b.total_estimate,
                                     .threads = nthreads};
            struct err ie = ERR_INIT;
            fswalk_run(root, &wo, count_size, &ie);
            free_patterns(ex);
        }
    }
    /* Directory scanners mostly wait for the disk when the cache is cold: more of them than
     * cores keep more reads in flight (2 GB tree, 42,279 files, cold: walk 1.2-1.8 s with 4,
     * 2.3 s with 2) and cost nothing measurable when it is warm. On the 2-core test machine,
     * cold, a no-change backup of that tree walked in 102-148 ms with 8 scanners against
     * 158-211 with 4 (8 rounds each); 12 and 16 were slower again (141-292 ms). */
    int scanners = walk_scanners(o);
    int64_t walk0 = time_mono_ns();
    for (size_t i = 0; i < json_array_size(roots); i++) {
        b.root = (int)i;
        b.root_head_len = (size_t)snprintf(b.root_head, sizeof(b.root_head), "%d/", b.root);
        /* directories are read ahead on every core; the entries come in the same order */
        const char *root = json_string_value(json_array_get(roots, i));
        char **ex = root_excludes(o->excludes, root, NULL, NULL);
        struct fswalk_opts wo = {.excludes = (const char *const *)ex,
                                 .warn = walk_warn,
                                 .ctx = &b,
                                 .known = b.tab ? known_file : NULL,
                                 .threads = scanners};
        struct fswalk *pre = i == 0 ? prewalk_take(o, root, ex, scanners) : NULL;
        int wrc = pre ? fswalk_finish(pre, &wo, on_entry, e) : fswalk_run(root, &wo, on_entry, e);
        free_patterns(ex);
        if (wrc != 0)
            goto out;
    }
    b.walk_ns = (uint64_t)(time_mono_ns() - walk0) - b.cb_ns;
    pool_wait(b.readers);
    /* every file is read: the readers' last batches go to the workers, and their buffers (up
     * to 5 MiB each) are freed before the entries text is stored, which is when the backup
     * holds the most else */
    batches_submit_all(&b);
    for (size_t i = 0; i < READERS; i++) {
        free(b.rbufs[i].p);
        b.rbufs[i].p = NULL;
        b.rbufs[i].cap = 0;
    }
    pool_wait(b.pool);
    if (worker_failed(&b, e))
        goto out;
    /* The entries are complete once every chunk id is known (below); then they are stored,
     * the writer flushed (packs, index), and only then the snapshot committed. */
    maybe_progress(&b, true);

    /* Every chunk id is known now: the rest of the entries are complete. */
    int64_t man0 = time_mono_ns();
    flush_entries(&b);
    text_append(&b, b.nentries ? "]" : "[]", b.nentries ? 1 : 2);
    /* the whole of the table's text, not only a beginning of it */
    if (b.text_same && b.text_len != ftable_text_len(b.tab))
        text_diverge(&b, b.text_len);
    text_flush(&b);
    if (b.text_same && b.text_fd >= 0) { /* the text is the table's: its file stayed empty */
        close(b.text_fd);
        b.text_fd = -1;
    }
    /* an entry that could not be serialised (out of memory), or a text not read back: the
     * entries are not complete, and are not stored */
    if (worker_failed(&b, e))
        goto out;
    if (b.racy)
        caris_op_log(o->op, LOG_INFO,
                     "%llu file%s changed less than %d s before the previous backup started: "
                     "read again, not taken as unchanged (a change right after that backup read "
                     "%s may have left the same timestamps)",
                     (unsigned long long)b.racy, b.racy == 1 ? "" : "s", RACY_WINDOW_S,
                     b.racy == 1 ? "it" : "them");
    if (pref && (entries_ref = manifest_reuse(&b, pref, parent_sha))) {
        manifest_reused = true;
        memcpy(entries_sha, parent_sha, 32);
        caris_op_log(o->op, LOG_DEBUG, "entries identical to the previous backup's: reused");
    } else {
        int prc = b.text_fd >= 0
                      ? repo_snapshot_put_entries_fd(r, b.w, b.text_fd, b.text_len, &entries_ref, e)
                      : repo_snapshot_put_entries_text(r, b.w, text_data(&b), b.text_len,
                                                       &entries_ref, e);
        if (prc != 0)
            goto out;
        if (cx_unhex(json_string_value(json_object_get(entries_ref, "sha256")), entries_sha, 32) !=
            0) {
            err_set(e, ERR_FAILURE, "report this as a bug",
                    "internal error: stored entries without their SHA-256");
            goto out;
        }
    }
    b.manifest_ns += (uint64_t)(time_mono_ns() - man0);
    if (repo_writer_flush(b.w, e) != 0)
        goto out;
    struct repo_writer_stats ws;
    repo_writer_get_stats(b.w, &ws);
    int64_t end_ns = start_ns + (time_mono_ns() - clock0);
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
    json_object_set_new(summary, "root_ancestors", root_ancestors(roots));
    char name[65];
    int64_t commit0 = time_mono_ns();
    if (repo_snapshot_commit(r, summary, entries_ref, name, e) != 0)
        goto out;
    b.manifest_ns += (uint64_t)(time_mono_ns() - commit0);
    json_object_set_new(summary, "_file", json_string(name));
    if (b.nb) {
        /* the next backup's table: a failure costs that backup time, not correctness. When it
         * would be the table there is, byte for byte (the same entries: nothing changed), that
         * one is kept: it is bound to the entries, so it serves this backup as it served the
         * parent. */
        int64_t t0 = time_mono_ns();
        struct err te = ERR_INIT;
        if (b.tab && ftable_builder_same(b.nb, b.tab, entries_sha))
            table_kept = true;
        else if ((b.text_fd >= 0 ? ftable_builder_write_fd(b.nb, tab_path, tab_key, entries_sha,
                                                           b.text_fd, b.text_len, &te)
                                 : ftable_builder_write(b.nb, tab_path, tab_key, entries_sha,
                                                        text_data(&b), b.text_len, &te)) != 0)
            caris_op_log(o->op, LOG_WARN, "file table cache not written: %s", te.msg);
        b.manifest_ns += (uint64_t)(time_mono_ns() - t0);
    }
    /* Added after the commit: this run's profile, reported, not stored in the repository. */
    json_object_set_new(json_object_get(summary, "stats"), "stage_ms", stage_ms_json(&b, &ws));
    json_object_set_new(json_object_get(summary, "stats"), "unread",
                        json_integer((json_int_t)b.nunread));
    json_object_set_new(json_object_get(summary, "stats"), "reused",
                        json_pack("{s:b, s:b, s:I, s:I}", "manifest", manifest_reused, "file_table",
                                  table_kept, "snapshots_read", (json_int_t)snaps_read,
                                  "snapshots_cached",
                                  (json_int_t)(json_array_size(snaps) > snaps_read
                                                   ? json_array_size(snaps) - snaps_read
                                                   : 0)));
    *summary_out = summary;
    summary = NULL;
    rc = b.nwarnings ? CARIS_DONE_WARNINGS : CARIS_DONE;
out:
    /* readers first: they feed the workers */
    if (b.readers)
        pool_free(b.readers);
    /* batches left open by a backup that stopped early: their jobs run as every job in
     * flight does (nothing is stored after a failure) and free what they hold */
    if (b.rbufs && b.pool)
        batches_submit_all(&b);
    if (b.pool)
        pool_free(b.pool);
    for (size_t i = 0; b.rbufs && i < READERS; i++) {
        free(b.rbufs[i].p);
        pthread_mutex_destroy(&b.rbufs[i].mu);
    }
    free(b.rbufs);
    for (size_t i = b.nflushed; i < b.nentries; i++) {
        if (b.entry_recs[i])
            rec_free(b.entry_recs[i]);
        tpend_free(b.entry_tp[i]);
    }
    free(b.entry_recs);
    free(b.entry_tp);
    free(b.entry_text);
    ftable_builder_free(b.nb);
    ftable_close(b.tab);
    free(tab_path);
    cx_wipe(tab_key, sizeof(tab_key));
    buf_free(&b.keybuf);
    buf_free(&b.text);
    if (b.text_fd >= 0)
        close(b.text_fd);
    if (claimed)
        backup_id_release(r, id);
    repo_unlock(r);
    repo_writer_free(b.w);
    prev_free(b.prev);
    json_decref(parent);
    json_decref(summary);
    json_decref(entries_ref);
    json_decref(pref);
    json_decref(snaps);
    json_decref(b.entries);
    json_decref(b.warnings);
    json_decref(roots);
    pstore_destroy(&b.ps);
    pthread_mutex_destroy(&b.warn_mu);
    for (int i = 0; i < b.spares.n; i++)
        free(b.spares.p[i]);
    for (int i = 0; i < b.bigspares.n; i++)
        free(b.bigspares.p[i]);
    pthread_mutex_destroy(&b.spares.mu);
    pthread_mutex_destroy(&b.inflight.mu);
    pthread_cond_destroy(&b.inflight.cv);
    pthread_mutex_destroy(&b.bigspares.mu);
    chunker_wipe(&b.ch);
    return rc;
}

int caris_files_backup_full(struct repo *r, const struct files_backup_opts *o,
                            struct caris_backup_result *res, struct err *e)
{
    json_t *summary = NULL;
    int rc = files_backup(r, o, false, &summary, e);
    backup_result_take(res, summary);
    return rc;
}

int caris_files_backup_incremental(struct repo *r, const struct files_backup_opts *o,
                                   struct caris_backup_result *res, struct err *e)
{
    json_t *summary = NULL;
    int rc = files_backup(r, o, true, &summary, e);
    backup_result_take(res, summary);
    return rc;
}

json_t *caris_backup_list(struct repo *r, const char *kind, struct err *e)
{
    return caris_backup_list_damaged(r, kind, NULL, e);
}

json_t *caris_backup_list_damaged(struct repo *r, const char *kind, json_t **damaged, struct err *e)
{
    json_t *list = repo_snapshot_list(r, damaged, e);
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

/* Byte streams: one reader (the caller's fd or buffer), chunking and the stream's SHA-256 on
 * this thread, chunk ids, dedup, compression and encryption on worker threads. */
#include "caris/stream.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caris/crypto.h"
#include "caris/op.h"
#include "caris/pipeline.h"
#include "caris/pool.h"
#include "caris/readplan.h"
#include "streamplan.h"

#define READ_CHUNK (1u << 20)
#define REF_BLOCK 1024
/* restore: chunks fetched ahead of the writer. 64 MiB (4,096 dump chunks) took a database
 * restore's peak RSS to 136-140 MiB; 16 MiB gives 75 (the Argon2id floor) at the same speed. */
#define WINDOW_BYTES (16u << 20)

struct ref {
    uint8_t id[32];
    uint32_t len;
};

/* Consecutive chunks go to a worker together, up to BATCH_BYTES or BATCH_MAX chunks: one
 * queue hand-off and one wake-up per batch instead of per chunk (a 650 MB dump is ~26,000
 * chunks; per chunk, the futex calls were the most frequent system call of a backup). */
#define BATCH_BYTES (256u << 10)
#define BATCH_MAX 64

struct sjob {
    struct sctx *c;
    uint8_t *data; /* the chunks, back to back */
    size_t used, cap, n;
    uint32_t len[BATCH_MAX];
    struct ref *ref[BATCH_MAX];
};

struct sctx {
    struct pstore ps;
    struct pool *pool;
    struct ref **blocks; /* blocks never move: workers write through pointers */
    size_t nrefs, nblocks;
    struct sjob *open; /* the batch being filled, not yet submitted */
};

static void store_job(void *arg, int worker)
{
    struct sjob *j = arg;
    size_t off = 0;
    for (size_t i = 0; i < j->n; i++) {
        pstore_chunk(&j->c->ps, worker, j->data + off, j->len[i], j->ref[i]->id);
        off += j->len[i];
    }
    free(j->data);
    free(j);
}

static void batch_submit(struct sctx *c, uint64_t *queue_ns)
{
    if (!c->open)
        return;
    int64_t t0 = time_mono_ns();
    pool_submit(c->pool, store_job, c->open);
    *queue_ns += (uint64_t)(time_mono_ns() - t0);
    c->open = NULL;
}

/* rest: the bytes known to come, this chunk's included (SIZE_MAX when more may be read): a
 * batch is not made larger than they need. A buffer's or a short file's batch of 256 KiB was
 * mapped afresh for a few bytes, and a physical backup stores each small file so: 6,800 such
 * mappings in one test, each faulting in its pages (and, under AddressSanitizer, its shadow's). */
static void emit(struct sctx *c, const uint8_t *p, size_t len, size_t rest, uint64_t *queue_ns)
{
    if (c->nrefs / REF_BLOCK >= c->nblocks) {
        c->blocks = xrealloc(c->blocks, xsize(c->nblocks + 1, sizeof(*c->blocks), 0));
        c->blocks[c->nblocks++] = xmalloc(sizeof(struct ref) * REF_BLOCK);
    }
    struct ref *ref = &c->blocks[c->nrefs / REF_BLOCK][c->nrefs % REF_BLOCK];
    c->nrefs++;
    ref->len = (uint32_t)len;
    if (c->open && (c->open->n == BATCH_MAX || c->open->used + len > c->open->cap))
        batch_submit(c, queue_ns);
    if (!c->open) {
        struct sjob *j = xcalloc(1, sizeof(*j));
        j->c = c;
        j->cap = rest < BATCH_BYTES ? rest : BATCH_BYTES;
        if (j->cap < len)
            j->cap = len;
        j->data = xmalloc(j->cap);
        c->open = j;
    }
    struct sjob *j = c->open;
    memcpy(j->data + j->used, p, len);
    j->used += len;
    j->len[j->n] = (uint32_t)len;
    j->ref[j->n] = ref;
    j->n++;
}

/* Source of bytes: an fd, or a buffer. Returns bytes read, 0 at end, -1 (errno) on error. */
struct src {
    int fd;
    const uint8_t *buf;
    size_t len, pos;
    const struct caris_op *op; /* cancel: checked at least every CANCEL_POLL_MS while reading */
    void (*tap)(void *ctx, const uint8_t *p, size_t n); /* sees every byte read, or NULL */
    void *tap_ctx;
    bool here; /* one worker: the chunks are stored on this thread, as a buffer's are */
};

#define CANCEL_POLL_MS 250

static ssize_t src_read(struct src *s, uint8_t *out, size_t n)
{
    if (s->buf) {
        size_t k = s->len - s->pos < n ? s->len - s->pos : n;
        memcpy(out, s->buf + s->pos, k);
        s->pos += k;
        return (ssize_t)k;
    }
    for (;;) {
        /* A producer may stall (pg_dump waiting for a table lock): wait in slices, so that a
         * cancel is seen even then. */
        if (caris_op_cancelled(s->op)) {
            errno = ECANCELED;
            return -1;
        }
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, s->op ? CANCEL_POLL_MS : -1);
        if (pr < 0 && errno != EINTR)
            return -1;
        if (pr <= 0)
            continue;
        ssize_t r = read(s->fd, out, n);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        return r;
    }
}

static int store(struct repo *r, struct repo_writer *w, int first_slot, int threads, struct src *s,
                 const struct chunker_params *cp, struct stream_result *out,
                 void (*progress)(void *, uint64_t), void *ctx, struct err *e)
{
    struct chunker ch;
    memset(out, 0, sizeof(*out));
    if (chunker_init(&ch, cp, repo_chunker_seed(r)) != 0)
        return err_set(e, ERR_FAILURE, NULL, "invalid chunker parameters");
    struct sctx c = {0};
    pstore_init(&c.ps, r, w, first_slot);
    /* A buffer with one worker (a physical backup's small files, manifests, snapshots), or a
     * file for the metadata slot (a file backup's entries): its chunks are stored on this
     * thread (pool_submit on NULL), with no thread to start. */
    bool here = (s->buf || s->here) && threads == 1;
    c.pool = here ? NULL : pool_new(threads > 0 ? threads : sys_ncpu(), 8);
    /* An fd is read into rbuf; a buffer is chunked where it is, as if read whole. */
    size_t cap = s->buf ? 0 : READ_CHUNK + cp->max_size;
    uint8_t *rbuf = s->buf ? NULL : xmalloc(cap);
    const uint8_t *data = s->buf ? s->buf : rbuf;
    size_t have = s->buf ? s->len : 0;
    bool eof = s->buf != NULL;
    int rc = 0;
    struct cx_sha256 *h = cx_sha256_new();
    if (s->buf) {
        int64_t t1 = time_mono_ns();
        cx_sha256_update(h, s->buf, s->len);
        out->sha_ns += (uint64_t)(time_mono_ns() - t1);
        out->bytes = s->len;
    }
    while (!eof || have) {
        while (!eof && have < cap) {
            int64_t t0 = time_mono_ns();
            ssize_t n = src_read(s, rbuf + have, cap - have);
            int64_t t1 = time_mono_ns();
            out->read_ns += (uint64_t)(t1 - t0);
            if (n < 0) {
                if (errno == ECANCELED)
                    rc =
                        err_set(e, ERR_FAILURE, "nothing was committed: run it again", "cancelled");
                else
                    rc = err_sys(e, errno, NULL, "cannot read the stream");
                break;
            }
            if (n == 0) {
                eof = true;
                break;
            }
            cx_sha256_update(h, rbuf + have, (size_t)n);
            out->sha_ns += (uint64_t)(time_mono_ns() - t1);
            if (s->tap)
                s->tap(s->tap_ctx, rbuf + have, (size_t)n);
            have += (size_t)n;
            out->bytes += (uint64_t)n;
        }
        if (rc)
            break;
        size_t used = 0;
        while (have - used > 0 && (eof || have - used >= cp->max_size)) {
            int64_t t0 = time_mono_ns();
            size_t cut = chunker_cut(&ch, data + used, have - used);
            out->chunk_ns += (uint64_t)(time_mono_ns() - t0);
            emit(&c, data + used, cut, eof ? have - used : SIZE_MAX, &out->queue_ns);
            used += cut;
        }
        if (rbuf)
            memmove(rbuf, rbuf + used, have - used);
        have -= used;
        if (progress)
            progress(ctx, out->bytes);
        if (pstore_failed(&c.ps, NULL))
            break;
    }
    batch_submit(&c, &out->queue_ns); /* after a failure too: every ref gets its id */
    int64_t tq = time_mono_ns();
    pool_free(c.pool); /* waits for the last chunks */
    out->queue_ns += (uint64_t)(time_mono_ns() - tq);
    out->id_ns = c.ps.id_ns;
    cx_sha256_final(h, out->sha256);
    cx_sha256_free(h);
    free(rbuf);
    if (rc == 0 && pstore_failed(&c.ps, e))
        rc = -1;
    if (rc == 0) {
        out->chunks = json_array();
        for (size_t i = 0; i < c.nrefs; i++) {
            struct ref *ref = &c.blocks[i / REF_BLOCK][i % REF_BLOCK];
            char hex[65];
            cx_hex(ref->id, 32, hex);
            json_array_append_new(out->chunks, json_pack("[s, I]", hex, (json_int_t)ref->len));
        }
    }
    for (size_t i = 0; i < c.nblocks; i++)
        free(c.blocks[i]);
    free(c.blocks);
    pstore_destroy(&c.ps);
    chunker_wipe(&ch);
    return rc;
}

int stream_store_fd(struct repo *r, struct repo_writer *w, int threads, int fd,
                    const struct chunker_params *cp, struct stream_result *out,
                    void (*progress)(void *ctx, uint64_t bytes), void *ctx,
                    const struct caris_op *op, struct err *e)
{
    return stream_store_fd_tap(r, w, threads, fd, cp, out, progress, ctx, NULL, NULL, op, e);
}

int stream_store_fd_tap(struct repo *r, struct repo_writer *w, int threads, int fd,
                        const struct chunker_params *cp, struct stream_result *out,
                        void (*progress)(void *ctx, uint64_t bytes), void *ctx,
                        void (*tap)(void *tap_ctx, const uint8_t *p, size_t n), void *tap_ctx,
                        const struct caris_op *op, struct err *e)
{
    struct src s = {.fd = fd, .op = op, .tap = tap, .tap_ctx = tap_ctx};
    return store(r, w, 0, threads, &s, cp, out, progress, ctx, e);
}

/* A buffer source is told apart from a descriptor by its pointer: an empty buffer may come
 * without one (a struct buf never appended to), and would otherwise be read as descriptor -1,
 * polled forever. */
static const uint8_t EMPTY_BUF[1];

int stream_store_buf(struct repo *r, struct repo_writer *w, int threads, const void *data,
                     size_t len, const struct chunker_params *cp, struct stream_result *out,
                     struct err *e)
{
    struct src s = {.fd = -1, .buf = data ? data : EMPTY_BUF, .len = data ? len : 0};
    return store(r, w, 0, threads, &s, cp, out, NULL, NULL, e);
}

int stream_store_meta_buf(struct repo *r, struct repo_writer *w, const void *data, size_t len,
                          const struct chunker_params *cp, struct stream_result *out, struct err *e)
{
    struct src s = {.fd = -1, .buf = data ? data : EMPTY_BUF, .len = data ? len : 0};
    return store(r, w, repo_writer_meta_slot(w), 1, &s, cp, out, NULL, NULL, e);
}

int stream_store_meta_fd(struct repo *r, struct repo_writer *w, int fd,
                         const struct chunker_params *cp, struct stream_result *out, struct err *e)
{
    struct src s = {.fd = fd, .here = true};
    return store(r, w, repo_writer_meta_slot(w), 1, &s, cp, out, NULL, NULL, e);
}

/* ---- restore ------------------------------------------------------------------------- */

struct sink {
    int fd;
    struct buf *buf;
    size_t max;
    const struct caris_op *op;
};

static int sink_write(struct sink *s, const uint8_t *p, size_t n, struct err *e)
{
    if (s->buf) {
        if (s->buf->len + n > s->max)
            return err_set(e, ERR_DAMAGE, NULL, "stream longer than %zu bytes", s->max);
        buf_append(s->buf, p, n);
        return 0;
    }
    while (n) {
        ssize_t w = write(s->fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EAGAIN) {
            /* A non-blocking pipe whose reader waits (pg_restore behind a lock): wait in
             * slices, so that a cancel is seen even then. */
            if (caris_op_check(s->op, NULL, e) != 0)
                return -1;
            struct pollfd pfd = {.fd = s->fd, .events = POLLOUT};
            poll(&pfd, 1, s->op ? CANCEL_POLL_MS : -1);
        } else if (w == 0 || errno != EINTR) {
            return err_sys(e, w == 0 ? EIO : errno, NULL, "cannot write the restored stream");
        }
    }
    return 0;
}

/* Where restored chunks go, in order: the whole stream's hash, the sink, progress. */
struct put {
    struct sink *sk;
    struct cx_sha256 *h;
    uint64_t written;
    void (*progress)(void *, uint64_t);
    void *ctx;
};

static int put_chunk(void *arg, const uint8_t *data, size_t len, struct err *e)
{
    struct put *pt = arg;
    cx_sha256_update(pt->h, data, len);
    if (sink_write(pt->sk, data, len, e) != 0)
        return -1;
    pt->written += len;
    if (pt->progress)
        pt->progress(pt->ctx, pt->written);
    return 0;
}

/* Chunk by chunk through the fetch queue: chunks are loaded on shared when own is false (the
 * caller's pool; NULL: in this thread), else on a pool of threads workers made for this
 * stream, unless the stream is one chunk or at most INLINE_MAX bytes: then in this thread, as
 * starting and joining the workers costs more than they could save (snapshot metadata, page
 * hash lists, small WAL files: many per restore). */
#define INLINE_MAX (1u << 20)
static int restore_queued(struct repo *r, const struct chunk_item *refs, size_t n, uint64_t total,
                          struct put *pt, int threads, bool own, struct pool *shared,
                          unsigned load_flags, struct err *e)
{
    if (own && (n <= 1 || total <= INLINE_MAX)) {
        own = false;
        shared = NULL;
    }
    struct pool *pool = own ? pool_new(threads > 0 ? threads : sys_ncpu(), 64) : shared;
    /* loads in this thread (no pool) gain nothing from a window ahead: one chunk at a time,
     * in the same order, instead of up to WINDOW_BYTES of them waiting in memory */
    struct fetchq *q = fetchq_new(r, pool, load_flags, SIZE_MAX, pool ? WINDOW_BYTES : 1);
    struct buf data = {0};
    size_t next = 0; /* next chunk to ask for */
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (caris_op_check(pt->sk->op, NULL, e) != 0) {
            rc = -1;
            break;
        }
        while (next < n && fetchq_room(q, refs[next].len)) {
            fetchq_submit_item(q, &refs[next], NULL);
            next++;
        }
        void *tag;
        if (fetchq_next(q, &tag, &data, e) != 0)
            rc = err_wrap(e, "chunk %zu of %zu", i + 1, n);
        else
            rc = put_chunk(pt, data.data, data.len, e);
    }
    fetchq_free(q); /* waits for loads still running after a failure */
    if (own)
        pool_free(pool);
    buf_free(&data);
    return rc;
}

/* From storage where a request costs far more than a byte (readplan_preferred: S3), a stream
 * longer than STREAMPLAN_MIN restored by this call or on the caller's pool is read through
 * windowed read plans (streamplan.h: ranged reads covering many chunks, on readplan_threads
 * threads instead of the pool's). Shorter streams, and one restored inside a job of another
 * pool (shared NULL, not own: a physical restore's small files, several at once) keep the
 * chunk-by-chunk loads, whose reads share the storage's read windows with the other streams
 * of those packs. */
static int restore(struct repo *r, json_t *chunks, const uint8_t sha[32], struct sink *sk,
                   int threads, bool own, struct pool *shared, unsigned load_flags,
                   void (*progress)(void *, uint64_t), void *ctx, struct err *e)
{
    struct chunk_item *refs;
    size_t n;
    /* page deltas (incremental physical backups) are rebuilt by the fetch queue or the plan */
    if (!json_is_array(chunks) || chunklist_decode_items(chunks, &refs, &n) != 0)
        return err_set(e, ERR_DAMAGE, NULL, "malformed chunk list");
    struct put pt = {.sk = sk, .h = cx_sha256_new(), .progress = progress, .ctx = ctx};
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += refs[i].len;
    /* into a buffer: its whole length at once (snapshot entries are tens of MiB), not by
     * doubling and copying; a longer stream than max fails in sink_write as before */
    if (sk->buf && total <= sk->max)
        buf_reserve(sk->buf, (size_t)total);
    int rc;
    if (readplan_preferred(r) && (own || shared) && total > STREAMPLAN_MIN)
        rc =
            streamplan_run(r, refs, n, 0, readplan_threads(r, own ? threads : pool_threads(shared)),
                           load_flags, put_chunk, &pt, sk->op, e);
    else
        rc = restore_queued(r, refs, n, total, &pt, threads, own, shared, load_flags, e);
    free(refs);
    uint8_t sum[32];
    cx_sha256_final(pt.h, sum);
    cx_sha256_free(pt.h);
    if (rc == 0 && memcmp(sum, sha, 32) != 0)
        rc = err_set(e, ERR_DAMAGE, "the backup is corrupted: use a different backup",
                     "checksum mismatch: the restored stream's SHA-256 differs from the one "
                     "recorded at backup time");
    return rc;
}

int stream_restore_fd(struct repo *r, json_t *chunks, const uint8_t sha256[32], int fd, int threads,
                      void (*progress)(void *ctx, uint64_t bytes), void *ctx,
                      const struct caris_op *op, struct err *e)
{
    return stream_restore_fd_flags(r, chunks, sha256, fd, threads, 0, progress, ctx, op, e);
}

int stream_restore_fd_flags(struct repo *r, json_t *chunks, const uint8_t sha256[32], int fd,
                            int threads, unsigned load_flags,
                            void (*progress)(void *ctx, uint64_t bytes), void *ctx,
                            const struct caris_op *op, struct err *e)
{
    struct sink s = {.fd = fd, .op = op};
    return restore(r, chunks, sha256, &s, threads, true, NULL, load_flags, progress, ctx, e);
}

int stream_restore_fd_on(struct repo *r, json_t *chunks, const uint8_t sha256[32], int fd,
                         struct pool *pool, unsigned load_flags,
                         void (*progress)(void *ctx, uint64_t bytes), void *ctx,
                         const struct caris_op *op, struct err *e)
{
    struct sink s = {.fd = fd, .op = op};
    return restore(r, chunks, sha256, &s, 0, false, pool, load_flags, progress, ctx, e);
}

/* own: on a pool of the stream's own (or in this thread when it is small); else in this
 * thread */
static int restore_buf(struct repo *r, json_t *chunks, const uint8_t sha256[32], size_t max,
                       bool own, struct buf *out, struct err *e)
{
    out->len = 0;
    struct sink s = {.fd = -1, .buf = out, .max = max};
    return restore(r, chunks, sha256, &s, 0, own, NULL, 0, NULL, NULL, e);
}

int stream_restore_buf(struct repo *r, json_t *chunks, const uint8_t sha256[32], size_t max,
                       struct buf *out, struct err *e)
{
    return restore_buf(r, chunks, sha256, max, true, out, e);
}

int stream_restore_buf_here(struct repo *r, json_t *chunks, const uint8_t sha256[32], size_t max,
                            struct buf *out, struct err *e)
{
    return restore_buf(r, chunks, sha256, max, false, out, e);
}

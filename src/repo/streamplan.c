/* Stream restores through windowed read plans (see streamplan.h): a producer thread runs one
 * plan per window, the caller's thread writes chunks out in order as they land. */
#include "streamplan.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "caris/crypto.h"
#include "caris/pagedelta.h"
#include "caris/readplan.h"
#include "internal.h"

size_t streamplan_window_end(size_t first, size_t n, uint64_t budget,
                             uint64_t (*cost)(void *ctx, size_t i), void *ctx)
{
    if (first >= n)
        return first;
    uint64_t sum = cost(ctx, first);
    size_t end = first + 1;
    while (end < n) {
        uint64_t c = cost(ctx, end);
        if (sum > budget || c > budget - sum)
            break;
        sum += c;
        end++;
    }
    return end;
}

enum { SLOT_PENDING, SLOT_READY, SLOT_DAMAGED };
/* What a use of the plan stands for (its off): an item's chunk, or one of a delta's blobs. */
enum { PART_CHUNK, PART_DELTA, PART_BASE };

struct slot {
    const struct chunk_item *item;
    uint8_t *dst;           /* its plaintext, in the window's buffer */
    int state;              /* under splan.mu */
    int parts;              /* page delta: its blobs that came (or failed), under splan.mu */
    struct buf delta, base; /* page delta: its two blobs until the block is rebuilt */
    struct err *err;        /* SLOT_DAMAGED: why */
};

struct window {
    size_t first, end; /* items [first, end) */
    uint8_t *data;     /* their plaintext, back to back: bytes */
    size_t bytes;
    struct slot *slots;
};

struct splan {
    struct repo *r;
    const struct chunk_item *items;
    size_t n;
    uint64_t budget;
    int threads;
    unsigned load_flags;
    const struct caris_op *op;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Window k lives in win[k % 2]. The producer sets window k up only once window k - 2 is
     * written (done >= k - 1): never more than two windows exist. */
    struct window win[2];
    size_t ready;      /* windows set up (their slots may be waited on) */
    size_t done;       /* windows written out */
    struct slot *want; /* the slot the writer waits for (settling it wakes the writer) */
    bool stop;         /* the writer is finished: the producer stops */
    bool over;         /* the producer is finished */
    struct err err;    /* why it finished early (ERR_INIT: it did not) */
};

static uint64_t blob_len(struct repo *r, const uint8_t id[32])
{
    struct ientry en;
    return repo_lookup_entry(r, id, &en) ? (en.ulen_flags & ULEN_MASK) : 0;
}

static uint64_t item_cost(void *ctx, size_t i)
{
    struct splan *sp = ctx;
    const struct chunk_item *c = &sp->items[i];
    if (!c->delta)
        return c->len;
    return (uint64_t)c->len + blob_len(sp->r, c->id) + blob_len(sp->r, c->base);
}

static void window_clear(struct window *w)
{
    for (size_t i = 0; w->slots && i < w->end - w->first; i++) {
        struct slot *s = &w->slots[i];
        buf_free(&s->delta);
        buf_free(&s->base);
        free(s->err);
    }
    free(w->slots);
    if (w->data)
        cx_wipe(w->data, w->bytes); /* restored plaintext: not left in freed memory */
    free(w->data);
    memset(w, 0, sizeof(*w));
}

/* Marks s ready (e NULL) or damaged, once; wakes the writer when it waits for s. */
static void settle(struct splan *sp, struct slot *s, const struct err *e)
{
    pthread_mutex_lock(&sp->mu);
    if (s->state == SLOT_PENDING) {
        if (e) {
            s->err = xmalloc(sizeof(*s->err));
            *s->err = *e;
            s->state = SLOT_DAMAGED;
        } else {
            s->state = SLOT_READY;
        }
        if (sp->want == s)
            pthread_cond_broadcast(&sp->cv);
    }
    pthread_mutex_unlock(&sp->mu);
}

static bool writer_stopped(struct splan *sp)
{
    pthread_mutex_lock(&sp->mu);
    bool s = sp->stop;
    pthread_mutex_unlock(&sp->mu);
    return s;
}

/* Both blobs of a page delta are there: the block they make goes in place. */
static void rebuild(struct splan *sp, struct slot *s)
{
    struct buf block = {0};
    struct err e = ERR_INIT;
    int rc = pagedelta_apply(s->delta.data, s->delta.len, s->item->base, s->base.data, s->base.len,
                             s->item->len, &block, &e);
    if (rc == 0)
        memcpy(s->dst, block.data, s->item->len);
    if (block.data)
        cx_wipe(block.data, block.len);
    buf_free(&block);
    cx_wipe(s->delta.data, s->delta.len);
    cx_wipe(s->base.data, s->base.len);
    buf_free(&s->delta);
    buf_free(&s->base);
    settle(sp, s, rc == 0 ? NULL : &e);
}

static int on_use(void *ctx, void *tag, uint64_t part, const uint8_t *data, size_t len,
                  struct err *e)
{
    struct splan *sp = ctx;
    struct slot *s = tag;
    if (writer_stopped(sp))
        return err_set(e, ERR_FAILURE, NULL, "stream restore stopped");
    if (part == PART_CHUNK) {
        memcpy(s->dst, data, len); /* len is the item's: readplan checked it */
        settle(sp, s, NULL);
        return 0;
    }
    /* A delta's blob: kept until the other one came (both land on different buffers; the
     * count under the lock orders them). */
    buf_append(part == PART_DELTA ? &s->delta : &s->base, data, len);
    pthread_mutex_lock(&sp->mu);
    bool both = ++s->parts == 2 && s->state == SLOT_PENDING;
    pthread_mutex_unlock(&sp->mu);
    if (both)
        rebuild(sp, s);
    return 0;
}

static void on_damaged(void *ctx, void *tag, uint64_t part, const struct err *e)
{
    struct splan *sp = ctx;
    struct slot *s = tag;
    struct err we = *e;
    if (part == PART_BASE)
        err_wrap(&we, "base block of a page delta");
    settle(sp, s, &we);
    if (part != PART_CHUNK) {
        pthread_mutex_lock(&sp->mu);
        s->parts++;
        pthread_mutex_unlock(&sp->mu);
    }
}

static const struct readplan_ops PLAN_OPS = {.use = on_use, .damaged = on_damaged};

/* Sets window k (items from first) up in its buffer and adds its uses to p. */
static void window_setup(struct splan *sp, struct readplan *p, size_t k, size_t first)
{
    struct window *w = &sp->win[k % 2];
    window_clear(w); /* window k - 2, written out */
    w->first = first;
    w->end = streamplan_window_end(first, sp->n, sp->budget, item_cost, sp);
    size_t total = 0;
    for (size_t i = first; i < w->end; i++)
        total += sp->items[i].len; /* a window's items are within REPO_MAX_BLOB each */
    w->data = xmalloc(total ? total : 1);
    w->bytes = total;
    w->slots = xcalloc(w->end - first, sizeof(*w->slots));
    size_t at = 0;
    for (size_t i = first; i < w->end; i++) {
        const struct chunk_item *c = &sp->items[i];
        struct slot *s = &w->slots[i - first];
        s->item = c;
        s->dst = w->data + at;
        at += c->len;
        if (!c->delta) {
            readplan_add(p, c->id, c->len, s, PART_CHUNK);
        } else {
            /* the blobs' lengths are the index's (unknown ids: reported as damage) */
            readplan_add(p, c->id, (uint32_t)blob_len(sp->r, c->id), s, PART_DELTA);
            readplan_add(p, c->base, (uint32_t)blob_len(sp->r, c->base), s, PART_BASE);
        }
    }
}

static void *producer_main(void *arg)
{
    struct splan *sp = arg;
    struct readplan *p = readplan_new(sp->r);
    struct err e = ERR_INIT;
    int rc = 0;
    size_t first = 0;
    for (size_t k = 0; first < sp->n; k++) {
        pthread_mutex_lock(&sp->mu);
        while (!sp->stop && k >= sp->done + 2)
            pthread_cond_wait(&sp->cv, &sp->mu);
        bool stop = sp->stop;
        pthread_mutex_unlock(&sp->mu);
        if (stop)
            break;
        window_setup(sp, p, k, first);
        pthread_mutex_lock(&sp->mu);
        sp->ready = k + 1;
        pthread_cond_broadcast(&sp->cv);
        pthread_mutex_unlock(&sp->mu);
        rc = readplan_run(p, sp->threads, sp->load_flags, &PLAN_OPS, sp, sp->op, &e);
        if (rc != 0)
            break;
        first = sp->win[k % 2].end;
    }
    readplan_free(p);
    pthread_mutex_lock(&sp->mu);
    sp->over = true;
    if (rc != 0)
        sp->err = e;
    pthread_cond_broadcast(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
    return NULL;
}

/* Why the producer finished without settling what the writer waits for (under sp->mu). */
static int producer_failure(struct splan *sp, struct err *e)
{
    if (err_is_set(&sp->err))
        *e = sp->err;
    else
        err_set(e, ERR_FAILURE, NULL, "stream restore: the read plan ended early");
    return -1;
}

int streamplan_run(struct repo *r, const struct chunk_item *items, size_t n, uint64_t window,
                   int threads, unsigned load_flags, streamplan_write_fn write, void *ctx,
                   const struct caris_op *op, struct err *e)
{
    if (n == 0)
        return 0;
    struct splan sp = {.r = r,
                       .items = items,
                       .n = n,
                       .budget = window ? window : STREAMPLAN_WINDOW,
                       .threads = threads > 0 ? threads : 1,
                       .load_flags = load_flags,
                       .op = op,
                       .err = ERR_INIT};
    pthread_mutex_init(&sp.mu, NULL);
    pthread_cond_init(&sp.cv, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, producer_main, &sp) != 0) {
        pthread_mutex_destroy(&sp.mu);
        pthread_cond_destroy(&sp.cv);
        return err_set(e, ERR_FAILURE, NULL, "cannot start a thread");
    }
    int rc = 0;
    size_t i = 0;
    for (size_t k = 0; i < n && rc == 0; k++) {
        pthread_mutex_lock(&sp.mu);
        while (sp.ready <= k && !sp.over)
            pthread_cond_wait(&sp.cv, &sp.mu);
        if (sp.ready <= k) {
            rc = producer_failure(&sp, e);
            pthread_mutex_unlock(&sp.mu);
            break;
        }
        struct window *w = &sp.win[k % 2];
        pthread_mutex_unlock(&sp.mu);
        for (; i < w->end && rc == 0; i++) {
            if (caris_op_check(op, NULL, e) != 0) {
                rc = -1;
                break;
            }
            struct slot *s = &w->slots[i - w->first];
            pthread_mutex_lock(&sp.mu);
            sp.want = s;
            while (s->state == SLOT_PENDING && !sp.over)
                pthread_cond_wait(&sp.cv, &sp.mu);
            sp.want = NULL;
            int st = s->state;
            if (st == SLOT_PENDING)
                rc = producer_failure(&sp, e);
            pthread_mutex_unlock(&sp.mu);
            if (st == SLOT_DAMAGED) {
                *e = *s->err;
                rc = err_wrap(e, "chunk %zu of %zu", i + 1, n);
            } else if (st == SLOT_READY) {
                rc = write(ctx, s->dst, s->item->len, e);
            }
        }
        pthread_mutex_lock(&sp.mu);
        sp.done = k + 1;
        pthread_cond_broadcast(&sp.cv);
        pthread_mutex_unlock(&sp.mu);
    }
    pthread_mutex_lock(&sp.mu);
    sp.stop = true; /* a producer still reading stops at its next blob */
    pthread_cond_broadcast(&sp.cv);
    pthread_mutex_unlock(&sp.mu);
    pthread_join(th, NULL);
    for (int k = 0; k < 2; k++)
        window_clear(&sp.win[k]);
    pthread_mutex_destroy(&sp.mu);
    pthread_cond_destroy(&sp.cv);
    return rc;
}

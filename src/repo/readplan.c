/* Read plans: blobs read grouped by pack, in merged ranges, on several threads (see
 * caris/readplan.h). */
#include "caris/readplan.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "caris/crypto.h"
#include "caris/pool.h"
#include "internal.h"

struct use {
    uint8_t id[32];
    uint32_t len;
    void *tag;
    uint64_t off;
    struct ientry en; /* where the blob lies */
};

struct readplan {
    struct repo *r;
    struct use *v;
    size_t n, cap;
};

struct run {
    struct readplan *p;
    const struct readplan_ops *ops;
    void *ctx;
    const struct caris_op *op;
    bool check_id;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a lead range's key is settled */
    bool stop;
    struct err fatal;
    struct wbufs *wb; /* one per worker */
    /* Packs whose key was not known when the plan ran and whose first range starts at 0 (its
     * lead: it brings the header): their other ranges wait for the lead's key after their
     * own read instead of reading the header alone. keyed: the lead tried (under mu). */
    bool *keyed;
    size_t nkeyed;
};

/* A worker's read and decompression buffers, kept from one range to the next: freed and
 * allocated again per range, every range's pages were fresh ones the kernel had to fault in
 * and zero (4-5 % of a 2 GiB restore's CPU). Wiped after each range. */
struct wbufs {
    struct buf data, plain;
};

/* One read: uses v[first .. last) of one pack, their blobs in [start, start + len). lead: the
 * index in run.keyed of its pack's lead range (this one's when start is 0), or SIZE_MAX. */
struct range {
    struct run *run;
    size_t first, last;
    uint64_t start;
    size_t len;
    size_t lead;
};

struct readplan *readplan_new(struct repo *r)
{
    struct readplan *p = xcalloc(1, sizeof(*p));
    p->r = r;
    return p;
}

void readplan_free(struct readplan *p)
{
    if (!p)
        return;
    free(p->v);
    free(p);
}

void readplan_add(struct readplan *p, const uint8_t id[32], uint32_t len, void *tag, uint64_t off)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 1024;
        p->v = xrealloc(p->v, xsize(p->cap, sizeof(*p->v), 0));
    }
    struct use *u = &p->v[p->n++];
    memcpy(u->id, id, 32);
    u->len = len;
    u->tag = tag;
    u->off = off;
}

size_t readplan_uses(const struct readplan *p)
{
    return p->n;
}

bool readplan_preferred(struct repo *r)
{
    return r->st->connections > 0;
}

int readplan_threads(struct repo *r, int threads)
{
    int n = r->st->connections > 0 ? r->st->connections : sys_ncpu();
    return threads > n ? threads : n;
}

/* Pack order, then offset in the pack (the uses of one blob end up next to each other). */
static int use_cmp(const void *a, const void *b)
{
    const struct use *x = a, *y = b;
    if (x->en.pack != y->en.pack)
        return x->en.pack < y->en.pack ? -1 : 1;
    if (x->en.off != y->en.off)
        return x->en.off < y->en.off ? -1 : 1;
    return memcmp(x->id, y->id, 32);
}

static bool stopped(struct run *rn)
{
    pthread_mutex_lock(&rn->mu);
    bool s = rn->stop;
    pthread_mutex_unlock(&rn->mu);
    return s;
}

static void stop_with(struct run *rn, const struct err *e)
{
    pthread_mutex_lock(&rn->mu);
    if (!rn->stop) {
        rn->stop = true;
        if (e)
            rn->fatal = *e;
        pthread_cond_broadcast(&rn->cv); /* followers waiting for a lead's key */
    }
    pthread_mutex_unlock(&rn->mu);
}

/* The lead range of a pack settled its key (derived it, or failed to): its followers go on. */
static void lead_settled(struct run *rn, const struct range *rg)
{
    if (rg->start != 0 || rg->lead == SIZE_MAX)
        return;
    pthread_mutex_lock(&rn->mu);
    if (!rn->keyed[rg->lead]) {
        rn->keyed[rg->lead] = true;
        pthread_cond_broadcast(&rn->cv);
    }
    pthread_mutex_unlock(&rn->mu);
}

/* A follower range waits for its lead's key (the pool runs jobs in the order they were
 * queued, and a lead is queued before its followers: it already runs, and waits on nothing). */
static void lead_wait(struct run *rn, const struct range *rg)
{
    pthread_mutex_lock(&rn->mu);
    while (!rn->keyed[rg->lead] && !rn->stop)
        pthread_cond_wait(&rn->cv, &rn->mu);
    pthread_mutex_unlock(&rn->mu);
}

/* The pack's key was derived already (by any reader of r). */
static bool key_known(struct repo *r, uint32_t pack)
{
    pthread_mutex_lock(&r->mu);
    bool known = r->packs[pack].key_ready;
    pthread_mutex_unlock(&r->mu);
    return known;
}

static void damage_uses(struct run *rn, size_t first, size_t last, const struct err *e)
{
    for (size_t k = first; k < last; k++)
        rn->ops->damaged(rn->ctx, rn->p->v[k].tag, rn->p->v[k].off, e);
}

static void range_job(void *arg, int worker)
{
    struct range *rg = arg;
    struct run *rn = rg->run;
    struct readplan *p = rn->p;
    struct repo *r = p->r;
    struct buf *data = &rn->wb[worker].data, *plain = &rn->wb[worker].plain;
    size_t plain_used = 0; /* what blobs were decompressed into: wiped at the end */
    struct err e = ERR_INIT;
    uint8_t key[32];
    char name[80];
    bool have_key = false;
    if (stopped(rn) || caris_op_cancelled(rn->op))
        goto out;
    data->len = 0;
    buf_reserve(data, rg->len);
    uint32_t pack = p->v[rg->first].en.pack;
    pthread_mutex_lock(&r->mu);
    pack_object_name(r->packs[pack].id, name, sizeof(name));
    pthread_mutex_unlock(&r->mu);
    if (storage_read_direct(r->st, name, rg->start, data->data, rg->len, &e) != 0) {
        if (e.code == ERR_NOT_FOUND)
            err_set(&e, ERR_DAMAGE,
                    "the repository lost a file: run `caris-backup check` to see which backups "
                    "are affected",
                    "pack %s is missing", name);
        if (e.code == ERR_DAMAGE)
            damage_uses(rn, rg->first, rg->last, &e);
        else
            stop_with(rn, &e);
        goto out;
    }
    data->len = rg->len;
    /* The pack's key comes from its header: in the range when it starts at 0, else from the
     * pack's lead range of this plan, else read alone (40 bytes, not a read window of the
     * storage) unless known already. */
    uint8_t head[PACK_HEADER_LEN];
    const uint8_t *headp = rg->start == 0 ? data->data : NULL;
    if (!headp && rg->lead != SIZE_MAX)
        lead_wait(rn, rg);
    if (stopped(rn))
        goto out;
    if (!headp && !key_known(r, pack)) {
        if (storage_read_direct(r->st, name, 0, head, sizeof(head), &e) != 0) {
            if (e.code == ERR_DAMAGE || e.code == ERR_NOT_FOUND)
                damage_uses(rn, rg->first, rg->last, &e);
            else
                stop_with(rn, &e);
            goto out;
        }
        headp = head;
    }
    int krc = repo_pack_key(r, pack, headp, key, name, sizeof(name), &e);
    lead_settled(rn, rg);
    if (krc != 0) {
        if (e.code == ERR_DAMAGE)
            damage_uses(rn, rg->first, rg->last, &e);
        else
            stop_with(rn, &e);
        goto out;
    }
    have_key = true;
    for (size_t k = rg->first; k < rg->last;) {
        const struct use *u = &p->v[k];
        size_t end = k + 1; /* the uses of this blob */
        while (end < rg->last && p->v[end].en.off == u->en.off)
            end++;
        struct err be = ERR_INIT;
        const uint8_t *pt = NULL;
        size_t ptlen = 0;
        int rc = blob_decode_inplace(r, u->id, &u->en, key, data->data + (u->en.off - rg->start),
                                     name, rn->check_id, plain, &pt, &ptlen, &be);
        if (rc == 0 && pt == plain->data && ptlen > plain_used)
            plain_used = ptlen;
        for (size_t j = k; j < end && !stopped(rn); j++) {
            const struct use *uj = &p->v[j];
            if (rc != 0) {
                rn->ops->damaged(rn->ctx, uj->tag, uj->off, &be);
            } else if (ptlen != uj->len) {
                struct err le = ERR_INIT;
                char hex[65];
                cx_hex(uj->id, 32, hex);
                err_set(&le, ERR_DAMAGE, NULL, "chunk %.16s has %zu bytes, the manifest says %u",
                        hex, ptlen, uj->len);
                rn->ops->damaged(rn->ctx, uj->tag, uj->off, &le);
            } else if (rn->ops->use(rn->ctx, uj->tag, uj->off, pt, ptlen, &e) != 0) {
                stop_with(rn, &e);
            }
        }
        k = end;
    }
out:
    lead_settled(rn, rg); /* also when it stopped before its key */
    if (have_key)
        cx_wipe(key, sizeof(key));
    if (plain_used) /* every blob decompressed into it, not only the last */
        cx_wipe(plain->data, plain_used);
    if (data->len) /* blobs were decrypted in place */
        cx_wipe(data->data, data->len);
    data->len = 0;
    free(rg);
}

/* Queues the range of uses [first, last) (one pack, sorted), and returns when it is queued. */
static void submit_range(struct run *rn, struct pool *pool, size_t first, size_t last,
                         uint64_t start, uint64_t end, size_t lead)
{
    struct range *rg = xcalloc(1, sizeof(*rg));
    rg->run = rn;
    rg->first = first;
    rg->last = last;
    rg->start = start;
    rg->len = (size_t)(end - start);
    rg->lead = lead;
    pool_submit(pool, range_job, rg);
}

int readplan_run(struct readplan *p, int threads, unsigned load_flags,
                 const struct readplan_ops *ops, void *ctx, const struct caris_op *op,
                 struct err *e)
{
    struct run rn = {.p = p,
                     .ops = ops,
                     .ctx = ctx,
                     .op = op,
                     .check_id = !(load_flags & REPO_LOAD_NO_ID_CHECK),
                     .fatal = ERR_INIT};
    pthread_mutex_init(&rn.mu, NULL);
    pthread_cond_init(&rn.cv, NULL);
    /* Where every blob lies; blobs the index does not know are damage, reported first. */
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) {
        struct use *u = &p->v[i];
        if (repo_lookup_entry(p->r, u->id, &u->en)) {
            p->v[n++] = *u;
            continue;
        }
        struct err de = ERR_INIT;
        char hex[65];
        cx_hex(u->id, 32, hex);
        err_set(&de, ERR_DAMAGE,
                "an index file or pack is missing: run `caris-backup check` to see what is "
                "damaged",
                "blob %.16s is not in the repository index", hex);
        ops->damaged(ctx, u->tag, u->off, &de);
    }
    p->n = n;
    if (p->n)
        qsort(p->v, p->n, sizeof(*p->v), use_cmp);
    /* Ranges: within a pack, the next blob joins the current range when the gap to it is
     * at most READPLAN_GAP and the range stays within READPLAN_RANGE_MAX. A pack's first
     * range starts at 0 when its first blob is that close to the start: the header then
     * comes with it, and the pack's key needs no read of its own. */
    int nw = threads > 0 ? threads : 1;
    rn.wb = xcalloc((size_t)nw, sizeof(*rn.wb));
    size_t npacks = p->n ? 1 : 0;
    for (size_t i = 1; i < p->n; i++)
        npacks += p->v[i].en.pack != p->v[i - 1].en.pack;
    rn.keyed = xcalloc(npacks ? npacks : 1, sizeof(*rn.keyed));
    struct pool *pool = pool_new(nw, (size_t)nw);
    size_t first = 0, lead = SIZE_MAX;
    uint64_t start = 0, end = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct use *u = &p->v[i];
        uint64_t bs = u->en.off, be = (uint64_t)u->en.off + u->en.clen;
        bool same_pack = i > first && p->v[i - 1].en.pack == u->en.pack;
        if (same_pack && bs <= end + READPLAN_GAP &&
            (be <= end || be - start <= READPLAN_RANGE_MAX)) {
            if (be > end)
                end = be;
            continue;
        }
        if (i > first)
            submit_range(&rn, pool, first, i, start, end, lead);
        if (ops->tick)
            ops->tick(ctx);
        if (stopped(&rn) || caris_op_cancelled(op)) {
            first = p->n;
            break;
        }
        first = i;
        start = !same_pack && bs <= PACK_HEADER_LEN + READPLAN_GAP ? 0 : bs;
        end = be;
        if (!same_pack)
            lead = start == 0 && !key_known(p->r, u->en.pack) ? rn.nkeyed++ : SIZE_MAX;
    }
    if (first < p->n)
        submit_range(&rn, pool, first, p->n, start, end, lead);
    pool_free(pool); /* waits for every range */
    /* the workers' buffers (their contents were wiped after each range) */
    for (int i = 0; i < nw; i++) {
        buf_free(&rn.wb[i].data);
        buf_free(&rn.wb[i].plain);
    }
    free(rn.wb);
    free(rn.keyed);
    int rc = 0;
    if (err_is_set(&rn.fatal)) {
        *e = rn.fatal;
        rc = -1;
    } else if (caris_op_check(op, NULL, e) != 0) {
        rc = -1;
    }
    pthread_mutex_destroy(&rn.mu);
    pthread_cond_destroy(&rn.cv);
    p->n = 0;
    return rc;
}

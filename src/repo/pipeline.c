/* The one store path and the one fetch path between chunks and the repository (see
 * caris/pipeline.h). */
#include "caris/pipeline.h"

#include <stdlib.h>
#include <string.h>

#include "caris/crypto.h"
#include "caris/pagedelta.h"

/* ---- storing ------------------------------------------------------------------------- */

void pstore_init(struct pstore *s, struct repo *r, struct repo_writer *w, int first_slot)
{
    memset(s, 0, sizeof(*s));
    s->r = r;
    s->w = w;
    s->first_slot = first_slot;
    pthread_mutex_init(&s->mu, NULL);
}

void pstore_destroy(struct pstore *s)
{
    pthread_mutex_destroy(&s->mu);
}

void pstore_fail(struct pstore *s, const struct err *e)
{
    pthread_mutex_lock(&s->mu);
    if (!s->failed) {
        s->err = *e;
        __atomic_store_n(&s->failed, true, __ATOMIC_RELEASE); /* after err: see pstore_failed */
    }
    pthread_mutex_unlock(&s->mu);
}

bool pstore_failed(struct pstore *s, struct err *e)
{
    /* asked per buffer and per chunk by every thread: no lock while nothing failed */
    if (!__atomic_load_n(&s->failed, __ATOMIC_ACQUIRE))
        return false;
    pthread_mutex_lock(&s->mu);
    bool f = s->failed;
    if (f && e)
        *e = s->err;
    pthread_mutex_unlock(&s->mu);
    if (f && e)
        repo_lock_explain(s->r, e); /* asked with e only by the operation's own thread */
    return f;
}

void pstore_chunk(struct pstore *s, int worker, const void *data, size_t len, uint8_t id[32])
{
    int64_t t0 = time_mono_ns();
    repo_chunk_id(s->r, data, len, id);
    __atomic_fetch_add(&s->id_ns, (uint64_t)(time_mono_ns() - t0), __ATOMIC_RELAXED);
    if (pstore_failed(s, NULL))
        return;
    struct err e = ERR_INIT;
    if (repo_writer_add(s->w, s->first_slot + worker, id, data, len, &e) < 0)
        pstore_fail(s, &e);
}

/* ---- fetching ------------------------------------------------------------------------ */

struct fjob {
    struct fetchq *q;
    uint8_t id[32];
    uint8_t base[32];
    bool delta;
    uint32_t len;
    void *tag;
    struct buf data;
    struct err e;
    int rc;
    bool done;
    struct fjob *next;
};

struct fetchq {
    struct repo *r;
    struct pool *pool;
    unsigned load_flags;
    size_t max_jobs;
    uint64_t max_bytes;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fjob *head, *tail; /* in the order asked for; only the consumer links and unlinks */
    size_t njobs;
    uint64_t nbytes;
};

static void fetch_job(void *arg, int worker)
{
    (void)worker;
    struct fjob *j = arg;
    j->rc = repo_blob_load_flags(j->q->r, j->id, &j->data, j->q->load_flags, &j->e);
    if (j->rc == 0 && j->delta) {
        /* the delta and its base, then the block they make */
        struct buf base = {0}, block = {0};
        j->rc = repo_blob_load_flags(j->q->r, j->base, &base, j->q->load_flags, &j->e);
        if (j->rc != 0)
            err_wrap(&j->e, "base block of a page delta");
        else
            j->rc = pagedelta_apply(j->data.data, j->data.len, j->base, base.data, base.len, j->len,
                                    &block, &j->e);
        buf_free(&base);
        buf_free(&j->data);
        j->data = block;
    }
    if (j->rc == 0 && j->data.len != j->len)
        j->rc = err_set(&j->e, ERR_DAMAGE, NULL, "chunk has %zu bytes, the manifest says %u",
                        j->data.len, j->len);
    pthread_mutex_lock(&j->q->mu);
    j->done = true;
    pthread_cond_broadcast(&j->q->cv);
    pthread_mutex_unlock(&j->q->mu);
}

struct fetchq *fetchq_new(struct repo *r, struct pool *pool, unsigned load_flags, size_t max_jobs,
                          uint64_t max_bytes)
{
    struct fetchq *q = xcalloc(1, sizeof(*q));
    q->r = r;
    q->pool = pool;
    q->load_flags = load_flags;
    q->max_jobs = max_jobs;
    q->max_bytes = max_bytes;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    return q;
}

/* Unlinks the oldest job once it is done. */
static struct fjob *take_oldest(struct fetchq *q)
{
    struct fjob *j = q->head;
    pthread_mutex_lock(&q->mu);
    while (!j->done)
        pthread_cond_wait(&q->cv, &q->mu);
    pthread_mutex_unlock(&q->mu);
    q->head = j->next;
    if (!q->head)
        q->tail = NULL;
    q->njobs--;
    q->nbytes -= j->len;
    return j;
}

void fetchq_free(struct fetchq *q)
{
    if (!q)
        return;
    while (q->head) {
        struct fjob *j = take_oldest(q);
        buf_free(&j->data);
        free(j);
    }
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

bool fetchq_empty(const struct fetchq *q)
{
    return q->head == NULL;
}

bool fetchq_room(const struct fetchq *q, uint32_t len)
{
    return !q->head || (q->njobs < q->max_jobs && q->nbytes + len <= q->max_bytes);
}

void fetchq_submit(struct fetchq *q, const uint8_t id[32], uint32_t len, void *tag)
{
    struct chunk_item c = {.len = len};
    memcpy(c.id, id, 32);
    fetchq_submit_item(q, &c, tag);
}

void fetchq_submit_item(struct fetchq *q, const struct chunk_item *c, void *tag)
{
    struct fjob *j = xcalloc(1, sizeof(*j));
    j->q = q;
    memcpy(j->id, c->id, 32);
    memcpy(j->base, c->base, 32);
    j->delta = c->delta;
    j->len = c->len;
    uint32_t len = c->len;
    j->tag = tag;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->njobs++;
    q->nbytes += len;
    pool_submit(q->pool, fetch_job, j);
}

int fetchq_next(struct fetchq *q, void **tag, struct buf *out, struct err *e)
{
    struct fjob *j = take_oldest(q);
    *tag = j->tag;
    buf_free(out);
    int rc = j->rc;
    if (rc == 0)
        *out = j->data; /* moved */
    else {
        *e = j->e;
        buf_free(&j->data);
    }
    free(j);
    return rc;
}

/* ---- chunk lists --------------------------------------------------------------------- */

static bool hex_id(json_t *v, uint8_t out[32])
{
    const char *hex = json_string_value(v);
    return hex && strlen(hex) == 64 && cx_unhex(hex, out, 32) == 0;
}

static bool len_ok(json_t *len)
{
    return json_is_integer(len) && json_integer_value(len) >= 0 &&
           json_integer_value(len) <= (json_int_t)REPO_MAX_BLOB;
}

int chunklist_decode(json_t *chunks, uint8_t (**ids)[32], uint32_t **lens, size_t *n)
{
    *ids = NULL;
    *lens = NULL;
    *n = 0;
    if (!chunks)
        return 0;
    if (!json_is_array(chunks))
        return -1;
    size_t cnt = json_array_size(chunks);
    if (cnt == 0)
        return 0;
    uint8_t(*iv)[32] = xcalloc(cnt, 32);
    uint32_t *lv = xcalloc(cnt, sizeof(uint32_t));
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c)
    {
        json_t *len = json_array_get(c, 1);
        if (!hex_id(json_array_get(c, 0), iv[i]) || !len_ok(len)) {
            free(iv);
            free(lv);
            return -1;
        }
        lv[i] = (uint32_t)json_integer_value(len);
    }
    *ids = iv;
    *lens = lv;
    *n = cnt;
    return 0;
}

int chunklist_decode_items(json_t *chunks, struct chunk_item **refs, size_t *n)
{
    *refs = NULL;
    *n = 0;
    if (!chunks)
        return 0;
    if (!json_is_array(chunks))
        return -1;
    size_t cnt = json_array_size(chunks);
    if (cnt == 0)
        return 0;
    struct chunk_item *v = xcalloc(cnt, sizeof(*v));
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c)
    {
        json_t *len;
        bool ok;
        if (json_is_object(c)) {
            len = json_object_get(c, "len");
            ok = hex_id(json_object_get(c, "id"), v[i].id) &&
                 hex_id(json_object_get(c, "base"), v[i].base) && len_ok(len) &&
                 json_object_size(c) == 3;
            v[i].delta = true;
        } else {
            len = json_array_get(c, 1);
            ok = hex_id(json_array_get(c, 0), v[i].id) && len_ok(len);
        }
        if (!ok) {
            free(v);
            return -1;
        }
        v[i].len = (uint32_t)json_integer_value(len);
    }
    *refs = v;
    *n = cnt;
    return 0;
}

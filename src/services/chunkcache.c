/* Bounded LRU cache of chunks' plaintext (see chunkcache.h): a hash table of chains over the
 * chunk ids (HMACs, so uniformly spread) and a doubly linked list in order of use. */
#include "chunkcache.h"

#include <stdlib.h>
#include <string.h>

static size_t bucket(const uint8_t id[32])
{
    return (size_t)(load_u64le(id) % CHUNKCACHE_BUCKETS);
}

static void lru_unlink(struct chunkcache *c, struct centry *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        c->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        c->tail = x->prev;
    x->prev = x->next = NULL;
}

static void lru_push(struct chunkcache *c, struct centry *x)
{
    x->next = c->head;
    x->prev = NULL;
    if (c->head)
        c->head->prev = x;
    c->head = x;
    if (!c->tail)
        c->tail = x;
}

void chunkcache_init(struct chunkcache *c, uint64_t max)
{
    memset(c, 0, sizeof(*c));
    c->max = max;
}

const struct buf *chunkcache_get(struct chunkcache *c, const uint8_t id[32])
{
    for (struct centry *x = c->buckets[bucket(id)]; x; x = x->hnext)
        if (memcmp(x->id, id, 32) == 0) {
            lru_unlink(c, x);
            lru_push(c, x);
            return &x->data;
        }
    return NULL;
}

static void evict_tail(struct chunkcache *c)
{
    struct centry *x = c->tail;
    lru_unlink(c, x);
    struct centry **pp = &c->buckets[bucket(x->id)];
    while (*pp != x)
        pp = &(*pp)->hnext;
    *pp = x->hnext;
    c->bytes -= CHUNKCACHE_COST(x->data.len);
    c->count--;
    buf_free(&x->data);
    free(x);
}

const struct buf *chunkcache_put(struct chunkcache *c, const uint8_t id[32], struct buf *data)
{
    while (c->tail && c->bytes + CHUNKCACHE_COST(data->len) > c->max)
        evict_tail(c);
    struct centry *x = xcalloc(1, sizeof(*x));
    memcpy(x->id, id, 32);
    x->data = *data;
    memset(data, 0, sizeof(*data));
    if (x->data.cap > x->data.len && x->data.len) { /* buffers grow by doubling: give back */
        x->data.data = xrealloc(x->data.data, x->data.len);
        x->data.cap = x->data.len;
    }
    size_t b = bucket(id);
    x->hnext = c->buckets[b];
    c->buckets[b] = x;
    lru_push(c, x);
    c->bytes += CHUNKCACHE_COST(x->data.len);
    c->count++;
    return &x->data;
}

void chunkcache_free(struct chunkcache *c)
{
    while (c->tail)
        evict_tail(c);
}

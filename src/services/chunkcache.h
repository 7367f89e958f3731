/* A bounded LRU cache of chunks' plaintext, by chunk id (mount keeps the chunks it read here).
 * Not thread-safe: one owner. */
#ifndef CARIS_CHUNKCACHE_H
#define CARIS_CHUNKCACHE_H

#include <stdint.h>

#include "caris/core.h"

#define CHUNKCACHE_BUCKETS 4096

struct centry {
    uint8_t id[32];
    struct buf data;
    struct centry *prev, *next; /* LRU list: head is the most recently used */
    struct centry *hnext;       /* hash chain */
};

/* What a chunk of len bytes costs the cache: its bytes (buffers are shrunk to fit) and its
 * entry. */
#define CHUNKCACHE_COST(len) ((uint64_t)(len) + sizeof(struct centry))

struct chunkcache {
    struct centry *buckets[CHUNKCACHE_BUCKETS];
    struct centry *head, *tail;
    uint64_t bytes, max; /* the cost of what is held (CHUNKCACHE_COST), and the bound */
    size_t count;
};

/* An empty cache holding chunks that cost at most max bytes in all (zeroes c). */
void chunkcache_init(struct chunkcache *c, uint64_t max);
/* The chunk, now the most recently used; NULL when absent. Valid until the next put. */
const struct buf *chunkcache_get(struct chunkcache *c, const uint8_t id[32]);
/* Adds the chunk (id must be absent), taking data's bytes (data is left empty), after evicting
 * the least recently used chunks until it fits. The newest chunk is kept even when it alone
 * exceeds the bound. Returns it. */
const struct buf *chunkcache_put(struct chunkcache *c, const uint8_t id[32], struct buf *data);
void chunkcache_free(struct chunkcache *c);

#endif

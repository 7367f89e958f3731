/* The one path between chunks and the repository, shared by file backups, byte streams
 * (dumps, manifests' entry lists), restores and verification:
 * - storing: chunk -> chunk id -> writer, on pool workers, where the first error wins;
 * - fetching: chunks loaded (read, authenticated, decompressed) on pool workers ahead of a
 *   consumer that takes them in the order they were asked for, within a window of bytes;
 * - chunk lists as manifests write them: [[id hex, length], ...]. */
#ifndef CARIS_PIPELINE_H
#define CARIS_PIPELINE_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/core.h"
#include "caris/err.h"
#include "caris/pool.h"
#include "caris/repo.h"

/* ---- storing ------------------------------------------------------------------------- */

struct pstore {
    struct repo *r;
    struct repo_writer *w;
    int first_slot; /* pool worker n stores through writer slot first_slot + n */
    pthread_mutex_t mu;
    bool failed;
    struct err err;
    uint64_t id_ns; /* time spent computing chunk ids, summed over the workers (atomic) */
};

void pstore_init(struct pstore *s, struct repo *r, struct repo_writer *w, int first_slot);
void pstore_destroy(struct pstore *s);
/* On pool worker `worker`: computes the chunk's id into id and stores the chunk, unless a
 * failure was recorded already (then only the id is computed). A failure to store is
 * recorded. */
void pstore_chunk(struct pstore *s, int worker, const void *data, size_t len, uint8_t id[32]);
/* Records e as the failure, unless one was recorded first. Any thread. */
void pstore_fail(struct pstore *s, const struct err *e);
/* True once a failure was recorded; copies it to e when e is not NULL. Any thread. */
bool pstore_failed(struct pstore *s, struct err *e);

/* ---- fetching ------------------------------------------------------------------------ */

struct fetchq;
/* Loads run on pool (shared with other work if the caller wishes); load_flags as for
 * repo_blob_load_flags. At most max_jobs chunks and max_bytes bytes are in flight, except
 * that one chunk may always be. */
struct fetchq *fetchq_new(struct repo *r, struct pool *pool, unsigned load_flags, size_t max_jobs,
                          uint64_t max_bytes);
/* Waits for the loads still in flight and frees what they hold. */
void fetchq_free(struct fetchq *q);
bool fetchq_empty(const struct fetchq *q);
/* True when a chunk of len bytes fits in the window now (always when the queue is empty):
 * otherwise take one with fetchq_next first. */
bool fetchq_room(const struct fetchq *q, uint32_t len);
/* Queues the load of chunk id, whose plaintext must be len bytes; tag comes back with it. */
void fetchq_submit(struct fetchq *q, const uint8_t id[32], uint32_t len, void *tag);
/* One item of a chunk list: a chunk, or (incremental physical backups) a page delta that
 * rebuilds len bytes from its base block (caris/pagedelta.h). */
struct chunk_item {
    uint8_t id[32];   /* the chunk, or the delta blob */
    uint8_t base[32]; /* delta only: the full block it applies to */
    uint32_t len;     /* plaintext bytes the item stands for in the stream */
    bool delta;
};
/* fetchq_submit for one item: a delta is loaded with its base and comes back rebuilt. */
void fetchq_submit_item(struct fetchq *q, const struct chunk_item *c, void *tag);
/* Waits for the oldest chunk in the queue (which must not be empty): *tag receives its tag;
 * returns 0 with its plaintext in out (out's old contents are freed), or -1 with e (ERR_DAMAGE
 * for a bad chunk). */
int fetchq_next(struct fetchq *q, void **tag, struct buf *out, struct err *e);

/* ---- chunk lists --------------------------------------------------------------------- */

/* Decodes a manifest's chunk list [[id hex, length], ...] into arrays (owned by the caller,
 * both NULL for an empty or absent list). Returns -1 when it is malformed: not an array, an
 * id that is not 64 hex digits, a length that is not an integer in 0..REPO_MAX_BLOB; also for
 * a list with page deltas (below), which a reader of plain chunks must not take as data. */
int chunklist_decode(json_t *chunks, uint8_t (**ids)[32], uint32_t **lens, size_t *n);

/* The same for lists that may hold page deltas, items {"base": hex, "id": hex, "len": n}
 * (docs/REPOSITORY-FORMAT.md "Page deltas"): *refs is owned by the caller (NULL for an empty
 * or absent list). -1 when malformed. */
int chunklist_decode_items(json_t *chunks, struct chunk_item **refs, size_t *n);

#endif

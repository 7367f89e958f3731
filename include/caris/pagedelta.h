/* Page deltas: a block of a relation file stored as the pages that differ from a full block
 * (its base), for incremental physical backups (docs/REPOSITORY-FORMAT.md "Page deltas").
 * Pure functions on buffers: no repository access, nothing printed.
 *
 * A delta blob is, little-endian:
 *   "CPD1" | u32 length of the block it rebuilds (a whole number of pages) | base id[32] |
 *   bitmap of ceil(pages / 8) bytes (bit i of byte i/8, low bit first: page i is in the
 *   delta) | the pages whose bit is set, in page order.
 * A page whose bit is clear is the base's page at the same position. The delta is always
 * relative to a full block (never to another delta): chain depth 1. */
#ifndef CARIS_PAGEDELTA_H
#define CARIS_PAGEDELTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/core.h"
#include "caris/err.h"

#define PAGEDELTA_PAGE 8192u
#define PAGEDELTA_MAGIC "CPD1"
#define PAGEDELTA_HEAD (4u + 4u + 32u)
/* Most pages a block may hold (a delta's length is refused beyond). */
#define PAGEDELTA_MAX_PAGES 4096u

/* Encodes the delta of block (len bytes, a whole number of pages, at most
 * PAGEDELTA_MAX_PAGES) against base: the pages i with differ[i] true are taken from block.
 * out is replaced. */
void pagedelta_encode(const uint8_t base_id[32], const uint8_t *block, size_t len,
                      const bool *differ, struct buf *out);

/* Rebuilds the block from delta (a delta blob) and base (the full block whose id is base_id,
 * which the delta must name): out receives exactly want_len bytes. -1 with ERR_DAMAGE when
 * the delta is malformed, names another base, rebuilds another length, or needs a page the
 * base does not have. */
int pagedelta_apply(const uint8_t *delta, size_t dlen, const uint8_t base_id[32],
                    const uint8_t *base, size_t blen, size_t want_len, struct buf *out,
                    struct err *e);

/* Number of pages a delta blob carries (its bitmap's population), -1 when malformed. */
long pagedelta_pages(const uint8_t *delta, size_t dlen);

#endif

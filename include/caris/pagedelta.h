/* Page deltas: a block of a relation file stored as the pages that differ from a full block
 * (its base), for incremental physical backups (docs/REPOSITORY-FORMAT.md "Page deltas").
 * Pure functions on buffers: no repository access, nothing printed.
 *
 * A delta blob is, little-endian:
 *   "CPD1" | u32 length of the block it rebuilds (a whole number of pages) | base id[32] |
 *   carried bitmap, then XOR bitmap, each ceil(pages / 8) bytes (bit i of byte i/8, low bit
 *   first: page i is in the delta; page i is stored XOR the base's page i) | the carried
 *   pages, in page order.
 * A page whose carried bit is clear is the base's page at the same position. A page that
 * changed in a few bytes is stored XOR its base page: mostly zeros, which compress to almost
 * nothing. The delta is always relative to a full block (never to another delta): chain
 * depth 1. */
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
 * PAGEDELTA_MAX_PAGES) against base (blen bytes, whose id is base_id): the pages i with
 * differ[i] true are carried, each as is or XOR the base's page, whichever has fewer non-zero
 * bytes. out is replaced. Returns the delta's weight: the non-zero bytes of what it carries,
 * an estimate of its size once compressed, to compare with pagedelta_weight of the block. */
size_t pagedelta_encode(const uint8_t base_id[32], const uint8_t *base, size_t blen,
                        const uint8_t *block, size_t len, const bool *differ, struct buf *out);
/* The non-zero bytes of a block (the same estimate for storing it whole). */
size_t pagedelta_weight(const uint8_t *block, size_t len);

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

/* Stream restores through read plans (caris/readplan.h), for storage where a request costs
 * far more than a byte (S3: readplan_preferred). A stream needs its bytes in order, a plan
 * hands blobs back in pack order: the chunk list is cut into ordered windows of at most
 * STREAMPLAN_WINDOW bytes; one window at a time is read by one plan (its blobs grouped by
 * pack, near ones in one ranged read, each distinct blob decoded once however often the
 * window uses it), on a thread of its own, while the caller's thread writes the chunks out in
 * order, each as soon as it is in place, then the next window.
 *
 * Memory: at most two windows (the one being written and the next one being read) of at most
 * STREAMPLAN_WINDOW bytes each, plus what the plan's reads hold (readplan.h: one merged range
 * of at most READPLAN_RANGE_MAX and one blob per thread) and about 100 bytes per chunk of
 * the two windows. */
#ifndef CARIS_REPO_STREAMPLAN_H
#define CARIS_REPO_STREAMPLAN_H

#include <stddef.h>
#include <stdint.h>

#include "caris/err.h"
#include "caris/op.h"
#include "caris/pipeline.h"
#include "caris/repo.h"

/* A window's bytes: the plaintext of its chunks, and for a page delta also the delta and its
 * base block while the block is rebuilt. */
#define STREAMPLAN_WINDOW (32u << 20)
/* Streams of at most this many bytes are not worth a plan: one or two of the storage's read
 * windows (2 MiB on S3) cover them, and may be there already (a check reads the entry lists
 * of manifests right after the small packs that hold them). */
#define STREAMPLAN_MIN (2u << 20)

/* The end of the window that starts at item first of n: items are taken while the sum of
 * their cost(ctx, i) stays within budget, and always at least one. Returns first for
 * first >= n. */
size_t streamplan_window_end(size_t first, size_t n, uint64_t budget,
                             uint64_t (*cost)(void *ctx, size_t i), void *ctx);

/* Called for each chunk in stream order with its plaintext (exactly the item's len bytes,
 * authenticated; a page delta rebuilt). Returns 0, or -1 with e to stop. */
typedef int (*streamplan_write_fn)(void *ctx, const uint8_t *data, size_t len, struct err *e);

/* Reads the n items through windowed plans of window bytes each (0: STREAMPLAN_WINDOW) on
 * threads threads per plan, load_flags as for repo_blob_load_flags, and hands every chunk to
 * write in order. A chunk that cannot be had fails it with ERR_DAMAGE ("chunk i of n: ...");
 * a read that fails otherwise (network, permissions) with that error; op's cancel flag with
 * "cancelled". The caller checks the whole stream's hash. Returns 0 or -1 with e. */
int streamplan_run(struct repo *r, const struct chunk_item *items, size_t n, uint64_t window,
                   int threads, unsigned load_flags, streamplan_write_fn write, void *ctx,
                   const struct caris_op *op, struct err *e);

#endif

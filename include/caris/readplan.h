/* Read plans: many blobs read grouped by pack. A caller adds every use it has for a blob
 * (where its plaintext goes); running the plan looks every blob up in the index, groups them
 * by pack in pack order, merges the byte ranges of a pack that lie close together into one
 * read (one ranged GET on S3), reads those ranges on several threads at once, and decodes
 * (authenticates, decompresses, optionally re-hashes) each distinct blob once, handing its
 * plaintext to every use. A pack's key comes with the header in its first range when that
 * starts at 0 (its first blob within READPLAN_GAP of the start); its other ranges then wait
 * for it rather than read the header alone: one read per range. (Otherwise each range not
 * knowing the key reads the header alone.) Uses come back in no particular order and from
 * several threads. Memory: one merged range (at most READPLAN_RANGE_MAX bytes) and one blob
 * per thread, plus the plan itself (about 64 bytes per use). */
#ifndef CARIS_READPLAN_H
#define CARIS_READPLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/err.h"
#include "caris/op.h"
#include "caris/repo.h"

#define READPLAN_GAP (1u << 20)       /* blobs this close in a pack are read in one range */
#define READPLAN_RANGE_MAX (8u << 20) /* a merged range is at most this long (or one blob) */

struct readplan_ops {
    /* One use of a blob: its plaintext (len bytes, as long as the use asked for). On a worker
     * thread; several at once. Returns 0, or -1 with e to stop the whole plan (not for
     * damage: record that yourself and return 0). */
    int (*use)(void *ctx, void *tag, uint64_t off, const uint8_t *data, size_t len, struct err *e);
    /* The blob of this use cannot be had: e is ERR_DAMAGE (not in the index, its pack
     * missing or short, authentication failed, wrong length, ...). On a worker thread. */
    void (*damaged)(void *ctx, void *tag, uint64_t off, const struct err *e);
    /* Called now and then on the thread that runs the plan (progress). May be NULL. */
    void (*tick)(void *ctx);
};

struct readplan;
struct readplan *readplan_new(struct repo *r);
void readplan_free(struct readplan *p);
/* A use of blob id, whose plaintext must be len bytes: tag and off come back with it. */
void readplan_add(struct readplan *p, const uint8_t id[32], uint32_t len, void *tag, uint64_t off);
size_t readplan_uses(const struct readplan *p);
/* Runs the plan on threads threads (reads in flight at once) and empties it. load_flags as
 * for repo_blob_load_flags. Every use is handed to ops->use or ops->damaged exactly once,
 * unless the plan stops early: a use returned -1, a read failed for another reason than
 * damage (network, permissions: e), or op was cancelled (e says so); then the uses not
 * handed yet never are. Returns 0 or -1 with e. */
int readplan_run(struct readplan *p, int threads, unsigned load_flags,
                 const struct readplan_ops *ops, void *ctx, const struct caris_op *op,
                 struct err *e);
/* True when restores from r should read through a plan rather than blob by blob in file
 * order: the storage is remote (S3), where a request costs far more than a byte. */
bool readplan_preferred(struct repo *r);
/* Reads in flight at once that suit r's storage (its connections), at least threads. */
int readplan_threads(struct repo *r, int threads);

#endif

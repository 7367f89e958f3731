/* Page-level incremental physical backups (docs/REPOSITORY-FORMAT.md "Page deltas"): every
 * relation file's blocks go through here. For each block the entry's chunk list gets either
 * the full block or a page delta against the parent backup's base block for the same
 * position, and the file's page-hash stream records the page hashes of each block's base, so
 * that the next incremental finds which pages differ from it by content. One file at a time:
 * memory holds the parent's refs and page hashes of the current file only (plus the parent's
 * entries text, as a restore does). */
#ifndef CARIS_SERVICES_PHYS_INCR_H
#define CARIS_SERVICES_PHYS_INCR_H

#include <jansson.h>
#include <stdint.h>

#include "caris/op.h"
#include "caris/repo.h"

struct phys_incr;

struct phys_incr_stats {
    uint64_t blocks;       /* relation-file blocks read */
    uint64_t blocks_same;  /* equal to their base (nothing stored) */
    uint64_t blocks_delta; /* stored as page deltas */
    uint64_t pages_delta;  /* pages those deltas carry */
    uint64_t blocks_full;  /* stored (or found) whole: new bases */
};

struct phys_incr *phys_incr_new(struct repo *r, struct repo_writer *w, const struct caris_op *op);
void phys_incr_free(struct phys_incr *pi);
/* Makes the latest physical backup of the cluster with system identifier sysid the parent.
 * *parent_id (borrowed from pi) is NULL when there is none (then every block is stored
 * whole, as in a full backup); so it is after a failure (a parent that cannot be read). */
int phys_incr_set_parent(struct phys_incr *pi, const char *sysid, const char **parent_id,
                         struct err *e);
/* Starts relation file name (its name in the backup). */
int phys_incr_file_begin(struct phys_incr *pi, const char *name, struct err *e);
/* Stores the file's next block and appends its item to chunks. */
int phys_incr_block(struct phys_incr *pi, const uint8_t *data, size_t len, json_t *chunks,
                    struct err *e);
/* Ends the file: stores its page-hash stream and sets "page_hashes" (chunk list) and
 * "page_hashes_sha256" on entry. */
int phys_incr_file_end(struct phys_incr *pi, json_t *entry, struct err *e);
void phys_incr_get_stats(const struct phys_incr *pi, struct phys_incr_stats *out);

#endif

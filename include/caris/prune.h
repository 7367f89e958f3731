/* Prune: removes from the repository what no backup needs any more (after forget), under
 * the exclusive lock. The engine is repo_prune (src/repo/gc.c); this is the service the CLI,
 * the daemon and the API call. */
#ifndef CARIS_PRUNE_H
#define CARIS_PRUNE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/err.h"
#include "caris/op.h"
#include "caris/repo.h"
#include "caris/walwindow.h"

#define CARIS_PRUNE_DEFAULT_MAX_UNUSED 5.0

struct caris_prune_opts {
    bool dry_run;      /* decide and report only (takes a shared lock) */
    double max_unused; /* percent of unused data to tolerate after prune; < 0: default */
    /* dry run only: backups (ids) to count as forgotten (those a forget --dry-run chose) */
    const char *const *assume_forgotten;
    size_t nassume_forgotten;
    /* Backups the state record lists whose snapshot is gone ("missing") make prune refuse
     * (what only they needed would be deleted); true: record them as removed, as forget
     * does, and go on. */
    bool accept_missing;
};
struct caris_prune_result {
    bool dry_run;
    int64_t duration_ns;
    struct repo_prune_stats stats;
    struct caris_wal_retention_result wal;    /* archived WAL no kept base backup needs */
    struct repo_record_compact_stats records; /* verify and test-restore records, summed */
    size_t bad_blob_records_removed;          /* records of damage whose packs the prune removed */
    /* backup ids whose interrupted forget the prune finished (a dry run: would finish), as
     * repo_state_finish_removals; free with caris_prune_result_free */
    json_t *removals_finished;
};
/* Takes the exclusive lock (ERR_LOCKED while any backup or other operation holds a lock),
 * applies WAL retention (caris_wal_retention_apply: removes the archived WAL older than the
 * oldest kept base backup's start; none without a physical base backup), compacts the verify
 * and test-restore records (repo_record_compact: those of forgotten backups go; skipped while a
 * snapshot cannot be read), prunes, releases it. The repository handle is only fit for
 * repo_close afterwards. */
int caris_prune(struct repo *r, const struct caris_prune_opts *o, const struct caris_op *op,
                struct caris_prune_result *res, struct err *e);
/* {"dry_run", "duration_ms", "snapshots", "blobs": {...}, "packs": {...}, "index_files":
 * {...}, "repository_bytes": {"before", "after"}, "leftovers_removed", "removals_finished":
 * [backup ids], "wal":
 * caris_wal_retention_to_json, "records": {"files_before", "files_after", "before", "after"}} */
json_t *caris_prune_result_to_json(const struct caris_prune_result *res);
void caris_prune_result_free(struct caris_prune_result *res);

#endif

/* Helpers shared by the services. */
#ifndef CARIS_SERVICES_COMMON_H
#define CARIS_SERVICES_COMMON_H

#include <jansson.h>

#include "caris/backup.h"

/* Claims a unique backup id for prefix/mode at the current time: the base id, or base-2,
 * base-3, ... when taken (by a backup in the repository or a concurrent one). The claim is
 * made with repo_claim under the lock the caller holds; release it with backup_id_release
 * after the snapshot is saved (or on failure). exact (a time given with --time): the base id
 * or an error. */
int backup_id_claim(struct repo *r, const char *prefix, const char *mode, int64_t now_ns,
                    bool exact, const struct caris_op *op, char *id, size_t n, struct err *e);
/* The same against list, the repository's snapshot summaries (repo_snapshot_list or
 * repo_snapshot_list_cached), already read. Both log a warning through op when a backup in
 * the list is dated after the current time (caris_backup_time_future): the clock is behind
 * now, or was ahead then, and that backup passes for the newest. */
int backup_id_claim_in(struct repo *r, json_t *list, const char *prefix, const char *mode,
                       int64_t now_ns, bool exact, const struct caris_op *op, char *id, size_t n,
                       struct err *e);
/* For a dry run with --time (ns): 0 when no backup in the repository has the id prefix/mode
 * would take at ns, else -1 with the error backup_id_claim gives (a concurrent claim is not
 * seen: nothing is claimed). */
int backup_id_check_exact(struct repo *r, const char *prefix, const char *mode, int64_t ns,
                          struct err *e);
/* The time a backup records: o_time_ns when given (refused when in the future), else now. */
int backup_time(int64_t o_time_ns, int64_t *ns, struct err *e);
void backup_id_release(struct repo *r, const char *id);

/* The most recent backup of kind whose summary field equals value (json_equal); json_null()
 * when there is none, NULL with e on error. Incremental backups build on it. */
json_t *backup_latest(struct repo *r, const char *kind, const char *field, json_t *value,
                      struct err *e);
/* The same in list (as backup_id_claim_in); never fails. */
json_t *backup_latest_in(json_t *list, const char *kind, const char *field, json_t *value);

/* A copy of obj's string member key (free it), or NULL when there is none. */
char *jsonx_strdup_member(json_t *obj, const char *key);

/* A backup's summary as the commands and the API give it: without the repository's object
 * name ("_file", internal) and without "type", which the summaries store beside "kind" with
 * the same value (docs/JSON.md: the kind of a backup has one name). In place. */
void backup_summary_public(json_t *summary);

/* Fills res from a backup's summary (NULL: an empty result), which it takes. */
void backup_result_take(struct caris_backup_result *res, json_t *summary);

/* entry_iter (one manifest entry at a time) is in caris/repo.h: prune's walk uses it too. */

/* Feeds n zero bytes (a hole) to a SHA-256: a sparse file hashes like sha256sum reads it. */
struct cx_sha256;
void sha256_zeros(struct cx_sha256 *h, uint64_t n);

/* Refuses (ERR_USAGE) a restore target that is the local repository or lies inside it, whether
 * it exists or is to be made: what is restored would land among the repository's objects.
 * what names it in the message ("restore target"). */
int restore_target_outside_repo(const struct repo *r, const char *target, const char *what,
                                struct err *e);

/* Refuses (ERR_USAGE) a directory to be written or replaced (--overwrite removes what it
 * holds) that holds the local repository or one of keep[0..nkeep) (BACKUP_DIR, the env file
 * recovery reads), or that lies inside one marked refuse_inside (BACKUP_DIR: its temp is
 * cleaned up, its metadata replaced). what names the directory in the message. */
struct keep_path {
    const char *what, *path; /* "BACKUP_DIR", its path (NULL: skipped) */
    bool refuse_inside;      /* a target inside it is refused too */
};
int replace_target_keeps(const struct repo *r, const char *target, const struct keep_path *keep,
                         size_t nkeep, const char *what, struct err *e);
/* A file restore into target (relative destinations dests[0..n): the backup's roots, or the
 * paths --include selects, as they land below target) that would write into the repository or
 * one of keep[0..nkeep) (BACKUP_DIR, the env file), or over a directory holding one of them:
 * refused (ERR_USAGE). */
int restore_dests_keep(const struct repo *r, const char *target, const char *const *dests, size_t n,
                       const struct keep_path *keep, size_t nkeep, struct err *e);

void progress_report(caris_progress_fn fn, void *ctx, const char *phase, uint64_t files,
                     uint64_t bytes, uint64_t total, int64_t start_ns);

/* Reads every regular file of a file backup through the blob pipeline (parallel fetch and
 * authentication, in-order delivery, SHA-256 check). With target == NULL nothing is written
 * (verify). Defined in file_restore.c. */
struct files_read_opts {
    const char *target; /* NULL: verify only */
    bool overwrite;
    bool no_xattrs, no_owner; /* see struct files_restore_opts */
    const char *const *includes;
    size_t nincludes;
    int threads;
    caris_progress_fn progress;
    void *ctx;
    /* Its cancel flag stops the read at the next file or chunk ("cancelled"): every file left
     * in the target is complete and verified, no temporary file stays. May be NULL. */
    const struct caris_op *op;
};
/* out gets the counts and findings (its arrays are the caller's, also on failure). Returns 0
 * when every file matched, ERR_DAMAGE (-1, e set) when any did not, -1 for other failures. */
int files_read_backup(struct repo *r, json_t *summary, const struct buf *entries,
                      const struct files_read_opts *o, struct caris_read_report *out,
                      struct err *e);
#endif

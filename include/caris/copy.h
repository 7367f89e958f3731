/* Copying backups into a second repository (`caris-backup copy`, "upload to cloud"): the
 * blobs the destination lacks move by their chunk id, then the snapshot is committed there
 * with the same backup id and summary, then the copy is verified by reading it back from the
 * destination. Only between repositories that share the chunking (repo_same_chunking: the
 * destination made with `init --copy-chunker-from`); otherwise copy refuses, since the
 * destination would not deduplicate with the source (re-chunking is not implemented). */
#ifndef CARIS_COPY_H
#define CARIS_COPY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/err.h"
#include "caris/op.h"
#include "caris/repo.h"

struct caris_copy_opts {
    const char *const *ids; /* backup ids (exact) to copy, in this order */
    size_t nids;
    bool latest;               /* instead of ids: the newest backup of the source */
    bool all;                  /* instead of ids: every backup of the source, oldest first */
    bool no_verify;            /* skip reading back what was written (tests of interruption only) */
    int threads;               /* for the verification */
    const struct caris_op *op; /* progress ("copy", blobs done, blobs), log lines, cancel */
};

struct caris_copy_item {
    char *backup_id;
    bool already_there;    /* the destination had it (same summary): nothing was written */
    bool copied;           /* committed in the destination by this call */
    bool verified;         /* read back from the destination, every file's hash checked (and
                              for a physical backup, the WAL it needs there) */
    bool wal_missing;      /* a physical backup whose WAL the source's archive lacks: copied as
                              it is, neither copy can be restored (the copy fails, exit 4) */
    bool busy;             /* being written into the destination by another process: not copied
                              by this call, which copies the others and then fails (exit 9) */
    uint64_t blobs;        /* blobs the backup needs */
    uint64_t blobs_copied; /* of those, sent to the destination */
    uint64_t bytes_copied; /* plaintext bytes of the blobs sent */
    uint64_t bytes_stored; /* bytes written to the destination (packs, index) */
};

struct caris_copy_result {
    char *destination; /* the destination's location as given (no secret in it) */
    struct caris_copy_item *items;
    size_t n;
    uint64_t blobs_copied, bytes_copied, bytes_stored; /* totals */
};

/* Copies from src into dst (both open; dst with its own key). Locks: shared on src ("copy"),
 * shared on dst ("copy": like a backup, with the backup id claimed while it is written).
 * A backup is committed in dst only after every blob it needs is durable there, so an
 * interrupted copy leaves no listed backup (its packs are adopted by the next writer). A
 * physical backup takes along, before its snapshot, the WAL records of src's archive it needs to
 * become consistent that dst lacks (so does one dst has: copied before without them). Stops
 * at the first backup that fails; res holds what was done until then (caris_copy_result_free).
 * A damaged snapshot of src that --all, or --latest (one that may be newer than the one
 * copied), would have copied fails the copy (ERR_DAMAGE, naming it) once the others are.
 * Refuses (ERR_USAGE) when src and dst are the same repository or do not share the chunking. */
int caris_copy(struct repo *src, struct repo *dst, const char *dst_location,
               const struct caris_copy_opts *o, struct caris_copy_result *res, struct err *e);
void caris_copy_result_free(struct caris_copy_result *res);
/* {"destination", "backups": [{"backupId", "alreadyThere", "copied", "verified", "blobs",
 * "blobsCopied", "bytesCopied", "bytesStored"}], "blobsCopied", "bytesCopied", "bytesStored"} */
json_t *caris_copy_result_to_json(const struct caris_copy_result *res);

/* The seed's fileBackupService.uploadToCloud(id, {provider, bucket, region, endpoint}): a copy
 * of one backup to the S3 repository s3:<endpoint>/<bucket>[/<prefix>]. Credentials come from
 * the usual variables (AWS_ACCESS_KEY_ID, ...), and so does the region: a target whose region
 * is not storage_s3_region() is refused (ERR_USAGE), the process's settings are not changed.
 * The destination repository must exist (init --copy-chunker-from); its key is
 * dst_key. */
struct caris_cloud_target {
    const char *provider; /* "s3" (the only one) */
    const char *bucket;
    const char *region;   /* may be NULL */
    const char *endpoint; /* "https://host[:port]"; NULL: https://s3.<region>.amazonaws.com,
                             with region, or else the configured one (storage_s3_region) */
    const char *prefix;   /* may be NULL */
};
int caris_files_upload_to_cloud(struct repo *src, const char *backup_id,
                                const struct caris_cloud_target *t, const char *dst_key,
                                const struct caris_op *op, struct caris_copy_result *res,
                                struct err *e);
/* The location a cloud target names ("s3:https://host/bucket/prefix"); malloc'd, NULL with e
 * when the target is incomplete. */
char *caris_cloud_location(const struct caris_cloud_target *t, struct err *e);
/* After a destination failed to open with the key taken from the variable key_var: the hint
 * of e made about that key, not BACKUP_ENCRYPTION_KEY (which opening's own hints name), and,
 * when there is no destination, how to create one from src (the source's location). */
void caris_copy_open_hint(struct err *e, const char *key_var, const char *src);

#endif

/* Opening a repository the way every front end does (the CLI now, the daemon and the API
 * later): refuse a missing one (only `init`, repo_init, creates a repository), try first the key
 * slot that opened it last time, and audit its state record against this host's copy. */
#ifndef CARIS_OPEN_H
#define CARIS_OPEN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/err.h"
#include "caris/repo.h"

struct caris_open_opts {
    const char *repo_path;  /* the repository */
    const char *backup_dir; /* BACKUP_DIR: its metadata/ keeps the key-slot hint and the state
                             * record's local copy; NULL: neither is used */
    const char *key;        /* BACKUP_ENCRYPTION_KEY */
    int64_t lock_wait_ms;   /* how long the handle's operations wait for a lock */
    repo_lock_wait_fn lock_waiting; /* told once when an operation starts to wait (may be NULL) */
    void *lock_waiting_ctx;
};

struct caris_open_result {
    json_t *state; /* repo_state_audit's report; NULL when the audit could not run (audit_err) */
    struct err audit_err;
};

/* Opens the repository (ERR_NOT_FOUND naming the path and `init` when there is none). What opening
 * found is in repo_warnings(r) and in out->state, for the caller to report. out->state is the
 * caller's (json_decref). */
struct repo *caris_repo_open(const struct caris_open_opts *o, struct caris_open_result *out,
                             struct err *e);

/* What to do about the warnings opening found (repo_warnings(r)), in buf: find who replaced the
 * repository (its state record rolled back), let prune finish a removal, or run check. NULL
 * when there are none. backup_dir: where the state record's copy is (BACKUP_DIR). */
const char *caris_open_hint(struct repo *r, const struct caris_open_result *o,
                            const char *backup_dir, char *buf, size_t n);

/* Creates BACKUP_DIR with metadata/ and temp/ (mode 0700, as the seed's Quick Start). */
int caris_backup_dir_prepare(const char *dir, struct err *e);

#endif

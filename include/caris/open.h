/* Opening a repository the way every front end does (the CLI now, the daemon and the API
 * later): create it on first use when asked (waiting for another process that is creating
 * it), try first the key slot that opened it last time, and audit its state record against
 * this host's copy. */
#ifndef CARIS_OPEN_H
#define CARIS_OPEN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/err.h"
#include "caris/repo.h"

struct caris_open_opts {
    const char *repo_path;   /* the repository */
    const char *backup_dir;  /* BACKUP_DIR: its metadata/ keeps the key-slot hint and the state
                              * record's local copy; NULL: neither is used */
    bool prepare_backup_dir; /* create BACKUP_DIR/{metadata,temp} (0700) with the repository */
    const char *key;         /* BACKUP_ENCRYPTION_KEY */
    bool create;             /* create the repository when there is none (the first backup) */
    int64_t init_wait_ms;    /* wait for another process creating it; 0 = 120 s */
    int64_t lock_wait_ms;    /* how long the handle's operations wait for a lock */
    repo_lock_wait_fn lock_waiting; /* told once when an operation starts to wait (may be NULL) */
    void *lock_waiting_ctx;
};

struct caris_open_result {
    bool created;  /* this call created the repository */
    json_t *state; /* repo_state_audit's report; NULL when the audit could not run (audit_err) */
    struct err audit_err;
};

/* Opens (or creates) the repository. What opening found is in repo_warnings(r) and in
 * out->state, for the caller to report. out->state is the caller's (json_decref). */
struct repo *caris_repo_open(const struct caris_open_opts *o, struct caris_open_result *out,
                             struct err *e);

/* Creates BACKUP_DIR with metadata/ and temp/ (mode 0700, as the seed's Quick Start). */
int caris_backup_dir_prepare(const char *dir, struct err *e);

#endif

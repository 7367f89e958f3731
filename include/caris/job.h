/* One backup run as the scheduler makes it (the seed's backupScheduler.runManualBackup(type)
 * and every scheduled run): back up what is configured (the database at POSTGRES_URL, the
 * paths of BACKUP_FILES_PATHS), verify each new backup by reading it back, copy each (once
 * verified, when verification is on) to BACKUP_CLOUD_REPOSITORY when that is set (its key in
 * CARIS_COPY_TO_KEY), then, as asked, apply the retention policy, prune, and drill a restore
 * of the database backup. The daemon,
 * `caris-backup run-now` and the API call this one function. */
#ifndef CARIS_JOB_H
#define CARIS_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/config.h"
#include "caris/err.h"
#include "caris/op.h"
#include "caris/repo.h"

enum caris_job_type {
    CARIS_JOB_INCREMENTAL,
    CARIS_JOB_FULL,
};
/* "incremental", "full"; parse: 0, or -1 with ERR_USAGE. */
const char *caris_job_type_name(enum caris_job_type t);
int caris_job_type_parse(const char *s, enum caris_job_type *t, struct err *e);

/* What a step of a job did. */
enum caris_job_step_kind {
    CARIS_STEP_BACKUP,    /* backup of kind ("database" / "files") */
    CARIS_STEP_VERIFY,    /* verification of backup_id */
    CARIS_STEP_RETENTION, /* the retention policy applied */
    CARIS_STEP_PRUNE,
    CARIS_STEP_DRILL, /* test-restore of backup_id */
    CARIS_STEP_COPY,  /* backup_id copied to BACKUP_CLOUD_REPOSITORY (caris/copy.h) */
};
const char *caris_job_step_name(enum caris_job_step_kind k); /* "backup", "verify", ... */

struct caris_job_step {
    enum caris_job_step_kind kind;
    char what[16];       /* "database", "files" (backup, verify, drill); "" otherwise */
    char backup_id[160]; /* the backup made, verified or drilled; "" when none */
    bool ok;
    bool warnings; /* completed with warnings (unreadable files; a prune that found backups
                      needing data that is gone): err says what, ok stays true */
    int64_t started_ns, duration_ns; /* the duration counted on the monotonic clock */
    int64_t started_mono_ns;
    uint64_t bytes; /* backup: bytes of the source read; verify: bytes checked */
    struct err err; /* when !ok, or warnings */
    json_t *detail; /* the step's own result (summary, report): owned, may be NULL */
};

/* Told of every step when it ends (for notifications and logs); may be NULL. */
typedef void (*caris_job_step_fn)(void *ctx, const struct caris_job_step *s);

struct caris_job_opts {
    enum caris_job_type type;
    const struct config *cfg; /* POSTGRES_URL, PGPASSWORD, BACKUP_FILES_PATHS, BACKUP_TZ,
                                 BACKUP_RETENTION_*, BACKUP_DIR */
    int64_t time_ns;          /* the backups' time; 0 = now */
    bool verify;              /* read each new backup back (the seed: after each backup) */
    bool retention;           /* apply the configured retention policy afterwards */
    bool prune;               /* then prune (spends the repository handle: see below) */
    bool drill;               /* test-restore the new database backup */
    bool drill_local;         /* ... into a throwaway local cluster, not a scratch database */
    int threads;              /* 0 = number of CPUs */
    bool skip_files;          /* back up the database only (the API's includeFiles: false) */
    caris_job_step_fn on_step;
    void *step_ctx;
};

struct caris_job_result {
    enum caris_job_type type;
    int64_t started_ns, ended_ns; /* ended_ns: started_ns + the monotonic clock's count */
    int64_t started_mono_ns;
    struct caris_job_step *steps;
    size_t nsteps;
    bool ok;           /* every step succeeded (warnings allowed) */
    bool warnings;     /* a step completed with warnings (then no retention ran after it) */
    bool handle_spent; /* prune ran: the handle is only fit for repo_close */
};

/* Runs the job. Nothing configured to back up (neither POSTGRES_URL nor BACKUP_FILES_PATHS)
 * is ERR_CONFIG. Otherwise every configured backup is attempted even when another failed;
 * verification, retention, prune and drill follow only the steps they depend on (retention
 * and prune are skipped when a backup failed, so a failing source never costs old backups).
 * Returns 0 when every step succeeded, -1 with e (the first failure) otherwise; res is
 * filled either way. The op's cancel flag stops the running step (a cancelled backup commits
 * nothing) and skips the rest. */
int caris_job_run(struct repo *r, const struct caris_job_opts *o, const struct caris_op *op,
                  struct caris_job_result *res, struct err *e);
/* The settings a job reads only when it backs up, checked when a long-running process loads
 * its configuration (else a bad value failed every scheduled run): BACKUP_COMPRESS_DUMPS a
 * boolean; BACKUP_FILES_PATHS absolute paths, none inside another (judged on the text: a path
 * that does not exist yet, a volume not mounted, fails its run, not the start). 0, or -1 with
 * e (ERR_CONFIG, naming the variable). */
int caris_job_config_check(const struct config *cfg, struct err *e);
/* {"type", "ok", "warnings", "startedAt", "endedAt", "durationMs", "backupIds": [...], "steps":
 * [{"step", "what", "backupId", "ok", "warnings", "startedAt", "durationMs", "bytes",
 * "error": {"code", "message", "hint"} (failed), "warning": {...} (what the warnings were)}]} */
json_t *caris_job_result_to_json(const struct caris_job_result *res);
void caris_job_result_free(struct caris_job_result *res);

#endif

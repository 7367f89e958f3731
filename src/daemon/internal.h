/* Between the daemon's parts: the scheduler and its worker (daemon.c), the HTTP API (api.c)
 * and the services the API's jobs call (api_jobs.c). */
#ifndef CARIS_DAEMON_INTERNAL_H
#define CARIS_DAEMON_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/config.h"
#include "caris/err.h"
#include "caris/inspect.h"
#include "caris/job.h"
#include "caris/op.h"
#include "caris/repo.h"

/* What a job of the daemon's queue does. */
enum djob_kind {
    DJOB_BACKUP,  /* a backup run (caris_job_run): the scheduler's, run-now's, the API's create */
    DJOB_VERIFY,  /* verification of one backup */
    DJOB_RESTORE, /* a restore; with dry_run, a test-restore that changes nothing */
};
const char *djob_kind_name(enum djob_kind k); /* "backup", "verify", "restore" */

#define DJOB_TARGET_MAX 2048

struct djob_spec {
    enum djob_kind kind;
    enum caris_job_type type;     /* backup */
    bool skip_files;              /* backup: includeFiles false */
    char backup_id[CARIS_ID_MAX]; /* verify, restore: a resolved id */
    char what[16];                /* verify, restore: the backup's kind, "database" / "files" */
    bool dry_run, verify;         /* restore */
    bool clean, create;           /* restore of a database: as the CLI's --clean / --create */
    /* restore: the target URL (database; may carry a password: never shown, logged or put in
     * a job's JSON) or directory (files); "" = POSTGRES_URL */
    char target[DJOB_TARGET_MAX];
    char actor[80]; /* who asked: "scheduler", "run-now", "api:<token label>", "cron" */
    char addr[64];  /* the API client's address, "" otherwise */
};

/* Runs a verify or restore job with the services the CLI calls (api_jobs.c): 0 (or
 * CARIS_DONE_WARNINGS) with *result, or -1 with e (and *result when the service got that
 * far). */
int djob_exec(struct repo *r, const struct config *cfg, int threads, const struct djob_spec *s,
              const struct caris_op *op, json_t **result, struct err *e);

/* The backups for the API's list (api_jobs.c): caris_backup_list_report of kind (NULL: all),
 * without each backup's "stats" unless stats. */
json_t *api_backup_list(struct repo *r, const char *kind, bool stats, struct err *e);

struct daemon;
/* Queues a job (the worker runs it after those before it): 0 and its id, or -1 with
 * ERR_LOCKED when a job of the same kind is queued or running. */
#define DJOB_ID_MAX 40
int daemon_job_submit(struct daemon *d, const struct djob_spec *s, char id[DJOB_ID_MAX],
                      struct err *e);
/* A job's state (queued, running with progress, or done with result), of the queue, the
 * running job or the last finished ones; NULL when none has that id. */
json_t *daemon_job_json(struct daemon *d, const char *id);
/* The live status (caris_schedule_status of a running daemon). */
json_t *daemon_status_json(struct daemon *d);
/* One line of the daemon's log (event: a short word). */
/* A test knob of cfg in milliseconds (1 to a day), in ns; dflt_ns when it is not set or not
 * such a number. */
int64_t daemon_test_knob_ns(const struct config *cfg, const char *name, int64_t dflt_ns);
void daemon_log(struct daemon *d, enum log_level l, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The HTTP API (api.c). */
struct api;
struct api_opts {
    struct daemon *d;
    const struct config *cfg; /* BACKUP_API_*, CRON_SECRET, BACKUP_DIR, the key */
    const char *backup_dir;
    const char *repo_path;
};
/* Starts serving on BACKUP_API_LISTEN (default 127.0.0.1:8787); *out = NULL when it is
 * "none". -1 with e: the address is invalid or taken, the TLS files unreadable. */
int api_start(const struct api_opts *o, struct api **out, struct err *e);
/* Stops serving (waits for requests in progress) and frees it; NULL is fine. */
void api_stop(struct api *a);
/* A reload: CRON_SECRET of cfg replaces the one the API had (at once: a rotated secret is
 * refused from then on; cfg need not outlive the call). The address and the TLS files are the
 * ones the API started with (api_start): the daemon names them when they changed. NULL is
 * fine. */
void api_reload(struct api *a, const struct config *cfg);
/* The checks api_start makes of cfg's settings (the address, the TLS files readable and
 * paired), without serving (a reload: a value the next start would refuse is refused now). */
int api_config_check(const struct config *cfg, struct err *e);
/* What failed authentications are counted by: the address, or for IPv6 its /64 ("2001:db8::/64":
 * one host commonly has a whole /64, and would otherwise start afresh from each address). */
#define API_FAIL_KEY_MAX 64
void api_fail_key(const char *addr, char out[API_FAIL_KEY_MAX]);

/* The daemon's side of `wal push` (walpush.c): a queue of WAL files handed over the control
 * socket and the thread that stores them through a repository handle of its own. */
#define WALQ_NAME_MAX 64
struct walq;
int walq_start(struct daemon *d, const struct config *cfg, const char *repo_path,
               const char *backup_dir, struct walq **out, struct err *e);
/* Queues the push of file_fd under name (get: the `wal get` of name into file_fd, the
 * client's temporary file, answered once written and checked); the queue then owns both descriptors
 * and answers client_fd once the file is durably archived or failed. -1 (nothing taken) when the
 * queue is full or stopping: the caller answers "busy". */
int walq_submit(struct walq *q, int client_fd, int file_fd, const char *name, bool get,
                uint32_t follow);
/* {"queued", "pushed", "alreadyArchived", "failed", "gets": {"served", "missing", "failed"}} since
 * the daemon started (null: no queue) */
json_t *walq_status(struct walq *q);
/* {"error": {"code", "message", "hint"}} */
json_t *walq_error_json(const char *code, const struct err *e);
/* Answers what is queued with "stopping" (its client then pushes alone), waits for the push in
 * progress, and frees the queue. NULL is fine. */
void walq_stop(struct walq *q);

/* The daemon's `wal receive` (walstream.c), run when BACKUP_WAL_STREAMING=true: *out = NULL
 * when it is off; -1 with e (ERR_CONFIG) when BACKUP_WAL_STREAMING, BACKUP_WAL_SLOT or
 * BACKUP_WAL_FLUSH_SECONDS is invalid. */
struct walstream;
/* The checks walstream_start makes of cfg's settings, without starting anything (a reload:
 * a value the next start would refuse is refused now). */
int walstream_config_check(const struct config *cfg, struct err *e);
int walstream_start(struct daemon *d, const struct config *cfg, const char *repo_path,
                    const char *backup_dir, struct walstream **out, struct err *e);
/* {"state" ("starting", "streaming", "waiting" after an error), "slot", "flushSeconds",
 * "flushedLsn", "flushedAt", "restarts", "lastError", "lastErrorAt", "retryAt"}; null when
 * off. */
json_t *walstream_status(struct walstream *w);
/* Stops it (the unfinished segment is stored first) and frees it. NULL is fine. */
void walstream_stop(struct walstream *w);

/* The watch on PostgreSQL's WAL archiver (walmon.c): *out = NULL when POSTGRES_URL is not set
 * or BACKUP_WAL_ALERT_MINUTES is off; -1 with e (ERR_CONFIG) when BACKUP_WAL_ALERT_MINUTES is
 * invalid. */
struct walmon;
/* BACKUP_WAL_ALERT_MINUTES (default 15, 0 to 10080, or off: *ns = -1), also for the WAL
 * streaming's alert. -1 with e (ERR_CONFIG) when invalid. */
int wal_alert_after(const struct config *cfg, int64_t *ns, struct err *e);
int walmon_start(struct daemon *d, const struct config *cfg, struct walmon **out, struct err *e);
/* {"state" ("unknown", "off", "ok", "failing"), "checkedAt", "archivedCount", "failedCount",
 * "lastArchivedWal", "lastFailedWal", "failingSince", "error"}; null when not watching. */
json_t *walmon_status(struct walmon *w);
/* Stops and frees it. NULL is fine. */
void walmon_stop(struct walmon *w);

struct notify_event;

/* An alert sent once per episode of failure (WAL archiving, WAL streaming), through the
 * daemon's channels and recorded for the status (any thread): counted as sent when a channel
 * took it; one that no channel took is tried again an hour later
 * (CARIS_TEST_ALERT_RETRY_MS) for as long as the episode lasts (it was marked sent first, and
 * lost for good when the channels failed at that moment). Its thread's own. */
struct episode_alert {
    bool sent;
    int64_t retry_mono_ns; /* not tried again before this (monotonic) */
    int64_t retry_ns;      /* how long after a try no channel took */
};
void episode_alert_init(struct episode_alert *a, const struct config *cfg);
/* A new episode: the alert may be sent again. */
void episode_alert_reset(struct episode_alert *a);
/* Whether it is to be sent now (not sent, and not waiting to try again). */
bool episode_alert_due(const struct episode_alert *a, int64_t mono_ns);
/* Sends ev; when no channel took it, logs (source, "the alert that WHAT was not
 * delivered") and waits before the next try. */
void episode_alert_send(struct daemon *d, struct episode_alert *a, const struct notify_event *ev,
                        int64_t mono_ns, const char *source, const char *what);

#endif

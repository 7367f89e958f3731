/* The daemon: the seed's backupScheduler. One per BACKUP_DIR; it opens the repository once,
 * runs the configured schedules (caris/schedule.h), each run being caris_job_run (backups,
 * verification, retention, prune and drills at their cadence), sends notifications, records
 * what it did in BACKUP_DIR/metadata/scheduler.json, and answers a control socket
 * (BACKUP_DIR/metadata/daemon.sock, mode 0600) through which `schedule status` and `run-now`
 * reach it. */
#ifndef CARIS_DAEMON_H
#define CARIS_DAEMON_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/config.h"
#include "caris/core.h"
#include "caris/err.h"
#include "caris/job.h"

struct caris_daemon_opts {
    /* The configuration loaded at start (config_load: it holds BACKUP_ENCRYPTION_KEY, which
     * is no longer in the environment); borrowed for the daemon's lifetime. */
    const struct config *cfg;
    const char *env_file; /* re-read on reload (NULL: .env.local, as at start) */
    const char *repo;     /* repository location; NULL: BACKUP_DIR/repository */
    int threads;
    /* One line per event (no newline); event is a short word ("started", "job", "step",
     * "notify", ...). Never a secret. Called from the daemon's threads, serialised. */
    void (*log)(void *ctx, enum log_level level, const char *event, const char *msg);
    void *log_ctx;
    /* Set by the front end's signal handlers (SIGTERM/SIGINT: stop; SIGHUP: reload), which
     * then write a byte to wake_fd's other end so the daemon notices at once. */
    volatile sig_atomic_t *stop;
    volatile sig_atomic_t *reload;
    int wake_fd;
    /* Called once the daemon is ready (socket listening, schedules loaded): for systemd's
     * READY=1. May be NULL. */
    void (*ready)(void *ctx);
    void *ready_ctx;
};

/* Runs until *stop is set (0 returned: a running job was cancelled, its backup not
 * committed, its lock released), or fails at start (-1 with e: another daemon runs for this
 * BACKUP_DIR, the configuration or the repository cannot be used).
 *
 * Test knob: CARIS_TEST_CLOCK=START[,END] (ISO-8601 times, not in the future) runs the
 * daemon on a virtual clock that starts at START and, whenever the daemon is idle, jumps to
 * the next scheduled event instead of waiting for it; the daemon stops by itself once the
 * virtual clock passes END. A week of schedules runs in seconds. */
int caris_daemon_run(const struct caris_daemon_opts *o, struct err *e);

/* The scheduler's status (the seed's getStatus()): {"running" (a daemon answers), "pid",
 * "startedAt", "now", "job" (the job running now, with its step, or null), "queue",
 * "schedules": [{"name", "cron", "type", "enabled", "lastRun", "nextRun"}], "nextRuns",
 * "lastPrune", "lastDrill", "history" (recent runs, newest first)}. From the running daemon
 * when there is one, else from what the last daemon recorded and the configuration. */
int caris_schedule_status(const struct config *cfg, json_t **out, struct err *e);

/* The seed's runManualBackup(type): asks the running daemon to run a job (queued behind a
 * running one). With wait, returns when it ended, with its result in *out
 * (caris_job_result_to_json); without, *out = {"queued": true, "position"}. Returns 1 (and
 * nothing in *out) when no daemon runs: the caller then runs the job itself. */
int caris_daemon_run_now(const struct config *cfg, enum caris_job_type type, bool wait,
                         json_t **out, struct err *e);

/* Asks the running daemon to cancel the job it runs (at its next safe point: it fails
 * "cancelled", is notified so, and the queued jobs go on). *out: {"cancelled": whether a job
 * was running, "job": its id or null}. ERR_NOT_FOUND when no daemon runs. */
int caris_daemon_cancel(const struct config *cfg, json_t **out, struct err *e);

/* `wal push` through the running daemon of BACKUP_DIR (caris/wal.h): opens the file and
 * hands its descriptor over the control socket (SCM_RIGHTS: the daemon never resolves the
 * path, which is relative to PostgreSQL's data directory, nor needs to read pg_wal itself);
 * the daemon stores it through the repository it keeps open and answers once it is durably
 * archived. 0 with *res; -1 with e (the push's own failure, e.g. ERR_DAMAGE for different
 * content, or the daemon died or did not answer: nothing was archived unless a retry finds
 * it); 1 when no daemon takes it (none runs, it archives into another repository than
 * repo_path, its queue is full, it is stopping, or it answers with a usage error): the caller
 * pushes alone, and its own answer is the one that counts. */
struct caris_wal_push_result;
int caris_daemon_wal_push(const struct config *cfg, const char *repo_path, const char *path,
                          struct caris_wal_push_result *res, struct err *e);
/* `wal get NAME DEST` through the running daemon of the repository: the daemon writes the
 * archived file into a temporary file created here beside dest (its descriptor passed over the
 * control socket), checks it end to end and fsyncs it; it is renamed to dest only then, so
 * dest never holds a partial or bad file. 1: no daemon took it (get alone); 0: written;
 * -1 with e (ERR_NOT_FOUND: not archived; a daemon that died meanwhile: ERR_FAILURE).
 * follow: the timeline the recovery follows, 0 for the newest (caris_wal_get). */
int caris_daemon_wal_get(const struct config *cfg, const char *repo_path, const char *name,
                         const char *dest, uint32_t follow, struct err *e);

#endif

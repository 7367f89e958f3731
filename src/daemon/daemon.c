/* The daemon: schedules, a job worker, the control socket and the status file.
 *
 * Threads: the main thread polls the control socket, the wake pipe of the front end's
 * signal handlers and its own pipe from the worker, and enqueues the jobs that are due; one
 * worker thread runs the jobs one after the other (so two backups never run at once). d->mu
 * guards the queue, the status document and the clock. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "caris/audit.h"
#include "caris/backup.h"
#include "caris/core.h"
#include "caris/cron.h"
#include "caris/crypto.h"
#include "caris/daemon.h"
#include "caris/jsonx.h"
#include "caris/notify.h"
#include "caris/open.h"
#include "caris/retention.h"
#include "caris/schedule.h"

#include "internal.h"

#define HISTORY_MAX 20
#define MAX_CLIENTS 16
#define CLIENT_LINE_MAX 4096
#define DAY_S 86400
#define JOBS_KEPT 50 /* finished jobs the API can still show */
/* The clock set back by more than this (it was hours or days ahead): the next runs are computed
 * again from the new time. A smaller step back only delays them by as much (recomputing would
 * repeat a run just made), as cron does for changes under 3 hours. */
#define CLOCK_BACK_S (3 * 3600)
/* How long the stale check waits for a run in progress (see the main loop). */
#define STALE_RUN_WAIT_NS (3600ll * 1000000000)

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct job {
    struct job *next;
    char id[DJOB_ID_MAX];
    struct djob_spec spec;
    enum job_state state;
    int64_t queued_ns, started_ns, ended_ns; /* ended_ns: started_ns + the monotonic count */
    int64_t started_mono_ns;
    bool timed_out;    /* cancelled for going on longer than BACKUP_RUN_TIMEOUT (under d->mu) */
    bool cancel_asked; /* cancelled by `schedule cancel` (under d->mu) */
    bool stopped;      /* cancelled by the daemon's stop (under d->mu) */
    char phase[32];    /* progress of the running job */
    uint64_t done, total;
    bool ok;
    enum caris_job_type type;
    char source[16];       /* "daily", "weekly", "monthly", "manual" */
    int64_t scheduled_for; /* virtual seconds; 0 for manual */
    bool catch_up;
    int waiters[MAX_CLIENTS]; /* client fds waiting for the result (run-now --wait) */
    size_t nwaiters;
    json_t *result; /* set by the worker when done */
    json_t *error;  /* {"code", "message", "hint"} when it failed */
};

struct client {
    int fd;
    char buf[CLIENT_LINE_MAX];
    size_t len;
    bool waiting;  /* handed to a job; the main thread answers when it ends */
    int passed_fd; /* a descriptor sent with the request (SCM_RIGHTS, `wal push`); -1: none */
    bool detached; /* handed to the WAL queue, which answers and closes it */
};

struct nc_ref {
    struct notify_config nc;
    int refs; /* under the daemon's mu */
};

struct daemon {
    const struct caris_daemon_opts *o;
    const struct config *cfg; /* the front end's (o->cfg) or, after a reload, cfg_own */
    struct config cfg_own;
    bool cfg_owned;
    char *backup_dir, *metadata, *state_path, *sock_path, *lock_path, *repo_path;
    int lock_fd, listen_fd, done_pipe[2];
    struct repo *r;
    struct schedule_config sch;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *queue, *queue_tail, *running, *finished;
    struct job *kept; /* the last JOBS_KEPT finished jobs, newest first (for the API) */
    uint64_t job_seq;
    struct api *api;
    struct walq *walq;
    struct walstream *walstream; /* BACKUP_WAL_STREAMING */
    struct walmon *walmon;       /* the watch on the server's WAL archiver */
    bool worker_stop;
    /* a SIGHUP that came while a job ran: the worker starts no job until the main loop has
     * reloaded, once the running one ended */
    bool reload_pending;
    pthread_t worker;
    volatile sig_atomic_t cancel;   /* the running job's: set at stop, or at its timeout */
    volatile sig_atomic_t stopping; /* set at stop: notifications give up their retries */

    /* clock: virtual when CARIS_TEST_CLOCK is set */
    bool vclock;
    int64_t v_base_s, v_base_mono_ns, v_end_s;
    int64_t v_rate; /* CARIS_TEST_CLOCK_RATE: virtual seconds per second, no jumps; 0: jumps */

    /* The notification settings (under mu; NULL until loaded). A notification in flight (from
     * the worker, the stale check or the WAL threads, at any time) holds a reference: a reload
     * puts new ones in place at once, and the old ones go with their last user. */
    struct nc_ref *ncr;

    int64_t next_run[SCHEDULE_COUNT]; /* virtual seconds; 0: off */
    int64_t next_stale_check;
    /* how long (monotonic) the stale check waits for a run in progress: STALE_RUN_WAIT_NS, or
     * the test knob CARIS_TEST_STALE_RUN_WAIT_MS */
    int64_t stale_run_wait_ns;
    /* BACKUP_RUN_TIMEOUT (0: none): a backup run going on longer (monotonic) is cancelled */
    int64_t run_timeout_ns;
    /* the stale check's newest backups (STALE_KINDS order), as the worker last read them */
    bool stale_listed, stale_refresh;
    int64_t stale_at; /* the time the requested check is for (0: the worker's now) */
    int64_t stale_newest[2];
    char stale_newest_id[2][CARIS_ID_MAX];
    /* a stale alert that could not be delivered is tried again from then on (monotonic ns; an
     * hour later: each try may take the channels' 60 s) */
    int64_t stale_retry_mono[2];
    /* the stale check the main loop hands off during a long run (its notification may take
     * the channels' 60 s, which the control socket must not wait for): one at a time */
    pthread_t stale_th;
    bool stale_th_started;
    int stale_th_busy; /* atomic */
    int64_t stale_th_now;
    /* the telling of a run the last daemon left unfinished, off the main thread (its
     * notification may take the channels' 60 s, which the start must not wait for) */
    pthread_t tell_th;
    bool tell_started;
    json_t *tell_rj;
    int64_t last_now; /* the time the loop saw last: a clock set back shows against it */
    json_t *state;    /* what scheduler.json holds */
    int64_t started_ns;
    struct client clients[MAX_CLIENTS];
    size_t nclients;
    char current_step[200];
};

/* ---- logging ----------------------------------------------------------------------------- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void dlog(struct daemon *d, enum log_level l, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void dlog(struct daemon *d, enum log_level l, const char *event, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mu);
    if (d->o->log)
        d->o->log(d->o->log_ctx, l, event, msg);
    pthread_mutex_unlock(&log_mu);
}

void daemon_log(struct daemon *d, enum log_level l, const char *event, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    dlog(d, l, event, "%s", msg);
}

/* The services' log lines (through the job's op) */
static void op_log(void *ctx, enum log_level l, const char *msg)
{
    struct daemon *d = ctx;
    dlog(d, l, "step", "%s", msg);
}

/* ---- clock --------------------------------------------------------------------------------- */

static int64_t now_s_locked(const struct daemon *d)
{
    if (!d->vclock)
        return time_now_ns() / 1000000000;
    return d->v_base_s +
           (time_mono_ns() - d->v_base_mono_ns) * (d->v_rate ? d->v_rate : 1) / 1000000000;
}

static int64_t now_s(struct daemon *d)
{
    pthread_mutex_lock(&d->mu);
    int64_t t = now_s_locked(d);
    pthread_mutex_unlock(&d->mu);
    return t;
}

static void clock_jump_locked(struct daemon *d, int64_t t)
{
    d->v_base_s = t;
    d->v_base_mono_ns = time_mono_ns();
}

static void iso_s(int64_t s, char *out, size_t n)
{
    time_format_iso(s * 1000000000, out, n);
}

static json_t *json_iso_s(int64_t s)
{
    char t[40];
    iso_s(s, t, sizeof(t));
    return json_string(t);
}

static int clock_setup(struct daemon *d, struct err *e)
{
    const char *v = getenv("CARIS_TEST_CLOCK");
    if (!v || !*v)
        return 0;
    char *copy = xstrdup(v), *comma = strchr(copy, ',');
    if (comma)
        *comma++ = '\0';
    int64_t start, end = INT64_MAX;
    int rc = 0;
    if (time_parse_iso(copy, &start) != 0 || (comma && time_parse_iso(comma, &end) != 0))
        rc = err_set(e, ERR_CONFIG, "write CARIS_TEST_CLOCK=2026-03-01T00:00:00Z[,END]",
                     "CARIS_TEST_CLOCK: not an ISO-8601 time");
    else if (start > time_now_ns() || (comma && end > time_now_ns()) || end < start)
        rc = err_set(e, ERR_CONFIG, "backups cannot be dated in the future",
                     "CARIS_TEST_CLOCK: the times must be in the past and START <= END");
    /* CARIS_TEST_CLOCK_RATE=N: the test clock runs N times as fast as the monotonic one,
     * continuously (no jump to the next due time when idle): what happens while time passes
     * with the daemon idle or busy (a reload held up, runs outlasting their interval) is seen in
     * seconds */
    const char *rv = getenv("CARIS_TEST_CLOCK_RATE");
    if (rc == 0 && rv && *rv) {
        char *end_p;
        errno = 0;
        long rate = strtol(rv, &end_p, 10);
        if (errno || end_p == rv || *end_p || rate < 1 || rate > 3600)
            rc = err_set(e, ERR_CONFIG, "a number from 1 to 3600",
                         "CARIS_TEST_CLOCK_RATE: not a rate");
        else
            d->v_rate = rate;
    }
    if (rc == 0) {
        d->vclock = true;
        clock_jump_locked(d, start / 1000000000);
        d->v_end_s = comma ? end / 1000000000 : INT64_MAX;
    }
    free(copy);
    return rc;
}

/* ---- the status document ---------------------------------------------------------------- */

/* Writes scheduler.json atomically (fs_write_atomic: temporary file, fsync, rename, fsync of
 * the directory, so that the rename survives a crash too). Under d->mu. */
static void state_save_locked(struct daemon *d)
{
    char *text = json_dumps(d->state, JSON_INDENT(2) | JSON_SORT_KEYS);
    struct err e = ERR_INIT;
    if (!text)
        err_set(&e, ERR_FAILURE, NULL, "cannot write %s: out of memory", d->state_path);
    else
        (void)fs_write_atomic(d->state_path, text, strlen(text), 0600, &e);
    if (err_is_set(&e))
        dlog(d, LOG_WARN, "state", "%s", e.msg);
    free(text);
}

/* What scheduler.json keeps of a queued job, in its "queued" list: what telling it dropped
 * needs (dropped_tell), should the daemon stop, or be killed, before it runs the job. No
 * restore target (a database URL may carry a password). */
static json_t *queued_json(const struct job *j)
{
    const struct djob_spec *sp = &j->spec;
    char t[40];
    time_format_iso(j->queued_ns, t, sizeof(t));
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", j->id, "kind",
                          djob_kind_name(sp->kind), "schedule", j->source, "actor",
                          *sp->actor ? sp->actor : "scheduler", "queuedAt", t);
    if (!o)
        return NULL;
    if (sp->kind == DJOB_BACKUP)
        json_object_set_new(o, "type", json_string(caris_job_type_name(sp->type)));
    else
        json_object_set_new(o, "backupId", json_string(sp->backup_id));
    if (*sp->addr)
        json_object_set_new(o, "addr", json_string(sp->addr));
    return o;
}

/* scheduler.json's "queued": the jobs waiting in the queue, oldest first (absent when none
 * waits). Under d->mu; the caller saves. */
static void state_queue_locked(struct daemon *d)
{
    if (!d->queue) {
        json_object_del(d->state, "queued");
        return;
    }
    json_t *a = json_array();
    for (const struct job *j = d->queue; j; j = j->next)
        json_array_append_new(a, queued_json(j));
    json_object_set_new(d->state, "queued", a);
}

static json_t *sched_state(struct daemon *d, const char *name)
{
    json_t *all = json_object_get(d->state, "schedules");
    json_t *s = json_object_get(all, name);
    if (!s) {
        s = json_object();
        json_object_set_new(all, name, s);
    }
    return s;
}

static void state_load(struct daemon *d)
{
    json_error_t je;
    d->state = json_load_file(d->state_path, 0, &je);
    if (d->state && !json_is_object(d->state)) {
        json_decref(d->state);
        d->state = NULL;
    }
    if (!d->state && access(d->state_path, F_OK) == 0)
        dlog(d, LOG_WARN, "state", "%s is not readable JSON (%s): starting a new one",
             d->state_path, je.text);
    if (!d->state)
        d->state = json_object();
    if (!json_is_object(json_object_get(d->state, "schedules")))
        json_object_set_new(d->state, "schedules", json_object());
    if (!json_is_array(json_object_get(d->state, "history")))
        json_object_set_new(d->state, "history", json_array());
    json_object_set_new(d->state, "version", json_integer(1));
}

static int64_t state_time(json_t *obj, const char *key)
{
    int64_t ns;
    const char *s = json_string_value(json_object_get(obj, key));
    return s && time_parse_iso(s, &ns) == 0 ? ns / 1000000000 : 0;
}

/* The "schedules" and "nextRuns" of the status, from d->sch and d->next_run. Under d->mu. */
static void state_schedules_locked(struct daemon *d)
{
    json_t *next = json_array();
    for (size_t i = 0; i < SCHEDULE_COUNT; i++) {
        const struct schedule *s = &d->sch.items[i];
        json_t *st = sched_state(d, s->name);
        json_object_set_new(st, "cron", json_string(s->enabled ? s->text : "off"));
        json_object_set_new(st, "type", json_string(s->backup_type));
        json_object_set_new(st, "enabled", json_boolean(s->enabled));
        if (s->enabled && d->next_run[i]) {
            json_object_set_new(st, "nextRun", json_iso_s(d->next_run[i]));
            json_array_append_new(next,
                                  json_pack("{s:s, s:s, s:o}", "schedule", s->name, "type",
                                            s->backup_type, "time", json_iso_s(d->next_run[i])));
        } else {
            json_object_del(st, "nextRun");
        }
    }
    json_object_set_new(d->state, "nextRuns", next);
}

/* ---- schedules ---------------------------------------------------------------------------- */

static void compute_next_locked(struct daemon *d, size_t i, int64_t after)
{
    struct err e = ERR_INIT;
    d->next_run[i] = 0;
    if (!d->sch.items[i].enabled)
        return;
    int64_t t;
    if (cron_next(&d->sch.items[i].cron, d->sch.tz, after, &t, &e) == 0)
        d->next_run[i] = t;
    else
        dlog(d, LOG_ERROR, "schedule", "%s: %s", d->sch.items[i].name, e.msg);
}

static enum caris_job_type sched_type(const struct schedule *s)
{
    return strcmp(s->backup_type, "full") == 0 ? CARIS_JOB_FULL : CARIS_JOB_INCREMENTAL;
}

static void enqueue_locked(struct daemon *d, struct job *j)
{
    /* ids are unique across restarts: the daemon's start time and a sequence number. The
     * time in milliseconds: two daemons started within one second (a restart after kill -9)
     * gave the same ids to different jobs, in the audit log and the API (before 2026-12-06).
     * Daemons run one at a time (the daemon lock) and each start takes longer than that. */
    snprintf(j->id, sizeof(j->id), "job-%lld-%llu", (long long)(d->started_ns / 1000000),
             (unsigned long long)++d->job_seq);
    j->state = JOB_QUEUED;
    j->queued_ns = time_now_ns();
    j->next = NULL;
    if (d->queue_tail)
        d->queue_tail->next = j;
    else
        d->queue = j;
    d->queue_tail = j;
    /* in scheduler.json before anyone is told it is queued: a daemon killed before it runs
     * the job leaves it there for the next one to tell (lost_jobs_tell) */
    state_queue_locked(d);
    state_save_locked(d);
    pthread_cond_signal(&d->cv);
}

static size_t queue_len_locked(const struct daemon *d)
{
    size_t n = 0;
    for (const struct job *j = d->queue; j; j = j->next)
        n++;
    return n;
}

static struct job *job_new(enum caris_job_type type, const char *source, int64_t scheduled_for)
{
    struct job *j = xcalloc(1, sizeof(*j));
    j->type = type;
    j->spec.kind = DJOB_BACKUP;
    j->spec.type = type;
    snprintf(j->spec.actor, sizeof(j->spec.actor), "%s",
             strcmp(source, "manual") == 0 ? "run-now" : "scheduler");
    snprintf(j->source, sizeof(j->source), "%s", source);
    j->scheduled_for = scheduled_for;
    return j;
}

/* At start: a schedule whose last run was before a slot that has passed missed it (the
 * machine was off): run it once now, however many slots passed. A schedule that never ran
 * (first start) does not catch up. */
/* The newest slot of s after `after` and not after now (0: none), and how many there are
 * (bounded: a minute-by-minute schedule over a year). */
/* The slots of s in (from, now]: the newest (0: none), their number in *count; false when
 * 600,000 were counted before now was reached (then the newest is not known). */
static bool slots_in(const struct daemon *d, const struct schedule *s, int64_t from, int64_t now,
                     int64_t *newest, int *count)
{
    struct err e = ERR_INIT;
    int64_t t = from;
    *newest = 0;
    *count = 0;
    for (int k = 0; k < 600000; k++) {
        int64_t n;
        if (cron_next(&s->cron, d->sch.tz, t, &n, &e) != 0 || n > now)
            return true;
        *newest = t = n;
        ++*count;
    }
    return false;
}

/* The newest slot of s after `after` and up to now, and how many there were (*count; -1: too
 * many to count). Counting from `after` alone, a long stop outran the 600,000 steps (a
 * schedule of every minute, 417 days): the slot then found was an old one, and every restart
 * caught up again. Then the newest is looked for from a day before now, a month, a year, eight
 * (29 February is the rarest day a schedule can name). */
static int64_t newest_slot(const struct daemon *d, const struct schedule *s, int64_t after,
                           int64_t now, int *count)
{
    static const int64_t windows[] = {86400, 31 * 86400, 366 * 86400, 8 * 366 * 86400 + 86400};
    int64_t newest;
    if (slots_in(d, s, after, now, &newest, count))
        return newest;
    for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
        int n;
        if (slots_in(d, s, now - windows[w], now, &newest, &n) && newest)
            break;
    }
    *count = -1;
    return newest;
}

static void catch_up_locked(struct daemon *d, int64_t now)
{
    for (size_t i = 0; i < SCHEDULE_COUNT; i++) {
        const struct schedule *s = &d->sch.items[i];
        if (!s->enabled)
            continue;
        json_t *last = json_object_get(sched_state(d, s->name), "lastRun");
        int64_t last_slot = state_time(last, "scheduledFor");
        if (!last_slot)
            last_slot = state_time(last, "startedAt");
        if (!last_slot)
            continue;
        /* a run the last daemon's stop cancelled (a shutdown or restart during the night's
         * backup) made nothing: its slot was missed too */
        if (json_is_true(json_object_get(last, "stopped")) &&
            !json_is_true(json_object_get(last, "ok")))
            last_slot--;
        int count;
        int64_t missed = newest_slot(d, s, last_slot, now, &count);
        if (missed) {
            char when[40];
            iso_s(missed, when, sizeof(when));
            dlog(d, LOG_INFO, "catch-up", "%s run of %s was missed: running it once now", s->name,
                 when);
            struct job *j = job_new(sched_type(s), s->name, missed);
            j->catch_up = true;
            enqueue_locked(d, j);
        }
    }
}

/* ---- notifications ------------------------------------------------------------------------ */

/* Lets go of a reference to notification settings (under d->mu): the last one frees them. */
static void nc_put_locked(struct nc_ref *r)
{
    if (r && --r->refs == 0) {
        notify_config_free(&r->nc);
        free(r);
    }
}

/* Sends ev on every configured channel: 0 (delivered everywhere, or not to be sent), 1 (by
 * some channel, not all), -1 (by none). */
static int notify(struct daemon *d, const struct notify_event *ev)
{
    pthread_mutex_lock(&d->mu);
    struct nc_ref *r = d->ncr;
    if (r)
        r->refs++;
    pthread_mutex_unlock(&d->mu);
    int rc = 0;
    struct err e = ERR_INIT;
    bool sent = r && notify_configured(&r->nc) && notify_should_send(&r->nc, ev);
    if (sent) {
        /* not the job's cancel: a run cancelled for its timeout still tells of its failure */
        struct caris_op op = {
            .log = op_log, .log_ctx = d, .cancel = &d->stopping, .actor = "scheduler"};
        rc = caris_notify(&r->nc, ev, &op, &e);
    }
    pthread_mutex_lock(&d->mu);
    nc_put_locked(r);
    pthread_mutex_unlock(&d->mu);
    if (!sent)
        return 0;
    if (rc != 0)
        dlog(d, LOG_WARN, "notify", "%s notification not delivered%s: %s",
             notify_kind_name(ev->kind), rc > 0 ? " on every channel" : "", e.msg);
    else
        dlog(d, LOG_INFO, "notify", "%s notification sent", notify_kind_name(ev->kind));
    /* the last ones, for the status (the dashboard shows them); the error is the notify
     * module's, which never holds a secret */
    char when[40];
    time_format_iso(time_now_ns(), when, sizeof(when));
    json_t *n =
        json_pack("{s:s, s:s, s:s, s:b}", "time", when, "kind", notify_kind_name(ev->kind),
                  "backupKind", ev->backup_kind ? ev->backup_kind : "", "delivered", rc == 0);
    if (rc != 0)
        json_object_set_new(n, "error", jsonx_text(e.msg));
    pthread_mutex_lock(&d->mu);
    json_t *list = json_object_get(d->state, "notifications");
    if (!json_is_array(list)) {
        list = json_array();
        json_object_set_new(d->state, "notifications", list);
    }
    json_array_insert_new(list, 0, n);
    while (json_array_size(list) > 10)
        json_array_remove(list, 10);
    state_save_locked(d);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

void episode_alert_init(struct episode_alert *a, const struct config *cfg)
{
    memset(a, 0, sizeof(*a));
    a->retry_ns = daemon_test_knob_ns(cfg, "CARIS_TEST_ALERT_RETRY_MS", 3600 * INT64_C(1000000000));
}

void episode_alert_reset(struct episode_alert *a)
{
    a->sent = false;
    a->retry_mono_ns = 0;
}

bool episode_alert_due(const struct episode_alert *a, int64_t mono_ns)
{
    return !a->sent && mono_ns >= a->retry_mono_ns;
}

void episode_alert_send(struct daemon *d, struct episode_alert *a, const struct notify_event *ev,
                        int64_t mono_ns, const char *source, const char *what)
{
    a->sent = notify(d, ev) >= 0;
    if (!a->sent) {
        a->retry_mono_ns = mono_ns + a->retry_ns;
        dlog(d, LOG_WARN, source,
             "the alert that %s was not delivered: it is tried again in an hour", what);
    }
}

static void notify_step(struct daemon *d, const struct caris_job_step *s, int64_t when_s)
{
    struct notify_event ev = {.backup_id = *s->backup_id ? s->backup_id : NULL,
                              .duration_ms = s->duration_ns / 1000000,
                              .time_ns = when_s * 1000000000};
    char kind[64];
    snprintf(kind, sizeof(kind), "%s", s->what);
    if (s->kind == CARIS_STEP_BACKUP) {
        json_t *mode = json_object_get(s->detail, "mode");
        if (mode)
            snprintf(kind, sizeof(kind), "%s %s", s->what, json_string_value(mode));
        /* a backup with warnings (a file it could not read) is not a success to keep quiet
         * about: it is in the repository without that file's content */
        ev.kind = !s->ok        ? NOTIFY_BACKUP_FAILED
                  : s->warnings ? NOTIFY_STEP_WARNINGS
                                : NOTIFY_BACKUP_SUCCEEDED;
        ev.has_size = s->ok;
        ev.size_bytes = s->bytes;
    } else if (s->ok && s->warnings) {
        ev.kind = NOTIFY_STEP_WARNINGS; /* a prune that found backups needing data gone */
        snprintf(kind, sizeof(kind), "%s", caris_job_step_name(s->kind));
    } else if (s->kind == CARIS_STEP_VERIFY && !s->ok) {
        ev.kind = NOTIFY_VERIFY_FAILED;
        ev.verification = "failed";
    } else if (s->kind == CARIS_STEP_DRILL && !s->ok) {
        ev.kind = NOTIFY_DRILL_FAILED;
    } else if (!s->ok) {
        ev.kind = NOTIFY_STEP_FAILED; /* retention, prune or the copy: a failure of the run */
        snprintf(kind, sizeof(kind), "%s", caris_job_step_name(s->kind));
    } else {
        return;
    }
    ev.backup_kind = kind;
    if (!s->ok || (s->warnings && err_is_set(&s->err))) {
        ev.error = s->err.msg;
        ev.hint = *s->err.hint ? s->err.hint : NULL;
    }
    notify(d, &ev);
}

/* Stale alerts: no successful backup of a configured kind within BACKUP_ALERT_AFTER. One
 * alert per newest backup (or per "none ever"), not one per check.
 *
 * The newest backups are read from the repository (stale_refresh) only where d->r may be used:
 * in the worker, between jobs, and at start before the worker runs. The check itself
 * (stale_eval) reads what was found last, so that it also runs while a job has been going
 * for over STALE_RUN_WAIT_NS: a backup that hangs (a table lock that is never released, a file
 * system that stopped answering) would otherwise keep the alert silent for as long as it
 * hangs. */
static const char *const STALE_KINDS[2] = {"database", "files"};

static int reopen_repo(struct daemon *d, struct err *e);
static void repo_fresh(struct daemon *d);

static void stale_refresh(struct daemon *d, int64_t now)
{
    struct err e = ERR_INIT;
    repo_fresh(d); /* (a repository moved under the daemon: judged by the one at the path) */
    /* a run whose prune spent the handle closed it: opened again, or the check judged by the
     * backups found before that run, and alerted that the backup it had just made was missing
     * (d->ncr is set before any thread starts) */
    if (!d->r && reopen_repo(d, &e) != 0) {
        dlog(d, LOG_WARN, "stale", "cannot open the repository to find the newest backups: %s",
             e.msg);
        return;
    }
    json_t *list = caris_backup_list(d->r, NULL, &e);
    if (!list) {
        dlog(d, LOG_WARN, "stale", "cannot list backups: %s", e.msg);
        return;
    }
    int64_t newest[2] = {0, 0};
    const char *newest_id[2] = {"none", "none"};
    size_t i;
    json_t *b;
    json_array_foreach(list, i, b)
    {
        const char *kind = json_string_value(json_object_get(b, "kind"));
        const char *status = json_string_value(json_object_get(b, "status"));
        int64_t t = state_time(b, "started");
        for (size_t k = 0; k < 2; k++)
            /* one dated in the future proves no recent success (and would hide the lack of
             * one until its date) */
            if (kind && strcmp(kind, STALE_KINDS[k]) == 0 && status &&
                strcmp(status, "damaged") != 0 && t > newest[k] &&
                !caris_backup_time_future(t * 1000000000, now * 1000000000)) {
                newest[k] = t;
                newest_id[k] = json_string_value(json_object_get(b, "id"));
            }
    }
    pthread_mutex_lock(&d->mu);
    for (size_t k = 0; k < 2; k++) {
        d->stale_newest[k] = newest[k];
        snprintf(d->stale_newest_id[k], sizeof(d->stale_newest_id[k]), "%s", newest_id[k]);
    }
    d->stale_listed = true;
    pthread_mutex_unlock(&d->mu);
    json_decref(list);
}

/* Under d->mu: whether the stale alert watches STALE_KINDS[k]. A kind not configured is not
 * watched, unless the repository holds backups of it: a POSTGRES_URL that went missing (a
 * typo, an edit) stops database backups, and that is what the alert is for. */
static bool stale_watched_locked(const struct daemon *d, size_t k)
{
    static const char *const vars[] = {"POSTGRES_URL", "BACKUP_FILES_PATHS"};
    return config_get(d->cfg, vars[k]) || d->stale_newest[k] != 0;
}

static void stale_eval(struct daemon *d, int64_t now)
{
    for (size_t k = 0; k < 2; k++) {
        pthread_mutex_lock(&d->mu);
        if (!d->ncr || !d->stale_listed || !stale_watched_locked(d, k)) {
            pthread_mutex_unlock(&d->mu);
            continue;
        }
        int64_t newest = d->stale_newest[k];
        char newest_id[CARIS_ID_MAX];
        snprintf(newest_id, sizeof(newest_id), "%s", d->stale_newest_id[k]);
        bool send = false;
        if (notify_stale_due(&d->ncr->nc, newest * 1000000000, now * 1000000000)) {
            json_t *alerted = json_object_get(d->state, "staleAlerted");
            if (!alerted) {
                alerted = json_object();
                json_object_set_new(d->state, "staleAlerted", alerted);
            }
            const char *was = json_string_value(json_object_get(alerted, STALE_KINDS[k]));
            send =
                (!was || strcmp(was, newest_id) != 0) && time_mono_ns() >= d->stale_retry_mono[k];
            if (send) {
                json_object_set_new(alerted, STALE_KINDS[k], json_string(newest_id));
                state_save_locked(d);
            }
        }
        pthread_mutex_unlock(&d->mu);
        if (send) {
            if (newest)
                dlog(d, LOG_WARN, "stale", "no successful %s backup since %s", STALE_KINDS[k],
                     newest_id);
            else
                dlog(d, LOG_WARN, "stale", "no successful %s backup at all", STALE_KINDS[k]);
            struct notify_event ev = {.kind = NOTIFY_STALE,
                                      .backup_kind = STALE_KINDS[k],
                                      .duration_ms = -1,
                                      .last_success_ns = newest * 1000000000,
                                      .time_ns = now * 1000000000};
            if (notify(d, &ev) < 0) {
                /* taken by no channel: not recorded as sent (the alert was lost for good when
                 * the channels failed, or the daemon stopped, at that moment), tried again
                 * later; taken by one, it is sent (sent again, the channels that took it got
                 * it every hour) */
                pthread_mutex_lock(&d->mu);
                json_t *alerted = json_object_get(d->state, "staleAlerted");
                const char *was = json_string_value(json_object_get(alerted, STALE_KINDS[k]));
                if (was && strcmp(was, newest_id) == 0) {
                    json_object_del(alerted, STALE_KINDS[k]);
                    state_save_locked(d);
                }
                d->stale_retry_mono[k] = time_mono_ns() + 3600 * INT64_C(1000000000);
                pthread_mutex_unlock(&d->mu);
                dlog(d, LOG_WARN, "stale",
                     "the %s stale alert was not delivered: it is tried again in an hour, or "
                     "when the daemon starts again",
                     STALE_KINDS[k]);
            }
        }
    }
}

static void *stale_thread_main(void *arg)
{
    struct daemon *d = arg;
    stale_eval(d, d->stale_th_now);
    __atomic_store_n(&d->stale_th_busy, 0, __ATOMIC_RELEASE);
    return NULL;
}

/* The stale check off the main thread (which serves the control socket): skipped while the
 * last one still runs (it is delivering its alert). */
static void stale_eval_async(struct daemon *d, int64_t now)
{
    if (__atomic_load_n(&d->stale_th_busy, __ATOMIC_ACQUIRE))
        return;
    if (d->stale_th_started)
        pthread_join(d->stale_th, NULL);
    d->stale_th_started = false;
    d->stale_th_now = now;
    __atomic_store_n(&d->stale_th_busy, 1, __ATOMIC_RELEASE);
    if (pthread_create(&d->stale_th, NULL, stale_thread_main, d) == 0) {
        d->stale_th_started = true;
    } else {
        __atomic_store_n(&d->stale_th_busy, 0, __ATOMIC_RELEASE);
        stale_eval(d, now); /* no thread: here, as before */
    }
}

/* Asks the worker to read the newest backups again and check, for the time at (a test clock
 * may have jumped by the time it does); with wait, waits until it has. The worker does this
 * between jobs. */
static void stale_refresh_ask(struct daemon *d, int64_t at, bool wait)
{
    pthread_mutex_lock(&d->mu);
    d->stale_refresh = true;
    d->stale_at = at;
    pthread_cond_broadcast(&d->cv);
    while (wait && d->stale_refresh && !d->worker_stop)
        pthread_cond_wait(&d->cv, &d->mu);
    pthread_mutex_unlock(&d->mu);
}

/* ---- the worker ------------------------------------------------------------------------- */

struct step_ctx {
    struct daemon *d;
    int64_t when;
    struct job *j;
};

static bool stop_requested(const struct daemon *d);

/* Whether j was cancelled on purpose: for going on longer than BACKUP_RUN_TIMEOUT, or by
 * `schedule cancel`; then *e (a failure of it, "cancelled") says which. */
static bool cancel_explain(struct daemon *d, struct job *j, struct err *e)
{
    pthread_mutex_lock(&d->mu);
    /* (a stop asked: the S3 requests in flight end at once, maybe before the main loop marked
     * the job stopped) */
    bool timed_out = j->timed_out, asked = j->cancel_asked,
         stopped = j->stopped || stop_requested(d);
    int64_t limit_s = d->run_timeout_ns / 1000000000;
    pthread_mutex_unlock(&d->mu);
    if ((timed_out || asked || stopped) && e && strncmp(e->msg, "cancelled", 9) == 0) {
        char rest[sizeof(e->msg)]; /* what the cancelled operation said after "cancelled" */
        snprintf(rest, sizeof(rest), "%s", e->msg + 9);
        if (stopped && !timed_out && !asked)
            err_set(e, ERR_FAILURE,
                    strcmp(j->source, "manual") == 0 || strcmp(j->source, "api") == 0
                        ? "nothing of it was committed: ask for it again"
                        : "nothing of it was committed: the daemon runs it again when it starts",
                    "cancelled: the daemon stopped during the run%s", rest);
        else if (timed_out)
            err_set(e, ERR_FAILURE,
                    "find what it waited for (a table lock never released, a storage that "
                    "stopped answering: the daemon's log has its last step), or raise "
                    "BACKUP_RUN_TIMEOUT",
                    "cancelled: the run went on longer than BACKUP_RUN_TIMEOUT (%lld s)%s",
                    (long long)limit_s, rest);
        else
            err_set(e, ERR_FAILURE, "the next run makes the backup this one did not",
                    "cancelled by `caris-backup schedule cancel`%s", rest);
    }
    return timed_out || asked;
}

/* A cancel after the backup was made (during its verification, copy or drill): the backup
 * is there and only that step is undone (the hint said the next run makes the backup). */
static void cancel_step_hint(const struct caris_job_step *s, struct err *e)
{
    if (s->kind != CARIS_STEP_BACKUP && *s->backup_id && strncmp(e->msg, "cancelled", 9) == 0)
        snprintf(e->hint, sizeof(e->hint),
                 "backup %s was made, but its %s did not finish: run `caris-backup verify %s`",
                 s->backup_id, caris_job_step_name(s->kind), s->backup_id);
}

static void on_step(void *ctx, const struct caris_job_step *s)
{
    struct step_ctx *sc = ctx;
    struct caris_job_step copy = *s;
    if (!s->ok && cancel_explain(sc->d, sc->j, &copy.err)) {
        cancel_step_hint(s, &copy.err);
        /* cancelled at the timeout or when asked: the run failed (a verify or drill cut short
         * found no damage) */
        char kind[64];
        snprintf(kind, sizeof(kind), "%s%s%s", s->what, *s->what ? " " : "",
                 caris_job_step_name(s->kind));
        /* a step after the backup (its verify, copy, drill): the backup was made, and the mail
         * said "backup FAILED ... nothing of it was committed" */
        struct notify_event ev = {.kind = s->kind == CARIS_STEP_BACKUP ? NOTIFY_BACKUP_FAILED
                                                                       : NOTIFY_STEP_FAILED,
                                  .backup_kind = kind,
                                  .backup_id = *s->backup_id ? s->backup_id : NULL,
                                  .duration_ms = s->duration_ns / 1000000,
                                  .error = copy.err.msg,
                                  .hint = *copy.err.hint ? copy.err.hint : NULL,
                                  .time_ns = now_s(sc->d) * 1000000000};
        notify(sc->d, &ev);
        return;
    }
    notify_step(sc->d, s, now_s(sc->d));
}

static void on_progress(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    struct daemon *d = ctx;
    pthread_mutex_lock(&d->mu);
    snprintf(d->current_step, sizeof(d->current_step), "%s %llu/%llu", phase,
             (unsigned long long)done, (unsigned long long)total);
    if (d->running) {
        snprintf(d->running->phase, sizeof(d->running->phase), "%s", phase);
        d->running->done = done;
        d->running->total = total;
    }
    pthread_mutex_unlock(&d->mu);
}

/* A warning the repository handle met after its opening (a state object not written after a
 * commit, a read-only file system read without a lock): in the daemon's log. */
static void repo_warn_late(void *ctx, const char *object, const char *message)
{
    dlog(ctx, LOG_WARN, "repository", "%s: %s", object, message);
}

static int reopen_repo(struct daemon *d, struct err *e)
{
    if (d->r)
        repo_close(d->r);
    d->r = NULL;
    struct caris_open_opts oo = {.repo_path = d->repo_path, .backup_dir = d->backup_dir};
    if (config_encryption_key(d->o->cfg, &oo.key, e) != 0)
        return -1;
    struct caris_open_result res = {0};
    d->r = caris_repo_open(&oo, &res, e);
    if (d->r) {
        /* What the opening found (a backup deleted from the repository, its state record
         * rolled back, a pack gone) is logged, as the CLI prints it: the daemon dropped it,
         * and opens the repository once for many runs. */
        if (err_is_set(&res.audit_err))
            dlog(d, LOG_WARN, "repository", "%s", res.audit_err.msg);
        size_t i;
        json_t *w;
        json_array_foreach(repo_warnings(d->r), i, w)
            repo_warn_late(d, json_string_value(json_object_get(w, "object")),
                           json_string_value(json_object_get(w, "message")));
        char hint[512];
        if (caris_open_hint(d->r, &res, d->backup_dir, hint, sizeof(hint)))
            dlog(d, LOG_WARN, "repository", "%s", hint);
        repo_set_warn_sink(d->r, repo_warn_late, d);
    }
    json_decref(res.state);
    return d->r ? 0 : -1;
}

/* Whether the cadence of a periodic extra (prune, drill) is due: BACKUP_PRUNE_INTERVAL_DAYS /
 * BACKUP_DRILL_INTERVAL_DAYS (default 7; 0 = never) since the last one. A last one more than
 * a day in the future was recorded under a wrong clock: it does not hold the extra back (it
 * would until the clock caught up, months perhaps, without a word). */
static bool cadence_due(struct daemon *d, const char *var, const char *key, int64_t now)
{
    const char *v = config_get(d->cfg, var);
    long days = 7;
    if (v) {
        char *end;
        days = strtol(v, &end, 10);
        if (*end || days < 0 || days > 3660) {
            dlog(d, LOG_WARN, "config", "%s must be a number of days (0 = never): using 7", var);
            days = 7;
        }
    }
    if (days == 0)
        return false;
    pthread_mutex_lock(&d->mu);
    int64_t last = state_time(d->state, key);
    pthread_mutex_unlock(&d->mu);
    return !last || last - now > DAY_S ||
           now - last >= days * DAY_S - 3600; /* an hour's slack for DST / drift */
}

/* BACKUP_DRILL_SCRATCH: "database" (default: a scratch database on the POSTGRES_URL server)
 * or "local" (a throwaway cluster under BACKUP_DIR/temp). */
static bool drill_local(struct daemon *d)
{
    const char *v = config_get(d->cfg, "BACKUP_DRILL_SCRATCH");
    if (v && strcmp(v, "local") != 0 && strcmp(v, "database") != 0)
        dlog(d, LOG_WARN, "config",
             "BACKUP_DRILL_SCRATCH must be database or local: using database");
    return v && strcmp(v, "local") == 0;
}

/* Before a job: the open repository brought up to date (other processes' backups), or
 * closed (d->r NULL: the job opens it again) when that fails or when the directory at its path
 * is no longer the one it opened. */
static void repo_fresh(struct daemon *d)
{
    struct err e = ERR_INIT;
    /* a repository moved or replaced under the daemon (its directory renamed, another made
     * at the path): the open one is no longer the one every other command and the API see,
     * and runs went on into it, "succeeded", their backups found by nothing */
    if (d->r && storage_moved(repo_storage(d->r))) {
        dlog(d, LOG_WARN, "job",
             "the repository at %s is not the directory the daemon opened (moved, replaced or "
             "removed since): opening it again",
             repo_path(d->r));
        repo_close(d->r);
        d->r = NULL;
    }
    if (d->r && repo_refresh(d->r, &e) != 0) {
        dlog(d, LOG_WARN, "job", "cannot refresh the repository (%s): opening it again", e.msg);
        repo_close(d->r);
        d->r = NULL;
    }
}

static void run_job(struct daemon *d, struct job *j)
{
    struct err e = ERR_INIT;
    int64_t start = now_s(d);
    char when[40];
    iso_s(j->scheduled_for ? j->scheduled_for : start, when, sizeof(when));
    dlog(d, LOG_INFO, "job", "%s %s run (%s%s): started", j->source, caris_job_type_name(j->type),
         j->scheduled_for ? "scheduled for " : "at ", when);
    repo_fresh(d);
    struct caris_job_result res = {0};
    int rc = -1;
    bool has_db = config_get(d->cfg, "POSTGRES_URL") != NULL;
    if (!d->r && reopen_repo(d, &e) != 0) {
        res.type = j->type;
        res.started_ns = res.ended_ns = time_now_ns();
    } else {
        struct step_ctx sc = {d, start, j};
        struct caris_job_opts jo = {
            .type = j->type,
            .cfg = d->cfg,
            .time_ns = d->vclock ? start * 1000000000 : 0,
            .verify = true,
            .retention = true,
            .prune = cadence_due(d, "BACKUP_PRUNE_INTERVAL_DAYS", "lastPrune", start),
            .drill = has_db && cadence_due(d, "BACKUP_DRILL_INTERVAL_DAYS", "lastDrill", start),
            .drill_local = drill_local(d),
            .threads = d->o->threads,
            .skip_files = j->spec.skip_files,
            .on_step = on_step,
            .step_ctx = &sc};
        struct caris_op op = {.progress = on_progress,
                              .progress_ctx = d,
                              .log = op_log,
                              .log_ctx = d,
                              .cancel = &d->cancel,
                              .actor = j->spec.actor};
        rc = caris_job_run(d->r, &jo, &op, &res, &e);
        if (rc != 0) { /* the run's error and its steps' say why it was cancelled */
            cancel_explain(d, j, &e);
            bool first = true;
            for (size_t i = 0; i < res.nsteps; i++)
                if (!res.steps[i].ok) {
                    cancel_explain(d, j, &res.steps[i].err);
                    cancel_step_hint(&res.steps[i], &res.steps[i].err);
                    if (first)
                        cancel_step_hint(&res.steps[i], &e);
                    first = false;
                }
        }
        if (res.handle_spent) {
            repo_close(d->r); /* prune spent the handle: the next job opens again */
            d->r = NULL;
        }
    }
    json_t *rj = caris_job_result_to_json(&res);
    json_object_set_new(rj, "schedule", json_string(j->source));
    if (j->scheduled_for)
        json_object_set_new(rj, "scheduledFor", json_iso_s(j->scheduled_for));
    if (j->catch_up)
        json_object_set_new(rj, "catchUp", json_true());
    pthread_mutex_lock(&d->mu);
    bool stopped = j->stopped || stop_requested(d); /* (see cancel_explain) */
    pthread_mutex_unlock(&d->mu);
    if (rc != 0 && stopped) /* caught up by the next daemon (catch_up_locked) */
        json_object_set_new(rj, "stopped", json_true());
    if (d->vclock) { /* the virtual times, for the status */
        json_object_set_new(rj, "startedAt", json_iso_s(start));
        json_object_set_new(rj, "endedAt", json_iso_s(now_s(d)));
    }
    if (rc != 0)
        json_object_set_new(rj, "error",
                            json_pack("{s:s, s:o, s:o}", "code", err_code_name(e.code), "message",
                                      jsonx_text(e.msg), "hint", jsonx_text(e.hint)));
    bool step_failed = false;
    for (size_t i = 0; i < res.nsteps; i++)
        step_failed |= !res.steps[i].ok;
    /* failed before any step (repository, configuration), or between steps (cancelled at
     * BACKUP_RUN_TIMEOUT after a step that ended well): no step told of it */
    if (rc != 0 && !step_failed) {
        struct notify_event ev = {.kind = NOTIFY_BACKUP_FAILED,
                                  .backup_kind = caris_job_type_name(j->type),
                                  .duration_ms = -1,
                                  .error = e.msg,
                                  .hint = *e.hint ? e.hint : NULL,
                                  .time_ns = start * 1000000000};
        notify(d, &ev);
    }
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < res.nsteps; i++) {
        if (res.steps[i].kind == CARIS_STEP_PRUNE && res.steps[i].ok)
            json_object_set_new(d->state, "lastPrune", json_iso_s(start));
        if (res.steps[i].kind == CARIS_STEP_DRILL)
            json_object_set_new(d->state, "lastDrill", json_iso_s(start));
    }
    if (strcmp(j->source, "manual") != 0 && strcmp(j->source, "api") != 0)
        json_object_set(sched_state(d, j->source), "lastRun", rj);
    json_t *hist = json_object_get(d->state, "history");
    json_array_insert(hist, 0, rj);
    while (json_array_size(hist) > HISTORY_MAX)
        json_array_remove(hist, HISTORY_MAX);
    json_object_del(d->state, "job");
    state_save_locked(d);
    j->result = rj;
    j->ok = rc == 0;
    if (rc != 0)
        j->error = json_incref(json_object_get(rj, "error"));
    pthread_mutex_unlock(&d->mu);
    dlog(d,
         rc != 0        ? LOG_ERROR
         : res.warnings ? LOG_WARN
                        : LOG_INFO,
         "job", "%s %s run: %s%s%s", j->source, caris_job_type_name(j->type),
         rc != 0        ? "failed"
         : res.warnings ? "succeeded, with warnings"
                        : "succeeded",
         rc == 0 ? "" : ": ", rc == 0 ? "" : e.msg);
    caris_job_result_free(&res);
    stale_refresh(d, now_s(d));
    stale_eval(d, now_s(d));
}

/* A verify or restore job (from the API): the services through api_jobs.c. */
static void run_other(struct daemon *d, struct job *j)
{
    struct err e = ERR_INIT;
    const struct djob_spec *sp = &j->spec;
    dlog(d, LOG_INFO, "job", "%s%s of %s (%s): started", djob_kind_name(sp->kind),
         sp->dry_run ? " (dry run)" : "", sp->backup_id, sp->actor);
    repo_fresh(d);
    json_t *result = NULL;
    int rc = -1;
    if (d->r || reopen_repo(d, &e) == 0) {
        struct caris_op op = {.progress = on_progress,
                              .progress_ctx = d,
                              .log = op_log,
                              .log_ctx = d,
                              .cancel = &d->cancel,
                              .actor = sp->actor};
        rc = djob_exec(d->r, d->cfg, d->o->threads, sp, &op, &result, &e);
    }
    pthread_mutex_lock(&d->mu);
    j->result = result ? result : json_null();
    j->ok = rc >= 0;
    if (rc < 0)
        j->error = json_pack("{s:s, s:o, s:o}", "code", err_code_name(e.code), "message",
                             jsonx_text(e.msg), "hint", jsonx_text(e.hint));
    json_object_del(d->state, "job");
    state_save_locked(d);
    pthread_mutex_unlock(&d->mu);
    dlog(d, rc >= 0 ? LOG_INFO : LOG_ERROR, "job", "%s of %s: %s%s%s", djob_kind_name(sp->kind),
         sp->backup_id, rc >= 0 ? "succeeded" : "failed", rc >= 0 ? "" : ": ",
         rc >= 0 ? "" : e.msg);
}

/* A backup run the last daemon started and never finished (it was killed, crashed, or the
 * machine went down): scheduler.json still holds it as the running job. It goes into the
 * history as a failed run (a new reference to that entry), instead of vanishing without a
 * word; NULL when there is none. Caller holds d->mu. */
static const char INTERRUPTED_MSG[] =
    "interrupted: the daemon that ran it stopped (killed, crashed or the machine went down) "
    "before it finished; nothing of it was committed after that";
static json_t *interrupted_run_locked(struct daemon *d)
{
    json_t *job = json_object_get(d->state, "job");
    const char *kind = json_string_value(json_object_get(job, "kind"));
    if (!kind || strcmp(kind, djob_kind_name(DJOB_BACKUP)) != 0)
        return NULL;
    const char *started = json_string_value(json_object_get(job, "startedAt"));
    const char *type = json_string_value(json_object_get(job, "type"));
    const char *sched = json_string_value(json_object_get(job, "schedule"));
    json_t *rj =
        json_pack("{s:s, s:b, s:s?, s:n, s:[], s:[], s:s, s:b, s:{s:s, s:s, s:s}}", "type",
                  type ? type : "?", "ok", 0, "startedAt", started, "endedAt", "backupIds", "steps",
                  "schedule", sched ? sched : "?", "interrupted", 1, "error", "code",
                  err_code_name(ERR_FAILURE), "message", INTERRUPTED_MSG, "hint",
                  "see the daemon's log (journalctl -u caris-backup) for its last lines; the next "
                  "scheduled run backs up again, and `caris-backup unlock` removes what it left");
    if (!rj)
        return NULL;
    json_t *hist = json_object_get(d->state, "history");
    if (!json_is_array(hist)) {
        hist = json_array();
        json_object_set_new(d->state, "history", hist);
    }
    json_array_insert(hist, 0, rj);
    while (json_array_size(hist) > HISTORY_MAX)
        json_array_remove(hist, HISTORY_MAX);
    return rj;
}

/* The audit line of a job that failed without running to its end (args: consumed; backup may
 * be NULL). */
static void audit_job_failed(struct daemon *d, const char *actor, const char *source,
                             const char *operation, json_t *args, const char *backup,
                             const char *msg)
{
    json_t *ids = json_array();
    if (backup)
        json_array_append_new(ids, json_string(backup));
    struct caris_audit_entry en = {.actor = actor,
                                   .source = source,
                                   .operation = operation,
                                   .args = args,
                                   .result = "failed",
                                   .error = msg,
                                   .backup_ids = ids,
                                   .duration_ms = -1};
    struct err e = ERR_INIT;
    if (caris_audit_append(d->backup_dir, &en, &e) != 0)
        dlog(d, LOG_ERROR, "audit", "%s", e.msg);
    json_decref(args);
    json_decref(ids);
}

/* Logs, audits and notifies the interrupted run (interrupted_run_locked's; consumed). */
static void interrupted_run_tell(struct daemon *d, json_t *rj)
{
    if (!rj)
        return;
    const char *type = json_string_value(json_object_get(rj, "type"));
    const char *sched = json_string_value(json_object_get(rj, "schedule"));
    dlog(d, LOG_ERROR, "job", "%s %s run started at %s: %s", sched ? sched : "?", type ? type : "?",
         json_string_value(json_object_get(rj, "startedAt")) ?: "?", INTERRUPTED_MSG);
    json_t *args =
        json_pack("{s:s, s:s}", "schedule", sched ? sched : "?", "type", type ? type : "?");
    audit_job_failed(d, "scheduler", NULL, "backup run", args, NULL, INTERRUPTED_MSG);
    struct notify_event ev = {.kind = NOTIFY_BACKUP_FAILED,
                              .backup_kind = type,
                              .duration_ms = -1,
                              .error = INTERRUPTED_MSG,
                              .time_ns = time_now_ns(),
                              .interrupted = true};
    notify(d, &ev);
    json_decref(rj);
}

/* A verify or restore job (the API's) the last daemon started and never finished: it was
 * dropped without a word (no log line, no audit line, the job's id unknown to the API), while
 * a restore cut short may have left its target half-written. Logged and audited as failed.
 * job: scheduler.json's "job" (borrowed). */
static void interrupted_other_tell(struct daemon *d, json_t *job)
{
    const char *kind = json_string_value(json_object_get(job, "kind"));
    if (!kind || strcmp(kind, djob_kind_name(DJOB_BACKUP)) == 0)
        return;
    const char *id = json_string_value(json_object_get(job, "id"));
    const char *backup = json_string_value(json_object_get(job, "backupId"));
    const char *started = json_string_value(json_object_get(job, "startedAt"));
    static const char msg[] = "interrupted: the daemon that ran it stopped (killed, crashed or the "
                              "machine went down) before it finished";
    dlog(d, LOG_ERROR, "job", "%s %s of %s started at %s: %s%s", kind, id ? id : "?",
         backup ? backup : "?", started ? started : "?", msg,
         strcmp(kind, djob_kind_name(DJOB_RESTORE)) == 0
             ? "; what it restored into may be incomplete: restore again"
             : "; verify again");
    audit_job_failed(d, "scheduler", NULL, kind, json_pack("{s:s}", "job", id ? id : "?"), backup,
                     msg);
}

/* Logs and audits a queued job that was dropped before it ran (q: its queued_json), as
 * failed, by its id: a job the API answered 202 to (or a run-now) left no trace but a count in
 * the log, and after a restart its id was unknown (audit K4). */
static void dropped_tell(struct daemon *d, json_t *q, const char *msg)
{
    const char *id = json_string_value(json_object_get(q, "id"));
    const char *kind = json_string_value(json_object_get(q, "kind"));
    const char *source = json_string_value(json_object_get(q, "schedule"));
    const char *actor = json_string_value(json_object_get(q, "actor"));
    const char *addr = json_string_value(json_object_get(q, "addr"));
    const char *backup_id = json_string_value(json_object_get(q, "backupId"));
    if (!id || !kind || !source)
        return;
    bool backup = strcmp(kind, djob_kind_name(DJOB_BACKUP)) == 0;
    char what[300];
    if (backup)
        snprintf(what, sizeof(what), "%s %s run", source,
                 json_string_value(json_object_get(q, "type")) ?: "?");
    else
        snprintf(what, sizeof(what), "%s of %s", kind, backup_id ? backup_id : "?");
    dlog(d, LOG_WARN, "job", "%s %s: %s; ask for it again", what, id, msg);
    audit_job_failed(d, actor && *actor ? actor : "scheduler", addr && *addr ? addr : NULL,
                     backup ? "backup run" : kind,
                     json_pack("{s:s, s:s}", "job", id, "schedule", source),
                     backup ? NULL : backup_id, msg);
}

/* The jobs still queued when the daemon stops are dropped: each is told (dropped_tell).
 * Called once the worker ended. */
static void dropped_jobs_tell(struct daemon *d)
{
    static const char msg[] = "dropped: the daemon stopped before it ran";
    pthread_mutex_lock(&d->mu);
    for (const struct job *j = d->queue; j; j = j->next) {
        json_t *q = queued_json(j);
        if (q)
            dropped_tell(d, q, msg);
        else /* (no memory) */
            dlog(d, LOG_WARN, "job", "job %s: %s; ask for it again", j->id, msg);
        json_decref(q);
    }
    pthread_mutex_unlock(&d->mu);
}

/* The jobs a daemon killed outright (kill -9, a crash, power loss) had queued and never ran:
 * scheduler.json's "queued" at start (consumed). They vanished without a word before. */
static void lost_jobs_tell(struct daemon *d, json_t *queued)
{
    static const char msg[] = "dropped: the daemon that queued it stopped (killed, crashed or "
                              "the machine went down) before it ran";
    size_t i;
    json_t *q;
    json_array_foreach(queued, i, q) dropped_tell(d, q, msg);
    json_decref(queued);
}

static void *interrupted_tell_main(void *arg)
{
    struct daemon *d = arg;
    interrupted_run_tell(d, d->tell_rj);
    return NULL;
}

/* The audit line of a job that ended (the worker's: j->result and j->error are its own). */
static void audit_job(struct daemon *d, const struct job *j)
{
    const struct djob_spec *sp = &j->spec;
    json_t *args = json_pack("{s:s, s:s}", "job", j->id, "schedule", j->source);
    json_t *ids = json_array();
    char op[40];
    if (sp->kind == DJOB_BACKUP) {
        snprintf(op, sizeof(op), "backup run");
        json_object_set_new(args, "type", json_string(caris_job_type_name(sp->type)));
        json_object_set_new(args, "includeFiles", json_boolean(!sp->skip_files));
        json_array_extend(ids, json_object_get(j->result, "backupIds"));
    } else {
        snprintf(op, sizeof(op), "%s", djob_kind_name(sp->kind));
        json_object_set_new(args, "type", json_string(sp->what));
        if (sp->kind == DJOB_RESTORE)
            json_object_set_new(args, "dryRun", json_boolean(sp->dry_run));
        json_array_append_new(ids, json_string(sp->backup_id));
    }
    bool ok = sp->kind == DJOB_BACKUP ? json_is_true(json_object_get(j->result, "ok")) : !j->error;
    struct caris_audit_entry en = {.actor = sp->actor,
                                   .source = *sp->addr ? sp->addr : NULL,
                                   .operation = op,
                                   .args = args,
                                   .result = ok ? "ok" : "failed",
                                   .error = json_string_value(json_object_get(j->error, "message")),
                                   .backup_ids = ids,
                                   .duration_ms = (time_mono_ns() - j->started_mono_ns) / 1000000};
    struct err e = ERR_INIT;
    if (caris_audit_append(d->backup_dir, &en, &e) != 0)
        dlog(d, LOG_ERROR, "audit", "%s", e.msg);
    json_decref(args);
    json_decref(ids);
    /* with each backup run (whatever its result, as the daemon always did; the CLI records
     * it after a backup that completed), and each restore (data taken out) but one refused
     * before it took anything (caris_audit_head_due), the log's head goes into the
     * repository */
    struct err je = ERR_INIT; /* a failure without a code's name: ERR_FAILURE, exit 1 */
    je.code =
        ok ? ERR_NONE : err_code_from_name(json_string_value(json_object_get(j->error, "code")));
    int code = err_exit_code(&je);
    if ((sp->kind == DJOB_BACKUP ||
         caris_audit_head_due(false, sp->kind == DJOB_RESTORE && !sp->dry_run, code)) &&
        !err_is_set(&e) &&
        ((!d->r && reopen_repo(d, &e) != 0) ||
         caris_audit_head_record(d->r, d->backup_dir, &e) != 0))
        dlog(d, LOG_WARN, "audit", "the audit log's head is not in the repository: %s", e.msg);
}

static void *worker_main(void *arg)
{
    struct daemon *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while ((!d->queue || d->reload_pending) && !d->worker_stop && !d->stale_refresh)
            pthread_cond_wait(&d->cv, &d->mu);
        if (d->worker_stop)
            break;
        if (d->stale_refresh) {
            int64_t now = d->stale_at ? d->stale_at : now_s_locked(d);
            d->stale_at = 0;
            pthread_mutex_unlock(&d->mu);
            stale_refresh(d, now);
            stale_eval(d, now);
            pthread_mutex_lock(&d->mu);
            d->stale_refresh = false;
            pthread_cond_broadcast(&d->cv);
            continue;
        }
        struct job *j = d->queue;
        d->queue = j->next;
        if (!d->queue)
            d->queue_tail = NULL;
        d->running = j;
        j->state = JOB_RUNNING;
        j->started_ns = time_now_ns();
        j->started_mono_ns = time_mono_ns();
        d->current_step[0] = '\0';
        json_t *st =
            json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", j->id, "kind",
                      djob_kind_name(j->spec.kind), "schedule", j->source, "type",
                      caris_job_type_name(j->type), "startedAt", json_iso_s(now_s_locked(d)));
        if (j->spec.kind != DJOB_BACKUP)
            json_object_set_new(st, "backupId", json_string(j->spec.backup_id));
        json_object_set_new(d->state, "job", st);
        state_queue_locked(d);
        state_save_locked(d);
        pthread_mutex_unlock(&d->mu);
        if (j->spec.kind == DJOB_BACKUP)
            run_job(d, j);
        else
            run_other(d, j);
        audit_job(d, j);
        pthread_mutex_lock(&d->mu);
        j->state = JOB_DONE;
        /* on the monotonic clock: a clock set back or forward meanwhile is no part of it */
        j->ended_ns = j->started_ns + (time_mono_ns() - j->started_mono_ns);
        d->running = NULL;
        if ((j->timed_out || j->cancel_asked) && !d->worker_stop) /* for this job only */
            __atomic_store_n(&d->cancel, 0, __ATOMIC_RELAXED);
        j->next = d->finished;
        d->finished = j;
        pthread_mutex_unlock(&d->mu);
        char c = 'j';
        while (write(d->done_pipe[1], &c, 1) < 0 && errno == EINTR)
            ;
        pthread_mutex_lock(&d->mu);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* ---- the control socket -------------------------------------------------------------------- */

static void send_line(int fd, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    if (!text)
        return;
    size_t len = strlen(text), off = 0;
    text[len] = '\0';
    while (off < len) {
        ssize_t w = send(fd, text + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    (void)!send(fd, "\n", 1, MSG_NOSIGNAL);
    free(text);
}

static void client_close(struct daemon *d, size_t i)
{
    if (d->clients[i].passed_fd >= 0)
        close(d->clients[i].passed_fd);
    if (!d->clients[i].detached)
        close(d->clients[i].fd);
    d->clients[i] = d->clients[--d->nclients];
}

/* The live status. Under d->mu. */
static json_t *status_locked(struct daemon *d)
{
    state_schedules_locked(d);
    json_t *s = json_deep_copy(d->state);
    json_object_del(s, "queued"); /* the queue's own record (state_queue_locked): "queue" counts */
    json_object_set_new(s, "running", json_true());
    json_object_set_new(s, "pid", json_integer(getpid()));
    char t[40];
    time_format_iso(d->started_ns, t, sizeof(t));
    json_object_set_new(s, "startedAt", json_string(t));
    json_object_set_new(s, "now", json_iso_s(now_s_locked(d)));
    json_object_set_new(s, "queue", json_integer((json_int_t)queue_len_locked(d)));
    if (d->ncr) /* BACKUP_ALERT_AFTER, for the dashboard's stale banner */
        json_object_set_new(s, "alertAfterSeconds", json_integer(d->ncr->nc.alert_after_ms / 1000));
    /* the kinds the stale alert watches: the dashboard's banner for a kind with no backup in
     * the list at all (database backups that never once succeeded showed no banner) */
    json_t *kinds = json_array();
    for (size_t k = 0; k < 2; k++)
        if (stale_watched_locked(d, k))
            json_array_append_new(kinds, json_string(STALE_KINDS[k]));
    json_object_set_new(s, "alertKinds", kinds);
    json_object_set_new(s, "walArchiver", walq_status(d->walq));
    json_object_set_new(s, "walStreaming", walstream_status(d->walstream));
    json_object_set_new(s, "walArchiving", walmon_status(d->walmon));
    json_t *job = json_object_get(s, "job");
    if (job && *d->current_step)
        json_object_set_new(job, "progress", json_string(d->current_step));
    if (!job)
        json_object_set_new(s, "job", json_null());
    return s;
}

/* Sends {"error": {"code", "message"}} (each refusal leaked its JSON: a refused `wal push`, a
 * full queue, a request the daemon did not understand, for as long as the daemon ran). */
static void send_error(int fd, const char *code, const char *msg)
{
    json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
    if (j)
        send_line(fd, j);
    json_decref(j);
}

/* `wal push` hands over a WAL file: {"cmd": "wal-push", "name", "repo"} with the file's open
 * descriptor attached. Answers "busy", "stopping" or "other-repository" tell the client to
 * push alone; anything else is the push's own result, sent by the WAL queue once the file is
 * durably archived (or failed). `wal get` the same: {"cmd": "wal-get", "name", "repo"} with
 * the descriptor of the client's temporary file, answered once the file is written into it and
 * checked. "wal-get-timeline" (what `wal get` sends): the same, serving a streamed partial only
 * up to where its timeline ends in the history followed, "timeline" (optional): the timeline
 * the recovery follows (`wal get --timeline`); a daemon that does not know it answers "usage"
 * and the client gets alone. "wal-get" (a client from before it): the same, timeline latest. */
static void wal_push_request(struct daemon *d, size_t i, json_t *req, bool get)
{
    struct client *c = &d->clients[i];
    const char *name = json_string_value(json_object_get(req, "name"));
    const char *repo = json_string_value(json_object_get(req, "repo"));
    json_t *tl = json_object_get(req, "timeline");
    json_int_t follow = tl ? json_integer_value(tl) : 0;
    char *mine = realpath(d->repo_path, NULL), *theirs = repo ? realpath(repo, NULL) : NULL;
    /* the same local repository (both resolved), or the same URL (s3://...) */
    bool same = mine && theirs ? strcmp(mine, theirs) == 0
                               : !mine && !theirs && repo && strcmp(repo, d->repo_path) == 0 &&
                                     strstr(repo, "://") != NULL;
    free(mine);
    free(theirs);
    if (!name || strlen(name) >= WALQ_NAME_MAX || c->passed_fd < 0 ||
        (tl && (!json_is_integer(tl) || follow < 1 || follow > UINT32_MAX))) {
        send_error(c->fd, "usage",
                   "wal-push and wal-get need a name and a descriptor (and a timeline is a "
                   "number from 1)");
    } else if (!same) {
        send_error(c->fd, "other-repository", "this daemon archives into another repository");
    } else if (!d->walq ||
               walq_submit(d->walq, c->fd, c->passed_fd, name, get, (uint32_t)follow) != 0) {
        send_error(c->fd, "busy", "the WAL queue is full");
    } else {
        c->passed_fd = -1; /* the queue's now, and the connection with it */
        c->detached = true;
    }
}

/* One request line from client i. Returns true when the client is to be closed. */
static bool handle_request(struct daemon *d, size_t i, const char *line)
{
    json_error_t je;
    json_t *req = json_loads(line, 0, &je);
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    bool close_it = true;
    if (!cmd) {
        send_error(d->clients[i].fd, "usage", "a request is {\"cmd\": ...}");
    } else if (strcmp(cmd, "status") == 0) {
        pthread_mutex_lock(&d->mu);
        json_t *s = status_locked(d);
        pthread_mutex_unlock(&d->mu);
        send_line(d->clients[i].fd, s);
        json_decref(s);
    } else if (strcmp(cmd, "run-now") == 0) {
        enum caris_job_type type;
        struct err e = ERR_INIT;
        if (caris_job_type_parse(json_string_value(json_object_get(req, "type")), &type, &e) != 0) {
            send_error(d->clients[i].fd, "usage", e.msg);
        } else {
            struct job *j = job_new(type, "manual", 0);
            bool wait = json_is_true(json_object_get(req, "wait"));
            pthread_mutex_lock(&d->mu);
            size_t pos = queue_len_locked(d) + (d->running ? 1 : 0);
            if (wait) {
                j->waiters[j->nwaiters++] = d->clients[i].fd;
                d->clients[i].waiting = true;
                close_it = false;
            }
            enqueue_locked(d, j);
            pthread_mutex_unlock(&d->mu);
            dlog(d, LOG_INFO, "run-now", "%s run queued (position %zu)", caris_job_type_name(type),
                 pos);
            if (!wait) {
                json_t *ok = json_pack("{s:b, s:I}", "queued", 1, "position", (json_int_t)pos);
                send_line(d->clients[i].fd, ok);
                json_decref(ok);
            }
        }
    } else if (strcmp(cmd, "cancel") == 0) {
        /* the running job stops at its next safe point, fails "cancelled" and is notified so;
         * the queue goes on */
        pthread_mutex_lock(&d->mu);
        struct job *j = d->running;
        json_t *ans = json_pack("{s:b, s:o}", "cancelled", j != NULL, "job",
                                j ? json_string(j->id) : json_null());
        if (j) {
            j->cancel_asked = true;
            __atomic_store_n(&d->cancel, 1, __ATOMIC_RELAXED);
        }
        pthread_mutex_unlock(&d->mu);
        if (j)
            dlog(d, LOG_WARN, "cancel", "job %s: cancel asked for through the control socket",
                 json_string_value(json_object_get(ans, "job")));
        send_line(d->clients[i].fd, ans);
        json_decref(ans);
    } else if (strcmp(cmd, "wal-push") == 0) {
        wal_push_request(d, i, req, false);
    } else if (strcmp(cmd, "wal-get") == 0 || strcmp(cmd, "wal-get-timeline") == 0) {
        wal_push_request(d, i, req, true);
    } else {
        send_error(d->clients[i].fd, "usage", "unknown request");
    }
    json_decref(req);
    return close_it;
}

static void client_read(struct daemon *d, size_t i)
{
    struct client *c = &d->clients[i];
    /* a request may carry one descriptor (`wal push`); any other is closed at once */
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 4)];
    } cm;
    struct iovec iov = {.iov_base = c->buf + c->len, .iov_len = sizeof(c->buf) - 1 - c->len};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
    ssize_t n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
    for (struct cmsghdr *h = n >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; h; h = CMSG_NXTHDR(&mh, h)) {
        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfd = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t k = 0; k < nfd; k++) {
            int fd;
            memcpy(&fd, CMSG_DATA(h) + k * sizeof(int), sizeof(int));
            if (c->passed_fd < 0 && !c->waiting)
                c->passed_fd = fd;
            else
                close(fd);
        }
    }
    if (n <= 0) {
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            return;
        if (c->waiting) { /* a waiting client hung up: its job runs on; forget the fd */
            pthread_mutex_lock(&d->mu);
            for (struct job *j = d->queue; j; j = j->next)
                for (size_t k = 0; k < j->nwaiters; k++)
                    if (j->waiters[k] == c->fd)
                        j->waiters[k] = -1;
            if (d->running)
                for (size_t k = 0; k < d->running->nwaiters; k++)
                    if (d->running->waiters[k] == c->fd)
                        d->running->waiters[k] = -1;
            /* and a job that has just ended, not yet answered (jobs_finished): once closed,
             * the fd number may be another thread's file by then */
            for (struct job *j = d->finished; j; j = j->next)
                for (size_t k = 0; k < j->nwaiters; k++)
                    if (j->waiters[k] == c->fd)
                        j->waiters[k] = -1;
            pthread_mutex_unlock(&d->mu);
        }
        client_close(d, i);
        return;
    }
    if (c->waiting)
        return; /* nothing more is expected from it */
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    /* memchr, not strchr: a NUL byte before the line's end hid it, and the client waited for
     * an answer that came only once it had sent 4 KiB more */
    char *nl = memchr(c->buf, '\n', c->len);
    if (nl && memchr(c->buf, '\0', (size_t)(nl - c->buf))) {
        send_error(c->fd, "usage", "a request is one line of JSON, without a NUL byte");
        client_close(d, i);
        return;
    }
    if (!nl) {
        if (c->len >= sizeof(c->buf) - 1) {
            send_error(c->fd, "usage", "request too long");
            client_close(d, i);
        }
        return;
    }
    *nl = '\0';
    if (handle_request(d, i, c->buf) || d->clients[i].detached)
        client_close(d, i);
}

static void client_accept(struct daemon *d)
{
    int fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    struct ucred cr;
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 ||
        (cr.uid != geteuid() && cr.uid != 0)) {
        dlog(d, LOG_WARN, "control", "refused a connection from uid %d", (int)cr.uid);
        close(fd);
        return;
    }
    if (d->nclients == MAX_CLIENTS) {
        send_error(fd, "busy", "too many connections");
        close(fd);
        return;
    }
    d->clients[d->nclients++] = (struct client){.fd = fd, .passed_fd = -1};
}

static void job_free(struct job *j)
{
    json_decref(j->result);
    json_decref(j->error);
    cx_wipe(j->spec.target, sizeof(j->spec.target));
    free(j);
}

/* Keeps a finished job for the API, forgetting the oldest beyond JOBS_KEPT. */
static void keep_job_locked(struct daemon *d, struct job *j)
{
    j->next = d->kept;
    d->kept = j;
    size_t n = 0;
    for (struct job *k = d->kept; k; k = k->next)
        if (++n == JOBS_KEPT) {
            while (k->next) {
                struct job *old = k->next;
                k->next = old->next;
                job_free(old);
            }
            break;
        }
}

/* Answers the clients waiting for finished jobs and keeps those jobs for the API. A job goes
 * from the finished list to the kept ones in one hold of d->mu: in between, on neither, the
 * API answered 404 for a job that had just ended. */
static void jobs_finished(struct daemon *d)
{
    char buf[64];
    while (read(d->done_pipe[0], buf, sizeof(buf)) > 0)
        ;
    struct answer {
        int fd;
        json_t *result;
    } *ans = NULL;
    size_t nans = 0;
    pthread_mutex_lock(&d->mu);
    struct job *list = d->finished;
    d->finished = NULL;
    while (list) {
        struct job *j = list;
        list = j->next;
        for (size_t k = 0; k < j->nwaiters; k++) {
            if (j->waiters[k] < 0)
                continue;
            ans = xrealloc(ans, xsize(nans + 1, sizeof(*ans), 0));
            ans[nans++] = (struct answer){j->waiters[k], json_incref(j->result)};
        }
        keep_job_locked(d, j); /* may free an older kept job: the results are held */
    }
    pthread_mutex_unlock(&d->mu);
    for (size_t a = 0; a < nans; a++) {
        send_line(ans[a].fd, ans[a].result);
        json_decref(ans[a].result);
        for (size_t i = 0; i < d->nclients; i++)
            if (d->clients[i].fd == ans[a].fd) {
                client_close(d, i);
                break;
            }
    }
    free(ans);
}

static int listen_socket(struct daemon *d, struct err *e)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(d->sock_path) >= sizeof(a.sun_path))
        return err_set(e, ERR_CONFIG, "use a shorter BACKUP_DIR",
                       "the control socket path %s is too long for a Unix socket", d->sock_path);
    strcpy(a.sun_path, d->sock_path);
    unlink(d->sock_path); /* a previous daemon's (we hold the daemon lock) */
    d->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (d->listen_fd < 0)
        return err_sys(e, errno, NULL, "socket");
    mode_t old = umask(0177);
    int rc = bind(d->listen_fd, (struct sockaddr *)&a, sizeof(a));
    umask(old);
    if (rc != 0 || listen(d->listen_fd, 16) != 0)
        return err_sys(e, errno, NULL, "cannot listen on %s", d->sock_path);
    chmod(d->sock_path, 0600);
    return 0;
}

/* ---- the API's view of the jobs ------------------------------------------------------------ */

const char *djob_kind_name(enum djob_kind k)
{
    return k == DJOB_VERIFY ? "verify" : k == DJOB_RESTORE ? "restore" : "backup";
}

int daemon_job_submit(struct daemon *d, const struct djob_spec *s, char id[DJOB_ID_MAX],
                      struct err *e)
{
    struct job *j = job_new(s->type, "api", 0);
    j->spec = *s;
    int rc = 0;
    pthread_mutex_lock(&d->mu);
    const struct job *same = d->running && d->running->spec.kind == s->kind ? d->running : NULL;
    for (const struct job *q = d->queue; q && !same; q = q->next)
        if (q->spec.kind == s->kind)
            same = q;
    if (same) {
        rc = err_set(e, ERR_LOCKED, "wait for it to end (GET /api/admin/backup/jobs/<id>)",
                     "a %s job is already %s: %s", djob_kind_name(s->kind),
                     same->state == JOB_RUNNING ? "running" : "queued", same->id);
    } else {
        enqueue_locked(d, j);
        snprintf(id, DJOB_ID_MAX, "%s", j->id);
    }
    pthread_mutex_unlock(&d->mu);
    if (rc != 0) {
        job_free(j);
        return -1;
    }
    dlog(d, LOG_INFO, "api", "%s job %s queued for %s", djob_kind_name(s->kind), id, s->actor);
    return 0;
}

static json_t *job_json_locked(const struct job *j)
{
    static const char *const states[] = {"queued", "running", "done"};
    char t[40];
    time_format_iso(j->queued_ns, t, sizeof(t));
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", j->id, "kind", djob_kind_name(j->spec.kind),
                  "state", states[j->state], "actor", j->spec.actor, "queuedAt", t);
    if (j->spec.kind == DJOB_BACKUP) {
        json_object_set_new(o, "type", json_string(caris_job_type_name(j->spec.type)));
        json_object_set_new(o, "includeFiles", json_boolean(!j->spec.skip_files));
    } else {
        json_object_set_new(o, "backupId", json_string(j->spec.backup_id));
        json_object_set_new(o, "type", json_string(j->spec.what));
    }
    if (j->spec.kind == DJOB_RESTORE)
        json_object_set_new(o, "dryRun", json_boolean(j->spec.dry_run));
    if (j->started_ns) {
        time_format_iso(j->started_ns, t, sizeof(t));
        json_object_set_new(o, "startedAt", json_string(t));
    }
    if (j->state == JOB_RUNNING && *j->phase)
        json_object_set_new(o, "progress",
                            json_pack("{s:s, s:I, s:I}", "phase", j->phase, "done",
                                      (json_int_t)j->done, "total", (json_int_t)j->total));
    if (j->state == JOB_DONE) {
        time_format_iso(j->ended_ns, t, sizeof(t));
        json_object_set_new(o, "endedAt", json_string(t));
        json_object_set_new(o, "durationMs", json_integer((j->ended_ns - j->started_ns) / 1000000));
        json_object_set_new(o, "ok", json_boolean(j->ok));
        json_object_set(o, "result", j->result ? j->result : json_null());
        if (j->error)
            json_object_set(o, "error", j->error);
    }
    return o;
}

json_t *daemon_job_json(struct daemon *d, const char *id)
{
    json_t *out = NULL;
    pthread_mutex_lock(&d->mu);
    const struct job *lists[] = {d->running, d->queue, d->finished, d->kept};
    for (size_t i = 0; i < 4 && !out; i++)
        for (const struct job *j = lists[i]; j && !out; j = i == 0 ? NULL : j->next)
            if (strcmp(j->id, id) == 0)
                out = job_json_locked(j);
    pthread_mutex_unlock(&d->mu);
    return out;
}

json_t *daemon_status_json(struct daemon *d)
{
    pthread_mutex_lock(&d->mu);
    json_t *s = status_locked(d);
    if (!json_is_array(json_object_get(s, "notifications"))) /* none sent yet: an empty list */
        json_object_set_new(s, "notifications", json_array());
    json_t *jobs = json_array();
    for (const struct job *j = d->queue; j; j = j->next)
        json_array_append_new(jobs, job_json_locked(j));
    json_object_set_new(s, "queuedJobs", jobs);
    if (d->running)
        json_object_set_new(s, "runningJob", job_json_locked(d->running));
    else
        json_object_set_new(s, "runningJob", json_null());
    pthread_mutex_unlock(&d->mu);
    return s;
}

/* ---- start and stop ----------------------------------------------------------------------- */

static int take_daemon_lock(struct daemon *d, struct err *e)
{
    d->lock_fd = open(d->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->lock_fd < 0)
        return err_sys(e, errno, NULL, "cannot open %s", d->lock_path);
    if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(d->lock_fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        return err_set(e, ERR_LOCKED,
                       "stop it first (systemctl stop caris-backup, or kill -TERM its pid); "
                       "`caris-backup schedule status` talks to it",
                       "a daemon already runs for %s (pid %s)", d->backup_dir, *pid ? pid : "?");
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(d->lock_fd, 0) != 0 || pwrite(d->lock_fd, pid, (size_t)n, 0) != n)
        return err_sys(e, errno, NULL, "cannot write %s", d->lock_path);
    return 0;
}

/* The schedules and notification settings of cfg. */
int64_t daemon_test_knob_ns(const struct config *cfg, const char *name, int64_t dflt_ns)
{
    const char *t = config_get(cfg, name);
    long ms = t ? atol(t) : 0;
    return ms > 0 && ms <= 86400000 ? (int64_t)ms * 1000000 : dflt_ns;
}

/* BACKUP_RUN_TIMEOUT: a duration in weeks, days and hours (6h, 1d12h), or off (the default);
 * the test knob CARIS_TEST_RUN_TIMEOUT_MS overrides it. */
static int run_timeout_load(const struct config *cfg, int64_t *ns, struct err *e)
{
    *ns = 0;
    const char *v = config_get(cfg, "BACKUP_RUN_TIMEOUT");
    int64_t hours;
    if (v && strcmp(v, "off") != 0 && strcmp(v, "0") != 0) {
        if (caris_duration_hours(v, &hours, e) != 0 || hours > 366 * 24) {
            char esc[64];
            str_escape(v, strlen(v), esc, sizeof(esc));
            return err_set(e, ERR_CONFIG,
                           "a duration in weeks, days and hours up to a year, e.g. 6h, 1d12h, "
                           "or off (the default)",
                           "invalid BACKUP_RUN_TIMEOUT '%s'", esc);
        }
        *ns = hours * 3600 * 1000000000;
    }
    *ns = daemon_test_knob_ns(cfg, "CARIS_TEST_RUN_TIMEOUT_MS", *ns);
    return 0;
}

/* The settings of the periodic extras, checked when the configuration is loaded (a bad value
 * was found only when a run came to use it, and replaced by the default then). */
static int extras_check(const struct config *cfg, struct err *e)
{
    static const char *const days[] = {"BACKUP_PRUNE_INTERVAL_DAYS", "BACKUP_DRILL_INTERVAL_DAYS"};
    for (size_t i = 0; i < 2; i++) {
        const char *v = config_get(cfg, days[i]);
        char *end;
        long n = v ? strtol(v, &end, 10) : 0;
        if (v && (end == v || *end || n < 0 || n > 3660))
            return err_set(e, ERR_CONFIG, "a whole number of days, 0 for never (default 7)",
                           "%s must be a number of days from 0 to 3660, not '%s'", days[i], v);
    }
    const char *v = config_get(cfg, "BACKUP_DRILL_SCRATCH");
    if (v && strcmp(v, "local") != 0 && strcmp(v, "database") != 0)
        return err_set(e, ERR_CONFIG, "database (the default) or local",
                       "BACKUP_DRILL_SCRATCH must be database or local, not '%s'", v);
    /* every run ends with retention: its policy and zone, now rather than at night; and what
     * the backups themselves read */
    if (caris_job_config_check(cfg, e) != 0)
        return -1;
    return caris_retention_config_check(cfg, e);
}

static int load_settings(const struct config *cfg, struct schedule_config *sch,
                         struct notify_config *nc, int64_t *run_timeout_ns, struct err *e)
{
    if (extras_check(cfg, e) != 0 || run_timeout_load(cfg, run_timeout_ns, e) != 0)
        return -1;
    if (schedule_config_load(cfg, NULL, sch, e) != 0)
        return -1;
    if (notify_config_load(cfg, nc, e) != 0) {
        schedule_config_free(sch);
        return -1;
    }
    return 0;
}

/* The WAL threads (the archiver watch, WAL streaming and the WAL queue) run on the
 * configuration the daemon started with, for as long as it runs: a reload does not reach them.
 * Nor does it reach the HTTP API's address and TLS files (its CRON_SECRET it does:
 * api_reload). The names of those settings that differ in cfg (comma-separated into out, ""
 * when none; names only: some are secrets). */
static const char *const WAL_SETTINGS[] = {"POSTGRES_URL",
                                           "PGPASSWORD",
                                           "BACKUP_PG_REPLICATION_URL",
                                           "BACKUP_WAL_STREAMING",
                                           "BACKUP_WAL_SLOT",
                                           "BACKUP_WAL_FLUSH_SECONDS",
                                           "BACKUP_WAL_ALERT_MINUTES",
                                           NULL};
static const char *const API_SETTINGS[] = {"BACKUP_API_LISTEN", "BACKUP_API_TLS_CERT",
                                           "BACKUP_API_TLS_KEY", NULL};
static void settings_changed(const char *const *names, const struct config *cfg,
                             const struct config *started, char *out, size_t n)
{
    out[0] = '\0';
    for (size_t i = 0; names[i]; i++) {
        const char *a = config_get(cfg, names[i]), *b = config_get(started, names[i]);
        if (strcmp(a ? a : "", b ? b : "") != 0) {
            size_t k = strlen(out);
            snprintf(out + k, n - k, "%s%s", k ? ", " : "", names[i]);
        }
    }
}

/* SIGHUP: the new configuration replaces the old one only when it is valid; schedules are
 * recomputed from now. The repository stays open (BACKUP_DIR and the key are not reloaded:
 * those need a restart, which the log says when they changed). */
/* The env file read again and checked into cfg: 0, or -1 (logged, cfg freed). */
static int reload_load(struct daemon *d, struct config *cfg)
{
    struct err e = ERR_INIT;
    if (config_load(cfg, d->o->env_file, &e) != 0) {
        dlog(d, LOG_ERROR, "reload", "configuration not reloaded: %s", e.msg);
        return -1;
    }
    /* the secrets the daemon was started with in its environment (the first load took them
     * out of it): a reload re-reads the env file, it does not lose them */
    config_keep_env_secrets(cfg, d->o->cfg);
    if (config_check(cfg, &e) != 0) {
        config_free(cfg);
        dlog(d, LOG_ERROR, "reload", "configuration not reloaded: %s", e.msg);
        return -1;
    }
    return 0;
}

/* Whether a reloaded cfg is one the daemon takes, into sch, nc and *run_timeout_ns: 0, or -1
 * (logged, cfg freed). The WAL threads' and the API's settings apply at the next start, which
 * refuses a bad one (exit 6): a reload that took it said "configuration reloaded", and the
 * daemon then did not start again after a reboot. */
static int reload_check(struct daemon *d, struct config *cfg, struct schedule_config *sch,
                        struct notify_config *nc, int64_t *run_timeout_ns)
{
    struct err e = ERR_INIT;
    int64_t wal_alert_ns;
    if (walstream_config_check(cfg, &e) != 0 || wal_alert_after(cfg, &wal_alert_ns, &e) != 0 ||
        api_config_check(cfg, &e) != 0 || load_settings(cfg, sch, nc, run_timeout_ns, &e) != 0) {
        config_free(cfg);
        dlog(d, LOG_ERROR, "reload", "configuration not reloaded: %s", e.msg);
        return -1;
    }
    return 0;
}

static void reload_apply(struct daemon *d)
{
    struct config cfg = {0};
    struct schedule_config sch = {0};
    struct notify_config nc = {0};
    if (reload_load(d, &cfg) != 0)
        return;
    char unknown[600];
    if (config_unknown_names(&cfg, unknown, sizeof(unknown)))
        dlog(d, LOG_WARN, "reload", "unknown variables (misspelt?), ignored: %s", unknown);
    int64_t run_timeout_ns;
    if (reload_check(d, &cfg, &sch, &nc, &run_timeout_ns) != 0)
        return;
    if (strcmp(config_backup_dir(&cfg), d->backup_dir) != 0)
        dlog(d, LOG_WARN, "reload", "BACKUP_DIR changed: restart the daemon for it to apply");
    /* A key rotation (key add, the new key into the env file, SIGHUP, key remove of the old
     * one) said "configuration reloaded" while the daemon went on with the old key: the next
     * opening of the repository (after a prune) then failed "wrong encryption key" with the
     * right key in the env file. Said as for BACKUP_DIR (never the key itself). */
    const char *key_now = config_get(&cfg, "BACKUP_ENCRYPTION_KEY"),
               *key_started = config_get(d->o->cfg, "BACKUP_ENCRYPTION_KEY");
    if (strcmp(key_now ? key_now : "", key_started ? key_started : "") != 0)
        dlog(d, LOG_WARN, "reload",
             "BACKUP_ENCRYPTION_KEY changed: the daemon goes on with the key it started with; "
             "restart it for the new key to apply (before `key remove` of the old key's slot, "
             "or the daemon's next opening of the repository fails with a wrong key)");
    /* backups take a new POSTGRES_URL or PGPASSWORD at once; WAL streaming and the archiver
     * watch would go on with the old ones (a rotated password: streaming fails from then on)
     * without a word, after a log line saying "configuration reloaded" */
    char walvars[300];
    settings_changed(WAL_SETTINGS, &cfg, d->o->cfg, walvars, sizeof(walvars));
    if (*walvars)
        dlog(d, LOG_WARN, "reload",
             "%s changed: WAL streaming and the WAL archiver watch go on with the values the "
             "daemon started with; restart the daemon for them to apply",
             walvars);
    /* the API went on at its old address with its old certificate, after "configuration
     * reloaded" and nothing else */
    char apivars[200];
    settings_changed(API_SETTINGS, &cfg, d->o->cfg, apivars, sizeof(apivars));
    if (*apivars)
        dlog(d, LOG_WARN, "reload",
             "%s changed: the HTTP API goes on with the values the daemon started with; restart "
             "the daemon for them to apply",
             apivars);
    pthread_mutex_lock(&d->mu);
    /* the worker reads d->cfg while a job runs: swap only between jobs */
    bool busy = d->running != NULL;
    if (!busy) {
        if (d->cfg_owned)
            config_free(&d->cfg_own);
        d->cfg_own = cfg;
        d->cfg_owned = true;
        d->cfg = &d->cfg_own;
        schedule_config_free(&d->sch);
        d->sch = sch;
        /* at once: a notification in flight keeps the settings it began with */
        struct nc_ref *r = xcalloc(1, sizeof(*r));
        r->nc = nc;
        r->refs = 1;
        nc_put_locked(d->ncr);
        d->ncr = r;
        d->run_timeout_ns = run_timeout_ns;
        /* from the time the loop last queued what was due, not from now: a slot that came
         * due since (a SIGHUP at 03:00:00.02, or a reload held up by a notification in
         * flight) still runs at the loop's next pass */
        int64_t now = now_s_locked(d);
        int64_t after = d->last_now && d->last_now < now ? d->last_now : now;
        for (size_t i = 0; i < SCHEDULE_COUNT; i++)
            compute_next_locked(d, i, after);
        state_schedules_locked(d);
        state_save_locked(d);
    }
    pthread_mutex_unlock(&d->mu);
    if (busy) {
        schedule_config_free(&sch);
        notify_config_free(&nc);
        config_free(&cfg);
        dlog(d, LOG_WARN, "reload", "a job is running: send SIGHUP again once it ended");
    } else {
        /* a rotated CRON_SECRET: the old one was still let in until a restart */
        api_reload(d->api, d->cfg);
        dlog(d, LOG_INFO, "reload", "configuration reloaded");
    }
}

/* The API's CRON_SECRET from the env file, at once, while a job runs (the rest of a reload waits
 * for its end): a secret rotated because it leaked stayed good, and the new one was refused
 * (and counted as failed logins), for as long as a backup of hours ran (audit K3). Only from a
 * configuration the reload itself would take (it checks the rest again at the job's end). */
static void reload_secret_now(struct daemon *d)
{
    struct config cfg = {0};
    struct schedule_config sch = {0};
    struct notify_config nc = {0};
    int64_t run_timeout_ns;
    /* checked whole, as the reload at the job's end checks it: a file it refuses then (a bad
     * schedule) put its CRON_SECRET in force now, and for good */
    if (reload_load(d, &cfg) != 0 || reload_check(d, &cfg, &sch, &nc, &run_timeout_ns) != 0)
        return;
    schedule_config_free(&sch);
    notify_config_free(&nc);
    api_reload(d->api, &cfg);
    config_free(&cfg);
    dlog(d, LOG_INFO, "reload", "the API's CRON_SECRET is reloaded (the rest once the job ends)");
}

/* A reload asked for (SIGHUP): now when no job runs, else once the running one ended (the
 * worker starts no other job meanwhile), but for the API's CRON_SECRET, which applies at once.
 * It was refused while a job ran, and a reload during a backup of hours went unapplied unless
 * the operator read the log and asked again. */
static void reload(struct daemon *d, bool asked)
{
    pthread_mutex_lock(&d->mu);
    bool was_pending = d->reload_pending;
    d->reload_pending = d->reload_pending || asked;
    bool now = d->reload_pending && !d->running, busy = asked && d->running;
    pthread_mutex_unlock(&d->mu);
    if (busy) {
        /* at every SIGHUP of the job (a secret rotated twice), and before the line that says
         * so */
        reload_secret_now(d);
        if (!was_pending)
            dlog(d, LOG_INFO, "reload",
                 "a job is running: the configuration is reloaded once it ends, before the next "
                 "job (the API's CRON_SECRET now)");
    }
    if (!now)
        return;
    reload_apply(d);
    pthread_mutex_lock(&d->mu);
    d->reload_pending = false;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void daemon_free(struct daemon *d)
{
    /* the threads that may be delivering a notification: they give up at d->stopping */
    __atomic_store_n(&d->stopping, 1, __ATOMIC_RELAXED);
    /* first: a start that failed after api_start has the API's threads still queueing and
     * reading jobs (the normal stop stopped it already: NULL) */
    api_stop(d->api);
    d->api = NULL;
    if (d->tell_started)
        pthread_join(d->tell_th, NULL);
    if (d->stale_th_started)
        pthread_join(d->stale_th, NULL);
    while (d->nclients)
        client_close(d, d->nclients - 1);
    walmon_stop(d->walmon);
    walstream_stop(d->walstream);
    walq_stop(d->walq);
    while (d->queue) {
        struct job *j = d->queue;
        d->queue = j->next;
        job_free(j);
    }
    while (d->finished) {
        struct job *j = d->finished;
        d->finished = j->next;
        job_free(j);
    }
    while (d->kept) {
        struct job *j = d->kept;
        d->kept = j->next;
        job_free(j);
    }
    if (d->r)
        repo_close(d->r);
    if (d->listen_fd >= 0) {
        close(d->listen_fd);
        unlink(d->sock_path);
    }
    if (d->done_pipe[0] >= 0) {
        close(d->done_pipe[0]);
        close(d->done_pipe[1]);
    }
    if (d->lock_fd >= 0)
        close(d->lock_fd);
    json_decref(d->state);
    schedule_config_free(&d->sch);
    nc_put_locked(d->ncr); /* every thread that notifies has ended */
    d->ncr = NULL;
    if (d->cfg_owned)
        config_free(&d->cfg_own);
    free(d->backup_dir);
    free(d->metadata);
    free(d->state_path);
    free(d->sock_path);
    free(d->lock_path);
    free(d->repo_path);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
}

static bool stop_requested(const struct daemon *d)
{
    return d->o->stop && __atomic_load_n(d->o->stop, __ATOMIC_RELAXED);
}

int caris_daemon_run(const struct caris_daemon_opts *o, struct err *e)
{
    struct daemon dd = {.o = o, .lock_fd = -1, .listen_fd = -1, .done_pipe = {-1, -1}};
    struct daemon *d = &dd;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->started_ns = time_now_ns();
    int rc = -1;
    d->cfg = o->cfg;
    d->stale_run_wait_ns =
        daemon_test_knob_ns(d->cfg, "CARIS_TEST_STALE_RUN_WAIT_MS", STALE_RUN_WAIT_NS);
    struct notify_config nc0;
    if (load_settings(d->cfg, &d->sch, &nc0, &d->run_timeout_ns, e) != 0)
        goto out;
    d->ncr = xcalloc(1, sizeof(*d->ncr));
    d->ncr->nc = nc0;
    d->ncr->refs = 1;
    d->backup_dir = xstrdup(config_backup_dir(d->cfg));
    d->metadata = xasprintf("%s/metadata", d->backup_dir);
    d->state_path = xasprintf("%s/scheduler.json", d->metadata);
    d->sock_path = xasprintf("%s/daemon.sock", d->metadata);
    d->lock_path = xasprintf("%s/daemon.lock", d->metadata);
    d->repo_path = o->repo ? xstrdup(o->repo) : xasprintf("%s/repository", d->backup_dir);
    if (caris_backup_dir_prepare(d->backup_dir, e) != 0 || clock_setup(d, e) != 0 ||
        take_daemon_lock(d, e) != 0)
        goto out;
    if (reopen_repo(d, e) != 0)
        goto out;
    /* before the API, whose jobs go into it as they are queued; the last daemon's queue is
     * told before anything is queued, then saved without it (told twice if this daemon is
     * killed in between, never not at all) */
    state_load(d);
    lost_jobs_tell(d, json_incref(json_object_get(d->state, "queued")));
    pthread_mutex_lock(&d->mu);
    if (json_object_del(d->state, "queued") == 0)
        state_save_locked(d);
    pthread_mutex_unlock(&d->mu);
    if (pipe2(d->done_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        err_sys(e, errno, NULL, "pipe");
        goto out;
    }
    if (walq_start(d, o->cfg, d->repo_path, d->backup_dir, &d->walq, e) != 0 ||
        listen_socket(d, e) != 0 ||
        walstream_start(d, o->cfg, d->repo_path, d->backup_dir, &d->walstream, e) != 0)
        goto out;
    struct api_opts ao = {
        .d = d, .cfg = d->cfg, .backup_dir = d->backup_dir, .repo_path = d->repo_path};
    if (api_start(&ao, &d->api, e) != 0)
        goto out;
    pthread_mutex_lock(&d->mu);
    int64_t now = now_s_locked(d);
    for (size_t i = 0; i < SCHEDULE_COUNT; i++)
        compute_next_locked(d, i, now);
    catch_up_locked(d, now);
    json_object_set_new(d->state, "pid", json_integer(getpid()));
    char started[40];
    time_format_iso(d->started_ns, started, sizeof(started));
    json_object_set_new(d->state, "startedAt", json_string(started));
    json_t *dead = interrupted_run_locked(d);
    json_t *dead_other = json_incref(json_object_get(d->state, "job"));
    json_object_del(d->state, "job");
    state_schedules_locked(d);
    state_save_locked(d);
    pthread_mutex_unlock(&d->mu);
    interrupted_other_tell(d, dead_other);
    json_decref(dead_other);
    if (dead) {
        d->tell_rj = dead;
        d->tell_started = pthread_create(&d->tell_th, NULL, interrupted_tell_main, d) == 0;
        if (!d->tell_started)
            interrupted_run_tell(d, dead); /* no thread: here */
    }
    /* the newest backups, read before the worker may use d->r: the stale check then works
     * from the start, even when a run starts at once and hangs */
    stale_refresh(d, now);
    if (walmon_start(d, o->cfg, &d->walmon, e) != 0)
        goto out;
    if (pthread_create(&d->worker, NULL, worker_main, d) != 0) {
        err_set(e, ERR_FAILURE, NULL, "cannot start the worker thread");
        goto out;
    }
    int enabled = 0;
    for (size_t i = 0; i < SCHEDULE_COUNT; i++)
        enabled += d->sch.items[i].enabled;
    dlog(d, LOG_INFO, "started", "daemon for %s started (pid %d, %d of %d schedules on%s)",
         d->repo_path, (int)getpid(), enabled, SCHEDULE_COUNT, d->vclock ? ", test clock" : "");
    if (!enabled)
        dlog(d, LOG_WARN, "schedule",
             "every schedule is off (BACKUP_SCHEDULE_DAILY, _WEEKLY, _MONTHLY): no backup runs "
             "unless asked (run-now, the API)");
    for (size_t i = 0; i < SCHEDULE_COUNT; i++) {
        char t[40] = "";
        if (d->next_run[i])
            iso_s(d->next_run[i], t, sizeof(t));
        dlog(d, LOG_INFO, "schedule", "%s (%s, %s): %s%s", d->sch.items[i].name,
             d->sch.items[i].backup_type, d->sch.items[i].enabled ? d->sch.items[i].text : "off",
             d->next_run[i] ? "next run " : "not run", t);
    }
    if (o->ready)
        o->ready(o->ready_ctx);
    d->next_stale_check = now;

    while (!stop_requested(d)) {
        reload(d, o->reload && __atomic_exchange_n(o->reload, 0, __ATOMIC_RELAXED));
        pthread_mutex_lock(&d->mu);
        now = now_s_locked(d);
        if (!d->vclock && d->last_now && now < d->last_now - CLOCK_BACK_S) {
            /* the clock was set back (it was ahead): the next runs and the stale check, computed
             * on the old time, would wait until the clock caught up with it */
            char was[40], is[40];
            time_format_iso(d->last_now * 1000000000, was, sizeof(was));
            time_format_iso(now * 1000000000, is, sizeof(is));
            dlog(d, LOG_WARN, "clock",
                 "the clock went back from %s to %s: the next runs are computed again", was, is);
            for (size_t i = 0; i < SCHEDULE_COUNT; i++)
                compute_next_locked(d, i, now);
            d->next_stale_check = now;
        }
        d->last_now = now;
        bool idle = !d->queue && !d->running;
        /* a job queued now starts in the worker after this pass: with BACKUP_RUN_TIMEOUT the
         * loop looks again each second, so that it sees the run and when it is due */
        bool watch_runs = d->run_timeout_ns && !idle;
        /* a run going for over stale_run_wait_ns (counted on the monotonic clock: a clock set
         * back would stretch the wait, one set forward cut it) may be stuck: the stale check
         * stops waiting for it (a run that ends sooner decides it afterwards, with its own
         * backups) */
        int64_t run_ns = d->running ? time_mono_ns() - d->running->started_mono_ns : 0;
        bool long_run = d->running && run_ns > d->stale_run_wait_ns;
        /* a backup run going on longer than BACKUP_RUN_TIMEOUT is cancelled (at its next safe
         * point: it fails, saying why, and the queue goes on) */
        bool timed_run = d->running && d->running->spec.kind == DJOB_BACKUP && d->run_timeout_ns;
        if (timed_run && run_ns > d->run_timeout_ns && !d->running->timed_out) {
            d->running->timed_out = true;
            __atomic_store_n(&d->cancel, 1, __ATOMIC_RELAXED);
            dlog(d, LOG_WARN, "job",
                 "%s %s run has gone on for %lld s, longer than BACKUP_RUN_TIMEOUT (%lld s): "
                 "cancelling it",
                 d->running->source, caris_job_type_name(d->running->type),
                 (long long)(run_ns / 1000000000), (long long)(d->run_timeout_ns / 1000000000));
        }
        /* enqueue what is due */
        int64_t next = INT64_MAX;
        for (size_t i = 0; i < SCHEDULE_COUNT; i++) {
            if (!d->next_run[i])
                continue;
            /* a test clock that runs on (CARIS_TEST_CLOCK_RATE) queues nothing after its end */
            if (d->next_run[i] <= now && !(d->v_rate && d->next_run[i] > d->v_end_s)) {
                /* slots passed while the machine was suspended or the clock was set forward:
                 * one run, for the newest of them (as at start), not one per slot */
                const struct schedule *s = &d->sch.items[i];
                int count;
                int64_t slot = newest_slot(d, s, d->next_run[i], now, &count);
                /* a run of this schedule still waiting (runs outlasting the interval): it runs
                 * once, for the newest slot, not once per slot passed while it waited */
                struct job *w = NULL;
                for (struct job *q = d->queue; q && !w; q = q->next)
                    if (q->state == JOB_QUEUED && q->spec.kind == DJOB_BACKUP &&
                        strcmp(q->source, s->name) == 0)
                        w = q;
                if (w) {
                    char was[40], when[40];
                    iso_s(w->scheduled_for, was, sizeof(was));
                    iso_s(slot ? slot : d->next_run[i], when, sizeof(when));
                    w->scheduled_for = slot ? slot : d->next_run[i];
                    w->catch_up = true;
                    dlog(d, LOG_INFO, "catch-up",
                         "the %s run for %s is still waiting in the queue: it runs once, for %s",
                         s->name, was, when);
                    compute_next_locked(d, i, w->scheduled_for);
                    if (d->next_run[i] && d->next_run[i] < next)
                        next = d->next_run[i];
                    continue;
                }
                struct job *j = job_new(sched_type(s), s->name, slot ? slot : d->next_run[i]);
                if (slot) {
                    char was[40], when[40];
                    iso_s(d->next_run[i], was, sizeof(was));
                    iso_s(slot, when, sizeof(when));
                    char many[24] = "many";
                    if (count >= 0)
                        snprintf(many, sizeof(many), "%d", count + 1);
                    dlog(d, LOG_INFO, "catch-up",
                         "%s %s runs, %s to %s, were passed over (the machine was suspended or "
                         "the clock set forward): running once, for %s",
                         many, s->name, was, when, when);
                    j->catch_up = true;
                }
                enqueue_locked(d, j);
                compute_next_locked(d, i, slot ? slot : d->next_run[i]);
                idle = false;
            }
            if (d->next_run[i] && d->next_run[i] < next)
                next = d->next_run[i];
        }
        if (timed_run && !d->running->timed_out) { /* wake up when it is due */
            int64_t left_s = (d->run_timeout_ns - run_ns) / 1000000000 + 1;
            if (now + left_s < next)
                next = now + left_s;
        }
        bool stale_due = now >= d->next_stale_check;
        if (stale_due) {
            d->next_stale_check = now + 3600;
            /* held by a run: checked again when the run has gone on long enough */
            int64_t left_s = (d->stale_run_wait_ns - run_ns) / 1000000000 + 1;
            if (d->running && !long_run && !d->vclock && left_s < 3600)
                d->next_stale_check = now + left_s;
        }
        if (d->next_stale_check < next && !d->vclock)
            next = d->next_stale_check;
        bool vjump = false;
        if (d->vclock && d->v_rate && idle && now >= d->v_end_s) {
            state_schedules_locked(d);
            state_save_locked(d);
            pthread_mutex_unlock(&d->mu);
            dlog(d, LOG_INFO, "stopping", "the test clock reached its end");
            break;
        }
        if (d->vclock && !d->v_rate && idle) {
            if (next == INT64_MAX || next > d->v_end_s) {
                clock_jump_locked(d, d->v_end_s == INT64_MAX ? now : d->v_end_s);
                if (d->v_end_s != INT64_MAX) {
                    state_schedules_locked(d);
                    state_save_locked(d);
                    pthread_mutex_unlock(&d->mu);
                    if (stale_due) /* the check due before the jump (at the start, too) */
                        stale_refresh_ask(d, now, true);
                    dlog(d, LOG_INFO, "stopping", "the test clock reached its end");
                    break;
                }
            } else if (next > now) {
                clock_jump_locked(d, next);
                vjump = true;
            }
        }
        state_schedules_locked(d);
        pthread_mutex_unlock(&d->mu);
        if (stale_due && idle) {
            stale_refresh_ask(d, now, false); /* the worker reads the repository, then checks */
        } else if (stale_due && long_run) {
            stale_eval_async(d, now); /* with the newest backups read last */
        }
        if (vjump)
            continue;

        struct pollfd p[MAX_CLIENTS + 3];
        size_t np = 0;
        p[np++] = (struct pollfd){.fd = d->listen_fd, .events = POLLIN};
        p[np++] = (struct pollfd){.fd = d->done_pipe[0], .events = POLLIN};
        p[np++] = (struct pollfd){.fd = o->wake_fd, .events = POLLIN};
        for (size_t i = 0; i < d->nclients; i++)
            p[np++] = (struct pollfd){.fd = d->clients[i].fd, .events = POLLIN};
        int timeout = -1;
        if (next != INT64_MAX) {
            int64_t ms = (next - now) * 1000;
            timeout = ms > 60000 ? 60000 : ms < 0 ? 0 : (int)ms; /* re-check each minute */
        } else {
            timeout = 60000;
        }
        if (d->vclock && d->v_rate) /* virtual seconds pass v_rate times as fast */
            timeout = timeout < 0 ? 1000 / (int)d->v_rate : timeout / (int)d->v_rate;
        if (d->vclock || watch_runs)
            timeout = timeout > 1000 ? 1000 : timeout;
        int n = poll(p, (nfds_t)np, timeout);
        if (n < 0 && errno != EINTR) {
            err_sys(e, errno, NULL, "poll");
            break;
        }
        if (n <= 0)
            continue;
        if (p[2].revents) {
            char buf[64];
            while (read(o->wake_fd, buf, sizeof(buf)) > 0)
                ;
        }
        if (p[1].revents)
            jobs_finished(d);
        if (p[0].revents)
            client_accept(d);
        /* clients (backwards: client_close moves the last one into the gap) */
        for (size_t k = np; k-- > 3;) {
            if (!p[k].revents)
                continue;
            for (size_t i = 0; i < d->nclients; i++)
                if (d->clients[i].fd == p[k].fd) {
                    client_read(d, i);
                    break;
                }
        }
    }
    /* stop: no more requests (those in progress end first), cancel the running job, drop the
     * queued ones */
    api_stop(d->api);
    d->api = NULL;
    walmon_stop(d->walmon);
    d->walmon = NULL;
    walstream_stop(d->walstream);
    d->walstream = NULL;
    walq_stop(d->walq);
    d->walq = NULL;
    pthread_mutex_lock(&d->mu);
    size_t dropped = queue_len_locked(d);
    bool was_running = d->running != NULL;
    if (d->running)
        d->running->stopped = true;
    __atomic_store_n(&d->cancel, 1, __ATOMIC_RELAXED); /* the running job reads it */
    __atomic_store_n(&d->stopping, 1, __ATOMIC_RELAXED);
    d->worker_stop = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    if (was_running)
        dlog(d, LOG_INFO, "stopping", "cancelling the running job");
    pthread_join(d->worker, NULL);
    if (d->stale_th_started) /* its delivery gives up at d->stopping */
        pthread_join(d->stale_th, NULL);
    d->stale_th_started = false;
    jobs_finished(d);
    if (dropped) {
        dlog(d, LOG_INFO, "stopping", "%zu queued job%s dropped", dropped, dropped == 1 ? "" : "s");
        dropped_jobs_tell(d);
    }
    pthread_mutex_lock(&d->mu);
    json_object_del(d->state, "job");
    json_object_del(d->state, "pid");
    json_object_del(d->state, "queued"); /* told: dropped_jobs_tell */
    state_save_locked(d);
    pthread_mutex_unlock(&d->mu);
    dlog(d, LOG_INFO, "stopped", "daemon stopped");
    rc = err_is_set(e) ? -1 : 0;
out:
    daemon_free(d);
    return rc;
}

/* The daemon's `wal receive` (BACKUP_WAL_STREAMING=true): one thread that streams WAL over the
 * physical replication slot BACKUP_WAL_SLOT into the WAL archive (caris_wal_receive), through
 * a repository handle of its own (a handle runs one operation at a time, and streaming never
 * ends). When it fails (the server is down, restarts, the network breaks) it starts again
 * after a pause that doubles from 1 s up to 60 s, back to 1 s once a run streamed for a
 * minute. The daemon's stop cancels it: the unfinished segment is stored first. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "caris/core.h"
#include "caris/notify.h"
#include "caris/open.h"
#include "caris/walrecv.h"
#include "caris/walwindow.h"

#include "internal.h"

#define WALSTREAM_BACKOFF_MIN_MS 1000
#define WALSTREAM_BACKOFF_MAX_MS 60000
#define WALSTREAM_STEADY_NS (60ll * 1000000000) /* a run this long resets the backoff */

struct walstream {
    struct daemon *d;
    const struct config *cfg;
    char *repo_path, *backup_dir, *slot;
    unsigned flush_seconds;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    volatile sig_atomic_t cancel; /* the receive's op: set by walstream_stop */
    bool stop;
    /* status, under mu */
    const char *state; /* "starting", "streaming", "waiting" (after an error) */
    uint64_t flushed_lsn;
    char flushed_at[40], error_at[40], retry_at[40];
    char last_error[600];
    uint64_t restarts;
    /* the alert (BACKUP_WAL_ALERT_MINUTES; < 0: off), the thread's own */
    int64_t alert_after_ns, failing_since_ns;
    int64_t failing_since_mono_ns; /* the alert counts on the monotonic clock */
    struct episode_alert alert;
};

static void op_log(void *ctx, enum log_level l, const char *msg)
{
    struct walstream *w = ctx;
    /* the receive's own lines: "streaming WAL from", "stored WAL ...", "stopping: ..." */
    if (strncmp(msg, "streaming WAL from", 18) == 0) {
        pthread_mutex_lock(&w->mu);
        w->state = "streaming";
        pthread_mutex_unlock(&w->mu);
    }
    /* a line per stored partial would flood the log (one per flush interval): debug level */
    daemon_log(w->d, strstr(msg, "stored WAL partial") ? LOG_DEBUG : l, "wal-stream", "%s", msg);
}

static void on_flush(void *ctx, uint64_t lsn)
{
    struct walstream *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->flushed_lsn = lsn;
    time_format_iso(time_now_ns(), w->flushed_at, sizeof(w->flushed_at));
    pthread_mutex_unlock(&w->mu);
}

/* One run: open the handle (each run afresh: a failure may have come from the repository),
 * stream until an error or the stop. */
static int run_once(struct walstream *w, struct err *e)
{
    struct caris_open_opts oo = {.repo_path = w->repo_path, .backup_dir = w->backup_dir};
    struct caris_open_result res = {0};
    struct repo *r = NULL;
    if (config_encryption_key(w->cfg, &oo.key, e) == 0)
        r = caris_repo_open(&oo, &res, e);
    json_decref(res.state);
    if (!r)
        return -1;
    /* a prune (exclusive lock) is waited for, as by the daemon's wal push */
    repo_set_lock_wait(r, 120 * 1000, NULL, NULL);
    struct caris_op op = {
        .log = op_log, .log_ctx = w, .cancel = &w->cancel, .actor = "wal receive"};
    const char *url = config_get(w->cfg, "BACKUP_PG_REPLICATION_URL");
    const char *url_var = "BACKUP_PG_REPLICATION_URL";
    if (!url || !*url) {
        url = config_get(w->cfg, "POSTGRES_URL");
        url_var = "POSTGRES_URL";
    }
    struct wal_receive_opts o = {.url = url,
                                 .url_var = url_var,
                                 .password = config_get(w->cfg, "PGPASSWORD"),
                                 .slot = w->slot,
                                 .create_slot = true,
                                 .flush_seconds = w->flush_seconds,
                                 .op = &op,
                                 .on_flush = on_flush,
                                 .on_flush_ctx = w};
    int rc = caris_wal_receive(r, &o, e);
    repo_close(r);
    return rc;
}

/* After a failed run: an episode of failures starts at the first failure after a steady run
 * (or at start); once it lasts alert_after_ns, one alert. */
static void alert_check(struct walstream *w, bool steady, const struct err *e)
{
    int64_t now = time_now_ns(), mono = time_mono_ns();
    if (steady || !w->failing_since_ns) {
        if (w->alert.sent)
            daemon_log(w->d, LOG_INFO, "wal-stream", "WAL streaming had worked again");
        w->failing_since_ns = now;
        w->failing_since_mono_ns = mono;
        episode_alert_reset(&w->alert);
    }
    if (w->alert_after_ns < 0 || !episode_alert_due(&w->alert, mono) ||
        mono - w->failing_since_mono_ns < w->alert_after_ns)
        return;
    char since[40];
    time_format_iso(w->failing_since_ns, since, sizeof(since));
    char *msg = xasprintf("wal receive over replication slot %s has failed since %s (%llu "
                          "restarts in all): %s",
                          w->slot, since, (unsigned long long)w->restarts, e->msg);
    struct notify_event ev = {.kind = NOTIFY_WAL_STREAM_FAILING,
                              .duration_ms = -1,
                              .error = msg,
                              .hint = *e->hint ? e->hint : NULL,
                              .time_ns = now};
    episode_alert_send(w->d, &w->alert, &ev, mono, "wal-stream", "streaming fails");
    free(msg);
}

static void *walstream_main(void *arg)
{
    struct walstream *w = arg;
    int64_t backoff_ms = WALSTREAM_BACKOFF_MIN_MS;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        bool stop = w->stop;
        w->state = "starting";
        pthread_mutex_unlock(&w->mu);
        if (stop)
            break;
        struct err e = ERR_INIT;
        int64_t t0 = time_mono_ns();
        int rc = run_once(w, &e);
        pthread_mutex_lock(&w->mu);
        if (w->stop) {
            pthread_mutex_unlock(&w->mu);
            break;
        }
        if (rc == 0) /* returned without a stop: not expected; treated as an error */
            err_set(&e, ERR_FAILURE, NULL, "wal receive ended");
        bool steady = time_mono_ns() - t0 >= WALSTREAM_STEADY_NS;
        if (steady)
            backoff_ms = WALSTREAM_BACKOFF_MIN_MS;
        w->restarts++;
        w->state = "waiting";
        snprintf(w->last_error, sizeof(w->last_error), "%s%s%s", e.msg, *e.hint ? " (hint: " : "",
                 *e.hint ? e.hint : "");
        if (*e.hint)
            snprintf(w->last_error + strlen(w->last_error),
                     sizeof(w->last_error) - strlen(w->last_error), ")");
        time_format_iso(time_now_ns(), w->error_at, sizeof(w->error_at));
        time_format_iso(time_now_ns() + backoff_ms * 1000000, w->retry_at, sizeof(w->retry_at));
        pthread_mutex_unlock(&w->mu);
        daemon_log(w->d, LOG_ERROR, "wal-stream", "wal receive failed: %s; again in %lld s", e.msg,
                   (long long)(backoff_ms / 1000));
        alert_check(w, steady, &e);
        /* the pause, cut short by the stop */
        struct timespec ts = time_mono_deadline(backoff_ms * 1000000);
        pthread_mutex_lock(&w->mu);
        while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &ts) != ETIMEDOUT)
            ;
        w->retry_at[0] = '\0';
        pthread_mutex_unlock(&w->mu);
        backoff_ms =
            backoff_ms * 2 > WALSTREAM_BACKOFF_MAX_MS ? WALSTREAM_BACKOFF_MAX_MS : backoff_ms * 2;
    }
    return NULL;
}

/* The streaming settings of cfg: *on false when it is off (the others then unread). */
static int walstream_settings(const struct config *cfg, bool *on, unsigned *flush,
                              int64_t *alert_after, const char **slot, struct err *e)
{
    *on = false;
    if (config_bool(cfg, "BACKUP_WAL_STREAMING", false, on, e) != 0)
        return -1;
    if (!*on)
        return 0;
    *flush = 5;
    const char *fs = config_get(cfg, "BACKUP_WAL_FLUSH_SECONDS");
    if (fs && *fs && caris_wal_flush_seconds_parse(fs, flush, e) != 0) {
        e->code = ERR_CONFIG;
        return err_wrap(e, "BACKUP_WAL_FLUSH_SECONDS");
    }
    if (wal_alert_after(cfg, alert_after, e) != 0)
        return -1;
    *slot = config_get(cfg, "BACKUP_WAL_SLOT");
    if (!*slot || !**slot)
        *slot = "caris_backup";
    size_t n = strlen(*slot);
    if (n > 63 || strspn(*slot, "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
        return err_set(e, ERR_CONFIG, "lower-case letters, digits and _, at most 63",
                       "BACKUP_WAL_SLOT '%s' is not a replication slot name", *slot);
    return 0;
}

int walstream_config_check(const struct config *cfg, struct err *e)
{
    bool on;
    unsigned flush;
    int64_t alert_after;
    const char *slot;
    return walstream_settings(cfg, &on, &flush, &alert_after, &slot, e);
}

int walstream_start(struct daemon *d, const struct config *cfg, const char *repo_path,
                    const char *backup_dir, struct walstream **out, struct err *e)
{
    *out = NULL;
    bool on;
    unsigned flush = 5;
    int64_t alert_after = -1;
    const char *slot = NULL;
    if (walstream_settings(cfg, &on, &flush, &alert_after, &slot, e) != 0)
        return -1;
    if (!on)
        return 0;
    struct walstream *w = xcalloc(1, sizeof(*w));
    w->d = d;
    w->cfg = cfg;
    w->repo_path = xstrdup(repo_path);
    w->backup_dir = xstrdup(backup_dir);
    w->slot = xstrdup(slot);
    w->flush_seconds = flush;
    w->alert_after_ns = alert_after;
    episode_alert_init(&w->alert, cfg);
    w->state = "starting";
    pthread_mutex_init(&w->mu, NULL);
    cond_init_monotonic(&w->cv);
    if (pthread_create(&w->thread, NULL, walstream_main, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w->repo_path);
        free(w->backup_dir);
        free(w->slot);
        free(w);
        return err_set(e, ERR_FAILURE, NULL, "cannot start the WAL streaming thread");
    }
    daemon_log(d, LOG_INFO, "wal-stream",
               "streaming WAL over replication slot %s, flushed every %u s", slot, flush);
    *out = w;
    return 0;
}

json_t *walstream_status(struct walstream *w)
{
    if (!w)
        return json_null();
    pthread_mutex_lock(&w->mu);
    char lsn[32];
    caris_lsn_format(w->flushed_lsn, lsn, sizeof(lsn));
    json_t *s =
        json_pack("{s:s, s:s, s:I, s:I}", "state", w->state, "slot", w->slot, "flushSeconds",
                  (json_int_t)w->flush_seconds, "restarts", (json_int_t)w->restarts);
    json_object_set_new(s, "flushedLsn", w->flushed_lsn ? json_string(lsn) : json_null());
    json_object_set_new(s, "flushedAt", *w->flushed_at ? json_string(w->flushed_at) : json_null());
    json_object_set_new(s, "lastError", *w->last_error ? json_string(w->last_error) : json_null());
    json_object_set_new(s, "lastErrorAt", *w->error_at ? json_string(w->error_at) : json_null());
    json_object_set_new(s, "retryAt", *w->retry_at ? json_string(w->retry_at) : json_null());
    pthread_mutex_unlock(&w->mu);
    return s;
}

void walstream_stop(struct walstream *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    __atomic_store_n(&w->cancel, 1, __ATOMIC_RELAXED); /* the receive's op reads it */
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->repo_path);
    free(w->backup_dir);
    free(w->slot);
    free(w);
}

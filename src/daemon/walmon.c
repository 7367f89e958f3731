/* The daemon's watch on PostgreSQL's WAL archiver (BACKUP_WAL_ALERT_MINUTES, default 15, or
 * off). When POSTGRES_URL is set, one thread asks the server every WALMON_INTERVAL for
 * archive_mode and pg_stat_archiver (caris_wal_archiver). Archiving is failing when it is on
 * and the last attempt, a failure, came after the last success. A failure that lasts
 * BACKUP_WAL_ALERT_MINUTES (counted from the first check that saw it) is notified once
 * (wal-archiving-failing); its end is logged. A prune holding the repository's exclusive lock
 * makes `wal push` fail for a while, and PostgreSQL retries: short failures are normal, hence
 * the delay.
 *
 * Why: the archive is what point-in-time recovery replays. While archive_command fails, the
 * recovery window stops growing and pg_wal fills the server's disk; PostgreSQL only logs it. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"
#include "caris/notify.h"
#include "caris/pgsrc.h"
#include "caris/wal.h"

#include "internal.h"

#define WALMON_INTERVAL_NS (300ll * 1000000000) /* 5 minutes */

struct walmon {
    struct daemon *d;
    const struct config *cfg;
    int64_t alert_after_ns, interval_ns;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    /* the episode of failure (the thread's own) */
    int64_t failing_since_ns;      /* 0: not failing */
    int64_t failing_since_mono_ns; /* the same moment on the monotonic clock, which the alert
                                    * counts on (a clock set forward is no time failing) */
    struct episode_alert alert;
    bool error_logged;
    /* status, under mu */
    const char *state; /* "unknown" (not asked yet, or could not), "off", "ok", "failing" */
    struct pgsrc_archiver a;
    char checked_at[40], failing_since[40], error[600];
};

static void set_state(struct walmon *w, const char *state, const struct pgsrc_archiver *a,
                      const char *error)
{
    pthread_mutex_lock(&w->mu);
    w->state = state;
    if (a)
        w->a = *a;
    time_format_iso(time_now_ns(), w->checked_at, sizeof(w->checked_at));
    if (w->failing_since_ns)
        time_format_iso(w->failing_since_ns, w->failing_since, sizeof(w->failing_since));
    else
        w->failing_since[0] = '\0';
    snprintf(w->error, sizeof(w->error), "%s", error ? error : "");
    pthread_mutex_unlock(&w->mu);
}

static void check_once(struct walmon *w)
{
    struct pgsrc_archiver a;
    struct err e = ERR_INIT;
    int64_t now = time_now_ns(), mono = time_mono_ns();
    if (caris_wal_archiver(w->cfg, &a, &e) != 0) {
        /* the server down or unreachable: the backups say so; logged once per streak */
        if (!w->error_logged)
            daemon_log(w->d, LOG_WARN, "wal-archiver",
                       "cannot read PostgreSQL's archiver state: %s", e.msg);
        w->error_logged = true;
        set_state(w, "unknown", NULL, e.msg);
        return;
    }
    w->error_logged = false;
    bool failing = pgsrc_archiver_failing(&a);
    if (!failing && w->failing_since_ns)
        daemon_log(w->d, LOG_INFO, "wal-archiver", "WAL archiving works again (%s archived)",
                   *a.last_archived_wal ? a.last_archived_wal : "a segment");
    if (!failing) {
        w->failing_since_ns = 0;
        episode_alert_reset(&w->alert);
        set_state(w, a.archive_mode ? "ok" : "off", &a, NULL);
        return;
    }
    char failed_at[40], archived_at[40] = "never";
    time_format_iso(a.last_failed_ns, failed_at, sizeof(failed_at));
    if (a.last_archived_ns)
        time_format_iso(a.last_archived_ns, archived_at, sizeof(archived_at));
    if (!w->failing_since_ns) {
        w->failing_since_ns = now;
        w->failing_since_mono_ns = mono;
        if (a.no_command)
            daemon_log(w->d, LOG_WARN, "wal-archiver",
                       "archive_mode is on but archive_command is not set: PostgreSQL archives "
                       "nothing (last archived: %s at %s)",
                       *a.last_archived_wal ? a.last_archived_wal : "none", archived_at);
        else
            daemon_log(w->d, LOG_WARN, "wal-archiver",
                       "archive_command fails: segment %s at %s (%lld failures in all; last "
                       "archived: %s at %s)",
                       a.last_failed_wal, failed_at, (long long)a.failed_count,
                       *a.last_archived_wal ? a.last_archived_wal : "none", archived_at);
    }
    set_state(w, "failing", &a, NULL);
    if (!episode_alert_due(&w->alert, mono) || mono - w->failing_since_mono_ns < w->alert_after_ns)
        return;
    char *msg =
        a.no_command
            ? xasprintf("archive_mode is on but archive_command is not set (since this daemon "
                        "first saw it, %lld min ago): PostgreSQL archives nothing and reports no "
                        "failure; the last segment archived: %s at %s (pg_stat_archiver)",
                        (long long)((mono - w->failing_since_mono_ns) / 60000000000),
                        *a.last_archived_wal ? a.last_archived_wal : "none", archived_at)
            : xasprintf("archive_command has failed since this daemon first saw it (%lld min ago): "
                        "the last attempt, segment %s at %s, failed; %lld failures in all; the "
                        "last segment archived: %s at %s (pg_stat_archiver)",
                        (long long)((mono - w->failing_since_mono_ns) / 60000000000),
                        a.last_failed_wal, failed_at, (long long)a.failed_count,
                        *a.last_archived_wal ? a.last_archived_wal : "none", archived_at);
    struct notify_event ev = {
        .kind = NOTIFY_WAL_FAILING,
        .duration_ms = -1,
        .error = msg,
        .hint = a.no_command
                    ? "set archive_command = 'caris-backup --env-file /etc/caris/backup.env wal "
                      "push %p' on the server and reload it: the archiver catches up by itself"
                    : "PostgreSQL's log has archive_command's error: `caris-backup wal push` "
                      "fails when the repository is unreachable or full, the key or env file is "
                      "wrong, or the repository stayed locked; fix it and the archiver catches up "
                      "by itself",
        .time_ns = now};
    episode_alert_send(w->d, &w->alert, &ev, mono, "wal-archiver", "archiving fails");
    free(msg);
}

static void *walmon_main(void *arg)
{
    struct walmon *w = arg;
    for (;;) {
        check_once(w);
        struct timespec until = time_mono_deadline(w->interval_ns);
        pthread_mutex_lock(&w->mu);
        while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &until) != ETIMEDOUT)
            ;
        bool stop = w->stop;
        pthread_mutex_unlock(&w->mu);
        if (stop)
            break;
    }
    return NULL;
}

int wal_alert_after(const struct config *cfg, int64_t *ns, struct err *e)
{
    const char *v = config_get(cfg, "BACKUP_WAL_ALERT_MINUTES");
    long minutes = 15;
    *ns = -1;
    if (v && strcmp(v, "off") == 0)
        return 0;
    if (v) {
        char *end;
        errno = 0;
        minutes = strtol(v, &end, 10);
        if (errno || end == v || *end || minutes < 0 || minutes > 10080)
            return err_set(e, ERR_CONFIG, "a number of minutes from 0 to 10080, or off",
                           "invalid BACKUP_WAL_ALERT_MINUTES '%.40s'", v);
    }
    *ns = (int64_t)minutes * 60 * 1000000000;
    return 0;
}

int walmon_start(struct daemon *d, const struct config *cfg, struct walmon **out, struct err *e)
{
    *out = NULL;
    int64_t after;
    if (wal_alert_after(cfg, &after, e) != 0)
        return -1;
    if (after < 0 || !config_get(cfg, "POSTGRES_URL"))
        return 0;
    long minutes = (long)(after / 60000000000);
    struct walmon *w = xcalloc(1, sizeof(*w));
    w->d = d;
    w->cfg = cfg;
    w->alert_after_ns = after;
    w->interval_ns = daemon_test_knob_ns(cfg, "CARIS_TEST_WALMON_INTERVAL_MS", WALMON_INTERVAL_NS);
    episode_alert_init(&w->alert, cfg);
    w->state = "unknown";
    pthread_mutex_init(&w->mu, NULL);
    cond_init_monotonic(&w->cv);
    if (pthread_create(&w->thread, NULL, walmon_main, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        free(w);
        return err_set(e, ERR_FAILURE, NULL, "cannot start the WAL archiver watch");
    }
    daemon_log(d, LOG_INFO, "wal-archiver",
               "watching PostgreSQL's WAL archiver: an alert after %ld min of failures", minutes);
    *out = w;
    return 0;
}

json_t *walmon_status(struct walmon *w)
{
    if (!w)
        return json_null();
    pthread_mutex_lock(&w->mu);
    json_t *s = json_pack("{s:s, s:s}", "state", w->state, "checkedAt", w->checked_at);
    if (strcmp(w->state, "ok") == 0 || strcmp(w->state, "failing") == 0) {
        json_object_set_new(s, "archivedCount", json_integer(w->a.archived_count));
        json_object_set_new(s, "failedCount", json_integer(w->a.failed_count));
        json_object_set_new(s, "lastArchivedWal",
                            *w->a.last_archived_wal ? json_string(w->a.last_archived_wal)
                                                    : json_null());
        json_object_set_new(s, "lastFailedWal",
                            *w->a.last_failed_wal ? json_string(w->a.last_failed_wal)
                                                  : json_null());
    }
    json_object_set_new(s, "failingSince",
                        *w->failing_since ? json_string(w->failing_since) : json_null());
    json_object_set_new(s, "error", *w->error ? json_string(w->error) : json_null());
    pthread_mutex_unlock(&w->mu);
    return s;
}

void walmon_stop(struct walmon *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

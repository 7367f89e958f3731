/* Notifications: the rule of what is sent, and delivery with retries to every channel.
 * config.c reads the configuration, text.c writes what is said (redact.c keeps secrets out
 * of it), email.c and slack.c format it and make one attempt each. */
#include "caris/notify.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "caris/core.h"

#include "notify/internal.h"

const char *notify_kind_name(enum notify_kind k)
{
    switch (k) {
    case NOTIFY_BACKUP_SUCCEEDED:
        return "backup-succeeded";
    case NOTIFY_BACKUP_FAILED:
        return "backup-failed";
    case NOTIFY_VERIFY_FAILED:
        return "verification-failed";
    case NOTIFY_DRILL_FAILED:
        return "drill-failed";
    case NOTIFY_STEP_FAILED:
        return "step-failed";
    case NOTIFY_STEP_WARNINGS:
        return "step-warnings";
    case NOTIFY_STALE:
        return "stale";
    case NOTIFY_WAL_FAILING:
        return "wal-archiving-failing";
    case NOTIFY_WAL_STREAM_FAILING:
        return "wal-streaming-failing";
    case NOTIFY_TEST:
        return "test";
    }
    return "unknown";
}

/* ---- curl ---------------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void notify_curl_init(void)
{
    pthread_once(&curl_once, curl_init_once);
}

static int curl_xferinfo(void *op, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                         curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return caris_op_cancelled(op) ? 1 : 0;
}

CURLcode notify_curl_perform(CURL *h, const struct notify_attempt *a, char *errbuf, long *code)
{
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)a->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)a->timeout_ms);
    /* SMTP waits for each reply of the server up to a bound of its own (libcurl's default:
     * 120 s), which the transfer's timeout does not cut for the reply to the end of the
     * message: a server that took the message and then said nothing held a try for 2 minutes,
     * past the channel's deadline */
#if LIBCURL_VERSION_NUM >= 0x080600
    curl_easy_setopt(h, CURLOPT_SERVER_RESPONSE_TIMEOUT_MS, (long)a->timeout_ms);
#else
    curl_easy_setopt(h, CURLOPT_SERVER_RESPONSE_TIMEOUT,
                     a->timeout_ms < 2000 ? 1L : (long)(a->timeout_ms / 1000));
#endif
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, curl_xferinfo);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)a->op);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(h);
    *code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
    curl_easy_cleanup(h);
    return rc;
}

/* ---- the rule ------------------------------------------------------------------------ */

bool notify_configured(const struct notify_config *nc)
{
    return nc->email || nc->slack;
}

bool notify_should_send(const struct notify_config *nc, const struct notify_event *ev)
{
    if (ev->kind == NOTIFY_BACKUP_SUCCEEDED)
        return nc->notify_success;
    return true;
}

bool notify_stale_due(const struct notify_config *nc, int64_t last_success_ns, int64_t now_ns)
{
    if (last_success_ns <= 0)
        return true;
    /* BACKUP_ALERT_AFTER may be as long as 100000w, whose nanoseconds do not fit: longer than
     * any age an int64_t of nanoseconds holds */
    if (nc->alert_after_ms > INT64_MAX / 1000000)
        return false;
    return now_ns - last_success_ns > nc->alert_after_ms * 1000000;
}

/* ---- delivery ------------------------------------------------------------------------ */

/* Waits ms, returning early (true) when the op is cancelled. */
static bool pause_ms(const struct caris_op *op, int64_t ms)
{
    int64_t until = time_mono_ns() + ms * 1000000;
    for (;;) {
        if (caris_op_cancelled(op))
            return true;
        int64_t left = until - time_mono_ns();
        if (left <= 0)
            return false;
        if (left > 50000000)
            left = 50000000; /* look at the cancel flag every 50 ms */
        struct timespec ts = {0, (long)left};
        nanosleep(&ts, NULL);
    }
}

typedef int (*attempt_fn)(const struct notify_config *nc, const void *payload,
                          struct notify_attempt *a, struct err *e);

static int attempt_email(const struct notify_config *nc, const void *payload,
                         struct notify_attempt *a, struct err *e)
{
    return notify_email_send(nc, payload, a, e);
}

static int attempt_slack(const struct notify_config *nc, const void *payload,
                         struct notify_attempt *a, struct err *e)
{
    return notify_slack_post(nc, payload, a, e);
}

/* Tries, with backoff, within the deadline; fills res. */
static void deliver(const struct notify_config *nc, attempt_fn fn, const void *payload,
                    const struct caris_op *op, struct notify_result *res)
{
    int64_t start = time_mono_ns();
    int64_t deadline = start + nc->deadline_ms * 1000000;
    int64_t backoff = nc->backoff_ms;
    struct err last = ERR_INIT;
    int tries = nc->tries > 0 ? nc->tries : 1;
    for (int i = 1; i <= tries; i++) {
        if (caris_op_cancelled(op)) {
            err_set(&last, ERR_FAILURE, NULL, "cancelled");
            break;
        }
        int64_t left_ms = (deadline - time_mono_ns()) / 1000000;
        if (left_ms <= 0)
            break;
        /* Each try gets its share of what is left, so that a server that accepts and then
         * hangs still leaves time for the next tries. */
        int64_t share = left_ms / (tries - i + 1);
        if (share < 1)
            share = 1;
        struct notify_attempt a = {
            .connect_timeout_ms = nc->connect_timeout_ms < share ? nc->connect_timeout_ms : share,
            .timeout_ms = share,
            .op = op,
        };
        struct err e = ERR_INIT;
        res->tries = i;
        if (fn(nc, payload, &a, &e) == 0) {
            res->ok = true;
            err_clear(&res->err);
            res->duration_ms = (time_mono_ns() - start) / 1000000;
            return;
        }
        char *m = notify_redact(nc, e.msg);
        snprintf(e.msg, sizeof(e.msg), "%s", m);
        free(m);
        char *h = notify_redact(nc, e.hint);
        snprintf(e.hint, sizeof(e.hint), "%s", h);
        free(h);
        last = e;
        if (a.permanent || caris_op_cancelled(op)) {
            caris_op_log(op, LOG_WARN, "notify: %s via %s: %s", res->channel, res->target, e.msg);
            break;
        }
        left_ms = (deadline - time_mono_ns()) / 1000000;
        if (i == tries || left_ms <= 0) {
            caris_op_log(op, LOG_WARN, "notify: %s via %s: try %d of %d failed: %s", res->channel,
                         res->target, i, tries, e.msg);
            break;
        }
        int64_t wait = backoff < left_ms ? backoff : left_ms;
        caris_op_log(op, LOG_WARN, "notify: %s via %s: try %d of %d failed: %s; retrying in %.1f s",
                     res->channel, res->target, i, tries, e.msg, (double)wait / 1000);
        if (pause_ms(op, wait)) {
            err_set(&last, ERR_FAILURE, NULL, "cancelled");
            break;
        }
        backoff *= 2;
    }
    res->ok = false;
    res->duration_ms = (time_mono_ns() - start) / 1000000;
    if (!err_is_set(&last))
        err_set(&last, ERR_FAILURE, NULL, "no time left to try (deadline %lld ms)",
                (long long)nc->deadline_ms);
    res->err = last;
    err_wrap(&res->err, "%s notification via %s failed after %d tr%s", res->channel, res->target,
             res->tries, res->tries == 1 ? "y" : "ies");
}

/* One channel's delivery, on a thread of its own. */
struct chan_job {
    const struct notify_config *nc;
    attempt_fn fn;
    const void *payload;
    const struct caris_op *op;
    struct notify_result *res;
};

static void *chan_thread(void *arg)
{
    struct chan_job *j = arg;
    deliver(j->nc, j->fn, j->payload, j->op, j->res);
    return NULL;
}

int notify_send_all(const struct notify_config *nc, const struct notify_event *ev,
                    const struct caris_op *op, struct notify_result res[NOTIFY_MAX_CHANNELS],
                    size_t *nres)
{
    *nres = 0;
    if (!notify_configured(nc))
        return 0;
    notify_curl_init();
    struct notify_text t;
    notify_text_build(nc, ev, &t);
    struct buf msg = {0};
    char *json = NULL;
    struct chan_job jobs[NOTIFY_MAX_CHANNELS];
    size_t n = 0;
    if (nc->email) {
        notify_email_build(nc, &t, time_now_ns(), &msg); /* Date: when it is sent */
        jobs[n++] = (struct chan_job){nc, attempt_email, &msg, op, &res[*nres]};
        memset(&res[*nres], 0, sizeof(res[0]));
        res[*nres].channel = "email";
        snprintf(res[*nres].target, sizeof(res[*nres].target), "%s", nc->smtp_target);
        (*nres)++;
    }
    if (nc->slack) {
        json = notify_slack_build(&t);
        jobs[n++] = (struct chan_job){nc, attempt_slack, json, op, &res[*nres]};
        memset(&res[*nres], 0, sizeof(res[0]));
        res[*nres].channel = "slack";
        snprintf(res[*nres].target, sizeof(res[*nres].target), "%s", nc->slack_target);
        (*nres)++;
    }
    /* The channels at the same time: a notification takes at most one channel's bound (60 s),
     * not their sum, however many hang (one thread each but the last; inline if a thread
     * cannot be made) */
    pthread_t th[NOTIFY_MAX_CHANNELS];
    bool started[NOTIFY_MAX_CHANNELS] = {false};
    for (size_t i = 0; i + 1 < n; i++)
        started[i] = pthread_create(&th[i], NULL, chan_thread, &jobs[i]) == 0;
    for (size_t i = 0; i < n; i++)
        if (!started[i])
            chan_thread(&jobs[i]);
    for (size_t i = 0; i < n; i++)
        if (started[i])
            pthread_join(th[i], NULL);
    int rc = 0;
    for (size_t i = 0; i < *nres; i++)
        if (!res[i].ok)
            rc = -1;
    buf_free(&msg);
    free(json);
    notify_text_free(&t);
    return rc;
}

json_t *notify_results_to_json(const struct notify_result *res, size_t n)
{
    json_t *chs = json_array();
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_pack("{s:s, s:s, s:b, s:i, s:I}", "channel", res[i].channel, "target",
                              res[i].target, "ok", res[i].ok, "tries", res[i].tries, "duration_ms",
                              (json_int_t)res[i].duration_ms);
        if (!res[i].ok) {
            ok = false;
            json_object_set_new(c, "error", json_string(res[i].err.msg));
            if (*res[i].err.hint)
                json_object_set_new(c, "hint", json_string(res[i].err.hint));
        }
        json_array_append_new(chs, c);
    }
    return json_pack("{s:b, s:o}", "ok", ok, "channels", chs);
}

int caris_notify(const struct notify_config *nc, const struct notify_event *ev,
                 const struct caris_op *op, struct err *e)
{
    if (!notify_should_send(nc, ev))
        return 0;
    struct notify_result res[NOTIFY_MAX_CHANNELS];
    size_t n;
    if (notify_send_all(nc, ev, op, res, &n) == 0)
        return 0;
    /* The first failure's message and hint; the others named after it. */
    const struct notify_result *first = NULL;
    char others[256] = "";
    for (size_t i = 0; i < n; i++) {
        if (res[i].ok)
            continue;
        if (!first)
            first = &res[i];
        else
            snprintf(others + strlen(others), sizeof(others) - strlen(others), "%s%s",
                     *others ? ", " : "", res[i].channel);
    }
    *e = first->err;
    if (*others)
        snprintf(e->msg + strlen(e->msg), sizeof(e->msg) - strlen(e->msg),
                 " (and the %s channel failed too)", others);
    for (size_t i = 0; i < n; i++)
        if (res[i].ok)
            return 1;
    return -1;
}

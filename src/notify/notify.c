/* Notifications: configuration, the rule of what is sent, redaction, the text of a
 * notification, and delivery with retries to every channel (email.c, slack.c do one
 * attempt each). */
#include "caris/notify.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/retention.h"
#include "caris/secmem.h"

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
    case NOTIFY_STALE:
        return "stale";
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

int notify_curl_xferinfo(void *op, long long dltotal, long long dlnow, long long ultotal,
                         long long ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return caris_op_cancelled(op) ? 1 : 0;
}

/* ---- configuration ------------------------------------------------------------------- */

/* Variables whose values are secrets wherever they appear. */
static const char *const SECRET_VARS[] = {"BACKUP_SMTP_PASSWORD",
                                          "BACKUP_SLACK_WEBHOOK_URL",
                                          "BACKUP_ENCRYPTION_KEY",
                                          "CARIS_NEW_ENCRYPTION_KEY",
                                          "CRON_SECRET",
                                          "PGPASSWORD",
                                          "AWS_SECRET_ACCESS_KEY",
                                          "AWS_SESSION_TOKEN",
                                          "BACKUP_S3_SECRET_ACCESS_KEY",
                                          "BACKUP_S3_SECRET_KEY"};
/* Variables holding connection strings whose password is a secret. */
static const char *const URL_VARS[] = {"POSTGRES_URL", "CARIS_RESTORE_TARGET_URL", "DATABASE_URL"};

/* Shorter values would redact ordinary words. */
#define SECRET_MIN_LEN 4

static void add_secret(struct notify_config *nc, const char *s, size_t n)
{
    if (n < SECRET_MIN_LEN)
        return;
    for (size_t i = 0; i < nc->nsecrets; i++)
        if (strlen(nc->secrets[i]) == n && memcmp(nc->secrets[i], s, n) == 0)
            return;
    nc->secrets = xrealloc(nc->secrets, xsize(nc->nsecrets + 1, sizeof(*nc->secrets), 0));
    char *v = secmem_alloc(n + 1);
    memcpy(v, s, n);
    v[n] = '\0';
    nc->secrets[nc->nsecrets++] = v;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The password of a URI (scheme://user:password@host) or of key=value (password=...), as
 * written and percent-decoded. */
static void add_url_password(struct notify_config *nc, const char *v)
{
    const char *p = strstr(v, "://");
    if (p) {
        p += 3;
        size_t auth = strcspn(p, "/?#@");
        if (p[auth] == '@') {
            const char *colon = memchr(p, ':', auth);
            if (colon) {
                const char *pw = colon + 1;
                size_t n = (size_t)(p + auth - pw);
                add_secret(nc, pw, n);
                char *dec = secmem_alloc(n + 1);
                size_t k = 0;
                for (size_t i = 0; i < n; i++) {
                    if (pw[i] == '%' && i + 2 < n + 1 && hexval(pw[i + 1]) >= 0 &&
                        hexval(pw[i + 2]) >= 0) {
                        dec[k++] = (char)(hexval(pw[i + 1]) * 16 + hexval(pw[i + 2]));
                        i += 2;
                    } else {
                        dec[k++] = pw[i];
                    }
                }
                add_secret(nc, dec, k);
                secmem_free(dec);
            }
        }
    }
    for (const char *q = v; (q = strcasestr(q, "password=")) != NULL;) {
        q += 9;
        const char *end;
        if (*q == '\'') {
            q++;
            end = strchr(q, '\'');
            if (!end)
                end = q + strlen(q);
        } else {
            end = q + strcspn(q, " \t&");
        }
        add_secret(nc, q, (size_t)(end - q));
        q = end;
    }
}

/* A URL's parts that may be shown: "scheme://host[:port]" (no user, password, path or
 * query) and its host. -1 when curl cannot parse it; *userinfo says whether it carries a
 * user or password. */
struct url_parts {
    char *origin;
    char *host;
    char *scheme;
    bool userinfo;
};

static int url_parse(const char *url, struct url_parts *u)
{
    memset(u, 0, sizeof(*u));
    CURLU *h = curl_url();
    if (!h)
        xoom(0);
    int rc = -1;
    char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL, *pass = NULL;
    if (curl_url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host)
        goto out;
    curl_url_get(h, CURLUPART_PORT, &port, 0);
    u->userinfo = curl_url_get(h, CURLUPART_USER, &user, 0) == CURLUE_OK ||
                  curl_url_get(h, CURLUPART_PASSWORD, &pass, 0) == CURLUE_OK;
    u->scheme = xstrdup(scheme);
    u->host = xstrdup(host);
    u->origin =
        port ? xasprintf("%s://%s:%s", scheme, host, port) : xasprintf("%s://%s", scheme, host);
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(user);
    curl_free(pass);
    curl_url_cleanup(h);
    return rc;
}

static void url_parts_free(struct url_parts *u)
{
    free(u->origin);
    free(u->host);
    free(u->scheme);
    memset(u, 0, sizeof(*u));
}

static bool host_is_loopback(const char *h)
{
    return strcasecmp(h, "localhost") == 0 || strcmp(h, "[::1]") == 0 || strncmp(h, "127.", 4) == 0;
}

static char *trim_dup(const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return xstrndup(s, n);
}

/* Whether a channel is on: its *_NOTIFICATIONS variable, else whether anything of it is set. */
static int channel_enabled(const struct config *c, const char *flag, bool any_set, bool *on,
                           struct err *e)
{
    if (!config_get(c, flag)) {
        *on = any_set;
        return 0;
    }
    return config_bool(c, flag, any_set, on, e);
}

static int load_email(const struct config *c, struct notify_config *nc, struct err *e)
{
    static const char ADDR_HINT[] =
        "addresses are local@domain in ASCII, separated by commas; a From may be "
        "\"Name <local@domain>\"";
    const char *url = config_get(c, "BACKUP_SMTP_URL");
    const char *rcpts = config_get(c, "BACKUP_EMAIL_RECIPIENTS");
    bool on;
    if (channel_enabled(c, "BACKUP_EMAIL_NOTIFICATIONS", url || rcpts, &on, e) != 0)
        return -1;
    if (!on)
        return 0;
    if (!url)
        return err_set(e, ERR_CONFIG,
                       "set BACKUP_SMTP_URL (smtp://host:587, or smtps://host:465), or "
                       "BACKUP_EMAIL_NOTIFICATIONS=false",
                       "email notifications are on but BACKUP_SMTP_URL is not set");
    if (!rcpts)
        return err_set(e, ERR_CONFIG,
                       "set BACKUP_EMAIL_RECIPIENTS (comma-separated addresses), or "
                       "BACKUP_EMAIL_NOTIFICATIONS=false",
                       "email notifications are on but BACKUP_EMAIL_RECIPIENTS is not set");
    for (const char *s = url; *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
            return err_set(e, ERR_CONFIG, "e.g. smtp://mail.example.org:587",
                           "BACKUP_SMTP_URL contains a space or control character");
    struct url_parts u;
    if (url_parse(url, &u) != 0)
        return err_set(e, ERR_CONFIG, "e.g. smtp://mail.example.org:587 or smtps://host:465",
                       "BACKUP_SMTP_URL is not a valid URL");
    bool userinfo = u.userinfo;
    bool scheme_ok = strcmp(u.scheme, "smtp") == 0 || strcmp(u.scheme, "smtps") == 0;
    nc->smtp_target = xstrdup(u.origin);
    url_parts_free(&u);
    if (!scheme_ok)
        return err_set(e, ERR_CONFIG, "e.g. smtp://mail.example.org:587 or smtps://host:465",
                       "BACKUP_SMTP_URL must start with smtp:// or smtps://");
    if (userinfo)
        return err_set(e, ERR_CONFIG,
                       "put the user in BACKUP_SMTP_USER and the password in "
                       "BACKUP_SMTP_PASSWORD",
                       "BACKUP_SMTP_URL must not contain a user or password");
    nc->smtp_url = xstrdup(url);
    const char *user = config_get(c, "BACKUP_SMTP_USER");
    const char *pass = config_get(c, "BACKUP_SMTP_PASSWORD");
    if (pass && !user)
        return err_set(e, ERR_CONFIG, "set BACKUP_SMTP_USER too",
                       "BACKUP_SMTP_PASSWORD is set but BACKUP_SMTP_USER is not");
    if (user) {
        for (const char *s = user; *s; s++)
            if ((unsigned char)*s < ' ' || *s == 0x7f)
                return err_set(e, ERR_CONFIG, NULL,
                               "BACKUP_SMTP_USER contains a control character");
        nc->smtp_user = xstrdup(user);
    }
    if (pass)
        nc->smtp_password = secmem_strdup(pass);
    const char *tls = config_get(c, "BACKUP_SMTP_TLS");
    if (tls && strcasecmp(tls, "require") == 0)
        nc->smtp_require_tls = true;
    else if (tls && strcasecmp(tls, "try") != 0)
        return err_set(e, ERR_CONFIG,
                       "try: STARTTLS when the server offers it (the default); require: fail "
                       "without TLS",
                       "BACKUP_SMTP_TLS must be try or require");

    char hostname[256] = "localhost";
    gethostname(hostname, sizeof(hostname) - 1);
    const char *from = config_get(c, "BACKUP_EMAIL_FROM");
    char *dflt_from = NULL;
    if (!from)
        from = dflt_from = xasprintf("caris-backup@%s", hostname);
    char *display = NULL;
    int rc = notify_mailbox_parse(from, &nc->email_from_addr, &display);
    free(display);
    if (rc != 0) {
        char esc[160];
        str_escape(from, strlen(from), esc, sizeof(esc));
        err_set(
            e, ERR_CONFIG,
            dflt_from ? "set BACKUP_EMAIL_FROM to the address notifications come from" : ADDR_HINT,
            "%s is not a valid email address: %s",
            dflt_from ? "the default sender (caris-backup@host name)" : "BACKUP_EMAIL_FROM", esc);
        free(dflt_from);
        return -1;
    }
    nc->email_from = xstrdup(from);
    free(dflt_from);

    for (const char *p = rcpts;;) {
        size_t n = strcspn(p, ",");
        char *a = trim_dup(p, n);
        if (*a) {
            if (!notify_address_valid(a)) {
                char esc[160];
                str_escape(a, strlen(a), esc, sizeof(esc));
                free(a);
                return err_set(e, ERR_CONFIG, ADDR_HINT,
                               "BACKUP_EMAIL_RECIPIENTS: not a valid email address: %s", esc);
            }
            nc->recipients =
                xrealloc(nc->recipients, xsize(nc->nrecipients + 1, sizeof(char *), 0));
            nc->recipients[nc->nrecipients++] = a;
        } else {
            free(a);
        }
        if (!p[n])
            break;
        p += n + 1;
    }
    if (!nc->nrecipients)
        return err_set(e, ERR_CONFIG, ADDR_HINT, "BACKUP_EMAIL_RECIPIENTS holds no address");
    nc->email = true;
    return 0;
}

static int load_slack(const struct config *c, struct notify_config *nc, struct err *e)
{
    const char *url = config_get(c, "BACKUP_SLACK_WEBHOOK_URL");
    bool on;
    if (channel_enabled(c, "BACKUP_SLACK_NOTIFICATIONS", url != NULL, &on, e) != 0)
        return -1;
    if (!on)
        return 0;
    if (!url)
        return err_set(e, ERR_CONFIG,
                       "set BACKUP_SLACK_WEBHOOK_URL to the incoming webhook's URL, or "
                       "BACKUP_SLACK_NOTIFICATIONS=false",
                       "Slack notifications are on but BACKUP_SLACK_WEBHOOK_URL is not set");
    /* The URL is a secret (whoever has it can post): no message repeats it. */
    for (const char *s = url; *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
            return err_set(e, ERR_CONFIG, "copy the URL Slack gave for the incoming webhook",
                           "BACKUP_SLACK_WEBHOOK_URL contains a space or control character");
    struct url_parts u;
    if (url_parse(url, &u) != 0)
        return err_set(e, ERR_CONFIG, "copy the URL Slack gave for the incoming webhook",
                       "BACKUP_SLACK_WEBHOOK_URL is not a valid URL");
    bool https = strcmp(u.scheme, "https") == 0, http = strcmp(u.scheme, "http") == 0;
    bool userinfo = u.userinfo, loopback = host_is_loopback(u.host);
    nc->slack_target = xstrdup(u.origin);
    url_parts_free(&u);
    if (!(https || http) || userinfo)
        return err_set(e, ERR_CONFIG, "copy the URL Slack gave for the incoming webhook",
                       "BACKUP_SLACK_WEBHOOK_URL is not an https:// URL");
    if (http && !loopback)
        return err_set(e, ERR_CONFIG,
                       "use the https:// URL: over plain http anyone on the way could read the "
                       "URL, which is the webhook's only credential",
                       "BACKUP_SLACK_WEBHOOK_URL must be https (http only to a loopback address)");
    nc->slack_webhook_url = secmem_strdup(url);
    /* Its path alone (an error could name it without the host). */
    const char *path = strchr(strstr(url, "://") + 3, '/');
    if (path && strlen(path) > 1)
        add_secret(nc, path, strlen(path));
    nc->slack = true;
    return 0;
}

int notify_config_load(const struct config *c, struct notify_config *nc, struct err *e)
{
    memset(nc, 0, sizeof(*nc));
    notify_curl_init();
    nc->alert_after_ms = NOTIFY_DEFAULT_ALERT_AFTER_MS;
    nc->tries = NOTIFY_DEFAULT_TRIES;
    nc->backoff_ms = NOTIFY_DEFAULT_BACKOFF_MS;
    nc->connect_timeout_ms = NOTIFY_DEFAULT_CONNECT_TIMEOUT_MS;
    nc->deadline_ms = NOTIFY_DEFAULT_DEADLINE_MS;
    for (size_t i = 0; i < sizeof(SECRET_VARS) / sizeof(SECRET_VARS[0]); i++) {
        const char *v = config_get(c, SECRET_VARS[i]);
        if (v)
            add_secret(nc, v, strlen(v));
    }
    for (size_t i = 0; i < sizeof(URL_VARS) / sizeof(URL_VARS[0]); i++) {
        const char *v = config_get(c, URL_VARS[i]);
        if (v)
            add_url_password(nc, v);
    }
    if (load_email(c, nc, e) != 0 || load_slack(c, nc, e) != 0)
        goto fail;
    if (config_bool(c, "BACKUP_NOTIFY_SUCCESS", false, &nc->notify_success, e) != 0)
        goto fail;
    const char *aa = config_get(c, "BACKUP_ALERT_AFTER");
    if (aa) {
        struct caris_duration d;
        if (caris_duration_parse(aa, &d, e) != 0 || d.years || d.months) {
            char esc[64];
            str_escape(aa, strlen(aa), esc, sizeof(esc));
            err_set(e, ERR_CONFIG,
                    "a duration in weeks, days and hours, e.g. 26h, 2d, 1d12h (default 26h)",
                    "invalid BACKUP_ALERT_AFTER '%s'", esc);
            goto fail;
        }
        nc->alert_after_ms = (((int64_t)d.weeks * 7 + d.days) * 24 + d.hours) * 3600 * 1000;
    }
    const char *t = config_get(c, "CARIS_NOTIFY_TIMEOUT_SECONDS"); /* test knob */
    if (t) {
        char *end;
        double v = strtod(t, &end);
        if (end == t || *end || !(v > 0) || v > 3600) {
            err_set(e, ERR_CONFIG, NULL,
                    "CARIS_NOTIFY_TIMEOUT_SECONDS must be a number of seconds (0 to 3600)");
            goto fail;
        }
        nc->deadline_ms = (int64_t)(v * 1000);
        if (nc->deadline_ms < 1)
            nc->deadline_ms = 1;
        if (nc->connect_timeout_ms > nc->deadline_ms)
            nc->connect_timeout_ms = nc->deadline_ms;
    }
    return 0;
fail:
    notify_config_free(nc);
    return -1;
}

void notify_config_free(struct notify_config *nc)
{
    free(nc->smtp_url);
    free(nc->smtp_target);
    free(nc->smtp_user);
    secmem_free(nc->smtp_password);
    free(nc->email_from);
    free(nc->email_from_addr);
    for (size_t i = 0; i < nc->nrecipients; i++)
        free(nc->recipients[i]);
    free(nc->recipients);
    secmem_free(nc->slack_webhook_url);
    free(nc->slack_target);
    for (size_t i = 0; i < nc->nsecrets; i++)
        secmem_free(nc->secrets[i]);
    free(nc->secrets);
    memset(nc, 0, sizeof(*nc));
}

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
    return now_ns - last_success_ns > nc->alert_after_ms * 1000000;
}

/* ---- redaction ----------------------------------------------------------------------- */

static const char REDACTED[] = "[redacted]";

/* Replaces every occurrence of needle in *s. */
static void replace_all(char **s, const char *needle)
{
    size_t nl = strlen(needle);
    if (!nl || !strstr(*s, needle))
        return;
    struct buf b = {0};
    const char *p = *s, *hit;
    while ((hit = strstr(p, needle)) != NULL) {
        buf_append(&b, p, (size_t)(hit - p));
        buf_append(&b, REDACTED, sizeof(REDACTED) - 1);
        p = hit + nl;
    }
    buf_append(&b, p, strlen(p) + 1);
    free(*s);
    *s = (char *)b.data;
}

/* Replaces bytes [from, to) of *s with "[redacted]"; returns the offset just after it. */
static size_t replace_span(char **s, size_t from, size_t to)
{
    size_t len = strlen(*s);
    char *n = xasprintf("%.*s%s%s", (int)from, *s, REDACTED, *s + to);
    (void)len;
    free(*s);
    *s = n;
    return from + sizeof(REDACTED) - 1;
}

char *notify_redact(const struct notify_config *nc, const char *in)
{
    char *s = xstrdup(in ? in : "");
    /* Longest first: a secret that contains another is replaced whole. */
    if (nc) {
        size_t n = nc->nsecrets;
        const char **order = xcalloc(n ? n : 1, sizeof(*order));
        for (size_t i = 0; i < n; i++)
            order[i] = nc->secrets[i];
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0 && strlen(order[j]) > strlen(order[j - 1]); j--) {
                const char *t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        for (size_t i = 0; i < n; i++)
            replace_all(&s, order[i]);
        free(order);
    }
    /* scheme://user:password@host */
    for (size_t off = 0;;) {
        char *p = strstr(s + off, "://");
        if (!p)
            break;
        size_t start = (size_t)(p - s) + 3;
        size_t auth = strcspn(s + start, "/?#@ \t\n\"'<>");
        off = start;
        if (s[start + auth] != '@')
            continue;
        char *colon = memchr(s + start, ':', auth);
        if (!colon)
            continue;
        size_t from = (size_t)(colon - s) + 1;
        if (strncmp(s + from, REDACTED, sizeof(REDACTED) - 1) == 0 &&
            from + sizeof(REDACTED) - 1 == start + auth) {
            off = start + auth;
            continue;
        }
        off = replace_span(&s, from, start + auth);
    }
    /* password=value (libpq key=value strings) */
    for (size_t off = 0;;) {
        char *p = strcasestr(s + off, "password=");
        if (!p)
            break;
        size_t from = (size_t)(p - s) + 9, to;
        if (s[from] == '\'') {
            char *q = strchr(s + from + 1, '\'');
            to = q ? (size_t)(q - s) + 1 : strlen(s);
        } else {
            to = from + strcspn(s + from, " \t\n&");
        }
        if (to == from || (to - from == sizeof(REDACTED) - 1 &&
                           strncmp(s + from, REDACTED, sizeof(REDACTED) - 1) == 0)) {
            off = to;
            continue;
        }
        off = replace_span(&s, from, to);
    }
    /* Slack webhook paths, even of a webhook that is not ours */
    for (size_t off = 0;;) {
        char *p = strcasestr(s + off, "hooks.slack.com/");
        if (!p)
            break;
        size_t from = (size_t)(p - s) + 16;
        size_t to = from + strcspn(s + from, " \t\n\"'<>");
        if (to == from || strncmp(s + from, REDACTED, sizeof(REDACTED) - 1) == 0) {
            off = to == from ? from : to;
            continue;
        }
        off = replace_span(&s, from, to);
    }
    return s;
}

/* ---- the text of a notification ------------------------------------------------------ */

/* One-line, printable, valid UTF-8 (str_escape), then redacted. */
static char *clean_line(const struct notify_config *nc, const char *s)
{
    /* Redacted before escaping (a secret with a backslash or a control character in it
     * would not match after) and after (escaping must not reveal a pattern). */
    char *raw = notify_redact(nc, s);
    size_t n = strlen(raw);
    size_t cap = n * 4 + 8;
    if (cap > 4096)
        cap = 4096;
    char *esc = xmalloc(cap);
    str_escape(raw, n, esc, cap);
    free(raw);
    char *r = notify_redact(nc, esc);
    free(esc);
    return r;
}

/* Several lines: each line cleaned as above, joined with '\n'. At most 4000 bytes of input. */
static char *clean_text(const struct notify_config *nc, const char *s)
{
    struct buf b = {0};
    size_t total = strlen(s);
    if (total > 4000)
        total = 4000;
    const char *end = s + total;
    for (const char *p = s; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n && p[n - 1] == '\r')
            n--;
        char *line = xstrndup(p, n);
        char *c = clean_line(NULL, line);
        free(line);
        if (b.len)
            buf_append_u8(&b, '\n');
        buf_append(&b, c, strlen(c));
        free(c);
        if (!nl)
            break;
        p = nl + 1;
    }
    buf_append_u8(&b, 0);
    /* Redacted as a whole: a secret may span the lines' joins only if it held a newline. */
    char *r = notify_redact(nc, (char *)b.data);
    buf_free(&b);
    return r;
}

static void add_field(struct notify_text *t, const char *label, char *value)
{
    if (t->nfields < NOTIFY_MAX_FIELDS) {
        t->fields[t->nfields].label = label;
        t->fields[t->nfields].value = value;
        t->nfields++;
    } else {
        free(value);
    }
}

static char *human_duration(int64_t ms)
{
    int64_t s = ms / 1000;
    if (ms < 1000)
        return xasprintf("%lld ms", (long long)ms);
    if (s < 60)
        return xasprintf("%.1f s", (double)ms / 1000);
    if (s < 3600)
        return xasprintf("%lld min %lld s", (long long)(s / 60), (long long)(s % 60));
    if (s < 86400 * 2)
        return xasprintf("%lld h %lld min", (long long)(s / 3600), (long long)(s % 3600 / 60));
    return xasprintf("%lld d %lld h", (long long)(s / 86400), (long long)(s % 86400 / 3600));
}

void notify_text_build(const struct notify_config *nc, const struct notify_event *ev,
                       struct notify_text *t)
{
    memset(t, 0, sizeof(*t));
    t->kind = ev->kind;
    char hostbuf[256] = "unknown host";
    if (!ev->host) {
        gethostname(hostbuf, sizeof(hostbuf) - 1);
        hostbuf[sizeof(hostbuf) - 1] = '\0';
    }
    t->host = clean_line(nc, ev->host ? ev->host : hostbuf);
    char *id = ev->backup_id ? clean_line(nc, ev->backup_id) : NULL;
    char *kind = ev->backup_kind ? clean_line(nc, ev->backup_kind) : NULL;
    int64_t when = ev->time_ns ? ev->time_ns : time_now_ns();
    char iso[40];
    time_format_iso(when, iso, sizeof(iso));
    char *age = NULL;

    /* Subjects start with the product's name: "CÁRIS Backup: ...". */
    switch (ev->kind) {
    case NOTIFY_BACKUP_SUCCEEDED:
        t->subject = xasprintf("CÁRIS Backup: %s%sbackup succeeded on %s", kind ? kind : "",
                               kind ? " " : "", t->host);
        t->intro =
            xasprintf("A %s%sbackup succeeded on %s.", kind ? kind : "", kind ? " " : "", t->host);
        break;
    case NOTIFY_BACKUP_FAILED:
        t->failure = true;
        t->subject = xasprintf("CÁRIS Backup: %s%sbackup FAILED on %s", kind ? kind : "",
                               kind ? " " : "", t->host);
        t->intro = xasprintf("A %s%sbackup failed on %s. Nothing of it was committed: the "
                             "repository holds the backups it held before.",
                             kind ? kind : "", kind ? " " : "", t->host);
        break;
    case NOTIFY_VERIFY_FAILED:
        t->failure = true;
        t->subject = xasprintf("CÁRIS Backup: verification FAILED on %s%s%s", t->host,
                               id ? ": " : "", id ? id : "");
        t->intro = xasprintf("Verification of a backup failed on %s: do not restore from it "
                             "before `caris-backup check --read-data` says which backups are "
                             "affected.",
                             t->host);
        break;
    case NOTIFY_DRILL_FAILED:
        t->failure = true;
        t->subject = xasprintf("CÁRIS Backup: restore drill FAILED on %s%s%s", t->host,
                               id ? ": " : "", id ? id : "");
        t->intro = xasprintf("A restore drill (test restore) failed on %s: the backup may not "
                             "restore.",
                             t->host);
        break;
    case NOTIFY_STALE: {
        t->failure = true;
        char *alert = human_duration(nc ? nc->alert_after_ms : NOTIFY_DEFAULT_ALERT_AFTER_MS);
        if (ev->last_success_ns > 0) {
            age = human_duration((when - ev->last_success_ns) / 1000000);
            t->subject = xasprintf("CÁRIS Backup: no %s%sbackup for %s on %s", kind ? kind : "",
                                   kind ? " " : "", age, t->host);
            t->intro = xasprintf("The newest successful %s%sbackup on %s is %s old, more than "
                                 "BACKUP_ALERT_AFTER (%s).",
                                 kind ? kind : "", kind ? " " : "", t->host, age, alert);
        } else {
            t->subject = xasprintf("CÁRIS Backup: no successful %s%sbackup on %s", kind ? kind : "",
                                   kind ? " " : "", t->host);
            t->intro = xasprintf("There is no successful %s%sbackup on %s.", kind ? kind : "",
                                 kind ? " " : "", t->host);
        }
        free(alert);
        break;
    }
    case NOTIFY_TEST:
    default:
        t->subject = xasprintf("CÁRIS Backup: test notification from %s", t->host);
        t->intro = xasprintf("This is a test notification from caris-backup on %s. If you read "
                             "this, you will hear about failed backups here.",
                             t->host);
        break;
    }

    add_field(t, "Event", xstrdup(notify_kind_name(ev->kind)));
    add_field(t, "Host", xstrdup(t->host));
    add_field(t, "Time", xstrdup(iso));
    if (id)
        add_field(t, "Backup", xstrdup(id));
    if (kind)
        add_field(t, "Kind", xstrdup(kind));
    if (ev->has_size) {
        char h[32];
        str_human_bytes(ev->size_bytes, h, sizeof(h));
        add_field(t, "Size", xasprintf("%s (%llu bytes)", h, (unsigned long long)ev->size_bytes));
    }
    if (ev->duration_ms >= 0 && ev->kind != NOTIFY_STALE && ev->kind != NOTIFY_TEST)
        add_field(t, "Duration", human_duration(ev->duration_ms));
    if (ev->verification)
        add_field(t, "Verification", clean_line(nc, ev->verification));
    if (ev->kind == NOTIFY_STALE) {
        if (ev->last_success_ns > 0) {
            char last[40];
            time_format_iso(ev->last_success_ns, last, sizeof(last));
            add_field(t, "Last success", xstrdup(last));
        } else {
            add_field(t, "Last success", xstrdup("none"));
        }
        add_field(t, "Alert after",
                  human_duration(nc ? nc->alert_after_ms : NOTIFY_DEFAULT_ALERT_AFTER_MS));
    }
    if (ev->error)
        t->error = clean_text(nc, ev->error);
    if (ev->hint)
        t->hint = clean_text(nc, ev->hint);
    free(age);
    free(id);
    free(kind);
}

void notify_text_free(struct notify_text *t)
{
    free(t->subject);
    free(t->intro);
    for (size_t i = 0; i < t->nfields; i++)
        free(t->fields[i].value);
    free(t->error);
    free(t->hint);
    free(t->host);
    memset(t, 0, sizeof(*t));
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
    int rc = 0;
    if (nc->email) {
        struct notify_result *r = &res[(*nres)++];
        memset(r, 0, sizeof(*r));
        r->channel = "email";
        snprintf(r->target, sizeof(r->target), "%s", nc->smtp_target);
        struct buf msg = {0};
        notify_email_build(nc, &t, ev->time_ns ? ev->time_ns : time_now_ns(), &msg);
        deliver(nc, attempt_email, &msg, op, r);
        buf_free(&msg);
        if (!r->ok)
            rc = -1;
    }
    if (nc->slack) {
        struct notify_result *r = &res[(*nres)++];
        memset(r, 0, sizeof(*r));
        r->channel = "slack";
        snprintf(r->target, sizeof(r->target), "%s", nc->slack_target);
        char *json = notify_slack_build(&t);
        deliver(nc, attempt_slack, json, op, r);
        free(json);
        if (!r->ok)
            rc = -1;
    }
    notify_text_free(&t);
    return rc;
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
    return -1;
}

/* Notifications' configuration: the channels, the rules' settings, and the secrets to
 * redact, read from the environment and .env.local (struct config). */
#include <curl/curl.h>
#include <errno.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "caris/config.h"
#include "caris/core.h"
#include "caris/lazylib.h"
#include "caris/notify.h"
#include "caris/retention.h"
#include "caris/secmem.h"

#include "notify/internal.h"

/* Variables whose values are secrets wherever they appear. */
static const char *const SECRET_VARS[] = {"BACKUP_SMTP_PASSWORD",
                                          "BACKUP_SLACK_WEBHOOK_URL",
                                          "BACKUP_ENCRYPTION_KEY",
                                          "CARIS_NEW_ENCRYPTION_KEY",
                                          "CARIS_COPY_TO_KEY",
                                          "CRON_SECRET",
                                          "PGPASSWORD",
                                          "AWS_SECRET_ACCESS_KEY",
                                          "AWS_SESSION_TOKEN",
                                          "BACKUP_S3_SESSION_TOKEN",
                                          "BACKUP_S3_SECRET_ACCESS_KEY",
                                          "BACKUP_S3_SECRET_KEY"};
/* Variables holding connection strings whose password is a secret. */
static const char *const URL_VARS[] = {"POSTGRES_URL", "BACKUP_PG_REPLICATION_URL",
                                       "CARIS_RESTORE_TARGET_URL", "DATABASE_URL",
                                       "BACKUP_CLOUD_REPOSITORY"};

/* Shorter values would redact ordinary words. */
#define SECRET_MIN_LEN 4
/* The shortest segment of the Slack webhook's path taken for a secret on its own (when it
 * looks like a token: token_like): Slack's token is 24 characters, its workspace and channel
 * ids 9 to 11, "services" 8 */
#define SLACK_SEGMENT_MIN_LEN 12

static void add_secret_as_is(struct notify_config *nc, const char *s, size_t n)
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

/* A secret as written, and as a server that echoes it may write it back: percent-encoded
 * (every byte but A-Z a-z 0-9 - . _ ~, with upper or lower case hex digits: a proxy's "Cannot
 * POST %2Fservices%2F...") and JSON-escaped ('/' as "\/", PHP's default; '"' and '\'). */
static void add_secret(struct notify_config *nc, const char *s, size_t n)
{
    add_secret_as_is(nc, s, n);
    if (n < SECRET_MIN_LEN)
        return;
    char *f = secmem_alloc(3 * n + 1);
    for (int lower = 0; lower < 2; lower++) {
        static const char *const HEX[] = {"0123456789ABCDEF", "0123456789abcdef"};
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)s[i];
            if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
                f[k++] = (char)ch;
            } else {
                f[k++] = '%';
                f[k++] = HEX[lower][ch >> 4];
                f[k++] = HEX[lower][ch & 15];
            }
        }
        if (k != n)
            add_secret_as_is(nc, f, k);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '/' || s[i] == '"' || s[i] == '\\')
            f[k++] = '\\';
        f[k++] = s[i];
    }
    if (k != n)
        add_secret_as_is(nc, f, k);
    secmem_free(f);
}

static void add_url_secret(void *ctx, const char *s, size_t n)
{
    add_secret(ctx, s, n);
}

/* The password of a URI (scheme://user:password@host) or of key=value (password=...), as
 * written and percent-decoded (config_url_passwords). */
static void add_url_password(struct notify_config *nc, const char *v)
{
    config_url_passwords(v, add_url_secret, nc);
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
    if (lazylib_load(LAZYLIB_CURL, e) != 0)
        return -1;
    if (url_parse(url, &u) != 0)
        return err_set(e, ERR_CONFIG, "e.g. smtp://mail.example.org:587 or smtps://host:465",
                       "BACKUP_SMTP_URL is not a valid URL");
    bool userinfo = u.userinfo, loopback = net_host_is_loopback(u.host);
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
    const char *ca = config_get(c, "BACKUP_SMTP_CA_FILE");
    if (ca) {
        if (access(ca, R_OK) != 0) {
            err_sys(e, errno,
                    "BACKUP_SMTP_CA_FILE names a PEM file of the CA certificates that signed "
                    "the SMTP server's certificate",
                    "cannot read BACKUP_SMTP_CA_FILE %s", ca);
            e->code = ERR_CONFIG;
            return -1;
        }
        nc->smtp_ca_file = xstrdup(ca);
    }
    const char *tls = config_get(c, "BACKUP_SMTP_TLS");
    if (tls && strcasecmp(tls, "require") == 0)
        nc->smtp_require_tls = true;
    else if (tls && strcasecmp(tls, "try") != 0)
        return err_set(e, ERR_CONFIG,
                       "try: STARTTLS when the server offers it (the default); require: fail "
                       "without TLS",
                       "BACKUP_SMTP_TLS must be try or require");
    /* a password never crosses the network in clear: with one, TLS is required unless the
     * server is on this machine */
    nc->smtp_tls_for_password = pass && !loopback;
    nc->smtp_require_tls |= nc->smtp_tls_for_password;

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

/* Whether a path segment looks like a token (letters and digits mixed, or both cases), not a
 * word of a path ("slack_incoming", "backup-alerts"), which redacted would take that word out
 * of every notification. */
static bool token_like(const char *s, size_t n)
{
    bool digit = false, alpha = false, upper = false, lower = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        digit |= isdigit(c) != 0;
        alpha |= isalpha(c) != 0;
        upper |= isupper(c) != 0;
        lower |= islower(c) != 0;
    }
    return (digit && alpha) || (upper && lower);
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
    if (lazylib_load(LAZYLIB_CURL, e) != 0)
        return -1;
    /* "https:/host/..." (one slash) libcurl takes for "https://host/...": refused, as a
     * typo, before it is parsed (the path is found after the "://" below) */
    const char *sep = strstr(url, "://");
    if (!sep || strcspn(url, ":") != (size_t)(sep - url) || url_parse(url, &u) != 0)
        return err_set(e, ERR_CONFIG, "copy the URL Slack gave for the incoming webhook",
                       "BACKUP_SLACK_WEBHOOK_URL is not a valid URL");
    bool https = strcmp(u.scheme, "https") == 0, http = strcmp(u.scheme, "http") == 0;
    bool userinfo = u.userinfo, loopback = net_host_is_loopback(u.host);
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
    /* Its path alone (an error could name it without the host), and each segment of it of 12
     * characters or more: Slack's last one is the webhook's token, which a receiver's error
     * may echo alone ("invalid_token": "...") */
    const char *path = strchr(sep + 3, '/');
    if (path && strlen(path) > 1) {
        size_t plen = strcspn(path, "?#");
        add_secret(nc, path, strlen(path));
        add_secret(nc, path, plen);
        for (size_t i = 0; i < plen;) {
            size_t seg = strcspn(path + i, "/?#");
            if (seg >= SLACK_SEGMENT_MIN_LEN && token_like(path + i, seg))
                add_secret(nc, path + i, seg);
            i += seg + 1;
        }
    }
    nc->slack = true;
    return 0;
}

int notify_config_load(const struct config *c, struct notify_config *nc, struct err *e)
{
    memset(nc, 0, sizeof(*nc));
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
        int64_t hours;
        if (caris_duration_hours(aa, &hours, e) != 0) {
            char esc[64];
            str_escape(aa, strlen(aa), esc, sizeof(esc));
            err_set(e, ERR_CONFIG,
                    "a duration in weeks, days and hours, e.g. 26h, 2d, 1d12h (default 26h)",
                    "invalid BACKUP_ALERT_AFTER '%s'", esc);
            goto fail;
        }
        nc->alert_after_ms = hours * 3600 * 1000;
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
    /* libcurl only with a channel (loaded by load_email/load_slack then): a command without
     * notifications does not load it (caris/lazylib.h). Initialised here, before threads,
     * except for a daemon given its first channel by a reload (curl_global_init is thread
     * safe from libcurl 7.84; meson asks for 7.85) */
    if (notify_configured(nc))
        notify_curl_init();
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
    free(nc->smtp_ca_file);
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

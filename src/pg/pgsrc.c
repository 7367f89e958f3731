/* PostgreSQL connection targets, connections, metadata queries and client programs. */
#include "caris/pgsrc.h"
#include "caris/lazylib.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/op.h"

extern char **environ;

#define REDACTED "xxxxx"
#define PGSRC_PIPE_SIZE (1 << 20)

/* ---- connection targets ------------------------------------------------------------------- */

static void target_add(struct pgsrc_target *t, const char *key, const char *val)
{
    t->keys = xrealloc(t->keys, xsize(t->n + 1, sizeof(char *), 0));
    t->vals = xrealloc(t->vals, xsize(t->n + 1, sizeof(char *), 0));
    t->keys[t->n] = xstrdup(key);
    t->vals[t->n] = xstrdup(val);
    t->n++;
}

static void str_wipe_free(char *s)
{
    if (s) {
        cx_wipe(s, strlen(s));
        free(s);
    }
}

static bool has_uri_prefix(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

/* Appends n bytes to a growing string. */
static void sb_add(struct buf *b, const char *s, size_t n)
{
    buf_append(b, s, n);
}

static void sb_str(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

static char *sb_finish(struct buf *b)
{
    buf_append_u8(b, 0);
    return (char *)b->data;
}

/* Percent-decodes a query parameter name (for comparing it with "password"). */
static char *pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            out[k++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[k++] = s[i];
        }
    }
    out[k] = '\0';
    return out;
}

/* URI: the user info ends at the first '@' seen before any '/' (libpq's own rule), the
 * password is what follows its first ':'; query parameters named password are redacted. */
static char *redact_uri(const char *url)
{
    struct buf b = {0};
    const char *p = strstr(url, "://") + 3;
    sb_add(&b, url, (size_t)(p - url));
    const char *q = p;
    while (*q && *q != '@' && *q != '/')
        q++;
    if (*q == '@') {
        const char *colon = memchr(p, ':', (size_t)(q - p));
        if (colon) {
            sb_add(&b, p, (size_t)(colon - p) + 1);
            sb_str(&b, REDACTED);
        } else {
            sb_add(&b, p, (size_t)(q - p));
        }
        p = q;
    } else {
        /* no user info: a port that is not digits may be a password written without its
         * '@host' (postgresql://user:password): from that ':' to the authority's end, hidden */
        size_t alen = strcspn(p, "/?#");
        int depth = 0;
        for (size_t i = 0; i < alen; i++) {
            depth += p[i] == '[' ? 1 : p[i] == ']' ? -1 : 0;
            if (p[i] != ':' || depth > 0)
                continue;
            size_t seg = strcspn(p + i + 1, ",/?#");
            bool digits = true;
            for (size_t k = 0; k < seg; k++)
                digits = digits && isdigit((unsigned char)p[i + 1 + k]);
            if (!digits) {
                sb_add(&b, p, i + 1);
                sb_str(&b, REDACTED);
                p += alen;
                break;
            }
        }
    }
    const char *qm = strchr(p, '?');
    if (!qm) {
        sb_str(&b, p);
        return sb_finish(&b);
    }
    sb_add(&b, p, (size_t)(qm - p) + 1);
    p = qm + 1;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char *key = pct_decode(p, eq ? (size_t)(eq - p) : len);
        if (eq && strcmp(key, "password") == 0) {
            sb_add(&b, p, (size_t)(eq - p) + 1);
            sb_str(&b, REDACTED);
        } else {
            sb_add(&b, p, len);
        }
        free(key);
        p += len;
        if (*p == '&') {
            sb_add(&b, "&", 1);
            p++;
        }
    }
    return sb_finish(&b);
}

/* key = value pairs as libpq reads them: values single-quoted (with \ escapes) or bare
 * (up to white space, with \ escapes). */
static char *redact_kv(const char *s)
{
    struct buf b = {0};
    const char *p = s;
    while (*p) {
        const char *start = p;
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p) { /* trailing blanks: nothing malformed */
            sb_str(&b, start);
            break;
        }
        const char *k = p;
        while (*p && *p != '=' && !isspace((unsigned char)*p))
            p++;
        size_t klen = (size_t)(p - k);
        while (*p && isspace((unsigned char)*p))
            p++;
        bool word = klen > 0;
        for (size_t i = 0; i < klen; i++)
            word = word && (isalnum((unsigned char)k[i]) || k[i] == '_');
        if (*p != '=' || !word) {
            /* malformed (no "=", or a key that is no keyword): the rest may hold a password (a URI
             * of a scheme libpq does not take, "postgresql+psycopg2://user:pw@host/db", is read as
             * key=value): not copied */
            sb_add(&b, start, (size_t)(k - start));
            sb_str(&b, REDACTED);
            break;
        }
        p++;
        while (*p && isspace((unsigned char)*p))
            p++;
        const char *vstart = p;
        if (*p == '\'') {
            p++;
            while (*p && *p != '\'') {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
            if (*p == '\'')
                p++;
        } else {
            while (*p && !isspace((unsigned char)*p)) {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
        }
        if (klen == 8 && strncmp(k, "password", 8) == 0) {
            sb_add(&b, start, (size_t)(vstart - start));
            sb_str(&b, REDACTED);
        } else {
            sb_add(&b, start, (size_t)(p - start));
        }
    }
    return sb_finish(&b);
}

char *pgsrc_url_redact(const char *url)
{
    return has_uri_prefix(url) ? redact_uri(url) : redact_kv(url);
}

static void trim_msg(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r'))
        s[--n] = '\0';
    /* one line, runs of white space as one blank */
    char *w = s;
    for (char *p = s; *p; p++) {
        char ch = (*p == '\n' || *p == '\t' || *p == '\r') ? ' ' : *p;
        if (ch == ' ' && w > s && w[-1] == ' ')
            continue;
        *w++ = ch;
    }
    *w = '\0';
}

/* The length of a URI scheme and its "://" at the start of s ("jdbc:postgresql://" counts
 * whole), 0 when s does not start with one. */
static size_t uri_scheme_len(const char *s)
{
    size_t n = 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '+' || s[n] == '-' || s[n] == '.' ||
           (s[n] == ':' && strncmp(s + n, "://", 3) != 0))
        n++;
    return n && strncmp(s + n, "://", 3) == 0 ? n + 3 : 0;
}

/* libpq's parse error may quote the token it stumbled on, which can be the password: the
 * message shown is the one for the redacted URL, and a URI of another scheme (which libpq
 * reads as key=value text) is named by its scheme alone. */
static int parse_error(const char *url, const char *label, struct err *e)
{
    size_t scheme = uri_scheme_len(url);
    if (scheme && !has_uri_prefix(url))
        return err_set(e, ERR_CONFIG,
                       "use a libpq URI (postgresql://user:password@host:port/database) or a "
                       "key=value string (host=... dbname=...)",
                       "%s is invalid: a URI of scheme '%.*s' (only postgresql:// and "
                       "postgres:// are PostgreSQL connection URIs)",
                       label, (int)(scheme > 40 ? 40 : scheme - 3), url);
    if (!strchr(url, '='))
        return err_set(e, ERR_CONFIG,
                       "use a libpq URI (postgresql://user:password@host:port/database) or a "
                       "key=value string (host=... dbname=...)",
                       "%s is invalid: neither a postgresql:// URI nor key=value text", label);
    char *red = pgsrc_url_redact(url);
    char *msg = NULL;
    PQconninfoOption *o = PQconninfoParse(red, &msg);
    free(red);
    if (o) {
        PQconninfoFree(o);
        return err_set(e, ERR_CONFIG,
                       "percent-encode special characters in a URI password (%40 for @, %3A "
                       "for :, %2F for /, %25 for %), or use key=value syntax",
                       "%s is invalid: malformed password", label);
    }
    char m[512];
    snprintf(m, sizeof(m), "%s", msg ? msg : "cannot parse");
    PQfreemem(msg);
    trim_msg(m);
    return err_set(e, ERR_CONFIG,
                   "use a libpq URI (postgresql://user:password@host:port/database) or a "
                   "key=value string (host=... dbname=...)",
                   "%s is invalid: %s", label, m);
}

/* A URI whose user or password holds an '@' or a '/' unencoded: libpq splits it at the first
 * of them and takes a piece of the password for the host, the port or the database, which its
 * messages (and ours, "cannot connect to ... at host H port P") would then show. Refused
 * before it is parsed, naming nothing of it. */
static bool uri_userinfo_broken(const char *url)
{
    if (!has_uri_prefix(url))
        return false;
    const char *a = strstr(url, "://") + 3;
    size_t alen = strcspn(a, "/?#");
    const char *at = memchr(a, '@', alen);
    if (at && memchr(at + 1, '@', alen - (size_t)(at + 1 - a)))
        return true; /* two '@' in the authority: one was the password's */
    if (a[alen] == '/') {
        /* an '@' in the database path: the authority ended at a '/' of the user or password
         * (a database name with an '@' is written %40 too) */
        const char *path = a + alen;
        size_t plen = strcspn(path, "?#");
        if (memchr(path, '@', plen))
            return true;
    }
    return false;
}

/* Whether a port option is what libpq takes: digits, one port or a comma-separated list. Text
 * that is not (postgresql://user:password with no @host reads as host "user", port
 * "password") must never be quoted: it may be a password. */
static bool port_ok(const char *v)
{
    for (const char *p = v; *p; p++)
        if (!isdigit((unsigned char)*p) && *p != ',')
            return false;
    return true;
}

/* Drops a parse the caller refuses: every value wiped (a password may be among them), the
 * options freed, the target emptied (its label kept for the message). */
static void parse_drop(PQconninfoOption *opts, struct pgsrc_target *t)
{
    for (PQconninfoOption *w = opts; w->keyword; w++)
        if (w->val)
            cx_wipe(w->val, strlen(w->val));
    PQconninfoFree(opts);
    const char *what = t->label;
    pgsrc_target_free(t);
    t->label = what;
}

int pgsrc_target_parse(const char *url, const char *fallback_password, const char *label,
                       struct pgsrc_target *t, struct err *e)
{
    memset(t, 0, sizeof(*t));
    t->label = label ? label : "POSTGRES_URL";
    if (lazylib_load(LAZYLIB_PQ, e) != 0)
        return -1;
    if (!url || !*url)
        return err_set(e, ERR_CONFIG,
                       "set it in the environment or .env.local, e.g. "
                       "postgresql://user:password@host:5432/database",
                       "%s not set", t->label);
    if (uri_userinfo_broken(url))
        return err_set(e, ERR_CONFIG,
                       "percent-encode those characters in the user name and password (@ as %40, "
                       "/ as %2F, : as %3A), or use key=value text (host=... password=...)",
                       "%s is invalid: its user name or password holds an '@' or a '/', which "
                       "ends that part of a URI",
                       t->label);
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &msg);
    if (!opts) {
        PQfreemem(msg);
        return parse_error(url, t->label, e);
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        /* a client key's passphrase: libpq reads it from the connection string only, which
         * pg_dump and pg_restore would show in their argv (the process list) */
        if (strcmp(o->keyword, "sslpassword") == 0 && *o->val) {
            parse_drop(opts, t);
            return err_set(e, ERR_CONFIG,
                           "use a client key without a passphrase (a file of mode 0600 owned by "
                           "the user caris-backup runs as, named by sslkey=)",
                           "%s sets sslpassword: the passphrase would appear in the process list "
                           "of pg_dump and pg_restore",
                           t->label);
        }
        if (strcmp(o->keyword, "port") == 0 && !port_ok(o->val)) {
            parse_drop(opts, t);
            return err_set(e, ERR_CONFIG,
                           "write it as postgresql://user:password@host:5432/database: without "
                           "'@host', the text after 'user:' is read as the port",
                           "%s is invalid: its port is not a number", t->label);
        }
        if (strcmp(o->keyword, "password") == 0) {
            if (*o->val)
                t->password = xstrdup(o->val);
            cx_wipe(o->val, strlen(o->val));
            continue;
        }
        target_add(t, o->keyword, o->val);
    }
    PQconninfoFree(opts);
    if (!t->password && fallback_password && *fallback_password)
        t->password = xstrdup(fallback_password);
    return 0;
}

void pgsrc_target_free(struct pgsrc_target *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->keys[i]);
        free(t->vals[i]);
    }
    free(t->keys);
    free(t->vals);
    str_wipe_free(t->password);
    memset(t, 0, sizeof(*t));
}

void pgsrc_target_copy(const struct pgsrc_target *src, struct pgsrc_target *dst)
{
    memset(dst, 0, sizeof(*dst));
    for (size_t i = 0; i < src->n; i++)
        target_add(dst, src->keys[i], src->vals[i]);
    dst->password = src->password ? xstrdup(src->password) : NULL;
    dst->label = src->label;
}

const char *pgsrc_target_get(const struct pgsrc_target *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->keys[i], key) == 0)
            return t->vals[i];
    return NULL;
}

void pgsrc_target_set(struct pgsrc_target *t, const char *key, const char *val)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->keys[i], key) != 0)
            continue;
        free(t->vals[i]);
        if (val) {
            t->vals[i] = xstrdup(val);
        } else {
            free(t->keys[i]);
            t->keys[i] = t->keys[t->n - 1];
            t->vals[i] = t->vals[t->n - 1];
            t->n--;
        }
        return;
    }
    if (val)
        target_add(t, key, val);
}

int pgsrc_url_has_password(const char *url)
{
    struct err le = ERR_INIT;
    if (lazylib_load(LAZYLIB_PQ, &le) != 0)
        return -1; /* the caller's pgsrc_target_parse says why */
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &msg);
    PQfreemem(msg);
    if (!opts)
        return -1;
    int has = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if ((strcmp(o->keyword, "password") == 0 || strcmp(o->keyword, "sslpassword") == 0) &&
            o->val) {
            has = has || *o->val != '\0';
            cx_wipe(o->val, strlen(o->val));
        }
        /* user:password with no @host: libpq reads the password as the port */
        if (strcmp(o->keyword, "port") == 0 && o->val && !port_ok(o->val)) {
            has = 1;
            cx_wipe(o->val, strlen(o->val));
        }
    }
    PQconninfoFree(opts);
    return has;
}

static void append_quoted(struct buf *b, const char *v)
{
    sb_add(b, "'", 1);
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '\'')
            sb_add(b, "\\", 1);
        sb_add(b, p, 1);
    }
    sb_add(b, "'", 1);
}

char *pgsrc_target_conninfo(const struct pgsrc_target *t, const char *dbname)
{
    struct buf b = {0};
    for (size_t i = 0; i < t->n; i++) {
        if (dbname && strcmp(t->keys[i], "dbname") == 0)
            continue;
        if (b.len)
            sb_add(&b, " ", 1);
        sb_str(&b, t->keys[i]);
        sb_add(&b, "=", 1);
        append_quoted(&b, t->vals[i]);
    }
    if (dbname) {
        if (b.len)
            sb_add(&b, " ", 1);
        sb_str(&b, "dbname=");
        append_quoted(&b, dbname);
    }
    return sb_finish(&b);
}

/* The value libpq will use: the string's, else its defaults (environment, compiled in). */
static void resolve(const struct pgsrc_target *t, const char *key, char *out, size_t n)
{
    const char *v = pgsrc_target_get(t, key);
    if (v && *v) {
        snprintf(out, n, "%s", v);
        return;
    }
    out[0] = '\0';
    PQconninfoOption *d = PQconndefaults();
    for (PQconninfoOption *o = d; o && o->keyword; o++)
        if (strcmp(o->keyword, key) == 0 && o->val && *o->val)
            snprintf(out, n, "%s", o->val);
    PQconninfoFree(d);
}

void pgsrc_target_host(const struct pgsrc_target *t, char *out, size_t n)
{
    resolve(t, "host", out, n);
    if (!*out)
        resolve(t, "hostaddr", out, n);
    if (!*out)
        snprintf(out, n, "local socket");
}

void pgsrc_target_port(const struct pgsrc_target *t, char *out, size_t n)
{
    resolve(t, "port", out, n);
    if (!*out)
        snprintf(out, n, "5432");
}

void pgsrc_target_user(const struct pgsrc_target *t, char *out, size_t n)
{
    resolve(t, "user", out, n);
}

void pgsrc_target_user_shown(const struct pgsrc_target *t, char *out, size_t n)
{
    pgsrc_target_user(t, out, n);
    char *colon = strchr(out, ':');
    if (colon && colon[1]) {
        cx_wipe(colon + 1, strlen(colon + 1)); /* no byte of it left after the NUL */
        snprintf(colon + 1, n - (size_t)(colon + 1 - out), "(redacted)");
    }
}

/* Every occurrence of from in text (room for n bytes) replaced by to (what then does not fit
 * is cut). */
static void replace_in(char *text, size_t n, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    if (!fl)
        return;
    bool cut = strlen(text) + 1 >= n; /* it may have been cut to fit before it came here */
    for (char *p = strstr(text, from); p; p = strstr(p, from)) {
        size_t at = (size_t)(p - text), tail = strlen(p + fl);
        if (at + tl + 1 > n) {
            *p = '\0';
            return;
        }
        if (at + tl + tail + 1 > n) {
            tail = n - at - tl - 1;
            cut = true;
        }
        memmove(p + tl, p + fl, tail);
        memcpy(p, to, tl);
        p[tl + tail] = '\0';
        p += tl;
    }
    /* a text cut (above, or before it came here) inside a later occurrence ends in from's
     * first bytes, which no whole match finds: cut there, when those bytes reach past the
     * ':' (what follows it is the hidden part; a name ending like the user's first part is
     * no secret) */
    const char *colon = strchr(from, ':');
    size_t first = colon ? (size_t)(colon - from) + 2 : 4;
    size_t len = strlen(text);
    for (size_t k = fl - 1 < len ? fl - 1 : len; cut && k >= first && k >= 4; k--)
        if (memcmp(text + len - k, from, k) == 0) {
            cx_wipe(text + len - k, k);
            break;
        }
}

void pgsrc_target_dbname(const struct pgsrc_target *t, char *out, size_t n)
{
    resolve(t, "dbname", out, n);
    if (!*out)
        pgsrc_target_user(t, out, n);
}

void pgsrc_target_dbname_shown(const struct pgsrc_target *t, char *out, size_t n)
{
    pgsrc_target_dbname(t, out, n);
    char raw[256], shown[256];
    pgsrc_target_user(t, raw, sizeof(raw));
    pgsrc_target_user_shown(t, shown, sizeof(shown));
    if (strcmp(raw, shown) != 0) /* the user name is the database's by default */
        replace_in(out, n, raw, shown);
    cx_wipe(raw, sizeof(raw));
}

void pgsrc_target_describe(const struct pgsrc_target *t, char *out, size_t n)
{
    char h[256], p[64], d[256], u[256];
    pgsrc_target_host(t, h, sizeof(h));
    pgsrc_target_port(t, p, sizeof(p));
    pgsrc_target_dbname_shown(t, d, sizeof(d));
    pgsrc_target_user_shown(t, u, sizeof(u));
    snprintf(out, n, "host %s port %s database %s user %s", h, p, d, u);
}

json_t *pgsrc_target_json(const struct pgsrc_target *t)
{
    char h[256], p[64], d[256];
    pgsrc_target_host(t, h, sizeof(h));
    pgsrc_target_port(t, p, sizeof(p));
    pgsrc_target_dbname_shown(t, d, sizeof(d));
    return json_pack("{s:s, s:s, s:s}", "host", h, "port", p, "database", d);
}

bool pgsrc_target_same_login(const struct pgsrc_target *a, const struct pgsrc_target *b)
{
    /* Each of what decides where libpq connects and as whom, on its own: host and hostaddr
     * (libpq connects to hostaddr, and names host only for TLS and the password file), port,
     * a service (whose file may set any of them) and user. */
    static const char *const keys[] = {"host", "hostaddr", "port", "service", "user"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char x[256], y[256];
        resolve(a, keys[i], x, sizeof(x));
        resolve(b, keys[i], y, sizeof(y));
        if (strcmp(keys[i], "port") == 0) {
            pgsrc_target_port(a, x, sizeof(x));
            pgsrc_target_port(b, y, sizeof(y));
        }
        if (strcmp(x, y) != 0)
            return false;
    }
    return true;
}

/* ---- connections ---------------------------------------------------------------------------- */

/* NULL-terminated keyword and value arrays for libpq; values borrowed from t. */
struct kv {
    const char **k, **v;
};

static void kv_build(const struct pgsrc_target *t, const char *dbname, struct kv *kv)
{
    size_t cap = t->n + 6;
    kv->k = xcalloc(cap, sizeof(char *));
    kv->v = xcalloc(cap, sizeof(char *));
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++) {
        if ((dbname && strcmp(t->keys[i], "dbname") == 0) ||
            strcmp(t->keys[i], "client_encoding") == 0)
            continue;
        kv->k[n] = t->keys[i];
        kv->v[n++] = t->vals[i];
    }
    if (dbname) {
        kv->k[n] = "dbname";
        kv->v[n++] = dbname;
    }
    if (t->password) {
        kv->k[n] = "password";
        kv->v[n++] = t->password;
    }
    kv->k[n] = "client_encoding";
    kv->v[n++] = "UTF8";
    kv->k[n] = "fallback_application_name";
    kv->v[n++] = "caris-backup";
    if (!pgsrc_target_get(t, "connect_timeout")) {
        kv->k[n] = "connect_timeout";
        kv->v[n++] = "30";
    }
}

static void kv_free(struct kv *kv)
{
    free(kv->k);
    free(kv->v);
}

static bool contains(const char *s, const char *needle)
{
    return strstr(s, needle) != NULL;
}

/* The words of pgsrc_connect's refusals for good, which pgsrc_connect_refused knows them by. */
#define REFUSED_AUTH "authentication failed for user "
#define REFUSED_DB " does not exist at host "

PGconn *pgsrc_connect(const struct pgsrc_target *t, const char *dbname, struct err *e)
{
    if (lazylib_load(LAZYLIB_PQ, e) != 0)
        return NULL;
    struct kv kv;
    kv_build(t, dbname, &kv);
    PGconn *c = PQconnectdbParams(kv.k, kv.v, 0);
    if (!c) {
        kv_free(&kv);
        err_set(e, ERR_DATABASE, NULL, "cannot connect to PostgreSQL: out of memory");
        return NULL;
    }
    if (PQstatus(c) == CONNECTION_OK) {
        kv_free(&kv);
        /* An empty search_path, as pg_dump sets for its own session: the role's or the
         * database's search_path (which a database's owner may set) could put a schema of
         * theirs before pg_catalog, and a count() or an operator of that schema would run in
         * our session, as our role (often a superuser). Every name we use is qualified or in
         * pg_catalog, searched first whatever the path. (A replication connection runs no
         * SQL.) */
        if (!pgsrc_target_get(t, "replication") &&
            pgsrc_exec(c, "SELECT pg_catalog.set_config('search_path', '', false)", e) != 0) {
            PQfinish(c);
            return NULL;
        }
        return c;
    }
    char msg[700], host[256], port[64], db[256], user[256];
    snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
    trim_msg(msg);
    pgsrc_target_host(t, host, sizeof(host));
    pgsrc_target_port(t, port, sizeof(port));
    if (dbname)
        snprintf(db, sizeof(db), "%s", dbname);
    else
        pgsrc_target_dbname(t, db, sizeof(db));
    char raw[256];
    pgsrc_target_user(t, raw, sizeof(raw));
    pgsrc_target_user_shown(t, user, sizeof(user));
    if (strcmp(raw, user) != 0) { /* the server's message quotes the user name, and the
                                     database's is the user's by default */
        replace_in(msg, sizeof(msg), raw, user);
        replace_in(db, sizeof(db), raw, user);
    }
    cx_wipe(raw, sizeof(raw));
    bool needs_pw = PQconnectionNeedsPassword(c) && !t->password;
    PQfinish(c);
    /* Whether the server answers at all tells "down" from "refused us". */
    PGPing ping = PQpingParams(kv.k, kv.v, 0);
    kv_free(&kv);
    char hint[400];
    if (ping == PQPING_NO_RESPONSE) {
        snprintf(hint, sizeof(hint),
                 "check that PostgreSQL is running and accepts connections at host %s port %s "
                 "(%s)",
                 host, port, t->label);
        err_set(e, ERR_DATABASE, hint,
                "cannot connect to PostgreSQL at host %s port %s: server not reachable (%s)", host,
                port, msg);
    } else if (ping == PQPING_NO_ATTEMPT) {
        err_set(e, ERR_CONFIG, "check the connection parameters",
                "invalid connection parameters in %s: %s", t->label, msg);
    } else if (needs_pw) {
        /* a restore target's password never goes on the command line (--target-url refuses
         * one: ps shows it): its URL with the password goes into CARIS_RESTORE_TARGET_URL */
        if (strcmp(t->label, "the target URL") == 0)
            snprintf(hint, sizeof(hint),
                     "put the target's URL with its password in the environment variable "
                     "CARIS_RESTORE_TARGET_URL (postgresql://user:password@host/database; not "
                     "--target-url, which every user sees in the process list), or the "
                     "password alone in PGPASSWORD");
        else
            snprintf(hint, sizeof(hint),
                     "put the password in %s (postgresql://user:password@host/database) or in "
                     "PGPASSWORD",
                     t->label);
        err_set(e, ERR_DATABASE, hint,
                REFUSED_AUTH "%s at host %s port %s database %s: the server "
                             "asks for a password and none was given",
                user, host, port, db);
    } else if (contains(msg, "authentication failed") || contains(msg, "no pg_hba.conf entry") ||
               (contains(msg, "role \"") && contains(msg, "does not exist"))) {
        snprintf(hint, sizeof(hint),
                 "check the user name and password in %s (or PGPASSWORD), and that the "
                 "server's pg_hba.conf lets this user connect from here",
                 t->label);
        err_set(e, ERR_DATABASE, hint, REFUSED_AUTH "%s at host %s port %s database %s (%s)", user,
                host, port, db, msg);
    } else if (contains(msg, "database \"") && contains(msg, "does not exist")) {
        snprintf(hint, sizeof(hint), "create the database, or correct the database name in %s",
                 t->label);
        err_set(e, ERR_DATABASE, hint, "database %s" REFUSED_DB "%s port %s", db, host, port);
    } else if (ping == PQPING_REJECT) {
        err_set(e, ERR_DATABASE,
                "the server may be starting up, shutting down or in recovery: retry later",
                "PostgreSQL at host %s port %s rejects connections (%s)", host, port, msg);
    } else {
        err_set(e, ERR_DATABASE, NULL, "cannot connect to database %s at host %s port %s: %s", db,
                host, port, msg);
    }
    return NULL;
}

static int result_error(PGconn *c, PGresult *res, struct err *e)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *hint = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_HINT) : NULL;
    char msg[600];
    snprintf(msg, sizeof(msg), "%s", primary ? primary : PQerrorMessage(c));
    trim_msg(msg);
    return err_set(e, ERR_DATABASE, hint, "query failed on database %s at host %s port %s: %s",
                   PQdb(c), PQhost(c), PQport(c), msg);
}

int pgsrc_exec(PGconn *c, const char *sql, struct err *e)
{
    /* the extended protocol runs one command only: a string with a second one is refused */
    PGresult *res = PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = result_error(c, res, e);
    PQclear(res);
    return rc;
}

bool pgsrc_connect_refused(const struct err *e)
{
    return e->code == ERR_CONFIG || strncmp(e->msg, REFUSED_AUTH, strlen(REFUSED_AUTH)) == 0 ||
           strstr(e->msg, REFUSED_DB) != NULL;
}

PGresult *pgsrc_query(PGconn *c, const char *sql, int nparams, const char *const *params,
                      struct err *e)
{
    PGresult *res = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        result_error(c, res, e);
        PQclear(res);
        return NULL;
    }
    return res;
}

char *pgsrc_qualified_name(PGconn *c, const char *schema, const char *name, struct err *e)
{
    char *s = PQescapeIdentifier(c, schema, strlen(schema));
    char *n = s ? PQescapeIdentifier(c, name, strlen(name)) : NULL;
    if (!s || !n) {
        PQfreemem(s);
        char msg[300];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
        trim_msg(msg);
        err_set(e, ERR_DATABASE, NULL, "cannot quote the name of table %s.%s: %s", schema, name,
                msg);
        return NULL;
    }
    char *q = xasprintf("%s.%s", s, n);
    PQfreemem(s);
    PQfreemem(n);
    return q;
}

static void copy_field(PGresult *res, int row, int col, char *out, size_t n)
{
    snprintf(out, n, "%s", PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));
}

/* What follows PGSRC_RESTORE_MARK in comment v (NULL: none) into out ("" when it is not a
 * mark), escaped: the comment is the database owner's to write, and goes into messages and a
 * backup's summary (JSON: a byte that is not UTF-8 lost the whole warning). */
static void mark_of(const char *v, char *out, size_t n)
{
    out[0] = '\0';
    size_t pl = strlen(PGSRC_RESTORE_MARK);
    if (v && strncmp(v, PGSRC_RESTORE_MARK, pl) == 0)
        str_escape(v + pl, strlen(v + pl), out, n);
}

int pgsrc_server_info(PGconn *c, struct pgsrc_info *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    PGresult *res = pgsrc_query(
        c,
        "SELECT current_setting('server_version'), current_setting('server_version_num'), "
        "current_database(), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, "
        "pg_database_size(d.oid), shobj_description(d.oid, 'pg_database') FROM pg_database d "
        "WHERE d.datname = current_database()",
        0, NULL, e);
    if (!res)
        return -1;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return err_set(e, ERR_DATABASE, NULL, "cannot read the database's metadata");
    }
    copy_field(res, 0, 0, out->version, sizeof(out->version));
    out->version[strcspn(out->version, " ")] = '\0'; /* "15.8 (Debian 15.8-1)" */
    out->version_num = atoi(PQgetvalue(res, 0, 1));
    copy_field(res, 0, 2, out->database, sizeof(out->database));
    /* The name the connection gave, which is datname's bytes: current_database() comes back
     * converted from the database's encoding, though datname (of a shared catalog) is not in
     * it. A non-ASCII name of a LATIN1 database came back mangled ("sessÃµes" for
     * "sessões"), and pg_dump, given it, found no such database. */
    const char *db = PQdb(c);
    if (db && *db && strlen(db) < sizeof(out->database) && str_is_utf8(db, strlen(db)))
        snprintf(out->database, sizeof(out->database), "%s", db);
    copy_field(res, 0, 3, out->encoding, sizeof(out->encoding));
    copy_field(res, 0, 4, out->collate, sizeof(out->collate));
    copy_field(res, 0, 5, out->ctype, sizeof(out->ctype));
    out->database_size = strtoll(PQgetvalue(res, 0, 6), NULL, 10);
    mark_of(PQgetisnull(res, 0, 7) ? NULL : PQgetvalue(res, 0, 7), out->restore_mark,
            sizeof(out->restore_mark));
    PQclear(res);
    return 0;
}

int pgsrc_db_comment(PGconn *c, const char *name, char **text)
{
    *text = NULL;
    const char *params[] = {name};
    struct err ie = ERR_INIT;
    PGresult *res = pgsrc_query(c,
                                "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                "WHERE datname = $1",
                                1, params, &ie);
    if (!res || PQntuples(res) != 1) {
        PQclear(res);
        return -1;
    }
    if (!PQgetisnull(res, 0, 0))
        *text = xstrdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

void pgsrc_restore_mark(PGconn *c, const char *name, char *out, size_t n)
{
    char *text;
    pgsrc_db_comment(c, name, &text);
    mark_of(text, out, n);
    free(text);
}

int pgsrc_snapshot_begin(PGconn *c, char **snapshot_id, struct err *e)
{
    *snapshot_id = NULL;
    if (pgsrc_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", e) != 0)
        return -1;
    PGresult *res = pgsrc_query(c, "SELECT pg_export_snapshot()", 0, NULL, e);
    if (!res)
        return -1;
    *snapshot_id = xstrdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

/* Schemas that belong to the system, never to a backup. */
#define USER_SCHEMA(n)                                                                             \
    n ".nspname NOT IN ('pg_catalog', 'information_schema') AND " n ".nspname !~ '^pg_toast' "     \
      "AND " n ".nspname !~ '^pg_temp_'"
#define NOT_EXTENSION_MEMBER(oid)                                                                  \
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND "            \
    "d.objid = " oid " AND d.deptype = 'e')"

json_t *pgsrc_list_tables(PGconn *c, struct err *e)
{
    static const char sql[] =
        "SELECT n.nspname, c.relname, has_table_privilege(c.oid, 'SELECT'), c.relhassubclass, "
        "c.relpersistence = 'u' AND pg_is_in_recovery() "
        "FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND " USER_SCHEMA(
            "n") " AND " NOT_EXTENSION_MEMBER("c.oid") " ORDER BY n.nspname COLLATE \"C\", "
                                                       "c.relname COLLATE \"C\"";
    PGresult *res = pgsrc_query(c, sql, 0, NULL, e);
    if (!res)
        return NULL;
    json_t *out = json_array();
    char denied[400] = "";
    size_t dlen = 0, ndenied = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *schema = PQgetvalue(res, i, 0), *name = PQgetvalue(res, i, 1);
        if (strcmp(PQgetvalue(res, i, 2), "t") != 0) {
            if (dlen + strlen(schema) + strlen(name) + 8 < sizeof(denied))
                dlen += (size_t)snprintf(denied + dlen, sizeof(denied) - dlen, "%s%s.%s",
                                         ndenied ? ", " : "", schema, name);
            ndenied++;
        }
        json_t *t = json_pack("{s:s, s:s}", "schema", schema, "name", name);
        if (strcmp(PQgetvalue(res, i, 3), "t") == 0)
            json_object_set_new(t, "_parent", json_true());
        if (strcmp(PQgetvalue(res, i, 4), "t") == 0)
            json_object_set_new(t, "_nodata", json_true());
        json_array_append_new(out, t);
    }
    if (ndenied) {
        err_set(e, ERR_DATABASE,
                "run the backup as the owner of these tables or a superuser, or GRANT SELECT "
                "on them (PostgreSQL 14 and later: GRANT pg_read_all_data TO the user)",
                "user %s may not read %zu table(s) of database %s: %s%s", PQuser(c), ndenied,
                PQdb(c), denied, dlen + 8 >= sizeof(denied) ? ", ..." : "");
        json_decref(out);
        out = NULL;
    }
    PQclear(res);
    return out;
}

json_t *pgsrc_list_roles(PGconn *c, struct err *e)
{
    PGresult *res = pgsrc_query(
        c,
        "SELECT r.rolname FROM pg_roles r WHERE r.oid IN ("
        " SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE " USER_SCHEMA(
            "n") " UNION"
                 " SELECT n.nspowner FROM pg_namespace n WHERE " USER_SCHEMA(
                     "n") " UNION"
                          " SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = "
                          "p.pronamespace"
                          "  WHERE " USER_SCHEMA(
                              "n") " UNION"
                                   " SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid "
                                   "= t.typnamespace"
                                   "  WHERE " USER_SCHEMA(
                                       "n") " UNION"
                                            " SELECT lomowner FROM pg_largeobject_metadata UNION"
                                            " SELECT (aclexplode(c.relacl)).grantee FROM pg_class "
                                            "c JOIN pg_namespace n"
                                            "  ON n.oid = c.relnamespace WHERE c.relacl IS NOT "
                                            "NULL AND " USER_SCHEMA(
                                                "n") " UNION"
                                                     " SELECT (aclexplode(n.nspacl)).grantee FROM "
                                                     "pg_namespace n"
                                                     "  WHERE n.nspacl IS NOT NULL "
                                                     "AND " USER_SCHEMA(
                                                         "n") " UNION"
                                                              " SELECT "
                                                              "(aclexplode(p.proacl)).grantee FROM "
                                                              "pg_proc p JOIN pg_namespace n"
                                                              "  ON n.oid = p.pronamespace WHERE "
                                                              "p.proacl IS NOT NULL "
                                                              "AND " USER_SCHEMA(
                                                                  "n") " UNION"
                                                                       " SELECT defaclrole FROM "
                                                                       "pg_default_acl UNION"
                                                                       " SELECT "
                                                                       "(aclexplode(defaclacl))."
                                                                       "grantee FROM pg_default_acl"
                                                                       ") ORDER BY 1",
        0, NULL, e);
    if (!res)
        return NULL;
    json_t *out = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(out, json_string(PQgetvalue(res, i, 0)));
    PQclear(res);
    return out;
}

/* The quoted schema.name of a table of pgsrc_list_tables (malloc'd), or NULL. */
static char *table_qname(PGconn *c, json_t *t, struct err *e)
{
    return pgsrc_qualified_name(c, json_string_value(json_object_get(t, "schema")),
                                json_string_value(json_object_get(t, "name")), e);
}

/* Appends "LOCK TABLE ONLY a, b IN ACCESS SHARE MODE; " for the tables of lock. */
static int lock_text(PGconn *c, json_t *lock, struct buf *b, struct err *e)
{
    size_t i;
    json_t *t;
    json_array_foreach(lock, i, t)
    {
        char *q = table_qname(c, t, e);
        if (!q)
            return -1;
        sb_str(b, i ? ", ONLY " : "LOCK TABLE ONLY ");
        sb_str(b, q);
        free(q);
    }
    if (json_array_size(lock))
        sb_str(b, " IN ACCESS SHARE MODE; ");
    return 0;
}

int pgsrc_count_rows_send(PGconn *c, json_t *tables, json_t *lock, struct err *e)
{
    if (!json_array_size(tables) && !json_array_size(lock))
        return 0;
    /* A failing count must not end the transaction: its snapshot may not have been imported
     * by pg_dump yet. */
    if (pgsrc_exec(c, "SAVEPOINT caris_counts", e) != 0)
        return -1;
    struct buf b = {0};
    if (lock_text(c, lock, &b, e) != 0) {
        buf_free(&b);
        return -1;
    }
    size_t i;
    json_t *t;
    json_array_foreach(tables, i, t)
    {
        char *q = table_qname(c, t, e);
        if (!q) {
            buf_free(&b);
            return -1;
        }
        char *part =
            xasprintf("%sSELECT %zu::int8, count(*) FROM %s", i ? " UNION ALL " : "", i, q);
        sb_str(&b, part);
        free(part);
        free(q);
    }
    char *sql = sb_finish(&b);
    int ok = PQsendQuery(c, sql);
    free(sql);
    if (!ok)
        return result_error(c, NULL, e);
    return 0;
}

json_t *pgsrc_rewritten_tables(PGconn *c, struct err *e)
{
    /* pg_class read under the transaction's snapshot gives the storage the snapshot sees;
     * pg_relation_filenode() looks through the catalog cache, which the lock brought up to
     * date: the storage there is now. The tables of pgsrc_list_tables alone (those locked):
     * a materialized view cannot be locked, and its refresh during the backup loses nothing
     * (the dump holds a REFRESH, not rows); nor are extensions' tables listed. */
    PGresult *res =
        pgsrc_query(c,
                    "SELECT n.nspname, c.relname FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'"
                    " AND c.relfilenode <> 0 AND " USER_SCHEMA("n") " AND " NOT_EXTENSION_MEMBER(
                        "c.oid") " AND c.relfilenode IS DISTINCT FROM pg_relation_filenode(c.oid)"
                                 " ORDER BY 1, 2",
                    0, NULL, e);
    if (!res)
        return NULL;
    json_t *out = json_array();
    for (int i = 0; i < PQntuples(res); i++)
        json_array_append_new(out, json_pack("{s:s, s:s}", "schema", PQgetvalue(res, i, 0), "name",
                                             PQgetvalue(res, i, 1)));
    PQclear(res);
    return out;
}

int pgsrc_count_rows_collect(PGconn *c, json_t *tables, const char *key, struct err *e)
{
    int rc = 0;
    bool got = false;
    PGresult *res;
    while ((res = PQgetResult(c)) != NULL) {           /* nothing when nothing was sent */
        if (PQresultStatus(res) == PGRES_COMMAND_OK) { /* the LOCK */
            PQclear(res);
            continue;
        }
        if (rc == 0 && PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = result_error(c, res, e);
        } else if (rc == 0) {
            got = true;
            for (int r = 0; r < PQntuples(res); r++) {
                size_t idx = (size_t)strtoull(PQgetvalue(res, r, 0), NULL, 10);
                json_t *t = json_array_get(tables, idx);
                if (t)
                    json_object_set_new(t, key,
                                        json_integer(strtoll(PQgetvalue(res, r, 1), NULL, 10)));
            }
        }
        PQclear(res);
    }
    if (rc == 0 && !got && json_array_size(tables))
        rc = err_set(e, ERR_DATABASE, NULL, "row count query returned no result");
    return rc;
}

int pgsrc_count_rows_each(PGconn *c, json_t *tables, const char *key, struct err *e)
{
    size_t i;
    json_t *t;
    json_array_foreach(tables, i, t)
    {
        char *q = table_qname(c, t, e);
        if (!q)
            return -1;
        char *sql = xasprintf("SELECT count(*) FROM %s%s",
                              json_is_true(json_object_get(t, "only")) ? "ONLY " : "", q);
        free(q);
        PGresult *res = PQexec(c, sql);
        free(sql);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
            json_object_set_new(t, key, json_integer(strtoll(PQgetvalue(res, 0, 0), NULL, 10)));
        else
            json_object_set_new(t, key, json_null());
        PQclear(res);
        if (PQstatus(c) != CONNECTION_OK)
            return result_error(c, NULL, e);
    }
    return 0;
}

int64_t pgsrc_count_relations(PGconn *c, struct err *e)
{
    PGresult *res =
        pgsrc_query(c,
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND " USER_SCHEMA(
                        "n") " AND " NOT_EXTENSION_MEMBER("c.oid"),
                    0, NULL, e);
    if (!res)
        return -1;
    int64_t n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

/* ---- the WAL archiver ------------------------------------------------------------------ */

int pgsrc_archiver(PGconn *c, struct pgsrc_archiver *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    PGresult *res = pgsrc_query(
        c,
        "SELECT current_setting('archive_mode') <> 'off', archived_count, failed_count, "
        "coalesce(last_archived_wal, ''), coalesce(last_failed_wal, ''), "
        "coalesce((extract(epoch FROM last_archived_time) * 1000)::bigint, 0), "
        "coalesce((extract(epoch FROM last_failed_time) * 1000)::bigint, 0), "
        "(extract(epoch FROM now()) * 1000)::bigint, "
        "coalesce(current_setting('archive_command', true), '') = '' AND "
        "coalesce(current_setting('archive_library', true), '') = '' FROM pg_stat_archiver",
        0, NULL, e);
    if (!res)
        return -1;
    if (PQntuples(res) != 1 || PQnfields(res) != 9) {
        PQclear(res);
        return err_set(e, ERR_DATABASE, NULL, "pg_stat_archiver: unexpected answer");
    }
    out->archive_mode = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    out->archived_count = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    out->failed_count = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    snprintf(out->last_archived_wal, sizeof(out->last_archived_wal), "%s", PQgetvalue(res, 0, 3));
    snprintf(out->last_failed_wal, sizeof(out->last_failed_wal), "%s", PQgetvalue(res, 0, 4));
    out->last_archived_ns = strtoll(PQgetvalue(res, 0, 5), NULL, 10) * 1000000;
    out->last_failed_ns = strtoll(PQgetvalue(res, 0, 6), NULL, 10) * 1000000;
    out->server_now_ns = strtoll(PQgetvalue(res, 0, 7), NULL, 10) * 1000000;
    out->no_command = out->archive_mode && strcmp(PQgetvalue(res, 0, 8), "t") == 0;
    PQclear(res);
    return 0;
}

bool pgsrc_archiver_failing(const struct pgsrc_archiver *a)
{
    return a->archive_mode &&
           (a->no_command || (a->last_failed_ns > 0 && a->last_failed_ns >= a->last_archived_ns));
}

/* ---- pg_restore and partitioned indexes ---------------------------------------------- */

void pgsrc_index_trees_free(struct pgsrc_index_tree *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(p[i].needle);
    free(p);
}

int pgsrc_partition_indexes(PGconn *c, struct pgsrc_index_tree **out, size_t *n, struct err *e)
{
    *out = NULL;
    *n = 0;
    PGresult *res = pgsrc_query(
        c,
        "WITH RECURSIVE d(idx, depth) AS ("
        " SELECT c.oid, 0 FROM pg_class c WHERE c.relkind = 'I'"
        "  AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)"
        " UNION ALL"
        " SELECT i.inhrelid, d.depth + 1 FROM pg_inherits i JOIN d ON i.inhparent = d.idx)"
        " SELECT n.nspname, ic.relname, t.relname, con.conname, d.depth FROM d"
        " JOIN pg_class ic ON ic.oid = d.idx JOIN pg_namespace n ON n.oid = ic.relnamespace"
        " JOIN pg_index x ON x.indexrelid = ic.oid JOIN pg_class t ON t.oid = x.indrelid"
        " LEFT JOIN pg_constraint con ON con.conindid = ic.oid AND con.conrelid = t.oid"
        "  AND con.contype IN ('p', 'u', 'x')",
        0, NULL, e);
    if (!res)
        return -1;
    int rows = PQntuples(res);
    /* a tree of one (a partitioned table without partitions) needs nothing */
    bool any_child = false;
    for (int i = 0; i < rows; i++)
        any_child |= atoi(PQgetvalue(res, i, 4)) > 0;
    if (any_child) {
        *out = xcalloc((size_t)rows, sizeof(**out));
        for (int i = 0; i < rows; i++) {
            const char *nsp = PQgetvalue(res, i, 0), *idx = PQgetvalue(res, i, 1);
            const char *tbl = PQgetvalue(res, i, 2);
            (*out)[i].needle = PQgetisnull(res, i, 3) ? xasprintf(" INDEX %s %s ", nsp, idx)
                                                      : xasprintf(" CONSTRAINT %s %s %s ", nsp, tbl,
                                                                  PQgetvalue(res, i, 3));
            (*out)[i].depth = atoi(PQgetvalue(res, i, 4));
        }
        *n = (size_t)rows;
    }
    PQclear(res);
    return 0;
}

struct toc_line {
    char *text;
    int depth; /* -1: not an index of a tree */
    size_t pos;
};

static int toc_cmp(const void *a, const void *b)
{
    const struct toc_line *x = a, *y = b;
    if (x->depth != y->depth)
        return x->depth > y->depth ? -1 : 1; /* deepest first */
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

char *pgsrc_toc_reorder(char *toc, const struct pgsrc_index_tree *px, size_t npx)
{
    struct toc_line *lines = NULL, *moved = NULL;
    size_t n = 0, nmoved = 0, first = SIZE_MAX;
    char *save = NULL;
    for (char *l = strtok_r(toc, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        int depth = -1;
        if (l[0] != ';') {
            char *padded = xasprintf("%s ", l);
            for (size_t i = 0; i < npx && depth < 0; i++)
                if (strstr(padded, px[i].needle))
                    depth = px[i].depth;
            free(padded);
        }
        struct toc_line tl = {l, depth, n};
        if (depth >= 0) {
            if (first == SIZE_MAX)
                first = n;
            moved = xrealloc(moved, xsize(nmoved + 1, sizeof(*moved), 0));
            moved[nmoved++] = tl;
        }
        lines = xrealloc(lines, xsize(n + 1, sizeof(*lines), 0));
        lines[n++] = tl;
    }
    if (nmoved) /* qsort with a NULL array is undefined even for 0 elements */
        qsort(moved, nmoved, sizeof(*moved), toc_cmp);
    struct buf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (i == first)
            for (size_t k = 0; k < nmoved; k++) {
                buf_append(&b, moved[k].text, strlen(moved[k].text));
                buf_append(&b, "\n", 1);
            }
        if (lines[i].depth >= 0)
            continue;
        buf_append(&b, lines[i].text, strlen(lines[i].text));
        buf_append(&b, "\n", 1);
    }
    buf_append_u8(&b, 0);
    free(lines);
    free(moved);
    return (char *)b.data;
}

/* ---- versions ------------------------------------------------------------------------------ */

int pgsrc_version_parse(const char *s, int *num, char *text, size_t n)
{
    const char *p = s;
    while (*p && !isdigit((unsigned char)*p))
        p++;
    if (!*p)
        return -1;
    const char *start = p;
    long major = strtol(p, (char **)&p, 10), minor = 0, patch = 0;
    if (*p == '.' && isdigit((unsigned char)p[1])) {
        minor = strtol(p + 1, (char **)&p, 10);
        if (major < 10 && *p == '.' && isdigit((unsigned char)p[1]))
            patch = strtol(p + 1, (char **)&p, 10);
    }
    if (major <= 0 || major > 1000 || minor < 0 || minor > 99 || patch < 0 || patch > 99)
        return -1;
    /* the rest of the token ("beta1", "devel") belongs to the text */
    while (*p && (isalnum((unsigned char)*p) || *p == '.'))
        p++;
    *num = (int)(major >= 10 ? major * 10000 + minor : major * 10000 + minor * 100 + patch);
    if (text)
        snprintf(text, n, "%.*s", (int)(p - start), start);
    return 0;
}

int pgsrc_version_major(int num)
{
    return num >= 100000 ? (num / 10000) * 100 : num / 100;
}

void pgsrc_version_major_name(int num, char *out, size_t n)
{
    if (num >= 100000)
        snprintf(out, n, "%d", num / 10000);
    else
        snprintf(out, n, "%d.%d", num / 10000, (num / 100) % 100);
}

/* ---- child processes --------------------------------------------------------------------- */

static void *stderr_reader(void *arg)
{
    struct pgsrc_child *c = arg;
    char buf[4096];
    for (;;) {
        ssize_t n = read(c->err_fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        c->err_bytes += (uint64_t)n;
        size_t k = 0;
        while (k < (size_t)n && c->head_len < sizeof(c->head))
            c->head[c->head_len++] = buf[k++];
        for (; k < (size_t)n; k++) {
            c->tail[c->tail_pos] = buf[k];
            c->tail_pos = (c->tail_pos + 1) % sizeof(c->tail);
            if (c->tail_len < sizeof(c->tail))
                c->tail_len++;
        }
    }
    return NULL;
}

char *pgsrc_child_stderr(const struct pgsrc_child *c)
{
    struct buf b = {0};
    sb_add(&b, c->head, c->head_len);
    if (c->err_bytes > c->head_len + c->tail_len)
        sb_str(&b, "\n...\n");
    size_t start = (c->tail_pos + sizeof(c->tail) - c->tail_len) % sizeof(c->tail);
    for (size_t i = 0; i < c->tail_len; i++)
        sb_add(&b, &c->tail[(start + i) % sizeof(c->tail)], 1);
    return sb_finish(&b);
}

/* The lines of stderr worth quoting: the last few that report an error, else the last few. */
static void stderr_summary(const struct pgsrc_child *c, char *out, size_t n)
{
    char *all = pgsrc_child_stderr(c);
    const char *lines[64];
    size_t nl = 0, nerr = 0;
    const char *errs[3];
    char *save = NULL;
    for (char *l = strtok_r(all, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        while (*l == ' ' || *l == '\t')
            l++;
        if (!*l)
            continue;
        if (nl == 64) {
            memmove(lines, lines + 1, sizeof(lines[0]) * 63);
            nl--;
        }
        lines[nl++] = l;
        if (strstr(l, "error") || strstr(l, "ERROR") || strstr(l, "FATAL") || strstr(l, "fatal")) {
            if (nerr == 3) {
                memmove(errs, errs + 1, sizeof(errs[0]) * 2);
                nerr--;
            }
            errs[nerr++] = l;
        }
    }
    const char **pick = nerr ? errs : lines + (nl > 3 ? nl - 3 : 0);
    size_t np = nerr ? nerr : (nl > 3 ? 3 : nl);
    out[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; i < np && len + 4 < n; i++)
        len += (size_t)snprintf(out + len, n - len, "%s%s", i ? " / " : "", pick[i]);
    trim_msg(out);
    free(all);
}

/* The child's environment is built from an allowlist, not copied from ours: our
 * environment may hold secrets the PostgreSQL programs have no use for (the repository key,
 * cloud credentials, a restore target URL with its password), and a child's environment is
 * readable in /proc/<pid>/environ by its user. Passed on: what locates programs and
 * libraries, the locale and time zone, the home and temporary directories, libpq's own
 * variables (PG*: host, port, user, sslmode, passfile, service, ...; PGPASSWORD only as the
 * password argument below, never inherited) and the TLS and Kerberos settings libpq reads. */
static const char *const ENV_ALLOW[] = {"PATH",
                                        "HOME",
                                        "USER",
                                        "LOGNAME",
                                        "LANG",
                                        "LANGUAGE",
                                        "TZ",
                                        "TZDIR",
                                        "TMPDIR",
                                        "LD_LIBRARY_PATH",
                                        "SSL_CERT_FILE",
                                        "SSL_CERT_DIR",
                                        "OPENSSL_CONF",
                                        "KRB5CCNAME",
                                        "KRB5_CONFIG",
                                        "KRB5_KTNAME",
                                        NULL};
static const char *const ENV_ALLOW_PREFIX[] = {"LC_", "PG", NULL};

bool pgsrc_env_allowed(const char *entry)
{
    const char *eq = strchr(entry, '=');
    if (!eq)
        return false;
    size_t n = (size_t)(eq - entry);
    if (n == 10 && strncmp(entry, "PGPASSWORD", 10) == 0)
        return false;
    for (size_t i = 0; ENV_ALLOW[i]; i++)
        if (strlen(ENV_ALLOW[i]) == n && strncmp(entry, ENV_ALLOW[i], n) == 0)
            return true;
    for (size_t i = 0; ENV_ALLOW_PREFIX[i]; i++) {
        size_t pn = strlen(ENV_ALLOW_PREFIX[i]);
        if (n > pn && strncmp(entry, ENV_ALLOW_PREFIX[i], pn) == 0)
            return true;
    }
    return false;
}

/* The child's environment: the allowed part of ours, plus PGPASSWORD when we have one. */
static char **child_env(const char *password, char **pw_entry)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = xcalloc(n + 2, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (pgsrc_env_allowed(environ[i]))
            env[k++] = environ[i];
    *pw_entry = NULL;
    if (password) {
        *pw_entry = xasprintf("PGPASSWORD=%s", password);
        env[k++] = *pw_entry;
    }
    return env;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* In the child between fork and exec: only async-signal-safe calls. */
static void child_dup(int from, int to)
{
    if (from == to)
        fcntl(to, F_SETFD, 0);
    else
        dup2(from, to);
}

int pgsrc_child_start(struct pgsrc_child *c, const char *path, char *const argv[],
                      const struct pgsrc_spawn *o, struct err *e)
{
    memset(c, 0, sizeof(*c));
    c->pid = -1;
    c->in_fd = c->out_fd = c->err_fd = -1;
    const char *base = strrchr(path, '/');
    snprintf(c->name, sizeof(c->name), "%s", base ? base + 1 : path);
    int inp[2] = {-1, -1}, outp[2] = {-1, -1}, errp[2] = {-1, -1};
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    int logfd = -1;
    if (devnull < 0)
        return err_sys(e, errno, NULL, "cannot open /dev/null");
    if (o->log_path) {
        logfd = open(o->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (logfd < 0) {
            close(devnull);
            return err_sys(e, errno, NULL, "cannot open %s", o->log_path);
        }
    }
    if ((o->pipe_stdin && pipe2(inp, O_CLOEXEC) != 0) ||
        (o->pipe_stdout && pipe2(outp, O_CLOEXEC) != 0) ||
        (!o->log_path && pipe2(errp, O_CLOEXEC) != 0)) {
        int en = errno;
        close_fd(&inp[0]);
        close_fd(&inp[1]);
        close_fd(&outp[0]);
        close_fd(&outp[1]);
        close(devnull);
        if (logfd >= 0)
            close(logfd);
        return err_sys(e, en, NULL, "cannot create a pipe for %s", c->name);
    }
    /* Dumps and restores stream hundreds of MB through these pipes: a larger pipe buffer
     * means fewer wake-ups on both sides (best effort; the default is 64 KiB). */
    if (o->pipe_stdout)
        fcntl(outp[0], F_SETPIPE_SZ, PGSRC_PIPE_SIZE);
    if (o->pipe_stdin)
        fcntl(inp[1], F_SETPIPE_SZ, PGSRC_PIPE_SIZE);
    char *pw_entry;
    char **env = child_env(o->password, &pw_entry);
    int child_in = o->pipe_stdin ? inp[0] : devnull;
    int child_out = o->pipe_stdout ? outp[1] : logfd >= 0 ? logfd : devnull;
    int child_err = logfd >= 0 ? logfd : errp[1];
    /* Signals stay blocked across fork so the child cannot run a handler of ours; the child
     * unblocks them before exec. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        if (o->die_with_parent && (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent))
            _exit(127); /* the parent died before the child could ask to follow it */
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        sigaction(SIGPIPE, &sa, NULL);
        child_dup(child_in, 0);
        child_dup(child_out, 1);
        child_dup(child_err, 2);
        close_range(3, ~0U, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(path, argv, env);
        static const char msg[] = "cannot execute program\n";
        ssize_t w = write(2, msg, sizeof(msg) - 1);
        (void)w;
        _exit(127);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    str_wipe_free(pw_entry);
    free(env);
    close_fd(&inp[0]);
    close_fd(&outp[1]);
    close_fd(&errp[1]);
    close(devnull);
    if (logfd >= 0)
        close(logfd);
    if (pid < 0) {
        close_fd(&inp[1]);
        close_fd(&outp[0]);
        close_fd(&errp[0]);
        return err_sys(e, fork_errno, NULL, "cannot start %s", c->name);
    }
    c->pid = pid;
    c->in_fd = inp[1];
    c->out_fd = outp[0];
    c->err_fd = errp[0];
    if (c->err_fd >= 0) {
        if (pthread_create(&c->err_thread, NULL, stderr_reader, c) == 0)
            c->err_thread_started = true;
    }
    return 0;
}

/* Reaps the child: waits up to timeout_ms (-1: forever), then SIGKILL. When op is cancelled
 * meanwhile, the child gets SIGTERM and 5 s before SIGKILL; returns whether that happened. */
static bool child_reap_op(struct pgsrc_child *c, int timeout_ms, const struct caris_op *op)
{
    bool cancelled = false;
    if (c->pid <= 0 || c->reaped)
        return false;
    int64_t deadline = time_mono_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        bool nohang = timeout_ms >= 0 || (op && op->cancel && !cancelled);
        pid_t r = waitpid(c->pid, &c->status, nohang ? WNOHANG : 0);
        if (r == c->pid)
            break;
        if (r == 0 && !cancelled && caris_op_cancelled(op)) {
            cancelled = true;
            kill(c->pid, SIGTERM);
            timeout_ms = 5000;
            deadline = time_mono_ns() + (int64_t)timeout_ms * 1000000;
            continue;
        }
        if (r < 0 && errno != EINTR) {
            c->status = 0x7f00; /* cannot happen: treat as failure */
            break;
        }
        if (r == 0 && timeout_ms >= 0 && time_mono_ns() > deadline) {
            kill(c->pid, SIGKILL);
            timeout_ms = -1;
            continue;
        }
        if (r == 0) {
            struct timespec ts = {0, 10 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    c->reaped = true;
    if (c->err_thread_started) {
        pthread_join(c->err_thread, NULL);
        c->err_thread_started = false;
    }
    close_fd(&c->err_fd);
    return cancelled;
}

static void child_reap(struct pgsrc_child *c, int timeout_ms)
{
    child_reap_op(c, timeout_ms, NULL);
}

int pgsrc_child_wait(struct pgsrc_child *c, struct err *e)
{
    return pgsrc_child_wait_cancel(c, NULL, e);
}

int pgsrc_child_wait_cancel(struct pgsrc_child *c, const struct caris_op *op, struct err *e)
{
    close_fd(&c->in_fd);
    close_fd(&c->out_fd);
    bool cancelled = child_reap_op(c, -1, op);
    if (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0)
        return 0;
    if (cancelled)
        return err_set(e, ERR_FAILURE, NULL, "cancelled (%s stopped)", c->name);
    char lines[800];
    stderr_summary(c, lines, sizeof(lines));
    if (WIFSIGNALED(c->status))
        return err_set(e, ERR_DATABASE, NULL, "%s was killed by signal %d (%s)%s%s", c->name,
                       WTERMSIG(c->status), strsignal(WTERMSIG(c->status)), *lines ? ": " : "",
                       lines);
    return err_set(e, ERR_DATABASE, NULL, "%s failed (exit status %d)%s%s", c->name,
                   WIFEXITED(c->status) ? WEXITSTATUS(c->status) : -1, *lines ? ": " : "", lines);
}

void pgsrc_child_kill(struct pgsrc_child *c, int sig)
{
    if (c->pid > 0 && !c->reaped)
        kill(c->pid, sig);
    close_fd(&c->in_fd);
    close_fd(&c->out_fd);
    child_reap(c, 5000);
}

int pgsrc_run_capture(const char *path, char *const argv[], char **out, size_t max, struct err *e)
{
    *out = NULL;
    struct pgsrc_child c;
    struct pgsrc_spawn o = {.pipe_stdout = true};
    if (pgsrc_child_start(&c, path, argv, &o, e) != 0)
        return -1;
    struct buf b = {0};
    char tmp[4096];
    for (;;) {
        ssize_t n = read(c.out_fd, tmp, sizeof(tmp));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (b.len < max)
            buf_append(&b, tmp, (size_t)n < max - b.len ? (size_t)n : max - b.len);
    }
    if (pgsrc_child_wait(&c, e) != 0) {
        buf_free(&b);
        return -1;
    }
    *out = sb_finish(&b);
    return 0;
}

/* ---- finding the client programs ------------------------------------------------------------ */

static bool is_program(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0;
}

/* Debian installs each major version under /usr/lib/postgresql/<major>/bin. */
#define PG_LIBDIR "/usr/lib/postgresql"

static bool find_in_libdir(const char *name, int server_num, char *out, size_t n)
{
    char major[16];
    pgsrc_version_major_name(server_num, major, sizeof(major));
    snprintf(out, n, "%s/%s/bin/%s", PG_LIBDIR, major, name);
    if (is_program(out))
        return true;
    DIR *d = opendir(PG_LIBDIR);
    if (!d)
        return false;
    int best = -1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int v;
        if (de->d_name[0] == '.' || pgsrc_version_parse(de->d_name, &v, NULL, 0) != 0 ||
            pgsrc_version_major(v) < pgsrc_version_major(server_num) || v <= best)
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s/bin/%s", PG_LIBDIR, de->d_name, name);
        if (is_program(p)) {
            best = v;
            snprintf(out, n, "%s", p);
        }
    }
    closedir(d);
    return best >= 0;
}

static bool find_in_path(const char *name, char *out, size_t n)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    char *copy = xstrdup(path), *save = NULL;
    bool found = false;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, n, "%s/%s", *d ? d : ".", name);
        found = is_program(out);
    }
    free(copy);
    return found;
}

int pgsrc_tool_find(const char *name, int server_num, bool require_newer, struct pgsrc_tool *out,
                    struct err *e)
{
    memset(out, 0, sizeof(*out));
    char major[16], sv[32];
    pgsrc_version_major_name(server_num, major, sizeof(major));
    snprintf(sv, sizeof(sv), "%d.%d", server_num / 10000,
             server_num >= 100000 ? server_num % 10000 : (server_num / 100) % 100);
    char hint[300];
    snprintf(hint, sizeof(hint),
             "install the PostgreSQL %s client programs (Debian: apt-get install "
             "postgresql-client-%s) so that %s is at least as new as the server",
             major, major, name);
    if (!find_in_libdir(name, server_num, out->path, sizeof(out->path)) &&
        !find_in_path(name, out->path, sizeof(out->path)))
        return err_set(e, ERR_DATABASE, hint, "%s not found (looked in %s/*/bin and PATH)", name,
                       PG_LIBDIR);
    char *argv[] = {out->path, "--version", NULL};
    char *text;
    if (pgsrc_run_capture(out->path, argv, &text, 4096, e) != 0)
        return err_wrap(e, "cannot run %s --version", out->path);
    int rc = pgsrc_version_parse(text, &out->version_num, out->version, sizeof(out->version));
    free(text);
    if (rc != 0)
        return err_set(e, ERR_DATABASE, NULL, "cannot tell the version of %s", out->path);
    if (require_newer && pgsrc_version_major(out->version_num) < pgsrc_version_major(server_num))
        return err_set(e, ERR_DATABASE, hint,
                       "%s %s (%s) is older than the PostgreSQL server (%s): refusing to use it",
                       name, out->version, out->path, sv);
    return 0;
}

/* ---- local cluster ------------------------------------------------------------------------ */

static int free_port(struct err *e)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return err_sys(e, errno, NULL, "cannot create a socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0) {
        int en = errno;
        close(s);
        return err_sys(e, en, NULL, "cannot find a free loopback port");
    }
    close(s);
    return ntohs(a.sin_port);
}

/* Whether a server log line is one of the refusals that connection attempts get while the
 * server recovers, starts or stops: noise in an excerpt, as many as the attempts that the
 * timing allowed. */
static bool log_line_is_poll(const char *line, size_t len)
{
    static const char *const noise[] = {
        "the database system is in recovery mode",
        "the database system is starting up",
        "the database system is not yet accepting connections",
        "the database system is not accepting connections",
        "the database system is shutting down",
        "terminating connection because of crash of another server process",
    };
    for (size_t i = 0; i < sizeof(noise) / sizeof(noise[0]); i++)
        if (memmem(line, len, noise[i], strlen(noise[i])))
            return true;
    return false;
}

static bool log_line_has(const char *line, size_t len, const char *needle)
{
    return memmem(line, len, needle, strlen(needle)) != NULL;
}

void pgsrc_log_excerpt(const char *text, size_t len, size_t max, char *out, size_t n)
{
    if (!n)
        return;
    out[0] = '\0';
    if (!text || !len)
        return;
    struct buf kept = {0};
    size_t cause_at = SIZE_MAX, cause_len = 0;
    bool skipping = false;
    for (const char *p = text, *end = text + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
        bool follows = log_line_has(p, ll, "DETAIL:  ") || log_line_has(p, ll, "HINT:  ");
        skipping = log_line_is_poll(p, ll) || (skipping && follows);
        while (ll && p[ll - 1] == '\r')
            ll--;
        if (!skipping && ll) {
            if (cause_at == SIZE_MAX &&
                (log_line_has(p, ll, "FATAL:  ") || log_line_has(p, ll, "PANIC:  "))) {
                cause_at = kept.len;
                cause_len = ll;
            }
            buf_append(&kept, p, ll);
            buf_append_u8(&kept, '\n');
        }
        p = nl ? nl + 1 : end;
    }
    if (!kept.len) {
        buf_free(&kept);
        return;
    }
    kept.len--; /* the last newline */
    const char *k = (const char *)kept.data;
    size_t start = cause_at == SIZE_MAX ? 0 : cause_at;
    if (kept.len - start <= max) {
        snprintf(out, n, "%.*s", (int)(kept.len - start), k + start);
    } else {
        /* the last whole lines that fit (beside the cause line, which keeps at least half) */
        size_t room = cause_at == SIZE_MAX ? max : cause_len < max / 2 ? max - cause_len : max / 2;
        size_t t = kept.len - room;
        const char *nl = memchr(k + t, '\n', room);
        t = nl ? (size_t)(nl + 1 - k) : kept.len;
        if (cause_at == SIZE_MAX)
            snprintf(out, n, "%.*s", (int)(kept.len - t), k + t);
        else if (t <= cause_at + cause_len + 1)
            snprintf(out, n, "%.*s", (int)(kept.len - start), k + start);
        else
            snprintf(out, n, "%.*s\n[...]\n%.*s", (int)cause_len, k + cause_at, (int)(kept.len - t),
                     k + t);
    }
    buf_free(&kept);
}

static void local_log_tail(const char *path, char *out, size_t n)
{
    struct buf b = {0};
    struct err ie = ERR_INIT;
    out[0] = '\0';
    if (fs_read_all(path, &b, &ie) != 0)
        return;
    size_t keep = b.len > 400 ? 400 : b.len;
    snprintf(out, n, "%.*s", (int)keep, (const char *)b.data + b.len - keep);
    trim_msg(out);
    buf_free(&b);
}

void pgsrc_local_target(const struct pgsrc_local *l, const char *dbname, struct pgsrc_target *t)
{
    memset(t, 0, sizeof(*t));
    char port[16];
    snprintf(port, sizeof(port), "%d", l->port);
    target_add(t, "host", l->dir);
    target_add(t, "port", port);
    target_add(t, "user", "caris");
    target_add(t, "dbname", dbname);
    t->label = "the local scratch cluster";
}

const char *pgsrc_local_parent(const char *parent)
{
    /* The socket lives in the cluster's private directory: its path must fit a sockaddr_un
     * (107 bytes) with ".s.PGSQL.<port>". */
    return strlen(parent) > 60 ? "/tmp" : parent;
}

int pgsrc_local_start(const char *parent, int min_num, const char *encoding, struct pgsrc_local *l,
                      struct err *e)
{
    memset(l, 0, sizeof(*l));
    if (lazylib_load(LAZYLIB_PQ, e) != 0)
        return -1;
    if (geteuid() == 0)
        return err_set(e, ERR_CONFIG,
                       "run caris-backup as an unprivileged user for --scratch local, or use "
                       "--scratch database (a scratch database on the POSTGRES_URL server)",
                       "cannot start a local PostgreSQL cluster as root: initdb and postgres "
                       "refuse to run as root");
    struct pgsrc_tool initdb, postgres;
    if (pgsrc_tool_find("initdb", min_num, true, &initdb, e) != 0 ||
        pgsrc_tool_find("postgres", min_num, true, &postgres, e) != 0)
        return -1;
    if (fs_mkdir_p(parent, 0700, e) != 0)
        return -1;
    l->item = (struct temp_item)TEMP_ITEM_INIT;
    if (temp_item_create(&l->item, pgsrc_local_parent(parent), "caris-scratch-", true, e) != 0)
        return err_wrap(e, "cannot create a directory for the local cluster");
    l->dir = xstrdup(l->item.path);
    l->datadir = xasprintf("%s/data", l->dir);
    l->version_num = postgres.version_num;
    char *log = xasprintf("%s/initdb.log", l->dir);
    char *enc = xasprintf("--encoding=%s", encoding && *encoding ? encoding : "UTF8");
    char *argv[] = {initdb.path,
                    "-D",
                    l->datadir,
                    "--username=caris",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    enc,
                    "--locale=C",
                    "--no-sync",
                    NULL};
    struct pgsrc_child c;
    struct pgsrc_spawn so = {.log_path = log};
    int rc = pgsrc_child_start(&c, initdb.path, argv, &so, e);
    if (rc == 0 && (rc = pgsrc_child_wait(&c, e)) != 0) {
        char tail[500];
        local_log_tail(log, tail, sizeof(tail));
        err_set(e, ERR_DATABASE, NULL, "initdb failed for the local scratch cluster: %s", tail);
    }
    free(enc);
    free(log);
    if (rc != 0) {
        pgsrc_local_stop(l);
        return -1;
    }
    log = xasprintf("%s/postgres.log", l->dir);
    for (int attempt = 0; attempt < 3; attempt++) {
        l->port = free_port(e);
        if (l->port < 0)
            break;
        char port[16];
        snprintf(port, sizeof(port), "%d", l->port);
        /* Durability is irrelevant for a throwaway cluster. TCP logins need a password and
         * none is set: only our own user, through the private socket directory, gets in. */
        char *pargv[] = {postgres.path,
                         "-D",
                         l->datadir,
                         "-p",
                         port,
                         "-k",
                         l->dir,
                         "-c",
                         "listen_addresses=127.0.0.1",
                         "-c",
                         "fsync=off",
                         "-c",
                         "full_page_writes=off",
                         "-c",
                         "synchronous_commit=off",
                         "-c",
                         "max_connections=30",
                         NULL};
        /* (killed with us, the server makes a smart shutdown: a sweep then removes it) */
        struct pgsrc_spawn ps = {.log_path = log, .die_with_parent = true};
        if (pgsrc_child_start(&l->server, postgres.path, pargv, &ps, e) != 0)
            break;
        l->running = true;
        struct pgsrc_target t;
        pgsrc_local_target(l, "postgres", &t);
        struct kv kv;
        kv_build(&t, NULL, &kv);
        int64_t deadline = time_mono_ns() + (int64_t)120 * 1000000000;
        bool ready = false, died = false;
        while (time_mono_ns() < deadline) {
            if (PQpingParams(kv.k, kv.v, 0) == PQPING_OK) {
                ready = true;
                break;
            }
            if (waitpid(l->server.pid, &l->server.status, WNOHANG) == l->server.pid) {
                l->server.reaped = true;
                died = true;
                break;
            }
            struct timespec ts = {0, 20 * 1000000};
            nanosleep(&ts, NULL);
        }
        kv_free(&kv);
        pgsrc_target_free(&t);
        if (ready) {
            free(log);
            return 0;
        }
        l->running = false;
        if (!died)
            pgsrc_child_kill(&l->server, SIGQUIT);
        char tail[500];
        local_log_tail(log, tail, sizeof(tail));
        err_set(e, ERR_DATABASE, NULL, "the local scratch cluster did not start: %s",
                *tail ? tail : "no log");
        /* Another process may have taken the port between our probe and postgres' bind. */
        if (!died || !strstr(tail, "ould not") || !strstr(tail, "socket"))
            break;
    }
    free(log);
    pgsrc_local_stop(l);
    return -1;
}

void pgsrc_local_stop(struct pgsrc_local *l)
{
    if (l->running) {
        /* SIGINT: fast shutdown (no waiting for clients) */
        kill(l->server.pid, SIGINT);
        child_reap(&l->server, 60000);
        l->running = false;
    }
    if (l->item.path)
        temp_item_remove(&l->item);
    free(l->dir);
    free(l->datadir);
    l->dir = l->datadir = NULL;
}

bool pgsrc_local_running(const char *dir)
{
    char *path = xasprintf("%s/data/postmaster.pid", dir);
    struct buf b = {0};
    struct err ignore = ERR_INIT;
    bool running = false;
    if (fs_read_all(path, &b, &ignore) == 0) {
        buf_append_u8(&b, 0);
        char *end;
        long pid = strtol((const char *)b.data, &end, 10);
        running = end != (const char *)b.data && pid > 0 && pid <= INT32_MAX &&
                  (kill((pid_t)pid, 0) == 0 || errno == EPERM);
    }
    buf_free(&b);
    free(path);
    return running;
}

/* The daemon's HTTP API (libmicrohttpd): the seed's endpoints, the status and the jobs.
 *
 * Requests are answered by libmicrohttpd's threads (a small pool); what takes long (backups,
 * verifications, restores) is queued as a job for the daemon's worker and answered with 202
 * and the job's id. The reads that need the repository (list, and the resolution of a
 * backupId before a job is queued) share one handle of their own, under a->mu, never the
 * worker's.
 *
 * Bad input is never a 5xx: every field is checked (type, value, unknown fields), bodies are
 * bounded (BODY_MAX, 413), headers too (API_GATE_HEAD_OK and API_GATE_HEADERS_MAX: the gate
 * answers 431 before libmicrohttpd's memory limit is reached), and a client that fails
 * authentication again and again from one address is made to wait (429 with Retry-After).
 * Credentials are never logged. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "caris/audit.h"
#include "caris/lazylib.h"
#include "caris/jsonx.h"
#include "caris/backup.h"
#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/dbbackup.h"
#include "caris/open.h"
#include "caris/token.h"

#include "api_gate.h"
#include "dashboard.h"
#include "internal.h"

#define BODY_MAX (64 * 1024)
/* A body over BODY_MAX is read to its end to answer 413 (libmicrohttpd 0.9.75 cannot queue a
 * response while a body arrives); past BODY_DROP_MAX, or BODY_DEADLINE_S after the request
 * began, the connection is closed instead: an endless (chunked) body holds no connection. */
#define BODY_DROP_MAX (1024 * 1024)
#define BODY_DEADLINE_S 60
#define CONN_MEMORY (32 * 1024) /* request line and headers of one connection */
/* a client that sends nothing for that long is dropped (the test knob
 * CARIS_TEST_API_TIMEOUT_MS, in whole seconds, overrides it) */
#define CONN_TIMEOUT_S 15
#define CONN_MAX 64
#define CONN_PER_IP 16
#define TOKEN_MAX 512
#define FAIL_SLOTS 256
#define FAIL_FREE 5         /* failed authentications allowed before the client must wait */
#define FAIL_WAIT_S 5       /* the first wait, doubled by each failure after it */
#define FAIL_WAIT_MAX_S 300 /* the longest wait */
#define FAIL_FORGET_S 900   /* failures older than that are forgotten */

struct fail_slot {
    char addr[API_FAIL_KEY_MAX]; /* api_fail_key */
    /* failures at the cron endpoint are counted apart from the others: five mistyped tokens
     * (a dashboard behind a reverse proxy shares the scheduler's address) held the cron
     * secret back too, and the scheduled run got 429 */
    bool cron;
    unsigned fails;
    int64_t last_ns, until_ns;
    bool refusal_audited; /* the wait until until_ns has its audit line already */
};

struct api {
    struct MHD_Daemon *mhd;
    struct api_gate *gate; /* plain HTTP: our accept loop in front of mhd (api_gate.h) */
    struct daemon *d;
    const struct config *cfg;
    char *backup_dir, *repo_path;
    char *tls_cert, *tls_key; /* PEM texts; the key wiped when freed */
    pthread_mutex_t mu;       /* r */
    /* fails: its own lock, so that a slow read under mu (a list of an S3 repository) does not
     * hold up every request's authorization, status polls included */
    pthread_mutex_t fail_mu;
    struct repo *r;
    struct fail_slot fails[FAIL_SLOTS];
    /* CRON_SECRET's SHA-256 (none: has_cron false), under secret_mu: a reload replaces it
     * (api_reload), so that a rotated secret stops working at the SIGHUP that says so */
    pthread_mutex_t secret_mu;
    bool has_cron;
    uint8_t cron_hash[CX_SHA256_LEN];
};

/* One request: its body as it arrives. */
struct req {
    struct buf body;
    bool too_big;
    uint64_t received; /* the body's bytes so far, those dropped too */
    int64_t start_ns;
};

/* ---- responses ---------------------------------------------------------------------------- */

/* The status of the response this thread queued last (for the audit line). */
static __thread unsigned last_status;
/* The request need not be audited: a 429 of a wait whose first 429 was (a client that keeps
 * knocking while it must wait would otherwise grow the log, one fdatasync'd line each). */
static __thread bool skip_audit;

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, json_t *j,
                               const char *header, const char *value)
{
    json_t *pub = jsonx_public(j); /* public names: camelCase (docs/JSON.md) */
    json_decref(j);
    char *text = json_dumps(pub, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(pub);
    if (!text)
        text = xstrdup("{}");
    size_t len = strlen(text);
    char *body = xmalloc(len + 2);
    memcpy(body, text, len);
    body[len] = '\n';
    body[len + 1] = '\0';
    free(text);
    struct MHD_Response *r = MHD_create_response_from_buffer(len + 1, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    /* each request on its own connection, so that each request line passes the gate */
    MHD_add_response_header(r, "Connection", "close");
    if (header)
        MHD_add_response_header(r, header, value);
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    last_status = status;
    return rc;
}

static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *code,
                                     const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *code,
                                     const char *hint, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* (a message may quote bytes of the request that are not UTF-8: escaped, not lost) */
    json_t *j = json_pack("{s:{s:s, s:o, s:s}}", "error", "code", code, "message", jsonx_text(msg),
                          "hint", hint ? hint : "");
    const char *h = NULL, *v = NULL;
    if (status == MHD_HTTP_UNAUTHORIZED) {
        h = "WWW-Authenticate";
        v = "Bearer";
    }
    return respond(c, status, j, h, v);
}

/* A service's error: its code decides the status (a failure of the server is a 500, never
 * one of the request). */
static enum MHD_Result respond_err(struct MHD_Connection *c, const struct err *e)
{
    unsigned status;
    const char *code;
    switch (e->code) {
    case ERR_USAGE:
        status = MHD_HTTP_BAD_REQUEST, code = "bad_request";
        break;
    case ERR_NOT_FOUND:
        status = MHD_HTTP_NOT_FOUND, code = "not_found";
        break;
    case ERR_LOCKED:
        status = MHD_HTTP_CONFLICT, code = "conflict";
        break;
    default:
        status = MHD_HTTP_INTERNAL_SERVER_ERROR, code = err_code_name(e->code);
        break;
    }
    return respond_error(c, status, code, e->hint, "%s", e->msg);
}

/* ---- authentication ----------------------------------------------------------------------- */

static void client_addr(struct MHD_Connection *c, char out[INET6_ADDRSTRLEN])
{
    strcpy(out, "?");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, INET6_ADDRSTRLEN);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, INET6_ADDRSTRLEN);
}

void api_fail_key(const char *addr, char out[API_FAIL_KEY_MAX])
{
    struct in6_addr a6;
    if (inet_pton(AF_INET6, addr, &a6) == 1 && !IN6_IS_ADDR_V4MAPPED(&a6)) {
        memset(a6.s6_addr + 8, 0, 8);
        char net[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &a6, net, sizeof(net));
        snprintf(out, API_FAIL_KEY_MAX, "%s/64", net);
    } else {
        snprintf(out, API_FAIL_KEY_MAX, "%s", addr);
    }
}

/* Under a->fail_mu. The address's slot (its /64 for IPv6: api_fail_key), a new one (the least
 * recently used) when create. */
static struct fail_slot *fail_slot_locked(struct api *a, const char *addr, bool cron, bool create)
{
    char key[API_FAIL_KEY_MAX];
    api_fail_key(addr, key);
    addr = key;
    struct fail_slot *oldest = &a->fails[0];
    for (size_t i = 0; i < FAIL_SLOTS; i++) {
        if (a->fails[i].fails && a->fails[i].cron == cron && strcmp(a->fails[i].addr, addr) == 0)
            return &a->fails[i];
        if (a->fails[i].last_ns < oldest->last_ns)
            oldest = &a->fails[i];
    }
    if (!create)
        return NULL;
    memset(oldest, 0, sizeof(*oldest));
    snprintf(oldest->addr, sizeof(oldest->addr), "%s", addr);
    oldest->cron = cron;
    return oldest;
}

/* Seconds the address must still wait before it may try again (0: none); *audit: whether
 * this refusal is the first of the wait (the one to audit). */
static int64_t fail_wait(struct api *a, const char *addr, bool cron, bool *audit)
{
    int64_t now = time_mono_ns(), wait = 0;
    *audit = true;
    pthread_mutex_lock(&a->fail_mu);
    struct fail_slot *s = fail_slot_locked(a, addr, cron, false);
    if (s && now - s->last_ns > (int64_t)FAIL_FORGET_S * 1000000000) {
        memset(s, 0, sizeof(*s));
    } else if (s && s->until_ns > now) {
        wait = (s->until_ns - now + 999999999) / 1000000000;
        *audit = !s->refusal_audited;
        s->refusal_audited = true;
    }
    pthread_mutex_unlock(&a->fail_mu);
    return wait;
}

/* A failed authentication: the FAIL_FREE-th makes the address wait FAIL_WAIT_S, each one
 * after it (once the wait is over) twice as long as the one before, up to FAIL_WAIT_MAX_S.
 * Requests made while waiting are refused before their credentials are looked at. */
static void fail_record(struct api *a, const char *addr, bool cron)
{
    int64_t now = time_mono_ns();
    pthread_mutex_lock(&a->fail_mu);
    struct fail_slot *s = fail_slot_locked(a, addr, cron, true);
    s->fails++;
    s->last_ns = now;
    if (s->fails >= FAIL_FREE) {
        unsigned k = s->fails - FAIL_FREE;
        int64_t wait = k >= 7 ? FAIL_WAIT_MAX_S : (int64_t)FAIL_WAIT_S << k;
        if (wait > FAIL_WAIT_MAX_S)
            wait = FAIL_WAIT_MAX_S;
        s->until_ns = now + wait * 1000000000;
        s->refusal_audited = false;
    }
    pthread_mutex_unlock(&a->fail_mu);
}

static void fail_clear(struct api *a, const char *addr, bool cron)
{
    pthread_mutex_lock(&a->fail_mu);
    struct fail_slot *s = fail_slot_locked(a, addr, cron, false);
    if (s)
        memset(s, 0, sizeof(*s));
    pthread_mutex_unlock(&a->fail_mu);
}

struct header_count {
    const char *name;
    unsigned n;
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    (void)value;
    struct header_count *hc = cls;
    if (key && strcasecmp(key, hc->name) == 0)
        hc->n++;
    return MHD_YES;
}

static unsigned header_count(struct MHD_Connection *c, const char *name)
{
    struct header_count hc = {name, 0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, &hc);
    return hc.n;
}

enum access { ACCESS_VIEWER, ACCESS_ADMIN, ACCESS_CRON };

/* Who may do what: 0 with *who filled (the token's label, or "cron"), or -1 when a response
 * (400, 401, 403, 429, 500) has been queued into *mr. */
static int authorize(struct api *a, struct MHD_Connection *c, enum access need, const char *addr,
                     char who[80], enum MHD_Result *mr)
{
    bool audit, cron = need == ACCESS_CRON;
    int64_t wait = fail_wait(a, addr, cron, &audit);
    if (wait > 0) {
        skip_audit = !audit;
        char v[24];
        snprintf(v, sizeof(v), "%lld", (long long)wait);
        json_t *j = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", "too_many_requests",
                              "message", "too many failed authentications from this address",
                              "hint", "wait for the time in Retry-After, then use a valid token");
        *mr = respond(c, MHD_HTTP_TOO_MANY_REQUESTS, j, "Retry-After", v);
        return -1;
    }
    unsigned n = header_count(c, "Authorization");
    if (n > 1) {
        /* a failure too (as no header below): else each such request was an audit line,
         * for ever, without a credential */
        fail_record(a, addr, cron);
        *mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "send one Authorization header",
                            "%u Authorization headers", n);
        return -1;
    }
    /* (a NUL byte in it is refused by the gate, api_gate_head_refusal: libmicrohttpd gives
     * the value up to the NUL, so "Bearer <token>\0<anything>" would pass for the token) */
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h) {
        /* a failure too: else a client could knock without a credential for ever, each
         * knock a line of the audit log */
        fail_record(a, addr, cron);
        *mr = respond_error(c, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                            need == ACCESS_CRON ? "send Authorization: Bearer <CRON_SECRET>"
                                                : "send Authorization: Bearer <token> (a token "
                                                  "from `caris-backup token add`)",
                            "authentication required");
        return -1;
    }
    const char *tok = NULL;
    size_t tlen = 0;
    if (strncasecmp(h, "Bearer", 6) == 0 && (h[6] == ' ' || h[6] == '\t')) {
        /* spaces and tabs around the token are the header's, not the token's (RFC 9110,
         * 5.5: optional whitespace) */
        tok = h + 7;
        while (*tok == ' ' || *tok == '\t')
            tok++;
        tlen = strlen(tok);
        while (tlen && (tok[tlen - 1] == ' ' || tok[tlen - 1] == '\t'))
            tlen--;
    }
    if (!tok || tlen == 0 || tlen > TOKEN_MAX) {
        fail_record(a, addr, cron);
        *mr = respond_error(c, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                            "send Authorization: Bearer <token>", "invalid credentials");
        return -1;
    }
    char tokbuf[TOKEN_MAX + 1];
    memcpy(tokbuf, tok, tlen);
    tokbuf[tlen] = '\0';
    tok = tokbuf;
    /* the cron secret and the tokens are both checked, whichever is asked for, so that the
     * time taken does not tell which one a credential was */
    bool is_cron = false;
    uint8_t hs[CX_SHA256_LEN], ht[CX_SHA256_LEN];
    pthread_mutex_lock(&a->secret_mu);
    bool has_cron = a->has_cron;
    memcpy(hs, a->cron_hash, sizeof(hs));
    pthread_mutex_unlock(&a->secret_mu);
    if (has_cron) {
        cx_sha256(tok, tlen, ht);
        is_cron = cx_memcmp(hs, ht, sizeof(hs)) == 0;
    }
    struct caris_token_info info;
    struct err e = ERR_INIT;
    int trc = caris_token_check(a->backup_dir, tok, &info, &e);
    cx_wipe(tokbuf, sizeof(tokbuf));
    if (trc < 0 && !is_cron) {
        daemon_log(a->d, LOG_ERROR, "api", "cannot check a token: %s", e.msg);
        *mr = respond_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "config", NULL,
                            "the server cannot read its token file");
        return -1;
    }
    if (need == ACCESS_CRON) {
        if (is_cron) {
            fail_clear(a, addr, cron);
            snprintf(who, 80, "cron");
            return 0;
        }
        if (trc == 0) {
            *mr = respond_error(c, MHD_HTTP_FORBIDDEN, "forbidden",
                                "the cron endpoint accepts only CRON_SECRET; with a token use "
                                "POST /api/admin/backup/create",
                                "this credential is not for the cron endpoint");
            return -1;
        }
    } else if (trc == 0) {
        fail_clear(a, addr, cron);
        snprintf(who, 80, "api:%s", info.label);
        if (need == ACCESS_ADMIN && info.role != CARIS_ROLE_ADMIN) {
            *mr = respond_error(c, MHD_HTTP_FORBIDDEN, "forbidden",
                                "a viewer token may list, read the status and jobs only; this "
                                "needs an admin token",
                                "token '%s' is not an admin token", info.label);
            return -1;
        }
        return 0;
    }
    fail_record(a, addr, cron);
    daemon_log(a->d, LOG_WARN, "api", "failed authentication from %s", addr);
    *mr = respond_error(c, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                        need == ACCESS_CRON ? "send Authorization: Bearer <CRON_SECRET>"
                                            : "use a token from `caris-backup token add`",
                        "invalid credentials");
    return -1;
}

/* Why a request a browser sent for a page of another site (a form, an image, a fetch, the
 * preflight of one) is refused, or NULL: such a request cannot carry the dashboard's token
 * (it is a header, never a cookie), so it could only fail its authentication; counted as a
 * failure, a page the operator happened to visit made the address wait (429), dashboard,
 * API clients and the scheduler's CRON_SECRET with it. Sec-Fetch-Site (W3C Fetch
 * Metadata, set by the browser, never by a page) says it: same-origin (the dashboard) and
 * none (typed by the user) pass. A browser that does not send it (an older one, or plain
 * HTTP to an address that is not loopback) sends Origin with a cross-origin request: one
 * that names another address than the request's Host, and carries no Authorization, is
 * refused too (with one, it is the dashboard's behind a proxy that rewrites Host: a page of
 * another site cannot send that header, its CORS preflight is refused). Clients that are not
 * browsers send neither. */
static const char *cross_site_refusal(struct MHD_Connection *c)
{
    if (header_count(c, "Sec-Fetch-Site") > 1 || header_count(c, "Origin") > 1)
        return "several Sec-Fetch-Site or Origin headers";
    const char *site = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-Fetch-Site");
    if (site)
        return strcmp(site, "same-origin") == 0 || strcmp(site, "none") == 0
                   ? NULL
                   : "cross-site request refused (Sec-Fetch-Site)";
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (!origin || header_count(c, "Authorization") > 0)
        return NULL;
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    const char *rest = strncasecmp(origin, "http://", 7) == 0    ? origin + 7
                       : strncasecmp(origin, "https://", 8) == 0 ? origin + 8
                                                                 : NULL;
    if (!rest || !host || !*host || strcasecmp(rest, host) != 0)
        return "cross-site request refused (its Origin is not this address)";
    return NULL;
}

/* ---- input -------------------------------------------------------------------------------- */

/* A query parameter that is a boolean: 0 (set *v, default when absent), -1 when invalid. */
static int query_bool(struct MHD_Connection *c, const char *name, bool *v)
{
    const char *s = NULL;
    if (MHD_lookup_connection_value_n(c, MHD_GET_ARGUMENT_KIND, name, strlen(name), &s, NULL) !=
        MHD_YES)
        return 0;
    if (!s) /* "?includeStats" without a value: not a boolean */
        return -1;
    if (strcmp(s, "true") == 0)
        *v = true;
    else if (strcmp(s, "false") == 0)
        *v = false;
    else
        return -1;
    return 0;
}

/* A query parameter's value: 0 with *v (NULL when absent), -1 when given without a value
 * ("?type": not the same as leaving it out). */
static int query_value(struct MHD_Connection *c, const char *name, const char **v)
{
    *v = NULL;
    if (MHD_lookup_connection_value_n(c, MHD_GET_ARGUMENT_KIND, name, strlen(name), v, NULL) !=
        MHD_YES)
        return 0;
    return *v ? 0 : -1;
}

struct query_check {
    const char *const *allowed;
    unsigned seen[4];
    bool bad;
};

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    (void)value;
    struct query_check *qc = cls;
    for (size_t i = 0; qc->allowed[i] && i < 4; i++)
        if (key && strcmp(key, qc->allowed[i]) == 0) {
            if (++qc->seen[i] == 1)
                return MHD_YES;
            break; /* given twice: which one counts would be a guess */
        }
    qc->bad = true;
    return MHD_NO;
}

/* Whether a query parameter is not in allowed (NULL-terminated, at most 4) or given twice. */
static bool query_unknown(struct MHD_Connection *c, const char *const *allowed)
{
    struct query_check qc = {.allowed = allowed};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, check_arg, &qc);
    return qc.bad;
}

/* Content-Type application/json, with no parameter but a charset of UTF-8 (RFC 8259: JSON
 * between systems is UTF-8; the body is read as such). */
static bool json_media_type(const char *ct)
{
    if (strncasecmp(ct, "application/json", 16) != 0)
        return false;
    const char *p = ct + 16;
    p += strspn(p, " \t");
    if (!*p)
        return true;
    if (*p != ';')
        return false;
    p++;
    p += strspn(p, " \t");
    if (strncasecmp(p, "charset", 7) != 0)
        return false;
    p += 7;
    p += strspn(p, " \t");
    if (*p++ != '=')
        return false;
    p += strspn(p, " \t");
    bool quoted = *p == '"';
    p += quoted;
    if (strncasecmp(p, "utf-8", 5) != 0)
        return false;
    p += 5;
    if (quoted && *p++ != '"')
        return false;
    p += strspn(p, " \t");
    return *p == '\0';
}

/* The body as a JSON object: the object, or NULL with a 400/415 queued into *mr. */
static json_t *body_object(struct MHD_Connection *c, const struct req *q, enum MHD_Result *mr)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (header_count(c, "Content-Type") > 1) {
        *mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "send one Content-Type",
                            "several Content-Type headers");
        return NULL;
    }
    if (!ct || !json_media_type(ct)) {
        *mr = respond_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                            "send Content-Type: application/json", "the body must be JSON");
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(q->body.data ? (const char *)q->body.data : "", q->body.len,
                           JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        /* jansson's text ends with the bytes it stopped at ("near '...'"): not sent back (a
         * password of a target URL cut short was; the place is in the line and column) */
        char why[sizeof(je.text)];
        snprintf(why, sizeof(why), "%s", je.text);
        char *near = strstr(why, " near ");
        if (near)
            *near = '\0';
        *mr = respond_error(
            c, MHD_HTTP_BAD_REQUEST, "bad_request", "send a JSON object, e.g. {\"type\": \"full\"}",
            "the body is not valid JSON: %s (line %d, column %d)", why, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "send a JSON object",
                            "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Checks the fields of a body: no field outside allowed (NULL-terminated). 0, or -1 with a
 * 400 queued. */
static int body_fields(struct MHD_Connection *c, json_t *o, const char *const *allowed,
                       enum MHD_Result *mr)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(key, allowed[i]) == 0;
        if (!ok) {
            char k[80];
            str_escape(key, strlen(key), k, sizeof(k));
            *mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                                "see the API reference in docs/BACKUP_RECOVERY.md",
                                "unknown field \"%s\"", k);
            return -1;
        }
    }
    return 0;
}

/* An optional boolean field: 0, or -1 with a 400 queued. */
static int field_bool(struct MHD_Connection *c, json_t *o, const char *name, bool *v,
                      enum MHD_Result *mr)
{
    json_t *f = json_object_get(o, name);
    if (!f)
        return 0;
    if (!json_is_boolean(f)) {
        *mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "write true or false",
                            "field \"%s\" must be a boolean", name);
        return -1;
    }
    *v = json_is_true(f);
    return 0;
}

/* An optional string field of at most max bytes (NUL excluded), without control characters:
 * *v = NULL when absent; 0, or -1 with a 400 queued. */
static int field_string(struct MHD_Connection *c, json_t *o, const char *name, size_t max,
                        const char **v, enum MHD_Result *mr)
{
    *v = NULL;
    json_t *f = json_object_get(o, name);
    if (!f)
        return 0;
    const char *s = json_string_value(f);
    size_t len = s ? json_string_length(f) : 0;
    bool ok = s && len > 0 && len <= max && strlen(s) == len;
    for (size_t i = 0; ok && i < len; i++)
        ok = (unsigned char)s[i] >= 0x20 && s[i] != 0x7f;
    if (!ok) {
        *mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", NULL,
                            "field \"%s\" must be a non-empty string of at most %zu bytes "
                            "without control characters",
                            name, max);
        return -1;
    }
    *v = s;
    return 0;
}

/* A backup id as a client may write it (an id, a prefix, latest, latest:KIND): letters,
 * digits and _ - . : only, never "..", so that nothing reaches the repository's paths. */
static bool backup_id_text_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= CARIS_ID_MAX || strstr(s, ".."))
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.' || ch == ':'))
            return false;
    }
    return true;
}

/* ---- the reading handle ------------------------------------------------------------------- */

/* Under a->mu: the API's own handle, opened at first use and refreshed at each use. */
static struct repo *reader_locked(struct api *a, struct err *e)
{
    /* a repository moved or replaced under the daemon: read at the path, as every command
     * (daemon.c, repo_fresh) */
    if (a->r && storage_moved(repo_storage(a->r))) {
        repo_close(a->r);
        a->r = NULL;
    }
    if (a->r && repo_refresh(a->r, e) != 0) {
        err_clear(e);
        repo_close(a->r);
        a->r = NULL;
    }
    if (a->r)
        return a->r;
    struct caris_open_opts oo = {.repo_path = a->repo_path};
    if (config_encryption_key(a->cfg, &oo.key, e) != 0)
        return NULL;
    struct caris_open_result res = {0};
    a->r = caris_repo_open(&oo, &res, e);
    json_decref(res.state);
    return a->r;
}

/* Resolves text (kind: "database", "files" or NULL) to an id and its kind ("database" /
 * "files"): 0, or -1 with e (ERR_NOT_FOUND, ERR_USAGE for an ambiguous or contradicting one). */
static int resolve_backup(struct api *a, const char *text, const char *kind, char id[CARIS_ID_MAX],
                          char what[16], struct err *e)
{
    pthread_mutex_lock(&a->mu);
    int rc = -1;
    struct repo *r = reader_locked(a, e);
    if (r && caris_backup_resolve(r, text, kind, id, e) == 0) {
        json_t *list = caris_backup_list(r, NULL, e);
        size_t i;
        json_t *b;
        json_array_foreach(list, i, b)
        {
            const char *bid = json_string_value(json_object_get(b, "id"));
            const char *k = json_string_value(json_object_get(b, "kind"));
            if (bid && k && strcmp(bid, id) == 0) {
                snprintf(what, 16, "%s", k);
                rc = 0;
            }
        }
        json_decref(list);
        if (rc != 0 && !err_is_set(e))
            err_set(e, ERR_NOT_FOUND, "GET /api/admin/backup/list shows the backups",
                    "no backup %s", id);
    }
    pthread_mutex_unlock(&a->mu);
    if (rc == 0 && kind && strcmp(kind, what) != 0)
        rc = err_set(e, ERR_USAGE, "give the backup's own type, or leave type out",
                     "backup %s is a %s backup, not %s", id, what, kind);
    return rc;
}

/* ---- endpoints ---------------------------------------------------------------------------- */

static enum MHD_Result accepted(struct MHD_Connection *c, const char *id)
{
    char *loc = xasprintf("/api/admin/backup/jobs/%s", id);
    json_t *j = json_pack("{s:s, s:s, s:s}", "jobId", id, "state", "queued", "statusUrl", loc);
    enum MHD_Result mr = respond(c, MHD_HTTP_ACCEPTED, j, "Location", loc);
    free(loc);
    return mr;
}

static enum MHD_Result submit(struct api *a, struct MHD_Connection *c, struct djob_spec *s,
                              const char *who, const char *addr)
{
    snprintf(s->actor, sizeof(s->actor), "%s", who);
    snprintf(s->addr, sizeof(s->addr), "%s", addr);
    char id[DJOB_ID_MAX];
    struct err e = ERR_INIT;
    if (daemon_job_submit(a->d, s, id, &e) != 0)
        return respond_err(c, &e);
    return accepted(c, id);
}

static int type_parse(struct MHD_Connection *c, const char *s, enum caris_job_type *t,
                      enum MHD_Result *mr)
{
    struct err e = ERR_INIT;
    if (!s || caris_job_type_parse(s, t, &e) != 0) {
        *mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "type is \"full\" or \"incremental\"", "invalid type");
        return -1;
    }
    return 0;
}

static enum MHD_Result ep_create(struct api *a, struct MHD_Connection *c, const struct req *q,
                                 const char *who, const char *addr)
{
    enum MHD_Result mr;
    json_t *o = body_object(c, q, &mr);
    if (!o)
        return mr;
    static const char *const fields[] = {"type", "includeFiles", NULL};
    struct djob_spec s = {.kind = DJOB_BACKUP};
    bool files = true;
    const char *type;
    if (body_fields(c, o, fields, &mr) != 0 || field_bool(c, o, "includeFiles", &files, &mr) != 0 ||
        field_string(c, o, "type", 16, &type, &mr) != 0 || type_parse(c, type, &s.type, &mr) != 0) {
        json_decref(o);
        return mr;
    }
    s.skip_files = !files;
    json_decref(o);
    return submit(a, c, &s, who, addr);
}

static enum MHD_Result ep_cron(struct api *a, struct MHD_Connection *c, const char *who,
                               const char *addr)
{
    static const char *const args[] = {"type", NULL};
    if (query_unknown(c, args))
        return respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                             "the one parameter is type, given once",
                             "unknown or repeated query parameter");
    const char *type;
    struct djob_spec s = {.kind = DJOB_BACKUP};
    enum MHD_Result mr;
    if (query_value(c, "type", &type) != 0)
        return respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                             "type is \"full\" or \"incremental\"", "invalid type");
    if (type_parse(c, type ? type : "incremental", &s.type, &mr) != 0)
        return mr;
    return submit(a, c, &s, who, addr);
}

static enum MHD_Result ep_list(struct api *a, struct MHD_Connection *c)
{
    static const char *const args[] = {"includeFiles", "includeStats", NULL};
    bool files = true, stats = true;
    if (query_unknown(c, args))
        return respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                             "the parameters are includeFiles and includeStats, each once",
                             "unknown or repeated query parameter");
    if (query_bool(c, "includeFiles", &files) != 0 || query_bool(c, "includeStats", &stats) != 0)
        return respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "write true or false",
                             "includeFiles and includeStats are true or false");
    struct err e = ERR_INIT;
    pthread_mutex_lock(&a->mu);
    struct repo *r = reader_locked(a, &e);
    json_t *list = r ? api_backup_list(r, files ? NULL : "database", stats, &e) : NULL;
    pthread_mutex_unlock(&a->mu);
    if (!list)
        return respond_err(c, &e);
    return respond(c, MHD_HTTP_OK, json_pack("{s:o}", "backups", list), NULL, NULL);
}

/* verify and restore: the backupId and type of the body, resolved. */
static int body_backup(struct api *a, struct MHD_Connection *c, json_t *o, struct djob_spec *s,
                       enum MHD_Result *mr)
{
    const char *text, *type;
    if (field_string(c, o, "backupId", CARIS_ID_MAX - 1, &text, mr) != 0 ||
        field_string(c, o, "type", 16, &type, mr) != 0)
        return -1;
    if (!text) {
        *mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "give the id of a backup (GET /api/admin/backup/list)",
                            "field \"backupId\" is missing");
        return -1;
    }
    if (type && strcmp(type, "database") != 0 && strcmp(type, "files") != 0) {
        *mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "type is \"database\" or \"files\"", "invalid type");
        return -1;
    }
    if (!backup_id_text_ok(text)) {
        *mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "a backup id is letters, digits and _ - . : (e.g. "
                            "caris_full_2024-01-15T03-00-00, or latest)",
                            "invalid backupId");
        return -1;
    }
    struct err e = ERR_INIT;
    if (resolve_backup(a, text, type, s->backup_id, s->what, &e) != 0) {
        *mr = respond_err(c, &e);
        return -1;
    }
    return 0;
}

static enum MHD_Result ep_verify(struct api *a, struct MHD_Connection *c, const struct req *q,
                                 const char *who, const char *addr)
{
    enum MHD_Result mr;
    json_t *o = body_object(c, q, &mr);
    if (!o)
        return mr;
    static const char *const fields[] = {"backupId", "type", NULL};
    struct djob_spec s = {.kind = DJOB_VERIFY};
    int rc = body_fields(c, o, fields, &mr) == 0 && body_backup(a, c, o, &s, &mr) == 0 ? 0 : -1;
    json_decref(o);
    return rc == 0 ? submit(a, c, &s, who, addr) : mr;
}

static enum MHD_Result ep_restore(struct api *a, struct MHD_Connection *c, const struct req *q,
                                  const char *who, const char *addr)
{
    enum MHD_Result mr;
    json_t *o = body_object(c, q, &mr);
    if (!o)
        return mr;
    static const char *const fields[] = {"backupId", "type",  "dryRun", "verify",  "targetUrl",
                                         "target",   "clean", "create", "confirm", NULL};
    struct djob_spec s = {.kind = DJOB_RESTORE, .dry_run = true};
    const char *target_url = NULL, *target = NULL, *confirm = NULL;
    int rc = -1;
    if (body_fields(c, o, fields, &mr) != 0 || field_bool(c, o, "dryRun", &s.dry_run, &mr) != 0 ||
        field_bool(c, o, "verify", &s.verify, &mr) != 0 ||
        field_bool(c, o, "clean", &s.clean, &mr) != 0 ||
        field_bool(c, o, "create", &s.create, &mr) != 0 ||
        field_string(c, o, "targetUrl", DJOB_TARGET_MAX - 1, &target_url, &mr) != 0 ||
        field_string(c, o, "target", DJOB_TARGET_MAX - 1, &target, &mr) != 0 ||
        field_string(c, o, "confirm", CARIS_ID_MAX - 1, &confirm, &mr) != 0 ||
        body_backup(a, c, o, &s, &mr) != 0)
        goto out;
    bool db = strcmp(s.what, "database") == 0;
    if ((db && target) || (!db && (target_url || s.clean || s.create))) {
        mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                           "targetUrl, clean and create are for database backups; target (a "
                           "directory) for files backups",
                           "field not valid for a %s backup", s.what);
        goto out;
    }
    if (!s.dry_run) {
        /* a restore changes a database or a directory: the client must name the backup a
         * second time, resolved, as it was shown to the person who confirmed */
        if (!confirm || strcmp(confirm, s.backup_id) != 0) {
            mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                               "a restore that is not a dry run needs \"confirm\": the full "
                               "backup id (as in backupId once resolved)",
                               "restore of %s not confirmed", s.backup_id);
            goto out;
        }
        if (!db && !target) {
            mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                               "give \"target\": an empty directory to restore into",
                               "field \"target\" is missing");
            goto out;
        }
        if (!db && target[0] != '/') {
            mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "give an absolute path",
                               "field \"target\" is not absolute");
            goto out;
        }
    }
    struct err te = ERR_INIT;
    if (target_url && caris_restore_target_check(target_url, &te) != 0) {
        mr = respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", te.hint[0] ? te.hint : NULL,
                           "field \"targetUrl\": %s", te.msg);
        goto out;
    }
    snprintf(s.target, sizeof(s.target), "%s", target_url ? target_url : target ? target : "");
    rc = 0;
out:
    json_decref(o); /* the target URL's text goes with it (jansson's copy is not wiped) */
    if (rc != 0) {
        cx_wipe(s.target, sizeof(s.target));
        return mr;
    }
    mr = submit(a, c, &s, who, addr);
    cx_wipe(s.target, sizeof(s.target));
    return mr;
}

/* The audit log's last lines (admin: it names actors and addresses). */
static enum MHD_Result ep_audit(struct api *a, struct MHD_Connection *c)
{
    static const char *const args[] = {"limit", NULL};
    const char *ls;
    bool no_value = query_value(c, "limit", &ls) != 0;
    char *end = NULL;
    /* digits only: strtol would take " 5" and "+5" */
    long limit = ls && ls[0] >= '0' && ls[0] <= '9' ? strtol(ls, &end, 10) : ls ? 0 : 50;
    if (no_value || query_unknown(c, args) || (ls && (!end || *end || limit < 1 || limit > 1000)))
        return respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                             "limit is a number of lines from 1 to 1000 (default 50)",
                             "invalid query parameter");
    struct err e = ERR_INIT;
    json_t *lines = caris_audit_read_tail(a->backup_dir, (size_t)limit, &e);
    if (!lines)
        return respond_err(c, &e);
    return respond(c, MHD_HTTP_OK, json_pack("{s:o}", "lines", lines), NULL, NULL);
}

static enum MHD_Result ep_job(struct api *a, struct MHD_Connection *c, const char *id)
{
    size_t n = strlen(id);
    bool ok = n > 4 && n < DJOB_ID_MAX && strncmp(id, "job-", 4) == 0;
    for (size_t i = 4; ok && i < n; i++)
        ok = (id[i] >= '0' && id[i] <= '9') || id[i] == '-';
    json_t *j = ok ? daemon_job_json(a->d, id) : NULL;
    if (!j)
        return respond_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                             "job ids are returned by the POST endpoints (jobId); finished "
                             "jobs are kept until 50 newer ones ended or the daemon restarts (a "
                             "job still queued when the daemon stopped was dropped: the audit log "
                             "names it)",
                             "no such job");
    return respond(c, MHD_HTTP_OK, j, NULL, NULL);
}

/* ---- routing ------------------------------------------------------------------------------ */

struct route {
    const char *path; /* exact, or a prefix ending in '/' for jobs/{id} */
    const char *method;
    enum access need;
};

static const struct route ROUTES[] = {
    {"/api/admin/backup/create", "POST", ACCESS_ADMIN},
    {"/api/admin/backup/list", "GET", ACCESS_VIEWER},
    {"/api/admin/backup/verify", "POST", ACCESS_ADMIN},
    {"/api/admin/backup/restore", "POST", ACCESS_ADMIN},
    {"/api/admin/backup/status", "GET", ACCESS_VIEWER},
    {"/api/admin/backup/jobs/", "GET", ACCESS_VIEWER},
    {"/api/cron/backup", "GET", ACCESS_CRON},
    {"/api/admin/backup/audit", "GET", ACCESS_ADMIN},
};

/* The dashboard's files (no credential needed: they hold none; the page asks for a token
 * and sends it to the API). */
static enum MHD_Result serve_dashboard(struct MHD_Connection *c, const char *url,
                                       const char *method)
{
    const char *name = NULL;
    if (strcmp(url, "/admin/backup") == 0 || strcmp(url, "/admin/backup/") == 0)
        name = "index.html";
    else if (strcmp(url, "/admin/backup/app.js") == 0)
        name = "app.js";
    else if (strcmp(url, "/admin/backup/app.css") == 0)
        name = "app.css";
    const struct caris_asset *as = NULL;
    for (size_t i = 0; name && caris_dashboard_assets[i].name; i++)
        if (strcmp(caris_dashboard_assets[i].name, name) == 0)
            as = &caris_dashboard_assets[i];
    if (!as)
        return respond_error(c, MHD_HTTP_NOT_FOUND, "not_found", "the dashboard is /admin/backup",
                             "no such page");
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                       json_pack("{s:{s:s, s:s, s:s}}", "error", "code", "method_not_allowed",
                                 "message", "method not allowed on this page", "hint", "use GET"),
                       "Allow", "GET, HEAD");
    struct MHD_Response *r =
        MHD_create_response_from_buffer(as->size, (void *)as->data, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", as->type);
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Connection", "close"); /* as respond() */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'self'; style-src 'self'; "
                            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                            "form-action 'none'; frame-ancestors 'none'");
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    last_status = MHD_HTTP_OK;
    return rc;
}

/* who and addr: filled once known (for the audit line). */
static enum MHD_Result route(struct api *a, struct MHD_Connection *c, const char *url,
                             const char *method, const struct req *q, char who[80],
                             char addr[INET6_ADDRSTRLEN])
{
    if (strcmp(url, "/healthz") == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                           json_pack("{s:{s:s, s:s, s:s}}", "error", "code", "method_not_allowed",
                                     "message", "method not allowed on this endpoint", "hint",
                                     "use GET"),
                           "Allow", "GET, HEAD");
        return respond(c, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"), NULL, NULL);
    }
    if (strncmp(url, "/admin/backup", 13) == 0)
        return serve_dashboard(c, url, method);
    const struct route *rt = NULL;
    const char *rest = NULL;
    for (size_t i = 0; i < sizeof(ROUTES) / sizeof(ROUTES[0]) && !rt; i++) {
        size_t n = strlen(ROUTES[i].path);
        if (ROUTES[i].path[n - 1] == '/' ? strncmp(url, ROUTES[i].path, n) == 0 && url[n]
                                         : strcmp(url, ROUTES[i].path) == 0) {
            rt = &ROUTES[i];
            rest = url + n;
        }
    }
    if (!rt)
        return respond_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                             "the endpoints are listed in docs/BACKUP_RECOVERY.md",
                             "no such endpoint");
    client_addr(c, addr);
    const char *cross = cross_site_refusal(c);
    if (cross) {
        /* not audited: a page could loop on it, and fill the log (nothing was looked at) */
        skip_audit = true;
        return respond_error(c, MHD_HTTP_FORBIDDEN, "forbidden",
                             "the API serves the dashboard's own page and clients that are not "
                             "browsers; a page of another site may not call it",
                             "%s", cross);
    }
    enum MHD_Result mr;
    if (authorize(a, c, rt->need, addr, who, &mr) != 0)
        return mr;
    if (strcmp(method, rt->method) != 0) {
        char hint[32];
        snprintf(hint, sizeof(hint), "use %s", rt->method);
        json_t *j = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", "method_not_allowed",
                              "message", "method not allowed on this endpoint", "hint", hint);
        return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, j, "Allow", rt->method);
    }
    if (strcmp(rt->method, "GET") == 0 && q->body.len)
        return respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request", "send no body with GET",
                             "unexpected body");
    /* list, cron and audit take parameters (and check them); the others none */
    static const char *const none[] = {NULL};
    if (strcmp(rt->path, "/api/admin/backup/list") != 0 &&
        strcmp(rt->path, "/api/cron/backup") != 0 &&
        strcmp(rt->path, "/api/admin/backup/audit") != 0 && query_unknown(c, none))
        return respond_error(c, MHD_HTTP_BAD_REQUEST, "bad_request",
                             "this endpoint takes no query parameters (a POST's fields go in its "
                             "JSON body)",
                             "unknown query parameter");
    if (strcmp(rt->path, "/api/admin/backup/create") == 0)
        return ep_create(a, c, q, who, addr);
    if (strcmp(rt->path, "/api/admin/backup/list") == 0)
        return ep_list(a, c);
    if (strcmp(rt->path, "/api/admin/backup/verify") == 0)
        return ep_verify(a, c, q, who, addr);
    if (strcmp(rt->path, "/api/admin/backup/restore") == 0)
        return ep_restore(a, c, q, who, addr);
    if (strcmp(rt->path, "/api/admin/backup/status") == 0)
        return respond(c, MHD_HTTP_OK, daemon_status_json(a->d), NULL, NULL);
    if (strcmp(rt->path, "/api/cron/backup") == 0)
        return ep_cron(a, c, who, addr);
    if (strcmp(rt->path, "/api/admin/backup/audit") == 0)
        return ep_audit(a, c);
    return ep_job(a, c, rest);
}

/* The audit line of an API request: every one under /api/ but the reads a dashboard polls
 * (status and jobs, when answered 200). The body's fields the API knows are recorded (never
 * the text of a target URL); a field it does not know is not, nor its name — a client may
 * have put anything there, a password too — only how many there were. */
static void audit_request(struct api *a, const char *url, const char *method, const struct req *q,
                          const char *who, const char *addr)
{
    if (strncmp(url, "/api/", 5) != 0 || !*addr || skip_audit)
        return;
    /* the reads a dashboard polls; a read of the audit log itself is audited (who read the
     * trail, and from where, is part of it) */
    if (last_status == MHD_HTTP_OK && (strcmp(url, "/api/admin/backup/status") == 0 ||
                                       strncmp(url, "/api/admin/backup/jobs/", 23) == 0))
        return;
    json_t *args = json_object();
    json_t *body =
        q->body.len ? json_loadb((const char *)q->body.data, q->body.len, 0, NULL) : NULL;
    if (json_is_object(body)) {
        const char *k;
        json_t *v;
        static const char *const known[] = {"type",    "includeFiles", "backupId", "dryRun",
                                            "verify",  "target",       "clean",    "create",
                                            "confirm", "targetUrl"};
        json_int_t unknown = 0;
        json_object_foreach(body, k, v)
        {
            bool is_known = false;
            for (size_t i = 0; i < sizeof(known) / sizeof(known[0]) && !is_known; i++)
                is_known = strcmp(k, known[i]) == 0;
            if (!is_known) {
                unknown++;
                continue;
            }
            /* every string as the command line's arguments are (a URL given in a field
             * meant for a path or an id is still a URL, and may hold a password) */
            if (json_is_string(v) && (strcmp(k, "targetUrl") == 0 ||
                                      (json_string_length(v) < 256 &&
                                       str_is_utf8(json_string_value(v), json_string_length(v))))) {
                char r[300];
                json_object_set_new(
                    args, k,
                    json_string(caris_audit_redact_arg(json_string_value(v), r, sizeof(r))));
            } else if (json_is_boolean(v) || json_is_number(v)) {
                json_object_set(args, k, v);
            }
        }
        if (unknown)
            json_object_set_new(args, "unknownFields", json_integer(unknown));
    }
    json_decref(body);
    char op[200], result[16];
    char esc[128];
    str_escape(url, strlen(url), esc, sizeof(esc));
    snprintf(op, sizeof(op), "api %s %s",
             strcmp(method, "GET") == 0    ? "GET"
             : strcmp(method, "POST") == 0 ? "POST"
                                           : "other",
             esc);
    snprintf(result, sizeof(result), "%u", last_status);
    struct caris_audit_entry en = {.actor = *who ? who : "unauthenticated",
                                   .source = addr,
                                   .operation = op,
                                   .args = args,
                                   .result = result,
                                   .duration_ms = -1};
    struct err e = ERR_INIT;
    if (caris_audit_append(a->backup_dir, &en, &e) != 0)
        daemon_log(a->d, LOG_ERROR, "audit", "%s", e.msg);
    json_decref(args);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct api *a = cls;
    struct req *q = *con_cls;
    if (!q) {
        q = xcalloc(1, sizeof(*q));
        q->start_ns = time_mono_ns();
        *con_cls = q;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || end == cl || *end || n > BODY_MAX) {
                q->too_big = true;
                return respond_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", NULL,
                                     "request body larger than %d bytes", BODY_MAX);
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        q->received += *upload_size;
        if (q->received > BODY_DROP_MAX ||
            time_mono_ns() - q->start_ns > (int64_t)BODY_DEADLINE_S * 1000000000)
            return MHD_NO;
        if (!q->too_big && q->body.len + *upload_size <= BODY_MAX)
            buf_append(&q->body, upload_data, *upload_size);
        else
            q->too_big = true;
        *upload_size = 0;
        return MHD_YES;
    }
    if (q->too_big)
        return respond_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", NULL,
                             "request body larger than %d bytes", BODY_MAX);
    char who[80] = "", addr[INET6_ADDRSTRLEN] = "";
    last_status = 0;
    skip_audit = false;
    enum MHD_Result mr = route(a, c, url, method, q, who, addr);
    audit_request(a, url, method, q, who, addr);
    return mr;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct req *q = *con_cls;
    if (q) {
        buf_free(&q->body);
        free(q);
        *con_cls = NULL;
    }
}

/* ---- start and stop ----------------------------------------------------------------------- */

/* "HOST:PORT" or "[V6]:PORT", numeric only. */
static int parse_listen(const char *s, struct sockaddr_storage *ss, struct err *e)
{
    const char *hint = "write BACKUP_API_LISTEN=127.0.0.1:8787, [::1]:8787 or none";
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof(host))
            return err_set(e, ERR_CONFIG, hint, "BACKUP_API_LISTEN: invalid address");
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof(host))
            return err_set(e, ERR_CONFIG, hint, "BACKUP_API_LISTEN: invalid address");
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || port < 0 || port > 65535)
        return err_set(e, ERR_CONFIG, hint, "BACKUP_API_LISTEN: invalid port");
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
    } else {
        return err_set(e, ERR_CONFIG, hint, "BACKUP_API_LISTEN: '%s' is not an IP address", host);
    }
    return 0;
}

static char *read_pem(const char *path, const char *var, struct err *e)
{
    struct buf b = {0};
    if (fs_read_all(path, &b, e) != 0) {
        err_wrap(e, "%s", var);
        return NULL;
    }
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

/* Stops serving too: the gate first (it hands connections to mhd), then mhd. */
/* The URL's and the query's %XX escapes, as libmicrohttpd decodes them, except %00, which is
 * kept as it is: decoded, it cut the string there, so that /api/admin/backup/list%00junk was
 * served (and audited) as /api/admin/backup/list; kept, such a path names nothing (404) and
 * such a value is invalid (400). */
static int hexval(char ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                    : -1;
}

static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi, lo;
        if (r[0] == '%' && r[1] && r[2] && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0 &&
            (hi | lo) != 0) {
            *w++ = (char)(hi << 4 | lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

/* Plain HTTP: a connection the gate handed over is closed (it counts them, api_gate.c). */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct api *a = cls;
    (void)socket_context;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED && a->gate) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        api_gate_conn_closed(a->gate, ci ? ci->client_addr : NULL);
    }
}

static void api_free(struct api *a)
{
    api_gate_close(a->gate);
    if (a->mhd)
        MHD_stop_daemon(a->mhd);
    api_gate_free(a->gate); /* after: stopping workers tell it of the connections they close */
    if (a->r)
        repo_close(a->r);
    if (a->tls_key) {
        cx_wipe(a->tls_key, strlen(a->tls_key));
        free(a->tls_key);
    }
    free(a->tls_cert);
    free(a->backup_dir);
    free(a->repo_path);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->fail_mu);
    pthread_mutex_destroy(&a->secret_mu);
    free(a);
}

/* CRON_SECRET of cfg, from now on (its hash only: the text stays in cfg). */
static void cron_secret_set(struct api *a, const struct config *cfg)
{
    const char *secret = config_get(cfg, "CRON_SECRET");
    pthread_mutex_lock(&a->secret_mu);
    a->has_cron = secret && *secret;
    if (a->has_cron)
        cx_sha256(secret, strlen(secret), a->cron_hash);
    else
        memset(a->cron_hash, 0, sizeof(a->cron_hash));
    pthread_mutex_unlock(&a->secret_mu);
}

void api_reload(struct api *a, const struct config *cfg)
{
    if (a)
        cron_secret_set(a, cfg);
}

int api_config_check(const struct config *cfg, struct err *e)
{
    const char *listen = config_get(cfg, "BACKUP_API_LISTEN");
    if (!listen || !*listen)
        listen = "127.0.0.1:8787"; /* as api_start */
    if (strcmp(listen, "none") == 0)
        return 0;
    struct sockaddr_storage ss;
    if (parse_listen(listen, &ss, e) != 0)
        return -1;
    const char *cert = config_get(cfg, "BACKUP_API_TLS_CERT");
    const char *key = config_get(cfg, "BACKUP_API_TLS_KEY");
    if ((cert && *cert) != (key && *key))
        return err_set(e, ERR_CONFIG, "set both (PEM files), or neither for plain HTTP",
                       "BACKUP_API_TLS_CERT and BACKUP_API_TLS_KEY go together");
    if (!cert || !*cert)
        return 0;
    char *c = read_pem(cert, "BACKUP_API_TLS_CERT", e),
         *k = c ? read_pem(key, "BACKUP_API_TLS_KEY", e) : NULL;
    if (k) {
        cx_wipe(k, strlen(k));
        free(k);
    }
    free(c);
    return c && k ? 0 : -1;
}

int api_start(const struct api_opts *o, struct api **out, struct err *e)
{
    *out = NULL;
    const char *listen = config_get(o->cfg, "BACKUP_API_LISTEN");
    if (!listen || !*listen)
        listen = "127.0.0.1:8787";
    if (strcmp(listen, "none") == 0) {
        daemon_log(o->d, LOG_INFO, "api", "HTTP API off (BACKUP_API_LISTEN=none)");
        return 0;
    }
    struct sockaddr_storage ss;
    if (parse_listen(listen, &ss, e) != 0 || lazylib_load(LAZYLIB_MHD, e) != 0)
        return -1;
    int64_t timeout_ns =
        daemon_test_knob_ns(o->cfg, "CARIS_TEST_API_TIMEOUT_MS", CONN_TIMEOUT_S * 1000000000LL);
    unsigned timeout_s = timeout_ns < 1000000000 ? 1u : (unsigned)(timeout_ns / 1000000000);
    struct api *a = xcalloc(1, sizeof(*a));
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->fail_mu, NULL);
    pthread_mutex_init(&a->secret_mu, NULL);
    a->d = o->d;
    a->cfg = o->cfg;
    a->backup_dir = xstrdup(o->backup_dir);
    a->repo_path = xstrdup(o->repo_path);
    cron_secret_set(a, o->cfg);
    const char *cert = config_get(o->cfg, "BACKUP_API_TLS_CERT");
    const char *key = config_get(o->cfg, "BACKUP_API_TLS_KEY");
    if ((cert && *cert) != (key && *key)) {
        api_free(a);
        return err_set(e, ERR_CONFIG, "set both (PEM files), or neither for plain HTTP",
                       "BACKUP_API_TLS_CERT and BACKUP_API_TLS_KEY go together");
    }
    bool tls = cert && *cert;
    if (tls && (!(a->tls_cert = read_pem(cert, "BACKUP_API_TLS_CERT", e)) ||
                !(a->tls_key = read_pem(key, "BACKUP_API_TLS_KEY", e)))) {
        api_free(a);
        return -1;
    }
    /* plain HTTP: the gate accepts and hands connections over (api_gate.h); with TLS the
     * request line is encrypted, libmicrohttpd listens itself */
    if (!tls && api_gate_open(&ss, CONN_MAX, CONN_PER_IP, CONN_MAX, timeout_s, &a->gate, e) != 0) {
        api_free(a);
        return err_wrap(e, "cannot serve the HTTP API on %s", listen);
    }
    /* MHD_USE_ITC with TLS too: a worker at its limit stops watching the listening socket,
     * and libmicrohttpd 0.9.75 without its wake-up channel then saw MHD_stop_daemon only at
     * the worker's next event or its 15 s timeout (SIGTERM took 15 s) */
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | (tls ? MHD_USE_TLS : 0) |
                     (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0) |
                     (tls ? 0 : MHD_USE_NO_LISTEN_SOCKET);
    /* the options as one array: the form src/core/lazylib.c forwards to the library */
    struct MHD_OptionItem opts[16];
    size_t n = 0;
#define OPT(o, v, p) (opts[n++] = (struct MHD_OptionItem){(o), (intptr_t)(v), (p)})
    OPT(MHD_OPTION_NOTIFY_COMPLETED, on_completed, a);
    if (!tls)
        OPT(MHD_OPTION_NOTIFY_CONNECTION, on_connection, a);
    OPT(MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL);
    OPT(MHD_OPTION_THREAD_POOL_SIZE, 4, NULL);
    /* without TLS the gate hands over at most CONN_MAX at once, and libmicrohttpd's limit
     * gives each of its 4 workers room for all of them (api_gate.c says why it must) */
    OPT(MHD_OPTION_CONNECTION_LIMIT, tls ? CONN_MAX : CONN_MAX * 4 + 4, NULL);
    /* without TLS the gate keeps to CONN_PER_IP handed over from an address (a connection over
     * it waits there, then 503): libmicrohttpd's own limit reset it without an answer, and
     * counts a closed connection a moment longer than the gate is told of it */
    OPT(MHD_OPTION_PER_IP_CONNECTION_LIMIT, tls ? CONN_PER_IP : 0, NULL);
    OPT(MHD_OPTION_CONNECTION_TIMEOUT, timeout_s, NULL);
    OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT, CONN_MEMORY, NULL);
    if (tls) {
        OPT(MHD_OPTION_SOCK_ADDR, 0, &ss);
        OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, a->tls_cert);
        OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, a->tls_key);
    }
    OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
    a->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, a, MHD_OPTION_ARRAY, opts,
                              MHD_OPTION_END);
    if (!a->mhd) {
        int err = errno;
        api_free(a);
        return err_sys(e, err,
                       tls ? "check that the port is free and that the certificate and key are "
                             "PEM and match"
                           : "check that the port is free (BACKUP_API_LISTEN; none turns the "
                             "API off)",
                       "cannot serve the HTTP API on %s", listen);
    }
    if (a->gate && api_gate_run(a->gate, a->mhd, e) != 0) {
        api_free(a);
        return err_wrap(e, "cannot serve the HTTP API on %s", listen);
    }
    unsigned port = 0;
    if (a->gate) {
        port = api_gate_port(a->gate);
    } else {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_BIND_PORT);
        port = di ? di->port : 0;
    }
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
    daemon_log(o->d, LOG_INFO, "api", "HTTP API listening on %s://%s%s%s:%u",
               tls ? "https" : "http", ss.ss_family == AF_INET6 ? "[" : "", host,
               ss.ss_family == AF_INET6 ? "]" : "", port);
    *out = a;
    return 0;
}

void api_stop(struct api *a)
{
    if (!a)
        return;
    api_free(a);
}

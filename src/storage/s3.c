/* The S3 backend: a repository as objects under BUCKET/PREFIX/ of an S3-compatible server,
 * through libcurl, every request signed with our SigV4 (caris/sigv4.h).
 *
 * Location: s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX] (path-style addressing).
 * Mapping of the storage contract (caris/storage.h) onto S3:
 * - put: one PUT. S3 PUTs are atomic (an object is visible whole or not at all), so there
 *   are no temporary files and list_temp lists nothing. The body's SHA-256 is signed
 *   (x-amz-content-sha256) and sent as x-amz-checksum-sha256, its MD5 as Content-MD5: the
 *   server refuses a body that changed on the way; the response's checksum (or its ETag,
 *   the MD5 of a single-part upload) is checked too. A 2xx answer with neither confirms
 *   nothing (something else answered in the server's place): the PUT is sent again.
 * - read_at: ranged GETs. Pack objects (data/) are immutable: a read fetches the aligned
 *   window of READ_WINDOW bytes that holds it and keeps the last few windows, so the
 *   blob-by-blob reads of a restore cost one GET per window, not one per blob.
 * - put is made by the caller's thread; storage.connections (BACKUP_S3_CONNECTIONS) tells
 *   the upload queue (queue.c) how many puts may run at once.
 * - put_new: a PUT with If-None-Match: * (412: the object exists), after a HEAD.
 * - list: ListObjectsV2 with continuation tokens.
 * Failures: connection errors, timeouts, 5xx (503 SlowDown included), 408, 429, the transient
 * 4xx errors of S3 (400 RequestTimeout, 409 OperationAborted: told by the error document's
 * <Code>), truncated bodies and 2xx answers to a PUT that confirm nothing are retried with
 * exponential backoff and jitter (at least the answer's Retry-After, when it has one) within a
 * total time (BACKUP_S3_RETRY_SECONDS, default 60); 403, a
 * missing bucket and a wrong region are reported at once. Secrets (the secret key, the session
 * token) are kept in secret memory and never appear in a message. */
#include <curl/curl.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "caris/config.h"
#include "caris/lazylib.h"
#include "caris/crypto.h"
#include "caris/secmem.h"
#include "caris/sigv4.h"
#include "caris/storage.h"

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define MAX_XML (16u << 20)      /* a list page or an error document */
#define READ_WINDOW (2u << 20)   /* bytes fetched ahead by a read of a pack */
#define READ_CACHE 64            /* windows kept (or being read): at most 128 MiB */
#define READ_DIRECT (8u << 20)   /* reads of a pack this large bypass the windows */
#define IDLE_HANDLES 80          /* curl handles (each with its connections) kept for reuse */
#define DEFAULT_RETRY_SECONDS 60 /* total time spent retrying one request */
/* a longer Retry-After is taken as this (and the retry time caps it in any case) */
#define RETRY_AFTER_MAX_S 60
#define DEFAULT_CONNECTIONS 8 /* uploads at once (BACKUP_S3_CONNECTIONS) */

/* ---- settings ------------------------------------------------------------------------ */

static const struct config *settings; /* NULL: the environment alone (config_get's rule) */

void storage_set_config(const struct config *c)
{
    settings = c;
}

static volatile sig_atomic_t *cancel_flag;

void storage_set_cancel(volatile sig_atomic_t *flag)
{
    __atomic_store_n(&cancel_flag, flag, __ATOMIC_RELEASE); /* (threads may be reading it) */
}

static bool cancelled(void)
{
    volatile sig_atomic_t *f = __atomic_load_n(&cancel_flag, __ATOMIC_ACQUIRE);
    return f && __atomic_load_n(f, __ATOMIC_RELAXED);
}

/* libcurl's progress callback: a non-zero return aborts the transfer. A request begun before
 * the cancel stops; one begun after it (ctx non-NULL) goes on: what a cancelled command does
 * on its way out (removing its lock, its temporary objects) must still reach the server. */
static int on_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return !ctx && cancelled();
}

static const char *setting(const char *name)
{
    return config_get(settings, name);
}

/* The first of two names that is set (AWS_* first, then BACKUP_S3_*). */
static const char *setting2(const char *a, const char *b)
{
    const char *v = setting(a);
    return v ? v : setting(b);
}

const char *storage_s3_region(void)
{
    const char *region = setting("AWS_REGION");
    if (!region)
        region = setting2("AWS_DEFAULT_REGION", "BACKUP_S3_REGION");
    return region ? region : "us-east-1";
}

static char *cache_root;

void storage_set_cache_root(const char *dir)
{
    free(cache_root);
    cache_root = dir ? xstrdup(dir) : NULL;
}

/* ---- counters (storage_s3_get_counters) ------------------------------------------- */

static _Atomic uint64_t n_requests, n_sent, n_received;

void storage_s3_get_counters(struct storage_s3_counters *out)
{
    out->requests = atomic_load(&n_requests);
    out->bytes_sent = atomic_load(&n_sent);
    out->bytes_received = atomic_load(&n_received);
}

/* ---- the handle ---------------------------------------------------------------------- */

struct window {
    char *name;
    uint64_t off;
    struct buf data;
    uint64_t used; /* LRU clock */
    bool loading;  /* a thread is reading [off, off + want) into it */
    bool dropped;  /* forgotten while loading: the loader frees it */
    size_t want;
};

struct s3_storage {
    struct storage base;
    char *endpoint; /* scheme://host[:port] */
    char *host;     /* host[:port], the Host header */
    char *bucket;
    char *prefix;      /* "" or "some/prefix/" */
    bool virtual_host; /* the bucket is the host's first label, not the path's first part */
    char *access_key;
    char *secret_key; /* secret memory */
    char *token;      /* secret memory, may be NULL */
    char *region;
    char *ca_file;
    char *cache_dir; /* local copies of index files and snapshots; NULL: none */
    bool copies_off; /* storage_local_copies(false): neither read nor written */
    int64_t retry_ns;
    /* The server answered a PUT with the x-amz-checksum-sha256 it checked: it verifies that
     * header, so later PUTs need no Content-MD5 (see do_put). */
    atomic_bool checksums_confirmed;
    char list_page[8]; /* max-keys of a listing ("": the server's default, 1,000 on AWS) */
    pthread_mutex_t mu;
    pthread_cond_t loaded; /* a window stopped loading */
    CURL *idle[IDLE_HANDLES];
    size_t nidle;
    struct window cache[READ_CACHE];
    uint64_t clock;
};

static struct s3_storage *S(struct storage *s)
{
    return (struct s3_storage *)s;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static CURL *handle_take(struct s3_storage *s)
{
    pthread_mutex_lock(&s->mu);
    CURL *c = s->nidle ? s->idle[--s->nidle] : NULL;
    pthread_mutex_unlock(&s->mu);
    if (c)
        curl_easy_reset(c); /* keeps its open connections */
    else
        c = curl_easy_init();
    return c;
}

static void handle_give(struct s3_storage *s, CURL *c)
{
    pthread_mutex_lock(&s->mu);
    if (s->nidle < IDLE_HANDLES) {
        s->idle[s->nidle++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (c)
        curl_easy_cleanup(c);
}

/* ---- one request --------------------------------------------------------------------- */

struct request {
    const char *method; /* GET PUT HEAD DELETE */
    const char *name;   /* object name relative to the repository; NULL: the bucket */
    const struct sigv4_param *query;
    size_t nquery;
    const struct sigv4_header *extra; /* more headers to send and sign */
    size_t nextra;
    const void *body;
    size_t body_len;
    const char *body_sha256; /* hex; NULL: computed */
    void *out;               /* GET: bytes go here, at most out_cap */
    size_t out_cap;
    bool limit_body; /* out NULL: a successful answer's body holds at most body_max bytes */
    size_t body_max;
};

struct response {
    long status;
    struct buf body; /* when req.out is NULL: up to MAX_XML */
    size_t out_len;  /* when req.out is set */
    bool overflow;
    uint64_t content_length;
    bool has_length;
    char etag[80];
    char checksum[80];
    char last_modified[80];
    char content_range[120];
    char bucket_region[64];
    bool etag_not_md5; /* x-amz-server-side-encryption: aws:kms (or SSE-C): the ETag is no MD5 */
    int64_t retry_after_ms; /* Retry-After (delta-seconds, at most RETRY_AFTER_MAX_S); 0: none */
    /* upload */
    size_t sent;
};

struct transfer {
    const struct request *rq;
    struct response *rs;
    CURL *c;
};

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    struct transfer *t = ctx;
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(t->c, CURLINFO_RESPONSE_CODE, &status);
    /* Only a successful answer's body is the object's bytes; an error's is an XML document. */
    if (t->rq->out && status >= 200 && status < 300) {
        if (len > t->rq->out_cap - t->rs->out_len) {
            t->rs->overflow = true;
            return 0;
        }
        memcpy((uint8_t *)t->rq->out + t->rs->out_len, p, len);
        t->rs->out_len += len;
        return len;
    }
    size_t cap = t->rq->limit_body && status >= 200 && status < 300 ? t->rq->body_max : MAX_XML;
    if (len > cap - t->rs->body.len) {
        t->rs->overflow = true;
        return 0;
    }
    buf_append(&t->rs->body, p, len);
    return len;
}

static void header_copy(char *dst, size_t cap, const char *v, size_t n)
{
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *ctx)
{
    struct response *rs = ctx;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue): forget the previous one's headers. */
        rs->has_length = false;
        rs->etag[0] = rs->checksum[0] = rs->last_modified[0] = rs->content_range[0] = '\0';
        rs->etag_not_md5 = false;
        rs->retry_after_ms = 0;
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon)
        return len;
    size_t klen = (size_t)(colon - p);
    const char *v = colon + 1;
    size_t vlen = len - klen - 1;
    char tmp[80];
#define IS(k) (klen == strlen(k) && strncasecmp(p, k, klen) == 0)
    if (IS("content-length")) {
        header_copy(tmp, sizeof(tmp), v, vlen);
        char *end;
        errno = 0;
        unsigned long long x = strtoull(tmp, &end, 10);
        if (!errno && end != tmp && !*end) {
            rs->content_length = x;
            rs->has_length = true;
        }
    } else if (IS("retry-after")) {
        /* seconds (the HTTP-date form is not used by S3 servers; ignored) */
        header_copy(tmp, sizeof(tmp), v, vlen);
        char *end;
        errno = 0;
        unsigned long long x = strtoull(tmp, &end, 10);
        if (!errno && end != tmp && !*end && tmp[0] >= '0' && tmp[0] <= '9')
            rs->retry_after_ms = (int64_t)(x > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : x) * 1000;
    } else if (IS("etag")) {
        header_copy(rs->etag, sizeof(rs->etag), v, vlen);
    } else if (IS("x-amz-checksum-sha256")) {
        header_copy(rs->checksum, sizeof(rs->checksum), v, vlen);
    } else if (IS("last-modified")) {
        header_copy(rs->last_modified, sizeof(rs->last_modified), v, vlen);
    } else if (IS("content-range")) {
        header_copy(rs->content_range, sizeof(rs->content_range), v, vlen);
    } else if (IS("x-amz-bucket-region")) {
        header_copy(rs->bucket_region, sizeof(rs->bucket_region), v, vlen);
    } else if (IS("x-amz-server-side-encryption")) {
        /* "aws:kms", "aws:kms:dsse": the server encrypts with keys of a key service, and the
         * ETag of such an object is not the MD5 of its bytes ("AES256" keeps the MD5) */
        header_copy(tmp, sizeof(tmp), v, vlen);
        if (strncasecmp(tmp, "aws:kms", 7) == 0)
            rs->etag_not_md5 = true;
    } else if (IS("x-amz-server-side-encryption-customer-algorithm")) {
        rs->etag_not_md5 = true; /* SSE-C: the same */
    }
#undef IS
    return len;
}

static size_t on_upload(char *p, size_t size, size_t n, void *ctx)
{
    struct transfer *t = ctx;
    size_t room = size * n, left = t->rq->body_len - t->rs->sent;
    size_t k = room < left ? room : left;
    if (k)
        memcpy(p, (const uint8_t *)t->rq->body + t->rs->sent, k);
    t->rs->sent += k;
    return k;
}

static void amz_date_now(char out[17])
{
    time_t now = (time_t)(time_now_ns() / 1000000000);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* The object's key: the repository's prefix and its name. */
static char *object_uri(const struct s3_storage *s, const char *name)
{
    struct buf b = {0};
    buf_append_u8(&b, '/');
    if (!s->virtual_host)
        sigv4_uri_encode(&b, s->bucket, false);
    if (name) {
        if (!s->virtual_host)
            buf_append_u8(&b, '/');
        char *key = xasprintf("%s%s", s->prefix, name);
        sigv4_uri_encode(&b, key, true);
        free(key);
    }
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

/* One attempt. Returns the curl result; the HTTP status is in rs->status. */
static CURLcode attempt(struct s3_storage *s, CURL *c, const struct request *rq,
                        struct response *rs, bool after_cancel)
{
    char date[17];
    amz_date_now(date);
    char hash[65];
    if (rq->body_sha256) {
        snprintf(hash, sizeof(hash), "%s", rq->body_sha256);
    } else if (rq->body_len) {
        uint8_t d[32];
        cx_sha256(rq->body, rq->body_len, d);
        cx_hex(d, 32, hash);
    } else {
        snprintf(hash, sizeof(hash), "%s", EMPTY_SHA256);
    }
    size_t nh = 0;
    struct sigv4_header h[16];
    h[nh++] = (struct sigv4_header){"host", s->host};
    h[nh++] = (struct sigv4_header){"x-amz-date", date};
    h[nh++] = (struct sigv4_header){"x-amz-content-sha256", hash};
    if (s->token)
        h[nh++] = (struct sigv4_header){"x-amz-security-token", s->token};
    for (size_t i = 0; i < rq->nextra && nh < 16; i++)
        h[nh++] = rq->extra[i];
    char *uri = object_uri(s, rq->name);
    struct sigv4_request sr = {rq->method, uri, rq->query, rq->nquery, h, nh, hash};
    struct sigv4_key k = {s->access_key, s->secret_key, s->region, "s3"};
    char *auth = sigv4_authorization(&k, date, &sr);
    char *query = sigv4_canonical_query(rq->query, rq->nquery);
    char *url = xasprintf("%s%s%s%s", s->endpoint, uri, *query ? "?" : "", query);
    free(query);
    free(uri);

    struct curl_slist *hl = NULL;
    for (size_t i = 1; i < nh; i++) { /* curl sends Host itself, from the URL */
        char *line = xasprintf("%s: %s", h[i].name, h[i].value);
        hl = curl_slist_append(hl, line);
        cx_wipe(line, strlen(line)); /* may hold the session token */
        free(line);
    }
    char *authline = xasprintf("Authorization: %s", auth);
    hl = curl_slist_append(hl, authline);
    free(authline);
    free(auth);
    hl = curl_slist_append(hl, "Expect:");
    hl = curl_slist_append(hl, "Content-Type:");

    struct transfer t = {rq, rs, c};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (s->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, s->ca_file);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
    /* A transfer that moves less than 1 KiB a second for 30 seconds is dead (at one byte a
     * second, a server that answered a byte now and then held a request for ever), and none
     * takes longer than 10 minutes, or an upload 16 KiB a second (a 16 MiB pack: 17 min). */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
    size_t expect = rq->body_len > rq->out_cap ? rq->body_len : rq->out_cap;
    if (rq->limit_body && rq->body_max > expect)
        expect = rq->body_max;
    long limit_s = 600;
    if (expect / 16384 > (size_t)limit_s)
        limit_s = (long)(expect / 16384);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, limit_s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, after_cancel ? (void *)c : NULL);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, rs);
    if (strcmp(rq->method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_upload);
        curl_easy_setopt(c, CURLOPT_READDATA, &t);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)rq->body_len);
    } else if (strcmp(rq->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(rq->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq->method);
    }
    CURLcode rc = curl_easy_perform(c);
    atomic_fetch_add(&n_requests, 1);
    atomic_fetch_add(&n_sent, rs->sent);
    atomic_fetch_add(&n_received, rs->out_len + rs->body.len);
    rs->status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rs->status);
    curl_slist_free_all(hl);
    free(url);
    return rc;
}

/* The content of the first <tag>...</tag> in an XML document, as it is (entities not
 * decoded: an element holding others, whose texts are decoded once, by xml_text); NULL when
 * absent. *after: just past </tag>. */
static const char *xml_span(const char *doc, size_t len, const char *tag, size_t *n,
                            const char **after)
{
    if (!doc || !len) /* an empty body (its data pointer may be NULL) */
        return NULL;
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *end = doc + len;
    const char *a = memmem(doc, len, open, strlen(open));
    if (!a)
        return NULL;
    a += strlen(open);
    const char *b = memmem(a, (size_t)(end - a), close, strlen(close));
    if (!b)
        return NULL;
    if (after)
        *after = b + strlen(close);
    *n = (size_t)(b - a);
    return a;
}

/* The text of <tag>...</tag> in an XML document, entities decoded; NULL when absent. */
static char *xml_text(const char *doc, size_t len, const char *tag, const char **after)
{
    size_t inner;
    const char *a = xml_span(doc, len, tag, &inner, after);
    if (!a)
        return NULL;
    const char *b = a + inner;
    struct buf out = {0};
    for (const char *p = a; p < b; p++) {
        if (*p != '&') {
            buf_append_u8(&out, (uint8_t)*p);
            continue;
        }
        static const struct {
            const char *ent;
            char c;
        } ents[] = {
            {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
        bool done = false;
        for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]) && !done; i++) {
            size_t n = strlen(ents[i].ent);
            if ((size_t)(b - p) >= n && strncmp(p, ents[i].ent, n) == 0) {
                buf_append_u8(&out, (uint8_t)ents[i].c);
                p += n - 1;
                done = true;
            }
        }
        if (!done && p + 2 < b && p[1] == '#') {
            const char *semi = memchr(p, ';', (size_t)(b - p));
            long cp = semi ? strtol(p + 2 + (p[2] == 'x'), NULL, p[2] == 'x' ? 16 : 10) : 0;
            if (semi && cp > 0 && cp < 128) {
                buf_append_u8(&out, (uint8_t)cp);
                p = semi;
                done = true;
            }
        }
        if (!done)
            buf_append_u8(&out, '&');
    }
    buf_append_u8(&out, 0);
    return (char *)out.data;
}

/* S3's error code (the <Code> of an error document), NULL when the body has none. */
static char *error_code(const struct response *rs)
{
    return xml_text((const char *)rs->body.data, rs->body.len, "Code", NULL);
}

/* An answer worth another attempt: a server failing or busy (5xx, 429), a timeout (408), and
 * the transient errors S3 gives a 4xx status: 400 RequestTimeout (an upload that stalled on
 * the way; AWS's SDKs send it again) and 409 OperationAborted (a conflicting operation on
 * the object or bucket was in progress). */
static bool transient_status(long status, const char *code)
{
    return status >= 500 || status == 429 || status == 408 ||
           (code && (strcmp(code, "RequestTimeout") == 0 || strcmp(code, "OperationAborted") == 0));
}

static bool retryable(CURLcode rc, long status, const char *code)
{
    if (rc != CURLE_OK)
        return rc != CURLE_SSL_CACERT_BADFILE && rc != CURLE_PEER_FAILED_VERIFICATION &&
               rc != CURLE_UNSUPPORTED_PROTOCOL && rc != CURLE_URL_MALFORMAT &&
               rc != CURLE_SSL_CERTPROBLEM && rc != CURLE_WRITE_ERROR;
    return transient_status(status, code);
}

/* Waits before attempt n (1, 2, ...): exponential, capped at 5 s, with jitter (half to all
 * of it), so that writers that failed together do not retry together; at least min_ms (the
 * server's Retry-After: a server shedding load asks for longer than our backoff); never past
 * deadline. */
static void backoff(int n, int64_t deadline, int64_t min_ms, bool after_cancel)
{
    int64_t ms = 100;
    for (int i = 1; i < n && ms < 5000; i++)
        ms *= 2;
    if (ms > 5000)
        ms = 5000;
    uint32_t r;
    cx_random(&r, sizeof(r));
    ms = ms / 2 + (int64_t)(r % (uint32_t)(ms / 2 + 1));
    if (ms < min_ms)
        ms = min_ms;
    int64_t left = (deadline - time_mono_ns()) / 1000000;
    if (ms > left)
        ms = left > 0 ? left : 0;
    /* in slices of 100 ms, looking at the cancel between them: a worker thread is not the
     * one the signal interrupts */
    int64_t end = time_mono_ns() + ms * 1000000;
    for (int64_t now; (now = time_mono_ns()) < end && (after_cancel || !cancelled());) {
        int64_t slice = end - now < 100000000 ? end - now : 100000000;
        struct timespec ts = {0, (long)slice};
        nanosleep(&ts, NULL);
    }
}

/* Turns a final failure into an error naming the object, the status and S3's code (code,
 * from error_code; NULL when none). */
static int fail(struct s3_storage *s, const struct request *rq, CURLcode rc,
                const struct response *rs, const char *code, int attempts, struct err *e)
{
    const char *obj = rq->name ? rq->name : "(bucket)";
    if (rc != CURLE_OK)
        return err_set(e, ERR_IO,
                       "check that the S3 endpoint is reachable (network, TLS certificate, "
                       "BACKUP_S3_CA_FILE), then run the command again",
                       "cannot %s %s in %s: %s (after %d attempt%s)", rq->method, obj,
                       s->base.location, curl_easy_strerror(rc), attempts,
                       attempts == 1 ? "" : "s");
    char *region =
        rs->body.len ? xml_text((const char *)rs->body.data, rs->body.len, "Region", NULL) : NULL;
    if (!region && rs->bucket_region[0])
        region = xstrdup(rs->bucket_region);
    const char *c = code ? code : "";
    int r;
    if (strcmp(c, "NoSuchBucket") == 0 || (!rq->name && rs->status == 404)) {
        /* A 404 without S3's error document may come from something that is no S3 server
         * (a wrong host or port in the location) */
        r = err_set(e, ERR_NOT_FOUND,
                    *c ? "create the bucket first, or correct the bucket in the repository location"
                       : "check the endpoint and the bucket in the repository location (the answer "
                         "was not an S3 error document), or create the bucket first",
                    "no bucket %s at %s (HTTP 404%s%s)", s->bucket, s->endpoint, *c ? " " : "", c);
    } else if (rs->status == 301 || strcmp(c, "AuthorizationHeaderMalformed") == 0 ||
               strcmp(c, "PermanentRedirect") == 0 ||
               strcmp(c, "IllegalLocationConstraintException") == 0) {
        r = err_set(e, ERR_CONFIG, "set AWS_REGION (or BACKUP_S3_REGION) to the bucket's region",
                    "wrong region for bucket %s: the request was signed for %s%s%s (HTTP %ld%s%s)",
                    s->bucket, s->region, region ? ", the bucket is in " : "", region ? region : "",
                    rs->status, *c ? " " : "", c);
    } else if (strcmp(c, "RequestTimeTooSkewed") == 0) {
        /* signatures carry the time: a clock more than 15 minutes off is refused */
        char *server = xml_text((const char *)rs->body.data, rs->body.len, "ServerTime", NULL);
        char now[40];
        time_format_iso(time_now_ns(), now, sizeof(now));
        r = err_set(e, ERR_CONFIG,
                    "set this machine's clock right (`date`; NTP: `timedatectl set-ntp true`): "
                    "S3 refuses requests signed more than 15 minutes off its own time",
                    "the S3 server refused the time of the request: this machine's clock says "
                    "%s%s%s (%s %s in %s: HTTP %ld RequestTimeTooSkewed)",
                    now, server ? ", the server's " : "", server ? server : "", rq->method, obj,
                    s->base.location, rs->status);
        free(server);
    } else if (strcmp(c, "ExpiredToken") == 0 || strcmp(c, "TokenRefreshRequired") == 0 ||
               strcmp(c, "InvalidToken") == 0) {
        /* temporary credentials: S3 says so with a 400, not a 403 */
        r = err_set(e, ERR_CONFIG,
                    "renew the temporary credentials: AWS_SESSION_TOKEN with the AWS_ACCESS_KEY_ID "
                    "and AWS_SECRET_ACCESS_KEY issued with it (or BACKUP_S3_SESSION_TOKEN, "
                    "BACKUP_S3_ACCESS_KEY_ID and BACKUP_S3_SECRET_ACCESS_KEY), then run the "
                    "command again",
                    "the S3 session token %s: %s %s in %s (HTTP %ld %s)",
                    strcmp(c, "InvalidToken") == 0 ? "is invalid" : "has expired", rq->method, obj,
                    s->base.location, rs->status, c);
    } else if (rs->status == 403 || rs->status == 401) {
        r = err_set(e, ERR_CONFIG,
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or BACKUP_S3_ACCESS_KEY_ID / "
                    "BACKUP_S3_SECRET_ACCESS_KEY), AWS_SESSION_TOKEN, AWS_REGION and the bucket's "
                    "permissions",
                    "access denied: %s %s in %s (HTTP %ld%s%s)", rq->method, obj, s->base.location,
                    rs->status, *c ? " " : "", c);
    } else if (rs->status == 404) {
        r = err_set(e, ERR_NOT_FOUND, NULL, "no object %s in %s", obj, s->base.location);
    } else {
        bool transient = transient_status(rs->status, code);
        r = err_set(e, transient ? ERR_IO : ERR_FAILURE,
                    transient ? "the S3 server kept failing: run the command again later" : NULL,
                    "cannot %s %s in %s: HTTP %ld%s%s (after %d attempt%s)", rq->method, obj,
                    s->base.location, rs->status, *c ? " " : "", c, attempts,
                    attempts == 1 ? "" : "s");
    }
    free(region);
    return r;
}

/* A check of a response that can fail and is worth another attempt (a truncated body, an
 * upload whose checksum came back wrong): NULL when fine, else what was wrong (and *hint,
 * when set, what to do should it stay wrong). */
typedef const char *(*response_check)(const struct request *rq, const struct response *rs,
                                      void *ctx, const char **hint);

/* Sends rq until it succeeds (2xx, or a status in ok_status), fails for good, or the retry
 * time runs out. The response of the last attempt is in *rs (the caller frees rs->body). */
static int perform(struct s3_storage *s, const struct request *rq, const long *ok_status,
                   response_check check, void *check_ctx, struct response *rs, struct err *e)
{
    CURL *c = handle_take(s);
    if (!c)
        return err_set(e, ERR_FAILURE, NULL, "cannot start an HTTP request (out of memory)");
    int64_t deadline = time_mono_ns() + s->retry_ns;
    bool after_cancel = cancelled(); /* (see on_progress) */
    int n = 0;
    for (;;) {
        n++;
        buf_free(&rs->body);
        memset(rs, 0, sizeof(*rs));
        if (!after_cancel && cancelled()) {
            handle_give(s, c);
            return err_set(e, ERR_FAILURE, NULL, "cancelled (%s %s in %s)", rq->method,
                           rq->name ? rq->name : "(bucket)", s->base.location);
        }
        CURLcode rc = attempt(s, c, rq, rs, after_cancel);
        bool ok = rc == CURLE_OK && rs->status >= 200 && rs->status < 300;
        for (const long *st = ok_status; !ok && rc == CURLE_OK && st && *st; st++)
            ok = rs->status == *st;
        const char *bad = NULL, *bad_hint = NULL;
        if (ok && check)
            bad = check(rq, rs, check_ctx, &bad_hint);
        if (ok && !bad) {
            handle_give(s, c);
            return 0;
        }
        if (!after_cancel && cancelled())
            continue; /* (said at the top of the loop, not tried again) */
        char *code = !bad && rc == CURLE_OK ? error_code(rs) : NULL;
        bool again = bad ? true : rs->overflow ? false : retryable(rc, rs->status, code);
        if (!again || time_mono_ns() >= deadline) {
            int r;
            if (bad)
                r = err_set(e, ERR_IO, bad_hint ? bad_hint : "run the command again",
                            "cannot %s %s in %s: %s (after %d attempt%s)", rq->method,
                            rq->name ? rq->name : "(bucket)", s->base.location, bad, n,
                            n == 1 ? "" : "s");
            else if (rs->overflow && rq->limit_body)
                r = err_set(e, ERR_DAMAGE,
                            "the file may be corrupted or not ours: run `caris-backup check`",
                            "%s/%s is too large (at most %zu bytes expected)", s->base.location,
                            rq->name ? rq->name : "(bucket)", rq->body_max);
            else if (rs->overflow)
                r = err_set(e, ERR_DAMAGE, NULL,
                            "%s %s in %s: the response is larger than expected", rq->method,
                            rq->name ? rq->name : "(bucket)", s->base.location);
            else
                r = fail(s, rq, rc, rs, code, n, e);
            free(code);
            handle_give(s, c);
            return r;
        }
        if (bad)
            log_debug("%s %s: retrying (%s)", rq->method, rq->name ? rq->name : "(bucket)", bad);
        else
            log_debug("%s %s: retrying (%s, HTTP %ld%s%s)", rq->method,
                      rq->name ? rq->name : "(bucket)", curl_easy_strerror(rc), rs->status,
                      code ? " " : "", code ? code : "");
        free(code);
        backoff(n, deadline, bad ? 0 : rs->retry_after_ms, after_cancel);
    }
}

/* ---- operations ---------------------------------------------------------------------- */

static void base64(const uint8_t *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

struct put_ctx {
    char checksum[64]; /* base64 SHA-256 */
    char md5hex[33];   /* "": no Content-MD5 was sent */
    bool confirmed;    /* the response carried our checksum */
    bool unconfirmed;  /* neither the checksum nor an MD5 confirmed the bytes */
};

static const char *check_put(const struct request *rq, const struct response *rs, void *ctx,
                             const char **hint)
{
    (void)rq;
    struct put_ctx *p = ctx;
    p->confirmed = p->unconfirmed = false;
    if (rs->status == 412)
        return NULL; /* If-None-Match: nothing was stored */
    if (rs->checksum[0]) {
        if (strcmp(rs->checksum, p->checksum) != 0)
            return "the server stored other bytes than were sent (x-amz-checksum-sha256 differs)";
        p->confirmed = true;
        return NULL;
    }
    if (!p->md5hex[0]) {
        p->unconfirmed = true; /* do_put sends it again with Content-MD5 */
        return NULL;
    }
    /* Without a checksum in the response, the ETag of a single-part upload is the MD5 of
     * the bytes, quoted, unless the server encrypts with its own keys (then it is not hex).
     * An S3 server answers every PUT it stored with an ETag: a 2xx without one (nor the
     * checksum) does not say that anything was stored (something between here and the server
     * answered in its place), and the PUT is sent again. */
    const char *t = rs->etag;
    if (strncmp(t, "W/", 2) == 0)
        t += 2;
    if (*t == '"')
        t++;
    size_t n = strcspn(t, "\"");
    if (n == 0) {
        *hint = "something between here and the S3 server (a proxy, a gateway) may be answering "
                "in its place: check the endpoint of the repository location, then run the "
                "command again";
        return "the server's answer confirmed nothing (no ETag, no x-amz-checksum-sha256): the "
               "object may not have been stored";
    }
    /* A server that encrypts with keys of a key service (SSE-KMS) or the client's (SSE-C)
     * answers with an ETag of 32 hex digits that is not the MD5: then the Content-MD5 sent,
     * which an S3 server checks before it stores anything (400 BadDigest), is the confirmation,
     * as with an ETag that is not hex at all. */
    if (n == 32 && strspn(t, "0123456789abcdefABCDEF") == 32 && !rs->etag_not_md5 &&
        strncasecmp(t, p->md5hex, 32) != 0)
        return "the server stored other bytes than were sent (ETag differs from the MD5)";
    return NULL;
}

static int do_put(struct s3_storage *s, const char *name, const void *data, size_t len,
                  bool if_none_match, struct err *e, int *exists)
{
    uint8_t d[32], md5[16];
    char hex[65], md5b64[32];
    struct put_ctx p = {0};
    /* A pack is named by the SHA-256 of its bytes (docs/REPOSITORY-FORMAT.md), computed when
     * it was sealed: that is the checksum the server must find, so the bytes are not hashed
     * a second time here (0.7 s of CPU per GiB). It is also the stronger check: bytes changed
     * in memory after sealing would now be refused by the server instead of stored. */
    const char *base = strrchr(name, '/');
    if (strncmp(name, "data/", 5) == 0 && base && strlen(base + 1) == 64 &&
        strspn(base + 1, "0123456789abcdef") == 64 && cx_unhex(base + 1, d, 32) == 0) {
        memcpy(hex, base + 1, 65);
    } else {
        cx_sha256(data, len, d);
        cx_hex(d, 32, hex);
    }
    base64(d, 32, p.checksum);
    /* Content-MD5 is for servers that do not check x-amz-checksum-sha256 (s3rver): then the
     * ETag, the MD5 of the bytes stored, is what confirms them. Once a server has answered
     * with the checksum it verified (AWS S3, MinIO), the MD5 (1.7 s of CPU per GiB here) is
     * left out; a later answer without the checksum makes the PUT go again with it. */
    bool md5_first = !atomic_load(&s->checksums_confirmed);
    int r = -1;
    for (int round = md5_first ? 1 : 0; round < 2; round++) {
        p.md5hex[0] = '\0';
        struct sigv4_header extra[4];
        size_t nx = 0;
        if (round == 1) {
            unsigned int mdlen = 0;
            EVP_Digest(data, len, md5, &mdlen, EVP_md5(), NULL);
            base64(md5, 16, md5b64);
            cx_hex(md5, 16, p.md5hex);
            extra[nx++] = (struct sigv4_header){"content-md5", md5b64};
        }
        extra[nx++] = (struct sigv4_header){"x-amz-checksum-sha256", p.checksum};
        if (if_none_match)
            extra[nx++] = (struct sigv4_header){"if-none-match", "*"};
        struct request rq = {.method = "PUT",
                             .name = name,
                             .extra = extra,
                             .nextra = nx,
                             .body = data,
                             .body_len = len,
                             .body_sha256 = hex};
        struct response rs = {0};
        static const long conditional[] = {412, 0};
        r = perform(s, &rq, if_none_match ? conditional : NULL, check_put, &p, &rs, e);
        if (r == 0 && exists)
            *exists = rs.status == 412;
        buf_free(&rs.body);
        if (r == 0 && p.confirmed)
            atomic_store(&s->checksums_confirmed, true);
        if (r != 0 || !p.unconfirmed)
            break;
        log_debug("PUT %s: the server did not confirm x-amz-checksum-sha256: sending Content-MD5",
                  name);
        atomic_store(&s->checksums_confirmed, false);
    }
    return r;
}

static void cache_forget(struct s3_storage *s, const char *name)
{
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < READ_CACHE; i++)
        if (s->cache[i].name && strcmp(s->cache[i].name, name) == 0) {
            if (s->cache[i].loading) {
                s->cache[i].dropped = true;
                continue;
            }
            free(s->cache[i].name);
            s->cache[i].name = NULL;
            buf_free(&s->cache[i].data);
        }
    pthread_mutex_unlock(&s->mu);
}

/* ---- the local cache of index files and snapshots ------------------------------------ */

/* Index files and snapshots are named by the SHA-256 of their bytes: a local copy is good
 * exactly when it hashes to its name, so it needs no other bookkeeping and cannot be stale.
 * (Their contents are authenticated again by the repository layer.) */
static bool cacheable(const struct s3_storage *s, const char *name)
{
    if (!s->cache_dir || s->copies_off || !storage_thread_copies_allowed())
        return false;
    const char *base;
    if (strncmp(name, "index/", 6) == 0)
        base = name + 6;
    else if (strncmp(name, "snapshots/", 10) == 0)
        base = name + 10;
    else
        return false;
    return strlen(base) == 64 && strspn(base, "0123456789abcdef") == 64;
}

static bool named_by_hash(const char *name, const void *data, size_t len)
{
    uint8_t d[32];
    char hex[65];
    cx_sha256(data, len, d);
    cx_hex(d, 32, hex);
    return strcmp(strrchr(name, '/') + 1, hex) == 0;
}

/* 0 with the copy in out when there is a good one; a bad one is removed. */
static int cache_load(const struct s3_storage *s, const char *name, struct buf *out)
{
    char *path = xasprintf("%s/%s", s->cache_dir, name);
    struct err ignore = ERR_INIT;
    int r = -1;
    if (fs_exists(path) && fs_read_all(path, out, &ignore) == 0) {
        if (named_by_hash(name, out->data, out->len))
            r = 0;
        else
            unlink(path);
    }
    free(path);
    return r;
}

/* Best effort: without a copy, the object is read from the server. */
static void cache_store(const struct s3_storage *s, const char *name, const void *data, size_t len)
{
    char *path = xasprintf("%s/%s", s->cache_dir, name);
    char *dir = xstrdup(path);
    *strrchr(dir, '/') = '\0';
    struct err ignore = ERR_INIT;
    if (fs_mkdir_p(dir, 0700, &ignore) == 0)
        (void)fs_write_atomic(path, data, len, 0600, &ignore);
    free(dir);
    free(path);
}

static int s3_put(struct storage *st, const char *name, const void *data, size_t len, struct err *e)
{
    struct s3_storage *s = S(st);
    cache_forget(s, name);
    if (do_put(s, name, data, len, false, e, NULL) != 0)
        return -1;
    if (cacheable(s, name) && named_by_hash(name, data, len))
        cache_store(s, name, data, len); /* the next open need not read it back */
    return 0;
}

/* Parses "bytes A-B/TOTAL". */
static bool parse_content_range(const char *v, uint64_t *a, uint64_t *b, uint64_t *total)
{
    unsigned long long x, y, z;
    char star;
    if (sscanf(v, "bytes %llu-%llu/%llu", &x, &y, &z) == 3 && y >= x) {
        *total = z;
    } else if (sscanf(v, "bytes %llu-%llu/%c", &x, &y, &star) == 3 && star == '*' && y >= x) {
        *total = UINT64_MAX; /* RFC 7233: the length is unknown to the server */
    } else {
        return false;
    }
    *a = x;
    *b = y;
    return true;
}

struct range_ctx {
    uint64_t off;
    size_t want; /* at least this many bytes unless the object ends first */
    size_t min;  /* the caller's len: fewer is damage */
    bool short_object;
    uint64_t total;
};

static const char *check_range(const struct request *rq, const struct response *rs, void *ctx,
                               const char **hint)
{
    (void)rq, (void)hint;
    struct range_ctx *r = ctx;
    uint64_t a, b, total;
    if (rs->status < 200 || rs->status >= 300)
        return NULL; /* 416, past the end: its body is an error document (get_range) */
    if (rs->status == 206 && !parse_content_range(rs->content_range, &a, &b, &total))
        return "the server answered a ranged read without saying which range (Content-Range)";
    if (rs->status == 206) {
        if (a != r->off)
            return "the server answered another range than was asked";
        r->total = total;
        if (total < r->off + r->min) {
            r->short_object = true;
            return NULL;
        }
        if (rs->out_len != b - a + 1)
            return "the response body was cut short";
        return NULL;
    }
    if (rs->has_length && rs->out_len != rs->content_length)
        return "the response body was cut short";
    return NULL;
}

/* GETs [off, off + want) of name into out (at most want bytes; *got is how many came). */
static int get_range(struct s3_storage *s, const char *name, uint64_t off, size_t want, size_t min,
                     void *out, size_t *got, struct err *e)
{
    char range[64];
    snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)off,
             (unsigned long long)(off + want - 1));
    struct sigv4_header extra[] = {{"range", range}};
    struct range_ctx rc = {.off = off, .want = want, .min = min};
    struct request rq = {
        .method = "GET", .name = name, .extra = extra, .nextra = 1, .out = out, .out_cap = want};
    struct response rs = {0};
    static const long unsatisfiable[] = {416, 0};
    int r = perform(s, &rq, unsatisfiable, check_range, &rc, &rs, e);
    if (r == 0 && rs.status == 200) {
        /* A server that ignores Range sends the whole object: only an offset 0 read can
         * use it, and out_cap bounded it. */
        if (off != 0)
            r = err_set(e, ERR_FAILURE, "use an S3 server that supports ranged GETs",
                        "%s: the server ignored the Range header of a read of %s", s->base.location,
                        name);
    }
    if (r == 0 && (rs.status == 416 || rc.short_object || rs.out_len < min))
        r = err_set(e, ERR_DAMAGE,
                    "the object was truncated: run `caris-backup check` to see which backups are "
                    "affected",
                    "%s/%s is shorter than expected (wanted %zu bytes at offset %llu)",
                    s->base.location, name, min, (unsigned long long)off);
    *got = rs.out_len;
    buf_free(&rs.body);
    return r;
}

/* A read of len (< READ_DIRECT) bytes of a pack. Packs never change, and a restore, check
 * or copy reads many blobs of one pack, from several threads: the pack is read in windows
 * aligned to READ_WINDOW (one ranged GET covers every blob inside), a window is read once
 * (a thread that needs one being read waits for it rather than asking again) and the last
 * READ_CACHE are kept. A blob that crosses a window's end is read from both windows. */
static int read_windowed(struct s3_storage *s, const char *name, uint64_t off, void *out,
                         size_t len, struct err *e)
{
    uint64_t start = off - off % READ_WINDOW;
    size_t want = READ_WINDOW;
    if (off + len > start + want) {
        /* Across windows: the part in this one, then the rest (which may cross again; at
         * most READ_DIRECT / READ_WINDOW levels). */
        size_t first = (size_t)(start + want - off);
        if (read_windowed(s, name, off, out, first, e) != 0)
            return -1;
        return read_windowed(s, name, start + want, (uint8_t *)out + first, len - first, e);
    }
    pthread_mutex_lock(&s->mu);
    struct window *slot = NULL;
    for (;;) {
        bool waited = false;
        for (int i = 0; i < READ_CACHE && !waited; i++) {
            struct window *w = &s->cache[i];
            if (!w->name || w->dropped || strcmp(w->name, name) != 0 || off < w->off)
                continue;
            if (w->loading && off + len <= w->off + w->want) {
                pthread_cond_wait(&s->loaded, &s->mu);
                waited = true; /* the slots may have changed: look again */
            } else if (!w->loading && off + len <= w->off + w->data.len) {
                memcpy(out, w->data.data + (off - w->off), len);
                w->used = ++s->clock;
                pthread_mutex_unlock(&s->mu);
                return 0;
            }
        }
        if (!waited)
            break;
    }
    /* Not there: this thread reads the window, into the least recently used free slot (or,
     * when every slot is being loaded, into a buffer of its own). */
    for (int i = 0; i < READ_CACHE; i++) {
        struct window *w = &s->cache[i];
        if (!w->loading && (!slot || w->used < slot->used))
            slot = w;
    }
    if (slot) {
        free(slot->name);
        buf_free(&slot->data);
        slot->name = xstrdup(name);
        slot->off = start;
        slot->want = want;
        slot->loading = true;
        slot->dropped = false;
    }
    pthread_mutex_unlock(&s->mu);
    struct buf data = {0};
    buf_reserve(&data, want);
    size_t got;
    int r = get_range(s, name, start, want, (size_t)(off - start) + len, data.data, &got, e);
    if (r == 0) {
        data.len = got;
        memcpy(out, data.data + (off - start), len);
    }
    if (!slot) {
        buf_free(&data);
        return r;
    }
    pthread_mutex_lock(&s->mu);
    slot->loading = false;
    if (r == 0 && !slot->dropped) {
        slot->data = data;
        slot->used = ++s->clock;
    } else {
        free(slot->name);
        slot->name = NULL;
        slot->used = 0;
        buf_free(&data);
    }
    slot->dropped = false;
    pthread_cond_broadcast(&s->loaded);
    pthread_mutex_unlock(&s->mu);
    return r;
}

static int s3_read_at(struct storage *st, const char *name, uint64_t off, void *out, size_t len,
                      struct err *e)
{
    struct s3_storage *s = S(st);
    if (len == 0)
        return 0;
    if (cacheable(s, name)) {
        struct buf b = {0};
        if (cache_load(s, name, &b) == 0 && off <= b.len && len <= b.len - off) {
            memcpy(out, b.data + off, len);
            buf_free(&b);
            return 0;
        }
        buf_free(&b);
        size_t got;
        if (get_range(s, name, off, len, len, out, &got, e) != 0)
            return -1;
        if (off == 0 && named_by_hash(name, out, len))
            cache_store(s, name, out, len);
        return 0;
    }
    bool pack = strncmp(name, "data/", 5) == 0;
    /* Blobs (at most REPO_MAX_BLOB, files' chunks at most 4 MiB) through the windows; larger
     * reads (a check's whole pack) on their own: they would only push windows out. */
    if (!pack || len >= READ_DIRECT) {
        size_t got;
        return get_range(s, name, off, len, len, out, &got, e);
    }
    return read_windowed(s, name, off, out, len, e);
}

static const char *check_whole(const struct request *rq, const struct response *rs, void *ctx,
                               const char **hint)
{
    (void)rq, (void)ctx, (void)hint;
    if (rs->has_length && rs->body.len != rs->content_length)
        return "the response body was cut short";
    return NULL;
}

/* A whole object in one GET: the HEAD that storage_get's generic path sends first to learn
 * the size would be one more round trip for every small object an open reads (marker, key
 * slot, config, state record, locks). */
static int s3_get(struct storage *st, const char *name, size_t max, struct buf *out, struct err *e)
{
    struct s3_storage *s = S(st);
    bool cached = cacheable(s, name);
    if (cached) {
        struct buf b = {0};
        if (cache_load(s, name, &b) == 0 && b.len <= max) {
            buf_free(out);
            *out = b;
            return 0;
        }
        buf_free(&b);
    }
    struct request rq = {.method = "GET", .name = name, .limit_body = true, .body_max = max};
    struct response rs = {0};
    if (perform(s, &rq, NULL, check_whole, NULL, &rs, e) != 0) {
        buf_free(&rs.body);
        return -1;
    }
    buf_free(out);
    *out = rs.body;
    if (cached && named_by_hash(name, out->data, out->len))
        cache_store(s, name, out->data, out->len);
    return 0;
}

/* One ranged GET of exactly the range asked for (a restore plan's merged range). */
static int s3_read_direct(struct storage *st, const char *name, uint64_t off, void *out, size_t len,
                          struct err *e)
{
    size_t got;
    if (len == 0)
        return 0;
    return get_range(S(st), name, off, len, len, out, &got, e);
}

static int head(struct s3_storage *s, const char *name, struct response *rs, struct err *e)
{
    struct request rq = {.method = "HEAD", .name = name};
    return perform(s, &rq, NULL, NULL, NULL, rs, e);
}

static int s3_size(struct storage *st, const char *name, uint64_t *size, struct err *e)
{
    struct s3_storage *s = S(st);
    if (cacheable(s, name)) {
        struct buf b = {0};
        int c = cache_load(s, name, &b);
        *size = b.len;
        buf_free(&b);
        if (c == 0)
            return 0;
    }
    struct response rs = {0};
    int r = head(s, name, &rs, e);
    if (r == 0 && !rs.has_length)
        r = err_set(e, ERR_FAILURE, NULL, "HEAD %s in %s: no Content-Length in the response", name,
                    s->base.location);
    if (r == 0)
        *size = rs.content_length;
    buf_free(&rs.body);
    return r;
}

/* Last-Modified: an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"). */
static int s3_mtime(struct storage *st, const char *name, int64_t *ns, struct err *e)
{
    struct s3_storage *s = S(st);
    struct response rs = {0};
    int r = head(s, name, &rs, e);
    if (r == 0) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(rs.last_modified, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        /* (a year the nanoseconds of an int64_t cannot hold is as unreadable) */
        if (!end || *end || time_ns_from_s(timegm(&tm), ns) != 0)
            r = err_set(e, ERR_FAILURE, NULL, "HEAD %s in %s: unreadable Last-Modified '%.60s'",
                        name, s->base.location, rs.last_modified);
    }
    buf_free(&rs.body);
    return r;
}

static int s3_remove(struct storage *st, const char *name, struct err *e)
{
    struct s3_storage *s = S(st);
    cache_forget(s, name);
    if (cacheable(s, name)) {
        char *path = xasprintf("%s/%s", s->cache_dir, name);
        unlink(path);
        free(path);
    }
    struct request rq = {.method = "DELETE", .name = name};
    struct response rs = {0};
    static const long gone[] = {404, 0};
    int r = perform(s, &rq, gone, NULL, NULL, &rs, e);
    buf_free(&rs.body);
    return r;
}

static int s3_put_new(struct storage *st, const char *name, const void *data, size_t len,
                      struct err *e)
{
    struct s3_storage *s = S(st);
    uint64_t size;
    struct err he = ERR_INIT;
    if (s3_size(st, name, &size, &he) == 0)
        return 1;
    if (he.code != ERR_NOT_FOUND) {
        *e = he;
        return -1;
    }
    int exists = 0;
    if (do_put(s, name, data, len, true, e, &exists) != 0)
        return -1;
    if (!exists)
        return 0;
    /* 412 may answer our own earlier attempt, one that reached the server but whose answer
     * was lost (then retried): the object holds exactly our bytes. Callers' bodies name
     * their writer (lock id, host, pid), so equal bytes are ours. */
    struct buf b = {0};
    struct err ge = ERR_INIT;
    int r = 1;
    if (storage_get(st, name, len, &b, &ge) == 0 && b.len == len && memcmp(b.data, data, len) == 0)
        r = 0;
    buf_free(&b);
    return r;
}

static int s3_list_temp(struct storage *st, storage_list_cb cb, void *ctx, struct err *e)
{
    (void)st, (void)cb, (void)ctx, (void)e;
    return 0; /* PUTs are atomic: no temporary objects */
}

struct listed {
    char *name;
    uint64_t size;
};

/* Lists dir: "data" down to data/xx/NAME and "records" down to records/KIND/NAME, any other
 * directory its direct objects only. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether a successful answer to a listing is one: a whole ListBucketResult. */
static bool is_listing(const struct response *rs)
{
    const char *doc = (const char *)rs->body.data;
    size_t len = rs->body.len;
    return doc && memmem(doc, len, "<ListBucketResult", 17) &&
           memmem(doc, len, "</ListBucketResult>", 19);
}

static int not_listing(const struct s3_storage *s, const char *dir, const struct response *rs,
                       struct err *e)
{
    return err_set(e, ERR_FAILURE,
                   "check the endpoint: something between caris and the S3 server (a proxy?) "
                   "may be answering for it",
                   "cannot list %s in %s: the answer (HTTP %ld, %zu bytes) is not an S3 listing",
                   *dir ? dir : "the bucket", s->base.location, rs->status, rs->body.len);
}

/* One key (or common prefix) of a listing's page: *went_back when it is not after last (the
 * greatest of the pages before; NULL: none), and *page_last keeps the page's greatest. */
static void page_key(const char *key, const char *last, bool *went_back, char **page_last)
{
    if (!key)
        return;
    if (last && strcmp(key, last) <= 0)
        *went_back = true;
    if (!*page_last || strcmp(key, *page_last) > 0) {
        free(*page_last);
        *page_last = xstrdup(key);
    }
}

/* Removes the local copies in dir whose objects are not in seen (the full listing). */
static void cache_sweep(const struct s3_storage *s, const char *dir, char **seen, size_t n)
{
    if (n)
        qsort(seen, n, sizeof(*seen), cmp_str);
    char *path = xasprintf("%s/%s", s->cache_dir, dir);
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *name = xasprintf("%s/%s", dir, de->d_name);
        if (!n || !bsearch(&name, seen, n, sizeof(*seen), cmp_str)) {
            char *file = xasprintf("%s/%s", path, de->d_name);
            unlink(file);
            free(file);
        }
        free(name);
    }
    if (d)
        closedir(d);
    free(path);
}

static int s3_list(struct storage *st, const char *dir, storage_list_cb cb, void *ctx,
                   struct err *e)
{
    struct s3_storage *s = S(st);
    bool data = strcmp(dir, "data") == 0 || strcmp(dir, "records") == 0;
    char *prefix = *dir ? xasprintf("%s%s/", s->prefix, dir) : xstrdup(s->prefix);
    size_t plen = strlen(s->prefix);
    char *token = NULL;
    int r = 0;
    /* A full listing of index/ or snapshots/ tells which local copies are of objects that
     * are gone (removed by a prune or forget, here or on another host): those are dropped. */
    char probe_name[80];
    snprintf(probe_name, sizeof(probe_name), "%s/%064d", dir, 0);
    bool sweep = cacheable(s, probe_name);
    char **seen = NULL;
    size_t nseen = 0;
    char *last = NULL; /* the greatest key listed so far */
    do {
        struct sigv4_param q[5];
        size_t nq = 0;
        q[nq++] = (struct sigv4_param){"list-type", "2"};
        q[nq++] = (struct sigv4_param){"prefix", prefix};
        if (s->list_page[0])
            q[nq++] = (struct sigv4_param){"max-keys", s->list_page};
        if (!data)
            q[nq++] = (struct sigv4_param){"delimiter", "/"};
        if (token)
            q[nq++] = (struct sigv4_param){"continuation-token", token};
        struct request rq = {.method = "GET", .query = q, .nquery = nq};
        struct response rs = {0};
        r = perform(s, &rq, NULL, NULL, NULL, &rs, e);
        char *sent = token; /* freed below: the next page's token must differ */
        token = NULL;
        if (r != 0) {
            free(sent);
            buf_free(&rs.body);
            break;
        }
        const char *doc = (const char *)rs.body.data;
        size_t len = rs.body.len;
        /* A 200 that is not a whole ListBucketResult (an empty body, a proxy's or a captive
         * portal's page, a cut document) is an error, never an empty listing: prune would
         * take "no snapshots" for "nothing is used" and delete every pack. */
        if (!is_listing(&rs)) {
            not_listing(s, dir, &rs, e);
            r = -1;
            free(sent);
            buf_free(&rs.body);
            break;
        }
        /* Collect the page, then call back (a caller may write meanwhile). S3 lists keys in
         * order, a page after the other: a key (or common prefix) of this page that is not
         * after every one of the pages before means the continuation was not followed. */
        bool went_back = false;
        char *page_last = NULL;
        for (const char *cp = doc; cp;) {
            const char *after = NULL;
            size_t ilen;
            const char *item =
                xml_span(cp, len - (size_t)(cp - doc), "CommonPrefixes", &ilen, &after);
            if (!item)
                break;
            char *pfx = xml_text(item, ilen, "Prefix", NULL);
            page_key(pfx, last, &went_back, &page_last);
            free(pfx);
            cp = after;
        }
        struct listed *v = NULL;
        size_t n = 0;
        const char *p = doc;
        while (p && len) {
            const char *after = NULL;
            size_t ilen;
            /* (the item as it is: a key is decoded once, "&amp;lt;" is "&lt;", not "<") */
            const char *item = xml_span(p, len - (size_t)(p - doc), "Contents", &ilen, &after);
            if (!item)
                break;
            char *key = xml_text(item, ilen, "Key", NULL);
            char *sz = xml_text(item, ilen, "Size", NULL);
            page_key(key, last, &went_back, &page_last);
            if (key && strlen(key) > plen && strncmp(key, s->prefix, plen) == 0) {
                const char *name = key + plen;
                const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
                size_t depth = 0;
                for (const char *c = name; *c; c++)
                    depth += *c == '/';
                bool want = *base && base[0] != '.' && (data ? depth == 2 : true);
                if (want) {
                    v = xrealloc(v, xsize(n + 1, sizeof(*v), 0));
                    v[n].name = xstrdup(name);
                    v[n].size = sz ? strtoull(sz, NULL, 10) : 0;
                    n++;
                }
            }
            free(key);
            free(sz);
            p = after;
        }
        char *trunc = xml_text(doc, len, "IsTruncated", NULL);
        if (trunc && strcmp(trunc, "true") == 0) {
            token = xml_text(doc, len, "NextContinuationToken", NULL);
            if (!token || !*token) {
                free(token);
                token = NULL;
                r = err_set(e, ERR_FAILURE, NULL,
                            "cannot list %s in %s: a truncated listing without a continuation "
                            "token",
                            dir, s->base.location);
            } else if (sent && (strcmp(token, sent) == 0 || went_back)) {
                /* A server that ignores continuation-token answers the first page again, for
                 * ever: the listing would never end. */
                free(token);
                token = NULL;
                r = err_set(e, ERR_FAILURE,
                            "the S3 server does not page listings as S3 does (ListObjectsV2 "
                            "continuation-token): use one that does, or check the endpoint",
                            "cannot list %s in %s: a continued listing answered keys listed "
                            "before (%s)",
                            dir, s->base.location,
                            went_back ? "the server ignores the continuation token?"
                                      : "the same continuation token again");
            }
        }
        free(sent);
        free(trunc);
        buf_free(&rs.body);
        if (page_last) {
            free(last);
            last = page_last;
        }
        for (size_t i = 0; i < n; i++) {
            if (r == 0)
                r = cb(ctx, v[i].name, v[i].size, e);
            if (sweep) {
                seen = xrealloc(seen, xsize(nseen + 1, sizeof(*seen), 0));
                seen[nseen++] = v[i].name;
            } else {
                free(v[i].name);
            }
        }
        free(v);
    } while (r == 0 && token);
    if (sweep && r == 0)
        cache_sweep(s, dir, seen, nseen);
    for (size_t i = 0; i < nseen; i++)
        free(seen[i]);
    free(seen);
    free(last);
    free(token);
    free(prefix);
    return r;
}

static void s3_close(struct storage *st)
{
    struct s3_storage *s = S(st);
    for (size_t i = 0; i < s->nidle; i++)
        curl_easy_cleanup(s->idle[i]);
    for (int i = 0; i < READ_CACHE; i++) {
        free(s->cache[i].name);
        buf_free(&s->cache[i].data);
    }
    pthread_cond_destroy(&s->loaded);
    pthread_mutex_destroy(&s->mu);
    free(s->endpoint);
    free(s->host);
    free(s->bucket);
    free(s->prefix);
    free(s->access_key);
    secmem_free(s->secret_key);
    secmem_free(s->token);
    free(s->region);
    free(s->ca_file);
    free(s->cache_dir);
    free(s->base.location);
    free(s);
}

static void s3_local_copies(struct storage *st, bool use)
{
    S(st)->copies_off = !use;
}

static const struct storage_ops s3_ops = {
    .put = s3_put,
    .read_at = s3_read_at,
    .size = s3_size,
    .list = s3_list,
    .remove = s3_remove,
    .put_new = s3_put_new,
    .mtime = s3_mtime,
    .list_temp = s3_list_temp,
    .close = s3_close,
    .read_direct = s3_read_direct,
    .get = s3_get,
    .local_copies = s3_local_copies,
};

/* ---- opening ------------------------------------------------------------------------- */

bool storage_location_is_s3(const char *location)
{
    return strncmp(location, "s3:", 3) == 0;
}

char *storage_location_redact(const char *location)
{
    const char *sep = strstr(location, "://");
    if (!sep) /* a directory: shown as it is */
        return xstrdup(location);
    /* user information: all before the last '@' anywhere (a secret may hold '/', '?', '#':
     * "KEY:ab#cd@host"); then a query or fragment (a signed URL's X-Amz-Signature and
     * X-Amz-Security-Token) after it */
    const char *auth = sep + 3, *at = strrchr(auth, '@');
    const char *rest = at ? at : auth;
    int q = (int)strcspn(rest, "?#");
    return xasprintf("%.*s%s%.*s%s", (int)(auth - location), location, at ? "xxxxx" : "", q, rest,
                     rest[q] ? "?xxxxx" : "");
}

static int bad_url(const char *url, const char *why, struct err *e)
{
    char *shown = storage_location_redact(url); /* user:secret@ never shown */
    err_set(e, ERR_USAGE, "write an S3 repository as s3:https://HOST[:PORT]/BUCKET[/PREFIX]",
            "invalid S3 repository location '%s': %s", shown, why);
    free(shown);
    return -1;
}

/* Splits s3:SCHEME://HOST[:PORT]/BUCKET[/PREFIX] into s. */
static int parse_location(struct s3_storage *s, const char *loc, bool *plain_http, struct err *e)
{
    const char *u = loc + 3;
    bool https = strncmp(u, "https://", 8) == 0;
    if (!https && strncmp(u, "http://", 7) != 0)
        return bad_url(loc, "the endpoint must start with https:// (or http://)", e);
    *plain_http = !https;
    const char *auth = u + (https ? 8 : 7);
    const char *slash = strchr(auth, '/');
    if (s->virtual_host && !slash)
        slash = auth + strlen(auth);
    if (!slash || slash == auth)
        return bad_url(loc, "no host, or no bucket after it", e);
    if (strchr(auth, '@')) /* anywhere: a secret may hold a '/' */
        return bad_url(loc,
                       "credentials do not belong in the location (they would show in "
                       "messages): use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                       e);
    if (strpbrk(loc, "?# \t\n"))
        return bad_url(loc, "no query, fragment or white space", e);
    /* a port, when given, is 1 to 65535 (curl said "URL using bad/illegal format" at the first
     * request, an I/O error) */
    const char *hend = memchr(auth, ']', (size_t)(slash - auth));
    const char *colon = memchr(hend ? hend : auth, ':', (size_t)(slash - (hend ? hend : auth)));
    if (colon) {
        size_t pn = (size_t)(slash - colon - 1);
        unsigned long port = 0;
        for (size_t i = 0; i < pn && port <= 65535; i++)
            port = isdigit((unsigned char)colon[1 + i]) ? port * 10 + (unsigned)(colon[1 + i] - '0')
                                                        : 65536;
        if (pn == 0 || port == 0 || port > 65535)
            return bad_url(loc, "the port is not a number from 1 to 65535", e);
    }
    /* The Host header is signed: it must be what curl sends, which leaves out a default
     * port. */
    size_t hl = (size_t)(slash - auth);
    const char *dflt = https ? ":443" : ":80";
    if (hl > strlen(dflt) && memcmp(auth + hl - strlen(dflt), dflt, strlen(dflt)) == 0)
        hl -= strlen(dflt);
    s->host = xstrndup(auth, hl);
    s->endpoint = xasprintf("%.*s%.*s", (int)(auth - u), u, (int)hl, auth);
    const char *prefix;
    if (s->virtual_host) {
        /* BUCKET.s3.example.com[:port][/PREFIX] */
        const char *dot = memchr(auth, '.', (size_t)(slash - auth));
        if (!dot || dot == auth)
            return bad_url(loc, "with BACKUP_S3_VIRTUAL_HOST, the host must be BUCKET.ENDPOINT", e);
        s->bucket = xstrndup(auth, (size_t)(dot - auth));
        prefix = *slash ? slash + 1 : "";
    } else {
        const char *bucket = slash + 1;
        const char *bend = strchr(bucket, '/');
        s->bucket = bend ? xstrndup(bucket, (size_t)(bend - bucket)) : xstrdup(bucket);
        if (!*s->bucket)
            return bad_url(loc, "no bucket", e);
        prefix = bend ? bend + 1 : "";
    }
    size_t pl = strlen(prefix);
    while (pl && prefix[pl - 1] == '/')
        pl--;
    /* Every segment of the prefix must be a name: not empty, not "." or "..". */
    for (size_t i = 0; i < pl;) {
        size_t j = i;
        while (j < pl && prefix[j] != '/')
            j++;
        size_t n = j - i;
        if (n == 0 || (n == 1 && prefix[i] == '.') ||
            (n == 2 && prefix[i] == '.' && prefix[i + 1] == '.'))
            return bad_url(loc, "the prefix has an empty, '.' or '..' segment", e);
        i = j + 1;
    }
    s->prefix = pl ? xasprintf("%.*s/", (int)pl, prefix) : xstrdup("");
    return 0;
}

/* One cheap request that proves the endpoint, the credentials, the region and the bucket:
 * a listing of at most one key under the prefix. */
static int probe(struct s3_storage *s, struct err *e)
{
    struct sigv4_param q[] = {{"list-type", "2"}, {"max-keys", "1"}, {"prefix", s->prefix}};
    struct request rq = {.method = "GET", .query = q, .nquery = 3};
    struct response rs = {0};
    int r = perform(s, &rq, NULL, NULL, NULL, &rs, e);
    /* Something else than an S3 server (a wrong endpoint, a captive portal) may answer 200
     * to everything: the open would go on to read its page as the repository's marker, and
     * call the repository damaged (or init call it one that exists). */
    if (r == 0 && !is_listing(&rs))
        r = not_listing(s, "", &rs, e);
    buf_free(&rs.body);
    return r;
}

struct storage *storage_s3_open(const char *location, struct err *e)
{
    if (lazylib_load(LAZYLIB_CURL, e) != 0)
        return NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        err_set(e, ERR_FAILURE, NULL, "cannot initialise libcurl: %s",
                curl_easy_strerror(curl_init_rc));
        return NULL;
    }
    struct s3_storage *s = xcalloc(1, sizeof(*s));
    s->base.ops = &s3_ops;
    s->base.location = xstrdup(location);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->loaded, NULL);
    bool plain_http = false;
    bool vh = false;
    if (config_bool(settings, "BACKUP_S3_VIRTUAL_HOST", false, &vh, e) != 0)
        goto fail;
    s->virtual_host = vh;
    if (parse_location(s, location, &plain_http, e) != 0)
        goto fail;
    const char *ak = setting2("AWS_ACCESS_KEY_ID", "BACKUP_S3_ACCESS_KEY_ID");
    const char *sk = setting2("AWS_SECRET_ACCESS_KEY", "BACKUP_S3_SECRET_ACCESS_KEY");
    if (!ak || !sk) {
        err_set(e, ERR_CONFIG,
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or BACKUP_S3_ACCESS_KEY_ID and "
                "BACKUP_S3_SECRET_ACCESS_KEY in .env.local)",
                "no S3 credentials for %s", location);
        goto fail;
    }
    s->access_key = xstrdup(ak);
    s->secret_key = secmem_strdup(sk);
    const char *tok = setting2("AWS_SESSION_TOKEN", "BACKUP_S3_SESSION_TOKEN");
    s->token = tok ? secmem_strdup(tok) : NULL;
    s->region = xstrdup(storage_s3_region());
    const char *ca = setting("BACKUP_S3_CA_FILE");
    s->ca_file = ca ? xstrdup(ca) : NULL;
    const char *rs = setting("BACKUP_S3_RETRY_SECONDS");
    char *rs_end = NULL;
    double secs = rs ? strtod(rs, &rs_end) : DEFAULT_RETRY_SECONDS;
    /* (not a number at all was read as 0: a typo turned every retry off) */
    if (!(secs >= 0 && secs <= 86400) || (rs && (rs_end == rs || *rs_end))) {
        err_set(e, ERR_CONFIG, "give a number of seconds from 0 to 86400",
                "BACKUP_S3_RETRY_SECONDS is invalid: '%.40s'", rs ? rs : "");
        goto fail;
    }
    s->retry_ns = (int64_t)(secs * 1e9);
    const char *conn = setting("BACKUP_S3_CONNECTIONS");
    s->base.connections = DEFAULT_CONNECTIONS;
    if (conn) {
        char *end;
        long n = strtol(conn, &end, 10);
        if (end == conn || *end || n < 1 || n > STORAGE_CONNECTIONS_MAX) {
            err_set(e, ERR_CONFIG, "give a number of connections from 1 to 64",
                    "BACKUP_S3_CONNECTIONS (--s3-connections) is invalid: '%s'", conn);
            goto fail;
        }
        s->base.connections = (int)n;
    }
    /* Test knob: smaller listing pages, so that tests page through continuation tokens
     * without writing thousands of objects. */
    const char *page = setting("BACKUP_S3_LIST_PAGE");
    s->base.list_page = 1000;
    if (page && strspn(page, "0123456789") == strlen(page) && strlen(page) < 5 && atoi(page) > 0) {
        snprintf(s->list_page, sizeof(s->list_page), "%d", atoi(page));
        if (atoi(page) < 1000)
            s->base.list_page = (unsigned)atoi(page);
    }
    if (plain_http) {
        char *host = xstrdup(s->host);
        char *colon = host[0] == '[' ? strchr(host, ']') : strchr(host, ':');
        if (colon && host[0] == '[')
            colon[1] = '\0';
        else if (colon)
            *colon = '\0';
        if (!net_host_is_loopback(host)) /* as written in the location, with its port */
            log_warn("S3 repository %s is reached over plain http: the data is encrypted, but "
                     "the requests (and their signatures) can be seen and replayed on the way; "
                     "use https",
                     location);
        free(host);
    }
    if (cache_root) {
        /* One directory per location (the repository id is inside the encrypted config,
         * which is read through here). */
        uint8_t d[32];
        char hex[65];
        cx_sha256(location, strlen(location), d);
        cx_hex(d, 32, hex);
        s->cache_dir = xasprintf("%s/s3-%.32s", cache_root, hex);
    }
    if (probe(s, e) != 0) {
        err_wrap(e, "cannot open S3 repository %s", location);
        goto fail;
    }
    return &s->base;
fail:
    s3_close(&s->base);
    return NULL;
}

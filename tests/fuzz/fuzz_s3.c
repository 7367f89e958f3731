/* libFuzzer harness: the S3 backend (src/storage/s3.c) against a scripted server. libcurl is
 * replaced by a fake (below) that answers each request with the next response of the input:
 * status line and headers go to s3.c's header callback (one exactly-sized buffer per line),
 * the body to its write callback in pieces of at most 61 bytes. So the untrusted parts of
 * the network input are fuzzed: the response headers (Content-Length, Content-Range, ETag,
 * Last-Modified, x-amz-*), ListObjectsV2 pages with continuation tokens, error documents,
 * and ranged reads through the read windows.
 *
 * Input: responses separated by "\n@@\n". Each is "<status line>\n<header lines>\n\n<body>";
 * the status is the first three-digit number of its first line (200 when none). Once the
 * responses run out, requests fail to connect (BACKUP_S3_RETRY_SECONDS=0: no retries).
 * Calls, in order: storage_s3_open (one probe), list "data", list "index", get "config",
 * size, mtime, read_at of a pack (two, the second across a window), read_direct, remove,
 * put (whose answer's x-amz-checksum-sha256 or ETag is checked). */
#define CURL_DISABLE_TYPECHECK 1
#include "../../src/storage/s3.c"

#include <stdarg.h>

/* ---- the fake libcurl ---------------------------------------------------------------- */

struct fake_curl {
    curl_write_callback write_cb, header_cb;
    void *write_data, *header_data;
    bool nobody;
    long status;
};

static const uint8_t *script;
static size_t script_len, script_pos;

CURLcode curl_global_init(long flags)
{
    (void)flags;
    return CURLE_OK;
}

CURL *curl_easy_init(void)
{
    return xcalloc(1, sizeof(struct fake_curl));
}

void curl_easy_reset(CURL *c)
{
    memset(c, 0, sizeof(struct fake_curl));
}

void curl_easy_cleanup(CURL *c)
{
    free(c);
}

const char *curl_easy_strerror(CURLcode rc)
{
    return rc == CURLE_OK ? "ok" : "fake curl error";
}

struct curl_slist *curl_slist_append(struct curl_slist *l, const char *s)
{
    struct curl_slist *n = xcalloc(1, sizeof(*n)), *t = l;
    n->data = xstrdup(s);
    if (!l)
        return n;
    while (t->next)
        t = t->next;
    t->next = n;
    return l;
}

void curl_slist_free_all(struct curl_slist *l)
{
    while (l) {
        struct curl_slist *n = l->next;
        free(l->data);
        free(l);
        l = n;
    }
}

CURLcode curl_easy_setopt(CURL *curl, CURLoption opt, ...)
{
    struct fake_curl *c = curl;
    va_list ap;
    va_start(ap, opt);
    switch (opt) {
    case CURLOPT_WRITEFUNCTION:
        c->write_cb = va_arg(ap, curl_write_callback);
        break;
    case CURLOPT_WRITEDATA:
        c->write_data = va_arg(ap, void *);
        break;
    case CURLOPT_HEADERFUNCTION:
        c->header_cb = va_arg(ap, curl_write_callback);
        break;
    case CURLOPT_HEADERDATA:
        c->header_data = va_arg(ap, void *);
        break;
    case CURLOPT_NOBODY:
        c->nobody = va_arg(ap, long) != 0;
        break;
    default:
        break;
    }
    va_end(ap);
    return CURLE_OK;
}

CURLcode curl_easy_getinfo(CURL *curl, CURLINFO info, ...)
{
    struct fake_curl *c = curl;
    va_list ap;
    va_start(ap, info);
    if (info == CURLINFO_RESPONSE_CODE)
        *va_arg(ap, long *) = c->status;
    va_end(ap);
    return CURLE_OK;
}

/* Hands p[0..n) to a callback in a buffer of exactly that size. */
static bool deliver(curl_write_callback cb, void *ctx, const uint8_t *p, size_t n)
{
    char *copy = xmalloc(n ? n : 1);
    memcpy(copy, p, n);
    size_t r = cb(copy, 1, n, ctx);
    free(copy);
    return r == n;
}

CURLcode curl_easy_perform(CURL *curl)
{
    struct fake_curl *c = curl;
    c->status = 0;
    if (script_pos >= script_len)
        return CURLE_COULDNT_CONNECT;
    const uint8_t *r = script + script_pos, *end = script + script_len;
    const uint8_t *sep = memmem(r, (size_t)(end - r), "\n@@\n", 4);
    const uint8_t *rend = sep ? sep : end;
    script_pos = sep ? (size_t)(sep + 4 - script) : script_len;
    const uint8_t *hend = memmem(r, (size_t)(rend - r), "\n\n", 2);
    const uint8_t *body = hend ? hend + 2 : rend;
    if (!hend)
        hend = rend;
    /* the status: the first three digits in a row on the first line */
    const uint8_t *l1 = memchr(r, '\n', (size_t)(hend - r));
    if (!l1)
        l1 = hend;
    c->status = 200;
    for (const uint8_t *q = r; q + 3 <= l1; q++)
        if (q[0] >= '1' && q[0] <= '5' && q[1] >= '0' && q[1] <= '9' && q[2] >= '0' &&
            q[2] <= '9') {
            c->status = (q[0] - '0') * 100 + (q[1] - '0') * 10 + (q[2] - '0');
            break;
        }
    for (const uint8_t *q = r; q < hend;) {
        const uint8_t *nl = memchr(q, '\n', (size_t)(hend - q));
        const uint8_t *le = nl ? nl : hend;
        uint8_t line[1024];
        size_t n = (size_t)(le - q) < sizeof(line) - 2 ? (size_t)(le - q) : sizeof(line) - 2;
        memcpy(line, q, n);
        line[n++] = '\r';
        line[n++] = '\n';
        if (c->header_cb && !deliver(c->header_cb, c->header_data, line, n))
            return CURLE_WRITE_ERROR;
        q = nl ? nl + 1 : hend;
    }
    if (c->header_cb && !deliver(c->header_cb, c->header_data, (const uint8_t *)"\r\n", 2))
        return CURLE_WRITE_ERROR;
    if (c->nobody || !c->write_cb)
        return CURLE_OK;
    for (const uint8_t *q = body; q < rend;) {
        size_t n = (size_t)(rend - q) < 61 ? (size_t)(rend - q) : 61;
        if (!deliver(c->write_cb, c->write_data, q, n))
            return CURLE_WRITE_ERROR;
        q += n;
    }
    return CURLE_OK;
}

/* ---- the harness --------------------------------------------------------------------- */

static int count_cb(void *ctx, const char *name, uint64_t size, struct err *e)
{
    (void)e, (void)size;
    *(size_t *)ctx += strlen(name) + 1;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", 1);
    setenv("AWS_REGION", "us-east-1", 1);
    setenv("BACKUP_S3_RETRY_SECONDS", "0", 1);
    log_set_level(LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    script = data;
    script_len = size;
    script_pos = 0;
    struct err e = ERR_INIT;
    struct storage *st = storage_s3_open("s3:http://127.0.0.1:9000/bucket/pre", &e);
    if (!st)
        return 0;
    size_t listed = 0;
    (void)st->ops->list(st, "data", count_cb, &listed, &e);
    (void)st->ops->list(st, "index", count_cb, &listed, &e);
    struct buf b = {0};
    (void)st->ops->get(st, "config", 1u << 20, &b, &e);
    buf_free(&b);
    uint64_t sz;
    int64_t ns;
    (void)st->ops->size(st, "keys/k1", &sz, &e);
    (void)st->ops->mtime(st, "locks/l1", &ns, &e);
    static const struct {
        uint64_t off;
        size_t len;
    } reads[] = {{3, 100}, {READ_WINDOW - 20, 64}};
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        uint8_t *out = xmalloc(reads[i].len);
        (void)st->ops->read_at(st, "data/ab/pack1", reads[i].off, out, reads[i].len, &e);
        free(out);
    }
    uint8_t *out = xmalloc(50);
    (void)st->ops->read_direct(st, "data/ab/pack1", 10, out, 50, &e);
    free(out);
    (void)st->ops->remove(st, "locks/l1", &e);
    (void)st->ops->put(st, "locks/l1", "lock", 4, &e);
    st->ops->close(st);
    return 0;
}

/* AWS Signature Version 4 for S3 (see caris/sigv4.h). The rules are those of AWS's
 * "Signature Calculations for the Authorization Header": S3 does not normalise the path
 * (no "." / ".." removal, no double encoding), and every request carries
 * x-amz-content-sha256, which is also the payload hash in the canonical request. */
#include "caris/sigv4.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "caris/crypto.h"

void sigv4_uri_encode(struct buf *out, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
            buf_append_u8(out, c);
        } else {
            char t[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_append(out, t, 3);
        }
    }
}

struct enc_pair {
    char *name;
    char *value;
};

static char *encode(const char *s)
{
    struct buf b = {0};
    sigv4_uri_encode(&b, s, false);
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

static int cmp_pair(const void *a, const void *b)
{
    const struct enc_pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

char *sigv4_canonical_query(const struct sigv4_param *q, size_t n)
{
    struct enc_pair *v = xcalloc(n ? n : 1, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i].name = encode(q[i].name);
        v[i].value = encode(q[i].value ? q[i].value : "");
    }
    qsort(v, n, sizeof(*v), cmp_pair);
    struct buf b = {0};
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_append_u8(&b, '&');
        buf_append(&b, v[i].name, strlen(v[i].name));
        buf_append_u8(&b, '=');
        buf_append(&b, v[i].value, strlen(v[i].value));
        free(v[i].name);
        free(v[i].value);
    }
    free(v);
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

struct canon_header {
    char *name;  /* lower case */
    char *value; /* trimmed, inner spaces collapsed */
};

static int cmp_header(const void *a, const void *b)
{
    return strcmp(((const struct canon_header *)a)->name, ((const struct canon_header *)b)->name);
}

static char *header_value(const char *v)
{
    struct buf b = {0};
    while (*v == ' ' || *v == '\t')
        v++;
    bool space = false;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t') {
            space = true;
            continue;
        }
        if (space && b.len)
            buf_append_u8(&b, ' ');
        space = false;
        buf_append_u8(&b, (uint8_t)*v);
    }
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

char *sigv4_canonical_request(const struct sigv4_request *rq, char **signed_headers)
{
    size_t n = rq->nheaders;
    struct canon_header *h = xcalloc(n ? n : 1, sizeof(*h));
    for (size_t i = 0; i < n; i++) {
        h[i].name = xstrdup(rq->headers[i].name);
        for (char *p = h[i].name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        h[i].value = header_value(rq->headers[i].value);
    }
    qsort(h, n, sizeof(*h), cmp_header);
    struct buf b = {0}, names = {0};
    buf_append(&b, rq->method, strlen(rq->method));
    buf_append_u8(&b, '\n');
    buf_append(&b, rq->uri, strlen(rq->uri));
    buf_append_u8(&b, '\n');
    char *query = sigv4_canonical_query(rq->query, rq->nquery);
    buf_append(&b, query, strlen(query));
    free(query);
    buf_append_u8(&b, '\n');
    for (size_t i = 0; i < n; i++) {
        buf_append(&b, h[i].name, strlen(h[i].name));
        buf_append_u8(&b, ':');
        buf_append(&b, h[i].value, strlen(h[i].value));
        buf_append_u8(&b, '\n');
        if (i)
            buf_append_u8(&names, ';');
        buf_append(&names, h[i].name, strlen(h[i].name));
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
    buf_append_u8(&names, 0);
    buf_append_u8(&b, '\n');
    buf_append(&b, names.data, names.len - 1);
    buf_append_u8(&b, '\n');
    buf_append(&b, rq->payload_hash, strlen(rq->payload_hash));
    buf_append_u8(&b, 0);
    if (signed_headers)
        *signed_headers = (char *)names.data;
    else
        buf_free(&names);
    return (char *)b.data;
}

char *sigv4_string_to_sign(const struct sigv4_key *k, const char *amz_date,
                           const char *canonical_request)
{
    uint8_t h[CX_SHA256_LEN];
    char hex[2 * CX_SHA256_LEN + 1];
    cx_sha256(canonical_request, strlen(canonical_request), h);
    cx_hex(h, sizeof(h), hex);
    return xasprintf("AWS4-HMAC-SHA256\n%s\n%.8s/%s/%s/aws4_request\n%s", amz_date, amz_date,
                     k->region, k->service, hex);
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request") */
static void signing_key(const struct sigv4_key *k, const char *amz_date, uint8_t out[32])
{
    char *first = xasprintf("AWS4%s", k->secret_key);
    uint8_t a[32], b[32];
    cx_hmac_sha256((const uint8_t *)first, strlen(first), amz_date, 8, a);
    cx_wipe(first, strlen(first));
    free(first);
    cx_hmac_sha256(a, 32, k->region, strlen(k->region), b);
    cx_hmac_sha256(b, 32, k->service, strlen(k->service), a);
    cx_hmac_sha256(a, 32, "aws4_request", 12, out);
    cx_wipe(a, sizeof(a));
    cx_wipe(b, sizeof(b));
}

char *sigv4_authorization(const struct sigv4_key *k, const char *amz_date,
                          const struct sigv4_request *rq)
{
    char *signed_headers;
    char *creq = sigv4_canonical_request(rq, &signed_headers);
    char *sts = sigv4_string_to_sign(k, amz_date, creq);
    uint8_t key[32], sig[32];
    char hex[65];
    signing_key(k, amz_date, key);
    cx_hmac_sha256(key, sizeof(key), sts, strlen(sts), sig);
    cx_wipe(key, sizeof(key));
    cx_hex(sig, sizeof(sig), hex);
    char *auth = xasprintf("AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/%s/aws4_request, "
                           "SignedHeaders=%s, Signature=%s",
                           k->access_key, amz_date, k->region, k->service, signed_headers, hex);
    free(signed_headers);
    free(creq);
    free(sts);
    return auth;
}

/* Row counts from a pg_dump custom-format archive as it streams by (see caris/dumpcount.h).
 *
 * The layout, as PostgreSQL's documentation of the custom format and its archives show it:
 *   header: "PGDMP", version major, minor, revision (1 byte each), int size, offset size,
 *     format (1 = custom), compression (an int before 1.15, an algorithm byte from 1.15),
 *     creation time (7 ints), database name, server version, pg_dump version (strings);
 *   table of contents: an int count, then per entry: dump id, had-dumper (ints), table oid,
 *     oid, tag, desc (strings), section (int), defn, drop statement, copy statement,
 *     namespace, tablespace, table access method (strings; the last from 1.14), relkind (an
 *     int, from 1.16), owner, with-oids (strings), dependencies (strings up to a null one),
 *     and the data's offset (a flag byte and offset-size bytes);
 *   data blocks, in that order: a type byte (1 = table data, 3 = large objects), the dump
 *     id (int); table data is chunks (int length, bytes) up to a zero length; large objects
 *     are, per object, its oid (int) and chunks up to a zero length, up to a zero oid.
 *     A table's data is its COPY text, one line per row, followed by pg_dump's end-of-copy
 *     marker "\.


" (three more newlines): a block that does not end with it is not
 *     counted.
 * An int is a sign byte and int-size bytes, least significant first; a string is an int
 * length (-1: null) and that many bytes. */
#include "caris/dumpcount.h"

#include <stdlib.h>
#include <string.h>

#include "caris/core.h"

#define TOC_MAX (64u << 20) /* header and table of contents held while they are read */
#define BLK_DATA 1
#define BLK_BLOBS 3
#define END_OF_COPY "\\.\n\n\n"

struct tentry {
    int64_t dump_id;
    char *schema, *name; /* "TABLE DATA" entries in COPY form only */
    int64_t rows;
    bool started; /* its block began */
    bool seen;    /* its block was read to its end, and ended with the end-of-copy marker */
    bool twice;   /* another entry has the same schema and name: not counted */
};

enum state {
    S_HEAD,  /* header and table of contents, gathered in head */
    S_TYPE,  /* a block's type byte, or the end */
    S_ID,    /* a block's dump id */
    S_LEN,   /* a chunk's length */
    S_BYTES, /* a chunk's bytes */
    S_OID,   /* a large object's oid */
    S_FAILED,
};

struct dumpcount {
    enum state st;
    const char *why;
    struct buf head;
    size_t retry_at; /* head is parsed again once it holds this many bytes (or at the end) */
    int int_size;
    struct tentry *v; /* sorted by dump id */
    size_t n;
    struct tentry **byname; /* the same, sorted by schema and name */
    /* the block being read */
    bool blobs;
    struct tentry *cur; /* the table whose rows are counted, or NULL */
    int64_t remaining;
    uint8_t tail[5]; /* the last bytes of the table's data */
    size_t tail_len;
    uint8_t ib[9]; /* an int being gathered */
    int ilen;
};

struct dumpcount *dumpcount_new(void)
{
    return xcalloc(1, sizeof(struct dumpcount));
}

void dumpcount_free(struct dumpcount *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->v[i].schema);
        free(d->v[i].name);
    }
    free(d->v);
    free(d->byname);
    buf_free(&d->head);
    free(d);
}

static void give_up(struct dumpcount *d, const char *why)
{
    if (d->st != S_FAILED)
        d->why = why;
    d->st = S_FAILED;
    buf_free(&d->head);
}

/* ---- the header and the table of contents, parsed again from the start as bytes come ---- */

enum { NEED = -2, BAD = -1 };

struct cur {
    const uint8_t *p;
    size_t len, pos;
    int int_size;
};

static int rd_byte(struct cur *c, int *out)
{
    if (c->pos >= c->len)
        return NEED;
    *out = c->p[c->pos++];
    return 0;
}

static int rd_int(struct cur *c, int64_t *out)
{
    if (c->len - c->pos < (size_t)c->int_size + 1)
        return NEED;
    int sign = c->p[c->pos];
    uint64_t v = 0;
    for (int i = 0; i < c->int_size; i++)
        v |= (uint64_t)c->p[c->pos + 1 + (size_t)i] << (8 * i);
    c->pos += (size_t)c->int_size + 1;
    if (sign > 1 || v > INT64_MAX)
        return BAD;
    *out = sign ? -(int64_t)v : (int64_t)v;
    return 0;
}

/* A string: *s points into the buffer (not terminated), *slen its length, -1 when null. */
static int rd_str(struct cur *c, const uint8_t **s, int64_t *slen)
{
    int rc = rd_int(c, slen);
    if (rc)
        return rc;
    if (*slen == -1) {
        *s = NULL;
        return 0;
    }
    if (*slen < 0)
        return BAD;
    if ((uint64_t)*slen > c->len - c->pos)
        return (uint64_t)*slen > TOC_MAX ? BAD : NEED;
    *s = c->p + c->pos;
    c->pos += (size_t)*slen;
    return 0;
}

static int skip_str(struct cur *c)
{
    const uint8_t *s;
    int64_t n;
    return rd_str(c, &s, &n);
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_)                                                                                   \
            return rc_;                                                                            \
    } while (0)

static int tentry_cmp(const void *a, const void *b)
{
    const struct tentry *x = a, *y = b;
    return x->dump_id < y->dump_id ? -1 : x->dump_id > y->dump_id;
}

static int byname_cmp(const void *a, const void *b)
{
    const struct tentry *x = *(struct tentry *const *)a, *y = *(struct tentry *const *)b;
    int c = strcmp(x->schema, y->schema);
    return c ? c : strcmp(x->name, y->name);
}

static bool str_is(const uint8_t *s, int64_t n, const char *lit)
{
    return s && (size_t)n == strlen(lit) && memcmp(s, lit, (size_t)n) == 0;
}

/* Parses head from its start: 0 with *used = the bytes of header and table of contents
 * (entries in d->v), NEED when more bytes are needed, BAD when it cannot be read. */
static int parse_head(struct dumpcount *d, size_t *used, const char **why)
{
    struct cur c = {.p = d->head.data, .len = d->head.len, .int_size = 0};
    if (c.len < 5)
        return NEED;
    if (memcmp(c.p, "PGDMP", 5) != 0) {
        *why = "not a custom-format archive";
        return BAD;
    }
    c.pos = 5;
    int vmaj, vmin, vrev, isz, osz, fmt;
    TRY(rd_byte(&c, &vmaj));
    TRY(rd_byte(&c, &vmin));
    TRY(rd_byte(&c, &vrev));
    TRY(rd_byte(&c, &isz));
    TRY(rd_byte(&c, &osz));
    TRY(rd_byte(&c, &fmt));
    (void)vrev;
    if (vmaj != 1 || vmin < 12 || vmin > 16) {
        *why = "an archive version this counter does not know";
        return BAD;
    }
    if (isz < 1 || isz > 8 || osz < 1 || osz > 8 || fmt != 1) {
        *why = "an unexpected archive header";
        return BAD;
    }
    c.int_size = isz;
    d->int_size = isz;
    if (vmin >= 15) {
        int alg;
        TRY(rd_byte(&c, &alg));
        if (alg != 0) {
            *why = "a compressed archive";
            return BAD;
        }
    } else {
        int64_t level;
        TRY(rd_int(&c, &level));
        if (level != 0) {
            *why = "a compressed archive";
            return BAD;
        }
    }
    for (int i = 0; i < 7; i++) { /* creation time */
        int64_t t;
        TRY(rd_int(&c, &t));
    }
    for (int i = 0; i < 3; i++) /* database name, server and pg_dump versions */
        TRY(skip_str(&c));
    int64_t count;
    TRY(rd_int(&c, &count));
    if (count < 0 || (uint64_t)count > TOC_MAX / 16) {
        *why = "an unexpected table of contents";
        return BAD;
    }
    /* entries are collected in a fresh array: this parse may end in NEED */
    struct tentry *v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (int64_t i = 0; i < count && rc == 0; i++) {
        int64_t id, had, sect, slen, tlen, dlen, clen, nlen, relkind;
        const uint8_t *tag, *desc, *copy, *nsp, *s;
        if ((rc = rd_int(&c, &id)) || (rc = rd_int(&c, &had)) || (rc = skip_str(&c)) ||
            (rc = skip_str(&c)) || (rc = rd_str(&c, &tag, &tlen)) ||
            (rc = rd_str(&c, &desc, &dlen)) || (rc = rd_int(&c, &sect)) || (rc = skip_str(&c)) ||
            (rc = skip_str(&c)) || (rc = rd_str(&c, &copy, &clen)) ||
            (rc = rd_str(&c, &nsp, &nlen)) || (rc = skip_str(&c)))
            break;
        if (vmin >= 14 && (rc = skip_str(&c)))
            break;
        if (vmin >= 16 && (rc = rd_int(&c, &relkind)))
            break;
        if ((rc = skip_str(&c)) || (rc = skip_str(&c))) /* owner, with-oids */
            break;
        for (;;) { /* dependencies, up to a null string */
            if ((rc = rd_str(&c, &s, &slen)) || !s)
                break;
        }
        if (rc)
            break;
        int flag;
        if ((rc = rd_byte(&c, &flag)))
            break;
        if (c.len - c.pos < (size_t)osz) {
            rc = NEED;
            break;
        }
        c.pos += (size_t)osz;
        if (flag < 1 || flag > 3) {
            rc = BAD;
            *why = "an unexpected table of contents";
            break;
        }
        if (!str_is(desc, dlen, "TABLE DATA") || !copy || clen == 0 || !tag || !nsp)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            v = xrealloc(v, xsize(cap, sizeof(*v), 0));
        }
        struct tentry *t = &v[n++];
        memset(t, 0, sizeof(*t));
        t->dump_id = id;
        t->schema = xstrndup((const char *)nsp, (size_t)nlen);
        t->name = xstrndup((const char *)tag, (size_t)tlen);
    }
    if (rc == BAD && !*why)
        *why = "an unexpected table of contents";
    if (rc) {
        for (size_t i = 0; i < n; i++) {
            free(v[i].schema);
            free(v[i].name);
        }
        free(v);
        return rc;
    }
    if (n > 1) /* (v is NULL when n is 0: qsort's pointer must not be) */
        qsort(v, n, sizeof(*v), tentry_cmp);
    for (size_t i = 1; i < n; i++)
        if (v[i].dump_id == v[i - 1].dump_id) {
            *why = "a table of contents with a repeated dump id";
            for (size_t k = 0; k < n; k++) {
                free(v[k].schema);
                free(v[k].name);
            }
            free(v);
            return BAD;
        }
    d->v = v;
    d->n = n;
    d->byname = xcalloc(n ? n : 1, sizeof(*d->byname));
    for (size_t i = 0; i < n; i++)
        d->byname[i] = &v[i];
    qsort(d->byname, n, sizeof(*d->byname), byname_cmp);
    for (size_t i = 1; i < n; i++)
        if (byname_cmp(&d->byname[i - 1], &d->byname[i]) == 0)
            d->byname[i - 1]->twice = d->byname[i]->twice = true;
    *used = c.pos;
    return 0;
}

/* ---- data blocks, byte by byte state ---------------------------------------------------- */

/* Gathers an int of the data part; true with *v once complete. */
static bool gather_int(struct dumpcount *d, const uint8_t **p, size_t *n, int64_t *v)
{
    size_t want = (size_t)d->int_size + 1;
    while (*n && (size_t)d->ilen < want) {
        d->ib[d->ilen++] = **p;
        (*p)++;
        (*n)--;
    }
    if ((size_t)d->ilen < want)
        return false;
    d->ilen = 0;
    uint64_t u = 0;
    for (int i = 0; i < d->int_size; i++)
        u |= (uint64_t)d->ib[1 + i] << (8 * i);
    if (d->ib[0] > 1 || u > INT64_MAX) {
        give_up(d, "an unexpected data block");
        return false;
    }
    *v = d->ib[0] ? -(int64_t)u : (int64_t)u;
    return true;
}

static void feed_blocks(struct dumpcount *d, const uint8_t *p, size_t n)
{
    int64_t v;
    while (n && d->st != S_FAILED) {
        switch (d->st) {
        case S_TYPE:
            if (*p != BLK_DATA && *p != BLK_BLOBS) {
                give_up(d, "an unexpected data block");
                return;
            }
            d->blobs = *p == BLK_BLOBS;
            p++;
            n--;
            d->st = S_ID;
            break;
        case S_ID:
            if (!gather_int(d, &p, &n, &v))
                break;
            d->cur = NULL;
            d->tail_len = 0;
            if (!d->blobs) {
                struct tentry key = {.dump_id = v};
                d->cur = d->n ? bsearch(&key, d->v, d->n, sizeof(*d->v), tentry_cmp) : NULL;
                if (d->cur && d->cur->started) {
                    give_up(d, "a table's data in two blocks");
                    return;
                }
                if (d->cur)
                    d->cur->started = true;
            }
            d->st = d->blobs ? S_OID : S_LEN;
            break;
        case S_OID:
            if (!gather_int(d, &p, &n, &v))
                break;
            d->st = v == 0 ? S_TYPE : S_LEN;
            break;
        case S_LEN:
            if (!gather_int(d, &p, &n, &v))
                break;
            if (v < 0) {
                give_up(d, "an unexpected data block");
                return;
            }
            if (v > 0) {
                d->remaining = v;
                d->st = S_BYTES;
            } else if (d->blobs) {
                d->st = S_OID;
            } else {
                if (d->cur && d->tail_len == sizeof(d->tail) &&
                    memcmp(d->tail, END_OF_COPY, sizeof(d->tail)) == 0 && d->cur->rows >= 3) {
                    d->cur->rows -= 3; /* the marker's newlines */
                    d->cur->seen = true;
                }
                d->st = S_TYPE;
            }
            break;
        case S_BYTES: {
            size_t k = (uint64_t)d->remaining < n ? (size_t)d->remaining : n;
            if (d->cur) {
                const uint8_t *q = p, *end = p + k;
                while ((q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
                    d->cur->rows++;
                    q++;
                }
                size_t keep = sizeof(d->tail);
                if (k >= keep) {
                    memcpy(d->tail, p + k - keep, keep);
                    d->tail_len = keep;
                } else { /* shift in the k new bytes */
                    size_t old = d->tail_len + k > keep ? keep - k : d->tail_len;
                    memmove(d->tail, d->tail + d->tail_len - old, old);
                    memcpy(d->tail + old, p, k);
                    d->tail_len = old + k;
                }
            }
            p += k;
            n -= k;
            d->remaining -= (int64_t)k;
            if (d->remaining == 0)
                d->st = S_LEN;
            break;
        }
        default:
            return;
        }
    }
}

static void try_head(struct dumpcount *d);

void dumpcount_feed(struct dumpcount *d, const uint8_t *p, size_t n)
{
    if (d->st == S_FAILED || n == 0)
        return;
    if (d->st != S_HEAD) {
        feed_blocks(d, p, n);
        return;
    }
    if (d->head.len + n > TOC_MAX) {
        give_up(d, "a table of contents over 64 MiB");
        return;
    }
    buf_append(&d->head, p, n);
    /* Parsed again from the start only once it grew by half (pg_dump writes in pieces of a
     * few KiB: parsing at every piece would be quadratic in the table of contents' size). */
    if (d->head.len < d->retry_at)
        return;
    try_head(d);
}

/* Parses the gathered header and table of contents; when complete, reads on into the data
 * blocks that came with them. */
static void try_head(struct dumpcount *d)
{
    size_t used = 0;
    const char *why = NULL;
    int rc = parse_head(d, &used, &why);
    if (rc == NEED) {
        d->retry_at = d->head.len + d->head.len / 2;
        return;
    }
    if (rc == BAD) {
        give_up(d, why ? why : "an unexpected archive header");
        return;
    }
    d->st = S_TYPE;
    struct buf rest = d->head;
    memset(&d->head, 0, sizeof(d->head));
    feed_blocks(d, rest.data + used, rest.len - used);
    buf_free(&rest);
}

void dumpcount_end(struct dumpcount *d)
{
    if (d->st == S_HEAD && d->head.len) /* parse what was held back */
        try_head(d);
}

bool dumpcount_complete(const struct dumpcount *d)
{
    return d->st == S_TYPE && d->ilen == 0;
}

bool dumpcount_rows(const struct dumpcount *d, const char *schema, const char *name, int64_t *rows)
{
    if (!dumpcount_complete(d))
        return false;
    struct tentry key = {.schema = (char *)schema, .name = (char *)name}, *kp = &key;
    struct tentry **t = bsearch(&kp, d->byname, d->n, sizeof(*d->byname), byname_cmp);
    if (!t || !(*t)->seen || (*t)->twice)
        return false;
    *rows = (*t)->rows;
    return true;
}

const char *dumpcount_why(const struct dumpcount *d)
{
    if (d->st == S_FAILED)
        return d->why;
    if (!dumpcount_complete(d))
        return d->st == S_HEAD ? "an archive cut short in its header" : "an archive cut short";
    return NULL;
}

/* Tar writer: see tarw.h. The layout of a ustar header and the pax records follow POSIX.1-2008
 * ("pax" Interchange Format). */
#include "tarw.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tarw_init(struct tarw *t, int fd)
{
    t->fd = fd;
    t->written = 0;
}

static int out(struct tarw *t, const void *p, size_t n, struct err *e)
{
    if (fs_write_full(t->fd, p, n) != 0)
        /* also a single file's bytes (dump of one file goes through here, without headers) */
        return err_sys(e, errno, NULL, "cannot write the dump to its output");
    t->written += n;
    return 0;
}

static int zeros(struct tarw *t, uint64_t n, struct err *e)
{
    static const uint8_t z[TARW_BLOCK * 4];
    while (n) {
        size_t k = n > sizeof(z) ? sizeof(z) : (size_t)n;
        if (out(t, z, k, e) != 0)
            return -1;
        n -= k;
    }
    return 0;
}

static size_t ndigits(size_t v)
{
    size_t d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

void tarw_pax_record(struct buf *b, const char *key, const void *value, size_t len)
{
    size_t klen = strlen(key);
    size_t base = klen + len + 3; /* ' ', '=', '\n' */
    size_t total = base + ndigits(base);
    while (total != base + ndigits(total))
        total = base + ndigits(total);
    char num[32];
    int nl = snprintf(num, sizeof(num), "%zu ", total);
    buf_append(b, num, (size_t)nl);
    buf_append(b, key, klen);
    buf_append_u8(b, '=');
    buf_append(b, value, len);
    buf_append_u8(b, '\n');
}

static void pax_str(struct buf *b, const char *key, const char *s)
{
    tarw_pax_record(b, key, s, strlen(s));
}

/* An octal field of width w (w-1 digits and a NUL). false when v does not fit. */
static bool octal(uint8_t *f, size_t w, uint64_t v)
{
    if (w - 1 < 22 && v >> (3 * (w - 1)))
        return false;
    f[w - 1] = '\0';
    for (size_t i = w - 1; i-- > 0;) {
        f[i] = (uint8_t)('0' + (v & 7));
        v >>= 3;
    }
    return true;
}

static void field(uint8_t *f, size_t w, const char *s, size_t len)
{
    memcpy(f, s, len < w ? len : w);
}

static void checksum(uint8_t *h)
{
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < TARW_BLOCK; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
}

/* A ustar header block; fields that do not fit are left to pax records the caller wrote. */
static void ustar(uint8_t *h, const char *name, size_t name_len, char type, uint32_t mode,
                  uint32_t uid, uint32_t gid, uint64_t size, int64_t mtime, const char *uname,
                  const char *gname, const char *link)
{
    memset(h, 0, TARW_BLOCK);
    field(h, 100, name, name_len);
    octal(h + 100, 8, mode & 07777);
    if (!octal(h + 108, 8, uid))
        octal(h + 108, 8, 0);
    if (!octal(h + 116, 8, gid))
        octal(h + 116, 8, 0);
    if (!octal(h + 124, 12, size))
        octal(h + 124, 12, 0);
    if (mtime < 0 || !octal(h + 136, 12, (uint64_t)mtime))
        octal(h + 136, 12, 0);
    h[156] = (uint8_t)type;
    if (link)
        field(h + 157, 100, link, strlen(link));
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    if (uname && strlen(uname) < 32)
        field(h + 265, 32, uname, strlen(uname));
    if (gname && strlen(gname) < 32)
        field(h + 297, 32, gname, strlen(gname));
    octal(h + 329, 8, 0);
    octal(h + 337, 8, 0);
    checksum(h);
}

static bool needs_pax_name(const char *s, size_t len, size_t max)
{
    return len >= max || memchr(s, '\0', len) != NULL;
}

int tarw_header(struct tarw *t, const struct tarw_hdr *h, struct err *e)
{
    struct buf pax = {0};
    /* pax records are UTF-8 unless hdrcharset says BINARY: a name, link or owner name that is
     * not UTF-8 (a Latin-1 user name) goes through as its bytes */
    bool binary = !str_is_utf8(h->name, h->name_len) ||
                  (h->link && !str_is_utf8(h->link, strlen(h->link))) ||
                  (h->uname && !str_is_utf8(h->uname, strlen(h->uname))) ||
                  (h->gname && !str_is_utf8(h->gname, strlen(h->gname)));
    if (binary)
        pax_str(&pax, "hdrcharset", "BINARY");
    if (needs_pax_name(h->name, h->name_len, 100))
        tarw_pax_record(&pax, "path", h->name, h->name_len);
    if (h->link && strlen(h->link) >= 100)
        pax_str(&pax, "linkpath", h->link);
    char num[64];
    uint8_t scratch[12];
    if (!octal(scratch, 12, h->size)) {
        snprintf(num, sizeof(num), "%" PRIu64, h->size);
        pax_str(&pax, "size", num);
    }
    if (!octal(scratch, 8, h->uid)) {
        snprintf(num, sizeof(num), "%" PRIu32, h->uid);
        pax_str(&pax, "uid", num);
    }
    if (!octal(scratch, 8, h->gid)) {
        snprintf(num, sizeof(num), "%" PRIu32, h->gid);
        pax_str(&pax, "gid", num);
    }
    if (h->mtime_nsec || h->mtime_sec < 0 || !octal(scratch, 12, (uint64_t)h->mtime_sec)) {
        /* sec + nsec/1e9 as a decimal: -2 s + 0.5 s is "-1.5" */
        int64_t s = h->mtime_sec;
        int64_t ns = h->mtime_nsec;
        bool neg = s < 0;
        if (neg && ns) {
            s += 1;
            ns = 1000000000 - ns;
        }
        uint64_t mag = s < 0 ? (uint64_t)(-(s + 1)) + 1 : (uint64_t)s;
        snprintf(num, sizeof(num), "%s%" PRIu64 ".%09" PRId64, neg ? "-" : "", mag, ns);
        pax_str(&pax, "mtime", num);
    }
    if (h->uname && (strlen(h->uname) >= 32 || !str_is_utf8(h->uname, strlen(h->uname))))
        pax_str(&pax, "uname", h->uname);
    if (h->gname && (strlen(h->gname) >= 32 || !str_is_utf8(h->gname, strlen(h->gname))))
        pax_str(&pax, "gname", h->gname);
    for (size_t i = 0; i < h->nxattrs; i++) {
        char *key = xasprintf("SCHILY.xattr.%s", h->xattrs[i].name);
        tarw_pax_record(&pax, key, h->xattrs[i].value, h->xattrs[i].len);
        free(key);
    }
    uint8_t blk[TARW_BLOCK];
    int rc = 0;
    if (pax.len) {
        /* The extended header's own name is informational; readers use its records. */
        char xname[100];
        size_t base = h->name_len > 80 ? 80 : h->name_len;
        int n = snprintf(xname, sizeof(xname), "PaxHeader/%.*s", (int)base, h->name);
        ustar(blk, xname, (size_t)n, 'x', 0644, 0, 0, pax.len, h->mtime_sec, NULL, NULL, NULL);
        rc = out(t, blk, TARW_BLOCK, e);
        if (rc == 0)
            rc = out(t, pax.data, pax.len, e);
        if (rc == 0)
            rc = tarw_end_member(t, pax.len, e);
    }
    buf_free(&pax);
    if (rc != 0)
        return -1;
    ustar(blk, h->name, h->name_len, h->type, h->mode, h->uid, h->gid, h->type == '0' ? h->size : 0,
          h->mtime_sec, h->uname, h->gname, h->link);
    return out(t, blk, TARW_BLOCK, e);
}

int tarw_data(struct tarw *t, const void *p, size_t n, struct err *e)
{
    return out(t, p, n, e);
}

int tarw_end_member(struct tarw *t, uint64_t size, struct err *e)
{
    uint64_t rem = size % TARW_BLOCK;
    return rem ? zeros(t, TARW_BLOCK - rem, e) : 0;
}

int tarw_finish(struct tarw *t, struct err *e)
{
    if (zeros(t, 2 * TARW_BLOCK, e) != 0)
        return -1;
    uint64_t rem = t->written % TARW_RECORD;
    return rem ? zeros(t, TARW_RECORD - rem, e) : 0;
}

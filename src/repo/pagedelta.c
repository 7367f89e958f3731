/* Page deltas (caris/pagedelta.h). */
#include "caris/pagedelta.h"

#include <string.h>

static void put_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static size_t nonzero(const uint8_t *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += p[i] != 0;
    return k;
}

size_t pagedelta_weight(const uint8_t *block, size_t len)
{
    return nonzero(block, len);
}

size_t pagedelta_encode(const uint8_t base_id[32], const uint8_t *base, size_t blen,
                        const uint8_t *block, size_t len, const bool *differ, struct buf *out)
{
    size_t pages = len / PAGEDELTA_PAGE, bm = (pages + 7) / 8, weight = 0;
    out->len = 0;
    uint8_t head[PAGEDELTA_HEAD];
    memcpy(head, PAGEDELTA_MAGIC, 4);
    put_u32le(head + 4, (uint32_t)len);
    memcpy(head + 8, base_id, 32);
    buf_append(out, head, sizeof(head));
    size_t bits_at = out->len;
    uint8_t zeros[2 * PAGEDELTA_MAX_PAGES / 8] = {0};
    buf_append(out, zeros, 2 * bm); /* the two bitmaps, filled in below */
    uint8_t x[PAGEDELTA_PAGE];
    for (size_t i = 0; i < pages; i++) {
        if (!differ[i])
            continue;
        const uint8_t *p = block + i * PAGEDELTA_PAGE;
        out->data[bits_at + i / 8] |= (uint8_t)(1u << (i % 8));
        size_t raw = nonzero(p, PAGEDELTA_PAGE);
        if ((i + 1) * PAGEDELTA_PAGE <= blen) {
            const uint8_t *q = base + i * PAGEDELTA_PAGE;
            for (size_t k = 0; k < PAGEDELTA_PAGE; k++)
                x[k] = p[k] ^ q[k];
            size_t xw = nonzero(x, PAGEDELTA_PAGE);
            if (xw < raw) { /* a page changed in a few places: mostly zeros */
                out->data[bits_at + bm + i / 8] |= (uint8_t)(1u << (i % 8));
                buf_append(out, x, PAGEDELTA_PAGE);
                weight += xw;
                continue;
            }
        }
        buf_append(out, p, PAGEDELTA_PAGE);
        weight += raw;
    }
    return weight;
}

/* Checks the header, the bitmaps and the size: *len is the block's length, *bits its bitmaps
 * (carried, then XOR), *carried the number of pages the delta holds. */
static int parse(const uint8_t *d, size_t dlen, size_t *len, const uint8_t **bits, size_t *carried)
{
    if (dlen < PAGEDELTA_HEAD || memcmp(d, PAGEDELTA_MAGIC, 4) != 0)
        return -1;
    *len = get_u32le(d + 4);
    if (*len % PAGEDELTA_PAGE != 0 || *len / PAGEDELTA_PAGE > PAGEDELTA_MAX_PAGES)
        return -1;
    size_t pages = *len / PAGEDELTA_PAGE, bm = (pages + 7) / 8;
    if (dlen < PAGEDELTA_HEAD + 2 * bm)
        return -1;
    *bits = d + PAGEDELTA_HEAD;
    size_t n = 0;
    for (size_t i = 0; i < bm * 8; i++) {
        bool set = ((*bits)[i / 8] >> (i % 8)) & 1;
        bool xored = ((*bits)[bm + i / 8] >> (i % 8)) & 1;
        if ((set && i >= pages) || (xored && !set)) /* bits past the last page must be clear; */
            return -1;                              /* XOR only for a carried page */
        n += set;
    }
    if (dlen != PAGEDELTA_HEAD + 2 * bm + n * PAGEDELTA_PAGE)
        return -1;
    *carried = n;
    return 0;
}

long pagedelta_pages(const uint8_t *delta, size_t dlen)
{
    size_t len, n;
    const uint8_t *bits;
    return parse(delta, dlen, &len, &bits, &n) == 0 ? (long)n : -1;
}

int pagedelta_apply(const uint8_t *delta, size_t dlen, const uint8_t base_id[32],
                    const uint8_t *base, size_t blen, size_t want_len, struct buf *out,
                    struct err *e)
{
    size_t len, n;
    const uint8_t *bits;
    if (parse(delta, dlen, &len, &bits, &n) != 0)
        return err_set(e, ERR_DAMAGE, NULL, "malformed page delta");
    if (memcmp(delta + 8, base_id, 32) != 0)
        return err_set(e, ERR_DAMAGE, NULL, "page delta names another base block than its entry");
    if (len != want_len)
        return err_set(e, ERR_DAMAGE, NULL, "page delta rebuilds %zu bytes, the manifest says %zu",
                       len, want_len);
    size_t pages = len / PAGEDELTA_PAGE, bm = (pages + 7) / 8;
    const uint8_t *src = delta + PAGEDELTA_HEAD + 2 * bm;
    out->len = 0;
    buf_reserve(out, len);
    for (size_t i = 0; i < pages; i++) {
        bool carried = (bits[i / 8] >> (i % 8)) & 1, xored = (bits[bm + i / 8] >> (i % 8)) & 1;
        bool in_base = (i + 1) * PAGEDELTA_PAGE <= blen;
        if ((!carried || xored) && !in_base) {
            out->len = 0;
            return err_set(e, ERR_DAMAGE, NULL,
                           "page delta needs page %zu of a base block of %zu bytes", i, blen);
        }
        if (!carried) {
            buf_append(out, base + i * PAGEDELTA_PAGE, PAGEDELTA_PAGE);
            continue;
        }
        buf_append(out, src, PAGEDELTA_PAGE);
        if (xored) {
            uint8_t *p = out->data + out->len - PAGEDELTA_PAGE;
            const uint8_t *q = base + i * PAGEDELTA_PAGE;
            for (size_t k = 0; k < PAGEDELTA_PAGE; k++)
                p[k] ^= q[k];
        }
        src += PAGEDELTA_PAGE;
    }
    return 0;
}

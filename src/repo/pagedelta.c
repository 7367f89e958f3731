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

void pagedelta_encode(const uint8_t base_id[32], const uint8_t *block, size_t len,
                      const bool *differ, struct buf *out)
{
    size_t pages = len / PAGEDELTA_PAGE, bm = (pages + 7) / 8;
    out->len = 0;
    uint8_t head[PAGEDELTA_HEAD];
    memcpy(head, PAGEDELTA_MAGIC, 4);
    put_u32le(head + 4, (uint32_t)len);
    memcpy(head + 8, base_id, 32);
    buf_append(out, head, sizeof(head));
    uint8_t bits[PAGEDELTA_MAX_PAGES / 8] = {0};
    for (size_t i = 0; i < pages; i++)
        if (differ[i])
            bits[i / 8] |= (uint8_t)(1u << (i % 8));
    buf_append(out, bits, bm);
    for (size_t i = 0; i < pages; i++)
        if (differ[i])
            buf_append(out, block + i * PAGEDELTA_PAGE, PAGEDELTA_PAGE);
}

/* Checks the header, the bitmap and the size: *len is the block's length, *bits its bitmap,
 * *carried the number of pages the delta holds. */
static int parse(const uint8_t *d, size_t dlen, size_t *len, const uint8_t **bits, size_t *carried)
{
    if (dlen < PAGEDELTA_HEAD || memcmp(d, PAGEDELTA_MAGIC, 4) != 0)
        return -1;
    *len = get_u32le(d + 4);
    if (*len % PAGEDELTA_PAGE != 0 || *len / PAGEDELTA_PAGE > PAGEDELTA_MAX_PAGES)
        return -1;
    size_t pages = *len / PAGEDELTA_PAGE, bm = (pages + 7) / 8;
    if (dlen < PAGEDELTA_HEAD + bm)
        return -1;
    *bits = d + PAGEDELTA_HEAD;
    size_t n = 0;
    for (size_t i = 0; i < bm * 8; i++) {
        bool set = ((*bits)[i / 8] >> (i % 8)) & 1;
        if (set && i >= pages) /* bits past the last page must be clear */
            return -1;
        n += set;
    }
    if (dlen != PAGEDELTA_HEAD + bm + n * PAGEDELTA_PAGE)
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
    const uint8_t *src = delta + PAGEDELTA_HEAD + bm;
    out->len = 0;
    buf_reserve(out, len);
    for (size_t i = 0; i < pages; i++) {
        const uint8_t *p;
        if ((bits[i / 8] >> (i % 8)) & 1) {
            p = src;
            src += PAGEDELTA_PAGE;
        } else if ((i + 1) * PAGEDELTA_PAGE <= blen) {
            p = base + i * PAGEDELTA_PAGE;
        } else {
            out->len = 0;
            return err_set(e, ERR_DAMAGE, NULL,
                           "page delta needs page %zu of a base block of %zu bytes", i, blen);
        }
        buf_append(out, p, PAGEDELTA_PAGE);
    }
    return 0;
}

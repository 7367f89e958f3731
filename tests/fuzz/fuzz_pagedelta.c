/* libFuzzer harness: the page-delta decoder of src/repo/pagedelta.c (pagedelta_pages,
 * pagedelta_apply) against a fixed base block, and an encode/apply round trip.
 *
 * Input: a flags byte, then a delta blob. Flags: bit 0 writes the base's id into the blob
 * (so that the fuzzer need not guess 32 bytes), bit 1 asks for the length the blob's header
 * names (else 2 pages), bits 2-3 choose the base's length (0, 1, 3 or 4 pages), bit 4 instead
 * encodes a block made of the blob's bytes against the base (pages differing where the blob
 * says), applies the result, and checks that the block comes back. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"
#include "caris/pagedelta.h"

#define BASE_PAGES 4

static uint8_t base[BASE_PAGES * PAGEDELTA_PAGE];
static const uint8_t base_id[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

static void init_base(void)
{
    for (size_t i = 0; i < sizeof(base); i++)
        base[i] = (uint8_t)(i * 7 + i / PAGEDELTA_PAGE);
}

static void round_trip(const uint8_t *data, size_t size, size_t blen)
{
    /* a block of up to 4 pages: page i is the base's page i (or zeros past the base), with
     * the input's bytes written at its start when bit i of the first byte is set */
    if (size < 1)
        return;
    size_t pages = 1 + data[0] % BASE_PAGES, len = pages * PAGEDELTA_PAGE;
    uint8_t *block = calloc(len, 1);
    bool differ[BASE_PAGES] = {false};
    for (size_t i = 0; i < pages; i++) {
        if ((i + 1) * PAGEDELTA_PAGE <= blen)
            memcpy(block + i * PAGEDELTA_PAGE, base + i * PAGEDELTA_PAGE, PAGEDELTA_PAGE);
        if (data[0] >> (4 + i) & 1) {
            size_t n = size - 1 < PAGEDELTA_PAGE ? size - 1 : PAGEDELTA_PAGE;
            memcpy(block + i * PAGEDELTA_PAGE, data + 1, n);
            differ[i] = true;
        }
        if ((i + 1) * PAGEDELTA_PAGE > blen)
            differ[i] = true; /* not in the base: must be carried */
    }
    struct buf delta = {0}, out = {0};
    struct err e = ERR_INIT;
    (void)pagedelta_encode(base_id, base, blen, block, len, differ, &delta);
    if (pagedelta_pages(delta.data, delta.len) < 0 ||
        pagedelta_apply(delta.data, delta.len, base_id, base, blen, len, &out, &e) != 0 ||
        out.len != len || memcmp(out.data, block, len) != 0) {
        fprintf(stderr, "pagedelta: round trip failed: %s\n", e.msg);
        abort();
    }
    buf_free(&delta);
    buf_free(&out);
    free(block);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (base[1] == 0)
        init_base();
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    static const size_t base_pages[] = {0, 1, 3, 4};
    size_t blen = base_pages[flags >> 2 & 3] * PAGEDELTA_PAGE;
    data++;
    size--;
    if (flags & 16) {
        round_trip(data, size, blen);
        return 0;
    }
    uint8_t *delta = malloc(size ? size : 1);
    memcpy(delta, data, size);
    if ((flags & 1) && size >= PAGEDELTA_HEAD)
        memcpy(delta + 8, base_id, 32);
    size_t want = 2 * PAGEDELTA_PAGE;
    if ((flags & 2) && size >= 8)
        want = (size_t)delta[4] | (size_t)delta[5] << 8 | (size_t)delta[6] << 16 |
               (size_t)delta[7] << 24;
    (void)pagedelta_pages(delta, size);
    struct buf out = {0};
    struct err e = ERR_INIT;
    if (pagedelta_apply(delta, size, base_id, base, blen, want, &out, &e) == 0 && out.len != want)
        abort();
    buf_free(&out);
    free(delta);
    return 0;
}

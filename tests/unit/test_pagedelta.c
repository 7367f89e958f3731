#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "caris/pagedelta.h"
#include "caris/pipeline.h"

#define P PAGEDELTA_PAGE
#define NP 32

/* Deterministic page contents: page i of a version v. */
static void fill(uint8_t *b, size_t pages, unsigned v)
{
    for (size_t i = 0; i < pages; i++)
        for (size_t j = 0; j < P; j++)
            b[i * P + j] = (uint8_t)(i * 31 + j * 7 + v);
}

static void test_roundtrip(void **state)
{
    (void)state;
    static uint8_t base[NP * P], block[NP * P];
    uint8_t bid[32];
    memset(bid, 0xab, 32);
    fill(base, NP, 0);
    memcpy(block, base, sizeof(block));
    bool differ[NP] = {false};
    const size_t changed[] = {0, 5, 17, 31};
    for (size_t k = 0; k < 4; k++) {
        block[changed[k] * P + 100] ^= 0x5a;
        differ[changed[k]] = true;
    }
    struct buf d = {0}, out = {0};
    /* one byte changed in each: stored XOR the base page, one non-zero byte each */
    assert_int_equal(pagedelta_encode(bid, base, sizeof(base), block, sizeof(block), differ, &d),
                     4);
    /* header, two 4-byte bitmaps, the 4 pages: nothing else */
    assert_int_equal(d.len, PAGEDELTA_HEAD + 8 + 4 * P);
    assert_int_equal(pagedelta_pages(d.data, d.len), 4);
    assert_int_equal(d.data[PAGEDELTA_HEAD + 4], 0x21); /* XOR bits of pages 0 and 5 */
    assert_int_equal(pagedelta_weight(block, sizeof(block)), pagedelta_weight(base, sizeof(base)));
    struct err e = ERR_INIT;
    assert_int_equal(
        pagedelta_apply(d.data, d.len, bid, base, sizeof(base), sizeof(block), &out, &e), 0);
    assert_int_equal(out.len, sizeof(block));
    assert_memory_equal(out.data, block, sizeof(block));
    /* no page differs: a delta of the header and bitmap only, rebuilding the base */
    memset(differ, 0, sizeof(differ));
    assert_int_equal(pagedelta_encode(bid, base, sizeof(base), base, sizeof(base), differ, &d), 0);
    assert_int_equal(d.len, PAGEDELTA_HEAD + 8);
    assert_int_equal(
        pagedelta_apply(d.data, d.len, bid, base, sizeof(base), sizeof(base), &out, &e), 0);
    assert_memory_equal(out.data, base, sizeof(base));
    buf_free(&d);
    buf_free(&out);
}

/* A block longer or shorter than its base (the file grew or was truncated in it). */
static void test_lengths(void **state)
{
    (void)state;
    static uint8_t base[10 * P], block[12 * P];
    uint8_t bid[32] = {1};
    fill(base, 10, 0);
    fill(block, 12, 0); /* pages 0..9 as the base */
    bool differ[12] = {false};
    differ[10] = differ[11] = true;
    struct buf d = {0}, out = {0};
    struct err e = ERR_INIT;
    /* pages 10 and 11 are not in the base: carried as they are (weight: their non-zero bytes) */
    assert_int_equal(pagedelta_encode(bid, base, sizeof(base), block, sizeof(block), differ, &d),
                     pagedelta_weight(block + 10 * P, 2 * P));
    assert_int_equal(d.data[PAGEDELTA_HEAD + 2] | d.data[PAGEDELTA_HEAD + 3], 0); /* no XOR */
    assert_int_equal(
        pagedelta_apply(d.data, d.len, bid, base, sizeof(base), sizeof(block), &out, &e), 0);
    assert_memory_equal(out.data, block, sizeof(block));
    /* a page marked XOR past the base's pages is damage */
    d.data[PAGEDELTA_HEAD + 3] |= 0x04; /* page 10 */
    assert_int_equal(
        pagedelta_apply(d.data, d.len, bid, base, sizeof(base), sizeof(block), &out, &e), -1);
    /* a delta that takes page 11 from a base of 10 pages is damage, not zeros */
    differ[11] = false;
    pagedelta_encode(bid, base, sizeof(base), block, sizeof(block), differ, &d);
    assert_int_equal(
        pagedelta_apply(d.data, d.len, bid, base, sizeof(base), sizeof(block), &out, &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    /* shorter: 3 pages of the base, one of them replaced */
    bool d3[3] = {false, true, false};
    uint8_t small[3 * P];
    fill(small, 3, 9);
    pagedelta_encode(bid, base, sizeof(base), small, sizeof(small), d3, &d);
    e = (struct err)ERR_INIT;
    assert_int_equal(
        pagedelta_apply(d.data, d.len, bid, base, sizeof(base), sizeof(small), &out, &e), 0);
    assert_memory_equal(out.data, base, P);
    assert_memory_equal(out.data + P, small + P, P);
    assert_memory_equal(out.data + 2 * P, base + 2 * P, P);
    buf_free(&d);
    buf_free(&out);
}

/* Every malformed or mismatched delta is refused with ERR_DAMAGE. */
static void test_refusals(void **state)
{
    (void)state;
    static uint8_t base[4 * P], block[4 * P];
    uint8_t bid[32] = {7}, other[32] = {8};
    fill(base, 4, 0);
    fill(block, 4, 1);
    bool differ[4] = {true, false, false, true};
    struct buf d = {0}, out = {0};
    pagedelta_encode(bid, base, sizeof(base), block, sizeof(block), differ, &d);
    struct err e = ERR_INIT;
    /* another base than the entry names */
    assert_int_equal(
        pagedelta_apply(d.data, d.len, other, base, sizeof(base), sizeof(block), &out, &e), -1);
    /* another length than the manifest says */
    assert_int_equal(pagedelta_apply(d.data, d.len, bid, base, sizeof(base), 3 * P, &out, &e), -1);
    /* truncated, extended, bad magic, a bit past the last page */
    assert_int_equal(
        pagedelta_apply(d.data, d.len - 1, bid, base, sizeof(base), sizeof(block), &out, &e), -1);
    assert_int_equal(pagedelta_pages(d.data, d.len - 1), -1);
    buf_append_u8(&d, 0);
    assert_int_equal(pagedelta_pages(d.data, d.len), -1);
    d.len--;
    d.data[0] ^= 1;
    assert_int_equal(pagedelta_pages(d.data, d.len), -1);
    d.data[0] ^= 1;
    d.data[PAGEDELTA_HEAD] |= 0x80; /* page 7 of a 4-page block */
    assert_int_equal(pagedelta_pages(d.data, d.len), -1);
    d.data[PAGEDELTA_HEAD] &= 0x7f;
    assert_int_equal(pagedelta_pages(d.data, d.len), 2);
    d.data[PAGEDELTA_HEAD + 1] |= 0x02; /* XOR bit of page 1, which is not carried */
    assert_int_equal(pagedelta_pages(d.data, d.len), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    buf_free(&d);
    buf_free(&out);
}

/* Chunk lists with page deltas: the reader of plain chunks refuses them, the other reads them. */
static void test_chunklist(void **state)
{
    (void)state;
    const char *a = "1111111111111111111111111111111111111111111111111111111111111111";
    const char *b = "2222222222222222222222222222222222222222222222222222222222222222";
    json_t *l = json_pack("[[s, i], {s:s, s:s, s:i}]", a, 5, "base", a, "id", b, "len", 8192);
    uint8_t(*ids)[32];
    uint32_t *lens;
    size_t n;
    assert_int_equal(chunklist_decode(l, &ids, &lens, &n), -1);
    struct chunk_item *refs;
    assert_int_equal(chunklist_decode_items(l, &refs, &n), 0);
    assert_int_equal(n, 2);
    assert_false(refs[0].delta);
    assert_int_equal(refs[0].len, 5);
    assert_true(refs[1].delta);
    assert_int_equal(refs[1].len, 8192);
    assert_int_equal(refs[1].id[0], 0x22);
    assert_int_equal(refs[1].base[31], 0x11);
    free(refs);
    json_decref(l);
    /* a delta without its base, or with a key more, is malformed */
    l = json_pack("[{s:s, s:i}]", "id", b, "len", 1);
    assert_int_equal(chunklist_decode_items(l, &refs, &n), -1);
    json_decref(l);
    l = json_pack("[{s:s, s:s, s:i, s:b}]", "base", a, "id", b, "len", 1, "x", 1);
    assert_int_equal(chunklist_decode_items(l, &refs, &n), -1);
    json_decref(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_chunklist),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

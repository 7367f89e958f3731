#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "caris/chunker.h"

#define KIB ((uint32_t)1024)
#define MIB ((uint32_t)1024 * 1024)

static const uint8_t SEED_A[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t SEED_B[32] = {32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
                                   16, 15, 14, 13, 12, 11, 10, 9,  8,  7,  6,  5,  4,  3,  2,  1};

/* splitmix64: the known-answer test below depends on this exact generator. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* len must be a multiple of 8; bytes are the generator's outputs in little-endian order. */
static uint8_t *random_buf(size_t len, uint64_t seed)
{
    uint8_t *b = malloc(len);
    assert_non_null(b);
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = rng_next(&seed);
        for (int k = 0; k < 8; k++)
            b[i + (size_t)k] = (uint8_t)(v >> (8 * k));
    }
    return b;
}

struct cuts {
    size_t *len;
    size_t n;
};

/* Chunks the whole buffer in one go. */
static struct cuts cut_all(const struct chunker *c, const uint8_t *data, size_t len)
{
    struct cuts r = {malloc((len / c->p.min_size + 2) * sizeof(size_t)), 0};
    assert_non_null(r.len);
    for (size_t off = 0; off < len;) {
        size_t n = chunker_cut(c, data + off, len - off);
        assert_true(n > 0);
        assert_true(n <= len - off);
        r.len[r.n++] = n;
        off += n;
    }
    return r;
}

static bool cuts_equal(const struct cuts *a, const struct cuts *b)
{
    return a->n == b->n && memcmp(a->len, b->len, a->n * sizeof(size_t)) == 0;
}

/* Fraction of the bytes of new_data that lie in chunks whose content is also a chunk of old. */
static double surviving_fraction(const struct chunker *c, const uint8_t *old, size_t old_len,
                                 const uint8_t *new_data, size_t new_len)
{
    struct cuts a = cut_all(c, old, old_len);
    struct cuts b = cut_all(c, new_data, new_len);
    size_t kept = 0;
    for (size_t i = 0, boff = 0; i < b.n; boff += b.len[i], i++) {
        for (size_t j = 0, aoff = 0; j < a.n; aoff += a.len[j], j++) {
            if (a.len[j] == b.len[i] && memcmp(old + aoff, new_data + boff, b.len[i]) == 0) {
                kept += b.len[i];
                break;
            }
        }
    }
    free(a.len);
    free(b.len);
    return (double)kept / (double)new_len;
}

static void test_init_rejects_invalid_params(void **state)
{
    (void)state;
    struct chunker c;
    const struct chunker_params bad[] = {
        {256 * KIB, 1000 * KIB, 8 * MIB}, /* avg not a power of two */
        {256 * KIB, 3 * MIB, 8 * MIB},    /* avg not a power of two */
        {0, 0, 8 * MIB},                  /* avg zero */
        {2 * MIB, 1 * MIB, 8 * MIB},      /* min > avg */
        {256 * KIB, 1 * MIB, 512 * KIB},  /* avg > max */
        {1 * MIB, 16 * MIB, 128 * MIB},   /* max > 64 MiB */
        {1 * MIB, 16 * MIB, 64 * MIB + 1},
        {63, 1 * KIB, 4 * KIB}, /* min < 64 */
        {0, 1 * KIB, 4 * KIB},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(chunker_init(&c, &bad[i], SEED_A), -1);

    struct chunker_params ok = {64, 64, 64};
    assert_int_equal(chunker_init(NULL, &ok, SEED_A), -1);
    assert_int_equal(chunker_init(&c, NULL, SEED_A), -1);
    assert_int_equal(chunker_init(&c, &ok, NULL), -1);

    /* The extremes that are allowed. */
    assert_int_equal(chunker_init(&c, &ok, SEED_A), 0);
    struct chunker_params big = {64 * MIB, 64 * MIB, 64 * MIB};
    assert_int_equal(chunker_init(&c, &big, SEED_A), 0);
    assert_int_equal(chunker_init(&c, &CHUNKER_DEFAULT_FILES, SEED_A), 0);
    assert_int_equal(chunker_init(&c, &CHUNKER_DEFAULT_DUMPS, SEED_A), 0);
}

/* docs/REPOSITORY-FORMAT.md ("Chunking"): mask_s has log2(avg) + 2 bits, mask_l log2(avg) - 2 bits
 * taken from mask_s, all within bits 16..63. */
static void test_masks(void **state)
{
    (void)state;
    for (uint32_t avg = 64; avg <= 64 * MIB; avg *= 2) {
        struct chunker c;
        struct chunker_params p = {64, avg, avg};
        assert_int_equal(chunker_init(&c, &p, SEED_A), 0);
        int bits = __builtin_ctz(avg);
        assert_int_equal(__builtin_popcountll(c.mask_s), bits + 2);
        assert_int_equal(__builtin_popcountll(c.mask_l), bits - 2);
        assert_true((c.mask_l & ~c.mask_s) == 0);
        assert_true((c.mask_s & UINT64_C(0xffff)) == 0);
        assert_true((c.mask_l >> 63) == 1);
    }
}

/* Pins the on-disk-relevant algorithm: gear table derivation, masks and cut rule. The expected
 * values come from an independent implementation of docs/REPOSITORY-FORMAT.md ("Chunking") (Python,
 * hashlib). If this test fails, existing repositories stop deduplicating against new backups. */
static void test_known_answer(void **state)
{
    (void)state;
    uint8_t seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)i;
    struct chunker c;
    struct chunker_params p = {256, 1024, 4096};
    assert_int_equal(chunker_init(&c, &p, seed), 0);
    assert_true(c.gear[0] == UINT64_C(0x16661f271213ff5c));
    assert_true(c.gear[1] == UINT64_C(0x2ee1f1032142eeca));
    assert_true(c.gear[255] == UINT64_C(0x9057d8440c8be4f6));
    assert_true(c.mask_s == UINT64_C(0x8888888888880000));
    assert_true(c.mask_l == UINT64_C(0x8808808808800000));

    static const size_t want[] = {1133, 1534, 1381, 1201, 1442, 1047, 1296, 934,  330,  702,  1273,
                                  1348, 1045, 1115, 1391, 1044, 374,  1111, 276,  1486, 700,  1308,
                                  1062, 671,  1655, 2359, 1037, 1126, 1142, 1649, 1581, 1295, 858,
                                  1756, 1056, 1842, 1288, 1348, 1033, 1821, 1373, 1098, 1679, 886,
                                  1026, 1116, 733,  1319, 610,  2624, 1192, 1544, 1143, 1105, 38};
    uint8_t *data = random_buf(64 * KIB, 42);
    struct cuts got = cut_all(&c, data, 64 * KIB);
    assert_int_equal(got.n, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < got.n; i++)
        assert_int_equal(got.len[i], want[i]);
    free(got.len);
    free(data);
}

static void test_short_input_returns_len(void **state)
{
    (void)state;
    struct chunker c;
    assert_int_equal(chunker_init(&c, &CHUNKER_DEFAULT_DUMPS, SEED_A), 0);
    size_t min = c.p.min_size;
    uint8_t *data = random_buf(min + 8, 7);
    assert_int_equal(chunker_cut(&c, data, 0), 0);
    assert_int_equal(chunker_cut(&c, data, 1), 1);
    assert_int_equal(chunker_cut(&c, data, 63), 63);
    assert_int_equal(chunker_cut(&c, data, min - 1), min - 1);
    assert_int_equal(chunker_cut(&c, data, min), min);
    free(data);
}

static void test_deterministic(void **state)
{
    (void)state;
    size_t len = 16 * MIB;
    uint8_t *data = random_buf(len, 11);
    struct chunker c1, c2;
    assert_int_equal(chunker_init(&c1, &CHUNKER_DEFAULT_DUMPS, SEED_A), 0);
    assert_int_equal(chunker_init(&c2, &CHUNKER_DEFAULT_DUMPS, SEED_A), 0);
    assert_memory_equal(c1.gear, c2.gear, sizeof(c1.gear));
    struct cuts a = cut_all(&c1, data, len);
    struct cuts b = cut_all(&c2, data, len);
    assert_true(a.n > 1);
    assert_true(cuts_equal(&a, &b));
    free(a.len);
    free(b.len);
    free(data);
}

/* A streaming caller: reads pieces of random size into a buffer, calls chunker_cut on what is
 * buffered, and takes a result shorter than the buffer (or any result once max_size bytes or
 * the end of the stream are buffered) as a chunk. With keep_max it always tops the buffer up to
 * max_size first, as the header asks; without, it follows the "return value of len means no
 * cut yet" rule. Either way the cuts must equal those of the whole buffer. */
static struct cuts cut_streaming(const struct chunker *c, const uint8_t *data, size_t len,
                                 uint64_t rng, bool keep_max)
{
    struct cuts r = {malloc((len / c->p.min_size + 2) * sizeof(size_t)), 0};
    assert_non_null(r.len);
    size_t max = c->p.max_size;
    size_t start = 0, avail = 0; /* buffered bytes: data[start .. start + avail) */
    while (start < len) {
        size_t left = len - start - avail;
        if (left > 0 && (avail == 0 || (keep_max && avail < max) || rng_next(&rng) % 2)) {
            size_t piece = 1 + (size_t)(rng_next(&rng) % (max / 3 + 1));
            if (rng_next(&rng) % 4 == 0)
                piece = 1 + (size_t)(rng_next(&rng) % 100);
            avail += piece < left ? piece : left;
            continue;
        }
        bool eof = start + avail == len;
        size_t n = chunker_cut(c, data + start, avail);
        assert_true(n <= avail);
        if (n < avail || avail >= max || eof) {
            r.len[r.n++] = n;
            start += n;
            avail -= n;
        } else if (left > 0) {
            size_t piece = 1 + (size_t)(rng_next(&rng) % (max / 2 + 1));
            avail += piece < left ? piece : left;
        }
    }
    return r;
}

static void test_independent_of_read_sizes(void **state)
{
    (void)state;
    const struct chunker_params sets[] = {
        {256, 1024, 4096},
        {1 * KIB, 4 * KIB, 16 * KIB},
        {64, 128, 256},
        {16 * KIB, 64 * KIB, 64 * KIB},
    };
    size_t len = 4 * MIB;
    uint8_t *data = random_buf(len, 12);
    for (size_t s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
        struct chunker c;
        assert_int_equal(chunker_init(&c, &sets[s], SEED_A), 0);
        struct cuts whole = cut_all(&c, data, len);
        for (uint64_t k = 0; k < 4; k++) {
            struct cuts kept = cut_streaming(&c, data, len, 100 + k, true);
            struct cuts any = cut_streaming(&c, data, len, 200 + k, false);
            assert_true(cuts_equal(&whole, &kept));
            assert_true(cuts_equal(&whole, &any));
            free(kept.len);
            free(any.len);
        }
        free(whole.len);
    }
    free(data);
}

static void test_seed_changes_cuts(void **state)
{
    (void)state;
    size_t len = 8 * MIB;
    uint8_t *data = random_buf(len, 13);
    struct chunker ca, cb;
    assert_int_equal(chunker_init(&ca, &CHUNKER_DEFAULT_DUMPS, SEED_A), 0);
    assert_int_equal(chunker_init(&cb, &CHUNKER_DEFAULT_DUMPS, SEED_B), 0);
    assert_memory_not_equal(ca.gear, cb.gear, sizeof(ca.gear));
    struct cuts a = cut_all(&ca, data, len);
    struct cuts b = cut_all(&cb, data, len);
    assert_false(cuts_equal(&a, &b));
    /* Not just shifted a little: most boundaries differ. */
    size_t common = 0;
    for (size_t i = 0, ao = 0; i < a.n; i++) {
        ao += a.len[i];
        for (size_t j = 0, bo = 0; j < b.n && bo <= ao; j++) {
            bo += b.len[j];
            common += bo == ao;
        }
    }
    assert_true(common < a.n / 4);
    free(a.len);
    free(b.len);
    free(data);
}

static void check_bounds(const struct chunker *c, const uint8_t *data, size_t len)
{
    struct cuts r = cut_all(c, data, len);
    for (size_t i = 0; i + 1 < r.n; i++) {
        assert_true(r.len[i] >= c->p.min_size);
        assert_true(r.len[i] <= c->p.max_size);
    }
    assert_true(r.len[r.n - 1] <= c->p.max_size);
    free(r.len);
}

static void test_chunks_within_bounds(void **state)
{
    (void)state;
    const struct chunker_params sets[] = {
        CHUNKER_DEFAULT_FILES,
        CHUNKER_DEFAULT_DUMPS,
        {64, 64, 64},
        {64, 256, 512},
        {4 * KIB, 4 * KIB, 4 * KIB},
        {1 * KIB, 8 * KIB, 8 * KIB},
        {8 * KIB, 8 * KIB, 64 * KIB},
    };
    size_t len = 24 * MIB + 12345;
    uint8_t *rnd = random_buf(24 * MIB + 12352, 14);
    uint8_t *zeros = calloc(len, 1);
    uint8_t *text = malloc(len);
    assert_non_null(zeros);
    assert_non_null(text);
    for (size_t i = 0; i < len; i++)
        text[i] = (uint8_t)("id|some text|42\n"[i % 16]);
    for (size_t s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
        for (int k = 0; k < 2; k++) {
            struct chunker c;
            assert_int_equal(chunker_init(&c, &sets[s], k ? SEED_B : SEED_A), 0);
            check_bounds(&c, rnd, len);
            check_bounds(&c, zeros, len);
            check_bounds(&c, text, len);
        }
    }
    free(rnd);
    free(zeros);
    free(text);
}

/* White-box: with a gear table of zeros every position passes the mask test, so every chunk is
 * exactly min_size; with every entry 2^63 the hash is stuck at 2^63, which both masks contain,
 * so no position passes and every chunk is max_size. */
static void test_min_and_max_rules(void **state)
{
    (void)state;
    struct chunker c;
    struct chunker_params p = {1 * KIB, 4 * KIB, 16 * KIB};
    assert_int_equal(chunker_init(&c, &p, SEED_A), 0);
    uint8_t *data = random_buf(64 * KIB, 15);

    memset(c.gear, 0, sizeof(c.gear));
    assert_int_equal(chunker_cut(&c, data, 64 * KIB), 1 * KIB);
    assert_int_equal(chunker_cut(&c, data, 1 * KIB + 1), 1 * KIB);

    for (int i = 0; i < 256; i++)
        c.gear[i] = UINT64_C(1) << 63;
    assert_int_equal(chunker_cut(&c, data, 64 * KIB), 16 * KIB);
    assert_int_equal(chunker_cut(&c, data, 16 * KIB), 16 * KIB);
    /* Below max_size without a cut point: "no cut yet", the whole input. */
    assert_int_equal(chunker_cut(&c, data, 16 * KIB - 1), 16 * KIB - 1);
    assert_int_equal(chunker_cut(&c, data, 5 * KIB + 3), 5 * KIB + 3);
    free(data);
}

/* White-box: with every gear entry g, the hash over 64 or more bytes is g * (2^64 - 1) = -g, so
 * g = -T pins the tested hash to T. T = 1 (no mask bit) must cut at exactly min_size, which
 * only happens if the first tested hash already covers 64 bytes (warm-up before min_size). A T
 * with a mask_s bit but no mask_l bit must cut at exactly avg_size: the first length tested
 * with mask_l. */
static void test_window_warm_up_and_phase_switch(void **state)
{
    (void)state;
    const struct chunker_params sets[] = {
        {1 * KIB, 4 * KIB, 16 * KIB},
        {64, 64, 128},
        CHUNKER_DEFAULT_DUMPS,
    };
    size_t len = 256 * KIB;
    uint8_t *data = random_buf(len, 18);
    for (size_t s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
        struct chunker c;
        assert_int_equal(chunker_init(&c, &sets[s], SEED_A), 0);
        for (int i = 0; i < 256; i++)
            c.gear[i] = (uint64_t)0 - 1;
        assert_int_equal(chunker_cut(&c, data, len), c.p.min_size);

        uint64_t only_s = c.mask_s & ~c.mask_l;
        uint64_t t = only_s & (~only_s + 1); /* lowest such bit */
        for (int i = 0; i < 256; i++)
            c.gear[i] = (uint64_t)0 - t;
        assert_int_equal(chunker_cut(&c, data, len), c.p.avg_size);
        assert_int_equal(chunker_cut(&c, data, c.p.avg_size - 1), c.p.avg_size - 1);
    }
    free(data);
}

static uint8_t *with_inserted_byte(const uint8_t *data, size_t len, size_t at)
{
    uint8_t *b = malloc(len + 1);
    assert_non_null(b);
    memcpy(b, data, at);
    b[at] = 0xa5;
    memcpy(b + at + 1, data + at, len - at);
    return b;
}

static void test_insertion_keeps_most_chunks(void **state)
{
    (void)state;
    size_t len = 32 * MIB;
    uint8_t *data = random_buf(len, 16);
    const struct chunker_params *sets[] = {&CHUNKER_DEFAULT_FILES, &CHUNKER_DEFAULT_DUMPS};
    /* Inside the skipped first min_size bytes, and inside the hashed part of a chunk. */
    const size_t at[] = {1000, 300 * KIB + 7, 700 * KIB + 3};
    for (size_t s = 0; s < 2; s++) {
        struct chunker c;
        assert_int_equal(chunker_init(&c, sets[s], SEED_A), 0);
        for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
            uint8_t *mod = with_inserted_byte(data, len, at[k]);
            double kept = surviving_fraction(&c, data, len, mod, len + 1);
            assert_true(kept >= 0.90);
            free(mod);
        }
    }
    free(data);
}

/* The mean is above avg by design (no cut before min, cuts before avg rare): about 1.14 x avg
 * for min = avg / 4 and 1.20 x avg for min = avg / 2 (docs/REPOSITORY-FORMAT.md ("Chunking")). */
static void test_mean_size_near_avg(void **state)
{
    (void)state;
    const struct chunker_params sets[] = {
        CHUNKER_DEFAULT_FILES,
        CHUNKER_DEFAULT_DUMPS,
        {1 * KIB, 4 * KIB, 16 * KIB},
        {64 * KIB, 256 * KIB, 1 * MIB},
    };
    size_t len = 128 * MIB;
    uint8_t *data = random_buf(len, 17);
    for (size_t s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
        struct chunker c;
        assert_int_equal(chunker_init(&c, &sets[s], SEED_A), 0);
        struct cuts r = cut_all(&c, data, len);
        /* The last chunk is the remainder of the stream: leave it out. */
        double mean = (double)(len - r.len[r.n - 1]) / (double)(r.n - 1);
        double avg = sets[s].avg_size;
        assert_true(mean >= 0.75 * avg);
        assert_true(mean <= 1.25 * avg);
        free(r.len);
    }
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_rejects_invalid_params),
        cmocka_unit_test(test_masks),
        cmocka_unit_test(test_known_answer),
        cmocka_unit_test(test_short_input_returns_len),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_independent_of_read_sizes),
        cmocka_unit_test(test_seed_changes_cuts),
        cmocka_unit_test(test_chunks_within_bounds),
        cmocka_unit_test(test_min_and_max_rules),
        cmocka_unit_test(test_window_warm_up_and_phase_switch),
        cmocka_unit_test(test_insertion_keeps_most_chunks),
        cmocka_unit_test(test_mean_size_near_avg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

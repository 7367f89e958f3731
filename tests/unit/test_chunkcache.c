/* The chunk cache of mount: what it returns is what was put, the bound in bytes holds, the least
 * recently used chunk goes first, a chunk larger than the bound is still kept alone, and chains
 * of one bucket work (ids chosen to collide). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "services/chunkcache.h"

/* id number i; bucket b (the bucket is the first 8 bytes, little-endian, modulo the count) */
static void make_id(uint8_t id[32], uint32_t i, uint64_t b)
{
    memset(id, 0, 32);
    store_u64le(id, b);
    store_u32le(id + 8, i);
}

static void put(struct chunkcache *c, uint32_t i, uint64_t b, size_t len)
{
    uint8_t id[32];
    make_id(id, i, b);
    struct buf d = {0};
    for (size_t k = 0; k < len; k++)
        buf_append_u8(&d, (uint8_t)(i + k));
    const struct buf *x = chunkcache_put(c, id, &d);
    assert_null(d.data);
    assert_int_equal(x->len, len);
}

static bool has(struct chunkcache *c, uint32_t i, uint64_t b, size_t len)
{
    uint8_t id[32];
    make_id(id, i, b);
    const struct buf *x = chunkcache_get(c, id);
    if (!x)
        return false;
    assert_int_equal(x->len, len);
    for (size_t k = 0; k < len; k++)
        assert_int_equal(x->data[k], (uint8_t)(i + k));
    return true;
}

static void test_lru_and_bound(void **state)
{
    (void)state;
    struct chunkcache c;
    chunkcache_init(&c, 4 * CHUNKCACHE_COST(250));
    for (uint32_t i = 0; i < 4; i++)
        put(&c, i, i, 250); /* exactly full */
    assert_int_equal(c.bytes, 4 * CHUNKCACHE_COST(250));
    assert_true(has(&c, 0, 0, 250)); /* 0 is now the most recently used: 1 is the oldest */
    put(&c, 4, 4, 250);
    assert_int_equal(c.bytes, 4 * CHUNKCACHE_COST(250));
    assert_false(has(&c, 1, 1, 250));
    assert_true(has(&c, 0, 0, 250));
    assert_true(has(&c, 2, 2, 250));
    /* one big chunk takes the room of three */
    put(&c, 5, 5, 3 * CHUNKCACHE_COST(250) - CHUNKCACHE_COST(0));
    assert_true(c.bytes <= 4 * CHUNKCACHE_COST(250));
    assert_int_equal(c.count, 2);
    assert_true(has(&c, 5, 5, 3 * CHUNKCACHE_COST(250) - CHUNKCACHE_COST(0)));
    assert_true(has(&c, 2, 2, 250)); /* the most recently used before the big one stays */
    assert_false(has(&c, 3, 3, 250));
    assert_false(has(&c, 4, 4, 250));
    assert_false(has(&c, 0, 0, 250));
    chunkcache_free(&c);
    assert_int_equal(c.bytes, 0);
    assert_null(c.head);
}

static void test_larger_than_bound(void **state)
{
    (void)state;
    struct chunkcache c;
    chunkcache_init(&c, CHUNKCACHE_COST(100));
    put(&c, 1, 1, 50);
    put(&c, 2, 2, 500); /* alone over the bound: kept, everything else goes */
    assert_int_equal(c.count, 1);
    assert_true(has(&c, 2, 2, 500));
    put(&c, 3, 3, 10); /* and it goes at the next put */
    assert_int_equal(c.count, 1);
    assert_false(has(&c, 2, 2, 500));
    assert_true(has(&c, 3, 3, 10));
    chunkcache_free(&c);
}

static void test_one_bucket(void **state)
{
    (void)state;
    struct chunkcache c;
    chunkcache_init(&c, 1u << 20);
    /* 100 ids in one bucket, then evictions from the middle of the chain */
    for (uint32_t i = 0; i < 100; i++)
        put(&c, i, 7 + CHUNKCACHE_BUCKETS * (uint64_t)i, 1000);
    for (uint32_t i = 0; i < 100; i++)
        assert_true(has(&c, i, 7 + CHUNKCACHE_BUCKETS * (uint64_t)i, 1000));
    c.max = 50 * CHUNKCACHE_COST(1000); /* the next put evicts the 51 least recently used */
    put(&c, 100, 7, 1000);
    assert_int_equal(c.count, 50);
    for (uint32_t i = 0; i < 100; i++)
        assert_int_equal(has(&c, i, 7 + CHUNKCACHE_BUCKETS * (uint64_t)i, 1000), i > 50);
    assert_true(has(&c, 100, 7, 1000));
    chunkcache_free(&c);
    assert_int_equal(c.count, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lru_and_bound),
        cmocka_unit_test(test_larger_than_bound),
        cmocka_unit_test(test_one_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

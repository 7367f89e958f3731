#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "caris/pgpage.h"

/* A page as PostgreSQL lays it out: LSN, checksum, flags, lower, upper, ... and some data. */
static void make_page(uint8_t *p, uint64_t lsn, uint32_t blkno)
{
    memset(p, 0, PGPAGE_SIZE);
    uint32_t hi = (uint32_t)(lsn >> 32), lo = (uint32_t)lsn;
    memcpy(p, &hi, 4);
    memcpy(p + 4, &lo, 4);
    uint16_t lower = 28, upper = 8000;
    memcpy(p + 12, &lower, 2);
    memcpy(p + 14, &upper, 2);
    for (size_t i = 8000; i < PGPAGE_SIZE; i++)
        p[i] = (uint8_t)(i * 7 + 3);
    uint16_t c = pgpage_checksum(p, blkno);
    memcpy(p + 8, &c, 2);
}

static void test_checksum_properties(void **state)
{
    (void)state;
    static uint8_t p[PGPAGE_SIZE];
    make_page(p, 0x100000028ull, 5);
    uint16_t stored, computed;
    assert_int_equal(pgpage_verify(p, 5, 0x200000000ull, &stored, &computed), PGPAGE_OK);
    assert_int_equal(stored, computed);
    /* the stored checksum does not feed its own computation */
    uint16_t other = (uint16_t)(stored + 1);
    memcpy(p + 8, &other, 2);
    assert_int_equal(pgpage_checksum(p, 5), computed);
    memcpy(p + 8, &stored, 2);
    /* never 0, and the block number is part of it (a page moved elsewhere is caught) */
    assert_int_not_equal(computed, 0);
    assert_int_equal(pgpage_verify(p, 6, 0x200000000ull, &stored, &computed), PGPAGE_BAD);
    /* one flipped bit anywhere in the data is caught */
    p[8100] ^= 1;
    assert_int_equal(pgpage_verify(p, 5, 0x200000000ull, &stored, &computed), PGPAGE_BAD);
    /* ... unless the page was written after the backup started (WAL replay rewrites it) */
    assert_int_equal(pgpage_verify(p, 5, 0x100000000ull, &stored, &computed), PGPAGE_SKIPPED);
    /* its LSN, for the backup to check against its end */
    assert_true(pgpage_lsn(p) == 0x100000028ull);
}

static void test_new_page(void **state)
{
    (void)state;
    static uint8_t p[PGPAGE_SIZE];
    memset(p, 0, sizeof(p));
    uint16_t stored, computed;
    assert_int_equal(pgpage_verify(p, 0, 1, &stored, &computed), PGPAGE_NEW);
    p[4000] = 1; /* pd_upper 0 but not all zero: damage */
    assert_int_equal(pgpage_verify(p, 0, UINT64_MAX, &stored, &computed), PGPAGE_BAD);
}

static void test_relation_names(void **state)
{
    (void)state;
    uint32_t seg = 99;
    assert_true(pgpage_is_relation("base/16384/16385", &seg));
    assert_int_equal(seg, 0);
    assert_true(pgpage_is_relation("base/16384/16385.3", &seg));
    assert_int_equal(seg, 3);
    assert_true(pgpage_is_relation("base/1/1249_fsm", &seg));
    assert_true(pgpage_is_relation("base/1/1249_vm.1", &seg));
    assert_int_equal(seg, 1);
    assert_true(pgpage_is_relation("base/5/2619_init", &seg));
    assert_true(pgpage_is_relation("global/1262", &seg));
    assert_true(pgpage_is_relation("PG_15_202209061/16384/16400", &seg));
    assert_false(pgpage_is_relation("base/16384/PG_VERSION", &seg));
    assert_false(pgpage_is_relation("base/16384/pg_filenode.map", &seg));
    assert_false(pgpage_is_relation("global/pg_control", &seg));
    assert_false(pgpage_is_relation("pg_xact/0000", &seg));
    assert_false(pgpage_is_relation("base/16384/16385.", &seg));
    assert_false(pgpage_is_relation("base/16384/16385_xx", &seg));
    assert_false(pgpage_is_relation("base/x/16385", &seg));
    assert_false(pgpage_is_relation("postgresql.conf", &seg));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checksum_properties),
        cmocka_unit_test(test_new_page),
        cmocka_unit_test(test_relation_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

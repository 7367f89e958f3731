#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "caris/wal.h"
#include "caris/walrecv.h"

static void parse_ok(const char *name, enum caris_wal_kind kind, uint32_t tli, uint32_t log,
                     uint32_t seg)
{
    struct err e = ERR_INIT;
    struct caris_wal_name n;
    assert_int_equal(caris_wal_name_parse(name, &n, &e), 0);
    assert_int_equal(n.kind, kind);
    assert_int_equal(n.timeline, tli);
    assert_int_equal(n.log, log);
    assert_int_equal(n.seg, seg);
}

static void parse_bad(const char *name)
{
    struct err e = ERR_INIT;
    struct caris_wal_name n;
    assert_int_equal(caris_wal_name_parse(name, &n, &e), -1);
    assert_int_equal(e.code, ERR_USAGE);
    assert_non_null(strstr(e.msg, "not a WAL file name"));
}

static void test_names(void **state)
{
    (void)state;
    parse_ok("000000010000000000000001", WAL_SEGMENT, 1, 0, 1);
    parse_ok("0000000A00000002000000FF", WAL_SEGMENT, 10, 2, 255);
    parse_ok("FFFFFFFFFFFFFFFFFFFFFFFF", WAL_SEGMENT, 0xffffffffu, 0xffffffffu, 0xffffffffu);
    parse_ok("000000020000000000000003.partial", WAL_PARTIAL, 2, 0, 3);
    parse_ok("00000002.history", WAL_HISTORY, 2, 0, 0);
    parse_ok("000000010000000000000002.00000028.backup", WAL_BACKUP_LABEL, 1, 0, 2);
    assert_string_equal(caris_wal_kind_name(WAL_BACKUP_LABEL), "backup");
}

static void test_refused(void **state)
{
    (void)state;
    parse_bad("");
    parse_bad("00000001000000000000000");   /* 23 digits */
    parse_bad("0000000100000000000000010"); /* 25 digits */
    parse_bad("00000001000000000000000a");  /* lower case: not PostgreSQL's */
    parse_bad("000000000000000000000001");  /* timeline 0 */
    parse_bad("00000000.history");
    parse_bad("0000000G0000000000000001");
    parse_bad("../00000001000000000000001");
    parse_bad("000000010000000000000001.partia");
    parse_bad("000000010000000000000001.0000002.backup");
    parse_bad("00000001.History");
    parse_bad("000000010000000000000001/");
}

/* Streamed partials have names of their own (segment, length, ".stream") that the parser of
 * PostgreSQL's names refuses: no restore_command can ask for one. */
static void test_stream_names(void **state)
{
    (void)state;
    char name[CARIS_WAL_STREAM_NAME_MAX];
    caris_wal_stream_name(1, 0x5000000, 16u << 20, 0x134438, name);
    assert_string_equal(name, "000000010000000000000005.00134438.stream");
    /* log/seg split by the segment size: 64 MiB segments, 64 per log */
    caris_wal_stream_name(3, (2ull << 32) + 5 * (64ull << 20), 64u << 20, 1, name);
    assert_string_equal(name, "000000030000000200000005.00000001.stream");
    caris_wal_stream_name(0xffffffffu, 0xffffffffull << 32 | 0xff000000u, 16u << 20,
                          (16u << 20) - 1, name);
    assert_string_equal(name, "FFFFFFFFFFFFFFFF000000FF.00FFFFFF.stream");
    parse_bad("000000010000000000000005.00134438.stream");
}

/* The segment after a segment, as the daemon's read-ahead names it: within a log, across a
 * log boundary (per_log = 4 GiB / segment size), for 16 MiB and 1 GiB segments; refused for
 * anything but a segment name and a segment size. */
static void test_next_segment(void **state)
{
    (void)state;
    char out[25];
    assert_int_equal(0, caris_wal_next_segment("000000010000000000000029", 16u << 20, out));
    assert_string_equal("00000001000000000000002A", out);
    assert_int_equal(0, caris_wal_next_segment("0000000300000002000000FF", 16u << 20, out));
    assert_string_equal("000000030000000300000000", out);
    assert_int_equal(0, caris_wal_next_segment("000000010000000000000003", 1u << 30, out));
    assert_string_equal("000000010000000100000000", out);
    assert_int_equal(0, caris_wal_next_segment("000000010000000000000FFF", 1u << 20, out));
    assert_string_equal("000000010000000100000000", out);
    /* a segment number past the last of its log is not a name PostgreSQL makes */
    assert_int_equal(-1, caris_wal_next_segment("000000010000000000000100", 16u << 20, out));
    assert_int_equal(-1, caris_wal_next_segment("00000001FFFFFFFF000000FF", 16u << 20, out));
    assert_int_equal(-1, caris_wal_next_segment("00000002.history", 16u << 20, out));
    assert_int_equal(-1,
                     caris_wal_next_segment("000000010000000000000001.partial", 16u << 20, out));
    assert_int_equal(-1, caris_wal_next_segment("000000010000000000000001", 3u << 20, out));
    assert_int_equal(-1, caris_wal_next_segment("000000010000000000000001", 1u << 19, out));
}

static void test_flush_seconds(void **state)
{
    (void)state;
    unsigned v = 0;
    struct err e = ERR_INIT;
    assert_int_equal(caris_wal_flush_seconds_parse("1", &v, &e), 0);
    assert_int_equal(v, 1);
    assert_int_equal(caris_wal_flush_seconds_parse("3600", &v, &e), 0);
    assert_int_equal(v, 3600);
    const char *bad[] = {"0", "3601", "-1", "+5", "5s", "", " 5", "99999999999999999999", NULL};
    for (size_t i = 0; bad[i]; i++) {
        struct err e2 = ERR_INIT;
        v = 7;
        assert_int_equal(caris_wal_flush_seconds_parse(bad[i], &v, &e2), -1);
        assert_int_equal(e2.code, ERR_USAGE);
        assert_int_equal(v, 7);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_names), cmocka_unit_test(test_refused),
                                       cmocka_unit_test(test_stream_names),
                                       cmocka_unit_test(test_flush_seconds),
                                       cmocka_unit_test(test_next_segment)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "caris/wal.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_names),
                                       cmocka_unit_test(test_refused)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "caris/err.h"

static void test_set_and_exit_codes(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    assert_false(err_is_set(&e));
    assert_int_equal(err_exit_code(&e), 0);
    assert_int_equal(err_set(&e, ERR_WRONG_KEY, "use the right key", "cannot open %s", "/x"), -1);
    assert_true(err_is_set(&e));
    assert_string_equal(e.msg, "cannot open /x");
    assert_string_equal(e.hint, "use the right key");
    assert_int_equal(err_exit_code(&e), 5);
    err_wrap(&e, "repository %s", "r");
    assert_string_equal(e.msg, "repository r: cannot open /x");
    assert_int_equal(err_exit_code(&e), 5);
}

static void test_sys_maps_errno(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    err_sys(&e, ENOSPC, NULL, "cannot write %s", "pack");
    assert_int_equal(e.code, ERR_IO);
    assert_non_null(strstr(e.msg, "No space left on device"));
    assert_non_null(strstr(e.hint, "file system is full"));
    err_sys(&e, EACCES, NULL, "cannot open %s", "d");
    assert_non_null(strstr(e.hint, "permissions"));
    err_sys(&e, ENOENT, NULL, "cannot open %s", "d");
    assert_int_equal(e.code, ERR_NOT_FOUND);
    assert_int_equal(err_exit_code(&e), 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_and_exit_codes),
        cmocka_unit_test(test_sys_maps_errno),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

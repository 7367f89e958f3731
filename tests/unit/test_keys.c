/* Key management services (src/services/keys.c): list, add and remove key slots through the
 * typed results and their JSON, on a real repository in a temporary directory. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tmpdir.h"

#include "caris/keys.h"
#include "caris/repo.h"

#define PW "test password: correct horse battery staple"
#define PW2 "another key, also at least thirty-two characters"
static const struct repo_init_opts TINY = {.kdf_ops = 1, .kdf_mem = 8192};

static void test_key_services(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct err e = ERR_INIT;
    struct repo *r = repo_init(dir, PW, &TINY, &e);
    if (!r)
        fail_msg("repo_init: %s", e.msg);

    struct caris_key_list l;
    assert_int_equal(caris_key_list(r, NULL, &l, &e), 0);
    assert_int_equal(l.n, 1);
    assert_true(l.slots[0].current);
    assert_null(l.slots[0].error);
    char first[17];
    snprintf(first, sizeof(first), "%s", l.slots[0].id);
    caris_key_list_free(&l);

    /* too short a key: refused, nothing added */
    struct caris_key_add_result add;
    assert_int_equal(caris_key_add(r, "short", "x", NULL, &add, &e), -1);
    assert_int_equal(e.code, ERR_CONFIG);
    e = (struct err)ERR_INIT;
    assert_int_equal(caris_key_add(r, PW2, "backup admin", NULL, &add, &e), 0);
    assert_int_equal(strlen(add.id), 16);
    json_t *aj = caris_key_add_result_to_json(&add);
    assert_string_equal(json_string_value(json_object_get(aj, "id")), add.id);
    json_decref(aj);

    assert_int_equal(caris_key_list(r, NULL, &l, &e), 0);
    assert_int_equal(l.n, 2);
    json_t *j = caris_key_list_to_json(&l);
    assert_int_equal(json_array_size(j), 2);
    size_t found = 0;
    for (size_t i = 0; i < l.n; i++) {
        json_t *o = json_array_get(j, i);
        assert_string_equal(json_string_value(json_object_get(o, "id")), l.slots[i].id);
        assert_int_equal(json_is_true(json_object_get(o, "current")), l.slots[i].current);
        if (strcmp(l.slots[i].id, add.id) == 0) {
            found++;
            assert_false(l.slots[i].current);
            assert_string_equal(l.slots[i].label, "backup admin");
            assert_string_equal(json_string_value(json_object_get(o, "label")), "backup admin");
            assert_non_null(json_object_get(o, "created"));
        }
    }
    assert_int_equal(found, 1);
    json_decref(j);
    caris_key_list_free(&l);

    /* the key in use cannot go; an unknown one is not found; the other one goes */
    assert_int_equal(caris_key_remove(r, first, NULL, &e), -1);
    assert_int_equal(e.code, ERR_USAGE);
    e = (struct err)ERR_INIT;
    assert_int_equal(caris_key_remove(r, "0123456789abcdef", NULL, &e), -1);
    assert_int_equal(e.code, ERR_NOT_FOUND);
    e = (struct err)ERR_INIT;
    assert_int_equal(caris_key_remove(r, add.id, NULL, &e), 0);
    assert_int_equal(caris_key_list(r, NULL, &l, &e), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.slots[0].id, first);
    caris_key_list_free(&l);
    repo_close(r);

    /* the new key no longer opens the repository; the first one still does */
    assert_null(repo_open(dir, PW2, &e));
    e = (struct err)ERR_INIT;
    r = repo_open(dir, PW, &e);
    assert_non_null(r);
    repo_close(r);
    tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_services),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "caris/jsonx.h"

static void test_camel_key(void **state)
{
    (void)state;
    char b[64];
    assert_string_equal(jsonx_camel_key("duration_ms", b, sizeof(b)), "durationMs");
    assert_string_equal(jsonx_camel_key("path_b64", b, sizeof(b)), "pathB64");
    assert_string_equal(jsonx_camel_key("temporary_files_may_be_in_use", b, sizeof(b)),
                        "temporaryFilesMayBeInUse");
    assert_string_equal(jsonx_camel_key("backupId", b, sizeof(b)), "backupId");
    assert_string_equal(jsonx_camel_key("fullPath_b64", b, sizeof(b)), "fullPathB64");
    assert_string_equal(jsonx_camel_key("dump_sha256", b, sizeof(b)), "dumpSha256");
    assert_string_equal(jsonx_camel_key("_file", b, sizeof(b)), "_file");
    assert_string_equal(jsonx_camel_key("x", b, sizeof(b)), "x");
    assert_string_equal(jsonx_camel_key("trailing_", b, sizeof(b)), "trailing_");
    assert_string_equal(jsonx_camel_key("bytes_read", b, 6), "bytes"); /* bounded */
}

static void test_public_renames_at_every_depth(void **state)
{
    (void)state;
    json_t *doc = json_loads("{\"warnings_count\": 1, \"stats\": {\"bytes_read\": 2},"
                             " \"warnings\": [{\"full_path\": \"/a_b\", \"pathB64\": \"x\"}],"
                             " \"value_list\": [[{\"a_b\": \"c_d\"}]]}",
                             0, NULL);
    assert_non_null(doc);
    json_t *pub = jsonx_public(doc);
    char *s = json_dumps(pub, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s, "{\"stats\":{\"bytesRead\":2},\"valueList\":[[{\"aB\":\"c_d\"}]],"
                           "\"warnings\":[{\"fullPath\":\"/a_b\",\"pathB64\":\"x\"}],"
                           "\"warningsCount\":1}");
    free(s);
    /* the stored document is not changed */
    assert_non_null(json_object_get(doc, "warnings_count"));
    json_decref(pub);
    json_decref(doc);
    assert_null(jsonx_public(NULL));
}

static void test_public_camel_spelling_wins(void **state)
{
    (void)state;
    json_t *doc = json_pack("{s:i, s:i}", "dry_run", 1, "dryRun", 2);
    json_t *pub = jsonx_public(doc);
    assert_int_equal(json_object_size(pub), 1);
    assert_int_equal(json_integer_value(json_object_get(pub, "dryRun")), 2);
    json_decref(pub);
    json_decref(doc);
}

/* A message with bytes that are not UTF-8 (a path from the configuration) is kept, escaped:
 * json_string refuses it, and a json_pack of it lost the whole error object */
static void test_text_not_utf8(void **state)
{
    (void)state;
    json_t *j = jsonx_text("cannot back up /data/caf\xe9: No such file or directory");
    assert_non_null(j);
    assert_string_equal(json_string_value(j),
                        "cannot back up /data/caf\\xe9: No such file or directory");
    json_decref(j);
    j = jsonx_text("d\xc3\xa9j\xc3\xa0 vu, \"quoted\"\n");
    assert_string_equal(json_string_value(j), "d\xc3\xa9j\xc3\xa0 vu, \"quoted\"\n"); /* as it is */
    json_decref(j);
    assert_null(jsonx_text(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_camel_key),
        cmocka_unit_test(test_public_renames_at_every_depth),
        cmocka_unit_test(test_public_camel_spelling_wins),
        cmocka_unit_test(test_text_not_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

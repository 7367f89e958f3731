/* caris_copy between local repositories (the S3 path is in tests/integration/test_copy.sh):
 * refusals, a copy, the same copy again sending nothing; and the cloud location builder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "caris/copy.h"
#include "caris/crypto.h"
#include "caris/repo.h"
#include "caris/storage.h"

#include "tmpdir.h"

#define PW "first key, at least thirty-two characters long"
#define PW2 "second key, at least thirty-two characters long"
static const struct repo_init_opts FAST = {.kdf_ops = 1, .kdf_mem = 8u << 20};

static struct repo *init_ok(const char *dir, const char *pw, const struct repo_init_opts *o)
{
    struct err e = ERR_INIT;
    struct repo *r = repo_init(dir, pw, o, &e);
    if (!r)
        fail_msg("repo_init %s: %s", dir, e.msg);
    return r;
}

/* A backup of two entries, each one blob, committed in r under id. */
static void make_backup(struct repo *r, const char *id, const char *a, const char *b)
{
    struct err e = ERR_INIT;
    struct repo_writer *w = repo_writer_new(r, 1);
    json_t *entries = json_array();
    const char *texts[] = {a, b};
    for (int i = 0; i < 2; i++) {
        uint8_t cid[32];
        char hex[65];
        repo_chunk_id(r, texts[i], strlen(texts[i]), cid);
        assert_true(repo_writer_add(w, 0, cid, texts[i], strlen(texts[i]), &e) >= 0);
        cx_hex(cid, 32, hex);
        json_array_append_new(entries, json_pack("{s:s, s:[[s, I]]}", "path", i ? "b" : "a",
                                                 "chunks", hex, (json_int_t)strlen(texts[i])));
    }
    json_t *summary = json_pack("{s:s, s:s}", "id", id, "kind", "test");
    char name[65];
    if (repo_snapshot_save(r, w, summary, entries, name, &e) != 0)
        fail_msg("snapshot save: %s", e.msg);
    json_decref(summary);
    json_decref(entries);
    repo_writer_free(w);
}

static void test_copy_local(void **state)
{
    (void)state;
    char *ds = tmpdir_new(), *dd = tmpdir_new(), *dp = tmpdir_new();
    struct err e = ERR_INIT;
    struct repo *src = init_ok(ds, PW, &FAST);
    struct repo_init_opts o = FAST;
    o.chunker_from = src;
    struct repo *dst = init_ok(dd, PW2, &o);
    struct repo *plain = init_ok(dp, PW2, &FAST);
    make_backup(src, "b1", "first file's bytes", "second file's bytes");
    make_backup(src, "b2", "first file's bytes", "changed bytes");

    struct caris_copy_opts co = {.all = true, .no_verify = true};
    struct caris_copy_result res;
    /* the same repository, and one that does not share the chunking: refused, nothing done */
    assert_int_equal(caris_copy(src, src, NULL, &co, &res, &e), -1);
    assert_int_equal(e.code, ERR_USAGE);
    assert_non_null(strstr(e.msg, "same repository"));
    caris_copy_result_free(&res);
    e = (struct err)ERR_INIT;
    assert_int_equal(caris_copy(src, plain, NULL, &co, &res, &e), -1);
    assert_int_equal(e.code, ERR_USAGE);
    assert_non_null(strstr(e.msg, "does not deduplicate with the source"));
    assert_non_null(strstr(e.hint, "--copy-chunker-from"));
    assert_int_equal(res.n, 0);
    caris_copy_result_free(&res);

    /* b1 first: every blob (2 data + its entries' stream) is sent */
    const char *ids[] = {"b1"};
    struct caris_copy_opts one = {.ids = ids, .nids = 1, .no_verify = true};
    e = (struct err)ERR_INIT;
    if (caris_copy(src, dst, NULL, &one, &res, &e) != 0)
        fail_msg("copy b1: %s", e.msg);
    assert_int_equal(res.n, 1);
    assert_true(res.items[0].copied);
    assert_false(res.items[0].already_there);
    assert_int_equal(res.items[0].blobs_copied, res.items[0].blobs);
    assert_true(res.items[0].blobs >= 3);
    caris_copy_result_free(&res);

    /* --all: b1 already there (nothing sent), b2 sends only what b1 did not have */
    if (caris_copy(src, dst, NULL, &co, &res, &e) != 0)
        fail_msg("copy --all: %s", e.msg);
    assert_int_equal(res.n, 2);
    assert_string_equal(res.items[0].backup_id, "b1");
    assert_true(res.items[0].already_there);
    assert_int_equal(res.items[0].blobs_copied, 0);
    assert_string_equal(res.items[1].backup_id, "b2");
    assert_true(res.items[1].copied);
    assert_true(res.items[1].blobs_copied < res.items[1].blobs); /* "first file's bytes" known */
    assert_true(res.items[1].blobs_copied >= 1);
    caris_copy_result_free(&res);

    /* the copy reads back: same summary, same entries */
    char name[65];
    json_t *found = NULL, *summary = NULL, *entries = NULL;
    if (repo_snapshot_find(dst, "b2", name, &found, &e) != 0 ||
        repo_snapshot_load(dst, name, &summary, &entries, &e) != 0)
        fail_msg("load copy: %s", e.msg);
    json_decref(found);
    assert_string_equal(json_string_value(json_object_get(summary, "kind")), "test");
    assert_int_equal(json_array_size(entries), 2);
    json_decref(summary);
    json_decref(entries);

    /* an unknown id */
    const char *none[] = {"nope"};
    struct caris_copy_opts bad = {.ids = none, .nids = 1, .no_verify = true};
    e = (struct err)ERR_INIT;
    assert_int_equal(caris_copy(src, dst, NULL, &bad, &res, &e), -1);
    assert_int_equal(e.code, ERR_NOT_FOUND);
    caris_copy_result_free(&res);

    repo_close(src);
    repo_close(dst);
    repo_close(plain);
    tmpdir_free(ds);
    tmpdir_free(dd);
    tmpdir_free(dp);
}

static void test_cloud_location(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    struct caris_cloud_target t = {
        .provider = "s3", .bucket = "bk", .endpoint = "http://127.0.0.1:9000/", .prefix = "caris"};
    char *loc = caris_cloud_location(&t, &e);
    assert_string_equal(loc, "s3:http://127.0.0.1:9000/bk/caris");
    free(loc);
    struct caris_cloud_target aws = {.provider = "s3", .bucket = "bk", .region = "eu-west-1"};
    loc = caris_cloud_location(&aws, &e);
    assert_string_equal(loc, "s3:https://s3.eu-west-1.amazonaws.com/bk");
    free(loc);
    struct caris_cloud_target gcs = {.provider = "gcs", .bucket = "bk"};
    assert_null(caris_cloud_location(&gcs, &e));
    assert_int_equal(e.code, ERR_USAGE);
    struct caris_cloud_target nob = {.provider = "s3"};
    e = (struct err)ERR_INIT;
    assert_null(caris_cloud_location(&nob, &e));
    assert_int_equal(e.code, ERR_USAGE);

    /* A target in another region than the configured one is refused before anything opens,
     * and the process's settings stay as they were. */
    unsetenv("AWS_REGION");
    unsetenv("AWS_DEFAULT_REGION");
    setenv("BACKUP_S3_REGION", "eu-central-1", 1);
    assert_string_equal(storage_s3_region(), "eu-central-1");
    struct caris_copy_result res;
    e = (struct err)ERR_INIT;
    assert_int_equal(caris_files_upload_to_cloud(NULL, "caris_full_2024-01-15T03-00-00", &aws, PW2,
                                                 NULL, &res, &e),
                     -1);
    assert_int_equal(e.code, ERR_USAGE);
    assert_non_null(strstr(e.msg, "'eu-west-1'"));
    assert_non_null(strstr(e.msg, "'eu-central-1'"));
    assert_null(getenv("AWS_REGION"));
    assert_string_equal(storage_s3_region(), "eu-central-1");
    /* without a region or an endpoint, the configured region's AWS endpoint */
    struct caris_cloud_target plain = {.provider = "s3", .bucket = "bk"};
    loc = caris_cloud_location(&plain, &e);
    assert_string_equal(loc, "s3:https://s3.eu-central-1.amazonaws.com/bk");
    free(loc);
    unsetenv("BACKUP_S3_REGION");
    assert_string_equal(storage_s3_region(), "us-east-1");
}

int main(void)
{
    struct err e = ERR_INIT;
    if (cx_init(&e) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_local),
        cmocka_unit_test(test_cloud_location),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The audit log's chain (append, verify, read, redaction) and the API tokens (add, check,
 * revoke), on real files in a temporary BACKUP_DIR. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "caris/audit.h"
#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/token.h"

#include "tmpdir.h"

static char *make_backup_dir(void)
{
    char *d = tmpdir_new();
    char *m = xasprintf("%s/metadata", d);
    assert_int_equal(mkdir(m, 0700), 0);
    free(m);
    return d;
}

static void append(const char *dir, const char *op)
{
    struct err e = ERR_INIT;
    struct caris_audit_entry en = {
        .actor = "cli:test", .operation = op, .result = "ok", .duration_ms = 5};
    assert_int_equal(caris_audit_append(dir, &en, &e), 0);
}

static char *read_log(const char *dir)
{
    char *p = xasprintf("%s/metadata/audit.log", dir);
    struct buf b = {0};
    struct err e = ERR_INIT;
    assert_int_equal(fs_read_all(p, &b, &e), 0);
    buf_append_u8(&b, 0);
    free(p);
    return (char *)b.data;
}

static void write_log(const char *dir, const char *text)
{
    char *p = xasprintf("%s/metadata/audit.log", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(p);
}

static void test_chain(void **state)
{
    (void)state;
    char *dir = make_backup_dir();
    struct err e = ERR_INIT;
    size_t n = 99;
    assert_int_equal(caris_audit_verify(dir, &n, NULL, &e), 0); /* no log: nothing to check */
    assert_int_equal(n, 0);
    append(dir, "one");
    append(dir, "two");
    append(dir, "three");
    assert_int_equal(caris_audit_verify(dir, &n, NULL, &e), 0);
    assert_int_equal(n, 3);
    char *good = read_log(dir);
    /* the first line's prev is zeros; the second carries the first line's hash */
    assert_non_null(strstr(good, "\"prev\":\"0000000000000000"));
    char *nl = strchr(good, '\n');
    uint8_t h[CX_SHA256_LEN];
    char hex[2 * CX_SHA256_LEN + 1];
    cx_sha256(good, (size_t)(nl - good), h);
    cx_hex(h, sizeof(h), hex);
    assert_non_null(strstr(nl + 1, hex));
    json_t *lines = caris_audit_read(dir, 0, &e);
    assert_int_equal(json_array_size(lines), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(lines, 1), "operation")),
                        "two");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(lines, 2), "seq")), 3);
    json_decref(lines);

    /* an edited line: the next line names it */
    char *bad = xstrdup(good);
    char *two = strstr(bad, "\"two\"");
    two[1] = 'T';
    write_log(dir, bad);
    assert_int_equal(caris_audit_verify(dir, &n, NULL, &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    assert_int_equal(n, 3);
    assert_non_null(strstr(e.msg, "line 2 was changed"));
    /* a deleted line */
    free(bad);
    bad = xstrdup(good);
    char *l2 = strchr(bad, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
    memmove(l2, l3, strlen(l3) + 1);
    write_log(dir, bad);
    err_clear(&e);
    assert_int_equal(caris_audit_verify(dir, &n, NULL, &e), -1);
    assert_int_equal(n, 2);
    assert_non_null(strstr(e.msg, "sequence number 3"));
    /* a tail cut short */
    free(bad);
    bad = xstrdup(good);
    bad[strlen(bad) - 10] = '\0';
    write_log(dir, bad);
    err_clear(&e);
    assert_int_equal(caris_audit_verify(dir, &n, NULL, &e), -1);
    assert_int_equal(n, 3);
    assert_non_null(strstr(e.msg, "cut short"));
    /* appending after the torn line takes it into the chain: named, not damage */
    append(dir, "four");
    err_clear(&e);
    json_t *torn = NULL;
    assert_int_equal(caris_audit_verify(dir, &n, &torn, &e), 0);
    assert_int_equal(n, 4);
    assert_int_equal(json_array_size(torn), 1);
    assert_int_equal(json_integer_value(json_array_get(torn, 0)), 3);
    json_decref(torn);
    free(bad);
    free(good);
    tmpdir_free(dir);
}

/* The tail: the same lines as the whole log's last ones, read from its end only (across
 * blocks of 64 KiB, with a torn last line, without a log). */
static void test_tail(void **state)
{
    (void)state;
    char *dir = make_backup_dir();
    struct err e = ERR_INIT;
    json_t *none = caris_audit_read_tail(dir, 5, &e);
    assert_non_null(none);
    assert_int_equal(json_array_size(none), 0);
    json_decref(none);
    char op[64];
    for (int i = 0; i < 700; i++) { /* ~250 bytes a line: over two blocks */
        snprintf(op, sizeof(op), "operation %d", i);
        append(dir, op);
    }
    char *p = xasprintf("%s/metadata/audit.log", dir);
    FILE *f = fopen(p, "a");
    assert_non_null(f);
    fputs("{\"seq\": 701, \"torn", f); /* a torn last line */
    fclose(f);
    free(p);
    json_t *all = caris_audit_read(dir, 0, &e);
    assert_int_equal(json_array_size(all), 701);
    size_t limits[] = {1, 2, 3, 250, 262, 263, 700, 701, 1000};
    for (size_t k = 0; k < sizeof(limits) / sizeof(limits[0]); k++) {
        json_t *t = caris_audit_read_tail(dir, limits[k], &e);
        assert_non_null(t);
        size_t want = limits[k] < 701 ? limits[k] : 701;
        assert_int_equal(json_array_size(t), want);
        for (size_t i = 0; i < want; i++)
            if (!json_equal(json_array_get(t, i), json_array_get(all, 701 - want + i)))
                fail_msg("limit %zu: line %zu differs", limits[k], i);
        json_decref(t);
    }
    assert_true(json_is_null(json_object_get(json_array_get(all, 700), "seq")));
    json_decref(all);
    tmpdir_free(dir);
}

static void test_redact(void **state)
{
    (void)state;
    char out[64];
    assert_string_equal(caris_audit_redact_arg("postgresql://u:pw@h/db", out, sizeof(out)),
                        "postgresql://…");
    assert_string_equal(caris_audit_redact_arg("--clean", out, sizeof(out)), "--clean");
    /* libpq's keyword form carries a password too */
    assert_string_equal(caris_audit_redact_arg("dbname=x password=hunter2", out, sizeof(out)),
                        "dbname=x password=…");
    assert_string_equal(
        caris_audit_redact_arg("--target-url=dbname=password_db PassWord = 'hunter2' host=h", out,
                               sizeof(out)),
        "--target-url=dbname=password_db PassWord =…");
    assert_string_equal(caris_audit_redact_arg("host=h sslpassword=k", out, sizeof(out)),
                        "host=h sslpassword=…");
    assert_string_equal(caris_audit_redact_arg("--password-file", out, sizeof(out)),
                        "--password-file");
}

static void test_tokens(void **state)
{
    (void)state;
    char *dir = make_backup_dir();
    struct err e = ERR_INIT;
    char t1[CARIS_TOKEN_LEN + 1], t2[CARIS_TOKEN_LEN + 1], scratch[CARIS_TOKEN_LEN + 1];
    struct caris_token_info i1, i2, got;
    assert_int_equal(caris_token_add(dir, "ops", CARIS_ROLE_ADMIN, t1, &i1, &e), 0);
    assert_int_equal(caris_token_add(dir, "grafana", CARIS_ROLE_VIEWER, t2, &i2, &e), 0);
    assert_int_equal(strlen(t1), CARIS_TOKEN_LEN);
    assert_memory_equal(t1, "cbt_", 4);
    assert_string_not_equal(t1, t2);
    assert_int_equal(caris_token_check(dir, t1, &got, &e), 0);
    assert_string_equal(got.label, "ops");
    assert_int_equal(got.role, CARIS_ROLE_ADMIN);
    assert_string_equal(got.id, i1.id);
    assert_int_equal(caris_token_add(dir, "ops", CARIS_ROLE_ADMIN, scratch, &got, &e), -1);
    assert_int_equal(e.code, ERR_USAGE);
    err_clear(&e);
    assert_int_equal(caris_token_add(dir, "a/b", CARIS_ROLE_ADMIN, scratch, &got, &e), -1);
    err_clear(&e);
    assert_int_equal(caris_token_check(dir, t2, &got, &e), 0);
    assert_string_equal(got.label, "grafana");
    assert_int_equal(got.role, CARIS_ROLE_VIEWER);
    char wrong[CARIS_TOKEN_LEN + 1];
    memcpy(wrong, t2, sizeof(wrong));
    wrong[10] = wrong[10] == 'a' ? 'b' : 'a';
    assert_int_equal(caris_token_check(dir, wrong, &got, &e), 1);
    assert_int_equal(caris_token_check(dir, "", &got, &e), 1);
    /* the file holds no token, only hashes, and is 0600 */
    char *p = xasprintf("%s/metadata/api-tokens.json", dir);
    struct buf b = {0};
    assert_int_equal(fs_read_all(p, &b, &e), 0);
    buf_append_u8(&b, 0);
    assert_null(strstr((char *)b.data, t2 + 4));
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    buf_free(&b);
    free(p);
    json_t *list = caris_token_list(dir, &e);
    assert_int_equal(json_array_size(list), 2);
    assert_null(json_object_get(json_array_get(list, 0), "sha256"));
    json_decref(list);
    assert_int_equal(caris_token_revoke(dir, "grafana", NULL, &e), 0);
    assert_int_equal(caris_token_check(dir, t2, &got, &e), 1);
    assert_int_equal(caris_token_revoke(dir, i2.id, NULL, &e), -1);
    assert_int_equal(e.code, ERR_NOT_FOUND);
    tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_tail),
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

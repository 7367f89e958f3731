/* Backup id resolution (caris_backup_resolve): exact ids win over the longer ids they start,
 * unique prefixes, ambiguity listing the candidates, latest / latest:KIND, not found. On a
 * real repository with snapshots whose summaries name those ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "caris/inspect.h"
#include "caris/repo.h"
#include "tmpdir.h"

#define PW "inspect-test-password-0123456789abcdef"

static void add_backup(struct repo *r, const char *id, const char *kind, const char *started)
{
    struct err e = ERR_INIT;
    json_t *summary = json_pack("{s:s, s:s, s:s, s:[s]}", "id", id, "kind", kind, "started",
                                started, "roots", "/x");
    json_t *entries = json_array();
    struct repo_writer *w = repo_writer_new(r, 1);
    char name[65];
    if (repo_snapshot_save(r, w, summary, entries, name, &e) != 0)
        fail_msg("repo_snapshot_save: %s", e.msg);
    repo_writer_free(w);
    json_decref(summary);
    json_decref(entries);
}

static void assert_resolves(struct repo *r, const char *text, const char *kind, const char *want)
{
    char id[CARIS_ID_MAX];
    struct err e = ERR_INIT;
    if (caris_backup_resolve(r, text, kind, id, &e) != 0)
        fail_msg("resolve %s: %s", text, e.msg);
    assert_string_equal(id, want);
}

static struct err resolve_fails(struct repo *r, const char *text, const char *kind)
{
    char id[CARIS_ID_MAX];
    struct err e = ERR_INIT;
    assert_int_equal(caris_backup_resolve(r, text, kind, id, &e), -1);
    return e;
}

static void test_resolve(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char path[4200];
    snprintf(path, sizeof(path), "%s/repo", dir);
    struct repo_init_opts io = {.kdf_ops = 1, .kdf_mem = 8192};
    struct err e = ERR_INIT;
    struct repo *r = repo_init(path, PW, &io, &e);
    assert_non_null(r);

    struct err x = resolve_fails(r, "latest", NULL);
    assert_int_equal(x.code, ERR_NOT_FOUND);

    add_backup(r, "file_full_2024-01-15T03-00-00", "files", "2024-01-15T03:00:00.000Z");
    add_backup(r, "file_full_2024-01-15T03-00-00-2", "files", "2024-01-15T03:00:00.500Z");
    add_backup(r, "caris_full_2024-01-16T03-00-00", "database", "2024-01-16T03:00:00.000Z");
    add_backup(r, "file_incremental_2024-01-14T03-00-00", "files", "2024-01-14T03:00:00.000Z");

    /* an exact id, even when it starts a longer one */
    assert_resolves(r, "file_full_2024-01-15T03-00-00", NULL, "file_full_2024-01-15T03-00-00");
    /* unique prefixes */
    assert_resolves(r, "file_full_2024-01-15T03-00-00-", NULL, "file_full_2024-01-15T03-00-00-2");
    assert_resolves(r, "caris", NULL, "caris_full_2024-01-16T03-00-00");
    assert_resolves(r, "file_inc", "files", "file_incremental_2024-01-14T03-00-00");
    /* latest: by time, of the kind asked for */
    assert_resolves(r, "latest", "files", "file_full_2024-01-15T03-00-00-2");
    assert_resolves(r, "latest", "database", "caris_full_2024-01-16T03-00-00");
    assert_resolves(r, "latest:files", NULL, "file_full_2024-01-15T03-00-00-2");
    assert_resolves(r, "latest:database", NULL, "caris_full_2024-01-16T03-00-00");

    /* ambiguous: a prefix of several ids, with the candidates in the hint */
    x = resolve_fails(r, "file_full", NULL);
    assert_int_equal(x.code, ERR_USAGE);
    assert_non_null(strstr(x.msg, "ambiguous: 2 backups match"));
    assert_non_null(
        strstr(x.hint, "file_full_2024-01-15T03-00-00, file_full_2024-01-15T03-00-00-2"));
    x = resolve_fails(r, "f", NULL);
    assert_non_null(strstr(x.msg, "3 backups match"));
    /* latest with both kinds and no kind given */
    x = resolve_fails(r, "latest", NULL);
    assert_int_equal(x.code, ERR_USAGE);
    assert_non_null(strstr(x.hint, "latest:files"));
    /* latest:KIND against the kind the command takes */
    x = resolve_fails(r, "latest:database", "files");
    assert_int_equal(x.code, ERR_USAGE);
    assert_non_null(strstr(x.hint, "latest:files"));
    x = resolve_fails(r, "latest:tapes", NULL);
    assert_int_equal(x.code, ERR_USAGE);
    /* not found, empty */
    x = resolve_fails(r, "file_full_2025", NULL);
    assert_int_equal(x.code, ERR_NOT_FOUND);
    assert_non_null(strstr(x.msg, "no backup file_full_2025"));
    x = resolve_fails(r, "", NULL);
    assert_int_equal(x.code, ERR_USAGE);
    /* a whole id that is not there (forgotten) is no prefix of ID-2, a backup that started in
     * the same second: a restore of it gave the other backup's data */
    add_backup(r, "file_full_2024-01-20T03-00-00-2", "files", "2024-01-20T03:00:00.500Z");
    x = resolve_fails(r, "file_full_2024-01-20T03-00-00", NULL);
    assert_int_equal(x.code, ERR_NOT_FOUND);
    assert_resolves(r, "file_full_2024-01-20T03-00-00-2", NULL, "file_full_2024-01-20T03-00-00-2");
    assert_resolves(r, "file_full_2024-01-20T03", NULL, "file_full_2024-01-20T03-00-00-2");
    assert_resolves(r, "file_full_2024-01-20T03-00-00-", NULL, "file_full_2024-01-20T03-00-00-2");

    repo_close(r);
    tmpdir_free(dir);
}

/* Many candidates: the hint stays within its buffer and says that more exist. */
static void test_resolve_many_candidates(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char path[4200];
    snprintf(path, sizeof(path), "%s/repo", dir);
    struct repo_init_opts io = {.kdf_ops = 1, .kdf_mem = 8192};
    struct err e = ERR_INIT;
    struct repo *r = repo_init(path, PW, &io, &e);
    assert_non_null(r);
    for (int i = 0; i < 30; i++) {
        char id[64], t[64];
        snprintf(id, sizeof(id), "file_full_2024-01-%02dT03-00-00", i + 1);
        snprintf(t, sizeof(t), "2024-01-%02dT03:00:00.000Z", i + 1);
        add_backup(r, id, "files", t);
    }
    struct err x = resolve_fails(r, "file_full_2024-01", NULL);
    assert_non_null(strstr(x.msg, "30 backups match"));
    assert_non_null(strstr(x.hint, "file_full_2024-01-01T03-00-00"));
    assert_non_null(strstr(x.hint, ", .."));
    assert_true(strlen(x.hint) < sizeof(x.hint));
    repo_close(r);
    tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_resolve_many_candidates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

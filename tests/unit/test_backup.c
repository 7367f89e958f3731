/* File backups through the service (src/services/file_backup.c): the operation context's
 * cancel flag stops a backup, which then commits nothing and leaves no lock or claim. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "caris/backup.h"
#include "caris/op.h"
#include "caris/repo.h"

#define PW "backup-test-password-0123456789abcdef"

static size_t count_files(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static int rm_tree(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    return system(cmd);
}

struct cancel_after {
    volatile sig_atomic_t *flag;
    int calls;
};

static void cancel_on_progress(void *ctx, const struct caris_progress *p)
{
    (void)p;
    struct cancel_after *c = ctx;
    if (++c->calls >= 1)
        __atomic_store_n(c->flag, 1, __ATOMIC_RELAXED); /* the op's threads read it */
}

static void test_cancelled_backup_commits_nothing(void **state)
{
    (void)state;
    char root[] = "/tmp/caris-test-backup-XXXXXX";
    assert_non_null(mkdtemp(root));
    char src[4200], repo_dir[4200];
    snprintf(src, sizeof(src), "%s/src", root);
    snprintf(repo_dir, sizeof(repo_dir), "%s/repo", root);
    assert_int_equal(mkdir(src, 0700), 0);
    static char data[1 << 16];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 2654435761u >> 13);
    for (int f = 0; f < 40; f++) {
        char p[4300];
        snprintf(p, sizeof(p), "%s/file-%02d", src, f);
        FILE *fp = fopen(p, "wb");
        assert_non_null(fp);
        data[0] = (char)f;
        assert_int_equal(fwrite(data, 1, sizeof(data), fp), sizeof(data));
        fclose(fp);
    }
    struct repo_init_opts io = {.kdf_ops = 1, .kdf_mem = 8192};
    struct err e = ERR_INIT;
    struct repo *r = repo_init(repo_dir, PW, &io, &e);
    assert_non_null(r);
    const char *paths[] = {src};
    char locks[4300], snaps[4300];
    snprintf(locks, sizeof(locks), "%s/locks", repo_dir);
    snprintf(snaps, sizeof(snaps), "%s/snapshots", repo_dir);

    /* cancelled before it starts, and cancelled from its first progress report */
    for (int round = 0; round < 2; round++) {
        volatile sig_atomic_t cancel = round == 0;
        struct caris_op op = {.cancel = &cancel};
        struct cancel_after ca = {.flag = &cancel};
        struct files_backup_opts o = {.paths = paths,
                                      .npaths = 1,
                                      .threads = 2,
                                      .op = &op,
                                      .progress = round == 1 ? cancel_on_progress : NULL,
                                      .estimate_total = round == 1,
                                      .ctx = &ca};
        struct caris_backup_result res;
        e = (struct err)ERR_INIT;
        assert_int_equal(caris_files_backup_full(r, &o, &res, &e), -1);
        assert_string_equal(e.msg, "cancelled");
        assert_null(res.summary);
        assert_null(res.id);
        assert_int_equal(count_files(snaps), 0);
        assert_int_equal(count_files(locks), 0);
        if (round == 1)
            assert_true(ca.calls >= 1);
    }

    /* not cancelled: the same backup completes */
    volatile sig_atomic_t cancel = 0;
    struct caris_op op = {.cancel = &cancel};
    struct files_backup_opts o = {.paths = paths, .npaths = 1, .threads = 2, .op = &op};
    struct caris_backup_result res;
    e = (struct err)ERR_INIT;
    if (caris_files_backup_full(r, &o, &res, &e) < 0)
        fail_msg("backup: %s", e.msg);
    assert_string_equal(res.kind, "files");
    assert_string_equal(res.mode, "full");
    assert_non_null(res.id);
    json_t *j = caris_backup_result_to_json(&res);
    assert_string_equal(json_string_value(json_object_get(j, "id")), res.id);
    assert_null(json_object_get(j, "_file")); /* internal */
    json_decref(j);
    caris_backup_result_free(&res);
    assert_int_equal(count_files(snaps), 1);
    assert_int_equal(count_files(locks), 0);
    repo_close(r);
    assert_int_equal(rm_tree(root), 0);
}

/* The daemon's check of BACKUP_FILES_PATHS judges nesting as the backup does: after realpath
 * (a symlink below a root that leads elsewhere is another root), on the text for a path that
 * does not exist yet. */
static void test_roots_check(void **state)
{
    (void)state;
    char root[] = "/tmp/caris-roots-XXXXXX";
    assert_non_null(mkdtemp(root));
    char a[300], sub[300], other[300], link[300], missing[300], slash[300];
    snprintf(a, sizeof(a), "%s/uploads", root);
    snprintf(sub, sizeof(sub), "%s/uploads/2024", root);
    snprintf(other, sizeof(other), "%s/archive", root);
    snprintf(link, sizeof(link), "%s/uploads/arch", root);
    snprintf(missing, sizeof(missing), "%s/uploads/not-yet/", root);
    snprintf(slash, sizeof(slash), "%s/uploads///", root);
    assert_int_equal(mkdir(a, 0700), 0);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(mkdir(other, 0700), 0);
    assert_int_equal(symlink(other, link), 0);
    struct err e = ERR_INIT;
    const char *linked[] = {a, link};
    assert_int_equal(caris_files_roots_check(linked, 2, &e), 0);
    const char *nested[] = {a, sub};
    assert_int_equal(caris_files_roots_check(nested, 2, &e), -1);
    assert_non_null(strstr(e.msg, "is inside backup root"));
    err_clear(&e);
    const char *later[] = {missing, a};
    assert_int_equal(caris_files_roots_check(later, 2, &e), -1);
    err_clear(&e);
    const char *same[] = {a, slash};
    assert_int_equal(caris_files_roots_check(same, 2, &e), 0);
    assert_int_equal(unlink(link), 0);
    assert_int_equal(rmdir(sub), 0);
    assert_int_equal(rmdir(a), 0);
    assert_int_equal(rmdir(other), 0);
    assert_int_equal(rmdir(root), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancelled_backup_commits_nothing),
        cmocka_unit_test(test_roots_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

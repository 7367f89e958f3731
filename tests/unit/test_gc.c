/* Prune's engine (src/repo/gc.c) through its contract: the cancel flag stops it before it
 * deletes anything, progress is reported by phase, a dry run changes nothing, and a real
 * prune keeps exactly what the remaining snapshot needs. */
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

#include "caris/crypto.h"
#include "caris/op.h"
#include "caris/repo.h"

#define PW "gc-test-password-0123456789abcdef"

/* Names and sizes of every file under dir, one line each, sorted (locks left out). */
static void listing(const char *dir, const char *rel, struct buf *out)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    DIR *d = opendir(path);
    if (!d)
        return;
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, "locks"))
            continue;
        names = realloc(names, (n + 1) * sizeof(char *));
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        char sub[4096], full[8192];
        snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", names[i]);
        snprintf(full, sizeof(full), "%s/%s", dir, sub);
        struct stat st;
        if (lstat(full, &st) == 0 && S_ISDIR(st.st_mode)) {
            listing(dir, sub, out);
        } else {
            char line[8300];
            int k = snprintf(line, sizeof(line), "%s %lld\n", sub, (long long)st.st_size);
            buf_append(out, line, (size_t)k);
        }
        free(names[i]);
    }
    free(names);
}

static char *fingerprint(const char *dir)
{
    struct buf b = {0};
    listing(dir, "", &b);
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

struct fixture {
    char dir[64];
    char old_name[65], new_name[65];
};

/* Two snapshots: "old" holds 40 blobs of its own and 10 shared, "new" the 10 shared and
 * 10 of its own; "old" is then removed. Each snapshot's blobs are written in one pack. */
static void make_repo(struct fixture *f)
{
    snprintf(f->dir, sizeof(f->dir), "/tmp/caris-test-gc-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    strcat(f->dir, "/repo");
    struct err e = ERR_INIT;
    struct repo_init_opts io = {.kdf_ops = 1, .kdf_mem = 8u << 20};
    struct repo *r = repo_init(f->dir, PW, &io, &e);
    assert_non_null(r);
    for (int s = 0; s < 2; s++) {
        struct repo_writer *w = repo_writer_new(r, 1);
        json_t *chunks = json_array();
        for (int i = 0; i < 50; i++) {
            /* old: blobs 0..49; new: 40..49 and 100..109 */
            int k = s == 0 ? i : (i < 10 ? 40 + i : 90 + i);
            if (s == 1 && i >= 20)
                break;
            uint8_t blob[3000], id[32];
            for (size_t j = 0; j < sizeof(blob); j++)
                blob[j] = (uint8_t)((k * 7919u + j * 31u) ^ (j >> 3) * (unsigned)k);
            repo_chunk_id(r, blob, sizeof(blob), id);
            assert_true(repo_writer_add(w, 0, id, blob, sizeof(blob), &e) >= 0);
            char hex[65];
            cx_hex(id, 32, hex);
            json_array_append_new(chunks, json_pack("[s, i]", hex, (int)sizeof(blob)));
        }
        json_t *entries =
            json_pack("[{s:o, s:s, s:s}]", "chunks", chunks, "path", "f", "type", "file");
        json_t *summary = json_pack("{s:s, s:s, s:s}", "id", s ? "new" : "old", "kind", "files",
                                    "started", s ? "2025-01-02T00:00:00Z" : "2025-01-01T00:00:00Z");
        assert_int_equal(
            repo_snapshot_save(r, w, summary, entries, s ? f->new_name : f->old_name, &e), 0);
        json_decref(entries);
        json_decref(summary);
        repo_writer_free(w);
    }
    assert_int_equal(repo_snapshot_remove(r, f->old_name, &e), 0);
    repo_close(r);
}

struct progress_log {
    char phases[256];
};

static void on_progress(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    struct progress_log *p = ctx;
    (void)done;
    (void)total;
    if (!strstr(p->phases, phase) && strlen(p->phases) + strlen(phase) + 2 < sizeof(p->phases)) {
        strcat(p->phases, phase);
        strcat(p->phases, " ");
    }
}

static int prune_with(const char *dir, bool exclusive, const struct repo_prune_opts *o,
                      struct repo_prune_stats *st, struct err *e)
{
    struct repo *r = repo_open(dir, PW, e);
    assert_non_null(r);
    assert_int_equal(repo_lock(r, exclusive, "prune", e), 0);
    int rc = repo_prune(r, o, st, e);
    repo_close(r);
    return rc;
}

static void test_cancel_dry_run_and_prune(void **state)
{
    (void)state;
    struct fixture f;
    make_repo(&f);
    char *before = fingerprint(f.dir);
    struct repo_prune_stats st;
    struct err e = ERR_INIT;

    /* cancelled before it starts: fails, nothing changed */
    volatile sig_atomic_t cancel = 1;
    struct caris_op op = {.cancel = &cancel};
    struct repo_prune_opts o = {.max_unused = 5, .op = &op};
    assert_int_equal(prune_with(f.dir, true, &o, &st, &e), -1);
    assert_non_null(strstr(e.msg, "cancelled"));
    char *now = fingerprint(f.dir);
    assert_string_equal(before, now);
    free(now);

    /* a dry run: the decision, nothing changed */
    cancel = 0;
    o.dry_run = true;
    err_clear(&e);
    assert_int_equal(prune_with(f.dir, false, &o, &st, &e), 0);
    assert_int_equal(st.snapshots, 1);
    assert_int_equal(st.packs_repacked, 1); /* old's pack: 10 of 50 blobs used */
    now = fingerprint(f.dir);
    assert_string_equal(before, now);
    free(now);

    /* without the exclusive lock: refused */
    o.dry_run = false;
    struct repo *r = repo_open(f.dir, PW, &e);
    assert_int_equal(repo_prune(r, &o, &st, &e), -1);
    repo_close(r);

    /* for real, with progress by phase */
    struct progress_log pl = {""};
    op.progress = on_progress;
    op.progress_ctx = &pl;
    err_clear(&e);
    if (prune_with(f.dir, true, &o, &st, &e) != 0)
        fail_msg("prune: %s", e.msg);
    assert_string_equal(pl.phases, "mark repack index delete ");
    assert_int_equal(st.blobs_referenced, 20 + 1); /* + the entries stream's one chunk */
    assert_int_equal(st.blobs_repacked, 10);
    assert_true(st.repo_bytes_after < st.repo_bytes_before);

    /* what remains: exactly the 20 blobs of "new" (and its entries), all sound */
    r = repo_open(f.dir, PW, &e);
    json_t *rep = NULL;
    struct repo_check_opts co = {.read_data = true, .threads = 1};
    assert_int_equal(repo_check(r, &co, &rep, &e), 0);
    assert_true(json_is_true(json_object_get(rep, "ok")));
    assert_int_equal(json_array_size(json_object_get(rep, "warnings")), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(rep, "stats"), "blobs")),
                     20 + 1);
    json_decref(rep);
    repo_close(r);
    free(before);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %.*s", (int)(strlen(f.dir) - 5), f.dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_dry_run_and_prune),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

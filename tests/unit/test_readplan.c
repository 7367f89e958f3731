/* Read plans (src/repo/readplan.c): every use of a blob handed once with the blob's
 * plaintext, a blob used several times decoded once per range, near blobs of a pack read in
 * one direct read (the pack's header with them: no read of its own, nor for the ranges after
 * it, which wait for its key), far ones in separate reads, an unknown blob and a damaged one
 * reported as damage for each of their uses. The storage is the posix one with its reads
 * counted. */

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tmpdir.h"

#include "caris/readplan.h"
#include "caris/repo.h"
#include "caris/storage.h"
#include "repo/internal.h"

#include "packflip.h"

#define PW "test password: correct horse battery staple"
static const struct repo_init_opts TINY = {.kdf_ops = 1, .kdf_mem = 8192};

#define NBLOBS 40

/* Counted reads of data/ objects. */
static const struct storage_ops *real_ops;
static struct storage_ops counting_ops;
static int direct_reads, other_reads;
static uint64_t direct_bytes;

static int count_direct(struct storage *s, const char *name, uint64_t off, void *out, size_t len,
                        struct err *e)
{
    if (strncmp(name, "data/", 5) == 0) {
        __atomic_fetch_add(&direct_reads, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&direct_bytes, len, __ATOMIC_RELAXED);
    }
    return real_ops->read_at(s, name, off, out, len, e);
}

static int count_read_at(struct storage *s, const char *name, uint64_t off, void *out, size_t len,
                         struct err *e)
{
    if (strncmp(name, "data/", 5) == 0)
        __atomic_fetch_add(&other_reads, 1, __ATOMIC_RELAXED);
    return real_ops->read_at(s, name, off, out, len, e);
}

struct fixture {
    char *dir;
    struct repo *r;
    uint8_t ids[NBLOBS][32];
    uint8_t *data[NBLOBS];
    size_t len[NBLOBS];
};

/* NBLOBS blobs of seeded random bytes (incompressible: stored as they are, so their sizes in
 * the pack are known), blob i of size(i) bytes, in one pack; the repository reopened so that
 * no pack key is known yet, its reads counted. */
static struct fixture *fixture_new(size_t (*size)(int))
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct err e = ERR_INIT;
    f->dir = tmpdir_new();
    struct repo *r = repo_init(f->dir, PW, &TINY, &e);
    if (!r)
        fail_msg("repo_init: %s", e.msg);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint32_t x = 12345;
    for (int i = 0; i < NBLOBS; i++) {
        f->len[i] = size(i);
        f->data[i] = malloc(f->len[i]);
        for (size_t k = 0; k < f->len[i]; k++) {
            x = x * 1103515245u + 12345u;
            f->data[i][k] = (uint8_t)(x >> 23);
        }
        repo_chunk_id(r, f->data[i], f->len[i], f->ids[i]);
        assert_int_equal(repo_writer_add(w, 0, f->ids[i], f->data[i], f->len[i], &e), 1);
    }
    if (repo_writer_flush(w, &e) != 0)
        fail_msg("flush: %s", e.msg);
    repo_writer_free(w);
    repo_close(r);
    f->r = repo_open(f->dir, PW, &e);
    if (!f->r)
        fail_msg("repo_open: %s", e.msg);
    real_ops = f->r->st->ops;
    counting_ops = *real_ops;
    counting_ops.read_direct = count_direct;
    counting_ops.read_at = count_read_at;
    f->r->st->ops = &counting_ops;
    direct_reads = other_reads = 0;
    direct_bytes = 0;
    return f;
}

static void fixture_free(struct fixture *f)
{
    f->r->st->ops = real_ops;
    repo_close(f->r);
    for (int i = 0; i < NBLOBS; i++)
        free(f->data[i]);
    tmpdir_free(f->dir);
    free(f);
}

/* What came back: per use (tag = use number), how often, and whether right. */
#define MAXUSES 128
struct seen {
    struct fixture *f;
    int blob[MAXUSES]; /* which blob the use asked for (-1: an unknown one) */
    int used[MAXUSES], damaged[MAXUSES], wrong[MAXUSES];
    uint64_t off[MAXUSES];
    pthread_mutex_t mu;
};

static int on_use(void *ctx, void *tag, uint64_t off, const uint8_t *data, size_t len,
                  struct err *e)
{
    (void)e;
    struct seen *s = ctx;
    size_t u = (size_t)(uintptr_t)tag;
    int b = s->blob[u];
    pthread_mutex_lock(&s->mu);
    s->used[u]++;
    if (b < 0 || off != s->off[u] || len != s->f->len[b] || memcmp(data, s->f->data[b], len) != 0)
        s->wrong[u]++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void on_damaged(void *ctx, void *tag, uint64_t off, const struct err *e)
{
    struct seen *s = ctx;
    size_t u = (size_t)(uintptr_t)tag;
    pthread_mutex_lock(&s->mu);
    s->damaged[u]++;
    if (e->code != ERR_DAMAGE || off != s->off[u])
        s->wrong[u]++;
    pthread_mutex_unlock(&s->mu);
}

static const struct readplan_ops OPS = {.use = on_use, .damaged = on_damaged};

/* Adds a use of blob b (-1: an id no blob has) as use number u. */
static void add(struct readplan *p, struct seen *s, size_t u, int b)
{
    uint8_t unknown[32];
    memset(unknown, 0x5a, sizeof(unknown));
    s->blob[u] = b;
    s->off[u] = 1000 * u;
    readplan_add(p, b < 0 ? unknown : s->f->ids[b], b < 0 ? 7 : (uint32_t)s->f->len[b],
                 (void *)(uintptr_t)u, s->off[u]);
}

static size_t size_small(int i)
{
    return 10000 + 37 * (size_t)i; /* 40 blobs, ~400 KB: one range */
}

static size_t size_large(int i)
{
    return 300000 + (size_t)i; /* 40 blobs, ~12 MB: more than one 8 MiB range */
}

/* All blobs, most twice, one unknown id, in reverse order: each use once, right; one direct
 * read for the whole pack (its header in it), no other read of the pack. */
static void test_plan_uses_and_one_range(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(size_small);
    struct seen s = {.f = f};
    pthread_mutex_init(&s.mu, NULL);
    struct readplan *p = readplan_new(f->r);
    size_t n = 0;
    for (int i = NBLOBS - 1; i >= 0; i--) {
        add(p, &s, n++, i);
        if (i % 3 != 0)
            add(p, &s, n++, i); /* a second use of the same blob */
    }
    add(p, &s, n++, -1);
    assert_int_equal(readplan_uses(p), n);
    struct err e = ERR_INIT;
    assert_int_equal(readplan_run(p, 4, 0, &OPS, &s, NULL, &e), 0);
    for (size_t u = 0; u < n; u++) {
        assert_int_equal(s.wrong[u], 0);
        assert_int_equal(s.used[u] + s.damaged[u], 1);
        assert_int_equal(s.damaged[u], s.blob[u] < 0);
    }
    assert_int_equal(direct_reads, 1);
    assert_int_equal(other_reads, 0);
    assert_int_equal(readplan_uses(p), 0); /* run empties it */
    readplan_free(p);
    pthread_mutex_destroy(&s.mu);
    fixture_free(f);
}

/* A pack larger than READPLAN_RANGE_MAX: several ranges, none longer; blobs more than
 * READPLAN_GAP apart in separate reads, the bytes between them not read. One thread: the key
 * comes with the first range, so no header read either. */
static void test_plan_ranges_and_gaps(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(size_large);
    struct seen s = {.f = f};
    pthread_mutex_init(&s.mu, NULL);
    struct readplan *p = readplan_new(f->r);
    size_t n = 0;
    for (int i = 0; i < NBLOBS; i++)
        add(p, &s, n++, i);
    struct err e = ERR_INIT;
    assert_int_equal(readplan_run(p, 1, 0, &OPS, &s, NULL, &e), 0);
    for (size_t u = 0; u < n; u++)
        assert_int_equal(s.used[u], 1);
    uint64_t total = 0;
    for (int i = 0; i < NBLOBS; i++)
        total += f->len[i];
    assert_int_equal(direct_reads, (int)(total / READPLAN_RANGE_MAX) + 1);
    assert_int_equal(other_reads, 0);
    /* blobs 0, 10 and 20: ~3 MB apart, each read alone (only its own bytes, the header with
     * the first) */
    memset(&s.used, 0, sizeof(s.used));
    direct_reads = 0;
    direct_bytes = 0;
    n = 0;
    for (int i = 0; i < 30; i += 10)
        add(p, &s, n++, i);
    assert_int_equal(readplan_run(p, 1, 0, &OPS, &s, NULL, &e), 0);
    for (size_t u = 0; u < n; u++)
        assert_int_equal(s.used[u], 1);
    assert_int_equal(direct_reads, 3);
    assert_true(direct_bytes < 3 * (f->len[20] + 1000));
    readplan_free(p);
    pthread_mutex_destroy(&s.mu);
    fixture_free(f);
}

/* A pack of several ranges read on four threads at once, its key not known yet: the ranges
 * after the first wait for the key the first one brings with the header (from offset 0)
 * instead of reading the header alone, so the plan makes exactly one read per range, however
 * the threads run. Three fresh repositories. */
static void test_plan_ranges_share_the_key(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        struct fixture *f = fixture_new(size_large);
        struct seen s = {.f = f};
        pthread_mutex_init(&s.mu, NULL);
        struct readplan *p = readplan_new(f->r);
        size_t n = 0;
        uint64_t total = 0;
        for (int i = 0; i < NBLOBS; i++) {
            add(p, &s, n++, i);
            total += f->len[i];
        }
        struct err e = ERR_INIT;
        assert_int_equal(readplan_run(p, 4, 0, &OPS, &s, NULL, &e), 0);
        for (size_t u = 0; u < n; u++) {
            assert_int_equal(s.wrong[u], 0);
            assert_int_equal(s.used[u], 1);
        }
        assert_true(total / READPLAN_RANGE_MAX >= 1); /* more than one range */
        assert_int_equal(direct_reads, (int)(total / READPLAN_RANGE_MAX) + 1);
        assert_int_equal(other_reads, 0);
        readplan_free(p);
        pthread_mutex_destroy(&s.mu);
        fixture_free(f);
    }
}

/* The pack's header damaged (its magic): the first range cannot derive the key, the ranges
 * waiting for it go on and read the header themselves; every use is reported as damage once,
 * and the plan ends (no range waits forever). */
static void test_plan_damaged_header(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(size_large);
    struct seen s = {.f = f};
    pthread_mutex_init(&s.mu, NULL);
    flip_pack_bit(f->r, f->dir, f->ids[0], false, 0, 0x40); /* the pack's magic */
    struct readplan *p = readplan_new(f->r);
    size_t n = 0;
    for (int i = 0; i < NBLOBS; i++)
        add(p, &s, n++, i);
    struct err e = ERR_INIT;
    assert_int_equal(readplan_run(p, 4, 0, &OPS, &s, NULL, &e), 0);
    for (size_t u = 0; u < n; u++) {
        assert_int_equal(s.wrong[u], 0);
        assert_int_equal(s.used[u], 0);
        assert_int_equal(s.damaged[u], 1);
    }
    /* two ranges: the lead's read, the follower's, and the follower's header read alone
     * (after the lead failed) */
    assert_int_equal(direct_reads, 3);
    assert_int_equal(other_reads, 0);
    readplan_free(p);
    pthread_mutex_destroy(&s.mu);
    fixture_free(f);
}

/* One byte of one blob altered in the pack: that blob's uses are damage, the others right. */
static void test_plan_damaged_blob(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(size_small);
    struct seen s = {.f = f};
    pthread_mutex_init(&s.mu, NULL);
    flip_pack_bit(f->r, f->dir, f->ids[5], true, 100, 1);
    struct readplan *p = readplan_new(f->r);
    size_t n = 0;
    for (int i = 0; i < NBLOBS; i++) {
        add(p, &s, n++, i);
        if (i == 5)
            add(p, &s, n++, i);
    }
    struct err e = ERR_INIT;
    assert_int_equal(readplan_run(p, 2, 0, &OPS, &s, NULL, &e), 0);
    for (size_t u = 0; u < n; u++) {
        assert_int_equal(s.wrong[u], 0);
        assert_int_equal(s.used[u] + s.damaged[u], 1);
        assert_int_equal(s.damaged[u], s.blob[u] == 5);
    }
    readplan_free(p);
    pthread_mutex_destroy(&s.mu);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_uses_and_one_range),
        cmocka_unit_test(test_plan_ranges_and_gaps),
        cmocka_unit_test(test_plan_damaged_blob),
        cmocka_unit_test(test_plan_ranges_share_the_key),
        cmocka_unit_test(test_plan_damaged_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

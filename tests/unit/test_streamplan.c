/* Stream restores through windowed read plans (src/repo/streamplan.c): windows cut by their
 * bytes; every chunk written in stream order and byte-exact, duplicates and a page delta
 * included, one read per window when the window's blobs lie close in one pack, never more
 * than the next window read ahead of the writer; a damaged blob, a writer that stops and a
 * cancel end it cleanly with the right error; stream_restore_buf takes this path when the
 * storage prefers plans. The storage is the posix one with its reads counted. */

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tmpdir.h"

#include "caris/crypto.h"
#include "caris/op.h"
#include "caris/pagedelta.h"
#include "caris/pipeline.h"
#include "caris/repo.h"
#include "caris/storage.h"
#include "caris/stream.h"
#include "repo/internal.h"

#include "packflip.h"
#include "repo/streamplan.h"

#define PW "test password: correct horse battery staple"
static const struct repo_init_opts TINY = {.kdf_ops = 1, .kdf_mem = 8192};

#define NBLOBS 48
#define BLOCK_PAGES 4
#define WINDOW (100u * 1000u) /* small windows: several per stream */

/* ---- window cut ------------------------------------------------------------------------ */

static uint64_t cost_of(void *ctx, size_t i)
{
    return ((const uint64_t *)ctx)[i];
}

static void test_window_end(void **state)
{
    (void)state;
    uint64_t c[] = {10, 20, 30, 100, 5, 5, 0, 50};
    size_t n = sizeof(c) / sizeof(c[0]);
    assert_int_equal(streamplan_window_end(0, n, 60, cost_of, c), 3); /* 10+20+30 = 60 */
    assert_int_equal(streamplan_window_end(0, n, 59, cost_of, c), 2); /* 30 would pass 59 */
    assert_int_equal(streamplan_window_end(3, n, 60, cost_of, c), 4); /* larger: alone */
    assert_int_equal(streamplan_window_end(4, n, 60, cost_of, c), 8); /* the rest: 60 */
    assert_int_equal(streamplan_window_end(4, n, 59, cost_of, c), 7); /* the empty one too */
    assert_int_equal(streamplan_window_end(7, n, 1, cost_of, c), 8);  /* at least one */
    assert_int_equal(streamplan_window_end(8, n, 60, cost_of, c), 8); /* nothing left */
    assert_int_equal(streamplan_window_end(0, n, UINT64_MAX, cost_of, c), n);
}

/* ---- restores from a repository -------------------------------------------------------- */

static const struct storage_ops *real_ops;
static struct storage_ops counting_ops;
static int direct_reads, other_reads;
/* Read-ahead bound: windows the writer has written out, and reads made while more windows
 * than those and the next two were being read (-1: not watched). */
static int windows_written = -1, reads_too_early;

static int count_direct(struct storage *s, const char *name, uint64_t off, void *out, size_t len,
                        struct err *e)
{
    if (strncmp(name, "data/", 5) == 0) {
        int n = __atomic_add_fetch(&direct_reads, 1, __ATOMIC_SEQ_CST);
        int w = __atomic_load_n(&windows_written, __ATOMIC_SEQ_CST);
        if (w >= 0 && n > w + 2) /* one read per window in these tests */
            __atomic_fetch_add(&reads_too_early, 1, __ATOMIC_SEQ_CST);
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

/* A stream: blobs 0..NBLOBS-1 in order, with blobs 3, 7 and 11 used again later (in other
 * windows and in the same one), a base block, and a page delta rebuilding a changed copy of
 * it; expected is what restoring it writes. */
struct fixture {
    char *dir;
    struct repo *r;
    uint8_t ids[NBLOBS][32];
    uint8_t *data[NBLOBS];
    size_t len[NBLOBS];
    uint8_t base[BLOCK_PAGES * PAGEDELTA_PAGE], block[BLOCK_PAGES * PAGEDELTA_PAGE];
    uint8_t base_id[32], delta_id[32];
    struct chunk_item *items;
    size_t n;
    struct buf expected;
    uint8_t sha[32];
    json_t *chunks; /* the same list as a manifest writes it */
};

static void rnd_fill(uint8_t *p, size_t n, uint32_t *x)
{
    for (size_t k = 0; k < n; k++) {
        *x = *x * 1103515245u + 12345u;
        p[k] = (uint8_t)(*x >> 23);
    }
}

static void add_item(struct fixture *f, const uint8_t id[32], const uint8_t *base, uint32_t len,
                     const uint8_t *plain)
{
    struct chunk_item *c = &f->items[f->n++];
    memcpy(c->id, id, 32);
    c->len = len;
    char hex[65], bhex[65];
    cx_hex(id, 32, hex);
    if (base) {
        memcpy(c->base, base, 32);
        c->delta = true;
        cx_hex(base, 32, bhex);
        json_array_append_new(f->chunks, json_pack("{s:s, s:s, s:I}", "base", bhex, "id", hex,
                                                   "len", (json_int_t)len));
    } else {
        json_array_append_new(f->chunks, json_pack("[s, I]", hex, (json_int_t)len));
    }
    buf_append(&f->expected, plain, len);
}

static struct fixture *fixture_new(void)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct err e = ERR_INIT;
    f->dir = tmpdir_new();
    struct repo *r = repo_init(f->dir, PW, &TINY, &e);
    if (!r)
        fail_msg("repo_init: %s", e.msg);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint32_t x = 4242;
    for (int i = 0; i < NBLOBS; i++) {
        f->len[i] = 9000 + 113 * (size_t)i; /* ~20 KB each, incompressible */
        f->data[i] = malloc(f->len[i]);
        rnd_fill(f->data[i], f->len[i], &x);
        repo_chunk_id(r, f->data[i], f->len[i], f->ids[i]);
        assert_int_equal(repo_writer_add(w, 0, f->ids[i], f->data[i], f->len[i], &e), 1);
    }
    rnd_fill(f->base, sizeof(f->base), &x);
    memcpy(f->block, f->base, sizeof(f->block));
    f->block[PAGEDELTA_PAGE + 17] ^= 0x55; /* page 1 changed in one byte */
    bool differ[BLOCK_PAGES] = {false, true, false, false};
    repo_chunk_id(r, f->base, sizeof(f->base), f->base_id);
    assert_int_equal(repo_writer_add(w, 0, f->base_id, f->base, sizeof(f->base), &e), 1);
    struct buf d = {0};
    pagedelta_encode(f->base_id, f->base, sizeof(f->base), f->block, sizeof(f->block), differ, &d);
    repo_chunk_id(r, d.data, d.len, f->delta_id);
    assert_int_equal(repo_writer_add(w, 0, f->delta_id, d.data, d.len, &e), 1);
    buf_free(&d);
    if (repo_writer_flush(w, &e) != 0)
        fail_msg("flush: %s", e.msg);
    repo_writer_free(w);
    repo_close(r);

    f->items = calloc(NBLOBS + 8, sizeof(*f->items));
    f->chunks = json_array();
    for (int i = 0; i < NBLOBS; i++) {
        add_item(f, f->ids[i], NULL, (uint32_t)f->len[i], f->data[i]);
        if (i == 20) { /* the block by its delta, then its base whole */
            add_item(f, f->delta_id, f->base_id, sizeof(f->block), f->block);
            add_item(f, f->base_id, NULL, sizeof(f->base), f->base);
        }
        if (i == 12 || i == 30 || i == 40) { /* blob 11 in its own window, 3 and 7 later */
            int dup = i == 12 ? 11 : i == 30 ? 3 : 7;
            add_item(f, f->ids[dup], NULL, (uint32_t)f->len[dup], f->data[dup]);
        }
    }
    cx_sha256(f->expected.data, f->expected.len, f->sha);

    f->r = repo_open(f->dir, PW, &e);
    if (!f->r)
        fail_msg("repo_open: %s", e.msg);
    real_ops = f->r->st->ops;
    counting_ops = *real_ops;
    counting_ops.read_direct = count_direct;
    counting_ops.read_at = count_read_at;
    f->r->st->ops = &counting_ops;
    direct_reads = other_reads = 0;
    return f;
}

static void fixture_free(struct fixture *f)
{
    f->r->st->ops = real_ops;
    repo_close(f->r);
    for (int i = 0; i < NBLOBS; i++)
        free(f->data[i]);
    free(f->items);
    json_decref(f->chunks);
    buf_free(&f->expected);
    tmpdir_free(f->dir);
    free(f);
}

static uint64_t fixture_cost(void *ctx, size_t i)
{
    struct fixture *f = ctx;
    const struct chunk_item *c = &f->items[i];
    if (!c->delta)
        return c->len;
    struct ientry a, b;
    assert_true(repo_lookup_entry(f->r, c->id, &a));
    assert_true(repo_lookup_entry(f->r, c->base, &b));
    return (uint64_t)c->len + (a.ulen_flags & ULEN_MASK) + (b.ulen_flags & ULEN_MASK);
}

/* What a restore wrote, with checks made as it wrote. */
struct out {
    struct fixture *f;
    struct buf got;
    size_t chunks;
    size_t *win_of; /* window number of each item (NULL: not watched) */
    size_t stop_at; /* 1-based chunk at which the writer fails (0: never) */
    volatile sig_atomic_t *cancel_at_flag;
    size_t cancel_at; /* 1-based chunk after which the cancel flag is set (0: never) */
};

static int on_write(void *ctx, const uint8_t *data, size_t len, struct err *e)
{
    struct out *o = ctx;
    if (o->stop_at && o->chunks + 1 == o->stop_at)
        return err_set(e, ERR_IO, NULL, "the writer stops here");
    if (o->win_of && o->chunks == 0) {
        /* the first chunk waits until the plan read the first two windows: the plan is as
         * far ahead as it may go, and must wait for the writer now */
        int64_t deadline = time_mono_ns() + 20 * 1000000000LL;
        while (__atomic_load_n(&direct_reads, __ATOMIC_SEQ_CST) < 2) {
            if (time_mono_ns() > deadline)
                return err_set(e, ERR_FAILURE, NULL, "the plan did not read two windows");
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    buf_append(&o->got, data, len);
    o->chunks++;
    if (o->win_of && (o->chunks == o->f->n || o->win_of[o->chunks] != o->win_of[o->chunks - 1]))
        __atomic_store_n(&windows_written, (int)o->win_of[o->chunks - 1] + 1, __ATOMIC_SEQ_CST);
    if (o->cancel_at && o->chunks == o->cancel_at)
        __atomic_store_n(o->cancel_at_flag, 1, __ATOMIC_RELAXED); /* the op reads it atomically */
    return 0;
}

/* Several windows: the stream byte-exact; one read per window (its blobs lie within one
 * merged range of the one pack, the header with the first), none through the storage's own
 * reads; the plan never more than one window ahead of the writer. */
static void test_restore_in_order(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    size_t windows = 0;
    size_t *win_of = calloc(f->n, sizeof(*win_of));
    for (size_t i = 0; i < f->n; windows++) {
        size_t end = streamplan_window_end(i, f->n, WINDOW, fixture_cost, f);
        for (; i < end; i++)
            win_of[i] = windows;
    }
    assert_true(windows >= 5);
    struct out o = {.f = f, .win_of = win_of};
    struct err e = ERR_INIT;
    windows_written = 0;
    reads_too_early = 0;
    assert_int_equal(streamplan_run(f->r, f->items, f->n, WINDOW, 3, 0, on_write, &o, NULL, &e), 0);
    assert_int_equal(o.chunks, f->n);
    assert_int_equal(o.got.len, f->expected.len);
    assert_memory_equal(o.got.data, f->expected.data, f->expected.len);
    assert_int_equal(direct_reads, (int)windows);
    assert_int_equal(other_reads, 0);
    assert_int_equal(reads_too_early, 0); /* the writer's window and the next one, no more */
    windows_written = -1;
    buf_free(&o.got);
    free(win_of);
    fixture_free(f);
}

/* stream_restore_buf on storage that prefers plans (as S3 does: connections > 0) restores a
 * stream longer than STREAMPLAN_MIN through them (the fixture's stream five times over),
 * checks the whole stream's SHA-256, and refuses a wrong one; a shorter stream (the
 * fixture's own) is read chunk by chunk, through the storage's reads. */
static void test_stream_restore_buf_planned(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    f->r->st->connections = 2;
    json_t *chunks_long = json_array();
    struct buf want = {0};
    for (int k = 0; k < 5; k++) {
        json_array_extend(chunks_long, f->chunks);
        buf_append(&want, f->expected.data, f->expected.len);
    }
    assert_true(want.len > STREAMPLAN_MIN);
    assert_true(f->expected.len <= STREAMPLAN_MIN);
    uint8_t sha_long[32];
    cx_sha256(want.data, want.len, sha_long);
    struct buf out = {0};
    struct err e = ERR_INIT;
    assert_int_equal(stream_restore_buf(f->r, chunks_long, sha_long, SIZE_MAX, &out, &e), 0);
    assert_int_equal(out.len, want.len);
    assert_memory_equal(out.data, want.data, out.len);
    assert_true(direct_reads >= 1);
    assert_int_equal(other_reads, 0); /* no blob by blob */
    uint8_t wrong[32];
    memcpy(wrong, sha_long, 32);
    wrong[0] ^= 1;
    assert_int_equal(stream_restore_buf(f->r, chunks_long, wrong, SIZE_MAX, &out, &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    assert_non_null(strstr(e.msg, "checksum mismatch"));
    direct_reads = other_reads = 0;
    assert_int_equal(stream_restore_buf(f->r, f->chunks, f->sha, SIZE_MAX, &out, &e), 0);
    assert_memory_equal(out.data, f->expected.data, f->expected.len);
    assert_int_equal(direct_reads, 0);
    assert_true(other_reads >= 1);
    f->r->st->connections = 0;
    json_decref(chunks_long);
    buf_free(&want);
    buf_free(&out);
    fixture_free(f);
}

/* One byte of blob 25 altered: the chunks before it are written, then the restore fails with
 * ERR_DAMAGE naming its place in the stream. */
static void test_damaged_blob(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    flip_pack_bit(f->r, f->dir, f->ids[25], true, 100, 1);
    size_t k = 0; /* the item of blob 25 */
    while (memcmp(f->items[k].id, f->ids[25], 32) != 0)
        k++;
    struct out o = {.f = f};
    struct err e = ERR_INIT;
    assert_int_equal(streamplan_run(f->r, f->items, f->n, WINDOW, 2, 0, on_write, &o, NULL, &e),
                     -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    char want[64];
    snprintf(want, sizeof(want), "chunk %zu of %zu", k + 1, f->n);
    assert_non_null(strstr(e.msg, want));
    assert_non_null(strstr(e.msg, "authentication failed"));
    assert_int_equal(o.chunks, k);
    assert_memory_equal(o.got.data, f->expected.data, o.got.len);
    buf_free(&o.got);
    fixture_free(f);
}

/* The base of the page delta altered: the delta's item fails, its error says so. */
static void test_damaged_delta_base(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    struct ientry en;
    assert_true(repo_lookup_entry(f->r, f->base_id, &en));
    char name[80];
    pack_object_name(f->r->packs[en.pack].id, name, sizeof(name));
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, en.off + 10), 1);
    b ^= 1;
    assert_int_equal(pwrite(fd, &b, 1, en.off + 10), 1);
    close(fd);
    size_t k = 0;
    while (!f->items[k].delta)
        k++;
    struct out o = {.f = f};
    struct err e = ERR_INIT;
    assert_int_equal(streamplan_run(f->r, f->items, f->n, WINDOW, 2, 0, on_write, &o, NULL, &e),
                     -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    assert_non_null(strstr(e.msg, "base block of a page delta"));
    assert_int_equal(o.chunks, k);
    buf_free(&o.got);
    fixture_free(f);
}

/* A writer that fails stops the restore with its error; a cancel with "cancelled". Neither
 * hangs, whatever the plan was doing. */
static void test_writer_stops_and_cancel(void **state)
{
    (void)state;
    struct fixture *f = fixture_new();
    struct err e = ERR_INIT;
    for (size_t at = 1; at <= f->n; at += 13) {
        struct out o = {.f = f, .stop_at = at};
        assert_int_equal(streamplan_run(f->r, f->items, f->n, WINDOW, 2, 0, on_write, &o, NULL, &e),
                         -1);
        assert_int_equal(e.code, ERR_IO);
        assert_string_equal(e.msg, "the writer stops here");
        assert_int_equal(o.chunks, at - 1);
        buf_free(&o.got);
    }
    volatile sig_atomic_t cancel = 0;
    struct caris_op op = {.cancel = &cancel};
    struct out o = {.f = f, .cancel_at = 7, .cancel_at_flag = &cancel};
    assert_int_equal(streamplan_run(f->r, f->items, f->n, WINDOW, 2, 0, on_write, &o, &op, &e), -1);
    assert_non_null(strstr(e.msg, "cancelled"));
    assert_int_equal(o.chunks, 7);
    buf_free(&o.got);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_end),
        cmocka_unit_test(test_restore_in_order),
        cmocka_unit_test(test_stream_restore_buf_planned),
        cmocka_unit_test(test_damaged_blob),
        cmocka_unit_test(test_damaged_delta_base),
        cmocka_unit_test(test_writer_stops_and_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

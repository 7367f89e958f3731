#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "caris/core.h"
#include "caris/dumpcount.h"

/* A custom-format archive as pg_dump writes it to a pipe (layout in src/pg/dumpcount.c). */
struct ar {
    struct buf b;
    int vmin;
};

static void put_byte(struct ar *a, int v)
{
    uint8_t c = (uint8_t)v;
    buf_append(&a->b, &c, 1);
}

static void put_int(struct ar *a, int64_t v)
{
    put_byte(a, v < 0);
    uint64_t u = v < 0 ? (uint64_t)-v : (uint64_t)v;
    for (int i = 0; i < 4; i++)
        put_byte(a, (int)((u >> (8 * i)) & 0xff));
}

static void put_str(struct ar *a, const char *s)
{
    if (!s) {
        put_int(a, -1);
        return;
    }
    put_int(a, (int64_t)strlen(s));
    buf_append(&a->b, s, strlen(s));
}

static void header(struct ar *a, int vmin, int compression)
{
    a->vmin = vmin;
    buf_append(&a->b, "PGDMP", 5);
    put_byte(a, 1);
    put_byte(a, vmin);
    put_byte(a, 0);
    put_byte(a, 4); /* int size */
    put_byte(a, 8); /* offset size */
    put_byte(a, 1); /* custom */
    if (vmin >= 15)
        put_byte(a, compression);
    else
        put_int(a, compression);
    for (int i = 0; i < 7; i++)
        put_int(a, 1);
    put_str(a, "db");
    put_str(a, "15.18");
    put_str(a, "15.18");
}

static void toc_entry(struct ar *a, int id, const char *desc, const char *nsp, const char *tag,
                      const char *copy)
{
    put_int(a, id);
    put_int(a, copy != NULL);
    put_str(a, "1259");
    put_str(a, "16384");
    put_str(a, tag);
    put_str(a, desc);
    put_int(a, 2);
    put_str(a, "");
    put_str(a, "");
    put_str(a, copy);
    put_str(a, nsp);
    put_str(a, "");
    if (a->vmin >= 14)
        put_str(a, "heap");
    if (a->vmin >= 16)
        put_int(a, 'r');
    put_str(a, "owner");
    put_str(a, "false");
    put_str(a, "7");
    put_str(a, NULL);
    put_byte(a, copy ? 1 : 3);
    for (int i = 0; i < 8; i++)
        put_byte(a, 0);
}

static void chunk(struct ar *a, const char *s)
{
    put_int(a, (int64_t)strlen(s));
    buf_append(&a->b, s, strlen(s));
}

/* Three tables (10 rows in chunks of several rows, none, 2 rows with escaped newlines) and a
 * large-object block between them. */
static void archive(struct ar *a, int vmin)
{
    memset(a, 0, sizeof(*a));
    header(a, vmin, 0);
    put_int(a, 5);
    toc_entry(a, 3, "TABLE", "public", "t1", NULL);
    toc_entry(a, 40, "TABLE DATA", "public", "t1", "COPY public.t1 (a) FROM stdin;\n");
    toc_entry(a, 41, "TABLE DATA", "public", "empty", "COPY public.empty (a) FROM stdin;\n");
    toc_entry(a, 42, "TABLE DATA", "we ird", "T\\x", "COPY \"we ird\".\"T\\x\" FROM stdin;\n");
    toc_entry(a, 50, "BLOBS", "", "BLOBS", NULL);
    put_byte(a, 1); /* t1 */
    put_int(a, 40);
    chunk(a, "1\n2\n3\n");
    chunk(a, "4\n");
    chunk(a, "5\n6\n7\n8\n9\n10\n");
    chunk(a, "\\.\n\n\n");
    put_int(a, 0);
    put_byte(a, 3); /* large objects, with newlines in them */
    put_int(a, 50);
    put_int(a, 16500);
    chunk(a, "\n\n\n\n");
    put_int(a, 0);
    put_int(a, 16501);
    put_int(a, 0);
    put_int(a, 0);
    put_byte(a, 1); /* empty */
    put_int(a, 41);
    chunk(a, "\\.\n\n\n");
    put_int(a, 0);
    put_byte(a, 1);
    put_int(a, 42);
    chunk(a, "a\\nb\\r\\n\n\\\\.\n\\.\n");
    chunk(a, "\n\n");
    put_int(a, 0);
}

static void check_counts(struct dumpcount *d)
{
    int64_t rows = -1;
    assert_true(dumpcount_complete(d));
    assert_null(dumpcount_why(d));
    assert_true(dumpcount_rows(d, "public", "t1", &rows));
    assert_int_equal(rows, 10);
    assert_true(dumpcount_rows(d, "public", "empty", &rows));
    assert_int_equal(rows, 0);
    assert_true(dumpcount_rows(d, "we ird", "T\\x", &rows));
    assert_int_equal(rows, 2);
    assert_false(dumpcount_rows(d, "public", "nope", &rows));
    assert_false(dumpcount_rows(d, "public", "BLOBS", &rows));
}

static void test_versions_whole_and_byte_by_byte(void **state)
{
    (void)state;
    for (int vmin = 12; vmin <= 16; vmin++) {
        struct ar a;
        archive(&a, vmin);
        struct dumpcount *d = dumpcount_new();
        dumpcount_feed(d, a.b.data, a.b.len);
        dumpcount_end(d);
        check_counts(d);
        dumpcount_free(d);
        d = dumpcount_new();
        for (size_t i = 0; i < a.b.len; i++)
            dumpcount_feed(d, a.b.data + i, 1);
        dumpcount_end(d);
        check_counts(d);
        dumpcount_free(d);
        d = dumpcount_new(); /* pieces of 7 bytes: ints and the marker split across them */
        for (size_t i = 0; i < a.b.len; i += 7)
            dumpcount_feed(d, a.b.data + i, a.b.len - i < 7 ? a.b.len - i : 7);
        dumpcount_end(d);
        check_counts(d);
        dumpcount_free(d);
        buf_free(&a.b);
    }
}

static void test_cut_short_counts_nothing(void **state)
{
    (void)state;
    struct ar a;
    archive(&a, 14);
    /* Cut anywhere: a count is given only for a block read to its end, and is right. (Cut
     * between two blocks, the archive looks complete: pg_dump's exit status tells.) */
    size_t whole = 0;
    for (size_t cut = 0; cut < a.b.len; cut++) {
        struct dumpcount *d = dumpcount_new();
        dumpcount_feed(d, a.b.data, cut);
        dumpcount_end(d);
        int64_t rows = -1;
        if (!dumpcount_complete(d)) {
            assert_non_null(dumpcount_why(d));
            assert_false(dumpcount_rows(d, "public", "t1", &rows));
        } else {
            whole++;
            if (dumpcount_rows(d, "public", "t1", &rows))
                assert_int_equal(rows, 10);
            if (dumpcount_rows(d, "public", "empty", &rows))
                assert_int_equal(rows, 0);
            assert_false(dumpcount_rows(d, "we ird", "T\\x", &rows));
        }
        dumpcount_free(d);
    }
    assert_int_equal(whole,
                     4); /* after the table of contents and after each of the first three blocks */
    buf_free(&a.b);
}

/* A counter fed the whole archive in one piece, to its end. */
static struct dumpcount *count_all(const struct ar *a)
{
    struct dumpcount *d = dumpcount_new();
    dumpcount_feed(d, a->b.data, a->b.len);
    dumpcount_end(d);
    return d;
}

static void test_gives_up(void **state)
{
    (void)state;
    int64_t rows;
    /* compressed */
    struct ar a = {0};
    header(&a, 15, 1);
    put_int(&a, 0);
    struct dumpcount *d = count_all(&a);
    assert_false(dumpcount_complete(d));
    assert_string_equal(dumpcount_why(d), "a compressed archive");
    dumpcount_free(d);
    buf_free(&a.b);
    /* an unknown version */
    memset(&a, 0, sizeof(a));
    header(&a, 17, 0);
    d = count_all(&a);
    assert_false(dumpcount_complete(d));
    assert_non_null(strstr(dumpcount_why(d), "version"));
    dumpcount_free(d);
    buf_free(&a.b);
    /* not an archive */
    d = dumpcount_new();
    dumpcount_feed(d, (const uint8_t *)"--\n-- PostgreSQL database dump\n", 31);
    dumpcount_end(d);
    assert_false(dumpcount_complete(d));
    dumpcount_free(d);
    /* an unknown block type after a good one */
    archive(&a, 14);
    put_byte(&a, 2);
    d = count_all(&a);
    assert_false(dumpcount_complete(d));
    assert_false(dumpcount_rows(d, "public", "t1", &rows));
    dumpcount_free(d);
    buf_free(&a.b);
    /* a table whose data does not end with the end-of-copy marker is not counted, the
     * others are */
    memset(&a, 0, sizeof(a));
    header(&a, 14, 0);
    put_int(&a, 2);
    toc_entry(&a, 40, "TABLE DATA", "public", "t1", "COPY public.t1 (a) FROM stdin;\n");
    toc_entry(&a, 41, "TABLE DATA", "public", "t2", "COPY public.t2 (a) FROM stdin;\n");
    put_byte(&a, 1);
    put_int(&a, 40);
    chunk(&a, "1\n2\n3\n4\n");
    put_int(&a, 0);
    put_byte(&a, 1);
    put_int(&a, 41);
    chunk(&a, "1\n\\.\n\n\n");
    put_int(&a, 0);
    d = count_all(&a);
    assert_true(dumpcount_complete(d));
    assert_false(dumpcount_rows(d, "public", "t1", &rows));
    assert_true(dumpcount_rows(d, "public", "t2", &rows));
    assert_int_equal(rows, 1);
    dumpcount_free(d);
    buf_free(&a.b);
}

/* A table of contents with no entry (found by fuzzing: qsort was handed a NULL array, which
 * UBSan reports): read to its end, nothing to count. */
static void test_empty_toc(void **state)
{
    (void)state;
    int64_t rows;
    struct ar a = {0};
    header(&a, 15, 0);
    put_int(&a, 0);
    struct dumpcount *d = count_all(&a);
    assert_false(dumpcount_rows(d, "public", "t1", &rows));
    dumpcount_free(d);
    buf_free(&a.b);
    /* ... followed by a data block (as a dump made with --inserts has, whose table data is
     * no COPY): its id is looked up in the empty table (bsearch was handed NULL) */
    memset(&a, 0, sizeof(a));
    header(&a, 15, 0);
    put_int(&a, 1);
    toc_entry(&a, 3, "TABLE", "public", "t1", NULL);
    put_byte(&a, 1);
    put_int(&a, 40);
    chunk(&a, "INSERT INTO public.t1 VALUES (1);\n");
    put_int(&a, 0);
    d = count_all(&a);
    assert_false(dumpcount_rows(d, "public", "t1", &rows));
    dumpcount_free(d);
    buf_free(&a.b);
}

static void test_two_blocks_and_twins_not_counted(void **state)
{
    (void)state;
    int64_t rows;
    /* one entry's data in two blocks, the first without the marker: given up, never summed */
    struct ar a = {0};
    header(&a, 14, 0);
    put_int(&a, 1);
    toc_entry(&a, 40, "TABLE DATA", "public", "t1", "COPY public.t1 (a) FROM stdin;\n");
    for (int k = 0; k < 2; k++) {
        put_byte(&a, 1);
        put_int(&a, 40);
        chunk(&a, k ? "3\n\\.\n\n\n" : "1\n2\n");
        put_int(&a, 0);
    }
    struct dumpcount *d = dumpcount_new();
    dumpcount_feed(d, a.b.data, a.b.len);
    dumpcount_end(d);
    assert_false(dumpcount_rows(d, "public", "t1", &rows));
    assert_non_null(dumpcount_why(d));
    dumpcount_free(d);
    buf_free(&a.b);
    /* two entries of one name: neither is counted */
    memset(&a, 0, sizeof(a));
    header(&a, 14, 0);
    put_int(&a, 2);
    toc_entry(&a, 40, "TABLE DATA", "public", "t1", "COPY public.t1 (a) FROM stdin;\n");
    toc_entry(&a, 41, "TABLE DATA", "public", "t1", "COPY public.t1 (a) FROM stdin;\n");
    for (int k = 0; k < 2; k++) {
        put_byte(&a, 1);
        put_int(&a, 40 + k);
        chunk(&a, "1\n\\.\n\n\n");
        put_int(&a, 0);
    }
    d = dumpcount_new();
    dumpcount_feed(d, a.b.data, a.b.len);
    dumpcount_end(d);
    assert_true(dumpcount_complete(d));
    assert_false(dumpcount_rows(d, "public", "t1", &rows));
    dumpcount_free(d);
    buf_free(&a.b);
}

/* A table of contents of 30,000 entries fed in 4 KiB pieces, as pg_dump writes: read in
 * time linear in its size (parsed again only when it grew by half), and right. */
static void test_large_toc(void **state)
{
    (void)state;
    struct ar a = {0};
    header(&a, 14, 0);
    enum { N = 30000 };
    put_int(&a, N);
    char tag[32];
    for (int i = 0; i < N; i++) {
        snprintf(tag, sizeof(tag), "t%d", i);
        toc_entry(&a, 100 + i, "TABLE DATA", "public", tag, "COPY x FROM stdin;\n");
    }
    for (int i = 0; i < N; i++) {
        put_byte(&a, 1);
        put_int(&a, 100 + i);
        chunk(&a, i % 2 ? "a\nb\n\\.\n\n\n" : "\\.\n\n\n");
        put_int(&a, 0);
    }
    struct dumpcount *d = dumpcount_new();
    for (size_t i = 0; i < a.b.len; i += 4096)
        dumpcount_feed(d, a.b.data + i, a.b.len - i < 4096 ? a.b.len - i : 4096);
    dumpcount_end(d);
    assert_true(dumpcount_complete(d));
    int64_t rows;
    assert_true(dumpcount_rows(d, "public", "t29999", &rows));
    assert_int_equal(rows, 2);
    assert_true(dumpcount_rows(d, "public", "t0", &rows));
    assert_int_equal(rows, 0);
    dumpcount_free(d);
    buf_free(&a.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions_whole_and_byte_by_byte),
        cmocka_unit_test(test_cut_short_counts_nothing),
        cmocka_unit_test(test_gives_up),
        cmocka_unit_test(test_empty_toc),
        cmocka_unit_test(test_two_blocks_and_twins_not_counted),
        cmocka_unit_test(test_large_toc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

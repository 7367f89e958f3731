/* The file table cache: what is written is found again; a table is refused when it is for
 * other entries (another entries SHA-256), of the old layout, made with another key, altered in any
 * byte, truncated, or (MAC recomputed with the right key) lies about its sections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "caris/crypto.h"
#include "services/filetable.h"
#include "tmpdir.h"

/* the SHA-256 of the entries text the table is made for (any 32 bytes here) */
static const uint8_t SNAP[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const char TEXT[] = "[{\"a\":1},{\"b\":2},{\"c\":3}]";

static struct stat file_stat(int i)
{
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_mode = S_IFREG | 0640;
    st.st_nlink = 1;
    st.st_size = 1000 + i;
    st.st_mtim.tv_sec = 1700000000 + i;
    st.st_mtim.tv_nsec = 123456789;
    st.st_ctim.tv_sec = 1700000100 + i;
    st.st_ctim.tv_nsec = 987654321;
    st.st_ino = 42 + (ino_t)i;
    st.st_uid = 1000;
    st.st_gid = 100;
    return st;
}

/* The builder of the test table: three files, entry i with i chunk ids. */
static struct ftable_builder *test_builder(void)
{
    struct ftable_builder *b = ftable_builder_new();
    uint8_t ids[3][32];
    for (int i = 0; i < 3; i++)
        memset(ids[i], 0x10 + i, 32);
    static const char *keys[] = {"0/a", "0/dir/b", "1/c"};
    /* entry i's text: {"a":1} at 1, {"b":2} at 9, {"c":3} at 17 */
    for (int i = 0; i < 3; i++) {
        struct stat st = file_stat(i);
        ftable_builder_add(b, keys[i], strlen(keys[i]), &st, i == 2 ? NULL : "alice", "staff",
                           1 + 8 * (uint64_t)i, 7, (const uint8_t(*)[32])ids, (size_t)i);
    }
    return b;
}

static char *write_table(const char *dir, const uint8_t key[32])
{
    char *path = xasprintf("%s/sub/files-x.tbl", dir);
    struct ftable_builder *b = test_builder();
    struct err e = ERR_INIT;
    assert_int_equal(ftable_builder_write(b, path, key, SNAP, TEXT, strlen(TEXT), &e), 0);
    ftable_builder_free(b);
    return path;
}

static void read_file(const char *path, struct buf *out)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        buf_append(out, chunk, n);
    fclose(f);
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void test_roundtrip(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    uint8_t key[32];
    memset(key, 7, 32);
    char *path = write_table(dir, key);
    const char *why;
    struct ftable *t = ftable_open(path, key, SNAP, &why);
    assert_non_null(t);
    assert_int_equal(ftable_count(t), 3);
    const struct ftable_rec *r = ftable_find(t, "0/dir/b", 7);
    assert_non_null(r);
    assert_memory_equal(ftable_text(t, r), "{\"b\":2}", 7);
    assert_int_equal(r->nids, 1);
    uint8_t want[32];
    memset(want, 0x10, 32);
    assert_memory_equal(ftable_ids(t, r)[0], want, 32);
    struct stat st = file_stat(1);
    assert_true(ftable_matches(t, r, &st, "alice", "staff"));
    assert_false(ftable_matches(t, r, &st, "bob", "staff"));
    assert_false(ftable_matches(t, r, &st, "alice", NULL));
    st.st_ctim.tv_nsec++;
    assert_false(ftable_matches(t, r, &st, "alice", "staff"));
    st = file_stat(1);
    st.st_mode = S_IFREG | 0644;
    assert_false(ftable_matches(t, r, &st, "alice", "staff"));
    st = file_stat(1);
    st.st_nlink = 2;
    assert_false(ftable_matches(t, r, &st, "alice", "staff"));
    st = file_stat(1);
    st.st_ino++;
    assert_false(ftable_matches(t, r, &st, "alice", "staff"));
    /* no owner name recorded: only "no name" matches */
    r = ftable_find(t, "1/c", 3);
    assert_non_null(r);
    st = file_stat(2);
    assert_true(ftable_matches(t, r, &st, NULL, "staff"));
    assert_false(ftable_matches(t, r, &st, "", "staff"));
    assert_null(ftable_find(t, "0/dir", 5));
    assert_null(ftable_find(t, "0/dir/bb", 8));
    ftable_close(t);

    /* other entries, another key, no file */
    uint8_t other[32];
    memcpy(other, SNAP, 32);
    other[31] ^= 1;
    assert_null(ftable_open(path, key, other, &why));
    assert_string_equal(why, "made for another backup, or of another layout");
    uint8_t key2[32];
    memset(key2, 8, 32);
    assert_null(ftable_open(path, key2, SNAP, &why));
    char *none = xasprintf("%s/none.tbl", dir);
    assert_null(ftable_open(none, key, SNAP, &why));
    assert_string_equal(why, "none yet");
    free(none);
    free(path);
    tmpdir_free(dir);
}

static void test_every_byte_and_truncation(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    uint8_t key[32];
    memset(key, 7, 32);
    char *path = write_table(dir, key);
    struct buf good = {0};
    read_file(path, &good);
    const char *why;
    for (size_t i = 0; i < good.len; i++) {
        good.data[i] ^= 0x01;
        write_file(path, good.data, good.len);
        good.data[i] ^= 0x01;
        assert_null(ftable_open(path, key, SNAP, &why));
    }
    for (size_t n = 0; n < good.len; n += 7) {
        write_file(path, good.data, n);
        assert_null(ftable_open(path, key, SNAP, &why));
    }
    write_file(path, good.data, good.len);
    struct ftable *t = ftable_open(path, key, SNAP, &why);
    assert_non_null(t);
    ftable_close(t);
    buf_free(&good);
    free(path);
    tmpdir_free(dir);
}

/* Rewrites the header field at off with v (len bytes) and seals the table again with key. */
static void forge(const char *path, const struct buf *good, size_t off, uint64_t v, size_t len,
                  const uint8_t key[32])
{
    struct buf b = {0};
    buf_append(&b, good->data, good->len);
    memcpy(b.data + off, &v, len);
    uint8_t d[32];
    cx_sha256(b.data, b.len - 32, d);
    cx_hmac_sha256(key, 32, d, 32, b.data + b.len - 32);
    write_file(path, b.data, b.len);
    buf_free(&b);
}

static void test_lying_sections(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    uint8_t key[32];
    memset(key, 7, 32);
    char *path = write_table(dir, key);
    struct buf good = {0};
    read_file(path, &good);
    const char *why;
    forge(path, &good, 16, 4, 4, key); /* nrec: 3 -> 4 */
    struct ftable *t = ftable_open(path, key, SNAP, &why);
    assert_null(t);
    forge(path, &good, 16, UINT32_MAX, 4, key);
    assert_null(ftable_open(path, key, SNAP, &why));
    forge(path, &good, 20, 12, 4, key); /* nslots: not a power of two */
    assert_null(ftable_open(path, key, SNAP, &why));
    forge(path, &good, 24, UINT64_MAX / 16, 8, key); /* nids: overflow */
    assert_null(ftable_open(path, key, SNAP, &why));
    forge(path, &good, 32, UINT64_MAX, 8, key); /* strs_len */
    assert_null(ftable_open(path, key, SNAP, &why));
    forge(path, &good, 40, 1, 8, key); /* text_len */
    assert_null(ftable_open(path, key, SNAP, &why));
    /* a record pointing past the text: the first record's text_off (at 120) */
    forge(path, &good, 120, 1u << 20, 8, key);
    assert_null(ftable_open(path, key, SNAP, &why));
    /* the old layout (version 1, bound to a snapshot name): refused, so rebuilt once */
    forge(path, &good, 8, 1, 4, key);
    assert_null(ftable_open(path, key, SNAP, &why));
    /* unchanged but sealed again: accepted (the forging itself is right) */
    forge(path, &good, 8, 2, 4, key);
    t = ftable_open(path, key, SNAP, &why);
    assert_non_null(t);
    ftable_close(t);
    buf_free(&good);
    free(path);
    tmpdir_free(dir);
}

/* A builder holding what the table holds is "the same" (the table need not be written again);
 * any difference in the entries' SHA-256, a record, a chunk id or a name is not. */
static void test_builder_same(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    uint8_t key[32];
    memset(key, 7, 32);
    char *path = write_table(dir, key);
    const char *why;
    struct ftable *t = ftable_open(path, key, SNAP, &why);
    assert_non_null(t);
    struct ftable_builder *b = test_builder();
    assert_true(ftable_builder_same(b, t, SNAP));
    uint8_t other[32];
    memcpy(other, SNAP, 32);
    other[0] ^= 1;
    assert_false(ftable_builder_same(b, t, other));
    ftable_builder_free(b);

    /* one more file */
    b = test_builder();
    struct stat st = file_stat(3);
    ftable_builder_add(b, "1/d", 3, &st, NULL, NULL, 1, 7, NULL, 0);
    assert_false(ftable_builder_same(b, t, SNAP));
    ftable_builder_free(b);

    /* the same files, one with another mtime (nanoseconds), another chunk id, another owner */
    static const char *keys[] = {"0/a", "0/dir/b", "1/c"};
    for (int change = 0; change < 3; change++) {
        b = ftable_builder_new();
        uint8_t ids[3][32];
        for (int i = 0; i < 3; i++)
            memset(ids[i], 0x10 + i, 32);
        if (change == 1)
            ids[0][31] ^= 1;
        for (int i = 0; i < 3; i++) {
            st = file_stat(i);
            if (change == 0 && i == 2)
                st.st_mtim.tv_nsec++;
            const char *user = i == 2 ? NULL : change == 2 && i == 0 ? "alicf" : "alice";
            ftable_builder_add(b, keys[i], strlen(keys[i]), &st, user, "staff", 1 + 8 * (uint64_t)i,
                               7, (const uint8_t(*)[32])ids, (size_t)i);
        }
        assert_false(ftable_builder_same(b, t, SNAP));
        ftable_builder_free(b);
    }
    ftable_close(t);
    free(path);
    tmpdir_free(dir);
}

/* The test table's files with one change (0: none; 1: file 2's mtime; 2: file 0's first chunk
 * id; 3: file 0's owner; 4: file 1's key; 5: a fourth file; 6: no file 2; 7: file 1 without
 * an owner name; 8: file 0 past what a table holds, so left out). */
static void feed(struct ftable_builder *b, int change)
{
    static const char *keys[] = {"0/a", "0/dir/b", "1/c"};
    uint8_t ids[3][32];
    for (int i = 0; i < 3; i++)
        memset(ids[i], 0x10 + i, 32);
    if (change == 2)
        ids[0][31] ^= 1;
    for (int i = 0; i < (change == 6 ? 2 : 3); i++) {
        struct stat st = file_stat(i);
        if (change == 1 && i == 2)
            st.st_mtim.tv_nsec++;
        const char *user = i == 2 || (change == 7 && i == 1) ? NULL
                           : change == 3 && i == 0           ? "alicf"
                                                             : "alice";
        const char *key = change == 4 && i == 1 ? "0/dir/c" : keys[i];
        size_t text_len = change == 8 && i == 0 ? (size_t)UINT32_MAX + 1 : 7;
        ftable_builder_add(b, key, strlen(key), &st, user, "staff", 1 + 8 * (uint64_t)i, text_len,
                           (const uint8_t(*)[32])ids, (size_t)i);
    }
    if (change == 5) {
        struct stat st = file_stat(3);
        ftable_builder_add(b, "1/d", 3, &st, NULL, NULL, 1, 7, NULL, 0);
    }
}

/* A builder based on the table it rebuilds: the same files are "the same" with nothing
 * copied; from the first difference on it copies the table's records so far and goes on, and
 * writes byte for byte the table a builder without a base writes. */
static void test_builder_base(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    uint8_t key[32];
    memset(key, 7, 32);
    char *path = write_table(dir, key);
    struct buf orig = {0};
    read_file(path, &orig);
    const char *why;
    struct ftable *t = ftable_open(path, key, SNAP, &why);
    assert_non_null(t);
    char *p1 = xasprintf("%s/based.tbl", dir), *p2 = xasprintf("%s/plain.tbl", dir);
    for (int change = 0; change <= 8; change++) {
        struct ftable_builder *b = ftable_builder_new(), *plain = ftable_builder_new();
        ftable_builder_base(b, t);
        feed(b, change);
        feed(plain, change);
        assert_int_equal(ftable_builder_same(b, t, SNAP), change == 0);
        assert_int_equal(ftable_builder_same(plain, t, SNAP), change == 0);
        uint8_t other[32];
        memcpy(other, SNAP, 32);
        other[5] ^= 1;
        assert_false(ftable_builder_same(b, t, other));
        struct err e = ERR_INIT;
        assert_int_equal(ftable_builder_write(b, p1, key, SNAP, TEXT, strlen(TEXT), &e), 0);
        assert_int_equal(ftable_builder_write(plain, p2, key, SNAP, TEXT, strlen(TEXT), &e), 0);
        struct buf x = {0}, y = {0};
        read_file(p1, &x);
        read_file(p2, &y);
        assert_int_equal(x.len, y.len);
        assert_memory_equal(x.data, y.data, x.len);
        if (change == 0) {
            assert_int_equal(x.len, orig.len);
            assert_memory_equal(x.data, orig.data, x.len);
        }
        /* what was written is read back: the records after the first difference too */
        struct ftable *u = ftable_open(p1, key, SNAP, &why);
        assert_non_null(u);
        const struct ftable_rec *r = ftable_find(u, change == 4 ? "0/dir/c" : "0/dir/b", 7);
        assert_non_null(r);
        assert_memory_equal(ftable_text(u, r), "{\"b\":2}", 7);
        assert_int_equal(ftable_count(u), change == 5 ? 4 : change == 6 || change == 8 ? 2 : 3);
        ftable_close(u);
        buf_free(&x);
        buf_free(&y);
        ftable_builder_free(b);
        ftable_builder_free(plain);
    }
    /* a base given after the first add is not taken: the builder copies as before */
    struct ftable_builder *b = ftable_builder_new();
    struct stat st = file_stat(0);
    ftable_builder_add(b, "0/a", 3, &st, "alice", "staff", 1, 7, NULL, 0);
    ftable_builder_base(b, t);
    assert_false(ftable_builder_same(b, t, SNAP));
    ftable_builder_free(b);
    ftable_close(t);
    buf_free(&orig);
    free(p1);
    free(p2);
    free(path);
    tmpdir_free(dir);
}

/* Resident bytes of the mappings of `path` (their Rss lines in /proc/self/smaps), -1 if none. */
static long mapped_rss(const char *given)
{
    char *path = realpath(given, NULL); /* smaps names the file by its canonical path */
    assert_non_null(path);
    FILE *fp = fopen("/proc/self/smaps", "r");
    assert_non_null(fp);
    char line[4096];
    long rss = -1;
    bool in = false;
    while (fgets(line, sizeof(line), fp)) {
        size_t n = strcspn(line, "\n");
        line[n] = 0;
        unsigned long lo, hi, kb;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) /* a mapping's first line: it names it */
            in = n >= strlen(path) && strcmp(line + n - strlen(path), path) == 0;
        else if (in && sscanf(line, "Rss: %lu kB", &kb) == 1)
            rss = (rss < 0 ? 0 : rss) + (long)kb * 1024;
    }
    fclose(fp);
    free(path);
    return rss;
}

/* After the MAC check the table's pages leave memory; the entries text read again comes back
 * intact; text marked used leaves memory again (in steps of 1 MiB). */
static void test_pages_leave_memory_and_come_back_intact(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    uint8_t key[32];
    memset(key, 7, 32);
    char *path = xasprintf("%s/files-big.tbl", dir);
    size_t len = 5u << 20;
    char *text = malloc(len);
    assert_non_null(text);
    memcpy(text, TEXT, strlen(TEXT) - 1);
    for (size_t i = strlen(TEXT) - 1; i < len - 1; i++)
        text[i] = (char)('a' + (i * 7919) % 26);
    text[len - 1] = ']';
    struct ftable_builder *b = test_builder();
    struct err e = ERR_INIT;
    assert_int_equal(ftable_builder_write(b, path, key, SNAP, text, len, &e), 0);
    ftable_builder_free(b);

    const char *why;
    struct ftable *t = ftable_open(path, key, SNAP, &why);
    assert_non_null(t);
    long rss = mapped_rss(path);
    assert_true(rss >= 0 && rss < (1 << 20)); /* the check read 5 MiB; they are gone */
    assert_memory_equal(ftable_entries_text(t), text, len);
    assert_true(mapped_rss(path) >= (long)(4u << 20)); /* read again, all of it */
    ftable_text_used(t, 4096);                         /* less than a step: nothing goes */
    assert_true(mapped_rss(path) >= (long)(4u << 20));
    ftable_text_used(t, (3u << 20) + 7);
    rss = mapped_rss(path);
    assert_true(rss >= (long)(1u << 20) && rss <= (long)(2u << 20) + 65536);
    ftable_text_used(t, len + 100); /* past the end: up to the end */
    assert_true(mapped_rss(path) < (1 << 20));
    assert_memory_equal(ftable_entries_text(t), text, len); /* still intact */
    const struct ftable_rec *r = ftable_find(t, "0/dir/b", 7);
    assert_non_null(r);
    assert_memory_equal(ftable_text(t, r), "{\"b\":2}", 7);
    ftable_close(t);
    free(text);
    free(path);
    tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_every_byte_and_truncation),
        cmocka_unit_test(test_lying_sections),
        cmocka_unit_test(test_builder_same),
        cmocka_unit_test(test_builder_base),
        cmocka_unit_test(test_pages_leave_memory_and_come_back_intact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

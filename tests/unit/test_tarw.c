/* The tar writer: pax record lengths (their own digits included), header checksums and
 * fields, extended headers for what ustar cannot hold, padding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "services/tarw.h"

/* Every length from 0 to 1100 bytes of value: the record's leading number is its length,
 * across the digit-count boundaries (a record of 99, 100, 999, 1000 bytes). */
static void test_pax_record_lengths(void **state)
{
    (void)state;
    char *v = malloc(1100);
    memset(v, 'v', 1100);
    for (size_t n = 0; n <= 1100; n++) {
        struct buf b = {0};
        tarw_pax_record(&b, "path", v, n);
        char *end;
        unsigned long len = strtoul((const char *)b.data, &end, 10);
        assert_int_equal(len, b.len);
        assert_int_equal(*end, ' ');
        assert_memory_equal(end + 1, "path=", 5);
        assert_int_equal(b.data[b.len - 1], '\n');
        buf_free(&b);
    }
    free(v);
}

static struct buf written(FILE *f)
{
    struct buf b = {0};
    fflush(f);
    rewind(f);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        buf_append(&b, tmp, n);
    return b;
}

static void assert_checksum(const uint8_t *h)
{
    unsigned sum = 0;
    for (size_t i = 0; i < 512; i++)
        sum += (i >= 148 && i < 156) ? ' ' : h[i];
    assert_int_equal(strtoul((const char *)h + 148, NULL, 8), sum);
    assert_memory_equal(h + 257,
                        "ustar\0"
                        "00",
                        8);
}

/* A plain member: one header, no extended one. */
static void test_plain_member(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    struct tarw t;
    tarw_init(&t, fileno(f));
    struct err e = ERR_INIT;
    struct tarw_hdr h = {.name = "a/b.txt",
                         .name_len = 7,
                         .type = '0',
                         .mode = 04755,
                         .uid = 1000,
                         .gid = 100,
                         .uname = "u",
                         .gname = "g",
                         .size = 5,
                         .mtime_sec = 1700000000};
    assert_int_equal(tarw_header(&t, &h, &e), 0);
    assert_int_equal(tarw_data(&t, "hello", 5, &e), 0);
    assert_int_equal(tarw_end_member(&t, 5, &e), 0);
    assert_int_equal(tarw_finish(&t, &e), 0);
    struct buf b = written(f);
    assert_int_equal(b.len, 10240);
    assert_int_equal(b.len, t.written);
    assert_checksum(b.data);
    assert_string_equal((char *)b.data, "a/b.txt");
    assert_string_equal((char *)b.data + 100, "0004755");
    assert_string_equal((char *)b.data + 108, "0001750");
    assert_string_equal((char *)b.data + 124, "00000000005");
    assert_string_equal((char *)b.data + 136, "14524770400");
    assert_int_equal(b.data[156], '0');
    assert_string_equal((char *)b.data + 265, "u");
    assert_memory_equal(b.data + 512, "hello", 5);
    buf_free(&b);
    fclose(f);
}

static const char *pax_value(const struct buf *b, const char *key, size_t *len)
{
    /* records start at offset 512 (after the 'x' header) */
    const char *p = (const char *)b->data + 512;
    const char *end = p + strtoul((const char *)b->data + 124, NULL, 8);
    size_t kl = strlen(key);
    while (p < end) {
        char *sp;
        unsigned long n = strtoul(p, &sp, 10);
        if (strncmp(sp + 1, key, kl) == 0 && sp[1 + kl] == '=') {
            *len = (size_t)(p + n - 1 - (sp + 2 + kl));
            return sp + 2 + kl;
        }
        p += n;
    }
    return NULL;
}

/* A long non-UTF-8 name, a huge file, big ids, a negative fractional mtime, an xattr with
 * binary bytes: an extended header carries them. */
static void test_extended_header(void **state)
{
    (void)state;
    char name[300];
    memset(name, 'n', sizeof(name));
    name[10] = (char)0xff;
    uint8_t xv[3] = {0, 0xff, 0x10};
    struct fs_xattr xa = {.name = "user.bin", .value = xv, .len = 3};
    const struct {
        int64_t s, ns;
        const char *want;
    } times[] = {{-2, 500000000, "-1.500000000"},
                 {-1, 500000000, "-0.500000000"},
                 {-3, 0, "-3.000000000"},
                 {5, 1, "5.000000001"}};
    for (size_t k = 0; k < sizeof(times) / sizeof(times[0]); k++) {
        FILE *f = tmpfile();
        struct tarw t;
        tarw_init(&t, fileno(f));
        struct err e = ERR_INIT;
        struct tarw_hdr h = {.name = name,
                             .name_len = sizeof(name),
                             .type = '2',
                             .mode = 0777,
                             .uid = 3000000,
                             .gid = 7,
                             .size = 0,
                             .mtime_sec = times[k].s,
                             .mtime_nsec = times[k].ns,
                             .link = "target",
                             .xattrs = &xa,
                             .nxattrs = 1};
        assert_int_equal(tarw_header(&t, &h, &e), 0);
        struct buf b = written(f);
        assert_int_equal(b.len % 512, 0);
        assert_checksum(b.data);
        assert_int_equal(b.data[156], 'x');
        size_t len;
        const char *v = pax_value(&b, "path", &len);
        assert_non_null(v);
        assert_int_equal(len, sizeof(name));
        assert_memory_equal(v, name, sizeof(name));
        assert_non_null(pax_value(&b, "hdrcharset", &len));
        v = pax_value(&b, "uid", &len);
        assert_non_null(v);
        assert_memory_equal(v, "3000000", len);
        assert_null(pax_value(&b, "gid", &len));
        v = pax_value(&b, "mtime", &len);
        assert_non_null(v);
        assert_int_equal(len, strlen(times[k].want));
        assert_memory_equal(v, times[k].want, len);
        v = pax_value(&b, "SCHILY.xattr.user.bin", &len);
        assert_non_null(v);
        assert_int_equal(len, 3);
        assert_memory_equal(v, xv, 3);
        /* the member's own header follows the records */
        const uint8_t *m = b.data + b.len - 512;
        assert_checksum(m);
        assert_int_equal(m[156], '2');
        assert_string_equal((const char *)m + 157, "target");
        buf_free(&b);
        fclose(f);
    }
}

/* An owner name that is not UTF-8 goes into a pax record with hdrcharset=BINARY (GNU tar
 * otherwise reads the record as UTF-8); a UTF-8 one needs no extended header. */
static void test_owner_names_binary(void **state)
{
    (void)state;
    const struct {
        const char *uname, *gname;
        bool binary;
    } cases[] = {
        {"cl\xednica", "staff", true}, {"ana", "gr\xfcn", true}, {"clínica", "grün", false}};
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        FILE *f = tmpfile();
        struct tarw t;
        tarw_init(&t, fileno(f));
        struct err e = ERR_INIT;
        struct tarw_hdr h = {.name = "f",
                             .name_len = 1,
                             .type = '0',
                             .mode = 0644,
                             .mtime_sec = 1,
                             .uname = cases[k].uname,
                             .gname = cases[k].gname};
        assert_int_equal(tarw_header(&t, &h, &e), 0);
        struct buf b = written(f);
        size_t len;
        if (cases[k].binary) {
            assert_int_equal(b.data[156], 'x');
            const char *v = pax_value(&b, "hdrcharset", &len);
            assert_non_null(v);
            assert_memory_equal(v, "BINARY", len);
            const char *want = str_is_utf8(cases[k].uname, strlen(cases[k].uname)) ? cases[k].gname
                                                                                   : cases[k].uname;
            v = pax_value(&b, want == cases[k].uname ? "uname" : "gname", &len);
            assert_non_null(v);
            assert_int_equal(len, strlen(want));
            assert_memory_equal(v, want, len);
        } else {
            assert_int_equal(b.len, 512); /* the member's header alone */
        }
        buf_free(&b);
        fclose(f);
    }
}

static void test_size_beyond_ustar(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    struct tarw t;
    tarw_init(&t, fileno(f));
    struct err e = ERR_INIT;
    struct tarw_hdr h = {.name = "big",
                         .name_len = 3,
                         .type = '0',
                         .mode = 0644,
                         .size = 9ull << 30,
                         .mtime_sec = 1};
    assert_int_equal(tarw_header(&t, &h, &e), 0);
    struct buf b = written(f);
    size_t len;
    const char *v = pax_value(&b, "size", &len);
    assert_non_null(v);
    assert_memory_equal(v, "9663676416", len);
    buf_free(&b);
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pax_record_lengths), cmocka_unit_test(test_plain_member),
        cmocka_unit_test(test_extended_header),    cmocka_unit_test(test_owner_names_binary),
        cmocka_unit_test(test_size_beyond_ustar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

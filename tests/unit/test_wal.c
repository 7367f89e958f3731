#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "caris/wal.h"
#include "caris/walrecv.h"
#include "caris/walwindow.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tmpdir.h"

static void parse_ok(const char *name, enum caris_wal_kind kind, uint32_t tli, uint32_t log,
                     uint32_t seg)
{
    struct err e = ERR_INIT;
    struct caris_wal_name n;
    assert_int_equal(caris_wal_name_parse(name, &n, &e), 0);
    assert_int_equal(n.kind, kind);
    assert_int_equal(n.timeline, tli);
    assert_int_equal(n.log, log);
    assert_int_equal(n.seg, seg);
}

static void parse_bad(const char *name)
{
    struct err e = ERR_INIT;
    struct caris_wal_name n;
    assert_int_equal(caris_wal_name_parse(name, &n, &e), -1);
    assert_int_equal(e.code, ERR_USAGE);
    assert_non_null(strstr(e.msg, "not a WAL file name"));
}

static void test_names(void **state)
{
    (void)state;
    parse_ok("000000010000000000000001", WAL_SEGMENT, 1, 0, 1);
    parse_ok("0000000A00000002000000FF", WAL_SEGMENT, 10, 2, 255);
    parse_ok("FFFFFFFFFFFFFFFFFFFFFFFF", WAL_SEGMENT, 0xffffffffu, 0xffffffffu, 0xffffffffu);
    parse_ok("000000020000000000000003.partial", WAL_PARTIAL, 2, 0, 3);
    parse_ok("00000002.history", WAL_HISTORY, 2, 0, 0);
    parse_ok("000000010000000000000002.00000028.backup", WAL_BACKUP_LABEL, 1, 0, 2);
    assert_string_equal(caris_wal_kind_name(WAL_BACKUP_LABEL), "backup");
}

static void test_refused(void **state)
{
    (void)state;
    parse_bad("");
    parse_bad("00000001000000000000000");   /* 23 digits */
    parse_bad("0000000100000000000000010"); /* 25 digits */
    parse_bad("00000001000000000000000a");  /* lower case: not PostgreSQL's */
    parse_bad("000000000000000000000001");  /* timeline 0 */
    parse_bad("00000000.history");
    parse_bad("0000000G0000000000000001");
    parse_bad("../00000001000000000000001");
    parse_bad("000000010000000000000001.partia");
    parse_bad("000000010000000000000001.0000002.backup");
    parse_bad("00000001.History");
    parse_bad("000000010000000000000001/");
}

/* Streamed partials have names of their own (segment, length, ".stream") that the parser of
 * PostgreSQL's names refuses: no restore_command can ask for one. */
static void test_stream_names(void **state)
{
    (void)state;
    char name[CARIS_WAL_STREAM_NAME_MAX];
    caris_wal_stream_name(1, 0x5000000, 16u << 20, 0x134438, name);
    assert_string_equal(name, "000000010000000000000005.00134438.stream");
    /* log/seg split by the segment size: 64 MiB segments, 64 per log */
    caris_wal_stream_name(3, (2ull << 32) + 5 * (64ull << 20), 64u << 20, 1, name);
    assert_string_equal(name, "000000030000000200000005.00000001.stream");
    caris_wal_stream_name(0xffffffffu, 0xffffffffull << 32 | 0xff000000u, 16u << 20,
                          (16u << 20) - 1, name);
    assert_string_equal(name, "FFFFFFFFFFFFFFFF000000FF.00FFFFFF.stream");
    parse_bad("000000010000000000000005.00134438.stream");
}

/* The segment after a segment, as the daemon's read-ahead names it: within a log, across a
 * log boundary (per_log = 4 GiB / segment size), for 16 MiB and 1 GiB segments; refused for
 * anything but a segment name and a segment size. */
static void test_next_segment(void **state)
{
    (void)state;
    char out[25];
    assert_int_equal(0, caris_wal_next_segment("000000010000000000000029", 16u << 20, out));
    assert_string_equal("00000001000000000000002A", out);
    assert_int_equal(0, caris_wal_next_segment("0000000300000002000000FF", 16u << 20, out));
    assert_string_equal("000000030000000300000000", out);
    assert_int_equal(0, caris_wal_next_segment("000000010000000000000003", 1u << 30, out));
    assert_string_equal("000000010000000100000000", out);
    assert_int_equal(0, caris_wal_next_segment("000000010000000000000FFF", 1u << 20, out));
    assert_string_equal("000000010000000100000000", out);
    /* a segment number past the last of its log is not a name PostgreSQL makes */
    assert_int_equal(-1, caris_wal_next_segment("000000010000000000000100", 16u << 20, out));
    assert_int_equal(-1, caris_wal_next_segment("00000001FFFFFFFF000000FF", 16u << 20, out));
    assert_int_equal(-1, caris_wal_next_segment("00000002.history", 16u << 20, out));
    assert_int_equal(-1,
                     caris_wal_next_segment("000000010000000000000001.partial", 16u << 20, out));
    assert_int_equal(-1, caris_wal_next_segment("000000010000000000000001", 3u << 20, out));
    assert_int_equal(-1, caris_wal_next_segment("000000010000000000000001", 1u << 19, out));
}

static void test_flush_seconds(void **state)
{
    (void)state;
    unsigned v = 0;
    struct err e = ERR_INIT;
    assert_int_equal(caris_wal_flush_seconds_parse("1", &v, &e), 0);
    assert_int_equal(v, 1);
    assert_int_equal(caris_wal_flush_seconds_parse("3600", &v, &e), 0);
    assert_int_equal(v, 3600);
    const char *bad[] = {"0", "3601", "-1", "+5", "5s", "", " 5", "99999999999999999999", NULL};
    for (size_t i = 0; bad[i]; i++) {
        struct err e2 = ERR_INIT;
        v = 7;
        assert_int_equal(caris_wal_flush_seconds_parse(bad[i], &v, &e2), -1);
        assert_int_equal(e2.code, ERR_USAGE);
        assert_int_equal(v, 7);
    }
}

/* ---- the WAL a base backup needs (caris_wal_base_records) ------------------------------ */

#define SEG (1u << 20) /* the smallest segment size, to keep the archive small */

/* Archives name with len bytes of content derived from seed (a file written under dir). */
static void push(struct repo *r, const char *dir, const char *name, size_t len, unsigned seed)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (strstr(name, ".history")) {
        /* a history must read as one (wal push refuses one that does not): timeline N
         * branched off N-1 in segment 5, the earlier ones in their order */
        unsigned tli = (unsigned)strtoul(name, NULL, 16);
        for (unsigned t = 1; t < tli; t++)
            fprintf(f, "%u\t0/%X\tno recovery target specified (%u)\n", t, 0x5000000u + t, seed);
    } else {
        for (size_t i = 0; i < len; i++)
            fputc((int)((i * 2654435761u + seed * 40503u) >> 13) & 0xff, f);
    }
    assert_int_equal(fclose(f), 0);
    struct err e = ERR_INIT;
    struct caris_wal_push_result res;
    if (caris_wal_push(r, path, NULL, &res, &e) != 0)
        fail_msg("push %s: %s", name, e.msg);
    unlink(path);
}

/* The first len bytes of segment segno (timeline tli) as a streamed partial. */
static void push_stream(struct repo *r, const char *dir, uint32_t tli, uint64_t segno, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/partial", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < len; i++)
        fputc((int)(i * 7 + segno) & 0xff, f);
    assert_int_equal(fclose(f), 0);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct err e = ERR_INIT;
    struct caris_wal_push_result res;
    if (caris_wal_push_stream_fd(r, fd, tli, segno * SEG, SEG, NULL, NULL, &res, &e) != 0)
        fail_msg("push stream: %s", e.msg);
    close(fd);
    unlink(path);
}

/* The names caris_wal_base_records gives for a backup from start to stop on timeline tli, one
 * string: "name,name,...|missing,missing" (records in name order). */
static char *base_wal(struct repo *r, uint32_t tli, const char *start, const char *stop,
                      bool served_only)
{
    json_t *s =
        json_pack("{s:s, s:{s:s, s:s, s:i, s:i}}", "id", "caris_full_x", "physical", "start_lsn",
                  start, "stop_lsn", stop, "timeline", (int)tli, "wal_segment_size", (int)SEG);
    if (tli > 100) { /* 100 * start timeline + stop timeline */
        json_t *ph = json_object_get(s, "physical");
        json_object_set_new(ph, "start_timeline", json_integer(tli / 100));
        json_object_set_new(ph, "stop_timeline", json_integer(tli % 100));
        json_object_set_new(ph, "timeline", json_integer(tli % 100));
    }
    struct caris_base_wal w;
    struct err e = ERR_INIT;
    if (caris_wal_base_records(r, s, served_only, &w, &e) != 0)
        fail_msg("caris_wal_base_records: %s", e.msg);
    json_decref(s);
    const char *names[32];
    size_t n = 0, i;
    json_t *x;
    json_array_foreach(w.records, i, x)
    {
        assert_true(n < 32);
        names[n++] = json_string_value(json_object_get(json_array_get(x, 1), "name"));
    }
    for (size_t a = 1; a < n; a++) /* insertion sort: a few names */
        for (size_t b = a; b > 0 && strcmp(names[b - 1], names[b]) > 0; b--) {
            const char *t = names[b];
            names[b] = names[b - 1];
            names[b - 1] = t;
        }
    char *out = calloc(1, 4096);
    for (i = 0; i < n; i++)
        snprintf(out + strlen(out), 4096 - strlen(out), "%s%s", i ? "," : "", names[i]);
    strcat(out, "|");
    json_array_foreach(w.missing, i, x)
        snprintf(out + strlen(out), 4096 - strlen(out), "%s%s", i ? "," : "", json_string_value(x));
    caris_base_wal_free(&w);
    return out;
}

static void expect_base_wal(struct repo *r, uint32_t tli, const char *start, const char *stop,
                            bool served_only, const char *want)
{
    char *got = base_wal(r, tli, start, stop, served_only);
    if (strcmp(got, want) != 0)
        fail_msg("%s..%s (tli %u, served_only %d):\n  got  %s\n  want %s", start, stop, tli,
                 served_only, got, want);
    free(got);
}

static void test_base_records(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char repo_dir[512];
    snprintf(repo_dir, sizeof(repo_dir), "%s/repo", dir);
    struct err e = ERR_INIT;
    struct repo_init_opts io = {.kdf_ops = 1, .kdf_mem = 8u << 20};
    struct repo *r = repo_init(repo_dir, "pw-base-records-0123456789abcdef", &io, &e);
    if (!r)
        fail_msg("repo_init: %s", e.msg);
    /* a backup from 0/200028 to 0/4000F0 (1 MiB segments: 2, 3, 4) on timeline 1 */
    push(r, dir, "000000010000000000000001", SEG, 1);
    push(r, dir, "000000010000000000000002", SEG, 2);
    push(r, dir, "000000010000000000000002.00000028.backup", 300, 3);
    push(r, dir, "000000010000000000000005", SEG, 5);
    /* 3 and 4 not archived */
    expect_base_wal(r, 1, "0/200028", "0/4000F0", true,
                    "000000010000000000000002|000000010000000000000003,000000010000000000000004");
    expect_base_wal(r, 1, "0/200028", "0/4000F0", false,
                    "000000010000000000000002,000000010000000000000002.00000028.backup|"
                    "000000010000000000000003,000000010000000000000004");
    push(r, dir, "000000010000000000000003", SEG, 3);
    /* 4 only as partials: one ending before the stop LSN serves nothing, a longer one that
     * reaches it serves the last segment */
    push_stream(r, dir, 1, 4, 0x80);
    expect_base_wal(r, 1, "0/200028", "0/4000F0", true,
                    "000000010000000000000002,000000010000000000000003|000000010000000000000004");
    push_stream(r, dir, 1, 4, 0x100);
    expect_base_wal(r, 1, "0/200028", "0/4000F0", true,
                    "000000010000000000000002,000000010000000000000003,"
                    "000000010000000000000004.00000100.stream|");
    /* a partial that ends exactly at the stop LSN serves; of two that reach it, the longer */
    expect_base_wal(r, 1, "0/200028", "0/400100", true,
                    "000000010000000000000002,000000010000000000000003,"
                    "000000010000000000000004.00000100.stream|");
    expect_base_wal(r, 1, "0/200028", "0/400080", true,
                    "000000010000000000000002,000000010000000000000003,"
                    "000000010000000000000004.00000100.stream|");
    expect_base_wal(r, 1, "0/200028", "0/400101", true,
                    "000000010000000000000002,000000010000000000000003|000000010000000000000004");
    /* all: the backup label and the shorter partial too */
    expect_base_wal(r, 1, "0/200028", "0/4000F0", false,
                    "000000010000000000000002,000000010000000000000002.00000028.backup,"
                    "000000010000000000000003,000000010000000000000004.00000080.stream,"
                    "000000010000000000000004.00000100.stream|");
    /* a partial of a segment before the last serves nothing */
    expect_base_wal(r, 1, "0/200028", "0/5000F0", true,
                    "000000010000000000000002,000000010000000000000003,"
                    "000000010000000000000005|000000010000000000000004");
    /* the whole segment supersedes the partials */
    push(r, dir, "000000010000000000000004", SEG, 4);
    expect_base_wal(r, 1, "0/200028", "0/4000F0", true,
                    "000000010000000000000002,000000010000000000000003,000000010000000000000004|");
    /* a stop LSN at a segment's start needs nothing of that segment */
    expect_base_wal(r, 1, "0/200028", "0/400000", true,
                    "000000010000000000000002,000000010000000000000003|");
    /* timeline 2: its history and the earlier ones, not a later one's; its own segments */
    push(r, dir, "00000002.history", 40, 6);
    push(r, dir, "00000003.history", 80, 7);
    push(r, dir, "000000020000000000000005", SEG, 8);
    expect_base_wal(r, 2, "0/500028", "0/5000F0", true,
                    "00000002.history,000000020000000000000005|");
    expect_base_wal(r, 1, "0/500028", "0/5000F0", true, "000000010000000000000005|");
    /* started on timeline 1, ended on 2 (a standby that followed a promotion): either serves,
     * and timeline 2's history is read */
    expect_base_wal(r, 102, "0/400028", "0/5000F0", true,
                    "000000010000000000000004,000000010000000000000005,00000002.history,"
                    "000000020000000000000005|");
    /* a range of over 2^20 segments is not believed */
    json_t *far =
        json_pack("{s:s, s:{s:s, s:s, s:i, s:i}}", "id", "caris_full_w", "physical", "start_lsn",
                  "0/200028", "stop_lsn", "FFFF/0", "timeline", 1, "wal_segment_size", (int)SEG);
    struct caris_base_wal fw;
    assert_int_equal(caris_wal_base_records(r, far, true, &fw, &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    json_decref(far);
    err_clear(&e);
    /* a summary that does not say which WAL it needs */
    json_t *bad = json_pack("{s:s, s:{s:s, s:i, s:i}}", "id", "caris_full_y", "physical",
                            "start_lsn", "0/200028", "timeline", 1, "wal_segment_size", (int)SEG);
    struct caris_base_wal w;
    assert_int_equal(caris_wal_base_records(r, bad, true, &w, &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    assert_non_null(strstr(e.msg, "caris_full_y does not record which WAL it needs"));
    json_decref(bad);
    /* not a physical backup: nothing */
    json_t *logical = json_pack("{s:s}", "id", "caris_full_z");
    assert_int_equal(caris_wal_base_records(r, logical, true, &w, &e), 0);
    assert_int_equal(json_array_size(w.records) + json_array_size(w.missing), 0);
    caris_base_wal_free(&w);
    json_decref(logical);
    repo_close(r);
    tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_stream_names), cmocka_unit_test(test_flush_seconds),
        cmocka_unit_test(test_next_segment), cmocka_unit_test(test_base_records)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

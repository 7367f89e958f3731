/* The WAL archive's ranges, gaps, recovery window and retention rule (caris/walwindow.h),
 * on synthetic WAL records: no repository needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "caris/walwindow.h"

#define SEG16 (16ll << 20)

/* A record as caris_wal_list gives it, of a segment of 16 MiB (log/seg from segno). */
static json_t *seg_rec(const char *kind, uint32_t tli, uint64_t segno, const char *pushed)
{
    char name[48];
    unsigned log = (unsigned)(segno / 256), seg = (unsigned)(segno % 256);
    snprintf(name, sizeof(name), "%08X%08X%08X%s", tli, log, seg,
             strcmp(kind, "partial") == 0 ? ".partial" : "");
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:s}", "name", name, "kind", kind, "timeline",
                     (json_int_t)tli, "log", (json_int_t)log, "seg", (json_int_t)seg, "size",
                     (json_int_t)SEG16, "pushed", pushed);
}

static json_t *hist_rec(uint32_t tli)
{
    char name[32];
    snprintf(name, sizeof(name), "%08X.history", tli);
    return json_pack("{s:s, s:s, s:I, s:I}", "name", name, "kind", "history", "timeline",
                     (json_int_t)tli, "size", (json_int_t)42);
}

static void test_lsn(void **state)
{
    (void)state;
    uint64_t l;
    assert_int_equal(caris_lsn_parse("0/1000000", &l), 0);
    assert_true(l == 0x1000000);
    assert_int_equal(caris_lsn_parse("A/FF", &l), 0);
    assert_true(l == (0xAull << 32 | 0xFF));
    assert_int_equal(caris_lsn_parse("1/", &l), -1);
    assert_int_equal(caris_lsn_parse("/1", &l), -1);
    assert_int_equal(caris_lsn_parse("x/1", &l), -1);
    assert_int_equal(caris_lsn_parse("123456789/1", &l), -1);
    char t[32];
    caris_lsn_format(0x100000028ull, t, sizeof(t));
    assert_string_equal(t, "1/28");
}

static void test_history_parse(void **state)
{
    (void)state;
    const char *text = "1\t0/3000000\tno recovery target specified\n\n"
                       "# comment\n2\t0/5000028\tat restore point \"x\"\n";
    struct caris_wal_switch *sw;
    size_t n;
    struct err e = ERR_INIT;
    assert_int_equal(caris_wal_history_parse(text, strlen(text), "00000003.history", &sw, &n, &e),
                     0);
    assert_int_equal(n, 2);
    assert_int_equal(sw[1].parent, 2);
    assert_true(sw[1].switch_lsn == 0x5000028);
    free(sw);
    const char *bad = "1\tnot-an-lsn\treason\n";
    assert_int_equal(caris_wal_history_parse(bad, strlen(bad), "00000002.history", &sw, &n, &e),
                     -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    assert_non_null(strstr(e.msg, "00000002.history"));
}

/* Retention: nothing is dropped without a base backup; with some, exactly the segments that
 * end at or before the oldest one's start. */
static void test_retention(void **state)
{
    (void)state;
    assert_true(caris_wal_keep_from(NULL, 0) == 0);
    struct caris_wal_base b[2] = {{.timeline = 1, .start_lsn = 0x5000028},
                                  {.timeline = 1, .start_lsn = 0x9000000}};
    uint64_t keep = caris_wal_keep_from(b, 2);
    assert_true(keep == 0x5000028);
    json_t *s4 = seg_rec("segment", 1, 4, "t"), *s5 = seg_rec("segment", 1, 5, "t");
    json_t *p4 = seg_rec("partial", 1, 4, "t"), *h = hist_rec(2);
    /* no base backup: keep everything */
    assert_true(caris_wal_retain(s4, 0, SEG16));
    /* segment 4 ends at 0/5000000, before the start 0/5000028: dropped; 5 holds it: kept */
    assert_false(caris_wal_retain(s4, keep, SEG16));
    assert_false(caris_wal_retain(p4, keep, SEG16));
    assert_true(caris_wal_retain(s5, keep, SEG16));
    /* a start exactly at a segment's end: that segment is not needed */
    assert_false(caris_wal_retain(s4, 0x5000000, SEG16));
    assert_true(caris_wal_retain(s5, 0x5000000, SEG16));
    /* .history files always; everything when the segment size is unknown */
    assert_true(caris_wal_retain(h, keep, SEG16));
    assert_true(caris_wal_retain(s4, keep, 0));
    json_decref(s4);
    json_decref(s5);
    json_decref(p4);
    json_decref(h);
}

static void test_segment_size(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    json_t *recs = json_pack("[o, o]", seg_rec("segment", 1, 1, "t"), hist_rec(2));
    assert_true(caris_wal_segment_size(recs, &e) == SEG16);
    json_array_append_new(recs, json_pack("{s:s, s:I, s:I}", "kind", "segment", "timeline", 1,
                                          "size", (json_int_t)(1 << 20)));
    assert_int_equal(caris_wal_segment_size(recs, &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    json_decref(recs);
}

/* A gap between segments of one timeline; the range; the window it breaks. */
static void test_gap_in_timeline(void **state)
{
    (void)state;
    json_t *recs = json_array();
    for (uint64_t s = 1; s <= 6; s++)
        if (s != 4)
            json_array_append_new(recs, seg_rec("segment", 1, s, "2026-11-30T10:00:00.000Z"));
    struct caris_wal_base b[2] = {
        {.id = "old", .timeline = 1, .start_lsn = 0x1000028, .end_time = 1000},
        {.id = "new", .timeline = 1, .start_lsn = 0x5000028, .end_time = 2000}};
    json_t *hist = json_object();
    json_t *tls = caris_wal_timelines(recs, hist, SEG16, b, 2);
    assert_int_equal(json_array_size(tls), 1);
    json_t *t = json_array_get(tls, 0);
    assert_string_equal(json_string_value(json_object_get(t, "first")), "000000010000000000000001");
    assert_string_equal(json_string_value(json_object_get(t, "last")), "000000010000000000000006");
    assert_string_equal(json_string_value(json_object_get(t, "start_lsn")), "0/1000000");
    assert_string_equal(json_string_value(json_object_get(t, "end_lsn")), "0/7000000");
    assert_int_equal(json_integer_value(json_object_get(t, "segments")), 5);
    json_t *gaps = json_object_get(t, "gaps");
    assert_int_equal(json_array_size(gaps), 1);
    json_t *g = json_array_get(gaps, 0);
    assert_string_equal(json_string_value(json_object_get(g, "from")), "000000010000000000000004");
    assert_string_equal(json_string_value(json_object_get(g, "to")), "000000010000000000000004");
    assert_string_equal(json_string_value(json_object_get(g, "start_lsn")), "0/4000000");
    /* it cuts short the recovery of the base that starts before it, not of the later one */
    assert_int_equal(json_array_size(json_object_get(g, "backups")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(g, "backups"), 0)), "old");
    json_t *w = caris_wal_recovery_window(tls, b, 2);
    /* the window starts at the end of the base after the gap */
    char want[40];
    time_format_iso(2000ll * 1000000000, want, sizeof(want));
    assert_string_equal(json_string_value(json_object_get(w, "earliest")), want);
    assert_string_equal(json_string_value(json_object_get(w, "latest_lsn")), "0/7000000");
    assert_int_equal(json_array_size(json_object_get(w, "backups_cut_short")), 1);
    json_decref(w);
    /* without base backups there is no window, and it says why */
    w = caris_wal_recovery_window(tls, NULL, 0);
    assert_true(json_is_null(json_object_get(w, "earliest")));
    assert_non_null(strstr(json_string_value(json_object_get(w, "reason")), "no physical base"));
    json_decref(w);
    json_decref(tls);
    /* with segment 4 back: no gap, and both bases recover to the present */
    json_array_append_new(recs, seg_rec("segment", 1, 4, "2026-11-30T10:00:00.000Z"));
    tls = caris_wal_timelines(recs, hist, SEG16, b, 2);
    assert_int_equal(json_array_size(json_object_get(json_array_get(tls, 0), "gaps")), 0);
    w = caris_wal_recovery_window(tls, b, 2);
    time_format_iso(1000ll * 1000000000, want, sizeof(want));
    assert_string_equal(json_string_value(json_object_get(w, "earliest")), want);
    json_decref(w);
    json_decref(tls);
    json_decref(hist);
    json_decref(recs);
}

/* Timeline 2 branched off 1 at 0/5000028 (in segment 5): timeline 1 is needed up to 4, 2 from
 * 5 on. Segments of 1 after the switch (it ran on before a PITR chose an earlier point) are no
 * gap; a missing first segment of 2 is. */
static void test_timeline_switch(void **state)
{
    (void)state;
    json_t *recs = json_array();
    for (uint64_t s = 1; s <= 7; s++)
        json_array_append_new(recs, seg_rec("segment", 1, s, "a"));
    json_array_append_new(recs, hist_rec(2));
    for (uint64_t s = 5; s <= 8; s++)
        json_array_append_new(recs, seg_rec("segment", 2, s, "b"));
    json_t *hist = json_pack("{s:[{s:i, s:s}]}", "2", "parent", 1, "switch_lsn", "0/5000028");
    json_t *tls = caris_wal_timelines(recs, hist, SEG16, NULL, 0);
    assert_int_equal(json_array_size(tls), 2);
    json_t *t2 = json_array_get(tls, 1);
    assert_int_equal(json_integer_value(json_object_get(t2, "parent")), 1);
    assert_string_equal(json_string_value(json_object_get(t2, "switch_lsn")), "0/5000028");
    assert_int_equal(json_array_size(json_object_get(json_array_get(tls, 0), "gaps")), 0);
    assert_int_equal(json_array_size(json_object_get(t2, "gaps")), 0);
    json_decref(tls);

    /* timeline 2 starts at 6: segment 5 of timeline 2 is missing */
    json_array_remove(recs, 8); /* 000000020000000000000005 */
    tls = caris_wal_timelines(recs, hist, SEG16, NULL, 0);
    json_t *gaps = json_object_get(json_array_get(tls, 1), "gaps");
    assert_int_equal(json_array_size(gaps), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(gaps, 0), "from")),
                        "000000020000000000000005");
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(gaps, 0), "reason")),
                           "after the switch from timeline 1"));
    json_decref(tls);

    /* timeline 1 ends at 3: segment 4 of timeline 1 is missing before the switch */
    json_array_append_new(recs, seg_rec("segment", 2, 5, "b"));
    for (int k = 0; k < 4; k++)
        json_array_remove(recs, 3); /* segments 4..7 of timeline 1 */
    tls = caris_wal_timelines(recs, hist, SEG16, NULL, 0);
    gaps = json_object_get(json_array_get(tls, 1), "gaps");
    assert_int_equal(json_array_size(gaps), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(gaps, 0), "from")),
                        "000000010000000000000004");
    assert_string_equal(json_string_value(json_object_get(json_array_get(gaps, 0), "to")),
                        "000000010000000000000004");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(gaps, 0), "timeline")), 1);
    json_decref(tls);
    json_decref(hist);
    json_decref(recs);
}

/* recovery_target_timeline: the latest timeline, and which base backups lie on a target's
 * history (timeline 3 branched from 2 at 0/9000000, 2 from 1 at 0/5000028) */
static void test_timeline_reaches(void **state)
{
    (void)state;
    json_t *recs = json_array();
    for (uint64_t s = 1; s <= 7; s++)
        json_array_append_new(recs, seg_rec("segment", 1, s, "a"));
    json_array_append_new(recs, hist_rec(2));
    json_array_append_new(recs, hist_rec(3));
    for (uint64_t s = 5; s <= 9; s++)
        json_array_append_new(recs, seg_rec("segment", 2, s, "b"));
    json_t *hist = json_pack("{s:[{s:i, s:s}], s:[{s:i, s:s}, {s:i, s:s}]}", "2", "parent", 1,
                             "switch_lsn", "0/5000028", "3", "parent", 1, "switch_lsn", "0/5000028",
                             "parent", 2, "switch_lsn", "0/9000000");
    json_t *tls = caris_wal_timelines(recs, hist, SEG16, NULL, 0);
    /* timeline 3 has a .history file and no segment yet: still the latest */
    assert_int_equal(caris_wal_latest_timeline(tls), 3);
    assert_true(caris_wal_timeline_reaches(tls, 3, 0x9800000, 3));
    assert_true(caris_wal_timeline_reaches(tls, 2, 0x6000000, 3));
    assert_true(caris_wal_timeline_reaches(tls, 2, 0x9000000, 3));  /* ends at the switch */
    assert_false(caris_wal_timeline_reaches(tls, 2, 0x9000001, 3)); /* ends after it */
    assert_true(caris_wal_timeline_reaches(tls, 1, 0x2000000, 3));
    /* a base on timeline 1 taken after the switch to 2 (the abandoned timeline) */
    assert_false(caris_wal_timeline_reaches(tls, 1, 0x6000000, 3));
    assert_false(caris_wal_timeline_reaches(tls, 1, 0x6000000, 2));
    assert_true(caris_wal_timeline_reaches(tls, 1, 0x6000000, 1));
    /* a child never reaches its parent's later timeline, nor an unknown one */
    assert_false(caris_wal_timeline_reaches(tls, 3, 0x9800000, 2));
    assert_false(caris_wal_timeline_reaches(tls, 1, 0x2000000, 4));
    json_decref(tls);
    tls = json_array();
    assert_int_equal(caris_wal_latest_timeline(tls), 0);
    json_decref(tls);
    json_decref(hist);
    json_decref(recs);
}

/* The gap a recovery runs into: timeline 1 misses segments 3 and 6, timeline 2 (branched off
 * at 0/5000028, in segment 5) misses 7. Recovery to timeline 2 reads timeline 1 only up to
 * segment 4: its missing 6 does not count there, but does for recovery on timeline 1. */
static void test_recovery_gap(void **state)
{
    (void)state;
    json_t *recs = json_array();
    for (uint64_t s = 1; s <= 7; s++)
        if (s != 3 && s != 6)
            json_array_append_new(recs, seg_rec("segment", 1, s, "a"));
    json_array_append_new(recs, hist_rec(2));
    for (uint64_t s = 5; s <= 8; s++)
        if (s != 7)
            json_array_append_new(recs, seg_rec("segment", 2, s, "b"));
    json_t *hist = json_pack("{s:[{s:i, s:s}]}", "2", "parent", 1, "switch_lsn", "0/5000028");
    json_t *tls = caris_wal_timelines(recs, hist, SEG16, NULL, 0);
    json_t *g = caris_wal_recovery_gap(tls, SEG16, 1, 0x1000028, 2);
    assert_non_null(g);
    assert_string_equal(json_string_value(json_object_get(g, "from")), "000000010000000000000003");
    assert_string_equal(json_string_value(json_object_get(g, "start_lsn")), "0/3000000");
    /* a base after segment 3: timeline 2's missing 7, not timeline 1's 6 (after the switch) */
    g = caris_wal_recovery_gap(tls, SEG16, 1, 0x4000028, 2);
    assert_non_null(g);
    assert_string_equal(json_string_value(json_object_get(g, "from")), "000000020000000000000007");
    /* staying on timeline 1 (--timeline current, or 1): its missing 6 */
    g = caris_wal_recovery_gap(tls, SEG16, 1, 0x4000028, 0);
    assert_non_null(g);
    assert_string_equal(json_string_value(json_object_get(g, "from")), "000000010000000000000006");
    g = caris_wal_recovery_gap(tls, SEG16, 1, 0x4000028, 1);
    assert_non_null(g);
    assert_string_equal(json_string_value(json_object_get(g, "from")), "000000010000000000000006");
    /* a base on timeline 2 after the gap; a history that does not lead to the base; no size */
    assert_null(caris_wal_recovery_gap(tls, SEG16, 2, 0x8000028, 2));
    assert_null(caris_wal_recovery_gap(tls, SEG16, 1, 0x1000028, 3));
    assert_null(caris_wal_recovery_gap(tls, 0, 1, 0x1000028, 2));
    json_decref(tls);
    json_decref(hist);
    json_decref(recs);
}

/* Timeline 1's last segments (4 and 5) never reached the archive before timeline 2 branched
 * off in segment 6 (a failover with the old primary's archiver behind). The gap is listed with
 * timeline 2 but lies on timeline 1, which a recovery to timeline 2 reads up to segment 5:
 * found. A base after the gap, or one on timeline 2, does not run into it. */
static void test_recovery_gap_before_switch(void **state)
{
    (void)state;
    json_t *recs = json_array();
    for (uint64_t s = 1; s <= 3; s++)
        json_array_append_new(recs, seg_rec("segment", 1, s, "a"));
    json_array_append_new(recs, hist_rec(2));
    for (uint64_t s = 6; s <= 8; s++)
        json_array_append_new(recs, seg_rec("segment", 2, s, "b"));
    json_t *hist = json_pack("{s:[{s:i, s:s}]}", "2", "parent", 1, "switch_lsn", "0/60000A0");
    json_t *tls = caris_wal_timelines(recs, hist, SEG16, NULL, 0);
    json_t *g = caris_wal_recovery_gap(tls, SEG16, 1, 0x1000028, 2);
    assert_non_null(g);
    assert_string_equal(json_string_value(json_object_get(g, "from")), "000000010000000000000004");
    assert_string_equal(json_string_value(json_object_get(g, "to")), "000000010000000000000005");
    assert_string_equal(json_string_value(json_object_get(g, "start_lsn")), "0/4000000");
    /* the latest timeline (target 0 follows the base's own: timeline 1) also ends there */
    g = caris_wal_recovery_gap(tls, SEG16, 1, 0x1000028, 0);
    assert_non_null(g);
    assert_string_equal(json_string_value(json_object_get(g, "from")), "000000010000000000000004");
    assert_null(caris_wal_recovery_gap(tls, SEG16, 2, 0x6000100, 2));
    json_decref(tls);
    json_decref(hist);
    json_decref(recs);
}

/* A base backup's own WAL outside the archived stretch of its timeline (segments 3..6 of
 * timeline 1 archived): before it, after it, on a timeline with no segment; inside it none
 * (holes there are gaps). */
static void test_base_unarchived(void **state)
{
    (void)state;
    json_t *recs = json_array();
    for (uint64_t s = 3; s <= 6; s++)
        json_array_append_new(recs, seg_rec("segment", 1, s, "a"));
    json_t *hist = json_object();
    json_t *tls = caris_wal_timelines(recs, hist, SEG16, NULL, 0);
    assert_null(caris_wal_base_unarchived(tls, SEG16, 1, 0x3000028, 0x6000100));
    assert_null(
        caris_wal_base_unarchived(tls, SEG16, 1, 0x4000028, 0x7000000)); /* ends at 7's start */
    json_t *u = caris_wal_base_unarchived(tls, SEG16, 1, 0x6000028, 0x7000100);
    assert_non_null(u);
    assert_string_equal(json_string_value(json_object_get(u, "from")), "000000010000000000000007");
    assert_string_equal(json_string_value(json_object_get(u, "to")), "000000010000000000000007");
    assert_int_equal(json_integer_value(json_object_get(u, "segments")), 1);
    json_decref(u);
    u = caris_wal_base_unarchived(tls, SEG16, 1, 0x1000028, 0x3000100);
    assert_non_null(u);
    assert_string_equal(json_string_value(json_object_get(u, "from")), "000000010000000000000001");
    assert_string_equal(json_string_value(json_object_get(u, "to")), "000000010000000000000002");
    assert_string_equal(json_string_value(json_object_get(u, "start_lsn")), "0/1000000");
    json_decref(u);
    u = caris_wal_base_unarchived(tls, SEG16, 2, 0x9000028, 0xA000100);
    assert_non_null(u);
    assert_string_equal(json_string_value(json_object_get(u, "from")), "000000020000000000000009");
    assert_int_equal(json_integer_value(json_object_get(u, "segments")), 2);
    json_decref(u);
    assert_null(caris_wal_base_unarchived(tls, 0, 1, 0x1000028, 0x3000100));
    json_decref(tls);
    json_decref(hist);
    json_decref(recs);
}

static void test_bases_from_snapshots(void **state)
{
    (void)state;
    json_t *snaps = json_pack("[{s:s, s:s}, {s:s, s:s, s:s, s:i, s:s, s:s}, {s:s, s:s, s:s, s:i}]",
                              "id", "logical", "kind", "database", "id", "phys", "method",
                              "physical", "start_lsn", "0/5000028", "timeline", 2, "stop_lsn",
                              "0/5000100", "time", "2026-11-30T10:00:00.000Z", "id", "bad",
                              "method", "physical", "start_lsn", "nope", "timeline", 1);
    struct caris_wal_base *b;
    const char *unreadable = "x";
    size_t n = caris_wal_bases_from_snapshots(snaps, &b, &unreadable);
    assert_int_equal(n, 1);
    /* the physical backup without a readable position is named (prune refuses on it) */
    assert_non_null(unreadable);
    assert_string_equal(unreadable, "bad");
    assert_string_equal(b[0].id, "phys");
    assert_int_equal(b[0].timeline, 2);
    assert_true(b[0].start_lsn == 0x5000028);
    assert_true(b[0].end_lsn == 0x5000100);
    assert_true(b[0].end_time > 0);
    free(b);
    /* none unreadable: NULL; a logical backup without a position is not a base backup */
    json_array_remove(snaps, 2);
    n = caris_wal_bases_from_snapshots(snaps, &b, &unreadable);
    assert_int_equal(n, 1);
    assert_null(unreadable);
    free(b);
    json_decref(snaps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lsn),
        cmocka_unit_test(test_history_parse),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_segment_size),
        cmocka_unit_test(test_gap_in_timeline),
        cmocka_unit_test(test_timeline_switch),
        cmocka_unit_test(test_timeline_reaches),
        cmocka_unit_test(test_recovery_gap),
        cmocka_unit_test(test_recovery_gap_before_switch),
        cmocka_unit_test(test_base_unarchived),
        cmocka_unit_test(test_bases_from_snapshots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Retention decisions (caris_retention_decide) against kept sets worked out by hand below,
 * over 14 months of irregular backups: gaps, several a day, both changes of daylight-saving
 * time in Europe/Berlin, and ISO weeks that span two years (2024-12-30 .. 2025-01-05 is
 * 2025-W01; 2025-12-29 .. 2026-01-04 is 2026-W01). Two groups at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "caris/backup.h"
#include "caris/core.h"
#include "caris/retention.h"

/* Group A: the comments give the Berlin local time where it differs in date from UTC. */
static const struct {
    const char *id, *utc;
    size_t group;
} TIMELINE[] = {
    {"a13", "2025-10-26T01:30:00Z", 0}, /* 02:30 CET, after the clocks went back */
    {"b2", "2025-06-01T01:00:00Z", 1},
    {"a01", "2024-11-15T10:00:00Z", 0},
    {"a02", "2024-12-20T10:00:00Z", 0},
    {"a03", "2024-12-30T22:30:00Z", 0}, /* Mon 2024-12-30 23:30: ISO 2025-W01 */
    {"a04", "2024-12-31T23:30:00Z", 0}, /* Berlin: 2025-01-01 00:30 (UTC: still 2024) */
    {"a05", "2025-01-05T12:00:00Z", 0}, /* Sun, 2025-W01 */
    {"a06", "2025-01-06T12:00:00Z", 0}, /* Mon, 2025-W02 */
    {"a07", "2025-02-10T12:00:00Z", 0},
    {"a08", "2025-03-30T00:30:00Z", 0}, /* 01:30 CET, just before the clocks went forward */
    {"a09", "2025-03-30T22:30:00Z", 0}, /* Berlin: 2025-03-31 00:30 CEST */
    {"a10", "2025-05-15T10:00:00Z", 0},
    {"b1", "2025-06-01T00:00:00Z", 1},
    {"a11", "2025-08-01T10:00:00Z", 0},
    {"a12", "2025-10-25T23:30:00Z", 0}, /* Berlin: 2025-10-26 01:30 CEST */
    {"a14", "2025-11-20T10:00:00Z", 0},
    {"a15", "2025-12-28T10:00:00Z", 0}, /* Sun, 2025-W52 */
    {"a16", "2025-12-29T10:00:00Z", 0}, /* Mon, 2026-W01 */
    {"a17", "2026-01-01T08:00:00Z", 0},
    {"a18", "2026-01-03T09:00:00Z", 0},
    {"a19", "2026-01-03T18:00:00Z", 0},
    {"a20", "2026-01-05T07:00:00Z", 0}, /* Mon, 2026-W02 */
    {"a21", "2026-01-07T07:00:00Z", 0},
    {"b3", "2025-06-02T00:00:00Z", 1},
    {"a22", "2026-01-08T07:00:00Z", 0},
    {"a23", "2026-01-08T12:00:00Z", 0},
    {"a24", "2026-01-08T23:30:00Z", 0}, /* Berlin: 2026-01-09 00:30 */
    {"a25", "2026-01-10T06:00:00Z", 0}, /* the newest of group A */
};
#define N (sizeof(TIMELINE) / sizeof(TIMELINE[0]))

/* Runs the decision and compares the kept ids with want (space-separated, any order). */
static void expect_kept(const struct caris_retention_policy *p, const char *tz, const char *want,
                        const char *what)
{
    struct caris_retention_item items[N];
    for (size_t i = 0; i < N; i++) {
        items[i].id = TIMELINE[i].id;
        items[i].group = TIMELINE[i].group;
        items[i].damaged = false;
        items[i].removed = false;
        assert_int_equal(time_parse_iso(TIMELINE[i].utc, &items[i].time_ns), 0);
    }
    struct err e = ERR_INIT;
    if (caris_retention_decide(p, tz, time_now_ns(), items, N, &e) != 0)
        fail_msg("%s: %s", what, e.msg);
    char got[512] = "", exp[512];
    snprintf(exp, sizeof(exp), " %s ", want);
    bool ok = true;
    size_t nwant = 0;
    for (const char *s = want; *s; s++)
        nwant += *s != ' ' && (s == want || s[-1] == ' ');
    size_t nkept = 0;
    for (size_t i = 0; i < N; i++) {
        char needle[16];
        snprintf(needle, sizeof(needle), " %s ", items[i].id);
        bool wanted = strstr(exp, needle) != NULL;
        if (items[i].keep) {
            nkept++;
            size_t l = strlen(got);
            snprintf(got + l, sizeof(got) - l, "%s ", items[i].id);
        }
        if (items[i].keep != wanted)
            ok = false;
        /* a kept item says why; a removed one has no reason */
        assert_true(items[i].keep == (items[i].reasons != 0));
    }
    if (!ok || nkept != nwant)
        fail_msg("%s:\n  want %s\n  got  %s", what, want, got);
}

static void test_default_policy_berlin(void **state)
{
    (void)state;
    struct caris_retention_policy p = {.daily = 7, .weekly = 4, .monthly = 12};
    /* daily: Jan 10, 9, 8 (a23: a24 is Jan 9 in Berlin), 7, 5, 3 (a19), 1
     * weekly: 2026-W02 a25, 2026-W01 a19, 2025-W52 a15, 2025-W47 a14
     * monthly (11 months have backups): 2026-01 a25, 2025-12 a16, 11 a14, 10 a13, 08 a11,
     *   05 a10, 03 a09, 02 a07, 01 a06, 2024-12 a03 (a04 is January in Berlin), 11 a01
     * group B: daily b3, b2 (Jun 2, Jun 1); weekly and monthly b3 */
    expect_kept(&p, "Europe/Berlin",
                "a01 a03 a06 a07 a09 a10 a11 a13 a14 a15 a16 a17 a19 a20 a21 a23 a24 a25 b2 b3",
                "daily 7, weekly 4, monthly 12 in Europe/Berlin");
}

static void test_monthly_and_yearly_limits(void **state)
{
    (void)state;
    struct caris_retention_policy p = {.monthly = 6, .yearly = 3};
    /* monthly 6: a25, a16, a14, a13, a11, a10; yearly: 2026 a25, 2025 a16, 2024 a03 */
    expect_kept(&p, "Europe/Berlin", "a03 a10 a11 a13 a14 a16 a25 b3", "monthly 6, yearly 3");
}

static void test_last_and_within(void **state)
{
    (void)state;
    struct caris_retention_policy p = {.last = 3, .has_within = true};
    p.within.weeks = 2;
    /* last 3: a25 a24 a23; within 2 weeks of a25 (Jan 10 07:00 Berlin): since Dec 27 07:00 */
    expect_kept(&p, "Europe/Berlin", "a15 a16 a17 a18 a19 a20 a21 a22 a23 a24 a25 b1 b2 b3",
                "keep-last 3, keep-within 2w");
    /* B's newest is months older than A's: within is measured from each group's own newest
     * (b1 and b2 are within two weeks of b3, so all of B stays). */
    /* a duration reaching back before 1678 (nanoseconds since 1970 then overflow an int64):
     * every backup is within ("400y" kept only the newest: the cutoff wrapped to after 2200) */
    const char *all = "a01 a02 a03 a04 a05 a06 a07 a08 a09 a10 a11 a12 a13 a14 a15 a16 a17 a18 "
                      "a19 a20 a21 a22 a23 a24 a25 b1 b2 b3";
    struct caris_retention_policy longer = {.has_within = true, .within = {.years = 400}};
    expect_kept(&longer, "Europe/Berlin", all, "keep-within 400y");
    longer.within = (struct caris_duration){.weeks = 100000};
    expect_kept(&longer, "UTC", all, "keep-within 100000w");
    longer.within = (struct caris_duration){.years = 300};
    expect_kept(&longer, "UTC", all, "keep-within 300y");
}

static void test_time_zone_decides_the_day(void **state)
{
    (void)state;
    struct caris_retention_policy p = {.daily = 3};
    expect_kept(&p, "Europe/Berlin", "a23 a24 a25 b2 b3", "daily 3 in Berlin");
    /* In UTC a24 (23:30Z) is the newest of Jan 8 */
    expect_kept(&p, "UTC", "a21 a24 a25 b2 b3", "daily 3 in UTC");
    /* every day: the second backup of a day goes, and which is "a day" follows the zone
     * (Berlin: a12 and a13 are both Oct 26 across the change to winter time; a08 Mar 30 and
     * a09 Mar 31 across the change to summer time) */
    p.daily = 100;
    expect_kept(&p, "Europe/Berlin",
                "a01 a02 a03 a04 a05 a06 a07 a08 a09 a10 a11 a13 a14 a15 a16 a17 a19 a20 a21 "
                "a23 a24 a25 b2 b3",
                "every day in Berlin");
    expect_kept(&p, "UTC",
                "a01 a02 a03 a04 a05 a06 a07 a09 a10 a11 a12 a13 a14 a15 a16 a17 a19 a20 a21 "
                "a24 a25 b2 b3",
                "every day in UTC");
}

static void test_iso_weeks_span_years(void **state)
{
    (void)state;
    struct caris_retention_policy p = {.weekly = 100};
    /* a03 (Mon 2024-12-30), a04 and a05 (Sun 2025-01-05) are all 2025-W01: only a05 stays;
     * a16 (Mon 2025-12-29) .. a19 are 2026-W01: a19 stays, and a15 (Sun 2025-12-28) is the
     * only backup of 2025-W52. */
    /* group B: b1 and b2 are Sun 2025-06-01 (W22), b3 Mon 2025-06-02 (W23) */
    expect_kept(&p, "UTC", "a01 a02 a05 a06 a07 a09 a10 a11 a13 a14 a15 a19 a25 b2 b3",
                "every ISO week (UTC)");
}

static void test_newest_always_kept(void **state)
{
    (void)state;
    struct caris_retention_policy p = {0};
    expect_kept(&p, "Europe/Berlin", "a25 b3", "no rule: the newest of each group");
    p.monthly = 1;
    expect_kept(&p, NULL, "a25 b3", "monthly 1, local zone");
}

static void test_bad_input(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    struct caris_duration d;
    const char *bad_durations[] = {"", "5", "d", "3x", "1d1d", "-3d", "0d", "1.5d", "2 d", NULL};
    for (size_t i = 0; bad_durations[i]; i++) {
        err_clear(&e);
        if (caris_duration_parse(bad_durations[i], &d, &e) == 0)
            fail_msg("duration '%s' was accepted", bad_durations[i]);
        assert_int_equal(e.code, ERR_USAGE);
    }
    assert_int_equal(caris_duration_parse("1y2m3w4d5h", &d, &e), 0);
    assert_int_equal(d.years * 10000 + d.months * 1000 + d.weeks * 100 + d.days * 10 + d.hours,
                     12345);
    int n;
    const char *bad_counts[] = {"", "-1", "abc", "3x", "1e3", "99999999999", " 3", NULL};
    for (size_t i = 0; bad_counts[i]; i++) {
        err_clear(&e);
        if (caris_retention_count_parse("--keep-daily", bad_counts[i], &n, &e) == 0)
            fail_msg("count '%s' was accepted", bad_counts[i]);
        assert_int_equal(e.code, ERR_USAGE);
        assert_non_null(strstr(e.msg, "--keep-daily"));
    }
    assert_int_equal(caris_retention_count_parse("--keep-daily", "0", &n, &e), 0);
    assert_int_equal(n, 0);
    int64_t t;
    const char *bad_times[] = {"yesterday",
                               "2024-13-01T00:00:00Z",
                               "2024-02-30T00:00:00Z",
                               "2024-01-01",
                               "2024-01-01T25:00:00Z",
                               "2024-01-01T00:00:00+1",
                               "2024-01-01T00:00:00Zjunk",
                               "3000-01-01T00:00:00Z",
                               "1500-01-01 00:00",
                               NULL};
    for (size_t i = 0; bad_times[i]; i++) {
        err_clear(&e);
        if (caris_time_parse(bad_times[i], "UTC", &t, &e) == 0)
            fail_msg("time '%s' was accepted", bad_times[i]);
        assert_int_equal(e.code, ERR_USAGE);
    }
    /* the same instant three ways */
    int64_t a, b, c;
    assert_int_equal(caris_time_parse("2025-03-31T00:30:00+02:00", NULL, &a, &e), 0);
    assert_int_equal(caris_time_parse("2025-03-30T22:30:00Z", NULL, &b, &e), 0);
    assert_int_equal(caris_time_parse("2025-03-31 00:30:00", "Europe/Berlin", &c, &e), 0);
    assert_true(a == b && b == c);
    assert_int_equal(caris_time_parse("2025-01-01 00:30", "Europe/Berlin", &c, &e), 0);
    assert_int_equal(caris_time_parse("2024-12-31T23:30:00Z", NULL, &a, &e), 0);
    assert_true(a == c);
    err_clear(&e);
    assert_int_equal(caris_time_parse("2025-01-01 00:30", "Mars/Olympus", &c, &e), -1);
    assert_int_equal(e.code, ERR_CONFIG);
    err_clear(&e);
    assert_int_equal(caris_backup_time_check(time_now_ns() + (int64_t)3600 * 1000000000, &e), -1);
    assert_non_null(strstr(e.msg, "in the future"));
    /* a negative count never reaches the decision */
    struct caris_retention_policy p = {.daily = -1};
    struct caris_retention_item it = {.id = "x", .time_ns = 1};
    assert_int_equal(caris_retention_decide(&p, NULL, time_now_ns(), &it, 1, &e), -1);
    /* the TZ of the process is left as it was */
    setenv("TZ", "America/New_York", 1);
    struct caris_retention_policy q = {.daily = 1};
    assert_int_equal(caris_retention_decide(&q, "Europe/Berlin", time_now_ns(), &it, 1, &e), 0);
    assert_string_equal(getenv("TZ"), "America/New_York");
    unsetenv("TZ");
}

/* Backups dated after now (beyond CARIS_CLOCK_SKEW_NS) are kept, with the one reason
 * "future", and counted by no rule: the rules start from the newest backup that is not. */
static void test_future_dated(void **state)
{
    (void)state;
    static const char *const times[] = {
        "2026-01-01T03:00:00Z", "2026-01-02T03:00:00Z", "2026-01-03T03:00:00Z",
        "2026-01-04T03:00:00Z", "2026-01-05T03:00:00Z", "2027-02-10T03:00:00Z",
        "2027-02-11T03:00:00Z", "2026-01-06T00:15:00Z", /* now + the skew: not future */
    };
    enum { NT = sizeof(times) / sizeof(times[0]) };
    int64_t now;
    assert_int_equal(time_parse_iso("2026-01-06T00:00:00Z", &now), 0);
    struct caris_retention_item it[NT];
    char ids[NT][8];
    for (size_t i = 0; i < NT; i++) {
        snprintf(ids[i], sizeof(ids[i]), "d%zu", i);
        it[i] = (struct caris_retention_item){.id = ids[i]};
        assert_int_equal(time_parse_iso(times[i], &it[i].time_ns), 0);
    }
    struct err e = ERR_INIT;
    struct caris_retention_policy p = {.daily = 2};
    assert_int_equal(caris_retention_decide(&p, "UTC", now, it, NT, &e), 0);
    const unsigned want[NT] = {0,
                               0,
                               0,
                               0,
                               CARIS_KEEP_DAILY,
                               CARIS_KEEP_FUTURE,
                               CARIS_KEEP_FUTURE,
                               CARIS_KEEP_DAILY | CARIS_KEEP_NEWEST};
    for (size_t i = 0; i < NT; i++) {
        if (it[i].reasons != want[i] || it[i].keep != (want[i] != 0))
            fail_msg("%s (%s): reasons %#x, want %#x", it[i].id, times[i], it[i].reasons, want[i]);
    }
    /* within: from the newest that is not in the future (2026-01-06T00:15: 2 days back keeps
     * 2026-01-04T03:00 and later) */
    struct caris_retention_policy w = {.has_within = true, .within = {.days = 2}};
    assert_int_equal(caris_retention_decide(&w, "UTC", now, it, NT, &e), 0);
    for (size_t i = 0; i < NT; i++)
        assert_int_equal(it[i].keep, i >= 3);
    /* the boundary, and no overflow near the end of time */
    assert_false(caris_backup_time_future(now + CARIS_CLOCK_SKEW_NS, now));
    assert_true(caris_backup_time_future(now + CARIS_CLOCK_SKEW_NS + 1, now));
    assert_false(caris_backup_time_future(INT64_MAX, INT64_MAX));
    assert_false(caris_backup_time_future(INT64_MAX, INT64_MAX - CARIS_CLOCK_SKEW_NS));
    assert_true(caris_backup_time_future(INT64_MAX, INT64_MAX - CARIS_CLOCK_SKEW_NS - 1));
}

/* keep-within in hours is elapsed time, also when the newest backup is in the hour the
 * clocks went back (Berlin, 2025-10-26: 02:00-03:00 twice). Its wall time 02:30 was turned
 * back into a time as the first 02:30 (CEST), one hour early: 2h kept 3h. */
static void test_within_hours_in_the_fold(void **state)
{
    (void)state;
    static const char *const times[] = {
        "2025-10-25T23:29:00Z", /* 2 h 1 min before the newest: out */
        "2025-10-25T23:31:00Z", /* 1 h 59 min before: in */
        "2025-10-26T01:30:00Z", /* the newest: 02:30 CET, the second 02:30 */
    };
    enum { NT = sizeof(times) / sizeof(times[0]) };
    int64_t now;
    assert_int_equal(time_parse_iso("2025-10-26T02:00:00Z", &now), 0);
    struct caris_retention_item it[NT];
    char ids[NT][8];
    for (size_t i = 0; i < NT; i++) {
        snprintf(ids[i], sizeof(ids[i]), "f%zu", i);
        it[i] = (struct caris_retention_item){.id = ids[i]};
        assert_int_equal(time_parse_iso(times[i], &it[i].time_ns), 0);
    }
    struct err e = ERR_INIT;
    struct caris_retention_policy p = {.has_within = true, .within = {.hours = 2}};
    assert_int_equal(caris_retention_decide(&p, "Europe/Berlin", now, it, NT, &e), 0);
    assert_false(it[0].keep);
    assert_true(it[1].keep);
    assert_true(it[2].keep);
}

/* A backup whose last verification failed is counted by no rule: the newest intact backup of
 * its day takes the slot (and "newest"); while no intact backup is newer it is kept with the
 * one reason "damaged". */
static void test_damaged(void **state)
{
    (void)state;
    static const char *const times[] = {"2026-01-04T03:00:00Z", "2026-01-05T03:00:00Z",
                                        "2026-01-05T04:00:00Z", "2026-01-05T05:00:00Z",
                                        "2026-01-04T04:00:00Z"};
    enum { NT = sizeof(times) / sizeof(times[0]) };
    int64_t now;
    assert_int_equal(time_parse_iso("2026-01-06T00:00:00Z", &now), 0);
    struct caris_retention_item it[NT];
    for (size_t i = 0; i < NT; i++) {
        it[i] = (struct caris_retention_item){.id = times[i], .damaged = i >= 3};
        assert_int_equal(time_parse_iso(times[i], &it[i].time_ns), 0);
    }
    struct err e = ERR_INIT;
    struct caris_retention_policy p = {.daily = 2};
    assert_int_equal(caris_retention_decide(&p, "UTC", now, it, NT, &e), 0);
    /* the damaged newest is kept; the damaged one older than intact ones goes (no rule
     * counts it, and it would otherwise stay for ever: a forgotten backup put back, which
     * check records as damaged, could never be forgotten by policy again) */
    const unsigned want[NT] = {CARIS_KEEP_DAILY, 0, CARIS_KEEP_DAILY | CARIS_KEEP_NEWEST,
                               CARIS_KEEP_DAMAGED, 0};
    for (size_t i = 0; i < NT; i++)
        if (it[i].reasons != want[i] || it[i].keep != (want[i] != 0))
            fail_msg("%s: reasons %#x, want %#x", it[i].id, it[i].reasons, want[i]);
}

/* A backup the state record has removed (its forget stopped before the snapshot was deleted)
 * is counted by no rule and not kept, newest or not: counted, it took its day's place and the
 * day's real backup was forgotten. */
static void test_removed(void **state)
{
    (void)state;
    static const char *const times[] = {"2026-01-04T08:00:00Z", "2026-01-04T20:00:00Z",
                                        "2026-01-05T08:00:00Z", "2026-01-05T20:00:00Z"};
    enum { NT = sizeof(times) / sizeof(times[0]) };
    int64_t now;
    assert_int_equal(time_parse_iso("2026-01-06T00:00:00Z", &now), 0);
    struct caris_retention_item it[NT];
    for (size_t i = 0; i < NT; i++) {
        it[i] = (struct caris_retention_item){.id = times[i], .removed = i % 2 == 1};
        assert_int_equal(time_parse_iso(times[i], &it[i].time_ns), 0);
    }
    struct err e = ERR_INIT;
    struct caris_retention_policy p = {.daily = 2};
    assert_int_equal(caris_retention_decide(&p, "UTC", now, it, NT, &e), 0);
    const unsigned want[NT] = {CARIS_KEEP_DAILY, 0, CARIS_KEEP_DAILY | CARIS_KEEP_NEWEST, 0};
    for (size_t i = 0; i < NT; i++)
        if (it[i].reasons != want[i] || it[i].keep != (want[i] != 0))
            fail_msg("%s: reasons %#x, want %#x", it[i].id, it[i].reasons, want[i]);
}

/* What makes a backup known damaged: its last verification failed, or its last test restore
 * found damage and no verification passed after it; a test restore that failed on the scratch
 * side (code other than damage, or an old record without a code) says nothing. */
static void test_known_damaged(void **state)
{
    (void)state;
    json_t *vok = json_pack("{s:b, s:s}", "ok", 1, "time", "2026-01-02T10:00:00.000Z");
    json_t *vbad = json_pack("{s:b, s:s, s:s}", "ok", 0, "time", "2026-01-01T10:00:00.000Z",
                             "error", "chunk damaged");
    json_t *tdmg = json_pack("{s:b, s:s, s:s, s:s}", "ok", 0, "time", "2026-01-01T12:00:00.000Z",
                             "code", "damage", "error", "row counts differ");
    json_t *tdmg_late =
        json_pack("{s:b, s:s, s:s}", "ok", 0, "time", "2026-01-03T12:00:00.000Z", "code", "damage");
    json_t *tenv = json_pack("{s:b, s:s, s:s}", "ok", 0, "time", "2026-01-03T12:00:00.000Z", "code",
                             "database");
    json_t *told = json_pack("{s:b, s:s}", "ok", 0, "time", "2026-01-03T12:00:00.000Z");
    json_t *tok = json_pack("{s:b, s:s}", "ok", 1, "time", "2026-01-03T12:00:00.000Z");
    json_t *err;
    const char *by;
    assert_false(caris_backup_known_damaged(NULL, NULL, &err, &by));
    assert_null(by);
    assert_true(caris_backup_known_damaged(vbad, NULL, &err, &by));
    assert_string_equal(by, "verification");
    assert_string_equal(json_string_value(err), "chunk damaged");
    assert_true(caris_backup_known_damaged(vbad, tok, NULL, NULL)); /* a drill does not clear */
    assert_true(caris_backup_known_damaged(NULL, tdmg, &err, &by));
    assert_string_equal(by, "test restore");
    assert_string_equal(json_string_value(err), "row counts differ");
    assert_false(caris_backup_known_damaged(vok, tdmg, NULL, NULL));    /* verified after it */
    assert_true(caris_backup_known_damaged(vok, tdmg_late, NULL, &by)); /* verified before it */
    assert_string_equal(by, "test restore");
    assert_false(caris_backup_known_damaged(NULL, tenv, NULL, NULL));
    assert_false(caris_backup_known_damaged(NULL, told, NULL, NULL));
    assert_false(caris_backup_known_damaged(vok, tok, NULL, NULL));
    json_t *all[] = {vok, vbad, tdmg, tdmg_late, tenv, told, tok};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        json_decref(all[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_policy_berlin),
        cmocka_unit_test(test_monthly_and_yearly_limits),
        cmocka_unit_test(test_last_and_within),
        cmocka_unit_test(test_time_zone_decides_the_day),
        cmocka_unit_test(test_iso_weeks_span_years),
        cmocka_unit_test(test_newest_always_kept),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_future_dated),
        cmocka_unit_test(test_damaged),
        cmocka_unit_test(test_removed),
        cmocka_unit_test(test_known_damaged),
        cmocka_unit_test(test_within_hours_in_the_fold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

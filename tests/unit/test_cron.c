/* The cron engine (cron_parse, cron_next) and the time zones under it (tz_*), against run
 * times worked out by hand from a calendar, written here as the local time with its offset.
 * Calendar facts used (checked against a printed calendar):
 *   2026-01-01 Thursday, 2026-02-01 Sunday, 2026-06-01 Monday, 2027-01-01 Friday;
 *   29 February falls on a Sunday in 2032 and next in 2060; 2100 is not a leap year;
 *   Europe/Berlin: clocks forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC), back
 *   2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC); in 2040 on 25 March and 28 October
 *   (last Sundays; past 2037, where the zone file's own list of transitions ends);
 *   America/New_York: forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC), back
 *   2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC);
 *   Australia/Lord_Howe: forward by 30 minutes, 2026-10-04 02:00 -> 02:30 (15:30 UTC on 3 Oct);
 *   America/Sao_Paulo: forward at midnight, 2018-11-04 00:00 -> 01:00 (03:00 UTC). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "caris/core.h"
#include "caris/cron.h"
#include "caris/schedule.h"
#include "caris/tz.h"

#include "tmpdir.h"

/* (time_parse_iso counts nanoseconds in an int64_t: years up to 2262 only) */
static int64_t utc(const char *iso)
{
    int64_t ns;
    assert_int_equal(time_parse_iso(iso, &ns), 0);
    return ns / 1000000000;
}

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Without fsync: the damaged-file loop writes thousands. */
static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static struct tz *zone(const char *name)
{
    struct tz *z = NULL;
    struct err e = ERR_INIT;
    if (tz_load(name, &z, &e) != 0)
        fail_msg("tz_load %s: %s", name, e.msg);
    return z;
}

/* The runs of expr in zone after from (UTC), one by one, must be exactly `want`. */
static void expect_runs_(const char *expr, const char *zname, const char *from,
                         const char *const *want, size_t n)
{
    struct cron_expr c;
    struct err e = ERR_INIT;
    if (cron_parse(expr, &c, &e) != 0)
        fail_msg("cron_parse '%s': %s", expr, e.msg);
    struct tz *z = zone(zname);
    int64_t t = utc(from);
    for (size_t i = 0; i < n; i++) {
        int64_t next;
        if (cron_next(&c, z, t, &next, &e) != 0)
            fail_msg("cron_next '%s' after %lld: %s", expr, (long long)t, e.msg);
        assert_true(next > t);
        char got[48];
        tz_format_iso(z, next, got, sizeof(got));
        if (strcmp(got, want[i]) != 0)
            fail_msg("'%s' in %s from %s, run %zu: got %s, want %s", expr, zname, from, i + 1, got,
                     want[i]);
        t = next;
    }
    tz_free(z);
}
#define expect_runs(expr, zname, from, ...)                                                        \
    do {                                                                                           \
        static const char *const w_[] = {__VA_ARGS__};                                             \
        expect_runs_(expr, zname, from, w_, sizeof(w_) / sizeof(w_[0]));                           \
    } while (0)

/* ---- calendar and fields ------------------------------------------------------------- */

static void test_calendar(void **state)
{
    (void)state;
    assert_int_equal(tz_days_from_civil(1970, 1, 1), 0);
    assert_int_equal(tz_days_from_civil(2000, 3, 1), 11017);
    assert_int_equal(tz_days_from_civil(1969, 12, 31), -1);
    assert_int_equal(tz_weekday(0), 4); /* Thursday */
    assert_int_equal(tz_weekday(-1), 3);
    assert_int_equal(tz_weekday(tz_days_from_civil(2026, 6, 1)), 1);
    assert_int_equal(tz_weekday(tz_days_from_civil(2032, 2, 29)), 0);
    assert_int_equal(tz_days_in_month(2028, 2), 29);
    assert_int_equal(tz_days_in_month(2100, 2), 28);
    assert_int_equal(tz_days_in_month(2000, 2), 29);
    for (int64_t d = -800000; d <= 800000; d += 7) {
        int64_t y;
        int m, dd;
        tz_civil_from_days(d, &y, &m, &dd);
        assert_int_equal(tz_days_from_civil(y, m, dd), d);
        assert_true(dd >= 1 && dd <= tz_days_in_month(y, m));
    }
}

static void test_every_fifteen_minutes(void **state)
{
    (void)state;
    expect_runs("*/15 * * * *", "UTC", "2026-01-01T10:07:30Z", "2026-01-01T10:15:00+00:00",
                "2026-01-01T10:30:00+00:00", "2026-01-01T10:45:00+00:00",
                "2026-01-01T11:00:00+00:00");
    /* strictly after: a run time given as the start is not repeated */
    expect_runs("0 3 * * *", "UTC", "2026-01-01T03:00:00Z", "2026-01-02T03:00:00+00:00");
    expect_runs("0 3 * * *", "UTC", "2026-01-01T02:59:59Z", "2026-01-01T03:00:00+00:00");
    expect_runs("59 23 31 12 *", "UTC", "2026-12-31T23:59:00Z", "2027-12-31T23:59:00+00:00");
}

static void test_steps_on_ranges(void **state)
{
    (void)state;
    expect_runs("1-30/7 * * * *", "UTC", "2026-01-01T10:00:00Z", "2026-01-01T10:01:00+00:00",
                "2026-01-01T10:08:00+00:00", "2026-01-01T10:15:00+00:00",
                "2026-01-01T10:22:00+00:00", "2026-01-01T10:29:00+00:00",
                "2026-01-01T11:01:00+00:00");
    expect_runs("0 8-18/5 * * *", "UTC", "2026-01-01T00:00:00Z", "2026-01-01T08:00:00+00:00",
                "2026-01-01T13:00:00+00:00", "2026-01-01T18:00:00+00:00",
                "2026-01-02T08:00:00+00:00");
    expect_runs("5,50 1,2 * * *", "UTC", "2026-01-01T01:06:00Z", "2026-01-01T01:50:00+00:00",
                "2026-01-01T02:05:00+00:00", "2026-01-01T02:50:00+00:00",
                "2026-01-02T01:05:00+00:00");
    /* every second month from January: Jan, Mar, May, ... */
    expect_runs("0 0 1 */2 *", "UTC", "2026-01-15T00:00:00Z", "2026-03-01T00:00:00+00:00",
                "2026-05-01T00:00:00+00:00");
}

static void test_leap_days(void **state)
{
    (void)state;
    expect_runs("0 0 29 2 *", "UTC", "2025-01-01T00:00:00Z", "2028-02-29T00:00:00+00:00",
                "2032-02-29T00:00:00+00:00");
    /* 2100 is not a leap year: from 2096 to 2104 */
    expect_runs("0 0 29 2 *", "UTC", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00+00:00");
    /* Both: 29 February that is a Sunday ('*' starts the weekday field: both must match). */
    expect_runs("0 0 29 2 */7", "UTC", "2026-01-01T00:00:00Z", "2032-02-29T00:00:00+00:00",
                "2060-02-29T00:00:00+00:00");
    /* the last day of February, leap or not, with a list */
    expect_runs("0 12 28,29 2 *", "UTC", "2027-01-01T00:00:00Z", "2027-02-28T12:00:00+00:00",
                "2028-02-28T12:00:00+00:00", "2028-02-29T12:00:00+00:00",
                "2029-02-28T12:00:00+00:00");
}

static void test_day_of_month_and_week(void **state)
{
    (void)state;
    /* Vixie: both restricted, either matches. June 2026: Fridays 5, 12, 19, 26; the 13th is
     * a Saturday; July: Friday 3, 10; Monday 13. */
    expect_runs("0 0 13 * FRI", "UTC", "2026-06-01T00:00:00Z", "2026-06-05T00:00:00+00:00",
                "2026-06-12T00:00:00+00:00", "2026-06-13T00:00:00+00:00",
                "2026-06-19T00:00:00+00:00", "2026-06-26T00:00:00+00:00",
                "2026-07-03T00:00:00+00:00", "2026-07-10T00:00:00+00:00",
                "2026-07-13T00:00:00+00:00");
    /* day-of-month begins with '*': both must match, odd days that are Mondays. June 2026
     * Mondays: 1, 8, 15, 22, 29; July: 6, 13, 20, 27. */
    expect_runs("0 0 */2 * MON", "UTC", "2026-06-01T00:00:00Z", "2026-06-15T00:00:00+00:00",
                "2026-06-29T00:00:00+00:00", "2026-07-13T00:00:00+00:00",
                "2026-07-27T00:00:00+00:00");
    /* only the weekday */
    expect_runs("0 0 * * 1", "UTC", "2026-06-01T00:00:00Z", "2026-06-08T00:00:00+00:00",
                "2026-06-15T00:00:00+00:00");
    /* 1-31 is restricted (it does not begin with '*'): either matches, so every day */
    expect_runs("0 0 1-31 * MON", "UTC", "2026-06-01T00:00:00Z", "2026-06-02T00:00:00+00:00",
                "2026-06-03T00:00:00+00:00");
    /* only the day of month */
    expect_runs("0 0 1 * *", "UTC", "2026-06-01T00:00:00Z", "2026-07-01T00:00:00+00:00",
                "2026-08-01T00:00:00+00:00");
    /* 31 February never is, but any Monday of February is (2026-02-02 is a Monday) */
    expect_runs("0 0 31 2 MON", "UTC", "2026-02-01T00:00:00Z", "2026-02-02T00:00:00+00:00",
                "2026-02-09T00:00:00+00:00");
    /* 31st of the months that have one */
    expect_runs("0 0 31 * *", "UTC", "2026-01-31T00:00:00Z", "2026-03-31T00:00:00+00:00",
                "2026-05-31T00:00:00+00:00", "2026-07-31T00:00:00+00:00",
                "2026-08-31T00:00:00+00:00");
}

static void test_names(void **state)
{
    (void)state;
    /* Friday 2026-03-27 noon: Mon 30 and Tue 31 March, then Friday 2027-01-01 */
    expect_runs("0 9 * jan-MAR Mon-fri", "UTC", "2026-03-27T12:00:00Z", "2026-03-30T09:00:00+00:00",
                "2026-03-31T09:00:00+00:00", "2027-01-01T09:00:00+00:00");
    expect_runs("0 0 1 jun,Dec *", "UTC", "2026-06-01T00:00:00Z", "2026-12-01T00:00:00+00:00",
                "2027-06-01T00:00:00+00:00");
    /* 7 is Sunday, as 0 and SUN; 5-7 is Friday to Sunday */
    expect_runs("0 0 * * 7", "UTC", "2026-06-01T00:00:00Z", "2026-06-07T00:00:00+00:00");
    expect_runs("0 0 * * sun", "UTC", "2026-06-01T00:00:00Z", "2026-06-07T00:00:00+00:00");
    expect_runs("0 0 * * 5-7", "UTC", "2026-06-01T00:00:00Z", "2026-06-05T00:00:00+00:00",
                "2026-06-06T00:00:00+00:00", "2026-06-07T00:00:00+00:00",
                "2026-06-12T00:00:00+00:00");
}

static void test_macros(void **state)
{
    (void)state;
    expect_runs("@hourly", "UTC", "2026-06-01T10:30:00Z", "2026-06-01T11:00:00+00:00");
    expect_runs("@daily", "UTC", "2026-06-01T10:30:00Z", "2026-06-02T00:00:00+00:00");
    expect_runs("@midnight", "UTC", "2026-06-01T10:30:00Z", "2026-06-02T00:00:00+00:00");
    expect_runs("  @WEEKLY ", "UTC", "2026-06-01T10:30:00Z", "2026-06-07T00:00:00+00:00");
    expect_runs("@monthly", "UTC", "2026-06-01T10:30:00Z", "2026-07-01T00:00:00+00:00");
    expect_runs("@yearly", "UTC", "2026-06-01T10:30:00Z", "2027-01-01T00:00:00+00:00");
    expect_runs("@annually", "UTC", "2026-06-01T10:30:00Z", "2027-01-01T00:00:00+00:00");
    /* the seed's defaults */
    expect_runs("0 2 * * 0", "UTC", "2026-06-01T10:30:00Z", "2026-06-07T02:00:00+00:00");
    expect_runs("0 1 1 * *", "UTC", "2026-06-01T10:30:00Z", "2026-07-01T01:00:00+00:00");
}

/* ---- daylight saving time ------------------------------------------------------------ */

static void test_dst_berlin(void **state)
{
    (void)state;
    /* 02:30 does not exist on 29 March: once, right after the gap (03:00 CEST) */
    expect_runs("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00");
    /* every quarter of the missing hour: one run, not four */
    expect_runs("*/15 2 * * *", "Europe/Berlin", "2026-03-28T23:00:00Z",
                "2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00");
    /* 02:30 happens twice on 25 October: the first (CEST) only */
    expect_runs("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", "2026-10-25T02:30:00+02:00",
                "2026-10-26T02:30:00+01:00");
    /* starting inside the second pass (02:15 CET): 02:30 CET is not run again */
    expect_runs("30 2 * * *", "Europe/Berlin", "2026-10-25T01:15:00Z", "2026-10-26T02:30:00+01:00");
    /* hourly over the change back: 02:00 runs once, 03:00 CET is an hour after 02:00 CET */
    expect_runs("0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", "2026-10-25T02:00:00+02:00",
                "2026-10-25T03:00:00+01:00", "2026-10-25T04:00:00+01:00");
    /* hourly over the change forward: 01:00 CET, then 03:00 CEST one hour later */
    expect_runs("0 * * * *", "Europe/Berlin", "2026-03-28T23:30:00Z", "2026-03-29T01:00:00+01:00",
                "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00");
    /* 2040: past the transitions the zone file lists, the zone's rule decides */
    expect_runs("30 2 * * *", "Europe/Berlin", "2040-03-24T12:00:00Z", "2040-03-25T03:00:00+02:00",
                "2040-03-26T02:30:00+02:00");
    expect_runs("30 2 * * *", "Europe/Berlin", "2040-10-27T12:00:00Z", "2040-10-28T02:30:00+02:00",
                "2040-10-29T02:30:00+01:00");
    /* every day of 2026: 365 runs, each at 02:30 but on 29 March */
    struct cron_expr c;
    struct err e = ERR_INIT;
    assert_int_equal(cron_parse("30 2 * * *", &c, &e), 0);
    struct tz *z = zone("Europe/Berlin");
    int64_t t = utc("2025-12-31T12:00:00Z"), end = utc("2026-12-31T12:00:00Z");
    int n = 0, gap = 0;
    for (;;) {
        assert_int_equal(cron_next(&c, z, t, &t, &e), 0);
        if (t > end)
            break;
        char s[48];
        tz_format_iso(z, t, s, sizeof(s));
        n++;
        if (strncmp(s + 11, "02:30:00", 8) != 0) {
            assert_string_equal(s, "2026-03-29T03:00:00+02:00");
            gap++;
        }
    }
    assert_int_equal(n, 365);
    assert_int_equal(gap, 1);
    tz_free(z);
}

static void test_dst_new_york(void **state)
{
    (void)state;
    expect_runs("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z",
                "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00");
    expect_runs("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z",
                "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00");
    /* from 01:10 EST, in the repeated hour: tomorrow */
    expect_runs("30 1 * * *", "America/New_York", "2026-11-01T06:10:00Z",
                "2026-11-02T01:30:00-05:00");
    /* every 15 minutes: the repeated hour runs once, then 02:00 EST */
    expect_runs("*/15 * * * *", "America/New_York", "2026-11-01T05:40:00Z",
                "2026-11-01T01:45:00-04:00", "2026-11-01T02:00:00-05:00",
                "2026-11-01T02:15:00-05:00");
    expect_runs("*/15 * * * *", "America/New_York", "2026-11-01T06:05:00Z",
                "2026-11-01T02:00:00-05:00");
    /* every 30 minutes over the gap (01:40 EST): 02:00 and 02:30 give one run at 03:00 */
    expect_runs("*/30 * * * *", "America/New_York", "2026-03-08T06:40:00Z",
                "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00");
}

static void test_dst_other_zones(void **state)
{
    (void)state;
    /* a 30-minute change: 02:15 does not exist on 2026-10-04 */
    expect_runs("15 2 * * *", "Australia/Lord_Howe", "2026-10-02T12:00:00Z",
                "2026-10-03T02:15:00+10:30", "2026-10-04T02:30:00+11:00",
                "2026-10-05T02:15:00+11:00");
    /* midnight itself skipped: @daily runs at 01:00 */
    expect_runs("@daily", "America/Sao_Paulo", "2018-11-03T12:00:00Z", "2018-11-04T01:00:00-02:00",
                "2018-11-05T00:00:00-02:00");
    /* no daylight saving time */
    expect_runs("30 5 * * *", "Asia/Kolkata", "2025-12-31T23:00:00Z", "2026-01-01T05:30:00+05:30",
                "2026-01-02T05:30:00+05:30");
}

/* ---- time zones ---------------------------------------------------------------------- */

static void test_tz_offsets(void **state)
{
    (void)state;
    struct tz *z = zone("Europe/Berlin");
    assert_int_equal(tz_offset_at(z, utc("2026-03-29T00:59:59Z")), 3600);
    assert_int_equal(tz_offset_at(z, utc("2026-03-29T01:00:00Z")), 7200);
    assert_int_equal(tz_offset_at(z, utc("2026-10-25T00:59:59Z")), 7200);
    assert_int_equal(tz_offset_at(z, utc("2026-10-25T01:00:00Z")), 3600);
    int64_t next;
    assert_true(tz_next_transition(z, utc("2026-01-01T00:00:00Z"), &next));
    assert_int_equal(next, utc("2026-03-29T01:00:00Z"));
    assert_true(tz_next_transition(z, utc("2026-03-29T01:00:00Z"), &next));
    assert_int_equal(next, utc("2026-10-25T01:00:00Z"));
    assert_true(tz_next_transition(z, utc("2045-01-01T00:00:00Z"), &next)); /* by the rule */
    assert_int_equal(next, utc("2045-03-26T01:00:00Z"));
    char s[48];
    tz_format_iso(z, utc("1880-01-01T00:00:00Z"), s, sizeof(s)); /* local mean time */
    assert_string_equal(s, "1880-01-01T00:53:28+00:53:28");
    /* wall times: once, twice, skipped */
    enum tz_wall_kind k;
    int64_t w = tz_days_from_civil(2026, 3, 29) * 86400 + 2 * 3600 + 30 * 60;
    assert_int_equal(tz_wall_to_time(z, w, &k), utc("2026-03-29T01:00:00Z"));
    assert_int_equal(k, TZ_WALL_SKIPPED);
    w = tz_days_from_civil(2026, 10, 25) * 86400 + 2 * 3600 + 30 * 60;
    assert_int_equal(tz_wall_to_time(z, w, &k), utc("2026-10-25T00:30:00Z"));
    assert_int_equal(k, TZ_WALL_TWICE);
    w = tz_days_from_civil(2026, 7, 1) * 86400;
    assert_int_equal(tz_wall_to_time(z, w, &k), utc("2026-06-30T22:00:00Z"));
    assert_int_equal(k, TZ_WALL_ONCE);
    assert_string_equal(tz_name(z), "Europe/Berlin");
    tz_free(z);

    z = zone(":America/New_York");
    tz_format_iso(z, utc("2026-11-01T06:30:00Z"), s, sizeof(s));
    assert_string_equal(s, "2026-11-01T01:30:00-05:00");
    tz_free(z);
    z = zone("UTC");
    assert_false(tz_next_transition(z, 0, &next));
    tz_format_iso(z, 0, s, sizeof(s));
    assert_string_equal(s, "1970-01-01T00:00:00+00:00");
    tz_free(z);
}

/* The zone files' transitions (until 2037) and their POSIX rules, evaluated by separate
 * code, agree hour by hour wherever both apply. */
static void compare_rule(const char *name, const char *rule, const char *from, const char *to)
{
    struct tz *f = zone(name), *r = NULL;
    struct err e = ERR_INIT;
    assert_int_equal(tz_load_posix(rule, &r, &e), 0);
    for (int64_t t = utc(from); t < utc(to); t += 3600)
        if (tz_offset_at(f, t) != tz_offset_at(r, t))
            fail_msg("%s at %lld: file %d, rule %s %d", name, (long long)t, tz_offset_at(f, t),
                     rule, tz_offset_at(r, t));
    tz_free(f);
    tz_free(r);
}

static void test_tz_posix_rules(void **state)
{
    (void)state;
    compare_rule("Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3", "1997-01-01T00:00:00Z",
                 "2037-12-31T00:00:00Z");
    compare_rule("America/New_York", "EST5EDT,M3.2.0,M11.1.0", "2007-01-01T00:00:00Z",
                 "2037-12-31T00:00:00Z");
    compare_rule("Australia/Sydney", "AEST-10AEDT,M10.1.0,M4.1.0/3", "2008-06-01T00:00:00Z",
                 "2037-12-31T00:00:00Z");
    compare_rule("Australia/Lord_Howe", "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
                 "2008-06-01T00:00:00Z", "2037-12-31T00:00:00Z");
    /* RFC 8536's example of daylight saving time all year: always -04:00 */
    struct tz *z = NULL;
    struct err e = ERR_INIT;
    assert_int_equal(tz_load_posix("EST5EDT4,0/0,J365/25", &z, &e), 0);
    for (int64_t t = utc("2026-01-01T00:00:00Z"); t < utc("2029-01-01T00:00:00Z"); t += 3600)
        assert_int_equal(tz_offset_at(z, t), -4 * 3600);
    tz_free(z);
    /* Jn never counts 29 February, n does: J60 and 59 are 1 March in a leap year */
    assert_int_equal(tz_load_posix("XXX0YYY,J60/0,J300/0", &z, &e), 0);
    assert_int_equal(tz_offset_at(z, utc("2028-02-29T23:59:59Z")), 0);
    assert_int_equal(tz_offset_at(z, utc("2028-03-01T00:00:00Z")), 3600);
    tz_free(z);
    assert_int_equal(tz_load_posix("XXX0YYY,59/0,J300/0", &z, &e), 0);
    assert_int_equal(tz_offset_at(z, utc("2028-02-29T00:00:00Z")), 3600);
    tz_free(z);
    static const char *const bad[] = {"",
                                      "CET",
                                      "CE-1",
                                      "CET-1CEST,M3.5.0",
                                      "CET-1CEST,M13.5.0,M10.5.0",
                                      "CET-1CEST,M3.6.0,M10.5.0",
                                      "CET-1CEST,M3.5.7,M10.5.0",
                                      "CET-1CEST,M3.5.0,M10.5.0/168",
                                      "CET-25",
                                      "CET-1CEST,J0,J365",
                                      "<AB>-1",
                                      "CET-1 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err_clear(&e);
        if (tz_load_posix(bad[i], &z, &e) == 0)
            fail_msg("rule '%s' accepted", bad[i]);
        assert_int_equal(e.code, ERR_USAGE);
    }
}

static void test_tz_errors(void **state)
{
    (void)state;
    struct tz *z = NULL;
    struct err e = ERR_INIT;
    static const char *const unknown[] = {
        "Europe/Nowhere", "../../etc/passwd", "Europe/../UTC", "Europe", "",
        "Europe//Berlin", "Europe/Berlin/"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        err_clear(&e);
        if (tz_load(unknown[i], &z, &e) == 0)
            fail_msg("zone '%s' accepted", unknown[i]);
        assert_int_equal(e.code, ERR_NOT_FOUND);
        assert_null(z);
    }
    assert_non_null(strstr(e.msg, "unknown time zone"));
    /* not zone files: refused, without reading forever */
    err_clear(&e);
    assert_int_not_equal(tz_load("/dev/zero", &z, &e), 0);
    assert_int_equal(e.code, ERR_DAMAGE);
    char *dir = tmpdir_new();
    char *path = xasprintf("%s/zone", dir);
    struct buf b = {0};
    assert_int_equal(fs_read_all(TZ_ZONEINFO_DIR "/Europe/Berlin", &b, &e), 0);
    /* every truncation of a real zone file is refused */
    for (size_t n = 0; n < b.len; n++) {
        write_file(path, b.data, n);
        err_clear(&e);
        if (tz_load(path, &z, &e) == 0)
            fail_msg("Europe/Berlin cut to %zu bytes accepted", n);
        assert_int_equal(e.code, ERR_DAMAGE);
        assert_non_null(strstr(e.msg, "not a valid zone file"));
    }
    /* the whole file loads by its path */
    assert_int_equal(fs_write_atomic(path, b.data, b.len, 0600, &e), 0);
    assert_int_equal(tz_load(path, &z, &e), 0);
    assert_int_equal(tz_offset_at(z, utc("2026-07-01T00:00:00Z")), 7200);
    tz_free(z);
    /* a leap-second count (the right/ zones) is refused: byte 28..31 of the header */
    b.data[31] = 1;
    assert_int_equal(fs_write_atomic(path, b.data, b.len, 0600, &e), 0);
    err_clear(&e);
    assert_int_not_equal(tz_load(path, &z, &e), 0);
    assert_non_null(strstr(e.msg, "leap seconds"));
    b.data[31] = 0;
    /* version 1 (32-bit times, no footer): the first block alone, with version byte 0 */
    size_t v1 = 44 + load_be32(b.data + 32) * 5 + load_be32(b.data + 36) * 6 +
                load_be32(b.data + 40) + load_be32(b.data + 28) * 8 + load_be32(b.data + 24) +
                load_be32(b.data + 20);
    assert_true(v1 < b.len);
    b.data[4] = 0;
    write_file(path, b.data, v1);
    assert_int_equal(tz_load(path, &z, &e), 0);
    assert_int_equal(tz_offset_at(z, utc("2026-03-29T00:59:59Z")), 3600);
    assert_int_equal(tz_offset_at(z, utc("2026-03-29T01:00:00Z")), 7200);
    tz_free(z);
    b.data[4] = '2';
    /* damaged files: refused or loaded, never a crash, a hang or an out-of-bounds read
     * (ASan); whatever loads still gives answers. Deterministic positions and values. */
    int loaded = 0;
    for (unsigned i = 0; i < 3000; i++) {
        size_t pos = (i * 7919u) % b.len;
        uint8_t old = b.data[pos];
        b.data[pos] = (uint8_t)(old ^ (1u << (i % 8)));
        write_file(path, b.data, b.len);
        b.data[pos] = old;
        err_clear(&e);
        if (tz_load(path, &z, &e) != 0) {
            assert_true(e.code == ERR_DAMAGE);
            continue;
        }
        loaded++;
        struct cron_expr c;
        assert_int_equal(cron_parse("30 2 * * *", &c, &e), 0);
        int64_t t = utc("2026-01-01T00:00:00Z");
        for (int k = 0; k < 3; k++)
            if (cron_next(&c, z, t, &t, &e) != 0)
                break;
        tz_free(z);
    }
    assert_true(loaded > 0); /* flips in names and unused bytes leave a valid file */
    buf_free(&b);
    free(path);
    tmpdir_free(dir);
}

static void test_tz_local(void **state)
{
    (void)state;
    char *saved = getenv("TZ") ? xstrdup(getenv("TZ")) : NULL;
    struct tz *z = NULL;
    struct err e = ERR_INIT;
    setenv("TZ", ":Europe/Berlin", 1);
    assert_int_equal(tz_load_local(&z, &e), 0);
    assert_string_equal(tz_name(z), "Europe/Berlin");
    assert_int_equal(tz_offset_at(z, utc("2026-07-01T00:00:00Z")), 7200);
    tz_free(z);
    setenv("TZ", "EST5EDT,M3.2.0,M11.1.0", 1);
    assert_int_equal(tz_load_local(&z, &e), 0);
    assert_int_equal(tz_offset_at(z, utc("2026-07-01T00:00:00Z")), -4 * 3600);
    tz_free(z);
    setenv("TZ", "", 1);
    assert_int_equal(tz_load_local(&z, &e), 0);
    assert_string_equal(tz_name(z), "UTC");
    tz_free(z);
    setenv("TZ", "Mars/Olympus", 1);
    assert_int_not_equal(tz_load_local(&z, &e), 0);
    assert_non_null(strstr(e.msg, "TZ"));
    if (saved)
        setenv("TZ", saved, 1);
    else
        unsetenv("TZ");
    free(saved);
}

/* ---- threads ------------------------------------------------------------------------- */

/* Four threads, each loading its own zone and computing a year of runs, at once, while the
 * main thread does the same: every thread gets what one thread alone gets. (With the C
 * library's TZ, two threads in two zones would corrupt each other's results.) */
struct thread_job {
    const char *zone;
    int64_t runs[400];
    int n;
};

static void *thread_run(void *arg)
{
    struct thread_job *j = arg;
    struct tz *z = NULL;
    struct err e = ERR_INIT;
    struct cron_expr c;
    if (tz_load(j->zone, &z, &e) != 0 || cron_parse("*/30 1-3 * * *", &c, &e) != 0)
        return NULL;
    int64_t t = 1767225600; /* 2026-01-01T00:00:00Z */
    for (j->n = 0; j->n < 400; j->n++)
        if (cron_next(&c, z, t, &t, &e) != 0)
            break;
        else
            j->runs[j->n] = t;
    tz_free(z);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    static const char *const zones[] = {"Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                                        "Asia/Kolkata"};
    struct thread_job alone[4], together[4];
    for (int i = 0; i < 4; i++) {
        alone[i] = (struct thread_job){.zone = zones[i]};
        thread_run(&alone[i]);
        assert_int_equal(alone[i].n, 400);
    }
    for (int round = 0; round < 5; round++) {
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            together[i] = (struct thread_job){.zone = zones[i]};
            assert_int_equal(pthread_create(&th[i], NULL, thread_run, &together[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            assert_int_equal(pthread_join(th[i], NULL), 0);
            assert_int_equal(together[i].n, 400);
            assert_memory_equal(together[i].runs, alone[i].runs, sizeof(alone[i].runs));
        }
    }
    /* and the zones differ, so a mix-up would show */
    assert_memory_not_equal(alone[0].runs, alone[1].runs, sizeof(alone[0].runs));
}

/* ---- errors -------------------------------------------------------------------------- */

static void test_parse_errors(void **state)
{
    (void)state;
    static const struct {
        const char *expr, *msg;
    } cases[] = {
        {"0 25 * * *", "cron expression '0 25 * * *': field 2 (hour): 25 is out of range 0-23"},
        {"60 * * * *", "field 1 (minute): 60 is out of range 0-59"},
        {"* * 0 * *", "field 3 (day-of-month): 0 is out of range 1-31"},
        {"* * 32 * *", "field 3 (day-of-month): 32 is out of range 1-31"},
        {"* * * 13 *", "field 4 (month): 13 is out of range 1-12"},
        {"* * * 0 *", "field 4 (month): 0 is out of range 1-12"},
        {"* * * * 8", "field 5 (day-of-week): 8 is out of range 0-7"},
        {"99999999999999999999 * * * *", "field 1 (minute): 99999999999999999999 is out of range"},
        {"* * * FOO *", "field 4 (month): unknown month name 'FOO' (JAN-DEC)"},
        {"* * * JANUARY *", "unknown month name 'JANUARY'"},
        {"* * * * FUNDAY", "field 5 (day-of-week): unknown day name 'FUNDAY' (SUN-SAT)"},
        {"JAN * * * *", "field 1 (minute): 'JAN' is not a number"},
        {"* MON * * *", "field 2 (hour): 'MON' is not a number"},
        {"*/0 * * * *", "field 1 (minute): step 0 is out of range 1-59"},
        {"*/90 * * * *", "step 90 is out of range 1-59"},
        {"5/15 * * * *", "field 1 (minute): '5/15': a step needs a range or '*' (write 5-59/15)"},
        {"*/ * * * *", "the step after '/' is missing"},
        {"*/x * * * *", "the step after '/' is missing or not a number"},
        {"30-10 * * * *", "field 1 (minute): range 30-10 goes backwards"},
        {"* * * * FRI-MON", "field 5 (day-of-week): range FRI-MON goes backwards"},
        {"1,,2 * * * *", "field 1 (minute): empty element in the list '1,,2'"},
        {"1, * * * *", "empty element"},
        {",1 * * * *", "empty element"},
        {"1- * * * *", "field 1 (minute): a value is missing"},
        {"1-2-3 * * * *", "field 1 (minute): unexpected '-' in '1-2-3'"},
        {"-5 * * * *", "field 1 (minute): unexpected '-'"},
        {"0 0 * * MON#2", "field 5 (day-of-week): unexpected '#'"},
        {"** * * * *", "unexpected '*'"},
        {"? * * * *", "unexpected '?'"},
        {"", "empty cron expression"},
        {"   ", "empty cron expression"},
        {"* * * *", "cron expression '* * * *': 4 fields, 5 needed"},
        {"0 0 * * * *", "6 fields, 5 needed (minute hour day-of-month month day-of-week); seconds"},
        {"off", "1 field, 5 needed"},
        {"0 0 31 2 *", "cron expression '0 0 31 2 *' never matches"},
        {"0 0 30,31 2 *", "never matches"},
        {"0 0 31 4,6,9,11 *", "never matches"},
        {"0 0 31 2 */2", "never matches"},
        {"@reboot", "@reboot is not supported"},
        {"@fortnightly", "unknown macro"},
        {"@daily 5", "unknown macro"},
        {"0\x01 * * * *", "cron expression '0\\x01 * * * *': only printable ASCII"},
        {"0 0 * * 1\xc3\xa9", "only printable ASCII"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cron_expr c;
        struct err e = ERR_INIT;
        if (cron_parse(cases[i].expr, &c, &e) == 0)
            fail_msg("'%s' accepted", cases[i].expr);
        assert_int_equal(e.code, ERR_USAGE);
        if (!strstr(e.msg, cases[i].msg))
            fail_msg("'%s': message '%s' lacks '%s'", cases[i].expr, e.msg, cases[i].msg);
        assert_true(e.hint[0] != '\0');
    }
    char longexpr[CRON_TEXT_MAX + 10];
    memset(longexpr, ' ', sizeof(longexpr));
    memcpy(longexpr, "* * * * *", 9);
    longexpr[sizeof(longexpr) - 1] = '\0';
    struct cron_expr c;
    struct err e = ERR_INIT;
    assert_int_not_equal(cron_parse(longexpr, &c, &e), 0);
    assert_non_null(strstr(e.msg, "too long"));
    /* the engine refuses times outside the years 1-9999, and finds nothing past 9999 */
    struct tz *z = zone("UTC");
    int64_t next;
    assert_int_equal(cron_parse("0 0 29 2 *", &c, &e), 0);
    assert_int_not_equal(cron_next(&c, z, INT64_MAX / 2, &next, &e), 0);
    err_clear(&e);
    assert_int_not_equal(cron_next(&c, z, tz_days_from_civil(9997, 1, 1) * 86400, &next, &e), 0);
    assert_non_null(strstr(e.msg, "no run time"));
    tz_free(z);
}

/* ---- the configured schedules -------------------------------------------------------- */

static void test_schedule_config(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char *env = xasprintf("%s/env", dir);
    struct err e = ERR_INIT;
    const char *vars[] = {"BACKUP_SCHEDULE_DAILY", "BACKUP_SCHEDULE_WEEKLY",
                          "BACKUP_SCHEDULE_MONTHLY", "BACKUP_TZ"};
    for (size_t i = 0; i < 4; i++)
        unsetenv(vars[i]);
    static const char text[] = "BACKUP_SCHEDULE_WEEKLY='30 4 * * SAT'\n"
                               "BACKUP_SCHEDULE_MONTHLY=OFF\n"
                               "BACKUP_TZ=Europe/Berlin\n";
    assert_int_equal(fs_write_atomic(env, text, strlen(text), 0600, &e), 0);
    struct config cfg;
    assert_int_equal(config_load(&cfg, env, &e), 0);
    struct schedule_config s;
    assert_int_equal(schedule_config_load(&cfg, NULL, &s, &e), 0);
    assert_string_equal(tz_name(s.tz), "Europe/Berlin");
    assert_true(s.items[SCHEDULE_DAILY].enabled);
    assert_string_equal(s.items[SCHEDULE_DAILY].text, "0 3 * * *");
    assert_string_equal(s.items[SCHEDULE_DAILY].backup_type, "incremental");
    assert_string_equal(s.items[SCHEDULE_WEEKLY].text, "30 4 * * SAT");
    assert_false(s.items[SCHEDULE_MONTHLY].enabled);
    json_t *j = NULL;
    assert_int_equal(schedule_next_json(&s, utc("2026-03-28T12:00:00Z"), 2, &j, &e), 0);
    json_t *daily = json_array_get(json_object_get(j, "schedules"), 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(daily, "next"), 0)),
                        "2026-03-29T03:00:00+02:00");
    assert_string_equal(json_string_value(json_array_get(json_object_get(daily, "next"), 1)),
                        "2026-03-30T03:00:00+02:00");
    json_t *nr = json_object_get(j, "nextRuns");
    assert_string_equal(json_string_value(json_object_get(nr, "weekly")),
                        "2026-04-04T04:30:00+02:00");
    assert_true(json_is_null(json_object_get(nr, "monthly")));
    json_decref(j);
    schedule_config_free(&s);
    /* --tz wins over BACKUP_TZ; an unknown one is a usage error */
    assert_int_equal(schedule_config_load(&cfg, "America/New_York", &s, &e), 0);
    assert_string_equal(tz_name(s.tz), "America/New_York");
    schedule_config_free(&s);
    assert_int_not_equal(schedule_config_load(&cfg, "Nowhere/Else", &s, &e), 0);
    assert_int_equal(e.code, ERR_USAGE);
    assert_null(s.tz);
    config_free(&cfg);
    /* a bad expression or zone in the configuration: ERR_CONFIG naming the variable */
    setenv("BACKUP_SCHEDULE_DAILY", "0 3 * * 9", 1);
    assert_int_equal(config_load(&cfg, env, &e), 0);
    err_clear(&e);
    assert_int_not_equal(schedule_config_load(&cfg, NULL, &s, &e), 0);
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "BACKUP_SCHEDULE_DAILY: cron expression '0 3 * * 9': field 5"));
    unsetenv("BACKUP_SCHEDULE_DAILY");
    setenv("BACKUP_TZ", "Nowhere/Else", 1);
    err_clear(&e);
    assert_int_not_equal(schedule_config_load(&cfg, NULL, &s, &e), 0);
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "BACKUP_TZ: unknown time zone 'Nowhere/Else'"));
    unsetenv("BACKUP_TZ");
    config_free(&cfg);
    assert_true(schedule_is_off(" off "));
    assert_false(schedule_is_off("offf"));
    free(env);
    tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calendar),
        cmocka_unit_test(test_every_fifteen_minutes),
        cmocka_unit_test(test_steps_on_ranges),
        cmocka_unit_test(test_leap_days),
        cmocka_unit_test(test_day_of_month_and_week),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_macros),
        cmocka_unit_test(test_dst_berlin),
        cmocka_unit_test(test_dst_new_york),
        cmocka_unit_test(test_dst_other_zones),
        cmocka_unit_test(test_tz_offsets),
        cmocka_unit_test(test_tz_posix_rules),
        cmocka_unit_test(test_tz_errors),
        cmocka_unit_test(test_tz_local),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_schedule_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* libFuzzer harness: cron_parse and cron_next (src/sched/cron.c), with tz_load_posix
 * (src/sched/tz.c) for the zone.
 *
 * Input, as text lines: "<cron expression>\n<POSIX TZ rule>\n<Unix seconds>". The rule and the
 * time are optional: an empty or invalid rule means "CET-1CEST,M3.5.0,M10.5.0/3", no time
 * 2026-01-01T00:00:00Z. Three successive run times are computed; each must be after the
 * previous one and, unless it is the end of a daylight-saving gap, its wall time must match
 * the expression (both are promised by include/caris/cron.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/cron.h"
#include "caris/tz.h"

static const char DEFAULT_RULE[] = "CET-1CEST,M3.5.0,M10.5.0/3";

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Whether the wall time of t matches c (Vixie cron's day rule). */
static int wall_matches(const struct cron_expr *c, const struct tz *z, int64_t t)
{
    int64_t wall = t + tz_offset_at(z, t);
    int64_t days = floor_div(wall, 86400), secs = wall - days * 86400, y;
    int m, d;
    tz_civil_from_days(days, &y, &m, &d);
    int h = (int)(secs / 3600), mi = (int)(secs / 60 % 60);
    int dm = c->mdays >> d & 1, wm = c->wdays >> tz_weekday(days) & 1;
    int day = (c->mday_star || c->wday_star) ? dm && wm : dm || wm;
    return secs % 60 == 0 && (c->minutes >> mi & 1) && (c->hours >> h & 1) &&
           (c->months >> m & 1) && day;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    char *line[3] = {text, NULL, NULL};
    for (int i = 1; i < 3; i++) {
        char *nl = line[i - 1] ? strchr(line[i - 1], '\n') : NULL;
        if (nl) {
            *nl = '\0';
            line[i] = nl + 1;
        }
    }
    struct cron_expr c;
    struct err e = ERR_INIT;
    if (cron_parse(line[0], &c, &e) != 0) {
        free(text);
        return 0;
    }
    struct tz *z = NULL;
    if (!line[1] || !*line[1] || tz_load_posix(line[1], &z, &e) != 0) {
        if (tz_load_posix(DEFAULT_RULE, &z, &e) != 0)
            abort();
    }
    int64_t after = INT64_C(1767225600);
    if (line[2] && *line[2]) {
        long long v = strtoll(line[2], NULL, 10);
        /* years 1 to 9999 (cron_next's range), and a little beyond to test its check */
        if (v >= INT64_C(-62135596800) - 86400 && v <= INT64_C(253402300799) + 86400)
            after = v;
    }
    for (int i = 0; i < 3; i++) {
        int64_t next = 0;
        if (cron_next(&c, z, after, &next, &e) != 0)
            break;
        if (next <= after) {
            fprintf(stderr, "cron_next: %" PRId64 " is not after %" PRId64 "\n", next, after);
            abort();
        }
        /* a run at the end of a gap is at a transition, whatever its wall time */
        if (!wall_matches(&c, z, next) && tz_offset_at(z, next - 1) == tz_offset_at(z, next)) {
            char iso[64];
            tz_format_iso(z, next, iso, sizeof(iso));
            fprintf(stderr, "cron_next: %s (%" PRId64 ") does not match '%s'\n", iso, next,
                    line[0]);
            abort();
        }
        after = next;
    }
    tz_free(z);
    free(text);
    return 0;
}

/* libFuzzer harness: tz_load_posix on arbitrary strings, then tz_offset_at,
 * tz_next_transition, tz_wall_to_time and tz_format_iso (src/sched/tz.c).
 *
 * Input: "<POSIX TZ rule>\n" followed by up to 8 times, 8 bytes each (little-endian, folded
 * into about +-12,700 years around 1970); without them a few fixed times are used. For each
 * time t: the next transition must be after t, and the wall time of t must map back to an
 * instant with that wall time, not after t (t itself when the wall time exists once). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/tz.h"

#define SPAN INT64_C(400000000000) /* seconds: about 12,700 years */

static void fail(const char *what, const char *rule, int64_t t, int64_t r)
{
    fprintf(stderr, "tz: %s (rule '%s', t %" PRId64 ", got %" PRId64 ")\n", what, rule, t, r);
    abort();
}

static void check_time(const struct tz *z, const char *rule, int64_t t)
{
    char iso[64];
    int32_t off = tz_offset_at(z, t);
    if (off < -90000 || off > 93600)
        fail("offset out of range", rule, t, off);
    tz_format_iso(z, t, iso, sizeof(iso));
    int64_t next;
    if (tz_next_transition(z, t, &next) && next <= t)
        fail("next transition not after t", rule, t, next);
    enum tz_wall_kind kind;
    int64_t wall = t + off;
    int64_t r = tz_wall_to_time(z, wall, &kind);
    if (kind == TZ_WALL_SKIPPED)
        fail("the wall time of an instant is called skipped", rule, t, r);
    if (r + tz_offset_at(z, r) != wall)
        fail("tz_wall_to_time gives an instant of another wall time", rule, t, r);
    if (r > t || (kind == TZ_WALL_ONCE && r != t))
        fail("tz_wall_to_time misses the first occurrence", rule, t, r);
    /* an arbitrary wall time near t: either an instant with that wall time, or a gap's end */
    r = tz_wall_to_time(z, wall + 1800, &kind);
    if (kind != TZ_WALL_SKIPPED && r + tz_offset_at(z, r) != wall + 1800)
        fail("tz_wall_to_time gives an instant of another wall time (+1800)", rule, t, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024)
        return 0;
    const uint8_t *nl = memchr(data, '\n', size);
    size_t rlen = nl ? (size_t)(nl - data) : size;
    char *rule = malloc(rlen + 1);
    memcpy(rule, data, rlen);
    rule[rlen] = '\0';
    struct tz *z = NULL;
    struct err e = ERR_INIT;
    if (tz_load_posix(rule, &z, &e) != 0) {
        free(rule);
        return 0;
    }
    (void)tz_name(z);
    const uint8_t *p = nl ? nl + 1 : data + size;
    size_t left = (size_t)(data + size - p), n = 0;
    for (; left >= 8 && n < 8; p += 8, left -= 8, n++) {
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u |= (uint64_t)p[i] << (8 * i);
        check_time(z, rule, (int64_t)(u % (2 * (uint64_t)SPAN)) - SPAN);
    }
    if (n == 0) {
        static const int64_t fixed[] = {0, INT64_C(1711846800), INT64_C(1729994400),
                                        INT64_C(-2208988800), INT64_C(253402300799)};
        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
            check_time(z, rule, fixed[i]);
    }
    tz_free(z);
    free(rule);
    return 0;
}

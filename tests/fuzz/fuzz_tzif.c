/* libFuzzer harness: the TZif parser of src/sched/tz.c (tzif_parse, reached by tz_load with
 * an absolute path), then the zone's conversions and cron_next (src/sched/cron.c) in it.
 *
 * Input: a TZif file (RFC 8536). It is written to a memfd and loaded as
 * "/proc/self/fd/<n>", so nothing touches the disk. A loaded zone's transitions are walked
 * from 1800 on (at most 64), and at each the offset, the ISO form and the wall-to-instant
 * mapping are computed; then two cron expressions are run in the zone. Only crashes,
 * sanitizer reports and timeouts count: a malformed zone may convert inconsistently. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "caris/cron.h"
#include "caris/tz.h"

static int memfd = -1;
static char path[64];

static void exercise(const struct tz *z, int64_t t)
{
    char iso[64];
    enum tz_wall_kind kind;
    int32_t off = tz_offset_at(z, t);
    tz_format_iso(z, t, iso, sizeof(iso));
    (void)tz_wall_to_time(z, t + off, &kind);
    (void)tz_wall_to_time(z, t + off - 1800, &kind);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memfd < 0) {
        memfd = memfd_create("fuzz-tzif", 0);
        if (memfd < 0)
            abort();
        snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
    }
    if (ftruncate(memfd, 0) != 0 || pwrite(memfd, data, size, 0) != (ssize_t)size)
        abort();
    struct tz *z = NULL;
    struct err e = ERR_INIT;
    if (tz_load(path, &z, &e) != 0)
        return 0;
    (void)tz_name(z);
    int64_t t = INT64_C(-5364662400); /* 1800-01-01 */
    exercise(z, t);
    for (int i = 0; i < 64; i++) {
        int64_t next;
        if (!tz_next_transition(z, t, &next) || next <= t || next > INT64_C(253402300799))
            break;
        t = next;
        exercise(z, t - 1);
        exercise(z, t);
    }
    static const char *const exprs[] = {"*/7 * * * *", "30 2 * 3,10 0"};
    for (size_t i = 0; i < sizeof(exprs) / sizeof(exprs[0]); i++) {
        struct cron_expr c;
        int64_t after = INT64_C(1700000000), next;
        if (cron_parse(exprs[i], &c, &e) != 0)
            abort();
        for (int k = 0; k < 3 && cron_next(&c, z, after, &next, &e) == 0; k++)
            after = next;
    }
    tz_free(z);
    return 0;
}

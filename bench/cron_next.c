/* How long cron_next takes: for each expression, the mean time of one call over many
 * successive runs (each call starts from the previous run), in Europe/Berlin; and the worst
 * case, an impossible day (31 February, which cron_parse refuses, built here by hand) that
 * searches the whole 400-year horizon and gives up. A program, not a test: always exits 0.
 *
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude bench/cron_next.c build/libcaris.a \
 *       -lcrypto -lsodium -lzstd -ljansson -lpq -lpthread -o /tmp/cron_next && /tmp/cron_next */
#include <stdio.h>
#include <time.h>

#include "caris/cron.h"
#include "caris/tz.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void)
{
    struct tz *z = NULL;
    struct err e = ERR_INIT;
    if (tz_load("Europe/Berlin", &z, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return 0;
    }
    static const struct {
        const char *expr;
        int runs;
    } cases[] = {
        {"*/15 * * * *", 200000}, {"0 3 * * *", 100000},    {"30 2 * * *", 100000},
        {"0 2 * * 0", 50000},     {"0 1 1 * *", 20000},     {"0 0 13 * FRI", 20000},
        {"0 0 29 2 *", 2000},     {"0 0 29 2 */7", 200},
    };
    const int64_t start = 1767225600; /* 2026-01-01T00:00:00Z */
    printf("%-16s %8s %12s  %s\n", "expression", "runs", "per call", "last run");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cron_expr c;
        if (cron_parse(cases[i].expr, &c, &e) != 0) {
            fprintf(stderr, "%s\n", e.msg);
            continue;
        }
        int64_t t = start;
        double t0 = now_s();
        int n = 0;
        for (; n < cases[i].runs; n++)
            if (cron_next(&c, z, t, &t, &e) != 0)
                break;
        double dt = now_s() - t0;
        char iso[48];
        tz_format_iso(z, t, iso, sizeof(iso));
        printf("%-16s %8d %9.2f us  %s\n", cases[i].expr, n, dt / n * 1e6, iso);
    }
    /* 31 February: every 1 February..28/29 February of 400 years is looked at */
    struct cron_expr never = {.minutes = 1, .hours = 1, .mdays = 1u << 31, .months = 1u << 2,
                              .wdays = 0x7f, .mday_star = false, .wday_star = true};
    double t0 = now_s();
    int64_t t;
    int rc = cron_next(&never, z, start, &t, &e);
    printf("%-16s %8s %9.2f us  %s\n", "0 0 31 2 * (raw)", "-", (now_s() - t0) * 1e6,
           rc ? e.msg : "matched?!");
    tz_free(z);
    return 0;
}

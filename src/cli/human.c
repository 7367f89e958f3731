/* Human output shared by the commands: times in BACKUP_TZ (else the local zone) with their
 * offset, to the second; short durations. JSON output keeps its own (UTC) forms. */
#include <stdio.h>

#include "caris/core.h"
#include "caris/schedule.h"
#include "caris/tz.h"

#include "cli.h"

/* Loaded once, at the first time printed; a BACKUP_TZ that does not load falls back to UTC
 * with one warning (the output then says +00:00, never a wrong local time). */
static const struct globals *display_g;

void cli_human_init(const struct globals *g)
{
    display_g = g;
}

static const struct tz *display_zone(void)
{
    static struct tz *zone;
    static bool tried;
    if (!tried && display_g) {
        tried = true;
        const struct globals *g = display_g;
        struct err e = ERR_INIT;
        if (schedule_tz_load(config_get(&g->cfg, "BACKUP_TZ"), ERR_CONFIG, "BACKUP_TZ", &zone,
                             &e) != 0) {
            char *m = xasprintf("%s; times are shown in UTC", e.msg);
            cli_warn(NULL, m, NULL);
            free(m);
            err_clear(&e);
            if (tz_load("UTC", &zone, &e) != 0)
                zone = NULL;
        }
    }
    return zone;
}

void cli_human_time(int64_t unix_sec, char *out, size_t n)
{
    const struct tz *z = display_zone();
    if (z && n >= 32)
        tz_format_iso(z, unix_sec, out, n);
    else
        snprintf(out, n, "@%lld", (long long)unix_sec);
}

void cli_human_iso(const char *iso, char *out, size_t n)
{
    int64_t ns;
    if (iso && time_parse_iso(iso, &ns) == 0)
        cli_human_time(ns / 1000000000 - (ns % 1000000000 < 0), out, n);
    else
        snprintf(out, n, "%s", iso ? iso : "?");
}

void cli_human_duration(int64_t ms, char *out, size_t n)
{
    if (ms < 0)
        snprintf(out, n, "?");
    else if (ms < 1000)
        snprintf(out, n, "%lldms", (long long)ms);
    else if (ms < 60000)
        snprintf(out, n, "%.1fs", (double)(ms / 100) / 10.0);
    else if (ms < 3600000)
        snprintf(out, n, "%lldm%02llds", (long long)(ms / 60000), (long long)(ms / 1000 % 60));
    else
        snprintf(out, n, "%lldh%02lldm", (long long)(ms / 3600000), (long long)(ms / 60000 % 60));
}

/* schedule next: the next run times of the configured schedules, or of a cron expression.
 * Parse, call the schedule module (caris/schedule.h), print. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"
#include "caris/cron.h"
#include "caris/retention.h"
#include "caris/schedule.h"

#include "cli.h"

static const char USAGE[] =
    "usage: caris-backup [--json] schedule next [--cron EXPR] [--tz ZONE] [--from TIME]\n"
    "                                       [--count N] [--json]\n"
    "       caris-backup schedule status [--json]   (the daemon's status: `schedule status "
    "--help`)\n"
    "       caris-backup schedule cancel [--json]   (stop the daemon's running job: `schedule "
    "cancel --help`)\n"
    "\n"
    "Prints the next run times, as ISO-8601 times with their UTC offset, of the configured\n"
    "schedules (the daemon's):\n"
    "  BACKUP_SCHEDULE_DAILY    incremental backup, default '0 3 * * *'\n"
    "  BACKUP_SCHEDULE_WEEKLY   full backup, default '0 2 * * 0'\n"
    "  BACKUP_SCHEDULE_MONTHLY  full (archival) backup, default '0 1 1 * *'\n"
    "each a cron expression or 'off', read in BACKUP_TZ (default: the local time zone);\n"
    "or of EXPR.\n"
    "\n"
    "  --cron EXPR   a cron expression: minute hour day-of-month month day-of-week, each\n"
    "                *, N, N-M, */S, N-M/S or a list of them (names JAN-DEC, SUN-SAT;\n"
    "                7 is Sunday too), or @hourly @daily @weekly @monthly @yearly. When both\n"
    "                day fields are restricted, a day matching either one runs (Vixie cron)\n"
    "  --tz ZONE     an IANA time zone such as Europe/Berlin (instead of BACKUP_TZ)\n"
    "  --from TIME   list the runs strictly after TIME (default: now): 2026-03-29T01:00:00Z,\n"
    "                2026-03-29T03:00:00+02:00, or 2026-03-29 03:00 in the zone\n"
    "  --count N     run times per schedule, 1-1000 (default 5 with --cron, else 1)\n"
    "\n"
    "Daylight saving time: a time the clocks skip runs once, right after the gap; a time\n"
    "they pass twice runs once, the first time (docs/BACKUP_RECOVERY.md, \"Schedules\").\n";

static int cmd_schedule_next(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"cron", required_argument, 0, 'c'},
                                         {"tz", required_argument, 0, 'z'},
                                         {"from", required_argument, 0, 'f'},
                                         {"count", required_argument, 0, 'n'},
                                         {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *cron_text = NULL, *tz_opt = NULL, *from = NULL;
    long count = 0;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        switch (c) {
        case 'c':
            cron_text = optarg;
            break;
        case 'z':
            tz_opt = optarg;
            if (!*tz_opt)
                return usage_error("--tz needs a zone name such as Europe/Berlin%s", NULL);
            break;
        case 'f':
            from = optarg;
            break;
        case 'n': {
            unsigned long long v;
            if (cli_parse_uint(optarg, 1, 1000, &v) != 0)
                return usage_error("--count takes a number from 1 to 1000, got '%s'", optarg);
            count = (long)v;
            break;
        }
        case 'j':
            g->json = true;
            break;
        case 'h':
            fputs(USAGE, stdout);
            return 0;
        default:
            return cli_opt_fail();
        }
    }
    if (optind < argc)
        return usage_error("schedule next takes no arguments, got '%s'", argv[optind]);
    if (count == 0)
        count = cron_text ? 5 : 1;

    struct err e = ERR_INIT;
    struct cron_expr expr;
    if (cron_text && schedule_is_off(cron_text))
        return usage_error("--cron %s: 'off' turns a configured schedule off; give a cron "
                           "expression",
                           cron_text);
    if (cron_text && cron_parse(cron_text, &expr, &e) != 0)
        return fail(&e);
    /* Without --cron the schedules come from the configuration, with their zone. */
    struct schedule_config sc = {0};
    struct tz *z = NULL;
    if (cron_text) {
        if (tz_opt)
            c = schedule_tz_load(tz_opt, ERR_USAGE, "--tz", &z, &e);
        else
            c = schedule_tz_load(config_get(&g->cfg, "BACKUP_TZ"), ERR_CONFIG, "BACKUP_TZ", &z, &e);
        if (c != 0)
            return fail(&e);
    } else {
        if (schedule_config_load(&g->cfg, tz_opt, &sc, &e) != 0)
            return fail(&e);
        z = sc.tz;
    }

    int64_t after = time_now_ns() / 1000000000;
    int code = 0;
    json_t *j = NULL;
    if (from) {
        /* A time without an offset is read in the schedule's zone. */
        int64_t ns;
        const char *zone = tz_opt ? tz_opt : config_get(&g->cfg, "BACKUP_TZ");
        if (caris_time_parse(from, zone, &ns, &e) != 0) {
            code = fail(&e);
            goto out;
        }
        after = ns / 1000000000;
    }
    if (cron_text) {
        int64_t *times = xcalloc((size_t)count, sizeof(*times));
        if (schedule_next_runs(&expr, z, after, (size_t)count, times, &e) != 0) {
            free(times);
            code = fail(&e);
            goto out;
        }
        char iso[48];
        tz_format_iso(z, after, iso, sizeof(iso));
        j = json_pack("{s:s, s:s, s:s, s:[]}", "tz", tz_name(z), "from", iso, "cron", cron_text,
                      "next");
        for (long i = 0; i < count; i++) {
            tz_format_iso(z, times[i], iso, sizeof(iso));
            json_array_append_new(json_object_get(j, "next"), json_string(iso));
        }
        free(times);
        if (!g->json) {
            size_t i;
            json_t *t;
            json_array_foreach(json_object_get(j, "next"), i, t) puts(json_string_value(t));
        }
    } else {
        if (schedule_next_json(&sc, after, (size_t)count, &j, &e) != 0) {
            code = fail(&e);
            goto out;
        }
        if (!g->json) {
            size_t i;
            json_t *s;
            json_array_foreach(json_object_get(j, "schedules"), i, s)
            {
                json_t *next = json_object_get(s, "next");
                const char *cron = json_string_value(json_object_get(s, "cron"));
                if (!json_is_true(json_object_get(s, "enabled"))) {
                    printf("%-8s %-16s off\n", json_string_value(json_object_get(s, "name")), cron);
                    continue;
                }
                for (size_t k = 0; k < json_array_size(next); k++)
                    printf("%-8s %-16s %-12s %s\n",
                           k ? "" : json_string_value(json_object_get(s, "name")), k ? "" : cron,
                           k ? "" : json_string_value(json_object_get(s, "type")),
                           json_string_value(json_array_get(next, k)));
            }
            printf("(time zone %s)\n", tz_name(z));
        }
    }
    if (g->json)
        print_json(j);
out:
    json_decref(j);
    if (cron_text)
        tz_free(z);
    else
        schedule_config_free(&sc);
    return code;
}

int cmd_schedule(struct globals *g, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_missing(USAGE, "schedule needs a subcommand: next, status or cancel");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(USAGE, stdout);
        return 0;
    }
    if (strcmp(argv[1], "next") == 0)
        return cmd_schedule_next(g, argc - 1, argv + 1);
    if (strcmp(argv[1], "status") == 0)
        return cmd_schedule_status(g, argc, argv);
    if (strcmp(argv[1], "cancel") == 0)
        return cmd_schedule_cancel(g, argc, argv);
    return usage_error("unknown schedule command '%s' (next, status, cancel)", argv[1]);
}

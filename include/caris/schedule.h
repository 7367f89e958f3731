/* The configured backup schedules (the seed's backupScheduler.start({daily, weekly,
 * monthly})): read from the configuration once, used by `schedule next` and by the daemon.
 *
 *   BACKUP_SCHEDULE_DAILY    default "0 3 * * *"  incremental backup
 *   BACKUP_SCHEDULE_WEEKLY   default "0 2 * * 0"  full backup
 *   BACKUP_SCHEDULE_MONTHLY  default "0 1 1 * *"  full backup (archival)
 *   BACKUP_TZ                the zone the expressions are read in (default: the local one)
 *
 * Each schedule is a cron expression (caris/cron.h) or "off". */
#ifndef CARIS_SCHEDULE_H
#define CARIS_SCHEDULE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/config.h"
#include "caris/cron.h"
#include "caris/err.h"
#include "caris/tz.h"

enum { SCHEDULE_DAILY, SCHEDULE_WEEKLY, SCHEDULE_MONTHLY, SCHEDULE_COUNT };

struct schedule {
    const char *name;             /* "daily", "weekly", "monthly" */
    const char *variable;         /* "BACKUP_SCHEDULE_DAILY", ... */
    const char *backup_type;      /* "incremental" or "full" */
    bool enabled;                 /* false: "off" */
    char text[CRON_TEXT_MAX + 1]; /* the expression as configured (or the default), or "off" */
    struct cron_expr cron;        /* when enabled */
};

struct schedule_config {
    struct schedule items[SCHEDULE_COUNT];
    struct tz *tz; /* owned */
};

/* Reads the three schedules and the zone. tz_name: a zone that overrides BACKUP_TZ (e.g. a
 * --tz option; NULL for none). An invalid expression is ERR_CONFIG naming the variable and
 * the field; an unknown zone is ERR_CONFIG naming BACKUP_TZ (ERR_USAGE when it came from
 * tz_name). On failure nothing is left to free. */
int schedule_config_load(const struct config *c, const char *tz_name, struct schedule_config *s,
                         struct err *e);
void schedule_config_free(struct schedule_config *s);

/* Whether text turns a schedule off ("off", any case, blanks around it ignored). */
bool schedule_is_off(const char *text);

/* Loads a zone for a schedule: tz_name, or the process's local zone when NULL or empty (an
 * unknown or unreadable zone in TZ is ERR_CONFIG). code: the error class for an unknown
 * tz_name or a file that is not a zone (ERR_USAGE for an option, ERR_CONFIG for a
 * variable); what: how to name the source in the message ("--tz", "BACKUP_TZ"). */
int schedule_tz_load(const char *tz_name, enum err_code code, const char *what, struct tz **out,
                     struct err *e);

/* The next n run times (Unix seconds) of an expression strictly after `after`, in order. */
int schedule_next_runs(const struct cron_expr *c, const struct tz *z, int64_t after, size_t n,
                       int64_t *out, struct err *e);

/* JSON of the schedules' next n runs after `after`:
 * {"tz", "from", "schedules": [{"name", "variable", "type", "cron", "enabled", "next": [ISO
 * times with offset]}], "nextRuns": {"daily": first time or null, ...}} */
int schedule_next_json(const struct schedule_config *s, int64_t after, size_t n, json_t **out,
                       struct err *e);

#endif

/* Cron expressions: parsing and "when is the next run", in a time zone.
 *
 * Grammar (docs/BACKUP_RECOVERY.md, "Schedules"): five fields separated by blanks,
 *   minute (0-59)  hour (0-23)  day-of-month (1-31)  month (1-12, JAN-DEC)
 *   day-of-week (0-7, SUN-SAT; 0 and 7 are Sunday)
 * each a comma-separated list of `*`, `N` and `N-M`, where `*` and `N-M` may be followed
 * by `/S` (every S-th value of the range); names are case-insensitive, also in ranges
 * (MON-FRI). Or one of @yearly (@annually), @monthly, @weekly, @daily
 * (@midnight), @hourly. `off` is not an expression: callers that accept it handle it.
 *
 * Day matching follows Vixie cron: when both day fields are restricted (neither begins with
 * `*`), a day matches when either does; otherwise both must.
 *
 * Time zones: cron_next works in wall-clock time of a struct tz (caris/tz.h), without
 * setenv("TZ") or localtime(); it is pure and thread-safe. A wall time skipped when the
 * clocks go forward runs once, at the first instant after the gap; a wall time that occurs
 * twice when the clocks go back runs once, at its first occurrence. */
#ifndef CARIS_CRON_H
#define CARIS_CRON_H

#include <stdbool.h>
#include <stdint.h>

#include "caris/err.h"
#include "caris/tz.h"

#define CRON_TEXT_MAX 200

/* A parsed expression: one bit per allowed value. Plain data; copy freely. */
struct cron_expr {
    uint64_t minutes; /* bit m: minute m, 0-59 */
    uint32_t hours;   /* bit h: hour h, 0-23 */
    uint32_t mdays;   /* bit d: day of month d, 1-31 */
    uint16_t months;  /* bit m: month m, 1-12 */
    uint8_t wdays;    /* bit d: day of week d, 0 (Sunday) - 6 */
    bool mday_star;   /* the day-of-month field began with '*' */
    bool wday_star;   /* the day-of-week field began with '*' */
};

/* Parses text (at most CRON_TEXT_MAX characters). ERR_USAGE with a message that names the
 * field: "cron expression '0 25 * * *': field 2 (hour): 25 is out of range 0-23". An
 * expression that can never match ("0 0 31 2 *") is an error too. */
int cron_parse(const char *text, struct cron_expr *c, struct err *e);

/* The first run time strictly after `after` (Unix seconds) in zone z, into *next (Unix
 * seconds, a whole minute of wall time, or the end of a daylight-saving gap). Skips field by
 * field (month, day, hour, minute), never minute by minute; finishes in microseconds. Fails
 * (ERR_USAGE) only when no run exists before the year 9999. */
int cron_next(const struct cron_expr *c, const struct tz *z, int64_t after, int64_t *next,
              struct err *e);

#endif

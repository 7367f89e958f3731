/* Time zones without the C library's global state: a zone is loaded from its TZif file
 * (RFC 8536; /usr/share/zoneinfo, Debian package tzdata) or from a POSIX TZ string into a
 * struct tz that is immutable afterwards. Nothing here calls setenv("TZ"), tzset() or
 * localtime(): any number of threads may load zones and convert times at once, and one
 * loaded zone may be shared between threads without locking.
 *
 * Times are Unix seconds (int64_t, leap seconds not counted). A "wall" time is a local
 * calendar time written as the seconds it would be if it were UTC
 * (tz_days_from_civil(y, m, d) * 86400 + h * 3600 + min * 60 + s); wall = t + offset. */
#ifndef CARIS_TZ_H
#define CARIS_TZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/err.h"

#define TZ_ZONEINFO_DIR "/usr/share/zoneinfo"

struct tz;

/* Loads a zone by IANA name ("Europe/Berlin", "UTC"; a leading ':' is ignored) from
 * TZ_ZONEINFO_DIR, or from an absolute path to a TZif file. "UTC" works without tzdata.
 * ERR_NOT_FOUND for an unknown name, ERR_DAMAGE for a file that is not valid TZif (or
 * counts leap seconds, as the right/ zones do); the caller may recode them (ERR_USAGE for
 * an option, ERR_CONFIG for a variable). */
int tz_load(const char *name, struct tz **out, struct err *e);

/* A zone from a POSIX TZ rule string such as "CET-1CEST,M3.5.0,M10.5.0/3" (POSIX.1-2017
 * section 8.3, with RFC 8536's extension of hours up to 167 in rule times). */
int tz_load_posix(const char *rule, struct tz **out, struct err *e);

/* The process's local zone as the C library would pick it, but without touching its state:
 * the TZ environment variable (a zone name, ":name", an absolute path or a POSIX rule;
 * empty = UTC), else /etc/localtime, else UTC. Reads the environment: call it before other
 * threads could call setenv(). */
int tz_load_local(struct tz **out, struct err *e);

void tz_free(struct tz *z);

/* The name it was loaded by ("Europe/Berlin"; for the local zone the name /etc/localtime
 * links to, else "localtime"). */
const char *tz_name(const struct tz *z);

/* Seconds east of UTC in effect at t (Berlin in summer: 7200). */
int32_t tz_offset_at(const struct tz *z, int64_t t);

/* The first instant after t at which the offset may change (transitions that change only
 * the zone's abbreviation are reported too). false when there is none (a fixed zone). */
bool tz_next_transition(const struct tz *z, int64_t t, int64_t *next);

/* How a wall time maps to instants. */
enum tz_wall_kind {
    TZ_WALL_ONCE,    /* it exists once */
    TZ_WALL_TWICE,   /* it exists twice (the clocks went back): the first is returned */
    TZ_WALL_SKIPPED, /* it does not exist (the clocks went forward over it): the end of the
                        gap is returned, the first instant after it */
};
/* The instant a wall time names, by the rules of tz_wall_kind. kind may be NULL. */
int64_t tz_wall_to_time(const struct tz *z, int64_t wall, enum tz_wall_kind *kind);

/* "2026-03-29T03:00:00+02:00" (seconds in the offset only when it has them, as local mean
 * times before 1900 do). out >= 32 bytes. */
void tz_format_iso(const struct tz *z, int64_t t, char *out, size_t n);

/* Proleptic Gregorian calendar helpers. m is 1-12, d 1-31. */
int64_t tz_days_from_civil(int64_t y, int m, int d); /* days since 1970-01-01 */
void tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
int tz_weekday(int64_t days); /* 0 = Sunday .. 6 = Saturday */
int tz_days_in_month(int64_t y, int m);

#endif

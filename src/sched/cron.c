/* Cron expressions: see include/caris/cron.h for the grammar and the rules. */
#include "caris/cron.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "caris/core.h"

static const char HINT_FIELDS[] =
    "five fields: minute (0-59) hour (0-23) day-of-month (1-31) month (1-12 or JAN-DEC) "
    "day-of-week (0-7 or SUN-SAT, 0 and 7 are Sunday), each *, N, N-M, */S or N-M/S, or a "
    "comma-separated list of them; or @hourly, @daily, @weekly, @monthly, @yearly";

static const char *const MONTH_NAMES[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                          "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const DAY_NAMES[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

static const struct field_def {
    const char *name;
    int min, max;
    const char *const *names; /* names[i] stands for min + i */
    size_t nnames;
    const char *what; /* in "unknown month name" */
} FIELDS[5] = {
    {"minute", 0, 59, NULL, 0, NULL},           {"hour", 0, 23, NULL, 0, NULL},
    {"day-of-month", 1, 31, NULL, 0, NULL},     {"month", 1, 12, MONTH_NAMES, 12, "month"},
    {"day-of-week", 0, 7, DAY_NAMES, 7, "day"},
};

static const struct {
    const char *name, *expr;
} MACROS[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

/* ---- parsing ------------------------------------------------------------------------- */

/* One value (a number or, where the field has them, a name) at *p. */
static int parse_value(const struct field_def *f, const char **p, const char *end, int *out,
                       char *why, size_t whyn)
{
    const char *s = *p;
    if (s < end && isdigit((unsigned char)*s)) {
        long v = 0;
        while (s < end && isdigit((unsigned char)*s)) {
            if (v < 100000)
                v = v * 10 + (*s - '0');
            s++;
        }
        if (v < f->min || v > f->max) {
            snprintf(why, whyn, "%.*s is out of range %d-%d", (int)(s - *p), *p, f->min, f->max);
            return -1;
        }
        *out = (int)v;
        *p = s;
        return 0;
    }
    if (s < end && isalpha((unsigned char)*s)) {
        while (s < end && isalpha((unsigned char)*s))
            s++;
        int n = (int)(s - *p);
        if (!f->names) {
            snprintf(why, whyn, "'%.*s' is not a number", n > 20 ? 20 : n, *p);
            return -1;
        }
        for (size_t i = 0; i < f->nnames; i++) {
            if (n == 3 && strncasecmp(*p, f->names[i], 3) == 0) {
                *out = f->min + (int)i;
                *p = s;
                return 0;
            }
        }
        snprintf(why, whyn, "unknown %s name '%.*s' (%s-%s)", f->what, n > 20 ? 20 : n, *p,
                 f->names[0], f->names[f->nnames - 1]);
        return -1;
    }
    if (s < end)
        snprintf(why, whyn, "unexpected '%c'", *s);
    else
        snprintf(why, whyn, "a value is missing");
    return -1;
}

/* One field, s[0..len). Sets the bits of the values it allows. */
static int parse_field(const struct field_def *f, const char *s, size_t len, uint64_t *bits,
                       bool *star, char *why, size_t whyn)
{
    const char *end = s + len;
    *bits = 0;
    *star = s[0] == '*'; /* as Vixie cron decides whether a day field is restricted */
    for (const char *p = s; p <= end;) {
        const char *elem = p;
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *eend = comma ? comma : end;
        if (elem == eend) {
            snprintf(why, whyn, "empty element in the list '%.*s'", (int)len, s);
            return -1;
        }
        int lo, hi, step = 1;
        bool range = false;
        if (*p == '*') {
            lo = f->min;
            hi = f->max;
            range = true;
            p++;
        } else {
            if (parse_value(f, &p, eend, &lo, why, whyn) != 0)
                return -1;
            hi = lo;
            if (p < eend && *p == '-') {
                p++;
                if (parse_value(f, &p, eend, &hi, why, whyn) != 0)
                    return -1;
                range = true;
                if (hi < lo) {
                    snprintf(why, whyn,
                             "range %.*s goes backwards (write it as two ranges, e.g. "
                             "%d-%d,%d-%d)",
                             (int)(p - elem), elem, lo, f->max, f->min, hi);
                    return -1;
                }
            }
        }
        if (p < eend && *p == '/') {
            if (!range) {
                snprintf(why, whyn, "'%.*s': a step needs a range or '*' (write %d-%d%.*s)",
                         (int)(eend - elem), elem, lo, f->max, (int)(eend - p), p);
                return -1;
            }
            p++;
            const char *ds = p;
            long v = 0;
            while (p < eend && isdigit((unsigned char)*p)) {
                if (v < 100000)
                    v = v * 10 + (*p - '0');
                p++;
            }
            if (p == ds) {
                snprintf(why, whyn, "'%.*s': the step after '/' is missing or not a number",
                         (int)(eend - elem), elem);
                return -1;
            }
            if (v < 1 || v > f->max) {
                snprintf(why, whyn, "step %.*s is out of range 1-%d", (int)(p - ds), ds, f->max);
                return -1;
            }
            step = (int)v;
        }
        if (p != eend) {
            snprintf(why, whyn, "unexpected '%c' in '%.*s'", *p, (int)(eend - elem), elem);
            return -1;
        }
        for (int v = lo; v <= hi; v += step)
            *bits |= 1ull << v;
        p = eend + 1;
    }
    return 0;
}

/* Whether some month of the expression has some day of it (29 February counts: it occurs
 * every 4 to 8 years). Over the 400-year cycle of the calendar every date falls on every
 * weekday, so an expression with such a day matches some day, whatever its weekdays. */
static bool days_possible(const struct cron_expr *c)
{
    static const int longest[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (!c->mday_star && !c->wday_star)
        return true; /* either field matches: every month has every weekday */
    for (int m = 1; m <= 12; m++)
        if ((c->months >> m & 1) && (c->mdays & ((2ull << longest[m - 1]) - 2)))
            return true;
    return false;
}

int cron_parse(const char *text, struct cron_expr *c, struct err *e)
{
    memset(c, 0, sizeof(*c));
    size_t tlen = strlen(text);
    char shown[CRON_TEXT_MAX + 8];
    str_escape(text, tlen, shown, sizeof(shown));
    if (tlen > CRON_TEXT_MAX)
        return err_set(e, ERR_USAGE, HINT_FIELDS,
                       "cron expression is too long (%zu characters, at most %d)", tlen,
                       CRON_TEXT_MAX);
    for (size_t i = 0; i < tlen; i++)
        if (!isprint((unsigned char)text[i]) && text[i] != '\t')
            return err_set(e, ERR_USAGE, HINT_FIELDS,
                           "cron expression '%s': only printable ASCII characters are allowed",
                           shown);
    const char *s = text;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0)
        return err_set(e, ERR_USAGE, HINT_FIELDS, "empty cron expression");
    if (s[0] == '@') {
        for (size_t i = 0; i < sizeof(MACROS) / sizeof(MACROS[0]); i++)
            if (strlen(MACROS[i].name) == n && strncasecmp(s, MACROS[i].name, n) == 0)
                return cron_parse(MACROS[i].expr, c, e);
        if (n == 7 && strncasecmp(s, "@reboot", 7) == 0)
            return err_set(e, ERR_USAGE, HINT_FIELDS,
                           "cron expression '%s': @reboot is not supported (schedules run at "
                           "times; missed runs are caught up when the daemon starts)",
                           shown);
        return err_set(e, ERR_USAGE, HINT_FIELDS,
                       "cron expression '%s': unknown macro (known: @yearly, @annually, "
                       "@monthly, @weekly, @daily, @midnight, @hourly)",
                       shown);
    }
    /* Split on blanks. */
    const char *start[6];
    size_t len[6];
    int nf = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && (s[i] == ' ' || s[i] == '\t'))
            i++;
        size_t j = i;
        while (j < n && s[j] != ' ' && s[j] != '\t')
            j++;
        if (nf < 6) {
            start[nf] = s + i;
            len[nf] = j - i;
        }
        nf++;
        i = j;
    }
    if (nf != 5)
        return err_set(e, ERR_USAGE, HINT_FIELDS,
                       "cron expression '%s': %d field%s, 5 needed (minute hour day-of-month "
                       "month day-of-week)%s",
                       shown, nf, nf == 1 ? "" : "s",
                       nf == 6 ? "; seconds and years are not supported" : "");
    uint64_t bits[5];
    bool star[5];
    for (int i = 0; i < 5; i++) {
        char why[256];
        if (parse_field(&FIELDS[i], start[i], len[i], &bits[i], &star[i], why, sizeof(why)) != 0)
            return err_set(e, ERR_USAGE, HINT_FIELDS, "cron expression '%s': field %d (%s): %s",
                           shown, i + 1, FIELDS[i].name, why);
    }
    c->minutes = bits[0];
    c->hours = (uint32_t)bits[1];
    c->mdays = (uint32_t)bits[2];
    c->months = (uint16_t)bits[3];
    c->wdays = (uint8_t)((bits[4] | bits[4] >> 7) & 0x7f); /* 7 is Sunday, as 0 */
    c->mday_star = star[2];
    c->wday_star = star[4];
    if (!days_possible(c))
        return err_set(e, ERR_USAGE,
                       "30 and 31 February, and 31 April, June, September and November, do "
                       "not exist; a day of the week in field 5 would match instead",
                       "cron expression '%s' never matches: no month in field 4 (month) has a "
                       "day of field 3 (day-of-month)",
                       shown);
    return 0;
}

/* ---- next run time ------------------------------------------------------------------- */

/* The smallest set bit >= from, or -1. */
static int next_bit(uint64_t bits, int from)
{
    if (from >= 64)
        return -1;
    uint64_t m = bits >> from;
    return m ? from + __builtin_ctzll(m) : -1;
}

static bool day_matches(const struct cron_expr *c, int64_t y, int m, int d)
{
    bool dm = c->mdays >> d & 1;
    bool wm = c->wdays >> tz_weekday(tz_days_from_civil(y, m, d)) & 1;
    return (c->mday_star || c->wday_star) ? dm && wm : dm || wm;
}

/* A wall-clock minute. */
struct civil {
    int64_t y;
    int mo, d, h, mi; /* mo, d, h, mi may run one past their range: the next step carries */
};

/* Moves t to the first matching minute at or after it, field by field: a month that does
 * not match is skipped whole, then a day, then an hour. false past the year ylimit. */
static bool next_match(const struct cron_expr *c, struct civil *t, int64_t ylimit)
{
    for (;;) {
        if (t->y > ylimit)
            return false;
        int mo = next_bit(c->months, t->mo);
        if (mo < 0) {
            *t = (struct civil){t->y + 1, 1, 1, 0, 0};
            continue;
        }
        if (mo != t->mo)
            *t = (struct civil){t->y, mo, 1, 0, 0};
        int dim = tz_days_in_month(t->y, t->mo);
        if ((c->mday_star || c->wday_star) && t->d <= dim) {
            /* Both fields must match: jump to the next allowed day of the month. */
            int d = next_bit(c->mdays, t->d);
            if (d < 0)
                d = dim + 1;
            if (d != t->d)
                *t = (struct civil){t->y, t->mo, d, 0, 0};
        }
        if (t->d > dim) {
            *t = (struct civil){t->y, t->mo + 1, 1, 0, 0};
            continue;
        }
        if (!day_matches(c, t->y, t->mo, t->d)) {
            *t = (struct civil){t->y, t->mo, t->d + 1, 0, 0};
            continue;
        }
        int h = next_bit(c->hours, t->h);
        if (h < 0) {
            *t = (struct civil){t->y, t->mo, t->d + 1, 0, 0};
            continue;
        }
        if (h != t->h) {
            t->h = h;
            t->mi = 0;
        }
        int mi = next_bit(c->minutes, t->mi);
        if (mi < 0) {
            t->h++;
            t->mi = 0;
            continue;
        }
        t->mi = mi;
        return true;
    }
}

/* 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z */
#define TIME_MIN INT64_C(-62135596800)
#define TIME_MAX INT64_C(253402300799)

int cron_next(const struct cron_expr *c, const struct tz *z, int64_t after, int64_t *next,
              struct err *e)
{
    if (after < TIME_MIN || after > TIME_MAX)
        return err_set(e, ERR_USAGE, "give a time between the years 1 and 9999",
                       "time %lld is out of range", (long long)after);
    /* Wall time of `after`, down to its minute. Wall times map to instants monotonically
     * (a skipped time maps to the end of its gap, a repeated one to its first occurrence),
     * so no minute before this one can run after `after`. */
    int64_t wall = after + tz_offset_at(z, after);
    int64_t days = wall / 86400 - (wall % 86400 < 0), secs = wall - days * 86400;
    struct civil t;
    tz_civil_from_days(days, &t.y, &t.mo, &t.d);
    t.h = (int)(secs / 3600);
    t.mi = (int)(secs / 60 % 60);
    /* A possible expression matches within 400 years (the calendar's cycle, every weekday
     * included); anything else is a bug, reported rather than looped on. */
    int64_t ylimit = t.y + 401 > 9999 ? 9999 : t.y + 401;
    /* A matching minute whose instant is not after `after` is one passed already, or the
     * second occurrence of a repeated hour: at most the minutes of one such hour. */
    for (int iter = 0; iter < 100000; iter++) {
        if (!next_match(c, &t, ylimit))
            break;
        int64_t w = tz_days_from_civil(t.y, t.mo, t.d) * 86400 + t.h * 3600 + t.mi * 60;
        int64_t r = tz_wall_to_time(z, w, NULL);
        if (r > after) {
            *next = r;
            return 0;
        }
        t.mi++;
    }
    return err_set(e, ERR_USAGE, "check the expression's day, month and weekday fields",
                   "no run time of the cron expression before the year %lld",
                   (long long)ylimit + 1);
}

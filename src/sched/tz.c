/* Time zones read from TZif files (RFC 8536) and POSIX TZ strings, with no global state:
 * see include/caris/tz.h. */
#include "caris/tz.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caris/core.h"

/* A zone file is a few KiB (the largest in tzdata 2025 is under 4 KiB with every
 * transition until 2037); anything far larger is not one (or is /dev/zero). */
#define TZIF_MAX_BYTES (256u * 1024)
#define TZIF_MAX_TIMES 65536u
#define TZIF_MAX_TYPES 256u
/* RFC 8536: UT offsets are in -89999..93599 (less than 25 h west, 26 h east). */
#define OFFSET_MIN (-89999)
#define OFFSET_MAX 93599

static const char HINT_NAME[] =
    "give an IANA time zone name such as Europe/Berlin, "
    "America/New_York or UTC (the files under " TZ_ZONEINFO_DIR ", Debian package tzdata)";

/* ---- calendar ------------------------------------------------------------------------ */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* The proleptic Gregorian calendar counted in 400-year eras of 146097 days, each year
 * starting on 1 March so that the leap day is the last day of its year. */
int64_t tz_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;                                   /* 0..399 */
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* 0..365 */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* 0..146096 */
    return era * 146097 + doe - 719468; /* 719468: days from 0000-03-01 to 1970-01-01 */
}

void tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d)
{
    days += 719468;
    int64_t era = floor_div(days, 146097);
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

int tz_weekday(int64_t days)
{
    /* 1970-01-01 was a Thursday */
    return (int)(days - floor_div(days + 4, 7) * 7 + 4);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int tz_days_in_month(int64_t y, int m)
{
    static const int n[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : n[m - 1];
}

/* ---- the zone ------------------------------------------------------------------------ */

/* A rule date: Jn (1-365, 29 February never counted), n (0-365, counted), Mm.w.d (day d of
 * week w of month m; week 5 = the last). time: seconds after local midnight. */
struct tz_date {
    char kind; /* 'J', 'D' or 'M' */
    int n, m, w, d;
    int32_t time;
};

struct tz_rule {
    int32_t std_off, dst_off; /* seconds east of UTC */
    bool has_dst;
    struct tz_date start, end; /* daylight saving time starts, ends */
};

struct tz {
    char *name;
    int64_t *trans;     /* transition times, strictly increasing */
    uint8_t *trans_idx; /* the type each transition switches to */
    size_t ntrans;
    int32_t *type_off; /* offsets of the local time types */
    size_t ntypes;
    bool has_rule; /* for times after the last transition (or all, with no transitions) */
    struct tz_rule rule;
    int32_t min_off, max_off; /* over every offset the zone can have */
};

/* Wall seconds (see tz.h) of a rule date in year y. */
static int64_t rule_date_wall(const struct tz_date *dt, int64_t y)
{
    int64_t days;
    if (dt->kind == 'J') {
        days = tz_days_from_civil(y, 1, 1) + dt->n - 1 + (is_leap(y) && dt->n >= 60);
    } else if (dt->kind == 'D') {
        days = tz_days_from_civil(y, 1, 1) + dt->n;
    } else {
        int64_t first = tz_days_from_civil(y, dt->m, 1);
        int day = (dt->d - tz_weekday(first) + 7) % 7 + (dt->w - 1) * 7;
        while (day >= tz_days_in_month(y, dt->m))
            day -= 7;
        days = first + day;
    }
    return days * 86400 + dt->time;
}

struct rule_event {
    int64_t at;
    int32_t off; /* the offset from then on */
    int order;   /* at the same instant, the higher order is applied last */
};

/* The rule's transitions of years y0..y0+n-1 (at most 8 events). DST starts at a wall time
 * of standard time and ends at one of daylight saving time. */
static size_t rule_events(const struct tz_rule *r, int64_t y0, int n, struct rule_event *ev)
{
    size_t k = 0;
    for (int64_t y = y0; y < y0 + n; y++) {
        ev[k++] = (struct rule_event){rule_date_wall(&r->start, y) - r->std_off, r->dst_off, 1};
        ev[k++] = (struct rule_event){rule_date_wall(&r->end, y) - r->dst_off, r->std_off, 0};
    }
    return k;
}

static int64_t year_of(int64_t t)
{
    int64_t y;
    int m, d;
    tz_civil_from_days(floor_div(t, 86400), &y, &m, &d);
    return y;
}

static bool event_before(const struct rule_event *a, const struct rule_event *b)
{
    return a->at < b->at || (a->at == b->at && a->order < b->order);
}

static int32_t rule_offset(const struct tz_rule *r, int64_t t)
{
    if (!r->has_dst)
        return r->std_off;
    /* Rule times reach 167 h past a date, so a year's events may fall in the next year:
     * the latest event not after t is among those of the two years before t's and t's. */
    struct rule_event ev[8];
    size_t n = rule_events(r, year_of(t) - 2, 4, ev);
    const struct rule_event *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (ev[i].at <= t && (!best || event_before(best, &ev[i])))
            best = &ev[i];
    return best ? best->off : r->std_off;
}

static bool rule_next(const struct tz_rule *r, int64_t t, int64_t *next)
{
    if (!r->has_dst)
        return false;
    struct rule_event ev[8];
    size_t n = rule_events(r, year_of(t) - 1, 4, ev);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        if (ev[i].at > t && (!found || ev[i].at < *next)) {
            *next = ev[i].at;
            found = true;
        }
    return found;
}

int32_t tz_offset_at(const struct tz *z, int64_t t)
{
    if (z->ntrans == 0)
        return z->has_rule ? rule_offset(&z->rule, t) : z->type_off[0];
    if (t < z->trans[0])
        return z->type_off[0]; /* RFC 8536: type 0 before the first transition */
    if (t >= z->trans[z->ntrans - 1] && z->has_rule)
        return rule_offset(&z->rule, t);
    size_t lo = 0, hi = z->ntrans; /* the last transition <= t is in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return z->type_off[z->trans_idx[lo]];
}

bool tz_next_transition(const struct tz *z, int64_t t, int64_t *next)
{
    if (z->ntrans > 0 && t < z->trans[z->ntrans - 1]) {
        size_t lo = 0, hi = z->ntrans - 1; /* the first transition > t is in [lo, hi] */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (z->trans[mid] > t)
                hi = mid;
            else
                lo = mid + 1;
        }
        *next = z->trans[lo];
        return true;
    }
    return z->has_rule && rule_next(&z->rule, t, next);
}

/* Walks the stretches of constant offset that can hold an instant with this wall time
 * (t = wall - offset, for offsets between the zone's smallest and largest), in order. */
int64_t tz_wall_to_time(const struct tz *z, int64_t wall, enum tz_wall_kind *kind)
{
    enum tz_wall_kind k_;
    if (!kind)
        kind = &k_;
    int64_t lo = wall - z->max_off, hi = wall - z->min_off;
    int64_t seg = lo, first = 0;
    int32_t off = tz_offset_at(z, seg);
    int found = 0;
    /* A zone changes its offset a few times a year; the window is at most 52 hours. The
     * bound only guards against a malformed zone. */
    for (int iter = 0; iter < 1000; iter++) {
        int64_t end;
        bool more = tz_next_transition(z, seg, &end) && end <= hi;
        int64_t t = wall - off;
        if (t >= seg && (!more || t < end)) {
            if (!found)
                first = t;
            found++;
        }
        if (!more)
            break;
        int32_t noff = tz_offset_at(z, end);
        if (!found && noff > off && wall >= end + off && wall < end + noff) {
            *kind = TZ_WALL_SKIPPED;
            return end;
        }
        seg = end;
        off = noff;
    }
    if (found) {
        *kind = found > 1 ? TZ_WALL_TWICE : TZ_WALL_ONCE;
        return first;
    }
    /* Not reached for a consistent zone: every wall time either exists or lies in a gap. */
    *kind = TZ_WALL_ONCE;
    return wall - tz_offset_at(z, wall);
}

static void format_offset(int32_t off, char *out, size_t n)
{
    char sign = off < 0 ? '-' : '+';
    int32_t a = off < 0 ? -off : off;
    if (a % 60)
        snprintf(out, n, "%c%02d:%02d:%02d", sign, a / 3600, a / 60 % 60, a % 60);
    else
        snprintf(out, n, "%c%02d:%02d", sign, a / 3600, a / 60 % 60);
}

void tz_format_iso(const struct tz *z, int64_t t, char *out, size_t n)
{
    int32_t off = tz_offset_at(z, t);
    int64_t wall = t + off, days = floor_div(wall, 86400), secs = wall - days * 86400;
    int64_t y;
    int m, d;
    tz_civil_from_days(days, &y, &m, &d);
    char o[16];
    format_offset(off, o, sizeof(o));
    snprintf(out, n, "%04lld-%02d-%02dT%02d:%02d:%02d%s", (long long)y, m, d, (int)(secs / 3600),
             (int)(secs / 60 % 60), (int)(secs % 60), o);
}

const char *tz_name(const struct tz *z)
{
    return z->name;
}

void tz_free(struct tz *z)
{
    if (!z)
        return;
    free(z->name);
    free(z->trans);
    free(z->trans_idx);
    free(z->type_off);
    free(z);
}

static void update_range(struct tz *z, int32_t off)
{
    if (off < z->min_off)
        z->min_off = off;
    if (off > z->max_off)
        z->max_off = off;
}

static void finish_range(struct tz *z)
{
    z->min_off = INT32_MAX;
    z->max_off = INT32_MIN;
    for (size_t i = 0; i < z->ntypes; i++)
        update_range(z, z->type_off[i]);
    if (z->has_rule) {
        update_range(z, z->rule.std_off);
        if (z->rule.has_dst)
            update_range(z, z->rule.dst_off);
    }
}

static struct tz *tz_utc(const char *name)
{
    struct tz *z = xcalloc(1, sizeof(*z));
    z->name = xstrdup(name);
    z->type_off = xcalloc(1, sizeof(*z->type_off));
    z->ntypes = 1;
    finish_range(z);
    return z;
}

/* ---- POSIX TZ strings ---------------------------------------------------------------- */

/* std/dst name: at least 3 letters, or <...> of letters, digits, '+' and '-'. */
static const char *posix_name(const char *p)
{
    const char *q = p;
    if (*p == '<') {
        for (q = p + 1; *q && *q != '>'; q++)
            if (!isalnum((unsigned char)*q) && *q != '+' && *q != '-')
                return NULL;
        return *q == '>' && q - p - 1 >= 3 ? q + 1 : NULL;
    }
    while (isalpha((unsigned char)*q))
        q++;
    return q - p >= 3 ? q : NULL;
}

/* [+-]hh[:mm[:ss]] with hh <= max_h: signed seconds. */
static const char *posix_hms(const char *p, int max_h, int32_t *out)
{
    int sign = 1;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    int v[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            if (*p != ':')
                break;
            p++;
        }
        int digits = 0;
        while (isdigit((unsigned char)*p) && digits < 3) {
            v[i] = v[i] * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0 || isdigit((unsigned char)*p) || (i > 0 && (digits > 2 || v[i] > 59)))
            return NULL;
    }
    if (v[0] > max_h)
        return NULL;
    *out = sign * (v[0] * 3600 + v[1] * 60 + v[2]);
    return p;
}

static const char *posix_number(const char *p, int lo, int hi, int *out)
{
    int v = 0, digits = 0;
    while (isdigit((unsigned char)*p) && digits < 4) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || v < lo || v > hi)
        return NULL;
    *out = v;
    return p;
}

static const char *posix_date(const char *p, struct tz_date *dt)
{
    memset(dt, 0, sizeof(*dt));
    if (*p == 'J') {
        dt->kind = 'J';
        p = posix_number(p + 1, 1, 365, &dt->n);
    } else if (*p == 'M') {
        dt->kind = 'M';
        p = posix_number(p + 1, 1, 12, &dt->m);
        if (p && *p == '.')
            p = posix_number(p + 1, 1, 5, &dt->w);
        else
            p = NULL;
        if (p && *p == '.')
            p = posix_number(p + 1, 0, 6, &dt->d);
        else
            p = NULL;
    } else {
        dt->kind = 'D';
        p = posix_number(p, 0, 365, &dt->n);
    }
    if (!p)
        return NULL;
    dt->time = 7200; /* 02:00 by default */
    if (*p == '/')
        p = posix_hms(p + 1, 167, &dt->time);
    return p;
}

static bool posix_parse(const char *s, struct tz_rule *r)
{
    memset(r, 0, sizeof(*r));
    int32_t v;
    const char *p = posix_name(s);
    if (!p || !(p = posix_hms(p, 24, &v)))
        return false;
    r->std_off = -v; /* POSIX offsets count west of UTC */
    if (!*p)
        return true;
    if (!(p = posix_name(p)))
        return false;
    r->has_dst = true;
    r->dst_off = r->std_off + 3600;
    if (*p && *p != ',') {
        if (!(p = posix_hms(p, 24, &v)))
            return false;
        r->dst_off = -v;
    }
    if (!*p) {
        /* No rule given: the C library's default, the United States' rule since 2007. */
        r->start = (struct tz_date){'M', 0, 3, 2, 0, 7200};
        r->end = (struct tz_date){'M', 0, 11, 1, 0, 7200};
        return true;
    }
    if (*p != ',' || !(p = posix_date(p + 1, &r->start)) || *p != ',' ||
        !(p = posix_date(p + 1, &r->end)))
        return false;
    return *p == '\0' && r->std_off >= OFFSET_MIN && r->std_off <= OFFSET_MAX &&
           r->dst_off >= OFFSET_MIN && r->dst_off <= OFFSET_MAX;
}

int tz_load_posix(const char *rule, struct tz **out, struct err *e)
{
    struct tz_rule r;
    if (strlen(rule) > 200 || !posix_parse(rule, &r)) {
        char shown[96];
        str_escape(rule, strlen(rule), shown, sizeof(shown));
        return err_set(e, ERR_USAGE,
                       "a POSIX TZ rule looks like CET-1CEST,M3.5.0,M10.5.0/3; a zone name such "
                       "as Europe/Berlin is simpler",
                       "invalid POSIX time zone rule '%s'", shown);
    }
    struct tz *z = xcalloc(1, sizeof(*z));
    z->name = xstrdup(rule);
    z->has_rule = true;
    z->rule = r;
    z->type_off = xcalloc(1, sizeof(*z->type_off));
    z->type_off[0] = r.std_off;
    z->ntypes = 1;
    finish_range(z);
    *out = z;
    return 0;
}

/* ---- TZif files ---------------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64s(const uint8_t *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct tzif_counts {
    uint32_t isut, isstd, leap, time, type, chr;
};

static size_t tzif_block_size(const struct tzif_counts *c, size_t tsize)
{
    return (size_t)c->time * (tsize + 1) + (size_t)c->type * 6 + c->chr +
           (size_t)c->leap * (tsize + 4) + c->isstd + c->isut;
}

/* Parses a 44-byte header at p[*pos]. 0, or -1 with why. */
static int tzif_header(const uint8_t *p, size_t len, size_t *pos, char *version,
                       struct tzif_counts *c, const char **why)
{
    if (len - *pos < 44 || memcmp(p + *pos, "TZif", 4) != 0) {
        *why = "not a TZif file";
        return -1;
    }
    const uint8_t *h = p + *pos;
    *version = (char)h[4];
    c->isut = be32(h + 20);
    c->isstd = be32(h + 24);
    c->leap = be32(h + 28);
    c->time = be32(h + 32);
    c->type = be32(h + 36);
    c->chr = be32(h + 40);
    *pos += 44;
    if (c->type == 0 || c->type > TZIF_MAX_TYPES || c->chr == 0 || c->time > TZIF_MAX_TIMES ||
        (c->isut != 0 && c->isut != c->type) || (c->isstd != 0 && c->isstd != c->type)) {
        *why = "inconsistent counts in the header";
        return -1;
    }
    if (c->leap != 0) {
        *why = "the file counts leap seconds (a right/ zone)";
        return -1;
    }
    return 0;
}

static int tzif_parse(struct tz *z, const uint8_t *p, size_t len, const char **why)
{
    size_t pos = 0;
    char version;
    struct tzif_counts c;
    if (tzif_header(p, len, &pos, &version, &c, why) != 0)
        return -1;
    size_t tsize = 4;
    if (version != '\0') {
        /* Version 2 and later: skip the 32-bit block, use the 64-bit one and the footer. */
        if (version < '2') {
            *why = "unknown TZif version";
            return -1;
        }
        if (tzif_block_size(&c, 4) > len - pos) {
            *why = "truncated";
            return -1;
        }
        pos += tzif_block_size(&c, 4);
        if (tzif_header(p, len, &pos, &version, &c, why) != 0)
            return -1;
        tsize = 8;
    }
    if (tzif_block_size(&c, tsize) > len - pos) {
        *why = "truncated";
        return -1;
    }
    const uint8_t *times = p + pos, *idx = times + (size_t)c.time * tsize;
    const uint8_t *types = idx + c.time;
    z->ntrans = c.time;
    z->trans = xcalloc(c.time ? c.time : 1, sizeof(*z->trans));
    z->trans_idx = xcalloc(c.time ? c.time : 1, 1);
    for (size_t i = 0; i < c.time; i++) {
        z->trans[i] = tsize == 8 ? be64s(times + 8 * i) : (int32_t)be32(times + 4 * i);
        z->trans_idx[i] = idx[i];
        if (idx[i] >= c.type || (i > 0 && z->trans[i] <= z->trans[i - 1])) {
            *why = "invalid transition";
            return -1;
        }
    }
    z->ntypes = c.type;
    z->type_off = xcalloc(c.type, sizeof(*z->type_off));
    for (size_t i = 0; i < c.type; i++) {
        int32_t off = (int32_t)be32(types + 6 * i);
        if (off < OFFSET_MIN || off > OFFSET_MAX || types[6 * i + 4] > 1 ||
            types[6 * i + 5] >= c.chr) {
            *why = "invalid local time type";
            return -1;
        }
        z->type_off[i] = off;
    }
    pos += tzif_block_size(&c, tsize);
    if (tsize == 8) {
        /* The footer: "\n" TZ-string "\n"; an empty string means no rule. */
        const uint8_t *nl = pos < len ? memchr(p + pos + 1, '\n', len - pos - 1) : NULL;
        if (pos >= len || p[pos] != '\n' || !nl) {
            *why = "missing footer";
            return -1;
        }
        size_t n = (size_t)(nl - (p + pos + 1));
        if (n > 0) {
            char rule[256];
            if (n >= sizeof(rule) || memchr(p + pos + 1, '\0', n)) {
                *why = "invalid footer";
                return -1;
            }
            memcpy(rule, p + pos + 1, n);
            rule[n] = '\0';
            if (!posix_parse(rule, &z->rule)) {
                *why = "invalid rule in the footer";
                return -1;
            }
            z->has_rule = true;
        }
    }
    finish_range(z);
    return 0;
}

/* Reads a regular file of at most TZIF_MAX_BYTES. */
static int read_small_file(const char *path, struct buf *b, int *err_no)
{
    memset(b, 0, sizeof(*b));
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *err_no = errno;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        *err_no = errno;
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > TZIF_MAX_BYTES) {
        *err_no = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        close(fd);
        return -1;
    }
    buf_reserve(b, (size_t)st.st_size + 1);
    for (;;) {
        if (b->len >= TZIF_MAX_BYTES) {
            *err_no = EINVAL;
            break;
        }
        buf_reserve(b, 4096);
        ssize_t r = read(fd, b->data + b->len, b->cap - b->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            *err_no = errno;
            break;
        }
        if (r == 0) {
            close(fd);
            return 0;
        }
        b->len += (size_t)r;
    }
    close(fd);
    buf_free(b);
    return -1;
}

/* Zone names are paths below TZ_ZONEINFO_DIR: no "..", nothing but the characters tzdata
 * uses. */
static bool valid_zone_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 200 || s[0] == '/' || s[n - 1] == '/')
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("/_+-.", *p))
            return false;
    for (const char *p = s; p; p = strchr(p, '/')) {
        if (*p == '/')
            p++;
        if (p[0] == '.' && (p[1] == '/' || p[1] == '\0' || (p[1] == '.' && (p[2] == '/' || !p[2]))))
            return false;
        if (*p == '/')
            return false; /* "//" */
    }
    return true;
}

static int load_path(const char *path, const char *shown_name, struct tz **out, struct err *e)
{
    struct buf b;
    int en = 0;
    char shown[96];
    str_escape(shown_name, strlen(shown_name), shown, sizeof(shown));
    if (read_small_file(path, &b, &en) != 0) {
        if (en == ENOENT || en == ENOTDIR || en == EISDIR) {
            bool have_tzdata = fs_exists(TZ_ZONEINFO_DIR "/UTC");
            return err_set(e, ERR_NOT_FOUND,
                           have_tzdata ? HINT_NAME
                                       : "install the time zone data (Debian: apt-get install "
                                         "tzdata)",
                           "unknown time zone '%s'", shown);
        }
        if (en == EINVAL)
            return err_set(e, ERR_DAMAGE, HINT_NAME, "time zone '%s': %s is not a time zone file",
                           shown, path);
        return err_sys(e, en, NULL, "time zone '%s': cannot read %s", shown, path);
    }
    struct tz *z = xcalloc(1, sizeof(*z));
    const char *why = NULL;
    int rc = tzif_parse(z, b.data, b.len, &why);
    buf_free(&b);
    if (rc != 0) {
        tz_free(z);
        return err_set(e, ERR_DAMAGE,
                       "reinstall the time zone data (Debian: apt-get install --reinstall tzdata) "
                       "or give another zone",
                       "time zone '%s': %s is not a valid zone file: %s", shown, path, why);
    }
    z->name = xstrdup(shown_name);
    *out = z;
    return 0;
}

int tz_load(const char *name, struct tz **out, struct err *e)
{
    *out = NULL;
    if (name[0] == ':')
        name++;
    if (name[0] == '/')
        return load_path(name, name, out, e);
    if (!valid_zone_name(name)) {
        char shown[96];
        str_escape(name, strlen(name), shown, sizeof(shown));
        return err_set(e, ERR_NOT_FOUND, HINT_NAME, "unknown time zone '%s'", shown);
    }
    char *path = xasprintf("%s/%s", TZ_ZONEINFO_DIR, name);
    int rc = load_path(path, name, out, e);
    free(path);
    if (rc != 0 && e->code == ERR_NOT_FOUND && strcmp(name, "UTC") == 0) {
        err_clear(e);
        *out = tz_utc("UTC");
        return 0;
    }
    return rc;
}

int tz_load_local(struct tz **out, struct err *e)
{
    *out = NULL;
    const char *env = getenv("TZ");
    if (env && !*env) {
        *out = tz_utc("UTC");
        return 0;
    }
    if (env) {
        /* As the C library: a zone file first, then a POSIX rule. */
        struct err fe = ERR_INIT;
        if (tz_load(env, out, &fe) == 0)
            return 0;
        if (env[0] != ':' && fe.code == ERR_NOT_FOUND && tz_load_posix(env, out, e) == 0)
            return 0;
        *e = fe;
        return err_wrap(e, "environment variable TZ");
    }
    static const char LOCALTIME[] = "/etc/localtime";
    if (!fs_exists(LOCALTIME)) {
        *out = tz_utc("UTC");
        return 0;
    }
    /* Name the zone after the file /etc/localtime links to, as timedatectl does. */
    char target[512];
    ssize_t n = readlink(LOCALTIME, target, sizeof(target) - 1);
    const char *name = "localtime";
    if (n > 0) {
        target[n] = '\0';
        const char *z = strstr(target, "zoneinfo/");
        if (z && valid_zone_name(z + 9))
            name = z + 9;
    }
    if (load_path(LOCALTIME, name, out, e) != 0)
        return err_wrap(e, "local time zone");
    return 0;
}

/* Retention (forget): the keep decision and forgetting what it does not keep. */
#include "caris/retention.h"
#include "caris/dbbackup.h"
#include "caris/tz.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

/* ---- parsing ------------------------------------------------------------------------- */

int caris_retention_count_parse(const char *what, const char *s, int *out, struct err *e)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return err_set(e, ERR_USAGE, "give a whole number, 0 or more",
                       "invalid %s '%s': not a count", what, s ? s : "");
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno || v > 1000000)
        return err_set(e, ERR_USAGE, "give a whole number between 0 and 1000000",
                       "invalid %s '%s': not a count", what, s);
    *out = (int)v;
    return 0;
}

int caris_duration_parse(const char *s, struct caris_duration *d, struct err *e)
{
    static const char HINT[] =
        "a duration is numbers with units y (years), m (months), w (weeks), d (days), h "
        "(hours), e.g. 1y6m, 14d, 36h";
    memset(d, 0, sizeof(*d));
    const char *p = s ? s : "";
    unsigned seen = 0;
    bool any = false;
    if (!*p)
        return err_set(e, ERR_USAGE, HINT, "invalid duration '': empty");
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return err_set(e, ERR_USAGE, HINT, "invalid duration '%s'", s);
        long v = 0;
        while (isdigit((unsigned char)*p)) {
            v = v * 10 + (*p++ - '0');
            if (v > 100000)
                return err_set(e, ERR_USAGE, HINT, "invalid duration '%s': too large", s);
        }
        int *slot;
        unsigned bitv;
        switch (*p) {
        case 'y':
            slot = &d->years, bitv = 1;
            break;
        case 'm':
            slot = &d->months, bitv = 2;
            break;
        case 'w':
            slot = &d->weeks, bitv = 4;
            break;
        case 'd':
            slot = &d->days, bitv = 8;
            break;
        case 'h':
            slot = &d->hours, bitv = 16;
            break;
        default:
            if (!*p)
                return err_set(e, ERR_USAGE, HINT,
                               "invalid duration '%s': a number without its unit (y, m, w, d "
                               "or h)",
                               s);
            return err_set(e, ERR_USAGE, HINT, "invalid duration '%s': unknown unit '%c'", s, *p);
        }
        if (seen & bitv)
            return err_set(e, ERR_USAGE, HINT, "invalid duration '%s': unit '%c' given twice", s,
                           *p);
        seen |= bitv;
        *slot = (int)v;
        any = any || v > 0;
        p++;
    }
    if (!any)
        return err_set(e, ERR_USAGE, HINT, "invalid duration '%s': zero", s);
    return 0;
}

int caris_duration_hours(const char *s, int64_t *hours, struct err *e)
{
    struct caris_duration d;
    if (caris_duration_parse(s, &d, e) != 0)
        return -1;
    if (d.years || d.months)
        return err_set(e, ERR_USAGE, "use weeks, days and hours",
                       "a duration of years or months has no fixed length");
    *hours = ((int64_t)d.weeks * 7 + d.days) * 24 + d.hours;
    return 0;
}

int caris_retention_policy_from_config(const struct config *c, struct caris_retention_policy *p,
                                       struct err *e)
{
    static const struct {
        const char *name;
        int dflt;
        size_t off;
    } vars[] = {
        {"BACKUP_RETENTION_DAILY", 7, offsetof(struct caris_retention_policy, daily)},
        {"BACKUP_RETENTION_WEEKLY", 4, offsetof(struct caris_retention_policy, weekly)},
        {"BACKUP_RETENTION_MONTHLY", 12, offsetof(struct caris_retention_policy, monthly)},
    };
    memset(p, 0, sizeof(*p));
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        int *slot = (int *)((char *)p + vars[i].off);
        const char *v = config_get(c, vars[i].name);
        *slot = vars[i].dflt;
        if (v && caris_retention_count_parse(vars[i].name, v, slot, e) != 0) {
            e->code = ERR_CONFIG;
            snprintf(e->hint, sizeof(e->hint),
                     "set %s to a whole number of backups to keep (0 turns the rule off)",
                     vars[i].name);
            return -1;
        }
    }
    return 0;
}

/* ---- time zones ---------------------------------------------------------------------- */

/* The zone of BACKUP_TZ (tz), or the process's local zone when NULL or empty: loaded with
 * caris/tz.h, so nothing here sets TZ or uses the C library's local-time state, and any
 * thread may decide while others work. */
static int zone_load(const char *tz, struct tz **z, struct err *e)
{
    struct err le = ERR_INIT;
    if (tz && *tz ? tz_load(tz, z, &le) == 0 : tz_load_local(z, &le) == 0)
        return 0;
    return err_set(e, ERR_CONFIG, "set BACKUP_TZ to a zone name such as Europe/Berlin or UTC",
                   "%s: %s", tz && *tz ? "BACKUP_TZ" : "the local time zone", le.msg);
}

static bool policy_keeps_nothing(const struct caris_retention_policy *p)
{
    return !p->last && !p->daily && !p->weekly && !p->monthly && !p->yearly && !p->has_within;
}

#define KEEPS_NOTHING_HINT                                                                         \
    "give at least one --keep-* count above 0 (BACKUP_RETENTION_DAILY, _WEEKLY, _MONTHLY: 0 "      \
    "turns one rule off, not all); to keep only the newest backup of each group, say "             \
    "--keep-last 1"
#define KEEPS_NOTHING_MSG                                                                          \
    "refusing to forget: the retention policy keeps nothing (every count is 0), which would "      \
    "forget every backup but the newest of each group"

int caris_retention_config_check(const struct config *c, struct err *e)
{
    struct caris_retention_policy p;
    if (caris_retention_policy_from_config(c, &p, e) != 0)
        return -1;
    if (policy_keeps_nothing(&p))
        return err_set(e, ERR_CONFIG, KEEPS_NOTHING_HINT, KEEPS_NOTHING_MSG);
    struct tz *z;
    if (zone_load(config_get(c, "BACKUP_TZ"), &z, e) != 0)
        return -1;
    tz_free(z);
    return 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

int caris_time_parse(const char *s, const char *tz, int64_t *ns, struct err *e)
{
    static const char HINT[] = "give the time as 2024-01-15T03:00:00Z, 2024-01-15T04:00:00+01:00 "
                               "or 2024-01-15 04:00 (local time)";
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%d", &tm);
    if (!p || (*p != 'T' && *p != ' '))
        return err_set(e, ERR_USAGE, HINT, "invalid time '%s'", s);
    const char *q = strptime(p + 1, "%H:%M:%S", &tm);
    if (!q) {
        tm.tm_sec = 0;
        q = strptime(p + 1, "%H:%M", &tm);
    }
    if (!q)
        return err_set(e, ERR_USAGE, HINT, "invalid time '%s'", s);
    struct tm check = tm;
    int64_t t;
    if (*q == 'Z' && q[1] == '\0') {
        t = (int64_t)timegm(&tm);
    } else if ((*q == '+' || *q == '-') && isdigit((unsigned char)q[1]) &&
               isdigit((unsigned char)q[2]) && q[3] == ':' && isdigit((unsigned char)q[4]) &&
               isdigit((unsigned char)q[5]) && q[6] == '\0') {
        int off =
            ((q[1] - '0') * 10 + (q[2] - '0')) * 3600 + ((q[4] - '0') * 10 + (q[5] - '0')) * 60;
        if (off > 14 * 3600)
            return err_set(e, ERR_USAGE, HINT, "invalid time '%s': offset out of range", s);
        t = (int64_t)timegm(&tm) - (*q == '+' ? off : -off);
    } else if (*q == '\0') {
        /* a local wall time: skipped by a clock change, the end of the gap; repeated, the
         * first of the two (caris/tz.h) */
        struct tz *z;
        if (zone_load(tz, &z, e) != 0)
            return -1;
        t = tz_wall_to_time(z, (int64_t)timegm(&tm), NULL);
        tz_free(z);
    } else {
        return err_set(e, ERR_USAGE, HINT, "invalid time '%s'", s);
    }
    /* strptime accepts 2024-02-31; timegm/mktime would roll it into March */
    if (tm.tm_mday != check.tm_mday || tm.tm_mon != check.tm_mon || check.tm_hour > 23 ||
        check.tm_min > 59 || check.tm_sec > 59)
        return err_set(e, ERR_USAGE, HINT, "invalid time '%s': no such date", s);
    /* nanoseconds in an int64_t: 1677-09-21 to 2262-04-11 */
    if (t > INT64_MAX / 1000000000 || t < INT64_MIN / 1000000000)
        return err_set(e, ERR_USAGE, HINT, "invalid time '%s': before 1678 or after 2261", s);
    *ns = t * 1000000000;
    return 0;
}

int caris_backup_time_check(int64_t ns, struct err *e)
{
    char when[40];
    time_format_iso(ns, when, sizeof(when));
    if (ns > time_now_ns())
        return err_set(e, ERR_USAGE,
                       "--time records when an older backup was made: give a past time",
                       "backup time %s is in the future", when);
    if (ns <= 0)
        return err_set(e, ERR_USAGE, NULL, "backup time %s: times before 1970 are not supported",
                       when);
    return 0;
}

/* ---- the decision -------------------------------------------------------------------- */

json_t *caris_retention_reasons_json(unsigned reasons)
{
    static const char *const names[] = {"last",   "daily",  "weekly", "monthly", "yearly",
                                        "within", "newest", "future", "damaged"};
    json_t *a = json_array();
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (reasons & (1u << i))
            json_array_append_new(a, json_string(names[i]));
    return a;
}

static int cmp_newest_first(const void *a, const void *b, void *ctx)
{
    const struct caris_retention_item *items = ctx;
    const struct caris_retention_item *x = &items[*(const size_t *)a];
    const struct caris_retention_item *y = &items[*(const size_t *)b];
    if (x->group != y->group)
        return x->group < y->group ? -1 : 1;
    if (x->time_ns != y->time_ns)
        return x->time_ns > y->time_ns ? -1 : 1;
    return strcmp(y->id ? y->id : "", x->id ? x->id : "");
}

enum { PER_DAY, PER_WEEK, PER_MONTH, PER_YEAR };

/* The calendar period of a time in zone z, as one number. */
static long period_key(const struct tz *z, int64_t ns, int per)
{
    int64_t t = floor_div(ns, 1000000000);
    int64_t days = floor_div(t + tz_offset_at(z, t), 86400);
    int64_t y;
    int m, d;
    tz_civil_from_days(days, &y, &m, &d);
    switch (per) {
    case PER_DAY:
        return (long)(y * 10000 + m * 100 + d);
    case PER_WEEK: {
        /* ISO-8601: the week (Monday to Sunday) belongs to the year of its Thursday */
        int wd = tz_weekday(days);
        int64_t thursday = days + 4 - (wd == 0 ? 7 : wd);
        int64_t ty;
        int tm_, td;
        tz_civil_from_days(thursday, &ty, &tm_, &td);
        return (long)(ty * 100 + (thursday - tz_days_from_civil(ty, 1, 1)) / 7 + 1);
    }
    case PER_MONTH:
        return (long)(y * 100 + m);
    default:
        return (long)y;
    }
}

/* The newest time minus the duration, in zone z (calendar arithmetic for y/m/w/d, with
 * mktime's normalisation: "1m" before 31 March is "31 February", that is 3 March). */
static int64_t within_cutoff(const struct tz *z, int64_t newest_ns, const struct caris_duration *d)
{
    /* hours alone are elapsed time: no round trip through the wall clock, which in the hour
     * the clocks go back turned the newest's time into the first of its two readings, an
     * hour early ("2h" kept 3 h) */
    if (!d->years && !d->months && !d->weeks && !d->days)
        return newest_ns - (int64_t)d->hours * 3600 * 1000000000;
    int64_t t = floor_div(newest_ns, 1000000000);
    int64_t wall = t + tz_offset_at(z, t);
    int64_t days = floor_div(wall, 86400), secs = wall - days * 86400;
    int64_t y;
    int m, dd;
    tz_civil_from_days(days, &y, &m, &dd);
    int64_t months = (int64_t)y * 12 + (m - 1) - (int64_t)d->years * 12 - d->months;
    y = floor_div(months, 12);
    m = (int)(months - y * 12) + 1;
    int64_t cut_days = tz_days_from_civil(y, m, 1) + (dd - 1) - (int64_t)d->weeks * 7 - d->days;
    int64_t c = tz_wall_to_time(z, cut_days * 86400 + secs, NULL) - (int64_t)d->hours * 3600;
    /* before 1678 (a long duration: "400y" meant as "for ever"): every backup is within; in
     * nanoseconds it wrapped to a time after 2200, and every backup but the newest went */
    if (c <= INT64_MIN / 1000000000 + 1)
        return INT64_MIN;
    return c * 1000000000 + (newest_ns - t * 1000000000);
}

bool caris_backup_time_future(int64_t time_ns, int64_t now_ns)
{
    return now_ns < INT64_MAX - CARIS_CLOCK_SKEW_NS && time_ns > now_ns + CARIS_CLOCK_SKEW_NS;
}

void caris_backup_future_text(const char *id, int64_t time_ns, int64_t now_ns, char *out, size_t n)
{
    char when[40], at[40];
    time_format_iso(time_ns, when, sizeof(when));
    time_format_iso(now_ns, at, sizeof(at));
    snprintf(out, n, "backup %s is dated %s, after the current time %s", id ? id : "?", when, at);
}

int caris_backup_latest_check(json_t *s, const char *what, struct err *e)
{
    int64_t t, now = time_now_ns();
    const char *started = json_string_value(json_object_get(s, "started"));
    if (!started || time_parse_iso(started, &t) != 0 || !caris_backup_time_future(t, now))
        return 0;
    char text[300];
    caris_backup_future_text(json_string_value(json_object_get(s, "id")), t, now, text,
                             sizeof(text));
    return err_set(
        e, ERR_USAGE, "give a backup id (`caris-backup list`), and check the clock (`date`)",
        "%s is ambiguous: %s (was the clock ahead when it was made, or is it behind now?)", what,
        text);
}

int caris_retention_decide(const struct caris_retention_policy *p, const char *tz, int64_t now_ns,
                           struct caris_retention_item *items, size_t n, struct err *e)
{
    if (p->last < 0 || p->daily < 0 || p->weekly < 0 || p->monthly < 0 || p->yearly < 0)
        return err_set(e, ERR_USAGE, "counts are 0 or more", "negative retention count");
    struct tz *z;
    if (zone_load(tz, &z, e) != 0)
        return -1;
    size_t *ord = xcalloc(n ? n : 1, sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
        ord[i] = i;
        items[i].keep = false;
        items[i].reasons = 0;
    }
    qsort_r(ord, n, sizeof(size_t), cmp_newest_first, items);
    /* a backup the state record has removed: forgotten, and left out of the rules; a backup
     * dated in the future, or one its last verification found damaged: kept, and left out of
     * the rules (ord keeps the others, in the same order). Counted, a damaged
     * backup would fill the slot of its day (or be the newest) and cost the intact backup
     * the restore would need. */
    size_t judged = 0;
    size_t intact_in_group = 0, group = 0; /* judged ones of this group, all newer than it */
    for (size_t k = 0; k < n; k++) {
        const struct caris_retention_item *it = &items[ord[k]];
        if (k == 0 || it->group != group)
            intact_in_group = 0;
        group = it->group;
        if (it->removed) {
            items[ord[k]].reasons = 0; /* forgotten (again), whatever its time */
        } else if (caris_backup_time_future(it->time_ns, now_ns)) {
            items[ord[k]].reasons = CARIS_KEEP_FUTURE;
        } else if (it->damaged) {
            /* kept while no intact backup of its group is newer (it may hold the latest data,
             * in part); an older one goes like any backup no rule keeps */
            items[ord[k]].reasons = intact_in_group ? 0 : CARIS_KEEP_DAMAGED;
        } else {
            ord[judged++] = ord[k];
            intact_in_group++;
        }
    }
    const struct {
        int count, per;
        unsigned reason;
    } rules[] = {{p->daily, PER_DAY, CARIS_KEEP_DAILY},
                 {p->weekly, PER_WEEK, CARIS_KEEP_WEEKLY},
                 {p->monthly, PER_MONTH, CARIS_KEEP_MONTHLY},
                 {p->yearly, PER_YEAR, CARIS_KEEP_YEARLY}};
    for (size_t a = 0; a < judged;) {
        size_t b = a; /* the group is ord[a .. b), newest first */
        while (b < judged && items[ord[b]].group == items[ord[a]].group)
            b++;
        items[ord[a]].reasons |= CARIS_KEEP_NEWEST;
        for (size_t k = a; k < b && (int)(k - a) < p->last; k++)
            items[ord[k]].reasons |= CARIS_KEEP_LAST;
        for (size_t r = 0; r < sizeof(rules) / sizeof(rules[0]); r++) {
            int kept = 0;
            long last_key = 0;
            bool have_last = false;
            for (size_t k = a; k < b && kept < rules[r].count; k++) {
                long key = period_key(z, items[ord[k]].time_ns, rules[r].per);
                if (have_last && key == last_key)
                    continue; /* an older backup of a period already decided */
                items[ord[k]].reasons |= rules[r].reason;
                kept++;
                last_key = key;
                have_last = true;
            }
        }
        if (p->has_within) {
            int64_t cutoff = within_cutoff(z, items[ord[a]].time_ns, &p->within);
            for (size_t k = a; k < b; k++)
                if (items[ord[k]].time_ns >= cutoff)
                    items[ord[k]].reasons |= CARIS_KEEP_WITHIN;
        }
        a = b;
    }
    tz_free(z);
    for (size_t i = 0; i < n; i++)
        items[i].keep = items[i].reasons != 0;
    free(ord);
    return 0;
}

/* ---- forget -------------------------------------------------------------------------- */

/* What makes backups one group: their kind, the machine that made them (hosts that share a
 * repository may back up the same paths, or a database at "localhost", and one host's
 * backups must not fill the other's days) and their source (the same set of file roots; the
 * same database on the same server). */
static json_t *group_of(json_t *s)
{
    const char *kind = json_string_value(json_object_get(s, "kind"));
    json_t *host = json_object_get(s, "host") ?: json_null();
    if (kind && strcmp(kind, "database") == 0) {
        json_t *src = json_object_get(s, "source");
        return json_pack("{s:s, s:O, s:O, s:o}", "kind", kind, "host", host, "database",
                         json_object_get(s, "database") ?: json_null(), "source",
                         src ? json_pack("{s:O, s:O}", "host",
                                         json_object_get(src, "host") ?: json_null(), "port",
                                         json_object_get(src, "port") ?: json_null())
                             : json_null());
    }
    return json_pack("{s:s, s:O, s:O}", "kind", kind ? kind : "?", "host", host, "roots",
                     json_object_get(s, "roots") ?: json_null());
}

/* A warning of forget: logged, and in the result (w is freed). */
static void forget_warn(struct caris_forget_result *res, const struct caris_op *op, char *w)
{
    caris_op_log(op, LOG_WARN, "%s", w);
    json_array_append_new(res->warnings, json_string(w));
    free(w);
}

/* The snapshots (object name -> "removing" or "replayed") that the state record has removed:
 * one whose forget was interrupted (the next prune deletes its file) and one put back after it
 * was forgotten. NULL with e when the record cannot be audited. */
static json_t *removed_snapshots(struct repo *r, struct err *e)
{
    json_t *st = NULL;
    if (repo_state_audit(r, &st, e) != 0)
        return NULL;
    json_t *out = json_object();
    static const char *const kinds[] = {"removing", "replayed"};
    for (size_t k = 0; k < 2; k++) {
        size_t j;
        json_t *x;
        json_array_foreach(json_object_get(st, kinds[k]), j, x)
        {
            const char *obj = json_string_value(json_object_get(x, "object"));
            if (obj)
                json_object_set_new(out, obj, json_string(kinds[k]));
        }
    }
    json_decref(st);
    return out;
}

int caris_retention_apply(struct repo *r, const struct caris_forget_opts *o,
                          const struct caris_op *op, struct caris_forget_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    res->dry_run = o->dry_run;
    res->groups = json_array();
    res->warnings = json_array();
    res->by_id = o->nids > 0;
    if (o->kind && strcmp(o->kind, "files") && strcmp(o->kind, "database"))
        return err_set(e, ERR_USAGE, "--type is files or database", "unknown backup type '%s'",
                       o->kind);
    /* Every rule off would forget every backup but each group's newest: a slip (0 read as
     * "no limit", a variable set to 0 by mistake) must not cost the history. Keeping only the
     * newest is said as such: --keep-last 1. */
    if (!o->nids && policy_keeps_nothing(&o->policy))
        return err_set(e, ERR_USAGE, KEEPS_NOTHING_HINT, KEEPS_NOTHING_MSG);
    struct tz *z; /* checked before anything is locked */
    if (zone_load(o->tz, &z, e) != 0)
        return -1;
    tz_free(z);
    if (repo_lock(r, false, o->dry_run ? "forget --dry-run" : "forget", e) != 0)
        return -1;
    int rc = -1;
    struct caris_retention_item *items = NULL;
    const char **damaged_by = NULL; /* item i: by what it is known damaged, or NULL */
    json_t *damaged = NULL, *named_damaged = json_array(), *verifs = NULL, *tests = NULL,
           *removed = NULL;
    size_t unread_v = 0, unread_t = 0;
    json_t *list = caris_backup_list_damaged(r, o->kind, &damaged, e);
    if (!list || !(verifs = caris_last_verifications_n(r, &unread_v, e)) ||
        !(tests = caris_db_last_test_restores_n(r, &unread_t, e)))
        goto out;
    /* The policy must not count a backup the state record has removed: counted, one whose
     * forget was interrupted took its day's (week's, ...) place, the backup that should have
     * kept it was forgotten, and the prune that followed deleted both, leaving that day with
     * no backup. It is forgotten (again) instead. */
    if (!o->nids && !(removed = removed_snapshots(r, e)))
        goto out;
    /* A record that cannot be read may have said a backup is damaged: the policy would then
     * count that backup as whole, keep it, and forget the older ones that are (a backup no
     * record names damaged is kept only as its rule says). Forgetting named backups is the
     * operator's choice. */
    if (!o->nids && unread_v + unread_t) {
        err_set(e, ERR_DAMAGE,
                "run `caris-backup verify --all` (each backup is recorded again), then move the "
                "records that cannot be read out of the repository (`caris-backup check` names "
                "them)",
                "refusing to apply the retention policy: %zu verification and test-restore "
                "record(s) cannot be read, and may have said a backup is damaged",
                unread_v + unread_t);
        goto out;
    }
    size_t n = json_array_size(list);
    items = xcalloc(n ? n : 1, sizeof(*items));
    damaged_by = xcalloc(n ? n : 1, sizeof(*damaged_by));
    res->backups = xcalloc(n + json_array_size(damaged) + 1, sizeof(*res->backups));
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        json_t *g = group_of(s);
        size_t gi = json_array_size(res->groups), k;
        json_t *have;
        json_array_foreach(res->groups, k, have)
        {
            if (json_equal(have, g)) {
                gi = k;
                break;
            }
        }
        if (gi == json_array_size(res->groups))
            json_array_append(res->groups, g);
        json_decref(g);
        int64_t t = 0;
        const char *started = json_string_value(json_object_get(s, "started"));
        if (!started || time_parse_iso(started, &t) != 0) {
            err_set(e, ERR_DAMAGE, "run `caris-backup check`",
                    "backup %s has no valid time: refusing to judge its group",
                    json_string_value(json_object_get(s, "id")) ?: "?");
            goto out;
        }
        items[i].id = json_string_value(json_object_get(s, "id"));
        items[i].group = gi;
        items[i].time_ns = t;
        const char *bid = items[i].id ? items[i].id : "";
        items[i].damaged = caris_backup_known_damaged(
            json_object_get(verifs, bid), json_object_get(tests, bid), NULL, &damaged_by[i]);
        const char *how = json_string_value(
            json_object_get(removed, json_string_value(json_object_get(s, "_file")) ?: ""));
        if (how) {
            items[i].removed = true;
            char *w = xasprintf(strcmp(how, "removing") == 0
                                    ? "backup %s was being forgotten when its forget stopped: "
                                      "no rule counts it, and it is forgotten"
                                    : "backup %s was forgotten, but its snapshot is back (put "
                                      "back from an old copy?): no rule counts it, and it is "
                                      "forgotten again",
                                bid);
            forget_warn(res, op, w);
        }
    }
    int64_t now = time_now_ns();
    if (o->nids) {
        for (size_t k = 0; k < o->nids; k++) {
            bool found = false;
            for (i = 0; i < n && !found; i++)
                found = strcmp(items[i].id ? items[i].id : "", o->ids[k]) == 0;
            json_t *d = found ? NULL : repo_snapshot_damaged_find(damaged, o->ids[k]);
            if (d && !json_is_true(json_object_get(d, "_named"))) {
                json_object_set_new(d, "_named", json_true());
                json_array_append(named_damaged, d);
            }
            if (!found && !d) {
                char esc[200];
                str_escape(o->ids[k], strlen(o->ids[k]), esc, sizeof(esc));
                err_set(e, ERR_NOT_FOUND, "give full backup ids, as `caris-backup list` shows them",
                        "no backup %s%s%s: nothing forgotten", esc, o->kind ? " of type " : "",
                        o->kind ? o->kind : "");
                goto out;
            }
        }
        for (i = 0; i < n; i++) {
            items[i].keep = true;
            for (size_t k = 0; k < o->nids && items[i].keep; k++)
                items[i].keep = strcmp(items[i].id ? items[i].id : "", o->ids[k]) != 0;
        }
    } else if (caris_retention_decide(&o->policy, o->tz, now, items, n, e) != 0) {
        goto out;
    }
    /* Report grouped, each group newest first: the order the decision was made in. */
    size_t *ord = xcalloc(n ? n : 1, sizeof(size_t));
    for (i = 0; i < n; i++)
        ord[i] = i;
    qsort_r(ord, n, sizeof(size_t), cmp_newest_first, items);
    size_t nrep = 0; /* with ids, only the named backups are reported */
    for (size_t k = 0; k < n; k++)
        if (!o->nids || !items[ord[k]].keep)
            ord[nrep++] = ord[k];
    for (size_t k = 0; k < nrep; k++) {
        struct caris_forget_decision *d = &res->backups[k];
        const struct caris_retention_item *it = &items[ord[k]];
        json_t *sum = json_array_get(list, ord[k]);
        snprintf(d->id, sizeof(d->id), "%s", it->id ? it->id : "?");
        snprintf(d->kind, sizeof(d->kind), "%s",
                 json_string_value(json_object_get(sum, "kind")) ?: "?");
        d->group = it->group;
        d->time_ns = it->time_ns;
        d->keep = it->keep;
        d->reasons = it->reasons;
        if (d->reasons & CARIS_KEEP_FUTURE) {
            char text[300];
            caris_backup_future_text(d->id, d->time_ns, now, text, sizeof(text));
            char *w = xasprintf("%s: it is kept and no rule counts it. Was the clock ahead when it "
                                "was made, or is it behind now? Check the clock (`date`); a "
                                "backup that is not wanted can be forgotten by id (`forget ID`)",
                                text);
            forget_warn(res, op, w);
        }
        if (d->reasons & CARIS_KEEP_DAMAGED) {
            bool by_test = damaged_by[ord[k]] && strcmp(damaged_by[ord[k]], "test restore") == 0;
            char *w = xasprintf("backup %s failed its last %s: it is kept (it may "
                                "still restore in part) and no rule counts it, so it takes no "
                                "intact backup's place; forget it by id (`forget ID`) once it is "
                                "not needed",
                                d->id, by_test ? "test restore (damage found)" : "verification");
            forget_warn(res, op, w);
        }
        res->nbackups++;
        if (d->keep)
            res->kept++;
        else
            res->removed++;
    }
    /* The named backups whose snapshot cannot be read: in a group of their own. */
    if (json_array_size(named_damaged)) {
        size_t gi = json_array_size(res->groups);
        json_array_append_new(res->groups, json_pack("{s:s}", "kind", "damaged"));
        json_t *d;
        json_array_foreach(named_damaged, i, d)
        {
            struct caris_forget_decision *x = &res->backups[res->nbackups++];
            const char *obj = json_string_value(json_object_get(d, "object")) ?: "?";
            snprintf(x->id, sizeof(x->id), "%s",
                     json_string_value(json_object_get(d, "id")) ?: obj);
            snprintf(x->kind, sizeof(x->kind), "?");
            snprintf(x->error, sizeof(x->error), "%s",
                     json_string_value(json_object_get(d, "error")) ?: "?");
            x->group = gi;
            x->damaged = true;
            res->removed++;
            char *w =
                xasprintf("backup %s cannot be read (%s): %s as named; what only it used "
                          "goes at the next prune",
                          x->id, x->error, o->dry_run ? "it would be forgotten" : "forgotten");
            forget_warn(res, op, w);
        }
    }
    if (o->nids)
        res->kept = n - (res->removed - json_array_size(named_damaged)); /* not named */
    /* Remove through repo_snapshots_remove (the one place that knows what removing a
     * snapshot involves): one update of the state record for all of them. */
    if (!o->dry_run && res->removed) {
        const char **names = xcalloc(res->removed, sizeof(char *));
        size_t nn = 0;
        for (size_t k = nrep; k-- > 0;) {
            const char *f =
                json_string_value(json_object_get(json_array_get(list, ord[k]), "_file"));
            if (!res->backups[k].keep && f) /* every listed snapshot has its object name */
                names[nn++] = f;
        }
        json_t *d;
        json_array_foreach(named_damaged, i, d)
        {
            const char *obj = json_string_value(json_object_get(d, "object")) ?: "";
            names[nn++] = strrchr(obj, '/') ? strrchr(obj, '/') + 1 : obj;
        }
        int rrc = -1;
        if (caris_op_cancelled(op))
            err_set(e, ERR_FAILURE, NULL, "cancelled");
        else if ((rrc = repo_snapshots_remove(r, names, nn, e)) != 0)
            err_wrap(e, "cannot forget %zu backup(s)", nn);
        free(names);
        if (rrc != 0) {
            free(ord);
            goto out;
        }
        for (size_t k = res->nbackups; k-- > 0;)
            if (!res->backups[k].keep)
                caris_op_log(op, LOG_INFO, "forgot backup %s", res->backups[k].id);
    }
    free(ord);
    rc = 0;
out:
    repo_unlock(r);
    free(items);
    free(damaged_by);
    json_decref(list);
    json_decref(verifs);
    json_decref(tests);
    json_decref(damaged);
    json_decref(removed);
    json_decref(named_damaged);
    return rc;
}

json_t *caris_forget_result_to_json(const struct caris_forget_result *res)
{
    json_t *groups = json_array();
    size_t i;
    json_t *g;
    json_array_foreach(res->groups, i, g)
    {
        json_t *copy = json_deep_copy(g);
        json_object_set_new(copy, "backups", json_array());
        json_array_append_new(groups, copy);
    }
    for (size_t k = 0; k < res->nbackups; k++) {
        const struct caris_forget_decision *d = &res->backups[k];
        char when[40];
        time_format_iso(d->time_ns, when, sizeof(when));
        json_t *b = json_pack("{s:s, s:o, s:b, s:o}", "id", d->id, "time",
                              d->damaged ? json_null() : json_string(when), "keep", d->keep,
                              "reasons", caris_retention_reasons_json(d->reasons));
        if (d->damaged) {
            json_object_set_new(b, "damaged", json_true());
            json_object_set_new(b, "error", json_string(d->error));
        }
        json_array_append_new(json_object_get(json_array_get(groups, d->group), "backups"), b);
    }
    return json_pack("{s:b, s:I, s:I, s:o, s:o}", "dry_run", res->dry_run, "kept",
                     (json_int_t)res->kept, "removed", (json_int_t)res->removed, "groups", groups,
                     "warnings", res->warnings ? json_incref(res->warnings) : json_array());
}

void caris_forget_result_free(struct caris_forget_result *res)
{
    free(res->backups);
    json_decref(res->groups);
    json_decref(res->warnings);
    memset(res, 0, sizeof(*res));
}

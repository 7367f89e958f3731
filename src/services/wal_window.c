/* What the WAL archive covers: ranges and gaps per timeline, the recovery window, and WAL
 * retention (caris/walwindow.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"
#include "caris/op.h"
#include "caris/crypto.h"
#include "caris/stream.h"
#include "caris/wal.h"
#include "caris/walwindow.h"

#define HISTORY_MAX (1u << 20) /* a .history file is a line per timeline switch */

int caris_lsn_parse(const char *s, uint64_t *lsn)
{
    if (!s)
        return -1;
    char *end;
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || slash - s > 8 || !slash[1] || strlen(slash + 1) > 8)
        return -1;
    for (const char *p = s; *p; p++)
        if (p != slash &&
            !((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'F') || (*p >= 'a' && *p <= 'f')))
            return -1;
    uint64_t hi = strtoull(s, &end, 16);
    if (end != slash)
        return -1;
    uint64_t lo = strtoull(slash + 1, &end, 16);
    if (*end)
        return -1;
    *lsn = (hi << 32) | lo;
    return 0;
}

void caris_lsn_format(uint64_t lsn, char *out, size_t n)
{
    snprintf(out, n, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
}

static json_t *lsn_json(uint64_t lsn)
{
    char t[32];
    caris_lsn_format(lsn, t, sizeof(t));
    return json_string(t);
}

size_t caris_wal_bases_from_snapshots(json_t *summaries, struct caris_wal_base **out,
                                      const char **unreadable)
{
    size_t n = 0;
    if (unreadable)
        *unreadable = NULL;
    *out = xcalloc(json_array_size(summaries) + 1, sizeof(**out));
    size_t i;
    json_t *s;
    json_array_foreach(summaries, i, s)
    {
        const char *method = json_string_value(json_object_get(s, "method"));
        /* a physical backup's summary keeps its WAL position in "physical" (phys_backup.c) */
        json_t *ph = json_object_get(s, "physical");
        if (!json_is_object(ph))
            ph = s;
        uint64_t start;
        json_t *tl = json_object_get(ph, "start_timeline");
        json_int_t tli = json_integer_value(tl ? tl : json_object_get(ph, "timeline"));
        if (!method || strcmp(method, "physical") != 0)
            continue;
        if (caris_lsn_parse(json_string_value(json_object_get(ph, "start_lsn")), &start) != 0 ||
            tli <= 0 || tli > UINT32_MAX) {
            if (unreadable && !*unreadable)
                *unreadable = json_string_value(json_object_get(s, "id")) ?: "?";
            continue;
        }
        struct caris_wal_base *b = &(*out)[n++];
        snprintf(b->id, sizeof(b->id), "%s", json_string_value(json_object_get(s, "id")) ?: "?");
        b->timeline = (uint32_t)tli;
        b->start_lsn = start;
        if (caris_lsn_parse(json_string_value(json_object_get(ph, "stop_lsn")), &b->end_lsn) != 0)
            b->end_lsn = 0;
        b->segsize = json_integer_value(json_object_get(ph, "wal_segment_size"));
        int64_t t;
        /* when it really ended (a backup dated back with --time says otherwise in "finished":
         * the window would begin before what a restore to a time takes) */
        const char *ts = json_string_value(json_object_get(ph, "stop_time"));
        if (!ts)
            ts = json_string_value(json_object_get(s, "finished"));
        if (!ts)
            ts = json_string_value(json_object_get(s, "time"));
        /* rounded up: the window's earliest time must be one a restore takes (it refuses a
         * target before the backup's end, which a time rounded down was, by up to a second) */
        if (ts && time_parse_iso(ts, &t) == 0)
            b->end_time = t / 1000000000 + (t % 1000000000 != 0);
    }
    return n;
}

int caris_wal_history_parse(const char *text, size_t len, const char *name,
                            struct caris_wal_switch **out, size_t *n, struct err *e)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0, lineno = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        lineno++;
        char line[256];
        size_t ll = (size_t)(le - p);
        if (ll >= sizeof(line))
            ll = sizeof(line) - 1;
        memcpy(line, p, ll);
        line[ll] = '\0';
        p = nl ? nl + 1 : end;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#' || *s == '\r')
            continue;
        char *tend;
        unsigned long parent = strtoul(s, &tend, 10);
        char lsn[40] = "";
        if (tend == s || (*tend != ' ' && *tend != '\t') || parent == 0 || parent > UINT32_MAX ||
            sscanf(tend, " %39s", lsn) != 1) {
            free(*out);
            *out = NULL;
            *n = 0;
            return err_set(e, ERR_DAMAGE, NULL, "timeline history %s: line %zu is malformed", name,
                           lineno);
        }
        uint64_t x;
        if (caris_lsn_parse(lsn, &x) != 0) {
            free(*out);
            *out = NULL;
            *n = 0;
            return err_set(e, ERR_DAMAGE, NULL, "timeline history %s: line %zu: '%s' is not an LSN",
                           name, lineno, lsn);
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 4;
            *out = xrealloc(*out, cap * sizeof(**out));
        }
        (*out)[(*n)++] = (struct caris_wal_switch){(uint32_t)parent, x};
    }
    return 0;
}

static bool is_kind(json_t *rec, const char *kind)
{
    const char *k = json_string_value(json_object_get(rec, "kind"));
    return k && strcmp(k, kind) == 0;
}

int64_t caris_wal_segment_size(json_t *records, struct err *e)
{
    int64_t size = 0;
    size_t i;
    json_t *x;
    json_array_foreach(records, i, x)
    {
        if (!is_kind(x, "segment"))
            continue;
        int64_t s = (int64_t)json_integer_value(json_object_get(x, "size"));
        if (size && s != size)
            return err_set(e, ERR_DAMAGE,
                           "find out which cluster archived into this repository; one archive is "
                           "one cluster",
                           "the WAL archive holds segments of %" PRId64 " and of %" PRId64 " bytes",
                           size, s);
        size = s;
    }
    return size;
}

uint64_t caris_wal_keep_from(const struct caris_wal_base *bases, size_t n)
{
    uint64_t from = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || bases[i].start_lsn < from)
            from = bases[i].start_lsn;
    return from;
}

/* A record's segment number (log * segments per log + seg); false for .history files. */
static bool record_segno(json_t *rec, int64_t segsize, uint64_t *segno)
{
    if (segsize <= 0 || is_kind(rec, "history") || !json_is_integer(json_object_get(rec, "log")) ||
        !json_is_integer(json_object_get(rec, "seg")))
        return false;
    uint64_t per_log = (1ull << 32) / (uint64_t)segsize;
    *segno = (uint64_t)json_integer_value(json_object_get(rec, "log")) * per_log +
             (uint64_t)json_integer_value(json_object_get(rec, "seg"));
    return true;
}

bool caris_wal_retain(json_t *rec, uint64_t keep_from, int64_t segsize)
{
    uint64_t segno;
    if (keep_from == 0 || !record_segno(rec, segsize, &segno))
        return true;
    /* the segment ends at (segno + 1) * segsize: needed when that is after keep_from */
    return (segno + 1) * (uint64_t)segsize > keep_from;
}

void caris_wal_segment_name(uint32_t tli, uint64_t segno, int64_t segsize, char out[25])
{
    uint64_t per_log = (1ull << 32) / (uint64_t)segsize;
    snprintf(out, 25, "%08X%08X%08X", tli, (unsigned)(segno / per_log),
             (unsigned)(segno % per_log));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

struct tl {
    uint32_t tli;
    uint64_t *segs;
    size_t n, cap;
    const char *partial;
    const char *first_pushed, *last_pushed;
    bool has_parent;
    struct caris_wal_switch sw;
};

static struct tl *tl_get(struct tl **v, size_t *n, uint32_t tli)
{
    for (size_t i = 0; i < *n; i++)
        if ((*v)[i].tli == tli)
            return &(*v)[i];
    *v = xrealloc(*v, (*n + 1) * sizeof(**v));
    struct tl *t = &(*v)[(*n)++];
    memset(t, 0, sizeof(*t));
    t->tli = tli;
    return t;
}

static int cmp_tl(const void *a, const void *b)
{
    const struct tl *x = a, *y = b;
    return x->tli < y->tli ? -1 : x->tli > y->tli;
}

static json_t *gap_json(uint32_t tli, uint64_t from, uint64_t to, int64_t segsize,
                        const char *reason, const struct caris_wal_base *bases, size_t nbases)
{
    char a[25], b[25], s[32], x[32];
    caris_wal_segment_name(tli, from, segsize, a);
    caris_wal_segment_name(tli, to, segsize, b);
    uint64_t start = from * (uint64_t)segsize, end = (to + 1) * (uint64_t)segsize;
    caris_lsn_format(start, s, sizeof(s));
    caris_lsn_format(end, x, sizeof(x));
    char breaks[400];
    snprintf(breaks, sizeof(breaks),
             "recovery from a base backup that starts before %s cannot replay past %s (timeline "
             "%u); base backups that start at or after %s are not affected",
             s, s, tli, x);
    json_t *ids = json_array();
    /* (a base that starts inside the gap lacks its own first WAL: affected as well) */
    for (size_t i = 0; i < nbases; i++)
        if (bases[i].start_lsn < end)
            json_array_append_new(ids, json_string(bases[i].id));
    return json_pack("{s:I, s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:o}", "timeline", (json_int_t)tli,
                     "from", a, "to", b, "segments", (json_int_t)(to - from + 1), "start_lsn", s,
                     "end_lsn", x, "reason", reason, "breaks", breaks, "backups", ids);
}

json_t *caris_wal_timelines(json_t *records, json_t *histories, int64_t segsize,
                            const struct caris_wal_base *bases, size_t nbases)
{
    struct tl *v = NULL;
    size_t n = 0;
    size_t i;
    json_t *x;
    json_array_foreach(records, i, x)
    {
        json_int_t tli = json_integer_value(json_object_get(x, "timeline"));
        if (tli <= 0 || tli > UINT32_MAX)
            continue;
        struct tl *t = tl_get(&v, &n, (uint32_t)tli);
        const char *pushed = json_string_value(json_object_get(x, "pushed"));
        uint64_t segno;
        if (is_kind(x, "partial"))
            t->partial = json_string_value(json_object_get(x, "name"));
        if (!is_kind(x, "segment") || !record_segno(x, segsize, &segno))
            continue;
        if (t->n == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 16;
            t->segs = xrealloc(t->segs, t->cap * sizeof(uint64_t));
        }
        t->segs[t->n++] = segno;
        if (pushed && (!t->first_pushed || strcmp(pushed, t->first_pushed) < 0))
            t->first_pushed = pushed;
        if (pushed && (!t->last_pushed || strcmp(pushed, t->last_pushed) > 0))
            t->last_pushed = pushed;
    }
    /* the switches the .history files record (a timeline may have a history and no segment) */
    const char *key;
    json_t *h;
    json_object_foreach(histories, key, h)
    {
        long tli = strtol(key, NULL, 10);
        size_t hn = json_array_size(h);
        if (tli <= 0 || tli > (long)UINT32_MAX || hn == 0)
            continue;
        struct tl *t = tl_get(&v, &n, (uint32_t)tli);
        json_t *last = json_array_get(h, hn - 1);
        uint64_t sw;
        if (caris_lsn_parse(json_string_value(json_object_get(last, "switch_lsn")), &sw) != 0)
            continue;
        t->has_parent = true;
        t->sw.parent = (uint32_t)json_integer_value(json_object_get(last, "parent"));
        t->sw.switch_lsn = sw;
    }
    if (n)
        qsort(v, n, sizeof(*v), cmp_tl);
    for (size_t k = 0; k < n; k++) {
        if (v[k].n)
            qsort(v[k].segs, v[k].n, sizeof(uint64_t), cmp_u64);
        size_t u = 0; /* the same segment twice (two pushes at once) counts once */
        for (size_t j = 0; j < v[k].n; j++)
            if (u == 0 || v[k].segs[u - 1] != v[k].segs[j])
                v[k].segs[u++] = v[k].segs[j];
        v[k].n = u;
    }

    json_t *out = json_array();
    for (size_t k = 0; k < n; k++) {
        struct tl *t = &v[k];
        json_t *o = json_pack("{s:I}", "timeline", (json_int_t)t->tli);
        json_object_set_new(o, "parent", t->has_parent ? json_integer(t->sw.parent) : json_null());
        json_object_set_new(o, "switch_lsn",
                            t->has_parent ? lsn_json(t->sw.switch_lsn) : json_null());
        json_t *gaps = json_array();
        if (t->n && segsize > 0) {
            char a[25], b[25];
            caris_wal_segment_name(t->tli, t->segs[0], segsize, a);
            caris_wal_segment_name(t->tli, t->segs[t->n - 1], segsize, b);
            json_object_set_new(o, "first", json_string(a));
            json_object_set_new(o, "last", json_string(b));
            json_object_set_new(o, "start_lsn", lsn_json(t->segs[0] * (uint64_t)segsize));
            json_object_set_new(o, "end_lsn",
                                lsn_json((t->segs[t->n - 1] + 1) * (uint64_t)segsize));
            for (size_t j = 1; j < t->n; j++)
                if (t->segs[j] > t->segs[j - 1] + 1)
                    json_array_append_new(
                        gaps, gap_json(t->tli, t->segs[j - 1] + 1, t->segs[j] - 1, segsize,
                                       "missing between archived segments", bases, nbases));
        } else {
            json_object_set_new(o, "first", json_null());
            json_object_set_new(o, "last", json_null());
            json_object_set_new(o, "start_lsn", json_null());
            json_object_set_new(o, "end_lsn", json_null());
        }
        /* across the switch from the parent: the parent up to the segment before the one
         * holding the switch point, this timeline from that segment on (PostgreSQL copies
         * it to the new timeline) */
        struct tl *p = NULL;
        for (size_t j = 0; t->has_parent && j < n; j++)
            if (v[j].tli == t->sw.parent)
                p = &v[j];
        if (p && p->n && segsize > 0) {
            uint64_t s = t->sw.switch_lsn / (uint64_t)segsize;
            char reason[120];
            if (s > 0 && p->segs[p->n - 1] < s - 1) {
                snprintf(reason, sizeof(reason), "missing before the switch to timeline %u",
                         t->tli);
                json_array_append_new(gaps, gap_json(p->tli, p->segs[p->n - 1] + 1, s - 1, segsize,
                                                     reason, bases, nbases));
            }
            if (t->n && t->segs[0] > s) {
                snprintf(reason, sizeof(reason),
                         "missing after the switch from timeline %u (its first segments)", p->tli);
                json_array_append_new(
                    gaps, gap_json(t->tli, s, t->segs[0] - 1, segsize, reason, bases, nbases));
            }
        }
        json_object_set_new(o, "segments", json_integer((json_int_t)t->n));
        json_object_set_new(o, "partial", t->partial ? json_string(t->partial) : json_null());
        json_object_set_new(o, "first_pushed",
                            t->first_pushed ? json_string(t->first_pushed) : json_null());
        json_object_set_new(o, "last_pushed",
                            t->last_pushed ? json_string(t->last_pushed) : json_null());
        json_object_set_new(o, "gaps", gaps);
        json_array_append_new(out, o);
    }
    for (size_t k = 0; k < n; k++)
        free(v[k].segs);
    free(v);
    return out;
}

json_t *caris_wal_recovery_window(json_t *timelines, const struct caris_wal_base *bases,
                                  size_t nbases)
{
    /* the latest point: the end of the highest timeline that has segments */
    json_t *latest = NULL;
    size_t i;
    json_t *t;
    json_array_foreach(timelines, i, t) if (json_integer_value(json_object_get(t, "segments")) > 0)
        latest = t;
    json_t *w = json_pack("{s:I}", "base_backups", (json_int_t)nbases);
    json_object_set_new(w, "timeline",
                        latest ? json_incref(json_object_get(latest, "timeline")) : json_null());
    json_object_set_new(w, "latest_lsn",
                        latest ? json_incref(json_object_get(latest, "end_lsn")) : json_null());
    if (!nbases) {
        json_object_set_new(w, "earliest", json_null());
        json_object_set_new(w, "latest", json_null());
        json_object_set_new(w, "reason",
                            json_string("no physical base backup: archived WAL alone restores "
                                        "nothing (logical backups restore to the time each was "
                                        "taken)"));
        return w;
    }
    if (!latest) {
        json_object_set_new(w, "earliest", json_null());
        json_object_set_new(w, "latest", json_null());
        json_object_set_new(w, "reason", json_string("no WAL segment archived"));
        return w;
    }
    /* a base's recovery to the present is whole when no gap lies after its start and the
     * archive has WAL from its start on */
    int64_t earliest = 0;
    json_t *cut = json_array();
    for (size_t b = 0; b < nbases; b++) {
        bool whole = true;
        uint64_t first_start = UINT64_MAX;
        json_array_foreach(timelines, i, t)
        {
            uint64_t s;
            if (caris_lsn_parse(json_string_value(json_object_get(t, "start_lsn")), &s) == 0 &&
                s < first_start)
                first_start = s;
            size_t g;
            json_t *gap;
            json_array_foreach(json_object_get(t, "gaps"), g, gap)
            {
                uint64_t ge;
                if (caris_lsn_parse(json_string_value(json_object_get(gap, "end_lsn")), &ge) == 0 &&
                    ge > bases[b].start_lsn)
                    whole = false;
            }
        }
        if (first_start > bases[b].start_lsn)
            whole = false; /* the WAL from its start was never archived, or was dropped */
        if (whole && bases[b].end_time && (!earliest || bases[b].end_time < earliest))
            earliest = bases[b].end_time;
        if (!whole)
            json_array_append_new(cut, json_string(bases[b].id));
    }
    char ts[40];
    if (earliest) {
        time_format_iso(earliest * 1000000000, ts, sizeof(ts));
        json_object_set_new(w, "earliest", json_string(ts));
    } else {
        json_object_set_new(w, "earliest", json_null());
        json_object_set_new(w, "reason",
                            json_string("no kept base backup has gapless WAL from its start to "
                                        "the present"));
    }
    json_object_set_new(w, "latest", json_incref(json_object_get(latest, "last_pushed")));
    json_object_set_new(w, "backups_cut_short", cut);
    return w;
}

/* By timeline, then name: by LSN within a timeline. */
static int cmp_record_by_name(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t tx = json_integer_value(json_object_get(x, "timeline"));
    json_int_t ty = json_integer_value(json_object_get(y, "timeline"));
    if (tx != ty)
        return tx < ty ? -1 : 1;
    const char *nx = json_string_value(json_object_get(x, "name"));
    const char *ny = json_string_value(json_object_get(y, "name"));
    return strcmp(nx ? nx : "", ny ? ny : "");
}

/* Names archived with different contents: [{"name", "sha256": [each version's, once]}].
 * Two pushes of different files under one name at the same moment both store theirs (the
 * later one fails, exit 4); `wal get` then refuses the name, so a recovery stops there. */
static json_t *wal_conflicts(json_t *recs)
{
    size_t n = json_array_size(recs);
    json_t **v = xmalloc(xsize(n ? n : 1, sizeof(*v), 0));
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(recs, i);
    qsort(v, n, sizeof(*v), cmp_record_by_name);
    json_t *out = json_array();
    for (size_t i = 0; i < n;) {
        const char *name = json_string_value(json_object_get(v[i], "name"));
        json_t *shas = json_array();
        size_t j = i;
        for (; j < n; j++) {
            const char *nj = json_string_value(json_object_get(v[j], "name"));
            if (!name || !nj || strcmp(name, nj) != 0)
                break;
            const char *h = json_string_value(json_object_get(v[j], "sha256"));
            bool seen = false;
            size_t k;
            json_t *y;
            json_array_foreach(shas, k, y) seen |= h && strcmp(json_string_value(y), h) == 0;
            if (h && !seen)
                json_array_append_new(shas, json_string(h));
        }
        if (j == i)
            j++; /* a record without a name */
        if (json_array_size(shas) > 1)
            json_array_append_new(out, json_pack("{s:s, s:o}", "name", name, "sha256", shas));
        else
            json_decref(shas);
        i = j;
    }
    free(v);
    return out;
}

/* Test-only: CARIS_TEST_WAL_BASES="TLI:LSN[,TLI:LSN...]" adds base backups that start at LSN
 * on TLI, so that retention and the window are tested end to end before physical base
 * backups exist on this branch. */
static void add_test_bases(struct caris_wal_base **bases, size_t *n)
{
    const char *env = getenv("CARIS_TEST_WAL_BASES");
    if (!env || !*env)
        return;
    char *copy = xstrdup(env), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        uint64_t lsn;
        if (!colon || caris_lsn_parse(colon + 1, &lsn) != 0)
            continue;
        *bases = xrealloc(*bases, (*n + 1) * sizeof(**bases));
        struct caris_wal_base *b = &(*bases)[(*n)++];
        memset(b, 0, sizeof(*b));
        snprintf(b->id, sizeof(b->id), "test-base-%zu", *n);
        b->timeline = (uint32_t)strtoul(tok, NULL, 10);
        b->start_lsn = lsn;
        b->end_time = time_now_ns() / 1000000000;
    }
    free(copy);
}

/* The kept base backups of r, but those gone[0..ngone) names (a dry run's backups assumed
 * forgotten). strict (retention): an unreadable snapshot, which may be a base backup, makes the
 * answer unknown (ERR_DAMAGE); otherwise (reports) the readable ones count. */
static int load_bases(struct repo *r, bool strict, const char *const *gone, size_t ngone,
                      struct caris_wal_base **bases, size_t *n, struct err *e)
{
    json_t *damaged = NULL;
    json_t *snaps = repo_snapshot_list(r, &damaged, e);
    if (!snaps)
        return -1;
    repo_snapshots_drop_named(snaps, damaged, gone, ngone);
    if (strict && json_array_size(damaged)) {
        err_set(e, ERR_DAMAGE, "run `caris-backup check`; forget or repair that backup first",
                "refusing to prune: snapshot %s cannot be read, so what its backup needs (its "
                "data, and the WAL of a physical one) is unknown",
                json_string_value(json_object_get(json_array_get(damaged, 0), "object")));
        json_decref(snaps);
        json_decref(damaged);
        return -1;
    }
    json_decref(damaged);
    const char *unreadable = NULL;
    *n = caris_wal_bases_from_snapshots(snaps, bases, &unreadable);
    if (strict && unreadable) {
        /* (authenticated, but without a WAL position: a writer's bug, or a newer format) */
        err_set(e, ERR_DAMAGE, "run `caris-backup check`; forget or repair that backup first",
                "refusing to prune: physical backup %s does not say where its WAL starts, so "
                "which WAL it needs is unknown",
                unreadable);
        free(*bases);
        *bases = NULL;
        *n = 0;
        json_decref(snaps);
        return -1;
    }
    json_decref(snaps);
    add_test_bases(bases, n);
    return 0;
}

/* caris_wal_window, and (when bases_out) the base backups it was computed with (to free). */
static json_t *window_with_bases(struct repo *r, json_t **damaged,
                                 struct caris_wal_base **bases_out, size_t *nbases_out,
                                 struct err *e)
{
    json_t *recs = repo_record_list(r, "wal", damaged, e);
    if (!recs)
        return NULL;
    json_t *out = NULL, *histories = json_object();
    struct caris_wal_base *bases = NULL;
    size_t nbases = 0;
    int64_t segsize = caris_wal_segment_size(recs, e);
    if (segsize < 0 || load_bases(r, false, NULL, 0, &bases, &nbases, e) != 0)
        goto done;
    size_t i;
    json_t *x;
    json_array_foreach(recs, i, x)
    {
        if (!is_kind(x, "history"))
            continue;
        const char *name = json_string_value(json_object_get(x, "name"));
        const char *hex = json_string_value(json_object_get(x, "sha256"));
        uint8_t sha[32];
        struct buf text = {0};
        if (!name || !hex || cx_unhex(hex, sha, 32) != 0 ||
            stream_restore_buf(r, json_object_get(x, "chunks"), sha, HISTORY_MAX, &text, e) != 0) {
            if (!err_is_set(e))
                err_set(e, ERR_DAMAGE, "run `caris-backup check --read-data`",
                        "the WAL record of %s is malformed", name ? name : "?");
            buf_free(&text);
            goto done;
        }
        struct caris_wal_switch *sw = NULL;
        size_t nsw = 0;
        int rc = caris_wal_history_parse((const char *)text.data, text.len, name, &sw, &nsw, e);
        buf_free(&text);
        if (rc != 0)
            goto done;
        json_t *arr = json_array();
        for (size_t k = 0; k < nsw; k++)
            json_array_append_new(arr, json_pack("{s:I, s:o}", "parent", (json_int_t)sw[k].parent,
                                                 "switch_lsn", lsn_json(sw[k].switch_lsn)));
        free(sw);
        char key[16];
        snprintf(key, sizeof(key), "%lld",
                 (long long)json_integer_value(json_object_get(x, "timeline")));
        json_object_set_new(histories, key, arr);
    }
    json_t *tls = caris_wal_timelines(recs, histories, segsize, bases, nbases);
    json_t *gaps = json_array();
    json_t *t;
    json_array_foreach(tls, i, t) json_array_extend(gaps, json_object_get(t, "gaps"));
    uint64_t keep = caris_wal_keep_from(bases, nbases);
    json_t *ret = json_pack(
        "{s:o, s:s}", "keep_from_lsn", keep ? lsn_json(keep) : json_null(), "rule",
        keep ? "WAL from the oldest kept base backup's start on is kept; older WAL is removed by "
               "prune"
             : "no physical base backup: all archived WAL is kept");
    out = json_pack("{s:I, s:o, s:o, s:o, s:o, s:o}", "segment_size", (json_int_t)segsize,
                    "timelines", tls, "gaps", gaps, "recovery_window",
                    caris_wal_recovery_window(tls, bases, nbases), "retention", ret, "conflicts",
                    wal_conflicts(recs));
done:
    if (out && bases_out) {
        *bases_out = bases;
        *nbases_out = nbases;
    } else {
        free(bases);
    }
    json_decref(histories);
    json_decref(recs);
    if (!out && damaged) {
        json_decref(*damaged);
        *damaged = NULL;
    }
    return out;
}

json_t *caris_wal_window(struct repo *r, json_t **damaged, struct err *e)
{
    return window_with_bases(r, damaged, NULL, NULL, e);
}

void caris_wal_conflict_text(const json_t *conflict, char *out, size_t n)
{
    json_t *shas = json_object_get(conflict, "sha256");
    snprintf(out, n,
             "archived %zu times with different content (SHA-256 %.16s…, %.16s…): `wal get` "
             "refuses it, so a recovery that needs it stops there; find out which cluster pushed "
             "which (two clusters archiving into one repository?)",
             json_array_size(shas), json_string_value(json_array_get(shas, 0)),
             json_string_value(json_array_get(shas, 1)));
}

/* The WAL range a base backup needs: segments first..last of timeline tli (or tli2, where it
 * ended: the same when it did not change), up to the stop LSN. */
struct base_range {
    uint32_t tli, tli2;
    int64_t segsz;
    uint64_t start, stop;
};
static bool base_range_ok(const struct base_range *b);
static void base_select_range(json_t *const recs[2], const struct base_range *b, bool served_only,
                              struct caris_base_wal *out);

/* The WAL records the check found missing or damaged blobs in (errors whose object is a
 * record of the archive, check_wal_records in src/repo/check.c) name the base backups that
 * need them to become consistent (base_select, served_only) in their "backups": check then
 * records those backups damaged, as verify does. Records that cannot be listed: nothing added
 * (the check reports them). */
static void bad_wal_bases(struct repo *r, json_t *errors, const struct caris_wal_base *bases,
                          size_t nbases)
{
    json_t *by_object = json_object(); /* object name -> the error about it (borrowed) */
    size_t i;
    json_t *x;
    json_array_foreach(errors, i, x)
    {
        const char *o = json_string_value(json_object_get(x, "object"));
        if (o && (strncmp(o, "records/wal/", 12) == 0 || strncmp(o, "records/walstream/", 18) == 0))
            json_object_set(by_object, o, x);
    }
    json_t *recs[2] = {NULL, NULL};
    if (json_object_size(by_object) && nbases) {
        struct err le = ERR_INIT;
        recs[0] = repo_record_list_named(r, "wal", NULL, &le);
        recs[1] = recs[0] ? repo_record_list_named(r, "walstream", NULL, &le) : NULL;
    }
    for (size_t b = 0; recs[1] && b < nbases; b++) {
        struct base_range br = {bases[b].timeline, bases[b].timeline, bases[b].segsize,
                                bases[b].start_lsn, bases[b].end_lsn};
        if (!bases[b].end_lsn || !base_range_ok(&br))
            continue;
        struct caris_base_wal w = {0};
        base_select_range(recs, &br, true, &w);
        json_array_foreach(w.records, i, x)
        {
            const char *o = json_string_value(json_object_get(json_array_get(x, 1), "_object"));
            json_t *ids = json_object_get(o ? json_object_get(by_object, o) : NULL, "backups");
            /* (bases are taken one after another: a repeat is the last name) */
            const char *last = json_string_value(json_array_get(ids, json_array_size(ids) - 1));
            if (json_is_array(ids) && (!last || strcmp(last, bases[b].id) != 0))
                json_array_append_new(ids, json_string(bases[b].id));
        }
        caris_base_wal_free(&w);
    }
    json_decref(recs[0]);
    json_decref(recs[1]);
    json_decref(by_object);
}

int caris_wal_check(struct repo *r, json_t *errors, json_t *warnings, json_t **window,
                    struct err *e)
{
    if (window)
        *window = NULL;
    json_t *damaged = NULL;
    struct caris_wal_base *bases = NULL;
    size_t nbases = 0;
    json_t *w = window_with_bases(r, &damaged, &bases, &nbases, e);
    if (!w)
        return -1;
    json_decref(damaged); /* the check's own walk reports unreadable records */
    int nerr = 0;
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(w, "gaps"), i, g)
    {
        json_t *ids = json_object_get(g, "backups");
        char object[80], msg[700];
        snprintf(object, sizeof(object), "WAL %s..%s",
                 json_string_value(json_object_get(g, "from")),
                 json_string_value(json_object_get(g, "to")));
        snprintf(msg, sizeof(msg), "%lld WAL segment%s %s: %s",
                 (long long)json_integer_value(json_object_get(g, "segments")),
                 json_integer_value(json_object_get(g, "segments")) == 1 ? "" : "s",
                 json_string_value(json_object_get(g, "reason")),
                 json_string_value(json_object_get(g, "breaks")));
        json_t *x = json_pack("{s:s, s:s, s:O}", "object", object, "error", msg, "backups", ids);
        /* an error when it cuts short the recovery of a kept base backup; otherwise (no base
         * backup before it) nothing restorable depends on it yet: a warning */
        if (json_array_size(ids)) {
            json_array_append_new(errors, x);
            nerr++;
        } else {
            json_array_append_new(warnings, x);
        }
    }
    /* a kept base backup whose own WAL (start to stop) lies outside what is archived on its
     * timeline: before the first archived segment, after the last (never archived: made with
     * --no-archive-check, archive_command failing or pointing elsewhere), or none at all */
    int64_t segsize = (int64_t)json_integer_value(json_object_get(w, "segment_size"));
    for (size_t b = 0; b < nbases; b++) {
        if (!bases[b].end_lsn)
            continue;
        /* (an archive without a segment has no size of its own: the backup's then) */
        json_t *u = caris_wal_base_unarchived(
            json_object_get(w, "timelines"), segsize > 0 ? segsize : bases[b].segsize,
            bases[b].timeline, bases[b].start_lsn, bases[b].end_lsn);
        if (!u)
            continue;
        char object[80], msg[700];
        snprintf(object, sizeof(object), "WAL %s..%s",
                 json_string_value(json_object_get(u, "from")),
                 json_string_value(json_object_get(u, "to")));
        json_int_t nseg = json_integer_value(json_object_get(u, "segments"));
        snprintf(msg, sizeof(msg),
                 "%lld WAL segment%s of base backup %s (the WAL it needs to become consistent) "
                 "%s not in the archive: the backup cannot be restored; if the source server "
                 "still has %s in pg_wal, archive %s with `caris-backup wal push`",
                 (long long)nseg, nseg == 1 ? "" : "s", bases[b].id, nseg == 1 ? "is" : "are",
                 nseg == 1 ? "it" : "them", nseg == 1 ? "it" : "them");
        json_array_append_new(errors, json_pack("{s:s, s:s, s:[s]}", "object", object, "error", msg,
                                                "backups", bases[b].id));
        nerr++;
        json_decref(u);
    }
    bad_wal_bases(r, errors, bases, nbases);
    free(bases);
    json_array_foreach(json_object_get(w, "conflicts"), i, g)
    {
        char object[80], msg[400];
        snprintf(object, sizeof(object), "WAL %s", json_string_value(json_object_get(g, "name")));
        caris_wal_conflict_text(g, msg, sizeof(msg));
        json_array_append_new(
            errors, json_pack("{s:s, s:s, s:[]}", "object", object, "error", msg, "backups"));
        nerr++;
    }
    if (window)
        *window = w;
    else
        json_decref(w);
    return nerr;
}

/* A streamed partial's segment: "timeline/log/seg". */
static void stream_key(json_t *rec, char *out, size_t n)
{
    snprintf(out, n, "%lld/%lld/%lld",
             (long long)json_integer_value(json_object_get(rec, "timeline")),
             (long long)json_integer_value(json_object_get(rec, "log")),
             (long long)json_integer_value(json_object_get(rec, "seg")));
}

/* For each segment that has streamed partials ("stream" records, caris/wal.h): the size of the
 * longest, or -1 when the whole segment is archived ({key: size}, new reference). */
static json_t *stream_supersession(json_t *recs)
{
    json_t *m = json_object();
    char key[80];
    size_t i;
    json_t *x;
    json_array_foreach(recs, i, x)
    {
        if (!is_kind(x, "stream"))
            continue;
        stream_key(x, key, sizeof(key));
        json_int_t size = json_integer_value(json_object_get(x, "size"));
        json_t *cur = json_object_get(m, key);
        if (!cur || json_integer_value(cur) < size)
            json_object_set_new(m, key, json_integer(size));
    }
    json_array_foreach(recs, i, x)
    {
        if (!is_kind(x, "segment") || !json_is_integer(json_object_get(x, "log")))
            continue;
        stream_key(x, key, sizeof(key));
        if (json_object_get(m, key))
            json_object_set_new(m, key, json_integer(-1));
    }
    return m;
}

/* Whether rec is a streamed partial that a longer one or the whole segment supersedes (wal
 * get never serves it again). */
static bool stream_superseded(json_t *rec, json_t *longest)
{
    if (!is_kind(rec, "stream"))
        return false;
    char key[80];
    stream_key(rec, key, sizeof(key));
    json_int_t best = json_integer_value(json_object_get(longest, key));
    return best == -1 || best > json_integer_value(json_object_get(rec, "size"));
}

int caris_wal_retention_apply(struct repo *r, bool dry_run, const char *const *assume_forgotten,
                              size_t nassume_forgotten, const struct caris_op *op,
                              struct caris_wal_retention_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    json_t *damaged = NULL, *damaged_streams = NULL;
    json_t *recs = repo_record_list_named(r, "wal", &damaged, e);
    if (!recs)
        return -1;
    /* the streamed partials (caris/wal.h) go by the same rules, and once superseded */
    json_t *streams = repo_record_list_named(r, "walstream", &damaged_streams, e);
    if (!streams) {
        json_decref(recs);
        json_decref(damaged);
        return -1;
    }
    json_array_extend(recs, streams);
    json_decref(streams);
    json_array_extend(damaged, damaged_streams);
    json_decref(damaged_streams);
    int rc = -1;
    struct caris_wal_base *bases = NULL;
    size_t nbases = 0;
    json_t *drop = json_array();
    if (json_array_size(damaged)) {
        err_set(e, ERR_DAMAGE, "run `caris-backup check`",
                "refusing to prune: WAL record %s cannot be read, so what it needs is unknown",
                json_string_value(json_object_get(json_array_get(damaged, 0), "object")));
        goto out;
    }
    int64_t segsize = caris_wal_segment_size(recs, e);
    if (segsize < 0 || load_bases(r, true, dry_run ? assume_forgotten : NULL,
                                  dry_run ? nassume_forgotten : 0, &bases, &nbases, e) != 0)
        goto out;
    res->base_backups = nbases;
    res->keep_from_lsn = caris_wal_keep_from(bases, nbases);
    size_t i;
    json_t *x;
    json_t *longest = stream_supersession(recs);
    json_array_foreach(recs, i, x)
    {
        if (caris_wal_retain(x, res->keep_from_lsn, segsize) && !stream_superseded(x, longest))
            res->kept++;
        else
            json_array_append(drop, x);
    }
    json_decref(longest);
    /* oldest first: a prune stopped half-way leaves the archive shorter at its start, never
     * with a hole in the middle */
    size_t n = json_array_size(drop);
    json_t **v = xcalloc(n + 1, sizeof(*v));
    for (size_t k = 0; k < n; k++)
        v[k] = json_array_get(drop, k);
    qsort(v, n, sizeof(*v), cmp_record_by_name);
    rc = 0;
    for (size_t k = 0; k < n && rc == 0; k++) {
        const char *obj = json_string_value(json_object_get(v[k], "_object"));
        res->removed++;
        res->bytes_removed += (uint64_t)json_integer_value(json_object_get(v[k], "size"));
        if (!dry_run)
            rc = repo_record_remove(r, obj, e);
    }
    free(v);
    if (rc == 0 && res->removed)
        caris_op_log(op, LOG_INFO, "WAL retention: %s%llu archived WAL file%s older than %s",
                     dry_run ? "would remove " : "removed ", (unsigned long long)res->removed,
                     res->removed == 1 ? "" : "s",
                     "the oldest kept base backup's start, or streamed partials superseded");
out:
    free(bases);
    json_decref(drop);
    json_decref(recs);
    json_decref(damaged);
    return rc;
}

json_t *caris_wal_retention_to_json(const struct caris_wal_retention_result *res)
{
    return json_pack("{s:I, s:o, s:I, s:I, s:I, s:s}", "base_backups",
                     (json_int_t)res->base_backups, "keep_from_lsn",
                     res->keep_from_lsn ? lsn_json(res->keep_from_lsn) : json_null(), "kept",
                     (json_int_t)res->kept, "removed", (json_int_t)res->removed, "bytes_removed",
                     (json_int_t)res->bytes_removed, "rule",
                     res->keep_from_lsn ? "WAL needed from the oldest kept base backup's start "
                                          "to the present is kept"
                                        : "no physical base backup: all archived WAL is kept");
}

uint32_t caris_wal_latest_timeline(json_t *timelines)
{
    uint32_t latest = 0;
    size_t i;
    json_t *t;
    json_array_foreach(timelines, i, t)
    {
        json_int_t tli = json_integer_value(json_object_get(t, "timeline"));
        if (tli > 0 && tli <= UINT32_MAX && (uint32_t)tli > latest)
            latest = (uint32_t)tli;
    }
    return latest;
}

static json_t *timeline_of(json_t *timelines, uint32_t tli)
{
    size_t i;
    json_t *t;
    json_array_foreach(timelines, i, t) if (json_integer_value(json_object_get(t, "timeline")) ==
                                            (json_int_t)tli) return t;
    return NULL;
}

json_t *caris_wal_base_unarchived(json_t *timelines, int64_t segsize, uint32_t tli,
                                  uint64_t start_lsn, uint64_t stop_lsn)
{
    if (segsize <= 0 || tli == 0 || stop_lsn < start_lsn)
        return NULL;
    uint64_t first = start_lsn / (uint64_t)segsize;
    uint64_t last = stop_lsn > start_lsn ? (stop_lsn - 1) / (uint64_t)segsize : first;
    json_t *t = timeline_of(timelines, tli);
    uint64_t as, ae, from = first, to = last; /* the archived stretch: segments as .. ae - 1 */
    if (t && json_integer_value(json_object_get(t, "segments")) > 0 &&
        caris_lsn_parse(json_string_value(json_object_get(t, "start_lsn")), &as) == 0 &&
        caris_lsn_parse(json_string_value(json_object_get(t, "end_lsn")), &ae) == 0) {
        as /= (uint64_t)segsize;
        ae /= (uint64_t)segsize;
        if (first < as)
            to = last < as - 1 ? last : as - 1; /* before the first archived segment */
        else if (last >= ae)
            from = first > ae ? first : ae; /* after the last */
        else
            return NULL;
    }
    char a[25], b[25], ls[32], le[32];
    caris_wal_segment_name(tli, from, segsize, a);
    caris_wal_segment_name(tli, to, segsize, b);
    caris_lsn_format(from * (uint64_t)segsize, ls, sizeof(ls));
    caris_lsn_format((to + 1) * (uint64_t)segsize, le, sizeof(le));
    return json_pack("{s:I, s:s, s:s, s:I, s:s, s:s}", "timeline", (json_int_t)tli, "from", a, "to",
                     b, "segments", (json_int_t)(to - from + 1), "start_lsn", ls, "end_lsn", le);
}

bool caris_wal_timeline_reaches(json_t *timelines, uint32_t base_tli, uint64_t base_end_lsn,
                                uint32_t target)
{
    /* each step goes to a lower timeline (a parent is older than its child), so the walk ends
     * after at most as many steps as there are timelines, even on a malformed history */
    uint32_t cur = target;
    for (size_t steps = 0; steps <= json_array_size(timelines); steps++) {
        if (cur == base_tli)
            return true;
        json_t *t = timeline_of(timelines, cur);
        json_int_t parent = json_integer_value(json_object_get(t, "parent"));
        uint64_t sw;
        if (!t || parent <= 0 || (uint32_t)parent >= cur ||
            caris_lsn_parse(json_string_value(json_object_get(t, "switch_lsn")), &sw) != 0 ||
            sw < base_end_lsn)
            return false;
        cur = (uint32_t)parent;
    }
    return false;
}

json_t *caris_wal_recovery_gap(json_t *timelines, int64_t segsize, uint32_t base_tli,
                               uint64_t base_start_lsn, uint32_t target)
{
    if (segsize <= 0)
        return NULL;
    json_t *first = NULL;
    uint64_t first_start = UINT64_MAX;
    uint32_t cur = target ? target : base_tli;
    uint64_t hi = UINT64_MAX; /* recovery reads cur's WAL below hi */
    /* each step goes to a lower timeline, as in caris_wal_timeline_reaches */
    for (size_t steps = 0; steps <= json_array_size(timelines); steps++) {
        json_t *t = timeline_of(timelines, cur);
        bool at_base = cur == base_tli;
        json_int_t parent = json_integer_value(json_object_get(t, "parent"));
        uint64_t lo = base_start_lsn, sw = 0;
        if (!at_base) {
            if (!t || parent <= 0 || (uint32_t)parent >= cur ||
                caris_lsn_parse(json_string_value(json_object_get(t, "switch_lsn")), &sw) != 0)
                return NULL;
            lo = sw;
        }
        /* cur's gaps, wherever they are listed: the segments of a parent missing before a
         * switch are listed with the child (caris_wal_timelines), and "timeline" names the
         * parent */
        size_t k, i;
        json_t *lt, *g;
        json_array_foreach(timelines, k, lt)
        {
            json_array_foreach(json_object_get(lt, "gaps"), i, g)
            {
                uint64_t gs, ge;
                json_int_t gtl = json_integer_value(json_object_get(g, "timeline"));
                if (gtl == (json_int_t)cur &&
                    caris_lsn_parse(json_string_value(json_object_get(g, "start_lsn")), &gs) == 0 &&
                    caris_lsn_parse(json_string_value(json_object_get(g, "end_lsn")), &ge) == 0 &&
                    gs < hi && ge > lo && gs < first_start) {
                    first = g;
                    first_start = gs;
                }
            }
        }
        if (at_base)
            return first;
        hi = sw - sw % (uint64_t)segsize;
        cur = (uint32_t)parent;
    }
    return NULL;
}

/* caris_wal_base_records on records already listed: recs[0] the "wal" records, recs[1] the
 * "walstream" ones (borrowed; out->damaged left as it is). */
/* A range believed: a segment size PostgreSQL allows, a stop not before the start, at most
 * 2^20 segments (a bogus stop LSN would have the whole range allocated and listed). */
static bool base_range_ok(const struct base_range *b)
{
    return b->tli > 0 && b->segsz >= (1 << 20) && (b->segsz & (b->segsz - 1)) == 0 &&
           b->stop >= b->start && (b->stop - b->start) / (uint64_t)b->segsz <= (1u << 20);
}

static int base_select(json_t *const recs[2], json_t *summary, bool served_only,
                       struct caris_base_wal *out, struct err *e)
{
    json_t *phys = json_object_get(summary, "physical");
    if (!json_is_object(phys)) {
        out->records = json_array();
        out->missing = json_array();
        return 0;
    }
    const char *id = json_string_value(json_object_get(summary, "id")) ?: "?";
    json_t *stl = json_object_get(phys, "start_timeline");
    json_int_t tli = json_integer_value(stl ? stl : json_object_get(phys, "timeline"));
    /* a standby that followed its upstream's promotion during the backup ended it on a later
     * timeline: recovery reads the segments from the switch on from that one (which ones is
     * in its .history: a segment of either timeline serves) */
    json_int_t tli2 = json_integer_value(json_object_get(phys, "stop_timeline"));
    if (tli2 <= 0 || tli2 > UINT32_MAX)
        tli2 = tli;
    struct base_range b = {(uint32_t)tli, (uint32_t)tli2,
                           json_integer_value(json_object_get(phys, "wal_segment_size")), 0, 0};
    if (tli <= 0 || tli > UINT32_MAX ||
        caris_lsn_parse(json_string_value(json_object_get(phys, "start_lsn")), &b.start) != 0 ||
        caris_lsn_parse(json_string_value(json_object_get(phys, "stop_lsn")), &b.stop) != 0 ||
        !base_range_ok(&b))
        return err_set(e, ERR_DAMAGE, "run `caris-backup check`",
                       "backup %s does not record which WAL it needs", id);
    base_select_range(recs, &b, served_only, out);
    return 0;
}

static void base_select_range(json_t *const recs[2], const struct base_range *b, bool served_only,
                              struct caris_base_wal *out)
{
    json_int_t tli = b->tli, tli2 = b->tli2, segsz = b->segsz;
    uint64_t start = b->start, stop = b->stop;
    uint64_t first = start / (uint64_t)segsz;
    uint64_t last = stop > start ? (stop - 1) / (uint64_t)segsz : first;
    static const char *const kinds[] = {"wal", "walstream"};
    /* the longest partial of each segment, -1 where the whole segment is archived */
    json_t *both = json_array();
    json_array_extend(both, recs[0]);
    json_array_extend(both, recs[1]);
    json_t *longest = stream_supersession(both);
    json_decref(both);
    bool *got = xcalloc(last - first + 1, sizeof(*got)); /* segments of the range served */
    out->records = json_array();
    for (size_t k = 0; k < 2; k++) {
        size_t i;
        json_t *rec;
        json_array_foreach(recs[k], i, rec)
        {
            json_int_t t = json_integer_value(json_object_get(rec, "timeline"));
            bool history = is_kind(rec, "history");
            bool seg = is_kind(rec, "segment") || is_kind(rec, "stream");
            uint64_t segno = 0;
            bool in_range = (t == tli || t == tli2) && record_segno(rec, segsz, &segno) &&
                            segno >= first && segno <= last;
            if (history ? t > (tli2 > tli ? tli2 : tli)
                        : !(in_range && (seg || is_kind(rec, "backup"))))
                continue;
            /* a whole segment; a streamed partial only where the backup's WAL ends in it (the
             * last segment, up to the stop LSN at least): a shorter one is served padded with
             * zeros, and recovery stops before the backup is consistent */
            uint64_t end;
            bool serves =
                history || is_kind(rec, "segment") ||
                (is_kind(rec, "stream") && segno == last && !stream_superseded(rec, longest) &&
                 caris_lsn_parse(json_string_value(json_object_get(rec, "end_lsn")), &end) == 0 &&
                 end >= stop);
            if (serves && seg)
                got[segno - first] = true;
            if (serves && is_kind(rec, "stream"))
                out->streamed = true;
            if (served_only && !serves)
                continue;
            json_array_append_new(out->records, json_pack("[sO]", kinds[k], rec));
        }
    }
    out->missing = json_array();
    for (uint64_t g = first; g <= last; g++)
        if (!got[g - first]) {
            char name[25];
            caris_wal_segment_name((uint32_t)tli, g, segsz, name);
            json_array_append_new(out->missing, json_string(name));
        }
    free(got);
    json_decref(longest);
}

int caris_wal_listing_read(struct repo *r, struct caris_wal_listing *l, struct err *e)
{
    memset(l, 0, sizeof(*l));
    static const char *const kinds[] = {"wal", "walstream"};
    for (size_t k = 0; k < 2; k++) {
        json_t *damaged = NULL;
        l->recs[k] = repo_record_list(r, kinds[k], &damaged, e);
        l->damaged += json_array_size(damaged);
        if (k == 0)
            l->damaged_wal = json_array_size(damaged);
        json_decref(damaged);
        if (!l->recs[k]) {
            caris_wal_listing_free(l);
            return -1;
        }
    }
    l->read = true;
    return 0;
}

void caris_wal_listing_free(struct caris_wal_listing *l)
{
    json_decref(l->recs[0]);
    json_decref(l->recs[1]);
    memset(l, 0, sizeof(*l));
}

int caris_wal_base_records_listed(const struct caris_wal_listing *l, json_t *summary,
                                  bool served_only, struct caris_base_wal *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    out->damaged = l->damaged;
    out->damaged_wal = l->damaged_wal;
    return base_select(l->recs, summary, served_only, out, e);
}

int caris_wal_base_records(struct repo *r, json_t *summary, bool served_only,
                           struct caris_base_wal *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(json_object_get(summary, "physical"))) {
        out->records = json_array();
        out->missing = json_array();
        return 0;
    }
    struct caris_wal_listing l;
    if (caris_wal_listing_read(r, &l, e) != 0)
        return -1;
    int rc = caris_wal_base_records_listed(&l, summary, served_only, out, e);
    caris_wal_listing_free(&l);
    return rc;
}

void caris_base_wal_free(struct caris_base_wal *w)
{
    json_decref(w->records);
    json_decref(w->missing);
    memset(w, 0, sizeof(*w));
}

/* Seeing inside backups (see caris/inspect.h): id resolution, what the inspect commands
 * share (inspect_internal.h), show, ls and find. dump is in inspect_dump.c, diff in
 * inspect_diff.c. Entries are read one at a time from the manifest's text (entry_iter) and
 * decoded by manifest_entry_decode. */
#include "caris/inspect.h"
#include "caris/retention.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "caris/backup.h"
#include "caris/crypto.h"
#include "caris/jsonx.h"
#include "common.h"
#include "manifest.h"
#include "inspect_internal.h"

#define VERIFY_RECORD_KIND "verify" /* records of verify/check results, when they are kept */

int caris_json_bytes(json_t *obj, const char *field, char **out, size_t *len)
{
    return manifest_get_bytes(obj, field, out, len);
}

/* ---- ids ----------------------------------------------------------------------------- */

bool inspect_kind_is(json_t *s, const char *kind)
{
    const char *k = json_string_value(json_object_get(s, "kind"));
    return k && strcmp(k, kind) == 0;
}

/* The time part of a backup id (PREFIX_MODE_TIME), or NULL. */
static const char *id_time(const char *id)
{
    const char *a = strchr(id, '_');
    const char *b = a ? strchr(a + 1, '_') : NULL;
    return b ? b + 1 : NULL;
}

/* Whether text is a whole backup id, PREFIX_MODE_YYYY-MM-DDTHH-MM-SS[-N]: one that is not in
 * the repository (forgotten, or its snapshot gone) must not be taken as a prefix of another
 * (ID-2, a backup that started in the same second), whose data a restore would give. */
static bool whole_id(const char *text)
{
    const char *t = id_time(text);
    static const char pattern[] = "dddd-dd-ddTdd-dd-dd";
    if (!t || strlen(t) < sizeof(pattern) - 1)
        return false;
    for (size_t i = 0; pattern[i]; i++)
        if (pattern[i] == 'd' ? !(t[i] >= '0' && t[i] <= '9') : t[i] != pattern[i])
            return false;
    const char *rest = t + sizeof(pattern) - 1;
    if (*rest == '\0')
        return true;
    return rest[0] == '-' && rest[1] && strspn(rest + 1, "0123456789") == strlen(rest + 1);
}

json_t *inspect_damaged_newer(json_t *damaged, const char *want, const char *id)
{
    size_t i;
    json_t *d;
    json_array_foreach(damaged, i, d)
    {
        const char *did = json_string_value(json_object_get(d, "id"));
        if (!did)
            return d;
        if (want && (strcmp(want, "files") == 0) != (strncmp(did, "file_", 5) == 0))
            continue;
        const char *dt = id_time(did), *pt = id_time(id);
        if (!dt || !pt || strcmp(dt, pt) > 0)
            return d;
    }
    return NULL;
}

static int resolve_latest(struct repo *r, json_t *list, json_t *damaged, const char *want, char *id,
                          struct err *e)
{
    json_t *pick = NULL;
    bool files = false, db = false;
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        files |= inspect_kind_is(s, "files");
        db |= inspect_kind_is(s, "database");
        if (!want || inspect_kind_is(s, want))
            pick = s; /* the list is oldest first */
    }
    if (!want && files && db)
        return err_set(e, ERR_USAGE,
                       "say `latest:files` or `latest:database` (or give an id or a prefix)",
                       "'latest' is ambiguous: the repository has file and database backups");
    /* none that can be read, but one that cannot: damage, not "make one" (exit 7 told an
     * operator whose only backup is damaged that there was none) */
    json_t *only = pick ? NULL : inspect_damaged_newer(damaged, want, "");
    if (only) {
        const char *did = json_string_value(json_object_get(only, "id"));
        return err_set(e, ERR_DAMAGE,
                       "`caris-backup check` shows what is damaged; `caris-backup list` the "
                       "backups that can be read",
                       "'latest': no %sbackup can be read: %s%s cannot be read (its snapshot "
                       "file %s is damaged)",
                       want ? (strcmp(want, "files") == 0 ? "file " : "database ") : "",
                       did ? "backup " : "a snapshot", did ? did : "",
                       json_string_value(json_object_get(only, "object")));
    }
    if (!pick)
        return err_set(
            e, ERR_NOT_FOUND,
            want && strcmp(want, "database") == 0 ? "make one with `caris-backup backup database`"
                                                  : "make one with `caris-backup backup files`",
            "no %sbackup in repository %s",
            want ? (strcmp(want, "files") == 0 ? "file " : "database ") : "", repo_path(r));
    if (caris_backup_latest_check(pick, "'latest'", e) != 0)
        return -1;
    const char *pid = json_string_value(json_object_get(pick, "id"));
    /* the newest backup that cannot be read is not passed over in silence: 'latest' would
     * restore older data than it holds, and say nothing (as for a future-dated one above) */
    json_t *d = inspect_damaged_newer(damaged, want, pid);
    if (d) {
        const char *did = json_string_value(json_object_get(d, "id"));
        char *hint = xasprintf("name the backup to use: %s is the newest that can be read; "
                               "`caris-backup check` shows what is damaged",
                               pid);
        err_set(e, ERR_DAMAGE, hint,
                "'latest' would be %s, but %s%s%s cannot be read (its snapshot file %s is "
                "damaged)%s",
                pid, did ? "backup " : "a snapshot", did ? did : "", did ? ", newer," : "",
                json_string_value(json_object_get(d, "object")),
                did ? "" : ": it may be a newer backup");
        free(hint);
        return -1;
    }
    snprintf(id, CARIS_ID_MAX, "%s", pid);
    return 0;
}

int caris_backup_resolve(struct repo *r, const char *text, const char *kind, char id[CARIS_ID_MAX],
                         struct err *e)
{
    if (!text || !*text)
        return err_set(e, ERR_USAGE, "give a backup id, a unique prefix of one, or `latest`",
                       "empty backup id");
    bool latest = false;
    const char *want = kind;
    if (strcmp(text, "latest") == 0) {
        latest = true;
    } else if (strncmp(text, "latest:", 7) == 0) {
        const char *k = text + 7;
        if (strcmp(k, "files") != 0 && strcmp(k, "database") != 0)
            return err_set(e, ERR_USAGE, "say `latest:files` or `latest:database`",
                           "unknown kind in '%s'", text);
        if (kind && strcmp(kind, k) != 0) {
            err_set(e, ERR_USAGE, NULL, "'%s' names a %s backup", text, k);
            snprintf(e->hint, sizeof(e->hint), "this command takes %s backups: say `latest:%s`",
                     kind, kind);
            return -1;
        }
        want = k;
        latest = true;
    }
    json_t *damaged = NULL;
    json_t *list = repo_snapshot_list(r, &damaged, e);
    if (!list)
        return -1;
    int rc;
    if (latest) {
        rc = resolve_latest(r, list, damaged, want, id, e);
        json_decref(list);
        json_decref(damaged);
        return rc;
    }
    /* The backups whose id is text (an exact id wins over the longer ids it starts) or starts
     * with it: the readable ones, then those whose snapshot is damaged. A prefix that takes a
     * readable and a damaged backup is ambiguous: resolved to the readable one, it gave older
     * data than the damaged one without a word, as 'latest' did. */
    size_t tl = strlen(text), nmatch = 0, ndamaged = 0, i;
    bool whole = whole_id(text); /* an exact match only */
    json_t *s, *match = NULL;
    const char *dmatch = NULL;
    bool exact = false, dexact = false;
    char cands[400] = "";
    size_t clen = 0;
    for (int pass = 0; pass < 2 && !exact; pass++) {
        json_array_foreach(pass ? damaged : list, i, s)
        {
            const char *sid = json_string_value(json_object_get(s, "id"));
            if (!sid || strncmp(sid, text, tl) != 0 || (whole && sid[tl] != '\0'))
                continue;
            if (strcmp(sid, text) == 0) {
                exact = pass == 0, dexact = pass == 1;
                if (pass == 0)
                    match = s;
                else
                    dmatch = sid;
                break;
            }
            if (pass == 0) {
                match = s;
                nmatch++;
            } else {
                dmatch = sid;
                ndamaged++;
            }
            if (clen < sizeof(cands) - 1) {
                int n = snprintf(cands + clen, sizeof(cands) - clen, "%s%s%s", clen ? ", " : "",
                                 sid, pass ? " (damaged)" : "");
                clen = n < 0 ? clen : clen + (size_t)n;
                if (clen >= sizeof(cands) - 1) {
                    clen = sizeof(cands) - 1;
                    memcpy(cands + sizeof(cands) - 5, ", ..", 5); /* keeps the NUL */
                }
            }
        }
    }
    char et[300]; /* as typed, its control bytes escaped: it goes to a terminal */
    str_escape(text, strlen(text), et, sizeof(et));
    if (exact || (!dexact && nmatch == 1 && ndamaged == 0)) {
        snprintf(id, CARIS_ID_MAX, "%s", json_string_value(json_object_get(match, "id")));
        rc = 0;
    } else if (dexact || (nmatch == 0 && ndamaged == 1)) {
        repo_snapshot_damaged_id(damaged, dmatch, e); /* damaged, not absent (it names dmatch) */
        rc = -1;
    } else if (nmatch + ndamaged == 0) {
        rc = err_set(e, ERR_NOT_FOUND, "see `caris-backup list` for the backups there are",
                     "no backup %s in repository %s", et, repo_path(r));
    } else {
        rc = err_set(e, ERR_USAGE, NULL, "backup id prefix '%s' is ambiguous: %zu backups match",
                     et, nmatch + ndamaged);
        snprintf(e->hint, sizeof(e->hint), "give more of the id; candidates: %s", cands);
    }
    json_decref(list);
    json_decref(damaged);
    return rc;
}

/* ---- shared ---------------------------------------------------------------------------- */

void inspect_loaded_free(struct loaded *l)
{
    json_decref(l->summary);
    buf_free(&l->text);
    free(l->roots);
    memset(l, 0, sizeof(*l));
}

/* l->roots and l->nroots from l->summary's roots (borrowed); every root must be absolute. */
int inspect_loaded_roots(struct loaded *l, struct err *e)
{
    json_t *roots = json_object_get(l->summary, "roots");
    l->nroots = (int)json_array_size(roots);
    if (l->nroots == 0)
        return err_set(e, ERR_DAMAGE, NULL, "backup %s: manifest has no roots", l->id);
    l->roots = xcalloc((size_t)l->nroots, sizeof(char *));
    for (int i = 0; i < l->nroots; i++) {
        l->roots[i] = json_string_value(json_array_get(roots, (size_t)i));
        if (!l->roots[i] || l->roots[i][0] != '/')
            return err_set(e, ERR_DAMAGE, NULL, "backup %s: malformed root %d", l->id, i);
    }
    return 0;
}

/* Resolves and loads (entries only for file backups). kind: as for caris_backup_resolve;
 * with "files", a database backup is refused. */
int inspect_load(struct repo *r, const char *id_text, const char *kind, struct loaded *l,
                 struct err *e)
{
    memset(l, 0, sizeof(*l));
    if (caris_backup_resolve(r, id_text, kind, l->id, e) != 0)
        return -1;
    if (repo_snapshot_find(r, l->id, l->name, &l->summary, e) != 0)
        return -1;
    l->files = inspect_kind_is(l->summary, "files");
    if (kind && !inspect_kind_is(l->summary, kind)) {
        err_set(e, ERR_USAGE, NULL, "backup %s is not a %s backup", l->id,
                strcmp(kind, "files") == 0 ? "file" : "database");
        inspect_loaded_free(l);
        return -1;
    }
    if (!l->files)
        return 0;
    if (inspect_loaded_roots(l, e) != 0) {
        inspect_loaded_free(l);
        return -1;
    }
    if (repo_snapshot_load_entries_text(r, l->name, &l->text, e) != 0) {
        inspect_loaded_free(l);
        return -1;
    }
    return 0;
}

/* root + "/" + path ("." is the root itself); a root "/" gives "/" + path. */
char *inspect_join(const char *root, const char *path, size_t plen, size_t *out_len)
{
    size_t rl = strlen(root);
    while (rl > 1 && root[rl - 1] == '/')
        rl--;
    if (plen == 1 && path[0] == '.') {
        *out_len = rl;
        return xstrndup(root, rl);
    }
    bool slash = !(rl == 1 && root[0] == '/');
    char *p = xmalloc(xsize(rl, 1, plen + 2));
    memcpy(p, root, rl);
    size_t n = rl;
    if (slash)
        p[n++] = '/';
    memcpy(p + n, path, plen);
    n += plen;
    p[n] = '\0';
    *out_len = n;
    return p;
}

void inspect_dentry_clear(struct dentry *d)
{
    json_decref(d->ent);
    free(d->rel);
    free(d->full);
    fs_meta_free(&d->m);
    memset(d, 0, sizeof(*d));
}

/* 1 with *d filled (the caller clears it), 0 at the end, -1 on damage. */
int inspect_next_entry(struct loaded *l, struct entry_iter *it, struct dentry *d, struct err *e)
{
    memset(d, 0, sizeof(*d));
    int more = entry_iter_next(it, &d->ent, e);
    if (more <= 0)
        return more;
    if (manifest_entry_decode(d->ent, l->nroots, &d->root, &d->rel, &d->rel_len, &d->m, e) != 0) {
        json_decref(d->ent);
        d->ent = NULL;
        return err_wrap(e, "backup %s, entry %zu", l->id, it->index - 1);
    }
    d->full = inspect_join(l->roots[d->root], d->rel, d->rel_len, &d->full_len);
    if (d->m.type == FS_HARDLINK) { /* its first name, as a full path too */
        size_t n;
        char *first = inspect_join(l->roots[d->root], d->m.link, strlen(d->m.link), &n);
        free(d->m.link);
        d->m.link = first;
    }
    return 1;
}

/* The full path a hard link names (its first name): a copy. */
char *inspect_link_full(struct loaded *l, const struct dentry *d, size_t *len)
{
    (void)l;
    *len = strlen(d->m.link);
    return xstrdup(d->m.link);
}

/* Does the entry match what the operator typed? A full path (leading slashes optional) or a
 * path relative to the entry's root. Trailing slashes are ignored. */
bool inspect_path_matches(const struct dentry *d, const char *q, size_t ql)
{
    while (ql > 1 && q[ql - 1] == '/')
        ql--;
    const char *f = d->full;
    size_t fl = d->full_len;
    const char *qq = q;
    size_t qql = ql;
    while (qql && *qq == '/') {
        qq++;
        qql--;
    }
    while (fl && *f == '/') {
        f++;
        fl--;
    }
    if (fl == qql && memcmp(f, qq, fl) == 0)
        return true;
    if (q[0] == '/')
        return false;
    if (ql == 1 && q[0] == '.')
        return d->rel_len == 1 && d->rel[0] == '.';
    return d->rel_len == ql && memcmp(d->rel, q, ql) == 0;
}

/* Is full below anchor a; with direct, only one level down. */
bool inspect_below(const char *full, size_t fl, const char *a, size_t al, bool direct)
{
    bool root = al == 1 && a[0] == '/';
    size_t start = root ? 1 : al + 1;
    if (fl <= start || memcmp(full, a, al) != 0 || (!root && full[al] != '/'))
        return false;
    return !direct || memchr(full + start, '/', fl - start) == NULL;
}

/* The distinct full paths one typed path matched. */
struct candidates {
    char **p;
    size_t n, cap;
};

static void candidates_add(struct candidates *c, const char *full, size_t len)
{
    for (size_t k = 0; k < c->n; k++)
        if (strlen(c->p[k]) == len && memcmp(c->p[k], full, len) == 0)
            return;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 2;
        c->p = xrealloc(c->p, xsize(c->cap, sizeof(char *), 0));
    }
    c->p[c->n++] = xstrndup(full, len);
}

static void candidates_free(struct candidates *c)
{
    for (size_t k = 0; k < c->n; k++)
        free(c->p[k]);
    free(c->p);
}

static int ambiguous_path(const char *id, const char *q, const struct candidates *c, struct err *e)
{
    char list[900] = "", esc[300];
    size_t used = 0;
    for (size_t k = 0; k < c->n && used + 8 < sizeof(list); k++) {
        str_escape(c->p[k], strlen(c->p[k]), esc, sizeof(esc));
        int w = snprintf(list + used, sizeof(list) - used, "%s%s", k ? ", " : "", esc);
        used = w < 0 ? used : used + (size_t)w;
    }
    str_escape(q, strlen(q), esc, sizeof(esc));
    err_set(e, ERR_USAGE, NULL, "path %s is in %zu roots of backup %s: %s", esc, c->n, id, list);
    snprintf(e->hint, sizeof(e->hint),
             "give the full path of the one you mean (see `caris-backup ls %s`)", id);
    return -1;
}

int inspect_resolve_paths(struct loaded *l, const char *const *in, size_t n, char ***out,
                          struct err *e)
{
    *out = xcalloc(n ? n : 1, sizeof(char *));
    struct candidates *c = xcalloc(n ? n : 1, sizeof(*c));
    bool relative = false;
    for (size_t i = 0; i < n; i++)
        relative |= in[i][0] != '/';
    int rc = 0;
    if (relative) {
        struct entry_iter it;
        entry_iter_init(&it, &l->text);
        struct dentry d;
        int more;
        while ((more = inspect_next_entry(l, &it, &d, e)) == 1) {
            for (size_t i = 0; i < n; i++)
                if (in[i][0] != '/' && inspect_path_matches(&d, in[i], strlen(in[i])))
                    candidates_add(&c[i], d.full, d.full_len);
            inspect_dentry_clear(&d);
        }
        rc = more < 0 ? -1 : 0;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (c[i].n > 1)
            rc = ambiguous_path(l->id, in[i], &c[i], e);
        else
            (*out)[i] = xstrdup(c[i].n == 1 ? c[i].p[0] : in[i]);
    }
    for (size_t i = 0; i < n; i++) {
        candidates_free(&c[i]);
        if (rc != 0)
            free((*out)[i]);
    }
    free(c);
    if (rc != 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

static void ls_entry_take(struct caris_ls_entry *x, struct dentry *d)
{
    x->path = d->full;
    x->path_len = d->full_len;
    d->full = NULL;
    x->meta = d->m;
    memset(&d->m, 0, sizeof(d->m));
    const char *err = json_string_value(json_object_get(d->ent, "error"));
    x->error = err ? xstrdup(err) : NULL;
}

static void ls_entry_free(struct caris_ls_entry *x)
{
    free(x->path);
    fs_meta_free(&x->meta);
    free(x->error);
}

int inspect_pathref_cmp(const void *a, const void *b)
{
    const struct pathref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->path, y->path, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* First index in the sorted refs whose path equals p, or n. */
size_t inspect_pathref_find(const struct pathref *refs, size_t n, const char *p, size_t len)
{
    struct pathref key = {(char *)p, len, 0};
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (inspect_pathref_cmp(&refs[mid], &key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && inspect_pathref_cmp(&refs[lo], &key) == 0 ? lo : n;
}

/* Hard links in entries[from..n) get the size of their first name: one more pass. */
static int hardlink_sizes(struct loaded *l, struct caris_ls_entry *ents, size_t n, struct err *e)
{
    struct pathref *refs = NULL;
    size_t nrefs = 0;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].meta.type != FS_HARDLINK)
            continue;
        refs = xrealloc(refs, xsize(nrefs + 1, sizeof(*refs), 0));
        refs[nrefs].len = strlen(ents[i].meta.link);
        refs[nrefs].path = xstrndup(ents[i].meta.link, refs[nrefs].len);
        refs[nrefs].slot = i;
        nrefs++;
    }
    if (!nrefs)
        return 0;
    qsort(refs, nrefs, sizeof(*refs), inspect_pathref_cmp);
    struct entry_iter it;
    entry_iter_init(&it, &l->text);
    struct dentry d;
    int more;
    while ((more = inspect_next_entry(l, &it, &d, e)) == 1) {
        if (d.m.type == FS_REG)
            for (size_t k = inspect_pathref_find(refs, nrefs, d.full, d.full_len);
                 k < nrefs &&
                 inspect_pathref_cmp(&refs[k], &(struct pathref){d.full, d.full_len, 0}) == 0;
                 k++)
                ents[refs[k].slot].meta.size = d.m.size;
        inspect_dentry_clear(&d);
    }
    for (size_t i = 0; i < nrefs; i++)
        free(refs[i].path);
    free(refs);
    return more < 0 ? -1 : 0;
}

/* "2020-01-02T03:04:05.123456789Z". From the seconds, not through nanoseconds in an
 * int64_t: those end in 2262, and a file's mtime may lie beyond (touch -d 2300-01-01). */
static void mtime_iso(int64_t sec, int64_t nsec, char *out, size_t n)
{
    char base[40];
    struct tm tm;
    time_t s = (time_t)sec;
    if (!gmtime_r(&s, &tm) || strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        snprintf(base, sizeof(base), "@%lld", (long long)sec);
    snprintf(out, n, "%s.%09lldZ", base, (long long)nsec);
}

static json_t *ls_entry_to_json(const struct caris_ls_entry *x)
{
    json_t *o = json_object();
    manifest_set_bytes(o, "path", x->path, x->path_len);
    json_object_set_new(o, "type", json_string(manifest_type_name(x->meta.type)));
    json_object_set_new(o, "mode", json_integer(x->meta.mode));
    json_object_set_new(o, "uid", json_integer(x->meta.uid));
    json_object_set_new(o, "gid", json_integer(x->meta.gid));
    if (x->meta.user)
        manifest_set_bytes(o, "user", x->meta.user, strlen(x->meta.user));
    if (x->meta.group)
        manifest_set_bytes(o, "group", x->meta.group, strlen(x->meta.group));
    if (x->meta.type == FS_REG || x->meta.type == FS_HARDLINK)
        json_object_set_new(o, "size", json_integer((json_int_t)x->meta.size));
    char t[64];
    mtime_iso(x->meta.mtime_sec, x->meta.mtime_nsec, t, sizeof(t));
    json_object_set_new(o, "mtime", json_string(t));
    if (x->meta.link)
        manifest_set_bytes(o, "link", x->meta.link, strlen(x->meta.link));
    if (x->meta.nxattrs) {
        json_t *xa = json_array();
        for (size_t i = 0; i < x->meta.nxattrs; i++) {
            json_t *n = json_object();
            manifest_set_bytes(n, "name", x->meta.xattrs[i].name, strlen(x->meta.xattrs[i].name));
            json_array_append_new(xa, n);
        }
        json_object_set_new(o, "xattrs", xa);
    }
    if (x->error)
        json_object_set_new(o, "error", json_string(x->error));
    return o;
}

/* ---- show ---------------------------------------------------------------------------- */

static int cmp_oldest(const void *a, const void *b)
{
    return repo_record_cmp(*(json_t *const *)a, *(json_t *const *)b);
}

/* The records of kind about backup id, oldest first. */
static json_t *records_of(struct repo *r, const char *kind, const char *id, struct err *e)
{
    json_t *recs = repo_record_list(r, kind, NULL, e);
    if (!recs)
        return NULL;
    size_t n = 0, i;
    json_t *rec;
    json_t **v = xcalloc(json_array_size(recs) + 1, sizeof(json_t *));
    json_array_foreach(recs, i, rec)
    {
        const char *b = json_string_value(json_object_get(rec, "backupId"));
        if (b && strcmp(b, id) == 0)
            v[n++] = rec;
    }
    qsort(v, n, sizeof(json_t *), cmp_oldest);
    json_t *out = json_array();
    for (i = 0; i < n; i++)
        json_array_append(out, v[i]);
    free(v);
    json_decref(recs);
    return out;
}

void inspect_warnings_full_paths(json_t *summary)
{
    json_t *roots = json_object_get(summary, "roots");
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(summary, "warnings"), i, w)
    {
        const char *root = json_string_value(
            json_array_get(roots, (size_t)json_integer_value(json_object_get(w, "root"))));
        char *p;
        size_t pl, fl;
        if (!root || manifest_get_bytes(w, "path", &p, &pl) != 0)
            continue;
        char *full = inspect_join(root, p, pl, &fl);
        manifest_set_bytes(w, "fullPath", full, fl);
        free(full);
        free(p);
    }
}

static int show_locked(struct repo *r, const char *id_text, struct caris_show *s, struct err *e)
{
    char name[65];
    if (caris_backup_resolve(r, id_text, NULL, s->id, e) != 0 ||
        repo_snapshot_find(r, s->id, name, &s->summary, e) != 0)
        return -1;
    backup_summary_public(s->summary);
    inspect_warnings_full_paths(s->summary);
    s->testRestores = records_of(r, "test-restore", s->id, e);
    if (!s->testRestores)
        return -1;
    s->verifications = records_of(r, VERIFY_RECORD_KIND, s->id, e);
    if (!s->verifications)
        return -1;
    /* damage its latest verification or test restore found: "damaged", as list says (show
     * said "status ok" above the failed verification) */
    json_t *damage;
    if (caris_backup_known_damaged(
            json_array_get(s->verifications, json_array_size(s->verifications) - 1),
            json_array_get(s->testRestores, json_array_size(s->testRestores) - 1), &damage, NULL)) {
        json_object_set_new(s->summary, "status", json_string("damaged"));
        json_object_set(s->summary, "damage", damage ? damage : json_null());
    }
    return 0;
}

int caris_backup_show(struct repo *r, const char *id_text, struct caris_show *s, struct err *e)
{
    memset(s, 0, sizeof(*s));
    if (repo_lock(r, false, "show", e) != 0)
        return -1;
    int rc = show_locked(r, id_text, s, e);
    repo_unlock(r);
    if (rc != 0)
        caris_show_free(s);
    return rc;
}

json_t *caris_show_to_json(const struct caris_show *s)
{
    json_t *o = json_deep_copy(s->summary);
    json_object_set(o, "testRestores", s->testRestores);
    json_object_set(o, "verifications", s->verifications);
    return o;
}

void caris_show_free(struct caris_show *s)
{
    json_decref(s->summary);
    json_decref(s->testRestores);
    json_decref(s->verifications);
    memset(s, 0, sizeof(*s));
}

/* ---- ls ------------------------------------------------------------------------------ */

struct anchors {
    char **p;
    size_t *len;
    size_t n;
};

static void anchors_add(struct anchors *a, const char *p, size_t len)
{
    a->p = xrealloc(a->p, xsize(a->n + 1, sizeof(char *), 0));
    a->len = xrealloc(a->len, xsize(a->n + 1, sizeof(size_t), 0));
    a->p[a->n] = xstrndup(p, len);
    a->len[a->n++] = len;
}

static void anchors_free(struct anchors *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->p[i]);
    free(a->p);
    free(a->len);
}

static void ls_push(struct caris_ls_result *res, size_t *cap, struct dentry *d)
{
    if (res->nentries == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        res->entries = xrealloc(res->entries, xsize(*cap, sizeof(*res->entries), 0));
    }
    ls_entry_take(&res->entries[res->nentries++], d);
}

static int ls_files(struct loaded *l, const struct caris_ls_opts *o, struct caris_ls_result *res,
                    struct err *e)
{
    struct anchors a = {0};
    size_t cap = 0;
    size_t ql = o->path ? strlen(o->path) : 0;
    struct entry_iter it;
    entry_iter_init(&it, &l->text);
    struct dentry d;
    int more;
    bool found = false;
    while ((more = inspect_next_entry(l, &it, &d, e)) == 1) {
        bool anchor =
            o->path ? inspect_path_matches(&d, o->path, ql) : (d.rel_len == 1 && d.rel[0] == '.');
        bool take = anchor;
        if (anchor) {
            found = true;
            if (d.m.type == FS_DIR)
                anchors_add(&a, d.full, d.full_len);
        } else {
            for (size_t k = 0; k < a.n && !take; k++)
                take = inspect_below(d.full, d.full_len, a.p[k], a.len[k], !o->recursive);
        }
        if (take)
            ls_push(res, &cap, &d);
        inspect_dentry_clear(&d);
    }
    anchors_free(&a);
    int rc = more < 0 ? -1 : 0;
    if (rc == 0 && !found && o->path) {
        char esc[600];
        str_escape(o->path, ql, esc, sizeof(esc));
        rc = err_set(e, ERR_NOT_FOUND, NULL, "no path %s in backup %s", esc, l->id);
        snprintf(e->hint, sizeof(e->hint),
                 "give the path as `caris-backup ls %s` shows it, or relative to a root (a "
                 "byte ls shows as \\xNN is that byte: in bash, $'\\xNN')",
                 l->id);
    }
    if (rc == 0)
        rc = hardlink_sizes(l, res->entries, res->nentries, e);
    return rc;
}

static int ls_database(struct repo *r, struct loaded *l, struct caris_ls_result *res, struct err *e)
{
    json_t *summary = NULL, *entries = NULL;
    if (repo_snapshot_load(r, l->name, &summary, &entries, e) != 0)
        return -1;
    res->streams = json_array();
    size_t i;
    json_t *ent;
    json_array_foreach(entries, i, ent)
    {
        json_array_append_new(res->streams, json_pack("{s:O?, s:O?, s:O?, s:O?}", "name",
                                                      json_object_get(ent, "name"), "type",
                                                      json_object_get(ent, "type"), "size",
                                                      json_object_get(ent, "size"), "sha256",
                                                      json_object_get(ent, "sha256")));
    }
    json_t *tables = json_object_get(l->summary, "tables");
    res->tables = json_is_array(tables) ? json_deep_copy(tables) : NULL; /* older backups */
    json_decref(summary);
    json_decref(entries);
    return 0;
}

static int ls_locked(struct repo *r, const char *id_text, const struct caris_ls_opts *o,
                     struct caris_ls_result *res, struct err *e)
{
    struct loaded l;
    if (inspect_load(r, id_text, NULL, &l, e) != 0)
        return -1;
    snprintf(res->id, sizeof(res->id), "%s", l.id);
    snprintf(res->kind, sizeof(res->kind), "%s", l.files ? "files" : "database");
    int rc;
    if (l.files)
        rc = ls_files(&l, o, res, e);
    else if (o->path)
        rc = err_set(e, ERR_USAGE, "`caris-backup ls ID` lists what a database backup holds",
                     "backup %s is a database backup: it has no paths", l.id);
    else
        rc = ls_database(r, &l, res, e);
    inspect_loaded_free(&l);
    return rc;
}

int caris_backup_ls(struct repo *r, const char *id_text, const struct caris_ls_opts *o,
                    struct caris_ls_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    if (repo_lock(r, false, "ls", e) != 0)
        return -1;
    int rc = ls_locked(r, id_text, o, res, e);
    repo_unlock(r);
    if (rc != 0)
        caris_ls_result_free(res);
    return rc;
}

json_t *caris_ls_to_json(const struct caris_ls_result *res)
{
    json_t *o = json_pack("{s:s, s:s}", "backupId", res->id, "kind", res->kind);
    if (strcmp(res->kind, "files") == 0) {
        json_t *arr = json_array();
        for (size_t i = 0; i < res->nentries; i++)
            json_array_append_new(arr, ls_entry_to_json(&res->entries[i]));
        json_object_set_new(o, "entries", arr);
    } else {
        json_object_set(o, "streams", res->streams);
        json_object_set_new(o, "tables", res->tables ? json_incref(res->tables) : json_null());
    }
    return o;
}

void caris_ls_result_free(struct caris_ls_result *res)
{
    for (size_t i = 0; i < res->nentries; i++)
        ls_entry_free(&res->entries[i]);
    free(res->entries);
    json_decref(res->streams);
    json_decref(res->tables);
    memset(res, 0, sizeof(*res));
}

/* ---- find ---------------------------------------------------------------------------- */

static bool find_matches(const char *pat, const struct dentry *d)
{
    if (strchr(pat, '/')) {
        if (fnmatch(pat, d->full, 0) == 0)
            return true;
        return pat[0] != '/' && fnmatch(pat, d->rel, 0) == 0;
    }
    const char *base = d->full + d->full_len;
    while (base > d->full && base[-1] != '/')
        base--;
    return fnmatch(pat, base, 0) == 0;
}

static int find_in(struct loaded *l, const struct caris_find_opts *o, struct caris_find_result *res,
                   size_t *cap, struct err *e)
{
    size_t first = res->nmatches;
    struct entry_iter it;
    entry_iter_init(&it, &l->text);
    struct dentry d;
    int more;
    while ((more = inspect_next_entry(l, &it, &d, e)) == 1) {
        if (find_matches(o->pattern, &d)) {
            if (res->nmatches == *cap) {
                *cap = *cap ? *cap * 2 : 64;
                res->matches = xrealloc(res->matches, xsize(*cap, sizeof(*res->matches), 0));
            }
            struct caris_find_match *m = &res->matches[res->nmatches++];
            m->backup = res->nbackups - 1;
            ls_entry_take(&m->entry, &d);
        }
        inspect_dentry_clear(&d);
    }
    if (more == 0 && res->nmatches > first) {
        /* the entries of this backup's matches, contiguous, for hardlink_sizes */
        size_t n = res->nmatches - first;
        struct caris_ls_entry *tmp = xcalloc(n, sizeof(*tmp));
        for (size_t i = 0; i < n; i++)
            tmp[i] = res->matches[first + i].entry;
        more = hardlink_sizes(l, tmp, n, e);
        for (size_t i = 0; i < n; i++)
            res->matches[first + i].entry = tmp[i];
        free(tmp);
    }
    return more < 0 ? -1 : 0;
}

static int find_locked(struct repo *r, const struct caris_find_opts *o,
                       struct caris_find_result *res, struct err *e)
{
    json_t *damaged = NULL;
    json_t *list = caris_backup_list_damaged(r, "files", &damaged, e);
    if (!list)
        return -1;
    size_t i, cap = 0;
    json_t *s;
    int rc = 0;
    /* a snapshot that cannot be read may be a file backup's: said, never passed over */
    json_array_foreach(damaged, i, s)
    {
        res->unsearched =
            xrealloc(res->unsearched, xsize(res->nunsearched + 1, sizeof(*res->unsearched), 0));
        struct caris_find_unsearched *u = &res->unsearched[res->nunsearched++];
        u->id = jsonx_strdup_member(s, "id");
        u->file = jsonx_strdup_member(s, "object");
        u->error = jsonx_strdup_member(s, "error");
    }
    json_decref(damaged);
    json_array_foreach(list, i, s)
    {
        const char *started = json_string_value(json_object_get(s, "started"));
        const char *id = json_string_value(json_object_get(s, "id"));
        int64_t t;
        if (!started || !id || time_parse_iso(started, &t) != 0)
            continue;
        /* --until names a whole second (as find and list show start times): a backup
         * started at 03:00:00.412 is in "--until 03:00:00" */
        if ((o->since_ns && t < o->since_ns) ||
            (o->until_ns && t > o->until_ns && (uint64_t)t - (uint64_t)o->until_ns >= 1000000000u))
            continue;
        if (caris_op_cancelled(o->op)) {
            rc = err_set(e, ERR_FAILURE, NULL, "cancelled");
            break;
        }
        caris_op_progress(o->op, "find", i, json_array_size(list));
        struct loaded l;
        if (inspect_load(r, id, "files", &l, e) != 0) {
            rc = -1;
            break;
        }
        res->backups = xrealloc(res->backups, xsize(res->nbackups + 1, sizeof(*res->backups), 0));
        struct caris_find_backup *b = &res->backups[res->nbackups++];
        snprintf(b->id, sizeof(b->id), "%s", id);
        snprintf(b->started, sizeof(b->started), "%s", started);
        rc = find_in(&l, o, res, &cap, e);
        inspect_loaded_free(&l);
        if (rc != 0)
            break;
    }
    json_decref(list);
    return rc;
}

int caris_backup_find(struct repo *r, const struct caris_find_opts *o,
                      struct caris_find_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    if (!o->pattern || !*o->pattern)
        return err_set(e, ERR_USAGE, "give a pattern such as '*.csv' or 'docs/*'",
                       "find needs a pattern");
    if (o->since_ns && o->until_ns && o->since_ns > o->until_ns)
        return err_set(e, ERR_USAGE, "--since must not be later than --until", "empty time range");
    if (repo_lock(r, false, "find", e) != 0)
        return -1;
    int rc = find_locked(r, o, res, e);
    repo_unlock(r);
    if (rc != 0) {
        caris_find_result_free(res);
        return -1;
    }
    return res->nunsearched ? CARIS_DONE_WARNINGS : CARIS_DONE;
}

json_t *caris_find_to_json(const struct caris_find_result *res, const char *pattern)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < res->nmatches; i++) {
        const struct caris_find_match *m = &res->matches[i];
        json_t *o = ls_entry_to_json(&m->entry);
        json_object_set_new(o, "backupId", json_string(res->backups[m->backup].id));
        json_object_set_new(o, "started", json_string(res->backups[m->backup].started));
        json_array_append_new(arr, o);
    }
    json_t *skipped = json_array();
    for (size_t i = 0; i < res->nunsearched; i++) {
        const struct caris_find_unsearched *u = &res->unsearched[i];
        json_array_append_new(skipped,
                              json_pack("{s:o, s:s, s:s}", "backupId",
                                        u->id ? json_string(u->id) : json_null(), "file",
                                        u->file ? u->file : "", "error", u->error ? u->error : ""));
    }
    return json_pack("{s:o, s:I, s:o, s:o}", "pattern", jsonx_text(pattern), "backupsSearched",
                     (json_int_t)res->nbackups, "matches", arr, "notSearched", skipped);
}

void caris_find_result_free(struct caris_find_result *res)
{
    for (size_t i = 0; i < res->nmatches; i++)
        ls_entry_free(&res->matches[i].entry);
    free(res->matches);
    free(res->backups);
    for (size_t i = 0; i < res->nunsearched; i++) {
        free(res->unsearched[i].id);
        free(res->unsearched[i].file);
        free(res->unsearched[i].error);
    }
    free(res->unsearched);
    memset(res, 0, sizeof(*res));
}

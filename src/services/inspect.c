/* Seeing inside backups: id resolution, show, ls, dump, diff, find (see caris/inspect.h).
 * Entries are read one at a time from the manifest's text (entry_iter) and decoded by
 * manifest_entry_decode; file content comes through the pipeline's fetch queue, every chunk
 * authenticated and its id recomputed before its bytes leave. */
#include "caris/inspect.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "caris/backup.h"
#include "caris/crypto.h"
#include "caris/pipeline.h"
#include "caris/pool.h"
#include "caris/stream.h"
#include "common.h"
#include "manifest.h"
#include "tarw.h"

#define DUMP_MAX_INFLIGHT_BYTES (64u << 20)
#define DUMP_MAX_INFLIGHT_JOBS 4096
#define VERIFY_RECORD_KIND "verify" /* records of verify/check results, when they are kept */

int caris_json_bytes(json_t *obj, const char *field, char **out, size_t *len)
{
    return manifest_get_bytes(obj, field, out, len);
}

/* ---- ids ----------------------------------------------------------------------------- */

static bool kind_is(json_t *s, const char *kind)
{
    const char *k = json_string_value(json_object_get(s, "kind"));
    return k && strcmp(k, kind) == 0;
}

static int resolve_latest(struct repo *r, json_t *list, const char *want, char *id, struct err *e)
{
    json_t *pick = NULL;
    bool files = false, db = false;
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        files |= kind_is(s, "files");
        db |= kind_is(s, "database");
        if (!want || kind_is(s, want))
            pick = s; /* the list is oldest first */
    }
    if (!want && files && db)
        return err_set(e, ERR_USAGE,
                       "say `latest:files` or `latest:database` (or give an id or a prefix)",
                       "'latest' is ambiguous: the repository has file and database backups");
    if (!pick)
        return err_set(
            e, ERR_NOT_FOUND,
            want && strcmp(want, "database") == 0 ? "make one with `caris-backup backup database`"
                                                  : "make one with `caris-backup backup files`",
            "no %sbackup in repository %s",
            want ? (strcmp(want, "files") == 0 ? "file " : "database ") : "", repo_path(r));
    snprintf(id, CARIS_ID_MAX, "%s", json_string_value(json_object_get(pick, "id")));
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
    json_t *list = repo_snapshot_list(r, NULL, e);
    if (!list)
        return -1;
    int rc;
    if (latest) {
        rc = resolve_latest(r, list, want, id, e);
        json_decref(list);
        return rc;
    }
    size_t tl = strlen(text), nmatch = 0, i;
    json_t *s, *match = NULL;
    char cands[400] = "";
    size_t clen = 0;
    json_array_foreach(list, i, s)
    {
        const char *sid = json_string_value(json_object_get(s, "id"));
        if (!sid)
            continue;
        if (strcmp(sid, text) == 0) { /* an exact id wins over the longer ids it starts */
            match = s;
            nmatch = 1;
            break;
        }
        if (strncmp(sid, text, tl) == 0) {
            match = s;
            nmatch++;
            if (clen < sizeof(cands) - 1) {
                int n = snprintf(cands + clen, sizeof(cands) - clen, "%s%s", clen ? ", " : "", sid);
                clen = n < 0 ? clen : clen + (size_t)n;
                if (clen >= sizeof(cands) - 1) {
                    clen = sizeof(cands) - 1;
                    memcpy(cands + sizeof(cands) - 5, ", ..", 5); /* keeps the NUL */
                }
            }
        }
    }
    if (nmatch == 1) {
        snprintf(id, CARIS_ID_MAX, "%s", json_string_value(json_object_get(match, "id")));
        rc = 0;
    } else if (nmatch == 0) {
        rc = err_set(e, ERR_NOT_FOUND, "see `caris-backup list` for the backups there are",
                     "no backup %s in repository %s", text, repo_path(r));
    } else {
        rc = err_set(e, ERR_USAGE, NULL, "backup id prefix '%s' is ambiguous: %zu backups match",
                     text, nmatch);
        snprintf(e->hint, sizeof(e->hint), "give more of the id; candidates: %s", cands);
    }
    json_decref(list);
    return rc;
}

/* ---- shared ---------------------------------------------------------------------------- */

/* A backup being read: its summary and, for a file backup, its entries' text and roots. */
struct loaded {
    char id[CARIS_ID_MAX];
    char name[65];
    json_t *summary;
    bool files;
    struct buf text;
    const char **roots; /* borrowed from summary */
    int nroots;
};

static void loaded_free(struct loaded *l)
{
    json_decref(l->summary);
    buf_free(&l->text);
    free(l->roots);
    memset(l, 0, sizeof(*l));
}

/* Resolves and loads (entries only for file backups). kind: as for caris_backup_resolve;
 * with "files", a database backup is refused. */
static int load(struct repo *r, const char *id_text, const char *kind, struct loaded *l,
                struct err *e)
{
    memset(l, 0, sizeof(*l));
    if (caris_backup_resolve(r, id_text, kind, l->id, e) != 0)
        return -1;
    if (repo_snapshot_find(r, l->id, l->name, &l->summary, e) != 0)
        return -1;
    l->files = kind_is(l->summary, "files");
    if (kind && !kind_is(l->summary, kind)) {
        err_set(e, ERR_USAGE, NULL, "backup %s is not a %s backup", l->id,
                strcmp(kind, "files") == 0 ? "file" : "database");
        loaded_free(l);
        return -1;
    }
    if (!l->files)
        return 0;
    json_t *roots = json_object_get(l->summary, "roots");
    l->nroots = (int)json_array_size(roots);
    if (l->nroots == 0) {
        loaded_free(l);
        return err_set(e, ERR_DAMAGE, NULL, "backup %s: manifest has no roots", id_text);
    }
    l->roots = xcalloc((size_t)l->nroots, sizeof(char *));
    for (int i = 0; i < l->nroots; i++) {
        l->roots[i] = json_string_value(json_array_get(roots, (size_t)i));
        if (!l->roots[i] || l->roots[i][0] != '/') {
            loaded_free(l);
            return err_set(e, ERR_DAMAGE, NULL, "backup %s: malformed root %d", id_text, i);
        }
    }
    if (repo_snapshot_load_entries_text(r, l->name, &l->text, e) != 0) {
        loaded_free(l);
        return -1;
    }
    return 0;
}

/* root + "/" + path ("." is the root itself); a root "/" gives "/" + path. */
static char *join(const char *root, const char *path, size_t plen, size_t *out_len)
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

/* One decoded entry of a file backup. */
struct dentry {
    json_t *ent; /* owned */
    int root;
    char *rel; /* path below the root */
    size_t rel_len;
    char *full;
    size_t full_len;
    struct fs_meta m;
};

static void dentry_clear(struct dentry *d)
{
    json_decref(d->ent);
    free(d->rel);
    free(d->full);
    fs_meta_free(&d->m);
    memset(d, 0, sizeof(*d));
}

/* 1 with *d filled (the caller clears it), 0 at the end, -1 on damage. */
static int next_entry(struct loaded *l, struct entry_iter *it, struct dentry *d, struct err *e)
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
    d->full = join(l->roots[d->root], d->rel, d->rel_len, &d->full_len);
    if (d->m.type == FS_HARDLINK) { /* its first name, as a full path too */
        size_t n;
        char *first = join(l->roots[d->root], d->m.link, strlen(d->m.link), &n);
        free(d->m.link);
        d->m.link = first;
    }
    return 1;
}

/* The full path a hard link names (its first name): a copy. */
static char *link_full(struct loaded *l, const struct dentry *d, size_t *len)
{
    (void)l;
    *len = strlen(d->m.link);
    return xstrdup(d->m.link);
}

/* Does the entry match what the operator typed? A full path (leading slashes optional) or a
 * path relative to the entry's root. Trailing slashes are ignored. */
static bool path_matches(const struct dentry *d, const char *q, size_t ql)
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
static bool below(const char *full, size_t fl, const char *a, size_t al, bool direct)
{
    bool root = al == 1 && a[0] == '/';
    size_t start = root ? 1 : al + 1;
    if (fl <= start || memcmp(full, a, al) != 0 || (!root && full[al] != '/'))
        return false;
    return !direct || memchr(full + start, '/', fl - start) == NULL;
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

/* A sorted set of paths, for hard links: the first names that are needed later. */
struct pathref {
    char *path;
    size_t len;
    size_t slot; /* the caller's index */
};

static int pathref_cmp(const void *a, const void *b)
{
    const struct pathref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->path, y->path, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* First index in the sorted refs whose path equals p, or n. */
static size_t pathref_find(const struct pathref *refs, size_t n, const char *p, size_t len)
{
    struct pathref key = {(char *)p, len, 0};
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pathref_cmp(&refs[mid], &key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && pathref_cmp(&refs[lo], &key) == 0 ? lo : n;
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
    qsort(refs, nrefs, sizeof(*refs), pathref_cmp);
    struct entry_iter it;
    entry_iter_init(&it, &l->text);
    struct dentry d;
    int more;
    while ((more = next_entry(l, &it, &d, e)) == 1) {
        if (d.m.type == FS_REG)
            for (size_t k = pathref_find(refs, nrefs, d.full, d.full_len);
                 k < nrefs && pathref_cmp(&refs[k], &(struct pathref){d.full, d.full_len, 0}) == 0;
                 k++)
                ents[refs[k].slot].meta.size = d.m.size;
        dentry_clear(&d);
    }
    for (size_t i = 0; i < nrefs; i++)
        free(refs[i].path);
    free(refs);
    return more < 0 ? -1 : 0;
}

/* "2020-01-02T03:04:05.123456789Z" */
static void mtime_iso(int64_t sec, int64_t nsec, char *out, size_t n)
{
    char base[40];
    time_format_iso(sec * 1000000000, base, sizeof(base));
    snprintf(out, n, "%.19s.%09lldZ", base, (long long)nsec);
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

static int cmp_time(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "time")) ?: "";
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "time")) ?: "";
    return strcmp(x, y);
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
    qsort(v, n, sizeof(json_t *), cmp_time);
    json_t *out = json_array();
    for (i = 0; i < n; i++)
        json_array_append(out, v[i]);
    free(v);
    json_decref(recs);
    return out;
}

static int show_locked(struct repo *r, const char *id_text, struct caris_show *s, struct err *e)
{
    char name[65];
    if (caris_backup_resolve(r, id_text, NULL, s->id, e) != 0 ||
        repo_snapshot_find(r, s->id, name, &s->summary, e) != 0)
        return -1;
    json_object_del(s->summary, "_file");
    /* each warning with its full path ("fullPath", or "fullPath_b64" when not UTF-8) */
    json_t *roots = json_object_get(s->summary, "roots");
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(s->summary, "warnings"), i, w)
    {
        const char *root = json_string_value(
            json_array_get(roots, (size_t)json_integer_value(json_object_get(w, "root"))));
        char *p;
        size_t pl, fl;
        if (!root || manifest_get_bytes(w, "path", &p, &pl) != 0)
            continue;
        char *full = join(root, p, pl, &fl);
        manifest_set_bytes(w, "fullPath", full, fl);
        free(full);
        free(p);
    }
    s->testRestores = records_of(r, "test-restore", s->id, e);
    if (!s->testRestores)
        return -1;
    s->verifications = records_of(r, VERIFY_RECORD_KIND, s->id, e);
    return s->verifications ? 0 : -1;
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
    while ((more = next_entry(l, &it, &d, e)) == 1) {
        bool anchor = o->path ? path_matches(&d, o->path, ql) : (d.rel_len == 1 && d.rel[0] == '.');
        bool take = anchor;
        if (anchor) {
            found = true;
            if (d.m.type == FS_DIR)
                anchors_add(&a, d.full, d.full_len);
        } else {
            for (size_t k = 0; k < a.n && !take; k++)
                take = below(d.full, d.full_len, a.p[k], a.len[k], !o->recursive);
        }
        if (take)
            ls_push(res, &cap, &d);
        dentry_clear(&d);
    }
    anchors_free(&a);
    int rc = more < 0 ? -1 : 0;
    if (rc == 0 && !found && o->path) {
        char esc[600];
        str_escape(o->path, ql, esc, sizeof(esc));
        rc = err_set(e, ERR_NOT_FOUND, NULL, "no path %s in backup %s", esc, l->id);
        snprintf(e->hint, sizeof(e->hint),
                 "give the path as `caris-backup ls %s` shows it, or relative to a root", l->id);
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
    res->tables = json_is_array(tables) ? json_deep_copy(tables) : json_array();
    json_decref(summary);
    json_decref(entries);
    return 0;
}

static int ls_locked(struct repo *r, const char *id_text, const struct caris_ls_opts *o,
                     struct caris_ls_result *res, struct err *e)
{
    struct loaded l;
    if (load(r, id_text, NULL, &l, e) != 0)
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
    loaded_free(&l);
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
        json_object_set(o, "tables", res->tables);
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

/* ---- dump ---------------------------------------------------------------------------- */

struct dumper {
    struct repo *r;
    struct pool *pool;
    struct tarw t;
    const struct caris_op *op;
    struct buf data;
    uint64_t bytes;
};

static int write_zeros(struct dumper *dp, uint64_t n, struct err *e)
{
    static const uint8_t z[65536];
    while (n) {
        size_t k = n > sizeof(z) ? sizeof(z) : (size_t)n;
        if (tarw_data(&dp->t, z, k, e) != 0)
            return -1;
        n -= k;
    }
    return 0;
}

/* Writes a file entry's content (holes as zeros): every chunk loaded with its id checked
 * before it is written, the whole file's SHA-256 compared at the end. */
static int dump_content(struct dumper *dp, json_t *ent, const struct fs_meta *m, const char *full,
                        struct err *e)
{
    uint8_t sha[32];
    uint8_t(*ids)[32] = NULL;
    uint32_t *lens = NULL;
    uint64_t *offs = NULL;
    size_t n = 0;
    char esc[300];
    str_escape(full, strlen(full), esc, sizeof(esc));
    const char *sha_hex = json_string_value(json_object_get(ent, "sha256"));
    if (!sha_hex || cx_unhex(sha_hex, sha, 32) != 0 ||
        chunklist_decode(json_object_get(ent, "chunks"), &ids, &lens, &n) != 0 ||
        !(offs = xcalloc(n ? n : 1, sizeof(uint64_t))) ||
        manifest_chunk_offsets(ent, lens, n, m->size, offs) != 0) {
        free(ids);
        free(lens);
        free(offs);
        return err_set(e, ERR_DAMAGE, NULL,
                       "%s: malformed manifest entry (chunks, extents or sha256)", esc);
    }
    struct cx_sha256 *h = cx_sha256_new();
    struct fetchq *q =
        fetchq_new(dp->r, dp->pool, 0, DUMP_MAX_INFLIGHT_JOBS, DUMP_MAX_INFLIGHT_BYTES);
    uint64_t pos = 0;
    size_t next = 0, done = 0;
    int rc = 0;
    while (rc == 0 && done < n) {
        while (next < n && fetchq_room(q, lens[next])) {
            fetchq_submit(q, ids[next], lens[next], NULL);
            next++;
        }
        void *tag;
        if (fetchq_next(q, &tag, &dp->data, e) != 0) {
            err_wrap(e, "%s", esc);
            rc = -1;
            break;
        }
        if (dp->data.len != lens[done]) {
            rc = err_set(e, ERR_DAMAGE, NULL, "%s: chunk %zu has %zu bytes, the manifest says %u",
                         esc, done, dp->data.len, lens[done]);
            break;
        }
        uint64_t off = offs[done++];
        if (off > pos) {
            sha256_zeros(h, off - pos);
            rc = write_zeros(dp, off - pos, e);
        }
        cx_sha256_update(h, dp->data.data, dp->data.len);
        if (rc == 0)
            rc = tarw_data(&dp->t, dp->data.data, dp->data.len, e);
        pos = off + dp->data.len;
        if (rc == 0 && caris_op_cancelled(dp->op))
            rc = err_set(e, ERR_FAILURE, NULL, "cancelled");
    }
    if (rc == 0 && m->size > pos) {
        sha256_zeros(h, m->size - pos);
        rc = write_zeros(dp, m->size - pos, e);
    }
    if (rc == 0) {
        uint8_t sum[32];
        cx_sha256_final(h, sum);
        if (memcmp(sum, sha, 32) != 0)
            rc = err_set(e, ERR_DAMAGE,
                         "the backup is corrupted: do not use this output; run `caris-backup "
                         "check --read-data`",
                         "%s: checksum mismatch: the content does not match the SHA-256 recorded "
                         "at backup time",
                         esc);
    }
    if (rc == 0)
        dp->bytes += m->size;
    fetchq_free(q);
    cx_sha256_free(h);
    free(ids);
    free(lens);
    free(offs);
    return rc;
}

static char tar_type(enum fs_type t)
{
    switch (t) {
    case FS_REG:
        return '0';
    case FS_HARDLINK:
        return '1';
    case FS_SYMLINK:
        return '2';
    case FS_DIR:
        return '5';
    case FS_FIFO:
        return '6';
    }
    return '0';
}

/* The member name of full (below the anchor a, or a itself): the anchor's last component,
 * then the rest; for an anchor "/", the rest alone ("./" for "/" itself). */
static char *member_name(const char *a, size_t al, const char *full, size_t fl, bool dir,
                         size_t *len)
{
    struct buf b = {0};
    if (al == 1 && a[0] == '/') {
        if (fl == 1)
            buf_append(&b, ".", 1);
        else
            buf_append(&b, full + 1, fl - 1);
    } else {
        const char *base = a + al;
        while (base > a && base[-1] != '/')
            base--;
        buf_append(&b, base, (size_t)(a + al - base));
        buf_append(&b, full + al, fl - al);
    }
    if (dir)
        buf_append_u8(&b, '/');
    buf_append_u8(&b, '\0');
    *len = b.len - 1;
    return (char *)b.data;
}

static void warn_unreadable(struct caris_dump_result *res, const struct dentry *d, const char *msg)
{
    json_t *w = json_object();
    manifest_set_bytes(w, "path", d->full, d->full_len);
    char m[600];
    snprintf(m, sizeof(m), "left out: the file could not be read at backup time (%s)", msg);
    json_object_set_new(w, "message", json_string(m));
    json_array_append_new(res->warnings, w);
}

static int tar_member(struct dumper *dp, const struct dentry *d, const char *name, size_t nlen,
                      char type, const char *link, json_t *content_ent,
                      const struct fs_meta *content_meta, struct err *e)
{
    struct tarw_hdr h = {.name = name,
                         .name_len = nlen,
                         .type = type,
                         .mode = d->m.mode,
                         .uid = d->m.uid,
                         .gid = d->m.gid,
                         .uname = d->m.user,
                         .gname = d->m.group,
                         .size = type == '0' ? content_meta->size : 0,
                         .mtime_sec = d->m.mtime_sec,
                         .mtime_nsec = d->m.mtime_nsec,
                         .link = link,
                         .xattrs = d->m.xattrs,
                         .nxattrs = d->m.nxattrs};
    if (tarw_header(&dp->t, &h, e) != 0)
        return -1;
    if (type != '0')
        return 0;
    if (dump_content(dp, content_ent, content_meta, d->full, e) != 0)
        return -1;
    return tarw_end_member(&dp->t, content_meta->size, e);
}

/* A hard link whose first name is outside the directory dumped: a file member with the
 * content of the first name's entry. */
static int tar_hardlink_content(struct dumper *dp, struct loaded *l, const struct dentry *d,
                                const char *name, size_t nlen, json_t *first, struct err *e)
{
    int root;
    char *p;
    size_t pl;
    struct fs_meta m;
    if (manifest_entry_decode(first, l->nroots, &root, &p, &pl, &m, e) != 0)
        return err_wrap(e, "backup %s", l->id);
    free(p);
    int rc = tar_member(dp, d, name, nlen, '0', NULL, first, &m, e);
    fs_meta_free(&m);
    return rc;
}

/* A directory as a tar stream. Hard links whose first name is inside the directory stay hard
 * links; those whose first name is outside get that file's content (found in a first pass). */
static int dump_tar(struct dumper *dp, struct loaded *l, const char *a, size_t al,
                    struct caris_dump_result *res, struct err *e)
{
    struct pathref *refs = NULL;
    json_t **ref_ents = NULL; /* by refs' order: the first names' entries */
    size_t nrefs = 0;
    struct entry_iter it;
    struct dentry d;
    int more;
    entry_iter_init(&it, &l->text);
    while ((more = next_entry(l, &it, &d, e)) == 1) {
        if (d.m.type == FS_HARDLINK && below(d.full, d.full_len, a, al, false)) {
            size_t tl;
            char *t = link_full(l, &d, &tl);
            if (!below(t, tl, a, al, false)) {
                refs = xrealloc(refs, xsize(nrefs + 1, sizeof(*refs), 0));
                refs[nrefs] = (struct pathref){t, tl, nrefs};
                nrefs++;
            } else {
                free(t);
            }
        }
        dentry_clear(&d);
    }
    if (more < 0)
        goto out;
    if (nrefs)
        qsort(refs, nrefs, sizeof(*refs), pathref_cmp);
    ref_ents = xcalloc(nrefs + 1, sizeof(json_t *));
    entry_iter_init(&it, &l->text);
    while ((more = next_entry(l, &it, &d, e)) == 1) {
        int rc = 0;
        if (d.m.type == FS_REG && nrefs) {
            size_t k = pathref_find(refs, nrefs, d.full, d.full_len);
            if (k < nrefs && !ref_ents[k])
                ref_ents[k] = json_incref(d.ent);
        }
        bool is_anchor = d.full_len == al && memcmp(d.full, a, al) == 0;
        if (!is_anchor && !below(d.full, d.full_len, a, al, false)) {
            dentry_clear(&d);
            continue;
        }
        size_t nlen;
        char *name = member_name(a, al, d.full, d.full_len, d.m.type == FS_DIR, &nlen);
        const char *err_msg = json_string_value(json_object_get(d.ent, "error"));
        if (d.m.type == FS_REG && err_msg) {
            warn_unreadable(res, &d, err_msg);
        } else if (d.m.type == FS_HARDLINK) {
            size_t tl;
            char *t = link_full(l, &d, &tl);
            if (below(t, tl, a, al, false)) {
                size_t ln;
                char *lname = member_name(a, al, t, tl, false, &ln);
                rc = tar_member(dp, &d, name, nlen, '1', lname, NULL, NULL, e);
                free(lname);
            } else {
                size_t k = pathref_find(refs, nrefs, t, tl);
                if (k == nrefs || !ref_ents[k])
                    rc = err_set(e, ERR_DAMAGE, NULL,
                                 "backup %s: hard link %s names a file the backup does not hold",
                                 l->id, name);
                else if (json_object_get(ref_ents[k], "error"))
                    warn_unreadable(res, &d,
                                    json_string_value(json_object_get(ref_ents[k], "error")));
                else
                    rc = tar_hardlink_content(dp, l, &d, name, nlen, ref_ents[k], e);
            }
            free(t);
        } else {
            rc = tar_member(dp, &d, name, nlen, tar_type(d.m.type), d.m.link, d.ent, &d.m, e);
        }
        if (rc == 0)
            res->members++;
        free(name);
        dentry_clear(&d);
        if (rc == 0 && caris_op_cancelled(dp->op))
            rc = err_set(e, ERR_FAILURE, NULL, "cancelled");
        if (rc != 0) {
            more = -1;
            break;
        }
    }
    if (more == 0)
        more = tarw_finish(&dp->t, e) == 0 ? 0 : -1;
out:
    for (size_t i = 0; i < nrefs; i++) {
        free(refs[i].path);
        json_decref(ref_ents ? ref_ents[i] : NULL);
    }
    free(refs);
    free(ref_ents);
    return more < 0 ? -1 : 0;
}

/* The one entry PATH names (a hard link: its first name's content). */
static int dump_files(struct dumper *dp, struct loaded *l, const char *path,
                      struct caris_dump_result *res, struct err *e)
{
    size_t ql = strlen(path);
    char *want = NULL; /* after a hard link: its first name's full path */
    size_t want_len = 0;
    for (int hop = 0; hop < 2; hop++) {
        struct entry_iter it;
        entry_iter_init(&it, &l->text);
        struct dentry d, hit = {0};
        int more, nhits = 0;
        while ((more = next_entry(l, &it, &d, e)) == 1) {
            bool m = want ? (d.full_len == want_len && memcmp(d.full, want, want_len) == 0)
                          : path_matches(&d, path, ql);
            if (m && nhits++ == 0) {
                hit = d;
                continue;
            }
            dentry_clear(&d);
        }
        char esc[600];
        str_escape(path, ql, esc, sizeof(esc));
        int rc = 0;
        if (more < 0) {
            rc = -1;
        } else if (nhits == 0) {
            rc = err_set(e, want ? ERR_DAMAGE : ERR_NOT_FOUND, NULL, "no path %s in backup %s", esc,
                         l->id);
            snprintf(e->hint, sizeof(e->hint), "see `caris-backup ls %s`", l->id);
        } else if (nhits > 1) {
            rc = err_set(e, ERR_USAGE, "give the full path (`caris-backup ls` shows it)",
                         "%s names %d entries of backup %s (one below each of several roots)", esc,
                         nhits, l->id);
        } else if (hit.m.type == FS_HARDLINK && !want) {
            want = link_full(l, &hit, &want_len);
            dentry_clear(&hit);
            continue;
        } else if (hit.m.type == FS_DIR) {
            res->tar = true;
            rc = dump_tar(dp, l, hit.full, hit.full_len, res, e);
        } else if (hit.m.type != FS_REG) {
            rc = err_set(e, ERR_USAGE, NULL, "%s is a %s: it has no content to dump", esc,
                         hit.m.type == FS_SYMLINK ? "symbolic link" : "FIFO");
            if (hit.m.type == FS_SYMLINK)
                snprintf(e->hint, sizeof(e->hint), "it points to %.400s", hit.m.link);
        } else if (json_object_get(hit.ent, "error")) {
            rc = err_set(e, ERR_NOT_FOUND, "restore it from another backup",
                         "%s has no content in backup %s: it could not be read at backup "
                         "time (%.300s)",
                         esc, l->id, json_string_value(json_object_get(hit.ent, "error")));
        } else {
            rc = dump_content(dp, hit.ent, &hit.m, hit.full, e);
        }
        dentry_clear(&hit);
        free(want);
        return rc;
    }
    free(want); /* not reached: a hard link's first name is a file */
    return err_set(e, ERR_DAMAGE, NULL, "backup %s: a hard link names another hard link", l->id);
}

static int dump_stream(struct repo *r, struct loaded *l, const struct caris_dump_opts *o,
                       struct caris_dump_result *res, struct err *e)
{
    json_t *summary = NULL, *entries = NULL;
    if (repo_snapshot_load(r, l->name, &summary, &entries, e) != 0)
        return -1;
    const char *want = o->path;
    while (*want == '/')
        want++;
    size_t i;
    json_t *ent, *hit = NULL;
    json_array_foreach(entries, i, ent)
    {
        const char *name = json_string_value(json_object_get(ent, "name"));
        if (name && strcmp(name, want) == 0)
            hit = ent;
    }
    int rc;
    uint8_t sha[32];
    if (!hit) {
        char esc[300];
        str_escape(o->path, strlen(o->path), esc, sizeof(esc));
        rc = err_set(e, ERR_NOT_FOUND, NULL, "no stream %s in database backup %s", esc, l->id);
        snprintf(e->hint, sizeof(e->hint), "`caris-backup ls %s` lists its streams", l->id);
    } else if (!json_string_value(json_object_get(hit, "sha256")) ||
               cx_unhex(json_string_value(json_object_get(hit, "sha256")), sha, 32) != 0) {
        rc = err_set(e, ERR_DAMAGE, NULL, "backup %s: malformed stream entry", l->id);
    } else {
        rc = stream_restore_fd(r, json_object_get(hit, "chunks"), sha, o->fd, o->threads, NULL,
                               NULL, e);
        if (rc == 0)
            res->bytes = (uint64_t)json_integer_value(json_object_get(hit, "size"));
    }
    json_decref(summary);
    json_decref(entries);
    return rc;
}

static int dump_locked(struct repo *r, const char *id_text, const struct caris_dump_opts *o,
                       struct caris_dump_result *res, struct err *e)
{
    struct loaded l;
    if (load(r, id_text, NULL, &l, e) != 0)
        return -1;
    snprintf(res->id, sizeof(res->id), "%s", l.id);
    int rc;
    if (!l.files) {
        rc = dump_stream(r, &l, o, res, e);
    } else {
        struct dumper dp = {.r = r, .op = o->op};
        tarw_init(&dp.t, o->fd);
        dp.pool = pool_new(o->threads > 0 ? o->threads : sys_ncpu(), DUMP_MAX_INFLIGHT_JOBS);
        rc = dump_files(&dp, &l, o->path, res, e);
        res->bytes = dp.bytes;
        pool_free(dp.pool);
        buf_free(&dp.data);
    }
    loaded_free(&l);
    return rc;
}

int caris_backup_dump(struct repo *r, const char *id_text, const struct caris_dump_opts *o,
                      struct caris_dump_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    res->warnings = json_array();
    if (!o->path || !*o->path)
        return err_set(e, ERR_USAGE, "give the path of a file or directory (see `ls`)",
                       "dump needs a path");
    if (repo_lock(r, false, "dump", e) != 0)
        return -1;
    int rc = dump_locked(r, id_text, o, res, e);
    repo_unlock(r);
    if (rc == 0 && json_array_size(res->warnings))
        return CARIS_DONE_WARNINGS;
    return rc;
}

void caris_dump_result_free(struct caris_dump_result *res)
{
    json_decref(res->warnings);
    memset(res, 0, sizeof(*res));
}

/* ---- diff ---------------------------------------------------------------------------- */

/* What diff compares of an entry. */
struct fp {
    char *path;
    size_t len;
    enum fs_type type;
    uint32_t mode, uid, gid;
    int64_t ms, mns;
    uint64_t size;
    uint8_t sha[32]; /* files: content; zeros when unknown */
    uint8_t xh[32];  /* SHA-256 of the xattrs as stored; zeros when none */
    uint8_t lh[32];  /* SHA-256 of the link; zeros when none */
    bool unreadable; /* "error" at backup time */
};

/* Tree order: byte order where '/' sorts before every other byte, so that a directory's
 * entries follow it before any sibling whose name extends its name. */
static int fp_cmp(const void *a, const void *b)
{
    const struct fp *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    for (size_t i = 0; i < n; i++) {
        unsigned cx = (unsigned char)x->path[i], cy = (unsigned char)y->path[i];
        if (cx == cy)
            continue;
        if (cx == '/')
            return -1;
        if (cy == '/')
            return 1;
        return cx < cy ? -1 : 1;
    }
    return (x->len > y->len) - (x->len < y->len);
}

static int fingerprints(struct loaded *l, struct fp **out, size_t *n, struct err *e)
{
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    struct entry_iter it;
    entry_iter_init(&it, &l->text);
    struct dentry d;
    int more;
    while ((more = next_entry(l, &it, &d, e)) == 1) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 256;
            *out = xrealloc(*out, xsize(cap, sizeof(struct fp), 0));
        }
        struct fp *f = &(*out)[(*n)++];
        memset(f, 0, sizeof(*f));
        f->path = d.full;
        f->len = d.full_len;
        d.full = NULL;
        f->type = d.m.type;
        f->mode = d.m.mode;
        f->uid = d.m.uid;
        f->gid = d.m.gid;
        f->ms = d.m.mtime_sec;
        f->mns = d.m.mtime_nsec;
        f->size = d.m.size;
        f->unreadable = json_object_get(d.ent, "error") != NULL;
        const char *sha = json_string_value(json_object_get(d.ent, "sha256"));
        if (sha && cx_unhex(sha, f->sha, 32) != 0)
            memset(f->sha, 0, 32);
        json_t *xa = json_object_get(d.ent, "xattrs");
        if (json_array_size(xa)) {
            char *s = json_dumps(xa, JSON_COMPACT | JSON_SORT_KEYS);
            if (s) {
                cx_sha256(s, strlen(s), f->xh);
                free(s);
            }
        }
        if (d.m.link)
            cx_sha256(d.m.link, strlen(d.m.link), f->lh);
        dentry_clear(&d);
    }
    if (more == 0 && *n)
        qsort(*out, *n, sizeof(struct fp), fp_cmp);
    return more;
}

static void fps_free(struct fp *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].path);
    free(v);
}

static unsigned fp_changes(const struct fp *a, const struct fp *b)
{
    unsigned c = 0;
    if (a->type != b->type)
        c |= CARIS_DIFF_TYPE;
    if (a->type == FS_REG && b->type == FS_REG &&
        (a->size != b->size || memcmp(a->sha, b->sha, 32) != 0 || a->unreadable != b->unreadable))
        c |= CARIS_DIFF_CONTENT;
    if (a->mode != b->mode)
        c |= CARIS_DIFF_MODE;
    if (a->uid != b->uid || a->gid != b->gid)
        c |= CARIS_DIFF_OWNER;
    if (a->ms != b->ms || a->mns != b->mns)
        c |= CARIS_DIFF_MTIME;
    if (memcmp(a->xh, b->xh, 32) != 0)
        c |= CARIS_DIFF_XATTRS;
    if (memcmp(a->lh, b->lh, 32) != 0)
        c |= CARIS_DIFF_LINK;
    return c;
}

static void diff_push(struct caris_diff_result *res, size_t *cap, char status, struct fp *f,
                      unsigned changes)
{
    if (res->nitems == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        res->items = xrealloc(res->items, xsize(*cap, sizeof(*res->items), 0));
    }
    struct caris_diff_item *it = &res->items[res->nitems++];
    it->status = status;
    it->path = f->path;
    it->path_len = f->len;
    f->path = NULL;
    it->type = f->type;
    it->changes = changes;
    if (status == '+')
        res->added++;
    else if (status == '-')
        res->removed++;
    else
        res->changed++;
}

static int diff_locked(struct repo *r, const char *from_text, const char *to_text,
                       struct caris_diff_result *res, struct err *e)
{
    struct loaded a, b;
    if (load(r, from_text, "files", &a, e) != 0)
        return -1;
    if (load(r, to_text, "files", &b, e) != 0) {
        loaded_free(&a);
        return -1;
    }
    snprintf(res->from, sizeof(res->from), "%s", a.id);
    snprintf(res->to, sizeof(res->to), "%s", b.id);
    struct fp *fa = NULL, *fb = NULL;
    size_t na = 0, nb = 0;
    int rc = -1;
    if (fingerprints(&a, &fa, &na, e) == 0 && fingerprints(&b, &fb, &nb, e) == 0) {
        size_t i = 0, j = 0, cap = 0;
        while (i < na || j < nb) {
            int c = i == na ? 1 : j == nb ? -1 : fp_cmp(&fa[i], &fb[j]);
            if (c < 0) {
                diff_push(res, &cap, '-', &fa[i++], 0);
            } else if (c > 0) {
                diff_push(res, &cap, '+', &fb[j++], 0);
            } else {
                unsigned ch = fp_changes(&fa[i], &fb[j]);
                if (ch)
                    diff_push(res, &cap, 'M', &fb[j], ch);
                i++;
                j++;
            }
        }
        rc = 0;
    }
    fps_free(fa, na);
    fps_free(fb, nb);
    loaded_free(&a);
    loaded_free(&b);
    return rc;
}

int caris_backup_diff(struct repo *r, const char *from_text, const char *to_text,
                      struct caris_diff_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    if (repo_lock(r, false, "diff", e) != 0)
        return -1;
    int rc = diff_locked(r, from_text, to_text, res, e);
    repo_unlock(r);
    if (rc != 0)
        caris_diff_result_free(res);
    return rc;
}

const char *caris_diff_change_name(unsigned bit)
{
    switch (bit) {
    case CARIS_DIFF_TYPE:
        return "type";
    case CARIS_DIFF_CONTENT:
        return "content";
    case CARIS_DIFF_MODE:
        return "mode";
    case CARIS_DIFF_OWNER:
        return "owner";
    case CARIS_DIFF_MTIME:
        return "mtime";
    case CARIS_DIFF_XATTRS:
        return "xattrs";
    case CARIS_DIFF_LINK:
        return "link";
    }
    return "?";
}

json_t *caris_diff_to_json(const struct caris_diff_result *res)
{
    json_t *added = json_array(), *removed = json_array(), *changed = json_array();
    for (size_t i = 0; i < res->nitems; i++) {
        const struct caris_diff_item *it = &res->items[i];
        json_t *o = json_object();
        manifest_set_bytes(o, "path", it->path, it->path_len);
        json_object_set_new(o, "type", json_string(manifest_type_name(it->type)));
        if (it->status == 'M') {
            json_t *ch = json_array();
            for (unsigned bit = 1; bit <= CARIS_DIFF_LINK; bit <<= 1)
                if (it->changes & bit)
                    json_array_append_new(ch, json_string(caris_diff_change_name(bit)));
            json_object_set_new(o, "changes", ch);
        }
        json_array_append_new(it->status == '+' ? added : it->status == '-' ? removed : changed, o);
    }
    return json_pack("{s:s, s:s, s:o, s:o, s:o, s:{s:I, s:I, s:I}}", "from", res->from, "to",
                     res->to, "added", added, "removed", removed, "changed", changed, "stats",
                     "added", (json_int_t)res->added, "removed", (json_int_t)res->removed,
                     "changed", (json_int_t)res->changed);
}

void caris_diff_result_free(struct caris_diff_result *res)
{
    for (size_t i = 0; i < res->nitems; i++)
        free(res->items[i].path);
    free(res->items);
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
    while ((more = next_entry(l, &it, &d, e)) == 1) {
        if (find_matches(o->pattern, &d)) {
            if (res->nmatches == *cap) {
                *cap = *cap ? *cap * 2 : 64;
                res->matches = xrealloc(res->matches, xsize(*cap, sizeof(*res->matches), 0));
            }
            struct caris_find_match *m = &res->matches[res->nmatches++];
            m->backup = res->nbackups - 1;
            ls_entry_take(&m->entry, &d);
        }
        dentry_clear(&d);
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
    json_t *list = caris_backup_list(r, "files", e);
    if (!list)
        return -1;
    size_t i, cap = 0;
    json_t *s;
    int rc = 0;
    json_array_foreach(list, i, s)
    {
        const char *started = json_string_value(json_object_get(s, "started"));
        const char *id = json_string_value(json_object_get(s, "id"));
        int64_t t;
        if (!started || !id || time_parse_iso(started, &t) != 0)
            continue;
        if ((o->since_ns && t < o->since_ns) || (o->until_ns && t > o->until_ns))
            continue;
        if (caris_op_cancelled(o->op)) {
            rc = err_set(e, ERR_FAILURE, NULL, "cancelled");
            break;
        }
        caris_op_progress(o->op, "find", i, json_array_size(list));
        struct loaded l;
        if (load(r, id, "files", &l, e) != 0) {
            rc = -1;
            break;
        }
        res->backups = xrealloc(res->backups, xsize(res->nbackups + 1, sizeof(*res->backups), 0));
        struct caris_find_backup *b = &res->backups[res->nbackups++];
        snprintf(b->id, sizeof(b->id), "%s", id);
        snprintf(b->started, sizeof(b->started), "%s", started);
        rc = find_in(&l, o, res, &cap, e);
        loaded_free(&l);
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
    if (rc != 0)
        caris_find_result_free(res);
    return rc;
}

json_t *caris_find_to_json(const struct caris_find_result *res, const char *pattern)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < res->nmatches; i++) {
        const struct caris_find_match *m = &res->matches[i];
        json_t *o = ls_entry_to_json(&m->entry);
        json_object_set_new(o, "backupId", json_string(res->backups[m->backup].id));
        json_object_set_new(o, "startedAt", json_string(res->backups[m->backup].started));
        json_array_append_new(arr, o);
    }
    return json_pack("{s:s, s:I, s:o}", "pattern", pattern, "backupsSearched",
                     (json_int_t)res->nbackups, "matches", arr);
}

void caris_find_result_free(struct caris_find_result *res)
{
    for (size_t i = 0; i < res->nmatches; i++)
        ls_entry_free(&res->matches[i].entry);
    free(res->matches);
    free(res->backups);
    memset(res, 0, sizeof(*res));
}

/* diff: what changed between two file backups, entry by entry, in tree order. */
#include <stdlib.h>
#include <string.h>

#include "caris/crypto.h"
#include "caris/inspect.h"
#include "inspect_internal.h"
#include "manifest.h"

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
    char *target;    /* FS_HARDLINK: the full path of its first name (which holds the content) */
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

/* A hard link holds no content of its own: it gets its first name's (size, SHA-256, unreadable),
 * so that a content change shows on every name of the file, whichever name came first. v is
 * sorted (fp_cmp). */
static void hardlink_contents(struct fp *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i].type != FS_HARDLINK || !v[i].target)
            continue;
        struct fp key = {.path = v[i].target, .len = strlen(v[i].target)};
        const struct fp *t = bsearch(&key, v, n, sizeof(*v), fp_cmp);
        if (!t || t->type != FS_REG)
            continue; /* a first name the backup does not hold: content unknown (zeros) */
        v[i].size = t->size;
        memcpy(v[i].sha, t->sha, 32);
        v[i].unreadable = t->unreadable;
    }
}

static bool has_content(const struct fp *f)
{
    return f->type == FS_REG || f->type == FS_HARDLINK;
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
    while ((more = inspect_next_entry(l, &it, &d, e)) == 1) {
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
        if (d.m.type == FS_HARDLINK && d.m.link)
            f->target = xstrdup(d.m.link);
        inspect_dentry_clear(&d);
    }
    if (more == 0 && *n)
        qsort(*out, *n, sizeof(struct fp), fp_cmp);
    if (more == 0)
        hardlink_contents(*out, *n);
    return more;
}

static void fps_free(struct fp *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].path);
        free(v[i].target);
    }
    free(v);
}

static unsigned fp_changes(const struct fp *a, const struct fp *b)
{
    unsigned c = 0;
    if (a->type != b->type)
        c |= CARIS_DIFF_TYPE;
    if (has_content(a) && has_content(b) &&
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
    if (inspect_load(r, from_text, "files", &a, e) != 0)
        return -1;
    if (inspect_load(r, to_text, "files", &b, e) != 0) {
        inspect_loaded_free(&a);
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
    inspect_loaded_free(&a);
    inspect_loaded_free(&b);
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

/* dump: one file's exact bytes, a directory as a pax tar stream (tarw.h), or a database
 * backup's stream. File content comes through the pipeline's fetch queue, every chunk
 * authenticated and its id recomputed before its bytes are written. */
#include <stdlib.h>
#include <string.h>

#include "caris/backup.h"
#include "caris/crypto.h"
#include "caris/inspect.h"
#include "caris/pipeline.h"
#include "caris/pool.h"
#include "caris/stream.h"
#include "common.h"
#include "inspect_internal.h"
#include "manifest.h"
#include "tarw.h"

#define DUMP_MAX_INFLIGHT_BYTES (64u << 20)
#define DUMP_MAX_INFLIGHT_JOBS 4096

/* Members on their way out, oldest first. Their chunks are asked for as soon as they are
 * queued, so that the loads of many small files overlap (one fetch queue for the whole
 * dump); they are written strictly in order. */
struct member {
    struct member *next;
    char *name; /* tar member name (owned); NULL: raw bytes, no header (one file) */
    struct tarw_hdr h;
    struct fs_meta m; /* owned: what the header points into */
    char *link;       /* owned: a hard link's member name */
    char *full;       /* owned: for messages */
    bool header_done;
    /* content ('0' members and raw files) */
    bool content;
    uint64_t size, pos;
    uint8_t sha[32];
    uint8_t (*ids)[32];
    uint32_t *lens;
    uint64_t *offs;
    size_t n, done;
    struct cx_sha256 *hash;
};

/* At most this many members wait (bounds memory when most have no content). */
#define DUMP_MAX_PENDING 4096

struct dumper {
    struct repo *r;
    struct pool *pool;
    struct fetchq *q;
    struct tarw t;
    const struct caris_op *op;
    struct buf data;
    uint64_t bytes;
    struct member *head, *tail;
    size_t npending;
    struct caris_dump_result *res; /* its warnings */
};

static void member_free(struct member *m)
{
    free(m->name);
    fs_meta_free(&m->m);
    free(m->link);
    free(m->full);
    free(m->ids);
    free(m->lens);
    free(m->offs);
    cx_sha256_free(m->hash);
    free(m);
}

static const char *esc_path(const char *p, char *out, size_t n)
{
    return str_escape(p, strlen(p), out, n);
}

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

/* The content of a file entry: its chunks, their offsets (holes between), its SHA-256. */
static int member_set_content(struct member *m, json_t *ent, uint64_t size, struct err *e)
{
    m->content = true;
    m->size = size;
    const char *sha_hex = json_string_value(json_object_get(ent, "sha256"));
    if (!sha_hex || cx_unhex(sha_hex, m->sha, 32) != 0 ||
        chunklist_decode(json_object_get(ent, "chunks"), &m->ids, &m->lens, &m->n) != 0 ||
        !(m->offs = xcalloc(m->n ? m->n : 1, sizeof(uint64_t))) ||
        manifest_chunk_offsets(ent, m->lens, m->n, size, m->offs) != 0) {
        char esc[300];
        return err_set(e, ERR_DAMAGE, NULL,
                       "%s: malformed manifest entry (chunks, extents or sha256)",
                       esc_path(m->full, esc, sizeof(esc)));
    }
    m->hash = cx_sha256_new();
    return 0;
}

/* Writes the oldest member's header, or its next chunk, or its end; pops it when done. Every
 * chunk of the oldest member that is still to be written was asked for already: members are
 * queued whole, one after the other. */
static int drain_one(struct dumper *dp, struct err *e)
{
    struct member *m = dp->head;
    char esc[300];
    if (!m->header_done) {
        if (m->name && tarw_header(&dp->t, &m->h, e) != 0)
            return -1;
        m->header_done = true;
    }
    if (m->content && m->done < m->n) {
        void *tag;
        if (fetchq_next(dp->q, &tag, &dp->data, e) != 0)
            return err_wrap(e, "%s", esc_path(m->full, esc, sizeof(esc)));
        if (tag != m || dp->data.len != m->lens[m->done])
            return err_set(e, ERR_DAMAGE, NULL, "%s: chunk %zu has %zu bytes, the manifest says %u",
                           esc_path(m->full, esc, sizeof(esc)), m->done, dp->data.len,
                           m->lens[m->done]);
        uint64_t off = m->offs[m->done++];
        if (off > m->pos) {
            sha256_zeros(m->hash, off - m->pos);
            if (write_zeros(dp, off - m->pos, e) != 0)
                return -1;
        }
        cx_sha256_update(m->hash, dp->data.data, dp->data.len);
        if (tarw_data(&dp->t, dp->data.data, dp->data.len, e) != 0)
            return -1;
        m->pos = off + dp->data.len;
        if (caris_op_cancelled(dp->op))
            return err_set(e, ERR_FAILURE, NULL, "cancelled");
        if (m->done < m->n)
            return 0;
    }
    if (m->content) {
        if (m->size > m->pos) {
            sha256_zeros(m->hash, m->size - m->pos);
            if (write_zeros(dp, m->size - m->pos, e) != 0)
                return -1;
        }
        uint8_t sum[32];
        cx_sha256_final(m->hash, sum);
        if (memcmp(sum, m->sha, 32) != 0)
            return err_set(e, ERR_DAMAGE,
                           "the backup is corrupted: do not use this output; run `caris-backup "
                           "check --read-data`",
                           "%s: checksum mismatch: the content does not match the SHA-256 "
                           "recorded at backup time",
                           esc_path(m->full, esc, sizeof(esc)));
        if (m->name && tarw_end_member(&dp->t, m->size, e) != 0)
            return -1;
        dp->bytes += m->size;
    }
    dp->head = m->next;
    if (!dp->head)
        dp->tail = NULL;
    dp->npending--;
    member_free(m);
    return caris_op_cancelled(dp->op) ? err_set(e, ERR_FAILURE, NULL, "cancelled") : 0;
}

static int drain_all(struct dumper *dp, struct err *e)
{
    while (dp->head)
        if (drain_one(dp, e) != 0)
            return -1;
    return 0;
}

/* Queues m (taking it) and asks for its chunks, writing older members out while the fetch
 * window is full. */
static int enqueue(struct dumper *dp, struct member *m, struct err *e)
{
    while (dp->npending >= DUMP_MAX_PENDING)
        if (drain_one(dp, e) != 0) {
            member_free(m);
            return -1;
        }
    if (dp->tail)
        dp->tail->next = m;
    else
        dp->head = m;
    dp->tail = m;
    dp->npending++;
    for (size_t k = 0; m->content && k < m->n; k++) {
        while (!fetchq_room(dp->q, m->lens[k]))
            if (drain_one(dp, e) != 0)
                return -1;
        fetchq_submit(dp->q, m->ids[k], m->lens[k], m);
    }
    return 0;
}

static void dumper_free(struct dumper *dp)
{
    fetchq_free(dp->q); /* waits for the loads in flight */
    while (dp->head) {
        struct member *m = dp->head;
        dp->head = m->next;
        member_free(m);
    }
    pool_free(dp->pool);
    buf_free(&dp->data);
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
    if (d->m.type == FS_DIR) /* the directory is in the archive, what was in it is not */
        snprintf(m, sizeof(m),
                 "contents left out: the directory could not be read at backup time (%s)", msg);
    else
        snprintf(m, sizeof(m), "left out: the file could not be read at backup time (%s)", msg);
    json_object_set_new(w, "message", json_string(m));
    json_array_append_new(res->warnings, w);
}

/* A pax record's keyword ends at its first '=': an extended attribute whose name holds one
 * (Linux allows it) would come out of `tar --xattrs` as another attribute, with part of its
 * name in its value. It is left out of the archive, with a warning, rather than changed. */
static void drop_unnamable_xattrs(struct caris_dump_result *res, struct member *m)
{
    size_t k = 0;
    for (size_t i = 0; i < m->m.nxattrs; i++) {
        struct fs_xattr *x = &m->m.xattrs[i];
        if (!strchr(x->name, '=')) {
            m->m.xattrs[k++] = *x;
            continue;
        }
        json_t *w = json_object();
        manifest_set_bytes(w, "path", m->full, strlen(m->full));
        char en[600], msg[800];
        str_escape(x->name, strlen(x->name), en, sizeof(en));
        snprintf(msg, sizeof(msg),
                 "extended attribute %s left out: a tar stream cannot name it (it holds '='); "
                 "restore files gives it back",
                 en);
        json_object_set_new(w, "message", json_string(msg));
        json_array_append_new(res->warnings, w);
        free(x->name);
        free(x->value);
    }
    m->m.nxattrs = k;
}

/* Queues a tar member for entry d (its metadata moves to the member). name and link (may be
 * NULL) are taken. type '0': the content of content_ent, content_size bytes. */
static int tar_member(struct dumper *dp, struct dentry *d, char *name, size_t nlen, char type,
                      char *link, json_t *content_ent, uint64_t content_size, struct err *e)
{
    struct member *m = xcalloc(1, sizeof(*m));
    m->name = name;
    m->link = link;
    m->m = d->m;
    memset(&d->m, 0, sizeof(d->m));
    m->full = xstrndup(d->full, d->full_len);
    drop_unnamable_xattrs(dp->res, m);
    if (type == '0' && member_set_content(m, content_ent, content_size, e) != 0) {
        member_free(m);
        return -1;
    }
    m->h = (struct tarw_hdr){.name = m->name,
                             .name_len = nlen,
                             .type = type,
                             .mode = m->m.mode,
                             .uid = m->m.uid,
                             .gid = m->m.gid,
                             .uname = m->m.user,
                             .gname = m->m.group,
                             .size = type == '0' ? content_size : 0,
                             .mtime_sec = m->m.mtime_sec,
                             .mtime_nsec = m->m.mtime_nsec,
                             .link = link ? link : (type == '2' ? m->m.link : NULL),
                             .xattrs = m->m.xattrs,
                             .nxattrs = m->m.nxattrs};
    return enqueue(dp, m, e);
}

/* A hard link whose first name is outside the directory dumped: a file member with the
 * content of the first name's entry. */
static int tar_hardlink_content(struct dumper *dp, struct loaded *l, struct dentry *d, char *name,
                                size_t nlen, json_t *first, struct err *e)
{
    int root;
    char *p;
    size_t pl;
    struct fs_meta fm;
    if (manifest_entry_decode(first, l->nroots, &root, &p, &pl, &fm, e) != 0) {
        free(name);
        return err_wrap(e, "backup %s", l->id);
    }
    free(p);
    uint64_t size = fm.size;
    fs_meta_free(&fm);
    return tar_member(dp, d, name, nlen, '0', NULL, first, size, e);
}

/* A hard link whose first name could not be read at backup time (why) is left out: its
 * member would name a file the archive does not hold (tar: "Cannot hard link"). */
static void warn_unread_link(struct caris_dump_result *res, const struct dentry *d,
                             const char *first, size_t first_len, const char *why)
{
    json_t *w = json_object();
    manifest_set_bytes(w, "path", d->full, d->full_len);
    char el[600], m[1400];
    str_escape(first, first_len, el, sizeof(el));
    snprintf(m, sizeof(m),
             "left out: a hard link of %s, whose content could not be read at backup time (%s)", el,
             why);
    json_object_set_new(w, "message", json_string(m));
    json_array_append_new(res->warnings, w);
}

/* A directory as a tar stream. Hard links whose first name is inside the directory stay hard
 * links; those whose first name is outside get that file's content (found in a first pass).
 * Those whose first name could not be read at backup time are left out with a warning. */
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
    while ((more = inspect_next_entry(l, &it, &d, e)) == 1) {
        if (d.m.type == FS_HARDLINK && inspect_below(d.full, d.full_len, a, al, false)) {
            /* every first name (inside too: was it read at backup time?) */
            size_t tl;
            char *t = inspect_link_full(l, &d, &tl);
            refs = xrealloc(refs, xsize(nrefs + 1, sizeof(*refs), 0));
            refs[nrefs] = (struct pathref){t, tl, nrefs};
            nrefs++;
        }
        inspect_dentry_clear(&d);
    }
    if (more < 0)
        goto out;
    if (nrefs)
        qsort(refs, nrefs, sizeof(*refs), inspect_pathref_cmp);
    ref_ents = xcalloc(nrefs + 1, sizeof(json_t *));
    entry_iter_init(&it, &l->text);
    while ((more = inspect_next_entry(l, &it, &d, e)) == 1) {
        int rc = 0;
        if (d.m.type == FS_REG && nrefs) {
            size_t k = inspect_pathref_find(refs, nrefs, d.full, d.full_len);
            if (k < nrefs && !ref_ents[k])
                ref_ents[k] = json_incref(d.ent);
        }
        bool is_anchor = d.full_len == al && memcmp(d.full, a, al) == 0;
        if (!is_anchor && !inspect_below(d.full, d.full_len, a, al, false)) {
            inspect_dentry_clear(&d);
            continue;
        }
        size_t nlen;
        char *name = member_name(a, al, d.full, d.full_len, d.m.type == FS_DIR, &nlen);
        const char *err_msg = json_string_value(json_object_get(d.ent, "error"));
        bool queued = false; /* name goes to the member, or is freed here */
        if (d.m.type == FS_REG && err_msg) {
            warn_unreadable(res, &d, err_msg);
        } else if (d.m.type == FS_HARDLINK) {
            size_t tl;
            char *t = inspect_link_full(l, &d, &tl);
            /* its first name comes before it in the backup: its entry is known by now */
            size_t k = inspect_pathref_find(refs, nrefs, t, tl);
            json_t *first_err =
                k < nrefs && ref_ents[k] ? json_object_get(ref_ents[k], "error") : NULL;
            const char *why =
                first_err ? (json_string_value(first_err) ? json_string_value(first_err) : "?")
                          : NULL;
            bool inside = inspect_below(t, tl, a, al, false);
            if (why) {
                warn_unread_link(res, &d, t, tl, why);
            } else if (inside) {
                size_t ln;
                char *lname = member_name(a, al, t, tl, false, &ln);
                rc = tar_member(dp, &d, name, nlen, '1', lname, NULL, 0, e);
                queued = true;
            } else {
                if (k == nrefs || !ref_ents[k]) {
                    rc = err_set(e, ERR_DAMAGE, NULL,
                                 "backup %s: hard link %s names a file the backup does not hold",
                                 l->id, name);
                } else {
                    rc = tar_hardlink_content(dp, l, &d, name, nlen, ref_ents[k], e);
                    queued = true;
                }
            }
            free(t);
        } else {
            if (d.m.type == FS_DIR && err_msg)
                warn_unreadable(res, &d, err_msg);
            rc = tar_member(dp, &d, name, nlen, tar_type(d.m.type), NULL, d.ent, d.m.size, e);
            queued = true;
        }
        if (!queued)
            free(name);
        else if (rc == 0)
            res->members++;
        inspect_dentry_clear(&d);
        if (rc == 0 && caris_op_cancelled(dp->op))
            rc = err_set(e, ERR_FAILURE, NULL, "cancelled");
        if (rc != 0) {
            more = -1;
            break;
        }
    }
    if (more == 0)
        more = drain_all(dp, e) == 0 && tarw_finish(&dp->t, e) == 0 ? 0 : -1;
out:
    for (size_t i = 0; i < nrefs; i++) {
        free(refs[i].path);
        json_decref(ref_ents ? ref_ents[i] : NULL);
    }
    free(refs);
    free(ref_ents);
    return more < 0 ? -1 : 0;
}

/* One file's bytes, without a header. */
static int dump_raw(struct dumper *dp, const struct dentry *d, struct err *e)
{
    struct member *m = xcalloc(1, sizeof(*m));
    m->full = xstrndup(d->full, d->full_len);
    m->header_done = true;
    if (member_set_content(m, d->ent, d->m.size, e) != 0) {
        member_free(m);
        return -1;
    }
    return enqueue(dp, m, e) == 0 ? drain_all(dp, e) : -1;
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
        while ((more = inspect_next_entry(l, &it, &d, e)) == 1) {
            bool m = want ? (d.full_len == want_len && memcmp(d.full, want, want_len) == 0)
                          : inspect_path_matches(&d, path, ql);
            if (m && nhits++ == 0) {
                hit = d;
                continue;
            }
            inspect_dentry_clear(&d);
        }
        char esc[600];
        str_escape(path, ql, esc, sizeof(esc));
        int rc = 0;
        if (more < 0) {
            rc = -1;
        } else if (nhits == 0) {
            rc = err_set(e, want ? ERR_DAMAGE : ERR_NOT_FOUND, NULL, "no path %s in backup %s", esc,
                         l->id);
            snprintf(e->hint, sizeof(e->hint),
                     "see `caris-backup ls %s` (a byte it shows as \\xNN is that byte: in bash, "
                     "$'\\xNN')",
                     l->id);
        } else if (nhits > 1) {
            rc = err_set(e, ERR_USAGE, "give the full path (`caris-backup ls` shows it)",
                         "%s names %d entries of backup %s (one below each of several roots)", esc,
                         nhits, l->id);
        } else if (hit.m.type == FS_HARDLINK && !want) {
            want = inspect_link_full(l, &hit, &want_len);
            inspect_dentry_clear(&hit);
            continue;
        } else if (hit.m.type == FS_DIR) {
            res->tar = true;
            rc = dump_tar(dp, l, hit.full, hit.full_len, res, e);
        } else if (hit.m.type == FS_HARDLINK) { /* a hard link to a hard link */
            rc = err_set(e, ERR_DAMAGE, NULL, "backup %s: hard link %s names another hard link",
                         l->id, esc);
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
            rc = dump_raw(dp, &hit, e);
        }
        inspect_dentry_clear(&hit);
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
                               NULL, o->op, e);
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
    if (inspect_load(r, id_text, NULL, &l, e) != 0)
        return -1;
    snprintf(res->id, sizeof(res->id), "%s", l.id);
    int rc;
    if (!l.files) {
        rc = dump_stream(r, &l, o, res, e);
    } else {
        struct dumper dp = {.r = r, .op = o->op, .res = res};
        tarw_init(&dp.t, o->fd);
        dp.pool = pool_new(o->threads > 0 ? o->threads : sys_ncpu(), DUMP_MAX_INFLIGHT_JOBS);
        dp.q = fetchq_new(r, dp.pool, 0, DUMP_MAX_INFLIGHT_JOBS, DUMP_MAX_INFLIGHT_BYTES);
        rc = dump_files(&dp, &l, o->path, res, e);
        res->bytes = dp.bytes;
        dumper_free(&dp);
    }
    inspect_loaded_free(&l);
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

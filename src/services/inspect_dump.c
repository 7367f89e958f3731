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
    while ((more = inspect_next_entry(l, &it, &d, e)) == 1) {
        if (d.m.type == FS_HARDLINK && inspect_below(d.full, d.full_len, a, al, false)) {
            size_t tl;
            char *t = inspect_link_full(l, &d, &tl);
            if (!inspect_below(t, tl, a, al, false)) {
                refs = xrealloc(refs, xsize(nrefs + 1, sizeof(*refs), 0));
                refs[nrefs] = (struct pathref){t, tl, nrefs};
                nrefs++;
            } else {
                free(t);
            }
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
        if (d.m.type == FS_REG && err_msg) {
            warn_unreadable(res, &d, err_msg);
        } else if (d.m.type == FS_HARDLINK) {
            size_t tl;
            char *t = inspect_link_full(l, &d, &tl);
            if (inspect_below(t, tl, a, al, false)) {
                size_t ln;
                char *lname = member_name(a, al, t, tl, false, &ln);
                rc = tar_member(dp, &d, name, nlen, '1', lname, NULL, NULL, e);
                free(lname);
            } else {
                size_t k = inspect_pathref_find(refs, nrefs, t, tl);
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
        inspect_dentry_clear(&d);
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
            snprintf(e->hint, sizeof(e->hint), "see `caris-backup ls %s`", l->id);
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
            rc = dump_content(dp, hit.ent, &hit.m, hit.full, e);
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
    if (inspect_load(r, id_text, NULL, &l, e) != 0)
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

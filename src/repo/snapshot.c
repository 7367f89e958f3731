/* Snapshot manifests (the commit point of a backup) and records. Locks are in lock.c. */
#include "internal.h"

#include "caris/pipeline.h"
#include "caris/stream.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Snapshot object names are 64 lower-case hex digits: anything else could point elsewhere
 * in the repository ("../config"). */
static int check_name(const char *name, struct err *e)
{
    bool ok = strlen(name) == 64;
    for (const char *p = name; *p && ok; p++)
        ok = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f');
    return ok ? 0 : err_set(e, ERR_NOT_FOUND, NULL, "invalid snapshot name '%.80s'", name);
}

/* Snapshot payload (inside an 'S' container):
 *   u32 len_summary, zstd(summary JSON) [len_summary bytes], zstd(entries reference JSON),
 * where the entries reference is {"chunks": [[id, len], ...], "sha256": hex, "bytes": n}:
 * the entries JSON array stored as a stream (see stream.h). */

int repo_snapshot_put_entries(struct repo *r, struct repo_writer *w, json_t *entries, json_t **ref,
                              struct err *e)
{
    /* Sorted keys: the same entry serialises to the same bytes whichever way it was built,
     * so an unchanged tree's entries deduplicate against the last backup's. */
    char *list = json_dumps(entries, JSON_COMPACT | JSON_SORT_KEYS);
    if (!list)
        return err_set(e, ERR_FAILURE, NULL, "cannot serialise the backup manifest");
    int rc = repo_snapshot_put_entries_text(r, w, list, strlen(list), ref, e);
    free(list);
    return rc;
}

static int entries_ref(const struct stream_result *sr, json_t **ref)
{
    char sha_hex[65];
    cx_hex(sr->sha256, 32, sha_hex);
    *ref = json_pack("{s:o, s:s, s:I}", "chunks", sr->chunks, "sha256", sha_hex, "bytes",
                     (json_int_t)sr->bytes);
    return 0;
}

int repo_snapshot_put_entries_text(struct repo *r, struct repo_writer *w, const char *text,
                                   size_t len, json_t **ref, struct err *e)
{
    struct stream_result sr = {0};
    if (stream_store_meta_buf(r, w, text, len, repo_chunker_params(r, true), &sr, e) != 0)
        return -1;
    return entries_ref(&sr, ref);
}

int repo_snapshot_put_entries_fd(struct repo *r, struct repo_writer *w, int fd, uint64_t len,
                                 json_t **ref, struct err *e)
{
    struct stream_result sr = {0};
    if (lseek(fd, 0, SEEK_SET) != 0)
        return err_sys(e, errno, NULL, "cannot read the manifest's entries back");
    if (stream_store_meta_fd(r, w, fd, repo_chunker_params(r, true), &sr, e) != 0)
        return -1;
    if (sr.bytes != len) {
        json_decref(sr.chunks);
        return err_set(e, ERR_FAILURE, "nothing was committed: run the backup again",
                       "the manifest's entries changed size while stored (%llu bytes, not %llu)",
                       (unsigned long long)sr.bytes, (unsigned long long)len);
    }
    return entries_ref(&sr, ref);
}

int repo_snapshot_commit(struct repo *r, json_t *summary, json_t *ref, char name_out[65],
                         struct err *e)
{
    char *s1 = json_dumps(summary, JSON_COMPACT | JSON_SORT_KEYS);
    char *s2 = json_dumps(ref, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = -1;
    struct buf z1 = {0}, z2 = {0}, payload = {0};
    if (!s1 || !s2) {
        err_set(e, ERR_FAILURE, NULL, "cannot serialise the backup manifest");
        goto out;
    }
    /* A backup whose lock was removed while it ran (unlock --force, or judged stale after
     * it could not refresh it) may have deduplicated against blobs a prune has deleted
     * since: it must not commit. */
    if (repo_lock_check(r, e) != 0)
        goto out;
    if (zstd_pack(s1, strlen(s1), 3, &z1) != 0 || zstd_pack(s2, strlen(s2), 3, &z2) != 0) {
        err_set(e, ERR_FAILURE, NULL, "cannot compress the backup manifest");
        goto out;
    }
    buf_append_u32le(&payload, (uint32_t)z1.len);
    buf_append(&payload, z1.data, z1.len);
    buf_append(&payload, z2.data, z2.len);
    /* test-only: CARIS_TEST_COMMIT_HOLD=PATH holds here, the lock checked, the snapshot not
     * written (test_lock: the holder is stopped here until its lock lapses) */
    test_hold_point("CARIS_TEST_COMMIT_HOLD");
    rc = container_put(r, 'S', "snapshots", payload.data, payload.len, name_out, NULL, e);
    if (rc == 0 && repo_lock_lapse_check(r, e) != 0) {
        /* The write took past the lock's lapse (an S3 PUT retried for minutes, the process
         * stopped or the machine suspended in it): a prune may have taken the lock for stale
         * and deleted data this backup uses. The snapshot goes again: not committed. */
        char name[80];
        snprintf(name, sizeof(name), "snapshots/%s", name_out);
        /* (as a forget: the state record first, so that another writer that took it in
         * meanwhile does not find it "missing"; failing that, the file alone) */
        const char *nm = name_out;
        struct err re = ERR_INIT;
        if (repo_snapshots_remove(r, &nm, 1, &re) != 0 && storage_remove(r->st, name, &re) != 0)
            err_wrap(e, "%s was written and could not be removed (%s): run `caris-backup check`",
                     name, re.msg);
        rc = -1;
        goto out;
    }
    /* The snapshot is the commit point; the state record follows it. A backup that stops in
     * between is committed all the same, and the next writer takes its snapshot in. */
    struct err se = ERR_INIT;
    if (rc == 0 &&
        state_record_change(r, name_out, json_string_value(json_object_get(summary, "id")), NULL, 0,
                            &se) != 0) {
        char name[80];
        snprintf(name, sizeof(name), "snapshots/%s", name_out);
        repo_warn(r, name,
                  "backup committed, but the state record was not updated (%s): the next backup "
                  "or forget records it",
                  se.msg);
    }
out:
    free(s1);
    free(s2);
    buf_free(&z1);
    buf_free(&z2);
    buf_free(&payload);
    return rc;
}

int repo_snapshot_save(struct repo *r, struct repo_writer *w, json_t *summary, json_t *entries,
                       char name_out[65], struct err *e)
{
    json_t *ref = NULL;
    int rc = -1;
    if (repo_snapshot_put_entries(r, w, entries, &ref, e) == 0 && repo_writer_flush(w, e) == 0)
        rc = repo_snapshot_commit(r, summary, ref, name_out, e);
    json_decref(ref);
    return rc;
}

static json_t *parse_json_part(const uint8_t *p, size_t len, const char *name, const char *what,
                               struct err *e)
{
    struct buf plain = {0};
    if (zstd_unpack(p, len, REPO_MAX_METADATA, &plain, e) != 0) {
        buf_free(&plain);
        err_wrap(e, "snapshot %s: %s", name, what);
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)plain.data, plain.len, 0, &je);
    buf_free(&plain);
    if (!j)
        err_set(e, ERR_DAMAGE, NULL, "snapshot %s: %s is not valid JSON (%s)", name, what, je.text);
    return j;
}

/* The entries' text from their parsed reference: the stream it names. */
int snapshot_ref_text(struct repo *r, json_t *ref, const char *name, bool here, struct buf *text,
                      struct err *e)
{
    const char *sha_hex = json_string_value(json_object_get(ref, "sha256"));
    uint8_t sha[32];
    if (!sha_hex || cx_unhex(sha_hex, sha, 32) != 0)
        return err_set(e, ERR_DAMAGE, NULL, "snapshot %s: malformed entries reference", name);
    json_t *chunks = json_object_get(ref, "chunks");
    if ((here ? stream_restore_buf_here(r, chunks, sha, REPO_MAX_METADATA, text, e)
              : stream_restore_buf(r, chunks, sha, REPO_MAX_METADATA, text, e)) != 0) {
        err_wrap(e, "snapshot %s: entries", name);
        return -1;
    }
    return 0;
}

/* The entries' text: their reference, then the stream it names. */
static int load_entries_text(struct repo *r, const uint8_t *p, size_t len, const char *name,
                             struct buf *list, struct err *e)
{
    json_t *ref = parse_json_part(p, len, name, "entries reference", e);
    if (!ref)
        return -1;
    int rc = snapshot_ref_text(r, ref, name, false, list, e);
    json_decref(ref);
    return rc;
}

/* The entries, parsed. */
static int load_entries(struct repo *r, const uint8_t *p, size_t len, const char *name,
                        json_t **entries, struct err *e)
{
    struct buf list = {0};
    int rc = -1;
    if (load_entries_text(r, p, len, name, &list, e) == 0) {
        json_error_t je;
        *entries = json_loadb((const char *)list.data, list.len, 0, &je);
        if (!*entries || !json_is_array(*entries)) {
            json_decref(*entries);
            *entries = NULL;
            err_set(e, ERR_DAMAGE, NULL, "snapshot %s: entries are not a JSON array", name);
        } else {
            rc = 0;
        }
    }
    buf_free(&list);
    return rc;
}

static int snapshot_load(struct repo *r, const char *name, json_t **summary, json_t **entries,
                         struct buf *text, json_t **ref, struct err *e);

int repo_snapshot_load(struct repo *r, const char *name, json_t **summary, json_t **entries,
                       struct err *e)
{
    return snapshot_load(r, name, summary, entries, NULL, NULL, e);
}

int snapshot_load_parts(struct repo *r, const char *name, json_t **summary, json_t **ref,
                        struct buf *text, struct err *e)
{
    return snapshot_load(r, name, summary, NULL, text, ref, e);
}

int repo_snapshot_load_ref(struct repo *r, const char *name, json_t **summary, json_t **ref,
                           struct err *e)
{
    return snapshot_load(r, name, summary, NULL, NULL, ref, e);
}

int repo_snapshot_load_entries_text(struct repo *r, const char *name, struct buf *text,
                                    struct err *e)
{
    json_t *summary = NULL;
    int rc = snapshot_load(r, name, &summary, NULL, text, NULL, e);
    json_decref(summary);
    return rc;
}

static int snapshot_load(struct repo *r, const char *name, json_t **summary, json_t **entries,
                         struct buf *text, json_t **ref, struct err *e)
{
    char obj[100];
    snprintf(obj, sizeof(obj), "snapshots/%s", name);
    struct buf raw = {0}, payload = {0};
    int rc = -1;
    *summary = NULL;
    if (entries)
        *entries = NULL;
    if (ref)
        *ref = NULL;
    if (check_name(name, e) != 0)
        return -1;
    if (storage_get(r->st, obj, REPO_MAX_METADATA, &raw, e) != 0)
        goto out;
    uint8_t sid[32];
    char hex[65];
    cx_sha256(raw.data, raw.len, sid);
    cx_hex(sid, 32, hex);
    if (strcmp(hex, name) != 0) {
        err_set(e, ERR_DAMAGE, NULL, "snapshot %s: content does not match its name", name);
        goto out;
    }
    if (container_open(r, 'S', raw.data, raw.len, &payload, e) != 0) {
        err_wrap(e, "snapshot %s", name);
        goto out;
    }
    struct reader rd;
    reader_init(&rd, payload.data, payload.len);
    uint32_t l1;
    const uint8_t *p1;
    if (reader_u32le(&rd, &l1) != 0 || !(p1 = reader_skip(&rd, l1))) {
        err_set(e, ERR_DAMAGE, NULL, "snapshot %s: truncated", name);
        goto out;
    }
    *summary = parse_json_part(p1, l1, name, "summary", e);
    if (!*summary || !json_is_object(*summary)) {
        if (*summary)
            err_set(e, ERR_DAMAGE, NULL, "snapshot %s: summary is not an object", name);
        goto out;
    }
    if (ref && !(*ref = parse_json_part(payload.data + rd.pos, payload.len - rd.pos, name,
                                        "entries reference", e)))
        goto out;
    if (entries &&
        load_entries(r, payload.data + rd.pos, payload.len - rd.pos, name, entries, e) != 0)
        goto out;
    if (text &&
        load_entries_text(r, payload.data + rd.pos, payload.len - rd.pos, name, text, e) != 0)
        goto out;
    rc = 0;
out:
    if (rc != 0) {
        json_decref(*summary);
        *summary = NULL;
        if (entries) {
            json_decref(*entries);
            *entries = NULL;
        }
        if (ref) {
            json_decref(*ref);
            *ref = NULL;
        }
    }
    buf_free(&raw);
    buf_free(&payload);
    return rc;
}

struct list_ctx {
    struct repo *r;
    json_t *out;
    json_t *damaged;
};

/* A snapshot listed but not found when read was removed meanwhile by a `forget` (which needs
 * only a shared lock, and lists take none): passed over, as if listed a moment later, unless
 * this handle holds the exclusive lock (prune lists the snapshots under it to mark what they
 * use; then nobody else removes one, and a missing snapshot stays an error). */
static bool snapshot_gone_meanwhile(const struct repo *r)
{
    return !(r->lock && r->lock->exclusive);
}

static int list_one(void *ctx, const char *name, uint64_t size, struct err *e)
{
    (void)size;
    struct list_ctx *c = ctx;
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    json_t *summary;
    struct err se = ERR_INIT;
    if (repo_snapshot_load(c->r, base, &summary, NULL, &se) != 0) {
        if (se.code == ERR_NOT_FOUND && snapshot_gone_meanwhile(c->r))
            return 0;
        if (se.code != ERR_DAMAGE) {
            *e = se;
            return -1;
        }
        /* A snapshot that cannot be read must not vanish from the list: it is named by its
         * backup id when the state record (or this host's copy) knows it. */
        json_t *d = json_pack("{s:s, s:s}", "object", name, "error", se.msg);
        char id[256];
        if (state_backup_id_of(c->r, base, id, sizeof(id)))
            json_object_set_new(d, "id", json_string(id));
        json_array_append_new(c->damaged, d);
        return 0;
    }
    json_object_set_new(summary, "_file", json_string(base));
    json_array_append_new(c->out, summary);
    return 0;
}

static int cmp_started(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    const char *sx = json_string_value(json_object_get(x, "started"));
    const char *sy = json_string_value(json_object_get(y, "started"));
    int c = strcmp(sx ? sx : "", sy ? sy : "");
    if (c)
        return c;
    const char *ix = json_string_value(json_object_get(x, "id"));
    const char *iy = json_string_value(json_object_get(y, "id"));
    return strcmp(ix ? ix : "", iy ? iy : "");
}

/* list (its reference taken) as a new array, oldest first. */
static json_t *sort_summaries(json_t *list)
{
    size_t n = json_array_size(list);
    json_t **v = xcalloc(n ? n : 1, sizeof(json_t *));
    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(list, i));
    qsort(v, n, sizeof(json_t *), cmp_started);
    json_t *sorted = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(sorted, v[i]);
    free(v);
    json_decref(list);
    return sorted;
}

json_t *repo_snapshot_list(struct repo *r, json_t **damaged, struct err *e)
{
    struct list_ctx c = {r, json_array(), json_array()};
    if (storage_list(r->st, "snapshots", list_one, &c, e) != 0) {
        json_decref(c.out);
        json_decref(c.damaged);
        return NULL;
    }
    json_t *sorted = sort_summaries(c.out);
    if (damaged)
        *damaged = c.damaged;
    else
        json_decref(c.damaged);
    return sorted;
}

/* ---- summaries from a local cache ------------------------------------------------ */

/* The cache file: the compact JSON {"version": 1, "summaries": {object name: summary}}, then
 * HMAC-SHA-256 (repo_local_key "snapshot summaries") of that text. */
#define SUMCACHE_VERSION 1

#define SUMCACHE_PURPOSE "snapshot summaries" /* repo_local_key */

static json_t *sumcache_read(struct repo *r, const char *path)
{
    struct buf b = {0};
    json_t *sums = NULL;
    if (repo_local_file_read(r, SUMCACHE_PURPOSE, path, SIZE_MAX, &b) == 0 && b.len > 0) {
        json_t *doc = json_loadb((const char *)b.data, b.len, 0, NULL);
        json_t *v = json_object_get(doc, "summaries");
        if (json_integer_value(json_object_get(doc, "version")) == SUMCACHE_VERSION &&
            json_is_object(v))
            sums = json_incref(v);
        json_decref(doc);
    }
    buf_free(&b);
    return sums ? sums : json_object();
}

static void sumcache_write(struct repo *r, const char *path, json_t *sums)
{
    json_t *doc = json_pack("{s:i, s:O}", "version", SUMCACHE_VERSION, "summaries", sums);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        return;
    /* a cache: a failure costs the next lookup time, not correctness */
    struct err ie = ERR_INIT;
    repo_local_file_write(r, SUMCACHE_PURPOSE, path, text, strlen(text), &ie);
    free(text);
}

struct cached_ctx {
    struct repo *r;
    json_t *cached; /* name -> summary, from the cache file */
    json_t *seen;   /* name -> summary, every readable snapshot listed now */
    json_t *out;
    size_t nread;
};

static int list_cached_one(void *ctx, const char *name, uint64_t size, struct err *e)
{
    (void)size;
    struct cached_ctx *c = ctx;
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    json_t *summary = json_object_get(c->cached, base);
    if (summary && json_is_object(summary)) {
        json_incref(summary);
    } else {
        struct err se = ERR_INIT;
        if (repo_snapshot_load(c->r, base, &summary, NULL, &se) != 0) {
            if (se.code == ERR_NOT_FOUND && snapshot_gone_meanwhile(c->r))
                return 0;
            if (se.code != ERR_DAMAGE) {
                *e = se;
                return -1;
            }
            return 0; /* as repo_snapshot_list: skipped (list and check report it) */
        }
        c->nread++;
    }
    json_object_set(c->seen, base, summary);
    json_t *copy = json_deep_copy(summary);
    json_decref(summary);
    json_object_set_new(copy, "_file", json_string(base));
    json_array_append_new(c->out, copy);
    return 0;
}

json_t *repo_snapshot_list_cached(struct repo *r, const char *cache_path, size_t *nread,
                                  struct err *e)
{
    if (!cache_path)
        return repo_snapshot_list(r, NULL, e);
    struct cached_ctx c = {r, sumcache_read(r, cache_path), json_object(), json_array(), 0};
    json_t *sorted = NULL;
    if (storage_list(r->st, "snapshots", list_cached_one, &c, e) == 0) {
        /* rewritten when a snapshot was read or one in the cache is gone */
        if (c.nread || json_object_size(c.seen) != json_object_size(c.cached))
            sumcache_write(r, cache_path, c.seen);
        sorted = sort_summaries(c.out);
        c.out = NULL;
        if (nread)
            *nread = c.nread;
    }
    json_decref(c.out);
    json_decref(c.cached);
    json_decref(c.seen);
    return sorted;
}

int repo_snapshot_damaged_id(json_t *damaged, const char *backup_id, struct err *e)
{
    size_t i;
    json_t *d;
    json_array_foreach(damaged, i, d)
    {
        const char *id = json_string_value(json_object_get(d, "id"));
        if (id && strcmp(id, backup_id) == 0)
            return err_set(e, ERR_DAMAGE,
                           "restore from another backup; `caris-backup check` shows what else "
                           "is damaged",
                           "backup %s cannot be read: its snapshot file %s is damaged (%s)",
                           backup_id, json_string_value(json_object_get(d, "object")),
                           json_string_value(json_object_get(d, "error")));
    }
    return 0;
}

json_t *repo_snapshot_damaged_find(json_t *damaged, const char *name)
{
    size_t i;
    json_t *d;
    json_array_foreach(damaged, i, d)
    {
        const char *id = json_string_value(json_object_get(d, "id"));
        const char *obj = json_string_value(json_object_get(d, "object")) ?: "";
        const char *base = strrchr(obj, '/') ? strrchr(obj, '/') + 1 : obj;
        if ((id && strcmp(id, name) == 0) || strcmp(obj, name) == 0 ||
            (*base && strcmp(base, name) == 0))
            return d;
    }
    return NULL;
}

void repo_snapshots_drop_named(json_t *list, json_t *damaged, const char *const *names, size_t n)
{
    for (size_t i = json_array_size(list); n && i-- > 0;) {
        const char *id = json_string_value(json_object_get(json_array_get(list, i), "id"));
        for (size_t k = 0; id && k < n; k++)
            if (strcmp(id, names[k]) == 0) {
                json_array_remove(list, i);
                break;
            }
    }
    for (size_t i = json_array_size(damaged); n && i-- > 0;)
        for (size_t k = 0; k < n; k++)
            if (repo_snapshot_damaged_find(damaged, names[k]) == json_array_get(damaged, i)) {
                json_array_remove(damaged, i);
                break;
            }
}

int repo_snapshot_find(struct repo *r, const char *backup_id, char name_out[65], json_t **summary,
                       struct err *e)
{
    json_t *damaged = NULL;
    json_t *list = repo_snapshot_list(r, &damaged, e);
    if (!list)
        return -1;
    size_t i;
    json_t *s;
    int rc = err_set(e, ERR_NOT_FOUND, "see `caris-backup list` for the backups there are",
                     "no backup %s in repository %s", backup_id, r->path);
    json_array_foreach(list, i, s)
    {
        const char *id = json_string_value(json_object_get(s, "id"));
        if (id && strcmp(id, backup_id) == 0) {
            snprintf(name_out, 65, "%s", json_string_value(json_object_get(s, "_file")));
            if (summary)
                *summary = json_incref(s);
            err_clear(e);
            rc = 0;
            break;
        }
    }
    if (rc != 0 && e->code == ERR_NOT_FOUND)
        repo_snapshot_damaged_id(damaged, backup_id, e);
    json_decref(damaged);
    json_decref(list);
    return rc;
}

int repo_snapshot_remove(struct repo *r, const char *name, struct err *e)
{
    return repo_snapshots_remove(r, &name, 1, e);
}

int repo_snapshots_remove(struct repo *r, const char *const *names, size_t n, struct err *e)
{
    for (size_t i = 0; i < n; i++)
        if (check_name(names[i], e) != 0)
            return -1;
    if (n == 0)
        return 0;
    /* The state record first: a removal that stops in between leaves a snapshot the record
     * calls removed and still removing (reported as such; the next prune deletes it), never
     * one the record still expects. One state object for all of them. */
    if (state_record_change(r, NULL, NULL, names, n, e) != 0)
        return err_wrap(e, "cannot remove %zu snapshot(s)", n);
    test_hold_point("CARIS_TEST_FORGET_HOLD");
    for (size_t i = 0; i < n; i++) {
        char obj[100];
        snprintf(obj, sizeof(obj), "snapshots/%s", names[i]);
        if (storage_remove(r->st, obj, e) != 0)
            return -1;
    }
    /* Then the record says the files are gone: a snapshot put back after this is "replayed"
     * (a finding), not an interrupted removal. Failing that, the removal is still done; the
     * next writer says it. */
    struct err se = ERR_INIT;
    if (state_record_change(r, NULL, NULL, NULL, 0, &se) != 0)
        repo_warn(r, "state", "the removal is done, but the state record could not say so: %s",
                  se.msg);
    return 0;
}

/* ---- entries, one at a time ------------------------------------------------------- */

void entry_iter_init(struct entry_iter *it, const struct buf *text)
{
    it->p = (const char *)text->data;
    it->end = text->len ? it->p + text->len : it->p; /* (data is NULL when empty) */
    it->index = 0;
    it->started = false;
}

/* Up to the next entry: 1 with it->p at its first byte, 0 at the end of the array, -1 with
 * ERR_DAMAGE when the text around the entries is malformed. */
static int entry_iter_advance(struct entry_iter *it, struct err *e)
{
    while (it->p < it->end && (*it->p == ' ' || *it->p == '\n' || *it->p == '\t'))
        it->p++;
    if (!it->started) {
        if (it->p >= it->end || *it->p != '[')
            return err_set(e, ERR_DAMAGE, NULL, "manifest entries are not a JSON array");
        it->p++;
        it->started = true;
    } else if (it->p < it->end && *it->p == ',') {
        it->p++;
    }
    while (it->p < it->end && (*it->p == ' ' || *it->p == '\n' || *it->p == '\t'))
        it->p++;
    if (it->p < it->end && *it->p == ']') {
        /* the end of the array must be the end of the text ("[][]" is not one array) */
        const char *q = it->p + 1;
        while (q < it->end && (*q == ' ' || *q == '\n' || *q == '\t' || *q == '\0'))
            q++;
        if (q < it->end)
            return err_set(e, ERR_DAMAGE, NULL, "manifest entries are followed by other data");
        return 0;
    }
    if (it->p >= it->end)
        return err_set(e, ERR_DAMAGE, NULL, "manifest entries are truncated");
    return 1;
}

/* The entry at it->p, parsed. */
static int entry_iter_parse(struct entry_iter *it, json_t **ent, struct err *e)
{
    /* jansson parses one value (of any type: what an entry must be is its reader's to check)
     * and reports where it stopped */
    json_error_t je;
    *ent =
        json_loadb(it->p, (size_t)(it->end - it->p), JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
    if (!*ent)
        return err_set(e, ERR_DAMAGE, NULL, "manifest entry %zu is malformed: %s", it->index,
                       je.text);
    it->p += je.position;
    it->index++;
    return 1;
}

int entry_iter_next(struct entry_iter *it, json_t **ent, struct err *e)
{
    *ent = NULL;
    int rc = entry_iter_advance(it, e);
    return rc == 1 ? entry_iter_parse(it, ent, e) : rc;
}

/* ---- an entry's chunk lists, without parsing the entry ----
 *
 * The walk over every blob the backups reference (check, prune, copy) needs only two members
 * of each entry, "chunks" and "page_hashes"; parsing whole entries with jansson was most of
 * its time. The scan below reads an entry once, checks its syntax and decodes those two lists
 * itself, but only when the entry is in the form the writer makes and nothing about it could
 * be read two ways: an object; keys without escapes, each of the two lists once; strings with
 * no \u escape, no control byte, valid UTF-8 (str_is_utf8); numbers that are plain integers
 * of at most 18 digits; nesting at most SCAN_DEPTH deep; each list an array of [64 hex digits,
 * length] or {"id", "base", "len"} items, every id valid and every length in
 * 0..REPO_MAX_BLOB. Anything else (a damaged entry, or a form the scan does not take) goes to
 * jansson and chunklist_decode_items, as before: the result is the same either way, only
 * slower. */

enum { SCAN_DEPTH = 32 };

struct scan {
    const char *p, *end;
};

static void scan_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* A string at s->p ('"'): *body and *len its bytes between the quotes; *escaped when it has
 * an escape (its bytes are then not its value). */
static bool scan_string(struct scan *s, const char **body, size_t *len, bool *escaped)
{
    s->p++;
    *body = s->p;
    *escaped = false;
    bool high = false; /* bytes >= 0x80: checked as UTF-8 (strictly) once the end is found */
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            *len = (size_t)(s->p - *body);
            s->p++;
            return !high || str_is_utf8(*body, *len);
        }
        if (c == '\\') {
            if (s->end - s->p < 2 || !strchr("\"\\/bfnrt", s->p[1]) || s->p[1] == '\0')
                return false; /* \u, or not an escape */
            *escaped = true;
            s->p += 2;
        } else if (c < 0x20) {
            return false;
        } else {
            high |= c >= 0x80;
            s->p++;
        }
    }
    return false;
}

static bool scan_delim(const struct scan *s)
{
    return s->p < s->end && strchr(" \t\n\r,]}", *s->p) && *s->p != '\0';
}

/* The start of a container at s->p: -1 when it is not open, 1 when it is empty (and passed),
 * 0 when a value follows (the space before it passed). */
static int scan_open(struct scan *s, char open, char close)
{
    if (s->p >= s->end || *s->p != open)
        return -1;
    s->p++;
    scan_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 1;
    }
    return 0;
}

/* A member's key and its colon: *esc when the key has an escape (its bytes are then not its
 * value). */
static bool scan_key(struct scan *s, const char **k, size_t *kl, bool *esc)
{
    if (s->p >= s->end || *s->p != '"' || !scan_string(s, k, kl, esc))
        return false;
    scan_ws(s);
    if (s->p >= s->end || *s->p != ':')
        return false;
    s->p++;
    scan_ws(s);
    return true;
}

/* A key without escapes (a member the scan compares by its bytes), and its colon. */
static bool scan_plain_key(struct scan *s, const char **k, size_t *kl)
{
    bool esc;
    return scan_key(s, k, kl, &esc) && !esc;
}

/* After a value in a container that ends with close: 1 at its end (passed), 0 at a comma
 * (passed, and the space after it), -1 otherwise. */
static int scan_after(struct scan *s, char close)
{
    scan_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 1;
    }
    if (s->p >= s->end || *s->p != ',')
        return -1;
    s->p++;
    scan_ws(s);
    return 0;
}

/* A plain integer: -?(0|[1-9][0-9]*), at most 18 digits, followed by a delimiter. */
static bool scan_int(struct scan *s, long long *v)
{
    bool neg = s->p < s->end && *s->p == '-';
    if (neg)
        s->p++;
    const char *d = s->p;
    long long x = 0;
    /* at most 18 digits are read (no overflow): a 19th is not a delimiter */
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9' && s->p - d < 18)
        x = x * 10 + (*s->p++ - '0');
    size_t nd = (size_t)(s->p - d);
    if (nd == 0 || (nd > 1 && *d == '0') || !scan_delim(s))
        return false;
    *v = neg ? -x : x;
    return true;
}

static bool scan_value(struct scan *s, int depth);

/* An object or an array at s->p, every value in it checked. */
static bool scan_container(struct scan *s, int depth)
{
    if (depth >= SCAN_DEPTH)
        return false;
    bool object = *s->p == '{';
    char close = object ? '}' : ']';
    if (scan_open(s, *s->p, close) != 0)
        return true; /* empty: a value is always open here */
    for (;;) {
        const char *k;
        size_t kl;
        bool esc;
        if ((object && !scan_key(s, &k, &kl, &esc)) || !scan_value(s, depth + 1))
            return false;
        int end = scan_after(s, close);
        if (end != 0)
            return end == 1;
    }
}

static bool scan_value(struct scan *s, int depth)
{
    if (s->p >= s->end)
        return false;
    const char *b;
    size_t l;
    bool esc;
    long long v;
    switch (*s->p) {
    case '{':
    case '[':
        return scan_container(s, depth);
    case '"':
        return scan_string(s, &b, &l, &esc);
    case 't':
    case 'f':
    case 'n': {
        const char *lit = *s->p == 't' ? "true" : *s->p == 'f' ? "false" : "null";
        size_t n = strlen(lit);
        if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
            return false;
        s->p += n;
        return scan_delim(s);
    }
    default:
        return scan_int(s, &v);
    }
}

/* A chunk id: a string of 64 hex digits, no escape. */
static bool scan_id(struct scan *s, uint8_t id[32])
{
    const char *b;
    size_t l;
    bool esc;
    char hex[65];
    if (s->p >= s->end || *s->p != '"' || !scan_string(s, &b, &l, &esc) || esc || l != 64)
        return false;
    memcpy(hex, b, 64);
    hex[64] = '\0';
    return cx_unhex(hex, id, 32) == 0;
}

static bool scan_len(struct scan *s, uint32_t *len)
{
    long long v;
    if (!scan_int(s, &v) || v < 0 || v > (long long)REPO_MAX_BLOB)
        return false;
    *len = (uint32_t)v;
    return true;
}

/* {"id", "base", "len"} (a page delta), each once, in any order. */
static bool scan_delta_item(struct scan *s, struct chunk_item *it)
{
    unsigned seen = 0;
    s->p++;
    scan_ws(s);
    for (;;) {
        const char *k;
        size_t kl;
        if (!scan_plain_key(s, &k, &kl))
            return false;
        unsigned bit;
        bool ok;
        if (kl == 2 && memcmp(k, "id", 2) == 0) {
            bit = 1;
            ok = scan_id(s, it->id);
        } else if (kl == 4 && memcmp(k, "base", 4) == 0) {
            bit = 2;
            ok = scan_id(s, it->base);
        } else if (kl == 3 && memcmp(k, "len", 3) == 0) {
            bit = 4;
            ok = scan_len(s, &it->len);
        } else {
            return false;
        }
        if (!ok || (seen & bit))
            return false;
        seen |= bit;
        int end = scan_after(s, '}');
        if (end != 0) {
            it->delta = true;
            return end == 1 && seen == 7;
        }
    }
}

/* A chunk list: an array of [id, len] or delta items, into *items (the caller's). */
static bool scan_chunklist(struct scan *s, struct chunk_item **items, size_t *n)
{
    size_t cap = 0;
    *items = NULL;
    *n = 0;
    int open = scan_open(s, '[', ']');
    if (open != 0)
        return open == 1;
    for (;;) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 4;
            *items = xrealloc(*items, xsize(cap, sizeof(**items), 0));
        }
        struct chunk_item *it = &(*items)[*n];
        memset(it, 0, sizeof(*it));
        bool ok;
        if (s->p < s->end && *s->p == '[') {
            s->p++;
            scan_ws(s);
            ok = scan_id(s, it->id);
            scan_ws(s);
            ok = ok && s->p < s->end && *s->p == ',';
            if (ok) {
                s->p++;
                scan_ws(s);
                ok = scan_len(s, &it->len);
                scan_ws(s);
                ok = ok && s->p < s->end && *s->p == ']';
                s->p += ok;
            }
        } else {
            ok = s->p < s->end && *s->p == '{' && scan_delta_item(s, it);
        }
        if (!ok)
            goto fail;
        (*n)++;
        int end = scan_after(s, ']');
        if (end == 1)
            return true;
        if (end < 0)
            goto fail;
    }
fail:
    free(*items);
    *items = NULL;
    *n = 0;
    return false;
}

/* The entry at p as the fast scan takes it, or false (then jansson reads it). */
static bool scan_entry(struct scan *s, struct entry_refs *out)
{
    bool have_chunks = false, have_pages = false;
    int open = scan_open(s, '{', '}');
    if (open != 0)
        return open == 1;
    for (;;) {
        const char *k;
        size_t kl;
        if (!scan_plain_key(s, &k, &kl))
            return false;
        bool ok;
        if (kl == 6 && memcmp(k, "chunks", 6) == 0) {
            ok = !have_chunks && scan_chunklist(s, &out->chunks, &out->nchunks);
            have_chunks = true;
        } else if (kl == 11 && memcmp(k, "page_hashes", 11) == 0) {
            ok = !have_pages && scan_chunklist(s, &out->pages, &out->npages);
            have_pages = true;
        } else {
            ok = scan_value(s, 1);
        }
        int end = ok ? scan_after(s, '}') : -1;
        if (end != 0)
            return end == 1;
    }
}

void entry_refs_free(struct entry_refs *r)
{
    free(r->chunks);
    free(r->pages);
    memset(r, 0, sizeof(*r));
}

int entry_iter_refs(struct entry_iter *it, struct entry_refs *out, struct err *e)
{
    memset(out, 0, sizeof(*out));
    int rc = entry_iter_advance(it, e);
    if (rc != 1)
        return rc;
    struct scan s = {.p = it->p, .end = it->end};
    if (scan_entry(&s, out)) {
        it->p = s.p;
        it->index++;
        out->scanned = true;
        return 1;
    }
    entry_refs_free(out);
    json_t *ent;
    if (entry_iter_parse(it, &ent, e) != 1)
        return -1;
    out->chunks_bad =
        chunklist_decode_items(json_object_get(ent, "chunks"), &out->chunks, &out->nchunks) != 0;
    out->pages_bad =
        chunklist_decode_items(json_object_get(ent, "page_hashes"), &out->pages, &out->npages) != 0;
    json_decref(ent);
    return 1;
}

/* ---- records ------------------------------------------------------------------------- */

static int check_kind(const char *kind, struct err *e)
{
    bool ok = *kind != '\0' && strlen(kind) < 40;
    for (const char *p = kind; *p && ok; p++)
        ok = (*p >= 'a' && *p <= 'z') || *p == '-';
    return ok ? 0 : err_set(e, ERR_USAGE, NULL, "invalid record kind '%.40s'", kind);
}

int repo_record_add(struct repo *r, const char *kind, json_t *record, struct err *e)
{
    return repo_record_add_named(r, kind, record, NULL, e);
}

int repo_record_add_named(struct repo *r, const char *kind, json_t *record, char name_out[65],
                          struct err *e)
{
    if (check_kind(kind, e) != 0)
        return -1;
    char *text = json_dumps(record, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return err_set(e, ERR_FAILURE, NULL, "cannot serialise a %s record", kind);
    char *dir = xasprintf("records/%s", kind);
    int rc = container_put(r, 'R', dir, text, strlen(text), name_out, NULL, e);
    free(dir);
    free(text);
    return rc;
}

struct record_ctx {
    struct repo *r;
    json_t *out, *damaged;
    bool named;      /* each record gets "_object": its object name */
    json_t *known;   /* objects not to read again (NULL: none) */
    json_t *present; /* every object name listed (NULL: not wanted) */
    json_t *names;   /* object names of the files read, when wanted (compaction) */
    bool compacted;  /* a compacted record was among them */
};

/* A compacted record (see record_compact.c) is unfolded into the records it holds. */
static void record_take(struct record_ctx *c, json_t *j)
{
    json_t *held = json_object_get(j, RECORD_COMPACTED_KEY);
    if (!json_is_array(held)) {
        json_array_append_new(c->out, j);
        return;
    }
    c->compacted = true;
    size_t i;
    json_t *x;
    json_array_foreach(held, i, x) if (json_is_object(x)) json_array_append(c->out, x);
    json_decref(j);
}

static int record_one(void *ctx, const char *name, uint64_t size, struct err *e)
{
    struct record_ctx *c = ctx;
    struct buf raw = {0}, plain = {0};
    struct err re = ERR_INIT;
    json_t *j = NULL;
    (void)size;
    if (c->present)
        json_array_append_new(c->present, json_string(name));
    if (c->known && json_object_get(c->known, name))
        return 0;
    if (storage_get(c->r->st, name, RECORD_MAX_FILE, &raw, &re) != 0 && re.code != ERR_DAMAGE) {
        *e = re;
        buf_free(&raw);
        return -1;
    }
    if (!err_is_set(&re) && container_open(c->r, 'R', raw.data, raw.len, &plain, &re) == 0)
        j = json_loadb((const char *)plain.data, plain.len, 0, NULL);
    if (j && json_is_object(j)) {
        if (c->named)
            json_object_set_new(j, "_object", json_string(name));
        record_take(c, j);
        if (c->names)
            json_array_append_new(c->names, json_string(name));
    } else {
        json_decref(j);
        json_array_append_new(c->damaged, json_pack("{s:s, s:s}", "object", name, "error",
                                                    err_is_set(&re) ? re.msg : "not a record"));
    }
    buf_free(&raw);
    buf_free(&plain);
    return 0;
}

/* Drops records equal to an earlier one (same JSON, keys sorted). Only needed when a
 * compacted record was read: a compaction that stopped between writing the compacted record
 * and deleting the files it folded leaves each of their records twice. */
static json_t *record_dedupe(json_t *recs)
{
    json_t *seen = json_object(), *out = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(recs, i, x)
    {
        char *text = json_dumps(x, JSON_COMPACT | JSON_SORT_KEYS);
        if (text && !json_object_get(seen, text)) {
            json_object_set_new(seen, text, json_true());
            json_array_append(out, x);
        }
        free(text);
    }
    json_decref(seen);
    json_decref(recs);
    return out;
}

static json_t *record_list(struct repo *r, const char *kind, bool named, json_t *known,
                           json_t **present, json_t **names, json_t **damaged, struct err *e)
{
    if (check_kind(kind, e) != 0)
        return NULL;
    char dir[64];
    snprintf(dir, sizeof(dir), "records/%s", kind);
    struct record_ctx c = {r,
                           json_array(),
                           json_array(),
                           named,
                           known,
                           present ? json_array() : NULL,
                           names ? json_array() : NULL,
                           false};
    if (storage_list(r->st, dir, record_one, &c, e) != 0) {
        json_decref(c.out);
        json_decref(c.damaged);
        json_decref(c.present);
        json_decref(c.names);
        return NULL;
    }
    if (present)
        *present = c.present;
    if (c.compacted)
        c.out = record_dedupe(c.out);
    if (damaged)
        *damaged = c.damaged;
    else
        json_decref(c.damaged);
    if (names)
        *names = c.names;
    return c.out;
}

json_t *repo_record_list(struct repo *r, const char *kind, json_t **damaged, struct err *e)
{
    return record_list(r, kind, false, NULL, NULL, NULL, damaged, e);
}

json_t *repo_record_list_named(struct repo *r, const char *kind, json_t **damaged, struct err *e)
{
    return record_list(r, kind, true, NULL, NULL, NULL, damaged, e);
}

json_t *repo_record_list_except(struct repo *r, const char *kind, json_t *known, json_t **present,
                                json_t **damaged, struct err *e)
{
    return record_list(r, kind, true, known, present, NULL, damaged, e);
}

int repo_record_withdraw(struct repo *r, const char *kind, const char *name, struct err *e)
{
    if (check_kind(kind, e) != 0)
        return -1;
    char *object = xasprintf("records/%s/%s", kind, name);
    int rc = storage_remove(r->st, object, e);
    free(object);
    return rc;
}

int repo_record_remove(struct repo *r, const char *object, struct err *e)
{
    if (!r->lock || !r->lock->exclusive)
        return err_set(e, ERR_LOCKED, "take the exclusive lock first (repo_lock)",
                       "removing a record needs the exclusive lock of %s", r->path);
    if (!object || strncmp(object, "records/", 8) != 0 || strstr(object, ".."))
        return err_set(e, ERR_USAGE, NULL, "'%s' is not a record", object ? object : "(null)");
    return storage_remove(r->st, object, e);
}

json_t *record_list_files(struct repo *r, const char *kind, json_t **damaged, json_t **names,
                          struct err *e)
{
    return record_list(r, kind, false, NULL, NULL, names, damaged, e);
}

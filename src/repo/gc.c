/* Garbage collection: the walk over every blob the backups reference (shared with check),
 * and prune, which removes what nothing references. Crash safety comes from the order of
 * its durable steps (new packs -> new index -> old index files deleted -> old packs
 * deleted): at every instant every referenced blob is listed by some index file (or found
 * through its pack's trailer) in a pack that exists. */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "caris/op.h"
#include "caris/pipeline.h"
#include "caris/pool.h"

/* ---- the walk ------------------------------------------------------------------------ */

/* What the walk of one entries stream called, kept to be replayed for the next snapshot that
 * shares it (a backup whose files did not change reuses its parent's stream): the same calls,
 * in the same order, without reading and parsing the stream again. */
struct walk_rec {
    struct walk_call {
        uint8_t id[32];
        long entry;
        bool null_id;
    } * v;
    size_t n, cap;
    bool on;       /* recording, or holding a whole walk to replay */
    bool given_up; /* went over WALK_REC_MAX: the group's later snapshots read the stream */
};
/* calls kept at most (48 MiB) */
#define WALK_REC_MAX ((size_t)1 << 20)
/* Only streams whose calls fit are grouped: each call is a chunk id of 64 hex digits in the
 * text, so a stream of n bytes makes at most n / 66 of them (short of malformed entries, which
 * only cost a read again). */
#define WALK_GROUP_MAX_BYTES ((uint64_t)WALK_REC_MAX * 66)

/* A malformed chunk list is one reference to nothing (id NULL): check reports it, prune
 * refuses to run, as restore would refuse the entry. */
static void walk_call(const struct repo_ref_walk *w, size_t snap, const uint8_t *id, long ei,
                      bool meta, struct walk_rec *rec)
{
    w->blob(w->ctx, snap, id, ei, meta);
    if (!rec || !rec->on)
        return;
    if (rec->n == WALK_REC_MAX) {
        rec->on = false;
        rec->given_up = true;
        return;
    }
    if (rec->n == rec->cap) {
        rec->cap = rec->cap ? rec->cap * 2 : 4096;
        rec->v = xrealloc(rec->v, xsize(rec->cap, sizeof(*rec->v), 0));
    }
    struct walk_call *c = &rec->v[rec->n++];
    c->null_id = id == NULL;
    if (id)
        memcpy(c->id, id, 32);
    c->entry = ei;
}

static void walk_blob(struct repo *r, const uint8_t id[32], const struct repo_ref_walk *w,
                      size_t snap, bool meta, struct walk_rec *rec)
{
    pthread_mutex_lock(&r->mu);
    long ei = repo_lookup_locked(r, id);
    if (ei >= 0 && !PACK_IS_REAL(repo_entry(r, (size_t)ei)->pack))
        ei = -1;
    pthread_mutex_unlock(&r->mu);
    walk_call(w, snap, id, ei, meta, rec);
}

/* A page delta needs its base block as much as itself (docs/REPOSITORY-FORMAT.md "Page
 * deltas"). */
static void walk_items(struct repo *r, const struct chunk_item *refs, size_t n, bool bad,
                       const struct repo_ref_walk *w, size_t snap, bool meta, struct walk_rec *rec)
{
    if (bad) {
        walk_call(w, snap, NULL, -1, meta, rec);
        return;
    }
    for (size_t m = 0; m < n; m++) {
        walk_blob(r, refs[m].id, w, snap, meta, rec);
        if (refs[m].delta)
            walk_blob(r, refs[m].base, w, snap, meta, rec);
    }
}

static void walk_chunks(struct repo *r, json_t *chunks, const struct repo_ref_walk *w, size_t snap,
                        bool meta, struct walk_rec *rec)
{
    struct chunk_item *refs;
    size_t n;
    bool bad = chunklist_decode_items(chunks, &refs, &n) != 0;
    walk_items(r, refs, n, bad, w, snap, meta, rec);
    free(refs);
}

/* One snapshot of the list: why its entries' reference cannot be read, or what identifies the
 * stream it names; and the next snapshot of the list that names the same stream (SIZE_MAX:
 * none). The references themselves are not kept (entries streams are cut like dumps, so a
 * 20 MB stream's chunk list has some 1,300 items): a group's first snapshot reads its own
 * again when its turn comes. */
struct walk_snap {
    json_t *s;      /* the list's */
    struct err *le; /* NULL: the reference could be read */
    uint8_t key[32];
    bool keyed;    /* key is set: the stream may be shared */
    bool follower; /* not the first of its group */
    size_t next;
};

struct walk {
    struct repo *r;
    const struct repo_ref_walk *w;
    struct walk_snap *snaps;
    size_t n, done, groups;
    pthread_mutex_t mu;
    bool cancelled;
    bool here; /* entries streams loaded by the walking thread itself (the walk is parallel) */
};

struct walk_job {
    struct walk *wk;
    size_t i;
};

static int load_ref(struct repo *r, json_t *s, json_t **ref, struct err *e)
{
    const char *file = json_string_value(json_object_get(s, "_file"));
    json_t *summary = NULL;
    *ref = NULL;
    if (!file)
        return err_set(e, ERR_DAMAGE, NULL, "snapshot without an object name");
    int rc = snapshot_load_parts(r, file, &summary, ref, NULL, e);
    json_decref(summary);
    if (rc == 0 && !json_is_object(*ref))
        rc = err_set(e, ERR_DAMAGE, NULL, "snapshot %s: malformed entries reference", file);
    if (rc != 0) {
        json_decref(*ref);
        *ref = NULL;
    }
    return rc;
}

/* The identity of the stream a reference names: its SHA-256 and its chunk list as decoded
 * (what the walk and the stream's restore use), hashed. */
static void ref_key(json_t *ref, struct walk_snap *ws)
{
    const char *sha = json_string_value(json_object_get(ref, "sha256"));
    struct chunk_item *items;
    size_t n;
    if (!sha || chunklist_decode_items(json_object_get(ref, "chunks"), &items, &n) != 0)
        return;
    uint64_t bytes = 0;
    struct cx_sha256 *h = cx_sha256_new();
    cx_sha256_update(h, sha, strlen(sha) + 1);
    for (size_t k = 0; k < n; k++) {
        uint8_t len[4], delta = items[k].delta;
        store_u32le(len, items[k].len);
        cx_sha256_update(h, items[k].id, 32);
        cx_sha256_update(h, len, 4);
        cx_sha256_update(h, &delta, 1);
        if (delta)
            cx_sha256_update(h, items[k].base, 32);
        bytes += items[k].len;
    }
    cx_sha256_final(h, ws->key);
    cx_sha256_free(h);
    free(items);
    ws->keyed = bytes <= WALK_GROUP_MAX_BYTES;
}

static void load_ref_job(void *arg, int worker)
{
    (void)worker;
    struct walk_job *j = arg;
    struct walk_snap *ws = &j->wk->snaps[j->i];
    json_t *ref = NULL;
    struct err le = ERR_INIT;
    if (caris_op_cancelled(j->wk->w->op))
        __atomic_store_n(&j->wk->cancelled, true, __ATOMIC_RELAXED);
    else if (load_ref(j->wk->r, ws->s, &ref, &le) != 0)
        *(ws->le = xmalloc(sizeof(le))) = le;
    else
        ref_key(ref, ws);
    json_decref(ref);
    free(j);
}

/* One snapshot: its entries stream's chunks, then every entry's, one entry at a time (or the
 * calls recorded from the group's previous snapshot). *gref is the group's reference, read
 * once (the same chunks for every member); rec records when a later snapshot shares the
 * stream. */
static void walk_member(struct walk *wk, size_t i, struct walk_rec *rec, json_t **gref)
{
    const struct repo_ref_walk *w = wk->w;
    struct walk_snap *ws = &wk->snaps[i];
    struct err le = ERR_INIT;
    json_t *ref = NULL;
    if (ws->le)
        le = *ws->le;
    else if (*gref)
        ref = json_incref(*gref);
    else if (load_ref(wk->r, ws->s, &ref, &le) == 0 && ws->next != SIZE_MAX)
        *gref = json_incref(ref);
    if (ref) {
        walk_chunks(wk->r, json_object_get(ref, "chunks"), w, i, true, NULL);
        if (rec->on) {
            /* the group's previous snapshot walked this same stream without an error */
            for (size_t k = 0; k < rec->n; k++)
                w->blob(w->ctx, i, rec->v[k].null_id ? NULL : rec->v[k].id, rec->v[k].entry, false);
        } else {
            rec->n = 0;
            rec->on = ws->next != SIZE_MAX && !rec->given_up;
            struct buf text = {0};
            const char *file = json_string_value(json_object_get(ws->s, "_file"));
            if (snapshot_ref_text(wk->r, ref, file, wk->here, &text, &le) == 0) {
                /* one entry at a time: memory holds the entries' text, not all of them parsed */
                struct entry_iter it;
                struct entry_refs er;
                entry_iter_init(&it, &text);
                while (entry_iter_refs(&it, &er, &le) == 1) {
                    walk_items(wk->r, er.chunks, er.nchunks, er.chunks_bad, w, i, false, rec);
                    /* a relation file's page hashes (physical backups): what the next
                     * incremental compares with */
                    walk_items(wk->r, er.pages, er.npages, er.pages_bad, w, i, false, rec);
                    entry_refs_free(&er);
                }
            }
            buf_free(&text);
            /* only a whole, error-free walk is replayed: else the next one reads it again */
            if (err_is_set(&le))
                rec->on = false;
        }
        json_decref(ref);
    }
    if (w->snapshot_end)
        w->snapshot_end(w->ctx, i, ws->s, err_is_set(&le) ? &le : NULL);
}

/* A group: the snapshots that share one entries stream, in list order, on one thread. */
static void walk_group_job(void *arg, int worker)
{
    (void)worker;
    struct walk_job *j = arg;
    struct walk *wk = j->wk;
    struct walk_rec rec = {0};
    json_t *gref = NULL;
    for (size_t i = j->i; i != SIZE_MAX; i = wk->snaps[i].next) {
        if (caris_op_cancelled(wk->w->op)) {
            __atomic_store_n(&wk->cancelled, true, __ATOMIC_RELAXED);
            break;
        }
        walk_member(wk, i, &rec, &gref);
        pthread_mutex_lock(&wk->mu);
        caris_op_progress(wk->w->op, "mark", ++wk->done, wk->n);
        pthread_mutex_unlock(&wk->mu);
    }
    json_decref(gref);
    free(rec.v);
    free(j);
}

static int cmp_by_key(const void *a, const void *b, void *ctx)
{
    const struct walk_snap *v = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = memcmp(v[x].key, v[y].key, 32);
    return c ? c : (x > y) - (x < y);
}

/* Links each snapshot to the next one (list order) with the same stream key; counts the
 * groups (a snapshot alone is one). */
static void walk_group(struct walk *wk)
{
    size_t *ord = xcalloc(wk->n ? wk->n : 1, sizeof(size_t)), m = 0;
    for (size_t i = 0; i < wk->n; i++)
        if (wk->snaps[i].keyed)
            ord[m++] = i;
    qsort_r(ord, m, sizeof(size_t), cmp_by_key, wk->snaps);
    for (size_t a = 1; a < m; a++) {
        struct walk_snap *prev = &wk->snaps[ord[a - 1]], *cur = &wk->snaps[ord[a]];
        if (memcmp(prev->key, cur->key, 32) == 0) {
            prev->next = ord[a];
            cur->follower = true;
        }
    }
    free(ord);
    wk->groups = 0;
    for (size_t i = 0; i < wk->n; i++)
        wk->groups += !wk->snaps[i].follower;
}

int repo_walk_references(struct repo *r, json_t *list, const struct repo_ref_walk *w, struct err *e)
{
    struct walk wk = {.r = r, .w = w, .n = json_array_size(list)};
    pthread_mutex_init(&wk.mu, NULL);
    wk.snaps = xcalloc(wk.n ? wk.n : 1, sizeof(*wk.snaps));
    for (size_t i = 0; i < wk.n; i++) {
        wk.snaps[i].s = json_array_get(list, i);
        wk.snaps[i].next = SIZE_MAX;
    }
    caris_op_progress(w->op, "mark", 0, wk.n);
    /* snapshots on several threads (no more than there are): parsing the entries is most of
     * the walk */
    int threads = w->threads > 1 ? w->threads : 1;
    if ((size_t)threads > wk.n)
        threads = wk.n > 1 ? (int)wk.n : 1;
    struct pool *pool = threads > 1 ? pool_new(threads, (size_t)threads) : NULL;
    for (size_t i = 0; i < wk.n && !__atomic_load_n(&wk.cancelled, __ATOMIC_RELAXED); i++) {
        struct walk_job *j = xmalloc(sizeof(*j));
        *j = (struct walk_job){&wk, i};
        pool_submit(pool, load_ref_job, j);
    }
    pool_wait(pool);
    walk_group(&wk);
    /* several streams at once: each is loaded by its own thread, not by a pool of its own */
    wk.here = pool && wk.groups > 1;
    for (size_t i = 0; i < wk.n && !__atomic_load_n(&wk.cancelled, __ATOMIC_RELAXED); i++) {
        if (wk.snaps[i].follower)
            continue;
        struct walk_job *j = xmalloc(sizeof(*j));
        *j = (struct walk_job){&wk, i};
        pool_submit(pool, walk_group_job, j);
    }
    pool_free(pool);
    for (size_t i = 0; i < wk.n; i++)
        free(wk.snaps[i].le);
    free(wk.snaps);
    pthread_mutex_destroy(&wk.mu);
    if (__atomic_load_n(&wk.cancelled, __ATOMIC_RELAXED))
        return err_set(e, ERR_FAILURE, NULL, "cancelled");
    return 0;
}

/* Records of kinds that keep data (the WAL archive's "wal" records and its streamed partials,
 * "walstream": caris/wal.h) reference the chunks of their "chunks" list. A record that cannot
 * be read makes what it needs unknown. */
static const char *const DATA_RECORD_KINDS[] = {"wal", "walstream", NULL};

int repo_walk_record_references(struct repo *r, const struct repo_ref_walk *w, struct err *e)
{
    for (size_t k = 0; DATA_RECORD_KINDS[k]; k++) {
        json_t *damaged = NULL;
        json_t *recs = repo_record_list(r, DATA_RECORD_KINDS[k], &damaged, e);
        if (!recs)
            return -1;
        if (json_array_size(damaged)) {
            err_set(e, ERR_DAMAGE, "run `caris-backup check`",
                    "%s record %s cannot be read (%s), so what it needs is unknown",
                    DATA_RECORD_KINDS[k],
                    json_string_value(json_object_get(json_array_get(damaged, 0), "object")),
                    json_string_value(json_object_get(json_array_get(damaged, 0), "error")));
            json_decref(recs);
            json_decref(damaged);
            return -1;
        }
        json_decref(damaged);
        size_t i;
        json_t *x;
        json_array_foreach(recs, i, x)
        {
            if (caris_op_cancelled(w->op)) {
                json_decref(recs);
                return err_set(e, ERR_FAILURE, NULL, "cancelled");
            }
            walk_chunks(r, json_object_get(x, "chunks"), w, SIZE_MAX, false, NULL);
        }
        json_decref(recs);
    }
    return 0;
}

/* ---- prune --------------------------------------------------------------------------- */

/* Whether pack p was missing when the index was loaded (pack_missing_at_open: its entries
 * were left out). */
static bool missing_at_open(struct repo *r, size_t p)
{
    bool found = false;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; !found && i + 32 <= r->flagged.len; i += 32)
        found = memcmp(r->flagged.data + i, r->packs[p].id, 32) == 0;
    pthread_mutex_unlock(&r->mu);
    return found;
}

/* Test-only fault injection: with CARIS_TEST_PRUNE_CRASH_AT=k in the environment, prune
 * ends the process abruptly (as kill -9 would) right after its k-th durable step (an object
 * written or deleted), so that tests can stop it at every step in turn. */
static long crash_at = -2;
static long crash_steps;

static void durable_step(void)
{
    if (crash_at == -2) {
        const char *v = getenv("CARIS_TEST_PRUNE_CRASH_AT");
        crash_at = v && *v ? strtol(v, NULL, 10) : -1;
    }
    crash_steps++;
    if (crash_at > 0 && crash_steps == crash_at)
        _exit(137);
}

struct packstat {
    uint64_t size;      /* on disk; 0 when missing */
    uint64_t used;      /* ciphertext bytes of referenced blobs placed in it */
    uint64_t used_meta; /* of those, the metadata blobs' (a repack writes them to packs of
                           their own) */
    uint64_t stored;    /* ciphertext bytes of all blobs placed in it */
    uint32_t nblobs;    /* index entries placed in it */
    uint32_t nused;
    enum { P_KEEP, P_DELETE, P_REPACK, P_DROP } fate;
    bool on_disk;
    /* damaged: holds a copy records/bad-blob names: rewritten whatever it wastes; blocked: a
     * referenced blob of it is such a copy: every referenced blob is opened before the
     * rewrite, which is given up (the pack kept) if one fails */
    bool damaged, blocked;
};

struct mark {
    struct repo *r;
    uint64_t *bits, *meta; /* one bit per index entry: referenced; referenced as metadata */
    uint64_t missing, malformed;
    json_t *unreadable; /* snapshots whose blobs are unknown */
    pthread_mutex_t mu; /* unreadable */
};

/* Called from several threads at once (the walk's threads): atomic updates only. */
static void mark_blob(void *ctx, size_t snap, const uint8_t *id, long entry, bool meta)
{
    (void)snap;
    struct mark *m = ctx;
    if (!id) {
        __atomic_fetch_add(&m->malformed, 1, __ATOMIC_RELAXED);
        return;
    }
    if (entry < 0) {
        __atomic_fetch_add(&m->missing, 1, __ATOMIC_RELAXED);
        return;
    }
    uint64_t b = 1ull << ((size_t)entry % 64);
    __atomic_fetch_or(&m->bits[(size_t)entry / 64], b, __ATOMIC_RELAXED);
    if (meta)
        __atomic_fetch_or(&m->meta[(size_t)entry / 64], b, __ATOMIC_RELAXED);
}

static void mark_end(void *ctx, size_t snap, json_t *summary, const struct err *le)
{
    (void)snap;
    struct mark *m = ctx;
    if (!le)
        return;
    pthread_mutex_lock(&m->mu);
    json_array_append_new(m->unreadable,
                          json_pack("{s:s, s:s}", "backup",
                                    json_string_value(json_object_get(summary, "id")) ?: "?",
                                    "error", le->msg));
    pthread_mutex_unlock(&m->mu);
}

static bool bit(const uint64_t *b, size_t i)
{
    return (b[i / 64] >> (i % 64)) & 1;
}

struct sizes {
    struct repo *r;
    struct packstat *ps;
    uint64_t total, unknown_packs;
};

static int size_one(void *ctx, const char *name, uint64_t size, struct err *e)
{
    (void)e;
    struct sizes *z = ctx;
    z->total += size;
    if (!z->ps || strncmp(name, "data/", 5) != 0)
        return 0;
    const char *base = strrchr(name, '/') + 1;
    uint8_t id[32];
    if (strlen(base) != 64 || cx_unhex(base, id, 32) != 0)
        return 0;
    if (!pack_name_parse(name, id)) { /* in another directory: not the pack reads find */
        z->unknown_packs++;
        return 0;
    }
    pthread_mutex_lock(&z->r->mu);
    long p = repo_find_pack_locked(z->r, id);
    pthread_mutex_unlock(&z->r->mu);
    if (p < 0) {
        z->unknown_packs++;
        return 0;
    }
    z->ps[p].size = size;
    z->ps[p].on_disk = true;
    return 0;
}

/* Bytes of the repository: packs, index files, snapshots, key slots, config and marker
 * (not locks, which come and go, nor records). ps: also record each known pack's size. */
static int repo_bytes(struct repo *r, struct packstat *ps, uint64_t *total, struct err *e)
{
    static const char *const dirs[] = {"data",  "index",   "snapshots", "keys",
                                       "state", "records", NULL};
    static const char *const files[] = {"config", "caris-repository", NULL};
    struct sizes z = {r, ps, 0, 0};
    for (size_t i = 0; dirs[i]; i++)
        if (storage_list(r->st, dirs[i], size_one, &z, e) != 0)
            return -1;
    for (size_t i = 0; files[i]; i++) {
        uint64_t size;
        if (storage_size(r->st, files[i], &size, e) != 0)
            return -1;
        z.total += size;
    }
    *total = z.total;
    return 0;
}

/* What crashed operations left (temporary files of interrupted writes, stale locks and
 * claims): removed by repo_leftovers_remove, which needs the exclusive lock prune holds; a dry
 * run counts what it would remove (it counted every temporary file and no stale lock or claim:
 * "found: 1", then "removed: 3"). */
static int prune_remove_leftovers(struct repo *r, bool dry_run, uint64_t *removed, struct err *e)
{
    json_t *l = NULL;
    int rc;
    if (dry_run) {
        l = repo_leftovers_removable(r, e);
        rc = l ? 0 : -1;
    } else {
        rc = repo_leftovers_remove(r, &l, e);
        if (rc == 0 && json_array_size(l))
            durable_step();
    }
    if (rc == 0)
        *removed += json_array_size(l);
    json_decref(l);
    return rc;
}

/* Entry ei when it is referenced (marked). */
static bool marked_entry(struct repo *r, const struct mark *m, uint32_t ei, struct ientry *en)
{
    if (!bit(m->bits, ei))
        return false;
    pthread_mutex_lock(&r->mu);
    *en = *repo_entry(r, ei);
    pthread_mutex_unlock(&r->mu);
    return true;
}

/* Opens a blob of pack p (read whole into data) for the repack; its id is checked: a damaged
 * blob must not be copied as if it were sound. One past the pack's end (a truncated pack) is
 * noted damaged too (bad_blob_note). */
static int repack_open(struct repo *r, uint32_t p, const struct ientry *en, const uint8_t key[32],
                       const struct buf *data, const char *name, struct buf *out, struct err *e)
{
    if ((uint64_t)en->off + en->clen > data->len) {
        bad_blob_note(r, p, en->id);
        return err_set(e, ERR_DAMAGE, "run `caris-backup check --read-data`",
                       "pack %s: index entry points past its end", name);
    }
    return blob_decode(r, en->id, en, key, data->data + en->off, name, true, out, e);
}

/* Rewrites the referenced blobs of pack p through w. Each blob's entry is handed to the
 * writer (marked abandoned, which repo_writer_add takes over), so the writer stores it again
 * in a new pack with a fresh salt, and the entry then points there. */
static int repack_one(struct repo *r, struct repo_writer *w, uint32_t p, const uint32_t *by_pack,
                      size_t from, size_t to, const struct mark *m, const struct packstat *ps,
                      struct buf *data, struct repo_prune_stats *st, struct err *e)
{
    char name[80];
    pack_object_name(r->packs[p].id, name, sizeof(name));
    if (ps->size > (uint64_t)REPO_PACK_TARGET * 8)
        return err_set(e, ERR_DAMAGE, "run `caris-backup check --read-data`",
                       "pack %s is implausibly large (%llu bytes)", name,
                       (unsigned long long)ps->size);
    data->len = 0;
    buf_reserve(data, (size_t)ps->size);
    if (storage_read_at(r->st, name, 0, data->data, (size_t)ps->size, e) != 0)
        return -1;
    data->len = (size_t)ps->size;
    uint8_t key[32];
    if (data->len < PACK_HEADER_LEN || pack_version(data->data) == 0 ||
        pack_derive_key(r, data->data + 8, key, e) != 0) {
        /* None of its blobs opens: each referenced one is noted (the prune records it, the next
         * backup stores it again), and a pack with damage known in it is kept, as one whose
         * referenced blob does not open is (below); every prune failed on it before, until the
         * backups that need those blobs were forgotten. */
        for (size_t k = from; k < to; k++) {
            struct ientry en;
            if (marked_entry(r, m, by_pack[k], &en))
                bad_blob_note(r, p, en.id);
        }
        if (ps->damaged || ps->blocked) {
            err_clear(e);
            return 1;
        }
        return err_set(e, ERR_DAMAGE, "run `caris-backup check --read-data`", "pack %s: bad header",
                       name);
    }
    struct buf out = {0};
    int rc = 0;
    if (ps->damaged || ps->blocked) {
        /* A pack with damage recorded in it: every referenced blob must open before any moves.
         * One that does not stays where it is with the pack (noted, so the prune records it
         * and the next backup stores it again); the prune goes on. (All open when the pack
         * was put back from a copy: it is rewritten, and its records of damage go.) */
        for (size_t k = from; k < to && rc == 0; k++) {
            struct ientry en;
            struct err be = ERR_INIT;
            if (marked_entry(r, m, by_pack[k], &en) &&
                repack_open(r, p, &en, key, data, name, &out, &be) != 0)
                rc = 1;
        }
        if (rc != 0) {
            cx_wipe(key, sizeof(key));
            if (out.data)
                cx_wipe(out.data, out.cap);
            buf_free(&out);
            return rc;
        }
    }
    int data_slot = 0, meta_slot = repo_writer_meta_slot(w);
    for (size_t k = from; k < to && rc == 0; k++) {
        uint32_t ei = by_pack[k];
        struct ientry en;
        if (!marked_entry(r, m, ei, &en))
            continue;
        if (repack_open(r, p, &en, key, data, name, &out, e) != 0) {
            err_wrap(e, "cannot repack");
            rc = -1;
            break;
        }
        pthread_mutex_lock(&r->mu);
        repo_entry(r, ei)->pack = PACK_ABANDONED;
        pthread_mutex_unlock(&r->mu);
        if (repo_writer_add(w, bit(m->meta, ei) ? meta_slot : data_slot, en.id, out.data, out.len,
                            e) < 0) {
            rc = -1;
            break;
        }
        st->blobs_repacked++;
    }
    cx_wipe(key, sizeof(key));
    if (out.data)
        cx_wipe(out.data, out.cap);
    buf_free(&out);
    return rc;
}

/* Index records of the kept packs, written as index files of at most MAX_INDEX_BLOBS blobs
 * (a few MiB each: memory stays bounded by the in-memory index). */
#define MAX_INDEX_BLOBS (1u << 17)

/* Other copies (r->dups) in pack order, then id order. */
static int cmp_dup(const void *a, const void *b)
{
    const struct ientry *x = a, *y = b;
    if (x->pack != y->pack)
        return x->pack < y->pack ? -1 : 1;
    return memcmp(x->id, y->id, 32);
}

/* r->dups sorted (cmp_dup), each copy once (an index file and a trailer, or two index files,
 * may list the same one). Under r->mu. */
static void dups_sort_unique(struct repo *r)
{
    if (r->ndups == 0)
        return;
    qsort(r->dups, r->ndups, sizeof(*r->dups), cmp_dup);
    size_t n = 1;
    for (size_t i = 1; i < r->ndups; i++)
        if (cmp_dup(&r->dups[i], &r->dups[n - 1]) != 0)
            r->dups[n++] = r->dups[i];
    r->ndups = n;
}

static int write_new_index(struct repo *r, const struct packstat *ps, size_t npacks,
                           const uint32_t *by_pack, const size_t *first, char ***names,
                           size_t *nnames, struct err *e)
{
    struct buf rec = {0};
    uint32_t nrec = 0, nblobs = 0;
    int rc = 0;
    size_t di = 0; /* r->dups (sorted by pack): the other copies each kept pack holds */
    for (size_t p = 0; p <= npacks && rc == 0; p++) {
        bool last = p == npacks;
        while (!last && di < r->ndups && r->dups[di].pack < p)
            di++;
        size_t dn = 0;
        while (!last && di + dn < r->ndups && r->dups[di + dn].pack == p)
            dn++;
        if (!last && ps[p].fate != P_KEEP)
            continue;
        size_t cnt = last ? 0 : first[p + 1] - first[p] + dn;
        if (nrec && (last || nblobs + cnt > MAX_INDEX_BLOBS)) {
            char name[80];
            uint64_t bytes;
            if (index_file_write(r, rec.data, rec.len, nrec, name, &bytes, e) != 0) {
                rc = -1;
                break;
            }
            durable_step();
            *names = xrealloc(*names, xsize(*nnames + 1, sizeof(char *), 0));
            (*names)[(*nnames)++] = xstrdup(name);
            rec.len = 0;
            nrec = 0;
            nblobs = 0;
        }
        if (last)
            break;
        buf_append(&rec, r->packs[p].id, 32);
        buf_append_u32le(&rec, (uint32_t)cnt);
        for (size_t k = first[p]; k < first[p + 1] + dn; k++) {
            /* its blobs as the index places them, then the other copies it holds: a copy
             * found damaged later gives way to them (a prune that listed one copy only
             * deleted the other as unused, the only sound one) */
            const struct ientry *en =
                k < first[p + 1] ? repo_entry(r, by_pack[k]) : &r->dups[di + (k - first[p + 1])];
            buf_append(&rec, en->id, 32);
            buf_append_u32le(&rec, en->off);
            buf_append_u32le(&rec, en->clen);
            buf_append_u32le(&rec, en->ulen_flags);
        }
        nrec++;
        nblobs += (uint32_t)cnt;
    }
    buf_free(&rec);
    return rc;
}

/* Unused bytes of a pack that stays: what its unreferenced blobs (and their trailer
 * entries) take. Header, footer and the referenced blobs' trailer entries are the cost of
 * keeping the referenced ones, in any pack. */
/* The bytes of blobs nothing references: what forgotten backups left in the pack. Header,
 * trailer and padding are not counted: a rewritten pack has them too, and counting them
 * would make every padded pack look wasteful and be rewritten by every prune. */
static uint64_t pack_unused(const struct packstat *x)
{
    return x->stored > x->used ? x->stored - x->used : 0;
}

static const struct packstat *sort_ps;

static int cmp_unused_share(const void *a, const void *b)
{
    const struct packstat *x = &sort_ps[*(const uint32_t *)a], *y = &sort_ps[*(const uint32_t *)b];
    double rx = (double)pack_unused(x) / (double)x->size;
    double ry = (double)pack_unused(y) / (double)y->size;
    if (rx != ry)
        return rx > ry ? -1 : 1;
    return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

/* Which packs to repack. As restic's --max-unused: the unused share of the repository after
 * prune may be up to max_unused percent; packs are repacked, the most wasteful share first,
 * until it is. Rewriting a pack costs reading and writing it whole, so a few unused bytes
 * here and there are cheaper kept than rewritten. */
static void choose_repacks(struct packstat *ps, size_t npacks, double max_unused,
                           struct repo_prune_stats *st)
{
    uint32_t *cand = xcalloc(npacks + 1, sizeof(uint32_t));
    size_t n = 0;
    uint64_t unused = 0, size = 0;
    for (size_t p = 0; p < npacks; p++) {
        if (ps[p].fate == P_KEEP && ps[p].damaged) {
            ps[p].fate = P_REPACK;
            st->packs_repacked++;
            st->pack_bytes_repacked += ps[p].size;
        }
        if (ps[p].fate != P_KEEP || !ps[p].on_disk)
            continue;
        unused += pack_unused(&ps[p]);
        size += ps[p].size;
        if (pack_unused(&ps[p]))
            cand[n++] = (uint32_t)p;
    }
    sort_ps = ps;
    qsort(cand, n, sizeof(uint32_t), cmp_unused_share);
    sort_ps = NULL;
    for (size_t i = 0; i < n && (double)unused * 100.0 > max_unused * (double)size; i++) {
        struct packstat *x = &ps[cand[i]];
        uint64_t u = pack_unused(x);
        x->fate = P_REPACK;
        st->packs_repacked++;
        st->pack_bytes_repacked += x->size;
        unused -= u;
        size -= u; /* what is repacked comes back without its unused bytes */
    }
    free(cand);
}

/* Entries grouped by pack (counting sort): by_pack[first[p] .. first[p + 1]). */
static void group_by_pack(struct repo *r, uint32_t **by_pack, size_t **first)
{
    size_t np = r->npacks;
    free(*by_pack);
    free(*first);
    *first = xcalloc(np + 2, sizeof(size_t));
    *by_pack = xcalloc(r->nentries ? r->nentries : 1, sizeof(uint32_t));
    size_t *f = *first;
    for (size_t k = 0; k < r->nentries; k++) {
        uint32_t p = repo_entry(r, k)->pack;
        if (PACK_IS_REAL(p))
            f[p + 2]++;
    }
    for (size_t p = 2; p < np + 2; p++)
        f[p] += f[p - 1];
    for (size_t k = 0; k < r->nentries; k++) {
        uint32_t p = repo_entry(r, k)->pack;
        if (PACK_IS_REAL(p))
            (*by_pack)[f[p + 1]++] = (uint32_t)k;
    }
}

/* 0 while this handle still holds its lock (repo_lock_check; lapse_only: repo_lock_lapse_check,
 * which reads no file), else the lock's error (exit 9) with what the stop left (then). */
static int held_or_stop(struct repo *r, bool lapse_only, const char *then, struct err *e)
{
    if ((lapse_only ? repo_lock_lapse_check(r, e) : repo_lock_check(r, e)) == 0)
        return 0;
    return err_wrap(e, "prune stopped (%s)", then);
}

int repo_prune(struct repo *r, const struct repo_prune_opts *o, struct repo_prune_stats *st,
               struct err *e)
{
    const struct caris_op *op = o ? o->op : NULL;
    double max_unused = o ? o->max_unused : 5.0;
    bool dry = o && o->dry_run;
    memset(st, 0, sizeof(*st));
    /* a dry run changes nothing: a shared lock is enough, and none on a read-only file system
     * (repo_lock takes none there) */
    if (!dry && (!r->lock || !r->lock->exclusive))
        return err_set(e, ERR_LOCKED, "take the exclusive lock first (repo_lock)",
                       "prune needs the exclusive lock of %s", r->path);
    /* a dry run under a shared lock may have read the index with the open cache: prune
     * needs every pack, orphans too (the exclusive lock listed data/ already) */
    if (r->index_cached && repo_index_reload_full(r, e) != 0)
        return -1;
    if (json_array_size(r->damage))
        return err_set(e, ERR_DAMAGE,
                       "run `caris-backup check` and repair the damage it reports first",
                       "refusing to prune repository %s: %s", r->path,
                       json_string_value(json_object_get(json_array_get(r->damage, 0), "error")));
    int rc = -1;
    json_t *list = NULL, *damaged = NULL;
    struct mark m = {.r = r, .unreadable = json_array()};
    pthread_mutex_init(&m.mu, NULL);
    struct packstat *ps = NULL;
    uint32_t *by_pack = NULL;
    size_t *first = NULL;
    struct repo_writer *w = NULL;
    struct buf data = {0};
    char **old_index = NULL, **new_index = NULL;
    size_t nold = 0, nnew = 0;

    /* test-only: CARIS_TEST_PRUNE_HOLD_MARK=PATH holds prune here, before it marks: a test
     * puts back a pack that was missing when it opened */
    test_hold_point("CARIS_TEST_PRUNE_HOLD_MARK");

    /* 1. Mark. */
    list = repo_snapshot_list(r, &damaged, e);
    if (!list)
        goto out;
    /* a dry run's estimate passes over the backups `forget` was named to remove, unreadable
     * ones too */
    size_t listed = json_array_size(list);
    if (dry)
        repo_snapshots_drop_named(list, damaged, o->assume_forgotten, o->nassume_forgotten);
    if (json_array_size(damaged)) {
        err_set(e, ERR_DAMAGE, "run `caris-backup check`; forget or repair that backup first",
                "refusing to prune: snapshot %s cannot be read, so what it needs is unknown",
                json_string_value(json_object_get(json_array_get(damaged, 0), "object")));
        goto out;
    }
    st->snapshots = json_array_size(list);
    size_t nent = r->nentries, words = nent / 64 + 1;
    m.bits = xcalloc(words, sizeof(uint64_t));
    m.meta = xcalloc(words, sizeof(uint64_t));
    struct repo_ref_walk walk = {
        .blob = mark_blob, .snapshot_end = mark_end, .ctx = &m, .op = op, .threads = sys_ncpu()};
    if (repo_walk_references(r, list, &walk, e) != 0)
        goto out;
    if (repo_walk_record_references(r, &walk, e) != 0) {
        err_wrap(e, "refusing to prune");
        goto out;
    }
    if (json_array_size(m.unreadable) || m.malformed) {
        err_set(e, ERR_DAMAGE, "run `caris-backup check`; forget or repair that backup first",
                "refusing to prune: backup %s cannot be read (%s), so what it needs is unknown",
                json_array_size(m.unreadable)
                    ? json_string_value(json_object_get(json_array_get(m.unreadable, 0), "backup"))
                    : "?",
                json_array_size(m.unreadable)
                    ? json_string_value(json_object_get(json_array_get(m.unreadable, 0), "error"))
                    : "malformed chunk reference");
        goto out;
    }
    st->blobs = nent;
    st->blobs_missing = m.missing;
    for (size_t k = 0; k < nent; k++)
        st->blobs_referenced += bit(m.bits, k);
    /* No backup listed and nothing a record needs, while the index lists blobs: either no
     * backup ever committed (the blobs are the garbage of failed ones), every backup was
     * forgotten (erasure: forget them all, then prune), or the backups cannot be seen
     * (snapshots/ gone, a listing that came back empty). The state record tells them apart
     * when there is one and its audit finds nothing (a snapshot it holds live that is gone is
     * "missing"; the record deleted or rolled back is a finding too); without it the last
     * would cost every pack: refused. A backup that commits ends it. */
    bool accounted = false;
    if (listed == 0 && st->blobs_referenced == 0 && nent > 0) {
        json_t *rep = NULL;
        struct err ae = ERR_INIT;
        if (repo_state_audit(r, &rep, &ae) == 0)
            accounted =
                json_is_true(json_object_get(rep, "ok")) &&
                strcmp(json_string_value(json_object_get(rep, "record")) ?: "", "present") == 0 &&
                json_array_size(json_object_get(rep, "unrecorded")) == 0;
        json_decref(rep);
    }
    if (listed == 0 && st->blobs_referenced == 0 && nent > 0 && !accounted) {
        err_set(e, ERR_DAMAGE,
                "if backups were made into this repository, its snapshots/ are missing: restore "
                "them, and run `caris-backup check`; if none ever completed, make one (prune "
                "then removes what failed ones left)",
                "refusing to prune: no backup is listed in %s, yet its index lists %zu blobs",
                r->st->location, nent);
        goto out;
    }

    /* 2. Decide each pack's fate. */
    size_t npacks = r->npacks;
    ps = xcalloc(npacks + 1, sizeof(*ps));
    if (repo_bytes(r, ps, &st->repo_bytes_before, e) != 0)
        goto out;
    pthread_mutex_lock(&r->mu);
    group_by_pack(r, &by_pack, &first);
    for (size_t k = 0; k < nent; k++) {
        struct ientry *en = repo_entry(r, k);
        if (!PACK_IS_REAL(en->pack))
            continue;
        ps[en->pack].nblobs++;
        ps[en->pack].stored += en->clen;
        if (bit(m.bits, k)) {
            ps[en->pack].used += en->clen;
            ps[en->pack].nused++;
            if (bit(m.meta, k))
                ps[en->pack].used_meta += en->clen;
        }
    }
    /* other copies are stored and unused: a pack that holds them is repacked (dropping them)
     * when they make it wasteful, and deleted when nothing else in it is used */
    dups_sort_unique(r);
    for (size_t d = 0; d < r->ndups; d++)
        if (r->dups[d].pack < npacks)
            ps[r->dups[d].pack].stored += r->dups[d].clen;
    pthread_mutex_unlock(&r->mu);
    st->index_files_before = r->nindex_files;
    for (size_t p = 0; p < npacks; p++) {
        struct packstat *x = &ps[p];
        if (x->on_disk) {
            st->packs_before++;
            st->pack_bytes_before += x->size;
        }
        if (!x->on_disk) {
            /* listed but missing: keep listing it while a backup needs it (check reports
             * it); forget it otherwise */
            x->fate = x->nused ? P_KEEP : P_DROP;
        } else if (x->nblobs == 0 && missing_at_open(r, p)) {
            /* missing when the repository was opened (none of its blobs loaded, so none
             * marked), there now: put back meanwhile, the copy that mends the backups needing
             * it. It was deleted here, unread. Its blobs are unknown to this marking: stop,
             * nothing deleted; the next prune reads it with the rest */
            char hex[65];
            cx_hex(r->packs[p].id, 32, hex);
            err_set(e, ERR_FAILURE, "run prune again: it reads the pack with the others",
                    "prune stopped (no pack was deleted): pack %s, missing when it started, "
                    "is there now",
                    hex);
            goto out;
        } else if (x->nused == 0) {
            x->fate = P_DELETE;
            st->packs_deleted++;
            st->pack_bytes_deleted += x->size;
        }
    }
    /* A pack that holds a copy records/bad-blob names is rewritten, so that the damage leaves
     * the repository. One whose referenced blob is such a copy (blocked) is rewritten only if
     * that blob opens after all (repack_one checks first, and keeps the pack otherwise: the
     * next backup stores the blob again). */
    pthread_mutex_lock(&r->mu);
    for (size_t p = 0; p < npacks; p++) {
        struct packstat *x = &ps[p];
        if (x->fate != P_KEEP || !x->on_disk)
            continue;
        for (size_t k = first[p]; r->bad_entries.n && k < first[p + 1] && !x->blocked; k++)
            x->blocked = bit(m.bits, by_pack[k]) && bad_entry_is_locked(r, by_pack[k]);
        x->damaged = bad_pack_known_locked(r, (uint32_t)p);
    }
    pthread_mutex_unlock(&r->mu);
    choose_repacks(ps, npacks, max_unused, st);
    if (dry) {
        st->packs_after = st->packs_before - st->packs_deleted - st->packs_repacked;
        st->pack_bytes_after =
            st->pack_bytes_before - st->pack_bytes_deleted - st->pack_bytes_repacked;
        /* a repack writes back about the referenced share of what it reads: its blobs, in new
         * packs filled to the target (the dry run said "0 blobs kept" and left the packs it
         * writes out of the count after) */
        uint64_t kept = 0, kept_meta = 0;
        for (size_t p = 0; p < npacks; p++)
            if (ps[p].fate == P_REPACK) {
                st->pack_bytes_after += ps[p].used;
                st->blobs_repacked += ps[p].nused;
                kept += ps[p].used - ps[p].used_meta;
                kept_meta += ps[p].used_meta;
                if (ps[p].damaged || ps[p].blocked) {
                    char hex[65];
                    cx_hex(r->packs[p].id, 32, hex);
                    caris_op_log(op, LOG_WARN,
                                 "pack %.16s… holds a blob recorded damaged: the prune rewrites "
                                 "it only if that blob opens then (a dry run does not read it)",
                                 hex);
                }
            }
        /* data and metadata blobs go to packs of their own (repo_writer_meta_slot) */
        uint64_t target = repo_pack_target();
        st->packs_written = (kept + target - 1) / target + (kept_meta + target - 1) / target;
        st->packs_after += st->packs_written;
        st->pack_bytes_after += st->packs_written * PACK_HEADER_LEN;
        st->repo_bytes_after =
            st->repo_bytes_before - (st->pack_bytes_before - st->pack_bytes_after);
        /* the index is rewritten as one file when anything changes, else stays as it is */
        st->index_files_written =
            st->packs_deleted + st->packs_repacked || r->nindex_files > 1 ? 1 : r->nindex_files;
        prune_remove_leftovers(r, true, &st->leftovers_removed, e);
        rc = 0;
        goto out;
    }
    bool changes = st->packs_deleted || st->packs_repacked;
    for (size_t p = 0; p < npacks; p++)
        changes =
            changes || ps[p].fate == P_DROP || (ps[p].fate == P_KEEP && r->packs[p].source == -1);
    if (!changes && r->nindex_files <= 1) {
        /* nothing to delete or rewrite: only leftovers; the index stays as it is */
        st->index_files_written = r->nindex_files;
        goto leftovers;
    }

    /* 3. Repack into new packs (written as they fill; the flush writes the last ones and an
     * index file for them). Packs adopted from trailers are listed by the new index below,
     * not by the writer's. */
    pthread_mutex_lock(&r->mu);
    r->nadopted = 0;
    r->adopted_payload.len = 0;
    pthread_mutex_unlock(&r->mu);
    if (st->packs_repacked) {
        w = repo_writer_new(r, 1);
        uint64_t done = 0;
        for (size_t p = 0; p < npacks; p++) {
            if (ps[p].fate != P_REPACK)
                continue;
            if (caris_op_cancelled(op)) {
                err_set(e, ERR_FAILURE, NULL, "cancelled (nothing was deleted)");
                goto out;
            }
            caris_op_progress(op, "repack", done++, st->packs_repacked);
            int rrc = repack_one(r, w, (uint32_t)p, by_pack, first[p], first[p + 1], &m, &ps[p],
                                 &data, st, e);
            if (rrc < 0)
                goto out;
            if (rrc > 0) { /* a damaged pack with a referenced blob that does not open: kept */
                ps[p].fate = P_KEEP;
                st->packs_repacked--;
                st->pack_bytes_repacked -= ps[p].size;
                char hex[65];
                cx_hex(r->packs[p].id, 32, hex);
                caris_op_log(op, LOG_WARN,
                             "pack %.16s… was not rewritten: a blob of it recorded damaged still "
                             "does not open (the next backup that has its data stores it again; "
                             "`caris-backup check --read-data` names the backups that need it)",
                             hex);
            }
        }
        if (repo_writer_flush(w, e) != 0)
            goto out;
        struct repo_writer_stats ws;
        repo_writer_get_stats(w, &ws);
        st->packs_written = ws.packs;
        st->pack_bytes_written = ws.bytes_stored;
        durable_step();
        caris_op_progress(op, "repack", done, st->packs_repacked);
    }
    if (caris_op_cancelled(op)) {
        err_set(e, ERR_FAILURE, NULL, "cancelled (nothing was deleted)");
        goto out;
    }

    /* The lock must still be ours before anything the marking decided is acted on: were it
     * removed (`unlock --force`) or taken for stale (this process stopped, or unable to
     * refresh it), a backup may have started meanwhile and deduplicated against a blob the
     * marking found unused, in a pack about to go. Checked again before the old index files
     * go and, as packs are deleted, every 64 of them (a lock check reads the lock file). */
    /* test-only: CARIS_TEST_PRUNE_HOLD=PATH holds prune here, once it has marked and before
     * it acts on the marking: a test removes the lock or runs a backup meanwhile */
    test_hold_point("CARIS_TEST_PRUNE_HOLD");
    if (held_or_stop(r, false, "nothing was deleted", e) != 0)
        goto out;

    /* 4. New index files for everything that remains: kept packs (entries as the in-memory
     * index places them, so a blob repacked above is listed in its new pack only) and the
     * repack's new packs. Everything the old index files listed that is still needed is in
     * them before any old one goes. */
    pthread_mutex_lock(&r->mu);
    size_t npacks_now = r->npacks;
    ps = xrealloc(ps, xsize(npacks_now + 1, sizeof(*ps), 0));
    for (size_t p = npacks; p < npacks_now; p++) {
        memset(&ps[p], 0, sizeof(ps[p]));
        ps[p].fate = P_KEEP;
        ps[p].on_disk = true;
    }
    group_by_pack(r, &by_pack, &first);
    old_index = xcalloc(r->nindex_files + 1, sizeof(char *));
    for (size_t i = 0; i < r->nindex_files; i++)
        old_index[nold++] = xstrdup(r->index_files[i]);
    pthread_mutex_unlock(&r->mu);
    caris_op_progress(op, "index", 0, 1);
    if (write_new_index(r, ps, npacks_now, by_pack, first, &new_index, &nnew, e) != 0)
        goto out;
    st->index_files_written = nnew;
    caris_op_progress(op, "index", 1, 1);

    /* 5. Old index files, then 6. old packs. Past this point a stop leaves only garbage for
     * the next prune; the cancel flag is still honoured between objects. */
    if (held_or_stop(r, false, "nothing was deleted", e) != 0)
        goto out;
    for (size_t i = 0; i < nold; i++) {
        if (caris_op_cancelled(op)) {
            err_set(e, ERR_FAILURE, NULL, "cancelled (run prune again to finish)");
            goto out;
        }
        if (storage_remove(r->st, old_index[i], e) != 0)
            goto out;
        durable_step();
    }
    uint64_t todo = st->packs_deleted + st->packs_repacked, done = 0;
    for (size_t p = 0; p < npacks; p++) {
        if (ps[p].fate != P_DELETE && ps[p].fate != P_REPACK)
            continue;
        if (caris_op_cancelled(op)) {
            err_set(e, ERR_FAILURE, NULL, "cancelled (run prune again to finish)");
            goto out;
        }
        /* the lock file read every 64 packs; whether the lock lapsed (a stop, a suspend),
         * which reads only memory, before each: a backup that took it for stale meanwhile
         * may have deduplicated against this pack */
        if (held_or_stop(r, done % 64 != 0, "run prune again to finish", e) != 0)
            goto out;
        caris_op_progress(op, "delete", done++, todo);
        char name[80];
        pack_object_name(r->packs[p].id, name, sizeof(name));
        if (storage_remove(r->st, name, e) != 0)
            goto out;
        durable_step();
    }
    caris_op_progress(op, "delete", done, todo);

leftovers:
    /* 7. Leftovers of interrupted writes (only what no live lock or claim protects: the lock
     * must still be this one's). */
    if (held_or_stop(r, false, "run prune again to finish", e) != 0 ||
        prune_remove_leftovers(r, false, &st->leftovers_removed, e) != 0)
        goto out;
    {
        struct packstat *after = xcalloc(r->npacks + 1, sizeof(*after));
        int brc = repo_bytes(r, after, &st->repo_bytes_after, e);
        for (size_t p = 0; p < r->npacks; p++)
            if (after[p].on_disk) {
                st->packs_after++;
                st->pack_bytes_after += after[p].size;
            }
        free(after);
        if (brc != 0)
            goto out;
    }
    rc = 0;
out:
    json_decref(list);
    json_decref(damaged);
    json_decref(m.unreadable);
    pthread_mutex_destroy(&m.mu);
    free(m.bits);
    free(m.meta);
    free(ps);
    free(by_pack);
    free(first);
    repo_writer_free(w);
    buf_free(&data);
    for (size_t i = 0; i < nold; i++)
        free(old_index[i]);
    free(old_index);
    for (size_t i = 0; i < nnew; i++)
        free(new_index[i]);
    free(new_index);
    return rc;
}

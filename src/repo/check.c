/* Repository check: structure and index consistency, and with read_data every byte of every
 * pack. Damage is reported with the backups it affects. */
#include "caris/pipeline.h"
#include "internal.h"

#include <stdarg.h>

#include "caris/op.h"
#include "caris/pool.h"
#include <stdlib.h>
#include <string.h>

struct idlist {
    uint8_t (*v)[32];
    size_t n, cap;
};

static void idlist_add(struct idlist *l, const uint8_t id[32])
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = xrealloc(l->v, xsize(l->cap, 32, 0));
    }
    memcpy(l->v[l->n++], id, 32);
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

static bool idlist_has(const struct idlist *l, const uint8_t id[32])
{
    return l->n && bsearch(id, l->v, l->n, 32, cmp_id) != NULL;
}

struct packfile {
    char *name;
    uint8_t id[32];
    uint64_t size;
};

struct check {
    struct repo *r;
    const struct repo_check_opts *o;
    pthread_mutex_t mu; /* the lists below, while packs are read in parallel */
    struct buf *bufs;   /* one pack buffer per worker */
    int nthreads;
    size_t packs_done;
    struct err fatal;
    /* blobs of pack p: by_pack[first[p] .. first[p + 1]) (entry numbers) */
    uint32_t *by_pack;
    size_t *first;
    size_t npacks_listed;
    json_t *errors, *warnings;
    struct packfile *files;
    size_t nfiles;
    struct idlist bad_blobs; /* damaged or missing */
    bool *unindexed_needed;  /* per pack (r->npacks): no index lists it, a backup needs it */
    size_t npacks_at_walk;   /* r->npacks when the backups' walk began */
    json_t *pack_errors;     /* pack id (hex) -> [index in errors, ...], while reporting */
};

static void add_issue(json_t *arr, const char *object, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_issue(json_t *arr, const char *object, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_array_append_new(arr,
                          json_pack("{s:s, s:s, s:[]}", "object", object, "error", msg, "backups"));
}

static int collect_pack(void *ctx, const char *name, uint64_t size, struct err *e)
{
    (void)e;
    struct check *c = ctx;
    const char *base = strrchr(name, '/');
    uint8_t id[32];
    if (!base || strlen(base + 1) != 64 || cx_unhex(base + 1, id, 32) != 0) {
        add_issue(c->warnings, name, "unexpected file in data/");
        return 0;
    }
    if (!pack_name_parse(name, id)) {
        char want[80];
        pack_object_name(id, want, sizeof(want));
        /* not counted as the pack: an index that lists it then reports it missing, with the
         * backups that need it */
        add_issue(c->errors, name,
                  "pack in the wrong directory: reads look for it at %s, where it is not (move "
                  "it back)",
                  want);
        return 0;
    }
    c->files = xrealloc(c->files, xsize(c->nfiles + 1, sizeof(*c->files), 0));
    c->files[c->nfiles].name = xstrdup(name);
    memcpy(c->files[c->nfiles].id, id, 32);
    c->files[c->nfiles].size = size;
    c->nfiles++;
    return 0;
}

static int cmp_packfile(const void *a, const void *b)
{
    return memcmp(((const struct packfile *)a)->id, ((const struct packfile *)b)->id, 32);
}

static struct packfile *find_packfile(struct check *c, const uint8_t id[32])
{
    struct packfile key;
    memcpy(key.id, id, 32);
    return c->nfiles ? bsearch(&key, c->files, c->nfiles, sizeof(key), cmp_packfile) : NULL;
}

/* Index entries must point into packs that exist and are large enough. */
static void check_index(struct check *c)
{
    struct repo *r = c->r;
    for (size_t p = 0; p < r->npacks; p++) {
        struct packinfo *pi = &r->packs[p];
        char name[80];
        pack_object_name(pi->id, name, sizeof(name));
        if (pi->source == -1) {
            add_issue(c->warnings, name,
                      "pack is not listed in any index (left by an interrupted or running "
                      "backup, or its index file is damaged); the next backup indexes it");
        }
        if (!find_packfile(c, pi->id))
            add_issue(c->errors, name, "pack listed in the index is missing");
    }
    for (size_t i = 0; i < r->nentries; i++) {
        struct ientry *en = repo_entry(r, i);
        if (!PACK_IS_REAL(en->pack))
            continue;
        struct packfile *pf = find_packfile(c, r->packs[en->pack].id);
        if (!pf) {
            idlist_add(&c->bad_blobs, en->id);
        } else if ((uint64_t)en->off + en->clen > pf->size) {
            idlist_add(&c->bad_blobs, en->id);
            add_issue(c->errors, pf->name, "index entry points past the end of the pack");
            /* a truncated pack: the copy is gone where it lies, as check --read-data finds it.
             * Recorded, so that backups stop deduplicating against it and store it again. */
            bad_blob_note_locked(r, en->pack, en->id); /* check_index runs under r->mu */
        }
    }
}

/* One pack, on a worker: read once, hashed, every blob the index places in it decrypted and
 * checked from the buffer. Findings go to the shared lists under c->mu. */
struct pack_job {
    struct check *c;
    struct packfile *pf;
};

static void issue_locked(struct check *c, const char *object, const char *msg,
                         const uint8_t *bad_blob)
{
    pthread_mutex_lock(&c->mu);
    add_issue(c->errors, object, "%s", msg);
    if (bad_blob)
        idlist_add(&c->bad_blobs, bad_blob);
    pthread_mutex_unlock(&c->mu);
}

/* Every blob the index places in pack pidx is damaged (its pack cannot be read or opened): each
 * is recorded (the next backup stores it again), and the backups that need one are named. */
static void pack_blobs_bad(struct check *c, long pidx)
{
    struct repo *r = c->r;
    if (pidx < 0 || (size_t)pidx >= c->npacks_listed)
        return;
    for (size_t k = c->first[pidx]; k < c->first[pidx + 1]; k++) {
        const uint8_t *id = repo_entry(r, c->by_pack[k])->id;
        pthread_mutex_lock(&c->mu);
        idlist_add(&c->bad_blobs, id);
        pthread_mutex_unlock(&c->mu);
        bad_blob_note(r, (uint32_t)pidx, id); /* takes r->mu: not under c->mu */
    }
}

static void read_pack_job(void *arg, int worker)
{
    struct pack_job *j = arg;
    struct check *c = j->c;
    struct packfile *pf = j->pf;
    struct repo *r = c->r;
    struct buf *data = &c->bufs[worker];
    char msg[1200];
    free(j);
    if (caris_op_cancelled(c->o->op)) /* check_locked reports it */
        return;
    if (pf->size > PACK_MAX_SIZE) {
        snprintf(msg, sizeof(msg), "pack is implausibly large (%llu bytes)",
                 (unsigned long long)pf->size);
        issue_locked(c, pf->name, msg, NULL);
        goto done;
    }
    data->len = 0;
    buf_reserve(data, (size_t)pf->size);
    struct err pe = ERR_INIT;
    if (storage_read_at(r->st, pf->name, 0, data->data, (size_t)pf->size, &pe) != 0) {
        if (pe.code == ERR_NOT_FOUND) {
            /* listed, and gone when read (no prune runs beside a check): the data it held is
             * lost, which is damage to report with the backups it takes, not a failure of the
             * check (exit 7 without a word of what is lost) */
            snprintf(msg, sizeof(msg), "pack is listed but gone when read: %s", pe.msg);
            issue_locked(c, pf->name, msg, NULL);
            pthread_mutex_lock(&r->mu);
            long gone = repo_find_pack_locked(r, pf->id);
            pthread_mutex_unlock(&r->mu);
            pack_blobs_bad(c, gone);
            goto done;
        }
        pthread_mutex_lock(&c->mu);
        if (pe.code != ERR_DAMAGE && !err_is_set(&c->fatal))
            c->fatal = pe;
        else if (pe.code == ERR_DAMAGE)
            add_issue(c->errors, pf->name, "%s", pe.msg);
        pthread_mutex_unlock(&c->mu);
        goto done;
    }
    data->len = (size_t)pf->size;
    /* The pack a worker takes after this one is read ahead while this one is checked. */
    size_t next = (size_t)(pf - c->files) + (size_t)c->nthreads;
    if (next < c->nfiles && c->files[next].size <= PACK_MAX_SIZE)
        storage_prefetch(r->st, c->files[next].name, 0, c->files[next].size);
    uint8_t sum[32];
    cx_sha256(data->data, data->len, sum);
    if (memcmp(sum, pf->id, 32) != 0)
        issue_locked(c, pf->name, "checksum mismatch: pack content does not match its name", NULL);
    pthread_mutex_lock(&r->mu);
    long pidx = repo_find_pack_locked(r, pf->id);
    pthread_mutex_unlock(&r->mu);
    if (pidx < 0 || (size_t)pidx >= c->npacks_listed)
        goto done;
    uint8_t key[32];
    struct err ke = ERR_INIT;
    if (data->len < PACK_HEADER_LEN || pack_version(data->data) == 0) {
        issue_locked(c, pf->name, "bad pack header", NULL);
        /* none of its blobs opens: each is damaged, so the backups that need one are named,
         * and each is recorded (the next backup stores it again) */
        pack_blobs_bad(c, pidx);
        goto done;
    }
    if (pack_derive_key(r, data->data + 8, key, &ke) != 0) {
        issue_locked(c, pf->name, ke.msg, NULL);
        goto done;
    }
    /* The trailer, and the padding inside it, are authenticated too, and must list every
     * blob the index places in this pack, at the same place: they rebuild the index when an
     * index file is lost. */
    struct buf tr = {0};
    struct err terr = ERR_INIT;
    if (pack_trailer_from_buf(r, pf->name, data->data, data->len, &tr, &terr) != 0) {
        issue_locked(c, pf->name, terr.msg, NULL);
    } else {
        size_t listed = c->first[pidx + 1] - c->first[pidx], agree = 0;
        for (size_t k = 0; k < tr.len; k += PACK_TRAILER_ENTRY_LEN) {
            const uint8_t *ent = tr.data + k;
            pthread_mutex_lock(&r->mu);
            long ei = repo_lookup_locked(r, ent);
            struct ientry en = {0};
            if (ei >= 0)
                en = *repo_entry(r, (size_t)ei);
            pthread_mutex_unlock(&r->mu);
            if (ei >= 0 && en.pack == (uint32_t)pidx && en.off == load_u32le(ent + 32) &&
                en.clen == load_u32le(ent + 36) && en.ulen_flags == load_u32le(ent + 40))
                agree++;
        }
        if (agree != listed)
            issue_locked(c, pf->name, "the pack's trailer and the index disagree", NULL);
    }
    buf_free(&tr);
    /* The index is not written during a check: entries are read without the lock. */
    struct buf out = {0}; /* decompressed plaintext, reused */
    for (size_t k = c->first[pidx]; k < c->first[pidx + 1]; k++) {
        struct ientry en = *repo_entry(r, c->by_pack[k]);
        struct err be = ERR_INIT;
        if ((uint64_t)en.off + en.clen > data->len) {
            issue_locked(c, pf->name, "index entry points past the end of the pack", en.id);
            bad_blob_note(r, (uint32_t)pidx, en.id); /* a truncated pack: gone where it lies */
            continue;
        }
        const uint8_t *pt;
        size_t ptlen;
        /* decrypted in place: the pack's hash and its trailer were checked before */
        if (blob_decode_inplace(r, en.id, &en, key, data->data + en.off, pf->name, true, &out, &pt,
                                &ptlen, &be) != 0)
            issue_locked(c, pf->name, be.msg, en.id);
    }
    cx_wipe(key, sizeof(key));
    if (out.data)
        cx_wipe(out.data, out.cap);
    buf_free(&out);
done:
    if (data->data) /* blobs were decrypted in place */
        cx_wipe(data->data, data->len);
    pthread_mutex_lock(&c->mu);
    c->packs_done++;
    if (c->o && c->o->progress)
        c->o->progress(c->o->ctx, c->packs_done, c->nfiles);
    caris_op_progress(c->o->op, "check", c->packs_done, c->nfiles);
    pthread_mutex_unlock(&c->mu);
}

/* What one backup needs, gathered by the shared walk (repo_walk_references): one state per
 * snapshot, as the walk takes several at once and not in list order. The findings are added
 * to the report afterwards, in list order. */
struct snap_state {
    uint64_t nrefs;
    bool missing, damaged;
    struct err *le;      /* its file or entries could not be read */
    uint32_t *bad_packs; /* the packs its damaged or missing blobs lie in (their errors name
                            it), each once (bad_bits: a bit per pack, allocated when needed) */
    size_t nbad_packs, bad_packs_cap;
    uint8_t *bad_bits;
};

struct snap_walk {
    struct check *c;
    struct snap_state *st;
};

static void note_bad_pack(struct check *c, struct snap_state *st, uint32_t pack)
{
    if (!PACK_IS_REAL(pack) || pack >= c->npacks_at_walk)
        return;
    if (!st->bad_bits)
        st->bad_bits = xcalloc(c->npacks_at_walk / 8 + 1, 1);
    if (st->bad_bits[pack / 8] & (1u << (pack % 8)))
        return;
    st->bad_bits[pack / 8] |= (uint8_t)(1u << (pack % 8));
    if (st->nbad_packs == st->bad_packs_cap) {
        st->bad_packs_cap = st->bad_packs_cap ? 2 * st->bad_packs_cap : 4;
        st->bad_packs = xrealloc(st->bad_packs, st->bad_packs_cap * sizeof(*st->bad_packs));
    }
    st->bad_packs[st->nbad_packs++] = pack;
}

static int cmp_gone(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

static void snap_blob(void *ctx, size_t snap, const uint8_t *id, long entry, bool meta)
{
    struct snap_walk *sw = ctx;
    struct check *c = sw->c;
    struct snap_state *st = &sw->st[snap];
    if (!meta)
        st->nrefs++;
    if (!id) {
        st->damaged = true;
        return;
    }
    if (entry < 0) {
        st->missing = true;
        /* in a pack missing at open (sorted by check_snapshots before the walk) */
        const struct gone_blob *g =
            c->r->ngone ? bsearch(id, c->r->gone, c->r->ngone, sizeof(*c->r->gone), cmp_gone)
                        : NULL;
        if (g)
            note_bad_pack(c, st, g->pack);
        return;
    }
    /* (the index is not written during a check: read without the lock) */
    uint32_t pack = repo_entry(c->r, (size_t)entry)->pack;
    if (idlist_has(&c->bad_blobs, id)) {
        st->damaged = true;
        note_bad_pack(c, st, pack);
    }
    if (PACK_IS_REAL(pack) && c->r->packs[pack].source == -1)
        __atomic_store_n(&c->unindexed_needed[pack], true, __ATOMIC_RELAXED);
}

static void snap_end(void *ctx, size_t snap, json_t *s, const struct err *le)
{
    (void)s;
    struct snap_walk *sw = ctx;
    if (le)
        *(sw->st[snap].le = xmalloc(sizeof(*le))) = *le;
}

/* One backup's findings, added to the report. */
static void snap_report(struct check *c, json_t *s, const struct snap_state *st)
{
    const char *file = json_string_value(json_object_get(s, "_file"));
    const char *bid = json_string_value(json_object_get(s, "id"));
    if (st->le) {
        /* the summary (from the list) still says which backup lost its file list */
        add_issue(c->errors, file ? file : "?", "backup %s: %s", bid ? bid : "?", st->le->msg);
        json_array_append_new(
            json_object_get(json_array_get(c->errors, json_array_size(c->errors) - 1), "backups"),
            json_string(bid ? bid : file));
        return;
    }
    bool missing = st->missing, damaged = st->damaged;
    if (missing || damaged) {
        char what[200];
        snprintf(what, sizeof(what), "backup %s %s", bid ? bid : "?",
                 missing ? "needs blobs that are missing from the repository"
                         : "needs blobs that are damaged");
        add_issue(c->errors, file, "%s", what);
    }
    /* A backup whose blobs are found only through pack trailers (its index file damaged) is
     * whole: the trailers are authenticated, and the next prune writes the index again. It is
     * not named on the index file's error, whose "backups" mean "do not restore" (they were,
     * and list then showed intact backups damaged). */
    if (missing || damaged) {
        /* Named on its own error, and on the error of every pack its damaged blobs lie in
         * (not on every error that named no backup yet: that named the first damaged backup
         * on the damage of packs it does not need, and no later backup on the damage of
         * packs it does). */
        const char *name = bid ? bid : file;
        json_array_append_new(
            json_object_get(json_array_get(c->errors, json_array_size(c->errors) - 1), "backups"),
            json_string(name));
        for (size_t k = 0; k < st->nbad_packs; k++) {
            char hex[65];
            cx_hex(c->r->packs[st->bad_packs[k]].id, 32, hex);
            size_t q;
            json_t *at;
            json_array_foreach(json_object_get(c->pack_errors, hex), q, at)
            {
                json_t *b = json_object_get(
                    json_array_get(c->errors, (size_t)json_integer_value(at)), "backups");
                /* (backups are reported one after another: a repeat is the last name) */
                const char *last = json_string_value(json_array_get(b, json_array_size(b) - 1));
                if (!last || strcmp(last, name) != 0)
                    json_array_append_new(b, json_string(name));
            }
        }
    }
}

static int check_snapshots(struct check *c, json_t *list, uint64_t *nrefs, struct err *e)
{
    if (c->bad_blobs.n)
        qsort(c->bad_blobs.v, c->bad_blobs.n, 32, cmp_id);
    size_t n = json_array_size(list);
    struct snap_walk sw = {.c = c, .st = xcalloc(n ? n : 1, sizeof(struct snap_state))};
    struct repo_ref_walk w = {.blob = snap_blob,
                              .snapshot_end = snap_end,
                              .ctx = &sw,
                              .op = c->o ? c->o->op : NULL,
                              .threads = c->o && c->o->threads > 0 ? c->o->threads : sys_ncpu()};
    c->unindexed_needed = xcalloc(c->r->npacks + 1, sizeof(bool));
    c->npacks_at_walk = c->r->npacks;
    pthread_mutex_lock(&c->r->mu);
    if (c->r->ngone)
        qsort(c->r->gone, c->r->ngone, sizeof(*c->r->gone), cmp_gone);
    pthread_mutex_unlock(&c->r->mu);
    int rc = repo_walk_references(c->r, list, &w, e);
    /* the errors about each pack so far (a pack missing, truncated, unreadable, damaged, in
     * the wrong directory), by the pack's id: where the backups needing it are named */
    c->pack_errors = json_object();
    size_t q;
    json_t *iss;
    json_array_foreach(c->errors, q, iss)
    {
        const char *o = json_string_value(json_object_get(iss, "object"));
        const char *base = o && strncmp(o, "data/", 5) == 0 ? strrchr(o, '/') + 1 : NULL;
        if (!base || strlen(base) != 64 || strspn(base, "0123456789abcdef") != 64)
            continue;
        json_t *l = json_object_get(c->pack_errors, base);
        if (!l)
            json_object_set_new(c->pack_errors, base, l = json_array());
        json_array_append_new(l, json_integer((json_int_t)q));
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        *nrefs += sw.st[i].nrefs;
        snap_report(c, json_array_get(list, i), &sw.st[i]);
    }
    /* A backup writes the index file of its packs (and of those it adopts) before its
     * snapshot: a pack a listed backup needs that no index lists lost its index file (deleted,
     * or damaged: reported above). Its blobs are still found through its trailer, so no
     * backup is named (added after the backups' reports, which name a damaged backup on the
     * errors of the packs its damaged blobs lie in). */
    for (size_t p = 0; rc == 0 && p < c->r->npacks; p++) {
        if (!c->unindexed_needed[p])
            continue;
        char name[80];
        pack_object_name(c->r->packs[p].id, name, sizeof(name));
        add_issue(c->errors, name,
                  "backups need this pack, but no index file lists it: the index file that "
                  "listed it is gone or damaged (or an interrupted backup stored a copy of a "
                  "blob recorded damaged in it); its blobs are still found through the pack's "
                  "trailer, and the next backup or prune writes the index again");
    }
    free(c->unindexed_needed);
    c->unindexed_needed = NULL;
    for (size_t i = 0; i < n; i++) {
        free(sw.st[i].le);
        free(sw.st[i].bad_packs);
        free(sw.st[i].bad_bits);
    }
    free(sw.st);
    json_decref(c->pack_errors);
    c->pack_errors = NULL;
    return rc;
}

/* The state record's findings (repo_state_audit): every regression is an error naming the
 * backup; snapshots not yet recorded are a warning. With `affects`, the backup is listed as
 * affected, and check records a failed verification for it (caris_check_record). A replayed
 * backup is not: its data was not judged, the record disagrees about its presence; marked
 * damaged, it would stay so after the older copy is accepted (its local state file removed,
 * docs/BACKUP_RECOVERY.md) and then count for no retention rule. */
static void state_issues(json_t *arr, json_t *found, const char *what, bool affects)
{
    size_t i;
    json_t *x;
    json_array_foreach(found, i, x)
    {
        char obj[100];
        const char *id = json_string_value(json_object_get(x, "id"));
        snprintf(obj, sizeof(obj), "snapshots/%s", json_string_value(json_object_get(x, "object")));
        add_issue(arr, obj, "backup %s %s", id, what);
        if (affects)
            json_array_append_new(
                json_object_get(json_array_get(arr, json_array_size(arr) - 1), "backups"),
                json_string(id));
    }
}

/* The records of the WAL archive ("wal", and "walstream": streamed partials) reference blobs
 * as backups do: one whose blobs are missing or damaged is a WAL file that `wal get` cannot
 * serve (a recovery through it fails), an error. Records that cannot be read are reported
 * below with the others. Runs after check_snapshots (bad_blobs sorted). */
static void check_wal_records(struct check *c)
{
    static const char *const kinds[] = {"wal", "walstream", NULL};
    for (size_t k = 0; kinds[k]; k++) {
        struct err re = ERR_INIT;
        json_t *l = repo_record_list_named(c->r, kinds[k], NULL, &re);
        if (!l) {
            char dir[40];
            snprintf(dir, sizeof(dir), "records/%s", kinds[k]);
            add_issue(c->errors, dir, "records cannot be read: %s", re.msg);
            continue;
        }
        size_t i;
        json_t *x;
        json_array_foreach(l, i, x)
        {
            struct chunk_item *refs = NULL;
            size_t n = 0, bad = 0;
            bool malformed = chunklist_decode_items(json_object_get(x, "chunks"), &refs, &n) != 0;
            for (size_t j = 0; j < n; j++) {
                bool ok = repo_has_blob(c->r, refs[j].id) && !idlist_has(&c->bad_blobs, refs[j].id);
                if (ok && refs[j].delta)
                    ok = repo_has_blob(c->r, refs[j].base) &&
                         !idlist_has(&c->bad_blobs, refs[j].base);
                bad += !ok;
            }
            free(refs);
            const char *obj = json_string_value(json_object_get(x, "_object")) ?: kinds[k];
            const char *name = json_string_value(json_object_get(x, "name")) ?: "?";
            if (malformed)
                add_issue(c->errors, obj, "WAL file %s: its record's chunk list is malformed",
                          name);
            else if (bad)
                add_issue(c->errors, obj,
                          "WAL file %s needs %zu blob%s that %s missing or damaged: `wal get` "
                          "cannot serve it, and a recovery through it would stop there",
                          name, bad, bad == 1 ? "" : "s", bad == 1 ? "is" : "are");
        }
        json_decref(l);
    }
}

/* The records that hold results rather than data (those of the WAL archive: above): one that
 * cannot be read is damage, and what it said is lost (a verification that found a backup
 * damaged would no longer mark it so). */
static void check_records(struct check *c)
{
    /* (records/bad-blob are read at open: one that cannot be read is in repo_damage) */
    static const char *const kinds[] = {"verify", "test-restore", "audit-head", NULL};
    for (size_t k = 0; kinds[k]; k++) {
        json_t *damaged = NULL;
        struct err re = ERR_INIT;
        json_t *l = repo_record_list(c->r, kinds[k], &damaged, &re);
        if (!l) {
            char dir[40];
            snprintf(dir, sizeof(dir), "records/%s", kinds[k]);
            add_issue(c->errors, dir, "records cannot be read: %s", re.msg);
            continue;
        }
        json_decref(l);
        size_t i;
        json_t *d;
        json_array_foreach(damaged, i, d)
            add_issue(c->errors, json_string_value(json_object_get(d, "object")) ?: kinds[k],
                      "%s record cannot be read (%s): what it recorded is lost", kinds[k],
                      json_string_value(json_object_get(d, "error")) ?: "?");
        json_decref(damaged);
    }
}

/* Key slots: one that cannot be read (key list: UNUSABLE) no longer opens the repository for
 * whoever holds its key, a second custodian's perhaps, found out the day the first key is
 * lost. (A slot that parses is authenticated only with its own key: that part is not judged.) */
static void check_keys(struct check *c)
{
    struct err ke = ERR_INIT;
    json_t *keys = repo_key_list(c->r, &ke);
    if (!keys) {
        add_issue(c->errors, "keys", "the key slots cannot be listed: %s", ke.msg);
        return;
    }
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        const char *msg = json_string_value(json_object_get(k, "error"));
        if (!msg)
            continue;
        char obj[100];
        snprintf(obj, sizeof(obj), "keys/%s", json_string_value(json_object_get(k, "id")));
        add_issue(c->errors, obj,
                  "%s: its key no longer opens the repository (add that key again with "
                  "`caris-backup key add`, opened with a working key, then `caris-backup key "
                  "remove %s`)",
                  msg, json_string_value(json_object_get(k, "id")));
    }
    json_decref(keys);
}

static void check_state(struct check *c, json_t *st)
{
    if (json_is_true(json_object_get(st, "rolled_back")))
        add_issue(c->errors, "state",
                  "the repository went back in time: its state record is at %lld, but this "
                  "host saw %lld",
                  (long long)json_integer_value(json_object_get(st, "counter")),
                  (long long)json_integer_value(json_object_get(st, "local_counter")));
    if (strcmp(json_string_value(json_object_get(st, "record")), "deleted") == 0)
        add_issue(c->errors, "state", "the state record is missing: its objects were deleted");
    size_t k;
    json_t *o;
    json_array_foreach(json_object_get(st, "replaced"), k, o)
        add_issue(c->errors, "state",
                  "this is not the repository this host used at this path before (id %s, %lld "
                  "backups): replaced by another one (made with the same key?) or created anew; "
                  "if on purpose, remove %s to accept it",
                  json_string_value(json_object_get(o, "repository")),
                  (long long)json_integer_value(json_object_get(o, "backups")),
                  json_string_value(json_object_get(o, "file")));
    state_issues(c->errors, json_object_get(st, "missing"),
                 "is in the state record but its snapshot is gone (deleted or rolled back)", true);
    state_issues(c->errors, json_object_get(st, "replayed"),
                 "was removed (forgotten) but its snapshot is back (put back from an old copy; "
                 "or an interrupted forget of a caris-backup older than this one)",
                 false);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(st, "damaged"), i, x)
        add_issue(c->errors, json_string_value(json_object_get(x, "object")), "%s",
                  json_string_value(json_object_get(x, "message")));
    json_array_foreach(json_object_get(st, "removing"), i, x)
    {
        char obj[100];
        snprintf(obj, sizeof(obj), "snapshots/%s", json_string_value(json_object_get(x, "object")));
        add_issue(c->warnings, obj,
                  "backup %s was being removed when its forget stopped: the next prune "
                  "finishes removing it",
                  json_string_value(json_object_get(x, "id")) ?: "?");
    }
    json_array_foreach(json_object_get(st, "unrecorded"), i, x)
    {
        char obj[100];
        snprintf(obj, sizeof(obj), "snapshots/%s", json_string_value(x));
        add_issue(c->warnings, obj,
                  "snapshot not in the state record yet (a backup committing now, one stopped "
                  "at its commit, or made before the record began); the next backup records it");
    }
    json_t *le = json_object_get(st, "local_error");
    if (le)
        add_issue(c->warnings, json_string_value(json_object_get(le, "file")), "%s",
                  json_string_value(json_object_get(le, "message")));
}

static int check_locked(struct repo *r, const struct repo_check_opts *o,
                        struct repo_check_result *res, struct err *e)
{
    struct check c = {.r = r, .o = o, .errors = json_array(), .warnings = json_array()};
    pthread_mutex_init(&c.mu, NULL);
    int rc = -1;
    json_t *list = NULL, *damaged = NULL, *state = NULL;
    uint64_t nrefs = 0, bytes = 0;
    size_t i;
    json_t *d;
    /* check needs the truth about data/ (and refreshes the open cache with it), and about
     * the index files and snapshots in the storage itself: on S3 the open read them from
     * the local copies, which stay good while the objects in the bucket are damaged or gone
     * (found only when another host, or a new one after a loss, read them) */
    storage_local_copies(r->st, false);
    bool copies = storage_location_is_s3(r->path);
    /* The backups judged are listed before the index is read: a backup writes its packs and
     * its index file before its snapshot, so every backup listed has its index in what is read
     * next. The index the open read (before the lock) may predate a backup that committed
     * since: its blobs would be "missing", and the backup recorded damaged. */
    list = repo_snapshot_list(r, &damaged, e);
    if (!list)
        goto out;
    bool outdated = r->index_cached || copies;
    if (!outdated && repo_index_outdated(r, &outdated, e) != 0)
        goto out;
    if (outdated && repo_index_reload_full(r, e) != 0)
        goto out;
    json_array_foreach(repo_damage(r), i, d)
    {
        add_issue(c.errors, json_string_value(json_object_get(d, "object")), "%s",
                  json_string_value(json_object_get(d, "error")));
    }
    json_array_foreach(r->truncated, i, d)
    {
        add_issue(c.errors, json_string_value(json_object_get(d, "object")), "%s",
                  json_string_value(json_object_get(d, "error")));
    }
    if (storage_list(r->st, "data", collect_pack, &c, e) != 0)
        goto out;
    if (c.nfiles)
        qsort(c.files, c.nfiles, sizeof(*c.files), cmp_packfile);
    pthread_mutex_lock(&r->mu);
    check_index(&c);
    pthread_mutex_unlock(&r->mu);
    for (size_t p = 0; p < c.nfiles; p++) {
        bytes += c.files[p].size;
        pthread_mutex_lock(&r->mu);
        long known = repo_find_pack_locked(r, c.files[p].id);
        pthread_mutex_unlock(&r->mu);
        if (known < 0)
            add_issue(c.warnings, c.files[p].name, "pack is not listed in any index");
    }
    if (o && o->read_data) {
        /* Group the index by pack once (counting sort): O(blobs), whatever the pack count. */
        pthread_mutex_lock(&r->mu);
        c.npacks_listed = r->npacks;
        c.first = xcalloc(r->npacks + 2, sizeof(size_t));
        c.by_pack = xcalloc(r->nentries ? r->nentries : 1, sizeof(uint32_t));
        for (size_t k = 0; k < r->nentries; k++) {
            uint32_t p = repo_entry(r, k)->pack;
            if (PACK_IS_REAL(p))
                c.first[p + 2]++;
        }
        for (size_t p = 2; p < r->npacks + 2; p++)
            c.first[p] += c.first[p - 1];
        for (size_t k = 0; k < r->nentries; k++) {
            uint32_t p = repo_entry(r, k)->pack;
            if (PACK_IS_REAL(p))
                c.by_pack[c.first[p + 1]++] = (uint32_t)k;
        }
        pthread_mutex_unlock(&r->mu);
        /* no more workers than pack files; one: in this thread (worker 0), as starting a
         * thread costs more than it could save */
        int nthreads = o->threads > 0 ? o->threads : sys_ncpu();
        if ((size_t)nthreads > c.nfiles)
            nthreads = c.nfiles > 0 ? (int)c.nfiles : 1;
        c.nthreads = nthreads;
        c.bufs = xcalloc((size_t)nthreads, sizeof(*c.bufs));
        struct pool *pool = nthreads > 1 ? pool_new(nthreads, (size_t)nthreads * 2) : NULL;
        for (size_t p = 0; p < c.nfiles; p++) {
            struct pack_job *j = xmalloc(sizeof(*j));
            j->c = &c;
            j->pf = &c.files[p];
            pool_submit(pool, read_pack_job, j);
        }
        pool_free(pool);
        for (int t = 0; t < nthreads; t++)
            buf_free(&c.bufs[t]);
        free(c.bufs);
        c.bufs = NULL;
        if (caris_op_check(o->op, "nothing was changed: run check again", e) != 0)
            goto out;
        if (err_is_set(&c.fatal)) {
            *e = c.fatal;
            goto out;
        }
    }
    json_array_foreach(damaged, i, d)
    {
        add_issue(c.errors, json_string_value(json_object_get(d, "object")), "%s",
                  json_string_value(json_object_get(d, "error")));
        json_t *id = json_object_get(d, "id"); /* when the state record knows it */
        if (id)
            json_array_append(
                json_object_get(json_array_get(c.errors, json_array_size(c.errors) - 1), "backups"),
                id);
    }
    if (check_snapshots(&c, list, &nrefs, e) != 0)
        goto out;
    check_wal_records(&c);
    if (repo_state_audit(r, &state, e) != 0)
        goto out;
    check_state(&c, state);
    check_records(&c);
    check_keys(&c);
    res->ok = json_array_size(c.errors) == 0;
    res->errors = c.errors;
    res->warnings = c.warnings;
    res->stats.packs = c.nfiles;
    res->stats.pack_bytes = bytes;
    res->stats.blobs = r->nentries;
    res->stats.index_files = r->nindex_files;
    res->stats.snapshots = json_array_size(list);
    res->stats.blob_references = nrefs;
    res->stats.read_data = o && o->read_data;
    res->state = json_incref(state);
    c.errors = c.warnings = NULL;
    rc = 0;
out:
    storage_local_copies(r->st, true);
    json_decref(list);
    json_decref(damaged);
    json_decref(state);
    json_decref(c.errors);
    json_decref(c.warnings);
    for (size_t p = 0; p < c.nfiles; p++)
        free(c.files[p].name);
    free(c.files);
    free(c.bad_blobs.v);
    free(c.by_pack);
    free(c.first);
    pthread_mutex_destroy(&c.mu);
    return rc;
}

/* What crashed operations left: stale locks and claims, and temporary files. These are
 * warnings, not damage: nothing a backup needs is missing. Temporary files are reported only
 * when no other operation holds a live lock (they may be its writes in progress). */
static int check_leftovers(struct repo *r, struct repo_check_result *res, struct err *e)
{
    json_t *locks = repo_lock_list(r, e);
    json_t *tmp = locks ? repo_leftovers_list(r, e) : NULL;
    if (!tmp) {
        json_decref(locks);
        return -1;
    }
    json_t *warnings = res->warnings;
    bool others_live = false;
    size_t i, nstale = 0;
    json_t *x;
    json_array_foreach(locks, i, x)
    {
        if (json_is_true(json_object_get(x, "mine")))
            continue;
        if (!json_is_true(json_object_get(x, "stale"))) {
            others_live |= strcmp(json_string_value(json_object_get(x, "kind")), "lock") == 0;
            continue;
        }
        nstale++;
        add_issue(warnings, json_string_value(json_object_get(x, "object")),
                  "stale %s of %s: %s (left by a crashed operation; `caris-backup unlock` "
                  "removes it)",
                  json_string_value(json_object_get(x, "kind")),
                  json_string_value(json_object_get(x, "description")),
                  json_string_value(json_object_get(x, "reason")));
    }
    if (!others_live)
        json_array_foreach(tmp, i, x)
        {
            add_issue(warnings, json_string_value(json_object_get(x, "object")),
                      "temporary file of an interrupted write (%lld bytes, %lld s old; "
                      "`caris-backup unlock` removes it)",
                      (long long)json_integer_value(json_object_get(x, "size")),
                      (long long)json_integer_value(json_object_get(x, "age_s")));
        }
    res->stats.stale_locks = nstale;
    res->stats.temporary_files = json_array_size(tmp);
    res->stats.temporary_files_may_be_in_use = others_live;
    json_decref(locks);
    json_decref(tmp);
    return 0;
}

int repo_check_run(struct repo *r, const struct repo_check_opts *o, struct repo_check_result *res,
                   struct err *e)
{
    memset(res, 0, sizeof(*res));
    if (repo_lock(r, false, "check", e) != 0)
        return -1;
    int rc = check_locked(r, o, res, e);
    if (rc == 0 && check_leftovers(r, res, e) != 0)
        rc = -1;
    repo_unlock(r);
    if (rc != 0)
        repo_check_result_free(res);
    return rc;
}

void repo_check_result_free(struct repo_check_result *res)
{
    json_decref(res->errors);
    json_decref(res->warnings);
    json_decref(res->state);
    memset(res, 0, sizeof(*res));
}

json_t *repo_check_result_to_json(const struct repo_check_result *res)
{
    const struct repo_check_stats *st = &res->stats;
    return json_pack(
        "{s:b, s:O, s:O, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:I, s:I, s:b}, s:O}", "ok", res->ok,
        "errors", res->errors, "warnings", res->warnings, "stats", "packs", (json_int_t)st->packs,
        "pack_bytes", (json_int_t)st->pack_bytes, "blobs", (json_int_t)st->blobs, "index_files",
        (json_int_t)st->index_files, "snapshots", (json_int_t)st->snapshots, "blob_references",
        (json_int_t)st->blob_references, "read_data", st->read_data, "stale_locks",
        (json_int_t)st->stale_locks, "temporary_files", (json_int_t)st->temporary_files,
        "temporary_files_may_be_in_use", st->temporary_files_may_be_in_use, "state", res->state);
}

int repo_check(struct repo *r, const struct repo_check_opts *o, json_t **report, struct err *e)
{
    *report = NULL;
    struct repo_check_result res;
    if (repo_check_run(r, o, &res, e) != 0)
        return -1;
    *report = repo_check_result_to_json(&res);
    repo_check_result_free(&res);
    return 0;
}

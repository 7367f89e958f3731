/* caris-backup copy: backups into a second repository, blob by blob by chunk id. See
 * caris/copy.h for the contract. */
#include "caris/copy.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "caris/backup.h"
#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/pipeline.h"
#include "caris/readplan.h"
#include "caris/retention.h"
#include "caris/storage.h"
#include "caris/walwindow.h"

/* The blobs one backup needs, as the reference walk gives them. */
struct blob_ref {
    uint8_t id[32];
    bool meta;
};
struct blob_list {
    struct blob_ref *v;
    size_t n, cap;
    bool malformed;
    struct err load_err;
};

static void collect_blob(void *ctx, size_t snap, const uint8_t *id, long entry, bool meta)
{
    (void)snap;
    (void)entry;
    struct blob_list *l = ctx;
    if (!id) {
        l->malformed = true;
        return;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->v = xrealloc(l->v, xsize(l->cap, sizeof(*l->v), 0));
    }
    memcpy(l->v[l->n].id, id, 32);
    l->v[l->n].meta = meta;
    l->n++;
}

static void collect_end(void *ctx, size_t snap, json_t *summary, const struct err *load_error)
{
    (void)snap;
    (void)summary;
    struct blob_list *l = ctx;
    if (load_error)
        l->load_err = *load_error;
}

static int cmp_blob(const void *a, const void *b)
{
    return memcmp(((const struct blob_ref *)a)->id, ((const struct blob_ref *)b)->id, 32);
}

/* Sorts l by id and drops repeats (a blob is meta when any of its uses is). */
static void blob_list_unique(struct blob_list *l)
{
    if (!l->n)
        return;
    qsort(l->v, l->n, sizeof(*l->v), cmp_blob);
    size_t k = 1;
    for (size_t i = 1; i < l->n; i++) {
        if (memcmp(l->v[i].id, l->v[k - 1].id, 32) != 0)
            l->v[k++] = l->v[i];
        else if (l->v[i].meta)
            l->v[k - 1].meta = true;
    }
    l->n = k;
}

/* Every distinct blob the snapshot (a summary with "_file") needs in src. */
static int backup_blobs(struct repo *src, json_t *summary, const struct caris_op *op,
                        struct blob_list *l, struct err *e)
{
    json_t *one = json_array();
    json_array_append(one, summary);
    struct repo_ref_walk w = {.blob = collect_blob, .snapshot_end = collect_end, .ctx = l};
    (void)op; /* the walk of one snapshot is short: its progress would only flicker */
    int rc = repo_walk_references(src, one, &w, e);
    json_decref(one);
    if (rc != 0)
        return -1;
    const char *id = json_string_value(json_object_get(summary, "id"));
    if (err_is_set(&l->load_err)) {
        *e = l->load_err;
        err_wrap(e, "cannot copy backup %s", id);
        return -1;
    }
    if (l->malformed)
        return err_set(e, ERR_DAMAGE, "run `caris-backup check` on the source",
                       "cannot copy backup %s: its manifest has a malformed chunk reference", id);
    blob_list_unique(l);
    return 0;
}

/* A WAL record's "name sha256" (false when it lacks either): what says that dst has it. */
static bool record_key(json_t *rec, char *out, size_t n)
{
    const char *name = json_string_value(json_object_get(rec, "name"));
    const char *sha = json_string_value(json_object_get(rec, "sha256"));
    return name && sha && (size_t)snprintf(out, n, "%s %s", name, sha) < n;
}

/* The WAL a physical backup needs to become consistent, from src's WAL archive
 * (caris_wal_base_records: every record of the range, the backup label file and streamed
 * partials among them). The WAL is not in the snapshot (it is in the archive,
 * docs/REPOSITORY-FORMAT.md "Physical backups"): without it, a copy restores a data directory
 * no server can start. Returns [[kind, record], ...], the records dst lacks (the chunks of
 * every record of the range added to l, dst's too: its data may be lost there; [] for other
 * backups), and *missing set when src's archive lacks a segment of the range (damaged records
 * counted in *damaged_n); NULL with e. */
static json_t *backup_wal(struct repo *src, struct repo *dst, json_t *s, struct blob_list *l,
                          bool *missing, size_t *damaged_n, struct err *e)
{
    *missing = false;
    *damaged_n = 0;
    const char *id = json_string_value(json_object_get(s, "id")) ?: "?";
    struct caris_base_wal w;
    if (caris_wal_base_records(src, s, false, &w, e) != 0) {
        err_wrap(e, "cannot copy the WAL of backup %s", id);
        return NULL;
    }
    *damaged_n = w.damaged;
    *missing = json_array_size(w.missing) > 0; /* the source cannot restore it either */
    json_t *out = json_array();
    json_t *there[2] = {NULL, NULL}; /* dst's, listed once a record is wanted (an S3 GET each) */
    static const char *const kinds[] = {"wal", "walstream"};
    size_t i, j;
    json_t *wx, *x;
    json_array_foreach(w.records, i, wx)
    {
        const char *kind = json_string_value(json_array_get(wx, 0));
        json_t *rec = json_array_get(wx, 1);
        size_t k = strcmp(kind, kinds[0]) == 0 ? 0 : 1;
        if (!there[k]) {
            json_t *damaged = NULL;
            json_t *list = repo_record_list(dst, kinds[k], &damaged, e);
            json_decref(damaged);
            if (!list)
                break;
            /* looked up by "name sha256", once, not by a walk for each record wanted */
            there[k] = json_object();
            json_array_foreach(list, j, x)
            {
                char key[160];
                if (record_key(x, key, sizeof(key)))
                    json_object_set_new(there[k], key, json_true());
            }
            json_decref(list);
        }
        /* its blobs whether or not the destination has the record: a record there says
         * nothing of its data (a pack lost in the destination: the copy found the record
         * by its name, sent nothing, and said "already there" for good) */
        json_t *c;
        json_array_foreach(json_object_get(rec, "chunks"), j, c)
        {
            uint8_t bid[32];
            const char *hex = json_string_value(json_array_get(c, 0));
            if (!hex || cx_unhex(hex, bid, 32) != 0)
                l->malformed = true;
            else
                collect_blob(l, 0, bid, -1, false);
        }
        char key[160];
        if (record_key(rec, key, sizeof(key)) && json_object_get(there[k], key))
            continue;
        json_array_append_new(out, json_pack("[sO]", kinds[k], rec));
    }
    bool failed = i < json_array_size(w.records);
    json_decref(there[0]);
    json_decref(there[1]);
    caris_base_wal_free(&w);
    if (failed) {
        json_decref(out);
        err_wrap(e, "cannot copy the WAL of backup %s", id);
        return NULL;
    }
    if (l->malformed) {
        json_decref(out);
        err_set(e, ERR_DAMAGE, "run `caris-backup check` on the source",
                "cannot copy the WAL of backup %s: a WAL record has a malformed chunk reference",
                id);
        return NULL;
    }
    blob_list_unique(l);
    return out;
}

/* A summary as stored, without the fields the listing adds. */
static json_t *summary_stored(json_t *s)
{
    json_t *c = json_deep_copy(s);
    json_object_del(c, "_file");
    return c;
}

/* 1 when dst (shown: its location) already has the backup with this summary, 0 when it has no
 * backup of that id, -1 with e when it has another backup of that id or cannot tell. */
static int dst_has_backup(struct repo *dst, const char *shown, const char *id, json_t *src_summary,
                          struct err *e)
{
    char name[65];
    json_t *there = NULL;
    struct err fe = ERR_INIT;
    if (repo_snapshot_find(dst, id, name, &there, &fe) != 0) {
        if (fe.code == ERR_NOT_FOUND)
            return 0;
        /* said of the destination: the error names a snapshot file and the backup alone, and
         * its hint (restore from another backup) was about the source */
        *e = fe;
        if (fe.code == ERR_DAMAGE)
            snprintf(
                e->hint, sizeof(e->hint),
                "the destination's copy of backup %s is damaged: forget it there by the "
                "snapshot file named (`caris-backup --repo DESTINATION forget snapshots/NAME`, "
                "with the destination's key as BACKUP_ENCRYPTION_KEY), then copy again",
                id);
        return err_wrap(e, "destination %s", shown);
    }
    json_t *a = summary_stored(src_summary), *b = summary_stored(there);
    bool same = json_equal(a, b);
    json_decref(a);
    json_decref(b);
    json_decref(there);
    if (!same)
        return err_set(e, ERR_FAILURE,
                       "the two repositories hold different backups under one id: copy into "
                       "another repository",
                       "the destination holds another backup with id %s", id);
    return 1;
}

/* The plan's uses (on its threads): each blob goes to the writer, one at a time. */
struct copy_run {
    struct repo_writer *w;
    int meta_slot;
    pthread_mutex_t mu;
    struct caris_copy_item *it;
    const struct caris_op *op;
    size_t done, total;
    bool damaged;
    struct err damage;
};

static int copy_use(void *ctx, void *tag, uint64_t off, const uint8_t *data, size_t len,
                    struct err *e)
{
    (void)off;
    struct copy_run *cr = ctx;
    const struct blob_ref *b = tag;
    pthread_mutex_lock(&cr->mu);
    int added = repo_writer_add(cr->w, b->meta ? cr->meta_slot : 0, b->id, data, len, e);
    if (added == 1) {
        cr->it->blobs_copied++;
        cr->it->bytes_copied += len;
    }
    cr->done++;
    pthread_mutex_unlock(&cr->mu);
    return added < 0 ? -1 : 0;
}

static void copy_damaged(void *ctx, void *tag, uint64_t off, const struct err *e)
{
    (void)tag;
    (void)off;
    struct copy_run *cr = ctx;
    pthread_mutex_lock(&cr->mu);
    if (!cr->damaged) {
        cr->damaged = true;
        cr->damage = *e;
    }
    pthread_mutex_unlock(&cr->mu);
}

static void copy_tick(void *ctx)
{
    struct copy_run *cr = ctx;
    pthread_mutex_lock(&cr->mu);
    size_t done = cr->done;
    pthread_mutex_unlock(&cr->mu);
    caris_op_progress(cr->op, "copy", done, cr->total);
}

/* Sends the blobs dst lacks, then adds the WAL records wal lists ([[kind, record], ...], as
 * backup_wal gives them), then commits the snapshot snap_name (NULL: none, for a backup dst
 * has). Under both locks, with the id claimed in dst when there is a snapshot. The blobs are read
 * through a read plan (caris/readplan.h): grouped by the source's packs, near blobs in one ranged
 * read, several reads at once (threads). Every blob is loaded with its id check: only a blob whose
 * plaintext hashes to its id moves; a blob that cannot be read fails the copy before anything is
 * committed. */
static int copy_blobs_and_commit(struct repo *src, struct repo *dst, const char *snap_name,
                                 const struct blob_list *l, json_t *wal, struct caris_copy_item *it,
                                 int threads, const struct caris_op *op, struct err *e)
{
    struct repo_writer *w = repo_writer_new(dst, 1);
    json_t *summary = NULL, *ref = NULL;
    int rc = -1;
    struct readplan *plan = readplan_new(src);
    struct copy_run cr = {.w = w,
                          .meta_slot = repo_writer_meta_slot(w),
                          .it = it,
                          .op = op,
                          .total = l->n,
                          .damage = ERR_INIT};
    pthread_mutex_init(&cr.mu, NULL);
    for (size_t i = 0; i < l->n; i++) {
        if (repo_has_blob(dst, l->v[i].id))
            continue;
        int64_t len = repo_blob_size(src, l->v[i].id);
        if (len < 0) {
            err_set(e, ERR_DAMAGE, "run `caris-backup check` on the source",
                    "a blob of backup %s is not in the source's index", it->backup_id);
            err_wrap(e, "cannot copy backup %s from the source", it->backup_id);
            goto out;
        }
        readplan_add(plan, l->v[i].id, (uint32_t)len, (void *)&l->v[i], 0);
    }
    cr.done = l->n - readplan_uses(plan);
    caris_op_progress(op, "copy", cr.done, l->n);
    static const struct readplan_ops ops = {
        .use = copy_use, .damaged = copy_damaged, .tick = copy_tick};
    if (readplan_run(plan, readplan_threads(src, threads), 0, &ops, &cr, op, e) != 0) {
        if (caris_op_cancelled(op))
            caris_op_check(op, "nothing was committed in the destination", e);
        err_wrap(e, "cannot copy backup %s", it->backup_id);
        goto out;
    }
    if (cr.damaged) {
        *e = cr.damage;
        err_wrap(e, "cannot copy backup %s from the source", it->backup_id);
        goto out;
    }
    if (repo_writer_flush(w, e) != 0)
        goto out;
    struct repo_writer_stats ws;
    repo_writer_get_stats(w, &ws);
    it->bytes_stored = ws.bytes_stored;
    /* the WAL before the snapshot: a backup listed in dst has what it needs to start (a copy
     * that stops between the two leaves records of WAL, which the next copy finds there) */
    if (json_array_size(wal) && repo_lock_check(dst, e) != 0)
        goto out;
    size_t wi;
    json_t *wx;
    json_array_foreach(wal, wi, wx)
    {
        if (repo_record_add(dst, json_string_value(json_array_get(wx, 0)), json_array_get(wx, 1),
                            e) != 0) {
            err_wrap(e, "cannot copy the WAL of backup %s", it->backup_id);
            goto out;
        }
    }
    if (!snap_name) {
        rc = 0;
        goto out;
    }
    if (repo_snapshot_load_ref(src, snap_name, &summary, &ref, e) != 0)
        goto out;
    char name[65];
    if (repo_snapshot_commit(dst, summary, ref, name, e) != 0)
        goto out;
    it->copied = true;
    rc = 0;
out:
    readplan_free(plan);
    pthread_mutex_destroy(&cr.mu);
    repo_writer_free(w);
    json_decref(summary);
    json_decref(ref);
    return rc;
}

/* Verifies backup id in dst (unless o says not to), as every copy ends. */
static int verify_copied(struct repo *dst, const char *id, const struct caris_copy_opts *o,
                         bool wal_missing, struct caris_copy_item *it, struct err *e)
{
    if (o->no_verify)
        return 0;
    struct caris_verify_result vr;
    struct verify_opts vo = {.threads = o->threads, .op = o->op};
    int vrc = caris_verify(dst, id, &vo, &vr, e);
    bool only_missing_wal =
        vr.read.wal_missing && vr.read.wal_missing == json_array_size(vr.read.errors);
    caris_verify_result_free(&vr);
    if (vrc != 0 && wal_missing && only_missing_wal && e->code == ERR_DAMAGE) {
        /* all it found is the WAL the source lacks too (the verification records the copy
         * damaged): the caller's error says it, for every such backup at once */
        err_clear(e);
        return 0;
    }
    if (vrc != 0 && caris_op_cancelled(o->op)) /* not judged: no damage to report */
        return err_wrap(e,
                        "backup %s is in the destination, but its verification there was "
                        "cancelled (the next copy of it verifies it)",
                        id);
    if (vrc != 0) {
        err_wrap(e, "backup %s was copied but does not verify in the destination", id);
        /* (the hint was verify's, about restoring from the damaged repository: here the source
         * is whole, and the next copy sends what was found damaged or missing again) */
        snprintf(e->hint, sizeof(e->hint),
                 "run the copy again: it sends the blobs found damaged or missing there again "
                 "and verifies the backup; `caris-backup --repo DESTINATION check` says what "
                 "else is damaged there");
        return -1;
    }
    it->verified = true;
    return 0;
}

/* Whether the destination's latest verification of backup id passed (records unreadable: no). */
static bool verified_before(struct repo *dst, const char *id)
{
    struct err le = ERR_INIT;
    json_t *last = caris_last_verifications(dst, &le);
    bool ok = json_is_true(json_object_get(json_object_get(last, id), "ok"));
    json_decref(last);
    return ok;
}

/* A backup already in the destination: good once verified there. A copy whose verification
 * failed, or that died before it, left it unverified: verified now, not taken for a good
 * copy; so is one whose missing or damaged blobs were just sent again (resent). */
static int already_there(struct repo *dst, const char *id, const struct caris_copy_opts *o,
                         bool resent, bool wal_missing, struct caris_copy_item *it, struct err *e)
{
    it->already_there = true;
    caris_op_log(o->op, LOG_INFO, "backup %s: already there", id);
    if (!o->no_verify && !resent && verified_before(dst, id)) {
        it->verified = true;
        return 0;
    }
    return verify_copied(dst, id, o, wal_missing, it, e);
}

/* dst's index read again (with its packs listed, as at the start) when index/ is not what it
 * read: another copy committed meanwhile. */
static int dst_index_catch_up(struct repo *dst, struct err *e)
{
    bool outdated;
    if (repo_index_outdated(dst, &outdated, e) != 0)
        return -1;
    return outdated ? repo_index_reload_full(dst, e) : 0;
}

static int copy_one(struct repo *src, struct repo *dst, const char *shown, json_t *s,
                    const struct caris_copy_opts *o, struct caris_copy_item *it, struct err *e)
{
    const char *id = json_string_value(json_object_get(s, "id"));
    const char *file = json_string_value(json_object_get(s, "_file"));
    if (!id || !file)
        return err_set(e, ERR_DAMAGE, NULL, "a backup of the source has no id");
    it->backup_id = xstrdup(id);
    struct blob_list l = {.load_err = ERR_INIT};
    int rc = -1;
    char *claim = NULL;
    json_t *wal = NULL;
    bool wal_missing = false;
    size_t wal_damaged = 0;
    int there = dst_has_backup(dst, shown, id, s, e);
    if (there < 0)
        goto out;
    if (backup_blobs(src, s, o->op, &l, e) != 0 ||
        !(wal = backup_wal(src, dst, s, &l, &wal_missing, &wal_damaged, e)))
        goto out;
    if (wal_missing) {
        char dn[80] = "";
        if (wal_damaged)
            snprintf(dn, sizeof(dn), " (%zu of its WAL records cannot be read)", wal_damaged);
        caris_op_log(o->op, LOG_WARN,
                     "backup %s: the source's WAL archive lacks WAL the backup needs%s: copied as "
                     "it is, but neither copy can be restored",
                     id, dn);
    }
    it->blobs = l.n;
    /* test-only: CARIS_TEST_COPY_HOLD=PATH holds here, the destination looked at, while PATH
     * exists (test_copy: another copy commits the backup meanwhile) */
    test_hold_point("CARIS_TEST_COPY_HOLD");
    if (there == 1) {
        /* Another copy may have committed it since this one read the destination's index
         * (when it took its lock). Read again, the index has that copy's new index file; else
         * its blobs counted as lost (sent again) and, after the claim below, as missing in the
         * verification ("does not verify in the destination", exit 4, of a sound backup: audit
         * M2). With the packs listed, as at the start. */
        if (dst_index_catch_up(dst, e) != 0)
            goto out;
        /* Blobs it needs that the destination lost (a pack deleted there: the index was read
         * with a listing of data/) or recorded damaged (a verification there failed) are sent
         * again: a backup listed there whose data is gone was reported "already there,
         * verified" by every later copy, from its old verification record. And one copied
         * before without its WAL (copy did not take it until December 2026). */
        size_t lost = 0;
        for (size_t i = 0; i < l.n; i++)
            lost += !repo_has_blob(dst, l.v[i].id);
        if (lost)
            caris_op_log(o->op, LOG_WARN,
                         "backup %s: already in the destination, but %zu of the blobs it needs "
                         "are missing or damaged there: sent again",
                         id, lost);
        if ((lost || json_array_size(wal)) &&
            copy_blobs_and_commit(src, dst, NULL, &l, wal, it, o->threads, o->op, e) != 0)
            goto out;
        rc = already_there(dst, id, o, lost > 0, wal_missing, it, e);
        goto out;
    }
    /* An earlier copy of this backup that died (kill -9, a machine that went down) left its
     * claim: taken over, so that a nightly copy does not wait for someone to run `unlock`. */
    char holder[400];
    int c = repo_claim_or_take(dst, id, &claim, holder, sizeof(holder), e);
    if (c < 0)
        goto out;
    if (c == 1) {
        it->busy = true;
        err_set(e, ERR_LOCKED,
                "wait for the other copy to finish, then copy again; if none runs, "
                "`caris-backup --repo DESTINATION check` tells whether its claim is stale and "
                "`unlock` (with the destination's key as BACKUP_ENCRYPTION_KEY) removes it",
                "backup %s is being written into the destination by another process (%s)", id,
                holder[0] ? holder : "an unreadable claim");
        goto out;
    }
    /* a copy that committed between the check above and the claim (verified as any backup
     * already there: that copy's own verification may yet fail) */
    there = dst_has_backup(dst, shown, id, s, e);
    if (there < 0 || (there == 1 && dst_index_catch_up(dst, e) != 0))
        goto out;
    if (there == 1) {
        rc = already_there(dst, id, o, false, wal_missing, it, e);
        goto out;
    }
    if (copy_blobs_and_commit(src, dst, file, &l, wal, it, o->threads, o->op, e) != 0)
        goto out;
    repo_claim_release_all(dst, claim);
    free(claim);
    claim = NULL;
    caris_op_log(o->op, LOG_INFO, "backup %s: copied %llu of %llu blobs", id,
                 (unsigned long long)it->blobs_copied, (unsigned long long)it->blobs);
    /* test-only: CARIS_TEST_COPY_VERIFY_HOLD=PATH holds here, committed and not yet verified */
    test_hold_point("CARIS_TEST_COPY_VERIFY_HOLD");
    if (verify_copied(dst, id, o, wal_missing, it, e) != 0)
        goto out;
    rc = 0;
out:
    if (rc == 0 && wal_missing) { /* said by the caller, once every backup is copied */
        it->wal_missing = true;
        it->verified = false;
    }
    if (claim && it->already_there)
        repo_claim_release_all(dst, claim); /* the backup is there: what we took over can go */
    else if (claim)
        repo_claim_release(dst, claim);
    free(claim);
    free(l.v);
    json_decref(wal);
    return rc;
}

/* The time part of a backup id ("..._2024-01-15T03-00-00"), or NULL. */
static const char *id_time(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    return n > 20 && id[n - 20] == '_' ? id + n - 19 : NULL;
}

/* The damaged snapshots of the source that a --latest or --all copy leaves out, named (their
 * backup id, else their object): for --all every one; for --latest those that may be newer
 * than latest (an unknown id may be). "" when none. */
static void damaged_left_out(json_t *damaged, const struct caris_copy_opts *o, json_t *latest,
                             char *out, size_t n)
{
    out[0] = '\0';
    const char *lt = id_time(json_string_value(json_object_get(latest, "id")));
    size_t i;
    json_t *d;
    json_array_foreach(damaged, i, d)
    {
        const char *id = json_string_value(json_object_get(d, "id"));
        const char *dt = id_time(id);
        if (o->latest && lt && dt && strcmp(dt, lt) < 0) /* older: not the latest */
            continue;
        const char *name = id ? id : json_string_value(json_object_get(d, "object"));
        str_list_add(out, n, name ? name : "?");
    }
}

/* The summaries to copy, in order (new reference). *left_out: the damaged backups a --latest
 * or --all copy cannot include (see damaged_left_out). */
static json_t *select_backups(struct repo *src, const struct caris_copy_opts *o, char *left_out,
                              size_t nleft, struct err *e)
{
    json_t *damaged = NULL;
    json_t *list = repo_snapshot_list(src, &damaged, e);
    left_out[0] = '\0';
    if (list && (o->all || o->latest))
        damaged_left_out(damaged, o, json_array_get(list, json_array_size(list) - 1), left_out,
                         nleft);
    json_decref(damaged);
    if (!list)
        return NULL;
    json_t *out = json_array();
    size_t n = json_array_size(list);
    if (o->all) {
        json_array_extend(out, list);
    } else if (o->latest) {
        if (n == 0) {
            err_set(e, ERR_NOT_FOUND, "make a backup first", "the source holds no backup");
            goto fail;
        }
        if (caris_backup_latest_check(json_array_get(list, n - 1), "--latest", e) != 0)
            goto fail;
        json_array_append(out, json_array_get(list, n - 1));
    } else {
        for (size_t k = 0; k < o->nids; k++) {
            json_t *found = NULL, *s;
            size_t i;
            json_array_foreach(list, i, s)
            {
                if (strcmp(json_string_value(json_object_get(s, "id")) ?: "", o->ids[k]) == 0)
                    found = s;
            }
            if (!found) {
                err_set(e, ERR_NOT_FOUND, "`caris-backup list` shows the backups there are",
                        "no backup %s in the source", o->ids[k]);
                goto fail;
            }
            json_array_append(out, found);
        }
    }
    json_decref(list);
    return out;
fail:
    json_decref(list);
    json_decref(out);
    return NULL;
}

/* The destination's warnings from the (n_told)th on, told through the operation's log: what
 * opening it found (a backup deleted from it, its state record rolled back, a pack gone) and
 * what the copy met there. The caller opened it and told nobody: the copy off the machine
 * losing a backup went unsaid. Returns how many there are now. */
static size_t tell_dst_warnings(struct repo *dst, const char *shown, const struct caris_op *op,
                                size_t n_told)
{
    json_t *ws = repo_warnings(dst);
    size_t n = json_array_size(ws);
    for (size_t i = n_told; i < n; i++) {
        json_t *w = json_array_get(ws, i);
        caris_op_log(op, LOG_WARN, "destination %s: %s: %s", shown,
                     json_string_value(json_object_get(w, "object")),
                     json_string_value(json_object_get(w, "message")));
    }
    return n;
}

int caris_copy(struct repo *src, struct repo *dst, const char *dst_location,
               const struct caris_copy_opts *o, struct caris_copy_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    res->destination = storage_location_redact(dst_location ? dst_location : repo_path(dst));
    if (!o->all && !o->latest && o->nids == 0)
        return err_set(e, ERR_USAGE, NULL, "copy needs backup ids, --latest or --all");
    if (strcmp(repo_id(src), repo_id(dst)) == 0)
        return err_set(e, ERR_USAGE, "give another repository with --to",
                       "the source and the destination are the same repository");
    if (!repo_same_chunking(src, dst))
        return err_set(e, ERR_USAGE,
                       "create the destination with `caris-backup init --copy-chunker-from "
                       "SOURCE`",
                       "the destination does not deduplicate with the source (different chunker "
                       "parameters or chunk-id key): copy refuses to re-chunk");
    if (repo_lock(src, false, "copy", e) != 0)
        return -1;
    int rc = -1;
    json_t *sel = NULL;
    size_t told = 0;
    if (repo_lock(dst, false, "copy", e) != 0) {
        err_wrap(e, "destination %s", res->destination);
        repo_unlock(src);
        return -1;
    }
    /* the destination's packs listed, not taken from its open cache: a pack lost there must
     * not pass for a blob it has */
    if (repo_index_list_packs(dst, e) != 0) {
        err_wrap(e, "destination %s", res->destination);
        goto out;
    }
    told = tell_dst_warnings(dst, res->destination, o->op, 0);
    char left_out[600];
    if (!(sel = select_backups(src, o, left_out, sizeof(left_out), e)))
        goto out;
    size_t n = json_array_size(sel);
    res->items = xcalloc(n ? n : 1, sizeof(*res->items));
    /* A backup another copy is writing into the destination now is left to it: the others are
     * copied all the same (one claimed backup stopped the rest of a nightly --all), and the
     * run then fails, naming it. */
    char busy[600] = "", busy_hint[sizeof(e->hint)] = "";
    for (size_t i = 0; i < n; i++) {
        struct caris_copy_item *it = &res->items[res->n++];
        int r1 = copy_one(src, dst, res->destination, json_array_get(sel, i), o, it, e);
        res->blobs_copied += it->blobs_copied;
        res->bytes_copied += it->bytes_copied;
        res->bytes_stored += it->bytes_stored;
        if (r1 != 0 && it->busy && n > 1) {
            caris_op_log(o->op, LOG_WARN, "%s: not copied by this run", e->msg);
            str_list_add(busy, sizeof(busy), it->backup_id);
            snprintf(busy_hint, sizeof(busy_hint), "%s", e->hint);
            err_clear(e);
            continue;
        }
        if (r1 != 0)
            goto out;
    }
    /* a physical backup whose WAL is not in the source's archive is not restorable from either
     * side: copied, and not a success */
    char no_wal[600] = "";
    for (size_t i = 0; i < res->n; i++)
        if (res->items[i].wal_missing)
            str_list_add(no_wal, sizeof(no_wal), res->items[i].backup_id);
    if (*no_wal) {
        err_set(e, ERR_DAMAGE,
                "`caris-backup check` on the source names the WAL that is missing or damaged; "
                "make a new physical backup (its WAL is archived from now on)",
                "copied, but the source's WAL archive lacks WAL they need, so neither copy can "
                "be restored: %s%s%s%s%s",
                no_wal, *left_out ? "; and damaged in the source, not copied: " : "", left_out,
                *busy ? "; and being written into the destination by another process: " : "", busy);
        goto out;
    }
    /* What could be copied is; the newest backup (or any, for --all) that could not be is an
     * error, not a success: the copy off the machine lacks it. */
    if (*left_out) {
        err_set(e, ERR_DAMAGE,
                "`caris-backup check` says what is damaged; copy the backups that can be read "
                "by id, and make a new backup",
                "damaged in the source, not copied: %s%s%s", left_out,
                *busy ? "; and being written into the destination by another process: " : "", busy);
        goto out;
    }
    if (*busy) {
        err_set(e, ERR_LOCKED, busy_hint,
                "being written into the destination by another process, not copied by this run "
                "(the others were): %s",
                busy);
        goto out;
    }
    rc = 0;
out:
    json_decref(sel);
    repo_unlock(dst);
    repo_unlock(src);
    tell_dst_warnings(dst, res->destination, o->op, told);
    /* damage met on either side (the source's blobs read, the copy read back) is recorded:
     * the next backup into that repository stores those blobs again */
    caris_bad_blobs_record(src, "copy", o->op);
    caris_bad_blobs_record(dst, "copy", o->op);
    return rc;
}

void caris_copy_result_free(struct caris_copy_result *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->n; i++)
        free(res->items[i].backup_id);
    free(res->items);
    free(res->destination);
    memset(res, 0, sizeof(*res));
}

json_t *caris_copy_result_to_json(const struct caris_copy_result *res)
{
    json_t *items = json_array();
    for (size_t i = 0; i < res->n; i++) {
        const struct caris_copy_item *it = &res->items[i];
        json_array_append_new(items, json_pack("{s:s, s:b, s:b, s:b, s:b, s:I, s:I, s:I, s:I}",
                                               "backupId", it->backup_id ? it->backup_id : "",
                                               "alreadyThere", it->already_there, "copied",
                                               it->copied, "verified", it->verified, "walMissing",
                                               it->wal_missing, "blobs", (json_int_t)it->blobs,
                                               "blobsCopied", (json_int_t)it->blobs_copied,
                                               "bytesCopied", (json_int_t)it->bytes_copied,
                                               "bytesStored", (json_int_t)it->bytes_stored));
    }
    return json_pack("{s:s, s:o, s:I, s:I, s:I}", "destination",
                     res->destination ? res->destination : "", "backups", items, "blobsCopied",
                     (json_int_t)res->blobs_copied, "bytesCopied", (json_int_t)res->bytes_copied,
                     "bytesStored", (json_int_t)res->bytes_stored);
}

char *caris_cloud_location(const struct caris_cloud_target *t, struct err *e)
{
    if (t->provider && strcmp(t->provider, "s3") != 0) {
        err_set(e, ERR_USAGE, "use provider \"s3\" (any S3-compatible service)",
                "unknown cloud provider '%s'", t->provider);
        return NULL;
    }
    if (!t->bucket || !*t->bucket || strchr(t->bucket, '/')) {
        err_set(e, ERR_USAGE, NULL, "upload to cloud needs a bucket name");
        return NULL;
    }
    char *endpoint = t->endpoint && *t->endpoint
                         ? xstrdup(t->endpoint)
                         : xasprintf("https://s3.%s.amazonaws.com",
                                     t->region && *t->region ? t->region : storage_s3_region());
    size_t el = strlen(endpoint);
    while (el && endpoint[el - 1] == '/')
        endpoint[--el] = 0;
    char *loc = t->prefix && *t->prefix ? xasprintf("s3:%s/%s/%s", endpoint, t->bucket, t->prefix)
                                        : xasprintf("s3:%s/%s", endpoint, t->bucket);
    free(endpoint);
    return loc;
}

void caris_copy_open_hint(struct err *e, const char *key_var, const char *src)
{
    if (e->code == ERR_WRONG_KEY && !strstr(e->hint, key_var))
        snprintf(e->hint, sizeof(e->hint),
                 "%s must hold the key of the destination repository (BACKUP_ENCRYPTION_KEY "
                 "is the source's)",
                 key_var);
    else if (e->code == ERR_DAMAGE && strstr(e->msg, "key slot") &&
             !strstr(e->msg, "does not authenticate"))
        snprintf(e->hint, sizeof(e->hint),
                 "the destination's key comes from %s, not BACKUP_ENCRYPTION_KEY: if it is right, "
                 "its key slot in the destination is the damaged one: restore the destination's "
                 "keys/ from a copy (or open it with another key and `key add` this one again)",
                 key_var);
    else if (e->code == ERR_NOT_FOUND)
        snprintf(e->hint, sizeof(e->hint),
                 "create it so that it shares this repository's chunking: `caris-backup --repo "
                 "DESTINATION init --copy-chunker-from %s` (its key from %s)",
                 src, key_var);
}

int caris_files_upload_to_cloud(struct repo *src, const char *backup_id,
                                const struct caris_cloud_target *t, const char *dst_key,
                                const struct caris_op *op, struct caris_copy_result *res,
                                struct err *e)
{
    memset(res, 0, sizeof(*res));
    /* The region is the process's S3 setting, read by every S3 storage: a target naming
     * another one is refused rather than changing it for the whole process (a daemon's other
     * jobs and threads read it too). */
    if (t->region && *t->region && strcmp(t->region, storage_s3_region()) != 0) {
        err_set(e, ERR_USAGE,
                "set AWS_REGION (or BACKUP_S3_REGION in .env.local) to the bucket's region, or "
                "leave the target's region out",
                "the cloud target's region '%s' is not the configured S3 region '%s'", t->region,
                storage_s3_region());
        return -1;
    }
    char *loc = caris_cloud_location(t, e);
    if (!loc)
        return -1;
    struct repo *dst = repo_open(loc, dst_key, e);
    if (!dst) {
        char *shown = storage_location_redact(loc);
        err_wrap(e, "destination %s", shown);
        free(shown);
        free(loc);
        return -1;
    }
    const char *ids[] = {backup_id};
    struct caris_copy_opts o = {.ids = ids, .nids = 1, .op = op};
    int rc = caris_copy(src, dst, loc, &o, res, e);
    repo_close(dst);
    free(loc);
    return rc;
}

/* Prune as a service: the lock around the engine (repo_prune) and its report. */
#include "caris/prune.h"
#include "caris/backup.h"

#include <stdlib.h>
#include <string.h>

/* The kinds of records that grow with every run and that only list and show read. */
static const char *const COMPACTED_KINDS[] = {"verify", "test-restore"};

/* Before the engine's prune (after it the handle is only fit for closing). With a snapshot
 * that cannot be read, which backups exist is unknown: nothing is compacted (prune refuses
 * then anyway). */
static int compact_records(struct repo *r, const struct caris_prune_opts *o,
                           const struct caris_op *op, struct repo_record_compact_stats *sum,
                           struct err *e)
{
    json_t *damaged = NULL;
    json_t *list = repo_snapshot_list(r, &damaged, e);
    if (!list)
        return -1;
    if (o && o->dry_run)
        repo_snapshots_drop_named(NULL, damaged, o->assume_forgotten, o->nassume_forgotten);
    int rc = 0;
    if (json_array_size(damaged) == 0) {
        json_t *live = json_object();
        size_t i;
        json_t *s;
        json_array_foreach(list, i, s)
        {
            const char *id = json_string_value(json_object_get(s, "id"));
            if (id)
                json_object_set_new(live, id, json_true());
        }
        for (size_t k = 0; o && o->dry_run && k < o->nassume_forgotten; k++)
            json_object_del(live, o->assume_forgotten[k]);
        for (size_t k = 0; rc == 0 && k < sizeof(COMPACTED_KINDS) / sizeof(*COMPACTED_KINDS); k++) {
            struct repo_record_compact_stats st;
            rc = repo_record_compact(r, COMPACTED_KINDS[k], live, 0, o && o->dry_run, &st, e);
            sum->files_before += st.files_before;
            sum->files_after += st.files_after;
            sum->records_before += st.records_before;
            sum->records_after += st.records_after;
        }
        json_decref(live);
        if (rc == 0 && sum->files_before != sum->files_after)
            caris_op_log(
                op, LOG_INFO,
                "prune: %llu record files folded into %llu (%llu records kept of %llu)",
                (unsigned long long)sum->files_before, (unsigned long long)sum->files_after,
                (unsigned long long)sum->records_after, (unsigned long long)sum->records_before);
    }
    json_decref(list);
    json_decref(damaged);
    return rc;
}

/* Under the lock: backups the state record lists whose snapshot is gone (deleted by hand, or
 * an older copy of snapshots/ put back). Pruning would delete what only they needed, which
 * may still be wanted to find out what happened or to recover: refused, unless accepted,
 * then recorded as removed (a dry run records nothing). */
static int check_missing(struct repo *r, const struct caris_prune_opts *o,
                         const struct caris_op *op, bool dry_run, struct err *e)
{
    json_t *rep = NULL;
    if (repo_state_audit(r, &rep, e) != 0)
        return err_wrap(e, "refusing to prune: cannot audit the state record");
    json_t *missing = json_object_get(rep, "missing");
    size_t n = json_array_size(missing);
    int rc = 0;
    const char *first =
        n ? json_string_value(json_object_get(json_array_get(missing, 0), "id")) : NULL;
    /* Without a whole record prune cannot tell which backups' snapshots are gone: with its
     * objects deleted (and no copy on this host), a backup whose snapshot went with them was
     * not missed, and its data was deleted. Accepted, the damaged objects go and a whole
     * record is written again, of the snapshots that are there. */
    const char *record = json_string_value(json_object_get(rep, "record"));
    json_t *bad = json_object_get(rep, "damaged");
    const char *why = json_array_size(bad)                       ? "cannot be read"
                      : record && strcmp(record, "deleted") == 0 ? "is deleted"
                                                                 : NULL;
    bool accept = o && o->accept_missing;
    if (why && !accept) {
        rc = err_set(e, ERR_DAMAGE,
                     "find out what happened first (`caris-backup check`; docs/BACKUP_RECOVERY.md, "
                     "\"Checking backups\"); to prune all the same, run `caris-backup prune "
                     "--accept-missing`",
                     "refusing to prune: the repository's state record %s: prune cannot tell "
                     "which backups are missing, and would delete what only they needed",
                     why);
        json_decref(rep);
        return rc;
    }
    if (why && !dry_run) {
        if (repo_state_accept(r, bad, e) != 0) {
            json_decref(rep);
            return err_wrap(e, "refusing to prune: cannot write the state record again");
        }
        caris_op_log(op, LOG_WARN,
                     "prune: the state record %s: accepted (--accept-missing), written again "
                     "from the snapshots there are",
                     why);
    }
    if (n && !accept) {
        rc = err_set(e, ERR_DAMAGE,
                     "find out what happened first (docs/BACKUP_RECOVERY.md, \"Checking "
                     "backups\"); to accept that they are gone and prune what only they needed, "
                     "run `caris-backup prune --accept-missing`",
                     "refusing to prune: %zu backup(s) in the state record have no snapshot "
                     "(%s%s): what only they needed would be deleted",
                     n, first ? first : "?", n > 1 ? ", ..." : "");
    } else if (n && !dry_run) { /* accepted */
        const char **names = xcalloc(n, sizeof(*names));
        for (size_t i = 0; i < n; i++)
            names[i] = json_string_value(json_object_get(json_array_get(missing, i), "object"));
        rc = repo_snapshots_remove(r, names, n, e);
        free(names);
        if (rc == 0)
            caris_op_log(op, LOG_WARN,
                         "prune: %zu missing backup(s) accepted as gone (%s%s): recorded as "
                         "removed",
                         n, first ? first : "?", n > 1 ? ", ..." : "");
    }
    json_decref(rep);
    return rc;
}

/* Under the lock: a forget that stopped between its state object and the deletion of the
 * snapshot files left backups the record calls removed, their files still there. Their
 * removal is finished first, so that the rest of the prune (records, WAL, data) counts them as
 * gone; a dry run only names them, and its estimate counts them as forgotten. */
static int finish_removals(struct repo *r, bool dry_run, const struct caris_op *op,
                           struct caris_prune_result *res, struct err *e)
{
    json_t *done = NULL;
    if (repo_state_finish_removals(r, dry_run, &done, e) != 0) {
        json_decref(done);
        return err_wrap(e, "refusing to prune: cannot finish the removals a forget began");
    }
    size_t i;
    json_t *x;
    res->removals_finished = json_array();
    json_array_foreach(done, i, x)
    {
        const char *id = json_string_value(json_object_get(x, "id"));
        json_array_append_new(res->removals_finished, json_string(id ? id : "?"));
        caris_op_log(op, LOG_INFO, "prune: %s backup %s, whose forget was interrupted",
                     dry_run ? "would finish removing" : "finished removing", id ? id : "?");
    }
    json_decref(done);
    return 0;
}

/* A dry run holds a shared lock, so a backup may be writing meanwhile: its packs (no index
 * lists them yet) and temporary files count as unused in the estimate, which the real prune,
 * waiting for the exclusive lock, would not delete. Said, with who holds a lock. */
static void warn_busy(struct repo *r, const struct caris_op *op)
{
    struct err le = ERR_INIT;
    json_t *locks = repo_lock_list(r, &le);
    size_t i, n = 0;
    json_t *l, *first = NULL;
    json_array_foreach(locks, i, l)
    {
        const char *kind = json_string_value(json_object_get(l, "kind"));
        if (kind && strcmp(kind, "lock") == 0 && !json_is_true(json_object_get(l, "mine")) &&
            !json_is_true(json_object_get(l, "stale"))) {
            n++;
            if (!first)
                first = l;
        }
    }
    if (n)
        caris_op_log(op, LOG_WARN,
                     "%zu other operation%s hold%s a lock now (%s): what %s writing counts as "
                     "unused in this estimate; the real prune waits for %s",
                     n, n == 1 ? "" : "s", n == 1 ? "s" : "",
                     json_string_value(json_object_get(first, "description")) ?: "?",
                     n == 1 ? "it is" : "they are", n == 1 ? "it" : "them");
    json_decref(locks);
}

int caris_prune(struct repo *r, const struct caris_prune_opts *o, const struct caris_op *op,
                struct caris_prune_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    double max_unused = o && o->max_unused >= 0 ? o->max_unused : CARIS_PRUNE_DEFAULT_MAX_UNUSED;
    if (max_unused > 100)
        return err_set(e, ERR_USAGE, "give a percentage between 0 and 100",
                       "invalid --max-unused %.1f", max_unused);
    res->dry_run = o && o->dry_run;
    int64_t t0 = time_mono_ns();
    /* A dry run changes nothing: a shared lock lets backups go on meanwhile. */
    if (repo_lock(r, !res->dry_run, res->dry_run ? "prune --dry-run" : "prune", e) != 0)
        return -1;
    if (finish_removals(r, res->dry_run, op, res, e) != 0) {
        repo_unlock(r);
        return -1;
    }
    /* a dry run counts what the real one would finish removing as forgotten */
    struct caris_prune_opts oo = o ? *o : (struct caris_prune_opts){.max_unused = -1};
    size_t nfin = json_array_size(res->removals_finished);
    const char **assumed = NULL;
    if (res->dry_run && nfin) {
        assumed = xcalloc(oo.nassume_forgotten + nfin, sizeof(*assumed));
        for (size_t k = 0; k < oo.nassume_forgotten; k++)
            assumed[k] = oo.assume_forgotten[k];
        for (size_t k = 0; k < nfin; k++)
            assumed[oo.nassume_forgotten + k] =
                json_string_value(json_array_get(res->removals_finished, k));
        oo.assume_forgotten = assumed;
        oo.nassume_forgotten += nfin;
    }
    o = &oo;
    if (check_missing(r, o, op, res->dry_run, e) != 0 ||
        compact_records(r, o, op, &res->records, e) != 0) {
        repo_unlock(r);
        free(assumed);
        return -1;
    }
    if (res->dry_run)
        warn_busy(r, op);
    struct repo_prune_opts po = {.dry_run = res->dry_run,
                                 .max_unused = max_unused,
                                 .op = op,
                                 .assume_forgotten = o->assume_forgotten,
                                 .nassume_forgotten = o->nassume_forgotten};
    /* WAL retention first: the WAL it removes is then unreferenced data for repo_prune */
    int rc = caris_wal_retention_apply(r, res->dry_run, po.assume_forgotten, po.nassume_forgotten,
                                       op, &res->wal, e);
    if (rc == 0)
        rc = repo_prune(r, &po, &res->stats, e);
    /* a damaged pack the prune rewrote or deleted takes its records of damage with it; what
     * the prune found damaged itself is recorded for the next backup to store again */
    size_t gone = 0;
    struct err ge = ERR_INIT;
    if (rc == 0 && !res->dry_run && repo_bad_blobs_forget_gone(r, &gone, &ge) != 0)
        caris_op_log(op, LOG_WARN, "cannot remove the records of damage prune removed: %s", ge.msg);
    res->bad_blob_records_removed = gone;
    if (!res->dry_run)
        caris_bad_blobs_record(r, "prune", op);
    repo_unlock(r);
    free(assumed);
    res->duration_ns = time_mono_ns() - t0;
    if (rc == 0 && !res->dry_run)
        caris_op_log(op, LOG_INFO,
                     "prune: %llu packs deleted, %llu repacked, repository %llu -> %llu bytes",
                     (unsigned long long)res->stats.packs_deleted,
                     (unsigned long long)res->stats.packs_repacked,
                     (unsigned long long)res->stats.repo_bytes_before,
                     (unsigned long long)res->stats.repo_bytes_after);
    return rc;
}

json_t *caris_prune_result_to_json(const struct caris_prune_result *res)
{
    const struct repo_prune_stats *s = &res->stats;
    json_t *j = json_pack(
        "{s:b, s:I, s:I, s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:I}, s:{s:I, s:I}, s:{s:I, s:I}, s:I}",
        "dry_run", res->dry_run, "duration_ms", (json_int_t)(res->duration_ns / 1000000),
        "snapshots", (json_int_t)s->snapshots, "blobs", "total", (json_int_t)s->blobs, "referenced",
        (json_int_t)s->blobs_referenced, "missing", (json_int_t)s->blobs_missing, "repacked",
        (json_int_t)s->blobs_repacked, "packs", "before", (json_int_t)s->packs_before,
        "bytes_before", (json_int_t)s->pack_bytes_before, "deleted", (json_int_t)s->packs_deleted,
        "bytes_deleted", (json_int_t)s->pack_bytes_deleted, "repacked",
        (json_int_t)s->packs_repacked, "bytes_repacked", (json_int_t)s->pack_bytes_repacked,
        "written", (json_int_t)s->packs_written, "after", (json_int_t)s->packs_after, "bytes_after",
        (json_int_t)s->pack_bytes_after, "bytes_freed",
        (json_int_t)(s->pack_bytes_before > s->pack_bytes_after
                         ? s->pack_bytes_before - s->pack_bytes_after
                         : 0),
        "index_files", "before", (json_int_t)s->index_files_before, "written",
        (json_int_t)s->index_files_written, "repository_bytes", "before",
        (json_int_t)s->repo_bytes_before, "after", (json_int_t)s->repo_bytes_after,
        "leftovers_removed", (json_int_t)s->leftovers_removed);
    json_object_set_new(j, "wal", caris_wal_retention_to_json(&res->wal));
    json_object_set_new(j, "records",
                        json_pack("{s:I, s:I, s:I, s:I}", "files_before",
                                  (json_int_t)res->records.files_before, "files_after",
                                  (json_int_t)res->records.files_after, "before",
                                  (json_int_t)res->records.records_before, "after",
                                  (json_int_t)res->records.records_after));
    json_object_set_new(j, "bad_blob_records_removed",
                        json_integer((json_int_t)res->bad_blob_records_removed));
    json_object_set_new(j, "removals_finished",
                        res->removals_finished ? json_incref(res->removals_finished)
                                               : json_array());
    return j;
}

void caris_prune_result_free(struct caris_prune_result *res)
{
    json_decref(res->removals_finished);
    res->removals_finished = NULL;
}

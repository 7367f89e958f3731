/* The list of backups as front ends show it (the seed's listBackups). */
#include <string.h>

#include "caris/backup.h"
#include "caris/core.h"
#include "caris/dbbackup.h"
#include "caris/walwindow.h"
#include "common.h"
#include "inspect_internal.h"

/* The state record's findings, in the list itself (so that `list --json` carries them):
 * "record" on every backup ("recorded", "unrecorded", "replayed", "removing", or "none" before the
 * record began), an entry {"id", "record": "missing", "status": "missing"} for each backup
 * the record (or the local copy) expects but whose snapshot is gone, and
 * "repositoryRolledBack": true on every entry when the repository went back in time. */
static void mark_record(json_t *st, json_t *list)
{
    if (!st)
        return;
    json_t *replayed = json_object(), *unrecorded = json_object(), *removing = json_object();
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(st, "replayed"), i, x)
        json_object_set_new(replayed, json_string_value(json_object_get(x, "object")), json_true());
    json_array_foreach(json_object_get(st, "removing"), i, x)
        json_object_set_new(removing, json_string_value(json_object_get(x, "object")), json_true());
    json_array_foreach(json_object_get(st, "unrecorded"), i, x)
        json_object_set_new(unrecorded, json_string_value(x), json_true());
    bool none = strcmp(json_string_value(json_object_get(st, "record")) ?: "", "none") == 0;
    json_array_foreach(list, i, x)
    {
        const char *f = json_string_value(json_object_get(x, "_file")) ?: "";
        json_object_set_new(x, "record",
                            json_string(json_object_get(replayed, f)     ? "replayed"
                                        : json_object_get(removing, f)   ? "removing"
                                        : none                           ? "none"
                                        : json_object_get(unrecorded, f) ? "unrecorded"
                                                                         : "recorded"));
    }
    json_array_foreach(json_object_get(st, "missing"), i, x) json_array_append_new(
        list, json_pack("{s:O, s:s, s:s, s:O}", "id", json_object_get(x, "id"), "record", "missing",
                        "status", "missing", "_file", json_object_get(x, "object")));
    if (json_is_true(json_object_get(st, "rolled_back")))
        json_array_foreach(list, i, x) json_object_set_new(x, "repositoryRolledBack", json_true());
    json_decref(replayed);
    json_decref(removing);
    json_decref(unrecorded);
}

void caris_verification_record(struct repo *r, const char *backup_id, bool ok,
                               uint64_t bytes_checked, const struct err *failure,
                               const struct caris_op *op)
{
    char when[40];
    time_format_iso(time_now_ns(), when, sizeof(when));
    json_t *rec = json_pack("{s:s, s:s, s:b, s:I}", "backupId", backup_id, "time", when, "ok", ok,
                            "bytesChecked", (json_int_t)bytes_checked);
    if (!ok && failure)
        json_object_set_new(rec, "error", json_string(failure->msg));
    struct err e = ERR_INIT;
    /* under a shared lock (nested when the caller holds one): a prune running meanwhile
     * removes the temporary file of a record being written */
    if (repo_lock(r, false, "record a verification", &e) != 0) {
        caris_op_log(op, LOG_WARN, "cannot record the verification of %s: %s", backup_id, e.msg);
    } else {
        if (repo_record_add_sequenced(r, "verify", rec, &e) != 0)
            caris_op_log(op, LOG_WARN, "cannot record the verification of %s: %s", backup_id,
                         e.msg);
        repo_unlock(r);
    }
    json_decref(rec);
    if (!ok)
        caris_bad_blobs_record(r, "verify", op);
}

void caris_bad_blobs_record(struct repo *r, const char *by, const struct caris_op *op)
{
    struct err e = ERR_INIT;
    size_t saved = 0;
    if (repo_bad_blobs_save(r, by, &saved, &e) != 0)
        caris_op_log(op, LOG_WARN,
                     "cannot record the damaged blobs found: the next backup may reuse them: %s",
                     e.msg);
    else if (saved) /* a warning: prune finds damage that nothing else reports */
        caris_op_log(op, LOG_WARN,
                     "recorded %zu damaged blob%s: the next backup that meets %s stores %s again",
                     saved, saved == 1 ? "" : "s", saved == 1 ? "it" : "them",
                     saved == 1 ? "it" : "them");
}

/* The latest record of kind for each backup (repo_record_cmp): {"<backupId>": record}. A
 * record that cannot be read may have said a backup is damaged: each is a warning (of list,
 * retention and copy, which read them), and *unreadable (may be NULL) counts them. */
static json_t *last_records(struct repo *r, const char *kind, size_t *unreadable, struct err *e)
{
    json_t *damaged = NULL;
    json_t *recs = repo_record_list(r, kind, &damaged, e);
    if (!recs)
        return NULL;
    size_t k;
    json_t *d;
    json_array_foreach(damaged, k, d)
    {
        repo_warn(r, json_string_value(json_object_get(d, "object")) ?: "records",
                  "a %s record cannot be read (%s): it may have said a backup is damaged, and "
                  "retention by policy refuses until it is gone; run `caris-backup verify "
                  "--all` (each backup is recorded again), then move this file out of the "
                  "repository",
                  strcmp(kind, "verify") == 0 ? "verification" : "test restore",
                  json_string_value(json_object_get(d, "error")) ?: "?");
    }
    if (unreadable)
        *unreadable = json_array_size(damaged);
    json_decref(damaged);
    json_t *out = json_object();
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec)
    {
        const char *id = json_string_value(json_object_get(rec, "backupId"));
        const char *when = json_string_value(json_object_get(rec, "time"));
        if (!id || !when)
            continue;
        json_t *cur = json_object_get(out, id);
        if (!cur || repo_record_cmp(rec, cur) > 0)
            json_object_set(out, id, rec);
    }
    json_decref(recs);
    return out;
}

json_t *caris_db_last_test_restores(struct repo *r, struct err *e)
{
    return last_records(r, "test-restore", NULL, e);
}

json_t *caris_db_last_test_restores_n(struct repo *r, size_t *unreadable, struct err *e)
{
    return last_records(r, "test-restore", unreadable, e);
}

bool caris_backup_known_damaged(json_t *verif, json_t *test, json_t **error, const char **by)
{
    json_t *err = NULL;
    const char *who = NULL;
    if (verif && json_is_false(json_object_get(verif, "ok"))) {
        err = json_object_get(verif, "error");
        who = "verification";
    } else if (test && json_is_false(json_object_get(test, "ok")) &&
               strcmp(json_string_value(json_object_get(test, "code")) ?: "", "damage") == 0) {
        /* a verification that passed after it read every chunk again: what the test restore
         * found was a chunk since stored again (bad blobs are), not the backup's dump */
        int64_t tv = 0, tt = 0;
        bool later_ok =
            verif &&
            time_parse_iso(json_string_value(json_object_get(verif, "time")) ?: "", &tv) == 0 &&
            time_parse_iso(json_string_value(json_object_get(test, "time")) ?: "", &tt) == 0 &&
            tv > tt;
        if (!later_ok) {
            err = json_object_get(test, "error");
            who = "test restore";
        }
    }
    if (error)
        *error = err;
    if (by)
        *by = who;
    return who != NULL;
}

json_t *caris_last_verifications(struct repo *r, struct err *e)
{
    return last_records(r, "verify", NULL, e);
}

json_t *caris_last_verifications_n(struct repo *r, size_t *unreadable, struct err *e)
{
    return last_records(r, "verify", unreadable, e);
}

/* A snapshot file that cannot be read stays in the list as "damaged" (a backup never vanishes
 * quietly): named by its backup id when the state record or this host's copy of it knows it
 * ("id" null otherwise), and always by its file. */
static void add_unreadable(json_t *list, json_t *damaged)
{
    size_t i;
    json_t *d;
    json_array_foreach(damaged, i, d)
    {
        const char *obj = json_string_value(json_object_get(d, "object")) ?: "";
        const char *base = strrchr(obj, '/') ? strrchr(obj, '/') + 1 : obj;
        json_t *id = json_object_get(d, "id");
        json_array_append_new(list,
                              json_pack("{s:O, s:s, s:s, s:O, s:s}", "id", id ? id : json_null(),
                                        "file", obj, "status", "damaged", "damage",
                                        json_object_get(d, "error"), "_file", base));
    }
}

json_t *caris_backup_list_report(struct repo *r, const char *kind, json_t *state, struct err *e)
{
    json_t *damaged = NULL;
    json_t *all = repo_snapshot_list(r, &damaged, e);
    json_t *tests = all ? caris_db_last_test_restores(r, e) : NULL;
    json_t *verifs = tests ? caris_last_verifications(r, e) : NULL;
    if (!all || !tests || !verifs) {
        json_decref(all);
        json_decref(damaged);
        json_decref(tests);
        return NULL;
    }
    json_t *list = json_array();
    size_t i;
    json_t *b;
    json_array_foreach(all, i, b)
    {
        const char *k = json_string_value(json_object_get(b, "kind"));
        if (!kind || (k && strcmp(k, kind) == 0))
            json_array_append(list, b);
    }
    json_decref(all);
    json_array_foreach(list, i, b)
    {
        const char *id = json_string_value(json_object_get(b, "id")) ?: "";
        json_t *t = json_object_get(tests, id);
        if (t)
            json_object_set(b, "lastTestRestore", t);
        json_t *v = json_object_get(verifs, id);
        if (v)
            json_object_set(b, "lastVerification", v);
        /* Damage found by the last verification (verify, check) is remembered: the backup
         * is "damaged" until a later verification finds it whole; so is damage a test restore
         * found (caris_backup_known_damaged) */
        json_t *damage;
        if (caris_backup_known_damaged(v, t, &damage, NULL)) {
            json_object_set_new(b, "status", json_string("damaged"));
            json_object_set(b, "damage", damage ?: json_null());
        }
        /* a file backup's warnings, each with its full path (inspect.c) */
        inspect_warnings_full_paths(b);
    }
    /* of an unreadable snapshot the kind is unknown: shown whatever kind was asked */
    add_unreadable(list, damaged);
    json_decref(damaged);
    json_decref(tests);
    json_decref(verifs);
    mark_record(state, list);
    json_array_foreach(list, i, b) backup_summary_public(b);
    return list;
}

int caris_list(struct repo *r, const char *kind, json_t *state, struct caris_list_result *res,
               struct err *e)
{
    memset(res, 0, sizeof(*res));
    res->entries = caris_backup_list_report(r, kind, state, e);
    if (!res->entries)
        return -1;
    res->n = json_array_size(res->entries);
    res->v = xcalloc(res->n ? res->n : 1, sizeof(*res->v));
    size_t i;
    json_t *b;
    json_array_foreach(res->entries, i, b)
    {
        struct caris_list_entry *x = &res->v[i];
        json_t *st = json_object_get(b, "stats");
        x->id = jsonx_strdup_member(b, "id");
        x->record = jsonx_strdup_member(b, "record");
        x->missing = x->record && strcmp(x->record, "missing") == 0;
        x->kind = jsonx_strdup_member(b, "kind");
        x->mode = jsonx_strdup_member(b, "mode");
        x->started = jsonx_strdup_member(b, "started");
        x->status = jsonx_strdup_member(b, "status");
        x->file = jsonx_strdup_member(b, "file");
        x->damage = jsonx_strdup_member(b, "damage");
        x->duration_ms = json_integer_value(json_object_get(b, "duration_ms"));
        x->files = (uint64_t)json_integer_value(json_object_get(st, "files"));
        x->bytes_read = (uint64_t)json_integer_value(json_object_get(st, "bytes_read"));
        x->bytes_added = (uint64_t)json_integer_value(json_object_get(st, "bytes_added"));
    }
    return 0;
}

void caris_list_result_free(struct caris_list_result *res)
{
    for (size_t i = 0; i < res->n; i++) {
        struct caris_list_entry *x = &res->v[i];
        free(x->id);
        free(x->kind);
        free(x->mode);
        free(x->started);
        free(x->status);
        free(x->record);
        free(x->file);
        free(x->damage);
    }
    free(res->v);
    json_decref(res->entries);
    memset(res, 0, sizeof(*res));
}

json_t *caris_list_result_to_json(const struct caris_list_result *res)
{
    return json_incref(res->entries);
}

/* A backup verify --all cannot verify, as it reports one: its error and a result that ran and
 * is not valid, named by its id (or its file when the id is unknown), with one error whose
 * path is null. */
static void report_unverifiable(struct repo *r, json_t *id, const char *file, const char *what,
                                bool record, caris_verify_each_fn each, void *each_ctx, int *rc,
                                struct err *e)
{
    struct err de = ERR_INIT;
    const char *ids = json_string_value(id);
    err_set(&de, ERR_DAMAGE,
            "do not count on this backup; run `caris-backup check` and use another backup",
            "backup %s: %s", ids ? ids : file, what);
    struct caris_verify_result res = {.ran = true, .valid = false};
    res.backup_id = xstrdup(ids ? ids : file);
    res.read.errors = json_pack("[{s:n, s:s}]", "path", "error", what);
    if (ids && record)
        caris_verification_record(r, ids, false, 0, &de, NULL);
    if (each)
        each(each_ctx, res.backup_id, -1, &res, &de);
    caris_verify_result_free(&res);
    if (*rc == 0 || (e->code != ERR_DAMAGE && de.code == ERR_DAMAGE)) {
        *e = de;
        *rc = -1;
    }
}

int caris_backup_verify_all(struct repo *r, const struct verify_opts *o, caris_verify_each_fn each,
                            void *each_ctx, struct err *e)
{
    json_t *damaged = NULL, *state = NULL;
    json_t *list = repo_snapshot_list(r, &damaged, e);
    /* The index read again once the backups are listed: one that committed after the handle
     * read it (a backup running beside) has its index file by then, and is not found to need
     * blobs "not in the repository index" (and recorded damaged). */
    if (!list || repo_refresh(r, e) != 0) {
        json_decref(list);
        json_decref(damaged);
        return -1;
    }
    int rc = 0;
    size_t i;
    json_t *s;
    /* the WAL archive listed once, by the first physical backup, for all of them */
    struct caris_wal_listing wal = {0};
    struct verify_opts vo = o ? *o : (struct verify_opts){0};
    vo.wal_listing = &wal;
    o = &vo;
    /* Every backup is verified and reported, whatever the others gave: one whose entries are
     * damaged, or whose check cannot run, does not hide the next ones. */
    json_array_foreach(list, i, s)
    {
        const char *id = json_string_value(json_object_get(s, "id"));
        if (caris_op_cancelled(o ? o->op : NULL)) {
            if (rc == 0)
                rc = caris_op_check(o->op, "nothing was changed: run verify again", e);
            break;
        }
        struct caris_verify_result res;
        struct err ve = ERR_INIT;
        int vrc = caris_verify(r, id, o, &res, &ve);
        if (each)
            each(each_ctx, id, vrc, &res, &ve);
        if (vrc != 0 && (rc == 0 || (e->code != ERR_DAMAGE && ve.code == ERR_DAMAGE))) {
            *e = ve; /* the first damage found, else the first failure */
            rc = -1;
        }
        caris_verify_result_free(&res);
    }
    caris_wal_listing_free(&wal);
    /* Backups that cannot be verified at all are failures too, never silence: snapshot files
     * that cannot be read, and backups the state record (or this host's copy of it) expects
     * whose snapshot file is gone. */
    json_t *d;
    json_array_foreach(damaged, i, d)
    {
        char what[1200];
        snprintf(what, sizeof(what), "its snapshot file cannot be read: %s",
                 json_string_value(json_object_get(d, "error")));
        report_unverifiable(r, json_object_get(d, "id"),
                            json_string_value(json_object_get(d, "object")), what, true, each,
                            each_ctx, &rc, e);
    }
    struct err ae = ERR_INIT;
    if (repo_state_audit(r, &state, &ae) == 0)
        json_array_foreach(json_object_get(state, "missing"), i, d)
        {
            char file[100];
            snprintf(file, sizeof(file), "snapshots/%s",
                     json_string_value(json_object_get(d, "object")));
            /* (the audit says "?" for an id it does not know; the list already shows these
             * as missing: nothing to record) */
            json_t *id = json_object_get(d, "id");
            if (json_string_value(id) && strcmp(json_string_value(id), "?") == 0)
                id = NULL;
            report_unverifiable(r, id, file,
                                "it is in the state record but its snapshot file is gone "
                                "(deleted, or the repository rolled back)",
                                false, each, each_ctx, &rc, e);
        }
    else if (rc == 0) {
        /* without the audit, a backup whose snapshot is gone would pass unnoticed */
        *e = ae;
        err_wrap(e, "cannot audit the state record, so backups whose snapshot file is gone "
                    "cannot be found");
        rc = -1;
    }
    json_decref(state);
    json_decref(damaged);
    json_decref(list);
    return rc;
}

void caris_check_record(struct repo *r, json_t *report, const struct caris_op *op)
{
    bool read_data = json_is_true(json_object_get(json_object_get(report, "stats"), "read_data"));
    caris_bad_blobs_record(r, read_data ? "check --read-data" : "check", op);
    json_t *done = json_object();
    size_t i, k;
    json_t *x, *id;
    json_array_foreach(json_object_get(report, "errors"), i, x)
    {
        json_array_foreach(json_object_get(x, "backups"), k, id)
        {
            const char *ids = json_string_value(id);
            if (!ids || json_object_get(done, ids))
                continue;
            json_object_set_new(done, ids, json_true());
            struct err ce = ERR_INIT;
            err_set(&ce, ERR_DAMAGE, NULL, "%s: %s: %s", read_data ? "check --read-data" : "check",
                    json_string_value(json_object_get(x, "object")),
                    json_string_value(json_object_get(x, "error")));
            caris_verification_record(r, ids, false, 0, &ce, op);
        }
    }
    json_decref(done);
}

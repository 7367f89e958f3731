/* The list of backups as front ends show it (the seed's listBackups). */
#include <string.h>

#include "caris/backup.h"
#include "caris/core.h"
#include "caris/dbbackup.h"
#include "common.h"

/* The state record's findings, in the list itself (so that `list --json` carries them):
 * "record" on every backup ("recorded", "unrecorded", "replayed", or "none" before the
 * record began), an entry {"id", "record": "missing", "status": "missing"} for each backup
 * the record (or the local copy) expects but whose snapshot is gone, and
 * "repositoryRolledBack": true on every entry when the repository went back in time. */
static void mark_record(json_t *st, json_t *list)
{
    if (!st)
        return;
    json_t *replayed = json_object(), *unrecorded = json_object();
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(st, "replayed"), i, x)
        json_object_set_new(replayed, json_string_value(json_object_get(x, "object")), json_true());
    json_array_foreach(json_object_get(st, "unrecorded"), i, x)
        json_object_set_new(unrecorded, json_string_value(x), json_true());
    bool none = strcmp(json_string_value(json_object_get(st, "record")) ?: "", "none") == 0;
    json_array_foreach(list, i, x)
    {
        const char *f = json_string_value(json_object_get(x, "_file")) ?: "";
        json_object_set_new(x, "record",
                            json_string(json_object_get(replayed, f)     ? "replayed"
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
    if (repo_record_add(r, "verify", rec, &e) != 0)
        caris_op_log(op, LOG_WARN, "cannot record the verification of %s: %s", backup_id, e.msg);
    json_decref(rec);
}

/* The latest record of kind for each backup: {"<backupId>": record}. */
static json_t *last_records(struct repo *r, const char *kind, struct err *e)
{
    json_t *recs = repo_record_list(r, kind, NULL, e);
    if (!recs)
        return NULL;
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
        const char *cur_when = cur ? json_string_value(json_object_get(cur, "time")) : NULL;
        if (!cur_when || strcmp(when, cur_when) > 0)
            json_object_set(out, id, rec);
    }
    json_decref(recs);
    return out;
}

json_t *caris_db_last_test_restores(struct repo *r, struct err *e)
{
    return last_records(r, "test-restore", e);
}

json_t *caris_last_verifications(struct repo *r, struct err *e)
{
    return last_records(r, "verify", e);
}

json_t *caris_backup_list_report(struct repo *r, const char *kind, json_t *state, struct err *e)
{
    json_t *list = caris_backup_list(r, kind, e);
    json_t *tests = list ? caris_db_last_test_restores(r, e) : NULL;
    json_t *verifs = tests ? caris_last_verifications(r, e) : NULL;
    if (!list || !tests || !verifs) {
        json_decref(list);
        json_decref(tests);
        return NULL;
    }
    size_t i;
    json_t *b;
    json_array_foreach(list, i, b)
    {
        const char *id = json_string_value(json_object_get(b, "id")) ?: "";
        json_t *t = json_object_get(tests, id);
        if (t)
            json_object_set(b, "lastTestRestore", t);
        json_t *v = json_object_get(verifs, id);
        if (v)
            json_object_set(b, "lastVerification", v);
    }
    json_decref(tests);
    json_decref(verifs);
    mark_record(state, list);
    json_array_foreach(list, i, b)
    {
        json_object_del(b, "_file");
        json_object_del(b, "warnings");
    }
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
    }
    free(res->v);
    json_decref(res->entries);
    memset(res, 0, sizeof(*res));
}

json_t *caris_list_result_to_json(const struct caris_list_result *res)
{
    return json_incref(res->entries);
}

int caris_backup_verify_all(struct repo *r, const struct verify_opts *o, caris_verify_each_fn each,
                            void *each_ctx, struct err *e)
{
    json_t *list = caris_backup_list(r, NULL, e);
    if (!list)
        return -1;
    int rc = 0;
    size_t i;
    json_t *s;
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
        if (vrc != 0 && rc == 0) {
            *e = ve;
            rc = -1;
        }
        bool ran = res.ran;
        caris_verify_result_free(&res);
        if (vrc != 0 && !ran) {
            *e = ve;
            break;
        }
    }
    json_decref(list);
    return rc;
}

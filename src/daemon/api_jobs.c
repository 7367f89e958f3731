/* The services the API's jobs and reads call: the same functions as the CLI's commands, in
 * one place so that a change of their signatures is a change of this file only. */
#include <string.h>

#include "caris/backup.h"
#include "caris/core.h"
#include "caris/dbbackup.h"

#include "internal.h"

/* A service's progress (struct caris_progress) to the op's (phase, done, total in bytes). */
static void progress_to_op(void *ctx, const struct caris_progress *p)
{
    caris_op_progress(ctx, p->phase ? p->phase : "", p->bytes_done, p->bytes_total);
}

static int verify(struct repo *r, int threads, const struct djob_spec *s, const struct caris_op *op,
                  json_t **result, struct err *e)
{
    struct verify_opts vo = {.threads = threads, .op = op};
    struct caris_verify_result res;
    int rc = caris_verify(r, s->backup_id, &vo, &res, e);
    *result = caris_verify_result_to_json(&res);
    /* (caris_verify records the outcome, for list's lastVerification) */
    caris_verify_result_free(&res);
    return rc;
}

int djob_exec(struct repo *r, const struct config *cfg, int threads, const struct djob_spec *s,
              const struct caris_op *op, json_t **result, struct err *e)
{
    *result = NULL;
    if (s->kind == DJOB_VERIFY)
        return verify(r, threads, s, op, result, e);
    if (s->kind != DJOB_RESTORE)
        return err_set(e, ERR_FAILURE, NULL, "not a verify or restore job");
    if (strcmp(s->what, "files") == 0) {
        if (s->dry_run) {
            /* a dry run of a file restore reads and checks everything a restore would
             * write: that is the verification */
            int rc = verify(r, threads, s, op, result, e);
            if (*result) {
                json_object_set_new(*result, "dryRun", json_true());
                json_object_set_new(*result, "method", json_string("verify"));
            }
            return rc;
        }
        struct files_restore_opts fo = {.backup_id = s->backup_id,
                                        .target = s->target,
                                        .backup_dir = config_backup_dir(cfg),
                                        .threads = threads,
                                        .op = op};
        struct caris_files_restore_result res;
        int rc = caris_restore_files(r, &fo, &res, e);
        *result = caris_files_restore_result_to_json(&res);
        caris_files_restore_result_free(&res);
        return rc;
    }
    char *tmp = xasprintf("%s/temp", config_backup_dir(cfg));
    struct db_restore_opts o = {.backup_id = s->backup_id,
                                .url = config_get(cfg, "POSTGRES_URL"),
                                .password = config_get(cfg, "PGPASSWORD"),
                                .target_url = *s->target ? s->target : NULL,
                                .target_untrusted = true,
                                .clean = s->clean,
                                .create = s->create,
                                .dry_run = s->dry_run,
                                .verify = s->verify,
                                .temp_dir = tmp,
                                .threads = threads,
                                .progress = progress_to_op,
                                .ctx = (void *)op,
                                .op = op};
    int rc;
    if (!o.url && !o.target_url)
        rc = err_set(e, ERR_CONFIG, "set POSTGRES_URL, or give targetUrl",
                     "no database to restore into");
    else {
        struct caris_db_restore_result res;
        rc = caris_restore_database(r, &o, &res, e);
        *result = caris_db_restore_result_to_json(&res);
        caris_db_restore_result_free(&res);
    }
    free(tmp);
    return rc;
}

json_t *api_backup_list(struct repo *r, const char *kind, bool stats, struct err *e)
{
    /* with the state record's findings, as `caris-backup --json list` (each backup's
     * "record", a backup whose snapshot is gone as "missing", "repositoryRolledBack"): without
     * them a deleted backup was left out of the list without a word */
    json_t *state = NULL;
    struct err se = ERR_INIT;
    if (repo_state_audit(r, &state, &se) != 0)
        state = NULL; /* listed without them, as the CLI does when the audit cannot run */
    json_t *list = caris_backup_list_report(r, kind, state, e);
    json_decref(state);
    if (list && !stats) {
        size_t i;
        json_t *b;
        json_array_foreach(list, i, b) json_object_del(b, "stats");
    }
    return list;
}

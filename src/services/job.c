/* One scheduled (or manual) run: configured backups, each verified, then retention, prune
 * and a restore drill as asked. */
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include "caris/backup.h"
#include "caris/copy.h"
#include "caris/core.h"
#include "caris/dbbackup.h"
#include "caris/job.h"
#include "caris/jsonx.h"
#include "caris/open.h"
#include "caris/prune.h"
#include "caris/retention.h"
#include "caris/storage.h"

const char *caris_job_type_name(enum caris_job_type t)
{
    return t == CARIS_JOB_FULL ? "full" : "incremental";
}

int caris_job_type_parse(const char *s, enum caris_job_type *t, struct err *e)
{
    if (s && strcmp(s, "full") == 0)
        *t = CARIS_JOB_FULL;
    else if (s && strcmp(s, "incremental") == 0)
        *t = CARIS_JOB_INCREMENTAL;
    else
        return err_set(e, ERR_USAGE, "use 'full' or 'incremental'", "unknown backup type '%s'",
                       s ? s : "");
    return 0;
}

const char *caris_job_step_name(enum caris_job_step_kind k)
{
    switch (k) {
    case CARIS_STEP_BACKUP:
        return "backup";
    case CARIS_STEP_VERIFY:
        return "verify";
    case CARIS_STEP_RETENTION:
        return "retention";
    case CARIS_STEP_PRUNE:
        return "prune";
    case CARIS_STEP_DRILL:
        return "drill";
    case CARIS_STEP_COPY:
        return "copy";
    }
    return "?";
}

struct run {
    struct repo *r;
    const struct caris_job_opts *o;
    const struct caris_op *op;
    struct caris_job_result *res;
};

static struct caris_job_step *step_begin(struct run *x, enum caris_job_step_kind k,
                                         const char *what, const char *id)
{
    struct caris_job_result *res = x->res;
    res->steps = xrealloc(res->steps, xsize(res->nsteps + 1, sizeof(*res->steps), 0));
    struct caris_job_step *s = &res->steps[res->nsteps++];
    memset(s, 0, sizeof(*s));
    s->kind = k;
    snprintf(s->what, sizeof(s->what), "%s", what ? what : "");
    snprintf(s->backup_id, sizeof(s->backup_id), "%s", id ? id : "");
    s->started_ns = time_now_ns();
    s->started_mono_ns = time_mono_ns();
    caris_op_log(x->op, LOG_INFO, "%s%s%s%s%s: started", caris_job_step_name(k), what ? " " : "",
                 what ? what : "", id && *id ? " " : "", id ? id : "");
    return s;
}

/* Ends step s: rc < 0 failed with se; CARIS_DONE_WARNINGS completed with warnings. */
static void step_end(struct run *x, struct caris_job_step *s, int rc, const struct err *se)
{
    s->duration_ns = time_mono_ns() - s->started_mono_ns;
    s->ok = rc >= 0;
    s->warnings = rc == CARIS_DONE_WARNINGS;
    if (!s->ok) {
        s->err = *se;
        x->res->ok = false;
    } else if (s->warnings) {
        s->err = *se; /* what the warnings were (the step sets it) */
        x->res->warnings = true;
    }
    const char *sp = *s->backup_id ? " " : "";
    if (s->ok)
        caris_op_log(x->op, s->warnings ? LOG_WARN : LOG_INFO, "%s%s%s%s%s: %s (%.1fs)",
                     caris_job_step_name(s->kind), *s->what ? " " : "", s->what, sp, s->backup_id,
                     s->warnings ? "done with warnings" : "done", (double)s->duration_ns / 1e9);
    else
        caris_op_log(x->op, LOG_ERROR, "%s%s%s%s%s: failed: %s", caris_job_step_name(s->kind),
                     *s->what ? " " : "", s->what, sp, s->backup_id, s->err.msg);
    if (x->o->on_step)
        x->o->on_step(x->o->step_ctx, s);
}

/* A backup's progress, as the op's phase progress ("backup database", bytes read of total). */
static void backup_progress(void *ctx, const struct caris_progress *p)
{
    const struct caris_op *op = ctx;
    caris_op_progress(op, p->phase ? p->phase : "backup", p->bytes_done, p->bytes_total);
}

int caris_job_config_check(const struct config *cfg, struct err *e)
{
    bool b;
    if (config_bool(cfg, "BACKUP_COMPRESS_DUMPS", CONFIG_DEFAULT_COMPRESS_DUMPS, &b, e) != 0)
        return -1;
    const char *v = config_get(cfg, "BACKUP_FILES_PATHS");
    if (!v)
        return 0;
    size_t n = 0;
    char **paths = caris_files_paths_split(v, &n);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (paths[i][0] != '/')
            rc = err_set(e, ERR_CONFIG,
                         "give absolute paths, separated by ':' (a relative one would be read "
                         "from the daemon's working directory, /)",
                         "BACKUP_FILES_PATHS: '%s' is not an absolute path", paths[i]);
    /* nested roots, as the backup itself judges them */
    if (rc == 0 && caris_files_roots_check((const char *const *)paths, n, e) != 0) {
        err_wrap(e, "BACKUP_FILES_PATHS");
        e->code = ERR_CONFIG;
        rc = -1;
    }
    caris_files_paths_free(paths);
    return rc;
}

/* A backup step; on success *id (caller frees) names the new backup, and *whole says whether
 * every file's content is in it. */
static int do_backup(struct run *x, const char *what, char **id, bool *whole)
{
    const struct config *cfg = x->o->cfg;
    bool full = x->o->type == CARIS_JOB_FULL;
    struct caris_job_step *s = step_begin(x, CARIS_STEP_BACKUP, what, NULL);
    struct err e = ERR_INIT;
    struct caris_backup_result res = {0};
    int rc;
    if (strcmp(what, "database") == 0) {
        bool compress;
        rc =
            config_bool(cfg, "BACKUP_COMPRESS_DUMPS", CONFIG_DEFAULT_COMPRESS_DUMPS, &compress, &e);
        struct db_backup_opts o = {.url = config_get(cfg, "POSTGRES_URL"),
                                   .password = config_get(cfg, "PGPASSWORD"),
                                   .no_compress = !compress,
                                   .threads = x->o->threads,
                                   .progress = x->op && x->op->progress ? backup_progress : NULL,
                                   .ctx = (void *)x->op,
                                   .time_ns = x->o->time_ns,
                                   .op = x->op};
        if (rc == 0)
            rc = full ? caris_db_backup_full(x->r, &o, &res, &e)
                      : caris_db_backup_incremental(x->r, &o, &res, &e);
    } else {
        size_t n = 0;
        char **paths = caris_files_paths_split(config_get(cfg, "BACKUP_FILES_PATHS"), &n);
        struct files_backup_opts o = {.paths = (const char *const *)paths,
                                      .npaths = n,
                                      .threads = x->o->threads,
                                      .progress = x->op && x->op->progress ? backup_progress : NULL,
                                      .ctx = (void *)x->op,
                                      .time_ns = x->o->time_ns,
                                      .op = x->op};
        char *cache_dir = xasprintf("%s/metadata/cache", config_backup_dir(cfg));
        o.cache_dir = cache_dir;
        rc = full ? caris_files_backup_full(x->r, &o, &res, &e)
                  : caris_files_backup_incremental(x->r, &o, &res, &e);
        free(cache_dir);
        caris_files_paths_free(paths);
    }
    if (rc >= 0) {
        snprintf(s->backup_id, sizeof(s->backup_id), "%s", res.id ? res.id : "");
        s->bytes = res.bytes_read;
        *id = xstrdup(s->backup_id);
    }
    /* a file recorded without its content (not a socket skipped, nor a file that changed while
     * read: the warnings that lose nothing) */
    json_t *unread = json_object_get(json_object_get(res.summary, "stats"), "unread");
    if (whole)
        *whole = !(json_integer_value(unread) > 0);
    /* a database backup's warnings each lose something: the cluster's roles and tablespaces
     * (pg_dumpall failed), or a database a restore left partly restored (its mark) */
    if (whole && strcmp(what, "database") == 0 && rc == CARIS_DONE_WARNINGS)
        *whole = false;
    if (rc == CARIS_DONE_WARNINGS) {
        /* Counts, never a warning's text: that names the file (its name can say whose record
         * it is), and this goes into notifications. */
        json_t *w = json_object_get(res.summary, "warnings");
        json_t *count = json_object_get(res.summary, "warnings_count");
        size_t n = json_is_integer(count) ? (size_t)json_integer_value(count) : json_array_size(w);
        size_t lost = (size_t)json_integer_value(unread);
        if (lost)
            err_set(&e, ERR_FAILURE,
                    "`caris-backup show ID` lists them; the older backups were kept (no retention "
                    "after a backup that could not read every file)",
                    "backup %s completed with %zu warning%s: %zu file%s or director%s could not "
                    "be read (in the backup without their content, or left out)",
                    s->backup_id, n, n == 1 ? "" : "s", lost, lost == 1 ? "" : "s",
                    lost == 1 ? "y" : "ies");
        else if (strcmp(what, "database") == 0)
            err_set(&e, ERR_FAILURE,
                    "`caris-backup show ID` lists them; a database a restore left marked: restore "
                    "it again, or once you judge it whole, remove the mark as its owner (COMMENT "
                    "ON DATABASE ... IS NULL)",
                    "backup %s completed with %zu warning%s (the cluster's roles not saved, or the "
                    "database marked as partly restored by a restore that did not finish); the "
                    "older backups were kept (no retention after it)",
                    s->backup_id, n, n == 1 ? "" : "s");
        else
            err_set(&e, ERR_FAILURE, "`caris-backup show ID` lists them",
                    "backup %s completed with %zu warning%s (no file's content lost: skipped "
                    "sockets or devices, files that changed while read...)",
                    s->backup_id, n, n == 1 ? "" : "s");
    }
    s->detail = caris_backup_result_to_json(&res);
    caris_backup_result_free(&res);
    step_end(x, s, rc, &e);
    return rc;
}

/* Test-only: CARIS_TEST_HOLD_VERIFY=1 holds a run at the start of its verify step (logged)
 * until it is cancelled (at most 60 s): a cancel that lands once the backup is made. */
static void test_hold_verify(struct run *x)
{
    const char *h = getenv("CARIS_TEST_HOLD_VERIFY");
    if (!h || strcmp(h, "1") != 0)
        return;
    caris_op_log(x->op, LOG_INFO, "test: holding the run before its verify step");
    for (int i = 0; i < 6000 && !caris_op_cancelled(x->op); i++)
        nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
}

static bool do_verify(struct run *x, const char *what, const char *id)
{
    test_hold_verify(x);
    struct caris_job_step *s = step_begin(x, CARIS_STEP_VERIFY, what, id);
    struct err e = ERR_INIT;
    struct verify_opts vo = {.threads = x->o->threads, .op = x->op};
    struct caris_verify_result res;
    int rc = caris_verify(x->r, id, &vo, &res, &e); /* (it records the outcome) */
    s->bytes = res.read.bytes;
    s->detail = caris_verify_result_to_json(&res);
    caris_verify_result_free(&res);
    step_end(x, s, rc, &e);
    return rc == 0;
}

/* The off-machine copy: the new backup into BACKUP_CLOUD_REPOSITORY, whose key is
 * CARIS_COPY_TO_KEY (the default of `copy --to-key-env`). */
static void do_copy(struct run *x, const char *what, const char *id, const char *to)
{
    struct caris_job_step *s = step_begin(x, CARIS_STEP_COPY, what, id);
    struct err e = ERR_INIT;
    int rc = -1;
    char *shown = storage_location_redact(to);
    struct caris_open_opts oo = {.repo_path = to,
                                 .backup_dir = config_backup_dir(x->o->cfg),
                                 .key = config_get(x->o->cfg, "CARIS_COPY_TO_KEY")};
    struct repo *dst = NULL;
    if (!oo.key) {
        err_set(&e, ERR_CONFIG, "set CARIS_COPY_TO_KEY (the cloud repository's key) in .env.local",
                "BACKUP_CLOUD_REPOSITORY is set but CARIS_COPY_TO_KEY is not");
    } else {
        struct caris_open_result ores;
        dst = caris_repo_open(&oo, &ores, &e);
        if (!dst) {
            err_wrap(&e, "copy to %s", shown); /* (user:secret@ never shown) */
            /* (the hint named BACKUP_ENCRYPTION_KEY for a wrong CARIS_COPY_TO_KEY: a failure
             * notice telling the operator to change the key of the local repository) */
            caris_copy_open_hint(&e, "CARIS_COPY_TO_KEY", x->r ? repo_path(x->r) : "SOURCE");
        } else {
            json_decref(ores.state);
        }
    }
    if (dst) {
        const char *ids[] = {id};
        struct caris_copy_opts co = {.ids = ids, .nids = 1, .threads = x->o->threads, .op = x->op};
        struct caris_copy_result cr;
        rc = caris_copy(x->r, dst, shown, &co, &cr, &e);
        s->bytes = cr.bytes_stored;
        s->detail = caris_copy_result_to_json(&cr);
        caris_copy_result_free(&cr);
        repo_close(dst);
    }
    free(shown);
    step_end(x, s, rc, &e);
}

static void do_drill(struct run *x, const char *id)
{
    struct caris_job_step *s = step_begin(x, CARIS_STEP_DRILL, "database", id);
    struct err e = ERR_INIT;
    char *tmp = xasprintf("%s/temp", config_backup_dir(x->o->cfg));
    struct db_test_restore_opts o = {.backup_id = id,
                                     .url = config_get(x->o->cfg, "POSTGRES_URL"),
                                     .password = config_get(x->o->cfg, "PGPASSWORD"),
                                     .scratch =
                                         x->o->drill_local ? DB_SCRATCH_LOCAL : DB_SCRATCH_DATABASE,
                                     .temp_dir = tmp,
                                     .threads = x->o->threads,
                                     .op = x->op};
    struct caris_test_restore_result res;
    int rc = caris_test_restore(x->r, &o, &res, &e);
    free(tmp);
    s->detail = caris_test_restore_result_to_json(&res);
    caris_test_restore_result_free(&res);
    step_end(x, s, rc, &e);
}

/* Retention over the kind this run backed up (kind: "database", "files", or NULL: both):
 * a kind it did not back up (not configured, or left out: an API run with includeFiles false)
 * has no new backup that retention could rely on, and its newest may be one without every
 * file's content, whose older backups hold the last good copy. */
static void do_retention(struct run *x, const char *kind)
{
    struct caris_job_step *s = step_begin(x, CARIS_STEP_RETENTION, NULL, NULL);
    struct err e = ERR_INIT;
    struct caris_forget_opts fo = {.kind = kind, .tz = config_get(x->o->cfg, "BACKUP_TZ")};
    struct caris_forget_result fr = {0};
    int rc = caris_retention_policy_from_config(x->o->cfg, &fo.policy, &e);
    if (rc == 0)
        rc = caris_retention_apply(x->r, &fo, x->op, &fr, &e);
    if (rc == 0)
        s->detail = caris_forget_result_to_json(&fr);
    caris_forget_result_free(&fr);
    step_end(x, s, rc, &e);
}

static void do_prune(struct run *x)
{
    struct caris_job_step *s = step_begin(x, CARIS_STEP_PRUNE, NULL, NULL);
    struct err e = ERR_INIT;
    struct caris_prune_opts po = {.max_unused = -1};
    struct caris_prune_result pr = {0};
    int rc = caris_prune(x->r, &po, x->op, &pr, &e);
    x->res->handle_spent = true;
    if (rc == 0)
        s->detail = caris_prune_result_to_json(&pr);
    if (rc == 0 && pr.stats.blobs_missing) { /* backups need blobs that are gone */
        rc = CARIS_DONE_WARNINGS;
        err_set(&e, ERR_DAMAGE,
                "run `caris-backup check`: it names the backups that no longer restore whole",
                "backups need %llu blob%s that the repository no longer has",
                (unsigned long long)pr.stats.blobs_missing, pr.stats.blobs_missing == 1 ? "" : "s");
    }
    caris_prune_result_free(&pr);
    step_end(x, s, rc, &e);
}

int caris_job_run(struct repo *r, const struct caris_job_opts *o, const struct caris_op *op,
                  struct caris_job_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    res->type = o->type;
    res->ok = true;
    res->started_ns = time_now_ns();
    res->started_mono_ns = time_mono_ns();
    bool db = config_get(o->cfg, "POSTGRES_URL") != NULL;
    bool files = !o->skip_files && config_get(o->cfg, "BACKUP_FILES_PATHS") != NULL;
    if (!db && !files) {
        res->ok = false;
        res->ended_ns = res->started_ns + (time_mono_ns() - res->started_mono_ns);
        return err_set(e, ERR_CONFIG,
                       "set POSTGRES_URL (the database) and/or BACKUP_FILES_PATHS "
                       "(colon-separated directories) in the environment or .env.local",
                       "nothing to back up: neither POSTGRES_URL nor BACKUP_FILES_PATHS is set");
    }
    struct run x = {r, o, op, res};
    caris_op_log(op, LOG_INFO, "%s backup run: started", caris_job_type_name(o->type));
    /* a source left out is said, every run: a variable gone missing must not look like a
     * quiet night */
    if (!db)
        caris_op_log(op, LOG_WARN, "database: not backed up (POSTGRES_URL is not set)");
    if (!files && !o->skip_files)
        caris_op_log(op, LOG_WARN, "files: not backed up (BACKUP_FILES_PATHS is not set)");
    char *db_id = NULL, *files_id = NULL;
    bool backups_ok = true, backups_whole = true;
    for (int k = 0; k < 2; k++) {
        if (!(k == 0 ? db : files) || caris_op_cancelled(op))
            continue;
        bool whole = true;
        int brc = do_backup(&x, k == 0 ? "database" : "files", k == 0 ? &db_id : &files_id, &whole);
        backups_ok &= brc >= 0;
        backups_whole &= whole;
    }
    bool db_ok = db_id != NULL, files_ok = files_id != NULL;
    if (o->verify && db_id && !caris_op_cancelled(op))
        db_ok = do_verify(&x, "database", db_id);
    if (o->verify && files_id && !caris_op_cancelled(op))
        files_ok = do_verify(&x, "files", files_id);
    /* only a backup that verified goes off the machine */
    const char *cloud = config_get(o->cfg, "BACKUP_CLOUD_REPOSITORY");
    if (cloud && *cloud && db_ok && !caris_op_cancelled(op))
        do_copy(&x, "database", db_id, cloud);
    if (cloud && *cloud && files_ok && !caris_op_cancelled(op))
        do_copy(&x, "files", files_id, cloud);
    if (o->drill && db_id && !caris_op_cancelled(op))
        do_drill(&x, db_id);
    /* A source that fails must not cost old backups: no retention without a new backup of
     * every configured kind that verified (one that failed its verification is no backup to
     * rely on: the older ones retention would remove are what a restore needs then). */
    /* Nor after a backup that holds a file without its content (it could not be read):
     * retention would forget the older backups that hold it (every run, as long as the file
     * stays unreadable: its last good copy went with them). */
    if (o->retention && backups_ok && !backups_whole)
        caris_op_log(op, LOG_WARN,
                     "retention: skipped: a backup of this run could not read every file (they "
                     "are in it without their content), or the database's completed with "
                     "warnings (its roles not saved, or the database marked partly restored); "
                     "the older backups are kept");
    else if (o->retention && backups_ok && (!db || db_ok) && (!files || files_ok) &&
             !caris_op_cancelled(op))
        do_retention(&x, db && files ? NULL : db ? "database" : "files");
    if (o->prune && backups_ok && res->ok && !caris_op_cancelled(op))
        do_prune(&x);
    free(db_id);
    free(files_id);
    res->ended_ns = res->started_ns + (time_mono_ns() - res->started_mono_ns);
    if (caris_op_cancelled(op) && res->ok) {
        res->ok = false;
        err_set(e, ERR_FAILURE, NULL, "cancelled");
    }
    caris_op_log(op, res->ok ? LOG_INFO : LOG_ERROR, "%s backup run: %s (%.1fs)",
                 caris_job_type_name(o->type), res->ok ? "done" : "failed",
                 (double)(res->ended_ns - res->started_ns) / 1e9);
    if (res->ok)
        return 0;
    if (!err_is_set(e))
        for (size_t i = 0; i < res->nsteps; i++)
            if (!res->steps[i].ok) {
                *e = res->steps[i].err;
                break;
            }
    return -1;
}

static json_t *iso(int64_t ns)
{
    char t[40];
    time_format_iso(ns, t, sizeof(t));
    return json_string(t);
}

json_t *caris_job_result_to_json(const struct caris_job_result *res)
{
    json_t *steps = json_array(), *ids = json_array();
    for (size_t i = 0; i < res->nsteps; i++) {
        const struct caris_job_step *s = &res->steps[i];
        json_t *j =
            json_pack("{s:s, s:b, s:b, s:o, s:I, s:I}", "step", caris_job_step_name(s->kind), "ok",
                      s->ok, "warnings", s->warnings, "startedAt", iso(s->started_ns), "durationMs",
                      (json_int_t)(s->duration_ns / 1000000), "bytes", (json_int_t)s->bytes);
        if (*s->what)
            json_object_set_new(j, "what", json_string(s->what));
        if (*s->backup_id)
            json_object_set_new(j, "backupId", json_string(s->backup_id));
        if (!s->ok || (s->warnings && err_is_set(&s->err)))
            json_object_set_new(j, s->ok ? "warning" : "error",
                                json_pack("{s:s, s:o, s:o}", "code", err_code_name(s->err.code),
                                          "message", jsonx_text(s->err.msg), "hint",
                                          jsonx_text(s->err.hint)));
        if (s->kind == CARIS_STEP_BACKUP && s->ok)
            json_array_append_new(ids, json_string(s->backup_id));
        json_array_append_new(steps, j);
    }
    return json_pack("{s:s, s:b, s:b, s:o, s:o, s:I, s:o, s:o}", "type",
                     caris_job_type_name(res->type), "ok", res->ok, "warnings", res->warnings,
                     "startedAt", iso(res->started_ns), "endedAt", iso(res->ended_ns), "durationMs",
                     (json_int_t)((res->ended_ns - res->started_ns) / 1000000), "backupIds", ids,
                     "steps", steps);
}

void caris_job_result_free(struct caris_job_result *res)
{
    for (size_t i = 0; i < res->nsteps; i++)
        json_decref(res->steps[i].detail);
    free(res->steps);
    res->steps = NULL;
    res->nsteps = 0;
}

#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "caris/crypto.h"
#include "caris/retention.h"
#include "caris/storage.h"

void caris_backup_id_format(const char *prefix, const char *mode, int64_t ns, char *out, size_t n)
{
    time_t s = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char ts[32];
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H-%M-%S", &tm);
    snprintf(out, n, "%s_%s_%s", prefix, mode, ts);
}

int backup_time(int64_t o_time_ns, int64_t *ns, struct err *e)
{
    *ns = o_time_ns ? o_time_ns : time_now_ns();
    return o_time_ns ? caris_backup_time_check(o_time_ns, e) : 0;
}

int backup_id_claim(struct repo *r, const char *prefix, const char *mode, int64_t now_ns,
                    bool exact, const struct caris_op *op, char *id, size_t n, struct err *e)
{
    json_t *list = repo_snapshot_list(r, NULL, e);
    if (!list)
        return -1;
    int rc = backup_id_claim_in(r, list, prefix, mode, now_ns, exact, op, id, n, e);
    json_decref(list);
    return rc;
}

/* The newest backup of list dated after the current time, in a warning. */
static void clock_check(json_t *list, const struct caris_op *op)
{
    int64_t now = time_now_ns(), newest = 0;
    const char *newest_id = NULL;
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        int64_t t;
        const char *started = json_string_value(json_object_get(s, "started"));
        if (started && time_parse_iso(started, &t) == 0 && caris_backup_time_future(t, now) &&
            (!newest_id || t > newest)) {
            newest = t;
            newest_id = json_string_value(json_object_get(s, "id"));
        }
    }
    if (!newest_id)
        return;
    char text[300];
    caris_backup_future_text(newest_id, newest, now, text, sizeof(text));
    caris_op_log(op, LOG_WARN,
                 "%s: the clock is behind, or was ahead when it was made. Until this is sorted "
                 "out, `latest` is refused and retention keeps it without counting it; check the "
                 "clock (`date`), and forget backups with a wrong date by id (`caris-backup "
                 "forget ID`)",
                 text);
}

static int collect_name(void *ctx, const char *name, uint64_t size, struct err *e)
{
    (void)size;
    (void)e;
    json_array_append_new(ctx, json_string(name));
    return 0;
}

/* Was id committed by a backup that list (read before our claim) does not have? A backup that
 * started in the same second can claim the id, write its snapshot and release its claim after
 * our listing and before our claim: our claim then succeeds on an id that exists. Its snapshot
 * was written before its claim went, so a listing of snapshots/ made now holds it: only the
 * snapshots list does not name are read. 1 taken, 0 free, -1 error. */
static int id_committed_since(struct repo *r, json_t *list, const char *id, struct err *e)
{
    json_t *known = json_object(), *names = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        const char *f = json_string_value(json_object_get(s, "_file"));
        if (f)
            json_object_set_new(known, f, json_true());
    }
    int rc = storage_list(repo_storage(r), "snapshots", collect_name, names, e) != 0 ? -1 : 0;
    json_array_foreach(names, i, s)
    {
        if (rc != 0)
            break;
        const char *full = json_string_value(s);
        const char *base = strrchr(full, '/') ? strrchr(full, '/') + 1 : full;
        if (strlen(base) != 64 || json_object_get(known, base))
            continue;
        json_t *summary = NULL;
        struct err le = ERR_INIT;
        if (repo_snapshot_load(r, base, &summary, NULL, &le) == 0) {
            const char *sid = json_string_value(json_object_get(summary, "id"));
            if (sid && strcmp(sid, id) == 0)
                rc = 1;
        }
        json_decref(summary);
    }
    json_decref(known);
    json_decref(names);
    return rc;
}

static bool id_listed(json_t *list, const char *id)
{
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        const char *sid = json_string_value(json_object_get(s, "id"));
        if (sid && strcmp(sid, id) == 0)
            return true;
    }
    return false;
}

static int exact_taken(const char *base, struct err *e)
{
    return err_set(e, ERR_USAGE, "give another --time: backup ids carry the time to the second",
                   "backup %s already exists (or is being made)", base);
}

int backup_id_check_exact(struct repo *r, const char *prefix, const char *mode, int64_t ns,
                          struct err *e)
{
    json_t *list = repo_snapshot_list(r, NULL, e);
    if (!list)
        return -1;
    char base[128];
    caris_backup_id_format(prefix, mode, ns, base, sizeof(base));
    int rc = id_listed(list, base) ? exact_taken(base, e) : 0;
    json_decref(list);
    return rc;
}

int backup_id_claim_in(struct repo *r, json_t *list, const char *prefix, const char *mode,
                       int64_t now_ns, bool exact, const struct caris_op *op, char *id, size_t n,
                       struct err *e)
{
    clock_check(list, op);
    char base[128];
    caris_backup_id_format(prefix, mode, now_ns, base, sizeof(base));
    for (int k = 1; k < 1000; k++) {
        if (k == 1)
            snprintf(id, n, "%s", base);
        else
            snprintf(id, n, "%s-%d", base, k);
        bool taken = id_listed(list, id);
        if (taken && exact)
            break;
        if (taken)
            continue;
        int rc = repo_claim(r, id, e);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            int t = id_committed_since(r, list, id, e);
            if (t == 0)
                return 0;
            repo_claim_release(r, id);
            if (t < 0)
                return -1;
        }
        if (exact)
            break;
    }
    if (exact)
        return exact_taken(base, e);
    return err_set(e, ERR_FAILURE, "`caris-backup unlock` removes stale claims",
                   "cannot find a free backup id for %s", base);
}

void backup_id_release(struct repo *r, const char *id)
{
    repo_claim_release(r, id);
}

json_t *backup_latest(struct repo *r, const char *kind, const char *field, json_t *value,
                      struct err *e)
{
    json_t *list = repo_snapshot_list(r, NULL, e);
    if (!list)
        return NULL;
    json_t *best = backup_latest_in(list, kind, field, value);
    json_decref(list);
    return best;
}

json_t *backup_latest_in(json_t *list, const char *kind, const char *field, json_t *value)
{
    json_t *best = NULL;
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        const char *k = json_string_value(json_object_get(s, "kind"));
        if (k && strcmp(k, kind) == 0 && json_equal(json_object_get(s, field), value))
            best = s; /* the list is oldest first */
    }
    if (best)
        json_incref(best);
    return best ? best : json_null();
}

void sha256_zeros(struct cx_sha256 *h, uint64_t n)
{
    static const uint8_t zeros[65536];
    while (n) {
        size_t k = n > sizeof(zeros) ? sizeof(zeros) : (size_t)n;
        cx_sha256_update(h, zeros, k);
        n -= k;
    }
}

void progress_report(caris_progress_fn fn, void *ctx, const char *phase, uint64_t files,
                     uint64_t bytes, uint64_t total, int64_t start_ns)
{
    if (!fn)
        return;
    struct caris_progress p = {phase, files, bytes, total, time_mono_ns() - start_ns};
    fn(ctx, &p);
}

char *jsonx_strdup_member(json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    return v ? xstrdup(v) : NULL;
}

static uint64_t uint_of(json_t *obj, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(obj, key));
    return v > 0 ? (uint64_t)v : 0;
}

void backup_result_take(struct caris_backup_result *res, json_t *summary)
{
    memset(res, 0, sizeof(*res));
    if (!summary)
        return;
    res->summary = summary;
    res->id = jsonx_strdup_member(summary, "id");
    res->kind = jsonx_strdup_member(summary, "kind");
    res->mode = jsonx_strdup_member(summary, "mode");
    const char *status = json_string_value(json_object_get(summary, "status"));
    res->warnings = status && strcmp(status, "ok") != 0;
    res->parent = jsonx_strdup_member(summary, "parent");
    res->duration_ms = json_integer_value(json_object_get(summary, "duration_ms"));
    json_t *st = json_object_get(summary, "stats");
    res->bytes_read = uint_of(st, "bytes_read");
    res->bytes_added = uint_of(st, "bytes_added");
    res->bytes_stored = uint_of(st, "bytes_stored");
    res->files = uint_of(st, "files");
    res->files_unchanged = uint_of(st, "files_unchanged");
    res->dirs = uint_of(st, "dirs");
    res->database = jsonx_strdup_member(summary, "database");
    res->server_version = jsonx_strdup_member(summary, "server_version");
    json_t *tables = json_object_get(summary, "tables");
    res->tables = json_array_size(tables);
    size_t i;
    json_t *t;
    json_array_foreach(tables, i, t) res->rows += uint_of(t, "rows");
}

void caris_backup_result_free(struct caris_backup_result *res)
{
    free(res->id);
    free(res->kind);
    free(res->mode);
    free(res->parent);
    free(res->database);
    free(res->server_version);
    json_decref(res->summary);
    memset(res, 0, sizeof(*res));
}

void backup_summary_public(json_t *summary)
{
    json_object_del(summary, "_file");
    json_object_del(summary, "root_ancestors"); /* mount's (the directories above the roots) */
    json_t *type = json_object_get(summary, "type");
    if (type && !json_object_get(summary, "kind"))
        json_object_set(summary, "kind", type);
    json_object_del(summary, "type");
}

json_t *caris_backup_result_to_json(const struct caris_backup_result *res)
{
    if (!res->summary)
        return NULL;
    json_t *copy = json_deep_copy(res->summary);
    backup_summary_public(copy);
    return copy;
}

/* The real path of p, or of its parent joined with its last name when p does not exist yet
 * (a restore makes its target). NULL when neither resolves. */
static char *real_or_parent(const char *p)
{
    char *real = realpath(p, NULL);
    if (real)
        return real;
    char *c = xstrdup(p);
    size_t n = strlen(c);
    while (n > 1 && c[n - 1] == '/') /* "dir/": its name is "dir" */
        c[--n] = '\0';
    char *slash = strrchr(c, '/');
    const char *name = slash ? slash + 1 : c;
    char *rp = NULL;
    if (!slash) {
        rp = realpath(".", NULL);
    } else if (slash == c) {
        rp = xstrdup("/");
    } else {
        *slash = '\0';
        rp = realpath(c, NULL);
    }
    char *joined = rp ? xasprintf("%s%s%s", rp, strcmp(rp, "/") == 0 ? "" : "/", name) : NULL;
    free(rp);
    free(c);
    return joined;
}

/* Whether real path a is b or lies below it. */
static bool path_below(const char *a, const char *b)
{
    size_t n = strlen(b);
    return strncmp(a, b, n) == 0 && (a[n] == '\0' || a[n] == '/' || strcmp(b, "/") == 0);
}

int replace_target_keeps(const struct repo *r, const char *target, const struct keep_path *keep,
                         size_t nkeep, const char *what, struct err *e)
{
    char *t = real_or_parent(target);
    if (!t)
        return 0; /* nothing there to replace */
    const char *rp = repo_path(r);
    struct keep_path repo = {"the repository", rp && !storage_location_is_s3(rp) ? rp : NULL,
                             false};
    int rc = 0;
    for (size_t i = 0; i <= nkeep && rc == 0; i++) {
        const struct keep_path *kp = i < nkeep ? &keep[i] : &repo;
        char *k = kp->path && *kp->path ? realpath(kp->path, NULL) : NULL;
        if (k && path_below(k, t))
            rc = err_set(e, ERR_USAGE,
                         "choose a data directory that holds none of them (--overwrite deletes "
                         "everything in it); nothing was written",
                         "%s %s holds %s %s", what, target, kp->what, kp->path);
        else if (k && kp->refuse_inside && path_below(t, k))
            rc = err_set(e, ERR_USAGE,
                         "choose a data directory outside it (what it holds is cleaned up or "
                         "replaced by caris-backup); nothing was written",
                         "%s %s lies inside %s %s", what, target, kp->what, kp->path);
        free(k);
    }
    free(t);
    return rc;
}

int restore_dests_keep(const struct repo *r, const char *target, const char *const *dests, size_t n,
                       const struct keep_path *keep, size_t nkeep, struct err *e)
{
    char *t = real_or_parent(target);
    if (!t)
        return 0; /* a target that cannot be resolved: the restore says why */
    const char *rp = repo_path(r);
    struct keep_path repo = {"the repository", rp && !storage_location_is_s3(rp) ? rp : NULL, true};
    int rc = 0;
    for (size_t j = 0; j <= nkeep && rc == 0; j++) {
        const struct keep_path *kp = j < nkeep ? &keep[j] : &repo;
        char *k = kp->path && *kp->path ? realpath(kp->path, NULL) : NULL;
        for (size_t i = 0; k && i < n && rc == 0; i++) {
            const char *d = dests[i] ? dests[i] : "";
            while (*d == '/')
                d++;
            char *dest = *d && strcmp(d, ".") != 0
                             ? xasprintf("%s%s%s", t, strcmp(t, "/") == 0 ? "" : "/", d)
                             : xstrdup(t);
            if (path_below(k, dest) || path_below(dest, k))
                rc = err_set(e, ERR_USAGE,
                             "restore into another --target (or --include only paths outside "
                             "it); nothing was written",
                             "restoring into %s would write %s, %s %s %s: the backup's old copy "
                             "would replace the live one (as it was then)",
                             target, dest, path_below(k, dest) ? "which holds" : "inside", kp->what,
                             kp->path);
            free(dest);
        }
        free(k);
    }
    free(t);
    return rc;
}

int restore_target_outside_repo(const struct repo *r, const char *target, const char *what,
                                struct err *e)
{
    const char *rp = repo_path(r);
    if (!rp || !target || storage_location_is_s3(rp))
        return 0;
    char *repo = realpath(rp, NULL);
    char *t = repo ? real_or_parent(target) : NULL;
    size_t n = repo ? strlen(repo) : 0;
    bool inside = t && strncmp(t, repo, n) == 0 && (t[n] == '\0' || t[n] == '/' || n == 1);
    free(repo);
    free(t);
    if (inside)
        return err_set(e, ERR_USAGE,
                       "choose a directory outside the repository (restored files would land "
                       "among its objects)",
                       "%s %s is inside the repository %s", what, target, rp);
    return 0;
}

/* Opening a repository as every front end does (see caris/open.h). */
#include "caris/open.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"
#include "caris/storage.h"

int caris_backup_dir_prepare(const char *dir, struct err *e)
{
    char *m = xasprintf("%s/metadata", dir), *t = xasprintf("%s/temp", dir);
    int rc = fs_mkdir_p(dir, 0700, e) || fs_mkdir_p(m, 0700, e) || fs_mkdir_p(t, 0700, e) ? -1 : 0;
    free(m);
    free(t);
    if (rc != 0)
        err_wrap(e, "cannot prepare BACKUP_DIR");
    return rc;
}

/* The key slot that opened the repository last time is tried first (see repo_open_hint).
 * It is kept in BACKUP_DIR/metadata, not in the repository: whoever can write the repository
 * (and plant key slots) cannot choose it. One line: the repository path, a tab, the slot id.
 * Best effort both ways: without it, slots are tried cheapest first. */
static char *key_hint_read(const struct caris_open_opts *o)
{
    if (!o->backup_dir)
        return NULL;
    char *path = xasprintf("%s/metadata/key-slot", o->backup_dir);
    struct buf b = {0};
    struct err ignore = ERR_INIT;
    char *hint = NULL;
    if (fs_read_all(path, &b, &ignore) == 0 && b.len < 8192) {
        buf_append_u8(&b, 0);
        char *tab = strchr((char *)b.data, '\t');
        if (tab) {
            *tab = '\0';
            char *id = tab + 1;
            id[strcspn(id, "\n")] = '\0';
            if (strcmp((char *)b.data, o->repo_path) == 0 && strlen(id) == 16)
                hint = xstrdup(id);
        }
    }
    buf_free(&b);
    free(path);
    return hint;
}

static void key_hint_write(const struct caris_open_opts *o, const char *slot)
{
    if (!o->backup_dir)
        return;
    char *dir = xasprintf("%s/metadata", o->backup_dir);
    if (fs_exists(dir)) {
        char *path = xasprintf("%s/key-slot", dir);
        char *text = xasprintf("%s\t%s\n", o->repo_path, slot);
        struct err ignore = ERR_INIT;
        (void)fs_write_atomic(path, text, strlen(text), 0600, &ignore);
        free(text);
        free(path);
    }
    free(dir);
}

/* Every open audits the repository's state record against the snapshots there are and the
 * local copy under BACKUP_DIR/metadata (deleted, replayed, rolled-back backups). */
static void audit(const struct caris_open_opts *o, struct repo *r, struct caris_open_result *out)
{
    if (o->backup_dir) {
        char *local = xasprintf("%s/metadata/state-%s.json", o->backup_dir, repo_id(r));
        repo_state_use_local(r, local);
        free(local);
    }
    if (repo_state_audit(r, &out->state, &out->audit_err) != 0) {
        out->state = NULL;
        err_wrap(&out->audit_err, "cannot audit the state record");
    }
}

const char *caris_open_hint(struct repo *r, const struct caris_open_result *o,
                            const char *backup_dir, char *buf, size_t n)
{
    size_t nw = json_array_size(repo_warnings(r));
    if (json_is_true(json_object_get(o->state, "rolled_back")))
        snprintf(buf, n,
                 "find out who replaced the repository; if you put an older copy in place on "
                 "purpose, remove %s/metadata/state-%s.json to accept it",
                 backup_dir, repo_id(r));
    else if (nw && nw == json_array_size(json_object_get(o->state, "removing")))
        snprintf(buf, n,
                 "`caris-backup prune` (or the next retention run) finishes the removal; "
                 "the backups kept are not affected");
    else if (nw)
        snprintf(buf, n, "run `caris-backup check` to see the backups affected");
    else
        return NULL;
    return buf;
}

struct repo *caris_repo_open(const struct caris_open_opts *o, struct caris_open_result *out,
                             struct err *e)
{
    memset(out, 0, sizeof(*out));
    out->audit_err = (struct err)ERR_INIT;
    /* Only `init` creates a repository: a mistyped --repo or BACKUP_DIR must not become a
     * new, empty one that backups go to unnoticed. */
    /* On S3 the open's own read of the marker tells the same (repo_open_hint: "no repository
     * at"), without a connection and two requests of its own. */
    int ex = storage_location_is_s3(o->repo_path) ? 1 : repo_exists(o->repo_path, e);
    if (ex < 0)
        return NULL;
    if (ex == 0) {
        err_set(e, ERR_NOT_FOUND,
                "create it with `caris-backup init` (BACKUP_DIR / --repo), or point BACKUP_DIR / "
                "--repo at an existing repository",
                "no repository at %s", o->repo_path);
        return NULL;
    }
    char *hint = key_hint_read(o);
    struct repo *r = repo_open_hint(o->repo_path, o->key, hint, e);
    if (r && (!hint || strcmp(hint, repo_key_slot(r)) != 0))
        key_hint_write(o, repo_key_slot(r));
    free(hint);
    if (!r)
        return NULL;
    repo_set_lock_wait(r, o->lock_wait_ms, o->lock_waiting, o->lock_waiting_ctx);
    audit(o, r, out);
    return r;
}

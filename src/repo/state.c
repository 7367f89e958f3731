/* The state record: an authenticated, versioned list of the snapshots a repository holds,
 * so that a snapshot deleted behind our back, one put back after it was forgotten, or the
 * whole repository rolled back to an older copy is noticed (docs/REPOSITORY-FORMAT.md,
 * "State record" and "Threat model").
 *
 * state/<counter, 16 hex>-<random, 16 hex> are immutable containers of type 'T'. Each holds
 * the whole state as its writer saw it: a counter, the live snapshots (object name -> backup
 * id) and every snapshot removed since the record began. A writer reads every state object
 * there is, merges them (live = union of live minus union of removed; removed = union;
 * counter = the largest), applies its change, writes counter + 1 under a new name, then
 * deletes the objects it merged. Concurrent writers that read the same objects both write
 * theirs (same counter, different random part); the next writer merges both. Because a
 * removal is remembered for ever and a snapshot name (SHA-256 of a file sealed under a
 * random salt) never comes back, the merge never resurrects a removed snapshot nor loses an
 * added one, whatever the interleaving.
 *
 * A removal also names its snapshots in "removing" until it has deleted their files (a second
 * object, written after the deletions, drops them; so does any later writer that finds them
 * gone). A snapshot removed and still there is then either a removal that was interrupted
 * ("removing": prune deletes it) or one put back after its removal was complete ("replayed":
 * a finding). */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define STATE_DIR "state"
#define STATE_VERSION 1
#define STATE_MAX_BYTES (256u << 20) /* plaintext; ~38 bytes per snapshot once compressed */
#define STATE_READ_ATTEMPTS 100

struct state {
    uint64_t counter;
    json_t *live;     /* object: snapshot object name -> backup id */
    json_t *removed;  /* object: snapshot object name -> true */
    json_t *removing; /* object: removed snapshots whose file may not be deleted yet -> true */
    bool present;     /* at least one state object was read */
    json_t *read;     /* array of the state object names that were merged */
    json_t *damaged;  /* array of {object, message} */
};

static void state_init(struct state *s)
{
    memset(s, 0, sizeof(*s));
    s->live = json_object();
    s->removed = json_object();
    s->removing = json_object();
    s->read = json_array();
    s->damaged = json_array();
}

static void state_free(struct state *s)
{
    json_decref(s->live);
    json_decref(s->removed);
    json_decref(s->removing);
    json_decref(s->read);
    json_decref(s->damaged);
    memset(s, 0, sizeof(*s));
}

static bool is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* Merges one state document (already authenticated, or the local copy) into s. Every field
 * is checked: a document that does not parse is damage, never half-merged. */
static int state_merge_doc(struct state *s, json_t *doc, const char *what, struct err *e)
{
    json_t *live = json_object_get(doc, "live"), *removed = json_object_get(doc, "removed");
    json_t *counter = json_object_get(doc, "counter");
    json_t *removing = json_object_get(doc, "removing"); /* optional: older writers */
    if (!json_is_object(doc) || json_integer_value(json_object_get(doc, "version")) != 1 ||
        !json_is_integer(counter) || json_integer_value(counter) < 0 || !json_is_object(live) ||
        !json_is_array(removed) || (removing && !json_is_array(removing)))
        return err_set(e, ERR_DAMAGE, NULL, "%s: malformed state record", what);
    const char *k;
    json_t *v;
    json_object_foreach(live, k, v)
    {
        if (!is_hex(k, 64) || !json_is_string(v))
            return err_set(e, ERR_DAMAGE, NULL, "%s: malformed live snapshot entry", what);
    }
    size_t i;
    json_array_foreach(removed, i, v)
    {
        if (!json_is_string(v) || !is_hex(json_string_value(v), 64))
            return err_set(e, ERR_DAMAGE, NULL, "%s: malformed removed snapshot entry", what);
    }
    json_array_foreach(removing, i, v)
    {
        if (!json_is_string(v) || !is_hex(json_string_value(v), 64))
            return err_set(e, ERR_DAMAGE, NULL, "%s: malformed removing snapshot entry", what);
    }
    json_object_foreach(live, k, v) json_object_set(s->live, k, v);
    json_array_foreach(removed, i, v)
        json_object_set_new(s->removed, json_string_value(v), json_true());
    json_array_foreach(removing, i, v)
        json_object_set_new(s->removing, json_string_value(v), json_true());
    if ((uint64_t)json_integer_value(counter) > s->counter)
        s->counter = (uint64_t)json_integer_value(counter);
    return 0;
}

/* A removal wins over any state that still lists the snapshot as live; "removing" names only
 * removed snapshots. */
static void state_settle(struct state *s)
{
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach(s->removed, k, v) json_object_del(s->live, k);
    json_object_foreach_safe(s->removing, tmp, k, v)
    {
        if (!json_object_get(s->removed, k))
            json_object_del(s->removing, k);
    }
}

/* The document as written. "removing" only when it names something: a record without
 * interrupted removals is byte for byte what older versions wrote. */
static json_t *state_doc(const struct state *s)
{
    json_t *removed = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(s->removed, k, v) json_array_append_new(removed, json_string(k));
    json_t *doc = json_pack("{s:i, s:I, s:O, s:o}", "version", STATE_VERSION, "counter",
                            (json_int_t)s->counter, "live", s->live, "removed", removed);
    if (json_object_size(s->removing)) {
        json_t *removing = json_array();
        json_object_foreach(s->removing, k, v) json_array_append_new(removing, json_string(k));
        json_object_set_new(doc, "removing", removing);
    }
    return doc;
}

static int collect(void *ctx, const char *name, uint64_t size, struct err *e)
{
    (void)size;
    (void)e;
    json_array_append_new(ctx, json_string(name));
    return 0;
}

/* "state/<16 hex>-<16 hex>" -> counter; -1 when the name is not a state object's. */
static int64_t state_name_counter(const char *name)
{
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    if (strlen(base) != 33 || base[16] != '-')
        return -1;
    char c[17], rnd[17];
    memcpy(c, base, 16);
    c[16] = '\0';
    memcpy(rnd, base + 17, 16);
    rnd[16] = '\0';
    if (!is_hex(c, 16) || !is_hex(rnd, 16))
        return -1;
    uint64_t v = strtoull(c, NULL, 16);
    return v > INT64_MAX ? -1 : (int64_t)v;
}

/* One state object: read, authenticate, check that its name tells its counter, merge.
 * Returns 0, 1 when it vanished meanwhile (a writer merged and deleted it), -1 on error;
 * damage is recorded in s->damaged, not returned. */
static int state_read_one(struct repo *r, struct state *s, const char *name, struct err *e)
{
    struct buf raw = {0}, plain = {0}, text = {0};
    struct err re = ERR_INIT;
    json_t *doc = NULL;
    int rc = 0;
    int64_t named = state_name_counter(name);
    if (named < 0) {
        err_set(&re, ERR_DAMAGE, NULL, "not a state object name");
    } else if (storage_get(r->st, name, STATE_MAX_BYTES, &raw, &re) != 0) {
        if (re.code == ERR_NOT_FOUND) {
            rc = 1;
            goto out;
        }
        if (re.code != ERR_DAMAGE) {
            *e = re;
            rc = -1;
            goto out;
        }
    } else if (container_open(r, 'T', raw.data, raw.len, &plain, &re) == 0 &&
               zstd_unpack(plain.data, plain.len, STATE_MAX_BYTES, &text, &re) == 0) {
        json_error_t je;
        doc = json_loadb((const char *)text.data, text.len, 0, &je);
        if (!doc)
            err_set(&re, ERR_DAMAGE, NULL, "state object %s is not JSON", name);
        else if (json_integer_value(json_object_get(doc, "counter")) != named)
            err_set(&re, ERR_DAMAGE, NULL, "state object %s: counter does not match its name",
                    name);
        else if (state_merge_doc(s, doc, name, &re) == 0)
            json_array_append_new(s->read, json_string(name));
    }
    if (err_is_set(&re))
        json_array_append_new(s->damaged,
                              json_pack("{s:s, s:s}", "object", name, "message", re.msg));
out:
    json_decref(doc);
    buf_free(&raw);
    buf_free(&plain);
    buf_free(&text);
    return rc;
}

/* Reads and merges every state object. A writer may delete the objects it merged between our
 * listing and our reading: its new object holds all they held, so the listing is taken again
 * and the objects not seen yet are read (merging is monotone: what was merged stays right). */
static int state_read(struct repo *r, struct state *s, struct err *e)
{
    json_t *seen = json_object();
    int rc = -1;
    for (int attempt = 0; attempt < STATE_READ_ATTEMPTS; attempt++) {
        json_t *names = json_array();
        if (storage_list(r->st, STATE_DIR, collect, names, e) != 0) {
            json_decref(names);
            goto out;
        }
        size_t i;
        json_t *n;
        bool vanished = false;
        json_array_foreach(names, i, n)
        {
            const char *name = json_string_value(n);
            if (json_object_get(seen, name))
                continue;
            json_object_set_new(seen, name, json_true());
            int one = state_read_one(r, s, name, e);
            if (one < 0) {
                json_decref(names);
                goto out;
            }
            vanished |= one == 1;
        }
        json_decref(names);
        if (!vanished) {
            s->present = json_array_size(s->read) > 0;
            state_settle(s);
            rc = 0;
            goto out;
        }
    }
    err_set(e, ERR_FAILURE, "retry when fewer backups run at once",
            "cannot read the state record of %s: its objects keep changing", r->path);
out:
    json_decref(seen);
    return rc;
}

/* Snapshot object names present in snapshots/ (object: name -> true). */
static json_t *snapshot_names(struct repo *r, struct err *e)
{
    json_t *names = json_array(), *set = json_object();
    if (storage_list(r->st, "snapshots", collect, names, e) != 0) {
        json_decref(names);
        json_decref(set);
        return NULL;
    }
    size_t i;
    json_t *n;
    json_array_foreach(names, i, n)
    {
        const char *full = json_string_value(n);
        const char *base = strrchr(full, '/') ? strrchr(full, '/') + 1 : full;
        if (is_hex(base, 64))
            json_object_set_new(set, base, json_true());
    }
    json_decref(names);
    return set;
}

static const char *snapshot_backup_id(struct repo *r, const char *name, char *out, size_t n)
{
    json_t *summary = NULL;
    struct err le = ERR_INIT;
    snprintf(out, n, "?");
    if (repo_snapshot_load(r, name, &summary, NULL, &le) == 0) {
        const char *id = json_string_value(json_object_get(summary, "id"));
        snprintf(out, n, "%s", id ? id : "?");
    }
    json_decref(summary);
    return out;
}

/* ---- the local copy ------------------------------------------------------------------ */

/* The local copy lives outside the repository (BACKUP_DIR/metadata), so that a rollback of
 * every file of the repository, state objects included, still shows: its counter and its
 * snapshot lists only grow. It is plain JSON (snapshot names and backup ids, no secrets),
 * mode 0600. Returns 0 (absent: s stays empty), -1 with e when it cannot be read or parsed. */
static int local_read(struct repo *r, struct state *s, struct err *e)
{
    struct buf b = {0};
    struct err fe = ERR_INIT;
    if (!fs_exists(r->state_local))
        return 0;
    if (fs_read_all(r->state_local, &b, &fe) != 0) {
        *e = fe;
        buf_free(&b);
        return -1;
    }
    json_t *doc = json_loadb((const char *)b.data, b.len, 0, NULL);
    buf_free(&b);
    int rc = 0;
    const char *repo = json_string_value(json_object_get(doc, "repository"));
    if (!doc)
        rc = err_set(e, ERR_DAMAGE, NULL,
                     "%s cannot be read (not JSON): until it is moved away (the next command "
                     "then writes it again) this host cannot tell whether the repository went "
                     "back in time",
                     r->state_local);
    else if (!repo || strcmp(repo, r->id) != 0)
        rc = err_set(e, ERR_DAMAGE, NULL, "%s is not a state record of repository %s",
                     r->state_local, r->id);
    else
        rc = state_merge_doc(s, doc, r->state_local, e);
    if (rc == 0)
        s->present = true;
    state_settle(s);
    json_decref(doc);
    return rc;
}

/* The other local copies beside ours (state-<id>.json in the same directory) that this host
 * kept for a repository at the same path, with backups live in them: the repository there is
 * not the one this host used (replaced by another one made with the same key, or created
 * anew). [{"repository", "file", "backups"}]; empty when there are none. */
static json_t *local_others(const struct repo *r)
{
    json_t *out = json_array();
    char *dir = xstrdup(r->state_local);
    char *slash = strrchr(dir, '/');
    DIR *d = slash ? (*slash = '\0', opendir(dir)) : NULL;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        size_t len = strlen(n);
        if (len != 6 + 32 + 5 || strncmp(n, "state-", 6) != 0 || strcmp(n + len - 5, ".json") ||
            strncmp(n + 6, r->id, 32) == 0)
            continue;
        char *path = xasprintf("%s/%s", dir, n);
        struct buf b = {0};
        struct err ignore = ERR_INIT;
        json_t *doc = NULL;
        if (fs_read_all(path, &b, &ignore) == 0)
            doc = json_loadb((const char *)b.data, b.len, 0, NULL);
        buf_free(&b);
        const char *rp = json_string_value(json_object_get(doc, "repository_path"));
        const char *id = json_string_value(json_object_get(doc, "repository"));
        size_t live = json_object_size(json_object_get(doc, "live"));
        if (rp && id && strcmp(rp, r->path) == 0 && strcmp(id, r->id) != 0 && live)
            json_array_append_new(out, json_pack("{s:s, s:s, s:I}", "repository", id, "file", path,
                                                 "backups", (json_int_t)live));
        json_decref(doc);
        free(path);
    }
    if (d)
        closedir(d);
    free(dir);
    return out;
}

size_t repo_state_retire_others(struct repo *r)
{
    if (!r->state_local)
        return 0;
    json_t *others = local_others(r);
    size_t i, n = 0;
    json_t *o;
    json_array_foreach(others, i, o)
    {
        const char *f = json_string_value(json_object_get(o, "file"));
        char *to = xasprintf("%s.replaced", f);
        if (rename(f, to) == 0)
            n++;
        free(to);
    }
    json_decref(others);
    return n;
}

bool state_backup_id_of(struct repo *r, const char *name, char *out, size_t n)
{
    struct state s, l;
    state_init(&s);
    state_init(&l);
    struct err ignore = ERR_INIT;
    const char *id = NULL;
    if (state_read(r, &s, &ignore) == 0)
        id = json_string_value(json_object_get(s.live, name));
    if (!id && r->state_local && local_read(r, &l, &ignore) == 0)
        id = json_string_value(json_object_get(l.live, name));
    if (id)
        snprintf(out, n, "%s", id);
    bool found = id != NULL;
    state_free(&s);
    state_free(&l);
    return found;
}

/* local := local merged with s (the counter and both lists only grow). Written only when it
 * changes; a failure to keep it is a warning, never the operation's failure. */
static void local_update_locked(struct repo *r, const struct state *s);

/* Processes on this host update the copy one at a time (read, merge, replace), so that none
 * undoes another's merge. */
static void local_update(struct repo *r, const struct state *s)
{
    if (!r->state_local)
        return;
    char *lock = xasprintf("%s.lock", r->state_local);
    char *dir = xstrdup(r->state_local);
    char *slash = strrchr(dir, '/');
    struct err e = ERR_INIT;
    if (slash) {
        *slash = '\0';
        if (fs_mkdir_p(dir, 0700, &e) != 0)
            err_clear(&e); /* the write below fails and says why */
    }
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
            ;
    local_update_locked(r, s);
    if (fd >= 0)
        close(fd); /* releases the lock */
    free(dir);
    free(lock);
}

static void local_update_locked(struct repo *r, const struct state *s)
{
    struct state l;
    state_init(&l);
    struct err e = ERR_INIT;
    if (local_read(r, &l, &e) != 0) {
        repo_warn(r, r->state_local, "local copy of the state record not updated: %s", e.msg);
        state_free(&l);
        return;
    }
    json_t *before = state_doc(&l);
    char *old = json_dumps(before, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(before);
    const char *k;
    json_t *v;
    json_object_foreach(s->live, k, v) json_object_set(l.live, k, v);
    json_object_foreach(s->removed, k, v) json_object_set(l.removed, k, v);
    if (s->counter > l.counter)
        l.counter = s->counter;
    state_settle(&l);
    json_t *doc = state_doc(&l);
    json_object_set_new(doc, "repository", json_string(r->id));
    json_object_set_new(doc, "repository_path", json_string(r->path));
    json_t *cmp = state_doc(&l);
    char *now = json_dumps(cmp, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(cmp);
    if (!old || !now || strcmp(old, now) != 0 || !fs_exists(r->state_local)) {
        char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
        if (!text || fs_write_atomic(r->state_local, text, strlen(text), 0600, &e) != 0)
            repo_warn(r, r->state_local,
                      "cannot keep the local copy of the state record (%s): a rollback of the "
                      "whole repository would go unnoticed",
                      err_is_set(&e) ? e.msg : "out of memory");
        free(text);
    }
    free(old);
    free(now);
    json_decref(doc);
    state_free(&l);
}

void repo_state_use_local(struct repo *r, const char *path)
{
    free(r->state_local);
    r->state_local = path && *r->id ? xstrdup(path) : NULL;
}

/* ---- writing ------------------------------------------------------------------------- */

static int state_write(struct repo *r, struct state *s, struct err *e)
{
    json_t *doc = state_doc(s);
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    struct buf z = {0}, sealed = {0};
    int rc = -1;
    if (!text || zstd_pack(text, strlen(text), 3, &z) != 0) {
        err_set(e, ERR_FAILURE, NULL, "cannot serialise the state record");
        goto out;
    }
    if (container_seal(r, 'T', z.data, z.len, &sealed, e) != 0)
        goto out;
    uint8_t rnd[8];
    char rhex[17], name[64];
    cx_random(rnd, sizeof(rnd));
    cx_hex(rnd, sizeof(rnd), rhex);
    snprintf(name, sizeof(name), STATE_DIR "/%016llx-%s", (unsigned long long)s->counter, rhex);
    rc = storage_put(r->st, name, sealed.data, sealed.len, e);
out:
    free(text);
    buf_free(&z);
    buf_free(&sealed);
    return rc;
}

int state_record_init(struct repo *r, struct err *e)
{
    struct state s;
    state_init(&s);
    s.counter = 1;
    int rc = state_write(r, &s, e);
    state_free(&s);
    return rc;
}

/* state_record_change, its counter at least floor + 1 (repo_state_accept). */
static int record_change_floor(struct repo *r, const char *added, const char *added_id,
                               const char *const *removed, size_t nremoved, int64_t floor,
                               struct err *e);

int state_record_change(struct repo *r, const char *added, const char *added_id,
                        const char *const *removed, size_t nremoved, struct err *e)
{
    return record_change_floor(r, added, added_id, removed, nremoved, 0, e);
}

static int record_change_floor(struct repo *r, const char *added, const char *added_id,
                               const char *const *removed, size_t nremoved, int64_t floor,
                               struct err *e)
{
    struct state s;
    state_init(&s);
    json_t *present = NULL;
    int rc = -1;
    if (state_read(r, &s, e) != 0)
        goto out;
    if ((int64_t)s.counter < floor)
        s.counter = (uint64_t)floor;
    /* Snapshots that are there but in no state: committed by a backup that is still writing
     * its state object, or that stopped between its snapshot and its state object, or made
     * before the record began. They are taken in. A snapshot once removed never is. */
    if (!(present = snapshot_names(r, e)))
        goto out;
    const char *k;
    json_t *v;
    json_t *removing = json_object();
    for (size_t i = 0; i < nremoved; i++)
        json_object_set_new(removing, removed[i], json_true());
    json_object_foreach(present, k, v)
    {
        if (json_object_get(s.live, k) || json_object_get(s.removed, k) ||
            (added && strcmp(k, added) == 0) || json_object_get(removing, k))
            continue;
        char id[200];
        json_object_set_new(s.live, k, json_string(snapshot_backup_id(r, k, id, sizeof(id))));
    }
    if (added)
        json_object_set_new(s.live, added, json_string(added_id ? added_id : "?"));
    json_object_foreach(removing, k, v)
    {
        json_object_del(s.live, k);
        json_object_set(s.removed, k, v);
        json_object_set(s.removing, k, v); /* until its file is deleted */
    }
    json_decref(removing);
    /* a removal whose file is gone is complete (a name never comes back) */
    void *tmp;
    json_object_foreach_safe(s.removing, tmp, k, v)
    {
        if (!json_object_get(present, k))
            json_object_del(s.removing, k);
    }
    s.counter++;
    if (state_write(r, &s, e) != 0)
        goto out;
    /* What we merged is in our object now. Removing it keeps state/ at one object (a few
     * while backups run at once); one left behind by a crash is merged and removed next time. */
    size_t i;
    json_array_foreach(s.read, i, v)
    {
        struct err ignore = ERR_INIT;
        storage_remove(r->st, json_string_value(v), &ignore);
    }
    local_update(r, &s);
    rc = 0;
out:
    json_decref(present);
    state_free(&s);
    return rc;
}

/* ---- auditing ------------------------------------------------------------------------ */

static void add_found(json_t *arr, json_t *seen, const char *name, const char *id)
{
    if (json_object_get(seen, name))
        return;
    json_object_set_new(seen, name, json_true());
    json_array_append_new(arr, json_pack("{s:s, s:s}", "object", name, "id", id ? id : "?"));
}

static int audit_pass(struct repo *r, json_t **report, struct err *e)
{
    struct state s, l;
    state_init(&s);
    state_init(&l);
    json_t *present = NULL, *missing = json_array(), *replayed = json_array(),
           *removing = json_array(), *unrecorded = json_array(), *seen = json_object(),
           *replaced = NULL;
    int rc = -1;
    /* State first, then the listing: a backup commits its snapshot before its state, so a
     * commit racing with us shows as "unrecorded", never as "missing". */
    if (state_read(r, &s, e) != 0 || !(present = snapshot_names(r, e)))
        goto out;
    struct err le = ERR_INIT;
    bool have_local = false, local_bad = false;
    replaced = r->state_local ? local_others(r) : json_array();
    if (r->state_local) {
        if (local_read(r, &l, &le) != 0) {
            repo_warn(r, r->state_local, "local copy of the state record ignored: %s", le.msg);
            local_bad = true;
        } else {
            have_local = l.present;
        }
    }
    const char *k;
    json_t *v;
    char id[200];
    json_object_foreach(s.live, k, v)
    {
        if (!json_object_get(present, k))
            add_found(missing, seen, k, json_string_value(v));
    }
    json_object_foreach(present, k, v)
    {
        if (json_object_get(s.removing, k))
            add_found(removing, seen, k, snapshot_backup_id(r, k, id, sizeof(id)));
        else if (json_object_get(s.removed, k) || (have_local && json_object_get(l.removed, k)))
            add_found(replayed, seen, k, snapshot_backup_id(r, k, id, sizeof(id)));
        else if (!json_object_get(s.live, k))
            json_array_append_new(unrecorded, json_string(k));
    }
    if (have_local)
        json_object_foreach(l.live, k, v)
        {
            if (!json_object_get(present, k) && !json_object_get(s.removed, k))
                add_found(missing, seen, k, json_string_value(v));
        }
    bool rolled_back = have_local && l.counter > s.counter;
    /* A repository created with the record has one from its first moment: none at all means
     * the state objects were deleted. */
    const char *record = s.present                         ? "present"
                         : (r->state_needed || have_local) ? "deleted"
                                                           : "none";
    bool ok = !rolled_back && !json_array_size(missing) && !json_array_size(replayed) &&
              strcmp(record, "deleted") != 0 && !json_array_size(s.damaged) &&
              !json_array_size(replaced);
    *report =
        json_pack("{s:b, s:s, s:I, s:o, s:b, s:o, s:o, s:o, s:o, s:O, s:o}", "ok", ok, "record",
                  record, "counter", (json_int_t)s.counter, "local_counter",
                  have_local ? json_integer((json_int_t)l.counter) : json_null(), "rolled_back",
                  rolled_back, "missing", missing, "replayed", replayed, "removing", removing,
                  "unrecorded", unrecorded, "damaged", s.damaged, "replaced", replaced);
    missing = replayed = removing = unrecorded = replaced = NULL;
    /* (check reports it: this host's rollback detection is off until the copy is moved away) */
    if (local_bad)
        json_object_set_new(*report, "local_error",
                            json_pack("{s:s, s:s}", "file", r->state_local, "message", le.msg));
    /* Not for a repository that took the place of another one at this path: the local copy
     * would make the other one, once put back, look replaced in its turn. */
    if (s.present && !json_array_size(json_object_get(*report, "replaced")))
        local_update(r, &s);
    rc = 0;
out:
    json_decref(replaced);
    json_decref(present);
    json_decref(missing);
    json_decref(replayed);
    json_decref(removing);
    json_decref(unrecorded);
    json_decref(seen);
    state_free(&s);
    state_free(&l);
    return rc;
}

static void warn_list(struct repo *r, json_t *arr, const char *what)
{
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x)
    {
        char obj[100];
        snprintf(obj, sizeof(obj), "snapshots/%s", json_string_value(json_object_get(x, "object")));
        repo_warn(r, obj, "backup %s %s", json_string_value(json_object_get(x, "id")), what);
    }
}

int repo_state_audit(struct repo *r, json_t **report, struct err *e)
{
    *report = NULL;
    if (audit_pass(r, report, e) != 0)
        return -1;
    /* A forget or a commit that ran between our reading the state and listing the snapshots
     * can show as a finding that is gone a moment later: look again, keep the second look. */
    if (!json_is_true(json_object_get(*report, "ok")) ||
        json_array_size(json_object_get(*report, "removing"))) {
        json_decref(*report);
        *report = NULL;
        if (audit_pass(r, report, e) != 0)
            return -1;
    }
    json_t *rep = *report;
    if (json_is_true(json_object_get(rep, "rolled_back")))
        repo_warn(r, r->state_local,
                  "the repository went back in time: its state record is at %lld, this host "
                  "saw %lld (the repository, or its state objects, were replaced by an older "
                  "copy)",
                  (long long)json_integer_value(json_object_get(rep, "counter")),
                  (long long)json_integer_value(json_object_get(rep, "local_counter")));
    if (strcmp(json_string_value(json_object_get(rep, "record")), "deleted") == 0)
        repo_warn(r, STATE_DIR, "the state record is missing: its objects were deleted");
    size_t k;
    json_t *o;
    json_array_foreach(json_object_get(rep, "replaced"), k, o)
        repo_warn(r, json_string_value(json_object_get(o, "file")),
                  "this host used another repository at %s (id %s, %lld backups), and none of "
                  "its backups is here: the repository was replaced (by one made with the same "
                  "key?) or created anew; if on purpose, remove this file to accept it",
                  r->path, json_string_value(json_object_get(o, "repository")),
                  (long long)json_integer_value(json_object_get(o, "backups")));
    warn_list(r, json_object_get(rep, "missing"),
              "is in the state record but its snapshot is gone (deleted, or rolled back)");
    warn_list(r, json_object_get(rep, "replayed"),
              "was removed (forgotten) but its snapshot is back (put back from an old copy; or an "
              "interrupted forget of a caris-backup older than this one)");
    warn_list(r, json_object_get(rep, "removing"),
              "was being removed when its forget stopped: the next prune finishes removing it");
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(rep, "damaged"), i, d)
        repo_warn(r, json_string_value(json_object_get(d, "object")), "%s",
                  json_string_value(json_object_get(d, "message")));
    return 0;
}

int repo_state_accept(struct repo *r, json_t *damaged, struct err *e)
{
    if (!r->lock || !r->lock->exclusive)
        return err_set(e, ERR_LOCKED, "take the exclusive lock first (repo_lock)",
                       "accepting the state record needs the exclusive lock of %s", r->path);
    size_t i;
    json_t *d;
    json_array_foreach(damaged, i, d)
    {
        const char *name = json_string_value(json_object_get(d, "object"));
        if (!name || strncmp(name, STATE_DIR "/", sizeof(STATE_DIR)) != 0 || strstr(name, ".."))
            continue;
        struct state s;
        state_init(&s);
        /* still there and still unreadable (never a readable one) */
        int rc = state_read_one(r, &s, name, e);
        bool bad = rc == 0 && json_array_size(s.damaged) > 0;
        state_free(&s);
        if (rc < 0)
            return -1;
        if (bad && storage_remove(r->st, name, e) != 0 && e->code != ERR_NOT_FOUND)
            return -1;
        err_clear(e);
    }
    /* a whole record again, taking in the snapshots that are there, its counter past every
     * one seen: the unreadable objects' (their names tell it) and this host's copy's (else
     * every later open said the repository went back in time) */
    int64_t floor = 0;
    json_array_foreach(damaged, i, d)
    {
        const char *name = json_string_value(json_object_get(d, "object"));
        int64_t c = name ? state_name_counter(name) : -1;
        if (c > floor)
            floor = c;
    }
    struct state l;
    state_init(&l);
    struct err le = ERR_INIT;
    if (r->state_local && local_read(r, &l, &le) == 0 && l.present && (int64_t)l.counter > floor)
        floor = (int64_t)l.counter;
    state_free(&l);
    return record_change_floor(r, NULL, NULL, NULL, 0, floor, e);
}

int repo_state_finish_removals(struct repo *r, bool dry_run, json_t **finished, struct err *e)
{
    *finished = json_array();
    /* A dry run writes nothing: it needs no lock of its own (a repository on a read-only file
     * system is read without one, and a prune --dry-run of it used to end here, exit 9). */
    if (!dry_run && (!r->lock || !r->lock->exclusive))
        return err_set(e, ERR_LOCKED, "take the exclusive lock first (repo_lock)",
                       "finishing removals needs the exclusive lock of %s", r->path);
    struct state s;
    state_init(&s);
    json_t *present = NULL;
    int rc = -1;
    /* the record first, then the listing (as the audit) */
    if (state_read(r, &s, e) != 0 || !(present = snapshot_names(r, e)))
        goto out;
    const char *k;
    json_t *v;
    json_object_foreach(s.removing, k, v)
    {
        if (!json_object_get(present, k))
            continue;
        char id[200], obj[100];
        snapshot_backup_id(r, k, id, sizeof(id));
        snprintf(obj, sizeof(obj), "snapshots/%s", k);
        if (!dry_run && storage_remove(r->st, obj, e) != 0 && e->code != ERR_NOT_FOUND)
            goto out;
        err_clear(e);
        json_array_append_new(*finished, json_pack("{s:s, s:s}", "object", k, "id", id));
    }
    /* and the record says they are gone */
    if (!dry_run && json_array_size(*finished) &&
        state_record_change(r, NULL, NULL, NULL, 0, e) != 0)
        goto out;
    rc = 0;
out:
    json_decref(present);
    state_free(&s);
    return rc;
}

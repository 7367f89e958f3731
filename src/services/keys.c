/* Key management as services: typed results around the engine's repo_key_*. */
#include "caris/keys.h"

#include <string.h>

#include "common.h"

int caris_key_list(struct repo *r, const struct caris_op *op, struct caris_key_list *out,
                   struct err *e)
{
    (void)op; /* reads only: nothing to log, nothing to cancel */
    memset(out, 0, sizeof(*out));
    json_t *arr = repo_key_list(r, e);
    if (!arr)
        return -1;
    out->n = json_array_size(arr);
    out->slots = xcalloc(out->n ? out->n : 1, sizeof(*out->slots));
    size_t i;
    json_t *k;
    json_array_foreach(arr, i, k)
    {
        struct caris_key_slot *s = &out->slots[i];
        s->id = jsonx_strdup_member(k, "id");
        s->current = json_is_true(json_object_get(k, "current"));
        s->version = (int)json_integer_value(json_object_get(k, "version"));
        s->label = jsonx_strdup_member(k, "label");
        s->created = jsonx_strdup_member(k, "created");
        s->error = jsonx_strdup_member(k, "error");
    }
    json_decref(arr);
    return 0;
}

void caris_key_list_free(struct caris_key_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->slots[i].id);
        free(l->slots[i].label);
        free(l->slots[i].created);
        free(l->slots[i].error);
    }
    free(l->slots);
    memset(l, 0, sizeof(*l));
}

json_t *caris_key_list_to_json(const struct caris_key_list *l)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < l->n; i++) {
        const struct caris_key_slot *s = &l->slots[i];
        json_t *o = json_pack("{s:s, s:b}", "id", s->id ? s->id : "", "current", s->current);
        if (s->error) {
            json_object_set_new(o, "error", json_string(s->error));
        } else {
            json_object_set_new(o, "version", json_integer(s->version));
            if (s->label)
                json_object_set_new(o, "label", json_string(s->label));
            if (s->created)
                json_object_set_new(o, "created", json_string(s->created));
        }
        json_array_append_new(arr, o);
    }
    return arr;
}

json_t *caris_key_add_result_to_json(const struct caris_key_add_result *res)
{
    return json_pack("{s:s}", "id", res->id);
}

/* Two removals at once, each with the other's key (A removes B's slot, B removes A's), each
 * kept the slot in use and both went: no slot was left, and no key opened the repository.
 * Removals now take turns (a claim, under a shared lock: backups go on), and each checks that
 * the slot it opened the repository with is still there before it removes another: one slot
 * always stays. Additions take the same turns: two at once each counted the slots before
 * either wrote its own (seconds of Argon2id apart), and at 31 slots both went, leaving 33,
 * more than any open reads: no key opened the repository. */
#define KEY_CLAIM "key-slots"

/* Takes the shared lock and the claim of key slot changes: 0 with *held (release with
 * key_slots_release), -1 with e (another change runs: ERR_LOCKED). */
static int key_slots_claim(struct repo *r, const char *operation, char **held, struct err *e)
{
    *held = NULL;
    if (repo_lock(r, false, operation, e) != 0)
        return -1;
    /* the claim of a change that died (kill -9) is taken over, as a copy's is: it blocked
     * every later removal (a leaked key could not be revoked) until someone ran `unlock` */
    char holder[400];
    int c = repo_claim_or_take(r, KEY_CLAIM, held, holder, sizeof(holder), e);
    if (c == 0)
        return 0;
    if (c == 1)
        err_set(e, ERR_LOCKED,
                "retry when it is done; if none runs, one was interrupted: `caris-backup unlock` "
                "removes what it left",
                "another key slot change (key add or remove) is running in this repository (%s)",
                holder[0] ? holder : "an unreadable claim");
    free(*held);
    *held = NULL;
    repo_unlock(r);
    return -1;
}

static void key_slots_release(struct repo *r, char *held)
{
    repo_claim_release_all(r, held);
    free(held);
    repo_unlock(r);
}

int caris_key_add(struct repo *r, const char *new_key, const char *label, const struct caris_op *op,
                  struct caris_key_add_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    char *held;
    if (key_slots_claim(r, "key add", &held, e) != 0)
        return -1;
    /* (a change stopped longer than the staleness timeout has had its claim taken over) */
    int rc =
        repo_lock_check(r, e) == 0 ? repo_key_add(r, new_key, label ? label : "", res->id, e) : -1;
    key_slots_release(r, held);
    if (rc != 0)
        return -1;
    caris_op_log(op, LOG_INFO, "added key slot %s", res->id);
    return 0;
}

int caris_key_remove(struct repo *r, const char *id, const struct caris_op *op, struct err *e)
{
    char *held;
    int rc = -1;
    if (key_slots_claim(r, "key remove", &held, e) == 0) {
        char *own = xasprintf("keys/%s", repo_key_slot(r));
        int ex = storage_exists(repo_storage(r), own, e);
        free(own);
        if (ex == 0)
            err_set(e, ERR_FAILURE,
                    "open the repository with a key that still has a slot (`caris-backup key "
                    "list`), then remove what is left to remove",
                    "refusing to remove key slot %s: the slot of the key in use (%s) was removed "
                    "meanwhile, and removing another could leave no key at all",
                    id, repo_key_slot(r));
        else if (ex == 1 && repo_lock_check(r, e) == 0)
            /* (a removal stopped longer than the staleness timeout has had its claim taken
             * over: the other removal may have removed the slot this one relies on) */
            rc = repo_key_remove(r, id, e);
        key_slots_release(r, held);
    }
    if (rc != 0)
        return -1;
    caris_op_log(op, LOG_INFO, "removed key slot %s", id);
    return 0;
}

/* Key management as services (the CLI's `key list/add/remove`, later the API's): each key
 * slot wraps the repository's master key under a key derived with Argon2id from a password.
 * The engine is repo_key_* (src/repo/keys.c); these are what front ends call. */
#ifndef CARIS_KEYS_H
#define CARIS_KEYS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "caris/err.h"
#include "caris/op.h"
#include "caris/repo.h"

struct caris_key_slot {
    char *id;
    bool current; /* the slot that opened this handle */
    /* Read from the slot; a slot's label and date are anyone's bytes until it opens: escape
     * them before showing them on a terminal. */
    int version;
    char *label, *created;
    char *error; /* the slot cannot be read (then version 0, label and created NULL) */
};

struct caris_key_list {
    struct caris_key_slot *slots;
    size_t n;
};

/* Every key slot of the repository, in the order of their names. */
int caris_key_list(struct repo *r, const struct caris_op *op, struct caris_key_list *out,
                   struct err *e);
void caris_key_list_free(struct caris_key_list *l);
/* [{"id", "current", "version", "label", "created"} or {"id", "current", "error"}, ...] */
json_t *caris_key_list_to_json(const struct caris_key_list *l);

struct caris_key_add_result {
    char id[17]; /* the new slot */
};
/* Adds a key slot for new_key (at least 32 characters; never logged) with label (may be
 * NULL). */
int caris_key_add(struct repo *r, const char *new_key, const char *label, const struct caris_op *op,
                  struct caris_key_add_result *res, struct err *e);
/* {"id"} */
json_t *caris_key_add_result_to_json(const struct caris_key_add_result *res);

/* Removes key slot id; refuses the slot in use (ERR_USAGE) and an unknown id
 * (ERR_NOT_FOUND). */
int caris_key_remove(struct repo *r, const char *id, const struct caris_op *op, struct err *e);

#endif

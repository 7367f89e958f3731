/* API tokens: the credentials of the daemon's HTTP API. A token is 256 random bits shown
 * once when it is made; only its SHA-256 is kept, in BACKUP_DIR/metadata/api-tokens.json
 * (mode 0600): {"version": 1, "tokens": [{"id", "label", "role", "sha256", "created"}]}.
 * A token's hash needs no slow KDF: the token is random, not a password. */
#ifndef CARIS_TOKEN_H
#define CARIS_TOKEN_H

#include <jansson.h>
#include <stdbool.h>

#include "caris/err.h"

enum caris_token_role {
    CARIS_ROLE_VIEWER, /* list, status, jobs */
    CARIS_ROLE_ADMIN,  /* everything */
};
const char *caris_token_role_name(enum caris_token_role r);
/* "admin" / "viewer"; -1 with ERR_USAGE otherwise. */
int caris_token_role_parse(const char *s, enum caris_token_role *r, struct err *e);

#define CARIS_TOKEN_LEN 68 /* "cbt_" + 64 hex digits */
#define CARIS_TOKEN_LABEL_MAX 64

struct caris_token_info {
    char id[17]; /* 16 hex digits, random: names the token in list / revoke */
    char label[CARIS_TOKEN_LABEL_MAX + 1];
    enum caris_token_role role;
};

/* Makes a token: the text (to show once) in token[CARIS_TOKEN_LEN + 1]. label: 1 to 64
 * characters of letters, digits, space and ._@-, unique among the tokens (ERR_USAGE). */
int caris_token_add(const char *backup_dir, const char *label, enum caris_token_role role,
                    char token[CARIS_TOKEN_LEN + 1], struct caris_token_info *info, struct err *e);
/* [{"id", "label", "role", "created"}] (never the hashes). No file: an empty list. */
json_t *caris_token_list(const char *backup_dir, struct err *e);
/* Removes the token whose id or label is which (or the token itself, found by its hash): 0 and
 * *info (when not NULL) the removed token's, or -1 with ERR_NOT_FOUND. */
int caris_token_revoke(const char *backup_dir, const char *which, struct caris_token_info *info,
                       struct err *e);
/* Whether presented is a token of the file: 0 and *info when it is, 1 when not (a wrong or
 * revoked token), -1 with e when the file cannot be read. Every stored hash is compared, in
 * constant time, whatever matched. */
int caris_token_check(const char *backup_dir, const char *presented, struct caris_token_info *info,
                      struct err *e);

#endif

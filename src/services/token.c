/* API tokens (caris/token.h). The file is rewritten whole (fs_write_atomic) under an
 * exclusive flock of api-tokens.lock, so that two `token add` never lose one another. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/token.h"

#define TOKENS_FILE "api-tokens.json"

const char *caris_token_role_name(enum caris_token_role r)
{
    return r == CARIS_ROLE_ADMIN ? "admin" : "viewer";
}

int caris_token_role_parse(const char *s, enum caris_token_role *r, struct err *e)
{
    if (s && strcmp(s, "admin") == 0)
        *r = CARIS_ROLE_ADMIN;
    else if (s && strcmp(s, "viewer") == 0)
        *r = CARIS_ROLE_VIEWER;
    else
        return err_set(e, ERR_USAGE, "a role is admin or viewer", "unknown role '%s'", s ? s : "");
    return 0;
}

static char *tokens_path(const char *backup_dir)
{
    return xasprintf("%s/metadata/" TOKENS_FILE, backup_dir);
}

/* The file's document, or a new one when there is none; NULL with e when unreadable. */
static json_t *tokens_load(const char *backup_dir, struct err *e)
{
    char *path = tokens_path(backup_dir);
    json_t *doc = NULL;
    if (!fs_exists(path)) {
        doc = json_pack("{s:i, s:[]}", "version", 1, "tokens");
    } else {
        json_error_t je;
        doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        if (!doc || !json_is_array(json_object_get(doc, "tokens"))) {
            if (doc)
                json_decref(doc);
            doc = NULL;
            err_set(e, ERR_CONFIG,
                    "restore it from a copy, or move it aside and make new tokens (token add)",
                    "%s is not a token file (%s)", path, je.text);
        }
    }
    free(path);
    return doc;
}

static int tokens_save(const char *backup_dir, json_t *doc, struct err *e)
{
    char *path = tokens_path(backup_dir);
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    int rc = fs_write_atomic(path, text, strlen(text), 0600, e);
    free(text);
    free(path);
    return rc;
}

static int tokens_lock(const char *backup_dir, struct err *e)
{
    char *metadata = xasprintf("%s/metadata", backup_dir);
    int rc = fs_mkdir_p(metadata, 0700, e);
    free(metadata);
    if (rc != 0)
        return -1;
    char *path = xasprintf("%s/metadata/api-tokens.lock", backup_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        err_sys(e, errno, NULL, "cannot open %s", path);
    else if (flock(fd, LOCK_EX) != 0) {
        err_sys(e, errno, NULL, "cannot lock %s", path);
        close(fd);
        fd = -1;
    }
    free(path);
    return fd;
}

static bool label_ok(const char *s)
{
    size_t n = strlen(s);
    /* nor shaped like a token (revoke takes a token by its value: see caris_token_revoke) */
    if (n == 0 || n > CARIS_TOKEN_LABEL_MAX || strncmp(s, "cbt_", 4) == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(" ._@-", c)))
            return false;
    }
    return true;
}

static void token_hash_hex(const char *token, char out[2 * CX_SHA256_LEN + 1])
{
    uint8_t h[CX_SHA256_LEN];
    cx_sha256(token, strlen(token), h);
    cx_hex(h, sizeof(h), out);
}

int caris_token_add(const char *backup_dir, const char *label, enum caris_token_role role,
                    char token[CARIS_TOKEN_LEN + 1], struct caris_token_info *info, struct err *e)
{
    if (!label || !label_ok(label))
        return err_set(e, ERR_USAGE,
                       "a label is 1 to 64 letters, digits, spaces and . _ @ - (who or what uses "
                       "the token), not starting with cbt_ (a token's prefix)",
                       "invalid token label");
    int lock = tokens_lock(backup_dir, e);
    if (lock < 0)
        return -1;
    int rc = -1;
    json_t *doc = tokens_load(backup_dir, e);
    if (!doc)
        goto out;
    json_t *list = json_object_get(doc, "tokens"), *t;
    size_t i;
    json_array_foreach(list, i, t)
    {
        const char *l = json_string_value(json_object_get(t, "label"));
        const char *tid = json_string_value(json_object_get(t, "id"));
        if (tid && strcmp(tid, label) == 0) {
            err_set(e, ERR_USAGE, "choose another label (`token revoke` takes ids and labels)",
                    "the label '%s' is the id of another token", label);
            goto out;
        }
        if (l && strcmp(l, label) == 0) {
            err_set(e, ERR_USAGE, "choose another label, or revoke the old token first",
                    "a token labelled '%s' exists already", label);
            goto out;
        }
    }
    uint8_t secret[32], idb[8];
    cx_random(secret, sizeof(secret));
    cx_random(idb, sizeof(idb));
    memcpy(token, "cbt_", 4);
    cx_hex(secret, sizeof(secret), token + 4);
    cx_wipe(secret, sizeof(secret));
    memset(info, 0, sizeof(*info));
    cx_hex(idb, sizeof(idb), info->id);
    snprintf(info->label, sizeof(info->label), "%s", label);
    info->role = role;
    char hash[2 * CX_SHA256_LEN + 1], created[40];
    token_hash_hex(token, hash);
    time_format_iso(time_now_ns(), created, sizeof(created));
    json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", info->id, "label",
                                          label, "role", caris_token_role_name(role), "sha256",
                                          hash, "created", created));
    rc = tokens_save(backup_dir, doc, e);
    if (rc != 0)
        cx_wipe(token, CARIS_TOKEN_LEN + 1);
out:
    json_decref(doc);
    close(lock);
    return rc;
}

json_t *caris_token_list(const char *backup_dir, struct err *e)
{
    json_t *doc = tokens_load(backup_dir, e);
    if (!doc)
        return NULL;
    json_t *out = json_array(), *t;
    size_t i;
    json_array_foreach(json_object_get(doc, "tokens"), i, t)
    {
        json_t *c = json_copy(t);
        json_object_del(c, "sha256");
        json_array_append_new(out, c);
    }
    json_decref(doc);
    return out;
}

int caris_token_revoke(const char *backup_dir, const char *which, struct caris_token_info *info,
                       struct err *e)
{
    int lock = tokens_lock(backup_dir, e);
    if (lock < 0)
        return -1;
    int rc = -1;
    json_t *doc = tokens_load(backup_dir, e);
    if (doc) {
        json_t *list = json_object_get(doc, "tokens"), *t;
        /* an id names its token whatever the labels say: a label equal to another token's
         * id made the revocation of that id remove the labelled token (the last match won)
         * and leave the one named valid */
        size_t i, found = (size_t)-1, by_label = (size_t)-1;
        /* the token itself (revoked after a leak, given where its id goes): found by its
         * hash, and never repeated in a message (which goes to the audit log, that every
         * admin token may read) */
        bool secret = strncmp(which, "cbt_", 4) == 0;
        uint8_t want[CX_SHA256_LEN];
        cx_sha256(which, strlen(which), want);
        json_array_foreach(list, i, t)
        {
            const char *id = json_string_value(json_object_get(t, "id"));
            const char *l = json_string_value(json_object_get(t, "label"));
            const char *hex = json_string_value(json_object_get(t, "sha256"));
            uint8_t have[CX_SHA256_LEN];
            if (secret && hex && cx_unhex(hex, have, sizeof(have)) == 0 &&
                cx_memcmp(have, want, sizeof(have)) == 0)
                found = i;
            else if (!secret && id && strcmp(id, which) == 0)
                found = i;
            else if (l && strcmp(l, which) == 0)
                by_label = i;
        }
        if (found == (size_t)-1)
            found = by_label;
        if (found == (size_t)-1 && secret) {
            err_set(e, ERR_NOT_FOUND, "`caris-backup token list` shows the tokens",
                    "no token is the one given (a token, not repeated here)");
        } else if (found == (size_t)-1) {
            err_set(e, ERR_NOT_FOUND, "`caris-backup token list` shows the tokens",
                    "no token with id or label '%s'", which);
        } else {
            json_t *gone = json_array_get(list, found);
            if (info) {
                memset(info, 0, sizeof(*info));
                snprintf(info->id, sizeof(info->id), "%s",
                         json_string_value(json_object_get(gone, "id")) ?: "");
                snprintf(info->label, sizeof(info->label), "%s",
                         json_string_value(json_object_get(gone, "label")) ?: "");
                struct err ie = ERR_INIT;
                if (caris_token_role_parse(json_string_value(json_object_get(gone, "role")) ?: "",
                                           &info->role, &ie) != 0)
                    info->role = CARIS_ROLE_VIEWER;
            }
            json_array_remove(list, found);
            rc = tokens_save(backup_dir, doc, e);
        }
        json_decref(doc);
    }
    close(lock);
    return rc;
}

int caris_token_check(const char *backup_dir, const char *presented, struct caris_token_info *info,
                      struct err *e)
{
    json_t *doc = tokens_load(backup_dir, e);
    if (!doc)
        return -1;
    uint8_t want[CX_SHA256_LEN];
    cx_sha256(presented, strlen(presented), want);
    int found = 0;
    json_t *t;
    size_t i;
    json_array_foreach(json_object_get(doc, "tokens"), i, t)
    {
        uint8_t have[CX_SHA256_LEN];
        const char *hex = json_string_value(json_object_get(t, "sha256"));
        if (!hex || cx_unhex(hex, have, sizeof(have)) != 0)
            continue;
        /* no early exit: the time taken does not tell which token (or whether one) matched */
        int same = cx_memcmp(have, want, sizeof(have)) == 0;
        if (same && !found) {
            enum caris_token_role role;
            struct err ignored = ERR_INIT;
            memset(info, 0, sizeof(*info));
            snprintf(info->id, sizeof(info->id), "%s",
                     json_string_value(json_object_get(t, "id")) ?: "");
            snprintf(info->label, sizeof(info->label), "%s",
                     json_string_value(json_object_get(t, "label")) ?: "");
            info->role = caris_token_role_parse(json_string_value(json_object_get(t, "role")),
                                                &role, &ignored) == 0
                             ? role
                             : CARIS_ROLE_VIEWER;
            found = 1;
        }
    }
    json_decref(doc);
    return found ? 0 : 1;
}

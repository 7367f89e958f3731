/* Key slots: keys/<id>, each wrapping the repository's master key under a key derived with
 * Argon2id from a password (BACKUP_ENCRYPTION_KEY, or one added by `key add`). The format is
 * specified in docs/REPOSITORY-FORMAT.md, "Keys".
 *
 * Everything in a slot is read before anything authenticates it, and anyone who can write to
 * the repository can plant one. So: a slot file is at most MAX_KEY_FILE bytes, a repository
 * at most REPO_KEY_SLOTS_MAX slots, and the Argon2id parameters within the bounds writers
 * use (repo_kdf_check, one definition for both sides); the slot that opened the repository
 * last time (the caller's hint, kept outside the repository) is tried first, then the
 * cheapest; every field of a version-2 slot is bound to the wrapped key as associated data;
 * and a slot whose key does not open the config does not open the repository: the next slot
 * is tried. */
#include "internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "caris/secmem.h"

#define KDF_NAME "argon2id13"
#define KEY_AAD_V1 "caris key slot v1"
#define KEY_AAD_V2 "caris key slot v2"
#define SLOT_VERSION 3
#define SLOT_CHECK_TAG "caris key slot check"
#define MAX_KEY_FILE (16u << 10) /* a slot is ~400 bytes, plus a label */
#define CREATED_MAX 64
#define MASTER_LEN 64
#define WRAPPED_LEN (MASTER_LEN + CX_TAG_LEN)
#define MIN_PASSWORD_LEN 32

static const char WRONG_KEY_HINT[] =
    "BACKUP_ENCRYPTION_KEY must be a key the repository was created with or added by "
    "`caris-backup key add`";

/* One slot as read, before anything in it is trusted. */
struct slot {
    char name[24]; /* "keys/<16 hex>" */
    char id[17];
    int version;
    uint64_t ops, mem;
    uint8_t salt[CX_ARGON2_SALT_LEN], nonce[CX_NONCE_LEN], wrapped[WRAPPED_LEN];
    char created[CREATED_MAX + 1];
    char label[REPO_KEY_LABEL_MAX + 1];
};

int repo_kdf_check(uint64_t ops, uint64_t mem, struct err *e)
{
    if (ops < REPO_KDF_OPS_MIN || ops > REPO_KDF_OPS_MAX || mem < REPO_KDF_MEM_MIN ||
        mem > REPO_KDF_MEM_MAX)
        return err_set(e, ERR_USAGE,
                       "use 1 to 8 Argon2id passes and 8 KiB to 1 GiB of memory (defaults: 3 "
                       "passes, 64 MiB)",
                       "Argon2id parameters out of range: %" PRIu64 " passes, %" PRIu64
                       " bytes of memory",
                       ops, mem);
    return 0;
}

static bool valid_slot_id(const char *id)
{
    size_t n = 0;
    for (; id[n]; n++)
        if (!((id[n] >= '0' && id[n] <= '9') || (id[n] >= 'a' && id[n] <= 'f')))
            return false;
    return n == 16;
}

static int check_label(const char *label, struct err *e)
{
    size_t n = strlen(label);
    if (n > REPO_KEY_LABEL_MAX || !str_is_utf8(label, n))
        return err_set(e, ERR_USAGE, "use a label of at most 256 bytes of UTF-8",
                       "invalid key slot label (%zu bytes%s)", n,
                       str_is_utf8(label, n) ? "" : ", not UTF-8");
    return 0;
}

/* The associated data of a slot's wrapped key. Version 2 binds every field a reader acts on
 * or shows: tag || 0x00 || id || kdf || ops u64 || mem u64 || salt || created || label, each
 * string and the salt preceded by its length (u32), integers little-endian. The nonce is
 * bound by GCM itself. Version 1 bound nothing but its tag. */
static void slot_aad(const struct slot *s, struct buf *out)
{
    out->len = 0;
    if (s->version == 1) {
        buf_append(out, KEY_AAD_V1, sizeof(KEY_AAD_V1) - 1);
        return;
    }
    buf_append(out, KEY_AAD_V2, sizeof(KEY_AAD_V2)); /* with its terminating 0x00 */
    const char *strs[] = {s->id, KDF_NAME};
    for (size_t i = 0; i < 2; i++) {
        buf_append_u32le(out, (uint32_t)strlen(strs[i]));
        buf_append(out, strs[i], strlen(strs[i]));
    }
    buf_append_u64le(out, s->ops);
    buf_append_u64le(out, s->mem);
    buf_append_u32le(out, (uint32_t)sizeof(s->salt));
    buf_append(out, s->salt, sizeof(s->salt));
    buf_append_u32le(out, (uint32_t)strlen(s->created));
    buf_append(out, s->created, strlen(s->created));
    buf_append_u32le(out, (uint32_t)strlen(s->label));
    buf_append(out, s->label, strlen(s->label));
}

/* A slot's checksum (version 3): SHA-256 of tag || 0x00 || u32 version || the version-2
 * associated data || nonce || wrapped, in hex. Anyone can recompute it, so it authenticates
 * nothing (the associated data does that); it tells a slot damaged by a flipped or lost byte
 * from a wrong BACKUP_ENCRYPTION_KEY, which the AEAD alone cannot. */
static void slot_check(const struct slot *s, char out[2 * CX_SHA256_LEN + 1])
{
    struct buf in = {0}, aad = {0};
    struct slot v2 = *s;
    v2.version = 2;
    slot_aad(&v2, &aad);
    buf_append(&in, SLOT_CHECK_TAG, sizeof(SLOT_CHECK_TAG)); /* with its 0x00 */
    buf_append_u32le(&in, (uint32_t)s->version);
    buf_append(&in, aad.data, aad.len);
    buf_append(&in, s->nonce, sizeof(s->nonce));
    buf_append(&in, s->wrapped, sizeof(s->wrapped));
    uint8_t h[CX_SHA256_LEN];
    struct cx_sha256 *c = cx_sha256_new();
    cx_sha256_update(c, in.data, in.len);
    cx_sha256_final(c, h);
    cx_sha256_free(c);
    cx_hex(h, sizeof(h), out);
    secmem_wipe(v2.wrapped, sizeof(v2.wrapped));
    buf_free(&in);
    buf_free(&aad);
}

/* Reads and checks one slot file. -1 with ERR_DAMAGE when it is not a slot this version
 * accepts (malformed, parameters out of bounds), another code when it could not be read. */
static int slot_read(struct repo *r, const char *name, struct slot *s, struct err *e)
{
    memset(s, 0, sizeof(*s));
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (!valid_slot_id(base))
        return err_set(e, ERR_DAMAGE, "remove files in keys/ that caris-backup did not write",
                       "%s is not a key slot name", name);
    snprintf(s->name, sizeof(s->name), "keys/%s", base);
    snprintf(s->id, sizeof(s->id), "%s", base);
    struct buf b = {0};
    if (storage_get(r->st, s->name, MAX_KEY_FILE, &b, e) != 0) {
        buf_free(&b);
        return -1;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)b.data, b.len, 0, &je);
    buf_free(&b);
    const char *kdf, *salt_hex, *nonce_hex, *wrapped_hex;
    json_int_t ops, mem, version;
    if (!j || json_unpack(j, "{s:I, s:s, s:I, s:I, s:s, s:s, s:s}", "version", &version, "kdf",
                          &kdf, "ops", &ops, "mem", &mem, "salt", &salt_hex, "nonce", &nonce_hex,
                          "wrapped", &wrapped_hex) != 0) {
        json_decref(j);
        return err_set(e, ERR_DAMAGE, NULL, "key slot %s is malformed", s->name);
    }
    int rc = -1;
    if (version < 1 || version > SLOT_VERSION) {
        err_set(e, ERR_DAMAGE,
                version > SLOT_VERSION ? "a newer caris-backup wrote it: upgrade to use it" : NULL,
                "key slot %s has version %lld, this program reads versions 1 to %d", s->name,
                (long long)version, SLOT_VERSION);
        goto out;
    }
    s->version = (int)version;
    if (strcmp(kdf, KDF_NAME) != 0 || cx_unhex(salt_hex, s->salt, sizeof(s->salt)) ||
        cx_unhex(nonce_hex, s->nonce, sizeof(s->nonce)) ||
        cx_unhex(wrapped_hex, s->wrapped, sizeof(s->wrapped))) {
        err_set(e, ERR_DAMAGE, NULL, "key slot %s has invalid fields", s->name);
        goto out;
    }
    struct err ke = ERR_INIT;
    if (ops < 0 || mem < 0 || repo_kdf_check((uint64_t)ops, (uint64_t)mem, &ke) != 0) {
        err_set(e, ERR_DAMAGE,
                "a slot this program did not write (or written with other limits): remove it, "
                "or open the repository with the caris-backup that wrote it and `key add` a "
                "slot with the default parameters",
                "key slot %s asks for Argon2id parameters beyond the accepted bounds (1 to %d "
                "passes, 8 KiB to %u MiB): refused without deriving",
                s->name, REPO_KDF_OPS_MAX, REPO_KDF_MEM_MAX >> 20);
        goto out;
    }
    s->ops = (uint64_t)ops;
    s->mem = (uint64_t)mem;
    /* Version 2 binds created and label, so they must be there and within bounds. Version 1
     * bound neither (they are only shown): one that does not fit is shown as empty. */
    json_t *created = json_object_get(j, "created"), *label = json_object_get(j, "label");
    bool ok_c = json_is_string(created) && json_string_length(created) <= CREATED_MAX &&
                strlen(json_string_value(created)) == json_string_length(created);
    bool ok_l = json_is_string(label) && json_string_length(label) <= REPO_KEY_LABEL_MAX &&
                strlen(json_string_value(label)) == json_string_length(label);
    if (s->version >= 2 && (!ok_c || !ok_l)) {
        err_set(e, ERR_DAMAGE, NULL, "key slot %s has an invalid label or creation time", s->name);
        goto out;
    }
    if (ok_c)
        snprintf(s->created, sizeof(s->created), "%s", json_string_value(created));
    if (ok_l)
        snprintf(s->label, sizeof(s->label), "%s", json_string_value(label));
    /* The checksum, checked whatever the version says when it is there (a flipped version
     * number then shows as damage too), and required from version 3 on (a damaged "check"
     * name too). Versions 1 and 2 have none: their damage cannot be told from a wrong key. */
    json_t *check = json_object_get(j, "check");
    char want[2 * CX_SHA256_LEN + 1];
    if (check || s->version >= 3) {
        slot_check(s, want);
        const char *got = json_string_value(check);
        if (!got || strcmp(got, want) != 0) {
            err_set(e, ERR_DAMAGE,
                    "restore keys/ from a copy of the repository, or open it with another key "
                    "(`key add` then writes a new slot)",
                    "key slot %s is damaged: %s", s->name,
                    got ? "its checksum does not match its contents" : "its checksum is missing");
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(j);
    return rc;
}

/* Derives the slot's key from password and unwraps: 1 opened (master filled), 0 wrong key,
 * -1 could not try (e: out of memory for Argon2id, ...). */
static int slot_unwrap(const struct slot *s, const char *password, uint8_t master[MASTER_LEN],
                       struct err *e)
{
    uint8_t *kek = secmem_alloc(CX_KEY_LEN);
    int rc = -1;
    if (cx_argon2id(password, strlen(password), s->salt, s->ops, (size_t)s->mem, kek, CX_KEY_LEN,
                    e) != 0)
        goto out;
    struct buf aad = {0};
    slot_aad(s, &aad);
    struct err ignore = ERR_INIT;
    rc = cx_aead_open(kek, s->nonce, aad.data, aad.len, s->wrapped, sizeof(s->wrapped), master,
                      &ignore) == 0
             ? 1
             : 0;
    buf_free(&aad);
out:
    secmem_free(kek);
    return rc;
}

/* The repository's slots, read and checked, in the order to try them. Damaged ones are left
 * out (the last such error in *damage, their number in *ndamaged); an error that is not
 * damage (I/O) fails the whole read. */
struct slotlist {
    struct slot *v;
    size_t n;
};

/* Cheapest first: a slot planted with the largest parameters allowed costs nothing until the
 * cheaper ones (ours, with the defaults) have been tried. Ties by id, for a stable order. */
static int cmp_slots(const void *a, const void *b)
{
    const struct slot *x = a, *y = b;
    uint64_t cx = x->ops * x->mem, cy = y->ops * y->mem; /* bounded: at most 8 * 2^30 */
    if (cx != cy)
        return cx < cy ? -1 : 1;
    return strcmp(x->id, y->id);
}

static void slots_order(struct slotlist *l, const char *hint)
{
    if (l->n > 1)
        qsort(l->v, l->n, sizeof(*l->v), cmp_slots);
    /* The hint (the slot that opened the repository last time) goes first. */
    for (size_t i = 0; hint && i < l->n; i++)
        if (strcmp(l->v[i].id, hint) == 0) {
            struct slot t = l->v[i];
            memmove(l->v + 1, l->v, i * sizeof(*l->v));
            l->v[0] = t;
            break;
        }
}

static void slots_free(struct slotlist *l)
{
    if (l->v)
        secmem_wipe(l->v, l->n * sizeof(*l->v));
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int slots_read(struct repo *r, struct slotlist *l, struct err *damage, size_t *ndamaged,
                      struct err *e)
{
    memset(l, 0, sizeof(*l));
    *ndamaged = 0;
    struct namelist names;
    if (repo_list_names(r, "keys", &names, e) != 0)
        return -1;
    if (names.n > REPO_KEY_SLOTS_MAX) {
        err_set(e, ERR_DAMAGE,
                "remove the key slots you did not add (see keys/ in the repository); each slot "
                "costs an Argon2id derivation on every open",
                "repository %s has %zu key slots, more than the %d this program reads", r->path,
                names.n, REPO_KEY_SLOTS_MAX);
        namelist_free(&names);
        return -1;
    }
    l->v = xcalloc(names.n ? names.n : 1, sizeof(*l->v));
    for (size_t i = 0; i < names.n; i++) {
        struct err se = ERR_INIT;
        if (slot_read(r, names.v[i], &l->v[l->n], &se) == 0) {
            l->n++;
            continue;
        }
        if (se.code != ERR_DAMAGE) {
            *e = se;
            namelist_free(&names);
            slots_free(l);
            return -1;
        }
        *damage = se;
        (*ndamaged)++;
    }
    namelist_free(&names);
    return 0;
}

int keys_write_slot(struct repo *r, const char *password, const char *label, uint64_t ops,
                    uint64_t mem, char id_out[17], struct err *e)
{
    if (!label)
        label = "";
    if (repo_kdf_check(ops, mem, e) != 0 || check_label(label, e) != 0)
        return -1;
    struct slot s = {.version = SLOT_VERSION, .ops = ops, .mem = mem};
    uint8_t rid[8];
    cx_random(rid, sizeof(rid));
    cx_hex(rid, sizeof(rid), s.id);
    snprintf(s.name, sizeof(s.name), "keys/%s", s.id);
    cx_random(s.salt, sizeof(s.salt));
    cx_random(s.nonce, sizeof(s.nonce));
    time_format_iso(time_now_ns(), s.created, sizeof(s.created));
    snprintf(s.label, sizeof(s.label), "%s", label);

    uint8_t *kek = secmem_alloc(CX_KEY_LEN), *master = secmem_alloc(MASTER_LEN);
    struct buf aad = {0};
    int rc = cx_argon2id(password, strlen(password), s.salt, ops, (size_t)mem, kek, CX_KEY_LEN, e);
    if (rc == 0) {
        memcpy(master, r->enc_key, 32);
        memcpy(master + 32, r->mac_key, 32);
        slot_aad(&s, &aad);
        rc = cx_aead_seal(kek, s.nonce, aad.data, aad.len, master, MASTER_LEN, s.wrapped, e);
    }
    secmem_free(kek);
    secmem_free(master);
    buf_free(&aad);
    if (rc != 0)
        return -1;
    char salt_hex[2 * sizeof(s.salt) + 1], nonce_hex[2 * sizeof(s.nonce) + 1],
        wrapped_hex[2 * sizeof(s.wrapped) + 1];
    cx_hex(s.salt, sizeof(s.salt), salt_hex);
    cx_hex(s.nonce, sizeof(s.nonce), nonce_hex);
    cx_hex(s.wrapped, sizeof(s.wrapped), wrapped_hex);
    char check[2 * CX_SHA256_LEN + 1];
    slot_check(&s, check);
    json_t *j = json_pack("{s:i, s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:s}", "version",
                          SLOT_VERSION, "kdf", KDF_NAME, "ops", (json_int_t)ops, "mem",
                          (json_int_t)mem, "salt", salt_hex, "nonce", nonce_hex, "wrapped",
                          wrapped_hex, "created", s.created, "label", s.label, "check", check);
    char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!text)
        return err_set(e, ERR_FAILURE, NULL, "cannot serialise key slot %s", s.name);
    rc = storage_put(r->st, s.name, text, strlen(text), e);
    free(text);
    if (rc == 0)
        snprintf(id_out, 17, "%s", s.id);
    return rc;
}

int keys_unlock(struct repo *r, const char *password, const char *hint, struct err *e)
{
    struct slotlist l;
    struct err damage = ERR_INIT;
    size_t ndamaged;
    if (slots_read(r, &l, &damage, &ndamaged, e) != 0)
        return -1;
    if (l.n == 0 && ndamaged == 0) {
        slots_free(&l);
        return err_set(e, ERR_DAMAGE, "restore the keys/ directory from a copy of the repository",
                       "repository %s has no key slots", r->path);
    }
    slots_order(&l, hint);
    r->key_slots_tried = 0;
    uint8_t *master = secmem_alloc(MASTER_LEN);
    struct err cfg_err = ERR_INIT, kdf_err = ERR_INIT;
    const char *cfg_slot = NULL;
    int rc = -1;
    for (size_t i = 0; i < l.n; i++) {
        struct err ke = ERR_INIT;
        r->key_slots_tried++;
        int u = slot_unwrap(&l.v[i], password, master, &ke);
        if (u < 0)
            kdf_err = ke;
        if (u != 1)
            continue;
        memcpy(r->enc_key, master, 32);
        memcpy(r->mac_key, master + 32, 32);
        secmem_wipe(master, MASTER_LEN);
        snprintf(r->key_slot, sizeof(r->key_slot), "%s", l.v[i].id);
        struct err ce = ERR_INIT;
        if (repo_read_config(r, &ce) == 0) {
            rc = 0;
            break;
        }
        secmem_wipe(r->enc_key, sizeof(r->enc_key));
        secmem_wipe(r->mac_key, sizeof(r->mac_key));
        r->key_slot[0] = '\0';
        if (ce.code != ERR_DAMAGE || r->config_missing) {
            *e = ce;
            goto out;
        }
        /* The slot unwrapped a key, but not the one the config is sealed under (a slot
         * planted with a key of its own, or a damaged config): try the others. */
        cfg_err = ce;
        cfg_slot = l.v[i].name;
    }
    if (rc == 0)
        goto out;
    if (cfg_slot) {
        *e = cfg_err;
        err_set(e, ERR_DAMAGE,
                "the config file is damaged or was replaced, or the slot was planted: restore "
                "config (and keys/) from a copy of the repository",
                "cannot open repository %s: BACKUP_ENCRYPTION_KEY opens key slot %s, but the "
                "repository config does not authenticate under its key (%s)",
                r->path, cfg_slot, cfg_err.msg);
    } else if (err_is_set(&kdf_err)) {
        *e = kdf_err;
        err_wrap(e, "cannot open repository %s", r->path);
    } else if (l.n == 0) {
        *e = damage;
        err_wrap(e, "cannot open repository %s: no key slot is readable", r->path);
    } else if (ndamaged > 0) {
        /* The key's own slot may be the damaged one: never call that a wrong key. */
        err_set(e, ERR_DAMAGE,
                "if BACKUP_ENCRYPTION_KEY is right, its key slot is the damaged one: restore "
                "keys/ from a copy of the repository (or open it with another key and `key "
                "add` this one again)",
                "cannot open repository %s: no intact key slot opens with BACKUP_ENCRYPTION_KEY, "
                "and %zu key slot%s damaged (%s)",
                r->path, ndamaged, ndamaged == 1 ? " is" : "s are", damage.msg);
    } else {
        err_set(e, ERR_WRONG_KEY, WRONG_KEY_HINT, "cannot open repository %s: wrong encryption key",
                r->path);
    }
out:
    secmem_free(master);
    slots_free(&l);
    return rc;
}

const char *repo_key_slot(const struct repo *r)
{
    return r->key_slot;
}

int repo_key_text_check(const char *password, const char *what, struct err *e)
{
    size_t plen = strlen(password);
    if (plen < MIN_PASSWORD_LEN)
        return err_set(e, ERR_CONFIG, "use a random key of at least 32 characters",
                       "%s is too short", what);
    /* .env.local drops the blanks around an unquoted value (and a '\r' before the line's end),
     * takes " #" for the start of a comment and a leading quote for a quoted value, and stdin
     * gives one line: a key like that could not be given back as BACKUP_ENCRYPTION_KEY the way
     * keys are kept, and the operator would hold only "wrong encryption key" (init took one:
     * a repository no key written into .env.local opened). */
    bool ctl = false;
    for (size_t i = 0; i < plen; i++)
        ctl = ctl || (unsigned char)password[i] < 0x20 || password[i] == 0x7f;
    const char *why = ctl ? "holds a control character (a tab, a newline, ...)"
                      : password[0] == ' ' || password[plen - 1] == ' '
                          ? "begins or ends with a blank"
                      : strstr(password, " #") ? "holds \" #\" (a comment in .env.local)"
                      : password[0] == '\'' || password[0] == '"' ? "begins with a quote"
                                                                  : NULL;
    if (why)
        return err_set(e, ERR_CONFIG,
                       "an unquoted value in .env.local loses its surrounding blanks, ends at "
                       "\" #\" and is read as quoted after a leading quote: use a random key, e.g. "
                       "`openssl rand -base64 33`",
                       "%s %s", what, why);
    return 0;
}

int repo_key_add(struct repo *r, const char *password, const char *label, char id_out[17],
                 struct err *e)
{
    if (repo_key_text_check(password, "the new key", e) != 0)
        return -1;
    /* a label is stored in clear in the repository and shown by `key list`: the key typed
     * there by mistake (`--label "$NEW_KEY"`) was kept in clear beside the slot it opens */
    if (label && *label && strstr(label, password))
        return err_set(e, ERR_USAGE,
                       "give a label that says whose key it is or where it is kept, not the key; "
                       "nothing was added",
                       "the key slot's label holds the new key (labels are stored in clear)");
    if (check_label(label ? label : "", e) != 0)
        return -1;
    struct slotlist l;
    struct err damage = ERR_INIT;
    size_t ndamaged;
    if (slots_read(r, &l, &damage, &ndamaged, e) != 0)
        return -1;
    int rc = 0;
    if (l.n + ndamaged >= REPO_KEY_SLOTS_MAX) {
        rc = err_set(e, ERR_USAGE, "remove a key slot first (`caris-backup key remove ID`)",
                     "the repository has %zu key slots, the most this program reads is %d",
                     l.n + ndamaged, REPO_KEY_SLOTS_MAX);
        goto out;
    }
    /* A second slot for the same key adds nothing and hides which key is which. */
    uint8_t *master = secmem_alloc(MASTER_LEN);
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        struct err ke = ERR_INIT;
        if (slot_unwrap(&l.v[i], password, master, &ke) == 1)
            rc = err_set(e, ERR_USAGE, "each key slot should hold a different key",
                         "that key already opens this repository (slot %s)", l.v[i].id);
    }
    secmem_free(master);
    if (rc == 0)
        rc = keys_write_slot(r, password, label, REPO_KDF_OPS_DEFAULT, REPO_KDF_MEM_DEFAULT, id_out,
                             e);
out:
    slots_free(&l);
    return rc;
}

json_t *repo_key_list(struct repo *r, struct err *e)
{
    struct namelist names;
    if (repo_list_names(r, "keys", &names, e) != 0)
        return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; i < names.n; i++) {
        const char *base = strrchr(names.v[i], '/');
        base = base ? base + 1 : names.v[i];
        struct slot s;
        struct err se = ERR_INIT;
        json_t *o = json_pack("{s:s, s:b}", "id", base, "current", strcmp(base, r->key_slot) == 0);
        if (slot_read(r, names.v[i], &s, &se) == 0) {
            json_object_set_new(o, "version", json_integer(s.version));
            json_object_set_new(o, "label", json_string(s.label));
            json_object_set_new(o, "created", json_string(s.created));
        } else {
            json_object_set_new(o, "error", json_string(se.msg));
        }
        json_array_append_new(arr, o);
    }
    namelist_free(&names);
    return arr;
}

int repo_key_remove(struct repo *r, const char *id, struct err *e)
{
    if (strcmp(id, r->key_slot) == 0)
        return err_set(e, ERR_USAGE,
                       "open the repository with another key (BACKUP_ENCRYPTION_KEY) to remove "
                       "this one",
                       "refusing to remove key slot %s: it is the key in use", id);
    if (!valid_slot_id(id))
        /* not echoed: `key remove` of the old key itself (not its slot's id) is a likely
         * mistake, and the error goes to the terminal and into the audit log */
        return err_set(e, ERR_USAGE,
                       "give the id of the key's slot (16 hex digits, `caris-backup key list`), "
                       "never a key: treat a key given on the command line as exposed",
                       "invalid key id (%zu characters, not a key slot id)", strlen(id));
    char *name = xasprintf("keys/%s", id);
    int ex = storage_exists(r->st, name, e);
    int rc = -1;
    if (ex == 0)
        err_set(e, ERR_NOT_FOUND, "see `caris-backup key list`", "no key slot %s", id);
    else if (ex == 1)
        rc = storage_remove(r->st, name, e);
    free(name);
    return rc;
}

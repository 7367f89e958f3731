/* Cryptographic primitives behind include/caris/crypto.h.
 *
 * Everything but Argon2id is OpenSSL 3 EVP. The algorithm objects (SHA-256, HMAC, HKDF,
 * AES-256-GCM) are fetched once, on the first call of any cx_ function, and kept for the life
 * of the process: an implicit fetch (EVP_sha256() and friends) costs a locked provider lookup
 * on every init, which would show on the per-chunk hot path. Fetched objects are immutable and
 * reference-counted, so all threads share them without locks.
 *
 * Functions the header declares void cannot report a failure. For them, a failure of OpenSSL
 * itself (out of memory, broken installation) aborts the process with a message: returning a
 * wrong hash or MAC would silently corrupt the repository, which is worse. */
#include "caris/crypto.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <sodium.h>

#define SHA256_BLOCK_LEN 64

/* NIST SP 800-38D: one GCM message holds at most 2^39 - 256 bits of plaintext. */
#define GCM_MAX_LEN ((UINT64_C(1) << 36) - 32)

/* EVP_*Update and RAND_bytes take int lengths: longer buffers go through in pieces of this. */
#define OSSL_PIECE ((size_t)1 << 30)

/* RFC 5869: HKDF-SHA-256 produces at most 255 blocks of 32 bytes. */
#define HKDF_MAX_OUT (255 * CX_SHA256_LEN)

/* OpenSSL 3.0 refuses longer HKDF info, without a reason in its error queue. */
#define HKDF_MAX_INFO 32768

static const char HINT_INSTALL[] = "check the OpenSSL 3 installation (libcrypto with its default "
                                   "provider, see OPENSSL_CONF) and libsodium";

/* Never written after init_once returns (pthread_once orders the writes before any reader). */
static struct {
    EVP_MD *sha256;
    EVP_MAC *hmac;
    EVP_KDF *hkdf;
    EVP_CIPHER *aes_gcm;
    char failed[256]; /* empty when everything was found */
} g;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Non-const because OSSL_PARAM_construct_utf8_string takes char *; OpenSSL only reads it. */
static char DIGEST_NAME[] = "SHA256";

/* A valid pointer for zero-length inputs whose caller passed NULL. */
static const uint8_t EMPTY[1];

static void init_once(void)
{
    if (sodium_init() < 0) {
        snprintf(g.failed, sizeof(g.failed), "libsodium failed to initialise");
        return;
    }
    g.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    g.hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    g.hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    g.aes_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    const char *missing = !g.sha256    ? "SHA256"
                          : !g.hmac    ? "HMAC"
                          : !g.hkdf    ? "HKDF"
                          : !g.aes_gcm ? "AES-256-GCM"
                                       : NULL;
    if (missing) {
        snprintf(g.failed, sizeof(g.failed), "openssl does not provide %s", missing);
        ERR_clear_error();
    }
}

/* Runs the one-time initialisation; 0 when every algorithm is available. */
static int algs_ready(void)
{
    if (pthread_once(&g_once, init_once) != 0)
        return -1;
    return g.failed[0] ? -1 : 0;
}

static _Noreturn void fatal(const char *what)
{
    fprintf(stderr, "caris-backup: fatal: %s\n", what);
    ERR_print_errors_fp(stderr);
    abort();
}

/* For the void functions: the algorithms must be there (cx_init has said so). */
static void algs_require(void)
{
    if (algs_ready() != 0)
        fatal(g.failed[0] ? g.failed : "cannot initialise cryptography");
}

/* Fills e from the first queued OpenSSL error and empties this thread's queue, so that a stale
 * error never shows up in a later, unrelated message. Returns -1. */
static int ossl_err(struct err *e, const char *what)
{
    unsigned long code = ERR_get_error();
    char reason[256] = "openssl gave no reason";
    if (code != 0)
        ERR_error_string_n(code, reason, sizeof(reason));
    ERR_clear_error();
    return err_set(e, ERR_FAILURE, NULL, "%s: %s", what, reason);
}

int cx_init(struct err *e)
{
    if (algs_ready() != 0)
        return err_set(e, ERR_FAILURE, HINT_INSTALL, "cannot initialise cryptography: %s",
                       g.failed[0] ? g.failed : "pthread_once failed");
    return 0;
}

/* ---- SHA-256 ---------------------------------------------------------------------------- */

struct cx_sha256 {
    EVP_MD_CTX *ctx;
};

struct cx_sha256 *cx_sha256_new(void)
{
    algs_require();
    struct cx_sha256 *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || !EVP_DigestInit_ex2(h->ctx, g.sha256, NULL)) {
        /* With a fetched SHA-256 the init can only fail for lack of memory. */
        EVP_MD_CTX_free(h->ctx);
        free(h);
        ERR_clear_error();
        return NULL;
    }
    return h;
}

void cx_sha256_update(struct cx_sha256 *h, const void *data, size_t len)
{
    if (len == 0)
        return;
    if (!EVP_DigestUpdate(h->ctx, data, len))
        fatal("sha-256 update failed");
}

void cx_sha256_final(struct cx_sha256 *h, uint8_t out[CX_SHA256_LEN])
{
    if (!EVP_DigestFinal_ex(h->ctx, out, NULL) || !EVP_DigestInit_ex2(h->ctx, g.sha256, NULL))
        fatal("sha-256 final failed");
}

void cx_sha256_free(struct cx_sha256 *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void cx_sha256(const void *data, size_t len, uint8_t out[CX_SHA256_LEN])
{
    algs_require();
    if (!EVP_Digest(len ? data : EMPTY, len, out, NULL, g.sha256, NULL))
        fatal("sha-256 failed");
}

/* ---- HMAC-SHA-256 ----------------------------------------------------------------------- */

void cx_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                    uint8_t out[CX_SHA256_LEN])
{
    algs_require();
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, DIGEST_NAME, 0),
        OSSL_PARAM_construct_end(),
    };
    size_t out_len = 0;
    /* A non-NULL key even when empty: EVP_MAC_init takes NULL as "keep the previous key". */
    EVP_MAC_CTX *c = EVP_MAC_CTX_new(g.hmac);
    if (!c || !EVP_MAC_init(c, key_len ? key : EMPTY, key_len, params) ||
        !EVP_MAC_update(c, len ? data : EMPTY, len) ||
        !EVP_MAC_final(c, out, &out_len, CX_SHA256_LEN) || out_len != CX_SHA256_LEN)
        fatal("hmac-sha-256 failed");
    EVP_MAC_CTX_free(c);
}

/* The HMAC of RFC 2104 is H((K ^ opad) || H((K ^ ipad) || m)). Both padded keys fill exactly
 * one SHA-256 block, so the hash states after absorbing them are fixed for a given key: they
 * are computed once here, and every MAC starts from copies of them. That saves two of the
 * compression-function calls and all key handling per chunk, and keeps the shared states
 * read-only, which is what makes concurrent calls on one key safe. */
struct cx_hmac_key {
    EVP_MD_CTX *inner; /* SHA-256 state after K ^ ipad */
    EVP_MD_CTX *outer; /* SHA-256 state after K ^ opad */
};

struct cx_hmac_key *cx_hmac_key_new(const uint8_t *key, size_t key_len)
{
    algs_require();
    uint8_t block[SHA256_BLOCK_LEN] = {0};
    uint8_t ipad[SHA256_BLOCK_LEN];
    uint8_t opad[SHA256_BLOCK_LEN];
    struct cx_hmac_key *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;

    /* Keys longer than a block are replaced by their hash (RFC 2104 section 2). */
    if (key_len > SHA256_BLOCK_LEN)
        cx_sha256(key, key_len, block);
    else if (key_len > 0)
        memcpy(block, key, key_len);
    for (size_t i = 0; i < SHA256_BLOCK_LEN; i++) {
        ipad[i] = block[i] ^ 0x36;
        opad[i] = block[i] ^ 0x5c;
    }

    k->inner = EVP_MD_CTX_new();
    k->outer = EVP_MD_CTX_new();
    int ok = k->inner && k->outer && EVP_DigestInit_ex2(k->inner, g.sha256, NULL) &&
             EVP_DigestUpdate(k->inner, ipad, sizeof(ipad)) &&
             EVP_DigestInit_ex2(k->outer, g.sha256, NULL) &&
             EVP_DigestUpdate(k->outer, opad, sizeof(opad));
    cx_wipe(block, sizeof(block));
    cx_wipe(ipad, sizeof(ipad));
    cx_wipe(opad, sizeof(opad));
    if (!ok) {
        ERR_clear_error();
        cx_hmac_key_free(k);
        return NULL;
    }
    return k;
}

void cx_hmac_key_mac(const struct cx_hmac_key *k, const void *data, size_t len,
                     uint8_t out[CX_SHA256_LEN])
{
    uint8_t inner_hash[CX_SHA256_LEN];
    /* A context of our own per call: k is only read (EVP_MD_CTX_copy_ex takes a const source),
     * so any number of threads may MAC with the same key at once. */
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || !EVP_MD_CTX_copy_ex(c, k->inner) || (len > 0 && !EVP_DigestUpdate(c, data, len)) ||
        !EVP_DigestFinal_ex(c, inner_hash, NULL) || !EVP_MD_CTX_copy_ex(c, k->outer) ||
        !EVP_DigestUpdate(c, inner_hash, sizeof(inner_hash)) || !EVP_DigestFinal_ex(c, out, NULL))
        fatal("hmac-sha-256 failed");
    EVP_MD_CTX_free(c);
    cx_wipe(inner_hash, sizeof(inner_hash));
}

void cx_hmac_key_free(struct cx_hmac_key *k)
{
    if (!k)
        return;
    /* EVP_MD_CTX_free cleanses the state, which is as good as the key. */
    EVP_MD_CTX_free(k->inner);
    EVP_MD_CTX_free(k->outer);
    free(k);
}

/* ---- HKDF-SHA-256 ----------------------------------------------------------------------- */

int cx_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                   const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len,
                   struct err *e)
{
    if (algs_ready() != 0)
        return cx_init(e);
    if (out_len == 0 || out_len > HKDF_MAX_OUT)
        return err_set(e, ERR_FAILURE, NULL,
                       "cannot derive %zu bytes with hkdf-sha-256: it yields 1 to %d bytes",
                       out_len, HKDF_MAX_OUT);
    if (info_len > HKDF_MAX_INFO)
        return err_set(e, ERR_FAILURE, NULL,
                       "cannot derive key with hkdf-sha-256: %zu bytes of info, openssl takes at "
                       "most %d",
                       info_len, HKDF_MAX_INFO);

    /* OpenSSL copies the parameters; the casts only drop const for OSSL_PARAM's sake. An
     * absent salt is the same as an empty one (HMAC pads both to zeros), so it is left out. */
    OSSL_PARAM params[5];
    OSSL_PARAM *p = params;
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, DIGEST_NAME, 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)(ikm_len ? ikm : EMPTY),
                                             ikm_len);
    if (salt_len > 0)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    if (info_len > 0)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    *p = OSSL_PARAM_construct_end();

    EVP_KDF_CTX *c = EVP_KDF_CTX_new(g.hkdf);
    if (!c)
        return ossl_err(e, "cannot derive key with hkdf-sha-256");
    int ok = EVP_KDF_derive(c, out, out_len, params);
    EVP_KDF_CTX_free(c);
    if (!ok) {
        cx_wipe(out, out_len);
        return ossl_err(e, "cannot derive key with hkdf-sha-256");
    }
    return 0;
}

/* ---- AES-256-GCM ------------------------------------------------------------------------ */

/* True when two buffers share bytes without starting at the same address. OpenSSL's GCM does
 * not check: such a call would silently produce garbage. Compared as integers because
 * relational operators on pointers into different objects are undefined. */
static int overlaps_partly(const void *a, size_t a_len, const void *b, size_t b_len)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    if (a_len == 0 || b_len == 0 || x == y)
        return 0;
    return x < y + b_len && y < x + a_len;
}

/* Feeds len bytes through EVP_CipherUpdate, in int-sized pieces. out NULL means in is AAD. GCM
 * is a stream mode: every byte in gives one byte out at once, so out advances by the piece. */
static int gcm_update(EVP_CIPHER_CTX *c, uint8_t *out, const uint8_t *in, size_t len)
{
    while (len > 0) {
        size_t n = len < OSSL_PIECE ? len : OSSL_PIECE;
        int out_len = 0;
        if (!EVP_CipherUpdate(c, out, &out_len, in, (int)n))
            return -1;
        if (out)
            out += n;
        in += n;
        len -= n;
    }
    return 0;
}

int cx_aead_seal(const uint8_t key[CX_KEY_LEN], const uint8_t nonce[CX_NONCE_LEN], const void *aad,
                 size_t aad_len, const void *in, size_t len, uint8_t *out, struct err *e)
{
    if (algs_ready() != 0)
        return cx_init(e);
    /* The second test matters where size_t is 32 bits: out must hold len + CX_TAG_LEN. */
    if ((uint64_t)len > GCM_MAX_LEN || len > SIZE_MAX - CX_TAG_LEN)
        return err_set(e, ERR_FAILURE, NULL,
                       "cannot encrypt %zu bytes: aes-256-gcm seals at most %" PRIu64
                       " bytes at once",
                       len, GCM_MAX_LEN);
    if (overlaps_partly(in, len, out, len + CX_TAG_LEN))
        return err_set(e, ERR_FAILURE, NULL,
                       "cannot encrypt: output overlaps input without being the same buffer");

    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return ossl_err(e, "cannot encrypt");
    int out_len = 0;
    /* The default GCM IV length is 12 bytes, CX_NONCE_LEN. */
    int ok = EVP_EncryptInit_ex2(c, g.aes_gcm, key, nonce, NULL) &&
             gcm_update(c, NULL, aad, aad_len) == 0 && gcm_update(c, out, in, len) == 0 &&
             EVP_EncryptFinal_ex(c, out + len, &out_len) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, CX_TAG_LEN, out + len) > 0;
    EVP_CIPHER_CTX_free(c);
    if (!ok)
        return ossl_err(e, "cannot encrypt with aes-256-gcm");
    return 0;
}

int cx_aead_open(const uint8_t key[CX_KEY_LEN], const uint8_t nonce[CX_NONCE_LEN], const void *aad,
                 size_t aad_len, const void *in, size_t len, uint8_t *out, struct err *e)
{
    if (algs_ready() != 0)
        return cx_init(e);
    if (len < CX_TAG_LEN)
        return err_set(e, ERR_DAMAGE, NULL,
                       "authentication failed: %zu bytes of ciphertext, fewer than the %d-byte "
                       "tag",
                       len, CX_TAG_LEN);
    size_t pt_len = len - CX_TAG_LEN;
    if ((uint64_t)pt_len > GCM_MAX_LEN)
        return err_set(e, ERR_DAMAGE, NULL,
                       "authentication failed: %zu bytes of ciphertext, more than "
                       "aes-256-gcm can have sealed",
                       len);
    if (overlaps_partly(in, len, out, pt_len))
        return err_set(e, ERR_FAILURE, NULL,
                       "cannot decrypt: output overlaps input without being the same buffer");

    /* Copied first: when opening in place the tag must survive whatever is written to out. */
    uint8_t tag[CX_TAG_LEN];
    memcpy(tag, (const uint8_t *)in + pt_len, CX_TAG_LEN);

    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c) {
        cx_wipe(out, pt_len);
        return ossl_err(e, "cannot decrypt");
    }
    int out_len = 0;
    int ok = EVP_DecryptInit_ex2(c, g.aes_gcm, key, nonce, NULL) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, CX_TAG_LEN, tag) > 0 &&
             gcm_update(c, NULL, aad, aad_len) == 0 && gcm_update(c, out, in, pt_len) == 0;
    /* Only the final step compares the tag; a failure before it is OpenSSL's, not the data's. */
    int authentic = ok && EVP_DecryptFinal_ex(c, out + pt_len, &out_len) > 0;
    EVP_CIPHER_CTX_free(c);
    if (!authentic) {
        /* GCM has already written unverified plaintext to out: it must not reach anyone. */
        cx_wipe(out, pt_len);
        if (ok) {
            ERR_clear_error();
            return err_set(e, ERR_DAMAGE, NULL, "authentication failed");
        }
        return ossl_err(e, "cannot decrypt with aes-256-gcm");
    }
    return 0;
}

/* ---- Argon2id --------------------------------------------------------------------------- */

int cx_argon2id(const char *password, size_t password_len, const uint8_t salt[CX_ARGON2_SALT_LEN],
                uint64_t ops_limit, size_t mem_limit, uint8_t *out, size_t out_len, struct err *e)
{
    if (algs_ready() != 0)
        return cx_init(e);
    if (out_len < crypto_pwhash_argon2id_BYTES_MIN || out_len > crypto_pwhash_argon2id_BYTES_MAX)
        return err_set(e, ERR_FAILURE, NULL,
                       "cannot derive %zu bytes with argon2id: it yields %zu to %zu bytes", out_len,
                       (size_t)crypto_pwhash_argon2id_BYTES_MIN,
                       (size_t)crypto_pwhash_argon2id_BYTES_MAX);
    if (password_len > crypto_pwhash_argon2id_PASSWD_MAX)
        return err_set(e, ERR_FAILURE, NULL, "cannot derive key with argon2id: password too long");
    if (ops_limit < crypto_pwhash_argon2id_OPSLIMIT_MIN ||
        ops_limit > crypto_pwhash_argon2id_OPSLIMIT_MAX ||
        mem_limit < crypto_pwhash_argon2id_MEMLIMIT_MIN ||
        mem_limit > crypto_pwhash_argon2id_MEMLIMIT_MAX)
        return err_set(e, ERR_FAILURE, NULL,
                       "cannot derive key with argon2id: %" PRIu64 " passes over %zu bytes of "
                       "memory is outside the range libsodium accepts",
                       ops_limit, mem_limit);

    /* libsodium runs one lane and uses mem_limit / 1024 KiB of memory; cx_argon2id_p1 computes
     * the same, faster where it has AVX-512 (argon2.c says why). */
    const char *pw = password_len ? password : (const char *)EMPTY;
    int rc = cx_argon2id_p1_fast()
                 ? cx_argon2id_p1((const uint8_t *)pw, password_len, salt, CX_ARGON2_SALT_LEN,
                                  (uint32_t)ops_limit, (uint32_t)(mem_limit / 1024), out, out_len)
                 : crypto_pwhash(out, out_len, pw, password_len, salt, ops_limit, mem_limit,
                                 crypto_pwhash_ALG_ARGON2ID13);
    if (rc != 0) {
        int errnum = errno;
        cx_wipe(out, out_len);
        if (errnum == ENOMEM)
            return err_set(
                e, ERR_FAILURE, "free memory, or lower the key derivation memory of the repository",
                "cannot derive key with argon2id: out of memory (needs %zu MiB)", mem_limit >> 20);
        return err_set(e, ERR_FAILURE, NULL, "cannot derive key with argon2id: %s",
                       strerror(errnum));
    }
    return 0;
}

/* ---- Small helpers ---------------------------------------------------------------------- */

void cx_random(void *out, size_t len)
{
    uint8_t *p = out;
    while (len > 0) {
        size_t n = len < OSSL_PIECE ? len : OSSL_PIECE;
        if (RAND_bytes(p, (int)n) != 1)
            fatal("the random number generator failed");
        p += n;
        len -= n;
    }
}

int cx_memcmp(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len);
}

void cx_wipe(void *p, size_t len)
{
    if (p && len > 0)
        OPENSSL_cleanse(p, len);
}

void cx_hex(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

/* Value of one hex digit (either case), or -1. Without a branch on c, because the digits may
 * spell a key: the comparisons compile to flag moves and the result is picked by masks. */
static int hex_digit(unsigned char c)
{
    int num = c - '0';
    int alpha = (c | 0x20) - 'a';
    int is_num = (unsigned int)num < 10;
    int is_alpha = (unsigned int)alpha < 6;
    int is_bad = !(is_num | is_alpha);
    return (num & -is_num) | ((alpha + 10) & -is_alpha) | -is_bad;
}

int cx_unhex(const char *in, uint8_t *out, size_t len)
{
    if (!in || len > (SIZE_MAX - 1) / 2)
        return -1;
    int bad = 0;
    for (size_t i = 0; i < len; i++) {
        /* Stop at the terminator so a short string is never read past its end. */
        if (in[2 * i] == '\0' || in[2 * i + 1] == '\0') {
            bad = 1;
            break;
        }
        int hi = hex_digit((unsigned char)in[2 * i]);
        int lo = hex_digit((unsigned char)in[2 * i + 1]);
        bad |= (hi | lo) < 0;
        out[i] = (uint8_t)(((unsigned int)hi << 4) | ((unsigned int)lo & 0x0f));
    }
    if (bad || in[2 * len] != '\0') {
        cx_wipe(out, len);
        return -1;
    }
    return 0;
}

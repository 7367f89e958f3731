/* Cryptographic primitives, all from OpenSSL 3 except Argon2id (libsodium).
 * Prefix cx_ (not crypto_: that is libsodium's). Every function that can fail fills err.
 * The void functions cannot fail on any input; should OpenSSL itself fail under them (out of
 * memory, broken installation) they abort the process rather than return a wrong hash. */
#ifndef CARIS_CRYPTO_H
#define CARIS_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/err.h"

#define CX_SHA256_LEN 32
#define CX_KEY_LEN 32
#define CX_NONCE_LEN 12
#define CX_TAG_LEN 16

/* Must be called once before any other cx_ function (initialises libsodium; idempotent,
 * thread-safe after the first call returns). */
int cx_init(struct err *e);

/* Streaming SHA-256. The context is opaque and heap-allocated. */
struct cx_sha256;
struct cx_sha256 *cx_sha256_new(void); /* NULL only on out-of-memory */
void cx_sha256_update(struct cx_sha256 *h, const void *data, size_t len);
void cx_sha256_final(struct cx_sha256 *h, uint8_t out[CX_SHA256_LEN]); /* resets h for reuse */
void cx_sha256_free(struct cx_sha256 *h);
void cx_sha256(const void *data, size_t len, uint8_t out[CX_SHA256_LEN]);

/* HMAC-SHA-256 (one shot). key may be any length. */
void cx_hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                    uint8_t out[CX_SHA256_LEN]);

/* Keyed chunk-id hasher: HMAC-SHA-256 with a fixed key, precomputed so that hashing a chunk
 * costs no key setup. Safe to use from several threads at once (each call is independent). */
struct cx_hmac_key;
struct cx_hmac_key *cx_hmac_key_new(const uint8_t *key, size_t key_len);
void cx_hmac_key_mac(const struct cx_hmac_key *k, const void *data, size_t len,
                     uint8_t out[CX_SHA256_LEN]);
void cx_hmac_key_free(struct cx_hmac_key *k);

/* HKDF-SHA-256 (RFC 5869). out_len must be 1 to 8160 (255 * 32); info at most 32768 bytes
 * (OpenSSL 3.0's limit). salt NULL/0 is the RFC's "not provided". */
int cx_hkdf_sha256(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                   const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len,
                   struct err *e);

/* AES-256-GCM. out receives len bytes of ciphertext followed by the 16-byte tag
 * (so out must hold len + CX_TAG_LEN). out may equal in (in place); any other overlap is
 * refused with an error. len is at most 2^36 - 32 (the GCM limit). A nonce must never be
 * used twice with one key. */
int cx_aead_seal(const uint8_t key[CX_KEY_LEN], const uint8_t nonce[CX_NONCE_LEN], const void *aad,
                 size_t aad_len, const void *in, size_t len, uint8_t *out, struct err *e);

/* Opens what cx_aead_seal produced: in is len bytes (ciphertext + tag, len >= CX_TAG_LEN),
 * out receives len - CX_TAG_LEN bytes. On a wrong key, wrong aad or any altered byte it
 * returns -1 with ERR_DAMAGE ("authentication failed") and out is zeroed. */
int cx_aead_open(const uint8_t key[CX_KEY_LEN], const uint8_t nonce[CX_NONCE_LEN], const void *aad,
                 size_t aad_len, const void *in, size_t len, uint8_t *out, struct err *e);

/* Argon2id, the result of libsodium's crypto_pwhash with ALG_ARGON2ID13 (computed by
 * cx_argon2id_p1). salt is 16 bytes. mem_limit in bytes (used in whole KiB, at least 8192);
 * ops_limit >= 1 passes; out_len >= 16; one lane. */
#define CX_ARGON2_SALT_LEN 16
int cx_argon2id(const char *password, size_t password_len, const uint8_t salt[CX_ARGON2_SALT_LEN],
                uint64_t ops_limit, size_t mem_limit, uint8_t *out, size_t out_len, struct err *e);

/* Argon2id version 1.3 (RFC 9106) with one lane, no secret and no associated data: `passes`
 * passes over m_kib KiB (>= 8), out_len >= 4 bytes. Its memory is mapped in huge pages where
 * the kernel has them and wiped before it is unmapped. 0, or -1 with errno (ENOMEM; EINVAL
 * for parameters out of range). */
int cx_argon2id_p1(const uint8_t *password, size_t password_len, const uint8_t *salt,
                   size_t salt_len, uint32_t passes, uint32_t m_kib, uint8_t *out, size_t out_len);
/* True when cx_argon2id_p1 runs its AVX-512 version, faster than libsodium's; elsewhere
 * cx_argon2id asks libsodium (the same result). */
bool cx_argon2id_p1_fast(void);

/* Cryptographically secure random bytes (OpenSSL RAND_bytes). Aborts the process if the
 * generator fails: continuing without randomness would risk nonce reuse. */
void cx_random(void *out, size_t len);

/* Constant-time comparison: 0 when equal, non-zero otherwise (not an ordering). */
int cx_memcmp(const void *a, const void *b, size_t len);

/* Overwrites memory in a way the compiler cannot drop. */
void cx_wipe(void *p, size_t len);

/* Lower-case hex. out must hold 2*len+1 bytes. */
void cx_hex(const uint8_t *in, size_t len, char *out);
/* Parses a NUL-terminated string of exactly 2*len hex digits (either case); returns -1 on any
 * other input, and then out is zeroed. */
int cx_unhex(const char *in, uint8_t *out, size_t len);

#endif

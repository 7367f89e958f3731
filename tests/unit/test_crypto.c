/* Known-answer tests take their vectors from the publications named beside them; nothing here
 * is derived from our own implementation's output. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <sodium.h>

#include "caris/crypto.h"

/* Test-side hex decoder, independent of cx_unhex (which has tests of its own). Returns a
 * malloc'd buffer the caller frees; *len receives its length. */
static uint8_t *hexbuf(const char *hex, size_t *len)
{
    size_t n = strlen(hex);
    assert_int_equal(n % 2, 0);
    uint8_t *b = malloc(n / 2 + 1);
    assert_non_null(b);
    for (size_t i = 0; i < n / 2; i++) {
        unsigned int v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        b[i] = (uint8_t)v;
    }
    *len = n / 2;
    return b;
}

static void assert_hex_equal(const uint8_t *got, size_t len, const char *want_hex)
{
    char *got_hex = malloc(2 * len + 1);
    assert_non_null(got_hex);
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        got_hex[2 * i] = digits[got[i] >> 4];
        got_hex[2 * i + 1] = digits[got[i] & 15];
    }
    got_hex[2 * len] = '\0';
    assert_string_equal(got_hex, want_hex);
    free(got_hex);
}

static void assert_all_zero(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        assert_int_equal(p[i], 0);
}

static int setup(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    return cx_init(&e);
}

static void test_init_idempotent(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    assert_int_equal(cx_init(&e), 0);
    assert_int_equal(cx_init(&e), 0);
    assert_false(err_is_set(&e));
}

/* ---- SHA-256: FIPS 180-2 appendix B ---------------------------------------------------- */

#define SHA_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA_448 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
#define SHA_MILLION_A "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
#define SHA_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
static const char MSG_448[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

static void test_sha256_one_shot(void **state)
{
    (void)state;
    uint8_t md[CX_SHA256_LEN];
    cx_sha256("abc", 3, md);
    assert_hex_equal(md, sizeof(md), SHA_ABC);
    cx_sha256(MSG_448, strlen(MSG_448), md);
    assert_hex_equal(md, sizeof(md), SHA_448);
    cx_sha256(NULL, 0, md);
    assert_hex_equal(md, sizeof(md), SHA_EMPTY);
}

static void test_sha256_streaming(void **state)
{
    (void)state;
    struct cx_sha256 *h = cx_sha256_new();
    assert_non_null(h);
    uint8_t md[CX_SHA256_LEN];

    /* One million 'a' in pieces that never line up with the 64-byte block. */
    static const size_t pieces[] = {1, 7, 63, 65, 997, 4093, 65537};
    char *a = malloc(65537);
    assert_non_null(a);
    memset(a, 'a', 65537);
    size_t left = 1000000;
    for (size_t i = 0; left > 0; i++) {
        size_t n = pieces[i % (sizeof(pieces) / sizeof(pieces[0]))];
        if (n > left)
            n = left;
        cx_sha256_update(h, a, n);
        left -= n;
    }
    free(a);
    cx_sha256_final(h, md);
    assert_hex_equal(md, sizeof(md), SHA_MILLION_A);

    /* final resets the context: it is reusable at once. */
    cx_sha256_update(h, "a", 1);
    cx_sha256_update(h, NULL, 0);
    cx_sha256_update(h, "bc", 2);
    cx_sha256_final(h, md);
    assert_hex_equal(md, sizeof(md), SHA_ABC);
    cx_sha256_final(h, md);
    assert_hex_equal(md, sizeof(md), SHA_EMPTY);

    cx_sha256_free(h);
    cx_sha256_free(NULL);
}

/* ---- HMAC-SHA-256: RFC 4231 section 4 -------------------------------------------------- */

struct hmac_vector {
    const char *key_hex;
    const char *data;
    size_t data_len;
    const char *mac_hex;
};

/* 131 bytes of 0xaa */
#define AA131                                                                                      \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"     \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"     \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DD50 "\xdd\xdd\xdd\xdd\xdd\xdd\xdd\xdd\xdd\xdd"
#define CD50 "\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd\xcd"
#define TC7_DATA                                                                                   \
    "This is a test using a larger than block-size key and a larger than block-size data. The "    \
    "key needs to be hashed before being used by the HMAC algorithm."

static const struct hmac_vector RFC4231[] = {
    /* test case 1 */
    {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "Hi There", 8,
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
    /* test case 2 */
    {"4a656665", "what do ya want for nothing?", 28,
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    /* test case 3 */
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", DD50 DD50 DD50 DD50 DD50, 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
    /* test case 4 */
    {"0102030405060708090a0b0c0d0e0f10111213141516171819", CD50 CD50 CD50 CD50 CD50, 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
    /* test case 6: key longer than a block */
    {AA131, "Test Using Larger Than Block-Size Key - Hash Key First", 54,
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    /* test case 7: key and data longer than a block */
    {AA131, TC7_DATA, sizeof(TC7_DATA) - 1,
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
};

static void test_hmac_rfc4231(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(RFC4231) / sizeof(RFC4231[0]); i++) {
        const struct hmac_vector *v = &RFC4231[i];
        size_t key_len;
        uint8_t *key = hexbuf(v->key_hex, &key_len);
        uint8_t mac[CX_SHA256_LEN];

        cx_hmac_sha256(key, key_len, v->data, v->data_len, mac);
        assert_hex_equal(mac, sizeof(mac), v->mac_hex);

        struct cx_hmac_key *k = cx_hmac_key_new(key, key_len);
        assert_non_null(k);
        memset(mac, 0, sizeof(mac));
        cx_hmac_key_mac(k, v->data, v->data_len, mac);
        assert_hex_equal(mac, sizeof(mac), v->mac_hex);
        /* The key object is not consumed by a call. */
        cx_hmac_key_mac(k, v->data, v->data_len, mac);
        assert_hex_equal(mac, sizeof(mac), v->mac_hex);
        cx_hmac_key_free(k);
        free(key);
    }
    cx_hmac_key_free(NULL);
}

/* The precomputed-state HMAC against OpenSSL's EVP_MAC HMAC, around the block-size edges of
 * both key and data (empty key, 63/64/65-byte keys, empty data). */
static void test_hmac_key_matches_one_shot(void **state)
{
    (void)state;
    static const size_t key_lens[] = {0, 1, 31, 32, 63, 64, 65, 128, 200};
    static const size_t data_lens[] = {0, 1, 55, 56, 63, 64, 65, 1000, 100000};
    uint8_t key[200];
    uint8_t *data = malloc(100000);
    assert_non_null(data);
    cx_random(key, sizeof(key));
    cx_random(data, 100000);
    for (size_t i = 0; i < sizeof(key_lens) / sizeof(key_lens[0]); i++) {
        struct cx_hmac_key *k = cx_hmac_key_new(key_lens[i] ? key : NULL, key_lens[i]);
        assert_non_null(k);
        for (size_t j = 0; j < sizeof(data_lens) / sizeof(data_lens[0]); j++) {
            uint8_t a[CX_SHA256_LEN], b[CX_SHA256_LEN];
            cx_hmac_sha256(key_lens[i] ? key : NULL, key_lens[i], data, data_lens[j], a);
            cx_hmac_key_mac(k, data, data_lens[j], b);
            assert_memory_equal(a, b, CX_SHA256_LEN);
        }
        cx_hmac_key_free(k);
    }
    free(data);
}

struct hmac_thread_arg {
    const struct cx_hmac_key *k;
    const uint8_t *data;
    size_t len;
    uint8_t want[CX_SHA256_LEN];
    int mismatches;
};

static void *hmac_thread(void *p)
{
    struct hmac_thread_arg *a = p;
    for (int i = 0; i < 200; i++) {
        uint8_t mac[CX_SHA256_LEN];
        cx_hmac_key_mac(a->k, a->data, a->len - (size_t)i, mac);
        if (i == 0 && memcmp(mac, a->want, sizeof(mac)) != 0)
            a->mismatches++;
    }
    return NULL;
}

/* Several threads MAC with one key at once (run under TSan to see races). */
static void test_hmac_key_concurrent(void **state)
{
    (void)state;
    enum { THREADS = 4, LEN = 65536 };
    uint8_t key[32];
    uint8_t *data = malloc(LEN);
    assert_non_null(data);
    cx_random(key, sizeof(key));
    cx_random(data, LEN);
    struct cx_hmac_key *k = cx_hmac_key_new(key, sizeof(key));
    assert_non_null(k);
    pthread_t t[THREADS];
    struct hmac_thread_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct hmac_thread_arg){.k = k, .data = data, .len = LEN - (size_t)i * 999};
        cx_hmac_sha256(key, sizeof(key), data, args[i].len, args[i].want);
        assert_int_equal(pthread_create(&t[i], NULL, hmac_thread, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(args[i].mismatches, 0);
    }
    cx_hmac_key_free(k);
    free(data);
}

/* ---- HKDF-SHA-256: RFC 5869 appendix A ------------------------------------------------- */

struct hkdf_vector {
    const char *ikm, *salt, *info, *okm;
};

static const struct hkdf_vector RFC5869[] = {
    /* test case 1 */
    {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "000102030405060708090a0b0c",
     "f0f1f2f3f4f5f6f7f8f9",
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"},
    /* test case 2: longer inputs and outputs */
    {"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
     "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
     "404142434445464748494a4b4c4d4e4f",
     "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
     "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
     "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
     "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
     "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef"
     "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
     "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
     "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
     "cc30c58179ec3e87c14c01d5c1f3434f1d87"},
    /* test case 3: zero-length salt and info */
    {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "", "",
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"},
};

static void test_hkdf_rfc5869(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(RFC5869) / sizeof(RFC5869[0]); i++) {
        const struct hkdf_vector *v = &RFC5869[i];
        size_t ikm_len, salt_len, info_len, okm_len;
        uint8_t *ikm = hexbuf(v->ikm, &ikm_len);
        uint8_t *salt = hexbuf(v->salt, &salt_len);
        uint8_t *info = hexbuf(v->info, &info_len);
        uint8_t *want = hexbuf(v->okm, &okm_len);
        uint8_t out[82];
        struct err e = ERR_INIT;
        assert_int_equal(cx_hkdf_sha256(ikm, ikm_len, salt_len ? salt : NULL, salt_len,
                                        info_len ? info : NULL, info_len, out, okm_len, &e),
                         0);
        assert_false(err_is_set(&e));
        assert_hex_equal(out, okm_len, v->okm);
        free(ikm);
        free(salt);
        free(info);
        free(want);
    }
}

static void test_hkdf_limits(void **state)
{
    (void)state;
    static uint8_t out[255 * 32 + 1];
    static const uint8_t ikm[32] = {1};
    static uint8_t info[32768 + 1];
    struct err e = ERR_INIT;
    assert_int_equal(cx_hkdf_sha256(ikm, sizeof(ikm), NULL, 0, NULL, 0, out, 255 * 32, &e), 0);
    assert_int_equal(cx_hkdf_sha256(ikm, sizeof(ikm), NULL, 0, NULL, 0, out, 255 * 32 + 1, &e), -1);
    assert_int_equal(e.code, ERR_FAILURE);
    err_clear(&e);
    assert_int_equal(cx_hkdf_sha256(ikm, sizeof(ikm), NULL, 0, NULL, 0, out, 0, &e), -1);
    err_clear(&e);
    /* Empty input keying material is valid HKDF, and so is the longest info we promise. */
    assert_int_equal(cx_hkdf_sha256(NULL, 0, NULL, 0, info, 32768, out, 32, &e), 0);
    assert_int_equal(cx_hkdf_sha256(ikm, sizeof(ikm), NULL, 0, info, 32769, out, 32, &e), -1);
    assert_non_null(strstr(e.msg, "info"));
}

/* ---- AES-256-GCM: McGrew and Viega, "The Galois/Counter Mode of Operation", test cases
 * 13 to 16 (256-bit keys) ---------------------------------------------------------------- */

struct gcm_vector {
    const char *key, *iv, *pt, *aad, *ct, *tag;
};

#define GCM_K15 "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
#define GCM_P60                                                                                    \
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"                             \
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
#define GCM_C60                                                                                    \
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"                             \
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"

static const struct gcm_vector GCM[] = {
    /* test case 13: empty plaintext */
    {"0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
     "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
    /* test case 14 */
    {"0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
     "00000000000000000000000000000000", "", "cea7403d4d606b6e074ec5d3baf39d18",
     "d0d1c8a799996bf0265b98b5d48ab919"},
    /* test case 15: no AAD */
    {GCM_K15, "cafebabefacedbaddecaf888", GCM_P60 "1aafd255", "", GCM_C60 "898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    /* test case 16: with AAD, plaintext not a whole number of blocks */
    {GCM_K15, "cafebabefacedbaddecaf888", GCM_P60, "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     GCM_C60, "76fc6ece0f4e1768cddf8853bb2d551b"},
};

static void test_gcm_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(GCM) / sizeof(GCM[0]); i++) {
        const struct gcm_vector *v = &GCM[i];
        size_t key_len, iv_len, pt_len, aad_len, ct_len, tag_len;
        uint8_t *key = hexbuf(v->key, &key_len);
        uint8_t *iv = hexbuf(v->iv, &iv_len);
        uint8_t *pt = hexbuf(v->pt, &pt_len);
        uint8_t *aad = hexbuf(v->aad, &aad_len);
        uint8_t *ct = hexbuf(v->ct, &ct_len);
        uint8_t *tag = hexbuf(v->tag, &tag_len);
        assert_int_equal(key_len, CX_KEY_LEN);
        assert_int_equal(iv_len, CX_NONCE_LEN);
        assert_int_equal(tag_len, CX_TAG_LEN);

        uint8_t sealed[64 + CX_TAG_LEN];
        struct err e = ERR_INIT;
        assert_int_equal(
            cx_aead_seal(key, iv, aad_len ? aad : NULL, aad_len, pt, pt_len, sealed, &e), 0);
        assert_memory_equal(sealed, ct, ct_len);
        assert_memory_equal(sealed + pt_len, tag, CX_TAG_LEN);

        uint8_t opened[64 + 1];
        assert_int_equal(cx_aead_open(key, iv, aad_len ? aad : NULL, aad_len, sealed,
                                      pt_len + CX_TAG_LEN, opened, &e),
                         0);
        assert_false(err_is_set(&e));
        if (pt_len)
            assert_memory_equal(opened, pt, pt_len);

        free(key);
        free(iv);
        free(pt);
        free(aad);
        free(ct);
        free(tag);
    }
}

static void test_gcm_in_place(void **state)
{
    (void)state;
    enum { LEN = 100000 };
    uint8_t key[CX_KEY_LEN], nonce[CX_NONCE_LEN];
    cx_random(key, sizeof(key));
    cx_random(nonce, sizeof(nonce));
    uint8_t *orig = malloc(LEN);
    uint8_t *buf = malloc(LEN + CX_TAG_LEN);
    uint8_t *copy = malloc(LEN + CX_TAG_LEN);
    assert_non_null(orig);
    assert_non_null(buf);
    assert_non_null(copy);
    cx_random(orig, LEN);
    memcpy(buf, orig, LEN);
    struct err e = ERR_INIT;

    assert_int_equal(cx_aead_seal(key, nonce, "hdr", 3, orig, LEN, copy, &e), 0);
    assert_int_equal(cx_aead_seal(key, nonce, "hdr", 3, buf, LEN, buf, &e), 0);
    assert_memory_equal(buf, copy, LEN + CX_TAG_LEN);

    assert_int_equal(cx_aead_open(key, nonce, "hdr", 3, buf, LEN + CX_TAG_LEN, buf, &e), 0);
    assert_memory_equal(buf, orig, LEN);
    free(orig);
    free(buf);
    free(copy);
}

/* Only exactly the same buffer is allowed; a shifted one would silently give garbage. */
static void test_gcm_rejects_partial_overlap(void **state)
{
    (void)state;
    uint8_t key[CX_KEY_LEN] = {0}, nonce[CX_NONCE_LEN] = {0};
    uint8_t buf[64 + CX_TAG_LEN] = {0};
    struct err e = ERR_INIT;
    assert_int_equal(cx_aead_seal(key, nonce, NULL, 0, buf, 32, buf + 5, &e), -1);
    assert_int_equal(e.code, ERR_FAILURE);
    err_clear(&e);
    assert_int_equal(cx_aead_seal(key, nonce, NULL, 0, buf + 5, 32, buf, &e), -1);
    err_clear(&e);
    assert_int_equal(cx_aead_seal(key, nonce, NULL, 0, buf, 32, buf, &e), 0);
    assert_int_equal(cx_aead_open(key, nonce, NULL, 0, buf, 32 + CX_TAG_LEN, buf + 1, &e), -1);
    assert_int_equal(e.code, ERR_FAILURE);
    err_clear(&e);
    /* Adjacent is not overlapping. */
    assert_int_equal(cx_aead_open(key, nonce, NULL, 0, buf, 32 + CX_TAG_LEN, buf + 48, &e), 0);
}

/* Opening must fail with ERR_DAMAGE and leave out all zeros. */
static void assert_open_fails(const uint8_t *key, const uint8_t *nonce, const void *aad,
                              size_t aad_len, const uint8_t *in, size_t len)
{
    uint8_t out[256];
    assert_true(len - CX_TAG_LEN <= sizeof(out));
    memset(out, 0xa5, sizeof(out));
    struct err e = ERR_INIT;
    assert_int_equal(cx_aead_open(key, nonce, aad, aad_len, in, len, out, &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    assert_string_equal(e.msg, "authentication failed");
    assert_all_zero(out, len - CX_TAG_LEN);
}

static void test_gcm_rejects_tampering(void **state)
{
    (void)state;
    enum { LEN = 100 };
    uint8_t key[CX_KEY_LEN], nonce[CX_NONCE_LEN], pt[LEN], sealed[LEN + CX_TAG_LEN];
    cx_random(key, sizeof(key));
    cx_random(nonce, sizeof(nonce));
    cx_random(pt, sizeof(pt));
    struct err e = ERR_INIT;
    assert_int_equal(cx_aead_seal(key, nonce, "aad", 3, pt, LEN, sealed, &e), 0);

    /* Any single flipped bit, in the ciphertext or in the tag. */
    for (size_t i = 0; i < sizeof(sealed); i++) {
        sealed[i] ^= (uint8_t)(1u << (i % 8));
        assert_open_fails(key, nonce, "aad", 3, sealed, sizeof(sealed));
        sealed[i] ^= (uint8_t)(1u << (i % 8));
    }

    uint8_t other[CX_KEY_LEN];
    memcpy(other, key, sizeof(other));
    other[31] ^= 1;
    assert_open_fails(other, nonce, "aad", 3, sealed, sizeof(sealed)); /* wrong key */
    assert_open_fails(key, nonce, "aaD", 3, sealed, sizeof(sealed));   /* wrong aad */
    assert_open_fails(key, nonce, "aa", 2, sealed, sizeof(sealed));    /* shorter aad */
    assert_open_fails(key, nonce, NULL, 0, sealed, sizeof(sealed));    /* missing aad */
    memcpy(other, nonce, CX_NONCE_LEN);
    other[0] ^= 1;
    assert_open_fails(key, other, "aad", 3, sealed, sizeof(sealed)); /* wrong nonce */
    /* Truncated: one byte short, or only the tag left. */
    assert_open_fails(key, nonce, "aad", 3, sealed, sizeof(sealed) - 1);
    assert_open_fails(key, nonce, "aad", 3, sealed + LEN, CX_TAG_LEN);

    /* Still opens when untouched. */
    uint8_t out[LEN];
    assert_int_equal(cx_aead_open(key, nonce, "aad", 3, sealed, sizeof(sealed), out, &e), 0);
    assert_memory_equal(out, pt, LEN);

    /* Shorter than a tag: damage too. */
    err_clear(&e);
    assert_int_equal(cx_aead_open(key, nonce, NULL, 0, sealed, CX_TAG_LEN - 1, out, &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
}

/* ---- Argon2id -------------------------------------------------------------------------- */

/* Expected value from the reference implementation's CLI (Debian package argon2):
 *   echo -n password | argon2 somesalt16bytes! -id -t 2 -m 16 -p 1 -l 32 -r
 * -m 16 is 2^16 KiB = 64 MiB; libsodium always runs one lane (-p 1). */
#define ARGON2_WANT "318a876a9a987113862b3989fbdecec95ab519584f878db77481545007d59201"

static void test_argon2id_known_output(void **state)
{
    (void)state;
    static const uint8_t salt[CX_ARGON2_SALT_LEN] = "somesalt16bytes!";
    uint8_t out[32], again[32];
    struct err e = ERR_INIT;
    assert_int_equal(cx_argon2id("password", 8, salt, 2, (size_t)64 << 20, out, 32, &e), 0);
    assert_hex_equal(out, sizeof(out), ARGON2_WANT);
    assert_int_equal(cx_argon2id("password", 8, salt, 2, (size_t)64 << 20, again, 32, &e), 0);
    assert_memory_equal(out, again, 32);

    /* Each input matters. */
    static const uint8_t salt2[CX_ARGON2_SALT_LEN] = "somesalt16bytes?";
    assert_int_equal(cx_argon2id("password", 8, salt2, 2, (size_t)64 << 20, again, 32, &e), 0);
    assert_memory_not_equal(out, again, 32);
    assert_int_equal(cx_argon2id("passwore", 8, salt, 2, (size_t)64 << 20, again, 32, &e), 0);
    assert_memory_not_equal(out, again, 32);
    assert_int_equal(cx_argon2id("password", 8, salt, 3, (size_t)64 << 20, again, 32, &e), 0);
    assert_memory_not_equal(out, again, 32);
    assert_false(err_is_set(&e));
}

static void test_argon2id_rejects_bad_parameters(void **state)
{
    (void)state;
    static const uint8_t salt[CX_ARGON2_SALT_LEN] = {0};
    uint8_t out[32];
    struct err e = ERR_INIT;
    assert_int_equal(cx_argon2id("pw", 2, salt, 1, 1 << 20, out, 15, &e), -1); /* too short */
    assert_true(err_is_set(&e));
    err_clear(&e);
    assert_int_equal(cx_argon2id("pw", 2, salt, 0, 1 << 20, out, 32, &e), -1); /* no pass */
    assert_true(err_is_set(&e));
    err_clear(&e);
    assert_int_equal(cx_argon2id("pw", 2, salt, 1, 1024, out, 32, &e), -1); /* under 8 KiB */
    assert_true(err_is_set(&e));
    err_clear(&e);
    assert_int_equal(cx_argon2id(NULL, 0, salt, 1, 8192, out, 32, &e), 0); /* empty password */
}

/* cx_argon2id_p1 (our Argon2id) gives what libsodium's crypto_pwhash gives, which every key
 * slot written before it was made with: random passwords (empty to 100 bytes), salts, 1 to 4
 * passes, 8 KiB to 4 MiB of memory (sizes that are not a multiple of 4 KiB too: the memory
 * used is rounded down to 4 blocks), outputs of 16 to 128 bytes (H' past one BLAKE2b output).
 * The generator is seeded: the same cases every run. */
static void test_argon2id_same_as_libsodium(void **state)
{
    (void)state;
    assert_true(sodium_init() >= 0);
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int it = 0; it < 160; it++) {
        uint8_t pw[100], salt[16], want[128], got[128];
        x = x * 6364136223846793005u + 1442695040888963407u;
        size_t pl = (size_t)(x >> 33) % (sizeof(pw) + 1);
        for (size_t i = 0; i < sizeof(pw); i++)
            pw[i] = (uint8_t)(x >> (8 * (i % 8))) ^ (uint8_t)i;
        for (size_t i = 0; i < sizeof(salt); i++)
            salt[i] = (uint8_t)(x >> (8 * (i % 8) + 3)) ^ (uint8_t)(7 * i);
        uint32_t passes = 1 + (uint32_t)(x >> 40) % 4;
        uint32_t m =
            it % 16 == 0 ? 1024 + (uint32_t)(x >> 20) % 3072 : 8 + (uint32_t)(x >> 13) % 700;
        size_t ol = 16 + (size_t)(x >> 50) % 113;
        assert_int_equal(crypto_pwhash_argon2id(want, ol, (const char *)pw, pl, salt, passes,
                                                (size_t)m * 1024,
                                                crypto_pwhash_argon2id_ALG_ARGON2ID13),
                         0);
        assert_int_equal(cx_argon2id_p1(pw, pl, salt, sizeof(salt), passes, m, got, ol), 0);
        assert_memory_equal(got, want, ol);
    }
    /* out of range: refused, nothing derived */
    uint8_t out[32], salt[16] = {0};
    assert_int_equal(cx_argon2id_p1(salt, 1, salt, 16, 0, 64, out, 32), -1);
    assert_int_equal(cx_argon2id_p1(salt, 1, salt, 16, 1, 7, out, 32), -1);
    assert_int_equal(cx_argon2id_p1(salt, 1, salt, 16, 1, 64, out, 3), -1);
}

/* ---- Helpers --------------------------------------------------------------------------- */

static void test_random(void **state)
{
    (void)state;
    uint8_t a[32] = {0}, b[32] = {0}, zero[32] = {0};
    cx_random(a, sizeof(a));
    cx_random(b, sizeof(b));
    assert_memory_not_equal(a, b, sizeof(a));
    assert_memory_not_equal(a, zero, sizeof(a));
    cx_random(NULL, 0);
}

static void test_memcmp(void **state)
{
    (void)state;
    uint8_t a[64], b[64];
    cx_random(a, sizeof(a));
    memcpy(b, a, sizeof(b));
    assert_int_equal(cx_memcmp(a, b, sizeof(a)), 0);
    assert_int_equal(cx_memcmp(a, b, 0), 0);
    b[0] ^= 0x80;
    assert_int_not_equal(cx_memcmp(a, b, sizeof(a)), 0);
    b[0] ^= 0x80;
    b[63] ^= 1;
    assert_int_not_equal(cx_memcmp(a, b, sizeof(a)), 0);
    assert_int_equal(cx_memcmp(a, b, 63), 0);
}

static void test_wipe(void **state)
{
    (void)state;
    uint8_t buf[33];
    memset(buf, 0xff, sizeof(buf));
    cx_wipe(buf, sizeof(buf));
    assert_all_zero(buf, sizeof(buf));
    cx_wipe(NULL, 0);
}

static void test_hex_round_trip(void **state)
{
    (void)state;
    uint8_t in[256], back[256];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)i;
    char hex[2 * sizeof(in) + 1];
    cx_hex(in, sizeof(in), hex);
    assert_int_equal(strlen(hex), 2 * sizeof(in));
    assert_memory_equal(hex, "000102", 6);
    assert_string_equal(hex + 2 * 250, "fafbfcfdfeff");
    assert_int_equal(cx_unhex(hex, back, sizeof(back)), 0);
    assert_memory_equal(in, back, sizeof(in));

    uint8_t two[2];
    assert_int_equal(cx_unhex("aBcD", two, 2), 0); /* either case parses */
    assert_int_equal(two[0], 0xab);
    assert_int_equal(two[1], 0xcd);

    cx_hex(in, 0, hex);
    assert_string_equal(hex, "");
    assert_int_equal(cx_unhex("", two, 0), 0);
}

static void test_unhex_rejects_bad_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",        /* too short */
        "0a0",     /* too short, odd */
        "0a0b0",   /* too long by one digit */
        "0a0b0c",  /* too long */
        "0g0b",    /* not a digit */
        "0a 0",    /* space */
        " 0a0",    /* leading space */
        "0x0a",    /* prefix */
        "0a:b",    /* character between '9' and 'A' */
        "0a@b",    /* character before 'A' */
        "0a`b",    /* character before 'a' */
        "-1ab",    /* sign */
        "\377abc", /* high byte (octal: a hex escape would take the letters in) */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t out[2] = {0x11, 0x22};
        assert_int_equal(cx_unhex(bad[i], out, 2), -1);
        assert_all_zero(out, sizeof(out)); /* nothing half-parsed is left behind */
    }
    uint8_t out[2];
    assert_int_equal(cx_unhex(NULL, out, 2), -1);
    assert_int_equal(cx_unhex("00", out, 0), -1); /* len 0 wants the empty string */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_idempotent),
        cmocka_unit_test(test_sha256_one_shot),
        cmocka_unit_test(test_sha256_streaming),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_hmac_key_matches_one_shot),
        cmocka_unit_test(test_hmac_key_concurrent),
        cmocka_unit_test(test_hkdf_rfc5869),
        cmocka_unit_test(test_hkdf_limits),
        cmocka_unit_test(test_gcm_vectors),
        cmocka_unit_test(test_gcm_in_place),
        cmocka_unit_test(test_gcm_rejects_tampering),
        cmocka_unit_test(test_gcm_rejects_partial_overlap),
        cmocka_unit_test(test_argon2id_known_output),
        cmocka_unit_test(test_argon2id_same_as_libsodium),
        cmocka_unit_test(test_argon2id_rejects_bad_parameters),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_memcmp),
        cmocka_unit_test(test_wipe),
        cmocka_unit_test(test_hex_round_trip),
        cmocka_unit_test(test_unhex_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}

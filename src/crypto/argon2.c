/* Argon2id, version 1.3, one lane (RFC 9106), as libsodium's crypto_pwhash computes it for
 * ALG_ARGON2ID13: t passes over m KiB (m = mem_limit / 1024), parallelism 1, no secret, no
 * associated data. Written from the RFC; BLAKE2b is libsodium's.
 *
 * Why not libsodium's own: it maps its memory with 4 KiB pages, and on the test machine (a
 * 2-core virtual machine whose page faults and TLB misses are dear) a derivation at the
 * default parameters (3 passes over 64 MiB) took 165-192 ms of one core, 63-65 ms in the same
 * code with the memory in 2 MiB pages. Every command that opens a repository derives a key, so
 * this was most of `list` (0.21 s) and a third of a no-change backup. Here the memory is mapped
 * with MADV_HUGEPAGE (the kernel falls back to small pages when it has no huge ones: slower,
 * not wrong) and wiped before it is unmapped. Only the AVX-512 version beats libsodium's (see
 * fill_memory); cx_argon2id uses libsodium on other processors.
 *
 * Any difference from libsodium's result would lock every user out of their repository. The
 * unit tests check it against libsodium's (test_argon2id_same_as_libsodium: seeded random
 * passwords, salts, passes, memory sizes and output lengths) and against the reference
 * implementation's output (test_argon2id_known_output). */
#include "caris/crypto.h"

#include <errno.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "caris/core.h"

#define A2_BLOCK 1024u
#define A2_WORDS 128u
#define A2_SYNC 4u    /* slices per pass */
#define A2_ADDRS 128u /* pseudo-random values per address block */
#define A2_TYPE_ID 2u /* Argon2id */
#define A2_VERSION 0x13u
#define A2_HUGE (2u << 20)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

struct a2_block {
    uint64_t v[A2_WORDS];
};

typedef uint64_t u64x4 __attribute__((vector_size(32)));

/* Inlined into each of fill_memory's versions, so compiled for its instruction set. */
#define A2_INLINE static inline __attribute__((always_inline))

/* The vectors never cross a function boundary that is not inlined: no ABI to keep (GCC still
 * notes it under this pragma: meson.build passes -Wno-psabi too). */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#if defined(__clang__)
#define SHUF(x, i, j, k, l) __builtin_shufflevector((x), (x), i, j, k, l)
#else
#define SHUF(x, i, j, k, l) __builtin_shuffle((x), (u64x4){i, j, k, l})
#endif

A2_INLINE u64x4 blamka(u64x4 x, u64x4 y)
{
    const u64x4 lo = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    return x + y + 2 * ((x & lo) * (y & lo));
}

A2_INLINE u64x4 rotr(u64x4 x, int n)
{
    return (x >> n) | (x << (64 - n));
}

/* The G function of the RFC on four independent columns at once: lane k of a, b, c, d is
 * (v_k, v_{4+k}, v_{8+k}, v_{12+k}) of the round's 4x4 matrix of words. */
A2_INLINE void gb4(u64x4 *a, u64x4 *b, u64x4 *c, u64x4 *d)
{
    *a = blamka(*a, *b);
    *d = rotr(*d ^ *a, 32);
    *c = blamka(*c, *d);
    *b = rotr(*b ^ *c, 24);
    *a = blamka(*a, *b);
    *d = rotr(*d ^ *a, 16);
    *c = blamka(*c, *d);
    *b = rotr(*b ^ *c, 63);
}

/* The permutation P on v0..v15 held as rows a = v0..v3, b = v4..v7, c = v8..v11, d = v12..v15:
 * G on the columns, then on the diagonals (the rows rotated so that they line up). */
A2_INLINE void perm(u64x4 *a, u64x4 *b, u64x4 *c, u64x4 *d)
{
    gb4(a, b, c, d);
    *b = SHUF(*b, 1, 2, 3, 0);
    *c = SHUF(*c, 2, 3, 0, 1);
    *d = SHUF(*d, 3, 0, 1, 2);
    gb4(a, b, c, d);
    *b = SHUF(*b, 3, 0, 1, 2);
    *c = SHUF(*c, 2, 3, 0, 1);
    *d = SHUF(*d, 1, 2, 3, 0);
}

A2_INLINE u64x4 ld2(const uint64_t *p, const uint64_t *q)
{
    return (u64x4){p[0], p[1], q[0], q[1]};
}

A2_INLINE void st2(u64x4 x, uint64_t *p, uint64_t *q)
{
    p[0] = x[0];
    p[1] = x[1];
    q[0] = x[2];
    q[1] = x[3];
}

/* next = P_columns(P_rows(R)) ^ R, R = prev ^ ref; with xor (passes after the first, version
 * 1.3) the old content of next is xored in as well. r and z are scratch blocks (the caller
 * wipes them once at the end: what they hold is in the memory it wipes as well). */
A2_INLINE void fill_block(const struct a2_block *prev, const struct a2_block *ref,
                          struct a2_block *next, int with_xor, struct a2_block *r,
                          struct a2_block *z)
{
    for (unsigned i = 0; i < A2_WORDS; i++)
        z->v[i] = r->v[i] = prev->v[i] ^ ref->v[i];
    if (with_xor)
        for (unsigned i = 0; i < A2_WORDS; i++)
            r->v[i] ^= next->v[i];
    /* rows: words 16i .. 16i+15 */
    for (unsigned i = 0; i < 8; i++) {
        uint64_t *w = &z->v[16 * i];
        u64x4 a, b, c, d;
        memcpy(&a, w, 32);
        memcpy(&b, w + 4, 32);
        memcpy(&c, w + 8, 32);
        memcpy(&d, w + 12, 32);
        perm(&a, &b, &c, &d);
        memcpy(w, &a, 32);
        memcpy(w + 4, &b, 32);
        memcpy(w + 8, &c, 32);
        memcpy(w + 12, &d, 32);
    }
    /* columns of 16-byte registers: words (2i, 2i+1), (2i+16, 2i+17), ..., (2i+112, 2i+113) */
    for (unsigned i = 0; i < 8; i++) {
        uint64_t *w = &z->v[2 * i];
        u64x4 a = ld2(w, w + 16), b = ld2(w + 32, w + 48), c = ld2(w + 64, w + 80),
              d = ld2(w + 96, w + 112);
        perm(&a, &b, &c, &d);
        st2(a, w, w + 16);
        st2(b, w + 32, w + 48);
        st2(c, w + 64, w + 80);
        st2(d, w + 96, w + 112);
    }
    for (unsigned i = 0; i < A2_WORDS; i++)
        next->v[i] = z->v[i] ^ r->v[i];
}

static void le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* H' of the RFC: a hash of any length out_len from BLAKE2b. */
static void hprime(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len)
{
    crypto_generichash_blake2b_state st;
    uint8_t len[4], v[64];
    le32(len, (uint32_t)out_len);
    size_t first = out_len <= 64 ? out_len : 64;
    crypto_generichash_blake2b_init(&st, NULL, 0, first);
    crypto_generichash_blake2b_update(&st, len, 4);
    crypto_generichash_blake2b_update(&st, in, in_len);
    if (out_len <= 64) {
        crypto_generichash_blake2b_final(&st, out, out_len);
        sodium_memzero(&st, sizeof(st));
        return;
    }
    crypto_generichash_blake2b_final(&st, v, 64);
    memcpy(out, v, 32);
    out += 32;
    size_t left = out_len - 32;
    while (left > 64) {
        crypto_generichash_blake2b(v, 64, v, 64, NULL, 0);
        memcpy(out, v, 32);
        out += 32;
        left -= 32;
    }
    crypto_generichash_blake2b(out, left, v, 64, NULL, 0);
    sodium_memzero(v, sizeof(v));
    sodium_memzero(&st, sizeof(st));
}

static void block_from_bytes(struct a2_block *b, const uint8_t *p)
{
    for (unsigned i = 0; i < A2_WORDS; i++) {
        uint64_t w = 0;
        for (unsigned k = 0; k < 8; k++)
            w |= (uint64_t)p[8 * i + k] << (8 * k);
        b->v[i] = w;
    }
}

static void block_to_bytes(uint8_t *p, const struct a2_block *b)
{
    for (unsigned i = 0; i < A2_WORDS; i++)
        for (unsigned k = 0; k < 8; k++)
            p[8 * i + k] = (uint8_t)(b->v[i] >> (8 * k));
}

/* The reference block's index for the block at index i of the segment (one lane: always the
 * same lane), from the low 32 bits of the pseudo-random value. */
static uint32_t ref_index(uint32_t pass, uint32_t slice, uint32_t i, uint32_t seg, uint32_t q,
                          uint64_t pr)
{
    uint32_t area;
    if (pass == 0)
        area = slice * seg + i - 1; /* slice 0: i - 1, all before but the previous */
    else
        area = q - seg + i - 1;
    uint64_t x = pr & 0xffffffffu;
    x = (x * x) >> 32;
    uint64_t rel = area - 1 - (((uint64_t)area * x) >> 32);
    uint32_t start = pass == 0 || slice == A2_SYNC - 1 ? 0 : (slice + 1) * seg;
    return (uint32_t)((start + rel) % q);
}

struct a2_scratch {
    struct a2_block zero, input, addr, r, z;
};

/* The passes over the q blocks of B (one lane, segments of seg blocks), whose first two blocks
 * are made. Compiled twice (below): for AVX-512 (on 256-bit registers: a rotation is one
 * instruction) and for the baseline; cx_argon2id_p1 calls the one the processor runs. 3 passes
 * over 64 MiB on the test machine: 87-91 ms with AVX-512, 141-157 ms built for AVX2 and 274-277
 * ms for the baseline, against libsodium's 165-192 ms with small pages (63-65 ms with huge
 * ones), so cx_argon2id uses this only where AVX-512 is (cx_argon2id_p1_fast). Chosen at run
 * time by a plain test, not by the compiler's target_clones: their resolver runs while the
 * program is relocated, before a sanitizer's runtime is up, and crashed the ThreadSanitizer
 * build at its start. */
A2_INLINE void fill_memory(struct a2_block *B, uint32_t q, uint32_t seg, uint32_t passes,
                           struct a2_scratch *sc)
{
    for (uint32_t pass = 0; pass < passes; pass++) {
        for (uint32_t slice = 0; slice < A2_SYNC; slice++) {
            int indep = pass == 0 && slice < 2; /* Argon2i's addressing, then Argon2d's */
            uint32_t first = pass == 0 && slice == 0 ? 2 : 0;
            if (indep) {
                memset(&sc->input, 0, sizeof(sc->input));
                sc->input.v[0] = pass;
                sc->input.v[1] = 0; /* lane */
                sc->input.v[2] = slice;
                sc->input.v[3] = q;
                sc->input.v[4] = passes;
                sc->input.v[5] = A2_TYPE_ID;
                if (first) { /* the first two blocks are made: addresses from block 2 */
                    sc->input.v[6]++;
                    fill_block(&sc->zero, &sc->input, &sc->addr, 0, &sc->r, &sc->z);
                    fill_block(&sc->zero, &sc->addr, &sc->addr, 0, &sc->r, &sc->z);
                }
            }
            for (uint32_t i = first; i < seg; i++) {
                uint32_t cur = slice * seg + i, prev = cur == 0 ? q - 1 : cur - 1;
                uint64_t pr;
                if (indep) {
                    if (i % A2_ADDRS == 0) {
                        sc->input.v[6]++;
                        fill_block(&sc->zero, &sc->input, &sc->addr, 0, &sc->r, &sc->z);
                        fill_block(&sc->zero, &sc->addr, &sc->addr, 0, &sc->r, &sc->z);
                    }
                    pr = sc->addr.v[i % A2_ADDRS];
                } else {
                    pr = B[prev].v[0];
                }
                uint32_t ref = ref_index(pass, slice, i, seg, q, pr);
                fill_block(&B[prev], &B[ref], &B[cur], pass != 0, &sc->r, &sc->z);
            }
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("arch=x86-64-v4"))) static void
fill_memory_v4(struct a2_block *B, uint32_t q, uint32_t seg, uint32_t passes, struct a2_scratch *sc)
{
    fill_memory(B, q, seg, passes, sc);
}
#endif

static void fill_memory_base(struct a2_block *B, uint32_t q, uint32_t seg, uint32_t passes,
                             struct a2_scratch *sc)
{
    fill_memory(B, q, seg, passes, sc);
}

/* The instruction sets of x86-64-v4, one by one (older compilers know no level names); false
 * on other processors (they have the baseline version, and libsodium's in cx_argon2id). */
static bool cpu_v4(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define A2_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define A2_SANITIZED 1
#endif

bool cx_argon2id_p1_fast(void)
{
#ifdef A2_SANITIZED
    /* Instrumented, every access of its 64 MiB is checked: a sanitizer build's `list` took
     * 0.44-0.55 s with it against 0.31-0.38 s with libsodium's (not instrumented). Those
     * builds use libsodium; their unit tests still run this code (test_crypto). */
    return false;
#endif
    return cpu_v4();
}

int cx_argon2id_p1(const uint8_t *password, size_t password_len, const uint8_t *salt,
                   size_t salt_len, uint32_t passes, uint32_t m_kib, uint8_t *out, size_t out_len)
{
    if (passes < 1 || m_kib < 8 || out_len < 4 || out_len > UINT32_MAX ||
        password_len > UINT32_MAX || salt_len > UINT32_MAX) {
        errno = EINVAL;
        return -1;
    }
    uint32_t q = m_kib / 4 * 4, seg = q / A2_SYNC;
    /* From 1 MiB on, the blocks start at a 2 MiB boundary and the advice covers whole 2 MiB
     * pages: 1 MiB (the test suite's) is then one huge page, not 256 faults (below that, zeroing
     * a huge page would cost more than the faults). And the memory is made present at once:
     * where the kernel has no huge pages for it, one system call instead of a fault per page
     * (64 MiB are 16,384). */
    size_t bytes = (size_t)q * A2_BLOCK;
    size_t huge_len = bytes >= A2_HUGE / 2 ? (bytes + A2_HUGE - 1) / A2_HUGE * A2_HUGE : 0;
    size_t maplen = huge_len ? huge_len + A2_HUGE : bytes;
    uint8_t *map = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return -1; /* errno: ENOMEM */
    struct a2_block *B = (struct a2_block *)map;
    if (huge_len) {
        B = (struct a2_block *)(map + ((A2_HUGE - (uintptr_t)map % A2_HUGE) % A2_HUGE));
        (void)madvise(B, huge_len, MADV_HUGEPAGE);
    }
    (void)madvise(B, bytes, MADV_POPULATE_WRITE); /* Linux 5.14; else the pages fault in */
    (void)madvise(map, maplen, MADV_DONTDUMP);

    /* H0 */
    uint8_t h0[64 + 8], tmp[A2_BLOCK], w[4];
    crypto_generichash_blake2b_state st;
    crypto_generichash_blake2b_init(&st, NULL, 0, 64);
    const uint32_t head[6] = {1, (uint32_t)out_len, m_kib, passes, A2_VERSION, A2_TYPE_ID};
    for (unsigned i = 0; i < 6; i++) {
        le32(w, head[i]);
        crypto_generichash_blake2b_update(&st, w, 4);
    }
    le32(w, (uint32_t)password_len);
    crypto_generichash_blake2b_update(&st, w, 4);
    crypto_generichash_blake2b_update(&st, password, password_len);
    le32(w, (uint32_t)salt_len);
    crypto_generichash_blake2b_update(&st, w, 4);
    crypto_generichash_blake2b_update(&st, salt, salt_len);
    le32(w, 0); /* no secret, no associated data */
    crypto_generichash_blake2b_update(&st, w, 4);
    crypto_generichash_blake2b_update(&st, w, 4);
    crypto_generichash_blake2b_final(&st, h0, 64);
    for (uint32_t j = 0; j < 2; j++) {
        le32(h0 + 64, j); /* column */
        le32(h0 + 68, 0); /* lane */
        hprime(tmp, A2_BLOCK, h0, sizeof(h0));
        block_from_bytes(&B[j], tmp);
    }

    struct a2_scratch *sc = xcalloc(1, sizeof(*sc));
#if defined(__x86_64__)
    if (cpu_v4())
        fill_memory_v4(B, q, seg, passes, sc);
    else
#endif
        fill_memory_base(B, q, seg, passes, sc);
    block_to_bytes(tmp, &B[q - 1]);
    hprime(out, out_len, tmp, A2_BLOCK);

    sodium_memzero(tmp, sizeof(tmp));
    sodium_memzero(h0, sizeof(h0));
    sodium_memzero(&st, sizeof(st));
    sodium_memzero(sc, sizeof(*sc));
    free(sc);
    sodium_memzero(B, bytes);
    munmap(map, maplen);
    return 0;
}

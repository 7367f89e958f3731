/* Content-defined chunking: FastCDC (Xia et al., USENIX ATC 2016; IEEE TPDS 2020) with
 * normalized chunking level 2. The format-relevant details (gear table derivation, masks, phase
 * boundaries) are specified in docs/REPOSITORY-FORMAT.md ("Chunking"); changing any of them changes
 * every chunk boundary and therefore breaks deduplication against existing repositories. */
#include "caris/chunker.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* Chosen by measurement with bench/chunker_params.c; figures in docs/REPOSITORY-FORMAT.md
 * ("Chunking"). */
const struct chunker_params CHUNKER_DEFAULT_FILES = {
    .min_size = 512 * 1024,
    .avg_size = 1024 * 1024,
    .max_size = 4 * 1024 * 1024,
};
/* Dumps: 4K / 16K / 64K. A PostgreSQL update moves a row to the end of its table, so every
 * updated row rewrites the chunk it leaves: scattered updates cost one mean chunk each
 * (docs/REPOSITORY-FORMAT.md, "Chunking"). Measured with pgbench scale 50 (513 MB dump) and
 * `pgbench -t 1000`: 32K chunks stored 13.9% of the dump again; 16K halves that, under the
 * 10% goal. The index costs ~56 bytes per 18 KiB chunk: ~300 MiB of RAM for 100 GB of
 * unique dump data. */
const struct chunker_params CHUNKER_DEFAULT_DUMPS = {
    .min_size = 4 * 1024,
    .avg_size = 16 * 1024,
    .max_size = 64 * 1024,
};

enum {
    CHUNKER_MIN_MIN = 64,               /* the gear hash window: see chunker_cut */
    CHUNKER_MAX_MAX = 64 * 1024 * 1024, /* bounds buffers callers must keep */
    CHUNKER_NC_LEVEL = 2,               /* normalization: mask bits = log2(avg) +- 2 */
    CHUNKER_MASK_SPAN = 48,             /* mask bits are spread over bits 63..16 */
    CHUNKER_GEAR_BLOCKS = 256 * 8 / 32, /* SHA-256 outputs needed for the gear table */
};

/* Domain separation: the seed may one day key other derivations too. */
static const char GEAR_TAG[] = "caris-chunker-gear-v1";

static int derive_gear(uint64_t gear[256], const uint8_t seed[32])
{
    uint8_t in[sizeof(GEAR_TAG) - 1 + 32 + 4];
    uint8_t out[32];
    int rc = 0;

    memcpy(in, GEAR_TAG, sizeof(GEAR_TAG) - 1);
    memcpy(in + sizeof(GEAR_TAG) - 1, seed, 32);
    uint8_t *ctr = in + sizeof(in) - 4;
    for (uint32_t k = 0; k < CHUNKER_GEAR_BLOCKS; k++) {
        ctr[0] = (uint8_t)k; /* u32 little-endian */
        ctr[1] = (uint8_t)(k >> 8);
        ctr[2] = (uint8_t)(k >> 16);
        ctr[3] = (uint8_t)(k >> 24);
        if (EVP_Digest(in, sizeof(in), out, NULL, EVP_sha256(), NULL) != 1) {
            rc = -1;
            break;
        }
        /* Little-endian decoding so the table is the same on every host. */
        for (int j = 0; j < 4; j++) {
            uint64_t v = 0;
            for (int b = 7; b >= 0; b--)
                v = (v << 8) | out[8 * j + b];
            gear[4 * k + (uint32_t)j] = v;
        }
    }
    /* The table is as secret as the seed; do not leave its inputs on the stack. */
    OPENSSL_cleanse(in, sizeof(in));
    OPENSSL_cleanse(out, sizeof(out));
    return rc;
}

/* Bit positions of an n-bit mask (n <= CHUNKER_MASK_SPAN), highest first: evenly spread over
 * the top 48 bits, as the FastCDC paper recommends. Bit k of the gear hash depends on the last
 * k + 1 bytes only: the low n bits would make a cut depend on n bytes (a 22-byte window for
 * avg 1 MiB), while bit 63, always included, makes it depend on the whole 64-byte window. */
static int mask_bit(int n, int k)
{
    return 63 - (k * CHUNKER_MASK_SPAN) / n;
}

int chunker_init(struct chunker *c, const struct chunker_params *p, const uint8_t seed[32])
{
    if (!c || !p || !seed)
        return -1;
    memset(c, 0, sizeof(*c));
    uint32_t avg = p->avg_size;
    if (avg == 0 || (avg & (avg - 1)) != 0)
        return -1;
    if (p->min_size < CHUNKER_MIN_MIN || p->min_size > avg || avg > p->max_size ||
        p->max_size > CHUNKER_MAX_MAX)
        return -1;

    int bits = __builtin_ctz(avg);
    int n_s = bits + CHUNKER_NC_LEVEL; /* <= 28 since avg <= 64 MiB */
    int n_l = bits - CHUNKER_NC_LEVEL; /* >= 4 since avg >= min >= 64 */
    for (int k = 0; k < n_s; k++)
        c->mask_s |= UINT64_C(1) << mask_bit(n_s, k);
    /* mask_l takes an evenly spread subset of mask_s's bits, so every position that passes the
     * hard test also passes the easy one: a boundary that moves from before avg_size to after
     * it (because an edit lengthened the chunk) stays a candidate. */
    for (int k = 0; k < n_l; k++)
        c->mask_l |= UINT64_C(1) << mask_bit(n_s, (k * n_s) / n_l);

    if (derive_gear(c->gear, seed) != 0) {
        OPENSSL_cleanse(c, sizeof(*c));
        return -1;
    }
    c->p = *p;
    return 0;
}

/* Hashes data[i..end) and returns the chunk length i + 1 at the first byte i where the hash has
 * no bit of mask set, or 0 when there is none (0 is never a valid length: lengths are >= 64).
 * *hp carries the hash in and out.
 *
 * Speed: written one byte at a time, h' = 2h + g is a chain of one instruction per byte with
 * gcc (lea) but two with clang (add, add), which halves clang's speed. Four bytes per step,
 * with the four hashes computed from h and from partial sums of the gear values that do not
 * depend on h, keeps the chain under one instruction per byte with either compiler. The four
 * tests stay separate branches: they are almost never taken, so they predict perfectly. */
static inline size_t scan(const uint64_t *gear, const uint8_t *data, size_t i, size_t end,
                          uint64_t *hp, uint64_t mask)
{
    uint64_t h = *hp;
    for (; i + 4 <= end; i += 4) {
        uint64_t g0 = gear[data[i]];
        uint64_t g1 = gear[data[i + 1]];
        uint64_t g2 = gear[data[i + 2]];
        uint64_t g3 = gear[data[i + 3]];
        uint64_t t2 = (g0 << 1) + g1;
        uint64_t t4 = (t2 << 2) + (g2 << 1) + g3;
        uint64_t h1 = (h << 1) + g0;
        uint64_t h2 = (h << 2) + t2;
        uint64_t h3 = (h2 << 1) + g2;
        uint64_t h4 = (h << 4) + t4;
        if (__builtin_expect((h1 & mask) == 0, 0))
            return i + 1;
        if (__builtin_expect((h2 & mask) == 0, 0))
            return i + 2;
        if (__builtin_expect((h3 & mask) == 0, 0))
            return i + 3;
        if (__builtin_expect((h4 & mask) == 0, 0))
            return i + 4;
        h = h4;
    }
    for (; i < end; i++) {
        h = (h << 1) + gear[data[i]];
        if ((h & mask) == 0)
            return i + 1;
    }
    *hp = h;
    return 0;
}

size_t chunker_cut(const struct chunker *c, const uint8_t *data, size_t len)
{
    size_t min = c->p.min_size;
    if (len <= min)
        return len;
    size_t end = len < c->p.max_size ? len : c->p.max_size;
    size_t avg = c->p.avg_size;

    /* Invariant: the hash tested at byte i is exactly sum(gear[data[i - j]] << j, j = 0..63)
     * mod 2^64, a function of the 64 bytes ending at i and never of where the chunk began, so an
     * edit that moves the previous cut leaves the later candidates in place. Hence hashing
     * starts 63 bytes before the first candidate (min_size >= 64 guarantees those bytes exist);
     * the rest of the first min_size bytes is skipped (FastCDC's cut-point skipping). Because
     * the scan goes forward and stops at the first candidate, a cut shorter than len does not
     * depend on the bytes after it: the result is the same however the stream is read. */
    uint64_t h = 0;
    size_t i = min - 64;
    for (; i < min - 1; i++)
        h = (h << 1) + c->gear[data[i]];

    /* Chunk lengths in [min, avg) must pass mask_s, lengths in [avg, max) mask_l; a chunk of
     * max_size bytes is cut unconditionally. Byte i ends a chunk of length i + 1. */
    size_t hard_end = avg - 1 < end ? avg - 1 : end;
    size_t r = scan(c->gear, data, i, hard_end, &h, c->mask_s);
    if (r)
        return r;
    r = scan(c->gear, data, hard_end, end, &h, c->mask_l);
    if (r)
        return r;
    return end;
}

void chunker_wipe(struct chunker *c)
{
    if (c)
        OPENSSL_cleanse(c, sizeof(*c));
}

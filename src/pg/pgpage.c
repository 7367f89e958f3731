/* Page checksums and relation file names (caris/pgpage.h). The checksum is PostgreSQL's
 * (src/include/storage/checksum_impl.h), written from its description: the page is read as
 * 32 interleaved lanes of 32-bit words; each lane starts from its own base offset and mixes
 * every word with one FNV-1a-like step (x = sum ^ word; sum = x * FNV_PRIME ^ (x >> 17)),
 * then two more steps with zero; the lanes are folded with XOR, the block number XORed in,
 * and the result reduced to 1..65535. */
#include <stdlib.h>
#include <string.h>

#include "caris/pgpage.h"

#define LANES 32
#define FNV_PRIME 16777619u

/* The lanes' starting values: fixed constants of PostgreSQL's on-disk format. */
static const uint32_t BASE_OFFSETS[LANES] = {
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756};

/* page header: pd_lsn (8 bytes: xlogid, xrecoff, each a native uint32), pd_checksum
 * (uint16 at offset 8), pd_flags, pd_lower, pd_upper (uint16 at offset 14) */
#define PD_CHECKSUM_OFF 8
#define PD_UPPER_OFF 14

static inline uint32_t mix(uint32_t sum, uint32_t v)
{
    uint32_t x = sum ^ v;
    return x * FNV_PRIME ^ (x >> 17);
}

uint16_t pgpage_checksum(const uint8_t *page, uint32_t blkno)
{
    uint32_t sums[LANES];
    memcpy(sums, BASE_OFFSETS, sizeof(sums));
    const size_t rows = PGPAGE_SIZE / (4 * LANES);
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < LANES; j++) {
            uint32_t w;
            memcpy(&w, page + (i * LANES + j) * 4, 4);
            /* the checksum itself counts as zero (it shares the third word with pd_flags) */
            if (i == 0 && j == PD_CHECKSUM_OFF / 4) {
                uint16_t zero = 0;
                memcpy((uint8_t *)&w + 0, &zero, 2);
            }
            sums[j] = mix(sums[j], w);
        }
    for (int r = 0; r < 2; r++)
        for (size_t j = 0; j < LANES; j++)
            sums[j] = mix(sums[j], 0);
    uint32_t c = 0;
    for (size_t j = 0; j < LANES; j++)
        c ^= sums[j];
    c ^= blkno;
    return (uint16_t)(c % 65535u + 1u);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

uint64_t pgpage_lsn(const uint8_t *page)
{
    uint32_t hi, lo;
    memcpy(&hi, page, 4);
    memcpy(&lo, page + 4, 4);
    return ((uint64_t)hi << 32) | lo;
}

enum pgpage_verdict pgpage_verify(const uint8_t *page, uint32_t blkno, uint64_t start_lsn,
                                  uint16_t *stored, uint16_t *computed)
{
    uint16_t upper, chk;
    memcpy(&upper, page + PD_UPPER_OFF, 2);
    memcpy(&chk, page + PD_CHECKSUM_OFF, 2);
    *stored = chk;
    *computed = 0;
    /* a new page (pd_upper 0) carries no checksum; PostgreSQL accepts it only when all zero,
     * otherwise it is damage like any other */
    if (upper == 0 && all_zero(page, PGPAGE_SIZE))
        return PGPAGE_NEW;
    uint64_t lsn = pgpage_lsn(page);
    *computed = pgpage_checksum(page, blkno);
    if (*computed == chk)
        return PGPAGE_OK;
    if (upper != 0 && lsn >= start_lsn)
        return PGPAGE_SKIPPED;
    return PGPAGE_BAD;
}

static bool digits(const char **p)
{
    const char *s = *p;
    if (*s < '0' || *s > '9')
        return false;
    while (**p >= '0' && **p <= '9')
        (*p)++;
    return true;
}

/* <n>[_fsm|_vm|_init][.<seg>] and nothing else */
static bool relation_name(const char *s, uint32_t *segno)
{
    if (!digits(&s))
        return false;
    if (strncmp(s, "_fsm", 4) == 0)
        s += 4;
    else if (strncmp(s, "_vm", 3) == 0)
        s += 3;
    else if (strncmp(s, "_init", 5) == 0)
        s += 5;
    *segno = 0;
    if (*s == '.') {
        s++;
        const char *d = s;
        if (!digits(&s))
            return false;
        *segno = (uint32_t)strtoul(d, NULL, 10);
    }
    return *s == '\0';
}

bool pgpage_is_relation(const char *path, uint32_t *segno)
{
    const char *p = path;
    if (strncmp(p, "global/", 7) == 0)
        return relation_name(p + 7, segno);
    if (strncmp(p, "base/", 5) == 0)
        p += 5;
    else if (strncmp(p, "PG_", 3) == 0) {
        const char *slash = strchr(p, '/');
        if (!slash)
            return false;
        p = slash + 1;
    } else
        return false;
    if (!digits(&p) || *p != '/')
        return false;
    return relation_name(p + 1, segno);
}

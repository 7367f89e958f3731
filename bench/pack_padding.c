/* What the size padding of packs and index files costs in a repository (pack format 2,
 * docs/REPOSITORY-FORMAT.md "Packs"): for every index file (one per backup), its packs, their
 * bytes, and how many of those bytes are padding.
 *
 * Build (from the repository root, after ./scripts/build.sh):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/pack_padding.c build/libcaris.a \
 *       $(pkg-config --libs libcrypto libsodium libzstd jansson libpq) -lpthread \
 *       -o /tmp/pack_padding
 * Run:
 *   BACKUP_ENCRYPTION_KEY=... /tmp/pack_padding /path/to/repository
 *
 * A pack's padding is its size minus what it would be unpadded: header, blobs (from the index),
 * entry count, entries, trailer tag, footer. An index file's is the zero bytes after its
 * compressed payload. Version 1 packs (no padding) are counted as such. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "repo/internal.h"

/* pad_size with steps 2^shift times as large (shift < 0: finer), for the alternatives table. */
static uint64_t pad_variant(uint64_t n, uint64_t min, int shift)
{
    if (n <= min)
        return min;
    int ex = 63 - __builtin_clzll(n);
    int sbits = 32 - __builtin_clz((unsigned)ex) - shift;
    if (sbits > ex)
        return n;
    uint64_t g = (uint64_t)1 << (ex - sbits);
    return (n + g - 1) & ~(g - 1);
}

int main(int argc, char **argv)
{
    const char *pw = getenv("BACKUP_ENCRYPTION_KEY");
    if (argc != 2 || !pw) {
        fprintf(stderr, "usage: BACKUP_ENCRYPTION_KEY=... %s REPOSITORY\n", argv[0]);
        return 2;
    }
    struct err e = ERR_INIT;
    struct repo *r = repo_open(argv[1], pw, &e);
    if (!r) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    size_t np = r->npacks, ni = r->nindex_files;
    uint64_t *blob_bytes = calloc(np, sizeof(uint64_t)), *nblobs = calloc(np, sizeof(uint64_t));
    for (size_t i = 0; i < r->nentries; i++) {
        struct ientry *en = repo_entry(r, i);
        if (PACK_IS_REAL(en->pack)) {
            blob_bytes[en->pack] += en->clen;
            nblobs[en->pack]++;
        }
    }
    uint64_t tot_packs = 0, tot_pack_bytes = 0, tot_pad = 0, tot_idx = 0, tot_idx_pad = 0;
    /* what other step sizes would have cost on the same packs: steps x1/4, x1/2, x1 (the
     * format's), x2, and the 64 KiB floor alone */
    static const int shifts[] = {-2, -1, 0, 1, 99};
    uint64_t alt[5] = {0}, tot_bare = 0;
    printf("| index file (mtime order in `ls -tr`) | packs | pack bytes | pack padding | index "
           "bytes | index padding |\n|---|---|---|---|---|---|\n");
    for (size_t f = 0; f < ni; f++) {
        uint64_t packs = 0, bytes = 0, pad = 0;
        for (size_t p = 0; p < np; p++) {
            if (r->packs[p].source != (int)f)
                continue;
            char name[80];
            uint64_t size;
            uint8_t head[8];
            pack_object_name(r->packs[p].id, name, sizeof(name));
            if (storage_size(r->st, name, &size, &e) != 0 ||
                storage_read_at(r->st, name, 0, head, 8, &e) != 0) {
                fprintf(stderr, "%s: %s\n", name, e.msg);
                return 1;
            }
            uint64_t bare = pack_version(head) == 1 ? size
                                                    : PACK_HEADER_LEN + blob_bytes[p] + 4 +
                                                          nblobs[p] * PACK_TRAILER_ENTRY_LEN +
                                                          CX_TAG_LEN + PACK_FOOTER_V2_LEN;
            packs++;
            bytes += size;
            pad += size - bare;
            tot_bare += bare;
            for (int k = 0; k < 5; k++)
                alt[k] += (shifts[k] == 99 ? (bare < PACK_MIN_SIZE ? PACK_MIN_SIZE : bare)
                                           : pad_variant(bare, PACK_MIN_SIZE, shifts[k])) -
                          bare;
        }
        struct buf raw = {0}, plain = {0};
        if (storage_get(r->st, r->index_files[f], REPO_MAX_METADATA, &raw, &e) != 0 ||
            container_open(r, 'I', raw.data, raw.len, &plain, &e) != 0) {
            fprintf(stderr, "%s: %s\n", r->index_files[f], e.msg);
            return 1;
        }
        size_t frame = ZSTD_findFrameCompressedSize(plain.data, plain.len);
        uint64_t ipad = plain.len - frame;
        printf("| %.20s | %llu | %llu | %llu (%.2f%%) | %zu | %llu |\n", r->index_files[f] + 6,
               (unsigned long long)packs, (unsigned long long)bytes, (unsigned long long)pad,
               bytes ? 100.0 * (double)pad / (double)bytes : 0.0, raw.len,
               (unsigned long long)ipad);
        tot_packs += packs;
        tot_pack_bytes += bytes;
        tot_pad += pad;
        tot_idx += raw.len;
        tot_idx_pad += ipad;
        buf_free(&raw);
        buf_free(&plain);
    }
    printf("| all | %llu | %llu | %llu (%.2f%%) | %llu | %llu |\n", (unsigned long long)tot_packs,
           (unsigned long long)tot_pack_bytes, (unsigned long long)tot_pad,
           tot_pack_bytes ? 100.0 * (double)tot_pad / (double)tot_pack_bytes : 0.0,
           (unsigned long long)tot_idx, (unsigned long long)tot_idx_pad);
    printf("\n| pack padding steps | padding | of the unpadded packs |\n|---|---|---|\n");
    static const char *names[] = {"1/4 of the format's", "1/2", "the format's (pad_size)", "2x",
                                  "none (64 KiB floor only)"};
    for (int k = 0; k < 5; k++)
        printf("| %s | %llu | %.2f%% |\n", names[k], (unsigned long long)alt[k],
               tot_bare ? 100.0 * (double)alt[k] / (double)tot_bare : 0.0);
    free(blob_bytes);
    free(nblobs);
    repo_close(r);
    return 0;
}

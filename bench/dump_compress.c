/* Logical-dump storage measurement (issue 12): how many bytes a dump costs in the repository
 * under each option, from two real dumps (before and after a change, e.g. pgbench -t 1000).
 *
 * Build (from the repository root):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Wall -Wextra -Iinclude -Isrc src/repo/chunker.c \
 *       bench/dump_compress.c -lcrypto -lzstd -o /tmp/dump_compress
 * Run:
 *   pg_dump -Fc -Z0 -d DB > a.dump; pgbench -n -t 1000 DB; pg_dump -Fc -Z0 -d DB > b.dump
 *   /tmp/dump_compress a.dump b.dump [--seeds N] [--only ROW]
 *
 * For each option it prints, for dump A stored into an empty repository: the chunk count, the
 * compressed payload bytes, the per-blob metadata the repository adds (AES-GCM tag 16 bytes,
 * pack trailer entry 44, index entry 44: 104 bytes a blob), their sum, the CPU time spent
 * compressing (one thread); for dump B stored after A: the fraction of B's bytes in chunks A
 * does not have (what the incremental adds, as stats.bytesAdded counts it); then a model of the
 * manifest's chunk list (LIST_* below), the full with it, and what the incremental stores (its
 * new chunks compressed, their metadata, the list chunks it stores again) in MiB and as a
 * fraction of the full (new chunks compressed one by one, with or without groups). DUMPZ_AVG=N
 * DUMPZ_LEVEL=L: only that option (avg N bytes, a power of two; zstd level L). Options: the
 * chunker's average size (min = avg / 4, max = avg * 4, as the defaults; the environment variable
 * DUMPZ_MIN sets another minimum), the zstd level and minMatch (0: the level's own), and "groups":
 * runs of consecutive new chunks compressed as one zstd frame of up to G bytes (what a blob group
 * format would store). Chunker seeds are fixed (the table is secret and random per repository):
 * figures are the mean over --seeds seeds (default 1). Level 100 + L: level L with a zstd
 * dictionary (112 KiB, trained on every 8th chunk of A, counted in the metadata), compressing every
 * chunk of A and B.
 *
 * A program, not a test: it prints figures and never fails a build. */
#include "caris/chunker.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <zdict.h>
#include <zstd.h>

#define BLOB_META 104 /* tag 16 + trailer entry 44 + index entry 44 */

struct file {
    uint8_t *data;
    size_t len;
};

static int load(const char *path, struct file *f)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -1;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    f->data = malloc((size_t)n);
    f->len = fread(f->data, 1, (size_t)n, fp);
    fclose(fp);
    return f->len == (size_t)n ? 0 : -1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* CPU time: the machine is shared */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* a set of 16-byte chunk fingerprints (truncated SHA-256), open addressing */
struct set {
    uint8_t (*k)[16];
    size_t cap, n;
};

static bool set_add(struct set *s, const uint8_t *key)
{
    if (2 * (s->n + 1) > s->cap) {
        struct set t = {.cap = s->cap ? s->cap * 2 : 1 << 16};
        t.k = calloc(t.cap, 16);
        for (size_t i = 0; i < s->cap; i++) {
            static const uint8_t zero[16];
            if (memcmp(s->k[i], zero, 16))
                set_add(&t, s->k[i]);
        }
        free(s->k);
        *s = t;
    }
    uint64_t h;
    memcpy(&h, key, 8);
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        static const uint8_t zero[16];
        if (!memcmp(s->k[i], zero, 16)) {
            memcpy(s->k[i], key, 16);
            s->n++;
            return true;
        }
        if (!memcmp(s->k[i], key, 16))
            return false;
    }
}

static void fp16(const uint8_t *p, size_t n, uint8_t out[16])
{
    uint8_t md[32];
    EVP_Digest(p, n, md, NULL, EVP_sha256(), NULL);
    memcpy(out, md, 16);
    if (!memcmp(out, (uint8_t[16]){0}, 16))
        out[0] = 1;
}

struct result {
    size_t chunks;
    double payload, meta, secs, incr, list, incr_stored;
};

/* The manifest's chunk list: about LIST_ENTRY bytes of JSON a chunk (`["<64 hex>",N],`), stored
 * as a stream of 16 KiB chunks that compress to about half (hex). An incremental stores again
 * each list chunk that names a new chunk. */
#define LIST_ENTRY 75.0
#define LIST_CHUNK 16384.0
#define LIST_STORED (LIST_CHUNK * 0.51 + BLOB_META)

/* Stores a (into an empty set) and then b; groups of consecutive new chunks up to group
 * bytes are compressed together (group 0: each chunk alone). */
static void run(const struct file *a, const struct file *b, uint32_t avg, int level, int minmatch,
                size_t group, const uint8_t seed[32], struct result *r)
{
    struct chunker_params p = {.min_size = avg / 4, .avg_size = avg, .max_size = avg * 4};
    if (getenv("DUMPZ_MIN")) /* e.g. DUMPZ_MIN=8192: another minimum, same avg and max */
        p.min_size = (uint32_t)atoi(getenv("DUMPZ_MIN"));
    struct chunker ch;
    chunker_init(&ch, &p, seed);
    memset(r, 0, sizeof(*r));
    struct set s = {0};
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CDict *cd = NULL;
    if (level >= 100) {
        /* a dictionary of 112 KiB trained on every 8th chunk of A (at most 16 MiB of samples),
         * as a per-repository dictionary trained on the first backup would be */
        level -= 100;
        size_t *sizes = malloc(sizeof(size_t) * (a->len / p.min_size + 1)), ns = 0, sl = 0;
        uint8_t *samples = malloc(16u << 20);
        size_t pos = 0, k = 0;
        while (pos < a->len) {
            size_t n = chunker_cut(&ch, a->data + pos, a->len - pos);
            if (k++ % 8 == 0 && sl + n <= (16u << 20)) {
                memcpy(samples + sl, a->data + pos, n);
                sizes[ns++] = n;
                sl += n;
            }
            pos += n;
        }
        uint8_t *dict = malloc(112u << 10);
        double t0 = now();
        size_t dl = ZDICT_trainFromBuffer(dict, 112u << 10, samples, sizes, (unsigned)ns);
        if (ZDICT_isError(dl)) {
            fprintf(stderr, "dictionary: %s\n", ZDICT_getErrorName(dl));
            dl = 0;
        }
        fprintf(stderr, "dictionary: %zu bytes from %zu samples in %.2f s\n", dl, ns, now() - t0);
        cd = ZSTD_createCDict(dict, dl, level);
        r->meta += (double)dl; /* stored once in the repository */
        free(dict);
        free(samples);
        free(sizes);
    }
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
    if (cd)
        ZSTD_CCtx_refCDict(cc, cd);
    if (minmatch)
        ZSTD_CCtx_setParameter(cc, ZSTD_c_minMatch, minmatch);
    size_t cap = ZSTD_compressBound(group > p.max_size ? group + p.max_size : p.max_size);
    uint8_t *out = malloc(cap);
    for (int pass = 0; pass < 2; pass++) {
        const struct file *f = pass ? b : a;
        size_t pos = 0, gstart = 0, glen = 0, newbytes = 0, nblobs = 0, nchunks = 0;
        size_t last_bucket = SIZE_MAX;
        while (pos < f->len) {
            size_t n = chunker_cut(&ch, f->data + pos, f->len - pos);
            uint8_t k[16];
            fp16(f->data + pos, n, k);
            bool fresh = set_add(&s, k);
            if (fresh) {
                newbytes += n;
                nblobs++;
                if (pass == 1) { /* what the incremental stores: the chunk, its metadata */
                    r->incr_stored +=
                        (double)ZSTD_compress2(cc, out, cap, f->data + pos, n) + BLOB_META;
                    size_t bucket = (size_t)((double)nchunks * LIST_ENTRY / LIST_CHUNK);
                    if (bucket != last_bucket)
                        r->incr_stored += LIST_STORED;
                    last_bucket = bucket;
                }
            }
            nchunks++;
            if (pass == 0) {
                /* a group ends at a known chunk or when it would exceed its size */
                bool contiguous = fresh && glen && gstart + glen == pos;
                if (glen && (!contiguous || (group && glen + n > group) || !group)) {
                    double t0 = now();
                    r->payload += (double)ZSTD_compress2(cc, out, cap, f->data + gstart, glen);
                    r->secs += now() - t0;
                    glen = 0;
                }
                if (fresh) {
                    if (!glen)
                        gstart = pos;
                    glen += n;
                }
            }
            pos += n;
        }
        if (pass == 0) {
            if (glen) {
                double t0 = now();
                r->payload += (double)ZSTD_compress2(cc, out, cap, f->data + gstart, glen);
                r->secs += now() - t0;
            }
            r->chunks = nblobs;
            r->meta += (double)nblobs * BLOB_META;
            r->list = (double)nchunks * LIST_ENTRY / LIST_CHUNK * LIST_STORED; /* names all */
        } else {
            r->incr = (double)newbytes / (double)f->len;
        }
    }
    free(out);
    free(s.k);
    ZSTD_freeCCtx(cc);
    ZSTD_freeCDict(cd);
    chunker_wipe(&ch);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: dump_compress A.dump B.dump [--seeds N]\n");
        return 0;
    }
    int seeds = 1, only = -1;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seeds"))
            seeds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--only")) /* row N, or N+100: rows N.. */
            only = atoi(argv[i + 1]);
    }
    /* DUMPZ_AVG and DUMPZ_LEVEL: one option of one's own instead of the table below */
    const char *own_avg = getenv("DUMPZ_AVG"), *own_level = getenv("DUMPZ_LEVEL");
    bool own = own_avg && own_level;
    if (own && (atoi(own_avg) < 1024 || (atoi(own_avg) & (atoi(own_avg) - 1)))) {
        /* the chunker's mask needs a power of two */
        fprintf(stderr, "DUMPZ_AVG must be a power of two >= 1024, not %s\n", own_avg);
        return 0;
    }
    struct file a, b;
    if (load(argv[1], &a) || load(argv[2], &b)) {
        fprintf(stderr, "cannot read the dumps\n");
        return 0;
    }
    /* the one-stream reference: zstd level 3 over the whole dump */
    {
        double t0 = now();
        size_t cap = ZSTD_compressBound(a.len);
        uint8_t *out = malloc(cap);
        size_t n = ZSTD_compress(out, cap, a.data, a.len, 3);
        printf("one zstd -3 stream: %.1f MiB in %.2f s\n\n", (double)n / 1048576, now() - t0);
        free(out);
    }
    printf("| avg chunk | level | minMatch | group | chunks | payload MiB | meta MiB | total MiB | "
           "compress s | incremental "
           "| list MiB | full with list MiB | incr stored MiB | incr stored / full |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    struct {
        uint32_t avg;
        int level, minmatch;
        size_t group;
    } opts[] = {
        {16384, 3, 0, 0},         {16384, 1, 0, 0},        {16384, 6, 0, 0},
        {32768, 3, 0, 0},         {65536, 3, 0, 0},        {131072, 3, 0, 0},
        {16384, 3, 0, 256 << 10}, {16384, 3, 0, 1u << 20}, {16384, 3, 0, 4u << 20},
        {16384, 1, 0, 1u << 20},  {16384, 3, 5, 0},        {16384, 3, 6, 0},
        {16384, 3, 7, 0},         {16384, 1, 6, 0},        {16384, 1, 7, 0},
        {16384, 3, 7, 1u << 20},  {16384, 3, 7, 4u << 20}, {16384, 1, 7, 1u << 20},
        {16384, -1, 0, 0},        {16384, 2, 0, 0},        {16384, 2, 6, 0},
        {16384, 103, 0, 0},       {16384, 101, 0, 0},
    };
    size_t nopts = sizeof(opts) / sizeof(opts[0]);
    if (own) {
        opts[0].avg = (uint32_t)atoi(own_avg);
        opts[0].level = atoi(own_level);
        nopts = 1;
        only = -1;
    }
    for (size_t i = 0; i < nopts; i++) {
        if (only >= 0 && (size_t)only != i && !(only >= 100 && i >= (size_t)only - 100))
            continue;
        struct result sum = {0};
        for (int k = 0; k < seeds; k++) {
            uint8_t seed[32] = {(uint8_t)(k + 1), 0x5a};
            struct result r;
            run(&a, &b, opts[i].avg, opts[i].level, opts[i].minmatch, opts[i].group, seed, &r);
            sum.chunks += r.chunks;
            sum.payload += r.payload;
            sum.meta += r.meta;
            sum.secs += r.secs;
            sum.incr += r.incr;
            sum.list += r.list;
            sum.incr_stored += r.incr_stored;
        }
        double full = (sum.payload + sum.meta + sum.list) / seeds;
        printf("| %u KiB | %d | %d | %s%zu KiB | %zu | %.1f | %.1f | %.1f | %.2f | %.1f%% "
               "| %.1f | %.1f | %.2f | %.1f%% |\n",
               opts[i].avg / 1024, opts[i].level, opts[i].minmatch, opts[i].group ? "" : "none ",
               opts[i].group / 1024, sum.chunks / (size_t)seeds, sum.payload / seeds / 1048576,
               sum.meta / seeds / 1048576, (sum.payload + sum.meta) / seeds / 1048576,
               sum.secs / seeds, 100 * sum.incr / seeds, sum.list / seeds / 1048576, full / 1048576,
               sum.incr_stored / seeds / 1048576, 100 * sum.incr_stored / seeds / full);
        fflush(stdout);
    }
    free(a.data);
    free(b.data);
    return 0;
}

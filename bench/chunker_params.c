/* Chunker parameter measurement: dedup after small edits, chunk size distribution, throughput.
 *
 * Build (from the repository root):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Wall -Wextra -Iinclude -Isrc src/repo/chunker.c \
 *       bench/chunker_params.c -lcrypto -lm -o /tmp/chunker_params
 * Run:
 *   /tmp/chunker_params            full run, prints markdown tables (a few minutes, ~1.5 GiB RAM)
 *   /tmp/chunker_params --quick    smaller inputs, fewer seeds
 *   /tmp/chunker_params --speed    only the throughput of the two default parameter sets
 *
 * Scenarios (all data is generated from fixed PRNG seeds, so runs are reproducible):
 *   random-mid   256 MiB of random bytes; one byte inserted at 128 MiB
 *   random-head  the same, one byte inserted at 300 KiB (inside the first MiB)
 *   dump-1%      200 MiB "table dump" of text rows "id|text|number\n"; 1% of the rows, chosen
 *                at random, are removed from their place and appended (with a new number) at
 *                the end, as PostgreSQL places updated rows
 *   dump-1%-run  like dump-1%, but the changed rows come in runs of 100 consecutive rows
 *                (updates clustered on recent or related rows)
 * For each scenario the figure is the fraction of the modified input's bytes that fall in chunks
 * not present in the original's chunks, i.e. what the second backup uploads. Each is the mean
 * over several chunker seeds (the gear table is secret and random per repository).
 *
 * This is a program, not a test: it prints figures and never fails a build. */
#include "caris/chunker.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#define KIB (1024u)
#define MIB (1024u * 1024u)

struct buf {
    uint8_t *data;
    size_t len;
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "chunker_params: out of memory allocating %zu bytes\n", n);
        exit(1);
    }
    return p;
}

/* splitmix64: small, fast, good enough for test data. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return rng_next(s) % n;
}

static double now_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static struct buf random_data(size_t len, uint64_t seed)
{
    struct buf b = {xmalloc(len), len};
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = rng_next(&seed);
        memcpy(b.data + i, &v, 8);
    }
    for (; i < len; i++)
        b.data[i] = (uint8_t)rng_next(&seed);
    return b;
}

static struct buf insert_byte(const struct buf *in, size_t at, uint8_t byte)
{
    struct buf b = {xmalloc(in->len + 1), in->len + 1};
    memcpy(b.data, in->data, at);
    b.data[at] = byte;
    memcpy(b.data + at + 1, in->data + at, in->len - at);
    return b;
}

/* ---- synthetic table dump ---- */

struct row {
    uint64_t id;
    uint64_t text_seed;
    uint32_t text_len;
    uint32_t number;
};

static size_t row_format(const struct row *r, char *out)
{
    int n = sprintf(out, "%llu|", (unsigned long long)r->id);
    uint64_t s = r->text_seed;
    for (uint32_t k = 0; k < r->text_len; k++) {
        uint64_t v = rng_below(&s, 32);
        out[n++] = v < 26 ? (char)('a' + v) : ' ';
    }
    n += sprintf(out + n, "|%u\n", r->number);
    return (size_t)n;
}

struct table {
    struct row *rows;
    size_t n;
};

static struct table table_make(size_t target_bytes, uint64_t seed)
{
    size_t cap = target_bytes / 60 + 16;
    struct table t = {xmalloc(cap * sizeof(struct row)), 0};
    size_t bytes = 0;
    char line[512];
    while (bytes < target_bytes && t.n < cap) {
        struct row *r = &t.rows[t.n];
        r->id = t.n + 1;
        r->text_seed = rng_next(&seed);
        r->text_len = 10 + (uint32_t)rng_below(&seed, 181);
        r->number = (uint32_t)rng_below(&seed, 1000000);
        bytes += row_format(r, line);
        t.n++;
    }
    return t;
}

static struct buf table_dump(const struct table *t)
{
    size_t cap = 0;
    char line[512];
    for (size_t i = 0; i < t->n; i++)
        cap += row_format(&t->rows[i], line);
    struct buf b = {xmalloc(cap + 1), 0}; /* + 1: sprintf's terminator after the last row */
    for (size_t i = 0; i < t->n; i++)
        b.len += row_format(&t->rows[i], (char *)b.data + b.len);
    return b;
}

/* 1% of the rows (in runs of `run` consecutive rows) are updated: removed from their place and
 * appended at the end with a new number. */
static struct table table_update(const struct table *t, size_t run, uint64_t seed)
{
    bool *moved = xmalloc(t->n);
    memset(moved, 0, t->n);
    size_t want = t->n / 100, got = 0;
    while (got < want) {
        size_t start = (size_t)rng_below(&seed, t->n - run + 1);
        for (size_t k = start; k < start + run && got < want; k++)
            if (!moved[k]) {
                moved[k] = true;
                got++;
            }
    }
    struct table u = {xmalloc(t->n * sizeof(struct row)), 0};
    for (size_t i = 0; i < t->n; i++)
        if (!moved[i])
            u.rows[u.n++] = t->rows[i];
    for (size_t i = 0; i < t->n; i++)
        if (moved[i]) {
            u.rows[u.n] = t->rows[i];
            u.rows[u.n].number = (uint32_t)rng_below(&seed, 1000000);
            u.n++;
        }
    free(moved);
    return u;
}

/* ---- chunking and comparison ---- */

struct digest {
    uint8_t b[32];
};

static int digest_cmp(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(struct digest));
}

static void sha256(const uint8_t *p, size_t n, struct digest *out)
{
    if (EVP_Digest(p, n, out->b, NULL, EVP_sha256(), NULL) != 1) {
        fprintf(stderr, "chunker_params: SHA-256 failed\n");
        exit(1);
    }
}

struct chunking {
    size_t *lens;
    struct digest *digests; /* sorted */
    size_t n;
};

static struct chunking chunk_all(const struct chunker *c, const struct buf *b)
{
    size_t cap = b->len / c->p.min_size + 2;
    struct chunking r = {xmalloc(cap * sizeof(size_t)), xmalloc(cap * sizeof(struct digest)), 0};
    for (size_t off = 0; off < b->len;) {
        size_t n = chunker_cut(c, b->data + off, b->len - off);
        sha256(b->data + off, n, &r.digests[r.n]);
        r.lens[r.n++] = n;
        off += n;
    }
    qsort(r.digests, r.n, sizeof(struct digest), digest_cmp);
    return r;
}

static void chunking_free(struct chunking *r)
{
    free(r->lens);
    free(r->digests);
}

/* Fraction of b's bytes in chunks whose content is not among old's chunks. */
static double new_fraction(const struct chunker *c, const struct chunking *old, const struct buf *b)
{
    size_t fresh = 0;
    for (size_t off = 0; off < b->len;) {
        size_t n = chunker_cut(c, b->data + off, b->len - off);
        struct digest d;
        sha256(b->data + off, n, &d);
        if (!bsearch(&d, old->digests, old->n, sizeof(d), digest_cmp))
            fresh += n;
        off += n;
    }
    return (double)fresh / (double)b->len;
}

static double throughput(const struct chunker *c, const struct buf *b, int reps)
{
    double best = 1e30;
    size_t sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_sec();
        for (size_t off = 0; off < b->len;) {
            size_t n = chunker_cut(c, b->data + off, b->len - off);
            off += n;
            sink += n;
        }
        double t = now_sec() - t0;
        if (t < best)
            best = t;
    }
    if (sink == 0)
        fprintf(stderr, "unreachable\n");
    return (double)b->len / best / 1e9;
}

static void size_stats(const struct chunking *r, double *mean, double *sd)
{
    /* The last chunk is the stream's remainder, not a cut decision: leave it out. */
    size_t n = r->n > 1 ? r->n - 1 : r->n;
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s += (double)r->lens[i];
        s2 += (double)r->lens[i] * (double)r->lens[i];
    }
    *mean = s / (double)n;
    *sd = sqrt(s2 / (double)n - *mean * *mean);
}

static void fmt_size(char *out, size_t cap, uint32_t v)
{
    if (v % MIB == 0)
        snprintf(out, cap, "%uM", v / MIB);
    else
        snprintf(out, cap, "%uK", v / KIB);
}

static void seed_for(uint8_t seed[32], int k)
{
    uint64_t s = UINT64_C(0xC0FFEE) + (uint64_t)k;
    for (int i = 0; i < 32; i += 8) {
        uint64_t v = rng_next(&s);
        memcpy(seed + i, &v, 8);
    }
}

struct scenario {
    const char *name;
    const struct buf *orig;
    const struct buf *mod;
};

static void run_set(const struct chunker_params *p, const struct scenario *sc, int nsc,
                    const struct buf *rnd, const struct buf *dump, int seeds)
{
    char a[16], b[16], c[16];
    fmt_size(a, sizeof(a), p->min_size);
    fmt_size(b, sizeof(b), p->avg_size);
    fmt_size(c, sizeof(c), p->max_size);
    printf("| %s / %s / %s |", a, b, c);

    double mean_r = 0, sd_r = 0, mean_d = 0, sd_d = 0;
    double *frac = xmalloc((size_t)nsc * sizeof(double));
    for (int i = 0; i < nsc; i++)
        frac[i] = 0;
    for (int k = 0; k < seeds; k++) {
        uint8_t seed[32];
        seed_for(seed, k);
        struct chunker ch;
        if (chunker_init(&ch, p, seed) != 0) {
            fprintf(stderr, "chunker_params: invalid parameters\n");
            exit(1);
        }
        for (int i = 0; i < nsc; i++) {
            struct chunking old = chunk_all(&ch, sc[i].orig);
            frac[i] += new_fraction(&ch, &old, sc[i].mod) / seeds;
            if (k == 0 && sc[i].orig == rnd && mean_r == 0)
                size_stats(&old, &mean_r, &sd_r);
            if (k == 0 && sc[i].orig == dump && mean_d == 0)
                size_stats(&old, &mean_d, &sd_d);
            chunking_free(&old);
        }
    }
    for (int i = 0; i < nsc; i++)
        printf(" %.*f%% |", frac[i] < 0.01 ? 3 : 1, 100.0 * frac[i]);
    printf(" %.0fK ± %.0fK | %.0fK ± %.0fK |", mean_r / KIB, sd_r / KIB, mean_d / KIB, sd_d / KIB);

    uint8_t seed[32];
    seed_for(seed, 0);
    struct chunker ch;
    chunker_init(&ch, p, seed);
    printf(" %.2f | %.2f |", throughput(&ch, rnd, 5), throughput(&ch, dump, 5));
    /* Index cost: ~64 bytes of index per chunk, per TiB of unique data. */
    printf(" %.0f |\n", 64.0 * (1024.0 * 1024.0 * MIB) / mean_r / MIB);
    free(frac);
    fflush(stdout);
}

static void print_speed(const struct buf *rnd, const struct buf *dump)
{
    const struct chunker_params *defs[] = {&CHUNKER_DEFAULT_FILES, &CHUNKER_DEFAULT_DUMPS};
    const char *names[] = {"CHUNKER_DEFAULT_FILES", "CHUNKER_DEFAULT_DUMPS"};
    uint8_t seed[32];
    seed_for(seed, 0);
    for (int i = 0; i < 2; i++) {
        struct chunker ch;
        if (chunker_init(&ch, defs[i], seed) != 0) {
            fprintf(stderr, "chunker_params: invalid default parameters\n");
            exit(1);
        }
        printf("%s: random %.2f GB/s, dump %.2f GB/s (best of 10)\n", names[i],
               throughput(&ch, rnd, 10), throughput(&ch, dump, 10));
    }
}

static void print_tables(const struct buf *rnd, const struct buf *rnd_mid,
                         const struct buf *rnd_head, const struct buf *dump,
                         const struct buf *dump1, const struct buf *dump100, int seeds)
{
    const struct scenario sc[] = {
        {"random-mid", rnd, rnd_mid},
        {"random-head", rnd, rnd_head},
        {"dump-1%", dump, dump1},
        {"dump-1%-run", dump, dump100},
    };
    const int nsc = (int)(sizeof(sc) / sizeof(sc[0]));

    printf("new-byte figures: mean over %d chunker seeds\n\n", seeds);
    printf("| min / avg / max | random-mid | random-head | dump-1%% | dump-1%%-run "
           "| size random (mean ± sd) | size dump (mean ± sd) | GB/s random | GB/s dump "
           "| index MiB per TiB |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");

    static const struct chunker_params sets[] = {
        /* file candidates */
        {256 * KIB, 1 * MIB, 4 * MIB},
        {256 * KIB, 1 * MIB, 8 * MIB},
        {512 * KIB, 1 * MIB, 4 * MIB},
        {512 * KIB, 1 * MIB, 8 * MIB},
        {512 * KIB, 2 * MIB, 8 * MIB},
        /* dump candidates */
        {128 * KIB, 512 * KIB, 2 * MIB},
        {32 * KIB, 128 * KIB, 512 * KIB},
        {16 * KIB, 64 * KIB, 256 * KIB},
        {8 * KIB, 32 * KIB, 128 * KIB},
        {4 * KIB, 16 * KIB, 64 * KIB},
        {2 * KIB, 16 * KIB, 64 * KIB},
        {4 * KIB, 16 * KIB, 128 * KIB},
        {2 * KIB, 8 * KIB, 32 * KIB},
        {1 * KIB, 4 * KIB, 16 * KIB},
    };
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
        run_set(&sets[i], sc, nsc, rnd, dump, seeds);
}

int main(int argc, char **argv)
{
    bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    bool speed = argc > 1 && strcmp(argv[1], "--speed") == 0;
    size_t rnd_len = quick ? 64 * (size_t)MIB : 256 * (size_t)MIB;
    size_t dump_len = quick ? 50 * (size_t)MIB : 200 * (size_t)MIB;
    int seeds = quick ? 2 : 5;

    struct buf rnd = random_data(rnd_len, 1);
    struct buf rnd_mid = insert_byte(&rnd, rnd_len / 2, 0x5a);
    struct buf rnd_head = insert_byte(&rnd, 300 * KIB, 0x5a);

    struct table t = table_make(dump_len, 2);
    struct table u1 = table_update(&t, 1, 3);
    struct table u100 = table_update(&t, 100, 4);
    struct buf dump = table_dump(&t);
    struct buf dump1 = table_dump(&u1);
    struct buf dump100 = table_dump(&u100);

    printf("random: %zu MiB; dump: %zu rows, %.1f MiB, mean row %.1f bytes\n\n", rnd_len / MIB, t.n,
           (double)dump.len / MIB, (double)dump.len / (double)t.n);
    if (speed)
        print_speed(&rnd, &dump);
    else
        print_tables(&rnd, &rnd_mid, &rnd_head, &dump, &dump1, &dump100, seeds);

    free(rnd.data);
    free(rnd_mid.data);
    free(rnd_head.data);
    free(dump.data);
    free(dump1.data);
    free(dump100.data);
    free(t.rows);
    free(u1.rows);
    free(u100.rows);
    return 0;
}

/* Tests of the repository engine (src/repo/): key slots, blob I/O from several threads,
 * nonce uniqueness, hostile input, index memory, snapshots, locks, orphan pack adoption.
 *
 * Some tests look inside through src/repo/internal.h: to decrypt pack trailers and blobs
 * independently of the blob loader (nonce test), to seal crafted payloads with the
 * repository's key (parsers behind the authentication), and to see whether a pack was found
 * through an index or adopted from its trailer. Everything else goes through include/caris. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tmpdir.h"

#include "caris/crypto.h"
#include "caris/repo.h"
#include "caris/stream.h"
#include "repo/internal.h"

/* a sanitizer build (GCC says so with __SANITIZE_*__, clang with __has_feature): its allocator
 * bypasses mallinfo2, and it reserves terabytes of address space */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#define PW "test password: correct horse battery staple"
#define PW2 "second key, at least thirty-two characters long"

static const struct repo_init_opts FAST = {.kdf_ops = 1, .kdf_mem = 8u << 20};
/* libsodium's minimum (8 KiB, one pass): the hostile-input loops reopen the repository
 * thousands of times, and Argon2 would dominate their run time. */
static const struct repo_init_opts TINY = {.kdf_ops = 1, .kdf_mem = 8192};

/* ---- helpers ------------------------------------------------------------------------- */

#define assert_err(e, want)                                                                        \
    do {                                                                                           \
        if ((e).code != (want))                                                                    \
            fail_msg("expected %s, got %s: %s", err_code_name(want), err_code_name((e).code),      \
                     (e).msg);                                                                     \
    } while (0)

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void fill_random(uint64_t seed, uint8_t *p, size_t n)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = splitmix(&s);
        memcpy(p + i, &v, n - i < 8 ? n - i : 8);
    }
}

/* Blob contents by seed: every third seed compressible text, the others random bytes. */
static void fill_blob(uint64_t seed, uint8_t *p, size_t n)
{
    if (seed % 3 == 0) {
        char line[64];
        int ll = snprintf(line, sizeof(line), "blob %llu: the same line again and again\n",
                          (unsigned long long)seed);
        for (size_t i = 0; i < n; i++)
            p[i] = (uint8_t)line[i % (size_t)ll];
    } else {
        fill_random(seed, p, n);
    }
}

#define MAX_TEST_BLOB 40000

static size_t blob_len(uint64_t seed)
{
    uint64_t s = seed * 7919 + 1;
    return 1 + (size_t)(splitmix(&s) % MAX_TEST_BLOB);
}

static uint8_t *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    uint8_t *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void file_write(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        fail_msg("cannot create %s: %s", path, strerror(errno));
    if (n)
        assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static size_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (size_t)st.st_size;
}

/* Regular files below dir/sub (recursively), full paths, sorted; temporary files skipped. */
struct paths {
    char **v;
    size_t n;
};

static void paths_walk(const char *dir, struct paths *ps)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *p;
        assert_true(asprintf(&p, "%s/%s", dir, de->d_name) > 0);
        struct stat st;
        assert_int_equal(lstat(p, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            paths_walk(p, ps);
            free(p);
        } else {
            ps->v = realloc(ps->v, (ps->n + 1) * sizeof(char *));
            assert_non_null(ps->v);
            ps->v[ps->n++] = p;
        }
    }
    closedir(d);
}

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static struct paths paths_list(const char *dir, const char *sub)
{
    struct paths ps = {0};
    char *p;
    assert_true(asprintf(&p, "%s/%s", dir, sub) > 0);
    paths_walk(p, &ps);
    free(p);
    if (ps.n)
        qsort(ps.v, ps.n, sizeof(char *), cmp_strp);
    return ps;
}

static void paths_free(struct paths *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        free(ps->v[i]);
    free(ps->v);
    ps->v = NULL;
    ps->n = 0;
}

/* The only file below dir/sub (asserts there is exactly one). */
static char *only_file(const char *dir, const char *sub)
{
    struct paths ps = paths_list(dir, sub);
    if (ps.n != 1)
        fail_msg("expected one file in %s/%s, found %zu", dir, sub, ps.n);
    char *p = ps.v[0];
    free(ps.v);
    return p;
}

/* Object name relative to the repository root, as storage and repo functions want it. */
static const char *rel(const char *dir, const char *path)
{
    size_t n = strlen(dir);
    assert_true(strncmp(path, dir, n) == 0 && path[n] == '/');
    return path + n + 1;
}

static struct repo *init_ok(const char *dir, const struct repo_init_opts *o)
{
    struct err e = ERR_INIT;
    struct repo *r = repo_init(dir, PW, o, &e);
    if (!r)
        fail_msg("repo_init %s: %s", dir, e.msg);
    return r;
}

static struct repo *open_ok(const char *dir, const char *pw)
{
    struct err e = ERR_INIT;
    struct repo *r = repo_open(dir, pw, &e);
    if (!r)
        fail_msg("repo_open %s: %s", dir, e.msg);
    return r;
}

/* Adds a blob, computing its id; returns repo_writer_add's result. Tests count new and known
 * blobs through repo_writer_get_stats; the result itself has a test of its own
 * (test_writer_add_result). */
static int add_ok(struct repo *r, struct repo_writer *w, int slot, const void *p, size_t n,
                  uint8_t id[32])
{
    struct err e = ERR_INIT;
    repo_chunk_id(r, p, n, id);
    int rc = repo_writer_add(w, slot, id, p, n, &e);
    if (rc < 0)
        fail_msg("repo_writer_add: %s", e.msg);
    return rc;
}

static void flush_ok(struct repo_writer *w)
{
    struct err e = ERR_INIT;
    if (repo_writer_flush(w, &e) != 0)
        fail_msg("repo_writer_flush: %s", e.msg);
}

static void assert_blob(struct repo *r, const uint8_t id[32], const void *want, size_t n)
{
    struct buf b = {0};
    struct err e = ERR_INIT;
    if (repo_blob_load(r, id, &b, &e) != 0)
        fail_msg("repo_blob_load: %s", e.msg);
    assert_int_equal(b.len, n);
    if (n)
        assert_memory_equal(b.data, want, n);
    assert_int_equal(repo_blob_size(r, id), (int64_t)n);
    buf_free(&b);
}

/* check_report with THREADS packs read at once (0: the number of CPUs). */
static json_t *check_report_threads(struct repo *r, bool read_data, int threads)
{
    struct repo_check_opts o = {.read_data = read_data, .threads = threads};
    json_t *rep = NULL;
    struct err e = ERR_INIT;
    if (repo_check(r, &o, &rep, &e) != 0)
        fail_msg("repo_check could not run: %s", e.msg);
    return rep;
}

static json_t *check_report(struct repo *r, bool read_data)
{
    return check_report_threads(r, read_data, 0);
}

static bool check_ok(struct repo *r, bool read_data)
{
    json_t *rep = check_report(r, read_data);
    bool ok = json_is_true(json_object_get(rep, "ok"));
    json_decref(rep);
    return ok;
}

static int cmp_id32(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

/* Number of distinct ids in v (sorts v). */
static size_t count_distinct(uint8_t (*v)[32], size_t n)
{
    if (!n)
        return 0;
    qsort(v, n, 32, cmp_id32);
    size_t d = 1;
    for (size_t i = 1; i < n; i++)
        if (memcmp(v[i - 1], v[i], 32) != 0)
            d++;
    return d;
}

/* A pack's trailer, read through the engine: entries of 44 bytes each. */
static void pack_trailer(struct repo *r, const char *dir, const char *path, struct buf *tr)
{
    const char *name = rel(dir, path);
    uint8_t pid[32];
    assert_int_equal(cx_unhex(strrchr(name, '/') + 1, pid, 32), 0);
    uint64_t size;
    struct err e = ERR_INIT;
    if (pack_read_trailer(r, name, tr, &size, &e) != 0)
        fail_msg("pack_read_trailer %s: %s", name, e.msg);
    assert_int_equal(tr->len % PACK_TRAILER_ENTRY_LEN, 0);
}

/* Version 2 pack layout, read independently of the engine (docs/REPOSITORY-FORMAT.md,
 * "Packs"): opens the sealed footer of the pack in raw and returns the trailer's length. */
static uint32_t pack_v2_trailer_len(struct repo *r, const uint8_t *raw, size_t len)
{
    assert_true(len >= PACK_HEADER_LEN + PACK_FOOTER_V2_LEN + CX_TAG_LEN);
    assert_memory_equal(raw, "CARISPK2", 8);
    assert_memory_equal(raw + len - 4, "CPKE", 4);
    uint8_t key[32], nonce[CX_NONCE_LEN], plain[4];
    struct err e = ERR_INIT;
    assert_int_equal(pack_derive_key(r, raw + 8, key, &e), 0);
    memset(nonce, 0xff, sizeof(nonce));
    static const char faad[] = "caris pack footer v2";
    if (cx_aead_open(key, nonce, faad, sizeof(faad) - 1, raw + len - PACK_FOOTER_V2_LEN, 20, plain,
                     &e) != 0)
        fail_msg("pack footer does not open: %s", e.msg);
    cx_wipe(key, sizeof(key));
    uint32_t tlen = load_u32le(plain);
    assert_true(tlen >= 4 + CX_TAG_LEN && tlen <= len - PACK_HEADER_LEN - PACK_FOOTER_V2_LEN);
    return tlen;
}

/* Builds a pack the way a writer of the given version would, from body (header and blobs) and
 * trailer entries; version 2: count is the trailer's entry count (UINT32_MAX: the number of
 * entries), followed by pad bytes of value pad_byte. body's magic is set to the version's. */
static void pack_build(struct repo *r, int version, const uint8_t *body, size_t blen,
                       const uint8_t *entries, size_t elen, uint32_t count, size_t pad,
                       uint8_t pad_byte, struct buf *pk)
{
    uint8_t key[32], nonce[CX_NONCE_LEN];
    struct err e = ERR_INIT;
    assert_int_equal(pack_derive_key(r, body + 8, key, &e), 0);
    pk->len = 0;
    buf_append(pk, body, blen);
    memcpy(pk->data, version == 1 ? "CARISPK1" : "CARISPK2", 8);
    struct buf t = {0};
    if (version == 2)
        buf_append_u32le(&t,
                         count == UINT32_MAX ? (uint32_t)(elen / PACK_TRAILER_ENTRY_LEN) : count);
    buf_append(&t, entries, elen);
    if (version == 2)
        for (size_t i = 0; i < pad; i++)
            buf_append_u8(&t, pad_byte);
    static const char aad1[] = "caris pack trailer v1", aad2[] = "caris pack trailer v2",
                      faad[] = "caris pack footer v2";
    if (version == 1)
        memset(nonce, 0xff, sizeof(nonce));
    else
        pack_nonce(blen, nonce);
    buf_reserve(pk, t.len + CX_TAG_LEN);
    const char *aad = version == 1 ? aad1 : aad2;
    assert_int_equal(
        cx_aead_seal(key, nonce, aad, strlen(aad), t.data, t.len, pk->data + pk->len, &e), 0);
    pk->len += t.len + CX_TAG_LEN;
    uint32_t tlen = (uint32_t)(t.len + CX_TAG_LEN);
    if (version == 1) {
        buf_append_u32le(pk, tlen);
    } else {
        uint8_t lb[4];
        store_u32le(lb, tlen);
        memset(nonce, 0xff, sizeof(nonce));
        buf_reserve(pk, 4 + CX_TAG_LEN);
        assert_int_equal(
            cx_aead_seal(key, nonce, faad, sizeof(faad) - 1, lb, 4, pk->data + pk->len, &e), 0);
        pk->len += 4 + CX_TAG_LEN;
    }
    buf_append(pk, "CPKE", 4);
    cx_wipe(key, sizeof(key));
    buf_free(&t);
}

/* Writes bytes as a pack named by their SHA-256 into the repository at dir; path receives
 * the file's path. */
static void pack_plant(const char *dir, const uint8_t *p, size_t n, char *path, size_t pathlen)
{
    uint8_t sum[32];
    char hex[65], dirp[PATH_MAX];
    cx_sha256(p, n, sum);
    cx_hex(sum, 32, hex);
    snprintf(dirp, sizeof(dirp), "%s/data", dir);
    mkdir(dirp, 0700);
    snprintf(dirp, sizeof(dirp), "%s/data/%.2s", dir, hex);
    mkdir(dirp, 0700);
    snprintf(path, pathlen, "%s/%s", dirp, hex);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n)
        assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* ---- 1. init, open, key slots -------------------------------------------------------- */

/* Saves a snapshot through a writer of its own (the entries are stored as a stream). */
static int save_snapshot(struct repo *r, json_t *summary, json_t *entries, char name[65],
                         struct err *e)
{
    struct repo_writer *w = repo_writer_new(r, 1);
    int rc = repo_snapshot_save(r, w, summary, entries, name, e);
    repo_writer_free(w);
    return rc;
}

static void test_init_open_keys(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct err e = ERR_INIT;
    assert_int_equal(repo_exists(dir, &e), 0);
    struct repo_init_opts o = FAST;
    o.label = "first";
    o.compression_level = 5;
    struct repo *r = init_ok(dir, &o);
    assert_int_equal(repo_exists(dir, &e), 1);
    uint8_t seed[32], cid1[32], cid2[32], bid[32];
    memcpy(seed, repo_chunker_seed(r), 32);
    repo_chunk_id(r, "abc", 3, cid1);
    struct repo_writer *w = repo_writer_new(r, 1);
    add_ok(r, w, 0, "payload", 7, bid);
    flush_ok(w);
    repo_writer_free(w);

    /* A second init on the same path is refused. */
    e = (struct err)ERR_INIT;
    assert_null(repo_init(dir, PW, &FAST, &e));
    assert_err(e, ERR_FAILURE);
    repo_close(r);

    /* Reopening gives back the same secrets and settings. */
    r = open_ok(dir, PW);
    assert_memory_equal(repo_chunker_seed(r), seed, 32);
    repo_chunk_id(r, "abc", 3, cid2);
    assert_memory_equal(cid1, cid2, 32);
    assert_int_equal(repo_compression_level(r), 5);
    assert_int_equal(json_array_size(repo_damage(r)), 0);
    assert_blob(r, bid, "payload", 7);

    e = (struct err)ERR_INIT;
    assert_null(repo_open(dir, "not the password", &e));
    assert_err(e, ERR_WRONG_KEY);
    e = (struct err)ERR_INIT;
    assert_null(repo_open(dir, "", &e));
    assert_err(e, ERR_WRONG_KEY);

    char *empty = tmpdir_new();
    e = (struct err)ERR_INIT;
    assert_null(repo_open(empty, PW, &e));
    assert_err(e, ERR_NOT_FOUND);
    tmpdir_free(empty);

    /* Key slots. */
    json_t *l = repo_key_list(r, &e);
    assert_non_null(l);
    assert_int_equal(json_array_size(l), 1);
    json_t *k0 = json_array_get(l, 0);
    char first[17];
    snprintf(first, sizeof(first), "%s", json_string_value(json_object_get(k0, "id")));
    assert_int_equal(strlen(first), 16);
    assert_true(json_is_true(json_object_get(k0, "current")));
    assert_string_equal(json_string_value(json_object_get(k0, "label")), "first");
    assert_non_null(json_string_value(json_object_get(k0, "created")));
    json_decref(l);

    char second[17];
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_key_add(r, "too short", "x", second, &e), -1);
    assert_err(e, ERR_CONFIG); /* like a short BACKUP_ENCRYPTION_KEY */
    e = (struct err)ERR_INIT;
    if (repo_key_add(r, PW2, "second", second, &e) != 0)
        fail_msg("repo_key_add: %s", e.msg);
    assert_string_not_equal(first, second);
    l = repo_key_list(r, &e);
    assert_int_equal(json_array_size(l), 2);
    size_t i;
    json_t *k;
    int ncurrent = 0;
    json_array_foreach(l, i, k)
    {
        const char *id = json_string_value(json_object_get(k, "id"));
        bool cur = json_is_true(json_object_get(k, "current"));
        ncurrent += cur;
        if (strcmp(id, first) == 0) {
            assert_true(cur);
        } else {
            assert_string_equal(id, second);
            assert_false(cur);
            assert_string_equal(json_string_value(json_object_get(k, "label")), "second");
        }
    }
    assert_int_equal(ncurrent, 1);
    json_decref(l);

    /* The key in use cannot be removed; ids that are not ours are refused. */
    char kpath[PATH_MAX];
    snprintf(kpath, sizeof(kpath), "%s/keys/%s", dir, first);
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_key_remove(r, first, &e), -1);
    assert_err(e, ERR_USAGE);
    assert_true(fs_exists(kpath));
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_key_remove(r, "../config", &e), -1);
    assert_err(e, ERR_USAGE);
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_key_remove(r, "0123456789abcdef", &e), -1);
    assert_err(e, ERR_NOT_FOUND);
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_key_remove(r, "", &e), -1); /* names the keys/ directory itself */
    assert_true(fs_exists(kpath));
    repo_close(r);

    /* The second key opens the same repository; then the first can go. */
    r = open_ok(dir, PW2);
    assert_blob(r, bid, "payload", 7);
    repo_chunk_id(r, "abc", 3, cid2);
    assert_memory_equal(cid1, cid2, 32);
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_key_remove(r, second, &e), -1);
    assert_err(e, ERR_USAGE);
    e = (struct err)ERR_INIT;
    if (repo_key_remove(r, first, &e) != 0)
        fail_msg("repo_key_remove: %s", e.msg);
    assert_false(fs_exists(kpath));
    l = repo_key_list(r, &e);
    assert_int_equal(json_array_size(l), 1);
    assert_true(json_is_true(json_object_get(json_array_get(l, 0), "current")));
    json_decref(l);
    repo_close(r);

    e = (struct err)ERR_INIT;
    assert_null(repo_open(dir, PW, &e));
    assert_err(e, ERR_WRONG_KEY);
    r = open_ok(dir, PW2);
    repo_close(r);
    tmpdir_free(dir);
}

/* ---- 2. blobs ------------------------------------------------------------------------ */

#define NTHREADS 2
#define NPER 2000

struct wjob {
    struct repo *r;
    struct repo_writer *w;
    int slot;
    uint64_t seeds[NPER];
    uint8_t ids[NPER][32];
    int failed;
    char msg[1100];
};

/* Every fifth blob is the same in both threads; after the 1500th, blobs repeat within a
 * thread. */
static uint64_t job_seed(int t, int i)
{
    if (i % 5 == 0)
        return 1000000 + (uint64_t)i;
    return (uint64_t)t * 100000 + (uint64_t)(i % 1500) + 1;
}

static void *writer_thread(void *arg)
{
    struct wjob *j = arg;
    uint8_t *buf = malloc(MAX_TEST_BLOB + 1);
    for (int i = 0; i < NPER && buf; i++) {
        uint64_t seed = job_seed(j->slot, i);
        size_t n = blob_len(seed);
        fill_blob(seed, buf, n);
        j->seeds[i] = seed;
        repo_chunk_id(j->r, buf, n, j->ids[i]);
        struct err e = ERR_INIT;
        int rc = repo_writer_add(j->w, j->slot, j->ids[i], buf, n, &e);
        if (rc < 0) {
            j->failed = 1;
            snprintf(j->msg, sizeof(j->msg), "%s", e.msg);
            break;
        }
    }
    free(buf);
    return NULL;
}

static void test_blobs_concurrent(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &FAST);
    struct repo_writer *w = repo_writer_new(r, NTHREADS);
    struct wjob *jobs = calloc(NTHREADS, sizeof(*jobs));
    assert_non_null(jobs);
    pthread_t th[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) {
        jobs[t].r = r;
        jobs[t].w = w;
        jobs[t].slot = t;
        assert_int_equal(pthread_create(&th[t], NULL, writer_thread, &jobs[t]), 0);
    }
    for (int t = 0; t < NTHREADS; t++) {
        pthread_join(th[t], NULL);
        if (jobs[t].failed)
            fail_msg("thread %d: %s", t, jobs[t].msg);
    }
    flush_ok(w);
    struct repo_writer_stats st;
    repo_writer_get_stats(w, &st);
    repo_writer_free(w);

    /* Expected figures, from the ids themselves. */
    uint8_t(*all)[32] = malloc(sizeof(uint8_t[32]) * NTHREADS * NPER);
    assert_non_null(all);
    for (int t = 0; t < NTHREADS; t++)
        memcpy(all[t * NPER], jobs[t].ids, sizeof(jobs[t].ids));
    size_t distinct = count_distinct(all, NTHREADS * NPER);
    uint64_t bytes_distinct = 0;
    {
        /* bytes of distinct blobs: first occurrence of each id */
        uint8_t(*seen)[32] = calloc(NTHREADS * NPER, 32);
        size_t nseen = 0;
        for (int t = 0; t < NTHREADS; t++)
            for (int i = 0; i < NPER; i++) {
                bool dup = false;
                for (size_t s = 0; s < nseen && !dup; s++)
                    dup = memcmp(seen[s], jobs[t].ids[i], 32) == 0;
                if (!dup) {
                    memcpy(seen[nseen++], jobs[t].ids[i], 32);
                    bytes_distinct += blob_len(jobs[t].seeds[i]);
                }
            }
        assert_int_equal(nseen, distinct);
        free(seen);
    }
    assert_true(distinct < NTHREADS * NPER - 400); /* the duplicates are real */
    assert_int_equal(st.blobs_new, distinct);
    assert_int_equal(st.blobs_new + st.blobs_known, NTHREADS * NPER);
    assert_int_equal(st.bytes_new, bytes_distinct);
    struct paths packs = paths_list(dir, "data");
    assert_int_equal(st.packs, packs.n);
    /* ~37 MB stored over two slots: at least one slot closed a 16 MiB pack while both were
     * adding, and the flush closed the two open ones. */
    assert_true(packs.n >= 3);
    printf("concurrent: %zu adds, %zu distinct blobs, %llu known, %zu packs, %llu bytes stored\n",
           (size_t)NTHREADS * NPER, distinct, (unsigned long long)st.blobs_known, packs.n,
           (unsigned long long)st.bytes_stored);
    repo_close(r);

    /* Reopened: every blob, from both threads, loads byte-identical. */
    r = open_ok(dir, PW);
    assert_int_equal(json_array_size(repo_damage(r)), 0);
    uint8_t *buf = malloc(MAX_TEST_BLOB + 1);
    for (int t = 0; t < NTHREADS; t++)
        for (int i = 0; i < NPER; i++) {
            size_t n = blob_len(jobs[t].seeds[i]);
            fill_blob(jobs[t].seeds[i], buf, n);
            assert_true(repo_has_blob(r, jobs[t].ids[i]));
            assert_blob(r, jobs[t].ids[i], buf, n);
        }
    free(buf);

    /* Stored once: the pack trailers list each distinct blob exactly once. */
    size_t ntr = 0;
    uint8_t(*trids)[32] = malloc(sizeof(uint8_t[32]) * NTHREADS * NPER);
    for (size_t p = 0; p < packs.n; p++) {
        struct buf tr = {0};
        pack_trailer(r, dir, packs.v[p], &tr);
        for (size_t k = 0; k < tr.len; k += PACK_TRAILER_ENTRY_LEN) {
            assert_true(ntr < (size_t)NTHREADS * NPER);
            memcpy(trids[ntr++], tr.data + k, 32);
        }
        buf_free(&tr);
    }
    assert_int_equal(ntr, distinct);
    assert_int_equal(count_distinct(trids, ntr), distinct);
    assert_true(check_ok(r, true));
    free(trids);
    free(all);
    paths_free(&packs);
    free(jobs);
    repo_close(r);
    tmpdir_free(dir);
}

/* ulen_flags of the blob id in the repository's packs (asserts it is found once). */
static uint32_t stored_flags(struct repo *r, const char *dir, const uint8_t id[32])
{
    struct paths packs = paths_list(dir, "data");
    uint32_t flags = 0;
    int found = 0;
    for (size_t p = 0; p < packs.n; p++) {
        struct buf tr = {0};
        pack_trailer(r, dir, packs.v[p], &tr);
        for (size_t k = 0; k < tr.len; k += PACK_TRAILER_ENTRY_LEN)
            if (memcmp(tr.data + k, id, 32) == 0) {
                flags = load_u32le(tr.data + k + 40);
                found++;
            }
        buf_free(&tr);
    }
    paths_free(&packs);
    assert_int_equal(found, 1);
    return flags;
}

static void test_blob_compression(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &FAST);
    size_t n = 1u << 20;
    uint8_t *text = malloc(n), *rnd = malloc(65536);
    fill_blob(3, text, n);
    fill_random(7, rnd, 65536);

    uint8_t tid[32], rid[32], cid[32];
    struct repo_writer *w = repo_writer_new(r, 1);
    add_ok(r, w, 0, text, n, tid);
    flush_ok(w);
    struct repo_writer_stats st;
    repo_writer_get_stats(w, &st);
    repo_writer_free(w);
    char *pack = only_file(dir, "data");
    /* Stored compressed: the whole pack (padded to the smallest pack size) is far smaller than
     * the blob. */
    assert_int_equal(file_size(pack), PACK_MIN_SIZE);
    assert_true(st.bytes_stored < n / 8);
    assert_int_equal(st.bytes_new, n);
    free(pack);
    assert_true(stored_flags(r, dir, tid) & ULEN_COMPRESSED);

    /* Random bytes do not compress: stored raw. */
    w = repo_writer_new(r, 1);
    add_ok(r, w, 0, rnd, 65536, rid);
    flush_ok(w);
    repo_writer_free(w);
    assert_int_equal(stored_flags(r, dir, rid), 65536);

    /* Compression off for the session: even text is stored raw. */
    repo_set_compression_level(r, 0);
    text[0] ^= 1;
    w = repo_writer_new(r, 1);
    add_ok(r, w, 0, text, n, cid);
    flush_ok(w);
    repo_writer_free(w);
    assert_int_equal(stored_flags(r, dir, cid), n);
    repo_close(r);

    r = open_ok(dir, PW);
    assert_int_equal(repo_compression_level(r), 3); /* the session's change was not saved */
    assert_blob(r, cid, text, n);
    text[0] ^= 1;
    assert_blob(r, tid, text, n);
    assert_blob(r, rid, rnd, 65536);
    assert_true(check_ok(r, true));
    repo_close(r);
    free(text);
    free(rnd);
    tmpdir_free(dir);
}

static void test_blob_edge_cases(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &FAST);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint8_t empty_id[32], one_id[32], unknown[32];
    static const uint8_t nothing[1];
    add_ok(r, w, 0, nothing, 0, empty_id);
    add_ok(r, w, 0, "x", 1, one_id);
    add_ok(r, w, 0, "x", 1, one_id);
    struct repo_writer_stats st;
    repo_writer_get_stats(w, &st);
    assert_int_equal(st.blobs_new, 2);
    assert_int_equal(st.blobs_known, 1);
    /* Larger than any chunk: refused before the data is touched. */
    struct err e = ERR_INIT;
    uint8_t big_id[32] = {1};
    assert_int_equal(repo_writer_add(w, 0, big_id, nothing, (size_t)REPO_MAX_BLOB + 1, &e), -1);
    assert_true(err_is_set(&e));
    flush_ok(w);
    repo_writer_free(w);
    repo_close(r);

    r = open_ok(dir, PW);
    assert_blob(r, empty_id, NULL, 0);
    assert_blob(r, one_id, "x", 1);
    assert_false(repo_has_blob(r, big_id));
    memset(unknown, 0xab, sizeof(unknown));
    assert_false(repo_has_blob(r, unknown));
    assert_int_equal(repo_blob_size(r, unknown), -1);
    char pname[65];
    assert_null(repo_blob_pack(r, unknown, pname));
    assert_non_null(repo_blob_pack(r, one_id, pname));
    assert_int_equal(strlen(pname), 64);
    struct buf b = {0};
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_blob_load(r, unknown, &b, &e), -1);
    assert_err(e, ERR_DAMAGE);
    buf_free(&b);
    /* A flush with nothing written writes nothing. */
    w = repo_writer_new(r, 2);
    flush_ok(w);
    repo_writer_free(w);
    struct paths idx = paths_list(dir, "index");
    assert_int_equal(idx.n, 1);
    paths_free(&idx);
    repo_close(r);
    tmpdir_free(dir);
}

/* repo.h: "Returns 1 when stored, 0 when known, -1 on error." */
static void test_writer_add_result(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint8_t id[32];
    int first = add_ok(r, w, 0, "new blob", 8, id);
    int again = add_ok(r, w, 0, "new blob", 8, id);
    flush_ok(w);
    repo_writer_free(w);
    repo_close(r);
    tmpdir_free(dir);
    assert_int_equal(again, 0);
    if (first != 1)
        fail_msg("repo_writer_add returned %d for a blob it stored (repo.h promises 1)", first);
}

/* A pack whose file has vanished is damage to the repository (exit 4, "run check"), not
 * "no such backup" (ERR_NOT_FOUND, exit 7). */
static void test_missing_pack_is_damage(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint8_t id[32];
    add_ok(r, w, 0, "some data", 9, id);
    flush_ok(w);
    repo_writer_free(w);
    repo_close(r);
    char *pack = only_file(dir, "data");
    assert_int_equal(unlink(pack), 0);
    free(pack);

    /* Deduplication must not trust an index entry whose pack is gone: the blob is absent
     * (with a warning naming the pack), so the next writer stores it again; check still
     * reports the pack. */
    r = open_ok(dir, PW);
    assert_false(repo_has_blob(r, id));
    assert_int_equal(json_array_size(repo_warnings(r)), 1);
    assert_non_null(
        strstr(json_string_value(json_object_get(json_array_get(repo_warnings(r), 0), "message")),
               "missing"));
    assert_false(check_ok(r, false)); /* "pack listed in the index is missing" */
    struct buf b = {0};
    struct err e = ERR_INIT;
    assert_int_equal(repo_blob_load(r, id, &b, &e), -1);
    assert_int_not_equal(e.code, ERR_NONE);
    w = repo_writer_new(r, 1);
    uint8_t id2[32];
    assert_int_equal(add_ok(r, w, 0, "some data", 9, id2), 1); /* stored again */
    assert_memory_equal(id, id2, 32);
    flush_ok(w);
    repo_writer_free(w);
    repo_close(r);

    /* The old index still lists the lost pack; whichever order the index files are read in,
     * its entries are never taken, so the blob is found in its new pack. */
    r = open_ok(dir, PW);
    assert_true(repo_has_blob(r, id));
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_blob_load(r, id, &b, &e), 0);
    assert_memory_equal(b.data, "some data", 9);
    assert_int_equal(json_array_size(repo_warnings(r)), 1); /* the old index still names it */
    buf_free(&b);
    repo_close(r);
    tmpdir_free(dir);
}

/* Flips one bit of the file at off. */
static void flip_at(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t x;
    assert_int_equal(pread(fd, &x, 1, off), 1);
    x ^= 1;
    assert_int_equal(pwrite(fd, &x, 1, off), 1);
    close(fd);
}

/* A copy found damaged and recorded (repo_bad_blobs_save) is never deduplicated against:
 * the next writer stores the blob again, and from then on every open takes the new copy,
 * whichever index file it reads first. The entry-number set keeps its order through inserts
 * and removals. */
static void test_damaged_copy_not_deduplicated(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint8_t a[32], b[32];
    add_ok(r, w, 0, "first blob, the damaged one", 27, a); /* at offset 40 */
    add_ok(r, w, 0, "second blob, sound", 18, b);
    flush_ok(w);
    repo_writer_free(w);
    repo_close(r);
    char *pack = only_file(dir, "data");
    flip_at(pack, 45); /* in the first blob's ciphertext */
    free(pack);

    r = open_ok(dir, PW);
    assert_true(repo_has_blob(r, a)); /* nothing known yet */
    struct buf out = {0};
    struct err e = ERR_INIT;
    assert_int_equal(repo_blob_load(r, a, &out, &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    size_t saved = 99;
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_bad_blobs_save(r, "test", &saved, &e), 0);
    assert_int_equal(saved, 1);
    assert_false(repo_has_blob(r, a)); /* this handle knows at once */
    assert_true(repo_has_blob(r, b));
    assert_int_equal(repo_bad_blobs_save(r, "test", &saved, &e), 0);
    assert_int_equal(saved, 0); /* nothing new */
    repo_close(r);

    r = open_ok(dir, PW);
    assert_false(repo_has_blob(r, a)); /* from the record */
    assert_true(repo_has_blob(r, b));
    w = repo_writer_new(r, 1);
    uint8_t a2[32], b2[32];
    assert_int_equal(add_ok(r, w, 0, "first blob, the damaged one", 27, a2), 1);
    assert_int_equal(add_ok(r, w, 0, "second blob, sound", 18, b2), 0);
    flush_ok(w);
    repo_writer_free(w);
    assert_true(repo_has_blob(r, a));
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_blob_load(r, a, &out, &e), 0);
    repo_close(r);

    r = open_ok(dir, PW);
    assert_true(repo_has_blob(r, a));
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_blob_load(r, a, &out, &e), 0);
    assert_memory_equal(out.data, "first blob, the damaged one", 27);

    pthread_mutex_lock(&r->mu);
    static const uint32_t order[] = {7, 3, 9, 1, 5, 3, 0};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        bad_entry_set_locked(r, order[i], true);
    bad_entry_set_locked(r, 5, false);
    bad_entry_set_locked(r, 4, false); /* not there: nothing */
    bool want[10] = {[0] = true, [1] = true, [3] = true, [7] = true, [9] = true};
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(bad_entry_is_locked(r, i), want[i]);
    assert_int_equal(r->bad_entries.n, 5);
    /* many, removed in another order: the set stays exact (its deletions shift runs) */
    for (uint32_t i = 100; i < 5100; i++)
        bad_entry_set_locked(r, 1000 + i * 7919u % 100003u, true);
    for (uint32_t i = 100; i < 5100; i += 2)
        bad_entry_set_locked(r, 1000 + i * 7919u % 100003u, false);
    for (uint32_t i = 100; i < 5100; i++)
        if (bad_entry_is_locked(r, 1000 + i * 7919u % 100003u) != (i % 2 == 1))
            fail_msg("entry %u: wrong membership", 1000 + i * 7919u % 100003u);
    assert_int_equal(r->bad_entries.n, 5 + 2500);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(bad_entry_is_locked(r, i), want[i]);
    pthread_mutex_unlock(&r->mu);
    buf_free(&out);
    repo_close(r);
    tmpdir_free(dir);
}

/* A handle opened before a blob was recorded damaged and stored again (a prune waiting for
 * its lock, the daemon) learns the record when it reads the index again: it takes the sound
 * copy, not the damaged one, even when the damaged copy's index file is read first (which is
 * what happened without the record: prune then deleted the sound copy). The order of the
 * index files follows their names (hashes of random bytes): scenarios are made until the
 * damaged copy's comes first, at most 64 (each has about one chance in two). */
static void test_damage_record_reloaded(void **state)
{
    (void)state;
    bool tried = false;
    for (int round = 0; round < 64 && !tried; round++) {
        char *dir = tmpdir_new();
        struct repo *r = init_ok(dir, &TINY);
        struct repo_writer *w = repo_writer_new(r, 1);
        uint8_t a[32], a2[32];
        add_ok(r, w, 0, "the blob that is damaged, then healed", 37, a); /* offset 40 */
        flush_ok(w);
        repo_writer_free(w);
        repo_close(r);
        char *pack = only_file(dir, "data");
        char *first_index = only_file(dir, "index");
        flip_at(pack, 45);

        struct repo *early = open_ok(dir, PW); /* knows nothing of what follows */
        r = open_ok(dir, PW);
        struct buf out = {0};
        struct err e = ERR_INIT;
        assert_int_equal(repo_blob_load(r, a, &out, &e), -1);
        size_t saved = 0;
        assert_int_equal(repo_bad_blobs_save(r, "test", &saved, &e), 0);
        assert_int_equal(saved, 1);
        w = repo_writer_new(r, 1);
        assert_int_equal(add_ok(r, w, 0, "the blob that is damaged, then healed", 37, a2), 1);
        flush_ok(w);
        repo_writer_free(w);
        repo_close(r);
        struct paths ix = paths_list(dir, "index");
        assert_int_equal(ix.n, 2);
        if (strcmp(ix.v[0], first_index) == 0) { /* the damaged copy's index is read first */
            tried = true;
            e = (struct err)ERR_INIT;
            assert_int_equal(repo_refresh(early, &e), 0);
            assert_true(repo_has_blob(early, a));
            e = (struct err)ERR_INIT;
            if (repo_blob_load(early, a, &out, &e) != 0)
                fail_msg("after a refresh the handle read the damaged copy: %s", e.msg);
        }
        paths_free(&ix);
        buf_free(&out);
        repo_close(early);
        free(pack);
        free(first_index);
        tmpdir_free(dir);
    }
    assert_true(tried);
}

/* Damage on the scale of a failing disk: 60,000 blobs recorded damaged at once (15 record
 * files) are all marked at the next open, and none is deduplicated against. (Kept sets and
 * sorts, not sorted inserts: a quadratic mark made such an open hang.) */
static void test_damage_many(void **state)
{
    (void)state;
    enum { N = 60000 };
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint8_t(*ids)[32] = calloc(N, 32);
    assert_non_null(ids);
    for (uint32_t i = 0; i < N; i++) {
        char b[16];
        snprintf(b, sizeof(b), "blob %u", i);
        add_ok(r, w, 0, b, strlen(b), ids[i]);
    }
    flush_ok(w);
    repo_writer_free(w);
    for (uint32_t i = 0; i < N; i++) {
        uint32_t pack, off;
        assert_true(repo_blob_where(r, ids[i], &pack, &off));
        bad_blob_note(r, pack, ids[i]);
        bad_blob_note(r, pack, ids[i]); /* noted twice, recorded once */
    }
    size_t saved = 0;
    struct err e = ERR_INIT;
    assert_int_equal(repo_bad_blobs_save(r, "test", &saved, &e), 0);
    assert_int_equal(saved, N);
    repo_close(r);
    struct paths recs = paths_list(dir, "records/bad-blob");
    assert_int_equal(recs.n, (N + 4095) / 4096);
    paths_free(&recs);
    r = open_ok(dir, PW);
    assert_int_equal(r->bad_entries.n, N);
    for (uint32_t i = 0; i < N; i++)
        if (repo_has_blob(r, ids[i]))
            fail_msg("blob %u recorded damaged is deduplicated against", i);
    repo_close(r);
    free(ids);
    tmpdir_free(dir);
}

/* ---- 3. nonce uniqueness ------------------------------------------------------------- */

struct nonce_use {
    uint8_t salt[32];
    uint8_t nonce[CX_NONCE_LEN];
};

static int cmp_nonce_use(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(struct nonce_use));
}

struct extent {
    uint32_t off, clen;
};

static int cmp_extent(const void *a, const void *b)
{
    const struct extent *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static void test_nonce_uniqueness(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &FAST);
    uint8_t *buf = malloc(1u << 20);
    uint8_t id[32];
    /* Five sessions of two slots each: many small packs, each with blobs at the same offsets
     * as the others (so the same nonces), under different keys. */
    size_t nblobs = 0, npacks = 0, nindex = 0;
    for (int s = 0; s < 5; s++) {
        struct repo_writer *w = repo_writer_new(r, 2);
        for (int i = 0; i < 60; i++) {
            uint64_t seed = (uint64_t)s * 1000 + (uint64_t)i + 1;
            size_t n = blob_len(seed);
            fill_blob(seed, buf, n);
            add_ok(r, w, i % 2, buf, n, id);
        }
        flush_ok(w);
        struct repo_writer_stats st;
        repo_writer_get_stats(w, &st);
        assert_int_equal(st.blobs_new, 60);
        assert_int_equal(st.packs, 1); /* the two slots' open packs, merged at flush */
        nblobs += st.blobs_new;
        npacks += st.packs;
        nindex++;
        repo_writer_free(w);
    }
    /* One slot running past 16 MiB: two packs from one slot. */
    struct repo_writer *w = repo_writer_new(r, 1);
    for (int i = 0; i < 18; i++) {
        fill_random(777 + (uint64_t)i, buf, 1u << 20);
        add_ok(r, w, 0, buf, 1u << 20, id);
    }
    flush_ok(w);
    struct repo_writer_stats st;
    repo_writer_get_stats(w, &st);
    assert_int_equal(st.packs, 2);
    nblobs += st.blobs_new;
    npacks += st.packs;
    nindex++;
    repo_writer_free(w);
    /* Snapshots, all three with the same content: the files still differ (fresh salt). Their
     * entries are a stream stored through the writer ("[]": one blob): the first save stores
     * it (one pack, one index file), the others find it known and write neither. */
    json_t *sum = json_pack("{s:s, s:s}", "id", "nonce-test", "started", "2024-01-01T00:00:00Z");
    json_t *ent = json_array();
    char names[3][65];
    struct err e = ERR_INIT;
    for (int k = 0; k < 3; k++) {
        w = repo_writer_new(r, 1);
        if (repo_snapshot_save(r, w, sum, ent, names[k], &e) != 0)
            fail_msg("repo_snapshot_save: %s", e.msg);
        repo_writer_get_stats(w, &st);
        assert_int_equal(st.blobs_new, k == 0 ? 1 : 0);
        assert_int_equal(st.blobs_known, k == 0 ? 0 : 1);
        assert_int_equal(st.packs, k == 0 ? 1 : 0);
        nblobs += st.blobs_new;
        npacks += st.packs;
        nindex += st.packs > 0;
        repo_writer_free(w);
    }
    assert_string_not_equal(names[0], names[1]);
    assert_string_not_equal(names[1], names[2]);
    assert_string_not_equal(names[0], names[2]);
    json_decref(sum);
    json_decref(ent);
    repo_close(r);
    free(buf);

    r = open_ok(dir, PW);
    struct paths packs = paths_list(dir, "data");
    assert_int_equal(packs.n, npacks); /* 5 x 1 + 2 + 1 */
    struct nonce_use *uses = calloc(nblobs + 2 * packs.n + 1, sizeof(*uses));
    uint8_t(*salts)[32] = calloc(packs.n + 64, 32);
    size_t nuses = 0, nsalts = 0;
    struct buf plain = {0}, out = {0};
    for (size_t p = 0; p < packs.n; p++) {
        size_t len;
        uint8_t *raw = file_read(packs.v[p], &len);
        /* Version 2: padded to a size from pad_size; the trailer length sealed in the footer
         * under the all-ones nonce; the trailer under its own offset as nonce. */
        assert_int_equal(pad_size(len, PACK_MIN_SIZE), len);
        uint32_t tlen = pack_v2_trailer_len(r, raw, len);
        const uint8_t *salt = raw + 8;
        memcpy(salts[nsalts++], salt, 32);
        uint8_t key[32], tnonce[CX_NONCE_LEN];
        e = (struct err)ERR_INIT;
        assert_int_equal(pack_derive_key(r, salt, key, &e), 0);
        size_t tstart = len - PACK_FOOTER_V2_LEN - tlen;
        memset(tnonce, 0, sizeof(tnonce));
        for (int b = 0; b < 8; b++)
            tnonce[4 + b] = (uint8_t)((uint64_t)tstart >> (56 - 8 * b));
        plain.len = 0;
        buf_reserve(&plain, tlen);
        static const char taad[] = "caris pack trailer v2";
        assert_int_equal(
            cx_aead_open(key, tnonce, taad, sizeof(taad) - 1, raw + tstart, tlen, plain.data, &e),
            0);
        size_t tplain = tlen - CX_TAG_LEN;
        size_t nent = load_u32le(plain.data);
        assert_true(nent > 0);
        assert_true(4 + nent * 44 <= tplain);
        for (size_t k = 4 + nent * 44; k < tplain; k++)
            assert_int_equal(plain.data[k], 0); /* the padding */
        memmove(plain.data, plain.data + 4, nent * 44);
        /* the trailer's and the footer's nonces are (salt, nonce) uses too */
        struct nonce_use *tu = &uses[nuses++];
        memcpy(tu->salt, salt, 32);
        memcpy(tu->nonce, tnonce, CX_NONCE_LEN);
        tu = &uses[nuses++];
        memcpy(tu->salt, salt, 32);
        memset(tu->nonce, 0xff, CX_NONCE_LEN);
        struct extent *ex = calloc(nent, sizeof(*ex));
        uint8_t(*tids)[32] = calloc(nent, 32);
        for (size_t k = 0; k < nent; k++) {
            const uint8_t *te = plain.data + 44 * k;
            memcpy(tids[k], te, 32);
            ex[k].off = load_u32le(te + 32);
            ex[k].clen = load_u32le(te + 36);
        }
        for (size_t k = 0; k < nent; k++) {
            uint32_t off = ex[k].off, clen = ex[k].clen;
            uint32_t ulf = load_u32le(plain.data + 44 * k + 40);
            assert_true(off >= PACK_HEADER_LEN && clen >= CX_TAG_LEN);
            assert_true((uint64_t)off + clen <= tstart);
            /* nonce = 0x00000000 || offset as u64 big-endian (docs/REPOSITORY-FORMAT.md) */
            struct nonce_use *u = &uses[nuses++];
            memcpy(u->salt, salt, 32);
            memset(u->nonce, 0, sizeof(u->nonce));
            for (int b = 0; b < 8; b++)
                u->nonce[4 + b] = (uint8_t)((uint64_t)off >> (56 - 8 * b));
            /* ... and the blob really was sealed under that nonce. */
            out.len = 0;
            buf_reserve(&out, clen);
            e = (struct err)ERR_INIT;
            if (cx_aead_open(key, u->nonce, tids[k], 32, raw + off, clen, out.data, &e) != 0)
                fail_msg("blob at offset %u of %s does not open under nonce = offset", off,
                         packs.v[p]);
            out.len = clen - CX_TAG_LEN;
            if (ulf & ULEN_COMPRESSED) {
                size_t ul = ulf & ULEN_MASK;
                uint8_t *d = malloc(ul + 1);
                assert_int_equal(ZSTD_decompress(d, ul, out.data, out.len), ul);
                uint8_t chk[32];
                repo_chunk_id(r, d, ul, chk);
                assert_memory_equal(chk, tids[k], 32);
                free(d);
            } else {
                assert_int_equal(out.len, ulf);
                uint8_t chk[32];
                repo_chunk_id(r, out.data, out.len, chk);
                assert_memory_equal(chk, tids[k], 32);
            }
        }
        /* Ciphertexts of one pack never overlap. */
        qsort(ex, nent, sizeof(*ex), cmp_extent);
        for (size_t k = 1; k < nent; k++)
            assert_true((uint64_t)ex[k - 1].off + ex[k - 1].clen <= ex[k].off);
        cx_wipe(key, sizeof(key));
        free(ex);
        free(tids);
        free(raw);
    }
    assert_int_equal(nuses, nblobs + 2 * packs.n);
    qsort(uses, nuses, sizeof(*uses), cmp_nonce_use);
    for (size_t k = 1; k < nuses; k++)
        if (memcmp(&uses[k - 1], &uses[k], sizeof(*uses)) == 0)
            fail_msg("(pack salt, nonce) pair used twice");

    /* Containers: config, every index and snapshot file has its own salt, none equal to a
     * pack's. */
    const char *subs[] = {"index", "snapshots"};
    size_t ncontainers = 0;
    for (int s = 0; s < 3; s++) {
        struct paths ps = {0};
        if (s < 2) {
            ps = paths_list(dir, subs[s]);
        } else {
            ps.v = calloc(1, sizeof(char *));
            assert_true(asprintf(&ps.v[0], "%s/config", dir) > 0);
            ps.n = 1;
        }
        for (size_t k = 0; k < ps.n; k++) {
            size_t len;
            uint8_t *raw = file_read(ps.v[k], &len);
            assert_true(len >= CONTAINER_OVERHEAD);
            assert_memory_equal(raw, "CARIS", 5);
            memcpy(salts[nsalts++], raw + 8, 32);
            ncontainers++;
            free(raw);
        }
        paths_free(&ps);
    }
    /* 7 index files (one per flush that wrote a pack), 3 snapshots, config */
    assert_int_equal(nindex, 7);
    assert_int_equal(ncontainers, nindex + 3 + 1);
    assert_int_equal(count_distinct(salts, nsalts), nsalts);
    printf("nonces: %zu blobs in %zu packs (+ a trailer and a footer each), %zu containers: all "
           "(salt, nonce) pairs and salts distinct\n",
           nblobs, packs.n, ncontainers);
    buf_free(&plain);
    buf_free(&out);
    free(uses);
    free(salts);
    paths_free(&packs);
    repo_close(r);
    tmpdir_free(dir);
}

/* ---- 4. hostile input ---------------------------------------------------------------- */

#define HB 4         /* blobs of the snapshot's file entry, in the data pack */
#define HBE (HB + 1) /* and the snapshot's entries (one chunk), in a metadata pack */

enum target {
    T_CONFIG,
    T_INDEX,
    T_PACK,
    T_ORPHAN_PACK,
    T_META_PACK,
    T_ORPHAN_META,
    T_SNAPSHOT,
    T_KEY
};
static const char *const target_name[] = {"config",    "index file",  "pack",     "orphan pack",
                                          "meta pack", "orphan meta", "snapshot", "key slot"};

/* Is blob i in the file that t damages? */
static bool damaged_pack_holds(enum target t, int i)
{
    return i < HB ? t == T_PACK || t == T_ORPHAN_PACK : t == T_META_PACK || t == T_ORPHAN_META;
}

struct hostile {
    char *dir;
    uint8_t ids[HBE][32]; /* [HB]: the entries stream's only chunk */
    uint8_t *data[HBE];
    size_t len[HBE];
    char snap[65];
    const char *cur_snap; /* the snapshot's name as the probe looks it up */
    json_t *summary, *entries;
    char *config, *index, *pack, *meta_pack, *snapfile, *key;
    unsigned long probes, refused, reported;
    unsigned long entries_lost; /* probes where the snapshot's entries no longer load */
};

/* A snapshot file's entries reference (second part of its payload), read independently of
 * the loader: docs/REPOSITORY-FORMAT.md and the comment in src/repo/snapshot.c. */
static json_t *snapshot_ref(struct repo *r, const char *path)
{
    size_t len;
    uint8_t *raw = file_read(path, &len);
    struct buf payload = {0};
    struct err e = ERR_INIT;
    if (container_open(r, 'S', raw, len, &payload, &e) != 0)
        fail_msg("snapshot %s: %s", path, e.msg);
    free(raw);
    assert_true(payload.len >= 4);
    uint32_t l1 = load_u32le(payload.data);
    assert_true(l1 <= payload.len - 4);
    const uint8_t *z = payload.data + 4 + l1;
    size_t zlen = payload.len - 4 - l1;
    unsigned long long n = ZSTD_getFrameContentSize(z, zlen);
    assert_true(n != ZSTD_CONTENTSIZE_ERROR && n != ZSTD_CONTENTSIZE_UNKNOWN && n < (1u << 20));
    char *text = malloc((size_t)n + 1);
    assert_int_equal(ZSTD_decompress(text, (size_t)n, z, zlen), n);
    json_error_t je;
    json_t *ref = json_loadb(text, (size_t)n, 0, &je);
    if (!json_is_object(ref))
        fail_msg("snapshot %s: entries reference is not a JSON object: %.*s", path, (int)n, text);
    free(text);
    buf_free(&payload);
    return ref;
}

static void hostile_setup(struct hostile *h)
{
    memset(h, 0, sizeof(*h));
    h->dir = tmpdir_new();
    struct repo *r = init_ok(h->dir, &TINY);
    size_t lens[HB] = {300, 2000, 1, 50};
    struct repo_writer *w = repo_writer_new(r, 1);
    json_t *chunks = json_array();
    for (int i = 0; i < HB; i++) {
        h->len[i] = lens[i];
        h->data[i] = malloc(lens[i]);
        fill_blob(i == 1 ? 3 : 100 + (uint64_t)i, h->data[i], lens[i]); /* blob 1 compresses */
        add_ok(r, w, 0, h->data[i], lens[i], h->ids[i]);
        char hex[65];
        cx_hex(h->ids[i], 32, hex);
        json_array_append_new(chunks, json_pack("[s, I]", hex, (json_int_t)lens[i]));
    }
    h->summary = json_pack("{s:s, s:s}", "id", "hostile-1", "started", "2024-01-01T00:00:00.000Z");
    h->entries = json_pack("[{s:s, s:s, s:o}]", "path", "f", "type", "file", "chunks", chunks);
    struct err e = ERR_INIT;
    /* Through the same writer: the file's blobs in a data pack, the entries in a metadata
     * pack of their own, one index file listing both. */
    assert_int_equal(repo_snapshot_save(r, w, h->summary, h->entries, h->snap, &e), 0);
    struct repo_writer_stats st;
    repo_writer_get_stats(w, &st);
    assert_int_equal(st.blobs_new, HBE);
    assert_int_equal(st.packs, 2);
    repo_writer_free(w);
    h->cur_snap = h->snap;
    assert_true(asprintf(&h->config, "%s/config", h->dir) > 0);
    h->index = only_file(h->dir, "index");
    h->snapfile = only_file(h->dir, "snapshots");
    h->key = only_file(h->dir, "keys");
    /* The entries reference, read independently of the loader: one chunk, which is the
     * entries JSON, with its SHA-256 and length. */
    json_t *ref = snapshot_ref(r, h->snapfile);
    json_t *rchunks = json_object_get(ref, "chunks");
    assert_int_equal(json_array_size(rchunks), 1);
    assert_int_equal(
        cx_unhex(json_string_value(json_array_get(json_array_get(rchunks, 0), 0)), h->ids[HB], 32),
        0);
    struct buf b = {0};
    if (repo_blob_load(r, h->ids[HB], &b, &e) != 0)
        fail_msg("entries blob: %s", e.msg);
    assert_int_equal(json_integer_value(json_array_get(json_array_get(rchunks, 0), 1)), b.len);
    assert_int_equal(json_integer_value(json_object_get(ref, "bytes")), b.len);
    uint8_t sum[32];
    char hex[65];
    cx_sha256(b.data, b.len, sum);
    cx_hex(sum, 32, hex);
    assert_string_equal(json_string_value(json_object_get(ref, "sha256")), hex);
    json_t *back = json_loadb((const char *)b.data, b.len, 0, NULL);
    assert_true(json_equal(back, h->entries));
    json_decref(back);
    json_decref(ref);
    h->len[HB] = b.len;
    h->data[HB] = malloc(b.len);
    memcpy(h->data[HB], b.data, b.len);
    buf_free(&b);
    /* Which pack is which. */
    char pk[65], mpk[65];
    assert_non_null(repo_blob_pack(r, h->ids[0], pk));
    for (int i = 1; i < HB; i++)
        assert_string_equal(repo_blob_pack(r, h->ids[i], hex), pk);
    assert_non_null(repo_blob_pack(r, h->ids[HB], mpk));
    assert_string_not_equal(pk, mpk);
    assert_true(asprintf(&h->pack, "%s/data/%.2s/%s", h->dir, pk, pk) > 0);
    assert_true(asprintf(&h->meta_pack, "%s/data/%.2s/%s", h->dir, mpk, mpk) > 0);
    struct paths packs = paths_list(h->dir, "data");
    assert_int_equal(packs.n, 2);
    assert_true(strcmp(packs.v[0], h->pack) == 0 || strcmp(packs.v[1], h->pack) == 0);
    assert_true(strcmp(packs.v[0], h->meta_pack) == 0 || strcmp(packs.v[1], h->meta_pack) == 0);
    paths_free(&packs);
    repo_close(r);
}

static void hostile_free(struct hostile *h)
{
    for (int i = 0; i < HBE; i++)
        free(h->data[i]);
    json_decref(h->summary);
    json_decref(h->entries);
    free(h->config);
    free(h->index);
    free(h->pack);
    free(h->meta_pack);
    free(h->snapfile);
    free(h->key);
    tmpdir_free(h->dir);
}

/* Opens the repository after one of its files was damaged. Asserts: no crash (ASan watches),
 * the damage is reported (open refused with ERR_DAMAGE, repo_damage, a snapshot load error or
 * a failing check), and nothing is passed off as valid with different content. */
static void probe(struct hostile *h, enum target t, const char *what)
{
    h->probes++;
    struct err e = ERR_INIT;
    struct repo *r = repo_open(h->dir, PW, &e);
    if (!r) {
        h->refused++;
        if (t == T_KEY) {
            if (e.code != ERR_WRONG_KEY && e.code != ERR_DAMAGE)
                fail_msg("%s: open fails with %s: %s", what, err_code_name(e.code), e.msg);
            return;
        }
        if (t != T_CONFIG)
            fail_msg("%s: the repository no longer opens: %s", what, e.msg);
        if (e.code != ERR_DAMAGE)
            fail_msg("%s: open fails with %s, not DAMAGE: %s", what, err_code_name(e.code), e.msg);
        return;
    }
    if (t == T_CONFIG)
        fail_msg("%s: the repository opens with a damaged config", what);
    bool reported = json_array_size(repo_damage(r)) > 0;
    if (t == T_INDEX && !reported)
        fail_msg("%s: damaged index file not reported by repo_damage", what);

    struct buf b = {0};
    bool entries_blob_ok = false;
    for (int i = 0; i < HBE; i++) {
        e = (struct err)ERR_INIT;
        if (repo_blob_load(r, h->ids[i], &b, &e) == 0) {
            if (b.len != h->len[i] || memcmp(b.data, h->data[i], b.len) != 0)
                fail_msg("%s: blob %d loads with different content", what, i);
            entries_blob_ok |= i == HB;
        } else if (e.code != ERR_DAMAGE) {
            fail_msg("%s: blob %d fails with %s, not DAMAGE: %s", what, i, err_code_name(e.code),
                     e.msg);
        } else if (!damaged_pack_holds(t, i)) {
            /* Its pack is intact: the blob must still load (through the trailer if needed). */
            fail_msg("%s: intact blob %d no longer loads: %s", what, i, e.msg);
        }
    }
    buf_free(&b);

    /* The summary alone needs the snapshot file only. */
    json_t *s = NULL, *en = NULL;
    e = (struct err)ERR_INIT;
    if (repo_snapshot_load(r, h->cur_snap, &s, NULL, &e) == 0) {
        if (t == T_SNAPSHOT)
            fail_msg("%s: damaged snapshot's summary loads", what);
        if (!json_equal(s, h->summary))
            fail_msg("%s: snapshot summary loads with different content", what);
        json_decref(s);
    } else {
        if (t != T_SNAPSHOT)
            fail_msg("%s: intact snapshot's summary no longer loads: %s", what, e.msg);
        if (e.code != ERR_DAMAGE)
            fail_msg("%s: snapshot load fails with %s: %s", what, err_code_name(e.code), e.msg);
        assert_null(s);
    }
    /* The entries also need their blob: they load exactly when it does (damage to the pack
     * holding it is ERR_DAMAGE), and never with different content. */
    e = (struct err)ERR_INIT;
    if (repo_snapshot_load(r, h->cur_snap, &s, &en, &e) == 0) {
        if (t == T_SNAPSHOT)
            fail_msg("%s: damaged snapshot loads", what);
        if (!json_equal(s, h->summary) || !json_equal(en, h->entries))
            fail_msg("%s: snapshot loads with different content", what);
        if (!entries_blob_ok)
            fail_msg("%s: snapshot entries load, but their blob does not", what);
        json_decref(s);
        json_decref(en);
    } else {
        if (t != T_SNAPSHOT && entries_blob_ok)
            fail_msg("%s: intact snapshot no longer loads: %s", what, e.msg);
        if (e.code != ERR_DAMAGE)
            fail_msg("%s: snapshot load fails with %s: %s", what, err_code_name(e.code), e.msg);
        assert_null(s);
        assert_null(en);
        h->entries_lost += t != T_SNAPSHOT;
        reported = true;
    }

    /* one thread: the damage found does not depend on it, and the 6,600 probes would start
     * two threads each (a fifth of this test's time) */
    json_t *rep = check_report_threads(r, true, 1);
    bool ok = json_is_true(json_object_get(rep, "ok"));
    if (t == T_KEY) {
        if (!ok)
            fail_msg("%s: key slot still opens, but check fails", what);
    } else if (ok) {
        char *txt = json_dumps(rep, JSON_COMPACT);
        fail_msg("%s: check --read-data reports ok: %s", what, txt);
    }
    if (!ok)
        reported = true;
    if (t != T_KEY && !reported)
        fail_msg("%s: damage not reported", what);
    h->reported += reported;
    json_decref(rep);
    repo_close(r);
}

static void try_damage(struct hostile *h, enum target t, const char *path, const uint8_t *p,
                       size_t n, const char *what)
{
    file_write(path, p, n);
    probe(h, t, what);
    if (t == T_SNAPSHOT) {
        /* The same damage under the name of the damaged content: now only the container's
         * authentication can catch it. */
        uint8_t sum[32];
        char hex[65], renamed[PATH_MAX], w2[400];
        cx_sha256(p, n, sum);
        cx_hex(sum, 32, hex);
        snprintf(renamed, sizeof(renamed), "%s/snapshots/%s", h->dir, hex);
        assert_int_equal(rename(path, renamed), 0);
        snprintf(w2, sizeof(w2), "%s, renamed to its hash", what);
        h->cur_snap = hex;
        probe(h, T_SNAPSHOT, w2);
        h->cur_snap = h->snap;
        assert_int_equal(unlink(renamed), 0);
    }
}

/* Every truncation up to 300 bytes and some beyond, one appended byte, and a bit flipped at
 * every position (files up to 2 KiB) or at 500 random positions. Restores the file. */
static void damage_file(struct hostile *h, enum target t, const char *path)
{
    size_t len;
    uint8_t *orig = file_read(path, &len);
    uint8_t *buf = malloc(len + 1);
    char what[400];
    const char *name = rel(h->dir, path);
    size_t lim = len < 300 ? len : 300;
    for (size_t n = 0; n <= lim; n++) {
        if (n == len)
            continue;
        snprintf(what, sizeof(what), "%s %s cut to %zu of %zu bytes", target_name[t], name, n, len);
        try_damage(h, t, path, orig, n, what);
    }
    size_t cuts[] = {len / 2, len * 3 / 4, len - 1,  len - 4,  len - 8,
                     len - 9, len - 16,    len - 17, len - 44, len - 45};
    for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
        if (cuts[k] <= lim || cuts[k] >= len)
            continue;
        snprintf(what, sizeof(what), "%s %s cut to %zu of %zu bytes", target_name[t], name, cuts[k],
                 len);
        try_damage(h, t, path, orig, cuts[k], what);
    }
    memcpy(buf, orig, len);
    buf[len] = 0;
    snprintf(what, sizeof(what), "%s %s with a byte appended", target_name[t], name);
    try_damage(h, t, path, buf, len + 1, what);

    bool all = len <= 2048;
    size_t nflip = all ? len : 500;
    uint64_t s = len;
    for (size_t k = 0; k < nflip; k++) {
        size_t pos = all ? k : (size_t)(splitmix(&s) % len);
        memcpy(buf, orig, len);
        buf[pos] ^= (uint8_t)(1u << (pos % 8));
        snprintf(what, sizeof(what), "%s %s: bit %zu of byte %zu flipped", target_name[t], name,
                 pos % 8, pos);
        try_damage(h, t, path, buf, len, what);
    }
    file_write(path, orig, len);
    free(buf);
    free(orig);
}

static void hostile_baseline(struct hostile *h)
{
    struct repo *r = open_ok(h->dir, PW);
    assert_int_equal(json_array_size(repo_damage(r)), 0);
    for (int i = 0; i < HBE; i++)
        assert_blob(r, h->ids[i], h->data[i], h->len[i]);
    json_t *s = NULL, *en = NULL;
    struct err e = ERR_INIT;
    if (repo_snapshot_load(r, h->snap, &s, &en, &e) != 0)
        fail_msg("intact snapshot does not load: %s", e.msg);
    assert_true(json_equal(s, h->summary) && json_equal(en, h->entries));
    json_decref(s);
    json_decref(en);
    /* With the index file deleted (the orphan rounds), check names each pack the snapshot
     * needs that no index lists, and nothing else. */
    bool index_gone = access(h->index, F_OK) != 0;
    json_t *rep = check_report(r, true), *x;
    size_t i, other = 0, unindexed = 0;
    json_array_foreach(json_object_get(rep, "errors"), i, x)
    {
        if (strstr(json_string_value(json_object_get(x, "error")), "no index file lists it"))
            unindexed++;
        else
            other++;
    }
    if (other || unindexed != (index_gone ? 2 : 0)) {
        char *txt = json_dumps(rep, JSON_COMPACT);
        fail_msg("intact repository fails check%s: %s",
                 index_gone ? " (but for its index file deleted)" : "", txt);
    }
    json_decref(rep);
    repo_close(r);
}

static void test_hostile_files(void **state)
{
    (void)state;
    struct hostile h;
    hostile_setup(&h);
    hostile_baseline(&h);
    struct target_file {
        enum target t;
        const char *path;
    };
    const struct target_file targets[] = {{T_CONFIG, h.config},     {T_INDEX, h.index},
                                          {T_PACK, h.pack},         {T_META_PACK, h.meta_pack},
                                          {T_SNAPSHOT, h.snapfile}, {T_KEY, h.key}};
    /* The packs again, as left by an interrupted backup (no index lists them): now their
     * trailers are parsed at open. */
    const struct target_file orphans[] = {{T_ORPHAN_PACK, h.pack}, {T_ORPHAN_META, h.meta_pack}};
    size_t ilen = 0;
    uint8_t *index = NULL;
    for (size_t k = 0; k < 6 + 2; k++) {
        const struct target_file *tf = k < 6 ? &targets[k] : &orphans[k - 6];
        if (k == 6) {
            index = file_read(h.index, &ilen);
            assert_int_equal(unlink(h.index), 0);
            hostile_baseline(&h);
        }
        unsigned long before = h.probes, lost = h.entries_lost;
        damage_file(&h, tf->t, tf->path);
        printf("hostile: %-11s %5lu variants\n", target_name[tf->t], h.probes - before);
        /* Only damage to the metadata pack can cost the entries (their blob is there), and it
         * does; damage to the data pack never takes the file list with it. */
        if (damaged_pack_holds(tf->t, HB))
            assert_true(h.entries_lost > lost);
        else
            assert_int_equal(h.entries_lost, lost);
        hostile_baseline(&h);
    }
    file_write(h.index, index, ilen);
    free(index);
    printf("hostile: %lu damaged repositories, %lu refused to open, %lu lost the snapshot's "
           "entries (ERR_DAMAGE), all damage reported\n",
           h.probes, h.refused, h.entries_lost);
    hostile_free(&h);
}

/* A version-1 key slot (what caris-backup wrote before slot fields were bound) wrapping r's
 * master key under PW with TINY's parameters, written independently of keys.c from the
 * format document: aad = "caris key slot v1" alone. */
static void write_v1_slot(const struct repo *r, const char *path)
{
    uint8_t salt[CX_ARGON2_SALT_LEN], nonce[CX_NONCE_LEN], kek[32], master[64], wrapped[80];
    struct err e = ERR_INIT;
    cx_random(salt, sizeof(salt));
    cx_random(nonce, sizeof(nonce));
    assert_int_equal(cx_argon2id(PW, strlen(PW), salt, 1, 8192, kek, sizeof(kek), &e), 0);
    memcpy(master, r->enc_key, 32);
    memcpy(master + 32, r->mac_key, 32);
    assert_int_equal(cx_aead_seal(kek, nonce, "caris key slot v1", 17, master, 64, wrapped, &e), 0);
    char sh[33], nh[25], wh[161], text[1024];
    cx_hex(salt, sizeof(salt), sh);
    cx_hex(nonce, sizeof(nonce), nh);
    cx_hex(wrapped, sizeof(wrapped), wh);
    int n = snprintf(text, sizeof(text),
                     "{\"created\": \"2026-11-26T03:51:17.000Z\", \"kdf\": \"argon2id13\", "
                     "\"label\": \"initial key\", \"mem\": 8192, \"nonce\": \"%s\", \"ops\": 1, "
                     "\"salt\": \"%s\", \"version\": 1, \"wrapped\": \"%s\"}",
                     nh, sh, wh);
    file_write(path, text, (size_t)n);
}

/* Key slots that are not what we wrote: an error, never a crash, never a hang. The
 * variants are of a version-1 slot (so this also proves that those still open). */
static void test_hostile_key_slots(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    char *key = only_file(dir, "keys");
    write_v1_slot(r, key);
    repo_close(r);
    size_t klen;
    uint8_t *orig = file_read(key, &klen);
    char salt[33], nonce[25], wrapped[161];
    {
        json_t *j = json_loadb((const char *)orig, klen, 0, NULL);
        assert_non_null(j);
        snprintf(salt, sizeof(salt), "%s", json_string_value(json_object_get(j, "salt")));
        snprintf(nonce, sizeof(nonce), "%s", json_string_value(json_object_get(j, "nonce")));
        snprintf(wrapped, sizeof(wrapped), "%s", json_string_value(json_object_get(j, "wrapped")));
        json_decref(j);
    }
    const char *fmt = "{\"version\": %s, \"kdf\": %s, \"ops\": %s, \"mem\": %s, \"salt\": %s, "
                      "\"nonce\": %s, \"wrapped\": %s}";
    struct {
        const char *version, *kdf, *ops, *mem, *salt, *nonce, *wrapped;
    } v[] = {
        {"1", "\"argon2id13\"", "1e30", "8192", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "99999999999999999999999999", "8192", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "9223372036854775807", "8192", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "-9223372036854775808", "8192", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "101", "8192", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "9", "8192", NULL, NULL, NULL},       /* above the cap */
        {"1", "\"argon2id13\"", "1", "1073741825", NULL, NULL, NULL}, /* above the cap */
        {"1", "\"argon2id13\"", "1", "4294967296", NULL, NULL, NULL}, /* old readers' cap */
        {"1", "\"argon2id13\"", "0", "8192", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "1", "9223372036854775807", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "1", "4294967297", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "1", "-1", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "1", "8191", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "1", "1e400", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "\"1\"", "8192", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "1", "null", NULL, NULL, NULL},
        {"2", "\"argon2id13\"", "1", "8192", NULL, NULL, NULL},
        {"18446744073709551617", "\"argon2id13\"", "1", "8192", NULL, NULL, NULL},
        {"1", "\"argon2i13\"", "1", "8192", NULL, NULL, NULL},
        {"1", "7", "1", "8192", NULL, NULL, NULL},
        {"1", "\"argon2id13\"", "1", "8192", "\"00\"", NULL, NULL},
        {"1", "\"argon2id13\"", "1", "8192", "\"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\"", NULL, NULL},
        {"1", "\"argon2id13\"", "1", "8192", "[]", NULL, NULL},
        {"1", "\"argon2id13\"", "1", "8192", NULL, "\"\"", NULL},
        {"1", "\"argon2id13\"", "1", "8192", NULL, NULL, "\"abcd\""},
        {"1", "\"argon2id13\"", "1", "8192", NULL, NULL, "{}"},
    };
    char q_salt[40], q_nonce[32], q_wrapped[170];
    snprintf(q_salt, sizeof(q_salt), "\"%s\"", salt);
    snprintf(q_nonce, sizeof(q_nonce), "\"%s\"", nonce);
    snprintf(q_wrapped, sizeof(q_wrapped), "\"%s\"", wrapped);
    char text[1024];
    struct err e;
    for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++) {
        int n = snprintf(text, sizeof(text), fmt, v[k].version, v[k].kdf, v[k].ops, v[k].mem,
                         v[k].salt ? v[k].salt : q_salt, v[k].nonce ? v[k].nonce : q_nonce,
                         v[k].wrapped ? v[k].wrapped : q_wrapped);
        file_write(key, text, (size_t)n);
        e = (struct err)ERR_INIT;
        r = repo_open(dir, PW, &e);
        if (r)
            fail_msg("key slot accepted: %s", text);
        if (e.code != ERR_DAMAGE && e.code != ERR_WRONG_KEY)
            fail_msg("key slot %s: %s: %s", text, err_code_name(e.code), e.msg);
    }
    /* The same template with the real values opens: the cases above differ only as stated. */
    int n = snprintf(text, sizeof(text), fmt, "1", "\"argon2id13\"", "1", "8192", q_salt, q_nonce,
                     q_wrapped);
    file_write(key, text, (size_t)n);
    r = open_ok(dir, PW);
    repo_close(r);

    const char *garbage[] = {"",
                             "{",
                             "[]",
                             "null",
                             "{}",
                             "\x00\xff\xfe",
                             "{\"version\":1}",
                             "{\"version\": 1, \"kdf\": \"argon2id13\"}"};
    for (size_t k = 0; k < sizeof(garbage) / sizeof(garbage[0]); k++) {
        file_write(key, garbage[k], k == 5 ? 3 : strlen(garbage[k]));
        e = (struct err)ERR_INIT;
        assert_null(repo_open(dir, PW, &e));
        if (e.code != ERR_DAMAGE && e.code != ERR_WRONG_KEY)
            fail_msg("garbage key slot %zu: %s: %s", k, err_code_name(e.code), e.msg);
    }
    /* Too large to be a key slot: refused without being parsed. */
    size_t big = 100000;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    file_write(key, huge, big);
    free(huge);
    e = (struct err)ERR_INIT;
    assert_null(repo_open(dir, PW, &e));
    assert_true(e.code == ERR_DAMAGE || e.code == ERR_WRONG_KEY);

    /* A damaged slot next to a good one locks nobody out. */
    file_write(key, orig, klen);
    char bad[PATH_MAX];
    snprintf(bad, sizeof(bad), "%s/keys/0000000000000000", dir);
    file_write(bad, "{\"version\": 1, \"ops\": 1e999", 27);
    r = open_ok(dir, PW);
    e = (struct err)ERR_INIT;
    json_t *l = repo_key_list(r, &e);
    assert_int_equal(json_array_size(l), 2);
    json_decref(l);
    repo_close(r);
    /* A wrong key next to a damaged slot is not called a wrong key: the key's own slot may
     * be the damaged one (issue 11). */
    e = (struct err)ERR_INIT;
    assert_null(repo_open(dir, "wrong", &e));
    assert_err(e, ERR_DAMAGE);
    assert_non_null(strstr(e.msg, "1 key slot is damaged"));
    assert_null(strstr(e.msg, "wrong encryption key"));
    free(orig);
    free(key);
    tmpdir_free(dir);
}

/* ---- key slots: bounds, order, bound fields (issue 14) --------------------------------- */

/* Opens dir with pw, expecting failure with code want. */
static void open_fails(const char *dir, const char *pw, enum err_code want)
{
    struct err e = ERR_INIT;
    struct repo *r = repo_open(dir, pw, &e);
    if (r) {
        repo_close(r);
        fail_msg("repo_open %s succeeded, expected %s", dir, err_code_name(want));
    }
    assert_err(e, want);
}

/* The parameter bounds are one definition for writers and readers: init refuses what
 * readers would refuse, before it creates anything. */
static void test_kdf_bounds(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    assert_int_equal(repo_kdf_check(REPO_KDF_OPS_MIN, REPO_KDF_MEM_MIN, &e), 0);
    assert_int_equal(repo_kdf_check(REPO_KDF_OPS_MAX, REPO_KDF_MEM_MAX, &e), 0);
    assert_int_equal(repo_kdf_check(REPO_KDF_OPS_DEFAULT, REPO_KDF_MEM_DEFAULT, &e), 0);
    const uint64_t bad[][2] = {{0, 8192},          {9, 8192},           {101, 8192},
                               {1, 8191},          {1, (1u << 30) + 1}, {1, (uint64_t)4 << 30},
                               {UINT64_MAX, 8192}, {1, UINT64_MAX}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        e = (struct err)ERR_INIT;
        assert_int_equal(repo_kdf_check(bad[i][0], bad[i][1], &e), -1);
        assert_err(e, ERR_USAGE);
        if (bad[i][0] == 0)
            continue; /* 0 in repo_init_opts means the default */
        char *dir = tmpdir_new();
        struct repo_init_opts o = {.kdf_ops = bad[i][0], .kdf_mem = (size_t)bad[i][1]};
        e = (struct err)ERR_INIT;
        assert_null(repo_init(dir, PW, &o, &e));
        assert_err(e, ERR_USAGE);
        struct paths ps = paths_list(dir, "keys");
        assert_int_equal(ps.n, 0); /* nothing was created */
        paths_free(&ps);
        char marker[PATH_MAX];
        snprintf(marker, sizeof(marker), "%s/caris-repository", dir);
        assert_int_equal(access(marker, F_OK), -1);
        tmpdir_free(dir);
    }
}

/* A slot planted with parameters beyond the bounds (what readers accepted before: up to 100
 * passes and 4 GiB) is refused without a derivation, and locks nobody out; key list says why. */
static void test_key_slot_planted_huge(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    char ours[17];
    snprintf(ours, sizeof(ours), "%s", repo_key_slot(r));
    repo_close(r);
    char planted[PATH_MAX];
    snprintf(planted, sizeof(planted), "%s/keys/0000000000000000", dir); /* sorts first */
    char text[1024];
    int n = snprintf(text, sizeof(text),
                     "{\"version\": %d, \"kdf\": \"argon2id13\", \"ops\": %s, \"mem\": %s, "
                     "\"salt\": \"%032d\", \"nonce\": \"%024d\", \"wrapped\": \"%0160d\", "
                     "\"created\": \"2026-11-30T00:00:00.000Z\", \"label\": \"planted\"}",
                     2, "100", "4294967296", 0, 0, 0);
    file_write(planted, text, (size_t)n);
    int64_t t0 = time_mono_ns();
    r = open_ok(dir, PW);
    int64_t ms = (time_mono_ns() - t0) / 1000000;
    assert_int_equal(r->key_slots_tried, 1); /* ours only: the planted one was never derived */
    assert_string_equal(repo_key_slot(r), ours);
    struct err e = ERR_INIT;
    json_t *l = repo_key_list(r, &e);
    assert_int_equal(json_array_size(l), 2);
    json_t *first = json_array_get(l, 0);
    assert_string_equal(json_string_value(json_object_get(first, "id")), "0000000000000000");
    assert_non_null(strstr(json_string_value(json_object_get(first, "error")), "bounds"));
    json_decref(l);
    repo_close(r);
    /* Alone, it is damage (exit 4), not a wrong key and not a 4 GiB allocation. */
    char *ourpath = xasprintf("%s/keys/%s", dir, ours);
    assert_int_equal(unlink(ourpath), 0);
    open_fails(dir, PW, ERR_DAMAGE);
    print_message("key slots: planted 100 passes / 4 GiB slot refused without deriving (open "
                  "with it present: %lld ms)\n",
                  (long long)ms);
    free(ourpath);
    tmpdir_free(dir);
}

/* Copies the only key slot of src into dst's keys/ (same name: its id is bound). */
static char *copy_slot(const char *src, const char *dst)
{
    char *from = only_file(src, "keys");
    size_t n;
    uint8_t *b = file_read(from, &n);
    char *to = xasprintf("%s/keys/%s", dst, strrchr(from, '/') + 1);
    file_write(to, b, n);
    free(b);
    free(from);
    return to;
}

/* Order: the hinted slot first, then cheapest first; whatever the names. */
static void test_key_slot_order(void **state)
{
    (void)state;
    char *dir = tmpdir_new(), *other = tmpdir_new(), *other2 = tmpdir_new();
    struct repo *r = init_ok(dir, &FAST); /* 1 pass, 8 MiB */
    char ours[17];
    snprintf(ours, sizeof(ours), "%s", repo_key_slot(r));
    repo_close(r);
    /* A cheaper slot of another key (another repository's, PW2): tried first without a hint. */
    struct err e = ERR_INIT;
    struct repo *o = repo_init(other, PW2, &TINY, &e);
    assert_non_null(o);
    repo_close(o);
    char *cheap = copy_slot(other, dir);
    r = open_ok(dir, PW);
    assert_int_equal(r->key_slots_tried, 2);
    repo_close(r);
    e = (struct err)ERR_INIT;
    r = repo_open_hint(dir, PW, ours, &e);
    assert_non_null(r);
    assert_int_equal(r->key_slots_tried, 1);
    assert_string_equal(repo_key_slot(r), ours);
    repo_close(r);
    /* A hint naming no slot is no hint. */
    e = (struct err)ERR_INIT;
    r = repo_open_hint(dir, PW, "ffffffffffffffff", &e);
    assert_non_null(r);
    assert_int_equal(r->key_slots_tried, 2);
    repo_close(r);
    /* A dearer slot (2 passes, 8 MiB): ours is tried before it. */
    assert_int_equal(unlink(cheap), 0);
    static const struct repo_init_opts DEAR = {.kdf_ops = 2, .kdf_mem = 8u << 20};
    e = (struct err)ERR_INIT;
    o = repo_init(other2, PW2, &DEAR, &e);
    assert_non_null(o);
    repo_close(o);
    char *dear = copy_slot(other2, dir);
    r = open_ok(dir, PW);
    assert_int_equal(r->key_slots_tried, 1);
    repo_close(r);
    open_fails(dir, "a wrong key, but of at least thirty-two characters", ERR_WRONG_KEY);
    free(cheap);
    free(dear);
    tmpdir_free(dir);
    tmpdir_free(other);
    tmpdir_free(other2);
}

/* A slot that our key opens but that wraps another master key (planted from another
 * repository made with the same key): the config does not open under it, so the next slot
 * is tried. Alone, it is damage, named as such. */
static void test_key_slot_config_mismatch(void **state)
{
    (void)state;
    char *dir = tmpdir_new(), *other = tmpdir_new();
    struct repo *r = init_ok(dir, &FAST);
    char ours[17];
    snprintf(ours, sizeof(ours), "%s", repo_key_slot(r));
    repo_close(r);
    struct repo *o = init_ok(other, &TINY); /* same PW, cheaper: tried first */
    repo_close(o);
    char *planted = copy_slot(other, dir);
    r = open_ok(dir, PW);
    assert_int_equal(r->key_slots_tried, 2);
    assert_string_equal(repo_key_slot(r), ours);
    repo_close(r);
    char *ourpath = xasprintf("%s/keys/%s", dir, ours);
    assert_int_equal(unlink(ourpath), 0);
    struct err e = ERR_INIT;
    assert_null(repo_open(dir, PW, &e));
    assert_err(e, ERR_DAMAGE);
    assert_non_null(strstr(e.msg, "config does not authenticate"));
    free(ourpath);
    free(planted);
    tmpdir_free(dir);
    tmpdir_free(other);
}

/* A config written by a newer format (its version above ours, and, as a new format may, without
 * this version's fields) is refused as newer, never as damage. */
static void test_config_newer_version(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &FAST);
    struct err e = ERR_INIT;
    const char *cfgs[] = {"{\"version\": 2, \"chunker\": {\"kind\": \"something new\"}}",
                          "{\"version\": 99}"};
    for (size_t i = 0; i < 2; i++) {
        struct buf sealed = {0};
        assert_int_equal(container_seal(r, 'C', cfgs[i], strlen(cfgs[i]), &sealed, &e), 0);
        char *path = xasprintf("%s/config", dir);
        file_write(path, sealed.data, sealed.len);
        free(path);
        buf_free(&sealed);
        e = (struct err)ERR_INIT;
        assert_null(repo_open(dir, PW, &e));
        assert_int_not_equal(e.code, ERR_DAMAGE);
        assert_non_null(strstr(e.msg, "has format version"));
        assert_non_null(strstr(e.hint, "upgrade"));
    }
    repo_close(r);
    tmpdir_free(dir);
}

/* Every field of a version-2 slot is bound to the wrapped key: changing any of them (within
 * the bounds, so the slot is read and derived) or moving the slot to another name makes it a
 * slot that opens nothing. A version-3 slot (written since issue 11) also carries a checksum:
 * the same changes are then reported as damage, never as a wrong key. */
static void test_key_slot_fields_bound(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    repo_close(r);
    char *key = only_file(dir, "keys");
    size_t klen;
    uint8_t *orig = file_read(key, &klen);
    json_t *j = json_loadb((const char *)orig, klen, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 3);
    /* the same slot as version 2 (no checksum): what the associated data binds */
    json_t *v2 = json_deep_copy(j);
    json_object_set_new(v2, "version", json_integer(2));
    json_object_del(v2, "check");
    struct {
        const char *field;
        json_t *value;
    } alt[] = {
        {"label", json_string("initial key, relabelled")},
        {"label", json_string("")},
        {"created", json_string("2001-01-01T00:00:00.000Z")},
        {"ops", json_integer(2)},
        {"mem", json_integer(16384)},
    };
    for (size_t i = 0; i < 2 * sizeof(alt) / sizeof(alt[0]); i++) {
        size_t a = i / 2;
        bool as_v2 = i % 2;
        json_t *c = json_deep_copy(as_v2 ? v2 : j);
        json_object_set(c, alt[a].field, alt[a].value);
        char *text = json_dumps(c, JSON_INDENT(2) | JSON_SORT_KEYS);
        file_write(key, text, strlen(text));
        free(text);
        json_decref(c);
        struct err e = ERR_INIT;
        r = repo_open(dir, PW, &e);
        if (r) {
            repo_close(r);
            fail_msg("key slot with another %s still opens the repository", alt[a].field);
        }
        assert_err(e, as_v2 ? ERR_WRONG_KEY : ERR_DAMAGE);
    }
    for (size_t a = 0; a < sizeof(alt) / sizeof(alt[0]); a++)
        json_decref(alt[a].value);
    /* the version-2 form as it is still opens (readers keep reading version 2) */
    char *v2text = json_dumps(v2, JSON_INDENT(2) | JSON_SORT_KEYS);
    file_write(key, v2text, strlen(v2text));
    free(v2text);
    r = open_ok(dir, PW);
    repo_close(r);
    json_decref(v2);
    /* Bound fields beyond their bounds (or of the wrong type) are damage, refused unread. */
    char longlabel[REPO_KEY_LABEL_MAX + 2];
    memset(longlabel, 'a', sizeof(longlabel) - 1);
    longlabel[sizeof(longlabel) - 1] = '\0';
    json_t *bad[][2] = {{json_string("label"), json_string(longlabel)},
                        {json_string("label"), json_integer(7)},
                        {json_string("created"), json_null()}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *c = json_deep_copy(j);
        json_object_set_new(c, json_string_value(bad[i][0]), bad[i][1]);
        json_decref(bad[i][0]);
        char *text = json_dumps(c, JSON_COMPACT);
        file_write(key, text, strlen(text));
        free(text);
        json_decref(c);
        open_fails(dir, PW, ERR_DAMAGE);
    }
    json_t *c = json_deep_copy(j);
    json_object_del(c, "label");
    char *text = json_dumps(c, JSON_COMPACT);
    file_write(key, text, strlen(text));
    free(text);
    json_decref(c);
    open_fails(dir, PW, ERR_DAMAGE);
    /* The same bytes under another name (the id is bound too, and in the checksum). */
    file_write(key, orig, klen);
    char *moved = xasprintf("%s/keys/0123456789abcdef", dir);
    assert_int_equal(rename(key, moved), 0);
    open_fails(dir, PW, ERR_DAMAGE);
    assert_int_equal(rename(moved, key), 0);
    r = open_ok(dir, PW);
    repo_close(r);
    json_decref(j);
    free(moved);
    free(orig);
    free(key);
    tmpdir_free(dir);
}

/* A version-2 slot, read independently of keys.c from the format document ("Keys"): the
 * associated data built here from the JSON must unwrap the repository's master key. */
static void put_str(struct buf *b, const char *s)
{
    buf_append_u32le(b, (uint32_t)strlen(s));
    buf_append(b, s, strlen(s));
}

static void test_key_slot_v2_format(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo_init_opts o = TINY;
    o.label = "custodian \xc3\xa9"; /* UTF-8 */
    struct repo *r = init_ok(dir, &o);
    char *key = only_file(dir, "keys");
    size_t klen;
    uint8_t *text = file_read(key, &klen);
    json_t *j = json_loadb((const char *)text, klen, 0, NULL);
    assert_non_null(j);
    uint8_t salt[16], nonce[12], wrapped[80], kek[32], master[64];
    assert_int_equal(cx_unhex(json_string_value(json_object_get(j, "salt")), salt, 16), 0);
    assert_int_equal(cx_unhex(json_string_value(json_object_get(j, "nonce")), nonce, 12), 0);
    assert_int_equal(cx_unhex(json_string_value(json_object_get(j, "wrapped")), wrapped, 80), 0);
    uint64_t ops = (uint64_t)json_integer_value(json_object_get(j, "ops"));
    uint64_t mem = (uint64_t)json_integer_value(json_object_get(j, "mem"));
    struct buf aad = {0};
    buf_append(&aad, "caris key slot v2", 18); /* with the 0x00 */
    put_str(&aad, strrchr(key, '/') + 1);
    put_str(&aad, json_string_value(json_object_get(j, "kdf")));
    buf_append_u64le(&aad, ops);
    buf_append_u64le(&aad, mem);
    buf_append_u32le(&aad, 16);
    buf_append(&aad, salt, 16);
    put_str(&aad, json_string_value(json_object_get(j, "created")));
    put_str(&aad, json_string_value(json_object_get(j, "label")));
    assert_string_equal(json_string_value(json_object_get(j, "label")), o.label);
    struct err e = ERR_INIT;
    assert_int_equal(cx_argon2id(PW, strlen(PW), salt, ops, (size_t)mem, kek, 32, &e), 0);
    assert_int_equal(cx_aead_open(kek, nonce, aad.data, aad.len, wrapped, 80, master, &e), 0);
    assert_memory_equal(master, r->enc_key, 32);
    assert_memory_equal(master + 32, r->mac_key, 32);
    /* the version-3 checksum, as the document says: hex SHA-256 of "caris key slot check" ||
     * 0x00 || u32 version || aad || nonce || wrapped */
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 3);
    struct buf ck = {0};
    buf_append(&ck, "caris key slot check", 21);
    buf_append_u32le(&ck, 3);
    buf_append(&ck, aad.data, aad.len);
    buf_append(&ck, nonce, 12);
    buf_append(&ck, wrapped, 80);
    uint8_t h[32];
    char hex[65];
    struct cx_sha256 *sh = cx_sha256_new();
    cx_sha256_update(sh, ck.data, ck.len);
    cx_sha256_final(sh, h);
    cx_sha256_free(sh);
    cx_hex(h, 32, hex);
    assert_string_equal(json_string_value(json_object_get(j, "check")), hex);
    buf_free(&ck);
    cx_wipe(master, sizeof(master));
    cx_wipe(kek, sizeof(kek));
    buf_free(&aad);
    json_decref(j);
    free(text);
    free(key);
    repo_close(r);
    tmpdir_free(dir);
}

/* A damaged key slot is never reported as a wrong key (issue 11): every byte of the only
 * slot, flipped in its lowest bit or its case bit, gives ERR_DAMAGE (or, when the flip leaves
 * the JSON meaning the same, opens). */
static void test_key_slot_damage_not_wrong_key(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    repo_close(r);
    char *key = only_file(dir, "keys");
    size_t klen;
    uint8_t *orig = file_read(key, &klen);
    size_t damaged = 0;
    for (size_t i = 0; i < klen; i++) {
        for (int bit = 0; bit < 2; bit++) {
            uint8_t *c = malloc(klen);
            memcpy(c, orig, klen);
            c[i] ^= bit ? 0x20 : 0x01;
            file_write(key, c, klen);
            free(c);
            struct err e = ERR_INIT;
            r = repo_open(dir, PW, &e);
            if (r) {
                repo_close(r);
                continue;
            }
            if (e.code != ERR_DAMAGE)
                fail_msg("byte %zu of the key slot flipped (0x%02x): %s: %s", i, bit ? 0x20 : 0x01,
                         err_code_name(e.code), e.msg);
            damaged++;
        }
    }
    assert_true(damaged > klen); /* nearly every flip is damage */
    file_write(key, orig, klen);
    r = open_ok(dir, PW);
    repo_close(r);
    free(orig);
    free(key);
    tmpdir_free(dir);
}

/* At most REPO_KEY_SLOTS_MAX slots are read; key add refuses to make more. */
static void test_key_slot_count(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    for (int i = 0; i < REPO_KEY_SLOTS_MAX - 1; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/keys/%016x", dir, i);
        file_write(p, "{}", 2);
    }
    struct err e = ERR_INIT;
    char id[17];
    assert_int_equal(repo_key_add(r, PW2, "one too many", id, &e), -1);
    assert_err(e, ERR_USAGE);
    repo_close(r);
    r = open_ok(dir, PW); /* 32 slots: still read */
    repo_close(r);
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/keys/%016x", dir, REPO_KEY_SLOTS_MAX);
    file_write(p, "{}", 2);
    e = (struct err)ERR_INIT;
    assert_null(repo_open(dir, PW, &e));
    assert_err(e, ERR_DAMAGE);
    assert_non_null(strstr(e.msg, "key slots"));
    tmpdir_free(dir);
}

/* Salts are never reused: every pack gets a fresh random salt (so a fresh key) when it is
 * written, also when the same blobs are written again (as prune's repacking will). This fails
 * if a pack is ever rewritten with the salt of an earlier one. */
static void test_pack_salts_fresh(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    enum { NPACKS = 24 };
    uint8_t buf[4096], id[32];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < NPACKS; i++) {
            struct repo_writer *w = repo_writer_new(r, 1);
            fill_blob((uint64_t)i + 1, buf, sizeof(buf));
            assert_int_equal(add_ok(r, w, 0, buf, sizeof(buf), id), 1);
            flush_ok(w); /* one pack per session */
            repo_writer_free(w);
        }
        if (round == 0) {
            /* Drop the packs and their index files (as a prune would before repacking) and
             * keep their salts; the same blobs are then written again. */
            repo_close(r);
            struct paths ix = paths_list(dir, "index");
            for (size_t k = 0; k < ix.n; k++)
                assert_int_equal(unlink(ix.v[k]), 0);
            paths_free(&ix);
            struct paths pk = paths_list(dir, "data");
            char *old = xasprintf("%s/old-packs", dir);
            assert_int_equal(mkdir(old, 0700), 0);
            for (size_t k = 0; k < pk.n; k++) {
                char *to = xasprintf("%s/%zu", old, k);
                assert_int_equal(rename(pk.v[k], to), 0);
                free(to);
            }
            assert_int_equal(pk.n, NPACKS);
            paths_free(&pk);
            free(old);
            r = open_ok(dir, PW);
        }
    }
    repo_close(r);
    struct paths a = paths_list(dir, "old-packs"), b = paths_list(dir, "data");
    assert_int_equal(a.n, NPACKS);
    assert_int_equal(b.n, NPACKS);
    uint8_t salts[2 * NPACKS][32];
    size_t ns = 0;
    struct paths *sets[] = {&a, &b};
    for (int s = 0; s < 2; s++)
        for (size_t k = 0; k < sets[s]->n; k++) {
            size_t n;
            uint8_t *p = file_read(sets[s]->v[k], &n);
            assert_true(n > PACK_HEADER_LEN);
            memcpy(salts[ns++], p + 8, 32);
            free(p);
        }
    for (size_t x = 0; x < ns; x++)
        for (size_t y = x + 1; y < ns; y++)
            if (memcmp(salts[x], salts[y], 32) == 0)
                fail_msg("packs %zu and %zu share a salt", x, y);
    paths_free(&a);
    paths_free(&b);
    tmpdir_free(dir);
}

/* Crafted payloads sealed with the repository's own key: the parsers behind the
 * authentication must hold too (a future writer's bug, or a key holder's mistake). */
static void seal_to(struct repo *r, char type, const void *p, size_t n, const char *path)
{
    struct buf sealed = {0};
    struct err e = ERR_INIT;
    assert_int_equal(container_seal(r, type, p, n, &sealed, &e), 0);
    file_write(path, sealed.data, sealed.len);
    buf_free(&sealed);
}

static void zstd_into(struct buf *out, const void *p, size_t n)
{
    size_t bound = ZSTD_compressBound(n);
    uint8_t *z = malloc(bound);
    size_t zn = ZSTD_compress(z, bound, p, n, 1);
    assert_false(ZSTD_isError(zn));
    buf_append(out, z, zn);
    free(z);
}

/* A zstd frame header claiming 2^40 bytes of content. */
static const uint8_t ZSTD_HUGE[] = {0x28, 0xb5, 0x2f, 0xfd, 0xe0, 0, 0, 0, 0, 0, 1, 0, 0};

static void index_entry(struct buf *p, const uint8_t id[32], uint32_t off, uint32_t clen,
                        uint32_t ulf)
{
    buf_append(p, id, 32);
    buf_append_u32le(p, off);
    buf_append_u32le(p, clen);
    buf_append_u32le(p, ulf);
}

/* A byte stream stored through w as snapshot entries are; returns its reference as the
 * snapshot file records it: {"chunks": [[id hex, len], ...], "sha256": hex, "bytes": n}. */
static json_t *store_stream(struct repo *r, struct repo_writer *w, const char *text)
{
    struct stream_result sr;
    struct err e = ERR_INIT;
    if (stream_store_meta_buf(r, w, text, strlen(text), repo_chunker_params(r, true), &sr, &e) != 0)
        fail_msg("stream_store_meta_buf: %s", e.msg);
    char hex[65];
    cx_hex(sr.sha256, 32, hex);
    return json_pack("{s:o, s:s, s:I}", "chunks", sr.chunks, "sha256", hex, "bytes",
                     (json_int_t)sr.bytes);
}

static char *sha_hex_of(const char *text, char hex[65])
{
    uint8_t sum[32];
    cx_sha256(text, strlen(text), sum);
    cx_hex(sum, 32, hex);
    return hex;
}

/* Crafted snapshot files sealed with the repository's key: a summary and an entries
 * reference that are not what repo_snapshot_save writes. */
static void crafted_snapshots(struct repo *r, const char *dir)
{
    /* Streams for the references to point at, stored like real entries (one more metadata pack). */
    const char *bad_refs_text = "[{\"chunks\": [[\"zz\", 1], [5], null, [], \"x\"]}]";
    const char *shapes_text = "[{\"chunks\": \"x\"}, 1, null, {\"chunks\": {}}]";
    struct buf big = {0}; /* a JSON array of many strings: several chunks */
    buf_append(&big, "[", 1);
    for (uint64_t i = 0, sd = 99; i < 6000; i++) {
        char item[80];
        int n = snprintf(item, sizeof(item), "%s\"%016llx%016llx\"", i ? "," : "",
                         (unsigned long long)splitmix(&sd), (unsigned long long)splitmix(&sd));
        buf_append(&big, item, (size_t)n);
    }
    buf_append(&big, "]", 2); /* with the terminating NUL */
    const char *big_text = (const char *)big.data;
    struct repo_writer *w = repo_writer_new(r, 1);
    json_t *ref_empty = store_stream(r, w, "[]");

    json_t *ref_bad_refs = store_stream(r, w, bad_refs_text);
    json_t *ref_shapes = store_stream(r, w, shapes_text);
    json_t *ref_object = store_stream(r, w, "{}");
    json_t *ref_broken = store_stream(r, w, "[1, 2");
    json_t *ref_big = store_stream(r, w, big_text);
    flush_ok(w);
    repo_writer_free(w);
    json_t *big_chunks = json_object_get(ref_big, "chunks");
    assert_true(json_array_size(big_chunks) >= 2);
    assert_int_equal(json_array_size(json_object_get(ref_empty, "chunks")), 1);
    const char *e_id = json_string_value(json_array_get(
        json_array_get(json_object_get(ref_empty, "chunks"), 0), 0)); /* the chunk "[]" */
    const char *e_sha = json_string_value(json_object_get(ref_empty, "sha256"));
    char hx[65], hx2[65];

    enum { NCASES = 34 };
    int nloaded = 0;
    bool bytes_checked = false;
    for (int c = 0; c < NCASES; c++) {
        struct buf p = {0}, z1 = {0}, z2 = {0};
        const char *s1 = "{\"id\":\"crafted\",\"started\":\"2020-01-01T00:00:00Z\"}";
        json_t *ref = json_deep_copy(ref_empty); /* the entries part, as JSON ... */
        char *s2 = NULL;                         /* ... or as text */
        json_t *expect = NULL; /* well-formed: loads with these entries; check must not crash */
        bool bad_refs = false; /* loads, but its entries name blobs that are not there */
        bool either = false;   /* may load (then unchanged) or be damage */
        /* Only the entries are damaged: list and find (summaries only, by design) still show
         * the snapshot; a full load and check do not accept it. */
        bool listed = true;
        bool odd_summary = false; /* listed, but not found as "crafted" */
        switch (c) {
        case 0: /* summary not an object */
            s1 = "[1,2]";
            listed = false;
            break;
        case 1: /* entries reference an empty object */
            s2 = strdup("{}");
            break;
        case 2: /* summary not JSON */
            s1 = "{\"id\":";
            listed = false;
            break;
        case 3: /* entries reference not JSON */
            s2 = strdup("{\"chunks\": [");
            break;
        case 4: /* summary of the wrong types */
            s1 = "{\"id\": 5, \"started\": []}";
            odd_summary = true;
            expect = json_array();
            break;
        case 5: /* entries naming chunks that are malformed */
            json_decref(ref);
            ref = json_incref(ref_bad_refs);
            expect = json_loads(bad_refs_text, 0, NULL);
            bad_refs = true;
            break;
        case 6: /* entries of odd shapes */
            json_decref(ref);
            ref = json_incref(ref_shapes);
            expect = json_loads(shapes_text, 0, NULL);
            /* a chunk list that is not a list cannot be restored: check says so, as restore
             * and verify do (one decoder for all of them) */
            bad_refs = true;
            break;
        case 7:  /* summary length beyond the payload */
        case 8:  /* empty payload */
        case 10: /* summary part is not zstd */
            listed = false;
            break;
        case 9:  /* no entries part */
        case 11: /* entries part claims 1 TiB */
            break;
        case 12: /* the entries inline, as snapshots once held them */
            s2 = strdup("[]");
            break;
        case 13: /* sha256 not hex */
            json_object_set_new(ref, "sha256", json_string("zz"));
            break;
        case 14: /* sha256 one digit short */
            snprintf(hx, sizeof(hx), "%.63s", e_sha);
            json_object_set_new(ref, "sha256", json_string(hx));
            break;
        case 15: /* sha256 a number */
            json_object_set_new(ref, "sha256", json_integer(1));
            break;
        case 16: /* no chunk list */
            json_object_del(ref, "chunks");
            break;
        case 17: /* chunk list not an array */
            json_object_set_new(ref, "chunks", json_string("x"));
            break;
        case 18: /* chunk id not hex */
            json_object_set_new(ref, "chunks", json_pack("[[s, i]]", "zz", 2));
            break;
        case 19: /* negative length */
            json_object_set_new(ref, "chunks", json_pack("[[s, i]]", e_id, -1));
            break;
        case 20: /* no length */
            json_object_set_new(ref, "chunks", json_pack("[[s]]", e_id));
            break;
        case 21: /* length a real number */
            json_object_set_new(ref, "chunks", json_pack("[[s, f]]", e_id, 2.0));
            break;
        case 22: /* length over 2^32 (truncates to the right one) */
            json_object_set_new(ref, "chunks",
                                json_pack("[[s, I]]", e_id, ((json_int_t)1 << 32) + 2));
            break;
        case 23: /* wrong length */
            json_object_set_new(ref, "chunks", json_pack("[[s, i]]", e_id, 3));
            break;
        case 24: /* a chunk nobody stored */
            memset(hx, 'a', 64);
            hx[64] = 0;
            json_object_set_new(ref, "chunks", json_pack("[[s, i]]", hx, 2));
            break;
        case 25: /* chunk entry not an array */
            json_object_set_new(ref, "chunks", json_pack("[s]", e_id));
            break;
        case 26: /* the right chunks, another stream's sha256 */
            json_object_set_new(ref, "sha256", json_string(sha_hex_of("[ ]", hx)));
            break;
        case 27: /* no chunks: the empty stream, with its sha256 */
            json_object_set_new(ref, "chunks", json_array());
            json_object_set_new(ref, "sha256", json_string(sha_hex_of("", hx)));
            json_object_set_new(ref, "bytes", json_integer(0));
            break;
        case 28: /* a stream that is an object */
            json_decref(ref);
            ref = json_incref(ref_object);
            break;
        case 29: /* a stream that is not JSON */
            json_decref(ref);
            ref = json_incref(ref_broken);
            break;
        case 30: /* a chunk twice ("[][]"), with that stream's sha256: not JSON */
            json_object_set_new(ref, "chunks", json_pack("[[s, i], [s, i]]", e_id, 2, e_id, 2));
            json_object_set_new(ref, "sha256", json_string(sha_hex_of("[][]", hx2)));
            json_object_set_new(ref, "bytes", json_integer(4));
            break;
        case 31: /* a stream of several chunks, two of them swapped */
        case 32: /* ... and in order */
            json_decref(ref);
            ref = json_deep_copy(ref_big);
            if (c == 31) {
                json_t *ch = json_object_get(ref, "chunks");
                json_t *a = json_incref(json_array_get(ch, 0));
                json_array_set(ch, 0, json_array_get(ch, 1));
                json_array_set_new(ch, 1, a);
            } else {
                expect = json_loads(big_text, 0, NULL);
                assert_non_null(expect);
            }
            break;
        case 33: /* "bytes" wrong: the sha256 still vouches for the content */
            json_object_set_new(ref, "bytes", json_integer(3));
            expect = json_array();
            either = true;
            break;
        default:
            break;
        }
        if (!s2)
            s2 = json_dumps(ref, JSON_COMPACT);
        json_decref(ref);
        bool loads = expect != NULL && !either;
        zstd_into(&z1, s1, strlen(s1));
        zstd_into(&z2, s2, strlen(s2));
        switch (c) {
        case 7: /* summary length beyond the payload */
            buf_append_u32le(&p, 0xffffffffu);
            buf_append(&p, z1.data, z1.len);
            break;
        case 8: /* empty payload */
            break;
        case 9: /* no entries part */
            buf_append_u32le(&p, (uint32_t)z1.len);
            buf_append(&p, z1.data, z1.len);
            break;
        case 10: /* summary part is not zstd */
            buf_append_u32le(&p, (uint32_t)strlen(s1));
            buf_append(&p, s1, strlen(s1));
            buf_append(&p, z2.data, z2.len);
            break;
        case 11: /* entries claim 1 TiB */
            buf_append_u32le(&p, (uint32_t)z1.len);
            buf_append(&p, z1.data, z1.len);
            buf_append(&p, ZSTD_HUGE, sizeof(ZSTD_HUGE));
            break;
        default:
            buf_append_u32le(&p, (uint32_t)z1.len);
            buf_append(&p, z1.data, z1.len);
            buf_append(&p, z2.data, z2.len);
        }
        free(s2);
        struct buf sealed = {0};
        struct err e = ERR_INIT;
        assert_int_equal(container_seal(r, 'S', p.data, p.len, &sealed, &e), 0);
        uint8_t sum[32];
        char name[65], path[PATH_MAX];
        cx_sha256(sealed.data, sealed.len, sum);
        cx_hex(sum, 32, name);
        snprintf(path, sizeof(path), "%s/snapshots/%s", dir, name);
        file_write(path, sealed.data, sealed.len);
        buf_free(&sealed);
        buf_free(&p);
        buf_free(&z1);
        buf_free(&z2);

        json_t *s = NULL, *en = NULL;
        e = (struct err)ERR_INIT;
        int rc = repo_snapshot_load(r, name, &s, &en, &e);
        if (loads) {
            if (rc != 0)
                fail_msg("crafted snapshot %d does not load: %s", c, e.msg);
            if (!json_equal(en, expect))
                fail_msg("crafted snapshot %d loads with different entries", c);
        } else if (rc == 0 && !either) {
            fail_msg("crafted snapshot %d loads", c);
        } else if (rc == 0) {
            if (!json_equal(en, expect))
                fail_msg("crafted snapshot %d loads with different entries", c);
        } else {
            if (e.code != ERR_DAMAGE)
                fail_msg("crafted snapshot %d: expected DAMAGE, got %s: %s", c,
                         err_code_name(e.code), e.msg);
            assert_null(s);
            assert_null(en);
        }
        bool loaded = rc == 0;
        nloaded += loaded;
        if (c == 33)
            bytes_checked = !loaded;
        json_decref(s);
        json_decref(en);
        json_decref(expect);
        json_t *damaged = NULL;
        e = (struct err)ERR_INIT;
        json_t *list = repo_snapshot_list(r, &damaged, &e);
        assert_non_null(list);
        if (json_array_size(list) != (listed ? 2u : 1u) ||
            json_array_size(damaged) != (listed ? 0u : 1u)) {
            char *t1 = json_dumps(list, JSON_COMPACT), *t2 = json_dumps(damaged, JSON_COMPACT);
            fail_msg("crafted snapshot %d: listed %s, damaged %s", c, t1, t2);
        }
        json_decref(list);
        json_decref(damaged);
        char found[65];
        e = (struct err)ERR_INIT;
        assert_int_equal(repo_snapshot_find(r, "crafted", found, NULL, &e),
                         listed && !odd_summary ? 0 : -1);
        if (listed) {
            /* the summary alone loads (whatever the entries) */
            e = (struct err)ERR_INIT;
            if (repo_snapshot_load(r, name, &s, NULL, &e) != 0)
                fail_msg("crafted snapshot %d: summary does not load: %s", c, e.msg);
            json_decref(s);
        }
        e = (struct err)ERR_INIT;
        assert_int_equal(repo_snapshot_find(r, "hostile-1", found, NULL, &e), 0);
        bool ok = check_ok(r, false);
        if (ok != (loaded && !bad_refs))
            fail_msg("crafted snapshot %d: check reports ok=%d", c, ok);
        assert_int_equal(unlink(path), 0);
    }
    printf("hostile: %d crafted snapshots, %d load (well-formed), the others are DAMAGE; a wrong "
           "\"bytes\" in an entries reference is %s\n",
           NCASES, nloaded, bytes_checked ? "damage" : "ignored (the sha256 vouches)");
    json_decref(ref_empty);
    json_decref(ref_bad_refs);
    json_decref(ref_shapes);
    json_decref(ref_object);
    json_decref(ref_broken);
    json_decref(ref_big);
    buf_free(&big);
}

static void test_hostile_payloads(void **state)
{
    (void)state;
    struct hostile h;
    hostile_setup(&h);
    struct repo *r = open_ok(h.dir, PW);
    /* The genuine index entries (from the trailer: same data). */
    struct buf tr = {0};
    pack_trailer(r, h.dir, h.pack, &tr);
    assert_int_equal(tr.len, HB * PACK_TRAILER_ENTRY_LEN);
    uint32_t off[HB], clen[HB], ulf[HB];
    for (int i = 0; i < HB; i++) {
        assert_memory_equal(tr.data + 44 * i, h.ids[i], 32);
        off[i] = load_u32le(tr.data + 44 * i + 32);
        clen[i] = load_u32le(tr.data + 44 * i + 36);
        ulf[i] = load_u32le(tr.data + 44 * i + 40);
    }
    buf_free(&tr);
    pack_trailer(r, h.dir, h.meta_pack, &tr); /* the entries, alone */
    assert_int_equal(tr.len, PACK_TRAILER_ENTRY_LEN);
    assert_memory_equal(tr.data, h.ids[HB], 32);
    buf_free(&tr);
    assert_true(ulf[1] & ULEN_COMPRESSED);
    assert_false(ulf[0] & ULEN_COMPRESSED);
    uint8_t pid[32];
    assert_int_equal(cx_unhex(strrchr(h.pack, '/') + 1, pid, 32), 0);
    uint8_t other[32];
    memset(other, 0x5c, sizeof(other));

    /* --- index files. Named to sort before the genuine one: their entries win. --- */
    char ipath[PATH_MAX];
    snprintf(ipath, sizeof(ipath), "%s/index/%064d", h.dir, 0);
    /* rejected as a whole / well-formed but wrong / pointing at a pack that is not there
     * (ignored at open, with a warning: the blob is found through its real pack's trailer) */
    enum { BAD, MISLEAD, GONE };
    for (int c = 0; c < 16; c++) {
        struct buf p = {0}, z = {0};
        int kind = BAD;
        bool raw = false;
        buf_append(&p, "CIDX", 4);
        buf_append_u32le(&p, c == 0 ? 2 : 1);
        switch (c) {
        case 0: /* version 2 */
        case 1: /* npacks promised, nothing follows */
            buf_append_u32le(&p, 5);
            break;
        case 2: /* blob count beyond the file */
            buf_append_u32le(&p, 1);
            buf_append(&p, pid, 32);
            buf_append_u32le(&p, 0xffffffffu);
            break;
        case 3: /* clen below the tag */
        case 4: /* plaintext over 64 MiB */
        case 5: /* offset inside the header */
        case 6: /* ciphertext over 64 MiB */
            buf_append_u32le(&p, 1);
            buf_append(&p, pid, 32);
            buf_append_u32le(&p, 1);
            index_entry(&p, h.ids[0], c == 5 ? 39 : off[0],
                        c == 3   ? 15
                        : c == 6 ? 0x7fffffff
                                 : clen[0],
                        c == 4 ? (REPO_MAX_BLOB + 1) : ulf[0]);
            break;
        case 7: /* trailing byte */
            buf_append_u32le(&p, 0);
            buf_append_u8(&p, 0);
            break;
        case 8: /* not "CIDX" */
            p.data[0] = 'X';
            buf_append_u32le(&p, 0);
            break;
        case 9: /* not zstd */
            buf_append_u32le(&p, 0);
            raw = true;
            break;
        case 10: /* zstd header claiming 1 TiB */
            p.len = 0;
            buf_append(&z, ZSTD_HUGE, sizeof(ZSTD_HUGE));
            raw = true;
            break;
        case 11: /* blob 0 said to be where blob 2 is */
            kind = MISLEAD;
            buf_append_u32le(&p, 1);
            buf_append(&p, pid, 32);
            buf_append_u32le(&p, 1);
            index_entry(&p, h.ids[0], off[2], clen[2], ulf[2]);
            break;
        case 12: /* blob 0 past the end of its pack: a truncated pack, as the listing's size
                  * shows; not trusted at open, with a warning, and the genuine index's
                  * entry (loaded after) takes its place */
            kind = GONE;
            buf_append_u32le(&p, 1);
            buf_append(&p, pid, 32);
            buf_append_u32le(&p, 1);
            index_entry(&p, h.ids[0], 1u << 30, clen[0], ulf[0]);
            break;
        case 13: /* blob 1 (compressed) said to be raw, blob 0 (raw) said to be compressed */
            kind = MISLEAD;
            buf_append_u32le(&p, 1);
            buf_append(&p, pid, 32);
            buf_append_u32le(&p, 2);
            index_entry(&p, h.ids[1], off[1], clen[1], ulf[1] & ULEN_MASK);
            index_entry(&p, h.ids[0], off[0], clen[0], ulf[0] | ULEN_COMPRESSED);
            break;
        case 14: /* wrong plaintext lengths */
            kind = MISLEAD;
            buf_append_u32le(&p, 1);
            buf_append(&p, pid, 32);
            buf_append_u32le(&p, 2);
            index_entry(&p, h.ids[0], off[0], clen[0], ulf[0] + 1);
            index_entry(&p, h.ids[1], off[1], clen[1], ulf[1] - 1);
            break;
        case 15: /* blob 0 in a pack that does not exist */
            kind = GONE;
            buf_append_u32le(&p, 1);
            buf_append(&p, other, 32);
            buf_append_u32le(&p, 1);
            index_entry(&p, h.ids[0], off[0], clen[0], ulf[0]);
            break;
        }
        if (!raw)
            zstd_into(&z, p.data, p.len);
        else if (p.len)
            buf_append(&z, p.data, p.len);
        seal_to(r, 'I', z.data, z.len, ipath);
        buf_free(&p);
        buf_free(&z);

        struct err e = ERR_INIT;
        struct repo *r2 = repo_open(h.dir, PW, &e);
        if (!r2)
            fail_msg("crafted index %d: repository does not open: %s", c, e.msg);
        size_t ndamage = json_array_size(repo_damage(r2));
        if (kind == BAD && ndamage != 1)
            fail_msg("crafted index %d: %zu damage reports", c, ndamage);
        struct buf b = {0};
        bool any_bad = false;
        for (int i = 0; i < HBE; i++) {
            e = (struct err)ERR_INIT;
            if (repo_blob_load(r2, h.ids[i], &b, &e) == 0) {
                if (b.len != h.len[i] || memcmp(b.data, h.data[i], b.len) != 0)
                    fail_msg("crafted index %d: blob %d loads with different content", c, i);
            } else {
                any_bad = true;
                if (e.code != ERR_DAMAGE && !(c == 15 && e.code == ERR_NOT_FOUND))
                    fail_msg("crafted index %d: blob %d: %s: %s", c, i, err_code_name(e.code),
                             e.msg);
            }
        }
        buf_free(&b);
        if (kind == MISLEAD && !any_bad)
            fail_msg("crafted index %d: misdirected blob loads", c);
        if (kind == GONE && (any_bad || json_array_size(repo_warnings(r2)) != 1))
            fail_msg("crafted index %d: entry of a missing pack not ignored with one warning", c);
        /* None of them touches the entries blob: the snapshot still loads, unchanged. */
        json_t *s = NULL, *en = NULL;
        e = (struct err)ERR_INIT;
        if (repo_snapshot_load(r2, h.snap, &s, &en, &e) != 0)
            fail_msg("crafted index %d: snapshot does not load: %s", c, e.msg);
        if (!json_equal(s, h.summary) || !json_equal(en, h.entries))
            fail_msg("crafted index %d: snapshot loads with different content", c);
        json_decref(s);
        json_decref(en);
        if (check_ok(r2, true))
            fail_msg("crafted index %d: check reports ok", c);
        repo_close(r2);
    }
    assert_int_equal(unlink(ipath), 0);

    /* --- snapshots --- */
    crafted_snapshots(r, h.dir);

    /* --- config (sealed JSON that is not a valid config) --- */
    struct buf raw = {0}, plain = {0};
    struct err e = ERR_INIT;
    size_t clen0;
    uint8_t *craw = file_read(h.config, &clen0);
    assert_int_equal(container_open(r, 'C', craw, clen0, &plain, &e), 0);
    json_t *cfg = json_loadb((const char *)plain.data, plain.len, 0, NULL);
    assert_non_null(cfg);
    buf_free(&plain);
    const char *edits[] = {
        NULL, /* not JSON */
        "{}",
        "{\"chunker_seed\": \"zz\"}",
        "{\"chunker_seed\": 5}",
        "{\"chunker\": {\"files\": {\"min\": 1, \"avg\": 2, \"max\": 3}}}",
        "{\"chunker\": {\"files\": {\"min\": 100000, \"avg\": 65536, \"max\": 10}}}",
        "{\"chunker\": {\"files\": {\"min\": -1, \"avg\": 65536, \"max\": 262144}}}",
        "{\"chunker\": {\"files\": {\"min\": 16384, \"avg\": 65536, \"max\": 67108865}}}",
        "{\"chunker\": {\"files\": {\"min\": 16384, \"avg\": 65537, \"max\": 262144}}}",
        "{\"chunker\": {\"files\": {\"min\": 16384, \"avg\": 65536, \"max\": "
        "9223372036854775807}}}",
        "{\"chunker\": {\"dumps\": null}}",
        "{\"compression\": \"high\"}",
        "{\"version\": 2}",
        "{\"version\": -1}",
    };
    for (size_t k = 0; k < sizeof(edits) / sizeof(edits[0]); k++) {
        char *text;
        if (!edits[k]) {
            text = strdup("version 1, surely");
        } else {
            json_t *c2 = json_deep_copy(cfg);
            json_t *patch = json_loads(edits[k], 0, NULL);
            assert_non_null(patch);
            if (json_object_size(patch) == 0)
                json_object_clear(c2);
            json_object_update_recursive(c2, patch);
            json_decref(patch);
            text = json_dumps(c2, JSON_COMPACT);
            json_decref(c2);
        }
        seal_to(r, 'C', text, strlen(text), h.config);
        e = (struct err)ERR_INIT;
        struct repo *r2 = repo_open(h.dir, PW, &e);
        if (r2)
            fail_msg("crafted config accepted: %s", text);
        bool newer = edits[k] && strstr(edits[k], "version");
        if (e.code != (newer ? ERR_FAILURE : ERR_DAMAGE))
            fail_msg("crafted config %s: %s: %s", text, err_code_name(e.code), e.msg);
        free(text);
    }
    /* A config sealed as another kind of file. */
    {
        char *text = json_dumps(cfg, JSON_COMPACT);
        seal_to(r, 'I', text, strlen(text), h.config);
        e = (struct err)ERR_INIT;
        assert_null(repo_open(h.dir, PW, &e));
        assert_err(e, ERR_DAMAGE);
        /* ...and an out-of-range compression level: opens, and still writes and reads. */
        json_t *c2 = json_deep_copy(cfg);
        json_object_set_new(c2, "compression", json_integer((json_int_t)1 << 40));
        free(text);
        text = json_dumps(c2, JSON_COMPACT);
        json_decref(c2);
        seal_to(r, 'C', text, strlen(text), h.config);
        free(text);
        e = (struct err)ERR_INIT;
        struct repo *r2 = repo_open(h.dir, PW, &e);
        if (r2) {
            struct repo_writer *w = repo_writer_new(r2, 1);
            uint8_t id[32], data[5000];
            fill_blob(30, data, sizeof(data));
            add_ok(r2, w, 0, data, sizeof(data), id);
            flush_ok(w);
            repo_writer_free(w);
            assert_blob(r2, id, data, sizeof(data));
            repo_close(r2);
        }
    }
    file_write(h.config, craw, clen0);
    free(craw);
    json_decref(cfg);
    buf_free(&raw);

    /* --- orphan packs with authenticated trailers that lie, in both pack versions --- */
    size_t plen;
    uint8_t *pack = file_read(h.pack, &plen);
    size_t body = plen - PACK_FOOTER_V2_LEN - pack_v2_trailer_len(r, pack, plen); /* + blobs */
    for (int cv = 0; cv < 2 * 9; cv++) {
        int version = 1 + cv / 9, c = cv % 9;
        if (version == 1 && c >= 7)
            continue; /* the padding and its count are version 2's */
        struct buf t = {0};
        uint8_t fake[32];
        uint32_t count = UINT32_MAX;
        size_t pad = 0;
        uint8_t pad_byte = 0;
        memset(fake, 0x40 + c, sizeof(fake));
        switch (c) {
        case 0: /* offset in the header */
            index_entry(&t, fake, 8, clen[0], ulf[0]);
            break;
        case 1: /* past the end */
            index_entry(&t, fake, off[0], 0xfffffff0u, ulf[0]);
            break;
        case 2: /* clen below the tag */
            index_entry(&t, fake, off[0], 3, ulf[0]);
            break;
        case 3: /* over 64 MiB of plaintext */
            index_entry(&t, fake, off[0], clen[0], ULEN_MASK);
            break;
        case 4: /* not a whole number of entries (v1); a count beyond the trailer (v2) */
            index_entry(&t, fake, off[0], clen[0], ulf[0]);
            if (version == 1)
                buf_append_u8(&t, 1);
            count = 2;
            break;
        case 5: /* an id that is not the blob there */
            index_entry(&t, fake, off[0], clen[0], ulf[0]);
            pad = 100;
            break;
        case 6: /* empty trailer */
            break;
        case 7: /* padding that is not zero */
            index_entry(&t, fake, off[0], clen[0], ulf[0]);
            pad = 100;
            pad_byte = 1;
            break;
        case 8: /* a count that leaves an entry in the padding */
            index_entry(&t, fake, off[0], clen[0], ulf[0]);
            count = 0;
            break;
        }
        struct buf pk = {0};
        char path[PATH_MAX];
        pack_build(r, version, pack, body, t.data, t.len, count, pad, pad_byte, &pk);
        pack_plant(h.dir, pk.data, pk.len, path, sizeof(path));
        buf_free(&pk);
        buf_free(&t);

        e = (struct err)ERR_INIT;
        struct repo *r2 = repo_open(h.dir, PW, &e);
        if (!r2)
            fail_msg("lying trailer v%d case %d: repository does not open: %s", version, c, e.msg);
        size_t ndamage = json_array_size(repo_damage(r2));
        if (ndamage != (c <= 4 || c >= 7 ? 1u : 0u))
            fail_msg("lying trailer v%d case %d: %zu damage reports", version, c, ndamage);
        for (int i = 0; i < HBE; i++)
            assert_blob(r2, h.ids[i], h.data[i], h.len[i]);
        struct buf b = {0};
        e = (struct err)ERR_INIT;
        if (repo_blob_load(r2, fake, &b, &e) == 0)
            fail_msg("lying trailer v%d case %d: a blob nobody wrote loads", version, c);
        assert_err(e, ERR_DAMAGE);
        buf_free(&b);
        json_t *rep = check_report(r2, true);
        bool ok = json_is_true(json_object_get(rep, "ok"));
        /* An empty pack is harmless garbage; every other lie is an error. */
        if (ok != (c == 6)) {
            char *txt = json_dumps(rep, JSON_COMPACT);
            fail_msg("lying trailer v%d case %d: check ok=%d: %s", version, c, ok, txt);
        }
        json_decref(rep);
        repo_close(r2);
        assert_int_equal(unlink(path), 0);
    }
    free(pack);

    /* Files in data/ that are not packs: a warning, no crash. */
    char odd[PATH_MAX];
    snprintf(odd, sizeof(odd), "%s/data/zz", h.dir);
    mkdir(odd, 0700);
    snprintf(odd, sizeof(odd), "%s/data/zz/not-a-pack", h.dir);
    file_write(odd, "hello", 5);
    snprintf(ipath, sizeof(ipath), "%s/data/00", h.dir);
    mkdir(ipath, 0700);
    snprintf(ipath, sizeof(ipath), "%s/data/00/%064d", h.dir, 1);
    file_write(ipath, "short", 5);
    {
        struct repo *r2 = open_ok(h.dir, PW);
        assert_int_equal(json_array_size(repo_damage(r2)), 1); /* the short "pack" */
        json_t *rep = check_report(r2, true);
        assert_true(json_array_size(json_object_get(rep, "warnings")) >= 1);
        json_decref(rep);
        repo_close(r2);
    }
    unlink(odd);
    unlink(ipath);
    repo_close(r);
    hostile_baseline(&h);
    hostile_free(&h);
}

/* repo.h: "out receives its plaintext only if HMAC(plaintext) == id". An index entry whose
 * plaintext length is wrong (well-formed, authenticated metadata that lies) must fail the load
 * without handing the bytes over. */
static void test_failed_load_leaves_no_plaintext(void **state)
{
    (void)state;
    struct hostile h;
    hostile_setup(&h);
    struct repo *r = open_ok(h.dir, PW);
    struct buf tr = {0};
    pack_trailer(r, h.dir, h.pack, &tr);
    const uint8_t *t0 = tr.data; /* blob 0: 300 random bytes, stored raw */
    assert_false(load_u32le(t0 + 40) & ULEN_COMPRESSED);
    uint8_t pid[32];
    assert_int_equal(cx_unhex(strrchr(h.pack, '/') + 1, pid, 32), 0);
    struct buf p = {0}, z = {0};
    buf_append(&p, "CIDX", 4);
    buf_append_u32le(&p, 1);
    buf_append_u32le(&p, 1);
    buf_append(&p, pid, 32);
    buf_append_u32le(&p, 1);
    index_entry(&p, h.ids[0], load_u32le(t0 + 32), load_u32le(t0 + 36), load_u32le(t0 + 40) + 1);
    zstd_into(&z, p.data, p.len);
    char ipath[PATH_MAX];
    snprintf(ipath, sizeof(ipath), "%s/index/%064d", h.dir, 0); /* sorts first: its entry wins */
    seal_to(r, 'I', z.data, z.len, ipath);
    buf_free(&p);
    buf_free(&z);
    buf_free(&tr);
    repo_close(r);

    r = open_ok(h.dir, PW);
    struct buf b = {0};
    struct err e = ERR_INIT;
    int rc = repo_blob_load(r, h.ids[0], &b, &e);
    size_t handed = b.len;
    buf_free(&b);
    repo_close(r);
    hostile_free(&h);
    assert_int_equal(rc, -1);
    assert_err(e, ERR_DAMAGE);
    if (handed != 0)
        fail_msg("failed load left %zu bytes of unverified plaintext in out", handed);
}

/* ---- 5. index memory ----------------------------------------------------------------- */

#ifndef MEM_N
#ifdef UNDER_ASAN
#define MEM_N 200000 /* nothing is measured there (see below): just exercise the path */
#else
#define MEM_N 1000000
#endif
#endif

static void test_index_memory(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &FAST);
    repo_set_compression_level(r, 0);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint8_t blob[16], id[32];
    uint64_t s = 42;
    for (uint64_t i = 0; i < MEM_N; i++) {
        store_u64le(blob, i);
        uint64_t v = splitmix(&s);
        memcpy(blob + 8, &v, 8);
        add_ok(r, w, 0, blob, sizeof(blob), id);
    }
    flush_ok(w);
    repo_writer_free(w);
    repo_close(r);

    /* In use = heap (uordblks) + mmapped chunks (hblkhd): the entry blocks (192 KiB) and the
     * id table are above glibc's mmap threshold, which uordblks alone would not see. */
    struct mallinfo2 m0 = mallinfo2();
    r = open_ok(dir, PW);
    struct mallinfo2 m1 = mallinfo2();
    assert_int_equal(r->nentries, MEM_N);
    assert_int_equal(json_array_size(repo_damage(r)), 0);
    assert_true(repo_has_blob(r, id));
    long long heap = (long long)m1.uordblks - (long long)m0.uordblks;
    long long mapped = (long long)m1.hblkhd - (long long)m0.hblkhd;
    double per = (double)(heap + mapped) / MEM_N;
    /* What the layout predicts: 48-byte entries in blocks of 4096, and a table of 4-byte slots
     * at load factor <= 1/2. */
    size_t blocks = (MEM_N + IBLOCK - 1) / IBLOCK, cap = 1024;
    while ((size_t)MEM_N * 2 > cap)
        cap *= 2;
    double predicted = (double)(blocks * IBLOCK * sizeof(struct ientry) + cap * 4) / MEM_N;
    printf("index memory: %d entries, %lld bytes in use after open (heap %lld, mmap %lld): "
           "%.1f bytes per entry (layout predicts %.1f)\n",
           MEM_N, heap + mapped, heap, mapped, per, predicted);
    /* The worst case is one entry past a doubling of the table: 16 bytes of table per entry
     * plus the last block's slack. */
    size_t worst = cap / 2 + 1, wblocks = (worst + IBLOCK - 1) / IBLOCK;
    printf("index memory: worst case nearby, %zu entries: layout predicts %.2f bytes per entry\n",
           worst, (double)(wblocks * IBLOCK * sizeof(struct ientry) + cap * 2 * 4) / worst);
#ifdef UNDER_ASAN
    printf("index memory: not asserted under a sanitizer (its allocator bypasses mallinfo2)\n");
#else
    assert_true(per <= 64.0);
    assert_true(per >= predicted * 0.95);
#endif
    repo_close(r);
    tmpdir_free(dir);
}

/* ---- 6. snapshots -------------------------------------------------------------------- */

static void test_snapshots(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    const char *ids[] = {"b-middle", "b-first", "b-last"};
    const char *started[] = {"2024-03-02T00:00:00.000Z", "2024-03-01T00:00:00.000Z",
                             "2024-03-03T00:00:00.000Z"};
    char names[3][65];
    json_t *sums[3], *ents[3];
    struct err e = ERR_INIT;
    for (int k = 0; k < 3; k++) {
        sums[k] = json_pack("{s:s, s:s, s:s, s:{s:i}}", "id", ids[k], "started", started[k], "kind",
                            "files", "stats", "files", k);
        ents[k] = json_pack("[{s:s, s:i}, {s:s, s:s}]", "path", ".", "mode", 0755, "path", "é/ü",
                            "type", "file");
        if (save_snapshot(r, sums[k], ents[k], names[k], &e) != 0)
            fail_msg("save_snapshot: %s", e.msg);
        assert_int_equal(strlen(names[k]), 64);
    }
    repo_close(r);
    r = open_ok(dir, PW);
    for (int k = 0; k < 3; k++) {
        json_t *s, *en;
        e = (struct err)ERR_INIT;
        assert_int_equal(repo_snapshot_load(r, names[k], &s, &en, &e), 0);
        assert_true(json_equal(s, sums[k]));
        assert_true(json_equal(en, ents[k]));
        json_decref(s);
        json_decref(en);
        assert_int_equal(repo_snapshot_load(r, names[k], &s, NULL, &e), 0);
        assert_true(json_equal(s, sums[k]));
        json_decref(s);
    }
    json_t *damaged = NULL;
    json_t *list = repo_snapshot_list(r, &damaged, &e);
    assert_non_null(list);
    assert_int_equal(json_array_size(list), 3);
    assert_int_equal(json_array_size(damaged), 0);
    json_decref(damaged);
    /* Oldest first, each with its file name. */
    const int order[] = {1, 0, 2};
    for (int k = 0; k < 3; k++) {
        json_t *s = json_array_get(list, (size_t)k);
        assert_string_equal(json_string_value(json_object_get(s, "id")), ids[order[k]]);
        assert_string_equal(json_string_value(json_object_get(s, "_file")), names[order[k]]);
    }
    json_decref(list);
    char found[65];
    json_t *fs = NULL;
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_snapshot_find(r, "b-last", found, &fs, &e), 0);
    assert_string_equal(found, names[2]);
    assert_string_equal(json_string_value(json_object_get(fs, "id")), "b-last");
    json_decref(fs);
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_snapshot_find(r, "b-none", found, NULL, &e), -1);
    assert_err(e, ERR_NOT_FOUND);

    /* A snapshot file renamed: its content no longer matches its name. */
    char from[PATH_MAX], to[PATH_MAX], wrong[65];
    snprintf(wrong, sizeof(wrong), "%064d", 7);
    snprintf(from, sizeof(from), "%s/snapshots/%s", dir, names[0]);
    snprintf(to, sizeof(to), "%s/snapshots/%s", dir, wrong);
    assert_int_equal(rename(from, to), 0);
    json_t *s = NULL, *en = NULL;
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_snapshot_load(r, wrong, &s, &en, &e), -1);
    assert_err(e, ERR_DAMAGE);
    assert_null(s);
    assert_null(en);
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_snapshot_load(r, names[0], &s, &en, &e), -1);
    assert_err(e, ERR_NOT_FOUND);
    damaged = NULL;
    list = repo_snapshot_list(r, &damaged, &e);
    assert_int_equal(json_array_size(list), 2);
    assert_int_equal(json_array_size(damaged), 1);
    json_decref(list);
    json_decref(damaged);
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_snapshot_find(r, "b-middle", found, NULL, &e), -1);
    assert_err(e, ERR_NOT_FOUND);
    assert_false(check_ok(r, false));
    assert_int_equal(rename(to, from), 0);
    assert_true(check_ok(r, true));

    e = (struct err)ERR_INIT;
    assert_int_equal(repo_snapshot_remove(r, names[1], &e), 0);
    list = repo_snapshot_list(r, NULL, &e);
    assert_int_equal(json_array_size(list), 2);
    json_decref(list);
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_snapshot_find(r, "b-first", found, NULL, &e), -1);
    assert_err(e, ERR_NOT_FOUND);
    for (int k = 0; k < 3; k++) {
        json_decref(sums[k]);
        json_decref(ents[k]);
    }
    repo_close(r);
    tmpdir_free(dir);
}

/* Snapshot names are object names the library builds paths from: anything but 64 hex digits
 * must be refused, not resolved ("../config" is the repository's config). */
/* A snapshot's entries are a stream of content-defined chunks: a second backup of the same
 * tree stores no entries blob again, and one changed (or added) file entry costs a few. */
static json_t *dedup_entry(uint64_t i, uint64_t version)
{
    uint64_t sd = i * 1000003 + 17;
    char path[80], mtime[40], id1[65], id2[65];
    snprintf(path, sizeof(path), "home/user/project-%03llu/src/file-%05llu.c",
             (unsigned long long)(i / 50), (unsigned long long)i);
    snprintf(mtime, sizeof(mtime), "2024-03-%02llu %02llu:%02llu:%02llu.%09llu",
             (unsigned long long)(1 + i % 28), (unsigned long long)(i % 24),
             (unsigned long long)(i % 60), (unsigned long long)((i + version) % 60),
             (unsigned long long)(splitmix(&sd) % 1000000000u));
    uint8_t raw[32];
    fill_random(splitmix(&sd) + version, raw, 32);
    cx_hex(raw, 32, id1);
    fill_random(splitmix(&sd), raw, 32);
    cx_hex(raw, 32, id2);
    json_int_t size = (json_int_t)(splitmix(&sd) % 4000000) + (json_int_t)version;
    return json_pack("{s:s, s:s, s:i, s:i, s:i, s:s, s:s, s:I, s:s, s:s, s:[[s, I], [s, I]]}",
                     "path", path, "type", "file", "mode", 0644, "uid", 1000, "gid", 1000, "user",
                     "user", "group", "staff", "size", size, "mtime", mtime, "ctime", mtime,
                     "chunks", id1, (json_int_t)(size / 2), id2, size - size / 2);
}

static void save_counted(struct repo *r, json_t *entries, const char *id, char name[65],
                         struct repo_writer_stats *st)
{
    json_t *sum = json_pack("{s:s, s:s}", "id", id, "started", "2024-03-01T00:00:00Z");
    struct repo_writer *w = repo_writer_new(r, 1);
    struct err e = ERR_INIT;
    if (repo_snapshot_save(r, w, sum, entries, name, &e) != 0)
        fail_msg("repo_snapshot_save %s: %s", id, e.msg);
    repo_writer_get_stats(w, st);
    repo_writer_free(w);
    json_decref(sum);
}

static void test_snapshot_entries_dedup(void **state)
{
    (void)state;
    enum { N = 5000, MID = N / 2 };
    const struct chunker_params *cp;
    char *dir = tmpdir_new();
    /* How many chunks an edit renews depends on where the content-defined boundaries fall,
     * which depends on the chunker seed: with a random seed the bounds below failed about one
     * run in fifteen (an insertion occasionally renews 4 chunks before the boundaries meet
     * again). A fixed seed makes the outcome the same on every run, and what is proven stays:
     * an edit renews a few chunks, and the boundaries after it are found again. */
    uint8_t seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(0x5a ^ (i * 37));
    struct repo_init_opts o = TINY;
    o.chunker_seed = seed;
    struct repo *r = init_ok(dir, &o);
    cp = repo_chunker_params(r, true);
    json_t *ents = json_array();
    for (uint64_t i = 0; i < N; i++)
        json_array_append_new(ents, dedup_entry(i, 0));
    char names[4][65];
    struct repo_writer_stats st[4];

    /* 1. The first backup stores the whole list: several chunks, one pack, one index file. */
    save_counted(r, ents, "dedup-1", names[0], &st[0]);
    uint64_t chunks = st[0].blobs_new + st[0].blobs_known;
    assert_int_equal(st[0].packs, 1);
    assert_true(st[0].blobs_new >= 5);
    /* big enough that three chunks of the largest size are less than half of it */
    assert_true(st[0].bytes_new > 2 * 3 * (uint64_t)cp->max_size);
    char snapfile[PATH_MAX];
    snprintf(snapfile, sizeof(snapfile), "%s/snapshots/%s", dir, names[0]);
    json_t *ref = snapshot_ref(r, snapfile);
    assert_int_equal(json_array_size(json_object_get(ref, "chunks")), chunks);
    assert_int_equal(json_integer_value(json_object_get(ref, "bytes")), st[0].bytes_new);
    json_decref(ref);
    struct paths idx = paths_list(dir, "index");
    assert_int_equal(idx.n, 1);
    paths_free(&idx);

    /* 2. The same entries again: the same stream, every chunk known; no pack, no index. */
    save_counted(r, ents, "dedup-2", names[1], &st[1]);
    assert_int_equal(st[1].blobs_new, 0);
    assert_int_equal(st[1].bytes_new, 0);
    assert_int_equal(st[1].blobs_known, chunks);
    assert_int_equal(st[1].packs, 0);
    assert_string_not_equal(names[0], names[1]);

    /* 3. One entry in the middle changed (its size, mtime and first chunk). */
    json_t *changed = json_deep_copy(ents);
    assert_int_equal(json_array_set_new(changed, MID, dedup_entry(MID, 1)), 0);
    assert_false(json_equal(changed, ents));
    save_counted(r, changed, "dedup-3", names[2], &st[2]);
    assert_true(st[2].blobs_new >= 1 && st[2].blobs_new <= 3);
    assert_true(st[2].bytes_new * 2 < st[0].bytes_new);
    assert_true(st[2].blobs_known + st[2].blobs_new >= chunks - 3);

    /* 4. One entry inserted in the middle: the boundaries after it are found again. */
    json_t *inserted = json_deep_copy(ents);
    assert_int_equal(json_array_insert_new(inserted, MID, dedup_entry(N + 1, 0)), 0);
    save_counted(r, inserted, "dedup-4", names[3], &st[3]);
    assert_true(st[3].blobs_new >= 1 && st[3].blobs_new <= 3);
    assert_true(st[3].bytes_new * 2 < st[0].bytes_new);
    printf("entries dedup: %d entries, %llu bytes in %llu chunks; again: %llu new; one changed: "
           "%llu new (%llu bytes); one inserted: %llu new (%llu bytes)\n",
           N, (unsigned long long)st[0].bytes_new, (unsigned long long)chunks,
           (unsigned long long)st[1].blobs_new, (unsigned long long)st[2].blobs_new,
           (unsigned long long)st[2].bytes_new, (unsigned long long)st[3].blobs_new,
           (unsigned long long)st[3].bytes_new);
    repo_close(r);

    /* Every snapshot loads back as saved, from a fresh open, and check agrees. */
    r = open_ok(dir, PW);
    json_t *want[4] = {ents, ents, changed, inserted};
    for (int k = 0; k < 4; k++) {
        json_t *s = NULL, *en = NULL;
        struct err e = ERR_INIT;
        if (repo_snapshot_load(r, names[k], &s, &en, &e) != 0)
            fail_msg("snapshot %d: %s", k, e.msg);
        if (!json_equal(en, want[k]))
            fail_msg("snapshot %d loads with different entries", k);
        char id[20];
        snprintf(id, sizeof(id), "dedup-%d", k + 1);
        assert_string_equal(json_string_value(json_object_get(s, "id")), id);
        json_decref(s);
        json_decref(en);
    }
    /* check reads every list: the file entries name chunks that were never stored (made up
     * here), so each backup is reported for exactly that, and nothing else is wrong. */
    json_t *rep = check_report(r, true);
    json_t *stats = json_object_get(rep, "stats"), *errs = json_object_get(rep, "errors");
    assert_int_equal(json_integer_value(json_object_get(stats, "snapshots")), 4);
    assert_int_equal(json_integer_value(json_object_get(stats, "blob_references")), 4 * 2 * N + 2);
    assert_int_equal(json_integer_value(json_object_get(stats, "packs")), 3);
    assert_int_equal(json_integer_value(json_object_get(stats, "index_files")), 3);
    assert_int_equal(json_integer_value(json_object_get(stats, "blobs")),
                     chunks + st[2].blobs_new + st[3].blobs_new);
    assert_int_equal(json_array_size(json_object_get(rep, "warnings")), 0);
    assert_int_equal(json_array_size(errs), 4);
    for (size_t k = 0; k < 4; k++) {
        const char *msg = json_string_value(json_object_get(json_array_get(errs, k), "error"));
        if (!msg || !strstr(msg, "needs blobs that are missing"))
            fail_msg("check: unexpected error %s", msg ? msg : "(none)");
    }
    json_decref(rep);
    repo_close(r);
    json_decref(ents);
    json_decref(changed);
    json_decref(inserted);
    tmpdir_free(dir);
}

static void test_snapshot_names_checked(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    char cfg[PATH_MAX];
    snprintf(cfg, sizeof(cfg), "%s/config", dir);
    json_t *s = json_pack("{s:s}", "id", "x"), *en = json_array();
    char name[65];
    struct err e = ERR_INIT;
    assert_int_equal(save_snapshot(r, s, en, name, &e), 0);
    json_decref(s);
    json_decref(en);
    e = (struct err)ERR_INIT;
    assert_int_equal(repo_snapshot_load(r, "../config", &s, &en, &e), -1);
    e = (struct err)ERR_INIT;
    int rc = repo_snapshot_remove(r, "../config", &e);
    bool config_left = fs_exists(cfg);
    repo_close(r);
    tmpdir_free(dir);
    if (rc == 0 || !config_left)
        fail_msg("repo_snapshot_remove(\"../config\") returned %d and %s the repository's config",
                 rc, config_left ? "kept" : "deleted");
}

/* ---- 7. locks ------------------------------------------------------------------------ */

static size_t count_locks(const char *dir)
{
    struct paths ps = paths_list(dir, "locks");
    size_t n = ps.n;
    paths_free(&ps);
    return n;
}

static void put_lock(struct repo *r, const char *name, bool exclusive, long long pid,
                     const char *host, const char *created)
{
    json_t *j = json_pack("{s:b, s:I, s:s, s:s, s:s}", "exclusive", exclusive, "pid",
                          (json_int_t)pid, "host", host, "created", created, "operation", "test");
    char *text = json_dumps(j, JSON_COMPACT);
    struct err e = ERR_INIT;
    assert_int_equal(storage_put(repo_storage(r), name, text, strlen(text), &e), 0);
    free(text);
    json_decref(j);
}

static void lock_expect(struct repo *r, bool exclusive, enum err_code want)
{
    struct err e = ERR_INIT;
    int rc = repo_lock(r, exclusive, "test", &e);
    if (want == ERR_NONE && rc != 0)
        fail_msg("repo_lock(%s): %s", exclusive ? "exclusive" : "shared", e.msg);
    if (want != ERR_NONE) {
        assert_int_equal(rc, -1);
        assert_err(e, want);
    }
}

static void test_locks(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *a = init_ok(dir, &TINY);
    struct repo *b = open_ok(dir, PW), *c = open_ok(dir, PW);

    lock_expect(a, false, ERR_NONE);
    lock_expect(b, false, ERR_NONE); /* shared + shared */
    assert_int_equal(count_locks(dir), 2);
    lock_expect(c, true, ERR_LOCKED); /* exclusive against live shared locks */
    assert_int_equal(count_locks(dir), 2);
    repo_unlock(a);
    lock_expect(c, true, ERR_LOCKED);
    repo_unlock(b);
    assert_int_equal(count_locks(dir), 0);
    lock_expect(c, true, ERR_NONE);
    lock_expect(a, false, ERR_LOCKED); /* shared against a live exclusive */
    lock_expect(b, true, ERR_LOCKED);
    repo_unlock(c);
    assert_int_equal(count_locks(dir), 0);

    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    char now[40];
    time_format_iso(time_now_ns(), now, sizeof(now));
    /* A pid that certainly does not exist: a child that has exited and been reaped. */
    pid_t dead = fork();
    assert_true(dead >= 0);
    if (dead == 0)
        _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);
    assert_int_equal(kill(dead, 0), -1);

    /* Stale: same host, process gone. Ignored by shared and exclusive lockers. */
    put_lock(a, "locks/00000000000000000000000000000001", true, dead, host, now);
    lock_expect(b, false, ERR_NONE);
    repo_unlock(b);
    lock_expect(b, true, ERR_NONE);
    repo_unlock(b);
    /* Stale: older than the 24-hour lease, whatever its host. */
    put_lock(a, "locks/00000000000000000000000000000002", true, 1, "another-host",
             "2000-01-01T00:00:00.000Z");
    lock_expect(b, true, ERR_NONE);
    repo_unlock(b);
    /* Not stale: a live process of ours, or a dead pid on another host (we cannot know). */
    put_lock(a, "locks/00000000000000000000000000000003", false, getpid(), host, now);
    lock_expect(b, true, ERR_LOCKED);
    lock_expect(b, false, ERR_NONE);
    repo_unlock(b);
    struct err e = ERR_INIT;
    assert_int_equal(storage_remove(repo_storage(a), "locks/00000000000000000000000000000003", &e),
                     0);
    put_lock(a, "locks/00000000000000000000000000000004", false, dead, "another-host", now);
    lock_expect(b, true, ERR_LOCKED);
    assert_int_equal(storage_remove(repo_storage(a), "locks/00000000000000000000000000000004", &e),
                     0);
    lock_expect(b, true, ERR_NONE);
    /* repo_close releases the lock. */
    repo_close(b);
    assert_int_equal(count_locks(dir), 2); /* the two stale ones we planted */
    repo_close(a);
    repo_close(c);
    tmpdir_free(dir);
}

/* ---- 8. orphan packs ----------------------------------------------------------------- */

#define ORPHAN_N 20

static bool pack_adopted(struct repo *r, const uint8_t id[32])
{
    char hex[65];
    assert_non_null(repo_blob_pack(r, id, hex));
    uint8_t pid[32];
    assert_int_equal(cx_unhex(hex, pid, 32), 0);
    long p = repo_find_pack_locked(r, pid);
    assert_true(p >= 0);
    return r->packs[p].source == -1;
}

/* A process that keeps a repository open (the daemon) sees, after repo_refresh, the blobs
 * another handle stored since, without deriving the key again; a blob it saw before stays. */
static void test_refresh_sees_others(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *a = init_ok(dir, &TINY);
    uint8_t buf[5000], id1[32], id2[32];
    fill_random(71, buf, sizeof(buf));
    struct repo_writer *w = repo_writer_new(a, 1);
    assert_int_equal(add_ok(a, w, 0, buf, sizeof(buf), id1), 1);
    flush_ok(w);
    repo_writer_free(w);

    struct repo *b = open_ok(dir, PW);
    uint8_t buf2[7000];
    fill_random(72, buf2, sizeof(buf2));
    w = repo_writer_new(b, 1);
    assert_int_equal(add_ok(b, w, 0, buf2, sizeof(buf2), id2), 1);
    flush_ok(w);
    repo_writer_free(w);
    repo_close(b);

    assert_false(repo_has_blob(a, id2)); /* a read the index before b wrote */
    struct err e = ERR_INIT;
    if (repo_refresh(a, &e) != 0)
        fail_msg("repo_refresh: %s", e.msg);
    assert_true(repo_has_blob(a, id1));
    assert_true(repo_has_blob(a, id2));
    assert_blob(a, id2, buf2, sizeof(buf2));
    assert_blob(a, id1, buf, sizeof(buf));
    repo_close(a);
    tmpdir_free(dir);
}

static void test_orphan_adoption(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &FAST);
    size_t n = 1u << 20;
    uint8_t *data = malloc(n);
    uint8_t ids[ORPHAN_N][32];
    struct repo_writer *w = repo_writer_new(r, 1);
    for (int i = 0; i < ORPHAN_N; i++) {
        fill_random(5000 + (uint64_t)i, data, n);
        add_ok(r, w, 0, data, n, ids[i]);
    }
    struct repo_writer_stats st;
    repo_writer_get_stats(w, &st);
    /* one full pack (the sixteenth MiB would take it past 16 MiB: it opened the next); the
     * rest sits in the open pack */
    assert_int_equal(st.packs, 1);
    repo_writer_free(w); /* interrupted: no flush */
    repo_close(r);
    struct paths ps = paths_list(dir, "index");
    assert_int_equal(ps.n, 0);
    paths_free(&ps);
    ps = paths_list(dir, "data");
    assert_int_equal(ps.n, 1);
    paths_free(&ps);

    r = open_ok(dir, PW);
    assert_int_equal(json_array_size(repo_damage(r)), 0);
    int in_pack = 0;
    for (int i = 0; i < ORPHAN_N; i++)
        if (repo_has_blob(r, ids[i])) {
            in_pack++;
            assert_true(pack_adopted(r, ids[i]));
            fill_random(5000 + (uint64_t)i, data, n);
            assert_blob(r, ids[i], data, n);
        }
    assert_int_equal(in_pack, 15);
    for (int i = 0; i < in_pack; i++)
        assert_true(repo_has_blob(r, ids[i])); /* the first fifteen */
    assert_int_equal(r->nadopted, 1);
    /* check: an adopted pack is a warning (the next backup indexes it), not an error */
    json_t *rep0 = check_report(r, true);
    assert_true(json_is_true(json_object_get(rep0, "ok")));
    assert_int_equal(json_array_size(json_object_get(rep0, "warnings")), 1);
    json_decref(rep0);

    /* The next backup finds them: only the five lost ones are stored again. */
    w = repo_writer_new(r, 1);
    for (int i = 0; i < ORPHAN_N; i++) {
        fill_random(5000 + (uint64_t)i, data, n);
        uint8_t id[32];
        add_ok(r, w, 0, data, n, id);
    }
    flush_ok(w);
    repo_writer_get_stats(w, &st);
    assert_int_equal(st.blobs_known, 15);
    assert_int_equal(st.blobs_new, ORPHAN_N - 15);
    repo_writer_free(w);
    repo_close(r);

    /* Flushed: the adopted pack is now listed by the new index file. */
    ps = paths_list(dir, "index");
    assert_int_equal(ps.n, 1);
    paths_free(&ps);
    r = open_ok(dir, PW);
    assert_int_equal(r->nadopted, 0);
    for (int i = 0; i < ORPHAN_N; i++) {
        assert_true(repo_has_blob(r, ids[i]));
        assert_false(pack_adopted(r, ids[i]));
    }
    fill_random(5000 + ORPHAN_N - 1, data, n);
    assert_blob(r, ids[ORPHAN_N - 1], data, n);
    json_t *rep = check_report(r, true);
    assert_true(json_is_true(json_object_get(rep, "ok")));
    assert_int_equal(json_array_size(json_object_get(rep, "warnings")), 0);
    json_decref(rep);
    repo_close(r);
    free(data);
    tmpdir_free(dir);
}

/* A writer abandoned without flush (a backup that failed) must not leave its unwritten blobs
 * looking stored to the next writer of the same open repository: that backup would commit a
 * snapshot needing blobs that were never written. */
static void test_abandoned_writer_no_phantom_blobs(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    uint8_t ids[3][32];
    const char *data[3] = {"first chunk", "second chunk", "third chunk"};
    struct repo_writer *w = repo_writer_new(r, 1);
    for (int i = 0; i < 3; i++)
        add_ok(r, w, 0, data[i], strlen(data[i]), ids[i]);
    repo_writer_free(w); /* the backup failed: nothing was written */
    for (int i = 0; i < 3; i++)
        assert_false(repo_has_blob(r, ids[i]));

    /* The next backup, same process, same repository handle. */
    w = repo_writer_new(r, 1);
    for (int i = 0; i < 3; i++)
        add_ok(r, w, 0, data[i], strlen(data[i]), ids[i]);
    flush_ok(w);
    struct repo_writer_stats st;
    repo_writer_get_stats(w, &st);
    int stored = (int)st.blobs_new;
    repo_writer_free(w);
    repo_close(r);

    r = open_ok(dir, PW);
    int present = 0;
    for (int i = 0; i < 3; i++)
        present += repo_has_blob(r, ids[i]);
    repo_close(r);
    tmpdir_free(dir);
    if (stored != 3 || present != 3)
        fail_msg("after an abandoned writer, the next writer stored %d of 3 blobs (the others "
                 "reported as known); after flush %d of 3 are in the repository",
                 stored, present);
}

/* ---- pack format 2: size side channels, bounded lengths, version 1 still read ---------- */

/* Writes an index file of the given version listing one pack (no padding, which version 2
 * allows but does not need); path receives its path. */
static void index_write(struct repo *r, const char *dir, uint32_t version, const uint8_t pid[32],
                        const uint8_t *entries, size_t elen, char *path, size_t pathlen)
{
    struct buf idx = {0}, zi = {0}, sealed = {0};
    struct err e = ERR_INIT;
    buf_append(&idx, "CIDX", 4);
    buf_append_u32le(&idx, version);
    buf_append_u32le(&idx, 1);
    buf_append(&idx, pid, 32);
    buf_append_u32le(&idx, (uint32_t)(elen / PACK_TRAILER_ENTRY_LEN));
    buf_append(&idx, entries, elen);
    zstd_into(&zi, idx.data, idx.len);
    assert_int_equal(container_seal(r, 'I', zi.data, zi.len, &sealed, &e), 0);
    uint8_t iid[32];
    char hex[65];
    cx_sha256(sealed.data, sealed.len, iid);
    cx_hex(iid, 32, hex);
    snprintf(path, pathlen, "%s/index", dir);
    mkdir(path, 0700);
    snprintf(path, pathlen, "%s/index/%s", dir, hex);
    file_write(path, sealed.data, sealed.len);
    buf_free(&sealed);
    buf_free(&idx);
    buf_free(&zi);
}

/* A version 1 repository's pack, built by hand as the version 1 writer made them (the layout
 * of docs/REPOSITORY-FORMAT.md): one blob stored raw, one zstd-compressed, the trailer under the
 * all-ones nonce with its length in clear, listed by a version 1 index file. It must still
 * open, load, check (with --read-data) and adopt, next to version 2 packs. */
static void v1_pack_fixture(struct repo *r, const char *dir, uint8_t ids[2][32], char *pack_path,
                            size_t plen, char *index_path, size_t ilen)
{
    static const char raw_text[] = "a version 1 blob, stored raw";
    static char big[20000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = "version one, compressed "[i % 24];
    repo_chunk_id(r, raw_text, sizeof(raw_text) - 1, ids[0]);
    repo_chunk_id(r, big, sizeof(big), ids[1]);
    struct buf body = {0}, z = {0}, entries = {0};
    uint8_t salt[32], key[32], nonce[CX_NONCE_LEN];
    struct err e = ERR_INIT;
    fill_random(4242, salt, sizeof(salt));
    buf_append(&body, "CARISPK1", 8);
    buf_append(&body, salt, 32);
    assert_int_equal(pack_derive_key(r, salt, key, &e), 0);
    zstd_into(&z, big, sizeof(big));
    const void *payload[2] = {raw_text, z.data};
    size_t plens[2] = {sizeof(raw_text) - 1, z.len};
    uint32_t ulf[2] = {sizeof(raw_text) - 1, (uint32_t)sizeof(big) | ULEN_COMPRESSED};
    for (int i = 0; i < 2; i++) {
        uint32_t off = (uint32_t)body.len;
        pack_nonce(off, nonce);
        buf_reserve(&body, plens[i] + CX_TAG_LEN);
        assert_int_equal(
            cx_aead_seal(key, nonce, ids[i], 32, payload[i], plens[i], body.data + off, &e), 0);
        body.len += plens[i] + CX_TAG_LEN;
        index_entry(&entries, ids[i], off, (uint32_t)(plens[i] + CX_TAG_LEN), ulf[i]);
    }
    cx_wipe(key, sizeof(key));
    struct buf pk = {0};
    pack_build(r, 1, body.data, body.len, entries.data, entries.len, UINT32_MAX, 0, 0, &pk);
    pack_plant(dir, pk.data, pk.len, pack_path, plen);
    uint8_t pid[32];
    cx_sha256(pk.data, pk.len, pid);
    index_write(r, dir, 1, pid, entries.data, entries.len, index_path, ilen);
    buf_free(&pk);
    buf_free(&body);
    buf_free(&z);
    buf_free(&entries);
}

static void test_pack_v1_still_read(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    uint8_t ids[2][32];
    char pack_path[PATH_MAX], index_path[PATH_MAX];
    v1_pack_fixture(r, dir, ids, pack_path, sizeof(pack_path), index_path, sizeof(index_path));
    repo_close(r);

    static const char raw_text[] = "a version 1 blob, stored raw";
    static char big[20000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = "version one, compressed "[i % 24];
    for (int round = 0; round < 2; round++) {
        /* round 0: listed by the version 1 index; round 1: an orphan, adopted through its
         * (version 1) trailer */
        r = open_ok(dir, PW);
        assert_int_equal(json_array_size(repo_damage(r)), 0);
        assert_blob(r, ids[0], raw_text, sizeof(raw_text) - 1);
        assert_blob(r, ids[1], big, sizeof(big));
        assert_int_equal(pack_adopted(r, ids[0]), round == 1);
        if (round == 1) {
            struct buf tr = {0};
            pack_trailer(r, dir, pack_path, &tr);
            assert_int_equal(tr.len, 2 * PACK_TRAILER_ENTRY_LEN);
            assert_memory_equal(tr.data, ids[0], 32);
            buf_free(&tr);
        }
        json_t *rep = check_report(r, true);
        if (!json_is_true(json_object_get(rep, "ok"))) {
            char *txt = json_dumps(rep, JSON_COMPACT);
            fail_msg("round %d: check --read-data on a version 1 pack: %s", round, txt);
        }
        json_decref(rep);
        /* A version 2 backup next to it: the known blob is not stored again. */
        struct repo_writer *w = repo_writer_new(r, 2);
        uint8_t id[32], nid[32];
        assert_int_equal(add_ok(r, w, 0, raw_text, sizeof(raw_text) - 1, id), 0);
        char fresh[64];
        int fl = snprintf(fresh, sizeof(fresh), "a version 2 blob, round %d", round);
        assert_int_equal(add_ok(r, w, 1, fresh, (size_t)fl, nid), 1);
        flush_ok(w);
        repo_writer_free(w);
        repo_close(r);
        r = open_ok(dir, PW);
        assert_blob(r, nid, fresh, (size_t)fl);
        assert_blob(r, ids[1], big, sizeof(big));
        assert_true(check_ok(r, true));
        repo_close(r);
        if (round == 0) {
            /* drop every index file: the packs, version 1 and 2, are found by their trailers */
            struct paths ps = paths_list(dir, "index");
            for (size_t i = 0; i < ps.n; i++)
                assert_int_equal(unlink(ps.v[i]), 0);
            paths_free(&ps);
        }
    }
    tmpdir_free(dir);
}

/* Prune refuses, and returns, when several backups cannot be read (their entries' packs are
 * gone): what they need is unknown. (It used to leave a mutex locked after the first one and
 * hang on the second, holding the exclusive lock.) */
static void test_prune_refuses_unreadable(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    for (int k = 0; k < 3; k++) {
        char id[32];
        snprintf(id, sizeof(id), "unreadable-%d", k);
        json_t *entries = json_pack("[{s:s, s:i}]", "path", id, "size", k);
        json_t *sum = json_pack("{s:s, s:s}", "id", id, "started", "2024-03-01T00:00:00Z");
        struct repo_writer *w = repo_writer_new(r, 1);
        struct err e = ERR_INIT;
        char name[65];
        if (repo_snapshot_save(r, w, sum, entries, name, &e) != 0)
            fail_msg("repo_snapshot_save: %s", e.msg);
        repo_writer_free(w);
        json_decref(sum);
        json_decref(entries);
    }
    repo_close(r);
    struct paths ps = paths_list(dir, "data");
    assert_true(ps.n >= 3);
    for (size_t i = 0; i < ps.n; i++)
        assert_int_equal(unlink(ps.v[i]), 0);
    paths_free(&ps);

    r = open_ok(dir, PW);
    struct err e = ERR_INIT;
    if (repo_lock(r, true, "prune", &e) != 0)
        fail_msg("repo_lock: %s", e.msg);
    struct repo_prune_opts po = {.max_unused = 5};
    struct repo_prune_stats st;
    assert_int_equal(repo_prune(r, &po, &st, &e), -1);
    assert_non_null(strstr(e.msg, "cannot be read"));
    repo_unlock(r);
    repo_close(r);
    tmpdir_free(dir);
}

/* Prune rewrites a version 1 pack like any other: only its referenced blob is kept, in a
 * version 2 pack, and the version 1 pack is gone. */
static void test_prune_repacks_v1(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    uint8_t ids[2][32];
    char pack_path[PATH_MAX], index_path[PATH_MAX];
    v1_pack_fixture(r, dir, ids, pack_path, sizeof(pack_path), index_path, sizeof(index_path));
    repo_close(r);
    static const char raw_text[] = "a version 1 blob, stored raw";

    r = open_ok(dir, PW);
    char hex[65], name[65];
    cx_hex(ids[0], 32, hex);
    json_t *entries = json_pack("[{s:[[s, i]]}]", "chunks", hex, (int)(sizeof(raw_text) - 1));
    json_t *sum = json_pack("{s:s, s:s}", "id", "keeps-one", "started", "2024-03-01T00:00:00Z");
    struct repo_writer *w = repo_writer_new(r, 1);
    struct err e = ERR_INIT;
    if (repo_snapshot_save(r, w, sum, entries, name, &e) != 0)
        fail_msg("repo_snapshot_save: %s", e.msg);
    repo_writer_free(w);
    json_decref(sum);
    json_decref(entries);
    if (repo_lock(r, true, "prune", &e) != 0)
        fail_msg("repo_lock: %s", e.msg);
    struct repo_prune_opts po = {.max_unused = 0};
    struct repo_prune_stats st;
    if (repo_prune(r, &po, &st, &e) != 0)
        fail_msg("prune of a version 1 pack: %s", e.msg);
    repo_unlock(r);
    assert_true(st.packs_repacked + st.packs_deleted >= 1);
    assert_int_equal(st.blobs_repacked, 1);
    repo_close(r);
    assert_int_equal(access(pack_path, F_OK), -1); /* the version 1 pack is gone */

    r = open_ok(dir, PW);
    assert_blob(r, ids[0], raw_text, sizeof(raw_text) - 1);
    assert_false(repo_has_blob(r, ids[1]));
    assert_true(check_ok(r, true));
    repo_close(r);
    tmpdir_free(dir);
}

/* The pack and index file sizes tell neither blob counts nor single chunk sizes: every data
 * slot's open pack is merged into one at flush, packs and index files are padded to pad_size,
 * and the trailer length is sealed. */
static void test_pack_sizes_hidden(void **state)
{
    (void)state;
    assert_int_equal(pad_size(1, PACK_MIN_SIZE), PACK_MIN_SIZE);
    assert_int_equal(pad_size(PACK_MIN_SIZE, PACK_MIN_SIZE), PACK_MIN_SIZE);
    assert_int_equal(pad_size(PACK_MIN_SIZE + 1, PACK_MIN_SIZE), PACK_MIN_SIZE + 2048);
    assert_int_equal(pad_size((16u << 20) + 1, 0), (16u << 20) + (512u << 10));
    assert_int_equal(pad_size(5000, 0), 5120);
    for (uint64_t n = 4096; n < (200u << 20); n = n * 21 / 16 + 7) {
        uint64_t p = pad_size(n, 0);
        assert_true(p >= n && p - n <= n / 16);
        assert_int_equal(pad_size(p, 0), p);
    }

    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    uint8_t *buf = malloc(1u << 20);
    uint8_t id[32];
    /* Four slots, each with a few small blobs of different sizes: one data pack, whose size
     * is the minimum; and a session that stores one blob gives the same sizes. */
    size_t sizes[2][3]; /* [session][pack, index, number of packs] */
    for (int sess = 0; sess < 2; sess++) {
        struct repo_writer *w = repo_writer_new(r, 4);
        int nb = sess == 0 ? 13 : 1;
        for (int i = 0; i < nb; i++) {
            uint64_t seed = 900 + (uint64_t)sess * 100 + (uint64_t)i;
            size_t n = blob_len(seed) / 10 + 1;
            fill_random(seed, buf, n);
            add_ok(r, w, i % 4, buf, n, id);
        }
        struct paths before = paths_list(dir, "data"), ib = paths_list(dir, "index");
        flush_ok(w);
        struct repo_writer_stats st;
        repo_writer_get_stats(w, &st);
        repo_writer_free(w);
        struct paths after = paths_list(dir, "data"), ia = paths_list(dir, "index");
        sizes[sess][2] = after.n - before.n;
        assert_int_equal(st.packs, sizes[sess][2]);
        assert_int_equal(ia.n, ib.n + 1);
        for (size_t k = 0; k < after.n; k++) {
            bool old = false;
            for (size_t q = 0; q < before.n; q++)
                old |= strcmp(after.v[k], before.v[q]) == 0;
            if (!old)
                sizes[sess][0] = file_size(after.v[k]);
        }
        for (size_t k = 0; k < ia.n; k++) {
            bool old = false;
            for (size_t q = 0; q < ib.n; q++)
                old |= strcmp(ia.v[k], ib.v[q]) == 0;
            if (!old)
                sizes[sess][1] = file_size(ia.v[k]);
        }
        paths_free(&before);
        paths_free(&after);
        paths_free(&ib);
        paths_free(&ia);
    }
    printf("sizes hidden: 13 blobs over 4 slots: %zu pack(s) of %zu bytes, index %zu bytes; "
           "1 blob: %zu pack(s) of %zu bytes, index %zu bytes\n",
           sizes[0][2], sizes[0][0], sizes[0][1], sizes[1][2], sizes[1][0], sizes[1][1]);
    assert_int_equal(sizes[0][2], 1); /* the four slots' open packs merged */
    assert_int_equal(sizes[1][2], 1);
    assert_int_equal(sizes[0][0], PACK_MIN_SIZE);
    assert_int_equal(sizes[1][0], PACK_MIN_SIZE);
    assert_int_equal(sizes[0][1], INDEX_MIN_SIZE);
    assert_int_equal(sizes[1][1], INDEX_MIN_SIZE);

    /* Merging past a full pack: two slots of 10 MiB each end as one full pack and one more;
     * every blob loads and a full check passes. */
    struct repo_writer *w = repo_writer_new(r, 2);
    uint8_t ids[20][32];
    for (int i = 0; i < 20; i++) {
        fill_random(7000 + (uint64_t)i, buf, 1u << 20);
        add_ok(r, w, i % 2, buf, 1u << 20, ids[i]);
    }
    flush_ok(w);
    struct repo_writer_stats st;
    repo_writer_get_stats(w, &st);
    repo_writer_free(w);
    assert_int_equal(st.packs, 2);
    repo_close(r);
    r = open_ok(dir, PW);
    for (int i = 0; i < 20; i++) {
        fill_random(7000 + (uint64_t)i, buf, 1u << 20);
        assert_blob(r, ids[i], buf, 1u << 20);
    }
    struct paths ps = paths_list(dir, "data");
    for (size_t k = 0; k < ps.n; k++) {
        size_t n = file_size(ps.v[k]);
        assert_int_equal(pad_size(n, PACK_MIN_SIZE), n);
        assert_true(n <= PACK_MAX_SIZE);
    }
    paths_free(&ps);
    assert_true(check_ok(r, true));
    repo_close(r);
    free(buf);
    tmpdir_free(dir);
}

/* A full pack is padded to exactly REPO_PACK_TARGET (a step of pad_size): the blob that
 * would take it past the target goes to the next pack, instead of the pack closing just past
 * the target and being padded to the next step (+512 KiB). Incompressible blobs of uneven
 * sizes into one slot: every pack but the last is exactly the target, and all of them load. */
static void test_full_packs_exact(void **state)
{
    (void)state;
    assert_int_equal(pad_size(REPO_PACK_TARGET, PACK_MIN_SIZE), REPO_PACK_TARGET);
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    enum { NBLOBS = 330 };
    uint8_t *buf = malloc(200u << 10);
    uint8_t(*ids)[32] = malloc(NBLOBS * 32);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint64_t total = 0;
    for (int i = 0; i < NBLOBS; i++) {
        size_t n = (100u << 10) + (size_t)i * 307;
        fill_random(51000 + (uint64_t)i, buf, n);
        add_ok(r, w, 0, buf, n, ids[i]);
        total += n;
    }
    flush_ok(w);
    struct repo_writer_stats st;
    repo_writer_get_stats(w, &st);
    repo_writer_free(w);
    struct paths ps = paths_list(dir, "data");
    size_t full = 0, other = 0;
    uint64_t sum = 0;
    for (size_t k = 0; k < ps.n; k++) {
        size_t n = file_size(ps.v[k]);
        sum += n;
        if (n == REPO_PACK_TARGET)
            full++;
        else
            other++;
    }
    paths_free(&ps);
    printf("full packs: %zu of exactly %u bytes, %zu other; %llu bytes for %llu of blobs\n", full,
           REPO_PACK_TARGET, other, (unsigned long long)sum, (unsigned long long)total);
    assert_int_equal(st.packs, full + other);
    assert_true(full >= 2);
    assert_int_equal(other, 1);
    /* nothing but the last pack's padding beyond 60 bytes a blob and the headers */
    assert_true(sum - total < (uint64_t)NBLOBS * 64 + (st.packs * 128) + (1u << 20));
    repo_close(r);
    r = open_ok(dir, PW);
    for (int i = 0; i < NBLOBS; i++) {
        size_t n = (100u << 10) + (size_t)i * 307;
        fill_random(51000 + (uint64_t)i, buf, n);
        assert_blob(r, ids[i], buf, n);
    }
    assert_true(check_ok(r, true));
    repo_close(r);
    free(ids);
    free(buf);
    tmpdir_free(dir);
}

/* Bytes of the temporary files (".tmp-*") directly in dir/data: the packs being written. */
static uint64_t data_temp_bytes(const char *dir, size_t *count)
{
    char *p;
    assert_true(asprintf(&p, "%s/data", dir) > 0);
    DIR *d = opendir(p);
    uint64_t sum = 0;
    *count = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, ".tmp-", 5) != 0)
            continue;
        char *f;
        assert_true(asprintf(&f, "%s/%s", p, de->d_name) > 0);
        sum += file_size(f);
        (*count)++;
        free(f);
    }
    if (d)
        closedir(d);
    free(p);
    return sum;
}

/* A pack is written to a temporary file as it fills, not held in memory until it is full:
 * after 12 MiB of incompressible blobs in one slot (a pack not yet full), the writer holds
 * less than 4 MiB more than before (it held the whole pack: 12 MiB), and a temporary file in
 * data/ has the bytes. The second slot's open pack (a file and the stage, and one blob
 * larger than the stage, compressed, so sealed in place) is merged into the first at the
 * flush, read back from its file; afterwards no temporary file is left and every blob reads
 * back from the packs. */
static void test_pack_written_as_it_fills(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    enum { BLOB = 256u << 10, NA = 48, NB = 12 };
    uint8_t *buf = malloc(3u << 20);
    uint8_t(*ids)[32] = malloc((NA + NB + 1) * 32);
    struct repo_writer *w = repo_writer_new(r, 2);
    /* the first blob sets up the slot (compression context, buffers) */
    fill_random(61000, buf, BLOB);
    add_ok(r, w, 0, buf, BLOB, ids[0]);
    struct mallinfo2 m0 = mallinfo2();
    for (int i = 1; i < NA; i++) {
        fill_random(61000 + (uint64_t)i, buf, BLOB);
        add_ok(r, w, 0, buf, BLOB, ids[i]);
    }
    struct mallinfo2 m1 = mallinfo2();
    long long held = ((long long)m1.uordblks + (long long)m1.hblkhd) -
                     ((long long)m0.uordblks + (long long)m0.hblkhd);
    size_t ntemp;
    uint64_t temp = data_temp_bytes(dir, &ntemp);
    printf("pack being written: %u MiB of blobs added, %lld bytes more in memory, %llu bytes in "
           "%zu temporary file(s)\n",
           (unsigned)((NA - 1) * BLOB >> 20), held, (unsigned long long)temp, ntemp);
    assert_int_equal(ntemp, 1);
    /* all but the last stage (at most 1 MiB) is in the file */
    assert_true(temp >= (uint64_t)NA * BLOB - (1u << 20));
#ifdef UNDER_ASAN
    printf("writer memory: not asserted under a sanitizer (its allocator bypasses mallinfo2)\n");
#else
    assert_true(held < (4ll << 20));
#endif
    for (int i = 0; i < NB; i++) {
        fill_random(62000 + (uint64_t)i, buf, BLOB);
        add_ok(r, w, 1, buf, BLOB, ids[NA + i]);
    }
    /* 3 MiB: random and zero halves, about 1.5 MiB compressed, larger than the stage */
    fill_random(63000, buf, 3u << 19);
    memset(buf + (3u << 19), 0, 3u << 19);
    add_ok(r, w, 1, buf, 3u << 20, ids[NA + NB]);
    data_temp_bytes(dir, &ntemp);
    assert_int_equal(ntemp, 2);
    flush_ok(w);
    repo_writer_free(w);
    data_temp_bytes(dir, &ntemp);
    assert_int_equal(ntemp, 0);
    repo_close(r);
    r = open_ok(dir, PW);
    for (int i = 0; i < NA + NB; i++) {
        fill_random((i < NA ? 61000 + (uint64_t)i : 62000 + (uint64_t)(i - NA)), buf, BLOB);
        assert_blob(r, ids[i], buf, BLOB);
    }
    fill_random(63000, buf, 3u << 19);
    memset(buf + (3u << 19), 0, 3u << 19);
    assert_blob(r, ids[NA + NB], buf, 3u << 20);
    assert_true(check_ok(r, true));
    repo_close(r);
    free(ids);
    free(buf);
    tmpdir_free(dir);
}

/* check --read-data authenticates each pack's trailer with its padding, and compares it with
 * the index: a pack renamed after its bytes were changed only there (blobs intact) is found. */
static void test_check_reads_trailer(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint8_t ids[2][32];
    add_ok(r, w, 0, "first blob of the pack", 22, ids[0]);
    add_ok(r, w, 0, "second blob of the pack", 23, ids[1]);
    flush_ok(w);
    repo_writer_free(w);
    char *orig = only_file(dir, "data"), *oidx = only_file(dir, "index");
    size_t plen, ilen;
    uint8_t *pack = file_read(orig, &plen), *idx = file_read(oidx, &ilen);
    struct buf tr = {0};
    pack_trailer(r, dir, orig, &tr);
    assert_int_equal(tr.len, 2 * PACK_TRAILER_ENTRY_LEN);
    size_t body = plen - PACK_FOOTER_V2_LEN - pack_v2_trailer_len(r, pack, plen);
    assert_true(check_ok(r, true));
    repo_close(r);
    assert_int_equal(unlink(orig), 0);
    assert_int_equal(unlink(oidx), 0);
    for (int c = 0; c < 2; c++) {
        r = open_ok(dir, PW);
        struct buf pk = {0};
        char path[PATH_MAX], ipath[PATH_MAX];
        if (c == 0) /* padding that is not zero */
            pack_build(r, 2, pack, body, tr.data, tr.len, UINT32_MAX, 300, 0x01, &pk);
        else /* a trailer that forgot the second blob */
            pack_build(r, 2, pack, body, tr.data, PACK_TRAILER_ENTRY_LEN, UINT32_MAX, 0, 0, &pk);
        pack_plant(dir, pk.data, pk.len, path, sizeof(path));
        uint8_t pid[32];
        cx_sha256(pk.data, pk.len, pid);
        index_write(r, dir, 2, pid, tr.data, tr.len, ipath, sizeof(ipath));
        repo_close(r);
        r = open_ok(dir, PW);
        assert_int_equal(json_array_size(repo_damage(r)), 0); /* listed: no trailer read */
        assert_blob(r, ids[0], "first blob of the pack", 22);
        assert_blob(r, ids[1], "second blob of the pack", 23);
        assert_true(check_ok(r, false));
        json_t *rep = check_report(r, true);
        char *txt = json_dumps(rep, JSON_COMPACT);
        if (json_is_true(json_object_get(rep, "ok")))
            fail_msg("case %d: check --read-data passes a pack whose trailer %s: %s", c,
                     c == 0 ? "has non-zero padding" : "lacks a blob", txt);
        assert_non_null(
            strstr(txt, c == 0 ? "trailer padding is not zero" : "trailer and the index disagree"));
        free(txt);
        json_decref(rep);
        repo_close(r);
        buf_free(&pk);
        assert_int_equal(unlink(path), 0);
        assert_int_equal(unlink(ipath), 0);
    }
    /* the genuine pack and index back: all well */
    file_write(orig, pack, plen);
    file_write(oidx, idx, ilen);
    r = open_ok(dir, PW);
    assert_true(check_ok(r, true));
    repo_close(r);
    buf_free(&tr);
    free(pack);
    free(idx);
    free(orig);
    free(oidx);
    tmpdir_free(dir);
}

/* A planted file in data/ whose clear (version 1) trailer length claims 4 GiB: opening reports
 * it as damage without allocating or reading it. The open runs in a child limited to 1 GiB of
 * address space (not under AddressSanitizer or ThreadSanitizer, which reserve terabytes of
 * it), where the old reader's 4 GiB allocation failed and the process aborted. */
static void test_trailer_length_bounded(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *r = init_ok(dir, &TINY);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint8_t id[32];
    add_ok(r, w, 0, "real data", 9, id);
    flush_ok(w);
    repo_writer_free(w);
    repo_close(r);

    /* Sparse: 4 GiB + 64 bytes, costing no disk. Version 1 header and footer, length 4 GiB - 16. */
    char path[PATH_MAX], dirp[PATH_MAX];
    snprintf(dirp, sizeof(dirp), "%s/data/ab", dir);
    mkdir(dirp, 0700);
    snprintf(path, sizeof(path), "%s/ab%062d", dirp, 7);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    uint64_t size = (4ull << 30) + 64;
    uint8_t head[40] = "CARISPK1", foot[8];
    store_u32le(foot, 0xfffffff0u);
    memcpy(foot + 4, "CPKE", 4);
    assert_int_equal(pwrite(fd, head, sizeof(head), 0), (ssize_t)sizeof(head));
    assert_int_equal(pwrite(fd, foot, sizeof(foot), (off_t)(size - 8)), (ssize_t)sizeof(foot));
    assert_int_equal(close(fd), 0);
    /* and a small one whose claimed entries could not fit their blobs in front of them */
    char small[PATH_MAX];
    {
        struct buf b = {0};
        buf_append(&b, "CARISPK1", 8);
        for (int i = 0; i < 32 + 1000; i++)
            buf_append_u8(&b, (uint8_t)i);
        buf_append_u32le(&b, 16 + 44 * 22); /* 22 entries need 22 * 16 bytes of blobs */
        buf_append(&b, "CPKE", 4);
        pack_plant(dir, b.data, b.len, small, sizeof(small));
        buf_free(&b);
    }

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
#ifndef UNDER_ASAN
        struct rlimit rl = {1ull << 30, 1ull << 30};
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(3);
#endif
        struct err e = ERR_INIT;
        struct repo *r2 = repo_open(dir, PW, &e);
        if (!r2)
            _exit(4);
        json_t *d = repo_damage(r2);
        int found = 0;
        size_t i;
        json_t *v;
        json_array_foreach(d, i, v)
        {
            const char *msg = json_string_value(json_object_get(v, "error"));
            if (strstr(msg, "implausibly large") || strstr(msg, "bad trailer length"))
                found++;
        }
        struct buf b = {0};
        int ok = repo_blob_load(r2, id, &b, &e) == 0 && b.len == 9;
        buf_free(&b);
        size_t nd = json_array_size(d);
        repo_close(r2);
        _exit(found == 2 && nd == 2 && ok ? 0 : 5);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("opening with a planted 4 GiB trailer length: child %s %d (0 = reported as "
                 "damage, within 1 GiB of address space)",
                 WIFEXITED(status) ? "exited" : "was killed by signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    /* check names both */
    r = open_ok(dir, PW);
    json_t *rep = check_report(r, false);
    assert_false(json_is_true(json_object_get(rep, "ok")));
    char *txt = json_dumps(rep, JSON_COMPACT);
    assert_non_null(strstr(txt, "implausibly large"));
    assert_non_null(strstr(txt, "bad trailer length"));
    free(txt);
    json_decref(rep);
    repo_close(r);
    tmpdir_free(dir);
}

/* init --copy-chunker-from: the new repository cuts and names chunks as its source does (same
 * seed, parameters and chunk-id key) but keeps its own encryption key and password. */
static void test_copy_chunker_from(void **state)
{
    (void)state;
    char *da = tmpdir_new(), *db = tmpdir_new(), *dc = tmpdir_new();
    struct err e = ERR_INIT;
    struct repo *a = init_ok(da, &FAST);
    struct repo_init_opts o = FAST;
    o.chunker_from = a;
    struct repo *b = repo_init(db, PW2, &o, &e);
    if (!b)
        fail_msg("repo_init --copy-chunker-from: %s", e.msg);
    struct repo *c = init_ok(dc, &FAST);
    assert_true(repo_same_chunking(a, b));
    assert_false(repo_same_chunking(a, c));
    assert_false(repo_same_chunking(b, c));
    uint8_t ia[32], ib[32];
    repo_chunk_id(a, "abc", 3, ia);
    repo_chunk_id(b, "abc", 3, ib);
    assert_memory_equal(ia, ib, 32);
    assert_memory_equal(repo_chunker_seed(a), repo_chunker_seed(b), 32);
    assert_string_not_equal(repo_id(a), repo_id(b));
    repo_close(b);
    /* reopened: the shared chunking is in its own config and key slot */
    b = open_ok(db, PW2);
    assert_true(repo_same_chunking(a, b));
    repo_close(b);
    /* its own key: the source's password does not open it */
    e = (struct err)ERR_INIT;
    assert_null(repo_open(db, PW, &e));
    assert_err(e, ERR_WRONG_KEY);
    repo_close(a);
    repo_close(c);
    tmpdir_free(da);
    tmpdir_free(db);
    tmpdir_free(dc);
}

int main(void)
{
    struct err e = ERR_INIT;
    if (cx_init(&e) != 0) {
        fprintf(stderr, "cx_init: %s\n", e.msg);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_open_keys),
        cmocka_unit_test(test_pack_written_as_it_fills),
        cmocka_unit_test(test_blobs_concurrent),
        cmocka_unit_test(test_blob_compression),
        cmocka_unit_test(test_blob_edge_cases),
        cmocka_unit_test(test_writer_add_result),
        cmocka_unit_test(test_missing_pack_is_damage),
        cmocka_unit_test(test_damaged_copy_not_deduplicated),
        cmocka_unit_test(test_damage_record_reloaded),
        cmocka_unit_test(test_damage_many),
        cmocka_unit_test(test_nonce_uniqueness),
        cmocka_unit_test(test_hostile_files),
        cmocka_unit_test(test_hostile_key_slots),
        cmocka_unit_test(test_kdf_bounds),
        cmocka_unit_test(test_key_slot_planted_huge),
        cmocka_unit_test(test_key_slot_order),
        cmocka_unit_test(test_key_slot_config_mismatch),
        cmocka_unit_test(test_config_newer_version),
        cmocka_unit_test(test_key_slot_fields_bound),
        cmocka_unit_test(test_key_slot_damage_not_wrong_key),
        cmocka_unit_test(test_key_slot_v2_format),
        cmocka_unit_test(test_key_slot_count),
        cmocka_unit_test(test_pack_salts_fresh),
        cmocka_unit_test(test_hostile_payloads),
        cmocka_unit_test(test_failed_load_leaves_no_plaintext),
        cmocka_unit_test(test_index_memory),
        cmocka_unit_test(test_snapshots),
        cmocka_unit_test(test_snapshot_entries_dedup),
        cmocka_unit_test(test_refresh_sees_others),
        cmocka_unit_test(test_snapshot_names_checked),
        cmocka_unit_test(test_locks),
        cmocka_unit_test(test_orphan_adoption),
        cmocka_unit_test(test_abandoned_writer_no_phantom_blobs),
        cmocka_unit_test(test_pack_v1_still_read),
        cmocka_unit_test(test_prune_repacks_v1),
        cmocka_unit_test(test_prune_refuses_unreadable),
        cmocka_unit_test(test_pack_sizes_hidden),
        cmocka_unit_test(test_full_packs_exact),
        cmocka_unit_test(test_check_reads_trailer),
        cmocka_unit_test(test_trailer_length_bounded),
        cmocka_unit_test(test_copy_chunker_from),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

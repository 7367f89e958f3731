/* Prune's engine (src/repo/gc.c) through its contract: the cancel flag stops it before it
 * deletes anything, progress is reported by phase, a dry run changes nothing, and a real
 * prune keeps exactly what the remaining snapshot needs. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "caris/backup.h"
#include "caris/crypto.h"
#include "caris/op.h"
#include "caris/pipeline.h"
#include "caris/repo.h"

#define PW "gc-test-password-0123456789abcdef"

/* Names and sizes of every file under dir, one line each, sorted (locks left out). */
static void listing(const char *dir, const char *rel, struct buf *out)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    DIR *d = opendir(path);
    if (!d)
        return;
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, "locks"))
            continue;
        names = realloc(names, (n + 1) * sizeof(char *));
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        char sub[4096], full[8192];
        snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", names[i]);
        snprintf(full, sizeof(full), "%s/%s", dir, sub);
        struct stat st;
        if (lstat(full, &st) == 0 && S_ISDIR(st.st_mode)) {
            listing(dir, sub, out);
        } else {
            char line[8300];
            int k = snprintf(line, sizeof(line), "%s %lld\n", sub, (long long)st.st_size);
            buf_append(out, line, (size_t)k);
        }
        free(names[i]);
    }
    free(names);
}

static char *fingerprint(const char *dir)
{
    struct buf b = {0};
    listing(dir, "", &b);
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

struct fixture {
    char dir[4096];
    char old_name[65], new_name[65];
};

/* Two snapshots: "old" holds 40 blobs of its own and 10 shared, "new" the 10 shared and
 * 10 of its own; "old" is then removed. Each snapshot's blobs are written in one pack. */
static void make_repo(struct fixture *f)
{
    const char *base = getenv("TMPDIR"); /* scripts/test.sh: a tmpfs for sanitizer builds */
    snprintf(f->dir, sizeof(f->dir), "%s/caris-test-gc-XXXXXX",
             base && base[0] == '/' ? base : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    strcat(f->dir, "/repo");
    struct err e = ERR_INIT;
    struct repo_init_opts io = {.kdf_ops = 1, .kdf_mem = 8u << 20};
    struct repo *r = repo_init(f->dir, PW, &io, &e);
    assert_non_null(r);
    for (int s = 0; s < 2; s++) {
        struct repo_writer *w = repo_writer_new(r, 1);
        json_t *chunks = json_array();
        for (int i = 0; i < 50; i++) {
            /* old: blobs 0..49; new: 40..49 and 100..109 */
            int k = s == 0 ? i : (i < 10 ? 40 + i : 90 + i);
            if (s == 1 && i >= 20)
                break;
            uint8_t blob[3000], id[32];
            for (size_t j = 0; j < sizeof(blob); j++)
                blob[j] = (uint8_t)((k * 7919u + j * 31u) ^ (j >> 3) * (unsigned)k);
            repo_chunk_id(r, blob, sizeof(blob), id);
            assert_true(repo_writer_add(w, 0, id, blob, sizeof(blob), &e) >= 0);
            char hex[65];
            cx_hex(id, 32, hex);
            json_array_append_new(chunks, json_pack("[s, i]", hex, (int)sizeof(blob)));
        }
        json_t *entries =
            json_pack("[{s:o, s:s, s:s}]", "chunks", chunks, "path", "f", "type", "file");
        json_t *summary = json_pack("{s:s, s:s, s:s}", "id", s ? "new" : "old", "kind", "files",
                                    "started", s ? "2025-01-02T00:00:00Z" : "2025-01-01T00:00:00Z");
        assert_int_equal(
            repo_snapshot_save(r, w, summary, entries, s ? f->new_name : f->old_name, &e), 0);
        json_decref(entries);
        json_decref(summary);
        repo_writer_free(w);
    }
    assert_int_equal(repo_snapshot_remove(r, f->old_name, &e), 0);
    repo_close(r);
}

struct progress_log {
    char phases[256];
};

static void on_progress(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    struct progress_log *p = ctx;
    (void)done;
    (void)total;
    if (!strstr(p->phases, phase) && strlen(p->phases) + strlen(phase) + 2 < sizeof(p->phases)) {
        strcat(p->phases, phase);
        strcat(p->phases, " ");
    }
}

static int prune_with(const char *dir, bool exclusive, const struct repo_prune_opts *o,
                      struct repo_prune_stats *st, struct err *e)
{
    struct repo *r = repo_open(dir, PW, e);
    assert_non_null(r);
    assert_int_equal(repo_lock(r, exclusive, "prune", e), 0);
    int rc = repo_prune(r, o, st, e);
    repo_close(r);
    return rc;
}

static void test_cancel_dry_run_and_prune(void **state)
{
    (void)state;
    struct fixture f;
    make_repo(&f);
    char *before = fingerprint(f.dir);
    struct repo_prune_stats st;
    struct err e = ERR_INIT;

    /* cancelled before it starts: fails, nothing changed */
    volatile sig_atomic_t cancel = 1;
    struct caris_op op = {.cancel = &cancel};
    struct repo_prune_opts o = {.max_unused = 5, .op = &op};
    assert_int_equal(prune_with(f.dir, true, &o, &st, &e), -1);
    assert_non_null(strstr(e.msg, "cancelled"));
    char *now = fingerprint(f.dir);
    assert_string_equal(before, now);
    free(now);

    /* a dry run: the decision, nothing changed */
    cancel = 0;
    o.dry_run = true;
    err_clear(&e);
    assert_int_equal(prune_with(f.dir, false, &o, &st, &e), 0);
    assert_int_equal(st.snapshots, 1);
    assert_int_equal(st.packs_repacked, 1); /* old's pack: 10 of 50 blobs used */
    now = fingerprint(f.dir);
    assert_string_equal(before, now);
    free(now);

    /* without the exclusive lock: refused */
    o.dry_run = false;
    struct repo *r = repo_open(f.dir, PW, &e);
    assert_int_equal(repo_prune(r, &o, &st, &e), -1);
    repo_close(r);

    /* for real, with progress by phase */
    struct progress_log pl = {""};
    op.progress = on_progress;
    op.progress_ctx = &pl;
    err_clear(&e);
    if (prune_with(f.dir, true, &o, &st, &e) != 0)
        fail_msg("prune: %s", e.msg);
    assert_string_equal(pl.phases, "mark repack index delete ");
    assert_int_equal(st.blobs_referenced, 20 + 1); /* + the entries stream's one chunk */
    assert_int_equal(st.blobs_repacked, 10);
    assert_true(st.repo_bytes_after < st.repo_bytes_before);

    /* what remains: exactly the 20 blobs of "new" (and its entries), all sound */
    r = repo_open(f.dir, PW, &e);
    json_t *rep = NULL;
    struct repo_check_opts co = {.read_data = true, .threads = 1};
    assert_int_equal(repo_check(r, &co, &rep, &e), 0);
    assert_true(json_is_true(json_object_get(rep, "ok")));
    assert_int_equal(json_array_size(json_object_get(rep, "warnings")), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(rep, "stats"), "blobs")),
                     20 + 1);
    json_decref(rep);
    repo_close(r);
    free(before);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %.*s", (int)(strlen(f.dir) - 5), f.dir);
    assert_int_equal(system(cmd), 0);
}

/* Another process's backup into dir, "later" (a stream backup: one stream, verified by its
 * SHA-256): new blobs, its pack, its index file, then its snapshot. */
static void add_later_backup(const char *dir)
{
    struct err e = ERR_INIT;
    struct repo *w_r = repo_open(dir, PW, &e);
    assert_non_null(w_r);
    assert_int_equal(repo_lock(w_r, false, "backup", &e), 0);
    struct repo_writer *w = repo_writer_new(w_r, 1);
    json_t *chunks = json_array();
    struct cx_sha256 *h = cx_sha256_new();
    for (int k = 500; k < 510; k++) {
        uint8_t blob[3000], id[32];
        for (size_t j = 0; j < sizeof(blob); j++)
            blob[j] = (uint8_t)((k * 104729u + j * 17u) ^ (j >> 2));
        cx_sha256_update(h, blob, sizeof(blob));
        repo_chunk_id(w_r, blob, sizeof(blob), id);
        assert_true(repo_writer_add(w, 0, id, blob, sizeof(blob), &e) >= 0);
        char hex[65];
        cx_hex(id, 32, hex);
        json_array_append_new(chunks, json_pack("[s, i]", hex, (int)sizeof(blob)));
    }
    uint8_t sum[32];
    char sumhex[65];
    cx_sha256_final(h, sum);
    cx_sha256_free(h);
    cx_hex(sum, 32, sumhex);
    json_t *entries = json_pack("[{s:o, s:s, s:s, s:i}]", "chunks", chunks, "name", "g.dump",
                                "sha256", sumhex, "size", 30000);
    json_t *summary = json_pack("{s:s, s:s, s:s}", "id", "later", "kind", "database", "started",
                                "2025-01-03T00:00:00Z");
    char name[65];
    assert_int_equal(repo_snapshot_save(w_r, w, summary, entries, name, &e), 0);
    json_decref(entries);
    json_decref(summary);
    repo_writer_free(w);
    repo_close(w_r);
}

/* A check whose handle read the index before a backup committed (a backup running beside it,
 * the open made before the lock): the new backup's blobs are in the index check judges it
 * by, never "missing" (check names such a backup, and it is then recorded damaged). */
static void test_check_sees_backup_committed_after_open(void **state)
{
    (void)state;
    struct fixture f;
    make_repo(&f);
    struct err e = ERR_INIT;
    struct repo *r = repo_open(f.dir, PW, &e); /* the check's handle: the index of now */
    assert_non_null(r);

    add_later_backup(f.dir);

    json_t *rep = NULL;
    for (int read_data = 0; read_data < 2; read_data++) {
        struct repo_check_opts co = {.read_data = read_data, .threads = 1};
        if (repo_check(r, &co, &rep, &e) != 0)
            fail_msg("check: %s", e.msg);
        char *text = json_dumps(json_object_get(rep, "errors"), JSON_COMPACT);
        if (!json_is_true(json_object_get(rep, "ok")))
            fail_msg("check%s found damage in a healthy repository: %s",
                     read_data ? " --read-data" : "", text);
        free(text);
        assert_int_equal(
            json_integer_value(json_object_get(json_object_get(rep, "stats"), "snapshots")), 2);
        json_decref(rep);
    }
    repo_close(r);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %.*s", (int)(strlen(f.dir) - 5), f.dir);
    assert_int_equal(system(cmd), 0);
}

static void count_invalid(void *ctx, const char *backup_id, int rc,
                          const struct caris_verify_result *res, const struct err *e)
{
    (void)res;
    if (rc != 0 && strcmp(backup_id, "later") == 0) { /* ("new" is made without roots) */
        print_message("verify %s: %s\n", backup_id, e->msg);
        (*(int *)ctx)++;
    }
}

/* verify --all, its handle opened before a backup committed: the new backup is verified
 * against the index of now, and found whole (not recorded damaged). */
static void test_verify_all_sees_backup_committed_after_open(void **state)
{
    (void)state;
    struct fixture f;
    make_repo(&f);
    struct err e = ERR_INIT;
    struct repo *r = repo_open(f.dir, PW, &e);
    assert_non_null(r);
    add_later_backup(f.dir);
    int invalid = 0;
    struct verify_opts vo = {.threads = 1};
    /* (it fails: "new" cannot be verified, made without roots) */
    caris_backup_verify_all(r, &vo, count_invalid, &invalid, &e);
    assert_int_equal(invalid, 0);
    json_t *v = caris_last_verifications(r, &e);
    assert_non_null(v);
    assert_true(json_is_true(json_object_get(json_object_get(v, "later"), "ok")));
    json_decref(v);
    repo_close(r);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %.*s", (int)(strlen(f.dir) - 5), f.dir);
    assert_int_equal(system(cmd), 0);
}

/* ---- the walk's entry scan (entry_iter_refs) against jansson ----
 * The walk reads each entry's "chunks" and "page_hashes" with a scan of its own, and gives
 * what it does not take to jansson. Both must agree on every text: the same lists, the same
 * flags, the same position after each entry, the same error. A corpus in the writer's forms
 * and in forms only jansson takes, then mutated (seeded: the same texts every run). */

static const char *const HEX_A = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
static const char *const HEX_B = "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789";

/* The corpus as one text (t), and each entry alone as a text of its own (each[k]). */
static size_t corpus(struct buf *t, struct buf each[64])
{
    char one[4096];
    const char *entries[] = {
        /* the writer's forms */
        "{\"path\":\"0/a/b.txt\",\"type\":\"file\",\"mode\":420,\"uid\":0,\"gid\":0,"
        "\"user\":\"root\",\"group\":\"root\",\"mtime_s\":1700000000,\"mtime_ns\":123,"
        "\"size\":5,\"sha256\":\"%A\",\"chunks\":[[\"%A\",5],[\"%B\",0]]}",
        "{\"path\":\"0/dir\",\"type\":\"dir\",\"xattrs\":{\"user.x\":\"dmFs\"},\"mode\":493}",
        "{\"path\":\"0/\\u00e9t\\u00e9\",\"chunks\":[[\"%A\",1]]}",
        "{\"path\":\"0/caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\",\"chunks\":[]}",
        "{\"path\":\"0/esc \\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t\",\"chunks\":[[\"%B\",67108864]]}",
        "{\"relation\":true,\"page_hashes\":[[\"%A\",8192],{\"id\":\"%B\",\"base\":\"%A\","
        "\"len\":8192},{\"len\":16,\"base\":\"%B\",\"id\":\"%A\"}],\"chunks\":[[\"%A\",8]]}",
        "{ \"chunks\" : [ [ \"%A\" , 3 ] , [\"%B\",4] ] , \"page_hashes\" : [ { \"id\" : \"%A\" ,"
        " \"base\" : \"%B\" , \"len\" : 7 } ] , \"n\" : -12 , \"z\" : null ,"
        " \"t\" : true , \"f\" : false , \"e\" : [ ] , \"o\" : { } }",
        "{}",
        /* forms only jansson takes, and what it makes of them */
        "{\"chunks\":[[\"%A\",5]],\"chunks\":[[\"%B\",6]]}",
        "{\"chun\\u006bs\":[[\"%A\",5]]}",
        "{\"chunks\":[[\"%A\",5,\"extra\"]]}",
        "{\"chunks\":[[\"%A\",5.0]]}",
        "{\"chunks\":[[\"%A\",1e3]]}",
        "{\"chunks\":[[\"%A\",-0]]}",
        "{\"chunks\":[[\"%A\",67108865]]}",
        "{\"chunks\":[[\"%A\",-1]]}",
        "{\"chunks\":null}",
        "{\"chunks\":{\"a\":1}}",
        "{\"chunks\":[{\"id\":\"%A\",\"base\":\"%B\",\"len\":1,\"x\":2}]}",
        "{\"chunks\":[{\"id\":\"%A\",\"len\":1}]}",
        "{\"chunks\":[[\"%A\"]]}",
        "{\"chunks\":[[\"0011\",5]]}",
        "{\"max\":999999999999999999,\"chunks\":[[\"%A\",5]]}",
        "{\"page_hashes\":[[\"%A\",5]],\"page_hashes\":[[\"%B\",6]]}",
        "{\r\"chunks\"\r:\r[\r[\r\"%A\"\r,\r5\r]\r]\r}",
        "{\"r\":1.5e-3,\"chunks\":[[\"%A\",5]]}",
        "{\"u\":\"\\ud83d\\ude00\",\"chunks\":[[\"%A\",5]]}",
        "[1,2,3]",
        "\"just a string\"",
        "42",
        "{\"deep\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],"
        "\"chunks\":[[\"%A\",9]]}",
        /* what jansson refuses (the scan gives them to it): tested one by one below */
        "{\"size\":12345678901234567890,\"chunks\":[[\"%A\",5]]}",
        "{\"big\":9999999999999999999,\"neg\":-9999999999999999999,\"chunks\":[[\"%A\",5]]}",
        "{\"p\":\"surrogate \xed\xa0\x80\",\"chunks\":[[\"%A\",5]]}",
        "{\"p\":\"overlong \xc0\xaf\",\"chunks\":[[\"%A\",5]]}",
        "{\"p\":\"overlong \xe0\x80\xaf\",\"chunks\":[[\"%A\",5]]}",
        "{\"p\":\"overlong \xf0\x80\x80\xaf\",\"chunks\":[[\"%A\",5]]}",
        "{\"p\":\"past U+10FFFF \xf4\x90\x80\x80\",\"chunks\":[[\"%A\",5]]}",
        "{\"p\":\"cut \xe2\x82\",\"chunks\":[[\"%A\",5]]}",
        "{\"p\":\"control \x1f\",\"chunks\":[[\"%A\",5]]}",
        "{\"p\":\"bad escape \\x\",\"chunks\":[[\"%A\",5]]}",
        "{\"p\":truex,\"chunks\":[[\"%A\",5]]}",
        "{\"p\":01,\"chunks\":[[\"%A\",5]]}",
        "{\"chunks\":[[\"%A\",5]]",
        "{\"chunks\":[[\"%A\",5]",
        "{\"p\":\"a\fb\",\"chunks\":[[\"%A\",5]]}",
        "{\f\"chunks\":[[\"%A\",5]]}",
        "{\v\"chunks\":[[\"%A\",5]]}",
    };
    buf_append(t, "[\n", 2);
    for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
        size_t o = 0;
        for (const char *p = entries[i]; *p; p++) {
            if (p[0] == '%' && (p[1] == 'A' || p[1] == 'B')) {
                memcpy(one + o, p[1] == 'A' ? HEX_A : HEX_B, 64);
                o += 64;
                p++;
            } else {
                one[o++] = *p;
            }
        }
        if (i)
            buf_append(t, ",\n", 2);
        buf_append(t, one, o);
        assert_true(i < 64);
        buf_append(&each[i], "[", 1);
        buf_append(&each[i], one, o);
        buf_append(&each[i], "]", 1);
    }
    buf_append(t, "\n]\n", 3);
    return sizeof(entries) / sizeof(entries[0]);
}

static void same_items(const struct chunk_item *a, const struct chunk_item *b, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        assert_memory_equal(a[k].id, b[k].id, 32);
        assert_int_equal(a[k].len, b[k].len);
        assert_int_equal(a[k].delta, b[k].delta);
        if (a[k].delta)
            assert_memory_equal(a[k].base, b[k].base, 32);
    }
}

/* One text through both readers; returns how many entries the scan took. */
static size_t compare_readers(const uint8_t *src, size_t len)
{
    /* a copy of exactly len bytes: a read past the end is one past the allocation (ASan) */
    uint8_t *text = xmalloc(len ? len : 1);
    memcpy(text, src, len);
    struct buf b = {.data = text, .len = len, .cap = len};
    struct entry_iter a, f;
    entry_iter_init(&a, &b);
    entry_iter_init(&f, &b);
    size_t scanned = 0;
    for (;;) {
        struct err ea = ERR_INIT, ef = ERR_INIT;
        json_t *ent = NULL;
        int ra = entry_iter_next(&a, &ent, &ea);
        struct entry_refs er;
        int rf = entry_iter_refs(&f, &er, &ef);
        assert_int_equal(ra, rf);
        if (ra != 1) {
            assert_string_equal(ea.msg, ef.msg);
            assert_int_equal(ea.code, ef.code);
            entry_refs_free(&er);
            free(text);
            return scanned;
        }
        assert_ptr_equal(a.p, f.p);
        assert_int_equal(a.index, f.index);
        scanned += er.scanned;
        struct chunk_item *c, *pg;
        size_t nc, np;
        bool cbad = chunklist_decode_items(json_object_get(ent, "chunks"), &c, &nc) != 0;
        bool pbad = chunklist_decode_items(json_object_get(ent, "page_hashes"), &pg, &np) != 0;
        assert_int_equal(cbad, er.chunks_bad);
        assert_int_equal(pbad, er.pages_bad);
        assert_int_equal(nc, er.nchunks);
        assert_int_equal(np, er.npages);
        same_items(c, er.chunks, nc);
        same_items(pg, er.pages, np);
        free(c);
        free(pg);
        json_decref(ent);
        entry_refs_free(&er);
    }
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_entry_scan_matches_jansson(void **state)
{
    (void)state;
    struct buf base = {0}, each[64] = {{0}};
    size_t n = corpus(&base, each);
    /* the corpus as it is: the writer's entries go through the scan, the rest to jansson (up
     * to the first entry jansson refuses), and each entry alone; the counts also catch a scan
     * made stricter by mistake, which the comparison cannot (jansson gives the same result) */
    assert_int_equal(compare_readers(base.data, base.len), 10);
    size_t scanned = 0;
    for (size_t i = 0; i < n; i++) {
        scanned += compare_readers(each[i].data, each[i].len);
        buf_free(&each[i]);
    }
    assert_int_equal(scanned, 10);
    /* texts that end inside an entry: nothing is read past the end */
    static const char *const tails[] = {
        "[{\"a\":1",
        "[{\"a\":-",
        "[{\"a\":true",
        "[{\"a\":nul",
        "[{\"p\":\"x\\",
        "[{\"p\":\"x",
        "[{\"p\":\"\xe2\x82",
        "[{\"p\":",
        "[{\"p\"",
        "[{\"chunks\":[[",
        "[{\"chunks\":[[\"00\",5",
        "[{\"chunks\":[[\"00\",5]",
        "[{\"chunks\":[{\"len\":5",
        "[{",
    };
    for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++)
        compare_readers((const uint8_t *)tails[i], strlen(tails[i]));
    /* mutated: bytes replaced by ones that matter to either reader, removed, or repeated */
    static const char pick[] = "\"\\,:[]{}0123456789-.eEabcdefABCDEFuntrl \t\r\n\f\v\x7f\x80\xff";
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    struct buf m = {0};
    size_t total_scanned = 0;
    for (int round = 0; round < 20000; round++) {
        m.len = 0;
        buf_append(&m, base.data, base.len);
        int edits = 1 + (int)(rng_next(&seed) % 3);
        for (int k = 0; k < edits && m.len > 1; k++) {
            size_t at = (size_t)(rng_next(&seed) % m.len);
            uint64_t how = rng_next(&seed) % 8;
            if (how < 5) {
                uint64_t v = rng_next(&seed) % 64;
                /* v == 63: a NUL byte */
                m.data[at] = v == 63                ? 0
                             : v < sizeof(pick) - 1 ? (uint8_t)pick[v]
                                                    : (uint8_t)rng_next(&seed);
            } else if (how < 6 && k == edits - 1) { /* the text cut short */
                m.len = at;
            } else if (how < 7) {
                memmove(m.data + at, m.data + at + 1, m.len - at - 1);
                m.len--;
            } else {
                size_t dup = 1 + (size_t)(rng_next(&seed) % 8);
                if (at + dup > m.len)
                    dup = m.len - at;
                buf_reserve(&m, m.len + dup);
                memmove(m.data + at + dup, m.data + at, m.len - at);
                m.len += dup;
            }
        }
        total_scanned += compare_readers(m.data, m.len);
    }
    /* the mutated texts still have many entries the scan takes */
    assert_true(total_scanned > 120000); /* 152,284 with this seed */
    buf_free(&m);
    buf_free(&base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_dry_run_and_prune),
        cmocka_unit_test(test_check_sees_backup_committed_after_open),
        cmocka_unit_test(test_verify_all_sees_backup_committed_after_open),
        cmocka_unit_test(test_entry_scan_matches_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

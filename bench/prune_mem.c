/* Builds a repository of N tiny blobs for measuring prune's memory (bench/bench-prune-mem.sh
 * runs it and then `caris-backup prune` under /usr/bin/time).
 *
 * Build (from the repository root, after ./scripts/build.sh):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude bench/prune_mem.c build/libcaris.a \
 *       -lcrypto -lsodium -lzstd -ljansson -lpq -lpthread -o /tmp/prune_mem
 * Run:
 *   BACKUP_ENCRYPTION_KEY=... /tmp/prune_mem DIR N
 *
 * The repository at DIR gets N blobs of 16 bytes (uncompressed) and two snapshots: "old"
 * references blobs [0, N/2), "new" references [N/4, N), each as file entries of 1000 chunks.
 * "old" is then removed, so a prune finds a quarter of the blobs unreferenced (the first
 * pack about half unused: repacked) and walks N * 3/4 chunk references. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/repo.h"

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void die(const struct err *e)
{
    err_print(e, stderr);
    exit(1);
}

/* Entries text: entries of up to 1000 chunks each, for blobs [from, to). */
static void entries_text(uint8_t (*ids)[32], size_t from, size_t to, struct buf *out)
{
    out->len = 0;
    buf_append(out, "[", 1);
    for (size_t i = from; i < to; i += 1000) {
        char head[80];
        int n = snprintf(head, sizeof(head), "%s{\"chunks\":[", i == from ? "" : ",");
        buf_append(out, head, (size_t)n);
        for (size_t k = i; k < to && k < i + 1000; k++) {
            char hex[65], item[96];
            cx_hex(ids[k], 32, hex);
            n = snprintf(item, sizeof(item), "%s[\"%s\",16]", k == i ? "" : ",", hex);
            buf_append(out, item, (size_t)n);
        }
        n = snprintf(head, sizeof(head), "],\"path\":\"f%zu\",\"type\":\"file\"}", i / 1000);
        buf_append(out, head, (size_t)n);
    }
    buf_append(out, "]", 1);
}

static void snapshot(struct repo *r, const char *id, const struct buf *text, char name[65])
{
    struct err e = ERR_INIT;
    struct repo_writer *w = repo_writer_new(r, 1);
    json_t *ref = NULL;
    if (repo_snapshot_put_entries_text(r, w, (const char *)text->data, text->len, &ref, &e) != 0 ||
        repo_writer_flush(w, &e) != 0)
        die(&e);
    json_t *summary = json_pack("{s:s, s:s, s:s, s:s, s:[s]}", "id", id, "kind", "files", "started",
                                "2025-01-01T00:00:00.000Z", "mode", "full", "roots", "/bench");
    if (repo_snapshot_commit(r, summary, ref, name, &e) != 0)
        die(&e);
    json_decref(summary);
    json_decref(ref);
    repo_writer_free(w);
}

int main(int argc, char **argv)
{
    const char *key = getenv("BACKUP_ENCRYPTION_KEY");
    if (argc != 3 || !key) {
        fprintf(stderr, "usage: BACKUP_ENCRYPTION_KEY=... prune_mem DIR N\n");
        return 2;
    }
    size_t n = strtoull(argv[2], NULL, 10);
    struct err e = ERR_INIT;
    struct repo_init_opts io = {.kdf_ops = 1, .kdf_mem = 8u << 20, .label = "bench"};
    struct repo *r = repo_init(argv[1], key, &io, &e);
    if (!r)
        die(&e);
    repo_set_compression_level(r, 0);
    uint8_t(*ids)[32] = xcalloc(n, 32);
    struct repo_writer *w = repo_writer_new(r, 1);
    uint8_t blob[16];
    uint64_t s = 42;
    for (size_t i = 0; i < n; i++) {
        store_u64le(blob, i);
        uint64_t v = splitmix(&s);
        memcpy(blob + 8, &v, 8);
        repo_chunk_id(r, blob, sizeof(blob), ids[i]);
        if (repo_writer_add(w, 0, ids[i], blob, sizeof(blob), &e) < 0)
            die(&e);
    }
    if (repo_writer_flush(w, &e) != 0)
        die(&e);
    repo_writer_free(w);
    struct buf text = {0};
    char old_name[65], new_name[65];
    entries_text(ids, 0, n / 2, &text);
    snapshot(r, "old", &text, old_name);
    entries_text(ids, n / 4, n, &text);
    snapshot(r, "new", &text, new_name);
    printf("repository %s: %zu blobs; entries text of the kept snapshot %zu bytes\n", argv[1], n,
           text.len);
    buf_free(&text);
    if (repo_snapshot_remove(r, old_name, &e) != 0)
        die(&e);
    free(ids);
    repo_close(r);
    return 0;
}

/* Page-level incremental physical backups (phys_incr.h). */
#include "phys_incr.h"

#include <stdlib.h>
#include <string.h>

#include "caris/crypto.h"
#include "caris/pagedelta.h"
#include "caris/pipeline.h"
#include "caris/pitr.h"
#include "caris/stream.h"
#include "common.h"

#define PAGES_PER_BLOCK (PHYS_BLOCK_SIZE / PAGEDELTA_PAGE)
#define HASH_LEN 8
/* One record of a page-hash stream per block: the number of pages of the block's base (0:
 * no base, e.g. a block that is not a whole number of pages), then 8 bytes per page. */
#define REC_LEN (1 + PAGES_PER_BLOCK * HASH_LEN)

struct pentry {
    char *name;
    size_t off; /* of the entry's JSON in the parent's entries text */
};

struct phys_incr {
    struct repo *r;
    struct repo_writer *w;
    const struct caris_op *op;
    char *parent_id;
    struct buf ptext; /* the parent's entries */
    struct pentry *pents;
    size_t npents;
    /* the current file */
    char *name;
    struct chunk_item *prefs; /* the parent's chunk list for it */
    size_t nprefs;
    struct buf phash;  /* the parent's page-hash records for it */
    struct buf hashes; /* the records of this backup */
    size_t k;          /* next block */
    struct buf delta, basebuf;
    struct phys_incr_stats st;
};

struct phys_incr *phys_incr_new(struct repo *r, struct repo_writer *w, const struct caris_op *op)
{
    struct phys_incr *pi = xcalloc(1, sizeof(*pi));
    pi->r = r;
    pi->w = w;
    pi->op = op;
    return pi;
}

static void file_reset(struct phys_incr *pi)
{
    free(pi->name);
    pi->name = NULL;
    free(pi->prefs);
    pi->prefs = NULL;
    pi->nprefs = 0;
    buf_free(&pi->phash);
    pi->hashes.len = 0;
    pi->k = 0;
}

/* Forgets the parent (what set_parent loaded): every block is then stored whole. */
static void drop_parent(struct phys_incr *pi)
{
    for (size_t i = 0; i < pi->npents; i++)
        free(pi->pents[i].name);
    free(pi->pents);
    pi->pents = NULL;
    pi->npents = 0;
    buf_free(&pi->ptext);
    free(pi->parent_id);
    pi->parent_id = NULL;
}

void phys_incr_free(struct phys_incr *pi)
{
    if (!pi)
        return;
    file_reset(pi);
    drop_parent(pi);
    buf_free(&pi->hashes);
    buf_free(&pi->delta);
    buf_free(&pi->basebuf);
    free(pi);
}

static int pentry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct pentry *)a)->name, ((const struct pentry *)b)->name);
}

static bool is_physical_of(json_t *s, const char *sysid)
{
    const char *k = json_string_value(json_object_get(s, "kind"));
    const char *m = json_string_value(json_object_get(s, "method"));
    const char *id =
        json_string_value(json_object_get(json_object_get(s, "physical"), "system_identifier"));
    return k && m && id && strcmp(k, "database") == 0 && strcmp(m, "physical") == 0 &&
           strcmp(id, sysid) == 0;
}

int phys_incr_set_parent(struct phys_incr *pi, const char *sysid, const char **parent_id,
                         struct err *e)
{
    *parent_id = NULL;
    json_t *all = repo_snapshot_list(pi->r, NULL, e);
    if (!all)
        return -1;
    json_t *best = NULL, *s;
    size_t i;
    json_array_foreach(all, i, s) if (is_physical_of(s, sysid)) best = s; /* oldest first */
    if (!best) {
        json_decref(all);
        return 0;
    }
    const char *file = json_string_value(json_object_get(best, "_file"));
    pi->parent_id = jsonx_strdup_member(best, "id");
    int rc = file && pi->parent_id
                 ? repo_snapshot_load_entries_text(pi->r, file, &pi->ptext, e)
                 : err_set(e, ERR_DAMAGE, NULL, "malformed summary of the parent backup");
    json_decref(all);
    if (rc != 0) {
        err_wrap(e, "parent backup %s", pi->parent_id ? pi->parent_id : "?");
        drop_parent(pi);
        return -1;
    }
    /* where each relation file's entry starts (those with page hashes), sorted by name */
    struct entry_iter it;
    entry_iter_init(&it, &pi->ptext);
    size_t cap = 0;
    for (;;) {
        const char *q = it.p;
        json_t *ent;
        int n = entry_iter_next(&it, &ent, e);
        if (n < 0) {
            err_wrap(e, "parent backup %s", pi->parent_id);
            drop_parent(pi);
            return -1;
        }
        if (n == 0)
            break;
        while (*q == ' ' || *q == '\n' || *q == '\t' || *q == '[' || *q == ',')
            q++;
        const char *name = json_string_value(json_object_get(ent, "name"));
        if (name && json_object_get(ent, "page_hashes")) {
            if (pi->npents == cap) {
                cap = cap ? cap * 2 : 256;
                pi->pents = xrealloc(pi->pents, cap * sizeof(*pi->pents));
            }
            pi->pents[pi->npents++] =
                (struct pentry){xstrdup(name), (size_t)(q - (const char *)pi->ptext.data)};
        }
        json_decref(ent);
    }
    qsort(pi->pents, pi->npents, sizeof(*pi->pents), pentry_cmp);
    *parent_id = pi->parent_id;
    return 0;
}

/* The parent's chunk list and page hashes of this file, when it has them. A parent whose page
 * hashes cannot be read costs this file its deltas (its blocks are stored whole), not the
 * backup: they are an aid, every restored file is still checked against its SHA-256. */
static void load_parent_file(struct phys_incr *pi)
{
    struct pentry key = {.name = pi->name};
    struct pentry *p =
        pi->npents ? bsearch(&key, pi->pents, pi->npents, sizeof(*pi->pents), pentry_cmp) : NULL;
    if (!p)
        return;
    json_error_t je;
    json_t *ent = json_loadb((const char *)pi->ptext.data + p->off, pi->ptext.len - p->off,
                             JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
    struct err le = ERR_INIT;
    uint8_t sha[32];
    const char *hex = json_string_value(json_object_get(ent, "page_hashes_sha256"));
    if (!ent || chunklist_decode_items(json_object_get(ent, "chunks"), &pi->prefs, &pi->nprefs) ||
        !hex || cx_unhex(hex, sha, 32) != 0) {
        err_set(&le, ERR_DAMAGE, NULL, "malformed entry");
    } else {
        /* at most one record per block of the parent's file */
        size_t max = (pi->nprefs + 1) * REC_LEN;
        if (stream_restore_buf(pi->r, json_object_get(ent, "page_hashes"), sha, max, &pi->phash,
                               &le) == 0 &&
            pi->phash.len % REC_LEN != 0)
            err_set(&le, ERR_DAMAGE, NULL, "page hashes of %zu bytes", pi->phash.len);
    }
    json_decref(ent);
    if (err_is_set(&le)) {
        caris_op_log(pi->op, LOG_WARN,
                     "%s: the parent backup's page hashes cannot be read (%s): its blocks are "
                     "stored whole",
                     pi->name, le.msg);
        free(pi->prefs);
        pi->prefs = NULL;
        pi->nprefs = 0;
        buf_free(&pi->phash);
    }
}

int phys_incr_file_begin(struct phys_incr *pi, const char *name, struct err *e)
{
    (void)e;
    file_reset(pi);
    pi->name = xstrdup(name);
    if (pi->parent_id)
        load_parent_file(pi);
    return 0;
}

static void add_full(json_t *chunks, const uint8_t id[32], size_t len)
{
    char hex[65];
    cx_hex(id, 32, hex);
    json_array_append_new(chunks, json_pack("[s, I]", hex, (json_int_t)len));
}

static void page_hashes(struct phys_incr *pi, const uint8_t *data, size_t pages, uint8_t *rec)
{
    rec[0] = (uint8_t)pages;
    memset(rec + 1, 0, REC_LEN - 1);
    for (size_t i = 0; i < pages; i++) {
        uint8_t h[32];
        repo_chunk_id(pi->r, data + i * PAGEDELTA_PAGE, PAGEDELTA_PAGE, h);
        memcpy(rec + 1 + i * HASH_LEN, h, HASH_LEN);
    }
}

/* Encodes the block's delta against the base's content (read back: changed pages are stored
 * XOR their base page) into pi->delta. True when it pays: its weight (non-zero bytes, a
 * stand-in for its compressed size) is at most half the block's. Otherwise the block is stored
 * whole and becomes a new base, so deltas never grow to cost more than the block and the
 * chain depth stays 1. A base that cannot be read back, or whose length is not the one its
 * page hashes describe, is not built on. */
static bool delta_pays(struct phys_incr *pi, const uint8_t base[32], size_t base_pages,
                       const uint8_t *data, size_t len, const bool *differ)
{
    struct err le = ERR_INIT;
    if (repo_blob_load_flags(pi->r, base, &pi->basebuf, REPO_LOAD_NO_ID_CHECK, &le) != 0) {
        caris_op_log(pi->op, LOG_WARN, "%s: base block cannot be read back (%s): stored whole",
                     pi->name, le.msg);
        return false;
    }
    if (pi->basebuf.len != base_pages * PAGEDELTA_PAGE)
        return false;
    size_t w =
        pagedelta_encode(base, pi->basebuf.data, pi->basebuf.len, data, len, differ, &pi->delta);
    return w * 2 <= pagedelta_weight(data, len);
}

int phys_incr_block(struct phys_incr *pi, const uint8_t *data, size_t len, json_t *chunks,
                    struct err *e)
{
    size_t k = pi->k++;
    pi->st.blocks++;
    uint8_t id[32], rec[REC_LEN];
    repo_chunk_id(pi->r, data, len, id);
    bool whole_pages = len % PAGEDELTA_PAGE == 0 && len <= PHYS_BLOCK_SIZE;
    size_t pages = whole_pages ? len / PAGEDELTA_PAGE : 0;

    /* the parent's base for this position: its full block, or the base of its delta */
    const uint8_t *base = NULL, *brec = NULL;
    if (k < pi->nprefs && (k + 1) * REC_LEN <= pi->phash.len && whole_pages) {
        base = pi->prefs[k].delta ? pi->prefs[k].base : pi->prefs[k].id;
        brec = pi->phash.data + k * REC_LEN;
        /* a base that is not stored cannot be built on */
        if (brec[0] == 0 || brec[0] > PAGES_PER_BLOCK || !repo_has_blob(pi->r, base))
            base = brec = NULL;
    }
    if (base && memcmp(id, base, 32) == 0) { /* the base itself: nothing new */
        pi->st.blocks_same++;
        add_full(chunks, id, len);
        buf_append(&pi->hashes, brec, REC_LEN);
        return 0;
    }
    page_hashes(pi, data, pages, rec);
    if (base && !repo_has_blob(pi->r, id)) {
        bool differ[PAGES_PER_BLOCK];
        size_t ndiff = 0;
        for (size_t i = 0; i < pages; i++) {
            differ[i] = i >= brec[0] ||
                        memcmp(rec + 1 + i * HASH_LEN, brec + 1 + i * HASH_LEN, HASH_LEN) != 0;
            ndiff += differ[i];
        }
        if (ndiff > 0 && delta_pays(pi, base, brec[0], data, len, differ)) {
            uint8_t did[32];
            repo_chunk_id(pi->r, pi->delta.data, pi->delta.len, did);
            if (repo_writer_add(pi->w, 0, did, pi->delta.data, pi->delta.len, e) < 0)
                return -1;
            char dh[65], bh[65];
            cx_hex(did, 32, dh);
            cx_hex(base, 32, bh);
            json_array_append_new(
                chunks, json_pack("{s:s, s:s, s:I}", "base", bh, "id", dh, "len", (json_int_t)len));
            buf_append(&pi->hashes, brec, REC_LEN); /* still the base's pages */
            pi->st.blocks_delta++;
            pi->st.pages_delta += ndiff;
            return 0;
        }
    }
    if (repo_writer_add(pi->w, 0, id, data, len, e) < 0)
        return -1;
    add_full(chunks, id, len);
    buf_append(&pi->hashes, rec, REC_LEN);
    pi->st.blocks_full++;
    return 0;
}

int phys_incr_file_end(struct phys_incr *pi, json_t *entry, struct err *e)
{
    struct stream_result sr = {0};
    if (stream_store_buf(pi->r, pi->w, 1, pi->hashes.data, pi->hashes.len,
                         repo_chunker_params(pi->r, false), &sr, e) != 0)
        return -1;
    char hex[65];
    cx_hex(sr.sha256, 32, hex);
    json_object_set_new(entry, "page_hashes", sr.chunks);
    json_object_set_new(entry, "page_hashes_sha256", json_string(hex));
    file_reset(pi);
    return 0;
}

void phys_incr_get_stats(const struct phys_incr *pi, struct phys_incr_stats *out)
{
    *out = pi->st;
}

/* The open cache: what the last full listing of data/ taught, kept locally so that opening an
 * S3 repository lists index/ only (docs/REPOSITORY-FORMAT.md, "Opening without listing data/").
 *
 * File BACKUP_DIR/metadata/cache/<repository id>/open.cache, every integer little-endian:
 *   magic    "CARISOC1"
 *   u64      listed_ns: when data/ was last listed in full (ns since the epoch)
 *   u32      npacks: packs the handle knew when it wrote the file (sizes the HEAD budget)
 *   u32 n, then n x (u32 len, bytes): index file names the facts below cover, sorted
 *   u32 n, then n x 32 bytes: packs those index files name that were missing, sorted
 *   u32 n, then n x (u32 len, bytes): stale locks whose orphan packs a full listing saw
 *   u32 n, u32 len, then len bytes: n packs no index lists (adopted), as index file records
 *   mac      HMAC-SHA-256 of everything before, under repo_local_key "open cache"
 * A file that does not parse or whose MAC does not match is ignored and rewritten by the
 * next full listing: it is only ever a shortcut to what a listing would say. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define OC_MAGIC "CARISOC1"
#define OC_NAME_MAX 200
#define OC_FILE_MAX (256u << 20)

static char *cache_root;

void repo_set_cache_root(const char *dir)
{
    free(cache_root);
    cache_root = dir ? xstrdup(dir) : NULL;
}

bool opencache_enabled(const struct repo *r)
{
    return cache_root && r->id[0] && r->st && storage_location_is_s3(r->path);
}

static char *oc_path(const struct repo *r)
{
    return xasprintf("%s/%s/open.cache", cache_root, r->id);
}

void opencache_free(struct opencache *c)
{
    namelist_free(&c->index);
    namelist_free(&c->stale);
    free(c->missing);
    buf_free(&c->adopted);
    memset(c, 0, sizeof(*c));
}

#define OC_PURPOSE "open cache" /* repo_local_key */

static void put_names(struct buf *b, const struct namelist *l)
{
    buf_append_u32le(b, (uint32_t)l->n);
    for (size_t i = 0; i < l->n; i++) {
        size_t n = strlen(l->v[i]);
        buf_append_u32le(b, (uint32_t)n);
        buf_append(b, l->v[i], n);
    }
}

static int get_names(struct reader *rd, struct namelist *l, const char *prefix)
{
    uint32_t n;
    if (reader_u32le(rd, &n) || n > rd->len - rd->pos)
        return -1;
    l->v = xcalloc(n ? n : 1, sizeof(char *));
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len;
        const uint8_t *p;
        if (reader_u32le(rd, &len) || len > OC_NAME_MAX || !(p = reader_skip(rd, len)))
            return -1;
        l->v[l->n++] = xstrndup((const char *)p, len);
        if (strlen(l->v[i]) != len || strncmp(l->v[i], prefix, strlen(prefix)) != 0 ||
            (i && strcmp(l->v[i - 1], l->v[i]) >= 0))
            return -1; /* not one of our names, or not sorted */
    }
    return 0;
}

int opencache_load(struct repo *r, struct opencache *c)
{
    memset(c, 0, sizeof(*c));
    if (!opencache_enabled(r))
        return -1;
    char *path = oc_path(r);
    struct buf b = {0};
    int rc = -1;
    if (repo_local_file_read(r, OC_PURPOSE, path, OC_FILE_MAX, &b) != 0 || b.len < 8 ||
        memcmp(b.data, OC_MAGIC, 8) != 0)
        goto out;
    struct reader rd;
    reader_init(&rd, b.data + 8, b.len - 8);
    uint64_t listed;
    uint32_t nmissing, nadopted, alen;
    const uint8_t *p;
    if (reader_u64le(&rd, &listed) || reader_u32le(&rd, &c->npacks) ||
        get_names(&rd, &c->index, "index/") != 0 || reader_u32le(&rd, &nmissing) ||
        nmissing > (rd.len - rd.pos) / 32 || !(p = reader_skip(&rd, (size_t)nmissing * 32)))
        goto out;
    c->listed_ns = (int64_t)listed;
    c->nmissing = nmissing;
    c->missing = xmemdup(p, nmissing ? (size_t)nmissing * 32 : 1);
    if (get_names(&rd, &c->stale, "locks/") != 0 || reader_u32le(&rd, &nadopted) ||
        reader_u32le(&rd, &alen) || !(p = reader_skip(&rd, alen)) || rd.pos != rd.len)
        goto out;
    /* the adopted records must be whole: index file records (id, blob count, entries) */
    struct reader ar;
    reader_init(&ar, p, alen);
    for (uint32_t i = 0; i < nadopted; i++) {
        uint32_t nblobs;
        if (!reader_skip(&ar, 32) || reader_u32le(&ar, &nblobs) ||
            nblobs > (ar.len - ar.pos) / PACK_TRAILER_ENTRY_LEN ||
            !reader_skip(&ar, (size_t)nblobs * PACK_TRAILER_ENTRY_LEN))
            goto out;
    }
    if (ar.pos != ar.len)
        goto out;
    c->nadopted = nadopted;
    buf_append(&c->adopted, p, alen);
    rc = 0;
out:
    if (rc != 0)
        opencache_free(c);
    buf_free(&b);
    free(path);
    return rc;
}

int opencache_save(struct repo *r, const struct opencache *c, struct err *e)
{
    if (!opencache_enabled(r))
        return 0;
    struct buf b = {0};
    buf_append(&b, OC_MAGIC, 8);
    buf_append_u64le(&b, (uint64_t)c->listed_ns);
    buf_append_u32le(&b, c->npacks);
    put_names(&b, &c->index);
    buf_append_u32le(&b, (uint32_t)c->nmissing);
    buf_append(&b, c->missing, c->nmissing * 32);
    put_names(&b, &c->stale);
    buf_append_u32le(&b, c->nadopted);
    buf_append_u32le(&b, (uint32_t)c->adopted.len);
    buf_append(&b, c->adopted.data, c->adopted.len);
    char *path = oc_path(r);
    int rc = repo_local_file_write(r, OC_PURPOSE, path, b.data, b.len, e);
    free(path);
    buf_free(&b);
    return rc;
}

void opencache_drop(struct repo *r)
{
    if (!opencache_enabled(r))
        return;
    char *path = oc_path(r);
    unlink(path);
    free(path);
}

bool opencache_has_name(const struct namelist *l, const char *name)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(l->v[mid], name);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

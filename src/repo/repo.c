/* Repository: open/init, key slots, config, the in-memory index, packs, blob I/O.
 * The on-disk format is specified in docs/REPOSITORY-FORMAT.md. */
#include "internal.h"

#include "caris/secmem.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
/* For ZSTD_estimateCCtxSize and ZSTD_initStaticCCtx (exported by libzstd.so; see
 * writer_cctx). */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>

#define MARKER_NAME "caris-repository"
#define INIT_LOCK "init.lock"
#define MARKER_TEXT "caris-backup repository\nformat 1\n"
#define DEFAULT_COMPRESSION 3
#define TRAILER_AAD "caris pack trailer v1"
#define TRAILER_AAD_V2 "caris pack trailer v2"
#define FOOTER_AAD_V2 "caris pack footer v2"

/* ---- small pieces -------------------------------------------------------------------- */

int zstd_pack(const void *in, size_t len, int level, struct buf *out)
{
    size_t bound = ZSTD_compressBound(len);
    out->len = 0;
    buf_reserve(out, bound);
    size_t n = ZSTD_compress(out->data, bound, in, len, level);
    if (ZSTD_isError(n))
        return -1;
    out->len = n;
    return 0;
}

/* One decompression context per thread, made at its first use and freed when the thread
 * ends: ZSTD_decompress makes, initialises and frees one (about 94 KiB) in every call, which
 * took 7 % of a `check --read-data`'s CPU. When the thread key could not be made:
 * ZSTD_decompress. */
static pthread_key_t dctx_key;
static bool dctx_key_ok;
static pthread_once_t dctx_once = PTHREAD_ONCE_INIT;

static void dctx_free(void *d)
{
    ZSTD_freeDCtx(d);
}

static void dctx_key_make(void)
{
    dctx_key_ok = pthread_key_create(&dctx_key, dctx_free) == 0;
}

static size_t zstd_decompress(void *dst, size_t cap, const void *src, size_t len)
{
    pthread_once(&dctx_once, dctx_key_make);
    ZSTD_DCtx *d = dctx_key_ok ? pthread_getspecific(dctx_key) : NULL;
    if (!d && dctx_key_ok && (d = ZSTD_createDCtx()) && pthread_setspecific(dctx_key, d) != 0) {
        ZSTD_freeDCtx(d);
        d = NULL;
    }
    return d ? ZSTD_decompressDCtx(d, dst, cap, src, len) : ZSTD_decompress(dst, cap, src, len);
}

int zstd_unpack(const uint8_t *in, size_t len, size_t max, struct buf *out, struct err *e)
{
    unsigned long long size = ZSTD_getFrameContentSize(in, len);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > max)
        return err_set(e, ERR_DAMAGE, NULL, "bad compressed data (size field)");
    out->len = 0;
    buf_reserve(out, (size_t)size + 1);
    size_t n = zstd_decompress(out->data, (size_t)size + 1, in, len);
    if (ZSTD_isError(n) || n != size)
        return err_set(e, ERR_DAMAGE, NULL, "bad compressed data: %s",
                       ZSTD_isError(n) ? ZSTD_getErrorName(n) : "length mismatch");
    out->len = n;
    return 0;
}

void pack_nonce(uint64_t off, uint8_t nonce[CX_NONCE_LEN])
{
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] = (uint8_t)(off >> (56 - 8 * i));
}

void pack_object_name(const uint8_t id[32], char *out, size_t n)
{
    char hex[65];
    cx_hex(id, 32, hex);
    snprintf(out, n, "data/%.2s/%s", hex, hex);
}

bool pack_name_parse(const char *name, uint8_t id[32])
{
    const char *base = strrchr(name, '/');
    if (!base || strlen(base + 1) != 64 || cx_unhex(base + 1, id, 32) != 0)
        return false;
    char want[80];
    pack_object_name(id, want, sizeof(want));
    return strcmp(name, want) == 0;
}

int pack_derive_key(const struct repo *r, const uint8_t salt[32], uint8_t key[32], struct err *e)
{
    /* The same for pack versions 1 and 2: the key is unique to the pack by its salt. */
    static const char info[] = "caris pack v1";
    return cx_hkdf_sha256(r->enc_key, 32, salt, 32, (const uint8_t *)info, sizeof(info) - 1, key,
                          32, e);
}

int repo_local_key(const struct repo *r, const char *purpose, uint8_t key[32], struct err *e)
{
    char info[128];
    int n = snprintf(info, sizeof(info), "caris local cache v1 %s", purpose);
    if (n < 0 || (size_t)n >= sizeof(info))
        return err_set(e, ERR_FAILURE, NULL, "cache purpose too long");
    return cx_hkdf_sha256(r->enc_key, 32, NULL, 0, (const uint8_t *)info, (size_t)n, key, 32, e);
}

int repo_local_file_read(const struct repo *r, const char *purpose, const char *path, size_t max,
                         struct buf *out)
{
    struct err ie = ERR_INIT;
    uint8_t key[32], mac[32];
    out->len = 0;
    if (fs_read_all(path, out, &ie) != 0 || out->len < 32 || out->len > max ||
        repo_local_key(r, purpose, key, &ie) != 0)
        return -1;
    cx_hmac_sha256(key, 32, out->data, out->len - 32, mac);
    cx_wipe(key, sizeof(key));
    if (cx_memcmp(mac, out->data + out->len - 32, 32) != 0)
        return -1;
    out->len -= 32;
    return 0;
}

int repo_local_file_write(const struct repo *r, const char *purpose, const char *path,
                          const void *data, size_t len, struct err *e)
{
    uint8_t key[32], mac[32];
    if (repo_local_key(r, purpose, key, e) != 0)
        return -1;
    struct buf b = {0};
    buf_append(&b, data, len);
    cx_hmac_sha256(key, 32, b.data, b.len, mac);
    cx_wipe(key, sizeof(key));
    buf_append(&b, mac, 32);
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    /* atomic: a torn file would only fail its MAC, but a whole one is cheaper */
    int rc = (!slash || fs_mkdir_p(dir, 0700, e) == 0) &&
                     fs_write_atomic(path, b.data, b.len, 0600, e) == 0
                 ? 0
                 : -1;
    free(dir);
    buf_free(&b);
    return rc;
}

int pack_version(const uint8_t head[8])
{
    if (memcmp(head, PACK_MAGIC, 8) == 0)
        return 2;
    if (memcmp(head, PACK_MAGIC_V1, 8) == 0)
        return 1;
    return 0;
}

/* Padme (Nikitin et al., PETS 2019): with 2^e <= n < 2^(e+1), round n up to a multiple of
 * 2^(e - floor(log2 e) - 1). An object's size then tells at most O(log log n) bits, and the
 * padding costs at most 1/16 of n for n >= 4 KiB, 1/32 for n >= 64 KiB (mean about half). */
uint64_t pad_size(uint64_t n, uint64_t min)
{
    if (n <= min)
        return min;
    int ex = 63 - __builtin_clzll(n);
    int sbits = 32 - __builtin_clz((unsigned)ex); /* floor(log2 ex) + 1 */
    uint64_t g = (uint64_t)1 << (ex - sbits);
    return (n + g - 1) & ~(g - 1);
}

int index_payload_unpack(const uint8_t *p, size_t len, struct buf *out, struct err *e)
{
    size_t flen = ZSTD_findFrameCompressedSize(p, len);
    if (ZSTD_isError(flen))
        return err_set(e, ERR_DAMAGE, NULL, "bad compressed data (frame)");
    for (size_t i = flen; i < len; i++)
        if (p[i] != 0)
            return err_set(e, ERR_DAMAGE, NULL, "bytes other than padding after the data");
    return zstd_unpack(p, flen, REPO_MAX_METADATA, out, e);
}

/* ---- encrypted container ------------------------------------------------------------- */

static void container_header(char type, uint8_t h[CONTAINER_HEADER_LEN])
{
    memcpy(h, "CARIS", 5);
    h[5] = (uint8_t)type;
    h[6] = 1; /* container version */
    h[7] = 0;
}

static int container_key(const struct repo *r, char type, const uint8_t salt[32], uint8_t key[32],
                         struct err *e)
{
    char info[32];
    int n = snprintf(info, sizeof(info), "caris container v1 %c", type);
    return cx_hkdf_sha256(r->enc_key, 32, salt, 32, (const uint8_t *)info, (size_t)n, key, 32, e);
}

int container_seal(const struct repo *r, char type, const void *data, size_t len, struct buf *out,
                   struct err *e)
{
    uint8_t h[CONTAINER_HEADER_LEN], salt[32], key[32], nonce[CX_NONCE_LEN] = {0};
    container_header(type, h);
    cx_random(salt, sizeof(salt));
    if (container_key(r, type, salt, key, e) != 0)
        return -1;
    out->len = 0;
    buf_reserve(out, xsize(1, len, CONTAINER_OVERHEAD));
    buf_append(out, h, sizeof(h));
    buf_append(out, salt, sizeof(salt));
    /* The key is unique to this file (random 256-bit salt), so a fixed nonce is never reused
     * under the same key. */
    int rc = cx_aead_seal(key, nonce, h, sizeof(h), data, len, out->data + out->len, e);
    cx_wipe(key, sizeof(key));
    if (rc != 0)
        return -1;
    out->len += len + CX_TAG_LEN;
    return 0;
}

int container_put(struct repo *r, char type, const char *dir, const void *data, size_t len,
                  char hex_out[65], uint64_t *bytes, struct err *e)
{
    struct buf sealed = {0};
    int rc = container_seal(r, type, data, len, &sealed, e);
    if (rc == 0) {
        uint8_t id[32];
        char hex[65];
        cx_sha256(sealed.data, sealed.len, id);
        cx_hex(id, 32, hex);
        char *name = xasprintf("%s/%s", dir, hex);
        rc = storage_put(r->st, name, sealed.data, sealed.len, e);
        free(name);
        if (rc == 0 && hex_out)
            memcpy(hex_out, hex, 65);
        if (rc == 0 && bytes)
            *bytes = sealed.len;
    }
    buf_free(&sealed);
    return rc;
}

int container_open(const struct repo *r, char type, const uint8_t *data, size_t len,
                   struct buf *out, struct err *e)
{
    uint8_t h[CONTAINER_HEADER_LEN], key[32], nonce[CX_NONCE_LEN] = {0};
    container_header(type, h);
    if (len < CONTAINER_OVERHEAD || memcmp(data, h, 5) != 0)
        return err_set(e, ERR_DAMAGE, NULL, "not a caris-backup metadata file (bad header)");
    if (data[5] != (uint8_t)type)
        return err_set(e, ERR_DAMAGE, NULL, "wrong kind of metadata file ('%c', expected '%c')",
                       data[5], type);
    if (data[6] != 1)
        return err_set(e, ERR_DAMAGE,
                       "this file was written by a newer caris-backup: upgrade to read it",
                       "unsupported metadata file version %u", data[6]);
    if (container_key(r, type, data + CONTAINER_HEADER_LEN, key, e) != 0)
        return -1;
    size_t clen = len - CONTAINER_HEADER_LEN - 32;
    out->len = 0;
    buf_reserve(out, clen);
    int rc = cx_aead_open(key, nonce, data, CONTAINER_HEADER_LEN, data + CONTAINER_HEADER_LEN + 32,
                          clen, out->data, e);
    cx_wipe(key, sizeof(key));
    if (rc != 0)
        return err_set(e, ERR_DAMAGE, NULL, "authentication failed (the file was altered)");
    out->len = clen - CX_TAG_LEN;
    return 0;
}

/* ---- id maps and the index ----------------------------------------------------------- */

typedef const uint8_t *(*idmap_get)(struct repo *r, uint32_t i);

static const uint8_t *entry_id(struct repo *r, uint32_t i)
{
    return repo_entry(r, i)->id;
}

static const uint8_t *pack_id(struct repo *r, uint32_t i)
{
    return r->packs[i].id;
}

static long idmap_find(struct repo *r, const struct idmap *m, idmap_get get, const uint8_t id[32])
{
    if (!m->cap)
        return -1;
    size_t mask = m->cap - 1;
    for (size_t h = load_u64le(id) & mask;; h = (h + 1) & mask) {
        uint32_t v = m->slots[h];
        if (!v)
            return -1;
        if (memcmp(get(r, v - 1), id, 32) == 0)
            return (long)(v - 1);
    }
}

static void idmap_put_raw(struct idmap *m, const uint8_t *id, uint32_t v)
{
    size_t mask = m->cap - 1;
    size_t h = load_u64le(id) & mask;
    while (m->slots[h])
        h = (h + 1) & mask;
    m->slots[h] = v + 1;
}

/* Keeps the load factor at most 0.7: linear probes stay short (ids are uniform), and the
 * table costs 5.7 to 11.4 bytes per entry (stated in docs/REPOSITORY-FORMAT.md). */
static void idmap_insert(struct repo *r, struct idmap *m, idmap_get get, uint32_t v)
{
    if ((m->n + 1) * 10 > m->cap * 7) {
        size_t ncap = m->cap ? m->cap * 2 : 1024;
        uint32_t *old = m->slots;
        size_t ocap = m->cap;
        m->slots = xcalloc(ncap, sizeof(uint32_t));
        m->cap = ncap;
        for (size_t i = 0; i < ocap; i++)
            if (old[i])
                idmap_put_raw(m, get(r, old[i] - 1), old[i] - 1);
        free(old);
    }
    idmap_put_raw(m, get(r, v), v);
    m->n++;
}

struct ientry *repo_entry(struct repo *r, size_t i)
{
    return &r->blocks[i >> IBLOCK_SHIFT][i & (IBLOCK - 1)];
}

long repo_lookup_locked(struct repo *r, const uint8_t id[32])
{
    return idmap_find(r, &r->emap, entry_id, id);
}

#define INDEX_FULL UINT32_MAX
#define INDEX_FULL_HINT "split the data over more than one repository"

/* Adds an entry unless the id is known; returns its number, or INDEX_FULL when the table has
 * as many entries as 32-bit entry numbers allow (4,294,967,293: about 70 TB of 16 KiB
 * chunks). */
static uint32_t index_add_locked(struct repo *r, const uint8_t id[32], uint32_t pack, uint32_t off,
                                 uint32_t clen, uint32_t ulen_flags, bool *added)
{
    long have = repo_lookup_locked(r, id);
    if (have >= 0) {
        *added = false;
        return (uint32_t)have;
    }
    if (r->nentries >= UINT32_MAX - 2)
        return INDEX_FULL;
    size_t i = r->nentries;
    if ((i >> IBLOCK_SHIFT) >= r->nblocks) {
        r->blocks = xrealloc(r->blocks, xsize(r->nblocks + 1, sizeof(*r->blocks), 0));
        r->blocks[r->nblocks++] = xmalloc(sizeof(struct ientry) * IBLOCK);
    }
    struct ientry *en = repo_entry(r, i);
    memcpy(en->id, id, 32);
    en->pack = pack;
    en->off = off;
    en->clen = clen;
    en->ulen_flags = ulen_flags;
    r->nentries++;
    idmap_insert(r, &r->emap, entry_id, (uint32_t)i);
    *added = true;
    return (uint32_t)i;
}

/* index_add_locked for an entry read from an index file or a pack's trailer: a copy that
 * records/bad-blob names is marked (read, never deduplicated against), and gives way to the
 * first other copy loaded. Another copy of a blob loaded already is remembered in r->dups,
 * unless it is recorded damaged or lies past the end of its truncated pack (past_end). */
static uint32_t index_load_locked(struct repo *r, const uint8_t id[32], uint32_t pack, uint32_t off,
                                  uint32_t clen, uint32_t ulen_flags, bool past_end)
{
    bool bad = bad_pair_known_locked(r, pack, id), added;
    long have = repo_lookup_locked(r, id);
    if (have >= 0) {
        struct ientry *en = repo_entry(r, (size_t)have);
        if (!bad && PACK_IS_REAL(en->pack) && bad_entry_is_locked(r, (uint32_t)have)) {
            en->pack = pack;
            en->off = off;
            en->clen = clen;
            en->ulen_flags = ulen_flags;
            bad_entry_set_locked(r, (uint32_t)have, false);
        } else if (!bad && !past_end && PACK_IS_REAL(en->pack) && PACK_IS_REAL(pack) &&
                   en->pack != pack) {
            /* another copy: kept in mind, so that prune does not drop it from the index */
            if (r->ndups == r->dups_cap) {
                r->dups_cap = r->dups_cap ? 2 * r->dups_cap : 16;
                r->dups = xrealloc(r->dups, xsize(r->dups_cap, sizeof(*r->dups), 0));
            }
            struct ientry *d = &r->dups[r->ndups++];
            memcpy(d->id, id, 32);
            d->pack = pack;
            d->off = off;
            d->clen = clen;
            d->ulen_flags = ulen_flags;
        }
        return (uint32_t)have;
    }
    uint32_t ei = index_add_locked(r, id, pack, off, clen, ulen_flags, &added);
    if (ei != INDEX_FULL && bad)
        bad_entry_set_locked(r, ei, true);
    return ei;
}

long repo_find_pack_locked(struct repo *r, const uint8_t id[32])
{
    return idmap_find(r, &r->pmap, pack_id, id);
}

uint32_t repo_add_pack_locked(struct repo *r, const uint8_t id[32], int source)
{
    long have = repo_find_pack_locked(r, id);
    if (have >= 0)
        return (uint32_t)have;
    if (r->npacks == r->packs_cap) {
        r->packs_cap = r->packs_cap ? r->packs_cap * 2 : 64;
        /* Pack keys live here: secret memory, and no unwiped copy left behind. */
        r->packs = secmem_realloc(r->packs, xsize(r->packs_cap, sizeof(*r->packs), 0));
    }
    struct packinfo *p = &r->packs[r->npacks];
    memset(p, 0, sizeof(*p));
    memcpy(p->id, id, 32);
    p->source = source;
    idmap_insert(r, &r->pmap, pack_id, (uint32_t)r->npacks);
    return (uint32_t)r->npacks++;
}

static int cmp_id32(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

void repo_warn(struct repo *r, const char *object, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* the index is read again after a prune (repo_index_refresh): say each thing once */
    size_t i;
    json_t *w;
    json_array_foreach(r->warnings, i, w)
    {
        if (strcmp(json_string_value(json_object_get(w, "object")), object) == 0 &&
            strcmp(json_string_value(json_object_get(w, "message")), msg) == 0)
            return;
    }
    json_array_append_new(r->warnings, json_pack("{s:s, s:s}", "object", object, "message", msg));
    if (r->warn_sink)
        r->warn_sink(r->warn_sink_ctx, object, msg);
}

void repo_set_warn_sink(struct repo *r, repo_warn_fn fn, void *ctx)
{
    r->warn_sink = fn;
    r->warn_sink_ctx = ctx;
}

/* True when, while the repository is being opened, pack pid (listed by index file
 * index_name) is not in data/. Deduplication trusts the index: without this, a lost pack
 * (or an index replayed after its packs were pruned) would make every later backup
 * reference blobs that are gone. A pack missing from the listing is looked up once more, in
 * case a concurrent backup wrote it (and then its index) after data/ was listed. */
static bool pack_missing_at_open(struct repo *r, const uint8_t pid[32], uint32_t nblobs,
                                 const char *index_name)
{
    if (r->oc_loading) {
        /* a load the open cache vouched for: only the packs it knows to be missing */
        if (!r->noc_missing || !bsearch(pid, r->oc_missing, r->noc_missing, 32, cmp_id32))
            return false;
    } else {
        if (!r->listed_packs)
            return false;
        if (r->nlisted_packs && bsearch(pid, r->listed_packs, r->nlisted_packs, 32, cmp_id32))
            return false;
    }
    char name[80];
    pack_object_name(pid, name, sizeof(name));
    struct err xe = ERR_INIT;
    if (storage_exists(r->st, name, &xe) != 0)
        return false; /* there after all, or cannot tell: the blobs stay (check reads them) */
    repo_warn(r, name,
              "pack listed in %s is missing: its %u blobs are treated as absent, so the next "
              "backup stores them again; backups made before need them (see `caris-backup "
              "check`)",
              index_name, nblobs);
    buf_append(&r->flagged, pid, 32);
    return true;
}

#define LISTED_SIZE_LEN 40 /* id (32) || size (u64, host order) */

/* The size data/'s listing at open gave pack pid, or UINT64_MAX when unknown. */
static uint64_t listed_pack_size(const struct repo *r, const uint8_t pid[32])
{
    size_t n = r->listed_sizes.len / LISTED_SIZE_LEN;
    const uint8_t *hit =
        n ? bsearch(pid, r->listed_sizes.data, n, LISTED_SIZE_LEN, cmp_id32) : NULL;
    uint64_t size = UINT64_MAX;
    if (hit)
        memcpy(&size, hit + 32, sizeof(size));
    return size;
}

/* Index file payload (after decryption and zstd):
 *   "CIDX" u32 version(1) u32 npacks, then per pack: id[32] u32 nblobs, then per blob:
 *   id[32] u32 off u32 clen u32 ulen_flags. */
static int index_header(struct reader *rd, const char *name, uint32_t *npacks, struct err *e)
{
    uint8_t magic[4];
    uint32_t version;
    if (reader_bytes(rd, magic, 4) || memcmp(magic, "CIDX", 4) || reader_u32le(rd, &version) ||
        reader_u32le(rd, npacks))
        return err_set(e, ERR_DAMAGE, NULL, "index %s: bad header", name);
    /* version 2 differs only in the padding after the compressed payload */
    if (version != 1 && version != 2)
        return err_set(e, ERR_DAMAGE, "upgrade caris-backup", "index %s: unsupported version %u",
                       name, version);
    return 0;
}

/* A blob's record in an index file is laid out as in a pack trailer. */
int index_parse_into(struct repo *r, const uint8_t *p, size_t len, int source, const char *name,
                     struct err *e)
{
    struct reader rd;
    reader_init(&rd, p, len);
    uint32_t npacks;
    if (index_header(&rd, name, &npacks, e) != 0)
        return -1;
    for (uint32_t i = 0; i < npacks; i++) {
        uint8_t pid[32];
        uint32_t nblobs;
        if (reader_bytes(&rd, pid, 32) || reader_u32le(&rd, &nblobs))
            return err_set(e, ERR_DAMAGE, NULL, "index %s: truncated", name);
        if ((uint64_t)nblobs * PACK_TRAILER_ENTRY_LEN > rd.len - rd.pos)
            return err_set(e, ERR_DAMAGE, NULL, "index %s: blob count exceeds file", name);
        uint32_t pidx = repo_add_pack_locked(r, pid, source);
        /* A pack that is gone keeps its place in the table (check reports it and the backups
         * that need it), but its blobs are absent: the next backup stores them again. */
        bool gone = pack_missing_at_open(r, pid, nblobs, name);
        uint64_t psize = gone ? UINT64_MAX : listed_pack_size(r, pid);
        uint32_t past_end = 0;
        for (uint32_t b = 0; b < nblobs; b++) {
            uint8_t id[32];
            uint32_t off, clen, ulf;
            if (reader_bytes(&rd, id, 32) || reader_u32le(&rd, &off) || reader_u32le(&rd, &clen) ||
                reader_u32le(&rd, &ulf))
                return err_set(e, ERR_DAMAGE, NULL, "index %s: truncated", name);
            if (clen < CX_TAG_LEN || (ulf & ULEN_MASK) > REPO_MAX_BLOB ||
                clen > REPO_MAX_BLOB + CX_TAG_LEN || off < PACK_HEADER_LEN)
                return err_set(e, ERR_DAMAGE, NULL, "index %s: invalid blob entry", name);
            if (gone) {
                if (r->ngone == r->gone_cap) {
                    r->gone_cap = r->gone_cap ? 2 * r->gone_cap : 64;
                    r->gone = xrealloc(r->gone, xsize(r->gone_cap, sizeof(*r->gone), 0));
                }
                memcpy(r->gone[r->ngone].id, id, 32);
                r->gone[r->ngone++].pack = pidx;
            }
            uint32_t ei =
                gone ? INDEX_FULL
                     : index_load_locked(r, id, pidx, off, clen, ulf, (uint64_t)off + clen > psize);
            if (!gone && ei == INDEX_FULL)
                return err_set(e, ERR_FAILURE, INDEX_FULL_HINT,
                               "index %s: the repository's index is full", name);
            /* Past the end of a truncated pack: kept for reading (which reports the damage)
             * but, like a recorded damaged copy, never deduplicated against, and replaced by
             * any other copy: the next backup that meets the blob stores it again. */
            if (!gone && (uint64_t)off + clen > psize) {
                struct ientry *en = repo_entry(r, ei);
                if (en->pack == pidx && en->off == off)
                    bad_entry_set_locked(r, ei, true);
                past_end++;
            }
        }
        if (past_end) {
            char pname[80];
            pack_object_name(pid, pname, sizeof(pname));
            repo_warn(r, pname,
                      "pack is shorter than %s says (truncated): %u of its blobs lie past its "
                      "end and are treated as damaged, so the next backup stores them again; "
                      "backups made before need them (see `caris-backup check`)",
                      name, past_end);
            json_array_append_new(r->truncated,
                                  json_pack("{s:s, s:s}", "object", pname, "error",
                                            "pack is shorter than the index says (truncated)"));
        }
    }
    if (rd.pos != rd.len)
        return err_set(e, ERR_DAMAGE, NULL, "index %s: trailing bytes", name);
    return 0;
}

int pack_trailer_parse_into(struct repo *r, uint32_t pidx, const uint8_t *p, size_t len,
                            uint64_t pack_size, const char *name, struct err *e)
{
    if (len % PACK_TRAILER_ENTRY_LEN != 0)
        return err_set(e, ERR_DAMAGE, NULL, "pack %s: bad trailer length", name);
    for (size_t i = 0; i < len; i += PACK_TRAILER_ENTRY_LEN) {
        uint32_t off = load_u32le(p + i + 32), clen = load_u32le(p + i + 36),
                 ulf = load_u32le(p + i + 40);
        if (clen < CX_TAG_LEN || (ulf & ULEN_MASK) > REPO_MAX_BLOB || off < PACK_HEADER_LEN ||
            (uint64_t)off + clen > pack_size)
            return err_set(e, ERR_DAMAGE, NULL, "pack %s: invalid trailer entry", name);
        if (index_load_locked(r, p + i, pidx, off, clen, ulf, false) == INDEX_FULL)
            return err_set(e, ERR_FAILURE, INDEX_FULL_HINT,
                           "pack %s: the repository's index is full", name);
    }
    return 0;
}

/* Where a pack's bytes come from: storage, or a buffer holding the whole pack (check). */
struct pack_src {
    struct storage *st;
    const uint8_t *mem;
};

static int pack_src_read(const struct pack_src *src, const char *name, uint64_t off, void *out,
                         size_t len, struct err *e)
{
    if (src->mem) {
        memcpy(out, src->mem + off, len);
        return 0;
    }
    return storage_read_at(src->st, name, off, out, len, e);
}

static int pack_trailer_decode(struct repo *r, const struct pack_src *src, const char *name,
                               uint64_t size, struct buf *out, struct err *e)
{
    /* Nothing read from a pack is trusted before it is authenticated, and a pack no index lists
     * may have been planted: every length is bounded before anything is allocated, by the
     * largest pack a writer makes, then by the file itself. */
    if (size > PACK_MAX_SIZE)
        return err_set(e, ERR_DAMAGE, NULL, "pack %s is implausibly large (%llu bytes)", name,
                       (unsigned long long)size);
    if (size < PACK_HEADER_LEN + PACK_FOOTER_LEN + CX_TAG_LEN)
        return err_set(e, ERR_DAMAGE, NULL, "pack %s is too short", name);
    uint8_t head[PACK_HEADER_LEN], foot[PACK_FOOTER_V2_LEN];
    if (pack_src_read(src, name, 0, head, sizeof(head), e) != 0)
        return -1;
    int version = pack_version(head);
    size_t flen = version == 1 ? PACK_FOOTER_LEN : PACK_FOOTER_V2_LEN;
    if (version == 0)
        return err_set(e, ERR_DAMAGE, NULL, "pack %s: bad magic", name);
    if (size < PACK_HEADER_LEN + flen + CX_TAG_LEN)
        return err_set(e, ERR_DAMAGE, NULL, "pack %s is too short", name);
    if (pack_src_read(src, name, size - flen, foot, flen, e) != 0)
        return -1;
    if (memcmp(foot + flen - 4, PACK_END_MAGIC, 4) != 0)
        return err_set(e, ERR_DAMAGE, NULL, "pack %s: bad magic", name);
    uint8_t key[32], nonce[CX_NONCE_LEN];
    if (pack_derive_key(r, head + 8, key, e) != 0)
        return -1;
    uint64_t room = size - PACK_HEADER_LEN - flen, tlen;
    memset(nonce, 0xff, sizeof(nonce));
    if (version == 1) {
        /* In clear: a whole number of entries, each naming a blob of at least one tag's
         * length in front of the trailer. */
        tlen = load_u32le(foot);
        if (tlen < CX_TAG_LEN || tlen > room || (tlen - CX_TAG_LEN) % PACK_TRAILER_ENTRY_LEN ||
            (tlen - CX_TAG_LEN) / PACK_TRAILER_ENTRY_LEN * CX_TAG_LEN > room - tlen) {
            cx_wipe(key, sizeof(key));
            return err_set(e, ERR_DAMAGE, NULL, "pack %s: bad trailer length", name);
        }
    } else {
        uint8_t plen[4] = {0};
        int rc = cx_aead_open(key, nonce, FOOTER_AAD_V2, sizeof(FOOTER_AAD_V2) - 1, foot,
                              4 + CX_TAG_LEN, plen, e);
        tlen = load_u32le(plen);
        if (rc != 0 || tlen < 4 + CX_TAG_LEN || tlen > room) {
            cx_wipe(key, sizeof(key));
            return err_set(e, ERR_DAMAGE, NULL, "pack %s: %s", name,
                           rc ? "footer authentication failed" : "bad trailer length");
        }
        /* the trailer's nonce is its offset, like a blob's (no blob reaches it) */
        pack_nonce(size - flen - tlen, nonce);
    }
    struct buf ct = {0};
    buf_reserve(&ct, (size_t)tlen);
    int rc = pack_src_read(src, name, size - flen - tlen, ct.data, (size_t)tlen, e);
    out->len = 0;
    if (rc == 0) {
        buf_reserve(out, (size_t)tlen);
        const char *aad = version == 1 ? TRAILER_AAD : TRAILER_AAD_V2;
        if (cx_aead_open(key, nonce, aad, strlen(aad), ct.data, (size_t)tlen, out->data, e) != 0)
            rc = err_set(e, ERR_DAMAGE, NULL, "pack %s: trailer authentication failed", name);
    }
    cx_wipe(key, sizeof(key));
    buf_free(&ct);
    if (rc != 0)
        return -1;
    out->len = (size_t)tlen - CX_TAG_LEN;
    if (version == 2) {
        /* u32 entry count || entries || zero bytes up to the padded size */
        uint64_t n = load_u32le(out->data);
        if (4 + n * PACK_TRAILER_ENTRY_LEN > out->len)
            return err_set(e, ERR_DAMAGE, NULL, "pack %s: bad trailer entry count", name);
        size_t elen = (size_t)n * PACK_TRAILER_ENTRY_LEN;
        for (size_t i = 4 + elen; i < out->len; i++)
            if (out->data[i] != 0)
                return err_set(e, ERR_DAMAGE, NULL, "pack %s: trailer padding is not zero", name);
        memmove(out->data, out->data + 4, elen);
        out->len = elen;
    }
    return 0;
}

int pack_read_trailer(struct repo *r, const char *name, struct buf *out, uint64_t *size_out,
                      struct err *e)
{
    struct pack_src src = {.st = r->st};
    if (storage_size(r->st, name, size_out, e) != 0)
        return -1;
    return pack_trailer_decode(r, &src, name, *size_out, out, e);
}

int pack_trailer_from_buf(struct repo *r, const char *name, const uint8_t *data, size_t size,
                          struct buf *out, struct err *e)
{
    struct pack_src src = {.mem = data};
    return pack_trailer_decode(r, &src, name, size, out, e);
}

/* ---- open / init --------------------------------------------------------------------- */

static void damage_add(struct repo *r, const char *object, const struct err *e)
{
    json_array_append_new(r->damage, json_pack("{s:s, s:s}", "object", object, "error", e->msg));
}

static struct repo *repo_alloc(const char *path)
{
    /* Secret memory (locked, out of core dumps, wiped on free): the struct holds the master
     * key, the chunker seed and, through packs, every pack key derived so far. */
    struct repo *r = secmem_alloc(sizeof(*r));
    r->path = xstrdup(path);
    pthread_mutex_init(&r->mu, NULL);
    r->damage = json_array();
    r->truncated = json_array();
    r->warnings = json_array();
    r->compression = DEFAULT_COMPRESSION;
    return r;
}

void repo_close(struct repo *r)
{
    if (!r)
        return;
    repo_lock_release(r);
    for (size_t i = 0; i < r->nblocks; i++)
        free(r->blocks[i]);
    free(r->blocks);
    free(r->dups);
    free(r->gone);
    free(r->emap.slots);
    free(r->pmap.slots);
    secmem_free(r->packs);
    for (size_t i = 0; i < r->nindex_files; i++)
        free(r->index_files[i]);
    free(r->index_files);
    free(r->adopted);
    buf_free(&r->adopted_payload);
    json_decref(r->damage);
    json_decref(r->truncated);
    json_decref(r->warnings);
    free(r->listed_packs);
    buf_free(&r->listed_sizes);
    opencache_free(&r->oc);
    free(r->oc_missing);
    buf_free(&r->flagged);
    buf_free(&r->bad_pairs);
    buf_free(&r->bad_found);
    bad_entries_clear(r);
    free(r->state_local);
    cx_hmac_key_free(r->idkey);
    storage_close(r->st);
    pthread_mutex_destroy(&r->mu);
    free(r->path);
    secmem_free(r); /* wipes the keys and the chunker seed */
}

/* A repository whose marker is gone (deleted by hand, or lost) while its config is there:
 * damage, never "no repository" (whose hint, init, would then say to remove the leftovers:
 * every backup). */
static int marker_missing(const char *path, struct err *e)
{
    return err_set(e, ERR_DAMAGE,
                   "do not run init and remove nothing: put the marker back (from a copy of the "
                   "repository, or write its text: \"caris-backup repository\", a newline, "
                   "\"format 1\", a newline), then run `caris-backup check`",
                   "%s holds a repository (its config is there) but its marker file " MARKER_NAME
                   " is missing",
                   path);
}

/* A repository whose config is gone while its marker is there: damage (nothing in it can be
 * read without the config), never "no repository" (init would then be the hint). */
static int config_missing(const char *path, struct err *e)
{
    return err_set(e, ERR_DAMAGE,
                   "do not run init and remove nothing: restore config (and keys/) from a copy of "
                   "the repository (nothing in it can be read without them), then run "
                   "`caris-backup check`",
                   "%s holds a repository (its marker is there) but its config is missing", path);
}

int repo_exists(const char *path, struct err *e)
{
    if (!storage_location_is_s3(path)) {
        /* Only "no such file" means no repository: a repository this user may not read (a
         * root-owned 0700 one read by another user) is permission denied, not absent. */
        char *m = xasprintf("%s/" MARKER_NAME, path);
        struct stat sb;
        int r = lstat(m, &sb) == 0 ? 1 : (errno == ENOENT || errno == ENOTDIR) ? 0 : -1;
        int saved = errno;
        if (r < 0)
            err_sys(e, saved,
                    saved == EACCES ? "run caris-backup as the user that owns the repository "
                                      "(or give this user access to it)"
                                    : NULL,
                    "cannot read repository %s", path);
        free(m);
        if (r == 0) {
            char *c = xasprintf("%s/config", path);
            bool has_config = lstat(c, &sb) == 0;
            free(c);
            if (has_config)
                r = marker_missing(path, e);
        } else if (r == 1) {
            char *c = xasprintf("%s/config", path);
            if (lstat(c, &sb) != 0 && errno == ENOENT)
                r = config_missing(path, e);
            free(c);
        }
        return r;
    }
    struct storage *st = storage_open(path, false, e);
    if (!st)
        return -1;
    int r = storage_exists(st, MARKER_NAME, e);
    if (r == 1 && storage_exists(st, "config", e) == 0)
        r = config_missing(path, e);
    storage_close(st);
    return r;
}

static json_t *params_json(const struct chunker_params *p)
{
    return json_pack("{s:I, s:I, s:I}", "min", (json_int_t)p->min_size, "avg",
                     (json_int_t)p->avg_size, "max", (json_int_t)p->max_size);
}

static int params_from_json(json_t *j, struct chunker_params *p)
{
    json_int_t mn, av, mx;
    if (!j || json_unpack(j, "{s:I, s:I, s:I}", "min", &mn, "avg", &av, "max", &mx) != 0)
        return -1;
    if (mn <= 0 || av <= 0 || mx <= 0 || mn > (json_int_t)REPO_MAX_BLOB ||
        av > (json_int_t)REPO_MAX_BLOB || mx > (json_int_t)REPO_MAX_BLOB)
        return -1;
    p->min_size = (uint32_t)mn;
    p->avg_size = (uint32_t)av;
    p->max_size = (uint32_t)mx;
    struct chunker c;
    static const uint8_t seed[32];
    return chunker_init(&c, p, seed);
}

static int collect_name(void *ctx, const char *name, uint64_t size, struct err *e)
{
    (void)size;
    (void)e;
    struct namelist *l = ctx;
    l->v = xrealloc(l->v, xsize(l->n + 1, sizeof(char *), 0));
    l->v[l->n++] = xstrdup(name);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void namelist_free(struct namelist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int list_names_in(struct storage *st, const char *dir, struct namelist *l, struct err *e)
{
    memset(l, 0, sizeof(*l));
    if (storage_list(st, dir, collect_name, l, e) != 0) {
        namelist_free(l);
        return -1;
    }
    if (l->n)
        qsort(l->v, l->n, sizeof(char *), cmp_str);
    return 0;
}

struct names_sizes {
    struct namelist *l;
    struct buf *sizes;
};

static int collect_name_size(void *ctx, const char *name, uint64_t size, struct err *e)
{
    struct names_sizes *ns = ctx;
    uint8_t rec[LISTED_SIZE_LEN];
    if (pack_name_parse(name, rec)) {
        memcpy(rec + 32, &size, sizeof(size));
        buf_append(ns->sizes, rec, sizeof(rec));
    }
    return collect_name(ns->l, name, size, e);
}

/* As repo_list_names, for data/: also each pack's size (see struct repo, listed_sizes). */
static int list_names_sizes(struct storage *st, const char *dir, struct namelist *l,
                            struct buf *sizes, struct err *e)
{
    memset(l, 0, sizeof(*l));
    sizes->len = 0;
    struct names_sizes ns = {l, sizes};
    if (storage_list(st, dir, collect_name_size, &ns, e) != 0) {
        namelist_free(l);
        buf_free(sizes);
        return -1;
    }
    if (l->n)
        qsort(l->v, l->n, sizeof(char *), cmp_str);
    if (sizes->len)
        qsort(sizes->data, sizes->len / LISTED_SIZE_LEN, LISTED_SIZE_LEN, cmp_id32);
    return 0;
}

int repo_list_names(struct repo *r, const char *dir, struct namelist *l, struct err *e)
{
    return list_names_in(r->st, dir, l, e);
}

int repo_read_config(struct repo *r, struct err *e)
{
    struct buf raw = {0}, plain = {0};
    int rc = -1;
    json_t *j = NULL;
    if (storage_get(r->st, "config", 1 << 20, &raw, e) != 0) {
        if (e->code == ERR_NOT_FOUND) { /* the marker was there (check_marker) */
            r->config_missing = true;
            config_missing(r->path, e);
        }
        goto out;
    }
    if (container_open(r, 'C', raw.data, raw.len, &plain, e) != 0) {
        err_wrap(e, "repository config %s/config", r->path);
        goto out;
    }
    json_error_t je;
    j = json_loadb((const char *)plain.data, plain.len, 0, &je);
    const char *seed_hex;
    json_int_t version, comp;
    json_t *chunker = NULL;
    /* The version first: a newer format's config need not have this version's fields, and
     * must be refused as newer, never as damage. */
    json_t *jv = json_object_get(j, "version");
    if (json_is_integer(jv) && json_integer_value(jv) != REPO_FORMAT_VERSION) {
        err_set(e, ERR_FAILURE, "upgrade caris-backup to open this repository",
                "repository %s has format version %lld, this program reads version %d", r->path,
                (long long)json_integer_value(jv), REPO_FORMAT_VERSION);
        goto out;
    }
    if (!j ||
        json_unpack(j, "{s:I, s:s, s:o, s:I}", "version", &version, "chunker_seed", &seed_hex,
                    "chunker", &chunker, "compression", &comp) != 0 ||
        cx_unhex(seed_hex, r->chunker_seed, 32) != 0 ||
        params_from_json(json_object_get(chunker, "files"), &r->cp_files) != 0 ||
        params_from_json(json_object_get(chunker, "dumps"), &r->cp_dumps) != 0) {
        err_set(e, ERR_DAMAGE, NULL, "repository config %s/config is malformed", r->path);
        goto out;
    }
    r->compression = (int)comp;
    /* The id names the local copy of the state record: only hex digits go into a path. */
    const char *rid = json_string_value(json_object_get(j, "id"));
    uint8_t rid_bin[16];
    if (rid && strlen(rid) == 32 && cx_unhex(rid, rid_bin, 16) == 0)
        snprintf(r->id, sizeof(r->id), "%s", rid);
    r->state_needed = json_is_true(json_object_get(j, "state_record"));
    rc = 0;
out:
    json_decref(j);
    if (plain.data)
        cx_wipe(plain.data, plain.cap);
    buf_free(&plain);
    buf_free(&raw);
    return rc;
}

/* The payload of index file name: read, authenticated, decompressed. */
static int index_file_read(struct repo *r, const char *name, struct buf *raw, struct buf *plain,
                           struct buf *payload, struct err *e)
{
    return storage_get(r->st, name, REPO_MAX_METADATA, raw, e) != 0 ||
                   container_open(r, 'I', raw->data, raw->len, plain, e) != 0 ||
                   index_payload_unpack(plain->data, plain->len, payload, e) != 0
               ? -1
               : 0;
}

/* True when e says that an index file or pack the open's listing named is not there any more.
 * An open takes no lock, and a prune deletes old index files, then the packs no index lists
 * any more: such a file is passed over, as if listed a moment later (before stop 29 the open
 * failed, "cannot stat"). Under a lock no prune runs: gone then is an error, as before. */
static bool gone_since_listed(const struct repo *r, const struct err *e)
{
    return e->code == ERR_NOT_FOUND && !r->lock;
}

/* Reads the index files l (a listing of index/). */
static int load_indexes(struct repo *r, const struct namelist *lp, struct err *e)
{
    const struct namelist l = *lp;
    struct buf raw = {0}, plain = {0}, payload = {0};
    for (size_t i = 0; i < l.n; i++) {
        struct err ie = ERR_INIT;
        int source = (int)r->nindex_files;
        r->index_files = xrealloc(r->index_files, xsize(r->nindex_files + 1, sizeof(char *), 0));
        r->index_files[r->nindex_files++] = xstrdup(l.v[i]);
        if (index_file_read(r, l.v[i], &raw, &plain, &payload, &ie) != 0 ||
            index_parse_into(r, payload.data, payload.len, source, l.v[i], &ie) != 0) {
            /* Its entries are left out (a backup stores such blobs again); its name stays, so
             * that a lock taken later finds the handle stale and reads the index again
             * (index_stale). */
            if (gone_since_listed(r, &ie))
                continue;
            /* Listed, then not found, under our lock (no prune can have replaced it): when a
             * second listing still has it, the storage lost it, or lists what it no longer
             * has. Damage, as a garbled one is: a prune refuses, check names it (it was "not
             * found", exit 7, with no word of what it meant). One the second listing lacks is
             * gone for a reason (a listing that lagged behind a delete, a lock that lapsed). */
            bool lost = ie.code == ERR_NOT_FOUND;
            if (lost) {
                struct namelist again = {0};
                if (repo_list_names(r, "index", &again, e) != 0)
                    goto fail; /* (a bucket gone says so here) */
                bool still = false;
                for (size_t j = 0; j < again.n && !still; j++)
                    still = strcmp(again.v[j], l.v[i]) == 0;
                namelist_free(&again);
                if (!still)
                    continue;
                repo_warn(r, l.v[i], "index file listed but not found when read: %s", ie.msg);
            }
            if (ie.code != ERR_DAMAGE && !lost) {
                *e = ie;
                goto fail;
            }
            char msg[1100];
            snprintf(msg, sizeof(msg), "index file %s is damaged: %s%s", l.v[i],
                     lost ? "listed but gone when read: " : "", ie.msg);
            ie.code = ERR_DAMAGE;
            snprintf(ie.msg, sizeof(ie.msg), "%s", msg);
            damage_add(r, l.v[i], &ie);
        }
    }
    buf_free(&raw);
    buf_free(&plain);
    buf_free(&payload);
    return 0;
fail:
    buf_free(&raw);
    buf_free(&plain);
    buf_free(&payload);
    return -1;
}

/* Makes the blobs of pack pid (its decrypted trailer tr) findable, and queues its records
 * for the next index file the writer writes. */
static int adopt_pack(struct repo *r, const uint8_t pid[32], const uint8_t *tr, size_t len,
                      uint64_t size, const char *name, struct err *e)
{
    uint32_t pidx = repo_add_pack_locked(r, pid, -1);
    if (pack_trailer_parse_into(r, pidx, tr, len, size, name, e) != 0)
        return -1;
    r->adopted = xrealloc(r->adopted, xsize(r->nadopted + 1, sizeof(uint32_t), 0));
    r->adopted[r->nadopted++] = pidx;
    buf_append(&r->adopted_payload, pid, 32);
    buf_append_u32le(&r->adopted_payload, (uint32_t)(len / PACK_TRAILER_ENTRY_LEN));
    buf_append(&r->adopted_payload, tr, len);
    return 0;
}

/* Packs in data/ that no index lists were left by an interrupted backup (or are being
 * written by a concurrent one). Their trailers make their blobs findable again. */
static int adopt_orphan_packs(struct repo *r, const struct namelist *lp, struct err *e)
{
    const struct namelist l = *lp;
    struct buf tr = {0};
    int rc = 0;
    for (size_t i = 0; i < l.n; i++) {
        uint8_t pid[32];
        if (!pack_name_parse(l.v[i], pid))
            continue; /* not a pack name, or not where reads look: check reports it */
        if (repo_find_pack_locked(r, pid) >= 0)
            continue;
        struct err pe = ERR_INIT;
        uint64_t size;
        if (pack_read_trailer(r, l.v[i], &tr, &size, &pe) != 0) {
            if (gone_since_listed(r, &pe))
                continue; /* nothing to adopt */
            if (pe.code != ERR_DAMAGE) {
                *e = pe;
                rc = -1;
                break;
            }
            damage_add(r, l.v[i], &pe);
            continue;
        }
        if (adopt_pack(r, pid, tr.data, tr.len, size, l.v[i], &pe) != 0)
            damage_add(r, l.v[i], &pe);
    }
    buf_free(&tr);
    return rc;
}

/* Adopts the packs the open cache found no index listing (index file records; see
 * index_parse_into), without reading their trailers again. A pack an index file lists by
 * now is not adopted. Whether they still exist is checked once a lock is held
 * (index_stale), as for packs adopted from a listing. */
static int adopt_cached(struct repo *r, const struct opencache *c, struct err *e)
{
    struct reader rd;
    reader_init(&rd, c->adopted.data, c->adopted.len);
    for (uint32_t i = 0; i < c->nadopted; i++) {
        uint8_t pid[32];
        uint32_t nblobs;
        const uint8_t *p;
        if (reader_bytes(&rd, pid, 32) || reader_u32le(&rd, &nblobs) ||
            nblobs > (rd.len - rd.pos) / PACK_TRAILER_ENTRY_LEN ||
            !(p = reader_skip(&rd, (size_t)nblobs * PACK_TRAILER_ENTRY_LEN)))
            break;
        if (repo_find_pack_locked(r, pid) >= 0)
            continue;
        char name[80];
        pack_object_name(pid, name, sizeof(name));
        /* the records are authenticated (this program wrote them): what fails here is the
         * index being full, or a program that wrote them wrong */
        if (adopt_pack(r, pid, p, (size_t)nblobs * PACK_TRAILER_ENTRY_LEN, PACK_MAX_SIZE, name,
                       e) != 0)
            return err_wrap(e, "open cache of %s", r->path);
    }
    if (rd.pos != rd.len)
        return err_set(e, ERR_FAILURE,
                       "remove the open cache file (BACKUP_DIR/metadata/cache/<repository "
                       "id>/open.cache); the next open lists the packs",
                       "the open cache of %s is malformed", r->path);
    return 0;
}

/* Sorts n 32-byte ids and drops repeats; returns how many are left. */
static size_t ids_sort_unique(uint8_t (*v)[32], size_t n)
{
    size_t m = 0;
    if (n)
        qsort(v, n, 32, cmp_id32);
    for (size_t i = 0; i < n; i++)
        if (!m || memcmp(v[m - 1], v[i], 32) != 0)
            memmove(v[m++], v[i], 32);
    return m;
}

/* A cache older than this is not trusted: data/ is listed again, which bounds how long a pack
 * deleted behind the program's back (damage) goes unnoticed by opens (check notices it at
 * once). */
#define OPENCACHE_MAX_AGE_NS (7LL * 24 * 3600 * 1000000000LL)

/* c: what the handle's index says now, to be written as the open cache. */
static void oc_from_handle(struct repo *r, struct opencache *c, int64_t listed_ns,
                           const struct namelist *stale)
{
    memset(c, 0, sizeof(*c));
    c->listed_ns = listed_ns;
    c->npacks = (uint32_t)r->npacks;
    c->index.v = xcalloc(r->nindex_files + 1, sizeof(char *));
    for (size_t i = 0; i < r->nindex_files; i++)
        c->index.v[c->index.n++] = xstrdup(r->index_files[i]);
    if (c->index.n)
        qsort(c->index.v, c->index.n, sizeof(char *), cmp_str);
    size_t n = r->flagged.len / 32;
    c->missing = xcalloc(n ? n : 1, 32);
    if (n)
        memcpy(c->missing, r->flagged.data, n * 32);
    c->nmissing = ids_sort_unique(c->missing, n);
    c->stale.v = xcalloc(stale && stale->n ? stale->n : 1, sizeof(char *));
    for (size_t i = 0; stale && i < stale->n; i++)
        c->stale.v[c->stale.n++] = xstrdup(stale->v[i]);
    c->nadopted = (uint32_t)r->nadopted;
    buf_append(&c->adopted, r->adopted_payload.data, r->adopted_payload.len);
}

static bool oc_same(const struct opencache *a, const struct opencache *b)
{
    if (a->index.n != b->index.n || a->nmissing != b->nmissing || a->nadopted != b->nadopted ||
        a->adopted.len != b->adopted.len || a->stale.n != b->stale.n)
        return false;
    for (size_t i = 0; i < a->index.n; i++)
        if (strcmp(a->index.v[i], b->index.v[i]) != 0)
            return false;
    for (size_t i = 0; i < a->stale.n; i++)
        if (strcmp(a->stale.v[i], b->stale.v[i]) != 0)
            return false;
    return (!a->nmissing || memcmp(a->missing, b->missing, a->nmissing * 32) == 0) &&
           (!a->adopted.len || memcmp(a->adopted.data, b->adopted.data, a->adopted.len) == 0);
}

/* Makes c the handle's open cache, and writes it unless the file says the same already.
 * The cache is a shortcut: a failure to write it costs the next open a listing, nothing
 * else, so it is not reported. */
static void oc_adopt_state(struct repo *r, struct opencache *c, const struct opencache *on_disk)
{
    if (!on_disk || !oc_same(c, on_disk)) {
        struct err ignore = ERR_INIT;
        opencache_save(r, c, &ignore);
    }
    opencache_free(&r->oc);
    r->oc = *c;
    r->oc_valid = true;
    memset(c, 0, sizeof(*c));
}

/* The packs index file name lists (appended to ids, 32 bytes each), without loading its
 * blobs. */
static int index_file_packs(struct repo *r, const char *name, struct buf *ids, struct err *e)
{
    struct buf raw = {0}, plain = {0}, payload = {0};
    int rc = -1;
    if (index_file_read(r, name, &raw, &plain, &payload, e) != 0)
        goto out;
    struct reader rd;
    reader_init(&rd, payload.data, payload.len);
    uint8_t pid[32];
    uint32_t npacks, nblobs;
    if (index_header(&rd, name, &npacks, e) != 0)
        goto out;
    for (uint32_t i = 0; i < npacks; i++) {
        if (reader_bytes(&rd, pid, 32) || reader_u32le(&rd, &nblobs) ||
            !reader_skip(&rd, (size_t)nblobs * PACK_TRAILER_ENTRY_LEN)) {
            err_set(e, ERR_DAMAGE, NULL, "index %s: truncated", name);
            goto out;
        }
        buf_append(ids, pid, 32);
    }
    rc = 0;
out:
    if (plain.data)
        cx_wipe(plain.data, plain.cap);
    buf_free(&raw);
    buf_free(&plain);
    buf_free(&payload);
    return rc;
}

/* Opening with the open cache: index/ is listed, data/ is not. Valid only while every index
 * file the cache covers is still there: packs are deleted only by prune, which deletes every
 * index file it started with before it deletes any pack (docs/REPOSITORY-FORMAT.md,
 * "Prune"), so then every pack those files name that was there when the cache learnt it is
 * still there. Packs of index files written since are looked up one HEAD each (a writer
 * stores its packs before its index, so they are there unless damage or an index file
 * replayed after its packs were pruned), unless a full listing costs fewer requests.
 * 1: loaded, 0: the cache cannot vouch (the caller lists data/), -1: error. */
static int load_index_cached(struct repo *r, struct err *e)
{
    struct opencache c;
    if (opencache_load(r, &c) != 0)
        return 0;
    int rc = 0;
    struct namelist li = {0};
    struct buf ids = {0}, missing = {0};
    int64_t now = time_now_ns();
    if (!c.index.n || c.listed_ns > now || now - c.listed_ns > OPENCACHE_MAX_AGE_NS)
        goto out;
    if (repo_list_names(r, "index", &li, e) != 0) {
        rc = -1;
        goto out;
    }
    for (size_t i = 0; i < c.index.n; i++)
        if (!opencache_has_name(&li, c.index.v[i]))
            goto out; /* a prune ran: packs the cache saw may be gone */
    for (size_t i = 0; i < li.n; i++) {
        struct err ie = ERR_INIT;
        if (!opencache_has_name(&c.index, li.v[i]) &&
            index_file_packs(r, li.v[i], &ids, &ie) != 0 && ie.code != ERR_DAMAGE) {
            if (ie.code == ERR_NOT_FOUND)
                goto out; /* deleted since index/ was listed: a prune is running */
            *e = ie;      /* a damaged one is reported by load_indexes below */
            rc = -1;
            goto out;
        }
    }
    uint8_t(*v)[32] = (uint8_t(*)[32])ids.data;
    size_t nuniq = ids_sort_unique(v, ids.len / 32);
    /* a full listing costs one request per page (1,000 packs on S3) */
    unsigned page = r->st->list_page ? r->st->list_page : 1000;
    if (nuniq > c.npacks / page + 1)
        goto out;
    buf_append(&missing, c.missing, c.nmissing * 32);
    for (size_t i = 0; i < nuniq; i++) {
        char name[80];
        pack_object_name(v[i], name, sizeof(name));
        int ex = storage_exists(r->st, name, e);
        if (ex < 0) {
            rc = -1;
            goto out;
        }
        if (ex == 0)
            buf_append(&missing, v[i], 32);
    }
    r->noc_missing = missing.len / 32;
    r->oc_missing = (uint8_t(*)[32])missing.data;
    missing.data = NULL;
    if (r->noc_missing)
        qsort(r->oc_missing, r->noc_missing, 32, cmp_id32);
    r->oc_loading = true;
    rc = load_indexes(r, &li, e) == 0 ? 1 : -1;
    r->oc_loading = false;
    free(r->oc_missing);
    r->oc_missing = NULL;
    r->noc_missing = 0;
    if (rc == 1 && adopt_cached(r, &c, e) != 0)
        rc = -1;
    if (rc == 1) {
        r->index_cached = true;
        struct opencache now_c;
        oc_from_handle(r, &now_c, c.listed_ns, &c.stale);
        oc_adopt_state(r, &now_c, &c);
    }
out:
    opencache_free(&c);
    namelist_free(&li);
    buf_free(&ids);
    buf_free(&missing);
    return rc;
}

/* data/ is listed before the index files are read: entries of packs that are not there are
 * left out (pack_missing_at_open), and packs that no index lists are adopted. full: list
 * data/ even when the open cache could vouch for the packs. listed: data/ listed already by
 * the caller (taken over), or NULL. */
static int load_index_and_packs(struct repo *r, bool full, struct namelist *listed, struct err *e)
{
    if (!listed && !full && opencache_enabled(r)) {
        int crc = load_index_cached(r, e);
        if (crc != 0)
            return crc < 0 ? -1 : 0;
    }
    int64_t listed_ns = time_now_ns();
    struct namelist l, li = {0};
    if (listed) {
        l = *listed;
        memset(listed, 0, sizeof(*listed));
    } else if (list_names_sizes(r->st, "data", &l, &r->listed_sizes, e) != 0) {
        return -1;
    }
    r->listed_packs = xcalloc(l.n ? l.n : 1, 32);
    for (size_t i = 0; i < l.n; i++) {
        /* a pack where reads do not look for it is missing to them (and to deduplication) */
        if (pack_name_parse(l.v[i], r->listed_packs[r->nlisted_packs]))
            r->nlisted_packs++;
    }
    if (r->nlisted_packs)
        qsort(r->listed_packs, r->nlisted_packs, 32, cmp_id32);
    int rc = repo_list_names(r, "index", &li, e) == 0 && load_indexes(r, &li, e) == 0 &&
                     adopt_orphan_packs(r, &l, e) == 0
                 ? 0
                 : -1;
    free(r->listed_packs);
    r->listed_packs = NULL;
    r->nlisted_packs = 0;
    buf_free(&r->listed_sizes);
    namelist_free(&l);
    namelist_free(&li);
    r->index_cached = false;
    if (rc == 0 && opencache_enabled(r)) {
        /* the stale locks a former listing accounted for stay accounted for */
        struct opencache prev, now_c;
        bool had = opencache_load(r, &prev) == 0;
        oc_from_handle(r, &now_c, listed_ns, had ? &prev.stale : NULL);
        oc_adopt_state(r, &now_c, had ? &prev : NULL);
        opencache_free(&prev);
    }
    return rc;
}

static int check_marker(struct repo *r, struct err *e)
{
    struct buf b = {0};
    struct err me = ERR_INIT;
    if (storage_get(r->st, MARKER_NAME, 4096, &b, &me) != 0) {
        buf_free(&b);
        struct err ce = ERR_INIT;
        if (me.code == ERR_NOT_FOUND && storage_exists(r->st, "config", &ce) == 1)
            return marker_missing(r->path, e);
        if (me.code == ERR_NOT_FOUND)
            return err_set(e, ERR_NOT_FOUND,
                           "create it with `caris-backup init` (BACKUP_DIR / --repo), or point "
                           "BACKUP_DIR / --repo at an existing repository",
                           "no repository at %s", r->path);
        *e = me;
        return -1;
    }
    /* The whole text is checked, not only its number: "caris-backup repository\nformat N\n"
     * with N a plain decimal number. Anything else is not a marker we wrote (damaged, or
     * another program's file). */
    static const char head[] = "caris-backup repository\nformat ";
    size_t hl = sizeof(head) - 1, nd = 0;
    bool ok = b.len > hl && memcmp(b.data, head, hl) == 0;
    int version = 0;
    while (ok && hl + nd < b.len && b.data[hl + nd] >= '0' && b.data[hl + nd] <= '9' && nd < 6)
        version = version * 10 + (b.data[hl + nd++] - '0');
    ok = ok && nd > 0 && (nd == 1 || b.data[hl] != '0') && hl + nd + 1 == b.len &&
         b.data[hl + nd] == '\n';
    buf_free(&b);
    if (!ok)
        return err_set(e, ERR_DAMAGE,
                       "restore the marker from a copy of the repository (its text is "
                       "\"caris-backup repository\", a newline, \"format 1\", a newline), or check "
                       "that BACKUP_DIR / --repo names a caris-backup repository",
                       "%s/" MARKER_NAME " is damaged: it is not a caris-backup repository marker",
                       r->path);
    if (version != REPO_FORMAT_VERSION)
        return err_set(e, version > REPO_FORMAT_VERSION ? ERR_FAILURE : ERR_DAMAGE,
                       "a newer caris-backup wrote this repository: upgrade to read it",
                       "repository %s has format %d, this program reads format %d", r->path,
                       version, REPO_FORMAT_VERSION);
    return 0;
}

struct repo *repo_open(const char *path, const char *password, struct err *e)
{
    return repo_open_hint(path, password, NULL, e);
}

/* The listing of data/ that opening a directory repository makes (on S3 the open cache
 * decides whether there is one). It needs no key, so it runs while the key slot's Argon2id
 * does: with a cold cache, listing the 256 directories of data/ took 16 ms on the 2-core test
 * machine (a 2 GB file backup's repository), the derivation at the default parameters 110 ms
 * on one core. It still ends before index/ is listed, but now a derivation or more (one per
 * key slot tried) before, not milliseconds: a concurrent prune has that much longer to
 * delete index files and then packs the listing saw. Packs that are gone when their trailer
 * is read are passed over (adopt_orphan_packs); a pack an index names that is missing from
 * the listing is looked up once more (pack_missing_at_open). */
struct data_listing {
    struct storage *st;
    struct namelist l;
    struct buf sizes; /* see struct repo, listed_sizes */
    struct err e;
    int rc;
    pthread_t thread;
    bool running;
};

static void *data_listing_main(void *arg)
{
    struct data_listing *d = arg;
    d->rc = list_names_sizes(d->st, "data", &d->l, &d->sizes, &d->e);
    return NULL;
}

/* Waits for the listing; 0 with d->l when it is there, -1 with e when it failed. */
static int data_listing_join(struct data_listing *d, struct err *e)
{
    if (!d->running)
        return 0;
    pthread_join(d->thread, NULL);
    d->running = false;
    if (d->rc != 0) {
        *e = d->e;
        return -1;
    }
    return 0;
}

struct repo *repo_open_hint(const char *path, const char *password, const char *slot_hint,
                            struct err *e)
{
    struct repo *r = repo_alloc(path);
    struct data_listing dl = {.e = ERR_INIT};
    bool listed = false;
    r->st = storage_open(path, false, e);
    if (!r->st || cx_init(e) != 0 || check_marker(r, e) != 0)
        goto fail;
    if (!storage_location_is_s3(path)) {
        dl.st = r->st;
        /* without a thread, load_index_and_packs lists data/ itself */
        dl.running = pthread_create(&dl.thread, NULL, data_listing_main, &dl) == 0;
    }
    listed = dl.running;
    /* keys_unlock reads the config too: a key slot counts only if it opens the config. */
    if (keys_unlock(r, password, slot_hint, e) != 0)
        goto fail;
    r->idkey = cx_hmac_key_new(r->mac_key, 32);
    if (bad_blobs_load(r, e) != 0 || data_listing_join(&dl, e) != 0)
        goto fail;
    if (listed) { /* taken over, as the names are */
        buf_free(&r->listed_sizes);
        r->listed_sizes = dl.sizes;
        memset(&dl.sizes, 0, sizeof(dl.sizes));
    }
    if (load_index_and_packs(r, false, listed ? &dl.l : NULL, e) != 0)
        goto fail;
    return r;
fail:
    if (dl.running) {
        struct err ignore = ERR_INIT;
        (void)data_listing_join(&dl, &ignore);
    }
    namelist_free(&dl.l);
    buf_free(&dl.sizes);
    repo_close(r);
    return NULL;
}

/* True when an index file or an adopted pack this handle loaded is gone; *grown (may be NULL):
 * index/ also holds an index file the handle has not read (written since by a backup). */
static int index_stale(struct repo *r, bool *stale, bool *grown, struct err *e)
{
    struct namelist l;
    if (repo_list_names(r, "index", &l, e) != 0)
        return -1;
    *stale = false;
    for (size_t i = 0; i < r->nindex_files && !*stale; i++)
        *stale = !l.n || !bsearch(&r->index_files[i], l.v, l.n, sizeof(char *), cmp_str);
    /* every name loaded is listed (names are unique): more listed are new ones */
    if (grown)
        *grown = !*stale && l.n > r->nindex_files;
    namelist_free(&l);
    for (size_t i = 0; i < r->nadopted && !*stale; i++) {
        char name[80];
        pack_object_name(r->packs[r->adopted[i]].id, name, sizeof(name));
        int ex = storage_exists(r->st, name, e);
        if (ex < 0)
            return -1;
        *stale = ex == 0;
    }
    return 0;
}

/* Reads the index (index files, packs no index lists) again from scratch. full: list data/
 * whatever the open cache says. */
static int index_reload(struct repo *r, bool full, struct err *e)
{
    for (size_t i = 0; i < r->nblocks; i++)
        free(r->blocks[i]);
    free(r->blocks);
    free(r->emap.slots);
    free(r->pmap.slots);
    secmem_free(r->packs); /* wipes the pack keys */
    for (size_t i = 0; i < r->nindex_files; i++)
        free(r->index_files[i]);
    free(r->index_files);
    free(r->adopted);
    buf_free(&r->adopted_payload);
    r->blocks = NULL;
    r->nblocks = r->nentries = 0;
    free(r->dups);
    r->dups = NULL;
    r->ndups = r->dups_cap = 0;
    free(r->gone);
    r->gone = NULL;
    r->ngone = r->gone_cap = 0;
    memset(&r->emap, 0, sizeof(r->emap));
    memset(&r->pmap, 0, sizeof(r->pmap));
    r->packs = NULL;
    r->npacks = r->packs_cap = 0;
    r->index_files = NULL;
    r->nindex_files = 0;
    r->adopted = NULL;
    r->nadopted = 0;
    json_array_clear(r->damage);
    json_array_clear(r->truncated);
    r->flagged.len = 0;
    bad_entries_clear(r);
    opencache_free(&r->oc);
    r->oc_valid = false;
    r->index_cached = false;
    /* the records of damage too: written meanwhile by another process, they decide which
     * copy the index takes (and prune deletes the others) */
    if (bad_blobs_load(r, e) != 0)
        return -1;
    return load_index_and_packs(r, full, NULL, e);
}

int repo_index_reload_full(struct repo *r, struct err *e)
{
    return index_reload(r, true, e);
}

int repo_index_list_packs(struct repo *r, struct err *e)
{
    return r->index_cached ? index_reload(r, true, e) : 0;
}

int repo_index_refresh(struct repo *r, const struct namelist *stale_locks, struct err *e)
{
    /* A stale lock the open cache has not accounted for may have left packs that no index
     * lists (a backup killed before its index): list data/ once to adopt them, then record
     * the lock as accounted for. */
    bool unseen = false;
    for (size_t i = 0; opencache_enabled(r) && stale_locks && i < stale_locks->n && !unseen; i++)
        unseen = !r->oc_valid || !opencache_has_name(&r->oc.stale, stale_locks->v[i]);
    if (unseen) {
        if (index_reload(r, true, e) != 0)
            return -1;
        if (r->oc_valid) {
            struct opencache c;
            oc_from_handle(r, &c, r->oc.listed_ns, stale_locks);
            oc_adopt_state(r, &c, NULL);
        }
        return 0;
    }
    bool stale;
    if (index_stale(r, &stale, NULL, e) != 0)
        return -1;
    /* What the handle read before it held its lock is outdated (a prune ran meanwhile, or an
     * adopted pack is gone): read it again, so that nothing is deduplicated against blobs
     * that are gone. With a full listing: the open cache may still list the adopted pack
     * that is gone. */
    return stale ? index_reload(r, true, e) : 0;
}

int repo_index_outdated(struct repo *r, bool *outdated, struct err *e)
{
    bool stale, grown;
    if (index_stale(r, &stale, &grown, e) != 0)
        return -1;
    *outdated = stale || grown;
    return 0;
}

int repo_refresh(struct repo *r, struct err *e)
{
    return index_reload(r, false, e);
}

struct repo *repo_init(const char *path, const char *password, const struct repo_init_opts *o,
                       struct err *e)
{
    struct repo_init_opts dflt = {0};
    if (!o)
        o = &dflt;
    uint64_t kdf_ops = o->kdf_ops ? o->kdf_ops : REPO_KDF_OPS_DEFAULT;
    uint64_t kdf_mem = o->kdf_mem ? o->kdf_mem : REPO_KDF_MEM_DEFAULT;
    /* a key that the env file it is kept in would change, refused before anything exists */
    if (repo_key_text_check(password, "BACKUP_ENCRYPTION_KEY", e) != 0)
        return NULL;
    /* The readers' bounds, checked before anything is created: a slot beyond them would
     * never open. */
    if (repo_kdf_check(kdf_ops, kdf_mem, e) != 0 || cx_init(e) != 0)
        return NULL;
    int ex = repo_exists(path, e);
    if (ex < 0)
        return NULL;
    if (ex == 1) {
        err_set(e, ERR_FAILURE, "use it as it is, or choose another BACKUP_DIR / --repo",
                "a repository already exists at %s", path);
        return NULL;
    }
    struct repo *r = repo_alloc(path);
    bool ours = false; /* everything in the directory is this init's own (undone on failure) */
    r->st = storage_open(path, true, e);
    if (!r->st)
        goto fail;
    /* Two processes creating the same repository at once would make two master keys: the
     * first to create init.lock does it; the other is told (ERR_LOCKED) and can wait for
     * the marker. */
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    json_t *lockdoc = json_pack("{s:I, s:s}", "pid", (json_int_t)getpid(), "host", host);
    char *body = lockdoc ? json_dumps(lockdoc, JSON_COMPACT) : NULL;
    json_decref(lockdoc);
    if (!body)
        body = xstrdup("{}");
    int claim = storage_put_new(r->st, INIT_LOCK, body, strlen(body), e);
    free(body);
    if (claim != 0) {
        if (claim == 1) {
            /* the pid it names, gone on this host: a killed init, not one that runs (said as
             * "another process is creating" every time, with the process long gone) */
            struct buf b = {0};
            struct err ge = ERR_INIT;
            long pid = 0;
            /* judged only on the host that wrote it (a repository on a share, a container's
             * volume: a pid of another host or pid namespace says nothing here) */
            if (!storage_location_is_s3(path) &&
                storage_get(r->st, INIT_LOCK, 1024, &b, &ge) == 0) {
                json_t *lk = json_loadb((const char *)b.data, b.len, 0, NULL);
                const char *lh = json_string_value(json_object_get(lk, "host"));
                json_int_t lp = json_integer_value(json_object_get(lk, "pid"));
                if (lh && *host && strcmp(lh, host) == 0 && lp > 0 && lp <= INT32_MAX)
                    pid = (long)lp;
                json_decref(lk);
            }
            buf_free(&b);
            if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH)
                err_set(e, ERR_LOCKED,
                        "no caris-backup is creating it: remove " INIT_LOCK " and what that init "
                        "made there (keys/, config, caris-repository), then run init again",
                        "an init of %s was interrupted (its process %ld is gone) and left "
                        "%s/" INIT_LOCK,
                        path, pid, path);
            else
                err_set(e, ERR_LOCKED,
                        "wait for it to finish; if no caris-backup is running, an init was "
                        "interrupted: remove " INIT_LOCK " and the half-made repository",
                        "another process is creating the repository %s", path);
        }
        repo_close(r);
        return NULL;
    }
    r->init_claimed = true;
    struct namelist l;
    if (repo_list_names(r, "keys", &l, e) != 0)
        goto fail;
    size_t nkeys = l.n;
    namelist_free(&l);
    if (nkeys) {
        err_set(e, ERR_FAILURE, "remove the leftovers of an interrupted init, or use another path",
                "%s holds key slots but no repository marker", path);
        goto fail;
    }
    ours = true;
    cx_random(r->enc_key, 32);
    cx_random(r->mac_key, 32);
    if (o->chunker_seed)
        memcpy(r->chunker_seed, o->chunker_seed, 32);
    else
        cx_random(r->chunker_seed, 32);
    r->cp_files = CHUNKER_DEFAULT_FILES;
    r->cp_dumps = CHUNKER_DEFAULT_DUMPS;
    if (o->chunker_from) {
        /* The mac key is used for chunk ids only (the encryption key, from which every pack
         * and container key is derived, stays this repository's own). */
        memcpy(r->mac_key, o->chunker_from->mac_key, 32);
        memcpy(r->chunker_seed, o->chunker_from->chunker_seed, 32);
        r->cp_files = o->chunker_from->cp_files;
        r->cp_dumps = o->chunker_from->cp_dumps;
    }
    r->idkey = cx_hmac_key_new(r->mac_key, 32);
    r->compression = o->compression_level ? o->compression_level : DEFAULT_COMPRESSION;
    char slot[17];
    if (keys_write_slot(r, password, o->label ? o->label : "initial key", kdf_ops, kdf_mem, slot,
                        e) != 0)
        goto fail;
    snprintf(r->key_slot, sizeof(r->key_slot), "%s", slot);
    uint8_t rid[16];
    char rid_hex[33], seed_hex[65], now[40];
    cx_random(rid, sizeof(rid));
    cx_hex(rid, sizeof(rid), rid_hex);
    cx_hex(r->chunker_seed, 32, seed_hex);
    time_format_iso(time_now_ns(), now, sizeof(now));
    snprintf(r->id, sizeof(r->id), "%s", rid_hex);
    r->state_needed = true;
    json_t *cfg = json_pack("{s:i, s:s, s:s, s:s, s:{s:o, s:o}, s:i, s:I, s:b}", "version",
                            REPO_FORMAT_VERSION, "id", rid_hex, "created", now, "chunker_seed",
                            seed_hex, "chunker", "files", params_json(&r->cp_files), "dumps",
                            params_json(&r->cp_dumps), "compression", r->compression, "pack_size",
                            (json_int_t)REPO_PACK_TARGET, "state_record", 1);
    char *text = json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(cfg);
    struct buf sealed = {0};
    int rc = container_seal(r, 'C', text, strlen(text), &sealed, e);
    cx_wipe(text, strlen(text));
    free(text);
    if (rc == 0)
        rc = storage_put(r->st, "config", sealed.data, sealed.len, e);
    buf_free(&sealed);
    /* The marker goes last: a repository without it does not exist. */
    if (rc != 0 || state_record_init(r, e) != 0 ||
        storage_put(r->st, MARKER_NAME, MARKER_TEXT, strlen(MARKER_TEXT), e) != 0)
        goto fail;
    struct err unlock_err = ERR_INIT;
    storage_remove(r->st, INIT_LOCK, &unlock_err);
    r->init_claimed = false;
    return r;
fail:
    if (r->init_claimed) {
        struct err ignore = ERR_INIT;
        if (ours) {
            /* Undo what this init wrote (a full disk, an I/O error): it found no key slot and
             * holds init.lock, so the marker, config, state objects and slot here are its
             * own. The marker first. Left in place, a config without a marker made every
             * command, init included, report the directory as a damaged repository. */
            static const char *const dirs[] = {"state", "keys"};
            storage_remove(r->st, MARKER_NAME, &ignore);
            storage_remove(r->st, "config", &ignore);
            for (size_t d = 0; d < sizeof(dirs) / sizeof(dirs[0]); d++) {
                struct namelist made;
                if (list_names_in(r->st, dirs[d], &made, &ignore) == 0) {
                    for (size_t i = 0; i < made.n; i++)
                        storage_remove(r->st, made.v[i], &ignore);
                    namelist_free(&made);
                }
            }
        }
        /* leave the lock only when the half-made repository could not be undone */
        ignore = (struct err)ERR_INIT;
        if (storage_exists(r->st, "config", &ignore) == 0)
            storage_remove(r->st, INIT_LOCK, &ignore);
    }
    repo_close(r);
    return NULL;
}

const char *repo_path(const struct repo *r)
{
    return r->path;
}

struct storage *repo_storage(struct repo *r)
{
    return r->st;
}

const struct chunker_params *repo_chunker_params(const struct repo *r, bool dumps)
{
    return dumps ? &r->cp_dumps : &r->cp_files;
}

const uint8_t *repo_chunker_seed(const struct repo *r)
{
    return r->chunker_seed;
}

int repo_compression_level(const struct repo *r)
{
    return r->compression;
}

void repo_set_compression_level(struct repo *r, int level)
{
    r->compression = level;
}

void repo_chunk_id(const struct repo *r, const void *data, size_t len, uint8_t id[32])
{
    cx_hmac_key_mac(r->idkey, data, len, id);
}

bool repo_same_chunking(const struct repo *a, const struct repo *b)
{
    static const char probe[] = "caris-backup chunk id probe";
    uint8_t ia[32], ib[32];
    repo_chunk_id(a, probe, sizeof(probe) - 1, ia);
    repo_chunk_id(b, probe, sizeof(probe) - 1, ib);
    return memcmp(ia, ib, 32) == 0 && memcmp(a->chunker_seed, b->chunker_seed, 32) == 0 &&
           memcmp(&a->cp_files, &b->cp_files, sizeof(a->cp_files)) == 0 &&
           memcmp(&a->cp_dumps, &b->cp_dumps, sizeof(a->cp_dumps)) == 0;
}

json_t *repo_damage(const struct repo *r)
{
    return r->damage;
}

json_t *repo_warnings(const struct repo *r)
{
    return r->warnings;
}

const char *repo_id(const struct repo *r)
{
    return r->id;
}

/* ---- key slots ----------------------------------------------------------------------- */

/* ---- writing ------------------------------------------------------------------------- */

/* A pack being filled goes to storage piece by piece (storage_obj: a temporary file in a
 * local repository), through a stage of about PACK_STAGE bytes, so that a slot holds at
 * most the stage and one blob, not the pack (16 MiB per slot, which was most of a full
 * backup's peak RSS). Its SHA-256, which names it, is computed on the way. */
#define PACK_STAGE (1u << 20)

struct wslot {
    struct storage_obj *obj; /* the open pack, NULL when none is */
    struct buf stage;        /* its last bytes, not appended to obj yet */
    uint64_t len;            /* the open pack's length: obj's bytes and the stage's */
    struct cx_sha256 *sha;   /* of obj's bytes */
    struct buf trailer;
    uint8_t key[32];
    uint32_t *ents;
    size_t nents, cap_ents;
    ZSTD_CCtx *cctx; /* see writer_cctx */
    void *cctx_ws;   /* its workspace, when it is a static one */
    struct buf cbuf;
    uint64_t compress_ns, encrypt_ns, write_ns; /* this slot's stage times (one thread's) */
};

struct repo_writer {
    struct repo *r;
    int nslots;
    struct wslot *slots;
    uint32_t *packs; /* written by this session */
    size_t npacks;
    struct buf index_records; /* index-file records of those packs (see index_parse_into) */
    struct repo_writer_stats stats;
    struct storage_batch *batch; /* the packs being uploaded (caris/storage.h) */
};

/* A closed pack on its way to storage. Its blobs' entries stay PACK_PENDING (known to this
 * session's dedup, not readable) until the upload is confirmed: only then do they point to
 * the pack and does the pack join the index this writer will write (pack_sent). In secret
 * memory: it holds the pack's key. */
struct sent_pack {
    struct repo_writer *w;
    uint8_t pid[32];
    uint8_t key[32];
    uint32_t *ents;
    size_t nents;
    struct buf trailer;
    uint64_t len;
};

/* A slot's compression context. zstd sizes a context's tables by the size of what it
 * compresses, and a dynamic context frees and allocates its workspace again when sizes
 * alternate (a small file, then 1 MiB chunks): with buffers this large mapped afresh each
 * time, that was a third of the compression time of a full file backup (page faults and the
 * unmappings' TLB flushes). A static context keeps one workspace, sized for any input at
 * this level (1.3 MB at level 3). High levels need tens of MB: those keep a dynamic one. */
#define CCTX_STATIC_MAX (8u << 20)
static void writer_cctx(struct wslot *s, int level)
{
    size_t ws = ZSTD_estimateCCtxSize(level > 0 ? level : 1);
    if (ws <= CCTX_STATIC_MAX) {
        s->cctx_ws = xmalloc(ws);
        s->cctx = ZSTD_initStaticCCtx(s->cctx_ws, ws);
        if (s->cctx)
            return;
        free(s->cctx_ws);
        s->cctx_ws = NULL;
    }
    s->cctx = ZSTD_createCCtx();
    if (!s->cctx)
        xoom(sizeof(ZSTD_CCtx *));
}

struct repo_writer *repo_writer_new(struct repo *r, int nslots)
{
    struct repo_writer *w = xcalloc(1, sizeof(*w));
    w->r = r;
    w->nslots = (nslots < 1 ? 1 : nslots) + 1; /* + the metadata slot */
    /* Secret memory: each slot holds the key of the pack it is writing. */
    w->slots = secmem_alloc(xsize((size_t)w->nslots, sizeof(*w->slots), 0));
    for (int i = 0; i < w->nslots; i++)
        writer_cctx(&w->slots[i], r->compression);
    w->batch = storage_batch_new(r->st);
    return w;
}

/* The end of a pack's upload (a storage_put_done, on the thread that made it). */
static void pack_sent(void *ctx, bool stored)
{
    struct sent_pack *sp = ctx;
    struct repo_writer *w = sp->w;
    struct repo *r = w->r;
    pthread_mutex_lock(&r->mu);
    if (stored) {
        uint32_t pidx = repo_add_pack_locked(r, sp->pid, -2);
        memcpy(r->packs[pidx].key, sp->key, 32);
        r->packs[pidx].key_ready = true;
        for (size_t i = 0; i < sp->nents; i++)
            repo_entry(r, sp->ents[i])->pack = pidx;
        w->packs = xrealloc(w->packs, xsize(w->npacks + 1, sizeof(uint32_t), 0));
        w->packs[w->npacks++] = pidx;
        /* An index record is the pack id, the blob count, and the trailer's own entries. */
        buf_append(&w->index_records, sp->pid, 32);
        buf_append_u32le(&w->index_records, (uint32_t)(sp->trailer.len / PACK_TRAILER_ENTRY_LEN));
        buf_append(&w->index_records, sp->trailer.data, sp->trailer.len);
        w->stats.packs++;
        w->stats.bytes_stored += sp->len;
    } else {
        /* As repo_writer_free does for blobs never packed: a later writer stores them. */
        for (size_t i = 0; i < sp->nents; i++) {
            struct ientry *en = repo_entry(r, sp->ents[i]);
            if (en->pack == PACK_PENDING)
                en->pack = PACK_ABANDONED;
        }
    }
    pthread_mutex_unlock(&r->mu);
    free(sp->ents);
    buf_free(&sp->trailer);
    secmem_free(sp);
}

/* Seals the slot's open pack (version 2, docs/REPOSITORY-FORMAT.md "Packs") and queues its
 * upload (stored for good once the writer's batch is waited for, in repo_writer_flush).
 * The trailer is padded so that the whole pack has a size from pad_size, and its length is
 * sealed in the footer: the pack's size tells neither how many blobs it holds nor, to within
 * the padding, how large they are. */
/* Size of a version 2 pack before padding: blobs (with the header) up to off, and a trailer
 * of elen bytes of entries. */
static uint64_t pack_bare_size(size_t off, size_t elen)
{
    return (uint64_t)off + 4 + elen + CX_TAG_LEN + PACK_FOOTER_V2_LEN;
}

/* Moves the stage's bytes into the open pack's object. */
static int slot_stage_flush(struct wslot *s, struct err *e)
{
    if (!s->stage.len)
        return 0;
    int64_t t0 = time_mono_ns();
    cx_sha256_update(s->sha, s->stage.data, s->stage.len);
    int rc = storage_obj_append(s->obj, s->stage.data, s->stage.len, e);
    s->stage.len = 0;
    s->write_ns += (uint64_t)(time_mono_ns() - t0);
    return rc;
}

/* Reads n bytes at off of the open pack, wherever they are now (object or stage). */
static int slot_read(struct wslot *s, uint64_t off, uint8_t *out, size_t n, struct err *e)
{
    uint64_t staged = s->len - s->stage.len; /* where the stage starts */
    if (off < staged) {
        size_t n1 = off + n <= staged ? n : (size_t)(staged - off);
        if (storage_obj_read(s->obj, off, out, n1, e) != 0)
            return -1;
        out += n1;
        off += n1;
        n -= n1;
    }
    if (n)
        memcpy(out, s->stage.data + (off - staged), n);
    return 0;
}

/* Drops the open pack (never stored) and wipes its key. */
static void slot_discard_pack(struct wslot *s)
{
    storage_obj_discard(s->obj);
    s->obj = NULL;
    if (s->sha)
        cx_sha256_free(s->sha);
    s->sha = NULL;
    s->stage.len = 0;
    s->len = 0;
    s->trailer.len = 0;
    cx_wipe(s->key, sizeof(s->key));
}

static int slot_close_pack(struct repo_writer *w, struct wslot *s, struct err *e)
{
    if (!s->obj)
        return 0;
    uint8_t nonce[CX_NONCE_LEN];
    size_t toff = (size_t)s->len, elen = s->trailer.len;
    uint64_t bare = pack_bare_size(toff, elen);
    uint64_t total = pad_size(bare, PACK_MIN_SIZE);
    size_t tplain = 4 + elen + (size_t)(total - bare), tlen = tplain + CX_TAG_LEN;
    struct buf tp = {0};
    buf_reserve(&tp, tplain);
    memset(tp.data, 0, tplain);
    store_u32le(tp.data, (uint32_t)(elen / PACK_TRAILER_ENTRY_LEN));
    if (elen)
        memcpy(tp.data + 4, s->trailer.data, elen);
    buf_reserve(&s->stage, tlen + PACK_FOOTER_V2_LEN);
    /* The trailer's nonce is its offset: every blob lies before it. The footer's is all-ones,
     * which no offset reaches. */
    pack_nonce(toff, nonce);
    int rc = cx_aead_seal(s->key, nonce, TRAILER_AAD_V2, sizeof(TRAILER_AAD_V2) - 1, tp.data,
                          tplain, s->stage.data + s->stage.len, e);
    buf_free(&tp);
    if (rc != 0)
        return -1;
    s->stage.len += tlen;
    uint8_t lenbuf[4];
    store_u32le(lenbuf, (uint32_t)tlen);
    memset(nonce, 0xff, sizeof(nonce));
    if (cx_aead_seal(s->key, nonce, FOOTER_AAD_V2, sizeof(FOOTER_AAD_V2) - 1, lenbuf, 4,
                     s->stage.data + s->stage.len, e) != 0)
        return -1;
    s->stage.len += 4 + CX_TAG_LEN;
    buf_append(&s->stage, PACK_END_MAGIC, 4);
    s->len = toff + tlen + PACK_FOOTER_V2_LEN;
    if (slot_stage_flush(s, e) != 0)
        return -1;
    struct sent_pack *sp = secmem_alloc(sizeof(*sp));
    sp->w = w;
    cx_sha256_final(s->sha, sp->pid);
    cx_sha256_free(s->sha);
    s->sha = NULL;
    memcpy(sp->key, s->key, 32);
    sp->ents = s->ents;
    sp->nents = s->nents;
    buf_append(&sp->trailer, s->trailer.data, elen);
    sp->len = s->len;
    s->ents = NULL;
    s->nents = s->cap_ents = 0;
    s->trailer.len = 0;
    s->len = 0;
    cx_wipe(s->key, sizeof(s->key));
    char name[80];
    pack_object_name(sp->pid, name, sizeof(name));
    /* The pack goes with the upload (s->obj is left empty); pack_sent runs when it is
     * stored, or not. */
    struct storage_obj *obj = s->obj;
    s->obj = NULL;
    if (storage_batch_put_obj(w->batch, name, obj, pack_sent, sp, e) != 0)
        return err_wrap(e, "cannot store pack");
    return 0;
}

static void slot_claim(struct wslot *s, uint32_t ei)
{
    if (s->nents == s->cap_ents) {
        s->cap_ents = s->cap_ents ? s->cap_ents * 2 : 256;
        s->ents = xrealloc(s->ents, xsize(s->cap_ents, sizeof(uint32_t), 0));
    }
    s->ents[s->nents++] = ei;
}

/* REPO_PACK_TARGET; tests that need many packs from few bytes (a repository of more than
 * 1,000 packs, to page S3 listings) lower it with CARIS_TEST_PACK_TARGET (bytes, test-only:
 * the packs are as valid, only smaller). */
uint64_t repo_pack_target(void)
{
    const char *v = getenv("CARIS_TEST_PACK_TARGET");
    char *end;
    unsigned long long n = v && *v ? strtoull(v, &end, 10) : 0;
    return n > 0 && *end == '\0' && n < REPO_PACK_TARGET ? (uint64_t)n : REPO_PACK_TARGET;
}

/* Encrypts a blob's payload (as stored: compressed or raw, ulf says which) into the slot's
 * open pack, opening one when none is, and closes the pack once full. Entry ei is the slot's
 * (slot_claim). */
static int slot_append(struct repo_writer *w, struct wslot *s, uint32_t ei, const uint8_t id[32],
                       const void *payload, size_t plen, uint32_t ulf, struct err *e)
{
    struct repo *r = w->r;
    /* A pack that this blob would take past REPO_PACK_TARGET closes first. The target is a
     * step of pad_size, so a full pack is padded to exactly the target, instead of closing
     * just past it and being padded to the next step (512 KiB more: ~3% of a full pack, all
     * of it padding). */
    if (s->trailer.len &&
        pack_bare_size(s->len + plen + CX_TAG_LEN, s->trailer.len + PACK_TRAILER_ENTRY_LEN) >
            repo_pack_target()) {
        /* The caller claimed ei for this slot just before (slot_claim): it belongs to the
         * next pack, not to the one closing. */
        s->nents--;
        int64_t t1 = time_mono_ns();
        int rc = slot_close_pack(w, s, e);
        s->write_ns += (uint64_t)(time_mono_ns() - t1);
        slot_claim(s, ei); /* even on failure: repo_writer_free abandons it */
        if (rc != 0)
            return -1;
    }
    if (!s->obj) {
        uint8_t salt[32];
        cx_random(salt, sizeof(salt));
        if (pack_derive_key(r, salt, s->key, e) != 0)
            return -1;
        if (!(s->obj = storage_obj_new(r->st, "data", e)))
            return err_wrap(e, "cannot store pack");
        s->sha = cx_sha256_new();
        s->stage.len = 0;
        buf_append(&s->stage, PACK_MAGIC, 8);
        buf_append(&s->stage, salt, 32);
        s->len = s->stage.len;
    }
    /* The stage goes to the object before it would grow past PACK_STAGE. A blob larger than
     * that is sealed in the slot's compression buffer (in place when it was compressed
     * there) and goes to the object alone, so the stage never grows past PACK_STAGE and the
     * trailer. */
    size_t sealed = plen + CX_TAG_LEN;
    bool alone = sealed > PACK_STAGE;
    if (s->stage.len && (alone || s->stage.len + sealed > PACK_STAGE) &&
        slot_stage_flush(s, e) != 0)
        return -1;
    uint8_t nonce[CX_NONCE_LEN];
    size_t off = (size_t)s->len;
    /* A blob's nonce is its offset in the pack, under the pack's own key (HKDF of a random
     * 256-bit salt): two blobs of one pack never share an offset, so never a nonce. The
     * trailer's nonce is its own offset, past every blob; the footer's is all-ones. */
    pack_nonce(off, nonce);
    uint8_t *out;
    if (alone) {
        bool in_place = payload == s->cbuf.data;
        s->cbuf.len = 0;
        buf_reserve(&s->cbuf, sealed); /* keeps the bytes: a realloc at most */
        if (in_place)
            payload = s->cbuf.data;
        out = s->cbuf.data;
    } else {
        buf_reserve(&s->stage, sealed);
        out = s->stage.data + s->stage.len;
    }
    int64_t t0 = time_mono_ns();
    if (cx_aead_seal(s->key, nonce, id, 32, payload, plen, out, e) != 0)
        return -1;
    s->encrypt_ns += (uint64_t)(time_mono_ns() - t0);
    if (alone) {
        int64_t t1 = time_mono_ns();
        cx_sha256_update(s->sha, out, sealed);
        int rc = storage_obj_append(s->obj, out, sealed, e);
        s->write_ns += (uint64_t)(time_mono_ns() - t1);
        if (rc != 0)
            return -1;
    } else {
        s->stage.len += sealed;
    }
    s->len += sealed;
    uint32_t clen = (uint32_t)(plen + CX_TAG_LEN);
    buf_append(&s->trailer, id, 32);
    buf_append_u32le(&s->trailer, (uint32_t)off);
    buf_append_u32le(&s->trailer, clen);
    buf_append_u32le(&s->trailer, ulf);
    pthread_mutex_lock(&r->mu);
    struct ientry *en = repo_entry(r, ei);
    en->off = (uint32_t)off;
    en->clen = clen;
    en->ulen_flags = ulf;
    pthread_mutex_unlock(&r->mu);
    /* The trailer counts towards the target: a pack of many tiny blobs stays bounded too
     * (PACK_MAX_SIZE). */
    if (s->len + s->trailer.len >= repo_pack_target()) {
        int64_t t1 = time_mono_ns();
        if (slot_close_pack(w, s, e) != 0)
            return -1;
        s->write_ns += (uint64_t)(time_mono_ns() - t1);
    }
    return 0;
}

int repo_writer_add(struct repo_writer *w, int slot, const uint8_t id[32], const void *data,
                    size_t len, struct err *e)
{
    struct repo *r = w->r;
    struct wslot *s = &w->slots[slot];
    if (len > REPO_MAX_BLOB)
        return err_set(e, ERR_FAILURE, NULL, "blob too large (%zu bytes)", len);
    pthread_mutex_lock(&r->mu);
    long have = repo_lookup_locked(r, id);
    uint32_t ei;
    if (have >= 0 && repo_entry(r, (size_t)have)->pack != PACK_ABANDONED &&
        !bad_entry_is_locked(r, (uint32_t)have)) {
        w->stats.blobs_known++;
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    if (have >= 0) { /* abandoned, or known damaged where the entry places it: stored again */
        ei = (uint32_t)have;
        bad_entry_set_locked(r, ei, false);
        repo_entry(r, ei)->pack = PACK_PENDING;
    } else {
        bool added;
        ei = index_add_locked(r, id, PACK_PENDING, 0, 0, 0, &added);
        if (ei == INDEX_FULL) {
            pthread_mutex_unlock(&r->mu);
            return err_set(e, ERR_FAILURE, INDEX_FULL_HINT,
                           "cannot store more blobs in %s: its index is full", r->path);
        }
    }
    /* From here the entry is this slot's: recorded now so that an error path or a writer
     * freed without flush marks it abandoned (repo_writer_free). */
    slot_claim(s, ei);
    pthread_mutex_unlock(&r->mu);

    /* Compress; keep it raw when that does not make it smaller. */
    const void *payload = data;
    size_t plen = len;
    uint32_t ulf = (uint32_t)len;
    if (r->compression > 0) {
        int64_t t0 = time_mono_ns();
        size_t bound = ZSTD_compressBound(len);
        s->cbuf.len = 0;
        buf_reserve(&s->cbuf, bound);
        size_t n = ZSTD_compressCCtx(s->cctx, s->cbuf.data, bound, data, len, r->compression);
        if (ZSTD_isError(n) && ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation &&
            s->cctx_ws) { /* the level changed since the writer was made: a dynamic one */
            free(s->cctx_ws);
            s->cctx_ws = NULL;
            s->cctx = ZSTD_createCCtx();
            if (!s->cctx)
                xoom(sizeof(ZSTD_CCtx *));
            n = ZSTD_compressCCtx(s->cctx, s->cbuf.data, bound, data, len, r->compression);
        }
        if (!ZSTD_isError(n) && n < len) {
            payload = s->cbuf.data;
            plen = n;
            ulf |= ULEN_COMPRESSED;
        }
        s->compress_ns += (uint64_t)(time_mono_ns() - t0);
    }
    pthread_mutex_lock(&r->mu);
    w->stats.blobs_new++;
    w->stats.bytes_new += len;
    pthread_mutex_unlock(&r->mu);
    if (slot_append(w, s, ei, id, payload, plen, ulf, e) != 0)
        return -1;
    return 1;
}

/* Each data slot ends a backup with a partly filled pack. Closed as they are, they would be
 * small packs holding a few blobs each, written at the end of every backup (an incremental
 * backup writes little else), whose sizes would tell the sizes of single chunks. Instead the
 * blobs of every other data slot move into the fullest one: decrypted from the buffer of the
 * pack they were in (never stored; its key is wiped) and encrypted again at a new offset of
 * the target pack, under the target's key; offsets only grow, so no (key, nonce) pair is used
 * twice. The metadata slot keeps its own pack. Called by flush, when no add is running. */
static int writer_merge_open_packs(struct repo_writer *w, struct err *e)
{
    struct repo *r = w->r;
    int ndata = w->nslots - 1;
    struct wslot *t = NULL;
    for (int i = 0; i < ndata; i++)
        if (w->slots[i].obj && (!t || w->slots[i].len > t->len))
            t = &w->slots[i];
    if (!t)
        return 0;
    struct buf plain = {0}, ct = {0};
    int rc = 0;
    for (int i = 0; i < ndata && rc == 0; i++) {
        struct wslot *s = &w->slots[i];
        if (s == t || !s->obj)
            continue;
        for (size_t k = 0; k < s->trailer.len && rc == 0; k += PACK_TRAILER_ENTRY_LEN) {
            const uint8_t *te = s->trailer.data + k;
            uint32_t off = load_u32le(te + 32), clen = load_u32le(te + 36),
                     ulf = load_u32le(te + 40);
            uint8_t nonce[CX_NONCE_LEN];
            pack_nonce(off, nonce);
            plain.len = 0;
            buf_reserve(&plain, clen);
            ct.len = 0;
            buf_reserve(&ct, clen);
            if (slot_read(s, off, ct.data, clen, e) != 0) {
                rc = -1;
                break;
            }
            if (cx_aead_open(s->key, nonce, te, 32, ct.data, clen, plain.data, e) != 0) {
                rc = err_set(e, ERR_FAILURE, NULL,
                             "internal error: a blob of an open pack does "
                             "not decrypt");
                break;
            }
            pthread_mutex_lock(&r->mu);
            long ei = repo_lookup_locked(r, te);
            if (ei >= 0)
                slot_claim(t, (uint32_t)ei);
            pthread_mutex_unlock(&r->mu);
            if (ei < 0) {
                rc = err_set(e, ERR_FAILURE, NULL, "internal error: a pending blob is not indexed");
                break;
            }
            rc = slot_append(w, t, (uint32_t)ei, te, plain.data, clen - CX_TAG_LEN, ulf, e);
        }
        if (rc == 0) {
            slot_discard_pack(s);
            s->nents = 0;
        }
    }
    if (plain.data)
        cx_wipe(plain.data, plain.cap);
    buf_free(&plain);
    buf_free(&ct);
    return rc;
}

static int writer_flush(struct repo_writer *w, struct err *e);

/* The flush counts as writing (stats.write_ns). */
int repo_writer_flush(struct repo_writer *w, struct err *e)
{
    int64_t t0 = time_mono_ns();
    int rc = writer_flush(w, e);
    w->stats.write_ns += (uint64_t)(time_mono_ns() - t0);
    if (rc != 0)
        repo_lock_explain(w->r, e);
    return rc;
}

static int writer_flush(struct repo_writer *w, struct err *e)
{
    struct repo *r = w->r;
    if (writer_merge_open_packs(w, e) != 0)
        return -1;
    for (int i = 0; i < w->nslots; i++)
        if (slot_close_pack(w, &w->slots[i], e) != 0)
            return -1;
    /* The index names only packs that are stored: every upload must have succeeded. */
    if (storage_batch_wait(w->batch, e) != 0)
        return err_wrap(e, "cannot store pack");
    pthread_mutex_lock(&r->mu);
    size_t total = w->npacks + r->nadopted;
    if (total == 0) {
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    struct buf records = {0};
    buf_append(&records, w->index_records.data, w->index_records.len);
    buf_append(&records, r->adopted_payload.data, r->adopted_payload.len);
    pthread_mutex_unlock(&r->mu);
    int rc = -1;
    char name[80];
    uint64_t written = 0;
    if (index_file_write(r, records.data, records.len, (uint32_t)total, name, &written, e) != 0)
        goto out;
    pthread_mutex_lock(&r->mu);
    int source = (int)r->nindex_files;
    r->index_files = xrealloc(r->index_files, xsize(r->nindex_files + 1, sizeof(char *), 0));
    r->index_files[r->nindex_files++] = xstrdup(name);
    for (size_t i = 0; i < w->npacks; i++)
        r->packs[w->packs[i]].source = source;
    for (size_t i = 0; i < r->nadopted; i++)
        r->packs[r->adopted[i]].source = source;
    r->nadopted = 0;
    r->adopted_payload.len = 0;
    w->npacks = 0;
    w->index_records.len = 0;
    w->stats.bytes_stored += written;
    pthread_mutex_unlock(&r->mu);
    /* The packs this index file names were stored by this writer (and the adopted ones were
     * checked under the lock): the open cache covers it, so the next open needs no HEAD. */
    if (r->oc_valid) {
        struct opencache c;
        oc_from_handle(r, &c, r->oc.listed_ns, &r->oc.stale);
        oc_adopt_state(r, &c, NULL);
    }
    rc = 0;
out:
    buf_free(&records);
    return rc;
}

int index_file_write(struct repo *r, const void *records, size_t len, uint32_t npacks,
                     char name_out[80], uint64_t *bytes, struct err *e)
{
    struct buf payload = {0}, packed = {0};
    buf_append(&payload, "CIDX", 4);
    buf_append_u32le(&payload, 2);
    buf_append_u32le(&payload, npacks);
    buf_append(&payload, records, len);
    int rc = -1;
    if (zstd_pack(payload.data, payload.len, 3, &packed) != 0) {
        err_set(e, ERR_FAILURE, NULL, "cannot compress index");
        goto out;
    }
    /* An index file's size would tell how many blobs the backup added: padded like a pack. */
    size_t bare = packed.len + CONTAINER_OVERHEAD;
    size_t pad = (size_t)pad_size(bare, INDEX_MIN_SIZE) - bare;
    buf_reserve(&packed, pad);
    memset(packed.data + packed.len, 0, pad);
    packed.len += pad;
    char hex[65];
    if (container_put(r, 'I', "index", packed.data, packed.len, hex, bytes, e) != 0)
        goto out;
    snprintf(name_out, 80, "index/%s", hex);
    rc = 0;
out:
    buf_free(&payload);
    buf_free(&packed);
    return rc;
}

int repo_writer_meta_slot(const struct repo_writer *w)
{
    return w->nslots - 1;
}

void repo_writer_get_stats(struct repo_writer *w, struct repo_writer_stats *out)
{
    pthread_mutex_lock(&w->r->mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->r->mu);
    /* the slots' own counters: read once no add runs (after a flush, or between backups) */
    for (int i = 0; i < w->nslots; i++) {
        out->compress_ns += w->slots[i].compress_ns;
        out->encrypt_ns += w->slots[i].encrypt_ns;
        out->write_ns += w->slots[i].write_ns;
    }
}

void repo_writer_free(struct repo_writer *w)
{
    if (!w)
        return;
    storage_batch_free(w->batch); /* every pack_sent has run after this */
    /* Packs stored but named by no index file (the backup failed before its flush): the open
     * cache adopts them, so that the next backup on this host reuses them without listing
     * data/. (Packs of a killed process are found through its stale lock: repo_lock.) */
    struct repo *r = w->r;
    if (w->npacks && r->oc_valid) {
        buf_append(&r->oc.adopted, w->index_records.data, w->index_records.len);
        r->oc.nadopted += (uint32_t)w->npacks;
        struct err ignore = ERR_INIT;
        opencache_save(r, &r->oc, &ignore);
    }
    pthread_mutex_lock(&w->r->mu);
    for (int i = 0; i < w->nslots; i++)
        for (size_t k = 0; k < w->slots[i].nents; k++) {
            struct ientry *en = repo_entry(w->r, w->slots[i].ents[k]);
            if (en->pack == PACK_PENDING)
                en->pack = PACK_ABANDONED;
        }
    pthread_mutex_unlock(&w->r->mu);
    for (int i = 0; i < w->nslots; i++) {
        struct wslot *s = &w->slots[i];
        slot_discard_pack(s);
        buf_free(&s->stage);
        buf_free(&s->trailer);
        buf_free(&s->cbuf);
        free(s->ents);
        if (s->cctx_ws)
            free(s->cctx_ws); /* a static context is its workspace */
        else
            ZSTD_freeCCtx(s->cctx);
        cx_wipe(s->key, sizeof(s->key));
    }
    secmem_free(w->slots);
    free(w->packs);
    buf_free(&w->index_records);
    free(w);
}

/* ---- reading ------------------------------------------------------------------------- */

static bool lookup_entry(struct repo *r, const uint8_t id[32], struct ientry *out)
{
    pthread_mutex_lock(&r->mu);
    long i = repo_lookup_locked(r, id);
    bool ok = i >= 0 && PACK_IS_REAL(repo_entry(r, (size_t)i)->pack);
    if (ok)
        *out = *repo_entry(r, (size_t)i);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

bool repo_has_blob(struct repo *r, const uint8_t id[32])
{
    pthread_mutex_lock(&r->mu);
    long i = repo_lookup_locked(r, id);
    bool ok = i >= 0 && PACK_IS_REAL(repo_entry(r, (size_t)i)->pack) &&
              !bad_entry_is_locked(r, (uint32_t)i);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

int64_t repo_blob_size(struct repo *r, const uint8_t id[32])
{
    struct ientry en;
    return lookup_entry(r, id, &en) ? (int64_t)(en.ulen_flags & ULEN_MASK) : -1;
}

const char *repo_blob_pack(struct repo *r, const uint8_t id[32], char out[65])
{
    struct ientry en;
    if (!lookup_entry(r, id, &en))
        return NULL;
    pthread_mutex_lock(&r->mu);
    cx_hex(r->packs[en.pack].id, 32, out);
    pthread_mutex_unlock(&r->mu);
    return out;
}

bool repo_blob_where(struct repo *r, const uint8_t id[32], uint32_t *pack, uint32_t *off)
{
    struct ientry en;
    if (!lookup_entry(r, id, &en))
        return false;
    *pack = en.pack;
    *off = en.off;
    return true;
}

bool repo_lookup_entry(struct repo *r, const uint8_t id[32], struct ientry *out)
{
    return lookup_entry(r, id, out);
}

int repo_pack_key(struct repo *r, uint32_t pidx, const uint8_t *have_head, uint8_t key[32],
                  char *name, size_t n, struct err *e)
{
    pthread_mutex_lock(&r->mu);
    struct packinfo p = r->packs[pidx];
    pthread_mutex_unlock(&r->mu);
    pack_object_name(p.id, name, n);
    if (p.key_ready) {
        memcpy(key, p.key, 32);
        return 0;
    }
    uint8_t head[PACK_HEADER_LEN];
    if (have_head)
        memcpy(head, have_head, sizeof(head));
    else if (storage_read_at(r->st, name, 0, head, sizeof(head), e) != 0)
        return -1;
    if (pack_version(head) == 0) {
        /* read, and not a pack's: none of its blobs opens, the next backup must not
         * deduplicate against any of them */
        bad_pack_note(r, pidx);
        return err_set(e, ERR_DAMAGE,
                       "the backups that need this pack cannot be restored from it; run "
                       "`caris-backup check --read-data` (the next backup stores its data "
                       "again where the files still exist)",
                       "pack %s: bad magic", name);
    }
    if (pack_derive_key(r, head + 8, key, e) != 0)
        return -1;
    pthread_mutex_lock(&r->mu);
    memcpy(r->packs[pidx].key, key, 32);
    r->packs[pidx].key_ready = true;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* The one rule for opening a blob: authenticate and decrypt ct (clen bytes) into pt (pt may
 * be ct: in place), then, when compressed, decompress into scratch. On success *plain and
 * *plen are the plaintext (in pt, or in scratch), and, with check_id, HMAC(plaintext) == id:
 * plaintext reaches the caller only when it is the blob the id names. name is for messages.
 * (blob_open below notes every copy that fails.) */
static int blob_open_(struct repo *r, const uint8_t id[32], const struct ientry *en,
                      const uint8_t key[32], const uint8_t *ct, uint8_t *pt, const char *name,
                      bool check_id, struct buf *scratch, const uint8_t **plain, size_t *plen,
                      struct err *e)
{
    char hex[65];
    uint8_t nonce[CX_NONCE_LEN];
    pack_nonce(en->off, nonce);
    size_t n = en->clen - CX_TAG_LEN;
    if (cx_aead_open(key, nonce, id, 32, ct, en->clen, pt, e) != 0) {
        cx_hex(id, 32, hex);
        return err_set(e, ERR_DAMAGE,
                       "checksum mismatch: the backup is corrupted, DO NOT restore from it; use a "
                       "different backup and run `caris-backup check --read-data`",
                       "blob %.16s in pack %s: authentication failed (the data was altered)", hex,
                       name);
    }
    uint32_t ulen = en->ulen_flags & ULEN_MASK;
    const uint8_t *p = pt;
    if (en->ulen_flags & ULEN_COMPRESSED) {
        scratch->len = 0;
        /* A scratch buffer reused for blob after blob (a read plan's) holds the previous one's
         * plaintext: a growth would free that block unwiped. */
        if (scratch->data && scratch->cap < ulen)
            cx_wipe(scratch->data, scratch->cap);
        buf_reserve(scratch, ulen);
        size_t got = zstd_decompress(scratch->data, ulen, pt, n);
        cx_wipe(pt, n);
        if (ZSTD_isError(got) || got != ulen) {
            cx_wipe(scratch->data, ulen); /* what was decompressed before the error */
            cx_hex(id, 32, hex);
            return err_set(e, ERR_DAMAGE, NULL, "blob %.16s in pack %s: bad compressed data", hex,
                           name);
        }
        scratch->len = got;
        p = scratch->data;
        n = got;
    } else if (n != ulen) {
        cx_wipe(pt, n);
        cx_hex(id, 32, hex);
        return err_set(e, ERR_DAMAGE, NULL, "blob %.16s in pack %s: length mismatch", hex, name);
    }
    if (check_id) {
        uint8_t check[32];
        repo_chunk_id(r, p, n, check);
        if (cx_memcmp(check, id, 32) != 0) {
            cx_wipe((uint8_t *)p, n);
            cx_hex(id, 32, hex);
            return err_set(e, ERR_DAMAGE, NULL,
                           "blob %.16s in pack %s: content does not match its id", hex, name);
        }
    }
    *plain = p;
    *plen = n;
    return 0;
}

/* blob_open_, and every copy that fails to open is noted (bad_blob_note): its whole
 * ciphertext was read, so the copy is damaged where it lies, not the storage unreachable. */
static int blob_open(struct repo *r, const uint8_t id[32], const struct ientry *en,
                     const uint8_t key[32], const uint8_t *ct, uint8_t *pt, const char *name,
                     bool check_id, struct buf *scratch, const uint8_t **plain, size_t *plen,
                     struct err *e)
{
    int rc = blob_open_(r, id, en, key, ct, pt, name, check_id, scratch, plain, plen, e);
    if (rc != 0 && PACK_IS_REAL(en->pack))
        bad_blob_note(r, en->pack, id);
    return rc;
}

/* Authenticates, decompresses and re-hashes one blob whose ciphertext (clen bytes) is in
 * ct (left as it is): out receives its plaintext only when HMAC(plaintext) == id. */
int blob_decode(struct repo *r, const uint8_t id[32], const struct ientry *ep,
                const uint8_t key[32], const uint8_t *ctp, const char *name, bool check_id,
                struct buf *out, struct err *e)
{
    out->len = 0;
    const uint8_t *p = NULL;
    /* set by blob_open on success; gcc -O3 cannot see that */
    size_t n = 0;
    if (ep->ulen_flags & ULEN_COMPRESSED) { /* decrypted into a temporary, then into out */
        struct buf tmp = {0};
        buf_reserve(&tmp, ep->clen);
        int rc = blob_open(r, id, ep, key, ctp, tmp.data, name, check_id, out, &p, &n, e);
        buf_free(&tmp);
        if (rc != 0)
            out->len = 0;
        return rc;
    }
    buf_reserve(out, ep->clen);
    if (blob_open(r, id, ep, key, ctp, out->data, name, check_id, NULL, &p, &n, e) != 0)
        return -1;
    out->len = n;
    return 0;
}

int blob_decode_inplace(struct repo *r, const uint8_t id[32], const struct ientry *ep,
                        const uint8_t key[32], uint8_t *ct, const char *name, bool check_id,
                        struct buf *scratch, const uint8_t **plain, size_t *plen, struct err *e)
{
    return blob_open(r, id, ep, key, ct, ct, name, check_id, scratch, plain, plen, e);
}

int repo_blob_load(struct repo *r, const uint8_t id[32], struct buf *out, struct err *e)
{
    return repo_blob_load_flags(r, id, out, 0, e);
}

int repo_blob_load_flags(struct repo *r, const uint8_t id[32], struct buf *out, unsigned flags,
                         struct err *e)
{
    char hex[65];
    struct ientry en;
    if (!lookup_entry(r, id, &en)) {
        cx_hex(id, 32, hex);
        return err_set(e, ERR_DAMAGE,
                       "an index file or pack is missing: run `caris-backup check` to see what "
                       "is damaged",
                       "blob %.16s is not in the repository index", hex);
    }
    char name[80];
    uint8_t key[32];
    out->len = 0;
    struct buf ct = {0};
    int rc = repo_pack_key(r, en.pack, NULL, key, name, sizeof(name), e);
    if (rc == 0) {
        buf_reserve(&ct, en.clen);
        rc = storage_read_at(r->st, name, en.off, ct.data, en.clen, e);
    }
    if (rc != 0) {
        buf_free(&ct);
        cx_hex(id, 32, hex);
        if (e->code == ERR_NOT_FOUND) /* the index lists a pack that is gone */
            return err_set(e, ERR_DAMAGE,
                           "the repository lost a file: run `caris-backup check` to see which "
                           "backups are affected",
                           "blob %.16s: pack %s is missing", hex, name);
        return -1;
    }
    /* Opened in place: an uncompressed blob's plaintext is ct's buffer, handed over as out
     * (no copy, no second buffer); a compressed one is decompressed into out. */
    const uint8_t *p;
    size_t n;
    rc = blob_open(r, id, &en, key, ct.data, ct.data, name, !(flags & REPO_LOAD_NO_ID_CHECK), out,
                   &p, &n, e);
    cx_wipe(key, sizeof(key));
    if (rc == 0 && p == ct.data) {
        buf_free(out);
        *out = ct;
        out->len = n;
        return 0;
    }
    if (rc != 0)
        out->len = 0;
    buf_free(&ct);
    return rc;
}

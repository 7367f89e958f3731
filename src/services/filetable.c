/* The file table cache (see filetable.h).
 *
 * File layout, every integer in the machine's byte order:
 *   header   FT_HEADER_LEN bytes: magic "CARISFT1", u32 version (2), u32 sizeof(struct
 *            ftable_rec), u32 nrec, u32 nslots, u64 nids, u64 strs_len, u64 text_len,
 *            the SHA-256 of the manifest entries text it holds (32 bytes), 32 zero bytes,
 *            u32 0x01020304 (byte order)
 *   records  nrec x struct ftable_rec
 *   slots    nslots x u32 (open addressing on FNV-1a of the key: record index + 1, 0 = empty)
 *   ids      nids x 32 bytes (chunk ids)
 *   strs     keys and owner names
 *   text     the manifest's entries text the records point into
 *   mac      HMAC-SHA-256 (repo_local_key "file table") of the SHA-256 of everything before
 *            it (hashed as it is written, so the table is never held twice in memory)
 *
 * Version 1 named the snapshot it was made for; version 2 names the entries text instead, so a
 * backup that stores the same entries as its parent keeps the table as it is (no rewrite). A
 * version 1 table fails the header check and is rebuilt once.
 */
#include "filetable.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "caris/crypto.h"
#include "caris/repo.h"

#define FT_MAGIC "CARISFT1"
#define FT_VERSION 2u
#define FT_BOM 0x01020304u
/* magic 8, version 4, recsize 4, nrec 4, nslots 4, nids 8, strs 8, text 8, sha 32, zero 32,
 * bom 4 */
#define FT_HEADER_LEN 120
#define FT_NONAME UINT32_MAX

struct ftable {
    const uint8_t *map;
    size_t size;
    const struct ftable_rec *recs;
    const uint32_t *slots;
    const uint8_t (*ids)[32];
    const char *strs, *text;
    uint32_t nrec, nslots;
    uint64_t nids, strs_len, text_len;
    uint8_t text_sha[32]; /* of the entries text, from the header */
    size_t released;      /* bytes of the map before this have left memory (ftable_text_used) */
};

#define FT_RELEASE_STEP (1u << 20) /* ftable_text_used works in steps of this many bytes */

static void table_mac(const uint8_t key[32], const uint8_t digest[32], uint8_t mac[32])
{
    cx_hmac_sha256(key, 32, digest, 32, mac);
}

static uint64_t key_hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)k[i]) * 1099511628211ull;
    return h;
}

int ftable_key(const struct repo *r, uint8_t key[32], struct err *e)
{
    return repo_local_key(r, "file table", key, e);
}

char *ftable_path(const char *cache_dir, const struct repo *r, const char *roots_json)
{
    uint8_t h[32];
    char hex[65];
    cx_sha256(roots_json, strlen(roots_json), h);
    cx_hex(h, 16, hex);
    return xasprintf("%s/%s/files-%s.tbl", cache_dir, repo_id(r), hex);
}

/* ---- reading --------------------------------------------------------------------------- */

/* off + len within [0, limit], without overflow. */
static bool in_range(uint64_t off, uint64_t len, uint64_t limit)
{
    return off <= limit && len <= limit - off;
}

static bool rec_ok(const struct ftable *t, const struct ftable_rec *r)
{
    if (!in_range(r->text_off, r->text_len, t->text_len) ||
        !in_range(r->key_off, r->key_len, t->strs_len) || !in_range(r->ids_off, r->nids, t->nids))
        return false;
    if (r->user_len != FT_NONAME && !in_range(r->user_off, r->user_len, t->strs_len))
        return false;
    if (r->group_len != FT_NONAME && !in_range(r->group_off, r->group_len, t->strs_len))
        return false;
    return true;
}

/* Checks the header and that every section and record lies inside the file. */
static bool layout_ok(struct ftable *t, const uint8_t entries_sha[32])
{
    const uint8_t *p = t->map;
    uint32_t version, recsize, bom;
    uint64_t off;
    if (t->size < FT_HEADER_LEN + 32 || memcmp(p, FT_MAGIC, 8) != 0)
        return false;
    memcpy(&version, p + 8, 4);
    memcpy(&recsize, p + 12, 4);
    memcpy(&t->nrec, p + 16, 4);
    memcpy(&t->nslots, p + 20, 4);
    memcpy(&t->nids, p + 24, 8);
    memcpy(&t->strs_len, p + 32, 8);
    memcpy(&t->text_len, p + 40, 8);
    memcpy(&bom, p + 112, 4);
    if (version != FT_VERSION || recsize != sizeof(struct ftable_rec) || bom != FT_BOM)
        return false;
    memcpy(t->text_sha, p + 48, 32);
    if (memcmp(t->text_sha, entries_sha, 32) != 0)
        return false;
    /* the slots are a power of two, more than the records (so a probe always ends) */
    if (t->nslots == 0 || (t->nslots & (t->nslots - 1)) != 0 || t->nslots <= t->nrec)
        return false;
    uint64_t limit = t->size - 32;
    off = FT_HEADER_LEN;
    if ((uint64_t)t->nrec > limit / sizeof(struct ftable_rec))
        return false;
    t->recs = (const struct ftable_rec *)(p + off); /* 120 is a multiple of 8 */
    off += (uint64_t)t->nrec * sizeof(struct ftable_rec);
    if (!in_range(off, (uint64_t)t->nslots * 4, limit))
        return false;
    t->slots = (const uint32_t *)(p + off);
    off += (uint64_t)t->nslots * 4;
    if (t->nids > limit / 32 || !in_range(off, t->nids * 32, limit))
        return false;
    t->ids = (const uint8_t(*)[32])(p + off);
    off += t->nids * 32;
    if (!in_range(off, t->strs_len, limit))
        return false;
    t->strs = (const char *)(p + off);
    off += t->strs_len;
    if (off + t->text_len != limit || !in_range(off, t->text_len, limit))
        return false;
    t->text = (const char *)(p + off);
    for (uint32_t i = 0; i < t->nslots; i++)
        if (t->slots[i] > t->nrec)
            return false;
    for (uint32_t i = 0; i < t->nrec; i++)
        if (!rec_ok(t, &t->recs[i]))
            return false;
    return true;
}

/* Whether the header (at p, the file size bytes long) says the table is exactly size bytes:
 * checked before the MAC reads the whole file (a sparse terabyte in the table's place was
 * hashed whole). */
static bool header_size_ok(const uint8_t *p, uint64_t size)
{
    uint32_t nrec, nslots;
    uint64_t nids, strs_len, text_len;
    if (size < FT_HEADER_LEN + 32 || memcmp(p, FT_MAGIC, 8) != 0)
        return false;
    memcpy(&nrec, p + 16, 4);
    memcpy(&nslots, p + 20, 4);
    memcpy(&nids, p + 24, 8);
    memcpy(&strs_len, p + 32, 8);
    memcpy(&text_len, p + 40, 8);
    uint64_t left = size - FT_HEADER_LEN - 32, need;
    need = (uint64_t)nrec * sizeof(struct ftable_rec);
    if (need > left)
        return false;
    left -= need;
    need = (uint64_t)nslots * 4;
    if (need > left)
        return false;
    left -= need;
    if (nids > left / 32)
        return false;
    left -= nids * 32;
    if (strs_len > left)
        return false;
    left -= strs_len;
    return text_len == left;
}

struct ftable *ftable_open(const char *path, const uint8_t key[32], const uint8_t entries_sha[32],
                           const char **why)
{
    *why = NULL;
    /* O_NONBLOCK: a FIFO in the table's place must not hang the backup (it is refused below,
     * not being a regular file) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        *why = errno == ENOENT ? "none yet" : "cannot be opened";
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < FT_HEADER_LEN + 32 ||
        (uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        *why = "not a table";
        return NULL;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        *why = "cannot be mapped";
        return NULL;
    }
    if (!header_size_ok(map, (uint64_t)st.st_size)) {
        munmap(map, (size_t)st.st_size);
        *why = "not a table (its header does not match its size)";
        return NULL;
    }
    struct ftable *t = xcalloc(1, sizeof(*t));
    t->map = map;
    t->size = (size_t)st.st_size;
    uint8_t digest[32], mac[32];
    cx_sha256(t->map, t->size - 32, digest);
    table_mac(key, digest, mac);
    if (cx_memcmp(mac, t->map + t->size - 32, 32) != 0) {
        *why = "fails its authentication (damaged or not made with this repository's key)";
        ftable_close(t);
        return NULL;
    }
    if (!layout_ok(t, entries_sha)) {
        *why = "made for another backup, or of another layout";
        ftable_close(t);
        return NULL;
    }
    /* Checking the MAC read all of the table into the process's memory (peak RSS), but a
     * backup then reads only parts of it: the records of the files it meets, and the entries
     * text only if it rebuilds it. The pages go (a read-only private mapping: each comes back
     * from the page cache, or the file, when it is read again; the kernel may drop them under
     * memory pressure as well. A table is only ever replaced by a rename, never written in
     * place, so what comes back is what the MAC covered, unless the kernel failed to write the
     * table to its disk: it is written without fsync, being a cache, and a page of it whose
     * writeback failed is read back from the disk. The next backup's MAC check catches that). */
    (void)madvise(map, t->size, MADV_DONTNEED);
    return t;
}

void ftable_text_used(struct ftable *t, size_t off)
{
    if (off > t->text_len)
        off = (size_t)t->text_len;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t start = (size_t)(t->text - (const char *)t->map); /* the text's offset in the map */
    size_t end = start + off;
    end -= end % page;
    if (end < t->released + FT_RELEASE_STEP)
        return;
    if (start < t->released)
        start = t->released;
    start = (start + page - 1) / page * page;
    if (start < end)
        (void)madvise((void *)(t->map + start), end - start, MADV_DONTNEED);
    t->released = end;
}

void ftable_close(struct ftable *t)
{
    if (!t)
        return;
    munmap((void *)t->map, t->size);
    free(t);
}

size_t ftable_count(const struct ftable *t)
{
    return t->nrec;
}

size_t ftable_text_len(const struct ftable *t)
{
    return (size_t)t->text_len;
}

const char *ftable_entries_text(const struct ftable *t)
{
    return t->text;
}

const struct ftable_rec *ftable_find(const struct ftable *t, const char *key, size_t kl)
{
    uint32_t mask = t->nslots - 1;
    for (uint64_t h = key_hash(key, kl) & mask, n = 0; n < t->nslots; h = (h + 1) & mask, n++) {
        uint32_t v = t->slots[h];
        if (!v)
            return NULL;
        const struct ftable_rec *r = &t->recs[v - 1];
        if (r->key_len == kl && memcmp(t->strs + r->key_off, key, kl) == 0)
            return r;
    }
    return NULL;
}

static bool name_is(const struct ftable *t, uint32_t off, uint32_t len, const char *name)
{
    if (len == FT_NONAME || !name)
        return len == FT_NONAME && !name;
    return strlen(name) == len && memcmp(t->strs + off, name, len) == 0;
}

bool ftable_matches(const struct ftable *t, const struct ftable_rec *r, const struct stat *st,
                    const char *user, const char *group)
{
    return S_ISREG(st->st_mode) && st->st_nlink == 1 && r->size == (int64_t)st->st_size &&
           r->mtime_s == (int64_t)st->st_mtim.tv_sec &&
           r->mtime_ns == (uint32_t)st->st_mtim.tv_nsec &&
           r->ctime_s == (int64_t)st->st_ctim.tv_sec &&
           r->ctime_ns == (uint32_t)st->st_ctim.tv_nsec && r->ino == (uint64_t)st->st_ino &&
           r->mode == (uint32_t)(st->st_mode & 07777) && r->uid == (uint32_t)st->st_uid &&
           r->gid == (uint32_t)st->st_gid && name_is(t, r->user_off, r->user_len, user) &&
           name_is(t, r->group_off, r->group_len, group);
}

const char *ftable_text(const struct ftable *t, const struct ftable_rec *r)
{
    return t->text + r->text_off;
}

const uint8_t (*ftable_ids(const struct ftable *t, const struct ftable_rec *r))[32]
{
    return t->ids + r->ids_off;
}

/* ---- writing --------------------------------------------------------------------------- */

struct ftable_builder {
    struct ftable_rec *recs;
    size_t nrec, cap;
    struct buf ids, strs;
    /* While set: every record added so far is base's record of the same index, with the same
     * key, chunk ids and names at the same offsets, so none of it is copied; strs_len and
     * nids are the lengths the sections would have. The first record that differs copies
     * base's records and sections so far into the builder, which goes on as without a base.
     * A backup of an unchanged tree so never copies the table it already has (on a 2 GB tree
     * of 42,279 files: about 7 MB of records, names and ids, built and then compared). */
    const struct ftable *base;
    uint64_t strs_len, nids;
};

struct ftable_builder *ftable_builder_new(void)
{
    return xcalloc(1, sizeof(struct ftable_builder));
}

void ftable_builder_base(struct ftable_builder *b, const struct ftable *t)
{
    if (b->nrec == 0 && !b->base)
        b->base = t;
}

static uint64_t strs_len(const struct ftable_builder *b)
{
    return b->base ? b->strs_len : b->strs.len;
}

/* Copies what the base holds so far into b, which then no longer has one. */
static void base_copy(struct ftable_builder *b)
{
    const struct ftable *t = b->base;
    b->base = NULL;
    if (!b->nrec)
        return;
    b->cap = b->nrec < 1024 ? 1024 : b->nrec * 2;
    b->recs = xrealloc(b->recs, xsize(b->cap, sizeof(*b->recs), 0));
    memcpy(b->recs, t->recs, b->nrec * sizeof(*b->recs));
    buf_append(&b->strs, t->strs, (size_t)b->strs_len);
    if (b->nids)
        buf_append(&b->ids, t->ids, xsize((size_t)b->nids, 32, 0));
}

/* Where a name goes in the strings when they are at bytes long now: *off and *len, and the
 * bytes it takes (none for no name, or one past what a table holds: it never matches a name,
 * so such a file is read again). */
static size_t name_at(uint64_t at, const char *name, uint32_t *off, uint32_t *len)
{
    size_t n = name ? strlen(name) : 0;
    if (!name || n >= FT_NONAME || at > UINT32_MAX - n) {
        *off = 0;
        *len = FT_NONAME;
        return 0;
    }
    *off = (uint32_t)at;
    *len = (uint32_t)n;
    return n;
}

/* True when record r (key, ids and names as given) is the base's record of the same index. */
static bool base_has(const struct ftable_builder *b, const struct ftable_rec *r, const char *key,
                     const uint8_t (*ids)[32], const char *user, const char *group)
{
    const struct ftable *t = b->base;
    if (b->nrec >= t->nrec || memcmp(&t->recs[b->nrec], r, sizeof(*r)) != 0)
        return false;
    /* the same offsets and lengths as a record layout_ok checked: inside the sections */
    return memcmp(t->strs + r->key_off, key, r->key_len) == 0 &&
           (!r->nids || memcmp(t->ids + r->ids_off, ids, (size_t)r->nids * 32) == 0) &&
           (r->user_len == FT_NONAME || memcmp(t->strs + r->user_off, user, r->user_len) == 0) &&
           (r->group_len == FT_NONAME || memcmp(t->strs + r->group_off, group, r->group_len) == 0);
}

void ftable_builder_add(struct ftable_builder *b, const char *key, size_t kl, const struct stat *st,
                        const char *user, const char *group, uint64_t text_off, size_t text_len,
                        const uint8_t (*ids)[32], size_t nids)
{
    if (b->nrec >= UINT32_MAX / 4 || text_len > UINT32_MAX || kl > UINT32_MAX || nids > UINT32_MAX)
        return; /* past what a table holds: left out, so read again next time */
    /* the record; its key, then its names, go at the end of the strings */
    struct ftable_rec r;
    memset(&r, 0, sizeof(r));
    r.text_off = text_off;
    r.text_len = (uint32_t)text_len;
    r.key_off = strs_len(b);
    r.key_len = (uint32_t)kl;
    r.ids_off = b->base ? b->nids : b->ids.len / 32;
    r.nids = (uint32_t)nids;
    r.mode = (uint32_t)(st->st_mode & 07777);
    r.size = (int64_t)st->st_size;
    r.mtime_s = (int64_t)st->st_mtim.tv_sec;
    r.mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
    r.ctime_s = (int64_t)st->st_ctim.tv_sec;
    r.ctime_ns = (uint32_t)st->st_ctim.tv_nsec;
    r.ino = (uint64_t)st->st_ino;
    r.uid = (uint32_t)st->st_uid;
    r.gid = (uint32_t)st->st_gid;
    uint64_t end = r.key_off + kl;
    size_t ul = name_at(end, user, &r.user_off, &r.user_len);
    end += ul;
    size_t gl = name_at(end, group, &r.group_off, &r.group_len);
    end += gl;
    if (b->base) {
        if (base_has(b, &r, key, ids, user, group)) { /* kept only in the base */
            b->nrec++;
            b->strs_len = end;
            b->nids += nids;
            return;
        }
        base_copy(b); /* the first difference: from here on, as without a base */
    }
    if (b->nrec == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 1024;
        b->recs = xrealloc(b->recs, xsize(b->cap, sizeof(*b->recs), 0));
    }
    b->recs[b->nrec++] = r;
    buf_append(&b->strs, key, kl);
    buf_append(&b->strs, user, ul);
    buf_append(&b->strs, group, gl);
    if (nids)
        buf_append(&b->ids, ids, xsize(nids, 32, 0));
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n) {
        ssize_t w = write(fd, q, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The lookup slots for b's records, newly allocated. */
static uint32_t *builder_slots(const struct ftable_builder *b, uint32_t *nslots_out)
{
    uint32_t nslots = 16;
    while (nslots <= b->nrec * 2)
        nslots *= 2;
    uint32_t *slots = xcalloc(nslots, sizeof(uint32_t));
    for (size_t i = 0; i < b->nrec; i++) {
        const struct ftable_rec *r = &b->recs[i];
        uint32_t mask = nslots - 1;
        uint64_t h = key_hash((const char *)b->strs.data + r->key_off, r->key_len) & mask;
        while (slots[h])
            h = (h + 1) & mask;
        slots[h] = (uint32_t)i + 1;
    }
    *nslots_out = nslots;
    return slots;
}

bool ftable_builder_same(const struct ftable_builder *b, const struct ftable *t,
                         const uint8_t entries_sha[32])
{
    /* Every section the table would hold, compared with the one it holds (the text by its
     * SHA-256, which t's MAC covers): equal means the write would produce these bytes. */
    if (b->base)
        /* every record is t's, in t's order (so the lookup slots made from their keys are
         * t's): all of them, and the text the same */
        return b->base == t && memcmp(t->text_sha, entries_sha, 32) == 0 && b->nrec == t->nrec &&
               b->strs_len == t->strs_len && b->nids == t->nids;
    if (memcmp(t->text_sha, entries_sha, 32) != 0 || t->nrec != b->nrec ||
        t->nids != b->ids.len / 32 || t->strs_len != b->strs.len ||
        (b->nrec && memcmp(t->recs, b->recs, b->nrec * sizeof(*b->recs)) != 0) ||
        (b->ids.len && memcmp(t->ids, b->ids.data, b->ids.len) != 0) ||
        (b->strs.len && memcmp(t->strs, b->strs.data, b->strs.len) != 0))
        return false;
    uint32_t nslots;
    uint32_t *slots = builder_slots(b, &nslots);
    bool same = nslots == t->nslots && memcmp(slots, t->slots, (size_t)nslots * 4) == 0;
    free(slots);
    return same;
}

/* Temporary files a process killed while writing left in the cache directory dir (a table's
 * "<table>.tmp.<hex>", fs_write_atomic's "<file>.tmp-<pid>-<hex>"): removed once an hour old
 * (a live writer renames its own within seconds). Each can be as large as a table (hundreds of
 * MB for a large tree), and nothing else removes them. Best effort. */
#define FT_TMP_MAX_AGE_S 3600
static void sweep_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strstr(de->d_name, ".tbl.tmp.") && !strstr(de->d_name, ".tmp-"))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            st.st_mtime < now - FT_TMP_MAX_AGE_S)
            (void)unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
}

/* text_len bytes of the text from text_fd at offset 0, through a buffer of TEXT_PIECE bytes:
 * hashed into h and written to fd. */
#define TEXT_PIECE (1u << 20)
static bool copy_text(int fd, struct cx_sha256 *h, int text_fd, uint64_t text_len)
{
    uint8_t *p = xmalloc(text_len < TEXT_PIECE ? (text_len ? text_len : 1) : TEXT_PIECE);
    bool ok = true;
    for (uint64_t off = 0; ok && off < text_len;) {
        size_t n = text_len - off < TEXT_PIECE ? (size_t)(text_len - off) : TEXT_PIECE;
        ok = fs_pread_full(text_fd, p, n, off) == 0;
        if (ok) {
            cx_sha256_update(h, p, n);
            ok = write_all(fd, p, n) == 0;
        }
        off += n;
    }
    free(p);
    return ok;
}

static int builder_write(struct ftable_builder *b, const char *path, const uint8_t key[32],
                         const uint8_t entries_sha[32], const char *text, int text_fd,
                         size_t text_len, struct err *e)
{
    if (b->base)
        base_copy(b);
    if (b->strs.len > UINT32_MAX)
        return err_set(e, ERR_FAILURE, NULL, "file table too large");
    uint32_t nslots;
    uint32_t *slots = builder_slots(b, &nslots);
    uint8_t head[FT_HEADER_LEN] = {0};
    uint32_t version = FT_VERSION, recsize = sizeof(struct ftable_rec), nrec = (uint32_t)b->nrec,
             bom = FT_BOM;
    uint64_t nids = b->ids.len / 32, strs_len = b->strs.len, tl = text_len;
    memcpy(head, FT_MAGIC, 8);
    memcpy(head + 8, &version, 4);
    memcpy(head + 12, &recsize, 4);
    memcpy(head + 16, &nrec, 4);
    memcpy(head + 20, &nslots, 4);
    memcpy(head + 24, &nids, 8);
    memcpy(head + 32, &strs_len, 8);
    memcpy(head + 40, &tl, 8);
    memcpy(head + 48, entries_sha, 32);
    memcpy(head + 112, &bom, 4);

    /* The MAC is computed over the sections as they are written. */
    struct {
        const void *p;
        size_t n;
    } parts[] = {{head, sizeof(head)},        {b->recs, b->nrec * sizeof(*b->recs)},
                 {slots, (size_t)nslots * 4}, {b->ids.data, b->ids.len},
                 {b->strs.data, b->strs.len}, {text, text ? text_len : 0}};
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    /* a name of its own: two backups of the same paths may run at once (in one daemon too) */
    uint8_t rnd[8];
    char rhex[17];
    cx_random(rnd, sizeof(rnd));
    cx_hex(rnd, sizeof(rnd), rhex);
    char *tmp = xasprintf("%s.tmp.%s", path, rhex);
    int rc = -1;
    if (slash && fs_mkdir_p(dir, 0700, e) != 0)
        goto out;
    if (slash)
        sweep_tmp(dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        err_sys(e, errno, "check that BACKUP_DIR/metadata/cache is writable", "cannot write %s",
                tmp);
        goto out;
    }
    struct cx_sha256 *h = cx_sha256_new();
    bool ok = true;
    for (size_t i = 0; ok && i < sizeof(parts) / sizeof(parts[0]); i++) {
        if (!parts[i].n)
            continue;
        cx_sha256_update(h, parts[i].p, parts[i].n);
        ok = write_all(fd, parts[i].p, parts[i].n) == 0;
    }
    if (ok && !text)
        ok = copy_text(fd, h, text_fd, text_len);
    uint8_t digest[32], mac[32];
    cx_sha256_final(h, digest);
    cx_sha256_free(h);
    table_mac(key, digest, mac);
    if (!ok || write_all(fd, mac, 32) != 0) {
        err_sys(e, errno, "check the free space under BACKUP_DIR", "cannot write %s", tmp);
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    /* no fsync: a table torn by a crash fails its MAC and is rebuilt from the repository */
    if (rename(tmp, path) != 0) {
        err_sys(e, errno, "check that BACKUP_DIR/metadata/cache is writable", "cannot rename %s",
                tmp);
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    free(slots);
    free(tmp);
    free(dir);
    return rc;
}

int ftable_builder_write(struct ftable_builder *b, const char *path, const uint8_t key[32],
                         const uint8_t entries_sha[32], const char *text, size_t text_len,
                         struct err *e)
{
    return builder_write(b, path, key, entries_sha, text ? text : "", -1, text_len, e);
}

int ftable_builder_write_fd(struct ftable_builder *b, const char *path, const uint8_t key[32],
                            const uint8_t entries_sha[32], int text_fd, size_t text_len,
                            struct err *e)
{
    return builder_write(b, path, key, entries_sha, NULL, text_fd, text_len, e);
}

void ftable_builder_free(struct ftable_builder *b)
{
    if (!b)
        return;
    free(b->recs);
    buf_free(&b->ids);
    buf_free(&b->strs);
    free(b);
}

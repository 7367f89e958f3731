/* Shared between the repo/ modules only. */
#ifndef CARIS_REPO_INTERNAL_H
#define CARIS_REPO_INTERNAL_H

#include <pthread.h>

#include "caris/crypto.h"
#include "caris/repo.h"

#define PACK_MAGIC "CARISPK1"
#define PACK_END_MAGIC "CPKE"
#define PACK_HEADER_LEN (8 + 32)
#define PACK_FOOTER_LEN 8         /* u32 trailer length + "CPKE" */
#define PACK_TRAILER_ENTRY_LEN 44 /* id 32, offset u32, clen u32, ulen_flags u32 */
#define PACK_PENDING UINT32_MAX
/* A pending entry whose writer went away without storing it: the next writer that meets
 * the id stores the blob (and takes the entry over). Readers treat it as absent. */
#define PACK_ABANDONED (UINT32_MAX - 1)
#define PACK_IS_REAL(p) ((p) < PACK_ABANDONED)
#define ULEN_COMPRESSED 0x80000000u /* flag in ulen_flags: stored zstd-compressed */
#define ULEN_MASK 0x7fffffffu

#define CONTAINER_HEADER_LEN 8
#define CONTAINER_OVERHEAD (CONTAINER_HEADER_LEN + 32 + CX_TAG_LEN)

/* One index entry: 48 bytes in RAM (see docs/REPOSITORY-FORMAT.md, "Memory"). */
struct ientry {
    uint8_t id[32];
    uint32_t pack;       /* index into repo.packs, or PACK_PENDING while being written */
    uint32_t off;        /* offset of the ciphertext in the pack */
    uint32_t clen;       /* ciphertext length including the tag */
    uint32_t ulen_flags; /* plaintext length | ULEN_COMPRESSED */
};

#define IBLOCK_SHIFT 12
#define IBLOCK (1u << IBLOCK_SHIFT)

/* Open-addressing table of 32-bit element numbers (+1; 0 = empty), keyed by 32-byte ids
 * whose first 8 bytes are uniformly distributed (HMAC or SHA-256 output). */
struct idmap {
    uint32_t *slots;
    size_t cap; /* power of two */
    size_t n;
};

struct packinfo {
    uint8_t id[32];
    uint8_t key[32];
    bool key_ready;
    int source; /* number of the index file that listed it; -1 adopted from its trailer */
};

struct repo {
    char *path;
    struct storage *st;
    uint8_t enc_key[32];
    uint8_t mac_key[32];
    struct cx_hmac_key *idkey;
    char key_slot[17]; /* the slot that opened the repository */
    uint8_t chunker_seed[32];
    struct chunker_params cp_files, cp_dumps;
    int compression;

    pthread_mutex_t mu; /* guards everything below */
    struct ientry **blocks;
    size_t nblocks, nentries;
    struct idmap emap;
    struct packinfo *packs;
    size_t npacks, packs_cap;
    struct idmap pmap;
    char **index_files; /* object names, numbered as packinfo.source */
    size_t nindex_files;
    uint32_t *adopted; /* packs adopted from trailers, not yet in any index file */
    size_t nadopted;
    struct buf adopted_payload; /* their index-file records, ready to write */
    json_t *damage;
    char *lock_name;
    bool init_claimed; /* repo_init holds init.lock */
};

struct ientry *repo_entry(struct repo *r, size_t i);
/* Returns entry number or -1. Caller holds r->mu (or the repo is single-threaded). */
long repo_lookup_locked(struct repo *r, const uint8_t id[32]);

/* Encrypted container for metadata files (config, index, snapshot). */
int container_seal(const struct repo *r, char type, const void *data, size_t len, struct buf *out,
                   struct err *e);
int container_open(const struct repo *r, char type, const uint8_t *data, size_t len,
                   struct buf *out, struct err *e);

int zstd_pack(const void *in, size_t len, int level, struct buf *out);
int zstd_unpack(const uint8_t *in, size_t len, size_t max, struct buf *out, struct err *e);

/* Parses an index file payload into the repo's tables (source = index file number). */
int index_parse_into(struct repo *r, const uint8_t *p, size_t len, int source, const char *name,
                     struct err *e);
/* Parses a pack trailer (decrypted) and adds its entries for pack number pidx. */
int pack_trailer_parse_into(struct repo *r, uint32_t pidx, const uint8_t *p, size_t len,
                            uint64_t pack_size, const char *name, struct err *e);
/* Reads and decrypts the trailer of the pack named name (object name). */
int pack_read_trailer(struct repo *r, const char *name, struct buf *out, uint64_t *size_out,
                      struct err *e);
int pack_derive_key(const struct repo *r, const uint8_t salt[32], uint8_t key[32], struct err *e);
/* Nonce of the blob at byte offset off of its pack (big-endian, zero-padded). */
void pack_nonce(uint64_t off, uint8_t nonce[CX_NONCE_LEN]);
void pack_object_name(const uint8_t id[32], char *out, size_t n);
int blob_decode(struct repo *r, const uint8_t id[32], const struct ientry *ep,
                const uint8_t key[32], const uint8_t *ct, const char *name, bool check_id,
                struct buf *out, struct err *e);
uint32_t repo_add_pack_locked(struct repo *r, const uint8_t id[32], int source);
long repo_find_pack_locked(struct repo *r, const uint8_t id[32]);

/* A snapshot's summary, entries reference ({"chunks", "sha256", "bytes"}) and, when text
 * is not NULL, its entries' text (read them with entry_iter). */
int snapshot_load_parts(struct repo *r, const char *name, json_t **summary, json_t **ref,
                        struct buf *text, struct err *e);
/* Writes one index file whose payload holds npacks records (pack id, blob count, trailer
 * entries: see index_parse_into); name_out receives its object name ("index/<hex>"). */
int index_file_write(struct repo *r, const void *records, size_t len, uint32_t npacks,
                     char name_out[80], uint64_t *bytes, struct err *e);

#endif

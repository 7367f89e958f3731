/* Shared between the repo/ modules only. */
#ifndef CARIS_REPO_INTERNAL_H
#define CARIS_REPO_INTERNAL_H

#include <pthread.h>

#include "caris/crypto.h"
#include "caris/repo.h"

#define PACK_MAGIC "CARISPK2"    /* version 2: written (docs/REPOSITORY-FORMAT.md, "Packs") */
#define PACK_MAGIC_V1 "CARISPK1" /* version 1: still read */
#define PACK_END_MAGIC "CPKE"
#define PACK_HEADER_LEN (8 + 32)
#define PACK_FOOTER_LEN 8 /* version 1: u32 trailer length in clear + "CPKE" */
/* version 2: the trailer length, sealed (u32 + tag), + "CPKE" */
#define PACK_FOOTER_V2_LEN (4 + CX_TAG_LEN + 4)
#define PACK_TRAILER_ENTRY_LEN 44 /* id 32, offset u32, clen u32, ulen_flags u32 */
/* No pack the writer makes is larger: it closes a pack once blobs and trailer reach
 * REPO_PACK_TARGET, so at most one blob (REPO_MAX_BLOB) more, plus padding; version 1
 * packs did not count the trailer (at most 44 / 17 of 16 MiB more). Readers refuse larger
 * "packs" before reading anything from them. */
#define PACK_MAX_SIZE (128u << 20)
/* Smallest size a version 2 pack is padded to (see pack_padded_size). */
#define PACK_MIN_SIZE (64u << 10)
/* Smallest size an index file is padded to. */
#define INDEX_MIN_SIZE (4u << 10)
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
    bool header_bad;   /* its header was read and is not a pack's (bad_pack_note) */
    bool header_noted; /* and its blobs were noted damaged (repo_bad_blobs_save) */
    int source;        /* number of the index file that listed it; -1 adopted from its trailer */
};

/* The identity of a lock's holder (lock.c). */
struct ident {
    char host[256];
    char boot_id[64];
    char pid_ns[64]; /* readlink /proc/self/ns/pid: "pid:[4026531836]"; "" unknown */
    long long pid;
    long long start; /* /proc/<pid>/stat field 22 (clock ticks after boot); 0 unknown */
};

/* The lock a repository handle holds (lock.c). */
struct lock_holder {
    struct repo *r;
    char *name; /* locks/<hex> */
    char hex[33];
    bool exclusive;
    int depth; /* nested repo_lock calls */
    char *operation;
    char created[40];
    struct ident id;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu; /* guards the fields below */
    pthread_cond_t cv;
    bool stop;
    bool lost;               /* the lock file was gone at a refresh, or it lapsed */
    bool lapsed;             /* not refreshed for lock_lapse_ns: others may have taken it for
                              * stale (and acted on it), so it is not refreshed again */
    int64_t last_refresh_ns; /* CLOCK_BOOTTIME when the last successful write started */
};

/* Names of the objects in a directory of the repository, sorted. */
struct namelist {
    char **v;
    size_t n;
};

/* The open cache (opencache.c; docs/REPOSITORY-FORMAT.md, "Opening without listing data/"). */
struct opencache {
    int64_t listed_ns;      /* last full listing of data/ */
    uint32_t npacks;        /* packs known when written */
    struct namelist index;  /* index files the facts cover (sorted) */
    uint8_t (*missing)[32]; /* packs they name that are missing (sorted) */
    size_t nmissing;
    struct namelist stale; /* stale locks whose packs a full listing saw (sorted) */
    uint32_t nadopted;     /* packs no index lists, as index file records */
    struct buf adopted;
};

struct repo {
    char *path;
    struct storage *st;
    uint8_t enc_key[32];
    uint8_t mac_key[32];
    struct cx_hmac_key *idkey;
    char key_slot[17];      /* the slot that opened the repository */
    size_t key_slots_tried; /* Argon2id derivations the last open made (tests) */
    uint8_t chunker_seed[32];
    struct chunker_params cp_files, cp_dumps;
    int compression;
    bool config_missing;        /* the marker is there, the config is not (repo_read_config) */
    size_t bad_headers_pending; /* packs bad_pack_note named, their blobs not noted yet */

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
    /* [{object, error}]: packs the index places blobs past the end of (truncated), found at
     * open; reported by check, but unlike damage no reason for prune to refuse (it rewrites
     * them) */
    json_t *truncated;
    struct lock_holder *lock; /* the lock this handle holds (lock.c), NULL when none */
    int64_t lock_wait_ms;     /* how long repo_lock waits for conflicting locks */
    repo_lock_wait_fn lock_waiting;
    void *lock_waiting_ctx;
    json_t *warnings; /* [{object, message}]: found while opening or auditing (repo_warnings) */
    repo_warn_fn warn_sink; /* told of each warning added after it was set */
    void *warn_sink_ctx;
    /* While opening: the pack ids listed in data/ (sorted), so that index entries whose pack
     * is gone are treated as absent (see pack_missing_at_open). NULL after open. */
    uint8_t (*listed_packs)[32];
    size_t nlisted_packs;
    /* While opening, when data/ was listed here: each listed pack's id and size (a 32-byte id
     * then a u64 size, sorted by id), so that index entries past a pack's end (a truncated
     * pack) are not deduplicated against (see index_parse_into). Empty after open. */
    struct buf listed_sizes;
    char id[33];       /* repository id, from config */
    bool state_needed; /* config says a state record exists from init on (state.c) */
    char *state_local; /* local copy of the state record, NULL when none (state.c) */
    bool init_claimed; /* repo_init holds init.lock */
    /* The open cache (opencache.c). index_cached: the index was loaded without listing data/
     * (the cache vouched for the packs), so orphan packs were adopted only as far as the
     * cache knew them; check and prune read it again with a full listing. oc: what the cache
     * file says for this handle's index (valid when oc_valid), updated by the writer. While
     * loading: oc_missing (sorted) are the packs a cached load treats as missing, flagged
     * those found missing by this load (what the next cache file records). */
    bool index_cached, oc_valid, oc_loading;
    struct opencache oc;
    uint8_t (*oc_missing)[32];
    size_t noc_missing;
    struct buf flagged; /* 32-byte pack ids */
    /* Damaged blobs (badblobs.c). bad_pairs: pack id || blob id (64 bytes, sorted) of the
     * copies records/bad-blob names; bad_found: those this handle found since its last
     * repo_bad_blobs_save (unsorted); bad_entries: the entry numbers (a set) that place
     * a blob in a pack where it is damaged, usable for reading but not for deduplication. */
    struct buf bad_pairs, bad_found;
    /* Other copies of blobs the index holds, in other packs (loaded from index files or
     * trailers, not recorded damaged): not read, but prune's new index lists those of the
     * packs it keeps, so that a copy found damaged later gives way to them (repo.c). */
    struct ientry *dups;
    size_t ndups, dups_cap;
    /* The blobs of packs missing at open (not loaded, so not in the index): which pack each
     * was listed in, for check to name the backups that need a missing pack on its error. */
    struct gone_blob {
        uint8_t id[32];
        uint32_t pack;
    } * gone;
    size_t ngone, gone_cap;
    struct u32set {
        uint32_t *slots;
        size_t cap, n;
    } bad_entries;
};

/* Damaged blobs (badblobs.c). All _locked functions need r->mu. */
#define BAD_BLOB_RECORD_KIND "bad-blob"
bool bad_entry_is_locked(const struct repo *r, uint32_t ei);
void bad_entry_set_locked(struct repo *r, uint32_t ei, bool bad);
void bad_entries_clear(struct repo *r);
/* Whether records/bad-blob names the blob id in pack number pidx. */
bool bad_pair_known_locked(const struct repo *r, uint32_t pidx, const uint8_t id[32]);
/* Whether records/bad-blob names a blob in pack number pidx. */
bool bad_pack_known_locked(const struct repo *r, uint32_t pidx);
/* Notes that the blob id failed to open from pack number pidx (takes r->mu). */
void bad_blob_note(struct repo *r, uint32_t pidx, const uint8_t id[32]);
/* Notes every blob the index places in pack number pidx, whose header is not a pack's (so none
 * of them opens): once per pack and handle, when the damage found is saved (takes r->mu). */
void bad_pack_note(struct repo *r, uint32_t pidx);
/* bad_blob_note with r->mu held. */
void bad_blob_note_locked(struct repo *r, uint32_t pidx, const uint8_t id[32]);
/* Reads records/bad-blob into r->bad_pairs (before the index is loaded). */
int bad_blobs_load(struct repo *r, struct err *e);

/* Reads the index again when an index file or adopted pack that the handle loaded at open
 * is gone (a prune ran between repo_open and repo_lock), or, with the open cache, when
 * stale_locks (sorted names of stale locks, may be NULL) holds one the cache has not
 * accounted for (its holder may have left packs no index lists: data/ is listed to adopt
 * them). repo_lock calls it once the lock is held; no writer of the handle may be active. */
int repo_index_refresh(struct repo *r, const struct namelist *stale_locks, struct err *e);
/* Releases the lock this handle holds, however deeply nested (repo_close). */
void repo_lock_release(struct repo *r);

int repo_list_names(struct repo *r, const char *dir, struct namelist *l, struct err *e);
void namelist_free(struct namelist *l);

/* Reads and authenticates config (chunker seed and parameters, compression) with r's keys. */
int repo_read_config(struct repo *r, struct err *e);

/* Key slots (keys.c). keys_unlock finds the slot that password opens and whose key
 * authenticates the config, fills r's keys and reads the config. */
int keys_unlock(struct repo *r, const char *password, const char *hint, struct err *e);
int keys_write_slot(struct repo *r, const char *password, const char *label, uint64_t ops,
                    uint64_t mem, char id_out[17], struct err *e);

/* true when opening r uses the cache: an S3 repository with an id, and a cache root set. */
bool opencache_enabled(const struct repo *r);
/* 0 and c filled when the cache file exists, parses and its MAC matches; -1 otherwise (c
 * empty). */
int opencache_load(struct repo *r, struct opencache *c);
int opencache_save(struct repo *r, const struct opencache *c, struct err *e);
/* Removes the cache file (the next open lists data/). */
void opencache_drop(struct repo *r);
void opencache_free(struct opencache *c);
bool opencache_has_name(const struct namelist *l, const char *name);

struct ientry *repo_entry(struct repo *r, size_t i);
/* Returns entry number or -1. Caller holds r->mu (or the repo is single-threaded). */
long repo_lookup_locked(struct repo *r, const uint8_t id[32]);

/* Encrypted container for metadata files (config, index, snapshot). */
int container_seal(const struct repo *r, char type, const void *data, size_t len, struct buf *out,
                   struct err *e);
/* Seals data as a container of type and stores it as dir/<SHA-256 of the sealed bytes>:
 * hex_out (65 bytes, may be NULL) receives the hex name, *bytes (may be NULL) its size. */
int container_put(struct repo *r, char type, const char *dir, const void *data, size_t len,
                  char hex_out[65], uint64_t *bytes, struct err *e);
int container_open(const struct repo *r, char type, const uint8_t *data, size_t len,
                   struct buf *out, struct err *e);

/* Records (snapshot.c, record_compact.c). A compacted record is {RECORD_COMPACTED_KEY: [the
 * records it holds], "time"}; readers unfold it. A record file is at most RECORD_MAX_FILE
 * bytes; compaction keeps each compacted file well under it (RECORD_COMPACT_FILE_TEXT). */
#define RECORD_COMPACTED_KEY "compactedRecords"
#define RECORD_MAX_FILE (1u << 20)
#define RECORD_COMPACT_FILE_TEXT (256u * 1024)
/* repo_record_list, and *names (when not NULL): the object names of the files read. */
json_t *record_list_files(struct repo *r, const char *kind, json_t **damaged, json_t **names,
                          struct err *e);

int zstd_pack(const void *in, size_t len, int level, struct buf *out);
int zstd_unpack(const uint8_t *in, size_t len, size_t max, struct buf *out, struct err *e);

/* Parses an index file payload into the repo's tables (source = index file number). */
int index_parse_into(struct repo *r, const uint8_t *p, size_t len, int source, const char *name,
                     struct err *e);
/* Parses a pack trailer (decrypted) and adds its entries for pack number pidx. */
int pack_trailer_parse_into(struct repo *r, uint32_t pidx, const uint8_t *p, size_t len,
                            uint64_t pack_size, const char *name, struct err *e);
/* Reads and decrypts the trailer of the pack named name (object name): out receives its
 * entries (PACK_TRAILER_ENTRY_LEN bytes each), whatever the pack's version. Every length is
 * bounded before anything is allocated: a pack larger than PACK_MAX_SIZE or a trailer length
 * that does not fit is ERR_DAMAGE. */
int pack_read_trailer(struct repo *r, const char *name, struct buf *out, uint64_t *size_out,
                      struct err *e);
/* The same for a pack read whole into data (size bytes). */
int pack_trailer_from_buf(struct repo *r, const char *name, const uint8_t *data, size_t size,
                          struct buf *out, struct err *e);
int pack_derive_key(const struct repo *r, const uint8_t salt[32], uint8_t key[32], struct err *e);
/* Pack format version from its first 8 bytes: 1, 2, or 0 when not a pack. */
int pack_version(const uint8_t head[8]);
/* The size an object of n bytes is padded to: the next multiple of a granularity that grows
 * with n (1/16 to 1/32 of it), and at least min. */
uint64_t pad_size(uint64_t n, uint64_t min);
/* Index file plaintext: one zstd frame, then (version 2) zero bytes of padding. out receives
 * the decompressed payload. */
int index_payload_unpack(const uint8_t *p, size_t len, struct buf *out, struct err *e);
/* Nonce of the blob at byte offset off of its pack (big-endian, zero-padded). */
void pack_nonce(uint64_t off, uint8_t nonce[CX_NONCE_LEN]);
void pack_object_name(const uint8_t id[32], char *out, size_t n);
/* The id of a listed pack (name as listing data/ gives it), true only where readers look for
 * it: data/<its first two hex digits>/<64 hex digits>. A pack moved to another directory of
 * data/ is not found by any read. */
bool pack_name_parse(const char *name, uint8_t id[32]);
/* The index entry of blob id, when it lies in a stored pack. */
bool repo_lookup_entry(struct repo *r, const uint8_t id[32], struct ientry *out);
/* The key of pack number pidx (an ientry's pack) and its object name ("data/xx/<hex>").
 * head: the pack's first PACK_HEADER_LEN bytes when the caller read them, or NULL (they are
 * read when the key is not known yet). */
int repo_pack_key(struct repo *r, uint32_t pidx, const uint8_t *head, uint8_t key[32], char *name,
                  size_t n, struct err *e);
int blob_decode(struct repo *r, const uint8_t id[32], const struct ientry *ep,
                const uint8_t key[32], const uint8_t *ct, const char *name, bool check_id,
                struct buf *out, struct err *e);
/* The same, decrypting ct in place (its bytes are plaintext or wiped afterwards): *plain is
 * the plaintext, in ct when the blob is stored uncompressed, else in scratch (reused from
 * call to call). */
int blob_decode_inplace(struct repo *r, const uint8_t id[32], const struct ientry *ep,
                        const uint8_t key[32], uint8_t *ct, const char *name, bool check_id,
                        struct buf *scratch, const uint8_t **plain, size_t *plen, struct err *e);

/* State record (state.c): kept by snapshot commits and removals. added: a snapshot object
 * name and its backup id, or NULL; removed: nremoved snapshot object names. */
int state_record_change(struct repo *r, const char *added, const char *added_id,
                        const char *const *removed, size_t nremoved, struct err *e);
/* Writes the first (empty) state object of a new repository. */
int state_record_init(struct repo *r, struct err *e);
/* The backup id the state record, or this host's copy of it, gives snapshot object name:
 * how a snapshot file that can no longer be read is still named by its backup. Best effort:
 * false when neither knows it (or neither can be read). */
bool state_backup_id_of(struct repo *r, const char *name, char *out, size_t n);

uint32_t repo_add_pack_locked(struct repo *r, const uint8_t id[32], int source);
long repo_find_pack_locked(struct repo *r, const uint8_t id[32]);

/* A snapshot's summary, entries reference ({"chunks", "sha256", "bytes"}) and, when text
 * is not NULL, its entries' text (read them with entry_iter). */
int snapshot_load_parts(struct repo *r, const char *name, json_t **summary, json_t **ref,
                        struct buf *text, struct err *e);
/* The entries' text that ref (a reference as snapshot_load_parts gives it) names, checked
 * against its SHA-256; name (the snapshot's) is for the messages. here: its chunks loaded in
 * this thread (stream_restore_buf_here). */
int snapshot_ref_text(struct repo *r, json_t *ref, const char *name, bool here, struct buf *text,
                      struct err *e);
/* Writes one index file whose payload holds npacks records (pack id, blob count, trailer
 * entries: see index_parse_into); name_out receives its object name ("index/<hex>"). */
int index_file_write(struct repo *r, const void *records, size_t len, uint32_t npacks,
                     char name_out[80], uint64_t *bytes, struct err *e);

/* REPO_PACK_TARGET, or CARIS_TEST_PACK_TARGET's smaller one (test-only): where a pack closes */
uint64_t repo_pack_target(void);

#endif

/* The repository: an encrypted, deduplicating, content-addressed store of chunks ("blobs"),
 * plus snapshot manifests that list every blob a backup needs. Knows bytes and snapshots,
 * not PostgreSQL or file trees. The format is specified in docs/REPOSITORY-FORMAT.md; every
 * invariant stated there is kept here. */
#ifndef CARIS_REPO_H
#define CARIS_REPO_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/chunker.h"
#include "caris/core.h"
#include "caris/err.h"
#include "caris/storage.h"

#define REPO_FORMAT_VERSION 1
#define REPO_ID_LEN 32
#define REPO_MAX_BLOB (64u << 20)    /* larger than any chunk the chunker makes */
#define REPO_PACK_TARGET (16u << 20) /* a pack is closed once it holds this much */
#define REPO_MAX_METADATA (1u << 30) /* refuse larger index or snapshot files */

struct repo;

struct repo_init_opts {
    uint64_t kdf_ops;      /* Argon2id passes; 0 = default (3) */
    size_t kdf_mem;        /* Argon2id memory in bytes; 0 = default (64 MiB) */
    int compression_level; /* zstd level; 0 = default */
    const char *label;     /* label of the first key slot */
};

/* 1 when path holds a repository, 0 when not (missing or empty), -1 with e on error. */
int repo_exists(const char *path, struct err *e);

/* Creates a repository in path (an empty or missing directory). */
struct repo *repo_init(const char *path, const char *password, const struct repo_init_opts *o,
                       struct err *e);

/* Opens: unlocks the master key with password (ERR_WRONG_KEY when no key slot opens),
 * reads the config and loads the index (damaged index files are recorded, not fatal:
 * see repo_damage). Packs that no index lists (left by an interrupted backup) are adopted
 * by reading their trailers, so their blobs are not stored again. */
struct repo *repo_open(const char *path, const char *password, struct err *e);
void repo_close(struct repo *r);

const char *repo_path(const struct repo *r);
struct storage *repo_storage(struct repo *r);
const struct chunker_params *repo_chunker_params(const struct repo *r, bool dumps);
const uint8_t *repo_chunker_seed(const struct repo *r); /* 32 bytes */
int repo_compression_level(const struct repo *r);
void repo_set_compression_level(struct repo *r, int level); /* this session only */

/* Chunk id: HMAC-SHA-256 under the repository's id key. Thread-safe. */
void repo_chunk_id(const struct repo *r, const void *data, size_t len, uint8_t id[32]);

/* Problems found while opening (damaged index files, unreadable pack trailers), as a JSON
 * array of {"object": name, "error": msg}. Never NULL. Borrowed. */
json_t *repo_damage(const struct repo *r);

/* ---- key slots ----------------------------------------------------------------------- */
int repo_key_add(struct repo *r, const char *password, const char *label, char id_out[17],
                 struct err *e);
json_t *repo_key_list(struct repo *r, struct err *e); /* array of {id, label, created, current} */
int repo_key_remove(struct repo *r, const char *id, struct err *e);

/* ---- writing blobs ------------------------------------------------------------------- */

/* One backup's writing session. Blobs are added from up to nslots threads at once, each
 * thread using its own slot (its own open pack); the index is shared under a mutex. */
struct repo_writer;
struct repo_writer_stats {
    uint64_t blobs_new, blobs_known;
    uint64_t bytes_new;    /* plaintext bytes of new blobs */
    uint64_t bytes_stored; /* bytes written to the repository (packs, index) */
    uint64_t packs;
};
struct repo_writer *repo_writer_new(struct repo *r, int nslots);
/* The writer has one more slot, after the nslots data slots, for metadata (manifests' entry
 * lists): its blobs go to packs of their own, so damage to a data pack never takes a
 * backup's file list with it. */
int repo_writer_meta_slot(const struct repo_writer *w);
/* Stores the blob unless the repository already has it (or another slot is storing it).
 * Returns 1 when stored, 0 when known, -1 on error. */
int repo_writer_add(struct repo_writer *w, int slot, const uint8_t id[32], const void *data,
                    size_t len, struct err *e);
/* Closes open packs and writes one index file listing the packs of this session (and any
 * adopted ones). After success, every blob added is durable and findable. */
int repo_writer_flush(struct repo_writer *w, struct err *e);
void repo_writer_get_stats(struct repo_writer *w, struct repo_writer_stats *out);
void repo_writer_free(struct repo_writer *w);

/* ---- reading blobs ------------------------------------------------------------------- */

bool repo_has_blob(struct repo *r, const uint8_t id[32]);
/* Size of the blob's plaintext, -1 when unknown. */
int64_t repo_blob_size(struct repo *r, const uint8_t id[32]);
/* Reads, authenticates, decompresses and re-hashes a blob: out receives its plaintext only if
 * HMAC(plaintext) == id. Thread-safe. Damage is ERR_DAMAGE naming pack and blob. */
int repo_blob_load(struct repo *r, const uint8_t id[32], struct buf *out, struct err *e);
/* repo_blob_load without recomputing the chunk id, for callers that check a hash over the
 * whole file or stream before anything is trusted (restore): the AES-GCM tag, under the
 * chunk id as associated data, still authenticates every blob. verify and check keep the
 * id check. */
#define REPO_LOAD_NO_ID_CHECK 1u
int repo_blob_load_flags(struct repo *r, const uint8_t id[32], struct buf *out, unsigned flags,
                         struct err *e);
/* Name of the pack holding the blob (for damage reports), NULL when unknown. */
const char *repo_blob_pack(struct repo *r, const uint8_t id[32], char out[65]);

/* ---- snapshots (backup manifests) ---------------------------------------------------- */

/* A snapshot has a small summary (listed by repo_snapshot_list without reading entries)
 * and its entries. The summary is stored in snapshots/<sha256 of the file>; the entries
 * (JSON) are stored as a byte stream of content-defined chunks through w, so what did not
 * change since the last backup costs nothing. repo_snapshot_save flushes w (packs, then the
 * index) before it writes the snapshot file: the commit point of a backup. */
int repo_snapshot_save(struct repo *r, struct repo_writer *w, json_t *summary, json_t *entries,
                       char name_out[65], struct err *e);
/* The same in steps, for callers that report what was stored: store the entries through w
 * (*ref receives their reference), flush w yourself, then commit the snapshot file. */
int repo_snapshot_put_entries(struct repo *r, struct repo_writer *w, json_t *entries, json_t **ref,
                              struct err *e);
int repo_snapshot_commit(struct repo *r, json_t *summary, json_t *ref, char name_out[65],
                         struct err *e);
/* The same as put_entries, for entries already serialised (a JSON array, compact, sorted
 * keys), e.g. built one entry at a time to keep memory small. */
int repo_snapshot_put_entries_text(struct repo *r, struct repo_writer *w, const char *text,
                                   size_t len, json_t **ref, struct err *e);
/* The entries as stored (JSON text), without parsing them: for readers that go through
 * them one entry at a time. */
int repo_snapshot_load_entries_text(struct repo *r, const char *name, struct buf *text,
                                    struct err *e);
/* Goes through a manifest's entries (its JSON text) one entry at a time, so that memory
 * holds one entry, not all of them as objects. */
struct entry_iter {
    const char *p, *end;
    size_t index; /* entries returned so far */
    bool started;
};
void entry_iter_init(struct entry_iter *it, const struct buf *text);
/* 1 and *ent (the caller's), 0 at the end, -1 with ERR_DAMAGE when the text is malformed. */
int entry_iter_next(struct entry_iter *it, json_t **ent, struct err *e);
/* Loads one snapshot file. entries may be NULL when not wanted. */
int repo_snapshot_load(struct repo *r, const char *name, json_t **summary, json_t **entries,
                       struct err *e);
/* All summaries, oldest first, each with "_file": the snapshot's object name. Damaged
 * snapshot files are reported in *damaged (array of {object,error}) and skipped. */
json_t *repo_snapshot_list(struct repo *r, json_t **damaged, struct err *e);
/* Finds a snapshot by backup id ("id" field of the summary). ERR_NOT_FOUND when absent. */
int repo_snapshot_find(struct repo *r, const char *backup_id, char name_out[65], json_t **summary,
                       struct err *e);
int repo_snapshot_remove(struct repo *r, const char *name, struct err *e);

/* ---- records ------------------------------------------------------------------------- */
/* Small encrypted JSON documents that accompany immutable snapshots, such as the results of
 * test restores: records/<kind>/<sha256 of the file>, container type 'R'. kind is lower-case
 * letters and '-'. */
int repo_record_add(struct repo *r, const char *kind, json_t *record, struct err *e);
/* All records of a kind (array, unordered); damaged ones are skipped and reported in
 * *damaged when not NULL. */
json_t *repo_record_list(struct repo *r, const char *kind, json_t **damaged, struct err *e);

/* ---- locks --------------------------------------------------------------------------- */
/* Backups take shared locks (any number at once); prune takes the exclusive one. A lock
 * whose process is gone (same host) or that is older than its lease is ignored. */
int repo_lock(struct repo *r, bool exclusive, const char *operation, struct err *e);
void repo_unlock(struct repo *r);

/* ---- check --------------------------------------------------------------------------- */
struct repo_check_opts {
    bool read_data; /* read and authenticate every blob of every pack */
    int threads;    /* packs read at once; 0 = number of CPUs */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *ctx;
};
/* Returns a JSON report {"ok": bool, "errors": [...], "warnings": [...], "stats": {...}};
 * -1 only when the check itself could not run. */
int repo_check(struct repo *r, const struct repo_check_opts *o, json_t **report, struct err *e);

/* ---- references and prune (gc.c) ----------------------------------------------------- */
struct caris_op;
/* The one walk over what backups reference, shared by check and prune: for each snapshot of
 * list (as repo_snapshot_list returns it), every blob it needs — the chunks of its entries'
 * stream (meta = true) and every chunk of every entry (meta = false). entry is the blob's
 * number in the in-memory index, -1 when the index does not have it; id is NULL when a chunk
 * reference is malformed. snapshot_end gets load_error when the snapshot file or its entries
 * could not be read (its blobs are then unknown). Records reference no blobs (today's kinds
 * are small JSON documents); a kind that does must be added here. */
struct repo_ref_walk {
    void (*snapshot_begin)(void *ctx, json_t *summary);
    void (*blob)(void *ctx, const uint8_t *id, long entry, bool meta);
    void (*snapshot_end)(void *ctx, json_t *summary, const struct err *load_error);
    void *ctx;
    const struct caris_op *op; /* progress ("mark") and cancel; may be NULL */
    /* > 1: walk that many snapshots at once; the callbacks must then be thread-safe (those
     * of one snapshot run on one thread, in order: begin, blobs, end). 0 or 1: in order. */
    int threads;
};
int repo_walk_references(struct repo *r, json_t *list, const struct repo_ref_walk *w,
                         struct err *e);

struct repo_prune_opts {
    bool dry_run;      /* decide and report, change nothing */
    double max_unused; /* unused share (percent) the remaining packs may keep: repack the
                          most wasteful until it is reached */
    const struct caris_op *op;
    /* dry run only: count these backups (ids) as already forgotten, so that a dry run of
     * forget --prune reports what the real one would free */
    const char *const *assume_forgotten;
    size_t nassume_forgotten;
};
struct repo_prune_stats {
    uint64_t snapshots, blobs, blobs_referenced, blobs_missing;
    uint64_t packs_before, pack_bytes_before, repo_bytes_before;
    uint64_t packs_deleted, pack_bytes_deleted; /* packs that held no referenced blob */
    uint64_t packs_repacked, pack_bytes_repacked, blobs_repacked;
    uint64_t packs_written, pack_bytes_written; /* by the repack */
    uint64_t index_files_before, index_files_written;
    uint64_t leftovers_removed;
    uint64_t packs_after, pack_bytes_after, repo_bytes_after;
};
/* Removes what no snapshot references: marks every referenced blob (repo_walk_references),
 * deletes packs that hold none, rewrites through a repo_writer the referenced blobs of the
 * packs that waste most (until at most max_unused percent is unused), writes new index
 * files covering what remains, then deletes the old index files, then the old packs, then
 * leftovers of interrupted writes.
 * That order keeps every referenced blob indexed in an existing pack at every instant, so a
 * crash anywhere leaves a repository check passes and the next prune finishes the job. The
 * caller holds the exclusive lock. Refuses (ERR_DAMAGE) when a snapshot or index file cannot
 * be read: what it references is unknown. Afterwards the repository handle is only fit for
 * repo_close. */
int repo_prune(struct repo *r, const struct repo_prune_opts *o, struct repo_prune_stats *st,
               struct err *e);

#endif

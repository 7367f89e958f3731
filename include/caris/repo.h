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

/* Argon2id parameters of key slots. Writers (init, key add) accept nothing else and readers
 * refuse slots outside them before deriving anything, so a planted slot costs at most one
 * derivation at the maximum (1 GiB, 8 passes: 10.7 s measured on the 2-core test machine;
 * the defaults take 0.25 to 0.4 s). The maximum is libsodium's strongest preset (SENSITIVE: 1 GiB,
 * 4 passes) with twice its passes as headroom. */
#define REPO_KDF_OPS_MIN 1
#define REPO_KDF_OPS_MAX 8
#define REPO_KDF_MEM_MIN 8192u
#define REPO_KDF_MEM_MAX (1u << 30)
#define REPO_KDF_OPS_DEFAULT 3
#define REPO_KDF_MEM_DEFAULT (64u << 20)
/* Readers read at most this many key slots; key add refuses to make more. */
#define REPO_KEY_SLOTS_MAX 32
#define REPO_KEY_LABEL_MAX 256 /* bytes of UTF-8 */

/* 0 when ops and mem (bytes) are within the bounds above, else ERR_USAGE saying them. */
int repo_kdf_check(uint64_t ops, uint64_t mem, struct err *e);

struct repo_init_opts {
    uint64_t kdf_ops;      /* Argon2id passes; 0 = default (3); checked by repo_kdf_check */
    size_t kdf_mem;        /* Argon2id memory in bytes; 0 = default (64 MiB) */
    int compression_level; /* zstd level; 0 = default */
    const char *label;     /* label of the first key slot */
    /* Chunker seed (32 bytes); NULL = random, as it must be for real repositories. Tests whose
     * assertions depend on where content-defined boundaries fall set it, so that their outcome
     * does not depend on chance. */
    const uint8_t *chunker_seed;
    /* An open repository whose chunking the new one takes (init --copy-chunker-from): its
     * chunker seed, chunker parameters and chunk-id (MAC) key, so that the same plaintext gets
     * the same chunk ids in both and `copy` transfers only the blobs the destination lacks.
     * The encryption key stays the new repository's own. NULL: a repository of its own.
     * Overrides chunker_seed. */
    const struct repo *chunker_from;
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
/* repo_open, trying the key slot slot_hint first (the id repo_key_slot gave last time, kept by
 * the caller outside the repository, where no one who can only write the repository can
 * change it); NULL or an unknown id: no hint. Then slots are tried cheapest first. A slot
 * whose key does not open the config is passed over for the next one. */
struct repo *repo_open_hint(const char *path, const char *password, const char *slot_hint,
                            struct err *e);
void repo_close(struct repo *r);
/* Where opening an S3 repository keeps what it learnt from listing data/ (the open cache,
 * one directory per repository id below dir: docs/REPOSITORY-FORMAT.md, "Opening without
 * listing data/"); NULL, the default: no cache, every open lists data/. */
void repo_set_cache_root(const char *dir);
/* Threads: one operation at a time per handle. Within an operation, blob loads and writer
 * slots may run on many threads (see each function), but the handle's lock (repo_lock and
 * its nesting), repo_refresh and the state record's audit are not guarded against another
 * operation on the same handle: a process that runs several operations at once (a daemon)
 * serialises them on one handle, or opens one handle per operation. */

/* For a process that keeps a repository open (the daemon): reads the index again, so that
 * what other processes stored since (new index files, packs no index lists yet) is found and
 * what prune removed is not. No writer of the handle may be active. Snapshots and records
 * are listed afresh by every call that reads them. The keys are not derived again. */
int repo_refresh(struct repo *r, struct err *e);

/* An index read from the open cache (an S3 open lists index/ only: docs/REPOSITORY-FORMAT.md,
 * "Opening without listing data/") read again with a listing of data/, so that the entries
 * of packs gone by other means than prune (a bucket's lifecycle rule, a hand) are left out
 * (with a warning) and nothing is taken as there that is not. 0 at once for an index read
 * with a listing. copy calls it on its destination. */
int repo_index_list_packs(struct repo *r, struct err *e);
/* Reads the index again with a full listing of data/ (check, prune, new stale locks; copy, on
 * a destination another copy wrote to meanwhile). */
int repo_index_reload_full(struct repo *r, struct err *e);
/* *outdated: index/ is not what the handle read (an index file gone, one added since by a
 * backup, or an adopted pack gone): what it says is not the repository's index of now. */
int repo_index_outdated(struct repo *r, bool *outdated, struct err *e);

const char *repo_path(const struct repo *r);
struct storage *repo_storage(struct repo *r);
const struct chunker_params *repo_chunker_params(const struct repo *r, bool dumps);
const uint8_t *repo_chunker_seed(const struct repo *r); /* 32 bytes */
int repo_compression_level(const struct repo *r);
void repo_set_compression_level(struct repo *r, int level); /* this session only */

/* Chunk id: HMAC-SHA-256 under the repository's id key. Thread-safe. */
void repo_chunk_id(const struct repo *r, const void *data, size_t len, uint8_t id[32]);
/* true when a and b cut the same bytes into the same chunks with the same ids: same chunker
 * seed and parameters (files and dumps) and the same chunk-id key (compared through the id of
 * a probe, never by exposing the key). Only then can a blob move between them by its id. */
bool repo_same_chunking(const struct repo *a, const struct repo *b);

/* Problems found while opening (damaged index files, unreadable pack trailers), as a JSON
 * array of {"object": name, "error": msg}. Never NULL. Borrowed. */
json_t *repo_damage(const struct repo *r);
/* Warnings found while opening (index entries whose pack is missing: treated as absent, so
 * the next backup stores those blobs again) and by repo_state_audit, as a JSON array of
 * {"object": name, "message": msg}. Never NULL. Borrowed. */
json_t *repo_warnings(const struct repo *r);
/* Adds a warning to repo_warnings (once per object and text), for the warning sink too. */
void repo_warn(struct repo *r, const char *object, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Called with each warning added to repo_warnings from now on (the opening's were reported by
 * then): a front end shows what a command met after it opened the repository (a state object
 * that could not be written after a commit, a read-only file system read without a lock).
 * NULL: none. */
typedef void (*repo_warn_fn)(void *ctx, const char *object, const char *message);
void repo_set_warn_sink(struct repo *r, repo_warn_fn fn, void *ctx);
/* The blobs a pack holds, read from its trailer (not from the index): {"pack", "bytes",
 * "blobs": [{"id", "offset", "length" (ciphertext + tag), "size" (plaintext), "compressed"}]}.
 * name: the object name, "data/<2 hex>/<64 hex>". New reference in *out. */
int repo_pack_blobs(struct repo *r, const char *name, json_t **out, struct err *e);
/* Where a backup's manifest (its entries, stored as chunks) lies: {"backup", "snapshot" (its
 * snapshot file), "bytes" and "sha256" (of the manifest text), "blobs": [{"id", "size", and
 * "pack", "offset", "length" as the index places it, or "pack": null when the index does not
 * have it}]}, in manifest order. For investigating damage, and for tests that damage one
 * backup's manifest. */
int repo_backup_blobs(struct repo *r, const char *backup_id, json_t **out, struct err *e);
/* The repository's id (32 hex digits, from its config). */
const char *repo_id(const struct repo *r);
/* A key for authenticating a local cache of this repository (never stored): HKDF-SHA-256 of
 * the master key with info "caris local cache v1 <purpose>". */
int repo_local_key(const struct repo *r, const char *purpose, uint8_t key[32], struct err *e);
/* A local cache file authenticated with repo_local_key(purpose): its bytes, then their
 * HMAC-SHA-256. repo_local_file_read puts the bytes (without the MAC) in out; -1 when the file
 * is missing, longer than max, or does not check out (a cache: the caller rebuilds it).
 * repo_local_file_write makes the parent directory (0700) and replaces the file atomically
 * (0600). */
int repo_local_file_read(const struct repo *r, const char *purpose, const char *path, size_t max,
                         struct buf *out);
int repo_local_file_write(const struct repo *r, const char *purpose, const char *path,
                          const void *data, size_t len, struct err *e);

/* ---- key slots ----------------------------------------------------------------------- */
/* Id of the key slot that opened the repository (16 hex digits). */
const char *repo_key_slot(const struct repo *r);
/* A key as keys are kept (a line of .env.local, unquoted): at least 32 bytes, no control
 * character, no blank at either end, no " #", no leading quote; else ERR_CONFIG naming it as
 * what ("BACKUP_ENCRYPTION_KEY", "the new key"). init and key add ask it. */
int repo_key_text_check(const char *password, const char *what, struct err *e);
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
    /* Time spent per stage, summed over the threads (so it may exceed the wall time):
     * compressing new blobs, encrypting them, and closing packs and handing them to storage
     * (their pack's trailer, its SHA-256 name, the upload queue) plus the final flush. */
    uint64_t compress_ns, encrypt_ns, write_ns;
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

/* Whether a copy of the blob can be deduplicated against: stored, and not where it is known
 * to be damaged (repo_bad_blobs_save). */
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
/* Records (records/bad-blob) the blobs this handle failed to open since its last call, each
 * with the pack it was read from, so that no later backup deduplicates against those copies:
 * the next one to meet such a blob stores it again. `by` says what found them ("verify",
 * "check --read-data"). *saved (may be NULL): pairs recorded. Called by the services that
 * judge damage (verify, check) after they ran. */
int repo_bad_blobs_save(struct repo *r, const char *by, size_t *saved, struct err *e);
/* Removes the records of damaged blobs none of whose packs is left (prune deleted them, and
 * with them the damage). Needs the exclusive lock (repo_record_remove). */
int repo_bad_blobs_forget_gone(struct repo *r, size_t *removed, struct err *e);
/* Name of the pack holding the blob (for damage reports), NULL when unknown. */
const char *repo_blob_pack(struct repo *r, const uint8_t id[32], char out[65]);
/* Where a stored blob lies: an opaque pack number (the same for the blobs of one pack, in this
 * session) and its offset in the pack. For reading many blobs in storage order. false: not
 * stored. */
bool repo_blob_where(struct repo *r, const uint8_t id[32], uint32_t *pack, uint32_t *off);

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
/* The same for entries text written to the file fd (len bytes, read from its start). */
int repo_snapshot_put_entries_fd(struct repo *r, struct repo_writer *w, int fd, uint64_t len,
                                 json_t **ref, struct err *e);
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
/* What the walk over references needs of an entry: its "chunks" and "page_hashes" lists as
 * chunklist_decode_items decodes them (absent: none; *_bad: not a valid list). */
struct chunk_item;
struct entry_refs {
    struct chunk_item *chunks, *pages;
    size_t nchunks, npages;
    bool chunks_bad, pages_bad;
    bool scanned; /* read by the fast scan (else parsed): for tests */
};
/* entry_iter_next for those two lists only (the same results, the same errors; faster: the
 * entry is not built). 1 with *out (entry_refs_free), 0 at the end, -1 with ERR_DAMAGE. */
int entry_iter_refs(struct entry_iter *it, struct entry_refs *out, struct err *e);
void entry_refs_free(struct entry_refs *r);
/* A snapshot's summary and its entries' reference ({"chunks", "sha256", "bytes"}), without
 * reading the entries: for `copy`, which commits the same reference in a repository that
 * shares the chunking (repo_same_chunking). New references in *summary and *ref. */
int repo_snapshot_load_ref(struct repo *r, const char *name, json_t **summary, json_t **ref,
                           struct err *e);
/* Loads one snapshot file. entries may be NULL when not wanted. */
int repo_snapshot_load(struct repo *r, const char *name, json_t **summary, json_t **entries,
                       struct err *e);
/* All summaries, oldest first, each with "_file": the snapshot's object name. Damaged
 * snapshot files are reported in *damaged (array of {object, error, and "id": its backup id
 * when the state record or this host's copy of it knows it}) and skipped. */
json_t *repo_snapshot_list(struct repo *r, json_t **damaged, struct err *e);
/* The same list (damaged files skipped, not reported), reading only the snapshots that are not
 * yet in the local cache file at cache_path (e.g. BACKUP_DIR/metadata/cache/<repo id>/
 * summaries): a snapshot file is immutable and named by the SHA-256 of its bytes, so the
 * summary read once from it stays right for that name. The cache is authenticated
 * (repo_local_key) and ignored when it does not check out; it is rewritten when the list
 * changed. For a backup's lookups (its parent, a free id), where reading every snapshot would
 * cost one read and decryption per backup ever kept; list, find and check read them all.
 * *nread (may be NULL): how many snapshot files were read. NULL cache_path: repo_snapshot_list
 * (*nread untouched). */
json_t *repo_snapshot_list_cached(struct repo *r, const char *cache_path, size_t *nread,
                                  struct err *e);
/* -1 with e (ERR_DAMAGE, naming the file) when backup_id is the id of one of damaged
 * (repo_snapshot_list's unreadable snapshot files), else 0: a backup whose snapshot file is
 * damaged is damaged, not "not found". */
int repo_snapshot_damaged_id(json_t *damaged, const char *backup_id, struct err *e);
/* The entry of damaged (repo_snapshot_list's) that name names: by its backup id (when the state
 * record knows it), or by its file, "snapshots/<name>" as `list` shows it, or <name>. NULL:
 * none. `forget ID` names an unreadable snapshot so. */
json_t *repo_snapshot_damaged_find(json_t *damaged, const char *name);
/* What a dry run of prune passes over when `forget --dry-run --prune` was named to remove it:
 * drops from list (repo_snapshot_list's, may be NULL) every snapshot whose backup id one of
 * names[0..n) is, and from damaged (its unreadable ones, may be NULL) every entry one of them
 * names (repo_snapshot_damaged_find). */
void repo_snapshots_drop_named(json_t *list, json_t *damaged, const char *const *names, size_t n);
/* Finds a snapshot by backup id ("id" field of the summary). ERR_NOT_FOUND when absent,
 * ERR_DAMAGE when its snapshot file cannot be read. */
int repo_snapshot_find(struct repo *r, const char *backup_id, char name_out[65], json_t **summary,
                       struct err *e);
/* Removes a snapshot: records the removal in the state record, then deletes the file. */
int repo_snapshot_remove(struct repo *r, const char *name, struct err *e);
/* The same for n snapshots with one state record update (forget of many at once: each
 * update writes the whole record, ~38 bytes per snapshot ever made). */
int repo_snapshots_remove(struct repo *r, const char *const *names, size_t n, struct err *e);

/* ---- state record -------------------------------------------------------------------- */
/* An authenticated, versioned record of the snapshots the repository holds (state/, see
 * docs/REPOSITORY-FORMAT.md "State record"), kept by repo_snapshot_commit and
 * repo_snapshot_remove, so that deleted, replayed (forgotten, then put back) and rolled-back
 * snapshots are noticed. */

/* Keeps a local copy of the record at path (e.g. BACKUP_DIR/metadata/state-<repo id>.json),
 * compared and updated by every audit, commit and removal of this handle: it catches a
 * rollback of the whole repository, record included. NULL: none. */
void repo_state_use_local(struct repo *r, const char *path);
/* For `init`, which creates a repository at a path on purpose: the local copies beside the one
 * set with repo_state_use_local that belong to another repository at the same path (the audit
 * reports them as "replaced") are renamed to <file>.replaced, kept but no longer compared.
 * Returns how many. */
size_t repo_state_retire_others(struct repo *r);
/* Compares the record (and the local copy) with the snapshots there are. *report:
 * {"ok", "record": "present" | "none" (made before the record; it starts at the first write)
 * | "deleted", "counter", "local_counter" (null without a local copy), "rolled_back",
 * "missing": [{"object", "id"}], "replayed": [{"object", "id"}], "removing": [{"object", "id"}:
 * removed in the record, the removal interrupted before the file was deleted; not a finding
 * ("ok" stays true), prune finishes it], "unrecorded": [object names:
 * a backup committing right now, one that stopped at its commit, or made before the record
 * began], "damaged": [{"object", "message"}]}. Each problem is also added to repo_warnings.
 * -1 only when the audit could not run. */
int repo_state_audit(struct repo *r, json_t **report, struct err *e);
/* Accepts a state record that was deleted or could not be read (prune --accept-missing):
 * deletes the objects of damaged (repo_state_audit's "damaged") that still cannot be read, and
 * writes a whole record again, of the snapshots that are there. Needs the exclusive lock. */
int repo_state_accept(struct repo *r, json_t *damaged, struct err *e);
/* Finishes the removals a forget began and did not complete (the record has the snapshots
 * removed and "removing", their files are still there): deletes those files, then writes a
 * state object that says so. *finished: [{"object", "id"}] (with dry_run: what would be
 * deleted; nothing is). Needs the exclusive lock (no forget runs meanwhile), except for
 * dry_run. Used by prune. */
int repo_state_finish_removals(struct repo *r, bool dry_run, json_t **finished, struct err *e);

/* ---- records ------------------------------------------------------------------------- */
/* Small encrypted JSON documents that accompany immutable snapshots, such as the results of
 * test restores: records/<kind>/<sha256 of the file>, container type 'R'. kind is lower-case
 * letters and '-'. */
int repo_record_add(struct repo *r, const char *kind, json_t *record, struct err *e);
/* The same, the name of the object written (records/<kind>/<name_out>) in name_out. */
int repo_record_add_named(struct repo *r, const char *kind, json_t *record, char name_out[65],
                          struct err *e);
/* All records of a kind (array, unordered); damaged ones are skipped and reported in
 * *damaged when not NULL. */
json_t *repo_record_list(struct repo *r, const char *kind, json_t **damaged, struct err *e);
/* The same, each record with "_object": its object name (records/<kind>/<64 hex>), for
 * repo_record_remove. */
json_t *repo_record_list_named(struct repo *r, const char *kind, json_t **damaged, struct err *e);
/* repo_record_list_named without reading again the objects known has as keys (a process that
 * keeps records in memory, keyed by "_object": the daemon's WAL pushes): returns the others;
 * *present receives every object name listed, so the caller drops what is gone. */
json_t *repo_record_list_except(struct repo *r, const char *kind, json_t *known, json_t **present,
                                json_t **damaged, struct err *e);
/* Order of two records of one kind: > 0 when a is the newer, < 0 when b is, 0 when neither.
 * Newer is a higher "seq" (written by repo_record_add_sequenced; a record without one counts
 * as 0), then, for equal seq, a later "time". So a record written after another one was read
 * comes after it whatever the clocks of the hosts that wrote them said. */
int repo_record_cmp(const json_t *a, const json_t *b);
/* repo_record_add for a record of one backup ("backupId") whose latest record counts (verify,
 * test-restore): "seq" is set to one more than the highest seq among the records of kind of the
 * same backup. A listing that fails (a damaged record is only skipped) gives seq 1 and the
 * record is still written: a result is never lost for want of its order. */
int repo_record_add_sequenced(struct repo *r, const char *kind, json_t *record, struct err *e);
/* Removes one record (its "_object" name). Only under the exclusive lock (ERR_LOCKED): records
 * are otherwise never deleted. WAL retention (caris/walwindow.h) is its one user. */
int repo_record_remove(struct repo *r, const char *object, struct err *e);
/* Removes the record this process just wrote (records/<kind>/<name>, repo_record_add_named)
 * because its lock lapsed while it wrote it: not committed after all. */
int repo_record_withdraw(struct repo *r, const char *kind, const char *name, struct err *e);

/* Compaction (src/repo/record_compact.c): folds every readable record file of kind into as
 * few compacted records as fit (each well under the record size limit), keeping per backup
 * its newest `keep` records (0: REPO_RECORD_KEEP_PER_BACKUP) and its newest failed one (a
 * record with "ok": false) however old; when live_ids (a JSON object whose keys are backup
 * ids) is given, records of other backups (forgotten ones) are dropped. Records without a
 * "backupId" are all kept. Crash-safe: the compacted records are written first, then the
 * files they replace are deleted; readers drop the duplicates a stop in between leaves.
 * Damaged files are left alone (check reports them). Nothing is written when the kind is
 * already compact. dry_run: counts only. */
#define REPO_RECORD_KEEP_PER_BACKUP 20
struct repo_record_compact_stats {
    uint64_t files_before, files_after;     /* readable record files */
    uint64_t records_before, records_after; /* records they hold (duplicates counted once) */
};
int repo_record_compact(struct repo *r, const char *kind, const json_t *live_ids, unsigned keep,
                        bool dry_run, struct repo_record_compact_stats *st, struct err *e);

/* ---- locks --------------------------------------------------------------------------- */
/* Backups, restores, verify, check and test-restore take shared locks (any number at once);
 * prune takes the exclusive one. A lock is a file locks/<32 hex> naming its holder (host,
 * boot id, pid namespace, pid and the process's start time), the operation, when it was
 * taken and when it was last refreshed: a thread started by repo_lock rewrites it every 5
 * minutes until repo_unlock. A lock is stale when its process is gone on this host, or when
 * it was not refreshed for 30 minutes; stale locks are ignored. Format and rules:
 * docs/REPOSITORY-FORMAT.md, "Locks".
 *
 * repo_lock waits up to the handle's lock wait (repo_set_lock_wait; default 0) for
 * conflicting live locks to go, then fails with ERR_LOCKED "repository locked by <op> on
 * <host> pid <pid> since <time>". Through a handle that already holds a lock it nests (a
 * shared request under any lock, an exclusive one under the exclusive lock): pair every
 * successful repo_lock with one repo_unlock. repo_close releases whatever is held. Once the
 * lock is taken, the index read at open is read again if an index file or adopted pack it
 * listed is gone (a prune ran in between). */
int repo_lock(struct repo *r, bool exclusive, const char *operation, struct err *e);
void repo_unlock(struct repo *r);
/* waiting (may be NULL) is called once, when repo_lock starts to wait, with the conflict
 * ("repository locked by ..."): the CLI says what it is waiting for. */
typedef void (*repo_lock_wait_fn)(void *ctx, const char *conflict);
void repo_set_lock_wait(struct repo *r, int64_t wait_ms, repo_lock_wait_fn waiting, void *ctx);
/* 0 while this handle's lock stands (or none is held); ERR_LOCKED when its file was removed
 * while held, or could not be refreshed for the staleness timeout (others may have removed
 * it as stale). repo_snapshot_commit checks it: such a backup commits nothing. */
int repo_lock_check(struct repo *r, struct err *e);
/* Its part that reads no file, cheap enough before every deletion: ERR_LOCKED when the lock
 * could not be refreshed for the staleness timeout (the process was stopped, say). */
int repo_lock_lapse_check(struct repo *r, struct err *e);
/* For an operation that failed (e set) while holding the lock: when the lock was removed
 * meanwhile (repo_lock_check), that is the cause (`unlock --force` also removes the temporary
 * packs of writers it no longer sees, which then fail to be read or renamed), so e becomes the
 * lock's error, exit 9, with the failure it caused after it. Nothing otherwise. */
void repo_lock_explain(struct repo *r, struct err *e);

/* Claims name (a backup id) under the lock this handle holds: locks/claim-<name>, created
 * only if absent, naming the lock. A claim is stale when its lock is gone or stale. Returns
 * 0 claimed, 1 already claimed (live or stale: take another name), -1 error. */
int repo_claim(struct repo *r, const char *name, struct err *e);
void repo_claim_release(struct repo *r, const char *name);
/* For a name that only one process may ever write (a copy's backup id): claims name as
 * repo_claim does, but a stale claim of it (its holder died) is taken over, not left for
 * `unlock`: the taker claims <name>.take-<the stale claim's lock>, exclusively, and while that
 * claim is live the stale one stands (no one removes it, no one claims the name afresh). A
 * taker that dies is taken over the same way, one step further. *held: the name claimed (to
 * free; for repo_claim_release_all). Returns 0 claimed, 1 held by a live claim (or by one that
 * names no lock: `unlock` removes it), holder then describing it ("copy on HOST pid N since
 * T"), -1 error. */
int repo_claim_or_take(struct repo *r, const char *name, char **held, char *holder, size_t n,
                       struct err *e);
/* Releases held and every claim it took over. Only once what the claim reserved is done (a
 * backup committed): the claims taken over stop the name from being claimed afresh. */
void repo_claim_release_all(struct repo *r, const char *held);

/* Every lock and claim: array of {"object", "kind": "lock" | "claim", "exclusive" (locks),
 * "operation", "host", "pid", "created", "refreshed", "format", "readable", "stale",
 * "reason" (when stale), "mine", "description"}. */
json_t *repo_lock_list(struct repo *r, struct err *e);

/* Temporary files of interrupted writes ('.tmp-*' in any directory; a writer killed with
 * kill -9 leaves them): array of {"object", "kind": "temporary", "size", "age_s"}. While a
 * live lock other than the caller's exists, some may be in use by its holder. */
json_t *repo_leftovers_list(struct repo *r, struct err *e);

/* Removes the leftovers of crashed operations: stale locks and claims, and temporary files.
 * Contract (prune calls it): the caller holds the exclusive lock, else ERR_LOCKED and
 * nothing is removed. Under it no lock-taking writer runs, so every temporary file in
 * data/, index/, snapshots/, records/ and the top directory is a leftover and is removed;
 * in keys/ and locks/, written without the exclusive lock (key add/remove, processes
 * writing their lock file), only those older than the staleness timeout. *removed (may be
 * NULL) receives the entries removed (lock entries as repo_lock_list, temporary files as
 * repo_leftovers_list). A failure stops at the first object that cannot be removed. */
int repo_leftovers_remove(struct repo *r, json_t **removed, struct err *e);

/* What repo_leftovers_remove would remove now, removing nothing (prune --dry-run counts it):
 * the same entries, or NULL with *e. */
json_t *repo_leftovers_removable(struct repo *r, struct err *e);

/* `caris-backup unlock`: removes stale locks and claims (force: every lock and claim but
 * this handle's own, live or not); then, if no live lock remains, takes the exclusive lock
 * for a moment and removes the leftovers (repo_leftovers_remove). *report: {"forced",
 * "removed": [lock entries, "forced": true on live ones], "kept": [live locks],
 * "leftovers_removed": [...], "leftovers_kept": [temporary files still there]}. */
int repo_unlock_stale(struct repo *r, bool force, json_t **report, struct err *e);

/* ---- check --------------------------------------------------------------------------- */
struct repo_check_opts {
    bool read_data; /* read and authenticate every blob of every pack */
    int threads;    /* packs read, and snapshots walked, at once; 0 = number of CPUs */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *ctx;
    /* Its cancel flag stops the check between packs (-1, "cancelled"); its progress hears
     * ("check", packs read, packs). May be NULL. */
    const struct caris_op *op;
};
struct repo_check_stats {
    uint64_t packs, pack_bytes, blobs, index_files, snapshots, blob_references;
    uint64_t stale_locks, temporary_files;
    bool read_data, temporary_files_may_be_in_use;
};
struct repo_check_result {
    bool ok; /* no errors */
    /* [{"object", "error", "backups": [ids affected] (when any)}] */
    json_t *errors, *warnings;
    struct repo_check_stats stats;
    json_t *state; /* repo_state_audit's report */
};
/* Fills res (repo_check_result_free); -1 only when the check itself could not run. */
int repo_check_run(struct repo *r, const struct repo_check_opts *o, struct repo_check_result *res,
                   struct err *e);
void repo_check_result_free(struct repo_check_result *res);
/* {"ok", "errors", "warnings", "stats": {"packs", "pack_bytes", "blobs", "index_files",
 * "snapshots", "blob_references", "read_data", "stale_locks", "temporary_files",
 * "temporary_files_may_be_in_use"}, "state"} */
json_t *repo_check_result_to_json(const struct repo_check_result *res);
/* repo_check_run with its result as repo_check_result_to_json gives it. */
int repo_check(struct repo *r, const struct repo_check_opts *o, json_t **report, struct err *e);

/* ---- references and prune (gc.c) ----------------------------------------------------- */
struct caris_op;
/* The one walk over what backups reference, shared by check and prune: for each snapshot of
 * list (as repo_snapshot_list returns it), every blob it needs — the chunks of its entries'
 * stream (meta = true) and every chunk of every entry (meta = false). snap is the snapshot's
 * position in list. entry is the blob's number in the in-memory index, -1 when the index does
 * not have it; id is NULL when a chunk reference is malformed. snapshot_end gets load_error
 * when the snapshot file or its entries could not be read (its blobs are then unknown).
 * Snapshots that name the same entries stream (the same SHA-256 and chunk list: a backup
 * whose files did not change reuses its parent's) are walked one after the other, and the
 * stream is read and parsed once: the later ones get the same calls, replayed. Records of
 * most kinds reference no blobs; those that do (WAL records) are walked by
 * repo_walk_record_references. */
struct repo_ref_walk {
    void (*blob)(void *ctx, size_t snap, const uint8_t *id, long entry, bool meta);
    void (*snapshot_end)(void *ctx, size_t snap, json_t *summary, const struct err *load_error);
    void *ctx;
    const struct caris_op *op; /* progress ("mark") and cancel; may be NULL */
    /* > 1: walk that many snapshots at once; the callbacks must then be thread-safe. Either
     * way those of one snapshot run on one thread, in order (blobs, then end), but the
     * snapshots are not taken in list order: use snap. */
    int threads;
};
int repo_walk_references(struct repo *r, json_t *list, const struct repo_ref_walk *w,
                         struct err *e);
/* The blobs referenced by records that keep data (the WAL archive's "wal" records), through
 * w->blob with snap SIZE_MAX (the snapshot callbacks are not called; threads is ignored).
 * ERR_DAMAGE when such a record cannot be read. Prune calls it after repo_walk_references. */
int repo_walk_record_references(struct repo *r, const struct repo_ref_walk *w, struct err *e);

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

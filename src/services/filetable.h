/* The file table cache: the previous file backup's regular files in a compact, memory-mapped
 * form in the local cache (BACKUP_DIR/metadata/cache/<repo id>/), so that a backup where most
 * files did not change costs one stat and one lookup per file instead of reading, decrypting
 * and parsing the previous manifest.
 *
 * It is a cache: rebuilt from the repository whenever it is missing, stale (made for other
 * manifest entries than the parent's: it is bound to the SHA-256 of the entries text it holds,
 * so every backup whose entries are byte-identical shares it) or not intact. It is trusted only
 * after its HMAC-SHA-256 (a key derived from the repository's master key, so only a holder of the
 * key can make one the program accepts) and its bounds check out. Layout: docs/BACKUP_RECOVERY.md
 * ("The file table cache"); the records are in the machine's own byte order (a cache made on
 * another machine fails the header check and is rebuilt). */
#ifndef CARIS_FILETABLE_H
#define CARIS_FILETABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "caris/core.h"
#include "caris/err.h"

/* What the table keeps of one regular file: the stat fields that decide "unchanged", the
 * owner names written in its entry, its chunk ids, and its manifest entry's exact text. */
struct ftable_rec {
    uint64_t text_off, key_off, ids_off; /* text: bytes of the text; key: strs; ids: ids */
    uint32_t text_len, key_len, nids, mode;
    int64_t size, mtime_s, ctime_s;
    uint64_t ino;
    uint32_t mtime_ns, ctime_ns, uid, gid;
    uint32_t user_off, user_len, group_off, group_len; /* in strs; len UINT32_MAX: no name */
};

struct ftable; /* a verified table, read-only */

/* The key that authenticates tables, derived from the repository's keys. */
struct repo;
int ftable_key(const struct repo *r, uint8_t key[32], struct err *e);

/* The path of the table for these roots (their compact JSON text) of repository r under
 * cache_dir, newly allocated. */
char *ftable_path(const char *cache_dir, const struct repo *r, const char *roots_json);

/* Opens and checks the table at path: NULL when it is missing, made for other entries than
 * those whose text has SHA-256 `entries_sha` (the parent's entries reference's "sha256"), or
 * fails its MAC or bounds check; *why then says which (a static string, for the log). */
struct ftable *ftable_open(const char *path, const uint8_t key[32], const uint8_t entries_sha[32],
                           const char **why);
void ftable_close(struct ftable *t);
size_t ftable_count(const struct ftable *t);
size_t ftable_text_len(const struct ftable *t); /* its manifest text's length */
/* The whole manifest entries text it holds (ftable_text_len bytes, SHA-256 as opened with). */
const char *ftable_entries_text(const struct ftable *t);
/* The entries text before offset `off` has been used (copied into the next text): its pages
 * leave the process's memory (they are read back from the file, intact, if used again). For
 * a backup that rebuilds the text, so that the old and the new one are not both resident. */
void ftable_text_used(struct ftable *t, size_t off);

/* The record for key ("<root index>/<path>"), NULL when absent. */
const struct ftable_rec *ftable_find(const struct ftable *t, const char *key, size_t kl);
/* True when st, the owner names (NULL: none) and the link count say the file is the one the
 * record describes: same size, mtime, ctime, inode, mode, uid, gid and names, one link. */
bool ftable_matches(const struct ftable *t, const struct ftable_rec *rec, const struct stat *st,
                    const char *user, const char *group);
const char *ftable_text(const struct ftable *t, const struct ftable_rec *rec);
const uint8_t (*ftable_ids(const struct ftable *t, const struct ftable_rec *rec))[32];

/* Building the next table while a backup runs. */
struct ftable_builder;
struct ftable_builder *ftable_builder_new(void);
/* Before the first add: t (which must outlive b) is the table b most likely rebuilds. While
 * every record added is t's record of the same index, nothing is copied; the first that
 * differs copies what came before from t. Nothing else changes: the same records make the same
 * table, and ftable_builder_same is then true without comparing. */
void ftable_builder_base(struct ftable_builder *b, const struct ftable *t);
/* One regular file: its key, stat, owner names (NULL: none) and chunk ids; its entry's text is
 * [text_off, text_off + text_len) of the manifest text given to ftable_builder_write. */
void ftable_builder_add(struct ftable_builder *b, const char *key, size_t kl, const struct stat *st,
                        const char *user, const char *group, uint64_t text_off, size_t text_len,
                        const uint8_t (*ids)[32], size_t nids);
/* True when b, finished for entries text of SHA-256 entries_sha, holds exactly what t holds:
 * same entries (by their SHA-256, which t's MAC covers), records, chunk ids and strings. Then
 * t is already the next backup's table and need not be written again. */
bool ftable_builder_same(const struct ftable_builder *b, const struct ftable *t,
                         const uint8_t entries_sha[32]);
/* Writes the table for the entries text (of SHA-256 entries_sha; a temporary file, then
 * renamed: a reader sees the old table or the new one, never a mixture). */
int ftable_builder_write(struct ftable_builder *b, const char *path, const uint8_t key[32],
                         const uint8_t entries_sha[32], const char *text, size_t text_len,
                         struct err *e);
/* The same with the text in the file text_fd (text_len bytes from offset 0), read a piece at a
 * time: the text need not be in memory. */
int ftable_builder_write_fd(struct ftable_builder *b, const char *path, const uint8_t key[32],
                            const uint8_t entries_sha[32], int text_fd, size_t text_len,
                            struct err *e);
void ftable_builder_free(struct ftable_builder *b);

#endif

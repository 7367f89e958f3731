/* The WAL archive: PostgreSQL's archive_command and restore_command (`caris-backup wal push %p`,
 * `caris-backup wal get %f %p`). Each archived file (a segment, a .partial segment, a timeline
 * .history file or a .backup label) is stored as a stream (content-defined chunks, deduplicated
 * and encrypted like everything else) plus an encrypted record of kind "wal" naming it: see
 * docs/REPOSITORY-FORMAT.md "WAL archive". Nothing archived is ever overwritten. */
#ifndef CARIS_WAL_H
#define CARIS_WAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/config.h"
#include "caris/err.h"
#include "caris/repo.h"

enum caris_wal_kind { WAL_SEGMENT, WAL_PARTIAL, WAL_HISTORY, WAL_BACKUP_LABEL };

/* What a WAL file name says. Names are PostgreSQL's: TTTTTTTTXXXXXXXXYYYYYYYY (a segment),
 * the same + ".partial", TTTTTTTT.history, and a segment name + ".OOOOOOOO.backup". */
struct caris_wal_name {
    enum caris_wal_kind kind;
    uint32_t timeline;
    uint32_t log, seg; /* 0 for a .history file */
};

struct pgsrc_archiver; /* caris/pgsrc.h (which needs libpq's headers) */
/* The WAL archiver of the server at POSTGRES_URL (PGPASSWORD when the URL has no password):
 * archive_mode and pg_stat_archiver. ERR_CONFIG without POSTGRES_URL, ERR_DATABASE when the
 * server cannot be asked. */
int caris_wal_archiver(const struct config *cfg, struct pgsrc_archiver *out, struct err *e);

/* Parses a bare file name (no directory); ERR_USAGE naming it when it is not one of the above. */
int caris_wal_name_parse(const char *name, struct caris_wal_name *out, struct err *e);
const char *caris_wal_kind_name(enum caris_wal_kind k);

struct caris_wal_push_result {
    bool already;   /* archived before with identical content: nothing written */
    uint64_t bytes; /* the file's size */
    uint8_t sha256[32];
};

struct caris_op;
/* Archives the file at path under its base name. Identical content archived before: success
 * with already = true. Different content under the same name: ERR_DAMAGE, nothing written.
 * Takes the repository's shared lock. Write order: packs, index, then the record (the commit
 * point: a push that did not write it archived nothing). */
int caris_wal_push(struct repo *r, const char *path, const struct caris_op *op,
                   struct caris_wal_push_result *res, struct err *e);
/* The same for a file already open (fd, read from its start; the caller keeps it): name is
 * its base name (what it is archived as), path only names it in messages. The daemon stores
 * the descriptors `wal push` passes it through this. */
int caris_wal_push_fd(struct repo *r, int fd, const char *name, const char *path,
                      const struct caris_op *op, struct caris_wal_push_result *res, struct err *e);
/* The same with cache, a JSON object the caller keeps across pushes on one handle (the
 * daemon): the WAL records read by earlier calls, by object name. Each call still lists the
 * records (so pushes by other processes and records removed by retention are seen) but reads
 * only the new ones: the check against a different re-push costs a directory listing instead
 * of one read per archived file. */
int caris_wal_push_fd_cached(struct repo *r, int fd, const char *name, const char *path,
                             json_t *cache, const struct caris_op *op,
                             struct caris_wal_push_result *res, struct err *e);

/* Streamed partial segments (`wal receive`, docs/REPOSITORY-FORMAT.md "Streamed partial
 * segments"): the first len bytes of a segment, stored every flush interval as a record of
 * kind "walstream" (not "wal": readers of segments never read them), "kind": "stream", named
 * TTTTTTTTXXXXXXXXYYYYYYYY.LLLLLLLL.stream (LLLLLLLL: len in hex), a name PostgreSQL never asks
 * for. A longer one or the whole segment supersedes it; prune removes superseded ones. */
#define CARIS_WAL_STREAM_NAME_MAX 48
void caris_wal_stream_name(uint32_t tli, uint64_t seg_start, uint64_t segsz, uint64_t len,
                           char out[CARIS_WAL_STREAM_NAME_MAX]);
/* Stores fd (read from its start: 1 to segsz - 1 bytes, the start of the segment at
 * seg_start on timeline tli) as a streamed partial. cache (may be NULL): as for
 * caris_wal_push_fd_cached, for the "walstream" records. The same name stored before with identical
 * content: success, already = true; different content: ERR_DAMAGE, nothing written. */
int caris_wal_push_stream_fd(struct repo *r, int fd, uint32_t tli, uint64_t seg_start,
                             uint64_t segsz, json_t *cache, const struct caris_op *op,
                             struct caris_wal_push_result *res, struct err *e);

/* Writes the archived file name to dest: into a temporary file beside it, every chunk
 * authenticated and the whole file's SHA-256 checked, fsynced, then renamed, so dest never holds
 * a bad or partial file. ERR_NOT_FOUND when the archive does not have it (restore_command's
 * ordinary "no such file"); ERR_DAMAGE when two records of the name disagree or a record cannot
 * be read. A segment not archived whole is served from its longest streamed partial, padded
 * with zeros to the segment size (recovery ends at the end of its valid WAL), and only up to
 * the point where its timeline ends in the history of timeline follow (0: the newest timeline
 * with a .history in the archive, recovery_target_timeline 'latest'): past it the partial holds
 * WAL that timeline does not have (a primary's last writes before a failover promoted a
 * standby); a partial wholly past it is not served (ERR_NOT_FOUND). */
int caris_wal_get(struct repo *r, const char *name, const char *dest, uint32_t follow,
                  const struct caris_op *op, struct err *e);
/* For a name caris_wal_get did not find: 0 when that is the archive's end, else -1 with e
 * (ERR_DAMAGE): a segment from before the first archived segment of its timeline (the archive
 * pruned past a recovery that needs it), unless an older timeline holds it (PostgreSQL before
 * 15 asks the newest timeline first), or when a WAL record cannot be read. A gap between
 * archived segments is an end: PostgreSQL reads ahead into one past a target before it.
 * `wal get --strict` (the restore_command restore --physical writes) asks it; a standby's
 * restore_command must not (it falls back to pg_wal and streaming on exit 1). */
int caris_wal_absent_check(struct repo *r, const char *name, struct err *e);

/* The same into fd (a regular file the caller created and renames once this returned 0):
 * truncated, written from its start, the whole file's SHA-256 checked, fsynced. On failure fd
 * holds nothing usable. cache as for caris_wal_push_fd_cached (NULL: list and read every
 * record). The daemon serves `wal get` through this. */
int caris_wal_get_fd_cached(struct repo *r, const char *name, int fd, json_t *cache,
                            uint32_t follow, const struct caris_op *op, struct err *e);

/* The daemon's read-ahead of `wal get` (a recovery asks for segment after segment):
 * caris_wal_next_segment writes the name of the segment after name on its timeline (segments
 * of segsz bytes) into out; -1 when name is not a segment's or segsz not a segment size.
 * caris_wal_load_cached reads archived segment name whole into out, every chunk authenticated
 * and the whole file's SHA-256 checked against its record (-1 and out empty otherwise):
 * ERR_NOT_FOUND when it is not archived whole (a streamed partial is never read ahead: it
 * may still grow), ERR_USAGE when it is larger than max, ERR_DAMAGE as caris_wal_get. */
int caris_wal_next_segment(const char *name, uint64_t segsz, char out[25]);
int caris_wal_load_cached(struct repo *r, const char *name, json_t *cache, size_t max,
                          struct buf *out, struct err *e);

/* Every WAL record, streamed partials included (array of {name, kind, timeline, start_lsn,
 * size, sha256, pushed}), ordered by timeline, then name. *damaged (may be NULL): unreadable
 * records. */
json_t *caris_wal_list(struct repo *r, json_t **damaged, struct err *e);

/* A base backup's WAL in the archive: waits (polling the WAL index, at most timeout_s, 0:
 * 60) until every segment of timeline tli from start_lsn's to stop_lsn's is archived in r.
 * res: how many segments, the first and last names, how long it waited; on failure the
 * first missing one. -1 with ERR_DATABASE naming the missing segment (and asking whether
 * archive_command pushes into this repository) when the time is up; cancel through op. */
struct caris_wal_await_result {
    uint64_t segments;
    int64_t waited_ms;
    char first[25], last[25], missing[25];
};
int caris_wal_await(struct repo *r, uint32_t tli, uint64_t start_lsn, uint64_t stop_lsn,
                    int64_t segsize, int timeout_s, const struct caris_op *op,
                    struct caris_wal_await_result *res, struct err *e);

#endif

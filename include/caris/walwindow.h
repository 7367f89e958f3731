/* What the WAL archive covers (caris/wal.h holds push, get and list): the archived range per
 * timeline, the gaps in it, the recovery window the kept base backups and the archive give,
 * and which archived WAL retention may drop.
 *
 * The pure functions take the WAL records as caris_wal_list gives them and the timelines'
 * .history contents already parsed, so they are tested without a repository
 * (tests/unit/test_walwindow.c); caris_wal_window reads both from a repository.
 *
 * Base backups are seen through struct caris_wal_base only: physical snapshots (issue 10's
 * base backups) record their start LSN (backup_label's START WAL LOCATION: the first WAL
 * they need), timeline and end time; caris_wal_bases_from_snapshots reads those from the
 * snapshot summaries. Logical (pg_dump) backups need no WAL. */
#ifndef CARIS_WALWINDOW_H
#define CARIS_WALWINDOW_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/err.h"
#include "caris/repo.h"

struct caris_wal_base {
    char id[128];       /* the backup's id */
    uint32_t timeline;  /* the timeline it was taken on */
    uint64_t start_lsn; /* the first WAL it needs (START WAL LOCATION) */
    uint64_t end_lsn; /* where its WAL ends (STOP WAL LOCATION): consistent from there; 0 unknown */
    int64_t end_time; /* Unix seconds it ended; 0 unknown */
    int64_t segsize;  /* its cluster's WAL segment size ("wal_segment_size"); 0 unknown */
};

/* "X/Y" (hex, as PostgreSQL writes LSNs): 0 and *lsn, or -1. */
int caris_lsn_parse(const char *s, uint64_t *lsn);
void caris_lsn_format(uint64_t lsn, char *out, size_t n);
/* The name of WAL segment segno (counted from LSN 0 in segments of segsize bytes, a power of
 * two from 1 MiB to 1 GiB) on timeline tli: "TTTTTTTTLLLLLLLLSSSSSSSS". */
void caris_wal_segment_name(uint32_t tli, uint64_t segno, int64_t segsize, char out[25]);

/* The physical base backups among snapshot summaries (repo_snapshot_list): those with
 * "method": "physical" and a parsable "start_lsn" and "timeline" ("stop_lsn", "time" read when
 * there). Returns how many; *out (free) holds them, oldest first as listed. Summaries that are
 * not "method": "physical" (every logical backup) are not base backups. A physical one whose
 * position cannot be read is left out too, and when unreadable is not NULL, *unreadable is its
 * id (in summaries; NULL when there is none): WAL retention must refuse rather than drop WAL
 * that base backup may need. */
size_t caris_wal_bases_from_snapshots(json_t *summaries, struct caris_wal_base **out,
                                      const char **unreadable);

/* One line of a timeline's .history file: the timeline `parent` ended at switch_lsn and the
 * history's own timeline began there. */
struct caris_wal_switch {
    uint32_t parent;
    uint64_t switch_lsn;
};
/* Parses a .history file (lines "parentTLI<tab>LSN<tab>reason", '#' comments and blank lines
 * ignored): 0 with *out (free) and *n, the last entry being the direct parent; -1 with
 * ERR_DAMAGE naming name when a line is malformed. */
int caris_wal_history_parse(const char *text, size_t len, const char *name,
                            struct caris_wal_switch **out, size_t *n, struct err *e);

/* The WAL segment size of the archive: the size all segment records share (0 when there are
 * none); -1 with e when they disagree (two clusters in one archive?). */
int64_t caris_wal_segment_size(json_t *records, struct err *e);

/* Retention: the first LSN the kept base backups need (the smallest start_lsn), or 0 when
 * there is no base backup, meaning "keep all archived WAL" (WAL alone restores nothing, but
 * without a base backup to judge by, nothing is known to be unneeded). */
uint64_t caris_wal_keep_from(const struct caris_wal_base *bases, size_t n);

/* Whether retention keeps record rec (caris_wal_list's), keep_from being caris_wal_keep_from's
 * answer and segsize caris_wal_segment_size's: .history files always (a few bytes, and needed
 * to follow any timeline); a segment, .partial or .backup label when its segment ends after
 * keep_from; everything when keep_from is 0 or segsize is unknown (0). */
bool caris_wal_retain(json_t *rec, uint64_t keep_from, int64_t segsize);

/* The archive per timeline, ordered by timeline: [{"timeline", "parent" (null when none is
 * known), "switch_lsn" (where it branched off its parent, from its .history; null), "first",
 * "last" (segment names; null when the timeline has only .history/.partial files),
 * "start_lsn", "end_lsn" (of the range first..last), "segments", "partial" (the .partial
 * file's name or null), "first_pushed", "last_pushed", "gaps": [{"timeline", "from", "to"
 * (the first and last missing segment names), "segments", "start_lsn", "end_lsn", "reason",
 * "breaks" (what recovery it makes impossible, in words), "backups" (ids of the bases whose
 * recovery to the present it cuts short)}]}].
 *
 * A gap is a segment missing between the first and the last archived on a timeline, and,
 * following the .history switches, a segment missing between a parent's last archived
 * segment and the child's switch point, or between the switch point and the child's first
 * archived segment (both only when the parent has archived segments: an archive that starts
 * on a later timeline, or whose older part retention dropped, has no gap there).
 * histories: {"<timeline decimal>": [caris_wal_switch as {"parent", "switch_lsn"}]}.
 * bases may be NULL (n 0). */
json_t *caris_wal_timelines(json_t *records, json_t *histories, int64_t segsize,
                            const struct caris_wal_base *bases, size_t nbases);

/* The recovery window from the timelines (caris_wal_timelines) and the bases: {"earliest" (the
 * end time of the oldest base backup whose WAL from its start to the present is gapless, or
 * null), "latest" (the time the last segment of the latest timeline was archived: recovery
 * reaches at least the commits before it), "latest_lsn", "timeline", "base_backups" (how many
 * kept), "reason" (when there is no window: why)}. */
json_t *caris_wal_recovery_window(json_t *timelines, const struct caris_wal_base *bases,
                                  size_t nbases);

/* Timelines for recovery (timelines: caris_wal_timelines' answer). The highest timeline the
 * archive knows (by a segment or a .history file), as PostgreSQL's recovery_target_timeline
 * = 'latest' finds it; 0 when the archive is empty. */
uint32_t caris_wal_latest_timeline(json_t *timelines);
/* Whether recovery along target's history passes through a base backup taken on base_tli
 * whose WAL ends at base_end_lsn: target is base_tli, or following each timeline's parent
 * (from its .history) leads to base_tli with every switch point at or after base_end_lsn
 * (the backup is consistent before its timeline was left). False when a parent is unknown. */
bool caris_wal_timeline_reaches(json_t *timelines, uint32_t base_tli, uint64_t base_end_lsn,
                                uint32_t target);

/* The first gap (a member of a timeline's "gaps" in timelines, borrowed) that recovery from a
 * base backup taken on base_tli, whose WAL starts at base_start_lsn, runs into when it follows
 * target's history (target 0: base_tli itself, `--timeline current`) to the end of the
 * archive; NULL when it crosses none. Recovery reads base_tli from base_start_lsn on, each
 * later timeline of the history from its switch point on, and each timeline up to the segment
 * that holds the next switch point (PostgreSQL reads that segment on the new timeline), so a
 * gap counts when it overlaps those ranges; of several, the one with the lowest LSN (where
 * replay stops). NULL as well when target's history does not lead back to base_tli
 * (caris_wal_timeline_reaches decides whether such a backup is chosen at all) or segsize is
 * unknown. */
/* The WAL a base backup needs to become consistent (start_lsn to stop_lsn on timeline tli, the
 * segments caris_wal_await waits for) that lies outside the archived stretch of tli: before its
 * first archived segment, after its last, or all of it when tli has none. The first such run,
 * {"timeline", "from", "to", "segments", "start_lsn", "end_lsn"} (new reference), or NULL when
 * none (holes between archived segments are "gaps", caris_wal_recovery_gap). */
json_t *caris_wal_base_unarchived(json_t *timelines, int64_t segsize, uint32_t tli,
                                  uint64_t start_lsn, uint64_t stop_lsn);

json_t *caris_wal_recovery_gap(json_t *timelines, int64_t segsize, uint32_t base_tli,
                               uint64_t base_start_lsn, uint32_t target);

/* The records of r's WAL archive that a physical base backup needs to become consistent
 * (summary: its snapshot summary; what copy takes along and verify reads): of the timeline it
 * started on, the segments from the one of its start LSN to the one of its stop LSN, and every
 * timeline history file up to that timeline. served_only: only what `wal get` serves recovery
 * (a segment's record; a streamed partial only for the last segment, when no whole segment
 * or longer partial is archived and it reaches the stop LSN); else also the backup label
 * file and every streamed partial of the range. records: [[archive kind ("wal" or
 * "walstream"), record], ...]; missing: the names of the segments of the range that no
 * record serves (the backup cannot become consistent); damaged: the records of those kinds
 * that could not be read (one may be missing's), damaged_wal those of kind "wal"; streamed: a
 * segment is served from a streamed partial. A backup that ended on a later timeline than it
 * started ("stop_timeline"): a segment of either timeline serves. A summary that is not a
 * physical backup's: both empty. -1 with e when the archive cannot be listed, or (ERR_DAMAGE)
 * the summary does not say which WAL it needs (or a range of over 2^20 segments). */
struct caris_base_wal {
    json_t *records;
    json_t *missing;
    size_t damaged, damaged_wal;
    bool streamed;
};
int caris_wal_base_records(struct repo *r, json_t *summary, bool served_only,
                           struct caris_base_wal *out, struct err *e);
void caris_base_wal_free(struct caris_base_wal *w);
/* The records of the WAL archive listed once for several backups (verify --all: an S3 GET
 * per record, each time): caris_wal_base_records_listed takes them instead of listing. */
struct caris_wal_listing {
    bool read;
    json_t *recs[2]; /* the "wal" records, the "walstream" ones */
    size_t damaged, damaged_wal;
};
int caris_wal_listing_read(struct repo *r, struct caris_wal_listing *l, struct err *e);
void caris_wal_listing_free(struct caris_wal_listing *l);
int caris_wal_base_records_listed(const struct caris_wal_listing *l, json_t *summary,
                                  bool served_only, struct caris_base_wal *out, struct err *e);

/* All of the above for a repository: {"segment_size", "timelines", "gaps" (every timeline's,
 * flattened), "recovery_window", "retention": {"keep_from_lsn" (null: keep all), "rule"},
 * "conflicts": [{"name", "sha256": [...]}] (names archived with different contents)}.
 * Reads every WAL record, the .history files' contents and the snapshot list. -1 with e
 * (ERR_DAMAGE when a record or .history file cannot be read). *damaged (may be NULL): the
 * unreadable WAL records (then the answer leaves them out). */
json_t *caris_wal_window(struct repo *r, json_t **damaged, struct err *e);

/* What is wrong with one of caris_wal_window's "conflicts", after its name: "archived N times
 * with different content ...". */
void caris_wal_conflict_text(const json_t *conflict, char *out, size_t n);

/* For `check`: each gap as {"object": "WAL <from>..<to>", "error": what and which recovery it
 * breaks, "backups": the base backups it cuts short}, appended to errors when it cuts short a
 * kept base backup's recovery, else to warnings (nothing restorable depends on it yet); each
 * name archived with different contents, an error. Returns the number of errors added, -1
 * with e when the archive could not be read. *window (may be NULL): caris_wal_window's
 * answer. */
int caris_wal_check(struct repo *r, json_t *errors, json_t *warnings, json_t **window,
                    struct err *e);

/* WAL retention, run by prune under the exclusive lock before it marks: removes the WAL
 * records caris_wal_retain does not keep (their data then goes with the unreferenced blobs),
 * oldest first. Nothing when no physical base backup is kept. dry_run: counts only, as if the
 * backups assume_forgotten[0..n) names (by id, or an unreadable snapshot by its file) were
 * forgotten. Refuses (ERR_DAMAGE) when a WAL record or a snapshot cannot be read. */
struct caris_op;
struct caris_wal_retention_result {
    uint64_t base_backups, kept, removed, bytes_removed;
    uint64_t keep_from_lsn; /* 0: keep all */
};
int caris_wal_retention_apply(struct repo *r, bool dry_run, const char *const *assume_forgotten,
                              size_t nassume_forgotten, const struct caris_op *op,
                              struct caris_wal_retention_result *res, struct err *e);
/* {"base_backups", "keep_from_lsn" (null: all kept), "kept", "removed", "bytes_removed", "rule"} */
json_t *caris_wal_retention_to_json(const struct caris_wal_retention_result *res);

#endif

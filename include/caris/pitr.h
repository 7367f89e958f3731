/* Physical base backups and point-in-time recovery of a PostgreSQL cluster:
 *
 *   databaseBackupService.createFullBackup({physical})   -> caris_phys_backup()
 *   recoveryService.pointInTimeRecovery({targetTime})    -> caris_recovery_point_in_time()
 *                                                           (caris_phys_restore() in full)
 *
 * A base backup is taken over the streaming replication protocol (BASE_BACKUP on a
 * replication connection, PostgreSQL 15 or later) and streamed file by file into the
 * repository, with no copy on local disk; WAL comes from the WAL archive (caris/wal.h).
 * Layout: docs/REPOSITORY-FORMAT.md "Physical backups". */
#ifndef CARIS_PITR_H
#define CARIS_PITR_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/backup.h"
#include "caris/err.h"
#include "caris/op.h"
#include "caris/repo.h"
#include "caris/walwindow.h"

/* Relation files are cut into fixed blocks of this size (32 pages): page-aligned, so a
 * block that PostgreSQL did not change keeps its chunk id from one backup to the next. */
#define PHYS_BLOCK_SIZE (256u * 1024u)

struct phys_backup_opts {
    const char *url;        /* a libpq URI or key=value string; replication=true is added */
    const char *password;   /* when url has none (PGPASSWORD); may be NULL */
    bool spread_checkpoint; /* CHECKPOINT 'spread' instead of 'fast' */
    bool incremental;       /* page deltas against the latest physical backup of the cluster */
    int threads;
    caris_progress_fn progress;
    void *ctx;
    int64_t time_ns; /* record this as the backup's time; 0 = now */
    /* after the stream: wait at most archive_timeout_s (0: 60) until the backup's WAL (start
     * to stop segment) is in this repository's WAL archive, else fail with nothing committed;
     * no_archive_check skips that (a warning "archive-check-skipped" in the summary) */
    int archive_timeout_s;
    bool no_archive_check;
    const struct caris_op *op; /* cancel stops it, nothing committed; warnings to its log */
};

/* Takes a base backup. Returns CARIS_DONE, CARIS_DONE_WARNINGS (bad pages found: listed in
 * the summary's "warnings" with file and block; the backup is complete), or -1 with e and
 * nothing committed. ERR_DATABASE for the server's refusals (no REPLICATION attribute, no
 * pg_hba.conf entry for replication, archive_mode off), each with a hint. */
int caris_phys_backup(struct repo *r, const struct phys_backup_opts *o,
                      struct caris_backup_result *res, struct err *e);

enum phys_target {
    PHYS_TARGET_NONE,
    PHYS_TARGET_TIME,
    PHYS_TARGET_LSN,
    PHYS_TARGET_XID,
    PHYS_TARGET_NAME,
    PHYS_TARGET_IMMEDIATE
};

struct phys_restore_opts {
    const char *backup_id; /* NULL: the latest physical backup that ends before the target */
    const char *pgdata;    /* the data directory to write */
    enum phys_target target;
    const char *target_value;  /* time (as PostgreSQL takes it), LSN, xid or name */
    int64_t target_time_ns;    /* PHYS_TARGET_TIME: the same time, parsed (choosing a backup) */
    uint64_t target_lsn;       /* PHYS_TARGET_LSN: parsed */
    const char *target_action; /* promote (default), pause, shutdown */
    /* recovery_target_timeline: NULL or "latest" (the archive's newest timeline, PostgreSQL's
     * default: the history the database went on with after an earlier PITR or a promotion),
     * "current" (the backup's own timeline) or a timeline number. A backup is chosen (and a
     * named one accepted) only when the target timeline's history passes through it. */
    const char *target_timeline;
    bool overwrite; /* replace a non-empty pgdata */
    /* What pgdata must not hold (--overwrite deletes it) nor lie inside: BACKUP_DIR (its temp
     * is cleaned up), and the env file restore_command reads; NULL: not checked. The local
     * repository is always checked. */
    const char *backup_dir, *env_file;
    /* restore_command, whole (the CLI builds it: this program's path, --env-file, wal get
     * %f %p). Never holds a secret. */
    const char *restore_command;
    bool start;      /* start PostgreSQL (pg_ctl) and wait for the target */
    int port;        /* with start */
    const char *url; /* with start: POSTGRES_URL, whose user and password are used to ask
                        the started server (through its socket in pgdata) how far it got */
    const char *password;
    int wait_seconds; /* with start: give up waiting after this long (0: 600) */
    int threads;
    caris_progress_fn progress;
    void *ctx;
    const struct caris_op *op;
};

struct phys_restore_result {
    bool ran;
    char *backup_id;
    uint64_t files, bytes;
    int64_t duration_ms;
    bool started; /* the server was started and reached the target */
    char *state;  /* "promoted", "paused", "shut down" (started); "stopped": promoted before the
                   * archive's end, then stopped (an error); else NULL */
    char *reached_time; /* pg_last_xact_replay_timestamp() when known, else NULL */
    char *log_path;     /* the started server's log */
    json_t *summary;    /* the backup's summary (borrowed copy) */
    /* said as warnings (a --to-lsn at or past the WAL archive's end, not started: the server
     * reaches it only if the rest is archived first): the CLI then exits 3 */
    json_t *warnings;
    /* without a target: the last WAL segment archived on the timeline recovery follows, and
     * the LSN it starts at (a recovery that promotes at or before that LSN ended early), when
     * the archive has one; else NULL */
    char *archive_last;
    uint64_t archive_last_lsn;
};
/* Writes the data directory of a physical backup and its recovery settings; with start,
 * starts the server and waits until recovery reached the target. pgdata is written in a
 * directory beside it, every file checked against its SHA-256, then renamed into place: a
 * failure leaves no half-written pgdata. ERR_USAGE: pgdata not empty without overwrite;
 * ERR_NOT_FOUND: no physical backup fits; ERR_DAMAGE: a file failed its check. */
int caris_phys_restore(struct repo *r, const struct phys_restore_opts *o,
                       struct phys_restore_result *res, struct err *e);
void phys_restore_result_free(struct phys_restore_result *res);
json_t *phys_restore_result_to_json(const struct phys_restore_result *res);

/* The seed's recoveryService.pointInTimeRecovery({targetTime}): caris_phys_restore with
 * the time target and the latest backup before it. */
struct caris_pitr_request {
    const char *targetTime; /* ISO 8601 with zone, as PostgreSQL's recovery_target_time takes */
    const char *pgdata;
    const char *restore_command;
    const char *backup_dir, *env_file; /* as in phys_restore_opts */
    bool overwrite, start;
    int port;
    const char *url, *password;
    const struct caris_op *op;
};
int caris_recovery_point_in_time(struct repo *r, const struct caris_pitr_request *req,
                                 struct phys_restore_result *res, struct err *e);

/* A recovery target time ("YYYY-MM-DD[T ]HH:MM[:SS[.frac]]" with Z, +HH[:MM] or nothing:
 * local time in tz) as nanoseconds, the fraction dropped. */
int phys_time_parse(const char *s, const char *tz, int64_t *ns, struct err *e);
/* 64-bit LSN -> "0/3000028" (the other way: caris_lsn_parse, caris/walwindow.h). */
/* A replication connection (replication=true added to t) to the server of t, with the hints
 * for the usual refusals (pg_hba.conf, REPLICATION attribute); NULL with e. wal receive uses
 * it too. */
struct pgsrc_target;
struct pg_conn *caris_phys_replication_connect(struct pgsrc_target *t, struct err *e);
void phys_lsn_format(uint64_t lsn, char *out, size_t n);

#endif

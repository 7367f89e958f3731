/* The seed's services, as C functions shared by the CLI, the API and the tests.
 *
 *   fileBackupService.createFullBackup()        -> caris_files_backup_full()
 *   fileBackupService.createIncrementalBackup() -> caris_files_backup_incremental()
 *   databaseBackupService.listBackups()         -> caris_backup_list()
 *   databaseBackupService.verifyBackup(id)      -> caris_verify()
 *   recoveryService.restoreFiles({backupId})    -> caris_restore_files()
 *
 * Each operation fills a typed result; its one *_to_json() gives the fields the CLI's --json
 * and the API print. */
#ifndef CARIS_BACKUP_H
#define CARIS_BACKUP_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/err.h"
#include "caris/op.h"
#include "caris/repo.h"

/* Return value of operations that can complete with warnings. */
#define CARIS_DONE 0
#define CARIS_DONE_WARNINGS 1

struct caris_progress {
    const char *phase; /* "backup", "restore", "verify" */
    uint64_t files_done;
    uint64_t bytes_done;
    uint64_t bytes_total; /* 0 when unknown */
    int64_t elapsed_ns;
};
typedef void (*caris_progress_fn)(void *ctx, const struct caris_progress *p);

struct files_backup_opts {
    const char *const *paths; /* directories or files to back up */
    size_t npaths;
    const char *const *excludes; /* NULL-terminated fnmatch patterns, or NULL */
    int threads;                 /* workers; 0 = number of CPUs */
    caris_progress_fn progress;  /* NULL for none */
    bool estimate_total;         /* scan sizes first so progress can show an ETA */
    void *ctx;
    int64_t time_ns; /* record this as the backup's time (`--time`; not in the future); 0 = now */
    /* Its cancel flag stops the backup at the next file or buffer (nothing is committed, the
     * lock released; the error says "cancelled"); may be NULL. */
    const struct caris_op *op;
    /* The local cache directory (BACKUP_DIR/metadata/cache), where the file table of the
     * latest backup of these paths is kept (it makes a backup of unchanged files one stat and
     * one lookup per file); NULL: none, every incremental backup reads the previous manifest */
    const char *cache_dir;
    /* NULL, or the reading ahead caris_files_prewalk_start began: the backup takes its walk over
     * when it is of the backup's first path, with the same excludes and scanner count */
    struct caris_files_prewalk *prewalk;
};

/* Reading ahead while the repository is opened. The CLI opens it after this: the key
 * derivation keeps one core busy for about 0.1 s, and the directories of the first path are
 * read on the other meanwhile (as far ahead as a walk reads). NULL when there is nothing to
 * read ahead: no path, a first path that cannot be resolved (the backup says so), or a size
 * estimate to make first. The backup's start time is then when the reading began. Free it
 * after the backup (caris_files_prewalk_free stops what was not taken over; NULL: nothing). */
struct caris_files_prewalk;
struct caris_files_prewalk *caris_files_prewalk_start(const struct files_backup_opts *o);
void caris_files_prewalk_free(struct caris_files_prewalk *p);

/* A committed backup (files or database). The typed fields are read from its summary, the
 * document committed to the repository (docs/REPOSITORY-FORMAT.md, "Snapshots"). */
struct caris_backup_result {
    char *id, *kind, *mode; /* kind "files" or "database"; mode "full" or "incremental" */
    bool warnings;          /* completed with warnings (status "warnings") */
    char *parent;           /* the backup an incremental one is based on, else NULL */
    int64_t duration_ms;
    uint64_t bytes_read, bytes_added, bytes_stored;
    uint64_t files, files_unchanged, dirs; /* file backups */
    char *database, *server_version;       /* database backups (else NULL) */
    size_t tables;
    uint64_t rows;
    json_t *summary; /* the summary itself, with the internal "_file" (the snapshot's name) */
};
void caris_backup_result_free(struct caris_backup_result *res);
/* The summary as `list` shows it (without internal fields); NULL when there is none. */
json_t *caris_backup_result_to_json(const struct caris_backup_result *res);

/* Backs up the paths. Returns CARIS_DONE, CARIS_DONE_WARNINGS (some files could not be read
 * or changed while read: listed in the summary's "warnings"), or -1 with e set (nothing was
 * committed; res then empty). res: caris_backup_result_free. */
int caris_files_backup_full(struct repo *r, const struct files_backup_opts *o,
                            struct caris_backup_result *res, struct err *e);
/* As above, reading only the files whose size, mtime, ctime or inode differ from the most
 * recent backup of the same paths; falls back to a full backup when there is none. */
int caris_files_backup_incremental(struct repo *r, const struct files_backup_opts *o,
                                   struct caris_backup_result *res, struct err *e);

/* Whether a backup of paths would refuse them as nested (one inside another, after realpath
 * as the backup resolves them; a path that does not exist yet is judged on its text, without
 * trailing slashes): 0, or -1 with e (ERR_USAGE, naming the pair). */
int caris_files_roots_check(const char *const *paths, size_t n, struct err *e);

/* BACKUP_FILES_PATHS (list) split at its ':' separators, empty parts left out: a
 * NULL-terminated array of *n copies, freed with caris_files_paths_free. */
char **caris_files_paths_split(const char *list, size_t *n);
void caris_files_paths_free(char **paths);

/* Summaries of all backups, oldest first. kind: "files", "database" or NULL for all. */
json_t *caris_backup_list(struct repo *r, const char *kind, struct err *e);
/* As caris_backup_list; and the snapshots that cannot be read (whatever their kind, which is
 * unknown) in *damaged: [{"object": "snapshots/<name>", "error", "id"?}] (the id when the
 * state record knows it). damaged may be NULL. */
json_t *caris_backup_list_damaged(struct repo *r, const char *kind, json_t **damaged,
                                  struct err *e);
/* The list as front ends show it: caris_backup_list with each backup's lastTestRestore,
 * lastVerification ("status": "damaged" and "damage": its error when that failed) and
 * warnings (each with its "fullPath"); an entry {"id" (null when unknown), "file",
 * "status": "damaged", "damage"} for each snapshot file that cannot be read (whatever kind was
 * asked); and, from state (repo_state_audit's report, may be NULL), the state record's findings:
 * "record" on every backup ("recorded", "unrecorded", "replayed", "removing", or "none" before the
 * record began), an entry {"id", "record": "missing", "status": "missing"} for each backup the
 * record expects whose snapshot is gone, and "repositoryRolledBack": true when the repository went
 * back in time. The internal field _file is left out. */
json_t *caris_backup_list_report(struct repo *r, const char *kind, json_t *state, struct err *e);

/* One line of the list, typed (read from the entry caris_backup_list_report gives). */
struct caris_list_entry {
    char *id;
    bool missing; /* in the state record, but its snapshot is gone: only id is set */
    char *kind, *mode, *started, *status;
    char *record; /* "recorded", "unrecorded", "replayed", "removing", "none"; NULL without state */
    char *file, *damage; /* a snapshot file that cannot be read (id may then be NULL): its
                            object name and the error; NULL otherwise */
    int64_t duration_ms;
    uint64_t files, bytes_read, bytes_added;
};
struct caris_list_result {
    struct caris_list_entry *v;
    size_t n;
    json_t *entries; /* caris_backup_list_report's array */
};
/* caris_backup_list_report as a typed result: caris_list_result_free. */
int caris_list(struct repo *r, const char *kind, json_t *state, struct caris_list_result *res,
               struct err *e);
void caris_list_result_free(struct caris_list_result *res);
/* The entries, as caris_backup_list_report gives them. */
json_t *caris_list_result_to_json(const struct caris_list_result *res);

struct caris_wal_listing;
struct verify_opts {
    caris_progress_fn progress;
    void *ctx;
    int threads;
    /* Its cancel flag stops the verification at the next file or chunk (the error says
     * "cancelled"; nothing is changed); its progress hears ("verify", bytes, total); may be
     * NULL. */
    const struct caris_op *op;
    /* the WAL archive's records, listed by the first physical backup verified and kept for
     * the next ones (caris_backup_verify_all); NULL: listed for each */
    struct caris_wal_listing *wal_listing;
};
/* What reading the files of a backup found (restore, verify): counts, and per-path findings
 * as JSON arrays of {"path", "error"} (a path that is not UTF-8 is given in base64; for a
 * database backup the path is the stream's name). */
struct caris_read_report {
    uint64_t files, dirs, bytes;
    bool wal;                      /* a physical backup's WAL was read: the counts below */
    uint64_t wal_files, wal_bytes; /* its WAL files read back (caris_wal_base_records) */
    size_t wal_missing;            /* of the errors, its WAL segments the archive does not hold */
    json_t *errors;                /* damaged files or streams */
    json_t *warnings;              /* files not restored (they could not be read at backup time) */
};

struct caris_verify_result {
    bool ran;        /* the backup was found and read: the fields below say what was found */
    char *backup_id; /* as asked */
    char *kind;      /* NULL for a file backup; else its kind (then files counts streams) */
    bool valid;
    struct caris_read_report read;
};
/* Reads every blob the backup needs (authentication tag, chunk id) and checks every file's
 * SHA-256; for a physical backup also the WAL it needs to become consistent, from the WAL
 * archive (a file of it missing or damaged: damaged, "WAL <name>" in the errors). Returns 0
 * when valid, -1 with e (ERR_DAMAGE when damaged, res->ran — also when the backup's snapshot
 * file or entry list cannot be read: then an error with a null path; other
 * codes, with res->ran false, when the check could not run, a read failed (I/O, the storage
 * unreachable: not judged) or it was cancelled). A verification that ran is recorded
 * (caris_verification_record), so that `list` shows a backup found damaged as "damaged".
 * res: caris_verify_result_free. */
int caris_verify(struct repo *r, const char *backup_id, const struct verify_opts *o,
                 struct caris_verify_result *res, struct err *e);
void caris_verify_result_free(struct caris_verify_result *res);
/* {"backupId", "valid", "files", "bytes", "errors", and for a file backup "dirs" and
 * "warnings", for others "kind", for a physical backup "walFiles" and "walBytes"}; NULL when the
 * verification did not run (!res->ran). */
json_t *caris_verify_result_to_json(const struct caris_verify_result *res);
/* Verifies every backup of the repository, oldest first, whatever the others gave (a backup
 * whose entries are damaged or whose check cannot run does not stop the others; a cancel
 * does), then reports as damaged the backups that cannot be verified at all: snapshot files
 * that cannot be read (named by their backup id when the state record or this host's copy of
 * it knows it, else by their file) and backups the state record expects whose snapshot file
 * is gone. each (may be NULL) is told of every backup when its verification ends: rc, its
 * result and the error. Returns 0 when all are valid; otherwise -1 with e: the first damage
 * found (ERR_DAMAGE), else the first failure. */
typedef void (*caris_verify_each_fn)(void *ctx, const char *backup_id, int rc,
                                     const struct caris_verify_result *res, const struct err *e);
int caris_backup_verify_all(struct repo *r, const struct verify_opts *o, caris_verify_each_fn each,
                            void *each_ctx, struct err *e);

/* Records the outcome of a verification in the repository (records/verify: {"backupId",
 * "time", "ok", "bytesChecked", "error"}), so that `list` shows it as "lastVerification".
 * A record that cannot be written is logged to op (a warning), never an error. */
void caris_verification_record(struct repo *r, const char *backup_id, bool ok,
                               uint64_t bytes_checked, const struct err *failure,
                               const struct caris_op *op);
/* Records, for every backup a repository check found damaged (repo_check's report: the
 * "backups" of its errors), a failed verification ({"ok": false, "error": "check[ --read-data]:
 * <object>: <error>"}), so that `list` shows those backups as damaged. */
void caris_check_record(struct repo *r, json_t *report, const struct caris_op *op);
/* Records the blobs r failed to open since the last call (repo_bad_blobs_save), with by
 * ("verify", "check --read-data"), so that the next backup stores them again instead of
 * deduplicating against the damaged copies. Logged to op: how many, or why it failed. The two
 * functions above call it. */
void caris_bad_blobs_record(struct repo *r, const char *by, const struct caris_op *op);
/* The latest verification record of each backup: {"<backupId>": record, ...}. A record that
 * cannot be read is a warning (repo_warn); the _n variant counts them in *unreadable. */
json_t *caris_last_verifications(struct repo *r, struct err *e);
json_t *caris_last_verifications_n(struct repo *r, size_t *unreadable, struct err *e);
/* Whether a backup is known to be damaged, from its latest verification record (verif) and its
 * latest test-restore record (test), either NULL: the verification failed, or the test restore
 * found damage ("code": "damage": a chunk that does not read back, or row counts that differ
 * from the backup's) and no verification passed after it. A test restore that failed for
 * another reason (the scratch server, its disk) says nothing about the backup. *error (may be
 * NULL): the record's "error"; *by: "verification" or "test restore". */
bool caris_backup_known_damaged(json_t *verif, json_t *test, json_t **error, const char **by);

struct files_restore_opts {
    const char *backup_id;
    const char *target;
    const char *const *includes; /* restore only these paths (and below); NULL = all */
    size_t nincludes;
    bool overwrite; /* allow a non-empty target */
    /* BACKUP_DIR (NULL: not checked): a restore whose destination holds it or lies inside it
     * is refused, as one that holds the repository or lies inside it always is */
    const char *backup_dir;
    const char *env_file; /* the env file read (NULL: none): refused as BACKUP_DIR is */
    /* A target that cannot take them (vfat, exFAT, some NFS exports): no extended attributes
     * (ACLs included), owner and group the restoring user's. Otherwise each one refused fails
     * the restore. */
    bool no_xattrs, no_owner;
    int threads;
    caris_progress_fn progress;
    void *ctx;
    /* Its cancel flag stops the restore at the next file or chunk (the error says
     * "cancelled"): every file then in the target is complete and verified, no temporary file
     * is left, the lock is released. Its progress hears ("restore", bytes, total). May be
     * NULL. */
    const struct caris_op *op;
};
struct caris_files_restore_result {
    bool ran; /* the backup was found and its restore begun: the fields below are filled */
    char *backup_id, *target;
    bool ok; /* it completed (CARIS_DONE or CARIS_DONE_WARNINGS) */
    struct caris_read_report read;
};
/* Restores a file backup into target: each root at target/<root path without leading '/'>.
 * Every file's SHA-256 is checked before it is renamed into place. Returns CARIS_DONE,
 * CARIS_DONE_WARNINGS, or -1 with e. res: caris_files_restore_result_free. */
int caris_restore_files(struct repo *r, const struct files_restore_opts *o,
                        struct caris_files_restore_result *res, struct err *e);
void caris_files_restore_result_free(struct caris_files_restore_result *res);
/* {"backupId", "target", "files", "dirs", "bytes", "errors", "warnings", "ok"}; NULL when the
 * restore did not begin (!res->ran). */
json_t *caris_files_restore_result_to_json(const struct caris_files_restore_result *res);

/* Backup ids: "<prefix>_<full|incremental>_YYYY-MM-DDTHH-MM-SS" (UTC), e.g.
 * file_full_2024-01-15T03-00-00 or caris_full_... for the database. */
void caris_backup_id_format(const char *prefix, const char *mode, int64_t ns, char *out, size_t n);

#endif

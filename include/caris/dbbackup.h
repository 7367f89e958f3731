/* The seed's database services: logical backups of a PostgreSQL database and their
 * restores, as C functions shared by the CLI, the API and the tests.
 *
 *   databaseBackupService.createFullBackup({compress})  -> caris_db_backup_full()
 *   databaseBackupService.createIncrementalBackup()     -> caris_db_backup_incremental()
 *   recoveryService.restoreDatabase({backupId, ...})     -> caris_restore_database()
 *   recoveryService.testRestore(id)                      -> caris_test_restore()
 *
 * (listBackups and verifyBackup are caris_backup_list and caris_verify in backup.h.)
 * The contract these follow, field by field, is docs/DATABASE-CONTRACT.md. */
#ifndef CARIS_DBBACKUP_H
#define CARIS_DBBACKUP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "caris/backup.h"
#include "caris/err.h"
#include "caris/op.h"
#include "caris/repo.h"

struct db_backup_opts {
    const char *url;      /* POSTGRES_URL: libpq URI or key=value string */
    const char *password; /* used when url has none (PGPASSWORD); may be NULL */
    bool no_compress;     /* store chunks uncompressed (this backup only); still encrypted */
    int threads;          /* workers; 0 = number of CPUs */
    caris_progress_fn progress;
    void *ctx;
    int64_t time_ns; /* record this as the backup's time (`--time`; not in the future); 0 = now */
    /* Its cancel flag stops the backup (pg_dump is stopped, nothing is committed, the lock
     * released; the error says "cancelled"); may be NULL. */
    const struct caris_op *op;
};

/* Streams `pg_dump -Fc -Z0 --snapshot=...` (no copy on disk) and `pg_dumpall
 * --globals-only --no-role-passwords` into the repository, with the server's version, the
 * database's size and encoding and every table's exact row count taken in the dump's
 * snapshot. Returns CARIS_DONE, CARIS_DONE_WARNINGS (the globals could not be dumped: the
 * database dump is complete), or -1 with e and nothing committed. *summary: as `list`. */
int caris_db_backup_full(struct repo *r, const struct db_backup_opts *o,
                         struct caris_backup_result *res, struct err *e);
/* The same, recording as "parent" the latest backup of the same database. The dump is read
 * whole either way; only the chunks that changed are added to the repository. */
int caris_db_backup_incremental(struct repo *r, const struct db_backup_opts *o,
                                struct caris_backup_result *res, struct err *e);
/* What backup_full/_incremental would do, without doing it (`backup database --dry-run`):
 * logs in to the database, finds pg_dump and pg_dumpall of a fitting version, checks that
 * every table can be read, and for an incremental finds the parent. Nothing is locked,
 * written or committed. *plan: {"database", "server_version", "pg_dump", "pg_dump_version",
 * "tables", "database_size", "mode": "full"|"incremental" (an incremental without a parent is
 * a full backup), "parent": id or null}. r may be NULL (no repository yet: no parent). 0, or
 * -1 with e: what a real run would fail on. */
int caris_db_backup_plan(struct repo *r, const struct db_backup_opts *o, bool incremental,
                         json_t **plan, struct err *e);

struct db_restore_opts {
    const char *backup_id;
    const char *url;        /* POSTGRES_URL: the default target */
    const char *password;   /* PGPASSWORD; may be NULL */
    const char *target_url; /* NULL: url. Its password, when it has none: url's when both
                               name the same server and user, else password */
    /* target_url came from someone who is not given the passwords (an API request): it gets
     * url's password, or password, only when it names url's server and user; else none. */
    bool target_untrusted;
    bool clean;                /* drop the backup's objects before recreating them */
    bool create;               /* create the target database (it must not exist) */
    const char *const *tables; /* restore only these tables ("name" or "schema.name") */
    size_t ntables;
    const char *const *schemas; /* restore only these schemas */
    size_t nschemas;
    int jobs;             /* > 1: parallel pg_restore from a staged copy under temp_dir */
    bool dry_run;         /* change nothing on the target: test-restore into a scratch database */
    bool verify;          /* compare row counts afterwards */
    const char *temp_dir; /* BACKUP_DIR/temp */
    int threads;
    caris_progress_fn progress;
    void *ctx;
    /* Called with the plan (array of strings) before anything changes. */
    void (*on_plan)(void *ctx, json_t *plan);
    void *plan_ctx;
    /* Its cancel flag stops the restore (pg_restore is stopped: in one transaction nothing
     * changes; with jobs > 1 the target may be partly restored, as the error says); the
     * error says "cancelled". Progress ("restore", bytes, total), warnings to its log. May be
     * NULL. */
    const struct caris_op *op;
};

enum db_scratch {
    DB_SCRATCH_DATABASE, /* caris_test_<random> on the POSTGRES_URL server */
    DB_SCRATCH_LOCAL,    /* a throwaway cluster (initdb) under temp_dir */
};

/* A test restore's outcome (test-restore, restore --dry-run). */
struct caris_test_restore_result {
    bool ran; /* the backup was found and the test begun: the fields below are filled
                 (scratch_name is empty when no scratch database could be made) */
    char *backup_id;
    bool ok;
    enum db_scratch scratch;
    char scratch_name[64];
    int64_t restore_ms, verify_ms;
    json_t *tables; /* [{"schema", "name", "expected", "actual" (null: not counted)}] */
    char *error;    /* why it failed (NULL when ok) */
};

struct caris_db_restore_result {
    bool ran; /* the backup was found and the plan begun: the fields below are filled */
    char *backup_id;
    json_t *target; /* {"host", "port", "database"} */
    bool dry_run;
    json_t *plan;   /* [step, ...] */
    json_t *tables; /* as in caris_test_restore_result */
    bool verified, ok;
    int64_t duration_ms;
    bool tested; /* dry run: test holds the scratch restore's outcome */
    struct caris_test_restore_result test;
    /* dry run of some tables or schemas (--table, --schema): the pass of a part is not a test
     * restore of the backup, so it is not recorded (a failure, which found damage, is) */
    bool partial, recorded;
    json_t *warnings; /* [text, ...]: --create, settings of the database not applied */
    char *error;
};
/* Restores a database backup through pg_restore. Returns CARIS_DONE, CARIS_DONE_WARNINGS
 * (--create: settings of the backup's database that could not be applied to the new one, in
 * res->warnings), or -1 with e. res (also on failure when the restore got that far, res->ran):
 * caris_db_restore_result_free. Errors: ERR_NOT_FOUND (no such backup or
 * table), ERR_USAGE (the target is not empty and neither --clean nor --create, or --create
 * and it exists), ERR_DATABASE, ERR_DAMAGE (the backup's data is damaged, or --verify found
 * different row counts). */
int caris_restore_database(struct repo *r, const struct db_restore_opts *o,
                           struct caris_db_restore_result *res, struct err *e);
/* Whether a target URL from someone not given the passwords (target_untrusted) is one
 * caris_restore_database takes: parsed, and naming no libpq service or password file (they
 * would give it a password of this server's). 0, or -1 with e (ERR_CONFIG: not a URL,
 * ERR_USAGE). */
int caris_restore_target_check(const char *target_url, struct err *e);
void caris_db_restore_result_free(struct caris_db_restore_result *res);
/* {"backupId", "target", "dryRun", "plan", "tables", "verified", "ok", "duration_ms",
 * "testRestore": {"ok", "scratch", "scratch_name", "restore_ms", "verify_ms", "partial",
 * "recorded"} (dry run),
 * "warnings": [text, ...], "error" (when not ok)}; NULL when !res->ran. */
json_t *caris_db_restore_result_to_json(const struct caris_db_restore_result *res);

struct db_test_restore_opts {
    const char *backup_id;
    const char *url;      /* POSTGRES_URL (for DB_SCRATCH_DATABASE) */
    const char *password; /* PGPASSWORD; may be NULL */
    enum db_scratch scratch;
    const char *temp_dir; /* BACKUP_DIR/temp */
    int threads;
    caris_progress_fn progress;
    void *ctx;
    const struct caris_op *op; /* as db_restore_opts's; the scratch database is dropped */
};

/* Restores the backup into a scratch database, compares every table's row count, drops the
 * scratch database (also on failure) and records the result in the repository
 * (records/test-restore). Returns 0 when ok; -1 with e otherwise (ERR_DAMAGE when row
 * counts differ). res: caris_test_restore_result_free. */
int caris_test_restore(struct repo *r, const struct db_test_restore_opts *o,
                       struct caris_test_restore_result *res, struct err *e);
void caris_test_restore_result_free(struct caris_test_restore_result *res);
/* {"backupId", "ok", "scratch", "scratch_name", "restore_ms", "verify_ms", "tables", "error"
 * (when not ok)}; NULL when !res->ran. */
json_t *caris_test_restore_result_to_json(const struct caris_test_restore_result *res);

/* The latest test-restore record of each backup: {"<backupId>": {"backupId", "time", "ok",
 * "scratch", "restore_ms", "verify_ms"}, ...}. For `list` ("lastTestRestore"). */
json_t *caris_db_last_test_restores(struct repo *r, struct err *e);
/* The same, counting the test-restore records that cannot be read in *unreadable. */
json_t *caris_db_last_test_restores_n(struct repo *r, size_t *unreadable, struct err *e);

#endif

/* Stubs for the symbols that the fuzzed sources reference but the harnesses never reach
 * (repository, streams, operations, storage dispatch), so that a harness links only the
 * sources it exercises. Each aborts: reaching one is a harness bug. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "caris/backup.h"
#include "caris/dbbackup.h"
#include "caris/lazylib.h"
#include "caris/op.h"
#include "caris/repo.h"
#include "caris/storage.h"
#include "caris/stream.h"

static void unreachable(const char *f)
{
    fprintf(stderr, "fuzz stub %s reached\n", f);
    abort();
}

json_t *repo_record_list(struct repo *r, const char *kind, json_t **damaged, struct err *e)
{
    (void)r, (void)kind, (void)damaged, (void)e;
    unreachable(__func__);
    return NULL;
}

json_t *repo_record_list_named(struct repo *r, const char *kind, json_t **damaged, struct err *e)
{
    (void)r, (void)kind, (void)damaged, (void)e;
    unreachable(__func__);
    return NULL;
}

int repo_record_remove(struct repo *r, const char *object, struct err *e)
{
    (void)r, (void)object, (void)e;
    unreachable(__func__);
    return -1;
}

json_t *repo_snapshot_list(struct repo *r, json_t **damaged, struct err *e)
{
    (void)r, (void)damaged, (void)e;
    unreachable(__func__);
    return NULL;
}

int repo_state_audit(struct repo *r, json_t **report, struct err *e)
{
    (void)r, (void)report, (void)e;
    unreachable(__func__);
    return -1;
}

int repo_snapshots_remove(struct repo *r, const char *const *names, size_t n, struct err *e)
{
    (void)r, (void)names, (void)n, (void)e;
    unreachable(__func__);
    return -1;
}

int repo_lock(struct repo *r, bool exclusive, const char *operation, struct err *e)
{
    (void)r, (void)exclusive, (void)operation, (void)e;
    unreachable(__func__);
    return -1;
}

void repo_unlock(struct repo *r)
{
    (void)r;
    unreachable(__func__);
}

json_t *caris_backup_list(struct repo *r, const char *kind, struct err *e)
{
    (void)r, (void)kind, (void)e;
    unreachable(__func__);
    return NULL;
}

json_t *caris_backup_list_damaged(struct repo *r, const char *kind, json_t **damaged, struct err *e)
{
    (void)r, (void)kind, (void)damaged, (void)e;
    unreachable(__func__);
    return NULL;
}

json_t *caris_last_verifications(struct repo *r, struct err *e)
{
    (void)r, (void)e;
    unreachable(__func__);
    return NULL;
}

json_t *caris_db_last_test_restores(struct repo *r, struct err *e)
{
    (void)r, (void)e;
    unreachable(__func__);
    return NULL;
}

json_t *caris_last_verifications_n(struct repo *r, size_t *unreadable, struct err *e)
{
    (void)r, (void)unreadable, (void)e;
    unreachable(__func__);
    return NULL;
}

json_t *caris_db_last_test_restores_n(struct repo *r, size_t *unreadable, struct err *e)
{
    (void)r, (void)unreadable, (void)e;
    unreachable(__func__);
    return NULL;
}

bool caris_backup_known_damaged(json_t *verif, json_t *test, json_t **error, const char **by)
{
    (void)verif, (void)test, (void)error, (void)by;
    unreachable(__func__);
    return false;
}

json_t *repo_snapshot_damaged_find(json_t *damaged, const char *name)
{
    (void)damaged, (void)name;
    unreachable(__func__);
    return NULL;
}

void repo_snapshots_drop_named(json_t *list, json_t *damaged, const char *const *names, size_t n)
{
    (void)list, (void)damaged, (void)names, (void)n;
    unreachable(__func__);
}

int stream_restore_buf(struct repo *r, json_t *chunks, const uint8_t sha256[32], size_t max,
                       struct buf *out, struct err *e)
{
    (void)r, (void)chunks, (void)sha256, (void)max, (void)out, (void)e;
    unreachable(__func__);
    return -1;
}

bool caris_op_cancelled(const struct caris_op *op)
{
    (void)op;
    unreachable(__func__);
    return true;
}

void caris_op_log(const struct caris_op *op, enum log_level level, const char *fmt, ...)
{
    (void)op, (void)level, (void)fmt;
    unreachable(__func__);
}

int storage_get(struct storage *s, const char *name, size_t max, struct buf *out, struct err *e)
{
    (void)s, (void)name, (void)max, (void)out, (void)e;
    unreachable(__func__);
    return -1;
}

bool storage_thread_copies_allowed(void)
{
    return true; /* (storage.c's per-thread switch: never turned off here) */
}

/* src/storage/s3.c loads libcurl before its first use (caris/lazylib.h); the harnesses that
 * include it link libcurl, or define the functions they reach, themselves */
int lazylib_load(enum lazylib lib, struct err *e)
{
    (void)lib, (void)e;
    return 0;
}

/* Waiting for a base backup's WAL to reach the archive (caris/wal.h): the segments from the
 * backup's start LSN to its stop LSN must be in this repository's WAL index before the backup
 * is reported done, or the backup cannot be restored from this repository. The check in the
 * spirit of pgBackRest's archive-check: the server reporting "archived" (BASE_BACKUP's WAIT)
 * only says archive_command succeeded, not that it archived here. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "caris/core.h"
#include "caris/op.h"
#include "caris/wal.h"
#include "caris/walwindow.h"

/* The first segment of first..last not among the records in cache ({object: record}), or
 * false when all are there. */
static bool first_missing(json_t *cache, uint32_t tli, uint64_t first, uint64_t last,
                          int64_t segsize, char missing[25])
{
    json_t *names = json_object();
    const char *k;
    json_t *x;
    json_object_foreach(cache, k, x)
    {
        const char *n = json_string_value(json_object_get(x, "name"));
        const char *kind = json_string_value(json_object_get(x, "kind"));
        if (n && kind && strcmp(kind, "segment") == 0)
            json_object_set_new(names, n, json_true());
    }
    bool found = false;
    for (uint64_t s = first; s <= last && !found; s++) {
        caris_wal_segment_name(tli, s, segsize, missing);
        found = json_object_get(names, missing) == NULL;
    }
    json_decref(names);
    return found;
}

int caris_wal_await(struct repo *r, uint32_t tli, uint64_t start_lsn, uint64_t stop_lsn,
                    int64_t segsize, int timeout_s, const struct caris_op *op,
                    struct caris_wal_await_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    if (segsize < (1 << 20) || (segsize & (segsize - 1)) != 0 || tli == 0 || stop_lsn < start_lsn)
        return err_set(e, ERR_DATABASE, NULL,
                       "cannot check the WAL archive: segment size %" PRId64
                       ", timeline %u or LSN range is not valid",
                       segsize, tli);
    /* the stop LSN's own segment when it ends inside one; the one before when it is exactly
     * at a boundary (the backup's last record then ended in the previous segment) */
    uint64_t first = start_lsn / (uint64_t)segsize;
    uint64_t last = stop_lsn > start_lsn ? (stop_lsn - 1) / (uint64_t)segsize : first;
    res->segments = last - first + 1;
    caris_wal_segment_name(tli, first, segsize, res->first);
    caris_wal_segment_name(tli, last, segsize, res->last);
    int64_t t0 = time_mono_ns();
    int64_t deadline = t0 + (int64_t)(timeout_s > 0 ? timeout_s : 60) * 1000000000LL;
    json_t *cache = json_object();
    int rc = -1;
    for (;;) {
        json_t *present = NULL, *damaged = NULL;
        json_t *fresh = repo_record_list_except(r, "wal", cache, &present, &damaged, e);
        if (!fresh)
            break;
        size_t i;
        json_t *x;
        json_array_foreach(fresh, i, x)
        {
            const char *obj = json_string_value(json_object_get(x, "_object"));
            if (obj)
                json_object_set(cache, obj, x);
        }
        json_decref(fresh);
        json_decref(present);
        json_decref(damaged); /* an unreadable record counts as missing: reported below */
        if (!first_missing(cache, tli, first, last, segsize, res->missing)) {
            res->missing[0] = '\0';
            rc = 0;
            break;
        }
        if (time_mono_ns() > deadline) {
            err_set(e, ERR_DATABASE,
                    "is archive_command set to `caris-backup --env-file F wal push %p` for this "
                    "repository (the same BACKUP_DIR)? pg_stat_archiver on the server shows "
                    "failed pushes; --archive-timeout S waits longer",
                    "WAL segment %s (of %s..%s, the WAL the base backup needs) did not reach "
                    "this repository's WAL archive within %d s: the backup could not be restored",
                    res->missing, res->first, res->last, timeout_s > 0 ? timeout_s : 60);
            break;
        }
        if (caris_op_check(op, "nothing was committed", e) != 0)
            break;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    res->waited_ms = (time_mono_ns() - t0) / 1000000;
    json_decref(cache);
    return rc;
}

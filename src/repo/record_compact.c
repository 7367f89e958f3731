/* Compaction of records: many small record files of one kind folded into a few compacted
 * records (docs/REPOSITORY-FORMAT.md, "Records"). Verifications and test restores add one
 * record per backup and run; without compaction `list`, which reads them all, slows down
 * without bound. */
#include "internal.h"

#include "caris/core.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Test-only fault injection: with CARIS_TEST_RECORD_COMPACT_CRASH_AT=k in the environment,
 * compaction ends the process abruptly (as kill -9 would) right after its k-th durable step
 * (a compacted record written, or a folded file deleted). */
static void durable_step(long *steps)
{
    const char *v = getenv("CARIS_TEST_RECORD_COMPACT_CRASH_AT");
    long at = v && *v ? strtol(v, NULL, 10) : -1;
    if (++*steps == at)
        _exit(137);
}

int repo_record_cmp(const json_t *a, const json_t *b)
{
    json_int_t sa = json_integer_value(json_object_get(a, "seq"));
    json_int_t sb = json_integer_value(json_object_get(b, "seq"));
    if (sa != sb)
        return sa > sb ? 1 : -1;
    const char *x = json_string_value(json_object_get(a, "time")) ?: "";
    const char *y = json_string_value(json_object_get(b, "time")) ?: "";
    int c = strcmp(x, y);
    return c > 0 ? 1 : c < 0 ? -1 : 0;
}

int repo_record_add_sequenced(struct repo *r, const char *kind, json_t *record, struct err *e)
{
    const char *id = json_string_value(json_object_get(record, "backupId"));
    json_int_t top = 0;
    struct err le = ERR_INIT;
    json_t *recs = id ? repo_record_list(r, kind, NULL, &le) : NULL;
    size_t i;
    json_t *x;
    json_array_foreach(recs, i, x)
    {
        json_int_t s = json_integer_value(json_object_get(x, "seq"));
        if (s > top && strcmp(json_string_value(json_object_get(x, "backupId")) ?: "", id) == 0)
            top = s;
    }
    json_decref(recs);
    json_object_set_new(record, "seq", json_integer(top + 1));
    return repo_record_add(r, kind, record, e);
}

/* Newest first; records without a time last. */
static int cmp_newest(const void *a, const void *b)
{
    return repo_record_cmp(*(json_t *const *)b, *(json_t *const *)a);
}

/* The records to keep: per backup its newest `keep` and its newest failed one; every record of
 * a backup not in live_ids (when given) goes; records that name no backup all stay. */
static json_t *choose_kept(json_t *recs, const json_t *live_ids, unsigned keep)
{
    json_t *by_id = json_object(), *kept = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(recs, i, x)
    {
        const char *id = json_string_value(json_object_get(x, "backupId"));
        if (!id) {
            json_array_append(kept, x);
            continue;
        }
        if (live_ids && !json_object_get(live_ids, id))
            continue;
        json_t *g = json_object_get(by_id, id);
        if (!g) {
            g = json_array();
            json_object_set_new(by_id, id, g);
        }
        json_array_append(g, x);
    }
    const char *id;
    json_t *g;
    json_object_foreach(by_id, id, g)
    {
        size_t n = json_array_size(g);
        json_t **v = xcalloc(n + 1, sizeof(json_t *));
        for (size_t k = 0; k < n; k++)
            v[k] = json_array_get(g, k);
        qsort(v, n, sizeof(json_t *), cmp_newest);
        bool failed_kept = false;
        for (size_t k = 0; k < n; k++) {
            bool failed = json_is_false(json_object_get(v[k], "ok"));
            if (k < keep || (failed && !failed_kept))
                json_array_append(kept, v[k]);
            failed_kept = failed_kept || failed;
        }
        free(v);
    }
    json_decref(by_id);
    return kept;
}

/* Writes kept as compacted records of at most RECORD_COMPACT_FILE_TEXT bytes of text each
 * (one record larger than that goes alone). *written counts the files. */
static int write_compacted(struct repo *r, const char *kind, json_t *kept, long *steps,
                           uint64_t *written, struct err *e)
{
    char when[40];
    time_format_iso(time_now_ns(), when, sizeof(when));
    size_t i = 0, n = json_array_size(kept);
    while (i < n) {
        json_t *batch = json_array();
        size_t text = 0;
        for (; i < n; i++) {
            json_t *x = json_array_get(kept, i);
            char *t = json_dumps(x, JSON_COMPACT | JSON_SORT_KEYS);
            size_t len = t ? strlen(t) + 1 : 0;
            free(t);
            if (json_array_size(batch) && text + len > RECORD_COMPACT_FILE_TEXT)
                break;
            text += len;
            json_array_append(batch, x);
        }
        json_t *doc = json_pack("{s:o, s:s}", RECORD_COMPACTED_KEY, batch, "time", when);
        int rc = repo_record_add(r, kind, doc, e);
        json_decref(doc);
        if (rc != 0)
            return err_wrap(e, "cannot write a compacted %s record", kind);
        (*written)++;
        durable_step(steps);
    }
    return 0;
}

int repo_record_compact(struct repo *r, const char *kind, const json_t *live_ids, unsigned keep,
                        bool dry_run, struct repo_record_compact_stats *st, struct err *e)
{
    memset(st, 0, sizeof(*st));
    json_t *names = NULL;
    json_t *recs = record_list_files(r, kind, NULL, &names, e);
    if (!recs)
        return -1;
    json_t *kept = choose_kept(recs, live_ids, keep ? keep : REPO_RECORD_KEEP_PER_BACKUP);
    st->files_before = st->files_after = json_array_size(names);
    st->records_before = json_array_size(recs);
    st->records_after = json_array_size(kept);
    int rc = 0;
    /* Already compact: one file (or none) and nothing to drop. */
    bool nothing = st->records_after == st->records_before && st->files_before <= 1;
    if (nothing || dry_run) {
        if (!nothing)
            st->files_after = st->records_after ? 1 : 0; /* about: one file per 256 KiB */
        goto out;
    }
    long steps = 0;
    uint64_t written = 0;
    /* Write first, delete after: a stop in between leaves every record readable (twice). */
    if (write_compacted(r, kind, kept, &steps, &written, e) != 0) {
        rc = -1;
        goto out;
    }
    size_t i;
    json_t *x;
    uint64_t left = st->files_before;
    json_array_foreach(names, i, x)
    {
        if (storage_remove(r->st, json_string_value(x), e) != 0) {
            rc = err_wrap(e, "compacting %s records", kind);
            break;
        }
        left--;
        durable_step(&steps);
    }
    st->files_after = written + left;
out:
    json_decref(kept);
    json_decref(recs);
    json_decref(names);
    return rc;
}

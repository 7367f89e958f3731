/* The WAL archive (caris/wal.h): PostgreSQL's archive_command and restore_command. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/op.h"
#include "caris/pgsrc.h"
#include "caris/stream.h"
#include "caris/wal.h"
#include "caris/walwindow.h"

#include <libpq-fe.h>

#define WAL_RECORD_KIND "wal"
/* streamed partials (wal receive) have a record kind of their own: readers of segments never
 * read them (a slow server makes one per flush interval), and versions that predate them do
 * not see them at all */
#define WAL_STREAM_RECORD_KIND "walstream"
#define WAL_RECORD_FORMAT 1
/* A .history or .backup file is a few lines; a segment at most 1 GiB (PostgreSQL's largest
 * --wal-segsize). Larger files are refused rather than archived under a WAL name. */
#define WAL_MAX_FILE (1ull << 30)

static bool all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return true;
}

static uint32_t hex32(const char *s)
{
    char tmp[9];
    memcpy(tmp, s, 8);
    tmp[8] = 0;
    return (uint32_t)strtoul(tmp, NULL, 16);
}

int caris_wal_name_parse(const char *name, struct caris_wal_name *out, struct err *e)
{
    size_t n = strlen(name);
    memset(out, 0, sizeof(*out));
    /* PostgreSQL writes upper-case hex; anything else is not one of its names */
    if (n == 24 && all_hex(name, 24))
        out->kind = WAL_SEGMENT;
    else if (n == 32 && all_hex(name, 24) && strcmp(name + 24, ".partial") == 0)
        out->kind = WAL_PARTIAL;
    else if (n == 16 && all_hex(name, 8) && strcmp(name + 8, ".history") == 0)
        out->kind = WAL_HISTORY;
    else if (n == 40 && all_hex(name, 24) && name[24] == '.' && all_hex(name + 25, 8) &&
             strcmp(name + 33, ".backup") == 0)
        out->kind = WAL_BACKUP_LABEL;
    else
        return err_set(e, ERR_USAGE,
                       "archive_command passes %p and restore_command %f: PostgreSQL's WAL file "
                       "names (a segment, .partial, .history or .backup)",
                       "'%s' is not a WAL file name", name);
    out->timeline = hex32(name);
    if (out->kind != WAL_HISTORY) {
        out->log = hex32(name + 8);
        out->seg = hex32(name + 16);
    }
    if (out->timeline == 0)
        return err_set(e, ERR_USAGE, NULL, "'%s' is not a WAL file name: timeline 0", name);
    return 0;
}

const char *caris_wal_kind_name(enum caris_wal_kind k)
{
    switch (k) {
    case WAL_SEGMENT:
        return "segment";
    case WAL_PARTIAL:
        return "partial";
    case WAL_HISTORY:
        return "history";
    case WAL_BACKUP_LABEL:
        return "backup";
    }
    return "?";
}

/* The records of name among all WAL records (new reference). Records that cannot be read make
 * the answer unknown: ERR_DAMAGE, since the unreadable one may be this very file. */
static json_t *records_of(struct repo *r, const char *kind, const char *name, struct err *e)
{
    json_t *damaged = NULL;
    json_t *all = repo_record_list(r, kind, &damaged, e);
    if (!all)
        return NULL;
    json_t *out = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(all, i, x)
    {
        const char *xn = json_string_value(json_object_get(x, "name"));
        if (xn && strcmp(xn, name) == 0)
            json_array_append(out, x);
    }
    json_decref(all);
    if (json_array_size(damaged)) {
        err_set(e, ERR_DAMAGE, "run `caris-backup check --read-data`",
                "cannot tell whether the WAL archive holds %s: WAL record %s cannot be read (%s)",
                name, json_string_value(json_object_get(json_array_get(damaged, 0), "object")),
                json_string_value(json_object_get(json_array_get(damaged, 0), "error")));
        json_decref(out);
        out = NULL;
    }
    json_decref(damaged);
    return out;
}

/* records_of through cache ({object name: record}, kept by the caller across pushes): only
 * the records written since (by any process) are read; those gone (WAL retention) are
 * dropped. Unreadable records are never cached, so they make every call fail as above. */
static json_t *records_of_cached(struct repo *r, const char *kind, json_t *cache, const char *name,
                                 struct err *e)
{
    json_t *present = NULL, *damaged = NULL;
    json_t *fresh = repo_record_list_except(r, kind, cache, &present, &damaged, e);
    if (!fresh)
        return NULL;
    json_t *now = json_object();
    size_t i;
    json_t *x;
    json_array_foreach(present, i, x)
    {
        json_t *rec = json_object_get(cache, json_string_value(x));
        if (rec)
            json_object_set(now, json_string_value(x), rec);
    }
    json_array_foreach(fresh, i, x)
    {
        const char *obj = json_string_value(json_object_get(x, "_object"));
        if (obj)
            json_object_set(now, obj, x);
    }
    json_object_clear(cache);
    json_object_update(cache, now);
    json_decref(now);
    json_decref(fresh);
    json_decref(present);
    json_t *out = NULL;
    if (json_array_size(damaged)) {
        err_set(e, ERR_DAMAGE, "run `caris-backup check --read-data`",
                "cannot tell whether the WAL archive holds %s: WAL record %s cannot be read (%s)",
                name, json_string_value(json_object_get(json_array_get(damaged, 0), "object")),
                json_string_value(json_object_get(json_array_get(damaged, 0), "error")));
    } else {
        out = json_array();
        const char *k;
        json_object_foreach(cache, k, x)
        {
            const char *xn = json_string_value(json_object_get(x, "name"));
            if (xn && strcmp(xn, name) == 0)
                json_array_append(out, x);
        }
    }
    json_decref(damaged);
    return out;
}

static int hash_fd(int fd, const char *path, uint8_t sha[32], uint64_t *size, struct err *e)
{
    struct cx_sha256 *h = cx_sha256_new();
    if (!h)
        return err_set(e, ERR_FAILURE, NULL, "out of memory");
    static const size_t BUFSZ = 1 << 20;
    char *b = xmalloc(BUFSZ);
    uint64_t total = 0;
    int rc = 0;
    for (;;) {
        ssize_t k = read(fd, b, BUFSZ);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            rc = err_sys(e, errno, NULL, "cannot read %s", path);
            break;
        }
        if (k == 0)
            break;
        cx_sha256_update(h, b, (size_t)k);
        total += (uint64_t)k;
    }
    cx_sha256_final(h, sha);
    cx_sha256_free(h);
    free(b);
    *size = total;
    return rc;
}

static void format_lsn(uint64_t lsn, char *out, size_t n)
{
    snprintf(out, n, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
}

/* A segment's content must be the segment its name says. Its first page begins with
 * PostgreSQL's long page header (XLogLongPageHeaderData, in the server's byte order): magic
 * (u16, 0xD0xx-0xD1xx in the versions so far), info (u16, XLP_LONG_HEADER 0x0002), timeline (u32),
 * the page's address (u64), ..., at 32 the segment size (u32) and at 36 the block size (u32). A
 * recycled file of pg_wal (an older segment renamed for reuse) or a segment made ahead and never
 * written, archived under the name, ends a recovery there without a word, everything archived after
 * it lost. Content without such a header at all is archived as it is (not what PostgreSQL writes:
 * tests push made-up segments). */
static int check_segment_head(int fd, const char *path, const struct caris_wal_name *wn,
                              uint64_t size, struct err *e)
{
    uint8_t h[40];
    ssize_t got = pread(fd, h, sizeof(h), 0);
    if (got != (ssize_t)sizeof(h))
        return err_sys(e, got < 0 ? errno : EIO, NULL, "cannot read WAL file %s", path);
    static const uint8_t zero[40];
    if (memcmp(h, zero, sizeof(h)) == 0)
        return err_set(e, ERR_USAGE,
                       "archive the segments PostgreSQL archives (its %p), or those of pg_wal up "
                       "to the last one written",
                       "WAL segment %s begins with zeros: it was never written (a segment "
                       "PostgreSQL makes ahead of use), and archived it would end a recovery "
                       "there",
                       path);
    uint16_t magic, info;
    uint32_t tli, segsz, blcksz;
    uint64_t pageaddr;
    memcpy(&magic, h, 2);
    memcpy(&info, h + 2, 2);
    memcpy(&tli, h + 4, 4);
    memcpy(&pageaddr, h + 8, 8);
    memcpy(&segsz, h + 32, 4);
    memcpy(&blcksz, h + 36, 4);
    bool wal = magic >= 0xD000 && magic <= 0xD1FF && (info & 0x0002) && blcksz >= 1024 &&
               blcksz <= 65536 && (blcksz & (blcksz - 1)) == 0;
    if (!wal)
        return 0;
    uint64_t start = ((uint64_t)wn->log << 32) + (uint64_t)wn->seg * size;
    char want[32], have[32];
    format_lsn(start, want, sizeof(want));
    format_lsn(pageaddr, have, sizeof(have));
    if (pageaddr != start)
        return err_set(e, ERR_USAGE,
                       "archive the segments PostgreSQL archives (its %p); in pg_wal, a file "
                       "past the last one written is an older segment kept for reuse",
                       "WAL segment %s holds the WAL of %s, not of %s that its name says (an "
                       "older segment renamed for reuse?): archived, it would end a recovery "
                       "there",
                       path, have, want);
    if (segsz != size || tli == 0 || tli > wn->timeline)
        return err_set(e, ERR_USAGE, "archive the segments PostgreSQL archives (its %p)",
                       "WAL segment %s does not hold what its name and size say (its header: "
                       "timeline %u, segment size %u; its name: timeline %u, %llu bytes)",
                       path, tli, segsz, wn->timeline, (unsigned long long)size);
    return 0;
}

/* A timeline history file must read as one (lines "parentTLI<tab>LSN<tab>reason"): archived
 * otherwise, every look at the archive's timelines reported damage, for good (records are
 * never overwritten). */
static int check_history(int fd, const char *path, const char *name, uint64_t size, struct err *e)
{
    if (size > (1u << 20))
        return err_set(e, ERR_USAGE, "archive the .history files PostgreSQL archives (its %p)",
                       "%s has %llu bytes, more than a timeline history file holds", path,
                       (unsigned long long)size);
    char *text = xmalloc(size ? size : 1);
    ssize_t got = size ? pread(fd, text, size, 0) : 0;
    if (got != (ssize_t)size) {
        free(text);
        return err_sys(e, got < 0 ? errno : EIO, NULL, "cannot read WAL file %s", path);
    }
    struct caris_wal_switch *sw = NULL;
    size_t n = 0;
    struct err pe = ERR_INIT;
    int rc = caris_wal_history_parse(text, size, name, &sw, &n, &pe);
    free(sw);
    free(text);
    if (rc != 0)
        return err_set(e, ERR_USAGE, "archive the .history files PostgreSQL archives (its %p)",
                       "%s is not a timeline history file: %s", path, pe.msg);
    return 0;
}

int caris_wal_push(struct repo *r, const char *path, const struct caris_op *op,
                   struct caris_wal_push_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    char *pcopy = xstrdup(path);
    const char *name = basename(pcopy);
    struct caris_wal_name wn;
    int rc = -1;
    if (caris_wal_name_parse(name, &wn, e) == 0) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            err_sys(e, errno, NULL, "cannot open WAL file %s", path);
        } else {
            rc = caris_wal_push_fd(r, fd, name, path, op, res, e);
            close(fd);
        }
    }
    free(pcopy);
    return rc;
}

int caris_wal_push_fd(struct repo *r, int fd, const char *name, const char *path,
                      const struct caris_op *op, struct caris_wal_push_result *res, struct err *e)
{
    return caris_wal_push_fd_cached(r, fd, name, path, NULL, op, res, e);
}

/* What a streamed record (kind "stream") adds to a push: the segment it is the start of. */
struct stream_part {
    uint32_t timeline;
    uint64_t seg_start, segsz; /* the segment's start LSN and size */
};

static int push_fd(struct repo *r, int fd, const char *name, const char *path, json_t *cache,
                   const struct stream_part *sp, const struct caris_op *op,
                   struct caris_wal_push_result *res, struct err *e);

int caris_wal_push_fd_cached(struct repo *r, int fd, const char *name, const char *path,
                             json_t *cache, const struct caris_op *op,
                             struct caris_wal_push_result *res, struct err *e)
{
    return push_fd(r, fd, name, path, cache, NULL, op, res, e);
}

void caris_wal_stream_name(uint32_t tli, uint64_t seg_start, uint64_t segsz, uint64_t len,
                           char out[CARIS_WAL_STREAM_NAME_MAX])
{
    uint64_t per_log = 0x100000000ULL / segsz, segno = seg_start / segsz;
    snprintf(out, CARIS_WAL_STREAM_NAME_MAX, "%08X%08X%08X.%08X.stream", tli,
             (unsigned)(segno / per_log), (unsigned)(segno % per_log), (unsigned)len);
}

int caris_wal_push_stream_fd(struct repo *r, int fd, uint32_t tli, uint64_t seg_start,
                             uint64_t segsz, json_t *cache, const struct caris_op *op,
                             struct caris_wal_push_result *res, struct err *e)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || (uint64_t)st.st_size >= segsz ||
        segsz < (1u << 20) || segsz > WAL_MAX_FILE || (segsz & (segsz - 1)) || seg_start % segsz)
        return err_set(e, ERR_USAGE, NULL,
                       "a streamed partial segment is 1 byte to one less than its segment");
    char name[CARIS_WAL_STREAM_NAME_MAX];
    caris_wal_stream_name(tli, seg_start, segsz, (uint64_t)st.st_size, name);
    struct stream_part sp = {tli, seg_start, segsz};
    return push_fd(r, fd, name, name, cache, &sp, op, res, e);
}

static int push_fd(struct repo *r, int fd, const char *name, const char *path, json_t *cache,
                   const struct stream_part *sp, const struct caris_op *op,
                   struct caris_wal_push_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    struct caris_wal_name wn;
    int rc = -1;
    bool locked = false;
    json_t *found = NULL, *rec = NULL;
    struct repo_writer *w = NULL;
    struct stream_result sr = {0};

    if (sp) {
        /* not one of PostgreSQL's names (see caris_wal_stream_name): no request names it */
        uint64_t per_log = 0x100000000ULL / sp->segsz, segno = sp->seg_start / sp->segsz;
        wn = (struct caris_wal_name){WAL_PARTIAL, sp->timeline, (uint32_t)(segno / per_log),
                                     (uint32_t)(segno % per_log)};
    } else if (caris_wal_name_parse(name, &wn, e) != 0) {
        goto out;
    }
    /* the file is read from its start whoever opened it (a descriptor passed by `wal push`
     * to the daemon may have been read from before) */
    if (lseek(fd, 0, SEEK_SET) != 0) {
        err_sys(e, errno, NULL, "cannot read WAL file %s", path);
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        err_set(e, ERR_USAGE, NULL, "WAL file %s is not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > WAL_MAX_FILE) {
        err_set(e, ERR_USAGE, NULL, "WAL file %s is larger than 1 GiB", path);
        goto out;
    }
    /* a whole segment is a power of two from 1 MiB to 1 GiB (--wal-segsize): anything else
     * under a segment's name is a torn copy, which must not become the archived version */
    uint64_t sz = (uint64_t)st.st_size;
    if (!sp && wn.kind == WAL_SEGMENT && (sz < (1u << 20) || (sz & (sz - 1)) != 0)) {
        err_set(e, ERR_USAGE, "archive the whole segment (PostgreSQL's %p)",
                "WAL segment %s has %llu bytes, not a segment size (a power of two from 1 MiB "
                "to 1 GiB)",
                path, (unsigned long long)sz);
        goto out;
    }
    /* a log file ("xlogid") holds 2^32 bytes: its segments are numbered below 2^32 / size
     * (PostgreSQL's XLogSegmentsPerXLogId); a name past that is no name PostgreSQL writes, and
     * its number would be taken for a segment of the next log file (gaps, retention) */
    if (!sp && wn.kind == WAL_SEGMENT && wn.seg >= (1ULL << 32) / sz) {
        err_set(e, ERR_USAGE, "archive_command passes %p: PostgreSQL's own names",
                "WAL segment %s: segment number %08X is past the last of a log file of "
                "%llu-byte segments (%08llX)",
                name, wn.seg, (unsigned long long)sz, (unsigned long long)((1ULL << 32) / sz - 1));
        goto out;
    }
    if (!sp && wn.kind == WAL_SEGMENT && check_segment_head(fd, path, &wn, sz, e) != 0)
        goto out;
    if (!sp && wn.kind == WAL_HISTORY && check_history(fd, path, name, sz, e) != 0)
        goto out;
    if (repo_lock(r, false, "wal push", e) != 0)
        goto out;
    locked = true;
    const char *kind = sp ? WAL_STREAM_RECORD_KIND : WAL_RECORD_KIND;
    if (!(found =
              cache ? records_of_cached(r, kind, cache, name, e) : records_of(r, kind, name, e)))
        goto out;
    /* Test-only: CARIS_TEST_WAL_PUSH_RACE=1 pushes as if another push of the name stored its
     * record just after this look (the race the look after the record catches) */
    const char *race = getenv("CARIS_TEST_WAL_PUSH_RACE");
    if (race && strcmp(race, "1") == 0)
        json_array_clear(found);
    if (json_array_size(found)) {
        /* archived before: identical content is success (PostgreSQL retries a push whose
         * answer it did not see), anything else is refused and nothing is overwritten */
        uint8_t sha[32];
        uint64_t size = 0;
        char hex[65];
        if (hash_fd(fd, path, sha, &size, e) != 0)
            goto out;
        cx_hex(sha, 32, hex);
        size_t i;
        json_t *x;
        json_array_foreach(found, i, x)
        {
            const char *xs = json_string_value(json_object_get(x, "sha256"));
            if (!xs || strcmp(xs, hex) != 0 ||
                (uint64_t)json_integer_value(json_object_get(x, "size")) != size) {
                err_set(e, ERR_DAMAGE,
                        "find out why PostgreSQL archives different WAL under the same name "
                        "(two clusters archiving into one repository?); the archived file is "
                        "kept unchanged",
                        "WAL file %s is already archived with different content (archived "
                        "SHA-256 %.16s…, this one %.16s…, %llu bytes)",
                        name, xs ? xs : "?", hex, (unsigned long long)size);
                goto out;
            }
        }
        res->already = true;
        res->bytes = size;
        memcpy(res->sha256, sha, 32);
        caris_op_log(op, LOG_INFO, "WAL file %s already archived with identical content", name);
        rc = 0;
        goto out;
    }

    /* hashing, compression and encryption of a 16 MiB segment on every core */
    int threads = sys_ncpu();
    w = repo_writer_new(r, threads);
    if (stream_store_fd(r, w, threads, fd, repo_chunker_params(r, false), &sr, NULL, NULL, op, e) !=
            0 ||
        repo_writer_flush(w, e) != 0)
        goto out;
    char hex[65], lsn[32] = "", pushed[40];
    cx_hex(sr.sha256, 32, hex);
    time_format_iso(time_now_ns(), pushed, sizeof(pushed));
    rec = json_pack("{s:i, s:s, s:s, s:I, s:I, s:s, s:O, s:s}", "format", WAL_RECORD_FORMAT, "name",
                    name, "kind", sp ? "stream" : caris_wal_kind_name(wn.kind), "timeline",
                    (json_int_t)wn.timeline, "size", (json_int_t)sr.bytes, "sha256", hex, "chunks",
                    sr.chunks, "pushed", pushed);
    if (wn.kind != WAL_HISTORY) {
        /* a segment's start LSN: segment number times the segment size, which is the size of
         * a whole segment file (PostgreSQL's --wal-segsize) */
        if (wn.kind == WAL_SEGMENT && sr.bytes > 0) {
            format_lsn(((uint64_t)wn.log << 32) + (uint64_t)wn.seg * sr.bytes, lsn, sizeof(lsn));
            json_object_set_new(rec, "start_lsn", json_string(lsn));
        }
        json_object_set_new(rec, "log", json_integer(wn.log));
        json_object_set_new(rec, "seg", json_integer(wn.seg));
    }
    if (sp) {
        /* the segment this is the start of: start_lsn, end_lsn (its last byte + 1) and the
         * segment's size, which `wal get` pads it to */
        format_lsn(sp->seg_start, lsn, sizeof(lsn));
        json_object_set_new(rec, "start_lsn", json_string(lsn));
        format_lsn(sp->seg_start + sr.bytes, lsn, sizeof(lsn));
        json_object_set_new(rec, "end_lsn", json_string(lsn));
        json_object_set_new(rec, "segment_size", json_integer((json_int_t)sp->segsz));
    }
    /* Test-only: CARIS_TEST_WAL_PUSH_CRASH=1 ends the process as kill -9 would between the
     * data (packs and index, durable) and the record, the worst moment for a push to die. */
    const char *crash = getenv("CARIS_TEST_WAL_PUSH_CRASH");
    if (crash && strcmp(crash, "1") == 0)
        _exit(137);
    /* As a backup before its snapshot: a push whose lock was removed or lapsed meanwhile may
     * have stored its segment in packs a prune has deleted since (they were unreferenced until
     * this record), or deduplicated against such data: it must not say "archived". */
    char obj[65];
    if (repo_lock_check(r, e) != 0 || repo_record_add_named(r, kind, rec, obj, e) != 0)
        goto out;
    if (repo_lock_lapse_check(r, e) != 0) {
        /* the record landed past the lock's lapse (an S3 PUT retried for minutes, the process
         * stopped in it): its data may be gone with a prune that took the lock for stale. It
         * goes again, so that PostgreSQL's next push stores the segment again instead of
         * finding it "already archived". */
        struct err re = ERR_INIT;
        if (repo_record_withdraw(r, kind, obj, &re) != 0)
            err_wrap(e,
                     "records/%s/%s was written and could not be removed (%s): run "
                     "`caris-backup check`",
                     kind, obj, re.msg);
        goto out;
    }
    /* Another push of the same name may have stored its record meanwhile (its check above ran
     * before this record existed, and this one's before its record did): looked at again now
     * that this record is there, the last of two such pushes always sees the other, and a
     * different version is a failure, never two silent successes. The archive then holds both
     * versions, which `wal get` refuses (it cannot know which is the server's). */
    json_decref(found);
    if (!(found =
              cache ? records_of_cached(r, kind, cache, name, e) : records_of(r, kind, name, e)))
        goto out;
    size_t fi;
    json_t *fx;
    json_array_foreach(found, fi, fx)
    {
        const char *xs = json_string_value(json_object_get(fx, "sha256"));
        if (!xs || strcmp(xs, hex) != 0) {
            err_set(e, ERR_DAMAGE,
                    "find out why two different files were pushed under one name (two clusters "
                    "archiving into one repository?); `wal get` refuses the name until then",
                    "WAL file %s was archived at the same time by another push, with different "
                    "content (SHA-256 %.16s…, this one %.16s…): the archive holds both",
                    name, xs ? xs : "?", hex);
            goto out;
        }
    }
    res->bytes = sr.bytes;
    memcpy(res->sha256, sr.sha256, 32);
    caris_op_log(op, LOG_INFO, "archived WAL file %s (%llu bytes)", name,
                 (unsigned long long)sr.bytes);
    rc = 0;
out:
    if (rc != 0 && err_is_set(e) && e->code != ERR_USAGE && strstr(e->msg, name) == NULL)
        err_wrap(e, "wal push %s", name);
    json_decref(rec);
    json_decref(sr.chunks);
    json_decref(found);
    if (w)
        repo_writer_free(w);
    if (locked)
        repo_unlock(r);
    return rc;
}

/* Whether a chunk of the stream ([[id hex, length], ...]) is not in r's index. */
static bool chunks_unknown(struct repo *r, json_t *chunks)
{
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c)
    {
        uint8_t id[32];
        const char *hex = json_string_value(json_array_get(c, 0));
        if (hex && cx_unhex(hex, id, 32) == 0 && !repo_has_blob(r, id))
            return true;
    }
    return false;
}

/* Whether rec is a usable streamed partial of segment wn: kind "stream", same timeline and
 * segment, a size below its segment size (a power of two). */
static bool stream_of(json_t *rec, const struct caris_wal_name *wn)
{
    const char *k = json_string_value(json_object_get(rec, "kind"));
    json_int_t size = json_integer_value(json_object_get(rec, "size"));
    json_int_t segsz = json_integer_value(json_object_get(rec, "segment_size"));
    return k && strcmp(k, "stream") == 0 &&
           json_integer_value(json_object_get(rec, "timeline")) == (json_int_t)wn->timeline &&
           json_integer_value(json_object_get(rec, "log")) == (json_int_t)wn->log &&
           json_integer_value(json_object_get(rec, "seg")) == (json_int_t)wn->seg && size > 0 &&
           segsz >= (1 << 20) && (uint64_t)segsz <= WAL_MAX_FILE && (segsz & (segsz - 1)) == 0 &&
           size < segsz;
}

/* The longest streamed partial of segment wn among records (an array); borrowed, NULL when
 * there is none. A longer one supersedes a shorter (each is a prefix of the segment, flushed
 * later). */
static json_t *newest_stream(json_t *records, const struct caris_wal_name *wn)
{
    json_t *best = NULL, *x;
    size_t i;
    json_array_foreach(records, i, x)
    {
        if (stream_of(x, wn) && (!best || json_integer_value(json_object_get(x, "size")) >
                                              json_integer_value(json_object_get(best, "size"))))
            best = x;
    }
    return best;
}

/* The archive's .history records (a new array): from the cache a handle keeps (refreshed by
 * the records_of_cached before), else listed. ERR_DAMAGE when a WAL record cannot be read (it
 * may be a history). */
static json_t *history_records(struct repo *r, json_t *cache, struct err *e)
{
    json_t *out = json_array(), *x;
    if (cache) {
        const char *k;
        json_object_foreach(cache, k, x)
        {
            const char *kind = json_string_value(json_object_get(x, "kind"));
            if (kind && strcmp(kind, "history") == 0)
                json_array_append(out, x);
        }
        return out;
    }
    json_t *damaged = NULL;
    json_t *all = repo_record_list(r, WAL_RECORD_KIND, &damaged, e);
    if (!all) {
        json_decref(out);
        return NULL;
    }
    if (json_array_size(damaged)) {
        err_set(e, ERR_DAMAGE, "run `caris-backup check --read-data`",
                "cannot tell where the WAL archive's timelines branch off: WAL record %s cannot be "
                "read (%s)",
                json_string_value(json_object_get(json_array_get(damaged, 0), "object")),
                json_string_value(json_object_get(json_array_get(damaged, 0), "error")));
        json_decref(out);
        out = NULL;
    } else {
        size_t i;
        json_array_foreach(all, i, x)
        {
            const char *kind = json_string_value(json_object_get(x, "kind"));
            if (kind && strcmp(kind, "history") == 0)
                json_array_append(out, x);
        }
    }
    json_decref(damaged);
    json_decref(all);
    return out;
}

/* The switch point at which history record rec (a newer timeline's .history) leaves timeline
 * tli: 1 with *at, 0 when its history does not pass through tli, -1 with e. cache: the handle
 * is kept open (the daemon's), and has not read the index files other processes wrote since:
 * read again when the history's chunks are not in it (as agreed_chunks). */
static int history_leaves(struct repo *r, json_t *rec, json_t *cache, uint32_t tli, uint64_t *at,
                          struct err *e)
{
    const char *name = json_string_value(json_object_get(rec, "name"));
    const char *hex = json_string_value(json_object_get(rec, "sha256"));
    json_t *chunks = json_object_get(rec, "chunks");
    uint8_t sha[32];
    struct buf text = {0};
    if (json_is_array(chunks) && cache && chunks_unknown(r, chunks) && repo_refresh(r, e) != 0)
        return -1;
    if (!name || !hex || cx_unhex(hex, sha, 32) != 0 ||
        stream_restore_buf(r, chunks, sha, 1u << 20, &text, e) != 0) {
        buf_free(&text);
        if (!err_is_set(e))
            err_set(e, ERR_DAMAGE, "run `caris-backup check --read-data`",
                    "the WAL record of %s is malformed", name ? name : "?");
        return -1;
    }
    struct caris_wal_switch *sw = NULL;
    size_t n = 0;
    int rc = caris_wal_history_parse((const char *)text.data, text.len, name, &sw, &n, e);
    buf_free(&text);
    if (rc != 0)
        return -1;
    rc = 0;
    for (size_t k = 0; k < n; k++)
        if (sw[k].parent == tli && (!rc || sw[k].switch_lsn < *at)) {
            *at = sw[k].switch_lsn;
            rc = 1;
        }
    free(sw);
    return rc;
}

/* Where the WAL of timeline tli ends for a recovery that follows timeline follow (0: the
 * newest timeline the archive has a history of, as recovery_target_timeline 'latest'): the
 * switch point at which that timeline's history leaves tli (*end; UINT64_MAX when it does not:
 * the recovery follows tli itself, or no newer timeline branched off it), and in *from the
 * name of the history that says so. When the history followed does not pass through tli, the
 * earliest point at which any newer timeline left it: what an older timeline holds past that
 * point is WAL a newer one does not have, never served in its place. */
static int timeline_end(struct repo *r, json_t *hist, json_t *cache, uint32_t tli, uint32_t follow,
                        uint64_t *end, const char **from, struct err *e)
{
    *end = UINT64_MAX;
    *from = NULL;
    if (follow == tli)
        return 0;
    json_t *use = NULL, *x;
    size_t i;
    json_array_foreach(hist, i, x)
    {
        json_int_t t = json_integer_value(json_object_get(x, "timeline"));
        if (t <= (json_int_t)tli)
            continue;
        if (follow ? t == (json_int_t)follow
                   : !use || t > json_integer_value(json_object_get(use, "timeline")))
            use = x;
    }
    uint64_t at = 0;
    int rc = use ? history_leaves(r, use, cache, tli, &at, e) : 0;
    if (rc < 0)
        return -1;
    if (rc == 1) {
        *end = at;
        *from = json_string_value(json_object_get(use, "name"));
        return 0;
    }
    json_array_foreach(hist, i, x)
    {
        if (json_integer_value(json_object_get(x, "timeline")) <= (json_int_t)tli)
            continue;
        if ((rc = history_leaves(r, x, cache, tli, &at, e)) < 0)
            return -1;
        if (rc == 1 && at < *end) {
            *end = at;
            *from = json_string_value(json_object_get(x, "name"));
        }
    }
    return 0;
}

/* The chunk list of name, from its records (found, not empty) and their SHA-256 in sha:
 * several records of one name come from concurrent pushes of the same file; they must agree,
 * or the archive cannot say which is right. NULL with ERR_DAMAGE when they do not or a record
 * is malformed. */
static json_t *agreed_chunks(struct repo *r, json_t *found, const char *name, json_t *cache,
                             uint8_t sha[32], struct err *e)
{
    json_t *rec = json_array_get(found, 0);
    const char *hex = json_string_value(json_object_get(rec, "sha256"));
    for (size_t i = 1; i < json_array_size(found); i++) {
        const char *xs = json_string_value(json_object_get(json_array_get(found, i), "sha256"));
        if (!hex || !xs || strcmp(hex, xs) != 0) {
            err_set(e, ERR_DAMAGE,
                    "two pushes stored different files under this name at the same moment (two "
                    "clusters archiving into one repository?): `caris-backup wal list` shows "
                    "both; find out which is this cluster's",
                    "the WAL archive holds two different versions of %s (SHA-256 %.16s…, "
                    "%.16s…)",
                    name, hex ? hex : "?", xs ? xs : "?");
            return NULL;
        }
    }
    json_t *chunks = json_object_get(rec, "chunks");
    if (!hex || cx_unhex(hex, sha, 32) != 0 || !json_is_array(chunks)) {
        err_set(e, ERR_DAMAGE, "run `caris-backup check --read-data`",
                "the WAL record of %s is malformed", name);
        return NULL;
    }
    /* a handle kept open (the daemon's, cache set) has not read the index files that other
     * processes wrote since (a push made alone): when a chunk is not in its index, the index
     * is read again once, rather than the file reported damaged */
    if (cache && chunks_unknown(r, chunks) && repo_refresh(r, e) != 0)
        return NULL;
    return chunks;
}

/* A segment the archive lacks is its end (restore_command's exit 1: recovery ends there)
 * unless it lies before the first archived segment of its timeline: the archive was pruned
 * past it (a backup forgotten and its WAL pruned while a recovery from it ran) or lost its
 * start, and ending there would promote the server without any of the WAL after it, silently.
 * Not so for a segment an older timeline holds (from before its timeline began: PostgreSQL
 * before 15 asks the newest timeline first). A gap between archived segments stays exit 1:
 * PostgreSQL reads ahead past a recovery target before the gap, and a restore refuses a
 * recovery that would need the gap. records: every WAL record. 0, or -1 with e (ERR_DAMAGE). */
static int absent_is_end(json_t *records, const struct caris_wal_name *wn, const char *name,
                         struct err *e)
{
    uint64_t want = ((uint64_t)wn->log << 32) | wn->seg, later_at = 0;
    json_t *later = NULL, *x;
    bool earlier = false, older_tli = false;
    size_t i;
    json_array_foreach(records, i, x)
    {
        const char *k = json_string_value(json_object_get(x, "kind"));
        bool whole = k && strcmp(k, "segment") == 0;
        if (!whole && !(k && strcmp(k, "stream") == 0))
            continue;
        json_int_t tli = json_integer_value(json_object_get(x, "timeline"));
        uint64_t at = ((uint64_t)json_integer_value(json_object_get(x, "log")) << 32) |
                      (uint32_t)json_integer_value(json_object_get(x, "seg"));
        if (tli > 0 && tli < (json_int_t)wn->timeline && at == want)
            older_tli = true; /* whole or a streamed partial, on an older timeline */
        if (!whole || tli != (json_int_t)wn->timeline)
            continue;
        if (at < want)
            earlier = true;
        else if (at > want && (!later || at < later_at)) {
            later = x;
            later_at = at;
        }
    }
    if (!later || earlier || older_tli)
        return 0;
    return err_set(e, ERR_DAMAGE,
                   "it was pruned (or lost) while a recovery needs it, and recovery cannot go on "
                   "past it: restore from a backup the archive still covers (`caris-backup wal "
                   "list` shows what it holds)",
                   "WAL segment %s is not in the archive, whose first segment of timeline %u is "
                   "%s, after it",
                   name, wn->timeline, json_string_value(json_object_get(later, "name")));
}

int caris_wal_absent_check(struct repo *r, const char *name, struct err *e)
{
    struct caris_wal_name wn;
    if (caris_wal_name_parse(name, &wn, e) != 0)
        return -1;
    if (wn.kind != WAL_SEGMENT)
        return 0;
    json_t *damaged = NULL;
    json_t *all = repo_record_list(r, WAL_RECORD_KIND, &damaged, e);
    if (!all)
        return -1;
    /* and the streamed partials (records of their own kind): one of an older timeline is a
     * copy PostgreSQL before 15 falls back to (absent_is_end looked for them among the
     * segments' records, where they never are) */
    json_t *sdamaged = NULL;
    json_t *streams = repo_record_list(r, WAL_STREAM_RECORD_KIND, &sdamaged, e);
    if (!streams) {
        json_decref(damaged);
        json_decref(all);
        return -1;
    }
    json_array_extend(all, streams);
    if (!damaged)
        damaged = json_array();
    if (sdamaged)
        json_array_extend(damaged, sdamaged);
    json_decref(streams);
    json_decref(sdamaged);
    int rc = 0;
    if (json_array_size(damaged))
        rc = err_set(e, ERR_DAMAGE, "run `caris-backup check --read-data`",
                     "cannot tell whether the WAL archive ends before %s: WAL record %s cannot be "
                     "read (%s)",
                     name, json_string_value(json_object_get(json_array_get(damaged, 0), "object")),
                     json_string_value(json_object_get(json_array_get(damaged, 0), "error")));
    else
        rc = absent_is_end(all, &wn, name, e);
    json_decref(damaged);
    json_decref(all);
    return rc;
}

int caris_wal_get_fd_cached(struct repo *r, const char *name, int fd, json_t *cache,
                            uint32_t follow, const struct caris_op *op, struct err *e)
{
    struct caris_wal_name wn;
    if (caris_wal_name_parse(name, &wn, e) != 0)
        return -1;
    int rc = -1;
    bool locked = false, absent = false;
    json_t *found = NULL;
    if (repo_lock(r, false, "wal get", e) != 0)
        goto out;
    locked = true;
    if (!(found = cache ? records_of_cached(r, WAL_RECORD_KIND, cache, name, e)
                        : records_of(r, WAL_RECORD_KIND, name, e)))
        goto out;
    json_int_t pad_to = 0, keep = -1;
    if (json_array_size(found) == 0 && wn.kind == WAL_SEGMENT) {
        /* not archived whole: the newest partial `wal receive` stored of it, zero-padded to a
         * whole segment (recovery replays it up to its last record and ends there, at the end
         * of valid WAL, as after a crash) */
        json_t *damaged = NULL;
        json_t *all = repo_record_list(r, WAL_STREAM_RECORD_KIND, &damaged, e);
        if (!all)
            goto out;
        if (json_array_size(damaged)) {
            /* one of them may be the newest partial: serving an older one would end the
             * recovery early without a word */
            err_set(e, ERR_DAMAGE, "run `caris-backup check --read-data`",
                    "cannot tell which streamed partial of %s is the newest: record %s cannot be "
                    "read (%s)",
                    name, json_string_value(json_object_get(json_array_get(damaged, 0), "object")),
                    json_string_value(json_object_get(json_array_get(damaged, 0), "error")));
            json_decref(damaged);
            json_decref(all);
            goto out;
        }
        json_decref(damaged);
        json_t *best = newest_stream(all, &wn);
        /* A partial streamed from a primary holds what it wrote until it was lost, and after a
         * failover (a standby promoted: a new timeline, its .history archived) that can be WAL
         * the new timeline does not have: transactions the failover discarded. A recovery that
         * follows the new timeline asks for the old timeline's segment while the new one's is
         * not archived; PostgreSQL would replay it past the switch point, those transactions
         * with it. It gets the partial only up to the switch point (zeros after it: recovery
         * ends there, on the old timeline's last record the new one shares), and nothing of a
         * partial wholly after it. */
        json_t *hist = NULL;
        if (best && !(hist = history_records(r, cache, e))) {
            json_decref(all);
            goto out;
        }
        if (best) {
            uint64_t end,
                segsz = (uint64_t)json_integer_value(json_object_get(best, "segment_size"));
            uint64_t seg_start = ((uint64_t)wn.log << 32) + (uint64_t)wn.seg * segsz;
            json_int_t size = json_integer_value(json_object_get(best, "size"));
            const char *from;
            if (timeline_end(r, hist, cache, wn.timeline, follow, &end, &from, e) != 0) {
                json_decref(hist);
                json_decref(all);
                goto out;
            }
            char at[24];
            format_lsn(end, at, sizeof(at));
            if (end <= seg_start) {
                caris_op_log(op, LOG_WARN,
                             "WAL segment %s: not serving the streamed partial %s: timeline %u "
                             "ends at %s (%s), before this segment; what the partial holds is WAL "
                             "the newer timeline does not have",
                             name, json_string_value(json_object_get(best, "name")), wn.timeline,
                             at, from);
                best = NULL;
            } else if (end - seg_start < (uint64_t)size) {
                keep = (json_int_t)(end - seg_start);
                caris_op_log(op, LOG_WARN,
                             "WAL segment %s: serving the streamed partial %s only up to %s, "
                             "where timeline %u ends (%s): its last %lld bytes are WAL the newer "
                             "timeline does not have (transactions a failover discarded)",
                             name, json_string_value(json_object_get(best, "name")), at,
                             wn.timeline, from, (long long)(size - keep));
            }
        }
        json_decref(hist);
        if (best) {
            json_array_append(found, best);
            pad_to = json_integer_value(json_object_get(best, "segment_size"));
            caris_op_log(op, LOG_INFO,
                         "WAL segment %s is not archived whole: serving the streamed partial %s "
                         "(%lld bytes), zero-padded to %lld bytes",
                         name, json_string_value(json_object_get(best, "name")),
                         keep >= 0 ? (long long)keep
                                   : (long long)json_integer_value(json_object_get(best, "size")),
                         (long long)pad_to);
        }
        json_decref(all);
    }
    if (json_array_size(found) == 0) {
        /* "not there" ends the recovery (restore_command's exit 1): said only while the
         * repository itself is still there. A handle kept open (the daemon's) over a
         * repository whose files went away (a volume unmounted under it, an emptied
         * directory) lists no record at all, which is not the archive's answer. */
        struct err xe = ERR_INIT;
        int ex = repo_exists(repo_path(r), &xe);
        if (ex != 1) {
            err_set(e, ERR_IO, "check that the repository's volume is mounted and complete",
                    "cannot tell whether the WAL archive holds %s: repository %s is not there "
                    "any more%s%s",
                    name, repo_path(r), ex < 0 ? ": " : "", ex < 0 ? xe.msg : "");
            goto out;
        }
        err_set(e, ERR_NOT_FOUND, NULL, "WAL file %s is not in the archive", name);
        absent = true;
        goto out;
    }
    uint8_t sha[32];
    json_t *chunks;
    if (!(chunks = agreed_chunks(r, found, name, cache, sha, e)))
        goto out;
    /* the descriptor is written from its start whoever opened it (one passed by `wal get` to
     * the daemon is a fresh temporary file, but may have been written to before) */
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
        err_sys(e, errno, NULL, "cannot write the temporary file of %s", name);
        goto out;
    }
    if (stream_restore_fd(r, chunks, sha, fd, sys_ncpu(), NULL, NULL, op, e) != 0)
        goto out;
    /* the whole partial was read and checked against its SHA-256; what lies past the point
     * its timeline ends is cut off (and zeros put in its place by the padding) */
    if (keep >= 0 && ftruncate(fd, (off_t)keep) != 0) {
        err_sys(e, errno, NULL, "cannot write the temporary file of %s", name);
        goto out;
    }
    if (pad_to && ftruncate(fd, (off_t)pad_to) != 0) {
        err_sys(e, errno, NULL, "cannot write the temporary file of %s", name);
        goto out;
    }
    if (fsync(fd) != 0) {
        err_sys(e, errno, NULL, "cannot write the temporary file of %s", name);
        goto out;
    }
    rc = 0;
out:
    /* ERR_NOT_FOUND is the archive's answer "not there" only (restore_command's exit 1: the
     * recovery ends and promotes). Any other "not found" on the way is a failure: S3's "no
     * bucket" (NoSuchBucket, or a 404 to a listing) and an object listed then gone carry no
     * errno to tell them apart, and a recovery must stop there, not end early. */
    if (rc != 0 && !absent && e->code == ERR_NOT_FOUND)
        e->code = ERR_IO;
    json_decref(found);
    if (locked)
        repo_unlock(r);
    return rc;
}

int caris_wal_get(struct repo *r, const char *name, const char *dest, uint32_t follow,
                  const struct caris_op *op, struct err *e)
{
    struct caris_wal_name wn;
    if (caris_wal_name_parse(name, &wn, e) != 0)
        return -1;
    /* written beside dest, anonymous where the file system allows (a get killed meanwhile
     * leaves nothing in pg_wal), put in place once complete and fsynced */
    struct fs_newfile f;
    if (fs_newfile_open(&f, dest, e) != 0) {
        e->code = ERR_FAILURE; /* never the archive's "not there" */
        return -1;
    }
    if (caris_wal_get_fd_cached(r, name, f.fd, NULL, follow, op, e) != 0) {
        fs_newfile_abort(&f);
        return -1;
    }
    return fs_newfile_commit(&f, e);
}

int caris_wal_next_segment(const char *name, uint64_t segsz, char out[25])
{
    struct caris_wal_name wn;
    struct err e = ERR_INIT;
    if (caris_wal_name_parse(name, &wn, &e) != 0 || wn.kind != WAL_SEGMENT || segsz < (1u << 20) ||
        segsz > WAL_MAX_FILE || (segsz & (segsz - 1)) != 0)
        return -1;
    uint64_t per_log = 0x100000000ULL / segsz;
    uint64_t next = (uint64_t)wn.log * per_log + wn.seg + 1;
    if (wn.seg >= per_log || next / per_log > UINT32_MAX)
        return -1;
    caris_wal_segment_name(wn.timeline, next, (int64_t)segsz, out);
    return 0;
}

int caris_wal_load_cached(struct repo *r, const char *name, json_t *cache, size_t max,
                          struct buf *out, struct err *e)
{
    struct caris_wal_name wn;
    out->len = 0;
    if (caris_wal_name_parse(name, &wn, e) != 0)
        return -1;
    if (wn.kind != WAL_SEGMENT)
        return err_set(e, ERR_USAGE, NULL, "%s is not a WAL segment name", name);
    if (repo_lock(r, false, "wal get", e) != 0)
        return -1;
    int rc = -1;
    json_t *found = cache ? records_of_cached(r, WAL_RECORD_KIND, cache, name, e)
                          : records_of(r, WAL_RECORD_KIND, name, e);
    uint8_t sha[32];
    json_t *chunks = NULL;
    if (found && json_array_size(found) == 0)
        err_set(e, ERR_NOT_FOUND, NULL, "WAL segment %s is not archived whole", name);
    else if (found && (chunks = agreed_chunks(r, found, name, cache, sha, e)) != NULL) {
        json_int_t size = json_integer_value(json_object_get(json_array_get(found, 0), "size"));
        if (size < 0 || (uint64_t)size > max)
            err_set(e, ERR_USAGE, NULL, "WAL segment %s is larger than %zu bytes", name, max);
        else
            rc = stream_restore_buf(r, chunks, sha, max, out, e);
    }
    json_decref(found);
    repo_unlock(r);
    if (rc != 0)
        out->len = 0;
    return rc;
}

static int cmp_record(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t tx = json_integer_value(json_object_get(x, "timeline"));
    json_int_t ty = json_integer_value(json_object_get(y, "timeline"));
    if (tx != ty)
        return tx < ty ? -1 : 1;
    const char *nx = json_string_value(json_object_get(x, "name"));
    const char *ny = json_string_value(json_object_get(y, "name"));
    return strcmp(nx ? nx : "", ny ? ny : "");
}

json_t *caris_wal_list(struct repo *r, json_t **damaged, struct err *e)
{
    json_t *all = repo_record_list(r, WAL_RECORD_KIND, damaged, e);
    if (!all)
        return NULL;
    json_t *sdamaged = NULL;
    json_t *streams = repo_record_list(r, WAL_STREAM_RECORD_KIND, &sdamaged, e);
    if (!streams) {
        json_decref(all);
        if (damaged) {
            json_decref(*damaged);
            *damaged = NULL;
        }
        return NULL;
    }
    json_array_extend(all, streams);
    json_decref(streams);
    if (damaged && *damaged)
        json_array_extend(*damaged, sdamaged);
    json_decref(sdamaged);
    size_t n = json_array_size(all);
    json_t **v = xcalloc(n + 1, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_deep_copy(json_array_get(all, i));
        json_object_del(x, "chunks"); /* a listing, not a manifest */
        v[i] = x;
    }
    qsort(v, n, sizeof(*v), cmp_record);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(out, v[i]);
    free(v);
    json_decref(all);
    return out;
}

/* ---- the server's archiver ------------------------------------------------------------------ */

int caris_wal_archiver(const struct config *cfg, struct pgsrc_archiver *out, struct err *e)
{
    const char *url = config_get(cfg, "POSTGRES_URL");
    if (!url)
        return err_set(e, ERR_CONFIG, "set POSTGRES_URL", "POSTGRES_URL is not set");
    struct pgsrc_target t;
    if (pgsrc_target_parse(url, config_get(cfg, "PGPASSWORD"), "POSTGRES_URL", &t, e) != 0)
        return -1;
    PGconn *c = pgsrc_connect(&t, NULL, e);
    int rc = c ? pgsrc_archiver(c, out, e) : -1;
    if (c)
        PQfinish(c);
    pgsrc_target_free(&t);
    return rc;
}

/* wal receive: streams WAL over a physical replication slot (START_REPLICATION) into the WAL
 * archive. Each segment is stored when its last byte arrives (through caris_wal_push_fd, so the
 * identical-content rule applies when archive_command pushed it too), and every flush interval
 * what has arrived of the current one is stored as a streamed partial (caris/wal.h). Only what
 * is durably in the repository is reported flushed to the server, so the slot keeps every byte
 * the archive does not have yet. */
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "caris/op.h"
#include "caris/pgsrc.h"
#include "caris/pitr.h"
#include "caris/repo.h"
#include "caris/storage.h"
#include "caris/wal.h"
#include "caris/walrecv.h"
#include "caris/walwindow.h"

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static int64_t now_pg_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* microseconds since 2000-01-01 00:00:00 UTC */
    return ((int64_t)ts.tv_sec - 946684800) * 1000000 + ts.tv_nsec / 1000;
}

static int send_status(PGconn *c, uint64_t flushed, struct err *e)
{
    uint8_t m[34];
    m[0] = 'r';
    put64(m + 1, flushed);
    put64(m + 9, flushed);
    put64(m + 17, 0);
    put64(m + 25, (uint64_t)now_pg_us());
    m[33] = 0;
    if (PQputCopyData(c, (const char *)m, sizeof(m)) != 1 || PQflush(c) != 0)
        return err_set(e, ERR_DATABASE, "check the server and the network, then run it again",
                       "sending the standby status update failed: %s", PQerrorMessage(c));
    return 0;
}

static PGresult *one_row(PGconn *c, const char *sql, struct err *e)
{
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
        err_set(e, ERR_DATABASE, "the server's log may say more", "%s failed: %s", sql,
                PQerrorMessage(c));
        PQclear(res);
        return NULL;
    }
    return res;
}

/* A timeline after the first: its .history file (TIMELINE_HISTORY), archived as `wal push`
 * would (identical when archive_command pushed it too), so that a recovery from streamed WAL
 * alone can follow the switch. */
static int store_history(PGconn *c, struct repo *r, uint32_t tli, const struct caris_op *op,
                         struct err *e)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "TIMELINE_HISTORY %u", tli);
    PGresult *res = one_row(c, sql, e);
    if (!res)
        return -1;
    int rc = -1;
    const char *name = PQgetvalue(res, 0, 0);
    struct caris_wal_name wn;
    if (PQnfields(res) < 2 || caris_wal_name_parse(name, &wn, e) != 0 || wn.kind != WAL_HISTORY ||
        wn.timeline != tli) {
        if (!err_is_set(e))
            err_set(e, ERR_DATABASE, NULL, "TIMELINE_HISTORY %u sent an unexpected file name", tli);
        PQclear(res);
        return -1;
    }
    int fd = memfd_create("caris-walrecv-history", MFD_CLOEXEC);
    if (fd < 0) {
        PQclear(res);
        return err_set(e, ERR_FAILURE, NULL, "memfd_create: %s", strerror(errno));
    }
    const char *data = PQgetvalue(res, 0, 1);
    size_t len = (size_t)PQgetlength(res, 0, 1), off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            err_set(e, ERR_FAILURE, NULL, "writing %s to memory: %s", name, strerror(errno));
            goto out;
        }
        off += (size_t)w;
    }
    struct caris_wal_push_result pr;
    if (caris_wal_push_fd(r, fd, name, name, op, &pr, e) == 0) {
        caris_op_log(op, LOG_INFO, "stored timeline history %s%s", name,
                     pr.already ? " (archived before, identical)" : "");
        rc = 0;
    }
out:
    close(fd);
    PQclear(res);
    return rc;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Stores the first len bytes of the segment at seg_start: the whole segment (len == segsz) as
 * archive_command would push it (caris_wal_push_fd: the identical-content rule holds when
 * archive_command pushes it too), a shorter prefix as a streamed partial. */
static int store(struct repo *r, const uint8_t *buf, size_t len, uint64_t segsz, uint32_t tli,
                 uint64_t seg_start, json_t *cache, const struct caris_op *op, struct err *e)
{
    /* the repository moved or replaced since it was opened (its directory renamed, another
     * made at the path): stored there, the WAL would be "archived" where no recovery looks.
     * The run fails before it reports anything more flushed (the slot keeps the WAL), and is
     * started again on the repository at the path (the daemon opens it afresh for each run) */
    if (storage_moved(repo_storage(r)))
        return err_set(e, ERR_IO,
                       "start wal receive again: it opens the repository now at the path (the "
                       "daemon does so by itself); the replication slot kept the WAL not stored",
                       "the repository at %s is not the directory wal receive opened (moved, "
                       "replaced or removed since): nothing more is stored into it",
                       repo_path(r));
    char name[CARIS_WAL_STREAM_NAME_MAX];
    if (len == segsz)
        caris_wal_segment_name(tli, seg_start / segsz, (int64_t)segsz, name);
    else
        caris_wal_stream_name(tli, seg_start, segsz, len, name);
    int fd = memfd_create("caris-walrecv", MFD_CLOEXEC);
    if (fd < 0)
        return err_set(e, ERR_FAILURE, NULL, "memfd_create: %s", strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return err_set(e, ERR_FAILURE, NULL, "writing segment %s to memory: %s", name,
                           strerror(errno));
        }
        off += (size_t)w;
    }
    lseek(fd, 0, SEEK_SET);
    int64_t t0 = mono_ns();
    struct caris_wal_push_result res;
    int rc = len == segsz
                 ? caris_wal_push_fd(r, fd, name, name, op, &res, e)
                 : caris_wal_push_stream_fd(r, fd, tli, seg_start, segsz, cache, op, &res, e);
    close(fd);
    if (rc == 0)
        caris_op_log(op, LOG_INFO, "stored WAL %s %s%s; flushed up to %X/%X (%lld ms)",
                     len == segsz ? "segment" : "partial", name,
                     res.already ? " (archived before, identical)" : "",
                     (unsigned)((seg_start + len) >> 32), (unsigned)(seg_start + len),
                     (long long)((mono_ns() - t0) / 1000000));
    return rc;
}

int caris_wal_receive(struct repo *r, const struct wal_receive_opts *o, struct err *e)
{
    struct pgsrc_target t;
    if (pgsrc_target_parse(o->url, o->password, o->url_var ? o->url_var : "POSTGRES_URL", &t, e) !=
        0)
        return -1;
    PGconn *c = caris_phys_replication_connect(&t, e);
    pgsrc_target_free(&t);
    if (!c)
        return -1;
    int rc = -1;
    uint8_t *buf = NULL;
    json_t *cache = NULL;
    PGresult *res = one_row(c, "IDENTIFY_SYSTEM", e);
    if (!res)
        goto out;
    uint32_t tli = (uint32_t)atoi(PQgetvalue(res, 0, 1));
    uint64_t xlogpos = 0;
    if (caris_lsn_parse(PQgetvalue(res, 0, 2), &xlogpos) != 0) {
        err_set(e, ERR_DATABASE, NULL, "IDENTIFY_SYSTEM sent a bad LSN '%s'",
                PQgetvalue(res, 0, 2));
        PQclear(res);
        goto out;
    }
    PQclear(res);
    if (!(res = one_row(c, "SHOW wal_segment_size", e)))
        goto out;
    char *unit;
    uint64_t segsz = strtoull(PQgetvalue(res, 0, 0), &unit, 10);
    segsz *= strcmp(unit, "GB") == 0 ? 1 << 30 : strcmp(unit, "MB") == 0 ? 1 << 20 : 1;
    PQclear(res);
    if (segsz < (1 << 20) || (segsz & (segsz - 1))) {
        err_set(e, ERR_DATABASE, NULL, "unexpected wal_segment_size %llu",
                (unsigned long long)segsz);
        goto out;
    }
    char sql[256];
    /* Streaming starts at the slot's position (rounded down to its segment), not after the
     * newest archived segment: the archive may hold a later segment (pushed by hand or by
     * archive_command) while the ones between were never archived, and acknowledging from
     * there would let the server recycle them. Segments archived already are stored again as
     * "identical" (caris_wal_push_fd). */
    uint64_t start = 0;
    snprintf(sql, sizeof(sql), "READ_REPLICATION_SLOT %s", o->slot);
    if (!(res = one_row(c, sql, e)))
        goto out;
    if (PQgetisnull(res, 0, 0) && o->create_slot) {
        /* no such slot: create it (--create-slot, the daemon: "create if missing") */
        PQclear(res);
        snprintf(sql, sizeof(sql), "CREATE_REPLICATION_SLOT %s PHYSICAL RESERVE_WAL", o->slot);
        if (!(res = one_row(c, sql, e)))
            goto out;
        PQclear(res);
        caris_op_log(o->op, LOG_INFO, "created physical replication slot %s", o->slot);
        snprintf(sql, sizeof(sql), "READ_REPLICATION_SLOT %s", o->slot);
        if (!(res = one_row(c, sql, e)))
            goto out;
    }
    if (PQgetisnull(res, 0, 1)) {
        PQclear(res);
        err_set(e, ERR_DATABASE, "create it with --create-slot",
                "replication slot %s does not exist or has no WAL reserved", o->slot);
        goto out;
    }
    if (caris_lsn_parse(PQgetvalue(res, 0, 1), &start) != 0) {
        err_set(e, ERR_DATABASE, NULL, "READ_REPLICATION_SLOT sent a bad LSN '%s'",
                PQgetvalue(res, 0, 1));
        PQclear(res);
        goto out;
    }
    PQclear(res);
    start -= start % segsz;
    if (start > xlogpos) {
        err_set(e, ERR_DATABASE, "drop and re-create the replication slot",
                "replication slot %s is at %X/%X, after the server's position %X/%X", o->slot,
                (unsigned)(start >> 32), (unsigned)start, (unsigned)(xlogpos >> 32),
                (unsigned)xlogpos);
        goto out;
    }
    /* stores run to their end even when a stop is asked (each is at most one segment): the
     * stop itself stores what arrived, which a cancelled store would lose */
    struct caris_op sop = {0};
    if (o->op) {
        sop = *o->op;
        sop.cancel = NULL;
    }
    uint64_t flushed = start; /* what the archive holds: reported to the server, never less */
    /* the streamed partials' records read so far: each store reads only the new ones */
    cache = json_object();
restart:
    if (tli > 1 && store_history(c, r, tli, o->op, e) != 0)
        goto out;
    snprintf(sql, sizeof(sql), "START_REPLICATION SLOT %s PHYSICAL %X/%X TIMELINE %u", o->slot,
             (unsigned)(start >> 32), (unsigned)start, tli);
    res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        err_set(e, ERR_DATABASE, "the server's log may say more", "%s failed: %s", sql,
                PQerrorMessage(c));
        PQclear(res);
        goto out;
    }
    PQclear(res);
    caris_op_log(o->op, LOG_INFO, "streaming WAL from %X/%X on timeline %u (slot %s)",
                 (unsigned)(start >> 32), (unsigned)start, tli, o->slot);
    if (!buf && !(buf = malloc(segsz))) {
        err_set(e, ERR_FAILURE, NULL, "out of memory");
        goto out;
    }
    uint64_t seg_start = start;
    size_t have = 0;
    /* Every flush interval, what has arrived of the current segment is stored as a streamed
     * partial and only then reported flushed: the server's slot keeps everything after, and
     * a crash of the server loses at most what arrived since (the interval plus one store). */
    int64_t flush_ns = (int64_t)(o->flush_seconds > 0 ? o->flush_seconds : 5) * 1000000000;
    int64_t next_flush = mono_ns() + flush_ns;
    for (;;) {
        if (caris_op_cancelled(o->op)) {
            /* the unfinished segment is stored as a partial; the slot keeps the rest */
            if (have && seg_start + have > flushed &&
                store(r, buf, have, segsz, tli, seg_start, cache, &sop, e) != 0)
                break;
            if (have)
                flushed = seg_start + have;
            /* tell the server (so the slot lets go of it), then end the stream */
            struct err e2 = ERR_INIT;
            if (send_status(c, flushed, &e2) == 0 && PQputCopyEnd(c, NULL) == 1)
                PQflush(c);
            caris_op_log(o->op, LOG_INFO, "stopping: flushed up to %X/%X",
                         (unsigned)(flushed >> 32), (unsigned)flushed);
            rc = 0;
            break;
        }
        int64_t now = mono_ns();
        if (now >= next_flush) {
            if (have && seg_start + have > flushed) {
                if (store(r, buf, have, segsz, tli, seg_start, cache, &sop, e) != 0)
                    break;
                flushed = seg_start + have;
                if (o->on_flush)
                    o->on_flush(o->on_flush_ctx, flushed);
                if (send_status(c, flushed, e) != 0)
                    break;
            }
            /* from now: storing a large partial may take a while, and the next one must
             * still follow within an interval of the data it adds */
            next_flush = mono_ns() + flush_ns;
        }
        char *m = NULL;
        int n = PQgetCopyData(c, &m, 1);
        if (n == 0) {
            fd_set fds;
            FD_ZERO(&fds);
            FD_SET(PQsocket(c), &fds);
            int64_t wait_us = (next_flush - mono_ns()) / 1000;
            if (wait_us > 200000)
                wait_us = 200000;
            if (wait_us < 1000)
                wait_us = 1000;
            struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)wait_us};
            if (select(PQsocket(c) + 1, &fds, NULL, NULL, &tv) < 0 && errno != EINTR) {
                err_set(e, ERR_FAILURE, NULL, "select: %s", strerror(errno));
                break;
            }
            if (!PQconsumeInput(c)) {
                err_set(e, ERR_DATABASE, NULL, "replication connection lost: %s",
                        PQerrorMessage(c));
                break;
            }
            continue;
        }
        if (n == -1) {
            /* The server ended the stream: at a timeline switch (the server was a standby,
             * promoted) it then sends the next timeline and where it starts, and streaming
             * goes on there from the start of that segment (the new timeline's file holds
             * the old one's WAL before the switch), as pg_receivewal does; otherwise (a
             * shutdown) it is an error. What arrived is stored first either way. */
            if (have && seg_start + have > flushed) {
                if (store(r, buf, have, segsz, tli, seg_start, cache, &sop, e) != 0)
                    break;
                flushed = seg_start + have;
                if (o->on_flush)
                    o->on_flush(o->on_flush_ctx, flushed);
            }
            if (PQputCopyEnd(c, NULL) != 1 || PQflush(c) != 0) {
                err_set(e, ERR_DATABASE, NULL, "ending the replication stream failed: %s",
                        PQerrorMessage(c));
                break;
            }
            uint32_t next_tli = 0;
            uint64_t next_start = 0;
            res = PQgetResult(c);
            if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
                PQnfields(res) >= 2) {
                next_tli = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
                if (caris_lsn_parse(PQgetvalue(res, 0, 1), &next_start) != 0)
                    next_tli = 0;
                PQclear(res);
                res = PQgetResult(c);
            }
            bool ended_ok = PQresultStatus(res) == PGRES_COMMAND_OK;
            PQclear(res);
            while ((res = PQgetResult(c)))
                PQclear(res);
            if (ended_ok && next_tli > tli && next_start >= seg_start) {
                caris_op_log(o->op, LOG_INFO,
                             "timeline switch: timeline %u ends at %X/%X, following timeline %u",
                             tli, (unsigned)(next_start >> 32), (unsigned)next_start, next_tli);
                tli = next_tli;
                start = next_start - next_start % segsz;
                goto restart;
            }
            err_set(e, ERR_DATABASE, "the daemon starts it again; by hand: run `wal receive` again",
                    "the server ended streaming at %X/%X (shut down?)",
                    (unsigned)((seg_start + have) >> 32), (unsigned)(seg_start + have));
            break;
        }
        if (n < 0) {
            err_set(e, ERR_DATABASE, NULL, "replication stream failed: %s", PQerrorMessage(c));
            break;
        }
        const uint8_t *p = (const uint8_t *)m;
        if (p[0] == 'k' && n >= 18) {
            int reply = p[17];
            PQfreemem(m);
            if (reply && send_status(c, flushed, e) != 0)
                break;
            continue;
        }
        if (p[0] != 'w' || n < 25) {
            PQfreemem(m);
            err_set(e, ERR_DATABASE, NULL, "unexpected message '%c' in the replication stream",
                    p[0]);
            break;
        }
        uint64_t at = get64(p + 1);
        const uint8_t *d = p + 25;
        size_t len = (size_t)n - 25;
        if (at != seg_start + have) {
            PQfreemem(m);
            err_set(e, ERR_DATABASE, NULL, "WAL data at %X/%X, expected %X/%X",
                    (unsigned)(at >> 32), (unsigned)at, (unsigned)((seg_start + have) >> 32),
                    (unsigned)(seg_start + have));
            break;
        }
        bool failed = false;
        while (len > 0) {
            size_t k = segsz - have < len ? segsz - have : len;
            memcpy(buf + have, d, k);
            have += k;
            d += k;
            len -= k;
            if (have == segsz) {
                if (store(r, buf, segsz, segsz, tli, seg_start, cache, &sop, e) != 0) {
                    failed = true;
                    break;
                }
                seg_start += segsz;
                flushed = seg_start;
                have = 0;
                if (o->on_flush)
                    o->on_flush(o->on_flush_ctx, flushed);
                if (send_status(c, flushed, e) != 0) {
                    failed = true;
                    break;
                }
            }
        }
        PQfreemem(m);
        if (failed)
            break;
    }
    /* the stream ended with an error (the server crashed, the connection broke): what did
     * arrive is WAL the server had flushed, so it is stored before giving up (best effort:
     * the error that ended the stream is the one reported) */
    if (rc != 0 && buf && have && seg_start + have > flushed) {
        struct err e2 = ERR_INIT;
        if (store(r, buf, have, segsz, tli, seg_start, cache, &sop, &e2) == 0) {
            flushed = seg_start + have;
            if (o->on_flush)
                o->on_flush(o->on_flush_ctx, flushed);
        } else {
            caris_op_log(o->op, LOG_ERROR, "storing the last partial segment failed: %s", e2.msg);
        }
    }
out:
    json_decref(cache);
    free(buf);
    PQfinish(c);
    return rc;
}

int caris_wal_flush_seconds_parse(const char *s, unsigned *out, struct err *e)
{
    char *end;
    errno = 0;
    unsigned long v = s ? strtoul(s, &end, 10) : 0;
    if (!s || *s < '0' || *s > '9' || *end || errno || v < 1 || v > 3600)
        return err_set(e, ERR_USAGE, "a whole number of seconds from 1 to 3600 (default 5)",
                       "flush interval '%s' is not a whole number of seconds from 1 to 3600",
                       s ? s : "");
    *out = (unsigned)v;
    return 0;
}

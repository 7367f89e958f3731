/* Physical base backup (caris/pitr.h): BASE_BACKUP over a replication connection, the COPY
 * stream of PostgreSQL 15 (every CopyData message starts with a type byte: 'n' a new archive,
 * 'd' its data, 'p' progress, 'm' the server's backup manifest follows), its tar archives
 * parsed as they arrive, and each file fed straight into the repository: relation files in
 * fixed page-aligned blocks (PHYS_BLOCK_SIZE), with every page's checksum checked when the
 * cluster has data checksums; other files in content-defined chunks. Nothing is written to
 * local disk. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caris/crypto.h"
#include "caris/pgpage.h"
#include "caris/pgsrc.h"
#include "caris/pitr.h"
#include "caris/stream.h"
#include "caris/wal.h"
#include "common.h"
#include "phys_incr.h"

/* A non-relation file up to this size is held in memory and cut into content-defined chunks
 * (they are small: configuration, pg_xact, pg_multixact, ...); a larger one is cut into fixed
 * blocks like a relation file, so memory stays bounded whatever the data directory holds. */
#define SMALL_FILE_MAX (16u << 20)
#define TAR_BLOCK 512
#define MAX_WARNINGS 1000 /* bad pages listed one by one; beyond, only counted */

void phys_lsn_format(uint64_t lsn, char *out, size_t n)
{
    snprintf(out, n, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
}

/* The file being read out of the tar stream. */
struct pfile {
    char *name; /* in the backup: a data directory path, or pg_tblspc/<oid>/<path> */
    uint64_t size, done;
    unsigned mode;
    bool fixed;    /* fixed blocks (relation file or large file), else held whole */
    bool relation; /* pages checked */
    uint32_t segno;
    struct buf data; /* the current block, or the whole small file */
    struct cx_sha256 *sha;
    json_t *chunks;
};

struct pb {
    struct repo *r;
    struct repo_writer *w;
    const struct phys_backup_opts *o;
    struct phys_incr *pi; /* relation files' blocks: whole or as page deltas */
    bool checksums;
    uint64_t start_lsn;
    /* the archive being read */
    char archive[256];
    char prefix[64]; /* "" for base.tar, "pg_tblspc/<oid>/" for a tablespace */
    bool in_manifest;
    struct buf manifest;
    /* tar state */
    uint8_t hdr[TAR_BLOCK];
    size_t hdr_len;
    uint64_t pad; /* bytes of padding still to skip after a file's data */
    bool in_file, ended;
    struct pfile f;
    /* what the backup holds */
    json_t *entries, *dirs, *links, *warnings, *tablespaces;
    char *backup_label;
    uint64_t files, bytes, pages_checked, bad_pages, pages_skipped_recent;
    /* the pages counted in pages_skipped_recent, judged again once the backup's end is known
     * (recheck_skipped): up to MAX_WARNINGS listed, the highest LSN of the others */
    struct skipped_page *skipped;
    size_t nskipped;
    uint64_t unlisted, unlisted_max_lsn;
    int64_t start_mono, last_progress;
};

struct skipped_page {
    char *file;
    uint64_t block, lsn;
    uint16_t stored, computed;
};

static void add_chunk(json_t *chunks, const uint8_t id[32], size_t len)
{
    char hex[65];
    cx_hex(id, 32, hex);
    json_array_append_new(chunks, json_pack("[s, I]", hex, (json_int_t)len));
}

static void bad_page(struct pb *b, const char *file, uint64_t block, uint16_t stored,
                     uint16_t computed, const char *why)
{
    b->bad_pages++;
    char msg[700];
    snprintf(msg, sizeof(msg), "invalid page checksum in %s block %llu: stored %u, computed %u%s",
             file, (unsigned long long)block, stored, computed, why);
    caris_op_log(b->o->op, LOG_WARN, "%s", msg);
    if (json_array_size(b->warnings) < MAX_WARNINGS)
        json_array_append_new(b->warnings,
                              json_pack("{s:s, s:s, s:I, s:s}", "message", msg, "file", file,
                                        "block", (json_int_t)block, "kind", "page-checksum"));
}

static void check_pages(struct pb *b, const uint8_t *p, size_t len, uint64_t file_off)
{
    if (!b->checksums || !b->f.relation)
        return;
    for (size_t off = 0; off + PGPAGE_SIZE <= len; off += PGPAGE_SIZE) {
        uint64_t blk_in_file = (file_off + off) / PGPAGE_SIZE;
        uint32_t blkno = (uint32_t)(b->f.segno * PGPAGE_RELSEG_PAGES + blk_in_file);
        uint16_t stored, computed;
        b->pages_checked++;
        enum pgpage_verdict v = pgpage_verify(p + off, blkno, b->start_lsn, &stored, &computed);
        /* a page written while the server read it may be torn in our copy; when its LSN is at
         * or after the backup's start, WAL replay rewrites it from its full-page image: not
         * bad, counted apart */
        if (v == PGPAGE_SKIPPED) {
            b->pages_skipped_recent++;
            uint64_t lsn = pgpage_lsn(p + off);
            if (b->nskipped < MAX_WARNINGS) {
                if (!b->skipped)
                    b->skipped = xcalloc(MAX_WARNINGS, sizeof(*b->skipped));
                b->skipped[b->nskipped++] =
                    (struct skipped_page){xstrdup(b->f.name), blk_in_file, lsn, stored, computed};
            } else {
                b->unlisted++;
                if (lsn > b->unlisted_max_lsn)
                    b->unlisted_max_lsn = lsn;
            }
        }
        if (v == PGPAGE_BAD)
            bad_page(b, b->f.name, blk_in_file, stored, computed, "");
    }
}

/* A page written while the backup read it carries the LSN of a WAL record written before the
 * backup's end: a page skipped at first (its LSN at or after the start) whose LSN lies after
 * the end was not being written but is damaged (a header overwritten with garbage), and is
 * reported bad like any other. */
static void recheck_skipped(struct pb *b, json_t *phys)
{
    uint64_t stop;
    const char *stop_s = json_string_value(json_object_get(phys, "stop_lsn"));
    if (caris_lsn_parse(stop_s, &stop) != 0)
        return;
    for (size_t i = 0; i < b->nskipped; i++) {
        struct skipped_page *s = &b->skipped[i];
        if (s->lsn <= stop)
            continue;
        char lsn[32], why[120];
        phys_lsn_format(s->lsn, lsn, sizeof(lsn));
        snprintf(why, sizeof(why), " (its LSN %s lies after the backup's end %s)", lsn, stop_s);
        b->pages_skipped_recent--;
        bad_page(b, s->file, s->block, s->stored, s->computed, why);
    }
    if (b->unlisted && b->unlisted_max_lsn > stop) {
        /* which of them is not known: at least one is counted */
        b->pages_skipped_recent--;
        b->bad_pages++;
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "of %llu more pages with an invalid checksum taken for pages written during the "
                 "backup, at least one has an LSN after the backup's end: check the cluster "
                 "(pg_checksums --check with the server stopped)",
                 (unsigned long long)b->unlisted);
        caris_op_log(b->o->op, LOG_WARN, "%s", msg);
        json_array_append_new(b->warnings,
                              json_pack("{s:s, s:s}", "message", msg, "kind", "page-checksum"));
    }
}

/* Stores the block held in f.data as one chunk. */
static int store_block(struct pb *b, struct err *e)
{
    struct pfile *f = &b->f;
    if (f->data.len == 0)
        return 0;
    check_pages(b, f->data.data, f->data.len, f->done - f->data.len);
    if (f->relation) {
        if (phys_incr_block(b->pi, f->data.data, f->data.len, f->chunks, e) != 0)
            return -1;
        f->data.len = 0;
        return 0;
    }
    uint8_t id[32];
    repo_chunk_id(b->r, f->data.data, f->data.len, id);
    if (repo_writer_add(b->w, 0, id, f->data.data, f->data.len, e) < 0)
        return -1;
    add_chunk(f->chunks, id, f->data.len);
    f->data.len = 0;
    return 0;
}

static bool bad_path(const char *p)
{
    if (!*p || *p == '/')
        return true;
    for (const char *s = p; s;) {
        if (strncmp(s, "..", 2) == 0 && (s[2] == '/' || s[2] == '\0'))
            return true;
        s = strchr(s, '/');
        if (s)
            s++;
    }
    return false;
}

static uint64_t tar_number(const uint8_t *p, size_t n)
{
    if (p[0] & 0x80) { /* base-256, for sizes of 8 GiB and more */
        uint64_t v = p[0] & 0x3f;
        for (size_t i = 1; i < n; i++)
            v = (v << 8) | p[i];
        return v;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n && p[i]; i++)
        if (p[i] >= '0' && p[i] <= '7')
            v = v * 8 + (uint64_t)(p[i] - '0');
    return v;
}

static int file_end(struct pb *b, struct err *e)
{
    struct pfile *f = &b->f;
    uint8_t sha[32];
    if (f->fixed) {
        if (store_block(b, e) != 0)
            return -1;
    } else {
        struct stream_result sr = {0};
        if (stream_store_buf(b->r, b->w, 1, f->data.data, f->data.len,
                             repo_chunker_params(b->r, false), &sr, e) != 0)
            return -1;
        json_decref(f->chunks);
        f->chunks = sr.chunks;
    }
    cx_sha256_final(f->sha, sha);
    char hex[65];
    cx_hex(sha, 32, hex);
    json_t *ent = json_pack("{s:s, s:s, s:I, s:i, s:s, s:b, s:O}", "type", "file", "name", f->name,
                            "size", (json_int_t)f->size, "mode", (int)f->mode, "sha256", hex,
                            "fixed", f->fixed, "chunks", f->chunks);
    if (f->relation && phys_incr_file_end(b->pi, ent, e) != 0) {
        json_decref(ent);
        return -1;
    }
    json_array_append_new(b->entries, ent);
    if (strcmp(f->name, "backup_label") == 0)
        b->backup_label = xstrndup((const char *)f->data.data, f->data.len);
    b->files++;
    b->bytes += f->size;
    b->in_file = false;
    return 0;
}

static void file_free(struct pfile *f)
{
    free(f->name);
    buf_free(&f->data);
    if (f->sha)
        cx_sha256_free(f->sha);
    json_decref(f->chunks);
    memset(f, 0, sizeof(*f));
}

/* Names are stored as JSON strings, which are UTF-8: a name that is not (a file named in
 * Latin-1 in the data directory, a tablespace's location) was left out of the backup without a
 * word (json_pack refuses it), and the restored cluster lacked it. Refused, naming it. */
static int utf8_or_refuse(const char *what, const char *s, size_t len, struct err *e)
{
    if (str_is_utf8(s, len))
        return 0;
    char esc[400];
    str_escape(s, len, esc, sizeof(esc));
    return err_set(e, ERR_DATABASE,
                   "rename it to a UTF-8 name (nothing was stored: run the backup again then)",
                   "the %s %s is not UTF-8: physical backups store UTF-8 names only", what, esc);
}

/* A tar header: the next member. */
static int tar_header(struct pb *b, struct err *e)
{
    const uint8_t *h = b->hdr;
    bool zero = true;
    for (size_t i = 0; i < TAR_BLOCK && zero; i++)
        zero = h[i] == 0;
    if (zero) { /* the end-of-archive blocks */
        b->ended = true;
        return 0;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < TAR_BLOCK; i++)
        sum += (i >= 148 && i < 156) ? ' ' : h[i];
    if (tar_number(h + 148, 8) != sum)
        return err_set(e, ERR_DATABASE, "the server sent something that is not a tar archive",
                       "bad tar header checksum in archive %s", b->archive);
    char name[260] = "";
    if (memcmp(h + 257, "ustar", 5) == 0 && h[345])
        snprintf(name, sizeof(name), "%.155s/%.100s", (const char *)h + 345, (const char *)h);
    else
        snprintf(name, sizeof(name), "%.100s", (const char *)h);
    char *n = name;
    while (strncmp(n, "./", 2) == 0)
        n += 2;
    size_t nl = strlen(n);
    while (nl > 0 && n[nl - 1] == '/')
        n[--nl] = '\0';
    uint64_t size = tar_number(h + 124, 12);
    unsigned mode = (unsigned)tar_number(h + 100, 8) & 07777;
    char type = (char)h[156];
    if (nl == 0 && type == '5') /* the archive's own root */
        return 0;
    if (bad_path(n))
        return err_set(e, ERR_DATABASE, NULL, "the server sent an unsafe path '%s' in %s", n,
                       b->archive);
    if (utf8_or_refuse("file name", n, strlen(n), e) != 0)
        return -1;
    char *full = xasprintf("%s%s", b->prefix, n);
    if (type == '5') {
        json_array_append_new(b->dirs, json_pack("{s:s, s:i}", "name", full, "mode", (int)mode));
        free(full);
        return 0;
    }
    if (type == '2') {
        char link[101];
        snprintf(link, sizeof(link), "%.100s", (const char *)h + 157);
        if (utf8_or_refuse("symbolic link target", link, strlen(link), e) != 0) {
            free(full);
            return -1;
        }
        json_array_append_new(b->links, json_pack("{s:s, s:s}", "name", full, "target", link));
        free(full);
        return 0;
    }
    if (type != '0' && type != '\0') {
        free(full);
        return err_set(e, ERR_DATABASE, NULL, "unexpected tar member type '%c' for %s in %s", type,
                       n, b->archive);
    }
    struct pfile *f = &b->f;
    file_free(f);
    f->name = full;
    f->size = size;
    f->mode = mode;
    f->relation = pgpage_is_relation(n, &f->segno);
    f->fixed = f->relation || size > SMALL_FILE_MAX;
    f->sha = cx_sha256_new();
    f->chunks = json_array();
    b->in_file = true;
    b->pad = (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK;
    if (f->relation && phys_incr_file_begin(b->pi, f->name, e) != 0)
        return -1;
    if (size == 0)
        return file_end(b, e);
    return 0;
}

static void report_progress(struct pb *b)
{
    int64_t now = time_mono_ns();
    if (!b->o->progress || now - b->last_progress < 200000000)
        return;
    b->last_progress = now;
    progress_report(b->o->progress, b->o->ctx, "backup", b->files, b->bytes + b->f.done, 0,
                    b->start_mono);
}

/* Archive data ('d' messages): tar headers, file contents and padding, in any split. */
static int tar_feed(struct pb *b, const uint8_t *p, size_t n, struct err *e)
{
    while (n > 0) {
        if (b->in_file) {
            struct pfile *f = &b->f;
            uint64_t left = f->size - f->done;
            size_t take = n < left ? n : (size_t)left;
            if (f->fixed) {
                size_t room = PHYS_BLOCK_SIZE - f->data.len;
                if (take > room)
                    take = room;
            }
            buf_append(&f->data, p, take);
            cx_sha256_update(f->sha, p, take);
            f->done += take;
            p += take;
            n -= take;
            if (f->fixed && f->data.len == PHYS_BLOCK_SIZE && store_block(b, e) != 0)
                return -1;
            if (f->done == f->size && file_end(b, e) != 0)
                return -1;
            continue;
        }
        if (b->pad > 0) {
            size_t skip = n < b->pad ? n : (size_t)b->pad;
            b->pad -= skip;
            p += skip;
            n -= skip;
            continue;
        }
        if (b->ended) /* trailing zero blocks */
            return 0;
        size_t take = TAR_BLOCK - b->hdr_len;
        if (take > n)
            take = n;
        memcpy(b->hdr + b->hdr_len, p, take);
        b->hdr_len += take;
        p += take;
        n -= take;
        if (b->hdr_len == TAR_BLOCK) {
            b->hdr_len = 0;
            if (tar_header(b, e) != 0)
                return -1;
        }
    }
    return 0;
}

static int archive_end(struct pb *b, struct err *e)
{
    if (b->archive[0] && (b->in_file || b->hdr_len != 0))
        return err_set(e, ERR_DATABASE, "the server's log may say why",
                       "archive %s ended in the middle of a file", b->archive);
    return 0;
}

/* One CopyData message of the backup stream. */
static int on_message(struct pb *b, const uint8_t *m, size_t n, struct err *e)
{
    if (n == 0)
        return err_set(e, ERR_DATABASE, NULL, "empty message in the base backup stream");
    switch (m[0]) {
    case 'n': { /* new archive: name, then the tablespace's location ("" for base) */
        if (archive_end(b, e) != 0)
            return -1;
        const char *name = (const char *)m + 1;
        size_t nl = strnlen(name, n - 1);
        if (1 + nl >= n)
            return err_set(e, ERR_DATABASE, NULL, "malformed new-archive message");
        const char *loc = name + nl + 1;
        size_t ll = strnlen(loc, n - nl - 2);
        snprintf(b->archive, sizeof(b->archive), "%.*s", (int)nl, name);
        b->hdr_len = 0;
        b->pad = 0;
        b->ended = false;
        if (strcmp(b->archive, "base.tar") == 0) {
            b->prefix[0] = '\0';
        } else {
            unsigned long oid = strtoul(b->archive, NULL, 10);
            if (oid == 0 || strstr(b->archive, ".tar") == NULL)
                return err_set(e, ERR_DATABASE,
                               "compression on the server is not used by caris-backup",
                               "unexpected archive %s in the base backup stream", b->archive);
            snprintf(b->prefix, sizeof(b->prefix), "pg_tblspc/%lu/", oid);
            if (utf8_or_refuse("tablespace location", loc, ll, e) != 0)
                return -1;
            json_array_append_new(b->tablespaces, json_pack("{s:I, s:s%}", "oid", (json_int_t)oid,
                                                            "location", loc, ll));
        }
        caris_op_log(b->o->op, LOG_INFO, "reading archive %s", b->archive);
        return 0;
    }
    case 'd':
        if (b->in_manifest) {
            buf_append(&b->manifest, m + 1, n - 1);
            return 0;
        }
        if (!b->archive[0])
            return err_set(e, ERR_DATABASE, NULL, "archive data before any archive");
        if (tar_feed(b, m + 1, n - 1, e) != 0)
            return -1;
        report_progress(b);
        return 0;
    case 'p':
        return 0;
    case 'm':
        if (archive_end(b, e) != 0)
            return -1;
        b->archive[0] = '\0';
        b->in_manifest = true;
        return 0;
    default:
        return err_set(e, ERR_DATABASE, "use a PostgreSQL server of version 15 or later",
                       "unknown message type '%c' in the base backup stream", m[0]);
    }
}

static void notice_to_log(void *arg, const char *msg)
{
    const struct caris_op *op = arg;
    char line[1024];
    snprintf(line, sizeof(line), "%s", msg);
    size_t l = strlen(line);
    while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == ' '))
        line[--l] = '\0';
    caris_op_log(op, LOG_INFO, "server: %s", line);
}

/* The server's error, with the hint the operator needs for the usual refusals. */
static int server_error(PGconn *c, const char *what, struct err *e)
{
    char msg[800];
    snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
    size_t l = strlen(msg);
    while (l > 0 && (msg[l - 1] == '\n' || msg[l - 1] == ' '))
        msg[--l] = '\0';
    const char *hint = "the server's log may say more; nothing was committed";
    if (strstr(msg, "permission denied") || strstr(msg, "must be superuser or replication"))
        hint = "the role needs the REPLICATION attribute: ALTER ROLE <user> REPLICATION";
    return err_set(e, ERR_DATABASE, hint, "%s failed: %s", what, msg);
}

static PGconn *replication_connect(const struct phys_backup_opts *o, struct pgsrc_target *t,
                                   struct err *e)
{
    pgsrc_target_set(t, "replication", "true");
    PGconn *c = pgsrc_connect(t, NULL, e);
    if (c)
        return c;
    char user[256];
    pgsrc_target_user_shown(t, user, sizeof(user));
    if (strstr(e->msg, "replication connection") || strstr(e->msg, "no pg_hba.conf entry"))
        snprintf(e->hint, sizeof(e->hint),
                 "the server's pg_hba.conf needs a line for replication connections, e.g. "
                 "`host replication %s <this host>/32 scram-sha-256` (the database column "
                 "'all' does not match them), then reload the server",
                 user);
    else if (strstr(e->msg, "must be superuser or replication"))
        snprintf(e->hint, sizeof(e->hint),
                 "the role needs the REPLICATION attribute: ALTER ROLE %s REPLICATION", user);
    (void)o;
    return NULL;
}

struct pg_conn *caris_phys_replication_connect(struct pgsrc_target *t, struct err *e)
{
    return replication_connect(NULL, t, e);
}

/* A one-row, text result of a replication command. */
static PGresult *repl_query(PGconn *c, const char *sql, struct err *e)
{
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
        server_error(c, sql, e);
        PQclear(res);
        return NULL;
    }
    return res;
}

struct sysinfo {
    char systemid[32];
    int timeline;
    int version_num;
    char version[64];
    bool checksums;
    char archive_mode[16];
    int64_t wal_segment_size;
};

static int system_info(PGconn *c, struct sysinfo *si, struct err *e)
{
    memset(si, 0, sizeof(*si));
    si->version_num = PQserverVersion(c);
    if (si->version_num < 150000)
        return err_set(e, ERR_DATABASE,
                       "use logical backups (without --physical) for this server, or upgrade it",
                       "not implemented yet: physical backups of PostgreSQL %d.%d (the base "
                       "backup protocol of PostgreSQL 15 or later is needed)",
                       si->version_num / 10000, si->version_num % 10000);
    PGresult *res = repl_query(c, "IDENTIFY_SYSTEM", e);
    if (!res)
        return -1;
    snprintf(si->systemid, sizeof(si->systemid), "%s", PQgetvalue(res, 0, 0));
    si->timeline = atoi(PQgetvalue(res, 0, 1));
    PQclear(res);
    /* segment_size: a page's checksum includes its block number, counted across the 1 GiB
     * segment files of a relation (PGPAGE_RELSEG_PAGES); another size (a build with
     * --with-segsize) gave every page past the first segment a wrong number: reported bad, or
     * skipped, hiding real damage there */
    const char *vars[] = {"server_version", "data_checksums",   "block_size",
                          "archive_mode",   "wal_segment_size", "segment_size"};
    for (size_t i = 0; i < 6; i++) {
        char sql[64];
        snprintf(sql, sizeof(sql), "SHOW %s", vars[i]);
        if (!(res = repl_query(c, sql, e)))
            return -1;
        const char *v = PQgetvalue(res, 0, 0);
        if (i == 0)
            snprintf(si->version, sizeof(si->version), "%s", v);
        else if (i == 1)
            si->checksums = strcmp(v, "on") == 0;
        else if (i == 2 && atoi(v) != (int)PGPAGE_SIZE) {
            err_set(e, ERR_DATABASE, NULL,
                    "not implemented yet: physical backups of a server with block_size %s (8192 "
                    "only)",
                    v);
            PQclear(res);
            return -1;
        } else if (i == 5 && strcmp(v, "1GB") != 0) {
            err_set(e, ERR_DATABASE, NULL,
                    "not implemented yet: physical backups of a server with segment_size %s (1GB "
                    "only: the server was built with --with-segsize)",
                    v);
            PQclear(res);
            return -1;
        } else if (i == 3)
            snprintf(si->archive_mode, sizeof(si->archive_mode), "%s", v);
        else if (i == 4) {
            /* "16MB" */
            char *end;
            long long n = strtoll(v, &end, 10);
            si->wal_segment_size = n * (strcmp(end, "GB") == 0   ? 1 << 30
                                        : strcmp(end, "MB") == 0 ? 1 << 20
                                        : strcmp(end, "kB") == 0 ? 1 << 10
                                                                 : 1);
        }
        PQclear(res);
    }
    if (strcmp(si->archive_mode, "off") == 0)
        return err_set(e, ERR_DATABASE,
                       "set archive_mode = on and archive_command = 'caris-backup --env-file "
                       "/etc/caris/backup.env wal push %p' on the server, restart it, then back up "
                       "again",
                       "archive_mode is off: a base backup without the WAL written while it ran "
                       "cannot be restored (caris-backup takes WAL from its WAL archive)");
    return 0;
}

/* Waits until the connection has input, a quarter of a second at a time, checking for a
 * cancellation in between: the server may send nothing for a long time (a checkpoint; at the
 * end, WAIT true: until it has archived the backup's WAL, forever while its archive_command
 * fails), and Ctrl-C or SIGTERM must still stop the backup (libpq's blocking calls would wait
 * on). */
static int await_input(struct pb *b, PGconn *c, struct err *e)
{
    for (;;) {
        if (caris_op_check(b->o->op, "nothing was committed", e) != 0)
            return -1;
        struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
        int r = poll(&p, 1, 250);
        if (r < 0 && errno != EINTR)
            return err_sys(e, errno, NULL, "cannot wait for the server");
        if (r > 0)
            return PQconsumeInput(c) ? 0 : server_error(c, "base backup stream", e);
    }
}

/* PQgetResult without blocking past a cancellation: NULL with *rc -1 when cancelled or the
 * connection failed. */
static PGresult *next_result(struct pb *b, PGconn *c, int *rc, struct err *e)
{
    while (PQisBusy(c))
        if (await_input(b, c, e) != 0) {
            *rc = -1;
            return NULL;
        }
    return PQgetResult(c);
}

/* Reads BASE_BACKUP's replies: the start position, the tablespaces, the COPY stream, the end
 * position. */
static int run_base_backup(struct pb *b, PGconn *c, const char *label, json_t *phys, struct err *e)
{
    char *cmd = xasprintf("BASE_BACKUP (LABEL '%s', CHECKPOINT '%s', WAIT true, MANIFEST 'yes', "
                          "MANIFEST_CHECKSUMS 'SHA256', VERIFY_CHECKSUMS false)",
                          label, b->o->spread_checkpoint ? "spread" : "fast");
    int sent = PQsendQuery(c, cmd);
    free(cmd);
    if (!sent)
        return server_error(c, "BASE_BACKUP", e);
    int tuples = 0, rc = 0;
    bool copied = false;
    PGresult *res;
    while ((res = next_result(b, c, &rc, e)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (rc != 0) {
            PQclear(res);
            continue;
        }
        if (st == PGRES_TUPLES_OK) {
            tuples++;
            if (tuples == 1 || (copied && PQntuples(res) >= 1 && PQnfields(res) >= 2)) {
                const char *lsn = PQgetvalue(res, 0, 0);
                uint64_t v;
                if (caris_lsn_parse(lsn, &v) != 0) {
                    rc = err_set(e, ERR_DATABASE, NULL, "BASE_BACKUP sent a bad LSN '%s'", lsn);
                } else if (!copied) {
                    b->start_lsn = v;
                    json_object_set_new(phys, "start_lsn", json_string(lsn));
                    json_object_set_new(phys, "start_timeline",
                                        json_integer(atoi(PQgetvalue(res, 0, 1))));
                    caris_op_log(b->o->op, LOG_INFO, "base backup started at %s", lsn);
                } else {
                    json_object_set_new(phys, "stop_lsn", json_string(lsn));
                    json_object_set_new(phys, "stop_timeline",
                                        json_integer(atoi(PQgetvalue(res, 0, 1))));
                }
            }
        } else if (st == PGRES_COPY_OUT) {
            copied = true;
            for (;;) {
                char *m = NULL;
                int n = PQgetCopyData(c, &m, 1);
                if (n == 0) {
                    if (await_input(b, c, e) != 0) {
                        rc = -1;
                        break;
                    }
                    continue;
                }
                if (n == -1)
                    break;
                if (n < 0) {
                    rc = server_error(c, "base backup stream", e);
                    break;
                }
                int mrc = on_message(b, (const uint8_t *)m, (size_t)n, e);
                PQfreemem(m);
                if (mrc != 0 || caris_op_check(b->o->op, "nothing was committed", e) != 0) {
                    rc = -1;
                    break;
                }
            }
            if (rc == 0 && !b->in_manifest)
                rc = archive_end(b, e);
        } else if (st != PGRES_COMMAND_OK) {
            rc = server_error(c, "BASE_BACKUP", e);
        }
        PQclear(res);
        if (rc != 0 && PQstatus(c) == CONNECTION_OK) {
            /* give up the connection rather than drain a backup we no longer want */
            break;
        }
    }
    if (rc == 0 && (!copied || !json_object_get(phys, "stop_lsn")))
        rc = err_set(e, ERR_DATABASE, "the server's log may say why",
                     "BASE_BACKUP ended without %s", copied ? "its end position" : "data");
    return rc;
}

/* The backup's WAL must be in this repository's archive before the backup is committed
 * (caris_wal_await); the result goes into the summary as "archive_check". */
static int archive_check(struct pb *b, json_t *phys, int64_t segsize, struct err *e)
{
    if (b->o->no_archive_check) {
        const char *msg = "the WAL archive was not checked (--no-archive-check): this backup "
                          "restores only if its WAL reaches the archive";
        caris_op_log(b->o->op, LOG_WARN, "%s", msg);
        json_array_append_new(
            b->warnings, json_pack("{s:s, s:s}", "message", msg, "kind", "archive-check-skipped"));
        json_object_set_new(phys, "archive_check", json_pack("{s:s}", "status", "skipped"));
        return 0;
    }
    uint64_t start, stop;
    json_int_t tli = json_integer_value(json_object_get(phys, "stop_timeline"));
    if (caris_lsn_parse(json_string_value(json_object_get(phys, "start_lsn")), &start) != 0 ||
        caris_lsn_parse(json_string_value(json_object_get(phys, "stop_lsn")), &stop) != 0 ||
        tli <= 0 || tli > UINT32_MAX)
        return err_set(e, ERR_DATABASE, NULL, "the base backup's WAL range is not known");
    caris_op_log(b->o->op, LOG_INFO, "waiting for the backup's WAL in the archive");
    struct caris_wal_await_result ar;
    if (caris_wal_await(b->r, (uint32_t)tli, start, stop, segsize, b->o->archive_timeout_s,
                        b->o->op, &ar, e) != 0)
        return -1;
    json_object_set_new(phys, "archive_check",
                        json_pack("{s:s, s:I, s:s, s:s, s:I}", "status", "ok", "segments",
                                  (json_int_t)ar.segments, "first", ar.first, "last", ar.last,
                                  "waited_ms", (json_int_t)ar.waited_ms));
    return 0;
}

/* BACKUP FROM / CHECKPOINT LOCATION / START TIME ... from backup_label */
static void label_field(const char *label, const char *key, json_t *phys, const char *as)
{
    const char *p = label ? strstr(label, key) : NULL;
    if (!p)
        return;
    p += strlen(key);
    while (*p == ' ' || *p == ':')
        p++;
    size_t n = strcspn(p, "\n");
    json_object_set_new(phys, as, json_stringn(p, n));
}

int caris_phys_backup(struct repo *r, const struct phys_backup_opts *o,
                      struct caris_backup_result *res, struct err *e)
{
    backup_result_take(res, NULL);
    int64_t start_ns, clock0 = time_mono_ns(); /* the duration: immune to clock changes */
    if (backup_time(o->time_ns, &start_ns, e) != 0)
        return -1;
    struct pgsrc_target t;
    if (pgsrc_target_parse(o->url, o->password, "POSTGRES_URL", &t, e) != 0)
        return -1;
    struct pb b = {.r = r, .o = o, .start_mono = time_mono_ns()};
    b.entries = json_array();
    b.dirs = json_array();
    b.links = json_array();
    b.warnings = json_array();
    b.tablespaces = json_array();
    json_t *phys = json_object(), *summary = NULL, *ref = NULL;
    PGconn *c = NULL;
    bool locked = false, claimed = false;
    char id[160] = "";
    int rc = -1;
    struct sysinfo si;
    const char *parent_id = NULL; /* borrowed from b.pi */

    if (!(c = replication_connect(o, &t, e)))
        goto out;
    PQsetNoticeProcessor(c, notice_to_log, (void *)o->op);
    if (system_info(c, &si, e) != 0)
        goto out;
    b.checksums = si.checksums;
    if (repo_lock(r, false, "backup database --physical", e) != 0)
        goto out;
    locked = true;
    b.w = repo_writer_new(r, 1);
    b.pi = phys_incr_new(r, b.w, o->op);
    if (o->incremental) {
        if (phys_incr_set_parent(b.pi, si.systemid, &parent_id, e) != 0) {
            if (e->code != ERR_DAMAGE)
                goto out;
            /* a damaged latest backup must not fail every later incremental until someone
             * takes a full one: this one is taken full, and says why. The copies that failed
             * to open are recorded first, so that it stores their content again rather than
             * deduplicate against them. */
            struct err se = ERR_INIT;
            bool saved = repo_bad_blobs_save(r, "backup database --physical", NULL, &se) == 0;
            char msg[1200];
            snprintf(msg, sizeof(msg),
                     "the latest physical backup cannot be read (%s): taking a full backup "
                     "instead of an incremental%s; run `caris-backup check --read-data`",
                     e->msg, saved ? "" : " (its damaged blobs could not be recorded)");
            caris_op_log(o->op, LOG_WARN, "%s", msg);
            json_array_append_new(
                b.warnings, json_pack("{s:s, s:s}", "message", msg, "kind", "parent-damaged"));
            err_clear(e);
            parent_id = NULL;
        } else if (!parent_id)
            caris_op_log(o->op, LOG_WARN,
                         "no earlier physical backup of this cluster (system identifier %s): "
                         "taking a full backup",
                         si.systemid);
        else
            caris_op_log(o->op, LOG_INFO, "incremental on %s", parent_id);
    }
    if (backup_id_claim(r, "caris", parent_id ? "incremental" : "full", start_ns, o->time_ns != 0,
                        o->op, id, sizeof(id), e) != 0)
        goto out;
    claimed = true;
    if (run_base_backup(&b, c, id, phys, e) != 0) {
        err_wrap(e, "physical backup");
        goto out;
    }
    recheck_skipped(&b, phys);
    PQfinish(c);
    c = NULL;
    if (archive_check(&b, phys, si.wal_segment_size, e) != 0) {
        err_wrap(e, "physical backup");
        goto out;
    }
    if (b.manifest.len) {
        struct stream_result sr = {0};
        if (stream_store_buf(r, b.w, 1, b.manifest.data, b.manifest.len,
                             repo_chunker_params(r, false), &sr, e) != 0)
            goto out;
        char hex[65];
        cx_hex(sr.sha256, 32, hex);
        json_array_append_new(b.entries,
                              json_pack("{s:s, s:s, s:I, s:i, s:s, s:o}", "type", "pg_manifest",
                                        "name", "backup_manifest", "size", (json_int_t)sr.bytes,
                                        "mode", 0600, "sha256", hex, "chunks", sr.chunks));
    }
    if (!b.backup_label) {
        err_set(e, ERR_DATABASE, NULL, "the base backup has no backup_label");
        goto out;
    }
    if (repo_snapshot_put_entries(r, b.w, b.entries, &ref, e) != 0 ||
        repo_writer_flush(b.w, e) != 0)
        goto out;

    json_object_set_new(phys, "system_identifier", json_string(si.systemid));
    json_object_set_new(phys, "timeline", json_integer(si.timeline));
    json_object_set_new(phys, "data_checksums", json_boolean(si.checksums));
    json_object_set_new(phys, "wal_segment_size", json_integer(si.wal_segment_size));
    json_object_set_new(phys, "block_size", json_integer(PHYS_BLOCK_SIZE));
    json_object_set_new(phys, "backup_label", json_string(b.backup_label));
    label_field(b.backup_label, "START TIME", phys, "start_time");
    label_field(b.backup_label, "START WAL LOCATION", phys, "start_wal");
    label_field(b.backup_label, "CHECKPOINT LOCATION", phys, "checkpoint_lsn");
    json_object_set(phys, "tablespaces", b.tablespaces);
    json_object_set(phys, "directories", b.dirs);
    json_object_set(phys, "symlinks", b.links);
    json_object_set_new(phys, "pages_checked", json_integer((json_int_t)b.pages_checked));
    json_object_set_new(phys, "bad_pages", json_integer((json_int_t)b.bad_pages));
    json_object_set_new(phys, "pages_skipped_recent",
                        json_integer((json_int_t)b.pages_skipped_recent));
    struct phys_incr_stats is;
    phys_incr_get_stats(b.pi, &is);
    json_object_set_new(phys, "delta_blocks", json_integer((json_int_t)is.blocks_delta));
    json_object_set_new(phys, "delta_pages", json_integer((json_int_t)is.pages_delta));

    struct repo_writer_stats ws;
    repo_writer_get_stats(b.w, &ws);
    int64_t end_ns = start_ns + (time_mono_ns() - clock0);
    /* when it really ended, whatever --time says: a recovery to a time takes a base backup that
     * ended before that time (the one taken with --time dated back ended after it, and the
     * recovery went past its target: audit L4) */
    char stop_time[40];
    time_format_iso(time_now_ns(), stop_time, sizeof(stop_time));
    json_object_set_new(phys, "stop_time", json_string(stop_time));
    char started[40], finished[40], host[256] = "", target[256];
    time_format_iso(start_ns, started, sizeof(started));
    time_format_iso(end_ns, finished, sizeof(finished));
    gethostname(host, sizeof(host) - 1);
    pgsrc_target_host(&t, target, sizeof(target));
    size_t nwarn = json_array_size(b.warnings);
    summary =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:i, s:o, "
                  "s:{s:I, s:I, s:I, s:I, s:I, s:I}, s:s, s:O, s:s}",
                  "id", id, "kind", "database", "type", "database", "method", "physical", "mode",
                  "full", "started", started, "finished", finished, "duration_ms",
                  (json_int_t)((end_ns - start_ns) / 1000000), "host", host, "database",
                  "(cluster)", "server_version", si.version, "server_version_num", si.version_num,
                  "source", pgsrc_target_json(&t), "stats", "files", (json_int_t)b.files,
                  "bytes_read", (json_int_t)b.bytes, "bytes_added", (json_int_t)ws.bytes_new,
                  "bytes_stored", (json_int_t)ws.bytes_stored, "chunks_new",
                  (json_int_t)ws.blobs_new, "chunks_known", (json_int_t)ws.blobs_known, "status",
                  nwarn ? "warnings" : "ok", "warnings", b.warnings, "version", "1");
    json_object_set(summary, "physical", phys);
    if (parent_id) {
        json_object_set_new(summary, "mode", json_string("incremental"));
        json_object_set_new(summary, "parent", json_string(parent_id));
    }
    {
        /* `list` shows the LSN range */
        char range[80];
        snprintf(range, sizeof(range), "%s-%s",
                 json_string_value(json_object_get(phys, "start_lsn")),
                 json_string_value(json_object_get(phys, "stop_lsn")));
        json_object_set_new(summary, "lsn_range", json_string(range));
    }
    char name[65];
    if (repo_snapshot_commit(r, summary, ref, name, e) != 0)
        goto out;
    json_object_set_new(summary, "_file", json_string(name));
    if (b.bad_pages)
        caris_op_log(o->op, LOG_WARN, "%llu bad page(s) found; the backup holds them as read",
                     (unsigned long long)b.bad_pages);
    backup_result_take(res, summary);
    summary = NULL;
    rc = nwarn ? CARIS_DONE_WARNINGS : CARIS_DONE;
out:
    if (c)
        PQfinish(c);
    phys_incr_free(b.pi);
    if (b.w)
        repo_writer_free(b.w);
    if (claimed)
        backup_id_release(r, id);
    if (locked)
        repo_unlock(r);
    /* a base block that failed to open was stored whole; recorded, no later block (of this
     * backup's next runs) deduplicates against that copy */
    caris_bad_blobs_record(r, "backup database --physical", o->op);
    file_free(&b.f);
    for (size_t i = 0; i < b.nskipped; i++)
        free(b.skipped[i].file);
    free(b.skipped);
    buf_free(&b.manifest);
    free(b.backup_label);
    json_decref(b.entries);
    json_decref(b.dirs);
    json_decref(b.links);
    json_decref(b.warnings);
    json_decref(b.tablespaces);
    json_decref(phys);
    json_decref(summary);
    json_decref(ref);
    pgsrc_target_free(&t);
    return rc;
}

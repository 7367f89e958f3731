/* Database backup: pg_dump (custom format, uncompressed) and pg_dumpall --globals-only,
 * each streamed from a pipe straight into the repository (chunker → id → dedup → zstd →
 * AES-256-GCM → packs): no copy of the dump ever touches the disk. The row counts are taken
 * in the same snapshot as the dump: this process exports a snapshot from a REPEATABLE READ
 * transaction, locks every table it lists (ACCESS SHARE, as pg_dump does, until the end,
 * sent without waiting) and hands the snapshot to pg_dump --snapshot. Each table's rows are
 * counted in the dump
 * as it streams by (caris/dumpcount.h); the server counts (count(*), in the snapshot) only
 * the tables with inheritance children, whose count includes the children's rows, while
 * pg_dump runs, and, after it, any table the dump did not give a count for. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "caris/backup.h"
#include "caris/crypto.h"
#include "caris/dbbackup.h"
#include "caris/dumpcount.h"
#include "caris/pgsrc.h"
#include "caris/stream.h"
#include "common.h"

#define PROGRESS_EVERY_NS 200000000

struct dbb {
    struct repo *r;
    const struct db_backup_opts *o;
    int threads;
    int64_t start_mono, last_progress;
    uint64_t done_bytes; /* of the streams already stored */
    uint64_t streams;
};

static void on_stream_progress(void *ctx, uint64_t bytes)
{
    struct dbb *b = ctx;
    int64_t now = time_mono_ns();
    if (!b->o->progress || now - b->last_progress < PROGRESS_EVERY_NS)
        return;
    b->last_progress = now;
    progress_report(b->o->progress, b->o->ctx, "backup", b->streams, b->done_bytes + bytes, 0,
                    b->start_mono);
}

/* Runs a dump program and stores its stdout as one stream. *child_failed tells a failure of
 * the program (its exit status, its messages in e) from one of the repository. */
static void count_tap(void *ctx, const uint8_t *p, size_t n)
{
    dumpcount_feed(ctx, p, n);
}

static bool is_ascii(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* A table's rows as the dump holds them. pg_dump writes names in its client encoding (the
 * database's unless client_encoding or PGCLIENTENCODING says otherwise), the table list has
 * them in UTF-8 (SQL_ASCII: the bytes as stored, as in the dump): in another encoding only
 * an ASCII name is the same bytes in both, and a UTF-8 name can be another table's name in
 * the dump ("é" in UTF-8 is "Ã©" in LATIN1). */
static bool dump_rows(const struct dumpcount *counter, bool same_bytes, json_t *t, int64_t *rows)
{
    const char *schema = json_string_value(json_object_get(t, "schema"));
    const char *name = json_string_value(json_object_get(t, "name"));
    if (!same_bytes && !(is_ascii(schema) && is_ascii(name)))
        return false;
    return dumpcount_rows(counter, schema, name, rows);
}

/* Every table's "rows" that the server did not count: from the dump when it gave one, else
 * counted now, in the same snapshot (the transaction is still open). */
static int count_the_rest(struct dbb *b, PGconn *conn, const struct pgsrc_target *target,
                          const char *encoding, json_t *tables, struct dumpcount *counter,
                          size_t *counted, struct err *e)
{
    json_t *rest = json_array(), *t;
    size_t i;
    const char *client = pgsrc_target_get(target, "client_encoding");
    if (!client || !*client)
        client = getenv("PGCLIENTENCODING"); /* pg_dump inherits it */
    bool same_bytes = (strcmp(encoding, "UTF8") == 0 || strcmp(encoding, "SQL_ASCII") == 0) &&
                      (!client || !*client || strcasecmp(client, encoding) == 0);
    json_array_foreach(tables, i, t)
    {
        int64_t rows;
        if (json_object_get(t, "rows")) {
            /* a table with inheritance children (counted by the server, with theirs): its own
             * rows too, as the dump holds them; a restore of it alone has only these */
            if (dump_rows(counter, same_bytes, t, &rows))
                json_object_set_new(t, "rows_own", json_integer((json_int_t)rows));
            continue;
        }
        if (dump_rows(counter, same_bytes, t, &rows))
            json_object_set_new(t, "rows", json_integer((json_int_t)rows));
        else
            json_array_append(rest, t);
    }
    int rc = 0;
    *counted = json_array_size(rest);
    if (json_array_size(rest)) {
        const char *why = dumpcount_why(counter);
        caris_op_log(b->o->op, LOG_INFO,
                     "%zu table(s) counted on the server after the dump (the dump gave no count "
                     "for them%s%s)",
                     json_array_size(rest), why ? ": " : "", why ? why : "");
        rc = pgsrc_count_rows_send(conn, rest, NULL, e) != 0 ||
                     pgsrc_count_rows_collect(conn, rest, "rows", e) != 0
                 ? -1
                 : 0;
    }
    json_decref(rest);
    return rc;
}

static int dump_stream(struct dbb *b, struct repo_writer *w, const struct pgsrc_tool *tool,
                       char *const argv[], const char *password, struct dumpcount *counter,
                       struct stream_result *res, bool *child_failed, struct err *e)
{
    *child_failed = false;
    memset(res, 0, sizeof(*res));
    struct pgsrc_child c;
    struct pgsrc_spawn so = {.password = password, .pipe_stdout = true, .die_with_parent = true};
    if (pgsrc_child_start(&c, tool->path, argv, &so, e) != 0)
        return -1;
    if (stream_store_fd_tap(b->r, w, b->threads, c.out_fd, repo_chunker_params(b->r, true), res,
                            on_stream_progress, b, counter ? count_tap : NULL, counter, b->o->op,
                            e) != 0) {
        /* The repository failed (disk full, ...): stop the dump, keep the first error. */
        pgsrc_child_kill(&c, SIGTERM);
        return -1;
    }
    /* End of the pipe is not success: pg_dump killed halfway also ends it. */
    if (pgsrc_child_wait(&c, e) != 0) {
        *child_failed = true;
        json_decref(res->chunks);
        res->chunks = NULL;
        return -1;
    }
    b->done_bytes += res->bytes;
    b->streams++;
    return 0;
}

static json_t *ms(uint64_t ns)
{
    return json_real((double)(ns / 1000) / 1000.0);
}

/* Where the time went, per stage, in ms summed over the threads doing it (docs/JSON.md,
 * "stageMs"): the streams' reading thread (read: waiting for pg_dump and reading its pipe;
 * sha256; chunk; queue: waiting for a free worker), the workers (chunkId, compress, encrypt,
 * write), and the manifest (entry list, flush, commit) on the main thread. */
static json_t *stage_ms_json(const struct stream_result *d, const struct stream_result *g,
                             const struct repo_writer_stats *ws, uint64_t manifest_ns)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "read",
                     ms(d->read_ns + g->read_ns), "sha256", ms(d->sha_ns + g->sha_ns), "chunk",
                     ms(d->chunk_ns + g->chunk_ns), "queue", ms(d->queue_ns + g->queue_ns),
                     "chunk_id", ms(d->id_ns + g->id_ns), "compress", ms(ws->compress_ns),
                     "encrypt", ms(ws->encrypt_ns), "write", ms(ws->write_ns), "manifest",
                     ms(manifest_ns));
}

static json_t *stream_entry(const char *type, const char *name, struct stream_result *res)
{
    char hex[65];
    cx_hex(res->sha256, 32, hex);
    json_t *ent = json_pack("{s:s, s:s, s:I, s:s, s:O}", "type", type, "name", name, "size",
                            (json_int_t)res->bytes, "sha256", hex, "chunks", res->chunks);
    return ent;
}

/* The warning a backup of a database that a restore marked gives (NULL: none). Caller frees. */
static char *restore_mark_warning(const struct pgsrc_info *info)
{
    if (!info->restore_mark[0])
        return NULL;
    return xasprintf("database %s carries the mark of a restore of %s that did not finish (it "
                     "runs still, or was killed): it may be partly restored, and this backup "
                     "holds it as it is; restore it again (restore database ... --clean), or, once "
                     "you judge it whole, remove the mark as its owner (COMMENT ON DATABASE ... IS "
                     "NULL); keep the backups from before that restore",
                     info->database, info->restore_mark);
}

static int db_backup(struct repo *r, const struct db_backup_opts *o, bool incremental,
                     json_t **summary_out, struct err *e)
{
    int64_t start_ns, clock0 = time_mono_ns(); /* the duration: immune to clock changes */
    *summary_out = NULL;
    if (backup_time(o->time_ns, &start_ns, e) != 0)
        return -1;
    struct dbb b = {.r = r, .o = o, .start_mono = time_mono_ns()};
    b.threads = o->threads > 0 ? o->threads : sys_ncpu();
    struct pgsrc_target t;
    *summary_out = NULL;
    if (pgsrc_target_parse(o->url, o->password, "POSTGRES_URL", &t, e) != 0)
        return -1;
    PGconn *conn = NULL;
    char *snapshot = NULL, *conninfo = NULL, *dbarg = NULL, *snaparg = NULL, *gdbarg = NULL;
    json_t *tables = NULL, *parents = NULL, *tj, *roles = NULL, *parent = NULL, *entries = NULL,
           *summary = NULL, *ref = NULL, *warnings = json_array();
    struct repo_writer *w = NULL;
    struct dumpcount *counter = NULL;
    size_t ti, server_counted = 0;
    struct stream_result dump = {0}, globals = {0};
    bool locked = false, claimed = false;
    char id[160] = "";
    int saved_level = repo_compression_level(r);
    int rc = -1;
    struct pgsrc_info info;
    struct pgsrc_tool pg_dump, pg_dumpall;

    if (!(conn = pgsrc_connect(&t, NULL, e)) || pgsrc_server_info(conn, &info, e) != 0 ||
        pgsrc_tool_find("pg_dump", info.version_num, true, &pg_dump, e) != 0 ||
        pgsrc_tool_find("pg_dumpall", info.version_num, true, &pg_dumpall, e) != 0)
        goto out;
    if (repo_lock(r, false, "backup database", e) != 0)
        goto out;
    locked = true;
    char *mark_msg = restore_mark_warning(&info);
    if (mark_msg) {
        caris_op_log(o->op, LOG_WARN, "%s", mark_msg);
        json_array_append_new(warnings, json_pack("{s:s}", "message", mark_msg));
        free(mark_msg);
    }
    if (incremental) {
        json_t *dbname = json_string(info.database);
        parent = backup_latest(r, "database", "database", dbname, e);
        json_decref(dbname);
        if (!parent)
            goto out;
        if (json_is_null(parent)) {
            /* nothing to build on: a full backup, and labelled so */
            caris_op_log(o->op, LOG_INFO, "no earlier backup of database %s: making a full backup",
                         info.database);
            incremental = false;
        }
    }
    if (backup_id_claim(r, "caris", incremental ? "incremental" : "full", start_ns, o->time_ns != 0,
                        o->op, id, sizeof(id), e) != 0)
        goto out;
    claimed = true;

    /* The role's limits for its application (a lock_timeout, a statement_timeout, an idle
     * transaction's timeout) lifted for this session, as pg_dump does for its own: this
     * session locks every table before pg_dump does, counts large tables, and stays idle in
     * its transaction while pg_dump runs; on any of those limits it failed a backup that
     * pg_dump completed. (pg_settings: transaction_timeout exists from PostgreSQL 17.) */
    if (pgsrc_exec(conn,
                   "SELECT set_config(name, '0', false) FROM pg_settings WHERE name IN "
                   "('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout', "
                   "'transaction_timeout')",
                   e) != 0)
        goto out;
    /* The snapshot: listing, counting and pg_dump all see the database as of this moment. */
    if (pgsrc_snapshot_begin(conn, &snapshot, e) != 0 || !(tables = pgsrc_list_tables(conn, e)) ||
        !(roles = pgsrc_list_roles(conn, e)) || pgsrc_exec(conn, "SET row_security = off", e) != 0)
        goto out;
    parents = json_array();
    json_array_foreach(tables, ti, tj)
    {
        /* An unlogged table of a standby: empty there, and pg_dump leaves its data out (it
         * cannot be read in recovery): none in the backup, and none counted. */
        if (json_is_true(json_object_get(tj, "_nodata")))
            json_object_set_new(tj, "rows", json_integer(0));
        else if (json_is_true(json_object_get(tj, "_parent")))
            json_array_append(parents, tj);
        json_object_del(tj, "_parent");
        json_object_del(tj, "_nodata");
    }
    /* Every table locked (ACCESS SHARE, until the end, as pg_dump does) and the parents
     * counted: one query, answered while pg_dump runs. */
    if (pgsrc_count_rows_send(conn, parents, tables, e) != 0)
        goto out;

    if (o->no_compress)
        repo_set_compression_level(r, 0);
    w = repo_writer_new(r, b.threads);
    /* The connection target without the password (children get it in PGPASSWORD), naming
     * the database the server told us, so pg_dump resolves no default differently. */
    conninfo = pgsrc_target_conninfo(&t, info.database);
    dbarg = xasprintf("--dbname=%s", conninfo);
    snaparg = xasprintf("--snapshot=%s", snapshot);
    /* argv[0] is the full path: pg_dumpall finds pg_dump next to itself through it */
    char *dump_argv[] = {
        pg_dump.path, "--format=custom", "--compress=0", "--no-password", snaparg, dbarg, NULL};
    bool child_failed;
    counter = dumpcount_new();
    if (dump_stream(&b, w, &pg_dump, dump_argv, t.password, counter, &dump, &child_failed, e) !=
        0) {
        if (child_failed) {
            err_wrap(e, "backup of database %s failed after %llu bytes of dump", info.database,
                     (unsigned long long)dump.bytes);
            if (!e->hint[0])
                snprintf(e->hint, sizeof(e->hint),
                         "nothing was committed; the server's log may say more");
        }
        goto out;
    }
    dumpcount_end(counter);
    if (pgsrc_count_rows_collect(conn, parents, "rows", e) != 0 ||
        count_the_rest(&b, conn, &t, info.encoding, tables, counter, &server_counted, e) != 0)
        goto out;
    /* A TRUNCATE or a rewriting ALTER TABLE that another session had begun and committed
     * between the snapshot and the locks (which waited for it) left the snapshot seeing the
     * table's new, empty file: the dump and its count had none of its rows, and the backup,
     * its test restore and --verify all said ok. Caught here, before anything is committed. */
    json_t *rw = pgsrc_rewritten_tables(conn, e);
    if (!rw)
        goto out;
    /* one whose snapshot still counts rows was rewritten keeping them (VACUUM FULL, CLUSTER) */
    char rewritten[600] = "";
    size_t len = 0;
    int nrw = 0;
    json_array_foreach(rw, ti, tj)
    {
        const char *rs = json_string_value(json_object_get(tj, "schema"));
        const char *rn = json_string_value(json_object_get(tj, "name"));
        size_t k;
        json_t *x;
        bool empty = false;
        json_array_foreach(tables, k, x)
        {
            if (strcmp(json_string_value(json_object_get(x, "schema")) ?: "", rs) == 0 &&
                strcmp(json_string_value(json_object_get(x, "name")) ?: "", rn) == 0)
                empty = json_integer_value(json_object_get(x, "rows")) == 0;
        }
        if (!empty)
            continue;
        if (nrw++ < 5 && len < sizeof(rewritten))
            len += (size_t)snprintf(rewritten + len, sizeof(rewritten) - len, "%s%s.%s",
                                    nrw > 1 ? ", " : "", rs, rn);
        else if (nrw == 6 && len < sizeof(rewritten))
            len += (size_t)snprintf(rewritten + len, sizeof(rewritten) - len, ", ...");
    }
    json_decref(rw);
    if (nrw > 0) {
        err_set(e, ERR_DATABASE,
                "run the backup again (nothing was committed); if it keeps happening, schedule "
                "it away from the job that truncates or rewrites these tables",
                "%d table%s of database %s %s truncated or rewritten (TRUNCATE, ALTER TABLE) by "
                "another session while the backup began, and the backup sees %s empty: %s; "
                "the dump may lack %s rows",
                nrw, nrw == 1 ? "" : "s", info.database, nrw == 1 ? "was" : "were",
                nrw == 1 ? "it" : "them", rewritten, nrw == 1 ? "its" : "their");
        goto out;
    }
    PQfinish(conn); /* ends the snapshot's transaction */
    conn = NULL;

    /* pg_dumpall ignores the dbname of --dbname and connects to "postgres", else "template1",
     * which a role allowed into its own database only may not: it connects to this one
     * (--database, read as a connection string: the name quoted, taken whole) instead. */
    char *gdb_conninfo = pgsrc_target_conninfo(&(struct pgsrc_target){0}, info.database);
    gdbarg = xasprintf("--database=%s", gdb_conninfo);
    free(gdb_conninfo);
    char *globals_argv[] = {pg_dumpall.path,
                            "--globals-only",
                            "--no-role-passwords",
                            "--no-password",
                            dbarg,
                            gdbarg,
                            NULL};
    struct err ge = ERR_INIT;
    if (dump_stream(&b, w, &pg_dumpall, globals_argv, t.password, NULL, &globals, &child_failed,
                    &ge) != 0) {
        if (!child_failed) {
            *e = ge;
            goto out;
        }
        /* The database dump is complete without them: a warning, not a failure. */
        char msg[1200];
        snprintf(msg, sizeof(msg), "cluster globals (roles, tablespaces) not saved: %s", ge.msg);
        caris_op_log(o->op, LOG_WARN, "%s", msg);
        json_array_append_new(warnings, json_pack("{s:s}", "message", msg));
    }

    int64_t manifest0 = time_mono_ns();
    entries = json_array();
    json_array_append_new(entries, stream_entry("dump", "database.dump", &dump));
    if (globals.chunks)
        json_array_append_new(entries, stream_entry("globals", "globals.sql", &globals));
    if (repo_snapshot_put_entries(r, w, entries, &ref, e) != 0 || repo_writer_flush(w, e) != 0)
        goto out;
    progress_report(o->progress, o->ctx, "backup", b.streams, b.done_bytes, 0, b.start_mono);

    struct repo_writer_stats ws;
    repo_writer_get_stats(w, &ws);
    int64_t end_ns = start_ns + (time_mono_ns() - clock0);
    char started[40], finished[40], host[256] = "", sha[65];
    time_format_iso(start_ns, started, sizeof(started));
    time_format_iso(end_ns, finished, sizeof(finished));
    gethostname(host, sizeof(host) - 1);
    cx_hex(dump.sha256, 32, sha);
    size_t nwarn = json_array_size(warnings);
    summary = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:o, s:s, s:i, s:s, s:s, s:s, s:s, s:I, "
        "s:O, s:O, s:b, s:s, s:I, s:{s:I, s:I, s:I, s:I, s:I}, s:s, s:O, s:s}",
        "id", id, "kind", "database", "type", "database", "mode",
        incremental ? "incremental" : "full", "started", started, "finished", finished,
        "duration_ms", (json_int_t)((end_ns - start_ns) / 1000000), "host", host, "database",
        info.database, "source", pgsrc_target_json(&t), "server_version", info.version,
        "server_version_num", info.version_num, "pg_dump_version", pg_dump.version, "encoding",
        info.encoding, "collate", info.collate, "ctype", info.ctype, "database_size",
        (json_int_t)info.database_size, "tables", tables, "roles", roles, "compress",
        !o->no_compress, "dump_sha256", sha, "dump_size", (json_int_t)dump.bytes, "stats",
        "bytes_read", (json_int_t)dump.bytes, "bytes_added", (json_int_t)ws.bytes_new,
        "bytes_stored", (json_int_t)ws.bytes_stored, "chunks_new", (json_int_t)ws.blobs_new,
        "chunks_known", (json_int_t)ws.blobs_known, "status", nwarn ? "warnings" : "ok", "warnings",
        warnings, "version", "1");
    if (parent && !json_is_null(parent))
        json_object_set(summary, "parent", json_object_get(parent, "id"));
    char name[65];
    if (repo_snapshot_commit(r, summary, ref, name, e) != 0)
        goto out;
    json_object_set_new(summary, "_file", json_string(name));
    /* Added after the commit: this run's profile, reported, not stored in the repository. */
    json_object_set_new(
        json_object_get(summary, "stats"), "stage_ms",
        stage_ms_json(&dump, &globals, &ws, (uint64_t)(time_mono_ns() - manifest0)));
    /* How many tables the server counted (count(*)); the others were counted in the dump. */
    json_object_set_new(json_object_get(summary, "stats"), "server_counted_tables",
                        json_integer((json_int_t)(json_array_size(parents) + server_counted)));
    *summary_out = summary;
    summary = NULL;
    rc = nwarn ? CARIS_DONE_WARNINGS : CARIS_DONE;
out:
    if (conn)
        PQfinish(conn);
    repo_set_compression_level(r, saved_level);
    repo_writer_free(w);
    if (claimed)
        backup_id_release(r, id);
    if (locked)
        repo_unlock(r);
    json_decref(dump.chunks);
    json_decref(globals.chunks);
    json_decref(tables);
    json_decref(parents);
    dumpcount_free(counter);
    json_decref(roles);
    json_decref(parent);
    json_decref(entries);
    json_decref(summary);
    json_decref(ref);
    json_decref(warnings);
    free(snapshot);
    free(conninfo);
    free(dbarg);
    free(gdbarg);
    free(snaparg);
    pgsrc_target_free(&t);
    return rc;
}

int caris_db_backup_full(struct repo *r, const struct db_backup_opts *o,
                         struct caris_backup_result *res, struct err *e)
{
    json_t *summary = NULL;
    int rc = db_backup(r, o, false, &summary, e);
    backup_result_take(res, summary);
    return rc;
}

int caris_db_backup_incremental(struct repo *r, const struct db_backup_opts *o,
                                struct caris_backup_result *res, struct err *e)
{
    json_t *summary = NULL;
    int rc = db_backup(r, o, true, &summary, e);
    backup_result_take(res, summary);
    return rc;
}

int caris_db_backup_plan(struct repo *r, const struct db_backup_opts *o, bool incremental,
                         json_t **plan, struct err *e)
{
    *plan = NULL;
    int64_t start_ns; /* the time given with --time checked first, as the backup does */
    if (backup_time(o->time_ns, &start_ns, e) != 0)
        return -1;
    struct pgsrc_target t;
    if (pgsrc_target_parse(o->url, o->password, "POSTGRES_URL", &t, e) != 0)
        return -1;
    PGconn *conn = NULL;
    json_t *tables = NULL, *parent = NULL;
    struct pgsrc_info info;
    struct pgsrc_tool pg_dump, pg_dumpall;
    int rc = -1;
    /* what the backup checks before it locks anything, in its order: the login, the tools,
     * every table readable */
    if (!(conn = pgsrc_connect(&t, NULL, e)) || pgsrc_server_info(conn, &info, e) != 0 ||
        pgsrc_tool_find("pg_dump", info.version_num, true, &pg_dump, e) != 0 ||
        pgsrc_tool_find("pg_dumpall", info.version_num, true, &pg_dumpall, e) != 0 ||
        !(tables = pgsrc_list_tables(conn, e)))
        goto out;
    if (incremental && r) {
        json_t *dbname = json_string(info.database);
        parent = backup_latest(r, "database", "database", dbname, e);
        json_decref(dbname);
        if (!parent)
            goto out;
    }
    /* what the backup checks after its lock that can be known here: the id --time gives,
     * free */
    if (r && o->time_ns &&
        backup_id_check_exact(r, "caris", json_is_object(parent) ? "incremental" : "full", start_ns,
                              e) != 0)
        goto out;
    *plan = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:O}", "database", info.database,
                      "server_version", info.version, "pg_dump", pg_dump.path, "pg_dump_version",
                      pg_dump.version, "tables", (json_int_t)json_array_size(tables),
                      "database_size", (json_int_t)info.database_size, "mode",
                      incremental && json_is_object(parent) ? "incremental" : "full", "parent",
                      json_is_object(parent) ? json_object_get(parent, "id") : json_null());
    char *mark_msg = restore_mark_warning(&info);
    json_object_set_new(*plan, "warnings",
                        mark_msg ? json_pack("[{s:s}]", "message", mark_msg) : json_array());
    free(mark_msg);
    rc = 0;
out:
    if (conn)
        PQfinish(conn);
    json_decref(tables);
    json_decref(parent);
    pgsrc_target_free(&t);
    return rc;
}

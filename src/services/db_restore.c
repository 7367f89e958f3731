/* Database restore and test restore: the dump is streamed out of the repository (every chunk
 * authenticated, the whole stream's SHA-256 checked) into pg_restore, which applies it in one
 * transaction. A test restore does the same into a scratch database (or a throwaway local
 * cluster) and compares every table's row count with the one recorded at backup time. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "caris/backup.h"
#include "caris/crypto.h"
#include "caris/dbbackup.h"
#include "caris/jsonx.h"
#include "caris/pgsrc.h"
#include "caris/stream.h"
#include "caris/tempitem.h"
#include "common.h"

/* The relay to pg_restore holds back the stream's last bytes until the stream's SHA-256
 * has been checked: without them pg_restore cannot finish its last data block, so it cannot
 * commit a stream that turns out to be damaged. */
#define HOLD_BYTES (64u << 10)
#define RELAY_READ (1u << 20)
#define PROGRESS_EVERY_NS 200000000

/* ---- the backup ------------------------------------------------------------------------- */

struct dbk {
    const char *id;
    json_t *summary, *entries;
    json_t *dump; /* borrowed from entries */
    uint8_t sha[32];
    uint64_t size;
    int server_num; /* of the server the backup was taken from */
    int dump_num;   /* of the pg_dump that wrote it */
};

static void backup_free(struct dbk *k)
{
    json_decref(k->summary);
    json_decref(k->entries);
    memset(k, 0, sizeof(*k));
}

static int backup_load(struct repo *r, const char *id, struct dbk *k, struct err *e)
{
    memset(k, 0, sizeof(*k));
    k->id = id;
    char name[65];
    json_t *s;
    if (!id || !*id)
        return err_set(e, ERR_USAGE, "name a backup id (see `caris-backup list --type database`)",
                       "no backup id given");
    if (repo_snapshot_find(r, id, name, &s, e) != 0)
        return -1;
    const char *kind = json_string_value(json_object_get(s, "kind"));
    bool is_db = kind && strcmp(kind, "database") == 0;
    const char *method = json_string_value(json_object_get(s, "method"));
    bool physical = method && strcmp(method, "physical") == 0;
    json_decref(s);
    if (!is_db)
        return err_set(e, ERR_USAGE, "restore it with `caris-backup restore files`",
                       "backup %s is not a database backup", id);
    if (physical) /* a base backup of the whole cluster, not a dump (caris/pitr.h) */
        return err_set(e, ERR_USAGE,
                       "restore it with `caris-backup --env-file F restore database --physical "
                       "--pgdata DIR ID`",
                       "backup %s is a physical backup", id);
    if (repo_snapshot_load(r, name, &k->summary, &k->entries, e) != 0)
        return -1;
    size_t i;
    json_t *ent;
    json_array_foreach(k->entries, i, ent)
    {
        const char *type = json_string_value(json_object_get(ent, "type"));
        if (type && strcmp(type, "dump") == 0)
            k->dump = ent;
    }
    const char *sha = k->dump ? json_string_value(json_object_get(k->dump, "sha256")) : NULL;
    if (!sha || cx_unhex(sha, k->sha, 32) != 0 ||
        !json_is_integer(json_object_get(k->dump, "size"))) {
        backup_free(k);
        return err_set(e, ERR_DAMAGE, "use a different backup", "backup %s has no valid dump entry",
                       id);
    }
    k->size = (uint64_t)json_integer_value(json_object_get(k->dump, "size"));
    k->server_num = (int)json_integer_value(json_object_get(k->summary, "server_version_num"));
    const char *dv = json_string_value(json_object_get(k->summary, "pg_dump_version"));
    if (!dv || pgsrc_version_parse(dv, &k->dump_num, NULL, 0) != 0)
        k->dump_num = k->server_num;
    return 0;
}

static const char *summary_str(const struct dbk *k, const char *key)
{
    const char *v = json_string_value(json_object_get(k->summary, key));
    return v ? v : "";
}

/* ---- which objects ------------------------------------------------------------------------ */

struct selection {
    json_t *expected; /* [{"schema", "name", "expected"}]: the tables the restore brings back */
    char **args;      /* pg_restore's --schema=/--table= arguments */
    size_t nargs;
    json_t *schemas, *names; /* sets (object keys) */
};

static void selection_free(struct selection *s)
{
    json_decref(s->expected);
    json_decref(s->schemas);
    json_decref(s->names);
    for (size_t i = 0; i < s->nargs; i++)
        free(s->args[i]);
    free(s->args);
    memset(s, 0, sizeof(*s));
}

static void sel_arg(struct selection *s, const char *opt, const char *val)
{
    s->args = xrealloc(s->args, xsize(s->nargs + 1, sizeof(char *), 0));
    s->args[s->nargs++] = xasprintf("--%s=%s", opt, val);
}

static void sel_schema(struct selection *s, const char *schema)
{
    if (!json_object_get(s->schemas, schema)) {
        json_object_set_new(s->schemas, schema, json_true());
        sel_arg(s, "schema", schema);
    }
}

static void sel_name(struct selection *s, const char *name)
{
    if (!json_object_get(s->names, name)) {
        json_object_set_new(s->names, name, json_true());
        sel_arg(s, "table", name);
    }
}

static bool has_table(json_t *all, const char *schema, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(all, i, t)
    {
        if ((!schema || strcmp(json_string_value(json_object_get(t, "schema")), schema) == 0) &&
            (!name || strcmp(json_string_value(json_object_get(t, "name")), name) == 0))
            return true;
    }
    return false;
}

/* name as --table reads it back: as it is when it has only letters, digits, _ and $ (and
 * non-ASCII characters), else in double quotes ("" for a quote), as SQL's quote_ident, so that
 * x."y.z" and "x.y".z are told apart. Allocated. */
static char *ident_quote_as(const char *name, bool force)
{
    bool plain = !force && *name != '\0';
    for (const char *p = name; *p && plain; p++)
        plain = (unsigned char)*p >= 0x80 || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                (*p >= '0' && *p <= '9') || *p == '_' || *p == '$';
    if (plain)
        return xstrdup(name);
    struct buf b = {0};
    buf_append_u8(&b, '"');
    for (const char *p = name; *p; p++) {
        if (*p == '"')
            buf_append_u8(&b, '"');
        buf_append_u8(&b, (uint8_t)*p);
    }
    buf_append_u8(&b, '"');
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

/* schema.name with each part as ident_quote writes it (force: every part in double quotes,
 * which --table reads as one name each, never split at a dot). Allocated. */
static char *qualified_quote_as(const char *schema, const char *name, bool force)
{
    char *n = ident_quote_as(name, force);
    if (!schema)
        return n;
    char *sq = ident_quote_as(schema, force);
    char *out = xasprintf("%s.%s", sq, n);
    free(sq);
    free(n);
    return out;
}

static char *qualified_quote(const char *schema, const char *name)
{
    return qualified_quote_as(schema, name, false);
}

/* s in single quotes for a shell ('\'' for a quote in it). Allocated. */
static char *shell_quote(const char *s)
{
    struct buf b = {0};
    buf_append_u8(&b, '\'');
    for (const char *p = s; *p; p++) {
        if (*p == '\'')
            buf_append(&b, "'\\''", 4);
        else
            buf_append_u8(&b, (uint8_t)*p);
    }
    buf_append_u8(&b, '\'');
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

static void list_tables_hint(json_t *all, char *out, size_t n)
{
    if (n < 32) {
        if (n)
            *out = '\0';
        return;
    }
    int w = snprintf(out, n, "tables in this backup:");
    size_t len = w > 0 ? (size_t)w : 0;
    size_t i;
    json_t *t;
    json_array_foreach(all, i, t)
    {
        /* a name that does not fit whole is left out, and so are the rest: " ..." */
        char *q = qualified_quote(json_string_value(json_object_get(t, "schema")),
                                  json_string_value(json_object_get(t, "name")));
        w = snprintf(out + len, n - len, "%s %s", i ? "," : "", q);
        free(q);
        if (w < 0 || (size_t)w + 5 > n - len) {
            snprintf(out + len, n - len, " ...");
            return;
        }
        len += (size_t)w;
    }
    if (!json_array_size(all))
        snprintf(out + len, n - len, " none");
}

/* Marks in asked (keys "schema\x1fname") every table of all in schema (NULL: any) named name
 * (NULL: any). */
static void ask_tables(json_t *asked, json_t *all, const char *schema, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(all, i, t)
    {
        const char *ts = json_string_value(json_object_get(t, "schema"));
        const char *tn = json_string_value(json_object_get(t, "name"));
        if (ts && tn && (!schema || strcmp(ts, schema) == 0) && (!name || strcmp(tn, name) == 0)) {
            char *key = xasprintf("%s\x1f%s", ts, tn); /* a dot may be in either */
            json_object_set_new(asked, key, json_true());
            free(key);
        }
    }
}

/* pg_restore's -n and -t: -t matches a table's name in any schema, -n restricts to schemas.
 * "schema.name" is taken as --schema schema --table name when no table is named so. Together
 * they select every named schema's tables of every named name: a selection that this does not
 * give exactly (s1.a with s2.b would also bring s1.b and s2.a, which a --clean restore would
 * overwrite with the backup's rows) is refused. */
/* Whether pg_restore's -n/-t arguments of s select table schema.name (every named schema's
 * tables of every named name). */
static bool sel_takes(const struct selection *s, const char *schema, const char *name)
{
    return !((json_object_size(s->schemas) && !json_object_get(s->schemas, schema)) ||
             (json_object_size(s->names) && !json_object_get(s->names, name)));
}

/* --clean of some tables or schemas over a database with partitioned tables: pg_restore drops
 * each selected table and recreates it. A selected partitioned table takes all its partitions
 * with it, and those the selection leaves out are not recreated (their rows gone, exit 0,
 * "row counts match"); a selected partition alone comes back detached from its parent (the
 * parent's rows in it no longer the parent's, its inserts for that range refused). Refused
 * here, naming the pair; 1 when refused (e set), 0 when none, -1 with e. */
static int clean_splits_partitions(PGconn *c, const struct selection *s, json_t *all,
                                   const char *dbname, struct err *e)
{
    PGresult *res = pgsrc_query(
        c,
        "SELECT pn.nspname, p.relname, cn.nspname, c.relname FROM pg_inherits i"
        " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace"
        " WHERE p.relkind = 'p' ORDER BY 1, 2, 3, 4",
        0, NULL, e);
    if (!res)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(res) && rc == 0; i++) {
        const char *ps = PQgetvalue(res, i, 0), *pn = PQgetvalue(res, i, 1);
        const char *cs = PQgetvalue(res, i, 2), *cn = PQgetvalue(res, i, 3);
        bool parent = sel_takes(s, ps, pn), child = sel_takes(s, cs, cn);
        if (parent && !child)
            rc = err_set(e, ERR_USAGE,
                         "select its partitions too (--schema of each), or restore into a new "
                         "database with --create; nothing was restored",
                         "--clean would drop %s.%s in database %s and with it its partition "
                         "%s.%s, which the selection does not bring back",
                         ps, pn, dbname, cs, cn) < 0;
        else if (child && !parent && has_table(all, cs, cn)) /* (else pg_restore leaves it) */
            rc = err_set(e, ERR_USAGE,
                         "restore the partitioned table's schema (--schema), or into a new "
                         "database with --create; nothing was restored",
                         "--clean would restore %s.%s alone, detached from %s.%s, whose "
                         "partition it is in database %s",
                         cs, cn, ps, pn, dbname) < 0;
    }
    PQclear(res);
    return rc;
}

/* What a --table argument can name: a table called so in any schema (schema NULL), or
 * table name of schema (split at any of its dots, or written with SQL's identifier quoting:
 * "x.y".z, "a""b", "x.y.z"). */
struct table_ref {
    char *schema, *name;
};

#define TABLE_REFS_MAX 16

/* Parses t as one or two identifiers separated by a dot, each unquoted (taken as written, up to
 * the next dot) or in double quotes ("" for a quote): 1 (*schema NULL for one), 0 when t is not
 * of that form or has no quote (an unquoted t is read as written, split at its dots). */
static int table_ref_parse(const char *t, char **schema, char **name)
{
    char *part[2] = {NULL, NULL};
    size_t np = 0;
    bool quoted = false;
    const char *p = t;
    for (;;) {
        if (np == 2)
            goto bad;
        struct buf b = {0};
        if (*p == '"') {
            quoted = true;
            for (p++;; p++) {
                if (!*p)
                    goto bad_buf;
                if (*p == '"') {
                    if (p[1] != '"')
                        break;
                    p++;
                }
                buf_append(&b, p, 1);
            }
            p++; /* the closing quote */
            if (*p && *p != '.')
                goto bad_buf;
        } else {
            size_t n = strcspn(p, ".\"");
            if (p[n] == '"')
                goto bad_buf;
            buf_append(&b, p, n);
            p += n;
        }
        if (!b.len)
            goto bad_buf;
        buf_append_u8(&b, 0);
        part[np++] = (char *)b.data;
        if (!*p)
            break;
        p++; /* the dot */
        continue;
    bad_buf:
        buf_free(&b);
        goto bad;
    }
    if (!quoted)
        goto bad;
    *schema = np == 2 ? part[0] : NULL;
    *name = part[np - 1];
    return 1;
bad:
    free(part[0]);
    free(part[1]);
    return 0;
}

static size_t table_ref_add(json_t *all, struct table_ref *refs, size_t n, char *schema, char *name)
{
    bool dup = false;
    for (size_t i = 0; i < n && !dup; i++)
        dup = strcmp(refs[i].name, name) == 0 &&
              (refs[i].schema && schema ? strcmp(refs[i].schema, schema) == 0
                                        : !refs[i].schema && !schema);
    if (dup || n == TABLE_REFS_MAX || !has_table(all, schema, name)) {
        free(schema);
        free(name);
        return n;
    }
    refs[n].schema = schema;
    refs[n].name = name;
    return n + 1;
}

/* The tables of all that --table t can mean (table_ref), in refs: how many. */
static size_t table_refs(json_t *all, const char *t, struct table_ref *refs)
{
    size_t n = table_ref_add(all, refs, 0, NULL, xstrdup(t));
    for (const char *dot = strchr(t, '.'); dot; dot = strchr(dot + 1, '.'))
        n = table_ref_add(all, refs, n, xstrndup(t, (size_t)(dot - t)), xstrdup(dot + 1));
    char *schema, *name;
    if (table_ref_parse(t, &schema, &name))
        n = table_ref_add(all, refs, n, schema, name);
    return n;
}

static void table_refs_free(struct table_ref *refs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(refs[i].schema);
        free(refs[i].name);
    }
}

static int select_objects(const struct dbk *k, const char *const *tables, size_t nt,
                          const char *const *schemas, size_t ns, struct selection *s, struct err *e)
{
    memset(s, 0, sizeof(*s));
    s->schemas = json_object();
    s->names = json_object();
    json_t *all = json_object_get(k->summary, "tables");
    json_t *asked = json_object(); /* the tables the caller named */
    char hint[500];
    for (size_t i = 0; i < ns; i++) {
        if (!has_table(all, schemas[i], NULL)) {
            list_tables_hint(all, hint, sizeof(hint));
            json_decref(asked);
            return err_set(e, ERR_NOT_FOUND, hint, "backup %s has no table in schema %s", k->id,
                           schemas[i]);
        }
        sel_schema(s, schemas[i]);
        ask_tables(asked, all, schemas[i], NULL);
    }
    for (size_t i = 0; i < nt; i++) {
        struct table_ref refs[TABLE_REFS_MAX];
        size_t nr = table_refs(all, tables[i], refs);
        if (nr > 1) {
            /* "x.y.z" naming both x."y.z" and "x.y".z (or a table called "x.y.z"): the first
             * split that matched was taken, silently (with --clean overwritten in place of the
             * one meant), and the other could not be named at all */
            char which[400] = "", how[400] = "";
            for (size_t j = 0; j < nr; j++) {
                char *q = qualified_quote(refs[j].schema, refs[j].name);
                str_list_add(which, sizeof(which), q);
                /* every part quoted: `--table '"a.b"'` (a.b unquoted is the ambiguous name) */
                char *fq = qualified_quote_as(refs[j].schema, refs[j].name, true);
                char *sq = shell_quote(fq);
                char *h = xasprintf("--table %s", sq);
                str_list_add(how, sizeof(how), h);
                free(h);
                free(sq);
                free(fq);
                free(q);
            }
            char *how_hint =
                xasprintf("name one of them with its names in double quotes, as in SQL "
                          "(\"\" for a quote in a name): %s; nothing was restored",
                          how);
            err_set(e, ERR_USAGE, how_hint, "--table %s names %zu tables of backup %s: %s",
                    tables[i], nr, k->id, which);
            free(how_hint);
            table_refs_free(refs, nr);
            json_decref(asked);
            return -1;
        }
        if (nr == 0) {
            /* a partitioned table holds no rows itself: the backup lists its partitions */
            size_t hl = (size_t)snprintf(hint, sizeof(hint),
                                         "a partitioned table is not listed, its partitions are "
                                         "(name them, or restore the schema with --schema); ");
            list_tables_hint(all, hint + hl, sizeof(hint) - hl);
            json_decref(asked);
            return err_set(e, ERR_NOT_FOUND, hint, "backup %s has no table %s", k->id, tables[i]);
        }
        const char *schema = refs[0].schema, *name = refs[0].name;
        if (!schema) {
            /* With the schemas of the tables so named: pg_restore -t alone also matches views,
             * sequences and foreign tables of that name in every other schema. */
            size_t j;
            json_t *x;
            json_array_foreach(all, j, x)
            {
                const char *xs = json_string_value(json_object_get(x, "schema"));
                const char *xn = json_string_value(json_object_get(x, "name"));
                if (xs && xn && strcmp(xn, name) == 0)
                    sel_schema(s, xs);
            }
        } else {
            sel_schema(s, schema);
        }
        sel_name(s, name);
        ask_tables(asked, all, schema, name);
        table_refs_free(refs, nr);
    }
    s->expected = json_array();
    char extra[300] = "", missing[300] = "";
    size_t i;
    json_t *t;
    json_array_foreach(all, i, t)
    {
        const char *schema = json_string_value(json_object_get(t, "schema"));
        const char *name = json_string_value(json_object_get(t, "name"));
        if (!schema || !name)
            continue;
        char *key = xasprintf("%s\x1f%s", schema, name);
        bool want = !nt && !ns ? true : json_object_get(asked, key) != NULL;
        key[strlen(schema)] = '.'; /* as the plan shows it */
        bool selected = sel_takes(s, schema, name);
        if (selected && !want)
            str_list_add(extra, sizeof(extra), key);
        else if (want && !selected)
            str_list_add(missing, sizeof(missing), key);
        free(key);
        if (!selected)
            continue;
        /* a table with inheritance children: its own rows (count(*) FROM ONLY), which a
         * restore of it alone brings back, not its count with the children's (backups before
         * rows_own: the count with them) */
        json_t *own = json_object_get(t, "rows_own");
        json_t *x = json_pack("{s:s, s:s, s:O}", "schema", schema, "name", name, "expected",
                              own ? own : json_object_get(t, "rows"));
        if (own)
            json_object_set_new(x, "only", json_true());
        json_array_append_new(s->expected, x);
    }
    json_decref(asked);
    if (*extra || *missing)
        return err_set(e, ERR_USAGE,
                       "pg_restore selects schemas and table names separately (every named "
                       "schema's tables of every named name): restore the tables of one schema "
                       "at a time, or whole schemas with --schema",
                       "cannot restore exactly these tables of backup %s together: pg_restore "
                       "would %s%s%s%s%s; nothing was restored",
                       k->id, *extra ? "also restore " : "", extra,
                       *extra && *missing ? ", and " : "", *missing ? "leave out " : "", missing);
    return 0;
}

/* pg_restore compares --schema/--table names with the archive's table of contents byte for
 * byte, and silently ignores a name that matches nothing (it restores nothing and exits 0). The
 * archive holds the names in pg_dump's client encoding: the database's, unless the backup ran
 * with client_encoding in POSTGRES_URL or PGCLIENTENCODING (SQL_ASCII: the database's bytes as
 * stored); the summary, and so the selection, has them in UTF-8. Converted by the server (c, any
 * database: binary parameter and result) into enc; *out allocated, the name itself when it is
 * ASCII (the same bytes in every server encoding) or enc is UTF8. */
static int name_encode(PGconn *c, const char *enc, const char *name, char **out, struct err *e)
{
    bool ascii = true;
    for (const char *p = name; *p && ascii; p++)
        ascii = (unsigned char)*p < 0x80;
    if (ascii || strcmp(enc, "UTF8") == 0) {
        *out = xstrdup(name);
        return 0;
    }
    const char *params[] = {name, enc};
    int lens[] = {(int)strlen(name), (int)strlen(enc)};
    int fmts[] = {1, 0};
    PGresult *res =
        PQexecParams(c, "SELECT convert($1::bytea, 'UTF8', $2)", 2, NULL, params, lens, fmts, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQgetisnull(res, 0, 0) ||
        memchr(PQgetvalue(res, 0, 0), 0, (size_t)PQgetlength(res, 0, 0))) {
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        err_set(e, ERR_DATABASE, NULL,
                "cannot convert the name %s to the dump's encoding %s for pg_restore: %s", name,
                enc, msg ? msg : "unexpected answer");
        PQclear(res);
        return -1;
    }
    *out = xasprintf("%.*s", PQgetlength(res, 0, 0), PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

/* Counts the expected tables in the database and compares. Returns the number that differ
 * (a table that cannot be counted differs), -1 with e when the database cannot be read. */
/* Test-only: CARIS_TEST_ROWS_SKEW=SCHEMA.NAME counts one row more in that table after a
 * restore than there is (a mismatch, as a restore that lost rows would give). */
static void test_rows_skew(json_t *tables)
{
    const char *v = getenv("CARIS_TEST_ROWS_SKEW");
    size_t i;
    json_t *x;
    json_array_foreach(tables, i, x)
    {
        char *key = xasprintf("%s.%s", json_string_value(json_object_get(x, "schema")),
                              json_string_value(json_object_get(x, "name")));
        json_t *a = json_object_get(x, "actual");
        if (v && strcmp(v, key) == 0 && json_is_integer(a))
            json_integer_set(a, json_integer_value(a) + 1);
        free(key);
    }
}

static int compare_counts(const struct pgsrc_target *t, json_t *tables, struct err *e)
{
    PGconn *c = pgsrc_connect(t, NULL, e);
    if (!c)
        return -1;
    int rc = pgsrc_count_rows_each(c, tables, "actual", e);
    PQfinish(c);
    if (rc != 0)
        return -1;
    test_rows_skew(tables);
    int bad = 0;
    size_t i;
    json_t *x;
    json_array_foreach(tables, i, x)
    {
        json_t *a = json_object_get(x, "actual"), *want = json_object_get(x, "expected");
        if (!json_is_integer(a) || !json_is_integer(want) ||
            json_integer_value(a) != json_integer_value(want))
            bad++;
    }
    return bad;
}

static void mismatch_error(json_t *tables, int bad, const char *what, struct err *e)
{
    char first[300] = "";
    size_t i;
    json_t *x;
    json_array_foreach(tables, i, x)
    {
        json_t *a = json_object_get(x, "actual");
        if (json_is_integer(a) &&
            json_integer_value(a) == json_integer_value(json_object_get(x, "expected")))
            continue;
        if (json_is_integer(a))
            snprintf(first, sizeof(first), "%s.%s has %lld rows, the backup recorded %lld",
                     json_string_value(json_object_get(x, "schema")),
                     json_string_value(json_object_get(x, "name")), json_integer_value(a),
                     json_integer_value(json_object_get(x, "expected")));
        else
            snprintf(first, sizeof(first), "%s.%s is missing",
                     json_string_value(json_object_get(x, "schema")),
                     json_string_value(json_object_get(x, "name")));
        break;
    }
    err_set(e, ERR_DAMAGE,
            "the restored database does not hold what the backup recorded: do not rely on it; "
            "run `caris-backup verify` on the backup and compare with an older backup",
            "row counts differ in %d of %zu tables after %s (%s)", bad, json_array_size(tables),
            what, first);
}

/* Puts text in front of e's hint ("text; hint"). */
static void hint_before(struct err *e, const char *text)
{
    char was[sizeof(e->hint)];
    snprintf(was, sizeof(was), "%s", e->hint);
    snprintf(e->hint, sizeof(e->hint), "%s%s%s", text, *was ? "; " : "", was);
}

/* ---- ownership ------------------------------------------------------------------------------ */

/* pg_restore sets every object's owner and privileges as in the backup; that fails when a
 * role is missing on the target, or when the restoring user may not give objects to it. In
 * those cases ownership (--no-owner) and, for missing roles, privileges (--no-privileges) are
 * left out, and the plan says so. Predefined roles (pg_*) exist on every server. */
static void decide_ownership(PGconn *c, json_t *roles, bool *no_owner, bool *no_priv, json_t *plan)
{
    *no_owner = *no_priv = false;
    struct buf lit = {0};
    buf_append(&lit, "{", 1);
    size_t i, n = 0;
    json_t *v;
    json_array_foreach(roles, i, v)
    {
        const char *role = json_string_value(v);
        if (!role || strncmp(role, "pg_", 3) == 0)
            continue;
        if (n++)
            buf_append(&lit, ",", 1);
        buf_append(&lit, "\"", 1);
        for (const char *p = role; *p; p++) {
            if (*p == '"' || *p == '\\')
                buf_append(&lit, "\\", 1);
            buf_append(&lit, p, 1);
        }
        buf_append(&lit, "\"", 1);
    }
    buf_append(&lit, "}", 2); /* with the NUL */
    char *user = xstrdup(PQuser(c));
    if (n == 0) {
        json_array_append_new(plan, json_string("ownership and privileges as in the backup"));
        free(user);
        buf_free(&lit);
        return;
    }
    const char *params[] = {(const char *)lit.data};
    struct err qe = ERR_INIT;
    PGresult *res =
        pgsrc_query(c,
                    "SELECT r, EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r), "
                    "COALESCE((SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles "
                    "WHERE rolname = r), false) FROM unnest($1::text[]) AS r ORDER BY 1",
                    1, params, &qe);
    buf_free(&lit);
    if (!res) {
        *no_owner = *no_priv = true;
        json_array_append_new(plan, json_sprintf("cannot check the backup's roles on the target "
                                                 "(%s): objects will be owned by %s, privileges "
                                                 "not restored",
                                                 qe.msg, user));
        free(user);
        return;
    }
    struct buf missing = {0}, foreign = {0};
    for (int row = 0; row < PQntuples(res); row++) {
        const char *role = PQgetvalue(res, row, 0);
        struct buf *b = NULL;
        if (strcmp(PQgetvalue(res, row, 1), "t") != 0)
            b = &missing;
        else if (strcmp(PQgetvalue(res, row, 2), "t") != 0)
            b = &foreign;
        if (!b)
            continue;
        if (b->len)
            buf_append(b, ", ", 2);
        buf_append(b, role, strlen(role));
    }
    PQclear(res);
    buf_append_u8(&missing, 0);
    buf_append_u8(&foreign, 0);
    if (missing.len > 1) {
        *no_owner = *no_priv = true;
        json_array_append_new(
            plan, json_sprintf("roles missing on the target: %s: objects will be owned by %s, "
                               "and the backup's privileges are applied after the data except "
                               "those of the missing roles (pg_restore --no-owner "
                               "--no-privileges, then each GRANT and REVOKE of the backup); "
                               "create the roles first (the backup's globals.sql) to keep them",
                               (const char *)missing.data, user));
    } else if (foreign.len > 1) {
        *no_owner = true;
        json_array_append_new(plan,
                              json_sprintf("%s cannot give objects to %s: objects will be owned "
                                           "by %s (pg_restore --no-owner); privileges as in the "
                                           "backup",
                                           user, (const char *)foreign.data, user));
    } else {
        json_array_append_new(plan, json_string("ownership and privileges as in the backup"));
    }
    buf_free(&missing);
    buf_free(&foreign);
    free(user);
}

/* ---- databases ------------------------------------------------------------------------------ */

static PGconn *connect_maintenance(const struct pgsrc_target *t, struct err *e)
{
    PGconn *c = pgsrc_connect(t, "postgres", e);
    if (!c) {
        struct err e2 = ERR_INIT;
        c = pgsrc_connect(t, "template1", &e2);
        if (c)
            err_clear(e);
    }
    return c;
}

/* A warning of a restore: in its result, and logged (w is freed). */
static void restore_warn(json_t *warnings, const struct caris_op *op, char *w)
{
    json_array_append_new(warnings, jsonx_text(w));
    caris_op_log(op, LOG_WARN, "%s", w);
    free(w);
}

/* COMMENT ON DATABASE name IS text (NULL: none). */
static int set_db_comment(PGconn *c, const char *name, const char *text, struct err *e)
{
    char *qn = PQescapeIdentifier(c, name, strlen(name));
    char *qt = text ? PQescapeLiteral(c, text, strlen(text)) : NULL;
    if (!qn || (text && !qt)) {
        PQfreemem(qn);
        PQfreemem(qt);
        return err_set(e, ERR_DATABASE, NULL, "cannot quote the comment of database %s", name);
    }
    char *sql = xasprintf("COMMENT ON DATABASE %s IS %s", qn, qt ? qt : "NULL");
    int rc = pgsrc_exec(c, sql, e);
    free(sql);
    PQfreemem(qn);
    PQfreemem(qt);
    return rc;
}

/* set_db_comment on a connection of its own to the target's database (a restore into an
 * existing database: its mark, and its comment put back). */
static int set_target_comment(const struct pgsrc_target *t, const char *name, const char *text,
                              struct err *e)
{
    PGconn *c = pgsrc_connect(t, NULL, e);
    int rc = c ? set_db_comment(c, name, text, e) : -1;
    if (c)
        PQfinish(c);
    return rc;
}

/* REVOKE ALL ON DATABASE name FROM PUBLIC: a database a restore makes is closed to other roles
 * until it is done (a new database lets PUBLIC connect). */
static int db_close_to_public(PGconn *c, const char *name, struct err *e)
{
    char *qn = PQescapeIdentifier(c, name, strlen(name));
    if (!qn)
        return err_set(e, ERR_DATABASE, NULL, "cannot quote the name of database %s", name);
    char *sql = xasprintf("REVOKE ALL ON DATABASE %s FROM PUBLIC", qn);
    int rc = pgsrc_exec(c, sql, e);
    free(sql);
    PQfreemem(qn);
    return rc;
}

static int database_exists(PGconn *c, const char *name, struct err *e)
{
    const char *params[] = {name};
    PGresult *res = pgsrc_query(c, "SELECT 1 FROM pg_database WHERE datname = $1", 1, params, e);
    if (!res)
        return -1;
    int n = PQntuples(res);
    PQclear(res);
    return n > 0;
}

/* CREATE DATABASE from template0 with the backup's encoding, and its locale when the server
 * has it (else the server's default, else C). */
static int create_database(PGconn *c, const char *name, const struct dbk *k, struct err *e)
{
    char *qn = PQescapeIdentifier(c, name, strlen(name));
    const char *enc = summary_str(k, "encoding");
    const char *coll = summary_str(k, "collate"), *ctype = summary_str(k, "ctype");
    char *qe = PQescapeLiteral(c, *enc ? enc : "UTF8", strlen(*enc ? enc : "UTF8"));
    char *qc = PQescapeLiteral(c, coll, strlen(coll));
    char *qt = PQescapeLiteral(c, ctype, strlen(ctype));
    if (!qn || !qe || !qc || !qt) {
        PQfreemem(qn);
        PQfreemem(qe);
        PQfreemem(qc);
        PQfreemem(qt);
        return err_set(e, ERR_DATABASE, NULL, "cannot quote the name of database %s", name);
    }
    char *sql[3];
    sql[0] = *coll && *ctype ? xasprintf("CREATE DATABASE %s TEMPLATE template0 ENCODING %s "
                                         "LC_COLLATE %s LC_CTYPE %s",
                                         qn, qe, qc, qt)
                             : NULL;
    sql[1] = xasprintf("CREATE DATABASE %s TEMPLATE template0 ENCODING %s", qn, qe);
    sql[2] = xasprintf("CREATE DATABASE %s TEMPLATE template0 ENCODING %s LC_COLLATE 'C' "
                       "LC_CTYPE 'C'",
                       qn, qe);
    int rc = -1;
    for (int i = 0; i < 3 && rc != 0; i++) {
        if (!sql[i])
            continue;
        PGresult *res = PQexecParams(c, sql[i], 0, NULL, NULL, NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            rc = 0;
        } else {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            bool last = i == 2;
            if (state && strcmp(state, "42P04") == 0) {
                err_set(e, ERR_USAGE,
                        "drop it first, name another database in the target URL, or restore "
                        "into it with --clean instead of --create",
                        "database %s already exists at host %s port %s", name, PQhost(c),
                        PQport(c));
                last = true;
            } else if (state && strcmp(state, "42501") == 0) {
                err_set(e, ERR_DATABASE,
                        "grant the user CREATEDB (ALTER ROLE ... CREATEDB), or use a target "
                        "database that exists (test-restore: --scratch local)",
                        "user %s may not create databases at host %s port %s", PQuser(c), PQhost(c),
                        PQport(c));
                last = true;
            } else {
                err_set(e, ERR_DATABASE, NULL, "cannot create database %s at host %s port %s: %s",
                        name, PQhost(c), PQport(c), msg ? msg : "unknown error");
            }
            PQclear(res);
            if (last)
                break;
            continue;
        }
        PQclear(res);
    }
    if (rc == 0)
        err_clear(e);
    for (int i = 0; i < 3; i++)
        free(sql[i]);
    PQfreemem(qn);
    PQfreemem(qe);
    PQfreemem(qc);
    PQfreemem(qt);
    return rc;
}

static int drop_database(const struct pgsrc_target *server, const char *name, struct err *e)
{
    PGconn *c = connect_maintenance(server, e);
    if (!c)
        return -1;
    char *qn = PQescapeIdentifier(c, name, strlen(name));
    char *sql = xasprintf("DROP DATABASE IF EXISTS %s%s", qn ? qn : "\"\"",
                          PQserverVersion(c) >= 130000 ? " WITH (FORCE)" : "");
    int rc = qn ? pgsrc_exec(c, sql, e) : -1;
    free(sql);
    PQfreemem(qn);
    PQfinish(c);
    return rc;
}

/* After a --create restore failed: the database made for it is dropped again, and e says so
 * (or says it is left, and why). */
static void drop_created(const struct pgsrc_target *t, const char *dbname, struct err *e)
{
    struct err de = ERR_INIT;
    struct pgsrc_target server;
    pgsrc_target_copy(t, &server);
    if (drop_database(&server, dbname, &de) == 0)
        err_wrap(e, "database %s (created for this restore) dropped again", dbname);
    else
        err_wrap(e,
                 "database %s (created for this restore) is left behind, not dropped (%s): drop "
                 "it before restoring again",
                 dbname, de.msg);
    pgsrc_target_free(&server);
}

/* ---- pg_restore -------------------------------------------------------------------------- */

struct relay {
    int from, to;
    int release;     /* atomic: set once the stream checked out */
    int write_errno; /* atomic: pg_restore stopped reading */
};

static void *relay_main(void *arg)
{
    struct relay *rl = arg;
    size_t cap = HOLD_BYTES + RELAY_READ, have = 0;
    uint8_t *buf = xmalloc(cap);
    int werr = 0;
    for (;;) {
        ssize_t n = read(rl->from, buf + have, cap - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        /* Passed on when the buffer is full, not after every read: a pipe read gives at most
         * its 64 KiB, and the move of the held-back bytes would copy the stream again. */
        if (have == cap) {
            size_t out = have - HOLD_BYTES;
            if (fs_write_full(rl->to, buf, out) != 0) {
                werr = errno ? errno : EPIPE;
                break;
            }
            memmove(buf, buf + out, HOLD_BYTES);
            have = HOLD_BYTES;
        }
    }
    if (!werr && have && __atomic_load_n(&rl->release, __ATOMIC_SEQ_CST) &&
        fs_write_full(rl->to, buf, have) != 0)
        werr = errno ? errno : EPIPE;
    if (werr)
        __atomic_store_n(&rl->write_errno, werr, __ATOMIC_SEQ_CST);
    /* pg_restore sees the end of its input; the writer sees EPIPE if it is still writing */
    close(rl->to);
    close(rl->from);
    free(buf);
    return NULL;
}

struct restore_run {
    struct repo *r;
    const struct dbk *k;
    const struct pgsrc_target *target; /* its database is the one restored into */
    const struct pgsrc_tool *tool;
    bool clean, no_owner, no_privileges;
    int jobs;
    const struct selection *sel;
    const char *temp_dir;
    int threads;
    caris_progress_fn progress;
    void *ctx;
    int64_t start_mono, last_progress;
    bool applying;             /* pg_restore was given data (the target may have changed) */
    const struct caris_op *op; /* cancel: pg_restore is stopped before it commits */
    const struct pgsrc_index_tree *pidx; /* --clean: the target's partitioned indexes */
    size_t npidx;
    struct settings_read *settings; /* --create: read beside the restore (settings_start) */
};

static void on_restore_progress(void *ctx, uint64_t bytes)
{
    struct restore_run *rr = ctx;
    int64_t now = time_mono_ns();
    if ((!rr->progress && !rr->op) ||
        (now - rr->last_progress < PROGRESS_EVERY_NS && bytes < rr->k->size))
        return;
    rr->last_progress = now;
    progress_report(rr->progress, rr->ctx, "restore", 0, bytes, rr->k->size, rr->start_mono);
    caris_op_progress(rr->op, "restore", bytes, rr->k->size);
}

static char **restore_argv(const struct restore_run *rr, const char *conninfo, const char *list,
                           const char *file)
{
    size_t cap = 16 + (rr->sel ? rr->sel->nargs : 0), n = 0;
    char **argv = xcalloc(cap, sizeof(char *));
    argv[n++] = xstrdup(rr->tool->path);
    argv[n++] = xasprintf("--dbname=%s", conninfo);
    argv[n++] = xstrdup("--no-password");
    argv[n++] = xstrdup("--exit-on-error");
    if (rr->jobs > 1)
        argv[n++] = xasprintf("--jobs=%d", rr->jobs);
    else
        argv[n++] = xstrdup("--single-transaction");
    if (rr->clean) {
        argv[n++] = xstrdup("--clean");
        argv[n++] = xstrdup("--if-exists");
    }
    if (rr->no_owner)
        argv[n++] = xstrdup("--no-owner");
    if (rr->no_privileges)
        argv[n++] = xstrdup("--no-privileges");
    for (size_t i = 0; rr->sel && i < rr->sel->nargs; i++)
        argv[n++] = xstrdup(rr->sel->args[i]);
    if (list)
        argv[n++] = xasprintf("--use-list=%s", list);
    if (file)
        argv[n++] = xstrdup(file);
    argv[n] = NULL;
    return argv;
}

static void argv_free(char **argv)
{
    for (size_t i = 0; argv && argv[i]; i++)
        free(argv[i]);
    free(argv);
}

/* One pass: repository → relay → pg_restore's stdin, in one transaction. */
static int restore_piped(struct restore_run *rr, char **argv, struct err *e)
{
    sigset_t pipe_set, old_mask;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    /* Writing into a pipe whose reader died raises SIGPIPE: blocked here (the relay thread
     * inherits the mask), seen as EPIPE, and discarded below. */
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
    struct pgsrc_child c;
    struct pgsrc_spawn so = {
        .password = rr->target->password, .pipe_stdin = true, .die_with_parent = true};
    int rc = -1;
    int ip[2];
    if (pgsrc_child_start(&c, rr->tool->path, argv, &so, e) != 0)
        goto out;
    /* non-blocking on our side: while pg_restore waits (for a lock) a cancel is still seen */
    if (pipe2(ip, O_CLOEXEC) != 0) {
        err_sys(e, errno, NULL, "cannot create a pipe");
        pgsrc_child_kill(&c, SIGTERM);
        goto out;
    }
    if (fcntl(ip[1], F_SETFL, O_NONBLOCK) != 0) {
        err_sys(e, errno, NULL, "cannot set up a pipe");
        close(ip[0]);
        close(ip[1]);
        pgsrc_child_kill(&c, SIGTERM);
        goto out;
    }
    struct relay rl = {.from = ip[0], .to = c.in_fd};
    c.in_fd = -1; /* the relay owns it now */
    pthread_t th;
    if (pthread_create(&th, NULL, relay_main, &rl) != 0) {
        close(ip[0]);
        close(ip[1]);
        close(rl.to);
        err_set(e, ERR_FAILURE, NULL, "cannot start a thread");
        pgsrc_child_kill(&c, SIGTERM);
        goto out;
    }
    struct err se = ERR_INIT;
    /* Chunk ids unchecked (as file restores) for a whole restore: pg_restore cannot commit
     * before the relay releases the held-back tail, which it does only once the whole
     * stream's SHA-256 matched; every blob is still authenticated by its AES-GCM tag. A
     * selection (--table, --schema) is different: pg_restore stops reading, and commits, once
     * it has its tables, before the stream's end and its SHA-256. There every chunk is checked
     * against its id, which the backup's chunk list names in order: what pg_restore read is
     * the backup's own bytes, as a whole-stream check would have shown. */
    int src =
        stream_restore_fd_flags(rr->r, json_object_get(rr->k->dump, "chunks"), rr->k->sha, ip[1],
                                rr->threads, rr->sel && rr->sel->nargs ? 0 : REPO_LOAD_NO_ID_CHECK,
                                on_restore_progress, rr, rr->op, &se);
    bool reader_gone = __atomic_load_n(&rl.write_errno, __ATOMIC_SEQ_CST) != 0;
    if (src == 0)
        __atomic_store_n(&rl.release, 1, __ATOMIC_SEQ_CST);
    else if (!reader_gone)
        kill(c.pid, SIGTERM); /* before it sees the end of its input: it cannot commit */
    close(ip[1]);
    /* pg_restore first: a cancel stops it while the relay still feeds it (the relay then
     * sees EPIPE and ends) */
    struct err ce = ERR_INIT;
    int crc = pgsrc_child_wait_cancel(&c, rr->op, &ce);
    pthread_join(th, NULL);
    if (src != 0 && !reader_gone) {
        *e = se;
        err_wrap(e, "restore aborted before its commit");
    } else if (crc != 0) {
        *e = ce;
    } else {
        /* Success, also when pg_restore stopped reading early: with --table/--schema it
         * exits once it has what it wants. Every chunk it read was authenticated and matched
         * its id (above). */
        rc = 0;
    }
out:;
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &zero) > 0)
        ;
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    return rc;
}

/* Parallel: pg_restore -j needs a seekable file, staged (0600, a temp item); the caller
 * removes it. */
static int stage_dump(struct restore_run *rr, struct temp_item *item, struct err *e)
{
    if (fs_mkdir_p(rr->temp_dir, 0700, e) != 0)
        return err_wrap(e, "cannot stage the dump");
    struct statvfs vfs;
    if (statvfs(rr->temp_dir, &vfs) == 0 &&
        (uint64_t)vfs.f_bavail * vfs.f_frsize < rr->k->size + (64u << 20)) {
        char need[32], have[32];
        str_human_bytes(rr->k->size, need, sizeof(need));
        str_human_bytes((uint64_t)vfs.f_bavail * vfs.f_frsize, have, sizeof(have));
        return err_set(e, ERR_IO,
                       "free space there, or restore without --jobs (the dump is then streamed, "
                       "with no copy on disk)",
                       "not enough space in %s to stage the dump for --jobs (%s needed, %s free)",
                       rr->temp_dir, need, have);
    }
    if (temp_item_create(item, rr->temp_dir, "caris-restore-", false, e) != 0)
        return err_wrap(e, "cannot stage the dump");
    /* Written through a descriptor of its own: its close reports what a network file system
     * could only report then; the item's descriptor keeps the lock. */
    int fd = dup(item->fd);
    if (fd < 0)
        return err_sys(e, errno, NULL, "cannot write %s", item->path);
    /* pg_restore reads the file only after this returned 0 (stream SHA-256 checked) */
    if (stream_restore_fd_flags(rr->r, json_object_get(rr->k->dump, "chunks"), rr->k->sha, fd,
                                rr->threads, REPO_LOAD_NO_ID_CHECK, on_restore_progress, rr, rr->op,
                                e) != 0) {
        close(fd);
        return -1;
    }
    if (close(fd) != 0)
        return err_sys(e, errno, NULL, "cannot write %s", item->path);
    return 0;
}

/* ---- --clean and partitioned indexes ------------------------------------------------------ */

struct collect {
    int fd;
    struct buf out;
    size_t max;
    bool truncated;
};

static void *collect_main(void *arg)
{
    struct collect *c = arg;
    char tmp[65536];
    for (;;) {
        ssize_t n = read(c->fd, tmp, sizeof(tmp));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (c->out.len + (size_t)n > c->max)
            c->truncated = true;
        else
            buf_append(&c->out, tmp, (size_t)n);
    }
    close(c->fd);
    return NULL;
}

#define TOC_MAX (256u << 20)

/* What pg_restore prints (stdout, NUL-terminated in *out) with the options opts
 * (NULL-terminated), then the selection's (with_sel), for the staged file, or for the stream
 * (read from its beginning: pg_restore stops reading once it has what it prints; the rest of
 * the stream is not fetched). */
static int pg_restore_text_sel(struct restore_run *rr, const char *file, const char *const *opts,
                               bool with_sel, char **out, struct err *e)
{
    *out = NULL;
    size_t nopts = 0, nsel = with_sel && rr->sel ? rr->sel->nargs : 0;
    while (opts[nopts])
        nopts++;
    const char **argv = xcalloc(xsize(nopts + nsel, 1, 3), sizeof(char *));
    size_t n = 0;
    argv[n++] = rr->tool->path;
    for (size_t i = 0; i < nopts; i++)
        argv[n++] = opts[i];
    for (size_t i = 0; i < nsel; i++)
        argv[n++] = rr->sel->args[i];
    argv[n++] = file;
    sigset_t pipe_set, old_mask;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
    struct pgsrc_child c;
    struct pgsrc_spawn so = {.pipe_stdin = !file, .pipe_stdout = true, .die_with_parent = true};
    int rc = -1;
    if (pgsrc_child_start(&c, rr->tool->path, (char **)argv, &so, e) != 0)
        goto out;
    struct collect col = {.fd = c.out_fd, .max = TOC_MAX};
    c.out_fd = -1;
    pthread_t th;
    if (pthread_create(&th, NULL, collect_main, &col) != 0) {
        close(col.fd);
        pgsrc_child_kill(&c, SIGTERM);
        err_set(e, ERR_FAILURE, NULL, "cannot start a thread");
        goto out;
    }
    struct err se = ERR_INIT;
    /* chunk by chunk in this thread (no pool, no read plan): nothing is fetched or decoded
     * ahead of what pg_restore asks for, so a read that stops after the table of contents
     * costs its first chunks only (on S3, a read plan would fetch 8 MiB ranges of every pack
     * of the first window at once) */
    if (!file)
        stream_restore_fd_on(rr->r, json_object_get(rr->k->dump, "chunks"), rr->k->sha, c.in_fd,
                             NULL, 0, NULL, NULL, rr->op, &se);
    int crc = pgsrc_child_wait_cancel(&c, rr->op, e);
    pthread_join(th, NULL);
    if (crc != 0) {
        if (se.code == ERR_DAMAGE)
            *e = se;
        buf_free(&col.out);
        goto out;
    }
    if (col.truncated) {
        buf_free(&col.out);
        err_set(e, ERR_FAILURE, NULL, "pg_restore %s printed more than %u MiB", opts[0],
                TOC_MAX >> 20);
        goto out;
    }
    buf_append_u8(&col.out, 0);
    *out = (char *)col.out.data;
    rc = 0;
out:;
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &zero) > 0)
        ;
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    free(argv);
    return rc;
}

static int pg_restore_text(struct restore_run *rr, const char *file, const char *const *opts,
                           char **out, struct err *e)
{
    return pg_restore_text_sel(rr, file, opts, false, out, e);
}

/* pg_restore --list of the staged file, or of the stream's beginning. */
static int toc_list(struct restore_run *rr, const char *file, char **toc, struct err *e)
{
    const char *const opts[] = {"--list", NULL};
    return pg_restore_text(rr, file, opts, toc, e);
}

/* The encoding the dump's names are in (enc, n bytes): its ENCODING entry, which pg_restore
 * prints as the SET client_encoding that starts its script (here of no entry: --use-list of an
 * empty list; only the dump's beginning is read). The summary's "encoding" is the database's,
 * which the dump's is not when the backup ran with another client_encoding: a selection
 * converted to it matched nothing. */
static int dump_encoding(struct restore_run *rr, char *enc, size_t n, struct err *e)
{
    const char *const opts[] = {"--file=-", "--use-list=/dev/null", NULL};
    char *sql = NULL;
    if (pg_restore_text(rr, NULL, opts, &sql, e) != 0)
        return err_wrap(e, "cannot read the encoding of the dump of backup %s", rr->k->id);
    static const char set[] = "SET client_encoding = '";
    const char *p = strstr(sql, set);
    size_t len = p ? strcspn(p + strlen(set), "'\n") : 0;
    int rc = 0;
    if (!p || !len || len >= n || p[strlen(set) + len] != '\'')
        rc = err_set(e, ERR_DAMAGE,
                     "run `caris-backup verify` on the backup; restore the whole database "
                     "(without --table/--schema) into a new database with --create instead",
                     "the dump of backup %s names no encoding (pg_restore printed no SET "
                     "client_encoding): --table/--schema cannot be matched with its names",
                     rr->k->id);
    else
        snprintf(enc, n, "%.*s", (int)len, p + strlen(set));
    /* test-only: CARIS_TEST_DUMP_ENCODING=ENC takes the dump's names to be in ENC (a wrong
     * encoding, as the summary's was: selection_encode must refuse what then matches nothing) */
    const char *force = getenv("CARIS_TEST_DUMP_ENCODING");
    if (rc == 0 && force && *force)
        snprintf(enc, n, "%s", force);
    free(sql);
    return rc;
}

/* Whether the list (pg_restore --list) has the TABLE entry of schema.name (both as the dump
 * writes them; pg_restore shows a newline in a name as a space). */
static bool toc_has_table(const char *toc, const char *schema, const char *name)
{
    char *want = xasprintf(" TABLE %s %s ", schema, name);
    for (char *p = want; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    bool found = false;
    for (const char *l = toc; *l && !found;) {
        size_t len = strcspn(l, "\n");
        /* "ID; TABLEOID OID DESC SCHEMA NAME OWNER"; comments start with ';' */
        if (*l != ';') {
            char *line = xstrndup(l, len);
            found = strstr(line, want) != NULL;
            free(line);
        }
        l += len + (l[len] == '\n');
    }
    free(want);
    return found;
}

/* Converts the selection's names to the dump's encoding (dump_encoding, name_encode), then
 * checks with pg_restore --list of the selection that it takes every table the restore is to
 * bring back: pg_restore ignores a name that matches nothing and exits 0, so a name it does not
 * match (wrongly converted, or a dump that does not hold what the summary lists) is refused here
 * (ERR_DAMAGE, naming the tables) rather than reported restored. rr: a probe (its r, k, tool,
 * sel, temp_dir, op); c: any database. */
static int selection_encode(struct restore_run *rr, PGconn *c, struct selection *s, struct err *e)
{
    if (!s->nargs)
        return 0;
    char enc[64];
    if (dump_encoding(rr, enc, sizeof(enc), e) != 0)
        return -1;
    /* SQL_ASCII: the database's bytes as stored (the summary has them in UTF-8 unless the
     * database itself is SQL_ASCII) */
    if (strcmp(enc, "SQL_ASCII") == 0) {
        const char *db = summary_str(rr->k, "encoding");
        snprintf(enc, sizeof(enc), "%s", *db && strcmp(db, "SQL_ASCII") != 0 ? db : "UTF8");
    }
    for (size_t i = 0; i < s->nargs; i++) {
        char *eq = strchr(s->args[i], '=');
        char *name;
        if (name_encode(c, enc, eq ? eq + 1 : "", &name, e) != 0)
            return -1;
        char *arg = xasprintf("%.*s%s", (int)(eq - s->args[i] + 1), s->args[i], name);
        free(name);
        free(s->args[i]);
        s->args[i] = arg;
    }
    char *toc = NULL;
    const char *const lopts[] = {"--list", NULL};
    if (pg_restore_text_sel(rr, NULL, lopts, true, &toc, e) != 0)
        return err_wrap(e, "cannot read the dump's table of contents");
    char missing[400] = "";
    size_t nmissing = 0, i;
    json_t *x;
    int rc = 0;
    json_array_foreach(s->expected, i, x)
    {
        const char *schema = json_string_value(json_object_get(x, "schema"));
        const char *name = json_string_value(json_object_get(x, "name"));
        char *es = NULL, *en = NULL;
        if (name_encode(c, enc, schema, &es, e) != 0 || name_encode(c, enc, name, &en, e) != 0) {
            free(es);
            rc = -1;
            break;
        }
        if (!toc_has_table(toc, es, en)) {
            char *q = qualified_quote(schema, name);
            str_list_add(missing, sizeof(missing), q);
            free(q);
            nmissing++;
        }
        free(es);
        free(en);
    }
    free(toc);
    if (rc == 0 && nmissing)
        rc = err_set(e, ERR_FAILURE,
                     "nothing was restored; restore the whole database (without "
                     "--table/--schema) into a new database with --create and take the tables "
                     "from there, and report this as a bug of caris-backup",
                     "pg_restore's selection (names in the dump's encoding %s) matches no entry "
                     "of the dump of backup %s for %zu table(s) it lists: %s; pg_restore would "
                     "have left them out and reported success",
                     enc, rr->k->id, nmissing, missing);
    return rc;
}

/* Writes the reordered list to a 0600 file under temp_dir (a temp item); the caller removes
 * it. */
static int write_toc(struct restore_run *rr, const char *list, struct temp_item *item,
                     struct err *e)
{
    if (fs_mkdir_p(rr->temp_dir, 0700, e) != 0 ||
        temp_item_create(item, rr->temp_dir, "caris-toc-", false, e) != 0)
        return -1;
    int fd = dup(item->fd);
    if (fd < 0 || fs_write_full(fd, list, strlen(list)) != 0 || close(fd) != 0) {
        int en = errno;
        if (fd >= 0)
            close(fd);
        return err_sys(e, en, NULL, "cannot write %s", item->path);
    }
    return 0;
}

/* pg_restore --schema/--table restores no CREATE SCHEMA: the schemas of the selected objects
 * are created first when the target lacks them (owned by the restoring user), and dropped
 * again when the restore fails without having changed anything. */
static int ensure_schemas(const struct restore_run *rr, json_t *created, struct err *e)
{
    const struct selection *sel = rr->sel;
    if (!sel || !sel->nargs)
        return 0;
    json_t *want = json_object();
    const char *name;
    json_t *v;
    json_object_foreach(sel->schemas, name, v) json_object_set(want, name, json_true());
    size_t i;
    json_array_foreach(sel->expected, i, v)
        json_object_set(want, json_string_value(json_object_get(v, "schema")), json_true());
    PGconn *c = pgsrc_connect(rr->target, NULL, e);
    int rc = c ? 0 : -1;
    json_object_foreach(want, name, v)
    {
        if (rc != 0)
            break;
        const char *params[] = {name};
        PGresult *res =
            pgsrc_query(c, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, params, e);
        if (!res) {
            rc = -1;
            break;
        }
        bool exists = PQntuples(res) > 0;
        PQclear(res);
        if (exists)
            continue;
        char *q = PQescapeIdentifier(c, name, strlen(name));
        char *sql = q ? xasprintf("CREATE SCHEMA %s", q) : NULL;
        rc = sql ? pgsrc_exec(c, sql, e) : err_set(e, ERR_DATABASE, NULL, "cannot quote %s", name);
        if (rc == 0)
            json_array_append_new(created, json_string(name));
        free(sql);
        PQfreemem(q);
    }
    if (c)
        PQfinish(c);
    json_decref(want);
    return rc;
}

static void drop_schemas(const struct restore_run *rr, json_t *created)
{
    if (!json_array_size(created))
        return;
    struct err e = ERR_INIT;
    PGconn *c = pgsrc_connect(rr->target, NULL, &e);
    size_t i;
    json_t *v;
    json_array_foreach(created, i, v)
    {
        const char *name = json_string_value(v);
        char *q = c ? PQescapeIdentifier(c, name, strlen(name)) : NULL;
        char *sql = q ? xasprintf("DROP SCHEMA IF EXISTS %s", q) : NULL;
        if (!sql || pgsrc_exec(c, sql, &e) != 0)
            caris_op_log(rr->op, LOG_WARN, "cannot drop schema %s (created for the restore): %s",
                         name, e.msg);
        free(sql);
        PQfreemem(q);
    }
    if (c)
        PQfinish(c);
}

/* A scratch cluster's directory a sweep leaves: its server still runs, or it is another
 * user's (the sweep of /tmp, a directory all users share). */
static bool scratch_keep(const char *path)
{
    struct stat st;
    return lstat(path, &st) != 0 || st.st_uid != geteuid() || pgsrc_local_running(path);
}

/* Removes what restores killed with SIGKILL left in temp_dir: staged dumps, pg_restore lists
 * and scratch clusters (whose server has stopped) that no live process holds; and the scratch
 * clusters left where a long temp_dir puts them (pgsrc_local_parent: /tmp), a decrypted copy
 * of a database that nothing removed. */

static void sweep_temp(const char *temp_dir, const struct caris_op *op)
{
    static const char *const prefixes[] = {"caris-restore-", "caris-toc-", "caris-scratch-", NULL};
    static const char *const scratch[] = {"caris-scratch-", NULL};
    if (!temp_dir)
        return;
    const char *local = pgsrc_local_parent(temp_dir);
    for (int k = 0; k < (strcmp(local, temp_dir) != 0 ? 2 : 1); k++) {
        const char *dir = k ? local : temp_dir;
        char names[400];
        size_t n = temp_sweep(dir, k ? scratch : prefixes, scratch_keep, names, sizeof(names));
        if (n)
            caris_op_log(op, LOG_INFO,
                         "removed %zu item(s) that a restore killed earlier left in %s: %s", n, dir,
                         names);
    }
}

struct settings_read;
static void settings_start(struct settings_read *sr);

static int pg_restore_run(struct restore_run *rr, struct err *e)
{
    rr->start_mono = time_mono_ns();
    struct temp_item staged = TEMP_ITEM_INIT, listfile = TEMP_ITEM_INIT;
    char *toc = NULL;
    char **argv = NULL;
    json_t *schemas = json_array();
    int rc = -1;
    if (caris_op_check(rr->op, NULL, e) != 0)
        goto out;
    sweep_temp(rr->temp_dir, rr->op);
    if (rr->jobs > 1 && stage_dump(rr, &staged, e) != 0)
        goto out;
    if (rr->npidx) {
        if (toc_list(rr, staged.path, &toc, e) != 0) {
            err_wrap(e, "cannot read the dump's table of contents");
            goto out;
        }
        char *list = pgsrc_toc_reorder(toc, rr->pidx, rr->npidx);
        int wrc = write_toc(rr, list, &listfile, e);
        free(list);
        if (wrc != 0)
            goto out;
    }
    if (ensure_schemas(rr, schemas, e) != 0)
        goto out;
    /* test-only: CARIS_TEST_RESTORE_HOLD=PATH holds it here, just before pg_restore (its dump
     * staged, its scratch cluster running): a test kills it there, or runs another */
    test_hold_point("CARIS_TEST_RESTORE_HOLD");
    /* after the sweep (it makes a temp item), and after the hold: what a restore killed there
     * leaves is the same whenever the kill comes */
    settings_start(rr->settings);
    char *conninfo = pgsrc_target_conninfo(rr->target, NULL);
    argv = restore_argv(rr, conninfo, listfile.path, staged.path);
    free(conninfo);
    if (staged.path) {
        struct pgsrc_child c;
        struct pgsrc_spawn so = {.password = rr->target->password, .die_with_parent = true};
        if (pgsrc_child_start(&c, rr->tool->path, argv, &so, e) != 0)
            goto out;
        rr->applying = true;
        rc = pgsrc_child_wait_cancel(&c, rr->op, e);
    } else {
        rc = restore_piped(rr, argv, e);
    }
    if (rc == 0)
        progress_report(rr->progress, rr->ctx, "restore", 1, rr->k->size, rr->k->size,
                        rr->start_mono);
out:
    if (rc != 0 && !rr->applying)
        drop_schemas(rr, schemas);
    json_decref(schemas);
    argv_free(argv);
    free(toc);
    temp_item_remove(&staged);
    temp_item_remove(&listfile);
    return rc;
}

/* ---- the new database's own settings (--create) --------------------------------------------- */

/* pg_restore applies a dump's database-level entries only with its own --create, which makes
 * the database under the dump's name: DATABASE PROPERTIES (ALTER DATABASE ... SET, CONNECTION
 * LIMIT, IS_TEMPLATE; ALTER ROLE ... IN DATABASE ... SET) and the database's COMMENT, SECURITY
 * LABEL and ACL (GRANT/REVOKE ... ON DATABASE, a REVOKE CONNECT FROM PUBLIC included). A
 * --create restore here makes the database itself (under the target URL's name, with the
 * locale fallbacks), so these entries are printed by pg_restore --create --use-list from the
 * dump and applied one statement at a time, each naming the new database instead of the
 * dump's. A statement that names any other database is never run. */

/* The descriptions of the database's own entries in pg_restore --list, whose lines are
 * "<id>; <tableoid> <oid> <desc> <schema> <tag> <owner>". The DATABASE entry itself holds its
 * owner (ALTER DATABASE ... OWNER TO): without it in the list a database with no other entry
 * was taken for one without settings, and its owner left out. */
static const char *const toc_db_kinds[] = {
    "DATABASE - ",     "DATABASE PROPERTIES ",       "COMMENT - DATABASE ",
    "ACL - DATABASE ", "SECURITY LABEL - DATABASE ", NULL};

/* The index in kinds (NULL-terminated) of the description a line of pg_restore --list starts
 * with after its ids, or -1. */
static int toc_kind(const char *line, size_t len, const char *const *kinds)
{
    const char *p = memchr(line, ';', len);
    if (!p || line[0] == ';')
        return -1;
    p++;
    for (int field = 0; field < 2; field++) { /* the catalog id: two numbers */
        while (p < line + len && *p == ' ')
            p++;
        while (p < line + len && *p >= '0' && *p <= '9')
            p++;
    }
    if (p >= line + len || *p != ' ')
        return -1;
    p++;
    for (int i = 0; kinds[i]; i++)
        if ((size_t)(line + len - p) > strlen(kinds[i]) &&
            strncmp(p, kinds[i], strlen(kinds[i])) == 0)
            return i;
    return -1;
}

/* Writes the lines of toc (pg_restore --list) whose description is kinds[from] or a later one
 * (toc_kind) to a list file (write_toc): 0; 1 when there is none (nothing written); -1 with
 * e. */
static int toc_pick(struct restore_run *rr, const char *toc, const char *const *kinds, int from,
                    struct temp_item *item, struct err *e)
{
    struct buf list = {0};
    for (const char *l = toc; *l;) {
        size_t len = strcspn(l, "\n");
        if (toc_kind(l, len, kinds) >= from) {
            buf_append(&list, l, len);
            buf_append(&list, "\n", 1);
        }
        l += len + (l[len] == '\n');
    }
    buf_append_u8(&list, 0);
    int rc = list.len == 1 ? 1 : write_toc(rr, (const char *)list.data, item, e);
    buf_free(&list);
    return rc;
}

/* The statements of a SQL script: ';' ends one outside string constants ('...', E'...'),
 * quoted identifiers, dollar quotes and comments; comments and psql's backslash lines
 * (\connect) are left out. Each newly allocated, in *out (NULL-terminated). */
static size_t sql_statements(const char *s, char ***out)
{
    size_t n = 0;
    char **v = xcalloc(1, sizeof(char *));
    struct buf cur = {0};
    while (*s) {
        if (cur.len == 0 && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) {
            s++;
            continue;
        }
        if (cur.len == 0 && *s == '\\') { /* a psql command: to the end of its line */
            s += strcspn(s, "\n");
            continue;
        }
        if (s[0] == '-' && s[1] == '-') { /* a comment */
            s += strcspn(s, "\n");
            continue;
        }
        if (*s == '\'' || *s == '"') {
            char q = *s;
            bool esc = q == '\'' && cur.len &&
                       (cur.data[cur.len - 1] == 'E' || cur.data[cur.len - 1] == 'e');
            buf_append(&cur, s++, 1);
            while (*s) {
                if (esc && *s == '\\' && s[1]) {
                    buf_append(&cur, s, 2);
                    s += 2;
                    continue;
                }
                buf_append(&cur, s, 1);
                if (*s++ == q) {
                    if (*s == q) { /* doubled: part of it */
                        buf_append(&cur, s++, 1);
                        continue;
                    }
                    break;
                }
            }
            continue;
        }
        if (*s == '$') { /* $tag$ ... $tag$ */
            size_t t = 1;
            while (s[t] && (s[t] == '_' || (s[t] >= 'a' && s[t] <= 'z') ||
                            (s[t] >= 'A' && s[t] <= 'Z') || (s[t] >= '0' && s[t] <= '9')))
                t++;
            if (s[t] == '$') {
                const char *end = NULL;
                for (const char *p = s + t + 1; (p = strchr(p, '$')); p++)
                    if (strncmp(p, s, t + 1) == 0) {
                        end = p + t + 1;
                        break;
                    }
                size_t l = end ? (size_t)(end - s) : strlen(s);
                buf_append(&cur, s, l);
                s += l;
                continue;
            }
        }
        if (*s == ';') {
            s++;
            if (cur.len == 0)
                continue; /* an empty statement */
            buf_append_u8(&cur, 0);
            v = xrealloc(v, xsize(n + 2, sizeof(char *), 0));
            v[n++] = (char *)cur.data;
            v[n] = NULL;
            memset(&cur, 0, sizeof(cur));
            continue;
        }
        buf_append(&cur, s++, 1);
    }
    buf_free(&cur); /* an unterminated rest is not a statement pg_restore printed */
    *out = v;
    return n;
}

static bool word_is(const char *w, size_t n, const char *kw)
{
    return strlen(kw) == n && strncasecmp(w, kw, n) == 0;
}

/* Whether stmt is a session setting (SET, RESET, SELECT pg_catalog.set_config), run as it
 * is. */
static bool stmt_session(const char *stmt)
{
    size_t w0 = strspn(stmt, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
    return word_is(stmt, w0, "SET") || word_is(stmt, w0, "RESET") ||
           strncmp(stmt, "SELECT pg_catalog.set_config(", 29) == 0;
}

/* stmt with each database it names (the word after DATABASE, before its first string
 * constant) renamed from `from` to the identifier `to` (quoted), newly allocated; NULL when it
 * names none, or another database than `from`. */
static char *stmt_for_db(const char *stmt, const char *from, const char *to)
{
    struct buf o = {0};
    size_t named = 0;
    bool after_db = false, other = false, role_next = false;
    const char *p = stmt;
    while (*p && *p != '\'' && *p != '$') {
        const char *t = p;
        char *ident = NULL; /* the token as an identifier's name */
        if (*p == '"') {
            struct buf id = {0};
            for (p++; *p; p++) {
                if (*p == '"') {
                    if (p[1] != '"')
                        break;
                    p++;
                }
                buf_append(&id, p, 1);
            }
            if (*p != '"') { /* unterminated */
                buf_free(&id);
                other = true;
                break;
            }
            p++;
            buf_append_u8(&id, 0);
            ident = (char *)id.data;
        } else if ((unsigned char)*p >= 0x80 || *p == '_' || (*p >= 'a' && *p <= 'z') ||
                   (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')) {
            while ((unsigned char)*p >= 0x80 || *p == '_' || *p == '$' ||
                   (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
                p++;
            ident = xstrndup(t, (size_t)(p - t));
            /* an unquoted name folds to lower case, as the server folds it */
            for (char *c = ident; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char)(*c - 'A' + 'a');
        } else if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            buf_append(&o, p++, 1);
            continue;
        } else {
            p++;
        }
        if (after_db && ident) {
            if (strcmp(ident, from) == 0) {
                buf_append(&o, to, strlen(to));
                named++;
            } else {
                other = true;
            }
            after_db = false;
            free(ident);
            continue;
        }
        /* after ROLE, TO, FROM, BY, FOR a role's name: pg_dump leaves a role named database
         * (not a reserved word) unquoted, as in ALTER ROLE database IN DATABASE x */
        after_db = ident && *t != '"' && !role_next && word_is(t, (size_t)(p - t), "DATABASE");
        role_next = ident && *t != '"' &&
                    (word_is(t, (size_t)(p - t), "ROLE") || word_is(t, (size_t)(p - t), "TO") ||
                     word_is(t, (size_t)(p - t), "FROM") || word_is(t, (size_t)(p - t), "BY") ||
                     word_is(t, (size_t)(p - t), "FOR"));
        free(ident);
        buf_append(&o, t, (size_t)(p - t));
    }
    if (other || after_db || named == 0) {
        buf_free(&o);
        return NULL;
    }
    buf_append(&o, p, strlen(p));
    buf_append_u8(&o, 0);
    return (char *)o.data;
}

/* A statement's beginning, for a message: its first line, at most 100 bytes, and nothing from
 * its first string constant on: a setting's value (ALTER ... SET app.jwt_secret TO '...') or a
 * comment's text may be a secret, and the message goes to the log, the report and the API. */
static void stmt_head(const char *stmt, char *out, size_t n)
{
    size_t l = 0;
    bool quoted = false; /* in a "quoted identifier" */
    for (; stmt[l] && stmt[l] != '\n'; l++) {
        if (stmt[l] == '"')
            quoted = !quoted;
        else if (!quoted && (stmt[l] == '\'' || stmt[l] == '$'))
            break;
    }
    if (stmt[l] == '\'' || stmt[l] == '$') /* without the E and the space before it */
        while (l && (stmt[l - 1] == ' ' || stmt[l - 1] == 'E' || stmt[l - 1] == 'e'))
            l--;
    if (l > 100)
        l = 100;
    if (n > l + 4)
        snprintf(out, n, "%.*s%s", (int)l, stmt, stmt[l] ? " ..." : "");
    else
        snprintf(out, n, "%.*s", (int)(n - 1), stmt);
}

/* Runs a session setting of pg_restore's script (stmt_session): 0; 1 when it sets a parameter
 * the server does not know (pg_restore 17 and later print SET transaction_timeout = 0 for any
 * server, and a PostgreSQL 16 refuses it: nothing of the database depends on it); -1 with e. */
static int session_exec(PGconn *c, const char *stmt, struct err *e)
{
    /* one command only (the extended protocol): a statement from the dump that carries a
     * second one is refused, never run */
    PGresult *res = PQexecParams(c, stmt, 0, NULL, NULL, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        /* SET name = value / SET name TO value, not SET SESSION AUTHORIZATION (whose missing
         * role is the same SQLSTATE) */
        const char *v = stmt + 3 + strspn(stmt + 3, " ");
        v += strspn(v, "abcdefghijklmnopqrstuvwxyz_");
        v += strspn(v, " ");
        if (state && strcmp(state, "42704") == 0 && strncasecmp(stmt, "SET ", 4) == 0 &&
            (*v == '=' || strncasecmp(v, "TO ", 3) == 0))
            rc = 1;
        else
            rc = err_set(e, ERR_DATABASE, NULL, "query failed on database %s: %s", PQdb(c),
                         msg ? msg : PQerrorMessage(c));
    }
    PQclear(res);
    return rc;
}

/* current_database() of session c, quoted (PQfreemem), in the session's client encoding;
 * NULL with e. */
static char *session_db_name(PGconn *c, struct err *e)
{
    PGresult *res = pgsrc_query(c, "SELECT current_database()", 0, NULL, e);
    if (!res)
        return NULL;
    const char *name = PQgetvalue(res, 0, 0);
    char *q = PQescapeIdentifier(c, name, strlen(name));
    if (!q)
        err_set(e, ERR_DATABASE, NULL, "cannot quote the name of database %s", name);
    PQclear(res);
    return q;
}

/* The statements of the dump's database-level entries (pg_restore --create --use-list of
 * them, as text) in *sql, NULL when the dump has none. Reads the dump (its beginning) twice and
 * touches no database: it runs beside the restore itself (struct settings_read). */
static int read_db_settings(struct restore_run *rr, char **sql_out, struct err *e)
{
    *sql_out = NULL;
    char *toc = NULL, *sql = NULL;
    struct temp_item listfile = TEMP_ITEM_INIT;
    int rc = -1;
    /* without --create, --list leaves the database's own entries out */
    const char *const lopts[] = {"--list", "--create", NULL};
    if (pg_restore_text(rr, NULL, lopts, &toc, e) != 0)
        goto out;
    int wrc = toc_pick(rr, toc, toc_db_kinds, 0, &listfile, e);
    if (wrc != 0) {
        rc = wrc > 0 ? 0 : -1; /* 1: none */
        goto out;
    }
    char *use = xasprintf("--use-list=%s", listfile.path);
    /* not --no-privileges when the tables' privileges are left out (missing roles): the
     * database's defaults let every role connect, so a REVOKE ... FROM PUBLIC left out opens
     * it; each GRANT runs alone, one to a missing role is a warning */
    const char *opts[] = {"--create", "--file=-", use, rr->no_owner ? "--no-owner" : NULL, NULL};
    int prc = pg_restore_text(rr, NULL, opts, &sql, e);
    free(use);
    if (prc != 0)
        goto out;
    *sql_out = sql;
    sql = NULL;
    rc = 0;
out:
    if (rc != 0)
        err_wrap(e, "cannot read the settings of the backup's database");
    free(sql);
    free(toc);
    temp_item_remove(&listfile);
    return rc;
}

/* Reads the settings (read_db_settings) in a thread of its own while pg_restore restores:
 * started by pg_restore_run just before pg_restore (after its sweep of temp_dir: the thread makes a
 * temp item there), joined by settings_join. */
struct settings_read {
    struct restore_run *rr;
    pthread_t th;
    bool started, done;
    int rc;
    char *sql;
    struct err e;
};

static void *settings_read_main(void *arg)
{
    struct settings_read *sr = arg;
    sr->rc = read_db_settings(sr->rr, &sr->sql, &sr->e);
    return NULL;
}

static void settings_start(struct settings_read *sr)
{
    if (sr && !sr->started && !sr->done &&
        pthread_create(&sr->th, NULL, settings_read_main, sr) == 0)
        sr->started = true;
}

/* Waits for the thread, or reads here when it did not start. */
static int settings_join(struct settings_read *sr)
{
    if (sr->started) {
        pthread_join(sr->th, NULL);
        sr->started = false;
        sr->done = true;
    } else if (!sr->done) {
        sr->rc = read_db_settings(sr->rr, &sr->sql, &sr->e);
        sr->done = true;
    }
    return sr->rc;
}

/* Applies the dump's database-level entries (sql, as read_db_settings read them; NULL: none)
 * to database dbname (made by this restore, closed to PUBLIC until now: db_public), in one
 * transaction that first gives PUBLIC back a new database's CONNECT and TEMPORARY: 0 with
 * *applied and *comment (a COMMENT ON DATABASE was applied; it replaced the restore's mark);
 * each statement that could not be applied is undone to its savepoint and goes to warnings (and
 * the log); -1 with e when the database cannot be reached or the transaction fails (nothing is
 * applied then, and the database stays closed to PUBLIC). */
static int apply_db_settings(struct restore_run *rr, const char *dbname, const char *sql,
                             json_t *warnings, size_t *applied, bool *comment, struct err *e)
{
    *applied = 0;
    *comment = false;
    const char *from = summary_str(rr->k, "database");
    char **stmts = NULL, *to = NULL;
    PGconn *c = NULL;
    int rc = -1;
    /* run in the new database itself, as pg_restore --create runs them after its \connect:
     * the dump's text is in the dump's encoding (its SET client_encoding), which is the new
     * database's, so it goes in unconverted. On a maintenance database of another encoding it
     * was converted (a LATIN1 dump's comment and settings came back garbled), and so was the
     * new database's name: it named another database, or none */
    if (!(c = pgsrc_connect(rr->target, NULL, e)) || pgsrc_exec(c, "BEGIN", e) != 0)
        goto out;
    /* PUBLIC's default first, so that the dump's REVOKE ... FROM PUBLIC (pg_dump writes the
     * database's ACL as a change from the default) ends where the backup's database was; named
     * as the session writes it now, before the dump's client_encoding */
    char *self = session_db_name(c, e);
    if (!self)
        goto out;
    char *grant = xasprintf("GRANT CONNECT, TEMPORARY ON DATABASE %s TO PUBLIC", self);
    int grc = pgsrc_exec(c, grant, e);
    free(grant);
    PQfreemem(self);
    if (grc != 0)
        goto out;
    if (sql)
        sql_statements(sql, &stmts);
    for (size_t i = 0; stmts && stmts[i]; i++) {
        /* --create prints the database's CREATE DATABASE whatever the list says: it exists */
        size_t w1 = strcspn(stmts[i], " \t\n");
        if (stmts[i][w1] && word_is(stmts[i], w1, "CREATE") &&
            word_is(stmts[i] + w1 + 1, strcspn(stmts[i] + w1 + 1, " \t\n"), "DATABASE"))
            continue;
        bool session = stmt_session(stmts[i]);
        if (!session && !to) {
            /* the name as this session writes it, once the dump's client_encoding is set
             * (the session statements come first) */
            if (!(to = session_db_name(c, e)))
                goto out;
        }
        char *q = session ? xstrdup(stmts[i]) : stmt_for_db(stmts[i], from, to);
        char head[120], w[600];
        stmt_head(stmts[i], head, sizeof(head));
        if (!q) {
            snprintf(w, sizeof(w),
                     "database %s: a setting of the backup's database was not applied (it "
                     "names no database, or another one than %s): %s",
                     dbname, from, head);
        } else {
            struct err xe = ERR_INIT;
            /* a failed statement aborts the transaction: undone to its savepoint, alone */
            if (pgsrc_exec(c, "SAVEPOINT caris_setting", e) != 0) {
                free(q);
                goto out;
            }
            int xrc = session ? session_exec(c, q, &xe) : pgsrc_exec(c, q, &xe);
            free(q);
            if (xrc != 0 && pgsrc_exec(c, "ROLLBACK TO SAVEPOINT caris_setting", e) != 0)
                goto out;
            if (pgsrc_exec(c, "RELEASE SAVEPOINT caris_setting", e) != 0)
                goto out;
            if (xrc >= 0) {
                *w = '\0';
                if (!session) {
                    (*applied)++;
                    *comment |= strncasecmp(stmts[i], "COMMENT ON DATABASE ", 20) == 0;
                }
            } else {
                snprintf(w, sizeof(w),
                         "database %s: a setting of the backup's database was not "
                         "applied: %s: %s",
                         dbname, head, xe.msg);
            }
        }
        if (*w) {
            json_array_append_new(warnings, jsonx_text(w));
            caris_op_log(rr->op, LOG_WARN, "%s", w);
        }
    }
    if (pgsrc_exec(c, "COMMIT", e) != 0)
        goto out;
    rc = 0;
out:
    PQfreemem(to);
    if (rc != 0) {
        *applied = 0;
        *comment = false;
        err_wrap(e, "cannot apply the settings of the backup's database");
    }
    if (c)
        PQfinish(c);
    for (size_t i = 0; stmts && stmts[i]; i++)
        free(stmts[i]);
    free(stmts);
    return rc;
}

/* ---- partitioned tables that a --schema selection splits ------------------------------------ */

/* pg_dump (15 and later) writes each partition as a table of its own and attaches it to its
 * parent in an entry of its own (TABLE ATTACH, in the partition's schema). pg_restore
 * --schema S restores the partitioned tables of S with only those of their partitions that lie
 * in the selected schemas: the rows of the others are missing, and the row counts --verify
 * compares (the backup's tables are the partitions) cannot see it. Read from the dump here, so
 * that such a selection is refused whatever the target, --create included. (Dumps of older
 * pg_dumps create a partition with CREATE TABLE ... PARTITION OF: not seen here.) */

static const char *const toc_attach_kinds[] = {"TABLE ATTACH ", NULL};

/* Parses a possibly quoted identifier at *p (as pg_dump writes it) into out; advances *p. */
static bool parse_ident(const char **p, struct buf *out)
{
    const char *s = *p;
    out->len = 0;
    if (*s == '"') {
        for (s++; *s; s++) {
            if (*s == '"') {
                if (s[1] != '"')
                    break;
                s++;
            }
            buf_append(out, s, 1);
        }
        if (*s != '"')
            return false;
        s++;
    } else {
        while ((unsigned char)*s >= 0x80 || *s == '_' || *s == '$' || (*s >= 'a' && *s <= 'z') ||
               (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9'))
            buf_append(out, s++, 1);
    }
    buf_append_u8(out, 0);
    *p = s;
    return out->len > 1;
}

/* "schema.name" at *p into sch and name. */
static bool parse_qname(const char **p, struct buf *sch, struct buf *name)
{
    return parse_ident(p, sch) && *(*p)++ == '.' && parse_ident(p, name);
}

/* 1 (e set) when the selection s takes a partitioned table but not one of its partitions, as
 * the dump's ATTACH statements tell; 0 when it does not; -1 with e. */
static int dump_splits_partitions(struct restore_run *rr, const struct selection *s, struct err *e)
{
    char *toc = NULL, *sql = NULL, **stmts = NULL;
    struct temp_item listfile = TEMP_ITEM_INIT;
    struct buf ps = {0}, pn = {0}, cs = {0}, cn = {0};
    int rc = -1;
    if (toc_list(rr, NULL, &toc, e) != 0)
        goto out;
    int wrc = toc_pick(rr, toc, toc_attach_kinds, 0, &listfile, e);
    if (wrc != 0) {
        rc = wrc > 0 ? 0 : -1; /* 1: none */
        goto out;
    }
    char *use = xasprintf("--use-list=%s", listfile.path);
    const char *const opts[] = {"--file=-", use, NULL};
    int prc = pg_restore_text(rr, NULL, opts, &sql, e);
    free(use);
    if (prc != 0)
        goto out;
    sql_statements(sql, &stmts);
    rc = 0;
    for (size_t i = 0; stmts[i] && rc == 0; i++) {
        const char *p = stmts[i];
        if (strncmp(p, "ALTER TABLE ONLY ", 17) == 0)
            p += 17;
        else if (strncmp(p, "ALTER TABLE ", 12) == 0)
            p += 12;
        else
            continue;
        if (!parse_qname(&p, &ps, &pn) || strncmp(p, " ATTACH PARTITION ", 18) != 0)
            continue;
        p += 18;
        if (!parse_qname(&p, &cs, &cn))
            continue;
        const char *psv = (const char *)ps.data, *pnv = (const char *)pn.data;
        const char *csv = (const char *)cs.data, *cnv = (const char *)cn.data;
        if (sel_takes(s, psv, pnv) && !sel_takes(s, csv, cnv)) {
            char *hint = xasprintf("add --schema %s (every schema the partitioned table spans), "
                                   "or restore the whole backup; nothing was restored",
                                   csv);
            err_set(e, ERR_USAGE, hint,
                    "the selection takes partitioned table %s.%s but not its partition %s.%s: "
                    "the rows in that partition would be missing",
                    psv, pnv, csv, cnv);
            free(hint);
            rc = 1;
        }
    }
out:
    if (rc < 0)
        err_wrap(e, "cannot read the partitions of the backup's tables");
    for (size_t i = 0; stmts && stmts[i]; i++)
        free(stmts[i]);
    free(stmts);
    free(sql);
    free(toc);
    buf_free(&ps);
    buf_free(&pn);
    buf_free(&cs);
    buf_free(&cn);
    temp_item_remove(&listfile);
    return rc;
}

/* ---- privileges, when roles are missing on the target ---------------------------------------- */

/* A restore into a server that lacks some of the backup's roles runs pg_restore with
 * --no-privileges (decide_ownership): one GRANT to a missing role would fail the whole restore.
 * That left out every privilege of the backup, its REVOKEs from PUBLIC too: a SECURITY DEFINER
 * function whose EXECUTE the backup had revoked from PUBLIC came back executable by every role,
 * running as the restoring user, and so did USAGE on a schema the backup had closed. So once
 * the data is in, the dump's ACL and DEFAULT ACL entries (the database's own are settings,
 * above) are printed by pg_restore and applied in one transaction, one statement at a time: a
 * statement that fails (its role is missing) is rolled back to its savepoint and reported; the
 * others, every REVOKE from PUBLIC among them, are applied. */

static const char *const toc_acl_kinds[] = {"ACL - DATABASE ", "ACL ", "DEFAULT ACL ", NULL};

/* The statements of the dump's ACL entries for what this restore selected, as pg_restore
 * prints them with --no-owner, in *sql (NULL when there are none). */
static int read_acls(struct restore_run *rr, char **sql_out, struct err *e)
{
    *sql_out = NULL;
    char *toc = NULL;
    struct temp_item listfile = TEMP_ITEM_INIT;
    int rc = -1;
    const char *const lopts[] = {"--list", NULL};
    if (pg_restore_text_sel(rr, NULL, lopts, true, &toc, e) != 0)
        goto out;
    int wrc = toc_pick(rr, toc, toc_acl_kinds, 1, &listfile, e); /* not the database's ACL */
    if (wrc != 0) {
        rc = wrc > 0 ? 0 : -1; /* 1: none */
        goto out;
    }
    char *use = xasprintf("--use-list=%s", listfile.path);
    const char *const opts[] = {"--file=-", use, "--no-owner", NULL};
    rc = pg_restore_text_sel(rr, NULL, opts, true, sql_out, e);
    free(use);
out:
    if (rc != 0)
        err_wrap(e, "cannot read the privileges of the backup");
    free(toc);
    temp_item_remove(&listfile);
    return rc;
}

/* Whether stmt grants or revokes (GRANT, REVOKE, ALTER DEFAULT PRIVILEGES). */
static bool stmt_privilege(const char *stmt)
{
    size_t w0 = strspn(stmt, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
    return word_is(stmt, w0, "GRANT") || word_is(stmt, w0, "REVOKE") ||
           strncasecmp(stmt, "ALTER DEFAULT PRIVILEGES ", 25) == 0;
}

/* The statements that failed and were logged one by one; the rest are counted. */
#define ACL_FAILURES_LOGGED 10

/* Reads and applies the backup's privileges to rr's target database dbname (see above): 0 with
 * a warning in warnings when some statements could not be applied; -1 with e when none could be
 * (the dump's privileges cannot be read, the database cannot be reached, the transaction fails),
 * and then nothing of them is applied. */
static int restore_acls(struct restore_run *rr, const char *dbname, json_t *warnings, struct err *e)
{
    char *sql = NULL, **stmts = NULL, first[800] = "";
    PGconn *c = NULL;
    size_t applied = 0, failed = 0;
    int rc = -1;
    if (read_acls(rr, &sql, e) != 0)
        goto out;
    if (!sql) {
        rc = 0;
        goto out;
    }
    if (!(c = pgsrc_connect(rr->target, NULL, e)) || pgsrc_exec(c, "BEGIN", e) != 0)
        goto out;
    sql_statements(sql, &stmts);
    for (size_t i = 0; stmts[i]; i++) {
        char head[120];
        stmt_head(stmts[i], head, sizeof(head));
        bool session = stmt_session(stmts[i]);
        struct err xe = ERR_INIT;
        if (!session && !stmt_privilege(stmts[i])) {
            err_set(&xe, ERR_DATABASE, NULL, "not a privilege statement: not run");
        } else {
            /* a failed statement aborts the transaction: undone to its savepoint, alone */
            if (pgsrc_exec(c, "SAVEPOINT caris_acl", e) != 0)
                goto out;
            int xrc = session ? session_exec(c, stmts[i], e) : pgsrc_exec(c, stmts[i], &xe);
            if (session && xrc < 0)
                goto out;
            if (xrc == 0 && !session)
                applied++;
            if (xrc != 0 && pgsrc_exec(c, "ROLLBACK TO SAVEPOINT caris_acl", e) != 0)
                goto out;
            if (pgsrc_exec(c, "RELEASE SAVEPOINT caris_acl", e) != 0)
                goto out;
        }
        if (!err_is_set(&xe))
            continue;
        if (failed++ < ACL_FAILURES_LOGGED)
            caris_op_log(rr->op, LOG_WARN,
                         "database %s: a privilege of the backup was not "
                         "applied: %s: %s",
                         dbname, head, xe.msg);
        if (!*first)
            snprintf(first, sizeof(first), "%s: %s", head, xe.msg);
    }
    if (pgsrc_exec(c, "COMMIT", e) != 0)
        goto out;
    if (failed) {
        char *w = xasprintf("database %s: %zu of the backup's %zu privilege statements were "
                            "not applied (the others were); the first: %s",
                            dbname, failed, applied + failed, first);
        restore_warn(warnings, rr->op, w);
    }
    caris_op_log(rr->op, LOG_INFO, "database %s: %zu privilege statement%s of the backup applied",
                 dbname, applied, applied == 1 ? "" : "s");
    rc = 0;
out:
    if (rc != 0)
        err_wrap(e,
                 "the backup's privileges (its REVOKEs from PUBLIC among them) could not be "
                 "applied to database %s",
                 dbname);
    if (c)
        PQfinish(c); /* an open transaction is rolled back */
    for (size_t i = 0; stmts && stmts[i]; i++)
        free(stmts[i]);
    free(stmts);
    free(sql);
    return rc;
}

/* ---- scratch databases (test restores) ------------------------------------------------------ */

struct scratch {
    enum db_scratch kind;
    struct pgsrc_target server; /* where the scratch database lives (maintenance login) */
    struct pgsrc_local local;
    char name[64];
    struct pgsrc_target target; /* the scratch database */
    int server_num;
    bool created, local_started;
    /* a maintenance session holding the scratch database's advisory lock (SCRATCH_LOCK) from
     * before it is made until after it is dropped: a sweep drops only unheld ones */
    PGconn *holder;
};

/* The advisory lock of scratch database caris_test_<8 hex>: pg_advisory_lock(SCRATCH_LOCK,
 * the hex as a 32-bit number). Advisory locks belong to a database, but pg_locks shows those
 * of every database: the sweep looks there. */
#define SCRATCH_LOCK 1128354377 /* "CARI" */
#define SCRATCH_PREFIX "caris_test_"

/* The second key of a scratch database's lock, or -1 when name is not a scratch database's. */
static int64_t scratch_key(const char *name)
{
    size_t pn = strlen(SCRATCH_PREFIX);
    if (strncmp(name, SCRATCH_PREFIX, pn) != 0 || strlen(name) != pn + 8 ||
        strspn(name + pn, "0123456789abcdef") != 8)
        return -1;
    return (int64_t)strtoul(name + pn, NULL, 16);
}

/* Drops the scratch databases on c's server that no live session holds (their test restore
 * was killed): a copy of the patients' records each, left on the production server. Best
 * effort; logs what it dropped or could not. */
static void scratch_sweep(PGconn *c, const struct pgsrc_target *server, const struct caris_op *op)
{
    struct err e = ERR_INIT;
    PGresult *dbs = pgsrc_query(c,
                                "SELECT datname FROM pg_database WHERE datname LIKE "
                                "'caris\\_test\\_%' ORDER BY 1",
                                0, NULL, &e);
    char held_sql[200];
    snprintf(held_sql, sizeof(held_sql),
             "SELECT objid::int8 FROM pg_locks WHERE locktype = 'advisory' AND classid = %u AND "
             "objsubid = 2 AND granted",
             (unsigned)SCRATCH_LOCK);
    PGresult *held = dbs ? pgsrc_query(c, held_sql, 0, NULL, &e) : NULL;
    char names[400] = "";
    int dropped = 0;
    for (int i = 0; held && i < PQntuples(dbs); i++) {
        const char *name = PQgetvalue(dbs, i, 0);
        int64_t key = scratch_key(name);
        bool live = key < 0;
        for (int j = 0; !live && j < PQntuples(held); j++)
            live = strtoll(PQgetvalue(held, j, 0), NULL, 10) == key;
        if (live)
            continue;
        /* held here while it goes: a test restore that drew the same name waits, then finds
         * it gone */
        char lock[120];
        snprintf(lock, sizeof(lock), "SELECT pg_try_advisory_lock(%d, %d)", SCRATCH_LOCK,
                 (int)(uint32_t)key);
        PGresult *got = pgsrc_query(c, lock, 0, NULL, &e);
        bool mine = got && PQntuples(got) == 1 && strcmp(PQgetvalue(got, 0, 0), "t") == 0;
        PQclear(got);
        if (!mine)
            continue;
        struct err de = ERR_INIT;
        if (drop_database(server, name, &de) == 0) {
            dropped++;
            str_list_add(names, sizeof(names), name);
        } else {
            caris_op_log(op, LOG_WARN,
                         "cannot drop the scratch database %s that a killed test restore left: %s "
                         "(drop it by hand)",
                         name, de.msg);
        }
        snprintf(lock, sizeof(lock), "SELECT pg_advisory_unlock(%d, %d)", SCRATCH_LOCK,
                 (int)(uint32_t)key);
        PQclear(pgsrc_query(c, lock, 0, NULL, &e));
    }
    if (dropped)
        caris_op_log(op, LOG_INFO,
                     "dropped %d scratch database(s) that a killed test restore left: %s", dropped,
                     names);
    PQclear(dbs);
    PQclear(held);
}

static const char *scratch_kind_name(enum db_scratch k)
{
    return k == DB_SCRATCH_LOCAL ? "local" : "database";
}

static void scratch_name(char *out, size_t n)
{
    uint8_t rnd[4];
    char hex[9];
    cx_random(rnd, sizeof(rnd));
    cx_hex(rnd, sizeof(rnd), hex);
    snprintf(out, n, "caris_test_%s", hex);
}

/* server: the server of DB_SCRATCH_DATABASE (ignored for local). */
static int scratch_create(struct scratch *s, enum db_scratch kind,
                          const struct pgsrc_target *server, const struct dbk *k,
                          const char *temp_dir, const struct caris_op *op, struct err *e)
{
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    scratch_name(s->name, sizeof(s->name));
    if (kind == DB_SCRATCH_LOCAL) {
        if (pgsrc_local_start(temp_dir, k->server_num, summary_str(k, "encoding"), &s->local, e) !=
            0)
            return -1;
        s->local_started = true;
        pgsrc_local_target(&s->local, "postgres", &s->server);
    } else {
        pgsrc_target_copy(server, &s->server);
    }
    PGconn *c = connect_maintenance(&s->server, e);
    if (!c)
        return -1;
    s->server_num = PQserverVersion(c);
    int rc = 0;
    if (kind != DB_SCRATCH_LOCAL) {
        if (s->server_num >= 140000) { /* the holder stays idle: a timeout would drop the lock */
            struct err ie = ERR_INIT;
            pgsrc_exec(c, "SET idle_session_timeout = 0", &ie);
        }
        char lock[120];
        snprintf(lock, sizeof(lock), "SELECT pg_advisory_lock(%d, %d)", SCRATCH_LOCK,
                 (int)(uint32_t)scratch_key(s->name));
        PGresult *res = pgsrc_query(c, lock, 0, NULL, e);
        rc = res ? 0 : -1;
        PQclear(res);
        if (rc == 0)
            scratch_sweep(c, &s->server, op);
    }
    if (rc == 0 && (rc = create_database(c, s->name, k, e)) == 0) {
        s->created = true;
        /* a copy of the records, for this restore only: no other role may connect (no entry
         * of a dump restored into an existing database changes that) */
        rc = db_close_to_public(c, s->name, e);
    }
    if (rc != 0 || kind == DB_SCRATCH_LOCAL)
        PQfinish(c);
    else
        s->holder = c; /* the lock stays held until the database is dropped */
    if (rc != 0)
        return -1;
    pgsrc_target_copy(&s->server, &s->target);
    pgsrc_target_set(&s->target, "dbname", s->name);
    return 0;
}

static void scratch_drop(struct scratch *s, const struct caris_op *op)
{
    if (s->created && !s->local_started) {
        struct err e = ERR_INIT;
        if (drop_database(&s->server, s->name, &e) != 0)
            caris_op_log(op, LOG_WARN, "cannot drop the scratch database %s: %s (drop it by hand)",
                         s->name, e.msg);
    }
    if (s->holder) /* its lock goes with the session */
        PQfinish(s->holder);
    s->holder = NULL;
    if (s->local_started)
        pgsrc_local_stop(&s->local);
    pgsrc_target_free(&s->server);
    pgsrc_target_free(&s->target);
    s->created = s->local_started = false;
}

struct test_result {
    json_t *tables; /* with "actual" */
    int64_t restore_ms, verify_ms;
    bool ok;
    char scratch_name[64];
};

/* Whether a test restore failed for want of disk space on the scratch side: pg_restore's
 * error says so, or (a local cluster's server stopped: PANIC on its WAL, and pg_restore saw
 * only the connection closed) the cluster's log does. */
static bool scratch_disk_full(const struct scratch *s, const struct err *e)
{
    static const char enospc[] = "No space left on device";
    if (strstr(e->msg, enospc) || strstr(e->msg, "could not extend file"))
        return true;
    if (!s->local_started)
        return false;
    char *log = xasprintf("%s/postgres.log", s->local.dir);
    struct buf b = {0};
    struct err ie = ERR_INIT;
    bool full = fs_read_all(log, &b, &ie) == 0 && b.len &&
                memmem(b.data, b.len, enospc, sizeof(enospc) - 1) != NULL;
    buf_free(&b);
    free(log);
    return full;
}

/* Restores into a new scratch database and compares the row counts; always drops it. */
static int test_restore_core(struct repo *r, const struct dbk *k, enum db_scratch kind,
                             const struct pgsrc_target *server, const struct selection *sel,
                             const char *temp_dir, int threads, caris_progress_fn progress,
                             void *ctx, const struct caris_op *op, struct test_result *res,
                             struct err *e)
{
    memset(res, 0, sizeof(*res));
    res->tables = json_deep_copy(sel->expected);
    struct scratch s;
    if (scratch_create(&s, kind, server, k, temp_dir, op, e) != 0) {
        scratch_drop(&s, op);
        return -1;
    }
    snprintf(res->scratch_name, sizeof(res->scratch_name), "%s", s.name);
    int rc = -1;
    struct pgsrc_tool tool;
    int need = s.server_num > k->dump_num ? s.server_num : k->dump_num;
    PGconn *c = NULL;
    if (pgsrc_tool_find("pg_restore", need, true, &tool, e) != 0 ||
        !(c = pgsrc_connect(&s.target, NULL, e)))
        goto out;
    json_t *ignored = json_array();
    bool no_owner, no_priv;
    decide_ownership(c, json_object_get(k->summary, "roles"), &no_owner, &no_priv, ignored);
    json_decref(ignored);
    PQfinish(c);
    struct restore_run rr = {.r = r,
                             .k = k,
                             .target = &s.target,
                             .tool = &tool,
                             .no_owner = no_owner,
                             .no_privileges = no_priv,
                             .jobs = 1,
                             .sel = sel,
                             .temp_dir = temp_dir,
                             .threads = threads,
                             .progress = progress,
                             .ctx = ctx,
                             .op = op};
    int64_t t0 = time_mono_ns();
    int prc = pg_restore_run(&rr, e);
    int64_t t1 = time_mono_ns();
    res->restore_ms = (t1 - t0) / 1000000;
    if (prc != 0) {
        err_wrap(e, "test restore into %s failed", s.name);
        /* the scratch's disk full reads like a backup that does not restore: said what it is */
        if (scratch_disk_full(&s, e)) {
            if (kind == DB_SCRATCH_LOCAL)
                snprintf(e->hint, sizeof(e->hint),
                         "the file system of the scratch cluster (made under %s) is full: free "
                         "space there and test again; this says nothing about the backup",
                         temp_dir ? temp_dir : "BACKUP_DIR/temp");
            else
                snprintf(e->hint, sizeof(e->hint),
                         "the scratch database's server ran out of disk space: free space there "
                         "(or test with --scratch local) and test again; this says nothing about "
                         "the backup");
        }
        goto out;
    }
    int bad = compare_counts(&s.target, res->tables, e);
    res->verify_ms = (time_mono_ns() - t1) / 1000000;
    if (bad < 0)
        goto out;
    if (bad > 0) {
        char what[200];
        snprintf(what, sizeof(what), "a test restore of %s", k->id);
        mismatch_error(res->tables, bad, what, e);
        goto out;
    }
    res->ok = true;
    rc = 0;
out:
    scratch_drop(&s, op);
    return rc;
}

static int record_test_restore(struct repo *r, const char *id, enum db_scratch kind,
                               const struct test_result *res, const struct err *failure,
                               const struct caris_op *op)
{
    /* cancelled (Ctrl-C, SIGTERM, a daemon stopping): that says nothing of the backup, and
     * recorded as a failure it replaced the last pass (list: TEST RESTORE FAILED); damage it
     * found before the cancel is recorded */
    if (!res->ok && caris_op_cancelled(op) && !(failure && failure->code == ERR_DAMAGE)) {
        caris_bad_blobs_record(r, "test-restore", op); /* a blob that failed to open before */
        return -1;
    }
    char now[40];
    time_format_iso(time_now_ns(), now, sizeof(now));
    json_t *rec = json_pack("{s:s, s:s, s:b, s:s, s:s, s:I, s:I}", "backupId", id, "time", now,
                            "ok", res->ok, "scratch", scratch_kind_name(kind), "scratch_name",
                            res->scratch_name, "restore_ms", (json_int_t)res->restore_ms,
                            "verify_ms", (json_int_t)res->verify_ms);
    if (failure && err_is_set(failure)) {
        json_object_set_new(rec, "error", jsonx_text(failure->msg));
        /* "damage": the backup does not restore as it was taken (caris_backup_known_damaged);
         * any other: the scratch side failed, which says nothing about the backup */
        json_object_set_new(rec, "code", json_string(err_code_name(failure->code)));
    }
    struct err e = ERR_INIT;
    int rc = repo_record_add_sequenced(r, "test-restore", rec, &e);
    if (rc != 0)
        caris_op_log(op, LOG_WARN, "cannot record the test restore in the repository: %s", e.msg);
    json_decref(rec);
    if (!res->ok)
        caris_bad_blobs_record(r, "test-restore", op);
    return rc;
}

/* ---- restore ----------------------------------------------------------------------------------
 */

static void plan_add(json_t *plan, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void plan_add(json_t *plan, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (s)
        json_array_append_new(plan, json_string(s));
    free(s);
}

/* A refusal found while planning (refused: 1 with e, 0 none, -1 failed with e): true when the
 * restore must stop (it failed, or it is refused and not a dry run: the plan says so); a dry
 * run notes the refusal in the plan and goes on to prove that the backup restores. */
static bool plan_refusal(int refused, bool dry_run, json_t *plan, struct err *e)
{
    if (refused < 0)
        return true;
    if (refused && !dry_run) {
        plan_add(plan, "refused: %s", e->msg);
        return true;
    }
    if (refused) {
        plan_add(plan, "NOTE: the restore itself would be refused: %s", e->msg);
        err_clear(e);
    }
    return false;
}

/* The selection's tables, "schema.name, ...", cut to what fits n (str_list_add: a name of
 * more than 80 bytes took the length past the buffer, and the next table was written past
 * its end, on the stack). */
static void join_selection(const struct selection *sel, char *out, size_t n)
{
    out[0] = '\0';
    size_t i;
    json_t *t;
    json_array_foreach(sel->expected, i, t)
    {
        char *item = xasprintf("%s.%s", json_string_value(json_object_get(t, "schema")) ?: "?",
                               json_string_value(json_object_get(t, "name")) ?: "?");
        str_list_add(out, n, item);
        free(item);
    }
}

static int untrusted_target_check(struct pgsrc_target *t, struct err *e)
{
    if (!pgsrc_target_get(t, "service") && !pgsrc_target_get(t, "passfile"))
        return 0;
    pgsrc_target_free(t);
    return err_set(e, ERR_USAGE,
                   "name the server with host, port, dbname and user, and give the password in "
                   "the URL",
                   "the target URL may not name a service or a password file: they would give "
                   "it a password of this server's");
}

int caris_restore_target_check(const char *target_url, struct err *e)
{
    struct pgsrc_target t;
    if (pgsrc_target_parse(target_url, NULL, "the target URL", &t, e) != 0 ||
        untrusted_target_check(&t, e) != 0)
        return -1;
    pgsrc_target_free(&t);
    return 0;
}

/* The target's login: its own password, else POSTGRES_URL's when it names the same server and
 * user, else PGPASSWORD; for an untrusted target, no password of ours otherwise. */
static int resolve_target(const struct db_restore_opts *o, struct pgsrc_target *t, struct err *e)
{
    if (!o->target_url)
        return pgsrc_target_parse(o->url, o->password, "POSTGRES_URL", t, e);
    if (pgsrc_target_parse(o->target_url, NULL, "the target URL", t, e) != 0)
        return -1;
    /* a service (pg_service.conf) or a password file gives libpq a password of the daemon's
     * for whatever server the request names */
    if (o->target_untrusted && untrusted_target_check(t, e) != 0)
        return -1;
    if (t->password)
        return 0;
    struct pgsrc_target src;
    struct err ie = ERR_INIT;
    bool same = false;
    if (o->url && pgsrc_target_parse(o->url, NULL, "POSTGRES_URL", &src, &ie) == 0) {
        same = pgsrc_target_same_login(&src, t);
        if (src.password && same)
            t->password = xstrdup(src.password);
        pgsrc_target_free(&src);
    }
    /* PGPASSWORD: the operator's for any target they name; for an API request's target only
     * when that is POSTGRES_URL's server and user (a password is never sent to a host that
     * whoever sent the request chose) */
    if (!t->password && o->password && *o->password && (!o->target_untrusted || same))
        t->password = xstrdup(o->password);
    /* nor the password of the service the environment names (PGSERVICE: libpq fills in from it
     * what the URL leaves out, the password with it, whatever host the URL names). A .pgpass
     * line binds its password to a host the operator wrote. */
    if (o->target_untrusted && !t->password && !same && getenv("PGSERVICE") &&
        *getenv("PGSERVICE")) {
        pgsrc_target_free(t);
        return err_set(e, ERR_USAGE,
                       "give the target's password in the URL, or restore to POSTGRES_URL's "
                       "server and user",
                       "the target URL names another server or user without a password, and "
                       "this server's PGSERVICE would give it one");
    }
    return 0;
}

int caris_restore_database(struct repo *r, const struct db_restore_opts *o,
                           struct caris_db_restore_result *res, struct err *e)
{
    int64_t start = time_mono_ns();
    memset(res, 0, sizeof(*res));
    struct pgsrc_target t;
    struct dbk k = {0};
    struct selection sel = {0};
    json_t *plan = json_array(), *tables = NULL, *warnings = json_array();
    PGconn *c = NULL;
    struct pgsrc_index_tree *pidx = NULL;
    size_t npidx = 0;
    bool locked = false, created = false, verified = false;
    /* restoring into an existing database: its comment before (restored when done), the mark of
     * an earlier restore that did not finish ("" when none), and whether this one marked it */
    char *prior_comment = NULL, prior_mark[300] = "";
    bool marked = false, comment_read = false;
    int rc = -1;
    char dbname[256], host[256], port[64], dump_size[32];
    struct settings_read sr = {.e = ERR_INIT};
    if (o->jobs < 0 || o->jobs > 256) {
        json_decref(plan);
        json_decref(warnings);
        return err_set(e, ERR_USAGE, NULL, "--jobs must be between 1 and 256");
    }
    if (resolve_target(o, &t, e) != 0) {
        json_decref(plan);
        json_decref(warnings);
        return -1;
    }
    pgsrc_target_dbname(&t, dbname, sizeof(dbname));
    pgsrc_target_host(&t, host, sizeof(host));
    pgsrc_target_port(&t, port, sizeof(port));
    /* PostgreSQL cuts a longer name to 63 bytes (NAMEDATALEN - 1) with a notice: a --create
     * made, and the report named, a database that was not the one given */
    if (strlen(dbname) > 63) {
        char name[256], shown[300];
        pgsrc_target_dbname_shown(&t, name, sizeof(name));
        err_set(e, ERR_USAGE, "give a database name of at most 63 bytes (PostgreSQL's limit)",
                "the target database's name is %zu bytes long, and PostgreSQL would cut it to "
                "63: %s",
                strlen(dbname), str_escape(name, strlen(name), shown, sizeof(shown)));
        goto out;
    }
    if (repo_lock(r, false, "restore database", e) != 0)
        goto out;
    locked = true;
    if (backup_load(r, o->backup_id, &k, e) != 0 ||
        select_objects(&k, o->tables, o->ntables, o->schemas, o->nschemas, &sel, e) != 0)
        goto out;
    res->ran = true;
    res->backup_id = xstrdup(k.id);
    res->target = pgsrc_target_json(&t);
    res->dry_run = o->dry_run;
    res->plan = json_incref(plan);
    res->warnings = json_incref(warnings);
    str_human_bytes(k.size, dump_size, sizeof(dump_size));
    plan_add(plan,
             "restore backup %s (database %s, PostgreSQL %s, taken %s, %zu tables, dump %s) into "
             "database %s at host %s port %s",
             k.id, summary_str(&k, "database"), summary_str(&k, "server_version"),
             summary_str(&k, "started"), json_array_size(json_object_get(k.summary, "tables")),
             dump_size, dbname, host, port);

    /* What the target looks like decides what is allowed. */
    int server_num;
    if (o->create) {
        if (!(c = connect_maintenance(&t, e)))
            goto out;
        int ex = database_exists(c, dbname, e);
        if (ex < 0)
            goto out;
        if (ex && o->dry_run) {
            plan_add(plan,
                     "NOTE: database %s already exists: the restore itself would be refused "
                     "(--create makes a new database)",
                     dbname);
        } else if (ex) {
            char mark[300];
            pgsrc_restore_mark(c, dbname, mark, sizeof(mark));
            if (*mark)
                err_set(e, ERR_USAGE,
                        "if that restore is not running any more, drop the database (DROP "
                        "DATABASE, or dropdb) and restore again, or restore into it with "
                        "--clean instead of --create",
                        "database %s at host %s port %s carries the mark of a restore of %s "
                        "that did not finish (it runs still, or was killed): it may be empty "
                        "or partly restored",
                        dbname, host, port, mark);
            else
                err_set(e, ERR_USAGE,
                        "drop it first, name another database in the target URL, or restore "
                        "into it with --clean instead of --create",
                        "database %s already exists at host %s port %s: --create makes a new "
                        "one",
                        dbname, host, port);
            goto out;
        }
        plan_add(plan,
                 "create database %s (template0, encoding %s, locale %s when the server has "
                 "it)",
                 dbname, summary_str(&k, "encoding"), summary_str(&k, "collate"));
        /* pg_restore applies the archive's database-level entries only with its own
         * --create: they are applied after it (apply_db_settings) */
        plan_add(plan,
                 "then apply the settings of database %s itself, as the backup holds them, to "
                 "%s: ALTER DATABASE ... SET, CONNECTION LIMIT, ALTER ROLE ... IN DATABASE ... "
                 "SET, GRANT/REVOKE ... ON DATABASE (a REVOKE CONNECT FROM PUBLIC included), "
                 "its comment and its owner (unless ownership is left out, below); one that "
                 "fails is a warning",
                 summary_str(&k, "database"), dbname);
    } else {
        bool missing = false;
        if (!(c = pgsrc_connect(&t, NULL, e))) {
            /* the server's own words for this database (a missing role also "does not exist",
             * in a message that names the database) */
            char said[300], ours[300];
            snprintf(said, sizeof(said), "database \"%s\" does not exist", dbname);
            snprintf(ours, sizeof(ours), "database %s does not exist", dbname); /* pgsrc's */
            missing = strstr(e->msg, said) || strstr(e->msg, ours);
            if (!missing || !o->dry_run) {
                if (missing)
                    snprintf(e->hint, sizeof(e->hint),
                             "add --create to create it, or name an existing database");
                goto out;
            }
            /* dry run: say so, and test the restore on that server all the same */
            err_clear(e);
            if (!(c = connect_maintenance(&t, e)))
                goto out;
            plan_add(plan,
                     "NOTE: database %s does not exist: the restore itself would need --create",
                     dbname);
        }
        int64_t nrel = missing ? 0 : pgsrc_count_relations(c, e);
        if (nrel < 0)
            goto out;
        if (!missing) {
            comment_read = pgsrc_db_comment(c, dbname, &prior_comment) == 0;
            pgsrc_restore_mark(c, dbname, prior_mark, sizeof(prior_mark));
        }
        if (*prior_mark)
            plan_add(plan,
                     "NOTE: database %s carries the mark of a restore of %s that did not finish "
                     "(it runs still, or was killed): it may be partly restored; a restore of "
                     "the whole backup that succeeds removes the mark",
                     dbname, prior_mark);
        if (nrel > 0 && !o->clean && o->dry_run) {
            /* A dry run reports what the restore would do, refusal included, and still
             * proves that the backup restores. */
            plan_add(plan,
                     "NOTE: database %s is not empty (%lld relations): the restore itself would "
                     "be refused without --clean",
                     dbname, (long long)nrel);
        } else if (nrel > 0 && !o->clean) {
            plan_add(plan, "refused: database %s is not empty (%lld tables, views or sequences)",
                     dbname, (long long)nrel);
            err_set(e, ERR_USAGE,
                    "add --clean to drop and recreate the backup's objects in it, or restore "
                    "into a new database with --create (and another database name)",
                    "database %s at host %s port %s is not empty (%lld relations): refusing to "
                    "restore into it",
                    dbname, host, port, (long long)nrel);
            goto out;
        } else if (o->clean) {
            int split = sel.nargs ? clean_splits_partitions(
                                        c, &sel, json_object_get(k.summary, "tables"), dbname, e)
                                  : 0;
            if (plan_refusal(split, o->dry_run, plan, e))
                goto out;
            if (pgsrc_partition_indexes(c, &pidx, &npidx, e) != 0)
                goto out;
            if (npidx)
                plan_add(plan,
                         "partitioned indexes in %s: the order of pg_restore's drops is "
                         "adjusted so that each partition's index goes with its parent",
                         dbname);
            plan_add(plan,
                     "drop the backup's objects in %s before recreating them (--clean: %lld "
                     "relations there now)",
                     dbname, (long long)nrel);
        } else if (!missing) {
            plan_add(plan, "database %s is empty", dbname);
        }
    }
    server_num = PQserverVersion(c);
    struct pgsrc_tool tool;
    if (pgsrc_tool_find("pg_restore", server_num > k.dump_num ? server_num : k.dump_num, true,
                        &tool, e) != 0)
        goto out;
    struct restore_run probe = {
        .r = r, .k = &k, .tool = &tool, .sel = &sel, .temp_dir = o->temp_dir, .op = o->op};
    if (selection_encode(&probe, c, &sel, e) != 0)
        goto out;
    bool no_owner, no_priv;
    decide_ownership(c, json_object_get(k.summary, "roles"), &no_owner, &no_priv, plan);
    PQfinish(c);
    c = NULL;
    if (json_object_size(sel.schemas)) {
        if (plan_refusal(dump_splits_partitions(&probe, &sel, e), o->dry_run, plan, e))
            goto out;
    }
    char list[600];
    join_selection(&sel, list, sizeof(list));
    if (sel.nargs)
        plan_add(plan,
                 "only %zu table(s): %s (their schemas are created first where missing: "
                 "pg_restore does not create them for --table/--schema)",
                 json_array_size(sel.expected), json_array_size(sel.expected) ? list : "(none)");
    if (o->ntables)
        plan_add(plan, "--table restores each table's definition and rows only, as pg_restore "
                       "-t does: not its indexes, primary key, constraints, column defaults, "
                       "triggers or the sequences it uses (over a live table with --clean "
                       "they are gone); --schema restores all of a schema's objects");
    if (o->jobs > 1)
        plan_add(plan,
                 "pg_restore %s with %d parallel jobs from a copy of the dump staged in %s (mode "
                 "0600, removed afterwards); not one transaction: a failure can leave a partial "
                 "restore",
                 tool.version, o->jobs, o->temp_dir);
    else
        plan_add(plan,
                 "pg_restore %s, streamed from the repository, in a single transaction: any "
                 "error leaves the database as it was",
                 tool.version);
    if ((o->jobs > 1 || no_priv) && !o->create)
        plan_add(plan,
                 "while it runs, database %s carries a mark (its comment, put back as it was "
                 "when the restore succeeds): a restore killed there leaves the mark, and "
                 "backups of the database warn about it",
                 dbname);
    if (o->verify)
        plan_add(plan, "then compare the row counts of %zu table(s) with the backup's",
                 json_array_size(sel.expected));

    if (o->dry_run) {
        struct pgsrc_target server;
        pgsrc_target_copy(&t, &server);
        pgsrc_target_set(&server, "dbname", NULL);
        plan_add(plan,
                 "dry run: nothing changes in database %s; instead a scratch database on host %s "
                 "port %s receives the restore, its row counts are compared, and it is dropped",
                 dbname, host, port);
        if (o->on_plan)
            o->on_plan(o->plan_ctx, plan);
        struct test_result tr;
        int trc = test_restore_core(r, &k, DB_SCRATCH_DATABASE, &server, &sel, o->temp_dir,
                                    o->threads, o->progress, o->ctx, o->op, &tr, e);
        pgsrc_target_free(&server);
        /* A selection that restores cleanly proves its part only: recorded, it would stand for
         * the whole backup, and its pass would clear the damage an earlier test restore found
         * (caris_backup_known_damaged: the newest record decides; retention then keeps this
         * backup and forgets an intact one). What a part finds wrong is recorded. */
        res->partial = sel.nargs > 0;
        if (tr.scratch_name[0] && (!res->partial || !tr.ok))
            res->recorded = record_test_restore(r, k.id, DB_SCRATCH_DATABASE, &tr, e, o->op) == 0;
        tables = tr.tables;
        res->tested = true;
        res->test.ok = tr.ok;
        res->test.scratch = DB_SCRATCH_DATABASE;
        snprintf(res->test.scratch_name, sizeof(res->test.scratch_name), "%s", tr.scratch_name);
        res->test.restore_ms = tr.restore_ms;
        res->test.verify_ms = tr.verify_ms;
        verified = trc == 0;
        rc = trc;
        goto out;
    }

    if (o->on_plan)
        o->on_plan(o->plan_ctx, plan);
    if (o->create) {
        if (!(c = connect_maintenance(&t, e)) || create_database(c, dbname, &k, e) != 0)
            goto out;
        created = true;
        /* marked until the restore is done: one killed (SIGKILL, the machine down) leaves the
         * database it made, and the next --create says what it is */
        char *mark = xasprintf("%s%s (%s)", PGSRC_RESTORE_MARK, k.id, summary_str(&k, "started"));
        /* and closed to other roles until the backup's privileges and the database's own
         * settings are applied (apply_db_settings opens it as the backup's was): the restored
         * data must not be reachable by roles the backup's database kept out, while its row
         * counts are verified */
        if (set_db_comment(c, dbname, mark, e) != 0 || db_close_to_public(c, dbname, e) != 0) {
            free(mark);
            drop_created(&t, dbname, e);
            goto out;
        }
        free(mark);
        PQfinish(c);
        c = NULL;
    } else if (o->jobs > 1 || no_priv) {
        /* not one transaction: marked until the restore is done, as a --create restore marks
         * the database it makes (one killed there leaves the database partly restored, and it
         * says so: to a --create restore into it, and to every backup of it). So is one in a
         * single transaction whose privileges (--no-privileges: roles of the backup missing)
         * are applied in a second one after it: killed between the two, it left the backup's
         * data with the default privileges (a REVOKE of the backup's not applied) unmarked */
        struct err me = ERR_INIT;
        char *mark = xasprintf("%s%s (%s)", PGSRC_RESTORE_MARK, k.id, summary_str(&k, "started"));
        if (!comment_read) /* (the comment it has could not be put back) */
            err_set(&me, ERR_DATABASE, NULL, "its comment could not be read");
        else
            marked = set_target_comment(&t, dbname, mark, &me) == 0;
        if (!marked) {
            char *w = xasprintf("database %s could not be marked as being restored (its comment: "
                                "%s): a restore killed now leaves it partly restored without a "
                                "mark",
                                dbname, me.msg);
            restore_warn(warnings, o->op, w);
        }
        free(mark);
    }
    struct restore_run rr = {.r = r,
                             .k = &k,
                             .target = &t,
                             .tool = &tool,
                             .clean = o->clean && !o->create,
                             .pidx = pidx,
                             .npidx = npidx,
                             .no_owner = no_owner,
                             .no_privileges = no_priv,
                             .jobs = o->jobs,
                             .sel = &sel,
                             .temp_dir = o->temp_dir,
                             .threads = o->threads,
                             .progress = o->progress,
                             .ctx = o->ctx,
                             .op = o->op,
                             .settings = created ? &sr : NULL};
    sr.rr = &rr;
    if (pg_restore_run(&rr, e) != 0) {
        if (created) {
            drop_created(&t, dbname, e);
        } else if (rr.applying) {
            err_wrap(e, "database %s may be partially restored", dbname);
            /* --jobs is not one transaction: what it did stays, and looks like a restore (the
             * mark stays with it) */
            char *h = xasprintf("do not use database %s as it is%s: once the cause is fixed, "
                                "restore again with --clean (it replaces the backup's objects), "
                                "or drop it and restore with --create",
                                dbname, marked ? " (its comment marks it so)" : "");
            hint_before(e, h);
            free(h);
        } else {
            /* one transaction (or nothing started): rolled back */
            err_wrap(e, "database %s was not changed", dbname);
            /* the mark goes (kept, it would say the database may be partly restored; a
             * restore that succeeds removes it) */
            struct err pe = ERR_INIT;
            if (marked && set_target_comment(&t, dbname, prior_comment, &pe) != 0)
                caris_op_log(o->op, LOG_WARN,
                             "database %s was not changed, but the mark of this restore (its "
                             "comment) stays: %s",
                             dbname, pe.msg);
        }
        goto out;
    }
    if (rr.no_privileges && restore_acls(&rr, dbname, warnings, e) != 0) {
        if (created) {
            drop_created(&t, dbname, e);
        } else {
            char *h = xasprintf("database %s holds the backup's data, but roles may use objects "
                                "the backup denied them: do not open it to other roles; once "
                                "the cause is fixed, restore again with --clean",
                                dbname);
            hint_before(e, h);
            free(h);
        }
        goto out;
    }
    tables = json_deep_copy(sel.expected);
    if (o->verify) {
        int bad = compare_counts(&t, tables, e);
        if (bad < 0)
            goto out;
        if (bad > 0) {
            char what[300];
            snprintf(what, sizeof(what), "restoring %s into %s", k.id, dbname);
            mismatch_error(tables, bad, what, e);
            /* a database made for this restore that does not hold what the backup recorded
             * goes, as after a failed pg_restore (one restored into stays: it is said above
             * not to be relied on) */
            if (created)
                drop_created(&t, dbname, e);
            goto out;
        }
        verified = true;
    }
    bool commented = false;
    if (created) {
        size_t applied;
        struct err se = ERR_INIT;
        if (settings_join(&sr) != 0)
            se = sr.e;
        if (err_is_set(&se) ||
            apply_db_settings(&rr, dbname, sr.sql, warnings, &applied, &commented, &se) != 0) {
            char *w = xasprintf("database %s is restored, but the settings of the backup's "
                                "database were not applied, and it is still closed to PUBLIC "
                                "(only its owner and superusers may connect): %s",
                                dbname, se.msg);
            restore_warn(warnings, o->op, w);
        } else if (applied) {
            caris_op_log(o->op, LOG_INFO,
                         "database %s: %zu setting%s of the backup's database applied", dbname,
                         applied, applied == 1 ? "" : "s");
        }
    }
    /* done: the mark goes (a comment of the backup's replaced it); restoring into an existing
     * database, its comment is put back, and a whole restore removes the mark an earlier one
     * left (a --table or --schema restore mends only its part) */
    bool unmark = created ? !commented : marked || (*prior_mark && !sel.nargs);
    if (unmark && created) {
        if (!(c = connect_maintenance(&t, e)) || set_db_comment(c, dbname, NULL, e) != 0) {
            err_wrap(e,
                     "database %s is restored, but its mark (a comment saying a restore is in "
                     "progress) could not be removed",
                     dbname);
            goto out;
        }
    } else if (unmark) {
        /* restored into: the data is the backup's whatever the comment says (a role that owns
         * the objects, not the database, may not remove an earlier restore's mark) */
        struct err ue = ERR_INIT;
        const char *back = *prior_mark && !sel.nargs ? NULL : prior_comment;
        if (set_target_comment(&t, dbname, back, &ue) != 0)
            restore_warn(warnings, o->op,
                         xasprintf("database %s is restored, but the mark of a restore (its "
                                   "comment) could not be removed, and backups of it will warn: "
                                   "%s; remove it as the database's owner (COMMENT ON DATABASE "
                                   "... IS NULL)",
                                   dbname, ue.msg));
    }
    rc = json_array_size(warnings) ? CARIS_DONE_WARNINGS : CARIS_DONE;
out:
    if (c)
        PQfinish(c);
    free(prior_comment);
    if (sr.started) /* the restore failed while it read */
        pthread_join(sr.th, NULL);
    free(sr.sql);
    if (res->ran) {
        if (!tables) {
            tables = sel.expected ? json_deep_copy(sel.expected) : json_array();
        }
        size_t i;
        json_t *x;
        json_array_foreach(tables, i, x) if (!json_object_get(x, "actual"))
            json_object_set_new(x, "actual", json_null());
        res->tables = tables;
        tables = NULL;
        res->verified = verified;
        res->ok = rc >= 0;
        res->duration_ms = (time_mono_ns() - start) / 1000000;
        if (rc < 0)
            res->error = xstrdup(e->msg);
    }
    json_decref(tables);
    json_decref(plan);
    json_decref(warnings);
    pgsrc_index_trees_free(pidx, npidx);
    selection_free(&sel);
    backup_free(&k);
    if (locked)
        repo_unlock(r);
    pgsrc_target_free(&t);
    caris_bad_blobs_record(r, "restore", o->op); /* what failed to open: stored again next */
    return rc;
}

void caris_db_restore_result_free(struct caris_db_restore_result *res)
{
    free(res->backup_id);
    json_decref(res->target);
    json_decref(res->plan);
    json_decref(res->tables);
    json_decref(res->warnings);
    free(res->error);
    memset(res, 0, sizeof(*res));
}

json_t *caris_db_restore_result_to_json(const struct caris_db_restore_result *res)
{
    if (!res->ran)
        return NULL;
    json_t *o = json_pack("{s:s, s:O, s:b, s:O, s:O, s:b, s:b, s:I}", "backupId", res->backup_id,
                          "target", res->target, "dryRun", res->dry_run, "plan", res->plan,
                          "tables", res->tables, "verified", res->verified, "ok", res->ok,
                          "duration_ms", (json_int_t)res->duration_ms);
    if (res->tested)
        json_object_set_new(o, "testRestore",
                            json_pack("{s:b, s:s, s:s, s:I, s:I, s:b, s:b}", "ok", res->test.ok,
                                      "scratch", scratch_kind_name(res->test.scratch),
                                      "scratch_name", res->test.scratch_name, "restore_ms",
                                      (json_int_t)res->test.restore_ms, "verify_ms",
                                      (json_int_t)res->test.verify_ms, "partial", res->partial,
                                      "recorded", res->recorded));
    json_object_set_new(o, "warnings",
                        res->warnings ? json_deep_copy(res->warnings) : json_array());
    if (res->error)
        json_object_set_new(o, "error", json_string(res->error));
    return o;
}

/* ---- test restore ------------------------------------------------------------------------------
 */

int caris_test_restore(struct repo *r, const struct db_test_restore_opts *o,
                       struct caris_test_restore_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    struct pgsrc_target server = {0};
    struct dbk k = {0};
    struct selection sel = {0};
    bool locked = false;
    int rc = -1;
    if (o->scratch == DB_SCRATCH_DATABASE) {
        if (pgsrc_target_parse(o->url, o->password, "POSTGRES_URL", &server, e) != 0)
            return -1;
        pgsrc_target_set(&server, "dbname", NULL);
    }
    if (repo_lock(r, false, "test-restore", e) != 0)
        goto out;
    locked = true;
    if (backup_load(r, o->backup_id, &k, e) != 0 ||
        select_objects(&k, NULL, 0, NULL, 0, &sel, e) != 0)
        goto out;
    struct test_result tr;
    rc = test_restore_core(r, &k, o->scratch, &server, &sel, o->temp_dir, o->threads, o->progress,
                           o->ctx, o->op, &tr, e);
    if (tr.scratch_name[0])
        record_test_restore(r, k.id, o->scratch, &tr, e, o->op);
    res->ran = true;
    res->backup_id = xstrdup(k.id);
    res->ok = tr.ok;
    res->scratch = o->scratch;
    snprintf(res->scratch_name, sizeof(res->scratch_name), "%s", tr.scratch_name);
    res->restore_ms = tr.restore_ms;
    res->verify_ms = tr.verify_ms;
    res->tables = tr.tables;
    size_t i;
    json_t *x;
    json_array_foreach(tr.tables, i, x) if (!json_object_get(x, "actual"))
        json_object_set_new(x, "actual", json_null());
    if (rc != 0)
        res->error = xstrdup(e->msg);
out:
    selection_free(&sel);
    backup_free(&k);
    if (locked)
        repo_unlock(r);
    pgsrc_target_free(&server);
    return rc;
}

void caris_test_restore_result_free(struct caris_test_restore_result *res)
{
    free(res->backup_id);
    json_decref(res->tables);
    free(res->error);
    memset(res, 0, sizeof(*res));
}

json_t *caris_test_restore_result_to_json(const struct caris_test_restore_result *res)
{
    if (!res->ran)
        return NULL;
    json_t *o = json_pack("{s:s, s:b, s:s, s:s, s:I, s:I, s:O}", "backupId", res->backup_id, "ok",
                          res->ok, "scratch", scratch_kind_name(res->scratch), "scratch_name",
                          res->scratch_name, "restore_ms", (json_int_t)res->restore_ms, "verify_ms",
                          (json_int_t)res->verify_ms, "tables", res->tables);
    if (res->error)
        json_object_set_new(o, "error", json_string(res->error));
    return o;
}

/* Database commands: backup database, restore database, test-restore (issue #3). The
 * contract they follow is docs/DATABASE-CONTRACT.md. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/audit.h"
#include "caris/core.h"
#include "caris/lazylib.h"
#include "caris/dbbackup.h"
#include "caris/pgsrc.h"

#include "cli.h"

static const char BACKUP_USAGE[] =
    "usage: caris-backup [--json] backup database [--full|--incremental]\n"
    "                                            [--compress|--no-compress] [--time TIME]\n"
    "                                            [--dry-run]\n"
    "\n"
    "Dumps the database of POSTGRES_URL with pg_dump (custom format, uncompressed so that the\n"
    "repository deduplicates it) straight into the repository: no copy on disk. Kept with it:\n"
    "the cluster's globals (pg_dumpall --globals-only: roles without passwords, tablespaces),\n"
    "the server version, encoding and size, and every table's exact row count, taken in the\n"
    "same snapshot as the dump.\n"
    "\n"
    "  --full           (the default) a backup that records no parent\n"
    "  --incremental    records the latest backup of the same database as its parent; the\n"
    "                   database is read whole either way, only changed chunks are added\n"
    "  --compress       compress this backup's new chunks (zstd) before encrypting them\n"
    "  --no-compress    store them uncompressed (still encrypted: encryption cannot be\n"
    "                   turned off). Default: BACKUP_COMPRESS_DUMPS, false unless set:\n"
    "                   compressed sizes would let someone who can insert rows and watch\n"
    "                   the repository's size probe other rows (docs/BACKUP_RECOVERY.md)\n"
    "  --time TIME      record TIME as the backup's time and in its id (importing older\n"
    "                   backups, tests): 2024-01-15T03:00:00Z, ...+01:00, or local time in\n"
    "                   BACKUP_TZ; not in the future; an existing id is an error\n"
    "  --dry-run        back up nothing: log in to the database, find pg_dump and\n"
    "                   pg_dumpall, check every table can be read, find the parent, check\n"
    "                   the id --time gives is free, and say what a real run would do\n"
    "                   (exit as a real run would fail)\n"
    "\n"
    "POSTGRES_URL is a libpq URI (postgresql://user:password@host:5432/db) or a key=value\n"
    "string; PGPASSWORD is used when it has no password. The password reaches pg_dump only\n"
    "through its environment, never its arguments. The pg_dump of the server's major version\n"
    "is used (/usr/lib/postgresql/<major>/bin, else PATH); an older one is refused.\n"
    "Exit 10 when the database side fails (nothing is committed then).\n"
    "A base backup of the whole cluster: `backup database --physical --help`.\n";

static const char RESTORE_USAGE[] =
    "usage: caris-backup [--json] restore database ID [--target-url URL] [--clean] [--create]\n"
    "                    [--table T]... [--schema S]... [--jobs N] [--dry-run] [--verify]\n"
    "\n"
    "Streams the dump out of the repository (every chunk authenticated, SHA-256 checked) into\n"
    "pg_restore, in a single transaction: a failure leaves the target as it was. The plan is\n"
    "printed (stderr) before anything changes.\n"
    "\n"
    "  --target-url URL  restore there instead of POSTGRES_URL's database. It must not hold a\n"
    "                    password (the process list shows arguments): put a URL with a\n"
    "                    password in CARIS_RESTORE_TARGET_URL instead. Without one, the\n"
    "                    password of POSTGRES_URL is used for the same server and user, else\n"
    "                    PGPASSWORD.\n"
    "  --clean           required when the target database is not empty: drops the backup's\n"
    "                    objects there before recreating them\n"
    "  --create          create the target database (it must not exist), with the backup's\n"
    "                    encoding, and restore into it; dropped again if the restore fails.\n"
    "                    Then the backup database's own settings are applied to it (ALTER\n"
    "                    DATABASE ... SET, role settings in it, GRANT/REVOKE ON DATABASE, its\n"
    "                    comment and owner); one that fails is a warning (exit 3)\n"
    "  --table T         only table T (a name, or schema.name); repeatable. Its definition\n"
    "                    and rows only (pg_restore -t): no indexes, primary key, constraints,\n"
    "                    defaults, triggers or sequences. Tables of several schemas together\n"
    "                    are refused when pg_restore cannot select exactly them\n"
    "  --schema S        only schema S, all its objects; repeatable\n"
    "  --jobs N          N parallel pg_restore jobs: the dump is staged (mode 0600) in\n"
    "                    BACKUP_DIR/temp and removed afterwards (by the next restore if\n"
    "                    this one is killed); not one transaction\n"
    "  --dry-run         change nothing on the target: restore into a scratch database on the\n"
    "                    target's server instead (as test-restore), then drop it\n"
    "  --verify          afterwards, compare every restored table's row count with the\n"
    "                    backup's (exit 4 on any difference)\n"
    "\n"
    "Object owners and privileges are restored as in the backup when the roles exist on the\n"
    "target and the restoring user may assign them; otherwise they are left out (--no-owner,\n"
    "and --no-privileges for missing roles), as the plan says.\n"
    "A physical backup, to a point in time: `restore database --physical --help`.\n";

static const char TEST_USAGE[] =
    "usage: caris-backup [--json] test-restore ID [--scratch database|local]\n"
    "\n"
    "Proves a database backup restores: restores it into a scratch database, compares every\n"
    "table's row count with the counts recorded at backup time, drops the scratch database\n"
    "(also on failure), and reports pass/fail with timings. The result is recorded in the\n"
    "repository; `list` shows the latest one per backup.\n"
    "\n"
    "  --scratch database  (default) caris_test_<random> on the POSTGRES_URL server (the user\n"
    "                      needs CREATEDB)\n"
    "  --scratch local     a throwaway cluster: initdb under BACKUP_DIR/temp, started on a free\n"
    "                      loopback port, removed afterwards (not as root)\n"
    "\n"
    "Exit 4 when the row counts differ, 10 when the restore fails.\n";

static char *temp_dir(const struct globals *g)
{
    return xasprintf("%s/temp", config_backup_dir(&g->cfg));
}

/* POSTGRES_URL, checked for syntax before anything else happens. */
static int postgres_url(const struct globals *g, const char **url, struct err *e)
{
    *url = config_get(&g->cfg, "POSTGRES_URL");
    struct pgsrc_target t;
    if (pgsrc_target_parse(*url, NULL, "POSTGRES_URL", &t, e) != 0)
        return -1;
    pgsrc_target_free(&t);
    return 0;
}

static int parse_jobs(const char *s, int *out)
{
    unsigned long long v;
    if (cli_parse_uint(s, 1, 256, &v) != 0)
        return -1;
    *out = (int)v;
    return 0;
}

/* ---- backup database ------------------------------------------------------------------ */

static void print_db_summary(const struct globals *g, const struct caris_backup_result *res)
{
    if (print_backup_json(g, res))
        return;
    char dump[32], added[32], stored[32], dur[32];
    cli_human_duration(res->duration_ms, dur, sizeof(dur));
    str_human_bytes(res->bytes_read, dump, sizeof(dump));
    str_human_bytes(res->bytes_added, added, sizeof(added));
    str_human_bytes(res->bytes_stored, stored, sizeof(stored));
    printf("backup %s %s\n", res->id, res->warnings ? "completed with warnings" : "completed");
    printf("  database %s (PostgreSQL %s), %zu tables, %llu rows; dump %s, new data %s, stored "
           "%s, %s\n",
           res->database, res->server_version, res->tables, (unsigned long long)res->rows, dump,
           added, stored, dur);
    if (res->parent)
        printf("  based on %s\n", res->parent);
}

/* backup database --dry-run: the plan, or what a real run would fail on. r NULL: there is no
 * repository (no_repo says so), which is an error once the database has been checked (a real
 * run would fail on either; the database is what a dry run is most often for). */
static int backup_dry_run(struct globals *g, struct repo *r, const struct db_backup_opts *o,
                          bool incremental, struct err *no_repo)
{
    struct err e = ERR_INIT;
    json_t *plan = NULL;
    int rc = caris_db_backup_plan(r, o, incremental, &plan, &e);
    if (r)
        cli_keep_repo_for_audit(g, r);
    if (rc != 0)
        return fail(&e);
    if (!r) {
        json_decref(plan);
        if (!g->quiet)
            fprintf(stderr, "dry run: the database can be backed up (login, pg_dump, every table "
                            "readable), but there is no repository\n");
        return fail(no_repo);
    }
    json_object_set_new(plan, "dry_run", json_true());
    if (g->json) {
        print_json(plan);
    } else {
        char size[32];
        const char *parent = json_string_value(json_object_get(plan, "parent"));
        str_human_bytes((uint64_t)json_integer_value(json_object_get(plan, "database_size")), size,
                        sizeof(size));
        long long ntables = (long long)json_integer_value(json_object_get(plan, "tables"));
        const char *mode = json_string_value(json_object_get(plan, "mode"));
        printf("dry run: %s %s backup of database %s (PostgreSQL %s, %lld table%s, %s)%s%s\n",
               mode && mode[0] && strchr("aeiou", mode[0]) ? "an" : "a", mode,
               json_string_value(json_object_get(plan, "database")),
               json_string_value(json_object_get(plan, "server_version")), ntables,
               ntables == 1 ? "" : "s", size, parent ? ", based on " : "", parent ? parent : "");
        printf("  with %s (%s); every table can be read\n",
               json_string_value(json_object_get(plan, "pg_dump")),
               json_string_value(json_object_get(plan, "pg_dump_version")));
        size_t i;
        json_t *w;
        json_array_foreach(json_object_get(plan, "warnings"), i, w)
            printf("  warning: %s\n", json_string_value(json_object_get(w, "message")));
        printf("dry run: nothing was backed up\n");
    }
    json_decref(plan);
    return 0;
}

int cmd_backup_database(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"full", no_argument, 0, 'F'},        {"incremental", no_argument, 0, 'I'},
        {"no-compress", no_argument, 0, 'n'}, {"compress", no_argument, 0, 'c'},
        {"time", required_argument, 0, 'T'},  {"dry-run", no_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    if (has_physical(argc, argv))
        return cmd_backup_physical(g, argc, argv);
    bool incremental = false, dry_run = false;
    char mode_seen = 0;
    int compress = -1; /* -1: BACKUP_COMPRESS_DUMPS decides */
    int64_t time_ns = 0;
    struct err e = ERR_INIT;
    int c;
    /* Parse after the kind word: argv[1] ("database") plays the program name. */
    int sargc = argc - 1;
    char **sargv = argv + 1;
    optind = 0;
    while ((c = cli_getopt(sargc, sargv, "h", opts)) != -1) {
        switch (c) {
        case 'F':
        case 'I':
            if ((c = cli_backup_mode(&mode_seen, (char)c)) != 0)
                return c;
            incremental = mode_seen == 'I';
            break;
        case 'n':
        case 'c':
            /* both given: the last one won without a word */
            if (compress >= 0 && compress != (c == 'c'))
                return usage_error("--compress and --no-compress exclude each other%s: give one",
                                   "");
            compress = c == 'c';
            break;
        case 'T':
            if (backup_time_option(g, optarg, &time_ns, &e) != 0)
                return fail(&e);
            break;
        case 'd':
            dry_run = true;
            break;
        case 'h':
            fputs(BACKUP_USAGE, stdout);
            return 0;
        default:
            return cli_opt_fail();
        }
    }
    /* quoted as the audit log keeps it: a connection URL typed here may carry a password */
    char red[256];
    if (optind < sargc)
        return usage_error("unexpected argument '%s' for backup database (the database comes "
                           "from POSTGRES_URL)",
                           caris_audit_redact_arg(sargv[optind], red, sizeof(red)));
    bool compress_dumps;
    if (config_bool(&g->cfg, "BACKUP_COMPRESS_DUMPS", CONFIG_DEFAULT_COMPRESS_DUMPS,
                    &compress_dumps, &e) != 0)
        return fail(&e);
    if (compress >= 0)
        compress_dumps = compress;
    const char *url;
    if (postgres_url(g, &url, &e) != 0)
        return fail(&e);
    struct repo *r = open_repo(g, false, &e);
    if (!r && !(dry_run && e.code == ERR_NOT_FOUND))
        return fail(&e);
    struct caris_op op;
    cli_op_init_service(g, &op); /* Ctrl-C / SIGTERM: pg_dump is stopped, nothing committed */
    struct db_backup_opts o = {.url = url,
                               .password = config_get(&g->cfg, "PGPASSWORD"),
                               .no_compress = !compress_dumps,
                               .threads = g->threads,
                               .progress = progress_fn(g),
                               .time_ns = time_ns,
                               .op = &op};
    if (dry_run)
        return backup_dry_run(g, r, &o, incremental, &e);
    struct caris_backup_result res;
    int rc = incremental ? caris_db_backup_incremental(r, &o, &res, &e)
                         : caris_db_backup_full(r, &o, &res, &e);
    progress_end(g);
    cli_keep_repo_for_audit(g, r);
    if (rc < 0)
        return fail(&e);
    print_db_summary(g, &res);
    caris_backup_result_free(&res);
    return rc == CARIS_DONE_WARNINGS ? EXIT_WARNINGS : 0;
}

/* ---- restore database ------------------------------------------------------------------ */

static void print_plan(void *ctx, json_t *plan)
{
    const struct globals *g = ctx;
    if (g->quiet)
        return;
    fprintf(stderr, "plan:\n");
    size_t i;
    json_t *line;
    json_array_foreach(plan, i, line) fprintf(stderr, "  - %s\n", json_string_value(line));
    fflush(stderr);
}

static void print_counts(json_t *tables)
{
    size_t i;
    json_t *t;
    bool counted = false;
    json_array_foreach(tables, i, t) counted |= json_is_integer(json_object_get(t, "actual"));
    if (!counted)
        return;
    json_array_foreach(tables, i, t)
    {
        json_t *a = json_object_get(t, "actual");
        if (!json_is_integer(a)) {
            printf("  DIFF %s.%s: missing\n", json_string_value(json_object_get(t, "schema")),
                   json_string_value(json_object_get(t, "name")));
            continue;
        }
        json_int_t want = json_integer_value(json_object_get(t, "expected"));
        bool same = json_integer_value(a) == want;
        printf("  %-4s %s.%s: %lld rows", same ? "ok" : "DIFF",
               json_string_value(json_object_get(t, "schema")),
               json_string_value(json_object_get(t, "name")), json_integer_value(a));
        if (!same)
            printf(", the backup recorded %lld", want);
        printf("\n");
    }
}

static void free_strs(const char **v)
{
    free((void *)v);
}

int cmd_restore_database(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"target-url", required_argument, 0, 'u'},
                                         {"clean", no_argument, 0, 'c'},
                                         {"create", no_argument, 0, 'C'},
                                         {"table", required_argument, 0, 't'},
                                         {"schema", required_argument, 0, 's'},
                                         {"jobs", required_argument, 0, 'j'},
                                         {"dry-run", no_argument, 0, 'n'},
                                         {"verify", no_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    if (has_physical(argc, argv))
        return cmd_restore_physical(g, argc, argv);
    struct db_restore_opts o = {.jobs = 1, .threads = g->threads};
    const char **tables = NULL, **schemas = NULL;
    const char *target_url = NULL;
    int c;
    int sargc = argc - 1;
    char **sargv = argv + 1;
    optind = 0;
    while ((c = cli_getopt(sargc, sargv, "h", opts)) != -1) {
        switch (c) {
        case 'u':
            if (cli_set_once("--target-url", &target_url, optarg) != 0) {
                free(tables);
                free(schemas);
                return 2;
            }
            break;
        case 'c':
            o.clean = true;
            break;
        case 'C':
            o.create = true;
            break;
        case 't':
            tables = xrealloc(tables, xsize(o.ntables + 1, sizeof(char *), 0));
            tables[o.ntables++] = optarg;
            break;
        case 's':
            schemas = xrealloc(schemas, xsize(o.nschemas + 1, sizeof(char *), 0));
            schemas[o.nschemas++] = optarg;
            break;
        case 'j':
            if (parse_jobs(optarg, &o.jobs) != 0) {
                free_strs(tables);
                free_strs(schemas);
                return usage_error("--jobs must be a number from 1 to 256, got '%s'", optarg);
            }
            break;
        case 'n':
            o.dry_run = true;
            break;
        case 'v':
            o.verify = true;
            break;
        case 'h':
            free_strs(tables);
            free_strs(schemas);
            fputs(RESTORE_USAGE, stdout);
            return 0;
        default:
            free_strs(tables);
            free_strs(schemas);
            return cli_opt_fail();
        }
    }
    o.tables = tables;
    o.schemas = schemas;
    struct err e = ERR_INIT;
    int code = 0;
    char *tmp = NULL;
    struct repo *r = NULL;
    struct caris_db_restore_result res = {0};
    char id[CARIS_ID_MAX];
    if (optind != sargc - 1) {
        code = usage_error("restore database needs exactly one backup id%s", NULL);
        goto out;
    }
    o.backup_id = id; /* resolved when the repository is open */
    if (target_url) {
        if (lazylib_load(LAZYLIB_PQ, &e) != 0) {
            code = fail(&e);
            goto out;
        }
        int has = pgsrc_url_has_password(target_url);
        if (has < 0) {
            /* the parser's message, which never quotes a password */
            struct pgsrc_target t;
            if (pgsrc_target_parse(target_url, NULL, "--target-url", &t, &e) == 0)
                pgsrc_target_free(&t);
            e.code = ERR_USAGE;
            code = fail(&e);
            goto out;
        }
        if (has > 0) {
            err_set(&e, ERR_USAGE,
                    "arguments are visible to every user in the process list: put the URL with "
                    "its password in the environment variable CARIS_RESTORE_TARGET_URL instead "
                    "(or the password alone in PGPASSWORD)",
                    "--target-url must not contain a password");
            code = fail(&e);
            goto out;
        }
        o.target_url = target_url;
    } else if (config_get(&g->cfg, "CARIS_RESTORE_TARGET_URL")) {
        o.target_url = config_get(&g->cfg, "CARIS_RESTORE_TARGET_URL");
    }
    o.url = config_get(&g->cfg, "POSTGRES_URL");
    if (!o.target_url && postgres_url(g, &o.url, &e) != 0) {
        code = fail(&e);
        goto out;
    }
    o.password = config_get(&g->cfg, "PGPASSWORD");
    tmp = temp_dir(g);
    o.temp_dir = tmp;
    o.progress = progress_fn(g);
    o.on_plan = print_plan;
    o.plan_ctx = g;
    struct caris_op op;
    cli_op_init_service(g, &op); /* Ctrl-C / SIGTERM: pg_restore is stopped before it commits */
    o.op = &op;
    if (!(r = open_repo_id(g, sargv[optind], "database", id, &e))) {
        code = fail(&e);
        goto out;
    }
    cli_audit_backup_id(id); /* resolved by open_repo_id */
    int rc = caris_restore_database(r, &o, &res, &e);
    progress_end(g);
    if (g->json && res.ran) {
        json_t *j = caris_db_restore_result_to_json(&res);
        /* a failure's error is the object of every command's (docs/JSON.md, "Errors"), not
         * the report's text alone */
        if (rc < 0 && err_is_set(&e))
            json_object_set_new(j, "error", cli_err_to_json(&e));
        print_json(j);
        json_decref(j);
    } else if (res.ran && rc >= 0 && !g->quiet) {
        json_t *tg = res.target;
        char secs[32], rms[32], vms[32];
        cli_human_duration(res.duration_ms, secs, sizeof(secs));
        cli_human_duration(res.test.restore_ms, rms, sizeof(rms));
        cli_human_duration(res.test.verify_ms, vms, sizeof(vms));
        if (o.dry_run && res.partial) {
            printf("dry run: the selected tables of backup %s restore cleanly (scratch database "
                   "%s: restore %s, verify %s); database %s was not touched\n"
                   "  not recorded as a test restore of the backup: only a part was restored "
                   "(`caris-backup test-restore %s` proves all of it)\n",
                   o.backup_id, res.test.scratch_name, rms, vms,
                   json_string_value(json_object_get(tg, "database")), o.backup_id);
        } else if (o.dry_run) {
            printf("dry run: backup %s restores cleanly (scratch database %s: restore %s, "
                   "verify %s); database %s was not touched\n",
                   o.backup_id, res.test.scratch_name, rms, vms,
                   json_string_value(json_object_get(tg, "database")));
        } else {
            printf("restored backup %s into database %s at host %s port %s in %s\n", o.backup_id,
                   json_string_value(json_object_get(tg, "database")),
                   json_string_value(json_object_get(tg, "host")),
                   json_string_value(json_object_get(tg, "port")), secs);
        }
        if (res.verified)
            printf("  row counts match the backup's in %zu table(s)\n",
                   json_array_size(res.tables));
    } else if (res.ran && rc != 0 && !g->quiet) {
        print_counts(res.tables);
    }
    code = rc == CARIS_DONE ? 0 : rc == CARIS_DONE_WARNINGS ? EXIT_WARNINGS : fail(&e);
out:
    caris_db_restore_result_free(&res);
    cli_keep_repo_for_audit(g, r); /* its key derived once: the audit log's head goes in */
    free(tmp);
    free_strs(tables);
    free_strs(schemas);
    return code;
}

/* ---- test-restore ------------------------------------------------------------------------- */

int cmd_test_restore(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"scratch", required_argument, 0, 's'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct db_test_restore_opts o = {.scratch = DB_SCRATCH_DATABASE, .threads = g->threads};
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        switch (c) {
        case 's':
            if (strcmp(optarg, "database") == 0)
                o.scratch = DB_SCRATCH_DATABASE;
            else if (strcmp(optarg, "local") == 0)
                o.scratch = DB_SCRATCH_LOCAL;
            else
                return usage_error("--scratch must be 'database' or 'local', got '%s'", optarg);
            break;
        case 'h':
            fputs(TEST_USAGE, stdout);
            return 0;
        default:
            return cli_opt_fail();
        }
    }
    if (optind != argc - 1)
        return usage_error("test-restore needs exactly one backup id%s", NULL);
    char id[CARIS_ID_MAX];
    o.backup_id = id; /* resolved when the repository is open */
    struct err e = ERR_INIT;
    if (o.scratch == DB_SCRATCH_DATABASE && postgres_url(g, &o.url, &e) != 0)
        return fail(&e);
    o.password = config_get(&g->cfg, "PGPASSWORD");
    char *tmp = temp_dir(g);
    o.temp_dir = tmp;
    o.progress = progress_fn(g);
    struct caris_op op;
    cli_op_init_service(g, &op); /* Ctrl-C / SIGTERM: stopped, the scratch database dropped */
    o.op = &op;
    struct repo *r = open_repo_id(g, argv[optind], "database", id, &e);
    if (!r) {
        free(tmp);
        return fail(&e);
    }
    struct caris_test_restore_result res;
    cli_audit_backup_id(id); /* resolved by open_repo_id */
    int rc = caris_test_restore(r, &o, &res, &e);
    progress_end(g);
    repo_close(r);
    free(tmp);
    if (g->json && res.ran) {
        json_t *j = caris_test_restore_result_to_json(&res);
        if (rc < 0 && err_is_set(&e)) /* the error object, as above */
            json_object_set_new(j, "error", cli_err_to_json(&e));
        print_json(j);
        json_decref(j);
    } else if (res.ran && !g->quiet && res.scratch_name[0]) {
        char rms[32], vms[32];
        cli_human_duration(res.restore_ms, rms, sizeof(rms));
        cli_human_duration(res.verify_ms, vms, sizeof(vms));
        printf("test restore of %s: %s (scratch %s %s: restore %s, verify %s, %zu tables)\n",
               o.backup_id, res.ok ? "PASSED" : "FAILED",
               res.scratch == DB_SCRATCH_LOCAL ? "local" : "database", res.scratch_name, rms, vms,
               json_array_size(res.tables));
        if (!res.ok)
            print_counts(res.tables);
    }
    caris_test_restore_result_free(&res);
    return rc == 0 ? 0 : fail(&e);
}

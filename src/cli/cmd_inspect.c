/* Inspect commands: show, ls, dump, diff, find. Parse, call the services of caris/inspect.h,
 * print. Also the id resolution every command that takes a backup id goes through. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/inspect.h"
#include "caris/op.h"
#include "caris/retention.h"

#include "cli.h"

struct repo *open_repo_id(struct globals *g, const char *text, const char *kind,
                          char id[CARIS_ID_MAX], struct err *e)
{
    struct repo *r = open_repo(g, false, e);
    if (r && caris_backup_resolve(r, text, kind, id, e) != 0) {
        repo_close(r);
        return NULL;
    }
    return r;
}

/* ---- human output -------------------------------------------------------------------- */

static void mode_string(const struct fs_meta *m, char out[11])
{
    static const char types[] = {
        [FS_REG] = '-', [FS_DIR] = 'd', [FS_SYMLINK] = 'l', [FS_HARDLINK] = 'h', [FS_FIFO] = 'p'};
    out[0] = types[m->type] ? types[m->type] : '?';
    const char *rwx = "rwxrwxrwx";
    for (int i = 0; i < 9; i++)
        out[1 + i] = (m->mode & (0400u >> i)) ? rwx[i] : '-';
    if (m->mode & 04000)
        out[3] = (m->mode & 0100) ? 's' : 'S';
    if (m->mode & 02000)
        out[6] = (m->mode & 0010) ? 's' : 'S';
    if (m->mode & 01000)
        out[9] = (m->mode & 0001) ? 't' : 'T';
    out[10] = '\0';
}

static void print_path(const char *p, size_t len)
{
    char esc[8192];
    fputs(str_escape(p, len, esc, sizeof(esc)), stdout);
}

static void print_ls_entry(const struct caris_ls_entry *x, bool lng)
{
    if (lng) {
        char mode[11], when[40], owner[80], group[80];
        mode_string(&x->meta, mode);
        cli_human_time(x->meta.mtime_sec, when, sizeof(when));
        if (x->meta.user)
            str_escape(x->meta.user, strlen(x->meta.user), owner, sizeof(owner));
        else
            snprintf(owner, sizeof(owner), "%u", x->meta.uid);
        if (x->meta.group)
            str_escape(x->meta.group, strlen(x->meta.group), group, sizeof(group));
        else
            snprintf(group, sizeof(group), "%u", x->meta.gid);
        printf("%s %-8s %-8s %12llu %s  ", mode, owner, group,
               (unsigned long long)((x->meta.type == FS_REG || x->meta.type == FS_HARDLINK)
                                        ? x->meta.size
                                        : 0),
               when);
    }
    print_path(x->path, x->path_len);
    if (lng && x->meta.link) {
        fputs(x->meta.type == FS_HARDLINK ? " => " : " -> ", stdout);
        print_path(x->meta.link, strlen(x->meta.link));
    }
    if (lng && x->error)
        printf("  (not read at backup time: %s)", x->error);
    putchar('\n');
}

/* Options of a subcommand: --json is accepted after the command word too. */
#define OPT_JSON 1000

/* ---- show ---------------------------------------------------------------------------- */

static const char SHOW_USAGE[] =
    "usage: caris-backup [--json] show ID\n"
    "\n"
    "Shows a backup: its summary, its roots (file backups) or database, every warning with\n"
    "its full path, and the history of its test restores and verifications.\n"
    "ID is a backup id, a unique prefix of one, `latest`, `latest:files` or\n"
    "`latest:database`.\n";

static void print_show(const struct caris_show *s)
{
    json_t *m = s->summary;
    json_t *st = json_object_get(m, "stats");
    const char *kind = json_string_value(json_object_get(m, "kind")) ?: "?";
    char when[40], dur[32], a[32], b[32], c[32];
    cli_human_iso(json_string_value(json_object_get(m, "started")), when, sizeof(when));
    cli_human_duration(json_integer_value(json_object_get(m, "duration_ms")), dur, sizeof(dur));
    printf("backup    %s\n", s->id);
    printf("kind      %s, %s\n", kind, json_string_value(json_object_get(m, "mode")) ?: "?");
    if (json_object_get(m, "parent"))
        printf("based on  %s\n", json_string_value(json_object_get(m, "parent")));
    printf("started   %s (took %s)\n", when, dur);
    if (json_object_get(m, "host"))
        printf("host      %s\n", json_string_value(json_object_get(m, "host")));
    printf("status    %s\n", json_string_value(json_object_get(m, "status")) ?: "?");
    size_t i;
    json_t *x;
    if (strcmp(kind, "files") == 0) {
        json_array_foreach(json_object_get(m, "roots"), i, x)
            printf("%s %s\n", i ? "         " : "roots    ", json_string_value(x));
        str_human_bytes((uint64_t)json_integer_value(json_object_get(st, "bytes_total")), a,
                        sizeof(a));
        str_human_bytes((uint64_t)json_integer_value(json_object_get(st, "bytes_added")), b,
                        sizeof(b));
        str_human_bytes((uint64_t)json_integer_value(json_object_get(st, "bytes_stored")), c,
                        sizeof(c));
        printf("content   %lld files (%lld unchanged), %lld dirs, %lld symlinks, %lld other; "
               "%s\n",
               json_integer_value(json_object_get(st, "files")),
               json_integer_value(json_object_get(st, "files_unchanged")),
               json_integer_value(json_object_get(st, "dirs")),
               json_integer_value(json_object_get(st, "symlinks")),
               json_integer_value(json_object_get(st, "other")), a);
        printf("stored    new data %s, written %s\n", b, c);
    } else if (json_object_get(m, "physical")) {
        /* a base backup of the whole cluster: no dump, no table list */
        json_t *ph = json_object_get(m, "physical");
        str_human_bytes((uint64_t)json_integer_value(json_object_get(st, "bytes_read")), a,
                        sizeof(a));
        str_human_bytes((uint64_t)json_integer_value(json_object_get(st, "bytes_stored")), b,
                        sizeof(b));
        printf("cluster   PostgreSQL %s, system identifier %s, timeline %lld\n",
               json_string_value(json_object_get(m, "server_version")) ?: "?",
               json_string_value(json_object_get(ph, "system_identifier")) ?: "?",
               json_integer_value(json_object_get(ph, "timeline")));
        printf("WAL       %s (start %s)\n",
               json_string_value(json_object_get(m, "lsn_range")) ?: "?",
               json_string_value(json_object_get(ph, "start_time")) ?: "?");
        printf("content   %lld files, %s read; written %s\n",
               json_integer_value(json_object_get(st, "files")), a, b);
    } else {
        str_human_bytes((uint64_t)json_integer_value(json_object_get(m, "dump_size")), a,
                        sizeof(a));
        str_human_bytes((uint64_t)json_integer_value(json_object_get(m, "database_size")), b,
                        sizeof(b));
        printf("database  %s (PostgreSQL %s, %s on the server)\n",
               json_string_value(json_object_get(m, "database")) ?: "?",
               json_string_value(json_object_get(m, "server_version")) ?: "?", b);
        printf("dump      %s, %zu tables\n", a, json_array_size(json_object_get(m, "tables")));
    }
    json_t *ws = json_object_get(m, "warnings");
    json_int_t nw = json_integer_value(json_object_get(m, "warnings_count"));
    if (json_array_size(ws) || nw) {
        printf("warnings  %lld\n", (long long)(nw ? nw : (json_int_t)json_array_size(ws)));
        json_array_foreach(ws, i, x)
        {
            char *p;
            size_t pl;
            printf("  ");
            if (caris_json_bytes(x, "fullPath", &p, &pl) == 0) {
                print_path(p, pl);
                free(p);
            } else {
                printf("%s", json_string_value(json_object_get(x, "path")) ?: "?");
            }
            printf(": %s\n", json_string_value(json_object_get(x, "message")) ?: "");
        }
        if (nw > (json_int_t)json_array_size(ws))
            printf("  (%lld more not kept in the summary)\n",
                   (long long)(nw - (json_int_t)json_array_size(ws)));
    }
    printf("test restores:%s\n", json_array_size(s->testRestores) ? "" : " none");
    json_array_foreach(s->testRestores, i, x)
    {
        cli_human_iso(json_string_value(json_object_get(x, "time")), when, sizeof(when));
        cli_human_duration(json_integer_value(json_object_get(x, "restore_ms")), a, sizeof(a));
        printf("  %s  %s  (scratch %s, restore %s)%s%s\n", when,
               json_is_true(json_object_get(x, "ok")) ? "PASSED" : "FAILED",
               json_string_value(json_object_get(x, "scratch")) ?: "?", a,
               json_object_get(x, "error") ? ": " : "",
               json_string_value(json_object_get(x, "error")) ?: "");
    }
    printf("verifications:%s\n", json_array_size(s->verifications) ? "" : " none recorded");
    json_array_foreach(s->verifications, i, x)
    {
        cli_human_iso(json_string_value(json_object_get(x, "time")), when, sizeof(when));
        printf("  %s  %s\n", when,
               json_is_true(json_object_get(x, "valid")) || json_is_true(json_object_get(x, "ok"))
                   ? "valid"
                   : "DAMAGED");
    }
}

int cmd_show(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, OPT_JSON}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c == 'h') {
            fputs(SHOW_USAGE, stdout);
            return 0;
        } else if (c == OPT_JSON) {
            g->json = true;
        } else {
            return cli_opt_fail();
        }
    }
    if (optind != argc - 1)
        return usage_error("show needs exactly one backup id%s", NULL);
    struct err e = ERR_INIT;
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_show s;
    int rc = caris_backup_show(r, argv[optind], &s, &e);
    repo_close(r);
    if (rc != 0)
        return fail(&e);
    if (g->json) {
        json_t *j = caris_show_to_json(&s);
        print_json(j);
        json_decref(j);
    } else {
        print_show(&s);
    }
    caris_show_free(&s);
    return 0;
}

/* ---- ls ------------------------------------------------------------------------------ */

static const char LS_USAGE[] =
    "usage: caris-backup [--json] ls ID [PATH] [--long] [--recursive]\n"
    "\n"
    "Lists what a backup holds. For a file backup: each root and what is directly in it, or\n"
    "PATH and what is directly in it; --recursive: everything below. Paths are shown as they\n"
    "were backed up (the root's absolute path, then the path below it): give them as they\n"
    "are shown to `dump`, `restore files --include` or `ls`. PATH may also be relative to a\n"
    "root (`docs/a.txt`).\n"
    "--long (-l): type and permissions, owner, group, size, modification time (BACKUP_TZ),\n"
    "symlink targets (->) and hard links (=>, with the first name).\n"
    "For a database backup: its streams (database.dump, globals.sql) and every table with\n"
    "its row count at backup time.\n"
    "ID: a backup id, a unique prefix, `latest`, `latest:files` or `latest:database`.\n";

int cmd_ls(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"long", no_argument, 0, 'l'},
                                         {"recursive", no_argument, 0, 'R'},
                                         {"json", no_argument, 0, OPT_JSON},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    struct caris_ls_opts o = {0};
    bool lng = false;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "hlR", opts)) != -1) {
        switch (c) {
        case 'l':
            lng = true;
            break;
        case 'R':
            o.recursive = true;
            break;
        case OPT_JSON:
            g->json = true;
            break;
        case 'h':
            fputs(LS_USAGE, stdout);
            return 0;
        default:
            return cli_opt_fail();
        }
    }
    if (optind != argc - 1 && optind != argc - 2)
        return usage_error("ls needs a backup id and at most one path%s", NULL);
    o.path = optind == argc - 2 ? argv[optind + 1] : NULL;
    struct err e = ERR_INIT;
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_ls_result res;
    int rc = caris_backup_ls(r, argv[optind], &o, &res, &e);
    repo_close(r);
    if (rc != 0)
        return fail(&e);
    if (g->json) {
        json_t *j = caris_ls_to_json(&res);
        print_json(j);
        json_decref(j);
    } else if (strcmp(res.kind, "files") == 0) {
        for (size_t i = 0; i < res.nentries; i++)
            print_ls_entry(&res.entries[i], lng);
    } else {
        size_t i;
        json_t *x;
        printf("streams:\n");
        json_array_foreach(res.streams, i, x)
        {
            char sz[32];
            str_human_bytes((uint64_t)json_integer_value(json_object_get(x, "size")), sz,
                            sizeof(sz));
            printf("  %-20s %12s  sha256 %s\n",
                   json_string_value(json_object_get(x, "name")) ?: "?", sz,
                   json_string_value(json_object_get(x, "sha256")) ?: "?");
        }
        if (!res.tables)
            printf("tables: not recorded in this backup's summary; `caris-backup dump %s "
                   "database.dump | pg_restore -l` lists what the dump holds\n",
                   res.id);
        else
            printf("tables (rows at backup time):%s\n", json_array_size(res.tables) ? "" : " none");
        json_array_foreach(res.tables, i, x)
        {
            char name[300];
            snprintf(name, sizeof(name), "%s.%s",
                     json_string_value(json_object_get(x, "schema")) ?: "?",
                     json_string_value(json_object_get(x, "name")) ?: "?");
            printf("  %-40s %12lld\n", name, json_integer_value(json_object_get(x, "rows")));
        }
    }
    caris_ls_result_free(&res);
    return 0;
}

/* ---- dump ---------------------------------------------------------------------------- */

static const char DUMP_USAGE[] =
    "usage: caris-backup dump ID PATH > OUT\n"
    "\n"
    "Writes one file's exact bytes to stdout, or a directory and everything below it as a\n"
    "tar stream (POSIX pax: long and non-UTF-8 names, large files, owners, modes,\n"
    "nanosecond mtimes, xattrs; holes of sparse files as zeros). PATH as `ls` shows it\n"
    "(or relative to a root). A database backup's streams: `dump ID database.dump`\n"
    "(pg_dump -Fc, for pg_restore) or `dump ID globals.sql`.\n"
    "Every chunk is authenticated and its id recomputed before its bytes are written, and\n"
    "each file's SHA-256 is checked against the backup at its end: on damage the command\n"
    "stops with exit 4 and what it wrote must be discarded. Files the backup could not read\n"
    "are left out of a tar stream with a warning (exit 3), and so are their hard links, and\n"
    "so is an extended attribute whose name holds '=' (no pax record can name it).\n"
    "ID: a backup id, a unique prefix, `latest`, `latest:files` or `latest:database`.\n";

int cmd_dump(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c == 'h') {
            fputs(DUMP_USAGE, stdout);
            return 0;
        }
        return cli_opt_fail();
    }
    if (optind != argc - 2)
        return usage_error("dump needs a backup id and a path%s", NULL);
    /* stdout is the data: an error is said on stderr only, never appended to the bytes */
    cli_set_json_errors(false);
    struct err e = ERR_INIT;
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_op op;
    cli_op_init(g, &op);
    op.progress = NULL;
    struct caris_dump_opts o = {
        .path = argv[optind + 1], .fd = STDOUT_FILENO, .threads = g->threads, .op = &op};
    struct caris_dump_result res;
    int rc = caris_backup_dump(r, argv[optind], &o, &res, &e);
    cli_keep_repo_for_audit(g, r); /* its key derived once: the audit log's head goes in */
    size_t i;
    json_t *w;
    json_array_foreach(res.warnings, i, w)
    {
        char *p;
        size_t pl;
        fputs("warning: ", stderr);
        if (caris_json_bytes(w, "path", &p, &pl) == 0) {
            char esc[4200];
            fputs(str_escape(p, pl, esc, sizeof(esc)), stderr);
            free(p);
        }
        fprintf(stderr, ": %s\n", json_string_value(json_object_get(w, "message")) ?: "");
    }
    caris_dump_result_free(&res);
    if (rc < 0)
        return fail(&e);
    return rc == CARIS_DONE_WARNINGS ? EXIT_WARNINGS : 0;
}

/* ---- diff ---------------------------------------------------------------------------- */

static const char DIFF_USAGE[] =
    "usage: caris-backup [--json] diff ID1 ID2\n"
    "\n"
    "What changed from file backup ID1 to ID2, one line per path in tree order:\n"
    "  +  added       -  removed       M  changed, with what changed:\n"
    "     content (size or SHA-256), mode, owner (uid/gid), mtime, xattrs, type, link\n"
    "A directory whose entries were added or removed has a new mtime too.\n"
    "IDs: backup ids, unique prefixes, or `latest` / `latest:files`.\n";

int cmd_diff(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, OPT_JSON}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c == 'h') {
            fputs(DIFF_USAGE, stdout);
            return 0;
        } else if (c == OPT_JSON) {
            g->json = true;
        } else {
            return cli_opt_fail();
        }
    }
    if (optind != argc - 2)
        return usage_error("diff needs two backup ids%s", NULL);
    struct err e = ERR_INIT;
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_diff_result res;
    int rc = caris_backup_diff(r, argv[optind], argv[optind + 1], &res, &e);
    repo_close(r);
    if (rc != 0)
        return fail(&e);
    if (g->json) {
        json_t *j = caris_diff_to_json(&res);
        print_json(j);
        json_decref(j);
    } else {
        if (!g->quiet)
            printf("comparing %s to %s\n", res.from, res.to);
        for (size_t i = 0; i < res.nitems; i++) {
            const struct caris_diff_item *it = &res.items[i];
            printf("%c  ", it->status);
            print_path(it->path, it->path_len);
            if (it->status == 'M') {
                const char *sep = "  (";
                for (unsigned bit = 1; bit <= CARIS_DIFF_LINK; bit <<= 1)
                    if (it->changes & bit) {
                        printf("%s%s", sep, caris_diff_change_name(bit));
                        sep = ", ";
                    }
                putchar(')');
            }
            putchar('\n');
        }
        if (!g->quiet)
            printf("%zu added, %zu removed, %zu changed\n", res.added, res.removed, res.changed);
    }
    caris_diff_result_free(&res);
    return 0;
}

/* ---- find ---------------------------------------------------------------------------- */

static const char FIND_USAGE[] =
    "usage: caris-backup [--json] find PATTERN [--since TIME] [--until TIME] [--long]\n"
    "\n"
    "Finds entries in every file backup (oldest first) whose name matches PATTERN, a\n"
    "shell glob (quote it): `*.csv`, `report-202?-*`. A PATTERN with a '/' matches the\n"
    "whole path as `ls` shows it (`/srv/files/docs/*`), or the path below a root\n"
    "(`docs/*.csv`); `*` then also matches '/'.\n"
    "--since / --until: only backups started in that range (--until includes its whole\n"
    "second, as start times are shown). TIME: 2024-01-15T03:00:00Z,\n"
    "2024-01-15T04:00:00+01:00, or local time in BACKUP_TZ as 2024-01-15 04:00[:00].\n"
    "--long (-l): as `ls --long`.\n"
    "A backup whose snapshot file is damaged cannot be searched: it is named in a warning\n"
    "(exit 3).\n";

int cmd_find(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"since", required_argument, 0, 's'}, {"until", required_argument, 0, 'u'},
        {"long", no_argument, 0, 'l'},        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    struct caris_find_opts o = {0};
    bool lng = false;
    struct err e = ERR_INIT;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "hl", opts)) != -1) {
        switch (c) {
        case 's':
        case 'u':
            if (caris_time_parse(optarg, config_get(&g->cfg, "BACKUP_TZ"),
                                 c == 's' ? &o.since_ns : &o.until_ns, &e) != 0)
                return fail(&e);
            break;
        case 'l':
            lng = true;
            break;
        case OPT_JSON:
            g->json = true;
            break;
        case 'h':
            fputs(FIND_USAGE, stdout);
            return 0;
        default:
            return cli_opt_fail();
        }
    }
    if (optind != argc - 1)
        return usage_error("find needs one pattern%s (quote it: '*.csv')", NULL);
    o.pattern = argv[optind];
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_op op;
    cli_op_init(g, &op);
    o.op = &op;
    struct caris_find_result res;
    int rc = caris_backup_find(r, &o, &res, &e);
    cli_op_end(&op);
    repo_close(r);
    if (rc < 0)
        return fail(&e);
    if (g->json) {
        json_t *j = caris_find_to_json(&res, o.pattern);
        print_json(j);
        json_decref(j);
    } else {
        size_t last = (size_t)-1;
        for (size_t i = 0; i < res.nmatches; i++) {
            const struct caris_find_match *m = &res.matches[i];
            if (m->backup != last) {
                char when[40];
                cli_human_iso(res.backups[m->backup].started, when, sizeof(when));
                printf("%sbackup %s (%s):\n", last == (size_t)-1 ? "" : "\n",
                       res.backups[m->backup].id, when);
                last = m->backup;
            }
            fputs("  ", stdout);
            print_ls_entry(&m->entry, lng);
        }
        if (!g->quiet)
            printf("%s%zu match%s in %zu file backup%s\n", res.nmatches ? "\n" : "", res.nmatches,
                   res.nmatches == 1 ? "" : "es", res.nbackups, res.nbackups == 1 ? "" : "s");
    }
    /* a damaged snapshot may hold matches: never a quiet "no match" */
    for (size_t i = 0; i < res.nunsearched; i++) {
        const struct caris_find_unsearched *u = &res.unsearched[i];
        if (u->id)
            fprintf(stderr,
                    "warning: backup %s was not searched: its snapshot file %s is damaged (%s)\n",
                    u->id, u->file ? u->file : "?", u->error ? u->error : "");
        else
            fprintf(stderr,
                    "warning: a backup was not searched: its snapshot file %s is damaged (%s)\n",
                    u->file ? u->file : "?", u->error ? u->error : "");
    }
    if (res.nunsearched)
        fprintf(stderr,
                "warning: %zu backup%s could not be searched: matches in %s are not shown "
                "(`list` shows %s as DAMAGED)\n",
                res.nunsearched, res.nunsearched == 1 ? "" : "s",
                res.nunsearched == 1 ? "it" : "them", res.nunsearched == 1 ? "it" : "them");
    caris_find_result_free(&res);
    return rc == CARIS_DONE_WARNINGS ? EXIT_WARNINGS : 0;
}

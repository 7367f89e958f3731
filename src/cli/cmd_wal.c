/* wal push | get | list | receive: the WAL archive (caris/wal.h does the work). */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/crypto.h"
#include "caris/daemon.h"
#include "caris/op.h"
#include "caris/wal.h"
#include "caris/walrecv.h"
#include "caris/walwindow.h"

#include "cli.h"

bool cli_wal_get_absent;
bool cli_wal_get_mode;

static const char WAL_USAGE[] =
    "usage: caris-backup [--env-file F] wal push [--no-daemon] PATH\n"
    "       caris-backup [--env-file F] wal get [--no-daemon] [--strict] [--timeline N]\n"
    "                                        NAME DEST\n"
    "       caris-backup [--json] wal list\n"
    "       caris-backup [--env-file F] wal receive [--slot NAME] [--create-slot]\n"
    "                                            [--flush-seconds N]\n"
    "\n"
    "The WAL archive of point-in-time recovery, for PostgreSQL's settings:\n"
    "  archive_command = 'caris-backup --env-file /etc/caris/backup.env wal push %p'\n"
    "  restore_command = 'caris-backup --env-file /etc/caris/backup.env wal get %f %p'\n"
    "(the env file, mode 0600, holds BACKUP_DIR and BACKUP_ENCRYPTION_KEY: never put the key in\n"
    "the command itself).\n"
    "\n"
    "push  archives the file (segment, .partial, .history or .backup) under its name. Pushing a\n"
    "      file archived before with identical content succeeds; with different content it\n"
    "      fails (exit 4) and the archived file is kept: nothing is ever overwritten.\n"
    "      When the daemon of BACKUP_DIR runs (same user, same repository), the file is handed\n"
    "      to it (its open descriptor, over the control socket): it keeps the repository open\n"
    "      and answers once the file is durably archived, so the exit code is the truth; a\n"
    "      daemon killed meanwhile makes the push fail and PostgreSQL retry it. Without a\n"
    "      daemon (or with --no-daemon) the push opens the repository itself.\n"
    "get   writes the archived file NAME to DEST, checked end to end, or exits 1 without a\n"
    "      word when the archive does not have it (what restore_command must do at the end of\n"
    "      the archive). With --strict (the restore_command `restore database --physical`\n"
    "      writes; never a standby's, which falls back to pg_wal and streaming on exit 1), a\n"
    "      segment from before the first archived one of its timeline (pruned under the\n"
    "      running recovery) is no end: exit 255. Any other failure exits 255 (PostgreSQL\n"
    "      then stops the recovery with\n"
    "      an error rather than ending it early); a damaged file is never written. When the\n"
    "      daemon of BACKUP_DIR\n"
    "      runs, it writes the file (it keeps the repository open and the WAL records read)\n"
    "      into a temporary file beside DEST, renamed once checked; a daemon killed meanwhile\n"
    "      makes the get fail and leaves DEST untouched. --no-daemon: alone.\n"
    "      A segment not archived whole is served from its longest streamed partial (wal\n"
    "      receive), zero-padded, and only up to the point where its timeline ends in the\n"
    "      history of the timeline the recovery follows: --timeline N (what `restore\n"
    "      database --physical --timeline current|N` writes), else the newest timeline the\n"
    "      archive has a .history of (recovery_target_timeline 'latest'). Past that point a\n"
    "      primary's partial holds what a failover discarded.\n"
    "list  the archived files: name, kind, timeline, start LSN, size, SHA-256; then the range\n"
    "      archived per timeline, any gap in it (a segment missing between the first and the\n"
    "      last, or across a .history switch) with the recovery it breaks, and the recovery\n"
    "      window. A name archived twice with different content (two pushes at once) is\n"
    "      named on stderr, exit 4 (damage, as an unreadable record). --json: {files,\n"
    "      damaged, segment_size, timelines, gaps, recovery_window, retention, conflicts}.\n"
    "\n"
    "receive  streams WAL from the server (BACKUP_PG_REPLICATION_URL, else POSTGRES_URL; the\n"
    "      role needs REPLICATION) over the physical replication slot NAME (--slot, else\n"
    "      BACKUP_WAL_SLOT, else caris_backup; --create-slot creates it when missing), from the\n"
    "      slot's position (the start of the segment it holds). Each segment is stored as soon\n"
    "      as it is complete (like push; identical to what archive_command pushes), and every\n"
    "      --flush-seconds N (else BACKUP_WAL_FLUSH_SECONDS, else 5; 1 to 3600) what has\n"
    "      arrived of the current one is stored as a streamed partial, which `wal get` serves\n"
    "      (zero-padded) while the whole segment is not archived: a crash of the server loses\n"
    "      at most the last interval. The server is told as flushed only what is durably\n"
    "      archived, so the slot keeps the rest. Runs until SIGTERM/Ctrl-C (stores the\n"
    "      partial, exit 0). It follows a timeline switch (a promoted standby): the new\n"
    "      timeline's .history is stored and streaming goes on on it.\n"
    "      The daemon runs it when BACKUP_WAL_STREAMING=true.\n";

/* The options of wal push and wal get (--no-daemon, --help), from argv[1]: -1 to go on with
 * the operands at argv[1 + optind], else the exit code (help printed, or a bad option). */
static int wal_opts(int argc, char **argv, bool *alone, bool *strict, uint32_t *follow)
{
    static const struct option opts[] = {{"no-daemon", no_argument, 0, 'n'},
                                         {"strict", no_argument, 0, 's'},
                                         {"timeline", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 0; /* 0, not 1: makes GNU getopt reinitialise */
    while ((c = cli_getopt(argc - 1, argv + 1, "h", opts)) != -1) {
        if (c == 'n')
            *alone = true;
        else if (c == 's' && strict)
            *strict = true;
        else if (c == 't' && follow) {
            char *end;
            errno = 0;
            unsigned long v = strtoul(optarg, &end, 10);
            if (*optarg < '1' || *optarg > '9' || *end || errno || v > UINT32_MAX)
                return usage_error("--timeline is a timeline number (1 or more, decimal as `wal "
                                   "list` shows it), not '%s'",
                                   optarg);
            *follow = (uint32_t)v;
        } else if (c == 'h') {
            fputs(WAL_USAGE, stdout);
            return 0;
        } else
            return cli_opt_fail();
    }
    return -1;
}

static int wal_push(struct globals *g, int argc, char **argv)
{
    bool alone = false;
    int done = wal_opts(argc, argv, &alone, NULL, NULL);
    if (done >= 0)
        return done;
    int rest = argc - 1 - optind;
    if (rest != 1)
        return usage_error("wal push takes one PATH (archive_command's %%p)%s", "");
    const char *path = argv[1 + optind];
    struct err e = ERR_INIT;
    struct caris_wal_push_result res;
    /* a running daemon has the repository open and its key derived: hand it the file */
    int rc = alone ? 1 : caris_daemon_wal_push(&g->cfg, g->repo_path, path, &res, &e);
    bool via_daemon = rc != 1;
    if (rc == 1) {
        struct repo *r = open_repo(g, false, &e);
        if (!r)
            return fail(&e);
        struct caris_op op;
        cli_op_init_archiver(g, &op);
        rc = caris_wal_push(r, path, &op, &res, &e);
        repo_close(r);
    }
    if (rc != 0)
        return fail(&e);
    if (g->json) {
        char hex[65];
        cx_hex(res.sha256, 32, hex);
        json_t *j =
            json_pack("{s:s, s:b, s:I, s:s, s:b}", "path", path, "already_archived", res.already,
                      "bytes", (json_int_t)res.bytes, "sha256", hex, "via_daemon", via_daemon);
        print_json(j);
        json_decref(j);
    }
    return 0;
}

static int wal_get(struct globals *g, int argc, char **argv)
{
    bool alone = false, strict = false;
    uint32_t follow = 0;
    int done = wal_opts(argc, argv, &alone, &strict, &follow);
    if (done >= 0)
        return done;
    if (argc - 1 - optind != 2)
        return usage_error("wal get takes NAME and DEST (restore_command's %%f and %%p)%s", "");
    const char *name = argv[1 + optind], *dest = argv[2 + optind];
    struct err e = ERR_INIT;
    /* a running daemon has the repository open and the WAL records read: it writes the file */
    int rc = alone ? 1 : caris_daemon_wal_get(&g->cfg, g->repo_path, name, dest, follow, &e);
    struct repo *r = NULL;
    if (rc == 1) {
        if (!(r = open_repo(g, false, &e))) {
            /* a wrong key, a missing repository: never "not in the archive" */
            fail(&e);
            return WAL_GET_FATAL_EXIT;
        }
        struct caris_op op;
        cli_op_init_archiver(g, &op);
        rc = caris_wal_get(r, name, dest, follow, &op, &e);
    }
    /* --strict: "not there" ends the recovery only at the archive's end (a segment pruned from
     * under a running recovery stops it instead: caris_wal_absent_check) */
    if (strict && rc != 0 && e.code == ERR_NOT_FOUND && e.sys_errno == 0) {
        struct err se = ERR_INIT;
        if (!r && !(r = open_repo(g, false, &se))) {
            fail(&se);
            return WAL_GET_FATAL_EXIT;
        }
        if (caris_wal_absent_check(r, name, &se) != 0) {
            repo_close(r);
            fail(&se);
            return WAL_GET_FATAL_EXIT;
        }
    }
    repo_close(r);
    if (rc != 0 && e.code == ERR_NOT_FOUND && e.sys_errno == 0) {
        /* PostgreSQL asks for files past the end of the archive as a matter of course: "not
         * there" is an answer, not an error to print. Only the archive's own "not there" (a
         * system error such as ENOENT for DEST's directory is a failure) */
        cli_wal_get_absent = true;
        return 1;
    }
    if (rc != 0) {
        /* Any other failure must stop the recovery, never end it: PostgreSQL takes an exit
         * status up to 125 as "not in the archive", ends recovery there and promotes without
         * the rest of the WAL; above 125 it stops with a FATAL error (docs: restore_command). */
        fail(&e);
        return WAL_GET_FATAL_EXIT;
    }
    return 0;
}

static int wal_list(struct globals *g, int argc, char **argv)
{
    if (argc != 2)
        return usage_error("unexpected argument '%s' for wal list", argv[2]);
    struct err e = ERR_INIT;
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    json_t *damaged = NULL;
    json_t *list = caris_wal_list(r, &damaged, &e);
    /* the range per timeline, the gaps and the recovery window (records read once more) */
    json_t *window = list ? caris_wal_window(r, NULL, &e) : NULL;
    repo_close(r);
    if (!list || !window) {
        json_decref(list);
        json_decref(damaged);
        return fail(&e);
    }
    if (g->json) {
        json_t *j = json_pack("{s:o, s:O}", "files", list, "damaged", damaged);
        json_object_update(j, window);
        print_json(j);
        json_decref(j);
    } else {
        size_t i;
        json_t *x;
        json_array_foreach(list, i, x)
            printf("%-40s %-8s tli %-3lld %-12s %10lld %.16s\n",
                   json_string_value(json_object_get(x, "name")),
                   json_string_value(json_object_get(x, "kind")),
                   (long long)json_integer_value(json_object_get(x, "timeline")),
                   json_string_value(json_object_get(x, "start_lsn")) ?: "-",
                   (long long)json_integer_value(json_object_get(x, "size")),
                   json_string_value(json_object_get(x, "sha256")));
        json_decref(list);
        json_array_foreach(json_object_get(window, "timelines"), i, x)
        {
            printf("timeline %lld: ",
                   (long long)json_integer_value(json_object_get(x, "timeline")));
            if (json_integer_value(json_object_get(x, "segments")))
                printf("%s .. %s (%lld segments, %s .. %s)",
                       json_string_value(json_object_get(x, "first")),
                       json_string_value(json_object_get(x, "last")),
                       (long long)json_integer_value(json_object_get(x, "segments")),
                       json_string_value(json_object_get(x, "start_lsn")),
                       json_string_value(json_object_get(x, "end_lsn")));
            else
                printf("no segment");
            if (json_is_integer(json_object_get(x, "parent")))
                printf(", branched off timeline %lld at %s",
                       (long long)json_integer_value(json_object_get(x, "parent")),
                       json_string_value(json_object_get(x, "switch_lsn")));
            printf("\n");
            size_t k;
            json_t *gap;
            json_array_foreach(json_object_get(x, "gaps"), k, gap)
                printf("  GAP %s .. %s (%lld segments, %s): %s\n",
                       json_string_value(json_object_get(gap, "from")),
                       json_string_value(json_object_get(gap, "to")),
                       (long long)json_integer_value(json_object_get(gap, "segments")),
                       json_string_value(json_object_get(gap, "reason")),
                       json_string_value(json_object_get(gap, "breaks")));
        }
        json_t *rw = json_object_get(window, "recovery_window");
        if (json_is_string(json_object_get(rw, "earliest")))
            printf("recovery window: %s .. %s\n",
                   json_string_value(json_object_get(rw, "earliest")),
                   json_string_value(json_object_get(rw, "latest")));
        else
            printf("recovery window: none (%s)\n",
                   json_string_value(json_object_get(rw, "reason")) ?: "?");
        json_array_foreach(damaged, i, x) fprintf(stderr, "damaged WAL record %s: %s\n",
                                                  json_string_value(json_object_get(x, "object")),
                                                  json_string_value(json_object_get(x, "error")));
        json_array_foreach(json_object_get(window, "conflicts"), i, x)
        {
            char msg[400];
            caris_wal_conflict_text(x, msg, sizeof(msg));
            fprintf(stderr, "WAL file %s is %s\n", json_string_value(json_object_get(x, "name")),
                    msg);
        }
    }
    int code =
        json_array_size(damaged) || json_array_size(json_object_get(window, "conflicts")) ? 4 : 0;
    json_decref(damaged);
    json_decref(window);
    return code;
}

static int wal_receive(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"slot", required_argument, 0, 's'},
                                         {"create-slot", no_argument, 0, 'c'},
                                         {"flush-seconds", required_argument, 0, 'f'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    struct wal_receive_opts o = {.slot = config_get(&g->cfg, "BACKUP_WAL_SLOT")};
    if (!o.slot || !*o.slot)
        o.slot = "caris_backup";
    const char *flush = config_get(&g->cfg, "BACKUP_WAL_FLUSH_SECONDS");
    struct err e = ERR_INIT;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc - 1, argv + 1, "h", opts)) != -1) {
        if (c == 's')
            o.slot = optarg;
        else if (c == 'c')
            o.create_slot = true;
        else if (c == 'f')
            flush = optarg;
        else if (c == 'h') {
            fputs(WAL_USAGE, stdout);
            return 0;
        } else
            return cli_opt_fail();
    }
    if (argc - 1 - optind != 0)
        return usage_error("unexpected argument '%s' for wal receive", argv[1 + optind]);
    o.flush_seconds = 5;
    if (flush && *flush && caris_wal_flush_seconds_parse(flush, &o.flush_seconds, &e) != 0)
        return fail(&e);
    /* a slot name is [a-z0-9_], at most 63 characters (PostgreSQL's rule) */
    size_t n = strlen(o.slot);
    if (n == 0 || n > 63 || strspn(o.slot, "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
        return usage_error("--slot '%s': a slot name is lower-case letters, digits and _", o.slot);
    o.url = config_get(&g->cfg, "BACKUP_PG_REPLICATION_URL");
    o.url_var = "BACKUP_PG_REPLICATION_URL";
    if (!o.url || !*o.url) {
        o.url = config_get(&g->cfg, "POSTGRES_URL");
        o.url_var = "POSTGRES_URL";
    }
    o.password = config_get(&g->cfg, "PGPASSWORD");
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_op op;
    cli_op_init_archiver(g, &op);
    o.op = &op;
    int rc = caris_wal_receive(r, &o, &e);
    repo_close(r);
    return rc != 0 ? fail(&e) : 0;
}

int cmd_wal(struct globals *g, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_missing(WAL_USAGE, "wal needs a subcommand: push, get or list");
    if (wants_help(argc, argv)) {
        fputs(WAL_USAGE, stdout);
        return 0;
    }
    if (strcmp(argv[1], "push") == 0)
        return wal_push(g, argc, argv);
    if (strcmp(argv[1], "get") == 0)
        return wal_get(g, argc, argv);
    if (strcmp(argv[1], "list") == 0)
        return wal_list(g, argc, argv);
    if (strcmp(argv[1], "receive") == 0)
        return wal_receive(g, argc, argv);
    return usage_error("unknown wal command '%s' (push, get, list)", argv[1]);
}

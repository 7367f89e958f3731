/* backup database --physical, restore database --physical (caris/pitr.h does the work). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caris/audit.h"
#include "caris/core.h"
#include "caris/pitr.h"
#include "caris/storage.h"

#include "cli.h"

static const char PBACKUP_USAGE[] =
    "usage: caris-backup [--json] backup database --physical [--full|--incremental]\n"
    "                [--spread-checkpoint] [--time TIME] [--archive-timeout S | "
    "--no-archive-check]\n"
    "\n"
    "Takes a base backup of the whole cluster over the streaming replication protocol\n"
    "(BASE_BACKUP, PostgreSQL 15 or later) and streams every file straight into the\n"
    "repository: no copy on local disk. Relation files are cut into fixed 256 KiB blocks at\n"
    "page boundaries, so a later backup stores only the blocks that changed. When the cluster\n"
    "has data checksums, every page is checked and a bad one reported (file, block): the\n"
    "backup completes with warnings (exit 3). WAL is not in the backup: the server must\n"
    "archive it with `caris-backup wal push` (archive_mode = on), which is checked: once\n"
    "the files are read, the backup waits until the WAL from its start to its end is in this\n"
    "repository's WAL archive, and fails (nothing kept) when it does not arrive in time.\n"
    "\n"
    "  --full               (the default) a full base backup\n"
    "  --incremental        on the latest physical backup of the same cluster: a changed\n"
    "                       block is stored as the pages that differ from the earlier\n"
    "                       block (a page delta); without an earlier one, a full backup\n"
    "  --spread-checkpoint  let the server spread its starting checkpoint (default: fast)\n"
    "  --time TIME          record TIME as the backup's time (as for logical backups)\n"
    "  --archive-timeout S  wait at most S (default 60 s) for the backup's WAL in the archive\n"
    "  --no-archive-check   do not wait for it (a warning in the summary, exit 3): the backup\n"
    "                       restores only if its WAL reaches the archive some other way\n"
    "\n"
    "The connection: BACKUP_PG_REPLICATION_URL, else POSTGRES_URL, with replication=true\n"
    "added. The role needs the REPLICATION attribute and pg_hba.conf a `replication` line.\n";

static const char PRESTORE_USAGE[] =
    "usage: caris-backup --env-file F [--json] restore database --physical --pgdata DIR [ID]\n"
    "          [--to-time T | --to-lsn L | --to-xid X | --to-name N | --to-immediate]\n"
    "          [--target-action promote|pause|shutdown] [--timeline latest|current|N]\n"
    "          [--overwrite] [--start --port P [--wait SECONDS]]\n"
    "\n"
    "Writes the data directory of a physical backup (without ID: the latest one that ends\n"
    "before the target), every file checked against its SHA-256, into a directory beside DIR\n"
    "that is renamed into place at the end; then recovery.signal and, in\n"
    "postgresql.auto.conf, restore_command = '<this program> --env-file F --repo R wal get\n"
    "--strict %f %p' (with --timeline current|N: `--timeline N` before %f; R: the\n"
    "repository restored from; F, mode 0600, holds BACKUP_DIR and\n"
    "BACKUP_ENCRYPTION_KEY: the key is never written into the settings), the recovery target,\n"
    "and archive_mode = 'off' (turn it on again once the restored server is checked).\n"
    "\n"
    "  --pgdata DIR          the data directory to write (a missing or empty directory)\n"
    "  --overwrite           replace a non-empty DIR (its server must be stopped; never one\n"
    "                        that holds the repository, BACKUP_DIR or the env file)\n"
    "  --to-time T           recover to time T (e.g. 2026-11-30T14:05:00Z, or local time)\n"
    "  --to-lsn L            ... to WAL position L (e.g. 0/3000060)\n"
    "  --to-xid X            ... to the commit of transaction X\n"
    "  --to-name N           ... to the restore point N (pg_create_restore_point; 1-63 bytes)\n"
    "  --to-immediate        ... to the end of the base backup (the first consistent point)\n"
    "                        Without a target: replay all archived WAL.\n"
    "  --target-action A     at the target: promote (default), pause or shutdown\n"
    "  --timeline TL         the timeline recovery follows: latest (default: the newest\n"
    "                        timeline in the WAL archive, e.g. after an earlier PITR or a\n"
    "                        promotion), current (the backup's own) or a number (decimal,\n"
    "                        as wal list shows it). Without ID, only a backup on that\n"
    "                        timeline's history is chosen.\n"
    "  --start               start PostgreSQL on DIR (pg_ctl, as the current user, not root),\n"
    "                        listening on its socket in DIR only, and wait until recovery has\n"
    "                        reached the target; report the time of the last replayed commit.\n"
    "                        POSTGRES_URL's user and password are used to ask it. Without\n"
    "                        a target, a recovery that promoted before the last segment\n"
    "                        archived (one archived damaged ends it) fails (exit 4) and the\n"
    "                        server is stopped.\n"
    "  --port P              the port of the started server (required with --start)\n"
    "  --wait SECONDS        give up waiting after SECONDS (default 600)\n"
    "\n"
    "Exit 2 for usage errors (a non-empty DIR without --overwrite), 4 when a file of the\n"
    "backup is damaged (nothing is put in place) or when recovery would run into a gap in\n"
    "the WAL archive without a target or with --to-lsn at or after it (nothing is written;\n"
    "--to-lsn before the gap accepts the loss) or, with --start, ends at or before the\n"
    "start of the last segment archived (DIR is kept), 10 when the started server fails.\n";

bool has_physical(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--physical") == 0)
            return true;
    return false;
}

static void print_phys_summary(const struct globals *g, const struct caris_backup_result *res)
{
    if (print_backup_json(g, res))
        return;
    json_t *s = res->summary;
    json_t *phys = json_object_get(s, "physical");
    char read[32], added[32], stored[32], dur[32];
    cli_human_duration(res->duration_ms, dur, sizeof(dur));
    str_human_bytes(res->bytes_read, read, sizeof(read));
    str_human_bytes(res->bytes_added, added, sizeof(added));
    str_human_bytes(res->bytes_stored, stored, sizeof(stored));
    printf("backup %s %s\n", res->id, res->warnings ? "completed with warnings" : "completed");
    printf("  physical base backup of PostgreSQL %s (system %s, timeline %lld), LSN %s to %s\n",
           res->server_version, json_string_value(json_object_get(phys, "system_identifier")),
           (long long)json_integer_value(json_object_get(phys, "timeline")),
           json_string_value(json_object_get(phys, "start_lsn")),
           json_string_value(json_object_get(phys, "stop_lsn")));
    printf("  %llu files, read %s, new data %s, stored %s, %s; data checksums %s",
           (unsigned long long)res->files, read, added, stored, dur,
           json_is_true(json_object_get(phys, "data_checksums")) ? "on" : "off");
    if (json_is_true(json_object_get(phys, "data_checksums")))
        printf(" (%lld pages checked, %lld bad)",
               (long long)json_integer_value(json_object_get(phys, "pages_checked")),
               (long long)json_integer_value(json_object_get(phys, "bad_pages")));
    if (json_integer_value(json_object_get(phys, "pages_skipped_recent")) > 0)
        printf("; %lld pages written during the backup (rewritten by WAL replay)",
               (long long)json_integer_value(json_object_get(phys, "pages_skipped_recent")));
    printf("\n");
    json_t *ac = json_object_get(phys, "archive_check");
    const char *acs = json_string_value(json_object_get(ac, "status"));
    if (acs && strcmp(acs, "ok") == 0)
        printf("  WAL %s..%s in the archive\n", json_string_value(json_object_get(ac, "first")),
               json_string_value(json_object_get(ac, "last")));
    else if (acs)
        printf("  WAL archive not checked (--no-archive-check)\n");
    const char *parent = json_string_value(json_object_get(s, "parent"));
    if (parent)
        printf("  incremental on %s: %lld blocks stored as page deltas (%lld pages)\n", parent,
               (long long)json_integer_value(json_object_get(phys, "delta_blocks")),
               (long long)json_integer_value(json_object_get(phys, "delta_pages")));
}

int cmd_backup_physical(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"physical", no_argument, 0, 'P'},
                                         {"full", no_argument, 0, 'F'},
                                         {"incremental", no_argument, 0, 'I'},
                                         {"spread-checkpoint", no_argument, 0, 's'},
                                         {"time", required_argument, 0, 'T'},
                                         {"archive-timeout", required_argument, 0, 'A'},
                                         {"no-archive-check", no_argument, 0, 'N'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    struct phys_backup_opts o = {.threads = g->threads};
    char mode_seen = 0;
    struct err e = ERR_INIT;
    int c;
    int sargc = argc - 1;
    char **sargv = argv + 1;
    optind = 0;
    while ((c = cli_getopt(sargc, sargv, "h", opts)) != -1) {
        switch (c) {
        case 'P':
            break;
        case 'F':
        case 'I':
            if ((c = cli_backup_mode(&mode_seen, (char)c)) != 0)
                return c;
            o.incremental = mode_seen == 'I';
            break;
        case 's':
            o.spread_checkpoint = true;
            break;
        case 'T':
            if (backup_time_option(g, optarg, &o.time_ns, &e) != 0)
                return fail(&e);
            break;
        case 'A': {
            int64_t ms = cli_parse_duration_ms(optarg);
            if (ms <= 0 || ms > 86400000)
                return usage_error("--archive-timeout takes a duration up to a day (60, 5m), "
                                   "got '%s'",
                                   optarg);
            o.archive_timeout_s = (int)((ms + 999) / 1000);
            break;
        }
        case 'N':
            o.no_archive_check = true;
            break;
        case 'h':
            fputs(PBACKUP_USAGE, stdout);
            return 0;
        default:
            return cli_opt_fail();
        }
    }
    /* quoted as the audit log keeps it: a connection URL typed here may carry a password */
    char red[256];
    if (optind < sargc)
        return usage_error("unexpected argument '%s' for backup database --physical",
                           caris_audit_redact_arg(sargv[optind], red, sizeof(red)));
    o.url = config_get(&g->cfg, "BACKUP_PG_REPLICATION_URL");
    if (!o.url || !*o.url)
        o.url = config_get(&g->cfg, "POSTGRES_URL");
    o.password = config_get(&g->cfg, "PGPASSWORD");
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_op op;
    cli_op_init_service(g, &op);
    o.op = &op;
    o.progress = progress_fn(g);
    struct caris_backup_result res;
    int rc = caris_phys_backup(r, &o, &res, &e);
    progress_end(g);
    repo_close(r);
    if (rc < 0)
        return fail(&e);
    print_phys_summary(g, &res);
    caris_backup_result_free(&res);
    return rc == CARIS_DONE_WARNINGS ? EXIT_WARNINGS : 0;
}

/* A path for restore_command: absolute, without a quote (it goes into a shell command). */
static int command_path(const char *in, char out[PATH_MAX], const char *what, struct err *e)
{
    if (!realpath(in, out))
        return err_sys(e, errno, NULL, "cannot resolve %s %s", what, in);
    if (strpbrk(out, "'\\\n"))
        return err_set(e, ERR_USAGE, NULL, "%s %s has a quote or backslash in its path", what, out);
    return 0;
}

/* s with every % doubled (new string): PostgreSQL replaces %f, %p, %r and %% anywhere in
 * restore_command, inside quotes too, so a path holding one of them would name another file */
static char *command_percent_escape(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += *p == '%' ? 2 : 1;
    char *out = xmalloc(n + 1), *q = out;
    for (const char *p = s; *p; p++) {
        *q++ = *p;
        if (*p == '%')
            *q++ = '%';
    }
    *q = '\0';
    return out;
}

int cmd_restore_physical(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"physical", no_argument, 0, 'P'},       {"pgdata", required_argument, 0, 'D'},
        {"to-time", required_argument, 0, 't'},  {"to-lsn", required_argument, 0, 'l'},
        {"to-xid", required_argument, 0, 'x'},   {"to-name", required_argument, 0, 'n'},
        {"to-immediate", no_argument, 0, 'i'},   {"target-action", required_argument, 0, 'a'},
        {"overwrite", no_argument, 0, 'o'},      {"start", no_argument, 0, 's'},
        {"port", required_argument, 0, 'p'},     {"wait", required_argument, 0, 'w'},
        {"timeline", required_argument, 0, 'T'}, {"dry-run", no_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    struct phys_restore_opts o = {.threads = g->threads};
    struct err e = ERR_INIT;
    int c, ntargets = 0;
    int sargc = argc - 1;
    char **sargv = argv + 1;
    optind = 0;
    while ((c = cli_getopt(sargc, sargv, "h", opts)) != -1) {
        switch (c) {
        case 'P':
            break;
        case 'D':
            if (cli_set_once("--pgdata", &o.pgdata, optarg) != 0)
                return 2;
            break;
        case 't':
            o.target = PHYS_TARGET_TIME;
            o.target_value = optarg;
            ntargets++;
            if (phys_time_parse(optarg, config_get(&g->cfg, "BACKUP_TZ"), &o.target_time_ns, &e) !=
                0) {
                e.code = ERR_USAGE;
                return fail(&e);
            }
            break;
        case 'l':
            o.target = PHYS_TARGET_LSN;
            o.target_value = optarg;
            ntargets++;
            if (caris_lsn_parse(optarg, &o.target_lsn) != 0)
                return usage_error("--to-lsn takes a WAL position like 0/3000060, got '%s'",
                                   optarg);
            break;
        case 'x':
            o.target = PHYS_TARGET_XID;
            o.target_value = optarg;
            ntargets++;
            if (!*optarg || strspn(optarg, "0123456789") != strlen(optarg))
                return usage_error("--to-xid takes a transaction id (a number), got '%s'", optarg);
            break;
        case 'n':
            o.target = PHYS_TARGET_NAME;
            o.target_value = optarg;
            ntargets++;
            break;
        case 'i':
            o.target = PHYS_TARGET_IMMEDIATE;
            ntargets++;
            break;
        case 'a':
            if (strcmp(optarg, "promote") && strcmp(optarg, "pause") && strcmp(optarg, "shutdown"))
                return usage_error("--target-action is promote, pause or shutdown, not '%s'",
                                   optarg);
            o.target_action = optarg;
            break;
        case 'T':
            /* decimal without a leading zero: PostgreSQL would read 010 as octal (8) */
            if (strcmp(optarg, "latest") && strcmp(optarg, "current") &&
                (*optarg < '1' || *optarg > '9' || strspn(optarg, "0123456789") != strlen(optarg) ||
                 strlen(optarg) > 10))
                return usage_error("--timeline is latest, current or a timeline number (1 or "
                                   "more, decimal as `caris-backup wal list` shows it: 00000010 "
                                   "in a WAL file name is timeline 16), not '%s'",
                                   optarg);
            o.target_timeline = optarg;
            break;
        case 'o':
            o.overwrite = true;
            break;
        case 's':
            o.start = true;
            break;
        case 'p': {
            unsigned long long v;
            if (cli_parse_uint(optarg, 1, 65535, &v) != 0)
                return usage_error("--port takes a TCP port, got '%s'", optarg);
            o.port = (int)v;
            break;
        }
        case 'w': {
            int64_t ms = cli_parse_duration_ms(optarg);
            if (ms <= 0)
                return usage_error("--wait takes a duration (90, 5m), got '%s'", optarg);
            o.wait_seconds = (int)((ms + 999) / 1000);
            break;
        }
        case 'd':
            /* known to `restore database` (DRY_RUN=true restore-database.sh gives it): said as
             * what it is, not as an unknown option */
            return usage_error("restore database --physical has no %s: it writes only into "
                               "--pgdata DIR (an empty or new one unless --overwrite); to try "
                               "it, restore into a new directory",
                               "--dry-run");
        case 'h':
            fputs(PRESTORE_USAGE, stdout);
            return 0;
        default:
            return cli_opt_fail();
        }
    }
    if (ntargets > 1)
        return usage_error("give one recovery target (--to-time, --to-lsn, --to-xid, --to-name "
                           "or --to-immediate)%s",
                           "");
    if (o.target_action && o.target == PHYS_TARGET_NONE)
        return usage_error("--target-action needs a recovery target (--to-...)%s", "");
    if (!o.pgdata)
        return usage_error("restore database --physical needs --pgdata DIR%s", "");
    if (o.start && !o.port)
        return usage_error("--start needs --port P (the restored server's port)%s", "");
    if (!o.start && (o.port || o.wait_seconds))
        return usage_error("--port and --wait go with --start%s", "");
    char red[256]; /* a connection URL typed here may carry a password: quoted redacted */
    if (optind < sargc - 1)
        return usage_error("unexpected argument '%s' for restore database --physical",
                           caris_audit_redact_arg(sargv[optind + 1], red, sizeof(red)));
    if (!g->env_file) {
        err_set(&e, ERR_USAGE,
                "write BACKUP_DIR and BACKUP_ENCRYPTION_KEY into a file only the database's "
                "system user can read (mode 0600) and pass it: caris-backup --env-file F restore "
                "database --physical ...",
                "the restored server's restore_command needs the repository and its key: "
                "--env-file F is required (the key never goes into the server's settings)");
        return fail(&e);
    }
    char exe[PATH_MAX], envf[PATH_MAX], repo[PATH_MAX];
    if (command_path("/proc/self/exe", exe, "this program", &e) != 0 ||
        command_path(g->env_file, envf, "env file", &e) != 0)
        return fail(&e);
    /* the repository this restore reads (--repo, BACKUP_REPOSITORY or BACKUP_DIR from our
     * environment or the env file) is named in restore_command too: the server runs it with
     * another environment, and the env file alone may name another repository, whose archive
     * was not checked for gaps here (one with a gap ends the recovery early, silently) */
    if (storage_location_is_s3(g->repo_path)) {
        if (strpbrk(g->repo_path, "'\\\n") || strlen(g->repo_path) >= sizeof(repo)) {
            err_set(&e, ERR_USAGE, NULL, "repository %s has a quote or backslash in its location",
                    g->repo_path);
            return fail(&e);
        }
        snprintf(repo, sizeof(repo), "%s", g->repo_path);
    } else if (command_path(g->repo_path, repo, "repository", &e) != 0) {
        return fail(&e);
    }
    char *qexe = command_percent_escape(exe), *qenvf = command_percent_escape(envf),
         *qrepo = command_percent_escape(repo);
    char *cmd = xasprintf("'%s' --quiet --env-file '%s' --repo '%s' wal get --strict %%f %%p", qexe,
                          qenvf, qrepo);
    free(qexe);
    free(qenvf);
    free(qrepo);
    o.restore_command = cmd;
    o.backup_dir = config_backup_dir(&g->cfg);
    o.env_file = envf;
    o.url = config_get(&g->cfg, "POSTGRES_URL");
    o.password = config_get(&g->cfg, "PGPASSWORD");
    if (o.start && (!o.url || !*o.url)) {
        free(cmd);
        err_set(&e, ERR_CONFIG, "set POSTGRES_URL (its user and password)",
                "--start asks the restored server how far recovery got: POSTGRES_URL is needed");
        return fail(&e);
    }
    char id[CARIS_ID_MAX];
    struct repo *r = optind == sargc - 1 ? open_repo_id(g, sargv[optind], "database", id, &e)
                                         : open_repo(g, false, &e);
    if (!r) {
        free(cmd);
        return fail(&e);
    }
    if (optind == sargc - 1)
        o.backup_id = id;
    struct caris_op op;
    cli_op_init_service(g, &op);
    o.op = &op;
    o.progress = progress_fn(g);
    struct phys_restore_result res;
    int rc = caris_phys_restore(r, &o, &res, &e);
    progress_end(g);
    if (res.ran)
        cli_audit_backup_id(res.backup_id); /* the one chosen, when no id was given */
    repo_close(r);
    free(cmd);
    if (g->json && res.ran) {
        json_t *j = phys_restore_result_to_json(&res);
        if (rc != 0)
            json_object_set_new(j, "error", json_string(e.msg));
        print_json(j);
        json_decref(j);
    } else if (rc == 0 && !g->quiet) {
        char bytes[32], dur[32];
        str_human_bytes(res.bytes, bytes, sizeof(bytes));
        cli_human_duration(res.duration_ms, dur, sizeof(dur));
        printf("restored physical backup %s into %s (%llu files, %s) in %s\n", res.backup_id,
               o.pgdata, (unsigned long long)res.files, bytes, dur);
        if (res.started)
            printf("  server on port %d: recovery %s; last replayed commit at %s\n", o.port,
                   res.state, res.reached_time ? res.reached_time : "(none)");
        else
            printf("  start it (as its system user) with: pg_ctl start -D %s\n", o.pgdata);
        if (!res.started && res.archive_last) { /* not started, no target */
            char lsn[32];
            caris_lsn_format(res.archive_last_lsn, lsn, sizeof(lsn));
            printf("  without a target it promotes where the WAL ends: its log's \"redo done at\" "
                   "must be at or past %s (the start of %s, the last WAL segment archived), else "
                   "recovery ended early (docs/BACKUP_RECOVERY.md, \"A recovery that ends early "
                   "anyway\")\n",
                   lsn, res.archive_last);
        }
    }
    /* a warning that still stands: not started, so not known to reach its target */
    bool warned = rc == 0 && !res.started && json_array_size(res.warnings) > 0;
    phys_restore_result_free(&res);
    if (rc != 0)
        return fail(&e);
    return warned ? EXIT_WARNINGS : 0;
}

/* Retention commands: forget (the retention policy) and prune. Parse, call the services
 * (caris_retention_apply, caris_prune), print. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/op.h"
#include "caris/prune.h"
#include "caris/storage.h"
#include "caris/retention.h"

#include "cli.h"

static const char FORGET_USAGE[] =
    "usage: caris-backup [--json] forget [--keep-last N] [--keep-daily N] [--keep-weekly N]\n"
    "                    [--keep-monthly N] [--keep-yearly N] [--keep-within DURATION]\n"
    "                    [--type files|database] [--dry-run] [--prune] [--max-unused PCT]\n"
    "       caris-backup [--json] forget ID... [--dry-run] [--prune] [--max-unused PCT]\n"
    "\n"
    "Applies a retention policy: decides which backups to keep and forgets (removes) the\n"
    "others. Backups are judged in groups: the same kind, host and source (the same set of\n"
    "file paths; the same database on the same server). Within a group, each --keep-* rule\n"
    "keeps, going back from the newest backup, the newest backup of each of the last N\n"
    "days / ISO weeks / months / years that have a backup (in BACKUP_TZ, default the local\n"
    "time zone); --keep-last N keeps the N newest; --keep-within D every backup no older\n"
    "than D before the newest (D: 1y6m, 14d, 36h; units y m w d h). A backup is kept if any\n"
    "rule keeps it, and the newest backup of a group is always kept; a policy with every\n"
    "count 0 is refused (to keep only the newest: --keep-last 1). A backup dated more than\n"
    "15 minutes after the current time (the clock was ahead when it was made, or is behind\n"
    "now) is kept, counted by no rule, and named in a warning.\n"
    "\n"
    "With IDs (full backup ids, as `list` shows them), exactly those backups are forgotten,\n"
    "whatever the policy; an id that does not exist forgets nothing (exit 7). A backup whose\n"
    "snapshot cannot be read (`list`: DAMAGED; prune refuses while one exists) is forgotten\n"
    "only so: by its id, or by its file (snapshots/NAME) when `list` shows no id.\n"
    "\n"
    "Without --keep-* options the configured policy applies: BACKUP_RETENTION_DAILY (7),\n"
    "BACKUP_RETENTION_WEEKLY (4), BACKUP_RETENTION_MONTHLY (12).\n"
    "\n"
    "  --type T      only backups of kind T (files or database)\n"
    "  --dry-run     print the decision for every backup and the rules that keep it;\n"
    "                change nothing\n"
    "  --prune       then run prune: delete the data only forgotten backups used\n"
    "  --max-unused  passed to prune (default 5)\n"
    "\n"
    "Forgetting removes a backup's snapshot; the data only it used is deleted by prune.\n";

static const char PRUNE_USAGE[] =
    "usage: caris-backup [--json] prune [--dry-run] [--max-unused PERCENT] [--accept-missing]\n"
    "\n"
    "Deletes from the repository what no backup needs: packs that hold no blob any backup\n"
    "references are deleted; then, while more than PERCENT (default 5) of what remains would\n"
    "be unused data, the packs with the largest unused share are rewritten with only what is\n"
    "used (as restic's --max-unused). Takes the exclusive lock: it refuses to run while a\n"
    "backup or another operation holds a lock (exit 9), and backups wait for it.\n"
    "Interrupting it (Ctrl-C, kill -9, a crash) is safe: the repository stays consistent and\n"
    "the next prune finishes the job.\n"
    "\n"
    "  --dry-run     report what would be deleted and rewritten; change nothing\n"
    "  --accept-missing\n"
    "                backups the repository's state record lists but whose snapshot is\n"
    "                gone (deleted by hand, an older copy put back), and a state record\n"
    "                that is deleted or cannot be read, make prune refuse (exit 4): find\n"
    "                out what happened first; this records the missing backups as removed\n"
    "                (writes the record again from the snapshots there are) and prunes\n";

int backup_time_option(const struct globals *g, const char *s, int64_t *ns, struct err *e)
{
    if (caris_time_parse(s, config_get(&g->cfg, "BACKUP_TZ"), ns, e) != 0)
        return -1;
    return caris_backup_time_check(*ns, e);
}

/* ---- the operation context of a command ---------------------------------------------- */

static volatile sig_atomic_t cancel_flag;

static void on_signal(int sig)
{
    (void)sig;
    __atomic_store_n(&cancel_flag, 1, __ATOMIC_RELAXED); /* read by the operation's threads */
}

static void op_progress(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    (void)ctx;
    fprintf(stderr, "\r\033[K%s: %llu of %llu", phase, (unsigned long long)done,
            (unsigned long long)total);
    fflush(stderr);
}

/* The tables printed say what was done: only warnings and errors go to the log, unless ctx
 * (cli_op_init_service) lets information lines through as well. */
static const bool log_info_lines = true;

static void op_log(void *ctx, enum log_level level, const char *msg)
{
    if (level <= LOG_WARN || (ctx == &log_info_lines && level == LOG_INFO))
        log_msg(level, "%s", msg);
}

static void op_init(const struct globals *g, struct caris_op *op, bool hangups);

void cli_op_init(const struct globals *g, struct caris_op *op)
{
    op_init(g, op, true);
}

static void op_init(const struct globals *g, struct caris_op *op, bool hangups)
{
    memset(op, 0, sizeof(*op));
    op->cancel = &cancel_flag;
    op->actor = "cli";
    op->log = op_log;
    if (!g->quiet && isatty(STDERR_FILENO))
        op->progress = op_progress;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART; /* a blocking call goes on; the operation polls the flag */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    storage_set_cancel(&cancel_flag); /* S3 requests in flight stop too */
    /* The terminal closed (an ssh session dropped during a restore) or Ctrl-\: cancelled as
     * by SIGTERM, so that the operation removes what it made (a restore's decrypted dump in
     * BACKUP_DIR/temp, a test restore's scratch database, a database --create made), instead of
     * dying with it all left behind. Not when the signal is ignored (nohup). */
    static const int more[] = {SIGHUP, SIGQUIT};
    for (size_t i = 0; hangups && i < sizeof(more) / sizeof(more[0]); i++) {
        struct sigaction old;
        if (sigaction(more[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN)
            sigaction(more[i], &sa, NULL);
    }
}

void cli_op_init_service(const struct globals *g, struct caris_op *op)
{
    op_init(g, op, true);
    op->progress = NULL;
    op->log_ctx = (void *)&log_info_lines;
}

void cli_op_init_archiver(const struct globals *g, struct caris_op *op)
{
    /* run by PostgreSQL (archive_command, restore_command): SIGHUP and SIGQUIT left as they
     * are */
    op_init(g, op, false);
    op->progress = NULL;
    op->log_ctx = (void *)&log_info_lines;
}

void cli_op_end(const struct caris_op *op)
{
    if (op->progress)
        fprintf(stderr, "\r\033[K");
}

static int parse_percent(const char *s, double *out)
{
    /* decimal digits with at most one '.': strtod also takes "nan" (which passed the range
     * check and then meant the default), "inf", hex and leading blanks */
    size_t digits = strspn(s, "0123456789"), frac = 0;
    if (s[digits] == '.')
        frac = strspn(s + digits + 1, "0123456789") + 1;
    double v = strtod(s, NULL);
    if ((digits == 0 && frac < 2) || s[digits + frac] || v > 100)
        return usage_error("invalid --max-unused '%s' (a percentage, 0 to 100)", s);
    *out = v;
    return 0;
}

/* ---- output -------------------------------------------------------------------------- */

static void print_forget(const struct caris_forget_result *res)
{
    size_t ng = json_array_size(res->groups);
    for (size_t gi = 0; gi < ng; gi++) {
        bool any = false; /* forget ID...: only the groups of the backups named */
        for (size_t k = 0; k < res->nbackups && !any; k++)
            any = res->backups[k].group == gi;
        if (!any)
            continue;
        json_t *g = json_array_get(res->groups, gi);
        const char *kind = json_string_value(json_object_get(g, "kind"));
        if (strcmp(kind, "damaged") == 0) {
            printf("backups whose snapshot cannot be read:\n");
        } else {
            char *what =
                json_dumps(json_object_get(g, strcmp(kind, "database") == 0 ? "database" : "roots"),
                           JSON_COMPACT | JSON_ENCODE_ANY);
            const char *host = json_string_value(json_object_get(g, "host"));
            printf("%s %s%s%s:\n", kind, what ? what : "?", host ? " on " : "", host ? host : "");
            free(what);
        }
        for (size_t k = 0; k < res->nbackups; k++) {
            const struct caris_forget_decision *d = &res->backups[k];
            if (d->group != gi)
                continue;
            char when[48], reasons[120] = "";
            /* in BACKUP_TZ with its offset, as list shows it: the days and weeks the rules
             * count are BACKUP_TZ's (a UTC time cut to 19 characters, shown before, put a
             * backup of the 9th in Berlin on the 8th) */
            cli_human_time(d->time_ns / 1000000000, when, sizeof(when));
            json_t *rs = caris_retention_reasons_json(d->reasons);
            size_t i;
            json_t *x;
            json_array_foreach(rs, i, x)
            {
                size_t l = strlen(reasons);
                snprintf(reasons + l, sizeof(reasons) - l, "%s%s", i ? ", " : "",
                         json_string_value(x));
            }
            json_decref(rs);
            if (d->damaged)
                snprintf(when, sizeof(when), "%-25s", "time unknown");
            printf("  %-6s %-44s %-25s  %s\n",
                   d->keep        ? "keep"
                   : res->dry_run ? "forget"
                                  : "forgot",
                   d->id, when,
                   d->keep      ? reasons
                   : d->damaged ? "named on the command line; it cannot be read"
                   : res->by_id ? "named on the command line"
                                : "no rule keeps it");
        }
    }
    printf("%zu kept, %zu %s%s\n", res->kept, res->removed,
           res->dry_run ? "would be forgotten" : "forgotten",
           res->dry_run ? " (dry run: nothing changed)" : "");
}

static void print_prune(const struct caris_prune_result *res)
{
    const struct repo_prune_stats *s = &res->stats;
    char del[32], rep[32], before[32], after[32], freed[32];
    str_human_bytes(s->pack_bytes_deleted, del, sizeof(del));
    str_human_bytes(s->pack_bytes_repacked, rep, sizeof(rep));
    str_human_bytes(s->repo_bytes_before, before, sizeof(before));
    str_human_bytes(s->repo_bytes_after, after, sizeof(after));
    str_human_bytes(
        s->repo_bytes_before > s->repo_bytes_after ? s->repo_bytes_before - s->repo_bytes_after : 0,
        freed, sizeof(freed));
    printf("prune%s: %llu backups, %llu of %llu blobs referenced\n",
           res->dry_run ? " (dry run: nothing changed)" : "", (unsigned long long)s->snapshots,
           (unsigned long long)s->blobs_referenced, (unsigned long long)s->blobs);
    size_t nfin = json_array_size(res->removals_finished);
    if (nfin) {
        char ids[400] = "";
        for (size_t i = 0; i < nfin; i++)
            str_list_add(ids, sizeof(ids),
                         json_string_value(json_array_get(res->removals_finished, i)));
        printf("  forgotten backups whose forget was interrupted, %s: %zu (%s)\n",
               res->dry_run ? "to remove" : "removed", nfin, ids);
    }
    printf("  packs: %llu unused %s (%s), %llu %s (%s, %llu blobs kept), %llu -> %llu\n",
           (unsigned long long)s->packs_deleted, res->dry_run ? "to delete" : "deleted", del,
           (unsigned long long)s->packs_repacked, res->dry_run ? "to repack" : "repacked", rep,
           (unsigned long long)s->blobs_repacked, (unsigned long long)s->packs_before,
           (unsigned long long)s->packs_after);
    printf("  index files: %llu -> %llu; leftovers of interrupted writes %s: %llu\n",
           (unsigned long long)s->index_files_before,
           (unsigned long long)s->index_files_written, /* a dry run: what it would write */
           res->dry_run ? "found" : "removed", (unsigned long long)s->leftovers_removed);
    printf("  verification records: %llu files -> %llu, %llu records -> %llu\n",
           (unsigned long long)res->records.files_before,
           (unsigned long long)res->records.files_after,
           (unsigned long long)res->records.records_before,
           (unsigned long long)res->records.records_after);
    char dur[32];
    cli_human_duration(res->duration_ns / 1000000, dur, sizeof(dur));
    printf("  repository: %s -> %s%s (%s freed), %s\n", before, after,
           res->dry_run ? " (estimate)" : "", freed, dur);
}

/* Backups that reference blobs the index does not have (a pack lost): prune deleted only what
 * nothing references, but the repository is damaged; on stderr (--quiet too), exit 3. */
static int prune_missing_warning(const struct caris_prune_result *res)
{
    if (!res->stats.blobs_missing)
        return 0;
    fprintf(stderr,
            "warning: backups reference %llu blobs the index does not have (a pack is missing): "
            "run `caris-backup check` to see which backups are affected\n",
            (unsigned long long)res->stats.blobs_missing);
    return EXIT_WARNINGS;
}

/* ---- commands ------------------------------------------------------------------------ */

int cmd_forget(struct globals *g, int argc, char **argv)
{
    enum { O_LAST = 1000, O_DAILY, O_WEEKLY, O_MONTHLY, O_YEARLY, O_WITHIN, O_MAXUNUSED };
    static const struct option opts[] = {{"keep-last", required_argument, 0, O_LAST},
                                         {"keep-daily", required_argument, 0, O_DAILY},
                                         {"keep-weekly", required_argument, 0, O_WEEKLY},
                                         {"keep-monthly", required_argument, 0, O_MONTHLY},
                                         {"keep-yearly", required_argument, 0, O_YEARLY},
                                         {"keep-within", required_argument, 0, O_WITHIN},
                                         {"type", required_argument, 0, 't'},
                                         {"dry-run", no_argument, 0, 'n'},
                                         {"prune", no_argument, 0, 'p'},
                                         {"max-unused", required_argument, 0, O_MAXUNUSED},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    struct caris_forget_opts fo = {0};
    struct caris_prune_opts po = {.max_unused = -1};
    bool any_keep = false, prune = false;
    struct err e = ERR_INIT;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        int *slot = NULL;
        const char *what = NULL;
        switch (c) {
        case O_LAST:
            slot = &fo.policy.last, what = "--keep-last";
            break;
        case O_DAILY:
            slot = &fo.policy.daily, what = "--keep-daily";
            break;
        case O_WEEKLY:
            slot = &fo.policy.weekly, what = "--keep-weekly";
            break;
        case O_MONTHLY:
            slot = &fo.policy.monthly, what = "--keep-monthly";
            break;
        case O_YEARLY:
            slot = &fo.policy.yearly, what = "--keep-yearly";
            break;
        case O_WITHIN:
            if (caris_duration_parse(optarg, &fo.policy.within, &e) != 0)
                return fail(&e);
            fo.policy.has_within = true;
            any_keep = true;
            break;
        case 't':
            if (cli_set_once("--type", &fo.kind, optarg) != 0)
                return 2;
            if (strcmp(optarg, "files") && strcmp(optarg, "database"))
                return usage_error("unknown --type '%s' (files or database)", optarg);
            break;
        case 'n':
            fo.dry_run = true;
            break;
        case 'p':
            prune = true;
            break;
        case O_MAXUNUSED:
            if (parse_percent(optarg, &po.max_unused) != 0)
                return 2;
            break;
        case 'h':
            fputs(FORGET_USAGE, stdout);
            return 0;
        default:
            return cli_opt_fail();
        }
        if (slot) {
            if (caris_retention_count_parse(what, optarg, slot, &e) != 0)
                return fail(&e);
            any_keep = true;
        }
    }
    if (optind < argc) {
        if (any_keep)
            return usage_error("forget takes backup ids or --keep-* options, not both (%s)",
                               argv[optind]);
        fo.ids = (const char *const *)argv + optind;
        fo.nids = (size_t)(argc - optind);
    }
    if (!any_keep && !fo.nids && caris_retention_policy_from_config(&g->cfg, &fo.policy, &e) != 0)
        return fail(&e);
    fo.tz = config_get(&g->cfg, "BACKUP_TZ");
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_op op;
    cli_op_init(g, &op);
    struct caris_forget_result res;
    int code = 0;
    bool prune_failed = false;
    json_t *out = NULL;
    if (caris_retention_apply(r, &fo, &op, &res, &e) != 0) {
        code = fail(&e);
    } else {
        out = caris_forget_result_to_json(&res);
        if (!fo.dry_run)
            for (size_t k = 0; k < res.nbackups; k++)
                if (!res.backups[k].keep)
                    cli_audit_backup_id(res.backups[k].id);
        if (!g->json && !g->quiet)
            print_forget(&res);
        if (prune) {
            struct caris_prune_result pr;
            po.dry_run = fo.dry_run;
            /* a dry run forgot nothing: prune's estimate counts what forget would remove */
            const char **gone = xcalloc(res.nbackups + 1, sizeof(char *));
            for (size_t k = 0; k < res.nbackups; k++)
                if (!res.backups[k].keep)
                    gone[po.nassume_forgotten++] = res.backups[k].id;
            po.assume_forgotten = gone;
            int rc = caris_prune(r, &po, &op, &pr, &e);
            free(gone);
            cli_op_end(&op);
            if (rc != 0) {
                /* The forget is done: one document, the forget's, with the prune's error in it
                 * (fail() below then prints it on stderr only) */
                if (!fo.dry_run && res.removed)
                    err_wrap(&e, "%zu backup%s forgotten, but the prune failed", res.removed,
                             res.removed == 1 ? "" : "s");
                json_object_set_new(out, "error", cli_err_to_json(&e));
                prune_failed = true;
            } else {
                json_object_set_new(out, "prune", caris_prune_result_to_json(&pr));
                if (!g->json && !g->quiet)
                    print_prune(&pr);
                if (prune_missing_warning(&pr) && code == 0)
                    code = EXIT_WARNINGS;
            }
            caris_prune_result_free(&pr);
        }
        if (g->json)
            print_json(out);
        if (prune_failed)
            code = fail(&e);
    }
    json_decref(out);
    caris_forget_result_free(&res);
    repo_close(r);
    return code;
}

int cmd_prune(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"dry-run", no_argument, 0, 'n'},
                                         {"max-unused", required_argument, 0, 'm'},
                                         {"accept-missing", no_argument, 0, 'a'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    struct caris_prune_opts po = {.max_unused = -1};
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        switch (c) {
        case 'n':
            po.dry_run = true;
            break;
        case 'a':
            po.accept_missing = true;
            break;
        case 'm':
            if (parse_percent(optarg, &po.max_unused) != 0)
                return 2;
            break;
        case 'h':
            fputs(PRUNE_USAGE, stdout);
            return 0;
        default:
            return cli_opt_fail();
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s' for prune", argv[optind]);
    struct err e = ERR_INIT;
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_op op;
    cli_op_init(g, &op);
    struct caris_prune_result res;
    int rc = caris_prune(r, &po, &op, &res, &e);
    cli_op_end(&op);
    repo_close(r);
    if (rc != 0) {
        caris_prune_result_free(&res);
        return fail(&e);
    }
    if (g->json) {
        json_t *j = caris_prune_result_to_json(&res);
        print_json(j);
        json_decref(j);
    } else if (!g->quiet) {
        print_prune(&res);
    }
    int code = prune_missing_warning(&res);
    caris_prune_result_free(&res);
    return code;
}

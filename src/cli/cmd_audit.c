/* audit [--since T] [--json] | audit verify, and the line every command appends to the audit
 * log (caris/audit.h does the work). */
#include <pwd.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caris/audit.h"
#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/repo.h"
#include "caris/retention.h"

#include "cli.h"

static const char AUDIT_USAGE[] =
    "usage: caris-backup [--json] audit [--since TIME]\n"
    "       caris-backup audit verify\n"
    "\n"
    "The audit log, BACKUP_DIR/metadata/audit.log: one line per operation of the command\n"
    "line, the API and the scheduler (time, actor, source address, operation, arguments\n"
    "without secrets, result and error, backup ids, duration). --since shows the lines from\n"
    "TIME on: 2026-03-01T00:00:00Z, 2026-03-01T01:00:00+01:00, or 2026-03-01 01:00 (local\n"
    "time in BACKUP_TZ).\n"
    "\n"
    "verify checks the hash chain (each line carries the SHA-256 of the one before it and its\n"
    "sequence number): exit 0 when intact, 4 naming the first bad line when a line was\n"
    "changed, deleted, inserted or cut short.\n";

static int audit_show(struct globals *g, const char *since)
{
    int64_t since_ns = 0;
    struct err e = ERR_INIT;
    /* as --time takes it: UTC (Z), an offset, or local time in BACKUP_TZ */
    if (since && caris_time_parse(since, config_get(&g->cfg, "BACKUP_TZ"), &since_ns, &e) != 0) {
        err_wrap(&e, "--since");
        e.code = ERR_USAGE;
        return fail(&e);
    }
    json_t *lines = caris_audit_read(config_backup_dir(&g->cfg), since_ns, &e);
    if (!lines)
        return fail(&e);
    if (g->json) {
        print_json_as_stored(lines); /* the chain's lines as written (args as given) */
    } else {
        size_t i;
        json_t *l;
        json_array_foreach(lines, i, l)
        {
            if (json_object_get(l, "unreadable")) {
                printf("(unreadable line) %s\n",
                       json_string_value(json_object_get(l, "unreadable")));
                continue;
            }
            char *args = json_dumps(json_object_get(l, "args"), JSON_COMPACT | JSON_SORT_KEYS);
            const char *src = json_string_value(json_object_get(l, "source"));
            const char *err = json_string_value(json_object_get(l, "error"));
            printf("%-24s %-20s %-28s %-8s %s%s%s%s%s\n",
                   json_string_value(json_object_get(l, "time")) ?: "?",
                   json_string_value(json_object_get(l, "actor")) ?: "?",
                   json_string_value(json_object_get(l, "operation")) ?: "?",
                   json_string_value(json_object_get(l, "result")) ?: "?", args ? args : "",
                   src ? " from " : "", src ? src : "", err ? ": " : "", err ? err : "");
            free(args);
        }
    }
    json_decref(lines);
    return 0;
}

static void print_json_verify(size_t lines, json_t *torn, size_t heads, bool heads_checked)
{
    json_t *j =
        json_pack("{s:b, s:I, s:O, s:b, s:I}", "ok", 1, "lines", (json_int_t)lines, "tornLines",
                  torn, "headsChecked", heads_checked, "heads", (json_int_t)heads);
    print_json(j);
    json_decref(j);
}

/* the lines an interrupted write tore, which the log went on after: said, not damage */
static void print_torn(const json_t *torn)
{
    size_t i, n = json_array_size(torn);
    json_t *v;
    if (n == 0)
        return;
    fprintf(stderr,
            "note: %zu line%s of the audit log %s cut short when written (a crash or a "
            "full disk) and the log went on after %s:",
            n, n == 1 ? "" : "s", n == 1 ? "was" : "were", n == 1 ? "it" : "them");
    json_array_foreach(torn, i, v) fprintf(stderr, " %lld", (long long)json_integer_value(v));
    fputs("\n", stderr);
}

int cmd_audit(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"since", required_argument, 0, 's'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *since = NULL;
    bool verify = false;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c == 'h') {
            fputs(AUDIT_USAGE, stdout);
            return 0;
        } else if (c == 's') {
            since = optarg;
        } else {
            return cli_opt_fail();
        }
    }
    for (int i = optind; i < argc; i++) {
        if (strcmp(argv[i], "verify") == 0 && i == optind)
            verify = true;
        else
            return usage_error("unexpected argument '%s' for audit", argv[i]);
    }
    if (!verify)
        return audit_show(g, since);
    if (since)
        return usage_error("audit verify checks the whole log (no --since)%s", "");
    struct err e = ERR_INIT;
    size_t lines;
    json_t *torn = NULL;
    int rc = caris_audit_verify(config_backup_dir(&g->cfg), &lines, &torn, &e);
    if (g->json && rc != 0) {
        json_t *j = json_pack("{s:b, s:I, s:o}", "ok", 0, "badLine", (json_int_t)lines, "error",
                              cli_err_to_json(&e));
        print_json(j);
        json_decref(j);
    }
    if (rc != 0)
        return fail(&e);
    if (!g->json)
        print_torn(torn);
    /* then the heads the repository recorded: they catch a tail deleted or a last line
     * changed, which leave the chain itself whole */
    size_t heads = 0;
    g->no_open_warnings = true; /* the repository's own findings are check's business */
    struct repo *r = open_repo(g, false, &e);
    int hrc = r ? caris_audit_verify_heads(r, config_backup_dir(&g->cfg), &heads, &e) : -1;
    if (r)
        repo_close(r);
    if (hrc != 0 && e.code == ERR_DAMAGE) {
        json_decref(torn);
        return fail(&e);
    }
    if (hrc != 0) {
        fprintf(stderr, "warning: the heads recorded in the repository were not checked: %s\n",
                e.msg);
        if (!g->json)
            printf("audit log chain intact: %zu line%s (heads not checked)\n", lines,
                   lines == 1 ? "" : "s");
        else
            print_json_verify(lines, torn, heads, false);
        json_decref(torn);
        return EXIT_WARNINGS;
    }
    if (g->json)
        print_json_verify(lines, torn, heads, true);
    json_decref(torn);
    if (!g->json)
        printf("audit log intact: %zu line%s, hash chain unbroken, %zu head%s recorded in the "
               "repository agree\n",
               lines, lines == 1 ? "" : "s", heads, heads == 1 ? "" : "s");
    return 0;
}

/* The first words that name the operation: the command, and its subcommand when it has one.
 * A second word that is not one of the command's subcommands is not kept: `key KEY` or
 * `token cbt_...` is a secret typed where the subcommand goes (*unknown_sub is then set, and
 * the operation is "key (unknown subcommand)"). */
static int op_words(int argc, char **argv, bool *unknown_sub)
{
    static const struct {
        const char *cmd, *subs[4];
    } with_sub[] = {{"token", {"add", "list", "revoke", NULL}},
                    {"key", {"list", "add", "remove", NULL}},
                    {"schedule", {"next", "status", "cancel", NULL}},
                    {"notify", {"test", NULL}},
                    {"debug", {"pack", "backup", NULL}}};
    *unknown_sub = false;
    if (argc >= 2 && argv[1][0] != '-')
        for (size_t i = 0; i < sizeof(with_sub) / sizeof(with_sub[0]); i++)
            if (strcmp(argv[0], with_sub[i].cmd) == 0) {
                for (size_t k = 0; with_sub[i].subs[k]; k++)
                    if (strcmp(argv[1], with_sub[i].subs[k]) == 0)
                        return 2;
                *unknown_sub = true;
                return 2;
            }
    if (argc >= 2 && (strcmp(argv[0], "backup") == 0 || strcmp(argv[0], "restore") == 0) &&
        (strcmp(argv[1], "database") == 0 || strcmp(argv[1], "files") == 0))
        return 2;
    return 1;
}

static json_t *audit_ids; /* cli_audit_backup_id's, for the command's line */

void cli_audit_backup_id(const char *id)
{
    if (!id || !*id)
        return;
    if (!audit_ids)
        audit_ids = json_array();
    json_array_append_new(audit_ids, json_string(id));
}

static void drop_audit_repo(struct globals *g)
{
    repo_close(g->audit_repo);
    g->audit_repo = NULL;
}

void cli_audit(struct globals *g, int argc, char **argv, int code, int64_t duration_ms)
{
    if (argc < 1 || strcmp(argv[0], "audit") == 0 || wants_help(argc, argv)) {
        drop_audit_repo(g);
        return; /* reading the log is not logged; help is not an operation */
    }
    const char *dir = config_backup_dir(&g->cfg);
    char *metadata = xasprintf("%s/metadata", dir);
    bool there = fs_exists(metadata);
    free(metadata);
    if (!there) {
        drop_audit_repo(g);
        return; /* no BACKUP_DIR yet (init, the first backup make it): nothing to audit in */
    }
    bool unknown_sub;
    int w = op_words(argc, argv, &unknown_sub);
    char op[64] = "";
    if (unknown_sub)
        snprintf(op, sizeof(op), "%s (unknown subcommand)", argv[0]);
    else
        for (int i = 0; i < w; i++)
            snprintf(op + strlen(op), sizeof(op) - strlen(op), "%s%s", i ? " " : "", argv[i]);
    json_t *args = json_array();
    /* `key add` takes no operand but --label's, `key remove` a slot id (16 hex digits):
     * anything else is a key given by mistake on the command line, never kept in the log */
    bool key_add = strcmp(op, "key add") == 0, key_remove = strcmp(op, "key remove") == 0;
    /* nor does `key list`: any operand of a key command but remove's slot id is redacted */
    bool key_cmd = strcmp(argv[0], "key") == 0;
    /* nor does init take an operand but its options' */
    static const char *const init_valued[] = {"--kdf-memory", "--kdf-ops", "--compression",
                                              "--copy-chunker-from", "--to-key-env"};
    bool init = strcmp(op, "init") == 0;
    for (int i = w; i < argc && i < w + 64; i++) {
        char a[256];
        /* --to-key-env names a variable: a key typed in its place is never kept */
        const char *var = strncmp(argv[i], "--to-key-env=", 13) == 0          ? argv[i] + 13
                          : i > w && strcmp(argv[i - 1], "--to-key-env") == 0 ? argv[i]
                                                                              : NULL;
        if (var && !config_var_name_showable(&g->cfg, var)) {
            json_array_append_new(
                args, json_string(var == argv[i] ? "(redacted)" : "--to-key-env=(redacted)"));
            continue;
        }
        /* a secret typed as an argument (the key given as a backup id) */
        if (config_holds_secret(&g->cfg, argv[i])) {
            json_array_append_new(args, json_string("(redacted)"));
            continue;
        }
        bool init_operand = init && argv[i][0] != '-';
        for (size_t k = 0; init_operand && k < sizeof(init_valued) / sizeof(init_valued[0]); k++)
            if (i > w && strcmp(argv[i - 1], init_valued[k]) == 0)
                init_operand = false;
        /* after an unknown subcommand (a secret typed in its place), nothing is kept */
        if (unknown_sub) {
            json_array_append_new(args, json_string("(redacted)"));
            continue;
        }
        /* key add's --label too: a key typed there (refused) must not be kept here; so is the
         * value of any --OPTION=VALUE of key (getopt takes --lab=, --l= for --label) */
        const char *eq = key_cmd && argv[i][0] == '-' ? strchr(argv[i], '=') : NULL;
        if (eq) {
            char *red = xasprintf("%.*s=(redacted)", (int)(eq - argv[i]), argv[i]);
            json_array_append_new(args, json_string(red));
            free(red);
            continue;
        }
        if (init_operand || (key_add && strcmp(argv[i], "--label") != 0) ||
            (key_cmd && !key_add && !key_remove && argv[i][0] != '-') ||
            (key_remove && argv[i][0] != '-' &&
             (strlen(argv[i]) != 16 || strspn(argv[i], "0123456789abcdef") != 16)))
            json_array_append_new(args, json_string("(redacted)"));
        else
            json_array_append_new(args, json_string(caris_audit_redact_arg(argv[i], a, sizeof(a))));
    }
    char actor[96];
    struct passwd *pw = getpwuid(geteuid());
    if (pw && pw->pw_name)
        snprintf(actor, sizeof(actor), "cli:%s", pw->pw_name);
    else
        snprintf(actor, sizeof(actor), "cli:uid %d", (int)geteuid());
    char result[24];
    if (code == 0 || code == EXIT_WARNINGS)
        snprintf(result, sizeof(result), "%s", code == 0 ? "ok" : "warnings");
    else
        snprintf(result, sizeof(result), "failed (exit %d)", code);
    json_t *a = json_pack("{s:o}", "argv", args);
    struct caris_audit_entry en = {.actor = actor,
                                   .operation = op,
                                   .args = a,
                                   .result = result,
                                   .error = code != 0 && code != EXIT_WARNINGS ? cli_first_failure()
                                                                               : NULL,
                                   .backup_ids = audit_ids,
                                   .duration_ms = duration_ms};
    struct err e = ERR_INIT;
    if (caris_audit_append(dir, &en, &e) != 0) {
        cli_warn("this operation is not in the audit log", e.msg, e.hint);
    }
    json_decref(a);
    json_decref(audit_ids);
    audit_ids = NULL;
    /* With each backup, the log's head goes into the repository too; and with each operation
     * that takes data out of it (caris_audit_head_due; `audit verify` checks the heads). */
    bool backup = strcmp(op, "backup files") == 0 || strcmp(op, "backup database") == 0 ||
                  strcmp(op, "backup") == 0 || strcmp(op, "run-now") == 0;
    bool data_out = strcmp(op, "restore files") == 0 || strcmp(op, "restore database") == 0 ||
                    strcmp(op, "dump") == 0 || strcmp(op, "mount") == 0 ||
                    strcmp(op, "copy") == 0 || strcmp(op, "upload") == 0;
    /* a dry run creates nothing in the repository, the head record neither (as the daemon's
     * dry-run restores); its line is in the log */
    bool dry = false;
    for (int i = w; i < argc && !dry; i++)
        dry = strcmp(argv[i], "--dry-run") == 0;
    if (!dry && caris_audit_head_due(backup, data_out, code) && !err_is_set(&e)) {
        g->no_open_warnings = true; /* the operation's own open reported them already */
        struct repo *r = g->audit_repo ? g->audit_repo : open_repo(g, false, &e);
        g->audit_repo = NULL;
        if (!r || caris_audit_head_record(r, dir, &e) != 0)
            cli_warn("the audit log's head is not in the repository", e.msg, NULL);
        if (r)
            repo_close(r);
    }
    drop_audit_repo(g);
}

void cli_keep_repo_for_audit(struct globals *g, struct repo *r)
{
    repo_close(g->audit_repo);
    g->audit_repo = r;
}

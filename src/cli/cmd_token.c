/* token add | list | revoke: the API's credentials (caris/token.h does the work). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/token.h"

#include "cli.h"

static const char TOKEN_USAGE[] =
    "usage: caris-backup token add --label LABEL [--role admin|viewer]\n"
    "       caris-backup [--json] token list\n"
    "       caris-backup token revoke ID|LABEL|TOKEN\n"
    "\n"
    "Tokens of the daemon's HTTP API (Authorization: Bearer <token>). `token add` prints a new\n"
    "token once: keep it (only its SHA-256 is stored, in BACKUP_DIR/metadata/api-tokens.json,\n"
    "mode 0600). Roles: admin (everything) and viewer (list, status and jobs only; the\n"
    "default is admin). The label is stored in clear and names the token's requests in logs\n"
    "and the audit log (a secret of the configuration is refused there). The daemon reads the\n"
    "file at each request: a revoked token stops working at once.\n";

static int token_add(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"label", required_argument, 0, 'l'},
                                         {"role", required_argument, 0, 'r'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *label = NULL, *role_s = "admin";
    optind = 1;
    int c;
    while ((c = cli_getopt(argc, argv, "+h", opts)) != -1) {
        if (c == 'l')
            label = optarg;
        else if (c == 'r')
            role_s = optarg;
        else if (c == 'h') {
            fputs(TOKEN_USAGE, stdout);
            return 0;
        } else
            return cli_opt_fail();
    }
    /* not echoed: the word may be a token (the error goes into the audit log too) */
    if (optind < argc)
        return cli_unechoed_error("unexpected argument for token add", argv[optind],
                                  "token add takes only --label and --role", "a token");
    if (!label)
        return usage_error("token add needs --label (who or what uses the token)%s", "");
    struct err e = ERR_INIT;
    /* the label is stored in clear and names the token's actor in logs and the audit log: a
     * secret of the configuration (the key, a password, the cron secret) is refused there */
    if (config_holds_secret(&g->cfg, label)) {
        err_set(&e, ERR_USAGE,
                "give a label that says who or what uses the token; nothing was added",
                "the token's label holds a secret of the configuration (labels are stored in "
                "clear and shown in logs)");
        return fail(&e);
    }
    enum caris_token_role role;
    if (caris_token_role_parse(role_s, &role, &e) != 0)
        return fail(&e);
    char token[CARIS_TOKEN_LEN + 1];
    struct caris_token_info info;
    if (caris_token_add(config_backup_dir(&g->cfg), label, role, token, &info, &e) != 0)
        return fail(&e);
    if (g->json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "id", info.id, "label", info.label, "role",
                              caris_token_role_name(role), "token", token);
        print_json(j);
        json_decref(j);
    } else {
        printf("%s\n", token);
    }
    cx_wipe(token, sizeof(token));
    /* The token is shown only this once: when it could not be written (a full disk, a closed
     * pipe), nobody has it, and it goes again instead of staying a valid credential no one
     * holds (said to be saved by an exit 8 that left it in the file). */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int en = errno ? errno : EIO;
        struct err re = ERR_INIT;
        bool revoked = caris_token_revoke(config_backup_dir(&g->cfg), info.id, NULL, &re) == 0;
        err_sys(&e, en,
                revoked ? "run token add again with an output that works (a terminal, a file)"
                        : "revoke it (`caris-backup token revoke ID`), then add one again",
                "cannot write the new token %s to the output (stdout): %s", info.id,
                revoked ? "it was revoked again" : "it is saved, and nobody has seen it");
        return fail(&e);
    }
    if (!g->json)
        fprintf(stderr,
                "token %s (%s, %s) made: it is shown only this once; keep it in a secret store\n",
                info.id, info.label, caris_token_role_name(role));
    return 0;
}

static int token_list(struct globals *g)
{
    struct err e = ERR_INIT;
    json_t *list = caris_token_list(config_backup_dir(&g->cfg), &e);
    if (!list)
        return fail(&e);
    if (g->json) {
        print_json(list);
    } else {
        printf("%-16s %-6s %-20s %s\n", "ID", "ROLE", "CREATED (UTC)", "LABEL");
        size_t i;
        json_t *t;
        json_array_foreach(list, i, t)
        {
            printf("%-16s %-6s %-20.19s %s\n", json_string_value(json_object_get(t, "id")),
                   json_string_value(json_object_get(t, "role")),
                   json_string_value(json_object_get(t, "created")),
                   json_string_value(json_object_get(t, "label")));
        }
    }
    json_decref(list);
    return 0;
}

int cmd_token(struct globals *g, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_missing(TOKEN_USAGE, "token needs a subcommand: add, list or revoke");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(TOKEN_USAGE, stdout);
        return 0;
    }
    bool json_after = false; /* --json after the subcommand, as elsewhere */
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--json") == 0)
            json_after = true;
    if (json_after)
        g->json = true;
    /* --help or -h after list or revoke: the usage, not a label to revoke */
    if (strcmp(argv[1], "add") != 0)
        for (int i = 2; i < argc; i++)
            if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                fputs(TOKEN_USAGE, stdout);
                return 0;
            }
    if (strcmp(argv[1], "add") == 0) {
        char **args = xcalloc((size_t)argc + 1, sizeof(*args));
        int n = 0;
        for (int i = 1; i < argc; i++)
            if (strcmp(argv[i], "--json") != 0)
                args[n++] = argv[i];
        int code = token_add(g, n, args);
        free(args);
        return code;
    }
    if (strcmp(argv[1], "list") == 0) {
        for (int i = 2; i < argc; i++)
            if (strcmp(argv[i], "--json") != 0)
                return cli_unechoed_error("unexpected argument for token list", argv[i],
                                          "token list takes no argument", "a token");
        return token_list(g);
    }
    if (strcmp(argv[1], "revoke") == 0) {
        if (argc != 3 || strcmp(argv[2], "--json") == 0)
            return usage_error("token revoke needs one token id or label%s", "");
        struct err e = ERR_INIT;
        struct caris_token_info info;
        if (caris_token_revoke(config_backup_dir(&g->cfg), argv[2], &info, &e) != 0)
            return fail(&e);
        if (g->json) {
            json_t *j = json_pack("{s:s, s:s, s:s, s:b}", "id", info.id, "label", info.label,
                                  "role", caris_token_role_name(info.role), "revoked", 1);
            print_json(j);
            json_decref(j);
        }
        fprintf(stderr, "token %s revoked\n",
                strncmp(argv[2], "cbt_", 4) == 0 ? "(given by its value)" : argv[2]);
        return 0;
    }
    /* not echoed: `token cbt_...` is a token typed where the subcommand goes */
    return cli_unechoed_error("unknown token subcommand", argv[1],
                              "use token add, token list or token revoke", "a token");
}

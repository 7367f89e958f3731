/* notify test: send a test notification to every configured channel and say, per channel,
 * whether it arrived (the notify module, include/caris/notify.h, does the work). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "caris/core.h"
#include "caris/notify.h"
#include "caris/op.h"

#include "cli.h"

static const char NOTIFY_USAGE[] =
    "usage: caris-backup notify test [--json]\n"
    "\n"
    "Sends a test notification to every configured channel and reports each one (ok or the\n"
    "error). Exit 0 only when every channel delivered; 1 when one failed; 6 when none is\n"
    "configured or the configuration is invalid.\n"
    "\n"
    "Channels (environment or .env.local):\n"
    "  email  BACKUP_SMTP_URL (smtp://host:587, STARTTLS when offered; smtps://host:465),\n"
    "         BACKUP_SMTP_USER, BACKUP_SMTP_PASSWORD, BACKUP_SMTP_TLS (try | require),\n"
    "         BACKUP_SMTP_CA_FILE (a private CA, PEM),\n"
    "         BACKUP_EMAIL_FROM, BACKUP_EMAIL_RECIPIENTS (comma-separated)\n"
    "  slack  BACKUP_SLACK_WEBHOOK_URL (an incoming webhook; the URL is a secret)\n"
    "  BACKUP_EMAIL_NOTIFICATIONS / BACKUP_SLACK_NOTIFICATIONS=false turn a channel off.\n"
    "\n"
    "A channel is tried 3 times (pauses of 1 s and 2 s) within 60 s at most.\n";

static int notify_test(struct globals *g)
{
    struct err e = ERR_INIT;
    struct notify_config nc;
    if (notify_config_load(&g->cfg, &nc, &e) != 0)
        return fail(&e);
    if (!notify_configured(&nc)) {
        notify_config_free(&nc);
        err_set(&e, ERR_CONFIG,
                "set BACKUP_SMTP_URL and BACKUP_EMAIL_RECIPIENTS for email, or "
                "BACKUP_SLACK_WEBHOOK_URL for Slack (`caris-backup notify --help`)",
                "no notification channel configured");
        return fail(&e);
    }
    struct caris_op op;
    cli_op_init(g, &op); /* Ctrl-C stops the retries */
    op.progress = NULL;
    struct notify_event ev = {.kind = NOTIFY_TEST, .duration_ms = -1};
    struct notify_result res[NOTIFY_MAX_CHANNELS];
    size_t n = 0;
    int rc = notify_send_all(&nc, &ev, &op, res, &n);
    cli_op_end(&op);
    if (g->json) {
        json_t *j = notify_results_to_json(res, n);
        /* a failure has the error object of every command's (docs/JSON.md, "Errors") */
        size_t failed = 0;
        for (size_t i = 0; i < n; i++)
            failed += !res[i].ok;
        if (rc != 0) {
            struct err fe = ERR_INIT;
            err_set(&fe, ERR_FAILURE, "each channel's error is in `channels`",
                    "%zu of %zu notification channel%s failed", failed, n, n == 1 ? "" : "s");
            json_object_set_new(j, "error", cli_err_to_json(&fe));
        }
        print_json(j);
        json_decref(j);
    } else {
        for (size_t i = 0; i < n; i++) {
            if (res[i].ok)
                printf("%-6s %s: ok (%d tr%s, %lld ms)\n", res[i].channel, res[i].target,
                       res[i].tries, res[i].tries == 1 ? "y" : "ies",
                       (long long)res[i].duration_ms);
            else
                printf("%-6s %s: error\n", res[i].channel, res[i].target);
        }
        for (size_t i = 0; i < n; i++)
            if (!res[i].ok)
                cli_err_print(&res[i].err);
    }
    notify_config_free(&nc);
    return rc == 0 ? 0 : 1;
}

int cmd_notify(struct globals *g, int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        fputs(NOTIFY_USAGE, stdout);
        return 0;
    }
    if (argc < 2)
        return usage_error("notify needs a subcommand: test%s", NULL);
    if (strcmp(argv[1], "test") == 0) {
        static const struct option opts[] = {{0, 0, 0, 0}};
        int c;
        optind = 0;
        if ((c = cli_getopt(argc - 1, argv + 1, "", opts)) != -1)
            return cli_opt_fail();
        if (optind < argc - 1)
            return usage_error("notify test takes only --json, got '%s'", argv[optind + 1]);
        return notify_test(g);
    }
    return usage_error("unknown notify subcommand '%s' (notify test)", argv[1]);
}

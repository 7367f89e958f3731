/* Notifications: email (SMTP, through libcurl) and Slack (an incoming webhook) when a backup
 * fails or succeeds, when verification or a restore drill fails, and when no successful
 * backup of a kind is recent enough ("stale"). The seed's BACKUP_EMAIL_* and BACKUP_SLACK_*.
 *
 * A notification that cannot be delivered is retried a few times (bounded total time per
 * channel) and then reported as an error: the caller logs it and goes on; it never fails or
 * blocks a backup. Secrets (the SMTP password, the webhook URL, the repository key, database
 * passwords inside URLs or key=value strings) are redacted from every message, error and log
 * line this module produces. */
#ifndef CARIS_NOTIFY_H
#define CARIS_NOTIFY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/config.h"
#include "caris/err.h"
#include "caris/op.h"

enum notify_kind {
    NOTIFY_BACKUP_SUCCEEDED,
    NOTIFY_BACKUP_FAILED,
    NOTIFY_VERIFY_FAILED,
    NOTIFY_DRILL_FAILED,  /* a restore drill (test-restore) failed */
    NOTIFY_STEP_FAILED,   /* a later step of a run failed (backup_kind: "retention", "prune",
                             "copy"); the run's backups are not affected */
    NOTIFY_STEP_WARNINGS, /* a step of a run completed with warnings: a backup that could not
                             read every file (backup_kind "files incremental"), a prune that
                             found backups needing data that is gone ("prune"); error: what */
    NOTIFY_STALE,         /* no successful backup of a kind for longer than BACKUP_ALERT_AFTER */
    NOTIFY_WAL_FAILING,   /* PostgreSQL's archive_command has been failing (pg_stat_archiver) for
                             BACKUP_WAL_ALERT_MINUTES; error: the archiver's figures */
    NOTIFY_WAL_STREAM_FAILING, /* the daemon's WAL streaming (BACKUP_WAL_STREAMING) has been
                                  failing for BACKUP_WAL_ALERT_MINUTES; error: its last error */
    NOTIFY_TEST,               /* `caris-backup notify test` */
};

/* "backup-succeeded", "backup-failed", "verification-failed", "drill-failed", "step-failed",
 * "step-warnings", "stale", "wal-archiving-failing", "wal-streaming-failing", "test". */
const char *notify_kind_name(enum notify_kind k);

/* What happened. Every pointer is optional (NULL: not known / not applicable); the strings
 * are the caller's and are only read during caris_notify. Free text (error, hint, ...) is
 * redacted before it goes anywhere. */
struct notify_event {
    enum notify_kind kind;
    const char *backup_id;    /* "caris_full_2024-01-15T03-00-00" */
    const char *backup_kind;  /* "database full", "files incremental"; for NOTIFY_STALE the
                                 kind that is stale ("database", "files") */
    bool has_size;            /* size_bytes is known */
    uint64_t size_bytes;      /* bytes backed up */
    int64_t duration_ms;      /* < 0: unknown */
    const char *verification; /* "passed", "failed: ..."; NULL when not run */
    const char *error;        /* failure: what failed (struct err's msg) */
    const char *hint;         /* failure: what to do (struct err's hint) */
    const char *host;         /* NULL: this machine's host name */
    int64_t time_ns;          /* when it happened (CLOCK_REALTIME ns); 0: now */
    /* NOTIFY_STALE: the newest successful backup of the kind (0: none ever) */
    int64_t last_success_ns;
    /* NOTIFY_BACKUP_FAILED: a run the daemon never finished (killed, crashed): the backups it
     * had made by then are in the repository, so "nothing of it was committed" is not said */
    bool interrupted;
};

/* Where notifications go, read from the configuration by notify_config_load. */
struct notify_config {
    bool email;            /* the email channel is configured and enabled */
    char *smtp_url;        /* smtp://host:port or smtps://host:port (no credentials) */
    char *smtp_target;     /* scheme://host:port, for messages */
    char *smtp_user;       /* NULL: no AUTH */
    char *smtp_password;   /* secret memory; NULL when none */
    bool smtp_require_tls; /* BACKUP_SMTP_TLS=require: fail unless STARTTLS/smtps */
    /* TLS required because a password would otherwise cross the network in clear (a
     * password set, the server not on a loopback address), whatever BACKUP_SMTP_TLS says */
    bool smtp_tls_for_password;
    /* BACKUP_SMTP_CA_FILE: CA certificates (PEM) to verify the server with instead of the
     * system's; NULL: the system's */
    char *smtp_ca_file;
    char *email_from;      /* the From header as configured ("Name <addr>" or addr) */
    char *email_from_addr; /* the address alone (envelope sender) */
    char **recipients;     /* addresses */
    size_t nrecipients;
    bool slack;              /* the Slack channel is configured and enabled */
    char *slack_webhook_url; /* secret memory */
    char *slack_target;      /* scheme://host of the webhook, for messages */
    bool notify_success;     /* BACKUP_NOTIFY_SUCCESS, default false */
    int64_t alert_after_ms;  /* BACKUP_ALERT_AFTER, default 26h */
    /* Delivery: tries per channel, pause before the second try (doubled for each further
     * one), timeouts. A channel gives up once deadline_ms has passed since its first try. */
    int tries;
    int64_t backoff_ms;
    int64_t connect_timeout_ms;
    int64_t deadline_ms;
    char **secrets; /* values redacted from everything produced (secret memory) */
    size_t nsecrets;
};

#define NOTIFY_DEFAULT_ALERT_AFTER_MS (26LL * 3600 * 1000)
#define NOTIFY_DEFAULT_TRIES 3
#define NOTIFY_DEFAULT_BACKOFF_MS 1000
#define NOTIFY_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define NOTIFY_DEFAULT_DEADLINE_MS 60000

/* Reads BACKUP_SMTP_URL, BACKUP_SMTP_USER, BACKUP_SMTP_PASSWORD, BACKUP_SMTP_TLS (try |
 * require), BACKUP_SMTP_CA_FILE, BACKUP_EMAIL_FROM, BACKUP_EMAIL_RECIPIENTS (comma-separated),
 * BACKUP_EMAIL_NOTIFICATIONS, BACKUP_SLACK_WEBHOOK_URL, BACKUP_SLACK_NOTIFICATIONS,
 * BACKUP_NOTIFY_SUCCESS, BACKUP_ALERT_AFTER (and the test knob CARIS_NOTIFY_TIMEOUT_SECONDS,
 * which replaces the per-channel deadline). A channel is enabled when its variables are set,
 * unless its *_NOTIFICATIONS variable is false; a channel half configured (recipients but no
 * SMTP URL, BACKUP_SLACK_NOTIFICATIONS=true without a webhook), an address with a control
 * character or not of the form local@domain, a webhook that is not https (http only to a
 * loopback address): ERR_CONFIG. Error messages never contain the webhook URL or a
 * password. Free with notify_config_free. Having no channel is not an error (see
 * notify_configured). */
int notify_config_load(const struct config *c, struct notify_config *nc, struct err *e);
void notify_config_free(struct notify_config *nc);

/* At least one channel is enabled. */
bool notify_configured(const struct notify_config *nc);

/* The rule of which events are sent: failures (backup, verification, drill), stale alerts
 * and tests always; successes only when BACKUP_NOTIFY_SUCCESS is true. */
bool notify_should_send(const struct notify_config *nc, const struct notify_event *ev);

/* A stale alert is due: the newest successful backup of a kind (last_success_ns, 0 when
 * there is none) is older than BACKUP_ALERT_AFTER at now_ns. */
bool notify_stale_due(const struct notify_config *nc, int64_t last_success_ns, int64_t now_ns);

/* The outcome of one channel. */
struct notify_result {
    const char *channel; /* "email", "slack" */
    char target[256];    /* where it went, without secrets: smtp://host:587, https://host */
    bool ok;
    int tries;           /* attempts made */
    int64_t duration_ms; /* all attempts, with the pauses between them */
    struct err err;      /* when !ok */
};
#define NOTIFY_MAX_CHANNELS 2

/* Sends ev to every enabled channel, each with its retries, one after the other; fills
 * res[0..*nres) (in the order email, slack). Returns 0 when every channel delivered, -1
 * otherwise (each result says why). Does not apply notify_should_send. Log lines (a try that
 * failed, a retry) go to op; op's cancel flag stops the retries. */
int notify_send_all(const struct notify_config *nc, const struct notify_event *ev,
                    const struct caris_op *op, struct notify_result res[NOTIFY_MAX_CHANNELS],
                    size_t *nres);

/* {"ok": all delivered, "channels": [{"channel", "target", "ok", "tries", "duration_ms",
 * and when not ok "error", "hint"}]}: what `notify test --json` prints. */
json_t *notify_results_to_json(const struct notify_result *res, size_t n);

/* The entry point for the daemon: when notify_should_send says so, sends ev to every
 * channel (notify_send_all). Returns 0 when it was not to be sent or every channel
 * delivered; otherwise, with e naming the channels that failed and why (no secret in it), 1
 * when at least one channel delivered it, -1 when none did. The caller logs that and goes on:
 * a notification never fails a backup. One sent once per episode (the stale alert) counts as
 * sent when a channel took it (1): sent again, the channels that took it got it again. */
int caris_notify(const struct notify_config *nc, const struct notify_event *ev,
                 const struct caris_op *op, struct err *e);

#endif

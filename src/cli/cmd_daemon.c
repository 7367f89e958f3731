/* caris-backup daemon, schedule status, run-now: the front end of src/daemon/. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "caris/daemon.h"
#include "caris/job.h"
#include "caris/jsonx.h"
#include "caris/storage.h"
#include "cli.h"

static const char DAEMON_USAGE[] =
    "usage: caris-backup daemon [--json-log]\n\n"
    "Runs the scheduler in the foreground (for systemd: dist/caris-backup.service), one per\n"
    "BACKUP_DIR. It opens the repository once and runs the schedules BACKUP_SCHEDULE_DAILY\n"
    "(default \"0 3 * * *\", incremental), BACKUP_SCHEDULE_WEEKLY (\"0 2 * * 0\", full) and\n"
    "BACKUP_SCHEDULE_MONTHLY (\"0 1 1 * *\", full), in BACKUP_TZ; \"off\" disables one. Each\n"
    "run backs up the database (POSTGRES_URL) and the files (BACKUP_FILES_PATHS), verifies\n"
    "every new backup, applies the retention policy, prunes every\n"
    "BACKUP_PRUNE_INTERVAL_DAYS (default 7) and test-restores the database backup every\n"
    "BACKUP_DRILL_INTERVAL_DAYS (default 7; 0 turns either off). Failures are notified\n"
    "(BACKUP_SMTP_*, BACKUP_EMAIL_*, BACKUP_SLACK_*), as are backups that are too old\n"
    "(BACKUP_ALERT_AFTER), and WAL archiving (pg_stat_archiver, every 5 minutes) or WAL\n"
    "streaming that keeps failing (BACKUP_WAL_ALERT_MINUTES, default 15, or off).\n"
    "A backup run going on longer than BACKUP_RUN_TIMEOUT (e.g. 12h; default off) is\n"
    "cancelled and notified as failed; the next runs then go on.\n"
    "A run missed while the machine was off or suspended runs once; a clock set back by more\n"
    "than 3 hours makes it compute the next runs again.\n\n"
    "Logs one line per event on stderr (--json-log: JSON lines). SIGTERM or SIGINT stop it\n"
    "(a running backup is cancelled and commits nothing); SIGHUP reloads the configuration.\n"
    "`caris-backup schedule status` and `caris-backup run-now` talk to it through\n"
    "BACKUP_DIR/metadata/daemon.sock.\n";

static const char RUN_NOW_USAGE[] =
    "usage: caris-backup run-now full|incremental [--wait] [--json]\n\n"
    "Runs a backup now, as a scheduled run does (database and files, each verified, then the\n"
    "retention policy). When the daemon runs, it runs the job (queued behind a running one)\n"
    "and --wait waits for it to end; otherwise this command runs it itself.\n"
    "Exit 0 when every step succeeded, 3 when one completed with warnings (a backup that could\n"
    "not read every file, a prune that found backups needing data that is gone), else the exit\n"
    "code of the first failure.\n";

/* ---- the daemon -------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_flag, reload_flag;
static int wake_w = -1;

static void on_daemon_signal(int sig)
{
    int saved = errno;
    if (sig == SIGHUP)
        __atomic_store_n(&reload_flag, 1, __ATOMIC_RELAXED);
    else
        __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    if (wake_w >= 0)
        (void)!write(wake_w, "s", 1);
    errno = saved;
}

struct log_sink {
    bool json;
};

static void daemon_log(void *ctx, enum log_level level, const char *event, const char *msg)
{
    const struct log_sink *ls = ctx;
    static const char *const names[] = {"error", "warning", "info", "debug"};
    const char *lv = level <= LOG_DEBUG ? names[level] : "info";
    if (level > log_get_level())
        return;
    char t[40];
    time_format_iso(time_now_ns(), t, sizeof(t));
    if (ls->json) {
        /* a message may hold bytes that are not UTF-8 (a path from the configuration), which
         * json_pack refuses: the line was "(null)" */
        json_t *j = json_pack("{s:s, s:s, s:s, s:o}", "time", t, "level", lv, "event", event,
                              "message", jsonx_text(msg));
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (s)
            fprintf(stderr, "%s\n", s);
        free(s);
        json_decref(j);
    } else {
        /* one line per event: a newline in a message (a name) does not forge a second */
        fprintf(stderr, "%s %s %s: ", t, lv, event);
        fputs_visible(msg, stderr, false);
        fputc('\n', stderr);
    }
    fflush(stderr);
}

/* systemd Type=notify: READY=1 on $NOTIFY_SOCKET (no libsystemd needed). */
static void sd_ready(void *ctx)
{
    (void)ctx;
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(a.sun_path))
        return;
    memcpy(a.sun_path, path, len);
    if (a.sun_path[0] == '@')
        a.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    (void)!sendto(fd, "READY=1", 7, 0, (struct sockaddr *)&a,
                  (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
    close(fd);
}

int cmd_daemon(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json-log", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct log_sink ls = {0};
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c == 'j')
            ls.json = true;
        else if (c == 'h') {
            fputs(DAEMON_USAGE, stdout);
            return 0;
        } else
            return cli_opt_fail();
    }
    if (optind < argc)
        return usage_error("unknown argument '%s' for daemon", argv[optind]);
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) != 0) {
        struct err e = ERR_INIT;
        err_sys(&e, errno, NULL, "pipe");
        return fail(&e);
    }
    wake_w = pfd[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_daemon_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* a stop (systemctl stop) ends the S3 requests in flight, not after their time limit
     * (TimeoutStopSec then SIGKILLs, and the lock stays); those begun after it still run */
    storage_set_cancel(&stop_flag);
    /* the repository every command uses: --repo, else BACKUP_REPOSITORY, else
     * BACKUP_DIR/repository (g->repo alone left BACKUP_REPOSITORY out) */
    struct caris_daemon_opts o = {.cfg = &g->cfg,
                                  .env_file = g->env_file,
                                  .repo = g->repo_path,
                                  .threads = g->threads,
                                  .log = daemon_log,
                                  .log_ctx = &ls,
                                  .stop = &stop_flag,
                                  .reload = &reload_flag,
                                  .wake_fd = pfd[0],
                                  .ready = sd_ready};
    struct err e = ERR_INIT;
    int rc = caris_daemon_run(&o, &e);
    wake_w = -1;
    close(pfd[0]);
    close(pfd[1]);
    return rc == 0 ? 0 : fail(&e);
}

/* ---- schedule status ------------------------------------------------------------------- */

/* o's time member key as human output shows times (BACKUP_TZ, offset, seconds), or none */
static const char *human_at(json_t *o, const char *key, const char *none, char *buf, size_t n)
{
    const char *iso = json_string_value(json_object_get(o, key));
    if (!iso)
        return none;
    cli_human_iso(iso, buf, n);
    return buf;
}

static void print_run(const char *label, json_t *run)
{
    if (!run) {
        printf("  %-9s never ran\n", label);
        return;
    }
    json_t *ids = json_object_get(run, "backupIds");
    char at[64];
    printf("  %-9s %s: %s", label, human_at(run, "startedAt", "?", at, sizeof(at)),
           !json_is_true(json_object_get(run, "ok"))        ? "FAILED"
           : json_is_true(json_object_get(run, "warnings")) ? "ok, with warnings"
                                                            : "ok");
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id) printf("%s%s", i ? ", " : " (", json_string_value(id));
    if (json_array_size(ids))
        printf(")");
    json_t *err = json_object_get(run, "error");
    if (err)
        printf(" - %s", json_string_value(json_object_get(err, "message")) ?: "");
    printf("\n");
}

/* A schedule command that takes no option but --help (argv: schedule NAME ...): 0 once usage
 * is printed (--help), the exit code of a bad option or argument, or -1 to go on. */
static int help_only(int argc, char **argv, const char *usage)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 0;
    while ((c = cli_getopt(argc - 1, argv + 1, "h", opts)) != -1) {
        if (c != 'h')
            return cli_opt_fail();
        fputs(usage, stdout);
        return 0;
    }
    if (optind < argc - 1)
        return strcmp(argv[1], "cancel") == 0
                   ? usage_error("unknown argument '%s' for schedule cancel", argv[optind + 1])
                   : usage_error("unknown argument '%s' for schedule status", argv[optind + 1]);
    return -1;
}

static const char STATUS_USAGE[] =
    "usage: caris-backup schedule status [--json]\n\n"
    "The scheduler's status (the seed's getStatus()): whether the daemon runs, the\n"
    "job running now and its progress, each schedule's last run (time, backup\n"
    "ids, result) and next run. Works whether the daemon runs or not (then from\n"
    "what it recorded in BACKUP_DIR/metadata/scheduler.json).\n";

int cmd_schedule_status(struct globals *g, int argc, char **argv)
{
    int code = help_only(argc, argv, STATUS_USAGE);
    if (code >= 0)
        return code;
    struct err e = ERR_INIT;
    json_t *s = NULL;
    if (caris_schedule_status(&g->cfg, &s, &e) != 0)
        return fail(&e);
    if (g->json) {
        print_json(s);
        json_decref(s);
        return 0;
    }
    bool running = json_is_true(json_object_get(s, "running"));
    char at[64];
    if (running)
        printf("daemon: running (pid %lld, since %s)\n",
               (long long)json_integer_value(json_object_get(s, "pid")),
               human_at(s, "startedAt", "?", at, sizeof(at)));
    else
        printf("daemon: not running\n");
    json_t *job = json_object_get(s, "job");
    if (json_is_object(job))
        printf("running now: %s %s run since %s%s%s\n",
               json_string_value(json_object_get(job, "schedule")) ?: "?",
               json_string_value(json_object_get(job, "type")) ?: "?",
               human_at(job, "startedAt", "?", at, sizeof(at)),
               json_object_get(job, "progress") ? ", " : "",
               json_string_value(json_object_get(job, "progress")) ?: "");
    const char *names[] = {"daily", "weekly", "monthly"};
    for (size_t i = 0; i < 3; i++) {
        json_t *st = json_object_get(json_object_get(s, "schedules"), names[i]);
        printf("%s (%s, %s): next run %s\n", names[i],
               json_string_value(json_object_get(st, "type")) ?: "?",
               json_string_value(json_object_get(st, "cron")) ?: "?",
               human_at(st, "nextRun", "none", at, sizeof(at)));
        print_run("last run", json_object_get(st, "lastRun"));
    }
    json_t *wa = json_object_get(s, "walArchiver");
    if (json_is_object(wa)) {
        printf("WAL pushes through the daemon: %lld (%lld already archived), %lld failed, %lld "
               "queued\n",
               (long long)json_integer_value(json_object_get(wa, "pushed")),
               (long long)json_integer_value(json_object_get(wa, "alreadyArchived")),
               (long long)json_integer_value(json_object_get(wa, "failed")),
               (long long)json_integer_value(json_object_get(wa, "queued")));
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(json_object_get(wa, "archive"), "timelines"), i, t)
            printf("WAL timeline %lld: %s .. %s, %lld segments, %zu gap%s (as of %s)\n",
                   (long long)json_integer_value(json_object_get(t, "timeline")),
                   json_string_value(json_object_get(t, "first")) ?: "-",
                   json_string_value(json_object_get(t, "last")) ?: "-",
                   (long long)json_integer_value(json_object_get(t, "segments")),
                   json_array_size(json_object_get(t, "gaps")),
                   json_array_size(json_object_get(t, "gaps")) == 1 ? "" : "s",
                   human_at(wa, "archiveAt", "?", at, sizeof(at)));
    }
    json_decref(s);
    return 0;
}

/* ---- schedule cancel ------------------------------------------------------------------- */

static const char CANCEL_USAGE[] =
    "usage: caris-backup schedule cancel [--json]\n\n"
    "Asks the running daemon to stop the job it runs now (a backup run that hangs,\n"
    "waiting for a table lock that is never released, say). The job stops at its\n"
    "next safe point, commits nothing half-made, fails with \"cancelled by\n"
    "`caris-backup schedule cancel`\" and is notified so; the queued jobs then run.\n"
    "Exit 0 when a job was asked to stop, 7 when none runs or no daemon runs.\n"
    "BACKUP_RUN_TIMEOUT does the same by itself for runs that go on too long.\n";

int cmd_schedule_cancel(struct globals *g, int argc, char **argv)
{
    int code = help_only(argc, argv, CANCEL_USAGE);
    if (code >= 0)
        return code;
    struct err e = ERR_INIT;
    json_t *ans = NULL;
    if (caris_daemon_cancel(&g->cfg, &ans, &e) != 0)
        return fail(&e);
    if (!json_is_true(json_object_get(ans, "cancelled"))) {
        json_decref(ans);
        err_set(&e, ERR_NOT_FOUND, "`caris-backup schedule status` shows the queue",
                "the daemon runs no job now: nothing cancelled");
        return fail(&e);
    }
    if (g->json)
        print_json(ans);
    else
        printf("job %s asked to stop: it ends at its next safe point (`caris-backup schedule "
               "status` shows it)\n",
               json_string_value(json_object_get(ans, "job")) ?: "?");
    json_decref(ans);
    return 0;
}

/* ---- run-now --------------------------------------------------------------------------- */

static int job_exit_code(json_t *res)
{
    /* with warnings: 3, as `backup files` that could not read every file (a cron line or a
     * timer that alerts on anything but 0 hears of it) */
    if (json_is_true(json_object_get(res, "ok")))
        return json_is_true(json_object_get(res, "warnings")) ? EXIT_WARNINGS : 0;
    /* the first failed step's code; a run that failed before any step (the repository could
     * not be opened, nothing to back up) or between them has the run's own error: its code
     * (it exited 1, where the same run without a daemon gives 6 or 4) */
    size_t i;
    json_t *st, *err = NULL;
    json_array_foreach(json_object_get(res, "steps"), i, st)
    {
        if (json_object_get(st, "error") && !json_is_true(json_object_get(st, "ok"))) {
            err = json_object_get(st, "error");
            break;
        }
    }
    if (!err)
        err = json_object_get(res, "error");
    struct err e = {.code = err_code_from_name(json_string_value(json_object_get(err, "code")))};
    return e.code == ERR_NONE ? 1 : err_exit_code(&e);
}

static void print_job(const struct globals *g, json_t *res)
{
    if (g->json) {
        print_json(res);
        return;
    }
    if (g->quiet)
        return;
    size_t i;
    json_t *st;
    bool step_failed = false;
    json_array_foreach(json_object_get(res, "steps"), i, st)
    {
        step_failed |= !json_is_true(json_object_get(st, "ok"));
        const char *msg = json_string_value(json_object_get(
            json_object_get(st, json_object_get(st, "error") ? "error" : "warning"), "message"));
        bool ok = json_is_true(json_object_get(st, "ok"));
        bool warned = ok && json_is_true(json_object_get(st, "warnings"));
        printf("%-9s %-8s %s%s%s%s\n", json_string_value(json_object_get(st, "step")),
               json_string_value(json_object_get(st, "what")) ?: "",
               json_string_value(json_object_get(st, "backupId")) ?: "",
               json_object_get(st, "backupId") ? ": " : "", warned ? "ok, with warnings: " : "",
               !ok      ? (msg ?: "failed")
               : warned ? (msg ?: "")
                        : "ok");
    }
    printf("%s run: %s\n", json_string_value(json_object_get(res, "type")),
           !json_is_true(json_object_get(res, "ok"))        ? "FAILED"
           : json_is_true(json_object_get(res, "warnings")) ? "ok, with WARNINGS"
                                                            : "ok");
    /* the run's own error when no step says it (one that failed before any step, or was
     * cancelled between them): it printed "FAILED" alone */
    json_t *err = json_object_get(res, "error");
    const char *msg = json_string_value(json_object_get(err, "message"));
    const char *hint = json_string_value(json_object_get(err, "hint"));
    if (msg && *msg && !step_failed && !json_is_true(json_object_get(res, "ok"))) {
        struct err pe = ERR_INIT;
        pe.code = ERR_FAILURE;
        snprintf(pe.msg, sizeof(pe.msg), "%s", msg);
        snprintf(pe.hint, sizeof(pe.hint), "%s", hint ? hint : "");
        err_print(&pe, stderr);
    }
}

int cmd_run_now(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"wait", no_argument, 0, 'w'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *type_s = NULL;
    bool wait = false;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c == 'w')
            wait = true;
        else if (c == 'h') {
            fputs(RUN_NOW_USAGE, stdout);
            return 0;
        } else
            return cli_opt_fail();
    }
    for (int i = optind; i < argc; i++) {
        if (type_s)
            return usage_error("unknown argument '%s' for run-now", argv[i]);
        type_s = argv[i];
    }
    struct err e = ERR_INIT;
    enum caris_job_type type;
    if (caris_job_type_parse(type_s, &type, &e) != 0)
        return fail(&e);
    json_t *res = NULL;
    int rc = caris_daemon_run_now(&g->cfg, type, wait, &res, &e);
    if (rc < 0)
        return fail(&e);
    if (rc == 0) { /* the daemon took it */
        int code = 0;
        if (!wait) {
            if (g->json)
                print_json(res);
            else if (!g->quiet)
                printf("queued in the daemon (position %lld); `caris-backup schedule status` "
                       "shows its progress\n",
                       (long long)json_integer_value(json_object_get(res, "position")));
        } else {
            print_job(g, res);
            code = job_exit_code(res);
        }
        json_decref(res);
        return code;
    }
    /* no daemon: run it here, the same job */
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_op op;
    cli_op_init(g, &op);
    struct caris_job_opts jo = {
        .type = type, .cfg = &g->cfg, .verify = true, .retention = true, .threads = g->threads};
    struct caris_job_result jr;
    rc = caris_job_run(r, &jo, &op, &jr, &e);
    cli_op_end(&op);
    repo_close(r);
    if (jr.nsteps == 0 && rc != 0) {
        caris_job_result_free(&jr);
        return fail(&e);
    }
    res = caris_job_result_to_json(&jr);
    caris_job_result_free(&jr);
    print_job(g, res);
    int code = job_exit_code(res);
    json_decref(res);
    return code;
}

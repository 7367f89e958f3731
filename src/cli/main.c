/* caris-backup: the command-line face of the library. It parses arguments, calls the
 * services, prints results; it never touches the repository itself. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "caris/backup.h"
#include "caris/jsonx.h"
#include "caris/op.h"
#include "caris/open.h"
#include "caris/dbbackup.h"
#include "caris/config.h"
#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/fsmeta.h"
#include "caris/inspect.h"
#include "caris/keys.h"
#include "caris/repo.h"
#include "caris/retention.h"
#include "caris/secmem.h"
#include "caris/storage.h"
#include "caris/walwindow.h"

#include "cli.h"

static const char USAGE[] =
    "usage: caris-backup [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "CÁRIS Backup & Recovery: encrypted, deduplicated, verifiable backups.\n"
    "\n"
    "Commands:\n"
    "  init                      create the repository (BACKUP_DIR/repository)\n"
    "  backup files [--full|--incremental] [--exclude PAT]... [--exclude-file F]\n"
    "               [--time TIME] [PATH...]\n"
    "                            back up files (PATHs or BACKUP_FILES_PATHS)\n"
    "  backup database [--full|--incremental] [--compress|--no-compress] [--time TIME]\n"
    "                            back up the PostgreSQL database at POSTGRES_URL\n"
    "  backup database --physical [--full|--incremental] [--spread-checkpoint]\n"
    "                            base backup of the whole cluster (replication protocol)\n"
    "  list [--type files|database] [--wal]\n"
    "                            list backups\n"
    "  verify ID | --all         read every blob of a backup and check every file's SHA-256\n"
    "  show ID                   a backup's summary, warnings, test restores, verifications\n"
    "  ls ID [PATH] [--long] [--recursive]\n"
    "                            list the files of a backup (a database backup: its tables)\n"
    "  dump ID PATH              one file's bytes, or a directory as a tar stream, to stdout\n"
    "  diff ID1 ID2              what was added, removed and changed between two backups\n"
    "  find PATTERN [--since TIME] [--until TIME]\n"
    "                            find files by name or path glob across backups\n"
    "  mount DIR [--allow-other] browse the backups as a read-only file system (FUSE)\n"
    "  copy (ID...|--latest|--all) --to REPO [--to-key-env VAR]\n"
    "                            copy backups into another repository (e.g. S3)\n"
    "  upload ID                 copy a backup to BACKUP_CLOUD_REPOSITORY\n"
    "  check [--read-data]       check the repository's structure (and all its data)\n"
    "  restore files ID --target DIR [--include PATH]... [--overwrite]\n"
    "                   [--no-xattrs] [--no-owner]\n"
    "                            restore a file backup\n"
    "  restore database ID [--target-url URL] [--clean] [--create] [--table T]...\n"
    "                   [--schema S]... [--jobs N] [--dry-run] [--verify]\n"
    "                            restore a database backup (`restore database --help`)\n"
    "  restore database --physical --pgdata DIR [ID] [--to-time T|--to-lsn L|--to-xid X|\n"
    "                   --to-name N] [--start --port P]\n"
    "                            restore a base backup, to a point in time (needs --env-file)\n"
    "  test-restore ID [--scratch database|local]\n"
    "                            prove a database backup restores: scratch restore, row counts\n"
    "  forget [--keep-last N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N]\n"
    "         [--keep-yearly N] [--keep-within DURATION] [--type files|database]\n"
    "         [--dry-run] [--prune]\n"
    "                            apply the retention policy (`forget --help`)\n"
    "  forget ID... [--dry-run] [--prune]\n"
    "                            forget exactly these backups (full ids)\n"
    "  prune [--dry-run] [--max-unused PERCENT] [--accept-missing]\n"
    "                            delete data no backup needs (exclusive lock)\n"
    "  key list | key add [--label L] | key remove ID\n"
    "                            manage key slots (key add reads the new key from stdin or\n"
    "                            CARIS_NEW_ENCRYPTION_KEY, never from the command line)\n"
    "  schedule next [--cron EXPR] [--tz ZONE] [--from TIME] [--count N]\n"
    "                            next run times of the schedules (or of EXPR)\n"
    "  unlock [--force]          remove stale locks and, when no operation runs, the\n"
    "                            leftovers of crashed ones (--force: every lock)\n"
    "  daemon [--json-log]       run the scheduler in the foreground (`daemon --help`)\n"
    "  schedule cancel           stop the daemon's running job (at its next safe point)\n"
    "  schedule status           the scheduler's status: last and next runs, the job running\n"
    "  run-now full|incremental [--wait]\n"
    "                            run a scheduled-style backup now (in the daemon if it runs)\n"
    "  debug pack PACK           list the blobs in a pack (investigating damage)\n"
    "  debug backup ID           where a backup's manifest lies (pack, offset)\n"
    "  notify test               send a test notification to every configured channel\n"
    "  token add|list|revoke     API tokens (Bearer credentials of the daemon's HTTP API)\n"
    "  audit [--since T] | audit verify\n"
    "                            the audit log of every operation; verify checks its chain\n"
    "  wal push PATH | wal get NAME DEST | wal list | wal receive\n"
    "                            the WAL archive (archive_command / restore_command)\n"
    "  version                   print the version\n"
    "\n"
    "ID: a backup id, any unique prefix of one, `latest` (of the kind the command takes),\n"
    "`latest:files` or `latest:database`.\n"
    "\n"
    "Options:\n"
    "  --env-file PATH   read variables from PATH instead of ./.env.local\n"
    "  --repo LOCATION   repository: a directory, or s3:https://HOST[:PORT]/BUCKET[/PREFIX]\n"
    "                    (default: $BACKUP_REPOSITORY, else $BACKUP_DIR/repository)\n"
    "  --json            machine-readable output on stdout\n"
    "  --quiet           no progress, no informational messages\n"
    "  --threads N       threads of each worker pool (default: number of CPUs); a file\n"
    "                    backup also reads on 4 threads, a file restore runs 2 pools (small\n"
    "                    files; the chunks of larger ones)\n"
    "  --lock-wait DURATION  wait up to DURATION (30s, 5m, 1h; default 0) for a conflicting\n"
    "                    repository lock to go, then fail with exit 9\n"
    "  --s3-connections N  uploads to an S3 repository at once, 1..64 (default 8;\n"
    "                    BACKUP_S3_CONNECTIONS)\n"
    "  -h, --help        this help; `caris-backup COMMAND --help` for a command\n"
    "Options go before or after COMMAND, as --opt VALUE or --opt=VALUE; long options are\n"
    "never abbreviated; -- ends the options.\n"
    "\n"
    "Environment (also read from .env.local; the environment wins):\n"
    "  BACKUP_DIR             backup directory (default /var/backups/caris)\n"
    "  BACKUP_ENCRYPTION_KEY  repository key, at least 32 characters (required)\n"
    "  BACKUP_KDF_MEMORY / BACKUP_KDF_OPS   init's Argon2id MiB and passes (default 64 / 3)\n"
    "  BACKUP_FILES_PATHS     colon-separated directories for `backup files`\n"
    "  POSTGRES_URL           the database for `backup database` (libpq URI or key=value)\n"
    "  BACKUP_COMPRESS_DUMPS  compress database dumps before encryption (default false)\n"
    "  BACKUP_RETENTION_DAILY / _WEEKLY / _MONTHLY   forget's policy (default 7 / 4 / 12)\n"
    "  BACKUP_TZ              time zone of the schedules and of retention's days and weeks\n"
    "                         (default: local)\n"
    "  BACKUP_SCHEDULE_DAILY / _WEEKLY / _MONTHLY   cron expressions or off (default\n"
    "                         '0 3 * * *' / '0 2 * * 0' / '0 1 1 * *')\n"
    "  CARIS_RESTORE_TARGET_URL  restore target with a password (never on the command line)\n"
    "  BACKUP_SMTP_URL, BACKUP_EMAIL_RECIPIENTS, BACKUP_SLACK_WEBHOOK_URL, ...\n"
    "                         notifications (`caris-backup notify --help`)\n"
    "  BACKUP_REPOSITORY      repository location (a directory or an s3: URL, as --repo)\n"
    "  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN / AWS_REGION\n"
    "                         S3 credentials (or BACKUP_S3_* of the same names); also\n"
    "                         BACKUP_S3_CA_FILE, BACKUP_S3_RETRY_SECONDS (default 60),\n"
    "                         BACKUP_S3_VIRTUAL_HOST (true: s3:https://BUCKET.HOST/PREFIX)\n"
    "\n"
    "Exit codes:\n"
    "  0 success            3 completed with warnings   1 failure\n"
    "  2 usage error        4 damage (integrity check failed)\n"
    "  5 wrong encryption key                          6 configuration missing or invalid\n"
    "  7 not found          8 I/O error (permission denied, disk full)\n"
    "  9 repository locked  10 database error\n";

static bool json_errors;  /* --json: errors are a JSON object on stdout too */
static bool json_printed; /* print_json wrote a document on stdout */

void cli_set_json_errors(bool on)
{
    json_errors = on;
}

/* The loaded configuration, whose secrets no message shows. */
static const struct config *secrets_cfg;

/* e, with every secret's value it quotes replaced (a secret typed where an argument goes, the
 * key given as a backup id, comes back in the message that quotes the argument): in out when
 * there was one, else e itself. */
static const struct err *err_scrubbed(const struct err *e, struct err *out)
{
    if (!secrets_cfg || !err_is_set(e))
        return e;
    *out = *e;
    bool m = config_scrub_secrets(secrets_cfg, out->msg, sizeof(out->msg));
    bool h = config_scrub_secrets(secrets_cfg, out->hint, sizeof(out->hint));
    return m || h ? out : e;
}

void cli_err_print(const struct err *e)
{
    struct err s;
    err_print(err_scrubbed(e, &s), stderr);
}

json_t *cli_err_to_json(const struct err *e_in)
{
    struct err s;
    const struct err *e = err_scrubbed(e_in, &s);
    /* The same text as on stderr; "code" is the error class, exitCode the process's (`wal
     * get` exits 255 on every failure it prints: see main). */
    /* jsonx_text: a message may hold bytes that are not UTF-8 (a path named on the command
     * line), which json_pack refuses: no error object was printed at all */
    return json_pack("{s:s, s:o, s:o?, s:i}", "code", err_code_name(e->code), "message",
                     jsonx_text(e->msg), "hint", e->hint[0] ? jsonx_text(e->hint) : NULL,
                     "exitCode", cli_wal_get_mode ? WAL_GET_FATAL_EXIT : err_exit_code(e));
}

static char first_failure[sizeof(((struct err *)0)->msg)]; /* for the audit line */

const char *cli_first_failure(void)
{
    return first_failure[0] ? first_failure : NULL;
}

int fail(const struct err *e_in)
{
    struct err scrubbed;
    const struct err *e = err_scrubbed(e_in, &scrubbed);
    if (!first_failure[0] && err_is_set(e))
        snprintf(first_failure, sizeof(first_failure), "%s", e->msg);
    err_print(e, stderr);
    /* One document on stdout: a command that printed its result (which says what failed)
     * and then fails keeps that result as the document. */
    if (json_errors && !json_printed && err_is_set(e)) {
        json_t *j = json_pack("{s:o}", "error", cli_err_to_json(e));
        if (j) {
            fflush(stdout);
            print_json(j);
            fflush(stdout);
            json_decref(j);
        }
    }
    return err_exit_code(e);
}

int cli_usage_missing(const char *usage, const char *msg)
{
    fputs(usage, stderr);
    if (json_errors && !json_printed) { /* the usage is on stderr: the document only */
        struct err e = ERR_INIT;
        err_set(&e, ERR_USAGE, "see `caris-backup --help`", "%s", msg);
        json_t *j = json_pack("{s:o}", "error", cli_err_to_json(&e));
        print_json(j);
        json_decref(j);
    }
    return 2;
}

int usage_error(const char *fmt, const char *arg)
{
    struct err e = ERR_INIT;
    err_set(&e, ERR_USAGE, "see `caris-backup --help`", fmt, arg ? arg : "");
    return fail(&e);
}

int cli_unechoed_error(const char *what, const char *word, const char *todo, const char *could_be)
{
    struct err e = ERR_INIT;
    err_set(&e, ERR_USAGE, todo,
            "%s (a word of %zu bytes, not shown: it may be %s; if it is, treat it as exposed)",
            what, strlen(word), could_be);
    return fail(&e);
}

int cli_backup_mode(char *seen, char flag)
{
    if (*seen && *seen != flag)
        return usage_error("--full and --incremental exclude each other%s: give one", "");
    *seen = flag;
    return 0;
}

void print_json(json_t *j)
{
    /* What a command that moves data cost in S3 requests, when it talked to an S3 server. */
    struct storage_s3_counters c;
    storage_s3_get_counters(&c);
    if (c.requests && cli_command_moves_data() && json_is_object(j) && !json_object_get(j, "s3"))
        json_object_set_new(j, "s3",
                            json_pack("{s:I, s:I, s:I}", "requests", (json_int_t)c.requests,
                                      "bytesSent", (json_int_t)c.bytes_sent, "bytesReceived",
                                      (json_int_t)c.bytes_received));
    json_t *pub = jsonx_public(j); /* public names: camelCase (docs/JSON.md) */
    print_json_as_stored(pub);
    json_decref(pub);
}

/* A result that could not be built as JSON (a text jansson refused): the command fails. */
static bool json_lost;

void print_json_as_stored(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    if (s) {
        json_printed = true;
        puts(s);
        free(s);
    } else {
        json_lost = true; /* printed nothing and exited 0 */
    }
}

/* A progress line on stderr, rewritten in place; only when stderr is a terminal. */
static void progress_line(void *ctx, const struct caris_progress *p)
{
    (void)ctx;
    char done[32], total[32], rate[32];
    double secs = (double)p->elapsed_ns / 1e9;
    str_human_bytes(p->bytes_done, done, sizeof(done));
    str_human_bytes(secs > 0 ? (uint64_t)((double)p->bytes_done / secs) : 0, rate, sizeof(rate));
    char eta[32] = "";
    if (p->bytes_total > p->bytes_done && p->bytes_done > 0 && secs > 0) {
        double left = (double)(p->bytes_total - p->bytes_done) / ((double)p->bytes_done / secs);
        snprintf(eta, sizeof(eta), ", ETA %d:%02d", (int)left / 60, (int)left % 60);
    }
    if (p->bytes_total) {
        str_human_bytes(p->bytes_total, total, sizeof(total));
        fprintf(stderr, "\r\033[K%s: %llu files, %s of %s, %s/s%s", p->phase,
                (unsigned long long)p->files_done, done, total, rate, eta);
    } else {
        fprintf(stderr, "\r\033[K%s: %llu files, %s, %s/s", p->phase,
                (unsigned long long)p->files_done, done, rate);
    }
    fflush(stderr);
}

caris_progress_fn progress_fn(const struct globals *g)
{
    return (!g->quiet && isatty(STDERR_FILENO)) ? progress_line : NULL;
}

void progress_end(const struct globals *g)
{
    if (progress_fn(g))
        fprintf(stderr, "\r\033[K");
}

void cli_warn(const char *what, const char *msg, const char *hint)
{
    fputs("warning: ", stderr);
    if (what) {
        fputs_visible(what, stderr, false);
        fputs(": ", stderr);
    }
    fputs_visible(msg ? msg : "", stderr, true);
    fputc('\n', stderr);
    if (hint && *hint) {
        fputs("HINT: ", stderr);
        fputs_visible(hint, stderr, true);
        fputc('\n', stderr);
    }
}

/* What opening found (the state record's audit, index entries whose pack is missing): on
 * stderr, even with --quiet, since it says a backup may be gone. */
static void report_open(const struct globals *g, struct repo *r, const struct caris_open_result *o)
{
    if (g->no_open_warnings)
        return;
    if (err_is_set(&o->audit_err))
        cli_err_print(&o->audit_err);
    size_t i;
    json_t *w;
    json_array_foreach(repo_warnings(r), i, w)
        cli_warn(json_string_value(json_object_get(w, "object")) ?: "?",
                 json_string_value(json_object_get(w, "message")), NULL);
    char hint[512];
    if (caris_open_hint(r, o, config_backup_dir(&g->cfg), hint, sizeof(hint))) {
        fputs("HINT: ", stderr);
        fputs_visible(hint, stderr, true);
        fputc('\n', stderr);
    }
}

/* A warning the repository handle met after the opening (report_open told those before). */
static void warn_late(void *ctx, const char *object, const char *message)
{
    const struct globals *g = ctx;
    if (!g->no_open_warnings)
        cli_warn(object ? object : "?", message, NULL);
}

/* Told once when an operation starts to wait for a lock (--lock-wait). */
static void lock_waiting(void *ctx, const char *conflict)
{
    const struct globals *g = ctx;
    if (!g->quiet)
        fprintf(stderr, "waiting up to %lld s for the repository lock: %s\n",
                (long long)(g->lock_wait_ms / 1000), conflict);
}

struct repo *open_repo(struct globals *g, bool create, struct err *e)
{
    (void)create; /* only `init` creates a repository */
    struct caris_open_opts o = {.repo_path = g->repo_path,
                                .backup_dir = config_backup_dir(&g->cfg),
                                .lock_wait_ms = g->lock_wait_ms,
                                .lock_waiting = lock_waiting,
                                .lock_waiting_ctx = g};
    if (config_encryption_key(&g->cfg, &o.key, e) != 0)
        return NULL;
    struct caris_open_result res;
    struct repo *r = caris_repo_open(&o, &res, e);
    if (!r && !g->repo && config_get(&g->cfg, "BACKUP_REPOSITORY"))
        cli_location_var_fault(e, "BACKUP_REPOSITORY");
    if (!r)
        return NULL;
    report_open(g, r, &res);
    repo_set_warn_sink(r, warn_late, g);
    json_decref(g->state);
    g->state = res.state;
    return r;
}

/* ---- commands ------------------------------------------------------------------------ */

/* An Argon2id setting of init (--kdf-memory in MiB when mem, else --kdf-ops), checked against
 * the readers' bounds (repo_kdf_check) before anything exists. */
static int kdf_value(const char *s, bool mem, unsigned long long *out)
{
    return cli_parse_uint(s, 1, mem ? (REPO_KDF_MEM_MAX >> 20) : REPO_KDF_OPS_MAX, out);
}

/* The defaults of --kdf-memory / --kdf-ops from BACKUP_KDF_MEMORY / BACKUP_KDF_OPS. */
static int kdf_config(const struct globals *g, struct repo_init_opts *io, struct err *e)
{
    static const struct {
        const char *name, *range;
        bool mem;
    } v[] = {{"BACKUP_KDF_MEMORY", "1 to 1024 (MiB)", true},
             {"BACKUP_KDF_OPS", "1 to 8 (passes)", false}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        if (v[i].mem ? io->kdf_mem != 0 : io->kdf_ops != 0)
            continue; /* the command line wins */
        const char *s = config_get(&g->cfg, v[i].name);
        unsigned long long x;
        if (!s)
            continue;
        if (kdf_value(s, v[i].mem, &x) != 0)
            return err_set(e, ERR_CONFIG, "unset it for the default, or see `init --help`",
                           "%s takes %s, not '%.40s'", v[i].name, v[i].range, s);
        if (v[i].mem)
            io->kdf_mem = (size_t)x << 20;
        else
            io->kdf_ops = x;
    }
    return 0;
}

static int cmd_init(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"kdf-memory", required_argument, 0, 'm'},
                                         {"kdf-ops", required_argument, 0, 'o'},
                                         {"compression", required_argument, 0, 'c'},
                                         {"if-missing", no_argument, 0, 'i'},
                                         {"copy-chunker-from", required_argument, 0, 'f'},
                                         {"to-key-env", required_argument, 0, 'k'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    struct repo_init_opts io = {0};
    bool if_missing = false;
    const char *chunker_from = NULL, *to_key_env = NULL;
    int c;
    optind = 0; /* 0, not 1: makes GNU getopt reinitialise */
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        switch (c) {
        case 'm':
        case 'o': {
            unsigned long long v;
            if (kdf_value(optarg, c == 'm', &v) != 0)
                return usage_error(c == 'm' ? "--kdf-memory takes 1 to 1024 (MiB), got '%s'"
                                            : "--kdf-ops takes 1 to 8 (passes), got '%s'",
                                   optarg);
            if (c == 'm')
                io.kdf_mem = (size_t)v << 20;
            else
                io.kdf_ops = v;
            break;
        }
        case 'c': {
            /* 0 meant the default and a negative level never compressed: both silently */
            unsigned long long v;
            if (cli_parse_uint(optarg, 1, 19, &v) != 0)
                return usage_error("--compression takes a zstd level, 1 to 19, got '%s'", optarg);
            io.compression_level = (int)v;
            break;
        }
        case 'i':
            if_missing = true;
            break;
        case 'f':
            chunker_from = optarg;
            break;
        case 'k':
            to_key_env = optarg;
            break;
        case 'h':
            printf("usage: caris-backup init [--kdf-memory MIB] [--kdf-ops N] [--compression "
                   "LEVEL] [--if-missing]\n"
                   "                         [--copy-chunker-from SOURCE [--to-key-env VAR]]\n\n"
                   "Creates an encrypted repository at $BACKUP_DIR/repository (or --repo).\n"
                   "Only init creates a repository: every other command refuses a missing one\n"
                   "(exit 7), so that a mistyped path never becomes a new, empty repository.\n"
                   "The key is BACKUP_ENCRYPTION_KEY; Argon2id defaults: 64 MiB, 3 passes\n"
                   "(--kdf-memory 1 to 1024 MiB, --kdf-ops 1 to 8: readers refuse key slots "
                   "beyond;\ndefaults from BACKUP_KDF_MEMORY and BACKUP_KDF_OPS when set).\n"
                   "zstd level 1 to 19, default 3 (1 = fastest, 19 = smallest).\n"
                   "--if-missing: succeed without doing anything when a repository exists (with\n"
                   "--copy-chunker-from, one that shares SOURCE's chunking: another is refused).\n"
                   "--copy-chunker-from SOURCE: the new repository takes SOURCE's chunker seed,\n"
                   "parameters and chunk-id key, so that `copy` from SOURCE sends only missing\n"
                   "blobs. SOURCE opens with BACKUP_ENCRYPTION_KEY; the new repository's key is\n"
                   "then the variable named by --to-key-env (default CARIS_COPY_TO_KEY).\n");
            return 0;
        default:
            return cli_opt_fail();
        }
    }
    struct err e = ERR_INIT;
    const char *key;
    /* the repository's place is BACKUP_DIR or --repo: an operand taken for it used to be
     * ignored, and the repository made elsewhere */
    if (optind < argc)
        return usage_error("init takes no operand%s (what was given is not shown: it may be "
                           "a key): the repository is made at $BACKUP_DIR/repository, or where "
                           "the global --repo PATH says",
                           NULL);
    if (to_key_env && !chunker_from)
        return usage_error("--to-key-env goes with --copy-chunker-from%s", NULL);
    if (kdf_config(g, &io, &e) != 0)
        return fail(&e);
    if (chunker_from ? cli_to_key(g, to_key_env, &key, &e) != 0
                     : config_encryption_key(&g->cfg, &key, &e) != 0)
        return fail(&e);
    int ex = if_missing ? repo_exists(g->repo_path, &e) : 0;
    if (ex < 0)
        return fail(&e);
    if (ex == 1 && chunker_from) {
        /* the repository that is there must be the copy destination asked for: one that
         * does not share SOURCE's chunking would only fail at the first copy */
        struct caris_open_opts oo = {
            .repo_path = g->repo_path, .key = key, .backup_dir = config_backup_dir(&g->cfg)};
        struct caris_open_result ores;
        struct repo *have = caris_repo_open(&oo, &ores, &e);
        if (!have)
            return fail(&e);
        json_decref(ores.state);
        struct repo *from = cli_open_chunker_source(g, chunker_from, &e);
        bool same = from && repo_same_chunking(from, have);
        repo_close(from);
        repo_close(have);
        if (!from)
            return fail(&e);
        if (!same) {
            err_set(&e, ERR_USAGE,
                    "give --repo a new path for the copy destination, or drop "
                    "--copy-chunker-from to keep this repository as it is",
                    "repository %s exists but does not share the chunking of %s (it was not "
                    "made with --copy-chunker-from %s): copy to it would refuse",
                    g->repo_path, chunker_from, chunker_from);
            return fail(&e);
        }
    }
    if (ex == 1) {
        if (g->json) {
            json_t *j = json_pack("{s:s, s:b}", "repository", g->repo_path, "created", 0);
            print_json(j);
            json_decref(j);
        } else if (!g->quiet) {
            printf("repository %s exists\n", g->repo_path);
        }
        return 0;
    }
    if (!g->repo && caris_backup_dir_prepare(config_backup_dir(&g->cfg), &e) != 0)
        return fail(&e);
    struct repo *from = NULL;
    if (chunker_from && !(from = cli_open_chunker_source(g, chunker_from, &e)))
        return fail(&e);
    io.chunker_from = from;
    struct repo *r = repo_init(g->repo_path, key, &io, &e);
    repo_close(from);
    if (!r)
        return fail(&e);
    /* A repository created anew at a path: this host's copies of the state record of the one
     * that was there before would report it as replaced (see repo_state_retire_others). */
    const char *bdir = config_backup_dir(&g->cfg);
    if (bdir) {
        char *local = xasprintf("%s/metadata/state-%s.json", bdir, repo_id(r));
        repo_state_use_local(r, local);
        free(local);
        size_t retired = repo_state_retire_others(r);
        if (retired && !g->quiet)
            fprintf(stderr,
                    "note: this host's record of the repository that was at %s before was set "
                    "aside (%s/metadata/state-*.json.replaced)\n",
                    g->repo_path, bdir);
    }
    if (g->json) {
        json_t *j = json_pack("{s:s, s:b}", "repository", g->repo_path, "created", 1);
        print_json(j);
        json_decref(j);
    } else if (!g->quiet) {
        printf("created repository %s\n", g->repo_path);
        /* with --copy-chunker-from the new repository's key is the destination's */
        printf("keep %s somewhere safe outside this machine: without it no backup can be "
               "restored\n",
               chunker_from ? (to_key_env ? to_key_env : "CARIS_COPY_TO_KEY")
                            : "BACKUP_ENCRYPTION_KEY");
    }
    repo_close(r);
    return 0;
}

bool print_backup_json(const struct globals *g, const struct caris_backup_result *res)
{
    cli_audit_backup_id(res->id); /* every backup's summary comes through here */
    if (g->json) {
        json_t *j = caris_backup_result_to_json(res);
        print_json(j);
        json_decref(j);
    }
    return g->json || g->quiet;
}

static void print_summary(const struct globals *g, const struct caris_backup_result *res)
{
    if (print_backup_json(g, res))
        return;
    char read[32], added[32], stored[32], dur[32];
    cli_human_duration(res->duration_ms, dur, sizeof(dur));
    str_human_bytes(res->bytes_read, read, sizeof(read));
    str_human_bytes(res->bytes_added, added, sizeof(added));
    str_human_bytes(res->bytes_stored, stored, sizeof(stored));
    printf("backup %s %s\n", res->id, res->warnings ? "completed with warnings" : "completed");
    printf("  files %llu (%llu unchanged), dirs %llu, read %s, new data %s, stored %s, %s\n",
           (unsigned long long)res->files, (unsigned long long)res->files_unchanged,
           (unsigned long long)res->dirs, read, added, stored, dur);
    if (res->parent)
        printf("  based on %s\n", res->parent);
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int cmd_backup(struct globals *g, int argc, char **argv)
{
    if (argc < 2)
        return usage_error("%s: `backup files` or `backup database` (see `caris-backup backup "
                           "--help`)",
                           "missing the backup kind");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        printf("usage: caris-backup backup files [--full|--incremental] [--exclude PATTERN]...\n"
               "                                 [--exclude-file FILE] [--time TIME] [PATH...]\n\n"
               "Backs up PATHs (default: BACKUP_FILES_PATHS, colon-separated). --full reads\n"
               "every file; --incremental (the default) reads only files whose size, mtime,\n"
               "ctime or inode changed since the last backup of the same paths. Either way\n"
               "the backup is complete on its own.\n"
               "PATTERN is fnmatch(3): with a '/' it matches the path below the root,\n"
               "otherwise the name; a trailing '/' is ignored. An absolute PATTERN starts\n"
               "with a root's path and matches below that root; one outside every root is\n"
               "refused, and so is one that can match nothing (empty, or with a '.', '..'\n"
               "or empty component) or every name below a root ('*', '?*', '/srv/*').\n"
               "No PATH may be inside another. The repository must exist (`caris-backup init`).\n"
               "--time TIME records TIME as the backup's time (and in its id), e.g. to import\n"
               "an older backup: 2024-01-15T03:00:00Z, 2024-01-15T04:00:00+01:00, or local time\n"
               "in BACKUP_TZ as 2024-01-15 04:00:00. Not in the future; an existing id is an\n"
               "error.\n"
               "Database backups: `backup database --help`.\n");
        return 0;
    }
    if (strcmp(argv[1], "database") == 0)
        return cmd_backup_database(g, argc, argv);
    if (strcmp(argv[1], "files") != 0)
        return usage_error("unknown backup kind '%s' (expected files or database)", argv[1]);
    /* A file backup's buffers of 256 KiB and more are mapped and unmapped, never kept by
     * malloc's arenas: glibc's moving threshold served them from per-thread arenas, which
     * fragment and keep what was freed (~25 MiB of a full 2 GB backup's peak RSS, see
     * docs/REPOSITORY-FORMAT.md, "Memory"). Its large buffers live long or are reused (chunk
     * spares), so nothing is mapped per chunk. Not for every command: a restore frees two
     * buffers per chunk, which would then be mapped afresh each (2-3x its system time). */
    mallopt(M_MMAP_THRESHOLD, 256 << 10);
    static const struct option opts[] = {{"full", no_argument, 0, 'F'},
                                         {"incremental", no_argument, 0, 'I'},
                                         {"exclude", required_argument, 0, 'x'},
                                         {"exclude-file", required_argument, 0, 'X'},
                                         {"time", required_argument, 0, 'T'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    bool incremental = true;
    char mode_seen = 0;
    int64_t time_ns = 0;
    char **excl = NULL;
    size_t nexcl = 0;
    struct err e = ERR_INIT;
    int c;
    /* Parse after the kind word: argv[1] plays the program name. */
    int sargc = argc - 1;
    char **sargv = argv + 1;
    optind = 0;
    while ((c = cli_getopt(sargc, sargv, "h", opts)) != -1) {
        switch (c) {
        case 'F':
        case 'I':
            if ((c = cli_backup_mode(&mode_seen, (char)c)) != 0) {
                free_list(excl, nexcl);
                return c;
            }
            incremental = mode_seen == 'I';
            break;
        case 'x':
            excl = xrealloc(excl, xsize(nexcl + 2, sizeof(char *), 0));
            excl[nexcl++] = xstrdup(optarg);
            excl[nexcl] = NULL;
            break;
        case 'X':
            if (fswalk_read_exclude_file(optarg, &excl, &nexcl, &e) != 0) {
                free_list(excl, nexcl);
                return fail(&e);
            }
            break;
        case 'T':
            if (backup_time_option(g, optarg, &time_ns, &e) != 0) {
                free_list(excl, nexcl);
                return fail(&e);
            }
            break;
        case 'h':
            return cmd_backup(g, 2, (char *[]){"backup", "--help", NULL});
        default:
            free_list(excl, nexcl);
            return cli_opt_fail();
        }
    }
    char **paths = NULL;
    size_t npaths = 0;
    for (int i = optind; i < sargc; i++) {
        paths = xrealloc(paths, xsize(npaths + 1, sizeof(char *), 0));
        paths[npaths++] = xstrdup(sargv[i]);
    }
    if (!npaths && config_get(&g->cfg, "BACKUP_FILES_PATHS")) {
        free(paths);
        paths = caris_files_paths_split(config_get(&g->cfg, "BACKUP_FILES_PATHS"), &npaths);
    }
    struct repo *r = NULL;
    struct caris_backup_result res = {0};
    int rc;
    struct caris_op op;
    cli_op_init_service(g, &op); /* Ctrl-C / SIGTERM: the backup stops, commits nothing */
    struct files_backup_opts o = {.paths = (const char *const *)paths,
                                  .npaths = npaths,
                                  .excludes = (const char *const *)excl,
                                  .threads = g->threads,
                                  .progress = progress_fn(g),
                                  .estimate_total = progress_fn(g) != NULL,
                                  .time_ns = time_ns,
                                  .op = &op};
    char *cache_dir = xasprintf("%s/metadata/cache", config_backup_dir(&g->cfg));
    o.cache_dir = cache_dir;
    if (!npaths) {
        err_set(&e, ERR_CONFIG,
                "name the paths on the command line or set BACKUP_FILES_PATHS (colon-separated) "
                "in the environment or .env.local",
                "BACKUP_FILES_PATHS not set and no paths given");
        rc = -1;
    } else {
        /* the first directories are read while the key is derived */
        o.prewalk = caris_files_prewalk_start(&o);
        if (!(r = open_repo(g, false, &e))) {
            rc = -1;
        } else {
            rc = incremental ? caris_files_backup_incremental(r, &o, &res, &e)
                             : caris_files_backup_full(r, &o, &res, &e);
            progress_end(g);
        }
        caris_files_prewalk_free(o.prewalk);
    }
    int code;
    if (rc < 0) {
        code = fail(&e);
    } else {
        print_summary(g, &res);
        code = rc == CARIS_DONE_WARNINGS ? EXIT_WARNINGS : 0;
    }
    caris_backup_result_free(&res);
    cli_keep_repo_for_audit(g, r);
    free(cache_dir);
    free_list(paths, npaths);
    free_list(excl, nexcl);
    return code;
}

static int cmd_list(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"type", required_argument, 0, 't'},
                                         {"wal", no_argument, 0, 'w'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *kind = NULL;
    bool wal = false;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c == 'w') {
            wal = true;
        } else if (c == 't') {
            if (cli_set_once("--type", &kind, optarg) != 0)
                return 2;
            if (strcmp(kind, "files") && strcmp(kind, "database"))
                return usage_error("unknown --type '%s' (files or database)", kind);
        } else if (c == 'h') {
            printf("usage: caris-backup [--json] list [--type files|database] [--wal]\n\nLists "
                   "backups, oldest first: id, type, time, duration, files, bytes read,\nbytes "
                   "added to the repository, status. --wal adds the WAL archive: the range\n"
                   "per timeline, its gaps and the recovery window (as `wal list`); with --json "
                   "the\noutput is then {\"backups\": [...], \"wal\": {...}} instead of the "
                   "array.\n");
            return 0;
        } else {
            return cli_opt_fail();
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s' for list", argv[optind]);
    struct err e = ERR_INIT;
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_list_result res;
    int rc = caris_list(r, kind, g->state, &res, &e);
    json_t *window = rc == 0 && wal ? caris_wal_window(r, NULL, &e) : NULL;
    repo_close(r);
    if (rc == 0 && wal && !window) {
        caris_list_result_free(&res);
        rc = -1;
    }
    if (rc != 0)
        return fail(&e);
    if (g->json) {
        json_t *j = caris_list_result_to_json(&res);
        if (window)
            j = json_pack("{s:o, s:o}", "backups", j, "wal", window);
        window = NULL;
        print_json(j);
        json_decref(j);
    } else if (res.n == 0) {
        if (!g->quiet)
            printf("no %s%sbackups in %s\n",
                   !kind                        ? ""
                   : strcmp(kind, "files") == 0 ? "file"
                                                : kind,
                   kind ? " " : "", g->repo_path);
    } else {
        printf("%-44s %-18s %-25s %8s %9s %10s %10s %s\n", "ID", "TYPE", "STARTED", "DURATION",
               "FILES", "READ", "ADDED", "STATUS");
        for (size_t i = 0; i < res.n; i++) {
            const struct caris_list_entry *x = &res.v[i];
            if (x->missing) {
                printf("%-44s %-18s %-25s %8s %9s %10s %10s %s\n", x->id, "?", "?", "", "", "", "",
                       "MISSING (in the state record, snapshot gone)");
                continue;
            }
            if (x->file) { /* a snapshot file that cannot be read */
                printf("%-44s %-18s %-25s %8s %9s %10s %10s DAMAGED (%s: %s)\n",
                       x->id ? x->id : x->file, "?", "?", "", "", "", "", x->file,
                       x->damage ? x->damage : "");
                continue;
            }
            char read[32], added[32], type[40], when[40], dur[32];
            str_human_bytes(x->bytes_read, read, sizeof(read));
            str_human_bytes(x->bytes_added, added, sizeof(added));
            snprintf(type, sizeof(type), "%s/%s", x->kind ? x->kind : "?", x->mode ? x->mode : "?");
            /* physical backups (issue 10): method and WAL range */
            json_t *xb = json_array_get(res.entries, i);
            const char *lsns = json_string_value(json_object_get(xb, "lsn_range"));
            if (lsns)
                snprintf(type, sizeof(type), "%s/physical", x->kind ? x->kind : "?");
            cli_human_iso(x->started, when, sizeof(when));
            cli_human_duration(x->duration_ms, dur, sizeof(dur));
            /* the last test restore, when it failed (only --json showed it) */
            json_t *tr = json_object_get(xb, "lastTestRestore");
            bool drill_failed = tr && json_is_false(json_object_get(tr, "ok"));
            printf("%-44s %-18s %-25s %8s %9llu %10s %10s %s%s%s\n", x->id ? x->id : "?", type,
                   when, dur, (unsigned long long)x->files, read, added,
                   x->status ? x->status : "?",
                   drill_failed ? ", TEST RESTORE FAILED (`show` says why)" : "",
                   !x->record                           ? ""
                   : strcmp(x->record, "replayed") == 0 ? " REPLAYED (was forgotten)"
                   : strcmp(x->record, "removing") == 0
                       ? " FORGOTTEN (its forget was interrupted: the "
                         "next prune removes it)"
                       : "");
            if (lsns)
                printf("%-44s LSN %s\n", "", lsns);
            int64_t t;
            if (x->started && time_parse_iso(x->started, &t) == 0 &&
                caris_backup_time_future(t, time_now_ns())) {
                char text[300];
                caris_backup_future_text(x->id, t, time_now_ns(), text, sizeof(text));
                fprintf(stderr,
                        "warning: %s: the clock was ahead when it was made, or is behind now; "
                        "`latest` is refused while it is the newest (`forget --help`)\n",
                        text);
            }
        }
    }
    if (window) { /* not --json */
        json_t *rw = json_object_get(window, "recovery_window");
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(window, "timelines"), i, t)
            printf("WAL timeline %lld: %s .. %s, %lld segments, %zu gap%s\n",
                   (long long)json_integer_value(json_object_get(t, "timeline")),
                   json_string_value(json_object_get(t, "first")) ?: "-",
                   json_string_value(json_object_get(t, "last")) ?: "-",
                   (long long)json_integer_value(json_object_get(t, "segments")),
                   json_array_size(json_object_get(t, "gaps")),
                   json_array_size(json_object_get(t, "gaps")) == 1 ? "" : "s");
        if (json_is_string(json_object_get(rw, "earliest")))
            printf("recovery window: %s .. %s\n",
                   json_string_value(json_object_get(rw, "earliest")),
                   json_string_value(json_object_get(rw, "latest")));
        else
            printf("recovery window: none (%s)\n",
                   json_string_value(json_object_get(rw, "reason")) ?: "?");
        json_decref(window);
    }
    caris_list_result_free(&res);
    return 0;
}

/* verify: each backup's result as its verification ends. */
struct verify_print {
    const struct globals *g;
    int code;     /* exit code so far */
    json_t *json; /* --json: the results so far (an array, for one backup too: docs/JSON.md) */
    bool all;
};

/* The path of an entry of a restore's or a verify's errors and warnings, quoted, for a
 * human (free it), or NULL when the entry is about the backup as a whole. A name that is not
 * UTF-8 comes as path_b64: shown with its odd bytes as \xNN, as `ls` shows it, never as the
 * base64 text. */
static char *report_path(json_t *x)
{
    json_t *path = json_object_get(x, "path");
    if (path)
        return json_is_null(path) ? NULL : json_dumps(path, JSON_ENCODE_ANY);
    char *raw;
    size_t len;
    if (caris_json_bytes(x, "path", &raw, &len) != 0)
        return xstrdup("?");
    char esc[1200];
    str_escape(raw, len, esc, sizeof(esc));
    free(raw);
    return xasprintf("\"%s\"", esc);
}

static void verify_print_one(void *ctx, const char *id, int rc,
                             const struct caris_verify_result *res, const struct err *ve)
{
    struct verify_print *vp = ctx;
    const struct globals *g = vp->g;
    progress_end(g);
    if (res->ran)
        cli_audit_backup_id(id); /* resolved (open_repo_id, or --all's list) */
    if (rc != 0) {
        if (!res->ran && g->json && vp->all) {
            /* One document on stdout: the backup's entry in the list says why. Its check did
             * not run (or was cancelled): "valid" is null, not judged, never false. */
            cli_err_print(ve);
            vp->code = err_exit_code(ve);
            json_array_append_new(vp->json, json_pack("{s:s, s:n, s:o}", "backupId", id, "valid",
                                                      "error", cli_err_to_json(ve)));
            return;
        }
        if (!res->ran) {
            vp->code = fail(ve);
            return;
        }
        if (!g->json)
            cli_err_print(ve);
        vp->code = err_exit_code(ve);
    }
    if (g->json) {
        json_array_append_new(vp->json, caris_verify_result_to_json(res));
        return;
    }
    char wal[96] = "";
    if (res->read.wal)
        snprintf(wal, sizeof(wal), "; the WAL it needs: %llu files, %llu bytes",
                 (unsigned long long)res->read.wal_files, (unsigned long long)res->read.wal_bytes);
    printf("%s: %s (%llu files, %llu bytes checked%s)\n", id, rc == 0 ? "valid" : "DAMAGED",
           (unsigned long long)res->read.files, (unsigned long long)res->read.bytes, wal);
    size_t k;
    json_t *er;
    json_array_foreach(res->read.errors, k, er)
    {
        char *p = report_path(er);
        printf("  %s: %s\n", p ? p : "(the backup)",
               json_string_value(json_object_get(er, "error")));
        free(p);
    }
}

static int cmd_verify(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"all", no_argument, 0, 'a'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool all = false;
    const char *id = NULL;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c == 'a')
            all = true;
        else if (c == 'h') {
            printf("usage: caris-backup verify ID | --all\n\nReads every blob the backup needs "
                   "(authentication tag and chunk id) and checks\nevery file's SHA-256; for a "
                   "physical backup, also every file of the WAL it needs to\nbecome consistent, "
                   "from the WAL archive. Exit 4 when anything is damaged or missing.\n");
            return 0;
        } else
            return cli_opt_fail();
    }
    for (int i = optind; i < argc; i++) {
        if (id)
            return usage_error("verify takes one backup id (or --all), got '%s' too", argv[i]);
        id = argv[i];
    }
    if (!id && !all)
        return usage_error("verify needs a backup id or --all%s", NULL);
    if (id && all) /* --all won, and the id was ignored */
        return usage_error("verify takes a backup id or --all, not both (got '%s' and --all)", id);
    struct err e = ERR_INIT;
    struct caris_op op;
    cli_op_init_service(g, &op); /* Ctrl-C / SIGTERM: stops at the next file or chunk */
    char idbuf[CARIS_ID_MAX];
    struct repo *r = all ? open_repo(g, false, &e) : open_repo_id(g, id, NULL, idbuf, &e);
    if (!r)
        return fail(&e);
    if (!all)
        id = idbuf;
    struct verify_print vp = {.g = g, .all = all, .json = g->json ? json_array() : NULL};
    struct verify_opts vo = {.progress = progress_fn(g), .threads = g->threads, .op = &op};
    if (all) {
        if (caris_backup_verify_all(r, &vo, verify_print_one, &vp, &e) != 0 && vp.code == 0)
            vp.code = fail(&e); /* the list could not be read */
    } else {
        struct caris_verify_result res;
        int rc = caris_verify(r, id, &vo, &res, &e);
        verify_print_one(&vp, id, rc, &res, &e);
        caris_verify_result_free(&res);
    }
    if (g->json && (all || json_array_size(vp.json)))
        print_json(vp.json);
    json_decref(vp.json);
    int code = vp.code;
    repo_close(r);
    return code;
}

static void check_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    fprintf(stderr, "\r\033[Kcheck: pack %llu of %llu", (unsigned long long)done,
            (unsigned long long)total);
    fflush(stderr);
}

static int cmd_check(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"read-data", no_argument, 0, 'r'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct repo_check_opts o = {.threads = g->threads};
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c == 'r')
            o.read_data = true;
        else if (c == 'h') {
            printf("usage: caris-backup check [--read-data]\n\nChecks the repository: key "
                   "slots, config, index files, packs, snapshots, and\nthat every blob a backup "
                   "needs is indexed in an existing pack. --read-data\nalso reads every pack "
                   "and authenticates every blob. Exit 4 on damage; the\nreport names the "
                   "backups affected.\n");
            return 0;
        } else
            return cli_opt_fail();
    }
    if (optind < argc)
        return usage_error("unknown argument '%s' for check", argv[optind]);
    if (progress_fn(g))
        o.progress = check_progress;
    struct caris_op op;
    cli_op_init_service(g, &op); /* Ctrl-C / SIGTERM: stops between packs */
    o.op = &op;
    struct err e = ERR_INIT;
    g->no_open_warnings = true; /* its report has them */
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct repo_check_result res;
    int rc = repo_check_run(r, &o, &res, &e);
    progress_end(g);
    /* the WAL archive's gaps, and which recovery each breaks (caris/walwindow.h) */
    if (rc == 0 && caris_wal_check(r, res.errors, res.warnings, NULL, &e) != 0) {
        if (err_is_set(&e)) { /* could not read the archive: that is damage to report */
            json_array_append_new(res.errors,
                                  json_pack("{s:s, s:s}", "object", "records/wal", "error", e.msg));
            err_clear(&e);
        }
        res.ok = false;
    }
    if (rc == 0) { /* list then shows the backups found damaged as damaged */
        json_t *j = repo_check_result_to_json(&res);
        caris_check_record(r, j, &op);
        json_decref(j);
    }
    repo_close(r);
    if (rc != 0)
        return fail(&e);
    bool ok = res.ok;
    if (g->json) {
        json_t *j = repo_check_result_to_json(&res);
        print_json(j);
        json_decref(j);
    } else {
        const struct repo_check_stats *st = &res.stats;
        printf("repository %s: %s\n", g->repo_path, ok ? "no errors found" : "DAMAGED");
        printf("  %llu packs, %llu blobs, %llu index files, %llu snapshots%s\n",
               (unsigned long long)st->packs, (unsigned long long)st->blobs,
               (unsigned long long)st->index_files, (unsigned long long)st->snapshots,
               o.read_data ? ", all data read" : "");
        json_t *lists[] = {res.errors, res.warnings};
        for (int k = 0; k < 2; k++) {
            size_t i;
            json_t *x;
            json_array_foreach(lists[k], i, x)
            {
                printf("  %s: %s: %s", k ? "warning" : "error",
                       json_string_value(json_object_get(x, "object")),
                       json_string_value(json_object_get(x, "error")));
                json_t *b = json_object_get(x, "backups");
                if (json_array_size(b)) {
                    printf(" (affects");
                    size_t q;
                    json_t *bid;
                    json_array_foreach(b, q, bid) printf(" %s", json_string_value(bid));
                    printf(")");
                }
                printf("\n");
            }
        }
    }
    repo_check_result_free(&res);
    if (!ok) {
        err_set(&e, ERR_DAMAGE,
                "do not restore the affected backups; use a different backup, and keep a copy "
                "of the repository before repairing it",
                "repository check found damage");
        return fail(&e);
    }
    return 0;
}

static int cmd_restore(struct globals *g, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_missing("usage: caris-backup restore files|database ID ... (see "
                                 "`caris-backup restore --help`)\n",
                                 "restore needs what to restore: files or database");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        printf("usage: caris-backup restore files ID --target DIR [--include PATH]... "
               "[--overwrite]\n                     [--no-xattrs] [--no-owner]\n\nRestores a file "
               "backup under DIR (each backed-up path at "
               "DIR/<its absolute path>).\nEvery file is written to a temporary name and renamed "
               "once its SHA-256 matched.\nDIR must be empty unless --overwrite. --include "
               "restores only that path and what is below it:\nabsolute as backed up, or relative "
               "to a "
               "root as `ls` shows it (found under two roots:\nan error listing both).\n"
               "Owners, modes, times and extended attributes (ACLs too) are restored; one that\n"
               "the target refuses fails the restore. Onto a file system that cannot hold them\n"
               "(vfat, exFAT, some NFS exports): --no-xattrs leaves the extended attributes\n"
               "(and ACLs) out, --no-owner makes the restoring user the owner (dropping the\n"
               "setuid/setgid bits that were set for another owner or group).\n");
        return 0;
    }
    if (strcmp(argv[1], "database") == 0)
        return cmd_restore_database(g, argc, argv);
    if (strcmp(argv[1], "files") != 0)
        return usage_error("unknown restore kind '%s' (expected files or database)", argv[1]);
    static const struct option opts[] = {{"target", required_argument, 0, 't'},
                                         {"include", required_argument, 0, 'i'},
                                         {"overwrite", no_argument, 0, 'o'},
                                         {"no-xattrs", no_argument, 0, 'X'},
                                         {"no-owner", no_argument, 0, 'O'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *target = NULL;
    bool no_xattrs = false, no_owner = false;
    const char **inc = NULL;
    size_t ninc = 0;
    bool overwrite = false;
    int c;
    int sargc = argc - 1;
    char **sargv = argv + 1;
    optind = 0;
    while ((c = cli_getopt(sargc, sargv, "h", opts)) != -1) {
        switch (c) {
        case 't':
            if (cli_set_once("--target", &target, optarg) != 0) {
                free(inc);
                return 2;
            }
            break;
        case 'i':
            inc = xrealloc(inc, xsize(ninc + 1, sizeof(char *), 0));
            inc[ninc++] = optarg;
            break;
        case 'o':
            overwrite = true;
            break;
        case 'X':
            no_xattrs = true;
            break;
        case 'O':
            no_owner = true;
            break;
        case 'h':
            free(inc);
            return cmd_restore(g, 2, (char *[]){"restore", "--help", NULL});
        default:
            free(inc);
            return cli_opt_fail();
        }
    }
    if (optind != sargc - 1 || !target) {
        free(inc);
        return usage_error("restore files needs exactly one backup id and --target DIR%s", NULL);
    }
    struct err e = ERR_INIT;
    struct caris_op op;
    cli_op_init_service(g, &op); /* Ctrl-C / SIGTERM: stops; restored files stay complete */
    char id[CARIS_ID_MAX];
    struct repo *r = open_repo_id(g, sargv[optind], "files", id, &e);
    if (!r) {
        free(inc);
        return fail(&e);
    }
    struct files_restore_opts o = {.backup_id = id,
                                   .target = target,
                                   .includes = inc,
                                   .nincludes = ninc,
                                   .overwrite = overwrite,
                                   .backup_dir = config_backup_dir(&g->cfg),
                                   .env_file = g->env_file,
                                   .no_xattrs = no_xattrs,
                                   .no_owner = no_owner,
                                   .threads = g->threads,
                                   .progress = progress_fn(g),
                                   .op = &op};
    struct caris_files_restore_result res;
    cli_audit_backup_id(id); /* resolved by open_repo_id */
    int rc = caris_restore_files(r, &o, &res, &e);
    progress_end(g);
    cli_keep_repo_for_audit(g, r); /* its key derived once: the audit log's head goes in */
    free(inc);
    int code = rc < 0 ? err_exit_code(&e) : rc == CARIS_DONE_WARNINGS ? EXIT_WARNINGS : 0;
    if (g->json && res.ran) {
        json_t *j = caris_files_restore_result_to_json(&res);
        /* the result says what was restored; a failure's error goes in the same document
         * (an --include that matched nothing left "errors": [] and no word of why) */
        if (rc < 0 && err_is_set(&e))
            json_object_set_new(j, "error", cli_err_to_json(&e));
        print_json(j);
        json_decref(j);
    } else if (res.ran) {
        char bytes[32];
        str_human_bytes(res.read.bytes, bytes, sizeof(bytes));
        if (!g->quiet && rc >= 0)
            printf("restored %llu files, %llu dirs, %s into %s\n",
                   (unsigned long long)res.read.files, (unsigned long long)res.read.dirs, bytes,
                   target);
        /* each file's error, also when the restore failed for them ("N file(s) failed
         * verification" named none of them) */
        json_t *lists[] = {res.read.errors, res.read.warnings};
        for (int k = 0; k < 2; k++) {
            size_t i;
            json_t *x;
            json_array_foreach(lists[k], i, x)
            {
                char *p = report_path(x);
                fprintf(stderr, "%s: %s: %s\n", k ? "warning" : "error", p ? p : "(the backup)",
                        json_string_value(json_object_get(x, "error")));
                free(p);
            }
        }
    }
    if (rc < 0 && g->json && !res.ran)
        fail(&e); /* the error object is the one document on stdout */
    else if (rc < 0)
        cli_err_print(&e);
    caris_files_restore_result_free(&res);
    return code;
}

/* The new key for `key add`, in secret memory (free with secmem_free): from
 * CARIS_NEW_ENCRYPTION_KEY (which config_load took out of the environment) or one line of
 * stdin, read with read(2) so that no stdio buffer keeps a copy. */
#define NEW_KEY_MAX 4096

/* The terminal's settings while a key is typed without echo, restored by a signal that ends
 * the process meanwhile (Ctrl-C would otherwise leave the shell without echo). */
static struct termios key_tty_saved;

static void key_tty_restore_signal(int sig)
{
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &key_tty_saved);
    signal(sig, SIG_DFL);
    raise(sig);
}

static const int KEY_TTY_SIGNALS[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define KEY_TTY_NSIG (sizeof(KEY_TTY_SIGNALS) / sizeof(KEY_TTY_SIGNALS[0]))

/* Turns the terminal's echo off (true when it did: restore with key_tty_echo_on): a key typed
 * at the prompt was shown on the screen, and kept in its scrollback and session recordings. */
static bool key_tty_echo_off(struct sigaction old[KEY_TTY_NSIG])
{
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &key_tty_saved) != 0)
        return false;
    struct sigaction sa = {.sa_handler = key_tty_restore_signal};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < KEY_TTY_NSIG; i++)
        sigaction(KEY_TTY_SIGNALS[i], &sa, &old[i]);
    struct termios t = key_tty_saved;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) == 0)
        return true;
    for (size_t i = 0; i < KEY_TTY_NSIG; i++)
        sigaction(KEY_TTY_SIGNALS[i], &old[i], NULL);
    return false;
}

static void key_tty_echo_on(const struct sigaction old[KEY_TTY_NSIG])
{
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &key_tty_saved);
    for (size_t i = 0; i < KEY_TTY_NSIG; i++)
        sigaction(KEY_TTY_SIGNALS[i], &old[i], NULL);
    fputc('\n', stderr); /* the Enter typed was not echoed either */
}

static char *read_new_key(const struct globals *g, struct err *e)
{
    const char *env = config_get(&g->cfg, "CARIS_NEW_ENCRYPTION_KEY");
    if (env)
        return secmem_strdup(env);
    if (isatty(STDIN_FILENO))
        fprintf(stderr, "new encryption key (at least 32 characters): ");
    struct sigaction old_sig[KEY_TTY_NSIG];
    bool no_echo = key_tty_echo_off(old_sig);
    char *line = secmem_alloc(NEW_KEY_MAX + 1);
    size_t n = 0;
    for (;;) {
        char ch;
        ssize_t r = read(STDIN_FILENO, &ch, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || ch == '\n')
            break;
        if (n == NEW_KEY_MAX) {
            if (no_echo)
                key_tty_echo_on(old_sig);
            secmem_free(line);
            err_set(e, ERR_USAGE, "use a key of at most 4096 characters",
                    "the new key is too long");
            return NULL;
        }
        line[n++] = ch;
    }
    if (no_echo)
        key_tty_echo_on(old_sig);
    while (n && line[n - 1] == '\r')
        line[--n] = '\0';
    if (n == 0) {
        secmem_free(line);
        err_set(e, ERR_USAGE, "pipe the key on stdin or set CARIS_NEW_ENCRYPTION_KEY",
                "no new key given");
        return NULL;
    }
    return line;
}

bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

static int cmd_key(struct globals *g, int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_missing("usage: caris-backup key list | key add [--label L] | key "
                                 "remove ID\n",
                                 "key needs a subcommand: list, add or remove");
    if (wants_help(argc, argv)) {
        printf("usage: caris-backup key list | key add [--label L] | key remove ID\n\n"
               "Key slots: each wraps the repository's master key under a key derived with\n"
               "Argon2id from a password. `key add` reads the new key from stdin or\n"
               "CARIS_NEW_ENCRYPTION_KEY (never from the command line, which `ps` shows).\n"
               "The key in use (BACKUP_ENCRYPTION_KEY) cannot be removed.\n");
        return 0;
    }
    struct err e = ERR_INIT;
    const char *sub = argv[1];
    /* the word is not echoed, nor any operand below: `key KEY` is a key typed where the
     * subcommand goes, and the error goes to the terminal and into the audit log */
    if (strcmp(sub, "list") && strcmp(sub, "add") && strcmp(sub, "remove"))
        return cli_unechoed_error("unknown key command", sub, "use key list, key add or key remove",
                                  "a key");
    static const struct option opts[] = {{"label", required_argument, 0, 'l'}, {0, 0, 0, 0}};
    const char *label = "";
    int c, sargc = argc - 1;
    char **sargv = argv + 1;
    optind = 0;
    while ((c = cli_getopt(sargc, sargv, "", opts)) != -1) {
        if (c != 'l' || strcmp(sub, "add") != 0)
            return c == 'l' ? usage_error("--label is for key add%s", NULL) : cli_opt_fail();
        label = optarg;
    }
    if (strcmp(sub, "remove") == 0 && sargc - optind != 1)
        return usage_error("key remove needs one key id%s", NULL);
    /* never echoed: `key add KEY` is the mistake of passing the new key on the command line,
     * and the error goes to the terminal and into the audit log */
    if (strcmp(sub, "add") == 0 && optind < sargc)
        return usage_error("key add takes no argument: the new key is read from stdin or "
                           "CARIS_NEW_ENCRYPTION_KEY, never from the command line (which `ps` "
                           "shows): treat a key given there as exposed%s",
                           "");
    if (strcmp(sub, "remove") != 0 && optind < sargc)
        return cli_unechoed_error("unexpected argument for key list", sargv[optind],
                                  "key list takes no argument", "a key");
    const char *key_id = strcmp(sub, "remove") == 0 ? sargv[optind] : NULL;
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_op op;
    cli_op_init(g, &op);
    int code = 0;
    if (strcmp(sub, "list") == 0) {
        struct caris_key_list l;
        if (caris_key_list(r, &op, &l, &e) != 0) {
            code = fail(&e);
        } else if (g->json) {
            json_t *j = caris_key_list_to_json(&l);
            print_json(j);
            json_decref(j);
        } else {
            for (size_t i = 0; i < l.n; i++) {
                /* A slot's label and date are anyone's bytes until the slot opens: escaped. */
                const struct caris_key_slot *k = &l.slots[i];
                const char *lab = k->label ? k->label : "", *cre = k->created ? k->created : "";
                char le[1100], ce[200];
                str_escape(lab, strlen(lab), le, sizeof(le));
                int64_t ns;
                if (time_parse_iso(cre, &ns) == 0) /* a time: as human output shows times */
                    cli_human_iso(cre, ce, sizeof(ce));
                else
                    str_escape(cre, strlen(cre), ce, sizeof(ce));
                printf("%s %s  %s  %s%s%s\n", k->current ? "*" : " ", k->id, ce, le,
                       k->error ? "  UNUSABLE: " : "", k->error ? k->error : "");
            }
        }
        caris_key_list_free(&l); /* zeroed on failure */
    } else if (strcmp(sub, "add") == 0) {
        char *key = read_new_key(g, &e);
        struct caris_key_add_result res;
        /* nor a secret of the configuration (BACKUP_ENCRYPTION_KEY, a password) */
        bool label_secret = key && label && *label && config_holds_secret(&g->cfg, label);
        if (label_secret)
            err_set(&e, ERR_USAGE,
                    "give a label that says whose key it is or where it is kept; nothing was added",
                    "the key slot's label holds a secret of the configuration (labels are stored "
                    "in clear)");
        if (!key || label_secret || caris_key_add(r, key, label, &op, &res, &e) != 0) {
            code = fail(&e);
        } else if (g->json) {
            json_t *j = caris_key_add_result_to_json(&res);
            print_json(j);
            json_decref(j);
        } else {
            printf("added key slot %s\n", res.id);
        }
        secmem_free(key);
    } else {
        if (caris_key_remove(r, key_id, &op, &e) != 0) {
            code = fail(&e);
        } else if (g->json) {
            json_t *j = json_pack("{s:s, s:b}", "id", key_id, "removed", 1);
            print_json(j);
            json_decref(j);
        } else if (!g->quiet) {
            printf("removed key slot %s\n", key_id);
        }
    }
    repo_close(r);
    return code;
}

static void print_lock_line(json_t *x, const char *verb)
{
    const char *reason = json_string_value(json_object_get(x, "reason"));
    bool forced = json_is_true(json_object_get(x, "forced"));
    printf("%s %s %s (%s)%s%s%s\n", verb, json_string_value(json_object_get(x, "kind")),
           json_string_value(json_object_get(x, "object")),
           json_string_value(json_object_get(x, "description")), reason ? ": " : "",
           reason ? reason : "", forced ? " [live, removed by --force]" : "");
}

static void print_lock_lines(json_t *arr, const char *verb)
{
    size_t i;
    json_t *x;
    json_array_foreach(arr, i, x) print_lock_line(x, verb);
}

static int cmd_unlock(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"force", no_argument, 0, 'f'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool force = false;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c == 'f')
            force = true;
        else if (c == 'h') {
            printf("usage: caris-backup unlock [--force] [--json]\n\n"
                   "Removes stale locks and backup-id claims: those whose process is gone on\n"
                   "this host, or that were not refreshed for 30 minutes (live ones are\n"
                   "refreshed every 5 minutes). Live locks are listed and kept. When no live\n"
                   "lock remains, it also removes the temporary files (.tmp-*) that crashed\n"
                   "writers left, under the exclusive lock.\n"
                   "--force removes every lock and claim, live or not, and says which: only\n"
                   "when you know that no caris-backup runs on any host using this repository\n"
                   "(an operation whose lock was removed fails before it commits anything).\n");
            return 0;
        } else
            return cli_opt_fail();
    }
    if (optind < argc)
        return usage_error("unknown argument '%s' for unlock", argv[optind]);
    struct err e = ERR_INIT;
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    json_t *rep = NULL;
    int rc = repo_unlock_stale(r, force, &rep, &e);
    repo_close(r);
    if (rc != 0)
        return fail(&e);
    if (g->json) {
        print_json(rep);
    } else if (!g->quiet) {
        json_t *removed = json_object_get(rep, "removed"), *kept = json_object_get(rep, "kept");
        json_t *lr = json_object_get(rep, "leftovers_removed");
        json_t *lk = json_object_get(rep, "leftovers_kept");
        print_lock_lines(removed, "removed");
        print_lock_lines(kept, "kept live");
        size_t i;
        json_t *x;
        json_array_foreach(lr, i, x)
        {
            if (strcmp(json_string_value(json_object_get(x, "kind")), "temporary") == 0)
                printf("removed leftover %s (%lld bytes)\n",
                       json_string_value(json_object_get(x, "object")),
                       (long long)json_integer_value(json_object_get(x, "size")));
            else
                print_lock_line(x, "removed");
        }
        if (json_array_size(lk))
            printf("kept %zu temporary file(s): %s\n", json_array_size(lk),
                   json_array_size(kept) ? "operations are running (they may be theirs)"
                                         : "too recent to be sure no writer owns them");
        if (force && json_array_size(removed))
            printf("--force: removed %zu lock(s) and claim(s), live ones included\n",
                   json_array_size(removed));
        if (!json_array_size(removed) && !json_array_size(lr) && !json_array_size(kept))
            printf("no locks and no leftovers in %s\n", g->repo_path);
    }
    json_decref(rep);
    return 0;
}

int cli_parse_uint(const char *s, unsigned long long lo, unsigned long long hi,
                   unsigned long long *out)
{
    unsigned long long v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (ULLONG_MAX - (unsigned)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (unsigned)(*s - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int64_t cli_parse_duration_ms(const char *s)
{
    /* decimal digits with at most one '.' (strtod also took "0x10", "1e1", a tab in front) */
    size_t digits = strspn(s, "0123456789."), dots = 0;
    for (size_t i = 0; i < digits; i++)
        dots += s[i] == '.';
    if (!digits || dots > 1 || (digits == 1 && dots == 1))
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end != s + digits || errno || !(v >= 0))
        return -1;
    double mult = 1000;
    if (*end) {
        if (end[1])
            return -1;
        switch (*end) {
        case 's':
            mult = 1000;
            break;
        case 'm':
            mult = 60000;
            break;
        case 'h':
            mult = 3600000;
            break;
        case 'd':
            mult = 86400000;
            break;
        default:
            return -1;
        }
    }
    double ms = v * mult;
    if (ms > 366.0 * 86400000)
        return -1;
    return (int64_t)ms;
}

/* Every command word main dispatches (for the closest match to an unknown one). */
static const char *const COMMANDS[] = {
    "init",     "backup",       "list",  "verify", "check",   "restore", "key",   "unlock",
    "forget",   "prune",        "debug", "daemon", "run-now", "notify",  "token", "audit",
    "schedule", "show",         "ls",    "dump",   "diff",    "find",    "mount", "version",
    "help",     "test-restore", "copy",  "upload", "wal"};

/* The seed's operations that later issues deliver: an honest error until then. */
static const char *const PLANNED[] = {"pitr", "serve", NULL};

static bool is_planned(const char *cmd)
{
    for (size_t i = 0; PLANNED[i]; i++)
        if (strcmp(cmd, PLANNED[i]) == 0)
            return true;
    return false;
}

static int not_implemented(const char *cmd)
{
    struct err e = ERR_INIT;
    err_set(&e, ERR_FAILURE, "see the Status section of the README", "not implemented yet: %s",
            cmd);
    return fail(&e);
}

/* Whether the command line is `wal get` (PostgreSQL's restore_command): the command word is
 * the first word that is neither an option nor a global option's value. */
static bool is_wal_get(int argc, char **argv)
{
    static const char *const WITH_VALUE[] = {"--env-file", "--repo", "--threads", "--lock-wait",
                                             "--s3-connections"};
    int i = 1;
    for (; i < argc; i++) {
        bool value = false;
        for (size_t k = 0; k < sizeof(WITH_VALUE) / sizeof(WITH_VALUE[0]); k++)
            value |= strcmp(argv[i], WITH_VALUE[k]) == 0;
        if (value)
            i++;
        else if (argv[i][0] != '-')
            break;
    }
    if (i >= argc || strcmp(argv[i], "wal") != 0)
        return false;
    for (i++; i < argc; i++)
        if (argv[i][0] != '-')
            return strcmp(argv[i], "get") == 0;
    return false;
}

static int main_run(int argc, char **argv);

/* What was printed must have been written: `ls --json > inventory.json` on a full disk must not
 * exit 0 with half a document. code, or the failure's when a success's output was lost. */
static int stdout_written(int code)
{
    if ((fflush(stdout) != 0 || ferror(stdout)) && (code == 0 || code == 3)) {
        struct err we = ERR_INIT;
        int en = errno ? errno : EIO;
        err_sys(&we, en,
                en == EPIPE ? NULL : "free space where the output goes, or send it elsewhere",
                "cannot write the output (stdout)");
        json_printed = true; /* no error document on the stdout that failed */
        code = fail(&we);
    }
    return code;
}

static void on_sigpipe(int sig)
{
    (void)sig;
}

int main(int argc, char **argv)
{
    /* A reader that stops early (`dump ... | head`) makes a write fail with EPIPE instead of
     * killing the process: the command then ends as on any failed write, its lock released and
     * its audit line written (killed, a dump that had sent data left no audit line). A handler,
     * not SIG_IGN: programs run from here (pg_dump, pg_restore) get the default back at exec. */
    struct sigaction sp;
    memset(&sp, 0, sizeof(sp));
    sp.sa_handler = on_sigpipe;
    sigaction(SIGPIPE, &sp, NULL);
    /* PostgreSQL takes a restore_command's exit status up to 125 as "not in the archive" and
     * ends the recovery there, promoting without the rest of the WAL: every failure of `wal
     * get` (a bad env file, a usage error, a wrong key...) but that answer is 255 (fatal) */
    bool wal_get = is_wal_get(argc, argv);
    cli_wal_get_mode = wal_get;
    int code = main_run(argc, argv);
    if (wal_get && code != 0 && !(code == 1 && cli_wal_get_absent))
        return WAL_GET_FATAL_EXIT;
    return code;
}

static int main_run(int argc, char **argv)
{
    /* Before anything holds a key: a core dump would write keys and data to disk. */
    struct err ce = ERR_INIT;
    if (secmem_no_core_dumps(&ce) != 0)
        return fail(&ce);
    struct globals g = {0};
    enum cli_action action;
    /* --json anywhere (before a "--"): the errors of the global options are JSON too */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--json") == 0)
            cli_set_json_errors(true);
    int code = cli_globals_extract(&g, &argc, argv, &action);
    if (code != 0)
        return code;
    cli_set_json_errors(g.json);
    if (action == CLI_HELP) {
        fputs(USAGE, stdout);
        return stdout_written(0);
    }
    if (action == CLI_VERSION) {
        printf("caris-backup %s\n", VERSION);
        return stdout_written(0);
    }
    if (argc < 2)
        return cli_usage_missing(USAGE, "no command given");
    optind = 1;
    char **cargv = argv + optind;
    int cargc = argc - optind;
    const char *cmd = cargv[0];
    cli_set_command(cargc, cargv);
    if (strcmp(cmd, "version") == 0) {
        if (wants_help(cargc, cargv))
            printf("usage: caris-backup [--json] version\n\nPrints the program's version and "
                   "the repository format it reads.\n");
        else if (cargc > 1)
            return usage_error("version takes no argument (got '%s')", cargv[1]);
        else if (g.json) {
            json_t *j = json_pack("{s:i, s:s}", "repositoryFormat", REPO_FORMAT_VERSION, "version",
                                  VERSION);
            print_json(j);
            json_decref(j);
        } else
            printf("caris-backup %s (repository format %d)\n", VERSION, REPO_FORMAT_VERSION);
        return stdout_written(0);
    }
    if (strcmp(cmd, "help") == 0) {
        fputs(USAGE, stdout);
        return stdout_written(0);
    }
    struct err e = ERR_INIT;
    /* A command's --help needs no configuration: asked for, it is printed even when the
     * configuration is broken (the help may be what the operator needs to mend it). Only the
     * help: the command is then given its words and --help alone, so that a "-h" that was an
     * operand or an option's value never runs a command on an empty configuration. */
    bool help = wants_help(cargc, cargv), broken = false;
    char *help_argv[4];
    if (config_load(&g.cfg, g.env_file, &e) != 0) {
        if (!help)
            return fail(&e);
        err_clear(&e);
        memset(&g.cfg, 0, sizeof(g.cfg));
        broken = true;
    }
    secrets_cfg = &g.cfg;
    if (g.cfg.env_file_exposed)
        fprintf(stderr,
                "warning: %s sets %s but other users may read it (mode %04o)\n"
                "HINT: chmod 600 %s (and keep it owned by the user caris-backup runs as)\n",
                g.cfg.env_file, g.cfg.env_file_exposed, g.cfg.env_file_mode, g.cfg.env_file);
    if (g.cfg.env_file_writable)
        fprintf(stderr,
                "warning: other users may change %s (mode %04o, owner uid %u): whoever can write "
                "it can turn backups off or send notifications elsewhere\n"
                "HINT: chmod 600 %s, owned by root or the user caris-backup runs as\n",
                g.cfg.env_file, g.cfg.env_file_mode, g.cfg.env_file_uid, g.cfg.env_file);
    {
        char unknown[600];
        size_t nu = config_unknown_names(&g.cfg, unknown, sizeof(unknown));
        if (nu)
            fprintf(stderr,
                    "warning: caris-backup does not know the variable%s %s (misspelt?): %s "
                    "ignored\n"
                    "HINT: the variables are listed in README.md (Configuration)\n",
                    nu == 1 ? "" : "s", unknown, nu == 1 ? "it is" : "they are");
    }
    if (config_check(&g.cfg, &e) != 0) {
        if (help) {
            err_clear(&e);
            broken = true;
        } else {
            int rc = fail(&e);
            secrets_cfg = NULL;
            config_free(&g.cfg);
            return rc;
        }
    }
    if (broken) {
        int n = 0;
        help_argv[n++] = cargv[0];
        if (cargc > 1 && cargv[1][0] != '-')
            help_argv[n++] = cargv[1]; /* backup files, key add, ... */
        help_argv[n++] = (char *)"--help";
        help_argv[n] = NULL;
        cargv = help_argv;
        cargc = n;
    }
    if (g.quiet)
        log_set_level(LOG_WARN);
    cli_human_init(&g);
    const char *repo_loc = g.repo ? g.repo : config_get(&g.cfg, "BACKUP_REPOSITORY");
    g.repo_path =
        repo_loc ? xstrdup(repo_loc) : xasprintf("%s/repository", config_backup_dir(&g.cfg));
    storage_set_config(&g.cfg);
    char *s3_cache = xasprintf("%s/metadata/cache", config_backup_dir(&g.cfg));
    storage_set_cache_root(s3_cache);
    repo_set_cache_root(s3_cache);
    free(s3_cache);
    int64_t t0 = time_mono_ns();
    if (strcmp(cmd, "init") == 0)
        code = cmd_init(&g, cargc, cargv);
    else if (strcmp(cmd, "backup") == 0)
        code = cmd_backup(&g, cargc, cargv);
    else if (strcmp(cmd, "list") == 0)
        code = cmd_list(&g, cargc, cargv);
    else if (strcmp(cmd, "verify") == 0)
        code = cmd_verify(&g, cargc, cargv);
    else if (strcmp(cmd, "check") == 0)
        code = cmd_check(&g, cargc, cargv);
    else if (strcmp(cmd, "restore") == 0)
        code = cmd_restore(&g, cargc, cargv);
    else if (strcmp(cmd, "key") == 0)
        code = cmd_key(&g, cargc, cargv);
    else if (strcmp(cmd, "unlock") == 0)
        code = cmd_unlock(&g, cargc, cargv);
    else if (strcmp(cmd, "test-restore") == 0)
        code = cmd_test_restore(&g, cargc, cargv);
    else if (strcmp(cmd, "forget") == 0)
        code = cmd_forget(&g, cargc, cargv);
    else if (strcmp(cmd, "prune") == 0)
        code = cmd_prune(&g, cargc, cargv);
    else if (strcmp(cmd, "debug") == 0)
        code = cmd_debug(&g, cargc, cargv);
    else if (strcmp(cmd, "daemon") == 0)
        code = cmd_daemon(&g, cargc, cargv);
    else if (strcmp(cmd, "run-now") == 0)
        code = cmd_run_now(&g, cargc, cargv);
    else if (strcmp(cmd, "notify") == 0)
        code = cmd_notify(&g, cargc, cargv);
    else if (strcmp(cmd, "token") == 0)
        code = cmd_token(&g, cargc, cargv);
    else if (strcmp(cmd, "audit") == 0)
        code = cmd_audit(&g, cargc, cargv);
    else if (strcmp(cmd, "wal") == 0)
        code = cmd_wal(&g, cargc, cargv);
    else if (strcmp(cmd, "schedule") == 0)
        code = cmd_schedule(&g, cargc, cargv);
    else if (strcmp(cmd, "show") == 0)
        code = cmd_show(&g, cargc, cargv);
    else if (strcmp(cmd, "ls") == 0)
        code = cmd_ls(&g, cargc, cargv);
    else if (strcmp(cmd, "dump") == 0)
        code = cmd_dump(&g, cargc, cargv);
    else if (strcmp(cmd, "diff") == 0)
        code = cmd_diff(&g, cargc, cargv);
    else if (strcmp(cmd, "find") == 0)
        code = cmd_find(&g, cargc, cargv);
    else if (strcmp(cmd, "mount") == 0)
        code = cmd_mount(&g, cargc, cargv);
    else if (strcmp(cmd, "copy") == 0)
        code = cmd_copy(&g, cargc, cargv);
    else if (strcmp(cmd, "upload") == 0)
        code = cmd_upload(&g, cargc, cargv);
    else if (is_planned(cmd))
        code = not_implemented(cmd);
    else
        code = cli_unknown_command(cmd, COMMANDS, sizeof(COMMANDS) / sizeof(COMMANDS[0]));
    if (json_lost && !json_printed && (code == 0 || code == 3)) {
        struct err je = ERR_INIT;
        err_set(&je, ERR_FAILURE, "run the command without --json, and report this",
                "the result could not be written as JSON");
        code = fail(&je);
    }
    code = stdout_written(code);
    cli_audit(&g, cargc, cargv, code, (time_mono_ns() - t0) / 1000000);
    repo_close(g.audit_repo); /* when cli_audit returned before using it */
    free(g.repo_path);
    storage_set_cache_root(NULL);
    repo_set_cache_root(NULL);
    storage_set_config(NULL);
    json_decref(g.state);
    secrets_cfg = NULL;
    config_free(&g.cfg);
    return code;
}

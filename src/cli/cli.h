/* Shared by the command-line front end's files: globals and output helpers. */
#ifndef CARIS_CLI_H
#define CARIS_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/backup.h"
#include "caris/config.h"
#include "caris/err.h"
#include "caris/inspect.h"
#include "caris/repo.h"

#define VERSION "0.1.0"

struct globals {
    const char *env_file;
    const char *repo;
    bool json;
    bool quiet;
    int threads;
    int64_t lock_wait_ms; /* --lock-wait */
    struct config cfg;
    char *repo_path;       /* resolved */
    json_t *state;         /* repo_state_audit's report from open_repo (NULL if none) */
    bool no_open_warnings; /* the command reports the open's findings itself (check) */
    /* A backup's repository, left open for cli_audit's head record so that the key is not
     * derived a second time (Argon2id: ~0.15 s and 64 MiB); closed by cli_audit. */
    struct repo *audit_repo;
};

/* Prints the error (and its HINT) to stderr; returns its exit code. */
int fail(const struct err *e);
/* The message of the first error fail() printed (the audit line's "error"); NULL: none. */
const char *cli_first_failure(void);
/* A backup the command made, forgot, verified or restored: its audit line's backupIds. */
void cli_audit_backup_id(const char *id);
/* wal get's exit status for every failure but "not in the archive" (1): above 125, which
 * PostgreSQL's recovery treats as fatal instead of as the end of the archive */
#define WAL_GET_FATAL_EXIT 255
/* wal get answered "not in the archive" (exit 1): its only exit status below 126 but 0 */
extern bool cli_wal_get_absent;
/* The command line is `wal get`: every failure exits WAL_GET_FATAL_EXIT, and a --json error
 * says so (set by main before the command runs). */
extern bool cli_wal_get_mode;
/* A usage error (exit 2); fmt has one %s for arg. */
int usage_error(const char *fmt, const char *arg);
/* A usage error about a word that is not echoed (a secret may have been typed there): what,
 * the word's length and why it is not shown; todo is the hint. */
int cli_unechoed_error(const char *what, const char *word, const char *todo, const char *could_be);
/* --full ('F') or --incremental ('I') seen: 0, or a usage error (exit 2) when the other one
 * was seen before (*seen holds the one seen, 0 at first). */
int cli_backup_mode(char *seen, char flag);
/* An option that takes one value (a restore's target): given twice with different values,
 * a usage error naming both (the last one won without a word); else *slot = v, 0. */
int cli_set_once(const char *opt, const char **slot, const char *v);
/* A command without its subcommand: usage on stderr, with --json an error document on stdout;
 * returns 2. */
int cli_usage_missing(const char *usage, const char *msg);
/* err_print on stderr of e with the secrets it quotes replaced (fail and cli_err_to_json do
 * the same): for an error printed beside a command's result. */
void cli_err_print(const struct err *e);
/* "warning: WHAT: MESSAGE" (WHAT NULL: "warning: MESSAGE"), then "HINT: ..." when hint is set,
 * on stderr, control characters shown as \xNN (fputs_visible). */
void cli_warn(const char *what, const char *msg, const char *hint);
/* {"code", "message", "hint", "exitCode"}: the object fail() prints as {"error": ...}. */
json_t *cli_err_to_json(const struct err *e);
void print_json(json_t *j);
/* As print_json, names as the document has them (the audit log's lines as written). */
void print_json_as_stored(json_t *j);
/* A backup's summary: printed as JSON with --json; true when nothing more is to be printed
 * (--json or --quiet). */
bool print_backup_json(const struct globals *g, const struct caris_backup_result *res);
/* Progress on stderr when it is a terminal and not --quiet, else NULL. */
caris_progress_fn progress_fn(const struct globals *g);
void progress_end(const struct globals *g);
/* Opens the repository; a missing one is an error (exit 7: only `init` creates one, issue
 * 11). create is ignored: kept so that every caller merges unchanged. */
struct repo *open_repo(struct globals *g, bool create, struct err *e);
/* Instead of repo_close after a backup or an operation that takes data out (restore, dump):
 * keeps r (unlocked; may be NULL) for cli_audit, which closes it, and which writes the audit
 * log's head into the repository through it instead of opening it again (a second key
 * derivation: 0.1-0.2 s). */
void cli_keep_repo_for_audit(struct globals *g, struct repo *r);
bool wants_help(int argc, char **argv);
/* The operation context of a command: Ctrl-C and SIGTERM set its cancel flag (the operation
 * stops at its next safe point, commits nothing and releases its lock), actor "cli",
 * warnings to the log, phase progress on a terminal. cli_op_end clears the progress line. */
struct caris_op;
void cli_op_init(const struct globals *g, struct caris_op *op);
void cli_op_end(const struct caris_op *op);
/* The same for a command that shows progress with progress_fn (backup, restore, verify,
 * check): no phase progress, and information lines go to the log too (not with --quiet). */
void cli_op_init_service(const struct globals *g, struct caris_op *op);
/* The same for the commands PostgreSQL runs (`wal push`, `wal get`): SIGHUP and SIGQUIT are
 * left as they are. */
void cli_op_init_archiver(const struct globals *g, struct caris_op *op);

/* Database commands (cmd_db.c). argv[0] is the command word ("backup", "restore",
 * "test-restore"); for backup/restore argv[1] is "database". */
int cmd_backup_database(struct globals *g, int argc, char **argv);
int cmd_restore_database(struct globals *g, int argc, char **argv);
int cmd_test_restore(struct globals *g, int argc, char **argv);

/* Retention commands (cmd_retention.c). */
int cmd_forget(struct globals *g, int argc, char **argv);
int cmd_prune(struct globals *g, int argc, char **argv);
/* The daemon and its control (cmd_daemon.c). */
int cmd_daemon(struct globals *g, int argc, char **argv);
int cmd_run_now(struct globals *g, int argc, char **argv);
int cmd_schedule_status(struct globals *g, int argc, char **argv); /* argv: schedule status ... */
int cmd_schedule_cancel(struct globals *g, int argc, char **argv); /* argv: schedule cancel ... */
/* Low-level views (cmd_debug.c). */
int cmd_debug(struct globals *g, int argc, char **argv);
/* Notification commands (cmd_notify.c): notify test. */
int cmd_notify(struct globals *g, int argc, char **argv);
/* audit [--since T] | audit verify (cmd_audit.c); cli_audit appends the line of a command
 * that ran (exit code, duration) to the audit log. */
int cmd_audit(struct globals *g, int argc, char **argv);
void cli_audit(struct globals *g, int argc, char **argv, int code, int64_t duration_ms);
/* token add | list | revoke (cmd_token.c). */
int cmd_token(struct globals *g, int argc, char **argv);
/* schedule next | status (cmd_schedule.c). */
int cmd_schedule(struct globals *g, int argc, char **argv);
/* Parses a --time option (in BACKUP_TZ when it names no zone); refuses a future time. */
int backup_time_option(const struct globals *g, const char *s, int64_t *ns, struct err *e);

/* Inspect commands (cmd_inspect.c); argv[0] is the command word. */
int cmd_show(struct globals *g, int argc, char **argv);
int cmd_ls(struct globals *g, int argc, char **argv);
int cmd_dump(struct globals *g, int argc, char **argv);
int cmd_diff(struct globals *g, int argc, char **argv);
int cmd_find(struct globals *g, int argc, char **argv);
/* copy, upload (cmd_copy.c); for init --copy-chunker-from: the source repository opened with
 * BACKUP_ENCRYPTION_KEY, and the new repository's key from the variable var names (NULL: the
 * default, CARIS_COPY_TO_KEY). */
int cmd_copy(struct globals *g, int argc, char **argv);
int cmd_upload(struct globals *g, int argc, char **argv);
struct repo *cli_open_chunker_source(struct globals *g, const char *from, struct err *e);
int cli_to_key(const struct globals *g, const char *var, const char **key, struct err *e);
/* e, from opening a repository whose location was read from the variable var: a location that
 * cannot be one (ERR_USAGE) is the configuration's fault (ERR_CONFIG, exit 6, named by var), as
 * a usage error (exit 2) is the command line's. Other errors are left as they are. */
void cli_location_var_fault(struct err *e, const char *var);
/* wal push | get | list (cmd_wal.c). */
int cmd_wal(struct globals *g, int argc, char **argv);
/* Whether argv holds --physical (before any `--`). */
bool has_physical(int argc, char **argv);
/* backup database --physical, restore database --physical (cmd_pitr.c). */
int cmd_backup_physical(struct globals *g, int argc, char **argv);
int cmd_restore_physical(struct globals *g, int argc, char **argv);
/* mount DIR (cmd_mount.c). */
int cmd_mount(struct globals *g, int argc, char **argv);
/* open_repo, then caris_backup_resolve(text, kind) into id; NULL (repository closed) on
 * failure. For every command that takes a backup id. */
struct repo *open_repo_id(struct globals *g, const char *text, const char *kind,
                          char id[CARIS_ID_MAX], struct err *e);

/* Command-line conventions (args.c). */
struct option;
enum cli_action { CLI_RUN, CLI_HELP, CLI_VERSION };
/* Takes the global options (--env-file, --repo, --json, --quiet/-q, --threads, --lock-wait;
 * `--opt=value` or `--opt value`) out of argv wherever they are before `--`, so that they may
 * follow the command word and its subcommand; --help/-h and --version count only before the
 * command word. argv keeps argv[0], the command and its own arguments; *argc is updated.
 * Returns 0, or the exit code of a usage error it printed. */
int cli_globals_extract(struct globals *g, int *argc, char **argv, enum cli_action *action);
/* The command's name for messages ("list", "backup files"). */
void cli_set_command(int argc, char **argv);
/* True for the commands that move repository data (backup, restore, copy, upload, check,
 * verify, test-restore, prune): their --json result says what they cost in S3 requests. */
bool cli_command_moves_data(void);
/* getopt_long that refuses abbreviated long options and records a one-line message (with the
 * closest option name) for any option error: '?' then, and the caller returns
 * cli_opt_fail(). Callers set optind = 0 before the first call, as for getopt_long. */
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);
int cli_opt_fail(void);
/* "unknown command 'lst': did you mean `list`?" (exit 2). */
int cli_unknown_command(const char *cmd, const char *const *names, size_t n);
size_t cli_edit_distance(const char *a, const char *b);
const char *cli_closest(const char *word, const char *const *cands, size_t n);
/* A number given as decimal digits alone (no sign, blank or base prefix) in [lo, hi]: 0 and
 * *out set, else -1 (strtol took " 4", "+4" and "0x10"; strtoull "-1" as its largest value). */
int cli_parse_uint(const char *s, unsigned long long lo, unsigned long long hi,
                   unsigned long long *out);
/* "30s", "5m", "1h", "2d", "90" (seconds), "0": milliseconds, or -1. */
int64_t cli_parse_duration_ms(const char *s);
/* With --json, errors are also a JSON object on stdout (set once options are parsed). */
void cli_set_json_errors(bool on);

/* Human output (human.c): a time in BACKUP_TZ (else the local zone), to the second, with its
 * offset ("2026-11-30T16:57:03+01:00"); a duration as "850ms", "1.4s", "2m03s", "1h02m". */
void cli_human_time(int64_t unix_sec, char *out, size_t n);
/* The same for an ISO 8601 text; the text itself when it does not parse. */
void cli_human_iso(const char *iso, char *out, size_t n);
/* Where the zone comes from (BACKUP_TZ in g's configuration): main, once loaded. */
void cli_human_init(const struct globals *g);
void cli_human_duration(int64_t ms, char *out, size_t n);

#endif

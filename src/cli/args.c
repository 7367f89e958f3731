/* Command-line conventions shared by every command (issue 11): global options anywhere
 * before `--`, `--opt=value` and `--opt value`, exact long-option names (getopt_long alone
 * takes any unique abbreviation: `--ful` would silently mean `--full`), and one line with the
 * closest match for an unknown command or option. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/audit.h"
#include "caris/core.h"
#include "caris/storage.h"

#include "cli.h"

/* Optimal string alignment distance (Damerau-Levenshtein with adjacent transpositions),
 * bounded: names longer than 63 bytes count as far from everything. */
size_t cli_edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63)
        return (size_t)-1;
    size_t d[64][64];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[n][m];
}

/* A candidate is close when at most a third of the word (at least 1, at most 3 edits) must
 * change, or when the word is a prefix of it (an abbreviation). The first best wins. */
const char *cli_closest(const char *word, const char *const *cands, size_t n)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1, wl = strlen(word);
    size_t limit = wl / 3 < 1 ? 1 : wl / 3 > 3 ? 3 : wl / 3;
    for (size_t i = 0; i < n; i++) {
        size_t dd = cli_edit_distance(word, cands[i]);
        if (wl >= 2 && strncmp(cands[i], word, wl) == 0 && dd > limit)
            dd = limit; /* a prefix: an abbreviation of it */
        if (dd <= limit && dd < best_d) {
            best = cands[i];
            best_d = dd;
        }
    }
    return best;
}

/* ---- the options every command accepts ---------------------------------------------- */

static const char *const GLOBAL_NAMES[] = {"env-file", "repo",    "json",
                                           "quiet",    "threads", "lock-wait",
                                           "help",     "version", "s3-connections"};
#define NGLOBAL (sizeof(GLOBAL_NAMES) / sizeof(GLOBAL_NAMES[0]))

/* "--name" or "--name=value": the name's length, when token names `name` exactly. */
static bool long_is(const char *tok, const char *name, const char **value)
{
    size_t n = strlen(name);
    if (strncmp(tok, "--", 2) != 0 || strncmp(tok + 2, name, n) != 0)
        return false;
    if (tok[2 + n] == '\0') {
        *value = NULL;
        return true;
    }
    if (tok[2 + n] == '=') {
        *value = tok + 3 + n;
        return true;
    }
    return false;
}

static int one_line_usage(const char *msg)
{
    struct err e = ERR_INIT;
    err_set(&e, ERR_USAGE, NULL, "%s", msg);
    return fail(&e);
}

/* An unknown "--name[=v]" among names (and the global ones): one line, with the closest. */
static int unknown_long(const char *tok, const char *where, const char *const *names, size_t n)
{
    char name[128];
    snprintf(name, sizeof(name), "%s", tok + 2);
    name[strcspn(name, "=")] = '\0';
    const char **all = xcalloc(n + NGLOBAL, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        all[i] = names[i];
    for (size_t i = 0; i < NGLOBAL; i++)
        all[n + i] = GLOBAL_NAMES[i];
    const char *best = cli_closest(name, all, n + NGLOBAL);
    char msg[512];
    if (best)
        snprintf(msg, sizeof(msg), "unknown option '--%s'%s%s: did you mean `--%s`?", name,
                 where ? " for " : "", where ? where : "", best);
    else
        snprintf(msg, sizeof(msg), "unknown option '--%s'%s%s (see `caris-backup %s--help`)", name,
                 where ? " for " : "", where ? where : "", where ? "COMMAND " : "");
    free(all);
    return one_line_usage(msg);
}

/* "OPT is given twice ('A' and 'B'): give it once" in msg, the values quoted as the audit log
 * keeps them: a URL (--target-url's may carry a password) by its scheme alone. */
static void twice_msg(char *msg, size_t n, const char *opt, const char *a, const char *b)
{
    char ra[256], rb[256];
    snprintf(msg, n, "%s is given twice ('%.150s' and '%.150s'): give it once", opt,
             caris_audit_redact_arg(a, ra, sizeof(ra)), caris_audit_redact_arg(b, rb, sizeof(rb)));
}

static int twice(const char *opt, const char *a, const char *b)
{
    char msg[400];
    twice_msg(msg, sizeof(msg), opt, a, b);
    return one_line_usage(msg);
}

int cli_set_once(const char *opt, const char **slot, const char *v)
{
    if (*slot && strcmp(*slot, v) != 0)
        return twice(opt, *slot, v);
    *slot = v;
    return 0;
}

static int global_value(struct globals *g, const char *name, const char *v)
{
    if (strcmp(name, "env-file") == 0) {
        g->env_file = v;
    } else if (strcmp(name, "repo") == 0) {
        g->repo = v;
    } else if (strcmp(name, "threads") == 0) {
        unsigned long long t;
        if (cli_parse_uint(v, 1, 256, &t) != 0)
            return usage_error("--threads must be between 1 and 256, got '%s'", v);
        g->threads = (int)t;
    } else if (strcmp(name, "s3-connections") == 0) {
        unsigned long long n;
        if (cli_parse_uint(v, 1, STORAGE_CONNECTIONS_MAX, &n) != 0)
            return usage_error("--s3-connections must be between 1 and 64, got '%s'", v);
        /* The S3 driver reads it when it opens a repository (as from .env.local). */
        setenv("BACKUP_S3_CONNECTIONS", v, 1);
    } else { /* lock-wait */
        g->lock_wait_ms = cli_parse_duration_ms(v);
        if (g->lock_wait_ms < 0)
            return usage_error("--lock-wait takes a duration such as 30s, 5m or 1h (at most a "
                               "year), got '%s'",
                               v);
    }
    return 0;
}

/* A value given as a separate argument is taken literally unless it starts with "--": then
 * the user most likely forgot the value (`--label --json`), so it is refused, and the value
 * must be written `--opt=VALUE` (as git does). `--opt=VALUE` is always literal. */
static int separate_value_refused(const char *opt, const char *value)
{
    char msg[320];
    snprintf(msg, sizeof(msg),
             "option '%.60s' needs a value: '%.60s' after it is an option (to give a value "
             "that starts with '--', write %.60s=%.60s)",
             opt, value, opt, value);
    return one_line_usage(msg);
}

/* The global flags (--json, --quiet, -q) taken out of the command line, each with the token
 * it followed, so that a command option left without its value can say why (cli_getopt):
 * `--label --json` is `--label` without a value, not a label "--json". */
#define MAX_TAKEN 16
static struct taken_flag {
    const char *after, *flag;
} taken_flags[MAX_TAKEN];
static size_t ntaken_flags;

static const char *flag_taken_after(const char *tok)
{
    for (size_t i = 0; i < ntaken_flags; i++)
        if (taken_flags[i].after == tok)
            return taken_flags[i].flag;
    return NULL;
}

int cli_globals_extract(struct globals *g, int *argcp, char **argv, enum cli_action *action)
{
    static const char *const WITH_VALUE[] = {"env-file", "repo", "threads", "lock-wait",
                                             "s3-connections"};
    int argc = *argcp, out = 1;
    bool cmd_seen = false;
    *action = CLI_RUN;
    int i = 1;
    for (; i < argc; i++) {
        const char *tok = argv[i], *v = NULL;
        if (strcmp(tok, "--") == 0)
            break; /* the rest is the command's, untouched */
        bool taken = false;
        for (size_t k = 0; k < sizeof(WITH_VALUE) / sizeof(WITH_VALUE[0]) && !taken; k++) {
            if (!long_is(tok, WITH_VALUE[k], &v))
                continue;
            taken = true;
            if (!v) {
                if (i + 1 >= argc) {
                    char msg[96];
                    snprintf(msg, sizeof(msg), "option '--%s' needs a value", WITH_VALUE[k]);
                    return one_line_usage(msg);
                }
                v = argv[++i];
                if (strncmp(v, "--", 2) == 0)
                    return separate_value_refused(argv[i - 1], v);
            }
            /* given twice, the last one won without a word: a script's --env-file or --repo
             * and the one a user added, silently another configuration or repository */
            static const char *given[sizeof(WITH_VALUE) / sizeof(WITH_VALUE[0])];
            if (given[k] && strcmp(given[k], v) != 0) {
                char opt[40];
                snprintf(opt, sizeof(opt), "--%s", WITH_VALUE[k]);
                return twice(opt, given[k], v);
            }
            given[k] = v;
            int rc = global_value(g, WITH_VALUE[k], v);
            if (rc)
                return rc;
        }
        if (!taken && (long_is(tok, "json", &v) || long_is(tok, "quiet", &v))) {
            if (v) {
                char msg[96];
                snprintf(msg, sizeof(msg), "option '%.*s' takes no value",
                         (int)(strchr(tok, '=') - tok), tok);
                return one_line_usage(msg);
            }
            taken = true;
            if (tok[2] == 'j')
                g->json = true;
            else
                g->quiet = true;
        }
        if (!taken && strcmp(tok, "-q") == 0) {
            taken = true;
            g->quiet = true;
        }
        if (taken) {
            if (out > 1 && tok[0] == '-' && ntaken_flags < MAX_TAKEN && !strchr(tok, '='))
                taken_flags[ntaken_flags++] = (struct taken_flag){argv[out - 1], tok};
            continue;
        }
        if (!cmd_seen) {
            /* Before the command word: help, version, or an unknown option. */
            if (strcmp(tok, "--help") == 0 || strcmp(tok, "-h") == 0) {
                *action = CLI_HELP;
                continue;
            }
            if (strcmp(tok, "--version") == 0) {
                *action = CLI_VERSION;
                continue;
            }
            if (tok[0] == '-' && tok[1]) {
                if (tok[1] == '-')
                    return unknown_long(tok, NULL, NULL, 0);
                return usage_error("unknown option '%s' (see `caris-backup --help`)", tok);
            }
            cmd_seen = true;
        }
        argv[out++] = argv[i];
    }
    for (; i < argc; i++)
        argv[out++] = argv[i];
    argv[out] = NULL;
    *argcp = out;
    return 0;
}

/* ---- every command's own options ---------------------------------------------------- */

static char opt_error[512];
static char command_name[96] = "caris-backup";

void cli_set_command(int argc, char **argv)
{
    static const char *const WITH_SUB[] = {"backup",   "restore", "key",   "token",
                                           "schedule", "notify",  "audit", "wal"};
    if (argc < 1)
        return;
    snprintf(command_name, sizeof(command_name), "%.40s", argv[0]);
    for (size_t i = 0; i < sizeof(WITH_SUB) / sizeof(WITH_SUB[0]); i++)
        if (strcmp(argv[0], WITH_SUB[i]) == 0 && argc > 1 && argv[1][0] != '-')
            snprintf(command_name, sizeof(command_name), "%.40s %.40s", argv[0], argv[1]);
}

bool cli_command_moves_data(void)
{
    static const char *const MOVERS[] = {"backup", "restore", "copy",         "upload",
                                         "check",  "verify",  "test-restore", "prune"};
    size_t n = strcspn(command_name, " ");
    for (size_t i = 0; i < sizeof(MOVERS) / sizeof(MOVERS[0]); i++)
        if (strlen(MOVERS[i]) == n && strncmp(command_name, MOVERS[i], n) == 0)
            return true;
    return false;
}

/* The options that take several values (each one adds to a list). Any other option given
 * twice with two values is refused: the last one won without a word (`forget --keep-last 5
 * --keep-last 1` forgot what 5 would keep; `copy --to A --to B` went to B). */
static const char *const REPEATABLE[] = {"include", "exclude", "exclude-file",
                                         "table",   "schema",  NULL};

/* The values the options of the parse under way have had: by getopt's return value. */
static struct {
    char **argv;
    const struct option *longopts;
    size_t n;
    struct {
        int c;
        const char *value;
    } v[64];
} seen;

static bool repeatable(const struct option *longopts, int c)
{
    for (const struct option *o = longopts; o && o->name; o++)
        if (o->val == c)
            for (size_t i = 0; REPEATABLE[i]; i++)
                if (strcmp(o->name, REPEATABLE[i]) == 0)
                    return true;
    return false;
}

/* 0, or '?' with opt_error set when option c (its value v) was given before with another. */
static int once(const struct option *longopts, int c, const char *v)
{
    if (!v || repeatable(longopts, c))
        return 0;
    const char *was = NULL;
    for (size_t i = 0; i < seen.n && !was; i++)
        if (seen.v[i].c == c)
            was = seen.v[i].value;
    if (!was && seen.n < sizeof(seen.v) / sizeof(seen.v[0])) {
        seen.v[seen.n].c = c;
        seen.v[seen.n++].value = v;
    }
    if (!was || strcmp(was, v) == 0)
        return 0;
    char name[80];
    snprintf(name, sizeof(name), "-%c", c);
    for (const struct option *o = longopts; o && o->name; o++)
        if (o->val == c) {
            snprintf(name, sizeof(name), "--%s", o->name);
            break;
        }
    twice_msg(opt_error, sizeof(opt_error), name, was, v);
    return '?';
}

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts)
{
    opterr = 0;
    if (optind <= 1 || seen.argv != argv || seen.longopts != longopts) { /* a new parse */
        memset(&seen, 0, sizeof(seen));
        seen.argv = argv;
        seen.longopts = longopts;
    }
    int li = -1;
    int c = getopt_long(argc, argv, shortopts, longopts, &li);
    if (c == -1)
        return -1;
    const char *cmd = command_name;
    if (c == '?' || c == ':') {
        const char *tok = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        if (tok[0] == '-' && tok[1] == '-') {
            const char *eq = strchr(tok, '=');
            if (optopt == 0) { /* unknown, or an ambiguous abbreviation */
                size_t n = 0;
                while (longopts[n].name)
                    n++;
                const char **names = xcalloc(n + 1, sizeof(char *));
                for (size_t k = 0; k < n; k++)
                    names[k] = longopts[k].name;
                char name[128];
                snprintf(name, sizeof(name), "%s", tok + 2);
                name[strcspn(name, "=")] = '\0';
                const char *best = cli_closest(name, names, n);
                if (!best) { /* a global option misspelt after the command word */
                    best = cli_closest(name, GLOBAL_NAMES, NGLOBAL);
                }
                if (best)
                    snprintf(opt_error, sizeof(opt_error),
                             "unknown option '--%s' for %s: did you mean `--%s`?", name, cmd, best);
                else
                    snprintf(opt_error, sizeof(opt_error),
                             "unknown option '--%s' for %s (see `caris-backup %s --help`)", name,
                             cmd, cmd);
                free(names);
            } else if (eq) {
                snprintf(opt_error, sizeof(opt_error), "option '%.*s' takes no value",
                         (int)(eq - tok), tok);
            } else if (flag_taken_after(tok)) {
                snprintf(opt_error, sizeof(opt_error),
                         "option '%.60s' needs a value: '%s' after it is an option (to give a "
                         "value that starts with '--', write %.60s=%s)",
                         tok, flag_taken_after(tok), tok, flag_taken_after(tok));
            } else {
                snprintf(opt_error, sizeof(opt_error), "option '%s' needs a value", tok);
            }
        } else if (optopt && strchr(shortopts, optopt)) {
            snprintf(opt_error, sizeof(opt_error), "option '-%c' needs a value", optopt);
        } else {
            snprintf(opt_error, sizeof(opt_error),
                     "unknown option '-%c' for %s (see `caris-backup %s --help`)",
                     optopt ? optopt : '?', cmd, cmd);
        }
        return '?';
    }
    if (li >= 0) {
        /* getopt_long matched a long option: refuse it unless named in full. Its token is
         * the previous argument, or the one before when the value was a separate argument. */
        const struct option *o = &longopts[li];
        const char *tok = argv[optind - 1];
        if (o->has_arg != no_argument && optarg && optarg == argv[optind - 1] && optind >= 2)
            tok = argv[optind - 2];
        const char *v;
        bool separate =
            o->has_arg != no_argument && optarg && optarg == argv[optind - 1] && optind >= 2;
        if (!long_is(tok, o->name, &v)) {
            char name[128];
            snprintf(name, sizeof(name), "%s", tok + 2);
            name[strcspn(name, "=")] = '\0';
            snprintf(opt_error, sizeof(opt_error),
                     "unknown option '--%s' for %s: did you mean `--%s`?", name, cmd, o->name);
            return '?';
        }
        const char *flag = separate ? flag_taken_after(tok) : NULL;
        if (separate && (strncmp(optarg, "--", 2) == 0 || flag)) {
            snprintf(opt_error, sizeof(opt_error),
                     "option '%.60s' needs a value: '%.60s' after it is an option (to give a "
                     "value that starts with '--', write %.60s=%.60s)",
                     tok, flag ? flag : optarg, tok, flag ? flag : optarg);
            return '?';
        }
    }
    if (c != '?' && c != ':' && optarg && once(longopts, c, optarg) != 0)
        return '?';
    return c;
}

void cli_location_var_fault(struct err *e, const char *var)
{
    if (e->code != ERR_USAGE)
        return;
    e->code = ERR_CONFIG;
    err_wrap(e, "%s", var);
}

int cli_opt_fail(void)
{
    return one_line_usage(opt_error[0] ? opt_error : "invalid option");
}

int cli_unknown_command(const char *cmd, const char *const *names, size_t n)
{
    const char *best = cli_closest(cmd, names, n);
    char msg[256];
    if (best)
        snprintf(msg, sizeof(msg), "unknown command '%.64s': did you mean `%s`?", cmd, best);
    else
        snprintf(msg, sizeof(msg), "unknown command '%.64s' (see `caris-backup --help`)", cmd);
    return one_line_usage(msg);
}

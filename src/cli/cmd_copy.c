/* `caris-backup copy [ID...|--latest|--all] --to REPO [--to-key-env VAR]`, `upload ID`, and the
 * source side of `init --copy-chunker-from`: parse, open both repositories, call the service
 * (caris/copy.h), print. */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/copy.h"
#include "caris/storage.h"
#include "caris/core.h"
#include "caris/op.h"
#include "caris/open.h"

#include "cli.h"

#define DEFAULT_TO_KEY_ENV "CARIS_COPY_TO_KEY"

static const char COPY_USAGE[] =
    "usage: caris-backup [--json] copy (ID... | --latest | --all) --to REPO [--to-key-env VAR]\n"
    "\n"
    "Copies backups of this repository (--repo, key BACKUP_ENCRYPTION_KEY) into the repository\n"
    "REPO (a path or s3:https://HOST/BUCKET[/PREFIX]), which keeps its own key: the variable\n"
    "named by --to-key-env holds it (default " DEFAULT_TO_KEY_ENV "; never on the command line).\n"
    "Only the blobs REPO lacks are sent; each backup is committed there with the same id and\n"
    "summary, then read back and verified. A backup REPO already has is reported as already\n"
    "there and costs nothing. REPO must share this repository's chunking: create it with\n"
    "`caris-backup init --repo REPO --copy-chunker-from THIS_REPO` (copy refuses otherwise).\n"
    "An interrupted copy leaves no backup listed in REPO.\n"
    "\n"
    "  ID...            backup ids (or unique prefixes, or latest)\n"
    "  --latest         the newest backup (one, of either kind: after a run that backed\n"
    "                   up the database and then the files, only the files backup)\n"
    "  --all            every backup, oldest first\n"
    "  --to REPO        the destination repository (must exist)\n"
    "  --to-key-env VAR the variable holding the destination's key\n"
    "  --json           the result as JSON\n";

static const char UPLOAD_USAGE[] =
    "usage: caris-backup [--json] upload ID [--to-key-env VAR]\n"
    "\n"
    "`copy ID --to $BACKUP_CLOUD_REPOSITORY`: the seed's upload to cloud. BACKUP_CLOUD_REPOSITORY\n"
    "(environment or .env.local) names the cloud repository, e.g. s3:https://HOST/BUCKET/PREFIX.\n";

/* A shell name of CONFIG_MIN_KEY_LEN characters or more without lower case: a long variable's
 * name, or a key (base32, upper-case hex) typed in its place. */
static bool long_upper_name(const char *s)
{
    if (strlen(s) < CONFIG_MIN_KEY_LEN || !(isupper((unsigned char)*s) || *s == '_'))
        return false;
    for (; *s; s++)
        if (!(isupper((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

/* The destination's key: from the variable named var (environment or .env.local), checked. */
static int to_key(const struct globals *g, const char *var, const char **key, struct err *e)
{
    if (long_upper_name(var) && !config_get(&g->cfg, var))
        return err_set(e, ERR_CONFIG,
                       "set it in the environment or .env.local, or name another variable with "
                       "--to-key-env; if a key was typed there, it is in your shell's history: "
                       "replace it",
                       "the variable --to-key-env names is not set (its name is not shown: of "
                       "%d characters or more, it may be a key)",
                       CONFIG_MIN_KEY_LEN);
    if (!config_var_name_showable(&g->cfg, var))
        return err_set(e, ERR_USAGE,
                       "give the name of the variable that holds the key (letters, digits and "
                       "_, as BACKUP_COPY_KEY), never the key itself; if a key was typed here, "
                       "it is in your shell's history: replace it",
                       "--to-key-env takes a variable's name, and what was given is not one "
                       "(not shown: it may be a key)");
    const char *k = config_get(&g->cfg, var);
    if (!k || !*k)
        return err_set(e, ERR_CONFIG,
                       "set it in the environment or .env.local, or name another variable with "
                       "--to-key-env",
                       "%s (the destination repository's key) is not set", var);
    if (strlen(k) < CONFIG_MIN_KEY_LEN)
        return err_set(e, ERR_CONFIG, "use a random key of at least 32 characters",
                       "%s is too short (%zu bytes, at least %d needed)", var, strlen(k),
                       CONFIG_MIN_KEY_LEN);
    *key = k;
    return 0;
}

struct repo *cli_open_chunker_source(struct globals *g, const char *from, struct err *e)
{
    struct caris_open_opts o = {.repo_path = from, .backup_dir = config_backup_dir(&g->cfg)};
    if (config_encryption_key(&g->cfg, &o.key, e) != 0)
        return NULL;
    struct caris_open_result res;
    struct repo *r = caris_repo_open(&o, &res, e);
    if (!r) {
        err_wrap(e, "--copy-chunker-from %s", from);
        return NULL;
    }
    json_decref(res.state);
    return r;
}

int cli_to_key(const struct globals *g, const char *var, const char **key, struct err *e)
{
    return to_key(g, var ? var : DEFAULT_TO_KEY_ENV, key, e);
}

/* failure: the error, when the copy failed (with --json, the result is the one document on
 * stdout: it carries the error, as every failing command's document does) */
static void print_result(const struct globals *g, const struct caris_copy_result *res,
                         const struct err *failure)
{
    if (g->json) {
        json_t *j = caris_copy_result_to_json(res);
        if (failure)
            json_object_set_new(j, "error", cli_err_to_json(failure));
        print_json(j);
        json_decref(j);
        return;
    }
    if (g->quiet)
        return;
    for (size_t i = 0; i < res->n; i++) {
        const struct caris_copy_item *it = &res->items[i];
        char b[32];
        str_human_bytes(it->bytes_copied, b, sizeof(b));
        if (it->already_there)
            printf("backup %s: already there\n", it->backup_id);
        else if (it->copied)
            printf("backup %s: copied %llu of %llu blobs (%s)%s\n", it->backup_id,
                   (unsigned long long)it->blobs_copied, (unsigned long long)it->blobs, b,
                   it->verified ? ", verified" : "");
    }
}

/* to_var: the variable `to` was read from (upload), NULL for --to. */
static int run_copy(struct globals *g, const char *const *ids, size_t nids, bool latest, bool all,
                    const char *to, const char *to_var, const char *key_env)
{
    struct err e = ERR_INIT;
    const char *dkey = NULL;
    if (cli_to_key(g, key_env, &dkey, &e) != 0)
        return fail(&e);
    struct caris_op op;
    cli_op_init(g, &op);
    struct repo *src = open_repo(g, false, &e);
    if (!src)
        return fail(&e);
    /* ids as typed (prefixes, latest) become exact ids in the source */
    char(*exact)[CARIS_ID_MAX] = xcalloc(nids ? nids : 1, sizeof(*exact));
    const char **idv = xcalloc(nids ? nids : 1, sizeof(*idv));
    struct repo *dst = NULL;
    int code = 0;
    for (size_t i = 0; i < nids; i++) {
        if (caris_backup_resolve(src, ids[i], NULL, exact[i], &e) != 0) {
            code = fail(&e);
            goto out;
        }
        idv[i] = exact[i];
    }
    struct caris_open_opts oo = {.repo_path = to,
                                 .backup_dir = config_backup_dir(&g->cfg),
                                 .key = dkey,
                                 .lock_wait_ms = g->lock_wait_ms};
    struct caris_open_result ores;
    dst = caris_repo_open(&oo, &ores, &e);
    if (!dst) {
        char *shown = storage_location_redact(to);
        err_wrap(&e, "destination %s", shown);
        free(shown);
        if (to_var)
            cli_location_var_fault(&e, to_var);
        /* the key in question is the destination's, not BACKUP_ENCRYPTION_KEY */
        caris_copy_open_hint(&e, key_env ? key_env : DEFAULT_TO_KEY_ENV, g->repo_path);
        code = fail(&e);
        goto out;
    }
    json_decref(ores.state);
    struct caris_copy_opts o = {
        .ids = idv, .nids = nids, .latest = latest, .all = all, .threads = g->threads, .op = &op};
    struct caris_copy_result res;
    int rc = caris_copy(src, dst, to, &o, &res, &e);
    cli_op_end(&op);
    print_result(g, &res, rc != 0 ? &e : NULL);
    caris_copy_result_free(&res);
    if (rc != 0)
        code = fail(&e);
out:
    free(exact);
    free(idv);
    repo_close(dst);
    repo_close(src);
    return code;
}

int cmd_copy(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"to", required_argument, 0, 't'},
                                         {"to-key-env", required_argument, 0, 'k'},
                                         {"latest", no_argument, 0, 'l'},
                                         {"all", no_argument, 0, 'a'},
                                         {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *to = NULL, *key_env = NULL;
    bool latest = false, all = false;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        switch (c) {
        case 't':
            to = optarg;
            break;
        case 'k':
            key_env = optarg;
            break;
        case 'l':
            latest = true;
            break;
        case 'a':
            all = true;
            break;
        case 'j':
            g->json = true;
            break;
        case 'h':
            fputs(COPY_USAGE, stdout);
            return 0;
        default:
            return cli_opt_fail();
        }
    }
    size_t nids = (size_t)(argc - optind);
    if ((latest || all) && nids)
        return usage_error("copy takes backup ids or --latest or --all, not both%s", NULL);
    if (latest && all)
        return usage_error("copy takes --latest or --all, not both%s", NULL);
    if (!latest && !all && !nids)
        return usage_error("copy needs backup ids, --latest or --all%s", NULL);
    if (!to)
        return usage_error("copy needs --to REPO (the destination repository)%s", NULL);
    return run_copy(g, (const char *const *)argv + optind, nids, latest, all, to, NULL, key_env);
}

int cmd_upload(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"to-key-env", required_argument, 0, 'k'},
                                         {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *key_env = NULL;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        switch (c) {
        case 'k':
            key_env = optarg;
            break;
        case 'j':
            g->json = true;
            break;
        case 'h':
            fputs(UPLOAD_USAGE, stdout);
            return 0;
        default:
            return cli_opt_fail();
        }
    }
    if (argc - optind != 1)
        return usage_error("upload takes one backup id%s", NULL);
    const char *to = config_get(&g->cfg, "BACKUP_CLOUD_REPOSITORY");
    if (!to || !*to) {
        struct err e = ERR_INIT;
        err_set(&e, ERR_CONFIG,
                "set BACKUP_CLOUD_REPOSITORY (e.g. s3:https://HOST/BUCKET/PREFIX), or use "
                "`copy ID --to REPO`",
                "BACKUP_CLOUD_REPOSITORY is not set");
        return fail(&e);
    }
    const char *id = argv[optind];
    return run_copy(g, &id, 1, false, false, to, "BACKUP_CLOUD_REPOSITORY", key_env);
}

/* caris-backup debug: low-level views of a repository for investigating damage. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "caris/core.h"
#include "caris/inspect.h"
#include "cli.h"

static const char DEBUG_USAGE[] =
    "usage: caris-backup debug pack PACK [--json]\n"
    "       caris-backup debug backup ID [--json]\n\n"
    "Lists the blobs a pack holds, read from the pack's own trailer (not from the index):\n"
    "offset, stored length (ciphertext + tag), plaintext size, whether it is compressed, and\n"
    "the blob's id. PACK is the pack's name in the repository (data/ab/<64 hex>), its file's\n"
    "path, or its id (64 hex digits). For investigating damage: `check` names a damaged pack;\n"
    "this says which blobs sit where in it.\n\n"
    "debug backup lists where a backup's manifest (its list of entries, stored as chunks) lies:\n"
    "its snapshot file, and for each chunk of the manifest its id, size, and the pack and\n"
    "offset the index places it at.\n";

/* The object name of a pack given as a name, a path under the repository or an id. */
static char *pack_name(const struct globals *g, const char *arg)
{
    size_t n = strlen(g->repo_path);
    if (strncmp(arg, g->repo_path, n) == 0 && arg[n] == '/')
        return xstrdup(arg + n + 1);
    if (strlen(arg) == 64 && strspn(arg, "0123456789abcdef") == 64)
        return xasprintf("data/%.2s/%s", arg, arg);
    return xstrdup(arg);
}

static long long jint(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* debug backup's report (repo_backup_blobs') as text */
static void print_backup(const char *id, json_t *rep)
{
    json_t *blobs = json_object_get(rep, "blobs");
    printf("%s: %s, manifest %lld bytes in %zu chunks\n", id, jstr(rep, "snapshot"),
           jint(rep, "bytes"), json_array_size(blobs));
    printf("%10s %10s %10s  %-64s  %s\n", "size", "offset", "length", "id", "pack");
    size_t i;
    json_t *b;
    json_array_foreach(blobs, i, b)
    {
        const char *pack = jstr(b, "pack");
        printf("%10lld %10lld %10lld  %-64s  %s\n", jint(b, "size"), jint(b, "offset"),
               jint(b, "length"), jstr(b, "id"), pack ? pack : "(not in the index)");
    }
}

/* debug pack's report (repo_pack_blobs') as text */
static void print_pack(json_t *rep)
{
    json_t *blobs = json_object_get(rep, "blobs");
    printf("%s: %lld bytes, %zu blobs\n", jstr(rep, "pack"), jint(rep, "bytes"),
           json_array_size(blobs));
    printf("%10s %10s %10s %4s  %s\n", "offset", "length", "size", "zstd", "id");
    size_t i;
    json_t *b;
    json_array_foreach(blobs, i, b)
    {
        printf("%10lld %10lld %10lld %4s  %s\n", jint(b, "offset"), jint(b, "length"),
               jint(b, "size"), json_is_true(json_object_get(b, "compressed")) ? "yes" : "no",
               jstr(b, "id"));
    }
}

int cmd_debug(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *what = NULL, *arg = NULL;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c != 'h')
            return cli_opt_fail();
        fputs(DEBUG_USAGE, stdout);
        return 0;
    }
    for (int i = optind; i < argc; i++) {
        if (!what)
            what = argv[i];
        else if (!arg)
            arg = argv[i];
        else
            return usage_error("unexpected argument '%s' for debug", argv[i]);
    }
    bool backup = what && strcmp(what, "backup") == 0;
    if (!what || (strcmp(what, "pack") != 0 && !backup))
        return usage_error("debug needs a subcommand: 'pack PACK' or 'backup ID' (got '%s')",
                           what ? what : "");
    if (!arg)
        return usage_error(
            backup ? "debug backup needs a backup id%s" : "debug pack needs a pack%s", "");
    struct err e = ERR_INIT;
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    json_t *rep = NULL;
    int rc;
    char id[CARIS_ID_MAX] = "";
    if (backup) { /* an id, a unique prefix or latest, as everywhere */
        rc = caris_backup_resolve(r, arg, NULL, id, &e);
        if (rc == 0)
            rc = repo_backup_blobs(r, id, &rep, &e);
    } else {
        char *name = pack_name(g, arg);
        rc = repo_pack_blobs(r, name, &rep, &e);
        free(name);
    }
    repo_close(r);
    if (rc != 0)
        return fail(&e);
    if (g->json)
        print_json(rep);
    else if (backup)
        print_backup(id, rep);
    else
        print_pack(rep);
    json_decref(rep);
    return 0;
}

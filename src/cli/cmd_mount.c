/* `caris-backup mount DIR [--allow-other]`: parse, call caris_mount (caris/mount.h), print. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"
#include "caris/mount.h"
#include "caris/op.h"

#include "cli.h"

static const char MOUNT_USAGE[] =
    "usage: caris-backup [--json] mount DIR [--allow-other] [--cache-mib N]\n"
    "\n"
    "Shows the backups as a read-only file system at DIR (an empty directory), in the\n"
    "foreground until Ctrl-C, SIGTERM or SIGHUP (then it unmounts and exits 0):\n"
    "  DIR/<backup id>/<path as `ls` shows it>   every file backup\n"
    "  DIR/<backup id>/database.dump, globals.sql every database backup (pg_dump)\n"
    "  DIR/<backup id>/NOT-SHOWN-physical-backup.txt  a physical backup: its files are not\n"
    "                                             shown (use ls, restore database --physical)\n"
    "  DIR/latest                                 the newest file backup (a symbolic link)\n"
    "Files are read on demand, every chunk authenticated; a damaged chunk makes that read\n"
    "fail (EIO) and is logged. Modes, owners, times, symlinks, hard links and xattrs are the\n"
    "backed-up ones, and the kernel enforces the modes and POSIX ACLs. The repository stays\n"
    "locked (shared) while mounted: prune waits. Backups made meanwhile appear at the next\n"
    "mount.\n"
    "\n"
    "  --allow-other   let other users in (root, or user_allow_other in /etc/fuse.conf)\n"
    "  --cache-mib N   keep up to N MiB of chunks read in memory (default 64, 1 to 65536)\n"
    "  --json          at the end, what was served as JSON on stdout\n"
    "\n"
    "If the process is killed (kill -9), unmount with `fusermount3 -u DIR` (or umount DIR).\n";

#define OPT_JSON 1000
#define OPT_ALLOW_OTHER 1001
#define OPT_CACHE 1002

struct mounted_ctx {
    const struct globals *g;
    const char *dir;
};

static void on_mounted(void *ctx, size_t nbackups)
{
    struct mounted_ctx *c = ctx;
    if (!c->g->quiet)
        fprintf(stderr, "mounted %zu backup%s at %s (read-only); Ctrl-C unmounts\n", nbackups,
                nbackups == 1 ? "" : "s", c->dir);
}

int cmd_mount(struct globals *g, int argc, char **argv)
{
    static const struct option opts[] = {{"allow-other", no_argument, 0, OPT_ALLOW_OTHER},
                                         {"cache-mib", required_argument, 0, OPT_CACHE},
                                         {"json", no_argument, 0, OPT_JSON},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    bool allow_other = false;
    uint64_t cache_mib = 0;
    int c;
    optind = 0;
    while ((c = cli_getopt(argc, argv, "h", opts)) != -1) {
        if (c == 'h') {
            fputs(MOUNT_USAGE, stdout);
            return 0;
        } else if (c == OPT_JSON) {
            g->json = true;
        } else if (c == OPT_ALLOW_OTHER) {
            allow_other = true;
        } else if (c == OPT_CACHE) {
            unsigned long long v;
            if (cli_parse_uint(optarg, 1, 65536, &v) != 0)
                return usage_error("--cache-mib takes a number of MiB from 1 to 65536, got '%s'",
                                   optarg);
            cache_mib = v;
        } else {
            return cli_opt_fail();
        }
    }
    if (optind != argc - 1)
        return usage_error("mount needs one directory%s (see `caris-backup mount --help`)", NULL);
    const char *dir = argv[optind];
    struct err e = ERR_INIT;
    struct repo *r = open_repo(g, false, &e);
    if (!r)
        return fail(&e);
    struct caris_op op;
    cli_op_init(g, &op); /* Ctrl-C / SIGTERM: unmount, exit 0 */
    /* and SIGHUP too (the terminal closed): a mount left behind would answer only "Transport
     * endpoint is not connected" until someone unmounts it */
    struct sigaction sa;
    if (sigaction(SIGTERM, NULL, &sa) == 0)
        sigaction(SIGHUP, &sa, NULL);
    op.progress = NULL;
    struct mounted_ctx mc = {g, dir};
    struct caris_mount_opts o = {.dir = dir,
                                 .allow_other = allow_other,
                                 .cache_bytes = cache_mib << 20,
                                 .threads = g->threads,
                                 .op = &op,
                                 .mounted = on_mounted,
                                 .ctx = &mc};
    struct caris_mount_stats st;
    int rc = caris_mount(r, &o, &st, &e);
    repo_close(r);
    if (rc != 0)
        return fail(&e);
    if (g->json) {
        json_t *j = caris_mount_stats_to_json(&st, dir);
        print_json(j);
        json_decref(j);
    } else if (!g->quiet) {
        char b[32];
        str_human_bytes(st.bytes_read, b, sizeof(b));
        fprintf(stderr,
                "unmounted %s: %s read, %llu chunks loaded, %llu from the cache, %llu failed "
                "reads\n",
                dir, b, (unsigned long long)st.chunks_loaded, (unsigned long long)st.chunks_cached,
                (unsigned long long)st.read_errors);
    }
    return 0;
}

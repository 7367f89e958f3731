/* Adds N verify records to an existing repository, spread round-robin over its backups, as N
 * nightly verifications would (bench/bench-records.sh measures `list` before and after
 * prune compacts them). One record in 97 says the backup was damaged.
 *
 * Build (from the repository root, after ./scripts/build.sh):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude bench/records_gen.c build/libcaris.a \
 *       -lcrypto -lsodium -lzstd -ljansson -lpq -lcurl -lxml2 -lsqlite3 -lpthread -lm -o
 * /tmp/records_gen Run: BACKUP_ENCRYPTION_KEY=... /tmp/records_gen REPO N */
#include <stdio.h>
#include <stdlib.h>

#include "caris/core.h"
#include "caris/repo.h"

static void die(const struct err *e)
{
    err_print(e, stderr);
    exit(1);
}

int main(int argc, char **argv)
{
    const char *key = getenv("BACKUP_ENCRYPTION_KEY");
    if (argc != 3 || !key) {
        fprintf(stderr, "usage: BACKUP_ENCRYPTION_KEY=... records_gen REPO N\n");
        return 2;
    }
    size_t n = strtoull(argv[2], NULL, 10);
    struct err e = ERR_INIT;
    struct repo *r = repo_open(argv[1], key, &e);
    if (!r)
        die(&e);
    json_t *snaps = repo_snapshot_list(r, NULL, &e);
    if (!snaps)
        die(&e);
    size_t nb = json_array_size(snaps);
    if (nb == 0) {
        fprintf(stderr, "records_gen: the repository has no backup\n");
        return 1;
    }
    int64_t t0 = time_now_ns() - (int64_t)n * 1000000000LL;
    for (size_t i = 0; i < n; i++) {
        const char *id = json_string_value(json_object_get(json_array_get(snaps, i % nb), "id"));
        char when[40];
        time_format_iso(t0 + (int64_t)i * 1000000000LL, when, sizeof(when));
        int ok = i % 97 != 0;
        json_t *rec = json_pack("{s:s, s:s, s:b, s:I}", "backupId", id, "time", when, "ok", ok,
                                "bytesChecked", (json_int_t)123456);
        if (!ok)
            json_object_set_new(rec, "error", json_string("bench: simulated damage"));
        if (repo_record_add(r, "verify", rec, &e) != 0)
            die(&e);
        json_decref(rec);
    }
    printf("%zu verify records added over %zu backups\n", n, nb);
    json_decref(snaps);
    repo_close(r);
    return 0;
}

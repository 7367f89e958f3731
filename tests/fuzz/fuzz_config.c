/* libFuzzer harness: the env-file parser of config_load (src/core/config.c), as it reads
 * .env.local or --env-file, with its secret-memory buffers (src/crypto/secmem.c).
 *
 * Input: the env file. It is written to a memfd and loaded as "/proc/self/fd/<n>". A few
 * variables are then read back with config_get / config_bool / config_encryption_key. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "caris/config.h"

static int memfd = -1;
static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memfd < 0) {
        memfd = memfd_create("fuzz-env", 0);
        if (memfd < 0)
            abort();
        snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
    }
    if (ftruncate(memfd, 0) != 0 || pwrite(memfd, data, size, 0) != (ssize_t)size)
        abort();
    struct config c;
    struct err e = ERR_INIT;
    if (config_load(&c, path, &e) != 0)
        return 0;
    static const char *const names[] = {"BACKUP_DIR", "BACKUP_ENCRYPTION_KEY", "A", "_",
                                        "POSTGRES_URL"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *v = config_get(&c, names[i]);
        if (v)
            (void)strlen(v);
        bool b;
        (void)config_bool(&c, names[i], false, &b, &e);
    }
    const char *key;
    (void)config_encryption_key(&c, &key, &e);
    (void)config_backup_dir(&c);
    config_free(&c);
    return 0;
}

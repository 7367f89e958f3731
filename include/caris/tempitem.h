/* Items in BACKUP_DIR/temp (a staged dump, a pg_restore list, a scratch cluster) hold
 * decrypted data. A process killed with SIGKILL cannot remove its items: the next restore
 * sweeps them. An item is made under a name no sweep looks at (".caris-new-XXXXXX"), locked
 * (flock, on a descriptor its process keeps open until it has removed the item), and only
 * then renamed to its final name: a sweep that can take an item's lock knows its process is
 * gone. */
#ifndef CARIS_TEMPITEM_H
#define CARIS_TEMPITEM_H

#include <stdbool.h>
#include <stddef.h>

#include "caris/core.h"

struct temp_item {
    char *path; /* DIR/PREFIXxxxxxx */
    int fd;     /* holds the lock; for a file, also open for reading and writing */
    bool dir;
};
#define TEMP_ITEM_INIT                                                                             \
    {                                                                                              \
        NULL, -1, false                                                                            \
    }

/* Makes DIR/PREFIXxxxxxx, a file (0600) or a directory (0700), locked. DIR must exist. */
int temp_item_create(struct temp_item *t, const char *dir, const char *prefix, bool directory,
                     struct err *e);
/* Removes the item (a directory with all it holds), then gives up its lock. Nothing when t
 * holds no item; t is reset. */
void temp_item_remove(struct temp_item *t);

/* Removes every item of dir whose name starts with one of prefixes (NULL-terminated) and
 * whose lock can be taken, except a directory for which keep(path) says it is still in use.
 * Appends the removed names to names (", "-separated, "..." past n bytes) when names is not
 * NULL. Returns how many were removed; a dir that cannot be read has none. */
size_t temp_sweep(const char *dir, const char *const *prefixes, bool (*keep)(const char *path),
                  char *names, size_t n);

/* Removes path and, for a directory, everything under it (symbolic links are not followed);
 * best effort: what can be removed is. 0, or -1 when path could not be walked. */
int fs_remove_tree(const char *path);

#endif

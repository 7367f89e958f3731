/* Temporary items that a later run can tell are orphaned (see caris/tempitem.h). */
#include "caris/tempitem.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    /* keep going on errors: remove what can be removed */
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

int fs_remove_tree(const char *path)
{
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void remove_path(const char *path, bool dir)
{
    if (dir)
        fs_remove_tree(path);
    else
        unlink(path);
}

int temp_item_create(struct temp_item *t, const char *dir, const char *prefix, bool directory,
                     struct err *e)
{
    *t = (struct temp_item)TEMP_ITEM_INIT;
    /* A final name can be taken already (its suffix came from an earlier ".caris-new-"
     * name): RENAME_NOREPLACE refuses it, and a new suffix is tried. */
    for (int attempt = 0; attempt < 100; attempt++) {
        char *tmp = xasprintf("%s/.caris-new-XXXXXX", dir);
        int fd = -1;
        if (directory) {
            if (mkdtemp(tmp))
                fd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        } else {
            fd = mkostemp(tmp, O_CLOEXEC);
        }
        if (fd < 0) {
            int en = errno;
            if (directory)
                rmdir(tmp);
            err_sys(e, en, NULL, "cannot create a temporary %s in %s",
                    directory ? "directory" : "file", dir);
            free(tmp);
            return -1;
        }
        if ((directory ? fchmod(fd, 0700) : fchmod(fd, 0600)) != 0 || flock(fd, LOCK_EX) != 0) {
            int en = errno;
            remove_path(tmp, directory);
            close(fd);
            err_sys(e, en, NULL, "cannot prepare the temporary item %s", tmp);
            free(tmp);
            return -1;
        }
        char *final = xasprintf("%s/%s%s", dir, prefix, tmp + strlen(tmp) - 6);
        int rc = renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE);
        if (rc != 0 && errno == EINVAL) { /* a file system without RENAME_NOREPLACE */
            struct stat st;
            if (lstat(final, &st) == 0)
                errno = EEXIST;
            else
                rc = rename(tmp, final);
        }
        if (rc == 0) {
            free(tmp);
            t->path = final;
            t->fd = fd;
            t->dir = directory;
            return 0;
        }
        int en = errno;
        remove_path(tmp, directory);
        close(fd);
        free(tmp);
        if (en != EEXIST) {
            err_sys(e, en, NULL, "cannot create the temporary item %s", final);
            free(final);
            return -1;
        }
        free(final);
    }
    return err_set(e, ERR_IO, NULL,
                   "cannot create a temporary item in %s: every name tried is taken", dir);
}

void temp_item_remove(struct temp_item *t)
{
    if (t->path)
        remove_path(t->path, t->dir); /* under the lock: no sweep removes it meanwhile */
    if (t->fd >= 0)
        close(t->fd);
    free(t->path);
    *t = (struct temp_item)TEMP_ITEM_INIT;
}

size_t temp_sweep(const char *dir, const char *const *prefixes, bool (*keep)(const char *path),
                  char *names, size_t n)
{
    if (names && n)
        names[0] = '\0';
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        bool match = false;
        for (const char *const *p = prefixes; *p && !match; p++)
            match = strncmp(de->d_name, *p, strlen(*p)) == 0;
        if (!match)
            continue;
        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) ||
            flock(fd, LOCK_EX | LOCK_NB) != 0) { /* in use: its process holds the lock */
            close(fd);
            continue;
        }
        /* Still the item that was locked: its process may have removed it just before. */
        struct stat now;
        if (fstatat(dirfd(d), de->d_name, &now, AT_SYMLINK_NOFOLLOW) != 0 ||
            now.st_ino != st.st_ino || now.st_dev != st.st_dev) {
            close(fd);
            continue;
        }
        char *path = xasprintf("%s/%s", dir, de->d_name);
        bool isdir = S_ISDIR(st.st_mode);
        if (!(isdir && keep && keep(path))) {
            remove_path(path, isdir);
            removed++;
            if (names && n)
                str_list_add(names, n, de->d_name);
        }
        free(path);
        close(fd);
    }
    closedir(d);
    return removed;
}

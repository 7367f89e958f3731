/* Test helpers shared by test_fswalk.c and test_fsrestore.c: a tree holding every kind of
 * entry the file backup must handle, a walk callback that records what it sees, and a
 * removal that works for paths longer than PATH_MAX. Include after <cmocka.h>. */
#ifndef CARIS_TEST_FSTREE_H
#define CARIS_TEST_FSTREE_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "caris/fsmeta.h"

#define T_MIB (1024 * 1024)
#define T_DEEP_LEVELS 20
#define T_DEEP_NAME 250
#define T_UID 1234
#define T_GID 5678

/* ---- building ------------------------------------------------------------------------------ */

static inline void t_write_file(int dfd, const char *name, const char *data, mode_t mode)
{
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    size_t len = strlen(data);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

static inline void t_set_mtime(int dfd, const char *name, time_t sec, long nsec)
{
    const struct timespec ts[2] = {{.tv_sec = sec, .tv_nsec = nsec},
                                   {.tv_sec = sec, .tv_nsec = nsec}};
    assert_int_equal(utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW), 0);
}

/* The name of deep level i: T_DEEP_NAME times one letter. */
static inline void t_deep_name(int i, char name[T_DEEP_NAME + 1])
{
    memset(name, 'a' + i, T_DEEP_NAME);
    name[T_DEEP_NAME] = '\0';
}

/* Builds the test tree in the directory root. Returns whether user xattrs are supported
 * there. Entries:
 *   file (xattr user.comment, mtime with nanoseconds), empty, emptydir/, link -> file,
 *   dangling -> does/not/exist, hl_a + hl_b (hard links), suid (04755, owner 1234:5678 when
 *   root), sgid (02755), sticky/ (01777), sparse (1 MiB hole, 4 KiB data, 2 MiB - 4 KiB
 *   trailing hole), fifo, sock (skipped by the walk), chardev (root only, skipped),
 *   "new\nline", "with space", "bad\xff\xfe", a 255-byte name, deep/ with 20 levels of
 *   250-byte names and a file "bottom" at the end (path > 4096 bytes). */
static inline bool t_build_tree(const char *root)
{
    int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(rfd >= 0);
    bool root_user = geteuid() == 0;

    t_write_file(rfd, "file", "hello, records\n", 0640);
    bool xattrs = true;
    int xfd = openat(rfd, "file", O_RDONLY | O_CLOEXEC);
    assert_true(xfd >= 0);
    if (fsetxattr(xfd, "user.comment", "patient \x01\xff", 10, 0) < 0) {
        assert_true(errno == ENOTSUP);
        xattrs = false;
    }
    close(xfd);
    t_set_mtime(rfd, "file", 1700000000, 123456789);
    t_write_file(rfd, "empty", "", 0600);
    assert_int_equal(mkdirat(rfd, "emptydir", 0750), 0);
    t_set_mtime(rfd, "emptydir", 1500000000, 5);
    assert_int_equal(symlinkat("file", rfd, "link"), 0);
    assert_int_equal(symlinkat("does/not/exist", rfd, "dangling"), 0);
    t_set_mtime(rfd, "link", 1600000000, 987654321);
    t_write_file(rfd, "hl_a", "two names\n", 0644);
    assert_int_equal(linkat(rfd, "hl_a", rfd, "hl_b", 0), 0);
    t_write_file(rfd, "suid", "#!/bin/sh\n", 0755);
    if (root_user) {
        assert_int_equal(fchownat(rfd, "suid", T_UID, T_GID, 0), 0);
        assert_int_equal(fchownat(rfd, "link", T_UID, T_GID, AT_SYMLINK_NOFOLLOW), 0);
    }
    assert_int_equal(fchmodat(rfd, "suid", 04755, 0), 0);
    t_write_file(rfd, "sgid", "#!/bin/sh\n", 0755);
    assert_int_equal(fchmodat(rfd, "sgid", 02755, 0), 0);
    assert_int_equal(mkdirat(rfd, "sticky", 0700), 0);
    assert_int_equal(fchmodat(rfd, "sticky", 01777, 0), 0);

    int fd = openat(rfd, "sparse", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    char block[4096];
    memset(block, 'x', sizeof(block));
    assert_int_equal(pwrite(fd, block, sizeof(block), T_MIB), (ssize_t)sizeof(block));
    assert_int_equal(ftruncate(fd, 3 * T_MIB), 0);
    assert_int_equal(close(fd), 0);

    assert_int_equal(mkfifoat(rfd, "fifo", 0640), 0);
    assert_int_equal(mknodat(rfd, "sock", S_IFSOCK | 0600, 0), 0);
    if (root_user)
        assert_int_equal(mknodat(rfd, "chardev", S_IFCHR | 0600, makedev(1, 3)), 0);
    t_write_file(rfd, "new\nline", "nl\n", 0644);
    t_write_file(rfd, "with space", "sp\n", 0644);
    t_write_file(rfd, "bad\xff\xfe", "not utf-8\n", 0644);
    char longname[256];
    memset(longname, 'n', 255);
    longname[255] = '\0';
    t_write_file(rfd, longname, "255\n", 0644);

    assert_int_equal(mkdirat(rfd, "deep", 0755), 0);
    int dfd = openat(rfd, "deep", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dfd >= 0);
    for (int i = 0; i < T_DEEP_LEVELS; i++) {
        char name[T_DEEP_NAME + 1];
        t_deep_name(i, name);
        assert_int_equal(mkdirat(dfd, name, 0755), 0);
        int next = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(next >= 0);
        close(dfd);
        dfd = next;
    }
    t_write_file(dfd, "bottom", "deep down\n", 0600);
    close(dfd);
    t_set_mtime(rfd, ".", 1400000000, 42);
    close(rfd);
    return xattrs;
}

/* ---- removing ------------------------------------------------------------------------------ */

static inline void t_rm_at(int dfd, const char *name)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlinkat(dfd, name, 0);
        return;
    }
    fchmodat(dfd, name, 0700, 0);
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        DIR *d = fdopendir(fd);
        struct dirent *de;
        /* collect first: removing while reading may skip names */
        char **names = NULL;
        size_t n = 0;
        while (d && (de = readdir(d))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            names = realloc(names, (n + 1) * sizeof(*names));
            names[n++] = strdup(de->d_name);
        }
        for (size_t i = 0; i < n; i++) {
            t_rm_at(dirfd(d), names[i]);
            free(names[i]);
        }
        free(names);
        closedir(d);
    }
    unlinkat(dfd, name, AT_REMOVEDIR);
}

static inline void t_rm_tree(const char *path)
{
    t_rm_at(AT_FDCWD, path);
}

/* ---- recording a walk ---------------------------------------------------------------------- */

struct t_rec {
    char *path;
    size_t path_len;
    char *name;
    struct stat st;
    struct fs_meta meta;
    uint64_t hash; /* FNV-1a of a regular file's contents */
    int error;     /* fswalk_entry.error: not opened, so neither hashed */
};

struct t_recs {
    struct t_rec *v;
    size_t n;
    char **warn;
    size_t nwarn;
};

static inline char *t_strdup0(const char *s)
{
    return s ? strdup(s) : NULL;
}

static inline void t_meta_dup(struct fs_meta *d, const struct fs_meta *s)
{
    *d = *s;
    d->user = t_strdup0(s->user);
    d->group = t_strdup0(s->group);
    d->link = t_strdup0(s->link);
    d->xattrs = s->nxattrs ? calloc(s->nxattrs, sizeof(*d->xattrs)) : NULL;
    for (size_t i = 0; i < s->nxattrs; i++) {
        d->xattrs[i].name = strdup(s->xattrs[i].name);
        d->xattrs[i].value = malloc(s->xattrs[i].len + 1);
        memcpy(d->xattrs[i].value, s->xattrs[i].value, s->xattrs[i].len);
        d->xattrs[i].len = s->xattrs[i].len;
    }
}

static inline uint64_t t_hash_at(int dfd, const char *name)
{
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    assert_true(fd >= 0);
    uint64_t h = 1469598103934665603ULL;
    unsigned char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n; i++)
            h = (h ^ buf[i]) * 1099511628211ULL;
    assert_true(n == 0);
    close(fd);
    return h;
}

static inline int t_record(void *ctx, const struct fswalk_entry *ent, struct err *e)
{
    (void)e;
    struct t_recs *r = ctx;
    r->v = realloc(r->v, (r->n + 1) * sizeof(*r->v));
    struct t_rec *x = &r->v[r->n++];
    memset(x, 0, sizeof(*x));
    x->path = strdup(ent->path);
    x->path_len = ent->path_len;
    x->name = strdup(ent->name);
    x->st = ent->st;
    t_meta_dup(&x->meta, &ent->meta);
    /* the entry can be reached through dirfd + name */
    struct stat st;
    assert_int_equal(fstatat(ent->dirfd, ent->name, &st, AT_SYMLINK_NOFOLLOW), 0);
    assert_int_equal(st.st_ino, ent->st.st_ino);
    x->error = ent->error;
    if (ent->error) /* the walker could not open it: it comes without a descriptor */
        assert_int_equal(ent->fd, -1);
    else if (ent->meta.type == FS_REG)
        x->hash = t_hash_at(ent->dirfd, ent->name);
    return 0;
}

static inline void t_warn(void *ctx, const char *path, const char *msg, bool lost)
{
    (void)path, (void)lost;
    struct t_recs *r = ctx;
    r->warn = realloc(r->warn, (r->nwarn + 1) * sizeof(*r->warn));
    r->warn[r->nwarn++] = strdup(msg);
}

static inline void t_recs_free(struct t_recs *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].path);
        free(r->v[i].name);
        fs_meta_free(&r->v[i].meta);
    }
    for (size_t i = 0; i < r->nwarn; i++)
        free(r->warn[i]);
    free(r->v);
    free(r->warn);
    memset(r, 0, sizeof(*r));
}

static inline const struct t_rec *t_find(const struct t_recs *r, const char *path)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->v[i].path, path) == 0)
            return &r->v[i];
    return NULL;
}

static inline bool t_warned(const struct t_recs *r, const char *needle)
{
    for (size_t i = 0; i < r->nwarn; i++)
        if (strstr(r->warn[i], needle))
            return true;
    return false;
}

/* The order of a walk: parents first, siblings in byte order, i.e. paths compared one
 * component at a time. */
static inline int t_path_cmp(const char *a, const char *b)
{
    if (strcmp(a, ".") == 0 || strcmp(b, ".") == 0)
        return (strcmp(b, ".") == 0) - (strcmp(a, ".") == 0);
    for (;;) {
        size_t la = strcspn(a, "/"), lb = strcspn(b, "/");
        int c = memcmp(a, b, la < lb ? la : lb);
        if (c)
            return c;
        if (la != lb)
            return la < lb ? -1 : 1;
        if (!a[la] || !b[lb])
            return (a[la] != 0) - (b[lb] != 0);
        a += la + 1;
        b += lb + 1;
    }
}

static inline void t_walk(const char *root, struct t_recs *r)
{
    struct err e = ERR_INIT;
    struct fswalk_opts o = {.warn = t_warn, .ctx = r};
    int rc = fswalk_run(root, &o, t_record, &e);
    if (rc < 0)
        err_print(&e, stderr);
    assert_int_equal(rc, 0);
}

/* Open descriptors of this process, to find leaks. */
static inline int t_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the one opendir uses */
}

/* A new directory under $TMPDIR (when set to an absolute path, else /tmp), malloc'd. */
static inline char *t_mkdtemp(void)
{
    const char *base = getenv("TMPDIR");
    if (!base || base[0] != '/')
        base = "/tmp";
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/caris-fs-XXXXXX", base);
    assert_non_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

#endif

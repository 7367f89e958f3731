#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sys/wait.h>

#include "fstree.h"

static void test_walk_tree(void **state)
{
    (void)state;
    char *root = t_mkdtemp();
    bool xattrs = t_build_tree(root);
    int fds = t_count_fds();
    struct t_recs r = {0};
    t_walk(root, &r);
    assert_int_equal(t_count_fds(), fds); /* nothing left open */

    /* parents before children, siblings in byte order */
    assert_true(r.n > 0);
    assert_string_equal(r.v[0].path, ".");
    for (size_t i = 1; i < r.n; i++) {
        if (t_path_cmp(r.v[i - 1].path, r.v[i].path) >= 0)
            fail_msg("out of order: %s before %s", r.v[i - 1].path, r.v[i].path);
        assert_int_equal(strlen(r.v[i].path), r.v[i].path_len);
    }
    /* top level: "bad\xff\xfe" < "deep" < ... bytewise, "new\nline" after "link" */
    const char *top[] = {"bad\xff\xfe", "dangling", "deep", "empty", "emptydir",  "fifo",
                         "file",        "hl_a",     "hl_b", "link",  "new\nline", NULL};
    for (size_t i = 0, j = 1; top[i]; i++, j++) {
        while (j < r.n && strchr(r.v[j].path, '/'))
            j++;
        assert_true(j < r.n);
        assert_string_equal(r.v[j].path, top[i]);
    }

    const struct t_rec *x;
    assert_non_null(x = t_find(&r, "."));
    assert_int_equal(x->meta.type, FS_DIR);
    assert_int_equal(x->meta.mtime_sec, 1400000000);
    assert_int_equal(x->meta.mtime_nsec, 42);
    assert_non_null(x = t_find(&r, "file"));
    assert_int_equal(x->meta.type, FS_REG);
    assert_int_equal(x->meta.mode, 0640);
    assert_int_equal(x->meta.size, 15);
    assert_int_equal(x->meta.mtime_sec, 1700000000);
    assert_int_equal(x->meta.mtime_nsec, 123456789);
    assert_int_equal(x->meta.uid, geteuid());
    if (geteuid() == 0) {
        assert_string_equal(x->meta.user, "root");
        assert_string_equal(x->meta.group, "root");
    }
    if (xattrs) {
        bool found = false;
        for (size_t i = 0; i < x->meta.nxattrs; i++) {
            if (strcmp(x->meta.xattrs[i].name, "user.comment") == 0) {
                assert_int_equal(x->meta.xattrs[i].len, 10);
                assert_memory_equal(x->meta.xattrs[i].value, "patient \x01\xff", 10);
                found = true;
            }
        }
        assert_true(found);
    }
    assert_non_null(x = t_find(&r, "empty"));
    assert_int_equal(x->meta.type, FS_REG);
    assert_int_equal(x->meta.size, 0);
    assert_non_null(x = t_find(&r, "emptydir"));
    assert_int_equal(x->meta.type, FS_DIR);
    assert_int_equal(x->meta.mode, 0750);
    assert_int_equal(x->meta.mtime_nsec, 5);
    assert_non_null(x = t_find(&r, "link"));
    assert_int_equal(x->meta.type, FS_SYMLINK);
    assert_string_equal(x->meta.link, "file");
    assert_int_equal(x->meta.mtime_nsec, 987654321);
    if (geteuid() == 0)
        assert_int_equal(x->meta.uid, T_UID);
    assert_non_null(x = t_find(&r, "dangling"));
    assert_int_equal(x->meta.type, FS_SYMLINK);
    assert_string_equal(x->meta.link, "does/not/exist");
    assert_non_null(x = t_find(&r, "hl_a"));
    assert_int_equal(x->meta.type, FS_REG);
    assert_null(x->meta.link);
    assert_non_null(x = t_find(&r, "hl_b"));
    assert_int_equal(x->meta.type, FS_HARDLINK);
    assert_string_equal(x->meta.link, "hl_a");
    assert_int_equal(x->meta.size, 10);
    assert_non_null(x = t_find(&r, "suid"));
    assert_int_equal(x->meta.mode, 04755);
    if (geteuid() == 0) {
        assert_int_equal(x->meta.uid, T_UID);
        assert_int_equal(x->meta.gid, T_GID);
    }
    assert_non_null(x = t_find(&r, "sgid"));
    assert_int_equal(x->meta.mode, 02755);
    assert_non_null(x = t_find(&r, "sticky"));
    assert_int_equal(x->meta.type, FS_DIR);
    assert_int_equal(x->meta.mode, 01777);
    assert_non_null(x = t_find(&r, "sparse"));
    assert_int_equal(x->meta.size, 3 * T_MIB);
    assert_non_null(x = t_find(&r, "fifo"));
    assert_int_equal(x->meta.type, FS_FIFO);
    assert_int_equal(x->meta.mode, 0640);
    assert_non_null(t_find(&r, "new\nline"));
    assert_non_null(t_find(&r, "with space"));
    assert_non_null(t_find(&r, "bad\xff\xfe"));
    char longname[256];
    memset(longname, 'n', 255);
    longname[255] = '\0';
    assert_non_null(t_find(&r, longname));

    /* skipped with a warning, the name escaped */
    assert_null(t_find(&r, "sock"));
    assert_true(t_warned(&r, "skipped socket sock"));
    if (geteuid() == 0) {
        assert_null(t_find(&r, "chardev"));
        assert_true(t_warned(&r, "skipped character device chardev"));
    }
    assert_int_equal(r.nwarn, geteuid() == 0 ? 2 : 1);

    /* the deep file: a path over 4096 bytes, reached by descriptors */
    x = &r.v[r.n - 1];
    while (x > r.v && strncmp(x->path, "deep/", 5) != 0)
        x--;
    assert_true(x->path_len > 4096);
    assert_string_equal(x->name, "bottom");
    assert_int_equal(x->meta.type, FS_REG);
    size_t ndeep = 0;
    for (size_t i = 0; i < r.n; i++)
        ndeep += strncmp(r.v[i].path, "deep", 4) == 0;
    assert_int_equal(ndeep, 1 + T_DEEP_LEVELS + 1);

    t_recs_free(&r);
    t_rm_tree(root);
    free(root);
}

/* Descriptors: one per level of depth, not one per sibling. */
struct fd_ctx {
    int base, max;
};

static int cb_count_fds(void *ctx, const struct fswalk_entry *ent, struct err *e)
{
    (void)ent;
    (void)e;
    struct fd_ctx *c = ctx;
    int n = t_count_fds() - c->base;
    if (n > c->max)
        c->max = n;
    return 0;
}

static void test_walk_fds_bounded(void **state)
{
    (void)state;
    char *root = t_mkdtemp();
    t_build_tree(root);
    int rfd = open(root, O_RDONLY | O_DIRECTORY);
    for (int i = 0; i < 50; i++) {
        char name[16];
        snprintf(name, sizeof(name), "sib%02d", i);
        assert_int_equal(mkdirat(rfd, name, 0700), 0);
    }
    close(rfd);
    struct fd_ctx c = {.base = t_count_fds()};
    struct fswalk_opts o = {.ctx = &c};
    struct err e = ERR_INIT;
    assert_int_equal(fswalk_run(root, &o, cb_count_fds, &e), 0);
    /* the parent of the root, then deep/ and its 20 levels */
    assert_true(c.max <= 1 + 1 + T_DEEP_LEVELS + 2);
    t_rm_tree(root);
    free(root);
}

static void test_walk_excludes(void **state)
{
    (void)state;
    char *root = t_mkdtemp();
    int rfd = open(root, O_RDONLY | O_DIRECTORY);
    assert_int_equal(mkdirat(rfd, "a", 0700), 0);
    assert_int_equal(mkdirat(rfd, "a/sub", 0700), 0);
    assert_int_equal(mkdirat(rfd, "cache", 0700), 0);
    assert_int_equal(mkdirat(rfd, "b", 0700), 0);
    t_write_file(rfd, "a/x.tmp", "", 0600);
    t_write_file(rfd, "a/y.txt", "", 0600);
    t_write_file(rfd, "a/sub/z.txt", "", 0600);
    t_write_file(rfd, "b/y.txt", "", 0600);
    t_write_file(rfd, "cache/big", "", 0600);
    t_write_file(rfd, "keep", "", 0600);
    close(rfd);

    /* name patterns "*.tmp" and "cache" (with its subtree), and a path pattern for the .txt
     * files directly in a: '*' does not cross '/' */
    const char *const excludes[] = {"*.tmp", "cache", "a/*.txt", NULL};
    struct t_recs r = {0};
    struct fswalk_opts o = {.excludes = excludes, .warn = t_warn, .ctx = &r};
    struct err e = ERR_INIT;
    assert_int_equal(fswalk_run(root, &o, t_record, &e), 0);
    const char *want[] = {".", "a", "a/sub", "a/sub/z.txt", "b", "b/y.txt", "keep"};
    assert_int_equal(r.n, sizeof(want) / sizeof(*want));
    for (size_t i = 0; i < r.n; i++)
        assert_string_equal(r.v[i].path, want[i]);
    assert_int_equal(r.nwarn, 0);
    t_recs_free(&r);
    t_rm_tree(root);
    free(root);
}

static void test_exclude_file(void **state)
{
    (void)state;
    char *dir = t_mkdtemp();
    char path[256];
    snprintf(path, sizeof(path), "%s/excludes", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("# comment\n*.tmp\n\n   \n/abs/path\r\nname with space\n#x\nlast", f);
    fclose(f);

    char **list = NULL;
    size_t n = 0;
    struct err e = ERR_INIT;
    assert_int_equal(fswalk_read_exclude_file(path, &list, &n, &e), 0);
    assert_int_equal(n, 4);
    assert_string_equal(list[0], "*.tmp");
    assert_string_equal(list[1], "/abs/path");
    assert_string_equal(list[2], "name with space");
    assert_string_equal(list[3], "last");
    assert_null(list[4]);
    /* a second file appends */
    assert_int_equal(fswalk_read_exclude_file(path, &list, &n, &e), 0);
    assert_int_equal(n, 8);
    assert_string_equal(list[7], "last");
    assert_null(list[8]);
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);

    list = NULL;
    snprintf(path, sizeof(path), "%s/missing\n", dir);
    assert_int_equal(fswalk_read_exclude_file(path, &list, &n, &e), -1);
    assert_int_equal(e.code, ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "cannot open exclude file"));
    assert_non_null(strstr(e.msg, "missing\\x0a"));
    assert_null(list);
    t_rm_tree(dir);
    free(dir);
}

static void test_data_extents(void **state)
{
    (void)state;
    char *root = t_mkdtemp();
    t_build_tree(root);
    int rfd = open(root, O_RDONLY | O_DIRECTORY);
    struct err e = ERR_INIT;
    struct fs_extent *x;
    size_t n;

    int fd = openat(rfd, "sparse", O_RDONLY);
    assert_int_equal(lseek(fd, 7, SEEK_SET), 7);
    assert_int_equal(fs_data_extents(fd, 3 * T_MIB, &x, &n, &e), 0);
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 7); /* the offset is kept */
    assert_int_equal(n, 1);
    assert_int_equal(x[0].off, T_MIB);
    assert_int_equal(x[0].len, 4096);
    free(x);
    /* a size smaller than the file clips the extents */
    assert_int_equal(fs_data_extents(fd, T_MIB + 100, &x, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(x[0].len, 100);
    free(x);
    assert_int_equal(fs_data_extents(fd, T_MIB, &x, &n, &e), 0);
    assert_int_equal(n, 0);
    free(x);
    close(fd);

    fd = openat(rfd, "file", O_RDONLY);
    assert_int_equal(fs_data_extents(fd, 15, &x, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(x[0].off, 0);
    assert_int_equal(x[0].len, 15);
    free(x);
    close(fd);

    fd = openat(rfd, "empty", O_RDONLY);
    assert_int_equal(fs_data_extents(fd, 0, &x, &n, &e), 0);
    assert_int_equal(n, 0);
    free(x);
    close(fd);

    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(fs_data_extents(p[0], 10, &x, &n, &e), -1);
    assert_int_equal(e.sys_errno, ESPIPE);
    close(p[0]);
    close(p[1]);
    close(rfd);
    t_rm_tree(root);
    free(root);
}

/* Directory read-ahead threads for the walks of the tests that run twice (0, then 2). */
static int walk_threads;

/* Runs the walk of root as an unprivileged user when we are root (permissions do not stop
 * root) and reports it through a pipe: "E path" and "W message" lines. */
static void walk_as_nobody(const char *root, char *out, size_t size)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
            _exit(2);
        struct t_recs r = {0};
        struct fswalk_opts o = {.warn = t_warn, .ctx = &r, .threads = walk_threads};
        struct err e = ERR_INIT;
        if (fswalk_run(root, &o, t_record, &e) < 0)
            _exit(3);
        FILE *f = fdopen(p[1], "w");
        for (size_t i = 0; i < r.n; i++) {
            fprintf(f, "E %s", r.v[i].path);
            if (r.v[i].error)
                fprintf(f, " not opened: %s", strerror(r.v[i].error));
            fputc('\n', f);
        }
        for (size_t i = 0; i < r.nwarn; i++)
            fprintf(f, "W %s\n", r.warn[i]);
        fclose(f);
        t_recs_free(&r);
        _exit(0);
    }
    close(p[1]);
    size_t used = 0;
    ssize_t got;
    while (used + 1 < size && (got = read(p[0], out + used, size - 1 - used)) > 0)
        used += (size_t)got;
    out[used] = '\0';
    close(p[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_walk_unreadable(void **state)
{
    (void)state;
    char *root = t_mkdtemp();
    assert_int_equal(chmod(root, 0755), 0);
    int rfd = open(root, O_RDONLY | O_DIRECTORY);
    t_write_file(rfd, "ok", "", 0644);
    t_write_file(rfd, "secret", "", 0000);
    assert_int_equal(mkdirat(rfd, "locked", 0755), 0);
    t_write_file(rfd, "locked/inside", "", 0644);
    assert_int_equal(fchmodat(rfd, "locked", 0311, 0), 0); /* searchable, not listable */
    close(rfd);

    char out[4096];
    walk_as_nobody(root, out, sizeof(out));
    assert_non_null(strstr(out, "E .\n"));
    assert_non_null(strstr(out, "E ok\n"));
    /* the file is warned about and still given, marked as not opened, so that the backup
     * records it as unreadable instead of leaving it out */
    assert_non_null(strstr(out, "E secret not opened: Permission denied\n"));
    assert_non_null(strstr(out, "W cannot open file secret: Permission denied\n"));
    /* the directory is kept, without its contents, marked as not opened */
    assert_non_null(strstr(out, "E locked not opened: Permission denied\n"));
    assert_null(strstr(out, "inside"));
    assert_non_null(
        strstr(out, "W cannot open directory locked, its contents are skipped: Permission denied"));

    /* an unreadable root is an error, not a warning */
    struct err e = ERR_INIT;
    char sub[512];
    snprintf(sub, sizeof(sub), "%s/locked", root);
    if (geteuid() != 0) {
        struct t_recs r = {0};
        assert_int_equal(fswalk_run(sub, NULL, t_record, &e), -1);
        assert_int_equal(e.code, ERR_IO);
        assert_non_null(strstr(e.hint, "permissions"));
        t_recs_free(&r);
    }
    t_rm_tree(root);
    free(root);
}

/* A callback that removes the next sibling: the walk has read the names already. */
static int cb_remove_b(void *ctx, const struct fswalk_entry *ent, struct err *e)
{
    if (strcmp(ent->path, "a") == 0)
        assert_int_equal(unlinkat(ent->dirfd, "b", 0), 0);
    return t_record(ctx, ent, e);
}

static void test_walk_vanished(void **state)
{
    (void)state;
    char *root = t_mkdtemp();
    int rfd = open(root, O_RDONLY | O_DIRECTORY);
    t_write_file(rfd, "a", "", 0644);
    t_write_file(rfd, "b", "", 0644);
    t_write_file(rfd, "c", "", 0644);
    close(rfd);
    struct t_recs r = {0};
    struct fswalk_opts o = {.warn = t_warn, .ctx = &r, .threads = walk_threads};
    struct err e = ERR_INIT;
    assert_int_equal(fswalk_run(root, &o, cb_remove_b, &e), 0);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.v[1].path, "a");
    assert_string_equal(r.v[2].path, "c");
    assert_int_equal(r.nwarn, 1);
    assert_string_equal(r.warn[0], "skipped b: it vanished while being read");
    t_recs_free(&r);
    t_rm_tree(root);
    free(root);
}

static int cb_skip_and_abort(void *ctx, const struct fswalk_entry *ent, struct err *e)
{
    t_record(ctx, ent, e);
    if (strcmp(ent->path, "emptydir") == 0 || strcmp(ent->path, "deep") == 0)
        return 1;
    if (strcmp(ent->path, "hl_a") == 0)
        return err_set(e, ERR_IO, NULL, "stop at %s", ent->path);
    return 0;
}

static void test_walk_skip_and_abort(void **state)
{
    (void)state;
    char *root = t_mkdtemp();
    t_build_tree(root);
    int fds = t_count_fds();
    struct t_recs r = {0};
    struct fswalk_opts o = {.warn = t_warn, .ctx = &r, .threads = walk_threads};
    struct err e = ERR_INIT;
    assert_int_equal(fswalk_run(root, &o, cb_skip_and_abort, &e), -1);
    assert_int_equal(t_count_fds(), fds); /* the directories read ahead are closed too */
    assert_string_equal(e.msg, "stop at hl_a");
    assert_string_equal(r.v[r.n - 1].path, "hl_a");
    for (size_t i = 0; i < r.n; i++)
        assert_null(strstr(r.v[i].path, "deep/"));
    t_recs_free(&r);
    t_rm_tree(root);
    free(root);
}

static void test_walk_roots(void **state)
{
    (void)state;
    char *root = t_mkdtemp();
    t_build_tree(root);
    struct err e = ERR_INIT;
    char path[512];

    /* a single file: one entry ".", named by its last component in its parent */
    struct t_recs r = {0};
    snprintf(path, sizeof(path), "%s/hl_b", root);
    t_walk(path, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.v[0].path, ".");
    assert_string_equal(r.v[0].name, "hl_b");
    assert_int_equal(r.v[0].meta.type, FS_REG);
    t_recs_free(&r);

    /* trailing slashes, and a symlink to a directory as the root, are followed */
    snprintf(path, sizeof(path), "%s/sticky//", root);
    t_walk(path, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.v[0].name, "sticky");
    assert_int_equal(r.v[0].meta.mode, 01777);
    t_recs_free(&r);
    snprintf(path, sizeof(path), "%s/dirlink", root);
    assert_int_equal(symlink("deep", path), 0);
    t_walk(path, &r);
    assert_int_equal(r.n, 1 + T_DEEP_LEVELS + 1);
    assert_int_equal(r.v[0].meta.type, FS_DIR);
    assert_string_equal(r.v[0].name, "deep");
    t_recs_free(&r);

    /* "." is the root itself */
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    snprintf(path, sizeof(path), "%s/emptydir", root);
    assert_int_equal(chdir(path), 0);
    t_walk(".", &r);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.v[0].meta.mtime_sec, 1500000000);
    t_recs_free(&r);

    /* a missing root, and a socket as the root, are errors */
    snprintf(path, sizeof(path), "%s/nope\x01", root);
    assert_int_equal(fswalk_run(path, NULL, t_record, &e), -1);
    assert_int_equal(e.code, ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "nope\\x01: No such file or directory"));
    snprintf(path, sizeof(path), "%s/sock", root);
    assert_int_equal(fswalk_run(path, NULL, t_record, &e), -1);
    assert_non_null(strstr(e.msg, "/sock: it is a socket"));
    t_rm_tree(root);
    free(root);
}

/* Walks "/" and descends only into proc, which is another file system: with
 * one_file_system its contents must not be walked, but the mount point is reported. */
static int cb_only_proc(void *ctx, const struct fswalk_entry *ent, struct err *e)
{
    struct t_recs *r = ctx;
    if (strcmp(ent->path, ".") != 0 && strcmp(ent->path, "proc") != 0)
        return 1;
    return t_record(r, ent, e);
}

static void test_walk_one_file_system(void **state)
{
    (void)state;
    struct stat root, proc;
    if (stat("/", &root) < 0 || stat("/proc/self", &proc) < 0 || root.st_dev == proc.st_dev)
        skip();
    struct t_recs r = {0};
    struct fswalk_opts o = {.one_file_system = true, .warn = t_warn, .ctx = &r};
    struct err e = ERR_INIT;
    assert_int_equal(fswalk_run("/", &o, cb_only_proc, &e), 0);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.v[0].path, ".");
    assert_string_equal(r.v[0].name, ".");
    assert_string_equal(r.v[1].path, "proc");
    t_recs_free(&r);
}

/* ---- reading directories ahead (opts.threads) ---- */

/* The walk as text: every entry and warning, in order, with what a backup keeps of it. */
struct dump {
    char *p;
    size_t len;
    int fd_base, fd_max;
};

static void dump_add(struct dump *d, const char *s)
{
    size_t l = strlen(s);
    d->p = realloc(d->p, d->len + l + 1);
    memcpy(d->p + d->len, s, l + 1);
    d->len += l;
}

static int cb_dump(void *ctx, const struct fswalk_entry *ent, struct err *e)
{
    (void)e;
    struct dump *d = ctx;
    char line[8192];
    snprintf(line, sizeof(line), "E %s|%s|%d|%o|%llu|%lld.%09lld|%llu|%s|%zu|%d\n", ent->path,
             ent->name, ent->meta.type, ent->meta.mode, (unsigned long long)ent->meta.size,
             (long long)ent->meta.mtime_sec, (long long)ent->meta.mtime_nsec,
             (unsigned long long)ent->st.st_ino, ent->meta.link ? ent->meta.link : "-",
             ent->meta.nxattrs, ent->fd >= 0);
    dump_add(d, line);
    /* the entry is reachable through its directory */
    struct stat st;
    assert_int_equal(fstatat(ent->dirfd, ent->name, &st, AT_SYMLINK_NOFOLLOW), 0);
    assert_int_equal(st.st_ino, ent->st.st_ino);
    if (ent->meta.type == FS_DIR) { /* (counting them all takes long) */
        int n = t_count_fds() - d->fd_base;
        if (n > d->fd_max)
            d->fd_max = n;
    }
    return 0;
}

static void warn_dump(void *ctx, const char *path, const char *msg, bool lost)
{
    struct dump *d = ctx;
    char line[8192];
    snprintf(line, sizeof(line), "W %s|%s|%d\n", path, msg, lost);
    dump_add(d, line);
}

static char *walk_dump(const char *root, int threads, const char *const *excludes, int *fd_max)
{
    struct dump d = {.fd_base = t_count_fds()};
    struct fswalk_opts o = {.excludes = excludes, .warn = warn_dump, .ctx = &d, .threads = threads};
    struct err e = ERR_INIT;
    int rc = fswalk_run(root, &o, cb_dump, &e);
    if (rc < 0)
        err_print(&e, stderr);
    assert_int_equal(rc, 0);
    assert_int_equal(t_count_fds(), d.fd_base); /* nothing left open */
    if (fd_max)
        *fd_max = d.fd_max;
    return d.p;
}

/* A wide tree: W directories of W directories of W directories, files at every level. */
static void build_wide(int rfd, int w)
{
    char p[128];
    for (int i = 0; i < w; i++) {
        snprintf(p, sizeof(p), "w%02d", i);
        assert_int_equal(mkdirat(rfd, p, 0700), 0);
        snprintf(p, sizeof(p), "w%02d.f", i);
        t_write_file(rfd, p, "x", 0600);
        for (int j = 0; j < w; j++) {
            snprintf(p, sizeof(p), "w%02d/%02d", i, j);
            assert_int_equal(mkdirat(rfd, p, 0700), 0);
            snprintf(p, sizeof(p), "w%02d/%02d.tmp", i, j);
            t_write_file(rfd, p, "y", 0600);
            for (int k = 0; k < w; k++) {
                snprintf(p, sizeof(p), "w%02d/%02d/%02d", i, j, k);
                assert_int_equal(mkdirat(rfd, p, 0700), 0);
                snprintf(p, sizeof(p), "w%02d/%02d/%02d/leaf", i, j, k);
                t_write_file(rfd, p, "z", 0600);
            }
        }
    }
}

static void test_walk_threads_same(void **state)
{
    (void)state;
    char *root = t_mkdtemp();
    t_build_tree(root);
    int rfd = open(root, O_RDONLY | O_DIRECTORY);
    build_wide(rfd, 9); /* 819 directories: many more than are ever read ahead */
    close(rfd);
    const char *const excludes[] = {"*.tmp", "w03", "w05/*/04", NULL};
    for (int x = 0; x < 2; x++) {
        const char *const *ex = x ? excludes : NULL;
        int fd0;
        char *want = walk_dump(root, 0, ex, &fd0);
        assert_non_null(strstr(want, "\nE w08/08/08/leaf|"));
        assert_true((strstr(want, "\nE w03|") == NULL) == (x == 1));
        assert_non_null(strstr(want, "W sock|skipped socket sock|0\n")); /* not lost */
        for (int threads = 1; threads <= 4; threads++) {
            for (int round = 0; round < 2; round++) {
                int fdn;
                char *got = walk_dump(root, threads, ex, &fdn);
                if (strcmp(got, want) != 0)
                    fail_msg("threads %d: the walk differs from the walk without threads", threads);
                /* depth + the read-ahead (512 directories, one being scanned per thread) */
                assert_true(fdn <= fd0 + 512 + threads);
                free(got);
            }
        }
        free(want);
    }
    t_rm_tree(root);
    free(root);
}

/* A walk started ahead (fswalk_start, the scanners reading meanwhile) and finished later gives
 * what fswalk_run gives; one cancelled leaves nothing open (its threads joined: no leak under
 * the sanitizers); a root that cannot be opened is said at the start. */
static void test_walk_started_ahead(void **state)
{
    (void)state;
    char *root = t_mkdtemp();
    t_build_tree(root);
    int rfd = open(root, O_RDONLY | O_DIRECTORY);
    build_wide(rfd, 6);
    close(rfd);
    const char *const excludes[] = {"*.tmp", "w03", NULL};
    char *want = walk_dump(root, 0, excludes, NULL);
    for (int threads = 0; threads <= 3; threads++) {
        struct dump d = {.fd_base = t_count_fds()};
        struct fswalk_opts o = {.excludes = excludes, .threads = threads};
        struct err e = ERR_INIT;
        struct fswalk *h = fswalk_start(root, &o, &e);
        assert_non_null(h);
        struct fswalk_opts o2 = {.excludes = excludes, .warn = warn_dump, .ctx = &d};
        assert_int_equal(fswalk_finish(h, &o2, cb_dump, &e), 0);
        if (strcmp(d.p, want) != 0)
            fail_msg("threads %d: the walk started ahead differs", threads);
        free(d.p);
        assert_int_equal(t_count_fds(), d.fd_base);

        int base = t_count_fds();
        h = fswalk_start(root, &o, &e);
        assert_non_null(h);
        fswalk_cancel(h);
        assert_int_equal(t_count_fds(), base);
    }
    fswalk_cancel(NULL);
    char none[4096];
    snprintf(none, sizeof(none), "%s/none", root);
    struct err e = ERR_INIT;
    assert_null(fswalk_start(none, NULL, &e));
    assert_non_null(strstr(e.msg, "cannot open"));
    free(want);
    t_rm_tree(root);
    free(root);
}

static void test_walk_unreadable_threads(void **state)
{
    walk_threads = 2;
    test_walk_unreadable(state);
    walk_threads = 0;
}

static void test_walk_vanished_threads(void **state)
{
    walk_threads = 2;
    test_walk_vanished(state);
    walk_threads = 0;
}

static void test_walk_skip_and_abort_threads(void **state)
{
    walk_threads = 2;
    test_walk_skip_and_abort(state);
    walk_threads = 0;
}

static void test_meta_free(void **state)
{
    (void)state;
    struct fs_meta m = {.type = FS_SYMLINK, .user = strdup("u"), .link = strdup("t")};
    m.xattrs = calloc(1, sizeof(*m.xattrs));
    m.xattrs[0].name = strdup("user.x");
    m.xattrs[0].value = malloc(1);
    m.nxattrs = 1;
    fs_meta_free(&m);
    assert_null(m.user);
    assert_int_equal(m.nxattrs, 0);
    fs_meta_free(&m); /* twice is harmless */
    fs_meta_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_tree),
        cmocka_unit_test(test_walk_fds_bounded),
        cmocka_unit_test(test_walk_excludes),
        cmocka_unit_test(test_exclude_file),
        cmocka_unit_test(test_data_extents),
        cmocka_unit_test(test_walk_unreadable),
        cmocka_unit_test(test_walk_vanished),
        cmocka_unit_test(test_walk_skip_and_abort),
        cmocka_unit_test(test_walk_roots),
        cmocka_unit_test(test_walk_one_file_system),
        cmocka_unit_test(test_meta_free),
        cmocka_unit_test(test_walk_threads_same),
        cmocka_unit_test(test_walk_started_ahead),
        cmocka_unit_test(test_walk_unreadable_threads),
        cmocka_unit_test(test_walk_vanished_threads),
        cmocka_unit_test(test_walk_skip_and_abort_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

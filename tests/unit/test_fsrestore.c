#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fstree.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static char *join(const char *a, const char *b)
{
    char *p = malloc(strlen(a) + strlen(b) + 2);
    sprintf(p, "%s/%s", a, b);
    return p;
}

/* Names in a directory (NULL-free count); "." and ".." not counted. */
static size_t count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            strncmp(de->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    return n;
}

static void read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, size - 1);
    assert_true(n >= 0);
    buf[n] = '\0';
    close(fd);
}

static void write_all(int fd, const char *data)
{
    size_t len = strlen(data);
    assert_int_equal(pwrite(fd, data, len, 0), (ssize_t)len);
}

/* Copies the data extents of src to dst at the same offsets: holes stay holes. */
static void copy_extents(int src, int dst, uint64_t size)
{
    struct fs_extent *x;
    size_t n;
    struct err e = ERR_INIT;
    assert_int_equal(fs_data_extents(src, size, &x, &n, &e), 0);
    char buf[65536];
    for (size_t i = 0; i < n; i++) {
        for (uint64_t done = 0; done < x[i].len;) {
            size_t want = x[i].len - done < sizeof(buf) ? x[i].len - done : sizeof(buf);
            ssize_t got = pread(src, buf, want, (off_t)(x[i].off + done));
            assert_true(got > 0);
            assert_int_equal(pwrite(dst, buf, (size_t)got, (off_t)(x[i].off + done)), got);
            done += (uint64_t)got;
        }
    }
    free(x);
}

/* A walk callback restoring every entry, reading file contents through dirfd + name. */
static int cb_restore(void *ctx, const struct fswalk_entry *ent, struct err *e)
{
    struct fsrestore *r = ctx;
    const struct fs_meta *m = &ent->meta;
    int rc = 0;
    switch (m->type) {
    case FS_DIR:
        rc = fsrestore_mkdir(r, ent->path, e);
        break;
    case FS_REG: {
        int src = openat(ent->dirfd, ent->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        assert_true(src >= 0);
        struct fsrestore_file *f = fsrestore_file_begin(r, ent->path, e);
        if (!f) {
            close(src);
            return -1;
        }
        copy_extents(src, fsrestore_file_fd(f), m->size);
        close(src);
        rc = fsrestore_file_commit(f, m->size, e);
        break;
    }
    case FS_SYMLINK:
        rc = fsrestore_symlink(r, ent->path, m->link, e);
        break;
    case FS_HARDLINK:
        rc = fsrestore_hardlink(r, ent->path, m->link, e);
        break;
    case FS_FIFO:
        rc = fsrestore_fifo(r, ent->path, e);
        break;
    }
    return rc < 0 ? -1 : fsrestore_apply_meta(r, ent->path, m, e);
}

static void assert_str0_equal(const char *a, const char *b)
{
    if (!a || !b)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void assert_same_entry(const struct t_rec *a, const struct t_rec *b)
{
    assert_string_equal(a->path, b->path);
    assert_int_equal(a->meta.type, b->meta.type);
    assert_int_equal(a->meta.mode, b->meta.mode);
    assert_int_equal(a->meta.uid, b->meta.uid);
    assert_int_equal(a->meta.gid, b->meta.gid);
    assert_str0_equal(a->meta.user, b->meta.user);
    assert_str0_equal(a->meta.group, b->meta.group);
    assert_int_equal(a->meta.mtime_sec, b->meta.mtime_sec);
    assert_int_equal(a->meta.mtime_nsec, b->meta.mtime_nsec);
    assert_int_equal(a->meta.size, b->meta.size);
    assert_str0_equal(a->meta.link, b->meta.link);
    assert_int_equal(a->meta.nxattrs, b->meta.nxattrs);
    for (size_t i = 0; i < a->meta.nxattrs; i++) {
        assert_string_equal(a->meta.xattrs[i].name, b->meta.xattrs[i].name);
        assert_int_equal(a->meta.xattrs[i].len, b->meta.xattrs[i].len);
        assert_memory_equal(a->meta.xattrs[i].value, b->meta.xattrs[i].value,
                            a->meta.xattrs[i].len);
    }
    assert_true(a->hash == b->hash);
}

/* ---- round trip ---------------------------------------------------------------------------- */

static void test_restore_tree(void **state)
{
    (void)state;
    char *base = t_mkdtemp();
    char *src = join(base, "src"), *dst = join(base, "dst");
    assert_int_equal(mkdir(src, 0700), 0);
    bool xattrs = t_build_tree(src);

    struct err e = ERR_INIT;
    int fds = t_count_fds();
    struct fsrestore *r = fsrestore_open(dst, false, &e);
    assert_non_null(r);
    struct fswalk_opts o = {.ctx = r};
    if (fswalk_run(src, &o, cb_restore, &e) < 0) {
        err_print(&e, stderr);
        fail();
    }
    if (fsrestore_finish(r, &e) < 0) {
        err_print(&e, stderr);
        fail();
    }
    assert_int_equal(t_count_fds(), fds);

    struct t_recs a = {0}, b = {0};
    t_walk(src, &a);
    t_walk(dst, &b);
    assert_int_equal(b.nwarn, 0); /* no socket or device was recreated */
    assert_int_equal(a.n, b.n);
    for (size_t i = 0; i < a.n; i++) {
        assert_same_entry(&a.v[i], &b.v[i]);
        assert_null(strstr(b.v[i].path, ".caris-tmp-"));
    }

    const struct t_rec *x = t_find(&b, "file");
    if (xattrs)
        assert_int_equal(x->meta.nxattrs, 1);
    assert_int_equal(x->meta.mtime_nsec, 123456789);
    /* setuid survives the chown */
    x = t_find(&b, "suid");
    assert_int_equal(x->meta.mode, 04755);
    if (geteuid() == 0) {
        assert_int_equal(x->meta.uid, T_UID);
        assert_int_equal(x->meta.gid, T_GID);
        assert_int_equal(t_find(&b, "link")->meta.uid, T_UID);
    }
    assert_int_equal(t_find(&b, "link")->meta.mtime_nsec, 987654321);
    assert_int_equal(t_find(&b, "sticky")->meta.mode, 01777);
    assert_int_equal(t_find(&b, "emptydir")->meta.mtime_nsec, 5);
    assert_int_equal(t_find(&b, ".")->meta.mtime_sec, 1400000000);
    /* one inode for both names */
    assert_int_equal(t_find(&b, "hl_b")->meta.type, FS_HARDLINK);
    assert_true(t_find(&b, "hl_a")->st.st_ino == t_find(&b, "hl_b")->st.st_ino);
    assert_int_equal(t_find(&b, "hl_a")->st.st_nlink, 2);
    /* the 1 MiB hole and the 2 MiB trailing hole are holes again */
    x = t_find(&b, "sparse");
    assert_int_equal(x->st.st_size, 3 * T_MIB);
    assert_true(x->st.st_blocks * 512 < 256 * 1024);
    assert_true(x->hash == t_find(&a, "sparse")->hash);
    /* the deep file, path over 4096 bytes */
    assert_true(b.v[b.n - 1].path_len > 4096 || b.v[b.n - 2].path_len > 4096 ||
                t_find(&b, "with space") != NULL);
    size_t deep = 0;
    for (size_t i = 0; i < b.n; i++)
        deep += b.v[i].path_len > 4096 && b.v[i].meta.type == FS_REG;
    assert_int_equal(deep, 1);

    t_recs_free(&a);
    t_recs_free(&b);
    t_rm_tree(base);
    free(src);
    free(dst);
    free(base);
}

/* ---- refusing what would leave the target -------------------------------------------------- */

static void test_check_path(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    const char *bad[] = {"../x", "/etc/x", "a//b", "",  "a/./b", "a/",          "./a",
                         "a/..", "..",     ".",    "/", "a/b/",  "x/../../etc", NULL};
    for (size_t i = 0; bad[i]; i++) {
        err_clear(&e);
        if (fsrestore_check_path(bad[i], strlen(bad[i]), &e) != -1)
            fail_msg("accepted %s", bad[i]);
        assert_int_equal(e.code, ERR_DAMAGE);
        assert_non_null(strstr(e.msg, "refusing to restore"));
    }
    assert_int_equal(fsrestore_check_path("a\0b", 3, &e), -1);
    assert_non_null(strstr(e.msg, "a\\x00b: it contains a NUL byte"));
    assert_int_equal(fsrestore_check_path("../\xff\n", 5, &e), -1);
    assert_non_null(strstr(e.msg, "../\\xff\\x0a: it has a \"..\" component"));
    const char *good[] = {"a", "a/b", "..a", "a..", ".hidden", "...", "a b/\xff\n", NULL};
    for (size_t i = 0; good[i]; i++)
        assert_int_equal(fsrestore_check_path(good[i], strlen(good[i]), &e), 0);
}

static void test_refuses_unsafe_paths(void **state)
{
    (void)state;
    char *base = t_mkdtemp();
    char *target = join(base, "t"), *outside = join(base, "out");
    assert_int_equal(mkdir(outside, 0700), 0);
    struct err e = ERR_INIT;
    struct fsrestore *r = fsrestore_open(target, false, &e);
    assert_non_null(r);
    struct fs_meta m = {.type = FS_REG, .mode = 0644};

    const char *bad[] = {"../x", "/etc/x", "a//b", "", "../out/x", NULL};
    for (size_t i = 0; bad[i]; i++) {
        assert_null(fsrestore_file_begin(r, bad[i], &e));
        assert_int_equal(e.code, ERR_DAMAGE);
        assert_int_equal(fsrestore_mkdir(r, bad[i], &e), -1);
        assert_int_equal(fsrestore_symlink(r, bad[i], "x", &e), -1);
        assert_int_equal(fsrestore_fifo(r, bad[i], &e), -1);
        assert_int_equal(fsrestore_hardlink(r, bad[i], "ok", &e), -1);
        assert_int_equal(fsrestore_hardlink(r, "ok", bad[i], &e), -1);
        assert_int_equal(fsrestore_apply_meta(r, bad[i], &m, &e), -1);
        assert_int_equal(e.code, ERR_DAMAGE);
    }
    /* "." is the target: metadata for it only if it is a directory */
    assert_int_equal(fsrestore_apply_meta(r, ".", &m, &e), -1);
    assert_int_equal(fsrestore_finish(r, &e), 0);
    assert_int_equal(count_entries(target, ""), 0);
    assert_int_equal(count_entries(outside, ""), 0);
    assert_int_equal(count_entries(base, ""), 2);
    t_rm_tree(base);
    free(target);
    free(outside);
    free(base);
}

static void test_refuses_planted_symlink(void **state)
{
    (void)state;
    char *base = t_mkdtemp();
    char *target = join(base, "t"), *outside = join(base, "out");
    char *evil = join(target, "evil"), *secret = join(outside, "secret");
    assert_int_equal(mkdir(outside, 0700), 0);
    assert_int_equal(mkdir(target, 0700), 0);
    assert_int_equal(symlink(outside, evil), 0);
    int ofd = open(outside, O_RDONLY | O_DIRECTORY);
    t_write_file(ofd, "secret", "keep me\n", 0600);
    close(ofd);
    char *d = join(target, "d"), *dl = join(d, "l");
    assert_int_equal(mkdir(d, 0700), 0);
    assert_int_equal(symlink("../evil", dl), 0);

    struct err e = ERR_INIT;
    struct fsrestore *r = fsrestore_open(target, true, &e);
    assert_non_null(r);
    assert_null(fsrestore_file_begin(r, "evil/x", &e));
    assert_int_equal(e.code, ERR_FAILURE); /* a target problem, not repository damage */
    assert_non_null(strstr(e.msg, "refusing to follow symlink evil in restore target"));
    assert_null(fsrestore_file_begin(r, "d/l/x", &e));
    assert_non_null(strstr(e.msg, "refusing to follow symlink d/l in restore target"));
    assert_int_equal(fsrestore_mkdir(r, "evil/sub", &e), -1);
    assert_non_null(strstr(e.msg, "refusing to follow symlink evil"));
    assert_int_equal(fsrestore_mkdir(r, "d/l/sub/sub", &e), -1);
    assert_int_equal(fsrestore_symlink(r, "evil/s", "x", &e), -1);
    assert_int_equal(fsrestore_fifo(r, "evil/f", &e), -1);
    /* a hard link to a file outside, through the symlink, is refused too */
    assert_int_equal(fsrestore_hardlink(r, "h", "evil/secret", &e), -1);
    assert_non_null(strstr(e.msg, "refusing to follow symlink evil"));

    /* metadata is never applied through the symlink */
    struct fs_meta m = {.type = FS_REG, .mode = 0666, .uid = geteuid(), .gid = getegid()};
    assert_int_equal(fsrestore_apply_meta(r, "evil/secret", &m, &e), -1);
    assert_int_equal(fsrestore_apply_meta(r, "evil", &m, &e), -1);
    assert_non_null(strstr(e.msg, "it is a symlink, not a regular file"));
    m.type = FS_DIR;
    m.mode = 0777;
    assert_int_equal(fsrestore_apply_meta(r, "evil", &m, &e), 0); /* deferred */
    assert_int_equal(fsrestore_finish(r, &e), -1);
    assert_non_null(strstr(e.msg, "evil: it is a symlink, not a directory"));

    struct stat st;
    assert_int_equal(stat(outside, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(count_entries(outside, ""), 1);
    assert_int_equal(stat(secret, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_nlink, 1);
    char buf[64];
    read_file(secret, buf, sizeof(buf));
    assert_string_equal(buf, "keep me\n");
    assert_int_equal(count_entries(target, ""), 2); /* evil and d, nothing else */
    t_rm_tree(base);
    free(d);
    free(dl);
    free(evil);
    free(secret);
    free(target);
    free(outside);
    free(base);
}

/* ---- target, temporary files, overwrite ------------------------------------------------------ */

static void test_open_target(void **state)
{
    (void)state;
    char *base = t_mkdtemp();
    char *target = join(base, "new"), *deep = join(base, "no/such");
    struct err e = ERR_INIT;

    struct fsrestore *r = fsrestore_open(target, false, &e);
    assert_non_null(r);
    struct stat st;
    assert_int_equal(stat(target, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    struct fsrestore_file *f = fsrestore_file_begin(r, "f", &e);
    assert_non_null(f);
    assert_int_equal(fsrestore_file_commit(f, 0, &e), 0);
    assert_int_equal(fsrestore_finish(r, &e), 0);

    /* not empty any more */
    assert_null(fsrestore_open(target, false, &e));
    assert_int_equal(e.code, ERR_USAGE);
    assert_non_null(strstr(e.msg, "is not empty"));
    assert_non_null(strstr(e.hint, "overwrit"));
    r = fsrestore_open(target, true, &e);
    assert_non_null(r);
    fsrestore_free(r);

    assert_null(fsrestore_open(deep, false, &e));
    assert_int_equal(e.code, ERR_NOT_FOUND);
    char *file = join(target, "f");
    assert_null(fsrestore_open(file, true, &e));
    t_rm_tree(base);
    free(file);
    free(target);
    free(deep);
    free(base);
}

static void test_temp_file_and_abort(void **state)
{
    (void)state;
    char *base = t_mkdtemp();
    char *target = join(base, "t"), *ab = join(target, "a/b"), *f_path = join(ab, "f");
    struct err e = ERR_INIT;
    struct fsrestore *r = fsrestore_open(target, false, &e);
    assert_non_null(r);

    /* until commit nothing is under the real name: the data is in an anonymous file
     * (O_TMPFILE) or, where that is not available, under a temporary name */
    struct fsrestore_file *f = fsrestore_file_begin(r, "a/b/f", &e);
    assert_non_null(f);
    write_all(fsrestore_file_fd(f), "half");
    assert_true(count_entries(ab, ".caris-tmp-") <= 1);
    assert_int_equal(count_entries(ab, ""), count_entries(ab, ".caris-tmp-"));
    fsrestore_file_abort(f);
    assert_int_equal(count_entries(ab, ""), 0);

    f = fsrestore_file_begin(r, "a/b/f", &e);
    assert_non_null(f);
    write_all(fsrestore_file_fd(f), "whole\n");
    assert_int_equal(fsrestore_file_commit(f, 6, &e), 0);
    assert_int_equal(count_entries(ab, ""), 1);
    char buf[64];
    read_file(f_path, buf, sizeof(buf));
    assert_string_equal(buf, "whole\n");

    /* the same path twice without overwrite: refused, the first one kept, no temp left */
    f = fsrestore_file_begin(r, "a/b/f", &e);
    assert_non_null(f);
    write_all(fsrestore_file_fd(f), "other\n");
    assert_int_equal(fsrestore_file_commit(f, 6, &e), -1);
    assert_non_null(strstr(e.msg, "a/b/f: it already exists"));
    assert_int_equal(count_entries(ab, ""), 1);
    read_file(f_path, buf, sizeof(buf));
    assert_string_equal(buf, "whole\n");
    assert_int_equal(fsrestore_symlink(r, "a/b/f", "x", &e), -1);
    assert_int_equal(fsrestore_mkdir(r, "a/b/f", &e), -1);

    /* a size beyond the data leaves a hole, a smaller one cuts */
    f = fsrestore_file_begin(r, "a/big", &e);
    write_all(fsrestore_file_fd(f), "x");
    assert_int_equal(fsrestore_file_commit(f, 8 * T_MIB, &e), 0);
    struct stat st;
    char *big = join(target, "a/big");
    assert_int_equal(stat(big, &st), 0);
    assert_int_equal(st.st_size, 8 * T_MIB);
    assert_true(st.st_blocks * 512 < T_MIB);
    fsrestore_free(r);
    t_rm_tree(base);
    free(big);
    free(f_path);
    free(ab);
    free(target);
    free(base);
}

static void test_overwrite(void **state)
{
    (void)state;
    char *base = t_mkdtemp();
    char *target = join(base, "t"), *victim = join(base, "victim");
    assert_int_equal(mkdir(target, 0700), 0);
    int bfd = open(base, O_RDONLY | O_DIRECTORY);
    t_write_file(bfd, "victim", "outside\n", 0600);
    t_write_file(bfd, "t/f", "old\n", 0600);
    t_write_file(bfd, "t/notdir", "", 0600);
    assert_int_equal(mkdirat(bfd, "t/dir", 0700), 0);
    assert_int_equal(symlinkat(victim, bfd, "t/lnk"), 0);
    assert_int_equal(symlinkat(victim, bfd, "t/lnk2"), 0);

    struct err e = ERR_INIT;
    struct fsrestore *r = fsrestore_open(target, true, &e);
    assert_non_null(r);
    struct fsrestore_file *f = fsrestore_file_begin(r, "f", &e);
    write_all(fsrestore_file_fd(f), "new\n");
    assert_int_equal(fsrestore_file_commit(f, 4, &e), 0);
    /* a symlink at the name is replaced, not written through */
    f = fsrestore_file_begin(r, "lnk", &e);
    write_all(fsrestore_file_fd(f), "new\n");
    assert_int_equal(fsrestore_file_commit(f, 4, &e), 0);
    assert_int_equal(fsrestore_symlink(r, "lnk2", "elsewhere", &e), 0);
    assert_int_equal(fsrestore_mkdir(r, "notdir", &e), 0);
    assert_int_equal(fsrestore_mkdir(r, "dir", &e), 0);
    assert_int_equal(fsrestore_fifo(r, "dir", &e), -1);
    assert_non_null(strstr(e.msg, "a directory of that name exists"));
    f = fsrestore_file_begin(r, "dir", &e);
    assert_int_equal(fsrestore_file_commit(f, 0, &e), -1);
    assert_int_equal(count_entries(target, ".caris-tmp-"), 0);
    assert_int_equal(fsrestore_finish(r, &e), 0);

    char buf[64];
    struct stat st;
    read_file(victim, buf, sizeof(buf));
    assert_string_equal(buf, "outside\n");
    int tfd = open(target, O_RDONLY | O_DIRECTORY);
    assert_int_equal(fstatat(tfd, "lnk", &st, AT_SYMLINK_NOFOLLOW), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(fstatat(tfd, "notdir", &st, AT_SYMLINK_NOFOLLOW), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(readlinkat(tfd, "lnk2", buf, sizeof(buf)), 9);
    close(tfd);
    close(bfd);
    t_rm_tree(base);
    free(victim);
    free(target);
    free(base);
}

/* ---- metadata ------------------------------------------------------------------------------- */

static void test_dir_meta_deepest_first(void **state)
{
    (void)state;
    char *base = t_mkdtemp();
    char *target = join(base, "t");
    struct err e = ERR_INIT;
    struct fsrestore *r = fsrestore_open(target, false, &e);
    assert_non_null(r);
    /* a parent without permissions, applied first, would lock its children out */
    struct fs_meta m = {.type = FS_DIR, .uid = geteuid(), .gid = getegid()};
    assert_int_equal(fsrestore_mkdir(r, ".", &e), 0);
    m.mtime_sec = 900000000;
    assert_int_equal(fsrestore_apply_meta(r, ".", &m, &e), 0);
    assert_int_equal(fsrestore_mkdir(r, "a", &e), 0);
    m.mode = 0000;
    m.mtime_sec = 1000000000;
    assert_int_equal(fsrestore_apply_meta(r, "a", &m, &e), 0);
    assert_int_equal(fsrestore_mkdir(r, "a/b", &e), 0);
    m.mode = 0500;
    m.mtime_sec = 1100000000;
    m.mtime_nsec = 7;
    assert_int_equal(fsrestore_apply_meta(r, "a/b", &m, &e), 0);
    /* files after their directory's metadata call: the directory times still end right */
    struct fsrestore_file *f = fsrestore_file_begin(r, "a/b/f", &e);
    assert_int_equal(fsrestore_file_commit(f, 0, &e), 0);
    struct fs_meta fm = {.type = FS_REG, .mode = 0444, .uid = 0, .gid = 0, .mtime_sec = 5};
    /* not root: chown fails with EPERM, which is not an error */
    if (geteuid() == 0) {
        fm.uid = 4321;
        fm.gid = 4321;
    }
    assert_int_equal(fsrestore_apply_meta(r, "a/b/f", &fm, &e), 0);
    /* directory metadata with a bad path fails at once */
    assert_int_equal(fsrestore_apply_meta(r, "a/../b", &m, &e), -1);
    if (fsrestore_finish(r, &e) < 0) {
        err_print(&e, stderr);
        fail();
    }

    char *a = join(target, "a"), *ab = join(target, "a/b"), *abf = join(target, "a/b/f");
    struct stat st;
    assert_int_equal(stat(target, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0000);
    assert_int_equal(st.st_mtim.tv_sec, 900000000);
    assert_int_equal(chmod(target, 0700), 0);
    assert_int_equal(stat(a, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0000);
    assert_int_equal(st.st_mtim.tv_sec, 1000000000);
    assert_int_equal(chmod(a, 0700), 0);
    assert_int_equal(stat(ab, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0500);
    assert_int_equal(st.st_mtim.tv_sec, 1100000000);
    assert_int_equal(st.st_mtim.tv_nsec, 7);
    assert_int_equal(st.st_atim.tv_sec, 1100000000);
    assert_int_equal(stat(abf, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0444);
    assert_int_equal(st.st_mtim.tv_sec, 5);
    if (geteuid() == 0)
        assert_int_equal(st.st_uid, 4321);
    t_rm_tree(base);
    free(a);
    free(ab);
    free(abf);
    free(target);
    free(base);
}

static void test_meta_type_mismatch(void **state)
{
    (void)state;
    char *base = t_mkdtemp();
    char *target = join(base, "t");
    struct err e = ERR_INIT;
    int fds = t_count_fds();
    struct fsrestore *r = fsrestore_open(target, false, &e);
    assert_non_null(r);
    assert_int_equal(fsrestore_fifo(r, "p", &e), 0);
    struct fs_meta m = {.type = FS_REG, .mode = 0600, .uid = geteuid(), .gid = getegid()};
    assert_int_equal(fsrestore_apply_meta(r, "p", &m, &e), -1);
    assert_non_null(strstr(e.msg, "p: it is a fifo, not a regular file"));
    m.type = FS_SYMLINK;
    assert_int_equal(fsrestore_apply_meta(r, "p", &m, &e), -1);
    m.type = FS_FIFO;
    m.mtime_nsec = 1000000000;
    assert_int_equal(fsrestore_apply_meta(r, "p", &m, &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    m.mtime_nsec = 999999999;
    assert_int_equal(fsrestore_apply_meta(r, "p", &m, &e), 0);
    assert_int_equal(fsrestore_apply_meta(r, "missing", &m, &e), -1);
    assert_int_equal(e.code, ERR_NOT_FOUND);
    assert_int_equal(fsrestore_hardlink(r, "h", "p", &e), -1);
    assert_non_null(strstr(e.msg, "not a regular file"));
    assert_int_equal(fsrestore_hardlink(r, "h", "missing", &e), -1);
    assert_non_null(strstr(e.hint, "first name"));

    /* metadata of a further name: the first name's, already applied to the inode */
    struct fsrestore_file *f = fsrestore_file_begin(r, "f", &e);
    assert_int_equal(fsrestore_file_commit(f, 0, &e), 0);
    struct fs_meta fm = {.type = FS_REG, .mode = 0000, .uid = geteuid(), .gid = getegid()};
    assert_int_equal(fsrestore_apply_meta(r, "f", &fm, &e), 0);
    assert_int_equal(fsrestore_hardlink(r, "f2", "f", &e), 0);
    fm.type = FS_HARDLINK;
    fm.mode = 0644;
    assert_int_equal(fsrestore_apply_meta(r, "f2", &fm, &e), 0);
    assert_int_equal(fsrestore_apply_meta(r, "p", &fm, &e), -1);
    struct stat st;
    char *f2 = join(target, "f2");
    assert_int_equal(lstat(f2, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0000);
    assert_int_equal(st.st_nlink, 2);
    free(f2);
    fsrestore_free(r);
    assert_int_equal(t_count_fds(), fds);
    t_rm_tree(base);
    free(target);
    free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restore_tree),
        cmocka_unit_test(test_check_path),
        cmocka_unit_test(test_refuses_unsafe_paths),
        cmocka_unit_test(test_refuses_planted_symlink),
        cmocka_unit_test(test_open_target),
        cmocka_unit_test(test_temp_file_and_abort),
        cmocka_unit_test(test_overwrite),
        cmocka_unit_test(test_dir_meta_deepest_first),
        cmocka_unit_test(test_meta_type_mismatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

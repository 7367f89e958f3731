/* LD_PRELOAD shim for test_backup_faults.sh: makes what happens to real files while a backup
 * reads them happen at a known moment, on a real file, instead of by a race. It acts on the
 * preads of the files whose name is READ_FAULT_FILE ("*.x": every name ending in ".x"; the
 * name is the last component of the descriptor's path in /proc/self/fd), once per file, at
 * the first pread at an offset of READ_FAULT_AT bytes or more (default 0):
 *
 *   READ_FAULT=truncate   truncate(2)s the file to READ_FAULT_SIZE bytes (default 0) before
 *                         that pread (as logrotate's copytruncate does to a log being backed up)
 *   READ_FAULT=grow       appends 100,000 bytes to the file before that pread
 *   READ_FAULT=rewrite    overwrites its first 4 KiB with other bytes (same size) before it
 *   READ_FAULT=eio        that pread and every later one of the file fail with EIO
 *   READ_FAULT=hold       creates "$READ_FAULT_DIR/reached-NAME", then waits (polling every 10
 *                         ms, for at most 120 s) until "$READ_FAULT_DIR/release-NAME" or
 *                         "$READ_FAULT_DIR/release" exists, then reads
 *
 *
 * and on the first openat(2) of such a file, before it (the walk found it moments ago):
 *
 *   READ_FAULT=vanish     unlinks it (a temporary file deleted while the backup walks)
 *   READ_FAULT=to-dir     unlinks it and makes a directory of that name
 *   READ_FAULT=eacces     fails with EACCES, every time (a directory or file the backup may
 *                         not read, as root too)
 *
 * and on flistxattr(2) of such a file:
 *
 *   READ_FAULT=xattr-eio  fails with EIO, once per file (a file system that failed for a moment)
 *
 *   READ_FAULT_LOG=FILE   at exit, appends "faults N" (how many times the shim acted)
 *
 * Built by the test: cc -shared -fPIC -o read_faults.so read_faults.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long faults;

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v ? v : "";
}

/* True when the descriptor's file is one the shim acts on; its path into path. */
static int is_target(int fd, char *path, size_t cap)
{
    const char *want = env("READ_FAULT_FILE");
    if (!*want)
        return 0;
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, cap - 1);
    if (n <= 0)
        return 0;
    path[n] = 0;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (want[0] == '*') {
        size_t wl = strlen(want + 1), bl = strlen(base);
        return bl >= wl && strcmp(base + bl - wl, want + 1) == 0;
    }
    return strcmp(base, want) == 0;
}

/* Files acted on so far (by path): each once. */
#define MAX_FIRED 256
static char *fired_paths[MAX_FIRED];
static int nfired;
static pthread_mutex_t fired_mu = PTHREAD_MUTEX_INITIALIZER;

/* Whether the shim acted on path already; with record, it now has (1 when it had not). */
static int fired(const char *path, int record)
{
    int found = 0;
    pthread_mutex_lock(&fired_mu);
    for (int i = 0; i < nfired && !found; i++)
        found = strcmp(fired_paths[i], path) == 0;
    if (!found && record && nfired < MAX_FIRED)
        fired_paths[nfired++] = strdup(path);
    pthread_mutex_unlock(&fired_mu);
    return record ? !found : found;
}

static int exists(const char *dir, const char *name)
{
    char p[16384];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void act(const char *m, const char *path)
{
    if (strcmp(m, "truncate") == 0) {
        if (truncate(path, atol(env("READ_FAULT_SIZE"))) != 0)
            perror("read_faults: truncate");
    } else if (strcmp(m, "grow") == 0 || strcmp(m, "rewrite") == 0) {
        int w = open(path, O_WRONLY | (m[0] == 'g' ? O_APPEND : 0));
        if (w < 0) {
            perror("read_faults: open");
            return;
        }
        static char junk[100000];
        memset(junk, 'Z', sizeof(junk));
        size_t len = m[0] == 'g' ? sizeof(junk) : 4096;
        if (write(w, junk, len) != (ssize_t)len)
            perror("read_faults: write");
        close(w);
    } else if (strcmp(m, "hold") == 0) {
        const char *dir = env("READ_FAULT_DIR");
        const char *slash = strrchr(path, '/');
        const char *base = slash ? slash + 1 : path;
        char p[8192], rel[8192];
        snprintf(p, sizeof(p), "%s/reached-%s", dir, base);
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
        snprintf(rel, sizeof(rel), "release-%s", base);
        for (int i = 0; i < 12000 && !exists(dir, rel) && !exists(dir, "release"); i++) {
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
        }
    }
}

static ssize_t fault_pread(const char *sym, int fd, void *buf, size_t n, off_t off)
{
    ssize_t (*real)(int, void *, size_t, off_t) =
        (ssize_t(*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, sym);
    char path[4096];
    const char *m = env("READ_FAULT");
    if (*m && is_target(fd, path, sizeof(path))) {
        int eio = strcmp(m, "eio") == 0;
        if (off >= atol(env("READ_FAULT_AT")) && fired(path, 1)) {
            __atomic_add_fetch(&faults, 1, __ATOMIC_RELAXED);
            if (!eio)
                act(m, path);
        }
        if (eio && fired(path, 0)) { /* once it failed, the file keeps failing */
            errno = EIO;
            return -1;
        }
    }
    return real(fd, buf, n, off);
}

static int fault_openat(const char *sym, int dfd, const char *name, int flags, mode_t mode)
{
    int (*real)(int, const char *, int, ...) =
        (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, sym);
    const char *m = env("READ_FAULT"), *want = env("READ_FAULT_FILE");
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    if ((strcmp(m, "vanish") == 0 || strcmp(m, "to-dir") == 0) && strcmp(base, want) == 0 &&
        fired(want, 1)) {
        __atomic_add_fetch(&faults, 1, __ATOMIC_RELAXED);
        if (unlinkat(dfd, name, 0) != 0)
            perror("read_faults: unlinkat");
        if (m[0] == 't' && mkdirat(dfd, name, 0700) != 0)
            perror("read_faults: mkdirat");
    }
    if (strcmp(m, "eacces") == 0 && strcmp(base, want) == 0) {
        __atomic_add_fetch(&faults, 1, __ATOMIC_RELAXED);
        errno = EACCES;
        return -1;
    }
    return real(dfd, name, flags, mode);
}

int openat(int dfd, const char *name, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return fault_openat("openat", dfd, name, flags, mode);
}

int openat64(int dfd, const char *name, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return fault_openat("openat64", dfd, name, flags, mode);
}

ssize_t flistxattr(int fd, char *list, size_t size)
{
    ssize_t (*real)(int, char *, size_t) =
        (ssize_t(*)(int, char *, size_t))dlsym(RTLD_NEXT, "flistxattr");
    char path[4096];
    if (strcmp(env("READ_FAULT"), "xattr-eio") == 0 && is_target(fd, path, sizeof(path)) &&
        fired(path, 1)) {
        __atomic_add_fetch(&faults, 1, __ATOMIC_RELAXED);
        errno = EIO;
        return -1;
    }
    return real(fd, list, size);
}

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    return fault_pread("pread", fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
    return fault_pread("pread64", fd, buf, n, off);
}

__attribute__((destructor)) static void report(void)
{
    const char *log = getenv("READ_FAULT_LOG");
    FILE *f = log ? fopen(log, "a") : NULL;
    if (f) {
        fprintf(f, "faults %ld\n", faults);
        fclose(f);
    }
}

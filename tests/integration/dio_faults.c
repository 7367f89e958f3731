/* LD_PRELOAD fault injector for test_direct_io.sh: makes the direct (O_DIRECT) reads and
 * writes of caris-backup meet what some file systems do, which this machine's do not: a
 * refusal of direct I/O (EINVAL, EOPNOTSUPP) and reads or writes cut short at a length that
 * leaves the next one unaligned. Only calls on descriptors with O_DIRECT set are touched.
 *
 *   DIO_FAULT=read-refuse   every direct pread fails with EINVAL
 *   DIO_FAULT=read-notsup   every direct pread fails with EOPNOTSUPP
 *   DIO_FAULT=read-short    a direct pread past offset 0 that read more than 8 KiB says it read
 *                           1,000 bytes less (the next read starts unaligned)
 *   DIO_FAULT=write-refuse  the 2nd direct pwrite of the process fails with EINVAL
 *   DIO_FAULT=write-short   the 2nd direct pwrite, if it wrote more than 8 KiB, says it wrote
 *                           1,000 bytes less (the caller writes them again: the same bytes)
 *   DIO_FAULT_LOG=FILE      at exit, appends "faults N" (how many calls were changed)
 *
 * Built by the test: cc -shared -fPIC -o dio_faults.so dio_faults.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long faults, direct_writes;

static const char *mode(void)
{
    const char *m = getenv("DIO_FAULT");
    return m ? m : "";
}

static int is_direct(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_DIRECT);
}

static ssize_t fault_pread(const char *sym, int fd, void *buf, size_t n, off_t off)
{
    ssize_t (*real)(int, void *, size_t, off_t) =
        (ssize_t(*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, sym);
    if (is_direct(fd)) {
        const char *m = mode();
        if (strcmp(m, "read-refuse") == 0 || strcmp(m, "read-notsup") == 0) {
            __atomic_add_fetch(&faults, 1, __ATOMIC_RELAXED);
            errno = strcmp(m, "read-refuse") == 0 ? EINVAL : EOPNOTSUPP;
            return -1;
        }
        if (strcmp(m, "read-short") == 0 && off > 0) {
            ssize_t r = real(fd, buf, n, off);
            if (r > 8192) { /* as if only that much had been read */
                __atomic_add_fetch(&faults, 1, __ATOMIC_RELAXED);
                r -= 1000;
            }
            return r;
        }
    }
    return real(fd, buf, n, off);
}

static ssize_t fault_pwrite(const char *sym, int fd, const void *buf, size_t n, off_t off)
{
    ssize_t (*real)(int, const void *, size_t, off_t) =
        (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, sym);
    if (is_direct(fd) && __atomic_add_fetch(&direct_writes, 1, __ATOMIC_RELAXED) == 2) {
        const char *m = mode();
        if (strcmp(m, "write-refuse") == 0) {
            __atomic_add_fetch(&faults, 1, __ATOMIC_RELAXED);
            errno = EINVAL;
            return -1;
        }
        if (strcmp(m, "write-short") == 0) {
            ssize_t w = real(fd, buf, n, off);
            if (w > 8192) { /* as if only that much had been written: the caller writes the
                             * rest again, the same bytes */
                __atomic_add_fetch(&faults, 1, __ATOMIC_RELAXED);
                w -= 1000;
            }
            return w;
        }
    }
    return real(fd, buf, n, off);
}

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    return fault_pread("pread", fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
    return fault_pread("pread64", fd, buf, n, off);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return fault_pwrite("pwrite", fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    return fault_pwrite("pwrite64", fd, buf, n, off);
}

__attribute__((destructor)) static void report(void)
{
    const char *log = getenv("DIO_FAULT_LOG");
    FILE *f = log ? fopen(log, "a") : NULL;
    if (f) {
        fprintf(f, "faults %ld\n", faults);
        fclose(f);
    }
}

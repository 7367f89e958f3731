/* Base utilities: allocation, growable buffers, logging, time, small helpers. */
#ifndef CARIS_CORE_H
#define CARIS_CORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "caris/err.h"

/* Allocation that cannot fail: out of memory aborts with a message (like git's xmalloc).
 * A backup that runs out of memory halfway is killed either way; aborting keeps the
 * "nothing half-written" rule because nothing is committed before the manifest. */
#define X_NONNULL __attribute__((returns_nonnull))
void *xmalloc(size_t n) X_NONNULL;
void *xcalloc(size_t n, size_t size) X_NONNULL;
void *xrealloc(void *p, size_t n) X_NONNULL;
char *xstrdup(const char *s) X_NONNULL;
char *xstrndup(const char *s, size_t n) X_NONNULL;
void *xmemdup(const void *p, size_t n) X_NONNULL;
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2))) X_NONNULL;
/* a * b + c without overflow, aborting otherwise (sizes computed from trusted values). */
size_t xsize(size_t a, size_t b, size_t c);
/* Out of memory: not recoverable; says so on stderr and aborts (core dumps are off). */
void xoom(size_t n) __attribute__((noreturn));

/* Growable byte buffer. Owner frees with buf_free. */
struct buf {
    uint8_t *data;
    size_t len, cap;
};
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_append_u8(struct buf *b, uint8_t v);
void buf_append_u32le(struct buf *b, uint32_t v);
void buf_append_u64le(struct buf *b, uint64_t v);
void buf_free(struct buf *b);

/* Bounds-checked little-endian reader for parsing untrusted bytes. Every read returns -1 once
 * the input is exhausted (and keeps failing), so parsers check once at the end or per step. */
struct reader {
    const uint8_t *p;
    size_t len, pos;
    bool bad;
};
void reader_init(struct reader *r, const void *p, size_t len);
int reader_u8(struct reader *r, uint8_t *v);
int reader_u32le(struct reader *r, uint32_t *v);
int reader_u64le(struct reader *r, uint64_t *v);
int reader_bytes(struct reader *r, void *out, size_t n);
const uint8_t *reader_skip(struct reader *r, size_t n); /* NULL when short */

uint32_t load_u32le(const uint8_t *p);
uint64_t load_u64le(const uint8_t *p);
void store_u32le(uint8_t *p, uint32_t v);
void store_u64le(uint8_t *p, uint64_t v);

/* Logging to stderr. Never pass secrets. */
enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
void log_set_level(enum log_level l);
enum log_level log_get_level(void);
void log_msg(enum log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Time. */
/* CLOCK_REALTIME. Test knob: CARIS_TEST_CLOCK_OFFSET=[+-]N[smhd] ("+400d") moves it by that
 * much, as a clock set ahead or back would; CARIS_TEST_CLOCK_OFFSET=/PATH, by the offset that
 * file holds at each call (missing: none), so that a test moves the clock of a running process.
 * The monotonic clock is left alone. */
int64_t time_now_ns(void);
int64_t time_mono_ns(void); /* CLOCK_MONOTONIC */
/* A condition variable whose timed waits count on CLOCK_MONOTONIC, so that a clock set back or
 * forward neither stretches nor cuts them; and the deadline ns_from_now for such a wait. */
void cond_init_monotonic(pthread_cond_t *c);
struct timespec time_mono_deadline(int64_t ns_from_now);
/* "2024-01-15T03:00:00.123Z" (UTC, milliseconds). out >= 32 bytes. */
void time_format_iso(int64_t ns, char *out, size_t n);
/* Parses what time_format_iso writes (milliseconds optional). -1 on bad input. */
int time_parse_iso(const char *s, int64_t *ns);
/* Seconds since 1970 (timegm's result) as nanoseconds: -1 when timegm failed or the time is
 * outside what an int64_t of nanoseconds holds (before 1678, after 2261), with room for a
 * fraction of a second to be added. */
int time_ns_from_s(int64_t t, int64_t *ns);

/* Escapes a byte string for messages: printable ASCII and printable UTF-8 as is, control
 * characters, backslashes and bytes that are not UTF-8 as \xNN. A string too long for n
 * bytes keeps its end (which names the entry), after "...". Returns out. */
char *str_escape(const char *s, size_t len, char *out, size_t n);
bool str_is_utf8(const char *s, size_t len);
/* Whether host (a URL's host, with or without ":port"; an IPv6 address in brackets) is on
 * this machine: localhost or a name under .localhost, an IPv4 address 127.x.x.x, ::1 (also
 * v4-mapped 127.x). A name that merely starts with "127." is not. */
bool net_host_is_loopback(const char *host);
/* "1.5 GiB", "512 B". */
void str_human_bytes(uint64_t n, char *out, size_t sz);
/* Appends item to the ", "-separated list in out (NUL-terminated, n bytes); past what fits,
 * one "..." instead. For messages that name what they found. */
void str_list_add(char *out, size_t n, const char *item);

/* base64 (standard alphabet, with padding). */
char *b64_encode(const void *p, size_t n);               /* malloc'd, NUL-terminated */
int b64_decode(const char *s, uint8_t **out, size_t *n); /* -1 on bad input */

/* Files. */
/* write()/pwrite() until done, retrying EINTR; -1 with errno set on failure. */
int fs_write_full(int fd, const void *data, size_t len);
int fs_pwrite_full(int fd, const void *data, size_t len, uint64_t off);
/* pread() of exactly len bytes at off, retrying EINTR; -1 with errno set on failure (EIO when
 * the file ends first). */
int fs_pread_full(int fd, void *data, size_t len, uint64_t off);
/* Direct I/O (O_DIRECT): offsets, lengths and memory aligned to FS_DIRECT_ALIGN (a page, a
 * multiple of any logical block size met in practice). */
#define FS_DIRECT_ALIGN 4096
/* Turns O_DIRECT on for fd if its file system is one where it is worth it, a local block file
 * system (ext2/3/4, XFS, btrfs, F2FS), and it takes it: whether it is on. Elsewhere direct I/O
 * is refused, gains nothing (tmpfs) or costs a round trip per request (NFS, SMB, FUSE). */
bool fs_direct_on(int fd);
/* Turns O_DIRECT off again: 0, or -1 with errno set. */
int fs_direct_off(int fd);
/* Whether err is how a file system refuses a direct read or write (of that alignment). */
bool fs_direct_refused(int err);
/* Creates dir and missing parents with the given mode (existing ones are left alone). */
int fs_mkdir_p(const char *path, unsigned mode, struct err *e);
/* Writes a whole file atomically: temp name in the same directory, fsync, rename, fsync of
 * the directory. mode applies to the new file. */
int fs_write_atomic(const char *path, const void *data, size_t len, unsigned mode, struct err *e);
/* A file written beside dest and put in its place only when complete. Where the file
 * system has anonymous files (O_TMPFILE) it has no name while it is written, so a process
 * killed meanwhile (SIGKILL) leaves nothing; elsewhere it is "DEST.caris-tmp.XXXXXX" (0600).
 * fs_newfile_open: fd is then open for reading and writing. fs_newfile_commit: closes fd and
 * renames the file to dest (the caller has fsynced what it wrote); fs_newfile_abort: closes fd and
 * removes what there is. Each leaves f reset; abort of a reset f does nothing. */
struct fs_newfile {
    int fd;
    char *tmp; /* the file's name; NULL while it is anonymous */
    char *dest;
};
#define FS_NEWFILE_INIT                                                                            \
    {                                                                                              \
        -1, NULL, NULL                                                                             \
    }
int fs_newfile_open(struct fs_newfile *f, const char *dest, struct err *e);
int fs_newfile_commit(struct fs_newfile *f, struct err *e);
void fs_newfile_abort(struct fs_newfile *f);
int fs_read_all(const char *path, struct buf *out, struct err *e);
int fs_fsync_dir(const char *path, struct err *e);
bool fs_exists(const char *path);

/* Test-only: with the environment variable var set to PATH (an existing file), writes
 * PATH.held, then waits (at most 120 s) until PATH is gone: a test acts while the caller is
 * held at that point (kills it, removes its lock, runs another). Nothing otherwise. */
void test_hold_point(const char *var);

/* Number of online CPUs (>= 1). */
int sys_ncpu(void);

#endif

#include "caris/core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

void xoom(size_t n)
{
    fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        xoom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        xoom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        xoom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xmemdup(s, strlen(s) + 1);
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(xsize(n, 1, 1));
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void *xmemdup(const void *p, size_t n)
{
    void *q = xmalloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int r = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (r < 0)
        xoom(0);
    return s;
}

size_t xsize(size_t a, size_t b, size_t c)
{
    size_t m;
    if (__builtin_mul_overflow(a, b, &m) || __builtin_add_overflow(m, c, &m)) {
        fprintf(stderr, "fatal: size overflow\n");
        abort();
    }
    return m;
}

void buf_reserve(struct buf *b, size_t extra)
{
    size_t need = xsize(1, b->len, extra);
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = xsize(cap, 2, 0);
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    if (!n)
        return;
    buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void buf_append_u8(struct buf *b, uint8_t v)
{
    buf_append(b, &v, 1);
}

void buf_append_u32le(struct buf *b, uint32_t v)
{
    uint8_t t[4];
    store_u32le(t, v);
    buf_append(b, t, 4);
}

void buf_append_u64le(struct buf *b, uint64_t v)
{
    uint8_t t[8];
    store_u64le(t, v);
    buf_append(b, t, 8);
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void reader_init(struct reader *r, const void *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->pos = 0;
    r->bad = false;
}

const uint8_t *reader_skip(struct reader *r, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

int reader_bytes(struct reader *r, void *out, size_t n)
{
    const uint8_t *p = reader_skip(r, n);
    if (!p)
        return -1;
    if (n)
        memcpy(out, p, n);
    return 0;
}

int reader_u8(struct reader *r, uint8_t *v)
{
    return reader_bytes(r, v, 1);
}

int reader_u32le(struct reader *r, uint32_t *v)
{
    const uint8_t *p = reader_skip(r, 4);
    if (!p)
        return -1;
    *v = load_u32le(p);
    return 0;
}

int reader_u64le(struct reader *r, uint64_t *v)
{
    const uint8_t *p = reader_skip(r, 8);
    if (!p)
        return -1;
    *v = load_u64le(p);
    return 0;
}

uint32_t load_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t load_u64le(const uint8_t *p)
{
    return (uint64_t)load_u32le(p) | (uint64_t)load_u32le(p + 4) << 32;
}

void store_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void store_u64le(uint8_t *p, uint64_t v)
{
    store_u32le(p, (uint32_t)v);
    store_u32le(p + 4, (uint32_t)(v >> 32));
}

static enum log_level g_level = LOG_INFO;

void log_set_level(enum log_level l)
{
    g_level = l;
}

enum log_level log_get_level(void)
{
    return g_level;
}

void log_msg(enum log_level l, const char *fmt, ...)
{
    if (l > g_level)
        return;
    static const char *const names[] = {"error", "warning", "info", "debug"};
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (l != LOG_INFO)
        fprintf(stderr, "%s: ", names[l]);
    fputs_visible(line, stderr, true);
    fputc('\n', stderr);
}

/* Test knob CARIS_TEST_CLOCK_OFFSET (see core.h): the offset "[+-]N[smhd]" in ns, in *ns; -1 if
 * s is not one. */
static int clock_offset_parse(const char *s, int64_t *ns)
{
    int64_t sign = 1;
    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    if (*s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    static const char units[] = "smhd";
    static const int64_t unit_s[] = {1, 60, 3600, 86400};
    const char *u = *end ? strchr(units, *end) : NULL;
    if (!u)
        return -1;
    int64_t unit = unit_s[u - units];
    while (*++end == '\n' || *end == ' ')
        ;
    if (errno || *end || n > 100LL * 365 * 86400 / unit)
        return -1;
    *ns = sign * n * unit * 1000000000;
    return 0;
}

static const char *g_clock_offset; /* CARIS_TEST_CLOCK_OFFSET, or NULL */
static int64_t g_clock_offset_ns;  /* its value when it is not a file's path */
static pthread_once_t g_clock_offset_once = PTHREAD_ONCE_INIT;

static void clock_offset_init(void)
{
    const char *v = getenv("CARIS_TEST_CLOCK_OFFSET");
    if (!v || !*v)
        return;
    if (*v != '/' && clock_offset_parse(v, &g_clock_offset_ns) < 0) {
        log_warn("CARIS_TEST_CLOCK_OFFSET=%s is neither an offset such as +400d nor a file's path: "
                 "ignored",
                 v);
        return;
    }
    g_clock_offset = v;
}

/* The offset a file names, read at each call (so that a test moves the clock of a running
 * process); 0 while it is missing or does not hold an offset. */
static int64_t clock_offset_file(const char *path)
{
    char buf[64];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    int64_t ns;
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return clock_offset_parse(buf, &ns) == 0 ? ns : 0;
}

int64_t time_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    pthread_once(&g_clock_offset_once, clock_offset_init);
    if (g_clock_offset)
        now += *g_clock_offset == '/' ? clock_offset_file(g_clock_offset) : g_clock_offset_ns;
    return now;
}

int64_t time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
}

struct timespec time_mono_deadline(int64_t ns_from_now)
{
    int64_t t = time_mono_ns() + ns_from_now;
    return (struct timespec){.tv_sec = (time_t)(t / 1000000000), .tv_nsec = (long)(t % 1000000000)};
}

void time_format_iso(int64_t ns, char *out, size_t n)
{
    time_t s = (time_t)(ns / 1000000000);
    int ms = (int)((ns % 1000000000) / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char tmp[32];
    strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%03dZ", tmp, ms);
}

int time_parse_iso(const char *s, int64_t *ns)
{
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -1;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 9) {
                frac = frac * 10 + (*p - '0');
                digits++;
            }
            p++;
        }
        while (digits++ < 9)
            frac *= 10;
    }
    if (*p != 'Z' || p[1] != '\0')
        return -1;
    /* (strptime takes any year) */
    if (time_ns_from_s(timegm(&tm), ns) != 0)
        return -1;
    *ns += frac;
    return 0;
}

int time_ns_from_s(int64_t t, int64_t *ns)
{
    if (t == -1 || t >= INT64_MAX / 1000000000 || t <= INT64_MIN / 1000000000)
        return -1;
    *ns = t * 1000000000;
    return 0;
}

/* Length of the valid, printable UTF-8 character at s, or 0. C1 controls count as not
 * printable. */
static size_t utf8_char_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < 0xa0 || (len == 3 && cp < 0x800) || (cp >= 0xd800 && cp <= 0xdfff) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

/* One unit of escaped output: a character kept as is, or one byte written as \xNN.
 * Returns the input bytes it covers and sets *out to the output bytes it needs. */
static size_t esc_unit(const unsigned char *s, size_t n, size_t *out)
{
    if (s[0] >= 0x20 && s[0] < 0x7f && s[0] != '\\') {
        *out = 1;
        return 1;
    }
    size_t len = s[0] >= 0x80 ? utf8_char_len(s, n) : 0;
    *out = len ? len : 4;
    return len ? len : 1;
}

/* Names are data, not text: control characters, backslashes and bytes that are not UTF-8
 * are shown as \xNN so that a message is one printable line. A name too long for buf keeps
 * its end, which says which entry it is. */
char *str_escape(const char *s, size_t n, char *buf, size_t size)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t total = 0, in, out, i = 0;
    if (size < 8) {
        if (size)
            buf[0] = '\0';
        return buf;
    }
    for (size_t j = 0; j < n; j += in) {
        in = esc_unit(u + j, n - j, &out);
        total += out;
    }
    char *p = buf;
    if (total >= size) {
        for (; i < n && total + 3 >= size; i += in) {
            in = esc_unit(u + i, n - i, &out);
            total -= out;
        }
        memcpy(p, "...", 3);
        p += 3;
    }
    for (; i < n; i += in) {
        in = esc_unit(u + i, n - i, &out);
        if (out == 4 && in == 1) {
            snprintf(p, 5, "\\x%02x", u[i]);
        } else {
            memcpy(p, u + i, in);
        }
        p += out;
    }
    *p = '\0';
    return buf;
}

void str_human_bytes(uint64_t n, char *out, size_t sz)
{
    static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(out, sz, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

bool str_is_utf8(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            if (c == 0)
                return false;
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= len) /* the sequence runs past the end */
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

char *b64_encode(const void *p, size_t n)
{
    size_t outlen = xsize((n + 2) / 3, 4, 1);
    char *out = xmalloc(outlen);
    /* EVP_EncodeBlock takes an int length; chunk the input for very large values. */
    size_t o = 0, i = 0;
    const uint8_t *in = p;
    while (i < n) {
        size_t take = n - i > 3 * 1024 * 1024 ? 3 * 1024 * 1024 : n - i;
        o += (size_t)EVP_EncodeBlock((unsigned char *)out + o, in + i, (int)take);
        i += take;
    }
    out[o] = '\0';
    return out;
}

int b64_decode(const char *s, uint8_t **out, size_t *n)
{
    size_t len = strlen(s);
    if (len % 4 != 0 || len > (size_t)1 << 30)
        return -1;
    uint8_t *buf = xmalloc(len / 4 * 3 + 1);
    int r = len ? EVP_DecodeBlock(buf, (const unsigned char *)s, (int)len) : 0;
    if (r < 0) {
        free(buf);
        return -1;
    }
    size_t pad = 0;
    if (len >= 1 && s[len - 1] == '=')
        pad++;
    if (len >= 2 && s[len - 2] == '=')
        pad++;
    *out = buf;
    *n = (size_t)r - pad;
    return 0;
}

int fs_mkdir_p(const char *path, unsigned mode, struct err *e)
{
    char *p = xstrdup(path);
    size_t len = strlen(p);
    for (size_t i = 1; i <= len; i++) {
        if (p[i] == '/' || p[i] == '\0') {
            char c = p[i];
            p[i] = '\0';
            if (mkdir(p, mode) != 0 && errno != EEXIST) {
                int en = errno;
                err_sys(e, en, NULL, "cannot create directory %s", p);
                free(p);
                return -1;
            }
            p[i] = c;
        }
    }
    free(p);
    struct stat st;
    if (stat(path, &st) != 0)
        return err_sys(e, errno, NULL, "cannot create directory %s", path);
    if (!S_ISDIR(st.st_mode))
        return err_set(e, ERR_IO, NULL, "cannot create directory %s: a file is in the way", path);
    return 0;
}

int fs_fsync_dir(const char *path, struct err *e)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return err_sys(e, errno, NULL, "cannot open directory %s", path);
    int r = fsync(fd);
    int en = errno;
    close(fd);
    if (r != 0 && en != EINVAL)
        return err_sys(e, en, NULL, "cannot fsync directory %s", path);
    return 0;
}

int fs_pwrite_full(int fd, const void *data, size_t len, uint64_t off)
{
    const uint8_t *p = data;
    while (len) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

int fs_pread_full(int fd, void *data, size_t len, uint64_t off)
{
    uint8_t *p = data;
    while (len) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EIO; /* the file ended first */
            return -1;
        }
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* See fs_direct_on. */
static bool fs_direct_io_local(int fd)
{
    struct statfs sf;
    if (fstatfs(fd, &sf) != 0)
        return false;
    switch ((unsigned long)sf.f_type) {
    case 0xEF53UL:     /* ext2, ext3, ext4 */
    case 0x58465342UL: /* XFS */
    case 0x9123683EUL: /* btrfs */
    case 0xF2F52010UL: /* F2FS */
        return true;
    default:
        return false;
    }
}

bool fs_direct_on(int fd)
{
    if (!fs_direct_io_local(fd))
        return false;
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
}

int fs_direct_off(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl & ~O_DIRECT) != 0 ? -1 : 0;
}

bool fs_direct_refused(int err)
{
    return err == EINVAL || err == EOPNOTSUPP || err == ENOTSUP;
}

int fs_write_full(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int fs_write_atomic(const char *path, const void *data, size_t len, unsigned mode, struct err *e)
{
    char *tmp = xasprintf("%s.tmp-%ld-%lx", path, (long)getpid(), (unsigned long)time_mono_ns());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        err_sys(e, errno, NULL, "cannot create %s", tmp);
        free(tmp);
        return -1;
    }
    if (fs_write_full(fd, data, len) != 0 || fsync(fd) != 0) {
        int en = errno;
        close(fd);
        unlink(tmp);
        err_sys(e, en, NULL, "cannot write %s", path);
        free(tmp);
        return -1;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int en = errno;
        unlink(tmp);
        err_sys(e, en, NULL, "cannot write %s", path);
        free(tmp);
        return -1;
    }
    free(tmp);
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    int r = 0;
    if (slash) {
        *slash = '\0';
        r = fs_fsync_dir(*dir ? dir : "/", e);
    } else {
        r = fs_fsync_dir(".", e);
    }
    free(dir);
    return r;
}

int fs_newfile_open(struct fs_newfile *f, const char *dest, struct err *e)
{
    *f = (struct fs_newfile)FS_NEWFILE_INIT;
    char *dir = xstrdup(dest);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    const char *d = slash ? (*dir ? dir : "/") : ".";
    /* (linking an anonymous file needs /proc/self/fd, without CAP_DAC_READ_SEARCH) */
    int fd = access("/proc/self/fd", X_OK) == 0 ? open(d, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)
                                                : (errno = EOPNOTSUPP, -1);
    int en = errno;
    free(dir);
    if (fd < 0 && en != EOPNOTSUPP && en != EISDIR && en != EINVAL)
        return err_sys(e, en, "DEST's directory must exist and be writable",
                       "cannot create a file beside %s", dest);
    f->dest = xstrdup(dest);
    if (fd >= 0) {
        f->fd = fd;
        return 0;
    }
    f->tmp = xasprintf("%s.caris-tmp.XXXXXX", dest);
    f->fd = mkostemp(f->tmp, O_CLOEXEC);
    if (f->fd < 0) {
        err_sys(e, errno, "DEST's directory must exist and be writable", "cannot create %s",
                f->tmp);
        fs_newfile_abort(f);
        return -1;
    }
    return 0;
}

int fs_newfile_commit(struct fs_newfile *f, struct err *e)
{
    if (!f->tmp) {
        /* a name of its own per call, never reused: it exists for the moment between the
         * link and the rename */
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", f->fd);
        for (int tries = 0;; tries++) {
            f->tmp = xasprintf("%s.caris-tmp.%ld-%lx-%d", f->dest, (long)getpid(),
                               (unsigned long)time_mono_ns(), tries);
            if (linkat(AT_FDCWD, proc, AT_FDCWD, f->tmp, AT_SYMLINK_FOLLOW) == 0)
                break;
            int en = errno;
            free(f->tmp);
            f->tmp = NULL;
            if (en != EEXIST || tries == 100) {
                err_sys(e, en, NULL, "cannot give a name to the new file beside %s", f->dest);
                fs_newfile_abort(f);
                return -1;
            }
        }
    }
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0) {
        err_sys(e, errno, NULL, "cannot write %s", f->tmp);
        fs_newfile_abort(f);
        return -1;
    }
    if (rename(f->tmp, f->dest) != 0) {
        err_sys(e, errno, NULL, "cannot rename %s to %s", f->tmp, f->dest);
        fs_newfile_abort(f);
        return -1;
    }
    free(f->tmp);
    free(f->dest);
    *f = (struct fs_newfile)FS_NEWFILE_INIT;
    return 0;
}

void fs_newfile_abort(struct fs_newfile *f)
{
    if (f->fd >= 0)
        close(f->fd);
    if (f->tmp)
        unlink(f->tmp);
    free(f->tmp);
    free(f->dest);
    *f = (struct fs_newfile)FS_NEWFILE_INIT;
}

int fs_read_all(const char *path, struct buf *out, struct err *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_sys(e, errno, NULL, "cannot open %s", path);
    /* sized once for a regular file (one byte more, to see the end in the same buffer); a
     * file that reports no size (/proc) starts at 4 KiB; growth doubles */
    struct stat st;
    size_t first = 4096;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        first = xsize(1, (size_t)st.st_size, 1);
    out->len = 0;
    for (;;) {
        if (out->len == out->cap) /* full, or nothing allocated yet (len 0, cap 0) */
            buf_reserve(out, out->len ? out->len : first);
        ssize_t r = read(fd, out->data + out->len, out->cap - out->len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int en = errno;
            close(fd);
            return err_sys(e, en, NULL, "cannot read %s", path);
        }
        if (r == 0)
            break;
        out->len += (size_t)r;
    }
    close(fd);
    return 0;
}

bool fs_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int sys_ncpu(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

void test_hold_point(const char *var)
{
    const char *h = getenv(var);
    if (!h || !*h || access(h, F_OK) != 0)
        return;
    char *held = xasprintf("%s.held", h);
    int fd = open(held, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    free(held);
    for (int i = 0; i < 12000 && access(h, F_OK) == 0; i++)
        nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
}

void str_list_add(char *out, size_t n, const char *item)
{
    size_t len = strlen(out);
    if (len >= 3 && strcmp(out + len - 3, "...") == 0)
        return; /* cut already: a shorter item after it would read as listed in order */
    if (len + strlen(item) + 8 > n) {
        if (len + 6 < n && !strstr(out, "..."))
            snprintf(out + len, n - len, "%s...", len ? ", " : "");
        return;
    }
    snprintf(out + len, n - len, "%s%s", len ? ", " : "", item);
}

bool net_host_is_loopback(const char *host)
{
    char h[256];
    size_t n = strlen(host);
    if (host[0] == '[') { /* [v6] or [v6]:port */
        const char *close = strchr(host, ']');
        if (!close || (size_t)(close - host - 1) >= sizeof(h))
            return false;
        memcpy(h, host + 1, (size_t)(close - host - 1));
        h[close - host - 1] = '\0';
    } else {
        const char *colon = strchr(host, ':');
        if (colon && strchr(colon + 1, ':')) /* a bare v6 address */
            colon = NULL;
        size_t hl = colon ? (size_t)(colon - host) : n;
        if (hl >= sizeof(h))
            return false;
        memcpy(h, host, hl);
        h[hl] = '\0';
    }
    size_t hl = strlen(h);
    if (strcasecmp(h, "localhost") == 0 || (hl > 10 && strcasecmp(h + hl - 10, ".localhost") == 0))
        return true;
    struct in_addr a4;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

/* The S3 backend against a real S3 server: s3rver (npm; scripts/install-deps.sh installs
 * it), started here on a free loopback port with a temporary directory, polled until it
 * listens, stopped at the end. The storage contract of caris/storage.h, object by object:
 * put / get / ranged reads (through the pack read window), size, mtime, put_new, remove,
 * list (with more than 1,000 objects, so ListObjectsV2 pages with continuation tokens),
 * and the errors (no object, no bucket, bad locations, no credentials). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/storage.h"
#include "tmpdir.h"

static pid_t server_pid;
static char *server_dir;
static char endpoint[64];

/* A loopback port the kernel hands out as free. When CARIS_TEST_PORTS names a directory
 * (scripts/test.sh runs these programs while the integration tests run), the port is also
 * reserved there as tests/integration/lib.sh's free_port does, so that no test of either
 * suite is given the same port before its server binds it. */
static int free_port(void)
{
    const char *reserved = getenv("CARIS_TEST_PORTS");
    for (int k = 0; k < 100; k++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        socklen_t len = sizeof(a);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
        close(fd);
        int port = ntohs(a.sin_port);
        if (!reserved || !*reserved)
            return port;
        char *mark = xasprintf("%s/%d", reserved, port);
        int err = mkdir(mark, 0700) == 0 ? 0 : errno;
        free(mark);
        if (err == 0 || err == ENOENT || err == ENOTDIR)
            return port; /* reserved, or no reservation directory (nothing else to avoid) */
        if (err != EEXIST)
            fail_msg("cannot reserve port %d in %s: %s", port, reserved, strerror(err));
    }
    fail_msg("no free port in 100 tries");
    return -1;
}

static bool listening(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

static int server_start(void **state)
{
    (void)state;
    server_dir = tmpdir_new();
    int port = free_port();
    char portstr[16], *data = xasprintf("%s/data", server_dir),
                      *log = xasprintf("%s/s3rver.log", server_dir);
    snprintf(portstr, sizeof(portstr), "%d", port);
    server_pid = fork();
    if (server_pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        /* s3rver 3.7 makes continuation tokens with DES: OpenSSL 3's legacy provider */
        setenv("NODE_OPTIONS", "--openssl-legacy-provider", 1);
        execlp("s3rver", "s3rver", "-d", data, "-a", "127.0.0.1", "-p", portstr,
               "--no-vhost-buckets", "--configure-bucket", "bkt", (char *)NULL);
        _exit(127);
    }
    free(data);
    free(log);
    int64_t deadline = time_mono_ns() + (int64_t)30 * 1000000000;
    while (!listening(port)) {
        int status;
        if (waitpid(server_pid, &status, WNOHANG) == server_pid) {
            fprintf(stderr, "s3rver exited (is it installed? scripts/install-deps.sh)\n");
            server_pid = 0;
            return -1;
        }
        if (time_mono_ns() > deadline)
            return -1;
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", port);
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    setenv("BACKUP_S3_RETRY_SECONDS", "2", 1);
    return 0;
}

static int server_stop(void **state)
{
    (void)state;
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
    }
    tmpdir_free(server_dir);
    return 0;
}

static struct storage *open_prefix(const char *prefix)
{
    char *loc = xasprintf("s3:%s/bkt/%s", endpoint, prefix);
    struct err e = ERR_INIT;
    struct storage *s = storage_open(loc, false, &e);
    if (!s)
        fprintf(stderr, "%s\n", e.msg);
    assert_non_null(s);
    free(loc);
    return s;
}

static void test_objects(void **state)
{
    (void)state;
    struct storage *s = open_prefix("objects");
    struct err e = ERR_INIT;
    /* A pack of 5 MiB: more than one read window. */
    size_t n = 5u << 20;
    uint8_t *data = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 2654435761u >> 13);
    assert_int_equal(storage_put(s, "data/ab/pack", data, n, &e), 0);
    uint64_t size = 0;
    assert_int_equal(storage_size(s, "data/ab/pack", &size, &e), 0);
    assert_int_equal(size, n);
    struct buf b = {0};
    assert_int_equal(storage_get(s, "data/ab/pack", n, &b, &e), 0);
    assert_int_equal(b.len, n);
    assert_memory_equal(b.data, data, n);
    /* Blob-sized reads here and there, crossing the end of a window. */
    static const uint64_t offs[] = {0, 17, (4u << 20) - 3, 4u << 20, (5u << 20) - 100, 12345};
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        uint8_t out[100];
        assert_int_equal(storage_read_at(s, "data/ab/pack", offs[i], out, sizeof(out), &e), 0);
        assert_memory_equal(out, data + offs[i], sizeof(out));
    }
    /* Past the end: damage, not a short read. */
    uint8_t out[200];
    assert_int_equal(storage_read_at(s, "data/ab/pack", n - 100, out, sizeof(out), &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    err_clear(&e);
    /* Wholly past the end (a truncated pack; the server answers 416): damage too. It was
     * retried until BACKUP_S3_RETRY_SECONDS ran out, then an I/O error ("the response body
     * was cut short": the length of the 416's error document), and a restore stopped instead
     * of naming the damaged files. */
    assert_int_equal(storage_read_at(s, "data/ab/pack", n + 3000000, out, sizeof(out), &e), -1);
    assert_int_equal(e.code, ERR_DAMAGE);
    err_clear(&e);
    /* Rewritten objects (locks) are read anew, and a removed one is gone. */
    assert_int_equal(storage_put(s, "locks/l", "one", 3, &e), 0);
    assert_int_equal(storage_get(s, "locks/l", 100, &b, &e), 0);
    assert_memory_equal(b.data, "one", 3);
    assert_int_equal(storage_put(s, "locks/l", "second", 6, &e), 0);
    assert_int_equal(storage_get(s, "locks/l", 100, &b, &e), 0);
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.data, "second", 6);
    int64_t mt = 0;
    assert_int_equal(storage_mtime(s, "locks/l", &mt, &e), 0);
    int64_t now = time_now_ns();
    assert_true(mt > now - (int64_t)600 * 1000000000 && mt < now + (int64_t)600 * 1000000000);
    assert_int_equal(storage_remove(s, "locks/l", &e), 0);
    assert_int_equal(storage_exists(s, "locks/l", &e), 0);
    assert_int_equal(storage_remove(s, "locks/l", &e), 0); /* removing twice is fine */
    assert_int_equal(storage_size(s, "locks/l", &size, &e), -1);
    assert_int_equal(e.code, ERR_NOT_FOUND);
    err_clear(&e);
    /* put_new: creates once, then says it exists and leaves the object alone. */
    assert_int_equal(storage_put_new(s, "locks/claim-x", "a", 1, &e), 0);
    assert_int_equal(storage_put_new(s, "locks/claim-x", "b", 1, &e), 1);
    assert_int_equal(storage_get(s, "locks/claim-x", 10, &b, &e), 0);
    assert_memory_equal(b.data, "a", 1);
    /* put_existing: replaces an object that is there, creates none */
    assert_int_equal(storage_put_existing(s, "locks/claim-x", "cc", 2, &e), 0);
    assert_int_equal(storage_get(s, "locks/claim-x", 10, &b, &e), 0);
    assert_int_equal(b.len, 2);
    assert_memory_equal(b.data, "cc", 2);
    assert_int_equal(storage_put_existing(s, "locks/absent", "d", 1, &e), 1);
    assert_int_equal(storage_exists(s, "locks/absent", &e), 0);
    /* An empty object. */
    assert_int_equal(storage_put(s, "keys/empty", "", 0, &e), 0);
    assert_int_equal(storage_get(s, "keys/empty", 10, &b, &e), 0);
    assert_int_equal(b.len, 0);
    buf_free(&b);
    free(data);
    storage_close(s);
}

struct count {
    size_t n;
    size_t bytes;
    bool bad_name;
};

static int count_one(void *ctx, const char *name, uint64_t size, struct err *e)
{
    (void)e;
    struct count *c = ctx;
    c->n++;
    c->bytes += size;
    if (strncmp(name, "data/", 5) != 0 && strncmp(name, "index/", 6) != 0)
        c->bad_name = true;
    return 0;
}

static void test_list_pages(void **state)
{
    (void)state;
    struct storage *s = open_prefix("many/repo");
    struct err e = ERR_INIT;
    /* 1,100 packs in 256 directories: more than one page of 1,000 keys. */
    for (int i = 0; i < 1100; i++) {
        char name[64];
        snprintf(name, sizeof(name), "data/%02x/p%04d", i % 256, i);
        assert_int_equal(storage_put(s, name, name, strlen(name), &e), 0);
    }
    /* Objects the listing of data must not show: deeper, shallower, or a dot file. */
    assert_int_equal(storage_put(s, "data/stray", "x", 1, &e), 0);
    assert_int_equal(storage_put(s, "data/ab/cd/deep", "x", 1, &e), 0);
    assert_int_equal(storage_put(s, "data/ab/.hidden", "x", 1, &e), 0);
    assert_int_equal(storage_put(s, "index/i1", "x", 1, &e), 0);
    assert_int_equal(storage_put(s, "index/sub/i2", "x", 1, &e), 0);
    struct count c = {0};
    assert_int_equal(storage_list(s, "data", count_one, &c, &e), 0);
    assert_int_equal(c.n, 1100);
    assert_int_equal(c.bytes, 1100 * strlen("data/00/p0000"));
    assert_false(c.bad_name);
    memset(&c, 0, sizeof(c));
    assert_int_equal(storage_list(s, "index", count_one, &c, &e), 0);
    assert_int_equal(c.n, 1); /* not index/sub/i2 */
    memset(&c, 0, sizeof(c));
    assert_int_equal(storage_list(s, "snapshots", count_one, &c, &e), 0);
    assert_int_equal(c.n, 0);
    /* Another prefix of the same bucket sees none of it. */
    struct storage *other = open_prefix("many/repo2");
    memset(&c, 0, sizeof(c));
    assert_int_equal(storage_list(other, "data", count_one, &c, &e), 0);
    assert_int_equal(c.n, 0);
    storage_close(other);
    assert_int_equal(storage_list_temp(s, count_one, &c, &e), 0);
    assert_int_equal(c.n, 0);
    storage_close(s);
}

static void test_errors(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    char *loc = xasprintf("s3:%s/no-such-bucket/x", endpoint);
    assert_null(storage_open(loc, false, &e));
    assert_int_equal(e.code, ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, "no bucket no-such-bucket"));
    err_clear(&e);
    free(loc);
    static const char *const bad[] = {"s3:ftp://h/b",        "s3:https://h",
                                      "s3:https:///b",       "s3:https://u:p@h/b",
                                      "s3:https://h/b/../x", "s3:https://h/b?x=1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(storage_open(bad[i], false, &e));
        assert_int_equal(e.code, ERR_USAGE);
        err_clear(&e);
    }
    /* a signed URL's signature and token, and user information, are never shown */
    static const char *const signed_url =
        "s3:https://u:s3cr/et@h/bkt/p?X-Amz-Security-Token=SECRETTOKEN&X-Amz-Signature=abc#f@x";
    assert_null(storage_open(signed_url, false, &e));
    assert_int_equal(e.code, ERR_USAGE);
    assert_null(strstr(e.msg, "SECRETTOKEN"));
    assert_null(strstr(e.msg, "s3cr"));
    err_clear(&e);
    char *shown = storage_location_redact(signed_url);
    assert_string_equal(shown, "s3:https://xxxxx@x"); /* (the last '@', in the fragment) */
    free(shown);
    shown = storage_location_redact("s3:https://h/bkt/p?X-Amz-Signature=abc");
    assert_string_equal(shown, "s3:https://h/bkt/p?xxxxx");
    free(shown);
    /* a secret holding '#' or '?': hidden whole, not cut at it */
    shown = storage_location_redact("s3:https://AKIAX:ab#c?d@host/bkt");
    assert_string_equal(shown, "s3:https://xxxxx@host/bkt");
    free(shown);
    /* a directory is shown as it is */
    shown = storage_location_redact("/mnt/usb#2/repo?");
    assert_string_equal(shown, "/mnt/usb#2/repo?");
    free(shown);
    char *saved = xstrdup(getenv("AWS_SECRET_ACCESS_KEY"));
    unsetenv("AWS_SECRET_ACCESS_KEY");
    loc = xasprintf("s3:%s/bkt", endpoint);
    assert_null(storage_open(loc, false, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    err_clear(&e);
    setenv("AWS_SECRET_ACCESS_KEY", saved, 1);
    free(saved);
    setenv("AWS_ACCESS_KEY_ID", "AKIANOBODY", 1);
    assert_null(storage_open(loc, false, &e));
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "access denied"));
    err_clear(&e);
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    free(loc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objects),
        cmocka_unit_test(test_list_pages),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, server_start, server_stop);
}

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caris/config.h"
#include "caris/core.h"
#include "caris/pool.h"
#include "caris/tempitem.h"
#include "tmpdir.h"

static char *write_tmp(const char *text)
{
    char *path = xstrdup("/tmp/caris-test-env-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_env_file_parsing(void **state)
{
    (void)state;
    char *p = write_tmp("# comment\n\nBACKUP_DIR=/srv/b\nexport CARIS_T1='single # quoted'\n"
                        "CARIS_T2=\"dq \\\"x\\\"\\n\" # trailing comment\n"
                        "CARIS_T3=bare value # comment\nCARIS_T3=later wins\nCARIS_EMPTY=\n"
                        "CARIS_T4=   # only a comment: empty, as in a shell\n"
                        "CARIS_T5=\t# a tab, then a comment\nCARIS_T6=tab\t# comment\r\n"
                        "CARIS_T7=a#b\nCARIS_T8=#not-a-comment\nCARIS_T9= \"quoted\" # c\n"
                        "CARIS_T10=\"pa\\$word \\`x\\` \\\\\"\n");
    struct config c;
    struct err e = ERR_INIT;
    unsetenv("BACKUP_DIR");
    assert_int_equal(config_load(&c, p, &e), 0);
    assert_string_equal(config_get(&c, "BACKUP_DIR"), "/srv/b");
    assert_string_equal(config_backup_dir(&c), "/srv/b");
    assert_string_equal(config_get(&c, "CARIS_T1"), "single # quoted");
    assert_string_equal(config_get(&c, "CARIS_T2"), "dq \"x\"\n");
    assert_string_equal(config_get(&c, "CARIS_T3"), "later wins");
    assert_null(config_get(&c, "CARIS_EMPTY"));
    assert_null(config_get(&c, "CARIS_T4"));
    assert_null(config_get(&c, "CARIS_T5"));
    assert_string_equal(config_get(&c, "CARIS_T6"), "tab");
    assert_string_equal(config_get(&c, "CARIS_T7"), "a#b");
    assert_string_equal(config_get(&c, "CARIS_T8"), "#not-a-comment");
    assert_string_equal(config_get(&c, "CARIS_T9"), "quoted");
    /* \$ and \` as a shell reads them in double quotes (a password with a $ in it) */
    assert_string_equal(config_get(&c, "CARIS_T10"), "pa$word `x` \\");
    assert_null(config_get(&c, "CARIS_NOT_THERE"));
    /* the environment wins over the file */
    setenv("BACKUP_DIR", "/from/env", 1);
    assert_string_equal(config_backup_dir(&c), "/from/env");
    unsetenv("BACKUP_DIR");
    config_free(&c);
    unlink(p);
    free(p);

    /* a UTF-8 byte order mark first (some editors write one) is taken off; "export" with a
     * tab after it as with a blank; several CRs at a line's end */
    p = write_tmp("\xEF\xBB\xBF"
                  "CARIS_B1=bom\nexport\tCARIS_B2=tab\nCARIS_B3=crs\r\r\n");
    assert_int_equal(config_load(&c, p, &e), 0);
    assert_string_equal(config_get(&c, "CARIS_B1"), "bom");
    assert_string_equal(config_get(&c, "CARIS_B2"), "tab");
    assert_string_equal(config_get(&c, "CARIS_B3"), "crs");
    config_free(&c);
    unlink(p);
    free(p);
    /* a byte order mark anywhere else is no mark */
    p = write_tmp("CARIS_B1=x\n\xEF\xBB\xBF"
                  "CARIS_B2=y\n");
    assert_int_equal(config_load(&c, p, &e), -1);
    assert_non_null(strstr(e.msg, "line 2: invalid variable name"));
    unlink(p);
    free(p);
}

/* An env file that sets a secret while group or others may read it is flagged (the CLI
 * warns); not one that sets none, nor a 0600 one, nor a database URL without a password. */
static void test_env_file_exposed(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        unsigned mode;
        const char *exposed;
    } cases[] = {
        {"BACKUP_DIR=/srv/b\nBACKUP_ENCRYPTION_KEY=k\n", 0644, "BACKUP_ENCRYPTION_KEY"},
        {"BACKUP_ENCRYPTION_KEY=k\n", 0600, NULL},
        {"BACKUP_ENCRYPTION_KEY=k\n", 0640, "BACKUP_ENCRYPTION_KEY"},
        {"BACKUP_DIR=/srv/b\n", 0644, NULL},
        {"POSTGRES_URL=postgresql://app@db/caris\n", 0644, NULL},
        {"POSTGRES_URL=postgresql://app:pw@db/caris\n", 0644, "POSTGRES_URL"},
        {"POSTGRES_URL='host=db password=pw'\n", 0604, "POSTGRES_URL"},
        {"POSTGRES_URL='host=db password = pw'\n", 0644, "POSTGRES_URL"},
        {"POSTGRES_URL='host=db password'\n", 0644, NULL},
        {"CRON_SECRET=\nAWS_SECRET_ACCESS_KEY=s\n", 0644, "AWS_SECRET_ACCESS_KEY"},
        {"BACKUP_PG_REPLICATION_URL=postgresql://rep:pw@db/caris\n", 0644,
         "BACKUP_PG_REPLICATION_URL"},
        {"BACKUP_PG_REPLICATION_URL=postgresql://rep@db/caris\n", 0644, NULL},
        {"DATABASE_URL=postgres://app:pw@db/caris\n", 0640, "DATABASE_URL"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *p = write_tmp(cases[i].text);
        assert_int_equal(chmod(p, cases[i].mode), 0);
        struct config c;
        struct err e = ERR_INIT;
        assert_int_equal(config_load(&c, p, &e), 0);
        assert_int_equal(c.env_file_mode, cases[i].mode);
        if (cases[i].exposed)
            assert_string_equal(c.env_file_exposed, cases[i].exposed);
        else
            assert_null(c.env_file_exposed);
        config_free(&c);
        unlink(p);
        free(p);
    }
}

static void test_env_file_errors(void **state)
{
    (void)state;
    /* (the last: a backslash that escapes nothing, which a shell keeps and this reader
     * dropped: a key written so was another key here) */
    const char *bad[] = {"OK=1\nno equals sign\n", "1BAD=x\n", "Q='unterminated\n",
                         "Q=\"x\" junk\n", "OK=\"a\\n\\\\\\\"\"\nK=\"key\\qkey\"\n"};
    const char *line[] = {"line 2", "line 1", "line 1", "line 1", "line 2: a backslash"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *p = write_tmp(bad[i]);
        struct config c;
        struct err e = ERR_INIT;
        assert_int_equal(config_load(&c, p, &e), -1);
        assert_int_equal(e.code, ERR_CONFIG);
        assert_non_null(strstr(e.msg, line[i]));
        assert_non_null(strstr(e.msg, p));
        unlink(p);
        free(p);
    }
    /* a NUL byte: the lines after it were silently ignored */
    {
        char *p = write_tmp("A=1\nB=2\n");
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        assert_int_equal(fwrite("A=1\nB=2\0\nC=3\n", 1, 13, f), 13);
        fclose(f);
        struct config c;
        struct err e = ERR_INIT;
        assert_int_equal(config_load(&c, p, &e), -1);
        assert_int_equal(e.code, ERR_CONFIG);
        assert_non_null(strstr(e.msg, "line 2: a NUL byte"));
        unlink(p);
        free(p);
    }
    /* an explicit file that is missing is an error; the default one is not */
    struct config c;
    struct err e = ERR_INIT;
    assert_int_equal(config_load(&c, "/nonexistent/caris.env", &e), -1);
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir("/"), 0);
    assert_int_equal(config_load(&c, NULL, &e), 0);
    config_free(&c);
    assert_int_equal(chdir(cwd), 0);
}

static void test_encryption_key_rules(void **state)
{
    (void)state;
    struct config c = {0};
    struct err e = ERR_INIT;
    const char *k;
    unsetenv("BACKUP_ENCRYPTION_KEY");
    assert_int_equal(config_encryption_key(&c, &k, &e), -1);
    assert_int_equal(e.code, ERR_CONFIG);
    assert_string_equal(e.msg, "BACKUP_ENCRYPTION_KEY not set");
    setenv("BACKUP_ENCRYPTION_KEY", "Zq7Secret", 1);
    assert_int_equal(config_encryption_key(&c, &k, &e), -1);
    assert_non_null(strstr(e.msg, "too short"));
    assert_null(strstr(e.msg, "Zq7Secret")); /* the key itself is never in the message */
    assert_null(strstr(e.hint, "Zq7Secret"));
    setenv("BACKUP_ENCRYPTION_KEY", "0123456789abcdef0123456789abcdef", 1);
    assert_int_equal(config_encryption_key(&c, &k, &e), 0);
    assert_string_equal(k, "0123456789abcdef0123456789abcdef");
    unsetenv("BACKUP_ENCRYPTION_KEY");
}

/* config_load moves the key variables out of the environment: a child inherits nothing,
 * and the bytes of the old entry are wiped (in the initial environment block those are what
 * /proc/<pid>/environ shows); config_get still has them. */
static void test_key_taken_from_environment(void **state)
{
    (void)state;
    const char *key = "0123456789abcdef0123456789abcdef-from-env";
    const char *newkey = "a new key of at least thirty-two characters";
    setenv("BACKUP_ENCRYPTION_KEY", key, 1);
    setenv("CARIS_NEW_ENCRYPTION_KEY", newkey, 1);
    /* the S3 secret and the cron secret too (they stayed readable in /proc/PID/environ) */
    const char *s3 = "s3-secret-access-key-from-env", *cron = "cron-secret-from-env";
    setenv("AWS_SECRET_ACCESS_KEY", s3, 1);
    setenv("CRON_SECRET", cron, 1);
    char *olds3 = getenv("AWS_SECRET_ACCESS_KEY"), *oldcron = getenv("CRON_SECRET");
    char *old = getenv("BACKUP_ENCRYPTION_KEY"), *oldnew = getenv("CARIS_NEW_ENCRYPTION_KEY");
    size_t n = strlen(key), nn = strlen(newkey);
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir("/"), 0); /* no .env.local there */
    struct config c;
    struct err e = ERR_INIT;
    assert_int_equal(config_load(&c, NULL, &e), 0);
    assert_int_equal(chdir(cwd), 0);
    assert_null(getenv("BACKUP_ENCRYPTION_KEY"));
    assert_null(getenv("CARIS_NEW_ENCRYPTION_KEY"));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(old[i], 0);
    for (size_t i = 0; i < nn; i++)
        assert_int_equal(oldnew[i], 0);
    assert_string_equal(config_get(&c, "BACKUP_ENCRYPTION_KEY"), key);
    assert_string_equal(config_get(&c, "CARIS_NEW_ENCRYPTION_KEY"), newkey);
    assert_null(getenv("AWS_SECRET_ACCESS_KEY"));
    assert_null(getenv("CRON_SECRET"));
    assert_int_equal(olds3[0], 0);
    assert_int_equal(oldcron[0], 0);
    assert_string_equal(config_get(&c, "AWS_SECRET_ACCESS_KEY"), s3);
    assert_string_equal(config_get(&c, "CRON_SECRET"), cron);
    const char *k;
    assert_int_equal(config_encryption_key(&c, &k, &e), 0);
    assert_string_equal(k, key);
    config_free(&c);
}

/* A secret's value quoted in a message is replaced; short values and other text are not. */
static void test_scrub_secrets(void **state)
{
    (void)state;
    const char *key = "0123456789abcdef0123456789abcdef-scrub";
    setenv("BACKUP_ENCRYPTION_KEY", key, 1);
    setenv("PGPASSWORD", "short", 1);
    setenv("POSTGRES_URL", "postgresql://u@h/db", 1); /* no password: not a secret */
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir("/"), 0);
    struct config c;
    struct err e = ERR_INIT;
    assert_int_equal(config_load(&c, NULL, &e), 0);
    assert_int_equal(chdir(cwd), 0);
    char m[200];
    snprintf(m, sizeof(m), "no backup %s; and %s again", key, key);
    assert_true(config_scrub_secrets(&c, m, sizeof(m)));
    assert_string_equal(m, "no backup (redacted); and (redacted) again");
    snprintf(m, sizeof(m), "short postgresql://u@h/db");
    assert_false(config_scrub_secrets(&c, m, sizeof(m)));
    assert_string_equal(m, "short postgresql://u@h/db");
    /* no room for the rest: cut, never the key */
    char small[24];
    snprintf(small, sizeof(small), "id %s", key);
    assert_true(config_scrub_secrets(&c, small, sizeof(small)));
    assert_string_equal(small, "id (redacted)");
    char tiny[8] = "ab";
    assert_false(config_scrub_secrets(&c, tiny, sizeof(tiny)));
    char nine[9] = "01234567"; /* full, and ends in the key's first 8 bytes */
    assert_true(config_scrub_secrets(&c, nine, sizeof(nine)));
    assert_string_equal(nine, "");
    /* a whole key replaced first makes the text shorter than its buffer: the key's first bytes
     * cut at the buffer's end were left (the check ran only on a text that filled it) */
    char cut[64];
    snprintf(cut, sizeof(cut), "a %s then %s", key, key); /* cut in the second key */
    assert_true(config_scrub_secrets(&c, cut, sizeof(cut)));
    assert_null(strstr(cut, "01234567"));
    assert_string_equal(cut, "a (redacted) then (redacted)");
    config_free(&c);

    /* a database URL's password alone (as a token's label, an argument): found, as written
     * and percent-decoded, and after a "%3A" separator; a short one is not */
    setenv("POSTGRES_URL", "postgresql://u:Url-Pass%2Fword-1@h/db", 1);
    setenv("DATABASE_URL", "postgresql://v%3AColon-Pass-22@h/db", 1);
    setenv("CARIS_RESTORE_TARGET_URL", "host=h password='kv Pass 333' user=x", 1);
    assert_int_equal(chdir("/"), 0);
    assert_int_equal(config_load(&c, NULL, &e), 0);
    assert_int_equal(chdir(cwd), 0);
    assert_true(config_holds_secret(&c, "Url-Pass/word-1"));
    assert_true(config_holds_secret(&c, "Url-Pass%2Fword-1"));
    assert_true(config_holds_secret(&c, "Colon-Pass-22"));
    assert_true(config_holds_secret(&c, "kv Pass 333"));
    assert_false(config_holds_secret(&c, "Url-Pass"));
    snprintf(m, sizeof(m), "login Url-Pass/word-1 refused");
    assert_true(config_scrub_secrets(&c, m, sizeof(m)));
    assert_string_equal(m, "login (redacted) refused");
    config_free(&c);
    unsetenv("PGPASSWORD");
    unsetenv("POSTGRES_URL");
    unsetenv("DATABASE_URL");
    unsetenv("CARIS_RESTORE_TARGET_URL");
}

/* Loopback hosts: addresses, not names that look like them. */
static void test_loopback(void **state)
{
    (void)state;
    static const char *const yes[] = {
        "localhost", "LocalHost",  "s3.localhost", "127.0.0.1",          "127.1.2.3:9000",
        "[::1]",     "[::1]:2525", "::1",          "[::ffff:127.0.0.1]", "localhost:25"};
    static const char *const no[] = {
        "127.mail.example.org",  "127.0.0.1.example.org", "10.0.0.1", "[::2]",
        "localhost.example.org", "mylocalhost",           "",         "[::1",
        "128.0.0.1:25"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!net_host_is_loopback(yes[i]))
            fail_msg("%s: not taken for loopback", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (net_host_is_loopback(no[i]))
            fail_msg("%s: taken for loopback", no[i]);
}

static void test_base64(void **state)
{
    (void)state;
    /* RFC 4648 test vectors */
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *enc = b64_encode(in[i], strlen(in[i]));
        assert_string_equal(enc, out[i]);
        uint8_t *dec;
        size_t n;
        assert_int_equal(b64_decode(enc, &dec, &n), 0);
        assert_int_equal(n, strlen(in[i]));
        assert_memory_equal(dec, in[i], n);
        free(dec);
        free(enc);
    }
    uint8_t *dec;
    size_t n;
    assert_int_equal(b64_decode("abc", &dec, &n), -1);
    assert_int_equal(b64_decode("ab!=", &dec, &n), -1);
}

static void test_utf8_and_escape(void **state)
{
    (void)state;
    assert_true(str_is_utf8("plain", 5));
    assert_true(str_is_utf8("C\xc3\x81RIS", 6));
    assert_true(str_is_utf8("\xf0\x9f\x98\x80", 4));
    assert_false(str_is_utf8("\xff\xfe", 2));
    assert_false(str_is_utf8("\xc3", 1));         /* truncated */
    assert_false(str_is_utf8("\xc0\xaf", 2));     /* overlong */
    assert_false(str_is_utf8("\xed\xa0\x80", 3)); /* surrogate */
    assert_false(str_is_utf8("a\0b", 3));         /* NUL */
    char buf[64];
    assert_string_equal(str_escape("a\nb\xff", 4, buf, sizeof(buf)), "a\\x0ab\\xff");
    char small[10];
    str_escape("abcdefghijklmnop", 16, small, sizeof(small));
    assert_true(strlen(small) < sizeof(small));
    assert_non_null(strstr(small, "..."));
}

static void test_time(void **state)
{
    (void)state;
    char buf[40];
    time_format_iso(1705287600123000000LL, buf, sizeof(buf));
    assert_string_equal(buf, "2024-01-15T03:00:00.123Z");
    int64_t ns;
    assert_int_equal(time_parse_iso(buf, &ns), 0);
    assert_true(ns == 1705287600123000000LL);
    assert_int_equal(time_parse_iso("2024-01-15T03:00:00Z", &ns), 0);
    assert_int_equal(time_parse_iso("2024-01-15 03:00:00", &ns), -1);
    assert_int_equal(time_parse_iso("2024-01-15T03:00:00Zx", &ns), -1);
    /* years whose nanoseconds an int64_t cannot hold (found by fuzzing: the product
     * overflowed, which UBSan reports) */
    assert_int_equal(time_parse_iso("2-1-5T0:0:0Z", &ns), -1);
    assert_int_equal(time_parse_iso("9999-12-31T23:59:59Z", &ns), -1);
    assert_int_equal(time_parse_iso("1600-01-01T00:00:00Z", &ns), -1);
    assert_int_equal(time_parse_iso("2262-01-01T00:00:00Z", &ns), 0);
    assert_int_equal(time_parse_iso("1678-01-01T00:00:00Z", &ns), 0);
}

static void test_reader_bounds(void **state)
{
    (void)state;
    uint8_t data[6] = {1, 0, 0, 0, 2, 3};
    struct reader r;
    reader_init(&r, data, sizeof(data));
    uint32_t v;
    uint8_t b;
    uint64_t q;
    assert_int_equal(reader_u32le(&r, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(reader_u64le(&r, &q), -1); /* only 2 bytes left */
    assert_int_equal(reader_u8(&r, &b), -1);    /* and it stays failed */
    assert_true(r.bad);
    reader_init(&r, data, sizeof(data));
    assert_null(reader_skip(&r, SIZE_MAX));
}

static void add_job(void *arg, int worker)
{
    (void)worker;
    __atomic_fetch_add((int *)arg, 1, __ATOMIC_RELAXED);
}

static void test_pool_runs_everything(void **state)
{
    (void)state;
    int count = 0;
    struct pool *p = pool_new(3, 2);
    for (int i = 0; i < 1000; i++)
        pool_submit(p, add_job, &count);
    pool_wait(p);
    assert_int_equal(count, 1000);
    pool_free(p);
}

/* A job that says it started (a byte on started[1]), then waits for a byte on gate[0]. */
struct gate_job {
    int started[2], gate[2];
};

static void gated_job(void *arg, int worker)
{
    (void)worker;
    struct gate_job *g = arg;
    char c = 's';
    assert_int_equal(write(g->started[1], &c, 1), 1);
    assert_int_equal(read(g->gate[0], &c, 1), 1);
}

/* pool_queued counts the jobs submitted and not started: with the one worker held by a job,
 * exactly those submitted after it. */
static void test_pool_queued(void **state)
{
    (void)state;
    assert_int_equal(pool_queued(NULL), 0);
    struct gate_job g;
    assert_int_equal(pipe(g.started), 0);
    assert_int_equal(pipe(g.gate), 0);
    int count = 0;
    struct pool *p = pool_new(1, 4);
    pool_submit(p, gated_job, &g);
    char c;
    assert_int_equal(read(g.started[0], &c, 1), 1); /* the worker holds it now */
    assert_int_equal(pool_queued(p), 0);
    for (int i = 0; i < 3; i++)
        pool_submit(p, add_job, &count);
    assert_int_equal(pool_queued(p), 3);
    assert_int_equal(write(g.gate[1], "g", 1), 1);
    pool_wait(p);
    assert_int_equal(pool_queued(p), 0);
    assert_int_equal(count, 3);
    pool_free(p);
    for (int i = 0; i < 2; i++) {
        close(g.started[i]);
        close(g.gate[i]);
    }
}

static bool keep_kept(const char *path)
{
    return strstr(path, "caris-scratch-") != NULL && fs_exists(path) &&
           strcmp(strrchr(path, '/'), "/caris-scratch-kept") == 0;
}

/* Temp items: a sweep removes only what no live holder has locked, never a symbolic link's
 * target, never a name it was not asked about. */
/* the entries of d, sorted, ","-joined */
static void dir_names(const char *d, char *out, size_t n)
{
    struct dirent **v;
    int k = scandir(d, &v, NULL, alphasort);
    assert_true(k >= 0);
    out[0] = '\0';
    for (int i = 0; i < k; i++) {
        if (strcmp(v[i]->d_name, ".") != 0 && strcmp(v[i]->d_name, "..") != 0)
            snprintf(out + strlen(out), n - strlen(out), "%s%s", out[0] ? "," : "", v[i]->d_name);
        free(v[i]);
    }
    free(v);
}

/* fs_newfile: nothing named while it is written (O_TMPFILE on /tmp), dest only once
 * committed (replacing what was there), nothing left by an abort */
static void test_newfile(void **state)
{
    (void)state;
    char *d = tmpdir_new();
    char *dest = xasprintf("%s/RECOVERYXLOG", d), names[256];
    struct err e = ERR_INIT;
    struct fs_newfile f;
    assert_int_equal(fs_newfile_open(&f, dest, &e), 0);
    assert_int_equal(fs_write_full(f.fd, "one", 3), 0);
    dir_names(d, names, sizeof(names));
    assert_string_equal(names, "");
    assert_int_equal(fs_newfile_commit(&f, &e), 0);
    assert_int_equal(f.fd, -1);
    struct buf b = {0};
    assert_int_equal(fs_read_all(dest, &b, &e), 0);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "one", 3);
    /* a second one replaces it */
    assert_int_equal(fs_newfile_open(&f, dest, &e), 0);
    assert_int_equal(fs_write_full(f.fd, "second", 6), 0);
    assert_int_equal(fs_newfile_commit(&f, &e), 0);
    assert_int_equal(fs_read_all(dest, &b, &e), 0);
    assert_int_equal(b.len, 6);
    dir_names(d, names, sizeof(names));
    assert_string_equal(names, "RECOVERYXLOG");
    /* aborted: dest as it was, nothing else */
    assert_int_equal(fs_newfile_open(&f, dest, &e), 0);
    assert_int_equal(fs_write_full(f.fd, "aborted", 7), 0);
    fs_newfile_abort(&f);
    fs_newfile_abort(&f); /* a reset one: nothing */
    assert_int_equal(fs_read_all(dest, &b, &e), 0);
    assert_int_equal(b.len, 6);
    dir_names(d, names, sizeof(names));
    assert_string_equal(names, "RECOVERYXLOG");
    /* a directory that does not exist: an error naming dest */
    char *nodir = xasprintf("%s/no/such/RECOVERYXLOG", d);
    assert_int_equal(fs_newfile_open(&f, nodir, &e), -1);
    assert_non_null(strstr(e.msg, "RECOVERYXLOG"));
    assert_int_equal(f.fd, -1);
    free(nodir);
    buf_free(&b);
    free(dest);
    tmpdir_free(d);
}

static void test_temp_items(void **state)
{
    (void)state;
    char *d = tmpdir_new();
    struct err e = ERR_INIT;
    struct temp_item a, b, orphan_f, orphan_d;
    assert_int_equal(temp_item_create(&a, d, "caris-restore-", false, &e), 0);
    assert_int_equal(temp_item_create(&b, d, "caris-scratch-", true, &e), 0);
    assert_int_equal(write(a.fd, "dump", 4), 4);
    struct stat st;
    assert_int_equal(stat(a.path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(stat(b.path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_non_null(strstr(a.path, "/caris-restore-"));
    char *inner = xasprintf("%s/sub", b.path);
    assert_int_equal(mkdir(inner, 0700), 0);
    /* orphans: their holder "died" (the descriptor holding the lock closed) */
    assert_int_equal(temp_item_create(&orphan_f, d, "caris-toc-", false, &e), 0);
    assert_int_equal(temp_item_create(&orphan_d, d, "caris-scratch-", true, &e), 0);
    char *odeep = xasprintf("%s/data/base", orphan_d.path);
    assert_int_equal(fs_mkdir_p(odeep, 0700, &e), 0);
    close(orphan_f.fd);
    close(orphan_d.fd);
    /* an orphaned directory whose keep() says it is in use, names no sweep looks at, and a
     * symbolic link with a swept prefix */
    char *kept = xasprintf("%s/caris-scratch-kept", d),
         *fresh = xasprintf("%s/.caris-new-abcdef", d), *other = xasprintf("%s/unrelated", d),
         *link = xasprintf("%s/caris-restore-link", d), *target = xasprintf("%s/target", d);
    assert_int_equal(mkdir(kept, 0700), 0);
    FILE *f;
    assert_non_null(f = fopen(fresh, "w"));
    fclose(f);
    assert_non_null(f = fopen(other, "w"));
    fclose(f);
    assert_non_null(f = fopen(target, "w"));
    fclose(f);
    assert_int_equal(symlink(target, link), 0);
    static const char *const prefixes[] = {"caris-restore-", "caris-toc-", "caris-scratch-", NULL};
    char names[200];
    assert_int_equal(temp_sweep(d, prefixes, keep_kept, names, sizeof(names)), 2);
    assert_non_null(strstr(names, strrchr(orphan_f.path, '/') + 1));
    assert_non_null(strstr(names, strrchr(orphan_d.path, '/') + 1));
    assert_false(fs_exists(orphan_f.path));
    assert_false(fs_exists(orphan_d.path));
    assert_true(fs_exists(a.path) && fs_exists(inner) && fs_exists(kept) && fs_exists(fresh) &&
                fs_exists(other) && fs_exists(target));
    assert_int_equal(lstat(link, &st), 0);
    /* nothing more to sweep; then the holders remove their items */
    assert_int_equal(temp_sweep(d, prefixes, keep_kept, NULL, 0), 0);
    char *apath = xstrdup(a.path), *bpath = xstrdup(b.path);
    temp_item_remove(&a);
    temp_item_remove(&b);
    temp_item_remove(&a); /* again: nothing */
    assert_null(a.path);
    assert_int_equal(a.fd, -1);
    assert_false(fs_exists(apath));
    assert_false(fs_exists(bpath));
    /* a directory that cannot be read has nothing to sweep */
    char *missing = xasprintf("%s/missing", d);
    assert_int_equal(temp_sweep(missing, prefixes, NULL, names, sizeof(names)), 0);
    assert_string_equal(names, "");
    /* a directory that does not exist cannot hold a new item: a clear error */
    assert_int_equal(temp_item_create(&a, missing, "caris-restore-", false, &e), -1);
    assert_non_null(strstr(e.msg, missing));
    free(orphan_f.path);
    free(orphan_d.path);
    free(missing);
    free(apath);
    free(bpath);
    free(inner);
    free(odeep);
    free(kept);
    free(fresh);
    free(other);
    free(link);
    free(target);
    tmpdir_free(d);
}

/* A list cut with "..." stays cut: a shorter item after it is not appended (it read as if
 * the list went on in order: "a, b, ..., c"). */
static void test_str_list_add(void **state)
{
    (void)state;
    char out[24] = "";
    str_list_add(out, sizeof(out), "alpha");
    str_list_add(out, sizeof(out), "beta");
    assert_string_equal(out, "alpha, beta");
    str_list_add(out, sizeof(out), "a-name-too-long-to-fit");
    assert_string_equal(out, "alpha, beta, ...");
    str_list_add(out, sizeof(out), "c");
    assert_string_equal(out, "alpha, beta, ...");
    char tiny[4] = "";
    str_list_add(tiny, sizeof(tiny), "abcdef");
    assert_true(strlen(tiny) < sizeof(tiny));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str_list_add),
        cmocka_unit_test(test_env_file_parsing),
        cmocka_unit_test(test_env_file_exposed),
        cmocka_unit_test(test_env_file_errors),
        cmocka_unit_test(test_encryption_key_rules),
        cmocka_unit_test(test_key_taken_from_environment),
        cmocka_unit_test(test_scrub_secrets),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_utf8_and_escape),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_reader_bounds),
        cmocka_unit_test(test_pool_runs_everything),
        cmocka_unit_test(test_pool_queued),
        cmocka_unit_test(test_temp_items),
        cmocka_unit_test(test_newfile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* pgsrc: connection strings, redaction, versions, child processes. No server needed. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "caris/core.h"
#include "caris/dbbackup.h"
#include "caris/pgsrc.h"
#include "caris/repo.h"

/* Parses url (no fallback password) or fails the test. */
static void parse_ok(const char *url, const char *fallback, struct pgsrc_target *t)
{
    struct err e = ERR_INIT;
    if (pgsrc_target_parse(url, fallback, NULL, t, &e) != 0)
        fail_msg("parse %s: %s", url, e.msg);
}

/* Parses a conninfo string back with libpq: the value of key, or NULL. Caller frees. */
static char *conninfo_value(const char *conninfo, const char *key)
{
    char *msg = NULL;
    PQconninfoOption *o = PQconninfoParse(conninfo, &msg);
    if (!o)
        fail_msg("libpq cannot parse our conninfo %s: %s", conninfo, msg);
    char *v = NULL;
    for (PQconninfoOption *p = o; p->keyword; p++)
        if (strcmp(p->keyword, key) == 0 && p->val)
            v = xstrdup(p->val);
    PQconninfoFree(o);
    return v;
}

static void test_uri_with_password(void **state)
{
    (void)state;
    struct pgsrc_target t;
    parse_ok("postgresql://caris:p%40ss%20w%3Ard%2F%3F@db.example.org:5433/app?sslmode=disable",
             NULL, &t);
    assert_string_equal(t.password, "p@ss w:rd/?");
    assert_string_equal(pgsrc_target_get(&t, "host"), "db.example.org");
    assert_string_equal(pgsrc_target_get(&t, "port"), "5433");
    assert_string_equal(pgsrc_target_get(&t, "dbname"), "app");
    assert_string_equal(pgsrc_target_get(&t, "user"), "caris");
    assert_string_equal(pgsrc_target_get(&t, "sslmode"), "disable");
    assert_null(pgsrc_target_get(&t, "password"));
    assert_string_equal(t.label, "POSTGRES_URL");

    char *ci = pgsrc_target_conninfo(&t, NULL);
    assert_null(strstr(ci, "p@ss"));
    assert_null(strstr(ci, "password"));
    char *v = conninfo_value(ci, "host");
    assert_string_equal(v, "db.example.org");
    free(v);
    v = conninfo_value(ci, "password");
    assert_null(v);
    free(ci);

    /* dbname replaced */
    ci = pgsrc_target_conninfo(&t, "other db");
    v = conninfo_value(ci, "dbname");
    assert_string_equal(v, "other db");
    free(v);
    free(ci);

    char d[512];
    pgsrc_target_describe(&t, d, sizeof(d));
    assert_string_equal(d, "host db.example.org port 5433 database app user caris");
    json_t *j = pgsrc_target_json(&t);
    assert_string_equal(json_string_value(json_object_get(j, "database")), "app");
    assert_null(json_object_get(j, "password"));
    char *dump = json_dumps(j, 0);
    assert_null(strstr(dump, "p@ss"));
    free(dump);
    json_decref(j);
    pgsrc_target_free(&t);
    assert_null(t.password);
}

static void test_key_value(void **state)
{
    (void)state;
    struct pgsrc_target t;
    parse_ok("host=/var/run/postgresql port=5432 dbname='my \\'db\\'' user=app "
             "password='it\\'s \\\\ secret' application_name=x",
             NULL, &t);
    assert_string_equal(t.password, "it's \\ secret");
    assert_string_equal(pgsrc_target_get(&t, "dbname"), "my 'db'");
    assert_string_equal(pgsrc_target_get(&t, "host"), "/var/run/postgresql");
    char *ci = pgsrc_target_conninfo(&t, NULL);
    assert_null(strstr(ci, "secret"));
    /* special characters survive the round trip through our quoting */
    char *v = conninfo_value(ci, "dbname");
    assert_string_equal(v, "my 'db'");
    free(v);
    free(ci);
    pgsrc_target_free(&t);
}

static void test_special_characters_round_trip(void **state)
{
    (void)state;
    const char *names[] = {"a b", "quote'here", "back\\slash", "trail\\", "ünï cødé", "=eq", ""};
    struct pgsrc_target t;
    parse_ok("host=h", NULL, &t);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *ci = pgsrc_target_conninfo(&t, names[i]);
        char *v = conninfo_value(ci, "dbname");
        assert_non_null(v);
        assert_string_equal(v, names[i]);
        free(v);
        free(ci);
    }
    pgsrc_target_set(&t, "application_name", "it's");
    assert_string_equal(pgsrc_target_get(&t, "application_name"), "it's");
    pgsrc_target_set(&t, "application_name", "again");
    assert_string_equal(pgsrc_target_get(&t, "application_name"), "again");
    pgsrc_target_set(&t, "application_name", NULL);
    assert_null(pgsrc_target_get(&t, "application_name"));
    assert_string_equal(pgsrc_target_get(&t, "host"), "h");
    pgsrc_target_free(&t);
}

static void test_ipv6_host(void **state)
{
    (void)state;
    struct pgsrc_target t;
    parse_ok("postgresql://u:pw@[::1]:6543/db", NULL, &t);
    assert_string_equal(pgsrc_target_get(&t, "host"), "::1");
    assert_string_equal(pgsrc_target_get(&t, "port"), "6543");
    assert_string_equal(t.password, "pw");
    char *ci = pgsrc_target_conninfo(&t, NULL);
    char *v = conninfo_value(ci, "host");
    assert_string_equal(v, "::1");
    free(v);
    free(ci);
    char d[256];
    pgsrc_target_describe(&t, d, sizeof(d));
    assert_string_equal(d, "host ::1 port 6543 database db user u");
    pgsrc_target_free(&t);

    parse_ok("postgresql://u@[2001:db8::7]/db", NULL, &t);
    assert_string_equal(pgsrc_target_get(&t, "host"), "2001:db8::7");
    assert_null(t.password);
    pgsrc_target_free(&t);
}

static void test_missing_password_and_fallback(void **state)
{
    (void)state;
    struct pgsrc_target t;
    parse_ok("postgresql://u@h/db", NULL, &t);
    assert_null(t.password);
    pgsrc_target_free(&t);
    parse_ok("postgresql://u@h/db", "from-env", &t);
    assert_string_equal(t.password, "from-env");
    pgsrc_target_free(&t);
    parse_ok("postgresql://u@h/db", "", &t); /* empty PGPASSWORD is none */
    assert_null(t.password);
    pgsrc_target_free(&t);
    parse_ok("postgresql://u:url-pw@h/db", "from-env", &t); /* the URL wins */
    assert_string_equal(t.password, "url-pw");
    pgsrc_target_free(&t);
    parse_ok("host=h user=u", "from-env", &t);
    assert_string_equal(t.password, "from-env");
    pgsrc_target_free(&t);

    assert_int_equal(pgsrc_url_has_password("postgresql://u:pw@h/db"), 1);
    assert_int_equal(pgsrc_url_has_password("postgresql://u@h/db?password=pw"), 1);
    assert_int_equal(pgsrc_url_has_password("host=h password=pw"), 1);
    assert_int_equal(pgsrc_url_has_password("postgresql://u@h/db"), 0);
    assert_int_equal(pgsrc_url_has_password("postgresql://u:@h/db"), 0);
    assert_int_equal(pgsrc_url_has_password("host=h"), 0);
    assert_int_equal(pgsrc_url_has_password("host=h bogus"), -1);

    struct err e = ERR_INIT;
    assert_int_equal(pgsrc_target_parse(NULL, NULL, NULL, &t, &e), -1);
    assert_int_equal(e.code, ERR_CONFIG);
    assert_string_equal(e.msg, "POSTGRES_URL not set");
    assert_int_equal(pgsrc_target_parse("", NULL, "CARIS_RESTORE_TARGET_URL", &t, &e), -1);
    assert_string_equal(e.msg, "CARIS_RESTORE_TARGET_URL not set");
}

static void test_redaction(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"postgresql://u:secret@h:5432/db", "postgresql://u:xxxxx@h:5432/db"},
        {"postgres://u:se:cr@et@h/db", "postgres://u:xxxxx@et@h/db"},
        {"postgresql://u@h/db", "postgresql://u@h/db"},
        {"postgresql://h/db?user=u&password=secret&sslmode=require",
         "postgresql://h/db?user=u&password=xxxxx&sslmode=require"},
        {"postgresql://h/db?pass%77ord=secret", "postgresql://h/db?pass%77ord=xxxxx"},
        {"postgresql://u:secret@[::1]/db", "postgresql://u:xxxxx@[::1]/db"},
        {"host=h password=secret user=u", "host=h password=xxxxx user=u"},
        {"host=h password = 'sec ret\\' more' user=u", "host=h password = xxxxx user=u"},
        {"password=secret", "password=xxxxx"},
        {"host=h passwordx=1", "host=h passwordx=1"},
        /* text libpq cannot read as key=value: what follows the last pair is not copied */
        {"postgresql+psycopg2://u:secret@h/db", "xxxxx"},
        {"host=h u:secret@h", "host=h xxxxx"},
        {" postgresql://u:secret@h/db", " xxxxx"},
        {"host=h password=secret ", "host=h password=xxxxx "},
        /* user:password without '@host': what libpq would take for the port */
        {"postgresql://u:secret", "postgresql://u:xxxxx"},
        {"postgresql://u:secret/db?sslmode=require", "postgresql://u:xxxxx/db?sslmode=require"},
        {"postgresql://h:5432,g:secret/db", "postgresql://h:5432,g:xxxxx/db"},
        {"postgresql://h:5432/db", "postgresql://h:5432/db"},
        {"postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db"},
        {"postgresql://h1:5432,h2:5433/db", "postgresql://h1:5432,h2:5433/db"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *r = pgsrc_url_redact(cases[i].in);
        assert_string_equal(r, cases[i].out);
        assert_null(strstr(r, "secret"));
        free(r);
    }
}

/* A URL that libpq cannot parse: the message never quotes the password. */
static void test_parse_errors_hide_password(void **state)
{
    (void)state;
    const char *bad[] = {
        "postgresql://u:se%zzcret@h/db",
        "postgresql://u:secret@h/db?sslmode",
        "host=h password=secret bogus",
        "host=h password='secret",
        "postgresql://u:secret@h/db?nosuchoption=1",
        /* URIs libpq reads as key=value text: a scheme it does not take, typos, a blank */
        "postgresql+psycopg2://u:secret@h/db",
        "jdbc:postgresql://h/db?user=u&password=secret",
        "pgsql://u:secret@h",
        "postgresql//u:secret@h/db",
        "postgresql:/u:secret@h/db?sslmode=require",
        " postgresql://u:secret@h/db",
        "host=h secret",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pgsrc_target t;
        struct err e = ERR_INIT;
        assert_int_equal(pgsrc_target_parse(bad[i], NULL, NULL, &t, &e), -1);
        assert_int_equal(e.code, ERR_CONFIG);
        assert_non_null(strstr(e.msg, "POSTGRES_URL is invalid"));
        assert_null(strstr(e.msg, "secret"));
        assert_null(strstr(e.msg, "se%zz"));
        assert_null(strstr(e.hint, "secret"));
    }
}

/* A URI whose password holds an unencoded '@' or '/' (libpq would take a piece of it for the
 * host, port or database, which connection errors show), and a client key's passphrase
 * (sslpassword: it would be in pg_dump's argv): refused, naming neither. */
static void test_secrets_that_would_leak(void **state)
{
    (void)state;
    const char *bad[] = {
        "postgresql://caris:pa@secret:w0rd@127.0.0.1:5432/db",
        "postgresql://caris:pa/secret@127.0.0.1:5432/db",
        "postgres://caris:x/secret@h/db?sslmode=disable",
        "postgresql://caris@h/db?sslpassword=secret",
        "host=h dbname=db sslpassword=secret",
        /* user:password without '@host': libpq reads host "caris", port "secret" */
        "postgresql://caris:secret",
        "postgresql://caris:secret/db",
        "postgres://caris:123secret",
        "host=h port=secret",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pgsrc_target t;
        struct err e = ERR_INIT;
        assert_int_equal(pgsrc_target_parse(bad[i], NULL, NULL, &t, &e), -1);
        assert_int_equal(e.code, ERR_CONFIG);
        assert_non_null(strstr(e.msg, "POSTGRES_URL"));
        assert_null(strstr(e.msg, "secret"));
        assert_null(strstr(e.hint, "secret"));
    }
    assert_int_equal(pgsrc_url_has_password("host=h dbname=db sslpassword=secret"), 1);
    assert_int_equal(pgsrc_url_has_password("postgresql://caris:secret"), 1);
    assert_int_equal(pgsrc_url_has_password("postgresql://h:5432,g:5433/db"), 0);
    /* an '@' in the password: the hint says how to encode it, as one writes it (it said %%40:
     * the hint is no format) */
    struct pgsrc_target t;
    struct err he = ERR_INIT;
    assert_int_equal(pgsrc_target_parse("postgresql://app:Se/cret@h:5432/db", NULL, NULL, &t, &he),
                     -1);
    assert_non_null(strstr(he.hint, "@ as %40, / as %2F, : as %3A"));
    /* encoded, and an '@' only in the query: fine */
    parse_ok("postgresql://caris:pa%40ss%2Fw@127.0.0.1:5432/db?application_name=a@b", NULL, &t);
    assert_string_equal(t.password, "pa@ss/w");
    pgsrc_target_free(&t);
}

static void test_same_login(void **state)
{
    (void)state;
    struct pgsrc_target a, b, c;
    parse_ok("postgresql://u:pw@h:5432/db1", NULL, &a);
    parse_ok("host=h port=5432 user=u dbname=db2", NULL, &b);
    parse_ok("postgresql://other@h:5432/db1", NULL, &c);
    assert_true(pgsrc_target_same_login(&a, &b));
    assert_false(pgsrc_target_same_login(&a, &c));
    struct pgsrc_target d;
    pgsrc_target_copy(&a, &d);
    assert_string_equal(d.password, "pw");
    assert_true(pgsrc_target_same_login(&a, &d));
    pgsrc_target_set(&d, "port", "5433");
    assert_false(pgsrc_target_same_login(&a, &d));
    /* libpq connects to hostaddr: the same host text with another hostaddr, or a service
     * (whose file may set the host), is another login */
    struct pgsrc_target x, y;
    parse_ok("postgresql://u@h:5432/x?hostaddr=127.0.0.2", NULL, &x);
    parse_ok("postgresql://u@h:5432/x?service=other", NULL, &y);
    assert_false(pgsrc_target_same_login(&a, &x));
    assert_false(pgsrc_target_same_login(&x, &a));
    assert_false(pgsrc_target_same_login(&a, &y));
    pgsrc_target_free(&x);
    pgsrc_target_free(&y);
    pgsrc_target_free(&a);
    pgsrc_target_free(&b);
    pgsrc_target_free(&c);
    pgsrc_target_free(&d);
}

static void test_versions(void **state)
{
    (void)state;
    int num;
    char text[64];
    assert_int_equal(pgsrc_version_parse("pg_dump (PostgreSQL) 15.8 (Debian 15.8-1.pgdg120+1)",
                                         &num, text, sizeof(text)),
                     0);
    assert_int_equal(num, 150008);
    assert_string_equal(text, "15.8");
    assert_int_equal(pgsrc_version_parse("pg_restore (PostgreSQL) 9.6.24\n", &num, text, 64), 0);
    assert_int_equal(num, 90624);
    assert_string_equal(text, "9.6.24");
    assert_int_equal(pgsrc_version_parse("16beta1", &num, text, sizeof(text)), 0);
    assert_int_equal(num, 160000);
    assert_string_equal(text, "16beta1");
    assert_int_equal(pgsrc_version_parse("17", &num, NULL, 0), 0);
    assert_int_equal(num, 170000);
    assert_int_equal(pgsrc_version_parse("no version here", &num, NULL, 0), -1);

    /* majors order correctly across the 9.x → 10 change */
    assert_int_equal(pgsrc_version_major(150008), 1500);
    assert_int_equal(pgsrc_version_major(90624), 906);
    assert_true(pgsrc_version_major(90624) < pgsrc_version_major(100001));
    assert_true(pgsrc_version_major(140010) < pgsrc_version_major(150000));
    assert_int_equal(pgsrc_version_major(150000), pgsrc_version_major(150099));
    char name[16];
    pgsrc_version_major_name(150008, name, sizeof(name));
    assert_string_equal(name, "15");
    pgsrc_version_major_name(90624, name, sizeof(name));
    assert_string_equal(name, "9.6");
}

static void test_child_environment_not_arguments(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    struct pgsrc_child c;
    char *argv[] = {"/bin/sh", "-c", "echo \"pw=$PGPASSWORD\"; echo \"args=$*\"", "sh", NULL};
    struct pgsrc_spawn o = {.password = "s3cr3t", .pipe_stdout = true};
    assert_int_equal(pgsrc_child_start(&c, "/bin/sh", argv, &o, &e), 0);
    char buf[256] = "";
    size_t n = 0;
    ssize_t k;
    while ((k = read(c.out_fd, buf + n, sizeof(buf) - 1 - n)) > 0)
        n += (size_t)k;
    buf[n] = '\0';
    assert_int_equal(pgsrc_child_wait(&c, &e), 0);
    assert_non_null(strstr(buf, "pw=s3cr3t"));
    assert_string_equal(strstr(buf, "args="), "args=\n");
}

static void test_child_failure_quotes_stderr(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    struct pgsrc_child c;
    char *argv[] = {"/bin/sh", "-c",
                    "echo 'progress line' >&2; echo 'pg_dump: error: it broke' >&2; exit 3", NULL};
    struct pgsrc_spawn o = {0};
    assert_int_equal(pgsrc_child_start(&c, "/bin/sh", argv, &o, &e), 0);
    assert_int_equal(pgsrc_child_wait(&c, &e), -1);
    assert_int_equal(e.code, ERR_DATABASE);
    assert_non_null(strstr(e.msg, "sh failed (exit status 3)"));
    assert_non_null(strstr(e.msg, "pg_dump: error: it broke"));
    assert_null(strstr(e.msg, "progress line"));

    /* lots of stderr: bounded, the head and the tail kept */
    char *argv2[] = {"/bin/sh", "-c",
                     "echo first >&2; i=0; while [ $i -lt 3000 ]; do echo "
                     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx >&2; i=$((i+1)); done; "
                     "echo last >&2; kill -9 $$",
                     NULL};
    assert_int_equal(pgsrc_child_start(&c, "/bin/sh", argv2, &o, &e), 0);
    assert_int_equal(pgsrc_child_wait(&c, &e), -1);
    assert_non_null(strstr(e.msg, "killed by signal 9"));
    char *all = pgsrc_child_stderr(&c);
    assert_true(strlen(all) <= 2 * PGSRC_STDERR_KEEP + 16);
    assert_true(strncmp(all, "first\n", 6) == 0);
    assert_non_null(strstr(all, "last\n"));
    free(all);

    /* a program that does not exist */
    char *argv3[] = {"/nonexistent/prog", NULL};
    assert_int_equal(pgsrc_child_start(&c, "/nonexistent/prog", argv3, &o, &e), 0);
    assert_int_equal(pgsrc_child_wait(&c, &e), -1);
    assert_non_null(strstr(e.msg, "exit status 127"));
}

static void test_child_kill_and_capture(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    struct pgsrc_child c;
    char *argv[] = {"/bin/sleep", "30", NULL};
    struct pgsrc_spawn o = {.pipe_stdin = true, .pipe_stdout = true};
    int64_t t0 = time_mono_ns();
    assert_int_equal(pgsrc_child_start(&c, "/bin/sleep", argv, &o, &e), 0);
    pgsrc_child_kill(&c, SIGTERM);
    assert_true(c.reaped);
    assert_true(WIFSIGNALED(c.status));
    assert_true(time_mono_ns() - t0 < (int64_t)10 * 1000000000);

    char *out;
    char *argv2[] = {"/bin/echo", "pg_dump (PostgreSQL) 15.8", NULL};
    assert_int_equal(pgsrc_run_capture("/bin/echo", argv2, &out, 100, &e), 0);
    assert_string_equal(out, "pg_dump (PostgreSQL) 15.8\n");
    free(out);
    assert_int_equal(pgsrc_run_capture("/bin/echo", argv2, &out, 7, &e), 0);
    assert_string_equal(out, "pg_dump");
    free(out);
}

/* pg_restore --clean and partitioned indexes: attached indexes move before their parents,
 * deepest first; nothing else moves. */
static void test_toc_reorder(void **state)
{
    (void)state;
    static const char toc[] = ";\n; Archive created at ...\n"
                              "6; 2615 1 SCHEMA - audit owner\n"
                              "215; 1259 2 TABLE audit events owner\n"
                              "3384; 0 3 TABLE DATA audit events_2025 owner\n"
                              "3223; 2606 4 CONSTRAINT audit events events_pkey owner\n"
                              "3225; 2606 5 CONSTRAINT audit events_2025 events_2025_pkey owner\n"
                              "3231; 2606 6 CONSTRAINT audit sub sub_pkey owner\n"
                              "3233; 2606 7 CONSTRAINT audit sub_a sub_a_pkey owner\n"
                              "3235; 2606 8 CONSTRAINT audit sub_a1 sub_a1_pkey owner\n"
                              "3240; 2606 9 CONSTRAINT public other other_pkey owner\n"
                              "3221; 1259 10 INDEX audit ev_y owner\n"
                              "3226; 1259 11 INDEX audit events_2025_y_idx owner\n"
                              "3236; 0 0 INDEX ATTACH audit events_2025_pkey owner\n"
                              "3241; 0 0 INDEX ATTACH audit sub_a1_pkey owner\n"
                              "3300; 2606 12 FK CONSTRAINT audit sub sub_fk owner\n";
    struct pgsrc_index_tree t[] = {
        {" CONSTRAINT audit events events_pkey ", 0},
        {" CONSTRAINT audit events_2025 events_2025_pkey ", 1},
        {" CONSTRAINT audit sub sub_pkey ", 0},
        {" CONSTRAINT audit sub_a sub_a_pkey ", 1},
        {" CONSTRAINT audit sub_a1 sub_a1_pkey ", 2},
        {" INDEX audit ev_y ", 0},
        {" INDEX audit events_2025_y_idx ", 1},
    };
    char *copy = xstrdup(toc);
    char *out = pgsrc_toc_reorder(copy, t, sizeof(t) / sizeof(t[0]));
    static const char want[] = ";\n; Archive created at ...\n"
                               "6; 2615 1 SCHEMA - audit owner\n"
                               "215; 1259 2 TABLE audit events owner\n"
                               "3384; 0 3 TABLE DATA audit events_2025 owner\n"
                               "3235; 2606 8 CONSTRAINT audit sub_a1 sub_a1_pkey owner\n"
                               "3225; 2606 5 CONSTRAINT audit events_2025 events_2025_pkey owner\n"
                               "3233; 2606 7 CONSTRAINT audit sub_a sub_a_pkey owner\n"
                               "3226; 1259 11 INDEX audit events_2025_y_idx owner\n"
                               "3223; 2606 4 CONSTRAINT audit events events_pkey owner\n"
                               "3231; 2606 6 CONSTRAINT audit sub sub_pkey owner\n"
                               "3221; 1259 10 INDEX audit ev_y owner\n"
                               "3240; 2606 9 CONSTRAINT public other other_pkey owner\n"
                               "3236; 0 0 INDEX ATTACH audit events_2025_pkey owner\n"
                               "3241; 0 0 INDEX ATTACH audit sub_a1_pkey owner\n"
                               "3300; 2606 12 FK CONSTRAINT audit sub sub_fk owner\n";
    assert_string_equal(out, want);
    free(out);
    free(copy);

    /* no trees: unchanged */
    copy = xstrdup(toc);
    out = pgsrc_toc_reorder(copy, NULL, 0);
    assert_string_equal(out, toc);
    free(out);
    free(copy);
}

static void test_remove_tree(void **state)
{
    (void)state;
    char dir[] = "/tmp/caris-pgsrc-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *sub = xasprintf("%s/a/b", dir);
    struct err e = ERR_INIT;
    assert_int_equal(fs_mkdir_p(sub, 0700, &e), 0);
    char *f = xasprintf("%s/file", sub);
    assert_int_equal(fs_write_atomic(f, "x", 1, 0600, &e), 0);
    assert_int_equal(fs_remove_tree(dir), 0);
    assert_false(fs_exists(dir));
    free(sub);
    free(f);
}

/* list's "lastTestRestore": the latest record per backup. */
static void test_last_test_restores(void **state)
{
    (void)state;
    char dir[] = "/tmp/caris-pgsrc-repo-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *path = xasprintf("%s/repo", dir);
    struct err e = ERR_INIT;
    struct repo_init_opts io = {.kdf_ops = 1, .kdf_mem = 8u << 20};
    struct repo *r = repo_init(path, "0123456789abcdef0123456789abcdef", &io, &e);
    if (!r)
        fail_msg("repo_init: %s", e.msg);
    json_t *none = caris_db_last_test_restores(r, &e);
    assert_non_null(none);
    assert_int_equal(json_object_size(none), 0);
    json_decref(none);
    const char *recs[][3] = {{"caris_full_a", "2026-01-01T00:00:00.000Z", "t"},
                             {"caris_full_a", "2026-01-03T00:00:00.000Z", "f"},
                             {"caris_full_a", "2026-01-02T00:00:00.000Z", "t"},
                             {"caris_full_b", "2026-01-01T00:00:00.000Z", "t"}};
    for (size_t i = 0; i < 4; i++) {
        json_t *rec = json_pack("{s:s, s:s, s:b, s:s, s:i, s:i}", "backupId", recs[i][0], "time",
                                recs[i][1], "ok", recs[i][2][0] == 't', "scratch", "database",
                                "restore_ms", 10, "verify_ms", 1);
        assert_int_equal(repo_record_add(r, "test-restore", rec, &e), 0);
        json_decref(rec);
    }
    json_t *last = caris_db_last_test_restores(r, &e);
    assert_int_equal(json_object_size(last), 2);
    json_t *a = json_object_get(last, "caris_full_a");
    assert_string_equal(json_string_value(json_object_get(a, "time")), "2026-01-03T00:00:00.000Z");
    assert_true(json_is_false(json_object_get(a, "ok")));
    assert_true(json_is_true(json_object_get(json_object_get(last, "caris_full_b"), "ok")));
    json_decref(last);
    repo_close(r);
    fs_remove_tree(dir);
    free(path);
}

/* Children get an allowlisted environment: what locates programs, the locale, libpq's PG*
 * variables; never our secrets, and PGPASSWORD only when given as the password. */
static void test_child_environment(void **state)
{
    (void)state;
    const char *allowed[] = {"PATH=/usr/bin",
                             "HOME=/root",
                             "LANG=C.UTF-8",
                             "LC_ALL=C",
                             "TZ=UTC",
                             "PGHOST=/run/postgresql",
                             "PGSSLMODE=verify-full",
                             "PGPASSFILE=/x/.pgpass",
                             "SSL_CERT_FILE=/etc/ssl/x.pem"};
    const char *refused[] = {"BACKUP_ENCRYPTION_KEY=k",
                             "CARIS_NEW_ENCRYPTION_KEY=k",
                             "AWS_SECRET_ACCESS_KEY=s",
                             "AWS_ACCESS_KEY_ID=a",
                             "BACKUP_S3_SECRET_KEY=s",
                             "CARIS_RESTORE_TARGET_URL=postgresql://x",
                             "POSTGRES_URL=postgresql://u:p@h/d",
                             "PGPASSWORD=p",
                             "CRON_SECRET=c",
                             "BACKUP_SLACK_WEBHOOK_URL=https://x",
                             "PG=x",
                             "LC_=x",
                             "PATH",
                             "LD_PRELOAD=/tmp/x.so"};
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
        if (!pgsrc_env_allowed(allowed[i]))
            fail_msg("%s should be passed on", allowed[i]);
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (pgsrc_env_allowed(refused[i]))
            fail_msg("%s must not be passed on", refused[i]);

    /* And through a real child: env(1) prints what it got. */
    setenv("BACKUP_ENCRYPTION_KEY", "secret-key-of-the-test-000000000000", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-of-the-test", 1);
    setenv("CARIS_RESTORE_TARGET_URL", "postgresql://u:target-pw@h/d", 1);
    setenv("PGPASSWORD", "inherited-pg-password", 1);
    setenv("PGAPPNAME", "caris-test", 1);
    char *argv[] = {"/usr/bin/env", NULL};
    char *out = NULL;
    struct err e = ERR_INIT;
    assert_int_equal(pgsrc_run_capture("/usr/bin/env", argv, &out, 1 << 20, &e), 0);
    assert_null(strstr(out, "secret-key-of-the-test"));
    assert_null(strstr(out, "BACKUP_ENCRYPTION_KEY"));
    assert_null(strstr(out, "aws-secret-of-the-test"));
    assert_null(strstr(out, "target-pw"));
    assert_null(strstr(out, "inherited-pg-password"));
    assert_non_null(strstr(out, "PGAPPNAME=caris-test"));
    assert_non_null(strstr(out, "PATH="));
    free(out);
    /* The password given for the child is the only PGPASSWORD it sees. */
    struct pgsrc_child c;
    struct pgsrc_spawn so = {.password = "given-password", .pipe_stdout = true};
    assert_int_equal(pgsrc_child_start(&c, "/usr/bin/env", argv, &so, &e), 0);
    char buf[65536];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(c.out_fd, buf + len, sizeof(buf) - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    assert_int_equal(pgsrc_child_wait(&c, &e), 0);
    assert_non_null(strstr(buf, "PGPASSWORD=given-password"));
    assert_null(strstr(buf, "inherited-pg-password"));
    assert_null(strstr(buf, "secret-key-of-the-test"));
    unsetenv("BACKUP_ENCRYPTION_KEY");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("CARIS_RESTORE_TARGET_URL");
    unsetenv("PGPASSWORD");
    unsetenv("PGAPPNAME");
}

static void bprintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    buf_append(b, s, (size_t)n);
    free(s);
}

/* A server log as a restore to a target after the archive's end leaves it: replay lines, the
 * startup process's FATAL, then polls refusals of connection attempts, as many as the
 * timing allowed. */
static char *stopped_log(int polls, bool crash)
{
    struct buf b = {0};
    const char *ts = "2026-12-05 15:37:00.094 UTC";
    for (int i = 0; i < 8; i++)
        bprintf(&b,
                "%s [9620] LOG:  restored log file \"00000001000000000000000%d\" from archive\n",
                ts, i);
    bprintf(&b, "%s [9603] LOG:  database system is ready to accept read-only connections\n", ts);
    if (crash)
        bprintf(&b,
                "%s [9700] WARNING:  terminating connection because of crash of another "
                "server process\n%s [9700] DETAIL:  The postmaster has commanded this server "
                "process to roll back the current transaction and exit.\n%s [9700] HINT:  In "
                "a moment you should be able to reconnect to the database.\n",
                ts, ts, ts);
    bprintf(&b, "%s [9620] FATAL:  recovery ended before configured recovery target was reached\n",
            ts);
    bprintf(&b, "%s [9603] LOG:  startup process (PID 9620) exited with exit code 1\n", ts);
    bprintf(&b, "%s [9603] LOG:  terminating any other active server processes\n", ts);
    for (int i = 0; i < polls; i++)
        bprintf(&b, "%s [%d] FATAL:  the database system is in recovery mode\n", ts, 10063 + i);
    bprintf(&b, "%s [9603] LOG:  shutting down due to startup process failure\n", ts);
    bprintf(&b, "%s [9603] LOG:  database system is shut down\n", ts);
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

/* The excerpt of a stopped server's log quotes the cause whatever the number of connection
 * attempts refused meanwhile (CI once saw it pushed out of a plain tail by two of them). */
static void test_log_excerpt(void **state)
{
    (void)state;
    char out[700];
    for (int crash = 0; crash <= 1; crash++)
        for (int polls = 0; polls <= 40; polls += 1 + polls) {
            char *log = stopped_log(polls, crash);
            pgsrc_log_excerpt(log, strlen(log), 600, out, sizeof(out));
            if (!strstr(out, "FATAL:  recovery ended before configured recovery target was "
                             "reached"))
                fail_msg("polls %d crash %d: the cause is not quoted:\n%s", polls, crash, out);
            assert_null(strstr(out, "recovery mode"));
            assert_null(strstr(out, "terminating connection"));
            assert_null(strstr(out, "roll back"));
            assert_null(strstr(out, "restored log file"));
            assert_non_null(strstr(out, "database system is shut down"));
            assert_true(strlen(out) <= 600);
            assert_int_not_equal(out[strlen(out) - 1], '\n');
            free(log);
        }

    /* longer than max: the cause line, [...], and whole last lines */
    char *log = stopped_log(0, false);
    pgsrc_log_excerpt(log, strlen(log), 200, out, sizeof(out));
    assert_true(strncmp(out, "2026-12-05 15:37:00.094 UTC [9620] FATAL:  recovery ended", 57) == 0);
    assert_non_null(strstr(out, "\n[...]\n"));
    assert_non_null(strstr(out, "UTC [9603] LOG:  database system is shut down"));
    assert_null(strstr(out, "\n[...]\n2026-12-05 15:37:00.094 UTC [9603] LOG:  startup process"));
    free(log);

    /* no FATAL or PANIC line: the last whole lines */
    const char *plain = "first line\nsecond line\r\nthird line\n";
    pgsrc_log_excerpt(plain, strlen(plain), 600, out, sizeof(out));
    assert_string_equal(out, "first line\nsecond line\nthird line");
    pgsrc_log_excerpt(plain, strlen(plain), 15, out, sizeof(out));
    assert_string_equal(out, "third line");
    pgsrc_log_excerpt("", 0, 600, out, sizeof(out));
    assert_string_equal(out, "");
    /* a small out buffer is cut, still terminated */
    char small[8];
    pgsrc_log_excerpt(plain, strlen(plain), 600, small, sizeof(small));
    assert_string_equal(small, "first l");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_with_password),
        cmocka_unit_test(test_child_environment),
        cmocka_unit_test(test_key_value),
        cmocka_unit_test(test_special_characters_round_trip),
        cmocka_unit_test(test_ipv6_host),
        cmocka_unit_test(test_missing_password_and_fallback),
        cmocka_unit_test(test_redaction),
        cmocka_unit_test(test_parse_errors_hide_password),
        cmocka_unit_test(test_secrets_that_would_leak),
        cmocka_unit_test(test_same_login),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_child_environment_not_arguments),
        cmocka_unit_test(test_child_failure_quotes_stderr),
        cmocka_unit_test(test_child_kill_and_capture),
        cmocka_unit_test(test_toc_reorder),
        cmocka_unit_test(test_remove_tree),
        cmocka_unit_test(test_last_test_restores),
        cmocka_unit_test(test_log_excerpt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The notify module without a network: configuration, the sending rule, redaction, and the
 * formats (quoted-printable, RFC 2047 headers, the whole email, the Slack JSON). The
 * decoders here are written independently of the encoders, from RFC 2045 and RFC 2047. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "caris/core.h"
#include "caris/notify.h"
#include "notify/internal.h"

static const char *const ALL_VARS[] = {"BACKUP_SMTP_URL",
                                       "BACKUP_SMTP_USER",
                                       "BACKUP_SMTP_PASSWORD",
                                       "BACKUP_SMTP_TLS",
                                       "BACKUP_EMAIL_FROM",
                                       "BACKUP_EMAIL_RECIPIENTS",
                                       "BACKUP_EMAIL_NOTIFICATIONS",
                                       "BACKUP_SLACK_WEBHOOK_URL",
                                       "BACKUP_SLACK_NOTIFICATIONS",
                                       "BACKUP_NOTIFY_SUCCESS",
                                       "BACKUP_ALERT_AFTER",
                                       "CARIS_NOTIFY_TIMEOUT_SECONDS",
                                       "BACKUP_ENCRYPTION_KEY",
                                       "POSTGRES_URL",
                                       "CRON_SECRET",
                                       "PGPASSWORD",
                                       "BACKUP_S3_SESSION_TOKEN",
                                       "BACKUP_PG_REPLICATION_URL",
                                       "DATABASE_URL",
                                       "CARIS_RESTORE_TARGET_URL"};

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(ALL_VARS) / sizeof(ALL_VARS[0]); i++)
        unsetenv(ALL_VARS[i]);
    return 0;
}

static struct config CFG; /* empty: config_get reads the environment */

/* ---- independent decoders ---- */

static int hexdig(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 2045 6.7 decoding: "=\r\n" is a soft break, "=XX" a byte, "\r\n" a line break ('\n'
 * out). Fails the test on anything malformed, on a line longer than 76, and on any byte
 * that must not appear literally. */
static char *qp_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t k = 0, col = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            assert_true(i + 1 < n && s[i + 1] == '\n');
            assert_true(col <= 76);
            /* no white space right before a hard line break */
            if (i > 0)
                assert_true(s[i - 1] != ' ' && s[i - 1] != '\t');
            out[k++] = '\n';
            i++;
            col = 0;
            continue;
        }
        if (s[i] == '=') {
            if (i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
                assert_true(col + 1 <= 76);
                i += 2;
                col = 0;
                continue;
            }
            assert_true(i + 2 < n);
            int a = hexdig(s[i + 1]), b = hexdig(s[i + 2]);
            assert_true(a >= 0 && b >= 0);
            out[k++] = (char)(a * 16 + b);
            i += 2;
            col += 3;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        assert_true((c >= 33 && c <= 126) || c == ' ' || c == '\t');
        if (col == 0)
            assert_true(c != '.');
        out[k++] = (char)c;
        col++;
    }
    assert_true(col <= 76);
    out[k] = '\0';
    return out;
}

/* The value of a header field (unfolded) decoded from RFC 2047 encoded-words; NULL when
 * the header is absent. hdrs ends at the blank line. */
static char *header_decoded(const char *msg, const char *name)
{
    size_t nl = strlen(name);
    const char *end = strstr(msg, "\r\n\r\n");
    assert_non_null(end);
    const char *p = msg;
    while (p < end) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ':')
            break;
        p = strstr(p, "\r\n") + 2;
    }
    if (p >= end)
        return NULL;
    p += nl + 1;
    /* unfold */
    struct buf raw = {0};
    for (;;) {
        const char *eol = strstr(p, "\r\n");
        buf_append(&raw, p, (size_t)(eol - p));
        if (eol[2] == ' ' || eol[2] == '\t') {
            p = eol + 2;
            continue;
        }
        break;
    }
    buf_append_u8(&raw, 0);
    /* decode encoded-words; white space between two of them is dropped */
    struct buf out = {0};
    const char *s = (const char *)raw.data;
    while (*s == ' ')
        s++;
    bool prev_ew = false;
    while (*s) {
        if (strncmp(s, "=?UTF-8?B?", 10) == 0) {
            const char *q = strstr(s + 10, "?=");
            assert_non_null(q);
            assert_true(q + 2 - s <= 75);
            char *b64 = strndup(s + 10, (size_t)(q - s - 10));
            uint8_t *dec;
            size_t dn;
            assert_int_equal(b64_decode(b64, &dec, &dn), 0);
            /* a word never splits a character */
            assert_true(str_is_utf8((const char *)dec, dn));
            buf_append(&out, dec, dn);
            free(dec);
            free(b64);
            s = q + 2;
            prev_ew = true;
            const char *t = s;
            while (*t == ' ')
                t++;
            if (strncmp(t, "=?", 2) == 0)
                s = t;
            continue;
        }
        (void)prev_ew;
        buf_append_u8(&out, (uint8_t)*s++);
    }
    buf_append_u8(&out, 0);
    buf_free(&raw);
    return (char *)out.data;
}

/* ---- quoted-printable ---- */

static char *qp(const char *s)
{
    struct buf b = {0};
    notify_qp_encode(s, strlen(s), &b);
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

static void test_qp_basics(void **state)
{
    (void)state;
    char *e = qp("a=b\n");
    assert_string_equal(e, "a=3Db\r\n");
    free(e);
    e = qp("trailing space \nand tab\t\n");
    assert_string_equal(e, "trailing space=20\r\nand tab=09\r\n");
    free(e);
    e = qp(".\n.dot\n");
    assert_string_equal(e, "=2E\r\n=2Edot\r\n");
    free(e);
    e = qp("CÁRIS\n");
    assert_string_equal(e, "C=C3=81RIS\r\n");
    free(e);
    e = qp("end with space ");
    assert_string_equal(e, "end with space=20");
    free(e);
}

static void test_qp_roundtrip(void **state)
{
    (void)state;
    /* Seeded: the same strings every run. Lines of every length around the 76 limit, with
     * '=', spaces, dots and UTF-8 at every position. */
    static const char *const PIECES[] = {"a", "=", " ", ".", "\t", "é", "€", "\n", "xyz", "\r"};
    srand(12345);
    for (int round = 0; round < 2000; round++) {
        struct buf in = {0};
        int n = rand() % 300;
        for (int i = 0; i < n; i++) {
            const char *p = PIECES[rand() % 10];
            buf_append(&in, p, strlen(p));
        }
        buf_append_u8(&in, 0);
        const char *s = (const char *)in.data;
        char *enc = qp(s);
        char *dec = qp_decode(enc, strlen(enc));
        /* CRLF in the input is a line break too: compare with CRLF folded to LF */
        struct buf want = {0};
        for (size_t i = 0; s[i]; i++)
            if (!(s[i] == '\r' && s[i + 1] == '\n'))
                buf_append_u8(&want, (uint8_t)s[i]);
        buf_append_u8(&want, 0);
        assert_string_equal(dec, (const char *)want.data);
        free(enc);
        free(dec);
        buf_free(&in);
        buf_free(&want);
    }
    /* a long line gets soft breaks */
    char longline[301];
    memset(longline, 'a', 300);
    longline[300] = '\0';
    char *enc = qp(longline);
    assert_non_null(strstr(enc, "=\r\n"));
    char *dec = qp_decode(enc, strlen(enc));
    assert_string_equal(dec, longline);
    free(enc);
    free(dec);
}

/* ---- headers ---- */

static char *one_header(const char *name, const char *value)
{
    struct buf b = {0};
    notify_header_text(&b, name, value);
    buf_append(&b, "\r\n", 2); /* end of the header section, for header_decoded */
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

static void check_lines(const char *msg, size_t max)
{
    for (const char *p = msg; *p;) {
        const char *eol = strstr(p, "\r\n");
        assert_non_null(eol);
        assert_true((size_t)(eol - p) <= max);
        /* no bare CR or LF inside a line */
        for (const char *q = p; q < eol; q++)
            assert_true(*q != '\r' && *q != '\n');
        p = eol + 2;
    }
}

static void test_header_encoding(void **state)
{
    (void)state;
    char *h = one_header("Subject", "plain ascii subject");
    assert_string_equal(h, "Subject: plain ascii subject\r\n\r\n");
    free(h);

    /* UTF-8: encoded-words that decode to the original, lines within 78 */
    const char *v = "CÁRIS Backup: cópia de segurança FALHOU em servidor-çãõ — "
                    "€€€€€€€€€€€€€€€€€€€€ 😀😀😀😀😀😀";
    h = one_header("Subject", v);
    assert_non_null(strstr(h, "=?UTF-8?B?"));
    check_lines(h, 78);
    char *d = header_decoded(h, "Subject");
    assert_string_equal(d, v);
    free(d);
    free(h);

    /* "=?" in ASCII text would be decoded by readers: it is encoded itself */
    h = one_header("Subject", "looks like =?UTF-8?B?QQ==?= a word");
    d = header_decoded(h, "Subject");
    assert_string_equal(d, "looks like =?UTF-8?B?QQ==?= a word");
    free(d);
    free(h);
}

static void test_header_injection(void **state)
{
    (void)state;
    const char *evil[] = {"hi\r\nBcc: victim@example.org", "hi\nBcc: victim@example.org",
                          "hi\rBcc: victim@example.org", "Ünïcode\r\n\r\nbody injected"};
    for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
        struct buf b = {0};
        notify_header_text(&b, "Subject", evil[i]);
        buf_append_u8(&b, 0);
        const char *s = (const char *)b.data;
        /* one header: every CRLF but the last is followed by a space (a continuation) */
        for (const char *p = s; (p = strstr(p, "\r\n")) != NULL; p += 2)
            assert_true(p[2] == '\0' || p[2] == ' ');
        for (const char *p = s; *p; p++)
            if (*p == '\r' || *p == '\n')
                assert_true((p[0] == '\r' && p[1] == '\n') || (p[0] == '\n' && p[-1] == '\r'));
        assert_null(strstr(s, "\nBcc:"));
        buf_free(&b);
    }
}

static void test_addresses(void **state)
{
    (void)state;
    const char *good[] = {"a@example.org", "first.last+tag@sub.example.co.uk",
                          "o'brien@example.org", "x@[192.0.2.1]", "root@localhost"};
    const char *bad[] = {"",
                         "@example.org",
                         "a@",
                         "a@@b",
                         "a b@example.org",
                         "a@exa mple.org",
                         "a@example.org\r\nBcc: x@y",
                         "<a@example.org>",
                         "a..b@example.org",
                         ".a@example.org",
                         "a@.example.org",
                         "a@example..org",
                         "ä@example.org",
                         "a@exämple.org",
                         "a,b@example.org",
                         "a\"@example.org"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(notify_address_valid(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(notify_address_valid(bad[i]));

    char *addr, *display;
    assert_int_equal(notify_mailbox_parse("CÁRIS Backup <backup@example.org>", &addr, &display), 0);
    assert_string_equal(addr, "backup@example.org");
    assert_string_equal(display, "CÁRIS Backup");
    free(addr);
    free(display);
    assert_int_equal(notify_mailbox_parse("\"Ops, Inc.\" <ops@example.org>", &addr, &display), 0);
    assert_string_equal(display, "Ops, Inc.");
    free(addr);
    free(display);
    assert_int_equal(notify_mailbox_parse("plain@example.org", &addr, &display), 0);
    assert_null(display);
    free(addr);
    assert_int_equal(
        notify_mailbox_parse("Name <a@example.org>\r\nBcc: x@example.org", &addr, &display), -1);
    assert_int_equal(notify_mailbox_parse("Name <a@example.org", &addr, &display), -1);
    assert_int_equal(notify_mailbox_parse("Name <a@example.org> trailing", &addr, &display), -1);
}

/* ---- configuration ---- */

static int load(struct notify_config *nc, struct err *e)
{
    err_clear(e);
    return notify_config_load(&CFG, nc, e);
}

static void test_config_channels(void **state)
{
    (void)state;
    struct notify_config nc;
    struct err e = ERR_INIT;
    assert_int_equal(load(&nc, &e), 0);
    assert_false(notify_configured(&nc));
    assert_false(nc.notify_success);
    assert_int_equal(nc.alert_after_ms, 26LL * 3600 * 1000);
    notify_config_free(&nc);

    setenv("BACKUP_SMTP_URL", "smtp://mail.example.org:587", 1);
    setenv("BACKUP_EMAIL_RECIPIENTS", " a@example.org ,b@example.org,, ", 1);
    assert_int_equal(load(&nc, &e), 0);
    assert_true(nc.email);
    assert_false(nc.slack);
    assert_int_equal(nc.nrecipients, 2);
    assert_string_equal(nc.recipients[0], "a@example.org");
    assert_string_equal(nc.recipients[1], "b@example.org");
    assert_string_equal(nc.smtp_target, "smtp://mail.example.org:587");
    assert_non_null(strstr(nc.email_from_addr, "caris-backup@"));
    notify_config_free(&nc);

    /* the seed's switch turns a configured channel off */
    setenv("BACKUP_EMAIL_NOTIFICATIONS", "false", 1);
    assert_int_equal(load(&nc, &e), 0);
    assert_false(nc.email);
    notify_config_free(&nc);
    setenv("BACKUP_EMAIL_NOTIFICATIONS", "maybe", 1);
    assert_int_equal(load(&nc, &e), -1);
    assert_int_equal(e.code, ERR_CONFIG);
    unsetenv("BACKUP_EMAIL_NOTIFICATIONS");

    /* half configured */
    unsetenv("BACKUP_SMTP_URL");
    assert_int_equal(load(&nc, &e), -1);
    assert_int_equal(e.code, ERR_CONFIG);
    assert_non_null(strstr(e.msg, "BACKUP_SMTP_URL"));
    setenv("BACKUP_SMTP_URL", "smtp://mail.example.org:587", 1);

    /* header injection through a recipient or the sender */
    setenv("BACKUP_EMAIL_RECIPIENTS", "a@example.org\r\nBcc: victim@example.org", 1);
    assert_int_equal(load(&nc, &e), -1);
    assert_int_equal(e.code, ERR_CONFIG);
    assert_null(strchr(e.msg, '\n'));
    setenv("BACKUP_EMAIL_RECIPIENTS", "a@example.org", 1);
    setenv("BACKUP_EMAIL_FROM", "Me <me@example.org>\nBcc: victim@example.org", 1);
    assert_int_equal(load(&nc, &e), -1);
    assert_int_equal(e.code, ERR_CONFIG);
    unsetenv("BACKUP_EMAIL_FROM");

    /* credentials in the URL: refused, and not repeated */
    setenv("BACKUP_SMTP_URL", "smtp://joe:hunter2secret@mail.example.org:587", 1);
    assert_int_equal(load(&nc, &e), -1);
    assert_int_equal(e.code, ERR_CONFIG);
    assert_null(strstr(e.msg, "hunter2secret"));
    setenv("BACKUP_SMTP_URL", "http://mail.example.org", 1);
    assert_int_equal(load(&nc, &e), -1);
    setenv("BACKUP_SMTP_URL", "mail.example.org:587", 1);
    assert_int_equal(load(&nc, &e), -1);
    setenv("BACKUP_SMTP_URL", "smtps://mail.example.org", 1);
    setenv("BACKUP_SMTP_TLS", "sometimes", 1);
    assert_int_equal(load(&nc, &e), -1);
    setenv("BACKUP_SMTP_TLS", "require", 1);
    setenv("BACKUP_SMTP_PASSWORD", "pw-without-user", 1);
    assert_int_equal(load(&nc, &e), -1);
    assert_null(strstr(e.msg, "pw-without-user"));
    setenv("BACKUP_SMTP_USER", "joe", 1);
    assert_int_equal(load(&nc, &e), 0);
    assert_true(nc.smtp_require_tls);
    assert_true(nc.smtp_tls_for_password); /* the hint then does not offer "try" */
    assert_string_equal(nc.smtp_password, "pw-without-user");
    notify_config_free(&nc);

    /* BACKUP_SMTP_TLS=try (the default) with a password: TLS required all the same, unless
     * the server is on a loopback address; without a password, as configured */
    unsetenv("BACKUP_SMTP_TLS");
    setenv("BACKUP_SMTP_URL", "smtp://mail.example.org:587", 1);
    assert_int_equal(load(&nc, &e), 0);
    assert_true(nc.smtp_require_tls);
    assert_true(nc.smtp_tls_for_password);
    notify_config_free(&nc);
    setenv("BACKUP_SMTP_URL", "smtp://127.0.0.1:2525", 1);
    assert_int_equal(load(&nc, &e), 0);
    assert_false(nc.smtp_require_tls);
    notify_config_free(&nc);
    setenv("BACKUP_SMTP_URL", "smtp://[::1]:2525", 1);
    assert_int_equal(load(&nc, &e), 0);
    assert_false(nc.smtp_require_tls);
    notify_config_free(&nc);
    unsetenv("BACKUP_SMTP_PASSWORD");
    setenv("BACKUP_SMTP_URL", "smtp://mail.example.org:587", 1);
    assert_int_equal(load(&nc, &e), 0);
    assert_false(nc.smtp_require_tls);
    notify_config_free(&nc);
}

static void test_config_slack(void **state)
{
    (void)state;
    struct notify_config nc;
    struct err e = ERR_INIT;
    const char *hook = "https://hooks.slack.com/services/T0001/B0002/SeCrEtToKeN";
    setenv("BACKUP_SLACK_WEBHOOK_URL", hook, 1);
    assert_int_equal(load(&nc, &e), 0);
    assert_true(nc.slack);
    assert_false(nc.email);
    assert_string_equal(nc.slack_target, "https://hooks.slack.com");
    notify_config_free(&nc);

    /* http: only to loopback (the URL is the credential) */
    setenv("BACKUP_SLACK_WEBHOOK_URL", "http://hooks.example.org/services/SeCrEtToKeN", 1);
    assert_int_equal(load(&nc, &e), -1);
    assert_int_equal(e.code, ERR_CONFIG);
    assert_null(strstr(e.msg, "SeCrEtToKeN"));
    assert_null(strstr(e.hint, "SeCrEtToKeN"));
    setenv("BACKUP_SLACK_WEBHOOK_URL", "http://127.0.0.1:8080/hook", 1);
    assert_int_equal(load(&nc, &e), 0);
    notify_config_free(&nc);
    setenv("BACKUP_SLACK_WEBHOOK_URL", "ftp://example.org/SeCrEtToKeN", 1);
    assert_int_equal(load(&nc, &e), -1);
    assert_null(strstr(e.msg, "SeCrEtToKeN"));
    unsetenv("BACKUP_SLACK_WEBHOOK_URL");
    setenv("BACKUP_SLACK_NOTIFICATIONS", "true", 1);
    assert_int_equal(load(&nc, &e), -1);
    assert_non_null(strstr(e.msg, "BACKUP_SLACK_WEBHOOK_URL"));
}

static void test_config_rules(void **state)
{
    (void)state;
    struct notify_config nc;
    struct err e = ERR_INIT;
    setenv("BACKUP_ALERT_AFTER", "2d", 1);
    assert_int_equal(load(&nc, &e), 0);
    assert_int_equal(nc.alert_after_ms, 48LL * 3600 * 1000);
    notify_config_free(&nc);
    setenv("BACKUP_ALERT_AFTER", "1w1d12h", 1);
    assert_int_equal(load(&nc, &e), 0);
    assert_int_equal(nc.alert_after_ms, (8LL * 24 + 12) * 3600 * 1000);
    notify_config_free(&nc);
    const char *bad[] = {"1m", "1y", "abc", "26", "-1h", "0h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("BACKUP_ALERT_AFTER", bad[i], 1);
        assert_int_equal(load(&nc, &e), -1);
        assert_int_equal(e.code, ERR_CONFIG);
        assert_non_null(strstr(e.msg, "BACKUP_ALERT_AFTER"));
    }
    unsetenv("BACKUP_ALERT_AFTER");
    setenv("BACKUP_NOTIFY_SUCCESS", "sometimes", 1);
    assert_int_equal(load(&nc, &e), -1);
    setenv("BACKUP_NOTIFY_SUCCESS", "true", 1);
    assert_int_equal(load(&nc, &e), 0);
    assert_true(nc.notify_success);

    /* the rule: failures always, successes when BACKUP_NOTIFY_SUCCESS */
    struct notify_event ev = {.kind = NOTIFY_BACKUP_SUCCEEDED};
    assert_true(notify_should_send(&nc, &ev));
    nc.notify_success = false;
    assert_false(notify_should_send(&nc, &ev));
    enum notify_kind always[] = {
        NOTIFY_BACKUP_FAILED, NOTIFY_VERIFY_FAILED,      NOTIFY_DRILL_FAILED,
        NOTIFY_STEP_FAILED,   NOTIFY_STEP_WARNINGS,      NOTIFY_STALE,
        NOTIFY_WAL_FAILING,   NOTIFY_WAL_STREAM_FAILING, NOTIFY_TEST};
    for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++) {
        ev.kind = always[i];
        assert_true(notify_should_send(&nc, &ev));
    }
    /* caris_notify sends nothing (and succeeds) when the rule says no, even with no channel */
    ev.kind = NOTIFY_BACKUP_SUCCEEDED;
    assert_int_equal(caris_notify(&nc, &ev, NULL, &e), 0);

    /* stale: strictly older than BACKUP_ALERT_AFTER; never backed up is stale */
    int64_t now = 1000LL * 86400 * 1000000000;
    int64_t after = nc.alert_after_ms * 1000000;
    assert_false(notify_stale_due(&nc, now - after, now));
    assert_true(notify_stale_due(&nc, now - after - 1, now));
    assert_false(notify_stale_due(&nc, now - 1000000000, now));
    assert_true(notify_stale_due(&nc, 0, now));
    /* a BACKUP_ALERT_AFTER whose nanoseconds overflow (20000w): not stale after an hour */
    int64_t saved = nc.alert_after_ms;
    nc.alert_after_ms = 20000LL * 7 * 86400 * 1000;
    assert_false(notify_stale_due(&nc, now - 3600LL * 1000000000, now));
    assert_true(notify_stale_due(&nc, 0, now));
    nc.alert_after_ms = saved;
    notify_config_free(&nc);
}

/* ---- redaction ---- */

static void test_redact(void **state)
{
    (void)state;
    struct notify_config nc;
    struct err e = ERR_INIT;
    setenv("BACKUP_ENCRYPTION_KEY", "the-repository-key-0123456789abcdef", 1);
    setenv("POSTGRES_URL", "postgresql://app:p%40ss%2Fw0rd@db.example.org:5432/caris", 1);
    setenv("BACKUP_SMTP_URL", "smtp://mail.example.org", 1);
    setenv("BACKUP_EMAIL_RECIPIENTS", "a@example.org", 1);
    setenv("BACKUP_SMTP_USER", "joe", 1);
    setenv("BACKUP_SMTP_PASSWORD", "smtp-Pa55word", 1);
    setenv("BACKUP_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T1/B2/WebHookToken", 1);
    /* the S3 session token (BACKUP_S3_ alias of AWS_SESSION_TOKEN), and the password of the
     * WAL streamer's own connection, percent-decoded too */
    setenv("BACKUP_S3_SESSION_TOKEN", "S3-Session-Token-0123456789", 1);
    setenv("BACKUP_PG_REPLICATION_URL", "postgresql://repl:r%23pl-Secret@db.example.org/caris", 1);
    /* a password with a bare '#' or '?' (libpq ends the user info at the first '@' or '/'
     * only, so it takes such a URL) */
    setenv("DATABASE_URL", "postgresql://app:Hash#And?Mark-9@db.example.org/caris", 1);
    /* key=value: a quoted value with an escaped quote, a bare one with a '&' (libpq takes
     * both; the last password= counts, each is a secret) */
    setenv("CARIS_RESTORE_TARGET_URL",
           "host=db password='Quo\\'ted-Secret-5' password=Amp&Bare-Secret-6 password = "
           "Blank-Secret-7 user=x",
           1); /* the last with blanks around '=', as libpq allows */
    assert_int_equal(load(&nc, &e), 0);
    static const struct {
        const char *in, *secret;
    } CASES[] = {
        {"key the-repository-key-0123456789abcdef twice the-repository-key-0123456789abcdef",
         "the-repository-key"},
        {"cannot connect to postgresql://app:p%40ss%2Fw0rd@db.example.org/caris", "p%40ss"},
        {"password p@ss/w0rd was rejected", "p@ss/w0rd"},
        {"host=db password=hunter22 user=x", "hunter22"},
        {"host=db password='with space' user=x", "with space"},
        {"dsn postgres://u:other-secret@h/db", "other-secret"},
        {"smtp said smtp-Pa55word", "smtp-Pa55word"},
        {"POST https://hooks.slack.com/services/T1/B2/WebHookToken failed", "WebHookToken"},
        {"path /services/T1/B2/WebHookToken only", "WebHookToken"},
        {"someone else's hooks.slack.com/services/TX/BY/Zzzzz", "Zzzzz"},
        {"sloppy postgres://u:p@ss-w0rd@h/db", "ss-w0rd"},
        {"X-Amz-Security-Token: S3-Session-Token-0123456789 refused", "S3-Session-Token"},
        {"replication login r#pl-Secret refused", "r#pl-Secret"},
        {"login Hash#And?Mark-9 refused", "And?Mark"},
        {"dsn postgres://u:pw#with?marks@h/db", "with?marks"},
        {"dsn postgres://u:pw?qm@h", "pw?qm"},
        {"login Quo'ted-Secret-5 refused", "ted-Secret"},
        {"login Amp&Bare-Secret-6 refused", "Bare-Secret"},
        {"host=db password='it\\'s-Secret-77' user=x", "s-Secret-77"},
        {"host=db password=amp&Secret-88 user=x", "Secret-88"},
        {"host=db password = Spaced-Secret-99 user=x", "Spaced-Secret-99"},
        {"host=db PASSWORD\t=  'quoted spaced' user=x", "quoted spaced"},
        {"login Blank-Secret-7 refused", "Blank-Secret-7"},
        /* echoed back by a webhook receiver: the token alone, the path percent-encoded or
         * JSON-escaped; a password JSON-escaped, or percent-encoded with lower case digits */
        {"HTTP 403: {\"ok\":false,\"token\":\"WebHookToken\"}", "WebHookToken"},
        {"HTTP 404: Cannot POST %2Fservices%2FT1%2FB2%2FWebHookToken", "WebHookToken"},
        {"HTTP 404: {\"path\":\"\\/services\\/T1\\/B2\\/WebHookToken\"}", "WebHookToken"},
        {"login p@ss\\/w0rd refused", "ss\\/w0rd"},
        {"login p%40ss%2fw0rd refused", "ss%2fw0rd"},
    };
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        char *r = notify_redact(&nc, CASES[i].in);
        if (strstr(r, CASES[i].secret))
            fail_msg("case %zu: secret left in: %s", i, r);
        assert_non_null(strstr(r, "[redacted]"));
        free(r);
    }
    /* what is not secret stays readable */
    char *r = notify_redact(&nc, "cannot connect to postgresql://app:p%40ss%2Fw0rd@db.example.org");
    assert_non_null(strstr(r, "postgresql://app:"));
    assert_non_null(strstr(r, "@db.example.org"));
    free(r);
    /* the webhook path's short segments and ordinary words stay */
    r = notify_redact(&nc, "the services T1 and B2 are up");
    assert_string_equal(r, "the services T1 and B2 are up");
    free(r);
    r = notify_redact(&nc, "nothing secret here: https://example.org/path");
    assert_string_equal(r, "nothing secret here: https://example.org/path");
    free(r);
    r = notify_redact(NULL, "postgres://u:pw12345@h/db");
    assert_string_equal(r, "postgres://u:[redacted]@h/db");
    free(r);
    r = notify_redact(NULL, "a https://example.org/x@y and mailto-like user@host");
    assert_string_equal(r, "a https://example.org/x@y and mailto-like user@host");
    free(r);
    notify_config_free(&nc);

    /* a webhook path's segments that are words, not tokens, stay readable; the token goes */
    setenv("BACKUP_SLACK_WEBHOOK_URL",
           "https://chat.example.org/notifications/backup-alerts/Tok3nValue1234", 1);
    assert_int_equal(load(&nc, &e), 0);
    r = notify_redact(&nc, "backup-alerts: notifications sent; {\"token\":\"Tok3nValue1234\"}");
    assert_string_equal(r, "backup-alerts: notifications sent; {\"token\":\"[redacted]\"}");
    free(r);
    notify_config_free(&nc);
    setenv("BACKUP_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T1/B2/WebHookToken", 1);

    /* the user/password separator percent-encoded by mistake: libpq takes "app:..." for the
     * user name, which its refusal quotes; the part after the ':' is a secret */
    setenv("POSTGRES_URL", "postgresql://app%3AColon-Secret-12%2F3@db.example.org/caris", 1);
    assert_int_equal(load(&nc, &e), 0);
    r = notify_redact(&nc, "authentication failed for user \"app:Colon-Secret-12/3\"");
    assert_null(strstr(r, "Colon-Secret"));
    assert_non_null(strstr(r, "user \"app:[redacted]"));
    free(r);
    notify_config_free(&nc);

    /* a secret right where a long error is cut, in an event's error: gone whole */
    setenv("BACKUP_SMTP_PASSWORD", "Cut-Here-Secret-42", 1);
    assert_int_equal(load(&nc, &e), 0);
    char longerr[4100];
    memset(longerr, 'x', sizeof(longerr));
    memcpy(longerr + 3990, "Cut-Here-Secret-42", 18);
    longerr[sizeof(longerr) - 1] = '\0';
    struct notify_event ev = {
        .kind = NOTIFY_BACKUP_FAILED, .duration_ms = -1, .error = longerr, .host = "h"};
    struct notify_text t;
    notify_text_build(&nc, &ev, &t);
    assert_null(strstr(t.error, "Cut-Here"));
    assert_true(strlen(t.error) <= 4000);
    notify_text_free(&t);
    /* a text cut inside a secret (a channel's error in its fixed-size buffer): the start of
     * the secret it ends with is redacted; an end that is no secret's start stays */
    char *r2 = notify_redact(&nc, "the server said: Cut-Here-Sec");
    assert_string_equal(r2, "the server said: [redacted]");
    free(r2);
    r2 = notify_redact(&nc, "the server said: Cut");
    assert_string_equal(r2, "the server said: Cut");
    free(r2);
    r2 = notify_redact(&nc, "Cut-Here-Secret-4 and Cut-Here-Secret-42");
    assert_string_equal(r2, "Cut-Here-Secret-4 and [redacted]");
    free(r2);
    notify_config_free(&nc);
}

/* ---- the message ---- */

static void test_email_message(void **state)
{
    (void)state;
    struct notify_config nc;
    struct err e = ERR_INIT;
    setenv("BACKUP_SMTP_URL", "smtp://mail.example.org:587", 1);
    setenv("BACKUP_EMAIL_RECIPIENTS", "ops@example.org, dba@example.org", 1);
    setenv("BACKUP_EMAIL_FROM", "CÁRIS Backup <backup@example.org>", 1);
    setenv("POSTGRES_URL", "postgresql://app:Sup3rS3cret@db/caris", 1);
    assert_int_equal(load(&nc, &e), 0);
    struct notify_event ev = {
        .kind = NOTIFY_BACKUP_FAILED,
        .backup_id = "caris_full_2026-11-30T03-00-00",
        .backup_kind = "database full",
        .has_size = true,
        .size_bytes = 1536,
        .duration_ms = 125000,
        .verification = "not run",
        .error = "cannot connect to postgresql://app:Sup3rS3cret@db/caris\r\nBcc: x@evil.example",
        .hint = "check POSTGRES_URL; the server said: password Sup3rS3cret wrong",
        .host = "db-host-1",
        .time_ns = 1796000000LL * 1000000000,
    };
    struct notify_text t;
    notify_text_build(&nc, &ev, &t);
    struct buf m = {0};
    notify_email_build(&nc, &t, ev.time_ns, &m);
    buf_append_u8(&m, 0);
    const char *msg = (const char *)m.data;
    check_lines(msg, 78);
    assert_null(strstr(msg, "Sup3rS3cret"));
    const char *hdr_end = strstr(msg, "\r\n\r\n");
    /* the header section has exactly the headers we wrote */
    const char *want[] = {
        "Date",       "From",         "To",           "Subject",
        "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char *v = header_decoded(msg, want[i]);
        if (!v)
            fail_msg("header %s missing", want[i]);
        free(v);
    }
    assert_null(header_decoded(msg, "Bcc"));
    char *from = header_decoded(msg, "From");
    assert_string_equal(from, "CÁRIS Backup <backup@example.org>");
    free(from);
    char *to = header_decoded(msg, "To");
    assert_string_equal(to, "ops@example.org, dba@example.org");
    free(to);
    char *subj = header_decoded(msg, "Subject");
    assert_string_equal(subj, "CÁRIS Backup: database full backup FAILED on db-host-1");
    free(subj);
    char *ct = header_decoded(msg, "Content-Type");
    assert_string_equal(ct, "text/plain; charset=UTF-8");
    free(ct);
    char *cte = header_decoded(msg, "Content-Transfer-Encoding");
    assert_string_equal(cte, "quoted-printable");
    free(cte);
    char *mid = header_decoded(msg, "Message-ID");
    assert_true(mid[0] == '<' && strstr(mid, "@example.org>"));
    free(mid);
    char *date = header_decoded(msg, "Date");
    assert_non_null(strstr(date, " 2026 ")); /* 1796000000 is in Nov 2026 */
    free(date);

    char *body = qp_decode(hdr_end + 4, strlen(hdr_end + 4));
    const char *must[] = {"caris_full_2026-11-30T03-00-00",
                          "database full",
                          "1.5 KiB (1536 bytes)",
                          "2 min 5 s",
                          "not run",
                          "Error: cannot connect to postgresql://app:",
                          "HINT: check POSTGRES_URL",
                          "db-host-1"};
    for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++)
        if (!strstr(body, must[i]))
            fail_msg("body lacks '%s':\n%s", must[i], body);
    assert_null(strstr(body, "Sup3rS3cret"));
    assert_true(str_is_utf8(body, strlen(body)));
    free(body);
    buf_free(&m);

    /* the Slack message of the same event */
    char *json = notify_slack_build(&t);
    assert_null(strstr(json, "Sup3rS3cret"));
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    assert_non_null(j);
    assert_true(json_is_string(json_object_get(j, "text")));
    json_t *blocks = json_object_get(j, "blocks");
    assert_true(json_array_size(blocks) >= 3);
    json_t *h0 = json_array_get(blocks, 0);
    assert_string_equal(json_string_value(json_object_get(h0, "type")), "header");
    assert_string_equal(json_string_value(json_object_get(json_object_get(h0, "text"), "text")),
                        "CÁRIS Backup: database full backup FAILED on db-host-1");
    assert_non_null(strstr(json, "caris_full_2026-11-30T03-00-00"));
    json_decref(j);
    free(json);
    notify_text_free(&t);
    notify_config_free(&nc);
}

static void test_slack_escaping(void **state)
{
    (void)state;
    struct notify_event ev = {
        .kind = NOTIFY_VERIFY_FAILED,
        .backup_id = "<!channel> & <https://evil.example|click>",
        .duration_ms = -1,
        .error = "checksum mismatch <!here>",
        .host = "h",
    };
    struct notify_text t;
    notify_text_build(NULL, &ev, &t);
    char *json = notify_slack_build(&t);
    json_t *j = json_loads(json, 0, NULL);
    assert_non_null(j);
    /* mrkdwn text (the fallback, the fields) has no raw '<' or '>' */
    const char *text = json_string_value(json_object_get(j, "text"));
    assert_null(strchr(text, '<'));
    assert_non_null(strstr(text, "&lt;!here&gt;"));
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(j, "blocks"), i, b)
    {
        size_t k;
        json_t *f;
        json_array_foreach(json_object_get(b, "fields"), k, f)
        {
            assert_string_equal(json_string_value(json_object_get(f, "type")), "mrkdwn");
            assert_null(strchr(json_string_value(json_object_get(f, "text")), '<'));
        }
        json_t *tx = json_object_get(b, "text");
        /* the header and sections with free text are plain text: no markup at all */
        if (tx)
            assert_string_equal(json_string_value(json_object_get(tx, "type")), "plain_text");
    }
    json_decref(j);
    free(json);
    notify_text_free(&t);

    /* stale: the age and the threshold are in the text */
    struct notify_event st = {.kind = NOTIFY_STALE,
                              .backup_kind = "database",
                              .duration_ms = -1,
                              .host = "h",
                              .time_ns = 100LL * 3600 * 1000000000,
                              .last_success_ns = 70LL * 3600 * 1000000000};
    notify_text_build(NULL, &st, &t);
    assert_string_equal(t.subject, "CÁRIS Backup: no database backup for 30 h 0 min on h");
    assert_non_null(strstr(t.intro, "BACKUP_ALERT_AFTER (26 h 0 min)"));
    notify_text_free(&t);
}

static void test_results_json(void **state)
{
    (void)state;
    struct notify_result res[2] = {{.channel = "email", .ok = true, .tries = 1, .duration_ms = 5},
                                   {.channel = "slack", .ok = false, .tries = 3}};
    snprintf(res[0].target, sizeof(res[0].target), "smtp://mail.example.org:587");
    snprintf(res[1].target, sizeof(res[1].target), "https://hooks.slack.com");
    err_set(&res[1].err, ERR_FAILURE, "check it", "HTTP 404: no_service");
    json_t *j = notify_results_to_json(res, 2);
    assert_true(json_is_false(json_object_get(j, "ok")));
    json_t *c0 = json_array_get(json_object_get(j, "channels"), 0);
    json_t *c1 = json_array_get(json_object_get(j, "channels"), 1);
    assert_true(json_is_true(json_object_get(c0, "ok")));
    assert_null(json_object_get(c0, "error"));
    assert_string_equal(json_string_value(json_object_get(c0, "target")),
                        "smtp://mail.example.org:587");
    assert_int_equal(json_integer_value(json_object_get(c1, "tries")), 3);
    assert_string_equal(json_string_value(json_object_get(c1, "error")), "HTTP 404: no_service");
    assert_string_equal(json_string_value(json_object_get(c1, "hint")), "check it");
    json_decref(j);
    j = notify_results_to_json(res, 1);
    assert_true(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qp_basics),
        cmocka_unit_test(test_qp_roundtrip),
        cmocka_unit_test(test_header_encoding),
        cmocka_unit_test(test_header_injection),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test_setup(test_config_channels, clear_env),
        cmocka_unit_test_setup(test_config_slack, clear_env),
        cmocka_unit_test_setup(test_config_rules, clear_env),
        cmocka_unit_test_setup(test_redact, clear_env),
        cmocka_unit_test_setup(test_email_message, clear_env),
        cmocka_unit_test_setup(test_slack_escaping, clear_env),
        cmocka_unit_test(test_results_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The API gate's reading of a request line (src/daemon/api_gate.c): what libmicrohttpd takes
 * passes, what it would refuse (its 505 among them) is ours to answer, an unfinished line
 * waits, a line too long is refused. And the key the API counts failed authentications by. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "../../src/daemon/api_gate.h"
#include "../../src/daemon/internal.h"

static enum api_gate_verdict check(const char *s)
{
    return api_gate_check(s, strlen(s));
}

static void test_pass(void **state)
{
    (void)state;
    assert_int_equal(check("GET /healthz HTTP/1.1\r\n"), API_GATE_PASS);
    assert_int_equal(check("GET /healthz HTTP/1.0\n"), API_GATE_PASS);
    assert_int_equal(check("POST /api/admin/backup/create HTTP/1.1\r\nHost: x\r\n"), API_GATE_PASS);
    /* HTTP/1.2 to 1.9: libmicrohttpd answers them as HTTP/1.1 (RFC 9110) */
    assert_int_equal(check("GET / HTTP/1.2\r\n"), API_GATE_PASS);
    assert_int_equal(check("GET / HTTP/1.9\r\n"), API_GATE_PASS);
    /* empty lines before the request line are skipped, as libmicrohttpd does */
    assert_int_equal(check("\r\n\n\r\nGET / HTTP/1.1\r\n"), API_GATE_PASS);
    /* spaces between method and target; a space in the target (the version is after the
     * last space) */
    assert_int_equal(check("GET    / HTTP/1.1\r\n"), API_GATE_PASS);
    assert_int_equal(check("GET /a b HTTP/1.1\r\n"), API_GATE_PASS);
    assert_int_equal(check("BREW /pot HTTP/1.1\r\n"), API_GATE_PASS); /* any method */
}

static void test_bad(void **state)
{
    (void)state;
    const char *bad[] = {
        "GET / HTTP/2.0\r\n",
        "GET / HTTP/3.0\r\n",
        "GET / HTTP/3.1\r\n",
        "GET / HTTP/0.9\r\n",
        "GET / HTTP/9.9\r\n",
        "GET / HTTP/2\r\n",
        "GET / HTTP/1.10\r\n",
        "GET / HTTP/11.1\r\n",
        "GET / HTTP/1.x\r\n",
        "GET / http/1.1\r\n",
        "GET / HTTPS/1.1\r\n",
        "GET / HTTP/1.1 \r\n",
        "GET / HTTP/1.\r\n",
        "GET /\r\n",
        "GET / \r\n",
        "GET\r\n",
        " / HTTP/1.1\r\n",
        "GET / HTTP/1.1\r\r\n",
        "PRI * HTTP/2.0\r\n",
        "\r\nGET / HTTP/2.0\n",
        "\x16\x03\x01\x02\xa5\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (check(bad[i]) != API_GATE_BAD)
            fail_msg("not refused: case %zu", i);
    }
    /* a NUL in the version */
    assert_int_equal(api_gate_check("GET / HTTP/1\0.1\r\n", 17), API_GATE_BAD);
}

static void test_more_and_too_long(void **state)
{
    (void)state;
    assert_int_equal(api_gate_check("", 0), API_GATE_MORE);
    assert_int_equal(check("GET /healthz HTTP/1.1"), API_GATE_MORE);
    assert_int_equal(check("GET /healthz HTTP/1.1\r"), API_GATE_MORE);
    assert_int_equal(check("\r\n\r\n"), API_GATE_MORE);
    static char big[API_GATE_LINE_MAX];
    memset(big, 'a', sizeof(big));
    assert_int_equal(api_gate_check(big, sizeof(big) - 1), API_GATE_MORE);
    assert_int_equal(api_gate_check(big, sizeof(big)), API_GATE_TOO_LONG);
    /* a line that ends within the limit is judged, whatever follows */
    memcpy(big, "GET / HTTP/1.1\r\n", 16);
    assert_int_equal(api_gate_check(big, sizeof(big)), API_GATE_PASS);
}

/* The gate hands a connection over once its headers are whole: the empty line after them. */
static void test_head_complete(void **state)
{
    (void)state;
    const char *whole[] = {"GET / HTTP/1.1\r\n\r\n",
                           "GET / HTTP/1.0\n\n",
                           "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                           "GET / HTTP/1.1\nHost: x\nA: b\n\n",
                           "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nbody",
                           "POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"};
    for (size_t i = 0; i < sizeof(whole) / sizeof(whole[0]); i++)
        if (!api_gate_head_complete(whole[i], strlen(whole[i])))
            fail_msg("not whole: %s", whole[i]);
    const char *part[] = {"",
                          "\r\n\r\n",
                          "GET / HTTP/1.1",
                          "GET / HTTP/1.1\r\n",
                          "GET / HTTP/1.1\r\nHost: x\r\n",
                          "GET / HTTP/1.1\r\nHost: x\r\n\r",
                          "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bea"};
    for (size_t i = 0; i < sizeof(part) / sizeof(part[0]); i++)
        if (api_gate_head_complete(part[i], strlen(part[i])))
            fail_msg("whole: %s", part[i]);
}

/* Framing headers libmicrohttpd mishandles are the gate's to refuse. */
static void test_head_refusal(void **state)
{
    (void)state;
    int status;
    const char *fine[] = {"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                          "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
                          "POST / HTTP/1.1\r\ncontent-length:2\r\nContent-Length: 2\r\n\r\n",
                          "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n",
                          "GET / HTTP/1.1\r\nContent-Length-X: -1\r\n\r\n",
                          "GET / HTTP/1.1\r\nX-Empty:\r\nX-Colons: a:b: c\r\n\r\n",
                          /* leading zeros do not make a length long */
                          "POST / HTTP/1.1\r\nContent-Length: 00000000000000000000002\r\n\r\n"};
    for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++)
        if (api_gate_head_refusal(fine[i], strlen(fine[i]), &status))
            fail_msg("refused: %s", fine[i]);
    const char *bad[] = {"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                         "POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\n",
                         "POST / HTTP/1.1\r\nContent-Length: 2 \r\n\r\n",
                         "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
                         "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
                         "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                         "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: "
                         "2\r\n\r\n",
                         /* malformed lines: libmicrohttpd's HTML page, or a header dropped */
                         "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
                         "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
                         "GET / HTTP/1.1\r\nAuthorization: Bearer\r\n abc\r\n\r\n",
                         "GET / HTTP/1.1\r\n\tfolded: first\r\n\r\n",
                         "POST / HTTP/1.1\r\nContent-Length : -1\r\n\r\n",
                         "POST / HTTP/1.1\r\nTransfer-Encoding\t: gzip\r\n\r\n",
                         "GET / HTTP/1.1\r\nAuth orization: Bearer abc\r\n\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (!api_gate_head_refusal(bad[i], strlen(bad[i]), &status))
            fail_msg("passed: %s", bad[i]);
    /* a NUL in a header: libmicrohttpd would read the value up to it */
    static const char nul[] = "GET / HTTP/1.1\r\nAuthorization: Bearer abc\0junk\r\n\r\n";
    const char *why = api_gate_head_refusal(nul, sizeof(nul) - 1, &status);
    assert_non_null(why);
    assert_non_null(strstr(why, "NUL"));
    static const char after[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n\0body";
    assert_null(
        api_gate_head_refusal(after, sizeof(after) - 1, &status)); /* past the headers: body */
    /* a length of 19 digits and more is too large (413), not malformed (400) */
    const char *huge[] = {"POST / HTTP/1.1\r\nContent-Length: 1000000000000000000\r\n\r\n",
                          "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"};
    for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
        why = api_gate_head_refusal(huge[i], strlen(huge[i]), &status);
        assert_non_null(why);
        assert_int_equal(status, 413);
        assert_non_null(strstr(why, "too large"));
    }
    why = api_gate_head_refusal(bad[0], strlen(bad[0]), &status);
    assert_non_null(why);
    assert_int_equal(status, 400);
}

/* Headers libmicrohttpd's memory may not hold are the gate's 431 (JSON), not its own (HTML). */
static void test_head_too_large(void **state)
{
    (void)state;
    struct buf b = {0};
    const char *start = "POST /api/admin/backup/verify HTTP/1.1\r\nHost: x\r\n";
    buf_append(&b, start, strlen(start));
    for (int i = 1; i < API_GATE_HEADERS_MAX; i++)
        buf_append(&b, "X: a\r\n", 6);
    buf_append(&b, "\r\n{}", 4);
    assert_false(api_gate_head_too_large((const char *)b.data, b.len)); /* 100 lines */
    b.len -= 4;
    buf_append(&b, "X: a\r\n\r\n{}", 10);
    assert_true(api_gate_head_too_large((const char *)b.data, b.len)); /* 101 */
    b.len = 0;
    buf_append(&b, start, strlen(start));
    char big[API_GATE_HEAD_OK];
    memset(big, 'a', sizeof(big));
    buf_append(&b, "X: ", 3);
    buf_append(&b, big, API_GATE_HEAD_OK - b.len - 4);
    buf_append(&b, "\r\n\r\n", 4);
    assert_int_equal(b.len, API_GATE_HEAD_OK);
    assert_false(api_gate_head_too_large((const char *)b.data, b.len));
    buf_append(&b, big, 1000); /* a body after the headers does not count */
    assert_false(api_gate_head_too_large((const char *)b.data, b.len));
    b.len = API_GATE_HEAD_OK - 4;
    buf_append(&b, "a\r\n\r\n", 5);
    assert_true(api_gate_head_too_large((const char *)b.data, b.len));
    /* query arguments and cookies are records too: 500 empty arguments in a 4 KiB line, or
     * 800 cookies in one header, closed the connection or got libmicrohttpd's HTML 431 */
    b.len = 0;
    buf_append(&b, "GET /healthz?", strlen("GET /healthz?"));
    for (int i = 1; i < API_GATE_HEADERS_MAX; i++)
        buf_append(&b, "&", 1);
    buf_append(&b, " HTTP/1.1\r\n\r\n", strlen(" HTTP/1.1\r\n\r\n"));
    assert_false(api_gate_head_too_large((const char *)b.data, b.len)); /* 100 arguments */
    b.len = strlen("GET /healthz?");
    for (int i = 1; i < 500; i++)
        buf_append(&b, "&", 1);
    buf_append(&b, " HTTP/1.1\r\n\r\n", strlen(" HTTP/1.1\r\n\r\n"));
    assert_true(api_gate_head_too_large((const char *)b.data, b.len));
    b.len = 0;
    buf_append(&b, "GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: ",
               strlen("GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: "));
    for (int i = 0; i < API_GATE_HEADERS_MAX; i++)
        buf_append(&b, "a=b; ", 5);
    buf_append(&b, "\r\n\r\n", strlen("\r\n\r\n"));
    assert_true(api_gate_head_too_large((const char *)b.data, b.len)); /* 2 lines, 100 ';' */
    b.len = 0; /* libmicrohttpd splits cookies at ',' too */
    buf_append(&b,
               "GET /healthz HTTP/1.1\r\nCookie: ", strlen("GET /healthz HTTP/1.1\r\nCookie: "));
    for (int i = 0; i < API_GATE_HEADERS_MAX; i++)
        buf_append(&b, "a=1,", 4);
    buf_append(&b, "\r\n\r\n", strlen("\r\n\r\n"));
    assert_true(api_gate_head_too_large((const char *)b.data, b.len));
    b.len = 0;
    const char *two = "GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: a=b; c=d\r\n\r\n";
    buf_append(&b, two, strlen(two));
    assert_false(api_gate_head_too_large((const char *)b.data, b.len));
    buf_free(&b);
}

/* Failed authentications are counted per address, per /64 for IPv6. */
static void test_fail_key(void **state)
{
    (void)state;
    char k[API_FAIL_KEY_MAX];
    api_fail_key("127.0.0.3", k);
    assert_string_equal(k, "127.0.0.3");
    api_fail_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", k);
    assert_string_equal(k, "2001:db8:1:2::/64");
    char k2[API_FAIL_KEY_MAX];
    api_fail_key("2001:db8:1:2::1", k2);
    assert_string_equal(k, k2);
    api_fail_key("2001:db8:1:3::1", k2);
    assert_string_not_equal(k, k2);
    api_fail_key("::1", k);
    assert_string_equal(k, "::/64");
    api_fail_key("::ffff:10.0.0.1", k); /* an IPv4 client of an IPv6 socket: its address */
    assert_string_equal(k, "::ffff:10.0.0.1");
    api_fail_key("?", k);
    assert_string_equal(k, "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pass),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_more_and_too_long),
        cmocka_unit_test(test_fail_key),
        cmocka_unit_test(test_head_complete),
        cmocka_unit_test(test_head_refusal),
        cmocka_unit_test(test_head_too_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

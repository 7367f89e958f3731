/* SigV4 against AWS's published examples: the S3 documentation's four examples
 * ("Signature Calculations for the Authorization Header: Transferring Payload in a Single
 * Chunk") and cases of the SigV4 test suite (get-vanilla, get-vanilla-query-order-key-case,
 * get-utf8). A wrong byte anywhere in the chain changes the signature. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "caris/crypto.h"
#include "caris/sigv4.h"

#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define S3_HOST "examplebucket.s3.amazonaws.com"
#define S3_DATE "20130524T000000Z"

static const struct sigv4_key S3_KEY = {
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1", "s3"};
static const struct sigv4_key SUITE_KEY = {
    "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "service"};

static char *signature_of(const struct sigv4_key *k, const char *date,
                          const struct sigv4_request *rq)
{
    char *auth = sigv4_authorization(k, date, rq);
    const char *sig = strstr(auth, "Signature=");
    assert_non_null(sig);
    char *out = strdup(sig + 10);
    free(auth);
    return out;
}

static char *encoded_path(const char *raw)
{
    struct buf b = {0};
    sigv4_uri_encode(&b, raw, true);
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

static void test_s3_get_object(void **state)
{
    (void)state;
    struct sigv4_header h[] = {{"Host", S3_HOST},
                               {"Range", "bytes=0-9"},
                               {"x-amz-content-sha256", EMPTY_SHA},
                               {"x-amz-date", S3_DATE}};
    struct sigv4_request rq = {"GET", "/test.txt", NULL, 0, h, 4, EMPTY_SHA};
    char *sh;
    char *creq = sigv4_canonical_request(&rq, &sh);
    assert_string_equal(creq, "GET\n/test.txt\n\nhost:" S3_HOST "\nrange:bytes=0-9\n"
                              "x-amz-content-sha256:" EMPTY_SHA "\nx-amz-date:" S3_DATE "\n\n"
                              "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA);
    assert_string_equal(sh, "host;range;x-amz-content-sha256;x-amz-date");
    char *sts = sigv4_string_to_sign(&S3_KEY, S3_DATE, creq);
    assert_string_equal(sts, "AWS4-HMAC-SHA256\n" S3_DATE "\n20130524/us-east-1/s3/aws4_request\n"
                             "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
    char *auth = sigv4_authorization(&S3_KEY, S3_DATE, &rq);
    assert_string_equal(
        auth, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
              "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
              "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    free(auth);
    free(sts);
    free(creq);
    free(sh);
}

static void test_s3_put_object(void **state)
{
    (void)state;
    const char *body = "Welcome to Amazon S3.";
    uint8_t d[32];
    char hex[65];
    cx_sha256(body, strlen(body), d);
    cx_hex(d, 32, hex);
    assert_string_equal(hex, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    char *uri = encoded_path("/test$file.text");
    assert_string_equal(uri, "/test%24file.text");
    struct sigv4_header h[] = {{"Host", S3_HOST},
                               {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                               {"x-amz-date", S3_DATE},
                               {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
                               {"x-amz-content-sha256", hex}};
    struct sigv4_request rq = {"PUT", uri, NULL, 0, h, 5, hex};
    char *sig = signature_of(&S3_KEY, S3_DATE, &rq);
    assert_string_equal(sig, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    free(sig);
    free(uri);
}

static void test_s3_get_lifecycle(void **state)
{
    (void)state;
    struct sigv4_header h[] = {
        {"Host", S3_HOST}, {"x-amz-date", S3_DATE}, {"x-amz-content-sha256", EMPTY_SHA}};
    struct sigv4_param q[] = {{"lifecycle", ""}};
    struct sigv4_request rq = {"GET", "/", q, 1, h, 3, EMPTY_SHA};
    char *sig = signature_of(&S3_KEY, S3_DATE, &rq);
    assert_string_equal(sig, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    free(sig);
}

static void test_s3_list_objects(void **state)
{
    (void)state;
    struct sigv4_header h[] = {
        {"Host", S3_HOST}, {"x-amz-date", S3_DATE}, {"x-amz-content-sha256", EMPTY_SHA}};
    struct sigv4_param q[] = {{"prefix", "J"}, {"max-keys", "2"}}; /* out of order on purpose */
    struct sigv4_request rq = {"GET", "/", q, 2, h, 3, EMPTY_SHA};
    char *sig = signature_of(&S3_KEY, S3_DATE, &rq);
    assert_string_equal(sig, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
    free(sig);
}

#define SUITE_DATE "20150830T123600Z"

static void test_suite_get_vanilla(void **state)
{
    (void)state;
    struct sigv4_header h[] = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", SUITE_DATE}};
    struct sigv4_request rq = {"GET", "/", NULL, 0, h, 2, EMPTY_SHA};
    char *auth = sigv4_authorization(&SUITE_KEY, SUITE_DATE, &rq);
    assert_string_equal(
        auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
              "aws4_request, SignedHeaders=host;x-amz-date, "
              "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    free(auth);
}

static void test_suite_query_order(void **state)
{
    (void)state;
    struct sigv4_header h[] = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", SUITE_DATE}};
    struct sigv4_param q[] = {{"Param2", "value2"}, {"Param1", "value1"}};
    struct sigv4_request rq = {"GET", "/", q, 2, h, 2, EMPTY_SHA};
    char *sig = signature_of(&SUITE_KEY, SUITE_DATE, &rq);
    assert_string_equal(sig, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
    free(sig);
}

static void test_suite_utf8(void **state)
{
    (void)state;
    char *uri = encoded_path("/\xe1\x88\xb4");
    assert_string_equal(uri, "/%E1%88%B4");
    struct sigv4_header h[] = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", SUITE_DATE}};
    struct sigv4_request rq = {"GET", uri, NULL, 0, h, 2, EMPTY_SHA};
    char *sig = signature_of(&SUITE_KEY, SUITE_DATE, &rq);
    assert_string_equal(sig, "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85");
    free(sig);
    free(uri);
}

/* The shapes the S3 driver sends: ListObjectsV2 with a continuation token (which holds
 * '/', '+' and '='), a header value with runs of spaces, a session token. */
static void test_canonical_list_v2(void **state)
{
    (void)state;
    struct sigv4_header h[] = {{"host", "127.0.0.1:9000"},
                               {"x-amz-date", S3_DATE},
                               {"x-amz-security-token", "  tok  en  "},
                               {"x-amz-content-sha256", EMPTY_SHA}};
    struct sigv4_param q[] = {
        {"prefix", "repo/data/"}, {"list-type", "2"}, {"continuation-token", "a/b+c=="}};
    struct sigv4_request rq = {"GET", "/bucket", q, 3, h, 4, EMPTY_SHA};
    char *creq = sigv4_canonical_request(&rq, NULL);
    assert_string_equal(creq,
                        "GET\n/bucket\n"
                        "continuation-token=a%2Fb%2Bc%3D%3D&list-type=2&prefix=repo%2Fdata%2F\n"
                        "host:127.0.0.1:9000\nx-amz-content-sha256:" EMPTY_SHA "\n"
                        "x-amz-date:" S3_DATE "\nx-amz-security-token:tok en\n\n"
                        "host;x-amz-content-sha256;x-amz-date;x-amz-security-token\n" EMPTY_SHA);
    free(creq);
    char *uri = encoded_path("/bucket/pre fix/data/ab/x~y_z.-");
    assert_string_equal(uri, "/bucket/pre%20fix/data/ab/x~y_z.-");
    free(uri);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_s3_get_object),     cmocka_unit_test(test_s3_put_object),
        cmocka_unit_test(test_s3_get_lifecycle),  cmocka_unit_test(test_s3_list_objects),
        cmocka_unit_test(test_suite_get_vanilla), cmocka_unit_test(test_suite_query_order),
        cmocka_unit_test(test_suite_utf8),        cmocka_unit_test(test_canonical_list_v2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* AWS Signature Version 4 (header-based), as S3 wants it: the canonical request, the string
 * to sign, the signing key and the Authorization header. Pure functions of their inputs, no
 * clock and no I/O, so that every request shape is tested against published examples. */
#ifndef CARIS_SIGV4_H
#define CARIS_SIGV4_H

#include <stdbool.h>
#include <stddef.h>

#include "caris/core.h"

/* A query parameter, not encoded ("list-type", "2"). value "" for a bare name ("lifecycle"). */
struct sigv4_param {
    const char *name;
    const char *value;
};

/* A header to sign: any case; the value is trimmed and inner runs of spaces collapsed. */
struct sigv4_header {
    const char *name;
    const char *value;
};

struct sigv4_request {
    const char *method;
    const char *uri; /* the path, already encoded (sigv4_uri_encode with keep_slash) */
    const struct sigv4_param *query;
    size_t nquery;
    const struct sigv4_header *headers; /* host, x-amz-date, x-amz-content-sha256, ... */
    size_t nheaders;
    const char *payload_hash; /* lower-case hex SHA-256 of the body */
};

struct sigv4_key {
    const char *access_key;
    const char *secret_key;
    const char *region;
    const char *service; /* "s3" */
};

/* Appends s percent-encoded the way S3 wants it: every byte but A-Z a-z 0-9 - . _ ~ as %XX
 * (upper-case hex); '/' kept when keep_slash (object key paths), encoded otherwise. */
void sigv4_uri_encode(struct buf *out, const char *s, bool keep_slash);

/* The canonical query string: names and values encoded, sorted by name then value. */
char *sigv4_canonical_query(const struct sigv4_param *q, size_t n);

/* The canonical request (malloc'd text). signed_headers (may be NULL) receives the
 * ';'-separated list of lower-case header names (malloc'd). */
char *sigv4_canonical_request(const struct sigv4_request *rq, char **signed_headers);

/* The string to sign for amz_date ("20130524T000000Z"). */
char *sigv4_string_to_sign(const struct sigv4_key *k, const char *amz_date,
                           const char *canonical_request);

/* The value of the Authorization header (malloc'd). */
char *sigv4_authorization(const struct sigv4_key *k, const char *amz_date,
                          const struct sigv4_request *rq);

#endif

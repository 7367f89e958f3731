/* Inside the notify module: the text of a notification, the email and Slack formats, and
 * one delivery attempt per channel. Exposed for the unit tests (tests/unit/test_notify.c). */
#ifndef CARIS_NOTIFY_INTERNAL_H
#define CARIS_NOTIFY_INTERNAL_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/core.h"
#include "caris/notify.h"

/* A copy of s with secrets replaced by "[redacted]": every configured secret value (nc may
 * be NULL), the password of any scheme://user:password@ URL, the value of password=...
 * (libpq key=value strings), and the path of Slack webhook URLs. malloc'd. */
char *notify_redact(const struct notify_config *nc, const char *s);

/* A notification's text, built once from an event and used by every channel. Every string
 * is redacted, valid UTF-8 and free of control characters (except '\n' in error and hint). */
#define NOTIFY_MAX_FIELDS 10
struct notify_text {
    enum notify_kind kind;
    bool failure;  /* something failed (the email says so in its subject, Slack in red) */
    char *subject; /* one line */
    char *intro;   /* one or two sentences */
    struct {
        const char *label;
        char *value;
    } fields[NOTIFY_MAX_FIELDS];
    size_t nfields;
    char *error; /* NULL when none */
    char *hint;  /* NULL when none */
    char *host;
};
void notify_text_build(const struct notify_config *nc, const struct notify_event *ev,
                       struct notify_text *t);
void notify_text_free(struct notify_text *t);

/* ---- email (email.c) ---- */

/* Quoted-printable (RFC 2045 6.7) of s: lines end in CRLF ('\n' in s is a line break),
 * encoded lines are at most 76 characters, trailing white space and a leading '.' are
 * encoded. Appends to out. */
void notify_qp_encode(const char *s, size_t len, struct buf *out);
/* Appends "Name: value\r\n" for a header whose value is free text: plain when it is short
 * printable ASCII with no "=?", else as RFC 2047 encoded-words (UTF-8, base64) of at most
 * 75 characters, never splitting a character, folded onto continuation lines. Control
 * characters in value become spaces: a value can never start a new header. */
void notify_header_text(struct buf *out, const char *name, const char *value);
/* An address: local@domain in printable ASCII, local part of atext and dots, domain of
 * letters, digits, '-' and '.' (or an [IP literal]). */
bool notify_address_valid(const char *s);
/* Parses "addr" or "Display Name <addr>" into the address (malloc'd); -1 when invalid. */
int notify_mailbox_parse(const char *s, char **addr, char **display);
/* The whole message (headers and quoted-printable body, CRLF line ends). now_ns gives the
 * Date header (local time with its offset). */
void notify_email_build(const struct notify_config *nc, const struct notify_text *t, int64_t now_ns,
                        struct buf *out);

/* ---- Slack (slack.c) ---- */

/* The JSON body for an incoming webhook: "text" (the fallback, escaped for Slack's mrkdwn)
 * and "blocks" (header, fields, error and hint as plain text). malloc'd. */
char *notify_slack_build(const struct notify_text *t);

/* ---- one attempt of a delivery (email.c, slack.c) ---- */

struct notify_attempt {
    int64_t connect_timeout_ms;
    int64_t timeout_ms; /* whole transfer */
    const struct caris_op *op;
    bool permanent; /* out: retrying cannot help (login denied, 4xx reply, bad address) */
};
int notify_email_send(const struct notify_config *nc, const struct buf *msg,
                      struct notify_attempt *a, struct err *e);
int notify_slack_post(const struct notify_config *nc, const char *json, struct notify_attempt *a,
                      struct err *e);

/* curl_global_init, once per process (notify.c). */
void notify_curl_init(void);
/* Performs the transfer h was set up for, with what every channel shares: a's timeouts, no
 * signals, the op's cancel flag stopping it, curl's message in errbuf (CURL_ERROR_SIZE);
 * *code gets the response code. Cleans h up (notify.c). */
CURLcode notify_curl_perform(CURL *h, const struct notify_attempt *a, char *errbuf, long *code);

#endif

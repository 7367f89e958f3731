/* Email notifications: an RFC 5322 message (UTF-8, quoted-printable) sent over SMTP with
 * libcurl (STARTTLS when the server offers it, or required with BACKUP_SMTP_TLS=require;
 * smtps:// for TLS from the start). */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "caris/core.h"
#include "caris/crypto.h"

#include "notify/internal.h"

/* ---- addresses ----------------------------------------------------------------------- */

static bool is_atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

bool notify_address_valid(const char *s)
{
    const char *at = strrchr(s, '@');
    if (!at || at == s || !at[1] || strlen(s) > 254)
        return false;
    /* local part: dot-atom (no leading, trailing or double dots) */
    for (const char *p = s; p < at; p++) {
        if (*p == '.') {
            if (p == s || p + 1 == at || p[1] == '.')
                return false;
        } else if (!is_atext((unsigned char)*p)) {
            return false;
        }
    }
    const char *d = at + 1;
    if (*d == '[') {
        size_t n = strlen(d);
        if (d[n - 1] != ']' || n < 3)
            return false;
        for (size_t i = 1; i + 1 < n; i++)
            if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f') ||
                  (d[i] >= 'A' && d[i] <= 'F') || d[i] == '.' || d[i] == ':'))
                return false;
        return true;
    }
    for (const char *p = d; *p; p++) {
        unsigned char c = (unsigned char)*p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.';
        if (!ok || (c == '.' && (p == d || !p[1] || p[1] == '.')))
            return false;
    }
    return true;
}

int notify_mailbox_parse(const char *s, char **addr, char **display)
{
    *addr = *display = NULL;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < ' ' || *p == 0x7f)
            return -1; /* CR, LF, TAB, ...: never into a header */
    const char *lt = strchr(s, '<');
    if (!lt) {
        if (!notify_address_valid(s))
            return -1;
        *addr = xstrdup(s);
        return 0;
    }
    const char *gt = strchr(lt, '>');
    if (!gt || gt[1] || strchr(lt + 1, '<'))
        return -1;
    char *a = xstrndup(lt + 1, (size_t)(gt - lt - 1));
    if (!notify_address_valid(a)) {
        free(a);
        return -1;
    }
    const char *b = s, *e = lt;
    while (b < e && *b == ' ')
        b++;
    while (e > b && e[-1] == ' ')
        e--;
    if (e > b && *b == '"' && e[-1] == '"' && e - b >= 2)
        b++, e--;
    if (!str_is_utf8(b, (size_t)(e - b))) {
        free(a);
        return -1;
    }
    *addr = a;
    if (e > b)
        *display = xstrndup(b, (size_t)(e - b));
    return 0;
}

/* ---- encodings ----------------------------------------------------------------------- */

void notify_qp_encode(const char *s, size_t len, struct buf *out)
{
    static const char HEX[] = "0123456789ABCDEF";
    size_t col = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            buf_append(out, "\r\n", 2);
            col = 0;
            continue;
        }
        if (c == '\r' && i + 1 < len && s[i + 1] == '\n')
            continue;
        bool at_eol = i + 1 == len || s[i + 1] == '\n' ||
                      (s[i + 1] == '\r' && i + 2 < len && s[i + 2] == '\n');
        bool literal = (c >= 33 && c <= 126 && c != '=' && !(c == '.' && col == 0)) ||
                       ((c == ' ' || c == '\t') && !at_eol);
        size_t w = literal ? 1 : 3;
        /* Soft break so that no encoded line exceeds 76 characters (the '=' counts). */
        if (col + w > 75 && !(at_eol && col + w <= 76)) {
            buf_append(out, "=\r\n", 3);
            col = 0;
            if (c == '.')
                literal = false, w = 3;
        }
        if (literal) {
            buf_append_u8(out, c);
        } else {
            char enc[3] = {'=', HEX[c >> 4], HEX[c & 15]};
            buf_append(out, enc, 3);
        }
        col += w;
    }
}

/* Length of the UTF-8 character starting at s (1 for a stray byte). */
static size_t utf8_len(const unsigned char *s, size_t left)
{
    size_t n = 1;
    if (*s >= 0xf0)
        n = 4;
    else if (*s >= 0xe0)
        n = 3;
    else if (*s >= 0xc0)
        n = 2;
    return n <= left ? n : left;
}

/* Encoded-words of at most 39 bytes of text each (52 base64 characters, 64 with the
 * "=?UTF-8?B?" and "?=" around them), so that "Subject: " and the first fits in 78. */
#define EW_MAX_BYTES 39

/* Appends value as header text (no CRLF): plain when allowed, else encoded-words. used:
 * the characters already on the line. force: encode even printable ASCII (a display name
 * with specials such as ',' or '"', which would otherwise change the address list). */
static void header_value(struct buf *out, size_t used, const char *value, bool force)
{
    /* Control characters become spaces: CR and LF in particular can never end the header. */
    char *v = xstrdup(value);
    for (char *p = v; *p; p++)
        if ((unsigned char)*p < ' ' || *p == 0x7f)
            *p = ' ';
    size_t n = strlen(v);
    bool plain = !force && n + used <= 78 && !strstr(v, "=?");
    for (size_t i = 0; plain && i < n; i++)
        if ((unsigned char)v[i] >= 0x80)
            plain = false;
    if (plain) {
        buf_append(out, v, n);
        free(v);
        return;
    }
    const unsigned char *u = (const unsigned char *)v;
    for (size_t i = 0; i < n;) {
        size_t take = 0;
        while (i + take < n) {
            size_t cl = utf8_len(u + i + take, n - i - take);
            if (take + cl > EW_MAX_BYTES)
                break;
            take += cl;
        }
        char *b64 = b64_encode(u + i, take);
        if (i)
            buf_append(out, "\r\n ", 3);
        buf_append(out, "=?UTF-8?B?", 10);
        buf_append(out, b64, strlen(b64));
        buf_append(out, "?=", 2);
        free(b64);
        i += take;
    }
    free(v);
}

void notify_header_text(struct buf *out, const char *name, const char *value)
{
    buf_append(out, name, strlen(name));
    buf_append(out, ": ", 2);
    header_value(out, strlen(name) + 2, value, false);
    buf_append(out, "\r\n", 2);
}

static void header_plain(struct buf *out, const char *name, const char *value)
{
    buf_append(out, name, strlen(name));
    buf_append(out, ": ", 2);
    buf_append(out, value, strlen(value));
    buf_append(out, "\r\n", 2);
}

/* "Mon, 30 Nov 2026 14:19:36 +0100": names from tables, whatever the locale. */
static void rfc5322_date(int64_t ns, char *out, size_t n)
{
    static const char *const DAYS[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const MONTHS[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;
    localtime_r(&t, &tm);
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    snprintf(out, n, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld", DAYS[tm.tm_wday % 7],
             tm.tm_mday, MONTHS[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec, sign, off / 60, off % 60);
}

void notify_email_build(const struct notify_config *nc, const struct notify_text *t, int64_t now_ns,
                        struct buf *out)
{
    char date[64];
    rfc5322_date(now_ns, date, sizeof(date));
    header_plain(out, "Date", date);

    /* From: the display name as free text (encoded-words when needed), then <addr>. */
    char *addr = NULL, *display = NULL;
    if (nc->email_from && notify_mailbox_parse(nc->email_from, &addr, &display) == 0 && display) {
        bool force = strpbrk(display, "()<>[]:;@\\,.\"") != NULL;
        buf_append(out, "From: ", 6);
        header_value(out, 6, display, force);
        buf_append(out, " <", 2);
        buf_append(out, addr, strlen(addr));
        buf_append(out, ">\r\n", 3);
    } else {
        header_plain(out, "From", nc->email_from_addr ? nc->email_from_addr : "caris-backup");
    }
    free(addr);
    free(display);

    /* To: one address per line after the first (validated addresses: no CR/LF possible). */
    buf_append(out, "To: ", 4);
    for (size_t i = 0; i < nc->nrecipients; i++) {
        if (i)
            buf_append(out, ",\r\n ", 4);
        buf_append(out, nc->recipients[i], strlen(nc->recipients[i]));
    }
    buf_append(out, "\r\n", 2);

    notify_header_text(out, "Subject", t->subject);

    uint8_t rnd[16];
    char hex[33];
    cx_random(rnd, sizeof(rnd));
    cx_hex(rnd, sizeof(rnd), hex);
    const char *domain = nc->email_from_addr ? strrchr(nc->email_from_addr, '@') : NULL;
    char *mid = xasprintf("<%lld.%s@%s>", (long long)(now_ns / 1000000000), hex,
                          domain ? domain + 1 : "caris-backup.invalid");
    header_plain(out, "Message-ID", mid);
    free(mid);
    header_plain(out, "MIME-Version", "1.0");
    header_plain(out, "Content-Type", "text/plain; charset=UTF-8");
    header_plain(out, "Content-Transfer-Encoding", "quoted-printable");
    header_plain(out, "Auto-Submitted", "auto-generated"); /* RFC 3834: no auto-replies */
    header_plain(out, "X-Caris-Event", notify_kind_name(t->kind));
    buf_append(out, "\r\n", 2);

    /* The body, as UTF-8 text with '\n' line ends, then quoted-printable. */
    struct buf body = {0};
    buf_append(&body, t->intro, strlen(t->intro));
    buf_append(&body, "\n\n", 2);
    for (size_t i = 0; i < t->nfields; i++) {
        /* labels are ASCII: the padding counts bytes = characters */
        char *colon = xasprintf("%s:", t->fields[i].label);
        char *line = xasprintf("%-14s%s\n", colon, t->fields[i].value);
        free(colon);
        buf_append(&body, line, strlen(line));
        free(line);
    }
    if (t->error) {
        buf_append(&body, "\nError: ", 8);
        buf_append(&body, t->error, strlen(t->error));
        buf_append(&body, "\n", 1);
    }
    if (t->hint) {
        buf_append(&body, "HINT: ", 6);
        buf_append(&body, t->hint, strlen(t->hint));
        buf_append(&body, "\n", 1);
    }
    static const char SIG[] = "\n-- \ncaris-backup on ";
    buf_append(&body, SIG, sizeof(SIG) - 1);
    buf_append(&body, t->host, strlen(t->host));
    buf_append(&body, "\n", 1);
    notify_qp_encode((const char *)body.data, body.len, out);
    buf_free(&body);
}

/* ---- SMTP ---------------------------------------------------------------------------- */

struct reader_ctx {
    const struct buf *msg;
    size_t pos;
};

static size_t read_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct reader_ctx *r = userdata;
    size_t room = size * nmemb;
    size_t left = r->msg->len - r->pos;
    size_t n = left < room ? left : room;
    memcpy(ptr, r->msg->data + r->pos, n);
    r->pos += n;
    return n;
}

/* The recipients the server refused, from the SMTP dialogue: a RCPT TO line sent, then its
 * reply. libcurl goes on with the others (MAIL_RCPT_ALLOWFAILS) but names none of them. */
struct rcpt_watch {
    char addr[256]; /* the last RCPT TO sent */
    bool waiting;   /* for its reply */
    bool permanent; /* a refusal was a 5xx (a 4xx may pass) */
    char refused[512];
    unsigned accepted; /* recipients the server took */
};

static int debug_cb(CURL *h, curl_infotype type, char *data, size_t size, void *userdata)
{
    (void)h;
    struct rcpt_watch *w = userdata;
    if (type == CURLINFO_HEADER_OUT) {
        w->waiting = size > 9 && strncasecmp(data, "RCPT TO:<", 9) == 0;
        if (w->waiting) {
            const char *gt = memchr(data + 9, '>', size - 9);
            size_t n = gt ? (size_t)(gt - data - 9) : 0;
            snprintf(w->addr, sizeof(w->addr), "%.*s", (int)(n < 200 ? n : 200), data + 9);
        }
    } else if (type == CURLINFO_HEADER_IN && w->waiting) {
        w->waiting = false;
        if (size >= 3 && data[0] == '2')
            w->accepted++;
        if (size >= 3 && (data[0] == '4' || data[0] == '5')) {
            w->permanent |= data[0] == '5';
            size_t n = size;
            while (n && (data[n - 1] == '\n' || data[n - 1] == '\r'))
                n--;
            char reply[120];
            str_escape(data, n < 100 ? n : 100, reply, sizeof(reply));
            size_t used = strlen(w->refused);
            snprintf(w->refused + used, sizeof(w->refused) - used, "%s%s (%s)", used ? ", " : "",
                     w->addr, reply);
        }
    }
    return 0;
}

int notify_email_send(const struct notify_config *nc, const struct buf *msg,
                      struct notify_attempt *a, struct err *e)
{
    CURL *h = curl_easy_init();
    if (!h)
        return err_set(e, ERR_FAILURE, NULL, "cannot start libcurl");
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *rcpt = NULL;
    for (size_t i = 0; i < nc->nrecipients; i++) {
        char *r = xasprintf("<%s>", nc->recipients[i]);
        rcpt = curl_slist_append(rcpt, r);
        free(r);
    }
    char *from = xasprintf("<%s>", nc->email_from_addr);
    struct reader_ctx rd = {msg, 0};
    curl_easy_setopt(h, CURLOPT_URL, nc->smtp_url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(h, CURLOPT_USE_SSL,
                     nc->smtp_require_tls ? (long)CURLUSESSL_ALL : (long)CURLUSESSL_TRY);
    /* The server's certificate and name are verified (libcurl's default, said here so
     * that it stays so); only the CA may be other than the system's. */
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (nc->smtp_ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, nc->smtp_ca_file);
    if (nc->smtp_user)
        curl_easy_setopt(h, CURLOPT_USERNAME, nc->smtp_user);
    if (nc->smtp_password)
        curl_easy_setopt(h, CURLOPT_PASSWORD, nc->smtp_password);
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(h, CURLOPT_READDATA, &rd);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)msg->len);
    /* One address the server refuses (someone who left) must not keep the alert from the
     * others: they get it, and the refused ones are named in the error. */
    struct rcpt_watch watch = {.refused = ""};
#if LIBCURL_VERSION_NUM >= 0x080200
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT_ALLOWFAILS, 1L);
#else
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT_ALLLOWFAILS, 1L);
#endif
    curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, debug_cb);
    curl_easy_setopt(h, CURLOPT_DEBUGDATA, &watch);
    curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
    long code;
    CURLcode rc = notify_curl_perform(h, a, errbuf, &code);
    curl_slist_free_all(rcpt);
    free(from);
    if (rc == CURLE_OK && *watch.refused) {
        /* sent to the others: not tried again (they would get it twice) */
        a->permanent = true;
        return err_set(e, ERR_FAILURE, "remove or correct the address in BACKUP_EMAIL_RECIPIENTS",
                       "the server refused recipient %s; the other recipients got the message",
                       watch.refused);
    }
    if (rc == CURLE_OK)
        return 0;
    if (*watch.refused && !watch.accepted) {
        a->permanent = watch.permanent;
        return err_set(e, ERR_FAILURE, "check BACKUP_EMAIL_RECIPIENTS",
                       "the server refused every recipient: %s", watch.refused);
    }
    /* a recipient refused, the others taken, then the message failed (the server answered 4xx
     * to it, or went away): an error like any other, tried again as such (it was called
     * "refused every recipient", and a 5xx for the refused one made it final: no retry, no
     * one got the alert) */
    const char *why = *errbuf ? errbuf : curl_easy_strerror(rc);
    char reply[32] = "";
    if (code)
        snprintf(reply, sizeof(reply), " (server reply %ld)", code);
    const char *hint = "check that the SMTP server in BACKUP_SMTP_URL runs and is reachable";
    switch (rc) {
    case CURLE_LOGIN_DENIED:
        a->permanent = true;
        hint = "check BACKUP_SMTP_USER and BACKUP_SMTP_PASSWORD";
        break;
    case CURLE_USE_SSL_FAILED:
        a->permanent = true;
        hint = nc->smtp_tls_for_password
                   ? "the server does not offer STARTTLS, and BACKUP_SMTP_PASSWORD is never "
                     "sent in clear to another machine: use smtps:// if it speaks TLS on "
                     "another port, or a server that offers STARTTLS"
                   : "the server does not offer STARTTLS: use smtps:// if it speaks TLS on "
                     "another port, or BACKUP_SMTP_TLS=try to send without TLS";
        break;
    case CURLE_ABORTED_BY_CALLBACK:
        a->permanent = true;
        why = "cancelled";
        hint = NULL;
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
        a->permanent = true;
        hint = "the server's TLS certificate could not be verified: if it is signed by your "
               "own CA, set BACKUP_SMTP_CA_FILE to that CA's certificate (PEM)";
        break;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        a->permanent = true;
        hint = "BACKUP_SMTP_URL is e.g. smtp://mail.example.org:587";
        break;
    default:
        /* A permanent reply (5xx: no such recipient, sender refused, ...) will not change. */
        if (code == 530 || code == 534 || code == 535 || code == 538) {
            /* RFC 4954: authentication required (530), too weak a mechanism (534), the
             * credentials refused (535), encryption required for it (538) */
            a->permanent = true;
            hint = nc->smtp_user ? "the server refused the login: check BACKUP_SMTP_USER and "
                                   "BACKUP_SMTP_PASSWORD (and BACKUP_SMTP_TLS)"
                                 : "the server requires a login: set BACKUP_SMTP_USER and "
                                   "BACKUP_SMTP_PASSWORD";
        } else if (code >= 500 && code < 600) {
            a->permanent = true;
            hint = "the server refused the message: check BACKUP_EMAIL_FROM and "
                   "BACKUP_EMAIL_RECIPIENTS";
        }
        break;
    }
    return err_set(e, ERR_FAILURE, hint, "%s%s", why, reply);
}

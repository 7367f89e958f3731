/* Slack notifications: a JSON message with blocks, POSTed to an incoming webhook. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"

#include "notify/internal.h"

/* Slack's mrkdwn treats &, < and > as markup (<!channel> pings everyone, <url|text> is a
 * link): escaped as its documentation says, so that no text of ours turns into either. */
static char *mrkdwn_escape(const char *s)
{
    struct buf b = {0};
    for (; *s; s++) {
        if (*s == '&')
            buf_append(&b, "&amp;", 5);
        else if (*s == '<')
            buf_append(&b, "&lt;", 4);
        else if (*s == '>')
            buf_append(&b, "&gt;", 4);
        else
            buf_append_u8(&b, (uint8_t)*s);
    }
    buf_append_u8(&b, 0);
    return (char *)b.data;
}

/* A copy of s cut to at most max bytes on a character boundary, with "…" when cut. */
static char *cut(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return xstrdup(s);
    size_t k = max - 3;
    while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
        k--;
    return xasprintf("%.*s…", (int)k, s);
}

static json_t *text_obj(const char *type, const char *text, size_t max)
{
    char *c = cut(text, max);
    json_t *o = json_pack("{s:s, s:s}", "type", type, "text", c);
    free(c);
    return o;
}

char *notify_slack_build(const struct notify_text *t)
{
    json_t *blocks = json_array();
    /* header: plain text, at most 150 characters */
    json_t *hdr =
        json_pack("{s:s, s:o}", "type", "header", "text", text_obj("plain_text", t->subject, 150));
    json_array_append_new(blocks, hdr);
    json_array_append_new(blocks, json_pack("{s:s, s:o}", "type", "section", "text",
                                            text_obj("plain_text", t->intro, 3000)));
    /* fields: "*Label*\nvalue", the value escaped; at most 10 fields of 2000 characters */
    json_t *fields = json_array();
    for (size_t i = 0; i < t->nfields && i < 10; i++) {
        char *v = mrkdwn_escape(t->fields[i].value);
        char *f = xasprintf("*%s*\n%s", t->fields[i].label, v);
        json_array_append_new(fields, text_obj("mrkdwn", f, 2000));
        free(f);
        free(v);
    }
    json_array_append_new(blocks, json_pack("{s:s, s:o}", "type", "section", "fields", fields));
    if (t->error) {
        char *s = xasprintf("Error: %s", t->error);
        json_array_append_new(blocks, json_pack("{s:s, s:o}", "type", "section", "text",
                                                text_obj("plain_text", s, 3000)));
        free(s);
    }
    if (t->hint) {
        char *s = xasprintf("HINT: %s", t->hint);
        json_array_append_new(blocks, json_pack("{s:s, s:o}", "type", "section", "text",
                                                text_obj("plain_text", s, 3000)));
        free(s);
    }
    /* The fallback text (notifications, clients without blocks) is mrkdwn. */
    char *fb_raw = t->error ? xasprintf("%s: %s", t->subject, t->error) : xstrdup(t->subject);
    char *fb = mrkdwn_escape(fb_raw);
    char *fbc = cut(fb, 3000);
    json_t *root = json_pack("{s:s, s:o}", "text", fbc, "blocks", blocks);
    free(fb_raw);
    free(fb);
    free(fbc);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s)
        xoom(0);
    return s;
}

/* The reply's body, for the error message: at most 200 bytes kept. */
struct reply {
    char text[201];
    size_t len;
};

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct reply *r = userdata;
    size_t n = size * nmemb;
    size_t room = sizeof(r->text) - 1 - r->len;
    size_t k = n < room ? n : room;
    memcpy(r->text + r->len, ptr, k);
    r->len += k;
    r->text[r->len] = '\0';
    return n;
}

int notify_slack_post(const struct notify_config *nc, const char *json, struct notify_attempt *a,
                      struct err *e)
{
    CURL *h = curl_easy_init();
    if (!h)
        return err_set(e, ERR_FAILURE, NULL, "cannot start libcurl");
    char errbuf[CURL_ERROR_SIZE] = "";
    struct reply reply = {.len = 0};
    struct curl_slist *hdrs =
        curl_slist_append(NULL, "Content-Type: application/json; charset=utf-8");
    curl_easy_setopt(h, CURLOPT_URL, nc->slack_webhook_url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(json));
    curl_easy_setopt(h, CURLOPT_USERAGENT, "caris-backup");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &reply);
    long code;
    CURLcode rc = notify_curl_perform(h, a, errbuf, &code);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        if (rc == CURLE_ABORTED_BY_CALLBACK) {
            a->permanent = true;
            return err_set(e, ERR_FAILURE, NULL, "cancelled");
        }
        return err_set(e, ERR_FAILURE,
                       "check the network path to the webhook's host (proxy, firewall, DNS)", "%s",
                       *errbuf ? errbuf : curl_easy_strerror(rc));
    }
    if (code >= 200 && code < 300)
        return 0;
    char body[256];
    str_escape(reply.text, reply.len, body, sizeof(body));
    /* 429 (rate limited) and 5xx may pass; other replies (404 no_service, 403
     * invalid_token, 400 invalid_payload, 410 channel_is_archived) will not. */
    if (code != 429 && code < 500)
        a->permanent = true;
    return err_set(e, ERR_FAILURE,
                   a->permanent ? "the webhook was refused: check BACKUP_SLACK_WEBHOOK_URL (Slack "
                                  "revokes a webhook when its app or channel is removed)"
                                : "Slack or the network failed; it is retried",
                   "HTTP %ld%s%s", code, *body ? ": " : "", body);
}

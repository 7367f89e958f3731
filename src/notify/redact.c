/* Redaction: secrets replaced by "[redacted]" in everything the notify module produces. */
#include <stdlib.h>
#include <string.h>

#include "caris/config.h"
#include "caris/core.h"
#include "caris/notify.h"

#include "notify/internal.h"

static const char REDACTED[] = "[redacted]";
/* The shortest end of a text taken for the start of a secret (the secrets themselves have at
 * least 4 characters: SECRET_MIN_LEN in config.c). */
#define PREFIX_MIN 4

/* Replaces every occurrence of needle in *s. */
static void replace_all(char **s, const char *needle)
{
    size_t nl = strlen(needle);
    if (!nl || !strstr(*s, needle))
        return;
    struct buf b = {0};
    const char *p = *s, *hit;
    while ((hit = strstr(p, needle)) != NULL) {
        buf_append(&b, p, (size_t)(hit - p));
        buf_append(&b, REDACTED, sizeof(REDACTED) - 1);
        p = hit + nl;
    }
    buf_append(&b, p, strlen(p) + 1);
    free(*s);
    *s = (char *)b.data;
}

/* Replaces bytes [from, to) of *s with "[redacted]"; returns the offset just after it. */
static size_t replace_span(char **s, size_t from, size_t to)
{
    char *n = xasprintf("%.*s%s%s", (int)from, *s, REDACTED, *s + to);
    free(*s);
    *s = n;
    return from + sizeof(REDACTED) - 1;
}

char *notify_redact(const struct notify_config *nc, const char *in)
{
    char *s = xstrdup(in ? in : "");
    /* Longest first: a secret that contains another is replaced whole. */
    if (nc) {
        size_t n = nc->nsecrets;
        const char **order = xcalloc(n ? n : 1, sizeof(*order));
        for (size_t i = 0; i < n; i++)
            order[i] = nc->secrets[i];
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0 && strlen(order[j]) > strlen(order[j - 1]); j--) {
                const char *t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        for (size_t i = 0; i < n; i++)
            replace_all(&s, order[i]);
        /* a text cut to a fixed length (an error message's buffer) may end in the first part
         * of a secret, which no whole match finds: such an end is redacted too */
        for (size_t i = 0; i < n; i++) {
            size_t sl = strlen(s), nl = strlen(order[i]);
            for (size_t k = nl - 1 < sl ? nl - 1 : sl; k >= PREFIX_MIN; k--)
                if (memcmp(s + sl - k, order[i], k) == 0) {
                    replace_span(&s, sl - k, sl);
                    break;
                }
        }
        free(order);
    }
    /* scheme://user:password@host: the user info ends at the authority's last '@' (a
     * password with a bare '@' in it is not valid, but must not leak its end either). The
     * authority ends at '/' (or a space or quote), not at '?' or '#': libpq takes a bare one
     * in a password. */
    for (size_t off = 0;;) {
        char *p = strstr(s + off, "://");
        if (!p)
            break;
        size_t start = (size_t)(p - s) + 3;
        size_t authority = strcspn(s + start, "/ \t\n\"'<>");
        off = start;
        size_t auth = authority;
        while (auth > 0 && s[start + auth - 1] != '@')
            auth--;
        if (auth == 0)
            continue;
        auth--; /* the '@' */
        char *colon = memchr(s + start, ':', auth);
        if (!colon)
            continue;
        size_t from = (size_t)(colon - s) + 1;
        if (strncmp(s + from, REDACTED, sizeof(REDACTED) - 1) == 0 &&
            from + sizeof(REDACTED) - 1 == start + auth) {
            off = start + auth;
            continue;
        }
        off = replace_span(&s, from, start + auth);
    }
    /* password=value (libpq key=value strings: blanks around '=' allowed, the value quoted
     * with \ escapes, or bare up to white space, a '&' included; a URI's query parameter loses
     * what follows it) */
    for (size_t off = 0;;) {
        const char *p = config_kv_password(s + off);
        if (!p)
            break;
        size_t from = (size_t)(p - s) + 1 + strspn(p + 1, " \t"), to = from;
        bool quoted = s[from] == '\'';
        if (quoted)
            to++;
        while (s[to] && (quoted ? s[to] != '\'' : !strchr(" \t\n", s[to])))
            to += s[to] == '\\' && s[to + 1] ? 2 : 1;
        if (quoted && s[to] == '\'')
            to++;
        if (to == from || (to - from == sizeof(REDACTED) - 1 &&
                           strncmp(s + from, REDACTED, sizeof(REDACTED) - 1) == 0)) {
            off = to;
            continue;
        }
        off = replace_span(&s, from, to);
    }
    /* Slack webhook paths, even of a webhook that is not ours */
    for (size_t off = 0;;) {
        char *p = strcasestr(s + off, "hooks.slack.com/");
        if (!p)
            break;
        size_t from = (size_t)(p - s) + 16;
        size_t to = from + strcspn(s + from, " \t\n\"'<>");
        if (to == from || strncmp(s + from, REDACTED, sizeof(REDACTED) - 1) == 0) {
            off = to == from ? from : to;
            continue;
        }
        off = replace_span(&s, from, to);
    }
    return s;
}

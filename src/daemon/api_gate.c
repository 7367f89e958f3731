/* The API's own accept loop in front of libmicrohttpd (see api_gate.h for why).
 *
 * One thread polls the listening socket and the connections whose request line has not
 * arrived yet. Nothing it does blocks: sockets are non-blocking, a connection is examined
 * only when poll() says bytes arrived, and each has a deadline from its accept. A request line
 * is read with MSG_PEEK, so that what is handed to libmicrohttpd is the connection exactly as
 * the client sent it. So that a client dribbling one byte at a time does not make poll()
 * report the same bytes again and again (peeked bytes stay readable), SO_RCVLOWAT is raised
 * to one byte more than was seen: the socket is reported again only when more arrived or the
 * client closed (reset to 1 before the hand-over).
 *
 * Bounded: at most max_pending connections wait here (the others wait in the kernel's
 * backlog), at most max_pending_per_addr from one address, each at most deadline_s (and,
 * once answered, LINGER_MS more); the request line at most API_GATE_LINE_MAX bytes, read
 * into one buffer of the gate.
 *
 * Every response of the API carries "Connection: close" (api.c), so that each request is on
 * a new connection and passes here: a second request on a kept-alive connection would reach
 * libmicrohttpd's check only. */
#include "api_gate.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "caris/core.h"

struct gate_conn {
    int fd;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int64_t deadline_ns;
    size_t seen;   /* bytes peeked last time; once answered, bytes dropped */
    bool answered; /* answered by the gate: reading what the client still sends, then closed */
    bool ready;    /* request line and headers whole: waits for libmicrohttpd to have room */
};

/* After the gate's answer, what the client still sends (the rest of its request) is read and
 * dropped until it closes, for at most LINGER_MS and LINGER_MAX bytes: closing a socket with
 * unread bytes sends a reset, which can destroy the answer before the client read it. */
#define LINGER_MS 2000
#define LINGER_MAX (64 * 1024)

struct api_gate {
    int lfd;
    int wake[2]; /* 'x' written to wake[1] stops the thread; 'c': a handed connection closed */
    unsigned max, per_addr, deadline_s;
    /* connections handed to libmicrohttpd and not closed yet (api_gate_conn_started/closed),
     * at most max_handed: libmicrohttpd 0.9.75 deadlocks a worker for good when a connection
     * handed over finds the worker's limit reached (new_connection_process_ returns without
     * unlocking cleanup_connection_mutex), so it must never see its limit reached */
    pthread_mutex_t mu;
    unsigned handed, max_handed;
    /* the addresses of the connections handed over, at most per_addr from one: with
     * libmicrohttpd's own per-address limit (off now), a connection over it was reset without
     * an answer; it waits here for room instead, as for max_handed */
    struct sockaddr_storage *handed_addr;
    struct MHD_Daemon *mhd;
    pthread_t thread;
    bool running;
    struct gate_conn *conns;
    size_t n;
    int64_t accept_pause_ns; /* after EMFILE and the like: when to try accept() again */
    char line[API_GATE_HEAD_MAX];
};

/* ---- the request line --------------------------------------------------------------------- */

/* Whether libmicrohttpd (0.9.75, connection.c: parse_initial_message_line and
 * parse_http_version) takes this request line: METHOD, a space, the target, the version as
 * the text after the line's last space (trailing spaces included), exactly "HTTP/1.d". */
static bool line_ok(const char *l, size_t len)
{
    /* a NUL byte: libmicrohttpd reads the target up to it, so "GET /x\0junk HTTP/1.1" was
     * served and audited as /x (a header's NUL is refused below; %00 is never decoded) */
    if (memchr(l, '\0', len))
        return false;
    const char *end = l + len;
    const char *sp = memchr(l, ' ', len);
    if (!sp || sp == l)
        return false; /* no method: libmicrohttpd closes without an answer */
    const char *uri = sp + 1;
    while (uri < end && *uri == ' ')
        uri++;
    if (uri == end)
        return false; /* no target, no version: 400 */
    const char *v = end - 1;
    while (*v == ' ' && v > uri)
        v--;
    while (*v != ' ' && v > uri)
        v--;
    if (v <= uri)
        return false; /* no version (HTTP/0.9 style): 400 */
    v++;
    return end - v == 8 && memcmp(v, "HTTP/1.", 7) == 0 && v[7] >= '0' && v[7] <= '9';
}

enum api_gate_verdict api_gate_check(const char *b, size_t n)
{
    size_t i = 0;
    for (;;) {
        const char *nl = i < n ? memchr(b + i, '\n', n - i) : NULL;
        if (!nl)
            return n >= API_GATE_LINE_MAX ? API_GATE_TOO_LONG : API_GATE_MORE;
        size_t end = (size_t)(nl - b), len = end - i;
        if (len && b[end - 1] == '\r')
            len--;
        if (len) /* empty lines before the request line are skipped, as libmicrohttpd does */
            return line_ok(b + i, len) ? API_GATE_PASS : API_GATE_BAD;
        i = end + 1;
    }
}

/* The newline that ends the request line (after the empty lines a client may send before
 * it), or NULL when it has not arrived. */
static const char *request_line_end(const char *b, size_t n)
{
    size_t i = 0;
    while (i < n && (b[i] == '\r' || b[i] == '\n'))
        i++;
    return i < n ? memchr(b + i, '\n', n - i) : NULL;
}

bool api_gate_head_complete(const char *b, size_t n)
{
    const char *nl = request_line_end(b, n);
    if (!nl)
        return false;
    /* an empty line after the request line: at once (no header), or after a header line */
    for (const char *p = nl; p < b + n; p = memchr(p + 1, '\n', (size_t)(b + n - p - 1))) {
        if (!p)
            return false;
        if (p + 1 < b + n && p[1] == '\n')
            return true;
        if (p + 2 < b + n && p[1] == '\r' && p[2] == '\n')
            return true;
        if (p + 1 >= b + n)
            return false;
    }
    return false;
}

/* The value of a header line if its name is name (case-insensitive), with its length. */
static const char *header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
        return NULL;
    const char *v = line + nl + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    *vlen = (size_t)(end - v);
    return v;
}

/* The header line after *p (the end of the line before it: of the request line first), as
 * line and len (without its line end); *p moves to its end. False when no whole line follows. */
static bool next_line(const char *b, size_t n, const char **p, const char **line, size_t *len)
{
    if (!*p || *p + 1 >= b + n)
        return false;
    const char *l = *p + 1;
    const char *nl = memchr(l, '\n', (size_t)(b + n - l));
    if (!nl)
        return false;
    size_t k = (size_t)(nl - l);
    if (k && l[k - 1] == '\r')
        k--;
    *line = l;
    *len = k;
    *p = nl;
    return true;
}

const char *api_gate_head_refusal(const char *b, size_t n, int *status)
{
    *status = 400;
    const char *p = request_line_end(b, n), *line;
    size_t len;
    bool have_cl = false, have_te = false, too_large = false;
    unsigned long long cl = 0;
    while (next_line(b, n, &p, &line, &len)) {
        if (len == 0)
            break; /* the end of the headers */
        if (memchr(line, '\0', len))
            /* libmicrohttpd reads a header up to a NUL: "Authorization: Bearer <token>\0junk"
             * would pass for the token, "Content-Length: 2\0..." for 2 (RFC 9110, 5.5: a
             * recipient rejects it) */
            return "a header holds a NUL byte";
        /* libmicrohttpd answers a line without a colon with an HTML page of its own, and drops
         * a header folded onto a second line (obs-fold): "Authorization: Bearer\r\n <token>"
         * was answered "authentication required", and counted as a failed authentication;
         * whitespace before the colon made a header that no check here saw (RFC 9112, 5.1
         * and 5.2: a server rejects it) */
        if (line[0] == ' ' || line[0] == '\t')
            return "a header folded onto several lines (send each header on one line)";
        const char *colon = memchr(line, ':', len);
        if (!colon || colon == line)
            return "a header line without a name and a colon (send NAME: value)";
        if (memchr(line, ' ', (size_t)(colon - line)) || memchr(line, '\t', (size_t)(colon - line)))
            return "whitespace in a header's name or before its colon";
        size_t vlen;
        const char *v = header_value(line, len, "Content-Length", &vlen);
        if (v) {
            /* digits only: libmicrohttpd 0.9.75 answers "-1", "+2" or "2 " with a malformed
             * response of its own (two status lines, an HTML body) */
            unsigned long long x = 0;
            if (vlen == 0)
                return "malformed Content-Length (give the body's length in digits)";
            size_t digits = 0;
            for (size_t k = 0; k < vlen; k++) {
                if (v[k] < '0' || v[k] > '9')
                    return "malformed Content-Length (give the body's length in digits)";
                if (digits || v[k] != '0')
                    digits++;
                /* a length of 19 digits and more is too large for any body (413), not
                 * malformed; leading zeros do not count */
                if (digits > 18)
                    too_large = true;
                else
                    x = x * 10 + (unsigned)(v[k] - '0');
            }
            if (have_cl && x != cl)
                return "two different Content-Length headers";
            have_cl = true;
            cl = x;
        }
        v = header_value(line, len, "Transfer-Encoding", &vlen);
        if (v) {
            /* chunked is the one coding the API reads (libmicrohttpd closed the connection
             * without an answer on any other) */
            if (vlen != 7 || strncasecmp(v, "chunked", 7) != 0)
                return "unsupported Transfer-Encoding (send the body as is, or chunked)";
            have_te = true;
        }
    }
    if (have_cl && have_te)
        return "Content-Length and Transfer-Encoding together (send one of them)";
    if (too_large) {
        *status = 413;
        return "request body too large (a Content-Length of more than 18 digits)";
    }
    return NULL;
}

/* How many of c are in b[0..n). */
static unsigned count_in(const char *b, size_t n, char c)
{
    unsigned k = 0;
    for (size_t i = 0; i < n; i++)
        k += b[i] == c;
    return k;
}

bool api_gate_head_too_large(const char *b, size_t n)
{
    const char *p = request_line_end(b, n), *line;
    size_t len;
    /* libmicrohttpd keeps a record of every header line, query argument and cookie in the
     * connection's memory: a request line of 500 '&' (its own limit of 4 KiB kept) or 800
     * cookies in one header went past it (the connection closed without an answer, or its
     * HTML 431) */
    unsigned records = 0;
    if (p) {
        const char *q = memchr(b, '?', (size_t)(p - b));
        if (q)
            records += 1 + count_in(q, (size_t)(p - q), '&');
    }
    if (records > API_GATE_HEADERS_MAX)
        return true;
    while (next_line(b, n, &p, &line, &len)) {
        if (len == 0)
            return (size_t)(p + 1 - b) > API_GATE_HEAD_OK;   /* the end of the headers */
        if (len > 7 && strncasecmp(line, "cookie:", 7) == 0) /* it splits at ',' too */
            records += count_in(line, len, ';') + count_in(line, len, ',');
        if (++records > API_GATE_HEADERS_MAX)
            return true;
    }
    return n > API_GATE_HEAD_OK;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

/* ---- one connection ----------------------------------------------------------------------- */

/* A best-effort answer (the socket is non-blocking: what does not fit is dropped, the client
 * then sees a short reply; the response is a few hundred bytes, far below any buffer). */
static void gate_reply(int fd, unsigned status, const char *reason, const char *code,
                       const char *msg, const char *hint)
{
    json_t *j =
        json_pack("{s:{s:s, s:s, s:s}}", "error", "code", code, "message", msg, "hint", hint);
    char *body = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!body)
        return;
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\nCache-Control: "
                      "no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      status, reason, strlen(body) + 1);
    struct buf b = {0};
    buf_append(&b, head, (size_t)hn);
    buf_append(&b, body, strlen(body));
    buf_append(&b, "\n", 1);
    free(body);
    ssize_t w = send(fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    /* the answer is whole: FIN after it (the connection is read until the client closes, see
     * conn_answer) */
    shutdown(fd, SHUT_WR);
    buf_free(&b);
}

static void conn_drop(struct api_gate *g, size_t i)
{
    close(g->conns[i].fd);
    g->conns[i] = g->conns[--g->n];
}

/* Answers connection i and keeps it to read what the client still sends (LINGER_MS). */
static void conn_answer(struct api_gate *g, size_t i, unsigned status, const char *reason,
                        const char *code, const char *msg, const char *hint)
{
    struct gate_conn *c = &g->conns[i];
    gate_reply(c->fd, status, reason, code, msg, hint);
    int one = 1;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
    c->answered = true;
    c->seen = 0;
    c->deadline_ns = time_mono_ns() + LINGER_MS * 1000000LL;
}

/* An answered connection has something to read: dropped; true when it was closed (the
 * client closed, LINGER_MAX was reached, or an error). */
static bool conn_drain(struct api_gate *g, size_t i)
{
    struct gate_conn *c = &g->conns[i];
    for (;;) {
        ssize_t n = recv(c->fd, g->line, sizeof(g->line), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return false;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (c->seen += (size_t)n) > LINGER_MAX) {
            conn_drop(g, i);
            return true;
        }
    }
}

/* Hands ready connection i to libmicrohttpd when it has room: true when it left the gate
 * (slot i then holds another connection); false: it waits for a handed one to close. */
static bool conn_hand(struct api_gate *g, size_t i)
{
    struct gate_conn *c = &g->conns[i];
    pthread_mutex_lock(&g->mu);
    unsigned from_addr = 0;
    for (unsigned k = 0; k < g->handed; k++)
        from_addr += same_addr(&g->handed_addr[k], &c->addr);
    bool room = g->handed < g->max_handed && from_addr < g->per_addr;
    if (room) /* before the hand-over: it may close before MHD_add_connection returns */
        g->handed_addr[g->handed++] = c->addr;
    pthread_mutex_unlock(&g->mu);
    if (!room)
        return false;
    int one = 1;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
    struct gate_conn h = *c;
    g->conns[i] = g->conns[--g->n];
    /* libmicrohttpd owns the socket from here, and closes it when it cannot take it (then it
     * never started, and api_gate_conn_closed is not called for it) */
    if (MHD_add_connection(g->mhd, h.fd, (const struct sockaddr *)&h.addr, h.addrlen) != MHD_YES)
        api_gate_conn_closed(g, (const struct sockaddr *)&h.addr);
    return true;
}

void api_gate_conn_closed(struct api_gate *g, const struct sockaddr *sa)
{
    struct sockaddr_storage ss = {0};
    if (sa)
        memcpy(&ss, sa,
               sa->sa_family == AF_INET6  ? sizeof(struct sockaddr_in6)
               : sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                          : sizeof(sa->sa_family));
    pthread_mutex_lock(&g->mu);
    if (g->handed > 0) {
        /* its address's entry (the last one when unknown) */
        unsigned k = g->handed - 1;
        for (unsigned j = 0; sa && j < g->handed; j++)
            if (same_addr(&g->handed_addr[j], &ss)) {
                k = j;
                break;
            }
        g->handed_addr[k] = g->handed_addr[--g->handed];
    }
    pthread_mutex_unlock(&g->mu);
    ssize_t w = write(g->wake[1], "c", 1); /* a waiting connection may go now */
    (void)w;
}

/* Looks at connection i after poll() said something happened: true when it left the gate
 * (handed over or closed; slot i then holds another connection). */
static bool conn_examine(struct api_gate *g, size_t i, short revents)
{
    struct gate_conn *c = &g->conns[i];
    if (c->answered)
        return conn_drain(g, i);
    if (c->ready && (revents & (POLLERR | POLLHUP))) { /* gone while it waited */
        conn_drop(g, i);
        return true;
    }
    if (c->ready)
        return conn_hand(g, i);
    ssize_t n = recv(c->fd, g->line, sizeof(g->line), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) &&
        !(revents & (POLLERR | POLLHUP | POLLRDHUP)))
        return false;
    if (n <= 0) {
        conn_drop(g, i);
        return true;
    }
    switch (api_gate_check(g->line, (size_t)n)) {
    case API_GATE_PASS:
        /* the headers too are read here, within the deadline: libmicrohttpd's own timeout
         * starts again at every byte, so a client sending a header line every few seconds
         * held its connection for ever (and 64 of them every connection) */
        if (api_gate_head_complete(g->line, (size_t)n)) {
            if (api_gate_head_too_large(g->line, (size_t)n)) {
                conn_answer(g, i, 431, "Request Header Fields Too Large", "headers_too_large",
                            "request headers too large, or too many headers, query arguments "
                            "or cookies",
                            "the API needs a few short headers (Host, Authorization, "
                            "Content-Type)");
                return conn_drain(g, i);
            }
            int status;
            const char *why = api_gate_head_refusal(g->line, (size_t)n, &status);
            if (why && status == 413) {
                conn_answer(g, i, 413, "Content Too Large", "too_large", why,
                            "the API's request bodies are small JSON documents");
                return conn_drain(g, i);
            }
            if (why) {
                conn_answer(g, i, 400, "Bad Request", "bad_request", why,
                            "see docs/BACKUP_RECOVERY.md, \"HTTP API\"");
                return conn_drain(g, i);
            }
            c->ready = true;
            return conn_hand(g, i);
        }
        if ((size_t)n >= sizeof(g->line)) {
            conn_answer(g, i, 431, "Request Header Fields Too Large", "headers_too_large",
                        "request headers too large",
                        "the API needs a few short headers (Host, Authorization, Content-Type)");
            return conn_drain(g, i);
        }
        break;
    case API_GATE_BAD:
        conn_answer(g, i, 400, "Bad Request", "bad_request",
                    "malformed request line or unsupported HTTP version",
                    "send an HTTP/1.1 (or HTTP/1.0) request: METHOD /path HTTP/1.1");
        return conn_drain(g, i);
    case API_GATE_TOO_LONG:
        conn_answer(g, i, 414, "URI Too Long", "uri_too_long", "request line too long",
                    "the API's paths and queries are short: see docs/BACKUP_RECOVERY.md");
        return conn_drain(g, i);
    case API_GATE_MORE:
        break;
    }
    if ((size_t)n <= c->seen || (revents & (POLLRDHUP | POLLHUP | POLLERR))) {
        /* the client stopped sending before its request line and headers were complete */
        conn_answer(g, i, 400, "Bad Request", "bad_request", "incomplete request",
                    "send a whole request: METHOD /path HTTP/1.1, headers, an empty line");
        return conn_drain(g, i);
    }
    c->seen = (size_t)n;
    int low = (int)n + 1;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &low, sizeof(low));
    return false;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr, sizeof(struct in_addr)) == 0;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return false;
}

/* Accepts what the backlog holds, while there is room. */
static void gate_accept(struct api_gate *g, int64_t now)
{
    while (g->n < g->max) {
        struct gate_conn c = {.addrlen = sizeof(c.addr)};
        c.fd =
            accept4(g->lfd, (struct sockaddr *)&c.addr, &c.addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c.fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                g->accept_pause_ns = now + 100 * 1000000LL; /* else poll() would spin */
            return;                                         /* EAGAIN, or the client left */
        }
        unsigned from_addr = 0;
        for (size_t i = 0; i < g->n; i++)
            from_addr += same_addr(&g->conns[i].addr, &c.addr);
        if (from_addr >= g->per_addr) {
            close(c.fd);
            continue;
        }
        c.deadline_ns = now + (int64_t)g->deadline_s * 1000000000;
        g->conns[g->n++] = c;
    }
}

static void *gate_main(void *arg)
{
    struct api_gate *g = arg;
    struct pollfd *p = xcalloc(g->max + 2, sizeof(*p));
    for (;;) {
        int64_t now = time_mono_ns();
        int64_t next = now + 3600 * 1000000000LL;
        size_t np = 0;
        p[np++] = (struct pollfd){.fd = g->wake[0], .events = POLLIN};
        bool listening = g->n < g->max && now >= g->accept_pause_ns;
        p[np++] = (struct pollfd){.fd = listening ? g->lfd : -1, .events = POLLIN};
        if (!listening && g->accept_pause_ns > now && g->accept_pause_ns < next)
            next = g->accept_pause_ns;
        for (size_t i = 0; i < g->n; i++) {
            /* one waiting for room is not read (its body is libmicrohttpd's to read): only
             * its hang-up is seen */
            p[np++] = (struct pollfd){.fd = g->conns[i].fd,
                                      .events = g->conns[i].ready ? 0 : POLLIN | POLLRDHUP};
            if (g->conns[i].deadline_ns < next)
                next = g->conns[i].deadline_ns;
        }
        int64_t ms = (next - now + 999999) / 1000000;
        int rc = poll(p, np, ms < 0 ? 0 : ms > 3600000 ? 3600000 : (int)ms);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0 && p[0].revents) {
            char wb[64];
            ssize_t r = read(g->wake[0], wb, sizeof(wb));
            if (r > 0 && memchr(wb, 'x', (size_t)r))
                break;
        }
        /* the connections waiting for room, while there is room */
        for (size_t k = g->n; k-- > 0;)
            if (k < g->n && g->conns[k].ready && !g->conns[k].answered)
                conn_hand(g, k);
        /* the connections, newest slot first: a slot left is filled from the end */
        size_t n0 = g->n;
        for (size_t k = n0; k-- > 0;)
            if (k < g->n && p[2 + k].revents && p[2 + k].fd == g->conns[k].fd)
                conn_examine(g, k, p[2 + k].revents);
        now = time_mono_ns();
        for (size_t k = g->n; k-- > 0;)
            if (g->conns[k].deadline_ns <= now) {
                if (g->conns[k].answered)
                    conn_drop(g, k);
                else if (g->conns[k].ready)
                    conn_answer(g, k, 503, "Service Unavailable", "busy",
                                "too many connections at once",
                                "retry in a moment; the API serves 64 connections at a time");
                else
                    conn_answer(g, k, 408, "Request Timeout", "timeout",
                                "request line and headers not received in time",
                                "send the request at once");
            }
        if (rc > 0 && listening && p[1].revents)
            gate_accept(g, now);
    }
    free(p);
    return NULL;
}

/* ---- start and stop ----------------------------------------------------------------------- */

int api_gate_open(const struct sockaddr_storage *ss, unsigned max_pending,
                  unsigned max_pending_per_addr, unsigned max_handed, unsigned deadline_s,
                  struct api_gate **out, struct err *e)
{
    *out = NULL;
    socklen_t len =
        ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return err_sys(e, errno, NULL, "cannot create the API's socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, 64) != 0) {
        int err = errno;
        close(fd);
        return err_sys(e, err,
                       "check that the port is free (BACKUP_API_LISTEN; none turns the API off)",
                       "cannot listen");
    }
    struct api_gate *g = xcalloc(1, sizeof(*g));
    g->lfd = fd;
    g->max = max_pending;
    g->per_addr = max_pending_per_addr;
    g->deadline_s = deadline_s;
    g->conns = xcalloc(max_pending, sizeof(*g->conns));
    g->max_handed = max_handed;
    g->handed_addr = xcalloc(max_handed, sizeof(*g->handed_addr));
    pthread_mutex_init(&g->mu, NULL);
    if (pipe2(g->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        int err = errno;
        close(fd);
        free(g->conns);
        free(g->handed_addr);
        free(g);
        return err_sys(e, err, NULL, "cannot create a pipe");
    }
    *out = g;
    return 0;
}

unsigned api_gate_port(const struct api_gate *g)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(g->lfd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

int api_gate_run(struct api_gate *g, struct MHD_Daemon *mhd, struct err *e)
{
    g->mhd = mhd;
    int rc = pthread_create(&g->thread, NULL, gate_main, g);
    if (rc != 0)
        return err_sys(e, rc, NULL, "cannot start the API's accept thread");
    g->running = true;
    return 0;
}

void api_gate_close(struct api_gate *g)
{
    if (!g || g->lfd < 0)
        return;
    if (g->running) {
        ssize_t w = write(g->wake[1], "x", 1);
        (void)w;
        pthread_join(g->thread, NULL);
        g->running = false;
    }
    for (size_t i = 0; i < g->n; i++)
        close(g->conns[i].fd);
    g->n = 0;
    close(g->lfd);
    g->lfd = -1;
}

void api_gate_free(struct api_gate *g)
{
    if (!g)
        return;
    api_gate_close(g);
    close(g->wake[0]);
    close(g->wake[1]);
    pthread_mutex_destroy(&g->mu);
    free(g->conns);
    free(g->handed_addr);
    free(g);
}

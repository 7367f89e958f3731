/* The API's own accept loop (api_gate.c), in front of libmicrohttpd on plain HTTP.
 *
 * libmicrohttpd answers a request line whose version it does not support (HTTP/0.9, HTTP/2.0,
 * HTTP/3.x) with its own 505 before any handler of ours runs, and no option or callback of
 * it comes earlier (its URI log callback runs after the version check). The gate accepts the
 * connections itself, reads the request line without consuming it (MSG_PEEK), answers a line
 * that libmicrohttpd would refuse with our 400 and JSON error, and hands every other
 * connection to libmicrohttpd untouched (MHD_add_connection). */
#ifndef CARIS_DAEMON_API_GATE_H
#define CARIS_DAEMON_API_GATE_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "caris/err.h"

/* The longest request line (with the empty lines a client may send before it) the gate waits
 * for; a longer one is answered 414. The API's longest is under 100 bytes. */
#define API_GATE_LINE_MAX 4096

/* The longest request line and headers the gate reads before it hands a connection over
 * (libmicrohttpd's memory for them is 32 KiB, CONN_MEMORY in api.c); longer: 431. */
#define API_GATE_HEAD_MAX (32 * 1024)
/* What the gate hands over at most: request line and headers of API_GATE_HEAD_OK bytes and
 * API_GATE_HEADERS_MAX header lines, else it answers 431 itself. libmicrohttpd's 32 KiB hold
 * the headers' text and a record of each, and the buffers of the body and of the answer:
 * past them it answered its own 431 with an HTML page (300 one-byte headers with a POST's
 * body, 500 with a GET, or 32.5 KiB of headers). */
#define API_GATE_HEAD_OK (16 * 1024)
#define API_GATE_HEADERS_MAX 100

struct api_gate;

/* Binds and listens on ss (nothing is accepted yet): 0, or -1 with e. A connection waits in
 * the gate at most deadline_s for its request line and headers (408), and for libmicrohttpd
 * to have room: at most max_handed connections are with it at once, max_pending_per_addr from
 * one address (503 after the deadline);
 * libmicrohttpd's own connection limit must leave each of its workers room for max_handed. */
int api_gate_open(const struct sockaddr_storage *ss, unsigned max_pending,
                  unsigned max_pending_per_addr, unsigned max_handed, unsigned deadline_s,
                  struct api_gate **out, struct err *e);
/* The port it listens on. */
unsigned api_gate_port(const struct api_gate *g);
/* Starts accepting and handing connections to mhd (started with MHD_USE_NO_LISTEN_SOCKET and
 * MHD_USE_ITC): 0, or -1 with e. */
int api_gate_run(struct api_gate *g, struct MHD_Daemon *mhd, struct err *e);
/* Stops the thread, closes the connections not handed over and the socket (NULL is fine).
 * Call before stopping mhd; api_gate_free after it (libmicrohttpd's workers still call
 * api_gate_conn_closed while they stop). */
void api_gate_close(struct api_gate *g);
void api_gate_free(struct api_gate *g);
/* From libmicrohttpd's MHD_CONNECTION_NOTIFY_CLOSED of a connection the gate handed over,
 * with its client's address (NULL when unknown). */
void api_gate_conn_closed(struct api_gate *g, const struct sockaddr *sa);
/* Whether b[0..n) holds a request line and the empty line that ends its headers. */
bool api_gate_head_complete(const char *b, size_t n);
/* For whole headers: why the gate answers itself, with the status in *status (400: a
 * Content-Length that is not digits, two that differ, a Transfer-Encoding other than chunked,
 * both; 413: a Content-Length of more than 18 digits), or NULL. */
const char *api_gate_head_refusal(const char *b, size_t n, int *status);
/* For whole headers: whether they are over API_GATE_HEAD_OK bytes or API_GATE_HEADERS_MAX
 * records (header lines, query arguments and cookies together; the gate answers 431). */
bool api_gate_head_too_large(const char *b, size_t n);

/* What the gate makes of the bytes that start a connection (exposed for the unit test). */
enum api_gate_verdict {
    API_GATE_MORE,     /* no complete request line yet */
    API_GATE_PASS,     /* a request line libmicrohttpd accepts (HTTP/1.x) */
    API_GATE_BAD,      /* a request line libmicrohttpd would refuse (400, 505 or close) */
    API_GATE_TOO_LONG, /* no request line in API_GATE_LINE_MAX bytes */
};
enum api_gate_verdict api_gate_check(const char *b, size_t n);

#endif

/* The libraries only some commands use (libpq, libcurl, libmicrohttpd, libfuse3) are loaded
 * when first used, not when the program starts: mapping and relocating them, and the 20 more
 * they pull in (Kerberos, LDAP, GnuTLS, ...), took half of the start of every command (14 ms
 * of CPU for `--version`; 6 ms without them), and `wal push` runs once per WAL segment.
 *
 * The program calls their functions as usual: src/core/lazylib.c defines each function it
 * uses with the library's own prototype (the library's header is included there, so the
 * compiler checks them), and the first call loads the library. The entry points of each
 * library's users call lazylib_load first, so that a library that cannot be loaded is a clear
 * error (ERR_CONFIG, exit 6) with nothing done; a call without it that finds the library
 * missing is a bug and aborts with a message, like running out of memory. */
#ifndef CARIS_LAZYLIB_H
#define CARIS_LAZYLIB_H

#include "caris/err.h"

enum lazylib {
    LAZYLIB_PQ,   /* libpq: PostgreSQL connections */
    LAZYLIB_CURL, /* libcurl: S3 repositories, Slack and SMTP notifications */
    LAZYLIB_MHD,  /* libmicrohttpd: the daemon's HTTP API */
    LAZYLIB_FUSE, /* libfuse3: mount */
    LAZYLIB_COUNT
};

/* Loads the library and every function of it the program uses (once per process; thread
 * safe). 0, or -1 with a message naming the library file and what to install. */
int lazylib_load(enum lazylib lib, struct err *e);

#endif

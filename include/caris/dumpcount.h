/* Row counts read from a pg_dump custom-format archive as it streams by.
 *
 * A logical backup records how many rows each table had, so that a restore can be checked
 * against it. Counting them with SELECT count(*) on the server while pg_dump runs reads every
 * table a second time (1.4 s of the server's CPU for pgbench scale 50, on the same cores as
 * pg_dump). The archive already holds each table's rows as COPY text, one line per row (COPY
 * escapes the newlines inside values), so counting its newlines gives the same figure, for
 * the rows that were actually dumped.
 *
 * The counter is fed every byte of the archive in order, in pieces of any size. It reads the
 * header and the table of contents (format versions 1.12 to 1.16: pg_dump 9.0 to 17 and
 * later, uncompressed: --compress=0), then follows the data blocks. Anything else (another
 * version, compression, a block it does not know, a table of contents over 64 MiB, an
 * archive cut short) makes it give up: dumpcount_rows then finds nothing, and the caller
 * counts on the server instead. It never fails the dump. */
#ifndef CARIS_DUMPCOUNT_H
#define CARIS_DUMPCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dumpcount;

struct dumpcount *dumpcount_new(void);
void dumpcount_free(struct dumpcount *d);

/* The next n bytes of the archive. */
void dumpcount_feed(struct dumpcount *d, const uint8_t *p, size_t n);

/* The archive ended: call once after the last dumpcount_feed, before asking for results. */
void dumpcount_end(struct dumpcount *d);

/* Once the whole archive was fed: true when it was read to its end without a doubt. */
bool dumpcount_complete(const struct dumpcount *d);

/* The rows of table schema.name: true and *rows when the archive was complete and held
 * that table's data (a "TABLE DATA" entry in COPY form, whose block was read). */
bool dumpcount_rows(const struct dumpcount *d, const char *schema, const char *name, int64_t *rows);

/* Why the counter gave up (a short phrase), or NULL. */
const char *dumpcount_why(const struct dumpcount *d);

#endif

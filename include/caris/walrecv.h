/* wal receive: WAL streamed over a physical replication slot into the WAL archive. */
#ifndef CARIS_WALRECV_H
#define CARIS_WALRECV_H

#include <stdbool.h>

#include "caris/err.h"
#include "caris/repo.h"

struct caris_op;
struct wal_receive_opts {
    const char *url;           /* POSTGRES_URL; replication=true is added */
    const char *password;      /* may be NULL */
    const char *slot;          /* the physical replication slot */
    bool create_slot;          /* CREATE_REPLICATION_SLOT slot PHYSICAL RESERVE_WAL first */
    const struct caris_op *op; /* cancel: stop (0); log: a line per stored segment */
};

/* Streams from the slot's restart_lsn (rounded down to its segment: never past WAL the
 * archive may lack), stores each segment when complete and
 * reports it flushed to the server only then. Runs until op->cancel (returns 0) or an error
 * (-1 with e; the server ending the stream, e.g. a timeline switch, is an error). Whole
 * segments only: partial segments are not stored yet. */
int caris_wal_receive(struct repo *r, const struct wal_receive_opts *o, struct err *e);

#endif

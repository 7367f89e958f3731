/* wal receive: WAL streamed over a physical replication slot into the WAL archive. */
#ifndef CARIS_WALRECV_H
#define CARIS_WALRECV_H

#include <stdbool.h>

#include "caris/err.h"
#include "caris/repo.h"

struct caris_op;
struct wal_receive_opts {
    const char *url; /* POSTGRES_URL; replication=true is added */
    /* the variable url came from, named in its errors (NULL: POSTGRES_URL) */
    const char *url_var;
    const char *password; /* may be NULL */
    const char *slot;     /* the physical replication slot */
    bool
        create_slot; /* when it does not exist: CREATE_REPLICATION_SLOT slot PHYSICAL RESERVE_WAL */
    unsigned flush_seconds;    /* store the unfinished segment at least this often (0: 5) */
    const struct caris_op *op; /* cancel: stop (0); log: a line per stored segment */
    /* may be NULL: called with the LSN durably stored each time it moves (the daemon's
     * status) */
    void (*on_flush)(void *ctx, uint64_t flushed_lsn);
    void *on_flush_ctx;
};

/* Streams from the slot's restart_lsn (rounded down to its segment: never past WAL the
 * archive may lack), stores each segment when complete and, every flush_seconds, what has
 * arrived of the current one as a streamed partial; reports to the server as flushed only what
 * is stored. Runs until op->cancel (stores the partial, returns 0) or an error (-1 with e,
 * after storing what arrived; the server ending the stream other than at a timeline switch
 * is an error). A timeline switch is followed: the next timeline's .history is stored and
 * streaming goes on on it from the start of the segment holding the switch point; so is a
 * server on a timeline after the first at the start. */
int caris_wal_receive(struct repo *r, const struct wal_receive_opts *o, struct err *e);

/* BACKUP_WAL_FLUSH_SECONDS / --flush-seconds: 1 to 3600; ERR_USAGE otherwise. */
int caris_wal_flush_seconds_parse(const char *s, unsigned *out, struct err *e);

#endif

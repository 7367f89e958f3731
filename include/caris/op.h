/* The operation context a service runs in: where its progress and log lines go, a flag
 * that asks it to stop, and who asked for it. The CLI fills one from the terminal; a daemon
 * or the API from a job. Every field is optional (NULL / zero). */
#ifndef CARIS_OP_H
#define CARIS_OP_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "caris/core.h"

struct caris_op {
    /* phase: a short word ("mark", "repack", "delete"); done/total in the phase's units
     * (total 0 when unknown). Called from the service's thread, now and then. */
    void (*progress)(void *ctx, const char *phase, uint64_t done, uint64_t total);
    void *progress_ctx;
    /* One line of information for the operator (no trailing newline). Never a secret. */
    void (*log)(void *ctx, enum log_level level, const char *msg);
    void *log_ctx;
    /* Set to non-zero (from a signal handler or another thread, with __atomic_store_n: the
     * operation's threads read it with __atomic_load_n) to ask the operation to stop at its
     * next safe point; it then fails with "cancelled" and leaves the repository as
     * consistent as it found it. */
    volatile sig_atomic_t *cancel;
    const char *actor; /* who asked ("cli", "scheduler", an API token's name); for locks/audit */
};

/* Helpers for services: each does nothing when op or the field is NULL. */
void caris_op_progress(const struct caris_op *op, const char *phase, uint64_t done, uint64_t total);
void caris_op_log(const struct caris_op *op, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool caris_op_cancelled(const struct caris_op *op);
/* At a safe point: 0 when the operation may go on; -1 with e = "cancelled" (ERR_FAILURE,
 * hint says what the cancel left behind) when it was asked to stop. */
struct err;
int caris_op_check(const struct caris_op *op, const char *hint, struct err *e);

#endif

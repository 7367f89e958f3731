#include "caris/op.h"

#include "caris/err.h"

#include <stdarg.h>
#include <stdio.h>

void caris_op_progress(const struct caris_op *op, const char *phase, uint64_t done, uint64_t total)
{
    if (op && op->progress)
        op->progress(op->progress_ctx, phase, done, total);
}

void caris_op_log(const struct caris_op *op, enum log_level level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (op && op->log)
        op->log(op->log_ctx, level, msg);
    else
        log_msg(level, "%s", msg);
}

bool caris_op_cancelled(const struct caris_op *op)
{
    return op && op->cancel && __atomic_load_n(op->cancel, __ATOMIC_RELAXED);
}

int caris_op_check(const struct caris_op *op, const char *hint, struct err *e)
{
    if (!caris_op_cancelled(op))
        return 0;
    return err_set(e, ERR_FAILURE, hint, "cancelled");
}

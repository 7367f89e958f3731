/* A fixed set of worker threads fed through a bounded queue. Submitting blocks while the
 * queue is full, which bounds the memory held by jobs in flight. */
#ifndef CARIS_POOL_H
#define CARIS_POOL_H

#include <stddef.h>

/* worker is the worker's number (0..nthreads-1), e.g. to pick per-thread state. */
typedef void (*pool_fn)(void *arg, int worker);

struct pool;
/* Starts up to nthreads workers; when the system refuses some, it runs with those that
 * started, and with none, pool_submit runs each job in the caller's thread (worker 0), one
 * at a time (as a pool of one would). */
struct pool *pool_new(int nthreads, size_t queue_len);
/* p NULL: fn runs in the caller's thread, as worker 0, before pool_submit returns (for work
 * that is itself one job of a pool, where waiting on the same pool could deadlock). */
void pool_submit(struct pool *p, pool_fn fn, void *arg);
/* Waits until every submitted job has finished (p NULL: nothing to wait for). */
void pool_wait(struct pool *p);
/* Waits, stops the threads, frees. */
void pool_free(struct pool *p);
int pool_threads(const struct pool *p);
/* Jobs submitted and not yet started (p NULL: 0); may have changed by the time it returns. */
size_t pool_queued(struct pool *p);

#endif

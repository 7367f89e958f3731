/* The upload queue: puts of a storage made on its own threads, beside the writer that
 * produced them (a backup's hashing workers keep hashing while packs go out). See
 * caris/storage.h, "queued uploads".
 *
 * Invariants (all under q->mu):
 * - q->nqueued + q->nrunning <= q->cap: the memory held by uploads is bounded by cap objects;
 *   a producer waits on q->room while the queue is full.
 * - b->pending counts the batch's puts queued or running; q->done is broadcast whenever one
 *   of them ends, so that storage_batch_wait / _free see their batch's count reach zero.
 * - A batch's first failure is kept in b->err; its later puts are dropped unsent. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "caris/storage.h"

struct qjob {
    struct qjob *next;
    struct storage_batch *b;
    char *name;
    struct buf data;
    storage_put_done done;
    void *ctx;
};

struct storage_queue {
    struct storage *s;
    pthread_mutex_t mu;
    pthread_cond_t work, room, done;
    struct qjob *head, *tail;
    size_t nqueued, nrunning, cap;
    bool stop;
    int nthreads;
    pthread_t *threads;
};

struct storage_batch {
    struct storage *s;
    struct storage_queue *q; /* NULL: puts are synchronous */
    size_t pending;
    bool failed;
    struct err err;
};

static void job_free(struct qjob *j)
{
    free(j->name);
    buf_free(&j->data);
    free(j);
}

static void *queue_worker(void *arg)
{
    struct storage_queue *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->work, &q->mu);
        if (!q->head)
            break; /* stopping, nothing left */
        struct qjob *j = q->head;
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->nqueued--;
        q->nrunning++;
        struct storage_batch *b = j->b;
        bool skip = b->failed;
        pthread_mutex_unlock(&q->mu);
        struct err e = ERR_INIT;
        int rc = skip ? 0 : q->s->ops->put(q->s, j->name, j->data.data, j->data.len, &e);
        buf_free(&j->data); /* the memory goes back before the producer is let on */
        if (j->done)
            j->done(j->ctx, !skip && rc == 0);
        job_free(j);
        pthread_mutex_lock(&q->mu);
        if (rc != 0 && !b->failed) {
            b->failed = true;
            b->err = e;
        }
        q->nrunning--;
        b->pending--;
        pthread_cond_broadcast(&q->room);
        pthread_cond_broadcast(&q->done);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static pthread_mutex_t start_mu = PTHREAD_MUTEX_INITIALIZER;

/* The storage's queue, started on first use; NULL when the storage has no upload threads
 * or none could be started (then puts are synchronous: slower, never wrong). */
static struct storage_queue *queue_get(struct storage *s)
{
    if (s->connections <= 0)
        return NULL;
    pthread_mutex_lock(&start_mu);
    if (!s->queue) {
        struct storage_queue *q = xcalloc(1, sizeof(*q));
        q->s = s;
        pthread_mutex_init(&q->mu, NULL);
        pthread_cond_init(&q->work, NULL);
        pthread_cond_init(&q->room, NULL);
        pthread_cond_init(&q->done, NULL);
        int n = s->connections > STORAGE_CONNECTIONS_MAX ? STORAGE_CONNECTIONS_MAX : s->connections;
        q->threads = xcalloc((size_t)n, sizeof(pthread_t));
        for (int i = 0; i < n; i++) {
            if (pthread_create(&q->threads[q->nthreads], NULL, queue_worker, q) != 0)
                break;
            q->nthreads++;
        }
        if (q->nthreads == 0) {
            log_warn("cannot start upload threads for %s: uploading one object at a time",
                     s->location);
            s->connections = 0;
            pthread_cond_destroy(&q->work);
            pthread_cond_destroy(&q->room);
            pthread_cond_destroy(&q->done);
            pthread_mutex_destroy(&q->mu);
            free(q->threads);
            free(q);
        } else {
            /* The uploads in flight plus a few ready to go, so that a thread finishing one
             * finds the next one waiting. */
            q->cap = (size_t)q->nthreads + STORAGE_QUEUE_SLACK;
            s->queue = q;
        }
    }
    struct storage_queue *q = s->queue;
    pthread_mutex_unlock(&start_mu);
    return q;
}

struct storage_batch *storage_batch_new(struct storage *s)
{
    struct storage_batch *b = xcalloc(1, sizeof(*b));
    b->s = s;
    b->q = queue_get(s);
    return b;
}

int storage_batch_put(struct storage_batch *b, const char *name, struct buf *data,
                      storage_put_done done, void *ctx, struct err *e)
{
    struct storage_queue *q = b->q;
    if (!q) {
        int rc = storage_put(b->s, name, data->data, data->len, e);
        buf_free(data);
        if (done)
            done(ctx, rc == 0);
        return rc;
    }
    struct qjob *j = xcalloc(1, sizeof(*j));
    j->b = b;
    j->name = xstrdup(name);
    j->data = *data;
    j->done = done;
    j->ctx = ctx;
    memset(data, 0, sizeof(*data));
    pthread_mutex_lock(&q->mu);
    while (!b->failed && q->nqueued + q->nrunning >= q->cap)
        pthread_cond_wait(&q->room, &q->mu);
    if (b->failed) {
        *e = b->err;
        pthread_mutex_unlock(&q->mu);
        if (done)
            done(ctx, false);
        job_free(j);
        return -1;
    }
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->nqueued++;
    b->pending++;
    pthread_cond_signal(&q->work);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

int storage_batch_wait(struct storage_batch *b, struct err *e)
{
    struct storage_queue *q = b->q;
    if (!q)
        return 0;
    pthread_mutex_lock(&q->mu);
    while (b->pending > 0)
        pthread_cond_wait(&q->done, &q->mu);
    int rc = 0;
    if (b->failed) {
        *e = b->err;
        rc = -1;
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void storage_batch_free(struct storage_batch *b)
{
    if (!b)
        return;
    struct storage_queue *q = b->q;
    if (q) {
        pthread_mutex_lock(&q->mu);
        /* Not started: dropped. Being sent: waited for (the thread uses b). */
        struct qjob **pp = &q->head, *last = NULL, *dropped = NULL;
        while (*pp) {
            struct qjob *j = *pp;
            if (j->b == b) {
                *pp = j->next;
                q->nqueued--;
                b->pending--;
                j->next = dropped;
                dropped = j;
            } else {
                last = j;
                pp = &j->next;
            }
        }
        q->tail = last;
        pthread_cond_broadcast(&q->room);
        pthread_mutex_unlock(&q->mu);
        /* Their owners learn they were not stored (outside q->mu: a callback takes its
         * owner's locks, which may be held around storage_batch_put). */
        while (dropped) {
            struct qjob *j = dropped;
            dropped = j->next;
            if (j->done)
                j->done(j->ctx, false);
            job_free(j);
        }
        pthread_mutex_lock(&q->mu);
        while (b->pending > 0)
            pthread_cond_wait(&q->done, &q->mu);
        pthread_mutex_unlock(&q->mu);
    }
    free(b);
}

void storage_queue_stop(struct storage *s)
{
    struct storage_queue *q = s->queue;
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->work);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    /* Every batch was freed before: nothing is queued. */
    while (q->head) {
        struct qjob *j = q->head;
        q->head = j->next;
        job_free(j);
    }
    pthread_cond_destroy(&q->work);
    pthread_cond_destroy(&q->room);
    pthread_cond_destroy(&q->done);
    pthread_mutex_destroy(&q->mu);
    free(q->threads);
    free(q);
    s->queue = NULL;
}

#include "caris/pool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "caris/core.h"

struct job {
    pool_fn fn;
    void *arg;
};

struct pool {
    pthread_mutex_t mu;
    /* With no thread, jobs run in the submitters' threads as worker 0, one at a time as on a
     * pool of one (recursive: a job may submit to its own pool) */
    pthread_mutex_t inline_mu;
    pthread_cond_t not_empty, not_full, idle;
    struct job *q;
    size_t cap, head, n;
    size_t running;
    bool stop;
    int nthreads;
    pthread_t *threads;
};

struct worker_arg {
    struct pool *p;
    int id;
};

static void *worker_main(void *argp)
{
    struct worker_arg *wa = argp;
    struct pool *p = wa->p;
    int id = wa->id;
    free(wa);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->n && !p->stop)
            pthread_cond_wait(&p->not_empty, &p->mu);
        if (!p->n && p->stop)
            break;
        struct job j = p->q[p->head];
        p->head = (p->head + 1) % p->cap;
        p->n--;
        p->running++;
        pthread_cond_signal(&p->not_full);
        pthread_mutex_unlock(&p->mu);
        j.fn(j.arg, id);
        pthread_mutex_lock(&p->mu);
        p->running--;
        if (!p->n && !p->running)
            pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct pool *pool_new(int nthreads, size_t queue_len)
{
    struct pool *p = xcalloc(1, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutexattr_t ra;
    pthread_mutexattr_init(&ra);
    pthread_mutexattr_settype(&ra, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&p->inline_mu, &ra);
    pthread_mutexattr_destroy(&ra);
    pthread_cond_init(&p->not_empty, NULL);
    pthread_cond_init(&p->not_full, NULL);
    pthread_cond_init(&p->idle, NULL);
    p->cap = queue_len ? queue_len : 1;
    p->q = xcalloc(p->cap, sizeof(*p->q));
    p->nthreads = nthreads < 1 ? 1 : nthreads;
    p->threads = xcalloc((size_t)p->nthreads, sizeof(pthread_t));
    for (int i = 0; i < p->nthreads; i++) {
        struct worker_arg *wa = xmalloc(sizeof(*wa));
        wa->p = p;
        wa->id = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
            /* Fewer threads than asked (a resource limit): the pool runs with those that
             * started; with none, pool_submit runs each job itself, as worker 0. */
            free(wa);
            p->nthreads = i;
            break;
        }
    }
    return p;
}

void pool_submit(struct pool *p, pool_fn fn, void *arg)
{
    if (!p) {
        fn(arg, 0);
        return;
    }
    if (p->nthreads == 0) {
        pthread_mutex_lock(&p->inline_mu);
        fn(arg, 0);
        pthread_mutex_unlock(&p->inline_mu);
        return;
    }
    pthread_mutex_lock(&p->mu);
    while (p->n == p->cap)
        pthread_cond_wait(&p->not_full, &p->mu);
    p->q[(p->head + p->n) % p->cap] = (struct job){fn, arg};
    p->n++;
    pthread_cond_signal(&p->not_empty);
    pthread_mutex_unlock(&p->mu);
}

void pool_wait(struct pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    while (p->n || p->running)
        pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    pool_wait(p);
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->not_empty);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->inline_mu);
    pthread_cond_destroy(&p->not_empty);
    pthread_cond_destroy(&p->not_full);
    pthread_cond_destroy(&p->idle);
    free(p->q);
    free(p->threads);
    free(p);
}

int pool_threads(const struct pool *p)
{
    return p->nthreads;
}

size_t pool_queued(struct pool *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&p->mu);
    size_t n = p->n;
    pthread_mutex_unlock(&p->mu);
    return n;
}

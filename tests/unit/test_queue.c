/* The upload queue (src/storage/queue.c) over a fake backend whose puts the test holds and
 * releases: N puts in flight at once, never more than N, the first failure wins and later
 * puts are not made, a freed batch drops what had not started and waits for what had. No
 * timing: every wait is on a condition the test can see, with a deadline. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "caris/core.h"
#include "caris/storage.h"

struct fake {
    struct storage base;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_put, max_in_put, puts;
    bool release; /* puts return once set */
    const char *fail_name;
    char made[16][16]; /* names put, in order */
};

static struct fake *F(struct storage *s)
{
    return (struct fake *)s;
}

static int fake_put(struct storage *s, const char *name, const void *data, size_t len,
                    struct err *e)
{
    (void)data;
    (void)len;
    struct fake *f = F(s);
    pthread_mutex_lock(&f->mu);
    if (f->puts < 16)
        snprintf(f->made[f->puts], sizeof(f->made[0]), "%s", name);
    f->puts++;
    f->in_put++;
    if (f->in_put > f->max_in_put)
        f->max_in_put = f->in_put;
    pthread_cond_broadcast(&f->cv);
    bool fail = f->fail_name && strcmp(name, f->fail_name) == 0;
    while (!f->release && !fail)
        pthread_cond_wait(&f->cv, &f->mu);
    f->in_put--;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    if (fail)
        return err_set(e, ERR_IO, NULL, "cannot PUT %s: HTTP 503 SlowDown", name);
    return 0;
}

static void fake_close(struct storage *s)
{
    struct fake *f = F(s);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f->base.location);
    free(f);
}

static const struct storage_ops fake_ops = {.put = fake_put, .close = fake_close};

static struct fake *fake_new(int connections)
{
    struct fake *f = xcalloc(1, sizeof(*f));
    f->base.ops = &fake_ops;
    f->base.location = xstrdup("fake:");
    f->base.connections = connections;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    return f;
}

/* Waits (at most 20 s) until cond(f) holds; false on the deadline. */
static bool wait_for(struct fake *f, bool (*cond)(struct fake *, int), int arg)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    pthread_mutex_lock(&f->mu);
    bool ok;
    while (!(ok = cond(f, arg)))
        if (pthread_cond_timedwait(&f->cv, &f->mu, &dl) != 0) {
            ok = cond(f, arg);
            break;
        }
    pthread_mutex_unlock(&f->mu);
    return ok;
}

static bool in_put_is(struct fake *f, int n)
{
    return f->in_put == n;
}

static void release_all(struct fake *f)
{
    pthread_mutex_lock(&f->mu);
    f->release = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* The done callbacks: 1 stored, -1 not stored, 0 not called yet. */
struct outcome {
    struct fake *f;
    int v;
};

static void on_done(void *ctx, bool stored)
{
    struct outcome *o = ctx;
    pthread_mutex_lock(&o->f->mu);
    o->v = stored ? 1 : -1;
    pthread_cond_broadcast(&o->f->cv);
    pthread_mutex_unlock(&o->f->mu);
}

static int put(struct storage_batch *b, const char *name, struct outcome *o, struct err *e)
{
    struct buf data = {0};
    buf_append(&data, name, strlen(name));
    int rc = storage_batch_put(b, name, &data, on_done, o, e);
    assert_null(data.data); /* taken */
    return rc;
}

static void test_parallel_and_bounded(void **state)
{
    (void)state;
    struct fake *f = fake_new(3);
    struct storage_batch *b = storage_batch_new(&f->base);
    struct err e = ERR_INIT;
    struct outcome o[5];
    char name[5][8];
    for (int i = 0; i < 5; i++) {
        o[i] = (struct outcome){f, 0};
        snprintf(name[i], sizeof(name[i]), "p%d", i);
    }
    /* 3 threads + STORAGE_QUEUE_SLACK (2) = 5 fit without blocking this thread */
    for (int i = 0; i < 5; i++)
        assert_int_equal(put(b, name[i], &o[i], &e), 0);
    assert_true(wait_for(f, in_put_is, 3)); /* three puts in flight at once */
    release_all(f);
    assert_int_equal(storage_batch_wait(b, &e), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(o[i].v, 1);
    assert_int_equal(f->puts, 5);
    assert_int_equal(f->max_in_put, 3); /* never more than the connections */
    storage_batch_free(b);
    storage_close(&f->base);
}

static void test_first_failure_wins(void **state)
{
    (void)state;
    struct fake *f = fake_new(1);
    f->fail_name = "bad";
    struct storage_batch *b = storage_batch_new(&f->base);
    struct err e = ERR_INIT;
    struct outcome ob = {f, 0}, oa = {f, 0}, oc = {f, 0};
    assert_int_equal(put(b, "bad", &ob, &e), 0);
    /* queued behind it, or refused at once once it failed: never stored either way */
    (void)put(b, "a", &oa, &e);
    (void)put(b, "c", &oc, &e);
    err_clear(&e);
    assert_int_equal(storage_batch_wait(b, &e), -1);
    assert_non_null(strstr(e.msg, "cannot PUT bad"));
    assert_int_equal(ob.v, -1);
    assert_int_equal(oa.v, -1);
    assert_int_equal(oc.v, -1);
    assert_int_equal(f->puts, 1); /* the later puts were not made */
    /* a put after the failure is refused with the same error */
    struct outcome od = {f, 0};
    err_clear(&e);
    assert_int_equal(put(b, "d", &od, &e), -1);
    assert_non_null(strstr(e.msg, "cannot PUT bad"));
    assert_int_equal(od.v, -1);
    storage_batch_free(b);
    storage_close(&f->base);
}

static void *free_batch(void *arg)
{
    storage_batch_free(arg);
    return NULL;
}

struct drop_watch {
    struct outcome *o2, *o3;
};
static struct drop_watch watch;

static bool both_dropped(struct fake *f, int unused)
{
    (void)f;
    (void)unused;
    return watch.o2->v == -1 && watch.o3->v == -1;
}

static void test_free_drops_queued_waits_running(void **state)
{
    (void)state;
    struct fake *f = fake_new(1);
    struct storage_batch *b = storage_batch_new(&f->base);
    struct err e = ERR_INIT;
    struct outcome o1 = {f, 0}, o2 = {f, 0}, o3 = {f, 0};
    assert_int_equal(put(b, "p1", &o1, &e), 0);
    assert_true(wait_for(f, in_put_is, 1)); /* p1 is being sent, held */
    assert_int_equal(put(b, "p2", &o2, &e), 0);
    assert_int_equal(put(b, "p3", &o3, &e), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, free_batch, b), 0);
    watch = (struct drop_watch){&o2, &o3};
    assert_true(wait_for(f, both_dropped, 0)); /* dropped before p1 ended */
    assert_int_equal(o1.v, 0);                 /* free waits for it */
    release_all(f);
    pthread_join(t, NULL);
    assert_int_equal(o1.v, 1);
    assert_int_equal(f->puts, 1);
    assert_string_equal(f->made[0], "p1");
    storage_close(&f->base);
}

static void test_synchronous_without_threads(void **state)
{
    (void)state;
    struct fake *f = fake_new(0);
    f->release = true;
    struct storage_batch *b = storage_batch_new(&f->base);
    struct err e = ERR_INIT;
    struct outcome o = {f, 0};
    assert_int_equal(put(b, "x", &o, &e), 0);
    assert_int_equal(o.v, 1); /* done before storage_batch_put returned */
    assert_int_equal(storage_batch_wait(b, &e), 0);
    storage_batch_free(b);
    assert_null(f->base.queue);
    storage_close(&f->base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_and_bounded),
        cmocka_unit_test(test_first_failure_wins),
        cmocka_unit_test(test_free_drops_queued_waits_running),
        cmocka_unit_test(test_synchronous_without_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Repository locks (src/repo/lock.c): shared and exclusive modes, the staleness rules
 * (process gone, pid reused, host restarted, not refreshed, format 1), the refresh thread,
 * waiting, claims, leftovers, the second look that settles two lockers who raced, a backup killed
 * with SIGKILL in the middle (a child process held mid-backup by its progress callback, so nothing
 * depends on timing). */

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sched.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tmpdir.h"

#include "caris/backup.h"
#include "caris/repo.h"
#include "repo/internal.h"

#define PW "test password: correct horse battery staple"
static const struct repo_init_opts TINY = {.kdf_ops = 1, .kdf_mem = 8192};

#define assert_err(e, want)                                                                        \
    do {                                                                                           \
        if ((e).code != (want))                                                                    \
            fail_msg("expected %s, got %s: %s", err_code_name(want), err_code_name((e).code),      \
                     (e).msg);                                                                     \
    } while (0)

static struct repo *init_ok(const char *dir)
{
    struct err e = ERR_INIT;
    struct repo *r = repo_init(dir, PW, &TINY, &e);
    if (!r)
        fail_msg("repo_init %s: %s", dir, e.msg);
    return r;
}

static struct repo *open_ok(const char *dir)
{
    struct err e = ERR_INIT;
    struct repo *r = repo_open(dir, PW, &e);
    if (!r)
        fail_msg("repo_open %s: %s", dir, e.msg);
    return r;
}

static void lock_ok(struct repo *r, bool exclusive, const char *op)
{
    struct err e = ERR_INIT;
    if (repo_lock(r, exclusive, op, &e) != 0)
        fail_msg("repo_lock(%s, %s): %s", exclusive ? "exclusive" : "shared", op, e.msg);
}

static void lock_fails(struct repo *r, bool exclusive, struct err *e)
{
    err_clear(e);
    assert_int_equal(repo_lock(r, exclusive, "test", e), -1);
    assert_err(*e, ERR_LOCKED);
}

/* Number of files in dir/locks (not counting temporary ones). */
static size_t count_locks(const char *dir)
{
    struct err e = ERR_INIT;
    struct repo *r = open_ok(dir);
    json_t *l = repo_lock_list(r, &e);
    assert_non_null(l);
    size_t n = json_array_size(l);
    json_decref(l);
    repo_close(r);
    return n;
}

/* The entry of repo_lock_list for object (borrowed from list), or NULL. */
static json_t *entry_of(json_t *list, const char *object)
{
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x) if (strcmp(json_string_value(json_object_get(x, "object")),
                                              object) == 0) return x;
    return NULL;
}

static void put_text(struct repo *r, const char *name, const char *text)
{
    struct err e = ERR_INIT;
    assert_int_equal(storage_put(repo_storage(r), name, text, strlen(text), &e), 0);
}

static void put_json(struct repo *r, const char *name, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    put_text(r, name, text);
    free(text);
    json_decref(j);
}

static void set_mtime(const char *dir, const char *name, int64_t ago_s)
{
    char *p = xasprintf("%s/%s", dir, name);
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= ago_s;
    ts[1] = ts[0];
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    free(p);
}

static void iso_ago(int64_t ago_s, char out[40])
{
    time_format_iso(time_now_ns() - ago_s * 1000000000, out, 40);
}

static void my_ident(char host[256], char boot[64], long long *start)
{
    memset(host, 0, 256);
    gethostname(host, 255);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    assert_non_null(f);
    assert_non_null(fgets(boot, 64, f));
    fclose(f);
    boot[strcspn(boot, "\n")] = '\0';
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)getpid());
    f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    char *p = strrchr(line, ')') + 1; /* the space before field 3 */
    for (int field = 3; field < 22; field++)
        p = strchr(p + 1, ' ');
    *start = strtoll(p + 1, NULL, 10);
}

static pid_t dead_pid(void)
{
    pid_t dead = fork();
    assert_true(dead >= 0);
    if (dead == 0)
        _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);
    assert_int_equal(kill(dead, 0), -1);
    return dead;
}

/* ---- modes ----------------------------------------------------------------------------- */

static void test_modes(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *a = init_ok(dir);
    struct repo *b = open_ok(dir), *c = open_ok(dir);
    struct err e = ERR_INIT;
    char host[256], boot[64];
    long long start;
    my_ident(host, boot, &start);

    lock_ok(a, false, "backup files");
    lock_ok(b, false, "verify"); /* shared + shared */
    assert_int_equal(count_locks(dir), 2);
    lock_fails(c, true, &e); /* exclusive against live shared locks */
    char want[400];
    snprintf(want, sizeof(want), "repository locked by %s on %s pid %d since ", "backup files",
             host, (int)getpid());
    if (!strstr(e.msg, want) && !strstr(e.msg, "repository locked by verify on "))
        fail_msg("unexpected message: %s", e.msg);
    assert_non_null(strstr(e.hint, "caris-backup unlock"));
    assert_int_equal(count_locks(dir), 2); /* the failed attempt left nothing */
    repo_unlock(a);
    lock_fails(c, true, &e);
    repo_unlock(b);
    lock_ok(c, true, "prune");
    lock_fails(a, false, &e); /* shared against a live exclusive */
    snprintf(want, sizeof(want), "repository locked by prune on %s pid %d since ", host,
             (int)getpid());
    assert_non_null(strstr(e.msg, want));
    lock_fails(b, true, &e);

    /* nesting: shared under exclusive, released in pairs */
    lock_ok(c, false, "check");
    repo_unlock(c);
    assert_int_equal(count_locks(dir), 1);
    repo_unlock(c);
    assert_int_equal(count_locks(dir), 0);
    /* exclusive under shared is refused (no upgrade) */
    lock_ok(a, false, "backup files");
    err_clear(&e);
    assert_int_equal(repo_lock(a, true, "prune", &e), -1);
    assert_err(e, ERR_FAILURE);
    repo_unlock(a);
    assert_int_equal(count_locks(dir), 0);

    /* the lock file: format 2, every field of the holder */
    lock_ok(a, true, "prune");
    json_t *l = repo_lock_list(a, &e);
    assert_int_equal(json_array_size(l), 1);
    const char *obj = json_string_value(json_object_get(json_array_get(l, 0), "object"));
    struct buf raw = {0};
    assert_int_equal(storage_get(repo_storage(a), obj, 65536, &raw, &e), 0);
    json_t *j = json_loadb((const char *)raw.data, raw.len, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 2);
    assert_true(json_is_true(json_object_get(j, "exclusive")));
    assert_string_equal(json_string_value(json_object_get(j, "operation")), "prune");
    assert_string_equal(json_string_value(json_object_get(j, "host")), host);
    assert_string_equal(json_string_value(json_object_get(j, "boot_id")), boot);
    assert_int_equal(json_integer_value(json_object_get(j, "pid")), getpid());
    assert_int_equal(json_integer_value(json_object_get(j, "pid_start")), start);
    assert_non_null(json_string_value(json_object_get(j, "created")));
    assert_non_null(json_string_value(json_object_get(j, "refreshed")));
    assert_true(json_is_true(json_object_get(json_array_get(l, 0), "mine")));
    json_decref(j);
    json_decref(l);
    buf_free(&raw);

    /* repo_close releases the lock, even nested */
    lock_ok(a, false, "check");
    repo_close(a);
    assert_int_equal(count_locks(dir), 0);
    repo_close(b);
    repo_close(c);
    tmpdir_free(dir);
}

/* ---- staleness rules ------------------------------------------------------------------- */

struct planted {
    const char *name;
    bool stale;
};

static void test_stale_rules(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *a = init_ok(dir);
    struct repo *b = open_ok(dir);
    struct err e = ERR_INIT;
    char host[256], boot[64], now[40], old[40], day[40], hour[40];
    long long start;
    my_ident(host, boot, &start);
    iso_ago(0, now);
    iso_ago(31 * 60, old);
    iso_ago(25 * 3600, day);
    iso_ago(2 * 3600, hour);
    pid_t dead = dead_pid();
    const char *fmt2 = "{s:i, s:b, s:s, s:s, s:s, s:I, s:I, s:s, s:s}";
#define LOCK2(host_, boot_, pid_, start_, refreshed_)                                              \
    json_pack(fmt2, "version", 2, "exclusive", 1, "operation", "planted", "host", host_,           \
              "boot_id", boot_, "pid", (json_int_t)(pid_), "pid_start", (json_int_t)(start_),      \
              "created", now, "refreshed", refreshed_)

    struct planted cases[] = {
        {"locks/00000000000000000000000000000001", true},  /* same host, process gone */
        {"locks/00000000000000000000000000000002", true},  /* our pid, another start time */
        {"locks/00000000000000000000000000000003", false}, /* dead pid, another boot */
        {"locks/00000000000000000000000000000004", true},  /* other host, not refreshed 31 min */
        {"locks/00000000000000000000000000000005", false}, /* other host, fresh */
        {"locks/00000000000000000000000000000006", false}, /* us, alive */
        {"locks/00000000000000000000000000000007", false}, /* format 1, other host, 2 h */
        {"locks/00000000000000000000000000000008", true},  /* format 1, other host, 25 h */
        {"locks/00000000000000000000000000000009", true},  /* format 1, same host, gone */
        {"locks/0000000000000000000000000000000a", false}, /* unreadable, new */
        {"locks/0000000000000000000000000000000b", true},  /* unreadable, 31 min old */
        {"locks/0000000000000000000000000000000c", false}, /* dead pid, other pid namespace */
        {"locks/0000000000000000000000000000000d", true},  /* exited, not yet collected */
    };
    put_json(a, cases[0].name, LOCK2(host, boot, dead, 0, now));
    put_json(a, cases[1].name, LOCK2(host, boot, getpid(), start + 1, now));
    put_json(a, cases[2].name, LOCK2(host, "another-boot", dead, 0, now));
    put_json(a, cases[3].name, LOCK2("another-host", "x", 1, 1, old));
    put_json(a, cases[4].name, LOCK2("another-host", "x", 1, 1, now));
    put_json(a, cases[5].name, LOCK2(host, boot, getpid(), start, now));
    const char *fmt1 = "{s:b, s:I, s:s, s:s, s:s}";
    put_json(a, cases[6].name,
             json_pack(fmt1, "exclusive", 0, "pid", (json_int_t)1, "host", "another-host",
                       "created", hour, "operation", "backup files"));
    put_json(a, cases[7].name,
             json_pack(fmt1, "exclusive", 0, "pid", (json_int_t)1, "host", "another-host",
                       "created", day, "operation", "backup files"));
    put_json(a, cases[8].name,
             json_pack(fmt1, "exclusive", 0, "pid", (json_int_t)dead, "host", host, "created", now,
                       "operation", "backup files"));
    put_json(a, cases[11].name,
             json_pack("{s:i, s:b, s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "version", 2, "exclusive",
                       1, "operation", "planted", "host", host, "boot_id", boot, "pid_ns",
                       "pid:[1]", "pid", (json_int_t)dead, "created", now, "refreshed", now));
    /* a process that has exited and that its parent (this test) has not collected yet: a
     * zombie holds nothing, though kill(pid, 0) still finds it */
    pid_t zombie = fork();
    assert_true(zombie >= 0);
    if (zombie == 0)
        _exit(0);
    long long zstart = 0;
    for (;;) { /* until it has exited (state Z), read without collecting it */
        char zpath[64], zline[1024];
        snprintf(zpath, sizeof(zpath), "/proc/%d/stat", (int)zombie);
        FILE *zf = fopen(zpath, "r");
        assert_non_null(zf);
        assert_non_null(fgets(zline, sizeof(zline), zf));
        fclose(zf);
        char *zp = strrchr(zline, ')') + 1;
        bool z = zp[1] == 'Z';
        for (int field = 3; field < 22; field++)
            zp = strchr(zp + 1, ' ');
        zstart = strtoll(zp + 1, NULL, 10);
        if (z)
            break;
        sched_yield();
    }
    put_json(a, cases[12].name, LOCK2(host, boot, zombie, zstart, now));
    put_text(a, cases[9].name, "{\"trunc");
    put_text(a, cases[10].name, "");
    set_mtime(dir, cases[10].name, 31 * 60);

    json_t *l = repo_lock_list(b, &e);
    assert_non_null(l);
    assert_int_equal(json_array_size(l), sizeof(cases) / sizeof(cases[0]));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *x = entry_of(l, cases[i].name);
        assert_non_null(x);
        if (json_is_true(json_object_get(x, "stale")) != cases[i].stale)
            fail_msg("%s: expected %s, got %s", cases[i].name, cases[i].stale ? "stale" : "live",
                     json_dumps(x, JSON_COMPACT));
    }
    assert_non_null(strstr(json_string_value(json_object_get(entry_of(l, cases[1].name), "reason")),
                           "pid is now another process"));
    assert_non_null(strstr(json_string_value(json_object_get(entry_of(l, cases[3].name), "reason")),
                           "not refreshed for 31 min"));
    assert_non_null(strstr(
        json_string_value(json_object_get(entry_of(l, cases[12].name), "reason")), "has exited"));
    json_decref(l);
    assert_int_equal(waitpid(zombie, NULL, 0), zombie);

    /* the live ones block an exclusive locker; the stale ones do not */
    lock_fails(b, true, &e);
    json_t *rep = NULL;
    assert_int_equal(repo_unlock_stale(b, false, &rep, &e), 0);
    assert_int_equal(json_array_size(json_object_get(rep, "removed")), 7);
    assert_int_equal(json_array_size(json_object_get(rep, "kept")), 6);
    json_decref(rep);
    assert_int_equal(count_locks(dir), 6);
    lock_fails(b, true, &e);
    /* --force removes the live ones too, and says so */
    assert_int_equal(repo_unlock_stale(b, true, &rep, &e), 0);
    json_t *removed = json_object_get(rep, "removed");
    assert_int_equal(json_array_size(removed), 6);
    size_t i;
    json_t *x;
    json_array_foreach(removed, i, x) assert_true(json_is_true(json_object_get(x, "forced")));
    json_decref(rep);
    assert_int_equal(count_locks(dir), 0);
    lock_ok(b, true, "prune");
    repo_close(b);
    repo_close(a);
    tmpdir_free(dir);
}

/* ---- claims ------------------------------------------------------------------------------ */

static void test_claims(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *a = init_ok(dir);
    struct repo *b = open_ok(dir);
    struct err e = ERR_INIT;
    assert_int_equal(repo_claim(a, "file_full_x", &e), -1); /* no lock held */
    lock_ok(a, false, "backup files");
    assert_int_equal(repo_claim(a, "file_full_x", &e), 0);
    assert_int_equal(repo_claim(a, "file_full_x", &e), 1);
    assert_int_equal(repo_claim(a, "../config", &e), -1);
    lock_ok(b, false, "backup files");
    assert_int_equal(repo_claim(b, "file_full_x", &e), 1); /* taken by a live claim */

    json_t *l = repo_lock_list(b, &e);
    json_t *c = entry_of(l, "locks/claim-file_full_x");
    assert_non_null(c);
    assert_false(json_is_true(json_object_get(c, "stale")));
    assert_string_equal(json_string_value(json_object_get(c, "lock")), a->lock->hex);
    json_decref(l);
    /* claims never conflict: the exclusive locker waits for the lock behind them */
    repo_unlock(b);
    /* a's lock file vanishes (its process would be gone): the claim is stale with it */
    assert_int_equal(storage_remove(repo_storage(a), a->lock->name, &e), 0);
    l = repo_lock_list(b, &e);
    c = entry_of(l, "locks/claim-file_full_x");
    assert_true(json_is_true(json_object_get(c, "stale")));
    assert_non_null(strstr(json_string_value(json_object_get(c, "reason")), "is gone"));
    json_decref(l);
    /* a format 1 claim (no owner) is stale once no live lock remains */
    put_text(b, "locks/claim-old", "{\"claim\":true}");
    lock_ok(b, true, "prune");
    json_t *removed = NULL;
    assert_int_equal(repo_leftovers_remove(b, &removed, &e), 0);
    assert_int_equal(json_array_size(removed), 2);
    json_decref(removed);
    repo_unlock(b);
    assert_int_equal(count_locks(dir), 0);
    /* the holder's commit fails: its lock was removed */
    json_t *summary = json_pack("{s:s}", "id", "x"), *ref = json_pack("{s:[]}", "chunks");
    char name[65];
    assert_int_equal(repo_snapshot_commit(a, summary, ref, name, &e), -1);
    assert_err(e, ERR_LOCKED);
    assert_non_null(strstr(e.msg, "was removed while it ran"));
    json_decref(summary);
    json_decref(ref);
    repo_close(a);
    repo_close(b);
    tmpdir_free(dir);
}

/* ---- refresh ----------------------------------------------------------------------------- */

static char *refreshed_of(struct repo *r, const char *obj)
{
    struct buf raw = {0};
    struct err e = ERR_INIT;
    char *out = NULL;
    if (storage_get(repo_storage(r), obj, 65536, &raw, &e) == 0) {
        json_t *j = json_loadb((const char *)raw.data, raw.len, 0, NULL);
        if (j && json_string_value(json_object_get(j, "refreshed")))
            out = strdup(json_string_value(json_object_get(j, "refreshed")));
        json_decref(j);
    }
    buf_free(&raw);
    return out;
}

static void test_refresh(void **state)
{
    (void)state;
    setenv("CARIS_LOCK_REFRESH_SECONDS", "0.05", 1);
    char *dir = tmpdir_new();
    struct repo *a = init_ok(dir);
    struct err e = ERR_INIT;
    lock_ok(a, false, "backup files");
    char *first = refreshed_of(a, a->lock->name);
    assert_non_null(first);
    /* poll (10 s deadline) until the thread has rewritten the lock with a later time */
    int64_t deadline = time_mono_ns() + (int64_t)10 * 1000000000;
    bool changed = false;
    while (!changed && time_mono_ns() < deadline) {
        char *now = refreshed_of(a, a->lock->name);
        changed = now && strcmp(now, first) > 0;
        free(now);
        if (!changed) {
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
        }
    }
    assert_true(changed);
    free(first);
    assert_int_equal(repo_lock_check(a, &e), 0);
    /* removed under it: the refresher does not bring it back, and the check says so */
    char *name = strdup(a->lock->name);
    assert_int_equal(storage_remove(repo_storage(a), name, &e), 0);
    deadline = time_mono_ns() + (int64_t)10 * 1000000000;
    bool lost = false;
    while (!lost && time_mono_ns() < deadline) {
        pthread_mutex_lock(&a->lock->mu);
        lost = a->lock->lost;
        pthread_mutex_unlock(&a->lock->mu);
        if (!lost) {
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
        }
    }
    assert_true(lost);
    assert_int_equal(storage_exists(repo_storage(a), name, &e), 0);
    assert_int_equal(repo_lock_check(a, &e), -1);
    assert_err(e, ERR_LOCKED);
    free(name);
    repo_unlock(a); /* joins the thread (ASan: no leak) */
    repo_close(a);
    tmpdir_free(dir);
    unsetenv("CARIS_LOCK_REFRESH_SECONDS");
}

/* ---- waiting ----------------------------------------------------------------------------- */

struct waiter {
    struct repo *r;
    bool exclusive;
    int rc;
    struct err e;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool waiting;
    char conflict[1024];
};

static void on_wait(void *ctx, const char *conflict)
{
    struct waiter *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->waiting = true;
    snprintf(w->conflict, sizeof(w->conflict), "%s", conflict);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    w->rc = repo_lock(w->r, w->exclusive, "prune", &w->e);
    return NULL;
}

static void waiter_init(struct waiter *w, struct repo *r, bool exclusive, int64_t wait_ms)
{
    memset(w, 0, sizeof(*w));
    w->r = r;
    w->exclusive = exclusive;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    repo_set_lock_wait(r, wait_ms, on_wait, w);
}

static void waiter_until_waiting(struct waiter *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->waiting)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

static void waiter_destroy(struct waiter *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

static void test_wait(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *a = init_ok(dir);
    struct repo *b = open_ok(dir);
    struct err e = ERR_INIT;
    lock_ok(a, false, "backup files");

    /* a bounded wait that runs out: ERR_LOCKED, not before the deadline */
    struct waiter w;
    waiter_init(&w, b, true, 300);
    int64_t t0 = time_mono_ns();
    waiter_main(&w);
    int64_t took = time_mono_ns() - t0;
    assert_int_equal(w.rc, -1);
    assert_err(w.e, ERR_LOCKED);
    assert_true(took >= (int64_t)300 * 1000000);
    assert_true(w.waiting);
    assert_non_null(strstr(w.conflict, "repository locked by backup files on "));
    waiter_destroy(&w);

    /* a wait that ends when the holder lets go */
    waiter_init(&w, b, true, 60000);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
    waiter_until_waiting(&w);
    repo_unlock(a);
    pthread_join(th, NULL);
    if (w.rc != 0)
        fail_msg("the waiting exclusive locker failed: %s", w.e.msg);
    assert_non_null(b->lock);
    assert_true(b->lock->exclusive);
    lock_fails(a, false, &e);
    repo_unlock(b);
    waiter_destroy(&w);
    repo_close(a);
    repo_close(b);
    tmpdir_free(dir);
}

/* ---- a backup killed with SIGKILL, and one that an exclusive locker waits for ------------- */

struct child {
    pid_t pid;
    int to_child, from_child;
};

struct hold_ctx {
    int in, out;
    bool held;
};

/* The first progress report (the backup holds its lock and claim, and is reading files)
 * tells the parent and waits for its word. */
static void hold_progress(void *ctx, const struct caris_progress *p)
{
    (void)p;
    struct hold_ctx *h = ctx;
    if (h->held)
        return;
    h->held = true;
    char c = 'm';
    if (write(h->out, &c, 1) != 1 || read(h->in, &c, 1) != 1)
        _exit(3);
}

static struct child backup_child(const char *dir, const char *src)
{
    int down[2], up[2];
    assert_int_equal(pipe(down), 0);
    assert_int_equal(pipe(up), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        struct err e = ERR_INIT;
        struct repo *r = repo_open(dir, PW, &e);
        if (!r)
            _exit(4);
        struct hold_ctx h = {down[0], up[1], false};
        const char *paths[] = {src};
        struct files_backup_opts o = {
            .paths = paths, .npaths = 1, .threads = 2, .progress = hold_progress, .ctx = &h};
        struct caris_backup_result res;
        int rc = caris_files_backup_full(r, &o, &res, &e);
        caris_backup_result_free(&res);
        repo_close(r);
        _exit(rc == 0 ? 0 : 5);
    }
    close(down[0]);
    close(up[1]);
    struct child c = {pid, down[1], up[0]};
    char m;
    assert_int_equal(read(c.from_child, &m, 1), 1); /* mid-backup */
    return c;
}

static char *make_source(const char *dir)
{
    char *src = xasprintf("%s-src", dir);
    assert_int_equal(mkdir(src, 0700), 0);
    for (int i = 0; i < 3; i++) {
        char *p = xasprintf("%s/f%d", src, i);
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        for (int k = 0; k < 20000; k++)
            fprintf(f, "file %d line %d\n", i, k);
        fclose(f);
        free(p);
    }
    return src;
}

static size_t count_kind(json_t *l, const char *kind, int stale)
{
    size_t n = 0, i;
    json_t *x;
    json_array_foreach(
        l, i, x) if (strcmp(json_string_value(json_object_get(x, "kind")), kind) == 0 &&
                     (stale < 0 || json_is_true(json_object_get(x, "stale")) == (stale == 1))) n++;
    return n;
}

static void test_kill9_backup(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char *src = make_source(dir);
    struct repo *a = init_ok(dir);
    struct err e = ERR_INIT;
    struct child c = backup_child(dir, src);

    json_t *l = repo_lock_list(a, &e);
    assert_int_equal(count_kind(l, "lock", 0), 1);
    assert_int_equal(count_kind(l, "claim", 0), 1);
    json_decref(l);
    lock_fails(a, true, &e);
    char want[200];
    snprintf(want, sizeof(want), "repository locked by backup files on ");
    assert_non_null(strstr(e.msg, want));
    snprintf(want, sizeof(want), " pid %d since ", (int)c.pid);
    assert_non_null(strstr(e.msg, want));

    /* what a writer killed in the middle of a put leaves (the storage names them so) */
    put_text(a, "data/.tmp-0123456789abcdef", "partial pack");
    put_text(a, "index/.tmp-0123456789abcdef", "partial index");

    assert_int_equal(kill(c.pid, SIGKILL), 0);
    int st;
    assert_int_equal(waitpid(c.pid, &st, 0), c.pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    l = repo_lock_list(a, &e);
    assert_int_equal(count_kind(l, "lock", 1), 1);
    assert_int_equal(count_kind(l, "claim", 1), 1);
    json_decref(l);
    /* nothing but the holder of the exclusive lock may remove leftovers */
    json_t *removed = NULL;
    assert_int_equal(repo_leftovers_remove(a, &removed, &e), -1);
    assert_err(e, ERR_LOCKED);
    lock_ok(a, true, "prune"); /* the stale lock and claim do not block it */
    assert_int_equal(repo_leftovers_remove(a, &removed, &e), 0);
    assert_int_equal(count_kind(removed, "lock", -1), 1);
    assert_int_equal(count_kind(removed, "claim", -1), 1);
    assert_true(count_kind(removed, "temporary", -1) >= 1);
    json_decref(removed);
    json_t *left = repo_leftovers_list(a, &e);
    assert_int_equal(json_array_size(left), 0);
    json_decref(left);
    repo_unlock(a);
    assert_int_equal(count_locks(dir), 0);

    /* a new backup works */
    const char *paths[] = {src};
    struct files_backup_opts o = {.paths = paths, .npaths = 1, .threads = 2};
    struct caris_backup_result res;
    struct repo *r = open_ok(dir);
    if (caris_files_backup_full(r, &o, &res, &e) != 0)
        fail_msg("backup after the kill: %s", e.msg);
    caris_backup_result_free(&res);
    json_t *list = repo_snapshot_list(r, NULL, &e);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    repo_close(r);
    repo_close(a);
    tmpdir_free(src);
    tmpdir_free(dir);
}

static void test_exclusive_waits_for_backup(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char *src = make_source(dir);
    struct repo *a = init_ok(dir);
    struct child c = backup_child(dir, src);

    struct waiter w;
    waiter_init(&w, a, true, 120000);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
    waiter_until_waiting(&w);
    assert_non_null(strstr(w.conflict, "repository locked by backup files on "));
    /* let the backup finish: it commits, releases its claim and lock, and exits */
    char go = 'g';
    assert_int_equal(write(c.to_child, &go, 1), 1);
    int st;
    assert_int_equal(waitpid(c.pid, &st, 0), c.pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    pthread_join(th, NULL);
    if (w.rc != 0)
        fail_msg("the waiting exclusive locker failed: %s", w.e.msg);
    waiter_destroy(&w);
    /* nothing lost: the backup is there and verifies */
    struct err e = ERR_INIT;
    json_t *list = repo_snapshot_list(a, NULL, &e);
    assert_int_equal(json_array_size(list), 1);
    const char *id = json_string_value(json_object_get(json_array_get(list, 0), "id"));
    struct caris_verify_result res;
    struct repo *v = open_ok(dir);
    repo_unlock(a); /* verify takes a shared lock */
    if (caris_verify(v, id, NULL, &res, &e) != 0)
        fail_msg("verify: %s", e.msg);
    assert_true(res.valid);
    caris_verify_result_free(&res);
    json_decref(list);
    repo_close(v);
    close(c.to_child);
    close(c.from_child);
    repo_close(a);
    tmpdir_free(src);
    tmpdir_free(dir);
}

/* ---- state read before the lock is read again once it is held ------------------------------ */

struct objlist {
    char *v[64];
    size_t n;
};

static int collect_obj(void *ctx, const char *name, uint64_t size, struct err *e)
{
    (void)size;
    (void)e;
    struct objlist *l = ctx;
    if (l->n < 64)
        l->v[l->n++] = strdup(name);
    return 0;
}

static void test_lock_rereads_index(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *a = init_ok(dir);
    struct err e = ERR_INIT;
    uint8_t id[32];
    const char data[] = "a blob that a prune will remove";
    repo_chunk_id(a, data, sizeof(data), id);
    struct repo_writer *w = repo_writer_new(a, 1);
    assert_int_equal(repo_writer_add(w, 0, id, data, sizeof(data), &e), 1);
    assert_int_equal(repo_writer_flush(w, &e), 0);
    repo_writer_free(w);

    struct repo *c = open_ok(dir); /* reads the index now, without a lock */
    assert_true(repo_has_blob(c, id));
    /* a prune runs between c's open and c's lock: it removes the pack and its index file */
    lock_ok(a, true, "prune");
    struct objlist l = {0};
    assert_int_equal(storage_list(repo_storage(a), "index", collect_obj, &l, &e), 0);
    assert_int_equal(storage_list(repo_storage(a), "data", collect_obj, &l, &e), 0);
    assert_true(l.n >= 2);
    for (size_t i = 0; i < l.n; i++) {
        assert_int_equal(storage_remove(repo_storage(a), l.v[i], &e), 0);
        free(l.v[i]);
    }
    repo_unlock(a);
    assert_true(repo_has_blob(c, id)); /* what c read at open */
    lock_ok(c, false, "backup files");
    assert_false(repo_has_blob(c, id)); /* read again once locked: nothing to dedup against */
    repo_unlock(c);
    repo_close(c);
    repo_close(a);
    tmpdir_free(dir);
}

/* storage_put_existing on a directory: replaces in place (longer, then shorter), never
 * creates; written through the descriptor it opened, so a name removed after that stays
 * removed (what keeps the refresh thread from bringing back a lock `unlock --force` took). */
/* Two lockers that both passed the first look: each looks again after writing its file, so
 * of two conflicting locks the one that looks last backs off. Played here without timing:
 * the storage of a writes the other locker's file (taken from a real exclusive lock of b)
 * just before a's own, as if b had written it between a's first look and a's write. */
static const struct storage_ops *race_real;
static char *race_name;
static struct buf race_bytes;
static int race_put(struct storage *s, const char *name, const void *data, size_t len,
                    struct err *e)
{
    if (race_name && strncmp(name, "locks/", 6) == 0 && strcmp(name, race_name) != 0) {
        if (race_real->put(s, race_name, race_bytes.data, race_bytes.len, e) != 0)
            return -1;
        free(race_name);
        race_name = NULL; /* once */
    }
    return race_real->put(s, name, data, len, e);
}

static void test_race_second_look(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *a = init_ok(dir), *b = open_ok(dir);
    struct err e = ERR_INIT;
    lock_ok(b, true, "prune");
    json_t *l = repo_lock_list(b, &e);
    assert_int_equal(json_array_size(l), 1);
    race_name = xstrdup(json_string_value(json_object_get(json_array_get(l, 0), "object")));
    json_decref(l);
    assert_int_equal(storage_get(repo_storage(b), race_name, 1 << 16, &race_bytes, &e), 0);
    repo_unlock(b); /* gone: a's first look finds nothing */
    assert_int_equal(count_locks(dir), 0);

    struct storage *st = repo_storage(a);
    race_real = st->ops;
    struct storage_ops racing = *st->ops;
    racing.put = race_put;
    st->ops = &racing;
    lock_fails(a, false, &e); /* shared against the exclusive lock that appeared meanwhile */
    st->ops = race_real;
    assert_null(race_name); /* the other locker's file was written */
    assert_non_null(strstr(e.msg, "repository locked by prune on "));
    l = repo_lock_list(a, &e);
    assert_int_equal(json_array_size(l), 1); /* a removed its own file again */
    char *other = xstrdup(json_string_value(json_object_get(json_array_get(l, 0), "object")));
    json_decref(l);
    assert_int_equal(storage_remove(st, other, &e), 0);
    free(other);
    lock_ok(a, false, "backup files"); /* with the other gone, a locks */
    assert_int_equal(count_locks(dir), 1);
    repo_unlock(a);
    buf_free(&race_bytes);
    repo_close(a);
    repo_close(b);
    tmpdir_free(dir);
}

static void test_put_existing(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct err e = ERR_INIT;
    struct storage *s = storage_open(dir, false, &e);
    assert_non_null(s);
    struct buf b = {0};
    assert_int_equal(storage_put_existing(s, "locks/x", "a", 1, &e), 1);
    assert_int_equal(storage_exists(s, "locks/x", &e), 0);
    assert_int_equal(storage_put(s, "locks/x", "first", 5, &e), 0);
    assert_int_equal(storage_put_existing(s, "locks/x", "a longer one", 12, &e), 0);
    assert_int_equal(storage_get(s, "locks/x", 100, &b, &e), 0);
    assert_int_equal(b.len, 12);
    assert_memory_equal(b.data, "a longer one", 12);
    assert_int_equal(storage_put_existing(s, "locks/x", "short", 5, &e), 0);
    assert_int_equal(storage_get(s, "locks/x", 100, &b, &e), 0);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "short", 5);
    assert_int_equal(storage_remove(s, "locks/x", &e), 0);
    assert_int_equal(storage_put_existing(s, "locks/x", "back?", 5, &e), 1);
    assert_int_equal(storage_exists(s, "locks/x", &e), 0);
    buf_free(&b);
    storage_close(s);
    tmpdir_free(dir);
}

/* ---- a lock that lapsed (its holder stopped past the staleness timeout) ------------------- */

/* A holder stopped (SIGSTOP, a suspended machine) longer than the staleness timeout may have
 * been taken for stale, and a prune may have deleted what it deduplicated against. Once
 * resumed, its refresh thread used to rewrite the lock at once, after which repo_lock_check
 * passed and the backup committed a snapshot needing deleted blobs (the prune, which had
 * ignored the stale lock, found it live at its end and kept it). Now a lapsed lock is not
 * refreshed again and the check fails. The child holds the lock; the parent stops it. */
static bool lock_stale_now(const char *dir)
{
    struct repo *o = open_ok(dir);
    struct err e = ERR_INIT;
    json_t *l = repo_lock_list(o, &e);
    bool stale = l && json_array_size(l) == 1 &&
                 json_is_true(json_object_get(json_array_get(l, 0), "stale"));
    json_decref(l);
    repo_close(o);
    return stale;
}

/* Stops pid (SIGSTOP) and waits until the lock it holds in dir is stale to others (polled,
 * 10 s at most). */
static void stop_until_stale(pid_t pid, const char *dir)
{
    assert_int_equal(kill(pid, SIGSTOP), 0);
    bool stale = false;
    for (int64_t until = time_mono_ns() + (int64_t)10 * 1000000000;
         !(stale = lock_stale_now(dir)) && time_mono_ns() < until;) {
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    assert_true(stale);
}

static void test_lapse(void **state)
{
    (void)state;
    setenv("CARIS_LOCK_STALE_SECONDS", "1", 1);
    setenv("CARIS_LOCK_REFRESH_SECONDS", "0.1", 1);
    char *dir = tmpdir_new();
    repo_close(init_ok(dir));
    int up[2], down[2];
    assert_int_equal(pipe(up), 0);
    assert_int_equal(pipe(down), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        struct err e = ERR_INIT;
        struct repo *r = repo_open(dir, PW, &e);
        if (!r || repo_lock(r, false, "backup files", &e) != 0)
            _exit(10);
        char *name = strdup(r->lock->name);
        char c;
        /* stopped by the parent while it waits here, until its lock is stale to others */
        if (write(up[1], "x", 1) != 1 || read(down[0], &c, 1) != 1)
            _exit(11);
        /* resumed: a refresh thread that revived the lock would have written it within a few
         * of its 0.1 s intervals (polled for 0.5 s: what is shown is that none came) */
        bool revived = false;
        int64_t resumed = time_now_ns(), until = time_mono_ns() + (int64_t)500 * 1000000;
        while (!revived && time_mono_ns() < until) {
            char *ref = refreshed_of(r, name);
            int64_t t = 0;
            revived = ref && time_parse_iso(ref, &t) == 0 && t >= resumed - 50 * 1000000;
            free(ref);
            struct timespec ts = {0, 20000000};
            nanosleep(&ts, NULL);
        }
        err_clear(&e);
        int rc = repo_lock_check(r, &e);
        _exit(rc == -1 && e.code == ERR_LOCKED ? (revived ? 2 : 0) : 1);
    }
    close(up[1]);
    close(down[0]);
    char c;
    assert_int_equal(read(up[0], &c, 1), 1);
    /* the lock goes stale to everyone else 1 s after its last refresh */
    stop_until_stale(pid, dir);
    assert_int_equal(kill(pid, SIGCONT), 0);
    assert_int_equal(write(down[1], "g", 1), 1);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(up[0]);
    close(down[1]);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 1)
        fail_msg("the resumed holder's lock check passed: it would commit");
    if (WEXITSTATUS(status) == 2)
        fail_msg("the resumed holder refreshed its lapsed lock");
    assert_int_equal(WEXITSTATUS(status), 0);
    tmpdir_free(dir);
    unsetenv("CARIS_LOCK_STALE_SECONDS");
    unsetenv("CARIS_LOCK_REFRESH_SECONDS");
}

/* A holder whose snapshot write took past its lock's lapse (an S3 PUT retried for minutes, the
 * process stopped or the machine suspended in it, after the lock check) committed all the
 * same: the snapshot of a backup whose data a prune may have deleted. Now the lapse is
 * checked again after the write, which is then removed. The child commits, held between its
 * lock check and the write (CARIS_TEST_COMMIT_HOLD); the parent stops it there until its lock
 * is stale to others. */
static size_t snapshot_files(const char *dir)
{
    char *snaps = xasprintf("%s/snapshots", dir);
    DIR *d = opendir(snaps);
    size_t n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += de->d_name[0] != '.';
    if (d)
        closedir(d);
    free(snaps);
    return n;
}

static void test_commit_after_lapse(void **state)
{
    (void)state;
    /* (lapse 1.9 s: the child gets from its lock to the hold point well within it, even on a
     * loaded machine, its lock refreshed every 0.1 s meanwhile) */
    setenv("CARIS_LOCK_STALE_SECONDS", "2", 1);
    setenv("CARIS_LOCK_REFRESH_SECONDS", "0.1", 1);
    char *dir = tmpdir_new();
    repo_close(init_ok(dir));
    size_t before = snapshot_files(dir);
    char *hold = xasprintf("%s/commit-hold", dir), *held = xasprintf("%s.held", hold);
    FILE *hf = fopen(hold, "w");
    assert_non_null(hf);
    fclose(hf);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("CARIS_TEST_COMMIT_HOLD", hold, 1);
        struct err e = ERR_INIT;
        struct repo *r = repo_open(dir, PW, &e);
        if (!r || repo_lock(r, false, "backup files", &e) != 0)
            _exit(10);
        json_t *summary =
            json_pack("{s:s, s:s}", "id", "file_full_2026-12-07T11-00-00", "kind", "files");
        json_t *ref = json_pack("{s:[], s:i, s:s}", "chunks", "bytes", 0, "sha256", "");
        char name[65];
        int rc = repo_snapshot_commit(r, summary, ref, name, &e);
        _exit(rc == -1 && e.code == ERR_LOCKED ? 0 : 1);
    }
    /* held between its lock check and the write, then stopped there */
    for (int64_t until = time_mono_ns() + (int64_t)30 * 1000000000;
         access(held, F_OK) != 0 && time_mono_ns() < until;) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(access(held, F_OK), 0);
    stop_until_stale(pid, dir);
    assert_int_equal(unlink(hold), 0);
    assert_int_equal(kill(pid, SIGCONT), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 1)
        fail_msg("the holder committed its snapshot after its lock lapsed");
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(snapshot_files(dir), before); /* the snapshot written went again */
    free(hold);
    free(held);
    tmpdir_free(dir);
    unsetenv("CARIS_LOCK_STALE_SECONDS");
    unsetenv("CARIS_LOCK_REFRESH_SECONDS");
}

/* The exclusive holder's check also fails when a lock older than its own is live again (one it
 * took for stale, whose holder resumed or whose host's clock was behind); a lock made after its
 * own (a locker's first step, withdrawn at its second look) does not count. */
static void test_exclusive_sees_revived(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    struct repo *a = init_ok(dir);
    struct err e = ERR_INIT;
    lock_ok(a, true, "prune");
    assert_int_equal(repo_lock_check(a, &e), 0);
    char now[40], before[40], later[40];
    iso_ago(0, now);
    iso_ago(60, before);
    time_format_iso(time_now_ns() + (int64_t)60 * 1000000000, later, sizeof(later));
    const char *fmt = "{s:i, s:b, s:s, s:s, s:s, s:s}";
    put_json(a, "locks/0000000000000000000000000000aaaa",
             json_pack(fmt, "version", 2, "exclusive", 0, "operation", "backup files", "host",
                       "elsewhere", "created", later, "refreshed", later));
    assert_int_equal(repo_lock_check(a, &e), 0);
    put_json(a, "locks/0000000000000000000000000000bbbb",
             json_pack(fmt, "version", 2, "exclusive", 0, "operation", "backup files", "host",
                       "elsewhere", "created", before, "refreshed", now));
    assert_int_equal(repo_lock_check(a, &e), -1);
    assert_err(e, ERR_LOCKED);
    repo_unlock(a);
    repo_close(a);
    tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_existing),
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_stale_rules),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_refresh),
        cmocka_unit_test(test_wait),
        cmocka_unit_test(test_kill9_backup),
        cmocka_unit_test(test_exclusive_waits_for_backup),
        cmocka_unit_test(test_lock_rereads_index),
        cmocka_unit_test(test_race_second_look),
        cmocka_unit_test(test_lapse),
        cmocka_unit_test(test_commit_after_lapse),
        cmocka_unit_test(test_exclusive_sees_revived),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

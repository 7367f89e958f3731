/* The daemon's side of `wal push`: a queue of WAL files handed over the control socket (each
 * as an open descriptor, SCM_RIGHTS) and one thread that stores them through a repository
 * handle of its own, opened once: the Argon2id derivation and the index load are paid at the
 * first push, not at every one. A push is answered only once caris_wal_push_fd returned, that
 * is once the file's packs, index and record are durable (or it failed): the exit code
 * PostgreSQL's archive_command sees is the truth.
 *
 * Why its own handle and thread: a repository handle runs one operation at a time
 * (caris/repo.h), and a backup job may run for an hour on the scheduler's; archiving must not
 * wait behind it. Pushes are stored one after the other, in the order they came. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/open.h"
#include "caris/wal.h"
#include "caris/walwindow.h"

#include "internal.h"

#define WALQ_MAX 64                    /* queued pushes; more are answered "busy" and push alone */
#define WALQ_LOCK_WAIT_MS (120 * 1000) /* under the client's answer timeout (300 s) */
/* The archive's range and gaps for the status are worked out again when the queue is empty,
 * at most this often: it reads every WAL record (~0.5 ms each). */
#define WALQ_WINDOW_EVERY_NS (30ll * 1000000000)

struct walq_item {
    struct walq_item *next;
    int client_fd, file_fd;
    bool get; /* `wal get`: file_fd is the client's temporary file to write name into */
    char name[WALQ_NAME_MAX];
    int64_t queued_ns;
};

struct walq {
    struct daemon *d;
    const struct config *cfg;
    char *repo_path, *backup_dir;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct walq_item *head, *tail;
    size_t len;
    bool stop;
    pthread_t thread;
    struct repo *r; /* the thread's; opened at the first push */
    json_t *known;  /* the WAL records read so far (caris_wal_push_fd_cached) */
    uint64_t pushed, already, failed;
    uint64_t served, missing, get_failed; /* `wal get`s */
    json_t *window;                       /* caris_wal_window's answer, for the status (under mu) */
    int64_t window_mono_ns;               /* when it was worked out; 0: never */
    char window_at[40];                   /* the same, as an ISO time */
    bool window_stale;                    /* a push since */
};

static void send_answer(int fd, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    if (!text)
        return;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = send(fd, text + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* the client hung up: it reports failure, PostgreSQL retries */
        off += (size_t)w;
    }
    (void)!send(fd, "\n", 1, MSG_NOSIGNAL);
    free(text);
}

json_t *walq_error_json(const char *code, const struct err *e)
{
    json_t *o = json_pack("{s:s, s:s}", "code", code, "message", e->msg);
    if (*e->hint)
        json_object_set_new(o, "hint", json_string(e->hint));
    return json_pack("{s:o}", "error", o);
}

static void op_log(void *ctx, enum log_level l, const char *msg)
{
    struct walq *q = ctx;
    daemon_log(q->d, l, "wal", "%s", msg);
}

/* Opens the thread's repository handle if it is not open yet (at the first push or get; a
 * handle that could not open is tried again at the next one). */
static void ensure_open(struct walq *q, struct err *e)
{
    if (q->r)
        return;
    struct caris_open_opts oo = {.repo_path = q->repo_path, .backup_dir = q->backup_dir};
    struct caris_open_result res = {0};
    if (config_encryption_key(q->cfg, &oo.key, e) == 0)
        q->r = caris_repo_open(&oo, &res, e);
    json_decref(res.state);
    /* a prune (exclusive lock) is waited for rather than failed: PostgreSQL would retry,
     * but only after a minute once three tries failed */
    if (q->r)
        repo_set_lock_wait(q->r, WALQ_LOCK_WAIT_MS, NULL, NULL);
}

/* `wal get`: the archived file written into the client's temporary file (every chunk
 * authenticated, the whole file's SHA-256 checked, fsynced) before the answer "ok"; the client
 * renames it only then. The record cache is the pushes' one: a get lists the WAL records (to
 * see pushes by others and retention) but reads only those not read before. */
static void get_one(struct walq *q, struct walq_item *it)
{
    struct err e = ERR_INIT;
    json_t *ans = NULL;
    ensure_open(q, &e);
    struct caris_op op = {.log = op_log, .log_ctx = q, .actor = "wal get"};
    if (!q->known)
        q->known = json_object();
    int rc = q->r ? caris_wal_get_fd_cached(q->r, it->name, it->file_fd, q->known, &op, &e) : -1;
    /* Test-only: CARIS_TEST_WAL_GET_CRASH=1 ends the daemon as kill -9 would once the whole
     * file is in the client's temporary file but before the answer: the worst moment. */
    const char *crash = getenv("CARIS_TEST_WAL_GET_CRASH");
    if (rc == 0 && crash && strcmp(crash, "1") == 0)
        _exit(137);
    pthread_mutex_lock(&q->mu);
    if (rc == 0)
        q->served++;
    else if (e.code == ERR_NOT_FOUND)
        q->missing++;
    else
        q->get_failed++;
    pthread_mutex_unlock(&q->mu);
    if (rc == 0) {
        ans = json_pack("{s:b, s:s}", "ok", 1, "name", it->name);
    } else {
        if (e.code != ERR_NOT_FOUND) /* not there: PostgreSQL asks past the end every time */
            daemon_log(q->d, LOG_ERROR, "wal", "wal get %s failed: %s", it->name, e.msg);
        /* the temporary file keeps nothing of a failed get (the client, which does not rename
         * it on an error answer, removes it too) */
        (void)!ftruncate(it->file_fd, 0);
        ans = walq_error_json(err_code_name(e.code), &e);
    }
    send_answer(it->client_fd, ans);
    json_decref(ans);
}

static void push_one(struct walq *q, struct walq_item *it)
{
    struct err e = ERR_INIT;
    json_t *ans = NULL;
    ensure_open(q, &e);
    struct caris_wal_push_result pr;
    struct caris_op op = {.log = op_log, .log_ctx = q, .actor = "wal push"};
    if (!q->known)
        q->known = json_object();
    if (q->r && caris_wal_push_fd_cached(q->r, it->file_fd, it->name, it->name, q->known, &op, &pr,
                                         &e) == 0) {
        char hex[65];
        cx_hex(pr.sha256, 32, hex);
        ans = json_pack("{s:b, s:s, s:b, s:I, s:s}", "ok", 1, "name", it->name, "alreadyArchived",
                        pr.already, "bytes", (json_int_t)pr.bytes, "sha256", hex);
        pthread_mutex_lock(&q->mu);
        q->pushed++;
        if (pr.already)
            q->already++;
        q->window_stale = true;
        pthread_mutex_unlock(&q->mu);
    } else {
        ans = walq_error_json(err_code_name(e.code), &e);
        daemon_log(q->d, LOG_ERROR, "wal", "wal push %s failed: %s", it->name, e.msg);
        pthread_mutex_lock(&q->mu);
        q->failed++;
        pthread_mutex_unlock(&q->mu);
        /* a handle that could not open is tried again at the next push (the key may have been
         * wrong, the repository missing); an open one stays */
    }
    send_answer(it->client_fd, ans);
    json_decref(ans);
}

/* Works out the archive's range per timeline, its gaps and the recovery window again (the
 * thread's handle, under a shared lock so that a prune does not remove records under it). */
static void refresh_window(struct walq *q)
{
    struct err e = ERR_INIT;
    json_t *w = NULL;
    if (repo_lock(q->r, false, "wal status", &e) == 0) {
        w = caris_wal_window(q->r, NULL, &e);
        repo_unlock(q->r);
    }
    if (!w)
        daemon_log(q->d, LOG_WARN, "wal", "cannot work out the WAL archive's range: %s", e.msg);
    pthread_mutex_lock(&q->mu);
    if (w) {
        json_decref(q->window);
        q->window = w;
        time_format_iso(time_now_ns(), q->window_at, sizeof(q->window_at));
    }
    q->window_mono_ns = time_mono_ns();
    q->window_stale = false;
    pthread_mutex_unlock(&q->mu);
}

static void *walq_main(void *arg)
{
    struct walq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stop) {
            if (q->r && q->window_stale &&
                time_mono_ns() - q->window_mono_ns >= WALQ_WINDOW_EVERY_NS) {
                pthread_mutex_unlock(&q->mu);
                refresh_window(q);
                pthread_mutex_lock(&q->mu);
                continue;
            }
            if (q->r && q->window_stale) { /* again once the interval has passed */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec +=
                    1 + (time_t)((WALQ_WINDOW_EVERY_NS - (time_mono_ns() - q->window_mono_ns)) /
                                 1000000000);
                pthread_cond_timedwait(&q->cv, &q->mu, &ts);
            } else {
                pthread_cond_wait(&q->cv, &q->mu);
            }
        }
        if (!q->head) /* stop, and nothing left */
            break;
        struct walq_item *it = q->head;
        q->head = it->next;
        if (!q->head)
            q->tail = NULL;
        q->len--;
        bool stopping = q->stop;
        pthread_mutex_unlock(&q->mu);
        if (stopping) {
            /* not stored: the client stores it alone (it is told to) */
            struct err e = ERR_INIT;
            err_set(&e, ERR_FAILURE, NULL, "the daemon is stopping");
            json_t *ans = walq_error_json("stopping", &e);
            send_answer(it->client_fd, ans);
            json_decref(ans);
        } else if (it->get) {
            get_one(q, it);
        } else {
            push_one(q, it);
        }
        close(it->file_fd);
        close(it->client_fd);
        free(it);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

int walq_start(struct daemon *d, const struct config *cfg, const char *repo_path,
               const char *backup_dir, struct walq **out, struct err *e)
{
    struct walq *q = xcalloc(1, sizeof(*q));
    q->d = d;
    q->cfg = cfg;
    q->repo_path = xstrdup(repo_path);
    q->backup_dir = xstrdup(backup_dir);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    if (pthread_create(&q->thread, NULL, walq_main, q) != 0) {
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->cv);
        free(q->repo_path);
        free(q->backup_dir);
        free(q);
        return err_set(e, ERR_FAILURE, NULL, "cannot start the WAL archiving thread");
    }
    *out = q;
    return 0;
}

int walq_submit(struct walq *q, int client_fd, int file_fd, const char *name, bool get)
{
    pthread_mutex_lock(&q->mu);
    if (q->stop || q->len >= WALQ_MAX) {
        pthread_mutex_unlock(&q->mu);
        return -1;
    }
    struct walq_item *it = xcalloc(1, sizeof(*it));
    it->client_fd = client_fd;
    it->file_fd = file_fd;
    it->get = get;
    snprintf(it->name, sizeof(it->name), "%s", name);
    it->queued_ns = time_mono_ns();
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->len++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

json_t *walq_status(struct walq *q)
{
    if (!q)
        return json_null();
    pthread_mutex_lock(&q->mu);
    json_t *s = json_pack("{s:I, s:I, s:I, s:I}", "queued", (json_int_t)q->len, "pushed",
                          (json_int_t)q->pushed, "alreadyArchived", (json_int_t)q->already,
                          "failed", (json_int_t)q->failed);
    json_object_set_new(s, "gets",
                        json_pack("{s:I, s:I, s:I}", "served", (json_int_t)q->served, "missing",
                                  (json_int_t)q->missing, "failed", (json_int_t)q->get_failed));
    /* the archive's range per timeline, gaps and recovery window, as of archiveAt */
    json_object_set_new(s, "archive", q->window ? json_deep_copy(q->window) : json_null());
    json_object_set_new(s, "archiveAt", q->window ? json_string(q->window_at) : json_null());
    pthread_mutex_unlock(&q->mu);
    return s;
}

void walq_stop(struct walq *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    if (q->r)
        repo_close(q->r);
    json_decref(q->window);
    json_decref(q->known);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q->repo_path);
    free(q->backup_dir);
    free(q);
}

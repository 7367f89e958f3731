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
#include <sys/stat.h>
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
/* Read-ahead of `wal get` (the spool): a recovery asks for one segment after the other, each
 * through a process of its own, and replays it before asking for the next. While it replays,
 * the thread, idle, reads the next segments into memory, each whole, every chunk authenticated
 * and its SHA-256 checked (caris_wal_load_cached): only verified bytes are kept, and a
 * segment that fails to load is not kept (its get then fails as it would have). A segment is
 * served from the spool once and dropped. At most WALQ_SPOOL_AHEAD segments after the last
 * one asked for and WALQ_SPOOL_BYTES in all; the
 * spool is emptied once no get came for WALQ_SPOOL_IDLE_NS (the recovery is over) and when
 * the daemon stops. Nothing is written to disk but into the client's file. */
#define WALQ_SPOOL_AHEAD 4
#define WALQ_SPOOL_SLOTS WALQ_SPOOL_AHEAD
#define WALQ_SPOOL_BYTES (96u << 20)
#define WALQ_SPOOL_IDLE_NS (60ll * 1000000000)

/* The archive's range and gaps for the status are worked out again when the queue is empty,
 * at most this often: it reads every WAL record (~0.5 ms each). */
#define WALQ_WINDOW_EVERY_NS (30ll * 1000000000)

struct walq_item {
    struct walq_item *next;
    int client_fd, file_fd;
    bool get;        /* `wal get`: file_fd is the client's temporary file to write name into */
    uint32_t follow; /* `wal get --timeline N`: the timeline the recovery follows (0: latest) */
    char name[WALQ_NAME_MAX];
    int64_t queued_ns;
};

struct spool_entry {
    char name[25]; /* "" for a free slot */
    struct buf data;
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
    /* the spool: the walq thread's only */
    struct spool_entry spool[WALQ_SPOOL_SLOTS];
    char ahead_from[25];   /* the last segment asked for: read ahead after it ("": not now) */
    uint64_t ahead_segsz;  /* its size */
    int64_t last_get_ns;   /* when the last get came (monotonic) */
    int64_t spool_idle_ns; /* WALQ_SPOOL_IDLE_NS, or the tests' CARIS_TEST_WAL_SPOOL_IDLE_MS */
    size_t spooled;        /* bytes in the spool now (for the status, under mu) */
    uint64_t spool_hits, spool_loaded;
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
    /* a repository moved or replaced under the daemon: pushes went on into the moved
     * directory, "archived", where no recovery looks (as runs did: daemon.c, repo_fresh) */
    if (q->r && storage_moved(repo_storage(q->r))) {
        daemon_log(q->d, LOG_WARN, "wal",
                   "the repository at %s is not the directory the daemon opened (moved, "
                   "replaced or removed since): opening it again",
                   q->repo_path);
        repo_close(q->r);
        q->r = NULL;
    }
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

static size_t spool_bytes(const struct walq *q)
{
    size_t n = 0;
    for (size_t i = 0; i < WALQ_SPOOL_SLOTS; i++)
        n += q->spool[i].name[0] ? q->spool[i].data.len : 0;
    return n;
}

static struct spool_entry *spool_find(struct walq *q, const char *name)
{
    for (size_t i = 0; i < WALQ_SPOOL_SLOTS; i++)
        if (q->spool[i].name[0] && strcmp(q->spool[i].name, name) == 0)
            return &q->spool[i];
    return NULL;
}

static void spool_drop(struct spool_entry *s)
{
    buf_free(&s->data);
    s->name[0] = '\0';
}

static void spool_account(struct walq *q)
{
    size_t n = spool_bytes(q);
    pthread_mutex_lock(&q->mu);
    q->spooled = n;
    pthread_mutex_unlock(&q->mu);
}

static void spool_clear(struct walq *q)
{
    for (size_t i = 0; i < WALQ_SPOOL_SLOTS; i++)
        spool_drop(&q->spool[i]);
    q->ahead_from[0] = '\0';
}

/* After a get of name (a segment of segsz bytes): segments of its timeline before it are not
 * asked for again, the next ones are read ahead. */
static void spool_after_get(struct walq *q, const char *name, uint64_t segsz)
{
    q->last_get_ns = time_mono_ns();
    char next[25];
    if (caris_wal_next_segment(name, segsz, next) != 0)
        return; /* a .history or a .backup file: reading ahead goes on as it was */
    for (size_t i = 0; i < WALQ_SPOOL_SLOTS; i++) {
        struct spool_entry *s = &q->spool[i];
        /* same timeline (first 8 characters), this or an earlier segment (names of one
         * timeline and segment size sort as their segments): a segment asked for again (the
         * end of a recovery does) is read again from the repository, checked again */
        if (s->name[0] && strncmp(s->name, name, 8) == 0 && strcmp(s->name, name) <= 0)
            spool_drop(s);
    }
    snprintf(q->ahead_from, sizeof(q->ahead_from), "%s", name);
    q->ahead_segsz = segsz;
    spool_account(q);
}

/* The next segment to read ahead into spool slot *slot: -1 when there is none (the spool is
 * full, or holds the next WALQ_SPOOL_AHEAD already). */
static int spool_next(struct walq *q, char out[25], struct spool_entry **slot)
{
    if (!q->ahead_from[0] || !q->r)
        return -1;
    if (spool_bytes(q) + q->ahead_segsz > WALQ_SPOOL_BYTES)
        return -1;
    *slot = NULL;
    for (size_t i = 0; i < WALQ_SPOOL_SLOTS && !*slot; i++)
        if (!q->spool[i].name[0])
            *slot = &q->spool[i];
    if (!*slot)
        return -1;
    char cur[25];
    snprintf(cur, sizeof(cur), "%s", q->ahead_from);
    for (int k = 0; k < WALQ_SPOOL_AHEAD; k++) {
        if (caris_wal_next_segment(cur, q->ahead_segsz, out) != 0)
            return -1;
        if (!spool_find(q, out))
            return 0;
        snprintf(cur, sizeof(cur), "%s", out);
    }
    return -1;
}

/* One segment read ahead into the spool (the thread is idle). A segment that is not archived
 * (yet), too large or fails to load ends the reading ahead until the next get: that get then
 * reads it itself, and reports what is wrong with it. */
static void spool_read_ahead(struct walq *q)
{
    char name[25];
    struct spool_entry *slot;
    if (spool_next(q, name, &slot) != 0) {
        q->ahead_from[0] = '\0';
        return;
    }
    struct err e = ERR_INIT;
    struct buf b = {0};
    if (caris_wal_load_cached(q->r, name, q->known, (size_t)q->ahead_segsz, &b, &e) != 0 ||
        b.len != q->ahead_segsz) {
        buf_free(&b);
        q->ahead_from[0] = '\0';
        return;
    }
    snprintf(slot->name, sizeof(slot->name), "%s", name);
    slot->data = b;
    pthread_mutex_lock(&q->mu);
    q->spool_loaded++;
    pthread_mutex_unlock(&q->mu);
    spool_account(q);
}

/* A segment of the spool into the client's temporary file (written from its start, fsynced):
 * the bytes were checked when they were read ahead. */
static int spool_serve(struct spool_entry *s, int fd, struct err *e)
{
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0)
        return err_sys(e, errno, NULL, "cannot write the temporary file of %s", s->name);
    const uint8_t *p = s->data.data;
    size_t n = s->data.len;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return err_sys(e, w == 0 ? EIO : errno, NULL, "cannot write the temporary file of %s",
                           s->name);
        p += w;
        n -= (size_t)w;
    }
    if (fsync(fd) != 0)
        return err_sys(e, errno, NULL, "cannot write the temporary file of %s", s->name);
    return 0;
}

/* `wal get`: the archived file written into the client's temporary file (every chunk
 * authenticated, the whole file's SHA-256 checked, fsynced) before the answer "ok"; the client
 * renames it only then. The record cache is the pushes' one: a get lists the WAL records (to
 * see pushes by others and retention) but reads only those not read before. A segment read
 * ahead (the spool) is served from memory. */
static void get_one(struct walq *q, struct walq_item *it)
{
    struct err e = ERR_INIT;
    json_t *ans = NULL;
    ensure_open(q, &e);
    struct caris_op op = {.log = op_log, .log_ctx = q, .actor = "wal get"};
    if (!q->known)
        q->known = json_object();
    struct spool_entry *hit = spool_find(q, it->name);
    int rc;
    uint64_t segsz = 0;
    if (hit) {
        rc = spool_serve(hit, it->file_fd, &e);
        segsz = hit->data.len;
        pthread_mutex_lock(&q->mu);
        q->spool_hits++;
        pthread_mutex_unlock(&q->mu);
    } else {
        rc = q->r ? caris_wal_get_fd_cached(q->r, it->name, it->file_fd, q->known, it->follow, &op,
                                            &e)
                  : -1;
        struct stat st;
        if (rc == 0 && fstat(it->file_fd, &st) == 0)
            segsz = (uint64_t)st.st_size;
    }
    if (rc == 0)
        spool_after_get(q, it->name, segsz);
    /* Test-only: CARIS_TEST_WAL_GET_CRASH=1 ends the daemon as kill -9 would once the whole
     * file is in the client's temporary file but before the answer: the worst moment. */
    const char *crash = getenv("CARIS_TEST_WAL_GET_CRASH");
    if (rc == 0 && crash && strcmp(crash, "1") == 0)
        _exit(137);
    /* only the archive's own "not there" may reach the client as such (it exits 1 and the
     * recovery ends there): a repository that cannot be opened, or a file missing under it
     * (a system error, whose errno the answer does not carry), is a failure */
    if (rc != 0 && e.code == ERR_NOT_FOUND && (!q->r || e.sys_errno != 0))
        e.code = ERR_IO;
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
    /* the handle opened now, not at the first push or get: the Argon2id derivation and the
     * index load (a second or more on a busy machine) would otherwise delay the first `wal
     * get` of a recovery that starts right after the daemon (a restore on a new machine). A
     * repository that cannot be opened yet is tried again at the first push or get. */
    struct err oe = ERR_INIT;
    ensure_open(q, &oe);
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stop) {
            if (q->ahead_from[0]) {
                /* idle: one segment read ahead, then the queue is looked at again */
                pthread_mutex_unlock(&q->mu);
                spool_read_ahead(q);
                pthread_mutex_lock(&q->mu);
                continue;
            }
            if (q->last_get_ns && time_mono_ns() - q->last_get_ns >= q->spool_idle_ns) {
                spool_clear(q); /* no get for a while: the recovery is over */
                q->last_get_ns = 0;
                q->spooled = 0; /* (mu is held here) */
                continue;
            }
            if (q->r && q->window_stale &&
                time_mono_ns() - q->window_mono_ns >= WALQ_WINDOW_EVERY_NS) {
                pthread_mutex_unlock(&q->mu);
                refresh_window(q);
                pthread_mutex_lock(&q->mu);
                continue;
            }
            if (q->r && q->window_stale) { /* again once the interval has passed */
                struct timespec ts = time_mono_deadline(
                    WALQ_WINDOW_EVERY_NS - (time_mono_ns() - q->window_mono_ns) + 1000000000);
                pthread_cond_timedwait(&q->cv, &q->mu, &ts);
            } else if (q->last_get_ns) { /* the spool is emptied once gets stop coming */
                struct timespec ts = time_mono_deadline(
                    q->spool_idle_ns - (time_mono_ns() - q->last_get_ns) + 1000000000);
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
    q->spool_idle_ns = WALQ_SPOOL_IDLE_NS;
    const char *idle = getenv("CARIS_TEST_WAL_SPOOL_IDLE_MS");
    if (idle && atoi(idle) > 0)
        q->spool_idle_ns = (int64_t)atoi(idle) * 1000000;
    pthread_mutex_init(&q->mu, NULL);
    cond_init_monotonic(&q->cv);
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

int walq_submit(struct walq *q, int client_fd, int file_fd, const char *name, bool get,
                uint32_t follow)
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
    it->follow = follow;
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
    json_object_set_new(
        s, "gets",
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "served", (json_int_t)q->served, "missing",
                  (json_int_t)q->missing, "failed", (json_int_t)q->get_failed, "readAhead",
                  (json_int_t)q->spool_loaded, "servedReadAhead", (json_int_t)q->spool_hits,
                  "readAheadBytes", (json_int_t)q->spooled));
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
    spool_clear(q);
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

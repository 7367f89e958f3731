/* Repository locks, backup-id claims and the leftovers of interrupted writers.
 *
 * A lock is a file locks/<32 hex> naming its holder (host, boot id, pid and the process's
 * start time, so a reused pid is not taken for the holder), the operation and when it was
 * taken; a thread rewrites it with a new "refreshed" time while it is held. A lock is stale
 * when its process is gone on this host or when it was not refreshed for the staleness
 * timeout. Stale locks are ignored and may be removed by anyone. Claims (locks/claim-<id>)
 * name the lock of the backup that made them and are stale when that lock is gone or stale.
 * The format and the rules are in docs/REPOSITORY-FORMAT.md, "Locks". */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOCK_FORMAT 2
#define CLAIM_PREFIX "locks/claim-"
/* a claim that takes over a stale one: locks/claim-<name>.take-<32 hex of the stale one's lock> */
#define TAKE_SEP ".take-"
#define DEFAULT_REFRESH_NS ((int64_t)300 * 1000000000)        /* 5 minutes */
#define DEFAULT_STALE_NS ((int64_t)1800 * 1000000000)         /* 30 minutes */
#define OLD_FORMAT_LEASE_NS ((int64_t)24 * 3600 * 1000000000) /* locks of format 1 */
#define MAX_LOCK_FILE 65536

/* Test knobs (documented in README, "Locks"): shorter intervals so tests need not wait
 * minutes. Seconds, fractions allowed. */
static int64_t knob_ns(const char *var, int64_t dflt)
{
    const char *v = getenv(var);
    if (!v || !*v)
        return dflt;
    char *end;
    double s = strtod(v, &end);
    if (*end || !(s > 0) || s > 1e7)
        return dflt;
    return (int64_t)(s * 1e9);
}

static int64_t refresh_ns(void)
{
    return knob_ns("CARIS_LOCK_REFRESH_SECONDS", DEFAULT_REFRESH_NS);
}

static int64_t stale_ns(void)
{
    return knob_ns("CARIS_LOCK_STALE_SECONDS", DEFAULT_STALE_NS);
}

/* How long a holder may go without a refresh before it must assume that others took its lock
 * for stale: the staleness timeout less a margin for clocks that differ a little (a refresh
 * interval, at most half the timeout). A lock that lapsed once is never refreshed again: a
 * prune may have ignored it meanwhile (and deleted what its holder deduplicated against), and a
 * refresh would make it look live again to that prune's final look. */
static int64_t lapse_ns(void)
{
    int64_t st = stale_ns(), m = refresh_ns();
    if (m > st / 2)
        m = st / 2;
    return st - m;
}

/* A clock that keeps counting while the process is stopped (SIGSTOP) and while the machine is
 * suspended, which CLOCK_MONOTONIC does not: the time others see pass on their wall clocks. */
static int64_t lapse_clock_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
        return time_mono_ns();
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- process identity ---------------------------------------------------------------- */

/* Start time of a process: 1 found, 0 no such process, -1 unknown (no /proc). */
/* 1 with *start (its start time, in clock ticks after boot) and *zombie (it has exited,
 * its parent has not collected it yet: it holds nothing any more), 0 when there is no such
 * process, -1 when it cannot be told. */
static int proc_start_state(long long pid, long long *start, bool *zombie)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%lld/stat", pid);
    struct buf b = {0};
    struct err e = ERR_INIT;
    if (fs_read_all(path, &b, &e) != 0) {
        buf_free(&b);
        return e.code == ERR_NOT_FOUND ? 0 : -1;
    }
    buf_append_u8(&b, 0);
    /* "pid (comm) state ppid ...": comm may hold spaces and ')', so start after the last
     * ')'. The field after it is field 3; starttime is field 22. */
    const char *p = strrchr((const char *)b.data, ')');
    int rc = -1;
    if (p) {
        p++;
        *zombie = p[0] == ' ' && p[1] == 'Z';
        for (int field = 3; field < 22 && p; field++)
            p = strchr(p + 1, ' ');
        if (p) {
            char *end;
            long long v = strtoll(p + 1, &end, 10);
            if (end != p + 1 && v >= 0) {
                *start = v;
                rc = 1;
            }
        }
    }
    buf_free(&b);
    return rc;
}

static int proc_start(long long pid, long long *start)
{
    bool zombie;
    return proc_start_state(pid, start, &zombie);
}

static void ident_self(struct ident *id)
{
    memset(id, 0, sizeof(*id));
    gethostname(id->host, sizeof(id->host) - 1);
    struct buf b = {0};
    struct err e = ERR_INIT;
    if (fs_read_all("/proc/sys/kernel/random/boot_id", &b, &e) == 0) {
        size_t n = b.len < sizeof(id->boot_id) - 1 ? b.len : sizeof(id->boot_id) - 1;
        memcpy(id->boot_id, b.data, n);
        while (n && (id->boot_id[n - 1] == '\n' || id->boot_id[n - 1] == ' '))
            n--;
        id->boot_id[n] = '\0';
    }
    buf_free(&b);
    ssize_t n = readlink("/proc/self/ns/pid", id->pid_ns, sizeof(id->pid_ns) - 1);
    id->pid_ns[n > 0 ? n : 0] = '\0';
    id->pid = (long long)getpid();
    if (proc_start(id->pid, &id->start) != 1)
        id->start = 0;
}

/* ---- the lock this handle holds ------------------------------------------------------ */

static json_t *holder_json(const struct lock_holder *h, const char *refreshed)
{
    return json_pack("{s:i, s:b, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s}", "version", LOCK_FORMAT,
                     "exclusive", h->exclusive, "operation", h->operation, "host", h->id.host,
                     "boot_id", h->id.boot_id, "pid_ns", h->id.pid_ns, "pid", (json_int_t)h->id.pid,
                     "pid_start", (json_int_t)h->id.start, "created", h->created, "refreshed",
                     refreshed);
}

/* Writes the lock with the time now as "refreshed": created (storage_put), or, with
 * only_existing, rewritten only where it still is (storage_put_existing: 1 when it is gone,
 * removed by `unlock --force` or judged stale). 0, 1, or -1 on error. */
static int holder_write(struct lock_holder *h, bool only_existing, struct err *e)
{
    char now[40];
    time_format_iso(time_now_ns(), now, sizeof(now));
    json_t *j = holder_json(h, now);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (!text)
        return err_set(e, ERR_FAILURE, NULL, "out of memory");
    int rc = only_existing ? storage_put_existing(h->r->st, h->name, text, strlen(text), e)
                           : storage_put(h->r->st, h->name, text, strlen(text), e);
    free(text);
    return rc;
}

/* Rewrites the lock every refresh interval until told to stop. A lock file that has
 * disappeared (removed by `unlock --force`, or by someone who judged it stale) is not
 * written again: the holder learns it at repo_lock_check and commits nothing. On a directory
 * repository the rewrite is made in place, so a removal between the check and the write
 * cannot bring the file back; on S3 (no conditional overwrite here) it can, in that window. */
static void *refresh_main(void *arg)
{
    struct lock_holder *h = arg;
    int64_t interval = refresh_ns();
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        struct timespec until = time_mono_deadline(interval);
        while (!h->stop && pthread_cond_timedwait(&h->cv, &h->mu, &until) != ETIMEDOUT)
            ;
        if (h->stop || h->lost)
            continue;
        int64_t t0 = lapse_clock_ns();
        if (t0 - h->last_refresh_ns > lapse_ns()) {
            /* stopped (SIGSTOP, a suspended machine) or unable to write for too long */
            h->lost = h->lapsed = true;
            continue;
        }
        pthread_mutex_unlock(&h->mu);
        struct err e = ERR_INIT;
        int rc = holder_write(h, true, &e);
        pthread_mutex_lock(&h->mu);
        if (rc == 1)
            h->lost = true;
        if (rc == 0 && lapse_clock_ns() - h->last_refresh_ns > lapse_ns())
            /* the write landed past the lapse (an S3 PUT retried for minutes, the process
             * stopped in it): others may have removed the lock as stale meanwhile, and this
             * write brought it back looking fresh; this holder must not commit */
            h->lost = h->lapsed = true;
        else if (rc == 0)
            h->last_refresh_ns = t0;
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* Stops and joins the refresh thread (if it runs), so that it cannot write the file again. */
static void holder_stop(struct lock_holder *h)
{
    if (!h->thread_started)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    h->thread_started = false;
}

static void holder_free(struct lock_holder *h)
{
    if (!h)
        return;
    holder_stop(h);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h->name);
    free(h->operation);
    free(h);
}

/* ---- reading the locks directory ----------------------------------------------------- */

struct lk_entry {
    char *object;
    bool claim;
    bool parsed;    /* JSON object */
    int format;     /* 1 (no "version") or 2 */
    bool exclusive; /* unreadable locks count as exclusive: we cannot know */
    json_t *j;      /* the parsed file, or NULL */
    const char *operation, *host, *boot_id, *pid_ns, *created, *refreshed, *lock_ref;
    long long pid, pid_start;
    int64_t mtime_ns;
    bool stale, mine;
    const char *taken_by; /* a stale claim standing for the live claim that took it over */
    char reason[160];
    bool denied; /* unreadable because this user may not read it (another user's file) */
};

struct lk_scan {
    struct repo *r;
    struct lk_entry *v;
    size_t n;
    const char *skip; /* an object not to read nor list (NULL: none) */
};

static const char *jstr(json_t *j, const char *k)
{
    return json_string_value(json_object_get(j, k));
}

static int lk_collect(void *ctx, const char *name, uint64_t size, struct err *e)
{
    struct lk_scan *s = ctx;
    if (s->skip && strcmp(name, s->skip) == 0)
        return 0;
    struct lk_entry x = {0};
    x.object = xstrdup(name);
    x.claim = strncmp(name, CLAIM_PREFIX, strlen(CLAIM_PREFIX)) == 0;
    struct err le = ERR_INIT;
    if (storage_mtime(s->r->st, name, &x.mtime_ns, &le) != 0) {
        free(x.object);
        if (le.code == ERR_NOT_FOUND)
            return 0; /* removed meanwhile */
        /* Any other failure leaves open whether a live holder is there: passing over it let a
         * prune run beside a backup (or a backup beside a prune), which then deleted what the
         * backup had deduplicated against. */
        *e = le;
        return err_wrap(e, "cannot tell whether the lock %s is held", name);
    }
    struct buf b = {0};
    if (size <= MAX_LOCK_FILE && storage_get(s->r->st, name, MAX_LOCK_FILE, &b, &le) == 0)
        x.j = json_loadb((const char *)b.data, b.len, 0, NULL);
    else if (le.code == ERR_NOT_FOUND) {
        buf_free(&b);
        free(x.object);
        return 0;
    } else if (le.sys_errno == EACCES || le.sys_errno == EPERM) {
        x.denied = true;
    }
    buf_free(&b);
    if (x.j && !json_is_object(x.j)) {
        json_decref(x.j);
        x.j = NULL;
    }
    x.exclusive = true;
    if (x.j) {
        x.parsed = true;
        x.format = json_integer_value(json_object_get(x.j, "version")) >= 2 ? 2 : 1;
        x.exclusive = json_is_true(json_object_get(x.j, "exclusive"));
        x.operation = jstr(x.j, "operation");
        x.host = jstr(x.j, "host");
        x.boot_id = jstr(x.j, "boot_id");
        x.pid_ns = jstr(x.j, "pid_ns");
        x.created = jstr(x.j, "created");
        x.refreshed = jstr(x.j, "refreshed");
        x.lock_ref = jstr(x.j, "lock");
        x.pid = (long long)json_integer_value(json_object_get(x.j, "pid"));
        x.pid_start = (long long)json_integer_value(json_object_get(x.j, "pid_start"));
    }
    s->v = xrealloc(s->v, xsize(s->n + 1, sizeof(*s->v), 0));
    s->v[s->n++] = x;
    return 0;
}

static void lk_scan_free(struct lk_scan *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].object);
        json_decref(s->v[i].j);
    }
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

/* Is the holder's process gone? Only answerable on its own host, in the same boot (another
 * boot id: the host restarted, or another machine carries the same name) and the same pid
 * namespace (containers sharing a host name and kernel): otherwise only the refresh timeout
 * tells. */
static bool same_machine(const struct lk_entry *x, const struct ident *self)
{
    return x->host && strcmp(x->host, self->host) == 0 &&
           !(x->boot_id && *x->boot_id && *self->boot_id &&
             strcmp(x->boot_id, self->boot_id) != 0) &&
           !(x->pid_ns && *x->pid_ns && *self->pid_ns && strcmp(x->pid_ns, self->pid_ns) != 0);
}

static bool holder_gone(const struct lk_entry *x, const struct ident *self, char *why, size_t n)
{
    if (!same_machine(x, self) || x->pid <= 0)
        return false;
    if (kill((pid_t)x->pid, 0) != 0 && errno == ESRCH) {
        snprintf(why, n, "process %lld is gone", x->pid);
        return true;
    }
    long long start;
    bool zombie = false;
    int st = proc_start_state(x->pid, &start, &zombie);
    if (st == 1 && x->pid_start > 0 && start != x->pid_start) {
        snprintf(why, n, "process %lld is gone (its pid is now another process's)", x->pid);
        return true;
    }
    if (st == 1 && zombie && (x->pid_start <= 0 || start == x->pid_start)) {
        snprintf(why, n, "process %lld has exited", x->pid);
        return true;
    }
    return false;
}

static int64_t age_of(const char *iso, int64_t now)
{
    int64_t t;
    if (!iso || time_parse_iso(iso, &t) != 0)
        return -1;
    return now - t;
}

static const struct lk_entry *lk_find(const struct lk_scan *s, const char *object)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].object, object) == 0)
            return &s->v[i];
    return NULL;
}

/* A claim whose lock the listing did not show: a directory listing that runs while files
 * come and go may show a new claim without the lock its backup wrote just before it. Look
 * once more; an error counts as present. */
static bool lock_file_absent(struct repo *r, const char *name)
{
    struct err e = ERR_INIT;
    return storage_exists(r->st, name, &e) == 0;
}

/* Decides which entries are stale (and why) and which belong to this handle. */
static void lk_judge(struct lk_scan *s)
{
    struct ident self;
    ident_self(&self);
    int64_t now = time_now_ns(), stale = stale_ns();
    const struct lock_holder *mine = s->r->lock;
    bool any_live_lock = false;
    /* locks first: a claim's fate follows its lock's */
    for (size_t i = 0; i < s->n; i++) {
        struct lk_entry *x = &s->v[i];
        if (x->claim)
            continue;
        x->mine = mine && strcmp(x->object, mine->name) == 0;
        int64_t age;
        if (x->mine) {
            /* ours: alive by definition */
        } else if (!x->parsed) {
            age = now - x->mtime_ns;
            if (age > stale) {
                x->stale = true;
                snprintf(x->reason, sizeof(x->reason), "unreadable and %lld min old",
                         (long long)(age / 60000000000));
            }
        } else if (holder_gone(x, &self, x->reason, sizeof(x->reason))) {
            x->stale = true;
        } else if (x->format >= 2) {
            age = age_of(x->refreshed ? x->refreshed : x->created, now);
            if (age < 0)
                age = now - x->mtime_ns;
            if (age > stale) {
                x->stale = true;
                snprintf(x->reason, sizeof(x->reason), "not refreshed for %lld min",
                         (long long)(age / 60000000000));
            }
        } else {
            /* format 1 was never refreshed: it keeps the lease it was written with */
            age = age_of(x->created, now);
            if (age < 0)
                age = now - x->mtime_ns;
            if (age > OLD_FORMAT_LEASE_NS) {
                x->stale = true;
                snprintf(x->reason, sizeof(x->reason), "older than 24 hours (format 1 lock)");
            }
        }
        if (!x->stale && !x->mine)
            any_live_lock = true;
    }
    for (size_t i = 0; i < s->n; i++) {
        struct lk_entry *x = &s->v[i];
        if (!x->claim)
            continue;
        if (x->parsed && x->lock_ref) {
            char ref[64];
            snprintf(ref, sizeof(ref), "locks/%.32s", x->lock_ref);
            const struct lk_entry *l = lk_find(s, ref);
            x->mine = mine && strcmp(ref, mine->name) == 0;
            if (x->mine) {
                /* ours */
            } else if (!l && lock_file_absent(s->r, ref)) {
                x->stale = true;
                snprintf(x->reason, sizeof(x->reason), "the lock of its backup (%s) is gone", ref);
            } else if (!l) {
                /* its lock appeared after the listing: alive */
            } else if (l->stale) {
                x->stale = true;
                snprintf(x->reason, sizeof(x->reason), "the lock of its backup is stale: %s",
                         l->reason);
            } else if (holder_gone(x, &self, x->reason, sizeof(x->reason))) {
                x->stale = true;
            }
        } else {
            /* A claim of format 1 names no owner. Its backup took its lock before the claim
             * and released the claim before the lock, so with no live lock left (but ours:
             * this handle writes its claims whole before it looks) it is an orphan. An unreadable
             * claim is one being written (create, then write) by a backup that holds a live lock,
             * or a leftover: the same rule decides. */
            int64_t age = now - x->mtime_ns;
            if (!any_live_lock) {
                x->stale = true;
                snprintf(x->reason, sizeof(x->reason), "%s and no live lock remains",
                         x->parsed ? "names no owner (format 1)" : "unreadable");
            } else if (age > OLD_FORMAT_LEASE_NS) {
                x->stale = true;
                snprintf(x->reason, sizeof(x->reason), "%s and older than 24 hours",
                         x->parsed ? "names no owner (format 1)" : "unreadable");
            }
        }
    }
    /* A stale claim that a live claim takes over (repo_claim_or_take: its name followed by
     * TAKE_SEP) still stands: removing it would let a fresh claim of the name start beside
     * the one that took it over. Judged on the claims' own fates, before this pass. */
    bool *own = xcalloc(s->n ? s->n : 1, sizeof(bool));
    for (size_t i = 0; i < s->n; i++)
        own[i] = s->v[i].stale;
    for (size_t i = 0; i < s->n; i++) {
        struct lk_entry *x = &s->v[i];
        if (!x->claim || !x->stale)
            continue;
        size_t l = strlen(x->object);
        for (size_t k = 0; k < s->n; k++) {
            const struct lk_entry *y = &s->v[k];
            if (k == i || !y->claim || own[k] || strncmp(y->object, x->object, l) != 0 ||
                strncmp(y->object + l, TAKE_SEP, strlen(TAKE_SEP)) != 0)
                continue;
            x->stale = false;
            x->reason[0] = 0;
            x->taken_by = y->object;
            break;
        }
    }
    free(own);
}

/* skip: the lock file this handle has just written (lock_try's second look), which no
 * judgement needs (lk_conflict passes over it) and reading it would cost requests. */
static int lk_scan_run_skip(struct repo *r, struct lk_scan *s, const char *skip, struct err *e)
{
    s->r = r;
    s->v = NULL;
    s->n = 0;
    s->skip = skip;
    if (storage_list(r->st, "locks", lk_collect, s, e) != 0) {
        lk_scan_free(s);
        return -1;
    }
    lk_judge(s);
    return 0;
}

static int lk_scan_run(struct repo *r, struct lk_scan *s, struct err *e)
{
    return lk_scan_run_skip(r, s, NULL, e);
}

/* "backup files on host pid 123 since 2026-..." */
static void lk_describe(const struct lk_entry *x, char *out, size_t n)
{
    if (!x->parsed)
        snprintf(out, n, "an unreadable lock file %s%s", x->object,
                 x->denied ? " (another user's: this user may not read it)" : "");
    else
        snprintf(out, n, "%s on %s pid %lld since %s", x->operation ? x->operation : "?",
                 x->host ? x->host : "?", x->pid, x->created ? x->created : "?");
}

static json_t *lk_json(const struct lk_entry *x)
{
    json_t *j = json_pack("{s:s, s:s, s:b, s:b, s:b}", "object", x->object, "kind",
                          x->claim ? "claim" : "lock", "stale", x->stale, "mine", x->mine,
                          "readable", x->parsed);
    if (!x->claim)
        json_object_set_new(j, "exclusive", json_boolean(x->exclusive));
    if (x->parsed) {
        json_object_set_new(j, "format", json_integer(x->format));
        const char *keys[] = {"operation", "host", "created", "refreshed", "lock"};
        const char *vals[] = {x->operation, x->host, x->created, x->refreshed, x->lock_ref};
        for (size_t k = 0; k < 5; k++)
            if (vals[k])
                json_object_set_new(j, keys[k], json_string(vals[k]));
        if (x->pid > 0)
            json_object_set_new(j, "pid", json_integer(x->pid));
    }
    if (x->stale)
        json_object_set_new(j, "reason", json_string(x->reason));
    char d[600];
    lk_describe(x, d, sizeof(d));
    json_object_set_new(j, "description", json_string(d));
    return j;
}

/* The first live lock (not ours, not a claim) that conflicts with the wanted mode. */
static const struct lk_entry *lk_conflict(const struct lk_scan *s, bool exclusive,
                                          const char *self_name)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct lk_entry *x = &s->v[i];
        if (x->claim || x->stale || (self_name && strcmp(x->object, self_name) == 0))
            continue;
        if (exclusive || x->exclusive)
            return x;
    }
    return NULL;
}

/* ---- taking and releasing ------------------------------------------------------------ */

void repo_set_lock_wait(struct repo *r, int64_t wait_ms, repo_lock_wait_fn waiting, void *ctx)
{
    r->lock_wait_ms = wait_ms > 0 ? wait_ms : 0;
    r->lock_waiting = waiting;
    r->lock_waiting_ctx = ctx;
}

static int conflict_error(struct repo *r, const struct lk_entry *x, struct err *e)
{
    char d[600], hint[512];
    lk_describe(x, d, sizeof(d));
    struct ident self;
    ident_self(&self);
    if (x->parsed && !x->denied && !same_machine(x, &self))
        /* `unlock` cannot tell whether that process lives: it keeps such a lock as live */
        snprintf(hint, sizeof(hint),
                 "it was taken on another machine (or before this one restarted, or in another "
                 "container): wait for it, or retry with --lock-wait DURATION; it counts as stale "
                 "%lld minutes after it was last written; if that process is certainly gone, "
                 "`caris-backup unlock --force` removes it (%s in %s)",
                 (long long)(stale_ns() / 60000000000), x->object, r->path);
    else if (!x->parsed && !x->denied)
        /* `unlock` keeps it as live too until it is that old: its holder cannot be looked up */
        snprintf(hint, sizeof(hint),
                 "it cannot be read (damaged?), so whether its holder runs is unknown: wait, or "
                 "retry with --lock-wait DURATION; it counts as stale %lld minutes after it was "
                 "last written; if no caris-backup command is running on this repository, "
                 "`caris-backup unlock --force` removes it (%s in %s)",
                 (long long)(stale_ns() / 60000000000), x->object, r->path);
    else if (x->denied)
        /* unlock as this user cannot judge it either: it would keep it as live */
        snprintf(hint, sizeof(hint),
                 "a caris-backup command of another user (root?) holds it or left it: wait for "
                 "it, or run `caris-backup unlock` as that user (it counts as stale 30 minutes "
                 "after it was last written); run every command on this repository as one user "
                 "(%s in %s)",
                 x->object, r->path);
    else
        snprintf(hint, sizeof(hint),
                 "wait for it to finish, or retry with --lock-wait DURATION; if that process is "
                 "gone, `caris-backup unlock` removes its lock (%s in %s)",
                 x->object, r->path);
    return err_set(e, ERR_LOCKED, hint, "repository locked by %s", d);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One attempt: 0 taken, 1 conflict (described in *e), -1 error. */
static int lock_try(struct repo *r, bool exclusive, const char *operation, struct err *e)
{
    struct lk_scan s;
    if (lk_scan_run(r, &s, e) != 0)
        return -1;
    const struct lk_entry *c = lk_conflict(&s, exclusive, NULL);
    if (c) {
        conflict_error(r, c, e);
        lk_scan_free(&s);
        return 1;
    }
    lk_scan_free(&s);

    struct lock_holder *h = xcalloc(1, sizeof(*h));
    h->r = r;
    h->exclusive = exclusive;
    h->depth = 1;
    h->operation = xstrdup(operation);
    uint8_t rnd[16];
    cx_random(rnd, sizeof(rnd));
    cx_hex(rnd, sizeof(rnd), h->hex);
    h->name = xasprintf("locks/%s", h->hex);
    time_format_iso(time_now_ns(), h->created, sizeof(h->created));
    ident_self(&h->id);
    pthread_mutex_init(&h->mu, NULL);
    cond_init_monotonic(&h->cv);
    int64_t t0 = lapse_clock_ns();
    if (holder_write(h, false, e) != 0) {
        /* a write that failed may have been stored all the same (an S3 PUT given up on, by a
         * Ctrl-C or a timeout, that the server completed): removed, or it stood as a live lock
         * to other hosts for the staleness time. (A request begun after a cancel goes on.) */
        struct err ie = ERR_INIT;
        storage_remove(r->st, h->name, &ie);
        holder_free(h);
        return -1;
    }
    h->last_refresh_ns = t0;
    /* Two lockers can both pass the first look (each before the other wrote its file). Each
     * looks again after writing: of any two, the one that looks last sees the other, so two
     * conflicting locks never both stand. Both may back off; the waiting loop retries. */
    if (lk_scan_run_skip(r, &s, h->name, e) != 0) {
        struct err ie = ERR_INIT;
        storage_remove(r->st, h->name, &ie);
        holder_free(h);
        return -1;
    }
    c = lk_conflict(&s, exclusive, h->name);
    if (c) {
        conflict_error(r, c, e);
        lk_scan_free(&s);
        struct err ie = ERR_INIT;
        storage_remove(r->st, h->name, &ie);
        holder_free(h);
        return 1;
    }
    /* stale locks (not claims): their holders may have left packs no index lists */
    struct namelist stale = {0};
    for (size_t i = 0; i < s.n; i++)
        if (s.v[i].stale && !s.v[i].claim && !s.v[i].mine) {
            stale.v = xrealloc(stale.v, xsize(stale.n + 1, sizeof(char *), 0));
            stale.v[stale.n++] = xstrdup(s.v[i].object);
        }
    lk_scan_free(&s);
    if (pthread_create(&h->thread, NULL, refresh_main, h) != 0) {
        struct err ie = ERR_INIT;
        storage_remove(r->st, h->name, &ie);
        holder_free(h);
        return err_set(e, ERR_FAILURE, NULL, "cannot start the lock refresh thread");
    }
    h->thread_started = true;
    r->lock = h;
    /* The handle read the index before it held a lock: a prune that ran in between may
     * have removed packs it lists. The exclusive holder (prune) must also know every blob
     * that backups committed in between (while it waited for them, say): it reads the
     * index again whatever changed; no writer runs while it holds the lock. */
    if (stale.n)
        qsort(stale.v, stale.n, sizeof(char *), cmp_name);
    /* (and prune needs the truth about data/: a full listing, whatever the open cache says) */
    int rc = exclusive ? repo_index_reload_full(r, e) : repo_index_refresh(r, &stale, e);
    namelist_free(&stale);
    if (rc != 0) {
        repo_lock_release(r);
        return -1;
    }
    return 0;
}

/* Operations that only read the repository they lock (copy: its source; its destination on a
 * read-only file system fails at its first write). */
static bool reads_only(const char *operation)
{
    static const char *const ops[] = {"check",
                                      "diff",
                                      "dump",
                                      "find",
                                      "ls",
                                      "mount",
                                      "show",
                                      "verify",
                                      "test-restore",
                                      "restore files",
                                      "wal get",
                                      "wal status",
                                      "forget --dry-run",
                                      "prune --dry-run",
                                      "restore database",
                                      "restore database --physical",
                                      "copy",
                                      NULL};
    for (size_t i = 0; ops[i]; i++)
        if (strcmp(operation, ops[i]) == 0)
            return true;
    return false;
}

int repo_lock(struct repo *r, bool exclusive, const char *operation, struct err *e)
{
    if (r->lock) {
        if (exclusive && !r->lock->exclusive)
            return err_set(e, ERR_FAILURE, NULL,
                           "cannot take the exclusive lock of %s for %s: this process holds a "
                           "shared lock there (%s)",
                           r->path, operation, r->lock->operation);
        r->lock->depth++;
        return 0;
    }
    int64_t deadline = time_mono_ns() + r->lock_wait_ms * 1000000;
    int64_t pause = 20 * 1000000;
    bool told = false;
    for (;;) {
        int rc = lock_try(r, exclusive, operation, e);
        if (rc < 0 && !exclusive && e->sys_errno == EROFS && reads_only(operation)) {
            /* A repository on a read-only file system (an off-site disk or a snapshot mounted
             * read-only for a disaster recovery) is read without a lock: nothing can prune it
             * through this mount, every read is authenticated, and what writes fails on its
             * own writes. Refusing here made every restore of it impossible. */
            repo_warn(r, "locks",
                      "the repository is on a read-only file system: %s reads it without a lock",
                      operation);
            err_clear(e);
            return 0;
        }
        if (rc <= 0)
            return rc;
        int64_t left = deadline - time_mono_ns();
        if (left <= 0)
            return -1; /* e describes the conflict */
        if (!told && r->lock_waiting) {
            r->lock_waiting(r->lock_waiting_ctx, e->msg);
            told = true;
        }
        /* Poll with a growing pause (20 ms .. 1 s) and a little jitter, so that two lockers
         * that backed off from each other do not retry in step. */
        uint8_t j;
        cx_random(&j, 1);
        int64_t p = pause + (pause / 4) * j / 255;
        if (p > left)
            p = left;
        struct timespec ts = {(time_t)(p / 1000000000), (long)(p % 1000000000)};
        nanosleep(&ts, NULL);
        if (pause < 1000000000)
            pause *= 2;
        err_clear(e);
    }
}

/* A lock or claim of ours that could not be removed (credentials that may write but not
 * delete, the store failing) stays behind: said, as a stale one found later looks like the
 * leftover of a crash. */
static void release_failed(struct repo *r, const char *name, const char *what, const struct err *e)
{
    repo_warn(r, name,
              "this %s could not be removed: %s; it stays until `caris-backup unlock` removes it "
              "(with permission to delete in the repository)",
              what, e->msg);
}

void repo_lock_release(struct repo *r)
{
    struct lock_holder *h = r->lock;
    if (!h)
        return;
    r->lock = NULL;
    /* stop the refresher before removing, so that it cannot write the file again */
    holder_stop(h);
    struct err e = ERR_INIT;
    if (storage_remove(r->st, h->name, &e) != 0)
        release_failed(r, h->name, "lock", &e);
    holder_free(h);
}

void repo_unlock(struct repo *r)
{
    if (!r->lock)
        return;
    if (--r->lock->depth > 0)
        return;
    repo_lock_release(r);
    /* the packs kept open for reading are closed with the lock: a handle kept open (the
     * daemon's) saw a pack replaced under its name by the old file, and kept the space of
     * packs another process pruned (audit K2, K5) */
    storage_drop_open(r->st);
}

/* repo_lock_check's first half, which reads only memory: the lock lapsed (not refreshed for
 * the staleness timeout). *lost: its file is known to be gone (NULL: not asked). */
static int lock_lapse_check(struct lock_holder *h, bool *lost_out, struct err *e)
{
    pthread_mutex_lock(&h->mu);
    bool lost = h->lost, lapsed = h->lapsed;
    int64_t since = lapse_clock_ns() - h->last_refresh_ns;
    pthread_mutex_unlock(&h->mu);
    if (lost_out)
        *lost_out = lost;
    if (lapsed || since > lapse_ns())
        return err_set(e, ERR_LOCKED,
                       "the process was stopped or suspended, or the repository was not writable, "
                       "for too long; run the operation again",
                       "the lock of this %s (%s) was not refreshed for %lld s, so other processes "
                       "may have taken it for stale (and a prune may have deleted data it uses): "
                       "nothing was committed",
                       h->operation, h->name, (long long)(since / 1000000000));
    return 0;
}

int repo_lock_lapse_check(struct repo *r, struct err *e)
{
    return r->lock ? lock_lapse_check(r->lock, NULL, e) : 0;
}

int repo_lock_check(struct repo *r, struct err *e)
{
    struct lock_holder *h = r->lock;
    if (!h)
        return 0;
    bool lost;
    if (lock_lapse_check(h, &lost, e) != 0)
        return -1;
    int ex = lost ? 0 : storage_exists(r->st, h->name, e);
    if (ex < 0)
        return -1;
    if (ex == 0)
        return err_set(e, ERR_LOCKED,
                       "someone removed it (`caris-backup unlock --force`?); run the operation "
                       "again",
                       "the lock of this %s (%s) was removed while it ran: nothing was committed",
                       h->operation, h->name);
    if (h->exclusive) {
        /* The exclusive holder (prune) ignored the locks it judged stale. One of them live again
         * (its holder was stopped and resumed, or this host's clock jumped ahead) belongs to a
         * process that may commit what references data this prune is deleting. A lock made
         * after ours is a locker's first step that its second look withdraws: not counted. */
        struct lk_scan s;
        if (lk_scan_run(r, &s, e) != 0)
            return -1;
        int64_t ours = 0, t;
        time_parse_iso(h->created, &ours);
        const struct lk_entry *c = NULL;
        for (size_t i = 0; i < s.n && !c; i++) {
            const struct lk_entry *x = &s.v[i];
            if (x->claim || x->stale || x->mine)
                continue;
            if (x->created && time_parse_iso(x->created, &t) == 0 && ours && t > ours)
                continue;
            c = x;
        }
        if (c) {
            char d[600];
            lk_describe(c, d, sizeof(d));
            int rc = err_set(e, ERR_LOCKED, "run the operation again once it is done",
                             "another operation holds a live lock beside the exclusive lock of "
                             "this %s: %s (taken for stale before, its holder has resumed)",
                             h->operation, d);
            lk_scan_free(&s);
            return rc;
        }
        lk_scan_free(&s);
    }
    return 0;
}

void repo_lock_explain(struct repo *r, struct err *e)
{
    if (!r || !r->lock || !e || !err_is_set(e) || e->code == ERR_LOCKED)
        return;
    struct err le = ERR_INIT;
    if (repo_lock_check(r, &le) == 0 || le.code != ERR_LOCKED)
        return;
    char then[sizeof(e->msg)];
    snprintf(then, sizeof(then), "%s", e->msg);
    *e = le;
    size_t l = strlen(e->msg);
    snprintf(e->msg + l, sizeof(e->msg) - l, " (then: %s)", then);
}

/* ---- claims -------------------------------------------------------------------------- */

static int check_claim_name(const char *name, struct err *e)
{
    bool ok = *name && strlen(name) < 200;
    for (const char *p = name; *p && ok; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
             *p == '-' || *p == '_' || *p == '.';
    return ok && name[0] != '.' ? 0
                                : err_set(e, ERR_USAGE, NULL, "invalid claim name '%.80s'", name);
}

int repo_claim(struct repo *r, const char *name, struct err *e)
{
    if (check_claim_name(name, e) != 0)
        return -1;
    struct lock_holder *h = r->lock;
    if (!h)
        return err_set(e, ERR_FAILURE, NULL, "cannot claim %s in %s without holding a lock there",
                       name, r->path);
    char *obj = xasprintf(CLAIM_PREFIX "%s", name);
    json_t *j =
        json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "version", LOCK_FORMAT,
                  "claim", name, "lock", h->hex, "operation", h->operation, "host", h->id.host,
                  "boot_id", h->id.boot_id, "pid_ns", h->id.pid_ns, "pid", (json_int_t)h->id.pid,
                  "pid_start", (json_int_t)h->id.start, "created", h->created);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    /* A stale claim is not reused: two backups could both remove it and both claim the
     * name. The caller moves on to the next name; unlock and prune remove the stale one. */
    int rc = storage_put_new(r->st, obj, text, strlen(text), e);
    free(text);
    free(obj);
    return rc;
}

void repo_claim_release(struct repo *r, const char *name)
{
    struct err e = ERR_INIT;
    if (check_claim_name(name, &e) != 0)
        return;
    char *obj = xasprintf(CLAIM_PREFIX "%s", name);
    if (storage_remove(r->st, obj, &e) != 0)
        release_failed(r, obj, "claim", &e);
    free(obj);
}

int repo_claim_or_take(struct repo *r, const char *name, char **held, char *holder, size_t n,
                       struct err *e)
{
    *held = NULL;
    if (n)
        holder[0] = 0;
    char *cur = xstrdup(name);
    int rc = -1;
    /* a bounded number of looks: each either claims, moves one step down a chain of takeovers
     * (each step a holder that died), or finds a claim removed meanwhile */
    for (int round = 0; round < 8; round++) {
        int c = repo_claim(r, cur, e);
        if (c < 0)
            goto out;
        if (c == 0) {
            if (strcmp(cur, name) == 0) {
                *held = cur;
                return 0;
            }
            /* The claim taken over must still stand: `unlock` may have removed it between our
             * look and our claim, and a fresh claim of the name could then start beside us. */
            /* (cur is name, then TAKE_SEP and a lock's hex once per step: the last '.' starts
             * the last step) */
            char *parent = xstrndup(cur, (size_t)(strrchr(cur, '.') - cur));
            char *obj = xasprintf(CLAIM_PREFIX "%s", parent);
            int ex = storage_exists(r->st, obj, e);
            free(obj);
            free(parent);
            if (ex == 1) {
                *held = cur;
                return 0;
            }
            repo_claim_release(r, cur);
            if (ex < 0)
                goto out;
            free(cur);
            cur = xstrdup(name);
            continue;
        }
        struct lk_scan s;
        if (lk_scan_run(r, &s, e) != 0)
            goto out;
        char *obj = xasprintf(CLAIM_PREFIX "%s", cur);
        const struct lk_entry *x = lk_find(&s, obj);
        free(obj);
        if (!x) {
            lk_scan_free(&s); /* removed meanwhile: claim it again */
            continue;
        }
        if (n) {
            const struct lk_entry *t = x->taken_by ? lk_find(&s, x->taken_by) : NULL;
            lk_describe(t ? t : x, holder, n);
        }
        char *next = NULL;
        if (x->stale && x->parsed && x->lock_ref && strlen(x->lock_ref) == 32 &&
            strspn(x->lock_ref, "0123456789abcdef") == 32 &&
            strlen(cur) + strlen(TAKE_SEP) + 32 < 200)
            next = xasprintf("%s" TAKE_SEP "%s", cur, x->lock_ref);
        lk_scan_free(&s);
        if (!next) {
            rc = 1; /* live, or stale in a way that names no lock: `unlock` decides */
            goto out;
        }
        free(cur);
        cur = next;
    }
    rc = 1;
out:
    free(cur);
    return rc;
}

void repo_claim_release_all(struct repo *r, const char *held)
{
    /* the claims taken over first (outermost first), then our own */
    for (const char *p = strstr(held, TAKE_SEP); p; p = strstr(p + 1, TAKE_SEP)) {
        char *parent = xstrndup(held, (size_t)(p - held));
        repo_claim_release(r, parent);
        free(parent);
    }
    repo_claim_release(r, held);
}

/* ---- listing and cleaning ------------------------------------------------------------ */

json_t *repo_lock_list(struct repo *r, struct err *e)
{
    struct lk_scan s;
    if (lk_scan_run(r, &s, e) != 0)
        return NULL;
    json_t *out = json_array();
    for (size_t i = 0; i < s.n; i++)
        json_array_append_new(out, lk_json(&s.v[i]));
    lk_scan_free(&s);
    return out;
}

struct tmp_list {
    struct repo *r;
    json_t *out;
    int64_t now;
};

static int tmp_collect(void *ctx, const char *name, uint64_t size, struct err *e)
{
    (void)e;
    struct tmp_list *t = ctx;
    int64_t mt;
    struct err me = ERR_INIT;
    if (storage_mtime(t->r->st, name, &mt, &me) != 0)
        return 0; /* renamed or removed meanwhile */
    int64_t age = t->now - mt;
    json_array_append_new(t->out, json_pack("{s:s, s:s, s:I, s:I}", "object", name, "kind",
                                            "temporary", "size", (json_int_t)size, "age_s",
                                            (json_int_t)(age > 0 ? age / 1000000000 : 0)));
    return 0;
}

json_t *repo_leftovers_list(struct repo *r, struct err *e)
{
    struct tmp_list t = {r, json_array(), time_now_ns()};
    if (storage_list_temp(r->st, tmp_collect, &t, e) != 0) {
        json_decref(t.out);
        return NULL;
    }
    return t.out;
}

/* keys/ and locks/ are written without the exclusive lock (key add/remove, lockers writing
 * their lock file): their temporary files may belong to a writer that is alive. */
static bool tmp_needs_age(const char *object)
{
    return strncmp(object, "keys/", 5) == 0 || strncmp(object, "locks/", 6) == 0;
}

json_t *repo_leftovers_removable(struct repo *r, struct err *e)
{
    struct lk_scan s;
    if (lk_scan_run(r, &s, e) != 0)
        return NULL;
    json_t *out = json_array();
    for (size_t i = 0; i < s.n; i++)
        if (s.v[i].stale)
            json_array_append_new(out, lk_json(&s.v[i]));
    lk_scan_free(&s);
    json_t *tmp = repo_leftovers_list(r, e);
    if (!tmp) {
        json_decref(out);
        return NULL;
    }
    size_t i;
    json_t *t;
    int64_t min_age_s = stale_ns() / 1000000000;
    json_array_foreach(tmp, i, t)
    {
        if (!tmp_needs_age(jstr(t, "object")) ||
            json_integer_value(json_object_get(t, "age_s")) > min_age_s)
            json_array_append(out, t);
    }
    json_decref(tmp);
    return out;
}

int repo_leftovers_remove(struct repo *r, json_t **removed, struct err *e)
{
    if (removed)
        *removed = NULL;
    if (!r->lock || !r->lock->exclusive)
        return err_set(e, ERR_LOCKED, "take the exclusive lock first (repo_lock)",
                       "removing the leftovers of %s needs its exclusive lock", r->path);
    json_t *todo = repo_leftovers_removable(r, e);
    if (!todo)
        return -1;
    json_t *out = json_array();
    int rc = 0;
    size_t i;
    json_t *t;
    json_array_foreach(todo, i, t)
    {
        if ((rc = storage_remove(r->st, jstr(t, "object"), e)) != 0)
            break;
        json_array_append(out, t);
    }
    json_decref(todo);
    if (rc == 0 && removed)
        *removed = out;
    else
        json_decref(out);
    return rc;
}

int repo_unlock_stale(struct repo *r, bool force, json_t **report, struct err *e)
{
    *report = NULL;
    struct lk_scan s;
    if (lk_scan_run(r, &s, e) != 0)
        return -1;
    json_t *removed = json_array(), *kept = json_array();
    int rc = 0;
    for (size_t i = 0; i < s.n && rc == 0; i++) {
        struct lk_entry *x = &s.v[i];
        if (x->mine)
            continue;
        if (x->stale || force) {
            rc = storage_remove(r->st, x->object, e);
            /* Its holder may have left packs no index lists, and no later lock will see it
             * stale: the next open lists data/ (and adopts them) instead of trusting the
             * open cache. */
            if (!x->claim)
                opencache_drop(r);
            json_t *j = lk_json(x);
            if (!x->stale)
                json_object_set_new(j, "forced", json_true());
            if (rc == 0)
                json_array_append_new(removed, j);
            else
                json_decref(j);
        } else {
            json_array_append_new(kept, lk_json(x));
        }
    }
    lk_scan_free(&s);
    json_t *left = NULL;
    json_t *leftovers_removed = json_array();
    if (rc == 0 && !json_array_size(kept)) {
        /* No live lock: take the exclusive one (briefly) so that no writer starts while the
         * leftovers are removed. Someone may have come meanwhile: then the leftovers stay. */
        struct err le = ERR_INIT;
        int64_t saved = r->lock_wait_ms;
        r->lock_wait_ms = 0;
        if (!r->lock && repo_lock(r, true, "unlock", &le) == 0) {
            json_t *lr = NULL;
            rc = repo_leftovers_remove(r, &lr, e);
            if (lr) {
                json_decref(leftovers_removed);
                leftovers_removed = lr;
            }
            repo_unlock(r);
        } else if (le.code != ERR_LOCKED) {
            *e = le;
            rc = -1;
        }
        r->lock_wait_ms = saved;
    }
    if (rc == 0)
        left = repo_leftovers_list(r, e);
    if (!left)
        rc = -1;
    if (rc != 0) {
        json_decref(removed);
        json_decref(kept);
        json_decref(leftovers_removed);
        json_decref(left);
        return -1;
    }
    *report = json_pack("{s:b, s:o, s:o, s:o, s:o}", "forced", force, "removed", removed, "kept",
                        kept, "leftovers_removed", leftovers_removed, "leftovers_kept", left);
    return 0;
}

/* The client side of the control socket, and the status when no daemon answers. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/daemon.h"
#include "caris/wal.h"
#include "caris/schedule.h"

/* Connects to the daemon of BACKUP_DIR: fd, or -1 when none answers (no error: the caller
 * works without it), or -2 with e (the socket exists but refuses us). */
static int daemon_connect(const struct config *cfg, struct err *e)
{
    char *path = xasprintf("%s/metadata/daemon.sock", config_backup_dir(cfg));
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = -1;
    if (strlen(path) < sizeof(a.sun_path)) {
        strcpy(a.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
            int err = errno;
            close(fd);
            fd = -1;
            if (err == EACCES || err == EPERM) {
                err_sys(e, err, "run it as the user the daemon runs as",
                        "cannot talk to the daemon at %s", path);
                fd = -2;
            }
        }
    }
    free(path);
    return fd;
}

/* Reads one line of answer (timeout_ms < 0: wait as long as it takes), as it is: an
 * {"error": ...} answer is the caller's to judge. */
static int daemon_answer(int fd, int timeout_ms, json_t **out, struct err *e)
{
    struct buf b = {0};
    int64_t deadline = time_mono_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        int wait = -1;
        if (timeout_ms >= 0) {
            int64_t left = (deadline - time_mono_ns()) / 1000000;
            if (left <= 0) {
                buf_free(&b);
                return err_set(e, ERR_FAILURE, "see the daemon's log (journalctl -u caris-backup)",
                               "the daemon did not answer within %d s", timeout_ms / 1000);
            }
            wait = (int)left;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, wait);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        char chunk[4096];
        ssize_t r = recv(fd, chunk, sizeof(chunk), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            buf_free(&b);
            return err_set(e, ERR_FAILURE, "see the daemon's log (journalctl -u caris-backup)",
                           "the daemon closed the connection without an answer (did it stop?)");
        }
        buf_append(&b, chunk, (size_t)r);
        if (memchr(chunk, '\n', (size_t)r))
            break;
    }
    json_error_t je;
    *out = json_loadb((const char *)b.data, b.len, JSON_DISABLE_EOF_CHECK, &je);
    buf_free(&b);
    if (!*out)
        return err_set(e, ERR_FAILURE, NULL, "the daemon's answer is not JSON: %s", je.text);
    return 0;
}

/* Sends one request, reads one line of answer (timeout_ms < 0: wait as long as it takes). */
static int daemon_call(int fd, json_t *req, int timeout_ms, json_t **out, struct err *e)
{
    char *text = json_dumps(req, JSON_COMPACT);
    size_t len = strlen(text);
    bool ok =
        send(fd, text, len, MSG_NOSIGNAL) == (ssize_t)len && send(fd, "\n", 1, MSG_NOSIGNAL) == 1;
    free(text);
    if (!ok)
        return err_sys(e, errno, NULL, "cannot send a request to the daemon");
    if (daemon_answer(fd, timeout_ms, out, e) != 0)
        return -1;
    /* a refusal is {"error"}; a job's result (run-now --wait) has "ok" and, when it failed, its
     * "error": the caller reports that run */
    json_t *err = json_object_get(*out, "ok") ? NULL : json_object_get(*out, "error");
    if (err) {
        err_set(e, ERR_USAGE, NULL, "the daemon refused the request: %s",
                json_string_value(json_object_get(err, "message")) ?: "?");
        json_decref(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int caris_schedule_status(const struct config *cfg, json_t **out, struct err *e)
{
    *out = NULL;
    int fd = daemon_connect(cfg, e);
    if (fd == -2)
        return -1;
    if (fd >= 0) {
        json_t *req = json_pack("{s:s}", "cmd", "status");
        int rc = daemon_call(fd, req, 10000, out, e);
        json_decref(req);
        close(fd);
        return rc;
    }
    /* No daemon: what the last one recorded, and the next runs from the configuration. */
    char *path = xasprintf("%s/metadata/scheduler.json", config_backup_dir(cfg));
    json_error_t je;
    json_t *s = json_load_file(path, 0, &je);
    free(path);
    if (!json_is_object(s)) {
        json_decref(s);
        s = json_pack("{s:{}, s:[]}", "schedules", "history");
    }
    json_object_set_new(s, "running", json_false());
    json_object_del(s, "pid");
    json_object_del(s, "queued"); /* a killed daemon's queue: the next one tells it */
    json_object_set_new(s, "job", json_null());
    json_object_set_new(s, "queue", json_integer(0));
    int64_t now = time_now_ns() / 1000000000;
    char t[40];
    time_format_iso(now * 1000000000, t, sizeof(t));
    json_object_set_new(s, "now", json_string(t));
    struct schedule_config sch;
    if (schedule_config_load(cfg, NULL, &sch, e) != 0) {
        schedule_config_free(&sch);
        json_decref(s);
        return -1;
    }
    json_t *all = json_object_get(s, "schedules");
    if (!json_is_object(all)) {
        all = json_object();
        json_object_set_new(s, "schedules", all);
    }
    json_t *next = json_array();
    for (size_t i = 0; i < SCHEDULE_COUNT; i++) {
        json_t *st = json_object_get(all, sch.items[i].name);
        if (!st) {
            st = json_object();
            json_object_set_new(all, sch.items[i].name, st);
        }
        json_object_set_new(st, "cron",
                            json_string(sch.items[i].enabled ? sch.items[i].text : "off"));
        json_object_set_new(st, "type", json_string(sch.items[i].backup_type));
        json_object_set_new(st, "enabled", json_boolean(sch.items[i].enabled));
        json_object_del(st, "nextRun");
        int64_t n;
        struct err ce = ERR_INIT;
        if (sch.items[i].enabled && cron_next(&sch.items[i].cron, sch.tz, now, &n, &ce) == 0) {
            time_format_iso(n * 1000000000, t, sizeof(t));
            json_object_set_new(st, "nextRun", json_string(t));
            json_array_append_new(next, json_pack("{s:s, s:s, s:s}", "schedule", sch.items[i].name,
                                                  "type", sch.items[i].backup_type, "time", t));
        }
    }
    json_object_set_new(s, "nextRuns", next);
    schedule_config_free(&sch);
    *out = s;
    return 0;
}

int caris_daemon_run_now(const struct config *cfg, enum caris_job_type type, bool wait,
                         json_t **out, struct err *e)
{
    *out = NULL;
    int fd = daemon_connect(cfg, e);
    if (fd == -2)
        return -1;
    if (fd < 0)
        return 1;
    json_t *req = json_pack("{s:s, s:s, s:b}", "cmd", "run-now", "type", caris_job_type_name(type),
                            "wait", wait);
    int rc = daemon_call(fd, req, wait ? -1 : 10000, out, e);
    json_decref(req);
    close(fd);
    return rc;
}

int caris_daemon_cancel(const struct config *cfg, json_t **out, struct err *e)
{
    *out = NULL;
    int fd = daemon_connect(cfg, e);
    if (fd == -2)
        return -1;
    if (fd < 0)
        return err_set(e, ERR_NOT_FOUND, "`caris-backup schedule status` shows what ran last",
                       "no daemon runs for %s: no job to cancel", config_backup_dir(cfg));
    json_t *req = json_pack("{s:s}", "cmd", "cancel");
    int rc = daemon_call(fd, req, 10000, out, e);
    json_decref(req);
    close(fd);
    return rc;
}

/* How long `wal push` waits for the daemon's answer: storing a segment takes well under a
 * second, the first push of a daemon also opens the repository; a daemon that does not answer
 * in this time is taken as failed (PostgreSQL retries the segment). */
#define WAL_PUSH_TIMEOUT_MS (300 * 1000)

static enum err_code code_of_name(const char *name)
{
    for (int c = ERR_FAILURE; c <= ERR_DATABASE; c++)
        if (name && strcmp(err_code_name((enum err_code)c), name) == 0)
            return (enum err_code)c;
    return ERR_FAILURE;
}

/* Sends req as one line with fd attached (SCM_RIGHTS). -1 when it did not go out whole. */
static int send_with_fd(int sock, json_t *req, int fd)
{
    char *text = json_dumps(req, JSON_COMPACT);
    if (!text)
        return -1;
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps' terminator becomes the line's end */
    struct iovec iov = {.iov_base = text, .iov_len = len + 1};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } cm;
    memset(&cm, 0, sizeof(cm));
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof(cm.b)};
    struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(h), &fd, sizeof(int));
    ssize_t sent;
    do
        sent = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    free(text);
    return sent == (ssize_t)(len + 1) ? 0 : -1;
}

/* The repository as an absolute path when it is local (the daemon's working directory is not
 * ours): a request {"cmd": cmd, "name": name, "repo": ...}. */
static json_t *wal_request(const char *cmd, const char *name, const char *repo_path,
                           uint32_t follow)
{
    char *abs_repo = realpath(repo_path, NULL);
    json_t *req = json_pack("{s:s, s:s, s:s}", "cmd", cmd, "name", name, "repo",
                            abs_repo ? abs_repo : repo_path);
    free(abs_repo);
    if (follow)
        json_object_set_new(req, "timeline", json_integer((json_int_t)follow));
    return req;
}

/* Sends the WAL request cmd for name with fd and reads the answer into *ans. 0: the daemon
 * answered ok; 1: it did not take the request (none reached, a request it did not get whole,
 * a full queue, stopping, another repository, a request it refuses as such or a daemon from
 * before cmd, which answers "usage"): the caller does the work alone, nothing was done; -1:
 * the daemon's error or a malformed answer, in e. */
static int wal_exchange(int sock, const char *cmd, const char *name, const char *repo_path,
                        uint32_t follow, int fd, int timeout_ms, json_t **ans, struct err *e)
{
    const char *what = strcmp(cmd, "wal-push") == 0 ? "wal push" : "wal get";
    json_t *req = wal_request(cmd, name, repo_path, follow);
    int sent = send_with_fd(sock, req, fd);
    json_decref(req);
    if (sent != 0)
        return 1;
    if (daemon_answer(sock, timeout_ms, ans, e) != 0) {
        err_wrap(e, "%s %s through the daemon", what, name);
        return -1;
    }
    json_t *err = json_object_get(*ans, "error");
    if (err) {
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        if (code && (strcmp(code, "busy") == 0 || strcmp(code, "stopping") == 0 ||
                     strcmp(code, "other-repository") == 0 || strcmp(code, "usage") == 0))
            return 1;
        const char *hint = json_string_value(json_object_get(err, "hint"));
        return err_set(e, code_of_name(code), hint, "%s", msg ? msg : "the daemon failed");
    }
    if (!json_is_true(json_object_get(*ans, "ok")))
        return err_set(e, ERR_FAILURE, NULL, "%s %s: the daemon's answer is malformed", what, name);
    return 0;
}

int caris_daemon_wal_push(const struct config *cfg, const char *repo_path, const char *path,
                          struct caris_wal_push_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    char *pcopy = xstrdup(path);
    const char *name = basename(pcopy);
    struct caris_wal_name wn;
    int rc = -1, sock = -1, fd = -1;
    json_t *ans = NULL;
    if (caris_wal_name_parse(name, &wn, e) != 0)
        goto out;
    struct err ce = ERR_INIT;
    sock = daemon_connect(cfg, &ce);
    if (sock < 0) { /* none, or one that refuses us: push alone */
        rc = 1;
        goto out;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_sys(e, errno, NULL, "cannot open WAL file %s", path);
        goto out;
    }
    /* a push the daemon refused as a usage error (a torn segment) fails alone the same way:
     * the answer is then this process's own */
    rc = wal_exchange(sock, "wal-push", name, repo_path, 0, fd, WAL_PUSH_TIMEOUT_MS, &ans, e);
    if (rc != 0)
        goto out;
    rc = -1;
    const char *hex = json_string_value(json_object_get(ans, "sha256"));
    if (!hex || cx_unhex(hex, res->sha256, 32) != 0) {
        err_set(e, ERR_FAILURE, NULL, "wal push %s: the daemon's answer is malformed", name);
        goto out;
    }
    res->already = json_is_true(json_object_get(ans, "alreadyArchived"));
    res->bytes = (uint64_t)json_integer_value(json_object_get(ans, "bytes"));
    rc = 0;
out:
    json_decref(ans);
    if (fd >= 0)
        close(fd);
    if (sock >= 0)
        close(sock);
    free(pcopy);
    return rc;
}

/* How long `wal get` waits for the daemon's answer: a segment is read back in well under a
 * second; the daemon's first request also opens the repository, and a push or get before it
 * in the queue may wait for a prune's lock (WALQ_LOCK_WAIT_MS). */
#define WAL_GET_TIMEOUT_MS (300 * 1000)

int caris_daemon_wal_get(const struct config *cfg, const char *repo_path, const char *name,
                         const char *dest, uint32_t follow, struct err *e)
{
    struct caris_wal_name wn;
    if (caris_wal_name_parse(name, &wn, e) != 0)
        return -1;
    int rc = -1, sock = -1;
    json_t *ans = NULL;
    struct fs_newfile f = FS_NEWFILE_INIT;
    struct err ce = ERR_INIT;
    sock = daemon_connect(cfg, &ce);
    if (sock < 0) /* none, or one that refuses us: get alone */
        return 1;
    /* the daemon writes into a new file beside dest, made here (PostgreSQL's %p is relative
     * to its working directory, and the file is the caller's; anonymous where the file
     * system allows, so that a get killed meanwhile leaves nothing); it is put in place only
     * once the daemon said every byte is written, checked and fsynced */
    if (fs_newfile_open(&f, dest, e) != 0) {
        e->code = ERR_FAILURE; /* never the archive's "not there" */
        goto out;
    }
    /* "wal-get-timeline", not "wal-get": a daemon from before the rule that a streamed partial
     * is served only up to its timeline's end (older timelines, after a failover) would serve
     * it whole; it does not know this request, answers "usage", and the get is done alone */
    rc = wal_exchange(sock, "wal-get-timeline", name, repo_path, follow, f.fd, WAL_GET_TIMEOUT_MS,
                      &ans, e);
    if (rc != 0)
        goto out;
    rc = fs_newfile_commit(&f, e);
out:
    fs_newfile_abort(&f);
    json_decref(ans);
    if (sock >= 0)
        close(sock);
    return rc;
}

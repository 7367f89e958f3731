/* The client side of the control socket, and the status when no daemon answers. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/daemon.h"
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
    json_t *err = json_object_get(*out, "error");
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

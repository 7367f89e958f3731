/* The audit log (caris/audit.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caris/audit.h"
#include "caris/config.h"
#include "caris/core.h"
#include "caris/crypto.h"
#include "caris/repo.h"

#define TAIL_MAX (256 * 1024)    /* the longest line looked back at when appending */
#define TAIL_BLOCK (64 * 1024)   /* caris_audit_read_tail reads back by that much */
#define TAIL_READ_MAX (16 << 20) /* and at most that much */
#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

static char *audit_path(const char *backup_dir)
{
    return xasprintf("%s/metadata/audit.log", backup_dir);
}

static void line_hash(const char *line, size_t len, char out[2 * CX_SHA256_LEN + 1])
{
    uint8_t h[CX_SHA256_LEN];
    cx_sha256(line, len, h);
    cx_hex(h, sizeof(h), out);
}

/* The last line of the open log (without its newline): *seq (0 when none or unreadable) and
 * its hash (ZERO_HASH when the log is empty). */
static int last_line(int fd, int64_t *seq, char hash[2 * CX_SHA256_LEN + 1], struct err *e)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return err_sys(e, errno, NULL, "cannot stat the audit log");
    *seq = 0;
    strcpy(hash, ZERO_HASH);
    if (st.st_size == 0)
        return 0;
    size_t n = st.st_size > TAIL_MAX ? TAIL_MAX : (size_t)st.st_size;
    char *buf = xmalloc(n + 1);
    ssize_t got = pread(fd, buf, n, st.st_size - (off_t)n);
    if (got != (ssize_t)n) {
        free(buf);
        return err_sys(e, got < 0 ? errno : EIO, NULL, "cannot read the audit log");
    }
    buf[n] = '\0';
    size_t end = n;
    if (end > 0 && buf[end - 1] == '\n')
        end--;
    size_t start = end;
    while (start > 0 && buf[start - 1] != '\n')
        start--;
    line_hash(buf + start, end - start, hash);
    json_t *j = json_loadb(buf + start, end - start, 0, NULL);
    json_int_t s = json_integer_value(json_object_get(j, "seq"));
    json_decref(j);
    /* a torn last line (a crash, a full disk while it was written) has no number: it counts
     * as the one after the line before it, so that numbering goes on (it restarted at 1, and
     * the log could never verify past it again) */
    json_int_t after = 1; /* lines from the one read back to the last */
    for (size_t back = start; s <= 0 && back > 0; after++) {
        size_t pend = back - 1, pstart = pend;
        while (pstart > 0 && buf[pstart - 1] != '\n')
            pstart--;
        json_t *p = json_loadb(buf + pstart, pend - pstart, 0, NULL);
        json_int_t ps = json_integer_value(json_object_get(p, "seq"));
        json_decref(p);
        if (ps > 0)
            s = ps + after;
        back = pstart;
    }
    *seq = s > 0 ? s : 0;
    free(buf);
    return 0;
}

int caris_audit_append(const char *backup_dir, const struct caris_audit_entry *en, struct err *e)
{
    char *path = audit_path(backup_dir);
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    int rc = -1;
    if (fd < 0) {
        err_sys(e, errno, NULL, "cannot open the audit log %s", path);
        free(path);
        return -1;
    }
    if (flock(fd, LOCK_EX) != 0) {
        err_sys(e, errno, NULL, "cannot lock the audit log %s", path);
        goto out;
    }
    int64_t seq;
    char prev[2 * CX_SHA256_LEN + 1], when[40];
    if (last_line(fd, &seq, prev, e) != 0)
        goto out;
    /* a torn last line (no newline) stays as it is, a line of its own: verify names it */
    struct stat st;
    char last = '\n';
    if (fstat(fd, &st) == 0 && st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1)
        last = '\n';
    time_format_iso(time_now_ns(), when, sizeof(when));
    json_t *j = json_object();
    json_object_set_new(j, "seq", json_integer(seq + 1));
    json_object_set_new(j, "time", json_string(when));
    json_object_set_new(j, "actor", json_string(en->actor ? en->actor : "unknown"));
    json_object_set_new(j, "source", en->source ? json_string(en->source) : json_null());
    json_object_set_new(j, "operation", json_string(en->operation ? en->operation : "?"));
    json_object_set_new(j, "args", en->args ? json_deep_copy(en->args) : json_object());
    json_object_set_new(j, "result", json_string(en->result ? en->result : "?"));
    json_object_set_new(j, "error", en->error ? json_string(en->error) : json_null());
    json_object_set_new(j, "backupIds",
                        en->backup_ids ? json_deep_copy(en->backup_ids) : json_array());
    json_object_set_new(j, "durationMs",
                        en->duration_ms >= 0 ? json_integer(en->duration_ms) : json_null());
    json_object_set_new(j, "prev", json_string(prev));
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    json_decref(j);
    if (!text) {
        err_set(e, ERR_FAILURE, NULL, "cannot write an audit line (not UTF-8)");
        goto out;
    }
    char *line = xasprintf("%s%s\n", last == '\n' ? "" : "\n", text);
    free(text);
    if (fs_write_full(fd, line, strlen(line)) != 0 || fdatasync(fd) != 0)
        err_sys(e, errno, NULL, "cannot write the audit log %s", path);
    else
        rc = 0;
    free(line);
out:
    close(fd); /* releases the lock */
    free(path);
    return rc;
}

/* The log's lines: *lines (pointers into buf, which is modified), *n; whether the last one
 * ended with a newline. */
static char **split_lines(struct buf *b, size_t *n, bool *complete)
{
    size_t cap = 16;
    char **lines = xmalloc(cap * sizeof(*lines));
    *n = 0;
    *complete = b->len == 0 || b->data[b->len - 1] == '\n';
    char *p = (char *)b->data, *endp = p + b->len;
    while (p < endp) {
        char *nl = memchr(p, '\n', (size_t)(endp - p));
        if (*n == cap)
            lines = xrealloc(lines, (cap *= 2) * sizeof(*lines));
        lines[(*n)++] = p;
        if (!nl)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    return lines;
}

static int read_log(const char *backup_dir, struct buf *b, bool *exists, struct err *e)
{
    char *path = audit_path(backup_dir);
    *exists = fs_exists(path);
    int rc = *exists ? fs_read_all(path, b, e) : 0;
    if (rc == 0)
        buf_append_u8(b, 0), b->len--; /* NUL-terminated for the last line */
    free(path);
    return rc;
}

int caris_audit_verify(const char *backup_dir, size_t *lines_out, json_t **torn_out, struct err *e)
{
    struct buf b = {0};
    bool exists, complete;
    *lines_out = 0;
    if (torn_out)
        *torn_out = NULL;
    if (read_log(backup_dir, &b, &exists, e) != 0)
        return -1;
    size_t n;
    char **lines = split_lines(&b, &n, &complete);
    char prev[2 * CX_SHA256_LEN + 1] = ZERO_HASH;
    int rc = 0;
    json_t *torn = json_array();
    const char *hint = "the audit log was changed outside caris-backup: compare it with a copy "
                       "(backups of BACKUP_DIR/metadata) and find out who had access";
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t len = strlen(lines[i]);
        json_t *j = json_loadb(lines[i], len, JSON_REJECT_DUPLICATES, NULL);
        json_int_t seq = json_integer_value(json_object_get(j, "seq"));
        const char *p = json_string_value(json_object_get(j, "prev"));
        if (i == n - 1 && !complete)
            rc = err_set(e, ERR_DAMAGE, hint, "audit log line %zu is cut short (truncated tail)",
                         i + 1);
        else if (!json_is_object(j) && i + 1 < n)
            /* a line torn by an interrupted write (a crash, a full disk) that later appends
             * went on after: they number it and carry its hash, so the next line's checks
             * below hold it in the chain like any other (garbage put there instead breaks
             * them); it is reported, not damage */
            json_array_append_new(torn, json_integer((json_int_t)(i + 1)));
        else if (!json_is_object(j))
            rc = err_set(e, ERR_DAMAGE, hint, "audit log line %zu is not a JSON object", i + 1);
        else if (seq != (json_int_t)(i + 1))
            rc = err_set(e, ERR_DAMAGE, hint,
                         "audit log line %zu carries sequence number %lld: line(s) before it "
                         "were deleted or inserted",
                         i + 1, (long long)seq);
        else if (!p || strcmp(p, prev) != 0)
            rc = err_set(e, ERR_DAMAGE, hint,
                         "audit log line %zu does not carry the hash of line %zu: line %zu was "
                         "changed",
                         i + 1, i, i);
        if (rc != 0)
            *lines_out = i + 1;
        line_hash(lines[i], len, prev);
        json_decref(j);
    }
    if (rc == 0)
        *lines_out = n;
    if (rc == 0 && torn_out)
        *torn_out = json_incref(torn);
    json_decref(torn);
    free(lines);
    buf_free(&b);
    return rc;
}

/* A line as read: its JSON object, or {"seq": null, "unreadable": "<text>"} (*readable
 * false). */
static json_t *line_json(const char *line, bool *readable)
{
    json_t *j = json_loads(line, 0, NULL);
    *readable = json_is_object(j);
    if (!*readable) {
        json_decref(j);
        char esc[512];
        str_escape(line, strlen(line), esc, sizeof(esc));
        j = json_pack("{s:n, s:s}", "seq", "unreadable", esc);
    }
    return j;
}

json_t *caris_audit_read_tail(const char *backup_dir, size_t limit, struct err *e)
{
    char *path = audit_path(backup_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        json_t *none = err == ENOENT ? json_array() : NULL;
        if (!none)
            err_sys(e, err, NULL, "cannot open the audit log %s", path);
        free(path);
        return none;
    }
    struct stat st;
    struct buf b = {0};
    int rc = fstat(fd, &st) == 0 ? 0 : err_sys(e, errno, NULL, "cannot stat %s", path);
    /* from the end, a block at a time, until limit + 1 newlines (the line before the first
     * one wanted ends with one) or the start; at most TAIL_READ_MAX bytes */
    off_t off = rc == 0 ? st.st_size : 0;
    size_t newlines = 0;
    while (rc == 0 && off > 0 && newlines <= limit && b.len < TAIL_READ_MAX) {
        size_t n = off > TAIL_BLOCK ? TAIL_BLOCK : (size_t)off;
        off -= (off_t)n;
        struct buf blk = {0};
        buf_reserve(&blk, n);
        ssize_t got = pread(fd, blk.data, n, off);
        if (got != (ssize_t)n) {
            rc = err_sys(e, got < 0 ? errno : EIO, NULL, "cannot read %s", path);
        } else {
            for (size_t i = 0; i < n; i++)
                newlines += blk.data[i] == '\n';
            blk.len = n;
            buf_append(&blk, b.data, b.len);
            buf_free(&b);
            b = blk;
            blk = (struct buf){0};
        }
        buf_free(&blk);
    }
    close(fd);
    free(path);
    if (rc != 0) {
        buf_free(&b);
        return NULL;
    }
    /* not from the start: the first line read may be a part of one */
    size_t skip = 0;
    if (off > 0) {
        const uint8_t *nl = b.len ? memchr(b.data, '\n', b.len) : NULL;
        skip = nl ? (size_t)(nl - b.data) + 1 : b.len;
    }
    struct buf t = {0};
    buf_append(&t, b.data + skip, b.len - skip);
    buf_free(&b);
    buf_append_u8(&t, 0);
    t.len--;
    size_t n;
    bool complete;
    char **lines = split_lines(&t, &n, &complete);
    json_t *out = json_array();
    bool readable;
    for (size_t i = n > limit ? n - limit : 0; i < n; i++)
        json_array_append_new(out, line_json(lines[i], &readable));
    free(lines);
    buf_free(&t);
    return out;
}

json_t *caris_audit_read(const char *backup_dir, int64_t since_ns, struct err *e)
{
    struct buf b = {0};
    bool exists, complete;
    if (read_log(backup_dir, &b, &exists, e) != 0)
        return NULL;
    size_t n;
    char **lines = split_lines(&b, &n, &complete);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++) {
        bool readable;
        json_t *j = line_json(lines[i], &readable);
        if (readable && since_ns) {
            int64_t t;
            const char *ts = json_string_value(json_object_get(j, "time"));
            if (!ts || time_parse_iso(ts, &t) != 0 || t < since_ns) {
                json_decref(j);
                continue;
            }
        }
        json_array_append_new(out, j);
    }
    free(lines);
    buf_free(&b);
    return out;
}

const char *caris_audit_redact_arg(const char *arg, char *out, size_t n)
{
    /* an API token (`token revoke cbt_...`: the token itself, after a leak) */
    if (strncmp(arg, "cbt_", 4) == 0) {
        snprintf(out, n, "cbt_(redacted)");
        return out;
    }
    const char *sep = strstr(arg, "://");
    if (sep) {
        snprintf(out, n, "%.*s://…", (int)(sep - arg) > 32 ? 32 : (int)(sep - arg), arg);
        return out;
    }
    /* a libpq connection string of keywords ("host=h dbname=d password=p"): cut at the first
     * "password =" (sslpassword too), whatever the case */
    const char *q = config_kv_password(arg);
    if (q) {
        snprintf(out, n, "%.*s=…", (int)(q - arg) > 200 ? 200 : (int)(q - arg), arg);
        return out;
    }
    snprintf(out, n, "%s", arg);
    return out;
}

/* The log's lines and their hashes: n, hashes[i] of line i+1. */
static int log_hashes(const char *backup_dir, char (**hashes)[2 * CX_SHA256_LEN + 1], size_t *n,
                      struct err *e)
{
    struct buf b = {0};
    bool exists, complete;
    *hashes = NULL;
    *n = 0;
    if (read_log(backup_dir, &b, &exists, e) != 0)
        return -1;
    char **lines = split_lines(&b, n, &complete);
    *hashes = xcalloc(*n ? *n : 1, sizeof(**hashes));
    for (size_t i = 0; i < *n; i++)
        line_hash(lines[i], strlen(lines[i]), (*hashes)[i]);
    free(lines);
    buf_free(&b);
    return 0;
}

/* Where the log is, as recorded with its head: BACKUP_DIR's absolute path. */
static char *log_dir(const char *backup_dir)
{
    char *real = realpath(backup_dir, NULL);
    return real ? real : xstrdup(backup_dir);
}

/* Whether a head was recorded by this BACKUP_DIR on this host (a head of before "dir" was
 * recorded: unknown, false). */
static bool head_is_ours(json_t *rec, const char *host, const char *dir)
{
    const char *h = json_string_value(json_object_get(rec, "host"));
    const char *d = json_string_value(json_object_get(rec, "dir"));
    return h && d && strcmp(h, host) == 0 && strcmp(d, dir) == 0;
}

int caris_audit_head_record(struct repo *r, const char *backup_dir, struct err *e)
{
    char(*h)[2 * CX_SHA256_LEN + 1];
    size_t n;
    if (log_hashes(backup_dir, &h, &n, e) != 0)
        return -1;
    int rc = 0;
    if (n > 0) {
        char when[40], host[256] = "";
        time_format_iso(time_now_ns(), when, sizeof(when));
        gethostname(host, sizeof(host) - 1);
        char *dir = log_dir(backup_dir);
        json_t *rec =
            json_pack("{s:s, s:I, s:s, s:s, s:s, s:s}", "logId", h[0], "seq", (json_int_t)n,
                      "sha256", h[n - 1], "time", when, "host", host, "dir", dir);
        free(dir);
        rc = repo_record_add(r, "audit-head", rec, e);
        json_decref(rec);
    }
    free(h);
    return rc;
}

int caris_audit_verify_heads(struct repo *r, const char *backup_dir, size_t *checked, struct err *e)
{
    *checked = 0;
    json_t *unreadable = NULL;
    json_t *recs = repo_record_list(r, "audit-head", &unreadable, e);
    if (!recs)
        return -1;
    char(*h)[2 * CX_SHA256_LEN + 1];
    size_t n;
    if (log_hashes(backup_dir, &h, &n, e) != 0) {
        json_decref(recs);
        return -1;
    }
    const char *hint = "the audit log was changed outside caris-backup after the repository "
                       "recorded its head: compare it with a copy and find out who had access";
    /* the lowest recorded line the log contradicts: where the damage begins */
    json_int_t bad = 0;
    const char *bad_time = NULL;
    bool bad_missing = false;
    /* a head of this BACKUP_DIR on this host for another log: this one was begun anew */
    const char *replaced_time = NULL;
    json_int_t replaced_seq = 0;
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    char *dir = log_dir(backup_dir);
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec)
    {
        const char *log_id = json_string_value(json_object_get(rec, "logId"));
        json_int_t seq = json_integer_value(json_object_get(rec, "seq"));
        const char *sha = json_string_value(json_object_get(rec, "sha256"));
        if (!log_id || !sha || seq < 1)
            continue;
        bool ours = head_is_ours(rec, host, dir);
        /* another log: another BACKUP_DIR on this repository (or another host), unless the
         * head says it was this BACKUP_DIR's — then this log replaced the one recorded (its
         * first line is not the one recorded: deleted, or the whole log begun anew) */
        if (n > 0 && strcmp(log_id, h[0]) != 0) {
            if (ours && (!replaced_time || seq > replaced_seq)) {
                replaced_seq = seq;
                replaced_time = json_string_value(json_object_get(rec, "time"));
            }
            if (ours)
                (*checked)++;
            continue;
        }
        /* no log at all: every head of this BACKUP_DIR (and those of before "dir") is of a
         * log that is gone */
        if (n == 0 && !ours && json_object_get(rec, "dir"))
            continue;
        (*checked)++;
        bool missing = (size_t)seq > n;
        if (missing || strcmp(h[seq - 1], sha) != 0) {
            if (!bad || seq < bad) {
                bad = seq;
                bad_missing = missing;
                bad_time = json_string_value(json_object_get(rec, "time"));
            }
        }
    }
    int rc = 0;
    if (replaced_time)
        rc = err_set(e, ERR_DAMAGE, hint,
                     "the audit log's first line is not the one the repository recorded for "
                     "this BACKUP_DIR on %s (a log of %lld lines then): the log was replaced or "
                     "begun anew",
                     replaced_time, (long long)replaced_seq);
    else if (bad && bad_missing)
        rc = err_set(e, ERR_DAMAGE, hint,
                     "the audit log has %zu lines, but the repository recorded line %lld on %s: "
                     "lines at its end were deleted",
                     n, (long long)bad, bad_time ? bad_time : "?");
    else if (bad)
        rc = err_set(e, ERR_DAMAGE, hint,
                     "audit log line %lld is not the one the repository recorded on %s: it was "
                     "changed",
                     (long long)bad, bad_time ? bad_time : "?");
    else if (json_array_size(unreadable))
        /* a head that cannot be read vouches for nothing: a change to the lines it covered
         * would go unseen, so the log is not called intact */
        rc = err_set(e, ERR_DAMAGE,
                     "`caris-backup check` names the record: compare the log with a copy if you "
                     "have one, then move that record out of the repository (the heads recorded "
                     "since cover the log from then on)",
                     "%zu of the audit log's head records in the repository cannot be read (%s): "
                     "the lines they covered cannot be checked",
                     json_array_size(unreadable),
                     json_string_value(json_object_get(json_array_get(unreadable, 0), "object"))
                         ?: "?");
    free(dir);
    free(h);
    json_decref(recs);
    json_decref(unreadable);
    return rc;
}

bool caris_audit_head_due(bool backup, bool data_out, int exit_code)
{
    bool took =
        exit_code != 2 && exit_code != 5 && exit_code != 6 && exit_code != 7 && exit_code != 9;
    return (backup && (exit_code == 0 || exit_code == EXIT_WARNINGS)) || (data_out && took);
}

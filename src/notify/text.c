/* The text of a notification (subject, introduction, fields, error and hint), built once
 * from an event, cleaned and redacted, and used by every channel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/notify.h"

#include "notify/internal.h"

/* One-line, printable, valid UTF-8 (str_escape), then redacted. */
static char *clean_line(const struct notify_config *nc, const char *s)
{
    /* Redacted before escaping (a secret with a backslash or a control character in it
     * would not match after) and after (escaping must not reveal a pattern). */
    char *raw = notify_redact(nc, s);
    size_t n = strlen(raw);
    size_t cap = n * 4 + 8;
    if (cap > 4096)
        cap = 4096;
    char *esc = xmalloc(cap);
    str_escape(raw, n, esc, cap);
    free(raw);
    char *r = notify_redact(nc, esc);
    free(esc);
    return r;
}

/* Several lines: redacted whole (before it is cut, so that no part of a secret is left at
 * the cut), cut to 4000 bytes, each line made printable and valid UTF-8, joined with '\n',
 * and redacted again. */
static char *clean_text(const struct notify_config *nc, const char *s)
{
    char *raw = notify_redact(nc, s);
    size_t total = strlen(raw);
    if (total > 4000) {
        total = 4000;
        while (total > 0 && ((unsigned char)raw[total] & 0xc0) == 0x80)
            total--;
    }
    struct buf b = {0};
    const char *end = raw + total;
    for (const char *p = raw; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n && p[n - 1] == '\r')
            n--;
        char *line = xstrndup(p, n);
        char *c = clean_line(NULL, line);
        free(line);
        if (b.len)
            buf_append_u8(&b, '\n');
        buf_append(&b, c, strlen(c));
        free(c);
        if (!nl)
            break;
        p = nl + 1;
    }
    buf_append_u8(&b, 0);
    free(raw);
    char *r = notify_redact(nc, (char *)b.data);
    buf_free(&b);
    return r;
}

static void add_field(struct notify_text *t, const char *label, char *value)
{
    if (t->nfields < NOTIFY_MAX_FIELDS) {
        t->fields[t->nfields].label = label;
        t->fields[t->nfields].value = value;
        t->nfields++;
    } else {
        free(value);
    }
}

static char *human_duration(int64_t ms)
{
    int64_t s = ms / 1000;
    if (ms < 1000)
        return xasprintf("%lld ms", (long long)ms);
    if (s < 60)
        return xasprintf("%.1f s", (double)ms / 1000);
    if (s < 3600)
        return xasprintf("%lld min %lld s", (long long)(s / 60), (long long)(s % 60));
    if (s < 86400 * 2)
        return xasprintf("%lld h %lld min", (long long)(s / 3600), (long long)(s % 3600 / 60));
    return xasprintf("%lld d %lld h", (long long)(s / 86400), (long long)(s % 86400 / 3600));
}

void notify_text_build(const struct notify_config *nc, const struct notify_event *ev,
                       struct notify_text *t)
{
    memset(t, 0, sizeof(*t));
    t->kind = ev->kind;
    char hostbuf[256] = "unknown host";
    if (!ev->host) {
        gethostname(hostbuf, sizeof(hostbuf) - 1);
        hostbuf[sizeof(hostbuf) - 1] = '\0';
    }
    t->host = clean_line(nc, ev->host ? ev->host : hostbuf);
    char *id = ev->backup_id ? clean_line(nc, ev->backup_id) : NULL;
    char *kind = ev->backup_kind ? clean_line(nc, ev->backup_kind) : NULL;
    int64_t when = ev->time_ns ? ev->time_ns : time_now_ns();
    char iso[40];
    time_format_iso(when, iso, sizeof(iso));
    char *age = NULL;

    /* Subjects start with the product's name: "CÁRIS Backup: ...". */
    switch (ev->kind) {
    case NOTIFY_BACKUP_SUCCEEDED:
        t->subject = xasprintf("CÁRIS Backup: %s%sbackup succeeded on %s", kind ? kind : "",
                               kind ? " " : "", t->host);
        t->intro =
            xasprintf("A %s%sbackup succeeded on %s.", kind ? kind : "", kind ? " " : "", t->host);
        break;
    case NOTIFY_BACKUP_FAILED:
        t->failure = true;
        t->subject = xasprintf("CÁRIS Backup: %s%sbackup FAILED on %s", kind ? kind : "",
                               kind ? " " : "", t->host);
        t->intro = ev->interrupted
                       ? xasprintf("A %s%sbackup run was interrupted on %s: the daemon stopped "
                                   "before it finished. A backup it had made by then is in the "
                                   "repository (`caris-backup list`), unverified if its "
                                   "verification did not run; nothing was committed after that.",
                                   kind ? kind : "", kind ? " " : "", t->host)
                       : xasprintf("A %s%sbackup failed on %s. Nothing of it was committed: the "
                                   "repository holds the backups it held before.",
                                   kind ? kind : "", kind ? " " : "", t->host);
        break;
    case NOTIFY_VERIFY_FAILED:
        t->failure = true;
        t->subject = xasprintf("CÁRIS Backup: verification FAILED on %s%s%s", t->host,
                               id ? ": " : "", id ? id : "");
        t->intro = xasprintf("Verification of a backup failed on %s: do not restore from it "
                             "before `caris-backup check --read-data` says which backups are "
                             "affected.",
                             t->host);
        break;
    case NOTIFY_DRILL_FAILED:
        t->failure = true;
        t->subject = xasprintf("CÁRIS Backup: restore drill FAILED on %s%s%s", t->host,
                               id ? ": " : "", id ? id : "");
        t->intro = xasprintf("A restore drill (test restore) failed on %s: the backup may not "
                             "restore.",
                             t->host);
        break;
    case NOTIFY_STEP_FAILED:
        t->failure = true;
        t->subject = xasprintf("CÁRIS Backup: %s FAILED on %s", kind ? kind : "a step", t->host);
        t->intro = xasprintf("The %s step of a backup run failed on %s. The backups the run made "
                             "are not affected; the error says what this step did not do.",
                             kind ? kind : "last", t->host);
        break;
    case NOTIFY_STEP_WARNINGS:
        t->failure = true;
        t->subject = xasprintf("CÁRIS Backup: %s completed with WARNINGS on %s",
                               kind ? kind : "a step", t->host);
        t->intro = xasprintf("The %s step of a backup run on %s completed with warnings: what "
                             "they were is said below.",
                             kind ? kind : "last", t->host);
        break;
    case NOTIFY_STALE: {
        t->failure = true;
        char *alert = human_duration(nc ? nc->alert_after_ms : NOTIFY_DEFAULT_ALERT_AFTER_MS);
        if (ev->last_success_ns > 0) {
            age = human_duration((when - ev->last_success_ns) / 1000000);
            t->subject = xasprintf("CÁRIS Backup: no %s%sbackup for %s on %s", kind ? kind : "",
                                   kind ? " " : "", age, t->host);
            t->intro = xasprintf("The newest successful %s%sbackup on %s is %s old, more than "
                                 "BACKUP_ALERT_AFTER (%s).",
                                 kind ? kind : "", kind ? " " : "", t->host, age, alert);
        } else {
            t->subject = xasprintf("CÁRIS Backup: no successful %s%sbackup on %s", kind ? kind : "",
                                   kind ? " " : "", t->host);
            t->intro = xasprintf("There is no successful %s%sbackup on %s.", kind ? kind : "",
                                 kind ? " " : "", t->host);
        }
        free(alert);
        break;
    }
    case NOTIFY_WAL_FAILING:
        t->failure = true;
        t->subject = xasprintf("CÁRIS Backup: WAL archiving FAILING on %s", t->host);
        t->intro = xasprintf("PostgreSQL on %s cannot archive its WAL: point-in-time recovery "
                             "stops at the last segment archived, and pg_wal grows until the "
                             "archive takes segments again (a full disk stops the database).",
                             t->host);
        break;
    case NOTIFY_WAL_STREAM_FAILING:
        t->failure = true;
        t->subject = xasprintf("CÁRIS Backup: WAL streaming FAILING on %s", t->host);
        t->intro = xasprintf("The daemon on %s cannot stream WAL from PostgreSQL: what the "
                             "server writes now reaches the archive only through "
                             "archive_command, a whole segment at a time, and the replication "
                             "slot keeps the WAL not yet streamed on the server's disk.",
                             t->host);
        break;
    case NOTIFY_TEST:
    default:
        t->subject = xasprintf("CÁRIS Backup: test notification from %s", t->host);
        t->intro = xasprintf("This is a test notification from caris-backup on %s. If you read "
                             "this, you will hear about failed backups here.",
                             t->host);
        break;
    }

    add_field(t, "Event", xstrdup(notify_kind_name(ev->kind)));
    add_field(t, "Host", xstrdup(t->host));
    add_field(t, "Time", xstrdup(iso));
    if (id)
        add_field(t, "Backup", xstrdup(id));
    if (kind)
        add_field(t, "Kind", xstrdup(kind));
    if (ev->has_size) {
        char h[32];
        str_human_bytes(ev->size_bytes, h, sizeof(h));
        add_field(t, "Size", xasprintf("%s (%llu bytes)", h, (unsigned long long)ev->size_bytes));
    }
    if (ev->duration_ms >= 0 && ev->kind != NOTIFY_STALE && ev->kind != NOTIFY_TEST)
        add_field(t, "Duration", human_duration(ev->duration_ms));
    if (ev->verification)
        add_field(t, "Verification", clean_line(nc, ev->verification));
    if (ev->kind == NOTIFY_STALE) {
        if (ev->last_success_ns > 0) {
            char last[40];
            time_format_iso(ev->last_success_ns, last, sizeof(last));
            add_field(t, "Last success", xstrdup(last));
        } else {
            add_field(t, "Last success", xstrdup("none"));
        }
        add_field(t, "Alert after",
                  human_duration(nc ? nc->alert_after_ms : NOTIFY_DEFAULT_ALERT_AFTER_MS));
    }
    if (ev->error)
        t->error = clean_text(nc, ev->error);
    if (ev->hint)
        t->hint = clean_text(nc, ev->hint);
    free(age);
    free(id);
    free(kind);
}

void notify_text_free(struct notify_text *t)
{
    free(t->subject);
    free(t->intro);
    for (size_t i = 0; i < t->nfields; i++)
        free(t->fields[i].value);
    free(t->error);
    free(t->hint);
    free(t->host);
    memset(t, 0, sizeof(*t));
}

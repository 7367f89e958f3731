/* Restore of a physical backup and point-in-time recovery (caris/pitr.h): the data directory
 * is written beside its place and renamed into it once every file matched its SHA-256; then
 * recovery.signal and the recovery settings (restore_command = caris-backup wal get), and,
 * when asked, PostgreSQL is started and watched until recovery reaches the target. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caris/crypto.h"
#include "caris/pgsrc.h"
#include "caris/pitr.h"
#include "caris/pool.h"
#include "caris/retention.h"
#include "caris/stream.h"
#include "caris/tempitem.h"
#include "common.h"

int phys_time_parse(const char *s, const char *tz, int64_t *ns, struct err *e)
{
    /* fractions of a second (PostgreSQL's now() has them) are passed to the server as given;
     * here they are added to the parsed time (to the nanosecond), so that a backup that ended
     * earlier in the same second as the target is still chosen */
    char t[128];
    snprintf(t, sizeof(t), "%s", s);
    char *dot = strchr(t, '.');
    int64_t frac = 0;
    if (dot) {
        size_t k = strspn(dot + 1, "0123456789");
        int64_t scale = 100000000;
        for (size_t i = 0; i < k && i < 9; i++, scale /= 10)
            frac += (dot[1 + i] - '0') * scale;
        memmove(dot, dot + 1 + k, strlen(dot + 1 + k) + 1);
    }
    /* PostgreSQL writes "+00" for a zone: the parser wants "+00:00" */
    size_t n = strlen(t);
    if (n > 3 && (t[n - 3] == '+' || t[n - 3] == '-') && n + 3 < sizeof(t) && strchr(t, ':'))
        strcat(t, ":00");
    if (caris_time_parse(t, tz, ns, e) != 0) {
        /* the error quotes the time as given, not as rewritten here (the fraction dropped) */
        char *q = xasprintf("'%s'", t);
        char *at = strstr(e->msg, q);
        if (at && strcmp(t, s) != 0) {
            char *m = xasprintf("%.*s'%s'%s", (int)(at - e->msg), e->msg, s, at + strlen(q));
            snprintf(e->msg, sizeof(e->msg), "%s", m);
            free(m);
        }
        free(q);
        return -1;
    }
    *ns += frac;
    return 0;
}

static bool is_physical(json_t *s)
{
    const char *k = json_string_value(json_object_get(s, "kind"));
    const char *m = json_string_value(json_object_get(s, "method"));
    return k && m && strcmp(k, "database") == 0 && strcmp(m, "physical") == 0;
}

/* Whether backup s (physical) ends before the target: it must be consistent by then. */
static bool ends_before(json_t *s, const struct phys_restore_opts *o)
{
    json_t *phys = json_object_get(s, "physical");
    if (o->target == PHYS_TARGET_TIME) {
        /* when it really ended (stop_time), else (backups written before it) when it says */
        int64_t fin;
        const char *f = json_string_value(json_object_get(phys, "stop_time"));
        if (!f)
            f = json_string_value(json_object_get(s, "finished"));
        return f && time_parse_iso(f, &fin) == 0 && fin <= o->target_time_ns;
    }
    if (o->target == PHYS_TARGET_LSN) {
        uint64_t stop;
        return caris_lsn_parse(json_string_value(json_object_get(phys, "stop_lsn")), &stop) == 0 &&
               stop <= o->target_lsn;
    }
    return true;
}

/* The timeline recovery follows (0: each backup's own, "current"), and the archive as
 * caris_wal_window sees it (*w, NULL when it cannot be read: then no backup is ruled out by
 * its timelines and no gap is found; the restore says so). */
static int target_timeline(struct repo *r, const struct phys_restore_opts *o, uint32_t *tli,
                           json_t **w, struct err *e)
{
    *tli = 0;
    *w = NULL;
    const char *t = o->target_timeline ? o->target_timeline : "latest";
    char *end;
    unsigned long v = strtoul(t, &end, 10);
    bool latest = strcmp(t, "latest") == 0, current = strcmp(t, "current") == 0;
    /* a number is written as given into recovery_target_timeline, which PostgreSQL reads
     * with strtoul base 0: "010" is timeline 8 there (and "0x10" 16), while here it would be
     * 10, the timeline whose backups and gaps were checked. Only plain decimal is taken: the
     * hex of a WAL file name (00000010 is timeline 16) is refused rather than misread. */
    if (!latest && !current &&
        (*t < '1' || *t > '9' || strspn(t, "0123456789") != strlen(t) || v > UINT32_MAX))
        return err_set(e, ERR_USAGE,
                       "timelines are decimal numbers as `caris-backup wal list` shows them (a "
                       "WAL file name has them in hex: 00000010 is timeline 16)",
                       "the recovery timeline is latest, current or a timeline number, not '%s'",
                       t);
    json_t *damaged = NULL;
    struct err we = ERR_INIT;
    *w = caris_wal_window(r, &damaged, &we);
    /* WAL records that cannot be read: the segments they hold count as missing below, and a
     * recovery that needs one stops there with an error. Said, with the records (it was
     * passed over: a restore without --start exited 0 without a word, and a gap it then
     * reported told to push a segment the archive has) */
    if (json_array_size(damaged)) {
        char names[400] = "";
        size_t i;
        json_t *x;
        json_array_foreach(damaged, i, x)
        {
            const char *obj = json_string_value(json_object_get(x, "object"));
            str_list_add(names, sizeof(names), obj ? obj : "?");
        }
        caris_op_log(o->op, LOG_WARN,
                     "%zu WAL record%s of the archive cannot be read (%s): the WAL %s holds is "
                     "taken for missing, and a recovery that needs it stops there with an "
                     "error; `caris-backup check` says what is damaged",
                     json_array_size(damaged), json_array_size(damaged) == 1 ? "" : "s", names,
                     json_array_size(damaged) == 1 ? "it" : "they");
    }
    json_decref(damaged);
    if (!*w) {
        /* the restore does not depend on reading the archive's timelines: without them no
         * backup is ruled out, and PostgreSQL itself follows the timeline asked for; but gaps
         * are not looked for either, which the operator must know */
        caris_op_log(o->op, LOG_WARN,
                     "cannot read the WAL archive's timelines (%s): the backup is chosen "
                     "without them, and the archive is not checked for missing segments",
                     we.msg);
        return 0;
    }
    json_t *tls = json_object_get(*w, "timelines");
    *tli = current ? 0 : latest ? caris_wal_latest_timeline(tls) : (uint32_t)v;
    if (!latest && !current) {
        /* a timeline the archive has neither WAL nor a history file of cannot be followed:
         * said so, not that no backup ends before the target (there may be none) */
        char have[200] = "";
        bool found = false;
        size_t i;
        json_t *x;
        json_array_foreach(tls, i, x)
        {
            json_int_t n = json_integer_value(json_object_get(x, "timeline"));
            found |= n == (json_int_t)v;
            char num[24];
            snprintf(num, sizeof(num), "%lld", (long long)n);
            str_list_add(have, sizeof(have), num);
        }
        if (!found) {
            json_decref(*w);
            *w = NULL;
            return err_set(e, ERR_USAGE,
                           "give a timeline of the archive (`caris-backup wal list` shows them), "
                           "or leave out --timeline to follow the latest",
                           "timeline %lu is not in the WAL archive (its timelines: %s)", v,
                           *have ? have : "none");
        }
    }
    return 0;
}

/* Whether recovery to timeline tli (0: the backup's own) passes through backup s. */
static bool on_target_history(json_t *s, json_t *tls, uint32_t tli)
{
    json_t *phys = json_object_get(s, "physical");
    json_int_t btl = json_integer_value(json_object_get(phys, "stop_timeline"));
    if (btl <= 0)
        btl = json_integer_value(json_object_get(phys, "timeline"));
    uint64_t stop;
    if (tli == 0 || btl == (json_int_t)tli)
        return true;
    if (btl <= 0 || btl > UINT32_MAX ||
        caris_lsn_parse(json_string_value(json_object_get(phys, "stop_lsn")), &stop) != 0)
        return false;
    return caris_wal_timeline_reaches(tls, (uint32_t)btl, stop, tli);
}

/* The backup to restore: the one named, or the latest physical one that ends before the
 * target on the target timeline's history (tli, 0: any). *name gets its snapshot's object
 * name. */
static int choose_backup_on(struct repo *r, const struct phys_restore_opts *o, uint32_t tli,
                            json_t *tls, char name[65], json_t **summary, struct err *e)
{
    if (o->backup_id) {
        if (repo_snapshot_find(r, o->backup_id, name, summary, e) != 0)
            return -1;
        const char *why = NULL, *hint = NULL;
        if (!is_physical(*summary)) {
            why = "is not a physical backup";
            hint = "restore it with `caris-backup restore database ID` (without --physical)";
        } else if (!ends_before(*summary, o)) {
            why = "ends after the recovery target: recovery cannot stop before the backup's end";
            hint = "choose an earlier backup, or leave out the id";
        } else if (!on_target_history(*summary, tls, tli)) {
            why = "is not on the history of the recovery timeline (it was taken on another "
                  "timeline, or after the target timeline branched off its own)";
            hint = "leave out the id to pick a backup on that history, or choose the timeline "
                   "with --timeline (current: the backup's own); `caris-backup wal list` shows "
                   "the timelines and where each branched off";
        }
        if (why) {
            json_decref(*summary);
            *summary = NULL;
            return err_set(e, ERR_USAGE, hint, "backup %s %s (recovery timeline %u)", o->backup_id,
                           why, tli);
        }
        return 0;
    }
    json_t *all = repo_snapshot_list(r, NULL, e);
    if (!all)
        return -1;
    json_t *best = NULL;
    size_t i;
    json_t *s;
    json_array_foreach(all, i, s) /* oldest first */
    {
        if (is_physical(s) && ends_before(s, o) && on_target_history(s, tls, tli))
            best = s;
    }
    bool any = false;
    json_array_foreach(all, i, s) any |= is_physical(s);
    if (!any) {
        json_decref(all);
        return err_set(e, ERR_NOT_FOUND,
                       "take one with `caris-backup backup database --physical` (with PostgreSQL "
                       "archiving its WAL with `caris-backup wal push`: README, \"WAL archive\")",
                       "the repository has no physical base backup to restore");
    }
    if (!best) {
        json_decref(all);
        if (tli == 0)
            return err_set(e, ERR_NOT_FOUND,
                           "choose an earlier target, or give a backup's id (`caris-backup list "
                           "--type database`)",
                           "no physical backup ends before the recovery target");
        return err_set(e, ERR_NOT_FOUND,
                       "take one with `caris-backup backup database --physical` (a target "
                       "before the first base backup cannot be reached)",
                       "no physical backup ends before the recovery target on the history of "
                       "timeline %u",
                       tli);
    }
    snprintf(name, 65, "%s", json_string_value(json_object_get(best, "_file")));
    *summary = json_incref(best);
    json_decref(all);
    return 0;
}

/* The backup to restore (choose_backup_on) on the timeline o asks for (*tli), and the archive
 * (*w, target_timeline's) for check_gaps. */
static int choose_backup(struct repo *r, const struct phys_restore_opts *o, char name[65],
                         json_t **summary, uint32_t *tli, json_t **w, struct err *e)
{
    if (target_timeline(r, o, tli, w, e) != 0)
        return -1;
    return choose_backup_on(r, o, *tli, json_object_get(*w, "timelines"), name, summary, e);
}

/* The refusal of a recovery the archive cannot complete (the README's "Physical base backups
 * and point-in-time recovery"): PostgreSQL, when restore_command finds no next segment, takes
 * it for the end of the archive. Without a target it then promotes, which silently drops every
 * transaction in the WAL archived after the gap; so a recovery from backup s (its summary)
 * that runs into a gap (caris_wal_recovery_gap) is refused without a target, with a --to-lsn
 * target at or after the gap's start (replay stops at a record that starts at or after the
 * target, which would lie in the missing segment), and with any target when the gap lies
 * before the backup is consistent. For --to-time, --to-xid and --to-name where the target lies
 * is unknown here (the archive records when a segment was pushed, not when its commits were
 * made): PostgreSQL refuses to promote when the WAL ends before the target ("recovery ended
 * before configured recovery target was reached"), so those go on, with a warning, and *note
 * (size n) gets what to add to that failure's hint. */
/* "WAL segment F" or "N WAL segments F..T", of a gap (or an unarchived run) g. */
static void segments_text(json_t *g, char *out, size_t n)
{
    json_int_t k = json_integer_value(json_object_get(g, "segments"));
    const char *from = json_string_value(json_object_get(g, "from"));
    if (k == 1)
        snprintf(out, n, "WAL segment %s", from);
    else
        snprintf(out, n, "%lld WAL segments %s..%s", (long long)k, from,
                 json_string_value(json_object_get(g, "to")));
}

/* The WAL window's entry of timeline tli and, in *end, where its last whole segment archived
 * ends; NULL when the window has no segment of that timeline. */
static json_t *window_timeline(json_t *w, uint32_t tli, uint64_t *end)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(w, "timelines"), i, t)
    {
        if (json_integer_value(json_object_get(t, "timeline")) == (json_int_t)tli)
            return caris_lsn_parse(json_string_value(json_object_get(t, "end_lsn")), end) == 0
                       ? t
                       : NULL;
    }
    return NULL;
}

/* A --to-lsn at or past the end of the WAL archived on the recovery's timeline tli: recovery
 * reaches it only if the rest is archived before the server starts (restore_command reads the
 * archive then); otherwise PostgreSQL stops at the archive's end and does not start ("recovery
 * ended before configured recovery target was reached"). The warning to give, or NULL. */
static char *past_archive_end(const struct phys_restore_opts *o, json_t *s, json_t *w, uint32_t tli)
{
    if (o->target != PHYS_TARGET_LSN)
        return NULL;
    if (!tli) { /* --timeline current: the backup's own */
        json_t *phys = json_object_get(s, "physical");
        json_int_t btl = json_integer_value(json_object_get(phys, "timeline"));
        if (btl <= 0 || btl > UINT32_MAX)
            return NULL;
        tli = (uint32_t)btl;
    }
    uint64_t end;
    json_t *t = window_timeline(w, tli, &end);
    if (!t || o->target_lsn < end)
        return NULL;
    const char *ends = json_string_value(json_object_get(t, "end_lsn"));
    return xasprintf("the WAL archive ends at %s on timeline %u, before the target %s: archive "
                     "the WAL up to the target (`caris-backup wal push`; the source server "
                     "archives it as it fills segments), or restore with an earlier --to-lsn; "
                     "recovery reaches the target only if that WAL is archived before the server "
                     "starts (else it stops at %s and the server does not start)",
                     ends, tli, o->target_value ? o->target_value : "?", ends);
}

/* A WAL segment size PostgreSQL can have: a power of two from 1 MiB to 1 GiB. */
static bool wal_segment_size_ok(int64_t segsz)
{
    return segsz >= (1 << 20) && segsz <= (1 << 30) && (segsz & (segsz - 1)) == 0;
}

/* The last whole segment archived on the timeline a recovery from backup s follows (tli; 0:
 * the backup's own) into res (archive_last, archive_last_lsn), when w has one. */
static void archive_last_segment(json_t *s, json_t *w, uint32_t tli,
                                 struct phys_restore_result *res)
{
    int64_t segsz = (int64_t)json_integer_value(json_object_get(w, "segment_size"));
    if (!wal_segment_size_ok(segsz))
        return;
    if (!tli) { /* 'current': the timeline of the checkpoint the backup starts from */
        json_t *phys = json_object_get(s, "physical");
        json_t *stl = json_object_get(phys, "start_timeline");
        json_int_t btl = json_integer_value(stl ? stl : json_object_get(phys, "timeline"));
        if (btl <= 0 || btl > UINT32_MAX)
            return;
        tli = (uint32_t)btl;
    }
    uint64_t end = 0;
    json_t *t = window_timeline(w, tli, &end);
    const char *last = json_string_value(json_object_get(t, "last"));
    if (!last || end < (uint64_t)segsz)
        return;
    res->archive_last = xstrdup(last);
    res->archive_last_lsn = end - (uint64_t)segsz;
}

static int check_gaps(const struct phys_restore_opts *o, json_t *s, json_t *w, uint32_t tli,
                      char *note, size_t n, struct err *e)
{
    note[0] = '\0';
    if (!w)
        return 0; /* target_timeline warned */
    json_t *phys = json_object_get(s, "physical");
    json_t *stl = json_object_get(phys, "start_timeline");
    json_int_t btl = json_integer_value(stl ? stl : json_object_get(phys, "timeline"));
    const char *id = json_string_value(json_object_get(s, "id")) ?: "?";
    uint64_t start, stop;
    if (btl <= 0 || btl > UINT32_MAX ||
        caris_lsn_parse(json_string_value(json_object_get(phys, "start_lsn")), &start) != 0 ||
        caris_lsn_parse(json_string_value(json_object_get(phys, "stop_lsn")), &stop) != 0)
        return err_set(e, ERR_DAMAGE, "run `caris-backup check`",
                       "backup %s does not record where its WAL starts and ends: whether the "
                       "archive can complete its recovery is unknown",
                       id);
    /* its own WAL outside what is archived (never pushed, --no-archive-check): the server
     * could not even become consistent */
    /* (an archive without a segment has no size of its own: the backup's then; with none,
     * the check said nothing was missing and the restore went on) */
    int64_t segsz = (int64_t)json_integer_value(json_object_get(w, "segment_size"));
    if (segsz <= 0)
        segsz = (int64_t)json_integer_value(json_object_get(phys, "wal_segment_size"));
    json_t *u = caris_wal_base_unarchived(json_object_get(w, "timelines"), segsz, (uint32_t)btl,
                                          start, stop);
    if (u) {
        json_int_t un = json_integer_value(json_object_get(u, "segments"));
        char what[128];
        segments_text(u, what, sizeof(what));
        err_set(e, ERR_DAMAGE,
                "if the source server still has the WAL in pg_wal, archive it with `caris-backup "
                "wal push` (and check archive_command: `caris-backup --env-file F wal push %p`); "
                "or restore another base backup (`caris-backup list --type database`)",
                "backup %s cannot be restored: %s, needed before the backup is consistent (at "
                "%s), %s not in the WAL archive",
                id, what, json_string_value(json_object_get(phys, "stop_lsn")),
                un == 1 ? "is" : "are");
        json_decref(u);
        return -1;
    }
    json_t *g = caris_wal_recovery_gap(
        json_object_get(w, "timelines"),
        (int64_t)json_integer_value(json_object_get(w, "segment_size")), (uint32_t)btl, start, tli);
    if (!g)
        return 0;
    const char *from = json_string_value(json_object_get(g, "from"));
    const char *to = json_string_value(json_object_get(g, "to"));
    const char *reach = json_string_value(json_object_get(g, "start_lsn"));
    uint64_t gs;
    if (!from || !to || !reach || caris_lsn_parse(reach, &gs) != 0)
        return 0; /* caris_wal_recovery_gap only returns gaps with a parsable start */
    char missing[128];
    segments_text(g, missing, sizeof(missing));
    if (gs < stop)
        return err_set(e, ERR_DAMAGE,
                       "find the segment (e.g. in the source server's pg_wal) and archive it with "
                       "`caris-backup wal push`, or restore another base backup (`caris-backup "
                       "list --type database`; `caris-backup wal list` shows the gaps)",
                       "backup %s cannot be restored: %s, needed before the backup is consistent "
                       "(at %s), is missing from the WAL archive",
                       id, missing, json_string_value(json_object_get(phys, "stop_lsn")));
    char hint[512];
    snprintf(hint, sizeof(hint),
             "to accept losing the WAL from %s on, restore with --to-lsn before %s (e.g. an LSN "
             "pg_current_wal_insert_lsn() gave after the last transaction you need); or find the "
             "missing WAL (e.g. in the source server's pg_wal) and archive it with `caris-backup "
             "wal push`, or restore a base backup taken after the gap; `caris-backup check` and "
             "`caris-backup wal list` show the gap",
             reach, reach);
    if (o->target == PHYS_TARGET_NONE)
        return err_set(e, ERR_DAMAGE, hint,
                       "%s is missing from the WAL archive: recovery from backup %s can replay "
                       "the WAL only up to %s, and without a target it would end there and "
                       "promote, silently losing the transactions archived after the gap",
                       missing, id, reach);
    if (o->target == PHYS_TARGET_LSN && o->target_lsn >= gs)
        return err_set(e, ERR_DAMAGE, hint,
                       "%s is missing from the WAL archive: recovery from backup %s can replay "
                       "the WAL only up to %s, so it cannot reach the target %s",
                       missing, id, reach, o->target_value ? o->target_value : "?");
    if (o->target == PHYS_TARGET_LSN || o->target == PHYS_TARGET_IMMEDIATE)
        return 0; /* the target lies before the gap */
    snprintf(note, n,
             "%s is missing from the WAL archive: recovery from backup %s can replay the WAL "
             "only up to %s, so a target after that cannot be reached (restore with --to-lsn "
             "before %s to accept the loss, or archive the missing WAL with `caris-backup wal "
             "push`)",
             missing, id, reach, reach);
    caris_op_log(o->op, LOG_WARN,
                 "%s; where this target lies is not known before recovery: if after %s, the "
                 "server stops before it and the restore fails",
                 note, reach);
    return 0;
}

static bool safe_rel(const char *p)
{
    if (!p || !*p || *p == '/')
        return false;
    for (const char *s = p; s;) {
        if (strncmp(s, "..", 2) == 0 && (s[2] == '/' || s[2] == '\0'))
            return false;
        if (s[0] == '/')
            return false;
        s = strchr(s, '/');
        if (s)
            s++;
    }
    return true;
}

/* mkdir -p of root/rel, each new directory 0700. */
static int make_dirs(const char *root, const char *rel, struct err *e)
{
    char *p = xasprintf("%s/%s", root, rel);
    for (char *s = p + strlen(root) + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0700) != 0 && errno != EEXIST) {
                err_sys(e, errno, NULL, "cannot create directory %s", p);
                free(p);
                return -1;
            }
            *s = c;
            if (!c)
                break;
        }
    }
    free(p);
    return 0;
}

static int write_small(const char *path, const char *text, struct err *e)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_sys(e, errno, NULL, "cannot create %s", path);
    size_t n = strlen(text);
    if (fs_write_full(fd, text, n) != 0 || fsync(fd) != 0) {
        int er = errno;
        close(fd);
        return err_sys(e, er, NULL, "cannot write %s", path);
    }
    close(fd);
    return 0;
}

/* A value for postgresql.conf: single-quoted, quotes and backslashes doubled (its parser
 * takes backslash escapes in quoted values); NULL for a value with a control character (a
 * newline would end the setting and could start another). */
static char *conf_quote(const char *v)
{
    struct buf b = {0};
    buf_append_u8(&b, '\'');
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            buf_free(&b);
            return NULL;
        }
        if (*p == '\'' || *p == '\\')
            buf_append_u8(&b, (uint8_t)*p);
        buf_append_u8(&b, (uint8_t)*p);
    }
    buf_append(&b, "'", 2);
    return (char *)b.data;
}

/* The time target as PostgreSQL's recovery_target_time takes it: UTC with an explicit offset
 * (its own TimeZone may differ from ours, and it refuses zone abbreviations such as Z), with
 * the fraction of a second as given. */
static void pg_time_value(const struct phys_restore_opts *o, char *out, size_t n)
{
    char iso[40];
    time_format_iso(o->target_time_ns - o->target_time_ns % 1000000000, iso, sizeof(iso));
    /* "YYYY-MM-DDTHH:MM:SS[.mmm]Z" */
    iso[10] = ' ';
    iso[19] = '\0';
    const char *dot = o->target_value ? strchr(o->target_value, '.') : NULL;
    size_t k = dot ? strspn(dot + 1, "0123456789") : 0;
    snprintf(out, n, "%s%.*s+00", iso, k ? (int)k + 1 : 0, dot ? dot : "");
}

/* A transaction id in decimal without leading zeros, into out: PostgreSQL reads
 * recovery_target_xid with strtou64(value, NULL, 0), so '0755' was xid 493 (octal), and
 * recovery stopped at another transaction and promoted ('09' was 0). false: not a number that
 * fits 64 bits. */
static bool xid_decimal(const char *v, char out[24])
{
    if (!v || !*v || strspn(v, "0123456789") != strlen(v))
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end)
        return false;
    snprintf(out, 24, "%llu", x);
    return true;
}

/* xid: the --to-xid target as xid_decimal gave it (PHYS_TARGET_XID only); follow: the
 * timeline recovery follows when it is a fixed one (--timeline current: the backup's, or a
 * number), 0 for 'latest' */
static int write_recovery_settings(const char *dir, const char *id,
                                   const struct phys_restore_opts *o, const char *xid,
                                   bool tablespaces, uint32_t follow, struct err *e)
{
    static const char *const keys[] = {"",
                                       "recovery_target_time",
                                       "recovery_target_lsn",
                                       "recovery_target_xid",
                                       "recovery_target_name",
                                       "recovery_target"};
    char *path = xasprintf("%s/postgresql.auto.conf", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        err_sys(e, errno, NULL, "cannot open %s", path);
        free(path);
        return -1;
    }
    struct buf b = {0};
    /* `wal get` is told the timeline followed when it is a fixed one: it serves an older
     * timeline's streamed partial up to where the followed history leaves that timeline, and
     * all of it when it is the one followed (without it: as for 'latest', the newest timeline) */
    size_t cl = strlen(o->restore_command); /* ends in " %f %p" (caris_phys_restore) */
    char *cmdline =
        follow ? xasprintf("%.*s --timeline %u %%f %%p", (int)(cl - 6), o->restore_command, follow)
               : xstrdup(o->restore_command);
    char *rc = conf_quote(cmdline);
    free(cmdline);
    char *v = NULL;
    if (o->target != PHYS_TARGET_NONE) {
        char tv[96];
        if (o->target == PHYS_TARGET_TIME)
            pg_time_value(o, tv, sizeof(tv));
        v = conf_quote(o->target == PHYS_TARGET_IMMEDIATE ? "immediate"
                       : o->target == PHYS_TARGET_TIME    ? tv
                       : o->target == PHYS_TARGET_XID     ? xid
                                                          : o->target_value);
    }
    if (!rc || (o->target != PHYS_TARGET_NONE && !v)) {
        free(rc);
        free(v);
        close(fd);
        free(path);
        return err_set(e, ERR_USAGE, "give the value without control characters (newlines)",
                       "a recovery setting holds a control character");
    }
    char *line = xasprintf("\n# recovery settings written by caris-backup restore database "
                           "--physical %s\nrestore_command = %s\n",
                           id, rc);
    buf_append(&b, line, strlen(line));
    free(line);
    free(rc);
    /* the restored server must not archive into the repository it came from until the
     * operator has checked it (docs/BACKUP_RECOVERY.md: turn archiving back on) */
    const char *fixed = "archive_mode = 'off'\n";
    buf_append(&b, fixed, strlen(fixed));
    /* nor read WAL from anywhere but that archive: a standby's settings (primary_conninfo)
     * would make it follow the source's primary, were standby.signal ever added */
    fixed = "primary_conninfo = ''\nprimary_slot_name = ''\n";
    buf_append(&b, fixed, strlen(fixed));
    /* nor run the source's commands for its own archive: archive_cleanup_command (a standby's
     * pg_archivecleanup removes WAL from the archive it names, at every restartpoint) and
     * recovery_end_command */
    fixed = "archive_cleanup_command = ''\nrecovery_end_command = ''\n";
    buf_append(&b, fixed, strlen(fixed));
    /* nor start the source's logical replication subscriptions once promoted: their workers
     * would connect to the publishers and consume the source's replication slots, whose
     * changes the source (the subscriber in service) would then never receive */
    fixed = "max_logical_replication_workers = 0\n";
    buf_append(&b, fixed, strlen(fixed));
    /* nor the source's recovery habits: recovery_target_inclusive = off (left by a manual
     * PITR "to just before the bad transaction") made --to-xid X stop before X's commit, and
     * --to-time / --to-lsn exclusive, silently; recovery_min_apply_delay (a delayed standby's)
     * held every commit back for its delay, in archive recovery too */
    fixed = "recovery_target_inclusive = on\nrecovery_min_apply_delay = 0\n";
    buf_append(&b, fixed, strlen(fixed));
    /* tablespaces come back as directories under pg_tblspc (write_tree): PostgreSQL 15 stops
     * recovery on such "in-place" tablespaces unless this is on */
    if (tablespaces) {
        fixed = "allow_in_place_tablespaces = on\n";
        buf_append(&b, fixed, strlen(fixed));
    }
    /* every target but ours set empty: a setting of an earlier recovery left in the source's
     * postgresql.auto.conf would otherwise add a second target (PostgreSQL refuses to start) */
    for (size_t k = 1; k < sizeof(keys) / sizeof(keys[0]); k++) {
        if ((int)k == (int)o->target)
            continue;
        line = xasprintf("%s = ''\n", keys[k]);
        buf_append(&b, line, strlen(line));
        free(line);
    }
    if (o->target != PHYS_TARGET_NONE) {
        line = xasprintf("%s = %s\nrecovery_target_action = '%s'\n", keys[o->target], v,
                         o->target_action ? o->target_action : "promote");
        buf_append(&b, line, strlen(line));
        free(line);
        free(v);
    }
    /* the timeline to follow, always written (a setting of the source's own would otherwise
     * apply): 'latest' by default, the history the database went on with after an earlier
     * PITR or a promotion (its .history file in the archive, fetched by wal get) */
    line = xasprintf("recovery_target_timeline = '%s'\n",
                     o->target_timeline ? o->target_timeline : "latest");
    buf_append(&b, line, strlen(line));
    free(line);
    int rcode = 0;
    if (write(fd, b.data, b.len) != (ssize_t)b.len || fsync(fd) != 0)
        rcode = err_sys(e, errno, NULL, "cannot write %s", path);
    close(fd);
    buf_free(&b);
    free(path);
    return rcode;
}

/* Files up to this size are restored whole by one worker of the file pool, several at once
 * (a data directory is mostly small files: catalogs, free space and visibility maps); larger
 * ones one at a time by the calling thread, their chunks loaded on the chunk pool. */
#define SMALL_FILE_MAX (4u << 20)

struct restore_ctx {
    struct repo *r;
    const struct phys_restore_opts *o;
    pthread_mutex_t mu; /* guards what follows: workers finish files while the caller writes */
    uint64_t files, done_bytes;
    int64_t start_mono, last;
    const char *backup_id; /* for errors */
    bool failed;
    struct err err; /* the first failure */
};

static void report(struct restore_ctx *rc, uint64_t extra)
{
    int64_t now = time_mono_ns();
    pthread_mutex_lock(&rc->mu);
    if (rc->o->progress && now - rc->last >= 200000000) {
        rc->last = now;
        progress_report(rc->o->progress, rc->o->ctx, "restore", rc->files, rc->done_bytes + extra,
                        0, rc->start_mono);
    }
    pthread_mutex_unlock(&rc->mu);
}

static void on_bytes(void *ctx, uint64_t bytes)
{
    report(ctx, bytes);
}

struct file_job {
    struct restore_ctx *rc;
    const char *name; /* relative to the data directory (the manifest's, borrowed) */
    char *path;       /* where it is written */
    json_t *chunks;   /* borrowed */
    uint8_t sha[32];
    mode_t mode;
    uint64_t size;
};

/* Writes one file: its chunks loaded on pool (NULL: in this thread), the whole file's SHA-256
 * checked. Not fsynced one by one: the caller syncs the whole tree once (syncfs) before it
 * goes into place, and a restore is complete only after that. */
static int restore_file(struct file_job *j, struct pool *pool, bool progress, struct err *e)
{
    int fd = open(j->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_sys(e, errno, NULL, "cannot create %s", j->path);
    /* no chunk id recomputed (as the file restore): every blob is authenticated (AES-GCM
     * under its id), and the tree is used only once every file matched its SHA-256 */
    int src = stream_restore_fd_on(j->rc->r, j->chunks, j->sha, fd, pool, REPO_LOAD_NO_ID_CHECK,
                                   progress ? on_bytes : NULL, j->rc, j->rc->o->op, e);
    if (src == 0 && fchmod(fd, j->mode) != 0)
        src = err_sys(e, errno, NULL, "cannot write %s", j->path);
    if (close(fd) != 0 && src == 0)
        src = err_sys(e, errno, NULL, "cannot write %s", j->path);
    if (src != 0)
        return -1;
    pthread_mutex_lock(&j->rc->mu);
    j->rc->files++;
    j->rc->done_bytes += j->size;
    pthread_mutex_unlock(&j->rc->mu);
    return 0;
}

/* Records e as the restore's failure unless one was recorded first. */
static void note_failure(struct restore_ctx *rc, const struct err *e)
{
    pthread_mutex_lock(&rc->mu);
    if (!rc->failed) {
        rc->failed = true;
        rc->err = *e;
    }
    pthread_mutex_unlock(&rc->mu);
}

static bool has_failed(struct restore_ctx *rc)
{
    pthread_mutex_lock(&rc->mu);
    bool f = rc->failed;
    pthread_mutex_unlock(&rc->mu);
    return f;
}

static void file_job_free(struct file_job *j)
{
    free(j->path);
    free(j);
}

/* A small file, on a worker of the file pool: its chunks loaded in this thread. */
static void small_file_job(void *arg, int worker)
{
    (void)worker;
    struct file_job *j = arg;
    struct err e = ERR_INIT;
    if (!has_failed(j->rc) && restore_file(j, NULL, false, &e) != 0) {
        if (e.code == ERR_DAMAGE)
            err_wrap(&e, "file %s of backup %s", j->name, j->rc->backup_id);
        note_failure(j->rc, &e);
    }
    report(j->rc, 0);
    file_job_free(j);
}

/* Writes every directory, file and link of the backup under dir. */
static int write_tree(struct repo *r, json_t *summary, json_t *entries, const char *dir,
                      const struct phys_restore_opts *o, struct phys_restore_result *res,
                      struct err *e)
{
    json_t *phys = json_object_get(summary, "physical");
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(phys, "directories"), i, x)
    {
        const char *n = json_string_value(json_object_get(x, "name"));
        if (!safe_rel(n))
            return err_set(e, ERR_DAMAGE, NULL, "unsafe directory name in the backup");
        if (make_dirs(dir, n, e) != 0)
            return -1;
    }
    /* no link of the backup is restored as a link: tablespaces (pg_tblspc/<oid>) and any
     * other link the stream holds (PostgreSQL sends pg_wal and its other known directories
     * as directories even when they are links, e.g. after initdb -X) come back as
     * directories inside the data directory, never pointing at their old location, which
     * may be another cluster's (or the source's own, still in use) */
    json_array_foreach(json_object_get(phys, "symlinks"), i, x)
    {
        const char *n = json_string_value(json_object_get(x, "name"));
        const char *t = json_string_value(json_object_get(x, "target"));
        if (!safe_rel(n) || !t)
            return err_set(e, ERR_DAMAGE, NULL, "unsafe link name in the backup");
        if (strncmp(n, "pg_tblspc/", 10) != 0)
            caris_op_log(o->op, LOG_WARN,
                         "link %s -> %s of the source restored as a directory inside the data "
                         "directory",
                         n, t);
        if (make_dirs(dir, n, e) != 0)
            return -1;
    }
    /* small files on the file pool's workers, several at once; large ones here, one at a
     * time, each with its chunks loaded on the chunk pool: both run side by side */
    int threads = o->threads > 0 ? o->threads : sys_ncpu();
    struct restore_ctx rc = {.r = r,
                             .o = o,
                             .start_mono = time_mono_ns(),
                             .backup_id = json_string_value(json_object_get(summary, "id"))};
    pthread_mutex_init(&rc.mu, NULL);
    struct pool *files = pool_new(threads, (size_t)threads * 4);
    struct pool *chunks = pool_new(threads, 64);
    struct err le = ERR_INIT;
    json_array_foreach(entries, i, x)
    {
        if (caris_op_check(o->op, NULL, &le) != 0) {
            note_failure(&rc, &le);
            break;
        }
        if (has_failed(&rc))
            break;
        const char *n = json_string_value(json_object_get(x, "name"));
        const char *hex = json_string_value(json_object_get(x, "sha256"));
        struct file_job *j = xcalloc(1, sizeof(*j));
        if (!safe_rel(n) || !hex || cx_unhex(hex, j->sha, 32) != 0) {
            free(j);
            err_set(&le, ERR_DAMAGE, "run `caris-backup check --read-data`",
                    "malformed file entry in the backup");
            note_failure(&rc, &le);
            break;
        }
        /* A base backup of a standby holds its standby.signal: restored beside our
         * recovery.signal, it put the server in standby mode (which wins), following the
         * source's primary (primary_conninfo) instead of recovering from the archive checked
         * here, never reaching a target or promoting */
        if (strcmp(n, "standby.signal") == 0) {
            caris_op_log(o->op, LOG_WARN,
                         "the backup was taken on a standby: its standby.signal is not restored "
                         "(the restored server recovers from the WAL archive, and does not "
                         "follow the source's primary)");
            free(j);
            continue;
        }
        const char *slash = strrchr(n, '/');
        if (slash) {
            char *parent = xstrndup(n, (size_t)(slash - n));
            int mrc = make_dirs(dir, parent, &le);
            free(parent);
            if (mrc != 0) {
                free(j);
                note_failure(&rc, &le);
                break;
            }
        }
        int mode = (int)json_integer_value(json_object_get(x, "mode")) & 0700;
        j->rc = &rc;
        j->name = n;
        j->path = xasprintf("%s/%s", dir, n);
        j->chunks = json_object_get(x, "chunks");
        j->mode = (mode_t)(mode ? mode : 0600);
        j->size = (uint64_t)json_integer_value(json_object_get(x, "size"));
        if (j->size <= SMALL_FILE_MAX) {
            pool_submit(files, small_file_job, j);
            continue;
        }
        if (restore_file(j, chunks, true, &le) != 0) {
            if (le.code == ERR_DAMAGE)
                err_wrap(&le, "file %s of backup %s", n, rc.backup_id);
            note_failure(&rc, &le);
        }
        file_job_free(j);
    }
    pool_free(files); /* waits for the small files still being written */
    pool_free(chunks);
    int ret = 0;
    if (rc.failed) {
        *e = rc.err;
        ret = -1;
    }
    pthread_mutex_destroy(&rc.mu);
    if (ret != 0)
        return -1;
    /* WAL comes from the archive: the directories the server needs, even if empty */
    if (make_dirs(dir, "pg_wal/archive_status", e) != 0)
        return -1;
    res->files = rc.files;
    res->bytes = rc.done_bytes;
    return 0;
}

static bool dir_empty(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return false;
    }
    struct dirent *de;
    bool empty = true;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            empty = false;
            break;
        }
    closedir(d);
    return empty;
}

/* ---- starting the restored server ------------------------------------------------------ */

static pid_t postmaster_pid(const char *pgdata)
{
    char *p = xasprintf("%s/postmaster.pid", pgdata);
    FILE *f = fopen(p, "r");
    free(p);
    if (!f)
        return 0;
    long v = 0;
    if (fscanf(f, "%ld", &v) != 1)
        v = 0;
    fclose(f);
    return (pid_t)v;
}

/* May a server be running on PGDATA? Its postmaster.pid names a live process. A process of
 * another user (EPERM) counts: a restore run by another user than the server's cannot signal
 * it, and must not take that for "not running" (PostgreSQL's own check may, because it always
 * runs as the data directory's owner). *pid is the process named, 0 without one. */
static bool server_may_run(const char *pgdata, pid_t *pid, bool *other_user)
{
    *pid = postmaster_pid(pgdata);
    *other_user = false;
    if (*pid <= 0)
        return false;
    if (kill(*pid, 0) == 0)
        return true;
    *other_user = errno == EPERM;
    return errno != ESRCH;
}

/* The previous data directories (.BASE.caris-old-PID) that a restore --overwrite killed
 * between its two renames left beside PGDATA: each may be the only copy of that cluster, so
 * none is removed; each is named, so that the operator looks at it. Those of a live process
 * (a restore in its swap now) are not named. */
static void report_old_copies(const char *parent, const char *base, const char *pgdata, bool exists,
                              const struct caris_op *op)
{
    DIR *d = opendir(parent);
    if (!d)
        return;
    char *prefix = xasprintf(".%s.caris-old-", base);
    size_t plen = strlen(prefix);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, plen) != 0)
            continue;
        char *end = NULL;
        errno = 0;
        long long pid = strtoll(de->d_name + plen, &end, 10);
        struct stat st;
        if (errno || !end || *end || end == de->d_name + plen || pid <= 0 ||
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
            continue;
        if (pid <= INT32_MAX && (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue;
        caris_op_log(op, LOG_WARN,
                     "%s/%s holds the data directory that was at %s before a restore "
                     "--overwrite, which was killed before %s%s%s. It may be the only copy of "
                     "that cluster, and nothing removes it: look at it, then remove it (rm -rf) "
                     "once it is not needed",
                     parent, de->d_name, pgdata,
                     exists ? "it removed it" : "its new one went in place (that is why ",
                     exists ? "" : pgdata, exists ? "" : " was missing)");
    }
    free(prefix);
    closedir(d);
}

/* The excerpt of what the log got from offset from on (this start's lines) that an error
 * message quotes: pgsrc_log_excerpt's. */
static void log_tail(const char *path, size_t from, char *out, size_t n)
{
    struct buf b = {0};
    struct err ie = ERR_INIT;
    out[0] = '\0';
    if (fs_read_all(path, &b, &ie) != 0)
        return;
    if (from > b.len)
        from = 0;
    pgsrc_log_excerpt((const char *)b.data + from, b.len - from, 600, out, n);
    buf_free(&b);
}

/* Whether what the log got from offset from on (pg_ctl -l appends: an earlier start's lines
 * are before it) holds needle. */
static bool log_has(const char *path, size_t from, const char *needle)
{
    struct buf b = {0};
    struct err ie = ERR_INIT;
    if (fs_read_all(path, &b, &ie) != 0)
        return false;
    buf_append_u8(&b, 0);
    bool has = from < b.len && strstr((const char *)b.data + from, needle) != NULL;
    buf_free(&b);
    return has;
}

/* Whether the server started with its log at path (from offset from) logged its end: a server
 * that gives up at once (a library of shared_preload_libraries not installed here, a bad
 * setting) is gone before its postmaster.pid is seen. */
static bool log_says_stopped(const char *path, size_t from)
{
    return log_has(path, from, "FATAL:") || log_has(path, from, "PANIC:") ||
           log_has(path, from, "database system is shut down");
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The hint of a server that stopped before its target: the gap recovery ran into (gap_note,
 * check_gaps'), else, for a --to-xid or --to-name target with the backup chosen here (the
 * newest: where such a target lies is unknown), that an older backup may be needed. */
static void stopped_hint(const struct phys_restore_opts *o, const char *backup_id,
                         const char *gap_note, char *out, size_t n)
{
    if (gap_note && *gap_note)
        snprintf(out, n, "%s; the restored data directory is kept", gap_note);
    else if (!o->backup_id && (o->target == PHYS_TARGET_XID || o->target == PHYS_TARGET_NAME))
        snprintf(out, n,
                 "without an id the newest base backup (%s) is restored, and a --to-xid or "
                 "--to-name target before its end cannot be reached from it: name an older base "
                 "backup's id (`caris-backup list --type database`); the restored data directory "
                 "is kept",
                 backup_id ? backup_id : "?");
    else
        snprintf(out, n, "see the server's log; the restored data directory is kept");
}

/* --start's conditions, checked before anything is written: refused after the restore, they
 * left a data directory owned by root that the server's user can neither start nor replace. */
static int start_preflight(const struct phys_restore_opts *o, struct err *e)
{
    if (geteuid() == 0)
        return err_set(e, ERR_USAGE,
                       "run the restore as the database's system user (e.g. runuser -u postgres "
                       "-- caris-backup ...), or start the server yourself; nothing was written",
                       "--start: PostgreSQL does not run as root");
    if (strchr(o->pgdata, '\''))
        return err_set(e, ERR_USAGE, "nothing was written",
                       "--start: the data directory's path has a quote");
    return 0;
}

/* The history a promotion wrote: the newest .history in DIR/pg_wal (PostgreSQL keeps the
 * older timelines' files it fetched beside it, and picks a new timeline above all it can see),
 * oldest switch first; its last line is the timeline recovery followed (recovery_target_timeline,
 * resolved) and where recovery ended (EndOfLog). 0 with *tli (the new timeline), *sw (free) and
 * *n >= 1; -1 when none can be read. */
static int promotion_history(const char *pgdata, uint32_t *tli, struct caris_wal_switch **sw,
                             size_t *n)
{
    char *dir = xasprintf("%s/pg_wal", pgdata);
    DIR *d = opendir(dir);
    uint32_t best = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        const char *f = de->d_name;
        if (strlen(f) == 16 && strcmp(f + 8, ".history") == 0 &&
            strspn(f, "0123456789ABCDEF") == 8) {
            uint32_t t = (uint32_t)strtoul(f, NULL, 16);
            if (t > best)
                best = t;
        }
    }
    if (d)
        closedir(d);
    int rc = -1;
    *sw = NULL;
    *n = 0;
    if (best) {
        char name[17];
        snprintf(name, sizeof(name), "%08X.history", best);
        char *path = xasprintf("%s/%s", dir, name);
        struct buf b = {0};
        struct err ie = ERR_INIT;
        if (fs_read_all(path, &b, &ie) == 0 &&
            caris_wal_history_parse((const char *)b.data, b.len, name, sw, n, &ie) == 0 && *n) {
            *tli = best;
            rc = 0;
        } else {
            free(*sw);
            *sw = NULL;
            *n = 0;
        }
        buf_free(&b);
        free(path);
    }
    free(dir);
    return rc;
}

/* A recovery without a target that promoted before the end of the WAL archived on the timeline
 * it followed (window: the archive as it was before the restore): PostgreSQL ends recovery
 * where the WAL it is given stops continuing (a segment restore_command could not fetch, one
 * whose content breaks off after the first page wal push checks) and promotes there,
 * without every transaction archived after it; the gap check before the restore sees only
 * segments missing by name. Such a recovery is reported, and the server (promoted: a new
 * timeline, nothing of the rest can be replayed into it any more) is stopped so that nothing
 * takes it for a complete one. 0 when it got past the start of that timeline's last archived
 * segment, or that is not known (the timeline has no segment archived: a .history alone). */
static int check_promoted_end(const char *pgdata, const char *pg_ctl, json_t *window,
                              struct phys_restore_result *res, struct err *e)
{
    uint32_t ntli;
    struct caris_wal_switch *sw;
    size_t n;
    int64_t segsz = (int64_t)json_integer_value(json_object_get(window, "segment_size"));
    if (!window || !wal_segment_size_ok(segsz) || promotion_history(pgdata, &ntli, &sw, &n) != 0)
        return 0;
    uint32_t followed = sw[n - 1].parent;
    uint64_t at = sw[n - 1].switch_lsn;
    /* the file the WAL at `at` was read from: the newest timeline of the history that began
     * at or before its segment (PostgreSQL reads a segment holding a switch from the newer
     * timeline) */
    uint64_t sa = at / (uint64_t)segsz;
    uint32_t ftli = sw[0].parent;
    for (size_t k = 0; k + 1 < n; k++)
        if (sw[k].switch_lsn / (uint64_t)segsz <= sa)
            ftli = sw[k + 1].parent;
    free(sw);
    uint64_t end;
    json_t *t = window_timeline(window, followed, &end);
    if (!t || end < (uint64_t)segsz)
        return 0;
    /* the start of the last segment archived: recovery that replayed it ends inside it
     * or at its end (a whole segment's WAL goes on to its end, or to a switch record's,
     * which PostgreSQL counts to the segment's end); one that ends at its start read
     * nothing of it */
    uint64_t last = end - (uint64_t)segsz;
    if (at > last)
        return 0;
    char seg[25], ats[32], ends[32];
    caris_wal_segment_name(ftli, sa, segsz, seg);
    caris_lsn_format(at, ats, sizeof(ats));
    caris_lsn_format(end, ends, sizeof(ends));
    const char *lastname = json_string_value(json_object_get(t, "last"));
    char *argv[] = {(char *)pg_ctl, "stop", "-D", (char *)pgdata, "-m", "fast", "-w", "-s", NULL};
    char *out = NULL;
    struct err se = ERR_INIT;
    bool stopped = pgsrc_run_capture(pg_ctl, argv, &out, 4096, &se) == 0;
    free(out);
    free(res->state);
    res->state = xstrdup(stopped ? "stopped" : "promoted");
    err_set(e, ERR_DAMAGE, NULL,
            "recovery from backup %s ended at %s (in WAL segment %s) and the server promoted "
            "there, but the WAL archive holds timeline %u, the one recovery followed, up to "
            "%s (segment %s): the transactions archived after %s are not in the restored "
            "database; %s%s%s; its log, %s, says why replay stopped (a segment whose content "
            "breaks off: damaged after its first page, which is all wal push checks)",
            res->backup_id ? res->backup_id : "?", ats, seg, followed, ends,
            lastname ? lastname : "?", ats,
            stopped ? "the restored server was stopped so that nothing takes it for complete"
                    : "the restored server keeps running (stopping it failed: ",
            stopped ? "" : se.msg, stopped ? "" : ")", res->log_path ? res->log_path : "?");
    snprintf(e->hint, sizeof(e->hint),
             "to accept the loss, start it as it is (pg_ctl start -D DIR: it holds the WAL up "
             "to %s, on timeline %u) or restore again with --to-lsn before %s; the archived "
             "copy of %s cannot be replaced (wal push keeps it): docs/BACKUP_RECOVERY.md, \"A "
             "recovery that ends early anyway\", says how to replay a good copy; DIR is kept",
             ats, ntli, ats, seg);
    return -1;
}

static int start_and_wait(const struct phys_restore_opts *o, int version_num, const char *gap_note,
                          json_t *window, struct phys_restore_result *res, struct err *e)
{
    if (start_preflight(o, e) != 0)
        return -1;
    struct pgsrc_tool pg_ctl;
    if (pgsrc_tool_find("pg_ctl", version_num, true, &pg_ctl, e) != 0)
        return -1;
    /* the socket's directory absolute: the server resolves a relative one from the data
     * directory (it changes into it first), and libpq takes a host without a leading / for a
     * host name; `--pgdata pitr --start` stopped at once ("could not create lock file
     * pitr/.s.PGSQL.P.lock") */
    char pgdata[PATH_MAX];
    if (!realpath(o->pgdata, pgdata))
        return err_sys(e, errno, NULL, "cannot resolve the data directory %s", o->pgdata);
    if (strchr(pgdata, '\''))
        return err_set(e, ERR_USAGE, "start the server yourself (pg_ctl start -D DIR)",
                       "--start: the data directory's path %s has a quote", pgdata);
    /* a base backup holds the data directory only: a source that kept its configuration
     * outside it (Debian's clusters, in /etc/postgresql/<version>/<name>) comes back without
     * postgresql.conf, and the server stops at once, saying so in words the wait below does
     * not know (logging is not set up yet): it waited out --wait, then said "keeps running" */
    char *conf = xasprintf("%s/postgresql.conf", pgdata);
    struct stat cst;
    bool no_conf = stat(conf, &cst) != 0 && errno == ENOENT;
    free(conf);
    if (no_conf)
        return err_set(e, ERR_DATABASE,
                       "the restored data directory is kept: put a postgresql.conf into it (an "
                       "empty one will do, the recovery settings are in postgresql.auto.conf; not "
                       "the source's as it is, whose data_directory, hba_file and ident_file name "
                       "the source's) and a pg_hba.conf, then start it with pg_ctl start -D DIR",
                       "--start: the restored data directory %s has no postgresql.conf: the "
                       "source kept its configuration outside its data directory (as Debian's "
                       "clusters do, in /etc/postgresql), and a base backup holds only the data "
                       "directory",
                       pgdata);
    res->log_path = xasprintf("%s.log", pgdata);
    char *opts =
        xasprintf("-p %d -c listen_addresses='' -c unix_socket_directories='%s'", o->port, pgdata);
    char *argv[] = {pg_ctl.path, "start", "-D", pgdata, "-l", res->log_path,
                    "-W",        "-s",    "-o", opts,   NULL};
    struct stat lst;
    size_t log_from = stat(res->log_path, &lst) == 0 ? (size_t)lst.st_size : 0;
    char *out = NULL;
    int rc = pgsrc_run_capture(pg_ctl.path, argv, &out, 4096, e);
    free(out);
    free(opts);
    if (rc != 0)
        return -1;
    struct pgsrc_target t;
    if (pgsrc_target_parse(o->url, o->password, "POSTGRES_URL", &t, e) != 0)
        return -1;
    char port[16];
    snprintf(port, sizeof(port), "%d", o->port);
    pgsrc_target_set(&t, "host", pgdata);
    pgsrc_target_set(&t, "port", port);
    pgsrc_target_set(&t, "sslmode", NULL);
    const char *action = o->target == PHYS_TARGET_NONE ? "promote"
                         : o->target_action            ? o->target_action
                                                       : "promote";
    int64_t deadline =
        time_mono_ns() + (int64_t)(o->wait_seconds > 0 ? o->wait_seconds : 600) * 1000000000LL;
    rc = -1;
    bool seen_pid = false;
    while (rc != 0) {
        if (caris_op_check(o->op, "the started server keeps running: stop it with pg_ctl stop",
                           e) != 0)
            break;
        pid_t pid = postmaster_pid(pgdata);
        bool alive = pid > 0 && kill(pid, 0) == 0;
        seen_pid |= pid > 0;
        /* gone: after it was seen running, or (it may be gone before it is first seen) once
         * its log says it stopped */
        if (!alive && (seen_pid || log_says_stopped(res->log_path, log_from))) {
            /* pause acts as shutdown when the restored settings (the source's) have
             * hot_standby = off: the target was reached all the same */
            if (strcmp(action, "promote") != 0 &&
                log_has(res->log_path, log_from, "shutdown at recovery target")) {
                res->state = xstrdup("shut down");
                rc = 0;
                break;
            }
            char tail[700], hint[512];
            log_tail(res->log_path, log_from, tail, sizeof(tail));
            stopped_hint(o, res->backup_id, gap_note, hint, sizeof(hint));
            /* a time or LSN after the last archived WAL (the gaps have their own hint) */
            if (!(gap_note && *gap_note) &&
                (o->target == PHYS_TARGET_TIME || o->target == PHYS_TARGET_LSN) &&
                log_has(res->log_path, log_from,
                        "recovery ended before configured recovery target was reached"))
                snprintf(hint, sizeof(hint),
                         "the archived WAL ends before the target %s: if the source still runs, "
                         "have it archive its current WAL (SELECT pg_switch_wal(), then wait "
                         "until `caris-backup wal list` shows it) and restore again; else "
                         "restore again with an earlier target, or none to replay all archived "
                         "WAL; the restored data directory is kept",
                         o->target_value ? o->target_value : "");
            err_set(e, ERR_DATABASE, hint,
                    "the restored server stopped before reaching the recovery target (its log: "
                    "%s):\n%s",
                    res->log_path, tail);
            break;
        }
        if (alive && strcmp(action, "shutdown") != 0) {
            struct err ce = ERR_INIT;
            PGconn *c = pgsrc_connect(&t, NULL, &ce);
            /* a login refused for good (authentication, a role or database the restored
             * cluster lacks, bad parameters) is said at once: asking again until the deadline
             * hid it behind "did not reach the target". A server still starting, or not yet
             * consistent, rejects connections before it looks at the login: that is waited
             * out. */
            if (!c && pgsrc_connect_refused(&ce)) {
                char hint[700];
                snprintf(hint, sizeof(hint),
                         "the server keeps running: stop it with pg_ctl stop -D %s; POSTGRES_URL's "
                         "user must be able to log in to the restored server over its socket in "
                         "the data directory (its pg_hba.conf and roles are the source's)%s%s",
                         pgdata, *ce.hint ? "; " : "", ce.hint);
                err_set(e, ERR_DATABASE, hint,
                        "cannot ask the restored server how far recovery got: %s", ce.msg);
                break;
            }
            if (c) {
                struct err qe = ERR_INIT;
                PGresult *q =
                    pgsrc_query(c,
                                "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN "
                                "pg_get_wal_replay_pause_state() ELSE '' END, "
                                "to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', "
                                "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                                0, NULL, &qe);
                if (q && PQntuples(q) == 1) {
                    bool in_rec = strcmp(PQgetvalue(q, 0, 0), "t") == 0;
                    const char *pause = PQgetvalue(q, 0, 1);
                    bool done =
                        (strcmp(action, "promote") == 0 && !in_rec) ||
                        (strcmp(action, "pause") == 0 && in_rec && strcmp(pause, "paused") == 0);
                    if (done) {
                        res->state = xstrdup(in_rec ? "paused" : "promoted");
                        if (!PQgetisnull(q, 0, 2))
                            res->reached_time = xstrdup(PQgetvalue(q, 0, 2));
                        rc = 0;
                    }
                }
                PQclear(q);
                PQfinish(c);
                if (rc == 0)
                    break;
            }
        }
        if (time_mono_ns() > deadline && !seen_pid) {
            char tail[700];
            log_tail(res->log_path, log_from, tail, sizeof(tail));
            err_set(e, ERR_DATABASE, "see the server's log; the restored data directory is kept",
                    "the restored server did not start within %d s (no postmaster.pid in %s; "
                    "its log: %s):\n%s",
                    o->wait_seconds > 0 ? o->wait_seconds : 600, pgdata, res->log_path, tail);
            break;
        }
        if (time_mono_ns() > deadline) {
            err_set(e, ERR_DATABASE,
                    "the server keeps running: look at its log, stop it with pg_ctl stop",
                    "recovery did not reach the target within %d s",
                    o->wait_seconds > 0 ? o->wait_seconds : 600);
            break;
        }
        pause_ms(100);
    }
    pgsrc_target_free(&t);
    if (rc == 0 && o->target == PHYS_TARGET_NONE && strcmp(res->state, "promoted") == 0 &&
        check_promoted_end(pgdata, pg_ctl.path, window, res, e) != 0)
        rc = -1;
    if (rc == 0) {
        res->started = true;
        /* the target was reached: the archive's end, warned before, did not stop it */
        json_decref(res->warnings);
        res->warnings = NULL;
    }
    return rc;
}

int caris_phys_restore(struct repo *r, const struct phys_restore_opts *o,
                       struct phys_restore_result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    int64_t t0 = time_mono_ns();
    if (!o->pgdata || !*o->pgdata)
        return err_set(e, ERR_USAGE, NULL, "--pgdata DIR is required");
    if (!o->restore_command || !*o->restore_command)
        return err_set(e, ERR_USAGE, NULL, "no restore_command for the restored server");
    /* a fixed timeline goes into restore_command as `--timeline N` before its %f %p
     * (write_recovery_settings) */
    size_t rcl = strlen(o->restore_command);
    if (o->target_timeline && strcmp(o->target_timeline, "latest") != 0 &&
        (rcl < 6 || strcmp(o->restore_command + rcl - 6, " %f %p") != 0))
        return err_set(e, ERR_USAGE, NULL,
                       "restore_command must end in ' %%f %%p' (the timeline followed goes "
                       "before them)");
    /* a restore point's name is at most 63 bytes (pg_create_restore_point): a longer one made
     * a data directory whose server refuses its configuration at start; an empty one is no
     * target at all (recovery would replay everything) */
    if (o->target == PHYS_TARGET_NAME &&
        (!o->target_value || !*o->target_value || strlen(o->target_value) > 63))
        return err_set(e, ERR_USAGE,
                       "give the name pg_create_restore_point() was called with (1 to 63 bytes); "
                       "nothing was written",
                       "--to-name takes a restore point's name of 1 to 63 bytes, got %zu bytes",
                       o->target_value ? strlen(o->target_value) : (size_t)0);
    char xid[24] = "";
    if (o->target == PHYS_TARGET_XID && !xid_decimal(o->target_value, xid))
        return err_set(e, ERR_USAGE, "nothing was written",
                       "--to-xid takes a transaction id (a number up to 2^64 - 1)");
    if (o->start && start_preflight(o, e) != 0)
        return -1;
    /* no archived WAL holds a commit after a time still to come: PostgreSQL would replay all
     * of it and then refuse to finish recovery, once the operator starts the server (a year
     * mistyped) */
    if (o->target == PHYS_TARGET_TIME && o->target_time_ns > time_now_ns()) {
        char when[40];
        time_format_iso(o->target_time_ns, when, sizeof(when));
        return err_set(e, ERR_USAGE,
                       "give the time just before the damage (a zone as Z or +01:00, or local "
                       "time in BACKUP_TZ), or no target to replay all archived WAL; nothing was "
                       "written",
                       "recovery target %s is in the future: no archived WAL reaches it", when);
    }
    /* --overwrite deletes the old directory whole: one that held the repository took every
     * backup and the WAL archive with it, and said "restored" */
    const struct keep_path keep[] = {{"BACKUP_DIR", o->backup_dir, true},
                                     {"the env file restore_command reads", o->env_file, false}};
    if (restore_target_outside_repo(r, o->pgdata, "data directory", e) != 0 ||
        replace_target_keeps(r, o->pgdata, keep, 2, "data directory", e) != 0)
        return -1;
    struct stat st;
    bool exists = stat(o->pgdata, &st) == 0;
    if (exists && !S_ISDIR(st.st_mode))
        return err_set(e, ERR_USAGE, NULL, "%s exists and is not a directory", o->pgdata);
    if (exists && !dir_empty(o->pgdata) && !o->overwrite)
        return err_set(e, ERR_USAGE,
                       "restore into an empty or new directory, or add --overwrite to replace it "
                       "(stop the server that uses it first)",
                       "data directory %s is not empty", o->pgdata);
    pid_t pm;
    bool other_user;
    if (exists && o->overwrite && server_may_run(o->pgdata, &pm, &other_user)) {
        if (other_user)
            return err_set(e, ERR_USAGE,
                           "stop it first (pg_ctl stop -D DIR, as its user); if it is not a "
                           "PostgreSQL server using DIR, remove DIR/postmaster.pid",
                           "a server may be running on data directory %s: its postmaster.pid "
                           "names process %lld, which belongs to another user",
                           o->pgdata, (long long)pm);
        return err_set(e, ERR_USAGE, "stop it first (pg_ctl stop -D DIR)",
                       "a server is running on data directory %s (process %lld)", o->pgdata,
                       (long long)pm);
    }
    char *copy = xstrdup(o->pgdata), *copy2 = xstrdup(o->pgdata);
    char *parent = dirname(copy), *base = basename(copy2);
    char *prefix = xasprintf(".%s.caris-restore-", base);
    struct temp_item ti = TEMP_ITEM_INIT;
    char *tmp = NULL;
    char *old = NULL;
    json_t *summary = NULL, *full = NULL, *entries = NULL;
    char name[65], gap_note[480];
    json_t *window = NULL;
    uint32_t tli = 0;
    int rc = -1;
    bool locked = false, made = false;
    /* DIR is replaced by a directory written beside it and renamed into place: a mount point
     * cannot be replaced (rmdir and rename fail with EBUSY, after the whole cluster was written
     * onto the parent's file system), nor is a symbolic link written through (rmdir refuses
     * it; --overwrite replaced the link). Refused before anything is written. */
    struct stat lst, pst;
    if (exists && lstat(o->pgdata, &lst) == 0 && S_ISLNK(lst.st_mode)) {
        err_set(e, ERR_USAGE,
                "give the directory the link points to as --pgdata (readlink -f); nothing was "
                "written",
                "data directory %s is a symbolic link: the restore renames a new directory into "
                "its place, which would replace the link instead of writing where it points",
                o->pgdata);
        goto out;
    }
    if (exists && stat(parent, &pst) == 0 && pst.st_dev != st.st_dev) {
        err_set(e, ERR_USAGE, NULL,
                "data directory %s is a mount point: the restore writes the cluster beside it and "
                "renames it into place, which a mount point cannot be replaced by",
                o->pgdata);
        snprintf(e->hint, sizeof(e->hint),
                 "restore into a new directory inside it (e.g. --pgdata %s/data; PostgreSQL "
                 "itself advises against a mount point as data directory); nothing was written",
                 o->pgdata);
        goto out;
    }
    if (repo_lock(r, false, "restore database --physical", e) != 0)
        goto out;
    locked = true;
    if (choose_backup(r, o, name, &summary, &tli, &window, e) != 0)
        goto out;
    res->backup_id = jsonx_strdup_member(summary, "id");
    res->ran = true;
    /* before anything is written: a refused restore leaves DIR as it was */
    if (check_gaps(o, summary, window, tli, gap_note, sizeof(gap_note), e) != 0)
        goto out;
    if (!*gap_note) {
        /* (not for the hint of a started server that stops: its log says why, and that
         * hint is the one for an archive that ends before the target) */
        char *w = past_archive_end(o, summary, window, tli);
        if (w) {
            caris_op_log(o->op, LOG_WARN, "%s", w);
            res->warnings = json_array();
            json_array_append_new(res->warnings, json_string(w));
            free(w);
        }
    }
    if (o->target == PHYS_TARGET_NONE && window)
        archive_last_segment(summary, window, tli, res);
    if (repo_snapshot_load(r, name, &full, &entries, e) != 0)
        goto out;
    {
        /* the half-written directories of restores of DIR that were killed (SIGKILL, power
         * loss) before their rename: copies of the cluster, removed once their process is gone
         * (each is locked by its restore while it lives) */
        report_old_copies(parent, base, o->pgdata, exists, o->op);
        const char *const prefixes[] = {prefix, NULL};
        char names[400];
        size_t n = temp_sweep(parent, prefixes, NULL, names, sizeof(names));
        if (n)
            caris_op_log(o->op, LOG_INFO,
                         "removed %zu half-written data director%s that a restore killed earlier "
                         "left beside %s: %s",
                         n, n == 1 ? "y" : "ies", o->pgdata, names);
    }
    if (temp_item_create(&ti, parent, prefix, true, e) != 0) {
        err_wrap(e, "the parent directory of %s must exist and be writable", o->pgdata);
        goto out;
    }
    tmp = ti.path;
    made = true;
    if (write_tree(r, full, entries, tmp, o, res, e) != 0)
        goto out;
    /* Test-only: CARIS_TEST_PHYS_RESTORE_CRASH=1 ends the process as kill -9 would once the
     * cluster's files are written beside DIR, before they go in place (test_phys_empty). */
    const char *crash = getenv("CARIS_TEST_PHYS_RESTORE_CRASH");
    if (crash && strcmp(crash, "1") == 0)
        _exit(137);
    char *sig = xasprintf("%s/recovery.signal", tmp);
    int wrc = write_small(sig, "", e);
    free(sig);
    /* the timeline followed when it is a fixed one: a number, or the backup's own (PostgreSQL's
     * 'current': the timeline of the checkpoint the backup starts from) */
    uint32_t follow = 0;
    if (o->target_timeline && strcmp(o->target_timeline, "current") == 0) {
        json_t *phys = json_object_get(full, "physical");
        json_t *stl = json_object_get(phys, "start_timeline");
        json_int_t btl = json_integer_value(stl ? stl : json_object_get(phys, "timeline"));
        follow = btl > 0 && btl <= UINT32_MAX ? (uint32_t)btl : 0;
    } else if (o->target_timeline && strcmp(o->target_timeline, "latest") != 0) {
        follow = (uint32_t)strtoul(o->target_timeline, NULL, 10); /* decimal: target_timeline */
    }
    if (wrc != 0 ||
        write_recovery_settings(
            tmp, res->backup_id, o, xid,
            json_array_size(json_object_get(json_object_get(full, "physical"), "tablespaces")) > 0,
            follow, e) != 0)
        goto out;
    /* the new directories' entries durable before the tree goes into place (and the old one
     * is removed): the files are fsynced one by one, their directories are not; one syncfs()
     * covers them all, as the file restore does */
    {
        int sfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sfd < 0 || syncfs(sfd) != 0) {
            err_sys(e, errno, NULL, "cannot sync %s to disk", tmp);
            if (sfd >= 0)
                close(sfd);
            goto out;
        }
        close(sfd);
    }
    /* test-only: CARIS_TEST_PHYS_RESTORE_HOLD=PATH holds here while PATH exists
     * (test_phys_empty changes DIR meanwhile) */
    test_hold_point("CARIS_TEST_PHYS_RESTORE_HOLD");
    /* what was judged at the start is judged again: a restore takes long, and meanwhile a
     * server may have been started on DIR, or files put into the empty DIR (another restore),
     * which the swap would remove */
    exists = lstat(o->pgdata, &st) == 0;
    if (exists && !S_ISDIR(st.st_mode)) {
        err_set(e, ERR_USAGE,
                "nothing was changed there; find out what made it, then restore again",
                "%s was made during the restore, and is not a directory", o->pgdata);
        goto out;
    }
    if (exists && !o->overwrite && !dir_empty(o->pgdata)) {
        err_set(e, ERR_USAGE,
                "nothing was changed there; find out what wrote into it (another restore, a "
                "server?), then restore into an empty directory",
                "data directory %s is not empty any more: something wrote into it during the "
                "restore",
                o->pgdata);
        goto out;
    }
    if (exists && o->overwrite && server_may_run(o->pgdata, &pm, &other_user)) {
        err_set(e, ERR_USAGE, "nothing was changed there; stop the server, then restore again",
                "a server was started on data directory %s during the restore (process %lld)",
                o->pgdata, (long long)pm);
        goto out;
    }
    /* into place: an empty directory is replaced, an old one (with --overwrite) moved aside
     * and removed only once the new one is in place */
    if (exists && dir_empty(o->pgdata)) {
        if (rmdir(o->pgdata) != 0) {
            err_sys(e, errno, NULL, "cannot replace %s", o->pgdata);
            goto out;
        }
    } else if (exists) {
        old = xasprintf("%s/.%s.caris-old-%lld", parent, base, (long long)getpid());
        if (rename(o->pgdata, old) != 0) {
            err_sys(e, errno, NULL, "cannot move %s aside", o->pgdata);
            free(old);
            old = NULL;
            goto out;
        }
    }
    if (rename(tmp, o->pgdata) != 0) {
        err_sys(e, errno, NULL, "cannot rename %s to %s", tmp, o->pgdata);
        if (old)
            rename(old, o->pgdata);
        goto out;
    }
    made = false;
    /* the item is DIR now: its lock is given up, nothing removed */
    close(ti.fd);
    free(ti.path);
    ti = (struct temp_item)TEMP_ITEM_INIT;
    tmp = NULL;
    int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd >= 0) {
        fsync(pfd);
        close(pfd);
    }
    if (old)
        fs_remove_tree(old);
    res->summary = json_incref(summary);
    caris_op_log(o->op, LOG_INFO, "restored backup %s into %s (%llu files)", res->backup_id,
                 o->pgdata, (unsigned long long)res->files);
    repo_unlock(r);
    locked = false;
    if (o->start &&
        start_and_wait(o, (int)json_integer_value(json_object_get(summary, "server_version_num")),
                       gap_note, window, res, e) != 0)
        goto out;
    rc = 0;
out:
    res->duration_ms = (time_mono_ns() - t0) / 1000000;
    if (made)
        temp_item_remove(&ti);
    if (locked)
        repo_unlock(r);
    json_decref(window);
    json_decref(summary);
    json_decref(full);
    json_decref(entries);
    free(prefix);
    free(old);
    free(copy);
    free(copy2);
    /* a chunk that failed to open is recorded: the next backup stores it again (it deduplicated
     * against it, and reported a backup that could not be restored) */
    caris_bad_blobs_record(r, "restore --physical", o->op);
    return rc;
}

void phys_restore_result_free(struct phys_restore_result *res)
{
    free(res->backup_id);
    free(res->state);
    free(res->reached_time);
    free(res->log_path);
    free(res->archive_last);
    json_decref(res->summary);
    json_decref(res->warnings);
    memset(res, 0, sizeof(*res));
}

json_t *phys_restore_result_to_json(const struct phys_restore_result *res)
{
    if (!res->ran)
        return NULL;
    json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:b}", "backupId", res->backup_id, "files",
                          (json_int_t)res->files, "bytes", (json_int_t)res->bytes, "duration_ms",
                          (json_int_t)res->duration_ms, "started", res->started);
    json_t *phys = json_object_get(res->summary, "physical");
    if (phys) {
        json_object_set(j, "startLsn", json_object_get(phys, "start_lsn"));
        json_object_set(j, "stopLsn", json_object_get(phys, "stop_lsn"));
    }
    if (res->state)
        json_object_set_new(j, "state", json_string(res->state));
    json_object_set_new(j, "reachedTime",
                        res->reached_time ? json_string(res->reached_time) : json_null());
    if (res->log_path)
        json_object_set_new(j, "serverLog", json_string(res->log_path));
    if (res->warnings)
        json_object_set(j, "warnings", res->warnings);
    if (res->archive_last) {
        char lsn[32];
        caris_lsn_format(res->archive_last_lsn, lsn, sizeof(lsn));
        json_object_set_new(j, "archiveLastSegment", json_string(res->archive_last));
        json_object_set_new(j, "archiveLastSegmentLsn", json_string(lsn));
    }
    return j;
}

int caris_recovery_point_in_time(struct repo *r, const struct caris_pitr_request *req,
                                 struct phys_restore_result *res, struct err *e)
{
    struct phys_restore_opts o = {.pgdata = req->pgdata,
                                  .target = PHYS_TARGET_TIME,
                                  .target_value = req->targetTime,
                                  .target_action = "promote",
                                  .overwrite = req->overwrite,
                                  .backup_dir = req->backup_dir,
                                  .env_file = req->env_file,
                                  .restore_command = req->restore_command,
                                  .start = req->start,
                                  .port = req->port,
                                  .url = req->url,
                                  .password = req->password,
                                  .op = req->op};
    memset(res, 0, sizeof(*res));
    if (phys_time_parse(req->targetTime ? req->targetTime : "", NULL, &o.target_time_ns, e) != 0)
        return -1;
    return caris_phys_restore(r, &o, res, e);
}

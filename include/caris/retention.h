/* Retention: which backups to keep (keep-last/daily/weekly/monthly/yearly/within, per group
 * of backups of the same source and host), and forgetting the others. The seed's
 * databaseBackupService.applyRetentionPolicy({daily, weekly, monthly}) is
 * caris_retention_apply(). What forgetting frees is removed by prune (prune.h). */
#ifndef CARIS_RETENTION_H
#define CARIS_RETENTION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/config.h"
#include "caris/err.h"
#include "caris/op.h"
#include "caris/repo.h"

/* A duration for --keep-within: years, months, weeks, days, hours ("1y6m", "14d", "36h"). */
struct caris_duration {
    int years, months, weeks, days, hours;
};
/* Parses "<n><unit>..." with units y, m, w, d, h (each at most once, n >= 0, not all zero).
 * ERR_USAGE naming the input otherwise. */
int caris_duration_parse(const char *s, struct caris_duration *d, struct err *e);
/* As caris_duration_parse, for a duration in weeks, days and hours only (a year's or a month's
 * length varies): its length in hours in *hours; -1 with e (ERR_USAGE) otherwise. */
int caris_duration_hours(const char *s, int64_t *hours, struct err *e);

/* Each rule keeps, going back from the newest backup of a group, the newest backup of each
 * of the last N calendar periods that have a backup (day, ISO-8601 week, month, year, in the
 * policy's time zone); last keeps the N newest; within keeps every backup no older than the
 * duration before the group's newest. The kept set is the union; the newest backup of a
 * group is always kept. 0 turns a rule off. A backup dated in the future (see
 * caris_backup_time_future) is kept and left out of every rule: "newest" is the newest backup
 * that is not. */
struct caris_retention_policy {
    int last, daily, weekly, monthly, yearly;
    bool has_within;
    struct caris_duration within;
};

/* The configured policy: BACKUP_RETENTION_DAILY (default 7), BACKUP_RETENTION_WEEKLY (4),
 * BACKUP_RETENTION_MONTHLY (12), as the seed. ERR_CONFIG when one is not a count. */
int caris_retention_policy_from_config(const struct config *c, struct caris_retention_policy *p,
                                       struct err *e);
/* Whether the configuration's retention would run: a valid policy that keeps something (not
 * every count 0) and a BACKUP_TZ that loads. ERR_CONFIG naming what otherwise. For the daemon,
 * which checks it when it starts and on a reload, not first at night in its retention step. */
int caris_retention_config_check(const struct config *c, struct err *e);
/* A count option: a decimal integer 0..1000000. ERR_USAGE naming what otherwise. */
int caris_retention_count_parse(const char *what, const char *s, int *out, struct err *e);

/* Why a backup is kept (bit set). */
enum {
    CARIS_KEEP_LAST = 1u << 0,
    CARIS_KEEP_DAILY = 1u << 1,
    CARIS_KEEP_WEEKLY = 1u << 2,
    CARIS_KEEP_MONTHLY = 1u << 3,
    CARIS_KEEP_YEARLY = 1u << 4,
    CARIS_KEEP_WITHIN = 1u << 5,
    CARIS_KEEP_NEWEST = 1u << 6,
    CARIS_KEEP_FUTURE = 1u << 7,  /* dated in the future: kept, counted by no rule */
    CARIS_KEEP_DAMAGED = 1u << 8, /* known damaged (caris_backup_known_damaged): kept, counted
                                     by no rule */
};
/* Names of the bits set in reasons, as a JSON array of strings ("last", "daily", ...). */
json_t *caris_retention_reasons_json(unsigned reasons);

struct caris_retention_item {
    const char *id;
    size_t group;     /* items with the same group are judged together */
    int64_t time_ns;  /* the backup's time */
    bool damaged;     /* known damaged (its last verification failed, or its last test
                         restore found damage): no rule counts it, it is kept */
    bool removed;     /* removed in the state record (a forget that stopped before it deleted
                         the snapshot; a snapshot put back after it): no rule counts it, and it
                         is not kept */
    bool keep;        /* out */
    unsigned reasons; /* out: CARIS_KEEP_* */
};
/* The pure decision, for any list of items (any order), at the current time now_ns. tz: a TZ
 * name ("Europe/Berlin"), NULL or "" for the process's local time zone. Thread-safe: the zone
 * is read with caris/tz.h, never through TZ or the C library's local-time state. */
int caris_retention_decide(const struct caris_retention_policy *p, const char *tz, int64_t now_ns,
                           struct caris_retention_item *items, size_t n, struct err *e);

/* How far a backup's time may lie after the current time (clocks of machines that share a
 * repository disagree a little) before the backup counts as dated in the future. */
#define CARIS_CLOCK_SKEW_NS ((int64_t)15 * 60 * 1000000000)
/* Whether a backup of time time_ns is dated in the future at now_ns: the clock was ahead when
 * it was made, or is behind now. Such a backup is not the newest for anything that asks which
 * is (retention's rules, `latest`, the stale alert): taken for the newest, it would hold the
 * retention of every real backup after it, be restored for `latest`, and hide that backups
 * stopped. */
bool caris_backup_time_future(int64_t time_ns, int64_t now_ns);
/* "backup ID is dated TIME, after the current time NOW" into out. */
void caris_backup_future_text(const char *id, int64_t time_ns, int64_t now_ns, char *out, size_t n);
/* For `what` ("'latest'", "--latest") that chose the backup summary s (as listed) for being the
 * newest: 0, or -1 with ERR_USAGE when s is dated in the future (which backup is meant is
 * then a guess, and the wrong one holds older data). */
int caris_backup_latest_check(json_t *s, const char *what, struct err *e);

/* Parses a backup time for `backup --time`: "YYYY-MM-DD[T| ]HH:MM[:SS]" followed by "Z",
 * "+HH:MM" / "-HH:MM", or nothing (local time in tz; NULL = the process's). */
int caris_time_parse(const char *s, const char *tz, int64_t *ns, struct err *e);
/* A time given for a backup must not be in the future (nor before 1970): ERR_USAGE. */
int caris_backup_time_check(int64_t ns, struct err *e);

struct caris_forget_opts {
    struct caris_retention_policy policy;
    const char *kind; /* "files", "database", or NULL for both */
    const char *tz;   /* BACKUP_TZ; NULL = local */
    bool dry_run;     /* decide and report only */
    /* When nids > 0: forget exactly these backups (full ids, as listed), whatever the policy,
     * and report only them; an id that is not listed is ERR_NOT_FOUND and nothing is
     * forgotten. A backup whose snapshot cannot be read is named by its id when the state
     * record knows it, else by its file as `list` shows it ("snapshots/<name>", or <name>);
     * only so is it ever forgotten. */
    const char *const *ids;
    size_t nids;
};
struct caris_forget_decision {
    char id[160];
    char kind[16];
    size_t group; /* index into caris_forget_result.groups */
    int64_t time_ns;
    bool keep;
    unsigned reasons;
    bool damaged;     /* its snapshot cannot be read: kind and time unknown (time_ns 0) */
    char error[1024]; /* then why (as long as an error message: never cut) */
};
struct caris_forget_result {
    bool dry_run;
    struct caris_forget_decision *backups; /* grouped, each group newest first */
    size_t nbackups;
    json_t *groups; /* [{"kind", "roots"} | {"kind", "database", "source"}] */
    size_t kept, removed;
    json_t *warnings; /* [string]: backups dated in the future */
    bool by_id;       /* the backups were named (caris_forget_opts.ids) */
};
/* Decides with opts->policy and removes (repo_snapshot_remove) every backup not kept, under
 * a shared lock. The data only they used stays until prune. */
int caris_retention_apply(struct repo *r, const struct caris_forget_opts *o,
                          const struct caris_op *op, struct caris_forget_result *res,
                          struct err *e);
/* {"dry_run", "kept", "removed", "groups": [{..., "backups": [{"id", "time", "keep",
 * "reasons", "damaged"?, "error"?}]}], "warnings": [string]}; the backups named whose snapshot
 * cannot be read are in a group {"kind": "damaged"}, with "time" null. */
json_t *caris_forget_result_to_json(const struct caris_forget_result *res);
void caris_forget_result_free(struct caris_forget_result *res);

#endif

/* The audit log: one JSON line per operation, from the CLI, the API and the scheduler, in
 * BACKUP_DIR/metadata/audit.log (mode 0600). Tamper-evident: each line carries "seq" (1, 2,
 * ...) and "prev", the SHA-256 of the previous line's bytes (64 zeros for the first), so
 * that an edited, deleted or torn line breaks the chain at that point (caris_audit_verify).
 * Appends from many processes and threads are serialised by an flock of the file.
 *
 * A line: {"seq", "time", "actor", "source" (the API client's address, or null),
 * "operation", "args" (never a secret), "result" ("ok", "warnings", "failed", "refused",
 * or an HTTP status), "error" (or null), "backupIds" ([] when none), "durationMs" (or
 * null), "prev"}. */
#ifndef CARIS_AUDIT_H
#define CARIS_AUDIT_H

#include <jansson.h>
#include <stdint.h>

#include "caris/err.h"

struct caris_audit_entry {
    const char *actor;     /* "cli:<user>", "api:<token label>", "scheduler", "cron", ... */
    const char *source;    /* the client's address; NULL */
    const char *operation; /* "backup", "verify", "restore", "token add", "api POST /api/..." */
    json_t *args;          /* borrowed; NULL: {} */
    const char *result;
    const char *error;   /* NULL when none */
    json_t *backup_ids;  /* borrowed array; NULL: [] */
    int64_t duration_ms; /* < 0: unknown */
};

/* Appends a line (fdatasync'd). -1 with e when the log cannot be written. */
int caris_audit_append(const char *backup_dir, const struct caris_audit_entry *en, struct err *e);

/* Checks the chain: 0 with *lines (the number of lines; 0 when there is no log) and, when
 * torn is not NULL, *torn (new reference: the numbers of the lines an interrupted write cut
 * short that later appends numbered and chained; [] when none), or -1 with ERR_DAMAGE naming
 * the first bad line and why (*lines is then that line's number). A torn last line, which no
 * append has taken into the chain yet, is damage (a truncated tail looks the same). */
int caris_audit_verify(const char *backup_dir, size_t *lines, json_t **torn, struct err *e);

/* The lines at or after since_ns (0: all), oldest first, as parsed JSON (a line that is not
 * JSON appears as {"seq": null, "unreadable": "<text>"}). NULL with e on an I/O error. */
json_t *caris_audit_read(const char *backup_dir, int64_t since_ns, struct err *e);
/* The last limit lines, oldest first, as caris_audit_read's, reading only the end of the log
 * (at most 16 MiB of it: fewer lines when they are longer). [] when there is no log; NULL
 * with e on an I/O error. */
json_t *caris_audit_read_tail(const char *backup_dir, size_t limit, struct err *e);

/* ---- the chain's head in the repository ------------------------------------------------
 * Deleting whole lines at the end of the log, or editing its last line, leaves a valid
 * chain. So the head — the last line's number and hash, and the log's id (the SHA-256 of
 * its first line) — is also stored in the repository after each backup, as a record of kind
 * "audit-head" {"logId", "seq", "sha256", "time", "host"}, encrypted and authenticated with
 * the repository key: whoever can edit the log cannot forge one. */
struct repo;
/* Whether an operation's line is followed by the log's head in the repository, for the CLI
 * and the daemon alike: a backup that completed (exit 0 or 3), and an operation that took data
 * out (a restore, a file's contents, a mount, a copy elsewhere) whatever its result, except a
 * refusal that took nothing out (exit 2 usage, 5 key, 6 configuration, 7 not found, 9
 * locked): the line saying who read patients' records cannot then be deleted from the end of
 * the log unnoticed. */
bool caris_audit_head_due(bool backup, bool data_out, int exit_code);
/* Records the log's head in r; 0 (nothing is recorded when the log is empty). */
int caris_audit_head_record(struct repo *r, const char *backup_dir, struct err *e);
/* Checks the log against the heads r records for it: 0 with *checked (how many), or -1 with
 * ERR_DAMAGE naming the first recorded line the log no longer has as it was. */
int caris_audit_verify_heads(struct repo *r, const char *backup_dir, size_t *checked,
                             struct err *e);

/* Redacts an argument for the log: one with "://" becomes its scheme only ("postgresql://…"),
 * so that a URL's user, password and host never reach it; a connection string of keywords is
 * cut after "password" ("dbname=x password=…"). Returns out. */
const char *caris_audit_redact_arg(const char *arg, char *out, size_t n);

#endif

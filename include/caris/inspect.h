/* Seeing inside backups: id resolution (`latest`, unique prefixes), show, ls, dump, diff and
 * find. Each is one service call filling a typed result, with one *_to_json() giving the
 * document the CLI's --json (and the API) print. Everything here only reads the repository,
 * under a shared lock.
 *
 * Paths: an entry's path is its root as backed up (absolute) joined with its path below the
 * root: "/srv/files/docs/a.txt", the root itself "/srv/files". That is what `ls` prints and
 * what `restore files --include` takes. Paths are bytes (not necessarily UTF-8); in JSON a
 * path that is not UTF-8 is "path_b64" instead of "path" (as in the manifest). */
#ifndef CARIS_INSPECT_H
#define CARIS_INSPECT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/err.h"
#include "caris/fsmeta.h"
#include "caris/op.h"
#include "caris/repo.h"

#define CARIS_ID_MAX 160

/* A byte string of a result document (a path): obj[field], or obj[field_b64] decoded when it
 * is not UTF-8. malloc'd, NUL-terminated copy in *out; -1 when absent or malformed. */
int caris_json_bytes(json_t *obj, const char *field, char **out, size_t *len);

/* ---- ids ----------------------------------------------------------------------------- */

/* Resolves what the operator typed into a backup id:
 * - an exact id;
 * - "latest" (the newest backup of kind; when kind is NULL and the repository has both
 *   kinds, ambiguous: ERR_USAGE asking for one of the next two), "latest:files",
 *   "latest:database" (ERR_USAGE when it contradicts kind);
 * - a unique prefix of an id. A prefix that several ids share is ERR_USAGE whose hint lists
 *   the candidates; no match is ERR_NOT_FOUND.
 * kind: "files", "database", or NULL (any). Prefixes match backups of every kind (the
 * command then says when the backup is of the wrong kind). */
int caris_backup_resolve(struct repo *r, const char *text, const char *kind, char id[CARIS_ID_MAX],
                         struct err *e);

/* ---- show ---------------------------------------------------------------------------- */

struct caris_show {
    char id[CARIS_ID_MAX];
    json_t *summary;       /* the backup's summary (internal fields removed) */
    json_t *testRestores;  /* every test-restore record of the backup, oldest first */
    json_t *verifications; /* every verification record of the backup, oldest first */
};
int caris_backup_show(struct repo *r, const char *id_text, struct caris_show *out, struct err *e);
/* The summary's fields, with "testRestores" and "verifications" added. */
json_t *caris_show_to_json(const struct caris_show *s);
void caris_show_free(struct caris_show *s);

/* ---- ls ------------------------------------------------------------------------------ */

struct caris_ls_entry {
    char *path; /* full path, as described above */
    size_t path_len;
    struct fs_meta meta; /* for a hard link, size is the file's (its first name's) */
    char *error;         /* the file could not be read at backup time (no content) */
};
struct caris_ls_opts {
    const char *path; /* NULL: the roots; else a full path or one relative to a root */
    bool recursive;   /* everything below, not only the direct children */
};
struct caris_ls_result {
    char id[CARIS_ID_MAX];
    char kind[16]; /* "files" or "database" */
    /* files: the entry named (or each root) first, then what is below it, in tree order */
    struct caris_ls_entry *entries;
    size_t nentries;
    /* database: the streams ([{"name", "type", "size", "sha256"}]) and the tables with their
     * row counts as the summary records them ([{"schema", "name", "rows"}]; NULL, in JSON
     * null, when the summary has no table list) */
    json_t *streams, *tables;
};
int caris_backup_ls(struct repo *r, const char *id_text, const struct caris_ls_opts *o,
                    struct caris_ls_result *res, struct err *e);
/* {"backupId", "kind", "entries": [{"path", "type", "mode", "uid", "gid", "user", "group",
 * "size", "mtime", "link", "error"}]} or, for a database, {"backupId", "kind", "streams",
 * "tables"}. */
json_t *caris_ls_to_json(const struct caris_ls_result *res);
void caris_ls_result_free(struct caris_ls_result *res);

/* ---- dump ---------------------------------------------------------------------------- */

struct caris_dump_opts {
    const char *path; /* as for ls; for a database backup the stream's name */
    int fd;           /* where the bytes go */
    int threads;      /* 0 = number of CPUs */
    const struct caris_op *op;
};
struct caris_dump_result {
    char id[CARIS_ID_MAX];
    bool tar;         /* a directory, written as a tar stream */
    uint64_t members; /* tar: entries written */
    uint64_t bytes;   /* content bytes written (file data, holes as zeros) */
    json_t *warnings; /* [{"path", "message"}]: files the backup could not read (not in the tar) */
};
/* Writes one file's exact bytes to o->fd, or a directory as a pax tar stream. Every chunk is
 * authenticated and its id recomputed before its bytes are written, and each file's SHA-256
 * is compared with the manifest at its end (ERR_DAMAGE: what was written must then be
 * discarded). Returns 0, 1 (CARIS_DONE_WARNINGS: files left out, listed in warnings) or -1. */
int caris_backup_dump(struct repo *r, const char *id_text, const struct caris_dump_opts *o,
                      struct caris_dump_result *res, struct err *e);
void caris_dump_result_free(struct caris_dump_result *res);

/* ---- diff ---------------------------------------------------------------------------- */

enum {
    CARIS_DIFF_TYPE = 1u << 0,
    CARIS_DIFF_CONTENT = 1u << 1, /* size or SHA-256 (or readability at backup time); a hard
                                     link: its first name's */
    CARIS_DIFF_MODE = 1u << 2,
    CARIS_DIFF_OWNER = 1u << 3, /* uid or gid */
    CARIS_DIFF_MTIME = 1u << 4,
    CARIS_DIFF_XATTRS = 1u << 5,
    CARIS_DIFF_LINK = 1u << 6, /* symlink target, or the first name of a hard link */
};
struct caris_diff_item {
    char status; /* '+' added, '-' removed, 'M' changed */
    char *path;
    size_t path_len;
    enum fs_type type; /* in the newer backup ('-': in the older one) */
    unsigned changes;  /* 'M': CARIS_DIFF_* */
};
struct caris_diff_result {
    char from[CARIS_ID_MAX], to[CARIS_ID_MAX];
    struct caris_diff_item *items; /* in path order */
    size_t nitems;
    size_t added, removed, changed;
};
int caris_backup_diff(struct repo *r, const char *from_text, const char *to_text,
                      struct caris_diff_result *res, struct err *e);
/* {"from", "to", "added": [{"path", "type"}], "removed": [...], "changed": [{"path", "type",
 * "changes": ["content", "mode", "owner", "mtime", "xattrs", "type", "link"]}], "stats":
 * {"added", "removed", "changed"}} */
json_t *caris_diff_to_json(const struct caris_diff_result *res);
void caris_diff_result_free(struct caris_diff_result *res);
/* The names of the bits, in the order above ("type", "content", ...). */
const char *caris_diff_change_name(unsigned bit);

/* ---- find ---------------------------------------------------------------------------- */

struct caris_find_opts {
    const char *pattern;        /* fnmatch(3), '*' also matching '/'. With a '/': the full path (or
                                   the path below a root when the pattern is not absolute); without:
                                   the entry's name */
    int64_t since_ns, until_ns; /* backups started in [since, until + 1 s); 0: no bound */
    const struct caris_op *op;
};
struct caris_find_match {
    size_t backup; /* index into backups */
    struct caris_ls_entry entry;
};
struct caris_find_backup {
    char id[CARIS_ID_MAX];
    char started[40];
};
/* A backup whose snapshot file cannot be read: it could not be searched (its kind and time
 * are unknown, so whatever --since/--until say). */
struct caris_find_unsearched {
    char *id; /* NULL when neither the state record nor this host's copy names it */
    char *file;
    char *error;
};
struct caris_find_result {
    struct caris_find_backup *backups; /* the file backups searched, oldest first */
    size_t nbackups;
    struct caris_find_match *matches; /* by backup, then in tree order */
    size_t nmatches;
    struct caris_find_unsearched *unsearched; /* snapshot files that cannot be read */
    size_t nunsearched;
};
/* CARIS_DONE, or CARIS_DONE_WARNINGS when some backups could not be searched (unsearched),
 * or -1 with e set. */
int caris_backup_find(struct repo *r, const struct caris_find_opts *o,
                      struct caris_find_result *res, struct err *e);
/* {"pattern", "backupsSearched", "matches": [{"backupId", "startedAt", "path", "type", "mode",
 * ..., as ls}], "notSearched": [{"backupId" (null when unknown), "file", "error"}]} */
json_t *caris_find_to_json(const struct caris_find_result *res, const char *pattern);
void caris_find_result_free(struct caris_find_result *res);

#endif

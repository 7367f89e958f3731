/* PostgreSQL as a source and a target of logical backups: connection strings (parsed with
 * libpq, rebuilt without the password), connections with errors an operator can act on,
 * the metadata a database backup records, and the client programs (pg_dump, pg_dumpall,
 * pg_restore, initdb, postgres) run as child processes.
 *
 * The password is a secret: it is kept only in struct pgsrc_target, handed to libpq as a
 * connection parameter and to children in their environment (PGPASSWORD), never in a
 * process's arguments, a message or a log line. */
#ifndef CARIS_PGSRC_H
#define CARIS_PGSRC_H

#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "caris/err.h"
#include "caris/tempitem.h"

/* ---- connection targets ---------------------------------------------------------------- */

/* A parsed connection string: every option it sets except the password, plus the password
 * on its own. */
struct pgsrc_target {
    size_t n;
    char **keys, **vals;
    char *password;    /* NULL when none; wiped when freed */
    const char *label; /* what the operator calls it in hints: "POSTGRES_URL" (default) */
};

/* Parses a libpq URI (postgresql://...) or key=value string with PQconninfoParse. The
 * password is the URL's, else fallback_password (PGPASSWORD) when not NULL or empty.
 * label names the setting in messages (NULL: "POSTGRES_URL"). Parse errors are ERR_CONFIG
 * and never quote the password. */
int pgsrc_target_parse(const char *url, const char *fallback_password, const char *label,
                       struct pgsrc_target *t, struct err *e);
void pgsrc_target_free(struct pgsrc_target *t);
void pgsrc_target_copy(const struct pgsrc_target *src, struct pgsrc_target *dst);
/* The option's value as given, NULL when the string did not set it. */
const char *pgsrc_target_get(const struct pgsrc_target *t, const char *key);
/* Sets (or, with val NULL, removes) an option; not for the password. */
void pgsrc_target_set(struct pgsrc_target *t, const char *key, const char *val);
/* 1 when url sets a password (in the URI's user info, a query parameter or a key=value
 * pair), 0 when not, -1 when it cannot be parsed. */
int pgsrc_url_has_password(const char *url);
/* The URL with any password replaced by "xxxxx": for messages. Caller frees. */
char *pgsrc_url_redact(const char *url);

/* A key=value conninfo string without the password, for a child's --dbname: every value
 * single-quoted with \ and ' escaped. dbname, when not NULL, replaces the database. Caller
 * frees. */
char *pgsrc_target_conninfo(const struct pgsrc_target *t, const char *dbname);

/* Host, port, database and user as libpq will use them (the string's value, else the
 * environment's PGHOST..., else libpq's default; "local socket" for the default host).
 * Never the password. */
void pgsrc_target_host(const struct pgsrc_target *t, char *out, size_t n);
void pgsrc_target_port(const struct pgsrc_target *t, char *out, size_t n);
void pgsrc_target_dbname(const struct pgsrc_target *t, char *out, size_t n);
void pgsrc_target_user(const struct pgsrc_target *t, char *out, size_t n);
/* The user name as messages show it: a ':' in it (written %3A in a URL) most likely separates
 * a user from a password whose separator was percent-encoded by mistake, so what follows it
 * is shown as "(redacted)". */
void pgsrc_target_user_shown(const struct pgsrc_target *t, char *out, size_t n);
/* The database name as messages show it: the user name's hidden part hidden in it too (a
 * database's name is the user's by default). */
void pgsrc_target_dbname_shown(const struct pgsrc_target *t, char *out, size_t n);
/* "host H port P database D user U" (the user and database as the _shown functions show
 * them). */
void pgsrc_target_describe(const struct pgsrc_target *t, char *out, size_t n);
/* {"host", "port", "database"} (the database as pgsrc_target_dbname_shown shows it) */
json_t *pgsrc_target_json(const struct pgsrc_target *t);
/* Same server and user: host, hostaddr, port, service and user, each as resolved above. */
bool pgsrc_target_same_login(const struct pgsrc_target *a, const struct pgsrc_target *b);

/* ---- connections and queries ----------------------------------------------------------- */

/* Connects to the target's database, or to dbname when not NULL. client_encoding is UTF8 so
 * that names come back as UTF-8. Failures are ERR_DATABASE, told apart: the server does
 * not answer, authentication failed, the database does not exist. */
PGconn *pgsrc_connect(const struct pgsrc_target *t, const char *dbname, struct err *e);
/* Whether e, of a failed pgsrc_connect, is a refusal for good (authentication failed, the
 * database does not exist, bad connection parameters) rather than a server not (yet)
 * answering: asking again will not help. */
bool pgsrc_connect_refused(const struct err *e);

/* An excerpt of a PostgreSQL server log (text, len bytes: one start's lines) for an error
 * message, in out (n bytes): whole lines, without the refusals that connection attempts get
 * while the server recovers, starts or stops (their number depends on timing), from the first
 * FATAL or PANIC line (the cause; earlier lines are progress) to the end. When that is longer
 * than max bytes: the cause line, a "[...]" line, and the last lines that fit. */
void pgsrc_log_excerpt(const char *text, size_t len, size_t max, char *out, size_t n);
/* Runs one statement that returns no rows (the extended protocol: a string holding a second
 * statement is refused, never run). */
int pgsrc_exec(PGconn *c, const char *sql, struct err *e);
/* Runs a query (with text parameters, nparams may be 0); NULL with e on failure. */
PGresult *pgsrc_query(PGconn *c, const char *sql, int nparams, const char *const *params,
                      struct err *e);
/* "schema"."name", quoted with PQescapeIdentifier. Caller frees. NULL with e on failure. */
char *pgsrc_qualified_name(PGconn *c, const char *schema, const char *name, struct err *e);

struct pgsrc_info {
    int version_num;       /* server_version_num, e.g. 150008 */
    char version[64];      /* "15.8" */
    char database[256];    /* current_database() */
    char encoding[64];     /* "UTF8" */
    char collate[256];     /* datcollate */
    char ctype[256];       /* datctype */
    int64_t database_size; /* pg_database_size, bytes */
    /* what follows PGSRC_RESTORE_MARK in the database's comment ("" when it has no mark) */
    char restore_mark[300];
};
int pgsrc_server_info(PGconn *c, struct pgsrc_info *out, struct err *e);

/* The comment (COMMENT ON DATABASE) a restore puts on the database it restores into while it
 * runs, when a restore killed there would leave the database partly restored: one that makes
 * the database (--create), one with parallel jobs (not one transaction). It is followed by the
 * backup's id and time. A database that carries it may be partly restored. */
#define PGSRC_RESTORE_MARK "caris-backup: restore in progress, or killed: backup "
/* The comment on database name into *text (NULL: none; caller frees). -1 when it cannot be
 * read (no such database, the query failed), *text NULL. */
int pgsrc_db_comment(PGconn *c, const char *name, char **text);
/* Copies what follows PGSRC_RESTORE_MARK in the comment of database name to out ("" when its
 * comment is not a mark, or cannot be read). */
void pgsrc_restore_mark(PGconn *c, const char *name, char *out, size_t n);

/* The WAL archiver's state (archive_mode and pg_stat_archiver; readable by any role). */
struct pgsrc_archiver {
    bool archive_mode; /* archive_mode is on or always */
    int64_t archived_count, failed_count;
    char last_archived_wal[64], last_failed_wal[64]; /* "" when none */
    int64_t last_archived_ns, last_failed_ns;        /* 0 when none */
    int64_t server_now_ns;                           /* the server's now() */
    /* archive_mode on, but neither archive_command nor archive_library set: the server
     * archives nothing (it only logs it) and pg_stat_archiver shows no failure */
    bool no_command;
};
int pgsrc_archiver(PGconn *c, struct pgsrc_archiver *out, struct err *e);
/* Whether archiving is failing now: on, and the last attempt (a failure) came after the last
 * success, or nothing set to archive with (no_command). */
bool pgsrc_archiver_failing(const struct pgsrc_archiver *a);

/* BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY, then pg_export_snapshot(). The snapshot
 * stays valid while this transaction is open. *snapshot_id is malloc'd. */
int pgsrc_snapshot_begin(PGconn *c, char **snapshot_id, struct err *e);
/* The user tables of the database (relkind 'r': plain tables and partitions; not the
 * system schemas, not extension members), sorted: [{"schema", "name"}, ...]. A table that
 * has (or had) inheritance children also has "_parent": true, for the caller (its count(*)
 * includes the children's rows); an unlogged table of a standby (in recovery), whose data
 * pg_dump leaves out and the server may not read, "_nodata": true. Neither is meant to be
 * stored. */
json_t *pgsrc_list_tables(PGconn *c, struct err *e);
/* Roles that own objects of the database or hold privileges on them: ["role", ...]. */
json_t *pgsrc_list_roles(PGconn *c, struct err *e);
/* Exact row counts (count(*)) of tables, as one query sent without waiting (the server
 * counts while the caller does other work, e.g. reads pg_dump); collect sets each table's
 * key ("rows") to its count. Nothing else may use c in between. */
/* lock (may be NULL): tables locked first, in the same query, with LOCK TABLE ONLY ... IN
 * ACCESS SHARE MODE, held until the transaction ends: no TRUNCATE, DROP or rewriting ALTER
 * TABLE (not MVCC-safe) can then change what the snapshot sees of them, so counting them
 * later still counts the snapshot. The lock waits while the caller goes on (pg_dump waits
 * for the same locks). */
int pgsrc_count_rows_send(PGconn *c, json_t *tables, json_t *lock, struct err *e);
int pgsrc_count_rows_collect(PGconn *c, json_t *tables, const char *key, struct err *e);
/* In the snapshot's transaction, once its locks are held: the tables of pgsrc_list_tables
 * whose storage was replaced after the snapshot was taken (TRUNCATE, a rewriting ALTER TABLE,
 * VACUUM FULL, CLUSTER committed before the locks were granted), as [{"schema", "name"}];
 * NULL with e. After TRUNCATE or a rewriting ALTER TABLE the snapshot sees the new file
 * empty (its rows are the committing transaction's): the table's rows are missing from the
 * dump. VACUUM FULL and CLUSTER keep the rows' visibility: the snapshot counts them. */
json_t *pgsrc_rewritten_tables(PGconn *c, struct err *e);
/* The same, one table at a time: a table that cannot be counted (missing) gets null. */
int pgsrc_count_rows_each(PGconn *c, json_t *tables, const char *key, struct err *e);
/* Number of relations (tables, views, sequences, ...) outside the system schemas that do
 * not belong to an extension: 0 for an empty database. -1 with e on failure. */
int64_t pgsrc_count_relations(PGconn *c, struct err *e);

/* ---- pg_restore and partitioned indexes ------------------------------------------------ */

/* pg_restore --clean drops in the reverse of the archive's order, which puts the index (or
 * primary key, unique constraint) of a partition before the partitioned index it is attached
 * to; PostgreSQL refuses that ("cannot drop inherited constraint") and the restore fails.
 * The fix: reorder the archive's table of contents (pg_restore --list, then --use-list) so
 * that an attached index comes before its parent. It is then dropped after the parent (whose
 * drop takes it along; IF EXISTS then finds nothing) and created before it (ALTER TABLE ONLY
 * on the parent, then INDEX ATTACH, which pg_dump orders after both). */
struct pgsrc_index_tree {
    char *needle; /* how its line reads in a --list: " CONSTRAINT <schema> <table> <name> "
                     or " INDEX <schema> <name> " */
    int depth;    /* 0 for a tree's root */
};
/* The partitioned indexes of the database c is connected to, with the indexes attached to
 * them. *n is 0 (nothing to do) when no partitioned index has partitions. */
int pgsrc_partition_indexes(PGconn *c, struct pgsrc_index_tree **out, size_t *n, struct err *e);
void pgsrc_index_trees_free(struct pgsrc_index_tree *t, size_t n);
/* The --list text with the lines of those indexes moved, deepest first, to where the first
 * of them was; every other line keeps its place. toc is modified. Caller frees. */
char *pgsrc_toc_reorder(char *toc, const struct pgsrc_index_tree *t, size_t n);

/* ---- versions ---------------------------------------------------------------------------- */

/* Parses the first version number in s: "pg_dump (PostgreSQL) 15.8 (Debian 15.8-1)" →
 * 150008 and "15.8"; "9.6.24" → 90624; "16beta1" → 160000. -1 when s has none. */
int pgsrc_version_parse(const char *s, int *num, char *text, size_t n);
/* Major version as an orderable number: 150008 → 1500, 90624 → 906. */
int pgsrc_version_major(int num);
/* Major version as PostgreSQL names it and Debian installs it: "15", "9.6". */
void pgsrc_version_major_name(int num, char *out, size_t n);

/* ---- client programs ----------------------------------------------------------------------- */

struct pgsrc_tool {
    char path[4096];
    int version_num;
    char version[64];
};
/* Finds a PostgreSQL program for a server of version server_num: the same major version's
 * /usr/lib/postgresql/<major>/bin, else the newest newer major there, else PATH; runs it
 * with --version. When require_newer, a program older (by major version) than server_num
 * is refused: pg_dump cannot dump a newer server. */
int pgsrc_tool_find(const char *name, int server_num, bool require_newer, struct pgsrc_tool *out,
                    struct err *e);

/* A child process. Started with fork/exec (no shell); its stderr is captured in the
 * background (the first and last few KiB) for error messages. */
#define PGSRC_STDERR_KEEP 4096
struct pgsrc_child {
    pid_t pid;
    char name[64];
    int in_fd;  /* write end of its stdin when piped, else -1 */
    int out_fd; /* read end of its stdout when piped, else -1 */
    int err_fd;
    pthread_t err_thread;
    bool err_thread_started;
    char head[PGSRC_STDERR_KEEP];
    char tail[PGSRC_STDERR_KEEP]; /* ring */
    size_t head_len, tail_len, tail_pos;
    uint64_t err_bytes;
    int status; /* waitpid status once reaped */
    bool reaped;
};

struct pgsrc_spawn {
    const char *password; /* PGPASSWORD in the child's environment; NULL: none */
    bool pipe_stdin;      /* else /dev/null */
    bool pipe_stdout;     /* else /dev/null, or log_path */
    const char *log_path; /* stdout and stderr appended to this file (0600) instead */
    /* SIGTERM to the child when the thread that started it ends, or the process dies
     * (kill -9): a dump or a restore never runs on, orphaned, holding its locks on the
     * server. The starting thread must outlive the child (it waits for it). */
    bool die_with_parent;
};
/* The child's environment is the part of ours that pgsrc_env_allowed passes (an allowlist:
 * PATH, HOME, locale, TZ, libpq's PG* variables, TLS and Kerberos settings; never
 * PGPASSWORD, which comes from o->password alone), so secrets of ours such as
 * BACKUP_ENCRYPTION_KEY never reach it. */
int pgsrc_child_start(struct pgsrc_child *c, const char *path, char *const argv[],
                      const struct pgsrc_spawn *o, struct err *e);
/* Whether an environment entry ("NAME=value") is passed on to child programs. */
bool pgsrc_env_allowed(const char *entry);
/* Closes the pipes we hold, waits for the child, and checks its exit status: 0 when it
 * exited with 0, else ERR_DATABASE naming the program and quoting its last error lines. */
int pgsrc_child_wait(struct pgsrc_child *c, struct err *e);
/* The same, while watching op's cancel flag (op may be NULL): once it is set the child gets
 * SIGTERM (SIGKILL a few seconds later) and, unless it had exited with 0 already, the error
 * is "cancelled". */
struct caris_op;
int pgsrc_child_wait_cancel(struct pgsrc_child *c, const struct caris_op *op, struct err *e);
/* Sends sig (SIGTERM) and reaps the child (SIGKILL after a few seconds). */
void pgsrc_child_kill(struct pgsrc_child *c, int sig);
/* Captured stderr (head, "...", tail), malloc'd. */
char *pgsrc_child_stderr(const struct pgsrc_child *c);

/* Runs a program and returns its stdout (at most max bytes kept), checking the exit. */
int pgsrc_run_capture(const char *path, char *const argv[], char **out, size_t max, struct err *e);

/* ---- a throwaway local cluster (test restores) ------------------------------------------- */

struct pgsrc_local {
    char *dir;             /* private directory (0700) holding everything below */
    struct temp_item item; /* dir, locked (caris/tempitem.h): a sweep leaves it alone */
    char *datadir;
    int port;
    struct pgsrc_child server;
    bool running;
    int version_num;
};
/* Where pgsrc_local_start makes the cluster's directory for parent: parent, or /tmp when
 * parent's path is too long for the socket path a sockaddr_un holds. */
const char *pgsrc_local_parent(const char *parent);
/* initdb into a new directory under pgsrc_local_parent(parent) (as the current user; root is
 * refused, as initdb does), then starts postgres on a free loopback port with its socket in that
 * directory, and waits (PQping, with a deadline) until it accepts connections. min_num:
 * the server version of the backup (the cluster's major version is at least its). */
int pgsrc_local_start(const char *parent, int min_num, const char *encoding, struct pgsrc_local *l,
                      struct err *e);
/* A target for the local cluster's database dbname (socket, bootstrap superuser). */
void pgsrc_local_target(const struct pgsrc_local *l, const char *dbname, struct pgsrc_target *t);
/* Stops the server (fast shutdown) and removes the directory. */
void pgsrc_local_stop(struct pgsrc_local *l);
/* Whether the local cluster in dir (one that pgsrc_local_start made) still has a server
 * running: its postmaster.pid names a live process. The server of a process killed with
 * SIGKILL stops by itself (it is told to when that process dies), but not at once. */
bool pgsrc_local_running(const char *dir);

#endif

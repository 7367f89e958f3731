/* Errors are values: a function that can fail returns a status and fills a struct err the
 * caller can print. Messages are lower-case, say what failed and on which object; the hint
 * says what to do. Secrets never go into either. */
#ifndef CARIS_ERR_H
#define CARIS_ERR_H

#include <stdbool.h>
#include <stdio.h>

/* Error classes. Each maps to one process exit code (see err_exit_code and README). */
enum err_code {
    ERR_NONE = 0,
    ERR_FAILURE,   /* anything not below: exit 1 */
    ERR_USAGE,     /* bad command line: exit 2 */
    ERR_DAMAGE,    /* integrity failure, checksum mismatch, corrupted file: exit 4 */
    ERR_WRONG_KEY, /* BACKUP_ENCRYPTION_KEY does not open the repository: exit 5 */
    ERR_CONFIG,    /* missing or invalid configuration: exit 6 */
    ERR_NOT_FOUND, /* no such backup / repository / path: exit 7 */
    ERR_IO,        /* permission denied, disk full, other I/O: exit 8 */
    ERR_LOCKED,    /* repository locked by another operation: exit 9 */
    ERR_DATABASE,  /* PostgreSQL side failed: exit 10 */
};

/* Exit codes of caris-backup. 3 is not an error: the operation completed with warnings. */
enum {
    EXIT_OK_ = 0,
    EXIT_WARNINGS = 3,
};

struct err {
    enum err_code code;
    int sys_errno; /* errno that caused it, 0 if none */
    char msg[1024];
    char hint[512];
};

#define ERR_INIT                                                                                   \
    {                                                                                              \
        0                                                                                          \
    }

void err_clear(struct err *e);

/* Sets code, message and optional hint (NULL for none). Always returns -1 so that callers can
 * write `return err_set(e, ...)`. */
int err_set(struct err *e, enum err_code code, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Like err_set, appending ": strerror(errnum)" and choosing ERR_IO for EACCES, EPERM, ENOSPC,
 * EDQUOT, EROFS, EIO (with a matching hint when hint is NULL), ERR_NOT_FOUND for ENOENT. */
int err_sys(struct err *e, int errnum, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefixes the message with "context: " (keeps code and hint). Returns -1. */
int err_wrap(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

bool err_is_set(const struct err *e);
int err_exit_code(const struct err *e);
const char *err_code_name(enum err_code code);
/* The class err_code_name gives name ("usage", ...); ERR_FAILURE for a name it never gives. */
enum err_code err_code_from_name(const char *name);

/* "error: <msg>\nHINT: <hint>\n" */
void err_print(const struct err *e, FILE *out);
/* Writes s to out with the control characters a terminal acts on (C0 but tab and, with
 * newlines, the newline; DEL) as \xNN, and the C1 controls of UTF-8 (U+0080-U+009F) as
 * \u00NN: a value from the configuration or a name in a message cannot move the cursor,
 * recolour or retitle the terminal, nor (newlines false) forge a second log line. Other bytes
 * are written as they are. */
void fputs_visible(const char *s, FILE *out, bool newlines);

#endif

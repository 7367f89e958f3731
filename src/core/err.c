#include "caris/err.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

void err_clear(struct err *e)
{
    if (e)
        memset(e, 0, sizeof(*e));
}

static void set_hint(struct err *e, const char *hint)
{
    if (hint)
        snprintf(e->hint, sizeof(e->hint), "%s", hint);
    else
        e->hint[0] = '\0';
}

int err_set(struct err *e, enum err_code code, const char *hint, const char *fmt, ...)
{
    if (!e)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    e->code = code == ERR_NONE ? ERR_FAILURE : code;
    e->sys_errno = 0;
    set_hint(e, hint);
    return -1;
}

static enum err_code code_for_errno(int errnum)
{
    switch (errnum) {
    case ENOENT:
    case ENOTDIR:
        return ERR_NOT_FOUND;
    default:
        return ERR_IO;
    }
}

static const char *hint_for_errno(int errnum)
{
    switch (errnum) {
    case EACCES:
    case EPERM:
        return "check ownership and permissions (the backup directory should be owned by the "
               "user running caris-backup, mode 700)";
    case ENOSPC:
    case EDQUOT:
        return "the file system is full: free space on it (df -h); if it is the repository's, "
               "apply the retention policy to reclaim space: `caris-backup forget --prune` "
               "(--dry-run first), which needs a few KiB free itself for its lock: when none "
               "is, free some other way first";
    case EROFS:
        return "the file system is mounted read-only";
    case EPIPE:
        return "what reads the output stopped before its end (a pipe closed early, as by `head`); "
               "the repository is not affected";
    case EIO:
        return "the device reported an I/O error: check the disk (dmesg)";
    default:
        return NULL;
    }
}

int err_sys(struct err *e, int errnum, const char *hint, const char *fmt, ...)
{
    if (!e)
        return -1;
    char tmp[sizeof(e->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    snprintf(e->msg, sizeof(e->msg), "%s: %s", tmp, strerror(errnum));
    e->code = code_for_errno(errnum);
    e->sys_errno = errnum;
    set_hint(e, hint ? hint : hint_for_errno(errnum));
    return -1;
}

int err_wrap(struct err *e, const char *fmt, ...)
{
    if (!e)
        return -1;
    char ctx[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof(ctx), fmt, ap);
    va_end(ap);
    char old[sizeof(e->msg)];
    memcpy(old, e->msg, sizeof(old));
    snprintf(e->msg, sizeof(e->msg), "%s: %s", ctx, old);
    if (e->code == ERR_NONE)
        e->code = ERR_FAILURE;
    return -1;
}

bool err_is_set(const struct err *e)
{
    return e && e->code != ERR_NONE;
}

int err_exit_code(const struct err *e)
{
    if (!e)
        return 0;
    switch (e->code) {
    case ERR_NONE:
        return 0;
    case ERR_USAGE:
        return 2;
    case ERR_DAMAGE:
        return 4;
    case ERR_WRONG_KEY:
        return 5;
    case ERR_CONFIG:
        return 6;
    case ERR_NOT_FOUND:
        return 7;
    case ERR_IO:
        return 8;
    case ERR_LOCKED:
        return 9;
    case ERR_DATABASE:
        return 10;
    case ERR_FAILURE:
    default:
        return 1;
    }
}

const char *err_code_name(enum err_code code)
{
    switch (code) {
    case ERR_NONE:
        return "ok";
    case ERR_USAGE:
        return "usage";
    case ERR_DAMAGE:
        return "damage";
    case ERR_WRONG_KEY:
        return "wrong_key";
    case ERR_CONFIG:
        return "config";
    case ERR_NOT_FOUND:
        return "not_found";
    case ERR_IO:
        return "io";
    case ERR_LOCKED:
        return "locked";
    case ERR_DATABASE:
        return "database";
    default:
        return "failure";
    }
}

void fputs_visible(const char *s, FILE *out, bool newlines)
{
    const char *run = s;
    for (const char *p = s;; p++) {
        unsigned char c = (unsigned char)*p;
        bool ctl = c && ((c < 0x20 && c != '\t' && !(newlines && c == '\n')) || c == 0x7f);
        /* a C1 control in UTF-8 (U+0080-U+009F: 0xC2 0x80-0x9F), which terminals act on too
         * (U+009B is CSI) */
        bool c1 = c == 0xc2 && (unsigned char)p[1] >= 0x80 && (unsigned char)p[1] <= 0x9f;
        if (!c || ctl || c1) {
            fwrite(run, 1, (size_t)(p - run), out);
            if (!c)
                return;
            if (c1)
                fprintf(out, "\\u%04x", (unsigned char)*++p);
            else
                fprintf(out, "\\x%02x", c);
            run = p + 1;
        }
    }
}

void err_print(const struct err *e, FILE *out)
{
    if (!err_is_set(e))
        return;
    fputs("error: ", out);
    fputs_visible(e->msg, out, true);
    fputc('\n', out);
    if (e->hint[0]) {
        fputs("HINT: ", out);
        fputs_visible(e->hint, out, true);
        fputc('\n', out);
    }
}

enum err_code err_code_from_name(const char *name)
{
    for (int c = ERR_NONE; name && c <= ERR_DATABASE; c++)
        if (strcmp(err_code_name((enum err_code)c), name) == 0)
            return (enum err_code)c;
    return ERR_FAILURE;
}

#include "caris/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "caris/core.h"
#include "caris/secmem.h"

extern char **environ;

/* Variables that are secrets in themselves: read once from the environment into secret
 * memory, then removed from it (and their bytes in the environment block overwritten, which
 * is what /proc/<pid>/environ shows), so that no child inherits them and no reader of our
 * environment sees them. PGPASSWORD too: libpq would otherwise send it to whatever server a
 * connection names that has no password of its own; each use passes it on explicitly. */
static const char *const ENV_SECRETS[] = {"BACKUP_ENCRYPTION_KEY",
                                          "CARIS_NEW_ENCRYPTION_KEY",
                                          "BACKUP_SMTP_PASSWORD",
                                          "BACKUP_SLACK_WEBHOOK_URL",
                                          "CARIS_COPY_TO_KEY",
                                          "PGPASSWORD",
                                          "CRON_SECRET",
                                          "AWS_SECRET_ACCESS_KEY",
                                          "BACKUP_S3_SECRET_ACCESS_KEY",
                                          "AWS_SESSION_TOKEN",
                                          "BACKUP_S3_SESSION_TOKEN"};

/* For the env file's mode check: the other variables whose value is a secret (a password,
 * a token; a database URL when it carries a password). */
static const char *const OTHER_SECRETS[] = {"POSTGRES_URL", "CARIS_RESTORE_TARGET_URL",
                                            "BACKUP_PG_REPLICATION_URL", "DATABASE_URL"};

static const char *name_in(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return names[i];
    return NULL;
}

const char *config_kv_password(const char *s)
{
    for (const char *p = strcasestr(s, "password"); p; p = strcasestr(p + 1, "password")) {
        const char *q = p + 8;
        while (*q == ' ' || *q == '\t')
            q++;
        if (*q == '=')
            return q;
    }
    return NULL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void config_url_passwords(const char *v, void (*cb)(void *ctx, const char *s, size_t n), void *ctx)
{
    const char *p = strstr(v, "://");
    if (p) {
        p += 3;
        /* libpq ends the user info at the first '@' or '/' only: a bare '?' or '#' is part
         * of a password it takes */
        size_t auth = strcspn(p, "/");
        while (auth > 0 && p[auth - 1] != '@')
            auth--; /* to the authority's last '@' */
        if (auth > 0) {
            auth--;
            const char *colon = memchr(p, ':', auth), *pw = colon ? colon + 1 : NULL;
            /* no ':' but a "%3A": most likely the separator percent-encoded by mistake (libpq
             * then takes "user:password" for the user name, and its refusal quotes it) */
            for (size_t i = 0; !pw && i + 3 <= auth; i++)
                if (p[i] == '%' && p[i + 1] == '3' && (p[i + 2] == 'A' || p[i + 2] == 'a'))
                    pw = p + i + 3;
            if (pw) {
                size_t n = (size_t)(p + auth - pw);
                cb(ctx, pw, n);
                char *dec = secmem_alloc(n + 1);
                size_t k = 0;
                for (size_t i = 0; i < n; i++) {
                    if (pw[i] == '%' && i + 2 < n && hexval(pw[i + 1]) >= 0 &&
                        hexval(pw[i + 2]) >= 0) {
                        dec[k++] = (char)(hexval(pw[i + 1]) * 16 + hexval(pw[i + 2]));
                        i += 2;
                    } else {
                        dec[k++] = pw[i];
                    }
                }
                cb(ctx, dec, k);
                secmem_free(dec);
            }
        }
    }
    /* password=value: libpq's key=value (blanks around '=' allowed; quoted with \ escapes,
     * or bare up to white space, a '&' included), or a URI's query parameter (up to '&') */
    for (const char *q = v; (q = config_kv_password(q)) != NULL;) {
        q += 1 + strspn(q + 1, " \t");
        bool quoted = *q == '\'';
        if (quoted)
            q++;
        char *val = secmem_alloc(strlen(q) + 1);
        size_t k = 0;
        const char *end = q;
        while (*end && (quoted ? *end != '\'' : !strchr(" \t\n", *end))) {
            if (*end == '\\' && end[1])
                end++;
            val[k++] = *end++;
        }
        cb(ctx, q, (size_t)(end - q)); /* as written */
        cb(ctx, val, k);
        if (!quoted)
            cb(ctx, q, strcspn(q, " \t&"));
        secmem_free(val);
        q = end;
    }
}

/* The static name of the secret that name=value holds (it outlives the file's text), or
 * NULL: a database URL only counts with a password (postgresql://user:PASSWORD@host, or
 * password= in the keyword form). */
static const char *secret_name(const char *name, const char *value)
{
    const char *k = name_in(ENV_SECRETS, sizeof(ENV_SECRETS) / sizeof(ENV_SECRETS[0]), name);
    if (k)
        return k;
    k = name_in(OTHER_SECRETS, sizeof(OTHER_SECRETS) / sizeof(OTHER_SECRETS[0]), name);
    if (!k || strstr(k, "_URL") == NULL) /* the database URLs count with a password only */
        return k;
    if (config_kv_password(value))
        return k;
    const char *u = strstr(value, "://");
    const char *at = u ? strchr(u + 3, '@') : NULL;
    const char *colon = u ? strchr(u + 3, ':') : NULL;
    return at && colon && colon < at ? k : NULL;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static bool valid_name(const char *s)
{
    if (!*s || !(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

bool config_var_name_showable(const struct config *c, const char *s)
{
    if (!valid_name(s))
        return false;
    if (strlen(s) < CONFIG_MIN_KEY_LEN)
        return true;
    for (const char *p = s; *p; p++)
        if (islower((unsigned char)*p))
            return false;
    return config_get(c, s) != NULL;
}

/* Parses one value (all that follows the '=') in place: quoted ('...' literal, "..." with \n
 * \" \\ escapes) or bare, in which a '#' after a blank or a tab starts a comment, as in a
 * shell: "KEY=   # note" is empty, "KEY=a#b" is "a#b". Returns NULL on an unterminated
 * quote. */
/* The value of an assignment (quotes, escapes and a comment taken off, in place), or NULL:
 * *bad_escape set when a double-quoted value holds a backslash before anything but n, ", \, $
 * and ` (a shell and dotenv keep such a backslash, this parser dropped it: a key written so
 * was another key here than in a shell's environment). */
static char *parse_value(char *v, bool *bad_escape)
{
    *bad_escape = false;
    bool blank = *v == ' ' || *v == '\t';
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v == '\'' || *v == '"') {
        char q = *v++;
        char *out = v, *w = v;
        for (; *v && *v != q; v++) {
            if (q == '"' && *v == '\\' && v[1]) {
                v++;
                if (!strchr("n\"\\$`", *v)) {
                    *bad_escape = true;
                    return NULL;
                }
                *w++ = *v == 'n' ? '\n' : *v;
            } else {
                *w++ = *v;
            }
        }
        if (*v != q)
            return NULL;
        char *rest = trim(v + 1);
        if (*rest && *rest != '#')
            return NULL;
        *w = '\0';
        return out;
    }
    if (blank && *v == '#')
        *v = '\0';
    for (char *p = v; *p; p++)
        if (*p == '#' && p > v && (p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            break;
        }
    return trim(v);
}

/* Moves a variable from the environment into c->env_secrets. */
static void take_env_secret(struct config *c, const char *name)
{
    const char *v = getenv(name);
    if (v && *v) {
        c->env_secrets =
            xrealloc(c->env_secrets, xsize(c->nenv_secrets + 1, sizeof(*c->env_secrets), 0));
        c->env_secrets[c->nenv_secrets].name = xstrdup(name);
        c->env_secrets[c->nenv_secrets].value = secmem_strdup(v);
        c->nenv_secrets++;
    }
    /* Every occurrence (an execve may pass a name twice; getenv sees the first), wiped in
     * place: unsetenv only drops the pointer, and the initial environment's bytes stay where
     * the kernel put them, readable in /proc/<pid>/environ. */
    size_t n = strlen(name);
    for (char **ep = environ; ep && *ep; ep++)
        if (strncmp(*ep, name, n) == 0 && (*ep)[n] == '=')
            secmem_wipe(*ep + n + 1, strlen(*ep + n + 1));
    unsetenv(name);
}

/* The env file, whole, NUL-terminated, in secret memory (b->data: free with secmem_free):
 * it may hold the key. Grown with secmem_realloc, which wipes what it leaves, so that no
 * copy stays behind in freed heap memory. Pipes (--env-file <(...)) work too. */
#define ENV_FILE_MAX (1u << 20)
static int read_env_file(const char *path, struct buf *b, unsigned *mode, unsigned *uid,
                         struct err *e)
{
    memset(b, 0, sizeof(*b));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_sys(e, errno, NULL, "cannot open %s", path);
    struct stat st;
    bool got = fstat(fd, &st) == 0;
    *mode = got ? (unsigned)(st.st_mode & 07777) : 0;
    *uid = got && S_ISREG(st.st_mode) ? (unsigned)st.st_uid : (unsigned)geteuid();
    if (got && !S_ISREG(st.st_mode)) /* a pipe (--env-file <(...)), /dev/null: no one's file */
        *mode &= ~022u;
    b->cap = 4096;
    b->data = secmem_alloc(b->cap);
    int rc = 0;
    for (;;) {
        if (b->len + 1 == b->cap) {
            if (b->cap >= ENV_FILE_MAX) {
                rc = err_set(e, ERR_CONFIG, "an env file holds KEY=VALUE lines, at most 1 MiB",
                             "%s is larger than 1 MiB", path);
                break;
            }
            b->cap *= 2;
            b->data = secmem_realloc(b->data, b->cap);
        }
        ssize_t r = read(fd, b->data + b->len, b->cap - 1 - b->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = err_sys(e, errno, NULL, "cannot read %s", path);
            break;
        }
        if (r == 0)
            break;
        b->len += (size_t)r;
    }
    close(fd);
    if (rc != 0) {
        secmem_free(b->data);
        memset(b, 0, sizeof(*b));
        return -1;
    }
    b->data[b->len] = '\0';
    return 0;
}

int config_load(struct config *c, const char *env_file, struct err *e)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < sizeof(ENV_SECRETS) / sizeof(ENV_SECRETS[0]); i++)
        take_env_secret(c, ENV_SECRETS[i]);
    const char *path = env_file ? env_file : ".env.local";
    struct buf b = {0};
    struct err fe = ERR_INIT;
    if (read_env_file(path, &b, &c->env_file_mode, &c->env_file_uid, &fe) != 0) {
        if (!env_file && fe.sys_errno == ENOENT)
            return 0;
        config_free(c);
        *e = fe;
        e->code = ERR_CONFIG;
        return err_wrap(e, "cannot read env file");
    }
    c->env_file = xstrdup(path);
    c->env_file_writable = (c->env_file_mode & 022) != 0 ||
                           (c->env_file_uid != 0 && c->env_file_uid != (unsigned)geteuid());
    char *save = NULL;
    int lineno = 0;
    char *text = (char *)b.data;
    size_t tlen = b.len;
    /* a UTF-8 byte order mark, which some editors put first: taken off (it read as part of
     * the first line's name, "invalid variable name", and the scripts skipped that line) */
    if (tlen >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        text += 3, tlen -= 3;
    const char *nul = memchr(text, '\0', tlen);
    if (nul) { /* the lines after it were silently ignored */
        int at = 1;
        for (const char *p = text; p < nul; p++)
            at += *p == '\n';
        err_set(e, ERR_CONFIG, "an env file is text: remove the byte (e.g. tr -d '\\000')",
                "%s line %d: a NUL byte", path, at);
        goto fail;
    }
    /* strtok_r would merge empty lines and break line numbers: walk by hand. */
    for (char *line = text; line; line = save) {
        char *nl = strchr(line, '\n');
        save = nl ? nl + 1 : NULL;
        if (nl)
            *nl = '\0';
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        if (strncmp(s, "export", 6) == 0 && (s[6] == ' ' || s[6] == '\t'))
            s = trim(s + 7);
        char *eq = strchr(s, '=');
        if (!eq) {
            err_set(e, ERR_CONFIG, "each line must be KEY=VALUE, a comment (#) or empty",
                    "%s line %d: missing '='", path, lineno);
            goto fail;
        }
        *eq = '\0';
        char *name = trim(s);
        if (!valid_name(name)) {
            err_set(e, ERR_CONFIG, "variable names are letters, digits and '_'",
                    "%s line %d: invalid variable name", path, lineno);
            goto fail;
        }
        bool bad_escape;
        char *value = parse_value(eq + 1, &bad_escape);
        if (!value && bad_escape) {
            err_set(
                e, ERR_CONFIG,
                "inside double quotes write \\\\ for a backslash (\\n, \\\", \\\\, \\$ and \\` are "
                "the escapes), or use single quotes, which take every character as it is",
                "%s line %d: a backslash in the double-quoted value of %s escapes nothing "
                "(a shell would keep it, this file's reader would not)",
                path, lineno, name);
            goto fail;
        }
        if (!value) {
            err_set(e, ERR_CONFIG, "close the quote, and put nothing but a comment after it",
                    "%s line %d: unterminated or malformed quoted value for %s", path, lineno,
                    name);
            goto fail;
        }
        /* A later assignment of the same name wins, as in a shell. */
        size_t i;
        for (i = 0; i < c->nfile_vars; i++)
            if (strcmp(c->file_vars[i].name, name) == 0)
                break;
        if (i == c->nfile_vars) {
            c->file_vars =
                xrealloc(c->file_vars, xsize(c->nfile_vars + 1, sizeof(*c->file_vars), 0));
            c->file_vars[i].name = xstrdup(name);
            c->nfile_vars++;
        } else {
            secmem_free(c->file_vars[i].value);
        }
        /* Any value may be a secret (the key, a password inside POSTGRES_URL, ...). */
        c->file_vars[i].value = secmem_strdup(value);
        if (!c->env_file_exposed && (c->env_file_mode & 044) && *value)
            c->env_file_exposed = secret_name(name, value);
    }
    secmem_free(b.data);
    return 0;
fail:
    secmem_free(b.data);
    config_free(c);
    return -1;
}

/* Every variable caris-backup reads (its own and the seed's names), for config_unknown_names:
 * a variable added to the program is added here (tests/unit/test_core.c checks that every name
 * the sources read is listed). */
static const char *const KNOWN[] = {
    "BACKUP_ALERT_AFTER",
    "BACKUP_API_LISTEN",
    "BACKUP_API_TLS_CERT",
    "BACKUP_API_TLS_KEY",
    "BACKUP_CLOUD_REPOSITORY",
    "BACKUP_COMPRESS_DUMPS",
    "BACKUP_DIR",
    "BACKUP_DRILL_INTERVAL_DAYS",
    "BACKUP_DRILL_SCRATCH",
    "BACKUP_EMAIL_FROM",
    "BACKUP_EMAIL_NOTIFICATIONS",
    "BACKUP_EMAIL_RECIPIENTS",
    "BACKUP_ENCRYPTION_KEY",
    "BACKUP_FILES_PATHS",
    "BACKUP_KDF_MEMORY",
    "BACKUP_KDF_OPS",
    "BACKUP_NOTIFY_SUCCESS",
    "BACKUP_PG_REPLICATION_URL",
    "BACKUP_PRUNE_INTERVAL_DAYS",
    "BACKUP_REPOSITORY",
    "BACKUP_RETENTION_DAILY",
    "BACKUP_RETENTION_MONTHLY",
    "BACKUP_RETENTION_WEEKLY",
    "BACKUP_RUN_TIMEOUT",
    "BACKUP_S3_ACCESS_KEY_ID",
    "BACKUP_S3_CA_FILE",
    "BACKUP_S3_CONNECTIONS",
    "BACKUP_S3_LIST_PAGE",
    "BACKUP_S3_REGION",
    "BACKUP_S3_RETRY_SECONDS",
    "BACKUP_S3_SECRET_ACCESS_KEY",
    "BACKUP_S3_SECRET_KEY",
    "BACKUP_S3_SESSION_TOKEN",
    "BACKUP_S3_VIRTUAL_HOST",
    "BACKUP_SCHEDULE_DAILY",
    "BACKUP_SCHEDULE_MONTHLY",
    "BACKUP_SCHEDULE_WEEKLY",
    "BACKUP_SLACK_NOTIFICATIONS",
    "BACKUP_SLACK_WEBHOOK_URL",
    "BACKUP_SMTP_CA_FILE",
    "BACKUP_SMTP_PASSWORD",
    "BACKUP_SMTP_TLS",
    "BACKUP_SMTP_URL",
    "BACKUP_SMTP_USER",
    "BACKUP_TZ",
    "BACKUP_WAL_ALERT_MINUTES",
    "BACKUP_WAL_FLUSH_SECONDS",
    "BACKUP_WAL_SLOT",
    "BACKUP_WAL_STREAMING",
    "CARIS_COPY_TO_KEY",
    "CARIS_LOCK_REFRESH_SECONDS",
    "CARIS_LOCK_STALE_SECONDS",
    "CARIS_NEW_ENCRYPTION_KEY",
    "CARIS_NOTIFY_TIMEOUT_SECONDS",
    "CARIS_RESTORE_TARGET_URL",
    "POSTGRES_URL",
};

static bool known_name(const char *name)
{
    for (size_t i = 0; i < sizeof(KNOWN) / sizeof(KNOWN[0]); i++)
        if (strcmp(KNOWN[i], name) == 0)
            return true;
    return false;
}

/* Named like ours: BACKUP_*, CARIS_* (not the tests' knobs, CARIS_TEST_*), POSTGRES*. */
static bool ours(const char *name, bool env)
{
    if (strncmp(name, "BACKUP_", 7) == 0)
        return true;
    if (env) /* the environment holds the tests' and scripts' own CARIS_* variables too */
        return false;
    return (strncmp(name, "CARIS_", 6) == 0 && strncmp(name, "CARIS_TEST_", 11) != 0) ||
           strncmp(name, "POSTGRES", 8) == 0;
}

size_t config_unknown_names(const struct config *c, char *out, size_t n)
{
    size_t count = 0;
    if (n)
        out[0] = '\0';
    for (size_t i = 0; c && i < c->nfile_vars; i++)
        if (ours(c->file_vars[i].name, false) && !known_name(c->file_vars[i].name)) {
            count++;
            str_list_add(out, n, c->file_vars[i].name);
        }
    for (char **ep = environ; ep && *ep; ep++) {
        const char *eq = strchr(*ep, '=');
        if (!eq)
            continue;
        char name[128];
        size_t len = (size_t)(eq - *ep);
        if (len >= sizeof(name))
            continue;
        memcpy(name, *ep, len);
        name[len] = '\0';
        bool in_file = false;
        for (size_t i = 0; c && i < c->nfile_vars && !in_file; i++)
            in_file = strcmp(c->file_vars[i].name, name) == 0;
        if (!in_file && ours(name, true) && !known_name(name)) {
            count++;
            str_list_add(out, n, name);
        }
    }
    return count;
}

int config_check(const struct config *c, struct err *e)
{
    const char *d = config_get(c, "BACKUP_DIR");
    if (d && d[0] != '/')
        return err_set(e, ERR_CONFIG,
                       "give BACKUP_DIR as an absolute path (e.g. /var/backups/caris); an env file "
                       "is not a shell: ~ and $HOME are not expanded there",
                       "BACKUP_DIR is not an absolute path: '%s'", d);
    /* a repository named in the configuration is where every process finds it: the daemon
     * (working directory /) and a shell elsewhere must not read a relative one as two places
     * (--repo on the command line is relative to where it is typed) */
    static const char *const repos[] = {"BACKUP_REPOSITORY", "BACKUP_CLOUD_REPOSITORY"};
    for (size_t i = 0; i < 2; i++) {
        const char *v = config_get(c, repos[i]);
        if (v && *v && v[0] != '/' && strncmp(v, "s3:", 3) != 0)
            return err_set(e, ERR_CONFIG,
                           "give an absolute path or an s3: URL (s3:https://HOST/BUCKET/PREFIX); "
                           "an env file is not a shell: ~ and $HOME are not expanded there",
                           "%s is neither an absolute path nor an s3: URL: '%s'", repos[i], v);
    }
    return 0;
}

void config_keep_env_secrets(struct config *c, const struct config *from)
{
    for (size_t i = 0; from && i < from->nenv_secrets; i++) {
        bool have = false;
        for (size_t k = 0; k < c->nenv_secrets && !have; k++)
            have = strcmp(c->env_secrets[k].name, from->env_secrets[i].name) == 0;
        if (have)
            continue;
        c->env_secrets =
            xrealloc(c->env_secrets, xsize(c->nenv_secrets + 1, sizeof(*c->env_secrets), 0));
        c->env_secrets[c->nenv_secrets].name = xstrdup(from->env_secrets[i].name);
        c->env_secrets[c->nenv_secrets].value = secmem_strdup(from->env_secrets[i].value);
        c->nenv_secrets++;
    }
}

void config_free(struct config *c)
{
    for (size_t i = 0; i < c->nfile_vars; i++) {
        free(c->file_vars[i].name);
        secmem_free(c->file_vars[i].value);
    }
    free(c->file_vars);
    for (size_t i = 0; i < c->nenv_secrets; i++) {
        free(c->env_secrets[i].name);
        secmem_free(c->env_secrets[i].value);
    }
    free(c->env_secrets);
    free(c->env_file);
    memset(c, 0, sizeof(*c));
}

const char *config_get(const struct config *c, const char *name)
{
    for (size_t i = 0; c && i < c->nenv_secrets; i++)
        if (strcmp(c->env_secrets[i].name, name) == 0)
            return c->env_secrets[i].value;
    const char *v = getenv(name);
    if (v && *v)
        return v;
    if (!c)
        return NULL;
    for (size_t i = 0; i < c->nfile_vars; i++)
        if (strcmp(c->file_vars[i].name, name) == 0)
            return *c->file_vars[i].value ? c->file_vars[i].value : NULL;
    return NULL;
}

static bool scrub_one(char *text, size_t n, const char *secret)
{
    static const char R[] = "(redacted)";
    size_t sl = strlen(secret), rl = sizeof(R) - 1;
    bool any = false;
    /* whether the text fills its buffer (it may have been cut there), before a whole secret
     * replaced below by the shorter "(redacted)" shortens it */
    bool cut = strlen(text) + 1 == n;
    for (char *p = strstr(text, secret); p; p = strstr(p, secret)) {
        size_t tail = strlen(p + sl);
        size_t at = (size_t)(p - text);
        if (at + rl + tail + 1 > n) /* no room to say so: the message ends here */
            tail = n > at + rl + 1 ? n - at - rl - 1 : 0;
        if (at + rl + 1 > n) {
            *p = '\0';
            return true;
        }
        memmove(p + rl, p + sl, tail);
        memcpy(p, R, rl);
        p[rl + tail] = '\0';
        p += rl;
        any = true;
    }
    /* a message cut at its buffer's end may end in the secret's first bytes (a text that did
     * not fill its buffer was not cut: one that merely ends like a secret begins is left) */
    size_t len = strlen(text);
    if (!cut && len + 1 != n)
        return any;
    for (size_t k = sl - 1 < len ? sl - 1 : len; k >= 8; k--)
        if (memcmp(text + len - k, secret, k) == 0) {
            size_t at = len - k;
            if (n < rl + 1) { /* no room to say so */
                text[at] = '\0';
                return true;
            }
            if (at + rl + 1 > n)
                at = n - rl - 1;
            memcpy(text + at, R, rl);
            text[at + rl] = '\0';
            return true;
        }
    return any;
}

bool config_holds_secret(const struct config *c, const char *text)
{
    size_t len = strlen(text), cap = len + 64;
    char *copy = xmalloc(cap);
    memcpy(copy, text, len + 1);
    bool secret = config_scrub_secrets(c, copy, cap);
    secmem_wipe(copy, cap);
    free(copy);
    return secret;
}

struct scrub_ctx {
    char *text;
    size_t n;
    bool any;
};

static void scrub_password(void *ctx, const char *s, size_t len)
{
    struct scrub_ctx *x = ctx;
    if (len < 8) /* as whole values: shorter ones would take ordinary words */
        return;
    char *pw = secmem_alloc(len + 1);
    memcpy(pw, s, len);
    pw[len] = '\0';
    x->any = scrub_one(x->text, x->n, pw) || x->any;
    secmem_free(pw);
}

bool config_scrub_secrets(const struct config *c, char *text, size_t n)
{
    bool any = false;
    const char *const *lists[] = {ENV_SECRETS, OTHER_SECRETS};
    const size_t lens[] = {sizeof(ENV_SECRETS) / sizeof(ENV_SECRETS[0]),
                           sizeof(OTHER_SECRETS) / sizeof(OTHER_SECRETS[0])};
    for (size_t l = 0; c && text && n && l < 2; l++)
        for (size_t i = 0; i < lens[l]; i++) {
            const char *v = config_get(c, lists[l][i]);
            if (v && strlen(v) >= 8 && secret_name(lists[l][i], v))
                any = scrub_one(text, n, v) || any;
            /* and a database URL's password alone (a label or an argument that holds it) */
            if (v && l == 1) {
                struct scrub_ctx x = {text, n, false};
                config_url_passwords(v, scrub_password, &x);
                any = x.any || any;
            }
        }
    return any;
}

bool config_get_bool(const struct config *c, const char *name, bool dflt)
{
    const char *v = config_get(c, name);
    if (!v)
        return dflt;
    return strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcasecmp(v, "yes") == 0 ||
           strcasecmp(v, "on") == 0;
}

int config_bool(const struct config *c, const char *name, bool dflt, bool *out, struct err *e)
{
    const char *v = config_get(c, name);
    *out = dflt;
    if (!v)
        return 0;
    static const char *const words[] = {"true", "false", "1", "0", "yes", "no", "on", "off"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (strcasecmp(v, words[i]) == 0) {
            *out = i % 2 == 0;
            return 0;
        }
    }
    return err_set(e, ERR_CONFIG, "use true or false", "%s must be true or false, not '%.40s'",
                   name, v);
}

const char *config_backup_dir(const struct config *c)
{
    const char *d = config_get(c, "BACKUP_DIR");
    return d ? d : CONFIG_DEFAULT_BACKUP_DIR;
}

int config_encryption_key(const struct config *c, const char **key, struct err *e)
{
    const char *k = config_get(c, "BACKUP_ENCRYPTION_KEY");
    if (!k)
        return err_set(e, ERR_CONFIG,
                       "set BACKUP_ENCRYPTION_KEY in the environment or in .env.local (at least "
                       "32 characters; keep a copy outside this machine: without it no backup "
                       "can be restored)",
                       "BACKUP_ENCRYPTION_KEY not set");
    if (strlen(k) < CONFIG_MIN_KEY_LEN)
        return err_set(e, ERR_CONFIG,
                       "use a random key of at least 32 characters, e.g. `openssl rand -base64 "
                       "33`",
                       "BACKUP_ENCRYPTION_KEY is too short (%zu bytes, at least %d needed)",
                       strlen(k), CONFIG_MIN_KEY_LEN);
    *key = k;
    return 0;
}

/* Configuration: the seed's environment variables, read from the process environment and
 * from an env file (`.env.local` in the working directory, or --env-file). The environment
 * wins over the file. Values are never logged: some are secrets (BACKUP_ENCRYPTION_KEY,
 * the password inside POSTGRES_URL, BACKUP_SLACK_WEBHOOK_URL, CRON_SECRET). */
#ifndef CARIS_CONFIG_H
#define CARIS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "caris/err.h"

#define CONFIG_DEFAULT_BACKUP_DIR "/var/backups/caris"
#define CONFIG_MIN_KEY_LEN 32

struct config_var {
    char *name;
    char *value;
};

struct config {
    struct config_var *file_vars; /* from the env file; values in secret memory */
    size_t nfile_vars;
    /* the secret variables (ENV_SECRETS in config.c) taken out of the environment by
     * config_load (values in secret memory; see include/caris/secmem.h) */
    struct config_var *env_secrets;
    size_t nenv_secrets;
    char *env_file;         /* path that was read, NULL if none */
    unsigned env_file_mode; /* its permission bits */
    /* A secret the env file sets (the key, a password, a token) while its mode lets group or
     * others read it: for a warning (chmod 600). NULL otherwise. */
    const char *env_file_exposed;
    /* The env file can be changed by others than its owner (group or other write bits), or
     * belongs to another user than root or the one running: whoever can write it can turn
     * backups off or send notifications elsewhere. For a warning. */
    bool env_file_writable;
    unsigned env_file_uid;
};

/* Loads env_file, or ".env.local" when env_file is NULL (missing is fine then; a missing
 * explicit file is an error). First it moves BACKUP_ENCRYPTION_KEY,
 * CARIS_NEW_ENCRYPTION_KEY, BACKUP_SMTP_PASSWORD, BACKUP_SLACK_WEBHOOK_URL, CARIS_COPY_TO_KEY
 * and PGPASSWORD out of the process environment into c (unsetenv, and their bytes
 * in the initial environment block wiped): child processes never inherit them, and
 * /proc/<pid>/environ no longer shows them; config_get still returns them. Syntax: KEY=VALUE lines,
 * optional "export ", '#' comments, values optionally in single or double quotes. A malformed line
 * is an error naming the file and line. */
int config_load(struct config *c, const char *env_file, struct err *e);
/* The variables of the env file named like caris-backup's (BACKUP_*, CARIS_*, POSTGRES*)
 * and the BACKUP_* ones of the environment that caris-backup does not know, misspelt most
 * likely (they are ignored): ", "-separated into out ("..." past n bytes), "" when none.
 * Returns how many. */
size_t config_unknown_names(const struct config *c, char *out, size_t n);
/* BACKUP_DIR must be an absolute path: a relative one (or "~/x", "$HOME/x", which no shell
 * expanded) would be a new, empty place for each working directory. 0, or -1 with e. */
int config_check(const struct config *c, struct err *e);

/* A configuration loaded again (a daemon's reload) finds the secret variables gone from the
 * environment (config_load took them): this gives c those that from took and c lacks. */
void config_keep_env_secrets(struct config *c, const struct config *from);
void config_free(struct config *c);

/* The value of a variable: environment first, then the file. NULL when unset or empty. */
const char *config_get(const struct config *c, const char *name);
bool config_get_bool(const struct config *c, const char *name, bool dflt);
/* The same, but a value other than true/false/1/0/yes/no/on/off (any case) is an error
 * (ERR_CONFIG) rather than false: a typo must not switch a safety setting. */
int config_bool(const struct config *c, const char *name, bool dflt, bool *out, struct err *e);

/* BACKUP_COMPRESS_DUMPS: compress database dumps' chunks before encryption. Default false:
 * see docs/BACKUP_RECOVERY.md, "Compression of database dumps". */
#define CONFIG_DEFAULT_COMPRESS_DUMPS false

/* Whether s can be shown as the name of a variable an option names (--to-key-env VAR): a
 * shell name ([A-Za-z_][A-Za-z0-9_]*), and, from CONFIG_MIN_KEY_LEN characters on, without
 * lower-case letters and set (in the environment or the env file: a base32 key or upper-case
 * hex is a shell name too). Anything else may be the key itself, given by mistake in the
 * name's place, and is never echoed in an error or kept in the audit log. */
bool config_var_name_showable(const struct config *c, const char *s);
/* Replaces, in text (NUL-terminated, room for n bytes), every occurrence of a secret
 * variable's value (the key, passwords, tokens, a database URL that holds a password; values of
 * 8 bytes or more) by "(redacted)": a secret typed where an argument goes comes back in
 * messages that quote the argument. Returns whether anything was replaced. */
bool config_scrub_secrets(const struct config *c, char *text, size_t n);
/* Whether text, whole (an argument, a label), holds a secret variable's value: what
 * config_scrub_secrets would replace in it, judged on a wiped copy with room to spare (a text
 * is never taken for a message cut at its end, whose last bytes would count when they are a
 * secret's first ones). */
bool config_holds_secret(const struct config *c, const char *text);

/* Where the first "password=" of a libpq key=value text is (sslpassword too, any case, with
 * the blanks libpq allows before '='): a pointer to its '=', or NULL. The value follows, after
 * blanks. */
const char *config_kv_password(const char *s);
/* Calls cb with each form of the password(s) that the connection string v holds: a URI's
 * (scheme://user:password@host; after a "%3A" in the user info when it has no ':', the
 * separator percent-encoded by mistake) as written and percent-decoded, and each
 * password=value's as written, unescaped and (bare) up to a '&'. A form is valid during the
 * call only (the decoded ones are in secure memory, wiped after it). */
void config_url_passwords(const char *v, void (*cb)(void *ctx, const char *s, size_t n), void *ctx);

/* BACKUP_DIR or the default. */
const char *config_backup_dir(const struct config *c);

/* BACKUP_ENCRYPTION_KEY, checked: set, at least CONFIG_MIN_KEY_LEN characters. */
int config_encryption_key(const struct config *c, const char **key, struct err *e);

#endif

/* Temporary directories for unit tests (include after <cmocka.h>): tmpdir_new makes one under
 * $TMPDIR (when set to an absolute path, else /tmp: scripts/test.sh points the sanitizer
 * builds' tests at a tmpfs), tmpdir_free removes it with everything in it and frees the name.
 * tmp_template(NAME) is "$TMPDIR/NAME-XXXXXX", malloc'd, for mkdtemp. */
#ifndef CARIS_TEST_TMPDIR_H
#define CARIS_TEST_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline char *tmp_template(const char *name)
{
    const char *base = getenv("TMPDIR");
    if (!base || base[0] != '/')
        base = "/tmp";
    size_t n = strlen(base) + strlen(name) + sizeof("/-XXXXXX");
    char *t = malloc(n);
    assert_non_null(t);
    snprintf(t, n, "%s/%s-XXXXXX", base, name);
    return t;
}

static inline char *tmpdir_new(void)
{
    char *t = tmp_template("caris-test");
    assert_non_null(mkdtemp(t));
    return t;
}

static inline int tmpdir_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static inline void tmpdir_free(char *d)
{
    nftw(d, tmpdir_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(d);
}

#endif

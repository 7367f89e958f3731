/* Temporary directories for unit tests (include after <cmocka.h>): tmpdir_new makes one under
 * /tmp, tmpdir_free removes it with everything in it and frees the name. */
#ifndef CARIS_TEST_TMPDIR_H
#define CARIS_TEST_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline char *tmpdir_new(void)
{
    char *t = strdup("/tmp/caris-test-XXXXXX");
    assert_non_null(t);
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

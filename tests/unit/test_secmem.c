/* secmem: secret memory (own pages, out of core dumps, wiped on free) and the process's
 * core-dump settings. Checked through what the kernel reports in /proc/self. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <cmocka.h>

#include "caris/chunker.h"
#include "caris/secmem.h"

/* The VmFlags line of the mapping of /proc/self/smaps that holds p ("" when none). */
static void vmflags_of(const void *p, char *out, size_t n)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    bool in = false;
    out[0] = '\0';
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = a >= lo && a < hi;
            continue;
        }
        if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, n, "%s", line + 8);
            break;
        }
    }
    fclose(f);
}

static bool has_flag(const char *flags, const char *flag)
{
    char f[8];
    snprintf(f, sizeof(f), " %s", flag);
    return strstr(flags, f) != NULL;
}

static void test_alloc_dontdump_realloc(void **state)
{
    (void)state;
    uint8_t *p = secmem_alloc(100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(p[i], 0);
    memset(p, 0xab, 100);
    char flags[256];
    vmflags_of(p, flags, sizeof(flags));
    /* "dd": do not include in core dumps (MADV_DONTDUMP). "lo" (locked) depends on
     * RLIMIT_MEMLOCK, so it is only compared with what secmem_locked says; one way only,
     * because AddressSanitizer replaces mlock by a no-op that reports success. */
    assert_true(has_flag(flags, "dd"));
    if (has_flag(flags, "lo"))
        assert_true(secmem_locked(p));
    print_message("secmem: VmFlags%s", flags);
    uint8_t *q = secmem_realloc(p, 10000);
    for (int i = 0; i < 100; i++)
        assert_int_equal(q[i], 0xab);
    for (int i = 100; i < 10000; i++)
        assert_int_equal(q[i], 0);
    vmflags_of(q, flags, sizeof(flags));
    assert_true(has_flag(flags, "dd"));
    secmem_free(q);
    secmem_free(NULL);
    char *s = secmem_strdup("a secret of the test");
    assert_string_equal(s, "a secret of the test");
    secmem_free(s);
}

static void test_no_core_dumps(void **state)
{
    (void)state;
    struct err e = ERR_INIT;
    assert_int_equal(secmem_no_core_dumps(&e), 0);
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_CORE, &rl), 0);
    assert_int_equal(rl.rlim_cur, 0);
    assert_int_equal(rl.rlim_max, 0);
}

static void test_chunker_wipe(void **state)
{
    (void)state;
    uint8_t seed[32];
    memset(seed, 7, sizeof(seed));
    struct chunker c;
    assert_int_equal(chunker_init(&c, &CHUNKER_DEFAULT_DUMPS, seed), 0);
    uint64_t any = 0;
    for (int i = 0; i < 256; i++)
        any |= c.gear[i];
    assert_true(any != 0);
    chunker_wipe(&c);
    for (int i = 0; i < 256; i++)
        assert_true(c.gear[i] == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_dontdump_realloc), cmocka_unit_test(test_chunker_wipe),
        cmocka_unit_test(test_no_core_dumps), /* last: it changes the process */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Secret memory and core-dump settings behind include/caris/secmem.h.
 *
 * Each allocation is a mapping of its own: a 32-byte header (mapping length, whether mlock
 * took) followed by the caller's bytes. Own pages mean that mlock, MADV_DONTDUMP and the wipe
 * on free cover the secret and nothing else, and that nothing of it is left in a heap block
 * that malloc hands out again. The cost is a page per allocation: we hold a handful of
 * secrets (master key, chunker seed, a few configuration values), not thousands. */
#include "caris/secmem.h"

#include "caris/core.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>

struct secmem_head {
    size_t map_len;
    size_t len; /* usable bytes asked for */
    bool locked;
};
/* Keeps the caller's bytes aligned for any type (max_align_t is 16 bytes here). */
#define HEAD_LEN 32
_Static_assert(sizeof(struct secmem_head) <= HEAD_LEN, "the header fits HEAD_LEN");

static struct secmem_head *head_of(const void *p)
{
    return (struct secmem_head *)((uint8_t *)p - HEAD_LEN);
}

void secmem_wipe(void *p, size_t len)
{
    if (p && len > 0)
        OPENSSL_cleanse(p, len);
}

void *secmem_alloc(size_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t ps = page > 0 ? (size_t)page : 4096;
    size_t map_len = xsize(1, len, HEAD_LEN + ps - 1) / ps * ps;
    void *m = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        xoom(len);
    /* Best effort, each: a lock refused by RLIMIT_MEMLOCK leaves the secret swappable, and a
     * kernel without the advice leaves it in core dumps, which secmem_no_core_dumps disables
     * anyway. */
    struct secmem_head *h = m;
    h->map_len = map_len;
    h->len = len;
    h->locked = mlock(m, map_len) == 0;
    (void)madvise(m, map_len, MADV_DONTDUMP);
#ifdef MADV_WIPEONFORK
    (void)madvise(m, map_len, MADV_WIPEONFORK);
#endif
    return (uint8_t *)m + HEAD_LEN;
}

void secmem_free(void *p)
{
    if (!p)
        return;
    struct secmem_head *h = head_of(p);
    size_t map_len = h->map_len;
    bool locked = h->locked;
    OPENSSL_cleanse(h, map_len);
    if (locked)
        munlock(h, map_len);
    munmap(h, map_len);
}

void *secmem_realloc(void *p, size_t new_len)
{
    void *n = secmem_alloc(new_len);
    if (p) {
        size_t old = head_of(p)->len;
        memcpy(n, p, old < new_len ? old : new_len);
        secmem_free(p);
    }
    return n;
}

char *secmem_strdup(const char *s)
{
    size_t n = strlen(s);
    char *d = secmem_alloc(n + 1);
    memcpy(d, s, n + 1);
    return d;
}

bool secmem_locked(const void *p)
{
    return p && head_of(p)->locked;
}

int secmem_no_core_dumps(struct err *e)
{
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0)
        return err_sys(e, errno, NULL, "cannot disable core dumps (setrlimit RLIMIT_CORE)");
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return err_sys(e, errno, NULL, "cannot disable core dumps (prctl PR_SET_DUMPABLE)");
    return 0;
}

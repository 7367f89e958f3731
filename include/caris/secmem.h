/* Memory for secrets (keys, passwords, the chunker seed and its gear table), and the
 * process settings that keep secrets out of core dumps.
 *
 * secmem_alloc gives zeroed, page-aligned memory of its own pages (mmap), asks the kernel to
 * keep it out of swap (mlock) and out of core dumps (MADV_DONTDUMP), and to give a forked
 * child zeros instead of a copy (MADV_WIPEONFORK). Each of these is best effort: a refused
 * mlock (RLIMIT_MEMLOCK) or an old kernel is not an error, and secmem_locked() says whether
 * the lock took. secmem_free wipes with OPENSSL_cleanse before unmapping. Allocation cannot
 * fail (out of memory aborts, as xmalloc does). Base layer: depends on libc and OpenSSL only. */
#ifndef CARIS_SECMEM_H
#define CARIS_SECMEM_H

#include <stdbool.h>
#include <stddef.h>

#include "caris/err.h"

void *secmem_alloc(size_t len);
/* Wipes the whole allocation and releases it. NULL is fine. */
void secmem_free(void *p);
/* Grows (or shrinks) to new_len (p NULL: allocates): a new mapping, the old bytes copied,
 * the old one wiped; the bytes beyond the old length are zero. */
void *secmem_realloc(void *p, size_t new_len);
/* A copy of a string in secret memory; free with secmem_free. */
char *secmem_strdup(const char *s);
/* True when the pages holding p were locked in RAM (for tests and reports). */
bool secmem_locked(const void *p);

/* Wipes memory the compiler cannot optimise the wipe away (OPENSSL_cleanse). */
void secmem_wipe(void *p, size_t len);

/* Process-wide, at the start of main: no core dump (RLIMIT_CORE 0, soft and hard) and not
 * dumpable (PR_SET_DUMPABLE 0: no core, no ptrace attach by the same user, /proc/<pid>/
 * environ, mem, maps readable by root only). -1 with e when either call failed. */
int secmem_no_core_dumps(struct err *e);

#endif

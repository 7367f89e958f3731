/*
 * Only in the AddressSanitizer build (src/cli/meson.build adds it when b_sanitize names
 * address): huge pages for the executable's .bss and for the shadow of its image, to take
 * page faults out of every run.
 *
 * The test suite starts this build's binary about 8,000 times. At each exit LeakSanitizer
 * scans every writable segment for pointers, the sanitizer runtime's own .bss included
 * (linked statically: scripts/build.sh); its stack depot alone is a 4.4 MiB table that is
 * mostly never written. Reading an untouched page faults it in (the zero page): about 1,000
 * faults per run at ~14 us each on this virtual machine. At start the registration of the
 * globals writes their shadow, page by page: a few hundred more. Collapsing the whole 2 MiB
 * pages of .bss (MADV_COLLAPSE, Linux 6.1) right after the runtime has initialised, and
 * asking for huge pages in that shadow before the constructors write it, takes 2,585 faults
 * per `version` down to 1,439, and 58 ms down to 40; 14 % less CPU over test_cli,
 * test_retention, test_locks and test_integrity. Asking for them before the runtime
 * initialises (early_resolve) and ending .bss on a 2 MiB boundary (bss_boundary) take the
 * faults of a `version` from 1,416 to 1,078. It costs about 6 MiB of memory per process.
 *
 * Nothing is checked differently: the memory's contents and protections stay as they are.
 * Where the kernel cannot (no THP, no MADV_COLLAPSE, no free huge page) the calls fail and
 * nothing changes.
 */
#include <sanitizer/asan_interface.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

extern char __executable_start[], __bss_start[], _end[];

/* a byte of .bss at a 2 MiB boundary, after the runtime's tables (the link puts the runtime's
 * objects first): .bss then ends just past that boundary, so the 2 MiB page below it is whole
 * and can take a huge page. Without it the last 0.7 MiB of the runtime's stack depot sat in a
 * 2 MiB page that .bss does not fill, and the leak check's scan at exit faulted it in page by
 * page (~190 faults per run). */
__attribute__((used, aligned(2 << 20))) static char bss_boundary;

#define HUGE ((uintptr_t)2 << 20)

/* madvise(2); on x86-64 without libc: early_resolve (below) runs before any of it may be
 * called */
#if defined(__x86_64__)
__attribute__((always_inline, no_sanitize_address, no_sanitize("undefined"))) static inline long
sys_madvise(uintptr_t addr, uintptr_t len, long advice)
{
    long rc = SYS_madvise;
    __asm__ volatile("syscall"
                     : "+a"(rc)
                     : "D"(addr), "S"(len), "d"(advice)
                     : "rcx", "r11", "memory");
    return rc;
}
#else
#define sys_madvise(addr, len, advice) madvise((void *)(addr), (len), (advice))
#endif

/* huge pages for the whole 2 MiB pages inside [from, to): later faults there take one, and
 * what is already there is collapsed into them (the collapse fails for the 2 MiB pages nothing
 * has touched, which then take a huge page at their first fault). Not instrumented: it runs
 * before the sanitizer runtime's entry (early_resolve), when no shadow memory exists. */
__attribute__((no_sanitize_address, no_sanitize("undefined"))) static void
huge_pages(uintptr_t from, uintptr_t to)
{
    uintptr_t begin = (from + HUGE - 1) & ~(HUGE - 1);
    uintptr_t end = to & ~(HUGE - 1);
    if (end <= begin)
        return;
    if (sys_madvise(begin, end - begin, MADV_HUGEPAGE) == 0)
        (void)sys_madvise(begin, end - begin, MADV_COLLAPSE);
}

#if defined(__x86_64__)
/* The resolver of an indirect function (early_hook) runs while the dynamic linker relocates
 * the executable, before any initialiser, the sanitizer runtime's included: the only code of
 * ours that runs that early. Its huge pages in .bss (and the collapse of the 2 MiB page the
 * linker's copy relocations have written) make the runtime's first writes there (it zeroes its
 * internal allocator's 0.5 MiB table as it initialises) one fault, not 128. Nothing is set up
 * yet (no shadow memory, no interceptors): no instrumentation, no libc. */
static void early_done(void) {}

/* (used: clang sees no call of it, only the ifunc attribute's name) */
__attribute__((used, no_sanitize_address,
               no_sanitize("undefined"))) static void (*early_resolve(void))(void)
{
    huge_pages((uintptr_t)__bss_start, (uintptr_t)_end);
    return early_done;
}

/* called once (image_huge_pages): the call is what makes the link emit the relocation */
static void early_hook(void) __attribute__((ifunc("early_resolve")));
#endif

/* not instrumented: were it ever to run before the sanitizer runtime's own entry, the shadow of
 * its locals would not exist yet */
__attribute__((no_sanitize_address)) static void image_huge_pages(void)
{
#if defined(__x86_64__)
    early_hook(); /* .bss: done by its resolver */
#else
    huge_pages((uintptr_t)__bss_start, (uintptr_t)_end);
#endif
    /* the shadow of the executable's image, which the globals' registration (constructors,
     * after this) writes: the shadow is one mapping, so it may be rounded outwards */
    size_t scale = 0, offset = 0;
    __asan_get_shadow_mapping(&scale, &offset);
    uintptr_t from = ((uintptr_t)__executable_start >> scale) + offset;
    uintptr_t to = ((uintptr_t)_end >> scale) + offset;
    huge_pages(from & ~(HUGE - 1), (to + HUGE - 1) & ~(HUGE - 1));
}

/* .preinit_array: before any constructor, after the sanitizer runtime's own entry (which
 * the link puts first) */
__attribute__((section(".preinit_array"),
               used)) static void (*const image_huge_pages_entry)(void) = image_huge_pages;

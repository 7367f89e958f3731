/* A tar writer (POSIX pax interchange format: ustar headers, with extended headers for what
 * ustar cannot hold): long names and link targets, sizes of 8 GiB and more, large ids,
 * nanosecond and negative mtimes, long owner names, names that are not UTF-8, xattrs
 * (SCHILY.xattr.<name>, as GNU tar and bsdtar read them). Used by `dump` for directories. */
#ifndef CARIS_TARW_H
#define CARIS_TARW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/core.h"
#include "caris/err.h"
#include "caris/fsmeta.h"

#define TARW_BLOCK 512
#define TARW_RECORD 10240 /* the archive is padded to a multiple (tar's default blocking) */

struct tarw {
    int fd;
    uint64_t written; /* bytes written to fd so far */
};

struct tarw_hdr {
    const char *name; /* member name (bytes); directories end with '/' */
    size_t name_len;
    char type; /* '0' file, '1' hard link, '2' symlink, '5' directory, '6' FIFO */
    uint32_t mode, uid, gid;
    const char *uname, *gname; /* NULL: none */
    uint64_t size;             /* '0' only: the bytes that follow */
    int64_t mtime_sec, mtime_nsec;
    const char *link; /* '1' and '2': link name (bytes, NUL-terminated) */
    const struct fs_xattr *xattrs;
    size_t nxattrs;
};

void tarw_init(struct tarw *t, int fd);
/* Writes the member's header(s). For type '0', exactly size bytes must follow through
 * tarw_data, then tarw_end_member. */
int tarw_header(struct tarw *t, const struct tarw_hdr *h, struct err *e);
int tarw_data(struct tarw *t, const void *p, size_t n, struct err *e);
/* Pads the member's data (size bytes) to the next block. */
int tarw_end_member(struct tarw *t, uint64_t size, struct err *e);
/* Two zero blocks, then zeros up to a multiple of TARW_RECORD. */
int tarw_finish(struct tarw *t, struct err *e);

/* Appends one pax record "<length> <key>=<value>\n" (length counts the whole record,
 * its own digits included). */
void tarw_pax_record(struct buf *b, const char *key, const void *value, size_t len);

#endif

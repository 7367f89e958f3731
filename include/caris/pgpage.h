/* PostgreSQL's data pages and relation files, as a physical base backup sees them: which
 * files of a data directory are relation files (cut at page boundaries into fixed blocks),
 * and the page checksum (data_checksums), to report a bad page while backing it up. */
#ifndef CARIS_PGPAGE_H
#define CARIS_PGPAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGPAGE_SIZE 8192u           /* BLCKSZ of every supported server (checked at backup) */
#define PGPAGE_RELSEG_PAGES 131072u /* RELSEG_SIZE: pages per 1 GiB segment file */

/* Whether path (relative to the data directory, or to a tablespace's directory, which
 * starts with PG_<version>_<catversion>/) names a relation file: base/<db>/<n>[_fsm|_vm|
 * _init][.<seg>], global/<n>..., PG_.../<db>/<n>...; *segno gets the segment number. */
bool pgpage_is_relation(const char *path, uint32_t *segno);

/* PostgreSQL's page checksum of an 8 KiB page at block number blkno of its relation
 * (segment number × PGPAGE_RELSEG_PAGES + block in the file): FNV-1a-based, 32 lanes,
 * with the page's own pd_checksum taken as zero. */
uint16_t pgpage_checksum(const uint8_t *page, uint32_t blkno);

enum pgpage_verdict {
    PGPAGE_OK,
    PGPAGE_NEW,     /* never initialised (all zero): no checksum to check */
    PGPAGE_SKIPPED, /* its LSN is at or after the backup's start: written during the backup,
                       possibly torn in our copy; WAL replay rewrites it (full-page image) */
    PGPAGE_BAD,     /* the stored checksum differs */
};
/* Checks a page as a backup must: start_lsn is the backup's start LSN. *stored and *computed
 * get both checksums (for the report). */
enum pgpage_verdict pgpage_verify(const uint8_t *page, uint32_t blkno, uint64_t start_lsn,
                                  uint16_t *stored, uint16_t *computed);

/* The page's LSN (pd_lsn), as the server wrote it. */
uint64_t pgpage_lsn(const uint8_t *page);

#endif

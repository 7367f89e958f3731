/* libFuzzer harness: pgpage_verify / pgpage_checksum and pgpage_is_relation
 * (src/pg/pgpage.c).
 *
 * Input: a mode byte. Odd: 4 bytes of block number, 8 of start LSN, then an 8 KiB page
 * (zero-padded when shorter). Even: a path (relative to the data directory) for
 * pgpage_is_relation. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "caris/pgpage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        if (size < 13)
            return 0;
        uint32_t blkno;
        uint64_t lsn;
        memcpy(&blkno, data + 1, 4);
        memcpy(&lsn, data + 5, 8);
        uint8_t *page = calloc(PGPAGE_SIZE, 1);
        size_t n = size - 13 < PGPAGE_SIZE ? size - 13 : PGPAGE_SIZE;
        memcpy(page, data + 13, n);
        uint16_t stored, computed;
        enum pgpage_verdict v = pgpage_verify(page, blkno, lsn, &stored, &computed);
        if (v == PGPAGE_OK && stored != computed)
            abort();
        free(page);
        return 0;
    }
    char *path = malloc(size);
    memcpy(path, data + 1, size - 1);
    path[size - 1] = '\0';
    uint32_t segno;
    (void)pgpage_is_relation(path, &segno);
    free(path);
    return 0;
}

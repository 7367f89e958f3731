/* libFuzzer harness: the pg_dump custom-format counter of src/pg/dumpcount.c
 * (dumpcount_feed, dumpcount_end, dumpcount_complete, dumpcount_rows, dumpcount_why).
 *
 * Input: two bytes that choose where the stream is cut (twice: three pieces, some possibly
 * empty), then the archive itself, fed piece by piece as pg_dump's output would come. Row
 * counts are asked for a few table names, among them those a small pgbench/test dump has. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "caris/dumpcount.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t cut1 = data[0], cut2 = data[1];
    data += 2;
    size -= 2;
    /* each piece in a buffer of its own, so that reading past a piece is caught */
    cut1 = size ? cut1 * size / 255 : 0;
    cut2 = cut1 + (size - cut1) * cut2 / 255;
    size_t at[4] = {0, cut1, cut2, size};
    struct dumpcount *d = dumpcount_new();
    for (int i = 0; i < 3; i++) {
        size_t n = at[i + 1] - at[i];
        uint8_t *piece = malloc(n ? n : 1);
        memcpy(piece, data + at[i], n);
        dumpcount_feed(d, piece, n);
        free(piece);
    }
    dumpcount_end(d);
    (void)dumpcount_complete(d);
    (void)dumpcount_why(d);
    static const char *const names[][2] = {
        {"public", "t"}, {"public", "pgbench_accounts"}, {"", ""}, {"s", "x"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int64_t rows;
        (void)dumpcount_rows(d, names[i][0], names[i][1], &rows);
    }
    dumpcount_free(d);
    return 0;
}

/* Content-defined chunking (FastCDC, normalized chunking with a gear hash).
 *
 * Stateless cut-point search: give it the bytes that follow the previous cut; it returns the
 * length of the next chunk. Callers keep at least params.max_size bytes buffered (unless at end
 * of stream) so that the result does not depend on how the input was split into reads.
 *
 * The gear table is derived from a 32-byte secret seed stored in the (encrypted) repository
 * config, so chunk boundaries do not reveal file contents to someone who sees only sizes. */
#ifndef CARIS_CHUNKER_H
#define CARIS_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

struct chunker_params {
    uint32_t min_size; /* no cut before this many bytes */
    uint32_t avg_size; /* power of two; expected chunk size */
    uint32_t max_size; /* forced cut here */
};

/* Defaults chosen by measurement (see docs/REPOSITORY-FORMAT.md). */
extern const struct chunker_params CHUNKER_DEFAULT_FILES;
extern const struct chunker_params CHUNKER_DEFAULT_DUMPS;

struct chunker {
    struct chunker_params p;
    uint64_t mask_s; /* harder mask, used before avg_size */
    uint64_t mask_l; /* easier mask, used after avg_size */
    uint64_t gear[256];
};

/* Returns 0, or -1 when params are invalid (avg not a power of two, min > avg > max, max >
 * 64 MiB, min < 64). */
int chunker_init(struct chunker *c, const struct chunker_params *p, const uint8_t seed[32]);

/* Length of the next chunk of data[0..len). If len <= min_size returns len. Never returns more
 * than max_size or len. When len < max_size and more input will follow, a return value of len
 * means "no cut point found yet": buffer more data and call again. */
size_t chunker_cut(const struct chunker *c, const uint8_t *data, size_t len);

/* Wipes the chunker (its gear table is as secret as the seed it was derived from). Call it
 * when done with a chunker that chunker_init filled. */
void chunker_wipe(struct chunker *c);

#endif

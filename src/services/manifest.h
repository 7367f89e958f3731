/* The entries of a file backup's manifest, as JSON (see docs/REPOSITORY-FORMAT.md,
 * "File entries"). Byte strings that are not UTF-8 are stored base64 under "<field>_b64". */
#ifndef CARIS_MANIFEST_H
#define CARIS_MANIFEST_H

#include <jansson.h>

#include "caris/fsmeta.h"

/* Sets obj[field] to the bytes (as a string when UTF-8, else obj[field_b64]). */
void manifest_set_bytes(json_t *obj, const char *field, const char *p, size_t len);
/* Reads what manifest_set_bytes wrote; malloc'd NUL-terminated copy in *out (NUL bytes
 * inside are refused). Returns -1 when absent or malformed. */
int manifest_get_bytes(json_t *obj, const char *field, char **out, size_t *len);

json_t *manifest_entry_new(int root, const char *path, size_t path_len, const struct fs_meta *m);
/* Decodes and validates an entry (types, ranges, path shape). */
int manifest_entry_decode(json_t *ent, int nroots, int *root, char **path, size_t *path_len,
                          struct fs_meta *m, struct err *e);
const char *manifest_type_name(enum fs_type t);

/* The logical offset of every chunk of a file entry (offs: nchunks slots): the chunks fill
 * the entry's data extents in order, or the whole file when it has none. -1 when they do not
 * fit the extents or the size exactly. */
int manifest_chunk_offsets(json_t *ent, const uint32_t *lens, size_t nchunks, uint64_t size,
                           uint64_t *offs);

#endif

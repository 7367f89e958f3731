/* libFuzzer harness: manifest entry decoding (src/services/manifest.c:
 * manifest_entry_decode, manifest_get_bytes, manifest_chunk_offsets), as a restore, mount or
 * inspect reads a file backup's entries.
 *
 * Input: one entry as JSON (jansson). A decoded entry is encoded again with
 * manifest_entry_new and must decode to the same path and metadata; its "chunks" ([id, len]
 * pairs) are placed with manifest_chunk_offsets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "caris/fsmeta.h"
#include "services/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *ent = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
    if (!ent)
        return 0;
    int root;
    char *path;
    size_t plen;
    struct fs_meta m;
    struct err e = ERR_INIT;
    if (manifest_entry_decode(ent, 2, &root, &path, &plen, &m, &e) == 0) {
        json_t *again = manifest_entry_new(root, path, plen, &m);
        int root2;
        char *path2;
        size_t plen2;
        struct fs_meta m2;
        if (manifest_entry_decode(again, 2, &root2, &path2, &plen2, &m2, &e) != 0 ||
            root2 != root || plen2 != plen || memcmp(path2, path, plen) != 0 || m2.mode != m.mode ||
            m2.nxattrs != m.nxattrs) {
            fprintf(stderr, "manifest: entry does not survive a round trip\n");
            abort();
        }
        free(path2);
        fs_meta_free(&m2);
        json_decref(again);
        json_t *chunks = json_object_get(ent, "chunks");
        size_t n = json_array_size(chunks);
        if (n <= 4096) {
            uint32_t *lens = calloc(n ? n : 1, sizeof(*lens));
            uint64_t *offs = calloc(n ? n : 1, sizeof(*offs));
            for (size_t i = 0; i < n; i++)
                lens[i] =
                    (uint32_t)json_integer_value(json_array_get(json_array_get(chunks, i), 1));
            (void)manifest_chunk_offsets(ent, lens, n, m.size, offs);
            free(lens);
            free(offs);
        }
        free(path);
        fs_meta_free(&m);
    }
    json_decref(ent);
    return 0;
}

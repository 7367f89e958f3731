/* What a pack holds, read from its own trailer (not from the index): for an operator who
 * investigates damage, and for tests that must damage one known blob. */
#include "internal.h"

#include <string.h>

#include "caris/crypto.h"

int repo_pack_blobs(struct repo *r, const char *name, json_t **out, struct err *e)
{
    *out = NULL;
    if (strncmp(name, "data/", 5) != 0 || strchr(name, '\0')[-1] == '/' || strstr(name, ".."))
        return err_set(e, ERR_USAGE,
                       "give the pack's name relative to the repository, e.g. data/ab/<id>",
                       "'%s' is not a pack name", name);
    struct buf t = {0};
    uint64_t size = 0;
    if (pack_read_trailer(r, name, &t, &size, e) != 0) {
        buf_free(&t);
        return -1;
    }
    json_t *blobs = json_array();
    for (size_t i = 0; i + PACK_TRAILER_ENTRY_LEN <= t.len; i += PACK_TRAILER_ENTRY_LEN) {
        const uint8_t *p = t.data + i;
        char hex[65];
        cx_hex(p, 32, hex);
        uint32_t ulf = load_u32le(p + 40);
        json_array_append_new(blobs, json_pack("{s:s, s:I, s:I, s:I, s:b}", "id", hex, "offset",
                                               (json_int_t)load_u32le(p + 32), "length",
                                               (json_int_t)load_u32le(p + 36), "size",
                                               (json_int_t)(ulf & ULEN_MASK), "compressed",
                                               (ulf & ULEN_COMPRESSED) != 0));
    }
    buf_free(&t);
    *out = json_pack("{s:s, s:I, s:o}", "pack", name, "bytes", (json_int_t)size, "blobs", blobs);
    return 0;
}

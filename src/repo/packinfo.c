/* What a pack holds, read from its own trailer (not from the index): for an operator who
 * investigates damage, and for tests that must damage one known blob. */
#include "internal.h"

#include <string.h>

#include "caris/crypto.h"
#include "caris/pipeline.h"

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

int repo_backup_blobs(struct repo *r, const char *backup_id, json_t **out, struct err *e)
{
    *out = NULL;
    char name[65];
    json_t *summary = NULL, *ref = NULL;
    if (repo_snapshot_find(r, backup_id, name, NULL, e) != 0 ||
        repo_snapshot_load_ref(r, name, &summary, &ref, e) != 0)
        return -1;
    json_decref(summary);
    uint8_t(*ids)[32] = NULL;
    uint32_t *lens = NULL;
    size_t n = 0;
    if (chunklist_decode(json_object_get(ref, "chunks"), &ids, &lens, &n) != 0) {
        json_decref(ref);
        return err_set(e, ERR_DAMAGE, "run `caris-backup check`",
                       "snapshot %s (backup %s): its manifest's chunk list is malformed", name,
                       backup_id);
    }
    json_t *blobs = json_array();
    for (size_t i = 0; i < n; i++) {
        char hex[65], pack[80];
        cx_hex(ids[i], 32, hex);
        json_t *b = json_pack("{s:s, s:I}", "id", hex, "size", (json_int_t)lens[i]);
        struct ientry en;
        if (repo_lookup_entry(r, ids[i], &en) && en.pack != PACK_PENDING) {
            pthread_mutex_lock(&r->mu);
            pack_object_name(r->packs[en.pack].id, pack, sizeof(pack));
            pthread_mutex_unlock(&r->mu);
            json_object_set_new(b, "pack", json_string(pack));
            json_object_set_new(b, "offset", json_integer(en.off));
            json_object_set_new(b, "length", json_integer(en.clen));
        } else {
            json_object_set_new(b, "pack", json_null());
        }
        json_array_append_new(blobs, b);
    }
    free(ids);
    free(lens);
    char obj[80];
    snprintf(obj, sizeof(obj), "snapshots/%s", name);
    *out = json_pack("{s:s, s:s, s:O, s:O, s:o}", "backup", backup_id, "snapshot", obj, "bytes",
                     json_object_get(ref, "bytes"), "sha256", json_object_get(ref, "sha256"),
                     "blobs", blobs);
    json_decref(ref);
    if (!*out)
        return err_set(e, ERR_DAMAGE, "run `caris-backup check`",
                       "snapshot %s (backup %s): its manifest reference is malformed", name,
                       backup_id);
    return 0;
}

#include "manifest.h"

#include <stdlib.h>
#include <string.h>

#include "caris/core.h"

const char *manifest_type_name(enum fs_type t)
{
    switch (t) {
    case FS_REG:
        return "file";
    case FS_DIR:
        return "dir";
    case FS_SYMLINK:
        return "symlink";
    case FS_HARDLINK:
        return "hardlink";
    case FS_FIFO:
        return "fifo";
    }
    return "?";
}

static int type_from_name(const char *s, enum fs_type *t)
{
    static const enum fs_type all[] = {FS_REG, FS_DIR, FS_SYMLINK, FS_HARDLINK, FS_FIFO};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (strcmp(s, manifest_type_name(all[i])) == 0) {
            *t = all[i];
            return 0;
        }
    return -1;
}

void manifest_set_bytes(json_t *obj, const char *field, const char *p, size_t len)
{
    if (str_is_utf8(p, len)) {
        json_object_set_new(obj, field, json_stringn(p, len));
    } else {
        char *k = xasprintf("%s_b64", field);
        char *v = b64_encode(p, len);
        json_object_set_new(obj, k, json_string(v));
        free(k);
        free(v);
    }
}

int manifest_get_bytes(json_t *obj, const char *field, char **out, size_t *len)
{
    json_t *v = json_object_get(obj, field);
    if (v) {
        if (!json_is_string(v))
            return -1;
        size_t n = json_string_length(v);
        const char *s = json_string_value(v);
        if (memchr(s, 0, n))
            return -1;
        *out = xstrndup(s, n);
        *len = n;
        return 0;
    }
    char *k = xasprintf("%s_b64", field);
    v = json_object_get(obj, k);
    free(k);
    if (!v || !json_is_string(v))
        return -1;
    uint8_t *raw;
    size_t n;
    if (b64_decode(json_string_value(v), &raw, &n) != 0)
        return -1;
    if (memchr(raw, 0, n)) {
        free(raw);
        return -1;
    }
    *out = xstrndup((const char *)raw, n);
    *len = n;
    free(raw);
    return 0;
}

json_t *manifest_entry_new(int root, const char *path, size_t path_len, const struct fs_meta *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "root", json_integer(root));
    manifest_set_bytes(o, "path", path, path_len);
    json_object_set_new(o, "type", json_string(manifest_type_name(m->type)));
    json_object_set_new(o, "mode", json_integer(m->mode));
    json_object_set_new(o, "uid", json_integer(m->uid));
    json_object_set_new(o, "gid", json_integer(m->gid));
    if (m->user)
        manifest_set_bytes(o, "user", m->user, strlen(m->user));
    if (m->group)
        manifest_set_bytes(o, "group", m->group, strlen(m->group));
    json_object_set_new(o, "mtime_s", json_integer(m->mtime_sec));
    json_object_set_new(o, "mtime_ns", json_integer(m->mtime_nsec));
    if (m->type == FS_REG)
        json_object_set_new(o, "size", json_integer((json_int_t)m->size));
    if (m->link)
        manifest_set_bytes(o, "link", m->link, strlen(m->link));
    if (m->nxattrs) {
        json_t *xa = json_array();
        for (size_t i = 0; i < m->nxattrs; i++) {
            char *v = b64_encode(m->xattrs[i].value, m->xattrs[i].len);
            json_t *x = json_object();
            manifest_set_bytes(x, "name", m->xattrs[i].name, strlen(m->xattrs[i].name));
            json_object_set_new(x, "value_b64", json_string(v));
            free(v);
            json_array_append_new(xa, x);
        }
        json_object_set_new(o, "xattrs", xa);
    }
    return o;
}

static int get_int(json_t *o, const char *k, json_int_t lo, json_int_t hi, json_int_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

/* Backups made before 2026-12-03 recorded a file that was truncated while it was read (marked
 * changed_during_backup) with the size it had before: its chunks, and its SHA-256, hold only
 * the bytes read, so every reader refused the entry as malformed. Such a file without holes
 * (no "extents") is read as what it is, its chunks back to back: the SHA-256 then decides, as
 * for every file. Entries written since record the length kept as their size. */
static uint64_t legacy_truncated_size(json_t *ent, uint64_t size)
{
    json_t *chunks = json_object_get(ent, "chunks");
    if (!json_is_true(json_object_get(ent, "changed_during_backup")) ||
        json_object_get(ent, "extents") || !json_is_array(chunks))
        return size;
    uint64_t sum = 0;
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c)
    {
        json_int_t len = json_integer_value(json_array_get(c, 1));
        if (len <= 0 || (uint64_t)len > size - sum)
            return size; /* not that case: the readers' own checks decide */
        sum += (uint64_t)len;
    }
    return sum;
}

int manifest_entry_decode(json_t *ent, int nroots, int *root, char **path, size_t *path_len,
                          struct fs_meta *m, struct err *e)
{
    memset(m, 0, sizeof(*m));
    *path = NULL;
    json_int_t iroot, mode, uid, gid, ms, mns, size = 0;
    const char *type = json_string_value(json_object_get(ent, "type"));
    if (!json_is_object(ent) || !type || type_from_name(type, &m->type) != 0 ||
        get_int(ent, "root", 0, nroots - 1, &iroot) || get_int(ent, "mode", 0, 07777, &mode) ||
        get_int(ent, "uid", 0, UINT32_MAX, &uid) || get_int(ent, "gid", 0, UINT32_MAX, &gid) ||
        get_int(ent, "mtime_s", INT64_MIN / 2, INT64_MAX / 2, &ms) ||
        get_int(ent, "mtime_ns", 0, 999999999, &mns) ||
        manifest_get_bytes(ent, "path", path, path_len) != 0)
        goto bad;
    if (m->type == FS_REG && get_int(ent, "size", 0, INT64_MAX, &size) != 0)
        goto bad;
    *root = (int)iroot;
    m->mode = (uint32_t)mode;
    m->uid = (uint32_t)uid;
    m->gid = (uint32_t)gid;
    m->mtime_sec = ms;
    m->mtime_nsec = mns;
    m->size = (uint64_t)size;
    if (m->type == FS_REG)
        m->size = legacy_truncated_size(ent, m->size);
    size_t n;
    if (m->type == FS_SYMLINK || m->type == FS_HARDLINK) {
        if (manifest_get_bytes(ent, "link", &m->link, &n) != 0)
            goto bad;
    }
    char *s;
    if (manifest_get_bytes(ent, "user", &s, &n) == 0)
        m->user = s;
    if (manifest_get_bytes(ent, "group", &s, &n) == 0)
        m->group = s;
    json_t *xa = json_object_get(ent, "xattrs");
    if (xa) {
        if (!json_is_array(xa) || json_array_size(xa) > 65536)
            goto bad;
        m->xattrs = xcalloc(json_array_size(xa), sizeof(*m->xattrs));
        size_t i;
        json_t *x;
        json_array_foreach(xa, i, x)
        {
            const char *v = json_string_value(json_object_get(x, "value_b64"));
            struct fs_xattr *fx = &m->xattrs[m->nxattrs];
            if (!v || manifest_get_bytes(x, "name", &fx->name, &n) != 0)
                goto bad;
            m->nxattrs++;
            if (b64_decode(v, &fx->value, &fx->len) != 0)
                goto bad;
        }
    }
    return 0;
bad:
    free(*path);
    *path = NULL;
    fs_meta_free(m);
    return err_set(e, ERR_DAMAGE, NULL, "malformed manifest entry");
}

int manifest_chunk_offsets(json_t *ent, const uint32_t *lens, size_t nchunks, uint64_t size,
                           uint64_t *offs)
{
    json_t *ext = json_object_get(ent, "extents");
    uint64_t sum = 0;
    if (!ext) {
        for (size_t k = 0; k < nchunks; k++) {
            offs[k] = sum;
            sum += lens[k];
        }
        return sum == size ? 0 : -1;
    }
    if (!json_is_array(ext))
        return -1;
    size_t ei = 0, k = 0;
    uint64_t prev_end = 0;
    for (; ei < json_array_size(ext); ei++) {
        json_t *x = json_array_get(ext, ei);
        json_int_t off = json_integer_value(json_array_get(x, 0));
        json_int_t len = json_integer_value(json_array_get(x, 1));
        if (off < 0 || len < 0 || (uint64_t)off < prev_end || (uint64_t)off + (uint64_t)len > size)
            return -1;
        uint64_t pos = (uint64_t)off, end = (uint64_t)off + (uint64_t)len;
        while (pos < end) {
            if (k >= nchunks || pos + lens[k] > end)
                return -1;
            offs[k] = pos;
            pos += lens[k++];
        }
        prev_end = end;
    }
    return k == nchunks ? 0 : -1;
}

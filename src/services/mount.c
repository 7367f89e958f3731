/* `caris-backup mount` (see caris/mount.h): a read-only FUSE 3 file system over the backups,
 * served by libfuse's low-level API on one thread.
 *
 * Nodes: one struct mnode per inode, never freed before the unmount, so that the kernel's
 * node ids can be the nodes' addresses (the root is FUSE_ROOT_ID). A hard link is a second
 * name (struct mchild) of its first name's node: same inode, same content. Entries come from
 * inspect_load / inspect_next_entry (the paths `ls` shows), content from the chunk lists as
 * dump reads them (chunklist_decode, manifest_chunk_offsets), chunks from repo_blob_load. */
#define FUSE_USE_VERSION 314

#include "caris/mount.h"
#include "caris/lazylib.h"
#include "caris/retention.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse3/fuse_lowlevel.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caris/core.h"
#include "caris/inspect.h"
#include "caris/pipeline.h"
#include "caris/pool.h"
#include "chunkcache.h"
#include "inspect_internal.h"
#include "manifest.h"

/* What the kernel may cache: everything here is immutable while mounted. */
#define MOUNT_TIMEOUT_S 3600.0
/* Longest wait between two looks at the cancel flag (a signal may reach another thread, so
 * that poll is not interrupted). */
#define MOUNT_POLL_MS 250
/* How often the lock is checked (it is refreshed by lock.c's thread). */
#define MOUNT_LOCK_CHECK_NS (60 * 1000000000LL)
#define MOUNT_BAD_MAX 1024
/* Readahead of a file read in order: at most this many chunks, this many bytes, ahead. */
#define MOUNT_AHEAD_CHUNKS 8
#define MOUNT_AHEAD_BYTES (16u << 20)
#define MOUNT_AHEAD_TOTAL (32u << 20) /* all open files together */

struct mnode;

struct mchild {
    char *name;
    struct mnode *node;
};

/* A backup's directory: its entries are loaded at the first look inside. */
struct mbackup {
    char id[CARIS_ID_MAX];
    bool files;
    bool loaded, failed;
    struct mnode **nodes; /* every node of the backup (owned), for freeing */
    size_t nnodes;
};

struct mnode {
    uint64_t ino;  /* st_ino */
    uint32_t mode; /* S_IFMT | permission bits */
    uint32_t uid, gid;
    int64_t mtime_sec, mtime_nsec;
    uint64_t size, blocks;
    uint32_t nlink;
    bool real;  /* from an entry (not a made-up parent of a root) */
    char *link; /* symlink target */
    struct fs_xattr *xattrs;
    size_t nxattrs;
    const char *name; /* the first name (borrowed from the parent's mchild), for messages */
    struct mnode *parent;
    /* directories */
    struct mchild *children;
    size_t nchildren, cap;
    struct mbackup *backup; /* a backup's top directory */
    /* regular files */
    uint8_t (*ids)[32];
    uint32_t *lens;
    uint64_t *offs;
    size_t nchunks;
    char *unreadable; /* could not be read at backup time */
    char *text;       /* a file made up by the mount (its content; no chunks) */
};

/* ---- the file system ------------------------------------------------------------------- */

struct ofile;

struct mountfs {
    struct repo *r;
    const struct caris_op *op;
    struct mnode root;
    struct mbackup *backups; /* one per backup (files and database) */
    size_t nbackups;
    struct mnode **top; /* the backups' directories and `latest` (owned) */
    size_t ntop;
    uint64_t next_ino;
    uint32_t uid, gid; /* the made-up directories' owner: who mounted */
    struct chunkcache cache;
    struct pool *pool;    /* readahead loads */
    uint64_t ahead_bytes; /* asked for ahead and not taken yet, all files */
    struct ofile *files;  /* open */
    uint8_t (*bad)[32];   /* damaged chunks logged already (each is logged once) */
    size_t nbad;
    struct caris_mount_stats st;
    bool no_kernel_acl; /* the kernel cannot apply POSIX ACLs (op_init): node_stat masks */
};

static struct mnode *node_new(struct mountfs *m, uint32_t mode)
{
    struct mnode *n = xcalloc(1, sizeof(*n));
    n->ino = ++m->next_ino;
    n->mode = mode;
    n->uid = m->uid;
    n->gid = m->gid;
    n->nlink = 1;
    return n;
}

static void node_free(struct mnode *n)
{
    for (size_t i = 0; i < n->nchildren; i++)
        free(n->children[i].name);
    free(n->children);
    free(n->link);
    for (size_t i = 0; i < n->nxattrs; i++) {
        free(n->xattrs[i].name);
        free(n->xattrs[i].value);
    }
    free(n->xattrs);
    free(n->ids);
    free(n->lens);
    free(n->offs);
    free(n->unreadable);
    free(n->text);
    free(n);
}

static void child_add(struct mnode *dir, const char *name, size_t len, struct mnode *n)
{
    if (dir->nchildren == dir->cap) {
        dir->cap = dir->cap ? dir->cap * 2 : 8;
        dir->children = xrealloc(dir->children, xsize(dir->cap, sizeof(*dir->children), 0));
    }
    dir->children[dir->nchildren++] = (struct mchild){xstrndup(name, len), n};
    if (!n->name) {
        n->name = dir->children[dir->nchildren - 1].name;
        n->parent = dir;
    }
}

static int child_cmp(const void *a, const void *b)
{
    return strcmp(((const struct mchild *)a)->name, ((const struct mchild *)b)->name);
}

static struct mnode *child_find(const struct mnode *dir, const char *name)
{
    if (!dir->nchildren)
        return NULL;
    struct mchild key = {(char *)name, NULL};
    struct mchild *c =
        bsearch(&key, dir->children, dir->nchildren, sizeof(struct mchild), child_cmp);
    return c ? c->node : NULL;
}

static struct mnode *node_of(struct mountfs *m, fuse_ino_t ino)
{
    /* Node ids are the addresses of nodes handed to the kernel by lookup, which stay valid
     * until the unmount. */
    return ino == FUSE_ROOT_ID ? &m->root : (struct mnode *)(uintptr_t)ino;
}

static fuse_ino_t ino_of(struct mountfs *m, struct mnode *n)
{
    return n == &m->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

/* The node's path for messages: "<backup id>/<path>". */
static void node_path(const struct mnode *n, char *out, size_t len)
{
    const struct mnode *chain[256];
    size_t k = 0;
    for (const struct mnode *x = n; x && x->name && k < 256; x = x->parent)
        chain[k++] = x;
    struct buf b = {0};
    while (k--) {
        buf_append(&b, chain[k]->name, strlen(chain[k]->name));
        if (k)
            buf_append_u8(&b, '/');
    }
    str_escape(b.data ? (const char *)b.data : "", b.len, out, len);
    buf_free(&b);
}

/* ---- loading a backup ---------------------------------------------------------------- */

/* Full path -> node while a backup is built (entries' parents come before them, but a
 * path's made-up parents and duplicates from overlapping roots are found here). */
struct pslot {
    char *path; /* NULL: free */
    size_t len;
    struct mnode *node;
};
struct pathmap {
    struct pslot *slots;
    size_t cap, used; /* cap: 0 or a power of two */
};

static uint64_t path_hash(const char *p, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static struct pslot *pathmap_slot(struct pathmap *pm, const char *p, size_t len)
{
    size_t i = (size_t)(path_hash(p, len) & (pm->cap - 1));
    while (pm->slots[i].path &&
           !(pm->slots[i].len == len && memcmp(pm->slots[i].path, p, len) == 0))
        i = (i + 1) & (pm->cap - 1);
    return &pm->slots[i];
}

static void pathmap_put(struct pathmap *pm, const char *p, size_t len, struct mnode *n)
{
    if ((pm->used + 1) * 2 > pm->cap) {
        struct pathmap g = {xcalloc(pm->cap ? pm->cap * 2 : 1024, sizeof(struct pslot)),
                            pm->cap ? pm->cap * 2 : 1024, pm->used};
        for (size_t i = 0; i < pm->cap; i++)
            if (pm->slots[i].path)
                *pathmap_slot(&g, pm->slots[i].path, pm->slots[i].len) = pm->slots[i];
        free(pm->slots);
        *pm = g;
    }
    struct pslot *s = pathmap_slot(pm, p, len);
    s->path = xstrndup(p, len);
    s->len = len;
    s->node = n;
    pm->used++;
}

static void pathmap_free(struct pathmap *pm)
{
    for (size_t i = 0; i < pm->cap; i++)
        free(pm->slots[i].path);
    free(pm->slots);
}

struct builder {
    struct mountfs *m;
    struct mbackup *b;
    struct mnode *top;
    struct pathmap pm;
    int64_t time_sec;
};

static struct mnode *builder_add(struct builder *bd, struct mnode *n)
{
    struct mbackup *b = bd->b;
    if ((b->nnodes & (b->nnodes - 1)) == 0) /* 0, 1, 2, 4, ...: grow to the next power */
        b->nodes = xrealloc(b->nodes, xsize(b->nnodes ? b->nnodes * 2 : 1, sizeof(*b->nodes), 0));
    b->nodes[b->nnodes++] = n;
    return n;
}

/* The node at full path p (an absolute path), made up with its parents when absent. */
static struct mnode *builder_path(struct builder *bd, const char *p, size_t len)
{
    while (len > 1 && p[len - 1] == '/')
        len--;
    if (len <= 1)
        return bd->top;
    if (bd->pm.cap) {
        struct pslot *s = pathmap_slot(&bd->pm, p, len);
        if (s->path)
            return s->node;
    }
    const char *slash = p + len;
    while (slash > p && slash[-1] != '/')
        slash--;
    struct mnode *parent = builder_path(bd, p, (size_t)(slash - p));
    /* a directory above a root that the backup did not record (load_ancestors): the mounting
     * user's alone (it was 0555: a file that a 0700 directory above its root kept private was
     * readable by every user of a mount --allow-other) */
    struct mnode *n = builder_add(bd, node_new(bd->m, S_IFDIR | 0500));
    n->mtime_sec = bd->time_sec;
    child_add(parent, slash, (size_t)(p + len - slash), n);
    pathmap_put(&bd->pm, p, len, n);
    return n;
}

static int builder_entry(struct builder *bd, struct dentry *d, struct err *e)
{
    static const uint32_t types[] = {[FS_REG] = S_IFREG,
                                     [FS_DIR] = S_IFDIR,
                                     [FS_SYMLINK] = S_IFLNK,
                                     [FS_HARDLINK] = S_IFREG,
                                     [FS_FIFO] = S_IFIFO};
    char esc[600];
    if (d->m.type == FS_HARDLINK) {
        /* A further name of the node of its first name, which the walk met earlier. */
        size_t tl;
        char *t = inspect_link_full(NULL, d, &tl);
        struct mnode *target = NULL;
        if (bd->pm.cap) {
            struct pslot *s = pathmap_slot(&bd->pm, t, tl);
            target = s->path ? s->node : NULL;
        }
        free(t);
        if (!target || (target->mode & S_IFMT) != S_IFREG || !target->real)
            return err_set(e, ERR_DAMAGE, NULL,
                           "backup %s: hard link %s names a file the backup does not hold",
                           bd->b->id, str_escape(d->full, d->full_len, esc, sizeof(esc)));
        const char *slash = d->full + d->full_len;
        while (slash > d->full && slash[-1] != '/')
            slash--;
        struct mnode *parent = builder_path(bd, d->full, (size_t)(slash - d->full));
        if (pathmap_slot(&bd->pm, d->full, d->full_len)->path)
            return 0; /* the same path under two overlapping roots: the first stays */
        child_add(parent, slash, (size_t)(d->full + d->full_len - slash), target);
        target->nlink++;
        pathmap_put(&bd->pm, d->full, d->full_len, target);
        return 0;
    }
    struct mnode *n = builder_path(bd, d->full, d->full_len);
    if (n->real)
        return 0; /* overlapping roots: the first stays */
    if (n->nchildren && d->m.type != FS_DIR)
        return err_set(e, ERR_DAMAGE, NULL, "backup %s: %s is a directory and not one", bd->b->id,
                       str_escape(d->full, d->full_len, esc, sizeof(esc)));
    n->real = true;
    n->mode = types[d->m.type] | (d->m.mode & 07777);
    n->uid = d->m.uid;
    n->gid = d->m.gid;
    n->mtime_sec = d->m.mtime_sec;
    n->mtime_nsec = d->m.mtime_nsec;
    n->xattrs = d->m.xattrs;
    n->nxattrs = d->m.nxattrs;
    d->m.xattrs = NULL;
    d->m.nxattrs = 0;
    if (d->m.type == FS_SYMLINK) {
        n->link = d->m.link;
        d->m.link = NULL;
        n->size = strlen(n->link);
    } else if (d->m.type == FS_REG) {
        n->size = d->m.size;
        const char *unreadable = json_string_value(json_object_get(d->ent, "error"));
        if (unreadable) {
            n->unreadable = xstrdup(unreadable);
            return 0;
        }
        n->offs = NULL;
        if (chunklist_decode(json_object_get(d->ent, "chunks"), &n->ids, &n->lens, &n->nchunks) !=
                0 ||
            !(n->offs = xcalloc(n->nchunks ? n->nchunks : 1, sizeof(uint64_t))) ||
            manifest_chunk_offsets(d->ent, n->lens, n->nchunks, n->size, n->offs) != 0)
            return err_set(e, ERR_DAMAGE, NULL, "backup %s: %s: malformed manifest entry (chunks)",
                           bd->b->id, str_escape(d->full, d->full_len, esc, sizeof(esc)));
        for (size_t k = 0; k < n->nchunks; k++)
            n->blocks += ((uint64_t)n->lens[k] + 511) / 512;
    }
    return 0;
}

/* A database backup's streams as files (their chunks follow each other: no holes). */
static int load_streams(struct builder *bd, const char *snap, struct err *e)
{
    json_t *summary = NULL, *entries = NULL;
    if (repo_snapshot_load(bd->m->r, snap, &summary, &entries, e) != 0)
        return -1;
    size_t i;
    json_t *ent;
    int rc = 0;
    json_array_foreach(entries, i, ent)
    {
        const char *name = json_string_value(json_object_get(ent, "name"));
        json_t *size = json_object_get(ent, "size");
        if (!name || !*name || strchr(name, '/') || strcmp(name, ".") == 0 ||
            strcmp(name, "..") == 0 || !json_is_integer(size) || json_integer_value(size) < 0) {
            rc =
                err_set(e, ERR_DAMAGE, NULL, "backup %s: malformed stream entry %zu", bd->b->id, i);
            break;
        }
        if (child_find(bd->top, name))
            continue;
        struct mnode *n = builder_add(bd, node_new(bd->m, S_IFREG | 0400));
        n->real = true;
        n->mtime_sec = bd->time_sec;
        n->size = (uint64_t)json_integer_value(size);
        uint64_t off = 0;
        if (chunklist_decode(json_object_get(ent, "chunks"), &n->ids, &n->lens, &n->nchunks) != 0) {
            rc = err_set(e, ERR_DAMAGE, NULL, "backup %s: stream %s: malformed chunk list",
                         bd->b->id, name);
            break;
        }
        n->offs = xcalloc(n->nchunks ? n->nchunks : 1, sizeof(uint64_t));
        for (size_t k = 0; k < n->nchunks; k++) {
            n->offs[k] = off;
            off += n->lens[k];
        }
        n->blocks = (off + 511) / 512;
        child_add(bd->top, name, strlen(name), n);
        /* keep the children sorted for child_find: streams are few */
        qsort(bd->top->children, bd->top->nchildren, sizeof(struct mchild), child_cmp);
        if (off != n->size) {
            rc = err_set(e, ERR_DAMAGE, NULL,
                         "backup %s: stream %s: its chunks hold %llu bytes, the manifest says %llu",
                         bd->b->id, name, (unsigned long long)off, (unsigned long long)n->size);
            break;
        }
    }
    json_decref(summary);
    json_decref(entries);
    return rc;
}

/* A physical backup (the cluster's data directory) is not shown: an incremental's blocks are
 * page deltas the mount cannot rebuild, and PostgreSQL reads a data directory only restored.
 * Its directory holds one file saying so and what to use instead, and the log says it once
 * (at the first look inside): an intact backup is never shown as an error (EIO). */
#define PHYSICAL_NOTE_NAME "NOT-SHOWN-physical-backup.txt"
static void load_physical_note(struct builder *bd)
{
    const char *id = bd->b->id;
    size_t need = 2 * strlen(id) + 600;
    char *t = xmalloc(need);
    snprintf(t, need,
             "%s is a physical backup: a copy of a PostgreSQL cluster's data directory.\n"
             "mount does not show its files (they are of use only restored, and an incremental\n"
             "backup holds page deltas). The backup is not damaged by that. To see what it holds\n"
             "and to restore it:\n"
             "\n"
             "  caris-backup ls %s\n"
             "  caris-backup restore database --physical --pgdata DIR %s\n",
             id, id, id);
    struct mnode *n = builder_add(bd, node_new(bd->m, S_IFREG | 0444));
    n->real = true;
    n->mtime_sec = bd->time_sec;
    n->text = t;
    n->size = strlen(t);
    n->blocks = (n->size + 511) / 512;
    child_add(bd->top, PHYSICAL_NOTE_NAME, strlen(PHYSICAL_NOTE_NAME), n);
    caris_op_log(bd->m->op, LOG_WARN,
                 "backup %s is a physical backup: its files are not shown (its directory holds "
                 "%s; use `caris-backup ls` or `restore database --physical`)",
                 id, PHYSICAL_NOTE_NAME);
}

/* A root becomes directories of the mount: no empty, "." or ".." component. */
static bool root_ok(const char *root)
{
    const char *p = root + 1; /* after the leading '/' (inspect_load checked it) */
    if (!*p)
        return true; /* "/" */
    for (;;) {
        const char *c = p;
        while (*p && *p != '/')
            p++;
        size_t n = (size_t)(p - c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return *p == '\0' && n == 0 && p > root + 1; /* only a trailing '/' is fine */
        if (!*p)
            return true;
        p++;
    }
}

/* The directories above each root as the backup recorded them ("root_ancestors": modes and
 * owners, from "/" down; backups before 2026-12-07 have none, and theirs stay the mounting
 * user's alone, 0500), so that the kernel checks a path as it would on the source. */
static void load_ancestors(struct builder *bd, struct loaded *l)
{
    json_t *all = json_object_get(l->summary, "root_ancestors");
    for (int i = 0; i < l->nroots && json_is_array(all); i++) {
        json_t *chain = json_array_get(all, (size_t)i);
        const char *p = l->roots[i];
        size_t len = strlen(p), level = 0;
        for (size_t k = 0; k < len && len > 1; k++) {
            if (p[k] != '/')
                continue;
            json_t *a = json_array_get(chain, level++);
            struct mnode *n = builder_path(bd, p, k ? k : 1);
            if (!json_is_array(a) || json_array_size(a) != 3 || n->real || n == bd->top ||
                !json_is_integer(json_array_get(a, 0)) || !json_is_integer(json_array_get(a, 1)) ||
                !json_is_integer(json_array_get(a, 2)))
                continue;
            json_int_t mode = json_integer_value(json_array_get(a, 0));
            json_int_t uid = json_integer_value(json_array_get(a, 1));
            json_int_t gid = json_integer_value(json_array_get(a, 2));
            if (mode < 0 || mode > 07777 || uid < 0 || uid > UINT32_MAX || gid < 0 ||
                gid > UINT32_MAX)
                continue;
            n->mode = S_IFDIR | (uint32_t)mode;
            n->uid = (uint32_t)uid;
            n->gid = (uint32_t)gid;
        }
    }
}

static int load_files(struct builder *bd, struct loaded *l, struct err *e)
{
    for (int i = 0; i < l->nroots; i++)
        if (!root_ok(l->roots[i])) {
            char esc[300];
            return err_set(e, ERR_DAMAGE, NULL, "backup %s: malformed root %s", bd->b->id,
                           str_escape(l->roots[i], strlen(l->roots[i]), esc, sizeof(esc)));
        }
    load_ancestors(bd, l);
    struct entry_iter it;
    entry_iter_init(&it, &l->text);
    struct dentry d;
    int more;
    while ((more = inspect_next_entry(l, &it, &d, e)) == 1) {
        int rc = builder_entry(bd, &d, e);
        inspect_dentry_clear(&d);
        if (rc != 0)
            return -1;
    }
    return more;
}

/* Sorts every directory of the backup and counts directory links. */
static void backup_finish(struct mnode *top, struct mbackup *b)
{
    for (size_t i = 0; i <= b->nnodes; i++) {
        struct mnode *n = i < b->nnodes ? b->nodes[i] : top;
        if ((n->mode & S_IFMT) != S_IFDIR)
            continue;
        if (n->nchildren)
            qsort(n->children, n->nchildren, sizeof(struct mchild), child_cmp);
        n->nlink = 2;
        for (size_t k = 0; k < n->nchildren; k++)
            if ((n->children[k].node->mode & S_IFMT) == S_IFDIR)
                n->nlink++;
    }
}

/* Loads the backup behind top on the first look inside; 0, or -EIO (logged once). */
static int backup_ensure(struct mountfs *m, struct mnode *top)
{
    struct mbackup *b = top->backup;
    if (!b || b->loaded)
        return 0;
    if (b->failed)
        return -EIO;
    struct err e = ERR_INIT;
    struct loaded l;
    struct builder bd = {.m = m, .b = b, .top = top, .time_sec = top->mtime_sec};
    int rc = inspect_load(m->r, b->id, NULL, &l, &e);
    if (rc == 0) {
        const char *method = json_string_value(json_object_get(l.summary, "method"));
        if (!l.files && method && strcmp(method, "physical") == 0)
            load_physical_note(&bd);
        else
            rc = l.files ? load_files(&bd, &l, &e) : load_streams(&bd, l.name, &e);
        inspect_loaded_free(&l);
    }
    pathmap_free(&bd.pm);
    if (rc != 0) {
        caris_op_log(m->op, LOG_ERROR, "cannot show backup %s: %s%s%s", b->id, e.msg,
                     e.hint[0] ? "; " : "", e.hint);
        for (size_t i = 0; i < b->nnodes; i++)
            node_free(b->nodes[i]);
        free(b->nodes);
        b->nodes = NULL;
        b->nnodes = 0;
        for (size_t i = 0; i < top->nchildren; i++)
            free(top->children[i].name);
        free(top->children);
        top->children = NULL;
        top->nchildren = top->cap = 0;
        b->failed = true;
        return -EIO;
    }
    backup_finish(top, b);
    b->loaded = true;
    m->st.backups_loaded++;
    return 0;
}

/* ---- requests ------------------------------------------------------------------------ */

static void node_stat(struct mountfs *m, struct mnode *n, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = n == &m->root ? 1 : n->ino;
    st->st_mode = n->mode;
    if (m->no_kernel_acl && !S_ISLNK(n->mode))
        for (size_t i = 0; i < n->nxattrs; i++)
            if (strcmp(n->xattrs[i].name, "system.posix_acl_access") == 0) {
                /* the kernel would check the mode bits only, and with an ACL they say too
                 * much: the owner alone keeps access */
                st->st_mode &= ~(mode_t)077;
                break;
            }
    st->st_nlink = n->nlink;
    st->st_uid = n->uid;
    st->st_gid = n->gid;
    st->st_size = (off_t)n->size;
    st->st_blocks = (blkcnt_t)n->blocks;
    st->st_blksize = 4096;
    st->st_mtim.tv_sec = n->mtime_sec;
    st->st_mtim.tv_nsec = n->mtime_nsec;
    st->st_atim = st->st_ctim = st->st_mtim;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct mountfs *m = fuse_req_userdata(req);
    struct mnode *dir = node_of(m, parent);
    if ((dir->mode & S_IFMT) != S_IFDIR) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    int rc = backup_ensure(m, dir);
    if (rc != 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    struct mnode *n = child_find(dir, name);
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct fuse_entry_param ep;
    memset(&ep, 0, sizeof(ep));
    ep.ino = ino_of(m, n);
    ep.attr_timeout = MOUNT_TIMEOUT_S;
    ep.entry_timeout = MOUNT_TIMEOUT_S;
    node_stat(m, n, &ep.attr);
    fuse_reply_entry(req, &ep);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct mountfs *m = fuse_req_userdata(req);
    struct stat st;
    node_stat(m, node_of(m, ino), &st);
    fuse_reply_attr(req, &st, MOUNT_TIMEOUT_S);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct mountfs *m = fuse_req_userdata(req);
    struct mnode *n = node_of(m, ino);
    if (!n->link)
        fuse_reply_err(req, EINVAL);
    else
        fuse_reply_readlink(req, n->link);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct mountfs *m = fuse_req_userdata(req);
    struct mnode *n = node_of(m, ino);
    if ((n->mode & S_IFMT) != S_IFDIR) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    int rc = backup_ensure(m, n);
    if (rc != 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    fi->keep_cache = 1;
    fi->cache_readdir = 1;
    fuse_reply_open(req, fi);
}

/* Offsets: 0 ".", 1 "..", 2 + k the k-th child. */
static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    struct mountfs *m = fuse_req_userdata(req);
    struct mnode *n = node_of(m, ino);
    char *out = xmalloc(size ? size : 1);
    size_t used = 0;
    for (uint64_t k = off < 0 ? 0 : (uint64_t)off; k < 2 + (uint64_t)n->nchildren; k++) {
        struct mnode *c = k == 0   ? n
                          : k == 1 ? (n->parent ? n->parent : n)
                                   : n->children[k - 2].node;
        const char *name = k == 0 ? "." : k == 1 ? ".." : n->children[k - 2].name;
        struct stat st;
        memset(&st, 0, sizeof(st));
        st.st_ino = c == &m->root ? 1 : c->ino;
        st.st_mode = c->mode;
        size_t need = fuse_add_direntry(req, out + used, size - used, name, &st, (off_t)(k + 1));
        if (need > size - used)
            break;
        used += need;
    }
    fuse_reply_buf(req, out, used);
    free(out);
}

/* An open file: the chunks being loaded ahead of a reader that reads in order, on the pool,
 * taken (into the cache) by the requests' thread. */
struct ofile {
    struct fetchq *q;
    size_t next;                    /* the chunk after the last one asked for (or read) */
    size_t last;                    /* the last chunk read + 1 (0: none yet) */
    uint64_t bytes;                 /* asked for and not taken yet */
    struct ofile *prev, *next_open; /* the open files (freed at the unmount if still open) */
};

static void ahead_drop(struct mountfs *m, struct ofile *of)
{
    fetchq_free(of->q); /* waits for the loads in flight */
    of->q = NULL;
    m->ahead_bytes -= of->bytes;
    of->bytes = 0;
}

static void ofile_free(struct mountfs *m, struct ofile *of)
{
    if (!of)
        return;
    ahead_drop(m, of);
    if (of->prev)
        of->prev->next_open = of->next_open;
    else
        m->files = of->next_open;
    if (of->next_open)
        of->next_open->prev = of->prev;
    free(of);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct mountfs *m = fuse_req_userdata(req);
    struct mnode *n = node_of(m, ino);
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if ((n->mode & S_IFMT) != S_IFREG) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if (n->unreadable) {
        char p[600];
        node_path(n, p, sizeof(p));
        caris_op_log(m->op, LOG_WARN, "%s has no content: it could not be read at backup time (%s)",
                     p, n->unreadable);
        fuse_reply_err(req, EIO);
        return;
    }
    fi->keep_cache = 1; /* the content never changes */
    struct ofile *of = xcalloc(1, sizeof(*of));
    of->next_open = m->files;
    if (m->files)
        m->files->prev = of;
    m->files = of;
    fi->fh = (uint64_t)(uintptr_t)of;
    if (fuse_reply_open(req, fi) != 0) /* the open was interrupted: no release follows */
        ofile_free(m, of);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    ofile_free(fuse_req_userdata(req), (struct ofile *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

/* Has the damaged chunk been logged already? Remembers it (up to MOUNT_BAD_MAX) when not. */
static bool bad_seen(struct mountfs *m, const uint8_t id[32])
{
    for (size_t i = 0; i < m->nbad; i++)
        if (memcmp(m->bad[i], id, 32) == 0)
            return true;
    if (m->nbad < MOUNT_BAD_MAX) {
        m->bad = xrealloc(m->bad, xsize(m->nbad + 1, 32, 0));
        memcpy(m->bad[m->nbad++], id, 32);
    }
    return false;
}

/* Takes every chunk loaded ahead, up to chunk k, into the cache (waiting for those not loaded
 * yet). A chunk that failed is left out: its synchronous load says why. */
static void ahead_take(struct mountfs *m, struct mnode *n, struct ofile *of, size_t k)
{
    struct buf data = {0};
    while (of && of->q && !fetchq_empty(of->q)) {
        void *tag;
        struct err e = ERR_INIT;
        int rc = fetchq_next(of->q, &tag, &data, &e);
        size_t j = (size_t)(uintptr_t)tag - 1;
        of->bytes -= n->lens[j];
        m->ahead_bytes -= n->lens[j];
        if (rc == 0 && !chunkcache_get(&m->cache, n->ids[j])) {
            m->st.chunks_loaded++;
            chunkcache_put(&m->cache, n->ids[j], &data);
        }
        if (j >= k)
            break;
    }
    buf_free(&data);
}

/* After a read that ended in chunk last: asks for the chunks after it that are not cached,
 * within the window. Only a reader going forward gets readahead. */
static void ahead_submit(struct mountfs *m, struct mnode *n, struct ofile *of, size_t first,
                         size_t last)
{
    if (!of || !m->pool)
        return;
    /* in order: from the start, or from the chunk where the last read ended (or the next) */
    bool in_order = of->last == 0 ? first == 0 : first + 1 == of->last || first == of->last;
    of->last = last + 1;
    if (!in_order) { /* a jump: what was asked for is of no use */
        ahead_drop(m, of);
        of->next = last + 1;
        return;
    }
    if (of->next < last + 1)
        of->next = last + 1;
    if (!of->q)
        of->q = fetchq_new(m->r, m->pool, 0, MOUNT_AHEAD_CHUNKS, MOUNT_AHEAD_BYTES);
    while (of->next < n->nchunks && of->next <= last + MOUNT_AHEAD_CHUNKS &&
           fetchq_room(of->q, n->lens[of->next]) &&
           m->ahead_bytes + n->lens[of->next] <= MOUNT_AHEAD_TOTAL) {
        size_t j = of->next++;
        if (n->lens[j] && !chunkcache_get(&m->cache, n->ids[j])) {
            fetchq_submit(of->q, n->ids[j], n->lens[j], (void *)(uintptr_t)(j + 1));
            of->bytes += n->lens[j];
            m->ahead_bytes += n->lens[j];
        }
    }
}

/* The plaintext of chunk k of n: from the cache, from what was loaded ahead, or loaded now
 * (authenticated, id recomputed). NULL when it cannot be read (logged). */
static const struct buf *chunk_get(struct mountfs *m, struct mnode *n, struct ofile *of, size_t k)
{
    const struct buf *x = chunkcache_get(&m->cache, n->ids[k]);
    if (x) {
        m->st.chunks_cached++;
        return x;
    }
    ahead_take(m, n, of, k);
    if ((x = chunkcache_get(&m->cache, n->ids[k]))) {
        m->st.chunks_cached++;
        return x;
    }
    struct buf data = {0};
    struct err e = ERR_INIT;
    if (repo_blob_load(m->r, n->ids[k], &data, &e) != 0 ||
        (data.len != n->lens[k] &&
         err_set(&e, ERR_DAMAGE, NULL, "chunk %zu has %zu bytes, the manifest says %u", k, data.len,
                 n->lens[k]))) {
        buf_free(&data);
        /* the kernel retries a failed read (readahead, then the read itself): one line per
         * damaged chunk; other failures (I/O) every time */
        if (e.code != ERR_DAMAGE || !bad_seen(m, n->ids[k])) {
            char p[600];
            node_path(n, p, sizeof(p));
            caris_op_log(m->op, LOG_ERROR, "%s: %s", p, e.msg);
        }
        return NULL;
    }
    m->st.chunks_loaded++;
    return chunkcache_put(&m->cache, n->ids[k], &data);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct ofile *of = (struct ofile *)(uintptr_t)fi->fh;
    struct mountfs *m = fuse_req_userdata(req);
    struct mnode *n = node_of(m, ino);
    m->st.reads++;
    uint64_t start = off < 0 ? 0 : (uint64_t)off;
    if (start >= n->size || size == 0) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    uint64_t end = n->size - start < size ? n->size : start + size;
    size_t len = (size_t)(end - start);
    uint8_t *out = xcalloc(len, 1); /* holes read as zeros */
    if (n->text) {
        memcpy(out, n->text + start, len);
        m->st.bytes_read += len;
        fuse_reply_buf(req, (const char *)out, len);
        free(out);
        return;
    }
    /* the first chunk that ends after start (chunks are in offset order) */
    size_t lo = 0, hi = n->nchunks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (n->offs[mid] + n->lens[mid] <= start)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = lo; k < n->nchunks && n->offs[k] < end; k++) {
        if (n->lens[k] == 0)
            continue;
        const struct buf *x = chunk_get(m, n, of, k);
        if (!x) {
            free(out);
            m->st.read_errors++;
            fuse_reply_err(req, EIO);
            return;
        }
        uint64_t a = n->offs[k] > start ? n->offs[k] : start;
        uint64_t b = n->offs[k] + n->lens[k] < end ? n->offs[k] + n->lens[k] : end;
        if (b <= a) /* cannot happen: manifest_chunk_offsets gives ordered, disjoint chunks */
            continue;
        memcpy(out + (a - start), x->data + (a - n->offs[k]), (size_t)(b - a));
    }
    m->st.bytes_read += len;
    fuse_reply_buf(req, (const char *)out, len);
    free(out);
    size_t last = lo;
    while (last + 1 < n->nchunks && n->offs[last + 1] < end)
        last++;
    if (lo < n->nchunks)
        ahead_submit(m, n, of, lo, last);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct mountfs *m = fuse_req_userdata(req);
    struct mnode *n = node_of(m, ino);
    for (size_t i = 0; i < n->nxattrs; i++) {
        if (strcmp(n->xattrs[i].name, name) != 0)
            continue;
        if (size == 0)
            fuse_reply_xattr(req, n->xattrs[i].len);
        else if (size < n->xattrs[i].len)
            fuse_reply_err(req, ERANGE);
        else
            fuse_reply_buf(req, (const char *)n->xattrs[i].value, n->xattrs[i].len);
        return;
    }
    fuse_reply_err(req, ENODATA);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct mountfs *m = fuse_req_userdata(req);
    struct mnode *n = node_of(m, ino);
    struct buf b = {0};
    for (size_t i = 0; i < n->nxattrs; i++)
        buf_append(&b, n->xattrs[i].name, strlen(n->xattrs[i].name) + 1);
    if (size == 0)
        fuse_reply_xattr(req, b.len);
    else if (size < b.len)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, (const char *)b.data, b.len);
    buf_free(&b);
}

/* The kernel checks permissions itself (default_permissions). Without FUSE_CAP_POSIX_ACL it
 * looks at the mode bits only, and a file's group bits are its ACL's mask when it has an ACL:
 * a named user or group the ACL leaves out, or the owning group with "group::---", would read
 * what they could not read on the source. With it, the kernel asks getxattr for
 * system.posix_acl_access (the backed-up ACL) and applies it. */
static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct mountfs *m = userdata;
    if (conn->capable & FUSE_CAP_POSIX_ACL)
        conn->want |= FUSE_CAP_POSIX_ACL;
    else
        m->no_kernel_acl = true;
}

static const struct fuse_lowlevel_ops mount_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .readlink = op_readlink,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
};

/* ---- mounting ------------------------------------------------------------------------ */

/* libfuse's messages (it prints them on stderr otherwise): the last one names why a mount
 * failed. One mount per process at a time. */
static char fuse_last_msg[512];

static void fuse_log_capture(enum fuse_log_level level, const char *fmt, va_list ap)
{
    (void)level;
    vsnprintf(fuse_last_msg, sizeof(fuse_last_msg), fmt, ap);
    size_t n = strlen(fuse_last_msg);
    while (n && (fuse_last_msg[n - 1] == '\n' || fuse_last_msg[n - 1] == '\r'))
        fuse_last_msg[--n] = '\0';
}

static const char *dir_hint(int err)
{
    return err == ENOENT     ? "create it first (mkdir)"
           : err == ENOTCONN ? "an earlier mount is left there, its process killed: unmount it "
                               "(fusermount3 -u DIR, or umount DIR), then mount again"
                             : NULL;
}

static int check_dir(const char *dir, struct err *e)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        return err_sys(e, errno, dir_hint(errno), "mount point %s", dir);
    if (!S_ISDIR(st.st_mode))
        return err_set(e, ERR_USAGE, "give an empty directory", "mount point %s is not a directory",
                       dir);
    DIR *d = opendir(dir);
    if (!d)
        return err_sys(e, errno, dir_hint(errno), "mount point %s", dir);
    struct dirent *de;
    bool empty = true;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            empty = false;
            break;
        }
    closedir(d);
    if (!empty)
        return err_set(e, ERR_USAGE, "give an empty directory (its files would be hidden)",
                       "mount point %s is not empty", dir);
    if (access("/dev/fuse", R_OK | W_OK) != 0) {
        if (errno == ENOENT)
            return err_set(e, ERR_CONFIG,
                           "load the fuse kernel module (modprobe fuse); in a container, pass the "
                           "device (docker run --device /dev/fuse --cap-add SYS_ADMIN). Without "
                           "FUSE, use `ls`, `dump` and `restore files --include`",
                           "cannot mount: /dev/fuse is missing (FUSE is not available here)");
        if (geteuid() == 0 || errno != EACCES)
            return err_sys(e, errno, NULL, "cannot mount: /dev/fuse");
        /* not root: fusermount3 (setuid) opens it */
    }
    return 0;
}

/* The backups' directories and `latest`, sorted. */
static int build_top(struct mountfs *m, struct err *e)
{
    json_t *damaged = NULL;
    json_t *list = repo_snapshot_list(m->r, &damaged, e);
    if (!list)
        return -1;
    size_t i;
    json_t *s;
    json_array_foreach(damaged, i, s)
    {
        caris_op_log(m->op, LOG_WARN, "damaged snapshot file %s left out: %s",
                     json_string_value(json_object_get(s, "object")) ?: "?",
                     json_string_value(json_object_get(s, "error")) ?: "?");
    }
    m->backups = xcalloc(json_array_size(list) + 1, sizeof(*m->backups));
    m->top = xcalloc(json_array_size(list) + 1, sizeof(*m->top));
    const char *latest = NULL;
    int64_t newest = 0;
    json_array_foreach(list, i, s)
    {
        const char *id = json_string_value(json_object_get(s, "id"));
        bool files = inspect_kind_is(s, "files");
        if (!id || !*id || strchr(id, '/') || strlen(id) >= CARIS_ID_MAX ||
            strcmp(id, "latest") == 0 || strcmp(id, ".") == 0 || strcmp(id, "..") == 0 ||
            child_find(&m->root, id)) {
            caris_op_log(m->op, LOG_WARN, "a backup with a malformed id is left out");
            continue;
        }
        if (!files && !inspect_kind_is(s, "database"))
            continue;
        struct mbackup *b = &m->backups[m->nbackups++];
        snprintf(b->id, sizeof(b->id), "%s", id);
        b->files = files;
        struct mnode *n = node_new(m, S_IFDIR | 0555);
        n->backup = b;
        n->nlink = 2;
        int64_t ns = 0;
        const char *started = json_string_value(json_object_get(s, "started"));
        if (started && time_parse_iso(started, &ns) == 0) {
            n->mtime_sec = ns / 1000000000 - (ns % 1000000000 < 0);
            n->mtime_nsec = ns - n->mtime_sec * 1000000000;
        }
        m->top[m->ntop++] = n;
        child_add(&m->root, id, strlen(id), n);
        qsort(m->root.children, m->root.nchildren, sizeof(struct mchild), child_cmp);
        if (files) { /* the list is oldest first */
            latest = b->id;
            newest = ns;
        }
    }
    json_decref(list);
    /* as `latest` elsewhere: a newer file backup that cannot be read (or a damaged snapshot of
     * no known id, which may be one) leaves no `latest`, not one at an older backup */
    json_t *d = inspect_damaged_newer(damaged, "files", latest ? latest : "");
    if (d) {
        const char *did = json_string_value(json_object_get(d, "id"));
        caris_op_log(m->op, LOG_WARN,
                     "no `latest` link: %s%s%s cannot be read (its snapshot file %s is damaged), "
                     "so the newest backup that can be read may not be the newest made; open a "
                     "backup by its id, and see `caris-backup check`",
                     did ? "backup " : "a snapshot", did ? did : "",
                     did ? "" : " that may be newer",
                     json_string_value(json_object_get(d, "object")) ?: "?");
        latest = NULL;
    }
    json_decref(damaged);
    if (latest && caris_backup_time_future(newest, time_now_ns())) {
        /* as `latest` elsewhere: the newest by time is then not the newest made */
        char text[300];
        caris_backup_future_text(latest, newest, time_now_ns(), text, sizeof(text));
        caris_op_log(m->op, LOG_WARN, "%s: no `latest` link (check the clock)", text);
        latest = NULL;
    }
    if (latest) {
        struct mnode *n = node_new(m, S_IFLNK | 0777);
        n->link = xstrdup(latest);
        n->size = strlen(latest);
        n->mtime_sec = newest / 1000000000;
        m->top[m->ntop++] = n;
        child_add(&m->root, "latest", 6, n);
    }
    backup_finish(&m->root, &(struct mbackup){.nodes = m->top, .nnodes = m->ntop});
    m->root.mtime_sec = newest / 1000000000;
    return 0;
}

static void mountfs_free(struct mountfs *m)
{
    for (size_t i = 0; i < m->ntop; i++) {
        struct mbackup *b = m->top[i]->backup;
        if (b) {
            for (size_t k = 0; k < b->nnodes; k++)
                node_free(b->nodes[k]);
            free(b->nodes);
        }
        node_free(m->top[i]);
    }
    free(m->top);
    free(m->backups);
    for (size_t i = 0; i < m->root.nchildren; i++)
        free(m->root.children[i].name);
    free(m->root.children);
    while (m->files) /* still open at the unmount: no release comes for them */
        ofile_free(m, m->files);
    pool_free(m->pool);
    chunkcache_free(&m->cache);
    free(m->bad);
}

/* mountinfo's escapes (\040 for a space, \011, \012, \134) undone in place. */
static void mountinfo_unescape(char *s)
{
    char *o = s;
    for (const char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
            p[3] >= '0' && p[3] <= '7') {
            *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

/* A mount in /proc/self/mountinfo: its ID (first field) and device (major:minor, third). Both
 * are reused lowest-free once the mount is gone, so a mount is known by the two together. */
#define MOUNTENT_DEV 24
struct mountent {
    long id;
    char dev[MOUNTENT_DEV];
};

/* Finds in /proc/self/mountinfo, when want is NULL, the newest mount at dir (an absolute path
 * without symbolic links): a caris FUSE mount when caris, any otherwise; when want is not NULL,
 * the caris mount of want's ID and device. 1 when found (*out filled, when not NULL), 0 when
 * there is none, -1 when mountinfo cannot be read (EMFILE, ENOMEM: nothing is known then). */
static int mountinfo_find(const char *dir, bool caris, const struct mountent *want,
                          struct mountent *out)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    int found = 0, lines = 0;
    errno = 0;
    while (getline(&line, &cap, f) > 0) {
        lines++;
        /* id parent major:minor root mountpoint options [optional...] - fstype source ... */
        char *end;
        long id = strtol(line, &end, 10);
        if (end == line || *end != ' ')
            continue;
        if (want && id != want->id)
            continue;
        char *devp = strchr(end + 1, ' ');
        char *deve = devp ? strchr(devp + 1, ' ') : NULL;
        char *point = deve ? strchr(deve + 1, ' ') : NULL;
        if (!point)
            continue;
        point++;
        char *pe = strchr(point, ' ');
        const char *dash = pe ? strstr(pe, " - ") : NULL;
        if (!pe || !dash || ((caris || want) && strncmp(dash + 3, "fuse.caris ", 11) != 0))
            continue;
        devp++;
        size_t dlen = (size_t)(deve - devp);
        if (dlen >= MOUNTENT_DEV)
            continue;
        if (want) {
            if (strlen(want->dev) == dlen && memcmp(want->dev, devp, dlen) == 0) {
                found = 1;
                break;
            }
            continue;
        }
        *pe = '\0';
        mountinfo_unescape(point);
        if (strcmp(point, dir) == 0) {
            found = 1; /* the last one listed is the newest (on top) */
            if (out) {
                out->id = id;
                memcpy(out->dev, devp, dlen);
                out->dev[dlen] = '\0';
            }
        }
    }
    int err = errno;
    /* (a read that stops short of the end failed: ENOMEM; a namespace always has its root) */
    bool bad = ferror(f) || !feof(f) || lines == 0;
    free(line);
    fclose(f);
    errno = err;
    return bad && !found ? -1 : found;
}

/* Serves requests until cancelled or unmounted from outside. dir: the mount point; abs: its
 * absolute path without symbolic links (found before the mount: the path's last component is
 * this file system's root now, served by this thread), or NULL.
 *
 * Unmounted from outside (umount, fusermount3 -u), the kernel ends the FUSE connection only
 * once no mount namespace holds the file system: a namespace made while it was mounted
 * (unshare -m, a systemd service's PrivateTmp=) has a copy of it, and the connection would
 * live on until that namespace ends, and this process with it (a test saw ten minutes). So
 * the mount table is watched too (poll on /proc/self/mountinfo wakes at every change): once
 * this namespace's mount is gone, serving ends, and closing the connection leaves the copies
 * elsewhere "not connected". *gone: 1 when it was so, 2 when something else is mounted at dir
 * since, or the table cannot be read then (not this mount, or not known to be: the caller must
 * not unmount dir). A table that cannot be read does not end a mount: it is read again at the
 * next wake (MOUNT_POLL_MS at most). */
static int serve(struct mountfs *m, struct fuse_session *se, const char *dir, const char *abs,
                 int *gone, struct err *e)
{
    struct fuse_buf fbuf;
    memset(&fbuf, 0, sizeof(fbuf));
    int rc = 0;
    int64_t next_lock_check = time_mono_ns() + MOUNT_LOCK_CHECK_NS;
    bool lock_warned = false;
    struct mountent me;
    int mfd = abs ? open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC) : -1;
    if (mfd >= 0 && mountinfo_find(abs, true, NULL, &me) != 1) {
        close(mfd); /* not found: the connection's end is what tells */
        mfd = -1;
    }
    bool recheck = false; /* a look at mountinfo failed: look again at the next wake */
    bool read_warned = false;
    while (!fuse_session_exited(se) && !caris_op_cancelled(m->op)) {
        struct pollfd pf[2] = {{.fd = fuse_session_fd(se), .events = POLLIN},
                               {.fd = mfd, .events = POLLPRI}};
        struct pollfd *pp = &pf[0];
        int n = poll(pf, mfd >= 0 ? 2 : 1, MOUNT_POLL_MS);
        /* (the poll itself clears the change it reports: nothing need be read from mfd) */
        if (mfd >= 0 && (recheck || (n > 0 && (pf[1].revents & (POLLPRI | POLLERR))))) {
            int there = mountinfo_find(NULL, true, &me, NULL);
            recheck = there < 0;
            if (recheck && !read_warned) {
                caris_op_log(m->op, LOG_WARN,
                             "cannot read /proc/self/mountinfo (%s): an unmount of %s from "
                             "outside may go unseen while it cannot be read",
                             strerror(errno ? errno : EIO), dir);
                read_warned = true;
            }
            if (there == 0) {
                caris_op_log(m->op, LOG_INFO, "%s was unmounted from outside", dir);
                /* something else mounted there since, or unknown: not this mount's to
                 * unmount */
                *gone = mountinfo_find(abs, false, NULL, NULL) == 0 ? 1 : 2;
                break;
            }
        }
        if (!lock_warned && time_mono_ns() >= next_lock_check) {
            struct err le = ERR_INIT;
            if (repo_lock_check(m->r, &le) != 0) {
                caris_op_log(m->op, LOG_WARN,
                             "%s: a prune may remove data this mount shows (reads of it then fail)",
                             le.msg);
                lock_warned = true;
            }
            next_lock_check = time_mono_ns() + MOUNT_LOCK_CHECK_NS;
        }
        if (n < 0 && errno != EINTR) {
            rc = err_sys(e, errno, NULL, "mount %s: poll", "/dev/fuse");
            break;
        }
        if (n <= 0 || !pp->revents)
            continue;
        if (pp->revents & (POLLERR | POLLHUP))
            break; /* unmounted */
        int got = fuse_session_receive_buf(se, &fbuf);
        if (got == -EINTR || got == -EAGAIN)
            continue;
        if (got <= 0) {
            if (got < 0 && got != -ENODEV)
                rc = err_sys(e, -got, NULL, "mount: reading a request from /dev/fuse");
            break; /* 0 or ENODEV: unmounted */
        }
        fuse_session_process_buf(se, &fbuf);
    }
    if (mfd >= 0)
        close(mfd);
    free(fbuf.mem);
    return rc;
}

static int mount_locked(struct repo *r, const struct caris_mount_opts *o,
                        struct caris_mount_stats *st, struct err *e)
{
    struct mountfs m;
    memset(&m, 0, sizeof(m));
    m.r = r;
    m.op = o->op;
    m.next_ino = 1; /* st_ino 1 is the root's */
    m.uid = (uint32_t)getuid();
    m.gid = (uint32_t)getgid();
    m.root.mode = S_IFDIR | 0555;
    m.root.uid = m.uid;
    m.root.gid = m.gid;
    m.root.nlink = 2;
    chunkcache_init(&m.cache, o->cache_bytes ? o->cache_bytes : CARIS_MOUNT_CACHE_DEFAULT);
    m.pool = pool_new(o->threads > 0 ? o->threads : sys_ncpu(), 256);
    if (build_top(&m, e) != 0) {
        mountfs_free(&m);
        return -1;
    }
    char opts[200];
    /* nosuid, nodev: a setuid file or a device node of a backup gives no one any power (a
     * mount by root would honour them otherwise) */
    snprintf(opts, sizeof(opts),
             "ro,nosuid,nodev,default_permissions,fsname=caris-backup,subtype=caris%s",
             o->allow_other ? ",allow_other" : "");
    char *argv[] = {"caris-backup", "-o", opts, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    fuse_last_msg[0] = '\0';
    if (lazylib_load(LAZYLIB_FUSE, e) != 0) {
        mountfs_free(&m);
        return -1;
    }
    fuse_set_log_func(fuse_log_capture);
    int rc = -1;
    char abs[PATH_MAX];
    bool abs_ok = realpath(o->dir, abs) != NULL; /* (before the mount: see serve) */
    struct fuse_session *se = fuse_session_new(&args, &mount_ops, sizeof(mount_ops), &m);
    fuse_opt_free_args(&args);
    if (!se) {
        err_set(e, ERR_FAILURE, NULL, "cannot mount %s: %s", o->dir,
                fuse_last_msg[0] ? fuse_last_msg : "FUSE session not created");
    } else if (fuse_session_mount(se, o->dir) != 0) {
        err_set(e, ERR_IO,
                o->allow_other ? "--allow-other needs root or user_allow_other in /etc/fuse.conf"
                               : "FUSE mounts need root, or fusermount3 (package fuse3)",
                "cannot mount %s: %s", o->dir,
                fuse_last_msg[0] ? fuse_last_msg : "the mount was refused");
    } else {
        if (o->mounted)
            o->mounted(o->ctx, m.nbackups);
        int gone = 0;
        rc = serve(&m, se, o->dir, abs_ok ? abs : NULL, &gone, e);
        if (gone == 1) {
            /* unmounted from outside: fuse_session_unmount closes the connection and frees
             * what the session holds, and its own unmount of dir fails, which libfuse prints
             * on stderr ("failed to unmount"): printed to /dev/null instead (no other thread
             * prints meanwhile: the pool's workers never do). It unmounts dir itself (as root;
             * fusermount3 -u otherwise), found empty microseconds before: a mount made there in
             * that instant would be detached instead (aborting the connection through fusectl
             * first would avoid that, where /sys/fs/fuse/connections is mounted) */
            fflush(stderr);
            int saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0); /* (libfuse may fork) */
            int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
            bool quiet = saved >= 0 && null >= 0 && dup2(null, STDERR_FILENO) >= 0;
            fuse_session_unmount(se);
            if (quiet)
                dup2(saved, STDERR_FILENO);
            if (saved >= 0)
                close(saved);
            if (null >= 0)
                close(null);
        } else if (gone == 0) {
            fuse_session_unmount(se);
        } /* 2: what is mounted at dir now is not this mount (the session's copy of the path
           * is left to the exit) */
    }
    if (se)
        fuse_session_destroy(se);
    fuse_set_log_func(NULL);
    if (st)
        *st = m.st;
    mountfs_free(&m);
    return rc;
}

int caris_mount(struct repo *r, const struct caris_mount_opts *o, struct caris_mount_stats *st,
                struct err *e)
{
    if (st)
        memset(st, 0, sizeof(*st));
    if (!o->dir || !*o->dir)
        return err_set(e, ERR_USAGE, "give an empty directory", "mount needs a mount point");
    if (check_dir(o->dir, e) != 0)
        return -1;
    if (repo_lock(r, false, "mount", e) != 0)
        return -1;
    int rc = mount_locked(r, o, st, e);
    repo_unlock(r);
    return rc;
}

json_t *caris_mount_stats_to_json(const struct caris_mount_stats *st, const char *dir)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "mountPoint", dir, "backupsLoaded",
                     (json_int_t)st->backups_loaded, "reads", (json_int_t)st->reads, "bytesRead",
                     (json_int_t)st->bytes_read, "chunksLoaded", (json_int_t)st->chunks_loaded,
                     "chunksCached", (json_int_t)st->chunks_cached, "readErrors",
                     (json_int_t)st->read_errors);
}

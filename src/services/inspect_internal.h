/* What the inspect services (inspect.c, inspect_dump.c, inspect_diff.c) share: a backup
 * loaded for reading, its entries decoded one at a time with full paths, path matching. */
#ifndef CARIS_INSPECT_INTERNAL_H
#define CARIS_INSPECT_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "caris/core.h"
#include "caris/fsmeta.h"
#include "caris/inspect.h"
#include "caris/repo.h"

/* A backup being read: its summary and, for a file backup, its entries' text and roots. */
struct loaded {
    char id[CARIS_ID_MAX];
    char name[65];
    json_t *summary;
    bool files;
    struct buf text;
    const char **roots; /* borrowed from summary */
    int nroots;
};

/* Resolves id_text and loads the backup (entries only for a file backup). kind: as for
 * caris_backup_resolve; a backup of another kind is then refused (ERR_USAGE). */
int inspect_load(struct repo *r, const char *id_text, const char *kind, struct loaded *l,
                 struct err *e);
void inspect_loaded_free(struct loaded *l);
/* l->roots and l->nroots from l->summary (borrowed from it); ERR_DAMAGE when malformed. */
int inspect_loaded_roots(struct loaded *l, struct err *e);
/* Gives each warning of a file backup's summary its full path: "fullPath" (or "fullPath_b64"
 * when not UTF-8) = its root + '/' + its path below the root (show, list). */
void inspect_warnings_full_paths(json_t *summary);
bool inspect_kind_is(json_t *summary, const char *kind);
/* A damaged snapshot (of damaged, repo_snapshot_list's) that may be a newer backup of kind
 * want (NULL: any) than backup id: known by its id to be one, or of no known id. NULL when
 * there is none. (`latest` is then not the backup that can be read: it is refused.) */
json_t *inspect_damaged_newer(json_t *damaged, const char *want, const char *id);

/* One decoded entry of a file backup. A hard link's m.link is its first name's full path. */
struct dentry {
    json_t *ent; /* owned */
    int root;
    char *rel; /* path below the root */
    size_t rel_len;
    char *full; /* root + '/' + rel (the root itself for ".") */
    size_t full_len;
    struct fs_meta m;
};

/* 1 with *d filled (the caller clears it), 0 at the end, -1 on damage. */
int inspect_next_entry(struct loaded *l, struct entry_iter *it, struct dentry *d, struct err *e);
void inspect_dentry_clear(struct dentry *d);
/* root + "/" + path ("." is the root itself); malloc'd. */
char *inspect_join(const char *root, const char *path, size_t plen, size_t *out_len);
/* The full path a hard link names (its first name): a copy. */
char *inspect_link_full(struct loaded *l, const struct dentry *d, size_t *len);
/* Does the entry match what the operator typed: a full path (leading slashes optional) or a
 * path relative to the entry's root? Trailing slashes are ignored. */
bool inspect_path_matches(const struct dentry *d, const char *q, size_t ql);
/* What the operator typed as paths in file backup l (restore --include), as the full paths
 * they name: an absolute path is kept; a relative one is matched as `ls` matches it
 * (inspect_path_matches), against every root. A path found under two roots is an error
 * listing the candidates (ERR_USAGE); one found nowhere is kept as typed (the caller says it
 * is missing). *out: n malloc'd strings in a malloc'd array (NULL on error). */
int inspect_resolve_paths(struct loaded *l, const char *const *in, size_t n, char ***out,
                          struct err *e);
/* Is full below the anchor a (with direct: one level down only)? */
bool inspect_below(const char *full, size_t fl, const char *a, size_t al, bool direct);

/* A sorted set of paths (hard links: the first names needed later). */
struct pathref {
    char *path;
    size_t len;
    size_t slot; /* the caller's index */
};
int inspect_pathref_cmp(const void *a, const void *b);
/* First index in the sorted refs whose path equals p, or n. */
size_t inspect_pathref_find(const struct pathref *refs, size_t n, const char *p, size_t len);

#endif

/* Storage: the only code that does I/O on a repository. Objects are named by relative
 * paths ("config", "keys/<id>", "data/ab/<sha256>", "index/<sha256>", "snapshots/<sha256>",
 * "locks/<id>"). A backend implements struct storage_ops; the rest of the program cannot
 * tell one backend from another. */
#ifndef CARIS_STORAGE_H
#define CARIS_STORAGE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caris/core.h"
#include "caris/err.h"

struct storage;

typedef int (*storage_list_cb)(void *ctx, const char *name, uint64_t size, struct err *e);

struct storage_ops {
    /* Stores a whole object atomically: after success it is durable (fsynced) and visible
     * under name; after failure or a crash nothing is visible under name. */
    int (*put)(struct storage *s, const char *name, const void *data, size_t len, struct err *e);
    /* Reads len bytes at off. A short object is ERR_DAMAGE. */
    int (*read_at)(struct storage *s, const char *name, uint64_t off, void *out, size_t len,
                   struct err *e);
    int (*size)(struct storage *s, const char *name, uint64_t *size, struct err *e);
    /* Lists objects directly under dir ("data" lists data/xx/ and "records" records/KIND/
     * one level down), with full names
     * relative to the root. Temporary files of interrupted writes are not listed. */
    int (*list)(struct storage *s, const char *dir, storage_list_cb cb, void *ctx, struct err *e);
    int (*remove)(struct storage *s, const char *name, struct err *e);
    /* Creates a small object only if no object of that name exists: 0 created, 1 it
     * existed, -1 error. Used to claim names (backup ids) between concurrent writers. */
    int (*put_new)(struct storage *s, const char *name, const void *data, size_t len,
                   struct err *e);
    /* Optional: replaces a small object only if it exists: 0 replaced (durable), 1 there was
     * none (nothing is created), -1 error. An object removed while it is replaced stays
     * removed. Used to refresh a lock without bringing back one that `unlock --force`
     * removed. NULL: storage_put_existing asks whether it exists, then puts (see there). */
    int (*put_existing)(struct storage *s, const char *name, const void *data, size_t len,
                        struct err *e);
    /* Last modification time of an object (ns since the epoch). */
    int (*mtime)(struct storage *s, const char *name, int64_t *ns, struct err *e);
    /* Lists the temporary files of interrupted writes (names starting with ".tmp-", in any
     * directory), which list never shows, with their full names: the leftovers of a
     * writer that was killed. */
    int (*list_temp)(struct storage *s, storage_list_cb cb, void *ctx, struct err *e);
    void (*close)(struct storage *s);
    /* Optional: read_at in exactly one request, past any read cache of the backend (for a
     * caller that planned its ranges itself). NULL: read_at. */
    int (*read_direct)(struct storage *s, const char *name, uint64_t off, void *out, size_t len,
                       struct err *e);
    /* Optional: storage_get in one request (a backend where asking the size first costs a
     * round trip). NULL: size, then read_at. */
    int (*get)(struct storage *s, const char *name, size_t max, struct buf *out, struct err *e);
    /* Optional, all five or none: an object written piece by piece (storage_obj_*, below)
     * goes to a temporary file below dir (same rules as put's: not listed, removed as a
     * leftover) and is renamed to its name by tmp_commit, which also ends h, success or not.
     * NULL: such objects are kept in memory and put whole. */
    int (*tmp_open)(struct storage *s, const char *dir, void **h, struct err *e);
    int (*tmp_write)(struct storage *s, void *h, const void *p, size_t n, struct err *e);
    int (*tmp_read)(struct storage *s, void *h, uint64_t off, void *out, size_t n, struct err *e);
    int (*tmp_commit)(struct storage *s, void *h, const char *name, struct err *e);
    void (*tmp_discard)(struct storage *s, void *h);
    /* Optional: a hint that len bytes at off of name will be read soon (a local file's
     * pages are read ahead in the background). Never fails; NULL: nothing. */
    void (*prefetch)(struct storage *s, const char *name, uint64_t off, uint64_t len);
    /* Optional: with off, reads go to the storage itself, past any local copy the backend
     * keeps (check: a local copy stays good while the object in the bucket is damaged). */
    void (*local_copies)(struct storage *s, bool use);
    /* Optional: closes the files the backend keeps open for reading that no reader holds (a
     * handle kept open across operations, the daemon's: a pack replaced under its name, or
     * deleted by another process, is seen, and its space freed). NULL: nothing kept. */
    void (*drop_open)(struct storage *s);
};

struct storage_queue;

struct storage {
    const struct storage_ops *ops;
    char *location; /* printable, for messages */
    /* Uploads a storage_batch runs at once on their own threads (src/storage/queue.c);
     * 0: a batch's puts are made by the caller, one after the other (the posix backend). */
    int connections;
    struct storage_queue *queue; /* started by the first batch that needs it */
    /* Names one listing request returns at most (S3: max-keys, 1,000 unless
     * BACKUP_S3_LIST_PAGE says fewer); 0: a listing is not paged (posix). What a full listing
     * of data/ costs, against one lookup per pack (the open cache). */
    unsigned list_page;
};

/* A directory on a local file system. create: make the directory (mode 0700) when missing. */
struct storage *storage_posix_open(const char *root, bool create, struct err *e);
/* Whether the directory s was opened at is no longer what its path names (moved, replaced
 * or removed since: what is written goes where nothing looks). False for S3. */
bool storage_moved(struct storage *s);

/* An S3 bucket (or a prefix in it): location "s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]".
 * Opening checks the endpoint, the credentials, the region and the bucket with one request.
 * Settings come from storage_set_config's source (see src/storage/s3.c and README, "S3"). */
struct storage *storage_s3_open(const char *location, struct err *e);
/* location with the user information of its URL (all before its last '@': "user:secret@"
 * before the host, a secret with a '/' in it too) shown as "xxxxx@", and a query or fragment
 * (a signed URL's signature and token) as "?xxxxx": for messages. New string. */
char *storage_location_redact(const char *location);
bool storage_location_is_s3(const char *location);

/* Where the S3 backend reads its settings and credentials (AWS_ACCESS_KEY_ID, ...): c, which
 * must outlive every S3 storage (environment first, then the env file); NULL, the default:
 * the process environment alone. */
struct config;
void storage_set_config(const struct config *c);
/* A flag (the CLI's Ctrl-C / SIGTERM) that stops the S3 requests in flight when it is set, and
 * their retries: they fail "cancelled". Requests begun after it was set run as usual (a
 * cancelled command still removes its lock and temporary objects). NULL: none. A request in flight
 * was not stopped, and one that a server answered a byte now and then held the process past every
 * signal but SIGKILL. */
void storage_set_cancel(volatile sig_atomic_t *flag);
/* The region S3 requests are signed for, from that source: AWS_REGION, else AWS_DEFAULT_REGION,
 * else BACKUP_S3_REGION, else "us-east-1". */
const char *storage_s3_region(void);

/* Where the S3 backend keeps local copies of index files and snapshots (one directory per
 * location below dir; NULL: none). Copies are checked against their SHA-256 names. */
void storage_set_cache_root(const char *dir);
/* Whether reads may be answered from the backend's local copies (default true). Set while no
 * other thread reads through s. */
void storage_local_copies(struct storage *s, bool use);
/* The same for the calling thread only, on every storage (default true): a verification
 * reads its backup's snapshot from the bucket, while other threads (the daemon's API) go on
 * reading through the same handle. Returns the previous setting. */
bool storage_local_copies_this_thread(bool use);
/* Whether the calling thread may read local copies (for the backends). */
bool storage_thread_copies_allowed(void);

/* A repository location: an S3 URL (above) or a directory. create: a directory is made when
 * missing (a bucket never is). */
struct storage *storage_open(const char *location, bool create, struct err *e);

int storage_put(struct storage *s, const char *name, const void *data, size_t len, struct err *e);
int storage_read_at(struct storage *s, const char *name, uint64_t off, void *out, size_t len,
                    struct err *e);
/* Reads a whole object into out (replacing its contents). max: refuse larger objects. */
int storage_get(struct storage *s, const char *name, size_t max, struct buf *out, struct err *e);
/* storage_read_at in one request of exactly that range, bypassing the backend's read
 * windows (see read_direct): for reads planned by the caller (src/repo/readplan.c). */
int storage_read_direct(struct storage *s, const char *name, uint64_t off, void *out, size_t len,
                        struct err *e);
int storage_size(struct storage *s, const char *name, uint64_t *size, struct err *e);
/* A hint that the range will be read soon (see prefetch): never fails, may do nothing. */
void storage_prefetch(struct storage *s, const char *name, uint64_t off, uint64_t len);
void storage_drop_open(struct storage *s);
int storage_list(struct storage *s, const char *dir, storage_list_cb cb, void *ctx, struct err *e);
int storage_remove(struct storage *s, const char *name, struct err *e);
int storage_put_new(struct storage *s, const char *name, const void *data, size_t len,
                    struct err *e);
/* put_existing (above); a backend without it (S3) asks whether the object exists and then
 * puts it, so an object removed between the two comes back. */
int storage_put_existing(struct storage *s, const char *name, const void *data, size_t len,
                         struct err *e);
int storage_mtime(struct storage *s, const char *name, int64_t *ns, struct err *e);
int storage_list_temp(struct storage *s, storage_list_cb cb, void *ctx, struct err *e);
/* ---- objects written piece by piece ----
 * For an object too large to hold in memory while it is made (a pack: 16 MiB per writer
 * slot). A backend with a temporary file (posix) takes each piece as it comes, so the writer
 * holds only the piece at hand; the others (S3: one PUT) keep the bytes in memory until
 * storage_obj_commit or storage_batch_put_obj puts them whole. Either way nothing is visible
 * under the object's name before the commit returned 0, and a crash leaves at most a
 * temporary file (a leftover, see storage_list_temp). An object is used by one thread. */
struct storage_obj;
/* dir: where the temporary file goes (the final name's directory or a parent of it). */
struct storage_obj *storage_obj_new(struct storage *s, const char *dir, struct err *e);
int storage_obj_append(struct storage_obj *o, const void *p, size_t n, struct err *e);
/* Reads back n bytes at off of what was appended (off + n <= storage_obj_size). */
int storage_obj_read(struct storage_obj *o, uint64_t off, void *out, size_t n, struct err *e);
uint64_t storage_obj_size(const struct storage_obj *o);
/* Stores the object under name, durable and whole (as put), and frees o, success or not. */
int storage_obj_commit(struct storage_obj *o, const char *name, struct err *e);
/* Frees o; its bytes are never visible (the temporary file is removed). NULL: nothing. */
void storage_obj_discard(struct storage_obj *o);

/* ---- queued uploads (src/storage/queue.c) ----
 * A batch is one writer's series of puts (a backup's packs) that may run in parallel with
 * the writer, on the storage's upload threads (storage.connections of them). At most
 * connections + STORAGE_QUEUE_SLACK objects are queued or being sent for the whole storage:
 * storage_batch_put blocks while that many are. A failed put fails the batch: its later puts
 * are not made, and storage_batch_put / storage_batch_wait return the first error. A storage
 * without threads puts synchronously, in storage_batch_put. Nothing a batch put is known to
 * be stored until storage_batch_wait returned 0. */
#define STORAGE_QUEUE_SLACK 2
#define STORAGE_CONNECTIONS_MAX 64
struct storage_batch;
struct storage_batch *storage_batch_new(struct storage *s);
/* Called once per batch put, on whichever thread made it (or dropped it), before
 * storage_batch_wait / _free return: stored says whether the object is stored. */
typedef void (*storage_put_done)(void *ctx, bool stored);
/* Queues the put of data under name; takes data's bytes (data is left empty). done may be
 * NULL. Returns -1 (and done(ctx, false) was called) when the batch failed before. */
int storage_batch_put(struct storage_batch *b, const char *name, struct buf *data,
                      storage_put_done done, void *ctx, struct err *e);
/* storage_batch_put of an object made piece by piece: one kept in memory is queued as a
 * put of its bytes; one in a temporary file is committed now, on the caller's thread (such a
 * backend has no upload threads). Frees o either way. */
int storage_batch_put_obj(struct storage_batch *b, const char *name, struct storage_obj *o,
                          storage_put_done done, void *ctx, struct err *e);
/* Waits until every put of the batch is done: 0 when all were stored. */
int storage_batch_wait(struct storage_batch *b, struct err *e);
/* Drops the batch's puts not started yet, waits for those being sent, frees the batch. */
void storage_batch_free(struct storage_batch *b);
/* Stops the upload threads (storage_close does; no batch may be alive). */
void storage_queue_stop(struct storage *s);

/* What this process sent to and received from S3 servers, all S3 storages together (bodies
 * only, every attempt counted). */
struct storage_s3_counters {
    uint64_t requests, bytes_sent, bytes_received;
};
void storage_s3_get_counters(struct storage_s3_counters *out);

/* 1 exists, 0 not, -1 error */
int storage_exists(struct storage *s, const char *name, struct err *e);
void storage_close(struct storage *s);

#endif

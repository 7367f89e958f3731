/* Byte streams in the repository: a database dump, a manifest's entry list — anything that
 * is one sequence of bytes. Stored as content-defined chunks (so what did not change between
 * two streams is stored once) with the SHA-256 of the whole stream; restored in order with
 * every chunk authenticated and the whole stream's SHA-256 checked at the end. */
#ifndef CARIS_STREAM_H
#define CARIS_STREAM_H

#include <jansson.h>
#include <stdint.h>

#include "caris/chunker.h"
#include "caris/err.h"
#include "caris/repo.h"

struct stream_result {
    json_t *chunks;     /* [[id hex, length], ...]: owned by the caller */
    uint8_t sha256[32]; /* of the whole stream */
    uint64_t bytes;     /* stream length */
    /* Where the time went (ns; reported, never stored): on the reading thread, waiting for
     * and reading the input (read: a pipe's producer's pace shows here), the whole-stream
     * SHA-256, finding cut points, and waiting for a worker to take a chunk (queue: the
     * workers are behind); summed over the workers, chunk ids (HMAC). */
    uint64_t read_ns, sha_ns, chunk_ns, queue_ns, id_ns;
};

/* Reads fd to end of file (a pipe is fine) and stores it through w, whose slots 0..threads-1
 * this call uses (threads <= the writer's slots; 0 = number of CPUs). Does not flush w.
 * progress (may be NULL) is called now and then with the bytes read so far. op (may be NULL):
 * its cancel flag stops the read within a quarter of a second, even while fd gives nothing,
 * with the error "cancelled". */
struct caris_op;
int stream_store_fd(struct repo *r, struct repo_writer *w, int threads, int fd,
                    const struct chunker_params *cp, struct stream_result *out,
                    void (*progress)(void *ctx, uint64_t bytes), void *ctx,
                    const struct caris_op *op, struct err *e);
/* The same, and tap (may be NULL) sees every byte of fd in order, on the reading thread. */
int stream_store_fd_tap(struct repo *r, struct repo_writer *w, int threads, int fd,
                        const struct chunker_params *cp, struct stream_result *out,
                        void (*progress)(void *ctx, uint64_t bytes), void *ctx,
                        void (*tap)(void *tap_ctx, const uint8_t *p, size_t n), void *tap_ctx,
                        const struct caris_op *op, struct err *e);
int stream_store_buf(struct repo *r, struct repo_writer *w, int threads, const void *data,
                     size_t len, const struct chunker_params *cp, struct stream_result *out,
                     struct err *e);
/* One thread, into the writer's metadata slot (repo_writer_meta_slot). */
int stream_store_meta_buf(struct repo *r, struct repo_writer *w, const void *data, size_t len,
                          const struct chunker_params *cp, struct stream_result *out,
                          struct err *e);
/* The same for fd, read from where it is to its end (a file: the same chunks as its bytes
 * given as one buffer). */
int stream_store_meta_fd(struct repo *r, struct repo_writer *w, int fd,
                         const struct chunker_params *cp, struct stream_result *out, struct err *e);

/* Writes the stream to fd in order (a pipe is fine), fetching and authenticating chunks on
 * threads workers. Fails with ERR_DAMAGE on any bad chunk or when the whole stream's SHA-256
 * differs from sha256 (what was already written to fd cannot be taken back: callers that
 * write to a final place must stage, or treat the consumer's result as provisional).
 * progress as above, with bytes written. op (may be NULL): its cancel flag stops it at the
 * next chunk, or while fd (made non-blocking by the caller) takes nothing, with the error
 * "cancelled". */
int stream_restore_fd(struct repo *r, json_t *chunks, const uint8_t sha256[32], int fd, int threads,
                      void (*progress)(void *ctx, uint64_t bytes), void *ctx,
                      const struct caris_op *op, struct err *e);
/* stream_restore_fd with load_flags as repo_blob_load_flags: REPO_LOAD_NO_ID_CHECK for a
 * caller whose consumer acts on what fd received only once this returned 0 (a file staged
 * before use, or a pg_restore held back from committing until then): the whole stream's
 * SHA-256 is checked all the same. */
int stream_restore_fd_flags(struct repo *r, json_t *chunks, const uint8_t sha256[32], int fd,
                            int threads, unsigned load_flags,
                            void (*progress)(void *ctx, uint64_t bytes), void *ctx,
                            const struct caris_op *op, struct err *e);
/* The same with the chunks loaded on pool, the caller's (shared by several streams at once;
 * NULL: loaded in this thread, one at a time, nothing ahead of what fd takes: for a stream
 * restored inside a job of another pool, or one whose reader stops early), with
 * load_flags as repo_blob_load_flags (REPO_LOAD_NO_ID_CHECK for a caller that uses what fd
 * received only once this returned 0: the whole stream's SHA-256 is checked all the same). */
struct pool;
int stream_restore_fd_on(struct repo *r, json_t *chunks, const uint8_t sha256[32], int fd,
                         struct pool *pool, unsigned load_flags,
                         void (*progress)(void *ctx, uint64_t bytes), void *ctx,
                         const struct caris_op *op, struct err *e);
/* The same into memory (max: refuse longer streams). */
int stream_restore_buf(struct repo *r, json_t *chunks, const uint8_t sha256[32], size_t max,
                       struct buf *out, struct err *e);
/* stream_restore_buf with every chunk loaded in this thread (for a caller whose threads each
 * restore a stream of their own). */
int stream_restore_buf_here(struct repo *r, json_t *chunks, const uint8_t sha256[32], size_t max,
                            struct buf *out, struct err *e);

#endif

/* Copies of blobs known to be damaged (docs/REPOSITORY-FORMAT.md, "Damaged blobs").
 *
 * A blob that failed to open (authentication, decompression, length or id) is noted with the
 * pack it was read from. repo_bad_blobs_save records what a handle noted (records/bad-blob),
 * and every later open reads those records: an index entry that places a recorded blob in the
 * recorded pack is usable for reading (it fails as before) but not for deduplication, so the
 * next backup that meets the blob stores it again, and the index prefers any other copy. The
 * backups made before are whole again once that copy exists. */
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"
#include "caris/repo.h"
#include "internal.h"

#define PAIR_LEN 64               /* pack id || blob id */
#define BAD_RECORD_MAX_PAIRS 4096 /* ~550 KiB of record text, under RECORD_MAX_FILE */

static int cmp_pair(const void *a, const void *b)
{
    return memcmp(a, b, PAIR_LEN);
}

static bool pairs_have(const struct buf *pairs, const uint8_t pair[PAIR_LEN])
{
    return pairs->len && bsearch(pair, pairs->data, pairs->len / PAIR_LEN, PAIR_LEN, cmp_pair);
}

/* Sorts the pairs and drops repeats. */
static void pairs_sort_unique(struct buf *pairs)
{
    size_t n = pairs->len / PAIR_LEN, u = 0;
    if (n)
        qsort(pairs->data, n, PAIR_LEN, cmp_pair);
    for (size_t j = 0; j < n; j++)
        if (!u || memcmp(pairs->data + (u - 1) * PAIR_LEN, pairs->data + j * PAIR_LEN, PAIR_LEN))
            memmove(pairs->data + u++ * PAIR_LEN, pairs->data + j * PAIR_LEN, PAIR_LEN);
    pairs->len = u * PAIR_LEN;
}

/* The entry numbers are a hash set (linear probing, at most half full, slots hold number + 1,
 * 0 empty): one may be marked for every blob of a repository that a disk failure damaged,
 * each at open and at a record's save, and each looked up by every deduplication. */
static size_t slot_home(const struct u32set *h, uint32_t v)
{
    return (size_t)(((uint64_t)v * 0x9E3779B97F4A7C15ull) >> 32) & (h->cap - 1);
}

static size_t slot_find(const struct u32set *h, uint32_t v)
{
    size_t i = slot_home(h, v);
    while (h->slots[i] && h->slots[i] != v + 1)
        i = (i + 1) & (h->cap - 1);
    return i;
}

bool bad_entry_is_locked(const struct repo *r, uint32_t ei)
{
    const struct u32set *h = &r->bad_entries;
    return h->n && h->slots[slot_find(h, ei)] == ei + 1;
}

void bad_entry_set_locked(struct repo *r, uint32_t ei, bool bad)
{
    struct u32set *h = &r->bad_entries;
    if (bad) {
        if ((h->n + 1) * 2 > h->cap) {
            struct u32set g = {.cap = h->cap ? h->cap * 2 : 64};
            g.slots = xcalloc(g.cap, sizeof(uint32_t));
            for (size_t i = 0; i < h->cap; i++)
                if (h->slots[i])
                    g.slots[slot_find(&g, h->slots[i] - 1)] = h->slots[i];
            g.n = h->n;
            free(h->slots);
            *h = g;
        }
        size_t i = slot_find(h, ei);
        if (!h->slots[i]) {
            h->slots[i] = ei + 1;
            h->n++;
        }
        return;
    }
    if (!h->n)
        return;
    size_t i = slot_find(h, ei);
    if (!h->slots[i])
        return;
    h->slots[i] = 0;
    h->n--;
    /* backward shift: what follows in the run moves up unless it is at or past its home */
    for (size_t j = (i + 1) & (h->cap - 1); h->slots[j]; j = (j + 1) & (h->cap - 1)) {
        size_t k = slot_home(h, h->slots[j] - 1);
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            h->slots[i] = h->slots[j];
            h->slots[j] = 0;
            i = j;
        }
    }
}

void bad_entries_clear(struct repo *r)
{
    free(r->bad_entries.slots);
    memset(&r->bad_entries, 0, sizeof(r->bad_entries));
}

bool bad_pair_known_locked(const struct repo *r, uint32_t pidx, const uint8_t id[32])
{
    if (!r->bad_pairs.len)
        return false;
    uint8_t pair[PAIR_LEN];
    memcpy(pair, r->packs[pidx].id, 32);
    memcpy(pair + 32, id, 32);
    return pairs_have(&r->bad_pairs, pair);
}

bool bad_pack_known_locked(const struct repo *r, uint32_t pidx)
{
    size_t n = r->bad_pairs.len / PAIR_LEN, lo = 0, hi = n;
    const uint8_t *pid = r->packs[pidx].id;
    while (lo < hi) { /* the first pair not below pid || 0...0 */
        size_t mid = (lo + hi) / 2;
        if (memcmp(r->bad_pairs.data + mid * PAIR_LEN, pid, 32) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && memcmp(r->bad_pairs.data + lo * PAIR_LEN, pid, 32) == 0;
}

void bad_blob_note_locked(struct repo *r, uint32_t pidx, const uint8_t id[32])
{
    if (pidx < r->npacks) {
        uint8_t pair[PAIR_LEN];
        memcpy(pair, r->packs[pidx].id, 32);
        memcpy(pair + 32, id, 32);
        if (!pairs_have(&r->bad_pairs, pair)) /* unsorted: repo_bad_blobs_save sorts */
            buf_append(&r->bad_found, pair, PAIR_LEN);
    }
}

void bad_blob_note(struct repo *r, uint32_t pidx, const uint8_t id[32])
{
    pthread_mutex_lock(&r->mu);
    bad_blob_note_locked(r, pidx, id);
    pthread_mutex_unlock(&r->mu);
}

void bad_pack_note(struct repo *r, uint32_t pidx)
{
    pthread_mutex_lock(&r->mu);
    if (pidx < r->npacks && !r->packs[pidx].header_bad) {
        r->packs[pidx].header_bad = true; /* its blobs: at repo_bad_blobs_save */
        r->bad_headers_pending++;
    }
    pthread_mutex_unlock(&r->mu);
}

/* The blobs of the packs bad_pack_note named since the last save, noted: one pass over the
 * index for all of them (a pass per pack, under the lock, was the index's size times the
 * number of bad packs). */
static void bad_headers_expand_locked(struct repo *r)
{
    if (!r->bad_headers_pending)
        return;
    for (size_t i = 0; i < r->nentries; i++) {
        const struct ientry *en = repo_entry(r, i);
        if (en->pack < r->npacks && r->packs[en->pack].header_bad &&
            !r->packs[en->pack].header_noted)
            bad_blob_note_locked(r, en->pack, en->id);
    }
    for (size_t p = 0; p < r->npacks; p++)
        r->packs[p].header_noted = r->packs[p].header_bad;
    r->bad_headers_pending = 0;
}

/* Marks the entry of each pair that still places the blob in that pack. */
static void mark_pairs_locked(struct repo *r, const uint8_t *pairs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = pairs + i * PAIR_LEN;
        long ei = repo_lookup_locked(r, p + 32);
        if (ei < 0)
            continue;
        uint32_t pack = repo_entry(r, (size_t)ei)->pack;
        if (PACK_IS_REAL(pack) && pack < r->npacks && memcmp(r->packs[pack].id, p, 32) == 0)
            bad_entry_set_locked(r, (uint32_t)ei, true);
    }
}

int repo_bad_blobs_save(struct repo *r, const char *by, size_t *saved, struct err *e)
{
    if (saved)
        *saved = 0;
    pthread_mutex_lock(&r->mu);
    bad_headers_expand_locked(r);
    struct buf found = r->bad_found;
    memset(&r->bad_found, 0, sizeof(r->bad_found));
    pthread_mutex_unlock(&r->mu);
    pairs_sort_unique(&found); /* a blob read twice is noted twice */
    size_t n = found.len / PAIR_LEN;
    char when[40];
    time_format_iso(time_now_ns(), when, sizeof(when));
    int rc = 0;
    size_t done = 0;
    /* written under a shared lock (nested when the caller holds one), as every write: a
     * prune running meanwhile removes the temporary file of a record being written, and
     * decides what to keep from an index that has not learnt of this damage yet */
    bool locked = false;
    if (n) {
        rc = repo_lock(r, false, "record damaged blobs", e);
        locked = rc == 0;
    }
    while (done < n && rc == 0) {
        size_t k = n - done < BAD_RECORD_MAX_PAIRS ? n - done : BAD_RECORD_MAX_PAIRS;
        json_t *blobs = json_array();
        for (size_t i = done; i < done + k; i++) {
            char pack[65], blob[65];
            cx_hex(found.data + i * PAIR_LEN, 32, pack);
            cx_hex(found.data + i * PAIR_LEN + 32, 32, blob);
            json_array_append_new(blobs, json_pack("[s, s]", pack, blob));
        }
        json_t *rec = json_pack("{s:s, s:s, s:o}", "time", when, "by", by, "blobs", blobs);
        rc = repo_record_add(r, BAD_BLOB_RECORD_KIND, rec, e);
        json_decref(rec);
        if (rc == 0)
            done += k;
    }
    pthread_mutex_lock(&r->mu);
    /* what was recorded is known to this handle from now on; what was not is noted again */
    buf_append(&r->bad_pairs, found.data, done * PAIR_LEN);
    pairs_sort_unique(&r->bad_pairs);
    if (n > done) /* (found.data is NULL when nothing was found: no offset on it) */
        buf_append(&r->bad_found, found.data + done * PAIR_LEN, (n - done) * PAIR_LEN);
    mark_pairs_locked(r, found.data, done);
    pthread_mutex_unlock(&r->mu);
    if (locked)
        repo_unlock(r);
    buf_free(&found);
    if (saved)
        *saved = done;
    return rc;
}

int bad_blobs_load(struct repo *r, struct err *e)
{
    json_t *damaged = NULL;
    json_t *recs = repo_record_list(r, BAD_BLOB_RECORD_KIND, &damaged, e);
    if (!recs)
        return -1;
    size_t i, k;
    json_t *rec, *pair, *d;
    struct buf pairs = {0};
    json_array_foreach(recs, i, rec)
    {
        json_array_foreach(json_object_get(rec, "blobs"), k, pair)
        {
            uint8_t p[PAIR_LEN];
            const char *pack = json_string_value(json_array_get(pair, 0));
            const char *blob = json_string_value(json_array_get(pair, 1));
            if (pack && blob && cx_unhex(pack, p, 32) == 0 && cx_unhex(blob, p + 32, 32) == 0)
                buf_append(&pairs, p, PAIR_LEN);
        }
    }
    /* An unreadable record is damage (check reports it, prune refuses): without it, a copy it
     * named damaged could win over the sound one, and prune would delete the sound one. */
    json_array_foreach(damaged, i, d)
    {
        char msg[700];
        snprintf(msg, sizeof(msg),
                 "a record of damaged blobs cannot be read (%s): the damaged copies it named "
                 "are unknown; run `caris-backup check --read-data` (it records what it finds "
                 "again), then move this file out of the repository",
                 json_string_value(json_object_get(d, "error")) ?: "?");
        const char *obj =
            json_string_value(json_object_get(d, "object")) ?: "records/" BAD_BLOB_RECORD_KIND;
        json_array_append_new(r->damage, json_pack("{s:s, s:s}", "object", obj, "error", msg));
        repo_warn(r, obj, "%s", msg); /* every command says so, not only check and prune */
    }
    json_decref(recs);
    json_decref(damaged);
    pairs_sort_unique(&pairs);
    buf_free(&r->bad_pairs);
    r->bad_pairs = pairs;
    return 0;
}

int repo_bad_blobs_forget_gone(struct repo *r, size_t *removed, struct err *e)
{
    *removed = 0;
    json_t *recs = repo_record_list_named(r, BAD_BLOB_RECORD_KIND, NULL, e);
    if (!recs)
        return -1;
    int rc = 0;
    size_t i, k;
    json_t *rec, *pair;
    json_array_foreach(recs, i, rec)
    {
        bool any = false;
        json_array_foreach(json_object_get(rec, "blobs"), k, pair)
        {
            uint8_t pid[32];
            const char *pack = json_string_value(json_array_get(pair, 0));
            if (!pack || cx_unhex(pack, pid, 32) != 0)
                continue;
            char name[80];
            pack_object_name(pid, name, sizeof(name));
            struct err xe = ERR_INIT;
            int x = storage_exists(r->st, name, &xe);
            if (x != 0) { /* there, or cannot tell: the record stays */
                any = true;
                break;
            }
        }
        if (any)
            continue;
        if (repo_record_remove(r, json_string_value(json_object_get(rec, "_object")), e) != 0) {
            rc = -1;
            break;
        }
        ++*removed;
    }
    json_decref(recs);
    return rc;
}

/* emb_cache.c - encoder outputs by image key, refcounted, LRU under a byte
 * budget (emb_cache.h).
 *
 * Entries live in one doubly linked list: referenced ones anywhere, and
 * every entry whose refcount drops to 0 moves to the tail, so the head
 * side holds the least recently used unreferenced entries; eviction walks
 * from the head and skips referenced ones. Lookup is a linear scan: the
 * number of distinct images alive in one worker is small (tens), and the
 * scan compares 52-byte keys. Owns the entries and, through free_fn, the
 * embeddings. Single-threaded. */
#include "emb_cache.h"

#include <stdlib.h>
#include <string.h>

#include "common/queue.h"

typedef struct entry {
    gs_emb_key key;
    void *emb;
    size_t bytes;
    int32_t refs;
    gs_queue link; /* in gs_emb_cache.lru */
} entry;

struct gs_emb_cache {
    size_t max_bytes, bytes, unref_bytes;
    int32_t n, n_ref;
    gs_queue lru; /* of entry.link; unreferenced ones in LRU order from the head */
    gs_emb_free_fn free_fn;
    void *user;
    int64_t hits, misses, evictions;
};

void gs_emb_key_make(const uint8_t hash[32], const int32_t grid[3], uint64_t salt, gs_emb_key *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->b, hash, 32);
    for (int a = 0; a < 3; a++)
        for (int i = 0; i < 4; i++)
            out->b[32 + 4 * a + i] = (uint8_t)((uint32_t)grid[a] >> (8 * i));
    for (int i = 0; i < 8; i++)
        out->b[44 + i] = (uint8_t)(salt >> (8 * i));
}

int gs_emb_cache_new(size_t max_bytes, gs_emb_free_fn free_fn, void *user, gs_emb_cache **out)
{
    if (!out || !free_fn)
        return GS_EINVAL;
    gs_emb_cache *c = calloc(1, sizeof *c);
    if (!c)
        return GS_ENOMEM;
    c->max_bytes = max_bytes;
    c->free_fn = free_fn;
    c->user = user;
    gs_queue_init(&c->lru);
    *out = c;
    return 0;
}

static entry *entry_of(gs_queue *q)
{
    return gs_queue_data(q, entry, link);
}

static void drop(gs_emb_cache *c, entry *e)
{
    gs_queue_remove(&e->link);
    c->bytes -= e->bytes;
    if (e->refs == 0)
        c->unref_bytes -= e->bytes;
    else
        c->n_ref--;
    c->n--;
    c->free_fn(c->user, e->emb);
    free(e);
}

void gs_emb_cache_free(gs_emb_cache *c)
{
    if (!c)
        return;
    while (!gs_queue_empty(&c->lru))
        drop(c, entry_of(gs_queue_head(&c->lru)));
    free(c);
}

static entry *find(const gs_emb_cache *c, const gs_emb_key *key)
{
    gs_queue *q;
    GS_QUEUE_FOREACH(q, &c->lru)
    {
        entry *e = entry_of(q);
        if (memcmp(e->key.b, key->b, sizeof key->b) == 0)
            return e;
    }
    return NULL;
}

static void ref(gs_emb_cache *c, entry *e)
{
    if (e->refs++ == 0) {
        c->unref_bytes -= e->bytes;
        c->n_ref++;
    }
}

static void evict(gs_emb_cache *c)
{
    gs_queue *q = gs_queue_head(&c->lru);
    while (q != &c->lru && c->unref_bytes > c->max_bytes) {
        gs_queue *next = q->next;
        entry *e = entry_of(q);
        if (e->refs == 0) {
            drop(c, e);
            c->evictions++;
        }
        q = next;
    }
}

void *gs_emb_cache_get(gs_emb_cache *c, const gs_emb_key *key)
{
    entry *e = find(c, key);
    if (!e) {
        c->misses++;
        return NULL;
    }
    c->hits++;
    ref(c, e);
    return e->emb;
}

void *gs_emb_cache_put(gs_emb_cache *c, const gs_emb_key *key, void *emb, size_t bytes)
{
    entry *e = find(c, key);
    if (e) {
        c->free_fn(c->user, emb);
        ref(c, e);
        return e->emb;
    }
    e = calloc(1, sizeof *e);
    if (!e) {
        c->free_fn(c->user, emb);
        return NULL;
    }
    e->key = *key;
    e->emb = emb;
    e->bytes = bytes;
    e->refs = 1;
    gs_queue_insert_tail(&c->lru, &e->link);
    c->n++;
    c->n_ref++;
    c->bytes += bytes;
    evict(c);
    return emb;
}

void gs_emb_cache_release(gs_emb_cache *c, const gs_emb_key *key)
{
    entry *e = find(c, key);
    if (!e || e->refs <= 0)
        return;
    if (--e->refs == 0) {
        c->n_ref--;
        c->unref_bytes += e->bytes;
        gs_queue_remove(&e->link); /* most recently used: to the tail */
        gs_queue_insert_tail(&c->lru, &e->link);
        evict(c);
    }
}

void gs_emb_cache_trim(gs_emb_cache *c)
{
    size_t keep = c->max_bytes;
    c->max_bytes = 0;
    evict(c);
    c->max_bytes = keep;
}

void gs_emb_cache_get_stats(const gs_emb_cache *c, gs_emb_cache_stats *out)
{
    out->n_entries = c->n;
    out->n_referenced = c->n_ref;
    out->bytes = c->bytes;
    out->unreferenced_bytes = c->unref_bytes;
    out->hits = c->hits;
    out->misses = c->misses;
    out->evictions = c->evictions;
}

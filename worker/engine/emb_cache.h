/* emb_cache.h - image embeddings found again by the image they came from.
 *
 * The prefix cache skips the vision tower only when every token of an
 * image sits in a cached full page. Another question about the same image
 * usually diverges right after it, so the image's last tokens share a page
 * with new text and the whole image would be encoded again. This cache
 * keeps encoder outputs by key (content hash, grid, cache salt), shared by
 * every sequence using that image: an entry holds one reference per
 * sequence, and entries nobody references stay cached in LRU order until
 * the byte budget needs their room (vLLM's encoder cache).
 *
 * The cache stores opaque pointers (backend memory in the engine) and frees
 * them through a callback, so it is pure and testable with malloc.
 * Not thread-safe: owned by the engine thread. */
#ifndef GS_EMB_CACHE_H
#define GS_EMB_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define GS_EMB_KEY_BYTES 52

typedef struct {
    uint8_t b[GS_EMB_KEY_BYTES];
} gs_emb_key;

/* Key of an image: its 32-byte content hash, its grid and the cache salt. */
void gs_emb_key_make(const uint8_t hash[32], const int32_t grid[3], uint64_t salt, gs_emb_key *out);

typedef struct gs_emb_cache gs_emb_cache; /* opaque */

/* Frees one embedding the cache owns. */
typedef void (*gs_emb_free_fn)(void *user, void *emb);

/* max_bytes: budget for entries nobody references. On success *out owns
 * the cache (gs_emb_cache_free). */
int gs_emb_cache_new(size_t max_bytes, gs_emb_free_fn free_fn, void *user, gs_emb_cache **out);
/* NULL: no-op. Frees every entry, referenced or not. */
void gs_emb_cache_free(gs_emb_cache *c);

/* The embedding cached under key with a reference taken for the caller
 * (release it with gs_emb_cache_release), or NULL. */
void *gs_emb_cache_get(gs_emb_cache *c, const gs_emb_key *key);
/* Takes emb (bytes large) and caches it under key with one reference for
 * the caller; then evicts unreferenced entries, least recently used
 * first, until the unreferenced ones fit the budget. If key is cached
 * already, emb is freed and the cached one is referenced and returned
 * instead. Returns the embedding to use, or NULL (GS_ENOMEM: emb freed). */
void *gs_emb_cache_put(gs_emb_cache *c, const gs_emb_key *key, void *emb, size_t bytes);
/* Drops a reference taken by get or put. */
void gs_emb_cache_release(gs_emb_cache *c, const gs_emb_key *key);

/* Frees every entry nobody references. */
void gs_emb_cache_trim(gs_emb_cache *c);

typedef struct {
    int32_t n_entries, n_referenced;
    size_t bytes, unreferenced_bytes;
    int64_t hits, misses, evictions;
} gs_emb_cache_stats;
void gs_emb_cache_get_stats(const gs_emb_cache *c, gs_emb_cache_stats *out);

#endif

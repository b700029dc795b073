/* prefix_cache.h - full KV pages found again by the content they hold.
 *
 * Every full page of a sequence has a key: SHA-256 over the key of the page
 * before it (the parent), the page's token ids and, for the positions that
 * are image tokens, the content hash and grid of that image and the offset
 * within it. Equal keys mean equal prefixes (the whole chain up to the
 * page), so equal KV: two requests with the same system prompt and/or the
 * same image find the same pages. The first page's parent is a root key
 * made from a salt, so callers can keep tenants apart.
 *
 * The cache maps keys to page ids of a gs_kv_pool. It holds no references:
 * a cached page whose refcount drops to 0 stays cached on the pool's LRU
 * free list and loses its key only when the pool hands it out again (the
 * pool's reuse hook). Nothing here knows about sequences or scheduling.
 *
 * Not thread-safe: owned by the engine thread. */
#ifndef GS_PREFIX_CACHE_H
#define GS_PREFIX_CACHE_H

#include <stdint.h>

#include "common/err.h"
#include "worker/engine/kv_pool.h"

#define GS_PREFIX_KEY_BYTES 32
#define GS_IMAGE_HASH_BYTES 32

typedef struct {
    uint8_t b[GS_PREFIX_KEY_BYTES];
} gs_prefix_key;

/* Where an image's tokens sit in a sequence, and what the image is. */
typedef struct {
    int32_t start, len;                /* token positions [start, start + len) */
    int32_t grid[3];                   /* t, h, w in patches */
    uint8_t hash[GS_IMAGE_HASH_BYTES]; /* content hash of the image (SHA-256 of its bytes) */
} gs_prefix_image;

/* The parent key of a sequence's first page, from a salt (0: shared by
 * everyone). Writes *out. */
void gs_prefix_root_key(uint64_t salt, gs_prefix_key *out);

/* Key of the page holding tokens [pos0, pos0 + n) of a sequence.
 * toks: [n] those tokens; imgs: [n_imgs] every image of the sequence (only
 * those overlapping the page count), sorted by start. Borrows everything.
 * 0, GS_EINVAL (bad arguments) or GS_EINTERNAL (libcrypto failed). */
int gs_prefix_page_key(const gs_prefix_key *parent, const int32_t *toks, int32_t pos0, int32_t n,
                       const gs_prefix_image *imgs, int32_t n_imgs, gs_prefix_key *out);

typedef struct gs_prefix_cache gs_prefix_cache; /* opaque */

/* Borrows pool (must outlive the cache) and installs itself as the pool's
 * reuse hook. On success *out owns the cache (gs_prefix_cache_free). */
int gs_prefix_cache_new(gs_kv_pool *pool, gs_prefix_cache **out);
void gs_prefix_cache_free(gs_prefix_cache *pc); /* NULL: no-op; removes the hook */

/* Longest cached prefix: the number h of leading keys[0..h) that are
 * cached, their pages in pages[0..h). Takes no references. */
int32_t gs_prefix_cache_lookup(const gs_prefix_cache *pc, const gs_prefix_key *keys, int32_t n,
                               int32_t *pages);
/* Caches `page` under `key`. Returns 1 when inserted, 0 when the key is
 * already cached (by this or another page: duplicates are not kept, so
 * block tables stay append-only) or the page already has a key, GS_EINVAL
 * for page 0 or a bad id. */
int gs_prefix_cache_insert(gs_prefix_cache *pc, const gs_prefix_key *key, int32_t page);
/* 1 when the page has a key. */
int gs_prefix_cache_has_page(const gs_prefix_cache *pc, int32_t page);
/* Forgets the page's key (no-op when it has none). */
void gs_prefix_cache_drop_page(gs_prefix_cache *pc, int32_t page);
/* Forgets every key. */
void gs_prefix_cache_clear(gs_prefix_cache *pc);
int32_t gs_prefix_cache_n_cached(const gs_prefix_cache *pc);

#endif

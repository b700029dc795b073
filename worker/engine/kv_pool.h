/* kv_pool.h - fixed-size KV pages: allocation, reference counts, LRU reuse.
 *
 * The pool hands out page ids; the memory behind them is a gs_kv_cache of
 * the same number of pages (worker/model/model.h), owned by the engine.
 * Page 0 is the null page: it is never handed out, never ref-counted, and
 * pads block tables (vLLM's null_block).
 *
 * A page whose reference count drops to 0 goes to the tail of the free
 * list, an intrusive doubly linked list in LRU order (vLLM's
 * FreeKVCacheBlockQueue): allocation takes from the head, and a page that
 * is referenced again while on the list (a prefix-cache hit) leaves it from
 * the middle in O(1). The pool knows nothing of tokens or hashes; the
 * prefix cache learns that a free page is being reused through the reuse
 * hook, called for every page that allocation takes off the list.
 *
 * Not thread-safe: owned by the engine thread. */
#ifndef GS_KV_POOL_H
#define GS_KV_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct gs_kv_pool gs_kv_pool; /* opaque */

typedef struct {
    int32_t n_pages; /* including the null page 0; >= 2 */
} gs_kv_pool_params;

/* Pages that fit in `bytes` when one page takes page_bytes (the caller gets
 * page_bytes from gs_kv_cache_page_bytes), capped at max_pages when > 0.
 * Returns 0 when not even two pages fit (the null page and one more). */
int32_t gs_kv_pool_pages_for_bytes(size_t bytes, size_t page_bytes, int32_t max_pages);

/* On success *out owns a new pool (gs_kv_pool_free) with pages 1..n-1 on
 * the free list in id order, each with refcount 0. GS_EINVAL / GS_ENOMEM. */
int gs_kv_pool_new(const gs_kv_pool_params *p, gs_kv_pool **out);
void gs_kv_pool_free(gs_kv_pool *pool); /* NULL: no-op */

/* Called with each page that gs_kv_pool_alloc takes off the free list,
 * before it is handed out (the prefix cache drops its hash there). */
typedef void (*gs_kv_pool_reuse_fn)(void *user, int32_t page);
void gs_kv_pool_set_reuse_hook(gs_kv_pool *pool, gs_kv_pool_reuse_fn fn, void *user);

int32_t gs_kv_pool_n_pages(const gs_kv_pool *pool);                /* including page 0 */
int32_t gs_kv_pool_n_free(const gs_kv_pool *pool);                 /* pages on the free list */
int32_t gs_kv_pool_refcount(const gs_kv_pool *pool, int32_t page); /* -1: bad id */

/* Takes n pages from the head of the free list into ids[0..n), refcount 1
 * each. GS_EAGAIN when fewer than n are free (then nothing is taken);
 * GS_EINVAL for n < 0. */
int gs_kv_pool_alloc(gs_kv_pool *pool, int32_t n, int32_t *ids);
/* Adds a reference; a page with refcount 0 leaves the free list (from
 * wherever it is). No-op for page 0. GS_EINVAL for a bad id. */
int gs_kv_pool_ref(gs_kv_pool *pool, int32_t page);
/* Drops a reference; at 0 the page goes to the tail of the free list (most
 * recently used, evicted last). No-op for page 0. GS_EINVAL for a bad id
 * or a page that holds no reference. */
int gs_kv_pool_unref(gs_kv_pool *pool, int32_t page);

/* The free list from head (next to be handed out) to tail, at most cap
 * ids into ids; returns the number of free pages. For tests and checks. */
int32_t gs_kv_pool_free_list(const gs_kv_pool *pool, int32_t *ids, int32_t cap);
/* Checks the internal invariants (list links, counts, refcounts);
 * 0 or GS_EINTERNAL. O(n_pages). For tests. */
int gs_kv_pool_check(const gs_kv_pool *pool);

#endif

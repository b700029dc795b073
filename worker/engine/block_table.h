/* block_table.h - one sequence's pages: logical page i of the sequence
 * (tokens [i*page_size, (i+1)*page_size)) is physical page pages[i].
 *
 * Append-only: pages are added at the end and never replaced, except by
 * copy-on-write: before a sequence writes into a page that it shares
 * (refcount > 1, or a cached page it must not alter), the page is copied to
 * a fresh one that takes its place. The copy itself is device work, so the
 * table only records it (gs_page_copy) for the engine to perform with
 * gs_kv_cache_copy_page before the next forward.
 *
 * The table holds one pool reference per entry. Not thread-safe. */
#ifndef GS_BLOCK_TABLE_H
#define GS_BLOCK_TABLE_H

#include <stdint.h>

#include "common/err.h"
#include "worker/engine/kv_pool.h"

typedef struct {
    int32_t dst, src; /* copy page src into page dst, every layer */
} gs_page_copy;

typedef struct gs_block_table gs_block_table; /* opaque */

/* On success *out owns an empty table (gs_block_table_free). */
int gs_block_table_new(gs_block_table **out);
/* NULL: no-op. The table must have been released (holds no pages). */
void gs_block_table_free(gs_block_table *bt);

int32_t gs_block_table_len(const gs_block_table *bt);
/* [len] page ids; borrowed, valid until the table changes. */
const int32_t *gs_block_table_pages(const gs_block_table *bt);

/* Appends pages whose references the caller hands over (takes them).
 * GS_ENOMEM leaves the table as it was (references stay with the caller). */
int gs_block_table_append(gs_block_table *bt, const int32_t *pages, int32_t n);

/* Number of pool pages gs_block_table_grow would take for the same
 * arguments (new pages plus copies). */
int32_t gs_block_table_grow_need(const gs_block_table *bt, const gs_kv_pool *pool,
                                 int32_t first_write, int32_t n_tokens, int32_t page_size);
/* Makes the table cover n_tokens tokens for a write of positions
 * [first_write, n_tokens): allocates missing pages from pool, and copies on
 * write every existing page in that range with refcount > 1 (appending
 * the copy to copies[*n_copies], which must have room for
 * gs_block_table_grow_need entries, and incrementing *n_copies).
 * GS_EAGAIN when the pool has too few free pages: then nothing changes. */
int gs_block_table_grow(gs_block_table *bt, gs_kv_pool *pool, int32_t first_write, int32_t n_tokens,
                        int32_t page_size, gs_page_copy *copies, int32_t *n_copies);
/* Copy-on-write of entry idx whatever its refcount: a new page takes its
 * place, *copy says what to copy, and the old page loses this table's
 * reference. GS_EAGAIN when no page is free, GS_EINVAL for a bad idx. */
int gs_block_table_cow(gs_block_table *bt, gs_kv_pool *pool, int32_t idx, gs_page_copy *copy);

/* Drops every reference, last page first (so that within a prefix chain
 * the deepest pages reach the LRU free list first and are evicted first),
 * and empties the table. */
void gs_block_table_release(gs_block_table *bt, gs_kv_pool *pool);

#endif

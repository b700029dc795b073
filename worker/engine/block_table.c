/* block_table.c - a sequence's page list and copy-on-write (block_table.h).
 *
 * Owns the page-id array (grown by doubling) and one pool reference per
 * entry. Does not own the pool or the KV memory: page copies are returned
 * to the caller, which runs them on the device. Single-threaded. */
#include "block_table.h"

#include <stdlib.h>

struct gs_block_table {
    int32_t *pages;
    int32_t len, cap;
};

int gs_block_table_new(gs_block_table **out)
{
    if (!out)
        return GS_EINVAL;
    *out = calloc(1, sizeof **out);
    return *out ? 0 : GS_ENOMEM;
}

void gs_block_table_free(gs_block_table *bt)
{
    if (!bt)
        return;
    free(bt->pages);
    free(bt);
}

int32_t gs_block_table_len(const gs_block_table *bt)
{
    return bt->len;
}

const int32_t *gs_block_table_pages(const gs_block_table *bt)
{
    return bt->pages;
}

static int reserve(gs_block_table *bt, int32_t n)
{
    if (n <= bt->cap)
        return 0;
    int32_t cap = bt->cap ? bt->cap : 8;
    while (cap < n) {
        if (cap > INT32_MAX / 2)
            return GS_ENOMEM;
        cap *= 2;
    }
    int32_t *p = realloc(bt->pages, (size_t)cap * sizeof *p);
    if (!p)
        return GS_ENOMEM;
    bt->pages = p;
    bt->cap = cap;
    return 0;
}

int gs_block_table_append(gs_block_table *bt, const int32_t *pages, int32_t n)
{
    if (n < 0 || (n > 0 && !pages) || n > INT32_MAX - bt->len)
        return GS_EINVAL;
    int rc = reserve(bt, bt->len + n);
    if (rc)
        return rc;
    for (int32_t i = 0; i < n; i++)
        bt->pages[bt->len++] = pages[i];
    return 0;
}

static int32_t pages_for(int32_t n_tokens, int32_t page_size)
{
    return (int32_t)(((int64_t)n_tokens + page_size - 1) / page_size);
}

int32_t gs_block_table_grow_need(const gs_block_table *bt, const gs_kv_pool *pool,
                                 int32_t first_write, int32_t n_tokens, int32_t page_size)
{
    if (page_size <= 0 || n_tokens < 0 || first_write < 0)
        return 0;
    int32_t want = pages_for(n_tokens, page_size), need = want > bt->len ? want - bt->len : 0;
    int32_t hi = want < bt->len ? want : bt->len;
    for (int32_t i = first_write / page_size; i < hi; i++)
        need += gs_kv_pool_refcount(pool, bt->pages[i]) > 1;
    return need;
}

int gs_block_table_grow(gs_block_table *bt, gs_kv_pool *pool, int32_t first_write, int32_t n_tokens,
                        int32_t page_size, gs_page_copy *copies, int32_t *n_copies)
{
    if (page_size <= 0 || n_tokens < 0 || first_write < 0 || !n_copies)
        return GS_EINVAL;
    int32_t want = pages_for(n_tokens, page_size);
    int32_t need = gs_block_table_grow_need(bt, pool, first_write, n_tokens, page_size);
    if (need > gs_kv_pool_n_free(pool))
        return GS_EAGAIN;
    int rc = reserve(bt, want);
    if (rc)
        return rc;
    int32_t hi = want < bt->len ? want : bt->len;
    for (int32_t i = first_write / page_size; i < hi; i++) {
        if (gs_kv_pool_refcount(pool, bt->pages[i]) > 1) {
            rc = gs_block_table_cow(bt, pool, i, &copies[(*n_copies)++]);
            if (rc)
                return rc; /* cannot happen: counted above */
        }
    }
    if (want > bt->len) {
        rc = gs_kv_pool_alloc(pool, want - bt->len, bt->pages + bt->len);
        if (rc)
            return rc;
        bt->len = want;
    }
    return 0;
}

int gs_block_table_cow(gs_block_table *bt, gs_kv_pool *pool, int32_t idx, gs_page_copy *copy)
{
    if (idx < 0 || idx >= bt->len || !copy)
        return GS_EINVAL;
    int32_t fresh;
    int rc = gs_kv_pool_alloc(pool, 1, &fresh);
    if (rc)
        return rc;
    copy->dst = fresh;
    copy->src = bt->pages[idx];
    gs_kv_pool_unref(pool, bt->pages[idx]);
    bt->pages[idx] = fresh;
    return 0;
}

void gs_block_table_release(gs_block_table *bt, gs_kv_pool *pool)
{
    for (int32_t i = bt->len - 1; i >= 0; i--)
        gs_kv_pool_unref(pool, bt->pages[i]);
    bt->len = 0;
}

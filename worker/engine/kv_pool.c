/* kv_pool.c - page ids, reference counts and the LRU free list (kv_pool.h).
 *
 * Owns three arrays of n_pages entries: refcount, prev and next. prev/next
 * link the free pages into one circular list through a sentinel, index
 * n_pages, so that unlinking from the middle (a cached page that is hit
 * again) is O(1) and never allocates: the free list is intrusive.
 *
 * Why LRU: a page whose refcount drops to 0 may still hold a cached prefix
 * (prefix_cache.c). Appending it at the tail and allocating from the head
 * keeps recently used prefixes alive longest; a sequence releases its
 * pages tail-first (block_table.c), so that within one chain the deepest
 * pages, the least likely to be shared, are evicted first.
 *
 * Does not own: the memory behind the pages (gs_kv_cache) or any hash.
 * Not thread-safe: owned by the engine thread. */
#include "kv_pool.h"

#include <stdlib.h>

struct gs_kv_pool {
    int32_t n_pages;
    int32_t n_free;
    int32_t *ref;  /* [n_pages] */
    int32_t *prev; /* [n_pages + 1]; entry n_pages is the sentinel */
    int32_t *next; /* [n_pages + 1] */
    gs_kv_pool_reuse_fn reuse;
    void *reuse_user;
};

int32_t gs_kv_pool_pages_for_bytes(size_t bytes, size_t page_bytes, int32_t max_pages)
{
    if (page_bytes == 0)
        return 0;
    size_t n = bytes / page_bytes;
    if (n > (size_t)INT32_MAX / 2)
        n = (size_t)INT32_MAX / 2;
    if (max_pages > 0 && n > (size_t)max_pages)
        n = (size_t)max_pages;
    return n < 2 ? 0 : (int32_t)n;
}

static void list_unlink(gs_kv_pool *p, int32_t id)
{
    p->next[p->prev[id]] = p->next[id];
    p->prev[p->next[id]] = p->prev[id];
    p->prev[id] = p->next[id] = -1;
    p->n_free--;
}

static void list_push_tail(gs_kv_pool *p, int32_t id)
{
    int32_t s = p->n_pages, last = p->prev[s];
    p->next[last] = id;
    p->prev[id] = last;
    p->next[id] = s;
    p->prev[s] = id;
    p->n_free++;
}

int gs_kv_pool_new(const gs_kv_pool_params *prm, gs_kv_pool **out)
{
    if (!out)
        return GS_EINVAL;
    *out = NULL;
    if (!prm || prm->n_pages < 2 || prm->n_pages > INT32_MAX / 2)
        return GS_EINVAL;
    gs_kv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return GS_ENOMEM;
    size_t n = (size_t)prm->n_pages;
    p->n_pages = prm->n_pages;
    p->ref = calloc(n, sizeof *p->ref);
    p->prev = malloc((n + 1) * sizeof *p->prev);
    p->next = malloc((n + 1) * sizeof *p->next);
    if (!p->ref || !p->prev || !p->next) {
        gs_kv_pool_free(p);
        return GS_ENOMEM;
    }
    int32_t s = p->n_pages;
    p->prev[s] = p->next[s] = s;
    p->prev[0] = p->next[0] = -1; /* the null page is never on the list */
    for (int32_t i = 1; i < p->n_pages; i++)
        list_push_tail(p, i);
    *out = p;
    return 0;
}

void gs_kv_pool_free(gs_kv_pool *p)
{
    if (!p)
        return;
    free(p->ref);
    free(p->prev);
    free(p->next);
    free(p);
}

void gs_kv_pool_set_reuse_hook(gs_kv_pool *p, gs_kv_pool_reuse_fn fn, void *user)
{
    p->reuse = fn;
    p->reuse_user = user;
}

int32_t gs_kv_pool_n_pages(const gs_kv_pool *p)
{
    return p->n_pages;
}

int32_t gs_kv_pool_n_free(const gs_kv_pool *p)
{
    return p->n_free;
}

int32_t gs_kv_pool_refcount(const gs_kv_pool *p, int32_t page)
{
    if (page < 0 || page >= p->n_pages)
        return -1;
    return p->ref[page];
}

int gs_kv_pool_alloc(gs_kv_pool *p, int32_t n, int32_t *ids)
{
    if (n < 0 || (n > 0 && !ids))
        return GS_EINVAL;
    if (n > p->n_free)
        return GS_EAGAIN;
    for (int32_t i = 0; i < n; i++) {
        int32_t id = p->next[p->n_pages];
        list_unlink(p, id);
        if (p->reuse)
            p->reuse(p->reuse_user, id);
        p->ref[id] = 1;
        ids[i] = id;
    }
    return 0;
}

int gs_kv_pool_ref(gs_kv_pool *p, int32_t page)
{
    if (page < 0 || page >= p->n_pages)
        return GS_EINVAL;
    if (page == 0)
        return 0;
    if (p->ref[page] == 0)
        list_unlink(p, page);
    p->ref[page]++;
    return 0;
}

int gs_kv_pool_unref(gs_kv_pool *p, int32_t page)
{
    if (page < 0 || page >= p->n_pages)
        return GS_EINVAL;
    if (page == 0)
        return 0;
    if (p->ref[page] <= 0)
        return GS_EINVAL;
    if (--p->ref[page] == 0)
        list_push_tail(p, page);
    return 0;
}

int32_t gs_kv_pool_free_list(const gs_kv_pool *p, int32_t *ids, int32_t cap)
{
    int32_t k = 0;
    for (int32_t id = p->next[p->n_pages]; id != p->n_pages; id = p->next[id]) {
        if (ids && k < cap)
            ids[k] = id;
        k++;
    }
    return k;
}

int gs_kv_pool_check(const gs_kv_pool *p)
{
    int32_t s = p->n_pages, k = 0, prev = s;
    if (p->ref[0] != 0 || p->prev[0] != -1)
        return GS_EINTERNAL;
    for (int32_t id = p->next[s]; id != s; id = p->next[id]) {
        if (id <= 0 || id >= s || p->prev[id] != prev || p->ref[id] != 0 || ++k > s)
            return GS_EINTERNAL;
        prev = id;
    }
    if (p->prev[s] != prev || k != p->n_free)
        return GS_EINTERNAL;
    int32_t zero = 0;
    for (int32_t id = 1; id < s; id++) {
        if (p->ref[id] < 0)
            return GS_EINTERNAL;
        zero += p->ref[id] == 0;
    }
    return zero == k ? 0 : GS_EINTERNAL;
}

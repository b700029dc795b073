/* prefix_cache.c - the hash chain over full pages, and key -> page lookup.
 *
 * The hash chain. The KV of a token depends on every token before it (and
 * on the pixels of every image before it, and on its 3-D position, which
 * the image grids before it decide). So a page cannot be keyed by its own
 * tokens alone: page k's key is SHA-256(key of page k-1, tokens of page k,
 * image facts of page k), which makes a key stand for the whole prefix up
 * to the end of its page without hashing that prefix again. The image facts
 * are, for each image overlapping the page: its content hash and grid, the
 * offset within the image of its first token in the page, where that token
 * sits in the page and how many of the image's tokens the page holds. The
 * grid is part of the key because the image's positions (and so its rotary
 * embedding) depend on it, not only on the bytes. Everything is written
 * little-endian, so keys do not depend on the host.
 *
 * Why SHA-256 and not a 64-bit hash: a key collision would serve one
 * request's KV to another one with a different prefix - wrong output, and
 * across tenants a leak. With SHA-256 crafting a collision is infeasible,
 * and key equality can stand for prefix equality (vLLM's sha256 mode).
 *
 * The table: buckets of page ids chained through chain[page], the bucket
 * chosen by the key's first 8 bytes. A page has at most one key and a key
 * at most one page; a second page computing the same prefix (two requests
 * prefilling the same prompt in the same step) is simply not cached, so no
 * block table ever has to change a page it already holds.
 *
 * Eviction happens only when the pool hands a free page out again: the
 * reuse hook drops its key. Until then a page with refcount 0 stays
 * findable, and a hit takes it back off the free list (kv_pool.c).
 *
 * Owns: the key table. Borrows: the pool. Single-threaded. */
#include "prefix_cache.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

struct gs_prefix_cache {
    gs_kv_pool *pool;
    int32_t n_pages;
    gs_prefix_key *key; /* [n_pages] */
    uint8_t *hashed;    /* [n_pages] 1: key[page] is valid and in the table */
    int32_t *chain;     /* [n_pages] next page in the same bucket, -1 ends */
    int32_t *bucket;    /* [mask + 1] first page, -1 empty */
    uint32_t mask;
    int32_t n_cached;
};

/* ---- keys ---------------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void gs_prefix_root_key(uint64_t salt, gs_prefix_key *out)
{
    /* Not a hash: a fixed tag and the salt. Page keys hash over it. */
    static const char tag[] = "glmserve.prefix.v1";
    memset(out, 0, sizeof *out);
    memcpy(out->b, tag, sizeof tag - 1);
    for (int i = 0; i < 8; i++)
        out->b[24 + i] = (uint8_t)(salt >> (8 * i));
}

int gs_prefix_page_key(const gs_prefix_key *parent, const int32_t *toks, int32_t pos0, int32_t n,
                       const gs_prefix_image *imgs, int32_t n_imgs, gs_prefix_key *out)
{
    if (!parent || !out || n <= 0 || !toks || pos0 < 0 || n_imgs < 0 || (n_imgs > 0 && !imgs))
        return GS_EINVAL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return GS_ENOMEM;
    int ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    uint8_t buf[256];
    ok = ok && EVP_DigestUpdate(ctx, parent->b, sizeof parent->b);
    put_u32(buf, (uint32_t)n);
    ok = ok && EVP_DigestUpdate(ctx, buf, 4);
    for (int32_t i = 0; i < n && ok;) {
        int32_t k = 0;
        for (; k < 64 && i < n; k++, i++)
            put_u32(buf + 4 * k, (uint32_t)toks[i]);
        ok = EVP_DigestUpdate(ctx, buf, (size_t)(4 * k));
    }
    for (int32_t j = 0; j < n_imgs && ok; j++) {
        const gs_prefix_image *im = &imgs[j];
        int32_t lo = im->start > pos0 ? im->start : pos0;
        int64_t ie = (int64_t)im->start + im->len, pe = (int64_t)pos0 + n;
        int32_t hi = (int32_t)(ie < pe ? ie : pe);
        if (lo >= hi)
            continue;
        buf[0] = 'I';
        memcpy(buf + 1, im->hash, GS_IMAGE_HASH_BYTES);
        uint8_t *q = buf + 1 + GS_IMAGE_HASH_BYTES;
        for (int a = 0; a < 3; a++, q += 4)
            put_u32(q, (uint32_t)im->grid[a]);
        put_u32(q, (uint32_t)(lo - im->start)); /* offset within the image */
        put_u32(q + 4, (uint32_t)(lo - pos0));  /* position within the page */
        put_u32(q + 8, (uint32_t)(hi - lo));    /* tokens of it in the page */
        ok = EVP_DigestUpdate(ctx, buf, (size_t)(q + 12 - buf));
    }
    unsigned int len = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, out->b, &len) && len == GS_PREFIX_KEY_BYTES;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : GS_EINTERNAL;
}

/* ---- table --------------------------------------------------------------- */

static uint32_t bucket_of(const gs_prefix_cache *pc, const gs_prefix_key *k)
{
    uint64_t h = 0;
    for (int i = 0; i < 8; i++)
        h |= (uint64_t)k->b[i] << (8 * i);
    return (uint32_t)(h ^ (h >> 32)) & pc->mask;
}

static void reuse_hook(void *user, int32_t page)
{
    gs_prefix_cache_drop_page(user, page);
}

int gs_prefix_cache_new(gs_kv_pool *pool, gs_prefix_cache **out)
{
    if (!out)
        return GS_EINVAL;
    *out = NULL;
    if (!pool)
        return GS_EINVAL;
    gs_prefix_cache *pc = calloc(1, sizeof *pc);
    if (!pc)
        return GS_ENOMEM;
    pc->pool = pool;
    pc->n_pages = gs_kv_pool_n_pages(pool);
    uint32_t nb = 16;
    while (nb < (uint32_t)pc->n_pages && nb < (1u << 30))
        nb <<= 1;
    pc->mask = nb - 1;
    size_t n = (size_t)pc->n_pages;
    pc->key = malloc(n * sizeof *pc->key);
    pc->hashed = calloc(n, 1);
    pc->chain = malloc(n * sizeof *pc->chain);
    pc->bucket = malloc((size_t)nb * sizeof *pc->bucket);
    if (!pc->key || !pc->hashed || !pc->chain || !pc->bucket) {
        free(pc->key);
        free(pc->hashed);
        free(pc->chain);
        free(pc->bucket);
        free(pc);
        return GS_ENOMEM;
    }
    memset(pc->bucket, 0xff, (size_t)nb * sizeof *pc->bucket);
    gs_kv_pool_set_reuse_hook(pool, reuse_hook, pc);
    *out = pc;
    return 0;
}

void gs_prefix_cache_free(gs_prefix_cache *pc)
{
    if (!pc)
        return;
    gs_kv_pool_set_reuse_hook(pc->pool, NULL, NULL);
    free(pc->key);
    free(pc->hashed);
    free(pc->chain);
    free(pc->bucket);
    free(pc);
}

static int32_t find(const gs_prefix_cache *pc, const gs_prefix_key *k)
{
    for (int32_t p = pc->bucket[bucket_of(pc, k)]; p >= 0; p = pc->chain[p])
        if (memcmp(pc->key[p].b, k->b, sizeof k->b) == 0)
            return p;
    return -1;
}

int32_t gs_prefix_cache_lookup(const gs_prefix_cache *pc, const gs_prefix_key *keys, int32_t n,
                               int32_t *pages)
{
    int32_t h = 0;
    for (; h < n; h++) {
        int32_t p = find(pc, &keys[h]);
        if (p < 0)
            break;
        pages[h] = p;
    }
    return h;
}

int gs_prefix_cache_insert(gs_prefix_cache *pc, const gs_prefix_key *key, int32_t page)
{
    if (!key || page <= 0 || page >= pc->n_pages)
        return GS_EINVAL;
    if (pc->hashed[page] || find(pc, key) >= 0)
        return 0;
    uint32_t b = bucket_of(pc, key);
    pc->key[page] = *key;
    pc->hashed[page] = 1;
    pc->chain[page] = pc->bucket[b];
    pc->bucket[b] = page;
    pc->n_cached++;
    return 1;
}

int gs_prefix_cache_has_page(const gs_prefix_cache *pc, int32_t page)
{
    return page > 0 && page < pc->n_pages && pc->hashed[page];
}

void gs_prefix_cache_drop_page(gs_prefix_cache *pc, int32_t page)
{
    if (!gs_prefix_cache_has_page(pc, page))
        return;
    int32_t *link = &pc->bucket[bucket_of(pc, &pc->key[page])];
    while (*link >= 0 && *link != page)
        link = &pc->chain[*link];
    if (*link == page)
        *link = pc->chain[page];
    pc->hashed[page] = 0;
    pc->n_cached--;
}

void gs_prefix_cache_clear(gs_prefix_cache *pc)
{
    memset(pc->bucket, 0xff, (size_t)(pc->mask + 1) * sizeof *pc->bucket);
    memset(pc->hashed, 0, (size_t)pc->n_pages);
    pc->n_cached = 0;
}

int32_t gs_prefix_cache_n_cached(const gs_prefix_cache *pc)
{
    return pc->n_cached;
}

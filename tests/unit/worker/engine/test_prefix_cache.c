/* test_prefix_cache.c - chain keys, lookup, eviction through the pool. */
#include <openssl/evp.h>

#include "test.h"
#include "worker/engine/prefix_cache.h"

static int key_eq(const gs_prefix_key *a, const gs_prefix_key *b)
{
    return memcmp(a->b, b->b, sizeof a->b) == 0;
}

static void test_key_reference(void)
{
    /* The key is SHA-256 over the documented little-endian layout: check
     * one against an independent digest of those bytes. */
    gs_prefix_key root, k;
    gs_prefix_root_key(0, &root);
    int32_t toks[3] = {7, 0x01020304, 9};
    GS_ASSERT_OK(gs_prefix_page_key(&root, toks, 0, 3, NULL, 0, &k));
    uint8_t buf[32 + 4 + 12] = {0};
    memcpy(buf, root.b, 32);
    buf[32] = 3;
    buf[36] = 7;
    buf[40] = 4, buf[41] = 3, buf[42] = 2, buf[43] = 1;
    buf[44] = 9;
    uint8_t md[32];
    unsigned int len = 0;
    GS_ASSERT(EVP_Digest(buf, sizeof buf, md, &len, EVP_sha256(), NULL) == 1);
    GS_ASSERT(memcmp(md, k.b, 32) == 0);
}

static void test_key_inputs(void)
{
    gs_prefix_key root, salted, a, b;
    gs_prefix_root_key(0, &root);
    gs_prefix_root_key(42, &salted);
    GS_ASSERT(!key_eq(&root, &salted));
    int32_t t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    GS_ASSERT_OK(gs_prefix_page_key(&root, t, 0, 4, NULL, 0, &a));
    GS_ASSERT_OK(gs_prefix_page_key(&root, t, 0, 4, NULL, 0, &b));
    GS_ASSERT(key_eq(&a, &b)); /* deterministic */
    GS_ASSERT_OK(gs_prefix_page_key(&salted, t, 0, 4, NULL, 0, &b));
    GS_ASSERT(!key_eq(&a, &b)); /* parent */
    GS_ASSERT_OK(gs_prefix_page_key(&root, t + 1, 0, 4, NULL, 0, &b));
    GS_ASSERT(!key_eq(&a, &b)); /* tokens */
    GS_ASSERT_OK(gs_prefix_page_key(&root, t, 0, 3, NULL, 0, &b));
    GS_ASSERT(!key_eq(&a, &b)); /* length */

    /* Images: only those overlapping the page count; hash, grid and offset
     * all matter. */
    gs_prefix_image im = {.start = 2, .len = 4, .grid = {1, 4, 4}};
    memset(im.hash, 0xab, sizeof im.hash);
    gs_prefix_key i1, i2;
    GS_ASSERT_OK(gs_prefix_page_key(&root, t, 0, 4, &im, 1, &i1));
    GS_ASSERT(!key_eq(&a, &i1));
    gs_prefix_image im2 = im;
    im2.hash[31] ^= 1;
    GS_ASSERT_OK(gs_prefix_page_key(&root, t, 0, 4, &im2, 1, &i2));
    GS_ASSERT(!key_eq(&i1, &i2));
    im2 = im;
    im2.grid[2] = 8;
    GS_ASSERT_OK(gs_prefix_page_key(&root, t, 0, 4, &im2, 1, &i2));
    GS_ASSERT(!key_eq(&i1, &i2));
    im2 = im;
    im2.start = 1; /* same page tokens, the image starts one earlier */
    GS_ASSERT_OK(gs_prefix_page_key(&root, t, 0, 4, &im2, 1, &i2));
    GS_ASSERT(!key_eq(&i1, &i2));
    im2 = im;
    im2.start = 4; /* outside tokens [0, 4) */
    GS_ASSERT_OK(gs_prefix_page_key(&root, t, 0, 4, &im2, 1, &i2));
    GS_ASSERT(key_eq(&a, &i2));

    /* Malformed arguments. */
    GS_ASSERT_EQ(gs_prefix_page_key(NULL, t, 0, 4, NULL, 0, &b), GS_EINVAL);
    GS_ASSERT_EQ(gs_prefix_page_key(&root, t, 0, 0, NULL, 0, &b), GS_EINVAL);
    GS_ASSERT_EQ(gs_prefix_page_key(&root, NULL, 0, 4, NULL, 0, &b), GS_EINVAL);
    GS_ASSERT_EQ(gs_prefix_page_key(&root, t, -1, 4, NULL, 0, &b), GS_EINVAL);
    GS_ASSERT_EQ(gs_prefix_page_key(&root, t, 0, 4, NULL, 2, &b), GS_EINVAL);
}

static void make_chain(gs_prefix_key *keys, int n, int32_t first_tok)
{
    gs_prefix_key root;
    gs_prefix_root_key(0, &root);
    for (int i = 0; i < n; i++) {
        int32_t t[4] = {first_tok + 4 * i, first_tok + 4 * i + 1, 2, 3};
        gs_prefix_page_key(i ? &keys[i - 1] : &root, t, 4 * i, 4, NULL, 0, &keys[i]);
    }
}

static void test_lookup_insert_evict(void)
{
    gs_kv_pool *pool;
    gs_kv_pool_params prm = {6};
    GS_ASSERT_OK(gs_kv_pool_new(&prm, &pool));
    gs_prefix_cache *pc;
    GS_ASSERT_OK(gs_prefix_cache_new(pool, &pc));
    gs_prefix_key k[4], other[2];
    make_chain(k, 4, 100);
    make_chain(other, 2, 500);

    int32_t pages[5], ids[5];
    GS_ASSERT_EQ(gs_prefix_cache_lookup(pc, k, 4, pages), 0);
    GS_ASSERT_OK(gs_kv_pool_alloc(pool, 3, ids)); /* 1, 2, 3 */
    GS_ASSERT_EQ(gs_prefix_cache_insert(pc, &k[0], ids[0]), 1);
    GS_ASSERT_EQ(gs_prefix_cache_insert(pc, &k[1], ids[1]), 1);
    GS_ASSERT_EQ(gs_prefix_cache_insert(pc, &other[0], ids[2]), 1);
    GS_ASSERT_EQ(gs_prefix_cache_n_cached(pc), 3);
    /* Duplicates are not kept: the key is cached, or the page has a key. */
    GS_ASSERT_EQ(gs_prefix_cache_insert(pc, &k[0], ids[2]), 0);
    GS_ASSERT_EQ(gs_prefix_cache_insert(pc, &k[2], ids[0]), 0);
    GS_ASSERT_EQ(gs_prefix_cache_insert(pc, &k[2], 0), GS_EINVAL);
    GS_ASSERT_EQ(gs_prefix_cache_insert(pc, &k[2], 6), GS_EINVAL);

    GS_ASSERT_EQ(gs_prefix_cache_lookup(pc, k, 4, pages), 2);
    GS_ASSERT_EQ(pages[0], 1);
    GS_ASSERT_EQ(pages[1], 2);
    GS_ASSERT_EQ(gs_prefix_cache_lookup(pc, other, 2, pages), 1);
    GS_ASSERT_EQ(pages[0], 3);

    /* Released pages stay cached on the free list: 4 5 | 2 1 3. */
    GS_ASSERT_OK(gs_kv_pool_unref(pool, 2));
    GS_ASSERT_OK(gs_kv_pool_unref(pool, 1));
    GS_ASSERT_OK(gs_kv_pool_unref(pool, 3));
    GS_ASSERT_EQ(gs_prefix_cache_lookup(pc, k, 4, pages), 2);
    /* Reuse evicts in LRU order: 4, 5 carry no key, then 2 loses k[1]. */
    GS_ASSERT_OK(gs_kv_pool_alloc(pool, 3, ids));
    GS_ASSERT_EQ(ids[2], 2);
    GS_ASSERT(!gs_prefix_cache_has_page(pc, 2));
    GS_ASSERT(gs_prefix_cache_has_page(pc, 1));
    GS_ASSERT_EQ(gs_prefix_cache_n_cached(pc), 2);
    GS_ASSERT_EQ(gs_prefix_cache_lookup(pc, k, 4, pages), 1);
    /* The freed key can be cached again, on another page. */
    GS_ASSERT_EQ(gs_prefix_cache_insert(pc, &k[1], ids[0]), 1);
    GS_ASSERT_EQ(gs_prefix_cache_lookup(pc, k, 4, pages), 2);
    GS_ASSERT_EQ(pages[1], ids[0]);

    gs_prefix_cache_drop_page(pc, 1);
    gs_prefix_cache_drop_page(pc, 1); /* no-op */
    GS_ASSERT_EQ(gs_prefix_cache_lookup(pc, k, 4, pages), 0);
    gs_prefix_cache_clear(pc);
    GS_ASSERT_EQ(gs_prefix_cache_n_cached(pc), 0);
    GS_ASSERT_EQ(gs_prefix_cache_lookup(pc, other, 2, pages), 0);
    gs_prefix_cache_free(pc);
    /* The hook is gone: allocation works without the cache. */
    GS_ASSERT_OK(gs_kv_pool_alloc(pool, 2, ids));
    gs_kv_pool_free(pool);
    gs_prefix_cache_free(NULL);
    GS_ASSERT_EQ(gs_prefix_cache_new(NULL, &pc), GS_EINVAL);
}

/* Many keys in few buckets: chains are walked and unlinked correctly. */
static void test_many_keys(void)
{
    gs_kv_pool *pool;
    gs_kv_pool_params prm = {300};
    GS_ASSERT_OK(gs_kv_pool_new(&prm, &pool));
    gs_prefix_cache *pc;
    GS_ASSERT_OK(gs_prefix_cache_new(pool, &pc));
    static gs_prefix_key k[299];
    make_chain(k, 299, 1);
    int32_t ids[299], pages[299];
    GS_ASSERT_OK(gs_kv_pool_alloc(pool, 299, ids));
    for (int i = 0; i < 299; i++)
        GS_ASSERT_EQ(gs_prefix_cache_insert(pc, &k[i], ids[i]), 1);
    GS_ASSERT_EQ(gs_prefix_cache_lookup(pc, k, 299, pages), 299);
    for (int i = 0; i < 299; i += 2)
        gs_prefix_cache_drop_page(pc, ids[i]);
    for (int i = 0; i < 299; i++)
        GS_ASSERT_EQ(gs_prefix_cache_has_page(pc, ids[i]), i % 2);
    GS_ASSERT_EQ(gs_prefix_cache_lookup(pc, k + 1, 1, pages), 1);
    GS_ASSERT_EQ(pages[0], ids[1]);
    GS_ASSERT_EQ(gs_prefix_cache_n_cached(pc), 149);
    gs_prefix_cache_free(pc);
    gs_kv_pool_free(pool);
}

int main(void)
{
    GS_RUN(test_key_reference);
    GS_RUN(test_key_inputs);
    GS_RUN(test_lookup_insert_evict);
    GS_RUN(test_many_keys);
    return gs_test_summary();
}

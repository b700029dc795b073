/* test_emb_cache.c - encoder-output cache: keys, refcounts, LRU eviction
 * under the byte budget, duplicate inserts. */
#include "test.h"
#include "worker/engine/emb_cache.h"

static int g_freed[16], g_n_freed;
static void on_free(void *user, void *emb)
{
    (void)user;
    if (g_n_freed < 16)
        g_freed[g_n_freed++] = *(int *)emb;
    free(emb);
}

static void *emb_of(int v)
{
    int *p = malloc(sizeof *p);
    *p = v;
    return p;
}

static void key_of(int v, gs_emb_key *k)
{
    uint8_t h[32] = {0};
    h[0] = (uint8_t)v;
    int32_t g[3] = {1, 4, 4};
    gs_emb_key_make(h, g, 0, k);
}

static void test_keys(void)
{
    uint8_t h[32] = {0};
    int32_t g[3] = {1, 4, 4}, g2[3] = {1, 4, 6};
    gs_emb_key a, b;
    gs_emb_key_make(h, g, 0, &a);
    gs_emb_key_make(h, g, 0, &b);
    GS_ASSERT(memcmp(&a, &b, sizeof a) == 0);
    gs_emb_key_make(h, g2, 0, &b);
    GS_ASSERT(memcmp(&a, &b, sizeof a) != 0);
    gs_emb_key_make(h, g, 1ull << 40, &b);
    GS_ASSERT(memcmp(&a, &b, sizeof a) != 0);
    h[31] = 1;
    gs_emb_key_make(h, g, 0, &b);
    GS_ASSERT(memcmp(&a, &b, sizeof a) != 0);
}

static void test_refs_and_lru(void)
{
    gs_emb_cache *c;
    GS_ASSERT_OK(gs_emb_cache_new(25, on_free, NULL, &c)); /* two unreferenced 10-byte entries */
    gs_emb_key k[5];
    for (int i = 0; i < 5; i++)
        key_of(i + 1, &k[i]);
    g_n_freed = 0;
    GS_ASSERT(gs_emb_cache_get(c, &k[0]) == NULL);
    for (int i = 0; i < 4; i++)
        GS_ASSERT(gs_emb_cache_put(c, &k[i], emb_of(i + 1), 10) != NULL);
    /* All referenced: nothing can go, whatever the budget. */
    gs_emb_cache_stats st;
    gs_emb_cache_get_stats(c, &st);
    GS_ASSERT_EQ(st.n_entries, 4);
    GS_ASSERT_EQ(st.n_referenced, 4);
    GS_ASSERT_EQ(g_n_freed, 0);
    /* Released in the order 3, 1, 2: unreferenced LRU order 3 1 2; the
     * third release exceeds 25 bytes and evicts 3. */
    gs_emb_cache_release(c, &k[2]);
    gs_emb_cache_release(c, &k[0]);
    GS_ASSERT_EQ(g_n_freed, 0);
    gs_emb_cache_release(c, &k[1]);
    GS_ASSERT_EQ(g_n_freed, 1);
    GS_ASSERT_EQ(g_freed[0], 3);
    /* A hit takes a reference; 1 is used again, so 2 is the LRU one. */
    void *e1 = gs_emb_cache_get(c, &k[0]);
    GS_ASSERT(e1 && *(int *)e1 == 1);
    gs_emb_cache_release(c, &k[0]);
    gs_emb_cache_release(c, &k[3]); /* 4 unreferenced: 2 goes */
    GS_ASSERT_EQ(g_n_freed, 2);
    GS_ASSERT_EQ(g_freed[1], 2);
    /* A duplicate put frees the new copy and shares the cached one. */
    void *dup = gs_emb_cache_put(c, &k[0], emb_of(99), 10);
    GS_ASSERT(dup == e1);
    GS_ASSERT_EQ(g_freed[2], 99);
    gs_emb_cache_get_stats(c, &st);
    GS_ASSERT_EQ(st.n_entries, 2);
    GS_ASSERT_EQ(st.n_referenced, 1);
    GS_ASSERT_EQ(st.unreferenced_bytes, 10);
    GS_ASSERT_EQ(st.hits, 1);
    GS_ASSERT_EQ(st.misses, 1);
    GS_ASSERT_EQ(st.evictions, 2);
    gs_emb_cache_release(c, &k[0]);
    gs_emb_cache_release(c, &k[0]); /* over-release: ignored */
    gs_emb_cache_release(c, &k[4]); /* unknown: ignored */
    gs_emb_cache_trim(c);
    gs_emb_cache_get_stats(c, &st);
    GS_ASSERT_EQ(st.n_entries, 0);
    GS_ASSERT_EQ(st.bytes, 0);
    gs_emb_cache_free(c);
    gs_emb_cache_free(NULL);
    GS_ASSERT_EQ(gs_emb_cache_new(10, NULL, NULL, &c), GS_EINVAL);
}

int main(void)
{
    GS_RUN(test_keys);
    GS_RUN(test_refs_and_lru);
    return gs_test_summary();
}

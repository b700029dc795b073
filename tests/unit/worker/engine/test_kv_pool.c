/* test_kv_pool.c - page ids, refcounts, LRU free-list order (exact ids). */
#include "test.h"
#include "worker/engine/kv_pool.h"

/* Asserts the free list equals want[0..n). */
#define ASSERT_FREE_LIST(pool, ...)                                                                \
    do {                                                                                           \
        const int32_t want_[] = {__VA_ARGS__};                                                     \
        int32_t got_[64];                                                                          \
        int32_t n_ = gs_kv_pool_free_list(pool, got_, 64);                                         \
        GS_ASSERT_EQ(n_, (int32_t)(sizeof want_ / sizeof want_[0]));                               \
        for (int32_t i_ = 0; i_ < n_; i_++)                                                        \
            GS_ASSERT_MSG(got_[i_] == want_[i_], "free list[%d] = %d, want %d", i_, got_[i_],      \
                          want_[i_]);                                                              \
        GS_ASSERT_OK(gs_kv_pool_check(pool));                                                      \
    } while (0)

static int32_t g_reused[16], g_n_reused;
static void on_reuse(void *user, int32_t page)
{
    (void)user;
    if (g_n_reused < 16)
        g_reused[g_n_reused++] = page;
}

static void test_lru_order(void)
{
    gs_kv_pool *p;
    gs_kv_pool_params prm = {5};
    GS_ASSERT_OK(gs_kv_pool_new(&prm, &p));
    GS_ASSERT_EQ(gs_kv_pool_n_pages(p), 5);
    GS_ASSERT_EQ(gs_kv_pool_n_free(p), 4);
    ASSERT_FREE_LIST(p, 1, 2, 3, 4);
    g_n_reused = 0;
    gs_kv_pool_set_reuse_hook(p, on_reuse, NULL);

    int32_t ids[4];
    GS_ASSERT_OK(gs_kv_pool_alloc(p, 2, ids));
    GS_ASSERT_EQ(ids[0], 1);
    GS_ASSERT_EQ(ids[1], 2);
    GS_ASSERT_EQ(gs_kv_pool_refcount(p, 1), 1);
    ASSERT_FREE_LIST(p, 3, 4);
    GS_ASSERT_EQ(g_n_reused, 2);

    /* Not enough: nothing is taken. */
    GS_ASSERT_EQ(gs_kv_pool_alloc(p, 3, ids), GS_EAGAIN);
    ASSERT_FREE_LIST(p, 3, 4);

    /* A reference to a free page takes it off the list (from the tail). */
    GS_ASSERT_OK(gs_kv_pool_ref(p, 4));
    ASSERT_FREE_LIST(p, 3);
    GS_ASSERT_OK(gs_kv_pool_ref(p, 1));
    GS_ASSERT_EQ(gs_kv_pool_refcount(p, 1), 2);

    /* Unref to 0 appends at the tail (most recently used). */
    GS_ASSERT_OK(gs_kv_pool_unref(p, 2));
    ASSERT_FREE_LIST(p, 3, 2);
    GS_ASSERT_OK(gs_kv_pool_unref(p, 1));
    ASSERT_FREE_LIST(p, 3, 2); /* still referenced once */
    GS_ASSERT_OK(gs_kv_pool_unref(p, 1));
    GS_ASSERT_OK(gs_kv_pool_unref(p, 4));
    ASSERT_FREE_LIST(p, 3, 2, 1, 4);

    /* Ref from the middle, O(1), and back to the tail. */
    GS_ASSERT_OK(gs_kv_pool_ref(p, 2));
    ASSERT_FREE_LIST(p, 3, 1, 4);
    GS_ASSERT_OK(gs_kv_pool_unref(p, 2));
    ASSERT_FREE_LIST(p, 3, 1, 4, 2);

    g_n_reused = 0;
    GS_ASSERT_OK(gs_kv_pool_alloc(p, 3, ids));
    GS_ASSERT_EQ(ids[0], 3);
    GS_ASSERT_EQ(ids[1], 1);
    GS_ASSERT_EQ(ids[2], 4);
    GS_ASSERT_EQ(g_n_reused, 3);
    GS_ASSERT_EQ(g_reused[1], 1);
    ASSERT_FREE_LIST(p, 2);
    gs_kv_pool_free(p);
}

static void test_null_page_and_bad_input(void)
{
    gs_kv_pool *p = NULL;
    gs_kv_pool_params bad = {1};
    GS_ASSERT_EQ(gs_kv_pool_new(&bad, &p), GS_EINVAL);
    GS_ASSERT(p == NULL);
    bad.n_pages = -3;
    GS_ASSERT_EQ(gs_kv_pool_new(&bad, &p), GS_EINVAL);
    GS_ASSERT_EQ(gs_kv_pool_new(NULL, &p), GS_EINVAL);
    GS_ASSERT_EQ(gs_kv_pool_new(&bad, NULL), GS_EINVAL);

    gs_kv_pool_params prm = {3};
    GS_ASSERT_OK(gs_kv_pool_new(&prm, &p));
    /* Page 0 is never handed out and never counted. */
    int32_t ids[2];
    GS_ASSERT_OK(gs_kv_pool_alloc(p, 2, ids));
    GS_ASSERT(ids[0] != 0 && ids[1] != 0);
    GS_ASSERT_EQ(gs_kv_pool_alloc(p, 1, ids), GS_EAGAIN);
    GS_ASSERT_OK(gs_kv_pool_ref(p, 0));
    GS_ASSERT_OK(gs_kv_pool_unref(p, 0));
    GS_ASSERT_EQ(gs_kv_pool_refcount(p, 0), 0);
    /* Bad ids and over-release. */
    GS_ASSERT_EQ(gs_kv_pool_ref(p, 3), GS_EINVAL);
    GS_ASSERT_EQ(gs_kv_pool_ref(p, -1), GS_EINVAL);
    GS_ASSERT_EQ(gs_kv_pool_unref(p, 99), GS_EINVAL);
    GS_ASSERT_EQ(gs_kv_pool_refcount(p, 7), -1);
    GS_ASSERT_OK(gs_kv_pool_unref(p, ids[0]));
    GS_ASSERT_EQ(gs_kv_pool_unref(p, ids[0]), GS_EINVAL);
    GS_ASSERT_EQ(gs_kv_pool_alloc(p, -1, ids), GS_EINVAL);
    GS_ASSERT_OK(gs_kv_pool_alloc(p, 0, NULL));
    GS_ASSERT_OK(gs_kv_pool_check(p));
    gs_kv_pool_free(p);
    gs_kv_pool_free(NULL);
}

static void test_pages_for_bytes(void)
{
    GS_ASSERT_EQ(gs_kv_pool_pages_for_bytes(1000, 100, 0), 10);
    GS_ASSERT_EQ(gs_kv_pool_pages_for_bytes(1099, 100, 0), 10);
    GS_ASSERT_EQ(gs_kv_pool_pages_for_bytes(1000, 100, 4), 4);
    GS_ASSERT_EQ(gs_kv_pool_pages_for_bytes(199, 100, 0), 0); /* one page is not enough */
    GS_ASSERT_EQ(gs_kv_pool_pages_for_bytes(1000, 0, 0), 0);
    GS_ASSERT(gs_kv_pool_pages_for_bytes((size_t)-1, 1, 0) > 0);
}

int main(void)
{
    GS_RUN(test_lru_order);
    GS_RUN(test_null_page_and_bad_input);
    GS_RUN(test_pages_for_bytes);
    return gs_test_summary();
}

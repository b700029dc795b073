/* test_block_table.c - growth, copy-on-write of shared pages, release order. */
#include "test.h"
#include "worker/engine/block_table.h"

#define ASSERT_PAGES(bt, ...)                                                                      \
    do {                                                                                           \
        const int32_t want_[] = {__VA_ARGS__};                                                     \
        int32_t n_ = (int32_t)(sizeof want_ / sizeof want_[0]);                                    \
        GS_ASSERT_EQ(gs_block_table_len(bt), n_);                                                  \
        for (int32_t i_ = 0; i_ < n_; i_++)                                                        \
            GS_ASSERT_MSG(gs_block_table_pages(bt)[i_] == want_[i_], "pages[%d] = %d, want %d",    \
                          i_, gs_block_table_pages(bt)[i_], want_[i_]);                            \
    } while (0)

static void test_grow_and_cow(void)
{
    gs_kv_pool *pool;
    gs_kv_pool_params prm = {8};
    GS_ASSERT_OK(gs_kv_pool_new(&prm, &pool));
    gs_block_table *a, *b;
    GS_ASSERT_OK(gs_block_table_new(&a));
    GS_ASSERT_OK(gs_block_table_new(&b));
    gs_page_copy cp[4];
    int32_t nc = 0;

    /* page_size 4: 6 tokens take 2 pages, a 7th none, the 9th a third. */
    GS_ASSERT_EQ(gs_block_table_grow_need(a, pool, 0, 6, 4), 2);
    GS_ASSERT_OK(gs_block_table_grow(a, pool, 0, 6, 4, cp, &nc));
    ASSERT_PAGES(a, 1, 2);
    GS_ASSERT_OK(gs_block_table_grow(a, pool, 6, 7, 4, cp, &nc));
    ASSERT_PAGES(a, 1, 2);
    GS_ASSERT_EQ(nc, 0);

    /* b shares a's two pages (as after a prefix-cache hit). */
    int32_t shared[2] = {1, 2};
    GS_ASSERT_OK(gs_kv_pool_ref(pool, 1));
    GS_ASSERT_OK(gs_kv_pool_ref(pool, 2));
    GS_ASSERT_OK(gs_block_table_append(b, shared, 2));
    GS_ASSERT_EQ(gs_kv_pool_refcount(pool, 2), 2);

    /* b writes at 7 (page 1, shared) up to 10: one copy + one new page. */
    GS_ASSERT_EQ(gs_block_table_grow_need(b, pool, 7, 10, 4), 2);
    GS_ASSERT_OK(gs_block_table_grow(b, pool, 7, 10, 4, cp, &nc));
    GS_ASSERT_EQ(nc, 1);
    GS_ASSERT_EQ(cp[0].src, 2);
    GS_ASSERT_EQ(cp[0].dst, 3);
    ASSERT_PAGES(b, 1, 3, 4);
    GS_ASSERT_EQ(gs_kv_pool_refcount(pool, 2), 1);
    GS_ASSERT_EQ(gs_kv_pool_refcount(pool, 1), 2); /* page 0 is not written */

    /* Forced copy of an unshared page. */
    GS_ASSERT_OK(gs_block_table_cow(a, pool, 1, &cp[1]));
    GS_ASSERT_EQ(cp[1].src, 2);
    GS_ASSERT_EQ(cp[1].dst, 5);
    ASSERT_PAGES(a, 1, 5);
    GS_ASSERT_EQ(gs_kv_pool_refcount(pool, 2), 0);
    GS_ASSERT_EQ(gs_block_table_cow(a, pool, 2, &cp[1]), GS_EINVAL);
    GS_ASSERT_EQ(gs_block_table_cow(a, pool, -1, &cp[1]), GS_EINVAL);

    /* Too few pages: nothing changes. Free: 6 7 2. */
    GS_ASSERT_EQ(gs_kv_pool_n_free(pool), 3);
    nc = 0;
    GS_ASSERT_EQ(gs_block_table_grow(a, pool, 7, 4 * 6, 4, cp, &nc), GS_EAGAIN);
    ASSERT_PAGES(a, 1, 5);
    GS_ASSERT_EQ(nc, 0);

    /* Release, last page first: b gives 4, 3 (1 is still a's); then a
     * gives 5, 1. */
    gs_block_table_release(b, pool);
    GS_ASSERT_EQ(gs_block_table_len(b), 0);
    gs_block_table_release(a, pool);
    int32_t fl[8];
    GS_ASSERT_EQ(gs_kv_pool_free_list(pool, fl, 8), 7);
    const int32_t want[7] = {6, 7, 2, 4, 3, 5, 1};
    for (int i = 0; i < 7; i++)
        GS_ASSERT_EQ(fl[i], want[i]);
    GS_ASSERT_OK(gs_kv_pool_check(pool));

    GS_ASSERT_EQ(gs_block_table_append(a, NULL, 1), GS_EINVAL);
    GS_ASSERT_EQ(gs_block_table_append(a, shared, -1), GS_EINVAL);
    GS_ASSERT_EQ(gs_block_table_grow(a, pool, 0, 4, 0, cp, &nc), GS_EINVAL);
    gs_block_table_free(a);
    gs_block_table_free(b);
    gs_block_table_free(NULL);
    gs_kv_pool_free(pool);
}

int main(void)
{
    GS_RUN(test_grow_and_cow);
    return gs_test_summary();
}

/* test_dispatch_policy.c - the least-loaded worker choice, pinned. */
#include <string.h>

#include "gateway/dispatch_policy.h"
#include "test.h"

static gs_worker_load up(int32_t running, int32_t waiting, int32_t free_pages)
{
    gs_worker_load w;
    memset(&w, 0, sizeof w);
    w.up = 1;
    w.n_running = running;
    w.n_waiting = waiting;
    w.max_queue = 8;
    w.n_free_pages = free_pages;
    return w;
}

static void test_least_loaded_wins(void)
{
    gs_worker_load w[3] = {up(4, 0, 100), up(2, 0, 100), up(3, 0, 100)};
    GS_ASSERT_EQ(gs_dispatch_pick(w, 3), 1);
    w[1].sent_since_heartbeat = 2; /* jobs sent since its heartbeat count too */
    GS_ASSERT_EQ(gs_dispatch_pick(w, 3), 2);
    w[2].n_queued = 5; /* prepared-not-running jobs count: 0 and 1 tie at 4, 0 first */
    GS_ASSERT_EQ(gs_dispatch_pick(w, 3), 0);
}

static void test_ties_go_to_free_pages_then_index(void)
{
    gs_worker_load w[3] = {up(1, 0, 10), up(1, 0, 30), up(1, 0, 30)};
    GS_ASSERT_EQ(gs_dispatch_pick(w, 3), 1);
    w[1].n_free_pages = 10;
    GS_ASSERT_EQ(gs_dispatch_pick(w, 3), 2);
    w[2].n_free_pages = 10;
    GS_ASSERT_EQ(gs_dispatch_pick(w, 3), 0);
}

static void test_skips_down_draining_excluded_and_full(void)
{
    gs_worker_load w[4] = {up(0, 0, 1), up(0, 0, 1), up(0, 0, 1), up(9, 0, 1)};
    w[0].up = 0;
    w[1].draining = 1;
    w[2].excluded = 1;
    GS_ASSERT_EQ(gs_dispatch_pick(w, 4), 3);
    w[3].n_waiting = 5;
    w[3].n_queued = 3; /* backlog 8 = max_queue: it would refuse */
    GS_ASSERT_EQ(gs_dispatch_pick(w, 4), -1);
    w[3].max_queue = 0; /* no bound stated: never counted full */
    GS_ASSERT_EQ(gs_dispatch_pick(w, 4), 3);
    GS_ASSERT_EQ(gs_dispatch_pick(w, 0), -1);
}

int main(void)
{
    GS_RUN(test_least_loaded_wins);
    GS_RUN(test_ties_go_to_free_pages_then_index);
    GS_RUN(test_skips_down_draining_excluded_and_full);
    return gs_test_summary();
}

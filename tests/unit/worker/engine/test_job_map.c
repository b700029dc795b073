/* test_job_map.c - the engine's id -> job map (job_map.h) against a plain
 * array under random puts and deletes (backward-shift deletion must keep
 * every key findable), and the intrusive list of common/queue.h. */
#include "common/queue.h"
#include "test.h"
#include "worker/engine/job_map.h"

static uint64_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static void test_map_random(void)
{
    enum { K = 2000 };
    static int present[K + 1];
    static int vals[K + 1];
    gs_job_map m = {0};
    uint64_t s = 1;
    int n = 0;
    for (int op = 0; op < 200000; op++) {
        int64_t id = 1 + (int64_t)(rnd(&s) % K);
        if (rnd(&s) % 2) {
            int rc = gs_job_map_put(&m, id, &vals[id]);
            GS_ASSERT_EQ(rc, present[id] ? GS_EINVAL : 0);
            if (!present[id])
                n++;
            present[id] = 1;
        } else {
            void *v = gs_job_map_del(&m, id);
            GS_ASSERT(v == (present[id] ? (void *)&vals[id] : NULL));
            if (present[id])
                n--;
            present[id] = 0;
        }
        if (op % 10000 == 0) {
            for (int64_t k = 1; k <= K; k++)
                GS_ASSERT(gs_job_map_get(&m, k) == (present[k] ? (void *)&vals[k] : NULL));
            GS_ASSERT_EQ(m.n, n);
        }
    }
    GS_ASSERT(gs_job_map_get(&m, 0) == NULL);
    GS_ASSERT(gs_job_map_get(&m, -5) == NULL);
    GS_ASSERT_EQ(gs_job_map_put(&m, 0, vals), GS_EINVAL);
    gs_job_map_clear(&m);
    GS_ASSERT(gs_job_map_get(&m, 1) == NULL);
    GS_ASSERT(gs_job_map_del(&m, 1) == NULL);
    gs_job_map_clear(NULL);
}

typedef struct {
    int v;
    gs_queue link;
} item;

static void test_queue(void)
{
    gs_queue h;
    gs_queue_init(&h);
    GS_ASSERT(gs_queue_empty(&h));
    item it[5] = {{0}};
    for (int i = 0; i < 5; i++) {
        it[i].v = i;
        GS_ASSERT(!gs_queue_linked(&it[i].link));
    }
    gs_queue_insert_tail(&h, &it[2].link);
    gs_queue_insert_tail(&h, &it[3].link);
    gs_queue_insert_head(&h, &it[1].link);
    gs_queue_insert_head(&h, &it[0].link);
    gs_queue_insert_tail(&h, &it[4].link);
    int want = 0;
    gs_queue *q;
    GS_QUEUE_FOREACH(q, &h)
    {
        GS_ASSERT_EQ(gs_queue_data(q, item, link)->v, want);
        want++;
    }
    GS_ASSERT_EQ(want, 5);
    gs_queue_remove(&it[2].link);
    GS_ASSERT(!gs_queue_linked(&it[2].link));
    GS_ASSERT_EQ(gs_queue_data(gs_queue_head(&h), item, link)->v, 0);
    GS_ASSERT_EQ(gs_queue_data(gs_queue_tail(&h), item, link)->v, 4);
    int n = 0;
    while (!gs_queue_empty(&h)) {
        gs_queue_remove(gs_queue_head(&h));
        n++;
    }
    GS_ASSERT_EQ(n, 4);
}

int main(void)
{
    GS_RUN(test_map_random);
    GS_RUN(test_queue);
    return gs_test_summary();
}

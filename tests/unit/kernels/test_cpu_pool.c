/* test_cpu_pool.c - the CPU backend's thread pool (gs_cpu_parallel): every
 * item of every job runs exactly once, with a thread id in range, for
 * thousands of back-to-back jobs of random sizes and grains; a job whose
 * last chunk is slow (the caller must wait, asleep, for the chunk, not for
 * threads) and more threads than cores (workers the OS has not run yet
 * must not hold a job up) both finish with every item done. */
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cpu/cpu_impl.h"
#include "kt.h"

typedef struct {
    atomic_int *hits; /* [n] times each item ran */
    int64_t n;
    int n_threads;
    atomic_int bad_tid;
    int64_t slow_item; /* this item sleeps (ms), -1: none */
    int slow_ms;
} job;

static void count(void *ctx, int64_t i0, int64_t i1, int tid)
{
    job *j = ctx;
    if (tid < 0 || tid >= j->n_threads)
        atomic_store(&j->bad_tid, 1);
    for (int64_t i = i0; i < i1; i++) {
        if (i == j->slow_item) {
            struct timespec ts = {0, (long)j->slow_ms * 1000000L};
            nanosleep(&ts, NULL);
        }
        atomic_fetch_add_explicit(&j->hits[i], 1, memory_order_relaxed);
    }
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int run(gs_cpu *c, int64_t n, int64_t grain, int64_t slow_item, int slow_ms)
{
    job j = {calloc((size_t)n, sizeof(atomic_int)), n, c->n_threads, 0, slow_item, slow_ms};
    if (!j.hits)
        return 0;
    gs_cpu_parallel(c, n, grain, count, &j);
    int ok = !atomic_load(&j.bad_tid);
    for (int64_t i = 0; i < n; i++)
        ok &= atomic_load(&j.hits[i]) == 1;
    free(j.hits);
    return ok;
}

static gs_backend *pool_backend(int threads)
{
    gs_backend_params p = {.kind = GS_BACKEND_CPU, .n_threads = threads};
    gs_backend *be = NULL;
    gs_diag d;
    if (gs_backend_new(&p, &be, &d) != 0) {
        fprintf(stderr, "backend: %s\n", d.msg);
        exit(1);
    }
    return be;
}

static void test_many_jobs(int threads)
{
    gs_backend *be = pool_backend(threads);
    gs_cpu *c = gs_cpu_of(be);
    int bad = 0;
    const int jobs = getenv("GS_TEST_EMULATED") ? 300 : 5000;
    for (int k = 0; k < jobs; k++) {
        int64_t n = 1 + (int64_t)(next_rand() % 3000);
        int64_t grain = 1 + (int64_t)(next_rand() % 64);
        bad += !run(c, n, grain, -1, 0);
    }
    GS_ASSERT_EQ(bad, 0);
    gs_backend_free(be);
}

static void test_slow_last_chunk(void)
{
    gs_backend *be = pool_backend(4);
    gs_cpu *c = gs_cpu_of(be);
    /* The caller outwaits its spin and yield phases and sleeps: the chunk
     * holding item 999 takes 30 ms. */
    for (int k = 0; k < 3; k++)
        GS_ASSERT(run(c, 1000, 10, 999, 30));
    /* ... and a slow first chunk, the rest quick. */
    GS_ASSERT(run(c, 1000, 10, 0, 20));
    gs_backend_free(be);
}

static void test_one_thread(void)
{
    test_many_jobs(1);
}

static void test_two_threads(void)
{
    test_many_jobs(2);
}

/* More threads than cores: some workers are not running when a job is
 * published. */
static void test_oversubscribed(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    test_many_jobs((int)(cores > 0 && cores < 32 ? cores * 4 : 8));
}

int main(void)
{
    GS_RUN(test_one_thread);
    GS_RUN(test_two_threads);
    GS_RUN(test_oversubscribed);
    GS_RUN(test_slow_last_chunk);
    return gs_test_summary();
}

/* backend.c - the CPU backend: thread pool, memory, weights, op table.
 *
 * Owns: the persistent worker threads (n_threads - 1 of them; the calling
 * thread is thread 0), each thread's scratch buffer, the weight storage
 * (BF16/F16 kept 16-bit unless weights_f32, F32 as is), the dummy-weight
 * generator, and the gs_backend_ops table that points at the op files.
 * Quantized weights are made in quant_weight.c, their matmul is in
 * matmul_q.c. Memory: every gs_buf_alloc and owned weight is counted, and
 * with gs_backend_params.mem_limit set, allocations past the cap fail
 * (thread scratch and borrowed mappings are not counted).
 * OpenBLAS runs single-threaded (see cpu_impl.h for why).
 *
 * Pool protocol: the caller retires the last job's sequence number
 * (so that no late claim can pair it with the new fields), writes the job
 * (fn, ctx, n, grain), publishes it under a new sequence number in one
 * atomic word, `work` (sequence << 32 | next item), and wakes sleeping
 * workers (only if some sleep). Every thread,
 * the caller too, claims chunks by compare-and-swap on `work`, which also
 * proves the job it read is still the current one, runs them and adds the
 * items to `done`. The caller returns when done == n: it waits for the
 * chunks, never for the threads, so a worker that the OS has not run yet
 * (a busy neighbour, more threads than free cores) costs nothing; it finds
 * the job taken and goes back to waiting. Waiting (workers for a job, the
 * caller for the last chunks) spins for a few microseconds, then yields
 * the core (sched_yield: a descheduled straggler or a neighbour gets it),
 * then sleeps on a condition variable: no spinning when the pool does not
 * own its cores. When ops keep waiting on a descheduled straggler, the
 * caller runs the next ops alone for 50 ms (no hand-offs while the cores
 * are taken), then tries the threads again.
 * Threading: one thread drives the backend at a time. */
#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/gemm_bf16.h"

#define GS_CPU_MAX_THREADS 512
#define SPIN_NS 4000u     /* pure spinning (pause), then ... */
#define YIELD_NS 60000u   /* ... sched_yield until this, then sleep (or idle_ns) */
#define STALL_NS 200000u  /* a wait this much beyond twice the caller's share: a stall */
#define STALLS_TO_SOLO 4  /* stalls (net of good ops) before running solo ... */
#define SOLO_NS 50000000u /* ... for this long */

struct gs_cpu_pool {
    int n; /* threads including the caller */
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t cv_go, cv_done;
    /* The current job: seq << 32 | next unclaimed item. Job fields are
     * written before it (release) and read after it (acquire); a claim's
     * CAS succeeding proves they belong to that seq. */
    atomic_uint_fast64_t work;
    _Atomic(gs_cpu_fn) fn;
    _Atomic(void *) ctx;
    atomic_int_fast64_t n_items, grain;
    atomic_int_fast64_t done; /* items finished in the current job */
    atomic_int n_sleeping;    /* workers in cv_go */
    atomic_int caller_waiting;
    atomic_int stop;
    uint64_t idle_ns; /* how long an idle worker waits actively before it sleeps */
    uint32_t seq;     /* the caller's */
    /* Contention (the caller's own): ops that waited far longer for a
     * straggler than their own share took, and until when ops run on the
     * calling thread alone because of them. */
    int stalls;
    uint64_t solo_until;
};

typedef struct {
    gs_cpu_pool *pool;
    int tid;
} worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* One round of waiting: 1 to keep waiting actively, 0 when it is time to
 * sleep (after yield_ns). *t0 is 0 on the first call. */
static int wait_round(uint64_t *t0, unsigned *iter, uint64_t yield_ns)
{
    if (++*iter & 63) {
        cpu_relax();
        return 1;
    }
    uint64_t now = gs_clock_now_ns();
    if (!*t0)
        *t0 = now;
    uint64_t dt = now - *t0;
    if (dt < SPIN_NS) {
        cpu_relax();
        return 1;
    }
    if (dt < yield_ns) {
        sched_yield();
        return 1;
    }
    return 0;
}

/* Claims and runs chunks of job `seq` while there are any. */
static void run_chunks(gs_cpu_pool *pool, uint32_t seq, int tid)
{
    uint_fast64_t w = atomic_load_explicit(&pool->work, memory_order_acquire);
    if ((uint32_t)(w >> 32) != seq)
        return;
    /* Acquire: a field of a later job, once seen, makes a claim on this
     * job's seq fail (the caller retired the seq before writing it). */
    gs_cpu_fn fn = atomic_load_explicit(&pool->fn, memory_order_acquire);
    void *ctx = atomic_load_explicit(&pool->ctx, memory_order_acquire);
    const int64_t n = atomic_load_explicit(&pool->n_items, memory_order_acquire);
    const int64_t g = atomic_load_explicit(&pool->grain, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(w >> 32) != seq)
            return;
        int64_t i0 = (int64_t)(uint32_t)w;
        if (i0 >= n)
            return;
        int64_t i1 = i0 + g < n ? i0 + g : n;
        uint_fast64_t next = ((uint_fast64_t)seq << 32) | (uint64_t)i1;
        if (!atomic_compare_exchange_weak_explicit(&pool->work, &w, next, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue; /* w reloaded */
        fn(ctx, i0, i1, tid);
        int64_t before =
            atomic_fetch_add(&pool->done, i1 - i0); /* seq_cst: pairs with caller_waiting */
        if (before + (i1 - i0) == n && atomic_load(&pool->caller_waiting)) {
            pthread_mutex_lock(&pool->mu);
            pthread_cond_broadcast(&pool->cv_done);
            pthread_mutex_unlock(&pool->mu);
        }
        w = atomic_load_explicit(&pool->work, memory_order_acquire);
    }
}

static void *worker_main(void *p)
{
    worker_arg *a = p;
    gs_cpu_pool *pool = a->pool;
    const int tid = a->tid;
    free(a);
    uint32_t seen = 0;
    for (;;) {
        uint64_t t0 = 0;
        unsigned iter = 0;
        uint32_t s;
        while ((s = (uint32_t)(atomic_load_explicit(&pool->work, memory_order_acquire) >> 32)) ==
               seen) {
            if (wait_round(&t0, &iter, pool->idle_ns))
                continue;
            pthread_mutex_lock(&pool->mu);
            atomic_fetch_add(&pool->n_sleeping, 1);
            while ((s = (uint32_t)(atomic_load(&pool->work) >> 32)) == seen)
                pthread_cond_wait(&pool->cv_go, &pool->mu);
            atomic_fetch_sub(&pool->n_sleeping, 1);
            pthread_mutex_unlock(&pool->mu);
            break;
        }
        seen = s;
        if (atomic_load(&pool->stop))
            return NULL;
        run_chunks(pool, s, tid);
    }
}

/* The caller's next sequence number (0 is the workers' start value). */
static uint32_t next_seq(gs_cpu_pool *pool)
{
    if (!++pool->seq)
        ++pool->seq;
    return pool->seq;
}

/* Publishes job seq (fields already stored) and wakes sleeping workers. */
static void publish(gs_cpu_pool *pool, uint32_t seq)
{
    atomic_store(&pool->work, (uint_fast64_t)seq << 32); /* seq_cst: pairs with n_sleeping */
    if (atomic_load(&pool->n_sleeping) > 0) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->cv_go);
        pthread_mutex_unlock(&pool->mu);
    }
}

static void pool_free(gs_cpu_pool *pool)
{
    if (!pool)
        return;
    atomic_store(&pool->stop, 1);
    atomic_store_explicit(&pool->n_items, 0, memory_order_relaxed);
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->work, (uint_fast64_t)++pool->seq << 32);
    pthread_cond_broadcast(&pool->cv_go);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 1; i < pool->n; i++)
        pthread_join(pool->th[i], NULL);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv_go);
    pthread_cond_destroy(&pool->cv_done);
    free(pool->th);
    free(pool);
}

static int pool_new(int n, uint64_t idle_ns, gs_cpu_pool **out)
{
    gs_cpu_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return GS_ENOMEM;
    pool->idle_ns = idle_ns > YIELD_NS ? idle_ns : YIELD_NS;
    pool->th = calloc((size_t)n, sizeof *pool->th);
    if (!pool->th) {
        free(pool);
        return GS_ENOMEM;
    }
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv_go, NULL);
    pthread_cond_init(&pool->cv_done, NULL);
    atomic_init(&pool->work, 0);
    atomic_init(&pool->fn, NULL);
    atomic_init(&pool->ctx, NULL);
    atomic_init(&pool->n_items, 0);
    atomic_init(&pool->grain, 1);
    atomic_init(&pool->done, 0);
    atomic_init(&pool->n_sleeping, 0);
    atomic_init(&pool->caller_waiting, 0);
    atomic_init(&pool->stop, 0);
    pool->n = 1;
    for (int i = 1; i < n; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (a) {
            a->pool = pool;
            a->tid = i;
        }
        if (!a || pthread_create(&pool->th[i], NULL, worker_main, a) != 0) {
            free(a);
            pool_free(pool);
            return GS_ENOMEM;
        }
        pool->n = i + 1;
    }
    *out = pool;
    return 0;
}

void gs_cpu_parallel(gs_cpu *c, int64_t n, int64_t grain, gs_cpu_fn fn, void *ctx)
{
    gs_cpu_pool *pool = c->pool;
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    if (n <= grain || pool->n == 1 || n >= (int64_t)UINT32_MAX) {
        fn(ctx, 0, n, 0);
        return;
    }
    const uint64_t t_start = gs_clock_now_ns();
    if (t_start < pool->solo_until) { /* the cores are not ours now: no hand-offs */
        fn(ctx, 0, n, 0);
        return;
    }
    /* Retire the last job's seq first: a worker that read its cursor long
     * ago and now reads the new fields must not claim with them under the
     * old seq (its CAS fails on the retired word). Then the fields, then
     * the job under a fresh seq. */
    atomic_store(&pool->work, (uint_fast64_t)next_seq(pool) << 32 | UINT32_MAX);
    atomic_store_explicit(&pool->fn, fn, memory_order_release);
    atomic_store_explicit(&pool->ctx, ctx, memory_order_release);
    atomic_store_explicit(&pool->n_items, n, memory_order_release);
    atomic_store_explicit(&pool->grain, grain, memory_order_release);
    atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
    uint32_t seq = next_seq(pool);
    publish(pool, seq);

    run_chunks(pool, seq, 0);
    if (atomic_load_explicit(&pool->done, memory_order_acquire) == n) {
        if (pool->stalls > 0)
            pool->stalls--;
        return;
    }
    const uint64_t t_own = gs_clock_now_ns();
    uint64_t t0 = 0;
    unsigned iter = 0;
    while (atomic_load_explicit(&pool->done, memory_order_acquire) != n)
        if (!wait_round(&t0, &iter, YIELD_NS))
            break;
    if (atomic_load_explicit(&pool->done, memory_order_acquire) != n) {
        pthread_mutex_lock(&pool->mu);
        atomic_store(&pool->caller_waiting, 1); /* seq_cst: pairs with the last chunk's add */
        while (atomic_load(&pool->done) != n)
            pthread_cond_wait(&pool->cv_done, &pool->mu);
        atomic_store(&pool->caller_waiting, 0);
        pthread_mutex_unlock(&pool->mu);
    }
    /* A chunk held far longer than the caller's own share took means a
     * thread was descheduled mid-chunk (a busy neighbour, more threads
     * than free cores). A few such ops in a row and the next ops run on
     * the calling thread alone for a while, then threads are tried again. */
    const uint64_t t_end = gs_clock_now_ns(), own = t_own - t_start, waited = t_end - t_own;
    if (waited > 2 * own + STALL_NS) {
        if (++pool->stalls >= STALLS_TO_SOLO) {
            pool->solo_until = t_end + SOLO_NS;
            pool->stalls = 0;
        }
    } else if (pool->stalls > 0) {
        pool->stalls--;
    }
}

int64_t gs_cpu_grain(const gs_cpu *c, int64_t n, int64_t per_thread, int64_t min_grain)
{
    int64_t chunks = (int64_t)c->n_threads * (per_thread > 0 ? per_thread : 1);
    int64_t g = (n + chunks - 1) / chunks;
    return g < min_grain ? min_grain : (g < 1 ? 1 : g);
}

int gs_cpu_scratch_reserve(gs_cpu *c, size_t bytes)
{
    bytes = (bytes + 63) & ~(size_t)63;
    for (int t = 0; t < c->n_threads; t++) {
        if (c->scratch_size[t] >= bytes)
            continue;
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes) != 0)
            return GS_ENOMEM;
        free(c->scratch[t]);
        c->scratch[t] = p;
        c->scratch_size[t] = bytes;
    }
    return 0;
}

/* ---- memory ------------------------------------------------------------- */

/* Every allocation carries a 256-byte header holding its size, so that
 * cpu_free can return it to the count that mem_limit caps (free() alone
 * does not say how big a block was). The header keeps the 256-byte
 * alignment of what the caller gets. */
#define MEM_HDR 256

void *gs_cpu_mem_alloc(gs_cpu *c, size_t bytes)
{
    size_t n = (bytes + 255) & ~(size_t)255;
    if (n < bytes || n > SIZE_MAX - MEM_HDR)
        return NULL;
    if (c->mem_limit) {
        size_t used = atomic_fetch_add(&c->mem_used, n) + n;
        if (used > c->mem_limit || used < n) {
            atomic_fetch_sub(&c->mem_used, n);
            gs_log_error("cpu: allocating %zu bytes would pass the memory limit (%zu of %zu bytes "
                         "in use)",
                         bytes, used - n, c->mem_limit);
            return NULL;
        }
    } else {
        atomic_fetch_add(&c->mem_used, n);
    }
    void *p = NULL;
    if (posix_memalign(&p, 256, n + MEM_HDR) != 0) {
        atomic_fetch_sub(&c->mem_used, n);
        return NULL;
    }
    memcpy(p, &n, sizeof n);
    return (char *)p + MEM_HDR;
}

void gs_cpu_mem_free(gs_cpu *c, void *p)
{
    if (!p)
        return;
    char *base = (char *)p - MEM_HDR;
    size_t n;
    memcpy(&n, base, sizeof n);
    atomic_fetch_sub(&c->mem_used, n);
    free(base);
}

static void *cpu_alloc(gs_backend *be, size_t bytes)
{
    return gs_cpu_mem_alloc(gs_cpu_of(be), bytes);
}

static void cpu_free(gs_backend *be, void *p)
{
    gs_cpu_mem_free(gs_cpu_of(be), p);
}

static int cpu_upload(gs_backend *be, void *dst, const void *src, size_t bytes)
{
    memmove(dst, src, bytes);
    return 0;
}

static int cpu_zero(gs_backend *be, void *dst, size_t bytes)
{
    memset(dst, 0, bytes);
    return 0;
}

static int cpu_sync(gs_backend *be)
{
    return 0;
}

/* MemAvailable / MemTotal from /proc/meminfo; sysconf when unreadable. */
static int cpu_mem_info(gs_backend *be, size_t *free_bytes, size_t *total_bytes)
{
    unsigned long long avail = 0, total = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            unsigned long long v;
            if (sscanf(line, "MemAvailable: %llu kB", &v) == 1)
                avail = v * 1024ull;
            else if (sscanf(line, "MemTotal: %llu kB", &v) == 1)
                total = v * 1024ull;
        }
        fclose(f);
    }
    long page = sysconf(_SC_PAGESIZE);
    if (!total && page > 0) {
        long n = sysconf(_SC_PHYS_PAGES);
        total = n > 0 ? (unsigned long long)n * (unsigned long long)page : 0;
    }
    if (!avail && page > 0) {
        long n = sysconf(_SC_AVPHYS_PAGES);
        avail = n > 0 ? (unsigned long long)n * (unsigned long long)page : 0;
    }
    *free_bytes = (size_t)avail;
    *total_bytes = (size_t)total;
    gs_cpu *c = gs_cpu_of(be);
    if (c->mem_limit) { /* the cap is the total; free is what is left of it */
        size_t used = atomic_load(&c->mem_used);
        size_t left = used < c->mem_limit ? c->mem_limit - used : 0;
        *free_bytes = left < *free_bytes || !avail ? left : *free_bytes;
        *total_bytes = c->mem_limit;
        return 0;
    }
    return total ? 0 : GS_EIO;
}

/* ---- weights ------------------------------------------------------------ */

typedef struct {
    const void *src;
    gs_dtype src_dt;
    gs_cpu_weight *w;
    uint64_t seed;
    float scale;
    gs_dtype rand_dt; /* dtype the random values are rounded to */
} weight_job;

static void weight_copy_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    weight_job *j = ctx;
    const int64_t cols = j->w->h.cols;
    const size_t ses = gs_dtype_size(j->src_dt), des = gs_dtype_size(j->w->h.dt);
    const char *s = (const char *)j->src + (size_t)(r0 * cols) * ses;
    char *d = (char *)j->w->data + (size_t)(r0 * cols) * des;
    if (j->src_dt == j->w->h.dt)
        memcpy(d, s, (size_t)((r1 - r0) * cols) * des);
    else /* 16-bit source, F32 storage */
        for (int64_t r = r0; r < r1; r++, s += (size_t)cols * ses, d += (size_t)cols * des)
            gs_cpu_load_f32(s, j->src_dt, (float *)d, cols);
}

static void weight_random_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    weight_job *j = ctx;
    const int64_t cols = j->w->h.cols;
    for (int64_t r = r0; r < r1; r++) {
        uint64_t base = (uint64_t)r * (uint64_t)cols;
        if (j->w->h.dt == GS_DT_F32) {
            float *d = (float *)j->w->data + r * cols;
            for (int64_t c = 0; c < cols; c++) {
                float v = gs_rand_uniform(j->seed, base + (uint64_t)c, j->scale);
                if (j->rand_dt == GS_DT_BF16)
                    v = gs_bf16_to_f32(gs_f32_to_bf16(v));
                else if (j->rand_dt == GS_DT_F16)
                    v = gs_f16_to_f32(gs_f32_to_f16(v));
                d[c] = v;
            }
        } else {
            uint16_t *d = (uint16_t *)j->w->data + r * cols;
            for (int64_t c = 0; c < cols; c++) {
                float v = gs_rand_uniform(j->seed, base + (uint64_t)c, j->scale);
                d[c] = j->w->h.dt == GS_DT_BF16 ? gs_f32_to_bf16(v) : gs_f32_to_f16(v);
            }
        }
    }
}

static int weight_alloc(gs_cpu *c, gs_dtype src_dt, int64_t rows, int64_t cols, gs_cpu_weight **out)
{
    gs_dtype dt = (c->weights_f32 || src_dt == GS_DT_F32) ? GS_DT_F32 : src_dt;
    size_t bytes = (size_t)rows * (size_t)cols * gs_dtype_size(dt);
    gs_cpu_weight *w = calloc(1, sizeof *w);
    if (!w)
        return GS_ENOMEM;
    w->data = cpu_alloc(&c->base, bytes);
    if (!w->data) {
        free(w);
        gs_log_error("cpu: cannot allocate a [%lld x %lld] %s weight (%zu bytes)", (long long)rows,
                     (long long)cols, gs_dtype_name(dt), bytes);
        return GS_ENOMEM;
    }
    w->h.rows = rows;
    w->h.cols = cols;
    w->h.dt = dt;
    w->h.bytes = bytes;
    *out = w;
    return 0;
}

static int cpu_weight_new(gs_backend *be, const void *host, gs_dtype dt, int64_t rows, int64_t cols,
                          gs_weight **out)
{
    gs_cpu *c = gs_cpu_of(be);
    gs_cpu_weight *w;
    int rc = weight_alloc(c, dt, rows, cols, &w);
    if (rc)
        return rc;
    weight_job j = {host, dt, w, 0, 0.0f, dt};
    gs_cpu_parallel(c, rows, gs_cpu_grain(c, rows, 4, 16), weight_copy_rows, &j);
    *out = &w->h;
    return 0;
}

static int cpu_weight_new_random(gs_backend *be, gs_dtype dt, int64_t rows, int64_t cols,
                                 uint64_t seed, float scale, gs_weight **out)
{
    gs_cpu *c = gs_cpu_of(be);
    if (gs_dtype_is_quant(dt))
        return gs_cpu_weight_random_quant(c, dt, rows, cols, seed, scale, out);
    gs_cpu_weight *w;
    int rc = weight_alloc(c, dt, rows, cols, &w);
    if (rc)
        return rc;
    weight_job j = {NULL, dt, w, seed, scale, dt};
    gs_cpu_parallel(c, rows, gs_cpu_grain(c, rows, 4, 4), weight_random_rows, &j);
    *out = &w->h;
    return 0;
}

/* The weight reads host in place (a checkpoint mapping, borrowed for the
 * weight's life): only when it would be stored as it is, i.e. the dtype is
 * F32 or weights stay 16-bit. The kernels need dtype alignment only
 * (kernels.c checked it). */
static int cpu_weight_wrap_host(gs_backend *be, const void *host, gs_dtype dt, int64_t rows,
                                int64_t cols, gs_weight **out)
{
    gs_cpu *c = gs_cpu_of(be);
    if (c->weights_f32 && dt != GS_DT_F32)
        return GS_ENOTSUP;
    gs_cpu_weight *w = calloc(1, sizeof *w);
    if (!w)
        return GS_ENOMEM;
    w->h.rows = rows;
    w->h.cols = cols;
    w->h.dt = dt;
    w->h.bytes = (size_t)rows * (size_t)cols * gs_dtype_size(dt);
    w->data = (void *)host; /* read only: no op writes weight data */
    w->borrowed = 1;
    *out = &w->h;
    return 0;
}

static void cpu_weight_free(gs_backend *be, gs_weight *w)
{
    gs_cpu_weight *cw = (gs_cpu_weight *)w;
    if (!cw->borrowed)
        gs_cpu_mem_free(gs_cpu_of(be), cw->data);
    free(cw);
}

/* ---- backend ------------------------------------------------------------ */

static void cpu_destroy(gs_backend *be)
{
    gs_cpu *c = gs_cpu_of(be);
    pool_free(c->pool);
    if (c->scratch)
        for (int t = 0; t < c->n_threads; t++)
            free(c->scratch[t]);
    free(c->scratch);
    free(c->scratch_size);
    free(c->qx);
    free(c);
}

static const gs_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .sync = cpu_sync,
    .mem_info = cpu_mem_info,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_upload,
    .zero = cpu_zero,
    .set_tuning = gs_cpu_set_tuning,
    .weight_new = cpu_weight_new,
    .weight_new_random = cpu_weight_new_random,
    .weight_free = cpu_weight_free,
    .weight_wrap_host = cpu_weight_wrap_host,
    .weight_new_quant = gs_cpu_weight_new_quant,
    .weight_wrap_quant = gs_cpu_weight_wrap_quant,
    .matmul = gs_cpu_matmul_any,
    .rmsnorm = gs_cpu_rmsnorm,
    .add_rmsnorm = gs_cpu_add_rmsnorm,
    .layernorm = gs_cpu_layernorm,
    .add = gs_cpu_add,
    .silu_mul = gs_cpu_silu_mul,
    .gelu = gs_cpu_gelu,
    .softmax = gs_cpu_softmax,
    .embed = gs_cpu_embed,
    .gather_rows = gs_cpu_gather_rows,
    .copy = gs_cpu_copy,
    .rope_text = gs_cpu_rope_text,
    .rope_vision = gs_cpu_rope_vision,
    .posembed_add = gs_cpu_posembed_add,
    .attention = gs_cpu_attention,
    .kv_store = gs_cpu_kv_store,
    .attention_paged = gs_cpu_attention_paged,
    .sample = gs_cpu_sample,
};

/* Cores this process may run on (affinity mask, e.g. a container's
 * cpuset), else the online count. */
/* The OPENBLAS_CORETYPE for this CPU when the library's own choice is
 * weaker than its instruction set, else NULL. */
static const char *blas_better_core(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    static const char *const generic[] = {"Prescott",   "Core2",     "Penryn",      "Dunnington",
                                          "Nehalem",    "Atom",      "Sandybridge", "Katmai",
                                          "Coppermine", "Northwood", "Banias"};
    const char *core = openblas_get_corename();
    int weak = 0;
    for (size_t i = 0; core && i < sizeof generic / sizeof *generic; i++)
        weak |= strcasecmp(core, generic[i]) == 0;
    __builtin_cpu_init();
    if (!weak && core && !strcasecmp(core, "Haswell") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (!weak)
        return NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
#endif
    return NULL;
}

void gs_cpu_blas_reexec(char *const argv[])
{
    if (getenv("OPENBLAS_CORETYPE"))
        return;
    const char *core = blas_better_core();
    if (!core)
        return;
    gs_log_info("OpenBLAS chose its %s kernels, older than this CPU's instruction set: running "
                "again with OPENBLAS_CORETYPE=%s",
                openblas_get_corename(), core);
    /* The program's own path, not /proc/self/exe: the new image's name
     * (ps, /proc/PID/comm) must stay the program's. */
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0 && setenv("OPENBLAS_CORETYPE", core, 1) == 0) {
        self[n] = 0;
        execv(self, argv);
    }
    gs_log_warn("cannot run again with OPENBLAS_CORETYPE=%s (%s); going on with the %s kernels",
                core, strerror(errno), openblas_get_corename());
}

static int online_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int gs_cpu_backend_new(const gs_backend_params *p, gs_backend **out, gs_diag *d)
{
    int n = p->n_threads > 0 ? p->n_threads : online_cores();
    if (n > GS_CPU_MAX_THREADS)
        n = GS_CPU_MAX_THREADS;
    gs_cpu *c = calloc(1, sizeof *c);
    if (!c)
        return gs_diag_set(d, GS_ENOMEM, "cpu backend: out of memory");
    c->base.ops = &cpu_ops;
    c->base.kind = GS_BACKEND_CPU;
    c->base.act_dt = GS_DT_F32;
    c->n_threads = n;
    c->weights_f32 = p->weights_f32 != 0;
    c->mem_limit = p->mem_limit;
    atomic_init(&c->mem_used, 0);
    c->scratch = calloc((size_t)n, sizeof *c->scratch);
    c->scratch_size = calloc((size_t)n, sizeof *c->scratch_size);
    if (!c->scratch || !c->scratch_size ||
        pool_new(n, p->idle_wait_us > 0 ? (uint64_t)p->idle_wait_us * 1000u : 0, &c->pool) != 0) {
        cpu_destroy(&c->base);
        return gs_diag_set(d, GS_ENOMEM, "cpu backend: cannot start %d threads", n);
    }
    openblas_set_num_threads(1);
    gs_log_debug("cpu backend: %d threads, %s weights, memory limit %zu bytes (0: none)", n,
                 c->weights_f32 ? "f32" : "16-bit", c->mem_limit);
    *out = &c->base;
    return 0;
}

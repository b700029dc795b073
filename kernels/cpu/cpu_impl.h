/* cpu_impl.h - internals shared by the CPU backend's files (kernels/cpu).
 *
 * The CPU backend keeps activations in F32 host memory and fans every op
 * out over a persistent pthread pool (backend.c): gs_cpu_parallel runs
 * fn(ctx, i0, i1, tid) over [0, n) in chunks of `grain` items, the caller
 * taking part as thread 0, and returns when all chunks are done. Each
 * thread has one growable scratch buffer (gs_cpu_scratch_reserve before the
 * parallel call, gs_cpu_scratch inside it).
 *
 * OpenBLAS is set to one thread (openblas_set_num_threads(1)) when the
 * backend is made: GEMMs are called from inside our own parallel regions,
 * each thread on its own block of the output, so OpenBLAS's threads would
 * only oversubscribe the cores. (This is process-wide, as OpenBLAS's
 * setting is.)
 * Threading: one engine thread calls ops; ops use the pool. */
#ifndef GS_CPU_IMPL_H
#define GS_CPU_IMPL_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "common/dtype.h"
#include "kernels/backend_impl.h"

typedef struct gs_cpu_pool gs_cpu_pool;

/* The hot loops are plain C for the auto-vectoriser. The x86-64 baseline
 * (SSE2) is too narrow to keep up with memory in the BF16 GEMV, so on x86
 * with GCC the hottest functions are also built for AVX2 and AVX-512 and
 * picked at load time (ifunc); elsewhere (aarch64: NEON is baseline) they
 * are built once. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__ELF__) &&         \
    !defined(__SANITIZE_THREAD__) /* TSan instruments ifunc resolvers: crash at load */
#define GS_CPU_HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GS_CPU_HOT
#endif

typedef struct gs_cpu {
    struct gs_backend base; /* first member */
    int n_threads;
    int weights_f32;
    size_t mem_limit;       /* gs_backend_params.mem_limit; 0: none */
    atomic_size_t mem_used; /* bytes of gs_cpu_mem_alloc blocks alive */
    gs_cpu_pool *pool;
    void **scratch;       /* [n_threads] */
    size_t *scratch_size; /* [n_threads] */
    void *qx;             /* matmul_q.c: the quantized rows of x, shared by all threads */
    size_t qx_size;
} gs_cpu;

typedef struct gs_cpu_weight {
    struct gs_weight h; /* first member; h.dt is the stored dtype */
    /* [rows, cols] of h.dt: owned and 256-byte aligned, or, when borrowed
     * (gs_weight_wrap_host), the caller's read-only memory aligned to the
     * dtype only. Never written after creation either way. */
    void *data;
    /* Quantized dtypes (kernels.h "Quantized weights"): data is q and
     * scales the F32 scales, both in the host layout; owned ones share
     * data's block, borrowed ones are the caller's. NULL otherwise. */
    const float *scales;
    int borrowed; /* 1: data is not ours to free */
} gs_cpu_weight;

static inline gs_cpu *gs_cpu_of(gs_backend *be)
{
    return (gs_cpu *)be;
}

static inline const gs_cpu_weight *gs_cpu_w(const gs_weight *w)
{
    return (const gs_cpu_weight *)w;
}

/* Backend memory (backend.c): 256-byte aligned, counted against
 * mem_limit; NULL (logged) past the cap or when out of memory. */
void *gs_cpu_mem_alloc(gs_cpu *c, size_t bytes);
void gs_cpu_mem_free(gs_cpu *c, void *p); /* NULL: no-op */

typedef void (*gs_cpu_fn)(void *ctx, int64_t i0, int64_t i1, int tid);

/* Runs fn over [0, n) in chunks of grain (>= 1) items on the pool; returns
 * when every chunk is done. Small jobs (n <= grain) run on the caller. */
void gs_cpu_parallel(gs_cpu *c, int64_t n, int64_t grain, gs_cpu_fn fn, void *ctx);
/* A grain that gives each thread about `per_thread` chunks (>= min_grain). */
int64_t gs_cpu_grain(const gs_cpu *c, int64_t n, int64_t per_thread, int64_t min_grain);
/* Makes every thread's scratch at least `bytes` (64-byte aligned); 0 or
 * GS_ENOMEM. Call before gs_cpu_parallel, never inside it. */
int gs_cpu_scratch_reserve(gs_cpu *c, size_t bytes);
static inline void *gs_cpu_scratch(gs_cpu *c, int tid)
{
    return c->scratch[tid];
}

/* GEMM work items for T threads: row blocks of at most max_mb rows when m
 * is large (else one), and column blocks of at most max_nb columns (a
 * multiple of 16), enough of them (a multiple of T where possible) that
 * every thread gets equal work. Item (i, j) covers rows [i * mb, ...) and
 * columns [j * nb, ...) of out. */
typedef struct {
    int64_t n_mblk, mb, n_nblk, nb;
} gs_cpu_gemm_blocks;

static inline gs_cpu_gemm_blocks gs_cpu_gemm_blocking(int64_t m, int64_t n, int64_t T,
                                                      int64_t max_mb, int64_t max_nb)
{
    gs_cpu_gemm_blocks b;
    b.n_mblk = m > 2 * max_mb ? (m + max_mb - 1) / max_mb : 1;
    b.mb = (m + b.n_mblk - 1) / b.n_mblk;
    int64_t n_nblk = (n + max_nb - 1) / max_nb;
    int64_t items = b.n_mblk * n_nblk;
    if (items < T)
        n_nblk = (T + b.n_mblk - 1) / b.n_mblk;
    else if (items % T)
        n_nblk = (((items + T - 1) / T) * T + b.n_mblk - 1) / b.n_mblk;
    b.nb = (n + n_nblk - 1) / n_nblk;
    b.nb = (b.nb + 15) & ~(int64_t)15;
    if (b.nb > n)
        b.nb = n;
    b.n_nblk = (n + b.nb - 1) / b.nb;
    return b;
}

/* Row helpers: n elements of dtype dt <-> F32. Sources may be unaligned. */
static inline void gs_cpu_load_f32(const void *src, gs_dtype dt, float *dst, int64_t n)
{
    switch (dt) {
    case GS_DT_F32:
        memcpy(dst, src, (size_t)n * 4);
        break;
    case GS_DT_BF16:
        gs_bf16_to_f32_row(src, dst, (size_t)n);
        break;
    case GS_DT_F16:
        gs_f16_to_f32_row(src, dst, (size_t)n);
        break;
    case GS_DT_I32:
    case GS_DT_Q8: /* weight-only formats: never an activation row */
    case GS_DT_Q4:
        break;
    }
}

static inline void gs_cpu_store_f32(const float *src, gs_dtype dt, void *dst, int64_t n)
{
    switch (dt) {
    case GS_DT_F32:
        memmove(dst, src, (size_t)n * 4);
        break;
    case GS_DT_BF16:
        gs_f32_to_bf16_row(src, (uint16_t *)dst, (size_t)n);
        break;
    case GS_DT_F16:
        gs_f32_to_f16_row(src, (uint16_t *)dst, (size_t)n);
        break;
    case GS_DT_I32:
    case GS_DT_Q8: /* weight-only formats: never an activation row */
    case GS_DT_Q4:
        break;
    }
}

/* Row r of an F32 view. */
static inline float *gs_cpu_row(gs_mat m, int64_t r)
{
    return (float *)m.data + r * m.stride;
}

/* Quantized weights (quant_weight.c): the weight_new_quant and
 * weight_wrap_quant ops, and weight_new_random for GS_DT_Q8 / GS_DT_Q4. */
int gs_cpu_weight_new_quant(gs_backend *be, gs_dtype qdt, int64_t rows, int64_t cols, const void *q,
                            const float *s, gs_weight **out);
int gs_cpu_weight_wrap_quant(gs_backend *be, gs_dtype qdt, int64_t rows, int64_t cols,
                             const void *q, const float *s, gs_weight **out);
int gs_cpu_weight_random_quant(gs_cpu *c, gs_dtype qdt, int64_t rows, int64_t cols, uint64_t seed,
                               float scale, gs_weight **out);

/* The matmul op (matmul_q.c): quantized weights there, float weights to
 * gs_cpu_matmul (matmul.c). */
int gs_cpu_matmul_any(gs_backend *be, gs_mat out, gs_mat x, const gs_weight *w, const gs_vec *bias,
                      unsigned flags);

/* The integer dot-product kernels (quant_dot*.c), one per instruction set;
 * all give the same int32 per group. gs_cpu_quant_isa_force selects one
 * for every later matmul (tests run each against GS_QISA_C):
 * GS_QISA_AUTO picks the best the CPU reports; an ISA it lacks is refused
 * (returns -1). Returns the ISA now in use. Not thread-safe against
 * running matmuls: call it between ops. */
typedef enum {
    GS_QISA_AUTO = -1,
    GS_QISA_C = 0,      /* portable C */
    GS_QISA_AVX2,       /* x86-64: maddubs */
    GS_QISA_AVXVNNI,    /* x86-64: vpdpbusd on ymm, VEX (AVX-VNNI, no AVX-512) */
    GS_QISA_AVX512VL,   /* x86-64: vpdpbusd on ymm, EVEX (AVX-512 VL + VNNI) */
    GS_QISA_AVX512VNNI, /* x86-64: vpdpbusd on zmm */
    GS_QISA_NEON_DOT,   /* aarch64: sdot */
    GS_QISA_NEON_I8MM,  /* aarch64: smmla (2 x 2 tiles), sdot for the rest */
    GS_QISA_COUNT
} gs_cpu_qisa;
int gs_cpu_quant_isa_supported(gs_cpu_qisa isa);
const char *gs_cpu_quant_isa_name(gs_cpu_qisa isa);
int gs_cpu_quant_isa_force(gs_cpu_qisa isa);

/* Ops (one file each; same contracts as kernels.h, arguments validated). */
int gs_cpu_matmul(gs_backend *be, gs_mat out, gs_mat x, const gs_weight *w, const gs_vec *bias,
                  unsigned flags);
int gs_cpu_rmsnorm(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, float eps);
int gs_cpu_add_rmsnorm(gs_backend *be, gs_mat out, gs_mat resid, gs_mat x, const gs_vec *w,
                       float eps);
int gs_cpu_layernorm(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, const gs_vec *b,
                     float eps);
int gs_cpu_add(gs_backend *be, gs_mat out, gs_mat a, gs_mat b);
int gs_cpu_silu_mul(gs_backend *be, gs_mat out, gs_mat gu);
int gs_cpu_gelu(gs_backend *be, gs_mat out, gs_mat x);
int gs_cpu_softmax(gs_backend *be, gs_mat out, gs_mat x);
int gs_cpu_copy(gs_backend *be, gs_mat out, gs_mat x);
int gs_cpu_embed(gs_backend *be, gs_mat out, const gs_weight *table, const int32_t *ids);
int gs_cpu_gather_rows(gs_backend *be, gs_mat out, gs_mat x, const int32_t *idx);
int gs_cpu_posembed_add(gs_backend *be, gs_mat x, const gs_weight *table, int32_t side,
                        const int32_t *hw);
int gs_cpu_rope_text(gs_backend *be, gs_mat qk, const int32_t *pos, const gs_rope_text_params *p);
int gs_cpu_rope_vision(gs_backend *be, gs_mat qk, const int32_t *pos,
                       const gs_rope_vision_params *p);
int gs_cpu_attention(gs_backend *be, gs_mat out, gs_mat q, gs_mat k, gs_mat v, const int32_t *cu,
                     int32_t n_seqs, int32_t max_len, const gs_attn_params *p);
int gs_cpu_kv_store(gs_backend *be, const gs_kv_layer *kv, gs_mat k, gs_mat v,
                    const int32_t *slots);
int gs_cpu_attention_paged(gs_backend *be, gs_mat out, gs_mat q, const gs_kv_layer *kv,
                           const gs_paged_batch *b, const gs_attn_params *p);
/* gs_k_sample (sample.c): rows in parallel over the pool. */
int gs_cpu_sample(gs_backend *be, int32_t *out_ids, gs_mat logits, const gs_sample_row *rows,
                  const int32_t *pen_off, const int32_t *pen_ids, const int32_t *pen_cnt);

#endif

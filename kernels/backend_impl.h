/* backend_impl.h - what a backend implements behind kernels.h. Internal:
 * included by kernels.c and the backends (kernels/cpu, kernels/cuda), never
 * by the model.
 *
 * A backend is a gs_backend_ops table plus a private state struct whose
 * FIRST member is `struct gs_backend` (so the pointers convert both ways).
 * Weights likewise: a backend's weight struct starts with `struct gs_weight`
 * (rows, cols, stored dtype, bytes), which kernels.c reads for validation.
 *
 * kernels.c has validated every argument the host can see before an op
 * reaches the table: shapes agree, stride >= cols, dtypes are allowed, head
 * counts divide, pointers are non-NULL, strided views do not overlap an
 * output they must not alias. What kernels.c cannot see is the content of
 * index arrays in backend memory (ids, positions, cu_seqlens, slots, block
 * tables); a backend that can read them cheaply (the CPU) checks them and
 * returns GS_EINVAL, one that cannot must at least never write out of
 * bounds because of them.
 *
 * Every op may assume: be is its own kind, all gs_mat have rows >= 1 and
 * cols >= 1 (kernels.c returns 0 for empty ops before dispatch), and weight
 * and vec pointers belong to this backend. */
#ifndef GS_BACKEND_IMPL_H
#define GS_BACKEND_IMPL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

struct gs_weight {
    int64_t rows, cols;
    gs_dtype dt;  /* dtype as stored in backend memory (may differ from the source) */
    size_t bytes; /* backend memory it occupies */
};

typedef struct gs_backend_ops {
    const char *name; /* "cpu", "cuda" */

    /* Lifetime and memory. destroy frees the backend (be is never NULL). */
    void (*destroy)(gs_backend *be);
    int (*sync)(gs_backend *be);
    int (*mem_info)(gs_backend *be, size_t *free_bytes, size_t *total_bytes);
    void *(*alloc)(gs_backend *be, size_t bytes); /* 256-byte aligned; NULL if OOM */
    void (*free)(gs_backend *be, void *p);        /* p never NULL */
    int (*upload)(gs_backend *be, void *dst, const void *src, size_t bytes);
    int (*download)(gs_backend *be, void *dst, const void *src, size_t bytes);
    int (*zero)(gs_backend *be, void *dst, size_t bytes);
    /* gs_backend_set_tuning, t already checked; NULL: no knobs. */
    void (*set_tuning)(gs_backend *be, const gs_backend_tuning *t);

    /* Weights: returns owned *out (weight_free). dt is BF16, F16 or F32;
     * rows, cols >= 1. */
    int (*weight_new)(gs_backend *be, const void *host, gs_dtype dt, int64_t rows, int64_t cols,
                      gs_weight **out);
    /* Element (r, c) must equal gs_rand_uniform(seed, r * cols + c, scale)
     * rounded to the stored dtype (so every backend makes the same model);
     * for GS_DT_Q8 / GS_DT_Q4, those F32 values quantized as gs_quantize. */
    int (*weight_new_random)(gs_backend *be, gs_dtype dt, int64_t rows, int64_t cols, uint64_t seed,
                             float scale, gs_weight **out);
    void (*weight_free)(gs_backend *be, gs_weight *w); /* w never NULL */
    /* gs_weight_wrap_host: a weight over borrowed host memory (aligned to
     * the dtype; checked), or GS_ENOTSUP. NULL in the table: GS_ENOTSUP. */
    int (*weight_wrap_host)(gs_backend *be, const void *host, gs_dtype dt, int64_t rows,
                            int64_t cols, gs_weight **out);
    /* gs_weight_new_quant / gs_weight_wrap_quant (qdt Q8 or Q4, q and s
     * non-NULL, s 4-byte aligned for wrap; checked). NULL: GS_ENOTSUP. */
    int (*weight_new_quant)(gs_backend *be, gs_dtype qdt, int64_t rows, int64_t cols, const void *q,
                            const float *s, gs_weight **out);
    int (*weight_wrap_quant)(gs_backend *be, gs_dtype qdt, int64_t rows, int64_t cols,
                             const void *q, const float *s, gs_weight **out);

    /* Ops: same arguments and meaning as the gs_k_* verbs of kernels.h. */
    int (*matmul)(gs_backend *be, gs_mat out, gs_mat x, const gs_weight *w, const gs_vec *bias,
                  unsigned flags);
    int (*rmsnorm)(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, float eps);
    int (*add_rmsnorm)(gs_backend *be, gs_mat out, gs_mat resid, gs_mat x, const gs_vec *w,
                       float eps);
    int (*layernorm)(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, const gs_vec *b,
                     float eps);
    int (*add)(gs_backend *be, gs_mat out, gs_mat a, gs_mat b);
    int (*silu_mul)(gs_backend *be, gs_mat out, gs_mat gu);
    int (*gelu)(gs_backend *be, gs_mat out, gs_mat x);
    int (*softmax)(gs_backend *be, gs_mat out, gs_mat x);
    int (*embed)(gs_backend *be, gs_mat out, const gs_weight *table, const int32_t *ids);
    int (*gather_rows)(gs_backend *be, gs_mat out, gs_mat x, const int32_t *idx);
    int (*copy)(gs_backend *be, gs_mat out, gs_mat x);
    int (*rope_text)(gs_backend *be, gs_mat qk, const int32_t *pos, const gs_rope_text_params *p);
    int (*rope_vision)(gs_backend *be, gs_mat qk, const int32_t *pos,
                       const gs_rope_vision_params *p);
    int (*posembed_add)(gs_backend *be, gs_mat x, const gs_weight *table, int32_t side,
                        const int32_t *hw);
    int (*attention)(gs_backend *be, gs_mat out, gs_mat q, gs_mat k, gs_mat v, const int32_t *cu,
                     int32_t n_seqs, int32_t max_len, const gs_attn_params *p);
    int (*kv_store)(gs_backend *be, const gs_kv_layer *kv, gs_mat k, gs_mat v,
                    const int32_t *slots);
    int (*attention_paged)(gs_backend *be, gs_mat out, gs_mat q, const gs_kv_layer *kv,
                           const gs_paged_batch *b, const gs_attn_params *p);
    int (*sample)(gs_backend *be, int32_t *out_ids, gs_mat logits, const gs_sample_row *rows,
                  const int32_t *pen_off, const int32_t *pen_ids, const int32_t *pen_cnt);

    /* Native graphs (optional: NULL everywhere means kernels.c records the
     * calls itself and replays them through this table). graph_begin starts
     * a capture; graph_end returns the backend's owned handle in *native;
     * graph_launch returns GS_EAGAIN when the handle went stale. While a
     * native capture runs, the backend itself refuses uploads, downloads,
     * syncs and allocations. */
    int (*graph_begin)(gs_backend *be);
    int (*graph_end)(gs_backend *be, void **native);
    void (*graph_abort)(gs_backend *be);
    int (*graph_launch)(gs_backend *be, void *native);
    void (*graph_free)(gs_backend *be, void *native);
} gs_backend_ops;

struct gs_backend {
    const gs_backend_ops *ops;
    gs_backend_kind kind;
    gs_dtype act_dt; /* activation dtype: F32 on the CPU, BF16 (F16 below sm_80) on CUDA;
                        the residual dtype follows from it (gs_backend_resid_dtype) */
    /* Graph recording state, owned by kernels.c (zero at creation). */
    int recording;        /* 1 between gs_graph_begin and _end / _abort */
    struct gs_graph *rec; /* the recording (graph.c), native or not: it also
                             holds the frees deferred until it stops */
};

/* Backend constructors (called by gs_backend_new only). On success *out owns
 * the backend; d (may be NULL) says why on failure. */
int gs_cpu_backend_new(const gs_backend_params *p, gs_backend **out, gs_diag *d);
#ifdef GS_HAVE_CUDA
int gs_cuda_backend_new(const gs_backend_params *p, gs_backend **out, gs_diag *d);
#endif

/* The dummy-weight generator every backend uses: a counter-based hash
 * (splitmix64 finaliser) of (seed, element index), so any thread or GPU
 * lane can make any element on its own. Uniform in [-scale, scale). */
static inline float gs_rand_uniform(uint64_t seed, uint64_t idx, float scale)
{
    uint64_t z = seed + (idx + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    float u = (float)(z >> 40) * (1.0f / 16777216.0f); /* [0, 1), 24 bits */
    return (2.0f * u - 1.0f) * scale;
}

/* The F32 inverse frequency PyTorch computes for RoPE:
 * 1 / theta ** (float(2j) / float(dim)), each step rounded to F32 (the
 * power correctly rounded, through double). Matches torch's bit patterns
 * for theta 10000 and 500000, dim 64 (glm4v-spec.md 3.5, 4.3; checked in
 * tests/unit/kernels). A plain double 1/theta^(2j/dim) rounded once differs
 * in 10 of 32 values. */
static inline float gs_rope_inv_freq(float theta, int32_t j, int32_t dim)
{
    float e = (float)(2 * j) / (float)dim;
    float p = (float)pow((double)theta, (double)e);
    return 1.0f / p;
}

#ifdef __cplusplus
}
#endif

#endif

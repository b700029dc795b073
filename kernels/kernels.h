/* kernels.h - the one arithmetic interface the model calls.
 *
 * A gs_backend is a compute device: the CPU (C + OpenBLAS, threads over the
 * cores) or one CUDA GPU (cuBLASLt + own kernels). The model holds one
 * backend handle and calls only the verbs below; it never sees which
 * backend runs them. kernels.c validates shapes and dtypes once for every
 * backend, then dispatches through the backend's vtable (backend_impl.h).
 *
 * Memory. Activations, KV caches and index arrays live in backend memory
 * ("device memory"; plain host memory on the CPU backend), allocated with
 * gs_buf_alloc and moved with gs_buf_upload / gs_buf_download. Weights are
 * gs_weight handles, prepared once at load into whatever layout the
 * backend's GEMM wants.
 *
 * Dtypes. Activations use the backend's activation dtype
 * (gs_backend_act_dtype): GS_DT_F32 on the CPU, GS_DT_BF16 on CUDA
 * (GS_DT_F16 below sm_80, with an F32 residual stream:
 * gs_backend_resid_dtype; FP32 accumulation everywhere). Small per-channel
 * vectors (norm weights, biases) are gs_vec, always F32 in backend memory.
 * Ops whose output is read by the host (logits) may write F32 on every
 * backend.
 *
 * Asynchrony. Ops may run asynchronously on a backend stream, in issue
 * order. gs_buf_download and gs_backend_sync wait for all earlier work.
 *
 * Threading: a backend handle is used by one thread at a time (the
 * engine thread); the CPU backend fans each op out over its own threads.
 *
 * Every verb returns 0 or a negative GS_E* code (GS_EINVAL for shapes or
 * dtypes that do not fit, with a log line naming the op and shapes). */
#ifndef GS_KERNELS_H
#define GS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GS_DT_F32 = 0,
    GS_DT_BF16 = 1,
    GS_DT_F16 = 2,
    GS_DT_I32 = 3,
    /* Weight-only formats: the stored dtype of a quantized gs_weight, never
     * an activation ("Quantized weights" below). */
    GS_DT_Q8 = 4, /* int8, one F32 scale per row */
    GS_DT_Q4 = 5, /* int4, one F32 scale per GS_Q4_GROUP columns of a row */
} gs_dtype;

/* Bytes per element of dt (GS_DT_Q8: 1; GS_DT_Q4: 0, it is packed: use
 * gs_quant_q_bytes). */
size_t gs_dtype_size(gs_dtype dt);
const char *gs_dtype_name(gs_dtype dt);

/* ---------------------------------------------------------------------------
 * Backend */

typedef struct gs_backend gs_backend; /* opaque */

typedef enum { GS_BACKEND_CPU = 0, GS_BACKEND_CUDA = 1 } gs_backend_kind;

typedef struct {
    gs_backend_kind kind;
    int n_threads; /* CPU: threads; <= 0: all usable cores (the affinity mask) */
    int device;    /* CUDA: device ordinal */
    /* CPU: how gs_weight_new stores BF16/F16 weights. 0 = keep them 16-bit
     * (half the memory; converted tile by tile inside the GEMM), 1 =
     * convert to F32 once at load (fastest prefill, twice the memory). */
    int weights_f32;
    /* Cap on the device memory this backend takes (weights + activations +
     * KV pages), bytes; 0: none. CUDA: allocations past it fail as out of
     * memory and gs_backend_mem_info reports the cap as the total, so one
     * can emulate a 16 GB card on a bigger one (--gpu-memory). The CPU
     * backend reports it the same way and refuses allocations past it. */
    size_t mem_limit;
    /* CPU: how long a compute thread keeps waiting for the next op
     * (spinning, then yielding the CPU) before it sleeps, microseconds; 0
     * or less than 60: 60. A server whose engine idles between jobs sets
     * it past a client's round trip, so that the next job's first op does
     * not wait for sleeping threads to be woken (as llama.cpp's --poll). */
    int idle_wait_us;
} gs_backend_params;

/* On success *out owns a new backend (free with gs_backend_free).
 * GS_ENOTSUP when the kind is not built in, GS_EDEVICE when the device
 * cannot be opened; d (may be NULL) says why. */
int gs_backend_new(const gs_backend_params *p, gs_backend **out, gs_diag *d);
void gs_backend_free(gs_backend *be); /* NULL: no-op */
const char *gs_backend_name(const gs_backend *be);
gs_backend_kind gs_backend_get_kind(const gs_backend *be);
gs_dtype gs_backend_act_dtype(const gs_backend *be);
/* The dtype of the residual stream (the text decoder's x): the act dtype,
 * except GS_DT_F32 where the act dtype is F16 (CUDA below sm_80): GLM-4's
 * residual exceeds F16's 65504, and so does its SwiGLU output. In this
 * dtype gs_k_add_rmsnorm takes resid, gs_k_rmsnorm x, gs_k_silu_mul writes
 * out, gs_k_matmul reads x (CUDA: each row scaled by a power of two into
 * F16 range, scaled back after the GEMM), and gs_k_copy either side. */
gs_dtype gs_backend_resid_dtype(const gs_backend *be);
/* Waits until all issued work is done; reports deferred device errors. */
int gs_backend_sync(gs_backend *be);
/* Bytes of device memory free and total (CPU: available RAM). */
int gs_backend_mem_info(gs_backend *be, size_t *free_bytes, size_t *total_bytes);

/* OpenBLAS (the CPU backend's GEMM, for prefill and the vision tower)
 * picks its kernels by CPU model when it loads. On a model newer than the
 * library (Debian 12's 0.3.21 on a 2024 Xeon) it falls back to its SSE3
 * "Prescott" kernels, several times slower than its AVX2 or AVX-512 ones.
 * Call this first thing in main: when OPENBLAS_CORETYPE is unset and the
 * library chose a core weaker than the CPU's instruction set, it sets
 * OPENBLAS_CORETYPE to the best core for that set ("SkylakeX", "Haswell"),
 * logs it and runs the program again (execv of its own path with argv);
 * it returns only when nothing needs doing or the exec failed. */
void gs_cpu_blas_reexec(char *const argv[]);

/* Tuning knobs, for comparisons and benchmarks: all zero is the default
 * (what gs_backend_new sets). The library reads no environment variable
 * for them; a command-line front end that wants one reads it and fills
 * this. A backend ignores the knobs of the other; the CPU backend's one
 * knob is process-wide (every CPU backend), as OpenBLAS's settings are. */
#define GS_TUNE_NO_GEMV (1u << 0)      /* CUDA: cuBLASLt for every GEMM, never the GEMV kernels */
#define GS_TUNE_ATTN_SIMPLE (1u << 1)  /* CUDA: the simple fallback attention kernels */
#define GS_TUNE_CPU_GEMM_F32 (1u << 2) /* CPU: F32 SGEMM for prefill, not the BF16 matrix units */
/* CUDA: F16 activations and GEMMs with an F32 residual (the path of devices
 * below sm_80) on any device, to test it on a newer GPU. Takes effect only
 * on a backend that holds no buffers, vecs or weights yet, and stays on. */
#define GS_TUNE_CUDA_F16 (1u << 3)
typedef struct {
    unsigned flags;      /* GS_TUNE_* */
    int32_t attn_splits; /* CUDA paged decode: fixed split-KV count in [1, 128]; 0: heuristic */
} gs_backend_tuning;
/* Applies t to the ops issued from now on. GS_EINVAL (nothing changes)
 * for unknown flags or attn_splits out of range. */
int gs_backend_set_tuning(gs_backend *be, const gs_backend_tuning *t);

/* ---------------------------------------------------------------------------
 * Buffers (backend memory) */

/* Returns owned backend memory of `bytes` bytes (free with gs_buf_free), 256-byte
 * aligned, uninitialised; NULL when out of memory. */
void *gs_buf_alloc(gs_backend *be, size_t bytes);
void gs_buf_free(gs_backend *be, void *p); /* NULL: no-op */
/* Copies host -> backend memory / backend -> host; both borrow. */
int gs_buf_upload(gs_backend *be, void *dst, const void *src, size_t bytes);
int gs_buf_download(gs_backend *be, void *dst, const void *src, size_t bytes);
int gs_buf_zero(gs_backend *be, void *dst, size_t bytes);

/* A row-major 2-D view of activations in backend memory: rows x cols
 * elements of dtype dt, row r starting at data + r * stride elements
 * (stride >= cols). Views slice fused outputs without copies (q, k, v out
 * of one qkv GEMM). Plain value; does not own data. */
typedef struct {
    void *data;
    gs_dtype dt;
    int64_t rows, cols, stride;
} gs_mat;

/* A contiguous [rows, cols] view. */
static inline gs_mat gs_mat_make(void *data, gs_dtype dt, int64_t rows, int64_t cols)
{
    gs_mat m = {data, dt, rows, cols, cols};
    return m;
}
/* Columns [c0, c0 + n) of m (same rows, same stride). */
static inline gs_mat gs_mat_cols(gs_mat m, int64_t c0, int64_t n)
{
    gs_mat r = m;
    r.data = (char *)m.data + (size_t)c0 * gs_dtype_size(m.dt);
    r.cols = n;
    return r;
}
/* Rows [r0, r0 + n) of m. */
static inline gs_mat gs_mat_rows(gs_mat m, int64_t r0, int64_t n)
{
    gs_mat r = m;
    r.data = (char *)m.data + (size_t)(r0 * m.stride) * gs_dtype_size(m.dt);
    r.rows = n;
    return r;
}

/* An F32 vector in backend memory (norm weights, biases). Plain value. */
typedef struct {
    float *data;
    int64_t n;
} gs_vec;

/* ---------------------------------------------------------------------------
 * Weights */

typedef struct gs_weight gs_weight; /* opaque */

/* Prepares a [rows, cols] row-major weight (PyTorch Linear layout [out, in])
 * from host memory of dtype dt (BF16, F16 or F32). Borrows `host` for the
 * call only. On success *out owns the weight (gs_weight_free). */
int gs_weight_new(gs_backend *be, const void *host, gs_dtype dt, int64_t rows, int64_t cols,
                  gs_weight **out);
/* A [rows, cols] weight of random values, uniform in [-scale, scale],
 * deterministic in `seed`, made directly in backend memory (for
 * --dummy-weights: no host copy of the real-size model is ever made). */
int gs_weight_new_random(gs_backend *be, gs_dtype dt, int64_t rows, int64_t cols, uint64_t seed,
                         float scale, gs_weight **out);
/* A [rows, cols] weight that uses host memory IN PLACE instead of copying
 * it: on the CPU backend a checkpoint's weights can stay in its read-only
 * file mapping, so they occupy memory once (as llama.cpp's mmap load does).
 * host is borrowed for the weight's whole life: the caller keeps it mapped,
 * readable and unchanged until gs_weight_free, which does not free it; the
 * backend never writes to it. host must be aligned to gs_dtype_size(dt)
 * (GS_EINVAL otherwise). GS_ENOTSUP when the backend cannot compute from
 * such memory as it is: CUDA (device memory), or the CPU with weights_f32
 * and a 16-bit dt. The caller then uses gs_weight_new. */
int gs_weight_wrap_host(gs_backend *be, const void *host, gs_dtype dt, int64_t rows, int64_t cols,
                        gs_weight **out);
void gs_weight_free(gs_backend *be, gs_weight *w); /* NULL: no-op */
int64_t gs_weight_rows(const gs_weight *w);
int64_t gs_weight_cols(const gs_weight *w);
/* Bytes the weight occupies in backend memory. */
size_t gs_weight_bytes(const gs_weight *w);

/* ---------------------------------------------------------------------------
 * Quantized weights (W8A16 and W4A16): a weight stored as integers and
 * scales; activations stay in the act dtype and every GEMM accumulates in
 * F32. The host layout is what the backends receive and what a
 * pre-quantized checkpoint holds (glmserve-quantize writes q as the tensor
 * NAME and s as NAME_scale):
 *   GS_DT_Q8: q int8 [rows, cols] row-major; s F32 [rows];
 *             w[r, c] = q[r, c] * s[r].
 *   GS_DT_Q4: q uint8 [rows, (cols + 1) / 2]: byte j of row r holds column
 *             2j in its low nibble and column 2j + 1 in its high nibble,
 *             each stored as q + 8 (q in [-8, 7]; the unused high nibble of
 *             an odd-length row is 8, i.e. 0);
 *             s F32 [rows, ceil(cols / GS_Q4_GROUP)];
 *             w[r, c] = q[r, c] * s[r, c / GS_Q4_GROUP].
 * gs_quantize makes both from BF16, F16 or F32 values: symmetric absmax
 * scales (Q8: s = max|w| / 127 over the row; Q4: s = max|w| / 7 over the
 * group, both computed in F32), q = w / s rounded to nearest even and
 * clamped to the format's range; an all-zero row or group gets s = 0 and
 * q = 0. It runs on the host only, so a weight is the same bits on every
 * backend and in every file.
 *
 * gs_k_matmul takes quantized weights like any other; gs_k_embed and
 * gs_k_posembed_add refuse them (tables stay 16-bit). gs_weight_new
 * refuses a quantized dt (use gs_weight_new_quant); gs_weight_new_random
 * accepts GS_DT_Q8 / GS_DT_Q4: the F32 values it would make for F32, then
 * quantized as gs_quantize does. */
#define GS_Q4_GROUP 128

/* 1 for GS_DT_Q8 and GS_DT_Q4, else 0. */
int gs_dtype_is_quant(gs_dtype dt);
/* Bytes of q, and the number of F32 scales, of a [rows, cols] weight of
 * quantized dtype qdt (0 for other dtypes). */
size_t gs_quant_q_bytes(gs_dtype qdt, int64_t rows, int64_t cols);
size_t gs_quant_n_scales(gs_dtype qdt, int64_t rows, int64_t cols);
/* Quantizes src [rows, cols] (host, dtype src_dt: BF16, F16 or F32) into
 * q and s (host, sized as above; all borrowed). GS_EINVAL for bad
 * arguments or a value that is not finite (logged with its row). */
int gs_quantize(gs_dtype qdt, const void *src, gs_dtype src_dt, int64_t rows, int64_t cols, void *q,
                float *s);
/* Row r of a quantized [?, cols] weight (host q, s) back to F32 in
 * out[cols] (references and tests). */
void gs_dequantize_row(gs_dtype qdt, const void *q, const float *s, int64_t cols, int64_t r,
                       float *out);
/* A [rows, cols] weight of quantized dtype qdt from host q and s, copied
 * or uploaded (both borrowed for the call). On success *out owns it. */
int gs_weight_new_quant(gs_backend *be, gs_dtype qdt, int64_t rows, int64_t cols, const void *q,
                        const float *s, gs_weight **out);
/* The same over borrowed host memory used IN PLACE, as gs_weight_wrap_host
 * (the CPU backend: a pre-quantized checkpoint's mapping); s must be
 * 4-byte aligned. GS_ENOTSUP where the backend cannot (CUDA): use
 * gs_weight_new_quant. */
int gs_weight_wrap_quant(gs_backend *be, gs_dtype qdt, int64_t rows, int64_t cols, const void *q,
                         const float *s, gs_weight **out);

/* Uploads n F32 values from host into a new gs_vec (free with gs_vec_free). */
int gs_vec_new(gs_backend *be, const float *host, int64_t n, gs_vec *out);
void gs_vec_free(gs_backend *be, gs_vec *v);

/* ---------------------------------------------------------------------------
 * Ops. Shapes: m = rows (tokens), n/k = columns. Unless stated, in-place
 * use (out aliasing an input of the same shape) is allowed for elementwise
 * ops and the norms. */

/* out[m, n] (+)= x[m, k] . w[n, k]^T (+ bias[n]).
 * bias: may be NULL (data NULL). flags: GS_MM_ACCUM adds into out (the
 * residual add fused into the GEMM). out may be F32 or the act dtype. */
#define GS_MM_ACCUM (1u << 0)
int gs_k_matmul(gs_backend *be, gs_mat out, gs_mat x, const gs_weight *w, const gs_vec *bias,
                unsigned flags);

/* out[m, n] = x * rsqrt(mean(x^2) + eps) * w[n]   (Glm4RMSNorm) */
int gs_k_rmsnorm(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, float eps);
/* resid[m, n] += x[m, n]; then out = rmsnorm(resid) * w. (fused residual) */
int gs_k_add_rmsnorm(gs_backend *be, gs_mat out, gs_mat resid, gs_mat x, const gs_vec *w,
                     float eps);
/* out = (x - mean) * rsqrt(var + eps) * w + b   (nn.LayerNorm, biased var) */
int gs_k_layernorm(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, const gs_vec *b,
                   float eps);

/* out[m, n] = a[m, n] + b[m, n] */
int gs_k_add(gs_backend *be, gs_mat out, gs_mat a, gs_mat b);
/* out[m, I] = silu(gu[m, 0:I]) * gu[m, I:2I]   (gate first, then up) */
int gs_k_silu_mul(gs_backend *be, gs_mat out, gs_mat gu);
/* out = x * 0.5 * (1 + erf(x / sqrt(2)))   (nn.GELU(), exact) */
int gs_k_gelu(gs_backend *be, gs_mat out, gs_mat x);
/* Row-wise softmax of x[m, n] into out (F32 or act dtype). */
int gs_k_softmax(gs_backend *be, gs_mat out, gs_mat x);

/* out[i, :] = table[ids[i], :]; ids: [n] int32 in backend memory,
 * each in [0, rows(table)); out [n, cols(table)]. */
int gs_k_embed(gs_backend *be, gs_mat out, const gs_weight *table, const int32_t *ids);
/* out[i, :] = x[idx[i], :] for i < out.rows; idx int32 in backend memory. */
int gs_k_gather_rows(gs_backend *be, gs_mat out, gs_mat x, const int32_t *idx);
/* Converts/copies x into out (same shape; any of F32/BF16/F16). */
int gs_k_copy(gs_backend *be, gs_mat out, gs_mat x);

/* Text M-RoPE (GLM-4V), in place on qk[m, n_heads * head_dim].
 * pos: [3, m] int32 in backend memory (t, h, w streams; row stride m).
 * Pair j (j < rotary_dim/2) rotates dims (2j, 2j+1) (interleaved, GPT-J
 * style) by angle pos[axis(j)] * inv_freq[j], inv_freq[j] =
 * theta^(-2j/rotary_dim), axis(j) = 0 for j < s0, 1 for j < s0+s1, else 2
 * (s = mrope_section). Dims >= rotary_dim pass through. */
typedef struct {
    int32_t n_heads, head_dim, rotary_dim;
    int32_t mrope_section[3];
    float theta;
} gs_rope_text_params;
int gs_k_rope_text(gs_backend *be, gs_mat qk, const int32_t *pos, const gs_rope_text_params *p);

/* Vision 2-D RoPE, in place on qk[m, n_heads * head_dim] (head_dim 128):
 * pos: [2, m] int32 (patch row h, patch col w; row stride m). With
 * q = head_dim/4 frequencies inv_freq[j] = theta^(-2j/(head_dim/2)),
 * angle[i] = h * inv_freq[i] for i < q, w * inv_freq[i - q] for q <= i < 2q;
 * pairs (i, i + head_dim/2) rotate NeoX style (rotate_half) by angle[i]. */
typedef struct {
    int32_t n_heads, head_dim;
    float theta;
} gs_rope_vision_params;
int gs_k_rope_vision(gs_backend *be, gs_mat qk, const int32_t *pos, const gs_rope_vision_params *p);

/* Adds the learned vision position embedding, bicubic-resampled from a
 * side x side table (weight [side*side, hidden], row = r*side + c) to the
 * patch grid of each token's image, into x[m, hidden]:
 * hw: [4, m] int32 (h, w, H, W per token; row stride m). Follows PyTorch
 * grid_sample(bicubic, align_corners=False, padding_mode=border), A=-0.75,
 * coordinates in F32 (glm4v-spec.md 3.4). */
int gs_k_posembed_add(gs_backend *be, gs_mat x, const gs_weight *table, int32_t side,
                      const int32_t *hw);

/* Attention over contiguous K/V, several independent segments in one call
 * (the vision tower's images, or a whole prompt without cache).
 * q: [m, n_heads*hd]; k, v: [m, n_kv_heads*hd]; out: [m, n_heads*hd].
 * cu: [n_seqs + 1] int32 in backend memory, segment s = rows cu[s]..cu[s+1].
 * Query head h uses KV head h / (n_heads / n_kv_heads). causal: row i of a
 * segment sees rows 0..i of it. max_len: host-side upper bound of segment
 * lengths (launch sizing). Softmax in F32, scale applied to q.k. */
typedef struct {
    int32_t n_heads, n_kv_heads, head_dim;
    float scale;
    int32_t causal;
} gs_attn_params;
int gs_k_attention(gs_backend *be, gs_mat out, gs_mat q, gs_mat k, gs_mat v, const int32_t *cu,
                   int32_t n_seqs, int32_t max_len, const gs_attn_params *p);

/* Paged KV cache of one layer: k and v each [n_pages, page_size,
 * n_kv_heads, head_dim] in the act dtype (BF16 where the act dtype is F16:
 * the same size, without F16's range limit), contiguous. Plain value. */
typedef struct {
    void *k, *v;
    int32_t n_pages, page_size, n_kv_heads, head_dim;
} gs_kv_layer;

/* Writes k[m, n_kv_heads*hd] and v into the cache at slots[i] (= page *
 * page_size + offset; int32 in backend memory; slot < 0 skips the row). */
int gs_k_kv_store(gs_backend *be, const gs_kv_layer *kv, gs_mat k, gs_mat v, const int32_t *slots);

/* A batch of sequences reading the paged cache. All arrays int32 in
 * backend memory. Sequence s owns q rows cu_q[s]..cu_q[s+1] and has
 * kv_len[s] keys in the cache (including this step's, already stored);
 * its query row i (of n_q = cu_q[s+1]-cu_q[s]) sits at cache position
 * kv_len[s] - n_q + i and sees keys 0..that position (causal; with
 * p->causal == 0 every row sees all kv_len[s] keys). Logical page
 * b of sequence s is physical page block_table[s * max_blocks + b]. */
typedef struct {
    int32_t n_seqs;
    const int32_t *cu_q;        /* [n_seqs + 1] */
    const int32_t *kv_len;      /* [n_seqs] */
    const int32_t *block_table; /* [n_seqs, max_blocks] */
    int32_t max_blocks;
    int32_t max_q, max_kv; /* host-side upper bounds (launch sizing) */
} gs_paged_batch;
int gs_k_attention_paged(gs_backend *be, gs_mat out, gs_mat q, const gs_kv_layer *kv,
                         const gs_paged_batch *b, const gs_attn_params *p);

/* ---------------------------------------------------------------------------
 * Sampling: next-token choice on the backend, so that a decode step brings
 * back 4 bytes per sequence instead of a row of logits. */

/* Per-row parameters, in backend memory (plain 4/8-byte fields; the same
 * layout on every backend). Ranges as gs_sampling_validate (sampler.h). */
typedef struct {
    float temperature;        /* <= 0: greedy */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1 (or <= 0): off */
    float min_p;              /* <= 0: off */
    float repetition_penalty; /* 1 (or <= 0): off */
    float presence_penalty;   /* 0: off */
    float frequency_penalty;  /* 0: off */
    int32_t pad_;             /* keeps seed 8-byte aligned; set to 0 */
    uint64_t seed;
    uint64_t offset; /* draw counter: the number of tokens generated so far */
} gs_sample_row;

/* For each row r of logits [n, vocab] (F32, OVERWRITTEN: used as scratch),
 * writes the chosen id to out_ids[r] (int32, backend memory):
 *   repetition penalty (ids listed for the row: logit > 0 -> logit / p,
 *   else logit * p) -> presence / frequency penalties (listed ids with
 *   count > 0: logit -= presence + frequency * count) -> greedy argmax when
 *   temperature <= 0 (ties to the lowest id, NaN never wins) -> else
 *   p = exp((logit - max) / temperature), ids below 1e-12 of the best
 *   dropped -> top-k -> top-p -> min-p (p >= min_p * p_max) -> one draw.
 * Ids tied exactly at the top-k / top-p boundary are all kept; masses are
 * summed in 2^-40 fixed point (independent of thread order); the draw is
 * gs_sample_uniform(seed, offset) scanned over the kept ids in id order. So
 * the same (seed, offset, logits) gives the same id on every backend, up to
 * the rounding of exp. A row whose logits are all NaN / -inf gets -1.
 * rows: [n] gs_sample_row; penalties in CSR form, pen_off NULL for none:
 * row r owns pen_ids / pen_cnt[pen_off[r] .. pen_off[r+1]), each id at most
 * once per row (prompt and output merged), pen_cnt = occurrences in the
 * output (0: prompt only). All arrays in backend memory. */
int gs_k_sample(gs_backend *be, int32_t *out_ids, gs_mat logits, const gs_sample_row *rows,
                const int32_t *pen_off, const int32_t *pen_ids, const int32_t *pen_cnt);

/* The uniform [0, 1) number a row with (seed, offset) draws:
 * Philox4x32-10 keyed by seed, counter (offset low, offset high,
 * 0x5eed5eed, 0) (kernels/philox.h). */
double gs_sample_uniform(uint64_t seed, uint64_t offset);

/* ---------------------------------------------------------------------------
 * Graphs: record a sequence of ops once, replay it many times (a decode
 * step is ~360 ops; one replay removes the launch gap of each on a GPU).
 *
 * Between gs_graph_begin and gs_graph_end the gs_k_* verbs are recorded,
 * not run: they validate their arguments as usual and return 0 (or the
 * validation error; the recording goes on, the caller decides to abort).
 * gs_buf_upload / download / zero, gs_backend_sync, gs_weight_new(_random)
 * and gs_vec_new refuse (GS_EINVAL) and gs_buf_alloc returns NULL while
 * recording, so a recording never depends on host work in the middle;
 * gs_buf_free, gs_vec_free, gs_weight_free and gs_graph_free are deferred
 * (logged) until the recording ends or is aborted. gs_backend_free aborts
 * a running recording.
 * A graph bakes in every argument of the recorded calls: buffer addresses,
 * shapes and host-side values (max_len, max_kv, eps ...). Whatever changes
 * between replays must live in backend memory at the addresses recorded;
 * the caller rewrites it (gs_buf_upload) before each gs_graph_launch.
 * Weights, vecs and buffers a graph uses must outlive it.
 *
 * CUDA captures its stream (cudaGraph); run the same ops once eagerly
 * before recording them, so that lazily made device state (scratch for
 * split-KV partials, bias copies, GEMM plans) exists before the capture.
 * The CPU backend records the calls and replays them in order. */

typedef struct gs_graph gs_graph; /* opaque */

/* Starts recording. GS_EBUSY if a recording is running, GS_ENOTSUP if the
 * backend cannot record. */
int gs_graph_begin(gs_backend *be);
/* Stops recording; on success *out owns the graph (gs_graph_free).
 * GS_EDEVICE when the device refused the capture (an op that cannot be
 * captured); GS_EINVAL without a recording or with out NULL (the
 * recording is dropped). The backend is usable again either way. */
int gs_graph_end(gs_backend *be, gs_graph **out);
/* Stops recording and drops it (after an op failed mid-recording).
 * No-op when nothing is recording. */
void gs_graph_abort(gs_backend *be);
/* 1 while recording. */
int gs_graph_recording(const gs_backend *be);
/* Runs the recorded ops (asynchronously on a GPU, like any op). GS_EAGAIN
 * when the graph went stale (the backend moved memory the capture used),
 * and again at every launch until it is freed: run the ops eagerly once and
 * record again. GS_EINVAL while recording or for another backend's graph.
 * Other codes: an op failed during the replay (CPU) or the launch failed. */
int gs_graph_launch(gs_backend *be, gs_graph *g);
void gs_graph_free(gs_backend *be, gs_graph *g); /* NULL: no-op */

#ifdef __cplusplus
}
#endif

#endif

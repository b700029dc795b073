/* cuda_ops.h - the CUDA backend's internal entry points, one per verb of
 * kernels.h, on a gs_cuda device context. C linkage; used by the vtable
 * glue (vtable.c), by sample.cu / graph.cu and by tests/gpu. The model never
 * includes this header: it calls kernels.h.
 *
 * Every function returns 0 or a negative GS_E* code. Argument errors are
 * GS_EINVAL with a log line naming the op; CUDA / cuBLAS failures are
 * GS_EDEVICE with a log line naming the call; nothing exits.
 * Ops are asynchronous on the context's stream (issue order); out-of-range
 * indices found by a kernel (token ids, gather rows, KV slots, pages) are
 * skipped on the device and reported as GS_ERANGE by the next
 * gs_cuda_sync / gs_cuda_download.
 * Threading: one context is used by one thread at a time. */
#ifndef GS_CUDA_OPS_H
#define GS_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/err.h"
#include "kernels/kernels.h"

typedef struct gs_cuda gs_cuda; /* opaque device context */

/* A weight as the kernels see it: [rows, cols] row-major in device memory.
 * dt GS_DT_BF16 (GS_DT_F16 on an F16 context, gs_cuda_act_dtype): data
 * holds the values; GS_DT_Q8 / GS_DT_Q4: data holds q and s the scales,
 * in kernels.h's "Quantized weights" layout. Plain value; does not own
 * data. */
typedef struct {
    const void *data;
    int64_t rows, cols;
    gs_dtype dt;
    const float *s;
} gs_cuda_wview;

/* ---- context, memory ----------------------------------------------------- */

/* The context behind a backend made by gs_cuda_backend_new, or NULL when
 * be is not a CUDA backend (vtable.c). Borrowed; lives as long as be. */
gs_cuda *gs_cuda_of(gs_backend *be);
/* The constructor kernels.c calls for GS_BACKEND_CUDA: on success *out
 * owns a backend whose vtable runs the functions below. */
int gs_cuda_backend_new(const gs_backend_params *p, gs_backend **out, gs_diag *d);

/* Opens p->device: stream, cuBLASLt handle and workspace, memory pool.
 * On success *out owns the context (gs_cuda_ctx_free). GS_EDEVICE when
 * there is no usable device (d says why). */
int gs_cuda_ctx_new(const gs_backend_params *p, gs_cuda **out, gs_diag *d);
void gs_cuda_ctx_free(gs_cuda *c);          /* NULL: no-op; waits for the stream */
const char *gs_cuda_name(const gs_cuda *c); /* "cuda:0 NVIDIA H100 (sm_90)" */
/* Compute capability as 10 * major + minor (90 for H100). */
int gs_cuda_arch(const gs_cuda *c);
/* The activation dtype: GS_DT_BF16 on sm_80+, GS_DT_F16 below (no BF16
 * GEMMs there) or after GS_TUNE_CUDA_F16. 16-bit weights are
 * stored in it. The residual stream stays F32 when it is F16
 * (gs_backend_resid_dtype): GLM's residual exceeds 65504. */
gs_dtype gs_cuda_act_dtype(const gs_cuda *c);
int gs_cuda_sync(gs_cuda *c);
int gs_cuda_mem_info(gs_cuda *c, size_t *free_bytes, size_t *total_bytes);
/* gs_backend_set_tuning (values checked by kernels.c). */
void gs_cuda_set_tuning(gs_cuda *c, const gs_backend_tuning *t);

/* Returns owned device memory (gs_cuda_free), 256-byte aligned, or NULL.
 * Stream-ordered pool: cheap to call per forward pass. NULL while a graph
 * is being captured (allocate before capturing). gs_vec data comes from
 * here too (kernels.c gs_vec_new). */
void *gs_cuda_alloc(gs_cuda *c, size_t bytes);
void gs_cuda_free(gs_cuda *c, void *p); /* NULL: no-op; stream-ordered */
/* Host <-> device copies; both borrow. Upload returns once `src` may be
 * reused; download waits for all earlier work and for the copy. */
int gs_cuda_upload(gs_cuda *c, void *dst, const void *src, size_t bytes);
int gs_cuda_download(gs_cuda *c, void *dst, const void *src, size_t bytes);
int gs_cuda_zero(gs_cuda *c, void *dst, size_t bytes);

/* ---- weights and vectors ------------------------------------------------- */

/* Uploads a [rows, cols] host weight of dtype dt (BF16, F16 or F32; borrowed
 * for the call) into new device memory as BF16. *data owns it (release with
 * gs_cuda_weight_release); *bytes = its size. */
int gs_cuda_weight_upload(gs_cuda *c, const void *host, gs_dtype dt, int64_t rows, int64_t cols,
                          void **data, size_t *bytes);
/* Same, filled on the device: element (r, c) = BF16(gs_rand_uniform(seed,
 * r * cols + c, scale)) (backend_impl.h), identical to the CPU backend. */
int gs_cuda_weight_random(gs_cuda *c, int64_t rows, int64_t cols, uint64_t seed, float scale,
                          void **data, size_t *bytes);
void gs_cuda_weight_release(gs_cuda *c, void *data); /* NULL: no-op */
/* A quantized [rows, cols] weight of qdt (GS_DT_Q8 / GS_DT_Q4) in one
 * device allocation *data (release with gs_cuda_weight_release): q at
 * *data, the scales at *s (inside it, 256-byte aligned). _upload copies
 * host q and s (borrowed for the call); _random makes them on the device
 * from gs_rand_uniform(seed, r * cols + c, scale) exactly as gs_quantize
 * quantizes F32 values (bit for bit the CPU backend's weight). *bytes =
 * the allocation's size. */
int gs_cuda_weight_quant_upload(gs_cuda *c, gs_dtype qdt, int64_t rows, int64_t cols, const void *q,
                                const float *s_host, void **data, float **s, size_t *bytes);
int gs_cuda_weight_quant_random(gs_cuda *c, gs_dtype qdt, int64_t rows, int64_t cols, uint64_t seed,
                                float scale, void **data, float **s, size_t *bytes);
/* The device view of a weight made by this backend (tests read q and s
 * back through it); GS_EINVAL when w is not a CUDA weight of be. */
int gs_cuda_weight_view(gs_backend *be, const gs_weight *w, gs_cuda_wview *out);

/* ---- ops (same contracts as kernels.h) ------------------------------------ */

int gs_cuda_matmul(gs_cuda *c, gs_mat out, gs_mat x, gs_cuda_wview w, const gs_vec *bias,
                   unsigned flags);
int gs_cuda_rmsnorm(gs_cuda *c, gs_mat out, gs_mat x, const gs_vec *w, float eps);
int gs_cuda_add_rmsnorm(gs_cuda *c, gs_mat out, gs_mat resid, gs_mat x, const gs_vec *w, float eps);
int gs_cuda_layernorm(gs_cuda *c, gs_mat out, gs_mat x, const gs_vec *w, const gs_vec *b,
                      float eps);
int gs_cuda_add(gs_cuda *c, gs_mat out, gs_mat a, gs_mat b);
int gs_cuda_silu_mul(gs_cuda *c, gs_mat out, gs_mat gu);
int gs_cuda_gelu(gs_cuda *c, gs_mat out, gs_mat x);
int gs_cuda_softmax(gs_cuda *c, gs_mat out, gs_mat x);
int gs_cuda_copy(gs_cuda *c, gs_mat out, gs_mat x);
int gs_cuda_embed(gs_cuda *c, gs_mat out, gs_cuda_wview table, const int32_t *ids);
int gs_cuda_gather_rows(gs_cuda *c, gs_mat out, gs_mat x, const int32_t *idx);
int gs_cuda_rope_text(gs_cuda *c, gs_mat qk, const int32_t *pos, const gs_rope_text_params *p);
int gs_cuda_rope_vision(gs_cuda *c, gs_mat qk, const int32_t *pos, const gs_rope_vision_params *p);
int gs_cuda_posembed_add(gs_cuda *c, gs_mat x, gs_cuda_wview table, int32_t side,
                         const int32_t *hw);
int gs_cuda_attention(gs_cuda *c, gs_mat out, gs_mat q, gs_mat k, gs_mat v, const int32_t *cu,
                      int32_t n_seqs, int32_t max_len, const gs_attn_params *p);
int gs_cuda_kv_store(gs_cuda *c, const gs_kv_layer *kv, gs_mat k, gs_mat v, const int32_t *slots);
int gs_cuda_attention_paged(gs_cuda *c, gs_mat out, gs_mat q, const gs_kv_layer *kv,
                            const gs_paged_batch *b, const gs_attn_params *p);

/* ---- graph capture support (graph.cu) ------------------------------------- */

/* 1 while a stream capture is in progress on the context's stream. */
int gs_cuda_capturing(const gs_cuda *c);

/* ---- sampling and graphs (sample.cu, graph.cu) ---------------------------- */

/* gs_k_sample on the context's stream (kernels.h has the semantics). */
int gs_cuda_k_sample(gs_cuda *c, int32_t *out_ids, gs_mat logits, const gs_sample_row *rows,
                     const int32_t *pen_off, const int32_t *pen_ids, const int32_t *pen_cnt);

/* Native graphs behind gs_graph_* (kernels.h): stream capture of the
 * context's stream. _end returns an owned handle (gs_cuda_graph_free) in
 * *native; _launch returns GS_EAGAIN when scratch memory or a bias copy
 * moved since the capture. */
int gs_cuda_graph_begin(gs_cuda *c);
int gs_cuda_graph_end(gs_cuda *c, void **native);
void gs_cuda_graph_abort(gs_cuda *c);
int gs_cuda_graph_launch(gs_cuda *c, void *native);
void gs_cuda_graph_free(gs_cuda *c, void *native);

#ifdef __cplusplus
}
#endif

#endif

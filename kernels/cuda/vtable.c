/* vtable.c - the CUDA backend behind kernels.h: fills the gs_backend_ops
 * table (backend_impl.h) with the gs_cuda_* functions of cuda_ops.h.
 *
 * Owns: the cuda_backend struct (whose first member is struct gs_backend)
 * and the device context inside it; weights (struct gs_weight + a device
 * pointer). kernels.c has validated shapes, dtypes and pointers before any
 * call arrives here. Threading: one thread at a time, as kernels.h says. */
#include <stdlib.h>

#include "common/log.h"
#include "kernels/backend_impl.h"
#include "kernels/cuda/cuda_ops.h"

typedef struct {
    struct gs_backend base; /* first: gs_backend * <-> cuda_backend * */
    gs_cuda *c;
} cuda_backend;

typedef struct {
    struct gs_weight base; /* first; base.dt: the act dtype, GS_DT_Q8 or GS_DT_Q4 */
    void *data;            /* [rows, cols] 16-bit values, or q (and s) of a quantized weight */
    float *s;              /* quantized: the scales, inside data's allocation; else NULL */
} cuda_weight;

static const gs_backend_ops cuda_ops;

static gs_cuda *ctx(gs_backend *be)
{
    return ((cuda_backend *)be)->c;
}

static gs_cuda_wview wv(const gs_weight *w)
{
    const cuda_weight *cw = (const cuda_weight *)w;
    gs_cuda_wview v = {cw->data, w->rows, w->cols, w->dt, cw->s};
    return v;
}

gs_cuda *gs_cuda_of(gs_backend *be)
{
    if (!be || be->kind != GS_BACKEND_CUDA || be->ops != &cuda_ops)
        return NULL;
    return ctx(be);
}

/* ---- lifetime, memory ------------------------------------------------------ */

static void cu_destroy(gs_backend *be)
{
    gs_cuda_ctx_free(ctx(be));
    free(be);
}

static int cu_sync(gs_backend *be)
{
    return gs_cuda_sync(ctx(be));
}

static int cu_mem_info(gs_backend *be, size_t *free_bytes, size_t *total_bytes)
{
    return gs_cuda_mem_info(ctx(be), free_bytes, total_bytes);
}

static void cu_set_tuning(gs_backend *be, const gs_backend_tuning *t)
{
    gs_cuda_set_tuning(ctx(be), t);
    be->act_dt = gs_cuda_act_dtype(ctx(be)); /* GS_TUNE_CUDA_F16 may have switched it */
}

static void *cu_alloc(gs_backend *be, size_t bytes)
{
    return gs_cuda_alloc(ctx(be), bytes);
}

static void cu_free(gs_backend *be, void *p)
{
    gs_cuda_free(ctx(be), p);
}

static int cu_upload(gs_backend *be, void *dst, const void *src, size_t bytes)
{
    return gs_cuda_upload(ctx(be), dst, src, bytes);
}

static int cu_download(gs_backend *be, void *dst, const void *src, size_t bytes)
{
    return gs_cuda_download(ctx(be), dst, src, bytes);
}

static int cu_zero(gs_backend *be, void *dst, size_t bytes)
{
    return gs_cuda_zero(ctx(be), dst, bytes);
}

/* ---- weights ----------------------------------------------------------------- */

static int weight_wrap(void *data, float *s, gs_dtype dt, size_t bytes, int64_t rows, int64_t cols,
                       gs_weight **out)
{
    cuda_weight *w = calloc(1, sizeof *w);
    if (!w)
        return GS_ENOMEM;
    w->base.rows = rows;
    w->base.cols = cols;
    w->base.dt = dt;
    w->base.bytes = bytes;
    w->data = data;
    w->s = s;
    *out = &w->base;
    return 0;
}

int gs_cuda_weight_view(gs_backend *be, const gs_weight *w, gs_cuda_wview *out)
{
    if (!gs_cuda_of(be) || !w || !out)
        return GS_EINVAL;
    *out = wv(w);
    return 0;
}

static int cu_weight_new(gs_backend *be, const void *host, gs_dtype dt, int64_t rows, int64_t cols,
                         gs_weight **out)
{
    void *data = NULL;
    size_t bytes = 0;
    int rc = gs_cuda_weight_upload(ctx(be), host, dt, rows, cols, &data, &bytes);
    if (rc)
        return rc;
    rc = weight_wrap(data, NULL, gs_cuda_act_dtype(ctx(be)), bytes, rows, cols, out);
    if (rc)
        gs_cuda_weight_release(ctx(be), data);
    return rc;
}

static int cu_weight_new_random(gs_backend *be, gs_dtype dt, int64_t rows, int64_t cols,
                                uint64_t seed, float scale, gs_weight **out)
{
    void *data = NULL;
    float *s = NULL;
    size_t bytes = 0;
    int rc;
    if (dt == GS_DT_Q8 || dt == GS_DT_Q4) {
        rc = gs_cuda_weight_quant_random(ctx(be), dt, rows, cols, seed, scale, &data, &s, &bytes);
    } else {
        /* 16-bit values whatever the requested float dtype (base.dt says which) */
        rc = gs_cuda_weight_random(ctx(be), rows, cols, seed, scale, &data, &bytes);
        dt = gs_cuda_act_dtype(ctx(be));
    }
    if (rc)
        return rc;
    rc = weight_wrap(data, s, dt, bytes, rows, cols, out);
    if (rc)
        gs_cuda_weight_release(ctx(be), data);
    return rc;
}

static int cu_weight_new_quant(gs_backend *be, gs_dtype qdt, int64_t rows, int64_t cols,
                               const void *q, const float *s_host, gs_weight **out)
{
    void *data = NULL;
    float *s = NULL;
    size_t bytes = 0;
    int rc = gs_cuda_weight_quant_upload(ctx(be), qdt, rows, cols, q, s_host, &data, &s, &bytes);
    if (rc)
        return rc;
    rc = weight_wrap(data, s, qdt, bytes, rows, cols, out);
    if (rc)
        gs_cuda_weight_release(ctx(be), data);
    return rc;
}

/* Device weights cannot live in host memory: the loader uploads instead
 * (gs_weight_new straight from the checkpoint mapping). */
static int cu_weight_wrap_host(gs_backend *be, const void *host, gs_dtype dt, int64_t rows,
                               int64_t cols, gs_weight **out)
{
    (void)be, (void)host, (void)dt, (void)rows, (void)cols, (void)out;
    return GS_ENOTSUP;
}

static void cu_weight_free(gs_backend *be, gs_weight *w)
{
    cuda_weight *cw = (cuda_weight *)w;
    gs_cuda_weight_release(ctx(be), cw->data);
    free(cw);
}

/* ---- ops ---------------------------------------------------------------------- */

static int cu_matmul(gs_backend *be, gs_mat out, gs_mat x, const gs_weight *w, const gs_vec *bias,
                     unsigned flags)
{
    return gs_cuda_matmul(ctx(be), out, x, wv(w), bias, flags);
}

static int cu_rmsnorm(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, float eps)
{
    return gs_cuda_rmsnorm(ctx(be), out, x, w, eps);
}

static int cu_add_rmsnorm(gs_backend *be, gs_mat out, gs_mat resid, gs_mat x, const gs_vec *w,
                          float eps)
{
    return gs_cuda_add_rmsnorm(ctx(be), out, resid, x, w, eps);
}

static int cu_layernorm(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, const gs_vec *b,
                        float eps)
{
    return gs_cuda_layernorm(ctx(be), out, x, w, b, eps);
}

static int cu_add(gs_backend *be, gs_mat out, gs_mat a, gs_mat b)
{
    return gs_cuda_add(ctx(be), out, a, b);
}

static int cu_silu_mul(gs_backend *be, gs_mat out, gs_mat gu)
{
    return gs_cuda_silu_mul(ctx(be), out, gu);
}

static int cu_gelu(gs_backend *be, gs_mat out, gs_mat x)
{
    return gs_cuda_gelu(ctx(be), out, x);
}

static int cu_softmax(gs_backend *be, gs_mat out, gs_mat x)
{
    return gs_cuda_softmax(ctx(be), out, x);
}

static int cu_embed(gs_backend *be, gs_mat out, const gs_weight *table, const int32_t *ids)
{
    return gs_cuda_embed(ctx(be), out, wv(table), ids);
}

static int cu_gather_rows(gs_backend *be, gs_mat out, gs_mat x, const int32_t *idx)
{
    return gs_cuda_gather_rows(ctx(be), out, x, idx);
}

static int cu_copy(gs_backend *be, gs_mat out, gs_mat x)
{
    return gs_cuda_copy(ctx(be), out, x);
}

static int cu_rope_text(gs_backend *be, gs_mat qk, const int32_t *pos, const gs_rope_text_params *p)
{
    return gs_cuda_rope_text(ctx(be), qk, pos, p);
}

static int cu_rope_vision(gs_backend *be, gs_mat qk, const int32_t *pos,
                          const gs_rope_vision_params *p)
{
    return gs_cuda_rope_vision(ctx(be), qk, pos, p);
}

static int cu_posembed_add(gs_backend *be, gs_mat x, const gs_weight *table, int32_t side,
                           const int32_t *hw)
{
    return gs_cuda_posembed_add(ctx(be), x, wv(table), side, hw);
}

static int cu_attention(gs_backend *be, gs_mat out, gs_mat q, gs_mat k, gs_mat v, const int32_t *cu,
                        int32_t n_seqs, int32_t max_len, const gs_attn_params *p)
{
    return gs_cuda_attention(ctx(be), out, q, k, v, cu, n_seqs, max_len, p);
}

static int cu_kv_store(gs_backend *be, const gs_kv_layer *kv, gs_mat k, gs_mat v,
                       const int32_t *slots)
{
    return gs_cuda_kv_store(ctx(be), kv, k, v, slots);
}

static int cu_attention_paged(gs_backend *be, gs_mat out, gs_mat q, const gs_kv_layer *kv,
                              const gs_paged_batch *b, const gs_attn_params *p)
{
    return gs_cuda_attention_paged(ctx(be), out, q, kv, b, p);
}

static int cu_sample(gs_backend *be, int32_t *out_ids, gs_mat logits, const gs_sample_row *rows,
                     const int32_t *pen_off, const int32_t *pen_ids, const int32_t *pen_cnt)
{
    return gs_cuda_k_sample(ctx(be), out_ids, logits, rows, pen_off, pen_ids, pen_cnt);
}

static int cu_graph_begin(gs_backend *be)
{
    return gs_cuda_graph_begin(ctx(be));
}

static int cu_graph_end(gs_backend *be, void **native)
{
    return gs_cuda_graph_end(ctx(be), native);
}

static void cu_graph_abort(gs_backend *be)
{
    gs_cuda_graph_abort(ctx(be));
}

static int cu_graph_launch(gs_backend *be, void *native)
{
    return gs_cuda_graph_launch(ctx(be), native);
}

static void cu_graph_free(gs_backend *be, void *native)
{
    gs_cuda_graph_free(ctx(be), native);
}

static const gs_backend_ops cuda_ops = {
    .name = "cuda",
    .destroy = cu_destroy,
    .sync = cu_sync,
    .mem_info = cu_mem_info,
    .set_tuning = cu_set_tuning,
    .alloc = cu_alloc,
    .free = cu_free,
    .upload = cu_upload,
    .download = cu_download,
    .zero = cu_zero,
    .weight_new = cu_weight_new,
    .weight_new_random = cu_weight_new_random,
    .weight_free = cu_weight_free,
    .weight_wrap_host = cu_weight_wrap_host,
    .weight_new_quant = cu_weight_new_quant,
    .weight_wrap_quant = NULL, /* device memory: GS_ENOTSUP, the loader uploads */
    .matmul = cu_matmul,
    .rmsnorm = cu_rmsnorm,
    .add_rmsnorm = cu_add_rmsnorm,
    .layernorm = cu_layernorm,
    .add = cu_add,
    .silu_mul = cu_silu_mul,
    .gelu = cu_gelu,
    .softmax = cu_softmax,
    .embed = cu_embed,
    .gather_rows = cu_gather_rows,
    .copy = cu_copy,
    .rope_text = cu_rope_text,
    .rope_vision = cu_rope_vision,
    .posembed_add = cu_posembed_add,
    .attention = cu_attention,
    .kv_store = cu_kv_store,
    .attention_paged = cu_attention_paged,
    .sample = cu_sample,
    .graph_begin = cu_graph_begin,
    .graph_end = cu_graph_end,
    .graph_abort = cu_graph_abort,
    .graph_launch = cu_graph_launch,
    .graph_free = cu_graph_free,
};

int gs_cuda_backend_new(const gs_backend_params *p, gs_backend **out, gs_diag *d)
{
    *out = NULL;
    cuda_backend *b = calloc(1, sizeof *b);
    if (!b)
        return gs_diag_set(d, GS_ENOMEM, "cuda backend: out of memory");
    int rc = gs_cuda_ctx_new(p, &b->c, d);
    if (rc) {
        free(b);
        return rc;
    }
    b->base.ops = &cuda_ops;
    b->base.kind = GS_BACKEND_CUDA;
    b->base.act_dt = gs_cuda_act_dtype(b->c);
    *out = &b->base;
    return 0;
}

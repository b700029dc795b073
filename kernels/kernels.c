/* kernels.c - backend selection, argument validation, dispatch.
 *
 * Owns: the checks every backend relies on (shapes agree, stride >= cols,
 * dtypes allowed, head counts divide, pointers non-NULL, no overlap where
 * an op cannot run in place). A failed check logs one line naming the op
 * and the shapes and returns GS_EINVAL; nothing reaches a backend then.
 * Each verb then packs its arguments into one gs_op value and hands it to
 * gs_op_submit (graph.c), which runs it or, while a graph is recorded on a
 * backend without native graphs, records it.
 * While a graph is recorded (either kind) the host-side calls refuse here,
 * the same on every backend: upload, download, zero and sync return
 * GS_EINVAL, gs_buf_alloc returns NULL, gs_weight_new(_random) and
 * gs_vec_new return GS_EINVAL. Frees (gs_buf_free, gs_vec_free,
 * gs_weight_free, gs_graph_free) are DEFERRED, not refused: logged, queued
 * on the recording and done when it ends or is aborted (they return void,
 * so a refusal would be a silent leak). gs_backend_free aborts a running
 * recording first.
 * Does not own: the arithmetic (kernels/cpu, kernels/cuda) or the content
 * of index arrays in backend memory (the backends check what they can).
 * Threading: no state of its own; a backend is used by one thread at a time. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/log.h"
#include "kernels/backend_impl.h"
#include "kernels/graph_impl.h"
#include "kernels/kernels.h"

size_t gs_dtype_size(gs_dtype dt)
{
    switch (dt) {
    case GS_DT_F32:
    case GS_DT_I32:
        return 4;
    case GS_DT_BF16:
    case GS_DT_F16:
        return 2;
    case GS_DT_Q8:
        return 1;
    case GS_DT_Q4:
        return 0; /* packed: gs_quant_q_bytes */
    }
    return 0;
}

const char *gs_dtype_name(gs_dtype dt)
{
    switch (dt) {
    case GS_DT_F32:
        return "f32";
    case GS_DT_BF16:
        return "bf16";
    case GS_DT_F16:
        return "f16";
    case GS_DT_I32:
        return "i32";
    case GS_DT_Q8:
        return "q8";
    case GS_DT_Q4:
        return "q4";
    }
    return "?";
}

/* ---- backend ------------------------------------------------------------ */

int gs_backend_set_tuning(gs_backend *be, const gs_backend_tuning *t)
{
    if (!be || !t ||
        (t->flags &
         ~(GS_TUNE_NO_GEMV | GS_TUNE_ATTN_SIMPLE | GS_TUNE_CPU_GEMM_F32 | GS_TUNE_CUDA_F16)) ||
        t->attn_splits < 0 || t->attn_splits > 128)
        return GS_EINVAL;
    if (be->ops->set_tuning)
        be->ops->set_tuning(be, t);
    return 0;
}

int gs_backend_new(const gs_backend_params *p, gs_backend **out, gs_diag *d)
{
    gs_backend_params def = {.kind = GS_BACKEND_CPU};
    if (!out)
        return gs_diag_set(d, GS_EINVAL, "gs_backend_new: out is NULL");
    *out = NULL;
    if (!p)
        p = &def;
    switch (p->kind) {
    case GS_BACKEND_CPU:
        return gs_cpu_backend_new(p, out, d);
    case GS_BACKEND_CUDA:
#ifdef GS_HAVE_CUDA
        return gs_cuda_backend_new(p, out, d);
#else
        return gs_diag_set(d, GS_ENOTSUP, "the CUDA backend is not built in (GS_CUDA=OFF)");
#endif
    }
    return gs_diag_set(d, GS_EINVAL, "unknown backend kind %d", (int)p->kind);
}

void gs_backend_free(gs_backend *be)
{
    if (!be)
        return;
    if (be->recording) {
        gs_log_warn("gs_backend_free: a graph recording is running; aborting it");
        gs_graph_abort(be);
    }
    be->ops->destroy(be);
}

const char *gs_backend_name(const gs_backend *be)
{
    return be ? be->ops->name : "none";
}

gs_backend_kind gs_backend_get_kind(const gs_backend *be)
{
    return be->kind;
}

gs_dtype gs_backend_act_dtype(const gs_backend *be)
{
    return be->act_dt;
}

gs_dtype gs_backend_resid_dtype(const gs_backend *be)
{
    return be->act_dt == GS_DT_F16 ? GS_DT_F32 : be->act_dt;
}

/* 1 (with a log line naming op) when be is recording a graph: host-side
 * calls refuse then. */
static int recording(const gs_backend *be, const char *op)
{
    if (!be || !be->recording)
        return 0;
    gs_log_error("%s: not allowed while a graph is being recorded", op);
    return 1;
}

int gs_backend_sync(gs_backend *be)
{
    if (!be || recording(be, "gs_backend_sync"))
        return GS_EINVAL;
    return be->ops->sync(be);
}

int gs_backend_mem_info(gs_backend *be, size_t *free_bytes, size_t *total_bytes)
{
    size_t f = 0, t = 0;
    if (!be)
        return GS_EINVAL;
    int rc = be->ops->mem_info(be, &f, &t);
    if (free_bytes)
        *free_bytes = f;
    if (total_bytes)
        *total_bytes = t;
    return rc;
}

/* ---- buffers ------------------------------------------------------------ */

void *gs_buf_alloc(gs_backend *be, size_t bytes)
{
    if (!be || recording(be, "gs_buf_alloc"))
        return NULL;
    return be->ops->alloc(be, bytes ? bytes : 1);
}

void gs_buf_free(gs_backend *be, void *p)
{
    if (!be || !p)
        return;
    if (be->recording) {
        gs_log_warn("gs_buf_free: called while a graph is being recorded; freed when it ends");
        gs_graph_defer_free(be, GS_DEFER_BUF, p);
        return;
    }
    be->ops->free(be, p);
}

int gs_buf_upload(gs_backend *be, void *dst, const void *src, size_t bytes)
{
    if (recording(be, "gs_buf_upload"))
        return GS_EINVAL;
    if (!bytes)
        return 0;
    if (!be || !dst || !src) {
        gs_log_error("gs_buf_upload: NULL argument (%zu bytes)", bytes);
        return GS_EINVAL;
    }
    return be->ops->upload(be, dst, src, bytes);
}

int gs_buf_download(gs_backend *be, void *dst, const void *src, size_t bytes)
{
    if (!be || recording(be, "gs_buf_download"))
        return GS_EINVAL;
    if (!bytes)
        return be->ops->sync(be);
    if (!dst || !src) {
        gs_log_error("gs_buf_download: NULL argument (%zu bytes)", bytes);
        return GS_EINVAL;
    }
    return be->ops->download(be, dst, src, bytes);
}

int gs_buf_zero(gs_backend *be, void *dst, size_t bytes)
{
    if (recording(be, "gs_buf_zero"))
        return GS_EINVAL;
    if (!bytes)
        return 0;
    if (!be || !dst) {
        gs_log_error("gs_buf_zero: NULL argument (%zu bytes)", bytes);
        return GS_EINVAL;
    }
    return be->ops->zero(be, dst, bytes);
}

/* ---- weights and vectors ------------------------------------------------ */

static int float_dt(gs_dtype dt)
{
    return dt == GS_DT_F32 || dt == GS_DT_BF16 || dt == GS_DT_F16;
}

/* dt_ok: float_dt or (quant) gs_dtype_is_quant. */
static int weight_args_q(const char *op, gs_backend *be, gs_dtype dt, int quant, int64_t rows,
                         int64_t cols, gs_weight **out)
{
    if (!be || !out) {
        gs_log_error("%s: NULL backend or out", op);
        return GS_EINVAL;
    }
    *out = NULL;
    if (recording(be, op))
        return GS_EINVAL;
    int dt_ok = quant ? gs_dtype_is_quant(dt) : float_dt(dt);
    if (!dt_ok || rows < 1 || cols < 1 ||
        (uint64_t)rows > (uint64_t)(SIZE_MAX / 4) / (uint64_t)cols) {
        gs_log_error("%s: bad weight [%lld x %lld] %s", op, (long long)rows, (long long)cols,
                     gs_dtype_name(dt));
        return GS_EINVAL;
    }
    return 0;
}

static int weight_args(const char *op, gs_backend *be, gs_dtype dt, int64_t rows, int64_t cols,
                       gs_weight **out)
{
    return weight_args_q(op, be, dt, 0, rows, cols, out);
}

int gs_weight_new(gs_backend *be, const void *host, gs_dtype dt, int64_t rows, int64_t cols,
                  gs_weight **out)
{
    int rc = weight_args("gs_weight_new", be, dt, rows, cols, out);
    if (rc)
        return rc;
    if (!host) {
        gs_log_error("gs_weight_new: host data is NULL");
        return GS_EINVAL;
    }
    return be->ops->weight_new(be, host, dt, rows, cols, out);
}

int gs_weight_wrap_host(gs_backend *be, const void *host, gs_dtype dt, int64_t rows, int64_t cols,
                        gs_weight **out)
{
    int rc = weight_args("gs_weight_wrap_host", be, dt, rows, cols, out);
    if (rc)
        return rc;
    if (!host || (uintptr_t)host % gs_dtype_size(dt)) {
        gs_log_error("gs_weight_wrap_host: host data NULL or not aligned to its %s dtype",
                     gs_dtype_name(dt));
        return GS_EINVAL;
    }
    if (!be->ops->weight_wrap_host)
        return GS_ENOTSUP;
    return be->ops->weight_wrap_host(be, host, dt, rows, cols, out);
}

int gs_weight_new_quant(gs_backend *be, gs_dtype qdt, int64_t rows, int64_t cols, const void *q,
                        const float *s, gs_weight **out)
{
    int rc = weight_args_q("gs_weight_new_quant", be, qdt, 1, rows, cols, out);
    if (rc)
        return rc;
    if (!q || !s) {
        gs_log_error("gs_weight_new_quant: q or s is NULL");
        return GS_EINVAL;
    }
    if (!be->ops->weight_new_quant)
        return GS_ENOTSUP;
    return be->ops->weight_new_quant(be, qdt, rows, cols, q, s, out);
}

int gs_weight_wrap_quant(gs_backend *be, gs_dtype qdt, int64_t rows, int64_t cols, const void *q,
                         const float *s, gs_weight **out)
{
    int rc = weight_args_q("gs_weight_wrap_quant", be, qdt, 1, rows, cols, out);
    if (rc)
        return rc;
    if (!q || !s || (uintptr_t)s % 4) {
        gs_log_error("gs_weight_wrap_quant: q or s NULL, or s not 4-byte aligned");
        return GS_EINVAL;
    }
    if (!be->ops->weight_wrap_quant)
        return GS_ENOTSUP;
    return be->ops->weight_wrap_quant(be, qdt, rows, cols, q, s, out);
}

int gs_weight_new_random(gs_backend *be, gs_dtype dt, int64_t rows, int64_t cols, uint64_t seed,
                         float scale, gs_weight **out)
{
    int rc = weight_args_q("gs_weight_new_random", be, dt, gs_dtype_is_quant(dt), rows, cols, out);
    if (rc)
        return rc;
    if (!isfinite(scale)) {
        gs_log_error("gs_weight_new_random: scale is not finite");
        return GS_EINVAL;
    }
    return be->ops->weight_new_random(be, dt, rows, cols, seed, scale, out);
}

void gs_weight_free(gs_backend *be, gs_weight *w)
{
    if (!be || !w)
        return;
    if (be->recording) {
        gs_log_warn("gs_weight_free: called while a graph is being recorded; freed when it ends");
        gs_graph_defer_free(be, GS_DEFER_WEIGHT, w);
        return;
    }
    be->ops->weight_free(be, w);
}

int64_t gs_weight_rows(const gs_weight *w)
{
    return w ? w->rows : 0;
}

int64_t gs_weight_cols(const gs_weight *w)
{
    return w ? w->cols : 0;
}

size_t gs_weight_bytes(const gs_weight *w)
{
    return w ? w->bytes : 0;
}

int gs_vec_new(gs_backend *be, const float *host, int64_t n, gs_vec *out)
{
    if (!out)
        return GS_EINVAL;
    out->data = NULL;
    out->n = 0;
    if (recording(be, "gs_vec_new"))
        return GS_EINVAL;
    if (!be || !host || n < 1 || (uint64_t)n > SIZE_MAX / 4) {
        gs_log_error("gs_vec_new: bad arguments (n %lld)", (long long)n);
        return GS_EINVAL;
    }
    float *p = gs_buf_alloc(be, (size_t)n * 4);
    if (!p)
        return GS_ENOMEM;
    int rc = gs_buf_upload(be, p, host, (size_t)n * 4);
    if (rc) {
        gs_buf_free(be, p);
        return rc;
    }
    out->data = p;
    out->n = n;
    return 0;
}

void gs_vec_free(gs_backend *be, gs_vec *v)
{
    if (!v)
        return;
    gs_buf_free(be, v->data);
    v->data = NULL;
    v->n = 0;
}

/* ---- validation helpers ------------------------------------------------- */

#define DT_F32 (1u << GS_DT_F32)
#define DT_BF16 (1u << GS_DT_BF16)
#define DT_F16 (1u << GS_DT_F16)
#define DT_I32 (1u << GS_DT_I32)
#define DT_FLOAT (DT_F32 | DT_BF16 | DT_F16)

static unsigned act_mask(const gs_backend *be)
{
    return 1u << be->act_dt;
}

/* The act dtype or the residual dtype (gs_backend_resid_dtype). */
static unsigned resid_mask(const gs_backend *be)
{
    return act_mask(be) | 1u << gs_backend_resid_dtype(be);
}

/* A well-formed view of an allowed dtype; rows == 0 is allowed (empty). */
static int mat_ok(const char *op, const char *name, gs_mat m, unsigned dts)
{
    size_t es = gs_dtype_size(m.dt);
    if (!es || !(dts & (1u << m.dt))) {
        gs_log_error("%s: %s has dtype %s, not allowed here", op, name, gs_dtype_name(m.dt));
        return 0;
    }
    if (m.rows < 0 || m.cols < 1 || m.stride < m.cols) {
        gs_log_error("%s: %s is [%lld x %lld] stride %lld", op, name, (long long)m.rows,
                     (long long)m.cols, (long long)m.stride);
        return 0;
    }
    if (m.rows > 0 && !m.data) {
        gs_log_error("%s: %s data is NULL", op, name);
        return 0;
    }
    if (m.rows > 0 && (uint64_t)m.stride > (uint64_t)(INT64_MAX / 8) / (uint64_t)m.rows) {
        gs_log_error("%s: %s is too large", op, name);
        return 0;
    }
    return 1;
}

static int same_shape(const char *op, const char *na, gs_mat a, const char *nb, gs_mat b)
{
    if (a.rows != b.rows || a.cols != b.cols) {
        gs_log_error("%s: %s [%lld x %lld] does not match %s [%lld x %lld]", op, na,
                     (long long)a.rows, (long long)a.cols, nb, (long long)b.rows,
                     (long long)b.cols);
        return 0;
    }
    return 1;
}

/* Byte ranges of two views overlap (both non-empty). */
static int overlap(gs_mat a, gs_mat b)
{
    if (a.rows == 0 || b.rows == 0)
        return 0;
    uintptr_t a0 = (uintptr_t)a.data, b0 = (uintptr_t)b.data;
    uintptr_t a1 = a0 + (uintptr_t)((a.rows - 1) * a.stride + a.cols) * gs_dtype_size(a.dt);
    uintptr_t b1 = b0 + (uintptr_t)((b.rows - 1) * b.stride + b.cols) * gs_dtype_size(b.dt);
    return a0 < b1 && b0 < a1;
}

static int no_overlap(const char *op, const char *na, gs_mat a, const char *nb, gs_mat b)
{
    if (overlap(a, b)) {
        gs_log_error("%s: %s overlaps %s (not allowed in place)", op, na, nb);
        return 0;
    }
    return 1;
}

static int vec_ok(const char *op, const char *name, const gs_vec *v, int64_t n)
{
    if (!v || !v->data || v->n != n) {
        gs_log_error("%s: %s has %lld elements, expected %lld", op, name,
                     (long long)(v && v->data ? v->n : 0), (long long)n);
        return 0;
    }
    return 1;
}

static int eps_ok(const char *op, float eps)
{
    if (!(eps >= 0.0f) || !isfinite(eps)) {
        gs_log_error("%s: eps %g is not a finite value >= 0", op, (double)eps);
        return 0;
    }
    return 1;
}

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            return GS_EINVAL;                                                                      \
    } while (0)
#define BAD(...)                                                                                   \
    do {                                                                                           \
        gs_log_error(__VA_ARGS__);                                                                 \
        return GS_EINVAL;                                                                          \
    } while (0)

/* An optional vector by value; data NULL for none (also for v NULL). */
static gs_vec opt_vec(const gs_vec *v)
{
    gs_vec none = {NULL, 0};
    return v && v->data ? *v : none;
}

/* The elementwise ops: out, a and (add only) b; see gs_op.ew. */
static int submit_ew(gs_backend *be, gs_op_kind kind, gs_mat out, gs_mat a, gs_mat b)
{
    gs_op o = {.kind = kind, .ew = {out, a, b}};
    return gs_op_submit(be, &o);
}

/* ---- ops: validate, then gs_op_submit (graph.c) -------------------------- */

int gs_k_matmul(gs_backend *be, gs_mat out, gs_mat x, const gs_weight *w, const gs_vec *bias,
                unsigned flags)
{
    static const char op[] = "gs_k_matmul";
    if (!be || !w)
        BAD("%s: NULL backend or weight", op);
    CHECK(mat_ok(op, "x", x, resid_mask(be)) && mat_ok(op, "out", out, DT_F32 | act_mask(be)));
    if (x.cols != w->cols || out.rows != x.rows || out.cols != w->rows)
        BAD("%s: out [%lld x %lld] = x [%lld x %lld] . w [%lld x %lld]^T does not fit", op,
            (long long)out.rows, (long long)out.cols, (long long)x.rows, (long long)x.cols,
            (long long)w->rows, (long long)w->cols);
    if (bias && bias->data)
        CHECK(vec_ok(op, "bias", bias, w->rows));
    if (flags & ~GS_MM_ACCUM)
        BAD("%s: unknown flags 0x%x", op, flags);
    CHECK(no_overlap(op, "out", out, "x", x));
    if (x.rows == 0)
        return 0;
    gs_op o = {.kind = GS_OP_MATMUL, .matmul = {out, x, w, opt_vec(bias), flags}};
    return gs_op_submit(be, &o);
}

int gs_k_rmsnorm(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, float eps)
{
    static const char op[] = "gs_k_rmsnorm";
    if (!be)
        return GS_EINVAL;
    CHECK(mat_ok(op, "x", x, resid_mask(be)) && mat_ok(op, "out", out, act_mask(be)));
    CHECK(same_shape(op, "out", out, "x", x) && vec_ok(op, "w", w, x.cols) && eps_ok(op, eps));
    if (x.rows == 0)
        return 0;
    gs_op o = {.kind = GS_OP_RMSNORM, .norm = {.out = out, .x = x, .w = *w, .eps = eps}};
    return gs_op_submit(be, &o);
}

int gs_k_add_rmsnorm(gs_backend *be, gs_mat out, gs_mat resid, gs_mat x, const gs_vec *w, float eps)
{
    static const char op[] = "gs_k_add_rmsnorm";
    if (!be)
        return GS_EINVAL;
    unsigned a = act_mask(be);
    CHECK(mat_ok(op, "x", x, a) && mat_ok(op, "out", out, a) &&
          mat_ok(op, "resid", resid, resid_mask(be)));
    CHECK(same_shape(op, "out", out, "x", x) && same_shape(op, "resid", resid, "x", x));
    CHECK(vec_ok(op, "w", w, x.cols) && eps_ok(op, eps));
    if (x.rows == 0)
        return 0;
    gs_op o = {.kind = GS_OP_ADD_RMSNORM,
               .norm = {.out = out, .resid = resid, .x = x, .w = *w, .eps = eps}};
    return gs_op_submit(be, &o);
}

int gs_k_layernorm(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, const gs_vec *b,
                   float eps)
{
    static const char op[] = "gs_k_layernorm";
    if (!be)
        return GS_EINVAL;
    CHECK(mat_ok(op, "x", x, act_mask(be)) && mat_ok(op, "out", out, act_mask(be)));
    CHECK(same_shape(op, "out", out, "x", x) && vec_ok(op, "w", w, x.cols) && eps_ok(op, eps));
    if (b && b->data)
        CHECK(vec_ok(op, "b", b, x.cols));
    if (x.rows == 0)
        return 0;
    gs_op o = {.kind = GS_OP_LAYERNORM,
               .norm = {.out = out, .x = x, .w = *w, .b = opt_vec(b), .eps = eps}};
    return gs_op_submit(be, &o);
}

int gs_k_add(gs_backend *be, gs_mat out, gs_mat a, gs_mat b)
{
    static const char op[] = "gs_k_add";
    if (!be)
        return GS_EINVAL;
    unsigned m = act_mask(be);
    CHECK(mat_ok(op, "a", a, m) && mat_ok(op, "b", b, m) && mat_ok(op, "out", out, m));
    CHECK(same_shape(op, "out", out, "a", a) && same_shape(op, "b", b, "a", a));
    if (a.rows == 0)
        return 0;
    return submit_ew(be, GS_OP_ADD, out, a, b);
}

int gs_k_silu_mul(gs_backend *be, gs_mat out, gs_mat gu)
{
    static const char op[] = "gs_k_silu_mul";
    if (!be)
        return GS_EINVAL;
    CHECK(mat_ok(op, "gu", gu, act_mask(be)) && mat_ok(op, "out", out, resid_mask(be)));
    if (gu.rows != out.rows || gu.cols != 2 * out.cols)
        BAD("%s: gu [%lld x %lld] must be [rows, 2 * cols] of out [%lld x %lld]", op,
            (long long)gu.rows, (long long)gu.cols, (long long)out.rows, (long long)out.cols);
    if (out.data != gu.data || out.stride != gu.stride)
        CHECK(no_overlap(op, "out", out, "gu", gu));
    if (out.rows == 0)
        return 0;
    return submit_ew(be, GS_OP_SILU_MUL, out, gu, gu);
}

int gs_k_gelu(gs_backend *be, gs_mat out, gs_mat x)
{
    static const char op[] = "gs_k_gelu";
    if (!be)
        return GS_EINVAL;
    CHECK(mat_ok(op, "x", x, act_mask(be)) && mat_ok(op, "out", out, act_mask(be)));
    CHECK(same_shape(op, "out", out, "x", x));
    if (x.rows == 0)
        return 0;
    return submit_ew(be, GS_OP_GELU, out, x, x);
}

int gs_k_softmax(gs_backend *be, gs_mat out, gs_mat x)
{
    static const char op[] = "gs_k_softmax";
    if (!be)
        return GS_EINVAL;
    CHECK(mat_ok(op, "x", x, act_mask(be)) && mat_ok(op, "out", out, DT_F32 | act_mask(be)));
    CHECK(same_shape(op, "out", out, "x", x));
    if (out.dt != x.dt || out.data != x.data || out.stride != x.stride)
        CHECK(no_overlap(op, "out", out, "x", x));
    if (x.rows == 0)
        return 0;
    return submit_ew(be, GS_OP_SOFTMAX, out, x, x);
}

int gs_k_embed(gs_backend *be, gs_mat out, const gs_weight *table, const int32_t *ids)
{
    static const char op[] = "gs_k_embed";
    if (!be || !table)
        BAD("%s: NULL backend or table", op);
    if (gs_dtype_is_quant(table->dt))
        BAD("%s: the table is quantized (%s); tables stay 16-bit", op, gs_dtype_name(table->dt));
    CHECK(mat_ok(op, "out", out, act_mask(be)));
    if (out.cols != table->cols)
        BAD("%s: out [%lld x %lld] vs table [%lld x %lld]", op, (long long)out.rows,
            (long long)out.cols, (long long)table->rows, (long long)table->cols);
    if (out.rows == 0)
        return 0;
    if (!ids)
        BAD("%s: ids is NULL", op);
    gs_op o = {.kind = GS_OP_EMBED, .gather = {.out = out, .table = table, .idx = ids}};
    return gs_op_submit(be, &o);
}

int gs_k_gather_rows(gs_backend *be, gs_mat out, gs_mat x, const int32_t *idx)
{
    static const char op[] = "gs_k_gather_rows";
    if (!be)
        return GS_EINVAL;
    unsigned any = DT_FLOAT | DT_I32;
    CHECK(mat_ok(op, "x", x, any) && mat_ok(op, "out", out, any));
    if (out.dt != x.dt || out.cols != x.cols)
        BAD("%s: out [%lld x %lld] %s vs x [%lld x %lld] %s", op, (long long)out.rows,
            (long long)out.cols, gs_dtype_name(out.dt), (long long)x.rows, (long long)x.cols,
            gs_dtype_name(x.dt));
    CHECK(no_overlap(op, "out", out, "x", x));
    if (out.rows == 0)
        return 0;
    if (!idx || x.rows < 1)
        BAD("%s: idx is NULL or x is empty", op);
    gs_op o = {.kind = GS_OP_GATHER_ROWS, .gather = {.out = out, .x = x, .idx = idx}};
    return gs_op_submit(be, &o);
}

int gs_k_copy(gs_backend *be, gs_mat out, gs_mat x)
{
    static const char op[] = "gs_k_copy";
    if (!be)
        return GS_EINVAL;
    unsigned any = (x.dt == GS_DT_I32 && out.dt == GS_DT_I32) ? DT_I32 : DT_FLOAT;
    CHECK(mat_ok(op, "x", x, any) && mat_ok(op, "out", out, any));
    CHECK(same_shape(op, "out", out, "x", x));
    if (out.data != x.data || out.stride != x.stride || out.dt != x.dt)
        CHECK(no_overlap(op, "out", out, "x", x));
    if (x.rows == 0 || out.data == x.data)
        return 0;
    return submit_ew(be, GS_OP_COPY, out, x, x);
}

int gs_k_rope_text(gs_backend *be, gs_mat qk, const int32_t *pos, const gs_rope_text_params *p)
{
    static const char op[] = "gs_k_rope_text";
    if (!be || !p)
        BAD("%s: NULL backend or params", op);
    CHECK(mat_ok(op, "qk", qk, act_mask(be)));
    const int32_t *s = p->mrope_section;
    if (p->n_heads < 1 || p->head_dim < 2 || p->head_dim % 2 || p->rotary_dim < 2 ||
        p->rotary_dim % 2 || p->rotary_dim > p->head_dim || s[0] < 0 || s[1] < 0 || s[2] < 0 ||
        (int64_t)s[0] + s[1] + s[2] != p->rotary_dim / 2 || !(p->theta > 0.0f) ||
        !isfinite(p->theta))
        BAD("%s: bad params: heads %d head_dim %d rotary_dim %d sections [%d,%d,%d] theta %g", op,
            p->n_heads, p->head_dim, p->rotary_dim, s[0], s[1], s[2], (double)p->theta);
    if (qk.cols != (int64_t)p->n_heads * p->head_dim)
        BAD("%s: qk has %lld cols, expected %d heads x %d", op, (long long)qk.cols, p->n_heads,
            p->head_dim);
    if (qk.rows == 0)
        return 0;
    if (!pos)
        BAD("%s: pos is NULL", op);
    gs_op o = {.kind = GS_OP_ROPE_TEXT, .rope_text = {qk, pos, *p}};
    return gs_op_submit(be, &o);
}

int gs_k_rope_vision(gs_backend *be, gs_mat qk, const int32_t *pos, const gs_rope_vision_params *p)
{
    static const char op[] = "gs_k_rope_vision";
    if (!be || !p)
        BAD("%s: NULL backend or params", op);
    CHECK(mat_ok(op, "qk", qk, act_mask(be)));
    if (p->n_heads < 1 || p->head_dim < 4 || p->head_dim % 4 || !(p->theta > 0.0f) ||
        !isfinite(p->theta))
        BAD("%s: bad params: heads %d head_dim %d theta %g", op, p->n_heads, p->head_dim,
            (double)p->theta);
    if (qk.cols != (int64_t)p->n_heads * p->head_dim)
        BAD("%s: qk has %lld cols, expected %d heads x %d", op, (long long)qk.cols, p->n_heads,
            p->head_dim);
    if (qk.rows == 0)
        return 0;
    if (!pos)
        BAD("%s: pos is NULL", op);
    gs_op o = {.kind = GS_OP_ROPE_VISION, .rope_vision = {qk, pos, *p}};
    return gs_op_submit(be, &o);
}

int gs_k_posembed_add(gs_backend *be, gs_mat x, const gs_weight *table, int32_t side,
                      const int32_t *hw)
{
    static const char op[] = "gs_k_posembed_add";
    if (!be || !table)
        BAD("%s: NULL backend or table", op);
    if (gs_dtype_is_quant(table->dt))
        BAD("%s: the table is quantized (%s); tables stay 16-bit", op, gs_dtype_name(table->dt));
    CHECK(mat_ok(op, "x", x, act_mask(be)));
    if (side < 1 || table->rows != (int64_t)side * side || table->cols != x.cols)
        BAD("%s: table [%lld x %lld] is not side %d squared x hidden %lld", op,
            (long long)table->rows, (long long)table->cols, side, (long long)x.cols);
    if (x.rows == 0)
        return 0;
    if (!hw)
        BAD("%s: hw is NULL", op);
    gs_op o = {.kind = GS_OP_POSEMBED_ADD, .posembed = {x, table, side, hw}};
    return gs_op_submit(be, &o);
}

static int attn_params_ok(const char *op, const gs_attn_params *p)
{
    if (!p || p->n_heads < 1 || p->n_kv_heads < 1 || p->n_heads % p->n_kv_heads ||
        p->head_dim < 1 || !isfinite(p->scale) || (p->causal != 0 && p->causal != 1)) {
        if (p)
            gs_log_error("%s: bad params: heads %d kv heads %d head_dim %d scale %g causal %d", op,
                         p->n_heads, p->n_kv_heads, p->head_dim, (double)p->scale, p->causal);
        else
            gs_log_error("%s: params is NULL", op);
        return 0;
    }
    return 1;
}

int gs_k_attention(gs_backend *be, gs_mat out, gs_mat q, gs_mat k, gs_mat v, const int32_t *cu,
                   int32_t n_seqs, int32_t max_len, const gs_attn_params *p)
{
    static const char op[] = "gs_k_attention";
    if (!be)
        return GS_EINVAL;
    CHECK(attn_params_ok(op, p));
    unsigned a = act_mask(be);
    CHECK(mat_ok(op, "q", q, a) && mat_ok(op, "k", k, a) && mat_ok(op, "v", v, a) &&
          mat_ok(op, "out", out, a));
    const int64_t qd = (int64_t)p->n_heads * p->head_dim, kd = (int64_t)p->n_kv_heads * p->head_dim;
    if (q.cols != qd || k.cols != kd || v.cols != kd || k.rows != q.rows || v.rows != q.rows)
        BAD("%s: q [%lld x %lld], k [%lld x %lld], v [%lld x %lld] do not fit %d heads, %d kv "
            "heads of %d",
            op, (long long)q.rows, (long long)q.cols, (long long)k.rows, (long long)k.cols,
            (long long)v.rows, (long long)v.cols, p->n_heads, p->n_kv_heads, p->head_dim);
    CHECK(same_shape(op, "out", out, "q", q));
    CHECK(no_overlap(op, "out", out, "q", q) && no_overlap(op, "out", out, "k", k) &&
          no_overlap(op, "out", out, "v", v));
    if (q.rows == 0)
        return 0;
    if (!cu || n_seqs < 1 || max_len < 1)
        BAD("%s: cu %s, n_seqs %d, max_len %d", op, cu ? "set" : "NULL", n_seqs, max_len);
    gs_op o = {.kind = GS_OP_ATTENTION, .attention = {out, q, k, v, cu, n_seqs, max_len, *p}};
    return gs_op_submit(be, &o);
}

static int kv_ok(const char *op, const gs_kv_layer *kv)
{
    if (!kv || !kv->k || !kv->v || kv->n_pages < 1 || kv->page_size < 1 || kv->n_kv_heads < 1 ||
        kv->head_dim < 1) {
        if (kv)
            gs_log_error("%s: bad kv layer: pages %d page_size %d kv heads %d head_dim %d%s", op,
                         kv->n_pages, kv->page_size, kv->n_kv_heads, kv->head_dim,
                         kv->k && kv->v ? "" : " (NULL data)");
        else
            gs_log_error("%s: kv is NULL", op);
        return 0;
    }
    return 1;
}

int gs_k_kv_store(gs_backend *be, const gs_kv_layer *kv, gs_mat k, gs_mat v, const int32_t *slots)
{
    static const char op[] = "gs_k_kv_store";
    if (!be)
        return GS_EINVAL;
    CHECK(kv_ok(op, kv));
    CHECK(mat_ok(op, "k", k, act_mask(be)) && mat_ok(op, "v", v, act_mask(be)));
    const int64_t kd = (int64_t)kv->n_kv_heads * kv->head_dim;
    if (k.cols != kd || v.cols != kd || k.rows != v.rows)
        BAD("%s: k [%lld x %lld], v [%lld x %lld] vs cache rows of %d x %d", op, (long long)k.rows,
            (long long)k.cols, (long long)v.rows, (long long)v.cols, kv->n_kv_heads, kv->head_dim);
    if (k.rows == 0)
        return 0;
    if (!slots)
        BAD("%s: slots is NULL", op);
    gs_op o = {.kind = GS_OP_KV_STORE, .kv_store = {*kv, k, v, slots}};
    return gs_op_submit(be, &o);
}

int gs_k_attention_paged(gs_backend *be, gs_mat out, gs_mat q, const gs_kv_layer *kv,
                         const gs_paged_batch *b, const gs_attn_params *p)
{
    static const char op[] = "gs_k_attention_paged";
    if (!be)
        return GS_EINVAL;
    CHECK(attn_params_ok(op, p) && kv_ok(op, kv));
    if (p->n_kv_heads != kv->n_kv_heads || p->head_dim != kv->head_dim)
        BAD("%s: params (%d kv heads of %d) do not match the cache (%d of %d)", op, p->n_kv_heads,
            p->head_dim, kv->n_kv_heads, kv->head_dim);
    CHECK(mat_ok(op, "q", q, act_mask(be)) && mat_ok(op, "out", out, act_mask(be)));
    if (q.cols != (int64_t)p->n_heads * p->head_dim)
        BAD("%s: q has %lld cols, expected %d heads x %d", op, (long long)q.cols, p->n_heads,
            p->head_dim);
    CHECK(same_shape(op, "out", out, "q", q) && no_overlap(op, "out", out, "q", q));
    if (!b || b->n_seqs < 1 || !b->cu_q || !b->kv_len || !b->block_table || b->max_blocks < 1 ||
        b->max_q < 0 || b->max_kv < 0)
        BAD("%s: bad batch (n_seqs %d, max_blocks %d)", op, b ? b->n_seqs : 0,
            b ? b->max_blocks : 0);
    if (q.rows == 0)
        return 0;
    gs_op o = {.kind = GS_OP_ATTENTION_PAGED, .paged = {out, q, *kv, *b, *p}};
    return gs_op_submit(be, &o);
}

int gs_k_sample(gs_backend *be, int32_t *out_ids, gs_mat logits, const gs_sample_row *rows,
                const int32_t *pen_off, const int32_t *pen_ids, const int32_t *pen_cnt)
{
    static const char op[] = "gs_k_sample";
    if (!be)
        return GS_EINVAL;
    CHECK(mat_ok(op, "logits", logits, DT_F32));
    if (logits.cols > INT32_MAX)
        BAD("%s: %lld logits per row do not fit int32 ids", op, (long long)logits.cols);
    if (logits.rows == 0)
        return 0;
    if (!out_ids || !rows)
        BAD("%s: out_ids %s, rows %s", op, out_ids ? "set" : "NULL", rows ? "set" : "NULL");
    if (pen_off && (!pen_ids || !pen_cnt))
        BAD("%s: penalty lists incomplete (pen_off set, pen_ids %s, pen_cnt %s)", op,
            pen_ids ? "set" : "NULL", pen_cnt ? "set" : "NULL");
    if (!be->ops->sample)
        BAD("%s: the %s backend cannot sample", op, be->ops->name);
    gs_op o = {.kind = GS_OP_SAMPLE, .sample = {out_ids, logits, rows, pen_off, pen_ids, pen_cnt}};
    return gs_op_submit(be, &o);
}

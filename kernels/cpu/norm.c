/* norm.c - RMSNorm, fused residual-add + RMSNorm, LayerNorm (F32).
 *
 * Row by row, threads over rows. Sums use 16 F32 partial sums (a shape
 * compilers vectorise) and no doubles: the model's own reference (PyTorch)
 * also reduces in F32.
 *   rmsnorm:   y = x * (1 / sqrt(mean(x^2) + eps)) * w
 *   layernorm: y = (x - mean) * (1 / sqrt(var + eps)) * w + b, biased var,
 *              two passes (mean first) so large offsets do not cancel.
 * In place (out == x, or out == resid) is fine: a row is read before it is
 * written. Threading: gs_cpu_parallel. */
#include <math.h>

#include "kernels/cpu/cpu_impl.h"

#define LANES 16

static float sum_sq(const float *x, int64_t n)
{
    float acc[LANES] = {0};
    int64_t nv = n - n % LANES;
    for (int64_t i = 0; i < nv; i += LANES)
        for (int l = 0; l < LANES; l++)
            acc[l] += x[i + l] * x[i + l];
    float s = 0.0f;
    for (int64_t i = nv; i < n; i++)
        s += x[i] * x[i];
    for (int l = 0; l < LANES; l++)
        s += acc[l];
    return s;
}

static float sum(const float *x, int64_t n)
{
    float acc[LANES] = {0};
    int64_t nv = n - n % LANES;
    for (int64_t i = 0; i < nv; i += LANES)
        for (int l = 0; l < LANES; l++)
            acc[l] += x[i + l];
    float s = 0.0f;
    for (int64_t i = nv; i < n; i++)
        s += x[i];
    for (int l = 0; l < LANES; l++)
        s += acc[l];
    return s;
}

static float sum_sq_dev(const float *x, float mean, int64_t n)
{
    float acc[LANES] = {0};
    int64_t nv = n - n % LANES;
    for (int64_t i = 0; i < nv; i += LANES)
        for (int l = 0; l < LANES; l++) {
            float d = x[i + l] - mean;
            acc[l] += d * d;
        }
    float s = 0.0f;
    for (int64_t i = nv; i < n; i++)
        s += (x[i] - mean) * (x[i] - mean);
    for (int l = 0; l < LANES; l++)
        s += acc[l];
    return s;
}

typedef struct {
    gs_mat out, x, resid;
    const float *w, *b;
    float eps;
} norm_job;

static void rms_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    norm_job *J = ctx;
    const int64_t n = J->x.cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = gs_cpu_row(J->x, r);
        float *y = gs_cpu_row(J->out, r);
        const float inv = 1.0f / sqrtf(sum_sq(x, n) / (float)n + J->eps);
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * inv * J->w[i];
    }
}

static void add_rms_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    norm_job *J = ctx;
    const int64_t n = J->x.cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = gs_cpu_row(J->x, r);
        float *h = gs_cpu_row(J->resid, r);
        float *y = gs_cpu_row(J->out, r);
        for (int64_t i = 0; i < n; i++)
            h[i] += x[i];
        const float inv = 1.0f / sqrtf(sum_sq(h, n) / (float)n + J->eps);
        for (int64_t i = 0; i < n; i++)
            y[i] = h[i] * inv * J->w[i];
    }
}

static void ln_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    norm_job *J = ctx;
    const int64_t n = J->x.cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = gs_cpu_row(J->x, r);
        float *y = gs_cpu_row(J->out, r);
        const float mean = sum(x, n) / (float)n;
        const float inv = 1.0f / sqrtf(sum_sq_dev(x, mean, n) / (float)n + J->eps);
        for (int64_t i = 0; i < n; i++) {
            float v = (x[i] - mean) * inv * J->w[i];
            y[i] = J->b ? v + J->b[i] : v;
        }
    }
}

/* ~2 chunks per thread, at least 16K elements per chunk. */
static int64_t row_grain(gs_cpu *c, gs_mat x)
{
    int64_t min_rows = (16384 + x.cols - 1) / x.cols;
    return gs_cpu_grain(c, x.rows, 2, min_rows);
}

int gs_cpu_rmsnorm(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, float eps)
{
    gs_cpu *c = gs_cpu_of(be);
    norm_job J = {out, x, x, w->data, NULL, eps};
    gs_cpu_parallel(c, x.rows, row_grain(c, x), rms_rows, &J);
    return 0;
}

int gs_cpu_add_rmsnorm(gs_backend *be, gs_mat out, gs_mat resid, gs_mat x, const gs_vec *w,
                       float eps)
{
    gs_cpu *c = gs_cpu_of(be);
    norm_job J = {out, x, resid, w->data, NULL, eps};
    gs_cpu_parallel(c, x.rows, row_grain(c, x), add_rms_rows, &J);
    return 0;
}

int gs_cpu_layernorm(gs_backend *be, gs_mat out, gs_mat x, const gs_vec *w, const gs_vec *b,
                     float eps)
{
    gs_cpu *c = gs_cpu_of(be);
    norm_job J = {out, x, x, w->data, b ? b->data : NULL, eps};
    gs_cpu_parallel(c, x.rows, row_grain(c, x), ln_rows, &J);
    return 0;
}

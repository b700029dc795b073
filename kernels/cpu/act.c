/* act.c - elementwise ops and dtype copies on the CPU (F32 activations).
 *
 *   add:      out = a + b
 *   silu_mul: out[:, i] = silu(gu[:, i]) * gu[:, I + i], silu(g) = g / (1 + e^-g)
 *   gelu:     out = x * 0.5 * (1 + erf(x / sqrt(2)))   (exact, nn.GELU())
 *   softmax:  row-wise, max-subtracted, F32
 *   copy:     any of F32 / BF16 / F16 into any (round to nearest even,
 *             common/dtype.h), I32 into I32
 * Threading: gs_cpu_parallel over rows (small jobs run on the caller). */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"

typedef struct {
    gs_mat out, a, b;
} ew_job;

static int64_t row_grain(gs_cpu *c, int64_t rows, int64_t cols)
{
    int64_t min_rows = (16384 + cols - 1) / cols;
    return gs_cpu_grain(c, rows, 2, min_rows);
}

static void add_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    ew_job *J = ctx;
    const int64_t n = J->out.cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *a = gs_cpu_row(J->a, r), *b = gs_cpu_row(J->b, r);
        float *o = gs_cpu_row(J->out, r);
        for (int64_t i = 0; i < n; i++)
            o[i] = a[i] + b[i];
    }
}

static void silu_mul_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    ew_job *J = ctx;
    const int64_t n = J->out.cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *g = gs_cpu_row(J->a, r), *u = g + n;
        float *o = gs_cpu_row(J->out, r);
        for (int64_t i = 0; i < n; i++) {
            float gv = g[i], uv = u[i];
            o[i] = gv / (1.0f + expf(-gv)) * uv;
        }
    }
}

static void gelu_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    ew_job *J = ctx;
    const int64_t n = J->out.cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = gs_cpu_row(J->a, r);
        float *o = gs_cpu_row(J->out, r);
        for (int64_t i = 0; i < n; i++)
            o[i] = x[i] * 0.5f * (1.0f + erff(x[i] * (float)M_SQRT1_2));
    }
}

static void softmax_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    ew_job *J = ctx;
    const int64_t n = J->out.cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = gs_cpu_row(J->a, r);
        float *o = gs_cpu_row(J->out, r);
        float mx = -INFINITY;
        for (int64_t i = 0; i < n; i++)
            mx = x[i] > mx ? x[i] : mx;
        if (mx == -INFINITY) { /* all -inf: no defined weights; write zeros */
            memset(o, 0, (size_t)n * sizeof *o);
            continue;
        }
        float s = 0.0f;
        for (int64_t i = 0; i < n; i++) {
            o[i] = expf(x[i] - mx);
            s += o[i];
        }
        const float inv = 1.0f / s;
        for (int64_t i = 0; i < n; i++)
            o[i] *= inv;
    }
}

int gs_cpu_add(gs_backend *be, gs_mat out, gs_mat a, gs_mat b)
{
    gs_cpu *c = gs_cpu_of(be);
    ew_job J = {out, a, b};
    gs_cpu_parallel(c, out.rows, row_grain(c, out.rows, out.cols), add_rows, &J);
    return 0;
}

int gs_cpu_silu_mul(gs_backend *be, gs_mat out, gs_mat gu)
{
    gs_cpu *c = gs_cpu_of(be);
    ew_job J = {out, gu, gu};
    gs_cpu_parallel(c, out.rows, row_grain(c, out.rows, out.cols), silu_mul_rows, &J);
    return 0;
}

int gs_cpu_gelu(gs_backend *be, gs_mat out, gs_mat x)
{
    gs_cpu *c = gs_cpu_of(be);
    ew_job J = {out, x, x};
    gs_cpu_parallel(c, out.rows, row_grain(c, out.rows, out.cols), gelu_rows, &J);
    return 0;
}

int gs_cpu_softmax(gs_backend *be, gs_mat out, gs_mat x)
{
    gs_cpu *c = gs_cpu_of(be);
    ew_job J = {out, x, x};
    gs_cpu_parallel(c, out.rows, row_grain(c, out.rows, out.cols), softmax_rows, &J);
    return 0;
}

/* ---- copy --------------------------------------------------------------- */

static void copy_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    ew_job *J = ctx;
    const gs_dtype sdt = J->a.dt, ddt = J->out.dt;
    const size_t ses = gs_dtype_size(sdt), des = gs_dtype_size(ddt);
    const int64_t n = J->out.cols;
    for (int64_t r = r0; r < r1; r++) {
        const char *s = (const char *)J->a.data + (size_t)(r * J->a.stride) * ses;
        char *d = (char *)J->out.data + (size_t)(r * J->out.stride) * des;
        if (sdt == ddt) {
            memcpy(d, s, (size_t)n * des);
        } else if (sdt == GS_DT_F32) {
            gs_cpu_store_f32((const float *)s, ddt, d, n);
        } else if (ddt == GS_DT_F32) {
            gs_cpu_load_f32(s, sdt, (float *)d, n);
        } else { /* BF16 <-> F16 through F32, a small block at a time */
            float tmp[256];
            for (int64_t i = 0; i < n; i += 256) {
                int64_t nb = n - i < 256 ? n - i : 256;
                gs_cpu_load_f32(s + (size_t)i * ses, sdt, tmp, nb);
                gs_cpu_store_f32(tmp, ddt, d + (size_t)i * des, nb);
            }
        }
    }
}

int gs_cpu_copy(gs_backend *be, gs_mat out, gs_mat x)
{
    gs_cpu *c = gs_cpu_of(be);
    ew_job J = {out, x, x};
    gs_cpu_parallel(c, out.rows, row_grain(c, out.rows, out.cols), copy_rows, &J);
    return 0;
}

/* embed.c - row gathers and the vision position embedding (F32 out).
 *
 *   embed:        out[i] = table[ids[i]] widened to F32
 *   gather_rows:  out[i] = x[idx[i]] (any dtype, bytes copied)
 *   posembed_add: x[i] += bicubic(table as a side x side grid) at the patch
 *                 (h, w) of a H x W grid, exactly as PyTorch's CPU
 *                 grid_sample(bicubic, align_corners=False, border) does it
 *                 (glm4v-spec.md 3.4): coordinates in F32, taps clamped,
 *                 Keys A = -0.75, x first then y, sums left to right.
 *                 Built with -ffp-contract=off (no FMA) for those roundings.
 * Index arrays are host memory here; every index is checked before any row
 * is written (GS_EINVAL with a log line on the first bad one).
 * Threading: gs_cpu_parallel over output rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/cpu/cpu_impl.h"

typedef struct {
    gs_mat out, x;
    const gs_cpu_weight *t;
    const int32_t *idx;
    const float *tab; /* posembed: [side*side, hidden] F32 */
    int32_t side;
} emb_job;

static void embed_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    emb_job *J = ctx;
    const int64_t n = J->out.cols;
    const size_t es = gs_dtype_size(J->t->h.dt);
    for (int64_t r = r0; r < r1; r++) {
        const char *src = (const char *)J->t->data + (size_t)J->idx[r] * (size_t)n * es;
        gs_cpu_load_f32(src, J->t->h.dt, gs_cpu_row(J->out, r), n);
    }
}

int gs_cpu_embed(gs_backend *be, gs_mat out, const gs_weight *table, const int32_t *ids)
{
    gs_cpu *c = gs_cpu_of(be);
    for (int64_t i = 0; i < out.rows; i++)
        if (ids[i] < 0 || ids[i] >= table->rows) {
            gs_log_error("gs_k_embed: ids[%lld] = %d outside the table's %lld rows", (long long)i,
                         ids[i], (long long)table->rows);
            return GS_EINVAL;
        }
    emb_job J = {out, out, gs_cpu_w(table), ids, NULL, 0};
    gs_cpu_parallel(c, out.rows, gs_cpu_grain(c, out.rows, 2, (8192 + out.cols - 1) / out.cols),
                    embed_rows, &J);
    return 0;
}

static void gather_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    emb_job *J = ctx;
    const size_t es = gs_dtype_size(J->x.dt);
    for (int64_t r = r0; r < r1; r++)
        memcpy((char *)J->out.data + (size_t)(r * J->out.stride) * es,
               (const char *)J->x.data + (size_t)((int64_t)J->idx[r] * J->x.stride) * es,
               (size_t)J->out.cols * es);
}

int gs_cpu_gather_rows(gs_backend *be, gs_mat out, gs_mat x, const int32_t *idx)
{
    gs_cpu *c = gs_cpu_of(be);
    for (int64_t i = 0; i < out.rows; i++)
        if (idx[i] < 0 || idx[i] >= x.rows) {
            gs_log_error("gs_k_gather_rows: idx[%lld] = %d outside x's %lld rows", (long long)i,
                         idx[i], (long long)x.rows);
            return GS_EINVAL;
        }
    emb_job J = {out, x, NULL, idx, NULL, 0};
    gs_cpu_parallel(c, out.rows, gs_cpu_grain(c, out.rows, 2, (8192 + out.cols - 1) / out.cols),
                    gather_rows, &J);
    return 0;
}

/* ---- bicubic position embedding ----------------------------------------- */

/* PyTorch's get_cubic_coefficients (CPU grid sampler), A = -0.75. */
static void cubic_coeffs(float t, float c[4])
{
    const float A = -0.75f;
    float x = t + 1.0f;
    c[0] = ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
    x = t;
    c[1] = ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
    x = 1.0f - t;
    c[2] = ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
    x = 2.0f - t;
    c[3] = ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
}

/* Source coordinate of output index i of n along an axis of `side`
 * table cells: normalise to [-1, 1] at pixel centres, then unnormalise
 * (align_corners=False), all in F32. */
static float src_coord(int32_t i, int32_t n, int32_t side)
{
    float g = (((float)i + 0.5f) / (float)n) * 2.0f - 1.0f;
    return ((g + 1.0f) * (float)side - 1.0f) / 2.0f;
}

static int32_t clampi(int32_t v, int32_t hi)
{
    return v < 0 ? 0 : (v > hi ? hi : v);
}

static void posembed_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    emb_job *J = ctx;
    const int64_t m = J->x.rows, n = J->x.cols;
    const int32_t side = J->side;
    for (int64_t r = r0; r < r1; r++) {
        const int32_t h = J->idx[r], w = J->idx[m + r], H = J->idx[2 * m + r],
                      W = J->idx[3 * m + r];
        const float ix = src_coord(w, W, side), iy = src_coord(h, H, side);
        const float fx = floorf(ix), fy = floorf(iy);
        float cx[4], cy[4];
        cubic_coeffs(ix - fx, cx);
        cubic_coeffs(iy - fy, cy);
        const int32_t x0 = (int32_t)fx, y0 = (int32_t)fy;
        const float *tap[4][4];
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++)
                tap[a][b] = J->tab + ((int64_t)clampi(y0 - 1 + a, side - 1) * side +
                                      clampi(x0 - 1 + b, side - 1)) *
                                         n;
        float *xr = gs_cpu_row(J->x, r);
        for (int64_t c = 0; c < n; c++) {
            float row[4];
            for (int a = 0; a < 4; a++)
                row[a] = cx[0] * tap[a][0][c] + cx[1] * tap[a][1][c] + cx[2] * tap[a][2][c] +
                         cx[3] * tap[a][3][c];
            xr[c] += cy[0] * row[0] + cy[1] * row[1] + cy[2] * row[2] + cy[3] * row[3];
        }
    }
}

static void widen_table(void *ctx, int64_t r0, int64_t r1, int tid)
{
    emb_job *J = ctx;
    const int64_t n = J->t->h.cols;
    const size_t es = gs_dtype_size(J->t->h.dt);
    for (int64_t r = r0; r < r1; r++)
        gs_cpu_load_f32((const char *)J->t->data + (size_t)(r * n) * es, J->t->h.dt,
                        (float *)J->tab + r * n, n);
}

int gs_cpu_posembed_add(gs_backend *be, gs_mat x, const gs_weight *table, int32_t side,
                        const int32_t *hw)
{
    gs_cpu *c = gs_cpu_of(be);
    const int64_t m = x.rows;
    for (int64_t i = 0; i < m; i++) {
        int32_t h = hw[i], w = hw[m + i], H = hw[2 * m + i], W = hw[3 * m + i];
        if (H < 1 || W < 1 || h < 0 || h >= H || w < 0 || w >= W) {
            gs_log_error("gs_k_posembed_add: token %lld has (h %d, w %d) in a %d x %d grid",
                         (long long)i, h, w, H, W);
            return GS_EINVAL;
        }
    }
    const gs_cpu_weight *t = gs_cpu_w(table);
    emb_job J = {x, x, t, hw, NULL, side};
    float *tmp = NULL;
    if (t->h.dt == GS_DT_F32) {
        J.tab = t->data;
    } else {
        tmp = malloc(sizeof(float) * (size_t)t->h.rows * (size_t)t->h.cols);
        if (!tmp)
            return GS_ENOMEM;
        J.tab = tmp;
        gs_cpu_parallel(c, t->h.rows, gs_cpu_grain(c, t->h.rows, 1, 8), widen_table, &J);
    }
    gs_cpu_parallel(c, m, gs_cpu_grain(c, m, 4, 1), posembed_rows, &J);
    free(tmp);
    return 0;
}

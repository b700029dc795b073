/* matmul_q.c - the matmul op for every weight dtype: float weights go to
 * gs_cpu_matmul (matmul.c); quantized ones (GS_DT_Q8, GS_DT_Q4) are here.
 *
 * Integer dot products, for decode and prefill alike. Each row of x is
 * quantized once per call to int8 in groups of GS_Q4_GROUP (= 128)
 * columns, one F32 absmax scale sx_g per group; then for every weight row
 * j, out[r, j] = sum over groups g, in order, of
 *     Q8: sx_g * dot_g, times s_w once at the end,
 *     Q4: (sx_g * s_wg) * dot_g,
 * where dot_g is the exact int32 dot of the group's integers. The int32
 * sums come from one kernel per instruction set (quant_dot*.c: AVX2,
 * AVX-512 VNNI, NEON sdot / smmla, portable C), picked at run time; being
 * exact they are the same on every path, and the F32 combination is one
 * piece of code here, so every path gives the same bits, and a row's
 * result never depends on the other rows of the batch, whatever m is.
 *
 * Why not dequantized weight panels and SGEMM for prefill, as matmul.c
 * does with 16-bit weights: the int8 kernels multiply-add 4x (AVX-512
 * VNNI) the values per instruction of F32 FMA, and measured 2-3x faster
 * than dequantize + cblas_sgemm at m = 128 and 512 (4096 x 4096, one
 * thread), so there is one path.
 *
 * Threading: x is quantized by rows on the pool; then few rows (decode):
 * items are weight rows, each against all of x; many rows: items are
 * (weight block, block of QV_MB rows of x). */
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/quant_dot.h"

#define QV_MB 32           /* rows of x per block with many rows */
#define QV_WB (256 * 1024) /* bytes of weight rows per block with many rows */

/* ---- activation quantization -------------------------------------------- */

/* round-to-nearest-even of |v| < 2^22 by the float adder (the default
 * rounding mode), bit-for-bit nearbyintf but vectorisable. */
static inline float round_even(float v)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    return (v + magic) - magic;
}

/* Group g (n <= GS_Q4_GROUP values at v) of one x row into q[GS_Q4_GROUP]
 * (zero-padded; Q4: even columns first, then odd ones, the order of the
 * nibbles in a weight byte), *s and *sum (of q). A group that is not
 * finite gets s = NaN and q = 0, so its outputs are NaN, as F32 would be. */
static void quant_x_group(const float *v, int n, int q4, int8_t *q, float *s, int32_t *sum)
{
    float amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        amax = (a > amax || a != a) ? a : amax; /* NaN sticks */
    }
    memset(q, 0, GS_Q4_GROUP);
    *sum = 0;
    if (!isfinite(amax)) {
        *s = NAN;
        return;
    }
    const float sc = amax / 127.0f;
    if (sc == 0.0f) { /* all zero, or so small that the scale underflows */
        *s = 0.0f;
        return;
    }
    int8_t t[GS_Q4_GROUP];
    int32_t acc = 0;
    for (int i = 0; i < n; i++) {
        float r = round_even(v[i] / sc);
        r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
        t[i] = (int8_t)r;
        acc += t[i];
    }
    if (q4)
        for (int i = 0; i < n; i++)
            q[(i & 1) ? GS_Q4_GROUP / 2 + i / 2 : i / 2] = t[i];
    else
        memcpy(q, t, (size_t)n);
    *s = sc;
    *sum = acc;
}

/* ---- integer matmul ----------------------------------------------------- */

typedef struct {
    gs_mat out, x;
    const gs_cpu_weight *w;
    const float *bias;
    int accum;
    int64_t ng, ngf;     /* groups per row; full ones */
    int64_t mp;          /* m rounded up to GS_QMR */
    const int8_t *qx;    /* [m, ng * GS_Q4_GROUP] */
    const float *sx;     /* [ng, mp]: group g's scale of row r at g * mp + r (0 past m) */
    const int32_t *sumx; /* [ng, mp]: its sum of qx, the same way */
    int64_t nb, n_rb;    /* blocking of many rows: weight rows, blocks of x */
    gs_qdot_fn dot;
    gs_cpu *c;
} qv_job;

/* Exact int32 dot of the partial last group (n < GS_Q4_GROUP columns
 * from column c0) of weight row wq with quantized x group qx. */
static int32_t tail_dot(gs_dtype dt, const uint8_t *wq, int64_t c0, int n, const int8_t *qx)
{
    int32_t acc = 0;
    if (dt == GS_DT_Q8) {
        const int8_t *w = (const int8_t *)wq + c0;
        for (int i = 0; i < n; i++)
            acc += (int32_t)w[i] * qx[i];
    } else {
        const uint8_t *w = wq + c0 / 2;
        for (int i = 0; i < n; i++) {
            int u = (i & 1) ? w[i / 2] >> 4 : w[i / 2] & 15;
            acc += (u - 8) * (int32_t)qx[(i & 1) ? GS_Q4_GROUP / 2 + i / 2 : i / 2];
        }
    }
    return acc;
}

/* The one F32 combination (see the top of the file) of weight row j's
 * group dots d[ng][GS_QMR] with the scales of x rows r0 .. r0 + GS_QMR - 1:
 * lane r sums its groups in order, so the lanes are independent rows and
 * vectorise without changing any row's result. */
#if defined(__GNUC__) || defined(__clang__)
/* One GS_QMR-lane vector (an xmm / NEON register): lane r is x row r. */
typedef float qv_f __attribute__((vector_size(4 * GS_QMR)));
typedef int32_t qv_i __attribute__((vector_size(4 * GS_QMR)));

static void combine(const qv_job *J, int64_t j, int64_t r0, const int32_t *d, float o[GS_QMR])
{
    const float *sx = J->sx + r0;
    qv_f acc = {0};
    for (int64_t g = 0; g < J->ng; g++) {
        qv_f s;
        qv_i di;
        memcpy(&s, sx + g * J->mp, sizeof s);
        memcpy(&di, d + g * GS_QMR, sizeof di);
        if (J->w->h.dt == GS_DT_Q4)
            s = s * J->w->scales[j * J->ng + g];
        acc = acc + s * __builtin_convertvector(di, qv_f);
    }
    if (J->w->h.dt == GS_DT_Q8)
        acc = acc * J->w->scales[j];
    memcpy(o, &acc, sizeof acc);
}
#else
static void combine(const qv_job *J, int64_t j, int64_t r0, const int32_t *d, float o[GS_QMR])
{
    const float *sx = J->sx + r0;
    const int q4 = J->w->h.dt == GS_DT_Q4;
    float acc[GS_QMR] = {0};
    for (int64_t g = 0; g < J->ng; g++) {
        const float sw = q4 ? J->w->scales[j * J->ng + g] : 1.0f;
        for (int r = 0; r < GS_QMR; r++) {
            const float s = q4 ? sx[g * J->mp + r] * sw : sx[g * J->mp + r];
            acc[r] += s * (float)d[g * GS_QMR + r];
        }
    }
    for (int r = 0; r < GS_QMR; r++)
        o[r] = q4 ? acc[r] : acc[r] * J->w->scales[j];
}
#endif

/* Weight rows [j0, j1) against rows [r_begin, r_end) of x (r_begin a
 * multiple of GS_QMR), GS_QNR x GS_QMR at a time. */
static void qv_block(const qv_job *J, int64_t j0, int64_t j1, int64_t r_begin, int64_t r_end,
                     int tid)
{
    const int64_t k = J->x.cols, ng = J->ng, ngf = J->ngf;
    const int64_t xs = ng * GS_Q4_GROUP, c0 = ngf * GS_Q4_GROUP;
    const gs_dtype dt = J->w->h.dt;
    const size_t rb = gs_quant_q_bytes(dt, 1, k);
    int32_t *d = gs_cpu_scratch(J->c, tid);
    for (int64_t j = j0; j < j1;) {
        const int nr = j1 - j >= GS_QNR ? GS_QNR : 1;
        for (int64_t r0 = r_begin; r0 < r_end; r0 += GS_QMR) {
            const int mr = r_end - r0 < GS_QMR ? (int)(r_end - r0) : GS_QMR;
            gs_qtile T = {.sumx = J->sumx + r0,
                          .sumx_ld = J->mp,
                          .nr = nr,
                          .mr = mr,
                          .ngf = ngf,
                          .ds = ng,
                          .d = d};
            for (int t = 0; t < nr; t++)
                T.w[t] = (const uint8_t *)J->w->data + (size_t)(j + t) * rb;
            for (int r = 0; r < mr; r++)
                T.x[r] = J->qx + (r0 + r) * xs;
            if (ngf > 0)
                J->dot(dt, &T);
            if (ng != ngf) /* the partial last group */
                for (int t = 0; t < nr; t++)
                    for (int r = 0; r < GS_QMR; r++)
                        d[(t * ng + ngf) * GS_QMR + r] =
                            r < mr ? tail_dot(dt, T.w[t], c0, (int)(k - c0), T.x[r] + c0) : 0;
            for (int t = 0; t < nr; t++) {
                float o[GS_QMR];
                combine(J, j + t, r0, d + t * ng * GS_QMR, o);
                for (int r = 0; r < mr; r++) {
                    float s = o[r];
                    if (J->bias)
                        s += J->bias[j + t];
                    float *po = gs_cpu_row(J->out, r0 + r) + j + t;
                    *po = J->accum ? *po + s : s;
                }
            }
        }
        j += nr;
    }
}

/* Few rows (decode): items are weight rows, each against all of x. */
static void qv_cols(void *ctx, int64_t j0, int64_t j1, int tid)
{
    const qv_job *J = ctx;
    qv_block(J, j0, j1, 0, J->x.rows, tid);
}

/* Many rows (prefill): items are (block of weight rows, block of QV_MB rows
 * of x), weight block major, so a thread's chunk keeps one weight block in
 * its cache while the blocks of x go by. */
static void qv_items(void *ctx, int64_t i0, int64_t i1, int tid)
{
    const qv_job *J = ctx;
    const int64_t m = J->x.rows, n = J->out.cols;
    for (int64_t it = i0; it < i1; it++) {
        const int64_t j0 = (it / J->n_rb) * J->nb, r0 = (it % J->n_rb) * QV_MB;
        qv_block(J, j0, j0 + J->nb < n ? j0 + J->nb : n, r0, r0 + QV_MB < m ? r0 + QV_MB : m, tid);
    }
}

/* Rows [r0, r1) of x quantized into the job's buffers. */
static void qv_quant_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const qv_job *J = ctx;
    const int64_t k = J->x.cols, ng = J->ng;
    const int q4 = J->w->h.dt == GS_DT_Q4;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = gs_cpu_row(J->x, r);
        for (int64_t g = 0; g < ng; g++) {
            const int64_t c0 = g * GS_Q4_GROUP;
            const int nc = k - c0 < GS_Q4_GROUP ? (int)(k - c0) : GS_Q4_GROUP;
            quant_x_group(xr + c0, nc, q4, (int8_t *)J->qx + (r * ng + g) * GS_Q4_GROUP,
                          (float *)&J->sx[g * J->mp + r], (int32_t *)&J->sumx[g * J->mp + r]);
        }
    }
}

static int matmul_q(gs_cpu *c, gs_mat out, gs_mat x, const gs_cpu_weight *w, const float *bias,
                    int accum)
{
    const int64_t m = x.rows, k = x.cols, n = out.cols;
    const int64_t ng = (k + GS_Q4_GROUP - 1) / GS_Q4_GROUP;
    const int64_t mp = (m + GS_QMR - 1) / GS_QMR * GS_QMR;
    const size_t xq = (size_t)m * (size_t)ng * GS_Q4_GROUP;
    const size_t sx_off = (xq + 63) & ~(size_t)63;
    const size_t sum_off = sx_off + (size_t)mp * (size_t)ng * 4;
    const size_t need = sum_off + (size_t)mp * (size_t)ng * 4;
    /* The quantized x (shared) in c->qx; each thread's dots in its scratch. */
    if (gs_cpu_scratch_reserve(c, sizeof(int32_t) * GS_QNR * GS_QMR * (size_t)ng))
        return GS_ENOMEM;
    if (c->qx_size < need) {
        void *p = NULL;
        if (posix_memalign(&p, 64, need) != 0)
            return GS_ENOMEM;
        free(c->qx);
        c->qx = p;
        c->qx_size = need;
    }
    char *base = c->qx;
    float *sx = (float *)(base + sx_off);
    int32_t *sumx = (int32_t *)(base + sum_off);
    memset(sx, 0, (size_t)mp * (size_t)ng * 4); /* rows past m: scale and sum 0 */
    memset(sumx, 0, (size_t)mp * (size_t)ng * 4);
    qv_job J = {.out = out,
                .x = x,
                .w = w,
                .bias = bias,
                .accum = accum,
                .ng = ng,
                .ngf = k / GS_Q4_GROUP,
                .mp = mp,
                .qx = (const int8_t *)base,
                .sx = sx,
                .sumx = sumx,
                .dot = gs_cpu_quant_dot_fn(),
                .c = c};
    gs_cpu_parallel(c, m, gs_cpu_grain(c, m, 2, 4), qv_quant_rows, &J);
    if (m <= QV_MB) {
        /* ~4 chunks per thread, at least 8 weight rows each */
        gs_cpu_parallel(c, n, gs_cpu_grain(c, n, 4, 8), qv_cols, &J);
        return 0;
    }
    /* Weight blocks of about QV_WB bytes, a multiple of GS_QNR rows, and
     * at least 4 per thread for balance. */
    const int64_t T = c->n_threads;
    int64_t nb = (int64_t)(QV_WB / gs_quant_q_bytes(w->h.dt, 1, k));
    int64_t nb_bal = (n + 4 * T - 1) / (4 * T);
    nb = nb < nb_bal ? nb : nb_bal;
    nb = (nb + GS_QNR - 1) / GS_QNR * GS_QNR;
    J.nb = nb;
    J.n_rb = (m + QV_MB - 1) / QV_MB;
    const int64_t n_cb = (n + nb - 1) / nb;
    gs_cpu_parallel(c, n_cb * J.n_rb, J.n_rb, qv_items, &J);
    return 0;
}

int gs_cpu_matmul_any(gs_backend *be, gs_mat out, gs_mat x, const gs_weight *w, const gs_vec *bias,
                      unsigned flags)
{
    if (!gs_dtype_is_quant(w->dt))
        return gs_cpu_matmul(be, out, x, w, bias, flags);
    return matmul_q(gs_cpu_of(be), out, x, gs_cpu_w(w), bias ? bias->data : NULL,
                    (flags & GS_MM_ACCUM) != 0);
}

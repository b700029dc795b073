/* matmul_q.c - the matmul op for every weight dtype: float weights go to
 * gs_cpu_matmul (matmul.c); quantized ones (GS_DT_Q8, GS_DT_Q4) are here.
 *
 *  - Decode (m <= QV_MAX_M): integer dot products. Each row of x is
 *    quantized once per call to int8 in groups of GS_Q4_GROUP (= 128)
 *    columns, one F32 absmax scale sx_g per group; then for every weight
 *    row j, out[r, j] = sum over groups g, in order, of
 *        Q8: sx_g * dot_g, times s_w once at the end,
 *        Q4: (sx_g * s_wg) * dot_g,
 *    where dot_g is the exact int32 dot of the group's integers. The int32
 *    sums come from one kernel per instruction set (quant_isa_*.c: AVX2,
 *    AVX-512 VNNI, NEON sdot/smmla, portable C), picked at run time; being
 *    exact they are the same on every path, and the F32 combination is one
 *    piece of code here, so every path gives the same bits, and a row's
 *    result never depends on the other rows of the batch.
 *  - Prefill (larger m): a panel of weight rows is dequantized to F32 in
 *    the thread's scratch and multiplied with cblas_sgemm, as matmul.c
 *    does for 16-bit weights; x stays F32 there.
 * Both thread over blocks of output columns (weight rows).
 * Threading: gs_cpu_parallel; OpenBLAS single-threaded inside. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/quant_dot.h"

#define QV_MAX_M 32  /* as matmul.c's GEMV bound */
#define GEMM_KC 2048 /* panel depth, a multiple of GS_Q4_GROUP */
#define GEMM_NB 512
#define GEMM_MB 512

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
    if (amax == 0.0f) {
        *s = 0.0f;
        return;
    }
    const float sc = amax / 127.0f;
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

/* ---- decode: integer GEMV -------------------------------------------- */

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
    size_t d_off;        /* per-thread int32 dots: scratch + d_off */
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

/* Weight rows [j0, j1) against every row of x, GS_QNR x GS_QMR at a time. */
static void qv_cols(void *ctx, int64_t j0, int64_t j1, int tid)
{
    qv_job *J = ctx;
    const int64_t m = J->x.rows, k = J->x.cols, ng = J->ng, ngf = J->ngf;
    const int64_t xs = ng * GS_Q4_GROUP, c0 = ngf * GS_Q4_GROUP;
    const gs_dtype dt = J->w->h.dt;
    const size_t rb = gs_quant_q_bytes(dt, 1, k);
    int32_t *d = (int32_t *)((char *)gs_cpu_scratch(J->c, tid) + J->d_off);
    for (int64_t j = j0; j < j1;) {
        const int nr = j1 - j >= GS_QNR ? GS_QNR : 1;
        for (int64_t r0 = 0; r0 < m; r0 += GS_QMR) {
            const int mr = m - r0 < GS_QMR ? (int)(m - r0) : GS_QMR;
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

static int matmul_qv(gs_cpu *c, gs_mat out, gs_mat x, const gs_cpu_weight *w, const float *bias,
                     int accum)
{
    const int64_t m = x.rows, k = x.cols, n = out.cols;
    const int64_t ng = (k + GS_Q4_GROUP - 1) / GS_Q4_GROUP;
    const int64_t mp = (m + GS_QMR - 1) / GS_QMR * GS_QMR;
    const size_t xq = (size_t)m * (size_t)ng * GS_Q4_GROUP;
    const size_t sx_off = (xq + 63) & ~(size_t)63;
    const size_t sum_off = sx_off + (size_t)mp * (size_t)ng * 4;
    const size_t d_off = (sum_off + (size_t)mp * (size_t)ng * 4 + 63) & ~(size_t)63;
    const size_t d_bytes = sizeof(int32_t) * GS_QNR * GS_QMR * (size_t)ng;
    /* Thread 0's scratch holds the quantized x for everyone; every thread
     * keeps its dots after that offset. */
    if (gs_cpu_scratch_reserve(c, d_off + d_bytes))
        return GS_ENOMEM;
    char *base = gs_cpu_scratch(c, 0);
    int8_t *qx = (int8_t *)base;
    float *sx = (float *)(base + sx_off);
    int32_t *sumx = (int32_t *)(base + sum_off);
    memset(sx, 0, (size_t)mp * (size_t)ng * 4); /* rows past m: scale and sum 0 */
    memset(sumx, 0, (size_t)mp * (size_t)ng * 4);
    const int q4 = w->h.dt == GS_DT_Q4;
    for (int64_t r = 0; r < m; r++) {
        const float *xr = gs_cpu_row(x, r);
        for (int64_t g = 0; g < ng; g++) {
            const int64_t c0 = g * GS_Q4_GROUP;
            const int nc = k - c0 < GS_Q4_GROUP ? (int)(k - c0) : GS_Q4_GROUP;
            quant_x_group(xr + c0, nc, q4, qx + (r * ng + g) * GS_Q4_GROUP, &sx[g * mp + r],
                          &sumx[g * mp + r]);
        }
    }
    qv_job J = {
        out, x, w, bias, accum, ng, k / GS_Q4_GROUP, mp, qx, sx, sumx, d_off, gs_cpu_quant_dot_fn(),
        c};
    gs_cpu_parallel(c, n, gs_cpu_grain(c, n, 4, 8), qv_cols, &J);
    return 0;
}

/* ---- prefill: dequantized panels + cblas_sgemm ------------------------ */

typedef struct {
    gs_mat out, x;
    const gs_cpu_weight *w;
    const float *bias;
    int accum;
    int64_t mb, nb, n_nblk;
    gs_cpu *c;
} qm_job;

/* Columns [k0, k0 + kc) of weight row j to F32 (k0 a multiple of the
 * group), the values gs_dequantize_row gives. */
GS_CPU_HOT static void dequant(const gs_cpu_weight *w, int64_t j, int64_t k0, int64_t kc,
                               float *dst)
{
    const int64_t k = w->h.cols;
    if (w->h.dt == GS_DT_Q8) {
        const int8_t *q = (const int8_t *)w->data + (size_t)j * (size_t)k + k0;
        const float s = w->scales[j];
        for (int64_t i = 0; i < kc; i++)
            dst[i] = (float)q[i] * s;
        return;
    }
    const int64_t ng = (k + GS_Q4_GROUP - 1) / GS_Q4_GROUP;
    const uint8_t *q = (const uint8_t *)w->data + (size_t)j * (size_t)((k + 1) / 2) + k0 / 2;
    const float *sw = w->scales + j * ng + k0 / GS_Q4_GROUP;
    for (int64_t c0 = 0; c0 < kc; c0 += GS_Q4_GROUP) {
        const int64_t n = kc - c0 < GS_Q4_GROUP ? kc - c0 : GS_Q4_GROUP;
        const float s = sw[c0 / GS_Q4_GROUP];
        const uint8_t *b = q + c0 / 2;
        float *o = dst + c0;
        for (int64_t i = 0; i < n / 2; i++) {
            o[2 * i] = (float)((int)(b[i] & 15) - 8) * s;
            o[2 * i + 1] = (float)((int)(b[i] >> 4) - 8) * s;
        }
        if (n & 1)
            o[n - 1] = (float)((int)(b[n / 2] & 15) - 8) * s;
    }
}

static void qm_items(void *ctx, int64_t i0, int64_t i1, int tid)
{
    qm_job *J = ctx;
    const int64_t m = J->x.rows, n = J->out.cols, k = J->x.cols;
    float *panel = gs_cpu_scratch(J->c, tid);
    for (int64_t it = i0; it < i1; it++) {
        const int64_t r0 = (it / J->n_nblk) * J->mb, c0 = (it % J->n_nblk) * J->nb;
        const int64_t mr = m - r0 < J->mb ? m - r0 : J->mb;
        const int64_t nc = n - c0 < J->nb ? n - c0 : J->nb;
        if (mr <= 0 || nc <= 0)
            continue;
        const float *xa = gs_cpu_row(J->x, r0);
        float *oc = gs_cpu_row(J->out, r0) + c0;
        for (int64_t k0 = 0; k0 < k; k0 += GEMM_KC) {
            const int64_t kc = k - k0 < GEMM_KC ? k - k0 : GEMM_KC;
            for (int64_t j = 0; j < nc; j++)
                dequant(J->w, c0 + j, k0, kc, panel + j * kc);
            float beta = (k0 > 0 || J->accum) ? 1.0f : 0.0f;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mr, (int)nc, (int)kc, 1.0f,
                        xa + k0, (int)J->x.stride, panel, (int)kc, beta, oc, (int)J->out.stride);
        }
        if (J->bias)
            for (int64_t r = 0; r < mr; r++) {
                float *o = oc + r * J->out.stride;
                for (int64_t j = 0; j < nc; j++)
                    o[j] += J->bias[c0 + j];
            }
    }
}

/* The blocking of matmul.c's GEMM: row blocks of GEMM_MB when m is large,
 * column blocks of at most GEMM_NB, a multiple of the threads where
 * possible. */
static int matmul_qm(gs_cpu *c, gs_mat out, gs_mat x, const gs_cpu_weight *w, const float *bias,
                     int accum)
{
    const int64_t m = x.rows, n = out.cols, k = x.cols;
    const int T = c->n_threads;
    qm_job J = {out, x, w, bias, accum, 0, 0, 0, c};
    int64_t n_mblk = m > 2 * GEMM_MB ? (m + GEMM_MB - 1) / GEMM_MB : 1;
    J.mb = (m + n_mblk - 1) / n_mblk;
    int64_t n_nblk = (n + GEMM_NB - 1) / GEMM_NB;
    int64_t items = n_mblk * n_nblk;
    if (items < T)
        n_nblk = (T + n_mblk - 1) / n_mblk;
    else if (items % T)
        n_nblk = (((items + T - 1) / T) * T + n_mblk - 1) / n_mblk;
    J.nb = (n + n_nblk - 1) / n_nblk;
    J.nb = (J.nb + 15) & ~(int64_t)15;
    if (J.nb > n)
        J.nb = n;
    J.n_nblk = (n + J.nb - 1) / J.nb;
    if (gs_cpu_scratch_reserve(c,
                               sizeof(float) * (size_t)J.nb * (size_t)(k < GEMM_KC ? k : GEMM_KC)))
        return GS_ENOMEM;
    gs_cpu_parallel(c, n_mblk * J.n_nblk, 1, qm_items, &J);
    return 0;
}

int gs_cpu_matmul_any(gs_backend *be, gs_mat out, gs_mat x, const gs_weight *w, const gs_vec *bias,
                      unsigned flags)
{
    if (!gs_dtype_is_quant(w->dt))
        return gs_cpu_matmul(be, out, x, w, bias, flags);
    gs_cpu *c = gs_cpu_of(be);
    const float *b = bias ? bias->data : NULL;
    const int accum = (flags & GS_MM_ACCUM) != 0;
    if (x.rows <= QV_MAX_M)
        return matmul_qv(c, out, x, gs_cpu_w(w), b, accum);
    if (x.cols > INT32_MAX || out.cols > INT32_MAX || x.stride > INT32_MAX ||
        out.stride > INT32_MAX)
        return GS_EINVAL; /* cblas takes int */
    return matmul_qm(c, out, x, gs_cpu_w(w), b, accum);
}

/* matmul.c - out[m, n] (+)= x[m, k] . W[n, k]^T (+ bias) on the CPU.
 *
 * Two paths, both threaded over blocks of output columns (= weight rows):
 *
 *  - GEMV (m <= GS_GEMV_MAX_M = 16, decode and small decode batches): each thread walks its weight
 * rows once, widening 16-bit values to F32 a chunk at a time in L1 and accumulating all m dot
 * products from that chunk in F32 (16 partial sums each, a shape compilers vectorise). Reading each
 * weight byte once makes it memory-bandwidth-bound, as decode must be.
 *  - GEMM (larger m, prefill and vision): work items are (row block of x,
 *    column block of out). F32 weights go straight to cblas_sgemm. 16-bit
 *    weights are widened a [NB x KC] panel at a time into the thread's
 *    scratch and multiplied with cblas_sgemm (beta = 1 after the first k
 *    chunk), so no full F32 copy of a BF16 weight ever exists.
 *
 * Threading: gs_cpu_parallel; OpenBLAS is single-threaded inside. */
#include <cblas.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"

#define GS_GEMV_MAX_M 16
#define GEMV_KC 256  /* weight elements widened at a time (1 KiB of F32) */
#define LANES 16     /* partial sums per dot product (m > 1) */
#define LANES1 64    /* partial sums of the m == 1 dot products: 4+ vector chains */
#define GEMM_KC 2048 /* panel depth (k) for 16-bit weights: panels of at most 4 MiB */
#define GEMM_NB 512  /* widest column block (fewer repacks of x per call) */
#define GEMM_MB 512  /* rows of x per work item when m is large */

/* Widens n 16-bit weights (2-byte aligned) to F32. */
static void widen(const uint16_t *src, gs_dtype dt, float *dst, int64_t n)
{
    if (dt == GS_DT_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)src[i] << 16;
            memcpy(&dst[i], &u, 4);
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            dst[i] = gs_f16_to_f32(src[i]);
    }
}

typedef struct {
    gs_mat out, x;
    const gs_cpu_weight *w;
    const float *bias;
    int accum;
    /* GEMM blocking */
    int64_t mb, nb, n_nblk;
    gs_cpu *c;
} mm_job;

/* ---- GEMV --------------------------------------------------------------- */

/* dot(W row, x) for one x row: BF16 widened in registers (a shift), F32 as
 * is; 16 partial sums. */
static inline float dot_bf16(const uint16_t *w, const float *x, int64_t k)
{
    float acc[LANES1] = {0};
    const int64_t kv = k - k % LANES1;
    for (int64_t i = 0; i < kv; i += LANES1)
        for (int l = 0; l < LANES1; l++) {
            uint32_t u = (uint32_t)w[i + l] << 16;
            float f;
            memcpy(&f, &u, 4);
            acc[l] += f * x[i + l];
        }
    float s = 0.0f;
    for (int64_t i = kv; i < k; i++)
        s += gs_bf16_to_f32(w[i]) * x[i];
    for (int l = 0; l < LANES1; l++)
        s += acc[l];
    return s;
}

/* Two adjacent BF16 rows against one x: shares the x loads and gives the
 * core two independent streams (measurably faster than one at a time). */
static inline void dot2_bf16(const uint16_t *w, const float *x, int64_t k, float *s0, float *s1)
{
    float a0[LANES1 / 2] = {0}, a1[LANES1 / 2] = {0};
    const uint16_t *w1 = w + k;
    const int64_t kv = k - k % (LANES1 / 2);
    for (int64_t i = 0; i < kv; i += LANES1 / 2)
        for (int l = 0; l < LANES1 / 2; l++) {
            uint32_t u = (uint32_t)w[i + l] << 16, v = (uint32_t)w1[i + l] << 16;
            float f, g;
            memcpy(&f, &u, 4);
            memcpy(&g, &v, 4);
            a0[l] += f * x[i + l];
            a1[l] += g * x[i + l];
        }
    float r0 = 0.0f, r1 = 0.0f;
    for (int64_t i = kv; i < k; i++) {
        r0 += gs_bf16_to_f32(w[i]) * x[i];
        r1 += gs_bf16_to_f32(w1[i]) * x[i];
    }
    for (int l = 0; l < LANES1 / 2; l++) {
        r0 += a0[l];
        r1 += a1[l];
    }
    *s0 = r0;
    *s1 = r1;
}

static inline float dot_f32(const float *w, const float *x, int64_t k)
{
    float acc[LANES1] = {0};
    const int64_t kv = k - k % LANES1;
    for (int64_t i = 0; i < kv; i += LANES1)
        for (int l = 0; l < LANES1; l++)
            acc[l] += w[i + l] * x[i + l];
    float s = 0.0f;
    for (int64_t i = kv; i < k; i++)
        s += w[i] * x[i];
    for (int l = 0; l < LANES1; l++)
        s += acc[l];
    return s;
}

static inline void gemv_store(mm_job *J, int64_t r, int64_t j, float s)
{
    if (J->bias)
        s += J->bias[j];
    float *o = gs_cpu_row(J->out, r) + j;
    *o = J->accum ? *o + s : s;
}

/* Weight rows [j0, j1). m == 1 with BF16 or F32 weights (decode): one fused
 * pass per row. Otherwise each GEMV_KC chunk of a weight row is widened
 * once into L1 and used for all m rows of x. */
GS_CPU_HOT static void gemv_cols(void *ctx, int64_t j0, int64_t j1, int tid)
{
    mm_job *J = ctx;
    const int64_t k = J->x.cols, m = J->x.rows;
    const gs_dtype dt = J->w->h.dt;
    if (m == 1 && dt == GS_DT_BF16) {
        const float *x = gs_cpu_row(J->x, 0);
        const uint16_t *w = J->w->data;
        int64_t j = j0;
        for (; j + 2 <= j1; j += 2) {
            float s0, s1;
            dot2_bf16(w + j * k, x, k, &s0, &s1);
            gemv_store(J, 0, j, s0);
            gemv_store(J, 0, j + 1, s1);
        }
        if (j < j1)
            gemv_store(J, 0, j, dot_bf16(w + j * k, x, k));
        return;
    }
    if (m == 1 && dt == GS_DT_F32) {
        const float *x = gs_cpu_row(J->x, 0);
        for (int64_t j = j0; j < j1; j++)
            gemv_store(J, 0, j, dot_f32((const float *)J->w->data + j * k, x, k));
        return;
    }
    float wbuf[GEMV_KC];
    for (int64_t j = j0; j < j1; j++) {
        float acc[GS_GEMV_MAX_M][LANES];
        float tail[GS_GEMV_MAX_M];
        memset(acc, 0, sizeof acc);
        memset(tail, 0, sizeof tail);
        for (int64_t k0 = 0; k0 < k; k0 += GEMV_KC) {
            const int64_t kb = k - k0 < GEMV_KC ? k - k0 : GEMV_KC;
            const float *wf;
            if (dt == GS_DT_F32) {
                wf = (const float *)J->w->data + j * k + k0;
            } else {
                widen((const uint16_t *)J->w->data + j * k + k0, dt, wbuf, kb);
                wf = wbuf;
            }
            const int64_t kv = kb - kb % LANES;
            for (int64_t r = 0; r < m; r++) {
                const float *xr = gs_cpu_row(J->x, r) + k0;
                float *a = acc[r];
                for (int64_t i = 0; i < kv; i += LANES)
                    for (int l = 0; l < LANES; l++)
                        a[l] += wf[i + l] * xr[i + l];
                for (int64_t i = kv; i < kb; i++)
                    tail[r] += wf[i] * xr[i];
            }
        }
        for (int64_t r = 0; r < m; r++) {
            float s = tail[r];
            for (int l = 0; l < LANES; l++)
                s += acc[r][l];
            gemv_store(J, r, j, s);
        }
    }
}

/* ---- GEMM --------------------------------------------------------------- */

GS_CPU_HOT static void gemm_items(void *ctx, int64_t i0, int64_t i1, int tid)
{
    mm_job *J = ctx;
    const int64_t m = J->x.rows, n = J->out.cols, k = J->x.cols;
    const gs_dtype dt = J->w->h.dt;
    float *panel = gs_cpu_scratch(J->c, tid);
    for (int64_t it = i0; it < i1; it++) {
        const int64_t r0 = (it / J->n_nblk) * J->mb, c0 = (it % J->n_nblk) * J->nb;
        const int64_t mr = m - r0 < J->mb ? m - r0 : J->mb;
        const int64_t nc = n - c0 < J->nb ? n - c0 : J->nb;
        if (mr <= 0 || nc <= 0)
            continue;
        const float *xa = gs_cpu_row(J->x, r0);
        float *oc = gs_cpu_row(J->out, r0) + c0;
        if (dt == GS_DT_F32) {
            const float *wb = (const float *)J->w->data + c0 * k;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mr, (int)nc, (int)k, 1.0f, xa,
                        (int)J->x.stride, wb, (int)k, J->accum ? 1.0f : 0.0f, oc,
                        (int)J->out.stride);
        } else {
            for (int64_t k0 = 0; k0 < k; k0 += GEMM_KC) {
                const int64_t kc = k - k0 < GEMM_KC ? k - k0 : GEMM_KC;
                const uint16_t *wb = (const uint16_t *)J->w->data + c0 * k + k0;
                for (int64_t j = 0; j < nc; j++)
                    widen(wb + j * k, dt, panel + j * kc, kc);
                float beta = (k0 > 0 || J->accum) ? 1.0f : 0.0f;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mr, (int)nc, (int)kc,
                            1.0f, xa + k0, (int)J->x.stride, panel, (int)kc, beta, oc,
                            (int)J->out.stride);
            }
        }
        if (J->bias)
            for (int64_t r = 0; r < mr; r++) {
                float *o = oc + r * J->out.stride;
                for (int64_t j = 0; j < nc; j++)
                    o[j] += J->bias[c0 + j];
            }
    }
}

int gs_cpu_matmul(gs_backend *be, gs_mat out, gs_mat x, const gs_weight *w, const gs_vec *bias,
                  unsigned flags)
{
    gs_cpu *c = gs_cpu_of(be);
    const int64_t m = x.rows, n = out.cols, k = x.cols;
    if (k > INT32_MAX || n > INT32_MAX || x.stride > INT32_MAX || out.stride > INT32_MAX)
        return GS_EINVAL; /* cblas takes int */
    mm_job J = {out, x, gs_cpu_w(w), bias ? bias->data : NULL, (flags & GS_MM_ACCUM) != 0, 0, 0,
                0,   c};
    const int T = c->n_threads;

    if (m <= GS_GEMV_MAX_M) {
        /* ~4 chunks per thread, at least 8 weight rows each. */
        gs_cpu_parallel(c, n, gs_cpu_grain(c, n, 4, 8), gemv_cols, &J);
        return 0;
    }

    /* Blocking: row blocks of GEMM_MB when m is large; column blocks of at
     * most GEMM_NB, enough of them (a multiple of T where possible) that
     * every thread gets equal work. */
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
    if (w->dt != GS_DT_F32 && gs_cpu_scratch_reserve(c, sizeof(float) * (size_t)J.nb *
                                                            (size_t)(k < GEMM_KC ? k : GEMM_KC)))
        return GS_ENOMEM;
    gs_cpu_parallel(c, n_mblk * J.n_nblk, 1, gemm_items, &J);
    return 0;
}

/* matmul.c - out[m, n] (+)= x[m, k] . W[n, k]^T (+ bias) on the CPU.
 *
 * Two paths, both threaded over blocks of output columns (= weight rows):
 *
 *  - GEMV (m <= GS_GEMV_MAX_M = 32: decode and decode batches): register tiles of
 *    4 weight rows x 4 rows of x, 16-bit weights widened to F32 in registers,
 *    so each weight byte comes from memory once for all m rows and m = 2..8
 *    cost about what m = 1 costs (memory-bound). Every output element is
 *    summed in one fixed order whatever m is (see "GEMV" below): a row's
 *    result never depends on which other rows share the batch.
 *  - GEMM (larger m, prefill and vision): BF16 weights go to the CPU's BF16
 *    matrix units (gemm_bf16.c, oneDNN) where the build and the CPU have
 *    them and GS_TUNE_CPU_GEMM_F32 is off. Otherwise (and for F16 and F32
 *    weights) work items are (row block of x, column block of out). F32
 *    weights go straight to cblas_sgemm. 16-bit weights are widened a
 *    [NB x KC] panel at a time into the thread's scratch and multiplied
 *    with cblas_sgemm (beta = 1 after the first k chunk), so no full F32
 *    copy of a BF16 weight ever exists.
 *
 * Threading: gs_cpu_parallel; OpenBLAS is single-threaded inside. */
#include <cblas.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/gemm_bf16.h"

#define GS_GEMV_MAX_M 32
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

/* Every GEMV output element out[r, j] = dot(x row r, W row j) is summed in
 * one fixed order, whatever m is and whichever tile computes it: GV_L lane
 * partial sums (lane l accumulates elements i with i % GV_L == l, in order of
 * i, over the first k - k % GV_L elements), then s = the tail elements in
 * order, then s += lane 0, 1, ..., GV_L - 1. So a row's result is bitwise the
 * same alone (m = 1) or in any batch: decode batching never changes a
 * sequence's tokens. Tiles of GV_NR weight rows x GV_MR rows of x keep their
 * GV_NR * GV_MR lane vectors in registers; each weight tile is read from
 * memory once and from cache for every further group of GV_MR rows of x. */
#define GV_L 16
#define GV_NR 4
#define GV_MR 4

/* a + w * x may fuse into one FMA (one rounding) where the ISA has it: twice
 * the multiply-adds per cycle, which keeps m = 8 near memory speed. All GEMV
 * tiles are the same code, so they all fuse or all do not in one build and
 * clone (contraction never depends on m). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#elif defined(__clang__)
#pragma clang fp contract(fast)
#endif

#if defined(__GNUC__) || defined(__clang__)
/* GCC/Clang vector extensions: one GV_L-float vector (a zmm, 2 ymm, 4 NEON
 * registers); the compiler lowers it for each target_clones ISA. */
#define GV_VEC 1
#define GV_INLINE static inline __attribute__((always_inline))
typedef float gv_f __attribute__((vector_size(4 * GV_L)));
typedef uint32_t gv_u __attribute__((vector_size(4 * GV_L)));
typedef uint16_t gv_h __attribute__((vector_size(2 * GV_L)));
#else
#define GV_INLINE static inline
typedef struct {
    float v[GV_L];
} gv_f;
#endif

/* (Vectors pass by pointer: by value they would change the psABI.) */
GV_INLINE void gv_zero(gv_f *a)
{
    memset(a, 0, sizeof *a);
}

/* GV_L floats (any alignment). */
GV_INLINE void gv_load_f32(gv_f *a, const float *p)
{
    memcpy(a, p, sizeof *a);
}

/* GV_L weights of dtype dt at p, widened to F32 (BF16: in registers). */
GV_INLINE void gv_load_w(gv_f *a, const void *p, gs_dtype dt)
{
    if (dt == GS_DT_F32) {
        gv_load_f32(a, p);
        return;
    }
#ifdef GV_VEC
    if (dt == GS_DT_BF16) {
        gv_h h;
        memcpy(&h, p, sizeof h);
        gv_u u = __builtin_convertvector(h, gv_u) << 16;
        memcpy(a, &u, sizeof *a);
        return;
    }
#endif
    float f[GV_L];
    const uint16_t *h = p;
    for (int l = 0; l < GV_L; l++)
        f[l] = dt == GS_DT_BF16 ? gs_bf16_to_f32(h[l]) : gs_f16_to_f32(h[l]);
    memcpy(a, f, sizeof *a);
}

/* a += w * x, lane by lane. */
GV_INLINE void gv_madd(gv_f *a, const gv_f *w, const gv_f *x)
{
#ifdef GV_VEC
    *a = *a + *w * *x;
#else
    for (int l = 0; l < GV_L; l++)
        a->v[l] = a->v[l] + w->v[l] * x->v[l];
#endif
}

GV_INLINE float gv_lane(const gv_f *a, int l)
{
#ifdef GV_VEC
    return (*a)[l];
#else
    return a->v[l];
#endif
}

/* Scalar weight i of a row of dtype dt. */
GV_INLINE float gv_w1(const void *row, gs_dtype dt, int64_t i)
{
    if (dt == GS_DT_F32)
        return ((const float *)row)[i];
    uint16_t h = ((const uint16_t *)row)[i];
    return dt == GS_DT_BF16 ? gs_bf16_to_f32(h) : gs_f16_to_f32(h);
}

static inline void gemv_store(mm_job *J, int64_t r, int64_t j, float s)
{
    if (J->bias)
        s += J->bias[j];
    float *o = gs_cpu_row(J->out, r) + j;
    *o = J->accum ? *o + s : s;
}

/* out[r0 .. r0+mr, j .. j+nr] in the fixed order above; nr <= GV_NR,
 * mr <= GV_MR and dt are compile-time constants where it is inlined. */
GV_INLINE void gv_tile(mm_job *J, gs_dtype dt, int64_t j, int64_t r0, int nr, int mr)
{
    const int64_t k = J->x.cols, kv = k - k % GV_L;
    const size_t esz = dt == GS_DT_F32 ? 4 : 2;
    const char *w[GV_NR];
    const float *x[GV_MR];
    gv_f acc[GV_NR][GV_MR];
    for (int t = 0; t < nr; t++)
        w[t] = (const char *)J->w->data + (size_t)(j + t) * (size_t)k * esz;
    for (int r = 0; r < mr; r++) {
        x[r] = gs_cpu_row(J->x, r0 + r);
        for (int t = 0; t < nr; t++)
            gv_zero(&acc[t][r]);
    }
    for (int64_t i = 0; i < kv; i += GV_L) {
        gv_f wv[GV_NR];
        for (int t = 0; t < nr; t++)
            gv_load_w(&wv[t], w[t] + (size_t)i * esz, dt);
        for (int r = 0; r < mr; r++) {
            gv_f xv;
            gv_load_f32(&xv, x[r] + i);
            for (int t = 0; t < nr; t++)
                gv_madd(&acc[t][r], &wv[t], &xv);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int t = 0; t < nr; t++) {
            float s = 0.0f;
            for (int64_t i = kv; i < k; i++)
                s = s + gv_w1(w[t], dt, i) * x[r][i];
            for (int l = 0; l < GV_L; l++)
                s += gv_lane(&acc[t][r], l);
            gemv_store(J, r0 + r, j + t, s);
        }
}

/* All rows of x against weight rows [j, j + nr), nr = GV_NR or 1. */
#define GV_ROWS(DT, NR)                                                                            \
    for (int64_t r0 = 0; r0 < m; r0 += GV_MR) {                                                    \
        switch (m - r0 < GV_MR ? (int)(m - r0) : GV_MR) {                                          \
        case 1:                                                                                    \
            gv_tile(J, DT, j, r0, NR, 1);                                                          \
            break;                                                                                 \
        case 2:                                                                                    \
            gv_tile(J, DT, j, r0, NR, 2);                                                          \
            break;                                                                                 \
        case 3:                                                                                    \
            gv_tile(J, DT, j, r0, NR, 3);                                                          \
            break;                                                                                 \
        default:                                                                                   \
            gv_tile(J, DT, j, r0, NR, GV_MR);                                                      \
            break;                                                                                 \
        }                                                                                          \
    }

#define GV_COLS(DT)                                                                                \
    do {                                                                                           \
        int64_t j = j0;                                                                            \
        for (; j + GV_NR <= j1; j += GV_NR)                                                        \
            GV_ROWS(DT, GV_NR)                                                                     \
        for (; j < j1; j++)                                                                        \
            GV_ROWS(DT, 1)                                                                         \
    } while (0)

/* Weight rows [j0, j1) against all m rows of x. */
GS_CPU_HOT static void gemv_cols(void *ctx, int64_t j0, int64_t j1, int tid)
{
    mm_job *J = ctx;
    const int64_t m = J->x.rows;
    switch (J->w->h.dt) {
    case GS_DT_BF16:
        GV_COLS(GS_DT_BF16);
        break;
    case GS_DT_F16:
        GV_COLS(GS_DT_F16);
        break;
    default:
        GV_COLS(GS_DT_F32);
        break;
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

    if (w->dt == GS_DT_BF16) {
        int rc = gs_cpu_gemm_bf16(c, out, x, J.w, J.bias, J.accum);
        if (rc != GS_ENOTSUP)
            return rc;
    }

    const gs_cpu_gemm_blocks bl = gs_cpu_gemm_blocking(m, n, T, GEMM_MB, GEMM_NB);
    const int64_t n_mblk = bl.n_mblk;
    J.mb = bl.mb;
    J.nb = bl.nb;
    J.n_nblk = bl.n_nblk;
    if (w->dt != GS_DT_F32 && gs_cpu_scratch_reserve(c, sizeof(float) * (size_t)J.nb *
                                                            (size_t)(k < GEMM_KC ? k : GEMM_KC)))
        return GS_ENOMEM;
    gs_cpu_parallel(c, n_mblk * J.n_nblk, 1, gemm_items, &J);
    return 0;
}

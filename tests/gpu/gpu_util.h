/* gpu_util.h - helpers of the CUDA-vs-CPU test: the two backends, matrices
 * that exist on both (same logical values: F32 on the CPU, BF16 on CUDA),
 * index arrays on both, and the comparison that prints one table row.
 * Header-only; test code only (aborts the program on host OOM). */
#ifndef GS_GPU_UTIL_H
#define GS_GPU_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "kernels/kernels.h"
#include "kernels/tolerances.h"

typedef struct {
    gs_backend *cpu, *gpu;
    int n_pass, n_fail;
} gt_ctx;

/* The same logical matrix on both backends (act dtype of each). */
typedef struct {
    gs_mat c, g;
} gt_mat;

typedef struct {
    int32_t *c, *g;
    int64_t n;
} gt_i32;

static uint64_t gt_rng_state = 0x243F6A8885A308D3ull;

static inline uint64_t gt_next(void)
{
    gt_rng_state ^= gt_rng_state << 13;
    gt_rng_state ^= gt_rng_state >> 7;
    gt_rng_state ^= gt_rng_state << 17;
    return gt_rng_state;
}

static inline float gt_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)(gt_next() >> 40) * (1.0f / 16777216.0f);
}

static inline void *gt_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test: out of host memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

static inline float gt_bf(float v)
{
    return gs_bf16_to_f32(gs_f32_to_bf16(v));
}

/* n BF16-representable values uniform in [lo, hi). */
static inline float *gt_rand(size_t n, float lo, float hi)
{
    float *p = gt_xmalloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = gt_bf(gt_uniform(lo, hi));
    return p;
}

static inline void gt_fail(gt_ctx *t, const char *op, const char *shape, const char *why, int rc)
{
    printf("%-16s %-40s %-11s %-11s %-22s FAIL (%s, rc %d %s)\n", op, shape, "-", "-", "-", why, rc,
           gs_err_name(rc));
    t->n_fail++;
}

/* Uploads host[rows * stride] (F32) into m, converting to m.dt. */
/* A row of the table for a check with no numeric error (exact or refused). */
static inline void gt_row(gt_ctx *t, const char *op, const char *shape, int ok, const char *detail)
{
    printf("%-16s %-40s %-11s %-11s %-22s %s%s%s\n", op, shape, "-", "-", "exact",
           ok ? "ok" : "FAIL", detail && *detail ? " " : "", detail ? detail : "");
    if (ok)
        t->n_pass++;
    else
        t->n_fail++;
}

static inline int gt_upload(gs_backend *be, gs_mat m, const float *host)
{
    const size_t n = (size_t)(m.rows * m.stride);
    if (m.dt == GS_DT_F32)
        return gs_buf_upload(be, m.data, host, n * 4);
    uint16_t *h = gt_xmalloc(n * 2);
    if (m.dt == GS_DT_BF16)
        gs_f32_to_bf16_row(host, h, n);
    else
        gs_f32_to_f16_row(host, h, n);
    int rc = gs_buf_upload(be, m.data, h, n * 2);
    free(h);
    return rc;
}

/* Downloads m into a new dense host array [rows * cols] F32. */
static inline float *gt_download(gs_backend *be, gs_mat m, int *rc)
{
    const size_t n = (size_t)(m.rows * m.stride), es = gs_dtype_size(m.dt);
    unsigned char *raw = gt_xmalloc(n * es);
    float *out = gt_xmalloc((size_t)(m.rows * m.cols) * sizeof *out);
    *rc = gs_buf_download(be, raw, m.data, n * es);
    for (int64_t r = 0; r < m.rows && !*rc; r++) {
        const unsigned char *src = raw + (size_t)(r * m.stride) * es;
        float *dst = out + r * m.cols;
        if (m.dt == GS_DT_F32)
            memcpy(dst, src, (size_t)m.cols * 4);
        else if (m.dt == GS_DT_BF16)
            gs_bf16_to_f32_row(src, dst, (size_t)m.cols);
        else
            gs_f16_to_f32_row(src, dst, (size_t)m.cols);
    }
    free(raw);
    return out;
}

/* A [rows, cols] matrix with row stride `stride` on both backends, in
 * each one's act dtype (or `dt_both` for both when >= 0), filled from
 * host[rows * stride] when host is not NULL. data NULL on failure. */
static inline gt_mat gt_mat_new(gt_ctx *t, int64_t rows, int64_t cols, int64_t stride, int dt_both,
                                const float *host)
{
    gt_mat m;
    gs_dtype dc = dt_both >= 0 ? (gs_dtype)dt_both : gs_backend_act_dtype(t->cpu);
    gs_dtype dg = dt_both >= 0 ? (gs_dtype)dt_both : gs_backend_act_dtype(t->gpu);
    m.c = (gs_mat){gs_buf_alloc(t->cpu, (size_t)(rows * stride) * gs_dtype_size(dc)), dc, rows,
                   cols, stride};
    m.g = (gs_mat){gs_buf_alloc(t->gpu, (size_t)(rows * stride) * gs_dtype_size(dg)), dg, rows,
                   cols, stride};
    if (host && m.c.data && m.g.data &&
        (gt_upload(t->cpu, m.c, host) || gt_upload(t->gpu, m.g, host))) {
        gs_buf_free(t->cpu, m.c.data);
        gs_buf_free(t->gpu, m.g.data);
        m.c.data = m.g.data = NULL;
    }
    return m;
}

/* Random BF16-representable contents in [lo, hi). */
static inline gt_mat gt_mat_rand(gt_ctx *t, int64_t rows, int64_t cols, int64_t stride, float lo,
                                 float hi)
{
    float *h = gt_rand((size_t)(rows * stride), lo, hi);
    gt_mat m = gt_mat_new(t, rows, cols, stride, -1, h);
    free(h);
    return m;
}

static inline void gt_mat_free(gt_ctx *t, gt_mat *m)
{
    gs_buf_free(t->cpu, m->c.data);
    gs_buf_free(t->gpu, m->g.data);
    m->c.data = m->g.data = NULL;
}

/* Columns [c0, c0 + n) of both. */
static inline gt_mat gt_cols(gt_mat m, int64_t c0, int64_t n)
{
    gt_mat r = {gs_mat_cols(m.c, c0, n), gs_mat_cols(m.g, c0, n)};
    return r;
}

static inline gt_i32 gt_i32_new(gt_ctx *t, const int32_t *host, int64_t n)
{
    gt_i32 a = {gs_buf_alloc(t->cpu, (size_t)n * 4), gs_buf_alloc(t->gpu, (size_t)n * 4), n};
    if (a.c && a.g &&
        (gs_buf_upload(t->cpu, a.c, host, (size_t)n * 4) ||
         gs_buf_upload(t->gpu, a.g, host, (size_t)n * 4))) {
        gs_buf_free(t->cpu, a.c);
        gs_buf_free(t->gpu, a.g);
        a.c = a.g = NULL;
    }
    return a;
}

static inline void gt_i32_free(gt_ctx *t, gt_i32 *a)
{
    gs_buf_free(t->cpu, a->c);
    gs_buf_free(t->gpu, a->g);
    a->c = a->g = NULL;
}

static inline void gt_header(void)
{
    printf("%-16s %-40s %-11s %-11s %-22s %s\n", "op", "shape", "max_abs", "rel_err", "tolerance",
           "pass");
    printf("%-16s %-40s %-11s %-11s %-22s %s\n", "----------------", "-----", "-------", "-------",
           "---------", "----");
}

/* Compares got (CUDA) with ref (CPU), n values, under the tolerance of
 * `tol_op`, prints one row; returns 1 when every element passes. */
static inline int gt_compare(gt_ctx *t, const char *tol_op, const char *op, const char *shape,
                             const float *got, const float *ref, size_t n)
{
    const gs_tol *tol = gs_tol_get(tol_op);
    double ss = 0, maxref = 0;
    for (size_t i = 0; i < n; i++) {
        ss += (double)ref[i] * ref[i];
        if (fabs(ref[i]) > maxref)
            maxref = fabs(ref[i]);
    }
    const double rms = n ? sqrt(ss / (double)n) : 0;
    double maxabs = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - (double)ref[i]);
        const double lim = tol ? tol->atol * rms + tol->rtol * fabs(ref[i]) : 0;
        if (!(e <= lim)) { /* NaN fails */
            if (!bad)
                first_bad = i;
            bad++;
        }
        if (e > maxabs || e != e)
            maxabs = e;
    }
    char tb[32];
    snprintf(tb, sizeof tb, "%.0e*rms+%.0e*|r|", tol ? tol->atol : 0, tol ? tol->rtol : 0);
    printf("%-16s %-40s %-11.3e %-11.3e %-22s %s", op, shape, maxabs,
           maxref > 0 ? maxabs / maxref : maxabs, tb, bad ? "FAIL" : "ok");
    if (bad)
        printf(" (%zu of %zu; first at %zu: cuda %g cpu %g)", bad, n, first_bad,
               (double)got[first_bad], (double)ref[first_bad]);
    printf("\n");
    if (bad || !tol)
        t->n_fail++;
    else
        t->n_pass++;
    return !bad && tol;
}

/* Downloads m from both backends and compares. */
static inline int gt_check(gt_ctx *t, const char *tol_op, const char *op, const char *shape,
                           gt_mat m)
{
    int rc1 = 0, rc2 = 0;
    float *g = gt_download(t->gpu, m.g, &rc1);
    float *c = gt_download(t->cpu, m.c, &rc2);
    int ok = 0;
    if (rc1 || rc2)
        gt_fail(t, op, shape, rc1 ? "cuda download" : "cpu download", rc1 ? rc1 : rc2);
    else
        ok = gt_compare(t, tol_op, op, shape, g, c, (size_t)(m.c.rows * m.c.cols));
    free(g);
    free(c);
    return ok;
}

#endif

/* kt.h - helpers shared by the kernel tests: a seeded RNG, host <-> backend
 * copies, dtype rounding for references. Header-only, test code only.
 * The tests move data with gs_buf_upload/download (not by touching CPU
 * memory directly), so they stay valid for any backend. */
#ifndef GS_KT_H
#define GS_KT_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "kernels/kernels.h"
#include "test.h"

static uint64_t kt_rng = 0x1234567887654321ull;

static inline void kt_seed(uint64_t s)
{
    kt_rng = s * 0x9E3779B97F4A7C15ull + 1;
}

static inline uint64_t kt_next(void)
{
    kt_rng ^= kt_rng << 13;
    kt_rng ^= kt_rng >> 7;
    kt_rng ^= kt_rng << 17;
    return kt_rng;
}

/* Uniform in [lo, hi). */
static inline float kt_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)(kt_next() >> 40) * (1.0f / 16777216.0f);
}

/* A malloc'd array of n uniform values (never NULL: aborts the test
 * program on OOM, which is fine for test code). */
static inline float *kt_rand(size_t n, float lo, float hi)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) {
        fprintf(stderr, "kt_rand: out of memory\n");
        exit(2);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = kt_uniform(lo, hi);
    return p;
}

/* A backend for the tests: CPU with `threads` threads (GS_TEST_THREADS
 * overrides when set; 0: gs_test_cpu_threads()). */
static inline gs_backend *kt_backend(int threads, int weights_f32)
{
    const char *e = getenv("GS_TEST_THREADS");
    int n = e ? atoi(e) : threads;
    gs_backend_params p = {GS_BACKEND_CPU, n > 0 ? n : gs_test_cpu_threads(), 0, weights_f32, 0, 0};
    gs_backend *be = NULL;
    gs_diag d;
    gs_diag_clear(&d);
    if (gs_backend_new(&p, &be, &d) != 0) {
        fprintf(stderr, "cannot make a backend: %s\n", d.msg);
        exit(2);
    }
    return be;
}

/* Backend copy of n bytes of host data (owned; gs_buf_free). */
static inline void *kt_up(gs_backend *be, const void *host, size_t bytes)
{
    void *d = gs_buf_alloc(be, bytes);
    if (!d || gs_buf_upload(be, d, host, bytes) != 0) {
        fprintf(stderr, "kt_up failed\n");
        exit(2);
    }
    return d;
}

/* Host copy (malloc'd) of n floats of backend memory. */
static inline float *kt_down(gs_backend *be, const void *dev, size_t n)
{
    float *h = malloc((n ? n : 1) * sizeof *h);
    if (!h || gs_buf_download(be, h, dev, n * sizeof *h) != 0) {
        fprintf(stderr, "kt_down failed\n");
        exit(2);
    }
    return h;
}

/* The value x takes once stored as dt. */
static inline float kt_round(float x, gs_dtype dt)
{
    if (dt == GS_DT_BF16)
        return gs_bf16_to_f32(gs_f32_to_bf16(x));
    if (dt == GS_DT_F16)
        return gs_f16_to_f32(gs_f32_to_f16(x));
    return x;
}

/* Host array of n values of x in dtype dt (malloc'd). */
static inline void *kt_pack(const float *x, size_t n, gs_dtype dt)
{
    size_t es = gs_dtype_size(dt);
    void *p = malloc((n ? n : 1) * es);
    if (!p)
        exit(2);
    if (dt == GS_DT_F32)
        memcpy(p, x, n * 4);
    else if (dt == GS_DT_BF16)
        gs_f32_to_bf16_row(x, p, n);
    else
        gs_f32_to_f16_row(x, p, n);
    return p;
}

/* A [rows, cols] view with row stride `stride` (>= cols) into new backend
 * memory holding host[rows, cols] (the gaps hold garbage). */
static inline gs_mat kt_mat_up(gs_backend *be, const float *host, int64_t rows, int64_t cols,
                               int64_t stride)
{
    float *tmp = malloc(sizeof(float) * (size_t)(rows * stride + 1));
    if (!tmp)
        exit(2);
    for (int64_t i = 0; i < rows * stride; i++)
        tmp[i] = 1e30f; /* garbage in the gaps must not leak into results */
    for (int64_t r = 0; r < rows; r++)
        memcpy(tmp + r * stride, host + r * cols, sizeof(float) * (size_t)cols);
    gs_mat m = {kt_up(be, tmp, sizeof(float) * (size_t)(rows * stride + 1)), GS_DT_F32, rows, cols,
                stride};
    free(tmp);
    return m;
}

/* Dense host copy [rows, cols] of an F32 view (malloc'd). */
static inline float *kt_mat_down(gs_backend *be, gs_mat m)
{
    float *all = kt_down(be, m.data, (size_t)((m.rows - 1) * m.stride + m.cols));
    float *d = malloc(sizeof(float) * (size_t)(m.rows * m.cols));
    if (!d)
        exit(2);
    for (int64_t r = 0; r < m.rows; r++)
        memcpy(d + r * m.cols, all + r * m.stride, sizeof(float) * (size_t)m.cols);
    free(all);
    return d;
}

/* gs_check_tensor on doubles converted to float references. */
static inline int kt_check(const char *name, const float *got, const double *ref, size_t n,
                           double tol)
{
    float *rf = malloc((n ? n : 1) * sizeof *rf);
    if (!rf)
        exit(2);
    for (size_t i = 0; i < n; i++)
        rf[i] = (float)ref[i];
    int ok = gs_check_tensor(name, got, rf, n, tol);
    free(rf);
    return ok;
}

#endif

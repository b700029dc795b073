/* gpu_quant.c - the CUDA backend's quantized weights, memory cap and F16
 * path, against the CPU backend (part of test_kernels_vs_cpu; needs a GPU):
 *  - random Q8 / Q4 weights made on the device are the CPU's bits: q and s
 *    read back through gs_cuda_weight_view and compared byte for byte with
 *    gs_quantize of the gs_rand_uniform values;
 *  - matmul with Q8 / Q4 weights (random and uploaded) vs the CPU at
 *    m = 1, 4, 16 (GEMV) and 100 (dequantized tiles + cuBLASLt), GLM shapes
 *    and an odd one (partial group, words the GEMV cannot take), bias,
 *    GS_MM_ACCUM, F32 output;
 *  - gs_backend_params.mem_limit: mem_info reports the cap, allocations and
 *    weights past it are refused, freeing makes room again;
 *  - the F16 path (GS_TUNE_CUDA_F16 forces it on any GPU): act dtype F16,
 *    residual F32; a residual of +-1e5 (past F16's 65504) through
 *    add_rmsnorm, rmsnorm and GS_MM_ACCUM, and a SwiGLU output of 1.6e5
 *    (silu_mul into F32, the down matmul from F32 x) stay finite and match
 *    the CPU; matmuls (16-bit and quantized weights) in F16 vs the CPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend_impl.h" /* gs_rand_uniform */
#include "kernels/cuda/cuda_ops.h"
#include "tests/gpu/gpu_util.h"

int gt_quant_tests(gt_ctx *t);

enum { QH = 4096, QINTER = 13696 };

/* The same weight on both backends; NULL members on failure. */
typedef struct {
    gs_weight *c, *g;
} gq_w;

static void gq_free(gt_ctx *t, gq_w *w)
{
    gs_weight_free(t->cpu, w->c);
    gs_weight_free(t->gpu, w->g);
    w->c = w->g = NULL;
}

static gq_w gq_random(gt_ctx *t, gs_dtype dt, int64_t rows, int64_t cols, uint64_t seed,
                      float scale)
{
    gq_w w = {NULL, NULL};
    int rc1 = gs_weight_new_random(t->cpu, dt, rows, cols, seed, scale, &w.c);
    int rc2 = gs_weight_new_random(t->gpu, dt, rows, cols, seed, scale, &w.g);
    if (rc1 || rc2) {
        char sh[64];
        snprintf(sh, sizeof sh, "%s [%lld, %lld]", gs_dtype_name(dt), (long long)rows,
                 (long long)cols);
        gt_fail(t, "weight_random", sh, rc1 ? "cpu" : "cuda", rc1 ? rc1 : rc2);
        gq_free(t, &w);
    }
    return w;
}

/* Host-quantized uploads (gs_weight_new_quant) of random values. */
static gq_w gq_upload(gt_ctx *t, gs_dtype qdt, int64_t rows, int64_t cols, float scale)
{
    gq_w w = {NULL, NULL};
    float *f = gt_rand((size_t)(rows * cols), -scale, scale);
    void *q = gt_xmalloc(gs_quant_q_bytes(qdt, rows, cols));
    float *s = gt_xmalloc(gs_quant_n_scales(qdt, rows, cols) * sizeof(float));
    int rc = gs_quantize(qdt, f, GS_DT_F32, rows, cols, q, s);
    if (!rc)
        rc = gs_weight_new_quant(t->cpu, qdt, rows, cols, q, s, &w.c);
    if (!rc)
        rc = gs_weight_new_quant(t->gpu, qdt, rows, cols, q, s, &w.g);
    if (rc) {
        gt_fail(t, "weight_new_quant", gs_dtype_name(qdt), "setup", rc);
        gq_free(t, &w);
    }
    free(f);
    free(q);
    free(s);
    return w;
}

/* out (+)= x . w^T (+ bias) on both, compared. Quantized weights give the
 * two backends the same weight values; the GPU's prefill path rounds the
 * dequantized tile to the 16-bit act dtype, so every output dtype is held
 * to the 16-bit GEMM tolerance. */
static void gq_mm(gt_ctx *t, const char *name, gq_w w, const gs_vec *bc, const gs_vec *bg,
                  int64_t m, int out_f32, unsigned flags, float xlo, float xhi, float init)
{
    const int64_t n = gs_weight_rows(w.c), k = gs_weight_cols(w.c);
    char sh[80];
    snprintf(sh, sizeof sh, "%s m=%lld n=%lld k=%lld%s%s%s", name, (long long)m, (long long)n,
             (long long)k, bc ? " +b" : "", flags & GS_MM_ACCUM ? " +=" : "",
             out_f32 ? " f32" : "");
    gt_mat x = gt_mat_rand(t, m, k, k, xlo, xhi);
    float *o0 = gt_rand((size_t)(m * n), -init, init);
    gt_mat o = gt_mat_new(t, m, n, n, out_f32 ? GS_DT_F32 : -1, o0);
    free(o0);
    if (!x.c.data || !x.g.data || !o.c.data || !o.g.data) {
        gt_fail(t, "matmul_q", sh, "setup", GS_ENOMEM);
    } else {
        int rc1 = gs_k_matmul(t->cpu, o.c, x.c, w.c, bc, flags);
        int rc2 = gs_k_matmul(t->gpu, o.g, x.g, w.g, bg, flags);
        if (rc1 || rc2)
            gt_fail(t, "matmul_q", sh, rc1 ? "cpu op failed" : "cuda op failed", rc1 ? rc1 : rc2);
        else
            gt_check(t, "matmul", "matmul_q", sh, o);
    }
    gt_mat_free(t, &x);
    gt_mat_free(t, &o);
}

/* ---- random quantized weights: the CPU's bits --------------------------------- */

static void test_random_bits(gt_ctx *t, gs_dtype qdt, int64_t rows, int64_t cols, uint64_t seed,
                             float scale)
{
    char sh[64];
    snprintf(sh, sizeof sh, "%s [%lld, %lld]", gs_dtype_name(qdt), (long long)rows,
             (long long)cols);
    gs_weight *w = NULL;
    int rc = gs_weight_new_random(t->gpu, qdt, rows, cols, seed, scale, &w);
    gs_cuda_wview v;
    if (!rc)
        rc = gs_cuda_weight_view(t->gpu, w, &v);
    if (rc) {
        gt_fail(t, "random_quant", sh, "cuda", rc);
        gs_weight_free(t->gpu, w);
        return;
    }
    const size_t qb = gs_quant_q_bytes(qdt, rows, cols), ns = gs_quant_n_scales(qdt, rows, cols);
    float *f = gt_xmalloc((size_t)(rows * cols) * sizeof *f);
    for (int64_t i = 0; i < rows * cols; i++)
        f[i] = gs_rand_uniform(seed, (uint64_t)i, scale);
    unsigned char *qr = gt_xmalloc(qb), *qg = gt_xmalloc(qb);
    float *sr = gt_xmalloc(ns * sizeof *sr), *sg = gt_xmalloc(ns * sizeof *sg);
    rc = gs_quantize(qdt, f, GS_DT_F32, rows, cols, qr, sr);
    if (!rc)
        rc = gs_buf_download(t->gpu, qg, v.data, qb);
    if (!rc)
        rc = gs_buf_download(t->gpu, sg, v.s, ns * sizeof *sg);
    if (rc) {
        gt_fail(t, "random_quant", sh, "quantize / download", rc);
    } else {
        size_t bad_q = 0, bad_s = 0;
        for (size_t i = 0; i < qb; i++)
            bad_q += qr[i] != qg[i];
        for (size_t i = 0; i < ns; i++)
            bad_s += memcmp(&sr[i], &sg[i], sizeof(float)) != 0;
        char det[96];
        snprintf(det, sizeof det, "(%zu of %zu q bytes, %zu of %zu scales differ)", bad_q, qb,
                 bad_s, ns);
        gt_row(t, "random_quant", sh, !bad_q && !bad_s, bad_q || bad_s ? det : "");
    }
    free(f);
    free(qr);
    free(qg);
    free(sr);
    free(sg);
    gs_weight_free(t->gpu, w);
}

/* ---- quantized matmul ------------------------------------------------------------ */

static void test_quant_matmul(gt_ctx *t, gs_dtype qdt)
{
    const int64_t ms[] = {1, 4, 16, 100};
    const char *qn = gs_dtype_name(qdt);
    char name[48];

    /* qkv: bias, GEMV rows of whole words */
    gq_w qkv = gq_random(t, qdt, QH + 512, QH, 21, 1.0f / 64);
    float *bh = gt_rand(QH + 512, -0.5f, 0.5f);
    gs_vec bc = {NULL, 0}, bg = {NULL, 0};
    if (gs_vec_new(t->cpu, bh, QH + 512, &bc) || gs_vec_new(t->gpu, bh, QH + 512, &bg))
        gt_fail(t, "vec_new", "qkv bias", "setup", GS_ENOMEM);
    free(bh);
    snprintf(name, sizeof name, "%s qkv", qn);
    for (unsigned i = 0; qkv.c && bc.data && bg.data && i < sizeof ms / sizeof ms[0]; i++)
        gq_mm(t, name, qkv, &bc, &bg, ms[i], 0, 0, -1.0f, 1.0f, 1.0f);
    gs_vec_free(t->cpu, &bc);
    gs_vec_free(t->gpu, &bg);
    gq_free(t, &qkv);

    /* down: k = 13696 (107 groups), residual accumulate, F32 out */
    gq_w dn = gq_random(t, qdt, QH, QINTER, 22, 1.0f / 117);
    snprintf(name, sizeof name, "%s down", qn);
    for (unsigned i = 0; dn.c && i < sizeof ms / sizeof ms[0]; i++) {
        gq_mm(t, name, dn, NULL, NULL, ms[i], 0, GS_MM_ACCUM, -1.0f, 1.0f, 1.0f);
        gq_mm(t, name, dn, NULL, NULL, ms[i], 1, GS_MM_ACCUM, -1.0f, 1.0f, 1.0f);
    }
    gq_free(t, &dn);

    /* odd shape: k = 200 (a partial group; Q4 rows of 100 bytes are no
     * 16-byte words, so the GEMV does not take them) */
    gq_w odd = gq_random(t, qdt, 300, 200, 23, 0.1f);
    snprintf(name, sizeof name, "%s odd", qn);
    for (unsigned i = 0; odd.c && i < sizeof ms / sizeof ms[0]; i++)
        gq_mm(t, name, odd, NULL, NULL, ms[i], 1, 0, -1.0f, 1.0f, 1.0f);
    gq_free(t, &odd);

    /* uploaded (host-quantized) weights, a gate_up-like width */
    gq_w up = gq_upload(t, qdt, 2048, QH, 1.0f / 64);
    snprintf(name, sizeof name, "%s upload", qn);
    for (unsigned i = 0; up.c && i < sizeof ms / sizeof ms[0]; i++)
        gq_mm(t, name, up, NULL, NULL, ms[i], 0, 0, -1.0f, 1.0f, 1.0f);
    gq_free(t, &up);
}

/* ---- the device memory cap --------------------------------------------------------- */

static void test_mem_limit(gt_ctx *t)
{
    const size_t cap = (size_t)256 << 20;
    gs_backend_params p = {.kind = GS_BACKEND_CUDA, .mem_limit = cap};
    const char *dev = getenv("GS_CUDA_DEVICE");
    p.device = dev ? atoi(dev) : 0;
    gs_backend *be = NULL;
    gs_diag d;
    int rc = gs_backend_new(&p, &be, &d);
    if (rc) {
        gt_fail(t, "mem_limit", "new backend", d.msg, rc);
        return;
    }
    size_t f = 0, tot = 0;
    rc = gs_backend_mem_info(be, &f, &tot);
    char det[128];
    snprintf(det, sizeof det, "(total %zu, free %zu)", tot, f);
    gt_row(t, "mem_limit", "mem_info: total = cap, free < cap",
           !rc && tot == cap && f < cap && f > cap / 2, det);
    /* all but 1 MiB of what is left fits; 2 MiB more does not */
    void *a = gs_buf_alloc(be, f - ((size_t)1 << 20));
    void *b = a ? gs_buf_alloc(be, (size_t)2 << 20) : NULL;
    gt_row(t, "mem_limit", "alloc up to the cap, refuse past it", a && !b, "");
    gs_buf_free(be, b);
    size_t f2 = 0;
    rc = gs_backend_mem_info(be, &f2, NULL);
    gt_row(t, "mem_limit", "mem_info free shrinks", !rc && f2 <= (size_t)1 << 20, "");
    gs_weight *w = NULL;
    int wrc = gs_weight_new_random(be, GS_DT_BF16, 1024, 1024, 1, 0.1f, &w); /* 2 MiB */
    gt_row(t, "mem_limit", "weight past the cap: GS_ENOMEM", wrc == GS_ENOMEM && !w, "");
    gs_weight_free(be, w);
    w = NULL;
    gs_buf_free(be, a);
    wrc = gs_weight_new_random(be, GS_DT_Q4, 1024, 1024, 1, 0.1f, &w);
    gt_row(t, "mem_limit", "freed memory counts again", wrc == 0 && w, "");
    gs_weight_free(be, w);
    gs_backend_free(be);
}

/* ---- the F16 path --------------------------------------------------------------------- */

/* 1 when every value is finite. */
static int all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

/* Downloads m from both backends of t and compares; also fails when the
 * CUDA result has inf or NaN. */
static void f16_check(gt_ctx *t, const char *tol, const char *op, const char *sh, gt_mat m)
{
    int rc = 0;
    float *g = gt_download(t->gpu, m.g, &rc);
    char s2[96];
    snprintf(s2, sizeof s2, "%s finite", sh);
    gt_row(t, op, s2, !rc && all_finite(g, (size_t)(m.g.rows * m.g.cols)), "");
    free(g);
    gt_check(t, tol, op, sh, m);
}

static void test_f16(gt_ctx *t0)
{
    const char *dev = getenv("GS_CUDA_DEVICE");
    gs_backend_params p = {.kind = GS_BACKEND_CUDA, .device = dev ? atoi(dev) : 0};
    gs_backend *be = NULL;
    gs_diag d;
    int rc = gs_backend_new(&p, &be, &d);
    if (rc) {
        gt_fail(t0, "f16", "new backend", d.msg, rc);
        return;
    }
    const gs_backend_tuning tune = {GS_TUNE_CUDA_F16, 0};
    rc = gs_backend_set_tuning(be, &tune);
    gt_row(t0, "f16", "act F16, resid F32",
           !rc && gs_backend_act_dtype(be) == GS_DT_F16 && gs_backend_resid_dtype(be) == GS_DT_F32,
           "");
    if (gs_backend_act_dtype(be) != GS_DT_F16) {
        gs_backend_free(be);
        return;
    }
    gt_ctx t = {t0->cpu, be, 0, 0};
    const int64_t m = 16, n = QH;
    char sh[64];
    snprintf(sh, sizeof sh, "[%lld, %lld] resid +-1e5", (long long)m, (long long)n);

    /* A residual past 65504 (F32 on both), F16 sublayer outputs. */
    float *big = gt_xmalloc((size_t)(m * n) * sizeof *big);
    for (int64_t i = 0; i < m * n; i++)
        big[i] = gt_uniform(-1e5f, 1e5f);
    gt_mat r = gt_mat_new(&t, m, n, n, GS_DT_F32, big);
    gt_mat x = gt_mat_rand(&t, m, n, n, -1000.0f, 1000.0f);
    gt_mat o = gt_mat_new(&t, m, n, n, -1, NULL);
    float *wn = gt_rand((size_t)n, 0.5f, 1.5f);
    gs_vec wc = {NULL, 0}, wg = {NULL, 0};
    if (gs_vec_new(t.cpu, wn, n, &wc) || gs_vec_new(t.gpu, wn, n, &wg))
        gt_fail(&t, "vec_new", "norm weight", "setup", GS_ENOMEM);
    free(wn);
    if (r.c.data && r.g.data && x.c.data && x.g.data && o.c.data && o.g.data && wc.data &&
        wg.data) {
        int rc1 = gs_k_add_rmsnorm(t.cpu, o.c, r.c, x.c, &wc, 1e-5f);
        int rc2 = gs_k_add_rmsnorm(t.gpu, o.g, r.g, x.g, &wg, 1e-5f);
        if (rc1 || rc2) {
            gt_fail(&t, "f16 add_rmsnorm", sh, rc1 ? "cpu" : "cuda", rc1 ? rc1 : rc2);
        } else {
            f16_check(&t, "add_rmsnorm", "f16 add_rmsnorm", sh, o);
            f16_check(&t, "add", "f16 add_rms.res", sh, r);
        }
        rc1 = gs_k_rmsnorm(t.cpu, o.c, r.c, &wc, 1e-5f);
        rc2 = gs_k_rmsnorm(t.gpu, o.g, r.g, &wg, 1e-5f);
        if (rc1 || rc2)
            gt_fail(&t, "f16 rmsnorm", sh, rc1 ? "cpu" : "cuda", rc1 ? rc1 : rc2);
        else
            f16_check(&t, "rmsnorm", "f16 rmsnorm", sh, o);
    }
    gs_vec_free(t.cpu, &wc);
    gs_vec_free(t.gpu, &wg);

    /* GS_MM_ACCUM into the big F32 residual: 16-bit, Q8 and Q4 weights,
     * GEMV (m = 16) and tiles + cuBLAS (m = 100). */
    const gs_dtype wdt[] = {GS_DT_BF16, GS_DT_Q8, GS_DT_Q4};
    for (unsigned i = 0; i < 3; i++) {
        gq_w w = gq_random(&t, wdt[i], n, n, 31 + i, 1.0f / 64);
        if (!w.c)
            continue;
        for (int64_t mm = 16; mm <= 100; mm += 84) {
            gt_mat xx = gt_mat_rand(&t, mm, n, n, -4.0f, 4.0f);
            float *init = gt_xmalloc((size_t)(mm * n) * sizeof *init);
            for (int64_t j = 0; j < mm * n; j++)
                init[j] = gt_uniform(-1e5f, 1e5f);
            gt_mat oo = gt_mat_new(&t, mm, n, n, GS_DT_F32, init);
            free(init);
            snprintf(sh, sizeof sh, "%s m=%lld += resid 1e5", gs_dtype_name(wdt[i]), (long long)mm);
            if (xx.c.data && xx.g.data && oo.c.data && oo.g.data) {
                int rc1 = gs_k_matmul(t.cpu, oo.c, xx.c, w.c, NULL, GS_MM_ACCUM);
                int rc2 = gs_k_matmul(t.gpu, oo.g, xx.g, w.g, NULL, GS_MM_ACCUM);
                if (rc1 || rc2)
                    gt_fail(&t, "f16 matmul", sh, rc1 ? "cpu" : "cuda", rc1 ? rc1 : rc2);
                else
                    f16_check(&t, "matmul", "f16 matmul", sh, oo);
            }
            gt_mat_free(&t, &xx);
            gt_mat_free(&t, &oo);
            /* F16 output, plain GEMM */
            snprintf(sh, sizeof sh, "%s m=%lld f16 out", gs_dtype_name(wdt[i]), (long long)mm);
            gq_mm(&t, sh, w, NULL, NULL, mm, 0, 0, -1.0f, 1.0f, 1.0f);
        }
        gq_free(&t, &w);
    }
    /* The SwiGLU output past 65504 (silu(400) * 400 = 1.6e5): silu_mul into
     * an F32 a (the residual dtype), then the down projection from F32 x
     * (rows scaled into F16 range on the GPU), GEMV and tiles. */
    for (int64_t mi = 16; mi <= 100; mi += 84) {
        const int64_t I2 = 1024, N2 = 512;
        gt_mat gu = gt_mat_rand(&t, mi, 2 * I2, 2 * I2, -400.0f, 400.0f);
        gt_mat a = gt_mat_new(&t, mi, I2, I2, GS_DT_F32, NULL);
        snprintf(sh, sizeof sh, "[%lld, %lld] gate, up +-400 -> F32", (long long)mi, (long long)I2);
        int ok = gu.c.data && gu.g.data && a.c.data && a.g.data;
        if (ok) {
            int rc1 = gs_k_silu_mul(t.cpu, a.c, gu.c);
            int rc2 = gs_k_silu_mul(t.gpu, a.g, gu.g);
            ok = !rc1 && !rc2;
            if (!ok)
                gt_fail(&t, "f16 silu_mul", sh, rc1 ? "cpu" : "cuda", rc1 ? rc1 : rc2);
            else
                f16_check(&t, "silu_mul", "f16 silu_mul", sh, a);
        }
        for (unsigned i = 0; ok && i < 3; i++) {
            gq_w w = gq_random(&t, wdt[i], N2, I2, 51 + i, 1.0f / 32);
            gt_mat oo = gt_mat_new(&t, mi, N2, N2, GS_DT_F32, NULL);
            snprintf(sh, sizeof sh, "%s m=%lld F32 x past 65504", gs_dtype_name(wdt[i]),
                     (long long)mi);
            if (w.c && oo.c.data && oo.g.data) {
                int rc1 = gs_k_matmul(t.cpu, oo.c, a.c, w.c, NULL, 0);
                int rc2 = gs_k_matmul(t.gpu, oo.g, a.g, w.g, NULL, 0);
                if (rc1 || rc2)
                    gt_fail(&t, "f16 matmul", sh, rc1 ? "cpu" : "cuda", rc1 ? rc1 : rc2);
                else
                    f16_check(&t, "matmul", "f16 matmul", sh, oo);
            }
            gt_mat_free(&t, &oo);
            gq_free(&t, &w);
        }
        gt_mat_free(&t, &gu);
        gt_mat_free(&t, &a);
    }
    gt_mat_free(&t, &r);
    gt_mat_free(&t, &x);
    gt_mat_free(&t, &o);
    free(big);
    t0->n_pass += t.n_pass;
    t0->n_fail += t.n_fail;
    gs_backend_free(be);
}

int gt_quant_tests(gt_ctx *t)
{
    test_random_bits(t, GS_DT_Q8, QH, QH, 41, 1.0f / 64);
    test_random_bits(t, GS_DT_Q8, 300, 200, 42, 0.1f);
    test_random_bits(t, GS_DT_Q4, QH, QINTER, 43, 1.0f / 117);
    test_random_bits(t, GS_DT_Q4, 300, 200, 44, 0.1f);
    test_random_bits(t, GS_DT_Q4, 7, 129, 45, 3.0f); /* odd length: the unused nibble */
    test_quant_matmul(t, GS_DT_Q8);
    test_quant_matmul(t, GS_DT_Q4);
    test_mem_limit(t);
    test_f16(t);
    return 0;
}

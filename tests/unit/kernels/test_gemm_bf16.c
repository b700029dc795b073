/* test_gemm_bf16.c - gs_k_matmul's BF16 matrix-unit path (gemm_bf16.c) for
 * prefill GEMMs (m > 32) with BF16 weights, where the build and the CPU
 * have it; elsewhere the same cases run the F32 path and only its checks
 * apply (the test says which ran).
 *
 *  - Against a double-precision reference of bf16(x) . W (x rounded as the
 *    path rounds it): only F32 summation error remains, tolerance 1e-5 of
 *    the largest |out|.
 *  - Against the F32 path (GS_TUNE_CPU_GEMM_F32) on the same inputs: the
 *    BF16 rounding of x (relative 2^-9 per element, errors of random sign
 *    adding up as sqrt(k) like the sums themselves) keeps the difference
 *    below 2^-8 of the largest |out|.
 *  - Bias, GS_MM_ACCUM, strided views, n not a multiple of 16, odd and
 *    deep k, m from 32 (GEMV: never this path) through 33 to row blocks,
 *    1 to 3 threads; the same call twice gives the same bits; F16 weights
 *    keep the F32 path's accuracy.
 *  - Switching the BF16 path on and off leaves the forced F32 path's
 *    results bit for bit as they were. */
#include "kernels/cpu/gemm_bf16.h"
#include "kt.h"

#define TOL_EXACT 1e-5
#define TOL_VS_F32 (1.0 / 256.0)

static void force_f32(gs_backend *be, int on)
{
    gs_backend_tuning t = {on ? GS_TUNE_CPU_GEMM_F32 : 0, 0};
    if (gs_backend_set_tuning(be, &t) != 0) {
        fprintf(stderr, "gs_backend_set_tuning refused GS_TUNE_CPU_GEMM_F32\n");
        exit(2);
    }
}

/* out[m, n] (+)= xr . w^T + bias in double, xr = x rounded to BF16 when
 * round_x (what the BF16 path multiplies). */
static void ref_mm(double *out, const float *x, const float *w, const float *bias,
                   const float *out0, int64_t m, int64_t n, int64_t k, int round_x)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0;
            for (int64_t t = 0; t < k; t++) {
                float xv = x[i * k + t];
                s += (double)(round_x ? kt_round(xv, GS_DT_BF16) : xv) * (double)w[j * k + t];
            }
            if (out0)
                s += out0[i * n + j];
            if (bias)
                s += bias[j];
            out[i * n + j] = s;
        }
}

typedef struct {
    int64_t m, n, k;
    int bias, accum, strided;
} mm_shape;

/* One matmul of shape s with weights of dtype wdt; returns the result
 * ([m, n], owned) or NULL. Inputs come from the seeded RNG, so two calls
 * after the same kt_seed see the same data. */
static float *run(gs_backend *be, gs_dtype wdt, mm_shape s, float **x_out, float **w_out,
                  float **b_out, float **o0_out)
{
    const int64_t m = s.m, n = s.n, k = s.k;
    float *x = kt_rand((size_t)(m * k), -1.0f, 1.0f);
    float *w = kt_rand((size_t)(n * k), -1.0f, 1.0f);
    float *bias = s.bias ? kt_rand((size_t)n, -1.0f, 1.0f) : NULL;
    float *o0 = kt_rand((size_t)(m * n), -1.0f, 1.0f);
    for (int64_t i = 0; i < n * k; i++)
        w[i] = kt_round(w[i], wdt);
    void *wp = kt_pack(w, (size_t)(n * k), wdt);
    gs_weight *W = NULL;
    gs_vec bv = {0};
    int ok = gs_weight_new(be, wp, wdt, n, k, &W) == 0;
    if (ok && bias)
        ok = gs_vec_new(be, bias, n, &bv) == 0;
    gs_mat X = kt_mat_up(be, x, m, k, s.strided ? k + 7 : k);
    gs_mat O = kt_mat_up(be, o0, m, n, s.strided ? n + 3 : n);
    float *got = NULL;
    if (ok && gs_k_matmul(be, O, X, W, bias ? &bv : NULL, s.accum ? GS_MM_ACCUM : 0) == 0)
        got = kt_mat_down(be, O);
    gs_buf_free(be, X.data);
    gs_buf_free(be, O.data);
    gs_vec_free(be, &bv);
    gs_weight_free(be, W);
    free(wp);
    *x_out = x;
    *w_out = w;
    *b_out = bias;
    *o0_out = o0;
    return got;
}

/* The BF16 path (when active) and the forced F32 path on the same inputs;
 * returns 1 when every check passes. */
static int bf16_case(int threads, mm_shape s, uint64_t seed)
{
    gs_backend *be = kt_backend(threads, 0);
    const int active = gs_cpu_gemm_bf16_active() && s.m > 32;
    const size_t mn = (size_t)(s.m * s.n);
    float *x, *w, *b, *o0, *x2, *w2, *b2, *o02, *x3, *w3, *b3, *o03;
    char name[128];
    snprintf(name, sizeof name, "t%d m%lld n%lld k%lld%s%s%s", threads, (long long)s.m,
             (long long)s.n, (long long)s.k, s.bias ? " bias" : "", s.accum ? " accum" : "",
             s.strided ? " strided" : "");

    force_f32(be, 0);
    kt_seed(seed);
    float *got = run(be, GS_DT_BF16, s, &x, &w, &b, &o0);
    kt_seed(seed);
    float *again = run(be, GS_DT_BF16, s, &x2, &w2, &b2, &o02);
    force_f32(be, 1);
    kt_seed(seed);
    float *f32 = run(be, GS_DT_BF16, s, &x3, &w3, &b3, &o03);
    force_f32(be, 0);
    int ok = got && again && f32;

    double *ref = malloc(sizeof(double) * mn);
    char label[160];
    if (ok) {
        ref_mm(ref, x, w, b, s.accum ? o0 : NULL, s.m, s.n, s.k, active);
        snprintf(label, sizeof label, "%s %s vs ref", active ? "bf16" : "f32", name);
        ok = kt_check(label, got, ref, mn, active ? TOL_EXACT : 2e-6);
    }
    if (ok) {
        ok = memcmp(got, again, sizeof(float) * mn) == 0;
        if (!ok)
            fprintf(stderr, "%s: the same call twice gave different bits\n", name);
    }
    if (ok) {
        double *fr = malloc(sizeof(double) * mn);
        for (size_t i = 0; i < mn; i++)
            fr[i] = f32[i];
        snprintf(label, sizeof label, "%s vs f32 path", name);
        ok = kt_check(label, got, fr, mn, active ? TOL_VS_F32 : 0.0);
        free(fr);
    }
    if (ok) { /* the forced path: F32 accuracy */
        ref_mm(ref, x, w, b, s.accum ? o0 : NULL, s.m, s.n, s.k, 0);
        snprintf(label, sizeof label, "f32 %s vs ref", name);
        ok = kt_check(label, f32, ref, mn, 2e-6);
    }
    free(ref);
    float *bufs[] = {got, again, f32, x, w, b, o0, x2, w2, b2, o02, x3, w3, b3, o03};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]);
    gs_backend_free(be);
    return ok;
}

static void test_gemm_bf16_which_path(void)
{
    fprintf(stderr, "BF16 matrix-unit GEMM path: %s\n",
            gs_cpu_gemm_bf16_active() ? "active"
                                      : "not in this build or CPU (F32 path checks only)");
    gs_backend *be = kt_backend(1, 0);
    force_f32(be, 1);
    GS_ASSERT_EQ(gs_cpu_gemm_bf16_active(), 0);
    force_f32(be, 0);
    gs_backend_tuning bad = {1u << 30, 0};
    GS_ASSERT_EQ(gs_backend_set_tuning(be, &bad), GS_EINVAL);
    gs_backend_free(be);
}

static void test_gemm_bf16_shapes(void)
{
    static const mm_shape shapes[] = {
        {33, 37, 70, 1, 1, 1},   /* first GEMM size, everything on */
        {64, 131, 200, 0, 0, 0}, /* plain */
        {64, 131, 200, 1, 0, 1}, /* bias, strided */
        {48, 45, 83, 0, 1, 0},   /* odd k, accum */
        {40, 20, 2100, 1, 1, 0}, /* deep k */
        {100, 1, 5, 1, 0, 1},    /* one column, tiny k */
        {77, 300, 64, 0, 1, 1},  /* several column blocks */
    };
    const int threads[] = {1, 3};
    for (size_t t = 0; t < 2; t++)
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
            GS_ASSERT(bf16_case(threads[t], shapes[i], 100 + i));
}

static void test_gemm_bf16_row_blocks(void)
{
    /* more rows than one row block (1024): short last row block */
    GS_ASSERT(bf16_case(2, (mm_shape){1100, 40, 48, 1, 1, 1}, 200));
    GS_ASSERT(bf16_case(3, (mm_shape){1537, 33, 32, 0, 0, 0}, 201));
}

static void test_gemm_bf16_gemv_boundary(void)
{
    /* m = 32 is the GEMV path (checked at F32 accuracy, bitwise the same
     * with the BF16 path on or off); m = 33 the BF16 path. */
    GS_ASSERT(bf16_case(2, (mm_shape){32, 50, 96, 1, 0, 0}, 300));
    GS_ASSERT(bf16_case(2, (mm_shape){33, 50, 96, 1, 0, 0}, 301));
}

static void test_gemm_bf16_f16_weights(void)
{
    /* F16 weights never take the BF16 path: F32 accuracy either way. */
    gs_backend *be = kt_backend(2, 0);
    mm_shape s = {50, 40, 96, 1, 1, 1};
    float *x, *w, *b, *o0;
    kt_seed(400);
    float *got = run(be, GS_DT_F16, s, &x, &w, &b, &o0);
    GS_ASSERT(got != NULL);
    if (got) {
        double *ref = malloc(sizeof(double) * (size_t)(s.m * s.n));
        ref_mm(ref, x, w, b, o0, s.m, s.n, s.k, 0);
        GS_ASSERT(kt_check("f16 weights m50 n40 k96", got, ref, (size_t)(s.m * s.n), 2e-6));
        free(ref);
    }
    free(got);
    free(x);
    free(w);
    free(b);
    free(o0);
    gs_backend_free(be);
}

static void test_gemm_bf16_f32_path_unchanged(void)
{
    /* forced F32, then the BF16 path, then forced F32 again: the two F32
     * results are the same bits. */
    gs_backend *be = kt_backend(2, 0);
    mm_shape s = {70, 90, 130, 1, 1, 1};
    float *r[3] = {NULL, NULL, NULL}, *in[12];
    for (int i = 0; i < 3; i++) {
        force_f32(be, i != 1);
        kt_seed(500);
        r[i] = run(be, GS_DT_BF16, s, &in[4 * i], &in[4 * i + 1], &in[4 * i + 2], &in[4 * i + 3]);
        GS_ASSERT(r[i] != NULL);
    }
    force_f32(be, 0);
    if (r[0] && r[2])
        GS_ASSERT(memcmp(r[0], r[2], sizeof(float) * (size_t)(s.m * s.n)) == 0);
    for (int i = 0; i < 3; i++)
        free(r[i]);
    for (int i = 0; i < 12; i++)
        free(in[i]);
    gs_backend_free(be);
}

int main(void)
{
    GS_RUN(test_gemm_bf16_which_path);
    GS_RUN(test_gemm_bf16_shapes);
    GS_RUN(test_gemm_bf16_row_blocks);
    GS_RUN(test_gemm_bf16_gemv_boundary);
    GS_RUN(test_gemm_bf16_f16_weights);
    GS_RUN(test_gemm_bf16_f32_path_unchanged);
    return gs_test_summary();
}

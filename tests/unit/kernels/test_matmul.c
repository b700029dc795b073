/* test_matmul.c - gs_k_matmul against a double-precision reference:
 * F32 / BF16 / F16 weights (kept 16-bit and converted at load), m = 1 .. 33
 * and 64 (GEMV and GEMM paths), with and without bias and GS_MM_ACCUM, on
 * strided views; k deeper than one panel; many rows (row blocks). Batching
 * invariance: in the GEMV range (m <= 32) every row of an m-row result is
 * bitwise the 1-row result for that row, whatever rows share the batch and
 * however many threads run it. These cases hold prefill GEMMs to F32
 * accuracy, so they force the F32 path (GS_TUNE_CPU_GEMM_F32);
 * test_gemm_bf16.c checks the BF16 matrix-unit path. */
#include "kt.h"

/* kt_backend with the F32 GEMM path forced. */
static gs_backend *mm_backend(int threads, int weights_f32)
{
    gs_backend *be = kt_backend(threads, weights_f32);
    gs_backend_tuning t = {GS_TUNE_CPU_GEMM_F32, 0};
    if (gs_backend_set_tuning(be, &t) != 0) {
        fprintf(stderr, "gs_backend_set_tuning refused GS_TUNE_CPU_GEMM_F32\n");
        exit(2);
    }
    return be;
}

/* out[m, n] (+)= x . w^T + bias, in double; w already rounded to its dtype. */
static void ref_mm(double *out, const float *x, const float *w, const float *bias,
                   const float *out0, int64_t m, int64_t n, int64_t k)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = out0 ? out0[i * n + j] : 0.0;
            for (int64_t t = 0; t < k; t++)
                s += (double)x[i * k + t] * (double)w[j * k + t];
            if (bias)
                s += bias[j];
            out[i * n + j] = s;
        }
}

/* One case; returns 1 when it passes. */
static int mm_case(gs_backend *be, gs_dtype wdt, int64_t m, int64_t n, int64_t k, int with_bias,
                   int accum, int strided)
{
    float *x = kt_rand((size_t)(m * k), -1.0f, 1.0f);
    float *w = kt_rand((size_t)(n * k), -1.0f, 1.0f);
    float *bias = with_bias ? kt_rand((size_t)n, -1.0f, 1.0f) : NULL;
    float *o0 = kt_rand((size_t)(m * n), -1.0f, 1.0f);
    for (int64_t i = 0; i < n * k; i++)
        w[i] = kt_round(w[i], wdt);
    void *wp = kt_pack(w, (size_t)(n * k), wdt);
    gs_weight *W = NULL;
    int ok = gs_weight_new(be, wp, wdt, n, k, &W) == 0;
    gs_vec bv = {0};
    if (ok && bias)
        ok = gs_vec_new(be, bias, n, &bv) == 0;
    gs_mat X = kt_mat_up(be, x, m, k, strided ? k + 7 : k);
    gs_mat O = kt_mat_up(be, o0, m, n, strided ? n + 3 : n);
    double *ref = malloc(sizeof(double) * (size_t)(m * n));
    ref_mm(ref, x, w, bias, accum ? o0 : NULL, m, n, k);
    if (ok)
        ok = gs_k_matmul(be, O, X, W, bias ? &bv : NULL, accum ? GS_MM_ACCUM : 0) == 0;
    if (ok) {
        float *got = kt_mat_down(be, O);
        char name[96];
        snprintf(name, sizeof name, "matmul %s m%lld n%lld k%lld%s%s%s", gs_dtype_name(wdt),
                 (long long)m, (long long)n, (long long)k, bias ? " bias" : "",
                 accum ? " accum" : "", strided ? " strided" : "");
        ok = kt_check(name, got, ref, (size_t)(m * n), 2e-6);
        free(got);
    }
    gs_buf_free(be, X.data);
    gs_buf_free(be, O.data);
    gs_vec_free(be, &bv);
    gs_weight_free(be, W);
    free(ref);
    free(wp);
    free(x);
    free(w);
    free(bias);
    free(o0);
    return ok;
}

static void test_matmul_dtypes_and_sizes(void)
{
    gs_backend *be = mm_backend(4, 0);
    const gs_dtype dts[3] = {GS_DT_F32, GS_DT_BF16, GS_DT_F16};
    const int64_t ms[4] = {1, 3, 17, 64};
    kt_seed(1);
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < 4; i++) {
            int v = (d + i) % 4; /* vary bias / accum / stride across cases */
            GS_ASSERT(mm_case(be, dts[d], ms[i], 131, 200, v & 1, (v >> 1) & 1, i % 2));
            GS_ASSERT(mm_case(be, dts[d], ms[i], 64, 96, !(v & 1), !((v >> 1) & 1), !(i % 2)));
        }
    gs_backend_free(be);
}

static void test_matmul_deep_and_tall(void)
{
    gs_backend *be = mm_backend(3, 0);
    kt_seed(2);
    /* k beyond one 16-bit panel (2048), n not a multiple of 16 */
    GS_ASSERT(mm_case(be, GS_DT_BF16, 17, 45, 2100, 1, 1, 1));
    GS_ASSERT(mm_case(be, GS_DT_BF16, 2, 45, 2100, 1, 0, 0));
    GS_ASSERT(mm_case(be, GS_DT_F16, 20, 33, 2060, 0, 1, 0));
    /* the last GEMV size and the first GEMM size */
    GS_ASSERT(mm_case(be, GS_DT_BF16, 32, 37, 70, 1, 1, 1));
    GS_ASSERT(mm_case(be, GS_DT_F16, 32, 37, 70, 0, 0, 0));
    GS_ASSERT(mm_case(be, GS_DT_F32, 32, 37, 70, 1, 0, 1));
    GS_ASSERT(mm_case(be, GS_DT_BF16, 33, 37, 70, 1, 1, 1));
    GS_ASSERT(mm_case(be, GS_DT_F32, 33, 37, 70, 0, 0, 0));
    /* more rows than one row block (1024) */
    GS_ASSERT(mm_case(be, GS_DT_BF16, 1100, 20, 24, 1, 1, 1));
    GS_ASSERT(mm_case(be, GS_DT_F32, 1100, 20, 24, 1, 0, 0));
    /* one column, one row */
    GS_ASSERT(mm_case(be, GS_DT_BF16, 1, 1, 5, 1, 0, 0));
    GS_ASSERT(mm_case(be, GS_DT_BF16, 9, 1, 5, 0, 1, 1));
    gs_backend_free(be);
}

static void test_matmul_weights_f32(void)
{
    /* weights_f32 = 1: BF16 converted once at load, same results. */
    gs_backend *be = mm_backend(2, 1);
    kt_seed(3);
    GS_ASSERT(mm_case(be, GS_DT_BF16, 1, 70, 130, 1, 0, 0));
    GS_ASSERT(mm_case(be, GS_DT_BF16, 64, 70, 130, 1, 1, 1));
    GS_ASSERT(mm_case(be, GS_DT_F16, 3, 70, 130, 0, 0, 1));
    uint16_t one[4] = {0x3f80, 0x3f80, 0x3f80, 0x3f80};
    gs_weight *w = NULL;
    GS_ASSERT_OK(gs_weight_new(be, one, GS_DT_BF16, 2, 2, &w));
    GS_ASSERT_EQ(gs_weight_bytes(w), 16); /* stored as F32 */
    gs_weight_free(be, w);
    gs_backend_free(be);

    be = mm_backend(1, 0);
    GS_ASSERT_OK(gs_weight_new(be, one, GS_DT_BF16, 2, 2, &w));
    GS_ASSERT_EQ(gs_weight_bytes(w), 8); /* kept 16-bit */
    GS_ASSERT_EQ(gs_weight_rows(w), 2);
    GS_ASSERT_EQ(gs_weight_cols(w), 2);
    gs_weight_free(be, w);
    GS_ASSERT(mm_case(be, GS_DT_BF16, 5, 19, 33, 1, 1, 1)); /* single thread */
    gs_backend_free(be);
}

static void test_matmul_unaligned_host(void)
{
    /* gs_weight_new borrows host memory of any alignment (safetensors). */
    gs_backend *be = mm_backend(2, 0);
    const int64_t n = 5, k = 9;
    unsigned char *buf = malloc((size_t)(n * k * 2 + 1));
    float w[45], x[9];
    kt_seed(4);
    for (int i = 0; i < 45; i++) {
        w[i] = kt_round(kt_uniform(-1, 1), GS_DT_BF16);
        uint16_t h = gs_f32_to_bf16(w[i]);
        memcpy(buf + 1 + 2 * i, &h, 2);
    }
    for (int i = 0; i < 9; i++)
        x[i] = kt_uniform(-1, 1);
    gs_weight *W = NULL;
    GS_ASSERT_OK(gs_weight_new(be, buf + 1, GS_DT_BF16, n, k, &W));
    gs_mat X = kt_mat_up(be, x, 1, k, k), O = kt_mat_up(be, x, 1, n, n);
    GS_ASSERT_OK(gs_k_matmul(be, O, X, W, NULL, 0));
    float *got = kt_mat_down(be, O);
    double ref[5];
    ref_mm(ref, x, w, NULL, NULL, 1, n, k);
    GS_ASSERT(kt_check("matmul unaligned host weight", got, ref, 5, 1e-6));
    free(got);
    free(buf);
    gs_buf_free(be, X.data);
    gs_buf_free(be, O.data);
    gs_weight_free(be, W);
    gs_backend_free(be);
}

static void test_matmul_small_batches(void)
{
    /* every m of the GEMV range against the reference (tile remainders) */
    gs_backend *be = mm_backend(2, 0);
    kt_seed(5);
    for (int64_t m = 2; m <= 32; m++) {
        gs_dtype dt = m % 3 == 0 ? GS_DT_F32 : m % 3 == 1 ? GS_DT_BF16 : GS_DT_F16;
        GS_ASSERT(mm_case(be, dt, m, 23 + m % 5, 35 + 3 * m, (int)(m & 1), (int)((m >> 1) & 1),
                          (int)((m >> 2) & 1)));
    }
    gs_backend_free(be);
}

/* Rows [r0, r0 + m) of x through one matmul; returns owned [m, n] floats. */
static float *mm_rows(gs_backend *be, const float *x, int64_t r0, int64_t m, int64_t k,
                      const gs_weight *W, const gs_vec *bias, int64_t n)
{
    gs_mat X = kt_mat_up(be, x + r0 * k, m, k, k + 5);
    gs_mat O = kt_mat_up(be, x, m, n, n); /* contents overwritten (no accum) */
    float *got = NULL;
    if (gs_k_matmul(be, O, X, W, bias, 0) == 0)
        got = kt_mat_down(be, O);
    gs_buf_free(be, X.data);
    gs_buf_free(be, O.data);
    return got;
}

/* One weight dtype: 1-row results on one thread vs every batch of m <= 32 rows
 * (starting at row 0 and at row 3) on three threads, compared bit for bit. */
static int invariance_case(gs_dtype dt, int weights_f32, int64_t n, int64_t k)
{
    const int64_t rows = 35;
    gs_backend *b1 = mm_backend(1, weights_f32), *b3 = mm_backend(3, weights_f32);
    float *x = kt_rand((size_t)(rows * k), -1.0f, 1.0f);
    float *w = kt_rand((size_t)(n * k), -1.0f, 1.0f);
    float *bias = kt_rand((size_t)n, -1.0f, 1.0f);
    void *wp = kt_pack(w, (size_t)(n * k), dt);
    gs_weight *W1 = NULL, *W3 = NULL;
    gs_vec v1 = {0}, v3 = {0};
    int ok = gs_weight_new(b1, wp, dt, n, k, &W1) == 0 &&
             gs_weight_new(b3, wp, dt, n, k, &W3) == 0 && gs_vec_new(b1, bias, n, &v1) == 0 &&
             gs_vec_new(b3, bias, n, &v3) == 0;
    float *one = calloc((size_t)(rows * n), sizeof(float));
    for (int64_t r = 0; ok && r < rows; r++) {
        float *o = mm_rows(b1, x, r, 1, k, W1, &v1, n);
        ok = o != NULL;
        if (ok)
            memcpy(one + r * n, o, sizeof(float) * (size_t)n);
        free(o);
    }
    for (int64_t r0 = 0; ok && r0 <= 3; r0 += 3)
        for (int64_t m = 1; ok && m <= 32; m++) {
            float *o = mm_rows(b3, x, r0, m, k, W3, &v3, n);
            ok = o != NULL && memcmp(o, one + r0 * n, sizeof(float) * (size_t)(m * n)) == 0;
            if (!ok)
                fprintf(stderr,
                        "batch invariance: %s%s n%lld k%lld rows [%lld, %lld) differ "
                        "from the 1-row results\n",
                        gs_dtype_name(dt), weights_f32 ? " (as f32)" : "", (long long)n,
                        (long long)k, (long long)r0, (long long)(r0 + m));
            free(o);
        }
    free(one);
    gs_vec_free(b1, &v1);
    gs_vec_free(b3, &v3);
    gs_weight_free(b1, W1);
    gs_weight_free(b3, W3);
    gs_backend_free(b1);
    gs_backend_free(b3);
    free(wp);
    free(bias);
    free(w);
    free(x);
    return ok;
}

static void test_matmul_batch_invariance(void)
{
    kt_seed(6);
    /* n not a multiple of the weight-row tile, k with a tail past the lanes */
    GS_ASSERT(invariance_case(GS_DT_BF16, 0, 37, 100));
    GS_ASSERT(invariance_case(GS_DT_BF16, 0, 19, 2100));
    GS_ASSERT(invariance_case(GS_DT_F16, 0, 21, 70));
    GS_ASSERT(invariance_case(GS_DT_F32, 0, 22, 67));
    GS_ASSERT(invariance_case(GS_DT_BF16, 1, 18, 45));
}

int main(void)
{
    GS_RUN(test_matmul_dtypes_and_sizes);
    GS_RUN(test_matmul_deep_and_tall);
    GS_RUN(test_matmul_weights_f32);
    GS_RUN(test_matmul_unaligned_host);
    GS_RUN(test_matmul_small_batches);
    GS_RUN(test_matmul_batch_invariance);
    return gs_test_summary();
}

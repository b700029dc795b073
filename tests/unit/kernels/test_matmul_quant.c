/* test_matmul_quant.c - quantized weights (GS_DT_Q8, GS_DT_Q4) on the CPU:
 * gs_quantize / gs_dequantize_row (layout, round trip, refusals), weights
 * made by copy, in place and at random, gs_k_matmul against a
 * double-precision reference over the dequantized weight (with x
 * quantized the way the kernel does it: a tight bound; and with plain x: a
 * loose one), m = 1 .. 70 (decode and prefill blocking), every
 * instruction-set kernel this CPU has against the portable one (bitwise),
 * batch independence at every m, and the backend's mem_limit. Reaches into the CPU backend
 * (cpu_impl.h) to force a kernel and to read a weight's bytes. */
#include "kernels/cpu/cpu_impl.h"
#include "kt.h"

#define G GS_Q4_GROUP

/* ---- host helpers -------------------------------------------------------- */

typedef struct {
    gs_dtype dt;
    int64_t rows, cols;
    void *q;
    float *s;
    float *deq; /* [rows, cols] */
} qw;

static qw qw_make(gs_dtype dt, const float *w, int64_t rows, int64_t cols)
{
    qw r = {dt,
            rows,
            cols,
            malloc(gs_quant_q_bytes(dt, rows, cols)),
            malloc(sizeof(float) * gs_quant_n_scales(dt, rows, cols)),
            malloc(sizeof(float) * (size_t)(rows * cols))};
    if (!r.q || !r.s || !r.deq || gs_quantize(dt, w, GS_DT_F32, rows, cols, r.q, r.s) != 0) {
        fprintf(stderr, "qw_make failed\n");
        exit(2);
    }
    for (int64_t i = 0; i < rows; i++)
        gs_dequantize_row(dt, r.q, r.s, cols, i, r.deq + i * cols);
    return r;
}

static void qw_free(qw *w)
{
    free(w->q);
    free(w->s);
    free(w->deq);
}

/* x as the decode kernel sees it: per row, groups of G columns quantized
 * to int8 with s = absmax / 127 and q = round-to-even(x / s). */
static float *quantize_x(const float *x, int64_t m, int64_t k)
{
    float *o = malloc(sizeof(float) * (size_t)(m * k));
    for (int64_t r = 0; r < m; r++)
        for (int64_t c0 = 0; c0 < k; c0 += G) {
            int64_t n = k - c0 < G ? k - c0 : G;
            const float *v = x + r * k + c0;
            float amax = 0.0f;
            for (int64_t i = 0; i < n; i++)
                amax = fabsf(v[i]) > amax ? fabsf(v[i]) : amax;
            float s = amax / 127.0f;
            for (int64_t i = 0; i < n; i++)
                o[r * k + c0 + i] = s == 0.0f ? 0.0f : nearbyintf(v[i] / s) * s;
        }
    return o;
}

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

/* out = x[m, k] . W^T (+ bias, + accum over o0) through the backend. */
static float *run_mm(gs_backend *be, const gs_weight *W, const float *x, int64_t m, int64_t k,
                     int64_t n, const float *bias, const float *o0, int strided)
{
    gs_vec bv = {0};
    if (bias && gs_vec_new(be, bias, n, &bv) != 0)
        return NULL;
    float *zero = o0 ? NULL : calloc((size_t)(m * n), sizeof(float));
    gs_mat X = kt_mat_up(be, x, m, k, strided ? k + 5 : k);
    gs_mat O = kt_mat_up(be, o0 ? o0 : zero, m, n, strided ? n + 3 : n);
    float *got = NULL;
    if (gs_k_matmul(be, O, X, W, bias ? &bv : NULL, o0 ? GS_MM_ACCUM : 0) == 0)
        got = kt_mat_down(be, O);
    gs_buf_free(be, X.data);
    gs_buf_free(be, O.data);
    gs_vec_free(be, &bv);
    free(zero);
    return got;
}

/* ---- the quantizer ------------------------------------------------------- */

static void test_quantize_layout(void)
{
    const int64_t rows = 3, cols = 301; /* odd, 2 full groups and a partial one */
    kt_seed(11);
    float *w = kt_rand((size_t)(rows * cols), -2.0f, 2.0f);
    for (int64_t c = 0; c < cols; c++)
        w[cols + c] = 0.0f; /* row 1: all zero */
    for (int64_t c = G; c < 2 * G; c++)
        w[2 * cols + c] = 0.0f; /* row 2: one zero group */
    w[7] = 2.5f;                /* row 0's absmax, exactly on the Q8 grid */
    for (int qi = 0; qi < 2; qi++) {
        gs_dtype dt = qi ? GS_DT_Q4 : GS_DT_Q8;
        const int qmax = qi ? 7 : 127;
        GS_ASSERT_EQ(gs_quant_q_bytes(dt, rows, cols), (size_t)(qi ? rows * 151 : rows * cols));
        GS_ASSERT_EQ(gs_quant_n_scales(dt, rows, cols), (size_t)(qi ? rows * 3 : rows));
        qw q = qw_make(dt, w, rows, cols);
        const int64_t ng = qi ? 3 : 1;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t g = 0; g < ng; g++) {
                int64_t c0 = qi ? g * G : 0, c1 = qi ? (c0 + G < cols ? c0 + G : cols) : cols;
                float amax = 0.0f;
                for (int64_t c = c0; c < c1; c++)
                    amax = fabsf(w[r * cols + c]) > amax ? fabsf(w[r * cols + c]) : amax;
                float s = q.s[r * ng + g];
                GS_ASSERT_EQ(s, amax / (float)qmax);
                for (int64_t c = c0; c < c1; c++) {
                    /* round trip within half a step, exact for zeros */
                    double e = fabs((double)q.deq[r * cols + c] - w[r * cols + c]);
                    GS_ASSERT(e <= 0.5 * s * (1 + 1e-6));
                    if (w[r * cols + c] == 0.0f)
                        GS_ASSERT_EQ(q.deq[r * cols + c], 0.0f);
                }
            }
        if (qi) {
            /* the unused high nibble of each odd-length row is 8 (= 0) */
            const uint8_t *b = q.q;
            for (int64_t r = 0; r < rows; r++)
                GS_ASSERT_EQ(b[r * 151 + 150] >> 4, 8);
            /* low nibble = even column, stored q + 8 */
            int v = (int)(b[3] & 15) - 8; /* column 6 of row 0 */
            GS_ASSERT_EQ((float)v * q.s[0], q.deq[6]);
        } else {
            GS_ASSERT_EQ(((const int8_t *)q.q)[7], 127);
            GS_ASSERT_EQ(q.deq[7], 2.5f);
        }
        qw_free(&q);
    }
    /* BF16 source: the same as its F32 values */
    uint16_t *wb = kt_pack(w, (size_t)(rows * cols), GS_DT_BF16);
    float *wr = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++)
        wr[i] = gs_bf16_to_f32(wb[i]);
    qw a = qw_make(GS_DT_Q4, wr, rows, cols);
    uint8_t q2[3 * 301];
    float s2[9];
    GS_ASSERT_OK(gs_quantize(GS_DT_Q4, wb, GS_DT_BF16, rows, cols, q2, s2));
    GS_ASSERT(memcmp(q2, a.q, 3 * 151) == 0 && memcmp(s2, a.s, sizeof s2) == 0);
    qw_free(&a);
    /* refusals: non-finite values, bad dtypes and shapes */
    w[2 * cols + 5] = NAN;
    GS_ASSERT_EQ(gs_quantize(GS_DT_Q8, w, GS_DT_F32, rows, cols, q2, s2), GS_EINVAL);
    w[2 * cols + 5] = INFINITY;
    GS_ASSERT_EQ(gs_quantize(GS_DT_Q4, w, GS_DT_F32, rows, cols, q2, s2), GS_EINVAL);
    GS_ASSERT_EQ(gs_quantize(GS_DT_F32, w, GS_DT_F32, 1, 4, q2, s2), GS_EINVAL);
    GS_ASSERT_EQ(gs_quantize(GS_DT_Q8, w, GS_DT_Q4, 1, 4, q2, s2), GS_EINVAL);
    GS_ASSERT_EQ(gs_quantize(GS_DT_Q8, w, GS_DT_F32, 0, 4, q2, s2), GS_EINVAL);
    free(wr);
    free(wb);
    free(w);
}

/* ---- matmul against references ------------------------------------------- */

static int mm_case(gs_backend *be, gs_dtype dt, int64_t m, int64_t n, int64_t k, int with_bias,
                   int accum, int strided, int wrap)
{
    float *w = kt_rand((size_t)(n * k), -1.0f, 1.0f);
    float *x = kt_rand((size_t)(m * k), -1.0f, 1.0f);
    float *bias = with_bias ? kt_rand((size_t)n, -1.0f, 1.0f) : NULL;
    float *o0 = accum ? kt_rand((size_t)(m * n), -1.0f, 1.0f) : NULL;
    qw q = qw_make(dt, w, n, k);
    gs_weight *W = NULL;
    int ok = (wrap ? gs_weight_wrap_quant(be, dt, n, k, q.q, q.s, &W)
                   : gs_weight_new_quant(be, dt, n, k, q.q, q.s, &W)) == 0;
    ok = ok && gs_weight_bytes(W) == gs_quant_q_bytes(dt, n, k) + 4 * gs_quant_n_scales(dt, n, k) &&
         gs_weight_rows(W) == n && gs_weight_cols(W) == k;
    float *got = ok ? run_mm(be, W, x, m, k, n, bias, o0, strided) : NULL;
    ok = got != NULL;
    double *ref = malloc(sizeof(double) * (size_t)(m * n));
    char name[128];
    snprintf(name, sizeof name, "%s m%lld n%lld k%lld%s%s%s%s", gs_dtype_name(dt), (long long)m,
             (long long)n, (long long)k, bias ? " bias" : "", accum ? " accum" : "",
             strided ? " strided" : "", wrap ? " wrap" : "");
    if (ok) {
        /* x quantized as the kernel does: only F32 rounding left */
        float *xq = quantize_x(x, m, k);
        ref_mm(ref, xq, q.deq, bias, o0, m, n, k);
        ok = kt_check(name, got, ref, (size_t)(m * n), 2e-6);
        free(xq);
        /* and the activation quantization itself stays small */
        ref_mm(ref, x, q.deq, bias, o0, m, n, k);
        ok = ok && kt_check("  vs plain x", got, ref, (size_t)(m * n), 2e-2);
    }
    gs_weight_free(be, W);
    qw_free(&q);
    free(ref);
    free(got);
    free(w);
    free(x);
    free(bias);
    free(o0);
    return ok;
}

static void test_matmul_quant_sizes(void)
{
    gs_backend *be = kt_backend(3, 0);
    kt_seed(12);
    for (int qi = 0; qi < 2; qi++) {
        gs_dtype dt = qi ? GS_DT_Q4 : GS_DT_Q8;
        for (int64_t m = 1; m <= 40; m += (m < 9 ? 1 : 7)) {
            int v = (int)m + qi;
            GS_ASSERT(mm_case(be, dt, m, 37, 300, v & 1, (v >> 1) & 1, (v >> 2) & 1, 0));
        }
        GS_ASSERT(mm_case(be, dt, 32, 70, 256, 1, 1, 1, 1));  /* no partial group */
        GS_ASSERT(mm_case(be, dt, 33, 70, 256, 1, 0, 1, 1));  /* first blocked size */
        GS_ASSERT(mm_case(be, dt, 70, 260, 200, 0, 1, 1, 0)); /* blocks each way */
        GS_ASSERT(mm_case(be, dt, 5, 9, 100, 0, 1, 0, 1));    /* no full group */
        GS_ASSERT(mm_case(be, dt, 3, 17, 2051, 1, 0, 1, 0));  /* many groups */
        GS_ASSERT(mm_case(be, dt, 40, 33, 2300, 0, 1, 0, 0));
    }
    gs_backend_free(be);
}

/* ---- every kernel against the portable one ------------------------------- */

/* Outputs of every supported ISA are bitwise those of GS_QISA_C: the group
 * dots are exact integers and the F32 code after them is shared. q is any
 * int8 (Q8 -128 included: a checkpoint may hold it) or any nibble; with
 * fill >= 0 every q byte is fill and every x is +-1 (all qx +-127): the
 * largest sums, where a saturating 16-bit step would show. */
static int isa_case(gs_backend *be, gs_dtype dt, int64_t n, int64_t k, int fill)
{
    size_t qb = gs_quant_q_bytes(dt, n, k), ns = gs_quant_n_scales(dt, n, k);
    uint8_t *q = malloc(qb);
    float *s = kt_rand(ns, 0.001f, 0.02f);
    for (size_t i = 0; i < qb; i++)
        q[i] = fill >= 0 ? (uint8_t)fill : (uint8_t)kt_next();
    gs_weight *W = NULL;
    if (gs_weight_wrap_quant(be, dt, n, k, q, s, &W) != 0)
        return 0;
    float *x = kt_rand((size_t)(40 * k), -3.0f, 3.0f);
    for (int64_t i = 0; i < k; i += 3)
        x[i] = 0.0f; /* zeros and a zero group in row 0 */
    for (int64_t i = 0; i < k && i < G; i++)
        x[k + i] = 0.0f;
    if (fill >= 0)
        for (int64_t i = 0; i < 40 * k; i++)
            x[i] = (i / k) & 1 ? -1.0f : 1.0f;
    int ok = 1;
    const int64_t ms[] = {1, 2, 3, 4, 5, 7, 8, 13, 32, 37};
    for (size_t mi = 0; ok && mi < sizeof ms / sizeof *ms; mi++) {
        const int64_t m = ms[mi];
        ok = gs_cpu_quant_isa_force(GS_QISA_C) == GS_QISA_C;
        float *want = run_mm(be, W, x, m, k, n, NULL, NULL, 0);
        for (int isa = GS_QISA_C + 1; ok && isa < GS_QISA_COUNT; isa++) {
            if (!gs_cpu_quant_isa_supported((gs_cpu_qisa)isa)) {
                ok = gs_cpu_quant_isa_force((gs_cpu_qisa)isa) == -1;
                continue;
            }
            ok = gs_cpu_quant_isa_force((gs_cpu_qisa)isa) == isa;
            float *got = run_mm(be, W, x, m, k, n, NULL, NULL, mi & 1);
            ok = ok && want && got && memcmp(got, want, sizeof(float) * (size_t)(m * n)) == 0;
            if (!ok)
                fprintf(stderr, "isa %s: %s m%lld n%lld k%lld differs from the portable kernel\n",
                        gs_cpu_quant_isa_name((gs_cpu_qisa)isa), gs_dtype_name(dt), (long long)m,
                        (long long)n, (long long)k);
            free(got);
        }
        free(want);
    }
    gs_cpu_quant_isa_force(GS_QISA_AUTO);
    gs_weight_free(be, W);
    free(x);
    free(s);
    free(q);
    return ok;
}

static void test_matmul_quant_isas(void)
{
    gs_backend *be = kt_backend(2, 0);
    kt_seed(13);
    for (int isa = 0; isa < GS_QISA_COUNT; isa++)
        printf("  kernel %-13s %s\n", gs_cpu_quant_isa_name((gs_cpu_qisa)isa),
               gs_cpu_quant_isa_supported((gs_cpu_qisa)isa) ? "yes" : "no (skipped)");
    GS_ASSERT(gs_cpu_quant_isa_force(GS_QISA_AUTO) >= 0);
    for (int qi = 0; qi < 2; qi++) {
        gs_dtype dt = qi ? GS_DT_Q4 : GS_DT_Q8;
        GS_ASSERT(isa_case(be, dt, 9, 384, -1));
        GS_ASSERT(isa_case(be, dt, 6, 301, -1));
        GS_ASSERT(isa_case(be, dt, 5, 1025, -1));
        GS_ASSERT(isa_case(be, dt, 8, 256, 0x80)); /* Q8 -128; Q4 nibbles 0 and 8 */
        GS_ASSERT(isa_case(be, dt, 8, 256, 0x7f)); /* Q8 127; Q4 15 and 7 */
        GS_ASSERT(isa_case(be, dt, 8, 256, 0x00)); /* Q8 0; Q4 -8 */
    }
    gs_backend_free(be);
}

/* ---- batch independence, NaN rows ---------------------------------------- */

static void test_matmul_quant_batch_invariance(void)
{
    gs_backend *b1 = kt_backend(1, 0), *b3 = kt_backend(3, 0);
    kt_seed(14);
    const int64_t n = 23, k = 333, rows = 44;
    for (int qi = 0; qi < 2; qi++) {
        gs_dtype dt = qi ? GS_DT_Q4 : GS_DT_Q8;
        float *w = kt_rand((size_t)(n * k), -1.0f, 1.0f);
        float *x = kt_rand((size_t)(rows * k), -1.0f, 1.0f);
        float *bias = kt_rand((size_t)n, -1.0f, 1.0f);
        qw q = qw_make(dt, w, n, k);
        gs_weight *W1 = NULL, *W3 = NULL;
        GS_ASSERT_OK(gs_weight_new_quant(b1, dt, n, k, q.q, q.s, &W1));
        GS_ASSERT_OK(gs_weight_new_quant(b3, dt, n, k, q.q, q.s, &W3));
        float *one = calloc((size_t)(rows * n), sizeof(float));
        for (int64_t r = 0; r < rows; r++) {
            float *o = run_mm(b1, W1, x + r * k, 1, k, n, bias, NULL, 0);
            GS_ASSERT(o != NULL);
            if (o)
                memcpy(one + r * n, o, sizeof(float) * (size_t)n);
            free(o);
        }
        for (int64_t r0 = 0; r0 <= 4; r0 += 4)
            for (int64_t m = 1; m <= 40; m++) {
                float *o = run_mm(b3, W3, x + r0 * k, m, k, n, bias, NULL, m & 1);
                GS_ASSERT_MSG(o && memcmp(o, one + r0 * n, sizeof(float) * (size_t)(m * n)) == 0,
                              "%s rows [%lld, %lld) differ from the 1-row results",
                              gs_dtype_name(dt), (long long)r0, (long long)(r0 + m));
                free(o);
            }
        /* a NaN in one row makes that row NaN and leaves the others alone;
         * a row of denormals (its scale underflows) gives 0 */
        x[2 * k + 200] = NAN;
        for (int64_t i = 0; i < k; i++)
            x[3 * k + i] = i & 1 ? -1e-44f : 1e-44f;
        float *o = run_mm(b3, W3, x, 4, k, n, NULL, NULL, 0);
        GS_ASSERT(o != NULL);
        for (int64_t j = 0; o && j < n; j++) {
            GS_ASSERT(isnan(o[2 * n + j]));
            GS_ASSERT(isfinite(o[j]) && o[3 * n + j] == 0.0f);
        }
        free(o);
        free(one);
        gs_weight_free(b1, W1);
        gs_weight_free(b3, W3);
        qw_free(&q);
        free(w);
        free(x);
        free(bias);
    }
    gs_backend_free(b1);
    gs_backend_free(b3);
}

/* ---- random weights, copies, memory -------------------------------------- */

static void test_quant_random_weights(void)
{
    gs_backend *be = kt_backend(3, 0);
    const int64_t rows = 29, cols = 259;
    const uint64_t seed = 77;
    const float scale = 0.05f;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++)
        w[i] = gs_rand_uniform(seed, (uint64_t)i, scale);
    for (int qi = 0; qi < 2; qi++) {
        gs_dtype dt = qi ? GS_DT_Q4 : GS_DT_Q8;
        qw q = qw_make(dt, w, rows, cols);
        gs_weight *R = NULL, *C = NULL;
        GS_ASSERT_OK(gs_weight_new_random(be, dt, rows, cols, seed, scale, &R));
        GS_ASSERT_OK(gs_weight_new_quant(be, dt, rows, cols, q.q, q.s, &C));
        size_t qb = gs_quant_q_bytes(dt, rows, cols), ns = gs_quant_n_scales(dt, rows, cols);
        const gs_cpu_weight *r = gs_cpu_w(R), *c = gs_cpu_w(C);
        GS_ASSERT(memcmp(r->data, q.q, qb) == 0 && memcmp(c->data, q.q, qb) == 0);
        GS_ASSERT(memcmp(r->scales, q.s, 4 * ns) == 0 && memcmp(c->scales, q.s, 4 * ns) == 0);
        GS_ASSERT_EQ(gs_weight_bytes(R), qb + 4 * ns);
        GS_ASSERT_EQ(gs_weight_bytes(C), qb + 4 * ns);
        gs_weight_free(be, R);
        gs_weight_free(be, C);
        qw_free(&q);
    }
    /* gs_weight_new refuses quantized dtypes */
    gs_weight *X = NULL;
    GS_ASSERT_EQ(gs_weight_new(be, w, GS_DT_Q8, rows, cols, &X), GS_EINVAL);
    free(w);
    gs_backend_free(be);
}

static void test_mem_limit(void)
{
    const size_t cap = 1u << 20;
    gs_backend_params p = {.kind = GS_BACKEND_CPU, .n_threads = 1, .mem_limit = cap};
    gs_backend *be = NULL;
    gs_diag d;
    gs_diag_clear(&d);
    GS_ASSERT_OK(gs_backend_new(&p, &be, &d));
    size_t fr = 0, tot = 0;
    GS_ASSERT_OK(gs_backend_mem_info(be, &fr, &tot));
    GS_ASSERT_EQ(tot, cap);
    GS_ASSERT(fr <= cap);
    void *a = gs_buf_alloc(be, 600000);
    GS_ASSERT(a != NULL);
    GS_ASSERT_OK(gs_backend_mem_info(be, &fr, &tot));
    GS_ASSERT(fr <= cap - 600000);
    GS_ASSERT(gs_buf_alloc(be, 600000) == NULL); /* past the cap */
    gs_weight *W = NULL;
    GS_ASSERT_EQ(gs_weight_new_random(be, GS_DT_Q8, 1000, 1000, 1, 1.0f, &W), GS_ENOMEM);
    GS_ASSERT_EQ(gs_weight_new_random(be, GS_DT_F32, 1000, 1000, 1, 1.0f, &W), GS_ENOMEM);
    GS_ASSERT_OK(gs_weight_new_random(be, GS_DT_Q4, 512, 1024, 1, 1.0f, &W)); /* 272 KiB */
    gs_buf_free(be, a);
    a = gs_buf_alloc(be, 600000); /* fits again once freed */
    GS_ASSERT(a != NULL);
    gs_buf_free(be, a);
    gs_weight_free(be, W);
    GS_ASSERT_OK(gs_backend_mem_info(be, &fr, &tot));
    GS_ASSERT_EQ(tot, cap);
    gs_backend_free(be);
}

int main(void)
{
    GS_RUN(test_quantize_layout);
    GS_RUN(test_matmul_quant_sizes);
    GS_RUN(test_matmul_quant_isas);
    GS_RUN(test_matmul_quant_batch_invariance);
    GS_RUN(test_quant_random_weights);
    GS_RUN(test_mem_limit);
    return gs_test_summary();
}

/* test_elementwise.c - norms, elementwise ops, softmax, copies and row
 * gathers against double-precision references, on odd sizes and strided
 * views (gs_mat_cols of a wider buffer), in place where the header allows. */
#include "kt.h"

#define TOL 2e-6

typedef struct {
    gs_backend *be;
    int64_t m, n;
} shape;

/* A random [m, n] input uploaded as the columns [3, 3 + n) of a wider
 * buffer, so the view is strided; host copy in *h (malloc'd). */
static gs_mat strided_input(gs_backend *be, int64_t m, int64_t n, float lo, float hi, float **h,
                            void **base)
{
    *h = kt_rand((size_t)(m * n), lo, hi);
    float *wide = kt_rand((size_t)(m * (n + 5)), lo, hi);
    for (int64_t r = 0; r < m; r++)
        memcpy(wide + r * (n + 5) + 3, *h + r * n, sizeof(float) * (size_t)n);
    gs_mat all =
        gs_mat_make(kt_up(be, wide, sizeof(float) * (size_t)(m * (n + 5))), GS_DT_F32, m, n + 5);
    free(wide);
    *base = all.data;
    return gs_mat_cols(all, 3, n);
}

static void test_rmsnorm(void)
{
    gs_backend *be = kt_backend(3, 0);
    kt_seed(10);
    const int64_t sizes[3][2] = {{1, 4096}, {7, 33}, {40, 256}};
    for (int c = 0; c < 3; c++) {
        int64_t m = sizes[c][0], n = sizes[c][1];
        float *xh, *wh = kt_rand((size_t)n, 0.5f, 1.5f);
        void *xb;
        gs_mat x = strided_input(be, m, n, -3, 3, &xh, &xb);
        gs_vec w;
        GS_ASSERT_OK(gs_vec_new(be, wh, n, &w));
        double *ref = malloc(sizeof(double) * (size_t)(m * n));
        for (int64_t r = 0; r < m; r++) {
            double ss = 0;
            for (int64_t i = 0; i < n; i++)
                ss += (double)xh[r * n + i] * xh[r * n + i];
            double inv = 1.0 / sqrt(ss / n + 1e-5);
            for (int64_t i = 0; i < n; i++)
                ref[r * n + i] = xh[r * n + i] * inv * wh[i];
        }
        gs_mat out = kt_mat_up(be, xh, m, n, n + 1);
        GS_ASSERT_OK(gs_k_rmsnorm(be, out, x, &w, 1e-5f));
        float *got = kt_mat_down(be, out);
        GS_ASSERT(kt_check("rmsnorm", got, ref, (size_t)(m * n), TOL));
        free(got);
        /* in place */
        GS_ASSERT_OK(gs_k_rmsnorm(be, x, x, &w, 1e-5f));
        got = kt_mat_down(be, x);
        GS_ASSERT(kt_check("rmsnorm in place", got, ref, (size_t)(m * n), TOL));
        free(got);
        free(ref);
        free(xh);
        free(wh);
        gs_vec_free(be, &w);
        gs_buf_free(be, xb);
        gs_buf_free(be, out.data);
    }
    gs_backend_free(be);
}

static void test_add_rmsnorm(void)
{
    gs_backend *be = kt_backend(3, 0);
    kt_seed(11);
    const int64_t m = 9, n = 4096 + 3;
    float *xh, *hh, *wh = kt_rand((size_t)n, -1.5f, 1.5f);
    void *xb, *hb;
    gs_mat x = strided_input(be, m, n, -2, 2, &xh, &xb);
    gs_mat h = strided_input(be, m, n, -20, 20, &hh, &hb);
    gs_vec w;
    GS_ASSERT_OK(gs_vec_new(be, wh, n, &w));
    double *rs = malloc(sizeof(double) * (size_t)(m * n)),
           *ref = malloc(sizeof(double) * (size_t)(m * n));
    for (int64_t r = 0; r < m; r++) {
        double ss = 0;
        for (int64_t i = 0; i < n; i++) {
            rs[r * n + i] = (double)(hh[r * n + i] + xh[r * n + i]); /* F32 add, like the op */
            ss += rs[r * n + i] * rs[r * n + i];
        }
        double inv = 1.0 / sqrt(ss / n + 1e-6);
        for (int64_t i = 0; i < n; i++)
            ref[r * n + i] = rs[r * n + i] * inv * wh[i];
    }
    gs_mat out = kt_mat_up(be, xh, m, n, n);
    GS_ASSERT_OK(gs_k_add_rmsnorm(be, out, h, x, &w, 1e-6f));
    float *got = kt_mat_down(be, out), *gres = kt_mat_down(be, h);
    GS_ASSERT(kt_check("add_rmsnorm out", got, ref, (size_t)(m * n), TOL));
    GS_ASSERT(kt_check("add_rmsnorm resid", gres, rs, (size_t)(m * n), 1e-7));
    free(got);
    free(gres);
    /* out aliasing x, on a fresh residual */
    gs_mat h2 = kt_mat_up(be, hh, m, n, n);
    GS_ASSERT_OK(gs_k_add_rmsnorm(be, x, h2, x, &w, 1e-6f));
    got = kt_mat_down(be, x);
    GS_ASSERT(kt_check("add_rmsnorm out == x", got, ref, (size_t)(m * n), TOL));
    free(got);
    gs_buf_free(be, h2.data);
    free(rs);
    free(ref);
    free(xh);
    free(hh);
    free(wh);
    gs_vec_free(be, &w);
    gs_buf_free(be, xb);
    gs_buf_free(be, hb);
    gs_buf_free(be, out.data);
    gs_backend_free(be);
}

static void test_layernorm(void)
{
    gs_backend *be = kt_backend(2, 0);
    kt_seed(12);
    const int64_t m = 6, n = 257;
    float *xh, *wh = kt_rand((size_t)n, 0.5f, 1.5f), *bh = kt_rand((size_t)n, -1, 1);
    void *xb;
    gs_mat x = strided_input(be, m, n, 90, 110, &xh, &xb); /* large mean: two-pass variance */
    gs_vec w, b;
    GS_ASSERT_OK(gs_vec_new(be, wh, n, &w));
    GS_ASSERT_OK(gs_vec_new(be, bh, n, &b));
    double *ref = malloc(sizeof(double) * (size_t)(m * n)),
           *refnb = malloc(sizeof(double) * (size_t)(m * n));
    for (int64_t r = 0; r < m; r++) {
        double mu = 0, var = 0;
        for (int64_t i = 0; i < n; i++)
            mu += xh[r * n + i];
        mu /= n;
        for (int64_t i = 0; i < n; i++)
            var += (xh[r * n + i] - mu) * (xh[r * n + i] - mu);
        var /= n;
        for (int64_t i = 0; i < n; i++) {
            refnb[r * n + i] = (xh[r * n + i] - mu) / sqrt(var + 1e-5) * wh[i];
            ref[r * n + i] = refnb[r * n + i] + bh[i];
        }
    }
    gs_mat out = kt_mat_up(be, xh, m, n, n);
    GS_ASSERT_OK(gs_k_layernorm(be, out, x, &w, &b, 1e-5f));
    float *got = kt_mat_down(be, out);
    GS_ASSERT(kt_check("layernorm", got, ref, (size_t)(m * n), 2e-5));
    free(got);
    GS_ASSERT_OK(gs_k_layernorm(be, x, x, &w, NULL, 1e-5f)); /* no bias, in place */
    got = kt_mat_down(be, x);
    GS_ASSERT(kt_check("layernorm no bias in place", got, refnb, (size_t)(m * n), 2e-5));
    free(got);
    free(ref);
    free(refnb);
    free(xh);
    free(wh);
    free(bh);
    gs_vec_free(be, &w);
    gs_vec_free(be, &b);
    gs_buf_free(be, xb);
    gs_buf_free(be, out.data);
    gs_backend_free(be);
}

static void test_add_silu_gelu_softmax(void)
{
    gs_backend *be = kt_backend(4, 0);
    kt_seed(13);
    const int64_t m = 5, n = 301;
    float *ah, *bh, *guh;
    void *ab, *bb, *gub;
    gs_mat a = strided_input(be, m, n, -8, 8, &ah, &ab);
    gs_mat b = strided_input(be, m, n, -8, 8, &bh, &bb);
    gs_mat gu = strided_input(be, m, 2 * n, -8, 8, &guh, &gub);
    double *ref = malloc(sizeof(double) * (size_t)(m * n));
    gs_mat out = kt_mat_up(be, ah, m, n, n + 2);
    float *got;

    for (int64_t i = 0; i < m * n; i++)
        ref[i] = (double)ah[i] + bh[i];
    GS_ASSERT_OK(gs_k_add(be, out, a, b));
    got = kt_mat_down(be, out);
    GS_ASSERT(kt_check("add", got, ref, (size_t)(m * n), 1e-7));
    free(got);

    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < n; i++) {
            double g = guh[r * 2 * n + i], u = guh[r * 2 * n + n + i];
            ref[r * n + i] = g / (1.0 + exp(-g)) * u;
        }
    GS_ASSERT_OK(gs_k_silu_mul(be, out, gu));
    got = kt_mat_down(be, out);
    GS_ASSERT(kt_check("silu_mul", got, ref, (size_t)(m * n), TOL));
    free(got);

    for (int64_t i = 0; i < m * n; i++)
        ref[i] = ah[i] * 0.5 * (1.0 + erf(ah[i] / sqrt(2.0)));
    GS_ASSERT_OK(gs_k_gelu(be, out, a));
    got = kt_mat_down(be, out);
    GS_ASSERT(kt_check("gelu", got, ref, (size_t)(m * n), TOL));
    free(got);
    GS_ASSERT_OK(gs_k_gelu(be, a, a)); /* in place */
    got = kt_mat_down(be, a);
    GS_ASSERT(kt_check("gelu in place", got, ref, (size_t)(m * n), TOL));
    free(got);

    for (int64_t r = 0; r < m; r++) {
        double mx = -INFINITY, s = 0;
        for (int64_t i = 0; i < n; i++)
            mx = fmax(mx, bh[r * n + i]);
        for (int64_t i = 0; i < n; i++)
            s += exp(bh[r * n + i] - mx);
        for (int64_t i = 0; i < n; i++)
            ref[r * n + i] = exp(bh[r * n + i] - mx) / s;
    }
    GS_ASSERT_OK(gs_k_softmax(be, out, b));
    got = kt_mat_down(be, out);
    GS_ASSERT(kt_check("softmax", got, ref, (size_t)(m * n), 1e-6));
    free(got);

    free(ref);
    free(ah);
    free(bh);
    free(guh);
    gs_buf_free(be, ab);
    gs_buf_free(be, bb);
    gs_buf_free(be, gub);
    gs_buf_free(be, out.data);
    gs_backend_free(be);
}

/* F32 -> BF16 -> F16 -> F32 through gs_k_copy; each step must round to
 * nearest even exactly as common/dtype.h does. */
static void test_copy_dtypes(void)
{
    gs_backend *be = kt_backend(2, 0);
    kt_seed(14);
    const int64_t m = 4, n = 77;
    float *xh = kt_rand((size_t)(m * n), -100, 100);
    xh[0] = 1e-6f;    /* f16 subnormal on the way */
    xh[1] = 70000.0f; /* f16 overflow -> inf */
    gs_mat x = kt_mat_up(be, xh, m, n, n + 4);
    void *bfb = gs_buf_alloc(be, (size_t)(m * (n + 1)) * 2),
         *f16b = gs_buf_alloc(be, (size_t)(m * n) * 2);
    gs_mat xb = {bfb, GS_DT_BF16, m, n, n + 1}, xf = {f16b, GS_DT_F16, m, n, n};
    gs_mat back = kt_mat_up(be, xh, m, n, n);
    GS_ASSERT_OK(gs_k_copy(be, xb, x));
    GS_ASSERT_OK(gs_k_copy(be, xf, xb));
    GS_ASSERT_OK(gs_k_copy(be, back, xf));
    float *got = kt_mat_down(be, back);
    int bad = 0;
    for (int64_t i = 0; i < m * n; i++) {
        float want = gs_f16_to_f32(gs_f32_to_f16(gs_bf16_to_f32(gs_f32_to_bf16(xh[i]))));
        if (memcmp(&want, &got[i], 4) != 0 && bad++ < 3)
            fprintf(stderr, "  copy chain [%lld]: %g -> %g, want %g\n", (long long)i, xh[i], got[i],
                    want);
    }
    fprintf(stderr, "TENSOR copy f32>bf16>f16>f32 bit-exact: %s\n", bad ? "FAIL" : "OK");
    GS_ASSERT_EQ(bad, 0);
    GS_ASSERT(isinf(got[1]));
    /* BF16 -> F32 directly */
    GS_ASSERT_OK(gs_k_copy(be, back, xb));
    free(got);
    got = kt_mat_down(be, back);
    for (int64_t i = 0; i < m * n; i++)
        if (got[i] != gs_bf16_to_f32(gs_f32_to_bf16(xh[i])))
            bad++;
    GS_ASSERT_EQ(bad, 0);
    /* I32 -> I32 */
    int32_t ih[6] = {1, -2, 3, 4, 5, 2147483647}, io[6] = {0};
    void *ib = kt_up(be, ih, sizeof ih), *ob = gs_buf_alloc(be, sizeof io);
    GS_ASSERT_OK(gs_k_copy(be, gs_mat_make(ob, GS_DT_I32, 2, 3), gs_mat_make(ib, GS_DT_I32, 2, 3)));
    GS_ASSERT_OK(gs_buf_download(be, io, ob, sizeof io));
    GS_ASSERT(memcmp(ih, io, sizeof ih) == 0);
    free(got);
    free(xh);
    gs_buf_free(be, ib);
    gs_buf_free(be, ob);
    gs_buf_free(be, x.data);
    gs_buf_free(be, bfb);
    gs_buf_free(be, f16b);
    gs_buf_free(be, back.data);
    gs_backend_free(be);
}

static void test_embed_gather(void)
{
    gs_backend *be = kt_backend(3, 0);
    kt_seed(15);
    const int64_t V = 50, H = 70, n = 9;
    float *tab = kt_rand((size_t)(V * H), -1, 1);
    for (int64_t i = 0; i < V * H; i++)
        tab[i] = kt_round(tab[i], GS_DT_BF16);
    void *tb = kt_pack(tab, (size_t)(V * H), GS_DT_BF16);
    gs_weight *T = NULL;
    GS_ASSERT_OK(gs_weight_new(be, tb, GS_DT_BF16, V, H, &T));
    int32_t ids[9] = {0, 49, 3, 3, 17, 0, 48, 1, 25};
    int32_t *dids = kt_up(be, ids, sizeof ids);
    gs_mat out = kt_mat_up(be, tab, n, H, H + 1);
    GS_ASSERT_OK(gs_k_embed(be, out, T, dids));
    float *got = kt_mat_down(be, out);
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += memcmp(got + i * H, tab + ids[i] * H, sizeof(float) * (size_t)H) != 0;
    fprintf(stderr, "TENSOR embed bf16 exact: %s\n", bad ? "FAIL" : "OK");
    GS_ASSERT_EQ(bad, 0);

    int32_t idx[4] = {8, 0, 4, 4};
    int32_t *didx = kt_up(be, idx, sizeof idx);
    gs_mat g = kt_mat_up(be, tab, 4, H, H);
    GS_ASSERT_OK(gs_k_gather_rows(be, g, out, didx));
    float *gg = kt_mat_down(be, g);
    for (int64_t i = 0; i < 4; i++)
        bad += memcmp(gg + i * H, got + idx[i] * H, sizeof(float) * (size_t)H) != 0;
    GS_ASSERT_EQ(bad, 0);
    free(gg);
    free(got);
    free(tab);
    free(tb);
    gs_buf_free(be, dids);
    gs_buf_free(be, didx);
    gs_buf_free(be, out.data);
    gs_buf_free(be, g.data);
    gs_weight_free(be, T);
    gs_backend_free(be);
}

int main(void)
{
    GS_RUN(test_rmsnorm);
    GS_RUN(test_add_rmsnorm);
    GS_RUN(test_layernorm);
    GS_RUN(test_add_silu_gelu_softmax);
    GS_RUN(test_copy_dtypes);
    GS_RUN(test_embed_gather);
    return gs_test_summary();
}

/* test_backend.c - backend lifecycle, buffers, mem_info, dtype names,
 * dummy weights (deterministic, thread-count independent, in range), and
 * the validation layer: every op refuses mismatched shapes, bad dtypes,
 * bad strides and NULL pointers with GS_EINVAL (and never crashes). */
#include "kernels/backend_impl.h"
#include "kt.h"

static void test_lifecycle(void)
{
    gs_backend *be = NULL;
    gs_diag d;
    GS_ASSERT_OK(gs_backend_new(NULL, &be, &d)); /* NULL params: CPU defaults */
    GS_ASSERT_STREQ(gs_backend_name(be), "cpu");
    GS_ASSERT_EQ(gs_backend_get_kind(be), GS_BACKEND_CPU);
    GS_ASSERT_EQ(gs_backend_act_dtype(be), GS_DT_F32);
    GS_ASSERT_OK(gs_backend_sync(be));
    size_t fr = 0, tot = 0;
    GS_ASSERT_OK(gs_backend_mem_info(be, &fr, &tot));
    GS_ASSERT(tot > 0 && fr > 0 && fr <= tot);
    fprintf(stderr, "mem_info: %zu MiB free of %zu MiB\n", fr >> 20, tot >> 20);
    void *p = gs_buf_alloc(be, 1000);
    GS_ASSERT(p != NULL && ((uintptr_t)p % 256) == 0);
    char src[1000], dst[1000];
    for (int i = 0; i < 1000; i++)
        src[i] = (char)i;
    GS_ASSERT_OK(gs_buf_upload(be, p, src, sizeof src));
    GS_ASSERT_OK(gs_buf_download(be, dst, p, sizeof dst));
    GS_ASSERT(memcmp(src, dst, sizeof src) == 0);
    GS_ASSERT_OK(gs_buf_zero(be, p, 10));
    GS_ASSERT_OK(gs_buf_download(be, dst, p, 10));
    GS_ASSERT(dst[0] == 0 && dst[9] == 0);
    GS_ASSERT_EQ(gs_buf_upload(be, NULL, src, 4), GS_EINVAL);
    gs_buf_free(be, p);
    gs_buf_free(be, NULL);
    gs_backend_free(be);
    gs_backend_free(NULL);

    gs_backend_params cp = {.kind = GS_BACKEND_CUDA};
    int rc = gs_backend_new(&cp, &be, &d);
#ifdef GS_TEST_EXPECT_CUDA
    (void)rc;
#else
    if (rc == GS_ENOTSUP)
        fprintf(stderr, "cuda: %s\n", d.msg);
    GS_ASSERT(rc == GS_ENOTSUP || rc == GS_EDEVICE || rc == 0);
    if (rc == 0)
        gs_backend_free(be);
#endif
    gs_backend_params bad = {.kind = (gs_backend_kind)7};
    GS_ASSERT_EQ(gs_backend_new(&bad, &be, &d), GS_EINVAL);
    GS_ASSERT(be == NULL);

    GS_ASSERT_EQ(gs_dtype_size(GS_DT_BF16), 2);
    GS_ASSERT_EQ(gs_dtype_size(GS_DT_I32), 4);
    GS_ASSERT_STREQ(gs_dtype_name(GS_DT_F16), "f16");
    GS_ASSERT_EQ(gs_dtype_size((gs_dtype)9), 0);
}

/* Random weights read back through gs_k_embed (rows of the table). */
static float *random_rows(int threads, gs_dtype dt, int64_t rows, int64_t cols, uint64_t seed,
                          int wf32)
{
    gs_backend *be = kt_backend(threads, wf32);
    gs_weight *w = NULL;
    if (gs_weight_new_random(be, dt, rows, cols, seed, 0.5f, &w) != 0)
        exit(2);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)rows);
    for (int64_t i = 0; i < rows; i++)
        ids[i] = (int32_t)i;
    int32_t *dids = kt_up(be, ids, sizeof(int32_t) * (size_t)rows);
    gs_mat out =
        gs_mat_make(gs_buf_alloc(be, sizeof(float) * (size_t)(rows * cols)), GS_DT_F32, rows, cols);
    if (gs_k_embed(be, out, w, dids) != 0)
        exit(2);
    float *h = kt_down(be, out.data, (size_t)(rows * cols));
    free(ids);
    gs_buf_free(be, dids);
    gs_buf_free(be, out.data);
    gs_weight_free(be, w);
    gs_backend_free(be);
    return h;
}

static void test_random_weights(void)
{
    const int64_t R = 67, C = 45;
    float *a = random_rows(1, GS_DT_BF16, R, C, 7, 0);
    float *b = random_rows(5, GS_DT_BF16, R, C, 7, 0);
    float *c = random_rows(3, GS_DT_BF16, R, C, 8, 0);
    float *d = random_rows(3, GS_DT_BF16, R, C, 7, 1); /* stored F32 */
    float *e = random_rows(2, GS_DT_F32, R, C, 7, 0);
    GS_ASSERT(memcmp(a, b, sizeof(float) * (size_t)(R * C)) == 0); /* thread-count free */
    GS_ASSERT(memcmp(a, d, sizeof(float) * (size_t)(R * C)) == 0); /* same model either way */
    GS_ASSERT(memcmp(a, c, sizeof(float) * (size_t)(R * C)) != 0); /* seed matters */
    double mean = 0, mn = 1, mx = -1;
    int off = 0;
    for (int64_t i = 0; i < R * C; i++) {
        float want = gs_rand_uniform(7, (uint64_t)i, 0.5f);
        off += a[i] != kt_round(want, GS_DT_BF16) || e[i] != want;
        mean += a[i];
        mn = fmin(mn, a[i]);
        mx = fmax(mx, a[i]);
    }
    mean /= (double)(R * C);
    fprintf(stderr, "random weights: mean %.4f min %.4f max %.4f\n", mean, mn, mx);
    GS_ASSERT_EQ(off, 0);
    GS_ASSERT(mn >= -0.5 && mx <= 0.5 && mn < -0.45 && mx > 0.45 && fabs(mean) < 0.02);
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
}

static void test_validation(void)
{
    gs_backend *be = kt_backend(2, 0);
    float *h = kt_rand(64 * 64, -1, 1);
    void *buf = kt_up(be, h, sizeof(float) * 64 * 64),
         *buf2 = kt_up(be, h, sizeof(float) * 64 * 64);
    gs_mat a = gs_mat_make(buf, GS_DT_F32, 4, 8), b = gs_mat_make(buf2, GS_DT_F32, 4, 8);
    gs_mat b7 = gs_mat_make(buf2, GS_DT_F32, 4, 7), b16 = gs_mat_make(buf2, GS_DT_F32, 4, 16);
    gs_mat bad_stride = {buf2, GS_DT_F32, 4, 8, 7};
    gs_mat bf = gs_mat_make(buf2, GS_DT_BF16, 4, 8), nul = {NULL, GS_DT_F32, 4, 8, 8};
    gs_vec w8, w7;
    GS_ASSERT_OK(gs_vec_new(be, h, 8, &w8));
    GS_ASSERT_OK(gs_vec_new(be, h, 7, &w7));
    gs_weight *W = NULL;
    GS_ASSERT_OK(gs_weight_new(be, h, GS_DT_F32, 16, 8, &W)); /* [16, 8] */

    /* matmul */
    GS_ASSERT_OK(gs_k_matmul(be, b16, a, W, NULL, 0));
    GS_ASSERT_EQ(gs_k_matmul(be, b, a, W, NULL, 0), GS_EINVAL);      /* out cols */
    GS_ASSERT_EQ(gs_k_matmul(be, b16, b7, W, NULL, 0), GS_EINVAL);   /* k */
    GS_ASSERT_EQ(gs_k_matmul(be, b16, a, W, &w8, 0), GS_EINVAL);     /* bias n */
    GS_ASSERT_EQ(gs_k_matmul(be, b16, a, W, NULL, 4), GS_EINVAL);    /* flags */
    GS_ASSERT_EQ(gs_k_matmul(be, b16, a, NULL, NULL, 0), GS_EINVAL); /* weight */
    GS_ASSERT_EQ(gs_k_matmul(be, b16, bf, W, NULL, 0), GS_EINVAL);   /* x dtype */
    GS_ASSERT_EQ(gs_k_matmul(be, gs_mat_make(buf, GS_DT_F32, 4, 16), a, W, NULL, 0),
                 GS_EINVAL); /* out overlaps x */
    GS_ASSERT_EQ(gs_k_matmul(NULL, b16, a, W, NULL, 0), GS_EINVAL);
    /* norms and elementwise */
    GS_ASSERT_EQ(gs_k_rmsnorm(be, b, a, &w7, 1e-5f), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_rmsnorm(be, b7, a, &w8, 1e-5f), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_rmsnorm(be, b, a, &w8, -1.0f), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_rmsnorm(be, b, a, NULL, 1e-5f), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_rmsnorm(be, bad_stride, a, &w8, 1e-5f), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_rmsnorm(be, b, nul, &w8, 1e-5f), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_add_rmsnorm(be, b, b7, a, &w8, 1e-5f), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_layernorm(be, b, a, &w8, &w7, 1e-5f), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_add(be, b, a, b7), GS_EINVAL);
    GS_ASSERT_OK(gs_k_silu_mul(be, a, b16));
    GS_ASSERT_EQ(gs_k_silu_mul(be, b, a), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_gelu(be, b, bf), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_softmax(be, b7, a), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_copy(be, b7, a), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_copy(be, gs_mat_make(buf2, GS_DT_I32, 4, 8), a), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_copy(be, gs_mat_cols(gs_mat_make(buf, GS_DT_F32, 4, 16), 1, 8),
                           gs_mat_make(buf, GS_DT_F32, 4, 8)),
                 GS_EINVAL); /* partial overlap */
    /* gathers */
    int32_t ids[4] = {0, 1, 2, 16}, *dids = kt_up(be, ids, sizeof ids);
    GS_ASSERT_EQ(gs_k_embed(be, a, W, dids), GS_EINVAL);   /* id 16 of 16 rows */
    GS_ASSERT_EQ(gs_k_embed(be, b16, W, dids), GS_EINVAL); /* cols */
    GS_ASSERT_EQ(gs_k_embed(be, a, W, NULL), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_gather_rows(be, b, a, dids), GS_EINVAL); /* idx 16 of 4 rows */
    ids[3] = -1;
    GS_ASSERT_OK(gs_buf_upload(be, dids, ids, sizeof ids));
    GS_ASSERT_EQ(gs_k_gather_rows(be, b, a, dids), GS_EINVAL);
    ids[3] = 3;
    GS_ASSERT_OK(gs_buf_upload(be, dids, ids, sizeof ids));
    GS_ASSERT_OK(gs_k_gather_rows(be, b, a, dids));
    GS_ASSERT_OK(gs_k_embed(be, a, W, dids));
    /* rope */
    gs_rope_text_params rp = {2, 4, 4, {1, 1, 0}, 10000.0f};
    GS_ASSERT_OK(gs_k_rope_text(be, a, dids, &rp));
    rp.mrope_section[2] = 1; /* sum 3 != rotary/2 */
    GS_ASSERT_EQ(gs_k_rope_text(be, a, dids, &rp), GS_EINVAL);
    rp.mrope_section[2] = 0;
    rp.rotary_dim = 6; /* > head_dim */
    GS_ASSERT_EQ(gs_k_rope_text(be, a, dids, &rp), GS_EINVAL);
    rp.rotary_dim = 4;
    rp.n_heads = 3; /* cols != heads * head_dim */
    GS_ASSERT_EQ(gs_k_rope_text(be, a, dids, &rp), GS_EINVAL);
    rp.n_heads = 2;
    rp.theta = -1.0f;
    GS_ASSERT_EQ(gs_k_rope_text(be, a, dids, &rp), GS_EINVAL);
    gs_rope_vision_params vp = {1, 8, 10000.0f};
    GS_ASSERT_OK(gs_k_rope_vision(be, a, dids, &vp));
    vp.head_dim = 6; /* not a multiple of 4 */
    vp.n_heads = 1;
    GS_ASSERT_EQ(gs_k_rope_vision(be, gs_mat_make(buf, GS_DT_F32, 4, 6), dids, &vp), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_rope_vision(be, a, dids, NULL), GS_EINVAL);
    /* kv store */
    gs_kv_layer kv = {buf, buf2, 2, 2, 1, 8};
    GS_ASSERT_EQ(gs_k_kv_store(be, &kv, a, b7, dids), GS_EINVAL);
    kv.n_kv_heads = 0;
    GS_ASSERT_EQ(gs_k_kv_store(be, &kv, a, b, dids), GS_EINVAL);
    /* empty ops are fine and touch nothing */
    gs_mat e = {NULL, GS_DT_F32, 0, 8, 8};
    GS_ASSERT_OK(gs_k_rmsnorm(be, e, e, &w8, 1e-5f));
    GS_ASSERT_OK(gs_k_matmul(be, gs_mat_make(NULL, GS_DT_F32, 0, 16), e, W, NULL, 0));
    /* weights and vectors */
    gs_weight *w2 = (gs_weight *)1;
    GS_ASSERT_EQ(gs_weight_new(be, h, GS_DT_I32, 2, 2, &w2), GS_EINVAL);
    GS_ASSERT(w2 == NULL);
    GS_ASSERT_EQ(gs_weight_new(be, h, GS_DT_F32, 0, 2, &w2), GS_EINVAL);
    GS_ASSERT_EQ(gs_weight_new(be, NULL, GS_DT_F32, 2, 2, &w2), GS_EINVAL);
    GS_ASSERT_EQ(gs_weight_new(be, h, GS_DT_F32, INT64_MAX / 2, 4, &w2), GS_EINVAL);
    GS_ASSERT_EQ(gs_weight_new_random(be, GS_DT_BF16, 2, 2, 1, NAN, &w2), GS_EINVAL);
    gs_vec v0;
    GS_ASSERT_EQ(gs_vec_new(be, h, 0, &v0), GS_EINVAL);
    GS_ASSERT(v0.data == NULL);
    gs_vec_free(be, &v0);

    gs_buf_free(be, dids);
    gs_vec_free(be, &w8);
    gs_vec_free(be, &w7);
    gs_weight_free(be, W);
    gs_weight_free(be, NULL);
    gs_buf_free(be, buf);
    gs_buf_free(be, buf2);
    free(h);
    gs_backend_free(be);
}

/* gs_weight_wrap_host: a weight over borrowed host memory (2-byte aligned
 * BF16 here, as in a safetensors mapping) computes exactly what a copied
 * weight computes, is not freed with the weight, and is refused when
 * misaligned (GS_EINVAL) or when the backend would convert it
 * (weights_f32 and BF16: GS_ENOTSUP). */
static void test_wrap_host(void)
{
    const int64_t R = 37, C = 70, M = 5;
    gs_backend *be = kt_backend(2, 0);
    float *wf = kt_rand((size_t)(R * C), -1.0f, 1.0f);
    uint16_t *bf = kt_pack(wf, (size_t)(R * C), GS_DT_BF16);
    char *host = malloc((size_t)(R * C) * 2 + 8);
    char *at = host + 2; /* 2-byte but not 4-byte aligned */
    memcpy(at, bf, (size_t)(R * C) * 2);
    gs_weight *wrapped = NULL, *copied = NULL;
    GS_ASSERT_OK(gs_weight_wrap_host(be, at, GS_DT_BF16, R, C, &wrapped));
    GS_ASSERT_OK(gs_weight_new(be, bf, GS_DT_BF16, R, C, &copied));
    GS_ASSERT_EQ(gs_weight_bytes(wrapped), gs_weight_bytes(copied));
    GS_ASSERT_EQ(gs_weight_rows(wrapped), R);
    float *xf = kt_rand((size_t)(M * C), -1.0f, 1.0f);
    gs_mat x = kt_mat_up(be, xf, M, C, C);
    gs_mat o1 = kt_mat_up(be, xf, M, R, R), o2 = kt_mat_up(be, xf, M, R, R);
    GS_ASSERT_OK(gs_k_matmul(be, o1, x, wrapped, NULL, 0));
    GS_ASSERT_OK(gs_k_matmul(be, o2, x, copied, NULL, 0));
    float *a = kt_mat_down(be, o1), *b = kt_mat_down(be, o2);
    GS_ASSERT(memcmp(a, b, sizeof(float) * (size_t)(M * R)) == 0);
    GS_ASSERT(memcmp(at, bf, (size_t)(R * C) * 2) == 0); /* never written */
    gs_weight_free(be, wrapped);
    host[2] ^= 1; /* still ours (ASan would flag a free by the backend) */
    gs_weight *w = (gs_weight *)1;
    GS_ASSERT_EQ(gs_weight_wrap_host(be, host + 1, GS_DT_BF16, R, C, &w), GS_EINVAL);
    GS_ASSERT(w == NULL);
    GS_ASSERT_EQ(gs_weight_wrap_host(be, NULL, GS_DT_BF16, R, C, &w), GS_EINVAL);
    gs_weight_free(be, copied);
    gs_buf_free(be, x.data);
    gs_buf_free(be, o1.data);
    gs_buf_free(be, o2.data);
    gs_backend_free(be);

    be = kt_backend(2, 1); /* F32 storage: BF16 would need a conversion */
    GS_ASSERT_EQ(gs_weight_wrap_host(be, at, GS_DT_BF16, R, C, &w), GS_ENOTSUP);
    float *f32 = malloc(sizeof(float) * (size_t)(R * C));
    memcpy(f32, wf, sizeof(float) * (size_t)(R * C));
    GS_ASSERT_OK(gs_weight_wrap_host(be, f32, GS_DT_F32, R, C, &w));
    gs_weight_free(be, w);
    gs_backend_free(be);
    free(f32);
    free(a);
    free(b);
    free(xf);
    free(wf);
    free(bf);
    free(host);
}

int main(void)
{
    GS_RUN(test_lifecycle);
    GS_RUN(test_random_weights);
    GS_RUN(test_validation);
    GS_RUN(test_wrap_host);
    return gs_test_summary();
}

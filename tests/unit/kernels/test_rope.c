/* test_rope.c - rotary embeddings.
 *  - inv_freq: gs_rope_inv_freq against the F32 bit patterns PyTorch
 *    produces for theta 10000 and 500000, dim 64 (glm4v-spec.md 3.5, 4.3).
 *  - text M-RoPE against a direct transcription of spec 4.3 (pair j rotates
 *    dims 2j, 2j+1 by pos[axis(j)] * inv_freq[j]; dims >= rotary_dim
 *    untouched), with three different position streams.
 *  - vision 2-D RoPE against spec 3.5 (emb = cat(rot, rot), rotate_half). */
#include "kernels/backend_impl.h"
#include "kt.h"

/* torch 2.15 CPU, `1.0 / (theta ** (arange(0, 64, 2).float() / 64))` */
static const uint32_t inv_10000[32] = {
    0x3f800000, 0x3f3ff911, 0x3f0ff59a, 0x3ed7e89b, 0x3ea1e89b, 0x3e72d423, 0x3e361887, 0x3e088d77,
    0x3dcccccd, 0x3d99940d, 0x3d6655c2, 0x3d2cba15, 0x3d0186e3, 0x3cc2434f, 0x3c91ad39, 0x3c5a7bf2,
    0x3c23d70a, 0x3bf5b9b0, 0x3bb8449c, 0x3b8a2e77, 0x3b4f3e38, 0x3b1b690d, 0x3ae91528, 0x3aaec98e,
    0x3a83126f, 0x3a44948c, 0x3a136a16, 0x39dd1725, 0x39a5cb60, 0x3978a815, 0x393a7753, 0x390bd472};
static const uint32_t inv_500000[32] = {
    0x3f800000, 0x3f29e1c6, 0x3ee177bc, 0x3e959ee3, 0x3e4693b0, 0x3e03c6a0, 0x3daee4ad, 0x3d681e67,
    0x3d1a08c8, 0x3ccc6f49, 0x3c87a9c3, 0x3c340d6d, 0x3beef74f, 0x3b9e9402, 0x3b527720, 0x3b0baa41,
    0x3ab95d21, 0x3a7603ea, 0x3a23418d, 0x39d8ac81, 0x398fc8f8, 0x393ed4f4, 0x38fd45c3, 0x38a8126b,
    0x385f10c4, 0x381406cb, 0x37c47610, 0x37825f34, 0x372d07a7, 0x36e5a54d, 0x369864a7, 0x364a41b0};

static void test_inv_freq_bits(void)
{
    int bad = 0;
    for (int j = 0; j < 32; j++) {
        uint32_t a = gs_f32_bits(gs_rope_inv_freq(10000.0f, j, 64));
        uint32_t b = gs_f32_bits(gs_rope_inv_freq(500000.0f, j, 64));
        if (a != inv_10000[j] || b != inv_500000[j]) {
            fprintf(stderr, "  j %d: %08x (want %08x), %08x (want %08x)\n", j, a, inv_10000[j], b,
                    inv_500000[j]);
            bad++;
        }
    }
    fprintf(stderr, "inv_freq bit patterns theta 10000 and 500000: %d of 64 differ\n", bad);
    GS_ASSERT_EQ(bad, 0);
}

static void test_rope_text_mrope(void)
{
    gs_backend *be = kt_backend(3, 0);
    kt_seed(20);
    const int32_t m = 11, heads = 3, hd = 128, rot = 64, sec[3] = {8, 12, 12};
    const int64_t n = (int64_t)heads * hd;
    int32_t pos[3 * 11];
    for (int32_t i = 0; i < m; i++) {
        pos[i] = 5 + i;                   /* t */
        pos[m + i] = 5 + (i % 4);         /* h */
        pos[2 * m + i] = 100000 + 37 * i; /* w: large, distinct */
    }
    float *x = kt_rand((size_t)(m * n), -2, 2);
    /* spec 4.3, F32 angle float(pos) * inv_freq, rotation in double */
    double *ref = malloc(sizeof(double) * (size_t)(m * n));
    for (int32_t r = 0; r < m; r++)
        for (int32_t h = 0; h < heads; h++) {
            const float *q = x + r * n + h * hd;
            double *o = ref + r * n + h * hd;
            for (int32_t d = 0; d < hd; d++)
                o[d] = q[d];
            for (int32_t j = 0; j < rot / 2; j++) {
                int axis = j < sec[0] ? 0 : (j < sec[0] + sec[1] ? 1 : 2);
                float ang = (float)pos[axis * m + r] * gs_f32_from_bits(inv_500000[j]);
                double c = cos((double)ang), s = sin((double)ang);
                o[2 * j] = q[2 * j] * c - q[2 * j + 1] * s;
                o[2 * j + 1] = q[2 * j + 1] * c + q[2 * j] * s;
            }
        }
    /* a strided view: q of a fused [m, n + 2*128] buffer */
    gs_mat all = kt_mat_up(be, x, m, n, n + 256);
    gs_mat q = gs_mat_cols(all, 0, n);
    int32_t *dpos = kt_up(be, pos, sizeof pos);
    gs_rope_text_params p = {heads, hd, rot, {8, 12, 12}, 500000.0f};
    GS_ASSERT_OK(gs_k_rope_text(be, q, dpos, &p));
    float *got = kt_mat_down(be, q);
    GS_ASSERT(kt_check("rope_text mrope [8,12,12] theta 5e5", got, ref, (size_t)(m * n), 2e-6));
    int pass = 0;
    for (int32_t r = 0; r < m; r++)
        for (int32_t h = 0; h < heads; h++)
            for (int32_t d = rot; d < hd; d++)
                pass += got[r * n + h * hd + d] != x[r * n + h * hd + d];
    GS_ASSERT_EQ(pass, 0); /* partial rotary: upper dims bit-identical */
    /* the three streams matter: permuting them changes the result */
    int32_t pos2[3 * 11];
    memcpy(pos2, pos + m, sizeof(int32_t) * (size_t)m);
    memcpy(pos2 + m, pos, sizeof(int32_t) * (size_t)m);
    memcpy(pos2 + 2 * m, pos + 2 * m, sizeof(int32_t) * (size_t)m);
    gs_mat q2 = kt_mat_up(be, x, m, n, n);
    int32_t *dpos2 = kt_up(be, pos2, sizeof pos2);
    GS_ASSERT_OK(gs_k_rope_text(be, q2, dpos2, &p));
    float *got2 = kt_mat_down(be, q2);
    GS_ASSERT(memcmp(got, got2, sizeof(float) * (size_t)(m * n)) != 0);
    free(got2);
    free(got);
    free(ref);
    free(x);
    gs_buf_free(be, all.data);
    gs_buf_free(be, q2.data);
    gs_buf_free(be, dpos);
    gs_buf_free(be, dpos2);
    gs_backend_free(be);
}

static void test_rope_text_small(void)
{
    /* theta 10000, full rotary, one head of 8: mrope [1, 1, 2] */
    gs_backend *be = kt_backend(1, 0);
    const int32_t m = 2, hd = 8;
    float x[16];
    for (int i = 0; i < 16; i++)
        x[i] = (float)(i + 1);
    int32_t pos[6] = {1, 2, 3, 4, 5, 6};
    double ref[16];
    for (int32_t r = 0; r < m; r++)
        for (int32_t j = 0; j < 4; j++) {
            int axis = j < 1 ? 0 : (j < 2 ? 1 : 2);
            float inv = gs_rope_inv_freq(10000.0f, j, 8);
            double ang = (double)((float)pos[axis * m + r] * inv);
            double a = x[r * 8 + 2 * j], b = x[r * 8 + 2 * j + 1];
            ref[r * 8 + 2 * j] = a * cos(ang) - b * sin(ang);
            ref[r * 8 + 2 * j + 1] = b * cos(ang) + a * sin(ang);
        }
    gs_mat q = kt_mat_up(be, x, m, hd, hd);
    int32_t *dpos = kt_up(be, pos, sizeof pos);
    gs_rope_text_params p = {1, hd, hd, {1, 1, 2}, 10000.0f};
    GS_ASSERT_OK(gs_k_rope_text(be, q, dpos, &p));
    float *got = kt_mat_down(be, q);
    GS_ASSERT(kt_check("rope_text small full rotary", got, ref, 16, 2e-7));
    free(got);
    gs_buf_free(be, q.data);
    gs_buf_free(be, dpos);
    gs_backend_free(be);
}

static void test_rope_vision(void)
{
    gs_backend *be = kt_backend(2, 0);
    kt_seed(21);
    const int32_t m = 13, heads = 2, hd = 128, half = 64, qf = 32;
    const int64_t n = (int64_t)heads * hd;
    int32_t pos[2 * 13];
    for (int32_t i = 0; i < m; i++) {
        pos[i] = i / 4;
        pos[m + i] = (i * 7) % 23;
    }
    float *x = kt_rand((size_t)(m * n), -2, 2);
    double *ref = malloc(sizeof(double) * (size_t)(m * n));
    for (int32_t r = 0; r < m; r++) {
        float emb[128];
        for (int32_t i = 0; i < half; i++) {
            float inv = gs_f32_from_bits(inv_10000[i % qf]);
            emb[i] = (float)(i < qf ? pos[r] : pos[m + r]) * inv;
            emb[i + half] = emb[i]; /* cat(rot, rot) */
        }
        for (int32_t h = 0; h < heads; h++) {
            const float *v = x + r * n + h * hd;
            double *o = ref + r * n + h * hd;
            for (int32_t i = 0; i < hd; i++) {
                double rh = i < half ? -(double)v[i + half] : (double)v[i - half];
                o[i] = v[i] * cos((double)emb[i]) + rh * sin((double)emb[i]);
            }
        }
    }
    gs_mat all = kt_mat_up(be, x, m, n, 3 * n);
    gs_mat k = gs_mat_cols(all, n, n); /* the k slice of a fused qkv */
    for (int32_t r = 0; r < m; r++)
        GS_ASSERT_OK(gs_buf_upload(be, (float *)k.data + r * k.stride, x + r * n,
                                   sizeof(float) * (size_t)n));
    int32_t *dpos = kt_up(be, pos, sizeof pos);
    gs_rope_vision_params p = {heads, hd, 10000.0f};
    GS_ASSERT_OK(gs_k_rope_vision(be, k, dpos, &p));
    float *got = kt_mat_down(be, k);
    GS_ASSERT(kt_check("rope_vision 2d theta 1e4", got, ref, (size_t)(m * n), 2e-6));
    float *q = kt_mat_down(be, gs_mat_cols(all, 0, n)); /* q slice untouched */
    GS_ASSERT(memcmp(q, x, sizeof(float) * (size_t)(m * n)) == 0);
    free(q);
    free(got);
    free(ref);
    free(x);
    gs_buf_free(be, all.data);
    gs_buf_free(be, dpos);
    gs_backend_free(be);
}

int main(void)
{
    GS_RUN(test_inv_freq_bits);
    GS_RUN(test_rope_text_mrope);
    GS_RUN(test_rope_text_small);
    GS_RUN(test_rope_vision);
    return gs_test_summary();
}

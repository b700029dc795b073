/* test_attention.c - attention over contiguous segments and over the paged
 * KV cache, and kv_store.
 *  - gs_k_attention (causal and full; GQA 16:1, 2:1 and 1:1; head_dim 128
 *    and an odd one; several segments; q/k/v as strided column views of one
 *    fused qkv buffer) against a double-precision reference;
 *  - gs_k_attention_paged on the same data after gs_k_kv_store into a cache
 *    with page_size 16, a shuffled block table and partial last pages:
 *    GQA 16:1 with one KV head (as the tiny fixture model), whole-prompt
 *    prefill, one-token decode (long enough to take the
 *    split-KV path) and a chunked prefill of the last rows, each against
 *    the contiguous result;
 *  - malformed index arrays are refused with GS_EINVAL. */
#include "kt.h"

/* Attention of one segment in double: rows [0, nq) of q sit at positions
 * nk - nq + i (causal) and see keys [0, pos]; full: all nk keys. */
static void ref_seg(double *out, int64_t ldo, const float *q, int64_t ldq, const float *k,
                    const float *v, int64_t ldkv, int nq, int nk, int H, int KV, int hd,
                    float scale, int causal)
{
    double *s = malloc(sizeof(double) * (size_t)(nk ? nk : 1));
    for (int i = 0; i < nq; i++)
        for (int h = 0; h < H; h++) {
            int g = h / (H / KV), last = causal ? nk - nq + i : nk - 1;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j <= last; j++) {
                double d = 0;
                for (int t = 0; t < hd; t++)
                    d += (double)q[i * ldq + h * hd + t] * k[j * ldkv + g * hd + t];
                s[j] = d * scale;
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j <= last; j++)
                sum += (s[j] = exp(s[j] - mx));
            for (int t = 0; t < hd; t++) {
                double a = 0;
                for (int j = 0; j <= last; j++)
                    a += s[j] * v[j * ldkv + g * hd + t];
                out[i * ldo + h * hd + t] = a / sum;
            }
        }
    free(s);
}

typedef struct {
    int H, KV, hd, causal;
    int n_seg;
    const int32_t *cu;
    float scale; /* 0: 1 / sqrt(hd) */
} attn_case;

/* Runs gs_k_attention on random data; returns the output (host) and
 * fills *qkv_host (dense [T, (H + 2 KV) hd]) for reuse. */
static int contiguous_case(gs_backend *be, const attn_case *c, float **qkv_host, float **out_host)
{
    const int T = c->cu[c->n_seg], qd = c->H * c->hd, kd = c->KV * c->hd, w = qd + 2 * kd;
    const float scale = c->scale ? c->scale : 1.0f / sqrtf((float)c->hd);
    float *qkv = kt_rand((size_t)T * w, -2, 2);
    gs_mat all = kt_mat_up(be, qkv, T, w, w + 5);
    gs_mat q = gs_mat_cols(all, 0, qd), k = gs_mat_cols(all, qd, kd),
           v = gs_mat_cols(all, qd + kd, kd);
    float *zero = calloc((size_t)T * qd, sizeof(float));
    gs_mat out = kt_mat_up(be, zero, T, qd, qd);
    int32_t *dcu = kt_up(be, c->cu, sizeof(int32_t) * (size_t)(c->n_seg + 1));
    int max_len = 0;
    for (int s = 0; s < c->n_seg; s++)
        max_len = c->cu[s + 1] - c->cu[s] > max_len ? c->cu[s + 1] - c->cu[s] : max_len;
    gs_attn_params p = {c->H, c->KV, c->hd, scale, c->causal};
    int ok = gs_k_attention(be, out, q, k, v, dcu, c->n_seg, max_len, &p) == 0;
    double *ref = malloc(sizeof(double) * (size_t)T * qd);
    for (int s = 0; s < c->n_seg; s++) {
        int a = c->cu[s], n = c->cu[s + 1] - a;
        ref_seg(ref + (size_t)a * qd, qd, qkv + (size_t)a * w, w, qkv + (size_t)a * w + qd,
                qkv + (size_t)a * w + qd + kd, w, n, n, c->H, c->KV, c->hd, scale, c->causal);
    }
    float *got = kt_mat_down(be, out);
    char name[96];
    snprintf(name, sizeof name, "attention %s H%d KV%d hd%d segs%d%s",
             c->causal ? "causal" : "full", c->H, c->KV, c->hd, c->n_seg,
             c->scale ? " peaked" : "");
    /* peaked rows amplify the F32 rounding of the scores (|s| ~ 100): the
     * same error with libm's expf, so a looser bound there */
    ok = ok && kt_check(name, got, ref, (size_t)T * qd, c->scale ? 3e-5 : 2e-6);
    free(ref);
    free(zero);
    gs_buf_free(be, all.data);
    gs_buf_free(be, out.data);
    gs_buf_free(be, dcu);
    if (qkv_host)
        *qkv_host = qkv;
    else
        free(qkv);
    if (out_host)
        *out_host = got;
    else
        free(got);
    return ok;
}

static void test_attention_contiguous(void)
{
    gs_backend *be = kt_backend(4, 0);
    kt_seed(40);
    const int32_t cu1[4] = {0, 37, 38, 70};
    attn_case a = {32, 2, 128, 1, 3, cu1, 0}; /* text: GQA 16:1, causal */
    GS_ASSERT(contiguous_case(be, &a, NULL, NULL));
    const int32_t cu2[3] = {0, 20, 84};
    attn_case b = {3, 3, 128, 0, 2, cu2, 0}; /* vision: full, per image */
    GS_ASSERT(contiguous_case(be, &b, NULL, NULL));
    const int32_t cu3[2] = {0, 300};        /* > one key chunk, > one row block */
    attn_case c = {4, 2, 72, 1, 1, cu3, 0}; /* GQA 2:1, odd head_dim */
    GS_ASSERT(contiguous_case(be, &c, NULL, NULL));
    attn_case d = {4, 2, 72, 0, 1, cu3, 0};
    GS_ASSERT(contiguous_case(be, &d, NULL, NULL));
    /* scores spread over hundreds: near one-hot rows, exp underflows to 0 */
    const int32_t cu4[2] = {0, 40};
    attn_case e = {2, 1, 128, 1, 1, cu4, 2.5f};
    GS_ASSERT(contiguous_case(be, &e, NULL, NULL));
    gs_backend_free(be);
}

/* Paged cache: k, v [n_pages, 16, KV, hd]; sequences of lengths L[s]
 * laid out on shuffled pages. */
static void test_attention_paged(void)
{
    gs_backend *be = kt_backend(8, 0);
    kt_seed(41);
    enum { NS = 4, PS = 16, MAXB = 21 };
    const int H = 16, KV = 1, hd = 128, qd = H * hd, kd = KV * hd, w = qd + 2 * kd;
    const int32_t L[NS] = {37, 16, 5, 260}; /* 260: long enough to split in decode */
    int32_t cu[NS + 1] = {0};
    for (int s = 0; s < NS; s++)
        cu[s + 1] = cu[s] + L[s];
    const int T = cu[NS];
    attn_case c = {H, KV, hd, 1, NS, cu, 0};
    float *qkv, *full;
    GS_ASSERT(contiguous_case(be, &c, &qkv, &full));

    /* pages: shuffled ids, 3 spare pages never used */
    int n_pages = 3, bt[NS * MAXB];
    for (int s = 0; s < NS; s++)
        n_pages += (L[s] + PS - 1) / PS;
    int *perm = malloc(sizeof(int) * (size_t)n_pages);
    for (int i = 0; i < n_pages; i++)
        perm[i] = i;
    for (int i = n_pages - 1; i > 0; i--) {
        int j = (int)(kt_next() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int next = 0;
    for (int s = 0; s < NS; s++)
        for (int b = 0; b < MAXB; b++)
            bt[s * MAXB + b] = b < (L[s] + PS - 1) / PS ? perm[next++] : 99999; /* unused: junk */
    size_t cache_floats = (size_t)n_pages * PS * kd;
    float *junk = kt_rand(cache_floats, 50, 60); /* unwritten slots hold junk */
    gs_kv_layer kv = {
        kt_up(be, junk, cache_floats * 4), kt_up(be, junk, cache_floats * 4), n_pages, PS, KV, hd};
    /* store all tokens, plus one extra row with slot -1 (skipped) */
    int32_t *slots = malloc(sizeof(int32_t) * (size_t)(T + 1));
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < L[s]; i++)
            slots[cu[s] + i] = bt[s * MAXB + i / PS] * PS + i % PS;
    slots[T] = -1;
    float *qkv1 = malloc(sizeof(float) * (size_t)(T + 1) * w);
    memcpy(qkv1, qkv, sizeof(float) * (size_t)T * w);
    for (int i = 0; i < w; i++)
        qkv1[(size_t)T * w + i] = 1e6f;
    gs_mat all = kt_mat_up(be, qkv1, T + 1, w, w);
    int32_t *dslots = kt_up(be, slots, sizeof(int32_t) * (size_t)(T + 1));
    GS_ASSERT_OK(
        gs_k_kv_store(be, &kv, gs_mat_cols(all, qd, kd), gs_mat_cols(all, qd + kd, kd), dslots));
    float *kc = kt_down(be, kv.k, cache_floats);
    int bad = 0;
    for (size_t i = 0; i < cache_floats; i++)
        bad += kc[i] == 1e6f;
    GS_ASSERT_EQ(bad, 0); /* slot -1 row never written */
    free(kc);

    int32_t *dbt = kt_up(be, bt, sizeof bt), kvl[NS], cuq[NS + 1];
    memcpy(kvl, L, sizeof kvl);
    int32_t *dkvl = kt_up(be, kvl, sizeof kvl);
    const gs_attn_params p = {H, KV, hd, 1.0f / sqrtf((float)hd), 1};
    /* nq = rows of each sequence in this step: all, 1 (decode), up to 7 */
    const int nqs[3][NS] = {{37, 16, 5, 260}, {1, 1, 1, 1}, {7, 7, 5, 7}};
    const char *names[3] = {"paged prefill", "paged decode (split kv)", "paged chunk of 7"};
    for (int cs = 0; cs < 3; cs++) {
        int nq_tot = 0, max_q = 0;
        cuq[0] = 0;
        for (int s = 0; s < NS; s++) {
            cuq[s + 1] = cuq[s] + nqs[cs][s];
            max_q = nqs[cs][s] > max_q ? nqs[cs][s] : max_q;
        }
        nq_tot = cuq[NS];
        /* q rows: the last nq rows of each sequence, packed */
        float *qh = malloc(sizeof(float) * (size_t)nq_tot * qd),
              *want = malloc(sizeof(float) * (size_t)nq_tot * qd);
        for (int s = 0; s < NS; s++)
            for (int i = 0; i < nqs[cs][s]; i++) {
                int src = cu[s] + L[s] - nqs[cs][s] + i;
                memcpy(qh + (size_t)(cuq[s] + i) * qd, qkv + (size_t)src * w, sizeof(float) * qd);
                memcpy(want + (size_t)(cuq[s] + i) * qd, full + (size_t)src * qd,
                       sizeof(float) * qd);
            }
        gs_mat q = kt_mat_up(be, qh, nq_tot, qd, qd + 1);
        gs_mat out = kt_mat_up(be, qh, nq_tot, qd, qd);
        int32_t *dcuq = kt_up(be, cuq, sizeof cuq);
        gs_paged_batch b = {NS, dcuq, dkvl, dbt, MAXB, max_q, 260};
        GS_ASSERT_OK(gs_k_attention_paged(be, out, q, &kv, &b, &p));
        float *got = kt_mat_down(be, out);
        GS_ASSERT(gs_check_tensor(names[cs], got, want, (size_t)nq_tot * qd, 2e-6));
        free(got);

        if (cs == 1) { /* malformed batches */
            int32_t bt2[NS * MAXB];
            memcpy(bt2, bt, sizeof bt2);
            bt2[3 * MAXB + 16] = n_pages; /* a needed block points past the cache */
            int32_t *dbt2 = kt_up(be, bt2, sizeof bt2);
            gs_paged_batch b2 = b;
            b2.block_table = dbt2;
            GS_ASSERT_EQ(gs_k_attention_paged(be, out, q, &kv, &b2, &p), GS_EINVAL);
            gs_buf_free(be, dbt2);
            int32_t kvl2[NS] = {37, 0, 5, 260}; /* kv_len < n_q */
            int32_t *dkvl2 = kt_up(be, kvl2, sizeof kvl2);
            b2 = b;
            b2.kv_len = dkvl2;
            GS_ASSERT_EQ(gs_k_attention_paged(be, out, q, &kv, &b2, &p), GS_EINVAL);
            gs_buf_free(be, dkvl2);
            b2 = b;
            b2.max_kv = 259; /* a bound that is exceeded */
            GS_ASSERT_EQ(gs_k_attention_paged(be, out, q, &kv, &b2, &p), GS_EINVAL);
            int32_t cuq2[NS + 1] = {0, 2, 1, 3, 4}; /* decreasing */
            int32_t *dcuq2 = kt_up(be, cuq2, sizeof cuq2);
            b2 = b;
            b2.cu_q = dcuq2;
            GS_ASSERT_EQ(gs_k_attention_paged(be, out, q, &kv, &b2, &p), GS_EINVAL);
            gs_buf_free(be, dcuq2);
            gs_attn_params p2 = p;
            p2.n_kv_heads = 4; /* does not match the cache */
            GS_ASSERT_EQ(gs_k_attention_paged(be, out, q, &kv, &b, &p2), GS_EINVAL);
            int32_t bad_slot[1] = {n_pages * PS};
            int32_t *dbs = kt_up(be, bad_slot, sizeof bad_slot);
            GS_ASSERT_EQ(gs_k_kv_store(be, &kv, gs_mat_rows(gs_mat_cols(all, qd, kd), 0, 1),
                                       gs_mat_rows(gs_mat_cols(all, qd + kd, kd), 0, 1), dbs),
                         GS_EINVAL);
            gs_buf_free(be, dbs);
        }
        free(qh);
        free(want);
        gs_buf_free(be, q.data);
        gs_buf_free(be, out.data);
        gs_buf_free(be, dcuq);
    }
    free(perm);
    free(junk);
    free(slots);
    free(qkv1);
    free(qkv);
    free(full);
    gs_buf_free(be, all.data);
    gs_buf_free(be, dslots);
    gs_buf_free(be, dbt);
    gs_buf_free(be, dkvl);
    gs_buf_free(be, kv.k);
    gs_buf_free(be, kv.v);
    gs_backend_free(be);
}

static void test_attention_malformed(void)
{
    gs_backend *be = kt_backend(2, 0);
    float *h = kt_rand(8 * 4 * 8, -1, 1);
    gs_mat q = kt_mat_up(be, h, 8, 4 * 8, 4 * 8), kv = kt_mat_up(be, h, 8, 2 * 8, 2 * 8);
    gs_mat out = kt_mat_up(be, h, 8, 4 * 8, 4 * 8);
    gs_attn_params p = {4, 2, 8, 0.3f, 1};
    int32_t cu_bad[3] = {0, 6, 5}, cu_long[2] = {0, 9}, cu_ok[3] = {0, 3, 8};
    int32_t *d1 = kt_up(be, cu_bad, sizeof cu_bad), *d2 = kt_up(be, cu_long, sizeof cu_long);
    int32_t *d3 = kt_up(be, cu_ok, sizeof cu_ok);
    GS_ASSERT_EQ(gs_k_attention(be, out, q, kv, kv, d1, 2, 8, &p), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_attention(be, out, q, kv, kv, d2, 1, 9, &p), GS_EINVAL); /* past rows */
    GS_ASSERT_EQ(gs_k_attention(be, out, q, kv, kv, d3, 2, 4, &p), GS_EINVAL); /* > max_len */
    GS_ASSERT_OK(gs_k_attention(be, out, q, kv, kv, d3, 2, 5, &p));
    p.n_kv_heads = 3; /* does not divide */
    GS_ASSERT_EQ(gs_k_attention(be, out, q, kv, kv, d3, 2, 5, &p), GS_EINVAL);
    p.n_kv_heads = 2;
    GS_ASSERT_EQ(gs_k_attention(be, q, q, kv, kv, d3, 2, 5, &p), GS_EINVAL);  /* out == q */
    GS_ASSERT_EQ(gs_k_attention(be, out, q, q, kv, d3, 2, 5, &p), GS_EINVAL); /* k width */
    free(h);
    gs_buf_free(be, q.data);
    gs_buf_free(be, kv.data);
    gs_buf_free(be, out.data);
    gs_buf_free(be, d1);
    gs_buf_free(be, d2);
    gs_buf_free(be, d3);
    gs_backend_free(be);
}

int main(void)
{
    GS_RUN(test_attention_contiguous);
    GS_RUN(test_attention_paged);
    GS_RUN(test_attention_malformed);
    return gs_test_summary();
}

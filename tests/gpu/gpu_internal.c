/* gpu_internal.c - the CUDA backend's own failure paths and the ops whose
 * check is not a numeric tolerance, on the GPU: sampling (gs_k_sample)
 * against a host model of its semantics (sample_model.h) and against the
 * CPU backend's gs_k_sample on the same logits, and bad indices found on
 * the device (GS_ERANGE at the next sync, never a crash). Rows go into the
 * same table as the ops (gt_row). Graphs are in gpu_graphs.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/gpu/gpu_util.h"
#include "tests/gpu/sample_model.h"

enum { H = 4096, VOCAB = 151552 };

/* ---- sampling ------------------------------------------------------------------ */

static gs_sample_row sample_defaults(void)
{
    gs_sample_row P;
    memset(&P, 0, sizeof P);
    P.top_p = 1.0f;
    P.repetition_penalty = 1.0f;
    return P;
}

/* gs_k_sample on `be` for R rows of V host logits (uploaded fresh: the op
 * overwrites them); penalties in CSR form (off NULL: none). Ids to out. */
static int sample_on(gs_backend *be, const float *logits, int R, int V, const gs_sample_row *P,
                     const int32_t *off, const int32_t *ids, const int32_t *cnt, int32_t *out)
{
    const int n_pen = off ? (off[R] > 0 ? off[R] : 1) : 0;
    float *d_l = gs_buf_alloc(be, sizeof(float) * (size_t)R * (size_t)V);
    gs_sample_row *d_p = gs_buf_alloc(be, sizeof *P * (size_t)R);
    int32_t *d_out = gs_buf_alloc(be, sizeof(int32_t) * (size_t)R);
    int32_t *d_off = off ? gs_buf_alloc(be, sizeof(int32_t) * (size_t)(R + 1)) : NULL;
    int32_t *d_ids = off ? gs_buf_alloc(be, sizeof(int32_t) * (size_t)n_pen) : NULL;
    int32_t *d_cnt = off ? gs_buf_alloc(be, sizeof(int32_t) * (size_t)n_pen) : NULL;
    int rc = !d_l || !d_p || !d_out || (off && (!d_off || !d_ids || !d_cnt)) ? GS_ENOMEM : 0;
    if (!rc)
        rc = gs_buf_upload(be, d_l, logits, sizeof(float) * (size_t)R * (size_t)V);
    if (!rc)
        rc = gs_buf_upload(be, d_p, P, sizeof *P * (size_t)R);
    if (!rc && off) {
        rc = gs_buf_upload(be, d_off, off, sizeof(int32_t) * (size_t)(R + 1));
        if (!rc && off[R] > 0)
            rc = gs_buf_upload(be, d_ids, ids, sizeof(int32_t) * (size_t)off[R]);
        if (!rc && off[R] > 0)
            rc = gs_buf_upload(be, d_cnt, cnt, sizeof(int32_t) * (size_t)off[R]);
    }
    if (!rc)
        rc = gs_k_sample(be, d_out, gs_mat_make(d_l, GS_DT_F32, R, V), d_p, d_off, d_ids, d_cnt);
    if (!rc)
        rc = gs_buf_download(be, out, d_out, sizeof(int32_t) * (size_t)R);
    gs_buf_free(be, d_l);
    gs_buf_free(be, d_p);
    gs_buf_free(be, d_out);
    gs_buf_free(be, d_off);
    gs_buf_free(be, d_ids);
    gs_buf_free(be, d_cnt);
    return rc;
}

/* Six configurations on a 151552 vocabulary: the GPU against the host
 * model, against itself (same seed, offset: same id) and against the CPU. */
static void test_sampling(gt_ctx *t)
{
    enum { R = 6 };
    const int V = VOCAB;
    float *logits = gt_rand((size_t)R * V, -10.0f, 10.0f);
    gs_sample_row P[R];
    for (int r = 0; r < R; r++) {
        P[r] = sample_defaults();
        P[r].seed = 1000 + (uint64_t)r;
        P[r].offset = 7;
    }
    P[1].repetition_penalty = 1.3f, P[1].presence_penalty = 0.5f, P[1].frequency_penalty = 0.2f;
    P[2].temperature = 0.8f, P[2].top_k = 1;
    P[3].temperature = 1.0f, P[3].top_k = 50, P[3].top_p = 0.9f;
    P[4].temperature = 0.7f, P[4].min_p = 0.1f;
    P[5].temperature = 1.3f, P[5].top_p = 0.5f, P[5].repetition_penalty = 1.1f;
    /* penalty lists: rows 1 and 5 penalise their own argmax and some others */
    int32_t off[R + 1] = {0}, ids[40], cnt[40];
    int n = 0;
    for (int r = 0; r < R; r++) {
        if (r == 1 || r == 5) {
            int best = 0;
            for (int i = 1; i < V; i++)
                if (logits[(size_t)r * V + i] > logits[(size_t)r * V + best])
                    best = i;
            ids[n] = best;
            cnt[n++] = 2;
            for (int j = 0; j < 9; j++) {
                ids[n] = (int32_t)(j * 9973 + 17);
                cnt[n++] = j % 3;
            }
        }
        off[r + 1] = n;
    }
    int32_t out[R] = {-2, -2, -2, -2, -2, -2}, again[R], cpu[R];
    int rc = sample_on(t->gpu, logits, R, V, P, off, ids, cnt, out);
    if (!rc)
        rc = sample_on(t->gpu, logits, R, V, P, off, ids, cnt, again);
    int rc_cpu = sample_on(t->cpu, logits, R, V, P, off, ids, cnt, cpu);
    if (rc || rc_cpu) {
        gt_fail(t, "sample", "6 rows x 151552", rc ? "run (cuda)" : "run (cpu)", rc ? rc : rc_cpu);
    } else {
        static const char *names[] = {"greedy",    "greedy + penalties",
                                      "top_k 1",   "top_k 50 top_p 0.9",
                                      "min_p 0.1", "top_p 0.5 + rep"};
        for (int r = 0; r < R; r++) {
            float *l = gt_xmalloc(sizeof(float) * (size_t)V);
            memcpy(l, logits + (size_t)r * V, sizeof(float) * (size_t)V);
            sm_result m = sm_model(l, V, &P[r], ids + off[r], cnt + off[r], off[r + 1] - off[r],
                                   gs_sample_uniform(P[r].seed, P[r].offset));
            char sh[64], det[160];
            snprintf(sh, sizeof sh, "%s, vocab %d", names[r], V);
            int ok;
            if (!m.p) {
                ok = out[r] == m.best;
                snprintf(det, sizeof det, "(cuda %d, cpu %d, host argmax %d)", out[r], cpu[r],
                         m.best);
            } else {
                /* kept: at or above the floor (1e-5 slack: the GPU's expf may differ
                 * from the host's by an ulp at the boundary) */
                float fv;
                memcpy(&fv, &m.floor, 4);
                ok = out[r] >= 0 && out[r] < V && m.p[out[r]] >= fv * (1.0f - 1e-5f);
                snprintf(det, sizeof det, "(cuda %d, cpu %d, host model %d%s, p %.3g, %d kept)",
                         out[r], cpu[r], m.draw, out[r] == m.draw ? "" : " differs (expf ulps?)",
                         out[r] >= 0 && out[r] < V ? (double)m.p[out[r]] : -1.0, m.kept);
            }
            ok = ok && again[r] == out[r]; /* same seed, offset, logits: same id */
            ok = ok && cpu[r] == m.draw;   /* the CPU uses the host's expf: exact */
            gt_row(t, "sample", sh, ok, det);
            free(m.p);
            free(l);
        }
    }
    free(logits);
}

/* Rows with nothing finite get -1 on both backends without an error; a
 * penalty id outside the vocabulary is a device error on the GPU
 * (GS_ERANGE at the next sync) and GS_EINVAL on the CPU. */
static void test_sampling_edges(gt_ctx *t)
{
    enum { R = 3 };
    const int V = VOCAB;
    float *l = gt_xmalloc(sizeof(float) * (size_t)R * V);
    for (int i = 0; i < V; i++) {
        l[i] = -INFINITY;
        l[(size_t)V + i] = i % 3 ? NAN : -INFINITY;
        l[(size_t)2 * V + i] = (float)(i % 1000) * 0.001f;
    }
    gs_sample_row P[R] = {sample_defaults(), sample_defaults(), sample_defaults()};
    P[1].temperature = 1.0f, P[2].temperature = 0.9f, P[2].seed = 5;
    int32_t g[R] = {-2, -2, -2}, c[R] = {-2, -2, -2};
    int rg = sample_on(t->gpu, l, R, V, P, NULL, NULL, NULL, g);
    int rs = rg ? rg : gs_backend_sync(t->gpu);
    int rcpu = sample_on(t->cpu, l, R, V, P, NULL, NULL, NULL, c);
    char det[96];
    snprintf(det, sizeof det, "(cuda %d %d %d rc %d/%d, cpu %d %d %d rc %d)", g[0], g[1], g[2], rg,
             rs, c[0], c[1], c[2], rcpu);
    gt_row(t, "sample", "all -inf / NaN rows -> -1, no error",
           !rg && !rs && !rcpu && g[0] == -1 && g[1] == -1 && c[0] == -1 && c[1] == -1 &&
               g[2] >= 0 && g[2] == c[2],
           det);

    int32_t off[R + 1] = {0, 0, 0, 2}, ids[2] = {3, V}, cnt[2] = {1, 1};
    P[2].presence_penalty = 1.0f;
    int r1 = sample_on(t->gpu, l, R, V, P, off, ids, cnt, g);
    int r2 = gs_backend_sync(t->gpu);
    int r3 = sample_on(t->cpu, l, R, V, P, off, ids, cnt, c);
    snprintf(det, sizeof det, "(cuda rc %d then %d, cpu rc %d)", r1, r2, r3);
    gt_row(t, "sample", "penalty id = vocab", r1 == GS_ERANGE && r2 == 0 && r3 == GS_EINVAL, det);
    free(l);
}

/* Many rows of LLM-like logits in the usual configurations: the ids of
 * the GPU and of the CPU backend. expf differs between CUDA and libm by
 * an ulp or two, which can move an id at a top-k / top-p boundary or at
 * the draw's target in rare cases: the count is printed, and the check
 * fails only above 1 in 64 rows. */
static void test_sampling_cpu_vs_gpu(gt_ctx *t)
{
    enum { R = 128, NCFG = 8 };
    const int V = VOCAB;
    float *l = gt_xmalloc(sizeof(float) * (size_t)R * V);
    for (size_t i = 0; i < (size_t)R * V; i++)
        l[i] = 8.0f * (gt_uniform(0.0f, 1.0f) + gt_uniform(0.0f, 1.0f) - 1.0f) - 2.0f;
    gs_sample_row P[R];
    int32_t off[R + 1], ids[R * 16], cnt[R * 16];
    int n = 0;
    off[0] = 0;
    for (int r = 0; r < R; r++) {
        float *row = l + (size_t)r * V;
        for (int j = 0; j < 12; j++) /* a few strong ids, some close to each other */
            row[gt_next() % (uint64_t)V] = 14.0f + gt_uniform(0.0f, 3.0f);
        P[r] = sample_defaults();
        P[r].seed = 42 + (uint64_t)r / NCFG, P[r].offset = (uint64_t)r * 3;
        switch (r % NCFG) {
        case 0: /* greedy */
            break;
        case 1: /* GLM's generation_config */
            P[r].temperature = 0.8f, P[r].top_k = 2, P[r].top_p = 0.6f;
            break;
        case 2:
            P[r].temperature = 1.0f;
            break;
        case 3:
            P[r].temperature = 1.0f, P[r].top_p = 0.9f;
            break;
        case 4:
            P[r].temperature = 0.7f, P[r].top_k = 50;
            break;
        case 5:
            P[r].temperature = 1.0f, P[r].min_p = 0.05f;
            break;
        case 6:
            P[r].temperature = 0.6f, P[r].top_k = 40, P[r].top_p = 0.95f,
            P[r].repetition_penalty = 1.1f, P[r].presence_penalty = 0.3f,
            P[r].frequency_penalty = 0.2f;
            break;
        default:
            P[r].temperature = 1.5f, P[r].top_p = 0.8f, P[r].repetition_penalty = 1.2f;
            break;
        }
        if (r % NCFG >= 6) /* 16 distinct ids, ascending, some output counts */
            for (int j = 0; j < 16; j++) {
                ids[n] = (int32_t)(j * 9001 + r);
                cnt[n++] = j % 3;
            }
        off[r + 1] = n;
    }
    int32_t g[R], c[R];
    int rg = sample_on(t->gpu, l, R, V, P, off, ids, cnt, g);
    int rc = sample_on(t->cpu, l, R, V, P, off, ids, cnt, c);
    int diff = 0, first = -1;
    for (int r = 0; r < R && !rg && !rc; r++)
        if (g[r] != c[r]) {
            diff++;
            first = first < 0 ? r : first;
        }
    char det[96];
    snprintf(det, sizeof det, "(%d of %d ids differ%s; limit %d)", diff, R,
             first >= 0 ? ", e.g. a row" : "", R / 64);
    if (first >= 0)
        printf("  cpu vs cuda: row %d (config %d): cuda %d, cpu %d\n", first, first % NCFG,
               g[first], c[first]);
    gt_row(t, "sample", "cpu vs cuda, 128 rows x 151552", !rg && !rc && diff <= R / 64, det);
    free(l);
}

/* Draw frequencies over a 64-id vocabulary vs the distribution. */
static void test_sampling_distribution(gt_ctx *t)
{
    const int V = 64, R = 16384, CALLS = 8; /* TV noise ~0.007 */
    float *l = gt_xmalloc(sizeof(float) * (size_t)R * V);
    double pr[64], z = 0;
    for (int i = 0; i < V; i++) {
        pr[i] = exp(-0.1 * i);
        z += pr[i];
    }
    for (int i = 0; i < V; i++)
        pr[i] /= z;
    gs_sample_row *P = gt_xmalloc(sizeof *P * (size_t)R);
    int32_t *o = gt_xmalloc(4 * (size_t)R);
    long counts[64] = {0};
    int rc = 0;
    for (int c = 0; c < CALLS && !rc; c++) {
        for (int r = 0; r < R; r++) {
            for (int i = 0; i < V; i++)
                l[(size_t)r * V + i] = (float)log(pr[i]);
            P[r] = sample_defaults();
            P[r].temperature = 1.0f;
            P[r].seed = 99;
            P[r].offset = (uint64_t)c * R + (uint64_t)r;
        }
        rc = sample_on(t->gpu, l, R, V, P, NULL, NULL, NULL, o);
        for (int r = 0; r < R && !rc; r++)
            if (o[r] >= 0 && o[r] < V)
                counts[o[r]]++;
    }
    double tv = 0;
    for (int i = 0; i < V; i++)
        tv += fabs((double)counts[i] / (R * CALLS) - pr[i]);
    tv *= 0.5;
    char det[64];
    snprintf(det, sizeof det, "(total variation %.4f, limit 0.02)", tv);
    gt_row(t, "sample", "131072 draws, 64 ids, exp(-0.1 i)", !rc && tv < 0.02, det);
    free(l);
    free(P);
    free(o);
}

/* ---- device-side index checks ------------------------------------------------------ */

static void test_bad_indices(gt_ctx *t)
{
    gs_backend *be = t->gpu;
    gs_weight *tab = NULL;
    int32_t *d = gs_buf_alloc(be, 64);
    void *out = gs_buf_alloc(be, 4 * 256 * 2), *kc = gs_buf_alloc(be, 4 * 16 * 256 * 2),
         *vc = gs_buf_alloc(be, 4 * 16 * 256 * 2);
    if (!d || !out || !kc || !vc || gs_weight_new_random(be, GS_DT_BF16, 100, 256, 1, 1, &tab)) {
        gt_fail(t, "bad index", "setup", "alloc", GS_ENOMEM);
        goto done;
    }
    gs_mat o = gs_mat_make(out, GS_DT_BF16, 4, 256);
    int32_t ids[4] = {0, 99, 100, -1};
    int rc = gs_buf_upload(be, d, ids, sizeof ids);
    int r_op = rc ? rc : gs_k_embed(be, o, tab, d);
    int r_sync = gs_backend_sync(be), r_again = gs_backend_sync(be);
    gt_row(t, "bad index", "embed ids 100, -1 of 100 rows",
           !rc && r_op == 0 && r_sync == GS_ERANGE && r_again == 0, "(GS_ERANGE at sync, once)");

    gs_kv_layer kv = {kc, vc, 4, 16, 2, 128};
    int32_t slots[4] = {0, 63, 64, -1};
    rc = gs_buf_upload(be, d, slots, sizeof slots);
    r_op = rc ? rc : gs_k_kv_store(be, &kv, o, o, d);
    r_sync = gs_backend_sync(be);
    gt_row(t, "bad index", "kv_store slot 64 of 64", !rc && r_op == 0 && r_sync == GS_ERANGE, "");

    /* seq 0: 20 keys over pages {1, 7}: page 7 does not exist */
    int32_t arr[8] = {0, 1, 20, 1, 7, 0, 0, 0}; /* cu_q[2], kv_len[1], bt[2] */
    rc = gs_buf_upload(be, d, arr, sizeof arr);
    gs_paged_batch b = {1, d, d + 2, d + 3, 2, 1, 20};
    gs_attn_params ap = {2, 2, 128, 0.088f, 1};
    gs_mat q = gs_mat_make(out, GS_DT_BF16, 1, 256);
    gs_mat oo = gs_mat_make((char *)out + 1024, GS_DT_BF16, 1, 256);
    r_op = rc ? rc : gs_k_attention_paged(be, oo, q, &kv, &b, &ap);
    r_sync = gs_backend_sync(be);
    gt_row(t, "bad index", "attention_paged page 7 of 4", !rc && r_op == 0 && r_sync == GS_ERANGE,
           "");

    /* host-visible shape errors stop in kernels.c */
    gs_mat wrong = gs_mat_make(out, GS_DT_BF16, 4, 255);
    gt_row(t, "bad args", "matmul cols mismatch -> GS_EINVAL",
           gs_k_matmul(be, o, wrong, tab, NULL, 0) == GS_EINVAL && gs_backend_sync(be) == 0, "");
done:
    gs_weight_free(be, tab);
    gs_buf_free(be, d);
    gs_buf_free(be, out);
    gs_buf_free(be, kc);
    gs_buf_free(be, vc);
}

int gt_internal_tests(gt_ctx *t)
{
    test_sampling(t);
    test_sampling_edges(t);
    test_sampling_cpu_vs_gpu(t);
    test_sampling_distribution(t);
    test_bad_indices(t);
    return 0;
}

/* gpu_internal.c - the CUDA backend's own APIs and failure paths, checked
 * on the GPU: sampling (kernels/cuda/sample.h) against a host model of the
 * same semantics and bad indices found on the device (GS_ERANGE at the next
 * sync, never a crash). Rows go into the same table as the ops (gt_row).
 * Graphs are in gpu_graphs.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/sample.h"
#include "tests/gpu/gpu_util.h"
#include "tests/gpu/sample_model.h"

enum { H = 4096, VOCAB = 151552 };


/* ---- sampling (host model: sample_model.h) ------------------------------------ */

static void test_sampling(gt_ctx *t)
{
    const int V = VOCAB, R = 6;
    float *logits = gt_rand((size_t)R * V, -10.0f, 10.0f);
    gs_cuda_sample_row P[6];
    memset(P, 0, sizeof P);
    for (int r = 0; r < R; r++) {
        P[r].top_p = 1.0f;
        P[r].repetition_penalty = 1.0f;
        P[r].seed = 1000 + (uint64_t)r;
        P[r].offset = 7;
    }
    P[1].repetition_penalty = 1.3f, P[1].presence_penalty = 0.5f, P[1].frequency_penalty = 0.2f;
    P[2].temperature = 0.8f, P[2].top_k = 1;
    P[3].temperature = 1.0f, P[3].top_k = 50, P[3].top_p = 0.9f;
    P[4].temperature = 0.7f, P[4].min_p = 0.1f;
    P[5].temperature = 1.3f, P[5].top_p = 0.5f, P[5].repetition_penalty = 1.1f;
    /* penalty lists: rows 1 and 5 penalise their own argmax and some others */
    int32_t off[7] = {0}, ids[40], cnt[40];
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
    float *d_logits = gs_buf_alloc(t->gpu, sizeof(float) * (size_t)R * V);
    gs_cuda_sample_row *d_par = gs_buf_alloc(t->gpu, sizeof P);
    int32_t *d_off = gs_buf_alloc(t->gpu, sizeof off), *d_ids = gs_buf_alloc(t->gpu, 4 * (size_t)n),
            *d_cnt = gs_buf_alloc(t->gpu, 4 * (size_t)n), *d_out = gs_buf_alloc(t->gpu, 4 * R);
    int32_t out[6] = {-2, -2, -2, -2, -2, -2}, again[6];
    int rc = !d_logits || !d_par || !d_off || !d_ids || !d_cnt || !d_out ? GS_ENOMEM : 0;
    gs_cuda_sample_args a = {R, V, d_logits, V, d_par, d_off, d_ids, d_cnt, d_out};
    for (int pass = 0; pass < 2 && !rc; pass++) {
        rc = gs_buf_upload(t->gpu, d_logits, logits, sizeof(float) * (size_t)R * V);
        if (!rc)
            rc = gs_buf_upload(t->gpu, d_par, P, sizeof P);
        if (!rc)
            rc = gs_buf_upload(t->gpu, d_off, off, sizeof off);
        if (!rc)
            rc = gs_buf_upload(t->gpu, d_ids, ids, 4 * (size_t)n);
        if (!rc)
            rc = gs_buf_upload(t->gpu, d_cnt, cnt, 4 * (size_t)n);
        if (!rc)
            rc = gs_cuda_sample(t->gpu, &a);
        if (!rc)
            rc = gs_buf_download(t->gpu, pass ? again : out, d_out, sizeof out);
    }
    if (rc) {
        gt_fail(t, "sample", "6 rows x 151552", "run", rc);
    } else {
        static const char *names[] = {"greedy",    "greedy + penalties",
                                      "top_k 1",   "top_k 50 top_p 0.9",
                                      "min_p 0.1", "top_p 0.5 + rep"};
        for (int r = 0; r < R; r++) {
            sm_result m =
                sm_model(logits + (size_t)r * V, V, &P[r], ids + off[r], cnt + off[r],
                         off[r + 1] - off[r], gs_cuda_sample_uniform(P[r].seed, P[r].offset));
            char sh[64], det[128];
            snprintf(sh, sizeof sh, "%s, vocab %d", names[r], V);
            int ok;
            if (!m.p) {
                ok = out[r] == m.best;
                snprintf(det, sizeof det, "(cuda %d, host argmax %d)", out[r], m.best);
            } else {
                /* kept: at or above the floor (1e-5 slack: the GPU's expf may differ
                 * from the host's by an ulp at the boundary) */
                float fv;
                memcpy(&fv, &m.floor, 4);
                ok = out[r] >= 0 && out[r] < V && m.p[out[r]] >= fv * (1.0f - 1e-5f);
                snprintf(det, sizeof det, "(cuda %d, host model %d%s, p %.3g, %d kept)", out[r],
                         m.draw, out[r] == m.draw ? "" : " differs (expf ulps?)",
                         out[r] >= 0 && out[r] < V ? (double)m.p[out[r]] : -1.0, m.kept);
            }
            ok = ok && again[r] == out[r]; /* same seed, offset, logits: same id */
            gt_row(t, "sample", sh, ok, det);
            free(m.p);
        }
    }
    /* an all -inf row: id -1 and GS_ERANGE at the next download */
    if (d_logits && d_out && d_par) {
        float *ninf = gt_xmalloc(sizeof(float) * (size_t)V);
        for (int i = 0; i < V; i++)
            ninf[i] = -INFINITY;
        gs_cuda_sample_args b = {1, V, d_logits, V, d_par, NULL, NULL, NULL, d_out};
        int32_t id = 0;
        int r1 = gs_buf_upload(t->gpu, d_logits, ninf, sizeof(float) * (size_t)V);
        int r2 = r1 ? r1 : gs_cuda_sample(t->gpu, &b);
        int r3 = r2 ? r2 : gs_buf_download(t->gpu, &id, d_out, 4);
        int r4 = gs_backend_sync(t->gpu);
        gt_row(t, "sample", "all -inf row", !r1 && !r2 && r3 == GS_ERANGE && id == -1 && r4 == 0,
            "(expects id -1, GS_ERANGE once)");
        free(ninf);
    }
    gs_buf_free(t->gpu, d_logits);
    gs_buf_free(t->gpu, d_par);
    gs_buf_free(t->gpu, d_off);
    gs_buf_free(t->gpu, d_ids);
    gs_buf_free(t->gpu, d_cnt);
    gs_buf_free(t->gpu, d_out);
    free(logits);
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
    gs_cuda_sample_row *P = gt_xmalloc(sizeof *P * (size_t)R);
    memset(P, 0, sizeof *P * (size_t)R);
    float *d_l = gs_buf_alloc(t->gpu, sizeof(float) * (size_t)R * V);
    gs_cuda_sample_row *d_p = gs_buf_alloc(t->gpu, sizeof *P * (size_t)R);
    int32_t *d_o = gs_buf_alloc(t->gpu, 4 * (size_t)R), *o = gt_xmalloc(4 * (size_t)R);
    long counts[64] = {0};
    int rc = !d_l || !d_p || !d_o ? GS_ENOMEM : 0;
    for (int c = 0; c < CALLS && !rc; c++) {
        for (int r = 0; r < R; r++) {
            for (int i = 0; i < V; i++)
                l[(size_t)r * V + i] = (float)log(pr[i]);
            P[r].temperature = 1.0f;
            P[r].top_p = 1.0f;
            P[r].repetition_penalty = 1.0f;
            P[r].seed = 99;
            P[r].offset = (uint64_t)c * R + (uint64_t)r;
        }
        gs_cuda_sample_args a = {R, V, d_l, V, d_p, NULL, NULL, NULL, d_o};
        rc = gs_buf_upload(t->gpu, d_l, l, sizeof(float) * (size_t)R * V);
        if (!rc)
            rc = gs_buf_upload(t->gpu, d_p, P, sizeof *P * (size_t)R);
        if (!rc)
            rc = gs_cuda_sample(t->gpu, &a);
        if (!rc)
            rc = gs_buf_download(t->gpu, o, d_o, 4 * (size_t)R);
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
    gs_buf_free(t->gpu, d_l);
    gs_buf_free(t->gpu, d_p);
    gs_buf_free(t->gpu, d_o);
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
    gt_row(t, "bad index", "attention_paged page 7 of 4", !rc && r_op == 0 && r_sync == GS_ERANGE, "");

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
    test_sampling_distribution(t);
    test_bad_indices(t);
    return 0;
}

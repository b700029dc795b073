/* gpu_graphs.c - graph capture / replay on the GPU (kernels.h gs_graph_*)
 * against eager results, bit for bit, and the calls a capture refuses.
 * Rows go into the same table as the ops (gt_row). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/gpu/gpu_util.h"

enum { H = 4096 };

/* ---- graphs -------------------------------------------------------------------- */

static int step(gs_backend *be, gs_mat x, gs_mat h, gs_mat o, const gs_weight *w, const gs_vec *nw)
{
    int rc = gs_k_rmsnorm(be, h, x, nw, 1e-5f);
    if (!rc)
        rc = gs_k_matmul(be, o, h, w, NULL, 0);
    if (!rc)
        rc = gs_k_add_rmsnorm(be, h, x, o, nw, 1e-5f);
    return rc;
}

/* Eager vs captured-and-replayed, m = 4 (GEMV path) and m = 16 (cuBLASLt). */
static void graph_case(gt_ctx *t, int m)
{
    gs_backend *be = t->gpu;
    gs_cuda_graphs *g = NULL;
    gs_weight *w = NULL;
    gs_vec nw = {NULL, 0};
    float *x0 = gt_rand((size_t)m * H, -2, 2), *x1 = gt_rand((size_t)m * H, -2, 2);
    float *ones = gt_xmalloc(sizeof(float) * H);
    for (int i = 0; i < H; i++)
        ones[i] = 1.0f + 0.001f * (float)(i % 7);
    const size_t bytes = (size_t)m * H * 2;
    const int32_t key = gs_cuda_graph_bucket(m);
    uint16_t *hb = gt_xmalloc(bytes), *ref = gt_xmalloc(bytes), *got = gt_xmalloc(bytes);
    void *dx = gs_buf_alloc(be, bytes), *dh = gs_buf_alloc(be, bytes),
         *dout = gs_buf_alloc(be, bytes);
    gs_mat x = gs_mat_make(dx, GS_DT_BF16, m, H), h = gs_mat_make(dh, GS_DT_BF16, m, H),
           o = gs_mat_make(dout, GS_DT_BF16, m, H);
    int rc = gs_cuda_graphs_new(be, &g);
    if (!rc)
        rc = gs_weight_new_random(be, GS_DT_BF16, H, H, 5, 1.0f / 64, &w);
    if (!rc)
        rc = gs_vec_new(be, ones, H, &nw);
    if (!rc && (!dx || !dh || !dout))
        rc = GS_ENOMEM;
    int ok_bits = 1, ok_err = 1;
    const float *inputs[2] = {x0, x1};
    for (int it = 0; it < 2 && !rc; it++) {
        gs_f32_to_bf16_row(inputs[it], hb, (size_t)m * H);
        /* eager */
        rc = gs_buf_upload(be, dx, hb, bytes);
        if (!rc)
            rc = step(be, x, h, o, w, &nw);
        if (!rc)
            rc = gs_buf_download(be, ref, dh, bytes);
        /* capture once (first iteration), replay every iteration */
        if (!rc && it == 0) {
            rc = gs_cuda_graph_begin(g, key);
            if (!rc) {
                /* refused inside a capture, without breaking it */
                ok_err = gs_buf_upload(be, dx, hb, bytes) != 0 && gs_backend_sync(be) != 0 &&
                         gs_buf_alloc(be, 64) == NULL;
                rc = step(be, x, h, o, w, &nw);
                if (rc)
                    gs_cuda_graph_abort(g);
                else
                    rc = gs_cuda_graph_end(g, key);
            }
        }
        if (!rc)
            rc = gs_buf_upload(be, dx, hb, bytes);
        if (!rc)
            rc = gs_buf_zero(be, dh, bytes);
        if (!rc)
            rc = gs_cuda_graph_launch(g, key);
        if (!rc)
            rc = gs_buf_download(be, got, dh, bytes);
        if (!rc && memcmp(ref, got, bytes) != 0)
            ok_bits = 0;
    }
    char sh[64];
    snprintf(sh, sizeof sh, "norm+matmul+add_norm m=%d, 2 inputs", m);
    if (rc) {
        gt_fail(t, "graph", sh, "run", rc);
    } else {
        gt_row(t, "graph", sh, ok_bits, "(replay == eager, bit for bit)");
        gt_row(t, "graph", "upload/sync/alloc refused in capture", ok_err, "");
        gs_cuda_graph_invalidate(g, -1);
        gt_row(t, "graph", "launch after invalidate",
            gs_cuda_graph_launch(g, key) == GS_ENOENT && !gs_cuda_graph_has(g, key), "(GS_ENOENT)");
    }
    gs_cuda_graphs_free(g);
    gs_weight_free(be, w);
    gs_vec_free(be, &nw);
    gs_buf_free(be, dx);
    gs_buf_free(be, dh);
    gs_buf_free(be, dout);
    free(x0);
    free(x1);
    free(ones);
    free(hb);
    free(ref);
    free(got);
}

static void test_graphs(gt_ctx *t)
{
    graph_case(t, 4);
    graph_case(t, 16);
    gt_row(t, "graph", "buckets 1 3 5 9 65 300",
        gs_cuda_graph_bucket(1) == 1 && gs_cuda_graph_bucket(3) == 4 &&
            gs_cuda_graph_bucket(5) == 8 && gs_cuda_graph_bucket(9) == 16 &&
            gs_cuda_graph_bucket(65) == 96 && gs_cuda_graph_bucket(300) == 384,
        "");
}

int gt_graph_tests(gt_ctx *t)
{
    test_graphs(t);
    return 0;
}

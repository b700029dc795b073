/* test_kernels_vs_cpu.c - every op of kernels.h on the CUDA backend against
 * the CPU backend, on random inputs at the real GLM-4.6V-Flash shapes
 * (text hidden 4096, 32 / 2 heads of 128, intermediate 13696, vocab
 * 151552; vision hidden 1536, 12 heads, MLP 4096; KV pages of 16 tokens).
 * Prints one table (op, shape, max abs error, error relative to max |ref|,
 * tolerance from tolerances.h, pass) and returns non-zero when any row
 * fails. The internal CUDA APIs (sampling, graphs, device-side index
 * checks) are tested in gpu_internal.c; quantized weights, the memory cap
 * and the F16 path in gpu_quant.c. Needs a GPU: run through
 * tests/gpu/run.sh, never from ctest.
 *
 * Inputs are rounded to BF16 on the host first, so both backends start
 * from identical values (CPU: F32 activations, CUDA: BF16). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/gpu/gpu_util.h"

enum { H = 4096, NH = 32, NKV = 2, HD = 128, INTER = 13696, VOCAB = 151552 };
enum { VH = 1536, VNH = 12, VMLP = 4096, PAGE = 16 };

int gt_internal_tests(gt_ctx *t); /* gpu_internal.c */
int gt_graph_tests(gt_ctx *t);    /* gpu_graphs.c */
int gt_quant_tests(gt_ctx *t);    /* gpu_quant.c */

typedef struct {
    gs_weight *c, *g;
} gt_w;

typedef struct {
    gs_vec c, g;
} gt_vec;

/* Both results of one op; prints a FAIL row when either failed. */
static int both(gt_ctx *t, const char *op, const char *shape, int rc_c, int rc_g)
{
    if (rc_c || rc_g) {
        gt_fail(t, op, shape, rc_c ? "cpu op failed" : "cuda op failed", rc_c ? rc_c : rc_g);
        return 0;
    }
    return 1;
}

static gt_w w_random(gt_ctx *t, int64_t rows, int64_t cols, uint64_t seed, float scale)
{
    gt_w w = {NULL, NULL};
    if (gs_weight_new_random(t->cpu, GS_DT_BF16, rows, cols, seed, scale, &w.c) ||
        gs_weight_new_random(t->gpu, GS_DT_BF16, rows, cols, seed, scale, &w.g))
        fprintf(stderr, "weight_new_random [%lld, %lld] failed\n", (long long)rows,
                (long long)cols);
    return w;
}

static gt_w w_host(gt_ctx *t, int64_t rows, int64_t cols, gs_dtype dt, float scale)
{
    gt_w w = {NULL, NULL};
    float *f = gt_rand((size_t)(rows * cols), -scale, scale);
    void *src = f;
    uint16_t *h = NULL;
    if (dt != GS_DT_F32) {
        h = gt_xmalloc((size_t)(rows * cols) * 2);
        if (dt == GS_DT_BF16)
            gs_f32_to_bf16_row(f, h, (size_t)(rows * cols));
        else
            gs_f32_to_f16_row(f, h, (size_t)(rows * cols));
        src = h;
    }
    if (gs_weight_new(t->cpu, src, dt, rows, cols, &w.c) ||
        gs_weight_new(t->gpu, src, dt, rows, cols, &w.g))
        fprintf(stderr, "weight_new [%lld, %lld] failed\n", (long long)rows, (long long)cols);
    free(f);
    free(h);
    return w;
}

static void w_free(gt_ctx *t, gt_w *w)
{
    gs_weight_free(t->cpu, w->c);
    gs_weight_free(t->gpu, w->g);
    w->c = w->g = NULL;
}

static gt_vec v_rand(gt_ctx *t, int64_t n, float lo, float hi)
{
    gt_vec v;
    memset(&v, 0, sizeof v);
    float *h = gt_rand((size_t)n, lo, hi);
    if (gs_vec_new(t->cpu, h, n, &v.c) || gs_vec_new(t->gpu, h, n, &v.g))
        fprintf(stderr, "vec_new %lld failed\n", (long long)n);
    free(h);
    return v;
}

static void v_free(gt_ctx *t, gt_vec *v)
{
    gs_vec_free(t->cpu, &v->c);
    gs_vec_free(t->gpu, &v->g);
}

/* ---- GEMM ---------------------------------------------------------------- */

static void mm_case(gt_ctx *t, const char *name, gt_w w, const gt_vec *bias, int64_t m,
                    int64_t xstride, int out_f32, unsigned flags)
{
    const int64_t n = gs_weight_rows(w.c), k = gs_weight_cols(w.c);
    char sh[64];
    snprintf(sh, sizeof sh, "%s m=%lld n=%lld k=%lld%s%s%s", name, (long long)m, (long long)n,
             (long long)k, bias ? " +b" : "", flags & GS_MM_ACCUM ? " +=" : "",
             xstride > k ? " strided" : "");
    gt_mat x = gt_mat_rand(t, m, k, xstride, -1.0f, 1.0f);
    float *init = gt_rand((size_t)(m * n), -1.0f, 1.0f);
    gt_mat o = gt_mat_new(t, m, n, n, out_f32 ? GS_DT_F32 : -1, init);
    free(init);
    if (x.c.data && x.g.data && o.c.data && o.g.data && w.c && w.g &&
        both(t, "matmul", sh, gs_k_matmul(t->cpu, o.c, x.c, w.c, bias ? &bias->c : NULL, flags),
             gs_k_matmul(t->gpu, o.g, x.g, w.g, bias ? &bias->g : NULL, flags)))
        gt_check(t, out_f32 ? "matmul_f32" : "matmul", "matmul", sh, o);
    else if (!x.c.data || !o.c.data || !w.c)
        gt_fail(t, "matmul", sh, "setup", GS_ENOMEM);
    gt_mat_free(t, &x);
    gt_mat_free(t, &o);
}

static void test_matmul(gt_ctx *t, gt_w *table)
{
    gt_w qkv = w_random(t, H + 2 * NKV * HD, H, 11, 1.0f / 64);
    gt_vec qkv_b = v_rand(t, H + 2 * NKV * HD, -0.5f, 0.5f);
    const int64_t ms[] = {1, 3, 8, 64, 257};
    for (unsigned i = 0; i < sizeof ms / sizeof ms[0]; i++)
        mm_case(t, "qkv", qkv, &qkv_b, ms[i], H, 0, 0);
    mm_case(t, "qkv", qkv, &qkv_b, 64, H + 512, 0, 0);
    v_free(t, &qkv_b);
    w_free(t, &qkv);

    gt_w o = w_random(t, H, H, 12, 1.0f / 64);
    mm_case(t, "o_proj", o, NULL, 1, H, 0, GS_MM_ACCUM);
    mm_case(t, "o_proj", o, NULL, 100, H, 0, GS_MM_ACCUM);
    w_free(t, &o);

    gt_w gu = w_random(t, 2 * INTER, H, 13, 1.0f / 64);
    mm_case(t, "gate_up", gu, NULL, 1, H, 0, 0);
    mm_case(t, "gate_up", gu, NULL, 5, H, 0, 0);
    w_free(t, &gu);
    gt_w dn = w_random(t, H, INTER, 14, 1.0f / 117);
    mm_case(t, "down", dn, NULL, 1, INTER, 0, 0);
    mm_case(t, "down", dn, NULL, 33, INTER, 0, 0);
    w_free(t, &dn);

    mm_case(t, "lm_head", *table, NULL, 1, H, 1, 0);
    mm_case(t, "lm_head", *table, NULL, 9, H, 1, 0);
    mm_case(t, "lm_head", *table, NULL, 20, H, 1, 0);

    /* uploaded (not random) weights, F32 and F16 sources; vision shapes */
    gt_w vq = w_host(t, 3 * VH, VH, GS_DT_F32, 1.0f / 40);
    gt_vec vb = v_rand(t, 3 * VH, -0.5f, 0.5f);
    mm_case(t, "vit_qkv", vq, &vb, 1100, VH, 0, 0);
    mm_case(t, "vit_qkv", vq, &vb, 2, VH, 0, 0);
    v_free(t, &vb);
    w_free(t, &vq);
    gt_w vp = w_host(t, VH, VMLP, GS_DT_F16, 1.0f / 64);
    mm_case(t, "vit_down", vp, NULL, 577, VMLP, 0, GS_MM_ACCUM);
    w_free(t, &vp);
}

/* ---- norms and elementwise --------------------------------------------------- */

static void test_norms(gt_ctx *t)
{
    const struct {
        int64_t m, n;
    } s[] = {{1, H}, {77, H}, {1100, VH}};
    for (unsigned i = 0; i < sizeof s / sizeof s[0]; i++) {
        char sh[64];
        gt_vec w = v_rand(t, s[i].n, 0.5f, 1.5f), b = v_rand(t, s[i].n, -0.2f, 0.2f);
        gt_mat x = gt_mat_rand(t, s[i].m, s[i].n, s[i].n, -3.0f, 3.0f);
        gt_mat r = gt_mat_rand(t, s[i].m, s[i].n, s[i].n, -3.0f, 3.0f);
        gt_mat o = gt_mat_new(t, s[i].m, s[i].n, s[i].n, -1, NULL);
        snprintf(sh, sizeof sh, "[%lld, %lld]", (long long)s[i].m, (long long)s[i].n);
        if (both(t, "rmsnorm", sh, gs_k_rmsnorm(t->cpu, o.c, x.c, &w.c, 1e-5f),
                 gs_k_rmsnorm(t->gpu, o.g, x.g, &w.g, 1e-5f)))
            gt_check(t, "rmsnorm", "rmsnorm", sh, o);
        /* residual: resid += x, out = rmsnorm(resid); check both */
        if (both(t, "add_rmsnorm", sh, gs_k_add_rmsnorm(t->cpu, o.c, r.c, x.c, &w.c, 1e-5f),
                 gs_k_add_rmsnorm(t->gpu, o.g, r.g, x.g, &w.g, 1e-5f))) {
            gt_check(t, "add_rmsnorm", "add_rmsnorm", sh, o);
            gt_check(t, "add", "add_rmsnorm.res", sh, r);
        }
        if (both(t, "layernorm", sh, gs_k_layernorm(t->cpu, o.c, x.c, &w.c, &b.c, 1e-5f),
                 gs_k_layernorm(t->gpu, o.g, x.g, &w.g, &b.g, 1e-5f)))
            gt_check(t, "layernorm", "layernorm", sh, o);
        /* in place */
        snprintf(sh, sizeof sh, "[%lld, %lld] in place", (long long)s[i].m, (long long)s[i].n);
        if (both(t, "rmsnorm", sh, gs_k_rmsnorm(t->cpu, x.c, x.c, &w.c, 1e-6f),
                 gs_k_rmsnorm(t->gpu, x.g, x.g, &w.g, 1e-6f)))
            gt_check(t, "rmsnorm", "rmsnorm", sh, x);
        if (both(t, "layernorm", sh, gs_k_layernorm(t->cpu, x.c, x.c, &w.c, NULL, 1e-5f),
                 gs_k_layernorm(t->gpu, x.g, x.g, &w.g, NULL, 1e-5f)))
            gt_check(t, "layernorm", "layernorm (no b)", sh, x);
        gt_mat_free(t, &x);
        gt_mat_free(t, &r);
        gt_mat_free(t, &o);
        v_free(t, &w);
        v_free(t, &b);
    }
}

static void test_elementwise(gt_ctx *t)
{
    const int64_t ms[] = {1, 77};
    for (unsigned i = 0; i < 2; i++) {
        const int64_t m = ms[i];
        char sh[64];
        gt_mat gu = gt_mat_rand(t, m, 2 * INTER, 2 * INTER, -6.0f, 6.0f);
        gt_mat a = gt_mat_new(t, m, INTER, INTER, -1, NULL);
        snprintf(sh, sizeof sh, "[%lld, %d] -> [%lld, %d]", (long long)m, 2 * INTER, (long long)m,
                 INTER);
        if (both(t, "silu_mul", sh, gs_k_silu_mul(t->cpu, a.c, gu.c),
                 gs_k_silu_mul(t->gpu, a.g, gu.g)))
            gt_check(t, "silu_mul", "silu_mul", sh, a);
        gt_mat x = gt_mat_rand(t, m, H, H, -4.0f, 4.0f), y = gt_mat_rand(t, m, H, H, -4.0f, 4.0f);
        gt_mat o = gt_mat_new(t, m, H, H, -1, NULL);
        snprintf(sh, sizeof sh, "[%lld, %d]", (long long)m, H);
        if (both(t, "add", sh, gs_k_add(t->cpu, o.c, x.c, y.c), gs_k_add(t->gpu, o.g, x.g, y.g)))
            gt_check(t, "add", "add", sh, o);
        if (both(t, "gelu", sh, gs_k_gelu(t->cpu, o.c, x.c), gs_k_gelu(t->gpu, o.g, x.g)))
            gt_check(t, "gelu", "gelu", sh, o);
        gt_mat_free(t, &gu);
        gt_mat_free(t, &a);
        gt_mat_free(t, &x);
        gt_mat_free(t, &y);
        gt_mat_free(t, &o);
    }
    /* softmax over a vocabulary row (F32 out) and short rows (act out, in place) */
    gt_mat l = gt_mat_rand(t, 4, VOCAB, VOCAB, -20.0f, 20.0f);
    gt_mat p = gt_mat_new(t, 4, VOCAB, VOCAB, GS_DT_F32, NULL);
    if (both(t, "softmax", "[4, 151552] f32 out", gs_k_softmax(t->cpu, p.c, l.c),
             gs_k_softmax(t->gpu, p.g, l.g)))
        gt_check(t, "softmax_f32", "softmax", "[4, 151552] f32 out", p);
    gt_mat_free(t, &l);
    gt_mat_free(t, &p);
    gt_mat s = gt_mat_rand(t, 33, 1000, 1000, -8.0f, 8.0f);
    if (both(t, "softmax", "[33, 1000] in place", gs_k_softmax(t->cpu, s.c, s.c),
             gs_k_softmax(t->gpu, s.g, s.g)))
        gt_check(t, "softmax", "softmax", "[33, 1000] in place", s);
    gt_mat_free(t, &s);
    /* F32 pixels -> act (the vision input path) */
    float *px = gt_rand(50 * 1176, -2.0f, 2.0f);
    gt_mat f = gt_mat_new(t, 50, 1176, 1176, GS_DT_F32, px);
    gt_mat d = gt_mat_new(t, 50, 1176, 1176, -1, NULL);
    if (both(t, "copy", "[50, 1176] f32 -> act", gs_k_copy(t->cpu, d.c, f.c),
             gs_k_copy(t->gpu, d.g, f.g)))
        gt_check(t, "copy", "copy", "[50, 1176] f32 -> act", d);
    free(px);
    gt_mat_free(t, &f);
    gt_mat_free(t, &d);
}

/* ---- gathers ---------------------------------------------------------------- */

static void test_gathers(gt_ctx *t, gt_w *table)
{
    int32_t ids[40];
    for (int i = 0; i < 40; i++)
        ids[i] = (int32_t)(gt_next() % VOCAB);
    ids[0] = 0;
    ids[1] = VOCAB - 1;
    gt_i32 d = gt_i32_new(t, ids, 40);
    gt_mat e = gt_mat_new(t, 40, H, H, -1, NULL);
    if (d.c && both(t, "embed", "40 ids, [151552, 4096]", gs_k_embed(t->cpu, e.c, table->c, d.c),
                    gs_k_embed(t->gpu, e.g, table->g, d.g)))
        gt_check(t, "embed", "embed", "40 ids, [151552, 4096]", e);
    gt_i32_free(t, &d);
    gt_mat_free(t, &e);

    gt_mat x = gt_mat_rand(t, 300, H, H, -1.0f, 1.0f);
    gt_mat o = gt_mat_new(t, 70, H, H + 64, -1, NULL);
    int32_t idx[70];
    for (int i = 0; i < 70; i++)
        idx[i] = (int32_t)(gt_next() % 300);
    gt_i32 di = gt_i32_new(t, idx, 70);
    if (di.c &&
        both(t, "gather_rows", "70 of [300, 4096]", gs_k_gather_rows(t->cpu, o.c, x.c, di.c),
             gs_k_gather_rows(t->gpu, o.g, x.g, di.g)))
        gt_check(t, "gather_rows", "gather_rows", "70 of [300, 4096], strided out", o);
    gt_i32_free(t, &di);
    gt_mat_free(t, &x);
    gt_mat_free(t, &o);
}

/* ---- rope and position embedding ---------------------------------------------- */

/* Patch coordinates of an (gh, gw) image in the processor's 2x2 block order. */
static void block_order(int gh, int gw, int32_t *hh, int32_t *ww)
{
    int i = 0;
    for (int bh = 0; bh < gh / 2; bh++)
        for (int bw = 0; bw < gw / 2; bw++)
            for (int mh = 0; mh < 2; mh++)
                for (int mw = 0; mw < 2; mw++, i++) {
                    hh[i] = 2 * bh + mh;
                    ww[i] = 2 * bw + mw;
                }
}

static void test_rope(gt_ctx *t)
{
    const int m = 300, w = H + 2 * NKV * HD;
    int32_t *pos = gt_xmalloc(sizeof(int32_t) * 3 * m);
    for (int i = 0; i < m; i++) {
        const int base = i < m / 2 ? 0 : 100000; /* large angles too */
        pos[i] = base + i;
        pos[m + i] = base + i / 7;
        pos[2 * m + i] = base + i % 11;
    }
    gt_i32 dp = gt_i32_new(t, pos, 3 * m);
    gt_mat qkv = gt_mat_rand(t, m, w, w, -2.0f, 2.0f);
    gs_rope_text_params rq = {NH, HD, 64, {8, 12, 12}, 500000.0f}, rk = rq;
    rk.n_heads = NKV;
    gt_mat q = gt_cols(qkv, 0, H), k = gt_cols(qkv, H, NKV * HD);
    if (dp.c &&
        both(t, "rope_text", "q", gs_k_rope_text(t->cpu, q.c, dp.c, &rq),
             gs_k_rope_text(t->gpu, q.g, dp.g, &rq)) &&
        both(t, "rope_text", "k", gs_k_rope_text(t->cpu, k.c, dp.c, &rk),
             gs_k_rope_text(t->gpu, k.g, dp.g, &rk)))
        gt_check(t, "rope_text", "rope_text", "qkv [300, 4608], pos to 100299", qkv);
    gt_mat_free(t, &qkv);
    gt_i32_free(t, &dp);
    free(pos);

    /* vision: one 22 x 50 image */
    const int gh = 22, gw = 50, n = gh * gw, vw = 3 * VH;
    int32_t *p2 = gt_xmalloc(sizeof(int32_t) * 2 * n);
    block_order(gh, gw, p2, p2 + n);
    gt_i32 dv = gt_i32_new(t, p2, 2 * n);
    gt_mat vqkv = gt_mat_rand(t, n, vw, vw, -2.0f, 2.0f);
    gs_rope_vision_params rv = {VNH, HD, 10000.0f};
    gt_mat vq = gt_cols(vqkv, 0, VH), vk = gt_cols(vqkv, VH, VH);
    if (dv.c &&
        both(t, "rope_vision", "q", gs_k_rope_vision(t->cpu, vq.c, dv.c, &rv),
             gs_k_rope_vision(t->gpu, vq.g, dv.g, &rv)) &&
        both(t, "rope_vision", "k", gs_k_rope_vision(t->cpu, vk.c, dv.c, &rv),
             gs_k_rope_vision(t->gpu, vk.g, dv.g, &rv)))
        gt_check(t, "rope_vision", "rope_vision", "qkv [1100, 4608], grid 22x50", vqkv);
    gt_mat_free(t, &vqkv);
    gt_i32_free(t, &dv);
    free(p2);
}

static void test_posembed(gt_ctx *t)
{
    const int n1 = 22 * 50, n2 = 24 * 24, n = n1 + n2, side = 24;
    int32_t *hw = gt_xmalloc(sizeof(int32_t) * 4 * n);
    block_order(22, 50, hw, hw + n);
    int32_t tmp_h[576], tmp_w[576];
    block_order(24, 24, tmp_h, tmp_w);
    for (int i = 0; i < n; i++) {
        if (i >= n1) {
            hw[i] = tmp_h[i - n1];
            hw[n + i] = tmp_w[i - n1];
        }
        hw[2 * n + i] = i < n1 ? 22 : 24;
        hw[3 * n + i] = i < n1 ? 50 : 24;
    }
    gt_i32 d = gt_i32_new(t, hw, 4 * n);
    gt_w tab = w_random(t, side * side, VH, 21, 2.0f);
    gt_mat x = gt_mat_rand(t, n, VH, VH, -1.0f, 1.0f);
    if (d.c && tab.c &&
        both(t, "posembed_add", "", gs_k_posembed_add(t->cpu, x.c, tab.c, side, d.c),
             gs_k_posembed_add(t->gpu, x.g, tab.g, side, d.g)))
        gt_check(t, "posembed_add", "posembed_add", "[1676, 1536], 22x50 + 24x24", x);
    gt_mat_free(t, &x);
    w_free(t, &tab);
    gt_i32_free(t, &d);
    free(hw);
}

/* ---- attention ------------------------------------------------------------------- */

static void attn_case(gt_ctx *t, const char *name, int nh, int nkv, const int32_t *cu, int n_seqs,
                      int causal)
{
    const int m = cu[n_seqs], qd = nh * HD, kd = nkv * HD, w = qd + 2 * kd;
    int max_len = 0;
    for (int s = 0; s < n_seqs; s++)
        if (cu[s + 1] - cu[s] > max_len)
            max_len = cu[s + 1] - cu[s];
    char sh[64];
    snprintf(sh, sizeof sh, "%s %d/%d heads, %d seqs, max %d%s", name, nh, nkv, n_seqs, max_len,
             causal ? " causal" : "");
    gt_mat qkv = gt_mat_rand(t, m, w, w, -2.0f, 2.0f);
    gt_mat o = gt_mat_new(t, m, qd, qd, -1, NULL);
    gt_i32 dc = gt_i32_new(t, cu, n_seqs + 1);
    gs_attn_params ap = {nh, nkv, HD, 1.0f / sqrtf((float)HD), causal};
    gt_mat q = gt_cols(qkv, 0, qd), k = gt_cols(qkv, qd, kd), v = gt_cols(qkv, qd + kd, kd);
    if (dc.c && both(t, "attention", sh,
                     gs_k_attention(t->cpu, o.c, q.c, k.c, v.c, dc.c, n_seqs, max_len, &ap),
                     gs_k_attention(t->gpu, o.g, q.g, k.g, v.g, dc.g, n_seqs, max_len, &ap)))
        gt_check(t, "attention", "attention", sh, o);
    gt_mat_free(t, &qkv);
    gt_mat_free(t, &o);
    gt_i32_free(t, &dc);
}

static void test_attention(gt_ctx *t)
{
    const int32_t vit[] = {0, 1100, 1676};
    attn_case(t, "vit", VNH, VNH, vit, 2, 0);
    const int32_t txt[] = {0, 300, 377, 378};
    attn_case(t, "text", NH, NKV, txt, 3, 1);
    const int32_t tiny[] = {0, 70, 75};
    attn_case(t, "tiny", 2, 1, tiny, 2, 1);
}

int gt_paged_tests(gt_ctx *t); /* test_paged.c */

int main(int argc, char **argv)
{
    gt_ctx t;
    memset(&t, 0, sizeof t);
    gs_diag d;
    gs_backend_params pc = {.kind = GS_BACKEND_CPU};
    const char *dev = getenv("GS_CUDA_DEVICE");
    gs_backend_params pg = {.kind = GS_BACKEND_CUDA, .device = dev ? atoi(dev) : 0};
    if (gs_backend_new(&pc, &t.cpu, &d)) {
        fprintf(stderr, "cpu backend: %s\n", d.msg);
        return 2;
    }
    if (gs_backend_new(&pg, &t.gpu, &d)) {
        fprintf(stderr, "cuda backend: %s\n", d.msg);
        gs_backend_free(t.cpu);
        return 2;
    }
    printf("CUDA backend: %s vs CPU backend: %s\n\n", gs_backend_name(t.gpu),
           gs_backend_name(t.cpu));
    gt_header();

    gt_w table = w_random(&t, VOCAB, H, 7, 0.05f); /* embed_tokens and lm_head shape */
    if (!table.c || !table.g) {
        gt_fail(&t, "weight_new_random", "[151552, 4096]", "setup", GS_ENOMEM);
    } else {
        test_gathers(&t, &table);
        test_matmul(&t, &table);
    }
    w_free(&t, &table);
    test_norms(&t);
    test_elementwise(&t);
    test_rope(&t);
    test_posembed(&t);
    test_attention(&t);
    gt_paged_tests(&t);
    gt_quant_tests(&t);
    if (argc < 2 || strcmp(argv[1], "--ops-only") != 0) {
        gt_internal_tests(&t);
        gt_graph_tests(&t);
    }

    printf("\n%d passed, %d failed\n", t.n_pass, t.n_fail);
    gs_backend_free(t.gpu);
    gs_backend_free(t.cpu);
    return t.n_fail ? 1 : 0;
}

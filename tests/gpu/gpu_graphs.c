/* gpu_graphs.c - graphs on the GPU (kernels.h gs_graph_*: CUDA stream
 * capture), one table row per check (gt_row):
 *  - replay == eager, bit for bit, for two inputs uploaded into the same
 *    buffers: rmsnorm + matmul with bias + add_rmsnorm at m = 4 (GEMV, F32
 *    bias) and m = 16 (cuBLASLt, BF16 bias copy in the epilogue); a decode
 *    step of 4 sequences (text M-RoPE with stack params, kv_store, split-KV
 *    paged attention with a stack gs_paged_batch, lm_head to F32, copy,
 *    greedy gs_k_sample);
 *  - while capturing: upload, download, zero, sync, alloc refuse, nested
 *    begin is GS_EBUSY, launch is refused, a validation error is reported,
 *    a free is deferred, and the capture still ends cleanly;
 *  - abort (eager ops work again), an empty graph;
 *  - staleness: re-uploading a bias whose BF16 copy a graph used makes
 *    gs_graph_launch return GS_EAGAIN; recording again works.
 * Launching a freed graph is a use after free (not testable). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/gpu/gpu_util.h"

enum { H = 4096 };

/* Uploads n host floats as BF16. */
static int up_bf16(gs_backend *be, void *dst, const float *src, size_t n)
{
    uint16_t *h = gt_xmalloc(n * 2);
    gs_f32_to_bf16_row(src, h, n);
    int rc = gs_buf_upload(be, dst, h, n * 2);
    free(h);
    return rc;
}

/* ---- norm + matmul + add_norm ------------------------------------------------------ */

typedef struct {
    gs_mat x, h, o;
    const gs_weight *w;
    gs_vec nw, bias;
} nm_step;

static int nm_issue(gs_backend *be, const nm_step *s)
{
    gs_vec nw = s->nw, bias = s->bias; /* stack copies: the recording must not need them */
    int rc = gs_k_rmsnorm(be, s->h, s->x, &nw, 1e-5f);
    if (!rc)
        rc = gs_k_matmul(be, s->o, s->h, s->w, &bias, 0);
    if (!rc)
        rc = gs_k_add_rmsnorm(be, s->h, s->x, s->o, &nw, 1e-5f);
    return rc;
}

/* Uploads x, runs the step (eagerly or by launching g), downloads h. */
static int nm_run(gs_backend *be, const nm_step *s, gs_graph *g, const uint16_t *x, uint16_t *h)
{
    const size_t bytes = (size_t)(s->x.rows * H) * 2;
    int rc = gs_buf_upload(be, s->x.data, x, bytes);
    if (!rc)
        rc = gs_buf_zero(be, s->h.data, bytes);
    if (!rc)
        rc = g ? gs_graph_launch(be, g) : nm_issue(be, s);
    if (!rc)
        rc = gs_buf_download(be, h, s->h.data, bytes);
    return rc;
}

/* The calls a capture refuses, each leaving it running; 1 when all did. */
static int refusals(gs_backend *be, const nm_step *s, gs_graph *other, void *dead, void *host)
{
    int ok = gs_buf_upload(be, s->x.data, host, 64) == GS_EINVAL;
    ok &= gs_buf_download(be, host, s->x.data, 64) == GS_EINVAL;
    ok &= gs_buf_zero(be, s->x.data, 64) == GS_EINVAL;
    ok &= gs_backend_sync(be) == GS_EINVAL;
    ok &= gs_buf_alloc(be, 64) == NULL;
    ok &= gs_graph_begin(be) == GS_EBUSY;
    ok &= gs_graph_launch(be, other) == GS_EINVAL;
    ok &= gs_k_add(be, s->o, s->x, gs_mat_cols(s->h, 0, 8)) == GS_EINVAL;
    gs_buf_free(be, dead); /* deferred to the end of the capture */
    return ok && gs_graph_recording(be) == 1;
}

static void nm_case(gt_ctx *t, int m)
{
    gs_backend *be = t->gpu;
    gs_weight *w = NULL;
    gs_graph *g = NULL, *empty = NULL;
    const size_t n = (size_t)m * H, bytes = n * 2;
    float *xf[2] = {gt_rand(n, -2, 2), gt_rand(n, -2, 2)};
    float *ones = gt_xmalloc(sizeof(float) * H), *b0 = gt_rand(H, -1, 1), *b1 = gt_rand(H, -1, 1);
    for (int i = 0; i < H; i++)
        ones[i] = 1.0f + 0.001f * (float)(i % 7);
    uint16_t *xb[2] = {gt_xmalloc(bytes), gt_xmalloc(bytes)};
    uint16_t *ref[2] = {gt_xmalloc(bytes), gt_xmalloc(bytes)}, *got = gt_xmalloc(bytes);
    for (int i = 0; i < 2; i++)
        gs_f32_to_bf16_row(xf[i], xb[i], n);
    void *dx = gs_buf_alloc(be, bytes), *dh = gs_buf_alloc(be, bytes),
         *dout = gs_buf_alloc(be, bytes);
    void *dead = gs_buf_alloc(be, 256);
    nm_step s = {gs_mat_make(dx, GS_DT_BF16, m, H),
                 gs_mat_make(dh, GS_DT_BF16, m, H),
                 gs_mat_make(dout, GS_DT_BF16, m, H),
                 NULL,
                 {NULL, 0},
                 {NULL, 0}};
    int rc = gs_weight_new_random(be, GS_DT_BF16, H, H, 5, 1.0f / 64, &w);
    s.w = w;
    if (!rc)
        rc = gs_vec_new(be, ones, H, &s.nw);
    if (!rc)
        rc = gs_vec_new(be, b0, H, &s.bias);
    if (!rc && (!dx || !dh || !dout || !dead))
        rc = GS_ENOMEM;
    char sh[80];
    snprintf(sh, sizeof sh, "norm+matmul(bias)+add_norm m=%d", m);

    /* eager references, which also make the lazy state (bias copy, GEMM plan) */
    for (int i = 0; i < 2 && !rc; i++)
        rc = nm_run(be, &s, NULL, xb[i], ref[i]);
    int ok_ref = !rc && memcmp(ref[0], ref[1], bytes) != 0;
    int ok_refuse = 0, ok_bits = 1;
    if (!rc)
        rc = gs_graph_begin(be);
    if (!rc)
        rc = gs_graph_end(be, &empty);
    if (!rc)
        rc = gs_graph_begin(be);
    if (!rc) {
        ok_refuse = refusals(be, &s, empty, dead, got);
        dead = NULL;
        rc = nm_issue(be, &s);
        if (rc)
            gs_graph_abort(be);
        else
            rc = gs_graph_end(be, &g);
    }
    /* inputs 1, 0, 1 into the same buffers */
    for (int r = 0; r < 3 && !rc; r++) {
        const int i = r == 1 ? 0 : 1;
        rc = nm_run(be, &s, g, xb[i], got);
        if (!rc && memcmp(ref[i], got, bytes) != 0)
            ok_bits = 0;
    }
    if (rc) {
        gt_fail(t, "graph", sh, "capture/replay", rc);
    } else {
        gt_row(t, "graph", sh, ok_bits && ok_ref, "(3 replays, 2 inputs == eager, bit for bit)");
        snprintf(sh, sizeof sh, "refusals during capture m=%d", m);
        gt_row(t, "graph", sh, ok_refuse, "(upload/download/zero/sync/alloc/begin/launch/shape)");
        snprintf(sh, sizeof sh, "empty graph m=%d", m);
        gt_row(t, "graph", sh, gs_graph_launch(be, empty) == 0, "");
    }

    /* a new bias: the GEMV reads the F32 vector (the graph stays valid);
     * cuBLASLt used a BF16 copy, which the upload drops (stale graph) */
    if (!rc) {
        rc = gs_buf_upload(be, s.bias.data, b1, sizeof(float) * H);
        int lrc = rc ? rc : gs_graph_launch(be, g);
        /* m = 4 takes the GEMV unless GS_TUNE_NO_GEMV: either answer is right there */
        const int ok = m > 8 ? lrc == GS_EAGAIN : lrc == 0 || lrc == GS_EAGAIN;
        snprintf(sh, sizeof sh, "launch after bias upload m=%d", m);
        gt_row(t, "graph", sh, ok, lrc == GS_EAGAIN ? "(GS_EAGAIN: stale)" : "(still valid)");
        if (lrc == 0)
            rc = gs_backend_sync(be);
        gs_graph_free(be, g);
        g = NULL;
        /* eager once with the new bias, record again, replay */
        int ok2 = 0;
        if (!rc)
            rc = nm_run(be, &s, NULL, xb[0], ref[0]);
        if (!rc)
            rc = gs_graph_begin(be);
        if (!rc) {
            rc = nm_issue(be, &s);
            if (rc)
                gs_graph_abort(be);
            else
                rc = gs_graph_end(be, &g);
        }
        if (!rc)
            rc = nm_run(be, &s, g, xb[0], got);
        if (!rc)
            ok2 = memcmp(ref[0], got, bytes) == 0;
        snprintf(sh, sizeof sh, "record again after new bias m=%d", m);
        if (rc)
            gt_fail(t, "graph", sh, "run", rc);
        else
            gt_row(t, "graph", sh, ok2, "(== eager)");
    }

    /* abort: the ops are dropped, the stream is usable, eager ops run again */
    if (!rc) {
        int ok = gs_graph_begin(be) == 0 && nm_issue(be, &s) == 0;
        gs_graph_abort(be);
        ok &= gs_graph_recording(be) == 0 && gs_backend_sync(be) == 0;
        ok &= nm_run(be, &s, NULL, xb[0], got) == 0 && memcmp(ref[0], got, bytes) == 0;
        snprintf(sh, sizeof sh, "abort, then eager m=%d", m);
        gt_row(t, "graph", sh, ok, "");
    }

    gs_graph_free(be, g);
    gs_graph_free(be, empty);
    gs_weight_free(be, w);
    gs_vec_free(be, &s.nw);
    gs_vec_free(be, &s.bias);
    gs_buf_free(be, dx);
    gs_buf_free(be, dh);
    gs_buf_free(be, dout);
    gs_buf_free(be, dead);
    for (int i = 0; i < 2; i++) {
        free(xf[i]);
        free(xb[i]);
        free(ref[i]);
    }
    free(ones);
    free(b0);
    free(b1);
    free(got);
}

/* ---- decode step ------------------------------------------------------------------- */

enum {
    NH = 32,
    NKV = 2,
    HD = 128,
    QD = NH * HD,
    KD = NKV * HD,
    PAGE = 16,
    NSEQ = 4,
    MAXKV = 1536,
    MAXB = MAXKV / PAGE,
    NPAGES = NSEQ * MAXB,
    VOC = 8192,
    CACHE = NPAGES * PAGE * KD, /* elements of each of k, v */
};

typedef struct {
    void *q, *k, *v, *attn, *kc, *vc; /* BF16 */
    float *logits, *lcopy;
    int32_t *pos, *slots, *cu_q, *kv_len, *bt, *ids;
    gs_sample_row *rows;
    const gs_weight *lm;
} dec_bufs;

/* Host inputs of one step. */
typedef struct {
    float *q, *k, *v, *kc, *vc;
    int32_t pos[3 * NSEQ], slots[NSEQ], cu_q[NSEQ + 1], kv_len[NSEQ], bt[NSEQ * MAXB];
} dec_in;

/* Host results of one step. */
typedef struct {
    uint16_t *attn, *kc;
    float *logits;
    int32_t ids[NSEQ];
} dec_out;

static int dec_issue(gs_backend *be, const dec_bufs *b)
{
    /* params, cache and batch on this frame only */
    gs_rope_text_params rq = {NH, HD, 64, {8, 12, 12}, 10000.0f}, rk = rq;
    rk.n_heads = NKV;
    gs_kv_layer kv = {b->kc, b->vc, NPAGES, PAGE, NKV, HD};
    gs_paged_batch pb = {NSEQ, b->cu_q, b->kv_len, b->bt, MAXB, 1, MAXKV};
    gs_attn_params ap = {NH, NKV, HD, 0.08838834764831845f, 1};
    gs_mat q = gs_mat_make(b->q, GS_DT_BF16, NSEQ, QD), k = gs_mat_make(b->k, GS_DT_BF16, NSEQ, KD),
           v = gs_mat_make(b->v, GS_DT_BF16, NSEQ, KD);
    gs_mat attn = gs_mat_make(b->attn, GS_DT_BF16, NSEQ, QD);
    gs_mat logits = gs_mat_make(b->logits, GS_DT_F32, NSEQ, VOC);
    gs_mat lcopy = gs_mat_make(b->lcopy, GS_DT_F32, NSEQ, VOC);
    int rc = gs_k_rope_text(be, q, b->pos, &rq);
    if (!rc)
        rc = gs_k_rope_text(be, k, b->pos, &rk);
    if (!rc)
        rc = gs_k_kv_store(be, &kv, k, v, b->slots);
    if (!rc)
        rc = gs_k_attention_paged(be, attn, q, &kv, &pb, &ap);
    if (!rc)
        rc = gs_k_matmul(be, logits, attn, b->lm, NULL, 0);
    if (!rc)
        rc = gs_k_copy(be, lcopy, logits);
    if (!rc)
        rc = gs_k_sample(be, b->ids, lcopy, b->rows, NULL, NULL, NULL);
    return rc;
}

static void dec_inputs(dec_in *in, int which)
{
    static const int32_t lens[2][NSEQ] = {{1000, MAXKV, 17, 700}, {1200, 5, MAXKV, 333}};
    in->q = gt_rand((size_t)NSEQ * QD, -2, 2);
    in->k = gt_rand((size_t)NSEQ * KD, -2, 2);
    in->v = gt_rand((size_t)NSEQ * KD, -2, 2);
    in->kc = gt_rand(CACHE, -2, 2);
    in->vc = gt_rand(CACHE, -2, 2);
    int32_t perm[NPAGES];
    for (int i = 0; i < NPAGES; i++)
        perm[i] = i;
    for (int i = NPAGES - 1; i > 0; i--) {
        int j = (int)(gt_next() % (uint64_t)(i + 1)), x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    memcpy(in->bt, perm, sizeof in->bt);
    for (int s = 0; s <= NSEQ; s++)
        in->cu_q[s] = s;
    for (int s = 0; s < NSEQ; s++) {
        const int32_t len = lens[which][s], p = len - 1;
        in->kv_len[s] = len;
        in->slots[s] = in->bt[s * MAXB + p / PAGE] * PAGE + p % PAGE;
        for (int a = 0; a < 3; a++)
            in->pos[a * NSEQ + s] = p - a; /* any positions: three different streams */
    }
}

static void dec_in_free(dec_in *in)
{
    free(in->q);
    free(in->k);
    free(in->v);
    free(in->kc);
    free(in->vc);
}

/* Uploads in, runs the step (eagerly or by launching g), downloads out. */
static int dec_run(gs_backend *be, const dec_bufs *b, gs_graph *g, const dec_in *in, dec_out *out)
{
    int rc = up_bf16(be, b->q, in->q, (size_t)NSEQ * QD);
    if (!rc)
        rc = up_bf16(be, b->k, in->k, (size_t)NSEQ * KD);
    if (!rc)
        rc = up_bf16(be, b->v, in->v, (size_t)NSEQ * KD);
    if (!rc)
        rc = up_bf16(be, b->kc, in->kc, CACHE);
    if (!rc)
        rc = up_bf16(be, b->vc, in->vc, CACHE);
    if (!rc)
        rc = gs_buf_upload(be, b->pos, in->pos, sizeof in->pos);
    if (!rc)
        rc = gs_buf_upload(be, b->slots, in->slots, sizeof in->slots);
    if (!rc)
        rc = gs_buf_upload(be, b->cu_q, in->cu_q, sizeof in->cu_q);
    if (!rc)
        rc = gs_buf_upload(be, b->kv_len, in->kv_len, sizeof in->kv_len);
    if (!rc)
        rc = gs_buf_upload(be, b->bt, in->bt, sizeof in->bt);
    if (!rc)
        rc = gs_buf_zero(be, b->attn, (size_t)NSEQ * QD * 2);
    if (!rc)
        rc = gs_buf_zero(be, b->logits, sizeof(float) * NSEQ * VOC);
    if (!rc)
        rc = gs_buf_zero(be, b->ids, sizeof(int32_t) * NSEQ);
    if (!rc)
        rc = g ? gs_graph_launch(be, g) : dec_issue(be, b);
    if (!rc)
        rc = gs_buf_download(be, out->attn, b->attn, (size_t)NSEQ * QD * 2);
    if (!rc)
        rc = gs_buf_download(be, out->kc, b->kc, (size_t)CACHE * 2);
    if (!rc)
        rc = gs_buf_download(be, out->logits, b->logits, sizeof(float) * NSEQ * VOC);
    if (!rc)
        rc = gs_buf_download(be, out->ids, b->ids, sizeof out->ids);
    return rc;
}

static void dec_out_new(dec_out *o)
{
    o->attn = gt_xmalloc((size_t)NSEQ * QD * 2);
    o->kc = gt_xmalloc((size_t)CACHE * 2);
    o->logits = gt_xmalloc(sizeof(float) * NSEQ * VOC);
}

static void dec_out_free(dec_out *o)
{
    free(o->attn);
    free(o->kc);
    free(o->logits);
}

static int dec_same(const dec_out *a, const dec_out *b)
{
    return memcmp(a->attn, b->attn, (size_t)NSEQ * QD * 2) == 0 &&
           memcmp(a->kc, b->kc, (size_t)CACHE * 2) == 0 &&
           memcmp(a->logits, b->logits, sizeof(float) * NSEQ * VOC) == 0 &&
           memcmp(a->ids, b->ids, sizeof a->ids) == 0;
}

static void decode_case(gt_ctx *t)
{
    gs_backend *be = t->gpu;
    const char *sh = "decode 4 seqs (rope, kv, paged, lm, sample)";
    dec_bufs b;
    memset(&b, 0, sizeof b);
    gs_weight *lm = NULL;
    gs_graph *g = NULL;
    dec_in in[2];
    dec_out ref[2], got;
    for (int i = 0; i < 2; i++) {
        dec_inputs(&in[i], i);
        dec_out_new(&ref[i]);
    }
    dec_out_new(&got);
    b.q = gs_buf_alloc(be, (size_t)NSEQ * QD * 2);
    b.k = gs_buf_alloc(be, (size_t)NSEQ * KD * 2);
    b.v = gs_buf_alloc(be, (size_t)NSEQ * KD * 2);
    b.attn = gs_buf_alloc(be, (size_t)NSEQ * QD * 2);
    b.kc = gs_buf_alloc(be, (size_t)CACHE * 2);
    b.vc = gs_buf_alloc(be, (size_t)CACHE * 2);
    b.logits = gs_buf_alloc(be, sizeof(float) * NSEQ * VOC);
    b.lcopy = gs_buf_alloc(be, sizeof(float) * NSEQ * VOC);
    b.pos = gs_buf_alloc(be, sizeof(int32_t) * 3 * NSEQ);
    b.slots = gs_buf_alloc(be, sizeof(int32_t) * NSEQ);
    b.cu_q = gs_buf_alloc(be, sizeof(int32_t) * (NSEQ + 1));
    b.kv_len = gs_buf_alloc(be, sizeof(int32_t) * NSEQ);
    b.bt = gs_buf_alloc(be, sizeof(int32_t) * NSEQ * MAXB);
    b.ids = gs_buf_alloc(be, sizeof(int32_t) * NSEQ);
    b.rows = gs_buf_alloc(be, sizeof(gs_sample_row) * NSEQ);
    int rc = gs_weight_new_random(be, GS_DT_BF16, VOC, QD, 11, 0.05f, &lm);
    b.lm = lm;
    if (!rc && (!b.q || !b.k || !b.v || !b.attn || !b.kc || !b.vc || !b.logits || !b.lcopy ||
                !b.pos || !b.slots || !b.cu_q || !b.kv_len || !b.bt || !b.ids || !b.rows))
        rc = GS_ENOMEM;
    if (!rc) {
        gs_sample_row greedy[NSEQ];
        memset(greedy, 0, sizeof greedy); /* temperature 0, penalties off */
        for (int s = 0; s < NSEQ; s++)
            greedy[s].repetition_penalty = 1.0f;
        rc = gs_buf_upload(be, b.rows, greedy, sizeof greedy);
    }
    for (int i = 0; i < 2 && !rc; i++)
        rc = dec_run(be, &b, NULL, &in[i], &ref[i]);
    const int differ = !rc && !dec_same(&ref[0], &ref[1]);
    if (!rc)
        rc = gs_graph_begin(be);
    if (!rc) {
        rc = dec_issue(be, &b);
        if (rc)
            gs_graph_abort(be);
        else
            rc = gs_graph_end(be, &g);
    }
    int ok = 1;
    for (int r = 0; r < 3 && !rc; r++) {
        const int i = r == 1 ? 0 : 1;
        rc = dec_run(be, &b, g, &in[i], &got);
        if (!rc && !dec_same(&ref[i], &got))
            ok = 0;
    }
    if (rc)
        gt_fail(t, "graph", sh, "capture/replay", rc);
    else
        gt_row(t, "graph", sh, ok && differ, "(3 replays, 2 inputs == eager, bit for bit)");

    gs_graph_free(be, g);
    gs_weight_free(be, lm);
    void *bufs[] = {b.q,   b.k,     b.v,    b.attn,   b.kc, b.vc,  b.logits, b.lcopy,
                    b.pos, b.slots, b.cu_q, b.kv_len, b.bt, b.ids, b.rows};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        gs_buf_free(be, bufs[i]);
    for (int i = 0; i < 2; i++) {
        dec_in_free(&in[i]);
        dec_out_free(&ref[i]);
    }
    dec_out_free(&got);
}

int gt_graph_tests(gt_ctx *t)
{
    nm_case(t, 4);
    nm_case(t, 16);
    decode_case(t);
    return 0;
}

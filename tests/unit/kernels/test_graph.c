/* test_graph.c - gs_graph_* on the CPU backend (kernels.c's own recorder):
 *  - a recorded step of different ops (embed, rmsnorm, matmul with bias,
 *    text M-RoPE with params on the recording function's stack, kv_store +
 *    paged attention with a stack gs_paged_batch, add_rmsnorm, gather_rows,
 *    matmul to F32, softmax, copy, greedy gs_k_sample) replays bit for bit
 *    like the eager run, for two sets of inputs uploaded into the same
 *    buffers, and recording runs nothing;
 *  - while recording: upload, download, zero, sync, alloc, vec_new and
 *    weight_new refuse, frees are deferred to the end, nested begin is
 *    GS_EBUSY, launch is refused, validation errors are still reported and
 *    leave the recording running;
 *  - abort drops the recording (ops run eagerly again), end without begin,
 *    end with out NULL, empty graphs, NULL arguments, another backend's
 *    graph, freeing the backend mid-recording;
 *  - a replayed op that fails (an id outside the table in backend memory)
 *    returns its error and stops the replay there. */
#include "kt.h"

enum {
    M = 3,   /* tokens of the step */
    H = 64,  /* hidden */
    V = 50,  /* vocabulary */
    NH = 4,  /* query heads */
    NKV = 2, /* kv heads */
    HD = 16, /* head dim */
    QKV = (NH + 2 * NKV) * HD,
    PAGES = 4,
    PS = 4, /* page size */
    NSEQ = 2,
    MAXB = 2, /* block-table columns */
    NOUT = 2, /* rows gathered for the logits */
    CACHE = PAGES * PS * NKV * HD,
};

/* One step's buffers in backend memory, and the weights it reads. */
typedef struct {
    gs_backend *be;
    gs_weight *table, *wqkv, *wo, *wlm;
    gs_vec n1, n2, bqkv;
    int32_t *ids, *pos, *slots, *cu_q, *kv_len, *bt, *idx, *out_ids; /* index arrays */
    gs_sample_row *rows;
    float *x, *h, *qkv, *attn, *o, *last, *logits, *lcopy, *probs, *kc, *vc;
} step_bufs;

/* One set of per-step inputs (host). */
typedef struct {
    int32_t ids[M], pos[3 * M], slots[M], cu_q[NSEQ + 1], kv_len[NSEQ], bt[NSEQ * MAXB], idx[NOUT];
    float kc[CACHE], vc[CACHE]; /* the cache as it is before the step */
} step_in;

/* What a step leaves behind (host). */
typedef struct {
    float x[M * H], logits[NOUT * V], probs[NOUT * V], kc[CACHE], vc[CACHE];
    int32_t ids[NOUT];
} step_out;

static void *xalloc(gs_backend *be, size_t bytes)
{
    void *p = gs_buf_alloc(be, bytes);
    if (!p) {
        fprintf(stderr, "test_graph: gs_buf_alloc failed\n");
        exit(2);
    }
    return p;
}

static gs_weight *rand_weight(gs_backend *be, int64_t rows, int64_t cols, float scale)
{
    float *h = kt_rand((size_t)(rows * cols), -scale, scale);
    gs_weight *w = NULL;
    if (gs_weight_new(be, h, GS_DT_F32, rows, cols, &w) != 0)
        exit(2);
    free(h);
    return w;
}

static gs_vec rand_vec(gs_backend *be, int64_t n, float lo, float hi)
{
    float *h = kt_rand((size_t)n, lo, hi);
    gs_vec v;
    if (gs_vec_new(be, h, n, &v) != 0)
        exit(2);
    free(h);
    return v;
}

static void step_new(step_bufs *s, gs_backend *be)
{
    memset(s, 0, sizeof *s);
    s->be = be;
    s->table = rand_weight(be, V, H, 1.0f);
    s->wqkv = rand_weight(be, QKV, H, 0.2f);
    s->wo = rand_weight(be, H, NH * HD, 0.2f);
    s->wlm = rand_weight(be, V, H, 0.2f);
    s->n1 = rand_vec(be, H, 0.5f, 1.5f);
    s->n2 = rand_vec(be, H, 0.5f, 1.5f);
    s->bqkv = rand_vec(be, QKV, -0.5f, 0.5f);
    s->ids = xalloc(be, sizeof(int32_t) * M);
    s->pos = xalloc(be, sizeof(int32_t) * 3 * M);
    s->slots = xalloc(be, sizeof(int32_t) * M);
    s->cu_q = xalloc(be, sizeof(int32_t) * (NSEQ + 1));
    s->kv_len = xalloc(be, sizeof(int32_t) * NSEQ);
    s->bt = xalloc(be, sizeof(int32_t) * NSEQ * MAXB);
    s->idx = xalloc(be, sizeof(int32_t) * NOUT);
    s->out_ids = xalloc(be, sizeof(int32_t) * NOUT);
    s->rows = xalloc(be, sizeof(gs_sample_row) * NOUT);
    s->x = xalloc(be, sizeof(float) * M * H);
    s->h = xalloc(be, sizeof(float) * M * H);
    s->qkv = xalloc(be, sizeof(float) * M * QKV);
    s->attn = xalloc(be, sizeof(float) * M * NH * HD);
    s->o = xalloc(be, sizeof(float) * M * H);
    s->last = xalloc(be, sizeof(float) * NOUT * H);
    s->logits = xalloc(be, sizeof(float) * NOUT * V);
    s->lcopy = xalloc(be, sizeof(float) * NOUT * V);
    s->probs = xalloc(be, sizeof(float) * NOUT * V);
    s->kc = xalloc(be, sizeof(float) * CACHE);
    s->vc = xalloc(be, sizeof(float) * CACHE);
    gs_sample_row greedy[NOUT];
    memset(greedy, 0, sizeof greedy); /* temperature 0: argmax, penalties off */
    for (int r = 0; r < NOUT; r++)
        greedy[r].repetition_penalty = 1.0f;
    if (gs_buf_upload(be, s->rows, greedy, sizeof greedy) != 0)
        exit(2);
}

static void step_free(step_bufs *s)
{
    gs_backend *be = s->be;
    gs_weight_free(be, s->table);
    gs_weight_free(be, s->wqkv);
    gs_weight_free(be, s->wo);
    gs_weight_free(be, s->wlm);
    gs_vec_free(be, &s->n1);
    gs_vec_free(be, &s->n2);
    gs_vec_free(be, &s->bqkv);
    void *bufs[] = {s->ids,    s->pos,   s->slots, s->cu_q, s->kv_len, s->bt,     s->idx,
                    s->rows,   s->x,     s->h,     s->qkv,  s->attn,   s->o,      s->last,
                    s->logits, s->lcopy, s->probs, s->kc,   s->vc,     s->out_ids};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        gs_buf_free(be, bufs[i]);
}

/* Issues the step's ops (run or recorded). The params, the cache view,
 * the batch and even the vectors are locals of this frame: a recording
 * must hold copies, since they are gone when the graph is replayed. */
static int issue_step(const step_bufs *s)
{
    gs_backend *be = s->be;
    gs_rope_text_params rq = {NH, HD, 8, {2, 1, 1}, 10000.0f}, rk = rq;
    rk.n_heads = NKV;
    gs_kv_layer kv = {s->kc, s->vc, PAGES, PS, NKV, HD};
    gs_paged_batch b = {NSEQ, s->cu_q, s->kv_len, s->bt, MAXB, 2, 5};
    gs_attn_params ap = {NH, NKV, HD, 0.25f, 1};
    gs_vec n1 = s->n1, n2 = s->n2, bqkv = s->bqkv;
    gs_mat x = gs_mat_make(s->x, GS_DT_F32, M, H), h = gs_mat_make(s->h, GS_DT_F32, M, H);
    gs_mat qkv = gs_mat_make(s->qkv, GS_DT_F32, M, QKV);
    gs_mat q = gs_mat_cols(qkv, 0, NH * HD), k = gs_mat_cols(qkv, NH * HD, NKV * HD),
           v = gs_mat_cols(qkv, (NH + NKV) * HD, NKV * HD);
    gs_mat attn = gs_mat_make(s->attn, GS_DT_F32, M, NH * HD);
    gs_mat o = gs_mat_make(s->o, GS_DT_F32, M, H), last = gs_mat_make(s->last, GS_DT_F32, NOUT, H);
    gs_mat logits = gs_mat_make(s->logits, GS_DT_F32, NOUT, V);
    gs_mat lcopy = gs_mat_make(s->lcopy, GS_DT_F32, NOUT, V);
    gs_mat probs = gs_mat_make(s->probs, GS_DT_F32, NOUT, V);

    int rc = gs_k_embed(be, x, s->table, s->ids);
    if (!rc)
        rc = gs_k_rmsnorm(be, h, x, &n1, 1e-5f);
    if (!rc)
        rc = gs_k_matmul(be, qkv, h, s->wqkv, &bqkv, 0);
    if (!rc)
        rc = gs_k_rope_text(be, q, s->pos, &rq);
    if (!rc)
        rc = gs_k_rope_text(be, k, s->pos, &rk);
    if (!rc)
        rc = gs_k_kv_store(be, &kv, k, v, s->slots);
    if (!rc)
        rc = gs_k_attention_paged(be, attn, q, &kv, &b, &ap);
    if (!rc)
        rc = gs_k_matmul(be, o, attn, s->wo, NULL, 0);
    if (!rc)
        rc = gs_k_add_rmsnorm(be, h, x, o, &n2, 1e-5f);
    if (!rc)
        rc = gs_k_gather_rows(be, last, h, s->idx);
    if (!rc)
        rc = gs_k_matmul(be, logits, last, s->wlm, NULL, 0);
    if (!rc)
        rc = gs_k_softmax(be, probs, logits);
    if (!rc)
        rc = gs_k_copy(be, lcopy, logits); /* the sampler overwrites its logits */
    if (!rc)
        rc = gs_k_sample(be, s->out_ids, lcopy, s->rows, NULL, NULL, NULL);
    return rc;
}

/* Overwrites the stack below the caller (where issue_step's frame was). */
static void clobber_stack(void)
{
    volatile unsigned char junk[16384];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = 0xA5;
}

static void inputs(step_in *in, int which)
{
    static const step_in a = {
        .ids = {3, 17, 42},
        .pos = {4, 2, 3, 4, 2, 3, 4, 2, 3},
        .slots = {4, 10, 11}, /* seq 0: position 4; seq 1: positions 2, 3 */
        .cu_q = {0, 1, 3},
        .kv_len = {5, 4},
        .bt = {0, 1, 2, 3},
        .idx = {0, 2},
    };
    static const step_in b = {
        .ids = {7, 0, 49},
        .pos = {3, 3, 4, 1, 3, 4, 2, 3, 4},
        .slots = {7, 15, 8}, /* seq 0: position 3; seq 1: positions 3, 4 */
        .cu_q = {0, 1, 3},
        .kv_len = {4, 5},
        .bt = {1, 0, 3, 2},
        .idx = {2, 1},
    };
    memcpy(in, which ? &b : &a, sizeof *in);
    kt_seed(100 + (uint64_t)which);
    for (int i = 0; i < CACHE; i++) {
        in->kc[i] = kt_uniform(-1, 1);
        in->vc[i] = kt_uniform(-1, 1);
    }
}

static int upload(const step_bufs *s, const step_in *in)
{
    gs_backend *be = s->be;
    int rc = gs_buf_upload(be, s->ids, in->ids, sizeof in->ids);
    if (!rc)
        rc = gs_buf_upload(be, s->pos, in->pos, sizeof in->pos);
    if (!rc)
        rc = gs_buf_upload(be, s->slots, in->slots, sizeof in->slots);
    if (!rc)
        rc = gs_buf_upload(be, s->cu_q, in->cu_q, sizeof in->cu_q);
    if (!rc)
        rc = gs_buf_upload(be, s->kv_len, in->kv_len, sizeof in->kv_len);
    if (!rc)
        rc = gs_buf_upload(be, s->bt, in->bt, sizeof in->bt);
    if (!rc)
        rc = gs_buf_upload(be, s->idx, in->idx, sizeof in->idx);
    if (!rc)
        rc = gs_buf_upload(be, s->kc, in->kc, sizeof in->kc);
    if (!rc)
        rc = gs_buf_upload(be, s->vc, in->vc, sizeof in->vc);
    return rc;
}

static int download(const step_bufs *s, step_out *out)
{
    gs_backend *be = s->be;
    int rc = gs_buf_download(be, out->x, s->x, sizeof out->x);
    if (!rc)
        rc = gs_buf_download(be, out->logits, s->logits, sizeof out->logits);
    if (!rc)
        rc = gs_buf_download(be, out->probs, s->probs, sizeof out->probs);
    if (!rc)
        rc = gs_buf_download(be, out->kc, s->kc, sizeof out->kc);
    if (!rc)
        rc = gs_buf_download(be, out->vc, s->vc, sizeof out->vc);
    if (!rc)
        rc = gs_buf_download(be, out->ids, s->out_ids, sizeof out->ids);
    return rc;
}

/* Zeroes every output, so a replay that skipped an op cannot pass on
 * leftovers of the eager run. */
static int zero_outputs(const step_bufs *s)
{
    gs_backend *be = s->be;
    int rc = gs_buf_zero(be, s->x, sizeof(float) * M * H);
    if (!rc)
        rc = gs_buf_zero(be, s->logits, sizeof(float) * NOUT * V);
    if (!rc)
        rc = gs_buf_zero(be, s->probs, sizeof(float) * NOUT * V);
    if (!rc)
        rc = gs_buf_zero(be, s->out_ids, sizeof(int32_t) * NOUT);
    return rc;
}

static int same_out(const step_out *a, const step_out *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

static void test_replay_matches_eager(void)
{
    gs_backend *be = kt_backend(0, 0); /* all cores, or GS_CPU_THREADS */
    step_bufs s;
    step_new(&s, be);
    step_in *in = malloc(2 * sizeof *in);
    step_out *eager = malloc(2 * sizeof *eager), *got = malloc(sizeof *got);
    gs_graph *g = NULL;
    GS_ASSERT(in && eager && got);
    inputs(&in[0], 0);
    inputs(&in[1], 1);

    for (int i = 0; i < 2; i++) {
        GS_ASSERT_OK(upload(&s, &in[i]));
        GS_ASSERT_OK(issue_step(&s));
        GS_ASSERT_OK(download(&s, &eager[i]));
    }
    /* the two inputs give different results (the check below has teeth) */
    GS_ASSERT(memcmp(eager[0].logits, eager[1].logits, sizeof eager[0].logits) != 0);
    GS_ASSERT(memcmp(eager[0].kc, eager[1].kc, sizeof eager[0].kc) != 0);

    GS_ASSERT_OK(zero_outputs(&s));
    GS_ASSERT_EQ(gs_graph_recording(be), 0);
    GS_ASSERT_OK(gs_graph_begin(be));
    GS_ASSERT_EQ(gs_graph_recording(be), 1);
    GS_ASSERT_OK(issue_step(&s));
    GS_ASSERT_OK(gs_graph_end(be, &g));
    GS_ASSERT(g != NULL);
    GS_ASSERT_EQ(gs_graph_recording(be), 0);
    clobber_stack();

    /* recording ran nothing: the outputs are still zero */
    float lg[NOUT * V];
    GS_ASSERT_OK(gs_buf_download(be, lg, s.logits, sizeof lg));
    for (int i = 0; i < NOUT * V; i++)
        GS_ASSERT_MSG(lg[i] == 0.0f, "logits[%d] = %g after recording", i, (double)lg[i]);

    /* inputs B, then A, then B again, each into the same buffers */
    static const int order[] = {1, 0, 1};
    for (int r = 0; r < 3; r++) {
        const int i = order[r];
        GS_ASSERT_OK(zero_outputs(&s));
        GS_ASSERT_OK(upload(&s, &in[i]));
        GS_ASSERT_OK(gs_graph_launch(be, g));
        GS_ASSERT_OK(download(&s, got));
        GS_ASSERT_MSG(same_out(got, &eager[i]), "replay %d (inputs %c) differs from eager", r,
                      i ? 'B' : 'A');
    }
    gs_graph_free(be, g);
    free(in);
    free(eager);
    free(got);
    step_free(&s);
    gs_backend_free(be);
}

static void test_refusals(void)
{
    gs_backend *be = kt_backend(1, 0);
    float host[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, back[16];
    float *buf = kt_up(be, host, sizeof host);
    float *dead = xalloc(be, 64), *src = kt_up(be, host, sizeof host);
    gs_vec nv = {NULL, 0};
    gs_weight *w = NULL, *wdead = rand_weight(be, 4, 4, 1.0f);
    gs_graph *g = NULL, *other = NULL;

    GS_ASSERT_OK(gs_graph_begin(be));
    GS_ASSERT_OK(gs_graph_end(be, &other)); /* an empty graph, freed mid-recording below */
    GS_ASSERT_OK(gs_graph_begin(be));
    GS_ASSERT_EQ(gs_graph_begin(be), GS_EBUSY);
    GS_ASSERT_EQ(gs_graph_recording(be), 1);
    GS_ASSERT_EQ(gs_buf_upload(be, buf, host, sizeof host), GS_EINVAL);
    GS_ASSERT_EQ(gs_buf_upload(be, buf, host, 0), GS_EINVAL);
    GS_ASSERT_EQ(gs_buf_download(be, back, buf, sizeof back), GS_EINVAL);
    GS_ASSERT_EQ(gs_buf_download(be, back, buf, 0), GS_EINVAL);
    GS_ASSERT_EQ(gs_buf_zero(be, buf, sizeof host), GS_EINVAL);
    GS_ASSERT_EQ(gs_backend_sync(be), GS_EINVAL);
    GS_ASSERT(gs_buf_alloc(be, 64) == NULL);
    GS_ASSERT_EQ(gs_vec_new(be, host, 16, &nv), GS_EINVAL);
    GS_ASSERT(nv.data == NULL);
    GS_ASSERT_EQ(gs_weight_new(be, host, GS_DT_F32, 4, 4, &w), GS_EINVAL);
    GS_ASSERT_EQ(gs_weight_new_random(be, GS_DT_F32, 4, 4, 1, 1.0f, &w), GS_EINVAL);
    GS_ASSERT(w == NULL);
    GS_ASSERT_EQ(gs_graph_launch(be, other), GS_EINVAL);
    /* frees are deferred to the end of the recording (ASan: no leak, no
     * double free) */
    gs_buf_free(be, dead);
    gs_weight_free(be, wdead);
    gs_graph_free(be, other);
    /* an op recorded between the refusals */
    GS_ASSERT_OK(
        gs_k_copy(be, gs_mat_make(buf, GS_DT_F32, 2, 8), gs_mat_make(src, GS_DT_F32, 2, 8)));
    GS_ASSERT_EQ(gs_graph_recording(be), 1);
    GS_ASSERT_OK(gs_graph_end(be, &g));

    /* everything works again, and the buffer was never written */
    GS_ASSERT_OK(gs_backend_sync(be));
    GS_ASSERT_OK(gs_buf_download(be, back, buf, sizeof back));
    GS_ASSERT(memcmp(back, host, sizeof host) == 0);
    GS_ASSERT_OK(gs_buf_zero(be, buf, sizeof host));
    GS_ASSERT_OK(gs_graph_launch(be, g));
    GS_ASSERT_OK(gs_buf_download(be, back, buf, sizeof back));
    GS_ASSERT(memcmp(back, host, sizeof host) == 0);
    void *p = gs_buf_alloc(be, 64);
    GS_ASSERT(p != NULL);
    gs_buf_free(be, p);
    gs_graph_free(be, g);
    gs_buf_free(be, buf);
    gs_buf_free(be, src);
    gs_backend_free(be);
}

static void test_validation_while_recording(void)
{
    gs_backend *be = kt_backend(1, 0);
    float a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {10, 20, 30, 40, 50, 60, 70, 80}, back[8];
    float *da = kt_up(be, a, sizeof a), *db = kt_up(be, b, sizeof b), *dc = xalloc(be, sizeof a);
    gs_mat ma = gs_mat_make(da, GS_DT_F32, 2, 4), mb = gs_mat_make(db, GS_DT_F32, 2, 4),
           mc = gs_mat_make(dc, GS_DT_F32, 2, 4);
    gs_rope_text_params bad = {4, 16, 8, {1, 1, 1}, 10000.0f}; /* sections sum to 3, not 4 */
    gs_graph *g = NULL;
    GS_ASSERT_OK(gs_buf_zero(be, dc, sizeof a));
    GS_ASSERT_OK(gs_graph_begin(be));
    GS_ASSERT_EQ(gs_k_add(be, mc, ma, gs_mat_make(db, GS_DT_F32, 4, 2)), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_add(be, mc, ma, gs_mat_make(db, GS_DT_BF16, 2, 4)), GS_EINVAL);
    GS_ASSERT_EQ(gs_k_rope_text(be, gs_mat_make(da, GS_DT_F32, 1, 64), (const int32_t *)db, &bad),
                 GS_EINVAL);
    GS_ASSERT_EQ(gs_k_matmul(NULL, mc, ma, NULL, NULL, 0), GS_EINVAL);
    GS_ASSERT_EQ(gs_graph_recording(be), 1);
    GS_ASSERT_OK(gs_k_add(be, mc, ma, mb)); /* the only op recorded */
    GS_ASSERT_OK(gs_graph_end(be, &g));
    GS_ASSERT_OK(gs_graph_launch(be, g));
    GS_ASSERT_OK(gs_buf_download(be, back, dc, sizeof back));
    for (int i = 0; i < 8; i++)
        GS_ASSERT_EQ(back[i], a[i] + b[i]);
    gs_graph_free(be, g);
    gs_buf_free(be, da);
    gs_buf_free(be, db);
    gs_buf_free(be, dc);
    gs_backend_free(be);
}

static void test_abort(void)
{
    gs_backend *be = kt_backend(1, 0);
    float a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, back[8];
    float *da = kt_up(be, a, sizeof a), *dc = xalloc(be, sizeof a), *dead = xalloc(be, 64);
    gs_mat ma = gs_mat_make(da, GS_DT_F32, 2, 4), mc = gs_mat_make(dc, GS_DT_F32, 2, 4);
    GS_ASSERT_OK(gs_buf_zero(be, dc, sizeof a));
    gs_graph_abort(be); /* nothing recording: no-op */
    gs_graph_abort(NULL);
    GS_ASSERT_OK(gs_graph_begin(be));
    GS_ASSERT_OK(gs_k_add(be, mc, ma, ma));
    gs_buf_free(be, dead); /* deferred, then done by the abort */
    gs_graph_abort(be);
    GS_ASSERT_EQ(gs_graph_recording(be), 0);
    GS_ASSERT_OK(gs_buf_download(be, back, dc, sizeof back));
    for (int i = 0; i < 8; i++)
        GS_ASSERT_EQ(back[i], 0.0f);        /* the recorded add never ran */
    GS_ASSERT_OK(gs_k_add(be, mc, ma, ma)); /* eager again */
    GS_ASSERT_OK(gs_buf_download(be, back, dc, sizeof back));
    for (int i = 0; i < 8; i++)
        GS_ASSERT_EQ(back[i], 2 * a[i]);
    gs_graph *g = (gs_graph *)&back; /* must be overwritten */
    GS_ASSERT_EQ(gs_graph_end(be, &g), GS_EINVAL);
    GS_ASSERT(g == NULL);
    gs_buf_free(be, da);
    gs_buf_free(be, dc);
    gs_backend_free(be);
}

static void test_edges(void)
{
    gs_backend *be = kt_backend(1, 0), *be2 = kt_backend(1, 0);
    float a[4] = {1, 2, 3, 4};
    float *da = kt_up(be, a, sizeof a), *dc = xalloc(be, sizeof a);
    gs_graph *g = NULL, *g2 = NULL;

    GS_ASSERT_EQ(gs_graph_begin(NULL), GS_EINVAL);
    GS_ASSERT_EQ(gs_graph_recording(NULL), 0);
    gs_graph_free(be, NULL);
    gs_graph_free(NULL, NULL);
    /* an empty graph launches and does nothing */
    GS_ASSERT_OK(gs_graph_begin(be));
    GS_ASSERT_OK(gs_graph_end(be, &g));
    GS_ASSERT(g != NULL);
    GS_ASSERT_OK(gs_graph_launch(be, g));
    GS_ASSERT_EQ(gs_graph_launch(NULL, g), GS_EINVAL);
    GS_ASSERT_EQ(gs_graph_launch(be, NULL), GS_EINVAL);
    GS_ASSERT_EQ(gs_graph_launch(be2, g), GS_EINVAL); /* recorded on be */
    gs_graph_free(be, g);
    /* end with out NULL drops the recording */
    GS_ASSERT_OK(gs_graph_begin(be));
    GS_ASSERT_EQ(gs_graph_end(be, NULL), GS_EINVAL);
    GS_ASSERT_EQ(gs_graph_recording(be), 0);
    /* two backends record independently */
    GS_ASSERT_OK(gs_graph_begin(be));
    GS_ASSERT_OK(gs_graph_begin(be2));
    GS_ASSERT_OK(gs_k_copy(be, gs_mat_make(dc, GS_DT_F32, 1, 4), gs_mat_make(da, GS_DT_F32, 1, 4)));
    GS_ASSERT_OK(gs_graph_end(be2, &g2));
    GS_ASSERT_OK(gs_graph_end(be, &g));
    GS_ASSERT_OK(gs_graph_launch(be, g));
    float back[4];
    GS_ASSERT_OK(gs_buf_download(be, back, dc, sizeof back));
    GS_ASSERT(memcmp(back, a, sizeof a) == 0);
    gs_graph_free(be, g);
    gs_graph_free(be2, g2);
    gs_buf_free(be, da);
    gs_buf_free(be, dc);
    gs_backend_free(be);
    /* freeing a backend mid-recording aborts the recording and does the
     * deferred frees (ASan: no leak) */
    float *dz = xalloc(be2, 64);
    GS_ASSERT_OK(gs_graph_begin(be2));
    gs_buf_free(be2, dz);
    gs_backend_free(be2);
}

static void test_replay_error(void)
{
    gs_backend *be = kt_backend(1, 0);
    gs_weight *table = rand_weight(be, 8, 4, 1.0f);
    const int32_t good[2] = {5, 1}, bad[2] = {5, 8};
    int32_t *ids = kt_up(be, good, sizeof good);
    float *emb = xalloc(be, sizeof(float) * 8), *z = xalloc(be, sizeof(float) * 8);
    gs_mat me = gs_mat_make(emb, GS_DT_F32, 2, 4), mz = gs_mat_make(z, GS_DT_F32, 2, 4);
    float ref[8], back[8];
    GS_ASSERT_OK(gs_k_embed(be, me, table, ids));
    GS_ASSERT_OK(gs_buf_download(be, ref, emb, sizeof ref));

    gs_graph *g = NULL;
    GS_ASSERT_OK(gs_graph_begin(be));
    GS_ASSERT_OK(gs_k_embed(be, me, table, ids));
    GS_ASSERT_OK(gs_k_copy(be, mz, me));
    GS_ASSERT_OK(gs_graph_end(be, &g));

    GS_ASSERT_OK(gs_buf_zero(be, z, sizeof(float) * 8));
    GS_ASSERT_OK(gs_buf_upload(be, ids, bad, sizeof bad));
    GS_ASSERT_EQ(gs_graph_launch(be, g), GS_EINVAL);
    GS_ASSERT_OK(gs_buf_download(be, back, z, sizeof back));
    for (int i = 0; i < 8; i++)
        GS_ASSERT_EQ(back[i], 0.0f); /* the copy after the failed embed did not run */

    GS_ASSERT_OK(gs_buf_upload(be, ids, good, sizeof good));
    GS_ASSERT_OK(gs_graph_launch(be, g));
    GS_ASSERT_OK(gs_buf_download(be, back, z, sizeof back));
    GS_ASSERT(memcmp(back, ref, sizeof ref) == 0);
    gs_graph_free(be, g);
    gs_weight_free(be, table);
    gs_buf_free(be, ids);
    gs_buf_free(be, emb);
    gs_buf_free(be, z);
    gs_backend_free(be);
}

int main(void)
{
    GS_RUN(test_replay_matches_eager);
    GS_RUN(test_refusals);
    GS_RUN(test_validation_while_recording);
    GS_RUN(test_abort);
    GS_RUN(test_edges);
    GS_RUN(test_replay_error);
    return gs_test_summary();
}

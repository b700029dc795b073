/* decode.c - decode steps through recorded graphs (gs_model_enable_graphs).
 *
 * A decode step of n sequences is padded to a batch bucket N and a context
 * bucket K (tokens), and runs in a fixed workspace: the step's inputs are
 * packed on the host into one blob [ids N | pos 3N | slots N | cu N+1 |
 * kv_len N | block table N x K/page], uploaded to the same address every
 * step, and the activations and logits sit at fixed addresses too. So the
 * ops of a step are identical for every step of the same (N, K): they are
 * recorded once (gs_graph_*) and replayed. Padded rows write no KV (slot
 * -1), see one key of page 0 and their logits are never sampled.
 *
 * The first step of a new (N, K) runs op by op and is then recorded
 * (gs_graph_cache_run, graph_cache.c); after a failed recording decode
 * steps take the op-by-op path of text.c, so a device that cannot capture
 * never fails a request.
 *
 * Owns the workspace (backend memory, host staging) and the graphs. The
 * sampling after the graph runs op by op (gs_model__sample), so penalty
 * lists may change size between steps. Single-threaded, as the model. */
#include "model_impl.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

enum { MAX_GRAPH_BATCH = 256, MIN_CTX_BUCKET = 256 };

struct gs_decode_ws {
    const gs_kv_cache *kv; /* the cache the graphs write (borrowed) */
    int32_t max_batch;     /* bucket of the max_batch asked for */
    int32_t max_ctx;       /* largest context bucket (tokens) */
    int32_t page_size;
    void *buf;             /* backend: inputs | activations | logits */
    size_t bytes;          /* of buf */
    int32_t *in;           /* inputs region in buf */
    int32_t *host;         /* host staging of the inputs [in_cap] */
    size_t in_cap;         /* int32 elements of the inputs region */
    char *act[7];          /* x h o qkv at gu a, each for max_batch rows */
    float *logits;         /* [max_batch, vocab] F32 */
    gs_graph_cache graphs; /* keyed by (batch bucket, context bucket) */
};

static int32_t batch_bucket(int32_t n)
{
    if (n <= 1)
        return 1;
    if (n <= 2)
        return 2;
    if (n <= 4)
        return 4;
    if (n <= 64)
        return (n + 7) / 8 * 8;
    return (n + 31) / 32 * 32;
}

/* Smallest power of two >= max(n, MIN_CTX_BUCKET), capped at max_ctx. */
static int32_t ctx_bucket(const gs_decode_ws *w, int32_t n)
{
    int64_t b = MIN_CTX_BUCKET;
    while (b < n)
        b *= 2;
    return b > w->max_ctx ? w->max_ctx : (int32_t)b;
}

static int32_t blocks_of(const gs_decode_ws *w, int32_t kvb)
{
    return (kvb + w->page_size - 1) / w->page_size;
}

/* The dtype of activation region i: the residual stream x (0) and the
 * SwiGLU output a (6) in the residual dtype, as text.c keeps them (F32
 * where activations are F16: GLM-4 takes both past 65504), the rest in
 * the act dtype. */
static gs_dtype region_dt(const gs_model *m, int i)
{
    return i == 0 || i == 6 ? gs_backend_resid_dtype(m->be) : gs_backend_act_dtype(m->be);
}

/* Widths of the activation regions (elements per row), in act[] order. */
static void act_cols(const gs_model *m, int64_t cols[7])
{
    const gs_text_config *tc = &m->cfg.text;
    const int64_t H = tc->hidden_size, I = tc->intermediate_size;
    const int64_t qd = (int64_t)tc->num_attention_heads * tc->head_dim;
    const int64_t kvd = (int64_t)tc->num_key_value_heads * tc->head_dim;
    const int64_t c[7] = {H, H, H, qd + 2 * kvd, qd, 2 * I, I};
    memcpy(cols, c, sizeof c);
}

void gs_decode_ws_free(gs_model *m)
{
    gs_decode_ws *w = m->dec;
    if (!w)
        return;
    gs_graph_cache_free(m->be, &w->graphs);
    gs_buf_free(m->be, w->buf);
    free(w->host);
    free(w);
    m->dec = NULL;
}

void gs_model_disable_graphs(gs_model *m)
{
    if (!m)
        return;
    gs_decode_ws_free(m);
    gs_vision_ws_free(m);
    m->graphs = 0;
}

static size_t align256(size_t x)
{
    return (x + 255) & ~(size_t)255;
}

int gs_model_enable_graphs(gs_model *m, const gs_kv_cache *kv, int32_t max_batch, int32_t max_len)
{
    if (!m || !kv || kv->m != m || max_batch < 1 || max_batch > MAX_GRAPH_BATCH || max_len < 1 ||
        max_len > (1 << 24))
        return GS_EINVAL;
    gs_model_disable_graphs(m);
    gs_decode_ws *w = calloc(1, sizeof *w);
    if (!w)
        return GS_ENOMEM;
    w->kv = kv;
    w->max_batch = batch_bucket(max_batch);
    w->page_size = kv->page_size;
    int64_t ctx = MIN_CTX_BUCKET;
    while (ctx < max_len)
        ctx *= 2;
    w->max_ctx = (int32_t)(ctx < INT32_MAX ? ctx : INT32_MAX);

    const int64_t N = w->max_batch, MB = blocks_of(w, w->max_ctx);
    w->in_cap = (size_t)(7 * N + 1 + N * MB);
    size_t off = align256(sizeof(int32_t) * w->in_cap), act_off[7];
    int64_t cols[7];
    act_cols(m, cols);
    for (int i = 0; i < 7; i++) {
        act_off[i] = off;
        off += align256((size_t)(N * cols[i]) * gs_dtype_size(region_dt(m, i)));
    }
    size_t lg_off = off;
    off += align256((size_t)N * (size_t)m->cfg.text.vocab_size * sizeof(float));
    w->bytes = off;
    w->buf = gs_buf_alloc(m->be, w->bytes);
    w->host = malloc(sizeof(int32_t) * w->in_cap);
    if (!w->buf || !w->host) {
        gs_buf_free(m->be, w->buf);
        free(w->host);
        free(w);
        return GS_ENOMEM;
    }
    w->in = (int32_t *)w->buf;
    for (int i = 0; i < 7; i++)
        w->act[i] = (char *)w->buf + act_off[i];
    w->logits = (float *)((char *)w->buf + lg_off);
    m->dec = w;
    m->graphs = 1;
    memset(&m->gstats, 0, sizeof m->gstats);
    gs_log_info("model: decode graphs on (batch <= %d, context <= %d, workspace %.1f MB)",
                w->max_batch, w->max_ctx, w->bytes / 1e6);
    return 0;
}

void gs_model_graph_stats_get(const gs_model *m, gs_model_graph_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!m)
        return;
    *out = m->gstats;
    out->n_graphs = (m->dec ? m->dec->graphs.n : 0) + gs_vision_ws_graphs(m);
    out->ws_bytes = (m->dec ? m->dec->bytes : 0) + gs_vision_ws_bytes(m);
}

/* The batch is a pure decode step the workspace can take. */
static int qualifies(const gs_model *m, const gs_decode_ws *w, const gs_kv_cache *kv,
                     const gs_text_batch *b)
{
    if (w->graphs.no_record || kv != w->kv || m->tap || b->n_tokens != b->n_seqs ||
        b->n_logits != b->n_tokens || b->n_seqs > w->max_batch)
        return 0;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        if (b->logit_rows[i] != i || b->cu_q[i] != i || b->kv_len[i] > w->max_ctx)
            return 0;
        if (b->img_row && b->img_row[i] >= 0)
            return 0;
    }
    return 1;
}

/* Device pointers of the input blob for (N, K). */
typedef struct {
    int32_t *ids, *pos, *slots, *cu, *kv_len, *bt;
    int32_t mb;
} in_layout;

static in_layout layout(int32_t *base, int32_t N, int32_t mb)
{
    in_layout l;
    l.ids = base;
    l.pos = base + N;
    l.slots = base + 4 * N;
    l.cu = base + 5 * N;
    l.kv_len = base + 6 * N + 1;
    l.bt = base + 7 * N + 1;
    l.mb = mb;
    return l;
}

/* Packs b, padded to N rows, into the host staging; returns its length. */
static size_t pack(const gs_decode_ws *w, const gs_text_batch *b, int32_t N, int32_t mb)
{
    const int32_t n = b->n_seqs;
    in_layout h = layout(w->host, N, mb);
    for (int32_t i = 0; i < N; i++) {
        const int real = i < n;
        h.ids[i] = real ? b->ids[i] : 0;
        for (int a = 0; a < 3; a++)
            h.pos[a * N + i] = real ? b->pos[a * n + i] : 0;
        h.slots[i] = real ? b->slots[i] : -1;
        h.cu[i] = i;
        h.kv_len[i] = real ? b->kv_len[i] : 1;
        int32_t *row = h.bt + (size_t)i * (size_t)mb;
        int32_t used = real ? (b->kv_len[i] + w->page_size - 1) / w->page_size : 0;
        if (used > b->max_blocks)
            used = b->max_blocks;
        for (int32_t p = 0; p < mb; p++)
            row[p] = p < used ? b->block_table[(int64_t)i * b->max_blocks + p] : 0;
    }
    h.cu[N] = N;
    return (size_t)(7 * N + 1) + (size_t)N * (size_t)mb;
}

/* The ops of a step of (N, K) on the workspace: embed -> layers ->
 * lm_head on every row. Kernels.h verbs only (recordable). */
typedef struct {
    gs_decode_ws *w;
    gs_kv_cache *kv;
    int32_t N, kvb;
} step_ctx;

static int body(gs_model *m, void *ctx)
{
    const step_ctx *sc = ctx;
    const gs_decode_ws *w = sc->w;
    const int32_t N = sc->N, kvb = sc->kvb;
    int64_t cols[7];
    act_cols(m, cols);
    gs_mat v[7];
    for (int i = 0; i < 7; i++)
        v[i] = gs_mat_make(w->act[i], region_dt(m, i), N, cols[i]);
    const gs_text_acts t = {v[0], v[1], v[2], v[3], v[4], v[5], v[6]};
    in_layout d = layout(w->in, N, blocks_of(w, kvb));
    const gs_paged_batch pb = {N, d.cu, d.kv_len, d.bt, d.mb, 1, kvb};
    /* The table is act-dtype: a wider residual gets its rows through h and
     * one conversion (as text.c does). */
    const int wide = t.x.dt != t.h.dt;
    int rc = gs_k_embed(m->be, wide ? t.h : t.x, m->w->embed, d.ids);
    if (!rc && wide)
        rc = gs_k_copy(m->be, t.x, t.h);
    if (!rc)
        rc = gs_text_layers(m, sc->kv, &t, d.pos, d.slots, &pb);
    if (!rc)
        rc = gs_k_matmul(m->be, gs_mat_make(w->logits, GS_DT_F32, N, m->cfg.text.vocab_size), t.h,
                         m->w->lm_head, NULL, 0);
    return rc;
}

int gs_decode_step(gs_model *m, gs_kv_cache *kv, const gs_text_batch *b, const gs_sample_batch *s,
                   int32_t *ids, int *handled)
{
    gs_decode_ws *w = m->dec;
    *handled = 0;
    if (!w || !qualifies(m, w, kv, b))
        return 0;
    *handled = 1;
    int32_t max_kv = 0;
    for (int32_t i = 0; i < b->n_seqs; i++)
        max_kv = b->kv_len[i] > max_kv ? b->kv_len[i] : max_kv;
    const int32_t N = batch_bucket(b->n_seqs), kvb = ctx_bucket(w, max_kv);
    size_t len = pack(w, b, N, blocks_of(w, kvb));
    int rc = gs_buf_upload(m->be, w->in, w->host, sizeof(int32_t) * len);
    if (rc)
        return rc;
    step_ctx sc = {w, kv, N, kvb};
    gs_graph_run_how how;
    rc = gs_graph_cache_run(m, &w->graphs, N, kvb, body, &sc, "the decode step (batch, context)",
                            &how);
    if (rc)
        return rc;
    if (how == GS_GRAPH_REPLAYED)
        m->gstats.replays++;
    else
        m->gstats.eager++;
    if (how == GS_GRAPH_RECORDED)
        m->gstats.captures++;
    gs_mat lg = gs_mat_make(w->logits, GS_DT_F32, b->n_seqs, m->cfg.text.vocab_size);
    return gs_model__sample(m, lg, s, ids);
}

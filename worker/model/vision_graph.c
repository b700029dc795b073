/* vision_graph.c - the vision tower through recorded graphs, by patch
 * bucket (on with gs_model_enable_graphs).
 *
 * A batch of N patches (one or several images) is padded to a bucket P
 * (multiples of 256 up to 4096, then of 1024, at most MAX_PATCHES) and runs
 * in a fixed workspace: per-patch coordinates [4, P] and MAX_SEGS + 1
 * segment bounds are packed into one upload, the pixels go to the same
 * address every time, so the ops of every batch with the same (P, L) are
 * identical; they are recorded once and replayed. L, the bound on segment
 * lengths that sizes the attention launch, is the power of two at or above
 * the longest image. The padded patches form their own short segments (at
 * most PAD_SEG long, so their attention costs little), get zero pixels and
 * a harmless merge x merge grid; their output rows are not copied out.
 *
 * As in decode.c: a new (P, L) runs op by op first, then is recorded
 * (gs_graph_cache_run); after a failed recording batches take the op-by-op
 * path of vision.c. The workspace grows to the largest bucket seen (which
 * drops the graphs: they bake addresses).
 * Owns the workspace and its graphs. Single-threaded, as the model. */
#include "model_impl.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

enum { PAD_SEG = 64, MAX_SEGS = 64, MAX_PATCHES = 32768, MIN_WS_PATCHES = 4096 };

struct gs_vision_ws {
    int64_t cap;           /* patches the workspace holds */
    void *buf;             /* backend: inputs | output | activations, laid out per P */
    size_t bytes;          /* of buf */
    int32_t *host;         /* staging of the inputs [4 * cap + MAX_SEGS + 1] */
    gs_graph_cache graphs; /* keyed by (patch bucket, longest-image bucket) */
};

static int64_t patch_bucket(int64_t n)
{
    if (n <= 4096)
        return (n + 255) / 256 * 256;
    return (n + 1023) / 1024 * 1024;
}

void gs_vision_ws_free(gs_model *m)
{
    gs_vision_ws *w = m->vis;
    if (!w)
        return;
    gs_graph_cache_free(m->be, &w->graphs);
    gs_buf_free(m->be, w->buf);
    free(w->host);
    free(w);
    m->vis = NULL;
}

/* The workspace layout for P patches, over buf. */
typedef struct {
    int32_t *d_in; /* hw4 [4, P] | cu [MAX_SEGS + 1] */
    gs_mat out;    /* [P / merge^2, out_hidden] */
    gs_vision_acts v;
} vlayout;

static size_t layout_bytes(const gs_model *m, int64_t P)
{
    const int64_t mm = (int64_t)m->cfg.vision.spatial_merge_size * m->cfg.vision.spatial_merge_size;
    const size_t es = gs_dtype_size(gs_backend_act_dtype(m->be));
    return sizeof(int32_t) * (size_t)(4 * P + MAX_SEGS + 1) + 256 +
           (size_t)(P / mm) * (size_t)m->cfg.vision.out_hidden_size * es + 256 +
           gs_vision_acts_bytes(m, P);
}

static int layout(const gs_model *m, const gs_vision_ws *w, int64_t P, vlayout *l)
{
    const int64_t mm = (int64_t)m->cfg.vision.spatial_merge_size * m->cfg.vision.spatial_merge_size;
    gs_scratch s = {m->be, w->buf, 0, w->bytes};
    l->d_in = gs_scratch_take(&s, sizeof(int32_t) * (size_t)(4 * P + MAX_SEGS + 1));
    l->out = gs_scratch_mat(&s, gs_backend_act_dtype(m->be), P / mm, m->cfg.vision.out_hidden_size);
    if (!l->d_in || !l->out.data)
        return GS_ENOMEM;
    return gs_vision_acts_make(m, &s, P, &l->v);
}

/* A workspace for at least P patches (the old one and its graphs go). */
static int ensure(gs_model *m, int64_t P)
{
    if (m->vis && m->vis->cap >= P)
        return 0;
    int no_record = m->vis ? m->vis->graphs.no_record : 0;
    gs_vision_ws_free(m);
    gs_vision_ws *w = calloc(1, sizeof *w);
    if (!w)
        return GS_ENOMEM;
    w->cap = P > MIN_WS_PATCHES ? P : MIN_WS_PATCHES;
    w->bytes = layout_bytes(m, w->cap);
    w->buf = gs_buf_alloc(m->be, w->bytes);
    w->host = malloc(sizeof(int32_t) * (size_t)(4 * w->cap + MAX_SEGS + 1));
    w->graphs.no_record = no_record;
    m->vis = w;
    if (!w->buf || !w->host) {
        gs_vision_ws_free(m);
        return GS_ENOMEM;
    }
    gs_log_info("model: vision graph workspace for %lld patches (%.1f MB)", (long long)w->cap,
                w->bytes / 1e6);
    return 0;
}

typedef struct {
    const vlayout *l;
    int64_t P;
    int32_t L;
} tower_ctx;

static int body(gs_model *m, void *ctx)
{
    const tower_ctx *tc = ctx;
    const vlayout *l = tc->l;
    return gs_vision_body(m, &l->v, l->d_in, l->d_in + 4 * tc->P, MAX_SEGS, tc->L, l->out);
}

int gs_vision_graph_run(gs_model *m, const float *pixels, int64_t N, const int32_t *hw4,
                        const int32_t *cu, int32_t n_seg, int32_t max_len, gs_mat out, int *handled)
{
    *handled = 0;
    const int32_t merge = m->cfg.vision.spatial_merge_size;
    const int64_t P = patch_bucket(N);
    if (!m->graphs || m->tap || P > MAX_PATCHES || (m->vis && m->vis->graphs.no_record) ||
        n_seg + (P - N + PAD_SEG - 1) / PAD_SEG > MAX_SEGS || P % (merge * merge))
        return 0;
    *handled = 1;
    int32_t L = PAD_SEG;
    while (L < max_len)
        L *= 2;
    int rc = ensure(m, P);
    if (rc)
        return rc;
    gs_vision_ws *w = m->vis;
    vlayout l;
    if ((rc = layout(m, w, P, &l)))
        return rc;

    /* Inputs: the real patches' coordinates (row stride N -> P), padding
     * patches at (0, 0) of a merge x merge grid, segments padded with
     * PAD_SEG-long ones and then empty ones. */
    int32_t *h = w->host, *hcu = w->host + 4 * P;
    for (int a = 0; a < 4; a++) {
        memcpy(h + a * P, hw4 + a * N, sizeof(int32_t) * (size_t)N);
        for (int64_t i = N; i < P; i++)
            h[a * P + i] = a < 2 ? 0 : merge;
    }
    memcpy(hcu, cu, sizeof(int32_t) * (size_t)(n_seg + 1));
    int32_t s = n_seg;
    while (hcu[s] < P) {
        hcu[s + 1] = hcu[s] + PAD_SEG < P ? hcu[s] + PAD_SEG : (int32_t)P;
        s++;
    }
    for (; s < MAX_SEGS; s++)
        hcu[s + 1] = (int32_t)P;
    const int64_t pin = l.v.px32.cols;
    rc = gs_buf_upload(m->be, l.d_in, h, sizeof(int32_t) * (size_t)(4 * P + MAX_SEGS + 1));
    if (!rc)
        rc = gs_buf_upload(m->be, l.v.px32.data, pixels, sizeof(float) * (size_t)(N * pin));
    if (!rc && P > N)
        rc = gs_buf_zero(m->be, (float *)l.v.px32.data + N * pin,
                         sizeof(float) * (size_t)((P - N) * pin));
    if (rc)
        return rc;

    tower_ctx tc = {&l, P, L};
    gs_graph_run_how how;
    rc = gs_graph_cache_run(m, &w->graphs, (int32_t)P, L, body, &tc,
                            "the vision tower (patches, longest image)", &how);
    if (rc)
        return rc;
    if (how == GS_GRAPH_REPLAYED)
        m->gstats.vision_replays++;
    if (how == GS_GRAPH_RECORDED)
        m->gstats.vision_captures++;
    return gs_k_copy(m->be, out, gs_mat_rows(l.out, 0, out.rows));
}

int gs_vision_ws_graphs(const gs_model *m)
{
    return m->vis ? m->vis->graphs.n : 0;
}

size_t gs_vision_ws_bytes(const gs_model *m)
{
    return m->vis ? m->vis->bytes : 0;
}

/* weights.c - binds checkpoint tensors to backend weights (weights.h).
 * Owns every gs_weight / gs_vec it creates, and a reference to the
 * checkpoint (gs_st) when some weights use its mapping in place.
 *
 * What is mapped and what is copied (weights.h has the why):
 *   mapped (CPU, checkpoint dtype = stored dtype, dtype-aligned): every
 *     load_mat matrix: embed_tokens, lm_head, o_proj, mlp.gate_up_proj,
 *     down_proj, the vision patch_embed, position table, attn.qkv,
 *     attn.proj, mlp.down_proj, merger proj / down_proj;
 *   copied: load_cat (text q|k|v, vision mlp gate|up, merger gate|up),
 *     load_downsample (permuted conv), every gs_vec (F32), and any matrix
 *     the backend will not wrap (CUDA, weights_f32, unaligned data).
 *   quantized at load (int8 / int4 from a float checkpoint): every linear
 *     matrix and lm_head (weights.h has the policy), into host buffers
 *     that gs_weight_new_quant copies;
 *   pre-quantized (a glmserve-quantize folder): NAME + NAME_scale mapped
 *     in place (gs_weight_wrap_quant) like a BF16 matrix, fused ones
 *     concatenated.
 * A copied tensor's checkpoint pages are evicted right after the copy.
 * Single-threaded, but for the threads of gs_quantize_rows_mt. */
#include "weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/log.h"

typedef struct {
    gs_backend *be;
    const gs_st *st;
    gs_diag *d;
    gs_weights_progress_fn progress;
    void *user;
    size_t done, total;
    gs_weights *w;
    /* Binding pass (dry = 1): the load_* helpers only look their tensors up
     * (find) and mark them in used[], by gs_st_at index; nothing is read or
     * made. Then tensors nobody looked up are an error, before any data is
     * touched. used is NULL for dummy weights. */
    int dry;
    unsigned char *used;       /* [gs_st_count] */
    gs_weight_format fmt;      /* load-time quantization (INT8 / INT4), else none */
    int prequant;              /* the folder holds quantized tensors (cfg->quant_bits) */
    gs_weights_visit_fn visit; /* gs_weights_plan: told of each matrix in the binding pass */
    void *visit_user;
} loader;

/* A matrix found in the checkpoint: float (s NULL) or quantized (qdt
 * GS_DT_Q8 / Q4, s its NAME_scale). */
typedef struct {
    const gs_st_tensor *t, *s;
    gs_dtype qdt;
} mat_src;

static void tick(loader *L, size_t bytes)
{
    L->done += bytes;
    if (L->progress)
        L->progress(L->user, L->done, L->total);
}

static int to_gs_dtype(gs_st_dtype dt, gs_dtype *out)
{
    switch (dt) {
    case GS_ST_BF16:
        *out = GS_DT_BF16;
        return 0;
    case GS_ST_F16:
        *out = GS_DT_F16;
        return 0;
    case GS_ST_F32:
        *out = GS_DT_F32;
        return 0;
    default:
        return GS_EUNSUPPORTED;
    }
}

static const gs_st_tensor *find(loader *L, const char *name, int64_t numel)
{
    const gs_st_tensor *t = gs_st_get(L->st, name);
    if (!t) {
        gs_diag_set(L->d, GS_ENOENT, "weights: tensor %s is missing", name);
        return NULL;
    }
    if (t->numel != numel) {
        gs_diag_set(L->d, GS_EFORMAT, "weights: tensor %s has %lld elements, expected %lld", name,
                    (long long)t->numel, (long long)numel);
        return NULL;
    }
    gs_dtype dt = GS_DT_F32;
    if (to_gs_dtype(t->dtype, &dt)) {
        gs_diag_set(L->d, GS_EFORMAT, "weights: tensor %s has dtype %s (want BF16/F16/F32)", name,
                    gs_st_dtype_name(t->dtype));
        return NULL;
    }
    if (L->used)
        L->used[gs_st_index(L->st, t)] = 1;
    return t;
}

/* Matrix `name` [rows, cols]: a float tensor, or in a quantized folder a
 * quantized one (not for tables) with its NAME_scale. 0 or the diag's code. */
static int find_mat(loader *L, const char *name, int64_t rows, int64_t cols, gs_weight_class c,
                    mat_src *m)
{
    memset(m, 0, sizeof *m);
    if (L->dry && L->visit)
        L->visit(L->visit_user, name, rows, cols, c);
    const gs_st_tensor *t = gs_st_get(L->st, name);
    if (!t || !L->prequant || (t->dtype != GS_ST_I8 && t->dtype != GS_ST_U8)) {
        m->t = find(L, name, rows * cols);
        return m->t ? 0 : (L->d ? L->d->code : GS_EFORMAT);
    }
    if (c == GS_WCLASS_TABLE)
        return gs_diag_set(L->d, GS_EFORMAT,
                           "weights: tensor %s is quantized, but it is a table that stays in a "
                           "float dtype",
                           name);
    m->qdt = t->dtype == GS_ST_I8 ? GS_DT_Q8 : GS_DT_Q4;
    char sname[192];
    snprintf(sname, sizeof sname, "%s_scale", name);
    m->s = gs_st_get(L->st, sname);
    if (t->nbytes != gs_quant_q_bytes(m->qdt, rows, cols))
        return gs_diag_set(L->d, GS_EFORMAT, "weights: tensor %s has %zu bytes, expected %zu (%s)",
                           name, t->nbytes, gs_quant_q_bytes(m->qdt, rows, cols),
                           gs_dtype_name(m->qdt));
    if (!m->s || m->s->dtype != GS_ST_F32 ||
        (size_t)m->s->numel != gs_quant_n_scales(m->qdt, rows, cols))
        return gs_diag_set(L->d, GS_EFORMAT,
                           "weights: tensor %s is quantized (%s) but %s is %s (want F32 x %zu)",
                           name, gs_dtype_name(m->qdt), sname, m->s ? "mis-shaped" : "missing",
                           gs_quant_n_scales(m->qdt, rows, cols));
    m->t = t;
    if (L->used) {
        L->used[gs_st_index(L->st, t)] = 1;
        L->used[gs_st_index(L->st, m->s)] = 1;
    }
    return 0;
}

/* Makes a quantized weight from host q and s (borrowed), and counts it. */
static int new_quant(loader *L, const char *name, gs_dtype qdt, int64_t rows, int64_t cols,
                     const void *q, const float *s, gs_weight **out)
{
    int rc = gs_weight_new_quant(L->be, qdt, rows, cols, q, s, out);
    if (rc)
        return gs_diag_set(L->d, rc, "weights: %s: backend refused %s (%s)", name,
                           gs_dtype_name(qdt), gs_strerror(rc));
    L->w->quant_bytes += gs_weight_bytes(*out);
    return 0;
}

/* Quantizes a float host matrix (any alignment) to qdt and makes the weight. */
static int quantize_new(loader *L, const char *name, const void *src, gs_dtype dt, gs_dtype qdt,
                        int64_t rows, int64_t cols, gs_weight **out)
{
    size_t nq = gs_quant_q_bytes(qdt, rows, cols), ns = gs_quant_n_scales(qdt, rows, cols);
    void *q = malloc(nq);
    float *sc = malloc(ns * sizeof *sc);
    int rc = q && sc ? 0 : GS_ENOMEM;
    if (!rc && (rc = gs_quantize_rows_mt(qdt, src, dt, rows, cols, q, sc, 0)))
        gs_diag_set(L->d, rc, "weights: %s: cannot quantize to %s (a value is not finite?)", name,
                    gs_dtype_name(qdt));
    if (!rc)
        rc = new_quant(L, name, qdt, rows, cols, q, sc, out);
    free(q);
    free(sc);
    return rc;
}

/* A pre-quantized matrix: in place in the mapping when the backend can,
 * else copied (scales realigned when the file left them unaligned). */
static int load_prequant(loader *L, const char *name, const mat_src *m, int64_t rows, int64_t cols,
                         gs_weight **out)
{
    const float *s = m->s->data;
    if ((uintptr_t)s % 4 == 0) {
        int wr = gs_weight_wrap_quant(L->be, m->qdt, rows, cols, m->t->data, s, out);
        if (wr == 0) {
            if (!L->w->st)
                L->w->st = gs_st_ref(L->st);
            L->w->mapped_bytes += m->t->nbytes + m->s->nbytes;
            L->w->quant_bytes += gs_weight_bytes(*out);
            gs_st_prefetch(L->st, m->t);
            gs_st_prefetch(L->st, m->s);
            tick(L, m->t->nbytes + m->s->nbytes);
            return 0;
        }
        if (wr != GS_ENOTSUP)
            return gs_diag_set(L->d, wr, "weights: %s: backend refused (%s)", name,
                               gs_strerror(wr));
    }
    float *tmp = NULL;
    if ((uintptr_t)s % 4) {
        if (!(tmp = malloc(m->s->nbytes)))
            return GS_ENOMEM;
        memcpy(tmp, s, m->s->nbytes);
        s = tmp;
    }
    int rc = new_quant(L, name, m->qdt, rows, cols, m->t->data, s, out);
    free(tmp);
    if (rc)
        return rc;
    gs_st_evict(L->st, m->t);
    gs_st_evict(L->st, m->s);
    tick(L, m->t->nbytes + m->s->nbytes);
    return 0;
}

/* The first tensor of st that the binding pass did not use, and how many
 * there are: a config with fewer layers (or blocks) than the checkpoint
 * would otherwise load and run a different model without a word. */
static int check_all_used(loader *L)
{
    size_t n = gs_st_count(L->st), n_unused = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (!L->used[i] && n_unused++ == 0)
            first = i;
    if (n_unused == 0)
        return 0;
    return gs_diag_set(L->d, GS_EFORMAT,
                       "weights: %zu tensor%s of the checkpoint not used by the model that "
                       "config.json describes (first: %s); do num_hidden_layers / depth match the "
                       "checkpoint?",
                       n_unused, n_unused == 1 ? "" : "s", gs_st_at(L->st, first)->name);
}

/* One [rows, cols] matrix: in place in the mapping when the backend can
 * compute from it as it is, else a copy (then the pages are evicted). */
static int load_mat(loader *L, const char *name, int64_t rows, int64_t cols, gs_weight_class c,
                    gs_weight **out)
{
    mat_src m;
    int frc = find_mat(L, name, rows, cols, c, &m);
    if (frc || L->dry)
        return frc;
    if (m.s)
        return load_prequant(L, name, &m, rows, cols, out);
    const gs_st_tensor *t = m.t;
    gs_dtype dt = GS_DT_F32;
    to_gs_dtype(t->dtype, &dt);
    gs_dtype qdt = gs_weights_qdtype(L->fmt, c);
    if (gs_dtype_is_quant(qdt)) {
        int rc = quantize_new(L, name, t->data, dt, qdt, rows, cols, out);
        if (rc)
            return rc;
        gs_st_evict(L->st, t);
        tick(L, t->nbytes);
        return 0;
    }
    if ((uintptr_t)t->data % gs_dtype_size(dt) == 0) {
        int wr = gs_weight_wrap_host(L->be, t->data, dt, rows, cols, out);
        if (wr == 0) {
            if (!L->w->st)
                L->w->st = gs_st_ref(L->st); /* keeps the mapping while we use it */
            L->w->mapped_bytes += t->nbytes;
            gs_st_prefetch(L->st, t);
            tick(L, t->nbytes);
            return 0;
        }
        if (wr != GS_ENOTSUP)
            return gs_diag_set(L->d, wr, "weights: %s: backend refused (%s)", name,
                               gs_strerror(wr));
    }
    const void *src = t->data;
    void *tmp = NULL;
    if ((uintptr_t)src % gs_dtype_size(dt)) { /* unaligned in the file: copy */
        tmp = malloc(t->nbytes);
        if (!tmp)
            return GS_ENOMEM;
        memcpy(tmp, src, t->nbytes);
        src = tmp;
    }
    int rc = gs_weight_new(L->be, src, dt, rows, cols, out);
    free(tmp);
    if (rc)
        return gs_diag_set(L->d, rc, "weights: %s: backend refused (%s)", name, gs_strerror(rc));
    gs_st_evict(L->st, t);
    tick(L, t->nbytes);
    return 0;
}

/* Row-wise concatenation of n pre-quantized parts (same qdt): the q bytes
 * and the scales each concatenate, as the rows do. */
static int cat_prequant(loader *L, const char *const *names, const mat_src *m, const int64_t *rows,
                        int n, int64_t cols, int64_t total_rows, gs_weight **out)
{
    gs_dtype qdt = m[0].qdt;
    size_t nq = gs_quant_q_bytes(qdt, total_rows, cols),
           ns = gs_quant_n_scales(qdt, total_rows, cols);
    char *q = malloc(nq);
    char *sc = malloc(ns * sizeof(float));
    if (!q || !sc) {
        free(q);
        free(sc);
        return GS_ENOMEM;
    }
    size_t oq = 0, os = 0;
    for (int i = 0; i < n; i++) {
        memcpy(q + oq, m[i].t->data, m[i].t->nbytes);
        memcpy(sc + os, m[i].s->data, m[i].s->nbytes);
        oq += m[i].t->nbytes;
        os += m[i].s->nbytes;
    }
    (void)rows;
    int rc = new_quant(L, names[0], qdt, total_rows, cols, q, (const float *)sc, out);
    free(q);
    free(sc);
    for (int i = 0; i < n && !rc; i++) {
        gs_st_evict(L->st, m[i].t);
        gs_st_evict(L->st, m[i].s);
        tick(L, m[i].t->nbytes + m[i].s->nbytes);
    }
    return rc;
}

/* Row-wise concatenation of n tensors with the same cols into one weight;
 * all parts must share a dtype. perm: optional element permutation applied
 * within each row of the single part (downsample), NULL for none. */
static int load_cat(loader *L, const char *const *names, const int64_t *rows, int n, int64_t cols,
                    gs_weight **out)
{
    const gs_st_tensor *t[4];
    mat_src m[4];
    int64_t total_rows = 0;
    for (int i = 0; i < n; i++) {
        int frc = find_mat(L, names[i], rows[i], cols, GS_WCLASS_LINEAR, &m[i]);
        if (frc)
            return frc;
        t[i] = m[i].t;
        if (t[i]->dtype != t[0]->dtype)
            return gs_diag_set(L->d, GS_EFORMAT, "weights: %s and %s differ in dtype", names[0],
                               names[i]);
        total_rows += rows[i];
    }
    if (L->dry)
        return 0;
    if (m[0].s)
        return cat_prequant(L, names, m, rows, n, cols, total_rows, out);
    gs_dtype dt = GS_DT_F32;
    to_gs_dtype(t[0]->dtype, &dt);
    size_t es = gs_dtype_size(dt);
    char *buf = malloc((size_t)(total_rows * cols) * es);
    if (!buf)
        return GS_ENOMEM;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        memcpy(buf + off, t[i]->data, t[i]->nbytes);
        off += t[i]->nbytes;
    }
    gs_dtype qdt = gs_weights_qdtype(L->fmt, GS_WCLASS_LINEAR);
    int rc = gs_dtype_is_quant(qdt) /* rows are independent: quantize after fusing */
                 ? quantize_new(L, names[0], buf, dt, qdt, total_rows, cols, out)
                 : gs_weight_new(L->be, buf, dt, total_rows, cols, out);
    free(buf);
    if (rc)
        return L->d && L->d->code == rc ? rc
                                        : gs_diag_set(L->d, rc, "weights: %s: backend refused (%s)",
                                                      names[0], gs_strerror(rc));
    for (int i = 0; i < n; i++) {
        gs_st_evict(L->st, t[i]);
        tick(L, t[i]->nbytes);
    }
    return 0;
}

/* Concatenation of n F32-converted vectors into one gs_vec. A NULL name
 * contributes zeros (no bias). */
static int load_vec_cat(loader *L, const char *const *names, const int64_t *lens, int n,
                        gs_vec *out)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += lens[i];
    if (L->dry) {
        for (int i = 0; i < n; i++)
            if (names[i] && !find(L, names[i], lens[i]))
                return L->d ? L->d->code : GS_EFORMAT;
        return 0;
    }
    float *buf = calloc((size_t)total, sizeof *buf);
    if (!buf)
        return GS_ENOMEM;
    int64_t off = 0;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (names[i]) {
            const gs_st_tensor *t = find(L, names[i], lens[i]);
            rc = t ? gs_st_read_f32(L->st, names[i], buf + off, (size_t)lens[i], L->d)
                   : (L->d ? L->d->code : GS_EFORMAT);
            if (!rc) {
                gs_st_evict(L->st, t);
                tick(L, t->nbytes);
            }
        }
        off += lens[i];
    }
    if (!rc)
        rc = gs_vec_new(L->be, buf, total, out);
    free(buf);
    return rc;
}

static int load_vec(loader *L, const char *name, int64_t n, gs_vec *out)
{
    return load_vec_cat(L, &name, &n, 1, out);
}

/* Downsample Conv2d [o, c, 2, 2] -> [o, (kh*2+kw)*c + ci]. */
static int load_downsample(loader *L, const char *name, int64_t o, int64_t c, gs_weight **out)
{
    const gs_st_tensor *t = find(L, name, o * c * 4);
    if (!t)
        return L->d ? L->d->code : GS_EFORMAT;
    if (L->dry && L->visit)
        L->visit(L->visit_user, name, o, 4 * c, GS_WCLASS_TABLE);
    if (L->dry)
        return 0;
    gs_dtype dt = GS_DT_F32;
    to_gs_dtype(t->dtype, &dt);
    size_t es = gs_dtype_size(dt);
    char *buf = malloc(t->nbytes);
    if (!buf)
        return GS_ENOMEM;
    const char *src = t->data;
    for (int64_t r = 0; r < o; r++)
        for (int64_t ci = 0; ci < c; ci++)
            for (int k = 0; k < 4; k++) /* k = kh * 2 + kw */
                memcpy(buf + ((size_t)(r * 4 * c + k * c + ci)) * es,
                       src + ((size_t)((r * c + ci) * 4 + k)) * es, es);
    int rc = gs_weight_new(L->be, buf, dt, o, 4 * c, out);
    free(buf);
    if (rc)
        return gs_diag_set(L->d, rc, "weights: %s: backend refused", name);
    gs_st_evict(L->st, t);
    tick(L, t->nbytes);
    return 0;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_) {                                                                                 \
            gs_weights_free(L->be, L->w);                                                          \
            L->w = NULL;                                                                           \
            return rc_;                                                                            \
        }                                                                                          \
    } while (0)

static int alloc_weights(const gs_model_config *cfg, gs_weights **out)
{
    gs_weights *w = calloc(1, sizeof *w);
    if (!w)
        return GS_ENOMEM;
    w->n_layers = cfg->text.num_hidden_layers;
    w->n_blocks = cfg->vision.depth;
    w->layers = calloc((size_t)w->n_layers, sizeof *w->layers);
    w->blocks = calloc((size_t)w->n_blocks, sizeof *w->blocks);
    if (!w->layers || !w->blocks) {
        free(w->layers);
        free(w->blocks);
        free(w);
        return GS_ENOMEM;
    }
    *out = w;
    return 0;
}

static int load_all(loader *L, const gs_model_config *cfg)
{
    const gs_text_config *tc = &cfg->text;
    const gs_vision_config *vc = &cfg->vision;
    gs_weights *w = L->w;
    const int64_t H = tc->hidden_size, V = tc->vocab_size, I = tc->intermediate_size;
    const int64_t qd = (int64_t)tc->num_attention_heads * tc->head_dim;
    const int64_t kvd = (int64_t)tc->num_key_value_heads * tc->head_dim;
    char n[4][160];

    TRY(load_mat(L, "model.language_model.embed_tokens.weight", V, H, GS_WCLASS_TABLE, &w->embed));
    for (int l = 0; l < w->n_layers; l++) {
        gs_text_layer_w *ly = &w->layers[l];
        const char *p = "model.language_model.layers";
#define NM(i, fmt) snprintf(n[i], sizeof n[i], "%s.%d." fmt, p, l)
        NM(0, "input_layernorm.weight");
        TRY(load_vec(L, n[0], H, &ly->input_ln));
        NM(0, "post_self_attn_layernorm.weight");
        TRY(load_vec(L, n[0], H, &ly->post_self_attn_ln));
        NM(0, "post_attention_layernorm.weight");
        TRY(load_vec(L, n[0], H, &ly->post_attention_ln));
        NM(0, "post_mlp_layernorm.weight");
        TRY(load_vec(L, n[0], H, &ly->post_mlp_ln));
        NM(0, "self_attn.q_proj.weight");
        NM(1, "self_attn.k_proj.weight");
        NM(2, "self_attn.v_proj.weight");
        {
            const char *names[3] = {n[0], n[1], n[2]};
            const int64_t rows[3] = {qd, kvd, kvd};
            TRY(load_cat(L, names, rows, 3, H, &ly->qkv));
        }
        NM(0, "self_attn.q_proj.bias");
        NM(1, "self_attn.k_proj.bias");
        NM(2, "self_attn.v_proj.bias");
        {
            const char *names[3] = {n[0], n[1], n[2]};
            const int64_t lens[3] = {qd, kvd, kvd};
            TRY(load_vec_cat(L, names, lens, 3, &ly->qkv_bias));
        }
        NM(0, "self_attn.o_proj.weight");
        TRY(load_mat(L, n[0], H, qd, GS_WCLASS_LINEAR, &ly->o));
        NM(0, "mlp.gate_up_proj.weight");
        TRY(load_mat(L, n[0], 2 * I, H, GS_WCLASS_LINEAR, &ly->gu));
        NM(0, "mlp.down_proj.weight");
        TRY(load_mat(L, n[0], H, I, GS_WCLASS_LINEAR, &ly->down));
#undef NM
    }
    TRY(load_vec(L, "model.language_model.norm.weight", H, &w->norm));
    /* Tied: lm_head is the embedding (quantized apart when the format says
     * so), unless a quantized folder stores lm_head.weight quantized. */
    int own_head = !cfg->tie_word_embeddings ||
                   (L->prequant && gs_st_get(L->st, "lm_head.weight_scale") != NULL);
    TRY(load_mat(L, own_head ? "lm_head.weight" : "model.language_model.embed_tokens.weight", V, H,
                 GS_WCLASS_HEAD, &w->lm_head));

    const int64_t vh = vc->hidden_size, oh = vc->out_hidden_size, vi = vc->intermediate_size;
    const int64_t pin =
        (int64_t)vc->in_channels * vc->temporal_patch_size * vc->patch_size * vc->patch_size;
    TRY(load_mat(L, "model.visual.patch_embed.proj.weight", vh, pin, GS_WCLASS_TABLE,
                 &w->patch_embed));
    TRY(load_vec(L, "model.visual.patch_embed.proj.bias", vh, &w->patch_bias));
    TRY(load_vec(L, "model.visual.post_conv_layernorm.weight", vh, &w->post_conv_ln));
    TRY(load_mat(L, "model.visual.embeddings.position_embedding.weight", vc->num_positions, vh,
                 GS_WCLASS_TABLE, &w->pos_embed));
    for (int b = 0; b < w->n_blocks; b++) {
        gs_vision_block_w *bl = &w->blocks[b];
#define NM(i, fmt) snprintf(n[i], sizeof n[i], "model.visual.blocks.%d." fmt, b)
        NM(0, "norm1.weight");
        TRY(load_vec(L, n[0], vh, &bl->norm1));
        NM(0, "norm2.weight");
        TRY(load_vec(L, n[0], vh, &bl->norm2));
        NM(0, "attn.qkv.weight");
        TRY(load_mat(L, n[0], 3 * vh, vh, GS_WCLASS_LINEAR, &bl->qkv));
        NM(0, "attn.qkv.bias");
        if (gs_st_get(L->st, n[0]))
            TRY(load_vec(L, n[0], 3 * vh, &bl->qkv_bias));
        NM(0, "attn.proj.weight");
        TRY(load_mat(L, n[0], vh, vh, GS_WCLASS_LINEAR, &bl->proj));
        NM(0, "mlp.gate_proj.weight");
        NM(1, "mlp.up_proj.weight");
        {
            const char *names[2] = {n[0], n[1]};
            const int64_t rows[2] = {oh, oh};
            TRY(load_cat(L, names, rows, 2, vh, &bl->gu));
        }
        NM(0, "mlp.down_proj.weight");
        TRY(load_mat(L, n[0], vh, oh, GS_WCLASS_LINEAR, &bl->down));
#undef NM
    }
    TRY(load_vec(L, "model.visual.post_layernorm.weight", vh, &w->post_ln));
    TRY(load_downsample(L, "model.visual.downsample.weight", oh, vh, &w->downsample));
    TRY(load_vec(L, "model.visual.downsample.bias", oh, &w->downsample_bias));
    TRY(load_mat(L, "model.visual.merger.proj.weight", oh, oh, GS_WCLASS_LINEAR, &w->merger_proj));
    TRY(load_vec(L, "model.visual.merger.post_projection_norm.weight", oh, &w->merger_ln_w));
    TRY(load_vec(L, "model.visual.merger.post_projection_norm.bias", oh, &w->merger_ln_b));
    {
        const char *names[2] = {"model.visual.merger.gate_proj.weight",
                                "model.visual.merger.up_proj.weight"};
        const int64_t rows[2] = {vi, vi};
        TRY(load_cat(L, names, rows, 2, oh, &w->merger_gu));
    }
    TRY(load_mat(L, "model.visual.merger.down_proj.weight", oh, vi, GS_WCLASS_LINEAR,
                 &w->merger_down));
    return 0;
}

static size_t sum_weight_bytes(const gs_weights *w)
{
    size_t b = 0;
#define W(x) b += (x) ? gs_weight_bytes(x) : 0
    W(w->embed);
    W(w->lm_head);
    W(w->patch_embed);
    W(w->pos_embed);
    W(w->downsample);
    W(w->merger_proj);
    W(w->merger_gu);
    W(w->merger_down);
    for (int l = 0; l < w->n_layers; l++) {
        W(w->layers[l].qkv);
        W(w->layers[l].o);
        W(w->layers[l].gu);
        W(w->layers[l].down);
    }
    for (int i = 0; i < w->n_blocks; i++) {
        W(w->blocks[i].qkv);
        W(w->blocks[i].proj);
        W(w->blocks[i].gu);
        W(w->blocks[i].down);
    }
#undef W
    return b;
}

int gs_weights_load(gs_backend *be, const gs_model_config *cfg, const gs_st *st,
                    gs_weight_format fmt, gs_weights_progress_fn progress, void *user,
                    gs_weights **out, gs_diag *d)
{
    *out = NULL;
    int rc = gs_model_config_check_weights(cfg, st, NULL, d);
    if (rc)
        return rc;
    loader L = {be,   st,  d, progress, user, 0, 0, NULL, 1, NULL, fmt, cfg->quant_bits != 0,
                NULL, NULL};
    if (L.prequant)
        L.fmt = GS_WEIGHTS_ASIS; /* the folder says what is quantized: nothing at load */
    for (size_t i = 0; i < gs_st_count(st); i++)
        L.total += gs_st_at(st, i)->nbytes;
    L.used = calloc(gs_st_count(st) + 1, 1);
    if (!L.used)
        return GS_ENOMEM;
    rc = alloc_weights(cfg, &L.w);
    if (rc) {
        free(L.used);
        return rc;
    }
    /* With tied embeddings lm_head is embed_tokens; a stored lm_head.weight
     * is ignored, as transformers ties it over whatever was loaded. */
    const gs_st_tensor *lm = gs_st_get(st, "lm_head.weight");
    if (cfg->tie_word_embeddings && lm)
        L.used[gs_st_index(st, lm)] = 1;
    loader *Lp = &L;
    rc = load_all(Lp, cfg); /* binding pass: names and sizes only */
    if (!rc)
        rc = check_all_used(Lp);
    if (!rc) {
        L.dry = 0;
        rc = load_all(Lp, cfg); /* frees L.w on failure */
    } else {
        gs_weights_free(be, L.w);
    }
    free(L.used);
    if (rc)
        return rc;
    L.w->bytes = sum_weight_bytes(L.w);
    L.w->fmt = cfg->quant_bits == 8                                          ? GS_WEIGHTS_INT8
               : cfg->quant_bits == 4                                        ? GS_WEIGHTS_INT4
               : gs_dtype_is_quant(gs_weights_qdtype(fmt, GS_WCLASS_LINEAR)) ? fmt
                                                                             : GS_WEIGHTS_BF16;
    gs_log_info("weights: %.2f GB in place in the checkpoint mapping, %.2f GB copied; %.2f GB "
                "quantized (%s)",
                L.w->mapped_bytes / 1e9, (L.w->bytes - L.w->mapped_bytes) / 1e9,
                L.w->quant_bytes / 1e9,
                L.prequant ? (cfg->quant_bits == 8 ? "int8 folder" : "int4 folder")
                : gs_dtype_is_quant(gs_weights_qdtype(fmt, GS_WCLASS_LINEAR))
                    ? (fmt == GS_WEIGHTS_INT8 ? "int8 at load" : "int4 at load")
                    : "none");
    *out = L.w;
    return 0;
}

int gs_weights_plan(const gs_model_config *cfg, const gs_st *st, gs_weights_visit_fn visit,
                    void *user, gs_diag *d)
{
    int rc = gs_model_config_check_weights(cfg, st, NULL, d);
    if (rc)
        return rc;
    loader L = {
        NULL,  st,  d, NULL, NULL, 0, 0, NULL, 1, NULL, GS_WEIGHTS_ASIS, cfg->quant_bits != 0,
        visit, user};
    L.used = calloc(gs_st_count(st) + 1, 1);
    if (!L.used || (rc = alloc_weights(cfg, &L.w))) {
        free(L.used);
        return GS_ENOMEM;
    }
    const gs_st_tensor *lm = gs_st_get(st, "lm_head.weight");
    if (cfg->tie_word_embeddings && lm)
        L.used[gs_st_index(st, lm)] = 1;
    rc = load_all(&L, cfg); /* frees L.w on failure */
    if (!rc)
        rc = check_all_used(&L);
    if (L.w) {
        free(L.w->layers);
        free(L.w->blocks);
        free(L.w);
    }
    free(L.used);
    return rc;
}

/* ---- dummy weights ----------------------------------------------------- */

static int rnd_mat(loader *L, int64_t rows, int64_t cols, gs_weight_class c, uint64_t *seed,
                   gs_weight **out)
{
    float scale = 1.0f / sqrtf((float)cols);
    gs_dtype dt = gs_weights_qdtype(L->fmt, c);
    int rc = gs_weight_new_random(L->be, dt, rows, cols, (*seed)++, scale, out);
    if (rc)
        return gs_diag_set(L->d, rc, "weights: dummy [%lld x %lld] %s: backend refused (%s)",
                           (long long)rows, (long long)cols, gs_dtype_name(dt), gs_strerror(rc));
    if (gs_dtype_is_quant(dt))
        L->w->quant_bytes += gs_weight_bytes(*out);
    return 0;
}

static int const_vec(gs_backend *be, int64_t n, float v, gs_vec *out)
{
    float *buf = malloc(sizeof *buf * (size_t)n);
    if (!buf)
        return GS_ENOMEM;
    for (int64_t i = 0; i < n; i++)
        buf[i] = v;
    int rc = gs_vec_new(be, buf, n, out);
    free(buf);
    return rc;
}

int gs_weights_dummy(gs_backend *be, const gs_model_config *cfg, gs_weight_format fmt,
                     uint64_t seed, gs_weights **out, gs_diag *d)
{
    *out = NULL;
    const gs_text_config *tc = &cfg->text;
    const gs_vision_config *vc = &cfg->vision;
    loader L0 = {be, NULL, d, NULL, NULL, 0, 0, NULL, 0, NULL, fmt, 0, NULL, NULL}, *L = &L0;
    int rc = alloc_weights(cfg, &L->w);
    if (rc)
        return rc;
    gs_weights *w = L->w;
    const int64_t H = tc->hidden_size, V = tc->vocab_size, I = tc->intermediate_size;
    const int64_t qd = (int64_t)tc->num_attention_heads * tc->head_dim;
    const int64_t kvd = (int64_t)tc->num_key_value_heads * tc->head_dim;
    TRY(rnd_mat(L, V, H, GS_WCLASS_TABLE, &seed, &w->embed));
    for (int l = 0; l < w->n_layers; l++) {
        gs_text_layer_w *ly = &w->layers[l];
        TRY(const_vec(be, H, 1.0f, &ly->input_ln));
        TRY(const_vec(be, H, 1.0f, &ly->post_self_attn_ln));
        TRY(const_vec(be, H, 1.0f, &ly->post_attention_ln));
        TRY(const_vec(be, H, 1.0f, &ly->post_mlp_ln));
        TRY(rnd_mat(L, qd + 2 * kvd, H, GS_WCLASS_LINEAR, &seed, &ly->qkv));
        TRY(const_vec(be, qd + 2 * kvd, 0.0f, &ly->qkv_bias));
        TRY(rnd_mat(L, H, qd, GS_WCLASS_LINEAR, &seed, &ly->o));
        TRY(rnd_mat(L, 2 * I, H, GS_WCLASS_LINEAR, &seed, &ly->gu));
        TRY(rnd_mat(L, H, I, GS_WCLASS_LINEAR, &seed, &ly->down));
    }
    TRY(const_vec(be, H, 1.0f, &w->norm));
    TRY(rnd_mat(L, V, H, GS_WCLASS_HEAD, &seed, &w->lm_head));
    const int64_t vh = vc->hidden_size, oh = vc->out_hidden_size, vi = vc->intermediate_size;
    const int64_t pin =
        (int64_t)vc->in_channels * vc->temporal_patch_size * vc->patch_size * vc->patch_size;
    TRY(rnd_mat(L, vh, pin, GS_WCLASS_TABLE, &seed, &w->patch_embed));
    TRY(const_vec(be, vh, 0.0f, &w->patch_bias));
    TRY(const_vec(be, vh, 1.0f, &w->post_conv_ln));
    TRY(rnd_mat(L, vc->num_positions, vh, GS_WCLASS_TABLE, &seed, &w->pos_embed));
    for (int b = 0; b < w->n_blocks; b++) {
        gs_vision_block_w *bl = &w->blocks[b];
        TRY(const_vec(be, vh, 1.0f, &bl->norm1));
        TRY(const_vec(be, vh, 1.0f, &bl->norm2));
        TRY(rnd_mat(L, 3 * vh, vh, GS_WCLASS_LINEAR, &seed, &bl->qkv));
        TRY(rnd_mat(L, vh, vh, GS_WCLASS_LINEAR, &seed, &bl->proj));
        TRY(rnd_mat(L, 2 * oh, vh, GS_WCLASS_LINEAR, &seed, &bl->gu));
        TRY(rnd_mat(L, vh, oh, GS_WCLASS_LINEAR, &seed, &bl->down));
    }
    TRY(const_vec(be, vh, 1.0f, &w->post_ln));
    TRY(rnd_mat(L, oh, 4 * vh, GS_WCLASS_TABLE, &seed, &w->downsample));
    TRY(const_vec(be, oh, 0.0f, &w->downsample_bias));
    TRY(rnd_mat(L, oh, oh, GS_WCLASS_LINEAR, &seed, &w->merger_proj));
    TRY(const_vec(be, oh, 1.0f, &w->merger_ln_w));
    TRY(const_vec(be, oh, 0.0f, &w->merger_ln_b));
    TRY(rnd_mat(L, 2 * vi, oh, GS_WCLASS_LINEAR, &seed, &w->merger_gu));
    TRY(rnd_mat(L, oh, vi, GS_WCLASS_LINEAR, &seed, &w->merger_down));
    w->bytes = sum_weight_bytes(w);
    w->fmt = gs_dtype_is_quant(gs_weights_qdtype(fmt, GS_WCLASS_LINEAR)) ? fmt : GS_WEIGHTS_BF16;
    *out = w;
    return 0;
}

void gs_weights_free(gs_backend *be, gs_weights *w)
{
    if (!w)
        return;
    gs_weight_free(be, w->embed);
    if (w->lm_head != w->embed)
        gs_weight_free(be, w->lm_head);
    gs_vec_free(be, &w->norm);
    for (int l = 0; l < w->n_layers && w->layers; l++) {
        gs_text_layer_w *ly = &w->layers[l];
        gs_vec_free(be, &ly->input_ln);
        gs_vec_free(be, &ly->post_self_attn_ln);
        gs_vec_free(be, &ly->post_attention_ln);
        gs_vec_free(be, &ly->post_mlp_ln);
        gs_weight_free(be, ly->qkv);
        gs_vec_free(be, &ly->qkv_bias);
        gs_weight_free(be, ly->o);
        gs_weight_free(be, ly->gu);
        gs_weight_free(be, ly->down);
    }
    gs_weight_free(be, w->patch_embed);
    gs_vec_free(be, &w->patch_bias);
    gs_vec_free(be, &w->post_conv_ln);
    gs_weight_free(be, w->pos_embed);
    for (int b = 0; b < w->n_blocks && w->blocks; b++) {
        gs_vision_block_w *bl = &w->blocks[b];
        gs_vec_free(be, &bl->norm1);
        gs_vec_free(be, &bl->norm2);
        gs_weight_free(be, bl->qkv);
        gs_vec_free(be, &bl->qkv_bias);
        gs_weight_free(be, bl->proj);
        gs_weight_free(be, bl->gu);
        gs_weight_free(be, bl->down);
    }
    gs_vec_free(be, &w->post_ln);
    gs_weight_free(be, w->downsample);
    gs_vec_free(be, &w->downsample_bias);
    gs_weight_free(be, w->merger_proj);
    gs_vec_free(be, &w->merger_ln_w);
    gs_vec_free(be, &w->merger_ln_b);
    gs_weight_free(be, w->merger_gu);
    gs_weight_free(be, w->merger_down);
    free(w->layers);
    free(w->blocks);
    gs_st_free(w->st); /* after every weight that used it in place */
    free(w);
}

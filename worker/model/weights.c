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
 * A copied tensor's checkpoint pages are evicted right after the copy.
 * Single-threaded. */
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
    unsigned char *used; /* [gs_st_count] */
} loader;

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
static int load_mat(loader *L, const char *name, int64_t rows, int64_t cols, gs_weight **out)
{
    const gs_st_tensor *t = find(L, name, rows * cols);
    if (!t)
        return L->d ? L->d->code : GS_EFORMAT;
    if (L->dry)
        return 0;
    gs_dtype dt = GS_DT_F32;
    to_gs_dtype(t->dtype, &dt);
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

/* Row-wise concatenation of n tensors with the same cols into one weight;
 * all parts must share a dtype. perm: optional element permutation applied
 * within each row of the single part (downsample), NULL for none. */
static int load_cat(loader *L, const char *const *names, const int64_t *rows, int n, int64_t cols,
                    gs_weight **out)
{
    const gs_st_tensor *t[4];
    int64_t total_rows = 0;
    for (int i = 0; i < n; i++) {
        t[i] = find(L, names[i], rows[i] * cols);
        if (!t[i])
            return L->d ? L->d->code : GS_EFORMAT;
        if (t[i]->dtype != t[0]->dtype)
            return gs_diag_set(L->d, GS_EFORMAT, "weights: %s and %s differ in dtype", names[0],
                               names[i]);
        total_rows += rows[i];
    }
    if (L->dry)
        return 0;
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
    int rc = gs_weight_new(L->be, buf, dt, total_rows, cols, out);
    free(buf);
    if (rc)
        return gs_diag_set(L->d, rc, "weights: %s: backend refused (%s)", names[0],
                           gs_strerror(rc));
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

    TRY(load_mat(L, "model.language_model.embed_tokens.weight", V, H, &w->embed));
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
        TRY(load_mat(L, n[0], H, qd, &ly->o));
        NM(0, "mlp.gate_up_proj.weight");
        TRY(load_mat(L, n[0], 2 * I, H, &ly->gu));
        NM(0, "mlp.down_proj.weight");
        TRY(load_mat(L, n[0], H, I, &ly->down));
#undef NM
    }
    TRY(load_vec(L, "model.language_model.norm.weight", H, &w->norm));
    TRY(load_mat(
        L, cfg->tie_word_embeddings ? "model.language_model.embed_tokens.weight" : "lm_head.weight",
        V, H, &w->lm_head));

    const int64_t vh = vc->hidden_size, oh = vc->out_hidden_size, vi = vc->intermediate_size;
    const int64_t pin =
        (int64_t)vc->in_channels * vc->temporal_patch_size * vc->patch_size * vc->patch_size;
    TRY(load_mat(L, "model.visual.patch_embed.proj.weight", vh, pin, &w->patch_embed));
    TRY(load_vec(L, "model.visual.patch_embed.proj.bias", vh, &w->patch_bias));
    TRY(load_vec(L, "model.visual.post_conv_layernorm.weight", vh, &w->post_conv_ln));
    TRY(load_mat(L, "model.visual.embeddings.position_embedding.weight", vc->num_positions, vh,
                 &w->pos_embed));
    for (int b = 0; b < w->n_blocks; b++) {
        gs_vision_block_w *bl = &w->blocks[b];
#define NM(i, fmt) snprintf(n[i], sizeof n[i], "model.visual.blocks.%d." fmt, b)
        NM(0, "norm1.weight");
        TRY(load_vec(L, n[0], vh, &bl->norm1));
        NM(0, "norm2.weight");
        TRY(load_vec(L, n[0], vh, &bl->norm2));
        NM(0, "attn.qkv.weight");
        TRY(load_mat(L, n[0], 3 * vh, vh, &bl->qkv));
        NM(0, "attn.qkv.bias");
        if (gs_st_get(L->st, n[0]))
            TRY(load_vec(L, n[0], 3 * vh, &bl->qkv_bias));
        NM(0, "attn.proj.weight");
        TRY(load_mat(L, n[0], vh, vh, &bl->proj));
        NM(0, "mlp.gate_proj.weight");
        NM(1, "mlp.up_proj.weight");
        {
            const char *names[2] = {n[0], n[1]};
            const int64_t rows[2] = {oh, oh};
            TRY(load_cat(L, names, rows, 2, vh, &bl->gu));
        }
        NM(0, "mlp.down_proj.weight");
        TRY(load_mat(L, n[0], vh, oh, &bl->down));
#undef NM
    }
    TRY(load_vec(L, "model.visual.post_layernorm.weight", vh, &w->post_ln));
    TRY(load_downsample(L, "model.visual.downsample.weight", oh, vh, &w->downsample));
    TRY(load_vec(L, "model.visual.downsample.bias", oh, &w->downsample_bias));
    TRY(load_mat(L, "model.visual.merger.proj.weight", oh, oh, &w->merger_proj));
    TRY(load_vec(L, "model.visual.merger.post_projection_norm.weight", oh, &w->merger_ln_w));
    TRY(load_vec(L, "model.visual.merger.post_projection_norm.bias", oh, &w->merger_ln_b));
    {
        const char *names[2] = {"model.visual.merger.gate_proj.weight",
                                "model.visual.merger.up_proj.weight"};
        const int64_t rows[2] = {vi, vi};
        TRY(load_cat(L, names, rows, 2, oh, &w->merger_gu));
    }
    TRY(load_mat(L, "model.visual.merger.down_proj.weight", oh, vi, &w->merger_down));
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
                    gs_weights_progress_fn progress, void *user, gs_weights **out, gs_diag *d)
{
    *out = NULL;
    int rc = gs_model_config_check_weights(cfg, st, NULL, d);
    if (rc)
        return rc;
    loader L = {be, st, d, progress, user, 0, 0, NULL, 1, NULL};
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
    gs_log_info("weights: %.2f GB in place in the checkpoint mapping, %.2f GB copied",
                L.w->mapped_bytes / 1e9, (L.w->bytes - L.w->mapped_bytes) / 1e9);
    *out = L.w;
    return 0;
}

/* ---- dummy weights ----------------------------------------------------- */

static int rnd_mat(gs_backend *be, int64_t rows, int64_t cols, uint64_t *seed, gs_weight **out)
{
    float scale = 1.0f / sqrtf((float)cols);
    return gs_weight_new_random(be, GS_DT_BF16, rows, cols, (*seed)++, scale, out);
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

int gs_weights_dummy(gs_backend *be, const gs_model_config *cfg, uint64_t seed, gs_weights **out,
                     gs_diag *d)
{
    *out = NULL;
    const gs_text_config *tc = &cfg->text;
    const gs_vision_config *vc = &cfg->vision;
    loader L0 = {be, NULL, d, NULL, NULL, 0, 0, NULL, 0, NULL}, *L = &L0;
    int rc = alloc_weights(cfg, &L->w);
    if (rc)
        return rc;
    gs_weights *w = L->w;
    const int64_t H = tc->hidden_size, V = tc->vocab_size, I = tc->intermediate_size;
    const int64_t qd = (int64_t)tc->num_attention_heads * tc->head_dim;
    const int64_t kvd = (int64_t)tc->num_key_value_heads * tc->head_dim;
    TRY(rnd_mat(be, V, H, &seed, &w->embed));
    for (int l = 0; l < w->n_layers; l++) {
        gs_text_layer_w *ly = &w->layers[l];
        TRY(const_vec(be, H, 1.0f, &ly->input_ln));
        TRY(const_vec(be, H, 1.0f, &ly->post_self_attn_ln));
        TRY(const_vec(be, H, 1.0f, &ly->post_attention_ln));
        TRY(const_vec(be, H, 1.0f, &ly->post_mlp_ln));
        TRY(rnd_mat(be, qd + 2 * kvd, H, &seed, &ly->qkv));
        TRY(const_vec(be, qd + 2 * kvd, 0.0f, &ly->qkv_bias));
        TRY(rnd_mat(be, H, qd, &seed, &ly->o));
        TRY(rnd_mat(be, 2 * I, H, &seed, &ly->gu));
        TRY(rnd_mat(be, H, I, &seed, &ly->down));
    }
    TRY(const_vec(be, H, 1.0f, &w->norm));
    TRY(rnd_mat(be, V, H, &seed, &w->lm_head));
    const int64_t vh = vc->hidden_size, oh = vc->out_hidden_size, vi = vc->intermediate_size;
    const int64_t pin =
        (int64_t)vc->in_channels * vc->temporal_patch_size * vc->patch_size * vc->patch_size;
    TRY(rnd_mat(be, vh, pin, &seed, &w->patch_embed));
    TRY(const_vec(be, vh, 0.0f, &w->patch_bias));
    TRY(const_vec(be, vh, 1.0f, &w->post_conv_ln));
    TRY(rnd_mat(be, vc->num_positions, vh, &seed, &w->pos_embed));
    for (int b = 0; b < w->n_blocks; b++) {
        gs_vision_block_w *bl = &w->blocks[b];
        TRY(const_vec(be, vh, 1.0f, &bl->norm1));
        TRY(const_vec(be, vh, 1.0f, &bl->norm2));
        TRY(rnd_mat(be, 3 * vh, vh, &seed, &bl->qkv));
        TRY(rnd_mat(be, vh, vh, &seed, &bl->proj));
        TRY(rnd_mat(be, 2 * oh, vh, &seed, &bl->gu));
        TRY(rnd_mat(be, vh, oh, &seed, &bl->down));
    }
    TRY(const_vec(be, vh, 1.0f, &w->post_ln));
    TRY(rnd_mat(be, oh, 4 * vh, &seed, &w->downsample));
    TRY(const_vec(be, oh, 0.0f, &w->downsample_bias));
    TRY(rnd_mat(be, oh, oh, &seed, &w->merger_proj));
    TRY(const_vec(be, oh, 1.0f, &w->merger_ln_w));
    TRY(const_vec(be, oh, 0.0f, &w->merger_ln_b));
    TRY(rnd_mat(be, 2 * vi, oh, &seed, &w->merger_gu));
    TRY(rnd_mat(be, oh, vi, &seed, &w->merger_down));
    w->bytes = sum_weight_bytes(w);
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

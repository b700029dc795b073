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
 * The per-tensor readers are in weights_read.c (weights_load.h).
 * Single-threaded, but for the threads of gs_quantize_rows_mt. */
#include "weights_load.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/log.h"

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

static int load_all(gs_wl_loader *L, const gs_model_config *cfg)
{
    const gs_text_config *tc = &cfg->text;
    const gs_vision_config *vc = &cfg->vision;
    gs_weights *w = L->w;
    const int64_t H = tc->hidden_size, V = tc->vocab_size, I = tc->intermediate_size;
    const int64_t qd = (int64_t)tc->num_attention_heads * tc->head_dim;
    const int64_t kvd = (int64_t)tc->num_key_value_heads * tc->head_dim;
    char n[4][160];

    TRY(gs_wl_load_mat(L, "model.language_model.embed_tokens.weight", V, H, GS_WCLASS_TABLE,
                       &w->embed));
    for (int l = 0; l < w->n_layers; l++) {
        gs_text_layer_w *ly = &w->layers[l];
        const char *p = "model.language_model.layers";
#define NM(i, fmt) snprintf(n[i], sizeof n[i], "%s.%d." fmt, p, l)
        NM(0, "input_layernorm.weight");
        TRY(gs_wl_load_vec(L, n[0], H, &ly->input_ln));
        NM(0, "post_self_attn_layernorm.weight");
        TRY(gs_wl_load_vec(L, n[0], H, &ly->post_self_attn_ln));
        NM(0, "post_attention_layernorm.weight");
        TRY(gs_wl_load_vec(L, n[0], H, &ly->post_attention_ln));
        NM(0, "post_mlp_layernorm.weight");
        TRY(gs_wl_load_vec(L, n[0], H, &ly->post_mlp_ln));
        NM(0, "self_attn.q_proj.weight");
        NM(1, "self_attn.k_proj.weight");
        NM(2, "self_attn.v_proj.weight");
        {
            const char *names[3] = {n[0], n[1], n[2]};
            const int64_t rows[3] = {qd, kvd, kvd};
            TRY(gs_wl_load_cat(L, names, rows, 3, H, &ly->qkv));
        }
        NM(0, "self_attn.q_proj.bias");
        NM(1, "self_attn.k_proj.bias");
        NM(2, "self_attn.v_proj.bias");
        {
            const char *names[3] = {n[0], n[1], n[2]};
            const int64_t lens[3] = {qd, kvd, kvd};
            TRY(gs_wl_load_vec_cat(L, names, lens, 3, &ly->qkv_bias));
        }
        NM(0, "self_attn.o_proj.weight");
        TRY(gs_wl_load_mat(L, n[0], H, qd, GS_WCLASS_LINEAR, &ly->o));
        NM(0, "mlp.gate_up_proj.weight");
        TRY(gs_wl_load_mat(L, n[0], 2 * I, H, GS_WCLASS_LINEAR, &ly->gu));
        NM(0, "mlp.down_proj.weight");
        TRY(gs_wl_load_mat(L, n[0], H, I, GS_WCLASS_LINEAR, &ly->down));
#undef NM
    }
    TRY(gs_wl_load_vec(L, "model.language_model.norm.weight", H, &w->norm));
    /* Tied: lm_head is the embedding (quantized apart when the format says
     * so), unless a quantized folder stores lm_head.weight quantized. */
    int own_head = !cfg->tie_word_embeddings ||
                   (L->prequant && gs_st_get(L->st, "lm_head.weight_scale") != NULL);
    TRY(gs_wl_load_mat(L, own_head ? "lm_head.weight" : "model.language_model.embed_tokens.weight",
                       V, H, GS_WCLASS_HEAD, &w->lm_head));

    const int64_t vh = vc->hidden_size, oh = vc->out_hidden_size, vi = vc->intermediate_size;
    const int64_t pin =
        (int64_t)vc->in_channels * vc->temporal_patch_size * vc->patch_size * vc->patch_size;
    TRY(gs_wl_load_mat(L, "model.visual.patch_embed.proj.weight", vh, pin, GS_WCLASS_TABLE,
                       &w->patch_embed));
    TRY(gs_wl_load_vec(L, "model.visual.patch_embed.proj.bias", vh, &w->patch_bias));
    TRY(gs_wl_load_vec(L, "model.visual.post_conv_layernorm.weight", vh, &w->post_conv_ln));
    TRY(gs_wl_load_mat(L, "model.visual.embeddings.position_embedding.weight", vc->num_positions,
                       vh, GS_WCLASS_TABLE, &w->pos_embed));
    for (int b = 0; b < w->n_blocks; b++) {
        gs_vision_block_w *bl = &w->blocks[b];
#define NM(i, fmt) snprintf(n[i], sizeof n[i], "model.visual.blocks.%d." fmt, b)
        NM(0, "norm1.weight");
        TRY(gs_wl_load_vec(L, n[0], vh, &bl->norm1));
        NM(0, "norm2.weight");
        TRY(gs_wl_load_vec(L, n[0], vh, &bl->norm2));
        NM(0, "attn.qkv.weight");
        TRY(gs_wl_load_mat(L, n[0], 3 * vh, vh, GS_WCLASS_LINEAR, &bl->qkv));
        NM(0, "attn.qkv.bias");
        if (gs_st_get(L->st, n[0]))
            TRY(gs_wl_load_vec(L, n[0], 3 * vh, &bl->qkv_bias));
        NM(0, "attn.proj.weight");
        TRY(gs_wl_load_mat(L, n[0], vh, vh, GS_WCLASS_LINEAR, &bl->proj));
        NM(0, "mlp.gate_proj.weight");
        NM(1, "mlp.up_proj.weight");
        {
            const char *names[2] = {n[0], n[1]};
            const int64_t rows[2] = {oh, oh};
            TRY(gs_wl_load_cat(L, names, rows, 2, vh, &bl->gu));
        }
        NM(0, "mlp.down_proj.weight");
        TRY(gs_wl_load_mat(L, n[0], vh, oh, GS_WCLASS_LINEAR, &bl->down));
#undef NM
    }
    TRY(gs_wl_load_vec(L, "model.visual.post_layernorm.weight", vh, &w->post_ln));
    TRY(gs_wl_load_downsample(L, "model.visual.downsample.weight", oh, vh, &w->downsample));
    TRY(gs_wl_load_vec(L, "model.visual.downsample.bias", oh, &w->downsample_bias));
    TRY(gs_wl_load_mat(L, "model.visual.merger.proj.weight", oh, oh, GS_WCLASS_LINEAR,
                       &w->merger_proj));
    TRY(gs_wl_load_vec(L, "model.visual.merger.post_projection_norm.weight", oh, &w->merger_ln_w));
    TRY(gs_wl_load_vec(L, "model.visual.merger.post_projection_norm.bias", oh, &w->merger_ln_b));
    {
        const char *names[2] = {"model.visual.merger.gate_proj.weight",
                                "model.visual.merger.up_proj.weight"};
        const int64_t rows[2] = {vi, vi};
        TRY(gs_wl_load_cat(L, names, rows, 2, oh, &w->merger_gu));
    }
    TRY(gs_wl_load_mat(L, "model.visual.merger.down_proj.weight", oh, vi, GS_WCLASS_LINEAR,
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
    gs_wl_loader L = {be,   st,  d, progress, user, 0, 0, NULL, 1, NULL, fmt, cfg->quant_bits != 0,
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
    gs_wl_loader *Lp = &L;
    rc = load_all(Lp, cfg); /* binding pass: names and sizes only */
    if (!rc)
        rc = gs_wl_check_all_used(Lp);
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
    gs_wl_loader L = {
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
        rc = gs_wl_check_all_used(&L);
    if (L.w) {
        free(L.w->layers);
        free(L.w->blocks);
        free(L.w);
    }
    free(L.used);
    return rc;
}

/* ---- dummy weights ----------------------------------------------------- */

static int rnd_mat(gs_wl_loader *L, int64_t rows, int64_t cols, gs_weight_class c, uint64_t *seed,
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
    gs_wl_loader L0 = {be, NULL, d, NULL, NULL, 0, 0, NULL, 0, NULL, fmt, 0, NULL, NULL}, *L = &L0;
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

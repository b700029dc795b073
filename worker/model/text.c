/* text.c - the GLM-4 text decoder over a flattened batch (spec section 4).
 *
 * Per layer, with the "sandwich" norms of GLM-4:
 *   h = RMSNorm_in(x); q,k,v = qkv(h) (+bias); M-RoPE(q, k);
 *   store k, v in the paged cache; a = attn(q, cache) (causal, GQA);
 *   x += RMSNorm_post_attn_out(o(a));
 *   h = RMSNorm_pre_mlp(x); x += RMSNorm_post_mlp(down(silu(g) * u))
 * The residual add and the next norm are one fused op (add_rmsnorm), and
 * the last layer's add fuses with the final norm. Logits are computed only
 * for the requested rows. Single-threaded. */
#include "model_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Uploads n int32 from host into the scratch; NULL when full or on error. */
static int32_t *up_i32(gs_scratch *s, const int32_t *src, int64_t n)
{
    int32_t *d = gs_scratch_take(s, sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (d && n > 0 && gs_buf_upload(s->be, d, src, sizeof(int32_t) * (size_t)n) != 0)
        return NULL;
    return d;
}

static int check_batch(const gs_model *m, const gs_kv_cache *kv, const gs_text_batch *b)
{
    const int32_t V = m->cfg.text.vocab_size;
    if (b->n_tokens <= 0 || b->n_seqs <= 0 || !b->ids || !b->pos || !b->slots || !b->cu_q ||
        !b->kv_len || !b->block_table || b->max_blocks <= 0 || b->n_logits < 0 ||
        (b->n_logits > 0 && !b->logit_rows))
        return GS_EINVAL;
    if (b->cu_q[0] != 0 || b->cu_q[b->n_seqs] != b->n_tokens)
        return GS_EINVAL;
    int64_t cap = (int64_t)kv->n_pages * kv->page_size;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        if (b->ids[i] < 0 || b->ids[i] >= V || b->slots[i] >= cap)
            return GS_EINVAL;
        if (b->img_row && b->img_row[i] >= b->img.rows)
            return GS_EINVAL;
    }
    for (int32_t s = 0; s < b->n_seqs; s++) {
        int32_t nq = b->cu_q[s + 1] - b->cu_q[s];
        if (nq < 0 || b->kv_len[s] < nq || b->kv_len[s] > (int64_t)b->max_blocks * kv->page_size)
            return GS_EINVAL;
        for (int32_t p = 0; p < (b->kv_len[s] + kv->page_size - 1) / kv->page_size; p++) {
            int32_t pg = b->block_table[(int64_t)s * b->max_blocks + p];
            if (pg < 0 || pg >= kv->n_pages)
                return GS_EINVAL;
        }
    }
    for (int32_t i = 0; i < b->n_logits; i++)
        if (b->logit_rows[i] < 0 || b->logit_rows[i] >= b->n_tokens)
            return GS_EINVAL;
    return 0;
}

int gs_model_forward(gs_model *m, gs_kv_cache *kv, const gs_text_batch *b, float *logits)
{
    if (!m || !kv || !b || kv->m != m || check_batch(m, kv, b))
        return GS_EINVAL;
    const gs_text_config *tc = &m->cfg.text;
    const gs_weights *w = m->w;
    gs_backend *be = m->be;
    const gs_dtype act = gs_backend_act_dtype(be);
    const size_t es = gs_dtype_size(act);
    const int64_t n = b->n_tokens, H = tc->hidden_size, I = tc->intermediate_size,
                  V = tc->vocab_size;
    const int64_t qd = (int64_t)tc->num_attention_heads * tc->head_dim;
    const int64_t kvd = (int64_t)tc->num_key_value_heads * tc->head_dim;
    const int64_t n_img = b->img_row ? b->img.rows : 0;
    const int64_t nl = b->n_logits;
    int32_t max_q = 0, max_kv = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        if (b->cu_q[s + 1] - b->cu_q[s] > max_q)
            max_q = b->cu_q[s + 1] - b->cu_q[s];
        if (b->kv_len[s] > max_kv)
            max_kv = b->kv_len[s];
    }

    size_t need = (size_t)(n + n_img) * (size_t)H * es /* embeddings */
                  + (size_t)n * (size_t)(3 * H + qd + 2 * kvd + qd + 2 * I + I) * es +
                  (size_t)nl * (size_t)H * es + (size_t)nl * (size_t)V * 4 +
                  sizeof(int32_t) * (size_t)(8 * n + 2 * b->n_seqs + 2 +
                                             (int64_t)b->n_seqs * b->max_blocks + nl) +
                  32 * 256;
    gs_scratch s;
    if (gs_scratch_init(&s, be, need))
        return GS_ENOMEM;
    int rc = 0;
    int32_t *idx = NULL;
    int32_t *d_ids = up_i32(&s, b->ids, n);
    int32_t *d_pos = up_i32(&s, b->pos, 3 * n);
    int32_t *d_slots = up_i32(&s, b->slots, n);
    int32_t *d_cu = up_i32(&s, b->cu_q, b->n_seqs + 1);
    int32_t *d_kvlen = up_i32(&s, b->kv_len, b->n_seqs);
    int32_t *d_bt = up_i32(&s, b->block_table, (int64_t)b->n_seqs * b->max_blocks);
    int32_t *d_lrows = up_i32(&s, b->logit_rows, nl);
    int32_t *d_idx = gs_scratch_take(&s, sizeof(int32_t) * (size_t)n);
    gs_mat x = gs_scratch_mat(&s, act, n, H);
    gs_mat h = gs_scratch_mat(&s, act, n, H);
    gs_mat o = gs_scratch_mat(&s, act, n, H);
    gs_mat qkv = gs_scratch_mat(&s, act, n, qd + 2 * kvd);
    gs_mat at = gs_scratch_mat(&s, act, n, qd);
    gs_mat gu = gs_scratch_mat(&s, act, n, 2 * I);
    gs_mat a = gs_scratch_mat(&s, act, n, I);
    gs_mat emb = n_img ? gs_scratch_mat(&s, act, n + n_img, H) : x;
    gs_mat hl = gs_scratch_mat(&s, act, nl > 0 ? nl : 1, H);
    gs_mat lg = gs_scratch_mat(&s, GS_DT_F32, nl > 0 ? nl : 1, V);
    if (!d_ids || !d_pos || !d_slots || !d_cu || !d_kvlen || !d_bt || !d_lrows || !d_idx ||
        !emb.data || !lg.data) {
        rc = GS_ENOMEM;
        goto done;
    }

    /* Input embeddings; image rows replace their placeholder tokens. */
    if (n_img) {
        CK(gs_k_embed(be, gs_mat_rows(emb, 0, n), w->embed, d_ids));
        CK(gs_k_copy(be, gs_mat_rows(emb, n, n_img), b->img));
        idx = malloc(sizeof *idx * (size_t)n);
        if (!idx) {
            rc = GS_ENOMEM;
            goto done;
        }
        for (int64_t i = 0; i < n; i++)
            idx[i] = b->img_row[i] >= 0 ? (int32_t)(n + b->img_row[i]) : (int32_t)i;
        CK(gs_buf_upload(be, d_idx, idx, sizeof(int32_t) * (size_t)n));
        CK(gs_k_gather_rows(be, x, emb, d_idx));
    } else {
        CK(gs_k_embed(be, x, w->embed, d_ids));
    }
    gs_model_tap(m, "text.embed", x);

    const float eps = (float)tc->rms_norm_eps;
    gs_rope_text_params rq = {tc->num_attention_heads,
                              tc->head_dim,
                              tc->rotary_dim,
                              {tc->mrope_section[0], tc->mrope_section[1], tc->mrope_section[2]},
                              (float)tc->rope_theta};
    gs_rope_text_params rk = rq;
    rk.n_heads = tc->num_key_value_heads;
    const gs_attn_params ap = {tc->num_attention_heads, tc->num_key_value_heads, tc->head_dim,
                               1.0f / sqrtf((float)tc->head_dim), 1};
    const gs_paged_batch pb = {b->n_seqs, d_cu, d_kvlen, d_bt, b->max_blocks, max_q, max_kv};

    CK(gs_k_rmsnorm(be, h, x, &w->layers[0].input_ln, eps));
    for (int l = 0; l < w->n_layers; l++) {
        const gs_text_layer_w *ly = &w->layers[l];
        CK(gs_k_matmul(be, qkv, h, ly->qkv, &ly->qkv_bias, 0));
        gs_mat q = gs_mat_cols(qkv, 0, qd), k = gs_mat_cols(qkv, qd, kvd),
               v = gs_mat_cols(qkv, qd + kvd, kvd);
        CK(gs_k_rope_text(be, q, d_pos, &rq));
        CK(gs_k_rope_text(be, k, d_pos, &rk));
        CK(gs_k_kv_store(be, &kv->layers[l], k, v, d_slots));
        CK(gs_k_attention_paged(be, at, q, &kv->layers[l], &pb, &ap));
        CK(gs_k_matmul(be, o, at, ly->o, NULL, 0));
        CK(gs_k_rmsnorm(be, o, o, &ly->post_self_attn_ln, eps));
        CK(gs_k_add_rmsnorm(be, h, x, o, &ly->post_attention_ln, eps));
        CK(gs_k_matmul(be, gu, h, ly->gu, NULL, 0));
        CK(gs_k_silu_mul(be, a, gu));
        CK(gs_k_matmul(be, o, a, ly->down, NULL, 0));
        CK(gs_k_rmsnorm(be, o, o, &ly->post_mlp_ln, eps));
        const gs_vec *next = l + 1 < w->n_layers ? &w->layers[l + 1].input_ln : &w->norm;
        CK(gs_k_add_rmsnorm(be, h, x, o, next, eps));
        if (m->tap) {
            char name[32];
            snprintf(name, sizeof name, "text.layer.%d", l);
            gs_model_tap(m, name, x);
        }
    }
    gs_model_tap(m, "text.norm", h);

    if (nl > 0) {
        CK(gs_k_gather_rows(be, hl, h, d_lrows));
        CK(gs_k_matmul(be, lg, hl, w->lm_head, NULL, 0));
        CK(gs_buf_download(be, logits, lg.data, sizeof(float) * (size_t)(nl * V)));
    } else {
        CK(gs_backend_sync(be));
    }
done:
    free(idx);
    gs_scratch_release(&s);
    return rc;
}

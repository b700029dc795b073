/* text.c - the GLM-4 text decoder over a flattened batch (spec section 4).
 *
 * Per layer, with the "sandwich" norms of GLM-4:
 *   h = RMSNorm_in(x); q,k,v = qkv(h) (+bias); M-RoPE(q, k);
 *   store k, v in the paged cache; a = attn(q, cache) (causal, GQA);
 *   x += RMSNorm_post_attn_out(o(a));
 *   h = RMSNorm_pre_mlp(x); x += RMSNorm_post_mlp(down(silu(g) * u))
 * The residual add and the next norm are one fused op (add_rmsnorm), and
 * the last layer's add fuses with the final norm. Logits are computed only
 * for the requested rows; gs_model_step samples them on the backend and
 * brings back only the ids. Decode batches may go through a recorded graph
 * instead (decode.c); this file runs everything else op by op, with the
 * activations of one call in a scratch buffer. Single-threaded. */
#include "model_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Uploads n int32 from host into the scratch; NULL when full or on error. */
static int32_t *up_i32(gs_scratch *s, const int32_t *src, int64_t n)
{
    int32_t *d = gs_scratch_take(s, sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (d && n > 0 && gs_buf_upload(s->be, d, src, sizeof(int32_t) * (size_t)n) != 0)
        return NULL;
    return d;
}

int gs_text_check_batch(const gs_model *m, const gs_kv_cache *kv, const gs_text_batch *b)
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

int gs_text_layers(gs_model *m, gs_kv_cache *kv, const gs_text_acts *t, const int32_t *pos,
                   const int32_t *slots, const gs_paged_batch *pb)
{
    const gs_text_config *tc = &m->cfg.text;
    const gs_weights *w = m->w;
    gs_backend *be = m->be;
    const int64_t qd = (int64_t)tc->num_attention_heads * tc->head_dim;
    const int64_t kvd = (int64_t)tc->num_key_value_heads * tc->head_dim;
    const float eps = (float)tc->rms_norm_eps;
    const gs_rope_text_params rq = {
        tc->num_attention_heads,
        tc->head_dim,
        tc->rotary_dim,
        {tc->mrope_section[0], tc->mrope_section[1], tc->mrope_section[2]},
        (float)tc->rope_theta};
    gs_rope_text_params rk = rq;
    rk.n_heads = tc->num_key_value_heads;
    const gs_attn_params ap = {tc->num_attention_heads, tc->num_key_value_heads, tc->head_dim,
                               1.0f / sqrtf((float)tc->head_dim), 1};
    int rc = 0;
    CK(gs_k_rmsnorm(be, t->h, t->x, &w->layers[0].input_ln, eps));
    for (int l = 0; l < w->n_layers; l++) {
        CK(gs_model__check_abort(m));
        const gs_text_layer_w *ly = &w->layers[l];
        CK(gs_k_matmul(be, t->qkv, t->h, ly->qkv, &ly->qkv_bias, 0));
        gs_mat q = gs_mat_cols(t->qkv, 0, qd), k = gs_mat_cols(t->qkv, qd, kvd),
               v = gs_mat_cols(t->qkv, qd + kvd, kvd);
        CK(gs_k_rope_text(be, q, pos, &rq));
        CK(gs_k_rope_text(be, k, pos, &rk));
        CK(gs_k_kv_store(be, &kv->layers[l], k, v, slots));
        CK(gs_k_attention_paged(be, t->at, q, &kv->layers[l], pb, &ap));
        CK(gs_k_matmul(be, t->o, t->at, ly->o, NULL, 0));
        CK(gs_k_rmsnorm(be, t->o, t->o, &ly->post_self_attn_ln, eps));
        CK(gs_k_add_rmsnorm(be, t->h, t->x, t->o, &ly->post_attention_ln, eps));
        CK(gs_k_matmul(be, t->gu, t->h, ly->gu, NULL, 0));
        CK(gs_k_silu_mul(be, t->a, t->gu));
        CK(gs_k_matmul(be, t->o, t->a, ly->down, NULL, 0));
        CK(gs_k_rmsnorm(be, t->o, t->o, &ly->post_mlp_ln, eps));
        const gs_vec *next = l + 1 < w->n_layers ? &w->layers[l + 1].input_ln : &w->norm;
        CK(gs_k_add_rmsnorm(be, t->h, t->x, t->o, next, eps));
        if (m->tap) {
            char name[32];
            snprintf(name, sizeof name, "text.layer.%d", l);
            gs_model_tap(m, name, t->x);
        }
    }
    gs_model_tap(m, "text.norm", t->h);
done:
    return rc;
}

/* Host-side checks of a sampling request for n rows. */
static int check_sample(const gs_model *m, const gs_sample_batch *sb, int32_t n)
{
    if (n == 0)
        return 0;
    if (!sb || !sb->rows)
        return GS_EINVAL;
    if (!sb->pen_off)
        return 0;
    if (!sb->pen_ids || !sb->pen_cnt || sb->pen_off[0] != 0)
        return GS_EINVAL;
    for (int32_t r = 0; r < n; r++)
        if (sb->pen_off[r + 1] < sb->pen_off[r])
            return GS_EINVAL;
    for (int32_t i = 0; i < sb->pen_off[n]; i++)
        if (sb->pen_ids[i] < 0 || sb->pen_ids[i] >= m->cfg.text.vocab_size || sb->pen_cnt[i] < 0)
            return GS_EINVAL;
    return 0;
}

int gs_model__sample(gs_model *m, gs_mat lg, const gs_sample_batch *sb, int32_t *ids)
{
    const int32_t n = (int32_t)lg.rows;
    if (n == 0)
        return 0;
    int rc = 0;
    const int32_t np = sb->pen_off ? sb->pen_off[n] : 0;
    /* One blob: rows | pen_off | pen_ids | pen_cnt | out, one upload. */
    const size_t o_off = sizeof(gs_sample_row) * (size_t)n;
    const size_t o_ids = o_off + sizeof(int32_t) * (size_t)(n + 1);
    const size_t o_cnt = o_ids + sizeof(int32_t) * (size_t)np;
    const size_t o_out = o_cnt + sizeof(int32_t) * (size_t)np;
    const size_t bytes = o_out + sizeof(int32_t) * (size_t)n;
    char *host = malloc(o_out);
    char *dev = gs_buf_alloc(m->be, bytes);
    if (!host || !dev) {
        rc = GS_ENOMEM;
        goto done;
    }
    memcpy(host, sb->rows, o_off);
    if (sb->pen_off) {
        memcpy(host + o_off, sb->pen_off, sizeof(int32_t) * (size_t)(n + 1));
        memcpy(host + o_ids, sb->pen_ids, sizeof(int32_t) * (size_t)np);
        memcpy(host + o_cnt, sb->pen_cnt, sizeof(int32_t) * (size_t)np);
    }
    CK(gs_buf_upload(m->be, dev, host, sb->pen_off ? o_out : o_off));
    int32_t *d_out = (int32_t *)(dev + o_out);
    if (sb->pen_off)
        CK(gs_k_sample(m->be, d_out, lg, (const gs_sample_row *)dev, (const int32_t *)(dev + o_off),
                       (const int32_t *)(dev + o_ids), (const int32_t *)(dev + o_cnt)));
    else
        CK(gs_k_sample(m->be, d_out, lg, (const gs_sample_row *)dev, NULL, NULL, NULL));
    CK(gs_buf_download(m->be, ids, d_out, sizeof(int32_t) * (size_t)n));
done:
    gs_buf_free(m->be, dev);
    free(host);
    return rc;
}

/* The op-by-op forward: logits to the host (logits != NULL) or sampled on
 * the backend into ids (sb != NULL). */
static int forward(gs_model *m, gs_kv_cache *kv, const gs_text_batch *b, float *logits,
                   const gs_sample_batch *sb, int32_t *ids)
{
    const gs_text_config *tc = &m->cfg.text;
    const gs_weights *w = m->w;
    gs_backend *be = m->be;
    const gs_dtype act = gs_backend_act_dtype(be);
    /* The residual stream x and the SwiGLU output a: F32 where the act
     * dtype is F16 (GLM-4 takes both past 65504), else the act dtype (then
     * nothing below differs from an all-act-dtype pass). */
    const gs_dtype rdt = gs_backend_resid_dtype(be);
    const size_t es = gs_dtype_size(act), rs = gs_dtype_size(rdt);
    const int64_t n = b->n_tokens, H = tc->hidden_size, I = tc->intermediate_size,
                  V = tc->vocab_size;
    const int64_t qd = (int64_t)tc->num_attention_heads * tc->head_dim;
    const int64_t kvd = (int64_t)tc->num_key_value_heads * tc->head_dim;
    const int64_t n_img = b->img_row ? b->img.rows : 0;
    const int64_t nl = b->n_logits;
    /* hl and lg below take one row even when no logits are asked for (a
     * prefill chunk that does not end its prompt), so size them that way. */
    const int64_t nl_rows = nl > 0 ? nl : 1;
    int32_t max_q = 0, max_kv = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        if (b->cu_q[s + 1] - b->cu_q[s] > max_q)
            max_q = b->cu_q[s + 1] - b->cu_q[s];
        if (b->kv_len[s] > max_kv)
            max_kv = b->kv_len[s];
    }

    size_t need = (size_t)(n + n_img) * (size_t)H * es /* embeddings */
                  + (size_t)n * (size_t)(H + I) * rs   /* x, a */
                  + (size_t)n * (size_t)(2 * H + qd + 2 * kvd + qd + 2 * I) * es +
                  (size_t)nl_rows * (size_t)H * es + (size_t)nl_rows * (size_t)V * 4 +
                  sizeof(int32_t) * (size_t)(8 * n + 2 * b->n_seqs + 2 +
                                             (int64_t)b->n_seqs * b->max_blocks + nl_rows) +
                  32 * 256; /* 256-byte rounding of each of the takes below */
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
    gs_text_acts t = {
        .x = gs_scratch_mat(&s, rdt, n, H),
        .h = gs_scratch_mat(&s, act, n, H),
        .o = gs_scratch_mat(&s, act, n, H),
        .qkv = gs_scratch_mat(&s, act, n, qd + 2 * kvd),
        .at = gs_scratch_mat(&s, act, n, qd),
        .gu = gs_scratch_mat(&s, act, n, 2 * I),
        .a = gs_scratch_mat(&s, rdt, n, I), /* SwiGLU output: past 65504 too */
    };
    gs_mat emb = n_img ? gs_scratch_mat(&s, act, n + n_img, H) : t.x;
    gs_mat hl = gs_scratch_mat(&s, act, nl_rows, H);
    gs_mat lg = gs_scratch_mat(&s, GS_DT_F32, nl_rows, V);
    if (!d_ids || !d_pos || !d_slots || !d_cu || !d_kvlen || !d_bt || !d_lrows || !d_idx ||
        !t.x.data || !t.h.data || !t.o.data || !t.qkv.data || !t.at.data || !t.gu.data ||
        !t.a.data || !emb.data || !hl.data || !lg.data) {
        rc = GS_ENOMEM;
        goto done;
    }

    /* Input embeddings; image rows replace their placeholder tokens. A
     * residual wider than the act dtype gets them through h (the tables and
     * the image rows are act-dtype) and one conversion. */
    gs_mat x_in = rdt == act ? t.x : t.h;
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
        CK(gs_k_gather_rows(be, x_in, emb, d_idx));
    } else {
        CK(gs_k_embed(be, x_in, w->embed, d_ids));
    }
    if (rdt != act)
        CK(gs_k_copy(be, t.x, x_in));
    gs_model_tap(m, "text.embed", t.x);

    const gs_paged_batch pb = {b->n_seqs, d_cu, d_kvlen, d_bt, b->max_blocks, max_q, max_kv};
    CK(gs_text_layers(m, kv, &t, d_pos, d_slots, &pb));

    if (nl > 0) {
        CK(gs_k_gather_rows(be, hl, t.h, d_lrows));
        CK(gs_k_matmul(be, lg, hl, w->lm_head, NULL, 0));
        if (sb)
            CK(gs_model__sample(m, gs_mat_rows(lg, 0, nl), sb, ids));
        else
            CK(gs_buf_download(be, logits, lg.data, sizeof(float) * (size_t)(nl * V)));
    } else {
        CK(gs_backend_sync(be));
    }
done:
    free(idx);
    gs_scratch_release(&s);
    return rc;
}

int gs_model_forward(gs_model *m, gs_kv_cache *kv, const gs_text_batch *b, float *logits)
{
    if (!m || !kv || !b || kv->m != m || gs_text_check_batch(m, kv, b) ||
        (b->n_logits > 0 && !logits))
        return GS_EINVAL;
    return forward(m, kv, b, logits, NULL, NULL);
}

int gs_model_step(gs_model *m, gs_kv_cache *kv, const gs_text_batch *b, const gs_sample_batch *s,
                  int32_t *ids)
{
    if (!m || !kv || !b || kv->m != m || gs_text_check_batch(m, kv, b))
        return GS_EINVAL;
    if (b->n_logits > 0 && (!ids || check_sample(m, s, b->n_logits)))
        return GS_EINVAL;
    int handled = 0;
    int rc = gs_decode_step(m, kv, b, s, ids, &handled);
    if (handled)
        return rc;
    return forward(m, kv, b, NULL, s, ids);
}

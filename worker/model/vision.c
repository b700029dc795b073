/* vision.c - the GLM-4V vision tower (glm4v-spec.md section 3):
 *
 *   patch conv (a GEMM) -> RMSNorm -> + bicubic pos-embed ->
 *   depth x [ x += proj(attn(rope2d(qkv(RMSNorm(x)))));
 *             x += down(silu(gate(RMSNorm(x))) * up(...)) ] ->
 *   RMSNorm -> 2x2 downsample conv (a GEMM over 4 consecutive rows) ->
 *   merger: proj -> LayerNorm -> GELU -> down(silu(gate) * up)
 *
 * Several images go through in one batch; attention stays inside each
 * image (segments from cu_seqlens). Patch coordinates follow the
 * processor's 2x2 block order (spec 3.3). With graphs enabled, batches go
 * through vision_graph.c (padded to a patch bucket, recorded once); this
 * file has the ops (gs_vision_body) and the op-by-op path with its
 * activations in a per-call scratch. Single-threaded. */
#include "model_impl.h"

#include <math.h>
#include <stdlib.h>

/* Host-side per-patch coordinates: hw4 [4, N] (h, w, gh, gw; its first two
 * rows are the [2, N] positions the 2-D rope takes) and cu [n_segments + 1]
 * (one segment per image frame). */
int gs_vision_coords(const int32_t (*grids)[3], int32_t n_images, int32_t merge, int64_t N,
                     int32_t *hw4, int32_t *cu, int32_t *n_seg, int32_t *max_len)
{
    int64_t i = 0;
    int32_t s = 0;
    cu[0] = 0;
    *max_len = 0;
    for (int32_t g = 0; g < n_images; g++) {
        int32_t t = grids[g][0], gh = grids[g][1], gw = grids[g][2];
        for (int32_t f = 0; f < t; f++) {
            for (int32_t bh = 0; bh < gh / merge; bh++)
                for (int32_t bw = 0; bw < gw / merge; bw++)
                    for (int32_t mh = 0; mh < merge; mh++)
                        for (int32_t mw = 0; mw < merge; mw++, i++) {
                            int32_t h = bh * merge + mh, w = bw * merge + mw;
                            hw4[i] = h;
                            hw4[N + i] = w;
                            hw4[2 * N + i] = gh;
                            hw4[3 * N + i] = gw;
                        }
            cu[s + 1] = cu[s] + gh * gw;
            if (gh * gw > *max_len)
                *max_len = gh * gw;
            s++;
        }
    }
    *n_seg = s;
    return i == N ? 0 : GS_EINVAL;
}

/* Bytes of the activations for N patches (gs_vision_acts_make). */
size_t gs_vision_acts_bytes(const gs_model *m, int64_t N)
{
    const gs_vision_config *vc = &m->cfg.vision;
    const size_t es = gs_dtype_size(gs_backend_act_dtype(m->be));
    const int64_t mm = (int64_t)vc->spatial_merge_size * vc->spatial_merge_size;
    const int64_t vh = vc->hidden_size, oh = vc->out_hidden_size, vi = vc->intermediate_size;
    const int64_t pin =
        (int64_t)vc->in_channels * vc->temporal_patch_size * vc->patch_size * vc->patch_size;
    return (size_t)N * (size_t)pin * 4 + (size_t)N * (size_t)pin * es +
           (size_t)N * (size_t)(6 * vh + 3 * oh) * es +
           (size_t)(N / mm) * (size_t)(2 * oh + 3 * vi) * es + 16 * 256;
}

int gs_vision_acts_make(const gs_model *m, gs_scratch *s, int64_t N, gs_vision_acts *v)
{
    const gs_vision_config *vc = &m->cfg.vision;
    const gs_dtype act = gs_backend_act_dtype(m->be);
    const int64_t mm = (int64_t)vc->spatial_merge_size * vc->spatial_merge_size;
    const int64_t vh = vc->hidden_size, oh = vc->out_hidden_size, vi = vc->intermediate_size;
    const int64_t pin =
        (int64_t)vc->in_channels * vc->temporal_patch_size * vc->patch_size * vc->patch_size;
    v->px32 = gs_scratch_mat(s, GS_DT_F32, N, pin);
    v->px = act == GS_DT_F32 ? v->px32 : gs_scratch_mat(s, act, N, pin);
    v->x = gs_scratch_mat(s, act, N, vh);
    v->h = gs_scratch_mat(s, act, N, vh);
    v->qkv = gs_scratch_mat(s, act, N, 3 * vh);
    v->at = gs_scratch_mat(s, act, N, vh);
    v->gu = gs_scratch_mat(s, act, N, 2 * oh);
    v->a = gs_scratch_mat(s, act, N, oh);
    v->dn = gs_scratch_mat(s, act, N / mm, oh);
    v->y = gs_scratch_mat(s, act, N / mm, oh);
    v->mgu = gs_scratch_mat(s, act, N / mm, 2 * vi);
    v->ma = gs_scratch_mat(s, act, N / mm, vi);
    return v->px.data && v->ma.data ? 0 : GS_ENOMEM;
}

int gs_vision_body(gs_model *m, const gs_vision_acts *v, const int32_t *d_hw4, const int32_t *d_cu,
                   int32_t n_seg, int32_t max_len, gs_mat out)
{
    const gs_vision_config *vc = &m->cfg.vision;
    const gs_weights *w = m->w;
    gs_backend *be = m->be;
    const gs_dtype act = gs_backend_act_dtype(be);
    const int32_t merge = vc->spatial_merge_size, mm = merge * merge;
    const int64_t vh = vc->hidden_size, N = v->x.rows;
    int rc = 0;
    if (act != GS_DT_F32)
        CK(gs_k_copy(be, v->px, v->px32));

    /* Patch embedding, post-conv RMSNorm, position embedding. */
    CK(gs_k_matmul(be, v->x, v->px, w->patch_embed, &w->patch_bias, 0));
    const float veps = (float)vc->rms_norm_eps;
    CK(gs_k_rmsnorm(be, v->x, v->x, &w->post_conv_ln, veps));
    int32_t side = (int32_t)lround(sqrt((double)vc->num_positions));
    CK(gs_k_posembed_add(be, v->x, w->pos_embed, side, d_hw4));
    gs_model_tap(m, "vision.embed", v->x);

    const int32_t heads = vc->num_heads, hd = vc->head_dim;
    const gs_rope_vision_params rp = {heads, hd, (float)vc->rope_theta};
    const gs_attn_params ap = {heads, heads, hd, 1.0f / sqrtf((float)hd), 0};
    for (int b = 0; b < w->n_blocks; b++) {
        CK(gs_model__check_abort(m));
        const gs_vision_block_w *bl = &w->blocks[b];
        CK(gs_k_rmsnorm(be, v->h, v->x, &bl->norm1, veps));
        CK(gs_k_matmul(be, v->qkv, v->h, bl->qkv, bl->qkv_bias.n ? &bl->qkv_bias : NULL, 0));
        gs_mat q = gs_mat_cols(v->qkv, 0, vh), k = gs_mat_cols(v->qkv, vh, vh),
               val = gs_mat_cols(v->qkv, 2 * vh, vh);
        /* Rows h and w of hw4 are the [2, N] rope positions (row stride N). */
        CK(gs_k_rope_vision(be, q, d_hw4, &rp));
        CK(gs_k_rope_vision(be, k, d_hw4, &rp));
        CK(gs_k_attention(be, v->at, q, k, val, d_cu, n_seg, max_len, &ap));
        CK(gs_k_matmul(be, v->x, v->at, bl->proj, NULL, GS_MM_ACCUM));
        CK(gs_k_rmsnorm(be, v->h, v->x, &bl->norm2, veps));
        CK(gs_k_matmul(be, v->gu, v->h, bl->gu, NULL, 0));
        CK(gs_k_silu_mul(be, v->a, v->gu));
        CK(gs_k_matmul(be, v->x, v->a, bl->down, NULL, GS_MM_ACCUM));
        if (b == 0)
            gs_model_tap(m, "vision.block0", v->x);
    }
    gs_model_tap(m, "vision.blocks", v->x);
    CK(gs_k_rmsnorm(be, v->h, v->x, &w->post_ln, veps));
    gs_model_tap(m, "vision.post_ln", v->h);

    /* 2x2 downsample: merge^2 consecutive rows form one input row. */
    gs_mat hv = gs_mat_make(v->h.data, act, N / mm, mm * vh);
    CK(gs_k_matmul(be, v->dn, hv, w->downsample, &w->downsample_bias, 0));
    gs_model_tap(m, "vision.downsample", v->dn);

    /* Patch merger. */
    CK(gs_k_matmul(be, v->y, v->dn, w->merger_proj, NULL, 0));
    CK(gs_k_layernorm(be, v->y, v->y, &w->merger_ln_w, &w->merger_ln_b, 1e-5f));
    CK(gs_k_gelu(be, v->y, v->y));
    CK(gs_k_matmul(be, v->mgu, v->y, w->merger_gu, NULL, 0));
    CK(gs_k_silu_mul(be, v->ma, v->mgu));
    CK(gs_k_matmul(be, out, v->ma, w->merger_down, NULL, 0));
    gs_model_tap(m, "vision.out", out);
done:
    return rc;
}

int gs_model_encode_images(gs_model *m, const float *pixels, int64_t N, const int32_t (*grids)[3],
                           int32_t n_images, gs_mat out)
{
    const gs_vision_config *vc = &m->cfg.vision;
    gs_backend *be = m->be;
    const int32_t merge = vc->spatial_merge_size, mm = merge * merge;
    const int64_t oh = vc->out_hidden_size;
    const int64_t pin =
        (int64_t)vc->in_channels * vc->temporal_patch_size * vc->patch_size * vc->patch_size;
    if (!pixels || N <= 0 || n_images <= 0 || N % mm || !grids)
        return GS_EINVAL;
    int64_t n_seg_max = 0, total = 0;
    for (int32_t g = 0; g < n_images; g++) {
        int32_t t = grids[g][0], gh = grids[g][1], gw = grids[g][2];
        if (t <= 0 || gh <= 0 || gw <= 0 || gh % merge || gw % merge)
            return GS_EINVAL;
        total += (int64_t)t * gh * gw;
        n_seg_max += t;
    }
    if (total != N || out.rows != N / mm || out.cols != oh)
        return GS_EINVAL;

    int rc = 0;
    int32_t *host = malloc(sizeof *host * (size_t)(4 * N + n_seg_max + 1));
    if (!host)
        return GS_ENOMEM;
    int32_t *hw4 = host, *cu = host + 4 * N, n_seg, max_len;
    if (gs_vision_coords(grids, n_images, merge, N, hw4, cu, &n_seg, &max_len)) {
        free(host);
        return GS_EINVAL;
    }
    int handled = 0;
    rc = gs_vision_graph_run(m, pixels, N, hw4, cu, n_seg, max_len, out, &handled);
    if (handled) {
        free(host);
        return rc;
    }

    size_t need =
        gs_vision_acts_bytes(m, N) + sizeof(int32_t) * (size_t)(4 * N + n_seg + 1) + 2 * 256;
    gs_scratch s;
    if (gs_scratch_init(&s, be, need)) {
        free(host);
        return GS_ENOMEM;
    }
    int32_t *d_hw4 = gs_scratch_take(&s, sizeof(int32_t) * 4 * (size_t)N);
    int32_t *d_cu = gs_scratch_take(&s, sizeof(int32_t) * (size_t)(n_seg + 1));
    gs_vision_acts v;
    if (!d_hw4 || !d_cu || gs_vision_acts_make(m, &s, N, &v)) {
        rc = GS_ENOMEM;
        goto done;
    }
    CK(gs_buf_upload(be, d_hw4, hw4, sizeof(int32_t) * 4 * (size_t)N));
    CK(gs_buf_upload(be, d_cu, cu, sizeof(int32_t) * (size_t)(n_seg + 1)));
    CK(gs_buf_upload(be, v.px32.data, pixels, sizeof(float) * (size_t)(N * pin)));
    CK(gs_vision_body(m, &v, d_hw4, d_cu, n_seg, max_len, out));
done:
    gs_scratch_release(&s);
    free(host);
    return rc;
}

/* rope.c - rotary position embeddings, in place on q or k (F32).
 *
 * Text M-RoPE (glm4v-spec.md 4.3): pair j < rotary_dim/2 rotates dims
 * (2j, 2j+1) (interleaved, GPT-J style) by pos[axis(j)] * inv_freq[j], the
 * axis chosen by mrope_section; dims >= rotary_dim pass through.
 * Vision 2-D RoPE (3.5): with half = head_dim/2 and q = head_dim/4,
 * angle[i] = h * inv_freq[i] (i < q) or w * inv_freq[i - q]; pairs
 * (i, i + half) rotate NeoX style.
 * inv_freq is PyTorch's F32 value (gs_rope_inv_freq); an angle is one F32
 * multiply float(pos) * inv_freq, then cosf/sinf, as torch does. This file
 * is built with -ffp-contract=off so no FMA changes those roundings.
 * Threading: gs_cpu_parallel over rows; each row's cos/sin are computed once
 * and applied to every head. */
#include <math.h>
#include <stdlib.h>

#include "kernels/cpu/cpu_impl.h"

typedef struct {
    gs_mat qk;
    const int32_t *pos;
    const float *inv; /* [n_freq] */
    int32_t n_heads, head_dim, n_pairs, sec0, sec01, q;
    gs_cpu *c;
} rope_job;

static void text_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    rope_job *J = ctx;
    const int64_t m = J->qk.rows;
    float *cs = gs_cpu_scratch(J->c, tid), *sn = cs + J->n_pairs;
    for (int64_t r = r0; r < r1; r++) {
        for (int32_t j = 0; j < J->n_pairs; j++) {
            int axis = j < J->sec0 ? 0 : (j < J->sec01 ? 1 : 2);
            float ang = (float)J->pos[axis * m + r] * J->inv[j];
            cs[j] = cosf(ang);
            sn[j] = sinf(ang);
        }
        float *row = gs_cpu_row(J->qk, r);
        for (int32_t h = 0; h < J->n_heads; h++) {
            float *x = row + (int64_t)h * J->head_dim;
            for (int32_t j = 0; j < J->n_pairs; j++) {
                float a = x[2 * j], b = x[2 * j + 1];
                x[2 * j] = a * cs[j] - b * sn[j];
                x[2 * j + 1] = b * cs[j] + a * sn[j];
            }
        }
    }
}

static void vision_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    rope_job *J = ctx;
    const int64_t m = J->qk.rows;
    const int32_t half = J->n_pairs, q = J->q;
    float *cs = gs_cpu_scratch(J->c, tid), *sn = cs + half;
    for (int64_t r = r0; r < r1; r++) {
        const float ph = (float)J->pos[r], pw = (float)J->pos[m + r];
        for (int32_t i = 0; i < half; i++) {
            float ang = i < q ? ph * J->inv[i] : pw * J->inv[i - q];
            cs[i] = cosf(ang);
            sn[i] = sinf(ang);
        }
        float *row = gs_cpu_row(J->qk, r);
        for (int32_t h = 0; h < J->n_heads; h++) {
            float *x = row + (int64_t)h * J->head_dim;
            for (int32_t i = 0; i < half; i++) {
                float a = x[i], b = x[i + half];
                x[i] = a * cs[i] - b * sn[i];
                x[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

static int64_t rope_grain(gs_cpu *c, gs_mat qk)
{
    return gs_cpu_grain(c, qk.rows, 2, (4096 + qk.cols - 1) / qk.cols);
}

int gs_cpu_rope_text(gs_backend *be, gs_mat qk, const int32_t *pos, const gs_rope_text_params *p)
{
    gs_cpu *c = gs_cpu_of(be);
    const int32_t n_pairs = p->rotary_dim / 2;
    float *inv = malloc(sizeof *inv * (size_t)n_pairs);
    if (!inv || gs_cpu_scratch_reserve(c, sizeof(float) * 2 * (size_t)n_pairs)) {
        free(inv);
        return GS_ENOMEM;
    }
    for (int32_t j = 0; j < n_pairs; j++)
        inv[j] = gs_rope_inv_freq(p->theta, j, p->rotary_dim);
    rope_job J = {qk,
                  pos,
                  inv,
                  p->n_heads,
                  p->head_dim,
                  n_pairs,
                  p->mrope_section[0],
                  p->mrope_section[0] + p->mrope_section[1],
                  0,
                  c};
    gs_cpu_parallel(c, qk.rows, rope_grain(c, qk), text_rows, &J);
    free(inv);
    return 0;
}

int gs_cpu_rope_vision(gs_backend *be, gs_mat qk, const int32_t *pos,
                       const gs_rope_vision_params *p)
{
    gs_cpu *c = gs_cpu_of(be);
    const int32_t half = p->head_dim / 2, q = p->head_dim / 4;
    float *inv = malloc(sizeof *inv * (size_t)q);
    if (!inv || gs_cpu_scratch_reserve(c, sizeof(float) * 2 * (size_t)half)) {
        free(inv);
        return GS_ENOMEM;
    }
    for (int32_t j = 0; j < q; j++)
        inv[j] = gs_rope_inv_freq(p->theta, j, half);
    rope_job J = {qk, pos, inv, p->n_heads, p->head_dim, half, 0, 0, q, c};
    gs_cpu_parallel(c, qk.rows, rope_grain(c, qk), vision_rows, &J);
    free(inv);
    return 0;
}

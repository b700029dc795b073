/* rope.cu - rotary position embeddings, in place on q or k views.
 *
 * Text M-RoPE (glm4v-spec 4.3): interleaved pairs (2j, 2j+1) for
 * j < rotary_dim/2, angle pos[axis(j)] * inv_freq[j], axis from
 * mrope_section; dims >= rotary_dim untouched. Like the reference, cos and
 * sin are rounded to the activation dtype and every product and sum is
 * rounded to it (BF16 elementwise arithmetic).
 * Vision 2-D RoPE (3.5): NeoX pairs (i, i + hd/2), angle h * inv_freq[i] for
 * i < hd/4, w * inv_freq[i - hd/4] after; F32 arithmetic, one rounding.
 *
 * inv_freq is computed on the host exactly as PyTorch does in F32
 * (gs_rope_inv_freq; matches the bit patterns listed in the spec) and
 * passed by value. One thread per (token, pair):
 * it computes sincosf once (accurate, not the fast intrinsic: angles reach
 * 1e5 rad) and applies it to every head. No FMA contraction (explicit _rn
 * intrinsics) so results match the C reference. */
#include <math.h>

#include "kernels/backend_impl.h"
#include "kernels/cuda/common.cuh"

#define ROPE_MAX_PAIRS 128

typedef struct {
    void *qk;
    const int32_t *pos;
    int64_t m, ld;
    int n_heads, head_dim, n_pairs, dt;
    int sec0, sec1; /* text: axis boundaries (s0, s0 + s1) */
    float inv_freq[ROPE_MAX_PAIRS];
} rope_args;

__device__ __forceinline__ float rnd(float v, int dt)
{
    if (dt == GS_DT_BF16)
        return gs_bf(v);
    if (dt == GS_DT_F16)
        return __half2float(__float2half_rn(v));
    return v;
}

__global__ void gs_rope_text_kernel(rope_args a)
{
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= a.m * a.n_pairs)
        return;
    const int64_t row = t / a.n_pairs;
    const int j = (int)(t % a.n_pairs);
    const int axis = j < a.sec0 ? 0 : (j < a.sec1 ? 1 : 2);
    const float ang = __fmul_rn((float)a.pos[axis * a.m + row], a.inv_freq[j]);
    float s, c;
    sincosf(ang, &s, &c);
    c = rnd(c, a.dt);
    s = rnd(s, a.dt);
    for (int h = 0; h < a.n_heads; h++) {
        const int64_t i0 = row * a.ld + (int64_t)h * a.head_dim + 2 * j;
        const float x0 = gs_ld(a.qk, a.dt, i0), x1 = gs_ld(a.qk, a.dt, i0 + 1);
        const float y0 = rnd(__fsub_rn(rnd(__fmul_rn(x0, c), a.dt), rnd(__fmul_rn(x1, s), a.dt)),
                             a.dt);
        const float y1 = rnd(__fadd_rn(rnd(__fmul_rn(x1, c), a.dt), rnd(__fmul_rn(x0, s), a.dt)),
                             a.dt);
        gs_st(a.qk, a.dt, i0, y0);
        gs_st(a.qk, a.dt, i0 + 1, y1);
    }
}

__global__ void gs_rope_vision_kernel(rope_args a)
{
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= a.m * a.n_pairs)
        return;
    const int64_t row = t / a.n_pairs;
    const int i = (int)(t % a.n_pairs); /* n_pairs = head_dim / 2 */
    const int q = a.n_pairs / 2;
    const int p = i < q ? a.pos[row] : a.pos[a.m + row];
    const float ang = __fmul_rn((float)p, a.inv_freq[i < q ? i : i - q]);
    float s, c;
    sincosf(ang, &s, &c);
    for (int h = 0; h < a.n_heads; h++) {
        const int64_t i0 = row * a.ld + (int64_t)h * a.head_dim + i;
        const int64_t i1 = i0 + a.n_pairs;
        const float x0 = gs_ld(a.qk, a.dt, i0), x1 = gs_ld(a.qk, a.dt, i1);
        const float y0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        const float y1 = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
        gs_st(a.qk, a.dt, i0, y0);
        gs_st(a.qk, a.dt, i1, y1);
    }
}

/* inv_freq[j] = 1 / theta^(2j / dim) in F32, as torch computes it (the
 * same helper as the CPU backend, backend_impl.h). */
static void inv_freq(float *out, int n, int dim, float theta)
{
    for (int j = 0; j < n; j++)
        out[j] = gs_rope_inv_freq(theta, j, dim);
}

static int launch(gs_cuda *c, const rope_args &a, int vision, const char *op)
{
    const int64_t total = a.m * a.n_pairs;
    if (total == 0)
        return 0;
    const int64_t blocks = (total + 255) / 256;
    GS_CU_CHECK(blocks <= 0x7fffffff, op, "too many rows");
    if (vision)
        gs_rope_vision_kernel<<<(unsigned)blocks, 256, 0, c->stream>>>(a);
    else
        gs_rope_text_kernel<<<(unsigned)blocks, 256, 0, c->stream>>>(a);
    GS_CU_LAUNCHED(op);
    return 0;
}

int gs_cuda_rope_text(gs_cuda *c, gs_mat qk, const int32_t *pos, const gs_rope_text_params *p)
{
    const char *op = "rope_text";
    GS_CU_CHECK(p && gs_cu_mat_ok(qk), op, "bad arguments");
    GS_CU_CHECK(p->n_heads > 0 && p->head_dim > 0 &&
                    (int64_t)p->n_heads * p->head_dim == qk.cols,
                op, "n_heads %d x head_dim %d != cols %lld", p->n_heads, p->head_dim,
                (long long)qk.cols);
    GS_CU_CHECK(p->rotary_dim >= 0 && p->rotary_dim % 2 == 0 && p->rotary_dim <= p->head_dim &&
                    p->rotary_dim / 2 <= ROPE_MAX_PAIRS,
                op, "bad rotary_dim %d", p->rotary_dim);
    GS_CU_CHECK(p->mrope_section[0] >= 0 && p->mrope_section[1] >= 0 && p->mrope_section[2] >= 0,
                op, "negative mrope_section");
    GS_CU_CHECK(p->theta > 0.0f, op, "theta must be > 0");
    if (qk.rows == 0 || p->rotary_dim == 0)
        return 0;
    GS_CU_CHECK(pos, op, "NULL positions");
    rope_args a;
    a.qk = qk.data;
    a.pos = pos;
    a.m = qk.rows;
    a.ld = qk.stride;
    a.n_heads = p->n_heads;
    a.head_dim = p->head_dim;
    a.n_pairs = p->rotary_dim / 2;
    a.dt = qk.dt;
    a.sec0 = p->mrope_section[0];
    a.sec1 = p->mrope_section[0] + p->mrope_section[1];
    inv_freq(a.inv_freq, a.n_pairs, p->rotary_dim, p->theta);
    return launch(c, a, 0, op);
}

int gs_cuda_rope_vision(gs_cuda *c, gs_mat qk, const int32_t *pos,
                        const gs_rope_vision_params *p)
{
    const char *op = "rope_vision";
    GS_CU_CHECK(p && gs_cu_mat_ok(qk), op, "bad arguments");
    GS_CU_CHECK(p->n_heads > 0 && p->head_dim > 0 && p->head_dim % 4 == 0 &&
                    p->head_dim / 2 <= ROPE_MAX_PAIRS &&
                    (int64_t)p->n_heads * p->head_dim == qk.cols,
                op, "n_heads %d x head_dim %d vs cols %lld (head_dim must be a multiple of 4)",
                p->n_heads, p->head_dim, (long long)qk.cols);
    GS_CU_CHECK(p->theta > 0.0f, op, "theta must be > 0");
    if (qk.rows == 0)
        return 0;
    GS_CU_CHECK(pos, op, "NULL positions");
    rope_args a;
    a.qk = qk.data;
    a.pos = pos;
    a.m = qk.rows;
    a.ld = qk.stride;
    a.n_heads = p->n_heads;
    a.head_dim = p->head_dim;
    a.n_pairs = p->head_dim / 2;
    a.dt = qk.dt;
    a.sec0 = a.sec1 = 0;
    inv_freq(a.inv_freq, p->head_dim / 4, p->head_dim / 2, p->theta);
    return launch(c, a, 1, op);
}

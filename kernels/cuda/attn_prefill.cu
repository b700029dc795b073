/* attn_prefill.cu - attention over contiguous K/V for several independent
 * segments (vision images, a whole prompt without cache): gs_k_attention.
 *
 * Tensor-core path (sm_80+, head_dim 128, BF16, 16-byte aligned views):
 * grid (ceil(max_len / 64), n_heads, n_seqs), 128 threads; a CTA takes 64
 * query rows of one head of one segment (16 per warp, Q in registers), and
 * streams the segment's K/V through shared memory in 64-key tiles with
 * cp.async double buffering (attn_common.cuh). Causal CTAs stop at their
 * diagonal tile; masks are per row (key <= row). GQA: query head h reads KV
 * head h / (n_heads / n_kv_heads); K/V rows are re-read per query head
 * (L2 absorbs it). Shared memory: Q 17 KB + 2 x (K + V) 68 KB = 85 KB.
 * Fallback (any arch, head_dim <= 256, any float dtype): one warp per
 * (query row, head), keys one at a time with an online softmax: slow, for
 * correctness on sm_75 and odd shapes.
 * Segment offsets come from device memory; a segment that is longer than
 * max_len or runs past the rows of q is skipped and reported (GS_ERANGE at
 * the next sync). */
#include "kernels/cuda/attn_kernels.cuh"

__global__ void __launch_bounds__(AT_THREADS) gs_attn_prefill_mma(prefill_args a)
{
#if __CUDA_ARCH__ >= 800
    extern __shared__ uint4 at_smem_raw[];
    at_prefill_cta(a, (bf16 *)at_smem_raw);
#endif
}

/* Fallback: one warp per (query row, head). */
__global__ void __launch_bounds__(128) gs_attn_prefill_simple(prefill_args a)
{
    const int s = blockIdx.z, h = blockIdx.y, w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int start = 0;
    const int len = seg_len(a, s, &start);
    const int i = blockIdx.x * 4 + w;
    if (len < 0 || i >= len)
        return;
    const int hd = a.head_dim, kvh = h / a.group;
    const int64_t qo = (int64_t)(start + i) * a.ldq + (int64_t)h * hd;
    float qv[8], ov[8];
#pragma unroll
    for (int u = 0; u < 8; u++) {
        const int d = lane + 32 * u;
        qv[u] = d < hd ? gs_ld(a.q, a.dt, qo + d) : 0.0f;
        ov[u] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int kend = a.causal ? i + 1 : len;
    for (int j = 0; j < kend; j++) {
        const int64_t ko = (int64_t)(start + j) * a.ldk + (int64_t)kvh * hd;
        const int64_t vo = (int64_t)(start + j) * a.ldv + (int64_t)kvh * hd;
        float dot = 0.0f;
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int d = lane + 32 * u;
            if (d < hd)
                dot += qv[u] * gs_ld(a.k, a.dt, ko + d);
        }
        dot = gs_warp_sum(dot) * a.scale_log2;
        const float mn = fmaxf(m, dot);
        const float al = exp2f(m - mn), p = exp2f(dot - mn);
        l = l * al + p;
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int d = lane + 32 * u;
            if (d < hd)
                ov[u] = ov[u] * al + p * gs_ld(a.v, a.dt, vo + d);
        }
        m = mn;
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const int64_t oo = (int64_t)(start + i) * a.ldo + (int64_t)h * hd;
#pragma unroll
    for (int u = 0; u < 8; u++) {
        const int d = lane + 32 * u;
        if (d < hd)
            gs_st(a.out, a.dt, oo + d, ov[u] * inv);
    }
}

void gs_cuda_attn_prefill_setup(gs_cuda *c)
{
    c->attn_prefill_ok = 0;
    if (c->cc_major < 8 || c->smem_optin < (size_t)PF_SMEM_BYTES)
        return;
    cudaError_t e = cudaFuncSetAttribute(gs_attn_prefill_mma,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         PF_SMEM_BYTES);
    if (e != cudaSuccess) {
        gs_cuda_err(e, "cudaFuncSetAttribute(attn_prefill)", __FILE__, __LINE__);
        return;
    }
    c->attn_prefill_ok = 1;
}

static int mma_ok(const gs_cuda *c, gs_mat out, gs_mat q, gs_mat k, gs_mat v, int hd)
{
    return c->attn_prefill_ok && !c->attn_simple && hd == AT_D && gs_cu_vec8_ok(out) &&
           gs_cu_vec8_ok(q) && gs_cu_vec8_ok(k) && gs_cu_vec8_ok(v);
}

int gs_cuda_attention(gs_cuda *c, gs_mat out, gs_mat q, gs_mat k, gs_mat v, const int32_t *cu,
                      int32_t n_seqs, int32_t max_len, const gs_attn_params *p)
{
    const char *op = "attention";
    GS_CU_CHECK(p && gs_cu_mat_ok(out) && gs_cu_mat_ok(q) && gs_cu_mat_ok(k) && gs_cu_mat_ok(v),
                op, "bad arguments");
    GS_CU_CHECK(p->n_heads > 0 && p->n_kv_heads > 0 && p->n_heads % p->n_kv_heads == 0 &&
                    p->head_dim > 0 && p->head_dim <= 256,
                op, "heads %d / %d, head_dim %d", p->n_heads, p->n_kv_heads, p->head_dim);
    const int64_t qd = (int64_t)p->n_heads * p->head_dim, kd = (int64_t)p->n_kv_heads * p->head_dim;
    GS_CU_CHECK(q.cols == qd && out.cols == qd && k.cols == kd && v.cols == kd, op,
                "q %lld / out %lld / k %lld / v %lld columns vs heads", (long long)q.cols,
                (long long)out.cols, (long long)k.cols, (long long)v.cols);
    GS_CU_CHECK(out.rows == q.rows && k.rows == q.rows && v.rows == q.rows, op, "row counts differ");
    GS_CU_CHECK(q.dt == k.dt && q.dt == v.dt && q.dt == out.dt, op, "dtypes differ");
    GS_CU_CHECK(n_seqs >= 0 && n_seqs <= 65535 && max_len >= 0, op, "n_seqs %d, max_len %d",
                n_seqs, max_len);
    GS_CU_CHECK(p->scale == p->scale && p->scale > 0.0f, op, "bad scale");
    if (n_seqs == 0 || max_len == 0 || q.rows == 0)
        return 0;
    GS_CU_CHECK(cu, op, "NULL cu");
    prefill_args a = {q.data, k.data, v.data, out.data, q.stride, k.stride, v.stride, out.stride,
                      cu, q.rows, p->n_heads, p->n_heads / p->n_kv_heads, p->head_dim,
                      p->causal != 0, max_len, q.dt, p->scale * AT_LOG2E, c->err_dev};
    if (mma_ok(c, out, q, k, v, p->head_dim)) {
        dim3 grid((unsigned)((max_len + AT_KT - 1) / AT_KT), (unsigned)p->n_heads, (unsigned)n_seqs);
        gs_attn_prefill_mma<<<grid, AT_THREADS, PF_SMEM_BYTES, c->stream>>>(a);
        GS_CU_LAUNCHED("attention (mma)");
        return 0;
    }
    dim3 grid((unsigned)((max_len + 3) / 4), (unsigned)p->n_heads, (unsigned)n_seqs);
    gs_attn_prefill_simple<<<grid, 128, 0, c->stream>>>(a);
    GS_CU_LAUNCHED("attention (simple)");
    return 0;
}

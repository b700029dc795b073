/* attn_decode.cu - attention of a batch of sequences over the paged KV
 * cache (gs_k_attention_paged): decode steps (1 query row per sequence)
 * and chunked prefill against the cache (n_q > 1), causal.
 *
 * GQA packing: the g = n_heads / n_kv_heads query heads that share a KV head
 * and the sequence's query rows form "packed rows" p = i * g + j (query row
 * i, head j of the group), so one CTA per (sequence, KV head, row block,
 * split) loads each K/V page once for all heads of the group (GLM: g = 16 =
 * exactly one 16-row MMA block). Two shapes of the same kernel
 * (attn_common.cuh tile engine):
 *  - KSPLIT (n_q * g <= 16, decode): 16 packed rows; the 4 warps take 16
 *    keys each of every 64-key tile and merge their softmax states in
 *    shared memory at the end;
 *  - rows (n_q * g > 16, chunked prefill): 64 packed rows, 16 per warp,
 *    every warp all keys of the tile.
 * Split-KV (flash-decoding): when (sequences x KV heads x row blocks) would
 * not fill the GPU, each CTA takes 1/n_splits of the sequence's tiles and
 * writes an FP32 partial O with its log2-sum-exp; a merge kernel combines
 * them. n_splits is chosen on the host from n_seqs, max_q and max_kv (all
 * host-side bounds, so the grid is fixed for a CUDA graph bucket); the
 * per-CTA ranges come from the device-side kv_len.
 * K/V tiles are gathered row by row through the block table with cp.async;
 * a page id outside the cache zero-fills the row and sets the error word.
 * Fallback (sm < 80, head_dim != 128, unaligned views): one warp per
 * (query row, head), keys one at a time. */
#include <string.h>

#include "kernels/cuda/attn_kernels.cuh"

template <bool KSPLIT>
__global__ void __launch_bounds__(AT_THREADS) gs_attn_paged_mma(paged_args a)
{
#if __CUDA_ARCH__ >= 800
    extern __shared__ uint4 at_smem_raw[];
    at_paged_cta<KSPLIT>(a, (bf16 *)at_smem_raw);
#endif
}

__global__ void __launch_bounds__(128) gs_attn_merge_kernel(paged_args a)
{
    at_merge_block(a);
}

/* Fallback: one warp per (query row, head), any head_dim <= 256. */
__global__ void __launch_bounds__(128) gs_attn_paged_simple(paged_args a)
{
    const int s = blockIdx.y, w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int q0, nq, L;
    if (!seq_info(a, s, &q0, &nq, &L))
        return;
    const int idx = blockIdx.x * 4 + w;
    if (idx >= nq * a.n_heads)
        return;
    const int qi = idx / a.n_heads, h = idx % a.n_heads, kvh = h / a.group, hd = a.head_dim;
    const int64_t qo = (int64_t)(q0 + qi) * a.ldq + (int64_t)h * hd;
    float qv[8], ov[8];
#pragma unroll
    for (int u = 0; u < 8; u++) {
        const int d = lane + 32 * u;
        qv[u] = d < hd ? gs_ld(a.q, a.dt, qo + d) : 0.0f;
        ov[u] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int last = L - nq + qi;
    for (int t = 0; t <= last; t++) {
        const int pg = page_of(a, s, t);
        if (pg < 0)
            continue;
        const int64_t off = cache_off(a, pg, t, kvh);
        float dot = 0.0f;
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int d = lane + 32 * u;
            if (d < hd)
                dot += qv[u] * __bfloat162float(a.kc[off + d]);
        }
        dot = gs_warp_sum(dot) * a.scale_log2;
        const float mn = fmaxf(m, dot);
        const float al = exp2f(m - mn), p = exp2f(dot - mn);
        l = l * al + p;
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int d = lane + 32 * u;
            if (d < hd)
                ov[u] = ov[u] * al + p * __bfloat162float(a.vc[off + d]);
        }
        m = mn;
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const int64_t oo = (int64_t)(q0 + qi) * a.ldo + (int64_t)h * hd;
#pragma unroll
    for (int u = 0; u < 8; u++) {
        const int d = lane + 32 * u;
        if (d < hd)
            gs_st(a.out, a.dt, oo + d, ov[u] * inv);
    }
}

void gs_cuda_attn_paged_setup(gs_cuda *c)
{
    c->attn_paged_ok = 0;
    if (c->cc_major < 8 || c->smem_optin < (size_t)PG_SMEM(64))
        return;
    cudaError_t e = cudaFuncSetAttribute(gs_attn_paged_mma<true>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, PG_SMEM(16));
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(gs_attn_paged_mma<false>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, PG_SMEM(64));
    if (e != cudaSuccess) {
        gs_cuda_err(e, "cudaFuncSetAttribute(attn_paged)", __FILE__, __LINE__);
        return;
    }
    c->attn_paged_ok = 1;
}

static int pick_splits(const gs_cuda *c, int64_t ctas, int32_t max_kv)
{
    if (c->attn_splits > 0)
        return c->attn_splits;
    if (ctas >= c->n_sm || max_kv < 512)
        return 1;
    int64_t want = (2 * (int64_t)c->n_sm + ctas - 1) / ctas; /* about two waves */
    int64_t by_len = (max_kv + 255) / 256;                     /* >= 256 keys per split */
    int64_t n = want < by_len ? want : by_len;
    return (int)(n > 64 ? 64 : (n < 1 ? 1 : n));
}

int gs_cuda_attention_paged(gs_cuda *c, gs_mat out, gs_mat q, const gs_kv_layer *kv,
                            const gs_paged_batch *b, const gs_attn_params *p)
{
    const char *op = "attention_paged";
    GS_CU_CHECK(p && kv && b && gs_cu_mat_ok(out) && gs_cu_mat_ok(q), op, "bad arguments");
    GS_CU_CHECK(p->n_heads > 0 && p->n_kv_heads > 0 && p->n_heads % p->n_kv_heads == 0 &&
                    p->head_dim > 0 && p->head_dim <= 256,
                op, "heads %d / %d, head_dim %d", p->n_heads, p->n_kv_heads, p->head_dim);
    GS_CU_CHECK(kv->k && kv->v && kv->n_pages > 0 && kv->page_size > 0 &&
                    kv->n_kv_heads == p->n_kv_heads && kv->head_dim == p->head_dim,
                op, "cache geometry does not match the attention parameters");
    const int64_t qd = (int64_t)p->n_heads * p->head_dim;
    GS_CU_CHECK(q.cols == qd && out.cols == qd && out.rows == q.rows, op,
                "q [%lld, %lld] / out [%lld, %lld] vs %lld", (long long)q.rows,
                (long long)q.cols, (long long)out.rows, (long long)out.cols, (long long)qd);
    GS_CU_CHECK(q.dt == out.dt, op, "q and out dtypes differ");
    GS_CU_CHECK(b->n_seqs >= 0 && b->n_seqs <= 65535 && b->max_blocks > 0 && b->max_q >= 0 &&
                    b->max_kv >= 0,
                op, "bad batch (n_seqs %d, max_blocks %d, max_q %d, max_kv %d)", b->n_seqs,
                b->max_blocks, b->max_q, b->max_kv);
    GS_CU_CHECK(p->scale == p->scale && p->scale > 0.0f, op, "bad scale");
    if (b->n_seqs == 0 || b->max_q == 0 || q.rows == 0)
        return 0;
    GS_CU_CHECK(b->cu_q && b->kv_len && b->block_table, op, "NULL batch arrays");

    paged_args a;
    memset(&a, 0, sizeof a);
    a.q = q.data;
    a.out = out.data;
    a.ldq = q.stride;
    a.ldo = out.stride;
    a.m = q.rows;
    a.kc = (const bf16 *)kv->k;
    a.vc = (const bf16 *)kv->v;
    a.page_size = kv->page_size;
    a.n_kv = kv->n_kv_heads;
    a.n_pages = kv->n_pages;
    a.cu_q = b->cu_q;
    a.kv_len = b->kv_len;
    a.bt = b->block_table;
    a.max_blocks = b->max_blocks;
    a.max_q = b->max_q;
    a.n_heads = p->n_heads;
    a.group = p->n_heads / p->n_kv_heads;
    a.head_dim = p->head_dim;
    a.dt = q.dt;
    a.n_splits = 1;
    a.scale_log2 = p->scale * AT_LOG2E;
    a.err = c->err_dev;

    const int ksplit = (int64_t)b->max_q * a.group <= 16;
    const int rt = ksplit ? 16 : 64;
    const size_t smem = (size_t)PG_SMEM(rt);
    const int mma = c->attn_paged_ok && !c->attn_simple && p->head_dim == AT_D &&
                    gs_cu_vec8_ok(q) && gs_cu_vec8_ok(out) && gs_cu_aligned(kv->k, 16) &&
                    gs_cu_aligned(kv->v, 16);
    if (!mma) {
        const int64_t bx = ((int64_t)b->max_q * p->n_heads + 3) / 4;
        GS_CU_CHECK(bx <= 0x7fffffff, op, "too many query rows");
        dim3 grid((unsigned)bx, (unsigned)b->n_seqs);
        gs_attn_paged_simple<<<grid, 128, 0, c->stream>>>(a);
        GS_CU_LAUNCHED("attention_paged (simple)");
        return 0;
    }
    const int64_t n_rb = ((int64_t)b->max_q * a.group + rt - 1) / rt;
    a.n_splits = pick_splits(c, n_rb * a.n_kv * b->n_seqs, b->max_kv);
    if (a.n_splits > 1) {
        const size_t per = (size_t)a.n_splits * (size_t)q.rows * (size_t)p->n_heads;
        void *ws = NULL;
        int rc = gs_cuda_scratch(c, per * (AT_D + 1) * sizeof(float), &ws);
        if (rc)
            return rc;
        a.ws_o = (float *)ws;
        a.ws_lse = a.ws_o + per * AT_D;
    }
    GS_CU_CHECK(n_rb * a.n_splits <= 0x7fffffff, op, "grid too large");
    dim3 grid((unsigned)(n_rb * a.n_splits), (unsigned)a.n_kv, (unsigned)b->n_seqs);
    if (ksplit)
        gs_attn_paged_mma<true><<<grid, AT_THREADS, smem, c->stream>>>(a);
    else
        gs_attn_paged_mma<false><<<grid, AT_THREADS, smem, c->stream>>>(a);
    GS_CU_LAUNCHED("attention_paged (mma)");
    if (a.n_splits > 1) {
        const int64_t bx = ((int64_t)b->max_q * p->n_heads + 3) / 4;
        dim3 mgrid((unsigned)bx, (unsigned)b->n_seqs);
        gs_attn_merge_kernel<<<mgrid, 128, 0, c->stream>>>(a);
        GS_CU_LAUNCHED("attention_paged (merge)");
    }
    return 0;
}

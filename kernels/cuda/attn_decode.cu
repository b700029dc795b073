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

#include "kernels/cuda/attn_common.cuh"

typedef struct {
    const void *q;
    void *out;
    int64_t ldq, ldo, m; /* m: rows of q and out */
    const bf16 *kc, *vc;
    int page_size, n_kv, n_pages;
    const int32_t *cu_q, *kv_len, *bt;
    int max_blocks, max_q;
    int n_heads, group, head_dim, dt;
    int n_splits;
    float scale_log2;
    float *ws_o, *ws_lse; /* [n_splits, m, n_heads, 128] / [n_splits, m, n_heads] */
    unsigned *err;
} paged_args;

/* Reads and checks sequence s: q rows q0 .. q0 + nq - 1, L keys. */
__device__ __forceinline__ bool seq_info(const paged_args &a, int s, int *q0, int *nq, int *L)
{
    const int a0 = a.cu_q[s], a1 = a.cu_q[s + 1], len = a.kv_len[s];
    const bool ok = a0 >= 0 && a1 >= a0 && (int64_t)a1 <= a.m && a1 - a0 <= a.max_q &&
                    len >= a1 - a0 && (int64_t)len <= (int64_t)a.max_blocks * a.page_size;
    if (!ok) {
        if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)
            gs_dev_error(a.err, GS_CUDA_ERR_SEQ);
        return false;
    }
    *q0 = a0;
    *nq = a1 - a0;
    *L = len;
    return true;
}

/* Physical page of key t of sequence s, or -1 (flagged) when out of range. */
__device__ __forceinline__ int page_of(const paged_args &a, int s, int t)
{
    const int pg = a.bt[(int64_t)s * a.max_blocks + t / a.page_size];
    if (pg < 0 || pg >= a.n_pages) {
        gs_dev_error(a.err, GS_CUDA_ERR_PAGE);
        return -1;
    }
    return pg;
}

/* Element offset of (key t, kv head) in the cache for page pg. */
__device__ __forceinline__ int64_t cache_off(const paged_args &a, int pg, int t, int kvh)
{
    return (((int64_t)pg * a.page_size + t % a.page_size) * a.n_kv + kvh) * a.head_dim;
}

template <bool KSPLIT>
__global__ void __launch_bounds__(AT_THREADS) gs_attn_paged_mma(paged_args a)
{
#if __CUDA_ARCH__ >= 800
    constexpr int RT = KSPLIT ? 16 : 64; /* packed rows per CTA */
    extern __shared__ uint4 at_smem_raw[];
    bf16 *qs = (bf16 *)at_smem_raw;
    bf16 *ks = qs + RT * AT_LD;
    bf16 *vs = ks + 2 * AT_TILE;
    const int rb = blockIdx.x / a.n_splits, sp = blockIdx.x % a.n_splits;
    const int kvh = blockIdx.y, s = blockIdx.z;
    int q0, nq, L;
    if (!seq_info(a, s, &q0, &nq, &L))
        return;
    const int P = nq * a.group, p0 = rb * RT;
    if (p0 >= P)
        return;
    const int i_max = min(nq - 1, (p0 + RT - 1) / a.group);
    const int kend = L - nq + i_max + 1;
    const int T = (kend + AT_KT - 1) / AT_KT;
    const int tps = (T + a.n_splits - 1) / a.n_splits;
    const int t_begin = sp * tps, t_end = min(T, t_begin + tps);
    const int tid = threadIdx.x, col = (tid & 15) * 8;
    const bf16 *q = (const bf16 *)a.q;

    for (int r = tid >> 4; r < RT; r += AT_THREADS / 16) {
        const int p = p0 + r, qi = p / a.group, j = p % a.group;
        const bool ok = p < P;
        const bf16 *src = q + (int64_t)(q0 + (ok ? qi : 0)) * a.ldq +
                          (int64_t)(kvh * a.group + (ok ? j : 0)) * AT_D + col;
        at_cp16(qs + r * AT_LD + col, src, ok ? 16 : 0);
    }
    auto load_kv = [&](int t, int stage) {
        bf16 *kd = ks + stage * AT_TILE, *vd = vs + stage * AT_TILE;
        for (int i = 0; i < 8; i++) {
            const int r = (tid >> 4) + i * 8, key = t * AT_KT + r;
            const int pg = key < kend ? page_of(a, s, key) : -1;
            const int64_t off = pg >= 0 ? cache_off(a, pg, key, kvh) + col : 0;
            at_cp16(kd + r * AT_LD + col, a.kc + off, pg >= 0 ? 16 : 0);
            at_cp16(vd + r * AT_LD + col, a.vc + off, pg >= 0 ? 16 : 0);
        }
    };
    if (t_begin < t_end)
        load_kv(t_begin, 0);
    at_commit();

    at_state st;
    at_init(st);
    const int w = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
    const int rbase = KSPLIT ? 0 : w * 16;
    int lim[2];
    for (int u = 0; u < 2; u++) {
        const int p = p0 + rbase + g + 8 * u;
        lim[u] = p < P ? L - nq + p / a.group : -1;
    }
    for (int t = t_begin; t < t_end; t++) {
        const int stage = (t - t_begin) & 1;
        if (t + 1 < t_end) {
            load_kv(t + 1, stage ^ 1);
            at_commit();
            at_wait<1>();
        } else {
            at_wait<0>();
        }
        __syncthreads();
        if (t == t_begin)
            at_load_q(st, qs + rbase * AT_LD);
        at_tile<KSPLIT ? 2 : 8>(st, ks + stage * AT_TILE, vs + stage * AT_TILE, t * AT_KT,
                                KSPLIT ? w * 16 : 0, lim[0], lim[1], a.scale_log2);
        __syncthreads();
    }
    at_wait<0>();
    if (KSPLIT)
        at_merge_warps(st, (float *)ks);
    else
        at_finish_l(st);

    for (int u = 0; u < 2; u++) {
        const int p = p0 + rbase + g + 8 * u;
        if (p >= P)
            continue;
        const int qi = p / a.group, head = kvh * a.group + p % a.group;
        const int64_t orow = q0 + qi;
        const float l = st.l[u], inv = l > 0.0f ? 1.0f / l : 0.0f;
        if (a.n_splits == 1) {
            bf16 *o = (bf16 *)a.out + orow * a.ldo + (int64_t)head * AT_D + tq * 2;
#pragma unroll
            for (int d = 0; d < 16; d++)
                if (!KSPLIT || (d >> 2) == w)
                    *(uint32_t *)(o + d * 8) =
                        at_pack(st.o[d][2 * u] * inv, st.o[d][2 * u + 1] * inv);
        } else {
            const int64_t hrow = ((int64_t)sp * a.m + orow) * a.n_heads + head;
            float *o = a.ws_o + hrow * AT_D + tq * 2;
#pragma unroll
            for (int d = 0; d < 16; d++)
                if (!KSPLIT || (d >> 2) == w)
                    *(float2 *)(o + d * 8) =
                        make_float2(st.o[d][2 * u] * inv, st.o[d][2 * u + 1] * inv);
            if (tq == 0 && (!KSPLIT || w == 0))
                a.ws_lse[hrow] = l > 0.0f ? st.m[u] + log2f(l) : -INFINITY;
        }
    }
#endif
}

/* Combines the split partials: one warp per (query row, head). */
__global__ void __launch_bounds__(128) gs_attn_merge_kernel(paged_args a)
{
    const int s = blockIdx.y, w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int q0, nq, L;
    if (!seq_info(a, s, &q0, &nq, &L))
        return;
    const int idx = blockIdx.x * 4 + w;
    if (idx >= nq * a.n_heads)
        return;
    const int64_t row = q0 + idx / a.n_heads;
    const int head = idx % a.n_heads;
    float M = -INFINITY;
    for (int sp = 0; sp < a.n_splits; sp++)
        M = fmaxf(M, a.ws_lse[((int64_t)sp * a.m + row) * a.n_heads + head]);
    const float ref = M == -INFINITY ? 0.0f : M;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, wsum = 0.0f;
    for (int sp = 0; sp < a.n_splits; sp++) {
        const int64_t hrow = ((int64_t)sp * a.m + row) * a.n_heads + head;
        const float f = exp2f(a.ws_lse[hrow] - ref);
        if (f == 0.0f)
            continue;
        const float4 v = *(const float4 *)(a.ws_o + hrow * AT_D + lane * 4);
        acc[0] += f * v.x;
        acc[1] += f * v.y;
        acc[2] += f * v.z;
        acc[3] += f * v.w;
        wsum += f;
    }
    const float inv = wsum > 0.0f ? 1.0f / wsum : 0.0f;
    bf16 *o = (bf16 *)a.out + row * a.ldo + (int64_t)head * AT_D + lane * 4;
    *(uint32_t *)o = at_pack(acc[0] * inv, acc[1] * inv);
    *(uint32_t *)(o + 2) = at_pack(acc[2] * inv, acc[3] * inv);
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

#define PG_SMEM(rt) (((rt) * AT_LD + 4 * AT_TILE) * (int)sizeof(bf16))

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

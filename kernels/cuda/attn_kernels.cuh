/* attn_kernels.cuh - the bodies of the tensor-core attention kernels (one
 * CTA each) and their argument structs: prefill over contiguous K/V
 * (attn_prefill.cu), paged attention and the split-KV merge
 * (attn_decode.cu). Kept in a header so that tests/gpu/emu_attn.cu can run
 * exactly this code on the CPU through the emulated warp primitives of
 * attn_common.cuh. Internal to kernels/cuda. */
#ifndef GS_CUDA_ATTN_KERNELS_CUH
#define GS_CUDA_ATTN_KERNELS_CUH

#include "kernels/cuda/attn_common.cuh"

/* ---- prefill ------------------------------------------------------------------ */

typedef struct {
    const void *q, *k, *v;
    void *out;
    int64_t ldq, ldk, ldv, ldo;
    const int32_t *cu;
    int64_t m; /* rows of q / k / v / out */
    int n_heads, group, head_dim, causal, max_len, dt;
    float scale_log2;
    unsigned *err;
} prefill_args;

#define PF_SMEM_BYTES (5 * AT_TILE * (int)sizeof(bf16))

/* Validates segment s; returns its length or -1 (and flags the error). */
AT_DEV int seg_len(const prefill_args &a, int s, int *start)
{
    const int st = a.cu[s], en = a.cu[s + 1];
    if (st < 0 || en < st || (int64_t)en > a.m || en - st > a.max_len) {
        if (AT_TID == 0 && AT_BIDX == 0 && AT_BIDY == 0)
            gs_dev_error(a.err, GS_CUDA_ERR_SEQ);
        return -1;
    }
    *start = st;
    return en - st;
}

/* One CTA of the tensor-core prefill kernel (attn_prefill.cu); smem: PF_SMEM_BYTES. */
AT_DEV void at_prefill_cta(const prefill_args &a, bf16 *smem)
{
    bf16 *qs = smem;
    bf16 *ks = qs + AT_TILE; /* 2 stages */
    bf16 *vs = ks + 2 * AT_TILE;
    const int s = AT_BIDZ, h = AT_BIDY;
    int start = 0;
    const int len = seg_len(a, s, &start);
    const int q0 = AT_BIDX * AT_KT;
    if (len < 0 || q0 >= len)
        return;
    const bf16 *q = (const bf16 *)a.q, *k = (const bf16 *)a.k, *v = (const bf16 *)a.v;
    const int kvh = h / a.group;
    const int kend = a.causal ? at_min(len, q0 + AT_KT) : len;
    const int n_tiles = (kend + AT_KT - 1) / AT_KT;
    const int tid = AT_TID, col = (tid & 15) * 8;

    for (int i = 0; i < 8; i++) {
        const int r = (tid >> 4) + i * 8;
        const bool ok = q0 + r < len;
        const bf16 *src = q + (int64_t)(start + (ok ? q0 + r : 0)) * a.ldq + (int64_t)h * AT_D + col;
        at_cp16(qs + r * AT_LD + col, src, ok ? 16 : 0);
    }
    auto load_kv = [&](int t, int stage) {
        bf16 *kd = ks + stage * AT_TILE, *vd = vs + stage * AT_TILE;
        for (int i = 0; i < 8; i++) {
            const int r = (tid >> 4) + i * 8, key = t * AT_KT + r;
            const bool ok = key < kend;
            const int64_t row = start + (ok ? key : 0);
            at_cp16(kd + r * AT_LD + col, k + row * a.ldk + (int64_t)kvh * AT_D + col, ok ? 16 : 0);
            at_cp16(vd + r * AT_LD + col, v + row * a.ldv + (int64_t)kvh * AT_D + col, ok ? 16 : 0);
        }
    };
    load_kv(0, 0);
    at_commit();

    at_state st;
    at_init(st);
    const int w = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
    const int row0 = q0 + w * 16 + g, row1 = row0 + 8;
    const int lim0 = row0 < len ? (a.causal ? row0 : len - 1) : -1;
    const int lim1 = row1 < len ? (a.causal ? row1 : len - 1) : -1;
    for (int t = 0; t < n_tiles; t++) {
        if (t + 1 < n_tiles) {
            load_kv(t + 1, (t + 1) & 1);
            at_commit();
            at_wait<1>();
        } else {
            at_wait<0>();
        }
        AT_SYNC();
        if (t == 0)
            at_load_q(st, qs + w * 16 * AT_LD);
        at_tile<8>(st, ks + (t & 1) * AT_TILE, vs + (t & 1) * AT_TILE, t * AT_KT, 0, lim0, lim1,
                   a.scale_log2);
        AT_SYNC();
    }
    at_finish_l(st);
    const float inv0 = st.l[0] > 0.0f ? 1.0f / st.l[0] : 0.0f;
    const float inv1 = st.l[1] > 0.0f ? 1.0f / st.l[1] : 0.0f;
    bf16 *out = (bf16 *)a.out;
    bf16 *o0 = out + (int64_t)(start + row0) * a.ldo + (int64_t)h * AT_D + tq * 2;
    bf16 *o1 = out + (int64_t)(start + row1) * a.ldo + (int64_t)h * AT_D + tq * 2;
#pragma unroll
    for (int d = 0; d < 16; d++) {
        if (row0 < len)
            *(uint32_t *)(o0 + d * 8) = at_pack(st.o[d][0] * inv0, st.o[d][1] * inv0);
        if (row1 < len)
            *(uint32_t *)(o1 + d * 8) = at_pack(st.o[d][2] * inv1, st.o[d][3] * inv1);
    }
}

/* ---- paged -------------------------------------------------------------------- */

#define PG_SMEM(rt) (((rt) * AT_LD + 4 * AT_TILE) * (int)sizeof(bf16))

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
AT_DEV bool seq_info(const paged_args &a, int s, int *q0, int *nq, int *L)
{
    const int a0 = a.cu_q[s], a1 = a.cu_q[s + 1], len = a.kv_len[s];
    const bool ok = a0 >= 0 && a1 >= a0 && (int64_t)a1 <= a.m && a1 - a0 <= a.max_q &&
                    len >= a1 - a0 && (int64_t)len <= (int64_t)a.max_blocks * a.page_size;
    if (!ok) {
        if (AT_TID == 0 && AT_BIDX == 0 && AT_BIDY == 0)
            gs_dev_error(a.err, GS_CUDA_ERR_SEQ);
        return false;
    }
    *q0 = a0;
    *nq = a1 - a0;
    *L = len;
    return true;
}

/* Physical page of key t of sequence s, or -1 (flagged) when out of range. */
AT_DEV int page_of(const paged_args &a, int s, int t)
{
    const int pg = a.bt[(int64_t)s * a.max_blocks + t / a.page_size];
    if (pg < 0 || pg >= a.n_pages) {
        gs_dev_error(a.err, GS_CUDA_ERR_PAGE);
        return -1;
    }
    return pg;
}

/* Element offset of (key t, kv head) in the cache for page pg. */
AT_DEV int64_t cache_off(const paged_args &a, int pg, int t, int kvh)
{
    return (((int64_t)pg * a.page_size + t % a.page_size) * a.n_kv + kvh) * a.head_dim;
}

/* One CTA of the tensor-core paged kernel (attn_decode.cu); smem: PG_SMEM(16 or 64). */
template <bool KSPLIT>
AT_DEV void at_paged_cta(const paged_args &a, bf16 *smem)
{
    constexpr int RT = KSPLIT ? 16 : 64; /* packed rows per CTA */
    bf16 *qs = smem;
    bf16 *ks = qs + RT * AT_LD;
    bf16 *vs = ks + 2 * AT_TILE;
    const int rb = AT_BIDX / a.n_splits, sp = AT_BIDX % a.n_splits;
    const int kvh = AT_BIDY, s = AT_BIDZ;
    int q0, nq, L;
    if (!seq_info(a, s, &q0, &nq, &L))
        return;
    const int P = nq * a.group, p0 = rb * RT;
    if (p0 >= P)
        return;
    const int i_max = at_min(nq - 1, (p0 + RT - 1) / a.group);
    const int kend = L - nq + i_max + 1;
    const int T = (kend + AT_KT - 1) / AT_KT;
    const int tps = (T + a.n_splits - 1) / a.n_splits;
    const int t_begin = sp * tps, t_end = at_min(T, t_begin + tps);
    const int tid = AT_TID, col = (tid & 15) * 8;
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
        AT_SYNC();
        if (t == t_begin)
            at_load_q(st, qs + rbase * AT_LD);
        at_tile<KSPLIT ? 2 : 8>(st, ks + stage * AT_TILE, vs + stage * AT_TILE, t * AT_KT,
                                KSPLIT ? w * 16 : 0, lim[0], lim[1], a.scale_log2);
        AT_SYNC();
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
}

/* The split-KV merge: one warp per (query row, head), 4 warps per block. */
AT_DEV void at_merge_block(const paged_args &a)
{
    const int s = AT_BIDY, w = AT_TID >> 5, lane = AT_TID & 31;
    int q0, nq, L;
    if (!seq_info(a, s, &q0, &nq, &L))
        return;
    const int idx = AT_BIDX * 4 + w;
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

#endif

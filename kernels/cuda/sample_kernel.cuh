/* sample_kernel.cuh - the body of the gs_k_sample kernel (one 1024-thread
 * block per row; sample.cu launches it) and its helpers: fixed-point
 * masses, block reductions and scans, radix select (the draw is
 * kernels/philox.h). Written against simt.cuh so that
 * tests/gpu/emu_sample.cu runs the same code on the CPU; the CPU backend's
 * kernels/cpu/sample.c implements the same semantics. Internal to
 * kernels/cuda. */
#ifndef GS_CUDA_SAMPLE_KERNEL_CUH
#define GS_CUDA_SAMPLE_KERNEL_CUH

#include <math.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/simt.cuh"
#include "kernels/kernels.h"
#include "kernels/philox.h"

GS_DEV int smp_min(int a, int b)
{
    return a < b ? a : b;
}

#define SAMPLE_THREADS 1024
#define FIX_ONE 1099511627776.0f /* 2^40 */

/* ---- block helpers ------------------------------------------------------------------ */

GS_DEV uint64_t warp_sum_u64(uint64_t v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += gs_shfl_xor(v, o);
    return v;
}

/* Block sum of a uint64 (exact, order-free). sh: >= 32 entries. */
GS_DEV uint64_t block_sum_u64(uint64_t v, uint64_t *sh)
{
    const int lane = GS_TID & 31, w = GS_TID >> 5, nw = GS_BDIM >> 5;
    v = warp_sum_u64(v);
    GS_SYNC();
    if (lane == 0)
        sh[w] = v;
    GS_SYNC();
    v = lane < nw ? sh[lane] : 0;
    return warp_sum_u64(v);
}

/* Exclusive block scan of a uint64. sh: >= 32 entries. */
GS_DEV uint64_t block_excl_scan_u64(uint64_t v, uint64_t *sh)
{
    const int lane = GS_TID & 31, w = GS_TID >> 5, nw = GS_BDIM >> 5;
    uint64_t inc = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const uint64_t t = gs_shfl_up(inc, o);
        if (lane >= o)
            inc += t;
    }
    GS_SYNC();
    if (lane == 31)
        sh[w] = inc;
    GS_SYNC();
    if (w == 0) {
        uint64_t t = lane < nw ? sh[lane] : 0, s = t;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const uint64_t u = gs_shfl_up(s, o);
            if (lane >= o)
                s += u;
        }
        if (lane < nw)
            sh[lane] = s - t; /* exclusive prefix of warp totals */
    }
    GS_SYNC();
    return sh[w] + inc - v;
}

/* p * 2^40 rounded to the nearest integer (ties to even). */
GS_DEV uint64_t fixmass(float p)
{
#if GS_EMU
    return (uint64_t)nearbyint((double)(p * FIX_ONE));
#else
    return (uint64_t)__float2ull_rn(p * FIX_ONE);
#endif
}

/* Radix select over the bit patterns of row[0..V) (non-negative floats),
 * considering only keys >= floor_key. Walking from the top, returns the
 * largest key K such that weight(keys >= K) >= target, where the weight of
 * a key is 1 (by_mass = 0) or its fixed-point mass. */
GS_DEV uint32_t radix_select(const float *row, int V, uint32_t floor_key, uint64_t target,
                             int by_mass, unsigned long long *hist, uint32_t *sel)
{
    uint32_t prefix = 0, mask = 0;
    uint64_t above = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = GS_TID; b < 256; b += GS_BDIM)
            hist[b] = 0;
        GS_SYNC();
        for (int i = GS_TID; i < V; i += GS_BDIM) {
            const float p = row[i];
            const uint32_t key = gs_f2u(p);
            if (key >= floor_key && (key & mask) == prefix)
                gs_atomic_add_u64(&hist[(key >> shift) & 255u],
                                  by_mass ? (unsigned long long)fixmass(p) : 1ull);
        }
        GS_SYNC();
        if (GS_TID == 0) {
            int b = 255;
            for (; b > 0; b--) {
                if (above + hist[b] >= target)
                    break;
                above += hist[b];
            }
            sel[0] = (uint32_t)b;
        }
        GS_SYNC();
        prefix |= sel[0] << shift;
        mask |= 255u << shift;
        GS_SYNC();
    }
    return prefix;
}

/* ---- kernel ----------------------------------------------------------------------------- */

typedef struct {
    unsigned long long hist[256];
    uint64_t shu[32];
    float shf[32];
    int shi[32];
    uint32_t sel[2];
} sample_smem;

typedef struct {
    float *logits;
    int64_t ld;
    int n_rows, vocab;
    const gs_sample_row *params;
    const int32_t *pen_off, *pen_ids, *pen_cnt;
    int32_t *out;
    unsigned *err;
} sample_args;

GS_DEV void sample_row(const sample_args &a, sample_smem &sm)
{
    unsigned long long *hist = sm.hist;
    uint64_t *shu = sm.shu;
    float *shf = sm.shf;
    int *shi = sm.shi;
    uint32_t *sel = sm.sel;
    const int r = GS_BIDX, V = a.vocab, tid = GS_TID;
    float *row = a.logits + (int64_t)r * a.ld;
    const gs_sample_row P = a.params[r];

    /* 1. penalties over the row's distinct ids */
    if (a.pen_off) {
        const int b = a.pen_off[r], e = a.pen_off[r + 1];
        const bool rep = P.repetition_penalty > 0.0f && P.repetition_penalty != 1.0f;
        for (int k = b + tid; k < e; k += GS_BDIM) {
            const int id = a.pen_ids[k];
            if (id < 0 || id >= V) {
                gs_dev_error(a.err, GS_CUDA_ERR_SAMPLE);
                continue;
            }
            float l = row[id];
            if (rep)
                l = l > 0.0f ? l / P.repetition_penalty : l * P.repetition_penalty;
            const int cnt = a.pen_cnt[k];
            if (cnt > 0) /* one FMA, spelled out so that every backend rounds alike */
                l -= fmaf(P.frequency_penalty, (float)cnt, P.presence_penalty);
            row[id] = l;
        }
        GS_SYNC();
    }

    /* 2. argmax: largest value, lowest id; NaN never wins */
    float bv = -INFINITY;
    int bi = -1;
    for (int i = tid; i < V; i += GS_BDIM) {
        const float v = row[i];
        if (v > bv) {
            bv = v;
            bi = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = gs_shfl_xor(bv, o);
        const int oi = gs_shfl_xor(bi, o);
        if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
            bv = ov;
            bi = oi;
        }
    }
    if ((tid & 31) == 0) {
        shf[tid >> 5] = bv;
        shi[tid >> 5] = bi;
    }
    GS_SYNC();
    if (tid == 0) {
        for (int w = 1; w < (int)(GS_BDIM >> 5); w++) {
            const float ov = shf[w];
            const int oi = shi[w];
            if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
                bv = ov;
                bi = oi;
            }
        }
        shf[0] = bv;
        shi[0] = bi;
    }
    GS_SYNC();
    bv = shf[0];
    bi = shi[0];
    GS_SYNC();
    if (bi < 0) { /* nothing finite: a per-row outcome, not a device error */
        if (tid == 0)
            a.out[r] = -1;
        return;
    }
    if (!(P.temperature > 0.0f)) {
        if (tid == 0)
            a.out[r] = bi;
        return;
    }

    /* 3. probabilities relative to the best, in place */
    const float inv_t = 1.0f / P.temperature;
    const float cutoff = -27.6310211f; /* ln(1e-12) */
    for (int i = tid; i < V; i += GS_BDIM) {
        const float z = (row[i] - bv) * inv_t;
        row[i] = z >= cutoff ? expf(z) : 0.0f; /* NaN compares false: 0 */
    }
    GS_SYNC();

    /* 4. top-k threshold (count), 5. top-p threshold (mass), 6. min-p */
    uint32_t floor_key = 0;
    if (P.top_k > 0 && P.top_k < V)
        floor_key = radix_select(row, V, 0, (uint64_t)P.top_k, 0, hist, sel);
    if (P.top_p > 0.0f && P.top_p < 1.0f) {
        uint64_t s = 0;
        for (int i = tid; i < V; i += GS_BDIM) {
            const float p = row[i];
            if (gs_f2u(p) >= floor_key)
                s += fixmass(p);
        }
        s = block_sum_u64(s, shu);
        uint64_t target = (uint64_t)((double)P.top_p * (double)s);
        if (target < 1)
            target = 1;
        floor_key = radix_select(row, V, floor_key, target, 1, hist, sel);
    }
    if (P.min_p > 0.0f) {
        const uint32_t mk = gs_f2u(P.min_p > 1.0f ? 1.0f : P.min_p);
        floor_key = mk > floor_key ? mk : floor_key;
    }

    /* 7. draw: contiguous chunk per thread, scan of chunk masses */
    const int chunk = (V + (int)GS_BDIM - 1) / (int)GS_BDIM;
    const int c0 = smp_min(V, tid * chunk), c1 = smp_min(V, c0 + chunk);
    uint64_t mine = 0;
    for (int i = c0; i < c1; i++) {
        const float p = row[i];
        if (gs_f2u(p) >= floor_key)
            mine += fixmass(p);
    }
    const uint64_t excl = block_excl_scan_u64(mine, shu);
    const uint64_t total = block_sum_u64(mine, shu);
    if (tid == 0)
        a.out[r] = bi; /* fallback when the kept mass is 0 */
    GS_SYNC();
    if (total == 0)
        return;
    uint64_t target = (uint64_t)(gs_philox_uniform(P.seed, P.offset) * (double)total);
    if (target >= total)
        target = total - 1;
    if (target >= excl && target < excl + mine) {
        uint64_t acc = excl;
        for (int i = c0; i < c1; i++) {
            const float p = row[i];
            if (gs_f2u(p) < floor_key)
                continue;
            acc += fixmass(p);
            if (acc > target) {
                a.out[r] = i;
                break;
            }
        }
    }
}

#endif

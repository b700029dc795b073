/* attn_common.cuh - the tensor-core flash-attention tile engine shared by
 * attn_prefill.cu (contiguous K/V) and attn_decode.cu (paged K/V).
 * Internal to kernels/cuda.
 *
 * Head dim 128, BF16 operands, FP32 accumulation (mma.sync m16n8k16,
 * sm_80+). A CTA has 4 warps (128 threads). Each warp owns 16 query rows:
 * Q as A fragments in registers (8 k-chunks x 4 regs), O as 16 n-tiles of
 * m16n8 FP32 accumulators, and the online-softmax state (row max m in the
 * log2 domain, partial row sums l) for rows g = lane/4 and g + 8.
 * K and V tiles of 64 keys x 128 dims sit in shared memory with rows padded
 * to 136 elements (272 bytes), which makes every ldmatrix phase (8 rows x
 * 16 bytes) hit 8 distinct 16-byte bank groups. K feeds S = Q K^T through
 * ldmatrix (non-transposed); S is scaled by scale*log2(e), masked per row
 * with an inclusive key limit, exponentiated with exp2, rounded to BF16 and
 * reused in registers as the A operand of P V (the m16n8 accumulator layout
 * is the A fragment layout); V feeds it through ldmatrix.trans.
 * A warp can take all 64 keys of a tile (NT = 8 n-tiles: prefill) or a
 * 16-key slice of it (NT = 2: decode, 4 warps share one set of rows and
 * merge their states at the end).
 * Loads are cp.async 16-byte copies with zero fill for rows past the end,
 * double-buffered (tile t + 1 loads while tile t computes). */
#ifndef GS_CUDA_ATTN_COMMON_CUH
#define GS_CUDA_ATTN_COMMON_CUH

#include <string.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/simt.cuh"

#define AT_D 128                  /* head dim of the tensor-core kernels */
#define AT_KT 64                  /* keys per tile */
#define AT_LD 136                 /* shared-memory row stride, elements */
#define AT_TILE (AT_KT * AT_LD)   /* elements per K or V tile */
#define AT_THREADS 128
#define AT_LOG2E 1.4426950408889634f

typedef __nv_bfloat16 bf16;

/* Indices, barriers and shuffles come from simt.cuh so that
 * tests/gpu/emu_attn.cu can run this code on the CPU; built with
 * GS_AT_EMULATE, the host pass also maps the warp-collective ldmatrix / mma
 * and cp.async below to that emulator. */
#define AT_EMU GS_EMU
#define AT_DEV GS_DEV
#define AT_TID GS_TID
#define AT_BIDX GS_BIDX
#define AT_BIDY GS_BIDY
#define AT_BIDZ GS_BIDZ
#define AT_SYNC() GS_SYNC()
#define AT_SHFL_XOR(v, m) gs_shfl_xor((v), (m))
#if AT_EMU
void at_emu_cp16(void *dst, const void *src, int bytes);
void at_emu_ldsm4(const void *p, uint32_t r[4], int trans);
void at_emu_mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
#endif

AT_DEV int at_min(int a, int b)
{
    return a < b ? a : b;
}

/* 16-byte async copy global -> shared; src_bytes 0 writes zeros. */
AT_DEV void at_cp16(void *dst, const void *src, int src_bytes)
{
#if AT_EMU
    at_emu_cp16(dst, src, src_bytes);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                     (unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(src_bytes));
#endif
}

AT_DEV void at_commit()
{
#if !AT_EMU && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
AT_DEV void at_wait()
{
#if !AT_EMU && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

/* ldmatrix .x4: lanes 8i .. 8i+7 give the row addresses of matrix i. */
AT_DEV void at_ldsm4(const bf16 *p, uint32_t r[4])
{
#if AT_EMU
    at_emu_ldsm4(p, r, 0);
#elif __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p)));
#endif
}

AT_DEV void at_ldsm4_t(const bf16 *p, uint32_t r[4])
{
#if AT_EMU
    at_emu_ldsm4(p, r, 1);
#elif __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p)));
#endif
}

/* d += a (16x16 row) * b (16x8 col), BF16 in, FP32 accumulate. */
AT_DEV void at_mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
#if AT_EMU
    at_emu_mma(d, a, b0, b1);
#elif __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

AT_DEV uint32_t at_pack(float lo, float hi)
{
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &h, 4);
    return u;
}

/* Per-warp state for 16 query rows. */
struct at_state {
    uint32_t qf[8][4]; /* Q A-fragments, 8 chunks of 16 dims */
    float o[16][4];    /* O accumulators, 16 n-tiles of 8 dims */
    float m[2];        /* running max (log2 domain), rows g and g + 8 */
    float l[2];        /* this thread's partial row sums */
};

AT_DEV void at_init(at_state &st)
{
#pragma unroll
    for (int i = 0; i < 16; i++)
        st.o[i][0] = st.o[i][1] = st.o[i][2] = st.o[i][3] = 0.0f;
    st.m[0] = st.m[1] = -INFINITY;
    st.l[0] = st.l[1] = 0.0f;
}

/* Q fragments from 16 rows of shared memory (row stride AT_LD). */
AT_DEV void at_load_q(at_state &st, const bf16 *qs)
{
    const int lane = AT_TID & 31, mi = lane >> 3, r = lane & 7;
#pragma unroll
    for (int c = 0; c < 8; c++) {
        const bf16 *p = qs + ((mi & 1) * 8 + r) * AT_LD + c * 16 + (mi >> 1) * 8;
        at_ldsm4(p, st.qf[c]);
    }
}

/* One K/V tile for this warp: keys kofs .. kofs + NT*8 - 1 of the tile in
 * shared memory, whose row 0 is key index key0. lim0 / lim1: the largest
 * key index rows g / g + 8 may see (-1: none). */
template <int NT>
AT_DEV void at_tile(at_state &st, const bf16 *ks, const bf16 *vs, int key0,
                                        int kofs, int lim0, int lim1, float scale_log2)
{
    const int lane = AT_TID & 31, mi = lane >> 3, r = lane & 7, tq = lane & 3;
    float s[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;

    /* S = Q K^T */
#pragma unroll
    for (int c = 0; c < 8; c++) {
#pragma unroll
        for (int jp = 0; jp < NT / 2; jp++) {
            uint32_t b[4];
            const bf16 *p =
                ks + (kofs + (jp * 2 + (mi >> 1)) * 8 + r) * AT_LD + c * 16 + (mi & 1) * 8;
            at_ldsm4(p, b);
            at_mma(s[2 * jp], st.qf[c], b[0], b[1]);
            at_mma(s[2 * jp + 1], st.qf[c], b[2], b[3]);
        }
    }

    /* scale, mask, row max */
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < NT; j++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int key = key0 + kofs + j * 8 + tq * 2 + e;
            s[j][e] = key <= lim0 ? s[j][e] * scale_log2 : -INFINITY;
            s[j][2 + e] = key <= lim1 ? s[j][2 + e] * scale_log2 : -INFINITY;
            mx0 = fmaxf(mx0, s[j][e]);
            mx1 = fmaxf(mx1, s[j][2 + e]);
        }
    }
    mx0 = fmaxf(mx0, AT_SHFL_XOR(mx0, 1));
    mx0 = fmaxf(mx0, AT_SHFL_XOR(mx0, 2));
    mx1 = fmaxf(mx1, AT_SHFL_XOR(mx1, 1));
    mx1 = fmaxf(mx1, AT_SHFL_XOR(mx1, 2));

    /* online softmax update; a row that has seen nothing keeps m = -inf and
     * uses 0 as its reference so that no inf - inf appears */
    const float mn0 = fmaxf(st.m[0], mx0), mn1 = fmaxf(st.m[1], mx1);
    const float ref0 = mn0 == -INFINITY ? 0.0f : mn0, ref1 = mn1 == -INFINITY ? 0.0f : mn1;
    const float al0 = exp2f(st.m[0] - ref0), al1 = exp2f(st.m[1] - ref1);
    st.m[0] = mn0;
    st.m[1] = mn1;
    float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
    for (int j = 0; j < NT; j++) {
        s[j][0] = exp2f(s[j][0] - ref0);
        s[j][1] = exp2f(s[j][1] - ref0);
        s[j][2] = exp2f(s[j][2] - ref1);
        s[j][3] = exp2f(s[j][3] - ref1);
        rs0 += s[j][0] + s[j][1];
        rs1 += s[j][2] + s[j][3];
    }
    st.l[0] = st.l[0] * al0 + rs0;
    st.l[1] = st.l[1] * al1 + rs1;
#pragma unroll
    for (int d = 0; d < 16; d++) {
        st.o[d][0] *= al0;
        st.o[d][1] *= al0;
        st.o[d][2] *= al1;
        st.o[d][3] *= al1;
    }

    /* O += P V, 16 keys per k-step */
#pragma unroll
    for (int kc = 0; kc < NT / 2; kc++) {
        uint32_t pa[4];
        pa[0] = at_pack(s[2 * kc][0], s[2 * kc][1]);
        pa[1] = at_pack(s[2 * kc][2], s[2 * kc][3]);
        pa[2] = at_pack(s[2 * kc + 1][0], s[2 * kc + 1][1]);
        pa[3] = at_pack(s[2 * kc + 1][2], s[2 * kc + 1][3]);
#pragma unroll
        for (int dp = 0; dp < 8; dp++) {
            uint32_t b[4];
            const bf16 *p = vs + (kofs + kc * 16 + (mi & 1) * 8 + r) * AT_LD + dp * 16 +
                            (mi >> 1) * 8;
            at_ldsm4_t(p, b);
            at_mma(st.o[2 * dp], pa, b[0], b[1]);
            at_mma(st.o[2 * dp + 1], pa, b[2], b[3]);
        }
    }
}

/* Sums the partial row sums over the quad (call once, at the end). */
AT_DEV void at_finish_l(at_state &st)
{
#pragma unroll
    for (int i = 0; i < 2; i++) {
        st.l[i] += AT_SHFL_XOR(st.l[i], 1);
        st.l[i] += AT_SHFL_XOR(st.l[i], 2);
    }
}

/* Merges the states of the 4 warps (which hold the same 16 rows, different
 * keys) into warp-order-independent final values, in place in every warp:
 * afterwards each warp holds the merged O for n-tiles 4w .. 4w + 3 and the
 * merged m / l. Needs 4 * (64 * 32 + 2 * 16) floats of shared memory at
 * `sh`, which may overlap the K/V tiles (all loads must be done). */
AT_DEV void at_merge_warps(at_state &st, float *sh)
{
    const int lane = AT_TID & 31, w = AT_TID >> 5, g = lane >> 2, tq = lane & 3;
    float *so = sh;                       /* [4][64][32] */
    float *sm = sh + 4 * 64 * 32;         /* [4][16] max */
    float *sl = sm + 4 * 16;              /* [4][16] sums */
    at_finish_l(st);
    AT_SYNC(); /* tiles no longer read */
#pragma unroll
    for (int d = 0; d < 16; d++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            so[(w * 64 + d * 4 + e) * 32 + lane] = st.o[d][e];
    if (tq == 0) {
        sm[w * 16 + g] = st.m[0];
        sm[w * 16 + g + 8] = st.m[1];
        sl[w * 16 + g] = st.l[0];
        sl[w * 16 + g + 8] = st.l[1];
    }
    AT_SYNC();
    float M[2], f[4][2], L[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int row = g + 8 * i;
        M[i] = fmaxf(fmaxf(sm[row], sm[16 + row]), fmaxf(sm[32 + row], sm[48 + row]));
        const float ref = M[i] == -INFINITY ? 0.0f : M[i];
        L[i] = 0.0f;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            f[u][i] = exp2f(sm[u * 16 + row] - ref);
            L[i] += sl[u * 16 + row] * f[u][i];
        }
    }
#pragma unroll
    for (int d = 0; d < 16; d++) {
        if ((d >> 2) != w) /* compile-time register index, runtime predicate */
            continue;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float acc = 0.0f;
#pragma unroll
            for (int u = 0; u < 4; u++)
                acc += so[(u * 64 + d * 4 + e) * 32 + lane] * f[u][e >> 1];
            st.o[d][e] = acc;
        }
    }
    st.m[0] = M[0];
    st.m[1] = M[1];
    st.l[0] = L[0];
    st.l[1] = L[1];
}

#endif

/* embed.cu - row gathers (token embedding, gather_rows), the bicubic
 * vision position-embedding add, and random weights made on the device.
 *
 * Gathers: raw row copies, grid (column words, min(rows, 65535)); a bad
 * index writes a zero row and sets the context's error word (GS_ERANGE at
 * the next sync).
 * posembed_add: one thread per (token, channel); PyTorch grid_sample
 * bicubic (align_corners=False, border: every tap index clamped, A = -0.75),
 * coordinates and weights in F32 with explicitly rounded operations (no FMA
 * contraction), x then y, result rounded to BF16 and added with one more
 * rounding (glm4v-spec 3.4). The 24x24 x 1536 table stays in L2.
 * Random weights: gs_rand_uniform (backend_impl.h) evaluated on the device,
 * so CPU and GPU build the same dummy model. */
#include <string.h>

#include "kernels/cuda/common.cuh"

/* ---- gathers ------------------------------------------------------------------
 * Raw row copies (out and source share the dtype: gather_rows takes any
 * of F32/BF16/F16/I32, the embedding table is BF16 like the activations):
 * 16-byte words when rows and strides allow, else 2- or 4-byte elements. */

typedef struct {
    char *out;
    const char *src;
    const int32_t *idx;
    int64_t rows, row_bytes, ldo_bytes, lds_bytes, src_rows;
    unsigned *err;
    unsigned err_bit;
} gather_args;

template <typename T> __global__ void gs_gather_kernel(gather_args a)
{
    const int64_t n = a.row_bytes / (int64_t)sizeof(T);
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n)
        return;
    for (int64_t r = blockIdx.y; r < a.rows; r += gridDim.y) {
        const int32_t s = a.idx[r];
        const bool ok = s >= 0 && (int64_t)s < a.src_rows;
        if (!ok && j == 0)
            gs_dev_error(a.err, a.err_bit);
        T v;
        if (ok)
            v = ((const T *)(a.src + (int64_t)s * a.lds_bytes))[j];
        else
            memset(&v, 0, sizeof v);
        ((T *)(a.out + r * a.ldo_bytes))[j] = v;
    }
}

static int gather(gs_cuda *c, const gather_args &a, const char *op)
{
    if (a.rows == 0 || a.row_bytes == 0)
        return 0;
    GS_CU_CHECK(a.idx, op, "NULL index array");
    const int w16 = a.row_bytes % 16 == 0 && a.ldo_bytes % 16 == 0 && a.lds_bytes % 16 == 0 &&
                    gs_cu_aligned(a.out, 16) && gs_cu_aligned(a.src, 16);
    const int w4 = a.row_bytes % 4 == 0 && a.ldo_bytes % 4 == 0 && a.lds_bytes % 4 == 0 &&
                   gs_cu_aligned(a.out, 4) && gs_cu_aligned(a.src, 4);
    const int64_t es = w16 ? 16 : (w4 ? 4 : 2);
    dim3 grid(gs_cu_blocks(a.row_bytes / es, 256, 0x7fffffff),
              (unsigned)(a.rows < 65535 ? a.rows : 65535));
    if (w16)
        gs_gather_kernel<uint4><<<grid, 256, 0, c->stream>>>(a);
    else if (w4)
        gs_gather_kernel<uint32_t><<<grid, 256, 0, c->stream>>>(a);
    else
        gs_gather_kernel<uint16_t><<<grid, 256, 0, c->stream>>>(a);
    GS_CU_LAUNCHED(op);
    return 0;
}

int gs_cuda_embed(gs_cuda *c, gs_mat out, gs_cuda_wview table, const int32_t *ids)
{
    const char *op = "embed";
    GS_CU_CHECK(gs_cu_mat_ok(out) && table.data, op, "bad arguments");
    GS_CU_CHECK(out.dt == table.dt && (out.dt == GS_DT_BF16 || out.dt == GS_DT_F16), op,
                "out must have the table's 16-bit dtype");
    GS_CU_CHECK(out.cols == table.cols, op, "out cols %lld != table cols %lld", (long long)out.cols,
                (long long)table.cols);
    gather_args a = {
        (char *)out.data, (const char *)table.data, ids,        out.rows,   out.cols * 2,
        out.stride * 2,   table.cols * 2,           table.rows, c->err_dev, GS_CUDA_ERR_EMBED_ID};
    return gather(c, a, op);
}

int gs_cuda_gather_rows(gs_cuda *c, gs_mat out, gs_mat x, const int32_t *idx)
{
    const char *op = "gather_rows";
    GS_CU_CHECK(out.rows >= 0 && x.rows >= 0 && out.cols >= 0 && out.stride >= out.cols &&
                    x.stride >= x.cols && (out.data || out.rows == 0) && x.data,
                op, "bad matrix view");
    GS_CU_CHECK(out.dt == x.dt && out.cols == x.cols, op, "out / x dtype or cols differ");
    GS_CU_CHECK(out.data != x.data || out.rows == 0, op, "out must not alias x");
    const int64_t es = (int64_t)gs_cu_dt_size(x.dt);
    gather_args a = {(char *)out.data, (const char *)x.data,  idx,           out.rows,
                     out.cols * es,    out.stride * es,       x.stride * es, x.rows,
                     c->err_dev,       GS_CUDA_ERR_GATHER_IDX};
    return gather(c, a, op);
}

/* ---- bicubic position embedding ---------------------------------------------- */

#define CUBIC_A (-0.75f)

/* PyTorch cubic_convolution1: ((A + 2) x - (A + 3)) x x + 1, |x| <= 1 */
__device__ __forceinline__ float cc1(float x)
{
    float t = __fsub_rn(__fmul_rn(CUBIC_A + 2.0f, x), CUBIC_A + 3.0f);
    return __fadd_rn(__fmul_rn(__fmul_rn(t, x), x), 1.0f);
}

/* cubic_convolution2: ((A x - 5A) x + 8A) x - 4A, 1 < |x| < 2 */
__device__ __forceinline__ float cc2(float x)
{
    float t = __fsub_rn(__fmul_rn(CUBIC_A, x), 5.0f * CUBIC_A);
    t = __fadd_rn(__fmul_rn(t, x), 8.0f * CUBIC_A);
    return __fsub_rn(__fmul_rn(t, x), 4.0f * CUBIC_A);
}

__device__ __forceinline__ void cubic_coeffs(float t, float w[4])
{
    w[0] = cc2(__fadd_rn(t, 1.0f));
    w[1] = cc1(t);
    const float u = __fsub_rn(1.0f, t);
    w[2] = cc1(u);
    w[3] = cc2(__fadd_rn(u, 1.0f));
}

/* Source coordinate of output index i of n for a table side s:
 * n' = ((i + 0.5) / n) * 2 - 1, then ((n' + 1) * s - 1) / 2. */
__device__ __forceinline__ float src_coord(int i, int n, int s)
{
    float g = __fsub_rn(__fmul_rn(__fdiv_rn(__fadd_rn((float)i, 0.5f), (float)n), 2.0f), 1.0f);
    return __fdiv_rn(__fsub_rn(__fmul_rn(__fadd_rn(g, 1.0f), (float)s), 1.0f), 2.0f);
}

typedef struct {
    void *x;
    const void *table; /* BF16, or F16 on an F16 context */
    const int32_t *hw;
    int64_t m, cols, ldx;
    int side, xdt, tdt;
    unsigned *err;
} posembed_args;

__global__ void gs_posembed_kernel(posembed_args a)
{
    const int64_t ch = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= a.cols)
        return;
    for (int64_t r = blockIdx.y; r < a.m; r += gridDim.y) {
        const int h = a.hw[r], w = a.hw[a.m + r], H = a.hw[2 * a.m + r], W = a.hw[3 * a.m + r];
        if (H <= 0 || W <= 0 || h < 0 || w < 0 || h >= H || w >= W) {
            if (ch == 0)
                gs_dev_error(a.err, GS_CUDA_ERR_GRID);
            continue;
        }
        const float ix = src_coord(w, W, a.side), iy = src_coord(h, H, a.side);
        const float fx = floorf(ix), fy = floorf(iy);
        float wx[4], wy[4];
        cubic_coeffs(__fsub_rn(ix, fx), wx);
        cubic_coeffs(__fsub_rn(iy, fy), wy);
        const int x0 = (int)fx - 1, y0 = (int)fy - 1;
        float acc = 0.0f;
        for (int i = 0; i < 4; i++) {
            const int yy = min(max(y0 + i, 0), a.side - 1);
            float rowv = 0.0f;
            for (int k = 0; k < 4; k++) {
                const int xx = min(max(x0 + k, 0), a.side - 1);
                const float v = gs_ld(a.table, a.tdt, ((int64_t)yy * a.side + xx) * a.cols + ch);
                rowv = __fadd_rn(rowv, __fmul_rn(v, wx[k]));
            }
            acc = __fadd_rn(acc, __fmul_rn(rowv, wy[i]));
        }
        const int64_t o = r * a.ldx + ch;
        float xv = gs_ld(a.x, a.xdt, o);
        if (a.xdt == GS_DT_BF16)
            xv = xv + gs_bf(acc);
        else
            xv = xv + acc;
        gs_st(a.x, a.xdt, o, xv);
    }
}

int gs_cuda_posembed_add(gs_cuda *c, gs_mat x, gs_cuda_wview table, int32_t side, const int32_t *hw)
{
    const char *op = "posembed_add";
    GS_CU_CHECK(gs_cu_mat_ok(x) && table.data, op, "bad arguments");
    GS_CU_CHECK(side > 0 && table.rows == (int64_t)side * side && table.cols == x.cols, op,
                "table [%lld, %lld] vs side %d, hidden %lld", (long long)table.rows,
                (long long)table.cols, side, (long long)x.cols);
    if (x.rows == 0 || x.cols == 0)
        return 0;
    GS_CU_CHECK(hw, op, "NULL grid array");
    posembed_args a = {x.data,   table.data, hw,   x.rows,        x.cols,
                       x.stride, side,       x.dt, (int)table.dt, c->err_dev};
    dim3 grid(gs_cu_blocks(x.cols, 128, 0x7fffffff), (unsigned)(x.rows < 65535 ? x.rows : 65535));
    gs_posembed_kernel<<<grid, 128, 0, c->stream>>>(a);
    GS_CU_LAUNCHED(op);
    return 0;
}

/* ---- random weights --------------------------------------------------------------
 * gs_rand_uniform_dev (common.cuh) is the device copy of gs_rand_uniform. */

__global__ void gs_fill_random_kernel(__nv_bfloat16 *dst, int64_t n, uint64_t seed, float scale)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(gs_rand_uniform_dev(seed, (uint64_t)i, scale));
}

int gs_cuda_fill_random_bf16(gs_cuda *c, void *dst, int64_t n, uint64_t seed, float scale)
{
    if (n <= 0)
        return 0;
    const unsigned grid = gs_cu_blocks(n, 256, (unsigned)c->n_sm * 16);
    gs_fill_random_kernel<<<grid, 256, 0, c->stream>>>((__nv_bfloat16 *)dst, n, seed, scale);
    GS_CU_LAUNCHED("fill_random");
    return 0;
}

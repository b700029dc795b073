/* quant.cu - quantized weights (kernels.h "Quantized weights": Q8 int8 with
 * one F32 scale per row, Q4 packed nibbles with one F32 scale per 128
 * columns) on the GPU: random weights made on the device, and the GEMM.
 *
 *  - Random weights: the F32 values of gs_rand_uniform, quantized exactly
 *    as gs_quantize (kernels/quant.c) does: absmax (exact in any order),
 *    s = amax / 127 or amax / 7 and q = rint(v / s) with IEEE division
 *    (__fdiv_rn: never a multiply by 1/s, which can differ by one ulp and
 *    move q across a rounding boundary), clamped to the format's range.
 *    So the CPU and GPU hold the same bits.
 *  - GEMV (m <= 16, decode): one warp per 2 weight rows, 16-byte streaming
 *    (evict-first) loads of q (16 int8 or 32 int4 columns per load), the
 *    integers converted to F32 in registers and multiplied by the m
 *    activation rows (read through the read-only cache) in F32: q * x is
 *    exact in F32 (7 or 4 bits times an 8- or 11-bit mantissa) and the sums
 *    stay F32, so nothing can overflow F16 (CUDA-NOTES sec. 4, rule 2). Q4
 *    applies each group's scale to the group's partial sum, Q8 the row's
 *    scale once at the end. Deterministic (fixed shuffle order).
 *  - Otherwise (prefill, or views the GEMV cannot take): the weight is
 *    dequantized in chunks of rows into a 16-bit tile buffer (the act
 *    dtype: BF16, or F16 on sm_75 contexts) and each chunk runs through the
 *    cuBLASLt GEMM of gemm.cu with FP32 accumulation, writing its columns
 *    of out (bias and GS_MM_ACCUM per chunk). The tile buffer grows outside
 *    of graph capture only (gs_cuda_qtile): run a shape once before
 *    capturing it.
 * Owns nothing: the tile buffer belongs to the context (backend.cu). */
#include "kernels/cuda/common.cuh"

/* ---- random quantized weights --------------------------------------------------- */

/* Q8: one block per row (grid-stride over rows): the row's absmax, then q. */
__global__ void __launch_bounds__(256)
    gs_rand_q8_kernel(int8_t *q, float *s, int64_t rows, int64_t cols, uint64_t seed, float scale)
{
    __shared__ float sh[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const uint64_t base = (uint64_t)(r * cols);
        float amax = 0.0f;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
            amax = fmaxf(amax, fabsf(gs_rand_uniform_dev(seed, base + (uint64_t)c, scale)));
        amax = gs_block_max(amax, sh);
        const float sc = __fdiv_rn(amax, 127.0f);
        if (threadIdx.x == 0)
            s[r] = sc;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            const float v = gs_rand_uniform_dev(seed, base + (uint64_t)c, scale);
            float t = sc == 0.0f ? 0.0f : rintf(__fdiv_rn(v, sc));
            t = fminf(fmaxf(t, -127.0f), 127.0f);
            q[r * cols + c] = (int8_t)t;
        }
        __syncthreads(); /* sh is reused by the next row's reduction */
    }
}

/* Q4: one warp per (row, group of 128 columns); lane l packs bytes l and
 * 32 + l of the group (columns 2j and 2j + 1 of byte j). */
__global__ void __launch_bounds__(256)
    gs_rand_q4_kernel(uint8_t *q, float *s, int64_t rows, int64_t cols, uint64_t seed, float scale)
{
    const int lane = threadIdx.x & 31;
    const int64_t ng = (cols + GS_Q4_GROUP - 1) / GS_Q4_GROUP, qrow = (cols + 1) / 2;
    const int64_t n_items = rows * ng;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t it = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); it < n_items;
         it += warps) {
        const int64_t r = it / ng, g = it - r * ng, c0 = g * GS_Q4_GROUP;
        const uint64_t base = (uint64_t)(r * cols);
        float v[4];
        float amax = 0.0f;
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int b = 0; b < 2; b++) {
                const int64_t c = c0 + 64 * h + 2 * lane + b;
                v[2 * h + b] =
                    c < cols ? gs_rand_uniform_dev(seed, base + (uint64_t)c, scale) : 0.0f;
                amax = fmaxf(amax, fabsf(v[2 * h + b]));
            }
        amax = gs_warp_max(amax);
        const float sc = amax == 0.0f ? 0.0f : __fdiv_rn(amax, 7.0f);
        if (lane == 0)
            s[r * ng + g] = sc;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t c = c0 + 64 * h + 2 * lane; /* the byte's low column */
            if (c >= cols)
                continue;
            unsigned nib[2];
#pragma unroll
            for (int b = 0; b < 2; b++) {
                float t = sc == 0.0f ? 0.0f : rintf(__fdiv_rn(v[2 * h + b], sc));
                t = fminf(fmaxf(t, -8.0f), 7.0f);
                /* past the end of an odd-length row: 8 (q = 0), as gs_quantize */
                nib[b] = c + b < cols ? (unsigned)((int)t + 8) : 8u;
            }
            q[r * qrow + c / 2] = (uint8_t)(nib[0] | (nib[1] << 4));
        }
    }
}

int gs_cuda_fill_random_quant(gs_cuda *c, gs_dtype qdt, void *q, float *s, int64_t rows,
                              int64_t cols, uint64_t seed, float scale)
{
    if (rows <= 0 || cols <= 0)
        return 0;
    if (qdt == GS_DT_Q8) {
        const unsigned grid = gs_cu_blocks(rows, 1, (unsigned)c->n_sm * 32);
        gs_rand_q8_kernel<<<grid, 256, 0, c->stream>>>((int8_t *)q, s, rows, cols, seed, scale);
    } else {
        const int64_t items = rows * ((cols + GS_Q4_GROUP - 1) / GS_Q4_GROUP);
        const unsigned grid = gs_cu_blocks(items, 8, (unsigned)c->n_sm * 32);
        gs_rand_q4_kernel<<<grid, 256, 0, c->stream>>>((uint8_t *)q, s, rows, cols, seed, scale);
    }
    GS_CU_LAUNCHED("fill_random_quant");
    return 0;
}

/* ---- 16-bit element helpers -------------------------------------------------------- */

template <typename T> __device__ __forceinline__ T gs_from_f32(float v);
template <> __device__ __forceinline__ __nv_bfloat16 gs_from_f32<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half gs_from_f32<__half>(float v)
{
    return __float2half_rn(v);
}

template <typename T> __device__ __forceinline__ void gs_unpack8_t(const uint4 &u, float f[8]);
template <> __device__ __forceinline__ void gs_unpack8_t<__nv_bfloat16>(const uint4 &u, float f[8])
{
    gs_unpack8(u, f);
}
template <> __device__ __forceinline__ void gs_unpack8_t<__half>(const uint4 &u, float f[8])
{
    gs_unpack8_f16(u, f);
}

/* ---- dequantization into tiles ------------------------------------------------------ */

/* dst[r, c] = w[r0 + r, c] for r < nr (dst row stride = cols), rounded to T.
 * Grid: x over columns, y over rows (grid-stride). */
template <typename T, int QDT>
__global__ void __launch_bounds__(256) gs_dequant_kernel(T *dst, const uint8_t *q, const float *s,
                                                         int64_t r0, int64_t nr, int64_t cols)
{
    const int64_t ng = (cols + GS_Q4_GROUP - 1) / GS_Q4_GROUP;
    const int64_t qrow = QDT == GS_DT_Q8 ? cols : (cols + 1) / 2;
    for (int64_t r = blockIdx.y; r < nr; r += gridDim.y) {
        const int64_t R = r0 + r;
        const uint8_t *qr = q + R * qrow;
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols;
             c += (int64_t)gridDim.x * blockDim.x) {
            float w;
            if (QDT == GS_DT_Q8) {
                w = (float)(int8_t)qr[c] * s[R];
            } else {
                const unsigned b = qr[c >> 1];
                const int v = (int)((c & 1) ? (b >> 4) : (b & 15u)) - 8;
                w = (float)v * s[R * ng + c / GS_Q4_GROUP];
            }
            dst[r * cols + c] = gs_from_f32<T>(w);
        }
    }
}

template <typename T>
static int dequant_launch(gs_cuda *c, void *dst, gs_cuda_wview w, int64_t r0, int64_t nr)
{
    const dim3 grid(gs_cu_blocks(w.cols, 256, 64), (unsigned)(nr < 65535 ? nr : 65535));
    if (w.dt == GS_DT_Q8)
        gs_dequant_kernel<T, GS_DT_Q8>
            <<<grid, 256, 0, c->stream>>>((T *)dst, (const uint8_t *)w.data, w.s, r0, nr, w.cols);
    else
        gs_dequant_kernel<T, GS_DT_Q4>
            <<<grid, 256, 0, c->stream>>>((T *)dst, (const uint8_t *)w.data, w.s, r0, nr, w.cols);
    GS_CU_LAUNCHED("dequant");
    return 0;
}

/* Rows of dequantized weight per cuBLASLt call: chunks of ~64 MiB (GLM's
 * gate_up, 27392 x 4096, in 4), a multiple of 128 rows. */
#define QTILE_BYTES ((size_t)64 << 20)

static int matmul_dequant(gs_cuda *c, gs_mat out, gs_mat x, gs_cuda_wview w, const gs_vec *bias,
                          int accum)
{
    const gs_dtype act = gs_cuda_act_dtype(c);
    int64_t chunk = (int64_t)(QTILE_BYTES / ((size_t)w.cols * 2));
    chunk = chunk >= 256 ? chunk / 128 * 128 : (chunk < 1 ? 1 : chunk);
    if (chunk > w.rows)
        chunk = w.rows;
    void *tile = NULL;
    int rc = gs_cuda_qtile(c, (size_t)chunk * (size_t)w.cols * 2, &tile);
    if (rc)
        return rc;
    for (int64_t r0 = 0; r0 < w.rows; r0 += chunk) {
        const int64_t nr = w.rows - r0 < chunk ? w.rows - r0 : chunk;
        /* stream order: the previous chunk's GEMM has read the tile before
         * this dequantization overwrites it */
        rc = act == GS_DT_F16 ? dequant_launch<__half>(c, tile, w, r0, nr)
                              : dequant_launch<__nv_bfloat16>(c, tile, w, r0, nr);
        if (rc)
            return rc;
        gs_cuda_wview tw = {tile, nr, w.cols, act, NULL};
        rc = gs_cuda_gemm_lt(c, gs_mat_cols(out, r0, nr), x, tw, bias, r0, accum);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- GEMV ------------------------------------------------------------------------------ */

#define QG_WARPS 8
#define QG_ROWS 2   /* weight rows per warp */
#define QG_UNROLL 2 /* 16-byte q loads in flight per lane and row */

typedef struct {
    const uint4 *q; /* [n, kw] 16-byte words */
    const float *s; /* Q8: [n]; Q4: [n, ng] */
    const void *x;  /* [m, k] act dtype, ldx elements */
    void *out;
    const float *bias; /* may be NULL */
    int64_t n, kw, ng, ldx, ldo;
    int m, out_dt, accum;
} qgemv_args;

/* The 16 (Q8) or 32 (Q4) weight integers of one 16-byte word as floats,
 * in column order. */
template <int QDT> struct qword {
    static constexpr int N = QDT == GS_DT_Q8 ? 16 : 32;
};

template <int QDT> __device__ __forceinline__ void decode_word(const uint4 &u, float *f)
{
    const unsigned wd[4] = {u.x, u.y, u.z, u.w}; /* little endian: byte 0 first */
#pragma unroll
    for (int t = 0; t < 4; t++) {
        if (QDT == GS_DT_Q8) {
#pragma unroll
            for (int e = 0; e < 4; e++)
                f[4 * t + e] = (float)(int)(int8_t)(wd[t] >> (8 * e));
        } else {
            /* nibble e of byte pair: column 8t + e, low nibble first */
#pragma unroll
            for (int e = 0; e < 8; e++)
                f[8 * t + e] = (float)((int)((wd[t] >> (4 * e)) & 15u) - 8);
        }
    }
}

template <int QDT, int M, typename T>
__global__ void __launch_bounds__(QG_WARPS * 32) gs_qgemv_kernel(qgemv_args a)
{
    constexpr int NW = qword<QDT>::N; /* columns per q word */
    constexpr int XW = NW / 8;        /* activation words (8 elements) per q word */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t row0 = ((int64_t)blockIdx.x * QG_WARPS + warp) * QG_ROWS;
    if (row0 >= a.n)
        return;
    const uint4 *wr[QG_ROWS];
    bool ok[QG_ROWS];
#pragma unroll
    for (int r = 0; r < QG_ROWS; r++) {
        ok[r] = row0 + r < a.n;
        wr[r] = a.q + (ok[r] ? row0 + r : row0) * a.kw;
    }
    float acc[QG_ROWS][M];
#pragma unroll
    for (int r = 0; r < QG_ROWS; r++)
#pragma unroll
        for (int i = 0; i < M; i++)
            acc[r][i] = 0.0f;

    for (int64_t c0 = lane; c0 < a.kw; c0 += 32 * QG_UNROLL) {
        uint4 wv[QG_UNROLL][QG_ROWS];
#pragma unroll
        for (int u = 0; u < QG_UNROLL; u++) {
            const int64_t ci = c0 + (int64_t)u * 32;
#pragma unroll
            for (int r = 0; r < QG_ROWS; r++)
                wv[u][r] = (ci < a.kw && ok[r]) ? __ldcs(wr[r] + ci) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < QG_UNROLL; u++) {
            const int64_t ci = c0 + (int64_t)u * 32;
            if (ci >= a.kw)
                break;
            float wf[QG_ROWS][NW];
            float sg[QG_ROWS];
#pragma unroll
            for (int r = 0; r < QG_ROWS; r++) {
                decode_word<QDT>(wv[u][r], wf[r]);
                /* Q4: the word's 32 columns lie in one group (128 = 4 words) */
                sg[r] =
                    QDT == GS_DT_Q4 && ok[r] ? __ldg(a.s + (row0 + r) * a.ng + (ci >> 2)) : 1.0f;
            }
#pragma unroll
            for (int i = 0; i < M; i++) {
                if (i >= a.m)
                    break;
                const uint4 *xr = (const uint4 *)((const T *)a.x + (int64_t)i * a.ldx) + ci * XW;
                float p[QG_ROWS];
#pragma unroll
                for (int r = 0; r < QG_ROWS; r++)
                    p[r] = 0.0f;
#pragma unroll
                for (int t = 0; t < XW; t++) {
                    float xf[8];
                    gs_unpack8_t<T>(__ldg(xr + t), xf);
#pragma unroll
                    for (int r = 0; r < QG_ROWS; r++)
#pragma unroll
                        for (int e = 0; e < 8; e++)
                            p[r] = fmaf(wf[r][8 * t + e], xf[e], p[r]);
                }
#pragma unroll
                for (int r = 0; r < QG_ROWS; r++)
                    acc[r][i] = QDT == GS_DT_Q4 ? fmaf(p[r], sg[r], acc[r][i]) : acc[r][i] + p[r];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < QG_ROWS; r++)
#pragma unroll
        for (int i = 0; i < M; i++)
            acc[r][i] = gs_warp_sum(acc[r][i]);
            /* lane (r * M + i) writes element (i, row0 + r) */
#pragma unroll
    for (int r = 0; r < QG_ROWS; r++)
#pragma unroll
        for (int i = 0; i < M; i++) {
            if (lane != r * M + i || i >= a.m || !ok[r])
                continue;
            const int64_t row = row0 + r;
            float v = acc[r][i];
            if (QDT == GS_DT_Q8)
                v *= a.s[row];
            if (a.bias)
                v += a.bias[row];
            const int64_t o = (int64_t)i * a.ldo + row;
            if (a.accum)
                v += gs_ld(a.out, a.out_dt, o);
            gs_st(a.out, a.out_dt, o, v);
        }
}

template <int QDT, typename T> static void qgemv_launch(gs_cuda *c, const qgemv_args &a)
{
    const int rows_per_block = QG_WARPS * QG_ROWS;
    const unsigned grid = (unsigned)((a.n + rows_per_block - 1) / rows_per_block);
    const dim3 block(QG_WARPS * 32);
    /* Three sizes only: 12 instantiations in all (x 6 archs) keep the build
     * time reasonable; rows past a.m cost a predicted branch, not loads. */
    if (a.m <= 1)
        gs_qgemv_kernel<QDT, 1, T><<<grid, block, 0, c->stream>>>(a);
    else if (a.m <= 4)
        gs_qgemv_kernel<QDT, 4, T><<<grid, block, 0, c->stream>>>(a);
    else
        gs_qgemv_kernel<QDT, 16, T><<<grid, block, 0, c->stream>>>(a);
}

/* The GEMV takes m <= 16 activation rows of 16-byte vectors and weight rows
 * that are whole 16-byte words (Q8: cols % 16 == 0; Q4: cols % 32 == 0). */
static int qgemv_ok(gs_cuda *c, gs_mat x, gs_cuda_wview w)
{
    const int64_t per_word = w.dt == GS_DT_Q8 ? 16 : 32;
    return c->gemv_mode && x.rows <= 16 && gs_cu_vec8_16_ok(x) && w.cols % per_word == 0 &&
           gs_cu_aligned(w.data, 16);
}

int gs_cuda_matmul_quant(gs_cuda *c, gs_mat out, gs_mat x, gs_cuda_wview w, const gs_vec *bias,
                         int accum)
{
    if (!qgemv_ok(c, x, w))
        return matmul_dequant(c, out, x, w, bias, accum);
    qgemv_args a;
    a.q = (const uint4 *)w.data;
    a.s = w.s;
    a.x = x.data;
    a.out = out.data;
    a.bias = bias && bias->data ? bias->data : NULL;
    a.n = out.cols;
    a.kw = w.cols / (w.dt == GS_DT_Q8 ? 16 : 32);
    a.ng = (w.cols + GS_Q4_GROUP - 1) / GS_Q4_GROUP;
    a.ldx = x.stride;
    a.ldo = out.stride;
    a.m = (int)x.rows;
    a.out_dt = out.dt;
    a.accum = accum;
    const int f16 = x.dt == GS_DT_F16;
    if (w.dt == GS_DT_Q8) {
        if (f16)
            qgemv_launch<GS_DT_Q8, __half>(c, a);
        else
            qgemv_launch<GS_DT_Q8, __nv_bfloat16>(c, a);
    } else {
        if (f16)
            qgemv_launch<GS_DT_Q4, __half>(c, a);
        else
            qgemv_launch<GS_DT_Q4, __nv_bfloat16>(c, a);
    }
    GS_CU_LAUNCHED("qgemv");
    return 0;
}

/* act.cu - elementwise ops (add, SiLU-mul, exact GELU, dtype copy) and the
 * row softmax.
 *
 * Elementwise launch: grid (column blocks, min(rows, 65535)), rows strided
 * by gridDim.y; 256 threads, each 8 elements with 16-byte loads when every
 * view is BF16 and aligned (vec8), else one element of any float dtype.
 * Numerics as the BF16 reference computes them: silu(gate) rounds to the
 * input dtype before the product with up (F.silu on a BF16 tensor, then a
 * BF16 multiply); GELU is x * 0.5 * (1 + erf(x / sqrt(2))) in F32 with one
 * rounding; add rounds once.
 * Softmax: one block per row, FP32 max / sum (fixed order), three passes. */
#include "kernels/cuda/common.cuh"

enum { EW_ADD = 0, EW_SILU_MUL, EW_GELU, EW_COPY };

typedef struct {
    void *out;
    const void *a, *b;
    int64_t rows, cols, ldo, lda, ldb;
    int odt, adt, bdt;
    int64_t half; /* silu_mul: offset of `up` within a row of a */
} ew_args;

__device__ __forceinline__ float silu(float x)
{
    return x / (1.0f + expf(-x));
}

__device__ __forceinline__ float gelu_erf(float x)
{
    return x * 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
}

__device__ __forceinline__ float rnd_dt(float v, int dt)
{
    if (dt == GS_DT_BF16)
        return gs_bf(v);
    if (dt == GS_DT_F16)
        return __half2float(__float2half_rn(v));
    return v;
}

template <int OP>
__device__ __forceinline__ float ew_apply(float x, float y, int adt)
{
    if (OP == EW_ADD)
        return x + y;
    if (OP == EW_SILU_MUL)
        return rnd_dt(silu(x), adt) * y;
    if (OP == EW_GELU)
        return gelu_erf(x);
    return x;
}

template <int OP, int V>
__global__ void gs_ew_kernel(ew_args a)
{
    const int64_t j0 = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (j0 >= a.cols)
        return;
    for (int64_t r = blockIdx.y; r < a.rows; r += gridDim.y) {
        const int64_t ia = r * a.lda + j0;
        const int64_t ib = OP == EW_SILU_MUL ? ia + a.half : r * a.ldb + j0;
        const int64_t io = r * a.ldo + j0;
        if (V == 8) {
            float x[8], y[8], z[8];
            gs_unpack8(*(const uint4 *)((const __nv_bfloat16 *)a.a + ia), x);
            if (OP == EW_ADD)
                gs_unpack8(*(const uint4 *)((const __nv_bfloat16 *)a.b + ib), y);
            else if (OP == EW_SILU_MUL)
                gs_unpack8(*(const uint4 *)((const __nv_bfloat16 *)a.a + ib), y);
#pragma unroll
            for (int i = 0; i < 8; i++)
                z[i] = ew_apply<OP>(x[i], OP == EW_ADD || OP == EW_SILU_MUL ? y[i] : 0.0f,
                                    GS_DT_BF16);
            *(uint4 *)((__nv_bfloat16 *)a.out + io) = gs_pack8(z);
        } else {
            const float x = gs_ld(a.a, a.adt, ia);
            float y = 0.0f;
            if (OP == EW_ADD)
                y = gs_ld(a.b, a.bdt, ib);
            else if (OP == EW_SILU_MUL)
                y = gs_ld(a.a, a.adt, ib);
            gs_st(a.out, a.odt, io, ew_apply<OP>(x, y, a.adt));
        }
    }
}

template <int OP>
static int ew_launch(gs_cuda *c, const ew_args &a, int v8, const char *op)
{
    if (a.rows == 0 || a.cols == 0)
        return 0;
    const int V = v8 ? 8 : 1;
    const int64_t per_block = 256 * (int64_t)V;
    const int64_t bx = (a.cols + per_block - 1) / per_block;
    GS_CU_CHECK(bx <= 0x7fffffff, op, "row too long");
    dim3 grid((unsigned)bx, (unsigned)(a.rows < 65535 ? a.rows : 65535));
    if (v8)
        gs_ew_kernel<OP, 8><<<grid, 256, 0, c->stream>>>(a);
    else
        gs_ew_kernel<OP, 1><<<grid, 256, 0, c->stream>>>(a);
    GS_CU_LAUNCHED(op);
    return 0;
}

int gs_cuda_add(gs_cuda *c, gs_mat out, gs_mat a, gs_mat b)
{
    const char *op = "add";
    GS_CU_CHECK(gs_cu_mat_ok(out) && gs_cu_mat_ok(a) && gs_cu_mat_ok(b), op, "bad matrix view");
    GS_CU_CHECK(out.rows == a.rows && out.cols == a.cols && b.rows == a.rows && b.cols == a.cols,
                op, "shapes differ");
    ew_args e = {out.data, a.data, b.data, a.rows, a.cols, out.stride, a.stride, b.stride,
                 out.dt, a.dt, b.dt, 0};
    return ew_launch<EW_ADD>(c, e, gs_cu_vec8_ok(out) && gs_cu_vec8_ok(a) && gs_cu_vec8_ok(b),
                             op);
}

int gs_cuda_silu_mul(gs_cuda *c, gs_mat out, gs_mat gu)
{
    const char *op = "silu_mul";
    GS_CU_CHECK(gs_cu_mat_ok(out) && gs_cu_mat_ok(gu), op, "bad matrix view");
    GS_CU_CHECK(gu.rows == out.rows && gu.cols == 2 * out.cols, op,
                "gu [%lld, %lld] must be [m, 2 * %lld]", (long long)gu.rows, (long long)gu.cols,
                (long long)out.cols);
    /* out may not overlap gu unless it is exactly the gate half, row for
     * row (each element is read before it is written by the same thread). */
    ew_args e = {out.data, gu.data, NULL, out.rows, out.cols, out.stride, gu.stride, 0,
                 out.dt, gu.dt, gu.dt, out.cols};
    return ew_launch<EW_SILU_MUL>(c, e, gs_cu_vec8_ok(out) && gs_cu_vec8_ok(gu), op);
}

int gs_cuda_gelu(gs_cuda *c, gs_mat out, gs_mat x)
{
    const char *op = "gelu";
    GS_CU_CHECK(gs_cu_mat_ok(out) && gs_cu_mat_ok(x), op, "bad matrix view");
    GS_CU_CHECK(out.rows == x.rows && out.cols == x.cols, op, "shapes differ");
    ew_args e = {out.data, x.data, NULL, x.rows, x.cols, out.stride, x.stride, 0,
                 out.dt, x.dt, x.dt, 0};
    return ew_launch<EW_GELU>(c, e, gs_cu_vec8_ok(out) && gs_cu_vec8_ok(x), op);
}

int gs_cuda_copy(gs_cuda *c, gs_mat out, gs_mat x)
{
    const char *op = "copy";
    GS_CU_CHECK(gs_cu_mat_ok(out) && gs_cu_mat_ok(x), op, "bad matrix view");
    GS_CU_CHECK(out.rows == x.rows && out.cols == x.cols, op, "shapes differ: out [%lld, %lld], "
                "x [%lld, %lld]", (long long)out.rows, (long long)out.cols, (long long)x.rows,
                (long long)x.cols);
    if (out.rows == 0 || out.cols == 0)
        return 0;
    const size_t es = gs_cu_dt_size(out.dt);
    if (out.dt == x.dt) {
        GS_CU_TRY(cudaMemcpy2DAsync(out.data, (size_t)out.stride * es, x.data,
                                    (size_t)x.stride * es, (size_t)x.cols * es, (size_t)x.rows,
                                    cudaMemcpyDeviceToDevice, c->stream));
        return 0;
    }
    ew_args e = {out.data, x.data, NULL, x.rows, x.cols, out.stride, x.stride, 0,
                 out.dt, x.dt, x.dt, 0};
    return ew_launch<EW_COPY>(c, e, 0, op);
}

/* ---- softmax ------------------------------------------------------------------- */

__global__ void gs_softmax_kernel(void *out, int odt, int64_t ldo, const void *x, int xdt,
                                  int64_t ldx, int64_t rows, int64_t n)
{
    __shared__ float sh[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float mx = -INFINITY;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
            mx = fmaxf(mx, gs_ld(x, xdt, r * ldx + j));
        mx = gs_block_max(mx, sh);
        float s = 0.0f;
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
            s += expf(gs_ld(x, xdt, r * ldx + j) - mx);
        const float inv = 1.0f / gs_block_sum(s, sh);
        /* x is read again before this thread overwrites the same element, so
         * out may alias x */
        for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
            gs_st(out, odt, r * ldo + j, expf(gs_ld(x, xdt, r * ldx + j) - mx) * inv);
        __syncthreads();
    }
}

int gs_cuda_softmax(gs_cuda *c, gs_mat out, gs_mat x)
{
    const char *op = "softmax";
    GS_CU_CHECK(gs_cu_mat_ok(out) && gs_cu_mat_ok(x), op, "bad matrix view");
    GS_CU_CHECK(out.rows == x.rows && out.cols == x.cols, op, "shapes differ");
    if (x.rows == 0 || x.cols == 0)
        return 0;
    const int threads = x.cols > 8192 ? 1024 : (x.cols > 1024 ? 512 : 128);
    const unsigned grid = (unsigned)(x.rows < 65535 * 16 ? x.rows : 65535 * 16);
    gs_softmax_kernel<<<grid, threads, 0, c->stream>>>(out.data, out.dt, out.stride, x.data, x.dt,
                                                        x.stride, x.rows, x.cols);
    GS_CU_LAUNCHED(op);
    return 0;
}

/* gemm_f32x.cu - out (+)= x . w^T (+ bias) with F32 activations x on an F16
 * context (sm_75, or GS_TUNE_CUDA_F16): the down projection's input, the
 * SwiGLU output, which GLM-4 pushes past F16's 65504 (CUDA-NOTES sec. 4;
 * llama.cpp #27016 fixes the same thing the same way).
 *
 * Each row r of x is scaled by an exact power of two 2^-e_r (e_r >= 0, the
 * smallest that brings the row's absmax under 32768) and rounded to F16;
 * the ordinary F16 GEMM (16-bit or quantized weight, FP32 accumulation)
 * writes an F32 product, and a last kernel multiplies row r by 2^e_r (exact)
 * and adds the bias and, with GS_MM_ACCUM, out. Rows within range (e_r = 0)
 * get exactly what an F16 x would give. Scratch: the F16 rows, the scales
 * and the F32 product in the context's scratch buffer (gs_cuda_scratch:
 * sized by an eager pass before any capture). */
#include "kernels/cuda/common.cuh"

/* One block per row: absmax, then the scaled F16 row and its scale. */
__global__ void __launch_bounds__(256)
    gs_rowscale_kernel(const float *x, int64_t ldx, int64_t k, __half *xs, float *scale)
{
    __shared__ float sh[32];
    const int64_t r = blockIdx.x;
    const float *xr = x + r * ldx;
    float amax = 0.0f;
    for (int64_t c = threadIdx.x; c < k; c += blockDim.x)
        amax = fmaxf(amax, fabsf(xr[c]));
    amax = gs_block_max(amax, sh);
    /* 2^-e with amax * 2^-e < 32768: frexpf gives amax = f * 2^p, f in
     * [0.5, 1), so amax < 2^p; e = p - 15 when positive. Non-finite rows
     * keep e = 0 (their inf / NaN shows as it would in F16). */
    int p = 0;
    frexpf(amax, &p);
    const int e = isfinite(amax) && p > 15 ? p - 15 : 0;
    const float down = ldexpf(1.0f, -e);
    if (threadIdx.x == 0)
        scale[r] = ldexpf(1.0f, e);
    for (int64_t c = threadIdx.x; c < k; c += blockDim.x)
        xs[r * k + c] = __float2half_rn(xr[c] * down);
}

/* out[r, j] = (accum ? out[r, j] : 0) + y[r, j] * scale[r] + bias[j]. */
__global__ void gs_rowscale_out_kernel(void *out, int odt, int64_t ldo, const float *y,
                                       const float *scale, const float *bias, int64_t rows,
                                       int64_t n, int accum)
{
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
        for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n;
             j += (int64_t)gridDim.x * blockDim.x) {
            float v = y[r * n + j] * scale[r];
            if (bias)
                v += bias[j];
            if (accum)
                v += gs_ld(out, odt, r * ldo + j);
            gs_st(out, odt, r * ldo + j, v);
        }
}

int gs_cuda_matmul_f32x(gs_cuda *c, gs_mat out, gs_mat x, gs_cuda_wview w, const gs_vec *bias,
                        int accum)
{
    const char *op = "matmul";
    const int64_t m = x.rows, k = x.cols, n = out.cols;
    GS_CU_CHECK(m <= 0x7fffffff, op, "too many rows (%lld)", (long long)m);
    const size_t xs_b = ((size_t)m * (size_t)k * 2 + 255) & ~(size_t)255;
    const size_t sc_b = ((size_t)m * 4 + 255) & ~(size_t)255;
    void *base = NULL;
    int rc = gs_cuda_scratch(c, xs_b + sc_b + (size_t)m * (size_t)n * 4, &base);
    if (rc)
        return rc;
    __half *xs = (__half *)base;
    float *scale = (float *)((char *)base + xs_b);
    float *y = (float *)((char *)base + xs_b + sc_b);
    gs_rowscale_kernel<<<(unsigned)m, 256, 0, c->stream>>>((const float *)x.data, x.stride, k, xs,
                                                           scale);
    GS_CU_LAUNCHED("rowscale");
    const gs_mat xm = {xs, GS_DT_F16, m, k, k};
    const gs_mat ym = {y, GS_DT_F32, m, n, n};
    rc = w.dt == GS_DT_Q8 || w.dt == GS_DT_Q4 ? gs_cuda_matmul_quant(c, ym, xm, w, NULL, 0)
                                              : gs_cuda_gemm_lt(c, ym, xm, w, NULL, 0, 0);
    if (rc)
        return rc;
    const dim3 grid(gs_cu_blocks(n, 256, 1024), (unsigned)(m < 65535 ? m : 65535));
    gs_rowscale_out_kernel<<<grid, 256, 0, c->stream>>>(out.data, out.dt, out.stride, y, scale,
                                                        bias && bias->data ? bias->data : NULL, m,
                                                        n, accum);
    GS_CU_LAUNCHED("rowscale_out");
    return 0;
}

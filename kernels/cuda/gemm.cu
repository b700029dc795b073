/* gemm.cu - out[m, n] (+)= x[m, k] . w[n, k]^T (+ bias[n]), BF16 inputs,
 * FP32 accumulation, F32 or BF16 output.
 *
 * Two paths:
 *  - cuBLASLt (any m): D^T = W . X^T in column-major terms (A = W with
 *    TRANSA = T, B = X^T, D = out^T), FP32 compute and scale, the bias as
 *    CUBLASLT_EPILOGUE_BIAS (its dtype must equal D's: a BF16 copy of the
 *    F32 bias, made once and cached by pointer in backend.cu, serves BF16
 *    outputs), beta = 1 for GS_MM_ACCUM
 *    (C = D in place). Descriptors and the heuristic's algorithm are cached
 *    per (m, n, k, strides, dtypes, epilogue, alignments): the heuristic
 *    runs once per shape, never per call.
 *  - GEMV (m <= 8, decode): one warp per 2 weight rows, 16-byte streaming
 *    (evict-first) weight loads, 4 loads in flight per lane, the m activation
 *    rows read through the read-only cache, FP32 accumulation, shuffle
 *    reduction, bias / accumulate fused in the epilogue. Deterministic.
 *    GS_TUNE_NO_GEMV (gs_backend_set_tuning) forces cuBLASLt (for comparisons).
 * Owns the descriptor cache (freed with the context). */
#include <string.h>

#include "kernels/cuda/common.cuh"

/* ---- descriptor / algorithm cache --------------------------------------------- */

typedef struct {
    int64_t m, n, k, ldx, ldo, ldw;
    int in_dt, out_dt, bias_mode, accum; /* in_dt: x and w (BF16 or F16); bias_mode: 0 none,
                                            1 BF16, 2 F32 */
    int al_x, al_w, al_o, al_b;
} gemm_key;

typedef struct {
    int valid;
    gemm_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} gemm_ent;

#define GEMM_CACHE_N 256

struct gs_cuda_gemm_cache {
    gemm_ent e[GEMM_CACHE_N];
    int next; /* round-robin replacement */
};

static void ent_clear(gemm_ent *e)
{
    if (e->op)
        cublasLtMatmulDescDestroy(e->op);
    if (e->la)
        cublasLtMatrixLayoutDestroy(e->la);
    if (e->lb)
        cublasLtMatrixLayoutDestroy(e->lb);
    if (e->lc)
        cublasLtMatrixLayoutDestroy(e->lc);
    memset(e, 0, sizeof *e);
}

void gs_cuda_gemm_cache_free(gs_cuda *c)
{
    if (!c->gemm_cache)
        return;
    for (int i = 0; i < GEMM_CACHE_N; i++)
        ent_clear(&c->gemm_cache->e[i]);
    free(c->gemm_cache);
    c->gemm_cache = NULL;
}

static int align_of(const void *p, int64_t ld_bytes)
{
    uintptr_t a = (uintptr_t)p | (uintptr_t)256;
    if (ld_bytes > 0)
        a |= (uintptr_t)ld_bytes;
    return (int)(a & (~a + 1)); /* lowest set bit, at most 256 */
}

/* Builds descriptors and asks the heuristic for one algorithm. */
static int ent_build(gs_cuda *c, gemm_ent *e, const gemm_key *k)
{
    memset(e, 0, sizeof *e);
    e->key = *k;
    const cudaDataType_t dt_in = k->in_dt == GS_DT_F16 ? CUDA_R_16F : CUDA_R_16BF;
    const cudaDataType_t dt_out =
        k->out_dt == GS_DT_F32 ? CUDA_R_32F : (k->out_dt == GS_DT_F16 ? CUDA_R_16F : CUDA_R_16BF);
    GS_LT_TRY(cublasLtMatmulDescCreate(&e->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    GS_LT_TRY(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    GS_LT_TRY(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    if (k->bias_mode) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        int32_t bdt = k->bias_mode == 1 ? CUDA_R_16BF : CUDA_R_32F;
        GS_LT_TRY(
            cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        GS_LT_TRY(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bdt,
                                                 sizeof bdt));
    }
    /* A = W stored [n, k] row-major = column-major k x n, ld ldw (then ^T). */
    GS_LT_TRY(cublasLtMatrixLayoutCreate(&e->la, dt_in, (uint64_t)k->k, (uint64_t)k->n, k->ldw));
    /* B = X^T: X [m, k] row-major (ld ldx) = column-major k x m. */
    GS_LT_TRY(cublasLtMatrixLayoutCreate(&e->lb, dt_in, (uint64_t)k->k, (uint64_t)k->m, k->ldx));
    /* C = D = out^T: column-major n x m, ld ldo. */
    GS_LT_TRY(cublasLtMatrixLayoutCreate(&e->lc, dt_out, (uint64_t)k->n, (uint64_t)k->m, k->ldo));

    cublasLtMatmulPreference_t pref;
    GS_LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = c->lt_ws_bytes;
    uint32_t aa = (uint32_t)k->al_w, ab = (uint32_t)k->al_x, ac = (uint32_t)k->al_o;
    cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                 &aa, sizeof aa);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                 &ab, sizeof ab);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                 &ac, sizeof ac);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                 &ac, sizeof ac);
    cublasLtMatmulHeuristicResult_t res;
    int n_res = 0;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulAlgoGetHeuristic(c->lt, e->op, e->la, e->lb, e->lc, e->lc, pref, 1, &res,
                                           &n_res);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || n_res < 1) {
        gs_log_warn("cuda matmul: no cuBLASLt algorithm for m %lld n %lld k %lld out %s bias %d "
                    "(status %d)",
                    (long long)k->m, (long long)k->n, (long long)k->k,
                    gs_dtype_name((gs_dtype)k->out_dt), k->bias_mode, (int)s);
        ent_clear(e);
        return GS_ENOTSUP;
    }
    e->algo = res.algo;
    e->valid = 1;
    return 0;
}

static int cache_get(gs_cuda *c, const gemm_key *k, gemm_ent **out)
{
    if (!c->gemm_cache) {
        c->gemm_cache = (gs_cuda_gemm_cache *)calloc(1, sizeof *c->gemm_cache);
        if (!c->gemm_cache)
            return GS_ENOMEM;
    }
    gs_cuda_gemm_cache *gc = c->gemm_cache;
    for (int i = 0; i < GEMM_CACHE_N; i++)
        if (gc->e[i].valid && memcmp(&gc->e[i].key, k, sizeof *k) == 0) {
            *out = &gc->e[i];
            return 0;
        }
    gemm_ent *e = &gc->e[gc->next];
    gc->next = (gc->next + 1) % GEMM_CACHE_N;
    ent_clear(e);
    int rc = ent_build(c, e, k);
    if (rc)
        return rc;
    *out = e;
    return 0;
}

/* ---- small kernels ---------------------------------------------------------------- */

/* out[r, j] += bias[j] (used when no cuBLASLt algorithm takes the epilogue). */
__global__ void gs_bias_add_kernel(void *out, int dt, int64_t rows, int64_t cols, int64_t ld,
                                   const float *bias)
{
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
        for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < cols;
             j += (int64_t)gridDim.x * blockDim.x)
            gs_st(out, dt, r * ld + j, gs_ld(out, dt, r * ld + j) + bias[j]);
}

/* ---- GEMV (m <= 8) ------------------------------------------------------------------ */

#define GEMV_WARPS 8
#define GEMV_ROWS 2   /* weight rows per warp */
#define GEMV_UNROLL 4 /* 16-byte weight loads in flight per lane and row */

typedef struct {
    const uint4 *w; /* [n, k/8] */
    const __nv_bfloat16 *x;
    void *out;
    const float *bias; /* may be NULL */
    int64_t n, k8, ldx, ldo;
    int m, out_dt, accum;
} gemv_args;

__device__ __forceinline__ float dot8(const uint4 &a, const uint4 &b)
{
    const __nv_bfloat162 *pa = (const __nv_bfloat162 *)&a;
    const __nv_bfloat162 *pb = (const __nv_bfloat162 *)&b;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 fa = __bfloat1622float2(pa[i]), fb = __bfloat1622float2(pb[i]);
        s = fmaf(fa.x, fb.x, s);
        s = fmaf(fa.y, fb.y, s);
    }
    return s;
}

template <int M> __global__ void __launch_bounds__(GEMV_WARPS * 32) gs_gemv_kernel(gemv_args a)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t row0 = ((int64_t)blockIdx.x * GEMV_WARPS + warp) * GEMV_ROWS;
    if (row0 >= a.n)
        return;
    const uint4 *wr[GEMV_ROWS];
    bool ok[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        ok[r] = row0 + r < a.n;
        wr[r] = a.w + (ok[r] ? row0 + r : row0) * a.k8;
    }
    float acc[GEMV_ROWS][M];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int i = 0; i < M; i++)
            acc[r][i] = 0.0f;

    for (int64_t c0 = lane; c0 < a.k8; c0 += 32 * GEMV_UNROLL) {
        uint4 wv[GEMV_UNROLL][GEMV_ROWS];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int64_t ci = c0 + (int64_t)u * 32;
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++)
                wv[u][r] = (ci < a.k8 && ok[r]) ? __ldcs(wr[r] + ci) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int64_t ci = c0 + (int64_t)u * 32;
            if (ci >= a.k8)
                break;
#pragma unroll
            for (int i = 0; i < M; i++) {
                if (i >= a.m)
                    break;
                const uint4 xv = __ldg((const uint4 *)(a.x + (int64_t)i * a.ldx) + ci);
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; r++)
                    acc[r][i] += dot8(wv[u][r], xv);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int i = 0; i < M; i++)
            acc[r][i] = gs_warp_sum(acc[r][i]);
            /* lane (r * M + i) writes element (i, row0 + r) */
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int i = 0; i < M; i++) {
            if (lane != r * M + i || i >= a.m || !ok[r])
                continue;
            const int64_t row = row0 + r;
            float v = acc[r][i];
            if (a.bias)
                v += a.bias[row];
            const int64_t o = (int64_t)i * a.ldo + row;
            if (a.accum)
                v += gs_ld(a.out, a.out_dt, o);
            gs_st(a.out, a.out_dt, o, v);
        }
}

static int run_gemv(gs_cuda *c, gs_mat out, gs_mat x, gs_cuda_wview w, const float *bias, int accum)
{
    gemv_args a;
    a.w = (const uint4 *)w.data;
    a.x = (const __nv_bfloat16 *)x.data;
    a.out = out.data;
    a.bias = bias;
    a.n = out.cols;
    a.k8 = x.cols / 8;
    a.ldx = x.stride;
    a.ldo = out.stride;
    a.m = (int)x.rows;
    a.out_dt = out.dt;
    a.accum = accum;
    const int rows_per_block = GEMV_WARPS * GEMV_ROWS;
    const unsigned grid = (unsigned)((a.n + rows_per_block - 1) / rows_per_block);
    const dim3 block(GEMV_WARPS * 32);
    if (a.m <= 1)
        gs_gemv_kernel<1><<<grid, block, 0, c->stream>>>(a);
    else if (a.m <= 2)
        gs_gemv_kernel<2><<<grid, block, 0, c->stream>>>(a);
    else if (a.m <= 4)
        gs_gemv_kernel<4><<<grid, block, 0, c->stream>>>(a);
    else
        gs_gemv_kernel<8><<<grid, block, 0, c->stream>>>(a);
    GS_CU_LAUNCHED("gemv");
    return 0;
}

/* gemm_f32x.cu: gs_cuda_matmul for F32 x on an F16 context (rows scaled
 * into F16 range, the F16 GEMM, scaled back). */
int gs_cuda_matmul_f32x(gs_cuda *c, gs_mat out, gs_mat x, gs_cuda_wview w, const gs_vec *bias,
                        int accum);

/* ---- cuBLASLt path -------------------------------------------------------------------- */

int gs_cuda_gemm_lt(gs_cuda *c, gs_mat out, gs_mat x, gs_cuda_wview w, const gs_vec *bias,
                    int64_t bias_off, int accum)
{
    gemm_key k;
    memset(&k, 0, sizeof k); /* padding takes part in memcmp */
    k.m = x.rows;
    k.n = out.cols;
    k.k = x.cols;
    k.ldx = x.stride;
    k.ldo = out.stride;
    k.ldw = w.cols;
    k.in_dt = x.dt;
    k.out_dt = out.dt;
    k.accum = accum;
    const void *bias_ptr = NULL;
    if (bias && bias->data) {
        if (out.dt == GS_DT_F32) {
            k.bias_mode = 2;
            bias_ptr = bias->data + bias_off;
        } else if (out.dt == GS_DT_BF16 &&
                   (bias_ptr = gs_cuda_bias_bf16(c, bias->data, bias->n)) != NULL) {
            /* the copy of the whole vector, at the chunk's offset */
            bias_ptr = (const __nv_bfloat16 *)bias_ptr + bias_off;
            k.bias_mode = 1;
        }
        /* F16 out: no F16 bias copies are kept; the bias kernel below adds it */
        if (bias_ptr && !gs_cu_aligned(bias_ptr, 16)) {
            /* a chunk at an odd row offset: the epilogue wants aligned bias */
            bias_ptr = NULL;
            k.bias_mode = 0;
        }
    }
    const size_t eo = gs_cu_dt_size(out.dt);
    k.al_x = align_of(x.data, x.stride * 2);
    k.al_w = align_of(w.data, w.cols * 2);
    k.al_o = align_of(out.data, out.stride * (int64_t)eo);
    k.al_b = bias_ptr ? align_of(bias_ptr, 0) : 0;

    gemm_ent *e = NULL;
    int rc = cache_get(c, &k, &e);
    if (rc == GS_ENOTSUP && k.bias_mode) {
        /* no algorithm with the epilogue: plain GEMM, then a bias kernel */
        k.bias_mode = 0;
        k.al_b = 0;
        bias_ptr = NULL;
        rc = cache_get(c, &k, &e);
    }
    if (rc)
        return rc;
    if (bias_ptr)
        GS_LT_TRY(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                 &bias_ptr, sizeof bias_ptr));
    const float alpha = 1.0f, beta = accum ? 1.0f : 0.0f;
    GS_LT_TRY(cublasLtMatmul(c->lt, e->op, &alpha, w.data, e->la, x.data, e->lb, &beta, out.data,
                             e->lc, out.data, e->lc, &e->algo, c->lt_ws, c->lt_ws_bytes,
                             c->stream));
    if (bias && bias->data && !bias_ptr) {
        dim3 grid(gs_cu_blocks(out.cols, 256, 1024),
                  (unsigned)(out.rows < 65535 ? out.rows : 65535));
        gs_bias_add_kernel<<<grid, 256, 0, c->stream>>>(out.data, out.dt, out.rows, out.cols,
                                                        out.stride, bias->data + bias_off);
        GS_CU_LAUNCHED("bias_add");
    }
    return 0;
}

int gs_cuda_matmul(gs_cuda *c, gs_mat out, gs_mat x, gs_cuda_wview w, const gs_vec *bias,
                   unsigned flags)
{
    const char *op = "matmul";
    const gs_dtype act = gs_cuda_act_dtype(c);
    GS_CU_CHECK(gs_cu_mat_ok(out) && gs_cu_mat_ok(x), op, "bad matrix view");
    /* F32 x on an F16 context: the residual dtype (kernels.h), for inputs
     * that pass F16's range (the SwiGLU output) */
    GS_CU_CHECK(x.dt == act || (c->f16 && x.dt == GS_DT_F32), op, "x must be %s (got %s)",
                gs_dtype_name(act), gs_dtype_name(x.dt));
    GS_CU_CHECK(out.dt == act || out.dt == GS_DT_F32, op, "out must be %s or F32",
                gs_dtype_name(act));
    GS_CU_CHECK(w.dt == act || w.dt == GS_DT_Q8 || w.dt == GS_DT_Q4, op,
                "weight dtype %s on a %s context", gs_dtype_name(w.dt), gs_dtype_name(act));
    GS_CU_CHECK(w.data && w.rows == out.cols && w.cols == x.cols && out.rows == x.rows, op,
                "shapes: out [%lld, %lld], x [%lld, %lld], w [%lld, %lld]", (long long)out.rows,
                (long long)out.cols, (long long)x.rows, (long long)x.cols, (long long)w.rows,
                (long long)w.cols);
    GS_CU_CHECK(!bias || !bias->data || bias->n == out.cols, op, "bias length %lld != n %lld",
                (long long)(bias ? bias->n : 0), (long long)out.cols);
    GS_CU_CHECK(out.data != x.data || out.rows == 0, op, "out must not alias x");
    if (out.rows == 0 || out.cols == 0)
        return 0;
    GS_CU_CHECK(x.cols > 0, op, "k must be > 0");
    const int accum = (flags & GS_MM_ACCUM) != 0;
    GS_CU_CHECK(w.dt == act || w.s, op, "quantized weight without scales");
    if (x.dt != act)
        return gs_cuda_matmul_f32x(c, out, x, w, bias, accum);
    if (w.dt == GS_DT_Q8 || w.dt == GS_DT_Q4) {
        return gs_cuda_matmul_quant(c, out, x, w, bias, accum);
    }
    /* The BF16 GEMV; F16 contexts (sm_75) take cuBLASLt, whose FP16 GEMV
     * runs near bandwidth there (CUDA-NOTES: 81% on T4). */
    if (c->gemv_mode && x.rows <= 8 && gs_cu_vec8_ok(x) && gs_cu_aligned(w.data, 16))
        return run_gemv(c, out, x, w, bias && bias->data ? bias->data : NULL, accum);
    return gs_cuda_gemm_lt(c, out, x, w, bias, 0, accum);
}

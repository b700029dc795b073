/* common.cuh - what every .cu file of the CUDA backend shares: the device
 * context struct, error macros (CUDA errors become GS_EDEVICE with a log
 * line, never an exit), dtype load/store helpers, warp/block reductions.
 * Internal to kernels/cuda. */
#ifndef GS_CUDA_COMMON_CUH
#define GS_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cublasLt.h>
#include <stdint.h>

/* common/ headers have no C++ guards of their own */
extern "C" {
#include "common/err.h"
#include "common/log.h"
}
#include "kernels/cuda/cuda_ops.h"

/* Device-side error bits (gs_cuda.err_host); reported as GS_ERANGE. */
enum {
    GS_CUDA_ERR_EMBED_ID = 1 << 0,   /* token id outside the table */
    GS_CUDA_ERR_GATHER_IDX = 1 << 1, /* gather row outside x */
    GS_CUDA_ERR_KV_SLOT = 1 << 2,    /* kv_store slot beyond the cache */
    GS_CUDA_ERR_PAGE = 1 << 3,       /* block table page beyond the cache */
    GS_CUDA_ERR_SEQ = 1 << 4,        /* cu / kv_len inconsistent */
    GS_CUDA_ERR_GRID = 1 << 5,       /* posembed grid (h, w, H, W) invalid */
    GS_CUDA_ERR_SAMPLE = 1 << 6,     /* sampler: a penalty id outside the vocabulary */
};

struct gs_cuda_gemm_cache; /* gemm.cu */
struct gs_ptr_map;         /* ptr_map.h: the bias copies and the allocation sizes */

struct gs_cuda {
    int device;
    int cc_major, cc_minor;
    int n_sm;
    size_t smem_optin; /* max dynamic shared memory per block (opt-in) */
    char name[96];
    cudaStream_t stream;

    cublasLtHandle_t lt;
    void *lt_ws; /* cuBLASLt workspace */
    size_t lt_ws_bytes;
    struct gs_cuda_gemm_cache *gemm_cache;
    int gemv_mode; /* 0 off (GS_TUNE_NO_GEMV), 1 auto (default) */

    int use_pool; /* stream-ordered allocator available */
    cudaMemPool_t pool;

    /* gs_backend_params.mem_limit (0: none) and the bytes this context
     * holds: weights, pool allocations, the cuBLASLt workspace. Every
     * device allocation goes through dev_malloc / gs_cuda_alloc, which
     * refuse past the limit. */
    size_t mem_limit, mem_used;
    struct gs_ptr_map *mem_map; /* device pointer -> bytes */
    /* Activations and GEMMs in F16 instead of BF16: devices below sm_80
     * (no BF16 tensor cores, no BF16 cuBLASLt), or GS_TUNE_CUDA_F16 on
     * any device (tests); never switched back. */
    int f16;

    /* Mapped pinned word that kernels set on bad indices. */
    volatile unsigned *err_host;
    unsigned *err_dev;

    /* Persistent scratch for split-KV partials, sampler state etc.; grows
     * outside of graph capture only. */
    void *scratch;
    size_t scratch_bytes;
    /* Dequantized weight tiles of the prefill GEMM with quantized weights
     * (quant.cu); grows like scratch, outside of capture only. */
    void *qtile;
    size_t qtile_bytes;
    unsigned scratch_gen; /* bumped when scratch or a bias copy moves (graph.cu) */

    struct gs_ptr_map *bias_map; /* F32 bias pointer -> its BF16 copy */
    int capturing;
    /* Tensor-core attention kernels got their shared-memory opt-in at
     * context creation (attn_*_setup); 0 -> fallback kernels only. */
    int attn_prefill_ok, attn_paged_ok;
    int attn_simple; /* GS_TUNE_ATTN_SIMPLE: force the fallback kernels */
    int attn_splits; /* gs_backend_tuning.attn_splits: fixed split count (0: heuristic) */
};

/* ---- error handling --------------------------------------------------------- */

int gs_cuda_err(cudaError_t e, const char *what, const char *file, int line);
int gs_cuda_lt_err(cublasStatus_t s, const char *what, const char *file, int line);

#define GS_CU_TRY(call)                                                                            \
    do {                                                                                           \
        cudaError_t gs__e = (call);                                                                \
        if (gs__e != cudaSuccess)                                                                  \
            return gs_cuda_err(gs__e, #call, __FILE__, __LINE__);                                  \
    } while (0)

/* After a kernel launch: reports launch configuration errors. */
#define GS_CU_LAUNCHED(name)                                                                       \
    do {                                                                                           \
        cudaError_t gs__e = cudaGetLastError();                                                    \
        if (gs__e != cudaSuccess)                                                                  \
            return gs_cuda_err(gs__e, name, __FILE__, __LINE__);                                   \
    } while (0)

#define GS_LT_TRY(call)                                                                            \
    do {                                                                                           \
        cublasStatus_t gs__s = (call);                                                             \
        if (gs__s != CUBLAS_STATUS_SUCCESS)                                                        \
            return gs_cuda_lt_err(gs__s, #call, __FILE__, __LINE__);                               \
    } while (0)

/* Argument check: logs "cuda <op>: <why>" and returns GS_EINVAL. */
#define GS_CU_CHECK(cond, op, fmt, ...)                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            gs_log_error("cuda %s: " fmt, op, ##__VA_ARGS__);                                      \
            return GS_EINVAL;                                                                      \
        }                                                                                          \
    } while (0)

/* Scratch of at least `bytes` (grows; GS_ENOMEM during capture). */
int gs_cuda_scratch(gs_cuda *c, size_t bytes, void **out);
/* The same for the dequantized weight tiles of quant.cu (its own buffer,
 * so that the two do not make each other grow and go stale in turns). */
int gs_cuda_qtile(gs_cuda *c, size_t bytes, void **out);
/* A BF16 copy of the F32 vector f32[0..n) for the cuBLASLt bias epilogue
 * (whose bias dtype must be D's). Made on first use and cached by pointer;
 * dropped when that pointer is freed, uploaded to or zeroed through this
 * context. NULL during capture when no copy exists yet (callers fall back
 * to a separate bias kernel), or on allocation failure. */
const __nv_bfloat16 *gs_cuda_bias_bf16(gs_cuda *c, const float *f32, int64_t n);

/* gemm.cu: frees the cuBLASLt descriptor / algorithm cache. */
void gs_cuda_gemm_cache_free(gs_cuda *c);
/* attn_prefill.cu / attn_decode.cu: raise the dynamic shared-memory limit
 * of the tensor-core kernels once (not capturable, so not per launch). */
void gs_cuda_attn_prefill_setup(gs_cuda *c);
void gs_cuda_attn_paged_setup(gs_cuda *c);
/* embed.cu: dst[0..n) = BF16(gs_rand_uniform(seed, i, scale)). */
int gs_cuda_fill_random_bf16(gs_cuda *c, void *dst, int64_t n, uint64_t seed, float scale);
/* quant.cu: q and s of a [rows, cols] weight of qdt (Q8 / Q4) made from
 * gs_rand_uniform values exactly as gs_quantize would make them. */
int gs_cuda_fill_random_quant(gs_cuda *c, gs_dtype qdt, void *q, float *s, int64_t rows,
                              int64_t cols, uint64_t seed, float scale);
/* gemm.cu: the cuBLASLt GEMM of gs_cuda_matmul for a 16-bit weight view,
 * with the bias (if any) starting at element bias_off of bias->data (the
 * column offset of a weight chunk in quant.cu). */
int gs_cuda_gemm_lt(gs_cuda *c, gs_mat out, gs_mat x, gs_cuda_wview w, const gs_vec *bias,
                    int64_t bias_off, int accum);
/* quant.cu: gs_cuda_matmul for a quantized weight view. */
int gs_cuda_matmul_quant(gs_cuda *c, gs_mat out, gs_mat x, gs_cuda_wview w, const gs_vec *bias,
                         int accum);

/* ---- host helpers ------------------------------------------------------------ */

static inline __host__ __device__ size_t gs_cu_dt_size(gs_dtype dt)
{
    return dt == GS_DT_F32 || dt == GS_DT_I32 ? 4 : 2;
}

static inline int gs_cu_float_dt(gs_dtype dt)
{
    return dt == GS_DT_F32 || dt == GS_DT_BF16 || dt == GS_DT_F16;
}

/* A gs_mat that the float kernels can read/write: float dtype, non-negative
 * sizes, stride >= cols, data present when non-empty. */
static inline int gs_cu_mat_ok(const gs_mat &m)
{
    return gs_cu_float_dt(m.dt) && m.rows >= 0 && m.cols >= 0 && m.stride >= m.cols &&
           (m.data != NULL || m.rows == 0 || m.cols == 0);
}

static inline int gs_cu_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p % a) == 0;
}

/* Rows and 16-byte vectors of 8 BF16: data 16-byte aligned, stride % 8 == 0,
 * cols % 8 == 0. */
static inline int gs_cu_vec8_ok(const gs_mat &m)
{
    return m.dt == GS_DT_BF16 && gs_cu_aligned(m.data, 16) && m.stride % 8 == 0 && m.cols % 8 == 0;
}

static inline unsigned gs_cu_blocks(int64_t n, int per_block, unsigned cap)
{
    int64_t b = (n + per_block - 1) / per_block;
    if (b < 1)
        b = 1;
    return b > (int64_t)cap ? cap : (unsigned)b;
}

/* ---- device helpers ---------------------------------------------------------- */

__device__ __forceinline__ float gs_ld(const void *p, int dt, int64_t i)
{
    if (dt == GS_DT_BF16)
        return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    if (dt == GS_DT_F16)
        return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

__device__ __forceinline__ void gs_st(void *p, int dt, int64_t i, float v)
{
    if (dt == GS_DT_BF16)
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else if (dt == GS_DT_F16)
        ((__half *)p)[i] = __float2half_rn(v);
    else
        ((float *)p)[i] = v;
}

/* The same 8-element vectors for a 16-bit float dtype (BF16 or F16). */
static inline int gs_cu_vec8_16_ok(const gs_mat &m)
{
    return (m.dt == GS_DT_BF16 || m.dt == GS_DT_F16) && gs_cu_aligned(m.data, 16) &&
           m.stride % 8 == 0 && m.cols % 8 == 0;
}

/* Device copy of gs_rand_uniform (backend_impl.h), operation for operation:
 * 2u and the subtraction are exact, so FMA contraction could not change
 * the result either; kept explicit anyway. */
__device__ __forceinline__ float gs_rand_uniform_dev(uint64_t seed, uint64_t idx, float scale)
{
    uint64_t z = seed + (idx + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = __fmul_rn((float)(z >> 40), 1.0f / 16777216.0f);
    return __fmul_rn(__fsub_rn(__fmul_rn(2.0f, u), 1.0f), scale);
}

/* Rounds through BF16 (the value a BF16 tensor would hold). */
__device__ __forceinline__ float gs_bf(float v)
{
    return __bfloat162float(__float2bfloat16_rn(v));
}

/* 8 BF16 in one 16-byte word <-> 8 floats. */
__device__ __forceinline__ void gs_unpack8(const uint4 &u, float f[8])
{
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

/* 8 F16 in one 16-byte word -> 8 floats. */
__device__ __forceinline__ void gs_unpack8_f16(const uint4 &u, float f[8])
{
    const __half2 *h = (const __half2 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __half22float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

__device__ __forceinline__ uint4 gs_pack8(const float f[8])
{
    uint4 u;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++)
        h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return u;
}

__device__ __forceinline__ float gs_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float gs_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block-wide sum; every thread gets the result. sh: >= 32 floats of shared
 * memory. blockDim.x must be a multiple of 32. Fixed order: deterministic. */
__device__ __forceinline__ float gs_block_sum(float v, float *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = (blockDim.x + 31) >> 5;
    v = gs_warp_sum(v);
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return gs_warp_sum(v);
}

__device__ __forceinline__ float gs_block_max(float v, float *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nw = (blockDim.x + 31) >> 5;
    v = gs_warp_max(v);
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return gs_warp_max(v);
}

/* Marks a device-side error (read by gs_cuda_sync). The word is mapped
 * pinned host memory: a plain store, no atomics over PCIe; when several
 * kernels fail at once one of their bits survives, which is enough to
 * report the failure. */
__host__ __device__ inline void gs_dev_error(unsigned *err, unsigned bit)
{
    if (err)
        *(volatile unsigned *)err = bit;
}

#endif

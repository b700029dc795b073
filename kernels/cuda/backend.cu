/* backend.cu - the CUDA device context: device selection, the stream, the
 * cuBLASLt handle and workspace, the stream-ordered memory pool, scratch,
 * weights and vectors, and the mapping of CUDA errors to GS_EDEVICE.
 *
 * Owns: every device allocation made through gs_cuda_alloc / weights /
 * vectors (released by their free functions), the stream, the cuBLASLt
 * handle, the mapped error word. Does not own: caller host memory.
 * Threading: one context per engine thread; cudaSetDevice is called once in
 * gs_cuda_ctx_new, so the context must be used from the thread that made it
 * (or one that selected the same device). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ptr_map.h"

/* ---- errors ----------------------------------------------------------------- */

int gs_cuda_err(cudaError_t e, const char *what, const char *file, int line)
{
    gs_log_error("cuda: %s failed: %s (%s) at %s:%d", what, cudaGetErrorName(e),
                 cudaGetErrorString(e), file, line);
    return GS_EDEVICE;
}

int gs_cuda_lt_err(cublasStatus_t s, const char *what, const char *file, int line)
{
    gs_log_error("cuda: %s failed: cublas status %d at %s:%d", what, (int)s, file, line);
    return s == CUBLAS_STATUS_NOT_SUPPORTED ? GS_ENOTSUP : GS_EDEVICE;
}

/* ---- bias map: F32 vector pointer -> its BF16 copy --------------------------
 * cuBLASLt wants the bias in D's dtype; biases arrive as F32 gs_vec. The
 * first BF16-output GEMM with a bias converts it once into pool memory;
 * later GEMMs find the copy by pointer. Any free / upload / zero through
 * this context of that exact pointer drops the copy. c->bias_map (ptr_map.h):
 * key the F32 pointer, val the BF16 copy, n its length. */

/* ---- memory accounting: device pointer -> bytes -------------------------------
 * gs_backend_params.mem_limit caps what this context holds. Frees get only
 * a pointer, so every allocation's size is kept here (open addressing,
 * tombstones; a few hundred live entries: weights, KV pages, per-pass
 * activations). */

/* Records p (bytes) as held; GS_ENOMEM when the map cannot grow. */
static int mem_put(gs_cuda *c, void *p, size_t bytes)
{
    if (gs_ptr_map_put(c->mem_map, p, NULL, (int64_t)bytes))
        return GS_ENOMEM;
    c->mem_used += bytes;
    return 0;
}

/* Forgets p; returns its bytes (0 if p was not recorded). */
static size_t mem_take(gs_cuda *c, void *p)
{
    gs_ptr_ent *e = gs_ptr_map_find(c->mem_map, p);
    if (!e)
        return 0;
    size_t b = (size_t)e->n;
    gs_ptr_map_del(c->mem_map, e);
    c->mem_used -= b;
    return b;
}

/* 1 (with a log line) when `bytes` more would pass the cap. */
static int mem_over(gs_cuda *c, size_t bytes, const char *what)
{
    if (!c->mem_limit || (c->mem_used <= c->mem_limit && bytes <= c->mem_limit - c->mem_used))
        return 0;
    gs_log_error("cuda %s: %zu bytes would pass the device memory limit (%zu of %zu bytes in "
                 "use)",
                 what, bytes, c->mem_used, c->mem_limit);
    return 1;
}

/* cudaMalloc of long-lived memory (weights), counted against the cap. */
static cudaError_t dev_malloc(gs_cuda *c, void **p, size_t bytes, const char *what)
{
    *p = NULL;
    if (mem_over(c, bytes, what))
        return cudaErrorMemoryAllocation;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        return e;
    }
    if (mem_put(c, *p, bytes)) {
        cudaFree(*p);
        *p = NULL;
        return cudaErrorMemoryAllocation;
    }
    return cudaSuccess;
}

static cudaError_t dev_free(gs_cuda *c, void *p)
{
    mem_take(c, p);
    return cudaFree(p);
}

static void pool_free(gs_cuda *c, void *p);

/* Drops the BF16 copy cached for `key`, if any. */
static void bias_drop(gs_cuda *c, const void *key)
{
    gs_ptr_ent *e = gs_ptr_map_find(c->bias_map, key);
    if (!e)
        return;
    pool_free(c, e->val);
    gs_ptr_map_del(c->bias_map, e);
    c->scratch_gen++; /* a captured graph may have used the copy */
}

const __nv_bfloat16 *gs_cuda_bias_bf16(gs_cuda *c, const float *f32, int64_t n)
{
    gs_ptr_ent *e = gs_ptr_map_find(c->bias_map, f32);
    if (e && e->n >= n)
        return (const __nv_bfloat16 *)e->val;
    if (c->capturing) /* no free or alloc inside a capture: keep a short copy */
        return NULL;
    if (e)
        bias_drop(c, f32);
    __nv_bfloat16 *bf = (__nv_bfloat16 *)gs_cuda_alloc(c, (size_t)n * 2);
    if (!bf)
        return NULL;
    gs_mat src = {(void *)f32, GS_DT_F32, 1, n, n};
    gs_mat dst = {bf, GS_DT_BF16, 1, n, n};
    if (gs_cuda_copy(c, dst, src) || gs_ptr_map_put(c->bias_map, f32, bf, n)) {
        pool_free(c, bf);
        return NULL;
    }
    return bf;
}

/* ---- context ---------------------------------------------------------------- */

/* A trivial kernel: cudaFuncGetAttributes on it tells whether this binary
 * has code for the device's architecture. */
__global__ void gs_probe_kernel(int *p)
{
    if (p)
        *p = 0;
}

static void ctx_release(gs_cuda *c)
{
    if (c->capturing) /* kernels.c aborts first; a direct caller may not */
        gs_cuda_graph_abort(c);
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    gs_cuda_gemm_cache_free(c);
    if (c->bias_map) {
        for (uint32_t i = 0; c->stream && i < c->bias_map->cap; i++)
            if (gs_ptr_ent_live(&c->bias_map->e[i]))
                pool_free(c, c->bias_map->e[i].val);
        free(c->bias_map->e);
        free(c->bias_map);
    }
    if (c->scratch && c->stream)
        pool_free(c, c->scratch);
    if (c->qtile && c->stream)
        pool_free(c, c->qtile);
    if (c->stream) {
        cudaStreamSynchronize(c->stream);
        cudaStreamDestroy(c->stream);
    }
    if (c->lt_ws)
        dev_free(c, c->lt_ws);
    if (c->lt)
        cublasLtDestroy(c->lt);
    if (c->err_host)
        cudaFreeHost((void *)c->err_host);
    if (c->mem_map) {
        free(c->mem_map->e);
        free(c->mem_map);
    }
    free(c);
}

#define CTX_TRY(call, what)                                                                        \
    do {                                                                                           \
        cudaError_t gs__e = (call);                                                                \
        if (gs__e != cudaSuccess) {                                                                \
            gs_cuda_err(gs__e, what, __FILE__, __LINE__);                                          \
            gs_diag_set(d, GS_EDEVICE, "cuda device %d: %s: %s", dev, what,                        \
                        cudaGetErrorString(gs__e));                                                \
            ctx_release(c);                                                                        \
            return GS_EDEVICE;                                                                     \
        }                                                                                          \
    } while (0)

int gs_cuda_ctx_new(const gs_backend_params *p, gs_cuda **out, gs_diag *d)
{
    *out = NULL;
    int dev = p ? p->device : 0;
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev <= 0) {
        const char *why = e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device";
        gs_log_error("cuda: no usable device: %s", why);
        return gs_diag_set(d, GS_EDEVICE, "cuda: no usable device: %s", why);
    }
    if (dev < 0 || dev >= n_dev)
        return gs_diag_set(d, GS_EDEVICE, "cuda: device %d does not exist (%d found)", dev, n_dev);
    gs_cuda *c = (gs_cuda *)calloc(1, sizeof *c);
    if (!c)
        return gs_diag_set(d, GS_ENOMEM, "cuda: out of memory");
    c->device = dev;
    c->mem_limit = p ? p->mem_limit : 0;
    c->bias_map = (gs_ptr_map *)calloc(1, sizeof *c->bias_map);
    c->mem_map = (gs_ptr_map *)calloc(1, sizeof *c->mem_map);
    if (!c->bias_map || !c->mem_map) {
        ctx_release(c);
        return gs_diag_set(d, GS_ENOMEM, "cuda: out of memory");
    }
    CTX_TRY(cudaSetDevice(dev), "cudaSetDevice");
    cudaDeviceProp prop;
    CTX_TRY(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
    c->cc_major = prop.major;
    c->cc_minor = prop.minor;
    c->n_sm = prop.multiProcessorCount;
    c->smem_optin = prop.sharedMemPerBlockOptin;
    snprintf(c->name, sizeof c->name, "cuda:%d %.60s (sm_%d%d)", dev, prop.name, prop.major,
             prop.minor);

    cudaFuncAttributes fa;
    e = cudaFuncGetAttributes(&fa, gs_probe_kernel);
    if (e != cudaSuccess) {
        gs_log_error("cuda: this build has no code for %s: %s (rebuild with "
                     "-DGS_CUDA_ARCHS=%d%d)",
                     c->name, cudaGetErrorString(e), prop.major, prop.minor);
        gs_diag_set(d, GS_EDEVICE, "cuda: build has no code for sm_%d%d", prop.major, prop.minor);
        ctx_release(c);
        return GS_EDEVICE;
    }
    /* Below sm_80 there are no BF16 GEMMs (cuBLASLt refuses them) nor BF16
     * tensor cores: activations and 16-bit weights are F16 there, with the
     * residual stream in F32 (kernels.h gs_backend_resid_dtype). */
    c->f16 = prop.major < 8;
    if (c->f16)
        gs_log_info("cuda: %s: F16 activations and GEMMs (no BF16 below sm_80), F32 residual "
                    "stream",
                    c->name);
    if (prop.major < 8)
        gs_log_warn("cuda: %s: BF16 tensor cores need sm_80; attention runs the CUDA-core "
                    "fallback",
                    c->name);

    CTX_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    cublasStatus_t ls = cublasLtCreate(&c->lt);
    if (ls != CUBLAS_STATUS_SUCCESS) {
        gs_cuda_lt_err(ls, "cublasLtCreate", __FILE__, __LINE__);
        gs_diag_set(d, GS_EDEVICE, "cuda: cublasLtCreate failed (%d)", (int)ls);
        c->lt = NULL;
        ctx_release(c);
        return GS_EDEVICE;
    }
    /* 32 MiB on Hopper, 4 MiB before (NVIDIA's advice). */
    c->lt_ws_bytes = prop.major >= 9 ? ((size_t)32 << 20) : ((size_t)4 << 20);
    CTX_TRY(dev_malloc(c, &c->lt_ws, c->lt_ws_bytes, "cuBLASLt workspace"),
            "cudaMalloc(cuBLASLt workspace)");

    int pools = 0;
    if (cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, dev) == cudaSuccess &&
        pools) {
        CTX_TRY(cudaDeviceGetDefaultMemPool(&c->pool, dev), "cudaDeviceGetDefaultMemPool");
        uint64_t keep = UINT64_MAX; /* never trim the pool at sync points */
        CTX_TRY(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &keep),
                "cudaMemPoolSetAttribute");
        c->use_pool = 1;
    }
    void *h = NULL, *dp = NULL;
    CTX_TRY(cudaHostAlloc(&h, sizeof(unsigned), cudaHostAllocMapped), "cudaHostAlloc");
    c->err_host = (volatile unsigned *)h;
    *c->err_host = 0;
    CTX_TRY(cudaHostGetDevicePointer(&dp, h, 0), "cudaHostGetDevicePointer");
    c->err_dev = (unsigned *)dp;

    const gs_backend_tuning tune = {0, 0}; /* defaults; gs_backend_set_tuning changes them */
    gs_cuda_set_tuning(c, &tune);
    gs_cuda_attn_prefill_setup(c);
    gs_cuda_attn_paged_setup(c);
    gs_log_info("cuda: %s, %d SMs, %.1f GiB, smem opt-in %zu KiB, pool %s, gemv %s, "
                "memory limit %.2f GiB",
                c->name, c->n_sm, (double)prop.totalGlobalMem / (1u << 30), c->smem_optin / 1024,
                c->use_pool ? "on" : "off", c->gemv_mode ? "auto" : "off",
                (double)c->mem_limit / (1u << 30));
    *out = c;
    return 0;
}

void gs_cuda_set_tuning(gs_cuda *c, const gs_backend_tuning *t)
{
    if ((t->flags & GS_TUNE_CUDA_F16) && !c->f16) {
        /* Buffers and weights made so far are BF16: switch only while the
         * context holds nothing but its cuBLASLt workspace. */
        if (c->mem_used > c->lt_ws_bytes)
            gs_log_warn("cuda: GS_TUNE_CUDA_F16 ignored: the backend already holds %zu bytes",
                        c->mem_used - c->lt_ws_bytes);
        else {
            c->f16 = 1;
            gs_log_info("cuda: %s: F16 activations and GEMMs (requested), F32 residual stream",
                        c->name);
        }
    }
    c->gemv_mode = (t->flags & GS_TUNE_NO_GEMV) ? 0 : 1;
    c->attn_simple = (t->flags & GS_TUNE_ATTN_SIMPLE) ? 1 : 0;
    c->attn_splits = t->attn_splits;
}

void gs_cuda_ctx_free(gs_cuda *c)
{
    if (c)
        ctx_release(c);
}

const char *gs_cuda_name(const gs_cuda *c)
{
    return c ? c->name : "cuda";
}

int gs_cuda_arch(const gs_cuda *c)
{
    return c->cc_major * 10 + c->cc_minor;
}

gs_dtype gs_cuda_act_dtype(const gs_cuda *c)
{
    return c->f16 ? GS_DT_F16 : GS_DT_BF16;
}

int gs_cuda_capturing(const gs_cuda *c)
{
    return c->capturing;
}

/* Reports (and clears) errors that kernels flagged in the mapped word. Only
 * meaningful after the stream has been synchronised. */
static int check_dev_errors(gs_cuda *c)
{
    unsigned bits = *c->err_host;
    if (!bits)
        return 0;
    *c->err_host = 0;
    static const char *const names[] = {"token id outside the embedding table",
                                        "gather index outside the source rows",
                                        "kv slot outside the cache",
                                        "block table page outside the cache",
                                        "inconsistent sequence offsets or lengths",
                                        "invalid vision grid (h, w, H, W)",
                                        "invalid sampler input"};
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        if (bits & (1u << i))
            gs_log_error("cuda: a kernel found an out-of-range index: %s (rows skipped)", names[i]);
    return GS_ERANGE;
}

int gs_cuda_sync(gs_cuda *c)
{
    if (c->capturing) {
        gs_log_error("cuda sync: not allowed while a graph is being captured");
        return GS_EINVAL;
    }
    GS_CU_TRY(cudaStreamSynchronize(c->stream));
    return check_dev_errors(c);
}

int gs_cuda_mem_info(gs_cuda *c, size_t *free_bytes, size_t *total_bytes)
{
    size_t f = 0, t = 0;
    GS_CU_TRY(cudaMemGetInfo(&f, &t));
    if (c->use_pool) {
        /* Memory the pool holds but nothing uses is free for our purposes. */
        uint64_t reserved = 0, used = 0;
        if (cudaMemPoolGetAttribute(c->pool, cudaMemPoolAttrReservedMemCurrent, &reserved) ==
                cudaSuccess &&
            cudaMemPoolGetAttribute(c->pool, cudaMemPoolAttrUsedMemCurrent, &used) == cudaSuccess &&
            reserved > used)
            f += (size_t)(reserved - used);
    }
    if (c->mem_limit) {
        /* --gpu-memory: the cap is the total, and what is left under it
         * bounds what is free (the device may have less). */
        size_t left = c->mem_limit > c->mem_used ? c->mem_limit - c->mem_used : 0;
        f = f < left ? f : left;
        t = c->mem_limit;
    }
    if (free_bytes)
        *free_bytes = f;
    if (total_bytes)
        *total_bytes = t;
    return 0;
}

/* ---- memory ----------------------------------------------------------------- */

void *gs_cuda_alloc(gs_cuda *c, size_t bytes)
{
    if (c->capturing) {
        gs_log_error("cuda alloc: %zu bytes requested during graph capture", bytes);
        return NULL;
    }
    bytes = (bytes + 255) & ~(size_t)255;
    if (bytes == 0)
        bytes = 256;
    if (mem_over(c, bytes, "alloc"))
        return NULL;
    void *p = NULL;
    cudaError_t e = c->use_pool ? cudaMallocAsync(&p, bytes, c->stream) : cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* out-of-memory is not sticky: clear it */
        gs_log_warn("cuda alloc: %zu bytes: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    if (mem_put(c, p, bytes)) {
        pool_free(c, p);
        return NULL;
    }
    if (!gs_cu_aligned(p, 256)) {
        gs_log_error("cuda alloc: pointer %p is not 256-byte aligned", p);
        pool_free(c, p);
        return NULL;
    }
    return p;
}

static void pool_free(gs_cuda *c, void *p)
{
    if (!p)
        return;
    mem_take(c, p);
    cudaError_t e = c->use_pool ? cudaFreeAsync(p, c->stream) : cudaFree(p);
    if (e != cudaSuccess)
        gs_cuda_err(e, "cudaFree", __FILE__, __LINE__);
}

void gs_cuda_free(gs_cuda *c, void *p)
{
    if (!p)
        return;
    bias_drop(c, p);
    pool_free(c, p);
}

/* A buffer that grows on demand (doubling, MiB steps), never during capture. */
static int grow_buf(gs_cuda *c, void **buf, size_t *have, size_t bytes, const char *what,
                    void **out)
{
    *out = NULL;
    if (bytes <= *have && *buf) {
        *out = *buf;
        return 0;
    }
    if (c->capturing) {
        gs_log_error("cuda %s: needs %zu bytes (has %zu) during graph capture; run the "
                     "step once before capturing",
                     what, bytes, *have);
        return GS_ENOMEM;
    }
    size_t want = bytes > 2 * *have ? bytes : 2 * *have;
    want = (want + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
    pool_free(c, *buf); /* stream-ordered: earlier users finish first */
    c->scratch_gen++;   /* captured graphs that used the old one are stale */
    *buf = NULL;
    *have = 0;
    void *p = gs_cuda_alloc(c, want);
    if (!p && want > bytes) /* doubling passed the cap or the device: try the need alone */
        p = gs_cuda_alloc(c, want = (bytes + 255) & ~(size_t)255);
    if (!p)
        return GS_ENOMEM;
    *buf = p;
    *have = want;
    *out = p;
    return 0;
}

int gs_cuda_scratch(gs_cuda *c, size_t bytes, void **out)
{
    return grow_buf(c, &c->scratch, &c->scratch_bytes, bytes, "scratch", out);
}

int gs_cuda_qtile(gs_cuda *c, size_t bytes, void **out)
{
    return grow_buf(c, &c->qtile, &c->qtile_bytes, bytes, "dequantized weight tiles", out);
}

int gs_cuda_upload(gs_cuda *c, void *dst, const void *src, size_t bytes)
{
    if (!bytes)
        return 0;
    GS_CU_CHECK(dst && src, "upload", "NULL pointer");
    GS_CU_CHECK(!c->capturing, "upload", "not allowed during graph capture");
    bias_drop(c, dst);
    GS_CU_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    /* From pageable memory the call returns once src is staged. From pinned
     * memory the copy is still in flight: wait, so the caller may reuse src
     * as kernels.h promises. */
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, src) == cudaSuccess && a.type == cudaMemoryTypeHost)
        GS_CU_TRY(cudaStreamSynchronize(c->stream));
    cudaGetLastError(); /* cudaPointerGetAttributes may leave an error on old drivers */
    return 0;
}

int gs_cuda_download(gs_cuda *c, void *dst, const void *src, size_t bytes)
{
    GS_CU_CHECK(!c->capturing, "download", "not allowed during graph capture");
    if (bytes) {
        GS_CU_CHECK(dst && src, "download", "NULL pointer");
        GS_CU_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    }
    GS_CU_TRY(cudaStreamSynchronize(c->stream));
    return check_dev_errors(c);
}

int gs_cuda_zero(gs_cuda *c, void *dst, size_t bytes)
{
    if (!bytes)
        return 0;
    GS_CU_CHECK(dst, "zero", "NULL pointer");
    bias_drop(c, dst);
    GS_CU_TRY(cudaMemsetAsync(dst, 0, bytes, c->stream));
    return 0;
}

/* ---- weights ------------------------------------------------------------------
 * 16-bit weights are stored in the act dtype (gs_cuda_act_dtype): BF16, or
 * F16 on an F16 context, converted on the device from whatever the source
 * is. Quantized weights keep q and s as kernels.h lays them out. */

static int weight_alloc(gs_cuda *c, size_t n, void **data, const char *op, const char *what)
{
    GS_CU_CHECK(!c->capturing, op, "not allowed during graph capture");
    void *p = NULL;
    cudaError_t e = dev_malloc(c, &p, (n + 255) & ~(size_t)255, op);
    if (e != cudaSuccess) {
        cudaGetLastError();
        gs_log_error("cuda %s: %s (%zu bytes): %s", op, what, n, cudaGetErrorString(e));
        return GS_ENOMEM;
    }
    *data = p;
    return 0;
}

static int shape_ok(int64_t rows, int64_t cols, const char *op)
{
    GS_CU_CHECK(rows > 0 && cols > 0 && rows <= INT64_MAX / 4 / cols, op, "bad shape [%lld, %lld]",
                (long long)rows, (long long)cols);
    return 0;
}

int gs_cuda_weight_upload(gs_cuda *c, const void *host, gs_dtype dt, int64_t rows, int64_t cols,
                          void **data, size_t *bytes)
{
    *data = NULL;
    *bytes = 0;
    GS_CU_CHECK(host, "weight_new", "NULL host data");
    GS_CU_CHECK(dt == GS_DT_BF16 || dt == GS_DT_F16 || dt == GS_DT_F32, "weight_new",
                "unsupported weight dtype %d", (int)dt);
    int rc = shape_ok(rows, cols, "weight_new");
    if (rc)
        return rc;
    const gs_dtype st = gs_cuda_act_dtype(c);
    const size_t n = (size_t)rows * (size_t)cols * 2;
    void *p;
    rc = weight_alloc(c, n, &p, "weight_new", gs_dtype_name(st));
    if (rc)
        return rc;
    if (dt == st) {
        cudaError_t e = cudaMemcpy(p, host, n, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) {
            dev_free(c, p);
            return gs_cuda_err(e, "cudaMemcpy(weight)", __FILE__, __LINE__);
        }
        *data = p;
        *bytes = n;
        return 0;
    }
    /* Other dtypes: upload in chunks of rows through a staging buffer,
     * convert on the device (the whole source never sits in device memory
     * twice). */
    const size_t es = gs_cu_dt_size(dt);
    int64_t chunk = (int64_t)(((size_t)64 << 20) / ((size_t)cols * es));
    if (chunk < 1)
        chunk = 1;
    if (chunk > rows)
        chunk = rows;
    void *stage = gs_cuda_alloc(c, (size_t)chunk * (size_t)cols * es);
    if (!stage) {
        dev_free(c, p);
        return GS_ENOMEM;
    }
    for (int64_t r0 = 0; r0 < rows && !rc; r0 += chunk) {
        int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        rc = gs_cuda_upload(c, stage, (const char *)host + (size_t)r0 * (size_t)cols * es,
                            (size_t)nr * (size_t)cols * es);
        if (!rc) {
            gs_mat src = {stage, dt, nr, cols, cols};
            gs_mat dst = {(char *)p + (size_t)r0 * (size_t)cols * 2, st, nr, cols, cols};
            rc = gs_cuda_copy(c, dst, src);
        }
        /* the next chunk's upload reuses the stage: wait for the conversion */
        if (!rc)
            rc = gs_cuda_sync(c);
    }
    gs_cuda_free(c, stage);
    if (rc) {
        dev_free(c, p);
        return rc;
    }
    *data = p;
    *bytes = n;
    return 0;
}

int gs_cuda_weight_random(gs_cuda *c, int64_t rows, int64_t cols, uint64_t seed, float scale,
                          void **data, size_t *bytes)
{
    *data = NULL;
    *bytes = 0;
    GS_CU_CHECK(scale >= 0.0f && scale < 1e30f, "weight_new_random", "bad scale %g", (double)scale);
    int rc = shape_ok(rows, cols, "weight_new_random");
    if (rc)
        return rc;
    const size_t n = (size_t)rows * (size_t)cols * 2;
    void *p;
    rc = weight_alloc(c, n, &p, "weight_new_random", "BF16");
    if (rc)
        return rc;
    rc = gs_cuda_fill_random_bf16(c, p, rows * cols, seed, scale);
    if (!rc && c->f16) {
        /* F16 storage: the BF16 values (what every backend holds) widened to
         * F16 in place; each BF16 value of a weight in [-1, 1] is exact in
         * F16 unless it is below F16's normal range. Rows one at a time
         * would be slow: convert through the tile buffer in chunks. */
        const int64_t chunk = (int64_t)(((size_t)32 << 20) / ((size_t)cols * 2)) + 1;
        for (int64_t r0 = 0; r0 < rows && !rc; r0 += chunk) {
            const int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
            void *t = NULL;
            rc = gs_cuda_qtile(c, (size_t)nr * (size_t)cols * 2, &t);
            char *w0 = (char *)p + (size_t)r0 * (size_t)cols * 2;
            if (!rc) {
                gs_mat src = {w0, GS_DT_BF16, nr, cols, cols};
                gs_mat tmp = {t, GS_DT_F16, nr, cols, cols};
                rc = gs_cuda_copy(c, tmp, src);
            }
            if (!rc)
                GS_CU_TRY(cudaMemcpyAsync(w0, t, (size_t)nr * (size_t)cols * 2,
                                          cudaMemcpyDeviceToDevice, c->stream));
        }
    }
    if (!rc)
        rc = gs_cuda_sync(c);
    if (rc) {
        dev_free(c, p);
        return rc;
    }
    *data = p;
    *bytes = n;
    return 0;
}

/* q then the scales, in one allocation; the scales 256-byte aligned. */
static int quant_alloc(gs_cuda *c, gs_dtype qdt, int64_t rows, int64_t cols, const char *op,
                       void **data, float **s, size_t *bytes, size_t *qb, size_t *ns)
{
    *data = NULL;
    *s = NULL;
    *bytes = 0;
    GS_CU_CHECK(qdt == GS_DT_Q8 || qdt == GS_DT_Q4, op, "dtype %s is not quantized",
                gs_dtype_name(qdt));
    int rc = shape_ok(rows, cols, op);
    if (rc)
        return rc;
    *qb = gs_quant_q_bytes(qdt, rows, cols);
    *ns = gs_quant_n_scales(qdt, rows, cols);
    const size_t off = (*qb + 255) & ~(size_t)255, n = off + *ns * sizeof(float);
    void *p;
    rc = weight_alloc(c, n, &p, op, gs_dtype_name(qdt));
    if (rc)
        return rc;
    *data = p;
    *s = (float *)((char *)p + off);
    *bytes = n;
    return 0;
}

int gs_cuda_weight_quant_upload(gs_cuda *c, gs_dtype qdt, int64_t rows, int64_t cols, const void *q,
                                const float *s_host, void **data, float **s, size_t *bytes)
{
    GS_CU_CHECK(q && s_host, "weight_new_quant", "NULL host data");
    size_t qb, ns;
    int rc = quant_alloc(c, qdt, rows, cols, "weight_new_quant", data, s, bytes, &qb, &ns);
    if (rc)
        return rc;
    cudaError_t e = cudaMemcpy(*data, q, qb, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaMemcpy(*s, s_host, ns * sizeof(float), cudaMemcpyHostToDevice);
    if (e != cudaSuccess) {
        dev_free(c, *data);
        *data = NULL;
        *s = NULL;
        *bytes = 0;
        return gs_cuda_err(e, "cudaMemcpy(quantized weight)", __FILE__, __LINE__);
    }
    return 0;
}

int gs_cuda_weight_quant_random(gs_cuda *c, gs_dtype qdt, int64_t rows, int64_t cols, uint64_t seed,
                                float scale, void **data, float **s, size_t *bytes)
{
    GS_CU_CHECK(scale >= 0.0f && scale < 1e30f, "weight_new_random", "bad scale %g", (double)scale);
    size_t qb, ns;
    int rc = quant_alloc(c, qdt, rows, cols, "weight_new_random", data, s, bytes, &qb, &ns);
    if (rc)
        return rc;
    rc = gs_cuda_fill_random_quant(c, qdt, *data, *s, rows, cols, seed, scale);
    if (!rc)
        rc = gs_cuda_sync(c);
    if (rc) {
        dev_free(c, *data);
        *data = NULL;
        *s = NULL;
        *bytes = 0;
    }
    return rc;
}

void gs_cuda_weight_release(gs_cuda *c, void *data)
{
    if (!data)
        return;
    cudaError_t e = dev_free(c, data); /* synchronises the device: teardown only */
    if (e != cudaSuccess)
        gs_cuda_err(e, "cudaFree(weight)", __FILE__, __LINE__);
}

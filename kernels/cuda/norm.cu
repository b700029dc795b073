/* norm.cu - RMSNorm, fused residual-add + RMSNorm, LayerNorm.
 *
 * One thread block per row (grid = rows), blockDim = the row's 16-byte
 * vectors rounded up to a warp, at most 256 threads. Fast path: every view
 * BF16, 16-byte aligned rows, cols % 8 == 0: 8 elements per 16-byte load.
 * Otherwise a scalar path that takes any of F32/BF16/F16 per view.
 * Statistics in FP32 with a fixed-order block reduction (deterministic).
 * Each thread touches the same elements in every pass, so out may alias x
 * (and resid) in place.
 *
 * Numerics follow the reference (glm4v-spec 3.2): RMSNorm normalises in
 * FP32, rounds to the input dtype, then multiplies by the weight (one more
 * rounding to the output dtype); the fused residual add rounds the sum to
 * the residual's dtype first, as a BF16 tensor add would. LayerNorm computes
 * (x - mean) * rstd * w + b in FP32 with the biased variance, one rounding
 * (b optional). */
#include "kernels/cuda/common.cuh"

typedef struct {
    const void *x;
    void *out;
    void *resid; /* add_rmsnorm only */
    const float *w, *b;
    int64_t rows, n, ldx, ldo, ldr;
    int xdt, odt, rdt;
    float eps;
} norm_args;

/* V elements starting at element j of a row. V = 8: BF16, 16-byte aligned. */
template <int V>
__device__ __forceinline__ void ldv(const void *row, int dt, int64_t j, float f[V])
{
    if (V == 8) {
        uint4 u = *(const uint4 *)((const __nv_bfloat16 *)row + j);
        gs_unpack8(u, f);
    } else {
        f[0] = gs_ld(row, dt, j);
    }
}

template <int V>
__device__ __forceinline__ void stv(void *row, int dt, int64_t j, const float f[V])
{
    if (V == 8)
        *(uint4 *)((__nv_bfloat16 *)row + j) = gs_pack8(f);
    else
        gs_st(row, dt, j, f[0]);
}

template <int V>
__device__ __forceinline__ void ldw(const float *w, int64_t j, float f[V])
{
    if (V == 8) {
        float4 a = *(const float4 *)(w + j), b = *(const float4 *)(w + j + 4);
        f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
        f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
    } else {
        f[0] = w[j];
    }
}

/* The value a tensor of dtype dt would hold. */
__device__ __forceinline__ float round_dt(float v, int dt)
{
    if (dt == GS_DT_BF16)
        return gs_bf(v);
    if (dt == GS_DT_F16)
        return __half2float(__float2half_rn(v));
    return v;
}

/* MODE 0: rmsnorm, 1: add + rmsnorm, 2: layernorm. */
template <int V, int MODE>
__global__ void gs_norm_kernel(norm_args a)
{
    __shared__ float sh[32];
    const int64_t row = blockIdx.x;
    if (row >= a.rows)
        return;
    const void *xr = (const char *)a.x + (size_t)(row * a.ldx) * gs_cu_dt_size((gs_dtype)a.xdt);
    void *outr = (char *)a.out + (size_t)(row * a.ldo) * gs_cu_dt_size((gs_dtype)a.odt);
    void *rr = MODE == 1 ? (char *)a.resid + (size_t)(row * a.ldr) *
                                                 gs_cu_dt_size((gs_dtype)a.rdt)
                         : NULL;
    const int64_t step = (int64_t)blockDim.x * V;
    float f[V], g[V];

    if (MODE == 2) {
        float s = 0.0f;
        for (int64_t j = (int64_t)threadIdx.x * V; j < a.n; j += step) {
            ldv<V>(xr, a.xdt, j, f);
#pragma unroll
            for (int i = 0; i < V; i++)
                s += f[i];
        }
        const float mean = gs_block_sum(s, sh) / (float)a.n;
        float q = 0.0f;
        for (int64_t j = (int64_t)threadIdx.x * V; j < a.n; j += step) {
            ldv<V>(xr, a.xdt, j, f);
#pragma unroll
            for (int i = 0; i < V; i++)
                q += (f[i] - mean) * (f[i] - mean);
        }
        const float rstd = 1.0f / sqrtf(gs_block_sum(q, sh) / (float)a.n + a.eps);
        for (int64_t j = (int64_t)threadIdx.x * V; j < a.n; j += step) {
            ldv<V>(xr, a.xdt, j, f);
            ldw<V>(a.w, j, g);
            float bb[V];
            if (a.b)
                ldw<V>(a.b, j, bb);
            else
                for (int i = 0; i < V; i++)
                    bb[i] = 0.0f;
#pragma unroll
            for (int i = 0; i < V; i++)
                f[i] = (f[i] - mean) * rstd * g[i] + bb[i];
            stv<V>(outr, a.odt, j, f);
        }
        return;
    }

    /* RMSNorm; with MODE 1 the residual sum is formed (and stored) first. */
    const int in_dt = MODE == 1 ? a.rdt : a.xdt;
    float ss = 0.0f;
    for (int64_t j = (int64_t)threadIdx.x * V; j < a.n; j += step) {
        ldv<V>(xr, a.xdt, j, f);
        if (MODE == 1) {
            ldv<V>(rr, a.rdt, j, g);
#pragma unroll
            for (int i = 0; i < V; i++)
                f[i] = round_dt(g[i] + f[i], a.rdt);
            stv<V>(rr, a.rdt, j, f);
        }
#pragma unroll
        for (int i = 0; i < V; i++)
            ss += f[i] * f[i];
    }
    const float inv = 1.0f / sqrtf(gs_block_sum(ss, sh) / (float)a.n + a.eps);
    const void *src = MODE == 1 ? (const void *)rr : xr;
    for (int64_t j = (int64_t)threadIdx.x * V; j < a.n; j += step) {
        ldv<V>(src, in_dt, j, f);
        ldw<V>(a.w, j, g);
#pragma unroll
        for (int i = 0; i < V; i++)
            f[i] = round_dt(f[i] * inv, in_dt) * g[i];
        stv<V>(outr, a.odt, j, f);
    }
}

template <int MODE>
static int launch_norm(gs_cuda *c, const norm_args &a, int v8, const char *op)
{
    if (a.rows == 0 || a.n == 0)
        return 0;
    GS_CU_CHECK(a.rows <= 0x7fffffff, op, "too many rows (%lld)", (long long)a.rows);
    const int V = v8 ? 8 : 1;
    int64_t vecs = (a.n + V - 1) / V;
    int threads = (int)(vecs > 256 ? 256 : ((vecs + 31) / 32) * 32);
    const unsigned grid = (unsigned)a.rows;
    if (v8)
        gs_norm_kernel<8, MODE><<<grid, threads, 0, c->stream>>>(a);
    else
        gs_norm_kernel<1, MODE><<<grid, threads, 0, c->stream>>>(a);
    GS_CU_LAUNCHED(op);
    return 0;
}

static int check_vec(const gs_vec *v, int64_t n, const char *op, const char *what)
{
    GS_CU_CHECK(v && v->data && v->n == n, op, "%s: length %lld, expected %lld", what,
                (long long)(v ? v->n : -1), (long long)n);
    return 0;
}

int gs_cuda_rmsnorm(gs_cuda *c, gs_mat out, gs_mat x, const gs_vec *w, float eps)
{
    const char *op = "rmsnorm";
    GS_CU_CHECK(gs_cu_mat_ok(out) && gs_cu_mat_ok(x), op, "bad matrix view");
    GS_CU_CHECK(out.rows == x.rows && out.cols == x.cols, op, "out/x shapes differ");
    GS_CU_CHECK(eps >= 0.0f, op, "eps < 0");
    int rc = check_vec(w, x.cols, op, "weight");
    if (rc)
        return rc;
    norm_args a = {x.data, out.data, NULL, w->data, NULL, x.rows, x.cols,
                   x.stride, out.stride, 0, x.dt, out.dt, 0, eps};
    const int v8 = gs_cu_vec8_ok(x) && gs_cu_vec8_ok(out) && gs_cu_aligned(w->data, 16);
    return launch_norm<0>(c, a, v8, op);
}

int gs_cuda_add_rmsnorm(gs_cuda *c, gs_mat out, gs_mat resid, gs_mat x, const gs_vec *w,
                        float eps)
{
    const char *op = "add_rmsnorm";
    GS_CU_CHECK(gs_cu_mat_ok(out) && gs_cu_mat_ok(x) && gs_cu_mat_ok(resid), op,
                "bad matrix view");
    GS_CU_CHECK(out.rows == x.rows && out.cols == x.cols && resid.rows == x.rows &&
                    resid.cols == x.cols,
                op, "out/resid/x shapes differ");
    GS_CU_CHECK(eps >= 0.0f, op, "eps < 0");
    int rc = check_vec(w, x.cols, op, "weight");
    if (rc)
        return rc;
    norm_args a = {x.data, out.data, resid.data, w->data, NULL, x.rows, x.cols,
                   x.stride, out.stride, resid.stride, x.dt, out.dt, resid.dt, eps};
    const int v8 = gs_cu_vec8_ok(x) && gs_cu_vec8_ok(out) && gs_cu_vec8_ok(resid) &&
                   gs_cu_aligned(w->data, 16);
    return launch_norm<1>(c, a, v8, op);
}

int gs_cuda_layernorm(gs_cuda *c, gs_mat out, gs_mat x, const gs_vec *w, const gs_vec *b,
                      float eps)
{
    const char *op = "layernorm";
    GS_CU_CHECK(gs_cu_mat_ok(out) && gs_cu_mat_ok(x), op, "bad matrix view");
    GS_CU_CHECK(out.rows == x.rows && out.cols == x.cols, op, "out/x shapes differ");
    GS_CU_CHECK(eps >= 0.0f, op, "eps < 0");
    const int has_b = b && b->data;
    int rc = check_vec(w, x.cols, op, "weight");
    if (!rc && has_b)
        rc = check_vec(b, x.cols, op, "bias");
    if (rc)
        return rc;
    norm_args a = {x.data, out.data, NULL, w->data, has_b ? b->data : NULL, x.rows, x.cols,
                   x.stride, out.stride, 0, x.dt, out.dt, 0, eps};
    const int v8 = gs_cu_vec8_ok(x) && gs_cu_vec8_ok(out) && gs_cu_aligned(w->data, 16) &&
                   (!has_b || gs_cu_aligned(b->data, 16));
    return launch_norm<2>(c, a, v8, op);
}

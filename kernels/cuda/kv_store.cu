/* kv_store.cu - writes this step's k and v rows into the paged cache.
 *
 * Cache layout (kernels.h): k, v each [n_pages, page_size, n_kv_heads,
 * head_dim] BF16, so token slot s owns the contiguous n_kv_heads * head_dim
 * elements at s * n_kv_heads * head_dim. One thread per (row, 8 elements)
 * with 16-byte copies when the views allow it, else per element (any float
 * dtype in, BF16 out). slot < 0 skips the row; a slot past the cache skips
 * it too and sets the error word (GS_ERANGE at the next sync). */
#include "kernels/cuda/common.cuh"

typedef struct {
    __nv_bfloat16 *kc, *vc;
    const void *k, *v;
    const int32_t *slots;
    int64_t rows, width, ldk, ldv, n_slots;
    int kdt, vdt;
    unsigned *err;
} kvs_args;

template <int V>
__global__ void gs_kv_store_kernel(kvs_args a)
{
    const int64_t j = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (j >= a.width)
        return;
    for (int64_t r = blockIdx.y; r < a.rows; r += gridDim.y) {
        const int32_t s = a.slots[r];
        if (s < 0)
            continue;
        if ((int64_t)s >= a.n_slots) {
            if (j == 0)
                gs_dev_error(a.err, GS_CUDA_ERR_KV_SLOT);
            continue;
        }
        const int64_t o = (int64_t)s * a.width + j;
        if (V == 8) {
            *(uint4 *)(a.kc + o) = *(const uint4 *)((const __nv_bfloat16 *)a.k + r * a.ldk + j);
            *(uint4 *)(a.vc + o) = *(const uint4 *)((const __nv_bfloat16 *)a.v + r * a.ldv + j);
        } else {
            a.kc[o] = __float2bfloat16_rn(gs_ld(a.k, a.kdt, r * a.ldk + j));
            a.vc[o] = __float2bfloat16_rn(gs_ld(a.v, a.vdt, r * a.ldv + j));
        }
    }
}

int gs_cuda_kv_store(gs_cuda *c, const gs_kv_layer *kv, gs_mat k, gs_mat v,
                     const int32_t *slots)
{
    const char *op = "kv_store";
    GS_CU_CHECK(kv && kv->k && kv->v && gs_cu_mat_ok(k) && gs_cu_mat_ok(v), op,
                "bad arguments");
    GS_CU_CHECK(kv->n_pages > 0 && kv->page_size > 0 && kv->n_kv_heads > 0 &&
                    kv->head_dim > 0,
                op, "bad cache geometry");
    const int64_t width = (int64_t)kv->n_kv_heads * kv->head_dim;
    GS_CU_CHECK(k.cols == width && v.cols == width && k.rows == v.rows, op,
                "k [%lld, %lld] / v [%lld, %lld] vs cache width %lld", (long long)k.rows,
                (long long)k.cols, (long long)v.rows, (long long)v.cols, (long long)width);
    if (k.rows == 0)
        return 0;
    GS_CU_CHECK(slots, op, "NULL slots");
    kvs_args a = {(__nv_bfloat16 *)kv->k, (__nv_bfloat16 *)kv->v, k.data, v.data, slots,
                  k.rows, width, k.stride, v.stride,
                  (int64_t)kv->n_pages * kv->page_size, k.dt, v.dt, c->err_dev};
    const int v8 = gs_cu_vec8_ok(k) && gs_cu_vec8_ok(v) && gs_cu_aligned(kv->k, 16) &&
                   gs_cu_aligned(kv->v, 16);
    const int V = v8 ? 8 : 1;
    dim3 grid(gs_cu_blocks(width, 128 * V, 0x7fffffff), (unsigned)(k.rows < 65535 ? k.rows : 65535));
    if (v8)
        gs_kv_store_kernel<8><<<grid, 128, 0, c->stream>>>(a);
    else
        gs_kv_store_kernel<1><<<grid, 128, 0, c->stream>>>(a);
    GS_CU_LAUNCHED(op);
    return 0;
}

/* quant_weight.c - quantized weights (GS_DT_Q8, GS_DT_Q4) on the CPU
 * backend: copied, wrapped in place, or made at random.
 *
 * The CPU keeps kernels.h's host layout as it is (q row-major, then the F32
 * scales), so a pre-quantized checkpoint's mapping can be used in place
 * and matmul_q.c reads one layout only. An owned weight is one block of
 * backend memory: q, padding to 64 bytes, scales.
 * Threading: called from the engine thread; random weights fan out over
 * the pool. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/cpu/cpu_impl.h"

/* Offset of the scales in an owned block: after q, 64-byte aligned. */
static size_t scales_offset(gs_dtype qdt, int64_t rows, int64_t cols)
{
    return (gs_quant_q_bytes(qdt, rows, cols) + 63) & ~(size_t)63;
}

/* A new owned weight with room for q and s (uninitialised). */
static int quant_alloc(gs_cpu *c, gs_dtype qdt, int64_t rows, int64_t cols, gs_cpu_weight **out)
{
    const size_t qb = gs_quant_q_bytes(qdt, rows, cols), ns = gs_quant_n_scales(qdt, rows, cols);
    const size_t off = scales_offset(qdt, rows, cols);
    gs_cpu_weight *w = calloc(1, sizeof *w);
    if (!w)
        return GS_ENOMEM;
    w->data = gs_cpu_mem_alloc(c, off + ns * sizeof(float));
    if (!w->data) {
        free(w);
        gs_log_error("cpu: cannot allocate a [%lld x %lld] %s weight (%zu bytes)", (long long)rows,
                     (long long)cols, gs_dtype_name(qdt), off + ns * sizeof(float));
        return GS_ENOMEM;
    }
    w->scales = (const float *)((char *)w->data + off);
    w->h.rows = rows;
    w->h.cols = cols;
    w->h.dt = qdt;
    w->h.bytes = qb + ns * sizeof(float);
    *out = w;
    return 0;
}

int gs_cpu_weight_new_quant(gs_backend *be, gs_dtype qdt, int64_t rows, int64_t cols, const void *q,
                            const float *s, gs_weight **out)
{
    gs_cpu_weight *w;
    int rc = quant_alloc(gs_cpu_of(be), qdt, rows, cols, &w);
    if (rc)
        return rc;
    memcpy(w->data, q, gs_quant_q_bytes(qdt, rows, cols));
    memcpy((void *)w->scales, s, gs_quant_n_scales(qdt, rows, cols) * sizeof(float));
    *out = &w->h;
    return 0;
}

/* q and s stay the caller's for the weight's life (a checkpoint mapping);
 * no op writes them. q needs no alignment: the kernels load it unaligned. */
int gs_cpu_weight_wrap_quant(gs_backend *be, gs_dtype qdt, int64_t rows, int64_t cols,
                             const void *q, const float *s, gs_weight **out)
{
    gs_cpu_weight *w = calloc(1, sizeof *w);
    if (!w)
        return GS_ENOMEM;
    w->h.rows = rows;
    w->h.cols = cols;
    w->h.dt = qdt;
    w->h.bytes = gs_quant_q_bytes(qdt, rows, cols) + gs_quant_n_scales(qdt, rows, cols) * 4;
    w->data = (void *)q;
    w->scales = s;
    w->borrowed = 1;
    *out = &w->h;
    return 0;
}

typedef struct {
    gs_cpu *c;
    gs_cpu_weight *w;
    uint64_t seed;
    float scale;
} rand_job;

/* Rows [r0, r1): the F32 values gs_weight_new_random makes for F32, each
 * row quantized on its own by gs_quantize (rows are independent in both
 * formats, so row by row is the same as the whole matrix at once). */
static void random_rows(void *ctx, int64_t r0, int64_t r1, int tid)
{
    rand_job *j = ctx;
    const gs_dtype qdt = j->w->h.dt;
    const int64_t cols = j->w->h.cols;
    const size_t rq = gs_quant_q_bytes(qdt, 1, cols), rs = gs_quant_n_scales(qdt, 1, cols);
    float *row = gs_cpu_scratch(j->c, tid);
    for (int64_t r = r0; r < r1; r++) {
        const uint64_t base = (uint64_t)r * (uint64_t)cols;
        for (int64_t c = 0; c < cols; c++)
            row[c] = gs_rand_uniform(j->seed, base + (uint64_t)c, j->scale);
        /* Finite values in, so it cannot fail. */
        (void)gs_quantize(qdt, row, GS_DT_F32, 1, cols, (char *)j->w->data + (size_t)r * rq,
                          (float *)j->w->scales + (size_t)r * rs);
    }
}

int gs_cpu_weight_random_quant(gs_cpu *c, gs_dtype qdt, int64_t rows, int64_t cols, uint64_t seed,
                               float scale, gs_weight **out)
{
    gs_cpu_weight *w;
    int rc = gs_cpu_scratch_reserve(c, (size_t)cols * sizeof(float));
    if (rc)
        return rc;
    rc = quant_alloc(c, qdt, rows, cols, &w);
    if (rc)
        return rc;
    rand_job j = {c, w, seed, scale};
    gs_cpu_parallel(c, rows, gs_cpu_grain(c, rows, 4, 4), random_rows, &j);
    *out = &w->h;
    return 0;
}

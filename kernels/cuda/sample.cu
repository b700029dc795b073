/* sample.cu - gs_k_sample on the GPU (kernels.h has the semantics):
 * penalties, temperature, top-k, top-p, min-p and a Philox draw, one
 * 1024-thread block per logits row (body: sample_kernel.cuh).
 *
 * After the penalties and the argmax, the row is rewritten in place as
 * unnormalised probabilities p = exp((l - max) / T) (0 below 1e-12 of the
 * best), which are non-negative floats, so their bit patterns sort like
 * their values. Thresholds are found by radix select over those bits
 * (four passes of 8 bits, shared-memory histograms): top-k counts ids,
 * top-p sums masses in 2^-40 fixed point (integer atomics: the result does
 * not depend on thread order). The draw walks the vocabulary in id order:
 * each thread owns a contiguous chunk, a block-wide exclusive scan of the
 * chunk masses finds the chunk holding the target, and that thread scans
 * it. A row with nothing finite gets -1 (no device error); a penalty id
 * outside [0, vocab) is skipped and reported as GS_ERANGE at the next sync.
 * Every input is a device pointer, so a captured graph draws new numbers
 * when the caller rewrites the rows (offset) before each replay.
 * Owns nothing beyond the launch. */
#include "kernels/cuda/sample_kernel.cuh"

__global__ void __launch_bounds__(SAMPLE_THREADS) gs_sample_kernel(sample_args a)
{
    __shared__ sample_smem sm;
    sample_row(a, sm);
}

int gs_cuda_k_sample(gs_cuda *c, int32_t *out_ids, gs_mat logits, const gs_sample_row *rows,
                     const int32_t *pen_off, const int32_t *pen_ids, const int32_t *pen_cnt)
{
    const char *op = "sample";
    GS_CU_CHECK(logits.dt == GS_DT_F32 && logits.rows >= 0 && logits.cols > 0 &&
                    logits.cols <= INT32_MAX && logits.rows <= INT32_MAX &&
                    logits.stride >= logits.cols,
                op, "bad logits view");
    if (logits.rows == 0)
        return 0;
    GS_CU_CHECK(logits.data && rows && out_ids, op, "NULL device pointer");
    GS_CU_CHECK(!pen_off || (pen_ids && pen_cnt), op, "penalty lists incomplete");
    sample_args a = {(float *)logits.data,
                     logits.stride,
                     (int)logits.rows,
                     (int)logits.cols,
                     rows,
                     pen_off,
                     pen_ids,
                     pen_cnt,
                     out_ids,
                     c->err_dev};
    gs_sample_kernel<<<(unsigned)logits.rows, SAMPLE_THREADS, 0, c->stream>>>(a);
    GS_CU_LAUNCHED(op);
    return 0;
}

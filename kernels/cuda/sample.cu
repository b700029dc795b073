/* sample.cu - GPU sampling (sample.h): penalties, temperature, top-k,
 * top-p, min-p and a Philox draw, one 1024-thread block per logits row.
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
 * it. Owns nothing beyond the launch. */
#include "kernels/cuda/sample_kernel.cuh"

double gs_cuda_sample_uniform(uint64_t seed, uint64_t offset)
{
    return uniform01(seed, offset);
}

__global__ void __launch_bounds__(SAMPLE_THREADS) gs_sample_kernel(sample_args a)
{
    __shared__ sample_smem sm;
    sample_row(a, sm);
}

int gs_cuda_sample(gs_backend *be, const gs_cuda_sample_args *sa)
{
    const char *op = "sample";
    gs_cuda *c = gs_cuda_of(be);
    if (!c) {
        gs_log_error("cuda sample: not a CUDA backend");
        return GS_ENOTSUP;
    }
    GS_CU_CHECK(sa && sa->n_rows >= 0 && sa->vocab > 0 && sa->ld >= sa->vocab, op,
                "bad arguments");
    if (sa->n_rows == 0)
        return 0;
    GS_CU_CHECK(sa->logits && sa->params && sa->out_ids, op, "NULL device pointer");
    GS_CU_CHECK(!sa->pen_off || (sa->pen_ids && sa->pen_cnt), op, "penalty lists incomplete");
    sample_args a = {sa->logits, sa->ld, sa->n_rows, sa->vocab, sa->params,
                     sa->pen_off, sa->pen_ids, sa->pen_cnt, sa->out_ids, c->err_dev};
    gs_sample_kernel<<<(unsigned)sa->n_rows, SAMPLE_THREADS, 0, c->stream>>>(a);
    GS_CU_LAUNCHED(op);
    return 0;
}

/* sample.h - next-token sampling on the GPU (CUDA backend only).
 *
 * For a batch of F32 logit rows already in device memory, applies the same
 * processors as worker/sampler.h, in the same order, and returns only the
 * chosen token ids (n_rows int32 in device memory), so that a decode step
 * downloads 4 bytes per sequence instead of 600 KB of logits:
 *   repetition penalty (ids in pen_ids: logit > 0 -> logit / p, else
 *   logit * p) -> presence / frequency penalties (ids with pen_cnt > 0:
 *   logit -= presence + frequency * count) -> greedy argmax when
 *   temperature <= 0 (ties to the lowest id, NaN never wins) -> else
 *   / temperature -> candidates within a factor 1e-12 of the best
 *   probability -> top-k -> top-p -> min-p -> one draw.
 * Differences from the host sampler, by design: ids tied exactly at the
 * top-k / top-p boundary are all kept (the host keeps the lowest ids);
 * masses are summed in 2^-40 fixed point (deterministic, independent of
 * thread order); the draw uses Philox4x32-10 keyed by (seed, offset), so the
 * same (seed, offset, logits) always gives the same id, but not the id the
 * host sampler's xoshiro stream would give.
 *
 * Launch: one 1024-thread block per row; radix selects (4 passes of 8 bits)
 * for the top-k and top-p thresholds; greedy rows stop after the argmax.
 * Not yet tuned (see docs/cuda.md): ~10-15 passes over the row from L2.
 *
 * Threading: as the backend (one thread at a time). Graph capture: all
 * inputs are device pointers, so a captured call draws new numbers when the
 * caller rewrites `params` (e.g. offset + 1) before each replay. */
#ifndef GS_CUDA_SAMPLE_H
#define GS_CUDA_SAMPLE_H

#include <stdint.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per-row parameters, stored in device memory (same layout on host and
 * device: plain 4/8-byte fields). Ranges as gs_sampling_validate. */
typedef struct {
    float temperature;        /* <= 0: greedy */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1 (or <= 0): off */
    float min_p;              /* <= 0: off */
    float repetition_penalty; /* 1 (or <= 0): off */
    float presence_penalty;   /* 0: off */
    float frequency_penalty;  /* 0: off */
    int32_t pad_;             /* keeps seed 8-byte aligned; set to 0 */
    uint64_t seed;
    uint64_t offset; /* draw counter: use the number of tokens generated so far */
} gs_cuda_sample_row;

typedef struct {
    int32_t n_rows, vocab;
    float *logits;                    /* [n_rows, ld] F32 device memory; OVERWRITTEN (scratch) */
    int64_t ld;                       /* row stride in elements (>= vocab) */
    const gs_cuda_sample_row *params; /* [n_rows] device memory */
    /* Penalty lists, CSR, device memory; pen_off NULL: no penalties. Row r
     * owns pen_ids / pen_cnt[pen_off[r] .. pen_off[r+1]): each id at most
     * once per row (prompt and output ids merged); pen_cnt = occurrences
     * in the output (0: prompt only). */
    const int32_t *pen_off; /* [n_rows + 1] */
    const int32_t *pen_ids;
    const int32_t *pen_cnt;
    int32_t *out_ids; /* [n_rows] device memory: the chosen ids, -1 if a row
                         was all NaN / -inf (also GS_ERANGE at the next sync) */
} gs_cuda_sample_args;

/* Queues the sampling kernel on the backend's stream. Borrows every
 * pointer until the work is done (the next sync / download). GS_EINVAL for
 * bad arguments, GS_ENOTSUP when `be` is not a CUDA backend. */
int gs_cuda_sample(gs_backend *be, const gs_cuda_sample_args *a);

/* Philox4x32-10 uniform double in [0, 1) for (seed, offset): what the
 * kernel draws for a row; exposed for tests. */
double gs_cuda_sample_uniform(uint64_t seed, uint64_t offset);

#ifdef __cplusplus
}
#endif

#endif

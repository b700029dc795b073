/* bench_cuda.h - the two device-side reference measurements of bench_gpu,
 * written in CUDA (bench_cuda.cu) and called from C. Built only when
 * GS_CUDA is on (bench_gpu.c sees GS_BENCH_HAVE_CUDA).
 *
 * Both functions select `device` on the calling thread, allocate what they
 * need, time with CUDA events (median of `reps` runs after a warm-up) and
 * free everything before returning. Every CUDA / cuBLASLt status is
 * checked: on failure they return -1 with a message naming the call in
 * err[0..errlen) and leave the outputs untouched. Not thread-safe with
 * respect to other work on the same device (they synchronise the device). */
#ifndef GS_BENCH_CUDA_H
#define GS_BENCH_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Read bandwidth of a read-only streaming kernel over `bytes` of device
 * memory (16-byte loads, grid-stride, nothing written but one word per
 * thread that never fires), and cudaMemcpy device-to-device bandwidth
 * over bytes/2 -> bytes/2, counted as bytes read + bytes written. GB/s
 * (1e9). */
int gs_bench_cuda_bandwidth(int device, size_t bytes, int reps, double *read_gbs, double *d2d_gbs,
                            char *err, size_t errlen);

/* cuBLASLt BF16 x BF16 -> BF16 GEMM, FP32 compute, n x n x n, the
 * heuristic's first algorithm with a 32 MiB workspace. TFLOP/s (2 n^3 per
 * GEMM, 1e12). */
int gs_bench_cuda_gemm(int device, int n, int reps, double *tflops, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif

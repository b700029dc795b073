/* gemm_bf16.h - prefill GEMMs with BF16 weights on the CPU's BF16 matrix
 * units (AVX512-BF16 dot products, AMX tiles, Arm BF16 MMLA), through
 * oneDNN's matmul. matmul.c calls it for m > 32 and falls back to its F32
 * SGEMM path when it answers GS_ENOTSUP (no oneDNN in the build, a CPU or
 * library build without BF16 kernels, a weight dtype it does not take, or
 * the F32 path forced by GS_TUNE_CPU_GEMM_F32).
 *
 * Numerics: x is rounded to BF16 (round to nearest even) once per call,
 * products are summed in F32, the result is F32: relative error against
 * an F32 GEMM of about 2^-9 * sqrt(k) of the row's magnitude. Results are
 * deterministic for a given thread count and shape. */
#ifndef GS_CPU_GEMM_BF16_H
#define GS_CPU_GEMM_BF16_H

#include "kernels/cpu/cpu_impl.h"

/* out[m, n] (+)= x[m, k] . W[n, k]^T (+ bias[n]), as gs_k_matmul (accum:
 * GS_MM_ACCUM), over c's pool. 0 when done; GS_ENOTSUP when this path does
 * not apply (nothing written: the caller runs its own); GS_ENOMEM. Borrows
 * everything; never writes to w. */
int gs_cpu_gemm_bf16(gs_cpu *c, gs_mat out, gs_mat x, const gs_cpu_weight *w, const float *bias,
                     int accum);

/* 1 when this build and CPU run BF16 GEMMs on the matrix units and they
 * are not switched off (benchmarks and tests report which path ran). */
int gs_cpu_gemm_bf16_active(void);

/* The CPU backend's gs_backend_set_tuning: GS_TUNE_CPU_GEMM_F32 switches
 * this path off. Process-wide (every CPU backend), as OpenBLAS's own
 * settings are: the CPU backend keeps no per-handle knobs. */
void gs_cpu_set_tuning(gs_backend *be, const gs_backend_tuning *t);

#endif

/* quant_dot.h - the integer kernels behind matmul_q.c (decode and prefill), one
 * per instruction set (quant_dot.c: portable C and the run-time choice;
 * quant_dot_x86.c: AVX2, AVX-VNNI, AVX-512 VNNI; quant_dot_arm.c: NEON
 * sdot, smmla).
 *
 * A tile is nr weight rows x mr quantized rows of x. For each full group g
 * (GS_Q4_GROUP columns) a kernel writes the exact int32
 *   d[(t * ds + g) * GS_QMR + r] = sum over the group of qw[t, c] * qx[r, c]
 * (Q4: qw = nibble - 8), and 0 for r in [mr, GS_QMR): the GS_QMR dots of
 * one weight row and group lie together, as the transposed reductions
 * make them and the F32 code after them reads them. Every kernel gives the
 * same integers, so that code (matmul_q.c) gives the same bits whichever
 * ran.
 * x layout (made by matmul_q.c): each group is GS_Q4_GROUP int8, zero
 * padded; for Q4 the group's even columns come first, then its odd ones
 * (the low and high nibbles of the weight's bytes, in byte order).
 * Internal to kernels/cpu. */
#ifndef GS_CPU_QUANT_DOT_H
#define GS_CPU_QUANT_DOT_H

#include <stdint.h>

#include "kernels/cpu/cpu_impl.h"

#define GS_QNR 4 /* weight rows per tile (or 1 for the last ones) */
#define GS_QMR 4 /* rows of x per tile (1 .. GS_QMR) */

typedef struct {
    const uint8_t *w[GS_QNR]; /* weight rows' q from column 0 (any alignment) */
    const int8_t *x[GS_QMR];  /* quantized x rows from group 0 */
    /* sum of group g's qx of row r at sumx[g * sumx_ld + r], for every
     * r < GS_QMR (0 past mr) */
    const int32_t *sumx;
    int64_t sumx_ld;
    int nr, mr;  /* nr: 1 or GS_QNR; mr: 1 .. GS_QMR */
    int64_t ngf; /* full groups (>= 1) */
    int64_t ds;  /* groups per weight row in d (>= ngf) */
    int32_t *d;  /* out: [nr, ds, GS_QMR] */
} gs_qtile;

/* dt: GS_DT_Q8 or GS_DT_Q4. */
typedef void (*gs_qdot_fn)(gs_dtype dt, const gs_qtile *t);

/* The kernel of the ISA in use (gs_cpu_quant_isa_force; the best one the
 * CPU reports unless forced). */
gs_qdot_fn gs_cpu_quant_dot_fn(void);

void gs_qdot_c(gs_dtype dt, const gs_qtile *t);
#if defined(__x86_64__) && defined(__GNUC__)
#define GS_QDOT_X86 1
void gs_qdot_avx2(gs_dtype dt, const gs_qtile *t);
void gs_qdot_avxvnni(gs_dtype dt, const gs_qtile *t);
void gs_qdot_avx512vl(gs_dtype dt, const gs_qtile *t);
void gs_qdot_avx512vnni(gs_dtype dt, const gs_qtile *t);
#endif
/* Clang before 16 declares the dotprod / i8mm intrinsics only when the
 * whole file is built for them, not under a target attribute: portable C
 * there. */
#if defined(__aarch64__) && defined(__GNUC__) && defined(__linux__) &&                             \
    (!defined(__clang__) || __clang_major__ >= 16)
#define GS_QDOT_ARM 1
void gs_qdot_neon_dot(gs_dtype dt, const gs_qtile *t);
void gs_qdot_neon_i8mm(gs_dtype dt, const gs_qtile *t);
#endif

#endif

/* quant_dot.c - the portable integer kernel of quant_dot.h and the choice
 * of kernel: the best instruction set the CPU reports (cpuid through
 * __builtin_cpu_supports on x86-64, getauxval's HWCAP bits on aarch64
 * Linux), unless a test forced one with gs_cpu_quant_isa_force.
 * Threading: the choice is made once (first matmul or force) and read by
 * every thread; forcing it while a matmul runs is not allowed. */
#include <stdatomic.h>

#include "kernels/cpu/quant_dot.h"

#ifdef GS_QDOT_X86
#include <cpuid.h>
#endif
#ifdef GS_QDOT_ARM
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1ul << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1ul << 13)
#endif
#endif

/* The reference: plain loops, exact int32 sums. */
void gs_qdot_c(gs_dtype dt, const gs_qtile *T)
{
    for (int t = 0; t < T->nr; t++)
        for (int64_t g = 0; g < T->ngf; g++) {
            int32_t *d = T->d + (t * T->ds + g) * GS_QMR;
            for (int r = 0; r < GS_QMR; r++) {
                int32_t acc = 0;
                if (r >= T->mr) {
                    d[r] = 0;
                    continue;
                }
                const int8_t *x = T->x[r] + g * GS_Q4_GROUP;
                if (dt == GS_DT_Q8) {
                    const int8_t *w = (const int8_t *)T->w[t] + g * GS_Q4_GROUP;
                    for (int i = 0; i < GS_Q4_GROUP; i++)
                        acc += (int32_t)w[i] * x[i];
                } else {
                    const uint8_t *w = T->w[t] + g * (GS_Q4_GROUP / 2);
                    for (int i = 0; i < GS_Q4_GROUP / 2; i++)
                        acc += (int32_t)(w[i] & 15) * x[i] +
                               (int32_t)(w[i] >> 4) * x[GS_Q4_GROUP / 2 + i];
                    acc -= 8 * T->sumx[g * T->sumx_ld + r]; /* nibbles are q + 8 */
                }
                d[r] = acc;
            }
        }
}

int gs_cpu_quant_isa_supported(gs_cpu_qisa isa)
{
    switch (isa) {
    case GS_QISA_C:
        return 1;
#ifdef GS_QDOT_X86
    case GS_QISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    case GS_QISA_AVXVNNI: {
        /* CPUID.(7, 1):EAX bit 4; not every compiler's
         * __builtin_cpu_supports knows the name */
        unsigned a, b, c, d;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __get_cpuid_count(7, 1, &a, &b, &c, &d) &&
               ((a >> 4) & 1);
    }
    case GS_QISA_AVX512VL:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
    case GS_QISA_AVX512VNNI:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni");
#endif
#ifdef GS_QDOT_ARM
    case GS_QISA_NEON_DOT:
        return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    case GS_QISA_NEON_I8MM:
        return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) && (getauxval(AT_HWCAP2) & HWCAP2_I8MM);
#endif
    default:
        return 0;
    }
}

const char *gs_cpu_quant_isa_name(gs_cpu_qisa isa)
{
    static const char *const names[GS_QISA_COUNT] = {
        "c", "avx2", "avx-vnni", "avx512vl-vnni", "avx512vnni", "neon-dotprod", "neon-i8mm"};
    return isa >= 0 && isa < GS_QISA_COUNT ? names[isa] : "auto";
}

static gs_qdot_fn isa_fn(gs_cpu_qisa isa)
{
    switch (isa) {
#ifdef GS_QDOT_X86
    case GS_QISA_AVX2:
        return gs_qdot_avx2;
    case GS_QISA_AVXVNNI:
        return gs_qdot_avxvnni;
    case GS_QISA_AVX512VL:
        return gs_qdot_avx512vl;
    case GS_QISA_AVX512VNNI:
        return gs_qdot_avx512vnni;
#endif
#ifdef GS_QDOT_ARM
    case GS_QISA_NEON_DOT:
        return gs_qdot_neon_dot;
    case GS_QISA_NEON_I8MM:
        return gs_qdot_neon_i8mm;
#endif
    default:
        return gs_qdot_c;
    }
}

static atomic_int active = -1; /* gs_cpu_qisa; -1: not chosen yet */

static gs_cpu_qisa best_isa(void)
{
    for (int i = GS_QISA_COUNT - 1; i > GS_QISA_C; i--)
        if (gs_cpu_quant_isa_supported((gs_cpu_qisa)i))
            return (gs_cpu_qisa)i;
    return GS_QISA_C;
}

int gs_cpu_quant_isa_force(gs_cpu_qisa isa)
{
    if (isa == GS_QISA_AUTO)
        isa = best_isa();
    else if (isa < 0 || isa >= GS_QISA_COUNT || !gs_cpu_quant_isa_supported(isa))
        return -1;
    atomic_store(&active, (int)isa);
    return (int)isa;
}

gs_qdot_fn gs_cpu_quant_dot_fn(void)
{
    int a = atomic_load(&active);
    if (a < 0) {
        a = (int)best_isa();
        atomic_store(&active, a);
    }
    return isa_fn((gs_cpu_qisa)a);
}

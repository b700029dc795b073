/* quant_dot_x86.c - quant_dot.h's kernels for x86-64: AVX2 and AVX-512
 * VNNI, each built for its own ISA with target attributes (the rest of the
 * program stays baseline) and called only when the CPU reports it.
 *
 * AVX2 has no 8-bit dot product into int32: maddubs multiplies unsigned
 * by signed bytes into saturating int16 pairs. Q8 uses |w| and x with w's
 * sign (|w| <= 128, |x| <= 127: a pair is at most 32512, no saturation);
 * Q4 multiplies the nibbles (0..15) by x, and up to four such pair sums fit
 * int16. vpdpbusd (VNNI) sums four u8 x s8 products into int32 without
 * saturation: Q4 again takes the nibbles, Q8 takes w ^ 0x80 = w + 128 and
 * subtracts 128 * sum(x) afterwards. Every result is the exact integer
 * dot. Tiles are instantiated for each (nr, mr) so the accumulators stay in
 * registers. */
#include "kernels/cpu/quant_dot.h"

#ifdef GS_QDOT_X86
#include <immintrin.h>

#define QG GS_Q4_GROUP
#define INL static inline __attribute__((always_inline))
#define TGT_AVX2 __attribute__((target("avx2")))
#define TGT_VNNI __attribute__((target("avx2,avx512f,avx512bw,avx512vnni")))

/* Calls BODY(T, NR, MR) with compile-time NR and MR matching the tile. */
#define TILE_SWITCH(BODY, T)                                                                       \
    do {                                                                                           \
        if ((T)->nr == GS_QNR) {                                                                   \
            switch ((T)->mr) {                                                                     \
            case 1:                                                                                \
                BODY(T, GS_QNR, 1);                                                                \
                break;                                                                             \
            case 2:                                                                                \
                BODY(T, GS_QNR, 2);                                                                \
                break;                                                                             \
            case 3:                                                                                \
                BODY(T, GS_QNR, 3);                                                                \
                break;                                                                             \
            default:                                                                               \
                BODY(T, GS_QNR, GS_QMR);                                                           \
                break;                                                                             \
            }                                                                                      \
        } else {                                                                                   \
            switch ((T)->mr) {                                                                     \
            case 1:                                                                                \
                BODY(T, 1, 1);                                                                     \
                break;                                                                             \
            case 2:                                                                                \
                BODY(T, 1, 2);                                                                     \
                break;                                                                             \
            case 3:                                                                                \
                BODY(T, 1, 3);                                                                     \
                break;                                                                             \
            default:                                                                               \
                BODY(T, 1, GS_QMR);                                                                \
                break;                                                                             \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* ---- AVX2 ---------------------------------------------------------------- */

TGT_AVX2 INL int32_t hsum8(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

TGT_AVX2 INL void q8_avx2(const gs_qtile *T, const int NR, const int MR)
{
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t g = 0; g < T->ngf; g++) {
        __m256i acc[GS_QNR][GS_QMR];
        for (int t = 0; t < NR; t++)
            for (int r = 0; r < MR; r++)
                acc[t][r] = _mm256_setzero_si256();
        for (int i = 0; i < QG; i += 32) {
            __m256i w[GS_QNR], wa[GS_QNR];
            for (int t = 0; t < NR; t++) {
                w[t] = _mm256_loadu_si256((const __m256i *)(T->w[t] + g * QG + i));
                wa[t] = _mm256_abs_epi8(w[t]);
            }
            for (int r = 0; r < MR; r++) {
                const __m256i x = _mm256_loadu_si256((const __m256i *)(T->x[r] + g * QG + i));
                for (int t = 0; t < NR; t++) {
                    __m256i p = _mm256_maddubs_epi16(wa[t], _mm256_sign_epi8(x, w[t]));
                    acc[t][r] = _mm256_add_epi32(acc[t][r], _mm256_madd_epi16(p, ones));
                }
            }
        }
        for (int t = 0; t < NR; t++)
            for (int r = 0; r < MR; r++)
                T->d[(t * MR + r) * T->ds + g] = hsum8(acc[t][r]);
    }
}

TGT_AVX2 INL void q4_avx2(const gs_qtile *T, const int NR, const int MR)
{
    const __m256i ones = _mm256_set1_epi16(1), lo4 = _mm256_set1_epi8(0x0f);
    for (int64_t g = 0; g < T->ngf; g++) {
        __m256i acc[GS_QNR][GS_QMR]; /* int16 lanes: at most 4 * 2 * 15 * 127 */
        for (int t = 0; t < NR; t++)
            for (int r = 0; r < MR; r++)
                acc[t][r] = _mm256_setzero_si256();
        for (int i = 0; i < QG / 2; i += 32) {
            __m256i lo[GS_QNR], hi[GS_QNR];
            for (int t = 0; t < NR; t++) {
                __m256i b = _mm256_loadu_si256((const __m256i *)(T->w[t] + g * (QG / 2) + i));
                lo[t] = _mm256_and_si256(b, lo4);
                hi[t] = _mm256_and_si256(_mm256_srli_epi16(b, 4), lo4);
            }
            for (int r = 0; r < MR; r++) {
                const int8_t *xr = T->x[r] + g * QG + i;
                const __m256i xe = _mm256_loadu_si256((const __m256i *)xr);
                const __m256i xo = _mm256_loadu_si256((const __m256i *)(xr + QG / 2));
                for (int t = 0; t < NR; t++)
                    acc[t][r] = _mm256_add_epi16(acc[t][r],
                                                 _mm256_add_epi16(_mm256_maddubs_epi16(lo[t], xe),
                                                                  _mm256_maddubs_epi16(hi[t], xo)));
            }
        }
        for (int t = 0; t < NR; t++)
            for (int r = 0; r < MR; r++)
                T->d[(t * MR + r) * T->ds + g] =
                    hsum8(_mm256_madd_epi16(acc[t][r], ones)) - 8 * T->sumx[r][g];
    }
}

#define Q8_AVX2(T, NR, MR) q8_avx2(T, NR, MR)
#define Q4_AVX2(T, NR, MR) q4_avx2(T, NR, MR)

TGT_AVX2 void gs_qdot_avx2(gs_dtype dt, const gs_qtile *T)
{
    if (dt == GS_DT_Q8)
        TILE_SWITCH(Q8_AVX2, T);
    else
        TILE_SWITCH(Q4_AVX2, T);
}

/* ---- AVX-512 VNNI -------------------------------------------------------- */

TGT_VNNI INL void q8_vnni(const gs_qtile *T, const int NR, const int MR)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int64_t g = 0; g < T->ngf; g++) {
        __m512i w0[GS_QNR], w1[GS_QNR];
        for (int t = 0; t < NR; t++) {
            const uint8_t *p = T->w[t] + g * QG;
            w0[t] = _mm512_xor_si512(_mm512_loadu_si512(p), flip);
            w1[t] = _mm512_xor_si512(_mm512_loadu_si512(p + 64), flip);
        }
        for (int r = 0; r < MR; r++) {
            const int8_t *xr = T->x[r] + g * QG;
            const __m512i x0 = _mm512_loadu_si512(xr), x1 = _mm512_loadu_si512(xr + 64);
            const int32_t corr = 128 * T->sumx[r][g];
            for (int t = 0; t < NR; t++) {
                __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0[t], x0);
                a = _mm512_dpbusd_epi32(a, w1[t], x1);
                T->d[(t * MR + r) * T->ds + g] = _mm512_reduce_add_epi32(a) - corr;
            }
        }
    }
}

TGT_VNNI INL void q4_vnni(const gs_qtile *T, const int NR, const int MR)
{
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    for (int64_t g = 0; g < T->ngf; g++) {
        __m512i lo[GS_QNR], hi[GS_QNR];
        for (int t = 0; t < NR; t++) {
            const __m512i b = _mm512_loadu_si512(T->w[t] + g * (QG / 2));
            lo[t] = _mm512_and_si512(b, lo4);
            hi[t] = _mm512_and_si512(_mm512_srli_epi16(b, 4), lo4);
        }
        for (int r = 0; r < MR; r++) {
            const int8_t *xr = T->x[r] + g * QG;
            const __m512i xe = _mm512_loadu_si512(xr), xo = _mm512_loadu_si512(xr + QG / 2);
            const int32_t corr = 8 * T->sumx[r][g];
            for (int t = 0; t < NR; t++) {
                __m512i a = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[t], xe);
                a = _mm512_dpbusd_epi32(a, hi[t], xo);
                T->d[(t * MR + r) * T->ds + g] = _mm512_reduce_add_epi32(a) - corr;
            }
        }
    }
}

#define Q8_VNNI(T, NR, MR) q8_vnni(T, NR, MR)
#define Q4_VNNI(T, NR, MR) q4_vnni(T, NR, MR)

TGT_VNNI void gs_qdot_avx512vnni(gs_dtype dt, const gs_qtile *T)
{
    if (dt == GS_DT_Q8)
        TILE_SWITCH(Q8_VNNI, T);
    else
        TILE_SWITCH(Q4_VNNI, T);
}

#endif

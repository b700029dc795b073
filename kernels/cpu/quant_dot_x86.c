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
 * subtracts 128 * sum(x) afterwards; on zmm here, on ymm in
 * quant_dot_vnni256.h (AVX-512 VL, and AVX-VNNI CPUs without AVX-512). Every result is the exact
 * integer dot. Tiles are instantiated for each (nr, mr) so the accumulators stay in registers.
 * Decode (one x row, four weight rows) reduces the four rows' accumulators
 * together (store_rows1): one transposed reduction per group instead of
 * four, which had cost more instructions than the dot products. */
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

/* The four lane sums of a0..a3 as one vector (a transposed reduction:
 * three adds and six shuffles for four sums, not four full reductions). */
TGT_AVX2 INL __m128i red4_256(__m256i a0, __m256i a1, __m256i a2, __m256i a3)
{
    __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(a0, a1), _mm256_unpackhi_epi32(a0, a1));
    __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(a2, a3), _mm256_unpackhi_epi32(a2, a3));
    __m256i u = _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
    return _mm_add_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
}

/* The group's sums of x for the tile's rows, times 2^sh. */
TGT_AVX2 INL __m128i corr4(const gs_qtile *T, int64_t g, int sh)
{
    __m128i c = _mm_loadu_si128((const __m128i *)(T->sumx + g * T->sumx_ld));
    return _mm_slli_epi32(c, sh);
}

TGT_AVX2 INL void store4(const gs_qtile *T, int t, int64_t g, __m128i v)
{
    _mm_storeu_si128((__m128i *)(T->d + (t * T->ds + g) * GS_QMR), v);
}

/* One x row against GS_QNR weight rows (decode): v holds the group's dot
 * of weight row t in lane t; row t's slot gets it in lane 0 and zeros
 * past it (the rows of x this tile does not have). */
TGT_AVX2 INL void store_rows1(const gs_qtile *T, int64_t g, __m128i v)
{
    int32_t *d = T->d + g * GS_QMR;
    const int64_t ld = T->ds * GS_QMR;
    _mm_storeu_si128((__m128i *)d, _mm_cvtsi32_si128(_mm_cvtsi128_si32(v)));
    _mm_storeu_si128((__m128i *)(d + ld), _mm_cvtsi32_si128(_mm_extract_epi32(v, 1)));
    _mm_storeu_si128((__m128i *)(d + 2 * ld), _mm_cvtsi32_si128(_mm_extract_epi32(v, 2)));
    _mm_storeu_si128((__m128i *)(d + 3 * ld), _mm_cvtsi32_si128(_mm_extract_epi32(v, 3)));
}

TGT_AVX2 INL void q8_avx2(const gs_qtile *T, const int NR, const int MR)
{
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t g = 0; g < T->ngf; g++) {
        __m256i acc[GS_QNR][GS_QMR];
        for (int t = 0; t < NR; t++)
            for (int r = 0; r < GS_QMR; r++)
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
        if (MR == 1 && NR == GS_QNR) {
            store_rows1(T, g, red4_256(acc[0][0], acc[1][0], acc[2][0], acc[3][0]));
            continue;
        }
        for (int t = 0; t < NR; t++)
            store4(T, t, g, red4_256(acc[t][0], acc[t][1], acc[t][2], acc[t][3]));
    }
}

TGT_AVX2 INL void q4_avx2(const gs_qtile *T, const int NR, const int MR)
{
    const __m256i ones = _mm256_set1_epi16(1), lo4 = _mm256_set1_epi8(0x0f);
    for (int64_t g = 0; g < T->ngf; g++) {
        __m256i acc[GS_QNR][GS_QMR]; /* int16 lanes: at most 4 * 2 * 15 * 127 */
        for (int t = 0; t < NR; t++)
            for (int r = 0; r < GS_QMR; r++)
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
        if (MR == 1 && NR == GS_QNR) {
            store_rows1(T, g,
                        _mm_sub_epi32(red4_256(_mm256_madd_epi16(acc[0][0], ones),
                                               _mm256_madd_epi16(acc[1][0], ones),
                                               _mm256_madd_epi16(acc[2][0], ones),
                                               _mm256_madd_epi16(acc[3][0], ones)),
                                      _mm_set1_epi32(T->sumx[g * T->sumx_ld] * 8)));
            continue;
        }
        const __m128i c = corr4(T, g, 3); /* nibbles are q + 8 */
        for (int t = 0; t < NR; t++)
            store4(T, t, g,
                   _mm_sub_epi32(red4_256(_mm256_madd_epi16(acc[t][0], ones),
                                          _mm256_madd_epi16(acc[t][1], ones),
                                          _mm256_madd_epi16(acc[t][2], ones),
                                          _mm256_madd_epi16(acc[t][3], ones)),
                                 c));
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

/* red4_256 on zmm: the four lane sums of a0..a3. */
TGT_VNNI INL __m128i red4_512(__m512i a0, __m512i a1, __m512i a2, __m512i a3)
{
    __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(a0, a1), _mm512_unpackhi_epi32(a0, a1));
    __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(a2, a3), _mm512_unpackhi_epi32(a2, a3));
    __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
    __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(u), _mm512_extracti64x4_epi64(u, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

TGT_VNNI INL void q8_vnni(const gs_qtile *T, const int NR, const int MR)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int64_t g = 0; g < T->ngf; g++) {
        __m512i acc[GS_QNR][GS_QMR];
        for (int t = 0; t < NR; t++) {
            const uint8_t *p = T->w[t] + g * QG;
            const __m512i w0 = _mm512_xor_si512(_mm512_loadu_si512(p), flip);
            const __m512i w1 = _mm512_xor_si512(_mm512_loadu_si512(p + 64), flip);
            for (int r = 0; r < GS_QMR; r++)
                acc[t][r] = _mm512_setzero_si512();
            for (int r = 0; r < MR; r++) {
                const int8_t *xr = T->x[r] + g * QG;
                acc[t][r] = _mm512_dpbusd_epi32(acc[t][r], w0, _mm512_loadu_si512(xr));
                acc[t][r] = _mm512_dpbusd_epi32(acc[t][r], w1, _mm512_loadu_si512(xr + 64));
            }
        }
        if (MR == 1 && NR == GS_QNR) { /* decode: one reduction for the four weight rows */
            store_rows1(T, g,
                        _mm_sub_epi32(red4_512(acc[0][0], acc[1][0], acc[2][0], acc[3][0]),
                                      _mm_set1_epi32(T->sumx[g * T->sumx_ld] * 128)));
            continue;
        }
        const __m128i c = _mm_slli_epi32(
            _mm_loadu_si128((const __m128i *)(T->sumx + g * T->sumx_ld)), 7); /* w + 128 */
        for (int t = 0; t < NR; t++)
            _mm_storeu_si128(
                (__m128i *)(T->d + (t * T->ds + g) * GS_QMR),
                _mm_sub_epi32(red4_512(acc[t][0], acc[t][1], acc[t][2], acc[t][3]), c));
    }
}

TGT_VNNI INL void q4_vnni(const gs_qtile *T, const int NR, const int MR)
{
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    for (int64_t g = 0; g < T->ngf; g++) {
        __m512i acc[GS_QNR][GS_QMR];
        for (int t = 0; t < NR; t++) {
            const __m512i b = _mm512_loadu_si512(T->w[t] + g * (QG / 2));
            const __m512i lo = _mm512_and_si512(b, lo4);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), lo4);
            for (int r = 0; r < GS_QMR; r++)
                acc[t][r] = _mm512_setzero_si512();
            for (int r = 0; r < MR; r++) {
                const int8_t *xr = T->x[r] + g * QG;
                acc[t][r] = _mm512_dpbusd_epi32(acc[t][r], lo, _mm512_loadu_si512(xr));
                acc[t][r] = _mm512_dpbusd_epi32(acc[t][r], hi, _mm512_loadu_si512(xr + QG / 2));
            }
        }
        if (MR == 1 && NR == GS_QNR) {
            store_rows1(T, g,
                        _mm_sub_epi32(red4_512(acc[0][0], acc[1][0], acc[2][0], acc[3][0]),
                                      _mm_set1_epi32(T->sumx[g * T->sumx_ld] * 8)));
            continue;
        }
        const __m128i c = _mm_slli_epi32(
            _mm_loadu_si128((const __m128i *)(T->sumx + g * T->sumx_ld)), 3); /* q + 8 */
        for (int t = 0; t < NR; t++)
            _mm_storeu_si128(
                (__m128i *)(T->d + (t * T->ds + g) * GS_QMR),
                _mm_sub_epi32(red4_512(acc[t][0], acc[t][1], acc[t][2], acc[t][3]), c));
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

/* ---- 256-bit VNNI: AVX-512 VL (EVEX) and AVX-VNNI (VEX), one body ------- */

#define V256_CAT2(a, b) a##b
#define V256_CAT(a, b) V256_CAT2(a, b)

#define V256_TGT __attribute__((target("avx2,avx512f,avx512vl,avx512vnni")))
#define V256_DP(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#define V256_NAME gs_qdot_avx512vl
#include "kernels/cpu/quant_dot_vnni256.h"
#undef V256_TGT
#undef V256_DP
#undef V256_NAME

#define V256_TGT __attribute__((target("avx2,avxvnni")))
#define V256_DP(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#define V256_NAME gs_qdot_avxvnni
#include "kernels/cpu/quant_dot_vnni256.h"
#undef V256_TGT
#undef V256_DP
#undef V256_NAME

#endif

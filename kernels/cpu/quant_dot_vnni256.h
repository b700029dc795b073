/* quant_dot_vnni256.h - the body of the 256-bit vpdpbusd kernels, included
 * twice by quant_dot_x86.c: once for AVX-512 VL + VNNI (EVEX encoding),
 * once for AVX-VNNI (VEX encoding: CPUs with VNNI but no AVX-512, e.g.
 * Intel's E-core servers). The instruction and its results are the same;
 * only the intrinsic's name and the target differ, so one body serves
 * both and the test of the first (run where AVX-512 is) covers the code of
 * the second. Before including, define V256_TGT (the target attribute),
 * V256_DP(acc, u8, s8) (the intrinsic) and V256_NAME (the kernel's name).
 * Q8 takes w ^ 0x80 = w + 128 as the unsigned operand and subtracts
 * 128 * sum(x); Q4 takes the nibbles and subtracts 8 * sum(x). */

V256_TGT INL void V256_CAT(V256_NAME, _q8)(const gs_qtile *T, const int NR, const int MR)
{
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    for (int64_t g = 0; g < T->ngf; g++) {
        __m256i acc[GS_QNR][GS_QMR];
        for (int t = 0; t < NR; t++) {
            for (int r = 0; r < GS_QMR; r++)
                acc[t][r] = _mm256_setzero_si256();
            for (int i = 0; i < QG; i += 32) {
                const __m256i w = _mm256_xor_si256(
                    _mm256_loadu_si256((const __m256i *)(T->w[t] + g * QG + i)), flip);
                for (int r = 0; r < MR; r++)
                    acc[t][r] = V256_DP(
                        acc[t][r], w, _mm256_loadu_si256((const __m256i *)(T->x[r] + g * QG + i)));
            }
        }
        if (MR == 1 && NR == GS_QNR) { /* decode: one reduction for the four weight rows */
            store_rows1(T, g,
                        _mm_sub_epi32(red4_256(acc[0][0], acc[1][0], acc[2][0], acc[3][0]),
                                      _mm_set1_epi32(T->sumx[g * T->sumx_ld] * 128)));
            continue;
        }
        const __m128i c = corr4(T, g, 7);
        for (int t = 0; t < NR; t++)
            store4(T, t, g, _mm_sub_epi32(red4_256(acc[t][0], acc[t][1], acc[t][2], acc[t][3]), c));
    }
}

V256_TGT INL void V256_CAT(V256_NAME, _q4)(const gs_qtile *T, const int NR, const int MR)
{
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
    for (int64_t g = 0; g < T->ngf; g++) {
        __m256i acc[GS_QNR][GS_QMR];
        for (int t = 0; t < NR; t++) {
            for (int r = 0; r < GS_QMR; r++)
                acc[t][r] = _mm256_setzero_si256();
            for (int i = 0; i < QG / 2; i += 32) {
                const __m256i b = _mm256_loadu_si256((const __m256i *)(T->w[t] + g * (QG / 2) + i));
                const __m256i lo = _mm256_and_si256(b, lo4);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), lo4);
                for (int r = 0; r < MR; r++) {
                    const int8_t *xr = T->x[r] + g * QG + i;
                    acc[t][r] = V256_DP(acc[t][r], lo, _mm256_loadu_si256((const __m256i *)xr));
                    acc[t][r] =
                        V256_DP(acc[t][r], hi, _mm256_loadu_si256((const __m256i *)(xr + QG / 2)));
                }
            }
        }
        if (MR == 1 && NR == GS_QNR) { /* decode: one reduction for the four weight rows */
            store_rows1(T, g,
                        _mm_sub_epi32(red4_256(acc[0][0], acc[1][0], acc[2][0], acc[3][0]),
                                      _mm_set1_epi32(T->sumx[g * T->sumx_ld] * 8)));
            continue;
        }
        const __m128i c = corr4(T, g, 3);
        for (int t = 0; t < NR; t++)
            store4(T, t, g, _mm_sub_epi32(red4_256(acc[t][0], acc[t][1], acc[t][2], acc[t][3]), c));
    }
}

#define V256_Q8(T, NR, MR) V256_CAT(V256_NAME, _q8)(T, NR, MR)
#define V256_Q4(T, NR, MR) V256_CAT(V256_NAME, _q4)(T, NR, MR)

V256_TGT void V256_NAME(gs_dtype dt, const gs_qtile *T)
{
    if (dt == GS_DT_Q8)
        TILE_SWITCH(V256_Q8, T);
    else
        TILE_SWITCH(V256_Q4, T);
}

#undef V256_Q8
#undef V256_Q4

/* quant_dot_arm.c - quant_dot.h's kernels for aarch64: NEON sdot
 * (dotprod, Armv8.2) and smmla (i8mm, Armv8.6), built with target
 * attributes and called only when getauxval reports the extension.
 *
 * sdot multiplies signed bytes, so Q8 weights go in as they are and Q4
 * nibbles (0..15) as they are, 8 * sum(x) being subtracted afterwards.
 * smmla multiplies a 2 x 8 block of x by a 2 x 8 block of weights into a
 * 2 x 2 int32 tile: twice sdot's products per instruction, and the four
 * lanes are four different dots, so no horizontal sums either. It takes
 * pairs of x rows and pairs of weight rows (64-bit zips of two loads);
 * tiles with an odd row count use sdot. All results are exact. */
#include "kernels/cpu/quant_dot.h"

#ifdef GS_QDOT_ARM
#include <arm_neon.h>

#define QG GS_Q4_GROUP
#define INL static inline __attribute__((always_inline))
#ifdef __clang__
#define TGT_DOT __attribute__((target("dotprod")))
#define TGT_MM __attribute__((target("dotprod,i8mm")))
#else
#define TGT_DOT __attribute__((target("arch=armv8.2-a+dotprod")))
#define TGT_MM __attribute__((target("arch=armv8.2-a+dotprod+i8mm")))
#endif

/* Calls BODY(T, NR, MR) with compile-time NR and MR matching the tile. */
#define TILE_SWITCH(BODY, T)                                                                       \
    do {                                                                                           \
        const int nr4 = (T)->nr == GS_QNR;                                                         \
        switch ((T)->mr) {                                                                         \
        case 1:                                                                                    \
            if (nr4)                                                                               \
                BODY(T, GS_QNR, 1);                                                                \
            else                                                                                   \
                BODY(T, 1, 1);                                                                     \
            break;                                                                                 \
        case 2:                                                                                    \
            if (nr4)                                                                               \
                BODY(T, GS_QNR, 2);                                                                \
            else                                                                                   \
                BODY(T, 1, 2);                                                                     \
            break;                                                                                 \
        case 3:                                                                                    \
            if (nr4)                                                                               \
                BODY(T, GS_QNR, 3);                                                                \
            else                                                                                   \
                BODY(T, 1, 3);                                                                     \
            break;                                                                                 \
        default:                                                                                   \
            if (nr4)                                                                               \
                BODY(T, GS_QNR, GS_QMR);                                                           \
            else                                                                                   \
                BODY(T, 1, GS_QMR);                                                                \
            break;                                                                                 \
        }                                                                                          \
    } while (0)

/* ---- sdot ---------------------------------------------------------------- */

/* The four lane sums of a0..a3 as one vector (pairwise adds). */
TGT_DOT INL int32x4_t red4(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3)
{
    return vpaddq_s32(vpaddq_s32(a0, a1), vpaddq_s32(a2, a3));
}

/* The group's sums of x for the tile's rows, times 8 (Q4: nibbles are
 * q + 8). */
TGT_DOT INL int32x4_t corr8(const gs_qtile *T, int64_t g)
{
    return vshlq_n_s32(vld1q_s32(T->sumx + g * T->sumx_ld), 3);
}

/* One x row against GS_QNR weight rows (decode): v holds the group's dot
 * of weight row t in lane t; row t's slot gets it in lane 0 and zeros
 * past it (the rows of x this tile does not have). One pairwise
 * reduction for the four weight rows instead of one each. */
TGT_DOT INL void store_rows1(const gs_qtile *T, int64_t g, int32x4_t v)
{
    int32_t *d = T->d + g * GS_QMR;
    const int64_t ld = T->ds * GS_QMR;
    const int32x4_t z = vdupq_n_s32(0);
    vst1q_s32(d, vsetq_lane_s32(vgetq_lane_s32(v, 0), z, 0));
    vst1q_s32(d + ld, vsetq_lane_s32(vgetq_lane_s32(v, 1), z, 0));
    vst1q_s32(d + 2 * ld, vsetq_lane_s32(vgetq_lane_s32(v, 2), z, 0));
    vst1q_s32(d + 3 * ld, vsetq_lane_s32(vgetq_lane_s32(v, 3), z, 0));
}

TGT_DOT INL void q8_dot(const gs_qtile *T, const int NR, const int MR)
{
    for (int64_t g = 0; g < T->ngf; g++) {
        int32x4_t acc[GS_QNR][GS_QMR];
        for (int t = 0; t < NR; t++)
            for (int r = 0; r < GS_QMR; r++)
                acc[t][r] = vdupq_n_s32(0);
        for (int i = 0; i < QG; i += 16) {
            int8x16_t w[GS_QNR];
            for (int t = 0; t < NR; t++)
                w[t] = vld1q_s8((const int8_t *)T->w[t] + g * QG + i);
            for (int r = 0; r < MR; r++) {
                const int8x16_t x = vld1q_s8(T->x[r] + g * QG + i);
                for (int t = 0; t < NR; t++)
                    acc[t][r] = vdotq_s32(acc[t][r], w[t], x);
            }
        }
        if (MR == 1 && NR == GS_QNR) {
            store_rows1(T, g, red4(acc[0][0], acc[1][0], acc[2][0], acc[3][0]));
            continue;
        }
        for (int t = 0; t < NR; t++)
            vst1q_s32(T->d + (t * T->ds + g) * GS_QMR,
                      red4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]));
    }
}

TGT_DOT INL void q4_dot(const gs_qtile *T, const int NR, const int MR)
{
    const uint8x16_t lo4 = vdupq_n_u8(15);
    for (int64_t g = 0; g < T->ngf; g++) {
        int32x4_t acc[GS_QNR][GS_QMR];
        for (int t = 0; t < NR; t++)
            for (int r = 0; r < GS_QMR; r++)
                acc[t][r] = vdupq_n_s32(0);
        for (int i = 0; i < QG / 2; i += 16) {
            int8x16_t lo[GS_QNR], hi[GS_QNR];
            for (int t = 0; t < NR; t++) {
                const uint8x16_t b = vld1q_u8(T->w[t] + g * (QG / 2) + i);
                lo[t] = vreinterpretq_s8_u8(vandq_u8(b, lo4));
                hi[t] = vreinterpretq_s8_u8(vshrq_n_u8(b, 4));
            }
            for (int r = 0; r < MR; r++) {
                const int8_t *xr = T->x[r] + g * QG + i;
                const int8x16_t xe = vld1q_s8(xr), xo = vld1q_s8(xr + QG / 2);
                for (int t = 0; t < NR; t++)
                    acc[t][r] = vdotq_s32(vdotq_s32(acc[t][r], lo[t], xe), hi[t], xo);
            }
        }
        if (MR == 1 && NR == GS_QNR) {
            store_rows1(T, g,
                        vsubq_s32(red4(acc[0][0], acc[1][0], acc[2][0], acc[3][0]),
                                  vdupq_n_s32(8 * T->sumx[g * T->sumx_ld])));
            continue;
        }
        const int32x4_t c = corr8(T, g);
        for (int t = 0; t < NR; t++)
            vst1q_s32(T->d + (t * T->ds + g) * GS_QMR,
                      vsubq_s32(red4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]), c));
    }
}

#define Q8_DOT(T, NR, MR) q8_dot(T, NR, MR)
#define Q4_DOT(T, NR, MR) q4_dot(T, NR, MR)

TGT_DOT void gs_qdot_neon_dot(gs_dtype dt, const gs_qtile *T)
{
    if (dt == GS_DT_Q8)
        TILE_SWITCH(Q8_DOT, T);
    else
        TILE_SWITCH(Q4_DOT, T);
}

/* ---- smmla --------------------------------------------------------------- */

/* The 64-bit halves of a and b interleaved: (a.lo, b.lo) and (a.hi, b.hi),
 * i.e. two 2 x 8 blocks of rows a and b. */
TGT_MM INL void zip2x8(int8x16_t a, int8x16_t b, int8x16_t *l, int8x16_t *h)
{
    *l = vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
    *h = vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}

/* Lane i * 2 + j of acc[tp][rp] is the dot of x row 2rp + i with weight
 * row 2tp + j; rows past MR (2 or 4) get 0. */
TGT_MM INL void store_mm(const gs_qtile *T, int32x4_t acc[GS_QNR / 2][GS_QMR / 2], int MR,
                         int64_t g, int q4)
{
    int32_t v[GS_QNR / 2][GS_QMR / 2][4];
    for (int tp = 0; tp < GS_QNR / 2; tp++)
        for (int rp = 0; rp < MR / 2; rp++)
            vst1q_s32(v[tp][rp], acc[tp][rp]);
    for (int t = 0; t < GS_QNR; t++) {
        int32_t *d = T->d + (t * T->ds + g) * GS_QMR;
        for (int r = 0; r < GS_QMR; r++)
            d[r] = r < MR ? v[t / 2][r / 2][(r & 1) * 2 + (t & 1)] -
                                (q4 ? 8 * T->sumx[g * T->sumx_ld + r] : 0)
                          : 0;
    }
}

TGT_MM INL void q8_mm(const gs_qtile *T, const int MR)
{
    for (int64_t g = 0; g < T->ngf; g++) {
        int32x4_t acc[GS_QNR / 2][GS_QMR / 2];
        for (int tp = 0; tp < GS_QNR / 2; tp++)
            for (int rp = 0; rp < MR / 2; rp++)
                acc[tp][rp] = vdupq_n_s32(0);
        for (int i = 0; i < QG; i += 16) {
            int8x16_t wl[GS_QNR / 2], wh[GS_QNR / 2];
            for (int tp = 0; tp < GS_QNR / 2; tp++)
                zip2x8(vld1q_s8((const int8_t *)T->w[2 * tp] + g * QG + i),
                       vld1q_s8((const int8_t *)T->w[2 * tp + 1] + g * QG + i), &wl[tp], &wh[tp]);
            for (int rp = 0; rp < MR / 2; rp++) {
                int8x16_t xl, xh;
                zip2x8(vld1q_s8(T->x[2 * rp] + g * QG + i), vld1q_s8(T->x[2 * rp + 1] + g * QG + i),
                       &xl, &xh);
                for (int tp = 0; tp < GS_QNR / 2; tp++)
                    acc[tp][rp] = vmmlaq_s32(vmmlaq_s32(acc[tp][rp], xl, wl[tp]), xh, wh[tp]);
            }
        }
        store_mm(T, acc, MR, g, 0);
    }
}

TGT_MM INL void q4_mm(const gs_qtile *T, const int MR)
{
    const uint8x16_t lo4 = vdupq_n_u8(15);
    for (int64_t g = 0; g < T->ngf; g++) {
        int32x4_t acc[GS_QNR / 2][GS_QMR / 2];
        for (int tp = 0; tp < GS_QNR / 2; tp++)
            for (int rp = 0; rp < MR / 2; rp++)
                acc[tp][rp] = vdupq_n_s32(0);
        for (int i = 0; i < QG / 2; i += 16) {
            int8x16_t ll[GS_QNR / 2], lh[GS_QNR / 2], hl[GS_QNR / 2], hh[GS_QNR / 2];
            for (int tp = 0; tp < GS_QNR / 2; tp++) {
                const uint8x16_t b0 = vld1q_u8(T->w[2 * tp] + g * (QG / 2) + i);
                const uint8x16_t b1 = vld1q_u8(T->w[2 * tp + 1] + g * (QG / 2) + i);
                zip2x8(vreinterpretq_s8_u8(vandq_u8(b0, lo4)),
                       vreinterpretq_s8_u8(vandq_u8(b1, lo4)), &ll[tp], &lh[tp]);
                zip2x8(vreinterpretq_s8_u8(vshrq_n_u8(b0, 4)),
                       vreinterpretq_s8_u8(vshrq_n_u8(b1, 4)), &hl[tp], &hh[tp]);
            }
            for (int rp = 0; rp < MR / 2; rp++) {
                const int8_t *x0 = T->x[2 * rp] + g * QG + i, *x1 = T->x[2 * rp + 1] + g * QG + i;
                int8x16_t el, eh, ol, oh;
                zip2x8(vld1q_s8(x0), vld1q_s8(x1), &el, &eh);
                zip2x8(vld1q_s8(x0 + QG / 2), vld1q_s8(x1 + QG / 2), &ol, &oh);
                for (int tp = 0; tp < GS_QNR / 2; tp++) {
                    int32x4_t a = vmmlaq_s32(acc[tp][rp], el, ll[tp]);
                    a = vmmlaq_s32(a, eh, lh[tp]);
                    a = vmmlaq_s32(a, ol, hl[tp]);
                    acc[tp][rp] = vmmlaq_s32(a, oh, hh[tp]);
                }
            }
        }
        store_mm(T, acc, MR, g, 1);
    }
}

TGT_MM void gs_qdot_neon_i8mm(gs_dtype dt, const gs_qtile *T)
{
    if (T->nr != GS_QNR || (T->mr & 1)) { /* no row pairs: sdot */
        gs_qdot_neon_dot(dt, T);
        return;
    }
    if (dt == GS_DT_Q8) {
        if (T->mr == 2)
            q8_mm(T, 2);
        else
            q8_mm(T, GS_QMR);
    } else {
        if (T->mr == 2)
            q4_mm(T, 2);
        else
            q4_mm(T, GS_QMR);
    }
}

#endif

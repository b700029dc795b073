/* quant.c - the host quantizer of kernels.h's "Quantized weights": sizes,
 * gs_quantize and gs_dequantize_row. Every backend and glmserve-quantize
 * use this one, so a quantized weight is the same bits everywhere.
 * Thread-safe: pure functions (callers may quantize disjoint row ranges
 * from several threads). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/dtype.h"
#include "common/log.h"
#include "kernels/kernels.h"

int gs_dtype_is_quant(gs_dtype dt)
{
    return dt == GS_DT_Q8 || dt == GS_DT_Q4;
}

size_t gs_quant_q_bytes(gs_dtype qdt, int64_t rows, int64_t cols)
{
    if (rows < 1 || cols < 1)
        return 0;
    if (qdt == GS_DT_Q8)
        return (size_t)rows * (size_t)cols;
    if (qdt == GS_DT_Q4)
        return (size_t)rows * (size_t)((cols + 1) / 2);
    return 0;
}

size_t gs_quant_n_scales(gs_dtype qdt, int64_t rows, int64_t cols)
{
    if (rows < 1 || cols < 1)
        return 0;
    if (qdt == GS_DT_Q8)
        return (size_t)rows;
    if (qdt == GS_DT_Q4)
        return (size_t)rows * (size_t)((cols + GS_Q4_GROUP - 1) / GS_Q4_GROUP);
    return 0;
}

/* n values of src_dt at src (any alignment) widened to F32. */
static void widen(const void *src, gs_dtype dt, float *dst, int64_t n)
{
    if (dt == GS_DT_F32)
        memcpy(dst, src, (size_t)n * 4);
    else if (dt == GS_DT_BF16)
        gs_bf16_to_f32_row(src, dst, (size_t)n);
    else
        gs_f16_to_f32_row(src, dst, (size_t)n);
}

/* Quantizes v[n] with one scale: s = absmax / qmax, q = rint(v / s). The
 * division (not a multiply by 1/s) keeps q exact for values on the grid. */
static float quant_block(const float *v, size_t n, int qmax, int8_t *q)
{
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        amax = a > amax ? a : amax;
    }
    if (amax == 0.0f) {
        memset(q, 0, n);
        return 0.0f;
    }
    float s = amax / (float)qmax;
    for (size_t i = 0; i < n; i++) {
        float r = nearbyintf(v[i] / s); /* default rounding mode: to nearest even */
        r = r > (float)qmax ? (float)qmax : r;
        r = r < (float)(-qmax - 1) ? (float)(-qmax - 1) : r;
        q[i] = (int8_t)r;
    }
    return s;
}

int gs_quantize(gs_dtype qdt, const void *src, gs_dtype src_dt, int64_t rows, int64_t cols, void *q,
                float *s)
{
    if (!gs_dtype_is_quant(qdt) || !src || !q || !s || rows < 1 || cols < 1 ||
        (src_dt != GS_DT_F32 && src_dt != GS_DT_BF16 && src_dt != GS_DT_F16)) {
        gs_log_error("gs_quantize: bad arguments (%s from %s, [%lld x %lld])", gs_dtype_name(qdt),
                     gs_dtype_name(src_dt), (long long)rows, (long long)cols);
        return GS_EINVAL;
    }
    float row[GS_Q4_GROUP];
    int8_t qb[GS_Q4_GROUP];
    size_t esz = gs_dtype_size(src_dt);
    const char *in = src;
    for (int64_t r = 0; r < rows; r++) {
        const char *srow = in + (size_t)r * (size_t)cols * esz;
        /* Non-finite input would give a NaN scale: refuse it by row. */
        for (int64_t c0 = 0; c0 < cols; c0 += GS_Q4_GROUP) {
            int64_t n = cols - c0 < GS_Q4_GROUP ? cols - c0 : GS_Q4_GROUP;
            widen(srow + (size_t)c0 * esz, src_dt, row, n);
            for (int64_t i = 0; i < n; i++)
                if (!isfinite(row[i])) {
                    gs_log_error("gs_quantize: row %lld col %lld is not finite", (long long)r,
                                 (long long)(c0 + i));
                    return GS_EINVAL;
                }
        }
        if (qdt == GS_DT_Q8) {
            /* Two passes over the row: absmax, then quantize by blocks. */
            float amax = 0.0f;
            for (int64_t c0 = 0; c0 < cols; c0 += GS_Q4_GROUP) {
                int64_t n = cols - c0 < GS_Q4_GROUP ? cols - c0 : GS_Q4_GROUP;
                widen(srow + (size_t)c0 * esz, src_dt, row, n);
                for (int64_t i = 0; i < n; i++)
                    amax = fabsf(row[i]) > amax ? fabsf(row[i]) : amax;
            }
            float sc = amax / 127.0f;
            int8_t *qr = (int8_t *)q + (size_t)r * (size_t)cols;
            s[r] = sc;
            for (int64_t c0 = 0; c0 < cols; c0 += GS_Q4_GROUP) {
                int64_t n = cols - c0 < GS_Q4_GROUP ? cols - c0 : GS_Q4_GROUP;
                widen(srow + (size_t)c0 * esz, src_dt, row, n);
                for (int64_t i = 0; i < n; i++) {
                    float v = sc == 0.0f ? 0.0f : nearbyintf(row[i] / sc);
                    v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
                    qr[c0 + i] = (int8_t)v;
                }
            }
        } else {
            int64_t ng = (cols + GS_Q4_GROUP - 1) / GS_Q4_GROUP;
            uint8_t *qr = (uint8_t *)q + (size_t)r * (size_t)((cols + 1) / 2);
            memset(qr, 0x88, (size_t)((cols + 1) / 2));
            for (int64_t g = 0; g < ng; g++) {
                int64_t c0 = g * GS_Q4_GROUP;
                int64_t n = cols - c0 < GS_Q4_GROUP ? cols - c0 : GS_Q4_GROUP;
                widen(srow + (size_t)c0 * esz, src_dt, row, n);
                s[r * ng + g] = quant_block(row, (size_t)n, 7, qb);
                for (int64_t i = 0; i < n; i++) {
                    int64_t c = c0 + i;
                    uint8_t nib = (uint8_t)(qb[i] + 8);
                    uint8_t *b = &qr[c / 2];
                    *b = (c & 1) ? (uint8_t)((*b & 0x0f) | (nib << 4))
                                 : (uint8_t)((*b & 0xf0) | nib);
                }
            }
        }
    }
    return 0;
}

void gs_dequantize_row(gs_dtype qdt, const void *q, const float *s, int64_t cols, int64_t r,
                       float *out)
{
    if (qdt == GS_DT_Q8) {
        const int8_t *qr = (const int8_t *)q + (size_t)r * (size_t)cols;
        for (int64_t c = 0; c < cols; c++)
            out[c] = (float)qr[c] * s[r];
    } else if (qdt == GS_DT_Q4) {
        int64_t ng = (cols + GS_Q4_GROUP - 1) / GS_Q4_GROUP;
        const uint8_t *qr = (const uint8_t *)q + (size_t)r * (size_t)((cols + 1) / 2);
        for (int64_t c = 0; c < cols; c++) {
            int v = (c & 1) ? (qr[c / 2] >> 4) : (qr[c / 2] & 0x0f);
            out[c] = (float)(v - 8) * s[r * ng + c / GS_Q4_GROUP];
        }
    }
}

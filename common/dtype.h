/* dtype.h - scalar and row conversions between float32 and the 16-bit float
 * formats of checkpoints and activations: bfloat16 and IEEE binary16 (f16).
 * Header-only (static inline), integer bit arithmetic only, so the results
 * do not depend on the FPU's rounding mode or flush-to-zero flags and are
 * identical on x86-64 and aarch64.
 *
 * Narrowing rounds to nearest, ties to even; NaN stays NaN (quiet bit set,
 * sign and top payload bits kept); overflow gives +-inf. Widening is exact,
 * f16 subnormals included. The row helpers take `const void *` sources and
 * load through memcpy, so unaligned data (a safetensors tensor whose header
 * length is not a multiple of 2 or 4) is fine.
 * Thread-safe: pure functions. */
#ifndef GS_DTYPE_H
#define GS_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t gs_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float gs_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* bfloat16 is the top half of a float32: widening is a shift. */
static inline float gs_bf16_to_f32(uint16_t h)
{
    return gs_f32_from_bits((uint32_t)h << 16);
}

static inline uint16_t gs_f32_to_bf16(float f)
{
    uint32_t u = gs_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign/payload, force quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even; carries into the exponent */
    return (uint16_t)(u >> 16);
}

static inline float gs_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* inf / NaN (payload kept) */
        return gs_f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float32 */
        float f = (float)man * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    return gs_f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline uint16_t gs_f32_to_f16(float f)
{
    uint32_t u = gs_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t ax = u & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x47800000u) /* >= 65536 (and inf): inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) {
        /* below 2^-14: an f16 subnormal (units of 2^-24) or zero */
        if (ax < 0x33000000u) /* < 2^-25: rounds to zero */
            return sign;
        uint32_t e = ax >> 23;                     /* 102..112 */
        uint32_t m = (ax & 0x7fffffu) | 0x800000u; /* value = m * 2^(e-150) */
        uint32_t shift = 126u - e;                 /* 14..24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u)))
            r++; /* may become 0x400, the smallest normal: still right */
        return (uint16_t)(sign | r);
    }
    uint32_t r = (((ax >> 23) - 112u) << 10) | ((ax >> 13) & 0x3ffu);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
        r++; /* carries into the exponent; 65520 and up become inf (0x7c00) */
    return (uint16_t)(sign | r);
}

/* Rows: n elements from src (any alignment) into dst[n]. */
static inline void gs_bf16_to_f32_row(const void *src, float *dst, size_t n)
{
    const unsigned char *s = (const unsigned char *)src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = gs_bf16_to_f32(h);
    }
}

static inline void gs_f16_to_f32_row(const void *src, float *dst, size_t n)
{
    const unsigned char *s = (const unsigned char *)src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = gs_f16_to_f32(h);
    }
}

static inline void gs_f32_to_bf16_row(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = gs_f32_to_bf16(src[i]);
}

static inline void gs_f32_to_f16_row(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = gs_f32_to_f16(src[i]);
}

#endif

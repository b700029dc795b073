/* philox.h - Philox4x32-10 (Salmon et al., "Parallel random numbers: as
 * easy as 1, 2, 3", SC'11) and the uniform [0, 1) double that gs_k_sample
 * draws for a row keyed by (seed, offset). Header-only, static inline,
 * usable from C11 and from CUDA (host and device), so that every backend
 * and the tests compute the same numbers bit for bit. */
#ifndef GS_PHILOX_H
#define GS_PHILOX_H

#include <stdint.h>

#ifdef __CUDACC__
#define GS_HOST_DEVICE __host__ __device__
#else
#define GS_HOST_DEVICE
#endif

/* Ten rounds of Philox4x32 on the counter c (in place) with key (k0, k1). */
static inline GS_HOST_DEVICE void gs_philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1)
{
    for (int i = 0; i < 10; i++) {
        const uint64_t p0 = (uint64_t)0xD2511F53u * c[0], p1 = (uint64_t)0xCD9E8D57u * c[2];
        const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        const uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

/* Uniform double in [0, 1) with 53 random bits: Philox4x32-10 keyed by
 * seed, counter (offset lo, offset hi, 0x5eed5eed, 0); the top 53 bits of
 * the first two output words. */
static inline GS_HOST_DEVICE double gs_philox_uniform(uint64_t seed, uint64_t offset)
{
    uint32_t c[4] = {(uint32_t)offset, (uint32_t)(offset >> 32), 0x5eed5eedu, 0};
    gs_philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    const uint64_t r = ((uint64_t)c[0] << 32 | c[1]) >> 11; /* 53 bits */
    return (double)r * (1.0 / 9007199254740992.0);
}

#endif

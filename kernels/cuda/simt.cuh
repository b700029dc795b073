/* simt.cuh - thread and block indices, barriers, warp shuffles and shared
 * atomics behind macros / small templates, so that a kernel body written
 * with them runs on the GPU or, in the CPU emulators of tests/gpu
 * (compiled with GS_AT_EMULATE; host pass only), on one POSIX thread per
 * CUDA thread. Used by the attention tile engine and the sampler, the
 * kernels whose logic is too intricate to leave untested until a GPU shows
 * up. Internal to kernels/cuda. */
#ifndef GS_CUDA_SIMT_CUH
#define GS_CUDA_SIMT_CUH

#include <stdint.h>
#include <string.h>

#if defined(GS_AT_EMULATE) && !defined(__CUDA_ARCH__)
#define GS_EMU 1
/* Provided by the emulator (tests/gpu/emu_simt.h). */
unsigned gs_emu_tid(void);
unsigned gs_emu_bid(int axis);
unsigned gs_emu_bdim(void);
void gs_emu_sync(void);
uint64_t gs_emu_shfl(uint64_t bits, int arg, int up);
unsigned long long gs_emu_atomic_add(unsigned long long *p, unsigned long long v);
#define GS_DEV inline
#define GS_TID gs_emu_tid()
#define GS_BIDX gs_emu_bid(0)
#define GS_BIDY gs_emu_bid(1)
#define GS_BIDZ gs_emu_bid(2)
#define GS_BDIM gs_emu_bdim()
#define GS_SYNC() gs_emu_sync()
#else
#define GS_EMU 0
#define GS_DEV __device__ __forceinline__
#define GS_TID threadIdx.x
#define GS_BIDX blockIdx.x
#define GS_BIDY blockIdx.y
#define GS_BIDZ blockIdx.z
#define GS_BDIM blockDim.x
#define GS_SYNC() __syncthreads()
#endif

/* __shfl_xor_sync / __shfl_up_sync over the full warp, any 4- or 8-byte T. */
template <class T>
GS_DEV T gs_shfl_xor(T v, int mask)
{
#if GS_EMU
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    b = gs_emu_shfl(b, mask, 0);
    T r;
    memcpy(&r, &b, sizeof r);
    return r;
#else
    return __shfl_xor_sync(0xffffffffu, v, mask);
#endif
}

template <class T>
GS_DEV T gs_shfl_up(T v, int delta)
{
#if GS_EMU
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    b = gs_emu_shfl(b, delta, 1);
    T r;
    memcpy(&r, &b, sizeof r);
    return r;
#else
    return __shfl_up_sync(0xffffffffu, v, delta);
#endif
}

GS_DEV unsigned long long gs_atomic_add_u64(unsigned long long *p, unsigned long long v)
{
#if GS_EMU
    return gs_emu_atomic_add(p, v);
#else
    return atomicAdd(p, v);
#endif
}

GS_DEV uint32_t gs_f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

#endif

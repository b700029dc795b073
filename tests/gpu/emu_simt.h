/* emu_simt.h - the CPU side of kernels/cuda/simt.cuh for the emulator
 * tests: one POSIX thread per CUDA thread of a block, blocks one after
 * another. __syncthreads is a barrier of the whole block; a warp shuffle
 * deposits each lane's value in a per-warp array between two barriers of
 * that warp. Include once per test program (defines the gs_emu_*
 * functions). Test code: exits on thread-creation failure. */
#ifndef GS_EMU_SIMT_H
#define GS_EMU_SIMT_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static __thread unsigned emu_tid;
static unsigned emu_bid[3], emu_bdim;
static pthread_barrier_t emu_bar_cta, emu_bar_warp[32];
static uint64_t emu_dep[32][32];

/* Barrier of the calling thread's warp. */
static void emu_wbar(void)
{
    pthread_barrier_wait(&emu_bar_warp[emu_tid >> 5]);
}

unsigned gs_emu_tid(void)
{
    return emu_tid;
}

unsigned gs_emu_bid(int axis)
{
    return emu_bid[axis];
}

unsigned gs_emu_bdim(void)
{
    return emu_bdim;
}

void gs_emu_sync(void)
{
    pthread_barrier_wait(&emu_bar_cta);
}

uint64_t gs_emu_shfl(uint64_t bits, int arg, int up)
{
    const unsigned w = emu_tid >> 5, l = emu_tid & 31;
    emu_dep[w][l] = bits;
    emu_wbar();
    const unsigned src = up ? (l >= (unsigned)arg ? l - (unsigned)arg : l) : (l ^ (unsigned)arg);
    const uint64_t r = emu_dep[w][src & 31];
    emu_wbar();
    return r;
}

unsigned long long gs_emu_atomic_add(unsigned long long *p, unsigned long long v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}

typedef void (*emu_fn)(void *arg);

typedef struct {
    emu_fn fn;
    void *arg;
    unsigned tid;
} emu_job;

static void *emu_thread(void *p)
{
    emu_job *j = (emu_job *)p;
    emu_tid = j->tid;
    j->fn(j->arg);
    return NULL;
}

/* Runs fn(arg) as a grid of gx x gy x gz blocks of `threads` threads
 * (a multiple of 32, at most 1024). */
static void emu_run_grid(unsigned gx, unsigned gy, unsigned gz, unsigned threads, emu_fn fn,
                         void *arg)
{
    pthread_t *th = (pthread_t *)malloc(sizeof *th * threads);
    emu_job *jobs = (emu_job *)malloc(sizeof *jobs * threads);
    pthread_attr_t attr;
    if (!th || !jobs || threads % 32 || threads > 1024) {
        fprintf(stderr, "emu_run_grid: bad block size %u\n", threads);
        exit(2);
    }
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)1 << 21);
    pthread_barrier_init(&emu_bar_cta, NULL, threads);
    for (unsigned w = 0; w < threads / 32; w++)
        pthread_barrier_init(&emu_bar_warp[w], NULL, 32);
    emu_bdim = threads;
    for (unsigned z = 0; z < gz; z++)
        for (unsigned y = 0; y < gy; y++)
            for (unsigned x = 0; x < gx; x++) {
                emu_bid[0] = x, emu_bid[1] = y, emu_bid[2] = z;
                for (unsigned i = 0; i < threads; i++) {
                    jobs[i].fn = fn;
                    jobs[i].arg = arg;
                    jobs[i].tid = i;
                    if (pthread_create(&th[i], &attr, emu_thread, &jobs[i])) {
                        fprintf(stderr, "emu_run_grid: pthread_create failed\n");
                        exit(2);
                    }
                }
                for (unsigned i = 0; i < threads; i++)
                    pthread_join(th[i], NULL);
            }
    pthread_barrier_destroy(&emu_bar_cta);
    for (unsigned w = 0; w < threads / 32; w++)
        pthread_barrier_destroy(&emu_bar_warp[w]);
    pthread_attr_destroy(&attr);
    free(th);
    free(jobs);
}

#endif

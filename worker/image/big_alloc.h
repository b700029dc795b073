/* big_alloc.h - allocation of large pixel buffers (internal to
 * worker/image). Above 4 MiB the buffer is 2 MiB-aligned and marked for
 * transparent huge pages where Linux offers madvise(MADV_HUGEPAGE): first
 * touching a fresh 50 MB pixel_values buffer costs ~20 ms of 4 KiB page
 * faults, ~7 ms with huge pages. Free with free(). Thread-safe. */
#ifndef GS_IMAGE_BIG_ALLOC_H
#define GS_IMAGE_BIG_ALLOC_H

#include <stdlib.h>
#include <sys/mman.h>

#define GS_BIG_ALLOC_MIN ((size_t)4 << 20)
#define GS_BIG_ALLOC_ALIGN ((size_t)2 << 20)

static inline void *gs_big_alloc(size_t n)
{
#ifdef MADV_HUGEPAGE
    if (n >= GS_BIG_ALLOC_MIN) {
        void *p = NULL;
        if (posix_memalign(&p, GS_BIG_ALLOC_ALIGN, n) != 0)
            return NULL;
        /* Advice only: failure (no THP support) changes nothing. */
        (void)madvise(p, (n + GS_BIG_ALLOC_ALIGN - 1) & ~(GS_BIG_ALLOC_ALIGN - 1), MADV_HUGEPAGE);
        return p;
    }
#endif
    return malloc(n ? n : 1);
}

#endif

/* par.h - a parallel for over rows, for one image's resize and patchify.
 * The threads are started for the call and joined before it returns (an
 * image of a few megapixels takes tens of milliseconds: thread starts cost
 * tens of microseconds). Internal to worker/image. */
#ifndef GS_IMAGE_PAR_H
#define GS_IMAGE_PAR_H

#include <stdint.h>

/* fn(ctx, i0, i1) over [0, n) cut into at most n_threads contiguous
 * ranges of at least min_rows rows each (fewer when n is small), the first
 * on the calling thread. A thread that cannot be started leaves its range
 * to the caller, so the work is always done; the ranges do not overlap,
 * and fn must give the same result however [0, n) is cut. */
void gs_image_par_for(int n_threads, int64_t n, int64_t min_rows,
                      void (*fn)(void *ctx, int64_t i0, int64_t i1), void *ctx);

#endif

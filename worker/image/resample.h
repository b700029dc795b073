/* resample.h - Pillow's Image.resize(size, BICUBIC) for RGB uint8 images,
 * bit for bit (ImagingResample in Pillow's src/libImaging/Resample.c:
 * Keys cubic a = -0.5, support 2 scaled by the downscale factor, 22-bit
 * fixed-point coefficients, horizontal pass then vertical pass, each
 * rounding and clipping to uint8; a pass is skipped when its dimension is
 * unchanged). Thread-safe: no state; each call allocates its own tables. */
#ifndef GS_IMAGE_RESAMPLE_H
#define GS_IMAGE_RESAMPLE_H

#include <stdint.h>

#include "common/err.h"
#include "worker/image/decode.h"

/* Resizes in (borrowed) to out_w x out_h. On success *out is a new image
 * owned by the caller (gs_image_rgb_free); its src/orientation fields are
 * copied from in. Same size: a copy, as Pillow returns. Returns 0,
 * GS_EINVAL (sizes <= 0), GS_ETOOBIG (weight tables over 1 GiB), GS_ENOMEM. */
int gs_image_resize_bicubic(const gs_image_rgb *in, int32_t out_w, int32_t out_h,
                            gs_image_rgb **out, gs_diag *d);
/* The same, each pass's rows cut between n_threads threads (started for
 * the call; <= 1: the calling thread alone). The same bytes for any
 * n_threads: every output sample is computed alone. */
int gs_image_resize_bicubic_mt(const gs_image_rgb *in, int32_t out_w, int32_t out_h, int n_threads,
                               gs_image_rgb **out, gs_diag *d);

#endif

/* preprocess.h - RGB image -> GLM-4V pixel_values, exactly as transformers'
 * Glm46VImageProcessorPil (the PIL backend) computes them:
 *   smart_resize (glm4v-spec.md 5.2) -> Pillow BICUBIC resize (resample.h)
 *   -> x * rescale_factor (float64, stored as float32)
 *   -> (x - mean) / std (float32) -> patchify (spec 5.4).
 *
 * Row order of pixel_values (spec 3.3 / 5.4): for bh < gh/m, bw < gw/m,
 * mh < m, mw < m (m = merge_size): patch (h, w) = (bh*m + mh, bw*m + mw).
 * Each row holds 3 * T * P * P floats (T = temporal_patch_size, P =
 * patch_size) in (c, t, y, x) order: index ((c*T + t)*P + y)*P + x =
 * pixel[c][P*h + y][P*w + x], the same for every t (a still image fills
 * all T frames). gs_image_patch_coords writes the (h, w) of every row.
 *
 * Every number comes from preprocessor_config.json (gs_image_params_load).
 * Thread-safe: no state; a gs_image_params is read-only after loading. */
#ifndef GS_IMAGE_PREPROCESS_H
#define GS_IMAGE_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "worker/image/decode.h"

/* Plain value, filled by gs_image_params_load/parse. */
typedef struct {
    int32_t patch_size;          /* P ("patch_size") */
    int32_t temporal_patch_size; /* T ("temporal_patch_size") */
    int32_t merge_size;          /* m ("merge_size") */
    int64_t min_pixels;          /* "size.shortest_edge" (or "min_pixels") */
    int64_t max_pixels;          /* "size.longest_edge" (or "max_pixels") */
    double rescale_factor;       /* "rescale_factor", default 1/255 */
    float image_mean[3];         /* "image_mean" (float32, as numpy uses them) */
    float image_std[3];          /* "image_std" */
    int32_t do_resize;           /* "do_resize", default 1 */
    int32_t do_rescale;          /* "do_rescale", default 1 */
    int32_t do_normalize;        /* "do_normalize", default 1 */
    /* Not from the file: threads for one image's resize and patchify
     * (started per call; 0 or 1: the calling thread alone). The pixels are
     * the same for any count. */
    int32_t n_threads;
} gs_image_params;

/* Reads preprocessor_config.json. path is the model folder (the file name
 * is appended) or the JSON file itself; borrowed. Keys: patch_size,
 * temporal_patch_size, merge_size (required positive integers); size
 * {shortest_edge, longest_edge}, or else top-level min_pixels/max_pixels,
 * or size {min_pixels, max_pixels}; image_mean, image_std (3 numbers or
 * one, std > 0); optional rescale_factor (> 0), do_resize, do_rescale,
 * do_normalize (booleans) and resample (must be 3 = BICUBIC). Returns 0,
 * GS_ENOENT/GS_EIO (file), GS_EFORMAT (not JSON), GS_ECONFIG (a key missing
 * or invalid: d names it), GS_EUNSUPPORTED (resample other than bicubic). */
int gs_image_params_load(const char *path, gs_image_params *out, gs_diag *d);
/* The same from JSON text json[0..len) (borrowed). */
int gs_image_params_parse(const char *json, size_t len, gs_image_params *out, gs_diag *d);

/* transformers' smart_resize for one image (num_frames = temporal factor
 * = T, factor = P*m): the resized height and width. Python semantics:
 * round() half-to-even, int() truncation, float64 maths. Returns 0,
 * GS_EINVAL (non-positive size, or aspect ratio > 200 after the small-side
 * pre-scale: the message gives the ratio). */
int gs_image_smart_resize(const gs_image_params *p, int32_t height, int32_t width, int32_t *out_h,
                          int32_t *out_w, gs_diag *d);

/* The LLM placeholder tokens an image of height x width (as decoded,
 * before or after a 90-degree EXIF turn: the count is the same) becomes,
 * what gs_image_preprocess's n_tokens will be, known from the header
 * before any pixel is decoded. 0, or gs_image_preprocess's errors for that
 * size (GS_EINVAL: aspect ratio, or a size not divisible by P*m without
 * do_resize; GS_ETOOBIG). */
int gs_image_token_count(const gs_image_params *p, int32_t height, int32_t width, int32_t *n_tokens,
                         gs_diag *d);

/* One image's model input. Owned by its receiver; gs_image_patches_free. */
typedef struct {
    int64_t n_patches;              /* rows: grid_t * grid_h * grid_w */
    int32_t patch_dim;              /* 3 * T * P * P (1176) */
    int32_t grid_t, grid_h, grid_w; /* image_grid_thw (t = 1 for an image) */
    int32_t n_tokens;               /* LLM placeholder tokens: n_patches / m^2 */
    int32_t resized_w, resized_h;   /* size after smart_resize */
    float *pixels;                  /* [n_patches, patch_dim] f32 */
} gs_image_patches;

/* Full pipeline on a decoded image (borrowed). On success *out is owned
 * by the caller. Returns 0, GS_EINVAL (bad params, aspect ratio, or
 * do_resize false with a size not divisible by P*m), GS_ETOOBIG (rows
 * overflow), GS_ENOMEM. */
int gs_image_preprocess(const gs_image_rgb *img, const gs_image_params *p, gs_image_patches **out,
                        gs_diag *d);

/* Rescale + normalise + patchify an image that already has its final size
 * (both sides multiples of P*m); no resize. Borrows img. Same returns. */
int gs_image_patchify(const gs_image_rgb *img, const gs_image_params *p, gs_image_patches **out,
                      gs_diag *d);

void gs_image_patches_free(gs_image_patches *pt); /* NULL: no-op */

/* (h, w) patch coordinates of each row, for grid_h x grid_w patches and
 * merge m: hw[2*i] = h, hw[2*i + 1] = w for i < grid_h * grid_w (repeat
 * for further frames). hw: caller-allocated [grid_h * grid_w, 2] int32.
 * Returns 0 or GS_EINVAL (grid not divisible by m). */
int gs_image_patch_coords(int32_t grid_h, int32_t grid_w, int32_t merge, int32_t *hw);

#endif

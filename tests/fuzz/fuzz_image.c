/* fuzz_image.c - libFuzzer target for the worker's image path
 * (worker/image/): JPEG/PNG sniffing, header probing, decoding with EXIF
 * and XMP orientation, then GLM-4V preprocessing (smart_resize, bicubic
 * resize, normalise, patchify) with the tiny model's
 * preprocessor_config.json; the EXIF/XMP readers also run on the raw
 * input.
 *
 * Input: the image file's bytes. Its length's two low bits pick the flags
 * (bit 0: GS_IMAGE_DECODE_STRICT, bit 1: GS_IMAGE_DECODE_IGNORE_EXIF).
 * Limits are small (256 Ki pixels decoded, 256 Ki pixels after the
 * resize) to keep the executions fast; over them is a clean GS_ETOOBIG.
 * Checked besides memory safety: a decoded image has the probed size (or
 * its transpose), at most the pixel limit, an orientation 1..8; patches
 * agree with their grid and are finite. Built with libFuzzer (GS_FUZZ=ON)
 * and as replay_image (ctest). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "tests/fuzz/fuzz_util.h"
#include "worker/image/decode.h"
#include "worker/image/exif.h"
#include "worker/image/preprocess.h"

#define MAX_PIXELS (1 << 18)

static gs_image_params params;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    gs_diag d;
    if (!init) {
        if (gs_image_params_load(fz_fixture("tiny-glm4v"), &params, &d)) {
            fprintf(stderr, "fuzz_image: %s\n", d.msg);
            abort();
        }
        params.max_pixels = MAX_PIXELS;
        init = 1;
    }
    (void)gs_exif_orientation(data, size);
    (void)gs_xmp_orientation(data, size);
    (void)gs_exif_orientation_raw_profile((const char *)data, size);

    gs_image_info info;
    int prc = gs_image_probe(data, size, &info, &d);
    gs_image_decode_params dp = gs_image_decode_defaults();
    dp.max_pixels = MAX_PIXELS;
    dp.flags =
        (size & 1 ? GS_IMAGE_DECODE_STRICT : 0u) | (size & 2 ? GS_IMAGE_DECODE_IGNORE_EXIF : 0u);
    gs_image_rgb *img = NULL;
    int rc = gs_image_decode(data, size, &dp, &img, &d);
    if (rc) {
        if (img || rc >= 0)
            __builtin_trap();
        return 0;
    }
    if (!img || !img->data || img->w < 1 || img->h < 1 || (int64_t)img->w * img->h > MAX_PIXELS ||
        img->orientation < 1 || img->orientation > 8)
        __builtin_trap();
    if (prc == 0 && !((info.width == img->w && info.height == img->h) ||
                      (info.width == img->h && info.height == img->w)))
        __builtin_trap();
    gs_image_patches *pt = NULL;
    if (gs_image_preprocess(img, &params, &pt, &d) == 0) {
        const int m = params.merge_size;
        if (pt->n_patches != (int64_t)pt->grid_t * pt->grid_h * pt->grid_w ||
            (int64_t)pt->n_tokens * m * m != pt->n_patches)
            __builtin_trap();
        for (int64_t i = 0; i < pt->n_patches * pt->patch_dim; i++)
            if (!isfinite(pt->pixels[i]))
                __builtin_trap();
        gs_image_patches_free(pt);
    }
    gs_image_rgb_free(img);
    return 0;
}

/* decode.h - JPEG/PNG bytes -> RGB uint8 image, the way transformers'
 * load_image does it with Pillow: PIL.ImageOps.exif_transpose, then
 * .convert("RGB").
 *
 * - Format from the magic bytes only (JPEG FF D8 FF, PNG signature); other
 *   formats are GS_EUNSUPPORTED with a diag naming what was recognised.
 * - EXIF orientation 1..8 (JPEG APP1 "Exif", PNG eXIf or "Raw profile type
 *   exif" text; XMP tiff:Orientation when EXIF has no tag, as Pillow's
 *   getexif does) is applied exactly as exif_transpose does. Unreadable
 *   EXIF is ignored (orientation 1).
 * - Grey is replicated into R, G, B; palettes are expanded; alpha is
 *   DROPPED, not composited (the stored RGB under transparent pixels is
 *   kept); 16-bit RGB/RGBA/grey-alpha keep the high byte; 16-bit grey is
 *   clipped to 255 (Pillow's I;16 -> RGB); CMYK JPEGs are converted with
 *   Pillow's formula (Adobe-inverted CMYK). docs/image.md has the details.
 * - Limits: the pixel count is checked from the header, before any pixel
 *   buffer is allocated; the input size before anything is parsed.
 * - Truncated or corrupt files are errors, never grey-filled images
 *   (libjpeg warnings Pillow tolerates are tolerated unless
 *   GS_IMAGE_DECODE_STRICT).
 *
 * Threading: every function is reentrant (no globals; each call makes and
 * frees its own decoder state). */
#ifndef GS_IMAGE_DECODE_H
#define GS_IMAGE_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef enum { GS_IMAGE_FMT_NONE = 0, GS_IMAGE_FMT_JPEG, GS_IMAGE_FMT_PNG } gs_image_format;

/* What the file held, in Pillow's mode names. */
typedef enum {
    GS_IMAGE_SRC_NONE = 0,
    GS_IMAGE_SRC_L,    /* grey, any bit depth <= 8 (Pillow "L" / "1") */
    GS_IMAGE_SRC_I16,  /* 16-bit grey PNG (Pillow "I;16") */
    GS_IMAGE_SRC_LA,   /* grey + alpha */
    GS_IMAGE_SRC_RGB,  /* 8- or 16-bit RGB */
    GS_IMAGE_SRC_RGBA, /* 8- or 16-bit RGBA */
    GS_IMAGE_SRC_P,    /* palette */
    GS_IMAGE_SRC_CMYK  /* 4-component JPEG (CMYK or YCCK) */
} gs_image_src_mode;

/* Header facts, known before any pixel is decoded. Plain value. */
typedef struct {
    gs_image_format format;
    gs_image_src_mode mode;
    int32_t width, height; /* as stored, before EXIF orientation */
    int32_t bit_depth;     /* 8 for JPEG; 1, 2, 4, 8 or 16 for PNG */
} gs_image_info;

/* Decoder flags (named bits). */
enum {
    GS_IMAGE_DECODE_IGNORE_EXIF = 1u << 0, /* do not apply the orientation */
    GS_IMAGE_DECODE_STRICT = 1u << 1       /* libjpeg warnings (corrupt entropy data,
                                              which Pillow accepts) become GS_EFORMAT */
};

typedef struct {
    int64_t max_pixels; /* stored width*height above this: GS_ETOOBIG (from the header) */
    size_t max_bytes;   /* inputs longer than this: GS_ETOOBIG */
    uint32_t flags;     /* GS_IMAGE_DECODE_* */
} gs_image_decode_params;

/* A decoded image. Owned by whoever received it; free with
 * gs_image_rgb_free. */
typedef struct {
    int32_t w, h;
    uint8_t *data;       /* [h, w, 3] RGB u8, rows packed (stride 3*w) */
    gs_image_info src;   /* what the file held (stored size, mode) */
    int32_t orientation; /* EXIF orientation applied, 1..8 (1: none) */
} gs_image_rgb;

/* Defaults: max_pixels 89,478,485 (Pillow's MAX_IMAGE_PIXELS), max_bytes
 * 64 MiB, flags 0. */
gs_image_decode_params gs_image_decode_defaults(void);

/* Format from the first bytes: JPEG, PNG, or GS_IMAGE_FMT_NONE. */
gs_image_format gs_image_sniff(const void *bytes, size_t len);

/* Reads only the header (and checks nothing beyond it). Borrows bytes.
 * Returns 0, GS_EINVAL (empty), GS_EUNSUPPORTED (not JPEG/PNG),
 * GS_EFORMAT (malformed header), GS_ENOMEM. */
int gs_image_probe(const void *bytes, size_t len, gs_image_info *out, gs_diag *d);

/* Decodes bytes[0..len) (borrowed) into a new RGB image. p may be NULL for
 * the defaults. On success *out is owned by the caller (gs_image_rgb_free);
 * on failure *out is NULL and d says why. Returns 0, GS_EINVAL (empty
 * input or bad arguments), GS_ETOOBIG (max_bytes or max_pixels),
 * GS_EUNSUPPORTED (not JPEG/PNG, or a JPEG/PNG variant the libraries
 * cannot decode), GS_EFORMAT (truncated or corrupt), GS_ENOMEM. */
int gs_image_decode(const void *bytes, size_t len, const gs_image_decode_params *p,
                    gs_image_rgb **out, gs_diag *d);

/* A new w x h image with uninitialised pixels, src zeroed, orientation 1.
 * Returns owned (gs_image_rgb_free) or NULL (bad size or out of memory). */
gs_image_rgb *gs_image_rgb_new(int32_t w, int32_t h);
void gs_image_rgb_free(gs_image_rgb *img); /* NULL: no-op */

/* Applies EXIF orientation o to img in place, the way Pillow's
 * exif_transpose does: 2 flip left-right, 3 rotate 180, 4 flip top-bottom,
 * 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
 * counter-clockwise; 5..8 swap w and h. Other values change nothing.
 * img->data may be replaced (the old buffer is freed). Returns 0 or
 * GS_ENOMEM (img unchanged). */
int gs_image_orient(gs_image_rgb *img, int orientation);

#endif

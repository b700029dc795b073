/* img_util.h - helpers for the image tests: encode JPEG (TurboJPEG) and PNG
 * (libspng) in memory, splice an EXIF APP1 segment, CRC-32 for hand-made
 * PNG chunks, a deterministic synthetic picture, decode shorthands.
 * Header-only (static inline). */
#ifndef GS_TEST_IMG_UTIL_H
#define GS_TEST_IMG_UTIL_H

#include <spng.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "worker/image/decode.h"

/* w x h x ch bytes of a smooth, varied pattern (seeded). Caller frees. */
static inline uint8_t *tu_pattern(int w, int h, int ch, uint32_t seed)
{
    uint8_t *p = malloc((size_t)w * h * ch);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                seed = seed * 1664525u + 1013904223u;
                int v = (x * 255) / (w > 1 ? w - 1 : 1) * (c == 0) +
                        (y * 255) / (h > 1 ? h - 1 : 1) * (c == 1) + 60 * (c >= 2) +
                        (int)(seed >> 29);
                p[((size_t)y * w + x) * ch + c] = (uint8_t)(v > 255 ? 255 : v);
            }
    return p;
}

/* JPEG of pixels in pixel format pf (TJPF_RGB, TJPF_GRAY, TJPF_CMYK).
 * Returns malloc'd bytes (free()) and *len. */
static inline uint8_t *tu_jpeg(const uint8_t *px, int w, int h, int pf, int subsamp, int q,
                               size_t *len)
{
    tjhandle tj = tjInitCompress();
    unsigned char *buf = NULL;
    unsigned long n = 0;
    uint8_t *out = NULL;
    if (tj && tjCompress2(tj, px, w, 0, h, pf, &buf, &n, subsamp, q, 0) == 0) {
        out = malloc(n);
        memcpy(out, buf, n);
        *len = n;
    }
    tjFree(buf);
    tjDestroy(tj);
    return out;
}

/* What TurboJPEG alone decodes, for comparisons. Caller frees. */
static inline uint8_t *tu_tj_decode(const uint8_t *b, size_t len, int pf, int *w, int *h)
{
    tjhandle tj = tjInitDecompress();
    int ss, cs;
    uint8_t *out = NULL;
    if (tj && tjDecompressHeader3(tj, b, (unsigned long)len, w, h, &ss, &cs) == 0) {
        out = malloc((size_t)*w * *h * tjPixelSize[pf]);
        if (tjDecompress2(tj, b, (unsigned long)len, out, *w, 0, *h, pf, 0) != 0 &&
            tjGetErrorCode(tj) != TJERR_WARNING) {
            free(out);
            out = NULL;
        }
    }
    tjDestroy(tj);
    return out;
}

typedef struct {
    uint32_t w, h;
    uint8_t color_type, bit_depth, interlace;
    const struct spng_plte *plte; /* palette images */
    const struct spng_trns *trns;
    const uint8_t *exif; /* eXIf payload (TIFF), exif_len bytes */
    size_t exif_len;
} tu_png_params;

/* PNG of raw PNG-layout rows (big-endian 16-bit samples, packed low bit
 * depths). Returns malloc'd bytes (free()) and *len, or NULL. */
static inline uint8_t *tu_png(const tu_png_params *p, const void *raw, size_t raw_len, size_t *len)
{
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    struct spng_ihdr ih = {p->w, p->h, p->bit_depth, p->color_type, 0, 0, p->interlace};
    uint8_t *out = NULL;
    int err = 0;
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    spng_set_ihdr(ctx, &ih);
    if (p->plte)
        spng_set_plte(ctx, (struct spng_plte *)p->plte);
    if (p->trns)
        spng_set_trns(ctx, (struct spng_trns *)p->trns);
    if (p->exif) {
        struct spng_exif ex = {p->exif_len, (char *)p->exif};
        spng_set_exif(ctx, &ex);
    }
    if (spng_encode_image(ctx, raw, raw_len, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE) == 0)
        out = spng_get_png_buffer(ctx, len, &err);
    spng_ctx_free(ctx);
    return err ? NULL : out;
}

/* TIFF/EXIF blob with one IFD0 entry (Orientation, SHORT, count 1).
 * With prefix: "Exif\0\0" first. Writes into out (>= 32 bytes); returns
 * the length. */
static inline size_t tu_exif(uint8_t *out, int big_endian, int orientation, int prefix)
{
    size_t n = 0;
    if (prefix) {
        memcpy(out, "Exif\0\0", 6);
        n = 6;
    }
    uint8_t *t = out + n;
    const uint8_t le[] = {
        'I', 'I', 0x2a, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, (uint8_t)orientation,
        0,   0,   0,    0, 0, 0, 0};
    const uint8_t be[] = {'M',  'M',  0, 0x2a, 0, 0, 0, 8, 0, 1,
                          0x01, 0x12, 0, 3,    0, 0, 0, 1, 0, (uint8_t)orientation,
                          0,    0,    0, 0,    0, 0};
    memcpy(t, big_endian ? be : le, sizeof le);
    return n + sizeof le;
}

/* jpeg with an APP1 segment holding payload[0..n) inserted after SOI.
 * Returns malloc'd bytes and *out_len. */
static inline uint8_t *tu_splice_app1(const uint8_t *jpg, size_t len, const uint8_t *payload,
                                      size_t n, size_t *out_len)
{
    uint8_t *o = malloc(len + n + 4);
    memcpy(o, jpg, 2);
    o[2] = 0xFF;
    o[3] = 0xE1;
    o[4] = (uint8_t)((n + 2) >> 8);
    o[5] = (uint8_t)(n + 2);
    memcpy(o + 6, payload, n);
    memcpy(o + 6 + n, jpg + 2, len - 2);
    *out_len = len + n + 4;
    return o;
}

static inline uint32_t tu_crc32(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static inline void tu_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Offset of the first JPEG marker mk (FF mk) after SOI, or 0. */
static inline size_t tu_find_marker(const uint8_t *b, size_t len, uint8_t mk)
{
    for (size_t i = 2; i + 1 < len; i++)
        if (b[i] == 0xFF && b[i + 1] == mk)
            return i;
    return 0;
}

/* gs_image_decode with default limits and the given flags. */
static inline int tu_decode(const uint8_t *b, size_t n, uint32_t flags, gs_image_rgb **img,
                            gs_diag *d)
{
    gs_image_decode_params p = gs_image_decode_defaults();
    p.flags = flags;
    return gs_image_decode(b, n, &p, img, d);
}

/* Encodes raw rows as PNG (tu_png) and decodes them. */
static inline int tu_png_decode(const tu_png_params *pp, const void *raw, size_t raw_len,
                                gs_image_rgb **img)
{
    size_t n = 0;
    uint8_t *png = tu_png(pp, raw, raw_len, &n);
    if (!png)
        return -999;
    gs_diag d = {0};
    int rc = tu_decode(png, n, 0, img, &d);
    if (rc)
        fprintf(stderr, "  decode: %s\n", d.msg);
    free(png);
    return rc;
}

/* Every pixel i of img must equal (exprR, exprG, exprB) (expressions of
 * i); otherwise frees img and fails the test (needs test.h). */
#define CHECK_PIXELS(img, npx, exprR, exprG, exprB)                                                \
    do {                                                                                           \
        for (int i = 0; i < (npx); i++) {                                                          \
            const uint8_t *q = (img)->data + 3 * i;                                                \
            if (q[0] != (uint8_t)(exprR) || q[1] != (uint8_t)(exprG) ||                            \
                q[2] != (uint8_t)(exprB)) {                                                        \
                int r_ = q[0], g_ = q[1], b_ = q[2];                                               \
                gs_image_rgb_free(img);                                                            \
                GS_FAIL_("pixel %d = (%d,%d,%d), want (%d,%d,%d)", i, r_, g_, b_,                  \
                         (int)(uint8_t)(exprR), (int)(uint8_t)(exprG), (int)(uint8_t)(exprB));     \
            }                                                                                      \
        }                                                                                          \
    } while (0)

#endif

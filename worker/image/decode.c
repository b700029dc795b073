/* decode.c - JPEG (TurboJPEG 2.x API) and PNG (libspng) decoding into RGB
 * uint8, EXIF orientation, and the input limits.
 *
 * Owns: the gs_image_rgb buffers it returns. Does not own the input bytes.
 * Each call makes its own tjhandle / spng_ctx, so all functions are
 * reentrant and may run on any number of threads at once.
 *
 * Reference behaviour is Pillow 13 as used by transformers' load_image
 * (exif_transpose, then convert("RGB")):
 * - JPEG: libjpeg(-turbo) with its defaults (ISLOW IDCT, fancy
 *   upsampling) = tjDecompress2 with flags 0 (plus TJFLAG_LIMITSCANS,
 *   which only refuses hostile progressive files). Before decoding, the
 *   marker structure is walked (bounded, O(n)): it finds the EXIF/XMP
 *   APP1 segments and proves the data reaches an EOI marker, so a cut-off
 *   file is an error instead of libjpeg's grey-filled warning image
 *   (Pillow also refuses those: "image file is truncated"). Other libjpeg
 *   warnings are accepted as Pillow accepts them, unless the caller asks
 *   for GS_IMAGE_DECODE_STRICT.
 * - PNG: spng with no gamma and no tRNS (Pillow applies neither); the
 *   output format per colour type is chosen so that the RGB bytes equal
 *   Pillow's convert("RGB") (see png_decode).
 * - The pixel limit is checked from the header (tjDecompressHeader3,
 *   spng_get_ihdr) before any pixel buffer exists. */
#include "worker/image/decode.h"
#include "worker/image/big_alloc.h"

#include <limits.h>
#include <spng.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "common/log.h"
#include "worker/image/exif.h"

#define DEFAULT_MAX_PIXELS 89478485 /* Pillow's Image.MAX_IMAGE_PIXELS */
#define DEFAULT_MAX_BYTES ((size_t)64 << 20)
#define PNG_TEXT_CACHE_LIMIT ((size_t)16 << 20) /* decompressed text/ICC chunks */

gs_image_decode_params gs_image_decode_defaults(void)
{
    gs_image_decode_params p = {DEFAULT_MAX_PIXELS, DEFAULT_MAX_BYTES, 0};
    return p;
}

static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

gs_image_format gs_image_sniff(const void *bytes, size_t len)
{
    const uint8_t *b = bytes;
    if (!b)
        return GS_IMAGE_FMT_NONE;
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF)
        return GS_IMAGE_FMT_JPEG;
    if (len >= 8 && memcmp(b, png_sig, 8) == 0)
        return GS_IMAGE_FMT_PNG;
    return GS_IMAGE_FMT_NONE;
}

/* Names a few formats we recognise but do not decode, for the diag. */
static const char *other_format(const uint8_t *b, size_t len)
{
    if (len >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0))
        return "GIF";
    if (len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0)
        return "WebP";
    if (len >= 4 && (memcmp(b, "II*\0", 4) == 0 || memcmp(b, "MM\0*", 4) == 0))
        return "TIFF";
    if (len >= 12 && memcmp(b + 4, "ftyp", 4) == 0)
        return "HEIF/AVIF (ISO BMFF)";
    if (len >= 2 && b[0] == 'B' && b[1] == 'M')
        return "BMP";
    if (len >= 12 && memcmp(b, "\0\0\0\x0cjP  ", 8) == 0)
        return "JPEG 2000";
    if (len >= 4 && memcmp(b, "\0\0\1\0", 4) == 0)
        return "ICO";
    if (len >= 5 && (memcmp(b, "<?xml", 5) == 0 || memcmp(b, "<svg", 4) == 0))
        return "SVG/XML";
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8)
        return "JPEG without a marker after SOI";
    if (len >= 4 && memcmp(b, png_sig, 4) == 0)
        return "PNG with a damaged signature";
    return NULL;
}

gs_image_rgb *gs_image_rgb_new(int32_t w, int32_t h)
{
    if (w <= 0 || h <= 0 || (uint64_t)w * (uint64_t)h > SIZE_MAX / 3)
        return NULL;
    gs_image_rgb *img = calloc(1, sizeof *img);
    if (!img)
        return NULL;
    img->data = gs_big_alloc((size_t)w * (size_t)h * 3);
    if (!img->data) {
        free(img);
        return NULL;
    }
    img->w = w;
    img->h = h;
    img->orientation = 1;
    return img;
}

void gs_image_rgb_free(gs_image_rgb *img)
{
    if (!img)
        return;
    free(img->data);
    free(img);
}

/* ------------------------------------------------------------------ */
/* Orientation                                                         */

/* Source pixel (sx, sy) for destination (x, y) of the transposed image;
 * W, H are the source size. Pillow's Image.Transpose semantics. */
static void orient_src(int o, int32_t W, int32_t H, int32_t x, int32_t y, int32_t *sx, int32_t *sy)
{
    switch (o) {
    case 2:
        *sx = W - 1 - x;
        *sy = y;
        break; /* FLIP_LEFT_RIGHT */
    case 3:
        *sx = W - 1 - x;
        *sy = H - 1 - y;
        break; /* ROTATE_180 */
    case 4:
        *sx = x;
        *sy = H - 1 - y;
        break; /* FLIP_TOP_BOTTOM */
    case 5:
        *sx = y;
        *sy = x;
        break; /* TRANSPOSE */
    case 6:
        *sx = y;
        *sy = H - 1 - x;
        break; /* ROTATE_270 (clockwise 90) */
    case 7:
        *sx = W - 1 - y;
        *sy = H - 1 - x;
        break; /* TRANSVERSE */
    case 8:
        *sx = W - 1 - y;
        *sy = x;
        break; /* ROTATE_90 (counter-clockwise) */
    default:
        *sx = x;
        *sy = y;
        break;
    }
}

int gs_image_orient(gs_image_rgb *img, int o)
{
    if (!img || o < 2 || o > 8)
        return 0;
    const int32_t W = img->w, H = img->h;
    const int32_t ow = o >= 5 ? H : W, oh = o >= 5 ? W : H;
    uint8_t *dst = gs_big_alloc((size_t)W * (size_t)H * 3);
    if (!dst)
        return GS_ENOMEM;
    const uint8_t *src = img->data;
    for (int32_t y = 0; y < oh; y++) {
        uint8_t *drow = dst + (size_t)y * (size_t)ow * 3;
        /* Along a destination row the source moves by a constant step. */
        int32_t sx0, sy0, sx1, sy1;
        orient_src(o, W, H, 0, y, &sx0, &sy0);
        if (ow > 1)
            orient_src(o, W, H, 1, y, &sx1, &sy1);
        else
            sx1 = sx0, sy1 = sy0;
        const ptrdiff_t step = ((ptrdiff_t)(sy1 - sy0) * W + (sx1 - sx0)) * 3;
        const uint8_t *s = src + ((size_t)sy0 * (size_t)W + (size_t)sx0) * 3;
        for (int32_t x = 0; x < ow; x++, s += step) {
            drow[3 * x + 0] = s[0];
            drow[3 * x + 1] = s[1];
            drow[3 * x + 2] = s[2];
        }
    }
    free(img->data);
    img->data = dst;
    img->w = ow;
    img->h = oh;
    img->orientation = o;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Limits                                                              */

static int check_pixels(const gs_image_decode_params *p, const char *fmt, int64_t w, int64_t h,
                        gs_diag *d)
{
    if (w <= 0 || h <= 0)
        return gs_diag_set(d, GS_EFORMAT, "%s header has an empty size %lldx%lld", fmt,
                           (long long)w, (long long)h);
    if (w > INT32_MAX / 3 || h > INT32_MAX / 3 || w * h > p->max_pixels)
        return gs_diag_set(
            d, GS_ETOOBIG, "%s image is %lldx%lld = %lld pixels, above the limit of %lld", fmt,
            (long long)w, (long long)h, (long long)(w * h), (long long)p->max_pixels);
    return 0;
}

/* ------------------------------------------------------------------ */
/* JPEG                                                                */

typedef struct {
    const uint8_t *exif; /* first Exif APP1 payload ("Exif\0\0" + TIFF) */
    size_t exif_len;
    uint8_t *exif_buf;  /* owned: concatenation when there are several */
    const uint8_t *xmp; /* last XMP APP1 packet */
    size_t xmp_len;
    int n_scans;
} jpeg_meta;

static int jpeg_meta_add_exif(jpeg_meta *m, const uint8_t *s, size_t n)
{
    if (!m->exif) {
        m->exif = s;
        m->exif_len = n;
        return 0;
    }
    /* Pillow appends later Exif segments without their 6-byte prefix. */
    uint8_t *nb = realloc(m->exif_buf, m->exif_len + n - 6);
    if (!nb)
        return GS_ENOMEM;
    if (!m->exif_buf)
        memcpy(nb, m->exif, m->exif_len);
    memcpy(nb + m->exif_len, s + 6, n - 6);
    m->exif_buf = nb;
    m->exif = nb;
    m->exif_len += n - 6;
    return 0;
}

/* Walks the marker segments from SOI to EOI. Returns 0 when an EOI marker
 * is reached, GS_EFORMAT (truncated, bad segment length) otherwise. */
static int jpeg_walk(const uint8_t *b, size_t len, jpeg_meta *m, gs_diag *d)
{
    static const char xmp_id[] = "http://ns.adobe.com/xap/1.0/";
    size_t i = 2;
    for (;;) {
        /* Find the next marker; bytes that are not one are skipped, as
         * libjpeg does ("extraneous bytes before marker"). */
        const uint8_t *ff = i < len ? memchr(b + i, 0xFF, len - i) : NULL;
        if (!ff)
            break;
        i = (size_t)(ff - b);
        while (i < len && b[i] == 0xFF)
            i++;
        if (i >= len)
            break;
        const uint8_t mk = b[i++];
        if (mk == 0xD9)
            return 0; /* EOI */
        if (mk == 0x00 || mk == 0x01 || (mk >= 0xD0 && mk <= 0xD8))
            continue; /* stuffed byte, TEM, RSTn, SOI: no length field */
        if (len - i < 2)
            break;
        const size_t seg = (size_t)b[i] << 8 | b[i + 1];
        if (seg < 2)
            return gs_diag_set(d, GS_EFORMAT, "JPEG marker 0x%02X at byte %zu has length %zu", mk,
                               i - 1, seg);
        if (len - i < seg)
            break;
        const uint8_t *s = b + i + 2;
        const size_t n = seg - 2;
        if (mk == 0xE1 && n >= 6 && memcmp(s, "Exif\0\0", 6) == 0) {
            if (jpeg_meta_add_exif(m, s, n))
                return gs_diag_set(d, GS_ENOMEM, "out of memory reading JPEG EXIF");
        } else if (mk == 0xE1 && n >= sizeof xmp_id && memcmp(s, xmp_id, sizeof xmp_id) == 0) {
            m->xmp = s + sizeof xmp_id;
            m->xmp_len = n - sizeof xmp_id;
        }
        i += seg;
        if (mk == 0xDA) {
            /* Entropy-coded data: runs to the first marker that is not a
             * stuffed 0xFF00 or an RSTn. */
            m->n_scans++;
            for (;;) {
                ff = i < len ? memchr(b + i, 0xFF, len - i) : NULL;
                if (!ff) {
                    i = len;
                    break;
                }
                i = (size_t)(ff - b);
                if (i + 1 >= len) {
                    i = len;
                    break;
                }
                const uint8_t nx = b[i + 1];
                if (nx == 0x00 || (nx >= 0xD0 && nx <= 0xD7))
                    i += 2;
                else if (nx == 0xFF)
                    i++;
                else
                    break;
            }
            if (i >= len)
                break;
        }
    }
    return gs_diag_set(d, GS_EFORMAT,
                       "truncated JPEG: the data (%zu bytes) ends before the EOI marker", len);
}

static gs_image_src_mode jpeg_mode(int cs)
{
    if (cs == TJCS_CMYK || cs == TJCS_YCCK)
        return GS_IMAGE_SRC_CMYK;
    return cs == TJCS_GRAY ? GS_IMAGE_SRC_L : GS_IMAGE_SRC_RGB;
}

/* Size and component count from the first SOFn segment (the header
 * segments before it are walked; nothing after). 0, or -1 when there is no
 * readable frame header. */
static int jpeg_sof(const uint8_t *b, size_t len, int *w, int *h, int *ncomp)
{
    size_t i = 2;
    while (i < len && b[i] == 0xFF) {
        while (i < len && b[i] == 0xFF)
            i++;
        if (i >= len)
            return -1;
        const uint8_t mk = b[i++];
        if (mk == 0x01 || (mk >= 0xD0 && mk <= 0xD8))
            continue;
        if (mk == 0xD9 || mk == 0xDA || len - i < 2)
            return -1;
        const size_t seg = (size_t)b[i] << 8 | b[i + 1];
        if (seg < 2 || len - i < seg)
            return -1;
        if (mk >= 0xC0 && mk <= 0xCF && mk != 0xC4 && mk != 0xC8 && mk != 0xCC) {
            if (seg < 8)
                return -1;
            *h = b[i + 3] << 8 | b[i + 4];
            *w = b[i + 5] << 8 | b[i + 6];
            *ncomp = b[i + 7];
            return 0;
        }
        i += seg;
    }
    return -1;
}

/* tjDecompressHeader3, accepting a mere warning (e.g. "extraneous bytes
 * before marker", which Pillow ignores) unless strict. TurboJPEG 2.x also
 * refuses headers whose chroma sampling is not one of its TJSAMP_* kinds
 * although tjDecompress2 decodes them (and Pillow does); then the size and
 * colour space come from the SOF segment. 0 or GS_EFORMAT. */
static int jpeg_header(tjhandle tj, const uint8_t *b, size_t len, int strict, int *w, int *h,
                       int *cs, gs_diag *d)
{
    int ss = -1, nc = 0;
    *w = *h = 0;
    *cs = -1;
    if (tjDecompressHeader3(tj, b, (unsigned long)len, w, h, &ss, cs) == 0)
        return 0;
    const char *msg = tjGetErrorStr2(tj);
    if (tjGetErrorCode(tj) == TJERR_WARNING && !strict && *w > 0 && *h > 0)
        return 0;
    if (strstr(msg, "subsampling") && jpeg_sof(b, len, w, h, &nc) == 0 &&
        (nc == 1 || nc == 3 || nc == 4)) {
        *cs = nc == 1 ? TJCS_GRAY : nc == 4 ? TJCS_CMYK : TJCS_YCbCr;
        return 0;
    }
    return gs_diag_set(d, GS_EFORMAT, "bad JPEG header: %s", msg);
}

/* Pillow's CMYK;I unpack (Adobe inverted) followed by cmyk2rgb. */
static void cmyk_to_rgb(const uint8_t *in, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++, in += 4, out += 3) {
        const int nk = in[3]; /* 255 - inverted K */
        for (int c = 0; c < 3; c++) {
            const int t = (255 - in[c]) * nk + 128;
            const int v = nk - (((t >> 8) + t) >> 8);
            out[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

static int jpeg_decode(const uint8_t *b, size_t len, const gs_image_decode_params *p,
                       gs_image_rgb **out, gs_diag *d)
{
    jpeg_meta m = {0};
    gs_image_rgb *img = NULL;
    uint8_t *cmyk = NULL;
    int rc = jpeg_walk(b, len, &m, d);
    if (rc)
        goto out;
    if (len > ULONG_MAX) {
        rc = gs_diag_set(d, GS_ETOOBIG, "JPEG input too large");
        goto out;
    }
    tjhandle tj = tjInitDecompress();
    if (!tj) {
        rc = gs_diag_set(d, GS_ENOMEM, "cannot create a JPEG decompressor");
        goto out;
    }
    int w, h, cs;
    if ((rc = jpeg_header(tj, b, len, (p->flags & GS_IMAGE_DECODE_STRICT) != 0, &w, &h, &cs, d)))
        goto out_tj;
    if ((rc = check_pixels(p, "JPEG", w, h, d)))
        goto out_tj;
    const int is_cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    if (!(img = gs_image_rgb_new(w, h))) {
        rc = gs_diag_set(d, GS_ENOMEM, "out of memory for a %dx%d image", w, h);
        goto out_tj;
    }
    img->src.format = GS_IMAGE_FMT_JPEG;
    img->src.width = w;
    img->src.height = h;
    img->src.bit_depth = 8;
    img->src.mode = jpeg_mode(cs);
    uint8_t *dst = img->data;
    if (is_cmyk) {
        if (!(cmyk = gs_big_alloc((size_t)w * (size_t)h * 4))) {
            rc = gs_diag_set(d, GS_ENOMEM, "out of memory for a %dx%d CMYK image", w, h);
            goto out_tj;
        }
        dst = cmyk;
    }
    /* Grey JPEGs decode straight to RGB: libjpeg replicates the value. */
    const int pf = is_cmyk ? TJPF_CMYK : TJPF_RGB;
    if (tjDecompress2(tj, b, (unsigned long)len, dst, w, 0, h, pf, TJFLAG_LIMITSCANS) != 0) {
        const int fatal = tjGetErrorCode(tj) != TJERR_WARNING;
        if (fatal || (p->flags & GS_IMAGE_DECODE_STRICT)) {
            const char *msg = tjGetErrorStr2(tj);
            rc = gs_diag_set(d, strstr(msg, "nsupported") ? GS_EUNSUPPORTED : GS_EFORMAT,
                             "JPEG decode failed: %s", msg);
            goto out_tj;
        }
        gs_log_debug("image: JPEG decoded with a warning: %s", tjGetErrorStr2(tj));
    }
    if (is_cmyk)
        cmyk_to_rgb(cmyk, img->data, (size_t)w * (size_t)h);
    if (!(p->flags & GS_IMAGE_DECODE_IGNORE_EXIF)) {
        int o = gs_exif_orientation(m.exif, m.exif_len);
        if (o == GS_EXIF_NO_TAG)
            o = gs_xmp_orientation(m.xmp, m.xmp_len);
        if (gs_image_orient(img, o)) {
            rc = gs_diag_set(d, GS_ENOMEM, "out of memory rotating a %dx%d image", w, h);
            goto out_tj;
        }
    }
    *out = img;
    img = NULL;
out_tj:
    tjDestroy(tj);
out:
    free(cmyk);
    free(m.exif_buf);
    gs_image_rgb_free(img);
    return rc;
}

/* ------------------------------------------------------------------ */
/* PNG                                                                 */

static int spng_code(int e)
{
    switch (e) {
    case SPNG_EMEM:
        return GS_ENOMEM;
    case SPNG_EWIDTH:
    case SPNG_EHEIGHT:
    case SPNG_EUSER_WIDTH:
    case SPNG_EUSER_HEIGHT:
    case SPNG_EOVERFLOW:
    case SPNG_ECHUNK_LIMITS:
        return GS_ETOOBIG;
    default:
        return GS_EFORMAT;
    }
}

static int png_fail(int e, const char *what, gs_diag *d)
{
    if (e == SPNG_EOF)
        return gs_diag_set(d, GS_EFORMAT, "truncated PNG: data ends while reading %s", what);
    return gs_diag_set(d, spng_code(e), "bad PNG (%s): %s", what, spng_strerror(e));
}

static gs_image_src_mode png_mode(const struct spng_ihdr *ih)
{
    switch (ih->color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE:
        return ih->bit_depth == 16 ? GS_IMAGE_SRC_I16 : GS_IMAGE_SRC_L;
    case SPNG_COLOR_TYPE_TRUECOLOR:
        return GS_IMAGE_SRC_RGB;
    case SPNG_COLOR_TYPE_INDEXED:
        return GS_IMAGE_SRC_P;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA:
        return GS_IMAGE_SRC_LA;
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA:
        return GS_IMAGE_SRC_RGBA;
    default:
        return GS_IMAGE_SRC_NONE;
    }
}

static spng_ctx *png_open(const uint8_t *b, size_t len, size_t chunk_limit)
{
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx)
        return NULL;
    /* Bounds what spng may buffer for one chunk and for all decompressed
     * text/ICC chunks (zTXt bombs). */
    spng_set_chunk_limits(ctx, chunk_limit, PNG_TEXT_CACHE_LIMIT);
    spng_set_png_buffer(ctx, b, len);
    return ctx;
}

/* Orientation as Pillow's getexif finds it in a PNG: the eXIf chunk, else
 * a "Raw profile type exif" text; when neither has the tag, the XMP iTXt
 * "XML:com.adobe.xmp". */
static int png_orientation(spng_ctx *ctx)
{
    struct spng_exif ex;
    struct spng_text *t = NULL;
    uint32_t n = 0;
    int o = GS_EXIF_NO_TAG, have_exif = spng_get_exif(ctx, &ex) == 0;
    if (have_exif)
        o = gs_exif_orientation((const uint8_t *)ex.data, ex.length);
    if (o != GS_EXIF_NO_TAG)
        return o;
    if (spng_get_text(ctx, NULL, &n) != 0 || n == 0 || n > 4096)
        return o;
    if (!(t = calloc(n, sizeof *t)) || spng_get_text(ctx, t, &n) != 0) {
        free(t);
        return o;
    }
    for (uint32_t i = 0; i < n && !have_exif && o == GS_EXIF_NO_TAG; i++)
        if (strcmp(t[i].keyword, "Raw profile type exif") == 0 && t[i].text)
            o = gs_exif_orientation_raw_profile(t[i].text, t[i].length), have_exif = 1;
    for (uint32_t i = 0; i < n && o == GS_EXIF_NO_TAG; i++)
        if (strcmp(t[i].keyword, "XML:com.adobe.xmp") == 0 && t[i].text)
            o = gs_xmp_orientation((const uint8_t *)t[i].text, t[i].length);
    free(t);
    return o;
}

/* The RGB bytes of Pillow's convert("RGB"), by colour type:
 * - grey <= 8 bit: SPNG_FMT_RGB8 (scaled to 0..255 and replicated, as
 *   Pillow's L;1/L;2/L;4 unpackers scale);
 * - grey 16 bit (Pillow "I;16"): min(v, 255) replicated (Pillow's I16_RGB);
 * - everything else: SPNG_FMT_RGB8 without tRNS or gamma: palette
 *   expanded, alpha dropped, 16-bit samples reduced to their high byte
 *   (Pillow's RGB;16B / RGBA;16B / LA;16B unpackers). */
static int png_decode(const uint8_t *b, size_t len, const gs_image_decode_params *p,
                      gs_image_rgb **out, gs_diag *d)
{
    gs_image_rgb *img = NULL;
    uint16_t *g16 = NULL;
    int rc = 0, e;
    spng_ctx *ctx = png_open(b, len, len);
    if (!ctx)
        return gs_diag_set(d, GS_ENOMEM, "cannot create a PNG decoder");
    struct spng_ihdr ih;
    if ((e = spng_get_ihdr(ctx, &ih))) {
        rc = png_fail(e, "the header", d);
        goto out;
    }
    if ((rc = check_pixels(p, "PNG", ih.width, ih.height, d)))
        goto out;
    const int w = (int)ih.width, h = (int)ih.height;
    const int is_g16 = ih.color_type == SPNG_COLOR_TYPE_GRAYSCALE && ih.bit_depth == 16;
    const int fmt = is_g16 ? SPNG_FMT_PNG : SPNG_FMT_RGB8;
    size_t need = 0;
    if ((e = spng_decoded_image_size(ctx, fmt, &need))) {
        rc = png_fail(e, "the header", d);
        goto out;
    }
    const size_t want = (size_t)w * (size_t)h * (is_g16 ? 2 : 3);
    if (need != want) {
        rc = gs_diag_set(d, GS_EINTERNAL, "PNG decoder wants %zu bytes, expected %zu", need, want);
        goto out;
    }
    if (!(img = gs_image_rgb_new(w, h)) || (is_g16 && !(g16 = gs_big_alloc(need)))) {
        rc = gs_diag_set(d, GS_ENOMEM, "out of memory for a %dx%d image", w, h);
        goto out;
    }
    img->src.format = GS_IMAGE_FMT_PNG;
    img->src.width = w;
    img->src.height = h;
    img->src.bit_depth = ih.bit_depth;
    img->src.mode = png_mode(&ih);
    if ((e = spng_decode_image(ctx, is_g16 ? (void *)g16 : (void *)img->data, need, fmt, 0))) {
        rc = png_fail(e, "the image data", d);
        goto out;
    }
    if (is_g16) {
        const size_t n = (size_t)w * (size_t)h;
        for (size_t i = 0; i < n; i++) {
            const uint8_t v = g16[i] > 255 ? 255 : (uint8_t)g16[i];
            img->data[3 * i] = img->data[3 * i + 1] = img->data[3 * i + 2] = v;
        }
    }
    /* Chunks after IDAT (an eXIf may live there, Pillow reads it on load).
     * Errors here are ignored like Pillow's load_end ignores them. */
    (void)spng_decode_chunks(ctx);
    if (!(p->flags & GS_IMAGE_DECODE_IGNORE_EXIF) && gs_image_orient(img, png_orientation(ctx))) {
        rc = gs_diag_set(d, GS_ENOMEM, "out of memory rotating a %dx%d image", w, h);
        goto out;
    }
    *out = img;
    img = NULL;
out:
    free(g16);
    gs_image_rgb_free(img);
    spng_ctx_free(ctx);
    return rc;
}

/* ------------------------------------------------------------------ */

static int unsupported(const uint8_t *b, size_t len, gs_diag *d)
{
    const char *name = other_format(b, len);
    if (name)
        return gs_diag_set(d, GS_EUNSUPPORTED, "image format %s is not supported (JPEG or PNG)",
                           name);
    return gs_diag_set(d, GS_EUNSUPPORTED,
                       "not an image: the %zu bytes start with neither a JPEG nor a PNG "
                       "signature",
                       len);
}

int gs_image_probe(const void *bytes, size_t len, gs_image_info *out, gs_diag *d)
{
    const uint8_t *b = bytes;
    if (!out)
        return gs_diag_set(d, GS_EINVAL, "gs_image_probe: no output");
    memset(out, 0, sizeof *out);
    if (!b || len == 0)
        return gs_diag_set(d, GS_EINVAL, "empty image data (0 bytes)");
    const gs_image_format f = gs_image_sniff(b, len);
    if (f == GS_IMAGE_FMT_NONE)
        return unsupported(b, len, d);
    if (f == GS_IMAGE_FMT_JPEG) {
        tjhandle tj = tjInitDecompress();
        if (!tj)
            return gs_diag_set(d, GS_ENOMEM, "cannot create a JPEG decompressor");
        int w = 0, h = 0, cs = -1;
        int rc = len > ULONG_MAX ? gs_diag_set(d, GS_ETOOBIG, "JPEG input too large")
                                 : jpeg_header(tj, b, len, 0, &w, &h, &cs, d);
        if (!rc && (w <= 0 || h <= 0))
            rc = gs_diag_set(d, GS_EFORMAT, "JPEG header has an empty size %dx%d", w, h);
        tjDestroy(tj);
        if (rc)
            return rc;
        out->format = f;
        out->width = w;
        out->height = h;
        out->bit_depth = 8;
        out->mode = jpeg_mode(cs);
        return 0;
    }
    spng_ctx *ctx = png_open(b, len, len);
    if (!ctx)
        return gs_diag_set(d, GS_ENOMEM, "cannot create a PNG decoder");
    struct spng_ihdr ih;
    int e = spng_get_ihdr(ctx, &ih);
    spng_ctx_free(ctx);
    if (e)
        return png_fail(e, "the header", d);
    out->format = f;
    out->width = (int32_t)ih.width;
    out->height = (int32_t)ih.height;
    out->bit_depth = ih.bit_depth;
    out->mode = png_mode(&ih);
    return 0;
}

int gs_image_decode(const void *bytes, size_t len, const gs_image_decode_params *p,
                    gs_image_rgb **out, gs_diag *d)
{
    const gs_image_decode_params defaults = gs_image_decode_defaults();
    const uint8_t *b = bytes;
    if (!out)
        return gs_diag_set(d, GS_EINVAL, "gs_image_decode: no output");
    *out = NULL;
    if (!p)
        p = &defaults;
    if (!b || len == 0)
        return gs_diag_set(d, GS_EINVAL, "empty image data (0 bytes)");
    if (len > p->max_bytes)
        return gs_diag_set(d, GS_ETOOBIG, "image data is %zu bytes, above the limit of %zu", len,
                           p->max_bytes);
    switch (gs_image_sniff(b, len)) {
    case GS_IMAGE_FMT_JPEG:
        return jpeg_decode(b, len, p, out, d);
    case GS_IMAGE_FMT_PNG:
        return png_decode(b, len, p, out, d);
    default:
        return unsupported(b, len, d);
    }
}

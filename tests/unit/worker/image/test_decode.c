/* test_decode.c - worker/image/decode on images made in the test
 * (TurboJPEG and libspng encoders): every PNG colour type and bit depth,
 * grey/CMYK JPEG, non-standard JPEG chroma sampling, and the bad-input
 * catalogue (empty, not an image, truncated, corrupt, oversized headers,
 * byte and pixel limits). EXIF orientation is in test_exif.c. Expected
 * values follow Pillow's conversions (docs/image.md); they were also
 * checked against Pillow 13 when this test was written. */
#include "img_util.h"
#include "test.h"
#include "worker/image/decode.h"

/* ---------------- JPEG ---------------- */

static void test_jpeg_rgb_matches_turbojpeg(void)
{
    const int w = 40, h = 24;
    uint8_t *px = tu_pattern(w, h, 3, 1);
    size_t n = 0;
    uint8_t *jpg = tu_jpeg(px, w, h, TJPF_RGB, TJSAMP_420, 90, &n);
    GS_ASSERT(jpg);
    int tw, th;
    uint8_t *ref = tu_tj_decode(jpg, n, TJPF_RGB, &tw, &th);
    gs_image_rgb *img = NULL;
    gs_diag d = {0};
    int rc = tu_decode(jpg, n, 0, &img, &d);
    int same = img && ref && memcmp(img->data, ref, (size_t)w * h * 3) == 0;
    int w_ = img ? img->w : 0, h_ = img ? img->h : 0, mode = img ? (int)img->src.mode : 0;
    int fmt = img ? (int)img->src.format : 0, o = img ? img->orientation : 0;
    gs_image_info info;
    int prc = gs_image_probe(jpg, n, &info, NULL);
    gs_image_rgb_free(img);
    free(ref);
    free(jpg);
    free(px);
    GS_ASSERT_OK(rc);
    GS_ASSERT_EQ(w_, w);
    GS_ASSERT_EQ(h_, h);
    GS_ASSERT_EQ(mode, GS_IMAGE_SRC_RGB);
    GS_ASSERT_EQ(fmt, GS_IMAGE_FMT_JPEG);
    GS_ASSERT_EQ(o, 1);
    GS_ASSERT_MSG(same, "pixels differ from plain tjDecompress2 (flags 0)");
    GS_ASSERT_OK(prc);
    GS_ASSERT_EQ(info.width, w);
    GS_ASSERT_EQ(info.mode, GS_IMAGE_SRC_RGB);
}

static void test_jpeg_gray_replicated(void)
{
    const int w = 33, h = 17;
    uint8_t *px = tu_pattern(w, h, 1, 2);
    size_t n = 0;
    uint8_t *jpg = tu_jpeg(px, w, h, TJPF_GRAY, TJSAMP_GRAY, 90, &n);
    int tw, th;
    uint8_t *g = tu_tj_decode(jpg, n, TJPF_GRAY, &tw, &th);
    gs_image_rgb *img = NULL;
    int rc = tu_decode(jpg, n, 0, &img, NULL);
    int bad = -1;
    if (img && g)
        for (int i = 0, b = 0; i < w * h && !b; i++)
            if (img->data[3 * i] != g[i] || img->data[3 * i + 1] != g[i] ||
                img->data[3 * i + 2] != g[i])
                bad = i, b = 1;
    int mode = img ? (int)img->src.mode : 0;
    gs_image_rgb_free(img);
    free(g);
    free(jpg);
    free(px);
    GS_ASSERT_OK(rc);
    GS_ASSERT_EQ(mode, GS_IMAGE_SRC_L);
    GS_ASSERT_MSG(bad < 0, "pixel %d is not the grey value in R, G and B", bad);
}

/* CMYK JPEGs: Pillow reads them as Adobe-inverted (raw 0 = full ink) and
 * converts with r = (255 - k') - (c' * (255 - k') / 255). Solid raw
 * colours: (0,0,0,0) -> black, (255,255,255,255) -> white,
 * (255,0,255,255) -> magenta. */
static void test_jpeg_cmyk(void)
{
    const int w = 24, h = 8;
    uint8_t px[24 * 8 * 4];
    const uint8_t cols[3][4] = {{0, 0, 0, 0}, {255, 255, 255, 255}, {255, 0, 255, 255}};
    const uint8_t want[3][3] = {{0, 0, 0}, {255, 255, 255}, {255, 0, 255}};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(px + (y * w + x) * 4, cols[x / 8], 4);
    size_t n = 0;
    uint8_t *jpg = tu_jpeg(px, w, h, TJPF_CMYK, TJSAMP_444, 100, &n);
    GS_ASSERT(jpg);
    gs_image_rgb *img = NULL;
    int rc = tu_decode(jpg, n, 0, &img, NULL);
    free(jpg);
    GS_ASSERT_OK(rc);
    int mode = img->src.mode, maxd = 0;
    for (int b = 0; b < 3; b++)
        for (int c = 0; c < 3; c++) {
            int v = img->data[(4 * w + 8 * b + 4) * 3 + c];
            int dd = abs(v - want[b][c]);
            maxd = dd > maxd ? dd : maxd;
        }
    gs_image_rgb_free(img);
    GS_ASSERT_EQ(mode, GS_IMAGE_SRC_CMYK);
    GS_ASSERT_MSG(maxd <= 3, "CMYK colours off by %d", maxd);
}

static uint8_t *small_jpeg(size_t *n)
{
    uint8_t *px = tu_pattern(48, 32, 3, 3);
    uint8_t *jpg = tu_jpeg(px, 48, 32, TJPF_RGB, TJSAMP_420, 85, n);
    free(px);
    return jpg;
}

static void test_jpeg_truncated(void)
{
    size_t n = 0;
    uint8_t *jpg = small_jpeg(&n);
    const size_t cuts[] = {n * 6 / 10, n - 2, n - 1, 20, 4, 3};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        gs_image_rgb *img = NULL;
        gs_diag d = {0};
        int rc = tu_decode(jpg, cuts[i], 0, &img, &d);
        if (rc != GS_EFORMAT || img) {
            gs_image_rgb_free(img);
            free(jpg);
            GS_FAIL_("cut at %zu of %zu: rc %d (%s), want GS_EFORMAT", cuts[i], n, rc, d.msg);
        }
        if (cuts[i] > 100 && !strstr(d.msg, "truncated")) {
            free(jpg);
            GS_FAIL_("cut at %zu: diag \"%s\" does not say truncated", cuts[i], d.msg);
        }
    }
    free(jpg);
}

static void test_jpeg_trailing_garbage_accepted(void)
{
    size_t n = 0;
    uint8_t *jpg = small_jpeg(&n);
    uint8_t *x = malloc(n + 100);
    memcpy(x, jpg, n);
    memset(x + n, 0xAB, 100);
    gs_image_rgb *a = NULL, *b = NULL;
    int ra = tu_decode(jpg, n, 0, &a, NULL), rb = tu_decode(x, n + 100, 0, &b, NULL);
    int same = a && b && memcmp(a->data, b->data, (size_t)a->w * a->h * 3) == 0;
    gs_image_rgb_free(a);
    gs_image_rgb_free(b);
    free(x);
    free(jpg);
    GS_ASSERT_OK(ra);
    GS_ASSERT_OK(rb);
    GS_ASSERT(same);
}

static void test_jpeg_corrupt(void)
{
    size_t n = 0;
    uint8_t *jpg = small_jpeg(&n);
    uint8_t *x = malloc(n);
    gs_diag d = {0};
    gs_image_rgb *img = NULL;
    size_t sof = tu_find_marker(jpg, n, 0xC0), sos = tu_find_marker(jpg, n, 0xDA);
    GS_ASSERT(sof && sos);
    /* Marker length below 2. */
    memcpy(x, jpg, n);
    x[sof + 2] = 0;
    x[sof + 3] = 1;
    int r1 = tu_decode(x, n, 0, &img, &d);
    gs_image_rgb_free(img), img = NULL;
    /* Zero width in the frame header. */
    memcpy(x, jpg, n);
    x[sof + 7] = 0;
    x[sof + 8] = 0;
    int r2 = tu_decode(x, n, 0, &img, &d);
    gs_image_rgb_free(img), img = NULL;
    /* An EOI in the middle of the entropy-coded data: libjpeg warns and
     * fills the rest (Pillow accepts such files); STRICT refuses them. */
    memcpy(x, jpg, n);
    size_t mid = sos + (n - sos) / 2;
    x[mid] = 0xFF;
    x[mid + 1] = 0xD9;
    int r3 = tu_decode(x, n, 0, &img, &d);
    gs_image_rgb_free(img), img = NULL;
    int r4 = tu_decode(x, n, GS_IMAGE_DECODE_STRICT, &img, &d);
    gs_image_rgb_free(img), img = NULL;
    /* Garbage in place of the whole scan. */
    memcpy(x, jpg, n);
    for (size_t i = sos + 14; i + 2 < n; i++)
        x[i] = (uint8_t)(i * 37);
    int r5 = tu_decode(x, n, 0, &img, &d);
    gs_image_rgb_free(img), img = NULL;
    free(x);
    free(jpg);
    GS_ASSERT_EQ(r1, GS_EFORMAT);
    GS_ASSERT_EQ(r2, GS_EFORMAT);
    GS_ASSERT_OK(r3);
    GS_ASSERT_EQ(r4, GS_EFORMAT);
    /* Random bytes: refused or decoded, never a crash (ASan checks). */
    GS_ASSERT(r5 == 0 || r5 == GS_EFORMAT || r5 == GS_EUNSUPPORTED);
}

/* Bytes between two header segments: libjpeg warns ("extraneous bytes
 * before marker"), Pillow decodes the image; so do we unless STRICT. */
static void test_jpeg_extraneous_bytes(void)
{
    size_t n = 0;
    uint8_t *jpg = small_jpeg(&n);
    size_t dqt = tu_find_marker(jpg, n, 0xDB);
    GS_ASSERT(dqt);
    uint8_t *x = malloc(n + 3);
    memcpy(x, jpg, dqt);
    memcpy(x + dqt, "\x00\x11\x22", 3);
    memcpy(x + dqt + 3, jpg + dqt, n - dqt);
    gs_image_rgb *a = NULL, *b = NULL, *c = NULL;
    int ra = tu_decode(jpg, n, 0, &a, NULL), rb = tu_decode(x, n + 3, 0, &b, NULL);
    int rc = tu_decode(x, n + 3, GS_IMAGE_DECODE_STRICT, &c, NULL);
    gs_image_info info;
    int rp = gs_image_probe(x, n + 3, &info, NULL);
    int same = a && b && memcmp(a->data, b->data, 48 * 32 * 3) == 0;
    gs_image_rgb_free(a);
    gs_image_rgb_free(b);
    gs_image_rgb_free(c);
    free(x);
    free(jpg);
    GS_ASSERT_OK(ra);
    GS_ASSERT_OK(rb);
    GS_ASSERT(same);
    GS_ASSERT_EQ(rc, GS_EFORMAT);
    GS_ASSERT_OK(rp);
}

/* A 24x8 JPEG whose luma is sampled 3x1 and chroma 1x1: valid, but not a
 * TJSAMP_* kind, so TurboJPEG 2.x's tjDecompressHeader3 refuses it while
 * tjDecompress2 (and Pillow) decode it. Made with libjpeg's API: R = 10x,
 * G = 30y, B = 128, quality 90. */
static const uint8_t odd_sampling_jpg[] = {
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x03, 0x02, 0x02, 0x03, 0x02, 0x02, 0x03,
    0x03, 0x03, 0x03, 0x04, 0x03, 0x03, 0x04, 0x05, 0x08, 0x05, 0x05, 0x04, 0x04, 0x05, 0x0a, 0x07,
    0x07, 0x06, 0x08, 0x0c, 0x0a, 0x0c, 0x0c, 0x0b, 0x0a, 0x0b, 0x0b, 0x0d, 0x0e, 0x12, 0x10, 0x0d,
    0x0e, 0x11, 0x0e, 0x0b, 0x0b, 0x10, 0x16, 0x10, 0x11, 0x13, 0x14, 0x15, 0x15, 0x15, 0x0c, 0x0f,
    0x17, 0x18, 0x16, 0x14, 0x18, 0x12, 0x14, 0x15, 0x14, 0xff, 0xdb, 0x00, 0x43, 0x01, 0x03, 0x04,
    0x04, 0x05, 0x04, 0x05, 0x09, 0x05, 0x05, 0x09, 0x14, 0x0d, 0x0b, 0x0d, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0xff, 0xc0,
    0x00, 0x11, 0x08, 0x00, 0x08, 0x00, 0x18, 0x03, 0x01, 0x31, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11,
    0x01, 0xff, 0xc4, 0x00, 0x15, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x06, 0xff, 0xc4, 0x00, 0x19, 0x10, 0x00, 0x01, 0x05,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x08,
    0x24, 0x32, 0xa2, 0xff, 0xc4, 0x00, 0x15, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x05, 0xff, 0xc4, 0x00, 0x1a, 0x11, 0x00,
    0x02, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x06, 0x05, 0x22, 0x07, 0x31, 0x32, 0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03,
    0x11, 0x00, 0x3f, 0x00, 0x11, 0x44, 0x6b, 0xf5, 0x89, 0x91, 0x01, 0x11, 0xaf, 0x56, 0x26, 0x4b,
    0xf4, 0x46, 0xbd, 0x58, 0x79, 0x2d, 0x4b, 0xb6, 0xee, 0xc2, 0x31, 0xdb, 0xcf, 0x17, 0x3f, 0xff,
    0xd9};

static void test_jpeg_nonstandard_sampling(void)
{
    gs_image_rgb *img = NULL;
    gs_diag d = {0};
    int rc = tu_decode(odd_sampling_jpg, sizeof odd_sampling_jpg, 0, &img, &d);
    GS_ASSERT_MSG(rc == 0, "rc %d: %s", rc, d.msg);
    int w = img->w, h = img->h, maxd = 0;
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 24; x++) {
            const uint8_t *q = img->data + (y * 24 + x) * 3;
            int e[3] = {10 * x, 30 * y, 128};
            for (int c = 0; c < 3; c++)
                maxd = abs(q[c] - e[c]) > maxd ? abs(q[c] - e[c]) : maxd;
        }
    gs_image_rgb_free(img);
    gs_image_info info;
    GS_ASSERT_OK(gs_image_probe(odd_sampling_jpg, sizeof odd_sampling_jpg, &info, &d));
    GS_ASSERT_EQ(w, 24);
    GS_ASSERT_EQ(h, 8);
    GS_ASSERT_EQ(info.width, 24);
    GS_ASSERT_MSG(maxd <= 16, "pixels off by %d", maxd);
}

static void test_jpeg_pixel_limit_from_header(void)
{
    size_t n = 0;
    uint8_t *jpg = small_jpeg(&n);
    size_t sof = tu_find_marker(jpg, n, 0xC0);
    GS_ASSERT(sof);
    gs_diag d = {0};
    gs_image_rgb *img = NULL;
    /* Header claims 60000 x 60000 (3.6 G pixels): refused before decoding. */
    jpg[sof + 5] = 0xEA, jpg[sof + 6] = 0x60, jpg[sof + 7] = 0xEA, jpg[sof + 8] = 0x60;
    int r1 = tu_decode(jpg, n, 0, &img, &d);
    int has_limit = strstr(d.msg, "limit") != NULL;
    free(jpg);
    /* A configurable limit below the real size. */
    jpg = small_jpeg(&n);
    gs_image_decode_params p = gs_image_decode_defaults();
    p.max_pixels = 48 * 32 - 1;
    int r2 = gs_image_decode(jpg, n, &p, &img, &d);
    p.max_pixels = 48 * 32;
    int r3 = gs_image_decode(jpg, n, &p, &img, &d);
    gs_image_rgb_free(img);
    img = NULL;
    p.max_bytes = n - 1;
    int r4 = gs_image_decode(jpg, n, &p, &img, &d);
    free(jpg);
    GS_ASSERT_EQ(r1, GS_ETOOBIG);
    GS_ASSERT(has_limit);
    GS_ASSERT_EQ(r2, GS_ETOOBIG);
    GS_ASSERT_OK(r3);
    GS_ASSERT_EQ(r4, GS_ETOOBIG);
}

/* ---------------- bad inputs, sniffing ---------------- */

static void test_not_an_image(void)
{
    gs_diag d = {0};
    gs_image_rgb *img = (gs_image_rgb *)1;
    static const uint8_t text[] = "hello, this is not an image at all";
    static const uint8_t gif[] = "GIF89a\x01\x00\x01\x00\x00\x00\x00";
    static const uint8_t webp[] = "RIFF\x10\x00\x00\x00WEBPVP8 ";
    GS_ASSERT_EQ(gs_image_decode(text, 0, NULL, &img, &d), GS_EINVAL);
    GS_ASSERT(img == NULL);
    GS_ASSERT(strstr(d.msg, "0 bytes"));
    GS_ASSERT_EQ(gs_image_decode(NULL, 10, NULL, &img, &d), GS_EINVAL);
    GS_ASSERT_EQ(gs_image_decode(text, sizeof text - 1, NULL, &img, &d), GS_EUNSUPPORTED);
    GS_ASSERT(strstr(d.msg, "not an image"));
    GS_ASSERT_EQ(gs_image_decode(gif, sizeof gif - 1, NULL, &img, &d), GS_EUNSUPPORTED);
    GS_ASSERT(strstr(d.msg, "GIF"));
    GS_ASSERT_EQ(gs_image_decode(webp, sizeof webp - 1, NULL, &img, &d), GS_EUNSUPPORTED);
    GS_ASSERT(strstr(d.msg, "WebP"));
    /* One byte of each magic only. */
    GS_ASSERT_EQ(gs_image_decode("\xFF", 1, NULL, &img, &d), GS_EUNSUPPORTED);
    GS_ASSERT_EQ(gs_image_decode("\x89PNG", 4, NULL, &img, &d), GS_EUNSUPPORTED);
    GS_ASSERT_EQ(gs_image_sniff("\xFF\xD8\xFF", 3), GS_IMAGE_FMT_JPEG);
    GS_ASSERT_EQ(gs_image_sniff(text, sizeof text - 1), GS_IMAGE_FMT_NONE);
    gs_image_info info;
    GS_ASSERT_EQ(gs_image_probe(text, 5, &info, &d), GS_EUNSUPPORTED);
}

/* ---------------- PNG ---------------- */

static void test_png_rgb_rgba_alpha_dropped(void)
{
    const int w = 19, h = 7, npx = 19 * 7;
    uint8_t *rgba = tu_pattern(w, h, 4, 4);
    for (int i = 0; i < npx; i++)
        rgba[4 * i + 3] = (uint8_t)(i % 3 == 0 ? 0 : i); /* fully transparent pixels too */
    tu_png_params pp = {w, h, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 8, 0, NULL, NULL, NULL, 0};
    gs_image_rgb *img = NULL;
    GS_ASSERT_OK(tu_png_decode(&pp, rgba, (size_t)npx * 4, &img));
    GS_ASSERT_EQ(img->src.mode, GS_IMAGE_SRC_RGBA);
    CHECK_PIXELS(img, npx, rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]);
    gs_image_rgb_free(img);
    /* Interlaced RGB: the same pixels. */
    uint8_t *rgb = tu_pattern(w, h, 3, 5);
    tu_png_params pi = {w, h, SPNG_COLOR_TYPE_TRUECOLOR, 8, 1, NULL, NULL, NULL, 0};
    img = NULL;
    int rc = tu_png_decode(&pi, rgb, (size_t)npx * 3, &img);
    if (rc == -999) { /* encoder without interlacing: plain RGB then */
        pi.interlace = 0;
        rc = tu_png_decode(&pi, rgb, (size_t)npx * 3, &img);
    }
    GS_ASSERT_OK(rc);
    CHECK_PIXELS(img, npx, rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]);
    gs_image_rgb_free(img);
    free(rgba);
    free(rgb);
}

static void test_png_gray_depths(void)
{
    const int w = 21, h = 5, npx = 21 * 5;
    uint8_t v[21 * 5];
    for (int bits = 1; bits <= 8; bits *= 2) {
        const int maxv = (1 << bits) - 1;
        for (int i = 0; i < npx; i++)
            v[i] = (uint8_t)((i * 7 + i / 3) % (maxv + 1));
        /* Pack rows MSB first. */
        const size_t stride = ((size_t)w * bits + 7) / 8;
        uint8_t raw[21 * 5];
        memset(raw, 0, sizeof raw);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                size_t bit = (size_t)x * bits;
                raw[y * stride + bit / 8] |= (uint8_t)(v[y * w + x] << (8 - bits - bit % 8));
            }
        tu_png_params pp = {w, h, SPNG_COLOR_TYPE_GRAYSCALE, (uint8_t)bits, 0, NULL, NULL, NULL, 0};
        gs_image_rgb *img = NULL;
        GS_ASSERT_OK(tu_png_decode(&pp, raw, stride * h, &img));
        GS_ASSERT_EQ(img->src.mode, GS_IMAGE_SRC_L);
        GS_ASSERT_EQ(img->src.bit_depth, bits);
        /* Pillow scales 1/2/4-bit grey to 0..255 (x 255, 85, 17). */
        const int scale = 255 / maxv;
        CHECK_PIXELS(img, npx, v[i] * scale, v[i] * scale, v[i] * scale);
        gs_image_rgb_free(img);
    }
}

static void test_png_16bit(void)
{
    const int w = 9, h = 4, npx = 9 * 4;
    /* spng's encoder takes 16-bit samples in host byte order. */
    uint16_t s[9 * 4 * 4];
    for (int i = 0; i < npx * 4; i++)
        s[i] = (uint16_t)(i < 12 ? (uint32_t)(250 + i) : ((uint32_t)i * 2654435761u) >> 16);
    const uint8_t *raw = (const uint8_t *)s;
    gs_image_rgb *img = NULL;
    /* Grey 16 (Pillow "I;16"): convert("RGB") clips to 255. */
    tu_png_params g = {w, h, SPNG_COLOR_TYPE_GRAYSCALE, 16, 0, NULL, NULL, NULL, 0};
    GS_ASSERT_OK(tu_png_decode(&g, raw, (size_t)npx * 2, &img));
    GS_ASSERT_EQ(img->src.mode, GS_IMAGE_SRC_I16);
    CHECK_PIXELS(img, npx, s[i] > 255 ? 255 : s[i], s[i] > 255 ? 255 : s[i],
                 s[i] > 255 ? 255 : s[i]);
    gs_image_rgb_free(img);
    /* RGB 16: the high byte. */
    tu_png_params c = {w, h, SPNG_COLOR_TYPE_TRUECOLOR, 16, 0, NULL, NULL, NULL, 0};
    GS_ASSERT_OK(tu_png_decode(&c, raw, (size_t)npx * 6, &img));
    CHECK_PIXELS(img, npx, s[3 * i] >> 8, s[3 * i + 1] >> 8, s[3 * i + 2] >> 8);
    gs_image_rgb_free(img);
    /* RGBA 16 and grey+alpha 16: high byte, alpha dropped. */
    tu_png_params a = {w, h, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 16, 0, NULL, NULL, NULL, 0};
    GS_ASSERT_OK(tu_png_decode(&a, raw, (size_t)npx * 8, &img));
    CHECK_PIXELS(img, npx, s[4 * i] >> 8, s[4 * i + 1] >> 8, s[4 * i + 2] >> 8);
    gs_image_rgb_free(img);
    tu_png_params ga = {w, h, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, 16, 0, NULL, NULL, NULL, 0};
    GS_ASSERT_OK(tu_png_decode(&ga, raw, (size_t)npx * 4, &img));
    GS_ASSERT_EQ(img->src.mode, GS_IMAGE_SRC_LA);
    CHECK_PIXELS(img, npx, s[2 * i] >> 8, s[2 * i] >> 8, s[2 * i] >> 8);
    gs_image_rgb_free(img);
    /* Grey+alpha 8 (the same bytes read as 8-bit samples). */
    tu_png_params ga8 = {w, h, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, 8, 0, NULL, NULL, NULL, 0};
    GS_ASSERT_OK(tu_png_decode(&ga8, raw, (size_t)npx * 2, &img));
    CHECK_PIXELS(img, npx, raw[2 * i], raw[2 * i], raw[2 * i]);
    gs_image_rgb_free(img);
}

static void test_png_palette(void)
{
    const int w = 16, h = 6, npx = 16 * 6;
    struct spng_plte plte = {0};
    plte.n_entries = 5;
    for (int e = 0; e < 5; e++) {
        plte.entries[e].red = (uint8_t)(50 * e);
        plte.entries[e].green = (uint8_t)(255 - 40 * e);
        plte.entries[e].blue = (uint8_t)(e * e * 9);
    }
    struct spng_trns trns = {0};
    trns.n_type3_entries = 2;
    trns.type3_alpha[0] = 0; /* transparent entry: ignored by convert("RGB") */
    trns.type3_alpha[1] = 128;
    uint8_t idx[16 * 6];
    for (int i = 0; i < npx; i++)
        idx[i] = (uint8_t)((i * 3 + i / 16) % 5);
    for (int t = 0; t < 2; t++) {
        tu_png_params pp = {w, h, SPNG_COLOR_TYPE_INDEXED, 8, 0, &plte, t ? &trns : NULL, NULL, 0};
        gs_image_rgb *img = NULL;
        GS_ASSERT_OK(tu_png_decode(&pp, idx, sizeof idx, &img));
        GS_ASSERT_EQ(img->src.mode, GS_IMAGE_SRC_P);
        CHECK_PIXELS(img, npx, plte.entries[idx[i]].red, plte.entries[idx[i]].green,
                     plte.entries[idx[i]].blue);
        gs_image_rgb_free(img);
    }
}

/* Indices past the end of PLTE: black, as Pillow's palette is padded
 * with zeros. */
static void test_png_palette_index_past_plte(void)
{
    struct spng_plte plte = {0};
    plte.n_entries = 2;
    plte.entries[0].red = 10, plte.entries[1].green = 20;
    uint8_t idx[8] = {0, 1, 2, 7, 255, 1, 0, 3};
    tu_png_params pp = {8, 1, SPNG_COLOR_TYPE_INDEXED, 8, 0, &plte, NULL, NULL, 0};
    size_t n = 0;
    uint8_t *png = tu_png(&pp, idx, sizeof idx, &n);
    GS_ASSERT(png);
    gs_image_rgb *img = NULL;
    int rc = tu_decode(png, n, 0, &img, NULL);
    free(png);
    GS_ASSERT_OK(rc);
    CHECK_PIXELS(img, 8, idx[i] < 2 ? plte.entries[idx[i]].red : 0,
                 idx[i] < 2 ? plte.entries[idx[i]].green : 0, 0);
    gs_image_rgb_free(img);
}

static uint8_t *small_png(size_t *n)
{
    uint8_t *rgb = tu_pattern(64, 48, 3, 6);
    tu_png_params pp = {64, 48, SPNG_COLOR_TYPE_TRUECOLOR, 8, 0, NULL, NULL, NULL, 0};
    uint8_t *png = tu_png(&pp, rgb, 64 * 48 * 3, n);
    free(rgb);
    return png;
}

static void test_png_truncated_and_corrupt(void)
{
    size_t n = 0;
    uint8_t *png = small_png(&n);
    GS_ASSERT(png);
    const size_t cuts[] = {n / 2, n - 40, 40, 20, 9};
    gs_diag d = {0};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        gs_image_rgb *img = NULL;
        int rc = tu_decode(png, cuts[i], 0, &img, &d);
        gs_image_rgb_free(img);
        if (rc != GS_EFORMAT) {
            free(png);
            GS_FAIL_("PNG cut at %zu of %zu: rc %d (%s), want GS_EFORMAT", cuts[i], n, rc,
                     rc ? d.msg : "decoded");
        }
    }
    /* Complete pixel data with the last IDAT CRC byte and IEND missing:
     * decoded like Pillow does (the pixels are all there). */
    gs_image_rgb *full = NULL, *cut = NULL;
    int rf = tu_decode(png, n, 0, &full, NULL), rcut = tu_decode(png, n - 13, 0, &cut, NULL);
    int same = full && cut && memcmp(full->data, cut->data, 64 * 48 * 3) == 0;
    gs_image_rgb_free(full);
    gs_image_rgb_free(cut);
    if (rf || rcut || !same) {
        free(png);
        GS_FAIL_("PNG without IEND: rc %d/%d same %d", rf, rcut, same);
    }
    /* A flipped byte inside IDAT: CRC (or zlib) error. */
    uint8_t *x = malloc(n);
    memcpy(x, png, n);
    x[n / 2] ^= 0x5A;
    gs_image_rgb *img = NULL;
    int rc = tu_decode(x, n, 0, &img, &d);
    gs_image_rgb_free(img);
    free(x);
    free(png);
    GS_ASSERT_EQ(rc, GS_EFORMAT);
}

/* A PNG whose IHDR claims side x side RGB and whose IDAT is 4 bytes of
 * nothing. Writes into png (from small_png); returns the length. */
static size_t fake_png(uint8_t *png, uint32_t side)
{
    /* IHDR data starts at 16: width, height; CRC over type+data at 29. */
    tu_be32(png + 16, side);
    tu_be32(png + 20, side);
    tu_be32(png + 29, tu_crc32(png + 12, 17));
    static const uint8_t tail[] = {0, 0, 0, 4, 'I', 'D', 'A', 'T', 1,   2,    3,    4,    0,   0, 0,
                                   0, 0, 0, 0, 0,   'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    memcpy(png + 33, tail, sizeof tail);
    tu_be32(png + 33 + 12, tu_crc32(png + 33 + 4, 8));
    return 33 + sizeof tail;
}

/* 30000 x 30000 RGB would be 2.7 GB: refused from the header by the pixel
 * limit, before any pixel buffer exists and before the (broken) IDAT is
 * read. The same file at 300 x 300 shows the order: with the limit just
 * below 90000 pixels it is GS_ETOOBIG, with the default limit the broken
 * IDAT is reached (GS_EFORMAT). */
static void test_png_30000_refused_from_header(void)
{
    size_t n = 0;
    uint8_t *png = small_png(&n);
    size_t len = fake_png(png, 30000);
    gs_diag d = {0};
    gs_image_rgb *img = NULL;
    int r1 = tu_decode(png, len, 0, &img, &d);
    int says = strstr(d.msg, "30000x30000") != NULL;
    gs_image_info info;
    int r2 = gs_image_probe(png, len, &info, NULL);
    int r3 = tu_decode(png, 33, 0, &img, NULL); /* signature + IHDR only */
    len = fake_png(png, 300);
    gs_image_decode_params p = gs_image_decode_defaults();
    p.max_pixels = 300 * 300 - 1;
    int r4 = gs_image_decode(png, len, &p, &img, NULL);
    int r5 = tu_decode(png, len, 0, &img, NULL);
    free(png);
    GS_ASSERT_EQ(r1, GS_ETOOBIG);
    GS_ASSERT(img == NULL);
    GS_ASSERT_MSG(says, "diag: %s", d.msg);
    GS_ASSERT_OK(r2);
    GS_ASSERT_EQ(info.width, 30000);
    GS_ASSERT_EQ(r3, GS_ETOOBIG);
    GS_ASSERT_EQ(r4, GS_ETOOBIG);
    GS_ASSERT_EQ(r5, GS_EFORMAT);
}
int main(void)
{
    GS_RUN(test_jpeg_rgb_matches_turbojpeg);
    GS_RUN(test_jpeg_gray_replicated);
    GS_RUN(test_jpeg_cmyk);
    GS_RUN(test_jpeg_truncated);
    GS_RUN(test_jpeg_trailing_garbage_accepted);
    GS_RUN(test_jpeg_corrupt);
    GS_RUN(test_jpeg_extraneous_bytes);
    GS_RUN(test_jpeg_nonstandard_sampling);
    GS_RUN(test_jpeg_pixel_limit_from_header);
    GS_RUN(test_not_an_image);
    GS_RUN(test_png_rgb_rgba_alpha_dropped);
    GS_RUN(test_png_gray_depths);
    GS_RUN(test_png_16bit);
    GS_RUN(test_png_palette);
    GS_RUN(test_png_palette_index_past_plte);
    GS_RUN(test_png_truncated_and_corrupt);
    GS_RUN(test_png_30000_refused_from_header);
    return gs_test_summary();
}

/* test_exif.c - EXIF orientation (worker/image/exif and its use in
 * decode): the transposition of each orientation, EXIF in JPEG APP1 in both
 * byte orders, PNG eXIf, PNG "Raw profile type exif" text, XMP, and
 * corrupt or random EXIF (never fails the decode, never rotates, never
 * reads out of bounds). Expected transposes are Pillow's
 * Image.Transpose semantics (exif_transpose). */
#include "img_util.h"
#include "test.h"
#include "worker/image/decode.h"
#include "worker/image/exif.h"

/* The 3x2 image 1 2 3 / 4 5 6 (value v in R, 10v in G, 100v in B... no:
 * v in all channels) after each orientation, as Pillow's transposes give. */
static void test_orient_matrix(void)
{
    static const uint8_t want[9][6] = {{0},
                                       {1, 2, 3, 4, 5, 6},
                                       {3, 2, 1, 6, 5, 4},
                                       {6, 5, 4, 3, 2, 1},
                                       {4, 5, 6, 1, 2, 3},
                                       {1, 4, 2, 5, 3, 6},
                                       {4, 1, 5, 2, 6, 3},
                                       {6, 3, 5, 2, 4, 1},
                                       {3, 6, 2, 5, 1, 4}};
    for (int o = 0; o <= 9; o++) {
        gs_image_rgb *img = gs_image_rgb_new(3, 2);
        for (int i = 0; i < 6; i++)
            img->data[3 * i] = img->data[3 * i + 1] = img->data[3 * i + 2] = (uint8_t)(i + 1);
        GS_ASSERT_OK(gs_image_orient(img, o));
        const int swap = o >= 5 && o <= 8;
        const int ow = img->w, oh = img->h;
        uint8_t got[6];
        for (int i = 0; i < 6; i++)
            got[i] = img->data[3 * i + (i % 3)];
        gs_image_rgb_free(img);
        GS_ASSERT_EQ(ow, swap ? 2 : 3);
        GS_ASSERT_EQ(oh, swap ? 3 : 2);
        const uint8_t *w = (o >= 1 && o <= 8) ? want[o] : want[1];
        GS_ASSERT_MSG(memcmp(got, w, 6) == 0, "orientation %d: %d %d %d %d %d %d", o, got[0],
                      got[1], got[2], got[3], got[4], got[5]);
    }
}

static void test_exif_jpeg_all_orientations(void)
{
    size_t n = 0;
    uint8_t *px = tu_pattern(40, 24, 3, 7);
    uint8_t *jpg = tu_jpeg(px, 40, 24, TJPF_RGB, TJSAMP_444, 95, &n);
    free(px);
    gs_image_rgb *base = NULL;
    GS_ASSERT_OK(tu_decode(jpg, n, 0, &base, NULL));
    for (int be = 0; be < 2; be++)
        for (int o = 1; o <= 8; o++) {
            uint8_t ex[64];
            size_t el = tu_exif(ex, be, o, 1), m = 0;
            uint8_t *x = tu_splice_app1(jpg, n, ex, el, &m);
            gs_image_rgb *img = NULL, *ign = NULL, *want = gs_image_rgb_new(40, 24);
            memcpy(want->data, base->data, 40 * 24 * 3);
            gs_image_orient(want, o);
            int rc = tu_decode(x, m, 0, &img, NULL);
            int rc2 = tu_decode(x, m, GS_IMAGE_DECODE_IGNORE_EXIF, &ign, NULL);
            int ok = !rc && img->w == want->w && img->h == want->h && img->orientation == o &&
                     memcmp(img->data, want->data, 40 * 24 * 3) == 0;
            int ok2 =
                !rc2 && ign->orientation == 1 && memcmp(ign->data, base->data, 40 * 24 * 3) == 0;
            gs_image_rgb_free(img);
            gs_image_rgb_free(ign);
            gs_image_rgb_free(want);
            free(x);
            if (!ok || !ok2) {
                gs_image_rgb_free(base);
                free(jpg);
                GS_FAIL_("EXIF orientation %d (%s-endian): rc %d, ok %d, ignore ok %d", o,
                         be ? "big" : "little", rc, ok, ok2);
            }
        }
    gs_image_rgb_free(base);
    free(jpg);
}

static void test_exif_png_and_xmp(void)
{
    uint8_t *rgb = tu_pattern(10, 4, 3, 8);
    uint8_t ex[64];
    size_t el = tu_exif(ex, 0, 6, 0);
    tu_png_params pp = {10, 4, SPNG_COLOR_TYPE_TRUECOLOR, 8, 0, NULL, NULL, ex, el};
    gs_image_rgb *img = NULL;
    GS_ASSERT_OK(tu_png_decode(&pp, rgb, 120, &img));
    int w = img->w, h = img->h, o = img->orientation;
    /* Rotated 90 clockwise: new (x, y) = old (y, H - 1 - x). */
    int ok = img->data[0] == rgb[(3 * 10 + 0) * 3] && img->data[3 * 3] == rgb[0];
    gs_image_rgb_free(img);
    free(rgb);
    GS_ASSERT_EQ(w, 4);
    GS_ASSERT_EQ(h, 10);
    GS_ASSERT_EQ(o, 6);
    GS_ASSERT(ok);
    /* XMP only when EXIF has no Orientation. */
    static const char x1[] = "<rdf tiff:Orientation=\"8\"/>", x2[] = "<tiff:Orientation>3<",
                      x3[] = "tiff:Orientation tiff:Orientation=\"x\" tiff:Orientation>5",
                      x4[] = "tiff:Orientation=";
    GS_ASSERT_EQ(gs_xmp_orientation((const uint8_t *)x1, sizeof x1 - 1), 8);
    GS_ASSERT_EQ(gs_xmp_orientation((const uint8_t *)x2, sizeof x2 - 1), 3);
    GS_ASSERT_EQ(gs_xmp_orientation((const uint8_t *)x3, sizeof x3 - 1), 5);
    GS_ASSERT_EQ(gs_xmp_orientation((const uint8_t *)x4, sizeof x4 - 1), GS_EXIF_NO_TAG);
    GS_ASSERT_EQ(gs_xmp_orientation(NULL, 0), GS_EXIF_NO_TAG);
    /* ImageMagick's "Raw profile type exif" PNG text: hex after 3 lines. */
    char raw[200];
    uint8_t exb[40];
    size_t exl = tu_exif(exb, 1, 7, 1);
    int off = snprintf(raw, sizeof raw, "\nexif\n%8zu\n", exl);
    for (size_t i = 0; i < exl; i++)
        off += snprintf(raw + off, sizeof raw - (size_t)off, i == 20 ? "%02x\n" : "%02X", exb[i]);
    GS_ASSERT_EQ(gs_exif_orientation_raw_profile(raw, (size_t)off), 7);
    GS_ASSERT_EQ(gs_exif_orientation_raw_profile(raw, (size_t)off - 1), GS_EXIF_NO_TAG);
    raw[off - 3] = 'g';
    GS_ASSERT_EQ(gs_exif_orientation_raw_profile(raw, (size_t)off), GS_EXIF_NO_TAG);
    GS_ASSERT_EQ(gs_exif_orientation_raw_profile("\nexif\n", 6), GS_EXIF_NO_TAG);
    size_t n = 0, m = 0;
    uint8_t *px = tu_pattern(16, 8, 3, 9);
    uint8_t *jpg = tu_jpeg(px, 16, 8, TJPF_RGB, TJSAMP_444, 90, &n);
    free(px);
    static const char xmp[] = "http://ns.adobe.com/xap/1.0/\0<x tiff:Orientation=\"6\"/>";
    uint8_t *x = tu_splice_app1(jpg, n, (const uint8_t *)xmp, sizeof xmp - 1, &m);
    img = NULL;
    int rc = tu_decode(x, m, 0, &img, NULL);
    o = img ? img->orientation : 0;
    gs_image_rgb_free(img);
    free(x);
    free(jpg);
    GS_ASSERT_OK(rc);
    GS_ASSERT_EQ(o, 6);
}

/* Corrupt EXIF never fails the decode and never rotates. */
static void test_exif_corrupt(void)
{
    uint8_t bad[8][40];
    size_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = tu_exif(bad[i], i & 1, 6, 1);
    memcpy(bad[0] + 6, "XX**", 4);              /* unknown byte order */
    bad[1][6 + 4] = 0xFF, bad[1][6 + 5] = 0xFF; /* IFD0 offset far outside */
    bad[2][6 + 8] = 0xFF, bad[2][6 + 9] = 0xFF; /* 65535 entries, 1 present */
    bad[2][6 + 10] = 0, bad[2][6 + 11] = 0;     /* ...and not Orientation */
    len[3] = 6;                                 /* "Exif\0\0" alone */
    len[4] = 6 + 11;                            /* cut inside the entry */
    bad[5][6 + 18] = 0, bad[5][6 + 19] = 9;     /* value 9 (big-endian) */
    bad[6][6 + 12] = 0xFF;                      /* unknown type */
    bad[7][6 + 17] = 2;                         /* count 2 (big-endian) */
    size_t n = 0;
    uint8_t *px = tu_pattern(16, 8, 3, 10);
    uint8_t *jpg = tu_jpeg(px, 16, 8, TJPF_RGB, TJSAMP_444, 90, &n);
    free(px);
    for (int i = 0; i < 8; i++) {
        size_t m = 0;
        uint8_t *x = tu_splice_app1(jpg, n, bad[i], len[i], &m);
        gs_image_rgb *img = NULL;
        gs_diag d = {0};
        int rc = tu_decode(x, m, 0, &img, &d);
        int o = img ? img->orientation : -1, w = img ? img->w : -1;
        gs_image_rgb_free(img);
        free(x);
        if (rc || o != 1 || w != 16) {
            free(jpg);
            GS_FAIL_("corrupt EXIF #%d: rc %d (%s) orientation %d width %d", i, rc, d.msg, o, w);
        }
    }
    free(jpg);
    /* Random bytes behind a valid header: any answer, no out-of-bounds read. */
    uint32_t s = 99;
    uint8_t buf[96];
    for (int it = 0; it < 3000; it++) {
        size_t l = (size_t)(it % 96);
        for (size_t i = 0; i < l; i++)
            s = s * 1664525u + 1013904223u, buf[i] = (uint8_t)(s >> 24);
        if (l >= 8 && it % 2)
            memcpy(buf, it % 4 == 1 ? "II*\0\x08\0\0\0" : "MM\0*\0\0\0\x08", 8);
        uint8_t *heap = malloc(l ? l : 1);
        memcpy(heap, buf, l);
        int o = gs_exif_orientation(heap, l);
        free(heap);
        GS_ASSERT(o >= GS_EXIF_NO_TAG && o <= 65535);
    }
}

int main(void)
{
    GS_RUN(test_orient_matrix);
    GS_RUN(test_exif_jpeg_all_orientations);
    GS_RUN(test_exif_png_and_xmp);
    GS_RUN(test_exif_corrupt);
    return gs_test_summary();
}

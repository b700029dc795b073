/* bench_image.c - one-core timings of the image path: decode, smart_resize
 * + BICUBIC resize, rescale/normalise/patchify, and the whole
 * gs_image_preprocess, best of N runs. Not a test (numbers live in
 * benchmarks, not in timed tests); prints one table.
 *
 *   bench_image [model_dir] [image files...]
 *
 * Without files it times a synthetic 1920x1080 JPEG (q90 4:2:0) and a
 * 1920x1080 PNG made in memory, plus the large fixture image when the
 * fixtures are present. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <turbojpeg.h>
#include <spng.h>

#include "worker/image/decode.h"
#include "worker/image/preprocess.h"
#include "worker/image/resample.h"

#define RUNS 15

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n > 0 ? malloc((size_t)n) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = b ? (size_t)n : 0;
    return b;
}

static const char *fixture(const char *rel)
{
    static char buf[4096];
    const char *root = getenv("GS_FIXTURES");
    snprintf(buf, sizeof buf, "%s/%s", root ? root : GS_FIXTURES_DIR, rel);
    return buf;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int g_threads = 2; /* the last column: gs_image_params.n_threads */

/* A photo-like synthetic image: gradients plus a little pseudo-noise. */
static uint8_t *synth(int w, int h)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    uint32_t s = 12345;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            s = s * 1664525u + 1013904223u;
            uint8_t *q = p + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)((x * 255) / w + (s >> 28));
            q[1] = (uint8_t)((y * 255) / h + ((s >> 24) & 7));
            q[2] = (uint8_t)(((x + y) * 127) / (w + h) + ((x / 40 + y / 40) & 1) * 100);
        }
    return p;
}

static unsigned char *make_jpeg(const uint8_t *rgb, int w, int h, size_t *len)
{
    tjhandle tj = tjInitCompress();
    unsigned char *buf = NULL;
    unsigned long n = 0;
    tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &buf, &n, TJSAMP_420, 90, 0);
    tjDestroy(tj);
    unsigned char *out = malloc(n);
    memcpy(out, buf, n);
    tjFree(buf);
    *len = n;
    return out;
}

static unsigned char *make_png(const uint8_t *rgb, int w, int h, size_t *len)
{
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    struct spng_ihdr ih = {(uint32_t)w, (uint32_t)h, 8, SPNG_COLOR_TYPE_TRUECOLOR, 0, 0, 0};
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    spng_set_ihdr(ctx, &ih);
    spng_encode_image(ctx, rgb, (size_t)w * h * 3, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    int err = 0;
    unsigned char *out = spng_get_png_buffer(ctx, len, &err);
    spng_ctx_free(ctx);
    return out;
}

static void bench(const char *name, const unsigned char *bytes, size_t len,
                  const gs_image_params *prm)
{
    double best[6] = {1e30, 1e30, 1e30, 1e30, 1e30, 1e30};
    gs_image_params mt = *prm;
    mt.n_threads = g_threads;
    gs_diag d = {0};
    int w = 0, h = 0, rw = 0, rh = 0;
    long long rows = 0;
    for (int r = 0; r < RUNS; r++) {
        gs_image_rgb *img = NULL, *res = NULL;
        gs_image_patches *pt = NULL, *pt2 = NULL;
        double t0 = now_ms();
        if (gs_image_decode(bytes, len, NULL, &img, &d)) {
            printf("%-28s decode failed: %s\n", name, d.msg);
            return;
        }
        double t1 = now_ms();
        int32_t oh, ow;
        gs_image_smart_resize(prm, img->h, img->w, &oh, &ow, &d);
        gs_image_resize_bicubic(img, ow, oh, &res, &d);
        double t2 = now_ms();
        gs_image_patchify(res, prm, &pt, &d);
        double t3 = now_ms();
        gs_image_preprocess(img, prm, &pt2, &d);
        double t4 = now_ms();
        /* wall clock, one thread and g_threads, alternating */
        gs_image_patches *p1 = NULL, *pn = NULL;
        double w0 = wall_ms();
        gs_image_preprocess(img, prm, &p1, &d);
        double w1 = wall_ms();
        gs_image_preprocess(img, &mt, &pn, &d);
        double w2 = wall_ms();
        gs_image_patches_free(p1);
        gs_image_patches_free(pn);
        double t[6] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3, w1 - w0, w2 - w1};
        for (int i = 0; i < 6; i++)
            best[i] = t[i] < best[i] ? t[i] : best[i];
        w = img->w, h = img->h, rw = ow, rh = oh, rows = pt ? pt->n_patches : 0;
        gs_image_rgb_free(img);
        gs_image_rgb_free(res);
        gs_image_patches_free(pt);
        gs_image_patches_free(pt2);
    }
    printf("| %-22s | %5dx%-5d | %5dx%-5d | %6lld | %7.2f | %7.2f | %8.2f | %10.2f | %8.2f | %8.2f "
           "(%.2fx) |\n",
           name, w, h, rw, rh, rows, best[0], best[1], best[2], best[3], best[4], best[5],
           best[4] / best[5]);
}

int main(int argc, char **argv)
{
    gs_image_params prm;
    gs_diag d = {0};
    const char *model = argc > 1 ? argv[1] : fixture("tiny-glm4v");
    char mdir[4096];
    snprintf(mdir, sizeof mdir, "%s", model);
    if (gs_image_params_load(mdir, &prm, &d)) {
        fprintf(stderr, "bench_image: %s\n", d.msg);
        return 1;
    }
    const char *th = getenv("BENCH_IMAGE_THREADS");
    if (th && atoi(th) > 0)
        g_threads = atoi(th);
    printf(
        "best of %d runs; decode .. preprocess: one thread, thread CPU time in ms; the last two: "
        "preprocess wall time, one thread and %d (BENCH_IMAGE_THREADS)\n\n",
        RUNS, g_threads);
    printf("| %-22s | %-11s | %-11s | %-6s | %-7s | %-7s | %-8s | %-10s | %-8s | %-8s |\n", "image",
           "decoded", "resized", "rows", "decode", "resize", "patchify", "preprocess", "wall, 1",
           "wall, N");
    printf("|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", "------------------------", "-------------",
           "-------------", "--------", "---------", "---------", "----------", "------------",
           "----------", "----------");
    if (argc > 2) {
        for (int i = 2; i < argc; i++) {
            size_t len = 0;
            char *b = read_file(argv[i], &len);
            if (b)
                bench(argv[i], (unsigned char *)b, len, &prm);
            free(b);
        }
        return 0;
    }
    uint8_t *rgb = synth(1920, 1080);
    size_t len = 0;
    unsigned char *jpg = make_jpeg(rgb, 1920, 1080, &len);
    bench("synthetic 1920x1080 JPEG", jpg, len, &prm);
    free(jpg);
    unsigned char *png = make_png(rgb, 1920, 1080, &len);
    if (png)
        bench("synthetic 1920x1080 PNG", png, len, &prm);
    free(png);
    free(rgb);
    char *b = read_file(fixture("ref/images/large_3000x1700.jpg"), &len);
    if (b)
        bench("large_3000x1700.jpg", (unsigned char *)b, len, &prm);
    free(b);
    return 0;
}

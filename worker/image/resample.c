/* resample.c - an exact reimplementation of Pillow's 8-bit BICUBIC resize
 * for packed RGB images. Owns only the temporary tables and the image it
 * returns. No state; reentrant.
 *
 * How Pillow does it (Resample.c, ImagingResampleInner), and so we do:
 *
 * 1. For each axis, precompute_coeffs: scale = in / out (as double),
 *    filterscale = max(scale, 1), support = 2 * filterscale,
 *    ksize = 2 * ceil(support) + 1. For output index i the centre is
 *    (i + 0.5) * scale; the taps are input pixels
 *    [(int)(centre - support + 0.5), (int)(centre + support + 0.5)) clamped
 *    to the image; tap j weighs cubic((j - centre + 0.5) / filterscale)
 *    with Keys a = -0.5, and the weights are divided by their sum (double).
 * 2. The weights become fixed point: (int)(w * 2^22 +- 0.5), rounding away
 *    from zero (normalize_coeffs_8bpc, PRECISION_BITS = 32 - 8 - 2).
 * 3. A pass runs only when its dimension changes (neither: a plain copy).
 *    Each output sample is 2^21 + sum(pixel * k) in int32, then >> 22
 *    clipped to 0..255, and the next pass reads those uint8 values, so
 *    the pass ORDER changes the result. Pillow 13 (PR #9549) runs the
 *    vertical pass first when the height shrinks by more than twice as
 *    many pixels as the width: in_h > out_h and in_h - out_h >
 *    2 * (in_w - out_w) (confirmed on ~900 random size pairs against
 *    Pillow 13.0.0). Otherwise, as in every older Pillow, horizontal
 *    first, over only the source rows the vertical pass will read.
 *
 * The integer sums are exact, so summation order does not matter: the
 * vertical pass accumulates whole rows (vectorisable), the horizontal one
 * walks the taps per output pixel. The double-precision coefficient maths
 * must not be contracted into FMAs (the build sets -ffp-contract=off). */
#include "worker/image/resample.h"
#include "worker/image/big_alloc.h"
#include "worker/image/par.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

/* x86-64: an AVX2 copy of the two passes, picked at load time (ifunc);
 * other targets and compilers build the portable C only. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GS_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define GS_MULTIVERSION
#endif
#define BICUBIC_SUPPORT 2.0

static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

typedef struct {
    int ksize;
    int32_t *bounds; /* [out, 2] first tap, tap count */
    int32_t *k;      /* [out, ksize] fixed-point weights */
    /* The same weights with one tap count for every output (kfix, the
     * largest count) so the inner loop has a constant trip count: start
     * fx[i] is moved left where needed to stay inside the row, and the
     * weights are shifted with it (padding taps weigh 0, so the integer
     * sums are unchanged). NULL when kfix > the input size. */
    int kfix;
    int32_t *fx; /* [out] first tap */
    int32_t *fk; /* [out, kfix] */
} coeffs;

static void coeffs_free(coeffs *c)
{
    free(c->bounds);
    free(c->k);
    free(c->fx);
    free(c->fk);
}

/* Builds fx/fk from bounds/k (see coeffs). 0 or GS_ENOMEM. */
static int coeffs_fix(int32_t in_size, int32_t out_size, coeffs *c)
{
    int kmax = 0;
    for (int32_t i = 0; i < out_size; i++)
        kmax = c->bounds[2 * i + 1] > kmax ? c->bounds[2 * i + 1] : kmax;
    if (kmax < 1 || kmax > in_size)
        return 0;
    c->kfix = kmax;
    c->fx = malloc(sizeof(int32_t) * (size_t)out_size);
    c->fk = calloc((size_t)out_size * (size_t)kmax, sizeof(int32_t));
    if (!c->fx || !c->fk)
        return GS_ENOMEM;
    for (int32_t i = 0; i < out_size; i++) {
        const int32_t xmin = c->bounds[2 * i], cnt = c->bounds[2 * i + 1];
        const int32_t start = xmin + kmax > in_size ? in_size - kmax : xmin;
        c->fx[i] = start;
        for (int32_t j = 0; j < cnt; j++)
            c->fk[(size_t)i * kmax + (size_t)(xmin - start + j)] =
                c->k[(size_t)i * (size_t)c->ksize + (size_t)j];
    }
    return 0;
}

static int coeffs_make(int32_t in_size, int32_t out_size, coeffs *c)
{
    memset(c, 0, sizeof *c);
    /* Pillow: (double)(in1 - in0) / outSize with float box edges 0, in. */
    const double scale = (double)((float)in_size - 0.0f) / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = BICUBIC_SUPPORT * filterscale;
    const double ss = 1.0 / filterscale;
    const double ksz = ceil(support) * 2 + 1;
    if (ksz * out_size > (double)(1 << 28))
        return GS_ETOOBIG; /* > 1 GiB of weights: a silly extreme downscale */
    c->ksize = (int)ksz;
    c->bounds = malloc(sizeof(int32_t) * 2 * (size_t)out_size);
    c->k = malloc(sizeof(int32_t) * (size_t)c->ksize * (size_t)out_size);
    double *w = malloc(sizeof(double) * (size_t)c->ksize);
    if (!c->bounds || !c->k || !w) {
        free(w);
        coeffs_free(c);
        return GS_ENOMEM;
    }
    for (int32_t xx = 0; xx < out_size; xx++) {
        const double center = 0.0f + (xx + 0.5) * scale;
        double ww = 0.0;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        if (xmax > c->ksize)
            xmax = c->ksize; /* cannot happen; keeps the table in bounds */
        for (int x = 0; x < xmax; x++) {
            const double v = bicubic((x + xmin - center + 0.5) * ss);
            w[x] = v;
            ww += v;
        }
        int32_t *k = c->k + (size_t)xx * (size_t)c->ksize;
        for (int x = 0; x < c->ksize; x++) {
            double v = 0.0;
            if (x < xmax)
                v = ww != 0.0 ? w[x] / ww : w[x];
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax < 0 ? 0 : xmax;
    }
    free(w);
    return 0;
}

/* Pillow's clip8: floor(v / 2^22) clamped to 0..255 (written so that it
 * compiles to conditional moves, not branches). */
static inline uint8_t clip8(int32_t v)
{
    uint32_t q = v < 0 ? 0u : (uint32_t)v >> PRECISION_BITS;
    return (uint8_t)(q > 255u ? 255u : q);
}

/* One output row with a constant tap count K (inlined with K a constant,
 * so the tap loop unrolls). */
static inline __attribute__((always_inline)) void
hrow_fixed(const uint8_t *srow, uint8_t *drow, int32_t dw, const coeffs *c, const int K)
{
    const int32_t half = 1 << (PRECISION_BITS - 1);
    for (int32_t xx = 0; xx < dw; xx++) {
        const int32_t *k = c->fk + (size_t)xx * K;
        const uint8_t *p = srow + (size_t)c->fx[xx] * 3;
        int32_t s0 = half, s1 = half, s2 = half;
#pragma GCC unroll 8
        for (int j = 0; j < K; j++) {
            s0 += p[3 * j + 0] * k[j];
            s1 += p[3 * j + 1] * k[j];
            s2 += p[3 * j + 2] * k[j];
        }
        drow[3 * xx + 0] = clip8(s0);
        drow[3 * xx + 1] = clip8(s1);
        drow[3 * xx + 2] = clip8(s2);
    }
}

/* Rows [y0, y0 + n) of src (width sw) -> n rows of dst (width dw), RGB. */
GS_MULTIVERSION static void pass_horizontal(const uint8_t *src, int32_t sw, int32_t y0, int32_t n,
                                            uint8_t *dst, int32_t dw, const coeffs *c)
{
    const int32_t half = 1 << (PRECISION_BITS - 1);
    for (int32_t y = 0; y < n; y++) {
        const uint8_t *srow = src + (size_t)(y0 + y) * (size_t)sw * 3;
        uint8_t *drow = dst + (size_t)y * (size_t)dw * 3;
        switch (c->fk ? c->kfix : 0) {
        case 4:
            hrow_fixed(srow, drow, dw, c, 4);
            continue;
        case 5:
            hrow_fixed(srow, drow, dw, c, 5);
            continue;
        case 6:
            hrow_fixed(srow, drow, dw, c, 6);
            continue;
        case 7:
            hrow_fixed(srow, drow, dw, c, 7);
            continue;
        case 8:
            hrow_fixed(srow, drow, dw, c, 8);
            continue;
        default:
            break;
        }
        for (int32_t xx = 0; xx < dw; xx++) {
            const int32_t *k = c->k + (size_t)xx * (size_t)c->ksize;
            const uint8_t *p = srow + (size_t)c->bounds[2 * xx] * 3;
            const int32_t cnt = c->bounds[2 * xx + 1];
            int32_t s0 = half, s1 = half, s2 = half;
            for (int32_t x = 0; x < cnt; x++, p += 3) {
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            drow[3 * xx + 0] = clip8(s0);
            drow[3 * xx + 1] = clip8(s1);
            drow[3 * xx + 2] = clip8(s2);
        }
    }
}

/* Output rows [yy0, yy1); src has rows indexed from the bounds of c
 * (already shifted); width w; acc: w * 3 int32 of scratch. */
GS_MULTIVERSION static void pass_vertical(const uint8_t *src, int32_t w, uint8_t *dst, int32_t yy0,
                                          int32_t yy1, const coeffs *c, int32_t *acc)
{
    const size_t rowlen = (size_t)w * 3;
    const int32_t half = 1 << (PRECISION_BITS - 1);
    for (int32_t yy = yy0; yy < yy1; yy++) {
        const int32_t *k = c->k + (size_t)yy * (size_t)c->ksize;
        const int32_t ymin = c->bounds[2 * yy], cnt = c->bounds[2 * yy + 1];
        for (size_t i = 0; i < rowlen; i++)
            acc[i] = half;
        for (int32_t y = 0; y < cnt; y++) {
            const uint8_t *srow = src + (size_t)(ymin + y) * rowlen;
            const int32_t ky = k[y];
            for (size_t i = 0; i < rowlen; i++)
                acc[i] += srow[i] * ky;
        }
        uint8_t *drow = dst + (size_t)yy * rowlen;
        for (size_t i = 0; i < rowlen; i++)
            drow[i] = clip8(acc[i]);
    }
}

/* The two passes as row ranges for gs_image_par_for. */
typedef struct {
    const uint8_t *src;
    uint8_t *dst;
    int32_t sw, dw, y0; /* horizontal: source / output width, first source row */
    const coeffs *c;
    atomic_int failed; /* vertical: a range had no memory for its scratch */
} pass_job;

/* ~256 KiB of output per range at least, so small images stay on one thread */
static int64_t min_rows(int32_t w)
{
    return 1 + (256 << 10) / ((int64_t)w * 3);
}

static void hpass_rows(void *ctx, int64_t i0, int64_t i1)
{
    const pass_job *J = ctx;
    pass_horizontal(J->src, J->sw, J->y0 + (int32_t)i0, (int32_t)(i1 - i0),
                    J->dst + (size_t)i0 * (size_t)J->dw * 3, J->dw, J->c);
}

static void vpass_rows(void *ctx, int64_t i0, int64_t i1)
{
    pass_job *J = ctx;
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)J->dw * 3);
    if (!acc) {
        atomic_store(&J->failed, 1);
        return;
    }
    pass_vertical(J->src, J->dw, J->dst, (int32_t)i0, (int32_t)i1, J->c, acc);
    free(acc);
}

static void run_h(const uint8_t *src, int32_t sw, int32_t y0, int32_t n, uint8_t *dst, int32_t dw,
                  const coeffs *c, int threads)
{
    pass_job J = {src, dst, sw, dw, y0, c, 0};
    gs_image_par_for(threads, n, min_rows(dw), hpass_rows, &J);
}

static int run_v(const uint8_t *src, int32_t w, uint8_t *dst, int32_t dh, const coeffs *c,
                 int threads)
{
    pass_job J = {src, dst, w, w, 0, c, 0};
    gs_image_par_for(threads, dh, min_rows(w), vpass_rows, &J);
    return atomic_load(&J.failed) ? GS_ENOMEM : 0;
}

int gs_image_resize_bicubic(const gs_image_rgb *in, int32_t out_w, int32_t out_h,
                            gs_image_rgb **out, gs_diag *d)
{
    return gs_image_resize_bicubic_mt(in, out_w, out_h, 1, out, d);
}

int gs_image_resize_bicubic_mt(const gs_image_rgb *in, int32_t out_w, int32_t out_h, int n_threads,
                               gs_image_rgb **out, gs_diag *d)
{
    if (!out)
        return gs_diag_set(d, GS_EINVAL, "resize: no output");
    *out = NULL;
    if (!in || !in->data || in->w <= 0 || in->h <= 0 || out_w <= 0 || out_h <= 0)
        return gs_diag_set(d, GS_EINVAL, "resize: bad sizes %dx%d -> %dx%d", in ? in->w : 0,
                           in ? in->h : 0, out_w, out_h);
    const int need_h = out_w != in->w, need_v = out_h != in->h;
    int rc = 0;
    coeffs cv = {0}, ch = {0};
    uint8_t *tmp = NULL;
    gs_image_rgb *res = gs_image_rgb_new(out_w, out_h);
    if (!res)
        goto oom;
    res->src = in->src;
    res->orientation = in->orientation;
    if (!need_h && !need_v) {
        memcpy(res->data, in->data, (size_t)in->w * (size_t)in->h * 3);
        *out = res;
        return 0;
    }
    if ((rc = coeffs_make(in->h, out_h, &cv)))
        goto fail;
    if (need_h && ((rc = coeffs_make(in->w, out_w, &ch)) || (rc = coeffs_fix(in->w, out_w, &ch))))
        goto fail;
    const int64_t dh = (int64_t)in->h - out_h, dw = (int64_t)in->w - out_w;
    if (need_h && need_v && dh > 0 && dh > 2 * dw) {
        /* Pillow >= 13: the height shrinks much more than the width, so
         * the vertical pass runs first, over the full source width. */
        if (!(tmp = gs_big_alloc((size_t)in->w * (size_t)out_h * 3)))
            goto oom;
        if (run_v(in->data, in->w, tmp, out_h, &cv, n_threads))
            goto oom;
        run_h(tmp, in->w, 0, out_h, res->data, out_w, &ch, n_threads);
    } else {
        const uint8_t *vsrc = in->data;
        if (need_h) {
            /* Only the source rows the vertical pass will read. */
            const int32_t y_first = cv.bounds[0];
            const int32_t y_last = cv.bounds[2 * out_h - 2] + cv.bounds[2 * out_h - 1];
            const int32_t rows = need_v ? y_last - y_first : in->h;
            uint8_t *hdst = res->data;
            if (need_v) {
                if (!(tmp = gs_big_alloc((size_t)out_w * (size_t)(rows > 0 ? rows : 1) * 3)))
                    goto oom;
                hdst = tmp;
                for (int32_t i = 0; i < out_h; i++)
                    cv.bounds[2 * i] -= y_first;
            }
            run_h(in->data, in->w, need_v ? y_first : 0, rows, hdst, out_w, &ch, n_threads);
            vsrc = tmp;
        }
        if (need_v && run_v(vsrc, out_w, res->data, out_h, &cv, n_threads))
            goto oom;
    }
    *out = res;
    res = NULL;
    goto done;
oom:
    rc = GS_ENOMEM;
fail:
    gs_diag_set(d, rc, "resize %dx%d -> %dx%d: %s", in->w, in->h, out_w, out_h,
                rc == GS_ETOOBIG ? "scale factor too extreme" : "out of memory");
done:
    coeffs_free(&cv);
    coeffs_free(&ch);
    free(tmp);
    gs_image_rgb_free(res);
    return rc;
}

/* preprocess.c - preprocessor_config.json, smart_resize, rescale/normalise
 * and patchify into GLM-4V pixel_values. Owns the gs_image_patches it
 * returns; borrows images and params. No state; reentrant.
 *
 * Numerics follow transformers' PIL backend exactly: the rescale is
 * float64 (u8 * rescale_factor) rounded to float32, the normalise is
 * float32 (v - mean_f32) / std_f32. A uint8 input has only 256 values per
 * channel, so both steps are folded into a 3 x 256 float table computed
 * with exactly those operations; the patchify loop only looks values up. */
#include "worker/image/preprocess.h"
#include "worker/image/par.h"
#include "worker/image/big_alloc.h"

#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/file.h"
#include "worker/image/resample.h"

#define CONFIG_NAME "preprocessor_config.json"
#define CONFIG_MAX_BYTES ((size_t)1 << 20)

/* ------------------------------------------------------------------ */
/* preprocessor_config.json                                            */

static int key_int(json_t *obj, const char *key, const char *shown, int64_t lo, int64_t *out,
                   gs_diag *d)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return gs_diag_set(d, GS_ECONFIG, "preprocessor_config.json: missing key \"%s\"", shown);
    if (!json_is_integer(v) || json_integer_value(v) < lo)
        return gs_diag_set(d, GS_ECONFIG,
                           "preprocessor_config.json: \"%s\" must be an integer >= %lld", shown,
                           (long long)lo);
    *out = json_integer_value(v);
    return 0;
}

static int key_bool(json_t *obj, const char *key, int32_t dflt, int32_t *out, gs_diag *d)
{
    json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return gs_diag_set(d, GS_ECONFIG, "preprocessor_config.json: \"%s\" must be a boolean",
                           key);
    *out = json_is_true(v);
    return 0;
}

/* image_mean / image_std: 3 numbers, or one number for every channel. */
static int key_rgb(json_t *obj, const char *key, int positive, float out[3], gs_diag *d)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return gs_diag_set(d, GS_ECONFIG, "preprocessor_config.json: missing key \"%s\"", key);
    for (int c = 0; c < 3; c++) {
        json_t *e = json_is_array(v) ? json_array_get(v, (size_t)c) : v;
        if ((json_is_array(v) && json_array_size(v) != 3) || !json_is_number(e))
            return gs_diag_set(d, GS_ECONFIG, "preprocessor_config.json: \"%s\" must be 3 numbers",
                               key);
        const double x = json_number_value(e);
        if (!isfinite(x) || (positive && !(x > 0)))
            return gs_diag_set(d, GS_ECONFIG, "preprocessor_config.json: \"%s\"[%d] = %g is not %s",
                               key, c, x, positive ? "a positive number" : "finite");
        out[c] = (float)x;
    }
    return 0;
}

static int parse_root(json_t *root, gs_image_params *p, gs_diag *d)
{
    int64_t v = 0;
    int rc;
    memset(p, 0, sizeof *p);
    if (!json_is_object(root))
        return gs_diag_set(d, GS_EFORMAT, "preprocessor_config.json: not a JSON object");
    static const struct {
        const char *key;
        int64_t max;
        size_t off;
    } ints[] = {
        {"patch_size", 1024, offsetof(gs_image_params, patch_size)},
        {"temporal_patch_size", 64, offsetof(gs_image_params, temporal_patch_size)},
        {"merge_size", 64, offsetof(gs_image_params, merge_size)},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if ((rc = key_int(root, ints[i].key, ints[i].key, 1, &v, d)))
            return rc;
        if (v > ints[i].max)
            return gs_diag_set(d, GS_ECONFIG,
                               "preprocessor_config.json: \"%s\" = %lld is above %lld", ints[i].key,
                               (long long)v, (long long)ints[i].max);
        *(int32_t *)((char *)p + ints[i].off) = (int32_t)v;
    }

    /* Pixel bounds: size {shortest_edge, longest_edge} (what transformers
     * 5 reads), else min_pixels/max_pixels at the top or inside size. */
    json_t *size = json_object_get(root, "size");
    json_t *se = json_object_get(size, "shortest_edge"),
           *le = json_object_get(size, "longest_edge");
    if (se || le) {
        if ((rc = key_int(size, "shortest_edge", "size.shortest_edge", 0, &p->min_pixels, d)) ||
            (rc = key_int(size, "longest_edge", "size.longest_edge", 1, &p->max_pixels, d)))
            return rc;
    } else if (json_object_get(root, "min_pixels") || json_object_get(root, "max_pixels")) {
        if ((rc = key_int(root, "min_pixels", "min_pixels", 0, &p->min_pixels, d)) ||
            (rc = key_int(root, "max_pixels", "max_pixels", 1, &p->max_pixels, d)))
            return rc;
    } else if (json_object_get(size, "min_pixels") || json_object_get(size, "max_pixels")) {
        if ((rc = key_int(size, "min_pixels", "size.min_pixels", 0, &p->min_pixels, d)) ||
            (rc = key_int(size, "max_pixels", "size.max_pixels", 1, &p->max_pixels, d)))
            return rc;
    } else {
        return gs_diag_set(d, GS_ECONFIG,
                           "preprocessor_config.json: missing key \"size.shortest_edge\" / "
                           "\"size.longest_edge\" (or \"min_pixels\" / \"max_pixels\")");
    }

    if ((rc = key_rgb(root, "image_mean", 0, p->image_mean, d)) ||
        (rc = key_rgb(root, "image_std", 1, p->image_std, d)))
        return rc;
    p->rescale_factor = 1.0 / 255.0;
    json_t *rf = json_object_get(root, "rescale_factor");
    if (rf) {
        if (!json_is_number(rf) || !(json_number_value(rf) > 0) || !isfinite(json_number_value(rf)))
            return gs_diag_set(d, GS_ECONFIG,
                               "preprocessor_config.json: \"rescale_factor\" must be a positive "
                               "number");
        p->rescale_factor = json_number_value(rf);
    }
    if ((rc = key_bool(root, "do_resize", 1, &p->do_resize, d)) ||
        (rc = key_bool(root, "do_rescale", 1, &p->do_rescale, d)) ||
        (rc = key_bool(root, "do_normalize", 1, &p->do_normalize, d)))
        return rc;
    json_t *rs = json_object_get(root, "resample");
    if (rs && !json_is_null(rs) && !(json_is_integer(rs) && json_integer_value(rs) == 3))
        return gs_diag_set(d, GS_EUNSUPPORTED,
                           "preprocessor_config.json: \"resample\" must be 3 (BICUBIC); other "
                           "filters are not implemented");
    return 0;
}

int gs_image_params_parse(const char *json, size_t len, gs_image_params *out, gs_diag *d)
{
    if (!json || !out)
        return gs_diag_set(d, GS_EINVAL, "gs_image_params_parse: no input");
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return gs_diag_set(d, GS_EFORMAT, "preprocessor_config.json: line %d column %d: %s",
                           jerr.line, jerr.column, jerr.text);
    int rc = parse_root(root, out, d);
    json_decref(root);
    return rc;
}

int gs_image_params_load(const char *path, gs_image_params *out, gs_diag *d)
{
    if (!path || !out)
        return gs_diag_set(d, GS_EINVAL, "gs_image_params_load: no path");
    struct stat st;
    char *full = NULL;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        const size_t n = strlen(path) + sizeof CONFIG_NAME + 1;
        if (!(full = malloc(n)))
            return gs_diag_set(d, GS_ENOMEM, "out of memory");
        snprintf(full, n, "%s/%s", path, CONFIG_NAME);
        path = full;
    }
    char *buf = NULL;
    size_t n = 0;
    int rc = gs_read_file(path, CONFIG_MAX_BYTES, &buf, &n, d);
    if (!rc)
        rc = gs_image_params_parse(buf, n, out, d);
    free(buf);
    free(full);
    return rc;
}

/* ------------------------------------------------------------------ */
/* smart_resize                                                        */

int gs_image_smart_resize(const gs_image_params *p, int32_t height, int32_t width, int32_t *out_h,
                          int32_t *out_w, gs_diag *d)
{
    if (!p || p->patch_size <= 0 || p->merge_size <= 0 || p->temporal_patch_size <= 0)
        return gs_diag_set(d, GS_EINVAL, "smart_resize: bad parameters");
    if (height <= 0 || width <= 0)
        return gs_diag_set(d, GS_EINVAL, "smart_resize: empty image %dx%d", width, height);
    const int64_t factor = (int64_t)p->patch_size * p->merge_size;
    const int64_t tf = p->temporal_patch_size, num_frames = tf;
    const double ff = (double)factor;
    double h = height, w = width; /* Python ints; exact in double */
    if (height < factor || width < factor) {
        const double sh = ff / h, sw = ff / w;
        const double scale = sh > sw ? sh : sw;
        h = trunc(h * scale); /* int(height * scale) */
        w = trunc(w * scale);
    }
    if (h < 1 || w < 1 || h > 1e9 || w > 1e9)
        return gs_diag_set(d, GS_EINVAL, "smart_resize: image %dx%d cannot be resized", width,
                           height);
    const double ratio = (h > w ? h : w) / (h < w ? h : w);
    if (ratio > 200)
        return gs_diag_set(d, GS_EINVAL, "image aspect ratio must be at most 200, got %.6g (%dx%d)",
                           ratio, width, height);
    /* round() is half-to-even, as rint in the default rounding mode. */
    double hb = rint(h / ff) * ff, wb = rint(w / ff) * ff;
    const double t_bar = rint((double)num_frames / (double)tf) * (double)tf;
    if (t_bar * hb * wb > (double)p->max_pixels) {
        const double beta = sqrt((double)num_frames * h * w / (double)p->max_pixels);
        hb = floor(h / beta / ff) * ff;
        wb = floor(w / beta / ff) * ff;
        if (hb < ff)
            hb = ff;
        if (wb < ff)
            wb = ff;
    } else if (t_bar * hb * wb < (double)p->min_pixels) {
        const double beta = sqrt((double)p->min_pixels / ((double)num_frames * h * w));
        hb = ceil(h * beta / ff) * ff;
        wb = ceil(w * beta / ff) * ff;
    }
    if (hb < ff || wb < ff || hb > (double)INT32_MAX || wb > (double)INT32_MAX)
        return gs_diag_set(d, GS_EINVAL, "smart_resize: %dx%d gives an unusable size %gx%g", width,
                           height, wb, hb);
    *out_h = (int32_t)hb;
    *out_w = (int32_t)wb;
    return 0;
}

/* ------------------------------------------------------------------ */
/* rescale + normalise + patchify                                      */

void gs_image_patches_free(gs_image_patches *pt)
{
    if (!pt)
        return;
    free(pt->pixels);
    free(pt);
}

int gs_image_patch_coords(int32_t grid_h, int32_t grid_w, int32_t m, int32_t *hw)
{
    if (!hw || m <= 0 || grid_h <= 0 || grid_w <= 0 || grid_h % m || grid_w % m)
        return GS_EINVAL;
    size_t i = 0;
    for (int32_t bh = 0; bh < grid_h / m; bh++)
        for (int32_t bw = 0; bw < grid_w / m; bw++)
            for (int32_t mh = 0; mh < m; mh++)
                for (int32_t mw = 0; mw < m; mw++, i++) {
                    hw[2 * i] = bh * m + mh;
                    hw[2 * i + 1] = bw * m + mw;
                }
    return 0;
}

/* The value every uint8 level of channel c becomes. */
static void make_lut(const gs_image_params *p, float lut[3][256])
{
    for (int c = 0; c < 3; c++)
        for (int u = 0; u < 256; u++) {
            float v = p->do_rescale ? (float)((double)u * p->rescale_factor) : (float)u;
            if (p->do_normalize) {
                const float num = v - p->image_mean[c];
                v = num / p->image_std[c];
            }
            lut[c][u] = v;
        }
}

typedef struct {
    const gs_image_rgb *img;
    const gs_image_params *p;
    float *pixels;
    int32_t gh, gw;
    int64_t dim;
    float lut[3][256];
} patch_job;

/* Block rows [b0, b1) (merge_size patch rows each) into their patches. */
static void patch_rows(void *ctx, int64_t b0, int64_t b1)
{
    const patch_job *J = ctx;
    const gs_image_params *p = J->p;
    const int32_t P = p->patch_size, T = p->temporal_patch_size, m = p->merge_size;
    const int64_t dim = J->dim;
    const size_t pp = (size_t)P * P, stride = (size_t)J->img->w * 3;
    float *row = J->pixels + (size_t)b0 * (size_t)(J->gw / m) * (size_t)(m * m) * (size_t)dim;
    for (int64_t bh = b0; bh < b1; bh++)
        for (int32_t bw = 0; bw < J->gw / m; bw++)
            for (int32_t mh = 0; mh < m; mh++)
                for (int32_t mw = 0; mw < m; mw++, row += dim) {
                    const size_t y0 = (size_t)(bh * m + mh) * P, x0 = (size_t)(bw * m + mw) * P;
                    for (int c = 0; c < 3; c++) {
                        float *dst = row + (size_t)c * T * pp;
                        const float *lc = J->lut[c];
                        for (int32_t y = 0; y < P; y++) {
                            const uint8_t *s = J->img->data + (y0 + y) * stride + x0 * 3 + c;
                            float *o = dst + (size_t)y * P;
                            for (int32_t x = 0; x < P; x++)
                                o[x] = lc[s[3 * x]];
                        }
                        for (int32_t t = 1; t < T; t++)
                            memcpy(dst + (size_t)t * pp, dst, sizeof(float) * pp);
                    }
                }
}

int gs_image_patchify(const gs_image_rgb *img, const gs_image_params *p, gs_image_patches **out,
                      gs_diag *d)
{
    if (!out)
        return gs_diag_set(d, GS_EINVAL, "patchify: no output");
    *out = NULL;
    if (!img || !img->data || !p || p->patch_size <= 0 || p->merge_size <= 0 ||
        p->temporal_patch_size <= 0)
        return gs_diag_set(d, GS_EINVAL, "patchify: bad arguments");
    const int32_t P = p->patch_size, T = p->temporal_patch_size, m = p->merge_size;
    const int64_t factor = (int64_t)P * m;
    if (img->w % factor || img->h % factor)
        return gs_diag_set(d, GS_EINVAL, "patchify: %dx%d is not a multiple of %lld", img->w,
                           img->h, (long long)factor);
    const int32_t gh = img->h / P, gw = img->w / P;
    const int64_t dim = (int64_t)3 * T * P * P;
    const int64_t n = (int64_t)gh * gw;
    if (dim > INT32_MAX || (uint64_t)n * (uint64_t)dim > SIZE_MAX / sizeof(float) / 2 ||
        n / (m * m) > INT32_MAX)
        return gs_diag_set(d, GS_ETOOBIG, "patchify: %lld patches of %lld values is too many",
                           (long long)n, (long long)dim);
    gs_image_patches *pt = calloc(1, sizeof *pt);
    if (!pt || !(pt->pixels = gs_big_alloc(sizeof(float) * (size_t)n * (size_t)dim))) {
        gs_image_patches_free(pt);
        return gs_diag_set(d, GS_ENOMEM, "patchify: out of memory for %lld x %lld floats",
                           (long long)n, (long long)dim);
    }
    pt->n_patches = n;
    pt->patch_dim = (int32_t)dim;
    pt->grid_t = 1;
    pt->grid_h = gh;
    pt->grid_w = gw;
    pt->n_tokens = (int32_t)(n / ((int64_t)m * m));
    pt->resized_w = img->w;
    pt->resized_h = img->h;

    patch_job J = {img, p, pt->pixels, gh, gw, dim, {{0}}};
    make_lut(p, J.lut);
    /* a block row of merge x merge patches per item; ~2 MiB of output each */
    const int64_t per = (int64_t)(gw / m) * m * m * dim * (int64_t)sizeof(float);
    gs_image_par_for(p->n_threads, gh / m, 1 + (2 << 20) / per, patch_rows, &J);
    *out = pt;
    return 0;
}

int gs_image_token_count(const gs_image_params *p, int32_t height, int32_t width, int32_t *n_tokens,
                         gs_diag *d)
{
    *n_tokens = 0;
    if (!p || p->patch_size <= 0 || p->merge_size <= 0 || p->temporal_patch_size <= 0)
        return gs_diag_set(d, GS_EINVAL, "token count: bad parameters");
    int32_t rh = height, rw = width;
    int rc;
    if (p->do_resize && (rc = gs_image_smart_resize(p, height, width, &rh, &rw, d)))
        return rc;
    const int32_t P = p->patch_size, m = p->merge_size;
    const int64_t factor = (int64_t)P * m;
    if (rh <= 0 || rw <= 0 || rw % factor || rh % factor)
        return gs_diag_set(d, GS_EINVAL, "patchify: %dx%d is not a multiple of %lld", rw, rh,
                           (long long)factor);
    const int64_t n = (int64_t)(rh / P) * (rw / P) / ((int64_t)m * m);
    if (n > INT32_MAX)
        return gs_diag_set(d, GS_ETOOBIG, "an image of %dx%d gives %lld tokens", width, height,
                           (long long)n);
    *n_tokens = (int32_t)n;
    return 0;
}

int gs_image_preprocess(const gs_image_rgb *img, const gs_image_params *p, gs_image_patches **out,
                        gs_diag *d)
{
    if (!out)
        return gs_diag_set(d, GS_EINVAL, "preprocess: no output");
    *out = NULL;
    if (!img || !img->data || !p)
        return gs_diag_set(d, GS_EINVAL, "preprocess: no image or parameters");
    int32_t rh = img->h, rw = img->w;
    int rc;
    if (p->do_resize && (rc = gs_image_smart_resize(p, img->h, img->w, &rh, &rw, d)))
        return rc;
    if (rh == img->h && rw == img->w)
        return gs_image_patchify(img, p, out, d);
    gs_image_rgb *resized = NULL;
    if ((rc = gs_image_resize_bicubic_mt(img, rw, rh, p->n_threads, &resized, d)))
        return rc;
    rc = gs_image_patchify(resized, p, out, d);
    gs_image_rgb_free(resized);
    return rc;
}

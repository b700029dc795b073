/* test_preprocess.c - worker/image/preprocess and resample: the
 * preprocessor_config.json loader (every key form, errors naming the key),
 * smart_resize against values printed by transformers 5.24's
 * smart_resize (num_frames 2, factor 28, Flash's min/max pixels),
 * the resampler's structural properties (copy on same size, constant
 * images stay constant, extreme ratios do not crash), and the patchify row
 * layout of glm4v-spec.md 5.4. Bit-exactness against Pillow is checked by
 * test_image_fixture. */
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "worker/image/preprocess.h"
#include "worker/image/resample.h"

static const char *flash_json =
    "{\"size\": {\"shortest_edge\": 12544, \"longest_edge\": 9633792},"
    " \"do_rescale\": true, \"patch_size\": 14, \"temporal_patch_size\": 2,"
    " \"merge_size\": 2, \"image_mean\": [0.48145466, 0.4578275, 0.40821073],"
    " \"image_std\": [0.26862954, 0.26130258, 0.27577711],"
    " \"image_processor_type\": \"Glm46VImageProcessor\"}";

static int parse(const char *json, gs_image_params *p, gs_diag *d)
{
    return gs_image_params_parse(json, strlen(json), p, d);
}

static void test_params_flash(void)
{
    gs_image_params p;
    gs_diag d = {0};
    GS_ASSERT_OK(parse(flash_json, &p, &d));
    GS_ASSERT_EQ(p.patch_size, 14);
    GS_ASSERT_EQ(p.temporal_patch_size, 2);
    GS_ASSERT_EQ(p.merge_size, 2);
    GS_ASSERT_EQ(p.min_pixels, 12544);
    GS_ASSERT_EQ(p.max_pixels, 9633792);
    GS_ASSERT(p.image_mean[1] == 0.4578275f);
    GS_ASSERT(p.image_std[2] == 0.27577711f);
    GS_ASSERT(p.rescale_factor == 1.0 / 255.0);
    GS_ASSERT(p.do_resize && p.do_rescale && p.do_normalize);
}

static void test_params_alternative_keys(void)
{
    gs_image_params p;
    gs_diag d = {0};
    GS_ASSERT_OK(parse("{\"patch_size\": 14, \"temporal_patch_size\": 2, \"merge_size\": 2,"
                       " \"min_pixels\": 3136, \"max_pixels\": 1003520, \"image_mean\": 0.5,"
                       " \"image_std\": [1, 2, 3], \"rescale_factor\": 0.5, \"do_normalize\":"
                       " false, \"resample\": 3}",
                       &p, &d));
    GS_ASSERT_EQ(p.min_pixels, 3136);
    GS_ASSERT_EQ(p.max_pixels, 1003520);
    GS_ASSERT(p.image_mean[0] == 0.5f && p.image_mean[2] == 0.5f);
    GS_ASSERT(p.image_std[2] == 3.0f);
    GS_ASSERT(p.rescale_factor == 0.5);
    GS_ASSERT(!p.do_normalize);
    GS_ASSERT_OK(parse("{\"patch_size\": 16, \"temporal_patch_size\": 1, \"merge_size\": 2,"
                       " \"size\": {\"min_pixels\": 100, \"max_pixels\": 200},"
                       " \"image_mean\": [0,0,0], \"image_std\": [1,1,1]}",
                       &p, &d));
    GS_ASSERT_EQ(p.min_pixels, 100);
    GS_ASSERT_EQ(p.max_pixels, 200);
    GS_ASSERT_EQ(p.temporal_patch_size, 1);
}

static void test_params_errors_name_the_key(void)
{
    static const struct {
        const char *json;
        int code;
        const char *needle;
    } cases[] = {
        {"{\"temporal_patch_size\": 2, \"merge_size\": 2}", GS_ECONFIG, "patch_size"},
        {"{\"patch_size\": 0, \"temporal_patch_size\": 2, \"merge_size\": 2}", GS_ECONFIG,
         "patch_size"},
        {"{\"patch_size\": \"14\", \"temporal_patch_size\": 2, \"merge_size\": 2}", GS_ECONFIG,
         "patch_size"},
        {"{\"patch_size\": 14, \"temporal_patch_size\": 2, \"merge_size\": 99999}", GS_ECONFIG,
         "merge_size"},
        {"{\"patch_size\": 14, \"temporal_patch_size\": 2, \"merge_size\": 2,"
         " \"image_mean\": [0,0,0], \"image_std\": [1,1,1]}",
         GS_ECONFIG, "size.shortest_edge"},
        {"{\"patch_size\": 14, \"temporal_patch_size\": 2, \"merge_size\": 2,"
         " \"size\": {\"shortest_edge\": 10}, \"image_mean\": [0,0,0], \"image_std\": [1,1,1]}",
         GS_ECONFIG, "size.longest_edge"},
        {"{\"patch_size\": 14, \"temporal_patch_size\": 2, \"merge_size\": 2,"
         " \"size\": {\"shortest_edge\": 1, \"longest_edge\": 9}, \"image_std\": [1,1,1]}",
         GS_ECONFIG, "image_mean"},
        {"{\"patch_size\": 14, \"temporal_patch_size\": 2, \"merge_size\": 2,"
         " \"size\": {\"shortest_edge\": 1, \"longest_edge\": 9}, \"image_mean\": [0,0],"
         " \"image_std\": [1,1,1]}",
         GS_ECONFIG, "image_mean"},
        {"{\"patch_size\": 14, \"temporal_patch_size\": 2, \"merge_size\": 2,"
         " \"size\": {\"shortest_edge\": 1, \"longest_edge\": 9}, \"image_mean\": [0,0,0],"
         " \"image_std\": [1,0,1]}",
         GS_ECONFIG, "image_std"},
        {"{\"patch_size\": 14, \"temporal_patch_size\": 2, \"merge_size\": 2,"
         " \"size\": {\"shortest_edge\": 1, \"longest_edge\": 9}, \"image_mean\": [0,0,0],"
         " \"image_std\": [1,1,1], \"rescale_factor\": -1}",
         GS_ECONFIG, "rescale_factor"},
        {"{\"patch_size\": 14, \"temporal_patch_size\": 2, \"merge_size\": 2,"
         " \"size\": {\"shortest_edge\": 1, \"longest_edge\": 9}, \"image_mean\": [0,0,0],"
         " \"image_std\": [1,1,1], \"do_rescale\": 1}",
         GS_ECONFIG, "do_rescale"},
        {"{\"patch_size\": 14, \"temporal_patch_size\": 2, \"merge_size\": 2,"
         " \"size\": {\"shortest_edge\": 1, \"longest_edge\": 9}, \"image_mean\": [0,0,0],"
         " \"image_std\": [1,1,1], \"resample\": 2}",
         GS_EUNSUPPORTED, "resample"},
        {"{\"patch_size\": 14,", GS_EFORMAT, "line"},
        {"[1, 2]", GS_EFORMAT, "object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gs_image_params p;
        gs_diag d = {0};
        int rc = parse(cases[i].json, &p, &d);
        GS_ASSERT_MSG(rc == cases[i].code, "case %zu: rc %d, want %d (%s)", i, rc, cases[i].code,
                      d.msg);
        GS_ASSERT_MSG(strstr(d.msg, cases[i].needle), "case %zu: \"%s\" does not name %s", i, d.msg,
                      cases[i].needle);
    }
}

static void test_params_load_file_and_dir(void)
{
    char dir[] = "/tmp/gs_test_image_XXXXXX";
    GS_ASSERT(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    FILE *f = fopen(path, "w");
    GS_ASSERT(f);
    fputs(flash_json, f);
    fclose(f);
    gs_image_params a, b;
    gs_diag d = {0};
    int ra = gs_image_params_load(dir, &a, &d), rb = gs_image_params_load(path, &b, &d);
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    int rm = gs_image_params_load(missing, &b, &d);
    remove(path);
    /* A FIFO in its place is refused at once (it used to block in open). */
    GS_ASSERT_OK(mkfifo(path, 0600));
    alarm(10);
    int rf = gs_image_params_load(dir, &b, &d);
    alarm(0);
    remove(path);
    rmdir(dir);
    GS_ASSERT_OK(ra);
    GS_ASSERT_OK(rb);
    GS_ASSERT_EQ(a.max_pixels, b.max_pixels);
    GS_ASSERT_EQ(rm, GS_ENOENT);
    GS_ASSERT_EQ(rf, GS_EIO);
    GS_ASSERT(strstr(d.msg, "preprocessor_config.json") != NULL);
}

/* Reference: transformers 5.24 smart_resize(num_frames=2, h, w,
 * temporal_factor=2, factor=28, min_pixels=12544, max_pixels=9633792). */
static void test_smart_resize_table(void)
{
    static const struct {
        int w, h, rw, rh; /* rw = 0: ValueError (aspect ratio) */
    } t[] = {
        {336, 336, 336, 336},
        {640, 480, 644, 476},
        {1024, 768, 1036, 756},
        {1280, 720, 1288, 728},
        {1920, 1080, 1932, 1092},
        {4000, 3000, 2520, 1876},
        {224, 224, 224, 224},
        {70, 70, 84, 84},
        {20, 90, 56, 168},
        {2000, 10, 5600, 28},
        {2001, 10, 0, 0},
        {1, 300, 0, 0},
        {300, 1, 0, 0},
        {28, 5600, 28, 5600},
        {27, 5600, 0, 0},
        {1, 1, 84, 84},
        {3, 3, 84, 84},
        {100, 27, 168, 56},
        {12345, 6789, 2940, 1624},
        {65535, 65535, 2184, 2184},
        {7000, 35, 7000, 28},
        {294, 322, 280, 336}, /* 10.5 -> 10, 11.5 -> 12: round half to even */
    };
    gs_image_params p;
    GS_ASSERT_OK(parse(flash_json, &p, NULL));
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int32_t rh = -1, rw = -1;
        gs_diag d = {0};
        int rc = gs_image_smart_resize(&p, t[i].h, t[i].w, &rh, &rw, &d);
        if (t[i].rw == 0) {
            GS_ASSERT_MSG(rc == GS_EINVAL && strstr(d.msg, "aspect ratio"),
                          "%dx%d: rc %d (%s), want the aspect-ratio error", t[i].w, t[i].h, rc,
                          d.msg);
        } else {
            GS_ASSERT_MSG(rc == 0 && rw == t[i].rw && rh == t[i].rh,
                          "%dx%d -> %dx%d (rc %d %s), want %dx%d", t[i].w, t[i].h, rw, rh, rc,
                          d.msg, t[i].rw, t[i].rh);
        }
    }
    int32_t rh, rw;
    GS_ASSERT_EQ(gs_image_smart_resize(&p, 0, 5, &rh, &rw, NULL), GS_EINVAL);
}

static gs_image_rgb *ramp(int w, int h)
{
    gs_image_rgb *img = gs_image_rgb_new(w, h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *q = img->data + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(x * 7 + y), q[1] = (uint8_t)(y * 5), q[2] = (uint8_t)(x ^ y);
        }
    return img;
}

static void test_resize_properties(void)
{
    gs_image_rgb *a = ramp(37, 23), *b = NULL;
    gs_diag d = {0};
    /* Same size: an exact copy. */
    GS_ASSERT_OK(gs_image_resize_bicubic(a, 37, 23, &b, &d));
    GS_ASSERT(memcmp(a->data, b->data, 37 * 23 * 3) == 0);
    gs_image_rgb_free(b);
    /* Only one dimension changes: the other is untouched (one pass). */
    GS_ASSERT_OK(gs_image_resize_bicubic(a, 37, 50, &b, &d));
    GS_ASSERT_EQ(b->w, 37);
    GS_ASSERT_EQ(b->h, 50);
    gs_image_rgb_free(b);
    gs_image_rgb_free(a);
    /* A constant image stays constant whatever the sizes (weights sum to
     * 1 in fixed point up to rounding, which clip8's +0.5 absorbs). */
    static const int sz[][4] = {{50, 40, 13, 90}, {9, 9, 200, 3},   {300, 2, 1, 1},
                                {1, 1, 28, 28},   {64, 64, 63, 65}, {1000, 3, 7, 2}};
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
        a = gs_image_rgb_new(sz[i][0], sz[i][1]);
        memset(a->data, 200, (size_t)sz[i][0] * sz[i][1] * 3);
        GS_ASSERT_OK(gs_image_resize_bicubic(a, sz[i][2], sz[i][3], &b, &d));
        int ok = 1;
        for (size_t k = 0; k < (size_t)sz[i][2] * sz[i][3] * 3; k++)
            ok &= b->data[k] == 200;
        gs_image_rgb_free(a);
        gs_image_rgb_free(b);
        GS_ASSERT_MSG(ok, "constant image changed: %dx%d -> %dx%d", sz[i][0], sz[i][1], sz[i][2],
                      sz[i][3]);
    }
    a = ramp(4, 4);
    GS_ASSERT_EQ(gs_image_resize_bicubic(a, 0, 5, &b, &d), GS_EINVAL);
    GS_ASSERT(b == NULL);
    gs_image_rgb_free(a);
}

/* Rows in (bh, bw, mh, mw) order; row element ((c*T + t)*P + y)*P + x is
 * pixel (c, P*h + y, P*w + x) for every t (glm4v-spec.md 5.4). Raw values
 * (no rescale/normalise) so each float is the uint8 it came from. */
static void test_patchify_layout(void)
{
    gs_image_params p;
    GS_ASSERT_OK(parse("{\"patch_size\": 14, \"temporal_patch_size\": 2, \"merge_size\": 2,"
                       " \"size\": {\"shortest_edge\": 1, \"longest_edge\": 99999999},"
                       " \"image_mean\": [0,0,0], \"image_std\": [1,1,1],"
                       " \"do_rescale\": false, \"do_normalize\": false}",
                       &p, NULL));
    const int W = 112, H = 56, P = 14, T = 2, m = 2; /* grid 4 x 8 */
    gs_image_rgb *img = ramp(W, H);
    gs_image_patches *pt = NULL;
    gs_diag d = {0};
    GS_ASSERT_OK(gs_image_patchify(img, &p, &pt, &d));
    GS_ASSERT_EQ(pt->grid_t, 1);
    GS_ASSERT_EQ(pt->grid_h, 4);
    GS_ASSERT_EQ(pt->grid_w, 8);
    GS_ASSERT_EQ(pt->n_patches, 32);
    GS_ASSERT_EQ(pt->patch_dim, 1176);
    GS_ASSERT_EQ(pt->n_tokens, 8);
    int32_t hw[32 * 2];
    GS_ASSERT_OK(gs_image_patch_coords(4, 8, m, hw));
    int row = 0, bad = -1;
    for (int bh = 0; bh < 2; bh++)
        for (int bw = 0; bw < 4; bw++)
            for (int mh = 0; mh < 2; mh++)
                for (int mw = 0; mw < 2; mw++, row++) {
                    const int h = 2 * bh + mh, w = 2 * bw + mw;
                    if (hw[2 * row] != h || hw[2 * row + 1] != w)
                        bad = row;
                    for (int c = 0; c < 3; c++)
                        for (int t = 0; t < T; t++)
                            for (int y = 0; y < P; y++)
                                for (int x = 0; x < P; x++) {
                                    float v = pt->pixels[(size_t)row * 1176 +
                                                         (size_t)(((c * T + t) * P + y) * P + x)];
                                    uint8_t u =
                                        img->data[((size_t)(P * h + y) * W + P * w + x) * 3 + c];
                                    if (v != (float)u)
                                        bad = row;
                                }
                }
    gs_image_patches_free(pt);
    GS_ASSERT_MSG(bad < 0, "row %d has the wrong pixels or coordinates", bad);
    GS_ASSERT_EQ(gs_image_patch_coords(3, 8, m, hw), GS_EINVAL);
    /* Not a multiple of patch * merge. */
    gs_image_rgb *odd = ramp(W - 14, H);
    GS_ASSERT_EQ(gs_image_patchify(odd, &p, &pt, &d), GS_EINVAL);
    gs_image_rgb_free(odd);
    gs_image_rgb_free(img);
}

/* Rescale + normalise: float32((double)u * (1/255)), then float32
 * (v - mean) / std, per channel. */
static void test_normalise_values(void)
{
    gs_image_params p;
    GS_ASSERT_OK(parse(flash_json, &p, NULL));
    gs_image_rgb *img = gs_image_rgb_new(28, 28);
    for (int i = 0; i < 28 * 28; i++)
        img->data[3 * i] = 0, img->data[3 * i + 1] = 128, img->data[3 * i + 2] = 255;
    gs_image_patches *pt = NULL;
    GS_ASSERT_OK(gs_image_patchify(img, &p, &pt, NULL));
    gs_image_rgb_free(img);
    const float r = pt->pixels[0], g = pt->pixels[2 * 196], b = pt->pixels[4 * 196 + 195];
    const float last = pt->pixels[3 * 1176 + 1175];
    gs_image_patches_free(pt);
    const float v128 = (float)(128.0 * (1.0 / 255.0));
    GS_ASSERT(r == (0.0f - 0.48145466f) / 0.26862954f);
    GS_ASSERT(g == (v128 - 0.4578275f) / 0.26130258f);
    GS_ASSERT(b == (1.0f - 0.40821073f) / 0.27577711f);
    GS_ASSERT(last == b);
    GS_ASSERT_NEAR(r, -1.79226, 1e-4);
}

static void test_preprocess_end_to_end(void)
{
    gs_image_params p;
    GS_ASSERT_OK(parse(flash_json, &p, NULL));
    gs_image_rgb *img = ramp(640, 480);
    gs_image_patches *pt = NULL;
    gs_diag d = {0};
    GS_ASSERT_OK(gs_image_preprocess(img, &p, &pt, &d));
    GS_ASSERT_EQ(pt->resized_w, 644);
    GS_ASSERT_EQ(pt->resized_h, 476);
    GS_ASSERT_EQ(pt->grid_h, 34);
    GS_ASSERT_EQ(pt->grid_w, 46);
    GS_ASSERT_EQ(pt->n_tokens, 391);
    gs_image_patches_free(pt);
    gs_image_rgb_free(img);
    /* Aspect ratio over 200 is refused with the ratio in the message. */
    img = ramp(3000, 10);
    pt = NULL;
    GS_ASSERT_EQ(gs_image_preprocess(img, &p, &pt, &d), GS_EINVAL);
    GS_ASSERT(pt == NULL);
    GS_ASSERT(strstr(d.msg, "aspect ratio"));
    gs_image_rgb_free(img);
    GS_ASSERT_EQ(gs_image_preprocess(NULL, &p, &pt, &d), GS_EINVAL);
    gs_image_patches_free(NULL);
}

/* A noisy image (every pixel differs from its neighbours). */
static gs_image_rgb *noise(int w, int h, unsigned seed)
{
    gs_image_rgb *img = gs_image_rgb_new(w, h);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        seed = seed * 1103515245u + 12345u;
        img->data[i] = (uint8_t)(seed >> 16);
    }
    return img;
}

/* Resize and patchify cut between threads give the same bytes as one
 * thread, for each pass order and for sizes where a range is one row. */
static void test_threads_give_the_same_pixels(void)
{
    static const int sz[][4] = {{1200, 900, 1187, 913}, /* both passes, horizontal first */
                                {700, 1400, 690, 300},  /* the vertical pass first */
                                {1500, 200, 900, 200},  /* horizontal only */
                                {300, 1000, 300, 1500}, /* vertical only */
                                {5000, 7, 6000, 9}};    /* few rows */
    gs_diag d = {0};
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
        gs_image_rgb *a = noise(sz[i][0], sz[i][1], (unsigned)i + 1), *one = NULL, *many = NULL;
        GS_ASSERT_OK(gs_image_resize_bicubic(a, sz[i][2], sz[i][3], &one, &d));
        for (int t = 2; t <= 5; t += 3) {
            GS_ASSERT_OK(gs_image_resize_bicubic_mt(a, sz[i][2], sz[i][3], t, &many, &d));
            GS_ASSERT_MSG(!memcmp(one->data, many->data, (size_t)sz[i][2] * sz[i][3] * 3),
                          "%dx%d -> %dx%d with %d threads differs", sz[i][0], sz[i][1], sz[i][2],
                          sz[i][3], t);
            gs_image_rgb_free(many);
        }
        gs_image_rgb_free(one);
        gs_image_rgb_free(a);
    }
    gs_image_params p;
    GS_ASSERT_OK(parse(flash_json, &p, NULL));
    gs_image_rgb *img = noise(1600, 1200, 9);
    gs_image_patches *one = NULL, *many = NULL;
    GS_ASSERT_OK(gs_image_preprocess(img, &p, &one, &d));
    p.n_threads = 3;
    GS_ASSERT_OK(gs_image_preprocess(img, &p, &many, &d));
    GS_ASSERT_EQ(one->n_patches, many->n_patches);
    GS_ASSERT(!memcmp(one->pixels, many->pixels,
                      sizeof(float) * (size_t)one->n_patches * (size_t)one->patch_dim));
    gs_image_patches_free(one);
    gs_image_patches_free(many);
    gs_image_rgb_free(img);
}

int main(void)
{
    GS_RUN(test_params_flash);
    GS_RUN(test_params_alternative_keys);
    GS_RUN(test_params_errors_name_the_key);
    GS_RUN(test_params_load_file_and_dir);
    GS_RUN(test_smart_resize_table);
    GS_RUN(test_resize_properties);
    GS_RUN(test_patchify_layout);
    GS_RUN(test_normalise_values);
    GS_RUN(test_preprocess_end_to_end);
    GS_RUN(test_threads_give_the_same_pixels);
    return gs_test_summary();
}

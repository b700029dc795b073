/* test_image_fixture.c - decode + preprocess every image of
 * tests/fixtures/ref/preprocess.json and compare with transformers' PIL
 * backend: decoded size and sha256 (after EXIF), smart_resize size and
 * grid_thw, our BICUBIC resize against the reference resized PNG (uint8
 * max / mean |diff| and differing values), pixel_values_head (the first
 * 16 rows the processor produced) and the full pixel_values rebuilt from
 * the reference resized image. Prints one block per case (llm.c style).
 * Missing fixtures are a failure, not a skip. */
#include <jansson.h>
#include <openssl/evp.h>
#include <time.h>

#include "test.h"
#include "worker/image/decode.h"
#include "worker/image/preprocess.h"
#include "worker/image/resample.h"
#include "worker/model/safetensors.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static void sha256_hex(const uint8_t *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static gs_image_rgb *load_image(const char *rel, gs_diag *d)
{
    size_t len = 0;
    char *bytes = gs_test_read_file(gs_fixture_path(rel), &len);
    if (!bytes) {
        gs_diag_set(d, GS_ENOENT, "%s: cannot read", rel);
        return NULL;
    }
    gs_image_rgb *img = NULL;
    gs_image_decode(bytes, len, NULL, &img, d);
    free(bytes);
    return img;
}

static int json_int_at(json_t *o, const char *key, size_t i)
{
    return (int)json_integer_value(json_array_get(json_object_get(o, key), i));
}

static double worst_mean_err;

/* One case; returns the number of failed checks. */
static int run_case(json_t *c, const gs_image_params *prm)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    const char *file = json_string_value(json_object_get(c, "file"));
    const char *png = json_string_value(json_object_get(c, "resized_png"));
    const char *st_rel = json_string_value(json_object_get(c, "pixel_values"));
    const char *dsha = json_string_value(json_object_get(c, "decoded_sha256"));
    const char *rsha = json_string_value(json_object_get(c, "resized_sha256"));
    int fails = 0;
    gs_diag d = {0};
    char rel[512], hex[65];
    gs_image_rgb *img = NULL, *ref = NULL, *res = NULL;
    gs_image_patches *pt = NULL, *ptref = NULL;
    float *head = NULL;
    int64_t *grid = NULL;
    gs_st *st = NULL;
    if (!name || !file || !png || !st_rel || !dsha || !rsha) {
        fprintf(stderr, "  FAIL: case without name/file/resized_png/pixel_values/sha256\n");
        return 1;
    }
    fprintf(stderr, "CASE %s\n", name);
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  FAIL %s: ", name);                                                  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            fails++;                                                                               \
        }                                                                                          \
    } while (0)

    snprintf(rel, sizeof rel, "ref/%s", file);
    double t0 = now_ms();
    img = load_image(rel, &d);
    double t1 = now_ms();
    if (!img) {
        CHECK(0, "decode %s: %s (%s)", rel, d.msg, gs_err_name(d.code));
        goto out;
    }
    const int dw = json_int_at(c, "decoded_wh", 0), dh = json_int_at(c, "decoded_wh", 1);
    sha256_hex(img->data, (size_t)img->w * img->h * 3, hex);
    const int sha_ok = strcmp(hex, dsha) == 0;
    json_t *eo = json_object_get(c, "exif_orientation");
    const int want_o = json_is_integer(eo) ? (int)json_integer_value(eo) : 1;
    fprintf(stderr, "  decoded   %dx%d (ref %dx%d) orientation %d (ref %d) sha256 %s  %.2f ms\n",
            img->w, img->h, dw, dh, img->orientation, want_o, sha_ok ? "equal" : "DIFFERENT",
            t1 - t0);
    CHECK(img->w == dw && img->h == dh, "decoded size %dx%d != %dx%d", img->w, img->h, dw, dh);
    CHECK(img->orientation == want_o, "orientation %d != %d", img->orientation, want_o);
    CHECK(img->src.width == json_int_at(c, "stored_wh", 0) &&
              img->src.height == json_int_at(c, "stored_wh", 1),
          "stored size %dx%d", img->src.width, img->src.height);
    CHECK(sha_ok, "decoded pixels differ from Pillow's (sha256 %s)", hex);

    const int rw = json_int_at(c, "resized_wh", 0), rh = json_int_at(c, "resized_wh", 1);
    int32_t sh = 0, sw = 0;
    if (gs_image_smart_resize(prm, img->h, img->w, &sh, &sw, &d)) {
        CHECK(0, "smart_resize: %s", d.msg);
        goto out;
    }
    CHECK(sw == rw && sh == rh, "smart_resize %dx%d != %dx%d", sw, sh, rw, rh);
    /* The token count the worker reads from the header (stored size,
     * before the EXIF turn) is the reference's. */
    int32_t n_tok = -1;
    const int m = prm->merge_size;
    const int want_tok = (rh / prm->patch_size) * (rw / prm->patch_size) / (m * m);
    CHECK(!gs_image_token_count(prm, img->src.height, img->src.width, &n_tok, &d) &&
              n_tok == want_tok,
          "token count from the header %d != %d", n_tok, want_tok);

    /* Our resize vs the reference resized image. */
    snprintf(rel, sizeof rel, "ref/%s", png);
    ref = load_image(rel, &d);
    if (!ref || ref->w != rw || ref->h != rh) {
        CHECK(0, "reference %s: %s", rel, ref ? "wrong size" : d.msg);
        goto out;
    }
    t0 = now_ms();
    if (gs_image_resize_bicubic(img, sw, sh, &res, &d)) {
        CHECK(0, "resize: %s", d.msg);
        goto out;
    }
    t1 = now_ms();
    const size_t nv = (size_t)rw * rh * 3;
    int maxd = 0;
    size_t ndiff = 0;
    double sumd = 0;
    for (size_t i = 0; i < nv; i++) {
        int dd = abs((int)res->data[i] - (int)ref->data[i]);
        maxd = dd > maxd ? dd : maxd;
        ndiff += dd != 0;
        sumd += dd;
    }
    sha256_hex(res->data, nv, hex);
    fprintf(stderr,
            "  resized   %dx%d  vs ref uint8: max|d| %d  mean|d| %.6f  differing %zu of %zu  "
            "sha256 %s  %.2f ms\n",
            rw, rh, maxd, sumd / (double)nv, ndiff, nv, strcmp(hex, rsha) ? "DIFFERENT" : "equal",
            t1 - t0);
    /* Pillow's resize is reproduced bit for bit, not approximately. */
    CHECK(maxd == 0 && strcmp(hex, rsha) == 0,
          "resize differs from Pillow's: max|d| %d, %zu values", maxd, ndiff);

    /* pixel_values: ours from the image vs the processor's head rows, and
     * vs the full rows rebuilt from the reference resized image. */
    t0 = now_ms();
    if (gs_image_preprocess(img, prm, &pt, &d)) {
        CHECK(0, "preprocess: %s", d.msg);
        goto out;
    }
    t1 = now_ms();
    if (gs_image_patchify(ref, prm, &ptref, &d)) {
        CHECK(0, "patchify(ref): %s", d.msg);
        goto out;
    }
    CHECK(pt->grid_t == json_int_at(c, "grid_thw", 0) &&
              pt->grid_h == json_int_at(c, "grid_thw", 1) &&
              pt->grid_w == json_int_at(c, "grid_thw", 2),
          "grid_thw [%d,%d,%d]", pt->grid_t, pt->grid_h, pt->grid_w);
    CHECK(pt->n_patches == json_integer_value(json_object_get(c, "n_patches")), "n_patches %lld",
          (long long)pt->n_patches);
    CHECK(pt->n_tokens == json_integer_value(json_object_get(c, "n_image_tokens")),
          "n_image_tokens %d", pt->n_tokens);
    fprintf(stderr, "  grid_thw  [%d, %d, %d]  n_patches %lld  tokens %d  preprocess %.2f ms\n",
            pt->grid_t, pt->grid_h, pt->grid_w, (long long)pt->n_patches, pt->n_tokens, t1 - t0);

    snprintf(rel, sizeof rel, "ref/%s", st_rel);
    const gs_st_tensor *th = NULL, *tg = NULL;
    if (gs_st_open(gs_fixture_path(rel), &d, &st) == 0) {
        th = gs_st_get(st, "pixel_values_head");
        tg = gs_st_get(st, "grid_thw");
    }
    const size_t nh = th ? (size_t)th->numel : 0;
    if (th && th->dtype == GS_ST_F32 && th->ndim == 2 && th->shape[1] == pt->patch_dim && tg &&
        tg->dtype == GS_ST_I64 && tg->numel == 3 && (head = malloc(sizeof *head * nh)) &&
        (grid = malloc(sizeof *grid * 3)) &&
        (gs_st_read_f32(st, "pixel_values_head", head, nh, &d) != 0 ||
         gs_st_read_i64(st, "grid_thw", grid, 3, &d) != 0)) {
        free(head);
        head = NULL;
    }
    if (!head || !grid) {
        CHECK(0, "%s: pixel_values_head F32 [16, %d] / grid_thw I64 [3] missing", rel,
              pt->patch_dim);
        goto out;
    }
    CHECK(grid[0] == pt->grid_t && grid[1] == pt->grid_h && grid[2] == pt->grid_w,
          "grid_thw [%d,%d,%d] != safetensors [%lld,%lld,%lld]", pt->grid_t, pt->grid_h, pt->grid_w,
          (long long)grid[0], (long long)grid[1], (long long)grid[2]);
    CHECK(nh <= (size_t)pt->n_patches * pt->patch_dim, "head larger than pixel_values");
    if (nh <= (size_t)pt->n_patches * pt->patch_dim) {
        char tn[96];
        snprintf(tn, sizeof tn, "%s.pixel_values_head", name);
        double mean = 0;
        for (size_t i = 0; i < nh; i++)
            mean += fabs((double)pt->pixels[i] - head[i]);
        mean /= (double)nh;
        CHECK(gs_check_tensor(tn, pt->pixels, head, nh, 0.01), "pixel_values_head");
        CHECK(mean <= 0.01, "pixel_values_head mean |d| %.3g > 0.01", mean);
        if (mean > worst_mean_err)
            worst_mean_err = mean;
        /* The head of the rebuilt reference must equal the processor's. */
        CHECK(memcmp(ptref->pixels, head, nh * sizeof(float)) == 0,
              "reference rows rebuilt from resized_png differ from pixel_values_head");
    }
    {
        const size_t n = (size_t)pt->n_patches * pt->patch_dim;
        double mean = 0, maxe = 0;
        size_t nd = 0;
        for (size_t i = 0; i < n; i++) {
            double e = fabs((double)pt->pixels[i] - ptref->pixels[i]);
            mean += e;
            nd += e != 0;
            maxe = e > maxe ? e : maxe;
        }
        mean /= (double)n;
        fprintf(stderr,
                "  pixel_values full [%lld, %d]: max|d| %.3g  mean|d| %.3g  differing %zu\n",
                (long long)pt->n_patches, pt->patch_dim, maxe, mean, nd);
        CHECK(mean <= 0.01, "pixel_values mean |d| %.3g > 0.01", mean);
        CHECK(maxe == 0, "pixel_values not bit-exact: max |d| %.3g", maxe);
        if (mean > worst_mean_err)
            worst_mean_err = mean;
    }
out:
#undef CHECK
    free(head);
    free(grid);
    gs_st_free(st);
    gs_image_patches_free(pt);
    gs_image_patches_free(ptref);
    gs_image_rgb_free(img);
    gs_image_rgb_free(ref);
    gs_image_rgb_free(res);
    return fails;
}

static void test_preprocess_fixtures(void)
{
    size_t len = 0;
    char *txt = gs_test_read_file(gs_fixture_path("ref/preprocess.json"), &len);
    GS_ASSERT_MSG(txt, "fixtures missing: %s (run tools/make_fixtures.py)",
                  gs_fixture_path("ref/preprocess.json"));
    json_error_t jerr;
    json_t *root = json_loadb(txt, len, 0, &jerr);
    free(txt);
    GS_ASSERT_MSG(root, "ref/preprocess.json: %s", jerr.text);
    gs_image_params prm;
    gs_diag d = {0};
    int rc = gs_image_params_load(gs_fixture_path("tiny-glm4v"), &prm, &d);
    if (rc) {
        json_decref(root);
        GS_FAIL_("preprocessor_config.json: %s", d.msg);
    }
    json_t *cases = json_object_get(root, "cases");
    int fails = 0;
    size_t n = json_array_size(cases);
    for (size_t i = 0; i < n; i++)
        fails += run_case(json_array_get(cases, i), &prm);
    json_decref(root);
    fprintf(stderr, "%zu cases, worst mean |d| in pixel_values %.3g\n", n, worst_mean_err);
    GS_ASSERT_MSG(n >= 16, "only %zu cases in ref/preprocess.json", n);
    GS_ASSERT_EQ(fails, 0);
}

int main(void)
{
    GS_RUN(test_preprocess_fixtures);
    return gs_test_summary();
}

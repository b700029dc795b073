/* Fixture test (label "fixture"): the tiny-glm4v model folder made by
 * tools/make_fixtures.py opens, its config parses, every tensor the config
 * implies is there with its shape, the special ids in config.json agree
 * with tokenizer.json, and the reference safetensors files written by
 * Python's safetensors read back consistently with the JSON references.
 * A missing fixture is a failure, not a skip. Prints the open + validate
 * time of the model folder. */
#include <jansson.h>
#include <time.h>

#include "common/dtype.h"
#include "test.h"
#include "worker/model/model_config.h"
#include "worker/model/safetensors.h"

static char g_model[4096];

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_open_and_validate(void)
{
    gs_diag d;
    gs_model_config cfg;
    gs_st *st = NULL;
    int rc = gs_model_config_load(g_model, &cfg, &d);
    GS_ASSERT_MSG(rc == 0, "config: %s (fixture missing? run tools/make_fixtures.py)", d.msg);
    rc = gs_st_open(g_model, &d, &st);
    GS_ASSERT_MSG(rc == 0, "open: %s", d.msg);
    GS_ASSERT_MSG(gs_st_n_files(st) >= 2, "%d shard(s); the fixture must be sharded",
                  gs_st_n_files(st));
    size_t extra = 99;
    rc = gs_model_config_check_weights(&cfg, st, &extra, &d);
    GS_ASSERT_MSG(rc == 0, "tensor set: %s", d.msg);
    GS_ASSERT_EQ(extra, 0);
    /* Count: 3 + 13 per text layer (+ lm_head when untied), 4 + 7 per ViT
     * block (+1 with qkv bias), post_layernorm, downsample w+b, merger 6. */
    size_t want = 2 + 13 * (size_t)cfg.text.num_hidden_layers + (cfg.tie_word_embeddings ? 0 : 1) +
                  4 + (7 + (cfg.vision.attention_bias ? 1 : 0)) * (size_t)cfg.vision.depth + 3 + 6;
    GS_ASSERT_EQ(gs_st_count(st), want);

    /* The fixture's documented purpose (docs/fixtures.md): real head size
     * and rotary layout at tiny widths. */
    GS_ASSERT_EQ(cfg.text.head_dim, 128);
    GS_ASSERT_EQ(cfg.text.rotary_dim, 64);
    GS_ASSERT_EQ(cfg.text.mrope_section[0] + cfg.text.mrope_section[1] + cfg.text.mrope_section[2],
                 32);
    GS_ASSERT_EQ(cfg.vision.head_dim, 128);
    GS_ASSERT(cfg.text.num_key_value_heads < cfg.text.num_attention_heads);
    GS_ASSERT(cfg.text.n_eos >= 1);

    /* Every tensor converts to finite float32 values. */
    size_t total = 0;
    for (size_t i = 0; i < gs_st_count(st); i++) {
        const gs_st_tensor *t = gs_st_at(st, i);
        float *buf = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *buf);
        GS_ASSERT(buf != NULL);
        rc = gs_st_read_f32(st, t->name, buf, (size_t)t->numel, &d);
        int finite = 1;
        for (int64_t k = 0; k < t->numel && rc == 0; k++)
            finite &= isfinite(buf[k]) != 0;
        free(buf);
        GS_ASSERT_MSG(rc == 0, "%s", d.msg);
        GS_ASSERT_MSG(finite, "tensor %s has non-finite values", t->name);
        total += t->nbytes;
    }
    fprintf(stderr, "  %zu tensors, %zu bytes in %d shards\n", gs_st_count(st), total,
            gs_st_n_files(st));
    gs_st_free(st);

    gs_generation_config gc;
    rc = gs_generation_config_load(g_model, &cfg, &gc, &d);
    GS_ASSERT_MSG(rc == 0, "generation_config: %s", d.msg);
    GS_ASSERT(gc.present);

    /* Timing: config + open + full validation, best and median of 21. */
    double ms[21];
    for (int r = 0; r < 21; r++) {
        double t0 = now_ms();
        gs_model_config c2;
        int ok = gs_model_config_load(g_model, &c2, &d) == 0 && gs_st_open(g_model, &d, &st) == 0;
        ok = ok && gs_model_config_check_weights(&c2, st, NULL, &d) == 0;
        gs_st_free(st);
        ms[r] = now_ms() - t0;
        GS_ASSERT_MSG(ok, "repeat %d: %s", r, d.msg);
    }
    for (int i = 1; i < 21; i++) /* insertion sort */
        for (int j = i; j > 0 && ms[j - 1] > ms[j]; j--) {
            double x = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = x;
        }
    fprintf(stderr, "  open+validate tiny-glm4v: best %.3f ms, median %.3f ms\n", ms[0], ms[10]);
}

/* id of `content` in tokenizer.json's added_tokens, or -1. */
static long long added_token_id(json_t *tok, const char *content)
{
    json_t *at = json_object_get(tok, "added_tokens");
    for (size_t i = 0; i < json_array_size(at); i++) {
        json_t *e = json_array_get(at, i);
        const char *c = json_string_value(json_object_get(e, "content"));
        if (c && !strcmp(c, content))
            return json_integer_value(json_object_get(e, "id"));
    }
    return -1;
}

static void test_ids_match_tokenizer(void)
{
    gs_diag d;
    gs_model_config cfg;
    GS_ASSERT_OK(gs_model_config_load(g_model, &cfg, &d));
    char p[4200];
    snprintf(p, sizeof p, "%s/tokenizer.json", g_model);
    json_t *tok = json_load_file(p, 0, NULL);
    GS_ASSERT_MSG(tok != NULL, "cannot read %s", p);
    GS_ASSERT_EQ(cfg.image_token_id, added_token_id(tok, "<|image|>"));
    GS_ASSERT_EQ(cfg.video_token_id, added_token_id(tok, "<|video|>"));
    GS_ASSERT_EQ(cfg.image_start_token_id, added_token_id(tok, "<|begin_of_image|>"));
    GS_ASSERT_EQ(cfg.image_end_token_id, added_token_id(tok, "<|end_of_image|>"));
    GS_ASSERT_EQ(cfg.video_start_token_id, added_token_id(tok, "<|begin_of_video|>"));
    GS_ASSERT_EQ(cfg.video_end_token_id, added_token_id(tok, "<|end_of_video|>"));
    GS_ASSERT_EQ(cfg.text.pad_token_id, added_token_id(tok, "<|endoftext|>"));
    json_decref(tok);
}

/* ref/preprocess/NAME.safetensors: grid_thw (I64) equals preprocess.json,
 * pixel rows are C*T*P*P wide (from config.json). */
static void test_reference_files(void)
{
    gs_diag d;
    gs_model_config cfg;
    GS_ASSERT_OK(gs_model_config_load(g_model, &cfg, &d));
    const int64_t row = (int64_t)cfg.vision.in_channels * cfg.vision.temporal_patch_size *
                        cfg.vision.patch_size * cfg.vision.patch_size;
    json_t *pp = json_load_file(gs_fixture_path("ref/preprocess.json"), 0, NULL);
    GS_ASSERT(pp != NULL);
    json_t *cases = json_object_get(pp, "cases");
    GS_ASSERT(json_array_size(cases) > 0);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        char rel[512];
        snprintf(rel, sizeof rel, "ref/%s", json_string_value(json_object_get(c, "pixel_values")));
        gs_st *st;
        int rc = gs_st_open(gs_fixture_path(rel), &d, &st);
        GS_ASSERT_MSG(rc == 0, "%s: %s", rel, d.msg);
        int64_t g[3];
        rc = gs_st_read_i64(st, "grid_thw", g, 3, &d);
        json_t *gj = json_object_get(c, "grid_thw");
        for (int k = 0; k < 3 && rc == 0; k++)
            if (g[k] != json_integer_value(json_array_get(gj, (size_t)k)))
                rc = -1;
        const gs_st_tensor *pv = gs_st_get(st, "pixel_values_head");
        int shape_ok = pv && pv->ndim == 2 && pv->shape[1] == row &&
                       pv->shape[0] <= json_integer_value(json_object_get(c, "n_patches"));
        gs_st_free(st);
        GS_ASSERT_MSG(rc == 0, "%s: grid_thw differs from preprocess.json (%s)", rel, d.msg);
        GS_ASSERT_MSG(shape_ok, "%s: pixel_values_head shape", rel);
    }
    json_decref(pp);

    /* ref/model: logits [L, vocab], hidden_states [layers + 1, L, hidden]. */
    json_t *mc = json_load_file(gs_fixture_path("ref/model_cases.json"), 0, NULL);
    GS_ASSERT(mc != NULL);
    cases = json_object_get(mc, "cases");
    GS_ASSERT(json_array_size(cases) > 0);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        char rel[512];
        snprintf(rel, sizeof rel, "ref/%s", json_string_value(json_object_get(c, "tensors")));
        int64_t L = (int64_t)json_array_size(json_object_get(c, "input_ids"));
        gs_st *st;
        int rc = gs_st_open(gs_fixture_path(rel), &d, &st);
        GS_ASSERT_MSG(rc == 0, "%s: %s", rel, d.msg);
        int r1 = GS_ST_EXPECT(st, "logits", GS_ST_ANY, &d, L, cfg.text.vocab_size);
        int r2 = r1 ? r1
                    : GS_ST_EXPECT(st, "hidden_states", GS_ST_ANY, &d,
                                   cfg.text.num_hidden_layers + 1, L, cfg.text.hidden_size);
        gs_st_free(st);
        GS_ASSERT_MSG(r2 == 0, "%s: %s", rel, d.msg);
    }
    json_decref(mc);
}

int main(void)
{
    snprintf(g_model, sizeof g_model, "%s", gs_fixture_path("tiny-glm4v"));
    GS_RUN(test_open_and_validate);
    GS_RUN(test_ids_match_tokenizer);
    GS_RUN(test_reference_files);
    return gs_test_summary();
}

/* Tests for worker/model/model_config: both rope layouts, class defaults,
 * errors naming keys, generation_config.json, and the tensor-set check. */
#include <sys/stat.h>

#include "st_write.h"
#include "test.h"
#include "worker/model/model_config.h"

static char g_dir[512];

/* transformers 5.x layout (rope_parameters). */
static const char *k_v5 =
    "{\"architectures\": [\"Glm4vForConditionalGeneration\"], \"model_type\": \"glm4v\","
    " \"image_token_id\": 90, \"video_token_id\": 91, \"image_start_token_id\": 92,"
    " \"image_end_token_id\": 93, \"video_start_token_id\": 94, \"video_end_token_id\": 95,"
    " \"tie_word_embeddings\": false,"
    " \"text_config\": {\"vocab_size\": 100, \"hidden_size\": 256, \"intermediate_size\": 64,"
    "  \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
    "  \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-05,"
    "  \"eos_token_id\": [96, 97], \"pad_token_id\": 96,"
    "  \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 500000.0,"
    "   \"partial_rotary_factor\": 0.5, \"mrope_section\": [8, 12, 12]}},"
    " \"vision_config\": {\"depth\": 3, \"hidden_size\": 64, \"num_heads\": 2,"
    "  \"intermediate_size\": 48, \"out_hidden_size\": 256, \"patch_size\": 14,"
    "  \"temporal_patch_size\": 2, \"spatial_merge_size\": 2, \"image_size\": 56,"
    "  \"in_channels\": 3, \"rms_norm_eps\": 1e-06, \"attention_bias\": false,"
    "  \"rope_parameters\": {\"rope_type\": \"axial\", \"rope_theta\": 20000.0}}}";

/* transformers 4.57 layout (rope_theta / partial_rotary_factor / rope_scaling). */
static const char *k_v457 =
    "{\"architectures\": [\"Glm4vForConditionalGeneration\"], \"model_type\": \"glm4v\","
    " \"image_token_id\": 90, \"video_token_id\": 91, \"image_start_token_id\": 92,"
    " \"image_end_token_id\": 93, \"video_start_token_id\": 94, \"video_end_token_id\": 95,"
    " \"text_config\": {\"vocab_size\": 100, \"hidden_size\": 256, \"intermediate_size\": 64,"
    "  \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
    "  \"head_dim\": 128, \"attention_bias\": true,"
    "  \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-05,"
    "  \"eos_token_id\": [96, 97], \"pad_token_id\": 96,"
    "  \"rope_theta\": 500000, \"partial_rotary_factor\": 0.5,"
    "  \"rope_scaling\": {\"type\": \"default\", \"mrope_section\": [8, 12, 12]}},"
    " \"vision_config\": {\"depth\": 3, \"hidden_size\": 64, \"num_heads\": 2,"
    "  \"intermediate_size\": 48, \"out_hidden_size\": 256, \"patch_size\": 14,"
    "  \"temporal_patch_size\": 2, \"spatial_merge_size\": 2, \"image_size\": 56,"
    "  \"in_channels\": 3, \"rms_norm_eps\": 1e-06}}";

static int parse_str(const char *s, gs_model_config *c, gs_diag *d)
{
    return gs_model_config_parse(s, strlen(s), NULL, c, d);
}

static void check_common(const gs_model_config *c)
{
    const gs_text_config *t = &c->text;
    GS_ASSERT_EQ(t->vocab_size, 100);
    GS_ASSERT_EQ(t->hidden_size, 256);
    GS_ASSERT_EQ(t->intermediate_size, 64);
    GS_ASSERT_EQ(t->num_hidden_layers, 2);
    GS_ASSERT_EQ(t->num_attention_heads, 2);
    GS_ASSERT_EQ(t->num_key_value_heads, 1);
    GS_ASSERT_EQ(t->head_dim, 128);
    GS_ASSERT_EQ(t->max_position_embeddings, 4096);
    GS_ASSERT_NEAR(t->rms_norm_eps, 1e-5, 0);
    GS_ASSERT_NEAR(t->rope_theta, 500000.0, 0);
    GS_ASSERT_NEAR(t->partial_rotary_factor, 0.5, 0);
    GS_ASSERT_EQ(t->rotary_dim, 64);
    GS_ASSERT_EQ(t->mrope_section[0], 8);
    GS_ASSERT_EQ(t->mrope_section[1], 12);
    GS_ASSERT_EQ(t->mrope_section[2], 12);
    GS_ASSERT_EQ(t->n_eos, 2);
    GS_ASSERT_EQ(t->eos_token_ids[0], 96);
    GS_ASSERT_EQ(t->eos_token_ids[1], 97);
    GS_ASSERT_EQ(t->pad_token_id, 96);
    GS_ASSERT_EQ(t->attention_bias, 1);
    const gs_vision_config *v = &c->vision;
    GS_ASSERT_EQ(v->depth, 3);
    GS_ASSERT_EQ(v->hidden_size, 64);
    GS_ASSERT_EQ(v->num_heads, 2);
    GS_ASSERT_EQ(v->head_dim, 32);
    GS_ASSERT_EQ(v->intermediate_size, 48);
    GS_ASSERT_EQ(v->out_hidden_size, 256);
    GS_ASSERT_EQ(v->patch_size, 14);
    GS_ASSERT_EQ(v->temporal_patch_size, 2);
    GS_ASSERT_EQ(v->spatial_merge_size, 2);
    GS_ASSERT_EQ(v->image_size, 56);
    GS_ASSERT_EQ(v->num_positions, 16);
    GS_ASSERT_EQ(v->in_channels, 3);
    GS_ASSERT_NEAR(v->rms_norm_eps, 1e-6, 0);
    GS_ASSERT_EQ(v->attention_bias, 0);
    GS_ASSERT_EQ(c->image_token_id, 90);
    GS_ASSERT_EQ(c->video_token_id, 91);
    GS_ASSERT_EQ(c->image_start_token_id, 92);
    GS_ASSERT_EQ(c->image_end_token_id, 93);
    GS_ASSERT_EQ(c->video_start_token_id, 94);
    GS_ASSERT_EQ(c->video_end_token_id, 95);
    GS_ASSERT_EQ(c->tie_word_embeddings, 0);
}

static void test_v5_form(void)
{
    gs_model_config c;
    gs_diag d;
    int rc = parse_str(k_v5, &c, &d);
    GS_ASSERT_MSG(rc == 0, "%s", d.msg);
    check_common(&c);
    GS_ASSERT_NEAR(c.vision.rope_theta, 20000.0, 0);
}

static void test_v457_form(void)
{
    gs_model_config c;
    gs_diag d;
    int rc = parse_str(k_v457, &c, &d);
    GS_ASSERT_MSG(rc == 0, "%s", d.msg);
    check_common(&c);
    GS_ASSERT_NEAR(c.vision.rope_theta, 10000.0, 0); /* class default */
}

/* Applies edits to k_v5 ("a.b.c" = JSON text, or NULL to delete) and
 * parses; returns the result code, diag in *d. */
typedef struct {
    const char *path;
    const char *value;
} edit;

static int parse_edited(const char *base, const edit *e, int n, gs_model_config *c, gs_diag *d)
{
    json_t *root = json_loads(base, 0, NULL);
    for (int i = 0; i < n; i++) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", e[i].path);
        json_t *obj = root;
        char *key = buf, *dot;
        while ((dot = strchr(key, '.'))) {
            *dot = 0;
            obj = json_object_get(obj, key);
            key = dot + 1;
        }
        if (e[i].value)
            json_object_set_new(obj, key, json_loads(e[i].value, JSON_DECODE_ANY, NULL));
        else
            json_object_del(obj, key);
    }
    char *s = json_dumps(root, 0);
    json_decref(root);
    int rc = parse_str(s, c, d);
    free(s);
    return rc;
}

static void test_defaults(void)
{
    /* No rope keys anywhere: theta 10000, factor 1.0, mrope [8,12,12]. With
     * head_dim 64 (128 / 2) the default sections fit. */
    const edit e[] = {
        {"text_config.rope_parameters", NULL},
        {"text_config.hidden_size", "128"},
        {"vision_config.out_hidden_size", "128"},
        {"vision_config.rope_parameters", NULL},
        {"video_token_id", NULL},
        {"video_start_token_id", "null"},
        {"text_config.pad_token_id", NULL},
        {"text_config.eos_token_id", NULL},
        {"eos_token_id", "5"},
        {"text_config.num_key_value_heads", "null"},
        {"text_config.tie_word_embeddings", "true"},
    };
    gs_model_config c;
    gs_diag d;
    int rc = parse_edited(k_v5, e, sizeof e / sizeof e[0], &c, &d);
    GS_ASSERT_MSG(rc == 0, "%s", d.msg);
    GS_ASSERT_NEAR(c.text.rope_theta, 10000.0, 0);
    GS_ASSERT_NEAR(c.text.partial_rotary_factor, 1.0, 0);
    GS_ASSERT_EQ(c.text.rotary_dim, 64);
    GS_ASSERT_EQ(c.text.mrope_section[0], 8);
    GS_ASSERT_EQ(c.text.mrope_section[1], 12);
    GS_ASSERT_EQ(c.text.mrope_section[2], 12);
    GS_ASSERT_NEAR(c.vision.rope_theta, 10000.0, 0);
    GS_ASSERT_EQ(c.video_token_id, -1);
    GS_ASSERT_EQ(c.video_start_token_id, -1);
    GS_ASSERT_EQ(c.text.pad_token_id, -1);
    GS_ASSERT_EQ(c.text.n_eos, 1); /* top-level fallback, single int */
    GS_ASSERT_EQ(c.text.eos_token_ids[0], 5);
    GS_ASSERT_EQ(c.text.num_key_value_heads, 2); /* null: = heads */
    GS_ASSERT_EQ(c.tie_word_embeddings, 1);      /* from text_config */

    /* rope_theta at text_config level is used when the dict lacks it;
     * the dict wins when both have it. */
    const edit e2[] = {{"text_config.rope_theta", "1234"}};
    rc = parse_edited(k_v5, e2, 1, &c, &d);
    GS_ASSERT_MSG(rc == 0, "%s", d.msg);
    GS_ASSERT_NEAR(c.text.rope_theta, 500000.0, 0);
    const edit e3[] = {{"text_config.rope_theta", "1234"},
                       {"text_config.rope_parameters.rope_theta", NULL}};
    rc = parse_edited(k_v5, e3, 2, &c, &d);
    GS_ASSERT_MSG(rc == 0, "%s", d.msg);
    GS_ASSERT_NEAR(c.text.rope_theta, 1234.0, 0);

    /* Glm46V naming is the same architecture. */
    const edit e4[] = {{"architectures", "[\"Glm46VForConditionalGeneration\"]"},
                       {"model_type", "\"glm46v\""}};
    rc = parse_edited(k_v5, e4, 2, &c, &d);
    GS_ASSERT_MSG(rc == 0, "%s", d.msg);
    const edit e5[] = {{"architectures", NULL}};
    rc = parse_edited(k_v5, e5, 1, &c, &d);
    GS_ASSERT_MSG(rc == 0, "%s", d.msg); /* model_type glm4v is enough */
}

typedef struct {
    edit e[2];
    const char *want; /* substring of the diag */
} bad_case;

static void test_errors(void)
{
    static const bad_case cases[] = {
        {{{"text_config.num_key_value_heads", NULL}},
         "config.json: text_config.num_key_value_heads: missing"},
        {{{"text_config.num_attention_heads", "32"}, {"text_config.num_key_value_heads", "3"}},
         "text_config.num_key_value_heads: 3 must divide num_attention_heads (32)"},
        {{{"architectures", "[\"LlamaForCausalLM\"]"}, {"model_type", "\"llama\""}},
         "config.json: unsupported architecture LlamaForCausalLM"},
        {{{"architectures", NULL}, {"model_type", "\"glm4v_moe\""}},
         "unsupported architecture glm4v_moe"},
        {{{"text_config", NULL}}, "config.json: text_config: missing"},
        {{{"vision_config", "[]"}}, "vision_config: must be an object"},
        {{{"text_config.hidden_size", "\"256\""}}, "text_config.hidden_size: must be an integer"},
        {{{"text_config.hidden_size", "0"}}, "text_config.hidden_size: 0 out of range"},
        {{{"text_config.vocab_size", "1e3"}}, "text_config.vocab_size: must be an integer"},
        {{{"text_config.num_attention_heads", "3"}},
         "text_config.num_attention_heads: 3 must divide hidden_size (256)"},
        {{{"text_config.head_dim", "64"}}, "text_config.head_dim: 64 differs"},
        {{{"text_config.rms_norm_eps", "-1"}}, "text_config.rms_norm_eps: -1 out of range"},
        {{{"text_config.max_position_embeddings", NULL}},
         "text_config.max_position_embeddings: missing"},
        {{{"image_token_id", "100"}}, "image_token_id: id 100 outside the vocabulary (100)"},
        {{{"image_token_id", NULL}}, "config.json: image_token_id: missing"},
        {{{"video_end_token_id", "150"}}, "video_end_token_id: id 150 outside"},
        {{{"text_config.eos_token_id", "[96, 1000]"}}, "text_config.eos_token_id: id 1000"},
        {{{"text_config.eos_token_id", "[96, \"x\"]"}}, "text_config.eos_token_id[1]"},
        {{{"text_config.eos_token_id", "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]"}}, "at most 16"},
        {{{"text_config.pad_token_id", "-1"}}, "text_config.pad_token_id: id -1"},
        {{{"tie_word_embeddings", "\"yes\""}}, "tie_word_embeddings: must be true or false"},
        {{{"text_config.rope_parameters.mrope_section", "[8, 12]"}},
         "text_config.rope_parameters.mrope_section"},
        {{{"text_config.rope_parameters.mrope_section", "[8, 12, 13]"}}, "sums to 33"},
        {{{"text_config.rope_parameters.partial_rotary_factor", NULL}},
         "mrope_section: [8, 12, 12] sums to 32, must be rotary_dim / 2 = 64"},
        {{{"text_config.rope_parameters.partial_rotary_factor", "1.5"}},
         "text_config.rope_parameters.partial_rotary_factor: 1.5 out of range"},
        {{{"text_config.rope_parameters.partial_rotary_factor", "0.5078125"}}, "rotary dims 65"},
        {{{"text_config.rope_parameters.rope_type", "\"yarn\""}},
         "text_config.rope_parameters.rope_type: 'yarn' not supported"},
        {{{"text_config.rope_parameters.rope_theta", "\"big\""}},
         "text_config.rope_parameters.rope_theta: must be a number"},
        {{{"text_config.rope_parameters", "5"}}, "text_config.rope_parameters: must be an object"},
        {{{"vision_config.num_heads", "3"}}, "vision_config.num_heads: 3 must divide"},
        {{{"vision_config.num_heads", "32"}}, "head_dim 2 must be a multiple of 4"},
        {{{"vision_config.out_hidden_size", "128"}},
         "vision_config.out_hidden_size: 128 must equal text_config.hidden_size (256)"},
        {{{"vision_config.image_size", "10"}}, "vision_config.image_size: 10 smaller"},
        {{{"vision_config.depth", NULL}}, "config.json: vision_config.depth: missing"},
        {{{"vision_config.rope_parameters.rope_type", "\"mrope\""}},
         "vision_config.rope_parameters.rope_type: 'mrope' not supported"},
        {{{"vision_config.rope_parameters.rope_theta", "0"}},
         "vision_config.rope_parameters.rope_theta: 0 out of range"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = cases[i].e[1].path ? 2 : 1;
        gs_model_config c;
        gs_diag d;
        int rc = parse_edited(k_v5, cases[i].e, n, &c, &d);
        GS_ASSERT_MSG(rc == GS_ECONFIG && d.code == GS_ECONFIG, "case %zu (%s): rc %s, diag %s", i,
                      cases[i].e[0].path, gs_err_name(rc), d.msg);
        GS_ASSERT_MSG(strstr(d.msg, cases[i].want) != NULL,
                      "case %zu: diag\n    \"%s\"\n lacks \"%s\"", i, d.msg, cases[i].want);
    }
    gs_model_config c;
    gs_diag d;
    GS_ASSERT_EQ(parse_str("{\"text_config\": ", &c, &d), GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "config.json: JSON") != NULL);
    GS_ASSERT_EQ(parse_str("[1]", &c, &d), GS_ECONFIG);
    GS_ASSERT_EQ(parse_str("", &c, &d), GS_ECONFIG);
    /* The legacy form's rope_scaling is checked like rope_parameters. */
    const edit e[] = {{"text_config.rope_scaling.type", "\"linear\""}};
    GS_ASSERT_EQ(parse_edited(k_v457, e, 1, &c, &d), GS_ECONFIG);
    GS_ASSERT_MSG(strstr(d.msg, "text_config.rope_scaling.rope_type: 'linear'"), "%s", d.msg);
}

static void test_generation_config(void)
{
    gs_model_config c;
    gs_diag d;
    GS_ASSERT_OK(parse_str(k_v5, &c, &d));
    const char *g = "{\"do_sample\": true, \"eos_token_id\": [96, 98], \"pad_token_id\": 96,"
                    " \"temperature\": 0.8, \"top_p\": 0.6, \"top_k\": 2,"
                    " \"repetition_penalty\": 1.1, \"transformers_version\": \"5.24.0\"}";
    gs_generation_config gc;
    GS_ASSERT_OK(gs_generation_config_parse(g, strlen(g), &c, &gc, &d));
    GS_ASSERT(gc.present && gc.has_eos && gc.has_pad && gc.has_temperature && gc.has_top_p);
    GS_ASSERT(gc.has_top_k && gc.has_repetition_penalty && gc.has_do_sample);
    GS_ASSERT(!gc.has_max_new_tokens);
    GS_ASSERT_EQ(gc.n_eos, 2);
    GS_ASSERT_EQ(gc.eos_token_ids[1], 98);
    GS_ASSERT_EQ(gc.pad_token_id, 96);
    GS_ASSERT_NEAR(gc.temperature, 0.8, 0);
    GS_ASSERT_NEAR(gc.top_p, 0.6, 0);
    GS_ASSERT_EQ(gc.top_k, 2);
    GS_ASSERT_NEAR(gc.repetition_penalty, 1.1, 0);
    GS_ASSERT_EQ(gc.do_sample, 1);

    const char *g2 = "{\"eos_token_id\": 7, \"max_new_tokens\": 16, \"top_k\": null}";
    GS_ASSERT_OK(gs_generation_config_parse(g2, strlen(g2), &c, &gc, &d));
    GS_ASSERT(gc.has_eos && gc.n_eos == 1 && gc.eos_token_ids[0] == 7);
    GS_ASSERT(!gc.has_pad && gc.pad_token_id == -1 && !gc.has_top_k);
    GS_ASSERT(gc.has_max_new_tokens && gc.max_new_tokens == 16);

    static const struct {
        const char *json, *want;
    } bad[] = {
        {"{\"temperature\": -1}", "generation_config.json: temperature: -1 out of range"},
        {"{\"top_p\": 2}", "top_p: 2 out of range"},
        {"{\"top_k\": 1.5}", "top_k: must be an integer"},
        {"{\"do_sample\": 1}", "do_sample: must be true or false"},
        {"{\"eos_token_id\": [100]}", "eos_token_id: id 100 outside the vocabulary (100)"},
        {"{\"repetition_penalty\": 0}", "repetition_penalty"},
        {"{\"max_new_tokens\": -5}", "max_new_tokens"},
        {"[]", "not a JSON object"},
        {"{", "generation_config.json: JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = gs_generation_config_parse(bad[i].json, strlen(bad[i].json), &c, &gc, &d);
        GS_ASSERT_MSG(rc == GS_ECONFIG && strstr(d.msg, bad[i].want),
                      "%s: rc %s diag \"%s\", want \"%s\"", bad[i].json, gs_err_name(rc), d.msg,
                      bad[i].want);
    }
}

static void test_load_folder(void)
{
    char sub[1024], p[1100];
    tw_path(sub, sizeof sub, g_dir, "cfg");
    GS_ASSERT_OK(mkdir(sub, 0700));
    gs_model_config c;
    gs_generation_config gc;
    gs_diag d;
    GS_ASSERT_EQ(gs_model_config_load(sub, &c, &d), GS_ENOENT);
    GS_ASSERT(strstr(d.msg, "config.json") != NULL);
    GS_ASSERT_OK(tw_write_text(tw_path(p, sizeof p, sub, "config.json"), k_v457));
    GS_ASSERT_OK(gs_model_config_load(sub, &c, &d));
    check_common(&c);
    GS_ASSERT_OK(gs_generation_config_load(sub, &c, &gc, &d)); /* absent: fine */
    GS_ASSERT_EQ(gc.present, 0);
    GS_ASSERT_OK(
        tw_write_text(tw_path(p, sizeof p, sub, "generation_config.json"), "{\"top_k\": 3}"));
    GS_ASSERT_OK(gs_generation_config_load(sub, &c, &gc, &d));
    GS_ASSERT(gc.present && gc.has_top_k && gc.top_k == 3);
    GS_ASSERT_OK(tw_write_text(tw_path(p, sizeof p, sub, "generation_config.json"), "{\"top_k\""));
    GS_ASSERT_EQ(gs_generation_config_load(sub, &c, &gc, &d), GS_ECONFIG);
    tw_rmdir(sub);
}

/* --- tensor set --------------------------------------------------------- */

/* A small config: text hidden 32 (2 heads of 16, 1 kv head, rotary 8 ->
 * mrope [2,1,1]), intermediate 40, vocab 50, 2 layers; vision hidden 16
 * (2 heads of 8), out 32, merger 24, patch 2, image 4 (4 positions). */
static const char *k_small =
    "{\"architectures\": [\"Glm4vForConditionalGeneration\"], \"image_token_id\": 40,"
    " \"text_config\": {\"vocab_size\": 50, \"hidden_size\": 32, \"intermediate_size\": 40,"
    "  \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
    "  \"max_position_embeddings\": 256, \"rms_norm_eps\": 1e-05,"
    "  \"rope_parameters\": {\"rope_theta\": 10000, \"partial_rotary_factor\": 0.5,"
    "   \"mrope_section\": [2, 1, 1]}},"
    " \"vision_config\": {\"depth\": 2, \"hidden_size\": 16, \"num_heads\": 2,"
    "  \"intermediate_size\": 24, \"out_hidden_size\": 32, \"patch_size\": 2,"
    "  \"temporal_patch_size\": 2, \"spatial_merge_size\": 2, \"image_size\": 4,"
    "  \"in_channels\": 3, \"rms_norm_eps\": 1e-06}}";

#define MAXT 64
static tw_tensor g_t[MAXT];
static char g_names[MAXT][96];
static int g_nt;

static void add(const char *dt, int ndim, int64_t a, int64_t b, int64_t c, int64_t d, int64_t e,
                const char *fmt, int idx)
{
    tw_tensor *t = &g_t[g_nt];
    snprintf(g_names[g_nt], sizeof g_names[0], fmt, idx);
    t->name = g_names[g_nt];
    t->dtype = dt;
    t->ndim = ndim;
    int64_t s[5] = {a, b, c, d, e};
    memcpy(t->shape, s, sizeof s);
    g_nt++;
}

/* The tensor list of spec section 2 for k_small, written out by hand. */
static void build_small_list(void)
{
    g_nt = 0;
    add("BF16", 2, 50, 32, 0, 0, 0, "model.language_model.embed_tokens.weight%.0d", 0);
    for (int l = 0; l < 2; l++) {
        const char *p = "model.language_model.layers.%d.";
        char f[160];
#define L(suffix, dt, n, a, b)                                                                     \
    (snprintf(f, sizeof f, "%s%s", p, suffix), add(dt, n, a, b, 0, 0, 0, f, l))
        L("input_layernorm.weight", "BF16", 1, 32, 0);
        L("self_attn.q_proj.weight", "BF16", 2, 32, 32);
        L("self_attn.q_proj.bias", "BF16", 1, 32, 0);
        L("self_attn.k_proj.weight", "BF16", 2, 16, 32);
        L("self_attn.k_proj.bias", "BF16", 1, 16, 0);
        L("self_attn.v_proj.weight", "BF16", 2, 16, 32);
        L("self_attn.v_proj.bias", "BF16", 1, 16, 0);
        L("self_attn.o_proj.weight", "BF16", 2, 32, 32);
        L("post_self_attn_layernorm.weight", "F32", 1, 32, 0);
        L("post_attention_layernorm.weight", "F16", 1, 32, 0);
        L("mlp.gate_up_proj.weight", "BF16", 2, 80, 32);
        L("mlp.down_proj.weight", "BF16", 2, 32, 40);
        L("post_mlp_layernorm.weight", "BF16", 1, 32, 0);
#undef L
    }
    add("BF16", 1, 32, 0, 0, 0, 0, "model.language_model.norm.weight%.0d", 0);
    add("BF16", 2, 50, 32, 0, 0, 0, "lm_head.weight%.0d", 0);
    add("BF16", 5, 16, 3, 2, 2, 2, "model.visual.patch_embed.proj.weight%.0d", 0);
    add("BF16", 1, 16, 0, 0, 0, 0, "model.visual.patch_embed.proj.bias%.0d", 0);
    add("BF16", 1, 16, 0, 0, 0, 0, "model.visual.post_conv_layernorm.weight%.0d", 0);
    add("BF16", 2, 4, 16, 0, 0, 0, "model.visual.embeddings.position_embedding.weight%.0d", 0);
    for (int b = 0; b < 2; b++) {
        add("BF16", 1, 16, 0, 0, 0, 0, "model.visual.blocks.%d.norm1.weight", b);
        add("BF16", 1, 16, 0, 0, 0, 0, "model.visual.blocks.%d.norm2.weight", b);
        add("BF16", 2, 48, 16, 0, 0, 0, "model.visual.blocks.%d.attn.qkv.weight", b);
        add("BF16", 2, 16, 16, 0, 0, 0, "model.visual.blocks.%d.attn.proj.weight", b);
        add("BF16", 2, 32, 16, 0, 0, 0, "model.visual.blocks.%d.mlp.gate_proj.weight", b);
        add("BF16", 2, 32, 16, 0, 0, 0, "model.visual.blocks.%d.mlp.up_proj.weight", b);
        add("BF16", 2, 16, 32, 0, 0, 0, "model.visual.blocks.%d.mlp.down_proj.weight", b);
    }
    add("BF16", 1, 16, 0, 0, 0, 0, "model.visual.post_layernorm.weight%.0d", 0);
    add("BF16", 4, 32, 16, 2, 2, 0, "model.visual.downsample.weight%.0d", 0);
    add("BF16", 1, 32, 0, 0, 0, 0, "model.visual.downsample.bias%.0d", 0);
    add("BF16", 2, 32, 32, 0, 0, 0, "model.visual.merger.proj.weight%.0d", 0);
    add("BF16", 1, 32, 0, 0, 0, 0, "model.visual.merger.post_projection_norm.weight%.0d", 0);
    add("BF16", 1, 32, 0, 0, 0, 0, "model.visual.merger.post_projection_norm.bias%.0d", 0);
    add("BF16", 2, 24, 32, 0, 0, 0, "model.visual.merger.gate_proj.weight%.0d", 0);
    add("BF16", 2, 24, 32, 0, 0, 0, "model.visual.merger.up_proj.weight%.0d", 0);
    add("BF16", 2, 32, 24, 0, 0, 0, "model.visual.merger.down_proj.weight%.0d", 0);
}

static int find_t(const char *name)
{
    for (int i = 0; i < g_nt; i++)
        if (!strcmp(g_t[i].name, name))
            return i;
    return -1;
}

/* Writes the current list, opens it and runs the check. */
static int check_list(const gs_model_config *c, size_t *n_unexp, gs_diag *d)
{
    char p[1100];
    tw_path(p, sizeof p, g_dir, "w.safetensors");
    if (tw_write(p, g_t, g_nt, NULL, 8, NULL) != 0)
        return -100;
    gs_st *st;
    int rc = gs_st_open(p, d, &st);
    if (rc != 0)
        return -200;
    rc = gs_model_config_check_weights(c, st, n_unexp, d);
    gs_st_free(st);
    return rc;
}

static void test_check_weights(void)
{
    gs_model_config c;
    gs_diag d;
    int rc = parse_str(k_small, &c, &d);
    GS_ASSERT_MSG(rc == 0, "%s", d.msg);
    size_t extra = 99;

    build_small_list();
    GS_ASSERT_EQ(g_nt, 3 + 2 * 13 + 4 + 2 * 7 + 3 + 6);
    rc = check_list(&c, &extra, &d);
    GS_ASSERT_MSG(rc == 0, "%s", d.msg);
    GS_ASSERT_EQ(extra, 0);

    /* An extra tensor is counted, not an error. */
    add("U8", 1, 3, 0, 0, 0, 0, "extra.thing%.0d", 0);
    GS_ASSERT_OK(check_list(&c, &extra, &d));
    GS_ASSERT_EQ(extra, 1);

    /* Missing tensor. */
    build_small_list();
    int i = find_t("model.visual.merger.down_proj.weight");
    g_t[i] = g_t[--g_nt];
    GS_ASSERT_EQ(check_list(&c, NULL, &d), GS_ENOENT);
    GS_ASSERT_MSG(strstr(d.msg, "model.visual.merger.down_proj.weight"), "%s", d.msg);

    /* Wrong shape: both shapes in the message. */
    build_small_list();
    i = find_t("model.language_model.layers.1.self_attn.k_proj.weight");
    g_t[i].shape[0] = 32;
    GS_ASSERT_EQ(check_list(&c, NULL, &d), GS_EFORMAT);
    GS_ASSERT_MSG(strstr(d.msg, "layers.1.self_attn.k_proj.weight") && strstr(d.msg, "[32, 32]") &&
                      strstr(d.msg, "[16, 32]"),
                  "%s", d.msg);
    /* The ViT MLP is out_hidden wide; a merger-width MLP must be refused. */
    build_small_list();
    i = find_t("model.visual.blocks.0.mlp.gate_proj.weight");
    g_t[i].shape[0] = 24;
    GS_ASSERT_EQ(check_list(&c, NULL, &d), GS_EFORMAT);
    GS_ASSERT_MSG(strstr(d.msg, "blocks.0.mlp.gate_proj"), "%s", d.msg);
    /* Non-float dtype. */
    build_small_list();
    i = find_t("model.language_model.norm.weight");
    g_t[i].dtype = "I32";
    GS_ASSERT_EQ(check_list(&c, NULL, &d), GS_EFORMAT);
    GS_ASSERT_MSG(strstr(d.msg, "model.language_model.norm.weight") && strstr(d.msg, "I32"), "%s",
                  d.msg);

    /* Tied embeddings: lm_head may be absent. */
    build_small_list();
    i = find_t("lm_head.weight");
    g_t[i] = g_t[--g_nt];
    GS_ASSERT_EQ(check_list(&c, NULL, &d), GS_ENOENT);
    GS_ASSERT_MSG(strstr(d.msg, "lm_head.weight"), "%s", d.msg);
    c.tie_word_embeddings = 1;
    GS_ASSERT_OK(check_list(&c, &extra, &d));
    c.tie_word_embeddings = 0;

    /* vision attention_bias adds qkv biases. */
    build_small_list();
    c.vision.attention_bias = 1;
    GS_ASSERT_EQ(check_list(&c, NULL, &d), GS_ENOENT);
    GS_ASSERT_MSG(strstr(d.msg, "model.visual.blocks.0.attn.qkv.bias"), "%s", d.msg);
    add("BF16", 1, 48, 0, 0, 0, 0, "model.visual.blocks.%d.attn.qkv.bias", 0);
    add("BF16", 1, 48, 0, 0, 0, 0, "model.visual.blocks.%d.attn.qkv.bias", 1);
    GS_ASSERT_OK(check_list(&c, &extra, &d));
    GS_ASSERT_EQ(extra, 0);
}

/* preprocessor_config.json against config.json: the fixture folder agrees;
 * each disagreeing key is refused, naming both files and both keys. */
static void test_check_image_params(void)
{
    gs_model_config c;
    gs_image_params ip;
    gs_diag d;
    GS_ASSERT_OK(gs_model_config_load(gs_fixture_path("tiny-glm4v"), &c, &d));
    GS_ASSERT_OK(gs_image_params_load(gs_fixture_path("tiny-glm4v"), &ip, &d));
    GS_ASSERT_OK(gs_model_check_image_params(&c, &ip, &d));
    static const struct {
        int32_t patch, temporal, merge;
        const char *pre_key, *cfg_key;
    } bad[] = {
        {7, 2, 2, "patch_size", "vision_config.patch_size"},
        {1, 2, 2, "patch_size", "vision_config.patch_size"},
        {28, 2, 2, "patch_size", "vision_config.patch_size"},
        {14, 1, 2, "temporal_patch_size", "vision_config.temporal_patch_size"},
        {14, 2, 1, "merge_size", "vision_config.spatial_merge_size"},
        {14, 2, 4, "merge_size", "vision_config.spatial_merge_size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[512];
        snprintf(json, sizeof json,
                 "{\"size\": {\"shortest_edge\": 12544, \"longest_edge\": 9633792},"
                 " \"patch_size\": %d, \"temporal_patch_size\": %d, \"merge_size\": %d,"
                 " \"image_mean\": [0.5, 0.5, 0.5], \"image_std\": [0.5, 0.5, 0.5]}",
                 bad[i].patch, bad[i].temporal, bad[i].merge);
        GS_ASSERT_OK(gs_image_params_parse(json, strlen(json), &ip, &d));
        GS_ASSERT_EQ(gs_model_check_image_params(&c, &ip, &d), GS_ECONFIG);
        GS_ASSERT_EQ(d.code, GS_ECONFIG);
        fprintf(stderr, "  refused: %s\n", d.msg);
        GS_ASSERT(strstr(d.msg, "preprocessor_config.json") != NULL);
        GS_ASSERT(strstr(d.msg, "config.json: ") != NULL);
        GS_ASSERT(strstr(d.msg, bad[i].pre_key) != NULL);
        GS_ASSERT(strstr(d.msg, bad[i].cfg_key) != NULL);
    }
    /* The preprocessor makes RGB: a 4-channel tower is refused too. */
    GS_ASSERT_OK(gs_image_params_load(gs_fixture_path("tiny-glm4v"), &ip, &d));
    c.vision.in_channels = 4;
    GS_ASSERT_EQ(gs_model_check_image_params(&c, &ip, &d), GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "vision_config.in_channels") != NULL);
}

int main(void)
{
    if (!tw_mkdtemp(g_dir, sizeof g_dir)) {
        fprintf(stderr, "cannot create a temporary folder\n");
        return 1;
    }
    GS_RUN(test_v5_form);
    GS_RUN(test_v457_form);
    GS_RUN(test_defaults);
    GS_RUN(test_errors);
    GS_RUN(test_generation_config);
    GS_RUN(test_load_folder);
    GS_RUN(test_check_weights);
    GS_RUN(test_check_image_params);
    tw_rmdir(g_dir);
    return gs_test_summary();
}

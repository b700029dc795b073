/* test_quant_folder.c - the pieces of quantized weights that need no
 * quantized GEMM: --weights / --gpu-memory parsing, config.json's
 * quantization_config, the safetensors writer, gs_quantize_rows_mt against
 * gs_quantize, the size estimate, and glmserve-quantize's folder on the
 * fixture model with the ways a broken one must fail (missing or
 * mis-shaped NAME_scale, wrong q size, unknown quant_method, a --weights
 * that does not match): an error naming the tensor or key, never a crash. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bytes.h"
#include "common/dtype.h"
#include "common/log.h"
#include "kernels/kernels.h"
#include "test.h"
#include "worker/model/model.h"
#include "worker/model/model_config.h"
#include "worker/model/quantize.h"
#include "worker/model/safetensors.h"
#include "worker/model/st_writer.h"
#include "worker/model/weights.h"

static char g_tmp[256]; /* a fresh folder for this run */

static void test_parse(void)
{
    size_t b = 0;
    GS_ASSERT_OK(gs_parse_bytes("15G", &b));
    GS_ASSERT_EQ(b, (size_t)15 << 30);
    GS_ASSERT_OK(gs_parse_bytes("10GiB", &b));
    GS_ASSERT_EQ(b, (size_t)10 << 30);
    GS_ASSERT_OK(gs_parse_bytes("1.5g", &b));
    GS_ASSERT_EQ(b, (size_t)3 << 29);
    GS_ASSERT_OK(gs_parse_bytes("512MB", &b));
    GS_ASSERT_EQ(b, (size_t)512 << 20);
    GS_ASSERT_OK(gs_parse_bytes("4096", &b));
    GS_ASSERT_EQ(b, 4096);
    static const char *const bad[] = {"", "G", "-1", "0", "15X", "15GBs", " 1G", "1e400", NULL};
    for (int i = 0; bad[i]; i++)
        GS_ASSERT_MSG(gs_parse_bytes(bad[i], &b) == GS_EINVAL, "'%s' accepted", bad[i]);
    gs_weight_format f;
    GS_ASSERT_OK(gs_weight_format_parse("int4", &f));
    GS_ASSERT_EQ(f, GS_WEIGHTS_INT4);
    GS_ASSERT_OK(gs_weight_format_parse("auto", &f));
    GS_ASSERT_EQ(f, GS_WEIGHTS_AUTO);
    GS_ASSERT(gs_weight_format_parse("fp8", &f) == GS_EINVAL);
    GS_ASSERT(gs_weight_format_parse("asis", &f) == GS_EINVAL);
    GS_ASSERT_STREQ(gs_weight_format_name(GS_WEIGHTS_INT8), "int8");
}

/* The fixture config.json with quantization_config set to q (NULL: none). */
static int parse_with(const char *q, gs_model_config *c, gs_diag *d)
{
    size_t len;
    char *txt = gs_test_read_file(gs_fixture_path("tiny-glm4v/config.json"), &len);
    json_t *root = txt ? json_loads(txt, 0, NULL) : NULL;
    free(txt);
    if (!root)
        return -1;
    if (q)
        json_object_set_new(root, "quantization_config", json_loads(q, 0, NULL));
    char *s = json_dumps(root, 0);
    json_decref(root);
    int rc = gs_model_config_parse(s, strlen(s), NULL, c, d);
    free(s);
    return rc;
}

static void test_config_section(void)
{
    gs_model_config c;
    gs_diag d;
    GS_ASSERT_OK(parse_with(NULL, &c, &d));
    GS_ASSERT_EQ(c.quant_bits, 0);
    GS_ASSERT_OK(parse_with(
        "{\"quant_method\":\"glmserve\",\"weights\":\"int4\",\"group_size\":128}", &c, &d));
    GS_ASSERT_EQ(c.quant_bits, 4);
    GS_ASSERT_EQ(c.quant_group, 128);
    GS_ASSERT_OK(parse_with("{\"quant_method\":\"glmserve\",\"weights\":\"int8\"}", &c, &d));
    GS_ASSERT_EQ(c.quant_bits, 8);
    GS_ASSERT_EQ(parse_with("{\"quant_method\":\"gptq\",\"bits\":4}", &c, &d), GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "quant_method") && strstr(d.msg, "gptq"));
    GS_ASSERT_EQ(parse_with("{\"quant_method\":\"glmserve\",\"weights\":\"int3\"}", &c, &d),
                 GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "quantization_config.weights"));
    GS_ASSERT_EQ(
        parse_with("{\"quant_method\":\"glmserve\",\"weights\":\"int4\",\"group_size\":64}", &c,
                   &d),
        GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "group_size"));
    GS_ASSERT_EQ(parse_with("[1]", &c, &d), GS_ECONFIG);
}

static void test_writer(void)
{
    char path[300];
    snprintf(path, sizeof path, "%s/w.safetensors", g_tmp);
    float f[3] = {1.5f, -2, 3};
    uint16_t h[5] = {1, 2, 3, 4, 5};
    uint8_t u[7] = {9, 8, 7, 6, 5, 4, 3};
    gs_st_wentry e[3] = {
        {"u", GS_ST_U8, 1, {7}}, {"h", GS_ST_BF16, 2, {1, 5}}, {"f", GS_ST_F32, 1, {3}}};
    const char *meta[] = {"format", "pt", NULL};
    gs_st_writer *w = NULL;
    gs_diag d;
    GS_ASSERT_OK(gs_st_writer_open(path, e, 3, meta, &w, &d));
    GS_ASSERT_EQ(gs_st_writer_put(w, "f", f, 8, &d), GS_EINVAL); /* wrong size */
    GS_ASSERT_EQ(gs_st_writer_put(w, "nope", f, 12, &d), GS_ENOENT);
    GS_ASSERT_OK(gs_st_writer_put(w, "u", u, 7, &d)); /* any order */
    GS_ASSERT_OK(gs_st_writer_put(w, "f", f, 12, &d));
    GS_ASSERT_OK(gs_st_writer_put(w, "h", h, 10, &d));
    GS_ASSERT_OK(gs_st_writer_close(w, &d));
    gs_st *st = NULL;
    GS_ASSERT_OK(gs_st_open(path, &d, &st));
    GS_ASSERT_EQ(gs_st_count(st), 3);
    const gs_st_tensor *tf = gs_st_get(st, "f"), *th = gs_st_get(st, "h"), *tu = gs_st_get(st, "u");
    GS_ASSERT(tf && th && tu);
    GS_ASSERT(!memcmp(tf->data, f, 12) && !memcmp(th->data, h, 10) && !memcmp(tu->data, u, 7));
    GS_ASSERT_EQ((uintptr_t)tf->data % 4, 0); /* element-size aligned, no gaps */
    GS_ASSERT_EQ((uintptr_t)th->data % 2, 0);
    GS_ASSERT((const char *)th->data == (const char *)tf->data + 12);
    GS_ASSERT_EQ(th->shape[1], 5);
    GS_ASSERT_STREQ(gs_st_metadata(st, "format"), "pt");
    gs_st_free(st);
    /* A tensor never written: close fails and leaves no file. */
    snprintf(path, sizeof path, "%s/partial.safetensors", g_tmp);
    GS_ASSERT_OK(gs_st_writer_open(path, e, 3, NULL, &w, &d));
    GS_ASSERT_OK(gs_st_writer_put(w, "u", u, 7, &d));
    GS_ASSERT_EQ(gs_st_writer_close(w, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "never written"));
    GS_ASSERT(access(path, F_OK) != 0);
    gs_st_wentry dup[2] = {{"a", GS_ST_F32, 1, {1}}, {"a", GS_ST_F32, 1, {1}}};
    GS_ASSERT_EQ(gs_st_writer_open(path, dup, 2, NULL, &w, &d), GS_EINVAL);
}

static void test_quantize_mt(void)
{
    const int64_t rows = 1024, cols = 1100; /* a ragged last int4 group */
    float *src = malloc(sizeof(float) * (size_t)(rows * cols));
    uint64_t x = 42;
    for (int64_t i = 0; i < rows * cols; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        src[i] = (float)((int64_t)(x >> 40) - (1 << 23)) / (float)(1 << 23);
    }
    for (int k = 0; k < 2; k++) {
        gs_dtype q = k ? GS_DT_Q4 : GS_DT_Q8;
        size_t nq = gs_quant_q_bytes(q, rows, cols), ns = gs_quant_n_scales(q, rows, cols);
        char *q1 = malloc(nq), *q2 = malloc(nq);
        float *s1 = malloc(ns * 4), *s2 = malloc(ns * 4);
        GS_ASSERT_OK(gs_quantize(q, src, GS_DT_F32, rows, cols, q1, s1));
        GS_ASSERT_OK(gs_quantize_rows_mt(q, src, GS_DT_F32, rows, cols, q2, s2, 3));
        GS_ASSERT(!memcmp(q1, q2, nq) && !memcmp(s1, s2, ns * 4));
        free(q1);
        free(q2);
        free(s1);
        free(s2);
    }
    free(src);
}

static void test_estimate(void)
{
    gs_model_config c;
    gs_diag d;
    GS_ASSERT_OK(gs_model_config_load(gs_fixture_path("tiny-glm4v"), &c, &d));
    size_t b16 = gs_weights_estimate(&c, GS_WEIGHTS_BF16),
           b8 = gs_weights_estimate(&c, GS_WEIGHTS_INT8),
           b4 = gs_weights_estimate(&c, GS_WEIGHTS_INT4);
    fprintf(stderr, "estimate: bf16 %zu, int8 %zu, int4 %zu bytes\n", b16, b8, b4);
    GS_ASSERT(b16 > b8 && b8 > b4);
    /* The BF16 estimate is the checkpoint's matrices: within its bytes. */
    gs_st *st = NULL;
    GS_ASSERT_OK(gs_st_open(gs_fixture_path("tiny-glm4v"), &d, &st));
    size_t all = 0;
    for (size_t i = 0; i < gs_st_count(st); i++)
        all += gs_st_at(st, i)->nbytes;
    gs_st_free(st);
    GS_ASSERT(b16 <= all && b16 > all * 9 / 10);
    GS_ASSERT_EQ(gs_weights_qdtype(GS_WEIGHTS_INT4, GS_WCLASS_HEAD), GS_DT_Q8);
    GS_ASSERT_EQ(gs_weights_qdtype(GS_WEIGHTS_INT4, GS_WCLASS_LINEAR), GS_DT_Q4);
    GS_ASSERT_EQ(gs_weights_qdtype(GS_WEIGHTS_INT8, GS_WCLASS_TABLE), GS_DT_BF16);
}

/* ---- a quantized folder and broken copies of it ------------------------- */

static char g_q4[300];

static void test_quantize_folder(void)
{
    gs_diag d;
    snprintf(g_q4, sizeof g_q4, "%s/q4", g_tmp);
    gs_quantize_params p = {gs_fixture_path("tiny-glm4v"), g_q4, GS_WEIGHTS_INT4, 2};
    GS_ASSERT_OK(gs_quantize_folder(&p, &d));
    gs_model_config c;
    GS_ASSERT_OK(gs_model_config_load(g_q4, &c, &d));
    GS_ASSERT_EQ(c.quant_bits, 4);
    gs_st *st = NULL;
    GS_ASSERT_OK(gs_st_open(g_q4, &d, &st));
    GS_ASSERT_OK(gs_model_config_check_weights(&c, st, NULL, &d));
    const gs_st_tensor *q = gs_st_get(st, "model.language_model.layers.0.mlp.down_proj.weight");
    const gs_st_tensor *s =
        gs_st_get(st, "model.language_model.layers.0.mlp.down_proj.weight_scale");
    const gs_st_tensor *h = gs_st_get(st, "lm_head.weight");
    const gs_st_tensor *emb = gs_st_get(st, "model.language_model.embed_tokens.weight");
    GS_ASSERT(q && s && h && emb);
    GS_ASSERT_EQ(q->dtype, GS_ST_U8);
    GS_ASSERT_EQ(q->shape[1], c.text.intermediate_size / 2);
    GS_ASSERT_EQ(s->shape[1], (c.text.intermediate_size + 127) / 128);
    GS_ASSERT_EQ(h->dtype, GS_ST_I8); /* lm_head int8 in int4 mode */
    GS_ASSERT_EQ(emb->dtype, GS_ST_BF16);
    GS_ASSERT_EQ((uintptr_t)s->data % 4, 0);
    /* The same bits as gs_quantize on the checkpoint's tensor. */
    gs_st *src = NULL;
    GS_ASSERT_OK(gs_st_open(gs_fixture_path("tiny-glm4v"), &d, &src));
    const gs_st_tensor *t = gs_st_get(src, "model.language_model.layers.0.mlp.down_proj.weight");
    char *qq = malloc(q->nbytes);
    float *ss = malloc(s->nbytes);
    GS_ASSERT_OK(gs_quantize(GS_DT_Q4, t->data, GS_DT_BF16, t->shape[0], t->shape[1], qq, ss));
    GS_ASSERT(!memcmp(qq, q->data, q->nbytes) && !memcmp(ss, s->data, s->nbytes));
    free(qq);
    free(ss);
    gs_st_free(src);
    gs_st_free(st);
    char path[400];
    snprintf(path, sizeof path, "%s/tokenizer.json", g_q4);
    GS_ASSERT(access(path, R_OK) == 0);
    snprintf(path, sizeof path, "%s/chat_template.jinja", g_q4);
    GS_ASSERT(access(path, R_OK) == 0);
    /* Quantizing a quantized folder, or into the model's own folder, is refused. */
    gs_quantize_params again = {g_q4, g_tmp, GS_WEIGHTS_INT8, 1};
    GS_ASSERT_EQ(gs_quantize_folder(&again, &d), GS_EINVAL);
    GS_ASSERT(strstr(d.msg, "quantized already"));
}

/* Copies folder g_q4 to dir, with model.safetensors rewritten: tensor
 * `drop` left out, tensor `grow` given one more row of zeros (both may be
 * NULL). */
static int broken_copy(const char *dir, const char *drop, const char *grow)
{
    char cmd[1024], path[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, g_q4, dir);
    if (system(cmd) != 0)
        return -1;
    gs_diag d;
    gs_st *st = NULL;
    if (gs_st_open(g_q4, &d, &st))
        return -1;
    size_t n = gs_st_count(st), ne = 0;
    gs_st_wentry *e = calloc(n, sizeof *e);
    for (size_t i = 0; i < n; i++) {
        const gs_st_tensor *t = gs_st_at(st, i);
        if (drop && !strcmp(t->name, drop))
            continue;
        e[ne] = (gs_st_wentry){t->name, t->dtype, t->ndim, {0}};
        memcpy(e[ne].shape, t->shape, sizeof t->shape);
        if (grow && !strcmp(t->name, grow))
            e[ne].shape[0]++;
        ne++;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    gs_st_writer *w = NULL;
    int rc = gs_st_writer_open(path, e, ne, NULL, &w, &d);
    for (size_t i = 0; i < n && !rc; i++) {
        const gs_st_tensor *t = gs_st_at(st, i);
        if (drop && !strcmp(t->name, drop))
            continue;
        if (!grow || strcmp(t->name, grow)) {
            rc = gs_st_writer_put(w, t->name, t->data, t->nbytes, &d);
            continue;
        }
        size_t row = t->nbytes / (size_t)t->shape[0];
        char *buf = calloc(1, t->nbytes + row);
        memcpy(buf, t->data, t->nbytes);
        rc = gs_st_writer_put(w, t->name, buf, t->nbytes + row, &d);
        free(buf);
    }
    if (!rc)
        rc = gs_st_writer_close(w, &d);
    else
        gs_st_writer_abort(w);
    free(e);
    gs_st_free(st);
    return rc;
}

/* gs_model_config_check_weights on dir: the code, with d filled. */
static int check_dir(const char *dir, gs_diag *d)
{
    gs_model_config c;
    gs_st *st = NULL;
    int rc = gs_model_config_load(dir, &c, d);
    if (!rc)
        rc = gs_st_open(dir, d, &st);
    if (!rc)
        rc = gs_model_config_check_weights(&c, st, NULL, d);
    gs_st_free(st);
    return rc;
}

static void test_broken_folders(void)
{
    char dir[300];
    gs_diag d;
    const char *q = "model.language_model.layers.1.self_attn.q_proj.weight";
    snprintf(dir, sizeof dir, "%s/noscale", g_tmp);
    GS_ASSERT_OK(
        broken_copy(dir, "model.language_model.layers.1.self_attn.q_proj.weight_scale", NULL));
    GS_ASSERT_EQ(check_dir(dir, &d), GS_EFORMAT);
    fprintf(stderr, "missing scale: %s\n", d.msg);
    GS_ASSERT(strstr(d.msg, q) && strstr(d.msg, "_scale"));

    snprintf(dir, sizeof dir, "%s/bigscale", g_tmp);
    GS_ASSERT_OK(
        broken_copy(dir, NULL, "model.language_model.layers.1.self_attn.q_proj.weight_scale"));
    GS_ASSERT_EQ(check_dir(dir, &d), GS_EFORMAT);
    fprintf(stderr, "mis-shaped scale: %s\n", d.msg);
    GS_ASSERT(strstr(d.msg, "q_proj.weight_scale"));

    snprintf(dir, sizeof dir, "%s/bigq", g_tmp);
    GS_ASSERT_OK(broken_copy(dir, NULL, "model.visual.blocks.0.attn.proj.weight"));
    GS_ASSERT_EQ(check_dir(dir, &d), GS_EFORMAT);
    fprintf(stderr, "mis-shaped q: %s\n", d.msg);
    GS_ASSERT(strstr(d.msg, "model.visual.blocks.0.attn.proj.weight"));

    /* A backend for gs_model_load: the format checks come before any weight. */
    gs_backend_params bp = {0};
    bp.kind = GS_BACKEND_CPU;
    bp.n_threads = 1;
    gs_backend *be = NULL;
    GS_ASSERT_OK(gs_backend_new(&bp, &be, &d));
    gs_model *m = NULL;
    gs_model_params mp = {g_q4, be, 0, 0, 0, GS_WEIGHTS_INT8, 0};
    GS_ASSERT_EQ(gs_model_load(&mp, &m, &d), GS_ECONFIG);
    fprintf(stderr, "format mismatch: %s\n", d.msg);
    GS_ASSERT(strstr(d.msg, "int4") && strstr(d.msg, "int8"));
    mp.weights = GS_WEIGHTS_BF16;
    GS_ASSERT_EQ(gs_model_load(&mp, &m, &d), GS_ECONFIG);
    snprintf(dir, sizeof dir, "%s/noscale", g_tmp);
    mp.dir = dir;
    mp.weights = GS_WEIGHTS_AUTO;
    GS_ASSERT_EQ(gs_model_load(&mp, &m, &d), GS_EFORMAT);
    GS_ASSERT(m == NULL);

    /* An unknown quant_method in the folder's config.json. */
    char path[400];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *root = json_load_file(path, 0, NULL);
    GS_ASSERT(root);
    json_object_set_new(json_object_get(root, "quantization_config"), "quant_method",
                        json_string("awq"));
    GS_ASSERT_OK(json_dump_file(root, path, 0));
    json_decref(root);
    GS_ASSERT_EQ(gs_model_load(&mp, &m, &d), GS_ECONFIG);
    GS_ASSERT(strstr(d.msg, "awq"));
    gs_backend_free(be);
}

int main(void)
{
    gs_log_set_level(GS_LOG_WARN);
    const char *base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/gs_quant_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_tmp)) {
        fprintf(stderr, "mkdtemp failed\n");
        return 1;
    }
    GS_RUN(test_parse);
    GS_RUN(test_config_section);
    GS_RUN(test_writer);
    GS_RUN(test_quantize_mt);
    GS_RUN(test_estimate);
    GS_RUN(test_quantize_folder);
    GS_RUN(test_broken_folders);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", g_tmp);
    return gs_test_summary();
}

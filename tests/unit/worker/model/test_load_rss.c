/* test_load_rss.c - peak resident memory of loading a checkpoint on the CPU
 * backend, against the bytes of the weights.
 *
 * Writes a synthetic BF16 checkpoint of about 200 MB (a GLM-4V with 8 text
 * layers of hidden 1024, tiny vision tower) and its config.json into a
 * temporary folder, streaming it through a 1 MiB buffer so that writing
 * costs no resident memory; then loads it with gs_model_load, runs the
 * vision tower and a text forward (which touch every weight), and reports
 * the growth of the peak RSS (getrusage ru_maxrss) over the baseline:
 * after load, and after the forward. Weights kept in the checkpoint mapping
 * count once; a load that copies them out of the mapping counts twice.
 *
 * Passes when the peak growth is at most 1.1x the weight bytes plus 24 MiB
 * (threads, scratch, KV cache). Under AddressSanitizer (its allocator
 * keeps freed blocks in quarantine) and under qemu-user (ru_maxrss is the
 * emulator's) the numbers are printed only.
 * GS_RSS_LAYERS (default 8) scales the checkpoint: 22.4 MB per layer. */
#include <jansson.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "common/log.h"
#include "st_write.h"
#include "test.h"
#include "worker/model/model.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif
#ifdef GS_RSS_REPORT_ONLY /* cross builds under qemu-user */
#define REPORT_ONLY 1
#else
#define REPORT_ONLY UNDER_ASAN
#endif

enum { H = 1024, I = 2816, HEADS = 8, KVH = 2, HD = 128, V = 4200 };
enum { VH = 256, VO = H, VI = 512, VDEPTH = 2, P = 14, TP = 2, M = 2, IMG = 336 };

static char g_dir[512];
static gs_backend *g_be;

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[5];
    int kind; /* 0 random matrix, 1 ones (norm), 2 zeros (bias) */
} tspec;

static tspec *g_t;
static int g_n, g_cap;

static void add(int kind, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                int64_t d3, int64_t d4)
{
    if (g_n == g_cap) {
        g_cap = g_cap ? 2 * g_cap : 256;
        g_t = realloc(g_t, sizeof *g_t * (size_t)g_cap);
    }
    tspec *t = &g_t[g_n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    int64_t d[5] = {d0, d1, d2, d3, d4};
    memcpy(t->shape, d, sizeof d);
    t->kind = kind;
}

static int64_t numel(const tspec *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* The tensor set of glm4v-spec section 2 for the sizes above. */
static void make_specs(int layers)
{
    char n[128];
    const int64_t qd = HEADS * HD, kvd = KVH * HD;
    add(0, "model.language_model.embed_tokens.weight", 2, V, H, 0, 0, 0);
    for (int l = 0; l < layers; l++) {
#define L(s) (snprintf(n, sizeof n, "model.language_model.layers.%d.%s", l, s), n)
        add(1, L("input_layernorm.weight"), 1, H, 0, 0, 0, 0);
        add(0, L("self_attn.q_proj.weight"), 2, qd, H, 0, 0, 0);
        add(2, L("self_attn.q_proj.bias"), 1, qd, 0, 0, 0, 0);
        add(0, L("self_attn.k_proj.weight"), 2, kvd, H, 0, 0, 0);
        add(2, L("self_attn.k_proj.bias"), 1, kvd, 0, 0, 0, 0);
        add(0, L("self_attn.v_proj.weight"), 2, kvd, H, 0, 0, 0);
        add(2, L("self_attn.v_proj.bias"), 1, kvd, 0, 0, 0, 0);
        add(0, L("self_attn.o_proj.weight"), 2, H, qd, 0, 0, 0);
        add(1, L("post_self_attn_layernorm.weight"), 1, H, 0, 0, 0, 0);
        add(1, L("post_attention_layernorm.weight"), 1, H, 0, 0, 0, 0);
        add(0, L("mlp.gate_up_proj.weight"), 2, 2 * I, H, 0, 0, 0);
        add(0, L("mlp.down_proj.weight"), 2, H, I, 0, 0, 0);
        add(1, L("post_mlp_layernorm.weight"), 1, H, 0, 0, 0, 0);
#undef L
    }
    add(1, "model.language_model.norm.weight", 1, H, 0, 0, 0, 0);
    add(0, "lm_head.weight", 2, V, H, 0, 0, 0);
    add(0, "model.visual.patch_embed.proj.weight", 5, VH, 3, TP, P, P);
    add(2, "model.visual.patch_embed.proj.bias", 1, VH, 0, 0, 0, 0);
    add(1, "model.visual.post_conv_layernorm.weight", 1, VH, 0, 0, 0, 0);
    add(0, "model.visual.embeddings.position_embedding.weight", 2, (IMG / P) * (IMG / P), VH, 0, 0,
        0);
    for (int b = 0; b < VDEPTH; b++) {
#define B(s) (snprintf(n, sizeof n, "model.visual.blocks.%d.%s", b, s), n)
        add(1, B("norm1.weight"), 1, VH, 0, 0, 0, 0);
        add(1, B("norm2.weight"), 1, VH, 0, 0, 0, 0);
        add(0, B("attn.qkv.weight"), 2, 3 * VH, VH, 0, 0, 0);
        add(0, B("attn.proj.weight"), 2, VH, VH, 0, 0, 0);
        add(0, B("mlp.gate_proj.weight"), 2, VO, VH, 0, 0, 0);
        add(0, B("mlp.up_proj.weight"), 2, VO, VH, 0, 0, 0);
        add(0, B("mlp.down_proj.weight"), 2, VH, VO, 0, 0, 0);
#undef B
    }
    add(1, "model.visual.post_layernorm.weight", 1, VH, 0, 0, 0, 0);
    add(0, "model.visual.downsample.weight", 4, VO, VH, M, M, 0);
    add(2, "model.visual.downsample.bias", 1, VO, 0, 0, 0, 0);
    add(0, "model.visual.merger.proj.weight", 2, VO, VO, 0, 0, 0);
    add(1, "model.visual.merger.post_projection_norm.weight", 1, VO, 0, 0, 0, 0);
    add(2, "model.visual.merger.post_projection_norm.bias", 1, VO, 0, 0, 0, 0);
    add(0, "model.visual.merger.gate_proj.weight", 2, VI, VO, 0, 0, 0);
    add(0, "model.visual.merger.up_proj.weight", 2, VI, VO, 0, 0, 0);
    add(0, "model.visual.merger.down_proj.weight", 2, VO, VI, 0, 0, 0);
}

static uint16_t bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

/* model.safetensors: header (padded to 8 bytes), then every tensor in
 * order, BF16, streamed through a 1 MiB buffer. *bytes: the data bytes. */
static void write_checkpoint(const char *path, size_t *bytes)
{
    json_t *h = json_object();
    size_t off = 0;
    for (int i = 0; i < g_n; i++) {
        json_t *sh = json_array();
        for (int d = 0; d < g_t[i].ndim; d++)
            json_array_append_new(sh, json_integer(g_t[i].shape[d]));
        size_t nb = (size_t)numel(&g_t[i]) * 2;
        json_object_set_new(h, g_t[i].name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype", "BF16", "shape", sh,
                                      "data_offsets", (json_int_t)off, (json_int_t)(off + nb)));
        off += nb;
    }
    char *js = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(h);
    size_t hl = strlen(js), padded = (hl + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    GS_ASSERT(f != NULL);
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(js, 1, hl, f);
    for (size_t i = hl; i < padded; i++)
        fputc(' ', f);
    free(js);
    enum { BUF = 1 << 19 };
    uint16_t *buf = malloc(sizeof *buf * BUF);
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < g_n; i++) {
        int64_t left = numel(&g_t[i]);
        const float scale = g_t[i].ndim > 1 ? 1.0f / sqrtf((float)g_t[i].shape[1]) : 0.0f;
        while (left > 0) {
            int64_t k = left < BUF ? left : BUF;
            for (int64_t j = 0; j < k; j++) {
                if (g_t[i].kind == 0) {
                    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                    float u = (float)(rng >> 40) / 16777216.0f * 2.0f - 1.0f;
                    buf[j] = bf16(u * scale);
                } else {
                    buf[j] = g_t[i].kind == 1 ? 0x3F80 : 0;
                }
            }
            GS_ASSERT_EQ(fwrite(buf, 2, (size_t)k, f), (size_t)k);
            left -= k;
        }
    }
    free(buf);
    GS_ASSERT_OK(fclose(f));
    *bytes = off;
}

static void write_config(const char *path, int layers)
{
    json_t *c = json_pack(
        "{s:[s], s:s, s:i, s:i, s:i, s:i, s:b,"
        " s:{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:[i], s:i,"
        "    s:{s:s, s:f, s:f, s:[i,i,i]}},"
        " s:{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:b,"
        "    s:{s:s, s:f}}}",
        "architectures", "Glm4vForConditionalGeneration", "model_type", "glm4v", "image_token_id",
        4170, "image_start_token_id", 4146, "image_end_token_id", 4147, "video_token_id", 4171,
        "tie_word_embeddings", 0, "text_config", "vocab_size", V, "hidden_size", H,
        "intermediate_size", I, "num_hidden_layers", layers, "num_attention_heads", HEADS,
        "num_key_value_heads", KVH, "max_position_embeddings", 4096, "rms_norm_eps", 1e-5,
        "eos_token_id", 4136, "pad_token_id", 4136, "rope_parameters", "rope_type", "default",
        "rope_theta", 500000.0, "partial_rotary_factor", 0.5, "mrope_section", 8, 12, 12,
        "vision_config", "depth", VDEPTH, "hidden_size", VH, "num_heads", 2, "intermediate_size",
        VI, "out_hidden_size", VO, "patch_size", P, "temporal_patch_size", TP, "spatial_merge_size",
        M, "image_size", IMG, "in_channels", 3, "rms_norm_eps", 1e-5, "attention_bias", 0,
        "rope_parameters", "rope_type", "axial", "rope_theta", 10000.0);
    GS_ASSERT(c != NULL);
    GS_ASSERT_OK(json_dump_file(c, path, 0));
    json_decref(c);
}

static double peak_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; /* KiB on Linux */
}

static void test_load_rss(void)
{
    const char *env = getenv("GS_RSS_LAYERS");
    int layers = env && atoi(env) > 0 ? atoi(env) : 8;
    make_specs(layers);
    char p[1024];
    size_t bytes = 0;
    write_checkpoint(tw_path(p, sizeof p, g_dir, "model.safetensors"), &bytes);
    write_config(tw_path(p, sizeof p, g_dir, "config.json"), layers);

    const double base = peak_mb();
    gs_model_params mp = {g_dir, g_be, 0, 0, 0, GS_WEIGHTS_ASIS, 0};
    gs_model *m = NULL;
    gs_diag d;
    GS_ASSERT_MSG(gs_model_load(&mp, &m, &d) == 0, "load: %s", d.msg);
    if (!m)
        return;
    const double after_load = peak_mb();
    const double wmb = (double)gs_model_weight_bytes(m) / (1 << 20);

    /* The vision tower on one 4x4-patch image and a 16-token text forward:
     * every weight is read at least once (the embedding table only in the
     * rows of the ids). */
    enum { NP = 16, NT = 16 };
    float *px = malloc(sizeof(float) * NP * 3 * TP * P * P);
    for (int i = 0; i < NP * 3 * TP * P * P; i++)
        px[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    const int32_t grid[1][3] = {{1, 4, 4}};
    gs_dtype act = gs_backend_act_dtype(g_be);
    gs_mat img =
        gs_mat_make(gs_buf_alloc(g_be, gs_dtype_size(act) * (NP / 4) * VO), act, NP / 4, VO);
    GS_ASSERT_OK(gs_model_encode_images(m, px, NP, grid, 1, img));
    free(px);
    gs_kv_cache *kv = NULL;
    GS_ASSERT_OK(gs_kv_cache_new(m, 2, 16, &kv));
    int32_t ids[NT], pos[3 * NT], slots[NT], bt[2] = {0, 1}, cu[2] = {0, NT}, kl[1] = {NT};
    int32_t row = NT - 1;
    for (int i = 0; i < NT; i++) {
        ids[i] = (i * 263) % V;
        pos[i] = pos[NT + i] = pos[2 * NT + i] = slots[i] = i;
    }
    float *logits = malloc(sizeof(float) * V);
    gs_text_batch b = {NT, ids, pos, slots, NULL, img, 1, cu, kl, bt, 2, 1, &row};
    GS_ASSERT_OK(gs_model_forward(m, kv, &b, logits));
    GS_ASSERT(isfinite(logits[0]));
    free(logits);
    const double after_fwd = peak_mb();

    fprintf(stderr,
            "checkpoint %.1f MB, weights %.1f MB; peak RSS growth: after load %.1f MB (%.2fx), "
            "after a forward %.1f MB (%.2fx)%s\n",
            bytes / 1048576.0, wmb, after_load - base, (after_load - base) / wmb, after_fwd - base,
            (after_fwd - base) / wmb, REPORT_ONLY ? " [sanitizer or emulator: not checked]" : "");
    if (!REPORT_ONLY)
        GS_ASSERT_MSG(after_fwd - base <= 1.1 * wmb + 24.0,
                      "peak RSS grew %.1f MB for %.1f MB of weights (limit 1.1x + 24 MB)",
                      after_fwd - base, wmb);
    gs_buf_free(g_be, img.data);
    gs_kv_cache_free(kv);
    gs_model_free(m);
}

int main(void)
{
    gs_log_set_level(GS_LOG_WARN);
    if (getenv("GS_TEST_EMULATED")) {
        /* A 200 MB checkpoint through an emulated CPU takes minutes, and
         * RSS under qemu-user is qemu's, not the program's. */
        printf("test_load_rss: skipped under emulation (GS_TEST_EMULATED)\n");
        return 0;
    }
    if (!tw_mkdtemp(g_dir, sizeof g_dir)) {
        fprintf(stderr, "cannot create a temporary folder\n");
        return 1;
    }
    gs_backend_params bp = {.kind = GS_BACKEND_CPU, .n_threads = 2}; /* 16-bit weights */
    gs_diag d;
    if (gs_backend_new(&bp, &g_be, &d)) {
        fprintf(stderr, "backend: %s\n", d.msg);
        return 1;
    }
    GS_RUN(test_load_rss);
    gs_backend_free(g_be);
    free(g_t);
    tw_rmdir(g_dir);
    return gs_test_summary();
}

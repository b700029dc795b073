/* Tests for worker/model/weights: every tensor of a checkpoint must be
 * used by the model its config.json describes (a config with fewer layers
 * or vision blocks than the checkpoint is refused, naming the first unused
 * tensor and the count). Uses the tiny-glm4v fixture through a temporary
 * folder whose config.json is edited (the other files are symlinks). */
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "st_write.h"
#include "test.h"
#include "worker/model/model.h"
#include "worker/model/weights.h"

static char g_dir[512];
static gs_backend *g_be;

/* A copy of the fixture folder in g_dir/sub with config.json edited by
 * edit(root); the other files are symlinks to the fixture. */
static void make_folder(const char *sub, void (*edit)(json_t *root), char *out, size_t cap)
{
    static const char *files[] = {
        "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors", "model.safetensors.index.json",
        "preprocessor_config.json",         "generation_config.json"};
    char src[4200], dst[1024];
    tw_path(out, cap, g_dir, sub);
    GS_ASSERT_OK(mkdir(out, 0700));
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(src, sizeof src, "%s/%s", gs_fixture_path("tiny-glm4v"), files[i]);
        GS_ASSERT_OK(symlink(src, tw_path(dst, sizeof dst, out, files[i])));
    }
    snprintf(src, sizeof src, "%s/config.json", gs_fixture_path("tiny-glm4v"));
    json_error_t je;
    json_t *root = json_load_file(src, 0, &je);
    GS_ASSERT(root != NULL);
    edit(root);
    GS_ASSERT_OK(json_dump_file(root, tw_path(dst, sizeof dst, out, "config.json"), 0));
    json_decref(root);
}

static void one_layer(json_t *root)
{
    json_object_set_new(json_object_get(root, "text_config"), "num_hidden_layers", json_integer(1));
}

static void one_block(json_t *root)
{
    json_object_set_new(json_object_get(root, "vision_config"), "depth", json_integer(1));
}

static void no_edit(json_t *root)
{
    (void)root;
}

/* Loads dir through gs_model_load; returns its code, d filled. */
static int load(const char *dir, gs_diag *d)
{
    gs_model_params mp = {dir, g_be, 0, 0, 0, GS_WEIGHTS_ASIS, 0};
    gs_model *m = NULL;
    int rc = gs_model_load(&mp, &m, d);
    if (rc == 0 ? m == NULL : m != NULL)
        rc = GS_EINTERNAL; /* the handle disagrees with the code */
    gs_model_free(m);
    return rc;
}

static void test_unused_tensors_refused(void)
{
    char dir[1024];
    gs_diag d;
    make_folder("same", no_edit, dir, sizeof dir);
    GS_ASSERT_MSG(load(dir, &d) == 0, "the unedited copy: %s", d.msg);
    tw_rmdir(dir);

    /* One text layer of two: layer 1's 13 tensors are unused. */
    make_folder("one_layer", one_layer, dir, sizeof dir);
    GS_ASSERT_EQ(load(dir, &d), GS_EFORMAT);
    fprintf(stderr, "  refused: %s\n", d.msg);
    GS_ASSERT(strstr(d.msg, "13 tensors") != NULL);
    GS_ASSERT(strstr(d.msg, "model.language_model.layers.1.") != NULL);
    GS_ASSERT(strstr(d.msg, "num_hidden_layers") != NULL);
    tw_rmdir(dir);

    /* One vision block of two: block 1's tensors (7, + qkv bias if any). */
    make_folder("one_block", one_block, dir, sizeof dir);
    GS_ASSERT_EQ(load(dir, &d), GS_EFORMAT);
    fprintf(stderr, "  refused: %s\n", d.msg);
    GS_ASSERT(strstr(d.msg, "model.visual.blocks.1.") != NULL);
    tw_rmdir(dir);
}

/* The same through gs_weights_load directly, with the checkpoint borrowed. */
static void test_weights_load_direct(void)
{
    char dir[1024];
    gs_diag d;
    make_folder("direct", one_layer, dir, sizeof dir);
    gs_model_config cfg;
    GS_ASSERT_OK(gs_model_config_load(dir, &cfg, &d));
    gs_st *st = NULL;
    GS_ASSERT_OK(gs_st_open(dir, &d, &st));
    gs_weights *w = (gs_weights *)1;
    GS_ASSERT_EQ(gs_weights_load(g_be, &cfg, st, GS_WEIGHTS_ASIS, NULL, NULL, &w, &d), GS_EFORMAT);
    GS_ASSERT(w == NULL);
    cfg.text.num_hidden_layers = 2;
    GS_ASSERT_OK(gs_weights_load(g_be, &cfg, st, GS_WEIGHTS_ASIS, NULL, NULL, &w, &d));
    GS_ASSERT(w != NULL && w->n_layers == 2);
    gs_st_free(st); /* the weights keep what they need of the checkpoint */
    gs_weights_free(g_be, w);
    tw_rmdir(dir);
}

int main(void)
{
    gs_log_set_level(GS_LOG_WARN);
    if (!tw_mkdtemp(g_dir, sizeof g_dir)) {
        fprintf(stderr, "cannot create a temporary folder\n");
        return 1;
    }
    gs_backend_params bp = {.kind = GS_BACKEND_CPU, .n_threads = gs_test_cpu_threads()};
    gs_diag d;
    if (gs_backend_new(&bp, &g_be, &d)) {
        fprintf(stderr, "backend: %s\n", d.msg);
        return 1;
    }
    GS_RUN(test_unused_tensors_refused);
    GS_RUN(test_weights_load_direct);
    gs_backend_free(g_be);
    tw_rmdir(g_dir);
    return gs_test_summary();
}

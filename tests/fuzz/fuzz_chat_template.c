/* fuzz_chat_template.c - libFuzzer target for the chat template renderer
 * (worker/tokenizer/chat_template.c, chat_json.c) and the worker's job
 * builder on top of it (worker/request.c: key checks, sampling
 * parameters, stops, template, images, prompt ids, context check), with
 * the tiny model's tokenizer, config and preprocessor.
 *
 * Input: JSON. An array is rendered as messages; an object is rendered
 * from its "messages" and "tools" (thinking from "enable_thinking") and
 * then built as a worker job, with one small fixture PNG per image part
 * the template counted. The raw input also goes through
 * gs_chat_template_check. Checked besides memory safety: a rendering has
 * the length it states and one media entry per placeholder; a built job
 * has prompt ids inside the vocabulary and inside the context. Built with
 * libFuzzer (GS_FUZZ=ON) and as replay_chat_template (ctest). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "common/ipc_msg.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/request.h"
#include "worker/tokenizer/chat_template.h"

#define MAX_MODEL_LEN 4096

static gs_tokenizer *tok;
static gs_model_config cfg;
static gs_generation_config gen;
static gs_image_params ip;
static char *png;
static size_t png_len;

static void init(void)
{
    gs_diag d;
    const char *dir = fz_fixture("tiny-glm4v");
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (gs_model_config_load(dir, &cfg, &d) || gs_generation_config_load(dir, &cfg, &gen, &d) ||
        gs_image_params_load(dir, &ip, &d) || gs_tokenizer_load(path, &tok, &d)) {
        fprintf(stderr, "fuzz_chat_template: %s\n", d.msg);
        abort();
    }
    if (gs_read_file(fz_fixture("ref/images/model_56x56.png"), 1u << 20, &png, &png_len, &d)) {
        fprintf(stderr, "fuzz_chat_template: %s\n", d.msg);
        abort();
    }
}

static void build(const uint8_t *data, size_t size, int n_images)
{
    gs_request_env env = {
        tok, &cfg, &gen, &ip, gs_image_decode_defaults(), GS_IPC_MAX_IMAGES, MAX_MODEL_LEN, 16};
    gs_request_blob blobs[GS_IPC_MAX_IMAGES];
    if (n_images > GS_IPC_MAX_IMAGES)
        n_images = GS_IPC_MAX_IMAGES;
    for (int i = 0; i < n_images; i++)
        blobs[i] = (gs_request_blob){png, png_len};
    gs_request *r = NULL;
    gs_diag d;
    if (gs_request_build(&env, (const char *)data, size, blobs, n_images, &r, &d) != 0) {
        if (r)
            __builtin_trap();
        return;
    }
    if (r->n_ids < 1 || r->n_ids > MAX_MODEL_LEN || r->n_images != n_images)
        __builtin_trap();
    for (int32_t i = 0; i < r->n_ids; i++)
        if (r->ids[i] < 0 || r->ids[i] >= cfg.text.vocab_size)
            __builtin_trap();
    gs_request_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tok)
        init();
    gs_diag d;
    (void)gs_chat_template_check((const char *)data, size, &d);

    json_error_t je;
    json_t *root = json_loadb((const char *)data, size, 0, &je);
    if (!root)
        return 0;
    const json_t *msgs = root, *tools = NULL;
    gs_chat_options opt = {GS_THINK_DEFAULT, 1};
    if (json_is_object(root)) {
        msgs = json_object_get(root, "messages");
        tools = json_object_get(root, "tools");
        const json_t *th = json_object_get(root, "enable_thinking");
        if (json_is_boolean(th))
            opt.enable_thinking = json_is_true(th) ? GS_THINK_ON : GS_THINK_OFF;
    }
    gs_chat_result res;
    int n_images = 0;
    if (msgs && gs_chat_render_ex(msgs, tools, &opt, &res, &d) == 0) {
        if (!res.text || strlen(res.text) != res.len || res.n_images < 0 || res.n_videos < 0)
            __builtin_trap();
        for (int32_t i = 0; i < res.n_images + res.n_videos; i++)
            if (res.media[i].message < 0 || res.media[i].item < 0)
                __builtin_trap();
        n_images = res.n_images;
        gs_chat_result_free(&res);
    }
    if (json_is_object(root))
        build(data, size, n_images);
    json_decref(root);
    return 0;
}

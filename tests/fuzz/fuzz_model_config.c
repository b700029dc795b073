/* fuzz_model_config.c - libFuzzer target for the model folder's JSON files
 * (worker/model/model_config.c, worker/image/preprocess.c): config.json
 * (both rope layouts, the text and vision sections, the special ids),
 * generation_config.json (checked against the tiny model's config and
 * against the parsed one), and preprocessor_config.json, then the
 * agreement check between config.json and preprocessor_config.json.
 *
 * Input: the JSON text, given to all three parsers (each reads the keys it
 * knows). Checked besides memory safety: a config that parses is
 * self-consistent (head_dim * heads, rotary sizes, the mrope sections'
 * sum, eos count); errors are GS_ECONFIG. Built with libFuzzer
 * (GS_FUZZ=ON) and as replay_model_config (ctest). */
#include <stdint.h>
#include <stdlib.h>

#include "tests/fuzz/fuzz_util.h"
#include "worker/image/preprocess.h"
#include "worker/model/model_config.h"

static gs_model_config tiny;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    gs_diag d;
    if (!ready) {
        if (gs_model_config_load(fz_fixture("tiny-glm4v"), &tiny, &d)) {
            fprintf(stderr, "fuzz_model_config: %s\n", d.msg);
            abort();
        }
        ready = 1;
    }
    const char *json = (const char *)data;
    gs_model_config c;
    int crc = gs_model_config_parse(json, size, NULL, &c, &d);
    if (crc == 0) {
        const gs_text_config *t = &c.text;
        if (t->head_dim < 1 || t->num_attention_heads < 1 || t->num_key_value_heads < 1 ||
            t->rotary_dim % 2 || t->rotary_dim > t->head_dim ||
            t->mrope_section[0] + t->mrope_section[1] + t->mrope_section[2] != t->rotary_dim / 2 ||
            t->n_eos < 0 || t->n_eos > GS_CFG_MAX_EOS || c.vision.head_dim < 1)
            __builtin_trap();
    } else if (crc != GS_ECONFIG) {
        __builtin_trap();
    }
    gs_generation_config g;
    int grc = gs_generation_config_parse(json, size, &tiny, &g, &d);
    if (grc != 0 && grc != GS_ECONFIG)
        __builtin_trap();
    if (grc == 0 && (g.n_eos < 0 || g.n_eos > GS_CFG_MAX_EOS))
        __builtin_trap();
    if (crc == 0)
        (void)gs_generation_config_parse(json, size, &c, &g, &d);
    gs_image_params ip;
    int irc = gs_image_params_parse(json, size, &ip, &d);
    if (irc == 0) {
        if (ip.patch_size < 1 || ip.merge_size < 1 || ip.temporal_patch_size < 1)
            __builtin_trap();
        (void)gs_model_check_image_params(&tiny, &ip, &d);
        if (crc == 0)
            (void)gs_model_check_image_params(&c, &ip, &d);
        /* smart_resize on a few sizes with the parsed numbers */
        static const int32_t sz[4][2] = {{1, 1}, {56, 56}, {3000, 17}, {100000, 100000}};
        for (int i = 0; i < 4; i++) {
            int32_t h, w;
            (void)gs_image_smart_resize(&ip, sz[i][0], sz[i][1], &h, &w, &d);
        }
    }
    return 0;
}

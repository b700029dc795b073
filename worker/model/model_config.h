/* model_config.h - a model folder's config.json and generation_config.json
 * as typed values, for Glm4vForConditionalGeneration (GLM-4.6V-Flash).
 *
 * Every size, id and hyperparameter comes from the folder; the only values
 * filled in when a key is absent are the transformers class defaults that
 * the model code itself falls back to (rope theta 10000, partial rotary
 * factor 1.0, mrope_section [8,12,12], vision rope theta 10000; head_dim =
 * hidden / heads). Both rope layouts are read: transformers 5
 * (`rope_parameters`) and 4.57 (`rope_theta`, `partial_rotary_factor`,
 * `rope_scaling`). Errors are GS_ECONFIG with a gs_diag naming the key,
 * e.g. "config.json: text_config.num_key_value_heads: missing".
 *
 * The structs are plain values (no pointers): copy them freely.
 * Thread-safe: pure functions over caller memory. */
#ifndef GS_MODEL_CONFIG_H
#define GS_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "worker/image/preprocess.h" /* gs_image_params: the struct only, no link */
#include "worker/model/safetensors.h"

#define GS_CFG_MAX_EOS 16

typedef struct {
    int32_t vocab_size;
    int32_t hidden_size;
    int32_t intermediate_size;
    int32_t num_hidden_layers;
    int32_t num_attention_heads;
    int32_t num_key_value_heads;
    int32_t head_dim; /* explicit key, else hidden / heads; must agree */
    int32_t max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;
    double partial_rotary_factor;
    int32_t rotary_dim;       /* (int)(head_dim * partial_rotary_factor), even */
    int32_t mrope_section[3]; /* t, h, w pairs; sum = rotary_dim / 2 */
    int32_t eos_token_ids[GS_CFG_MAX_EOS];
    int32_t n_eos;
    int32_t pad_token_id; /* -1 when absent */
    int attention_bias;   /* informational: HF always builds q/k/v bias */
} gs_text_config;

typedef struct {
    int32_t depth;
    int32_t hidden_size;
    int32_t num_heads;
    int32_t head_dim;          /* hidden / heads */
    int32_t intermediate_size; /* the patch merger's width */
    int32_t out_hidden_size;   /* ViT MLP width and merger output (= text hidden) */
    int32_t patch_size;
    int32_t temporal_patch_size;
    int32_t spatial_merge_size;
    int32_t image_size;
    int32_t in_channels;
    int32_t num_positions; /* (image_size / patch_size)^2 learned pos-embed rows */
    double rms_norm_eps;
    double rope_theta;
    int attention_bias; /* qkv bias */
} gs_vision_config;

typedef struct {
    gs_text_config text;
    gs_vision_config vision;
    int32_t image_token_id;
    int32_t video_token_id; /* -1 when absent (same for the four below) */
    int32_t image_start_token_id;
    int32_t image_end_token_id;
    int32_t video_start_token_id;
    int32_t video_end_token_id;
    int tie_word_embeddings;
    /* "quantization_config" of a folder written by glmserve-quantize:
     * {"quant_method": "glmserve", "weights": "int8" | "int4",
     * "group_size": 128}. quant_bits 0: a plain checkpoint (no section).
     * Any other quant_method is GS_ECONFIG (not a format glmserve reads). */
    int32_t quant_bits;  /* 0, 8 or 4 */
    int32_t quant_group; /* int4: inputs per scale (GS_Q4_GROUP) */
} gs_model_config;

/* generation_config.json; each has_* says whether the key was present. */
typedef struct {
    int present; /* the file existed */
    int has_eos, has_pad, has_temperature, has_top_p, has_top_k;
    int has_repetition_penalty, has_do_sample, has_max_new_tokens;
    int32_t eos_token_ids[GS_CFG_MAX_EOS];
    int32_t n_eos;
    int32_t pad_token_id;
    double temperature;
    double top_p;
    int32_t top_k;
    double repetition_penalty;
    int do_sample;
    int32_t max_new_tokens;
} gs_generation_config;

/* Parses config.json text (json[0..len), borrowed) into *out and validates
 * it. 0 or GS_ECONFIG (diag names the key). `what` names the file in
 * messages ("config.json"; NULL means that). */
int gs_model_config_parse(const char *json, size_t len, const char *what, gs_model_config *out,
                          gs_diag *diag);
/* Reads <model_dir>/config.json. 0, GS_ENOENT, GS_EIO or GS_ECONFIG. */
int gs_model_config_load(const char *model_dir, gs_model_config *out, gs_diag *diag);

/* Parses generation_config.json text; token ids are checked against
 * cfg->text.vocab_size when cfg is not NULL. 0 or GS_ECONFIG. */
int gs_generation_config_parse(const char *json, size_t len, const gs_model_config *cfg,
                               gs_generation_config *out, gs_diag *diag);
/* Reads <model_dir>/generation_config.json; an absent file is not an error
 * (out->present = 0). 0, GS_EIO or GS_ECONFIG. */
int gs_generation_config_load(const char *model_dir, const gs_model_config *cfg,
                              gs_generation_config *out, gs_diag *diag);

/* Checks that st holds every tensor the config implies (spec section 2),
 * each with its expected shape and a float dtype (BF16, F16 or F32). In a
 * quantized folder (cfg->quant_bits) a linear layer's matrix may instead
 * be quantized (kernels.h "Quantized weights"): NAME I8 [rows, cols] with
 * NAME_scale F32 [rows], or NAME U8 [rows, (cols + 1) / 2] with NAME_scale
 * F32 [rows, ceil(cols / 128)]; a missing or mis-shaped scale names the
 * tensor. Tables (embeddings, patch and position embeddings, the
 * downsample conv) must stay float.
 * Reports the first problem: GS_ENOENT for a missing tensor, GS_EFORMAT for
 * a wrong shape or dtype, naming the tensor and both shapes. Tensors that
 * the config does not imply are counted into *n_unexpected (may be NULL)
 * and are not an error. Borrows everything. */
int gs_model_config_check_weights(const gs_model_config *cfg, const gs_st *st, size_t *n_unexpected,
                                  gs_diag *diag);

/* Checks that preprocessor_config.json (p, from gs_image_params_load)
 * agrees with config.json (c) on the shape of the pixel rows the vision
 * tower reads: patch_size = vision_config.patch_size, temporal_patch_size =
 * vision_config.temporal_patch_size, merge_size =
 * vision_config.spatial_merge_size, and vision_config.in_channels = 3 (the
 * preprocessor makes RGB). A folder whose two files disagree would feed the
 * tower rows of the wrong length or layout. 0 or GS_ECONFIG; d names both
 * files, both keys and both values. Borrows both; pure. */
int gs_model_check_image_params(const gs_model_config *c, const gs_image_params *p, gs_diag *d);

#endif

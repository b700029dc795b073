/* quantize.h - glmserve-quantize's work as a library call: a Hugging
 * Face checkpoint folder to a folder of int8 or int4 weights that
 * gs_model_load uses as they are (docs/quantization.md).
 *
 * The output folder gets model.safetensors: every matrix that the
 * weights' policy quantizes (weights.h) as NAME (I8 [rows, cols], or U8
 * [rows, (cols + 1) / 2] for int4) plus NAME_scale (F32 [rows], or
 * [rows, ceil(cols / 128)]), the same bits gs_weights_load makes when it
 * quantizes at load; every other tensor copied as it is. config.json gains
 * a "quantization_config" section; every other file of the folder
 * (tokenizer, chat template, preprocessor and generation configs,
 * licence...) is copied, the weights and their index excepted. config.json
 * is written last, so an output folder that has one is complete.
 * Thread-safe for distinct folders. */
#ifndef GS_QUANTIZE_H
#define GS_QUANTIZE_H

#include "common/err.h"
#include "worker/model/weight_format.h"

typedef struct {
    const char *model, *out; /* folders (borrowed); out is created if absent */
    gs_weight_format fmt;    /* GS_WEIGHTS_INT8 or GS_WEIGHTS_INT4 */
    int threads;             /* quantization threads; <= 0: the usable cores */
} gs_quantize_params;

/* 0, or GS_EINVAL (bad format, same folder, already quantized),
 * GS_ECONFIG / GS_EFORMAT (bad model folder; d names file and tensor),
 * GS_EIO, GS_ENOMEM; d says why. */
int gs_quantize_folder(const gs_quantize_params *p, gs_diag *d);

#endif

/* weight_format.h - the weight formats a model can be served in
 * (--weights); the byte sizes of --gpu-memory are common/bytes.h.
 *
 *   bf16  the checkpoint's own 16-bit weights (an F32 checkpoint stays F32)
 *   int8  W8A16: int8 weights, one F32 scale per output row (GS_DT_Q8)
 *   int4  W4A16: int4 weights, one F32 scale per 128 inputs (GS_DT_Q4)
 *   auto  the largest of those that fits the backend's memory with a
 *         working reserve (model.c says how it decides)
 * GS_WEIGHTS_ASIS (no flag) is the folder's own format: bf16 for a
 * Hugging Face checkpoint, int8 / int4 for a glmserve-quantize folder.
 * docs/quantization.md has which tensors each format quantizes and why.
 * Thread-safe: pure functions. */
#ifndef GS_WEIGHT_FORMAT_H
#define GS_WEIGHT_FORMAT_H

#include <stddef.h>

typedef enum {
    GS_WEIGHTS_ASIS = 0, /* the folder's own format */
    GS_WEIGHTS_BF16,
    GS_WEIGHTS_INT8,
    GS_WEIGHTS_INT4,
    GS_WEIGHTS_AUTO,
} gs_weight_format;

/* "bf16", "int8", "int4", "auto" (and "asis" for GS_WEIGHTS_ASIS). */
const char *gs_weight_format_name(gs_weight_format f);
/* Parses bf16 | int8 | int4 | auto. 0 or GS_EINVAL. */
int gs_weight_format_parse(const char *s, gs_weight_format *out);

#endif

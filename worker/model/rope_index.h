/* rope_index.h - GLM-4V 3-D position ids (transformers' get_rope_index).
 *
 * Text tokens advance all three streams (t, h, w) together; the tokens of
 * one image get (st + frame, st + row, st + col) over the merged grid, and
 * the next text token starts at max + 1. rope_delta = max + 1 - n, so a
 * decode token at cache position p gets p + rope_delta on all three axes.
 * See glm4v-spec.md 4.5. Pure function; thread-safe. */
#ifndef GS_ROPE_INDEX_H
#define GS_ROPE_INDEX_H

#include <stdint.h>

#include "common/err.h"

typedef struct {
    int32_t image_token_id;
    int32_t video_start_token_id; /* <|image|> inside a video span is video */
    int32_t video_end_token_id;
    int32_t merge_size; /* spatial_merge_size */
} gs_rope_index_params;

/* ids: [n]; grids: [n_images][3] (t, gh, gw in patches), in order of
 * appearance. Writes pos [3, n] (row stride n: t, then h, then w) and
 * *rope_delta. GS_EINVAL (with d naming the image) when the image tokens
 * and grids disagree; GS_ENOTSUP for video spans. Borrows everything. */
int gs_rope_index(const gs_rope_index_params *p, const int32_t *ids, int32_t n,
                  const int32_t (*grids)[3], int32_t n_images, int32_t *pos, int32_t *rope_delta,
                  gs_diag *d);

#endif

/* batch.h - a step plan turned into the model's inputs: the flattened
 * gs_text_batch (token ids, 3-D positions, KV slots, per-sequence query
 * offsets, KV lengths and block tables, logit rows) and the list of image
 * embedding rows the step needs.
 *
 * Pure: reads the plan and the sequences, writes host arrays; no model or
 * backend calls (the engine copies the image rows and runs the forward).
 * Not thread-safe: one builder per engine. */
#ifndef GS_BATCH_H
#define GS_BATCH_H

#include <stdint.h>

#include "common/err.h"
#include "worker/engine/scheduler.h"
#include "worker/model/model.h"

/* Rows [src_row, src_row + n_rows) of image img's embeddings (of seq) go
 * to rows [dst_row, dst_row + n_rows) of the step's image matrix. */
typedef struct {
    gs_seq *seq;
    int32_t img;
    int32_t src_row, n_rows, dst_row;
} gs_batch_img_rows;

typedef struct {
    gs_text_batch tb;                  /* everything but tb.img, which the caller sets */
    const gs_batch_img_rows *img_rows; /* [n_img_copies] */
    int32_t n_img_copies;
    int32_t n_img_rows;        /* rows of the step's image matrix (0: tb.img_row is NULL) */
    const int32_t *logit_item; /* [tb.n_logits] plan item of each logits row */
} gs_batch_out;

typedef struct gs_batch gs_batch; /* opaque */

/* On success *out owns an empty builder (gs_batch_free). */
int gs_batch_new(gs_batch **out);
void gs_batch_free(gs_batch *b); /* NULL: no-op */

/* Fills *out from plan (n_items > 0). Every item's block table must cover
 * its tokens. The arrays belong to b and stay valid until the next build.
 * GS_EINVAL for an empty or inconsistent plan, GS_ENOMEM. */
int gs_batch_build(gs_batch *b, const gs_step_plan *plan, int32_t page_size, gs_batch_out *out);

#endif

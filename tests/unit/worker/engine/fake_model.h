/* fake_model.h - a hash-chain stand-in for gs_model (fake_model.c), so the
 * engine can be tested without kernels. Its greedy continuation depends on
 * every KV slot, position and image row; fake_ref_generate computes it
 * without pages. */
#ifndef GS_FAKE_MODEL_H
#define GS_FAKE_MODEL_H

#include "worker/model/model.h"

#define FAKE_VOCAB 300
#define FAKE_HIDDEN 4
#define FAKE_EOS 299
#define FAKE_IMAGE_TOKEN 290
#define FAKE_PATCH_DIM 24

typedef struct {
    const float *pixels; /* [n_patches, FAKE_PATCH_DIM] */
    int64_t n_patches;
    int32_t grid[3];
} fake_image;

/* Returns an owned fake model (fake_model_free). */
gs_model *fake_model_new(void);
void fake_model_free(gs_model *m);
/* Makes the vision encoder and/or the forward fail with GS_EDEVICE. */
void fake_model_fail(gs_model *m, int encode, int forward);
/* Makes the forward return forward_rc (0: normally), and every
 * nan_every-th sampled row (0: none) come back as -1, as rows of NaN
 * logits do. */
void fake_model_fault(gs_model *m, int forward_rc, int nan_every);
/* Greedy continuation of n_gen tokens into out[n_gen]. */
int fake_ref_generate(const int32_t *prompt, int32_t n_prompt, const fake_image *imgs,
                      int32_t n_imgs, int32_t n_gen, int32_t *out);

#endif

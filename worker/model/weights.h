/* weights.h - the GLM-4V tensors bound to backend weights.
 *
 * gs_weights_load reads every tensor of a checkpoint (gs_st) into the
 * backend once, fusing where the math allows one GEMM instead of several:
 *   text  q/k/v (+ biases)      -> qkv   [q + 2 kv, hidden]
 *   vision mlp gate/up          -> gu    [2 * out_hidden, hidden]
 *   merger gate/up              -> gu    [2 * intermediate, out_hidden]
 *   vision downsample Conv2d W[o, c, kh, kw] is permuted to
 *   [o, (kh * 2 + kw) * c_in + c] so that 4 consecutive tokens (one 2x2
 *   block, glm4v-spec 3.7) concatenated are its input row: no gather.
 *   patch_embed Conv3d [o, 3, 2, 14, 14] is a [o, 1176] GEMM as it is.
 * gs_weights_dummy makes the same set with random values directly in the
 * backend (--dummy-weights): norm weights 1, biases 0, matrices uniform in
 * +-1/sqrt(cols).
 *
 * Memory at load. A matrix stored in the checkpoint exactly as the backend
 * computes from it (same dtype, aligned to it) is not copied: on the CPU
 * backend the weight points at the checkpoint's read-only mapping
 * (gs_weight_wrap_host), and the weights hold a reference to the gs_st so
 * the mapping lives as long as they do. That is every matrix but the fused
 * ones above (text q/k/v, vision and merger gate/up, the permuted
 * downsample), which are built as copies; with weights_f32, or on CUDA
 * (which uploads straight from the mapping, no host copy), everything is a
 * copy. After a tensor has been copied or uploaded, its pages leave the
 * process (gs_st_evict), so peak RSS stays near the weights' own size
 * instead of checkpoint + copy. Norm vectors and biases are always small
 * F32 copies.
 * Not thread-safe; owned by the model. */
#ifndef GS_WEIGHTS_H
#define GS_WEIGHTS_H

#include "kernels/kernels.h"
#include "worker/model/model_config.h"
#include "worker/model/safetensors.h"

typedef struct {
    gs_vec input_ln, post_self_attn_ln, post_attention_ln, post_mlp_ln; /* [hidden] */
    gs_weight *qkv;  /* [q_dim + 2 kv_dim, hidden] */
    gs_vec qkv_bias; /* [q_dim + 2 kv_dim] */
    gs_weight *o;    /* [hidden, q_dim] */
    gs_weight *gu;   /* [2 inter, hidden] gate rows first */
    gs_weight *down; /* [hidden, inter] */
} gs_text_layer_w;

typedef struct {
    gs_vec norm1, norm2; /* [vh] */
    gs_weight *qkv;      /* [3 vh, vh] */
    gs_vec qkv_bias;     /* [3 vh] or n = 0 (no bias) */
    gs_weight *proj;     /* [vh, vh] */
    gs_weight *gu;       /* [2 out_hidden, vh] */
    gs_weight *down;     /* [vh, out_hidden] */
} gs_vision_block_w;

typedef struct {
    /* text */
    gs_weight *embed; /* [vocab, hidden] */
    gs_text_layer_w *layers;
    gs_vec norm;        /* [hidden] */
    gs_weight *lm_head; /* [vocab, hidden] */
    /* vision */
    gs_weight *patch_embed; /* [vh, 3 * tp * p * p] */
    gs_vec patch_bias;      /* [vh] */
    gs_vec post_conv_ln;    /* [vh] */
    gs_weight *pos_embed;   /* [side * side, vh] */
    gs_vision_block_w *blocks;
    gs_vec post_ln;                  /* [vh] */
    gs_weight *downsample;           /* [out_hidden, 4 vh] (permuted) */
    gs_vec downsample_bias;          /* [out_hidden] */
    gs_weight *merger_proj;          /* [out_hidden, out_hidden] */
    gs_vec merger_ln_w, merger_ln_b; /* [out_hidden] */
    gs_weight *merger_gu;            /* [2 inter, out_hidden] */
    gs_weight *merger_down;          /* [out_hidden, inter] */
    int n_layers, n_blocks;
    size_t bytes;        /* backend bytes of all weights (in place ones included) */
    size_t mapped_bytes; /* of those, used in place from the checkpoint mapping */
    gs_st *st;           /* a reference to the checkpoint while weights use it in place */
} gs_weights;

/* Progress callback: done and total bytes of tensors read so far. */
typedef void (*gs_weights_progress_fn)(void *user, size_t done, size_t total);

/* Loads every tensor from st (borrowed; the weights take their own
 * reference when they use its mapping in place, so the caller may free st
 * at once) into be (borrowed; must outlive the weights). Every tensor of
 * st must be used. On success *out owns the weights (gs_weights_free).
 * GS_ENOENT / GS_EFORMAT (d names the tensor), GS_ENOMEM. */
int gs_weights_load(gs_backend *be, const gs_model_config *cfg, const gs_st *st,
                    gs_weights_progress_fn progress, void *user, gs_weights **out, gs_diag *d);
/* Random weights of the real shapes made in the backend (dtype BF16). */
int gs_weights_dummy(gs_backend *be, const gs_model_config *cfg, uint64_t seed, gs_weights **out,
                     gs_diag *d);
void gs_weights_free(gs_backend *be, gs_weights *w); /* NULL: no-op */

#endif

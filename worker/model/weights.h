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
 *
 * Quantized formats (weight_format.h; docs/quantization.md). With int8 or
 * int4 every linear layer's matrix is quantized on the host at load
 * (gs_quantize, threaded over row blocks), fused ones after fusing (rows
 * are independent, so quantizing q, k, v apart and concatenating is the
 * same bits), then handed to gs_weight_new_quant. lm_head is int8 in both
 * formats (the logits are what the sampler sees; int8 costs 1 byte per
 * weight of a [vocab, hidden] matrix read once per step). Tables stay in
 * the checkpoint's dtype: the token embedding (a gather, not a GEMM), the
 * position table, the patch embedding and the permuted downsample conv
 * (small; the latter's columns are permuted at load), and every norm and
 * bias stays F32. A folder written by glmserve-quantize (cfg->quant_bits)
 * holds the quantized tensors already (NAME + NAME_scale): they are used
 * in place from the mapping on the CPU (gs_weight_wrap_quant), uploaded
 * elsewhere, with no BF16 pass.
 * Not thread-safe; owned by the model. */
#ifndef GS_WEIGHTS_H
#define GS_WEIGHTS_H

#include "kernels/kernels.h"
#include "worker/model/model_config.h"
#include "worker/model/safetensors.h"
#include "worker/model/weight_format.h"

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
    size_t bytes;         /* backend bytes of all weights (in place ones included) */
    size_t mapped_bytes;  /* of those, used in place from the checkpoint mapping */
    size_t quant_bytes;   /* of those, in quantized weights */
    gs_weight_format fmt; /* BF16, INT8 or INT4: what the linear layers hold */
    gs_st *st;            /* a reference to the checkpoint while weights use it in place */
} gs_weights;

/* The weight classes of the quantization policy above. */
typedef enum {
    GS_WCLASS_TABLE = 0, /* stays in the checkpoint dtype */
    GS_WCLASS_LINEAR,    /* int8 or int4 */
    GS_WCLASS_HEAD,      /* lm_head: int8 in both quantized formats */
} gs_weight_class;

/* Progress callback: done and total bytes of tensors read so far. */
typedef void (*gs_weights_progress_fn)(void *user, size_t done, size_t total);

/* Loads every tensor from st (borrowed; the weights take their own
 * reference when they use its mapping in place, so the caller may free st
 * at once) into be (borrowed; must outlive the weights). Every tensor of
 * st must be used. fmt: GS_WEIGHTS_INT8 / INT4 quantize a float
 * checkpoint at load; anything else keeps its dtype. A quantized folder
 * (cfg->quant_bits) is loaded as stored whatever fmt says (model.c checks
 * that they agree). On success *out owns the weights (gs_weights_free).
 * GS_ENOENT / GS_EFORMAT (d names the tensor), GS_ENOMEM. */
int gs_weights_load(gs_backend *be, const gs_model_config *cfg, const gs_st *st,
                    gs_weight_format fmt, gs_weights_progress_fn progress, void *user,
                    gs_weights **out, gs_diag *d);
/* Random weights of the real shapes made in the backend: BF16, or for
 * GS_WEIGHTS_INT8 / INT4 the same tensors quantized as gs_weights_load
 * would (gs_weight_new_random with GS_DT_Q8 / GS_DT_Q4). */
int gs_weights_dummy(gs_backend *be, const gs_model_config *cfg, gs_weight_format fmt,
                     uint64_t seed, gs_weights **out, gs_diag *d);

/* The stored dtype of a weight of class c in format fmt: GS_DT_Q8,
 * GS_DT_Q4, or GS_DT_BF16 for "not quantized" (its checkpoint dtype). */
gs_dtype gs_weights_qdtype(gs_weight_format fmt, gs_weight_class c);
/* Backend bytes of the model's weights in format fmt (BF16 for tables and
 * for fmt BF16; quantized sizes with their scales), from the config's
 * shapes alone: what --weights auto weighs against the free memory. */
size_t gs_weights_estimate(const gs_model_config *cfg, gs_weight_format fmt);
/* gs_quantize over row blocks on up to n_threads threads (<= 0: the
 * usable cores, at most 16); small matrices run on the calling thread.
 * Same bits as one gs_quantize call. 0 or GS_EINVAL / GS_ENOMEM. */
int gs_quantize_rows_mt(gs_dtype qdt, const void *src, gs_dtype src_dt, int64_t rows, int64_t cols,
                        void *q, float *s, int n_threads);
void gs_weights_free(gs_backend *be, gs_weights *w); /* NULL: no-op */

/* What gs_weights_load would do with st, without loading anything: checks
 * the tensor set as it does, then calls visit once for each checkpoint
 * matrix it would bind (name borrowed for the call; rows x cols as the
 * model uses it; its class). A tied lm_head is visited as the embedding's
 * name with GS_WCLASS_HEAD (after its GS_WCLASS_TABLE visit). Vectors
 * (norms, biases) are not visited: they stay F32. For glmserve-quantize.
 * 0, or gs_weights_load's errors. */
typedef void (*gs_weights_visit_fn)(void *user, const char *name, int64_t rows, int64_t cols,
                                    gs_weight_class c);
int gs_weights_plan(const gs_model_config *cfg, const gs_st *st, gs_weights_visit_fn visit,
                    void *user, gs_diag *d);

#endif

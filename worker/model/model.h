/* model.h - GLM-4.6V (Glm4vForConditionalGeneration): load, encode images,
 * run the text decoder over a batch of sequences with a paged KV cache.
 *
 * A gs_model owns its config and weights and borrows a backend. It keeps
 * no per-request state: KV pages live in a gs_kv_cache that the caller
 * (the engine, or glmserve-run) owns and addresses through block tables,
 * so one model serves many sequences at once.
 *
 * The arithmetic is glm4v-spec.md sections 3 (vision) and 4 (text), done
 * by the verbs of kernels/kernels.h only.
 * Threading: one thread at a time per model (the engine thread). */
#ifndef GS_MODEL_H
#define GS_MODEL_H

#include <stdint.h>

#include "kernels/kernels.h"
#include "worker/model/model_config.h"
#include "worker/model/weight_format.h"

typedef struct gs_model gs_model; /* opaque */

typedef struct {
    const char *dir;   /* Hugging Face model folder (borrowed for the call) */
    gs_backend *be;    /* borrowed; must outlive the model */
    int dummy_weights; /* 1: random weights of the real shapes, config.json only */
    uint64_t seed;     /* for dummy weights */
    int progress;      /* 1: progress bar on stderr when it is a terminal */
    /* Weight format (--weights; weight_format.h). ASIS: the folder's own.
     * BF16 / INT8 / INT4: a float checkpoint is kept or quantized at load;
     * a quantized folder must match (else GS_ECONFIG). AUTO: the folder's
     * format for a quantized folder; else the first of bf16, int8, int4
     * whose weights (gs_weights_estimate) plus `reserve` fit the backend's
     * free memory (gs_backend_mem_info, which honours mem_limit); int4
     * when none does. The choice and why are logged. */
    gs_weight_format weights;
    size_t reserve; /* AUTO: bytes to leave free; 0: max(256 MiB, 1/8 of the total) */
} gs_model_params;

/* On success *out owns the model (gs_model_free). Errors: GS_ENOENT (no
 * folder / config.json / weights), GS_ECONFIG (wrong or unsupported
 * config, or a weight format the folder cannot give; d names the key),
 * GS_EFORMAT (bad weight files; d names file and tensor), GS_ENOMEM. */
int gs_model_load(const gs_model_params *p, gs_model **out, gs_diag *d);
void gs_model_free(gs_model *m); /* NULL: no-op */
const gs_model_config *gs_model_get_config(const gs_model *m);
gs_backend *gs_model_backend(const gs_model *m);
/* Backend bytes taken by the weights. */
size_t gs_model_weight_bytes(const gs_model *m);
/* The format the weights were loaded in: BF16 (the checkpoint's dtype),
 * INT8 or INT4. */
gs_weight_format gs_model_weight_format(const gs_model *m);

/* Debug taps: called with a name and a backend matrix at fixed points
 * ("vision.embed" after patch conv + norm + pos-embed, "vision.blocks"
 * after the last block, "vision.downsample", "vision.out", "text.embed",
 * "text.layer.N" (output of layer N), "text.norm"). NULL disables. The
 * matrix is borrowed for the call only. */
typedef void (*gs_model_tap_fn)(void *user, const char *name, gs_mat m);
void gs_model_set_tap(gs_model *m, gs_model_tap_fn fn, void *user);

/* Abort hook: fn(user) is polled between decoder layers and between
 * vision blocks of forwards that run op by op (never while a graph is
 * being recorded; a replayed graph runs to its end). When it returns
 * nonzero the forward stops and returns GS_ECANCELED; the KV slots of the
 * batch may then hold partial values, which is harmless as the caller
 * commits nothing and computes the same tokens again. fn NULL: none. fn
 * runs on the model's thread and must be cheap (an atomic load). */
void gs_model_set_abort(gs_model *m, int (*fn)(void *user), void *user);

/* Vision tower over n_images images in one batch.
 * pixels: host [n_patches, 1176] F32 in processor order (borrowed);
 * grids: [n_images][3] (t, gh, gw). out: backend [n_patches / merge^2,
 * out_hidden] in the act dtype, caller-allocated. GS_EINVAL for grids that
 * do not add up to n_patches or are not multiples of the merge size. */
int gs_model_encode_images(gs_model *m, const float *pixels, int64_t n_patches,
                           const int32_t (*grids)[3], int32_t n_images, gs_mat out);

/* ---------------------------------------------------------------------------
 * Image embeddings between the vision tower and the decoder: backend memory
 * [rows, hidden] in the act dtype. These verbs let a caller (the engine)
 * allocate, slice and free them without calling kernels.h itself. */

typedef struct gs_model_emb gs_model_emb; /* opaque */

/* On success *out owns a buffer of rows rows (gs_model_emb_free), content
 * undefined. GS_EINVAL for rows < 1, GS_ENOMEM. */
int gs_model_emb_new(gs_model *m, int64_t rows, gs_model_emb **out);
void gs_model_emb_free(gs_model_emb *e); /* NULL: no-op */
int64_t gs_model_emb_rows(const gs_model_emb *e);
size_t gs_model_emb_bytes(const gs_model_emb *e);
/* The buffer as a matrix [rows, hidden] (borrowed; for
 * gs_model_encode_images' out and gs_text_batch.img). */
gs_mat gs_model_emb_mat(const gs_model_emb *e);
/* Copies src rows [src_row, src_row + n) to dst rows [dst_row, ...) (both
 * of the same model). GS_EINVAL out of range, else the backend's code. */
int gs_model_emb_copy_rows(gs_model_emb *dst, int64_t dst_row, const gs_model_emb *src,
                           int64_t src_row, int64_t n);

/* Free and total bytes of the model's backend (gs_backend_mem_info). */
int gs_model_mem_info(const gs_model *m, size_t *free_bytes, size_t *total_bytes);
/* Backend bytes the activations of one engine step may take: a text
 * forward of n_tokens tokens with n_logits logit rows, and a vision batch
 * of as many merged tokens (n_tokens * merge^2 patches) with its output.
 * An estimate from the config's shapes, for sizing the KV cache within a
 * memory budget (--gpu-memory); the forwards allocate their scratch per
 * call. */
size_t gs_model_act_bytes(const gs_model *m, int32_t n_tokens, int32_t n_logits);
/* 1 when recorded decode graphs pay off on the model's backend (CUDA: a
 * launch per op costs), 0 on the CPU. */
int gs_model_graphs_pay(const gs_model *m);

/* ---------------------------------------------------------------------------
 * KV cache: n_pages pages of page_size tokens for every layer. */

typedef struct gs_kv_cache gs_kv_cache; /* opaque */

/* On success *out owns the cache (gs_kv_cache_free). GS_ENOMEM when the
 * backend cannot hold it. */
int gs_kv_cache_new(gs_model *m, int32_t n_pages, int32_t page_size, gs_kv_cache **out);
void gs_kv_cache_free(gs_kv_cache *kv); /* NULL: no-op */
int32_t gs_kv_cache_pages(const gs_kv_cache *kv);
int32_t gs_kv_cache_page_size(const gs_kv_cache *kv);
/* Bytes of one page over all layers (K and V). */
size_t gs_kv_cache_page_bytes(const gs_model *m, int32_t page_size);
/* Copies page src to page dst in every layer (copy-on-write). */
int gs_kv_cache_copy_page(gs_kv_cache *kv, int32_t dst, int32_t src);

/* One forward step of the text decoder over a flattened batch. Every
 * array is host memory, borrowed for the call.
 * Token i has id ids[i] and 3-D position pos[0*n + i], pos[1*n + i],
 * pos[2*n + i]; its K/V go to cache slot slots[i] (page * page_size +
 * offset). If img_row[i] >= 0 (img_row may be NULL) its input embedding is
 * row img_row[i] of `img` (vision output) instead of embed(ids[i]).
 * Sequences: see gs_paged_batch in kernels.h (cu_q, kv_len, block_table
 * here on the host). Logits: for each of the n_logits token rows in
 * logit_rows, vocab F32 values into logits[n_logits, vocab]. */
typedef struct {
    int32_t n_tokens;
    const int32_t *ids;     /* [n_tokens] */
    const int32_t *pos;     /* [3, n_tokens] */
    const int32_t *slots;   /* [n_tokens] */
    const int32_t *img_row; /* [n_tokens] or NULL */
    gs_mat img;             /* backend [n_img_rows, hidden] (ignored if img_row NULL) */
    int32_t n_seqs;
    const int32_t *cu_q;        /* [n_seqs + 1] */
    const int32_t *kv_len;      /* [n_seqs] */
    const int32_t *block_table; /* [n_seqs, max_blocks] */
    int32_t max_blocks;
    int32_t n_logits;
    const int32_t *logit_rows; /* [n_logits] */
} gs_text_batch;

int gs_model_forward(gs_model *m, gs_kv_cache *kv, const gs_text_batch *b, float *logits);

/* Sampling requests for the logit rows of a step (gs_k_sample in kernels.h
 * has the semantics). Host memory, borrowed for the call. */
typedef struct {
    const gs_sample_row *rows; /* [n_logits] */
    /* Penalty lists, CSR; pen_off NULL: no penalties. Row k owns
     * pen_ids / pen_cnt[pen_off[k] .. pen_off[k+1]). */
    const int32_t *pen_off; /* [n_logits + 1] */
    const int32_t *pen_ids;
    const int32_t *pen_cnt;
} gs_sample_batch;

/* One forward step, then sampling on the backend: ids[k] (host, n_logits
 * entries) is the next token of logit row k, or -1 when that row's logits
 * were all NaN / -inf. Only the ids come back from the backend. A decode
 * batch (one token per sequence, no image rows, logit_rows = 0, 1, ...)
 * replays a recorded graph when gs_model_enable_graphs was called for kv;
 * every other batch runs op by op. Errors as gs_model_forward. */
int gs_model_step(gs_model *m, gs_kv_cache *kv, const gs_text_batch *b, const gs_sample_batch *s,
                  int32_t *ids);

/* Records decode steps as graphs (gs_graph_* in kernels.h), one per batch
 * bucket (1, 2, 4, 8, then multiples of 8 up to 64, of 32 up to 256) and
 * context bucket (powers of two from 256 tokens up to max_len), each made
 * the first time a step of that shape comes. Padded rows are harmless
 * (no KV write, one key of page 0). Allocates a fixed workspace for
 * max_batch sequences of max_len tokens (max_batch <= 256). Graphs are tied
 * to kv: steps on another cache run op by op. Also turns on vision graphs
 * by patch bucket (gs_model_encode_images; vision_graph.c), whose
 * workspace grows to the largest batch seen. Calling it again replaces the
 * workspaces and drops every graph. GS_EINVAL for bad sizes, GS_ENOMEM. */
int gs_model_enable_graphs(gs_model *m, const gs_kv_cache *kv, int32_t max_batch, int32_t max_len);
void gs_model_disable_graphs(gs_model *m);

typedef struct {
    int64_t replays;         /* decode steps run by a graph */
    int64_t captures;        /* decode graphs recorded */
    int64_t eager;           /* decode steps that ran op by op to make a graph */
    int64_t vision_replays;  /* vision batches run by a graph */
    int64_t vision_captures; /* vision graphs recorded */
    int32_t n_graphs;        /* graphs held now */
    size_t ws_bytes;         /* backend bytes of the graph workspaces */
} gs_model_graph_stats;
void gs_model_graph_stats_get(const gs_model *m, gs_model_graph_stats *out);

#endif

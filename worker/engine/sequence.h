/* sequence.h - gs_seq: what the scheduler knows about one request.
 *
 * There is no "prefill phase" and no "decode phase" (vLLM v1): a sequence
 * has n_tokens known tokens (the prompt, then every generated token) and
 * n_computed of them have their K/V in the cache. Each step computes some
 * of the rest; when a step reaches n_tokens, its last row's logits choose
 * the next token. Preemption sets n_computed back to 0 and keeps the
 * tokens, so a recompute treats the generated tokens as prompt.
 *
 * The struct is visible to the engine's own files (scheduler.c, engine.c,
 * the tests); it is not part of the worker's API (engine.h is).
 * Not thread-safe: owned by the engine thread. */
#ifndef GS_SEQUENCE_H
#define GS_SEQUENCE_H

#include <stdint.h>

#include "common/err.h"
#include "common/queue.h"
#include "worker/engine/block_table.h"
#include "worker/engine/prefix_cache.h"

typedef enum {
    GS_SEQ_NEW = 0, /* created, not in the scheduler */
    GS_SEQ_WAITING, /* in the waiting queue (new or preempted) */
    GS_SEQ_RUNNING, /* admitted: holds pages */
    GS_SEQ_DONE,    /* removed from the scheduler */
} gs_seq_state;

/* Run-time state of one image of a sequence (the span is in spans[i]). */
typedef struct {
    int64_t n_patches;
    /* [n_patches, patch_dim] F32; NULL in pure tests and once handed-over
     * pixels are released. Owned: free() when release is NULL, else given
     * back by release(release_ctx) (gs_seq_release_pixels). */
    const float *pixels;
    void (*release)(void *ctx);
    void *release_ctx;
    void *emb;          /* gs_model_emb [len, hidden]; engine-owned; NULL until encoded */
    int32_t emb_shared; /* 1: emb is a reference into the engine's encoder cache */
    int32_t queued;     /* listed in the current plan's encodes */
} gs_seq_image;

typedef struct gs_seq {
    int64_t id;
    void *user; /* the engine's job */

    int32_t *toks; /* [n_tokens] prompt then generated ids */
    int32_t n_tokens, cap_tokens;
    int32_t n_prompt;
    int32_t n_computed; /* tokens whose K/V are in the cache */
    int32_t n_cached;   /* prompt tokens served by the prefix cache at first admission */
    int32_t admitted;   /* admitted at least once */
    int32_t n_preempted;

    gs_prefix_image *spans; /* [n_imgs] sorted by start; token ranges of the images */
    gs_seq_image *imgs;     /* [n_imgs] */
    int32_t n_imgs;

    int32_t *pos;       /* [3, n_prompt] M-RoPE positions of the prompt (owned), or NULL:
                           position p on all axes */
    int32_t rope_delta; /* a token at p >= n_prompt has position p + rope_delta */

    gs_prefix_key root;  /* parent key of page 0 (from the cache salt) */
    gs_prefix_key *keys; /* [n_keys] chain keys of the full pages of toks */
    int32_t n_keys, cap_keys;

    gs_block_table *bt;

    /* Scheduler bookkeeping. */
    gs_seq_state state;
    int32_t scheduled; /* has an item in the current plan */
    gs_queue q_link;   /* in the scheduler's waiting queue */
} gs_seq;

typedef struct {
    int64_t id;
    const int32_t *toks; /* [n_toks] prompt ids (copied) */
    int32_t n_toks;
    const gs_prefix_image *spans; /* [n_images] copied; sorted, inside the prompt, disjoint */
    int32_t n_images;
    const int32_t *pos; /* [3, n_toks] prompt positions (copied) or NULL */
    int32_t rope_delta;
    uint64_t cache_salt;
} gs_seq_params;

/* On success *out owns a new sequence (gs_seq_free) with zeroed image
 * run-time state. GS_EINVAL for an empty prompt or spans out of order or
 * outside it; GS_ENOMEM. */
int gs_seq_new(const gs_seq_params *p, gs_seq **out);
/* Frees the sequence, its pixels (free(), or their release callback) and
 * its table. NULL: no-op. The caller must have taken it out of the
 * scheduler and freed emb buffers. */
void gs_seq_free(gs_seq *s);
/* Gives image k's pixels back now (free() or release, once); pixels is
 * NULL afterwards. */
void gs_seq_release_pixels(gs_seq *s, int32_t k);
/* Appends one generated token. GS_ENOMEM. */
int gs_seq_append(gs_seq *s, int32_t tok);
/* Position of token p on axis a (0: t, 1: h, 2: w). */
static inline int32_t gs_seq_pos(const gs_seq *s, int32_t p, int a)
{
    if (s->pos && p < s->n_prompt)
        return s->pos[(int64_t)a * s->n_prompt + p];
    return s->pos ? p + s->rope_delta : p;
}
/* Computes the chain keys of every full page of toks not keyed yet.
 * 0 or the error of gs_prefix_page_key / GS_ENOMEM. */
int gs_seq_update_keys(gs_seq *s, int32_t page_size);

#endif

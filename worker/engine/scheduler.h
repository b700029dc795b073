/* scheduler.h - which tokens of which sequences run in the next step.
 *
 * Pure policy: it moves sequences between the waiting queue and the running
 * list, hands out pages (kv_pool, prefix_cache, block_table) and writes a
 * step plan; it calls no model code and reads no clock (`now` is passed
 * in). The engine carries the plan out: page copies, image encoding, one
 * forward over every item, sampling.
 *
 * One step (iteration-level scheduling, Orca / vLLM v1):
 *   1. decode: every running sequence with one token left, in admission
 *      order, one token each;
 *   2. running sequences still in (chunked) prefill, in admission order;
 *   3. unless step 1 or 2 preempted someone: waiting sequences in FIFO
 *      order, while there is token budget, a free running slot
 *      (max_seqs) and enough free pages for their first chunk.
 * Every item takes min(tokens left, budget left) tokens from a per-step
 * token budget. When a running sequence needs pages that are not there,
 * the most recently admitted running sequence not yet in the plan is
 * preempted (pages released, n_computed = 0, back to the FRONT of the
 * waiting queue with every token kept): recomputation, never a lost
 * request. If there is nobody left to preempt, the sequence preempts itself
 * - or, when it could not fit even alone in the whole pool, it is reported
 * in plan.failed and leaves the scheduler (the engine finishes it).
 *
 * Not thread-safe: owned by the engine thread. */
#ifndef GS_SCHEDULER_H
#define GS_SCHEDULER_H

#include <stdint.h>

#include "common/err.h"
#include "worker/engine/block_table.h"
#include "worker/engine/kv_pool.h"
#include "worker/engine/prefix_cache.h"
#include "worker/engine/sequence.h"

typedef struct {
    int32_t page_size;    /* tokens per page, >= 1 */
    int32_t token_budget; /* tokens computed per step, >= 1 (e.g. 512) */
    int32_t max_seqs;     /* running sequences at most, >= 1 */
} gs_sched_params;

/* Compute tokens [start, start + n) of seq in this step. */
typedef struct {
    gs_seq *seq;
    int32_t start, n;
    int32_t sample; /* 1: start + n == n_tokens, the last row's logits pick a token */
} gs_sched_item;

/* Image img of seq must be encoded (its emb is NULL and this step's chunk
 * touches its tokens). */
typedef struct {
    gs_seq *seq;
    int32_t img;
} gs_sched_encode;

/* A step plan. Arrays are owned by the scheduler and valid until the next
 * gs_step_plan or gs_sched_free. Items come in batch order. */
typedef struct {
    const gs_sched_item *items;
    int32_t n_items;
    int32_t n_tokens;           /* sum of items' n */
    const gs_page_copy *copies; /* run these, in order, before the forward */
    int32_t n_copies;
    const gs_sched_encode *encodes;
    int32_t n_encodes;
    gs_seq *const *preempted; /* moved back to waiting in this step */
    int32_t n_preempted;
    gs_seq *const *failed; /* can never fit in the pool: removed, state DONE */
    int32_t n_failed;
} gs_step_plan;

typedef struct {
    int32_t n_running, n_waiting;
    int64_t n_steps, n_preemptions;
    int64_t n_scheduled_tokens;
    int64_t prefix_query_tokens; /* tokens of sequences looked up at admission */
    int64_t prefix_hit_tokens;   /* of those, found in the prefix cache */
} gs_sched_stats;

typedef struct gs_sched gs_sched; /* opaque */

/* Borrows pool and pc (pc NULL: no prefix caching); both must outlive the
 * scheduler. On success *out owns it (gs_sched_free). GS_EINVAL/GS_ENOMEM. */
int gs_sched_new(const gs_sched_params *p, gs_kv_pool *pool, gs_prefix_cache *pc, gs_sched **out);
/* NULL: no-op. Sequences still inside lose their pages; they stay owned by
 * the caller. */
void gs_sched_free(gs_sched *s);

/* Appends seq (state NEW) to the waiting queue. Borrows seq until
 * gs_sched_remove or until it is reported failed. GS_EINVAL. */
int gs_sched_add(gs_sched *s, gs_seq *seq);
/* Takes seq out (waiting or running), releases its pages at once, state
 * DONE. Not between gs_step_plan and gs_sched_commit for a sequence in
 * the plan. No-op for a sequence that is not inside. */
void gs_sched_remove(gs_sched *s, gs_seq *seq);

/* Plans the next step into *plan (see the top). An empty plan (n_items 0)
 * means nothing can run. GS_ENOMEM, or a key error from the prefix cache. */
int gs_sched_plan(gs_sched *s, uint64_t now, gs_step_plan *plan);
/* After the forward of the last plan succeeded: advances n_computed of
 * every item and caches the pages that became full. */
int gs_sched_commit(gs_sched *s, const gs_step_plan *plan);

void gs_sched_get_stats(const gs_sched *s, gs_sched_stats *out);
/* Calls fn(seq, ctx) for each waiting sequence in order (head first: the
 * next to be admitted); returns the number waiting. fn must not change
 * the scheduler. */
int32_t gs_sched_each_waiting(const gs_sched *s, void (*fn)(gs_seq *seq, void *ctx), void *ctx);
/* The running list in admission order: up to cap into seqs; returns the
 * number running. For tests. */
int32_t gs_sched_running(const gs_sched *s, gs_seq **seqs, int32_t cap);

#endif

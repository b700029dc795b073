/* sampler.h - the sampling state of one sequence, and stop conditions.
 *
 * A gs_sampler belongs to one sequence. It remembers the tokens seen (the
 * prompt and everything generated) for the penalties and how many tokens
 * were generated, and hands both with the parameters to the backend's
 * gs_k_sample (kernels.h), which makes the choice: the draw is keyed by
 * (seed, tokens generated so far), so a request with a seed is
 * reproducible no matter what else runs in the same batch.
 *
 * Order of the logits processors (as transformers' generate, plus the
 * OpenAI penalties that vLLM applies in the same place):
 *   repetition penalty (every distinct id of prompt + output: logit > 0 ->
 *   logit / p, else logit * p) -> presence / frequency penalties (output
 *   ids only: logit -= presence + frequency * count) -> greedy argmax when
 *   temperature <= 0, else: / temperature -> top-k -> top-p -> min-p ->
 *   draw from the softmax of what is left.
 * Greedy ties go to the lowest id (torch.argmax).
 *
 * gs_stopper handles stop strings over streamed text: it holds back the
 * tail that could still become a stop string, so text handed to the client
 * never contains one.
 * Not thread-safe per object; distinct objects are independent. */
#ifndef GS_SAMPLER_H
#define GS_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "kernels/kernels.h"

typedef struct {
    float temperature;        /* <= 0: greedy */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1: off; must be > 0 */
    float min_p;              /* <= 0: off; keeps p >= min_p * p_max */
    float repetition_penalty; /* 1: off; must be > 0 */
    float presence_penalty;   /* 0: off; in [-2, 2] */
    float frequency_penalty;  /* 0: off; in [-2, 2] */
    uint64_t seed;
} gs_sampling_params;

/* Defaults: greedy, every filter off, seed 0. */
gs_sampling_params gs_sampling_defaults(void);
/* Checks ranges; GS_EINVAL with d naming the field. */
int gs_sampling_validate(const gs_sampling_params *p, gs_diag *d);

typedef struct gs_sampler gs_sampler; /* opaque */

/* vocab: number of logits per row. prompt: [n_prompt] ids, borrowed for
 * the call (counted for the repetition penalty). On success *out owns the
 * sampler (gs_sampler_free). GS_EINVAL for bad params, GS_ENOMEM. */
int gs_sampler_new(const gs_sampling_params *p, int32_t vocab, const int32_t *prompt,
                   int32_t n_prompt, gs_sampler **out, gs_diag *d);
void gs_sampler_free(gs_sampler *s); /* NULL: no-op */

/* Records an appended id (counts for the penalties). */
int gs_sampler_accept(gs_sampler *s, int32_t id);
/* Number of ids accepted since creation (the output length). */
int32_t gs_sampler_n_generated(const gs_sampler *s);

/* ---------------------------------------------------------------------------
 * The same choice on the backend (gs_k_sample, kernels.h): what a row of
 * that op needs from a sampler. The op's draws come from Philox keyed by
 * (seed, offset), not from this sampler's own random stream, and exact
 * ties at the top-k / top-p boundary are all kept there. */

/* The sampler's row for gs_k_sample: its parameters and seed, offset =
 * gs_sampler_n_generated (a new draw for each generated token), pad_ 0. */
void gs_sampler_row(const gs_sampler *s, gs_sample_row *out);
/* How many entries gs_sampler_penalty_ids writes: 0 when no penalty is
 * active (repetition 1, presence and frequency 0), else the number of
 * distinct ids seen (output ids, plus the prompt's when the repetition
 * penalty is on: prompt ids take part in no other penalty). */
int32_t gs_sampler_n_penalty_ids(const gs_sampler *s);
/* Writes gs_sampler_n_penalty_ids(s) entries, the row's part of the op's
 * penalty lists: each distinct id once, ascending, with its count in the
 * output in cnt (0: prompt only). O(entries): the list is kept sorted as
 * ids are accepted. */
void gs_sampler_penalty_ids(const gs_sampler *s, int32_t *ids, int32_t *cnt);

/* ---------------------------------------------------------------------------
 * Stop strings over streamed text. */

typedef struct gs_stopper gs_stopper; /* opaque */

/* stops: [n] NUL-terminated strings, copied (empty strings are ignored).
 * On success *out owns the stopper (gs_stopper_free). */
int gs_stopper_new(const char *const *stops, int n, gs_stopper **out);
void gs_stopper_free(gs_stopper *st); /* NULL: no-op */

/* Feeds a text delta (len bytes). Writes the text that is safe to emit to
 * *emit / *emit_len (borrowed pointer, valid until the next call) and
 * returns 1 when a stop string matched (the emitted text then ends right
 * before it and everything after is dropped), else 0. After a match further
 * feeds emit nothing. GS_ENOMEM on allocation failure. */
int gs_stopper_feed(gs_stopper *st, const char *text, size_t len, const char **emit,
                    size_t *emit_len);
/* End of stream: returns the held-back tail (borrowed, until next call). */
void gs_stopper_flush(gs_stopper *st, const char **emit, size_t *emit_len);

#endif

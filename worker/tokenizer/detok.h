/* detok.h - incremental detokenizer for streaming.
 *
 * Ids are pushed one at a time as the model produces them; each push
 * returns the text that is now final: only whole UTF-8 characters. The
 * bytes of a character split across tokens (CJK, emoji) are held back
 * until it is complete; a sequence that can no longer become valid is
 * emitted as U+FFFD at once; gs_detok_flush ends the stream, turning a
 * held-back incomplete tail into one U+FFFD. The concatenation of all
 * pieces plus the flush equals gs_tokenizer_decode of all the ids with
 * the same skip/strict flags (HF decode).
 * Not thread-safe per object (one per sequence); objects are independent. */
#ifndef GS_DETOK_H
#define GS_DETOK_H

#include <stddef.h>
#include <stdint.h>

#include "worker/tokenizer/tokenizer.h"

typedef struct gs_detok gs_detok; /* opaque */

#define GS_DETOK_SKIP_SPECIAL (1u << 0) /* special tokens produce no text */
#define GS_DETOK_STRICT (1u << 1)       /* ids that are not tokens: GS_ERANGE (else no text) */

/* tok is borrowed and must outlive the detokenizer. *out owns a new one
 * (free with gs_detok_free); 0 or GS_ENOMEM. */
int gs_detok_new(const gs_tokenizer *tok, unsigned flags, gs_detok **out);
void gs_detok_free(gs_detok *dt); /* NULL: no-op */
/* Starts a new stream (drops held-back bytes). */
void gs_detok_reset(gs_detok *dt);

/* Feeds one id. *piece and *len get the newly final text (borrowed from dt,
 * valid until the next call on dt; possibly empty, never NULL).
 * Errors: GS_ERANGE (STRICT and id is not a token), GS_ENOMEM; then
 * nothing is emitted and the state is unchanged. */
int gs_detok_push(gs_detok *dt, int32_t id, const char **piece, size_t *len);

/* Ends the stream: *piece gets U+FFFD if an incomplete character was held
 * back, else "" (borrowed, as for push). The detokenizer is then empty. */
void gs_detok_flush(gs_detok *dt, const char **piece, size_t *len);

/* Bytes currently held back (0..3). */
size_t gs_detok_pending(const gs_detok *dt);

#endif

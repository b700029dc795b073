/* tokenizer.h - byte-level BPE from a Hugging Face tokenizer.json.
 *
 * Reproduces `tokenizers` (the Rust library transformers uses) for the
 * byte-level BPE family (GPT-2, cl100k-style, GLM-4, Qwen, Llama 3):
 *
 *   text -> added tokens matched in the raw text (leftmost-longest; first the
 *   tokens with normalized=false, then those with normalized=true)
 *   -> the pieces between them go through the pre-tokenizer: every Split
 *   (regex read from the file, PCRE2 JIT, UTF + UCP) and ByteLevel
 *   -> BPE by merge rank on each piece -> ids.
 *
 * Supported tokenizer.json: normalizer null; pre_tokenizer ByteLevel, or a
 * Sequence of Split (pattern Regex or String, behavior Isolated or Removed,
 * invert false) followed by ByteLevel (add_prefix_space, use_regex);
 * model BPE (merges as "a b" strings or [a, b] pairs; unk_token, fuse_unk,
 * byte_fallback, ignore_merges; no dropout or subword affixes); decoder
 * ByteLevel. Anything else is GS_EUNSUPPORTED with a diag naming the key.
 * Token ids may have gaps: ids that no token uses are "absent".
 *
 * Thread-safety: a loaded tokenizer is immutable except for an internal
 * word cache guarded by a mutex (an encode that finds it busy runs
 * uncached), so every function may be called from any thread at once. */
#ifndef GS_TOKENIZER_H
#define GS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct gs_tokenizer gs_tokenizer; /* opaque */

/* A growable id vector, caller-owned. Zero-initialise it ({0}); encode
 * appends to it; free the array with gs_tokens_free. */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} gs_tokens;

void gs_tokens_free(gs_tokens *t); /* frees t->ids and zeroes t; NULL: no-op */
/* Appends n ids; 0 or GS_ENOMEM (t unchanged). */
int gs_tokens_append(gs_tokens *t, const int32_t *ids, size_t n);

/* Loads a tokenizer.json. On success *out owns a new tokenizer (free with
 * gs_tokenizer_free). Errors: GS_ENOENT/GS_EIO (file), GS_EFORMAT (bad
 * JSON or inconsistent vocab/merges), GS_EUNSUPPORTED (a component this
 * module does not implement), GS_ENOMEM; d names the key. */
int gs_tokenizer_load(const char *path, gs_tokenizer **out, gs_diag *d);
/* Same from a JSON text of len bytes (borrowed). */
int gs_tokenizer_load_json(const char *json, size_t len, gs_tokenizer **out, gs_diag *d);
void gs_tokenizer_free(gs_tokenizer *tok); /* NULL: no-op */

/* Encode flags. */
#define GS_ENCODE_SPECIAL_AS_TEXT                                                                  \
    (1u << 0) /* special added tokens are plain text                                               \
                 (HF split_special_tokens) */

/* Encodes len bytes of UTF-8 (borrowed; NUL bytes are ordinary text) and
 * appends the ids to out. No special tokens are added around the text
 * (add_special_tokens=False; the chat template writes its own).
 * Errors: GS_EUTF8 (d gives the byte offset), GS_ENOMEM; out keeps the
 * ids it had before the call. */
int gs_tokenizer_encode(const gs_tokenizer *tok, const char *text, size_t len, unsigned flags,
                        gs_tokens *out, gs_diag *d);

/* Decode flags. */
#define GS_DECODE_SKIP_SPECIAL (1u << 0) /* drop tokens marked special */
#define GS_DECODE_STRICT (1u << 1)       /* absent ids are GS_ERANGE (else skipped, as HF) */

/* Decodes ids into *out (returns owned, NUL-terminated; free with free()),
 * its length in *len (may be NULL). Byte sequences that are not valid
 * UTF-8 become U+FFFD, one per maximal invalid subpart (Rust's
 * from_utf8_lossy, which HF applies). Ids outside [0, vocab_size) or in a
 * gap: skipped, or GS_ERANGE with GS_DECODE_STRICT. */
int gs_tokenizer_decode(const gs_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                        char **out, size_t *len, gs_diag *d);

/* The bytes one id decodes to before UTF-8 repair (the ByteLevel decoder's
 * output for that token alone), borrowed from tok; NULL for absent ids. */
const char *gs_tokenizer_id_bytes(const gs_tokenizer *tok, int32_t id, size_t *len);

/* Id of a token given by its string as written in tokenizer.json (added
 * tokens first, then the model vocab: "<|image|>", or "Ġthe" for " the");
 * GS_ENOENT when there is none. NUL-terminated, borrowed. */
int32_t gs_tokenizer_token_id(const gs_tokenizer *tok, const char *token);
/* The string of an id as written in tokenizer.json (borrowed, NUL-terminated),
 * or NULL for absent ids. */
const char *gs_tokenizer_id_to_token(const gs_tokenizer *tok, int32_t id);
/* Max id + 1 over the vocab and the added tokens (the embedding rows a
 * model needs at least); gaps count. */
int32_t gs_tokenizer_vocab_size(const gs_tokenizer *tok);
/* 1 when id is an added token with special=true, else 0 (absent ids: 0). */
int gs_tokenizer_is_special(const gs_tokenizer *tok, int32_t id);

/* Images of a prompt: the placeholder id (config.json image_token_id) and
 * the token count of each image, t*h*w / merge^2, in order (borrowed). */
typedef struct {
    int32_t image_token_id;
    const int32_t *n_tokens; /* [n_images], each >= 1 */
    int n_images;
} gs_prompt_images;

/* The final prompt ids of a rendered chat: encodes len bytes of text
 * (borrowed) and appends the ids to out, with the i-th image_token_id
 * expanded into n_tokens[i] copies. The number of image placeholders in
 * the encoded text must equal n_images (GS_EINVAL otherwise, so a user who
 * types "<|image|>" cannot shift the images). Video placeholders are left
 * as they are. Errors: those of encode, GS_EINVAL, GS_ETOOBIG (more than
 * INT32_MAX ids), GS_ENOMEM; out is then unchanged. */
int gs_prompt_encode_n(const gs_tokenizer *tok, const char *text, size_t len,
                       const gs_prompt_images *img, gs_tokens *out, gs_diag *d);

/* The same for a NUL-terminated text, into a new array: *ids returns owned
 * (free with free()), *n_ids its length. */
int gs_prompt_encode(const gs_tokenizer *tok, const char *text, int32_t image_token_id,
                     const int32_t *n_tokens, int n_images, int32_t **ids, int32_t *n_ids,
                     gs_diag *d);

#endif

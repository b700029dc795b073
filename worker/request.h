/* request.h - a job's JSON and its image bytes -> everything the engine
 * needs (prompt ids with each image expanded, preprocessed pixels and
 * their hashes, sampling parameters, stop lists, limits). Used by the
 * worker's preparation threads and by glmserve-run, so both build jobs
 * the same way.
 *
 * The job JSON (what a gateway sends in an IPC job, docs/protocol.md):
 *   {"messages": [...],            required; OpenAI / transformers form
 *                                  (chat_template.h); an image content part
 *                                  is {"type": "image"} or {"type":
 *                                  "image_url", ...}: the i-th such part is
 *                                  the i-th image blob
 *    "tools": [...],               optional, as chat_template.h
 *    "max_tokens": N,              optional; default: generation_config.json's
 *                                  max_new_tokens, else env->default_max_tokens;
 *                                  always capped by the context
 *    "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
 *    "presence_penalty", "frequency_penalty": numbers, optional; absent ones
 *                                  take generation_config.json's values
 *    "seed": integer >= 0,         optional; absent: a fresh random seed, so
 *                                  two unseeded requests differ
 *    "stop": "s" | ["s", ...],     optional, at most GS_REQUEST_MAX_STOPS
 *    "stop_token_ids": [ids],      optional
 *    "ignore_eos": bool,           optional
 *    "enable_thinking": bool,      optional; absent: the template's default
 *    "cache_salt": string}         optional; prefix-cache namespace
 * Unknown keys are refused (GS_EINVAL naming the key), so a typo is never
 * silently ignored.
 *
 * Thread-safe: gs_request_build reads env (shared, read-only) and writes
 * only its own request; any number of threads may build at once. */
#ifndef GS_REQUEST_H
#define GS_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "worker/engine/engine.h"
#include "worker/image/decode.h"
#include "worker/image/preprocess.h"
#include "worker/model/model_config.h"
#include "worker/tokenizer/tokenizer.h"

#define GS_REQUEST_MAX_STOPS 16
#define GS_REQUEST_MAX_STOP_LEN 1024

/* What every request of one model shares; all borrowed, read-only, and
 * must outlive the requests built from it. */
typedef struct {
    const gs_tokenizer *tok;
    const gs_model_config *cfg;
    const gs_generation_config *gen; /* may have present = 0 */
    const gs_image_params *img;
    gs_image_decode_params decode; /* limits on image bytes and pixels */
    int32_t max_images;            /* per request (<= GS_IPC_MAX_IMAGES) */
    int32_t max_model_len;         /* prompt + output tokens */
    int32_t default_max_tokens;    /* when neither the job nor the config says */
} gs_request_env;

/* One image's bytes (borrowed for gs_request_build). */
typedef struct {
    const void *bytes;
    size_t len;
} gs_request_blob;

/* A prepared request. Owned by whoever built it (gs_request_free). */
typedef struct {
    int32_t *ids; /* [n_ids] prompt ids, each image expanded */
    int32_t n_ids;
    int32_t n_images;
    gs_image_patches **patches; /* [n_images]; entries are NULL once handed to the engine */
    gs_engine_image *images;    /* [n_images] views of patches (+ SHA-256 of the bytes) */
    int64_t n_patches;
    gs_sampling_params sampling;
    int seeded;   /* 1: the job gave the seed */
    char **stops; /* [n_stops] owned NUL-terminated strings */
    int32_t n_stops;
    int32_t *stop_ids; /* [n_stop_ids]: the job's, then generation_config's eos */
    int32_t n_stop_ids;
    int32_t max_tokens;
    unsigned job_flags;  /* GS_JOB_* */
    uint64_t cache_salt; /* 0: shared namespace */
    int think_off;       /* 1: enable_thinking was false */
} gs_request;

/* Builds a request from json[0..len) (borrowed) and n_images blobs
 * (borrowed): parse and validate the JSON, read each image's header (its
 * token count: gs_image_token_count), render the chat template, tokenize,
 * check the context, and only then decode and preprocess each image
 * (hashing its bytes), so a prompt over the context costs no decode. On
 * success *out owns the request. Errors (d says what, naming
 * the key, the message index or the image): GS_EINVAL (bad JSON, unknown
 * key, wrong type or range, image count mismatch), GS_EUTF8, GS_ETOOBIG /
 * GS_EUNSUPPORTED / GS_EFORMAT (images), GS_ECONTEXT (prompt plus
 * max_tokens beyond max_model_len: when the job gave no max_tokens the
 * default is cut to fit instead), GS_ENOMEM. */
int gs_request_build(const gs_request_env *env, const char *json, size_t len,
                     const gs_request_blob *blobs, int n_images, gs_request **out, gs_diag *d);
/* Frees r; the pixels of images not yet handed to an engine are freed
 * through their images[i].release (which a caller may wrap). NULL: no-op. */
void gs_request_free(gs_request *r);

/* The bytes of pixels (F32 patches) that gs_request_build will hold for
 * these images, from their headers alone (an image whose header is bad
 * counts 0: the build refuses it). */
size_t gs_request_pixel_bytes(const gs_request_env *env, const gs_request_blob *blobs,
                              int n_images);

/* Fills job with views of r (ids, images, sampling, stops, limits), on_event
 * and user left to the caller. The images are handed over: their release
 * callbacks free the pixels, and r forgets them, so call this once, right
 * before gs_engine_submit (which releases them even when it fails). r
 * must outlive the submit call (the engine copies the rest). */
void gs_request_to_job(gs_request *r, gs_engine_job *job);

#endif

/* chat_job.h - an OpenAI chat request -> the worker's job: the job JSON
 * (worker/request.h's schema) and the raw bytes of its images (decoded
 * from base64 data: URLs; remote URLs refused), plus what the response
 * needs (stream or not, usage in the stream, the model name). Shared by
 * POST /v1/chat/completions and the WebSocket protocol.
 * Pure (no I/O); thread-safe. */
#ifndef GS_CHAT_JOB_H
#define GS_CHAT_JOB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/ipc_msg.h"
#include "gateway/json_lift.h"

typedef struct {
    int max_images;    /* per request */
    const char *model; /* the served model's name; NULL or "": not known yet */
    int fetch_remote;  /* 1: http(s) image URLs are kept in urls[] to be fetched */
    /* The data: URL payloads lifted out of the body before it was parsed
     * (gs_json_load_lifted), or NULL. Borrowed for the build. */
    const gs_json_lift *lift;
} gs_chat_job_params;

typedef struct {
    char *json;                           /* the job JSON (owned) */
    uint8_t *bytes[GS_IPC_MAX_IMAGES];    /* owned image bytes */
    gs_ipc_str images[GS_IPC_MAX_IMAGES]; /* views of bytes, for gs_dispatch_submit */
    /* [n_images] owned http(s) URL of an image still to fetch (its bytes
     * NULL), or NULL; only with fetch_remote. gs_chat_job_set_image fills
     * such an image once fetched. */
    char *urls[GS_IPC_MAX_IMAGES];
    int n_images;
    int stream, include_usage;
    char model[GS_IPC_MAX_NAME + 1]; /* for the response's "model" */
} gs_chat_job;

/* Builds *out from req (borrowed; not changed). 0, or an HTTP status (400,
 * 404 for another model, 413 for a job JSON over GS_IPC_MAX_REQUEST, 415
 * for a data URL that is not an image, 503 out of memory) with msg filled and *param naming the
 * field (or NULL). out is freed on error. */
int gs_chat_job_build(const gs_chat_job_params *p, const json_t *req, gs_chat_job *out, char *msg,
                      size_t cap, const char **param);
/* Parses body (a request as POST /v1/chat/completions receives it:
 * duplicate keys refused) and builds *out, with the images' base64 lifted
 * out of the parse (json_lift.h); the same result as json_loadb +
 * gs_chat_job_build, faster. 0, or a status as gs_chat_job_build's (400
 * also for invalid JSON or a body that is no object, msg saying so).
 * p->lift is not read. */
int gs_chat_job_from_body(const gs_chat_job_params *p, const char *body, size_t len,
                          gs_chat_job *out, char *msg, size_t cap, const char **param);
void gs_chat_job_free(gs_chat_job *j); /* frees the members; NULL: no-op */
/* Whether a payload lifted out of the parse (json_lift.h) reached j's JSON
 * outside an image part (its marker, escaped by json_dumps): then j must be
 * built again from a plain parse. */
int gs_chat_job_marker_leaked(const gs_chat_job *j);
/* The error code (GS_E*) of a status that gs_chat_job_build returns. */
int gs_chat_job_err_code(int status);

/* Bodies (and WebSocket messages) up to this size are parsed on the event
 * loop (at most about a millisecond, at jansson's 57 MB/s); larger ones on
 * libuv's thread pool. */
#define GS_CHAT_JOB_PARSE_INLINE_MAX (64u << 10)
/* Image k's bytes (takes them: free()) in place of its URL. */
void gs_chat_job_set_image(gs_chat_job *j, int k, uint8_t *bytes, size_t len);

/* Strict base64 (standard or URL alphabet, padding optional). Returns
 * owned bytes (free()) with *out_len, or NULL: *bad = 1 for invalid
 * input, else out of memory. */
uint8_t *gs_b64_decode(const char *s, size_t n, size_t *out_len, int *bad);

#endif

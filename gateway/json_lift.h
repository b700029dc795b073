/* json_lift.h - the base64 payloads of data: URLs lifted out of a JSON
 * request body before jansson parses it.
 *
 * jansson reads a string byte by byte (about 57 MB/s here): a 2 MB photo
 * sent as a data: URL (2.7 MB of base64) cost about 48 ms of the gateway's
 * event loop, every other connection of that gateway waiting meanwhile.
 * gs_json_load_lifted finds each value of a "url" or "image_url" key of
 * the form "data:<type>;base64,<payload>" with a long payload (printable,
 * no escapes but "\/", which PHP's encoder writes for every '/'),
 * parses a copy of the body in which each such payload is replaced by a
 * marker ("\u0001" and the payload's index), and keeps where the payloads
 * lie in the original body; gs_chat_job_build then decodes them from there
 * (gs_json_lift_find). A body that already holds an escaped U+0001, or has
 * nothing to lift, is parsed as it is, so a marker in the parsed tree
 * always comes from this code. The parsed tree is the original's, except
 * for those payloads; gs_chat_job_from_body (chat_job.h) builds from the
 * plain parse instead when a marker would reach the job (a "url" that is
 * not an image part's).
 * Pure (no I/O); thread-safe. */
#ifndef GS_JSON_LIFT_H
#define GS_JSON_LIFT_H

#include <jansson.h>
#include <stddef.h>

#include "common/ipc_msg.h"

#define GS_JSON_LIFT_MIN 512 /* payloads shorter than this stay in the JSON */
#define GS_JSON_LIFT_MAX GS_IPC_MAX_IMAGES

typedef struct {
    const char *p; /* the payload in the original body (borrowed) */
    size_t len;
    int slashes; /* it holds escaped slashes ("\/"): see gs_json_span_unescape */
} gs_json_span;

typedef struct {
    int n;
    gs_json_span spans[GS_JSON_LIFT_MAX];
} gs_json_lift;

/* Parses body[0, len) as json_loadb(body, len, flags, je) would, with the
 * long data: URL payloads lifted into *lift (which borrows body: keep body
 * alive while lift is used). On a parse error, *je describes the error in
 * the original body. NULL on error or out of memory (je->text says). */
json_t *gs_json_load_lifted(const char *body, size_t len, size_t flags, gs_json_lift *lift,
                            json_error_t *je);

/* The payload a parsed string's base64 part s (what follows "base64,")
 * stands for, or NULL when s is no marker of lift (lift may be NULL). */
const gs_json_span *gs_json_lift_find(const gs_json_lift *lift, const char *s);

/* The payload's text with its "\/" escapes undone: owned (free()), *n
 * bytes; NULL out of memory. */
char *gs_json_span_unescape(const gs_json_span *sp, size_t *n);

#endif

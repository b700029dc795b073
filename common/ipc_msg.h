/* ipc_msg.h - the wire protocol between gateways and workers.
 *
 * Every message is one frame: a fixed 16-byte header, then a body of
 * body_len bytes. All integers are little-endian (the hosts glmserve
 * supports, x86-64 and aarch64, are little-endian; a big-endian build
 * fails to compile). docs/protocol.md describes each body field by field.
 *
 *   offset size  header field
 *   0      4     magic "GSIP"
 *   4      1     version (GS_IPC_VERSION)
 *   5      1     type (gs_ipc_type)
 *   6      2     flags (0; non-zero is refused)
 *   8      4     body_len (<= the receiver's limit, at most GS_IPC_MAX_BODY)
 *   12     4     reserved (0; non-zero is refused)
 *
 * Bodies are fixed fields then length-prefixed variable parts; image bytes
 * travel raw (never base64), so a job to a worker on another host costs
 * the JPEG's size. Decoding trusts nothing: every length is checked
 * against what is left, counts against their caps, strings must be valid
 * UTF-8 where the field says text, and trailing bytes are an error.
 *
 * Thread-safe: pure functions over caller memory. */
#ifndef GS_IPC_MSG_H
#define GS_IPC_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the glmserve wire protocol assumes a little-endian host"
#endif

#define GS_IPC_VERSION 3
#define GS_IPC_HEADER_SIZE 16
#define GS_IPC_MAX_BODY (256u << 20)   /* hard cap of any body */
#define GS_IPC_MAX_IMAGES 64           /* images in one job */
#define GS_IPC_MAX_IDS (1 << 20)       /* token ids in one event */
#define GS_IPC_MAX_NAME 256u           /* hello name and model, bytes */
#define GS_IPC_MAX_REQUEST (16u << 20) /* a job's request JSON, bytes */
#define GS_IPC_MAX_MESSAGE 4096u       /* error messages (error, event), bytes */

typedef enum {
    GS_IPC_HELLO = 1,     /* both ways, first frame on a connection */
    GS_IPC_JOB = 2,       /* gateway -> worker */
    GS_IPC_CANCEL = 3,    /* gateway -> worker */
    GS_IPC_EVENT = 4,     /* worker -> gateway: deltas, then one final event */
    GS_IPC_HEARTBEAT = 5, /* worker -> gateway, every heartbeat interval */
    GS_IPC_DRAIN = 6,     /* worker -> gateway: send no more jobs (no body) */
    GS_IPC_ERROR = 7,     /* worker -> gateway: a job refused, or a connection-level fault */
} gs_ipc_type;

const char *gs_ipc_type_name(int type); /* "hello", ...; "unknown" */

typedef struct {
    uint8_t version, type;
    uint16_t flags;
    uint32_t body_len;
} gs_ipc_header;

/* A byte string inside a body: borrowed, not NUL-terminated. */
typedef struct {
    const char *p;
    uint32_t len;
} gs_ipc_str;

#define GS_IPC_ROLE_GATEWAY 1
#define GS_IPC_ROLE_WORKER 2

/* hello: who is on the other end. A worker's hello also states its
 * capacity, which heartbeats then keep current. */
typedef struct {
    uint8_t role;          /* GS_IPC_ROLE_* */
    uint32_t pid;          /* of the sender */
    gs_ipc_str name;       /* UTF-8, <= 256 bytes: "worker-0@host", "gateway-1" */
    gs_ipc_str model;      /* UTF-8, <= 256 bytes: the served model's name ("" from a gateway) */
    int32_t max_model_len; /* tokens per sequence (0 from a gateway) */
    int32_t page_size;     /* tokens per KV page */
    int32_t n_pages;       /* usable KV pages */
    int32_t max_queue;     /* jobs the worker accepts beyond its running ones */
    /* The cluster key the sender was given (--cluster-key-file), <= 256
     * bytes, or empty: a receiver that has one refuses a peer whose key
     * differs (docs/protocol.md, "Cluster key"). */
    gs_ipc_str key;
} gs_ipc_hello;

/* job: one request. `request` is the job's JSON (UTF-8, <= 16 MiB; the
 * schema is worker/request.h's: messages with image parts referring to
 * images by index, sampling parameters, limits). images[i] are the raw
 * bytes of image i as the client sent them (JPEG/PNG). */
typedef struct {
    uint64_t id; /* chosen by the gateway, unique on its connection, > 0 */
    gs_ipc_str request;
    uint32_t n_images; /* <= GS_IPC_MAX_IMAGES */
    gs_ipc_str images[GS_IPC_MAX_IMAGES];
} gs_ipc_job;

/* Finish reasons in events (the values of worker/engine's
 * gs_finish_reason, restated here because common/ links no worker code). */
#define GS_IPC_FINISH_NONE 0 /* more events follow */
#define GS_IPC_FINISH_STOP 1
#define GS_IPC_FINISH_LENGTH 2
#define GS_IPC_FINISH_CANCELLED 3
#define GS_IPC_FINISH_ERROR 4

/* OpenAI's finish_reason of a final event: "stop", "length", "cancelled";
 * "error" for ERROR and anything else. Static string. */
const char *gs_ipc_finish_name(int finish);

/* event: what one engine step produced for one job (coalesced: at most one
 * event per job per step), or the final event (finish != NONE) with usage,
 * timings and, for errors, the code and a message. */
typedef struct {
    uint64_t id;
    uint8_t finish; /* GS_IPC_FINISH_* */
    int32_t error;  /* GS_E* when finish is ERROR, else 0 */
    uint32_t n_ids; /* <= GS_IPC_MAX_IDS */
    /* [n_ids] token ids. Encoding reads them from here; decoding points
     * into the body (4-byte aligned there, see gs_ipc_decode). */
    const int32_t *ids;
    gs_ipc_str text;    /* UTF-8 text delta (whole characters) */
    gs_ipc_str message; /* UTF-8 error message ("" unless error) */
    int32_t prompt_tokens, completion_tokens, cached_prompt_tokens;
    uint64_t queue_ns, ttft_ns, decode_ns; /* as gs_engine_timings */
    /* A queue report (queue_report 1; finish NONE, no ids, no text): the
     * job waits in the worker's engine at place queue_position (1: next
     * to start; capped at 65535), or 0: it has left the queue and started. */
    uint8_t queue_report;
    uint16_t queue_position;
} gs_ipc_event;

/* heartbeat: the worker's load, as the dispatch policy reads it. */
typedef struct {
    int32_t n_running, n_waiting; /* jobs in the engine */
    int32_t n_queued;             /* accepted, not yet in the engine (prep) */
    int32_t max_queue;            /* accepted jobs beyond n_running that it takes */
    int32_t n_pages, n_free_pages, n_cached_pages;
    int32_t draining;         /* 1 after SIGTERM: takes no new jobs */
    uint64_t n_steps;         /* engine steps so far */
    uint64_t n_finished;      /* jobs finished so far */
    uint64_t n_generated;     /* tokens sampled so far */
    uint64_t n_prompt_tokens; /* prompt tokens of submitted jobs */
    uint64_t prefix_query_tokens, prefix_hit_tokens;
    uint64_t last_step_ns; /* duration of the last engine step */
    uint64_t uptime_ms;
} gs_ipc_stats;

/* error: a job refused before it started (id > 0; e.g. GS_EOVERLOAD when
 * the queue is full, GS_EINVAL for a bad request, with a message the
 * gateway may show the client), or a fault of the connection (id 0). */
typedef struct {
    uint64_t id;
    int32_t code;       /* GS_E* */
    gs_ipc_str message; /* UTF-8, <= 4096 bytes */
} gs_ipc_error;

typedef struct {
    gs_ipc_type type;
    union {
        gs_ipc_hello hello;
        gs_ipc_job job;
        uint64_t cancel_id; /* CANCEL */
        gs_ipc_event event;
        gs_ipc_stats heartbeat;
        gs_ipc_error error;
        /* DRAIN has no body */
    } u;
} gs_ipc_msg;

/* Encodes m (borrowed) as one frame, header included, into *out (returns
 * owned; free with free()), *len its size. GS_EINVAL (d says which field:
 * a count over its cap, a string over its limit, an unknown type),
 * GS_ETOOBIG (body over GS_IPC_MAX_BODY), GS_ENOMEM. */
int gs_ipc_encode(const gs_ipc_msg *m, uint8_t **out, size_t *len, gs_diag *d);

/* Checks a header (hdr: GS_IPC_HEADER_SIZE bytes, borrowed) into *h.
 * max_body: the receiver's limit (0: GS_IPC_MAX_BODY). GS_EPROTO for a bad
 * magic, version, flags or reserved field (the stream cannot be trusted
 * after it), GS_ETOOBIG for a body over max_body (h is filled, so the
 * receiver may skip body_len bytes and go on). Unknown types are not
 * refused here (gs_ipc_decode does), so a newer peer's extra types can be
 * skipped. d says what was wrong. */
int gs_ipc_decode_header(const uint8_t *hdr, uint32_t max_body, gs_ipc_header *h, gs_diag *d);

/* Decodes the body of a message of `type` (body: len bytes, borrowed,
 * 4-byte aligned) into *m, whose strings, image bytes and ids point into
 * body: valid while body is. GS_EPROTO (d names the field and offset:
 * truncated, trailing bytes, counts over caps, invalid UTF-8, unknown
 * type, misaligned body), never a crash for any input. */
int gs_ipc_decode(int type, const uint8_t *body, size_t len, gs_ipc_msg *m, gs_diag *d);

/* The longest prefix of s[0..len) (borrowed) that is at most cap bytes
 * and does not end inside a UTF-8 sequence: clip a message to
 * GS_IPC_MAX_MESSAGE with it, never with a plain byte cut (the encoder
 * refuses a split character). */
uint32_t gs_ipc_utf8_clip(const char *s, size_t len, uint32_t cap);

/* Convenience: encodes and wraps header + body in a single malloc block
 * from a header and raw body (for relaying frames unchanged). */
int gs_ipc_frame(int type, const uint8_t *body, size_t len, uint8_t **out, size_t *out_len);

#endif

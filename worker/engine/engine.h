/* engine.h - gs_engine: continuous batching of many requests over one
 * model, with a paged KV cache whose full pages are shared between requests
 * with the same prefix (system prompt, images). docs/engine.md has the
 * design.
 *
 * Use: gs_engine_new once; gs_engine_submit a job per request (the engine
 * copies what it needs, or takes images handed over with a release
 * callback); call gs_engine_step repeatedly while gs_engine_busy says
 * there is work; each step runs one forward over a batch of sequences and
 * reports progress through each job's event callback: token ids and text
 * deltas, then one final event with the finish reason, usage and timings.
 * Every job that gs_engine_submit accepted gets exactly one final event,
 * whatever happens: a finish, a cancel (gs_engine_cancel, or a callback
 * that returns nonzero), an error, gs_engine_finish_all or gs_engine_free.
 *
 * Threading: the engine is driven by ONE thread (the worker's engine
 * thread). Every function here, and every event and release callback,
 * runs on it - except gs_engine_stats_snapshot, which any thread may call,
 * and gs_engine_params.should_abort, which the engine thread polls but
 * which usually reads a flag set by another thread. Callbacks must not
 * call back into the engine; other threads hand jobs and cancels to the
 * engine thread through their own queue. */
#ifndef GS_ENGINE_H
#define GS_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "worker/model/model.h"
#include "worker/sampler.h"

typedef struct gs_engine gs_engine; /* opaque */

/* Incremental detokenizer, per sequence, behind callbacks so that the
 * engine does not depend on the tokenizer (tests run without one).
 * gs_engine_tokenizer_detok (engine_detok.h) adapts worker/tokenizer's
 * gs_detok. */
typedef struct {
    void *user;
    /* Per-sequence state into *state (owned; freed with close). */
    int (*open)(void *user, void **state);
    /* Appends id; *text and *len: the new text, whole UTF-8 characters only
     * (borrowed until the next call). 0 or GS_E*. */
    int (*push)(void *state, int32_t id, const char **text, size_t *len);
    /* End of stream: whatever is held back (borrowed until close). */
    void (*flush)(void *state, const char **text, size_t *len);
    void (*close)(void *state);
} gs_engine_detok;

/* Named bits of gs_engine_params.flags */
#define GS_ENGINE_NO_PREFIX_CACHE (1u << 0)
#define GS_ENGINE_NO_ENCODER_CACHE (1u << 1)

typedef struct {
    gs_model *model;   /* borrowed; must outlive the engine */
    int32_t page_size; /* tokens per KV page; 0: 16 */
    /* KV cache size, first that is set: n_pages (including the null page),
     * kv_bytes (--kv-memory), else kv_fraction (0: 0.5) of the backend's
     * free memory (gs_backend_mem_info). Never more pages than max_seqs
     * sequences of max_model_len tokens need. */
    int32_t n_pages;
    size_t kv_bytes;
    double kv_fraction;
    /* > 0 (with neither n_pages nor kv_bytes): the KV cache takes the
     * backend's free memory less kv_reserve bytes, instead of kv_fraction
     * of it. --gpu-memory: the worker reserves the activations of a step
     * (gs_model_act_bytes), the encoder cache and a margin. */
    size_t kv_reserve;
    /* Encoder cache: image embeddings kept by image (content hash, grid,
     * salt) so that another request with the same image skips the vision
     * tower; bytes for entries no job uses (0: 256 MiB). */
    size_t encoder_cache_bytes;
    int32_t token_budget;  /* tokens per step; 0: 512 */
    int32_t max_seqs;      /* running sequences; 0: 64 */
    int32_t max_model_len; /* tokens per sequence; 0: max_position_embeddings */
    unsigned flags;        /* GS_ENGINE_* */
    /* Decode steps through recorded graphs (gs_model_enable_graphs):
     * 0 = on for a CUDA backend, off on the CPU (no launch cost to save
     * there); 1 = on; -1 = off. */
    int graphs;
    gs_engine_detok detok; /* open == NULL: events carry ids, no text */
    /* Clock for event timings (ns, monotonic); NULL: gs_clock_now_ns. The
     * `now` given to gs_engine_step and jobs' arrival_ns must use it. */
    uint64_t (*clock)(void *user);
    void *clock_user;
    /* Abort hook (NULL: none), polled on the engine thread between the
     * parts of a step (image encoding, the forward) and, through
     * gs_model_set_abort, between decoder layers and vision blocks. When it
     * returns nonzero the step stops with nothing committed: no token is
     * sampled, no sequence advances, no page is lost; the jobs run that
     * part again in a later step, and gs_engine_step returns GS_ECANCELED.
     * It must be cheap (an atomic load) and must not call the engine. The
     * engine installs it on the model for its lifetime. */
    int (*should_abort)(void *user);
    void *abort_user;
} gs_engine_params;

typedef enum {
    GS_FINISH_NONE = 0,  /* more events follow */
    GS_FINISH_STOP,      /* a stop token id or stop string */
    GS_FINISH_LENGTH,    /* max_tokens, or the context limit */
    GS_FINISH_CANCELLED, /* gs_engine_cancel */
    GS_FINISH_ERROR,     /* see gs_engine_event.error */
} gs_finish_reason;

const char *gs_finish_reason_name(gs_finish_reason r); /* "stop", "length", ... */

typedef struct {
    int32_t prompt_tokens;
    int32_t completion_tokens;
    int32_t cached_prompt_tokens; /* served by the prefix cache */
} gs_engine_usage;

typedef struct {
    uint64_t queue_ns;  /* arrival -> first scheduled */
    uint64_t ttft_ns;   /* arrival -> first token (0 until then) */
    uint64_t decode_ns; /* first token -> last token */
} gs_engine_timings;

/* One event; everything in it is borrowed for the callback only. */
typedef struct {
    int64_t id;
    const int32_t *ids; /* [n_ids] tokens generated since the last event */
    int32_t n_ids;
    const char *text; /* [text_len] new text; stop strings never appear */
    size_t text_len;
    gs_finish_reason finish; /* NONE: more will come; else the last event */
    int error;               /* GS_E* code when finish is ERROR */
    gs_engine_usage usage;
    gs_engine_timings timings;
} gs_engine_event;

/* Event callback, on the engine thread. For a non-final event (finish ==
 * NONE) a nonzero return cancels the job at once: its pages are released
 * and its final event (GS_FINISH_CANCELLED) follows before the engine
 * returns. The return value of a final event is ignored. */
typedef int (*gs_engine_event_fn)(void *user, const gs_engine_event *ev);

/* One image of a job. Two ownership modes:
 * - release == NULL: gs_engine_submit copies the pixels; the caller keeps
 *   its buffer.
 * - release != NULL: the pixels are handed over, not copied. The buffer
 *   must stay valid and unchanged until the engine calls
 *   release(release_ctx), which it does exactly once, on the engine
 *   thread: once the image is encoded (its embeddings are then kept for
 *   the rest of the job), when the job ends, or before gs_engine_submit
 *   returns an error. */
typedef struct {
    const float *pixels; /* [n_patches, patch_dim] F32 in processor order */
    int64_t n_patches;   /* must be grid[0] * grid[1] * grid[2] */
    int32_t grid[3];     /* t, h, w in patches; h and w multiples of the merge size */
    uint8_t hash[32];    /* SHA-256 of the raw image bytes, computed by the caller
                            while preparing the image; all zero: the engine
                            hashes the pixels instead */
    /* Floats per patch row as the preprocessor made them; must equal the
     * model's in_channels * temporal_patch_size * patch_size^2 (GS_EINVAL
     * otherwise). 0: not given, taken to be the model's (set it). */
    int32_t patch_dim;
    void (*release)(void *ctx); /* NULL: pixels are copied */
    void *release_ctx;
} gs_engine_image;

/* Named bits of gs_engine_job.flags */
#define GS_JOB_IGNORE_EOS (1u << 0) /* the model's eos ids do not stop */

/* A request. gs_engine_submit copies everything (prompt, pixels, stop
 * lists) except the pixels of images with a release callback; nothing else
 * is borrowed past the call except `user`. */
typedef struct {
    const int32_t *prompt; /* [n_prompt] rendered ids, each image expanded */
    int32_t n_prompt;
    const gs_engine_image *images; /* [n_images] in prompt order */
    int32_t n_images;
    gs_sampling_params sampling;
    const int32_t *stop_ids; /* [n_stop_ids] besides the model's eos ids */
    int32_t n_stop_ids;
    const char *const *stop_strings; /* [n_stop_strings] */
    int32_t n_stop_strings;
    int32_t max_tokens;          /* <= 0: up to the context limit */
    unsigned flags;              /* GS_JOB_* */
    uint64_t cache_salt;         /* prefix-cache namespace; 0: shared */
    uint64_t arrival_ns;         /* when the request arrived; 0: at submit */
    gs_engine_event_fn on_event; /* required */
    void *user;
} gs_engine_job;

typedef struct {
    int32_t n_running, n_waiting;
    int32_t n_pages;        /* usable pages (without the null page) */
    int32_t n_free_pages;   /* on the free list (cached ones included) */
    int32_t n_cached_pages; /* pages holding a cached prefix */
    int32_t page_size;
    int64_t prefix_query_tokens, prefix_hit_tokens;
    double prefix_hit_rate; /* hit / query tokens, 0 when none */
    int64_t n_steps, n_preemptions;
    int64_t n_computed_tokens;   /* tokens through the decoder */
    int64_t n_generated_tokens;  /* tokens sampled */
    int64_t n_images_encoded;    /* images through the vision tower */
    int64_t n_images_cache_hits; /* images served by the encoder cache */
    int64_t n_jobs_finished;     /* the four counts below together */
    int64_t n_finished_stop, n_finished_length, n_finished_cancelled, n_finished_error;
    int64_t n_graph_replays;  /* decode steps replayed from a graph */
    int64_t n_graph_captures; /* graphs recorded */
    uint64_t last_step_ns;    /* duration of the last gs_engine_step (engine clock) */
    /* Tokens waiting for a prefill over the waiting and running jobs: the
     * prompt tokens not computed yet (and, after a preemption, the
     * generated ones to recompute). Decode tokens do not count. */
    int64_t n_queued_tokens;
} gs_engine_stats;

/* On success *out owns the engine (gs_engine_free), with its KV cache
 * allocated. GS_EINVAL / GS_ECONFIG (d says which parameter), GS_ENOMEM. */
int gs_engine_new(const gs_engine_params *p, gs_engine **out, gs_diag *d);
/* NULL: no-op. First ends every job still inside as gs_engine_finish_all
 * (e, GS_ESHUTDOWN) does, so event and release callbacks run from here,
 * on the calling thread; then frees everything. */
void gs_engine_free(gs_engine *e);

/* Queues a job; *id (> 0) names it in events and gs_engine_cancel. Errors
 * (no event is ever sent then, and every handed-over image has been
 * released): GS_EINVAL (d names the field: ids out of range, images that
 * do not match the image tokens or the model's patch size, bad sampling
 * values), GS_ECONTEXT (prompt too long for max_model_len or the KV
 * cache), GS_ENOMEM. */
int gs_engine_submit(gs_engine *e, const gs_engine_job *job, int64_t *id, gs_diag *d);

/* Runs one iteration at time `now` (the engine clock): plan, encode
 * images, one forward, sample, events. Jobs hit by an error finish with
 * GS_FINISH_ERROR and a server-class code (GS_EMODEL, GS_EDEVICE,
 * GS_ENOMEM, GS_EINTERNAL: never one that blames the request); the step
 * then returns that code (a device error may mean the worker should
 * restart), else 0. GS_ECANCELED: should_abort fired and nothing was
 * committed; not an error (call again). */
int gs_engine_step(gs_engine *e, uint64_t now);
/* The waiting queue, head (next to start) first: up to cap of the jobs'
 * `user` pointers into users; returns how many wait. A preempted job
 * waits again at the head. Engine thread only. */
int32_t gs_engine_queue(gs_engine *e, void **users, int32_t cap);
/* 1 while jobs are running or waiting. */
int gs_engine_busy(const gs_engine *e);

/* Ends job id now: its pages are released and its final event
 * (GS_FINISH_CANCELLED) is sent before this returns. GS_ENOENT when no
 * such job is in the engine (finished already, or never was). O(1). */
int gs_engine_cancel(gs_engine *e, int64_t id);

/* Ends every job inside, running and waiting, oldest first, each with a
 * final GS_FINISH_ERROR event carrying err (e.g. GS_ESHUTDOWN,
 * GS_EDEVICE). The engine stays usable. */
void gs_engine_finish_all(gs_engine *e, int err);

/* Current stats; engine thread only (reads the pool and model). */
void gs_engine_get_stats(const gs_engine *e, gs_engine_stats *out);
/* The stats as of the end of the last step, submit, cancel or
 * finish_all; callable from ANY thread while the engine exists (a mutex
 * guards a copy the engine thread publishes). */
void gs_engine_stats_snapshot(const gs_engine *e, gs_engine_stats *out);
/* Forgets every cached prefix and every cached image embedding no job uses
 * (what is in use stays in use). For benchmarks and tests. */
void gs_engine_reset_caches(gs_engine *e);

#endif
